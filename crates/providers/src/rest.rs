//! The generic REST connector ("custom API" in seed 004): base URL, auth, an endpoint per
//! entity and action, a field mapping from the event payload to the request body, and
//! where the external id is in the response.
//!
//! Creates carry an `Idempotency-Key` header (configurable) with the job's idempotency key,
//! so a provider that honours it creates once even if a worker dies between the call and
//! recording the mapping. A provider that ignores it leaves that window open: say so in the
//! integration's notes.
//!
//! An entity may also say how to `list` its records changed since a time, which import syncs
//! page through (see [`crate::list`]); how to `lookup` a record by a natural key (the worker
//! looks before a create that may repeat an earlier one, and before linking records that
//! already exist); and where a write's response carries the record's version
//! (`version_pointer`), by which the hub recognises the provider's echo of its own write.
//!
//! ```json
//! {
//!   "base_url": "https://erp.example.com/api",
//!   "auth": {"type": "bearer"},
//!   "timeout_ms": 10000,
//!   "entities": {
//!     "order": {
//!       "create": {"method": "POST", "path": "/orders"},
//!       "update": {"method": "PUT", "path": "/orders/{external_id}"},
//!       "delete": {"method": "DELETE", "path": "/orders/{external_id}"},
//!       "body": {"reference": "/id", "total": "/totals/grand_total"},
//!       "id_pointer": "/id",
//!       "version_pointer": "/updated_at",
//!       "lookup": {"method": "GET", "path": "/orders", "query": {"reference": "{key}"},
//!                  "key_pointer": "/id", "items_pointer": "/orders", "id_pointer": "/id"}
//!     }
//!   }
//! }
//! ```
use async_trait::async_trait;
use reqwest::{Method, StatusCode, header};
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;
use switchyard_core::ErrorClass;
use switchyard_core::mapping::FieldMap;

use crate::{
    CallOutcome, ChangedPage, ConfigError, Connector, Credentials, ListQuery, Lookup, Operation,
    ProviderError,
};

/// The values to keep from a write's answer (`keep`), if any were found.
fn kept_in(e: &EntityEndpoints, json: &Value) -> Option<Value> {
    pick(&e.keep, json)
}

/// The values at `keep`'s pointers (name → pointer) in `json`, if any is there.
fn pick(keep: &BTreeMap<String, String>, json: &Value) -> Option<Value> {
    let kept: serde_json::Map<String, Value> = keep
        .iter()
        .filter_map(|(name, p)| json.pointer(p).map(|v| (name.clone(), v.clone())))
        .collect();
    (!kept.is_empty()).then_some(Value::Object(kept))
}

/// The record's version in a write's response, where the manifest says.
fn version_in(e: &EntityEndpoints, json: &Value) -> Option<i64> {
    e.version_pointer
        .as_ref()
        .and_then(|p| json.pointer(p))
        .and_then(crate::list::version_of)
}

pub const PROVIDER: &str = "rest";

/// The generic REST connector's registry entry.
pub struct RestKind;

static INFO: crate::ProviderInfo = crate::ProviderInfo {
    name: PROVIDER,
    is_target: true,
    description: "any HTTP API described by a manifest: JSON, form or XML bodies, JSON-RPC envelopes, bearer / header / query / basic / OAuth2 auth, field mapping, look-ups, change feeds",
    settings: "a manifest: base_url, auth, timeout_ms, headers, values, idempotency_header, idempotency_query, idempotency_max_len, body_encoding, error_pointer, error_message_pointer, test, and per entity: create, update, delete, read, body, wrap, id_pointer, version_pointer, keep, stale_error, lookup, list (README: A REST target's manifest)",
};

impl crate::ProviderKind for RestKind {
    fn info(&self) -> &'static crate::ProviderInfo {
        &INFO
    }

    fn validate(&self, settings: &Value) -> Result<(), ConfigError> {
        Manifest::parse(settings).map(|_| ())
    }

    fn can_list(&self, settings: &Value, entity: &str) -> bool {
        Manifest::parse(settings)
            .is_ok_and(|m| m.entities.get(entity).is_some_and(|e| e.list.is_some()))
    }

    fn manifest(&self, settings: &Value) -> Option<Value> {
        Some(settings.clone())
    }

    fn can_lookup(&self, settings: &Value, entity: &str) -> bool {
        Manifest::parse(settings)
            .is_ok_and(|m| m.entities.get(entity).is_some_and(|e| e.lookup.is_some()))
    }

    fn build(
        &self,
        settings: &Value,
        credentials: Credentials,
        ctx: &crate::BuildContext,
    ) -> Result<std::sync::Arc<dyn Connector>, ConfigError> {
        self.build_named(settings, credentials, ctx, PROVIDER)
    }
}

impl RestKind {
    /// A REST connector that reports itself as `name` (a built-in connector's).
    pub fn build_named(
        &self,
        settings: &Value,
        credentials: Credentials,
        ctx: &crate::BuildContext,
        name: &'static str,
    ) -> Result<std::sync::Arc<dyn Connector>, ConfigError> {
        let mut c = RestConnector::new(
            Manifest::parse(settings)?,
            credentials,
            ctx.http.clone(),
            ctx.tokens.clone(),
        )?;
        c.name = name;
        Ok(std::sync::Arc::new(c))
    }
}
const MAX_SUMMARY: usize = 1024;

/// The largest answer read from a provider (8 MiB): a larger one fails the call instead of
/// filling the worker's memory.
pub const MAX_ANSWER_BYTES: usize = 8 << 20;

/// The longest `Retry-After` honoured (a day); a provider asking for more waits this long.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 3600);

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub base_url: url::Url,
    #[serde(default)]
    pub auth: Auth,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Header carrying the job's idempotency key on creates; `null` to send none.
    #[serde(default = "default_idempotency_header")]
    pub idempotency_header: Option<String>,
    /// Fixed headers sent on every call (not secrets: those belong in credentials).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// Also send the job's idempotency key as this query parameter on writes
    /// (QuickBooks Online: `requestid`).
    #[serde(default)]
    pub idempotency_query: Option<String>,
    /// Send at most this many characters of the idempotency key (the key is a SHA-256 in
    /// hex; its first 50 characters are as unique in practice).
    #[serde(default)]
    pub idempotency_max_len: Option<usize>,
    /// How request bodies are encoded: `json` (default), `form`
    /// (`application/x-www-form-urlencoded`, nested values as `a[0][b]=…`: Moloni) or `xml`
    /// (PrestaShop; see [`crate::xml`]).
    #[serde(default)]
    pub body_encoding: BodyEncoding,
    /// Where a `2xx` answer carries an error (JSON-RPC's `/error`, Odoo's faults): present
    /// and not null, false or empty, the call failed, as a `4xx` would (permanent).
    #[serde(default)]
    pub error_pointer: Option<String>,
    /// Where that error's message is (default: `message` inside it, or its text); also read
    /// from `4xx`/`5xx` answers (QuickBooks: `/Fault/Error/0/Detail`).
    #[serde(default)]
    pub error_message_pointer: Option<String>,
    /// What `test` calls: default `GET /`.
    #[serde(default)]
    pub test: Option<Endpoint>,
    /// The connection test obtains an OAuth2 access token and calls nothing else: for APIs
    /// with no harmless call to make (M-Pesa Daraja).
    #[serde(default)]
    pub test_by_token: bool,
    #[serde(default)]
    pub entities: BTreeMap<String, EntityEndpoints>,
    /// Named operations a caller runs and waits for (`charge`, `query`, `send`): see
    /// [`crate::operations`].
    #[serde(default)]
    pub operations: BTreeMap<String, crate::operations::OperationSpec>,
    /// The provider drives its own transactions by calling the hub (Payme).
    #[serde(default)]
    pub merchant: Option<crate::operations::MerchantSpec>,
    /// Values any string of the manifest may use as `{settings.NAME}` (a QuickBooks
    /// company's `realm_id`, an Odoo database); filled in when the manifest is read.
    #[serde(default)]
    pub values: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum BodyEncoding {
    #[default]
    Json,
    Form,
    /// An XML document; the body is an object of one key, the root element (an entity's
    /// `wrap`: PrestaShop's `prestashop`). See [`crate::xml`] for how JSON becomes XML.
    Xml,
}

/// A JSON value as form fields, nested the way PHP and Rails read them
/// (`customer[name]=…`, `products[0][qty]=…`); `null` leaves a field out, booleans are
/// `1` / `0`.
pub fn form_fields(body: &Value) -> Vec<(String, String)> {
    fn walk(prefix: &str, v: &Value, out: &mut Vec<(String, String)>) {
        match v {
            Value::Object(m) => {
                for (k, x) in m {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}[{k}]")
                    };
                    walk(&key, x, out);
                }
            }
            Value::Array(items) => {
                for (i, x) in items.iter().enumerate() {
                    walk(&format!("{prefix}[{i}]"), x, out);
                }
            }
            Value::Null => {}
            Value::Bool(b) => out.push((prefix.to_owned(), if *b { "1" } else { "0" }.into())),
            Value::String(s) => out.push((prefix.to_owned(), s.clone())),
            Value::Number(n) => out.push((prefix.to_owned(), n.to_string())),
        }
    }
    let mut out = Vec::new();
    walk("", body, &mut out);
    out
}

fn default_timeout_ms() -> u64 {
    30_000
}

fn default_idempotency_header() -> Option<String> {
    Some("Idempotency-Key".into())
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Auth {
    #[default]
    None,
    /// `Authorization: Bearer <credentials.token>`
    Bearer,
    /// `<name>: <credentials.api_key>`
    Header { name: String },
    /// HTTP Basic with `credentials.username` and `credentials.password`.
    Basic,
    /// HTTP Basic with `credentials.api_key` as the user and no password (PrestaShop's
    /// webservice key, Stripe's secret key).
    BasicKey,
    /// `<name>=<credentials.api_key>` in the query string.
    Query { name: String },
    /// OAuth2: tokens from the provider's token endpoint, kept in the store and refreshed
    /// across the fleet (see [`crate::oauth`]); credentials `client_id`, `client_secret`.
    #[serde(rename = "oauth2")]
    OAuth2(Box<crate::oauth::OAuthSettings>),
    /// A login session (SAP Business One's Service Layer): log in, share the session across
    /// the fleet (kept sealed like OAuth2 tokens), log in again before it expires or on a
    /// `401`.
    Session(Box<SessionAuth>),
    /// OAuth 1.0a signed requests, HMAC-SHA256 (NetSuite's token-based authentication):
    /// credentials `consumer_key`, `consumer_secret`, `token_id`, `token_secret`; `realm`
    /// is NetSuite's account id (see [`crate::oauth1`]).
    #[serde(rename = "oauth1")]
    OAuth1 {
        #[serde(default)]
        realm: Option<String>,
    },
}

/// How to log in for a session and send it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionAuth {
    /// The login call; its `envelope` is the body (`{"UserName":
    /// "{credentials.username}", …}`).
    pub login: Endpoint,
    /// Where the login's answer has the session id.
    pub session_pointer: String,
    /// Where the answer says how long the session lasts (SAP: `/SessionTimeout`, minutes).
    #[serde(default)]
    pub timeout_pointer: Option<String>,
    #[serde(default)]
    pub timeout_unit: TimeoutUnit,
    /// How long a session lasts when the answer does not say.
    #[serde(default = "default_session_secs")]
    pub timeout_secs: u64,
    /// How the session goes on each call.
    pub send: SessionIn,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum TimeoutUnit {
    #[default]
    Minutes,
    Seconds,
}

fn default_session_secs() -> u64 {
    1800
}

/// Where a session goes: a cookie (every cookie the login set, e.g. SAP's `B1SESSION` and
/// its load balancer's `ROUTEID`; this name for the id if it set none) or a header.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum SessionIn {
    Cookie(String),
    Header {
        name: String,
        #[serde(default)]
        prefix: String,
    },
}

