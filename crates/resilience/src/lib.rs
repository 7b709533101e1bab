//! Protecting providers and carrying jobs through their failures: retry schedules (and,
//! shared through Redis, circuit breakers and rate limits).
#![forbid(unsafe_code)]

pub mod retry;

pub use retry::{Jitter, RetryDecision, RetryPolicy};
