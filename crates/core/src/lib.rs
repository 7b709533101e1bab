//! Switchyard's domain: the envelope every job travels in, identifiers, statuses, failure
//! classes, and the pure transformations (inbound normalisation, field mapping) that the
//! services apply. This crate does no I/O.
#![forbid(unsafe_code)]

pub mod envelope;
pub mod ids;
pub mod inbound;
pub mod mapping;
#[macro_use]
pub mod model;
pub mod route;
pub mod schedule;
pub mod webhook_auth;

pub use envelope::{ENVELOPE_VERSION, Envelope};
pub use model::{Action, DeadReason, Direction, ErrorClass, IntegrationStatus, JobStatus};
pub use route::{ConflictPolicy, RouteFilter, RouteOptions, WhenInactive};

/// A name that is safe in an AMQP routing key and a URL segment: `[a-z0-9_-]{1,64}`.
pub fn is_valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}
