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

pub use consume::{Delivery, Drained};
pub use headers::{Headers, names as header};
pub use publish::{Exchange, OutgoingMessage, PublishError};
pub use supervisor::{Broker, BrokerConfig, urls};
pub use topology::Topology;

impl Broker {
    /// Messages ready in `queue` (a passive declare: fails if the queue does not exist).
    pub async fn message_count(&self, queue: &str) -> Result<u32, BrokerError> {
        let session = self.session().ok_or(BrokerError::Unavailable)?;
        let ch = session.conn.create_channel().await?;
        let q = ch
            .queue_declare(
                queue.into(),
                lapin::options::QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                lapin::types::FieldTable::default(),
            )
            .await?;
        let _ = ch.close(200, "done".into()).await;
        Ok(q.message_count())
    }

    /// Delete every queue and exchange of this broker's topology (for tests and teardown).
    pub async fn delete_topology(&self) -> Result<(), BrokerError> {
        let session = self.session().ok_or(BrokerError::Unavailable)?;
        let ch = session.conn.create_channel().await?;
        self.topology().delete(&ch).await?;
        let _ = ch.close(200, "done".into()).await;
        Ok(())
    }
}

/// Errors from setting up AMQP resources.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    #[error("the broker is not connected")]
    Unavailable,
    #[error("AMQP error: {0}")]
    Amqp(#[from] lapin::Error),
    /// The acknowledgement was not sent (its channel closed, or it was settled already):
    /// the broker keeps the message and delivers it again.
    #[error(
        "the message was not settled: its channel closed first; the broker will deliver it again"
    )]
    NotSettled,
}
