//! Telling operators: notifications made from integration events and dead-letter counts,
//! delivered to a configured URL as Standard Webhooks (signed, retried with backoff until
//! the receiver answers 2xx). The leading scheduler runs [`run_once`] each tick.
use secrecy::{ExposeSecret, SecretString};
use std::time::Duration;
use switchyard_store::{Notification, Store, StoreError};
use tracing::{info, warn};

/// Where notifications go, and how they are signed.
#[derive(Debug, Clone)]
pub struct NotifyConfig {
    pub url: String,
    /// A Standard Webhooks secret (`whsec_…`): the receiver verifies each notification with
    /// it.
    pub secret: SecretString,
    /// Dead letters of one tenant that make a notification (at most one an hour).
    pub dead_letter_threshold: i64,
    /// How long the receiver has to answer.
    pub timeout: Duration,
}

/// What one round did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Round {
    pub made: u64,
    pub sent: usize,
    pub failed: usize,
}

/// The body the receiver gets.
fn body(n: &Notification) -> serde_json::Value {
    serde_json::json!({
        "type": n.kind,
        "timestamp": n.created_at,
        "data": {
            "id": n.id,
            "tenant": n.tenant,
            "integration_id": n.integration_id,
            "message": n.message,
        }
    })
}

/// After `attempts` failed deliveries: 10 s, 20 s, 40 s… at most an hour.
fn backoff(attempts: i32) -> chrono::Duration {
    let secs = 10i64.saturating_mul(1i64 << attempts.clamp(0, 20));
    chrono::Duration::seconds(secs.min(3600))
}

/// Make what is due, then deliver what waits.
pub async fn run_once(
    store: &Store,
    http: &reqwest::Client,
    cfg: &NotifyConfig,
) -> Result<Round, StoreError> {
    let key =
        switchyard_core::webhook_auth::standard_webhooks_key(cfg.secret.expose_secret().as_bytes())
            .unwrap_or_default();
    let mut round = Round {
        made: store
            .collect_notifications(cfg.dead_letter_threshold)
            .await?,
        ..Round::default()
    };
    for n in store.due_notifications(100).await? {
        let payload = body(&n).to_string();
        let id = format!("msg_{}", n.id.simple());
        let now = chrono::Utc::now().timestamp();
        let signature = switchyard_core::webhook_auth::standard_webhooks_signature(
            &key,
            &id,
            now,
            payload.as_bytes(),
        );
        let sent = http
            .post(&cfg.url)
            .timeout(cfg.timeout)
            .header("content-type", "application/json")
            .header("webhook-id", &id)
            .header("webhook-timestamp", now.to_string())
            .header("webhook-signature", signature)
            .body(payload)
            .send()
            .await;
        let failure = match sent {
            Ok(r) if r.status().is_success() => None,
            Ok(r) => Some(format!("the receiver answered {}", r.status())),
            Err(e) => Some(format!("the receiver could not be reached: {e}")),
        };
        match failure {
            None => {
                store.notification_sent(n.id).await?;
                info!(kind = %n.kind, tenant = ?n.tenant, "notification delivered");
                round.sent += 1;
            }
            Some(why) => {
                let retry = backoff(n.attempts);
                warn!(kind = %n.kind, error = %why, retry_in_s = retry.num_seconds(), "notification not delivered; it will be tried again");
                store.notification_failed(n.id, &why, retry).await?;
                round.failed += 1;
            }
        }
    }
    Ok(round)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_an_hour() {
        assert_eq!(backoff(0).num_seconds(), 10);
        assert_eq!(backoff(1).num_seconds(), 20);
        assert_eq!(backoff(5).num_seconds(), 320);
        assert_eq!(backoff(9).num_seconds(), 3600);
        assert_eq!(backoff(40).num_seconds(), 3600);
    }
}
