//! Managing integrations, for the CLI and the HTTP API alike: validation that names the
//! field, credentials sealed on the way in and never out, the connection test.
use chrono::{DateTime, Utc};
use secrecy::ExposeSecret;
use serde_json::Value;
use std::sync::Arc;
use switchyard_core::inbound::InboundSpec;
use switchyard_core::webhook_auth::{WebhookAuth, WebhookPolicy};
use switchyard_core::{Direction, IntegrationStatus};
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

/// An integration as callers see it: never a credential or a secret (a secret generated
/// by the request that answers it is shown once, in its own field).
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct IntegrationView {
    pub id: Uuid,
    pub tenant: String,
    pub name: String,
    pub provider: String,
    pub status: IntegrationStatus,
    pub direction: Direction,
    pub entities: Vec<String>,
    /// The connector's settings (see `GET /v1/connectors/{name}`).
    pub settings: Value,
    /// How inbound events are read (`core::inbound`).
    pub inbound: Value,
    /// How its webhooks are authenticated (the scheme's name; never its secrets).
    pub webhook_auth: Option<String>,
    /// Where its sender posts webhooks; none when webhooks are disabled.
    pub webhook_path: Option<String>,
    pub has_credentials: bool,
    /// When it syncs on its own.
    pub schedule: Option<Value>,
    pub next_sync_at: Option<DateTime<Utc>>,
    pub last_sync_at: Option<DateTime<Utc>>,
    /// Failed syncs in a row.
    pub sync_failures: i32,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// What this request generated, shown only now.
    #[serde(flatten)]
    pub generated: Shown,
}

impl IntegrationView {
    /// Show what the request generated (once).
    pub fn with_generated(mut self, g: Option<&Generated>) -> IntegrationView {
        self.generated = Shown::from(g);
        self
    }
}

/// A webhook key, password or secret generated by a request, in the field that names it
/// (shown once, in that request's answer).
#[derive(Debug, Clone, Default, serde::Serialize, utoipa::ToSchema)]
pub struct Shown {
    /// Send it as `X-API-Key`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook_api_key: Option<String>,
    /// The basic-auth password.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook_password: Option<String>,
    /// The signing secret: give it to the sender.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook_secret: Option<String>,
}

impl From<Option<&Generated>> for Shown {
    fn from(g: Option<&Generated>) -> Shown {
        let mut s = Shown::default();
        match g {
            Some(Generated::ApiKey(v)) => s.webhook_api_key = Some(v.clone()),
            Some(Generated::Password(v)) => s.webhook_password = Some(v.clone()),
            Some(Generated::Secret(v)) => s.webhook_secret = Some(v.clone()),
            None => {}
        }
        s
    }
}

/// An integration as callers see it.
pub fn view(i: &Integration) -> IntegrationView {
    let scheme = i
        .webhook_auth
        .get("scheme")
        .and_then(Value::as_str)
        .map(str::to_owned);
    IntegrationView {
        id: i.id,
        tenant: i.tenant.clone(),
        name: i.name.clone(),
        provider: i.provider.clone(),
        status: i.status,
        direction: i.direction,
        entities: i.entities.clone(),
        settings: i.settings.clone(),
        inbound: i.inbound.clone(),
        webhook_path: (scheme.as_deref() != Some("disabled"))
            .then(|| format!("/v1/webhooks/{}", i.id)),
        webhook_auth: scheme,
        has_credentials: i.credentials.is_some(),
        schedule: i.schedule.clone(),
        next_sync_at: i.next_sync_at,
        last_sync_at: i.last_sync_at,
        sync_failures: i.sync_failures,
        last_error: i.last_error.clone(),
        created_at: i.created_at,
        updated_at: i.updated_at,
        generated: Shown::default(),
    }
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
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
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

/// A credential the hub made for an integration's webhooks, shown once to whoever created
/// it (by the CLI and the HTTP API alike, under [`Generated::field`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Generated {
    /// An API key, sent as `X-API-Key`.
    ApiKey(String),
    /// A basic-auth password.
    Password(String),
    /// A Standard Webhooks signing secret (`whsec_…`), to give the sender.
    Secret(String),
}

