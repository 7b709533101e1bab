//! Named operations a connector declares (`charge`, `query`, `refund`, `send`, `balance`):
//! calls whose caller waits for the provider's answer, unlike jobs. An operation may start
//! something whose result arrives later (M-Pesa's STK push: the answer is a
//! `CheckoutRequestID`; the payment's result comes on a callback). Such an operation is
//! *pending* until it is **settled**: by the provider's callback, matched by the reference
//! the answer gave, or by asking (`settle.query`, another operation) when no callback came
//! in time.
//!
//! Everything here is declared in the manifest (`operations`), so connectors stay data:
//! the endpoint, the body (a field map over the caller's input), values computed when the
//! call is made (a timestamp, a base64 password), where the answer's reference and result
//! code are, and which codes mean success.
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use switchyard_core::mapping::FieldMap;

use crate::ConfigError;

/// One operation, as the manifest declares it (`operations.<name>`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperationSpec {
    /// What it does, for `switchyard connectors show`.
    #[serde(default)]
    pub description: String,
    pub method: String,
    /// Relative to `base_url`; `{settings.NAME}` filled in.
    pub path: String,
    /// It changes nothing at the provider (a query, a balance): it may be retried freely and
    /// needs no `Idempotency-Key`. Unsafe operations (a charge, a send) are called at most
    /// once per key.
    #[serde(default)]
    pub safe: bool,
    /// The body, a field map over the caller's input; `/_switchyard/computed/<name>` reads a
    /// computed value and `/reference` (for a settling query) the pending operation's
    /// reference. Empty: the input as it is.
    #[serde(default)]
    pub body: FieldMap,
    /// Input fields the caller must give (name → what it is).
    #[serde(default)]
    pub input: BTreeMap<String, String>,
    /// Values made when the call is made, by name.
    #[serde(default)]
    pub computed: BTreeMap<String, Computed>,
    /// Where the answer carries the provider's reference for what it started
    /// (M-Pesa: `/CheckoutRequestID`).
    #[serde(default)]
    pub reference_pointer: Option<String>,
    /// Where the caller's input carries it instead, when the caller names the payment
    /// (Flutterwave's `tx_ref`).
    #[serde(default)]
    pub reference_input: Option<String>,
    /// How the answer says how it ended, when it does (a query's `ResultCode`).
    #[serde(default)]
    pub result: Option<ResultSpec>,
    /// The answer only acknowledges; the result comes later (see [`SettleSpec`]).
    #[serde(default)]
    pub settle: Option<SettleSpec>,
    /// The operation calls nothing: its answer is `{"url": <this template>}`, with
    /// `{computed.NAME}` and `{input.NAME}` filled in (Payme's checkout link). `method` and
    /// `path` are then unused.
    #[serde(default)]
    pub link: Option<String>,
}

/// A provider that drives its own transactions by calling the hub (Payme's merchant API):
/// which protocol, the operation whose calls it pays, and the account field that names
/// one (`order_id`: `params.account.order_id`, the call's reference).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MerchantSpec {
    pub protocol: MerchantProtocol,
    pub operation: String,
    pub account: String,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum MerchantProtocol {
    /// Payme's Merchant API (JSON-RPC 2.0: CheckPerformTransaction, CreateTransaction,
    /// PerformTransaction, CancelTransaction, CheckTransaction, GetStatement).
    Payme,
    /// Click's SHOP API (form posts: Prepare with `action=0`, Complete with `action=1`,
    /// signed with `sign_string`).
    Click,
}

/// `{input.NAME}` in `s` filled with the input's values (text; numbers written out).
pub fn fill_input(s: &str, input: &Value) -> String {
    let mut out = s.to_owned();
    for name in names_in(s, "{input.") {
        let v = input.get(&name).and_then(text).unwrap_or_default();
        out = out.replace(&format!("{{input.{name}}}"), &v);
    }
    out
}

