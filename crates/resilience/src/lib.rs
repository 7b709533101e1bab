//! Protecting providers and carrying jobs through their failures: retry schedules, and a
//! circuit breaker and rate limits per provider account, shared by the whole fleet through
//! Redis (each decision one Lua script, on Redis's clock). When Redis is unreachable every
//! process falls back to its own breakers and limits, says so once, and reports itself
//! degraded until Redis answers again.
#![forbid(unsafe_code)]

pub mod breaker;
pub mod guard;
pub mod limits;
pub mod retry;
pub mod settings;

pub use breaker::{BreakerPolicy, BreakerState, Outcome};
pub use guard::{Admission, Guard};
pub use limits::{Per, RateLimit};
pub use retry::{Jitter, RetryDecision, RetryPolicy};