/// A session, held by one connector and shared through the token vault.
struct SessionState {
    auth: SessionAuth,
    vault: std::sync::Arc<dyn crate::oauth::TokenVault>,
    held: tokio::sync::Mutex<Option<crate::oauth::TokenSet>>,
}

/// Log in again this long before the session would expire.
const SESSION_MARGIN_SECS: u64 = 60;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    pub method: String,
    /// Relative to `base_url`; `{external_id}` and `{internal_id}` are filled in.
    pub path: String,
    /// A JSON body the request's body is put into (JSON-RPC: Odoo's `execute_kw`): the
    /// string `"{body}"` is replaced by the mapped body, `"{external_id}"` by the target's id
    /// (a number when it is one), `{credentials.NAME}` by that credential.
    #[serde(default)]
    pub envelope: Option<Value>,
    /// Headers of this call only, `{kept.NAME}` and `{credentials.NAME}` filled in (OData's
    /// `"If-Match": "{kept.etag}"`); a header whose kept value is missing is left out.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntityEndpoints {
    /// How to create a record; without it the entity's records are only found (`lookup`)
    /// and updated (PrestaShop's `stock_availables` exist with their product).
    #[serde(default)]
    pub create: Option<Endpoint>,
    #[serde(default)]
    pub update: Option<Endpoint>,
    #[serde(default)]
    pub delete: Option<Endpoint>,
    #[serde(default)]
    pub body: FieldMap,
    /// Wrap the body in an object under this key (`{"order": {…}}`).
    #[serde(default)]
    pub wrap: Option<String>,
    /// Put the body in a one-element list under `wrap` (Xero: `{"Invoices": [{…}]}`).
    #[serde(default)]
    pub wrap_array: bool,
    /// What a create needs made first, in order (PrestaShop: the cart an order is made
    /// from); the body reads each one's id at `/_switchyard/first/<name>`.
    #[serde(default)]
    pub create_first: Vec<FirstStep>,
    /// Where the created entity's id is in the create response.
    #[serde(default = "default_id_pointer")]
    pub id_pointer: String,
    /// The created entity's id is the last segment of the answer's `Location` header
    /// (NetSuite answers a create with `204` and `Location: …/customer/647`).
    #[serde(default)]
    pub id_from_location: bool,
    /// How to list the entity's records changed since a time (for import syncs).
    #[serde(default)]
    pub list: Option<crate::list::ListEndpoint>,
    /// Where a create's or update's response carries the record's version (a number or a
    /// timestamp).
    #[serde(default)]
    pub version_pointer: Option<String>,
    /// How to find a record by its natural key.
    #[serde(default)]
    pub lookup: Option<LookupEndpoint>,
    /// Values to keep from a write's answer for the next update, by name → JSON pointer
    /// (QuickBooks: `{"SyncToken": "/Customer/SyncToken"}`). The body reads them at
    /// `/_switchyard/kept/<name>`, and the target's own id at `/_switchyard/external_id`.
    #[serde(default)]
    pub keep: BTreeMap<String, String>,
    /// How to read the record again (the kept values went stale): e.g.
    /// `{"method": "GET", "path": "/customer/{external_id}"}`.
    #[serde(default)]
    pub read: Option<Endpoint>,
    /// An update refused with this text in its answer (QuickBooks: `Stale Object Error`,
    /// code 5010) reads the record again (`read`) for fresh kept values and tries once more.
    #[serde(default)]
    pub stale_error: Option<String>,
}

/// One thing a create makes first: its endpoint, its body (a field map over the event's
/// data, wrapped) and where its id is in the answer.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FirstStep {
    pub name: String,
    pub create: Endpoint,
    #[serde(default)]
    pub body: FieldMap,
    #[serde(default)]
    pub wrap: Option<String>,
    #[serde(default = "default_id_pointer")]
    pub id_pointer: String,
}

/// A look-up by natural key: `key_pointer` reads the key from the event's data; `{key}` in
/// the path or a query value is replaced by it (encoded). The answer is a list (at
/// `items_pointer`, default the whole body) of which at most one may match, or one record;
/// `404` means none. `then` looks further with the id found as its `{key}` (PrestaShop:
/// the product by `reference`, then its `stock_available`); `keep` takes values from the
/// record found for the update that follows (its `SyncToken`, its `id_product`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LookupEndpoint {
    #[serde(default = "default_get")]
    pub method: String,
    pub path: String,
    #[serde(default)]
    pub query: BTreeMap<String, String>,
    /// Fields of a body (encoded as the manifest's bodies are), `{key}` filled in: APIs
    /// that search by POST (Moloni's `customers/getByNumber`).
    #[serde(default)]
    pub body: BTreeMap<String, String>,
    /// A JSON body for searches by JSON-RPC (Odoo's `search_read`): `{key}` in its strings
    /// is the key, `{credentials.NAME}` a credential.
    #[serde(default)]
    pub envelope: Option<Value>,
    /// Where the key is in the event's data (the first step only).
    #[serde(default)]
    pub key_pointer: Option<String>,
    #[serde(default)]
    pub items_pointer: String,
    #[serde(default = "default_id_pointer")]
    pub id_pointer: String,
    /// Put a backslash before `'` and `\` in the key (QuickBooks' query language).
    #[serde(default)]
    pub escape_quotes: bool,
    #[serde(default)]
    pub keep: BTreeMap<String, String>,
    #[serde(default)]
    pub then: Option<Box<LookupEndpoint>>,
}

impl LookupEndpoint {
    fn validate(&self, at: &str, first: bool) -> Result<(), ConfigError> {
        check_endpoint(
            &Endpoint {
                method: self.method.clone(),
                path: self.path.clone(),
                envelope: None,
                headers: BTreeMap::new(),
            },
            at,
            false,
        )?;
        match (&self.key_pointer, first) {
            (Some(p), true) => check_pointer(&format!("{at}.key_pointer"), p, false)?,
            (None, true) => {
                return Err(ConfigError::new(
                    format!("{at}.key_pointer"),
                    "say where the natural key is in the event's data",
                ));
            }
            (Some(_), false) => {
                return Err(ConfigError::new(
                    format!("{at}.key_pointer"),
                    "a further step's key is the id the step before found",
                ));
            }
            (None, false) => {}
        }
        check_pointer(&format!("{at}.items_pointer"), &self.items_pointer, true)?;
        check_pointer(&format!("{at}.id_pointer"), &self.id_pointer, false)?;
        for (name, p) in &self.keep {
            check_pointer(&format!("{at}.keep.{name}"), p, false)?;
        }
        let in_envelope = self
            .envelope
            .as_ref()
            .is_some_and(|e| e.to_string().contains("{key}"));
        if !self.path.contains("{key}")
            && !in_envelope
            && !self
                .query
                .values()
                .chain(self.body.values())
                .any(|v| v.contains("{key}"))
        {
            return Err(ConfigError::new(
                at,
                "put `{key}` (the natural key) in the path, a query value, a body value or the envelope",
            ));
        }
        if let Some(next) = &self.then {
            next.validate(&format!("{at}.then"), false)?;
        }
        Ok(())
    }
}

fn default_get() -> String {
    "GET".into()
}

fn default_id_pointer() -> String {
    "/id".into()
}

impl Manifest {
    pub fn parse(settings: &Value) -> Result<Manifest, ConfigError> {
        let m: Manifest = serde_json::from_value(expand_values(settings)?)
            .map_err(|e| ConfigError::new("settings", e.to_string()))?;
        if !matches!(m.base_url.scheme(), "http" | "https") {
            return Err(ConfigError::new(
                "settings.base_url",
                "must be an http or https URL",
            ));
        }
        if m.timeout_ms == 0 || m.timeout_ms > 300_000 {
            return Err(ConfigError::new(
                "settings.timeout_ms",
                "must be between 1 and 300000 (a provider call must end well before the broker's consumer timeout)",
            ));
        }
        if m.entities.is_empty() && m.operations.is_empty() {
            return Err(ConfigError::new(
                "settings.entities",
                "names no entity (and the manifest declares no operation)",
            ));
        }
        crate::operations::validate(&m.operations)?;
        if let Some(merchant) = &m.merchant {
            crate::operations::validate_merchant(merchant, &m.operations)?;
        }
        for (name, e) in &m.entities {
            let at = |f: &str| format!("settings.entities.{name}.{f}");
            if !switchyard_core::is_valid_name(name) {
                return Err(ConfigError::new(
                    at(""),
                    "an entity name is a-z, 0-9, _ or -",
                ));
            }
            if let Some(c) = &e.create {
                check_endpoint(c, &at("create"), false)?;
            }
            if let Some(u) = &e.update {
                // The target's id goes in the path, or in the body (QuickBooks: `Id`).
                let id_in_body = e.body.0.values().any(|src| {
                    matches!(src, switchyard_core::mapping::FieldSource::Pointer(p) if p == "/_switchyard/external_id")
                });
                check_endpoint(u, &at("update"), !id_in_body)?;
            }
            if let Some(d) = &e.delete {
                check_endpoint(d, &at("delete"), true)?;
            }
            e.body
                .validate()
                .map_err(|err| ConfigError::new(at("body"), err.to_string()))?;
            let pointer =
                |field: &str, p: &str, empty_ok: bool| check_pointer(&at(field), p, empty_ok);
            pointer("id_pointer", &e.id_pointer, false)?;
            for (name, p) in &e.keep {
                pointer(&format!("keep.{name}"), p, false)?;
            }
            if let Some(r) = &e.read {
                check_endpoint(r, &at("read"), true)?;
            }
            if e.stale_error.is_some() && (e.read.is_none() || e.keep.is_empty()) {
                return Err(ConfigError::new(
                    at("stale_error"),
                    "re-reading stale values needs `read` and `keep`",
                ));
            }
            if let Some(v) = &e.version_pointer {
                pointer("version_pointer", v, false)?;
            }
            if let Some(l) = &e.lookup {
                l.validate(&at("lookup"), true)?;
            }
            for (n, step) in e.create_first.iter().enumerate() {
                let here = at(&format!("create_first[{n}]"));
                if !switchyard_core::is_valid_name(&step.name) {
                    return Err(ConfigError::new(format!("{here}.name"), "a-z, 0-9, _ or -"));
                }
                check_endpoint(&step.create, &format!("{here}.create"), false)?;
                check_pointer(&format!("{here}.id_pointer"), &step.id_pointer, false)?;
                step.body
                    .validate()
                    .map_err(|err| ConfigError::new(format!("{here}.body"), err.to_string()))?;
            }
            if e.wrap_array && e.wrap.is_none() {
                return Err(ConfigError::new(
                    at("wrap_array"),
                    "needs `wrap`, the list's key",
                ));
            }
            if !e.create_first.is_empty() && e.create.is_none() {
                return Err(ConfigError::new(at("create_first"), "needs `create`"));
            }
            if e.create.is_none() && (e.lookup.is_none() || e.update.is_none()) {
                return Err(ConfigError::new(
                    at("create"),
                    "an entity without `create` needs `lookup` and `update`: its records are found and updated",
                ));
            }
        }
        for (name, e) in &m.entities {
            if let Some(l) = &e.list {
                let at = format!("settings.entities.{name}.list");
                check_endpoint(
                    &Endpoint {
                        method: l.method.clone(),
                        path: l.path.clone(),
                        envelope: None,
                        headers: BTreeMap::new(),
                    },
                    &at,
                    false,
                )?;
                l.validate(&at)?;
            }
        }
        if let Some(t) = &m.test {
            check_endpoint(t, "settings.test", false)?;
        }
        if m.test_by_token && !matches!(m.auth, Auth::OAuth2(_)) {
            return Err(ConfigError::new(
                "settings.test_by_token",
                "a test by token needs `auth.type` oauth2",
            ));
        }
        if let Auth::Session(a) = &m.auth {
            check_endpoint(&a.login, "settings.auth.login", false)?;
            check_pointer("settings.auth.session_pointer", &a.session_pointer, false)?;
            if let Some(p) = &a.timeout_pointer {
                check_pointer("settings.auth.timeout_pointer", p, false)?;
            }
            if a.timeout_secs < 2 * SESSION_MARGIN_SECS {
                return Err(ConfigError::new(
                    "settings.auth.timeout_secs",
                    format!(
                        "at least {} (a session is renewed {SESSION_MARGIN_SECS} s before it ends)",
                        2 * SESSION_MARGIN_SECS
                    ),
                ));
            }
        }
        for (name, p) in [
            ("error_pointer", &m.error_pointer),
            ("error_message_pointer", &m.error_message_pointer),
        ] {
            if let Some(p) = p {
                check_pointer(&format!("settings.{name}"), p, false)?;
            }
        }
        Ok(m)
    }
}