/// A value computed when the call is made.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(untagged, deny_unknown_fields)]
pub enum Computed {
    /// The time now, formatted (`%Y%m%d%H%M%S`), in a time zone (default UTC).
    Now {
        now: String,
        #[serde(default)]
        zone: Option<String>,
    },
    /// Base64 of a text in which `{settings.NAME}`, `{credentials.NAME}` and
    /// `{computed.NAME}` (a `now` value) are filled in (M-Pesa's STK password:
    /// `{settings.business_short_code}{credentials.passkey}{computed.timestamp}`).
    Base64 { base64: String },
    /// A text in which `{settings.NAME}`, `{credentials.NAME}` and `{computed.NAME}` are
    /// filled in: a URL with a secret in it (a callback URL carrying the integration's key)
    /// kept among the credentials, sealed, rather than in the settings.
    Text { text: String },
}

/// Where an answer (or a callback) says how an operation ended.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ResultSpec {
    /// The result code (compared as text: M-Pesa sends `0` in callbacks, `"0"` in queries).
    pub code_pointer: String,
    #[serde(default)]
    pub message_pointer: Option<String>,
    /// Codes that mean it succeeded (for an answer of an operation settled later: that it
    /// was accepted); any other code means it failed.
    pub succeeded: Vec<String>,
    /// Codes that mean it has not ended yet (asked again later).
    #[serde(default)]
    pub pending: Vec<String>,
}

/// How a pending operation is settled.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SettleSpec {
    /// The entity the settled outcome is routed as, from this integration (events
    /// `succeeded` and `failed`): `payment`.
    pub entity: String,
    /// The provider's callback: where it carries the reference, and its result. None: no
    /// callback settles it (a query does, or the provider's own protocol: Payme's
    /// PerformTransaction).
    #[serde(default)]
    pub callback: Option<CallbackSpec>,
    /// The operation that asks the provider how it ended, when no callback came in time;
    /// it gets the pending operation's input with `reference`.
    #[serde(default)]
    pub query: Option<String>,
    /// How long to wait for the callback before asking, in seconds (a number, or its text:
    /// a connector's `{settings.NAME}`).
    #[serde(default = "default_query_after", deserialize_with = "whole_number")]
    pub query_after_secs: u64,
    /// How many times to ask before the operation is given up as `expired`.
    #[serde(default = "default_max_queries")]
    pub max_queries: u32,
    /// With no `query`: how long to wait for the callback before the operation is given up
    /// as `expired` (a message with no delivery report in time), in seconds.
    #[serde(default, deserialize_with = "some_whole_number")]
    pub expire_after_secs: Option<u64>,
}

fn some_whole_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    whole_number(d).map(Some)
}

fn whole_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    match Value::deserialize(d)? {
        Value::Number(n) => n
            .as_u64()
            .ok_or_else(|| serde::de::Error::custom("must be a whole number of seconds")),
        Value::String(s) => s.trim().parse().map_err(|_| {
            serde::de::Error::custom(format!("`{s}` is not a whole number of seconds"))
        }),
        _ => Err(serde::de::Error::custom(
            "must be a whole number of seconds",
        )),
    }
}

fn default_query_after() -> u64 {
    60
}

fn default_max_queries() -> u32 {
    10
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CallbackSpec {
    /// Where the callback carries the reference the operation's answer gave.
    pub reference_pointer: String,
    /// How the callback says how it ended. Without it the callback only says that something
    /// changed (Pesapal's IPN): the hub asks (`query`) at once.
    #[serde(default)]
    pub result: Option<ResultSpec>,
    /// What the provider expects back, once the callback is durable (Pesapal: a JSON
    /// acknowledgement); default: Switchyard's own `202`.
    #[serde(default)]
    pub reply: Option<Reply>,
}

/// A reply to a callback: its status and body, a field map over the callback (its
/// `{"value": …}` sources are constants).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Reply {
    #[serde(default = "default_reply_status")]
    pub status: u16,
    pub body: FieldMap,
}

fn default_reply_status() -> u16 {
    200
}

/// How an operation ended, read from an answer or a callback.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Outcome {
    pub succeeded: bool,
    pub code: String,
    pub message: Option<String>,
}

impl ResultSpec {
    /// How `json` says the operation ended: `None` when it carries no code, or a code that
    /// means it has not ended yet.
    pub fn read(&self, json: &Value) -> Option<Outcome> {
        let code = text(json.pointer(&self.code_pointer)?)?;
        if self.pending.contains(&code) {
            return None;
        }
        Some(Outcome {
            succeeded: self.succeeded.contains(&code),
            message: self
                .message_pointer
                .as_ref()
                .and_then(|p| json.pointer(p))
                .and_then(text),
            code,
        })
    }
}

