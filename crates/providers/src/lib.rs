//! Provider adapters. Every provider implements [`Connector`]; the registry
//! ([`KINDS`]: one [`ProviderKind`] per provider, found by [`kind`]; [`build`],
//! [`validate`]) is how the services find them.
//!
//! Most REST providers differ only in base URL, auth, endpoints, field mapping and error
//! shape; the generic [`rest`] connector reads those from a manifest (the integration's
//! settings). Providers that need code (OAuth2, XML, JSON-RPC) implement [`Connector`]
//! themselves and register here.
#![forbid(unsafe_code)]

pub mod connectors;
pub mod egress;
pub mod list;
pub mod metrics;
pub mod oauth;
pub mod oauth1;
pub mod operations;
pub mod rest;
pub mod tokens;
pub mod xml;

/// The HTTP client connectors share (see [`http_client`]).
pub use reqwest::Client as HttpClient;

use async_trait::async_trait;
use secrecy::SecretString;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use switchyard_core::ErrorClass;

/// Decrypted credentials: a flat map of names to secrets (`token`, `api_key`, `username`,
/// `password`, …). Never printed.
#[derive(Default)]
pub struct Credentials(pub BTreeMap<String, SecretString>);

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Credentials")
            .field(&self.0.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Credentials {
    /// Read a JSON object of string values.
    pub fn from_json(value: &Value) -> Result<Credentials, ConfigError> {
        let obj = value
            .as_object()
            .ok_or_else(|| ConfigError::new("credentials", "must be a JSON object of strings"))?;
        let mut out = BTreeMap::new();
        for (k, v) in obj {
            let s = v
                .as_str()
                .ok_or_else(|| ConfigError::new(format!("credentials.{k}"), "must be a string"))?;
            out.insert(k.clone(), SecretString::from(s.to_owned()));
        }
        Ok(Credentials(out))
    }

    pub fn get(&self, name: &str) -> Option<&SecretString> {
        self.0.get(name)
    }
}

/// What a job asks of a provider.
#[derive(Debug, Clone, Copy)]
pub enum Operation<'a> {
    Create {
        entity: &'a str,
        internal_id: &'a str,
        payload: &'a Value,
        idempotency_key: &'a str,
    },
    Update {
        entity: &'a str,
        internal_id: &'a str,
        external_id: &'a str,
        payload: &'a Value,
        idempotency_key: &'a str,
        /// What the last write's answer said to keep (QuickBooks' `SyncToken`).
        kept: Option<&'a Value>,
    },
    Delete {
        entity: &'a str,
        internal_id: &'a str,
        external_id: &'a str,
    },
}

/// A successful call.
#[derive(Debug, Clone)]
pub struct CallOutcome {
    /// The provider's id for the entity (for a create, read from the response).
    pub external_id: Option<String>,
    /// The record's version after the write, when the provider reports one (the manifest's
    /// `version_pointer`): how the hub recognises the provider's echo of its own write.
    pub version: Option<i64>,
    /// Values the next update needs from this answer (the manifest's `keep`).
    pub kept: Option<Value>,
    pub status: u16,
    /// e.g. `POST http://host/api/orders`; never headers or credentials.
    pub request: String,
    /// The response body, truncated.
    pub response: String,
}

/// A failed call, classified.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ProviderError {
    pub class: ErrorClass,
    pub status: Option<u16>,
    pub message: String,
    /// The provider asked us to wait this long (`Retry-After`).
    pub retry_after: Option<Duration>,
    pub request: Option<String>,
    pub response: Option<String>,
    /// The integration must be connected again (its OAuth grant was refused): the job
    /// waits, held, instead of failing.
    pub reauthorize: bool,
}

impl ProviderError {
    pub fn new(class: ErrorClass, message: impl Into<String>) -> ProviderError {
        ProviderError {
            class,
            status: None,
            message: message.into(),
            retry_after: None,
            request: None,
            response: None,
            reauthorize: false,
        }
    }
}

/// An integration whose settings or credentials cannot work, with the field at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct ConfigError {
    pub field: String,
    pub reason: String,
}