impl Manifest {
    /// The credentials the manifest's headers and envelopes name as `{credentials.NAME}`.
    pub fn credentials_used(&self) -> Vec<String> {
        let mut text: Vec<String> = self.headers.values().cloned().collect();
        // Every endpoint's envelope and own headers, the steps made first included.
        for e in self.entities.values() {
            let endpoints = [&e.create, &e.update, &e.delete, &e.read]
                .into_iter()
                .flatten()
                .chain(e.create_first.iter().map(|step| &step.create));
            for ep in endpoints {
                text.extend(ep.envelope.as_ref().map(Value::to_string));
                text.extend(ep.headers.values().cloned());
            }
        }
        if let Auth::Session(a) = &self.auth
            && let Some(e) = &a.login.envelope
        {
            text.push(e.to_string());
        }
        for op in self.operations.values() {
            for c in op.computed.values() {
                match c {
                    crate::operations::Computed::Base64 { base64: t }
                    | crate::operations::Computed::Text { text: t } => text.push(t.clone()),
                    crate::operations::Computed::Now { .. } => {}
                }
            }
        }
        fn lookup_envelopes(l: &LookupEndpoint, out: &mut Vec<String>) {
            if let Some(e) = &l.envelope {
                out.push(e.to_string());
            }
            if let Some(next) = &l.then {
                lookup_envelopes(next, out);
            }
        }
        for l in self.entities.values().filter_map(|e| e.lookup.as_ref()) {
            lookup_envelopes(l, &mut text);
        }
        let mut names: Vec<String> = text
            .iter()
            .flat_map(|t| t.split("{credentials.").skip(1))
            .filter_map(|rest| rest.split_once('}').map(|(name, _)| name.to_owned()))
            .collect();
        names.sort();
        names.dedup();
        names
    }
}

/// Fill `{settings.NAME}` in every string of the manifest from its `values`.
fn expand_values(settings: &Value) -> Result<Value, ConfigError> {
    let mut values = BTreeMap::new();
    if let Some(v) = settings.get("values") {
        let obj = v
            .as_object()
            .ok_or_else(|| ConfigError::new("settings.values", "must be an object of strings"))?;
        for (k, v) in obj {
            let s = match v {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                _ => {
                    return Err(ConfigError::new(
                        format!("settings.values.{k}"),
                        "must be a string or a number",
                    ));
                }
            };
            values.insert(k.clone(), s);
        }
    }
    fn walk(v: &mut Value, values: &BTreeMap<String, String>) -> Result<(), ConfigError> {
        match v {
            Value::String(s) if s.contains("{settings.") => {
                let mut out = String::with_capacity(s.len());
                let mut rest = s.as_str();
                while let Some(at) = rest.find("{settings.") {
                    out.push_str(&rest[..at]);
                    let after = &rest[at + "{settings.".len()..];
                    let end = after.find('}').ok_or_else(|| {
                        ConfigError::new(
                            "settings",
                            format!("`{s}` opens `{{settings.` without closing it"),
                        )
                    })?;
                    let name = &after[..end];
                    let value = values.get(name).ok_or_else(|| {
                        ConfigError::new(
                            format!("settings.values.{name}"),
                            format!("is used by `{s}` but not set"),
                        )
                    })?;
                    out.push_str(value);
                    rest = &after[end + 1..];
                }
                out.push_str(rest);
                *s = out;
                Ok(())
            }
            Value::Array(items) => items.iter_mut().try_for_each(|i| walk(i, values)),
            Value::Object(map) => map
                .iter_mut()
                .filter(|(k, _)| k.as_str() != "values")
                .try_for_each(|(_, v)| walk(v, values)),
            _ => Ok(()),
        }
    }
    let mut out = settings.clone();
    walk(&mut out, &values)?;
    Ok(out)
}

/// A JSON pointer starts with `/` (or, where `empty_ok`, is empty: the whole document).
fn check_pointer(field: &str, p: &str, empty_ok: bool) -> Result<(), ConfigError> {
    if (empty_ok && p.is_empty()) || p.starts_with('/') {
        Ok(())
    } else {
        Err(ConfigError::new(field, "a JSON pointer starts with `/`"))
    }
}

fn check_endpoint(e: &Endpoint, field: &str, needs_external: bool) -> Result<(), ConfigError> {
    Method::from_bytes(e.method.to_ascii_uppercase().as_bytes())
        .map_err(|_| ConfigError::new(format!("{field}.method"), "not an HTTP method"))?;
    if !e.path.starts_with('/') {
        return Err(ConfigError::new(
            format!("{field}.path"),
            "must start with `/`",
        ));
    }
    let in_envelope = e
        .envelope
        .as_ref()
        .is_some_and(|v| v.to_string().contains("{external_id}"));
    if needs_external && !e.path.contains("{external_id}") && !in_envelope {
        return Err(ConfigError::new(
            format!("{field}.path"),
            "must contain `{external_id}`, the provider's id of the entity",
        ));
    }
    Ok(())
}

pub struct RestConnector {
    name: &'static str,
    manifest: Manifest,
    credentials: Credentials,
    http: reqwest::Client,
    oauth: Option<crate::oauth::OAuth>,
    session: Option<SessionState>,
}

impl RestConnector {
    /// `tokens` keeps an OAuth2 integration's tokens (required with `auth.type = oauth2`).
    pub fn new(
        manifest: Manifest,
        credentials: Credentials,
        http: reqwest::Client,
        tokens: Option<std::sync::Arc<dyn crate::oauth::TokenVault>>,
    ) -> Result<RestConnector, ConfigError> {
        let need = |k: &str| {
            credentials.get(k).map(|_| ()).ok_or_else(|| {
                ConfigError::new(format!("credentials.{k}"), "required by settings.auth")
            })
        };
        match &manifest.auth {
            Auth::None => {}
            Auth::Bearer => need("token")?,
            Auth::Header { .. } => need("api_key")?,
            Auth::Basic => {
                need("username")?;
                need("password")?;
            }
            Auth::Query { .. } | Auth::BasicKey => need("api_key")?,
            Auth::OAuth2(_) | Auth::Session(_) => {}
            Auth::OAuth1 { .. } => {
                for k in [
                    "consumer_key",
                    "consumer_secret",
                    "token_id",
                    "token_secret",
                ] {
                    need(k)?;
                }
            }
        }
        // A provider given by IP address must be one the hub may call (names are checked
        // when they resolve).
        let egress = crate::egress::policy();
        egress
            .check_url(&manifest.base_url)
            .map_err(|e| ConfigError::new("settings.base_url", e))?;
        if let Auth::OAuth2(o) = &manifest.auth {
            egress
                .check_url(&o.token_url)
                .map_err(|e| ConfigError::new("settings.auth.token_url", e))?;
        }
        for name in manifest.credentials_used() {
            credentials.get(&name).ok_or_else(|| {
                ConfigError::new(
                    format!("credentials.{name}"),
                    "used by the manifest as `{credentials.".to_owned() + &name + "}`",
                )
            })?;
        }
        let tokens_for_session = tokens.clone();
        let oauth = match (&manifest.auth, tokens) {
            (Auth::OAuth2(settings), Some(vault)) => Some(crate::oauth::OAuth::new(
                (**settings).clone(),
                &credentials,
                http.clone(),
                vault,
            )?),
            (Auth::OAuth2(_), None) => {
                return Err(ConfigError::new(
                    "settings.auth",
                    "an oauth2 integration needs its token store",
                ));
            }
            _ => None,
        };
        let session = match (&manifest.auth, &tokens_for_session) {
            (Auth::Session(auth), Some(vault)) => Some(SessionState {
                auth: (**auth).clone(),
                vault: vault.clone(),
                held: tokio::sync::Mutex::new(None),
            }),
            (Auth::Session(_), None) => {
                return Err(ConfigError::new(
                    "settings.auth",
                    "a session integration needs its token store",
                ));
            }
            _ => None,
        };
        Ok(RestConnector {
            name: PROVIDER,
            manifest,
            credentials,
            http,
            oauth,
            session,
        })
    }

    /// The integration's OAuth2 client, if it uses OAuth2.
    pub fn oauth(&self) -> Option<&crate::oauth::OAuth> {
        self.oauth.as_ref()
    }

    /// Send a request built by [`Self::request`], with the OAuth2 access token when the
    /// integration uses OAuth2: a `401` refreshes the token (once for the fleet) and sends
    /// the request once more.
    async fn send(
        &self,
        rb: reqwest::RequestBuilder,
        method: &str,
        url: &str,
    ) -> Result<(u16, header::HeaderMap, String, String), ProviderError> {
        let secrets: Vec<&str> = self
            .credentials
            .0
            .values()
            .map(|s| s.expose_secret())
            .collect();
        let answer = scrub(self.send_authorized(rb, method, url).await, &secrets)
            .map_err(|e| self.explain(e))?;
        self.error_in_body(answer.0, &answer.3, &answer.2)?;
        Ok(answer)
    }

    /// A provider's error answer explained by the manifest's `error_message_pointer`.
    fn explain(&self, mut err: ProviderError) -> ProviderError {
        let (Some(p), Some(status), Some(body)) = (
            &self.manifest.error_message_pointer,
            err.status,
            err.response.as_deref(),
        ) else {
            return err;
        };
        if let Some(m) = decode(body).as_ref().and_then(|j| j.pointer(p)) {
            let m = m.as_str().map_or_else(|| m.to_string(), str::to_owned);
            let status = StatusCode::from_u16(status).map_or(status.to_string(), |s| s.to_string());
            err.message = format!("the provider answered {status}: {m}");
        }
        err
    }

    async fn send_authorized(
        &self,
        rb: reqwest::RequestBuilder,
        method: &str,
        url: &str,
    ) -> Result<(u16, header::HeaderMap, String, String), ProviderError> {
        if let Auth::OAuth1 { realm } = &self.manifest.auth {
            return send_full(self.signed(rb, realm.as_deref())?, method, url).await;
        }
        if let Some(session) = &self.session {
            let with = |rb: &reqwest::RequestBuilder, value: &str| {
                let rb = rb.try_clone().expect("request bodies are buffered");
                match &session.auth.send {
                    SessionIn::Cookie(_) => rb.header(header::COOKIE, value),
                    SessionIn::Header { name, prefix } => {
                        rb.header(name, format!("{prefix}{value}"))
                    }
                }
            };
            let value = self.session(None).await?;
            return match send_full(with(&rb, &value), method, url).await {
                Err(e) if e.status == Some(401) => {
                    let fresh = self.session(Some(&value)).await?;
                    scrub(
                        send_full(with(&rb, &fresh), method, url).await,
                        &[&value, &fresh],
                    )
                }
                other => scrub(other, &[&value]),
            };
        }
        let Some(oauth) = &self.oauth else {
            return send_full(rb, method, url).await;
        };
        let with = |rb: &reqwest::RequestBuilder, token: &str| {
            let rb = rb.try_clone().expect("request bodies are buffered");
            match &oauth.settings().token_in {
                crate::oauth::TokenIn::Bearer => rb.bearer_auth(token),
                crate::oauth::TokenIn::Query(name) => rb.query(&[(name.as_str(), token)]),
            }
        };
        let token = oauth.access_token().await?;
        match send_full(with(&rb, &token), method, url).await {
            Err(e) if e.status == Some(401) => {
                let fresh = oauth.refresh(Some(&token)).await?;
                scrub(
                    send_full(with(&rb, &fresh), method, url).await,
                    &[&token, &fresh],
                )
            }
            other => scrub(other, &[&token]),
        }
    }

