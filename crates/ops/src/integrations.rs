//! Managing integrations, for the CLI and the HTTP API alike: validation that names the
//! field, credentials sealed on the way in and never out, the connection test.
use secrecy::ExposeSecret;
use serde_json::Value;
use std::sync::Arc;
use switchyard_core::IntegrationStatus;
use switchyard_core::inbound::InboundSpec;
use switchyard_providers::{Credentials, HttpClient};
use switchyard_resilience::{BreakerPolicy, RetryPolicy, settings};
use switchyard_store::{Integration, SealedCredentials, SecretKind, Store, StoreError};
use switchyard_vault::{Keyring, Sealed, VaultError};
use uuid::Uuid;

use crate::keys::aad;

/// What is wrong with an integration, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct FieldError {
    pub field: String,
    pub reason: String,
}

fn field(field: &str, reason: impl Into<String>) -> FieldError {
    FieldError {
        field: field.to_owned(),
        reason: reason.into(),
    }
}

/// Check what an integration is made of, before storing it.
pub fn validate(
    name: &str,
    provider: &str,
    entities: &[String],
    settings: &Value,
    inbound: &Value,
    credentials: Option<&Value>,
) -> Result<(), FieldError> {
    if !switchyard_core::is_valid_name(name) {
        return Err(field(
            "name",
            format!("`{name}` is not a valid name (1-64 of a-z, 0-9, _ or -)"),
        ));
    }
    if switchyard_providers::info(provider).is_none() {
        let known: Vec<_> = switchyard_providers::providers()
            .iter()
            .map(|p| p.name)
            .collect();
        return Err(field(
            "provider",
            format!(
                "`{provider}` is not a known provider; known: {}",
                known.join(", ")
            ),
        ));
    }
    for e in entities {
        if !switchyard_core::is_valid_name(e) {
            return Err(field(
                "entities",
                format!("`{e}` is not a valid entity name"),
            ));
        }
    }
    if !settings.is_object() {
        return Err(field("settings", "must be a JSON object"));
    }
    settings::retry(&RetryPolicy::default(), settings).map_err(|e| split(&e))?;
    settings::breaker(&BreakerPolicy::default(), settings).map_err(|e| split(&e))?;
    settings::rate_limits(settings).map_err(|e| split(&e))?;
    switchyard_providers::validate(provider, settings).map_err(|e| field(&e.field, e.reason))?;
    switchyard_providers::concurrency(settings).map_err(|e| field(&e.field, e.reason))?;
    serde_json::from_value::<InboundSpec>(inbound.clone())
        .map_err(|e| field("inbound", e.to_string()))?;
    if let Some(c) = credentials {
        let creds = Credentials::from_json(c).map_err(|e| field(&e.field, e.reason))?;
        // A connector that needs a credential says which is missing.
        let target = switchyard_providers::info(provider).is_some_and(|p| p.is_target);
        if target {
            switchyard_providers::build(
                provider,
                settings,
                creds,
                &switchyard_providers::BuildContext::for_validation(
                    switchyard_providers::http_client(),
                ),
            )
            .map_err(|e| field(&e.field, e.reason))?;
        }
    }
    Ok(())
}

/// Credentials do not follow a changed address: when the settings change where or how the
/// provider is called (its origin, token URL, auth or headers) and the integration has
/// credentials, they must be given again. Returns whether the scope changed (its OAuth2
/// tokens, bought for the old place, are then dropped).
pub fn check_credentials_scope(
    provider: &str,
    before: &Value,
    after: &Value,
    has_credentials: bool,
    credentials_given: bool,
) -> Result<bool, FieldError> {
    let (old, new) = (
        switchyard_providers::credential_scope(provider, before),
        switchyard_providers::credential_scope(provider, after),
    );
    if old == new {
        return Ok(false);
    }
    if has_credentials && !credentials_given {
        let place = |s: &Option<Value>| {
            s.as_ref()
                .and_then(|v| v["origin"].as_str().map(str::to_owned))
                .unwrap_or_else(|| "?".into())
        };
        let (from, to) = (place(&old), place(&new));
        let what = if from == to {
            "how the provider is called changed (auth or headers)".to_owned()
        } else {
            format!("the provider's address changed from {from} to {to}")
        };
        return Err(field(
            "credentials",
            format!("{what}: give the credentials again (they are not sent to a new place)"),
        ));
    }
    Ok(true)
}

/// Check a schedule (`core::schedule::Schedule`); errors name the field (`schedule.at`, …).
pub fn validate_schedule(schedule: &Value) -> Result<(), FieldError> {
    switchyard_core::schedule::Schedule::from_json(schedule)
        .map(|_| ())
        .map_err(|e| field(&e.field, e.reason))
}

/// `"settings.retry.factor must be …"` → field `settings.retry…`, reason the rest.
fn split(message: &str) -> FieldError {
    let message = message.strip_prefix("settings.").unwrap_or(message);
    let (f, reason) = message.split_once(' ').unwrap_or((message, "is invalid"));
    let f = f.trim_end_matches(':');
    FieldError {
        field: format!("settings.{f}"),
        reason: reason.trim_start_matches(": ").to_owned(),
    }
}