impl Generated {
    /// The field it is shown under.
    pub fn field(&self) -> &'static str {
        match self {
            Generated::ApiKey(_) => "webhook_api_key",
            Generated::Password(_) => "webhook_password",
            Generated::Secret(_) => "webhook_secret",
        }
    }

    pub fn value(&self) -> &str {
        match self {
            Generated::ApiKey(v) | Generated::Password(v) | Generated::Secret(v) => v,
        }
    }

    /// What it is, for a person.
    pub fn describe(&self) -> &'static str {
        match self {
            Generated::ApiKey(_) => "webhook API key (send it as X-API-Key)",
            Generated::Password(_) => "webhook basic-auth password",
            Generated::Secret(_) => "webhook signing secret (give it to the sender)",
        }
    }
}

/// A new API key or password: `sy_` and 48 hex digits (24 random bytes).
pub fn generate_key() -> String {
    use rand::RngCore;
    let mut b = [0u8; 24];
    rand::rng().fill_bytes(&mut b);
    format!("sy_{}", hex::encode(b))
}

/// A new Standard Webhooks secret: `whsec_` and the base64 of 32 random bytes.
pub fn generate_signing_secret() -> String {
    let key = Keyring::generate("k");
    format!("whsec_{}", key.expose_secret().trim_start_matches("k:"))
}

/// The webhook policy `auth` asks for (a JSON object with a `scheme`; `None`: an API key for
/// a `webhook` sender, no webhooks for anything else), with the credential it lacks made
/// here: an API key without `key_sha256`, a basic-auth password without `password_sha256`,
/// a Standard Webhooks secret when `secrets` holds none (added to them). Validated with the
/// secrets, which a signing scheme needs.
pub fn webhook_policy(
    provider: &str,
    auth: Option<Value>,
    secrets: &mut Vec<String>,
) -> Result<(WebhookPolicy, Option<Generated>), FieldError> {
    let mut auth = auth.unwrap_or_else(|| {
        let scheme = if provider == "webhook" {
            "api_key"
        } else {
            "disabled"
        };
        serde_json::json!({ "scheme": scheme })
    });
    let obj = auth
        .as_object_mut()
        .ok_or_else(|| field("webhook_auth", "must be an object with a `scheme`"))?;
    let scheme = obj
        .get("scheme")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let digest = |s: &str| serde_json::json!([switchyard_core::ids::secret_digest(s)]);
    // A subscription challenge's verify token is kept as its digest.
    if let Some(token) = obj.remove("verify_token") {
        let token = token
            .as_str()
            .filter(|t| !t.trim().is_empty())
            .ok_or_else(|| field("webhook_auth.verify_token", "a non-empty string"))?;
        obj.insert("verify_token_sha256".into(), digest(token));
    }
    let generated = match scheme.as_str() {
        "api_key" | "query_key" if !obj.contains_key("key_sha256") => {
            let key = generate_key();
            obj.insert("key_sha256".into(), digest(&key));
            Some(Generated::ApiKey(key))
        }
        "basic" if !obj.contains_key("password_sha256") => {
            let password = generate_key();
            obj.insert("password_sha256".into(), digest(&password));
            obj.entry("username").or_insert_with(|| "webhook".into());
            Some(Generated::Password(password))
        }
        "standard_webhooks" if secrets.is_empty() => {
            let secret = generate_signing_secret();
            secrets.push(secret.clone());
            Some(Generated::Secret(secret))
        }
        _ => None,
    };
    let policy: WebhookPolicy =
        serde_json::from_value(auth).map_err(|e| field("webhook_auth", e.to_string()))?;
    if policy.auth.needs_secrets() && secrets.is_empty() {
        return Err(field(
            "webhook_secrets",
            format!("`{scheme}` signs webhooks with a secret: give the sender's secret(s)"),
        ));
    }
    policy
        .validate(secrets)
        .map_err(|(f, why)| field(&f, why))?;
    Ok((policy, generated))
}