    fn url(&self, path: &str, internal_id: &str, external_id: Option<&str>) -> String {
        // (Ids of dots only are refused before a URL is made: see `check_ids`.)
        let mut p = path.replace("{internal_id}", &encode_segment(internal_id));
        if let Some(ext) = external_id {
            p = p.replace("{external_id}", &encode_segment(ext));
        }
        let base = self.manifest.base_url.as_str().trim_end_matches('/');
        format!("{base}{p}")
    }

    fn request(&self, method: &str, url: &str) -> reqwest::RequestBuilder {
        let method = Method::from_bytes(method.to_ascii_uppercase().as_bytes())
            .expect("validated by Manifest::parse");
        let mut rb = self.http.request(method, url).timeout(
            crate::egress::policy().call_timeout(Duration::from_millis(self.manifest.timeout_ms)),
        );
        if !self
            .manifest
            .headers
            .keys()
            .any(|k| k.eq_ignore_ascii_case("accept"))
        {
            rb = rb.header(header::ACCEPT, "application/json");
        }
        for (k, v) in &self.manifest.headers {
            rb = rb.header(k, self.fill_credentials(v));
        }
        let secret = |k: &str| {
            self.credentials
                .get(k)
                .map(|s| s.expose_secret().to_owned())
                .unwrap_or_default()
        };
        match &self.manifest.auth {
            Auth::None => rb,
            Auth::Bearer => rb.bearer_auth(secret("token")),
            Auth::Header { name } => rb.header(name, secret("api_key")),
            Auth::Basic => rb.basic_auth(secret("username"), Some(secret("password"))),
            Auth::BasicKey => rb.basic_auth(secret("api_key"), Some("")),
            Auth::Query { name } => rb.query(&[(name.as_str(), secret("api_key"))]),
            // The token or session is added, or the request signed, when it is sent.
            Auth::OAuth2(_) | Auth::Session(_) | Auth::OAuth1 { .. } => rb,
        }
    }

    fn entity(&self, entity: &str) -> Result<&EntityEndpoints, ProviderError> {
        self.manifest.entities.get(entity).ok_or_else(|| {
            ProviderError::new(
                ErrorClass::Permanent,
                format!("this integration's manifest has no endpoints for entity `{entity}`"),
            )
        })
    }

    /// Put a body on a request, encoded as the manifest says, inside the endpoint's
    /// envelope if it has one.
    fn with_body(
        &self,
        rb: reqwest::RequestBuilder,
        ep: &Endpoint,
        body: Value,
        external_id: Option<&str>,
    ) -> Result<reqwest::RequestBuilder, ProviderError> {
        let body = match &ep.envelope {
            Some(tpl) => self.envelope(tpl, &body, external_id),
            None => body,
        };
        Ok(match self.manifest.body_encoding {
            BodyEncoding::Json => rb.json(&body),
            BodyEncoding::Form => rb.form(&form_fields(&body)),
            BodyEncoding::Xml => {
                let (root, inner) = match body.as_object() {
                    Some(o) if o.len() == 1 => o.iter().next().expect("one key"),
                    _ => {
                        return Err(ProviderError::new(
                            ErrorClass::Permanent,
                            "an XML body is an object of one key, its root element: give the entity a `wrap`",
                        ));
                    }
                };
                let xml = crate::xml::from_json(root, inner).map_err(|e| {
                    ProviderError::new(
                        ErrorClass::Permanent,
                        format!("the body cannot be written as XML: {e}"),
                    )
                })?;
                rb.header(header::CONTENT_TYPE, "application/xml; charset=utf-8")
                    .body(xml)
            }
        })
    }

    /// The request signed with OAuth 1.0a (its final URL, query and form fields included).
    fn signed(
        &self,
        rb: reqwest::RequestBuilder,
        realm: Option<&str>,
    ) -> Result<reqwest::RequestBuilder, ProviderError> {
        let mut req = rb.build().map_err(|e| {
            ProviderError::new(
                ErrorClass::Permanent,
                format!("the request cannot be built: {e}"),
            )
        })?;
        let is_form = req.headers().get(header::CONTENT_TYPE).is_some_and(|v| {
            v.as_bytes()
                .starts_with(b"application/x-www-form-urlencoded")
        });
        let form: Vec<(String, String)> = match (is_form, req.body().and_then(|b| b.as_bytes())) {
            (true, Some(bytes)) => url::form_urlencoded::parse(bytes).into_owned().collect(),
            _ => Vec::new(),
        };
        let secret = |k: &str| {
            self.credentials
                .get(k)
                .map(|s| s.expose_secret().to_owned())
                .unwrap_or_default()
        };
        let (ck, cs, tk, ts) = (
            secret("consumer_key"),
            secret("consumer_secret"),
            secret("token_id"),
            secret("token_secret"),
        );
        let keys = crate::oauth1::Keys {
            consumer_key: &ck,
            consumer_secret: &cs,
            token: &tk,
            token_secret: &ts,
        };
        let value = crate::oauth1::authorization(
            &keys,
            realm,
            req.method().as_str(),
            req.url(),
            &form,
            None,
        );
        let value = header::HeaderValue::from_str(&value).map_err(|_| {
            ProviderError::new(
                ErrorClass::Permanent,
                "the OAuth 1.0a header is not a valid header value (check realm and credentials)",
            )
        })?;
        req.headers_mut().insert(header::AUTHORIZATION, value);
        Ok(reqwest::RequestBuilder::from_parts(self.http.clone(), req))
    }

    /// The session to send: the one held, the one stored, or a new login (once for the
    /// fleet; `rejected` is the one the API refused).
    async fn session(&self, rejected: Option<&str>) -> Result<String, ProviderError> {
        let s = self.session.as_ref().expect("a session integration");
        if rejected.is_none()
            && let Some(t) = s.held.lock().await.as_ref()
            && t.fresh(SESSION_MARGIN_SECS)
        {
            return Ok(t.access_token.clone());
        }
        crate::oauth::single_flight(
            s.vault.as_ref(),
            &s.held,
            SESSION_MARGIN_SECS,
            rejected,
            |_| self.login(&s.auth),
        )
        .await
    }

    /// Log in: the session's cookies (or its id) and when it expires.
    async fn login(&self, auth: &SessionAuth) -> Result<crate::oauth::TokenSet, ProviderError> {
        let url = self.url(&auth.login.path, "", None);
        let rb = self.with_body(
            self.request(&auth.login.method, &url),
            &auth.login,
            Value::Null,
            None,
        )?;
        let (status, headers, body, summary) = send_full(rb, &auth.login.method, &url)
            .await
            .map_err(|mut e| {
                e.message = format!("logging in failed: {}", e.message);
                self.explain(e)
            })?;
        let json = decode(&body);
        let id = json
            .as_ref()
            .and_then(|j| j.pointer(&auth.session_pointer))
            .and_then(|v| v.as_str().map(str::to_owned))
            .ok_or_else(|| {
                fail(
                    ErrorClass::Auth,
                    Some(status),
                    &summary,
                    &body,
                    format!(
                        "the login's answer has no session at `{}`",
                        auth.session_pointer
                    ),
                )
            })?;
        let lasts = auth
            .timeout_pointer
            .as_ref()
            .and_then(|p| json.as_ref()?.pointer(p)?.as_u64())
            .map_or(auth.timeout_secs, |n| match auth.timeout_unit {
                TimeoutUnit::Minutes => n * 60,
                TimeoutUnit::Seconds => n,
            });
        let value = match &auth.send {
            SessionIn::Cookie(name) => {
                let cookies: Vec<String> = headers
                    .get_all(header::SET_COOKIE)
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .filter_map(|c| c.split(';').next())
                    .map(|c| c.trim().to_owned())
                    .filter(|c| c.contains('='))
                    .collect();
                if cookies.is_empty() {
                    format!("{name}={id}")
                } else {
                    cookies.join("; ")
                }
            }
            SessionIn::Header { .. } => id,
        };
        Ok(crate::oauth::TokenSet {
            access_token: value,
            refresh_token: None,
            expires_at: Some(chrono::Utc::now().timestamp() + lasts as i64),
            scope: None,
        })
    }

    /// One step of a look-up: the id of the one record that matches `key` (if one does),
    /// the values to keep from it, and the request made.
    async fn lookup_step(
        &self,
        entity: &str,
        l: &LookupEndpoint,
        key: &str,
    ) -> Result<(Option<String>, Option<Value>, String), ProviderError> {
        let key = if l.escape_quotes {
            key.replace('\\', "\\\\").replace('\'', "\\'")
        } else {
            key.to_owned()
        };
        if l.path.contains("{key}") && dots_only(&key) {
            return Err(ProviderError::new(
                ErrorClass::Permanent,
                format!("the look-up key `{key}` cannot go in a URL path"),
            ));
        }
        let path = l.path.replace("{key}", &encode_segment(&key));
        let mut url = url::Url::parse(&self.url(&path, "", None)).map_err(|err| {
            ProviderError::new(
                ErrorClass::Permanent,
                format!("the look-up URL is not valid: {err}"),
            )
        })?;
        if !l.query.is_empty() {
            let mut q = url.query_pairs_mut();
            for (k, v) in &l.query {
                q.append_pair(k, &v.replace("{key}", &key));
            }
        }
        let mut rb = self.request(&l.method, url.as_str());
        if !l.body.is_empty() {
            let fields: serde_json::Map<String, Value> = l
                .body
                .iter()
                .map(|(k, v)| (k.clone(), Value::String(v.replace("{key}", &key))))
                .collect();
            rb = match self.manifest.body_encoding {
                BodyEncoding::Form => rb.form(&form_fields(&Value::Object(fields))),
                _ => rb.json(&fields),
            };
        }
        if let Some(tpl) = &l.envelope {
            // The key goes inside JSON strings: escaped as JSON, without its quotes.
            let quoted = Value::String(key.clone()).to_string();
            let escaped = &quoted[1..quoted.len() - 1];
            let with_key: Value = serde_json::from_str(&tpl.to_string().replace("{key}", escaped))
                .unwrap_or_else(|_| tpl.clone());
            rb = rb.json(&self.envelope(&with_key, &Value::Null, None));
        }
        let (status, _, body, summary) = match self.send(rb, &l.method, url.as_str()).await {
            Ok(answer) => answer,
            Err(err) if err.status == Some(404) => {
                return Ok((None, None, err.request.unwrap_or_default()));
            }
            Err(err) => return Err(err),
        };
        let json = decode(&body).ok_or_else(|| {
            fail(
                ErrorClass::Permanent,
                Some(status),
                &summary,
                &body,
                "the provider answered the look-up with a body that is neither JSON nor XML".into(),
            )
        })?;
        let found = if l.items_pointer.is_empty() {
            Some(&json)
        } else {
            json.pointer(&l.items_pointer)
        };
        let one = match found {
            Some(Value::Array(items)) if items.len() > 1 => {
                return Err(fail(
                    ErrorClass::Permanent,
                    Some(status),
                    &summary,
                    &body,
                    format!(
                        "{} {entity} records match `{key}` at the provider; the hub cannot tell which is this one",
                        items.len()
                    ),
                ));
            }
            Some(Value::Array(items)) => items.first(),
            Some(Value::Null) | None => None,
            // An empty answer where a list was expected (PrestaShop answers `[]` or `""`).
            Some(Value::String(s)) if s.is_empty() => None,
            Some(one) => Some(one),
        };
        let external_id = one.and_then(|r| id_at(r, &l.id_pointer));
        if one.is_some() && external_id.is_none() {
            return Err(fail(
                ErrorClass::Permanent,
                Some(status),
                &summary,
                &body,
                format!("the look-up's record has no id at `{}`", l.id_pointer),
            ));
        }
        let kept = one.and_then(|r| pick(&l.keep, r));
        Ok((external_id, kept, summary))
    }