/// An integration as callers see it: never a credential or a secret.
pub fn view(i: &Integration) -> Value {
    serde_json::json!({
        "id": i.id,
        "tenant": i.tenant,
        "name": i.name,
        "provider": i.provider,
        "status": i.status,
        "direction": i.direction,
        "entities": i.entities,
        "settings": i.settings,
        "inbound": i.inbound,
        "webhook_auth": i.webhook_auth.get("scheme"),
        "webhook_path": (i.webhook_auth.get("scheme").and_then(Value::as_str) != Some("disabled"))
            .then(|| format!("/v1/webhooks/{}", i.id)),
        "has_credentials": i.credentials.is_some(),
        "schedule": i.schedule,
        "next_sync_at": i.next_sync_at,
        "last_sync_at": i.last_sync_at,
        "sync_failures": i.sync_failures,
        "last_error": i.last_error,
        "created_at": i.created_at,
        "updated_at": i.updated_at,
    })
}

/// Seal credentials for integration `id`.
pub fn seal_credentials(
    keyring: &Keyring,
    id: Uuid,
    credentials: &Value,
) -> Result<SealedCredentials, VaultError> {
    let sealed = keyring.seal(
        credentials.to_string().as_bytes(),
        &aad(id, SecretKind::Credentials),
    )?;
    Ok(SealedCredentials {
        key_id: sealed.key_id,
        bytes: sealed.bytes,
    })
}

/// The integration's credentials, opened (for its connector only: never returned).
pub fn open_credentials(keyring: &Keyring, i: &Integration) -> Result<Credentials, String> {
    let Some(sealed) = &i.credentials else {
        return Ok(Credentials::default());
    };
    let plain = keyring
        .open(
            &Sealed {
                key_id: sealed.key_id.clone(),
                bytes: sealed.bytes.clone(),
            },
            &aad(i.id, SecretKind::Credentials),
        )
        .map_err(|e| format!("credentials: {e}"))?;
    let json: Value = serde_json::from_slice(plain.expose_secret())
        .map_err(|_| "credentials: the decrypted value is not JSON".to_owned())?;
    Credentials::from_json(&json).map_err(|e| e.to_string())
}

/// The outcome of a connection test.
#[derive(Debug, Clone, serde::Serialize)]
pub struct TestOutcome {
    pub ok: bool,
    pub message: String,
    pub status: IntegrationStatus,
}

/// Call the provider with the integration's settings and credentials. Success moves an
/// `inactive` integration to `testing`; failure moves an integration that is not active to
/// `error` with the message. An `active` integration stays active whatever one test says
/// (its jobs keep flowing, and its breaker and retries deal with a provider that is down);
/// the failure is recorded (`last_error` and a `test_failed` event).
pub async fn test_connection(
    store: &Store,
    keyring: Arc<Keyring>,
    http: HttpClient,
    i: &Integration,
) -> Result<TestOutcome, StoreError> {
    let ctx = switchyard_providers::BuildContext::for_integration(
        http,
        store.clone(),
        keyring.clone(),
        i.id,
    );
    let result = match open_credentials(&keyring, i) {
        Err(e) => Err(e),
        Ok(creds) => match switchyard_providers::build(&i.provider, &i.settings, creds, &ctx) {
            Err(e) => Err(e.to_string()),
            Ok(c) => c.test_connection().await.map_err(|e| e.message),
        },
    };
    let (ok, message, status) = match result {
        Ok(()) => {
            // Passing the test readies it to be activated (an `error` one too, once fixed).
            let next = if matches!(
                i.status,
                IntegrationStatus::Inactive | IntegrationStatus::Error
            ) {
                IntegrationStatus::Testing
            } else {
                i.status
            };
            (
                true,
                "the provider answered with these settings and credentials".to_owned(),
                next,
            )
        }
        Err(e) if i.status == IntegrationStatus::Active => {
            store
                .add_integration_event(i.id, "test_failed", &format!("connection test failed: {e}"))
                .await?;
            (false, e, IntegrationStatus::Active)
        }
        Err(e) => (false, e, IntegrationStatus::Error),
    };
    store
        .set_status(i.id, status, (!ok).then_some(message.as_str()))
        .await?;
    Ok(TestOutcome {
        ok,
        message,
        status,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rest() -> Value {
        json!({"base_url": "http://127.0.0.1:9", "auth": {"type": "bearer"},
               "entities": {"order": {"create": {"method": "POST", "path": "/o"}}}})
    }

    #[test]
    fn errors_name_the_field() {
        let f = |name: &str, provider: &str, settings: Value, creds: Option<Value>| {
            validate(name, provider, &[], &settings, &json!({}), creds.as_ref())
                .unwrap_err()
                .field
        };
        assert_eq!(f("Bad Name", "rest", rest(), None), "name");
        assert_eq!(f("erp", "sap", rest(), None), "provider");
        assert_eq!(
            f(
                "erp",
                "rest",
                json!({"base_url": "ftp://x", "entities": {}}),
                None
            ),
            "settings.base_url"
        );
        let mut r = rest();
        r["retry"] = json!({"factor": 0});
        assert_eq!(f("erp", "rest", r, None), "settings.retry.factor");
        let mut r = rest();
        r["rate_limit"] = json!({"limit": 5, "per": "fortnight"});
        assert!(f("erp", "rest", r, None).starts_with("settings.rate_limit"));
        assert_eq!(
            f("erp", "rest", rest(), Some(json!({"api_key": "x"}))),
            "credentials.token"
        );
        assert_eq!(
            f("erp", "rest", rest(), Some(json!({"token": 5}))),
            "credentials.token"
        );
        let e = validate(
            "shop",
            "webhook",
            &[],
            &json!({}),
            &json!({"entity": "order"}),
            None,
        )
        .unwrap_err();
        assert_eq!(e.field, "inbound");
        assert!(
            validate(
                "erp",
                "rest",
                &["order".into()],
                &rest(),
                &json!({}),
                Some(&json!({"token": "t"}))
            )
            .is_ok()
        );
    }
}