/// A string or a number as text.
pub fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// What an operation's call brought back.
#[derive(Debug, Clone)]
pub struct OperationAnswer {
    pub status: u16,
    /// The provider's answer (JSON, or XML read as JSON; other text as a string).
    pub body: Value,
    /// The provider's reference for what it started.
    pub reference: Option<String>,
    /// How it ended, when the answer says so.
    pub outcome: Option<Outcome>,
    /// e.g. `POST https://api.safaricom.co.ke/mpesa/stkpush/v1/processrequest`.
    pub request: String,
}

/// What `switchyard connectors show` and `GET /v1/connectors/{name}` say of an operation.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct OperationInfo {
    pub name: String,
    pub description: String,
    pub safe: bool,
    /// Input fields the caller must give.
    pub input: BTreeMap<String, String>,
    /// The answer only acknowledges; a callback or a query settles it.
    pub settles_later: bool,
}

impl OperationSpec {
    pub fn info(&self, name: &str) -> OperationInfo {
        OperationInfo {
            name: name.to_owned(),
            description: self.description.clone(),
            safe: self.safe,
            input: self.input.clone(),
            settles_later: self.settle.is_some(),
        }
    }

    /// The input fields the caller left out.
    pub fn missing_input(&self, input: &Value) -> Vec<String> {
        self.input
            .keys()
            .filter(|k| input.get(k.as_str()).is_none_or(Value::is_null))
            .cloned()
            .collect()
    }
}

/// Check a merchant declaration against the operations.
pub fn validate_merchant(
    m: &MerchantSpec,
    ops: &BTreeMap<String, OperationSpec>,
) -> Result<(), ConfigError> {
    match ops.get(&m.operation) {
        Some(op) if op.settle.is_some() && op.reference_input.is_some() => Ok(()),
        _ => Err(ConfigError::new(
            "settings.merchant.operation",
            format!(
                "`{}` must be an operation of this manifest settled later, whose reference is in its input",
                m.operation
            ),
        )),
    }
}