    /// An endpoint's own headers (see [`Endpoint::headers`]).
    fn with_headers(
        &self,
        mut rb: reqwest::RequestBuilder,
        ep: &Endpoint,
        kept: Option<&Value>,
    ) -> reqwest::RequestBuilder {
        for (name, template) in &ep.headers {
            let mut v = self.fill_credentials(template);
            if let Some(Value::Object(kept)) = kept {
                for (k, val) in kept {
                    let text = val.as_str().map_or_else(|| val.to_string(), str::to_owned);
                    v = v.replace(&format!("{{kept.{k}}}"), &text);
                }
            }
            if !v.contains("{kept.") {
                rb = rb.header(name, v);
            }
        }
        rb
    }

    /// An endpoint's envelope with the body, the target's id and credentials filled in.
    fn envelope(&self, tpl: &Value, body: &Value, external_id: Option<&str>) -> Value {
        match tpl {
            Value::String(s) if s == "{body}" => body.clone(),
            Value::String(s) if s == "{external_id}" => match external_id {
                Some(id) => id
                    .parse::<i64>()
                    .map(Value::from)
                    .unwrap_or_else(|_| Value::String(id.to_owned())),
                None => Value::Null,
            },
            Value::String(s) => {
                let s = self.fill_credentials(s);
                Value::String(match external_id {
                    Some(id) => s.replace("{external_id}", id),
                    None => s,
                })
            }
            Value::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|i| self.envelope(i, body, external_id))
                    .collect(),
            ),
            Value::Object(map) => Value::Object(
                map.iter()
                    .map(|(k, v)| (k.clone(), self.envelope(v, body, external_id)))
                    .collect(),
            ),
            other => other.clone(),
        }
    }

    /// `{credentials.NAME}` in a header value or an envelope, filled in.
    fn fill_credentials(&self, s: &str) -> String {
        if !s.contains("{credentials.") {
            return s.to_owned();
        }
        let mut out = s.to_owned();
        for (name, secret) in &self.credentials.0 {
            out = out.replace(&format!("{{credentials.{name}}}"), secret.expose_secret());
        }
        out
    }

    /// A write's idempotency key, as a header and/or a query parameter.
    fn idempotent(&self, mut rb: reqwest::RequestBuilder, key: &str) -> reqwest::RequestBuilder {
        let key = match self.manifest.idempotency_max_len {
            Some(max) if key.len() > max && key.is_char_boundary(max) => &key[..max],
            _ => key,
        };
        if let Some(h) = &self.manifest.idempotency_header {
            rb = rb.header(h, key);
        }
        if let Some(q) = &self.manifest.idempotency_query {
            rb = rb.query(&[(q.as_str(), key)]);
        }
        rb
    }

    /// A `2xx` answer that reports an error in its body (the manifest's `error_pointer`).
    fn error_in_body(&self, status: u16, summary: &str, body: &str) -> Result<(), ProviderError> {
        let Some(p) = &self.manifest.error_pointer else {
            return Ok(());
        };
        let Some(json) = decode(body) else {
            return Ok(());
        };
        let failed = match json.pointer(p) {
            None | Some(Value::Null) | Some(Value::Bool(false)) => false,
            Some(Value::String(s)) => !s.is_empty(),
            Some(Value::Array(a)) => !a.is_empty(),
            Some(Value::Object(o)) => !o.is_empty(),
            Some(_) => true,
        };
        if !failed {
            return Ok(());
        }
        let message = self
            .manifest
            .error_message_pointer
            .as_ref()
            .and_then(|m| json.pointer(m))
            .or_else(|| json.pointer(p).and_then(|e| e.get("message")))
            .or_else(|| json.pointer(p).and_then(|e| e.pointer("/0/description")))
            .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
            .unwrap_or_else(|| json.pointer(p).map(Value::to_string).unwrap_or_default());
        Err(fail(
            ErrorClass::Permanent,
            Some(status),
            summary,
            body,
            format!("the provider answered {status} but reported an error: {message}"),
        ))
    }

    /// The body for `payload`; a field map may also read the target's own id and the kept
    /// values (`/_switchyard/external_id`, `/_switchyard/kept/<name>`), and its references
    /// resolve through `/_switchyard/refs/<entity>/<id>` (put there by the worker).
    fn body_with(
        e: &EntityEndpoints,
        payload: &Value,
        external_id: Option<&str>,
        kept: Option<&Value>,
    ) -> Value {
        let body = Self::body_from(&e.body, e.wrap.as_deref(), payload, external_id, kept);
        match (body, &e.wrap) {
            (Value::Object(mut m), Some(key)) if e.wrap_array => {
                let inner = m.remove(key).unwrap_or(Value::Null);
                m.insert(key.clone(), Value::Array(vec![inner]));
                Value::Object(m)
            }
            (body, _) => body,
        }
    }

    /// The body a field map makes of `payload` (see [`Self::body_with`]), wrapped.
    fn body_from(
        map: &FieldMap,
        wrap: Option<&str>,
        payload: &Value,
        external_id: Option<&str>,
        kept: Option<&Value>,
    ) -> Value {
        let wrapped = |body: Value| match wrap {
            Some(key) => serde_json::json!({ key: body }),
            None => body,
        };
        let refs = payload.pointer("/_switchyard/refs").cloned();
        if map.0.is_empty() {
            let mut plain = payload.clone();
            if let Value::Object(m) = &mut plain {
                m.remove("_switchyard");
            }
            return wrapped(plain);
        }
        let mut with = payload.clone();
        if let Value::Object(m) = &mut with {
            // What the worker put there (refs, route values) stays; the call's own context
            // is added.
            let mut ctx = match m.remove("_switchyard") {
                Some(Value::Object(o)) => o,
                _ => serde_json::Map::new(),
            };
            if let Some(id) = external_id {
                ctx.insert("external_id".into(), Value::String(id.to_owned()));
            }
            if let Some(k) = kept {
                ctx.insert("kept".into(), k.clone());
            }
            m.insert("_switchyard".into(), Value::Object(ctx));
        }
        let resolve = |entity: &str, id: &str| {
            refs.as_ref()
                .and_then(|r| r.get(entity))
                .and_then(|r| r.get(id))
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        wrapped(map.apply_with(&with, &resolve))
    }

    /// Make what the create needs first (`create_first`), each one's id put in the payload
    /// at `/_switchyard/first/<name>`; the requests made, for the job's record. Without
    /// such steps, the payload as it is (not copied).
    async fn create_first<'p>(
        &self,
        e: &EntityEndpoints,
        payload: &'p Value,
    ) -> Result<(std::borrow::Cow<'p, Value>, Vec<String>), ProviderError> {
        if e.create_first.is_empty() {
            return Ok((std::borrow::Cow::Borrowed(payload), Vec::new()));
        }
        let mut payload = payload.clone();
        let mut made = Vec::new();
        for step in &e.create_first {
            let url = self.url(&step.create.path, "", None);
            let body = Self::body_from(&step.body, step.wrap.as_deref(), &payload, None, None);
            let rb = self.with_body(
                self.request(&step.create.method, &url),
                &step.create,
                body,
                None,
            )?;
            let (status, _, answer, summary) = self.send(rb, &step.create.method, &url).await?;
            let id = decode(&answer)
                .and_then(|j| id_at(&j, &step.id_pointer))
                .ok_or_else(|| {
                    fail(
                        ErrorClass::Permanent,
                        Some(status),
                        &summary,
                        &answer,
                        format!(
                            "the {} made first has no id at `{}` in the answer",
                            step.name, step.id_pointer
                        ),
                    )
                })?;
            made.push(format!("{summary} → {id}"));
            if let Some(m) = payload.as_object_mut() {
                let ctx = m
                    .entry("_switchyard")
                    .or_insert_with(|| serde_json::json!({}));
                if let Some(c) = ctx.as_object_mut() {
                    let first = c.entry("first").or_insert_with(|| serde_json::json!({}));
                    if let Some(f) = first.as_object_mut() {
                        f.insert(step.name.clone(), Value::String(id));
                    }
                }
            }
        }
        Ok((std::borrow::Cow::Owned(payload), made))
    }
}

