//! RabbitMQ: the topology Switchyard declares, a connection supervisor that owns
//! reconnection, confirmed publishing and resilient consumers. The only crate that speaks
//! AMQP.
//!
//! lapin's own recovery is off: the [`Broker`] supervisor reconnects with backoff,
//! redeclares the topology and hands consumers a fresh session; publishers fail fast with
//! [`PublishError::Unavailable`] while there is none, so ingest can answer 503.
#![forbid(unsafe_code)]

mod consume;
mod headers;
mod publish;
mod supervisor;
mod topology;

pub use consume::Delivery;
pub use headers::{Headers, names as header};
pub use publish::{Exchange, OutgoingMessage, PublishError};
pub use supervisor::{Broker, BrokerConfig};
pub use topology::Topology;

/// Errors from setting up AMQP resources.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("the broker is not connected")]
    Unavailable,
    #[error("AMQP error: {0}")]
    Amqp(#[from] lapin::Error),
}
