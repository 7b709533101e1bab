//! Held jobs: a job whose target is not active is kept (with its envelope, in the order it
//! was received) instead of being sent or lost. [`release`] publishes them again, in order,
//! once the target is active; activating an integration releases its jobs, and the
//! scheduler releases any that an interrupted activation left.
use switchyard_broker::{Broker, OutgoingMessage};
use switchyard_core::{Envelope, IntegrationStatus};
use switchyard_store::{Store, StoreError};
use tracing::{info, warn};
use uuid::Uuid;

/// What went wrong releasing held jobs (those not yet published stay held).
#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the broker did not take the held jobs: {0}")]
    Broker(#[from] switchyard_broker::PublishError),
}

/// Publish `integration`'s held jobs again, oldest first, while it is active; returns how
/// many. Each batch is confirmed by the broker before its jobs stop being held, so a crash
/// in between publishes some twice (workers deduplicate), never none.
pub async fn release(
    store: &Store,
    broker: &Broker,
    integration: Uuid,
) -> Result<u64, ReleaseError> {
    let mut released = 0;
    loop {
        let status = store.integration(integration).await?.status;
        if status != IntegrationStatus::Active {
            break;
        }
        let batch = store.held_jobs(integration, 500).await?;
        if batch.is_empty() {
            break;
        }
        let mut messages = Vec::with_capacity(batch.len());
        let mut ids = Vec::with_capacity(batch.len());
        for h in &batch {
            match serde_json::from_value::<Envelope>(h.envelope.clone()) {
                Ok(env) => {
                    messages.push(OutgoingMessage::job(&env));
                    ids.push(h.job_id);
                }
                Err(e) => {
                    warn!(job_id = %h.job_id, error = %e, "a held job's envelope cannot be read; it stays held")
                }
            }
        }
        if messages.is_empty() {
            break;
        }
        // One publish call uses one channel, which keeps the order in the queue.
        broker.publish(&messages).await?;
        store.released(&ids).await?;
        released += ids.len() as u64;
    }
    if released > 0 {
        info!(%integration, released, "released held jobs");
    }
    Ok(released)
}