#[async_trait]
impl Connector for RestConnector {
    fn provider(&self) -> &'static str {
        self.name
    }

    async fn execute(&self, op: Operation<'_>) -> Result<CallOutcome, ProviderError> {
        check_ids(&op)?;
        match op {
            Operation::Create {
                entity,
                internal_id,
                payload,
                idempotency_key,
            } => {
                let e = self.entity(entity)?;
                let create = e.create.as_ref().ok_or_else(|| {
                    ProviderError::new(
                        ErrorClass::Permanent,
                        format!("this {entity} is not at the provider, and {entity} records cannot be created there (the manifest has no `create`): it must exist there first"),
                    )
                })?;
                let (payload, made) = self.create_first(e, payload).await?;
                let url = self.url(&create.path, internal_id, None);
                let rb = self.with_body(
                    self.with_headers(self.request(&create.method, &url), create, None),
                    create,
                    Self::body_with(e, &payload, None, None),
                    None,
                )?;
                let rb = self.idempotent(rb, idempotency_key);
                let (status, headers, body, summary) = self
                    .send(rb, &create.method, &url)
                    .await
                    .map_err(|mut err| {
                        if !made.is_empty() {
                            err.request = Some(format!(
                                "{}; {}",
                                made.join("; "),
                                err.request.unwrap_or_default()
                            ));
                        }
                        err
                    })?;
                let summary = if made.is_empty() {
                    summary
                } else {
                    format!("{}; {summary}", made.join("; "))
                };
                let json = decode(&body);
                let external_id = if e.id_from_location {
                    headers
                        .get(header::LOCATION)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|l| l.trim_end_matches('/').rsplit('/').next())
                        .filter(|id| !id.is_empty())
                        .map(str::to_owned)
                        .ok_or_else(|| {
                            fail(ErrorClass::Permanent, Some(status), &summary, &body,
                                "the provider's create answer has no `Location` header to read the new id from".into())
                        })?
                } else {
                    let json = json.as_ref().ok_or_else(|| {
                        fail(ErrorClass::Permanent, Some(status), &summary, &body,
                            "the provider answered the create with a body that is neither JSON nor XML; the external id is unknown".into())
                    })?;
                    id_at(json, &e.id_pointer).ok_or_else(|| {
                        fail(
                            ErrorClass::Permanent,
                            Some(status),
                            &summary,
                            &body,
                            format!(
                                "the provider's create response has no id at `{}`",
                                e.id_pointer
                            ),
                        )
                    })?
                };
                Ok(CallOutcome {
                    external_id: Some(external_id),
                    version: json.as_ref().and_then(|j| version_in(e, j)),
                    kept: json.as_ref().and_then(|j| kept_in(e, j)),
                    status,
                    request: summary,
                    response: truncate(&body),
                })
            }
            Operation::Update {
                entity,
                internal_id,
                external_id,
                payload,
                idempotency_key,
                kept,
            } => {
                let e = self.entity(entity)?;
                let ep = e.update.as_ref().ok_or_else(|| {
                    ProviderError::new(
                        ErrorClass::Permanent,
                        format!("entity `{entity}` is already mapped (external id {external_id}) and the manifest has no `update` endpoint"),
                    )
                })?;
                let url = self.url(&ep.path, internal_id, Some(external_id));
                let put = |kept: Option<&Value>| {
                    let body = Self::body_with(e, payload, Some(external_id), kept);
                    self.with_body(
                        self.with_headers(self.request(&ep.method, &url), ep, kept),
                        ep,
                        body,
                        Some(external_id),
                    )
                    .map(|rb| self.idempotent(rb, idempotency_key))
                };
                let (status, body, summary) = match self.send(put(kept)?, &ep.method, &url).await {
                    Ok((status, _, body, summary)) => (status, body, summary),
                    // The kept values went stale (someone else changed the record): read
                    // them again and try once more.
                    Err(err)
                        if e.stale_error.as_deref().is_some_and(|t| {
                            err.response.as_deref().is_some_and(|r| r.contains(t))
                                || err.message.contains(t)
                        }) =>
                    {
                        let read = e.read.as_ref().expect("validated: stale_error needs read");
                        let read_url = self.url(&read.path, internal_id, Some(external_id));
                        let (_, _, fresh, _) = self
                            .send(
                                self.request(&read.method, &read_url),
                                &read.method,
                                &read_url,
                            )
                            .await?;
                        let fresh = decode(&fresh).and_then(|j| kept_in(e, &j));
                        let (status, _, body, summary) =
                            self.send(put(fresh.as_ref())?, &ep.method, &url).await?;
                        (
                            status,
                            body,
                            format!("{} (after re-reading stale values)", summary),
                        )
                    }
                    Err(err) => return Err(err),
                };
                let json = decode(&body);
                Ok(CallOutcome {
                    external_id: Some(external_id.to_owned()),
                    version: json.as_ref().and_then(|j| version_in(e, j)),
                    kept: json.as_ref().and_then(|j| kept_in(e, j)),
                    status,
                    request: summary,
                    response: truncate(&body),
                })
            }
            Operation::Delete {
                entity,
                internal_id,
                external_id,
            } => {
                let e = self.entity(entity)?;
                let ep = e.delete.as_ref().ok_or_else(|| {
                    ProviderError::new(
                        ErrorClass::Permanent,
                        format!("the manifest has no `delete` endpoint for entity `{entity}`"),
                    )
                })?;
                let url = self.url(&ep.path, internal_id, Some(external_id));
                let mut rb = self.with_headers(self.request(&ep.method, &url), ep, None);
                if ep.envelope.is_some() {
                    rb = self.with_body(rb, ep, Value::Null, Some(external_id))?;
                }
                match self.send(rb, &ep.method, &url).await {
                    Ok((status, _, body, summary)) => Ok(CallOutcome {
                        external_id: None,
                        version: None,
                        kept: None,
                        status,
                        request: summary,
                        response: truncate(&body),
                    }),
                    // Already gone: the effect we wanted.
                    Err(err) if err.status == Some(404) || err.status == Some(410) => {
                        Ok(CallOutcome {
                            external_id: None,
                            version: None,
                            kept: None,
                            status: err.status.unwrap_or(404),
                            request: err.request.unwrap_or_default(),
                            response: err.response.unwrap_or_default(),
                        })
                    }
                    Err(err) => Err(err),
                }
            }
        }
    }

    fn references(&self, entity: &str, payload: &Value) -> Vec<(String, String)> {
        self.manifest
            .entities
            .get(entity)
            .map(|e| {
                let mut refs = e.body.references(payload);
                for step in &e.create_first {
                    for r in step.body.references(payload) {
                        if !refs.contains(&r) {
                            refs.push(r);
                        }
                    }
                }
                refs
            })
            .unwrap_or_default()
    }

    fn can_create(&self, entity: &str) -> bool {
        self.manifest
            .entities
            .get(entity)
            .is_none_or(|e| e.create.is_some())
    }

    fn can_lookup(&self, entity: &str) -> bool {
        self.manifest
            .entities
            .get(entity)
            .is_some_and(|e| e.lookup.is_some())
    }

    async fn lookup(&self, entity: &str, payload: &Value) -> Result<Lookup, ProviderError> {
        let e = self.entity(entity)?;
        let first = e.lookup.as_ref().ok_or_else(|| {
            ProviderError::new(
                ErrorClass::Permanent,
                format!("the manifest has no `lookup` for entity `{entity}`"),
            )
        })?;
        let key_pointer = first.key_pointer.as_deref().unwrap_or_default();
        let mut key = match payload.pointer(key_pointer) {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => {
                return Err(ProviderError::new(
                    ErrorClass::Permanent,
                    format!(
                        "the event has no natural key at `{key_pointer}` to look the {entity} up by"
                    ),
                ));
            }
        };
        let mut requests = Vec::new();
        let mut step = first;
        loop {
            let (found, kept, summary) = self.lookup_step(entity, step, &key).await?;
            requests.push(summary);
            match (found, &step.then) {
                (Some(id), Some(next)) => {
                    key = id;
                    step = next;
                }
                (found, _) => {
                    return Ok(Lookup {
                        external_id: found,
                        kept,
                        request: requests.join("; "),
                    });
                }
            }
        }
    }

    fn can_list(&self, entity: &str) -> bool {
        self.manifest
            .entities
            .get(entity)
            .is_some_and(|e| e.list.is_some())
    }

    async fn list_changed(&self, q: ListQuery<'_>) -> Result<ChangedPage, ProviderError> {
        let e = self.entity(q.entity)?;
        let list = e.list.as_ref().ok_or_else(|| {
            ProviderError::new(
                ErrorClass::Permanent,
                format!(
                    "the manifest has no `list` endpoint for entity `{}`",
                    q.entity
                ),
            )
        })?;
        let base = self.url(&list.path, "", None);
        let url = list.page_url(&base, &self.manifest.base_url, q.since, q.cursor)?;
        let rb = self.request(&list.method, url.as_str());
        let (status, headers, body, summary) = self.send(rb, &list.method, url.as_str()).await?;
        list.read_page(&headers, &body, q.cursor, &self.manifest.base_url)
            .map(|(records, next)| ChangedPage {
                records,
                next,
                request: summary.clone(),
            })
            .map_err(|m| fail(ErrorClass::Permanent, Some(status), &summary, &body, m))
    }

    fn operation(&self, name: &str) -> Option<&crate::operations::OperationSpec> {
        self.manifest.operations.get(name)
    }

    fn operation_names(&self) -> Vec<String> {
        self.manifest.operations.keys().cloned().collect()
    }

    async fn operate(
        &self,
        name: &str,
        input: &Value,
        idempotency_key: Option<&str>,
    ) -> Result<crate::operations::OperationAnswer, ProviderError> {
        let op = self.manifest.operations.get(name).ok_or_else(|| {
            ProviderError::new(
                ErrorClass::Permanent,
                format!("this integration's connector has no operation `{name}`"),
            )
        })?;
        let missing = op.missing_input(input);
        if !missing.is_empty() {
            return Err(ProviderError::new(
                ErrorClass::Permanent,
                format!("`{name}` needs {} in its input", missing.join(", ")),
            ));
        }
        // The input, with the values computed now under `/_switchyard/computed`.
        let mut payload = match input {
            Value::Object(m) => m.clone(),
            _ => serde_json::Map::new(),
        };
        payload.remove("_switchyard");
        let fill = |s: &str| crate::operations::fill_input(&self.fill_credentials(s), input);
        let computed = crate::operations::compute(op, chrono::Utc::now(), &fill);
        let reference_of_input = || {
            op.reference_input
                .as_ref()
                .and_then(|p| input.pointer(p))
                .and_then(crate::operations::text)
        };
        // A link: nothing is called.
        if let Some(tpl) = &op.link {
            let mut url = fill(tpl);
            for (n, v) in &computed {
                if let Some(v) = v.as_str() {
                    url = url.replace(&format!("{{computed.{n}}}"), v);
                }
            }
            return Ok(crate::operations::OperationAnswer {
                status: 200,
                body: serde_json::json!({ "url": url }),
                reference: reference_of_input(),
                outcome: None,
                request: format!("no call: a link made for `{name}`"),
            });
        }
        payload.insert(
            "_switchyard".into(),
            serde_json::json!({ "computed": computed }),
        );
        let body = Self::body_from(&op.body, None, &Value::Object(payload), None, None);
        // `{input.NAME}` in the path is the input's value, encoded (a query's id).
        let mut path = op.path.clone();
        for name in crate::operations::names_in(&op.path, "{input.") {
            let value = input
                .get(&name)
                .and_then(crate::operations::text)
                .unwrap_or_default();
            path = path.replace(&format!("{{input.{name}}}"), &encode_segment(&value));
        }
        let url = self.url(&path, "", None);
        let mut rb = self.request(&op.method, &url);
        if !op.method.eq_ignore_ascii_case("GET") {
            rb = self.with_body(
                rb,
                &Endpoint {
                    method: op.method.clone(),
                    path: op.path.clone(),
                    envelope: None,
                    headers: BTreeMap::new(),
                },
                body,
                None,
            )?;
        }
        if let (false, Some(key)) = (op.safe, idempotency_key) {
            rb = self.idempotent(rb, key);
        }
        let (status, _headers, text, summary) = self.send(rb, &op.method, &url).await?;
        let json = decode(&text).unwrap_or_else(|| Value::String(truncate(&text)));
        let reference = match (&op.reference_input, &op.reference_pointer) {
            (Some(p), _) => input.pointer(p).and_then(crate::operations::text),
            (None, Some(p)) => id_at(&json, p),
            (None, None) => None,
        };
        if op.settle.is_some() && reference.is_none() {
            return Err(fail(
                ErrorClass::Permanent,
                Some(status),
                &summary,
                &text,
                format!(
                    "the provider's answer has no reference at `{}`; the result cannot be matched to it",
                    op.reference_pointer.as_deref().unwrap_or_default()
                ),
            ));
        }
        Ok(crate::operations::OperationAnswer {
            status,
            outcome: op.result.as_ref().and_then(|r| r.read(&json)),
            body: json,
            reference,
            request: summary,
        })
    }

    async fn test_connection(&self) -> Result<(), ProviderError> {
        if let (true, Some(oauth)) = (self.manifest.test_by_token, &self.oauth) {
            return oauth.access_token().await.map(|_| ());
        }
        let (method, path) = match &self.manifest.test {
            Some(t) => (t.method.as_str(), t.path.as_str()),
            None => ("GET", "/"),
        };
        let url = self.url(path, "", None);
        self.send(self.request(method, &url), method, &url)
            .await
            .map(|_| ())
    }
}

/// Send a request and classify the answer. Ok: (status, headers, body, request summary).
async fn send_full(
    rb: reqwest::RequestBuilder,
    method: &str,
    url: &str,
) -> Result<(u16, header::HeaderMap, String, String), ProviderError> {
    let summary = format!("{} {}", method.to_ascii_uppercase(), url);
    let resp = match rb.send().await {
        Ok(r) => r,
        Err(e) => {
            let what = if e.is_timeout() {
                "timed out"
            } else if e.is_connect() {
                "could not connect"
            } else {
                "failed"
            };
            return Err(fail(
                ErrorClass::Transient,
                None,
                &summary,
                "",
                format!("the call to the provider {what}: {}", source_chain(&e)),
            ));
        }
    };
    let status = resp.status();
    let retry_after = resp
        .headers()
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after);
    let headers = resp.headers().clone();
    let body = match read_capped(resp).await {
        Ok(Some(b)) => b,
        Ok(None) => {
            return Err(fail(
                ErrorClass::Permanent,
                Some(status.as_u16()),
                &summary,
                "",
                format!(
                    "the provider's answer is larger than {} MiB; it was not read",
                    MAX_ANSWER_BYTES >> 20
                ),
            ));
        }
        Err(e) => {
            return Err(fail(
                ErrorClass::Transient,
                Some(status.as_u16()),
                &summary,
                "",
                format!("reading the provider's response failed: {e}"),
            ));
        }
    };
    if status.is_success() {
        return Ok((status.as_u16(), headers, body, summary));
    }
    let class = classify(status);
    let detail = provider_message(&body);
    let mut err = fail(
        class,
        Some(status.as_u16()),
        &summary,
        &body,
        match detail {
            Some(d) => format!("the provider answered {status}: {d}"),
            None => format!("the provider answered {status}"),
        },
    );
    err.retry_after = retry_after;
    Err(err)
}

/// An id (a non-empty string, or a number written out) at `pointer` in `json`.
fn id_at(json: &Value, pointer: &str) -> Option<String> {
    match json.pointer(pointer) {
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    }
}

/// A provider's answer as JSON: JSON as it is, XML by [`crate::xml`]'s convention.
pub fn decode(body: &str) -> Option<Value> {
    if let Ok(v) = serde_json::from_str::<Value>(body) {
        return Some(v);
    }
    if crate::xml::is_xml(None, body) {
        return crate::xml::to_json(body).ok();
    }
    None
}

