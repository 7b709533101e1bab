//! Target integrations and their connectors, cached briefly so a busy worker does not read
//! the same row and decrypt the same credentials for every job.
use secrecy::ExposeSecret;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use switchyard_providers::{Connector, Credentials, HttpClient};
use switchyard_resilience::RetryPolicy;
use switchyard_store::{Integration, Store, StoreError};
use switchyard_vault::{Keyring, Sealed};
use tokio::sync::Mutex;
use uuid::Uuid;

/// A target integration, ready to call.
pub(crate) struct Target {
    /// `Err` says why the integration's settings or credentials cannot work.
    pub(crate) connector: Result<Arc<dyn Connector>, String>,
    pub(crate) retry: RetryPolicy,
}

pub(crate) struct Cache {
    store: Store,
    keyring: Arc<Keyring>,
    ttl: Duration,
    default_retry: RetryPolicy,
    http: HttpClient,
    entries: Mutex<HashMap<Uuid, (Instant, Arc<Target>)>>,
}

impl Cache {
    pub(crate) fn new(
        store: Store,
        keyring: Arc<Keyring>,
        ttl: Duration,
        default_retry: RetryPolicy,
    ) -> Cache {
        Cache {
            store,
            keyring,
            ttl,
            default_retry,
            http: switchyard_providers::http_client(),
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The integration, or `None` if it does not exist (or was deleted).
    pub(crate) async fn get(&self, id: Uuid) -> Result<Option<Arc<Target>>, StoreError> {
        if let Some((at, t)) = self.entries.lock().await.get(&id)
            && at.elapsed() < self.ttl
        {
            return Ok(Some(t.clone()));
        }
        let integration = match self.store.integration(id).await {
            Ok(i) => i,
            Err(StoreError::NotFound(_)) => {
                self.entries.lock().await.remove(&id);
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        let target = Arc::new(self.build(&integration));
        self.entries
            .lock()
            .await
            .insert(id, (Instant::now(), target.clone()));
        Ok(Some(target))
    }

    fn build(&self, integration: &Integration) -> Target {
        let retry = retry_policy(&self.default_retry, &integration.settings);
        let connector = retry.as_ref().map_err(Clone::clone).and_then(|_| {
            let credentials = match &integration.credentials {
                None => Credentials::default(),
                Some(sealed) => {
                    let opened = self
                        .keyring
                        .open(
                            &Sealed {
                                key_id: sealed.key_id.clone(),
                                bytes: sealed.bytes.clone(),
                            },
                            integration.id.as_bytes(),
                        )
                        .map_err(|e| format!("credentials: {e}"))?;
                    let json: serde_json::Value = serde_json::from_slice(opened.expose_secret())
                        .map_err(|_| "credentials: the decrypted value is not JSON".to_owned())?;
                    Credentials::from_json(&json).map_err(|e| e.to_string())?
                }
            };
            switchyard_providers::build(
                &integration.provider,
                &integration.settings,
                credentials,
                self.http.clone(),
            )
            .map_err(|e| e.to_string())
        });
        Target {
            retry: retry.unwrap_or_else(|_| self.default_retry.clone()),
            connector: connector
                .map_err(|e| format!("integration `{}` cannot be called: {e}", integration.name)),
        }
    }
}

/// The integration's `retry` settings over the worker's defaults.
pub(crate) fn retry_policy(
    default: &RetryPolicy,
    settings: &serde_json::Value,
) -> Result<RetryPolicy, String> {
    let Some(overrides) = settings.get("retry") else {
        return Ok(default.clone());
    };
    let mut merged = serde_json::to_value(default).expect("a policy serialises");
    match (merged.as_object_mut(), overrides.as_object()) {
        (Some(base), Some(over)) => {
            for (k, v) in over {
                base.insert(k.clone(), v.clone());
            }
        }
        _ => return Err("settings.retry must be an object".into()),
    }
    let policy: RetryPolicy =
        serde_json::from_value(merged).map_err(|e| format!("settings.retry: {e}"))?;
    policy.validate()?;
    Ok(policy)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_settings_override_the_defaults() {
        let d = RetryPolicy::default();
        let p = retry_policy(&d, &serde_json::json!({"retry": {"max_attempts": 3}})).unwrap();
        assert_eq!(p.max_attempts, 3);
        assert_eq!(p.initial_delay_ms, d.initial_delay_ms);
        assert_eq!(retry_policy(&d, &serde_json::json!({})).unwrap(), d);
        let err = retry_policy(&d, &serde_json::json!({"retry": {"factor": 0}})).unwrap_err();
        assert!(err.contains("retry.factor"), "{err}");
    }
}