/// Check a manifest's operations (names, pointers, formats, what they refer to).
pub fn validate(ops: &BTreeMap<String, OperationSpec>) -> Result<(), ConfigError> {
    let pointer = |field: String, p: &str| {
        if p.starts_with('/') {
            Ok(())
        } else {
            Err(ConfigError::new(field, "a JSON pointer starts with `/`"))
        }
    };
    for (name, op) in ops {
        let at = |f: &str| format!("settings.operations.{name}.{f}");
        if !switchyard_core::is_valid_name(name) {
            return Err(ConfigError::new(
                format!("settings.operations.{name}"),
                "an operation name is a-z, 0-9, _ or -",
            ));
        }
        if reqwest::Method::from_bytes(op.method.to_ascii_uppercase().as_bytes()).is_err() {
            return Err(ConfigError::new(at("method"), "is not an HTTP method"));
        }
        if !op.path.starts_with('/') {
            return Err(ConfigError::new(at("path"), "starts with `/`"));
        }
        op.body
            .validate()
            .map_err(|e| ConfigError::new(at(&format!("body.{}", e.field)), e.reason))?;
        for (cname, c) in &op.computed {
            match c {
                Computed::Now { now, zone } => {
                    if now.is_empty() || chrono::format::StrftimeItems::new(now).parse().is_err() {
                        return Err(ConfigError::new(
                            at(&format!("computed.{cname}.now")),
                            "is not a strftime format (e.g. %Y%m%d%H%M%S)",
                        ));
                    }
                    if let Some(z) = zone
                        && z.parse::<chrono_tz::Tz>().is_err()
                    {
                        return Err(ConfigError::new(
                            at(&format!("computed.{cname}.zone")),
                            "is not an IANA time zone (e.g. Africa/Nairobi)",
                        ));
                    }
                }
                Computed::Base64 { base64: template } | Computed::Text { text: template } => {
                    for used in names_in(template, "{computed.") {
                        if !matches!(op.computed.get(&used), Some(Computed::Now { .. })) {
                            return Err(ConfigError::new(
                                at(&format!("computed.{cname}")),
                                format!(
                                    "`{{computed.{used}}}` is not a `now` value of this operation"
                                ),
                            ));
                        }
                    }
                }
            }
        }
        if let Some(p) = &op.reference_pointer {
            pointer(at("reference_pointer"), p)?;
        }
        if let Some(r) = &op.result {
            pointer(at("result.code_pointer"), &r.code_pointer)?;
        }
        if let Some(s) = &op.settle {
            if !switchyard_core::is_valid_name(&s.entity) {
                return Err(ConfigError::new(
                    at("settle.entity"),
                    "an entity name is a-z, 0-9, _ or -",
                ));
            }
            if op.reference_pointer.is_none() && op.reference_input.is_none() {
                return Err(ConfigError::new(
                    at("reference_pointer"),
                    "an operation settled later must say where its reference is (reference_pointer in the answer, or reference_input in the input)",
                ));
            }
            if let Some(cb) = &s.callback {
                pointer(
                    at("settle.callback.reference_pointer"),
                    &cb.reference_pointer,
                )?;
                match &cb.result {
                    Some(r) => pointer(at("settle.callback.result.code_pointer"), &r.code_pointer)?,
                    None if s.query.is_none() && s.expire_after_secs.is_none() => {
                        return Err(ConfigError::new(
                            at("settle.callback.result"),
                            "a callback that does not carry the result needs `settle.query` to ask for it (or `expire_after_secs`)",
                        ));
                    }
                    None => {}
                }
                if let Some(r) = &cb.reply {
                    r.body.validate().map_err(|e| {
                        ConfigError::new(
                            at(&format!("settle.callback.reply.body.{}", e.field)),
                            e.reason,
                        )
                    })?;
                    if !(200..=299).contains(&r.status) {
                        return Err(ConfigError::new(
                            at("settle.callback.reply.status"),
                            "a reply to a callback is a 2xx",
                        ));
                    }
                }
            }
            if let Some(q) = &s.query {
                match ops.get(q) {
                    Some(query) if query.safe && query.result.is_some() => {}
                    _ => {
                        return Err(ConfigError::new(
                            at("settle.query"),
                            format!(
                                "`{q}` must be a safe operation of this manifest with a `result`"
                            ),
                        ));
                    }
                }
            }
        }
    }
    Ok(())
}

/// The names used as `{prefix…}` in `s` (`{computed.timestamp}` → `timestamp`).
pub(crate) fn names_in(s: &str, prefix: &str) -> Vec<String> {
    s.split(prefix)
        .skip(1)
        .filter_map(|t| t.split_once('}').map(|(n, _)| n.to_owned()))
        .collect()
}