/// Seal an integration's webhook signing secrets.
pub fn seal_webhook_secrets(
    keyring: &Keyring,
    id: Uuid,
    secrets: &[String],
) -> Result<SealedCredentials, VaultError> {
    let sealed = keyring.seal(
        Value::from(secrets.to_vec()).to_string().as_bytes(),
        &aad(id, SecretKind::WebhookSecrets),
    )?;
    Ok(SealedCredentials {
        key_id: sealed.key_id,
        bytes: sealed.bytes,
    })
}

/// An integration to create, asked the same way by the CLI and the HTTP API.
#[derive(Debug, Clone, Default)]
pub struct CreateRequest {
    pub tenant: String,
    pub name: String,
    /// A provider, or a built-in connector by name.
    pub provider: String,
    /// Default `inactive`.
    pub status: Option<IntegrationStatus>,
    /// Default `export`.
    pub direction: Option<Direction>,
    pub entities: Vec<String>,
    pub settings: Value,
    pub inbound: Value,
    /// Goes in (sealed), never comes out.
    pub credentials: Option<Value>,
    /// The webhook policy (see [`webhook_policy`]).
    pub webhook_auth: Option<Value>,
    pub webhook_secrets: Vec<String>,
    pub schedule: Option<Value>,
    /// Asked with a tenant's key: a target becomes active only after its connection test.
    pub by_tenant: bool,
}

/// A created integration and the credential made for it, if any (shown once).
#[derive(Debug, Clone)]
pub struct Created {
    pub integration: Integration,
    pub generated: Option<Generated>,
}