impl ConfigError {
    pub fn new(field: impl Into<String>, reason: impl Into<String>) -> ConfigError {
        ConfigError {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

/// One provider account, ready to call.
#[async_trait]
pub trait Connector: Send + Sync {
    /// The provider's registry name.
    fn provider(&self) -> &'static str;
    /// Carry out one operation. Calls are bounded by the connector's timeout.
    async fn execute(&self, op: Operation<'_>) -> Result<CallOutcome, ProviderError>;
    /// A cheap authenticated call that proves the settings and credentials work.
    async fn test_connection(&self) -> Result<(), ProviderError>;
    /// The other records a body for this payload refers to (entity, the sender's id): the
    /// worker resolves them to the target's ids and passes them in the payload, at
    /// `/_switchyard/refs/<entity>/<id>`, before the call.
    fn references(&self, _entity: &str, _payload: &Value) -> Vec<(String, String)> {
        Vec::new()
    }
    /// Whether records of this entity can be created at the provider; when they cannot, the
    /// worker always looks them up and updates the one found.
    fn can_create(&self, _entity: &str) -> bool {
        true
    }
    /// Whether [`Connector::lookup`] can find this entity's records by a natural key.
    fn can_lookup(&self, _entity: &str) -> bool {
        false
    }
    /// Find the record that `payload` describes at the provider by its natural key
    /// (reference, SKU, email): its id, or `None` when there is none. Used before a create
    /// that may repeat an earlier one (a provider that ignores `Idempotency-Key` then still
    /// holds one record) and to link records that already exist.
    async fn lookup(&self, entity: &str, _payload: &Value) -> Result<Lookup, ProviderError> {
        Err(ProviderError::new(
            ErrorClass::Permanent,
            format!(
                "provider `{}` cannot look {entity} records up",
                self.provider()
            ),
        ))
    }
    /// Whether [`Connector::list_changed`] can list this entity's records.
    fn can_list(&self, _entity: &str) -> bool {
        false
    }
    /// The named operations it declares (see [`operations`]).
    fn operation(&self, _name: &str) -> Option<&operations::OperationSpec> {
        None
    }
    /// Every operation it declares, by name.
    fn operation_names(&self) -> Vec<String> {
        Vec::new()
    }
    /// Run one declared operation with the caller's input and wait for the provider's
    /// answer. `idempotency_key` goes where the manifest sends keys (unsafe operations).
    async fn operate(
        &self,
        name: &str,
        _input: &Value,
        _idempotency_key: Option<&str>,
    ) -> Result<operations::OperationAnswer, ProviderError> {
        Err(ProviderError::new(
            ErrorClass::Permanent,
            format!("provider `{}` has no operation `{name}`", self.provider()),
        ))
    }
    /// One page of the entity's records changed since `q.since` (every record when `None`).
    async fn list_changed(&self, q: ListQuery<'_>) -> Result<ChangedPage, ProviderError> {
        Err(ProviderError::new(
            ErrorClass::Permanent,
            format!(
                "provider `{}` cannot list changed {} records",
                self.provider(),
                q.entity
            ),
        ))
    }
}

/// What a look-up found.
#[derive(Debug, Clone)]
pub struct Lookup {
    /// The provider's id of the one record that matches, if one does.
    pub external_id: Option<String>,
    /// Values the update of the record found needs (the look-up's `keep`).
    pub kept: Option<Value>,
    /// e.g. `GET http://host/api/items?sku=A-1`; never headers or credentials.
    pub request: String,
}

/// What to list: an entity's records changed since a time, from a page cursor.
#[derive(Debug, Clone, Copy)]
pub struct ListQuery<'a> {
    pub entity: &'a str,
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    /// From the previous page; `None` for the first.
    pub cursor: Option<&'a str>,
}

/// One record at the provider.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// The provider's id for it.
    pub id: String,
    /// Its version (a number, or a timestamp in microseconds), if the provider gives one.
    pub version: Option<i64>,
    pub payload: Value,
}

/// A page of changed records, and the cursor of the next page (`None`: the last page).
#[derive(Debug, Clone)]
pub struct ChangedPage {
    pub records: Vec<Record>,
    pub next: Option<String>,
    /// e.g. `GET http://host/api/orders?page=2`; never headers or credentials.
    pub request: String,
}

/// A provider the registry knows.
#[derive(Debug, Clone, Copy, serde::Serialize, utoipa::ToSchema)]
pub struct ProviderInfo {
    pub name: &'static str,
    /// Jobs can target it (it has a work queue and a connector); otherwise it only sends
    /// webhooks.
    pub is_target: bool,
    pub description: &'static str,
    /// What its settings are, for `switchyard connectors show`.
    pub settings: &'static str,
}

/// One kind of provider: how its settings are checked and its connectors built. Adding a
/// provider is a type implementing this and one line in [`KINDS`] (see ARCHITECTURE.md,
/// "Adding a provider").
pub trait ProviderKind: Send + Sync {
    fn info(&self) -> &'static ProviderInfo;
    /// Check an integration's connector settings (without [`COMMON_SETTINGS`]).
    fn validate(&self, settings: &Value) -> Result<(), ConfigError>;
    /// Whether integrations with these settings can list their changed `entity` records.
    fn can_list(&self, _settings: &Value, _entity: &str) -> bool {
        false
    }
    /// Whether integrations with these settings can look `entity` records up by a natural key.
    fn can_lookup(&self, _settings: &Value, _entity: &str) -> bool {
        false
    }
    /// An integration's settings with the provider's defaults filled in (a connector's
    /// documented limits), when it is created.
    fn defaults(&self, settings: &Value) -> Value {
        settings.clone()
    }
    /// The REST manifest integrations with these settings are called by, if the provider
    /// is made of one (the `rest` provider and the built-in connectors).
    fn manifest(&self, _settings: &Value) -> Option<Value> {
        None
    }
    /// What `switchyard connectors show` prints.
    fn describe(&self) -> Value {
        serde_json::to_value(self.info()).unwrap_or_default()
    }
    fn build(
        &self,
        settings: &Value,
        credentials: Credentials,
        ctx: &BuildContext,
    ) -> Result<Arc<dyn Connector>, ConfigError>;
}

/// A system that only sends webhooks.
struct WebhookKind;

static WEBHOOK_INFO: ProviderInfo = ProviderInfo {
    name: "webhook",
    is_target: false,
    description: "a system that only sends webhooks (a store, a payment gateway)",
    settings: "none: how its webhooks are read and authenticated is the integration's inbound spec and webhook auth",
};

impl ProviderKind for WebhookKind {
    fn info(&self) -> &'static ProviderInfo {
        &WEBHOOK_INFO
    }
    fn validate(&self, _settings: &Value) -> Result<(), ConfigError> {
        Ok(())
    }
    fn build(
        &self,
        _settings: &Value,
        _credentials: Credentials,
        _ctx: &BuildContext,
    ) -> Result<Arc<dyn Connector>, ConfigError> {
        Err(ConfigError::new(
            "provider",
            "a `webhook` integration only sends webhooks; it cannot be a route's target",
        ))
    }
}

/// Every provider kind.
pub static KINDS: &[&dyn ProviderKind] = &[
    &rest::RestKind,
    &WebhookKind,
    &connectors::QUICKBOOKS,
    &connectors::PRESTASHOP,
    &connectors::MOLONI,
    &connectors::MPESA,
    &connectors::PESAPAL,
    &connectors::FLUTTERWAVE,
    &connectors::AFRICASTALKING,
    &connectors::WHATSAPP,
    &connectors::PAYME,
    &connectors::CLICK,
];

/// The kind named `provider`.
pub fn kind(provider: &str) -> Result<&'static dyn ProviderKind, ConfigError> {
    KINDS
        .iter()
        .copied()
        .find(|k| k.info().name == provider)
        .ok_or_else(|| unknown(provider))
}