/// The operation's computed values at `now`; `fill` fills `{credentials.NAME}`.
pub fn compute(
    spec: &OperationSpec,
    now: chrono::DateTime<chrono::Utc>,
    fill: &dyn Fn(&str) -> String,
) -> serde_json::Map<String, Value> {
    use base64::Engine as _;
    let mut out = serde_json::Map::new();
    for (name, c) in &spec.computed {
        if let Computed::Now { now: fmt, zone } = c {
            let zone: chrono_tz::Tz = zone
                .as_deref()
                .and_then(|z| z.parse().ok())
                .unwrap_or(chrono_tz::UTC);
            out.insert(
                name.clone(),
                Value::String(now.with_timezone(&zone).format(fmt).to_string()),
            );
        }
    }
    let mut made = serde_json::Map::new();
    for (name, c) in &spec.computed {
        let (template, encode) = match c {
            Computed::Base64 { base64 } => (base64, true),
            Computed::Text { text } => (text, false),
            Computed::Now { .. } => continue,
        };
        let mut text = fill(template);
        for (n, v) in out.iter() {
            if let Some(v) = v.as_str() {
                text = text.replace(&format!("{{computed.{n}}}"), v);
            }
        }
        let value = if encode {
            base64::engine::general_purpose::STANDARD.encode(text)
        } else {
            text
        };
        made.insert(name.clone(), Value::String(value));
    }
    out.extend(made);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(v: Value) -> OperationSpec {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn the_stk_password_is_base64_of_shortcode_passkey_and_timestamp() {
        // Safaricom's sandbox values (developer.safaricom.co.ke › test credentials): short
        // code 174379 and its published passkey.
        let op = spec(json!({
            "method": "POST", "path": "/x",
            "computed": {
                "timestamp": {"now": "%Y%m%d%H%M%S", "zone": "Africa/Nairobi"},
                "password": {"base64": "174379{credentials.passkey}{computed.timestamp}"}
            }
        }));
        let now = chrono::DateTime::parse_from_rfc3339("2019-12-19T07:20:36Z")
            .unwrap()
            .to_utc();
        let got = compute(&op, now, &|s| {
            s.replace(
                "{credentials.passkey}",
                "bfb279f9aa9bdbcf158e97dd71a467cd2e0c893059b10f78e6b72ada1ed2c919",
            )
        });
        // Nairobi is UTC+3.
        assert_eq!(got["timestamp"], "20191219102036");
        // base64("174379" + passkey + "20191219102036"), computed independently with
        // `printf %s … | base64 -w0`.
        assert_eq!(
            got["password"],
            "MTc0Mzc5YmZiMjc5ZjlhYTliZGJjZjE1OGU5N2RkNzFhNDY3Y2QyZTBjODkzMDU5YjEwZjc4ZTZiNzJhZGExZWQyYzkxOTIwMTkxMjE5MTAyMDM2"
        );
    }

    #[test]
    fn results_are_read_as_text_and_pending_codes_are_not_an_end() {
        let r: ResultSpec = serde_json::from_value(json!({
            "code_pointer": "/ResultCode", "message_pointer": "/ResultDesc",
            "succeeded": ["0"], "pending": ["4999"]
        }))
        .unwrap();
        let ok = r
            .read(&json!({"ResultCode": 0, "ResultDesc": "done"}))
            .unwrap();
        assert!(ok.succeeded);
        assert_eq!(ok.message.as_deref(), Some("done"));
        let cancelled = r.read(&json!({"ResultCode": "1032"})).unwrap();
        assert!(!cancelled.succeeded);
        assert_eq!(cancelled.code, "1032");
        assert_eq!(r.read(&json!({"ResultCode": "4999"})), None);
        assert_eq!(r.read(&json!({"other": 1})), None);
    }

    #[test]
    fn operations_are_validated_with_the_field_named() {
        let ops =
            |v: Value| -> BTreeMap<String, OperationSpec> { serde_json::from_value(v).unwrap() };
        let err = |v: Value| validate(&ops(v)).unwrap_err().field;
        assert_eq!(
            err(json!({"charge": {"method": "POST", "path": "x"}})),
            "settings.operations.charge.path"
        );
        assert_eq!(
            err(json!({"charge": {"method": "POST", "path": "/x",
                "computed": {"p": {"base64": "{computed.t}"}}}})),
            "settings.operations.charge.computed.p"
        );
        assert_eq!(
            err(json!({"charge": {"method": "POST", "path": "/x",
                "computed": {"t": {"now": "%Y", "zone": "Mars/Olympus"}}}})),
            "settings.operations.charge.computed.t.zone"
        );
        let settle = json!({"entity": "payment", "query": "query",
            "callback": {"reference_pointer": "/r", "result": {"code_pointer": "/c", "succeeded": ["0"]}}});
        assert_eq!(
            err(json!({"charge": {"method": "POST", "path": "/x", "settle": settle}})),
            "settings.operations.charge.reference_pointer"
        );
        assert_eq!(
            err(
                json!({"charge": {"method": "POST", "path": "/x", "reference_pointer": "/r", "settle": settle}})
            ),
            "settings.operations.charge.settle.query"
        );
        assert!(
            validate(&ops(json!({
                "charge": {"method": "POST", "path": "/x", "reference_pointer": "/r", "settle": settle},
                "query": {"method": "POST", "path": "/q", "safe": true,
                          "result": {"code_pointer": "/c", "succeeded": ["0"]}}
            })))
            .is_ok()
        );
    }
}