#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error("invalid integration: {0}")]
    Invalid(#[from] FieldError),
    #[error("cannot encrypt its secrets: {0}")]
    Vault(#[from] VaultError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Create an integration: validate everything (naming the field at fault), give a
/// connector's documented limits unless the integration sets its own, make the webhook
/// credential it lacks, seal credentials and secrets, and store it.
pub async fn create(
    store: &Store,
    keyring: &Keyring,
    r: CreateRequest,
) -> Result<Created, CreateError> {
    let settings = switchyard_providers::with_defaults(&r.provider, &r.settings);
    validate(
        &r.name,
        &r.provider,
        &r.entities,
        &settings,
        &r.inbound,
        r.credentials.as_ref(),
    )?;
    if let Some(s) = &r.schedule {
        validate_schedule(s)?;
    }
    let mut secrets = r.webhook_secrets;
    let (policy, generated) = webhook_policy(&r.provider, r.webhook_auth, &mut secrets)?;
    let is_target = switchyard_providers::info(&r.provider).is_some_and(|p| p.is_target);
    if r.by_tenant && is_target && r.status == Some(IntegrationStatus::Active) {
        return Err(field(
            "status",
            "a target becomes active after its connection test passes: create it, then test and activate it",
        )
        .into());
    }
    let id = Uuid::now_v7();
    let credentials = r
        .credentials
        .as_ref()
        .map(|c| seal_credentials(keyring, id, c))
        .transpose()?;
    let webhook_secrets = if secrets.is_empty() {
        None
    } else {
        Some(seal_webhook_secrets(keyring, id, &secrets)?)
    };
    let integration = store
        .create_integration(&switchyard_store::NewIntegration {
            id,
            tenant: r.tenant,
            name: r.name,
            provider: r.provider,
            status: r.status.unwrap_or(IntegrationStatus::Inactive),
            direction: r.direction.unwrap_or(Direction::Export),
            entities: r.entities,
            settings,
            inbound: r.inbound,
            webhook_auth: serde_json::to_value(&policy).unwrap_or_default(),
            credentials,
            webhook_secrets,
            schedule: r.schedule,
        })
        .await?;
    Ok(Created {
        integration,
        generated,
    })
}

/// A webhook secret's fingerprint: the first 12 hex digits of its SHA-256 (never the
/// secret). API keys and basic-auth passwords are stored as SHA-256 already.
pub fn fingerprint(secret: &str) -> String {
    switchyard_core::ids::secret_digest(secret)[..12].to_owned()
}

/// How to change an integration's webhook secrets (or API keys, or basic-auth passwords).
#[derive(Debug, Clone)]
pub enum SecretChange {
    /// Accept another: for a signing scheme, the sender's new secret(s) (required); for
    /// `api_key` and `basic`, a key or password is generated (shown once). Old and new are
    /// accepted until the old is removed.
    Add { secrets: Vec<String> },
    /// Stop accepting the one with this fingerprint (or fingerprint prefix); never the last.
    Remove { fingerprint: String },
}

/// The fingerprints of what an integration's webhooks are accepted with now, and what was
/// generated by the change that led here (shown once).
#[derive(Debug, Clone)]
pub struct WebhookSecrets {
    pub scheme: String,
    pub fingerprints: Vec<String>,
    pub generated: Option<Generated>,
}

#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    #[error("{0}")]
    Invalid(#[from] FieldError),
    #[error("no secret with fingerprint {0}")]
    NotFound(String),
    #[error("the webhook secrets changed while this change was made; try again")]
    Changed,
    #[error("the webhook secrets cannot be opened or sealed: {0}")]
    Vault(#[from] VaultError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The stored digests of an API-key or basic scheme (its secrets are kept as SHA-256).
fn digests(auth: &mut WebhookAuth) -> Option<&mut Vec<String>> {
    match auth {
        WebhookAuth::ApiKey { key_sha256, .. } | WebhookAuth::QueryKey { key_sha256 } => {
            Some(key_sha256)
        }
        WebhookAuth::Basic {
            password_sha256, ..
        } => Some(password_sha256),
        _ => None,
    }
}

fn open_webhook_secrets(keyring: &Keyring, i: &Integration) -> Result<Vec<String>, SecretsError> {
    let Some(s) = &i.webhook_secrets else {
        return Ok(Vec::new());
    };
    let plain = keyring.open(
        &Sealed {
            key_id: s.key_id.clone(),
            bytes: s.bytes.clone(),
        },
        &aad(i.id, SecretKind::WebhookSecrets),
    )?;
    serde_json::from_slice(plain.expose_secret().as_ref()).map_err(|e| {
        SecretsError::Invalid(field(
            "webhook_secrets",
            format!("the stored secrets are not a list: {e}"),
        ))
    })
}

/// What integration `i`'s webhooks are accepted with now (fingerprints only).
pub fn webhook_secrets(keyring: &Keyring, i: &Integration) -> Result<WebhookSecrets, SecretsError> {
    let mut policy: WebhookPolicy = serde_json::from_value(i.webhook_auth.clone())
        .map_err(|e| field("webhook_auth", e.to_string()))?;
    let scheme = i
        .webhook_auth
        .get("scheme")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let fingerprints = match digests(&mut policy.auth) {
        Some(d) => d.iter().map(|d| d[..12.min(d.len())].to_owned()).collect(),
        None => open_webhook_secrets(keyring, i)?
            .iter()
            .map(|s| fingerprint(s))
            .collect(),
    };
    Ok(WebhookSecrets {
        scheme,
        fingerprints,
        generated: None,
    })
}

/// Rotate integration `i`'s webhook secrets (see [`SecretChange`]), by compare-and-set on
/// what was read: a concurrent change makes this one fail ([`SecretsError::Changed`])
/// instead of undoing the other.
pub async fn change_webhook_secrets(
    store: &Store,
    keyring: &Keyring,
    i: &Integration,
    change: SecretChange,
) -> Result<WebhookSecrets, SecretsError> {
    let mut policy: WebhookPolicy = serde_json::from_value(i.webhook_auth.clone())
        .map_err(|e| field("webhook_auth", e.to_string()))?;
    let mut generated = None;
    if let Some(list) = digests(&mut policy.auth) {
        match change {
            SecretChange::Add { secrets } => {
                if !secrets.is_empty() {
                    return Err(field(
                        "secret",
                        "API keys and basic-auth passwords are generated, not given",
                    )
                    .into());
                }
                let key = generate_key();
                list.push(switchyard_core::ids::secret_digest(&key));
                generated = Some(if matches!(policy.auth, WebhookAuth::Basic { .. }) {
                    Generated::Password(key)
                } else {
                    Generated::ApiKey(key)
                });
            }
            SecretChange::Remove { fingerprint: f } => {
                let before = list.len();
                list.retain(|d| f.is_empty() || !d.starts_with(&f));
                if list.len() == before {
                    return Err(SecretsError::NotFound(f));
                }
                if list.is_empty() {
                    return Err(
                        field("fingerprint", "that is the last one; add a new one first").into(),
                    );
                }
            }
        }
        let new = serde_json::to_value(&policy).unwrap_or_default();
        if !store.set_webhook_auth(i.id, &new, &i.webhook_auth).await? {
            return Err(SecretsError::Changed);
        }
        let mut after = i.clone();
        after.webhook_auth = new;
        let mut out = webhook_secrets(keyring, &after)?;
        out.generated = generated;
        return Ok(out);
    }
    if !policy.auth.needs_secrets() {
        return Err(field(
            "webhook_auth",
            "this integration's webhook scheme has no secrets to rotate",
        )
        .into());
    }
    let mut secrets = open_webhook_secrets(keyring, i)?;
    match change {
        SecretChange::Add { secrets: added } => {
            let added: Vec<String> = added
                .into_iter()
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect();
            if added.is_empty() {
                return Err(field("secret", "give the sender's new secret").into());
            }
            secrets.extend(added);
        }
        SecretChange::Remove { fingerprint: f } => {
            let before = secrets.len();
            secrets.retain(|s| f.is_empty() || !fingerprint(s).starts_with(&f));
            if secrets.len() == before {
                return Err(SecretsError::NotFound(f));
            }
            if secrets.is_empty() {
                return Err(
                    field("fingerprint", "that is the last one; add the new one first").into(),
                );
            }
        }
    }
    policy
        .validate(&secrets)
        .map_err(|(f, why)| field(&f, why))?;
    let sealed = seal_webhook_secrets(keyring, i.id, &secrets)?;
    if !store
        .set_sealed(
            i.id,
            SecretKind::WebhookSecrets,
            Some(&sealed),
            i.webhook_secrets.as_ref(),
        )
        .await?
    {
        return Err(SecretsError::Changed);
    }
    Ok(WebhookSecrets {
        scheme: i
            .webhook_auth
            .get("scheme")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        fingerprints: secrets.iter().map(|s| fingerprint(s)).collect(),
        generated: None,
    })
}

/// A change to an integration, asked the same way by the CLI and the HTTP API; what is
/// left out stays as it is.
#[derive(Debug, Clone, Default)]
pub struct UpdateRequest {
    pub name: Option<String>,
    pub direction: Option<Direction>,
    pub entities: Option<Vec<String>>,
    pub settings: Option<Value>,
    pub inbound: Option<Value>,
    /// Goes in (sealed), never comes out.
    pub credentials: Option<Value>,
    pub schedule: Option<Value>,
}

/// Change integration `i`: the integration as it will be is validated (naming the field at
/// fault); credentials must be given again when the place they are sent to changes (and
/// the OAuth tokens bought for the old place are dropped); new credentials are sealed.
pub async fn update(
    store: &Store,
    keyring: &Keyring,
    i: &Integration,
    r: UpdateRequest,
) -> Result<Integration, CreateError> {
    if let Some(s) = &r.schedule {
        validate_schedule(s)?;
    }
    let settings = r.settings.as_ref().unwrap_or(&i.settings);
    validate(
        r.name.as_deref().unwrap_or(&i.name),
        &i.provider,
        r.entities.as_deref().unwrap_or(&i.entities),
        settings,
        r.inbound.as_ref().unwrap_or(&i.inbound),
        r.credentials.as_ref(),
    )?;
    let rescoped = check_credentials_scope(
        &i.provider,
        &i.settings,
        settings,
        i.credentials.is_some(),
        r.credentials.is_some(),
    )?;
    let credentials = r
        .credentials
        .as_ref()
        .map(|c| seal_credentials(keyring, i.id, c))
        .transpose()?;
    let patch = switchyard_store::IntegrationPatch {
        name: r.name,
        direction: r.direction,
        entities: r.entities,
        settings: r.settings,
        inbound: r.inbound,
        schedule: r.schedule,
        credentials,
    };
    let updated = store.update_integration(i.id, &patch).await?;
    if rescoped {
        // Tokens bought for the old place are not sent to the new one.
        store.clear_oauth_token(i.id).await?;
    }
    Ok(updated)
}

/// Soft-delete: it stops sending and receiving; its jobs and mappings stay for audit.
pub async fn delete(store: &Store, i: &Integration) -> Result<(), StoreError> {
    store.delete_integration(i.id).await
}

/// An activation, with the held jobs it released.
#[derive(Debug, Clone)]
pub struct Activated {
    pub integration: Integration,
    /// Jobs held while it was not active, released in the order they came.
    pub released: u64,
    /// Why they are still held (the scheduler releases them once the broker takes them).
    pub release_error: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum StatusError {
    /// A tenant's target goes live once its connection test passed.
    #[error(
        "integration `{name}` is {status}: run its connection test first (POST /v1/integrations/{id}/test); it can be activated once the test passes"
    )]
    TestFirst {
        id: Uuid,
        name: String,
        status: IntegrationStatus,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Activate; the jobs held while it was not active are released, in the order they came. A
/// tenant's target that is `inactive` or in `error` is tested first (`by_tenant`); the
/// operators' admin may activate it regardless.
pub async fn activate(
    store: &Store,
    broker: &switchyard_broker::Broker,
    i: &Integration,
    by_tenant: bool,
) -> Result<Activated, StatusError> {
    let is_target = switchyard_providers::info(&i.provider).is_some_and(|p| p.is_target);
    if by_tenant
        && is_target
        && matches!(
            i.status,
            IntegrationStatus::Inactive | IntegrationStatus::Error
        )
    {
        return Err(StatusError::TestFirst {
            id: i.id,
            name: i.name.clone(),
            status: i.status,
        });
    }
    store
        .set_status(i.id, IntegrationStatus::Active, None)
        .await?;
    let integration = store.integration(i.id).await?;
    let (released, release_error) = match crate::held::release(store, broker, i.id).await {
        Ok(n) => (n, None),
        Err(e) => {
            tracing::warn!(integration = %i.id, error = %e, "activated, but its held jobs could not be released yet");
            (0, Some(e.to_string()))
        }
    };
    Ok(Activated {
        integration,
        released,
        release_error,
    })
}

/// Deactivate: its webhooks are refused, and jobs for it are held (or dropped, as each
/// route says).
pub async fn deactivate(store: &Store, i: &Integration) -> Result<Integration, StoreError> {
    store
        .set_status(i.id, IntegrationStatus::Inactive, None)
        .await?;
    store.integration(i.id).await
}

/// Forget a mapping: the record is created again at the target on its next event.
pub async fn forget_mapping(
    store: &Store,
    i: &Integration,
    entity: &str,
    internal_id: &str,
) -> Result<(), StoreError> {
    store.delete_mapping(i.id, entity, internal_id).await
}
