//! Target integrations and their connectors, cached briefly so a busy worker does not read
//! the same row and decrypt the same credentials for every job.
use secrecy::ExposeSecret;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use switchyard_providers::{Connector, Credentials, HttpClient};
use switchyard_resilience::{BreakerPolicy, RateLimit, RetryPolicy};
use switchyard_store::{Integration, Store, StoreError};
use switchyard_vault::{Keyring, Sealed};
use tokio::sync::Mutex;
use uuid::Uuid;

/// A target integration, ready to call.
pub(crate) struct Target {
    /// `Err` says why the integration's settings or credentials cannot work.
    pub(crate) connector: Result<Arc<dyn Connector>, String>,
    pub(crate) retry: RetryPolicy,
    pub(crate) breaker: BreakerPolicy,
    pub(crate) limits: Vec<RateLimit>,
}

pub(crate) struct Cache {
    store: Store,
    keyring: Arc<Keyring>,
    ttl: Duration,
    default_retry: RetryPolicy,
    default_breaker: BreakerPolicy,
    http: HttpClient,
    entries: Mutex<HashMap<Uuid, (Instant, Arc<Target>)>>,
}

impl Cache {
    pub(crate) fn new(
        store: Store,
        keyring: Arc<Keyring>,
        ttl: Duration,
        default_retry: RetryPolicy,
        default_breaker: BreakerPolicy,
    ) -> Cache {
        Cache {
            store,
            keyring,
            ttl,
            default_retry,
            default_breaker,
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
        let breaker = overlay(&self.default_breaker, &integration.settings, "breaker")
            .and_then(|b: BreakerPolicy| b.validate().map(|_| b));
        let limits = rate_limits(&integration.settings);
        let settings_ok = match (&retry, &breaker, &limits) {
            (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => Err(e.clone()),
            _ => Ok(()),
        };
        let connector = settings_ok.and_then(|_| {
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
            breaker: breaker.unwrap_or_else(|_| self.default_breaker.clone()),
            limits: limits.unwrap_or_default(),
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
    let policy: RetryPolicy = overlay(default, settings, "retry")?;
    policy.validate()?;
    Ok(policy)
}

/// `settings[section]`'s fields over `default`'s.
fn overlay<T: serde::Serialize + serde::de::DeserializeOwned + Clone>(
    default: &T,
    settings: &serde_json::Value,
    section: &str,
) -> Result<T, String> {
    let Some(overrides) = settings.get(section) else {
        return Ok(default.clone());
    };
    let mut merged = serde_json::to_value(default).expect("a policy serialises");
    match (merged.as_object_mut(), overrides.as_object()) {
        (Some(base), Some(over)) => {
            for (k, v) in over {
                base.insert(k.clone(), v.clone());
            }
        }
        _ => return Err(format!("settings.{section} must be an object")),
    }
    serde_json::from_value(merged).map_err(|e| format!("settings.{section}: {e}"))
}

/// `settings.rate_limit`: one limit or a list (e.g. per minute and per hour).
pub(crate) fn rate_limits(settings: &serde_json::Value) -> Result<Vec<RateLimit>, String> {
    let limits: Vec<RateLimit> = match settings.get("rate_limit") {
        None => return Ok(Vec::new()),
        Some(v @ serde_json::Value::Array(_)) => serde_json::from_value(v.clone()),
        Some(v) => serde_json::from_value(v.clone()).map(|l| vec![l]),
    }
    .map_err(|e| format!("settings.rate_limit: {e}"))?;
    for l in &limits {
        l.validate()?;
    }
    Ok(limits)
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

    #[test]
    fn rate_limits_are_one_or_many() {
        use serde_json::json;
        assert!(rate_limits(&json!({})).unwrap().is_empty());
        let one = rate_limits(&json!({"rate_limit": {"limit": 500, "per": "minute"}})).unwrap();
        assert_eq!(one.len(), 1);
        let two = rate_limits(&json!({"rate_limit": [
            {"limit": 60, "per": "minute"}, {"limit": 1000, "per": "hour"}]}))
        .unwrap();
        assert_eq!(two.len(), 2);
        let err = rate_limits(&json!({"rate_limit": {"limit": 5, "per": "day"}})).unwrap_err();
        assert!(err.starts_with("settings.rate_limit"), "{err}");
    }
}