/// DESIGN.md's failure classes, from the status code.
pub fn classify(status: StatusCode) -> ErrorClass {
    match status.as_u16() {
        429 => ErrorClass::Throttled,
        408 | 425 | 500..=599 => ErrorClass::Transient,
        401 | 403 => ErrorClass::Auth,
        _ => ErrorClass::Permanent,
    }
}

fn fail(
    class: ErrorClass,
    status: Option<u16>,
    summary: &str,
    body: &str,
    message: String,
) -> ProviderError {
    ProviderError {
        class,
        status,
        message,
        retry_after: None,
        request: Some(summary.to_owned()),
        response: (!body.is_empty()).then(|| truncate(body)),
        reauthorize: false,
    }
}

/// The human part of a provider's error body: `message`, `error`, `error.message`,
/// `errors[0].message`, `detail`, or the text itself.
fn provider_message(body: &str) -> Option<String> {
    let trimmed = body.trim();
    if trimmed.is_empty() {
        return None;
    }
    if let Some(mut v) = decode(trimmed) {
        // An XML answer: look inside its root element.
        if trimmed.starts_with('<')
            && let Some(inner) = v.as_object().and_then(|o| o.values().next()).cloned()
        {
            v = inner;
        }
        let candidates = [
            v.pointer("/errors/error/message"),
            v.pointer("/errors/error/0/message"),
            v.pointer("/Fault/Error/0/Detail"),
            v.pointer("/message"),
            v.pointer("/error/message"),
            v.pointer("/error_description"),
            v.pointer("/error"),
            v.pointer("/errors/0/message"),
            v.pointer("/errors/0/detail"),
            v.pointer("/detail"),
            v.pointer("/title"),
        ];
        if let Some(s) = candidates.into_iter().flatten().find_map(Value::as_str) {
            return Some(truncate(s));
        }
    }
    Some(truncate(trimmed))
}

/// `Retry-After`: delay-seconds or an HTTP date, at most [`MAX_RETRY_AFTER`].
pub fn parse_retry_after(v: &str) -> Option<Duration> {
    let v = v.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs).min(MAX_RETRY_AFTER));
    }
    let when = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    let delta = when.with_timezone(&chrono::Utc) - chrono::Utc::now();
    Some(
        delta
            .to_std()
            .unwrap_or(Duration::ZERO)
            .min(MAX_RETRY_AFTER),
    )
}

/// An id of dots only (`.`, `..`) cannot go in a URL path: URLs read it (even encoded) as a
/// step up the path.
fn check_ids(op: &Operation<'_>) -> Result<(), ProviderError> {
    let ids: &[&str] = match op {
        Operation::Create { internal_id, .. } => &[internal_id],
        Operation::Update {
            internal_id,
            external_id,
            ..
        }
        | Operation::Delete {
            internal_id,
            external_id,
            ..
        } => &[internal_id, external_id],
    };
    match ids.iter().find(|id| dots_only(id)) {
        Some(id) => Err(ProviderError::new(
            ErrorClass::Permanent,
            format!("the id `{id}` cannot go in a URL path"),
        )),
        None => Ok(()),
    }
}

/// `.`, `..`, …: a path segment URLs read (even encoded) as a step in place or up.
fn dots_only(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b == b'.')
}

/// A call's outcome with every secret in `secrets` (and its URL-encoded form) replaced by
/// `[redacted]`: what a provider echoes back (a token in an error message) is stored and
/// logged without it. Secrets shorter than 6 characters are left alone (they would match
/// ordinary text).
fn scrub(
    result: Result<(u16, header::HeaderMap, String, String), ProviderError>,
    secrets: &[&str],
) -> Result<(u16, header::HeaderMap, String, String), ProviderError> {
    let secrets: Vec<&&str> = secrets.iter().filter(|s| s.len() >= 6).collect();
    if secrets.is_empty() {
        return result;
    }
    let clean = |text: &str| -> String {
        let mut out = text.to_owned();
        for s in &secrets {
            if out.contains(**s) {
                out = out.replace(**s, "[redacted]");
            }
            let encoded = encode_segment(s);
            if encoded != ***s && out.contains(&encoded) {
                out = out.replace(&encoded, "[redacted]");
            }
        }
        out
    };
    match result {
        Ok((status, headers, body, summary)) => {
            Ok((status, headers, clean(&body), clean(&summary)))
        }
        Err(mut e) => {
            e.message = clean(&e.message);
            e.request = e.request.as_deref().map(clean);
            e.response = e.response.as_deref().map(clean);
            Err(e)
        }
    }
}

