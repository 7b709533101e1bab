//! The dead-letter keeper: moves each message that reaches a provider's dead-letter queue
//! into Postgres (`switchyard_ops::dlq::keep`), where operators and tenants find their own.
use std::time::Duration;
use switchyard_broker::Delivery;
use tracing::warn;

use crate::Shared;

/// Keep one dead letter. Until the database takes it, it waits here, unacknowledged (the
/// broker redelivers it if the worker stops).
pub(crate) async fn keep(shared: &Shared, provider: &str, d: Delivery) {
    let mut wait = Duration::from_millis(250);
    loop {
        match switchyard_ops::dlq::keep(&shared.store, &d, provider).await {
            Ok(()) => return,
            Err(e) => {
                warn!(error = %e, provider, message_id = ?d.message_id,
                    retry_in_ms = wait.as_millis() as u64,
                    "could not keep a dead letter in the database; it stays in its queue until it can");
            }
        }
        tokio::select! {
            _ = shared.stop.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
        wait = (wait * 2).min(Duration::from_secs(30));
    }
}