pub fn info(provider: &str) -> Option<&'static ProviderInfo> {
    kind(provider).ok().map(|k| k.info())
}

/// Every provider, for `switchyard connectors list`.
pub fn providers() -> Vec<&'static ProviderInfo> {
    KINDS.iter().map(|k| k.info()).collect()
}

/// Providers that have work queues.
pub fn target_providers() -> Vec<String> {
    KINDS
        .iter()
        .map(|k| k.info())
        .filter(|p| p.is_target)
        .map(|p| p.name.to_owned())
        .collect()
}

fn unknown(provider: &str) -> ConfigError {
    ConfigError::new(
        "provider",
        format!(
            "`{provider}` is not a known provider; known: {}",
            KINDS
                .iter()
                .map(|k| k.info().name)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    )
}

/// Settings every integration may have whatever its provider; the rest of its settings
/// belong to the provider's connector.
pub const COMMON_SETTINGS: &[&str] = &["retry", "rate_limit", "breaker", "concurrency", "notes"];

/// `settings.concurrency`: at most this many calls to the account at once per worker
/// process (QuickBooks Online allows 10 per company). `None`: no cap.
pub fn concurrency(settings: &Value) -> Result<Option<usize>, ConfigError> {
    match settings.get("concurrency") {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_u64() {
            Some(n @ 1..=1000) => Ok(Some(n as usize)),
            _ => Err(ConfigError::new(
                "settings.concurrency",
                "a whole number from 1 to 1000 (calls at once per worker process)",
            )),
        },
    }
}

/// An integration's settings without [`COMMON_SETTINGS`]: what its connector reads.
pub fn connector_settings(settings: &Value) -> Value {
    match settings {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(k, _)| !COMMON_SETTINGS.contains(&k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Check an integration's settings when it is created or changed.
pub fn validate(provider: &str, settings: &Value) -> Result<(), ConfigError> {
    kind(provider)?.validate(&connector_settings(settings))
}

/// Whether an integration with these settings can look its `entity` records up.
pub fn can_lookup(provider: &str, settings: &Value, entity: &str) -> bool {
    kind(provider).is_ok_and(|k| k.can_lookup(&connector_settings(settings), entity))
}

/// The REST manifest an integration is called by (see [`ProviderKind::manifest`]).
pub fn manifest(provider: &str, settings: &Value) -> Option<Value> {
    kind(provider)
        .ok()
        .and_then(|k| k.manifest(&connector_settings(settings)))
}

/// What an integration's credentials are bound to: where they are sent (the manifest's
/// origin and token URL) and how (its auth and headers). When it changes, the credentials
/// must be given again (see `ops::integrations`).
pub fn credential_scope(provider: &str, settings: &Value) -> Option<Value> {
    let m = manifest(provider, settings)?;
    let origin = |v: Option<&Value>| {
        v.and_then(Value::as_str)
            .and_then(|u| url::Url::parse(u).ok())
            .map(|u| u.origin().ascii_serialization())
    };
    let mut auth = m.get("auth").cloned().unwrap_or(Value::Null);
    if let Some(t) = auth.get("token_url").cloned() {
        auth["token_url"] = serde_json::json!(origin(Some(&t)));
    }
    Some(serde_json::json!({
        "origin": origin(m.get("base_url")),
        "auth": auth,
        "headers": m.get("headers").cloned().unwrap_or(Value::Null),
    }))
}

/// An integration's settings with its provider's defaults (a connector's documented limits).
pub fn with_defaults(provider: &str, settings: &Value) -> Value {
    kind(provider).map_or_else(|_| settings.clone(), |k| k.defaults(settings))
}

/// Whether an integration with these settings can list its changed `entity` records
/// (without its credentials: for planning a sync).
pub fn can_list(provider: &str, settings: &Value, entity: &str) -> bool {
    kind(provider).is_ok_and(|k| k.can_list(&connector_settings(settings), entity))
}

/// What a connector is built with besides its settings and credentials.
#[derive(Clone)]
pub struct BuildContext {
    pub http: reqwest::Client,
    /// Where the integration's OAuth2 tokens are kept (`None`: it cannot use OAuth2).
    pub tokens: Option<Arc<dyn oauth::TokenVault>>,
}

impl BuildContext {
    /// For checking settings and credentials before the integration exists.
    pub fn for_validation(http: reqwest::Client) -> BuildContext {
        BuildContext {
            http,
            tokens: Some(Arc::new(oauth::NoTokens)),
        }
    }

    /// The context for integration `id`, its tokens in `store`.
    pub fn for_integration(
        http: reqwest::Client,
        store: switchyard_store::Store,
        keyring: Arc<switchyard_vault::Keyring>,
        id: uuid::Uuid,
    ) -> BuildContext {
        BuildContext {
            http,
            tokens: Some(Arc::new(tokens::StoredTokens::new(store, keyring, id))),
        }
    }
}

/// Build the connector for one integration.
pub fn build(
    provider: &str,
    settings: &Value,
    credentials: Credentials,
    ctx: &BuildContext,
) -> Result<Arc<dyn Connector>, ConfigError> {
    kind(provider)?.build(&connector_settings(settings), credentials, ctx)
}

/// The HTTP client connectors share: keep-alive pool, no redirects (a provider that
/// redirects a POST is misconfigured, and following it could replay a create).
pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .pool_idle_timeout(Duration::from_secs(60))
        .connect_timeout(Duration::from_secs(5))
        .user_agent(concat!("switchyard/", env!("CARGO_PKG_VERSION")))
        // Host names resolve only to addresses the egress policy allows.
        .dns_resolver(egress::resolver())
        .build()
        .expect("the HTTP client's static configuration is valid")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn concurrency_caps_are_whole_numbers_within_reason() {
        assert_eq!(concurrency(&json!({})).unwrap(), None);
        assert_eq!(concurrency(&json!({"concurrency": 10})).unwrap(), Some(10));
        for bad in [json!(0), json!(1001), json!(2.5), json!("10")] {
            let e = concurrency(&json!({ "concurrency": bad })).unwrap_err();
            assert_eq!(e.field, "settings.concurrency");
        }
        // A common setting: the connector does not see it.
        assert_eq!(
            connector_settings(&json!({"concurrency": 3, "base_url": "x"})),
            json!({"base_url": "x"})
        );
    }
}