/// An answer's body, read up to [`MAX_ANSWER_BYTES`]; `Ok(None)` when it is larger.
async fn read_capped(mut resp: reqwest::Response) -> Result<Option<String>, reqwest::Error> {
    if resp
        .content_length()
        .is_some_and(|n| n > MAX_ANSWER_BYTES as u64)
    {
        return Ok(None);
    }
    let mut buf: Vec<u8> = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        if buf.len() + chunk.len() > MAX_ANSWER_BYTES {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(Some(String::from_utf8_lossy(&buf).into_owned()))
}

fn truncate(s: &str) -> String {
    if s.len() <= MAX_SUMMARY {
        return s.to_owned();
    }
    let mut end = MAX_SUMMARY;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

pub(crate) fn source_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}

/// Percent-encode one path segment (RFC 3986 unreserved characters pass).
fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use wiremock::matchers::{body_json, header, method, path};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    fn manifest(base: &str) -> Value {
        json!({
            "base_url": base,
            "auth": {"type": "bearer"},
            "entities": {"order": {
                "create": {"method": "POST", "path": "/api/orders"},
                "update": {"method": "PUT", "path": "/api/orders/{external_id}"},
                "delete": {"method": "DELETE", "path": "/api/orders/{external_id}"},
                "body": {"reference": "/id", "total": "/totals/grand_total"}
            }}
        })
    }

    fn connector(base: &str) -> RestConnector {
        let creds = Credentials::from_json(&json!({"token": "t0k"})).unwrap();
        RestConnector::new(
            Manifest::parse(&manifest(base)).unwrap(),
            creds,
            crate::http_client(),
            None,
        )
        .unwrap()
    }

    #[tokio::test]
    async fn create_posts_the_mapped_body_and_reads_the_id() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path("/api/orders"))
            .and(header("authorization", "Bearer t0k"))
            .and(header("idempotency-key", "key-1"))
            .and(body_json(json!({"reference": "ord-1", "total": "9.90"})))
            .respond_with(ResponseTemplate::new(201).set_body_json(json!({"id": 77})))
            .expect(1)
            .mount(&server)
            .await;
        let out = connector(&server.uri())
            .execute(Operation::Create {
                entity: "order",
                internal_id: "ord-1",
                payload: &json!({"id": "ord-1", "totals": {"grand_total": "9.90"}}),
                idempotency_key: "key-1",
            })
            .await
            .unwrap();
        assert_eq!(out.external_id.as_deref(), Some("77"));
        assert_eq!(out.status, 201);
        assert!(!out.request.contains("t0k"));
    }

    #[tokio::test]
    async fn errors_are_classified_with_the_providers_message() {
        let server = MockServer::start().await;
        Mock::given(method("PUT"))
            .and(path("/api/orders/a%2Fb"))
            .respond_with(
                ResponseTemplate::new(422)
                    .set_body_json(json!({"errors": [{"message": "total must be positive"}]})),
            )
            .mount(&server)
            .await;
        let c = connector(&server.uri());
        let err = c
            .execute(Operation::Update {
                entity: "order",
                internal_id: "ord-1",
                external_id: "a/b",
                payload: &json!({}),
                idempotency_key: "k",
                kept: None,
            })
            .await
            .unwrap_err();
        assert_eq!(err.class, ErrorClass::Permanent);
        assert_eq!(err.status, Some(422));
        assert!(
            err.message.contains("total must be positive"),
            "{}",
            err.message
        );

        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(429).insert_header("retry-after", "2"))
            .mount(&server)
            .await;
        let err = c
            .execute(Operation::Create {
                entity: "order",
                internal_id: "x",
                payload: &json!({}),
                idempotency_key: "k",
            })
            .await
            .unwrap_err();
        assert_eq!(err.class, ErrorClass::Throttled);
        assert_eq!(err.retry_after, Some(Duration::from_secs(2)));

        let err = c
            .execute(Operation::Create {
                entity: "invoice",
                internal_id: "x",
                payload: &json!({}),
                idempotency_key: "k",
            })
            .await
            .unwrap_err();
        assert_eq!(err.class, ErrorClass::Permanent);
    }

    #[tokio::test]
    async fn unreachable_provider_is_transient() {
        let c = connector("http://127.0.0.1:9");
        let err = c
            .execute(Operation::Create {
                entity: "order",
                internal_id: "x",
                payload: &json!({}),
                idempotency_key: "k",
            })
            .await
            .unwrap_err();
        assert_eq!(err.class, ErrorClass::Transient);
        assert!(err.message.contains("could not connect"), "{}", err.message);
    }

    #[test]
    fn manifests_are_validated_with_the_field_named() {
        let bad = |v: Value| Manifest::parse(&v).unwrap_err().field;
        let mut m = manifest("http://x");
        m["entities"]["order"]["update"]["path"] = json!("/api/orders");
        assert_eq!(bad(m), "settings.entities.order.update.path");
        let mut m = manifest("ftp://x");
        assert_eq!(bad(m.clone()), "settings.base_url");
        m["base_url"] = json!("http://x");
        m["timeout_ms"] = json!(0);
        assert_eq!(bad(m), "settings.timeout_ms");
        assert_eq!(
            bad(json!({"base_url": "http://x", "entities": {}})),
            "settings.entities"
        );
        let m = Manifest::parse(&manifest("http://x")).unwrap();
        let missing = RestConnector::new(m, Credentials::default(), crate::http_client(), None)
            .err()
            .unwrap();
        assert_eq!(missing.field, "credentials.token");
    }

    #[test]
    fn classification_and_retry_after() {
        assert_eq!(
            classify(StatusCode::SERVICE_UNAVAILABLE),
            ErrorClass::Transient
        );
        assert_eq!(classify(StatusCode::UNAUTHORIZED), ErrorClass::Auth);
        assert_eq!(classify(StatusCode::NOT_FOUND), ErrorClass::Permanent);
        assert_eq!(parse_retry_after("7"), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon"), None);
        assert_eq!(encode_segment("a/b c"), "a%2Fb%20c");
    }

    fn with_lookup(base: &str, lookup: Value) -> Value {
        let mut m = manifest(base);
        m["entities"]["order"]["lookup"] = lookup;
        m["entities"]["order"]["version_pointer"] = json!("/updated_at");
        m
    }

    #[test]
    fn lookups_must_say_where_the_key_goes() {
        let bad = |l: Value| {
            Manifest::parse(&with_lookup("http://x", l))
                .unwrap_err()
                .field
        };
        assert_eq!(
            bad(json!({"path": "/api/orders", "key_pointer": "/id"})),
            "settings.entities.order.lookup"
        );
        assert_eq!(
            bad(json!({"path": "/api/orders/{key}", "key_pointer": "id"})),
            "settings.entities.order.lookup.key_pointer"
        );
        assert!(
            Manifest::parse(&with_lookup(
                "http://x",
                json!({"path": "/api/orders", "query": {"ref": "{key}"}, "key_pointer": "/id"})
            ))
            .is_ok()
        );
    }

    #[tokio::test]
    async fn a_lookup_finds_one_none_or_refuses_several() {
        let server = MockServer::start().await;
        let m = with_lookup(
            &server.uri(),
            json!({"path": "/api/orders", "query": {"reference": "{key}"},
                   "key_pointer": "/id", "items_pointer": "/orders"}),
        );
        let c = RestConnector::new(
            Manifest::parse(&m).unwrap(),
            Credentials::from_json(&json!({"token": "t0k"})).unwrap(),
            crate::http_client(),
            None,
        )
        .unwrap();
        for (reference, answer) in [
            ("one", json!({"orders": [{"id": 7}]})),
            ("none", json!({"orders": []})),
            ("two", json!({"orders": [{"id": 7}, {"id": 8}]})),
        ] {
            Mock::given(method("GET"))
                .and(path("/api/orders"))
                .and(wiremock::matchers::query_param("reference", reference))
                .and(header("authorization", "Bearer t0k"))
                .respond_with(ResponseTemplate::new(200).set_body_json(answer))
                .mount(&server)
                .await;
        }
        let found = c.lookup("order", &json!({"id": "one"})).await.unwrap();
        assert_eq!(found.external_id.as_deref(), Some("7"));
        assert!(found.request.contains("reference=one"), "{}", found.request);
        let none = c.lookup("order", &json!({"id": "none"})).await.unwrap();
        assert_eq!(none.external_id, None);
        let two = c.lookup("order", &json!({"id": "two"})).await.unwrap_err();
        assert_eq!(two.class, ErrorClass::Permanent);
        assert!(
            two.message.contains("2 order records match"),
            "{}",
            two.message
        );
        let no_key = c.lookup("order", &json!({"other": 1})).await.unwrap_err();
        assert!(no_key.message.contains("no natural key at `/id`"));

        // A write's response carries the record's version where the manifest says.
        Mock::given(method("POST"))
            .and(path("/api/orders"))
            .respond_with(
                ResponseTemplate::new(201)
                    .set_body_json(json!({"id": "o-1", "updated_at": "2026-11-20T09:00:00Z"})),
            )
            .mount(&server)
            .await;
        let out = c
            .execute(Operation::Create {
                entity: "order",
                internal_id: "x",
                payload: &json!({"id": "x"}),
                idempotency_key: "k",
            })
            .await
            .unwrap();
        assert_eq!(out.version, Some(1_795_165_200_000_000));
    }

    #[test]
    fn form_fields_nest_as_php_reads_them() {
        let f = form_fields(
            &json!({"company_id": 5, "name": "Ana", "active": true, "gone": null,
            "products": [{"product_id": 7, "qty": 2.5}], "customer": {"vat": "PT1"}}),
        );
        let as_text: Vec<String> = f.iter().map(|(k, v)| format!("{k}={v}")).collect();
        assert_eq!(
            as_text,
            [
                "active=1",
                "company_id=5",
                "customer[vat]=PT1",
                "name=Ana",
                "products[0][product_id]=7",
                "products[0][qty]=2.5"
            ]
        );
    }

    #[tokio::test]
    async fn errors_inside_a_2xx_body_fail_the_call() {
        let server = MockServer::start().await;
        let mut m = manifest(&server.uri());
        m["error_pointer"] = json!("/error");
        m["error_message_pointer"] = json!("/error/data/message");
        m["body_encoding"] = json!("form");
        m["idempotency_query"] = json!("requestid");
        let c = RestConnector::new(
            Manifest::parse(&m).unwrap(),
            Credentials::from_json(&json!({"token": "t0k"})).unwrap(),
            crate::http_client(),
            None,
        )
        .unwrap();
        // Odoo's JSON-RPC fault, answered with 200 (odoo/http.py: `_handle_error` wraps the
        // exception as {"jsonrpc": "2.0", "id": …, "error": {"code": 200, "message": "Odoo
        // Server Error", "data": {"name": …, "message": …}}}).
        Mock::given(method("POST"))
            .and(path("/api/orders"))
            .and(wiremock::matchers::query_param("requestid", "k-1"))
            .and(header("content-type", "application/x-www-form-urlencoded"))
            .and(wiremock::matchers::body_string("reference=o-1"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                "jsonrpc": "2.0", "id": null,
                "error": {"code": 200, "message": "Odoo Server Error",
                          "data": {"name": "odoo.exceptions.ValidationError",
                                   "message": "The operation cannot be completed: missing required field Name"}}})))
            .mount(&server)
            .await;
        let e = c
            .execute(Operation::Create {
                entity: "order",
                internal_id: "o-1",
                payload: &json!({"id": "o-1"}),
                idempotency_key: "k-1",
            })
            .await
            .unwrap_err();
        assert_eq!(e.class, ErrorClass::Permanent);
        assert!(
            e.message.contains("missing required field Name"),
            "{}",
            e.message
        );
        assert_eq!(e.status, Some(200));
    }

    /// QuickBooks Online's sparse update (developer.intuit.com, Customer entity: "Sparse
    /// update a customer" — `POST /v3/company/<realmId>/customer` with `Id`, `SyncToken` and
    /// `"sparse": true`; answers `{"Customer": {"Id", "SyncToken", …}, "time"}`), its stale
    /// object fault (`400 {"Fault": {"Error": [{"Message": "Stale Object Error", "code":
    /// "5010"}], "type": "ValidationFault"}}`) and its read (`GET …/customer/<id>`).
    #[tokio::test]
    async fn kept_values_go_into_the_next_update_and_a_stale_one_is_read_again() {
        let server = MockServer::start().await;
        let m = json!({
            "base_url": format!("{}/v3/company/9130", server.uri()),
            "auth": {"type": "bearer"}, "idempotency_header": null, "idempotency_query": "requestid",
            "entities": {"customer": {
                "create": {"method": "POST", "path": "/customer?minorversion=75"},
                "update": {"method": "POST", "path": "/customer?minorversion=75"},
                "read": {"method": "GET", "path": "/customer/{external_id}?minorversion=75"},
                "body": {"DisplayName": "/name", "Id": "/_switchyard/external_id",
                         "SyncToken": "/_switchyard/kept/SyncToken", "sparse": {"value": true}},
                "id_pointer": "/Customer/Id",
                "keep": {"SyncToken": "/Customer/SyncToken"},
                "stale_error": "Stale Object Error"}}
        });
        let c = RestConnector::new(
            Manifest::parse(&m).unwrap(),
            Credentials::from_json(&json!({"token": "t0k"})).unwrap(),
            crate::http_client(),
            None,
        )
        .unwrap();
        // The first update carries a stale token; the read says 3; the retry carries 3.
        Mock::given(method("POST"))
            .and(path("/v3/company/9130/customer"))
            .and(body_json(json!({"DisplayName": "Ana", "Id": "58", "SyncToken": "0", "sparse": true})))
            .respond_with(ResponseTemplate::new(400).set_body_json(json!({"Fault": {"Error": [{
                "Message": "Stale Object Error",
                "Detail": "Stale Object Error : You and Demo User edited the same thing at the same time.",
                "code": "5010"}], "type": "ValidationFault"}, "time": "2026-11-20T09:00:00.000-08:00"})))
            .expect(1)
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path("/v3/company/9130/customer/58"))
            .respond_with(ResponseTemplate::new(200).set_body_json(
                json!({"Customer": {"Id": "58", "SyncToken": "3", "DisplayName": "Ana M."}}),
            ))
            .expect(1)
            .mount(&server)
            .await;
        Mock::given(method("POST"))
            .and(path("/v3/company/9130/customer"))
            .and(body_json(
                json!({"DisplayName": "Ana", "Id": "58", "SyncToken": "3", "sparse": true}),
            ))
            .and(wiremock::matchers::query_param("requestid", "k-9"))
            .respond_with(
                ResponseTemplate::new(200)
                    .set_body_json(json!({"Customer": {"Id": "58", "SyncToken": "4"}})),
            )
            .expect(1)
            .mount(&server)
            .await;
        let out = c
            .execute(Operation::Update {
                entity: "customer",
                internal_id: "c-1",
                external_id: "58",
                payload: &json!({"name": "Ana"}),
                idempotency_key: "k-9",
                kept: Some(&json!({"SyncToken": "0"})),
            })
            .await
            .unwrap();
        assert_eq!(out.kept, Some(json!({"SyncToken": "4"})));
        assert!(
            out.request.contains("after re-reading stale values"),
            "{}",
            out.request
        );
        server.verify().await;
    }

    // ------------------------------------------------ hardening (issue 12)

    #[tokio::test]
    async fn an_id_of_dots_stays_inside_its_path_segment() {
        let server = MockServer::start().await;
        Mock::given(method("PUT"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({})))
            .mount(&server)
            .await;
        let c = connector(&server.uri());
        let update = |id: &'static str| Operation::Update {
            entity: "order",
            internal_id: "1",
            external_id: id,
            payload: &NO_BODY,
            idempotency_key: "k",
            kept: None,
        };
        // `..` (and `%2E%2E`, which URLs read the same) would climb out of the path.
        for id in ["..", "."] {
            let e = c.execute(update(id)).await.unwrap_err();
            assert_eq!(e.class, ErrorClass::Permanent, "{id}");
            assert!(
                e.message.contains("cannot go in a URL path"),
                "{}",
                e.message
            );
        }
        c.execute(update("a/../b")).await.unwrap();
        let paths: Vec<String> = server
            .received_requests()
            .await
            .unwrap()
            .iter()
            .map(|r| r.url.path().to_owned())
            .collect();
        assert_eq!(paths, ["/api/orders/a%2F..%2Fb"]);
    }

    /// A look-up key goes where an id would, so a key of dots only must not climb out of
    /// the look-up's path either (in a query value it is harmless).
    #[tokio::test]
    async fn a_lookup_key_of_dots_stays_inside_its_path_segment() {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .respond_with(ResponseTemplate::new(404))
            .mount(&server)
            .await;
        let in_path = |base: &str| {
            RestConnector::new(
                Manifest::parse(&with_lookup(
                    base,
                    json!({"path": "/api/orders/by-reference/{key}", "key_pointer": "/id"}),
                ))
                .unwrap(),
                Credentials::from_json(&json!({"token": "t0k"})).unwrap(),
                crate::http_client(),
                None,
            )
            .unwrap()
        };
        let c = in_path(&server.uri());
        for key in ["..", "."] {
            let e = c.lookup("order", &json!({"id": key})).await.unwrap_err();
            assert_eq!(e.class, ErrorClass::Permanent, "{key}");
            assert!(
                e.message.contains("cannot go in a URL path"),
                "{}",
                e.message
            );
        }
        assert!(
            server.received_requests().await.unwrap().is_empty(),
            "no request climbed the path"
        );
        let found = c.lookup("order", &json!({"id": "a.b"})).await.unwrap();
        assert_eq!(found.external_id, None);
    }

    static NO_BODY: Value = Value::Null;

    #[tokio::test]
    async fn an_answer_larger_than_the_cap_is_refused_not_read_whole() {
        let server = MockServer::start().await;
        let huge = "x".repeat(MAX_ANSWER_BYTES + 1);
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(200).set_body_string(huge))
            .mount(&server)
            .await;
        let e = connector(&server.uri())
            .execute(Operation::Create {
                entity: "order",
                internal_id: "1",
                payload: &json!({"id": "1"}),
                idempotency_key: "k",
            })
            .await
            .unwrap_err();
        assert!(e.message.contains("larger than"), "{}", e.message);
    }

    #[test]
    fn an_absurd_retry_after_is_capped() {
        let d = parse_retry_after("10000000000000").unwrap();
        assert!(d <= MAX_RETRY_AFTER, "{d:?}");
        assert_eq!(parse_retry_after("30"), Some(Duration::from_secs(30)));
    }

    #[tokio::test]
    async fn credentials_a_provider_echoes_are_redacted() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(400).set_body_json(
                json!({"message": "bad request; you sent Authorization: Bearer s3cr3t-t0ken"}),
            ))
            .mount(&server)
            .await;
        let c = RestConnector::new(
            Manifest::parse(&manifest(&server.uri())).unwrap(),
            Credentials::from_json(&json!({"token": "s3cr3t-t0ken"})).unwrap(),
            crate::http_client(),
            None,
        )
        .unwrap();
        let e = c
            .execute(Operation::Create {
                entity: "order",
                internal_id: "1",
                payload: &json!({"id": "1"}),
                idempotency_key: "k",
            })
            .await
            .unwrap_err();
        assert!(!e.message.contains("s3cr3t"), "{}", e.message);
        assert!(!e.response.as_deref().unwrap_or_default().contains("s3cr3t"));
        assert!(e.message.contains("[redacted]"), "{}", e.message);
    }
}
