//! Turning a sender's JSON body into the facts Switchyard routes on: which entity, which
//! event, the sender's id for the entity, the event id, the version. Each integration says
//! where those facts are in its webhooks with an [`InboundSpec`].
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Where one fact is: a JSON pointer into the body, a request header, or a fixed value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ValueSource {
    /// An RFC 6901 JSON pointer into the body, e.g. `/data/id`.
    Pointer(String),
    /// A request header, e.g. `X-Event-Id`.
    Header(String),
    /// The same value for every webhook, e.g. `order`.
    Value(String),
}

/// How an integration's webhooks are read. Every field has a default that suits a body of
/// the form `{"id": "evt_1", "entity": "order", "event": "created", "data": {"id": "ord-1", …}}`
/// as well as a bare entity `{"id": "ord-1", …}` with a fixed `entity`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InboundSpec {
    /// The sender's event id. Default: the `Idempotency-Key`, `X-Event-Id` or `webhook-id`
    /// header, else the SHA-256 of the body (so an identical re-send is a duplicate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_id: Option<ValueSource>,
    /// Default: pointer `/entity`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entity: Option<ValueSource>,
    /// Default: pointer `/event`, else `received`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<ValueSource>,
    /// The tenant's id for the entity. Default: `id` inside `data`, else `/id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub internal_id: Option<ValueSource>,
    /// A number or a timestamp that orders versions of the entity. Default: none (no
    /// staleness check).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<ValueSource>,
    /// When the event happened (RFC 3339). Default: none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub occurred_at: Option<ValueSource>,
    /// A pointer to the entity's data inside the body. Default: `/data` when the body has
    /// it, else the whole body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    /// Event names that mean the entity was deleted. Default: `deleted`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delete_events: Option<Vec<String>>,
}

/// The facts of one inbound webhook.
#[derive(Debug, Clone, PartialEq)]
pub struct InboundEvent {
    pub event_id: String,
    pub entity: String,
    pub event: String,
    pub internal_id: String,
    pub source_version: Option<i64>,
    pub occurred_at: Option<DateTime<Utc>>,
    pub payload: Value,
    pub is_delete: bool,
}

/// A body that lacks a fact its integration's [`InboundSpec`] requires.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct InboundError {
    pub field: &'static str,
    pub reason: String,
}

fn err(field: &'static str, reason: impl Into<String>) -> InboundError {
    InboundError {
        field,
        reason: reason.into(),
    }
}

const DEFAULT_EVENT_ID_HEADERS: [&str; 3] = ["idempotency-key", "x-event-id", "webhook-id"];

impl InboundSpec {
    /// Read one webhook. `header` looks a request header up by name (case-insensitive);
    /// `delivery_id` is the sender's delivery id from its signature scheme, the event id
    /// unless the spec says where else it is.
    pub fn normalize(
        &self,
        mut owned: Value,
        raw_body: &[u8],
        header: &dyn Fn(&str) -> Option<String>,
        delivery_id: Option<&str>,
    ) -> Result<InboundEvent, InboundError> {
        let body = &owned;
        if !body.is_object() {
            return Err(err("body", "expected a JSON object"));
        }
        let event_id = match &self.event_id {
            Some(src) => required(src, "event_id", body, header)?,
            None => delivery_id
                .filter(|d| !d.is_empty())
                .map(str::to_owned)
                .or_else(|| {
                    DEFAULT_EVENT_ID_HEADERS
                        .iter()
                        .find_map(|h| header(h).filter(|v| !v.is_empty()))
                })
                .unwrap_or_else(|| crate::ids::content_event_id(raw_body)),
        };
        if event_id.len() > 255 {
            return Err(err("event_id", "longer than 255 characters"));
        }

        let entity = match &self.entity {
            Some(src) => required(src, "entity", body, header)?,
            None => required(
                &ValueSource::Pointer("/entity".into()),
                "entity",
                body,
                header,
            )?,
        };
        if !crate::is_valid_name(&entity) {
            return Err(err(
                "entity",
                format!("`{entity}` is not a valid entity name (use a-z, 0-9, _ or -)"),
            ));
        }

        let event = match &self.event {
            Some(src) => required(src, "event", body, header)?,
            None => optional(
                &ValueSource::Pointer("/event".into()),
                "event",
                body,
                header,
            )?
            .unwrap_or_else(|| "received".to_owned()),
        };

        // Where the payload is; it is moved out of the body once everything else is read.
        let payload = match &self.data {
            Some(ptr) => body
                .pointer(ptr)
                .ok_or_else(|| err("data", format!("the body has no value at `{ptr}`")))?,
            None => match body.get("data") {
                Some(d) if d.is_object() => d,
                _ => body,
            },
        };

        let internal_id = match &self.internal_id {
            Some(src) => required(src, "internal_id", body, header)?,
            None => match payload.get("id").map(scalar_text) {
                Some(Some(id)) => id,
                _ => required(
                    &ValueSource::Pointer("/id".into()),
                    "internal_id",
                    body,
                    header,
                )?,
            },
        };
        if internal_id.is_empty() || internal_id.len() > 255 {
            return Err(err("internal_id", "must be 1 to 255 characters"));
        }

        let source_version = match &self.version {
            Some(src) => Some(version_of(src, body, header)?),
            None => None,
        };
        let occurred_at = match &self.occurred_at {
            Some(src) => match optional(src, "occurred_at", body, header)? {
                Some(text) => Some(
                    DateTime::parse_from_rfc3339(&text)
                        .map_err(|e| err("occurred_at", format!("`{text}` is not RFC 3339: {e}")))?
                        .with_timezone(&Utc),
                ),
                None => None,
            },
            None => None,
        };
        let is_delete = match &self.delete_events {
            Some(names) => names.iter().any(|n| n == &event),
            None => event == "deleted" || event.ends_with(".deleted"),
        };
        let payload = match &self.data {
            Some(ptr) => owned.pointer_mut(ptr).map(Value::take).unwrap_or_default(),
            None if owned.get("data").is_some_and(Value::is_object) => owned["data"].take(),
            None => owned,
        };
        Ok(InboundEvent {
            event_id,
            entity,
            event,
            internal_id,
            source_version,
            occurred_at,
            payload,
            is_delete,
        })
    }
}

fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn optional(
    src: &ValueSource,
    field: &'static str,
    body: &Value,
    header: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<String>, InboundError> {
    match src {
        ValueSource::Value(v) => Ok(Some(v.clone())),
        ValueSource::Header(h) => Ok(header(h)),
        ValueSource::Pointer(p) => match body.pointer(p) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => scalar_text(v).map(Some).ok_or_else(|| {
                err(
                    field,
                    format!("the value at `{p}` is not a string or number"),
                )
            }),
        },
    }
}

fn required(
    src: &ValueSource,
    field: &'static str,
    body: &Value,
    header: &dyn Fn(&str) -> Option<String>,
) -> Result<String, InboundError> {
    optional(src, field, body, header)?.ok_or_else(|| match src {
        ValueSource::Pointer(p) => err(field, format!("the body has no value at `{p}`")),
        ValueSource::Header(h) => err(field, format!("the `{h}` header is missing")),
        ValueSource::Value(_) => err(field, "missing"),
    })
}

fn version_of(
    src: &ValueSource,
    body: &Value,
    header: &dyn Fn(&str) -> Option<String>,
) -> Result<i64, InboundError> {
    if let ValueSource::Pointer(p) = src
        && let Some(Value::Number(n)) = body.pointer(p)
    {
        return n
            .as_i64()
            .filter(|v| (0..=MAX_VERSION).contains(v))
            .ok_or_else(|| {
                err(
                    "version",
                    format!("the number at `{p}` is not a whole number from 0 to 2^53"),
                )
            });
    }
    let text = required(src, "version", body, header)?;
    parse_version(&text).ok_or_else(|| {
        err(
            "version",
            format!(
                "`{text}` is neither a whole number from 0 to 2^53 nor an RFC 3339 timestamp after 1970"
            ),
        )
    })
}

/// The largest version accepted: 2^53 (a JavaScript-safe integer; a timestamp in
/// microseconds reaches it in the year 2255). A larger one (`i64::MAX`) would make every
/// later change of the entity look stale, for ever.
pub const MAX_VERSION: i64 = 1 << 53;

/// A version from text: a whole number from 0 to [`MAX_VERSION`], or an RFC 3339 timestamp
/// (after 1970) as microseconds.
pub fn parse_version(text: &str) -> Option<i64> {
    let v = match text.parse::<i64>() {
        Ok(n) => n,
        Err(_) => DateTime::parse_from_rfc3339(text).ok()?.timestamp_micros(),
    };
    (0..=MAX_VERSION).contains(&v).then_some(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn no_headers(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn envelope_style_body_with_defaults() {
        let body = json!({"id": "evt_1", "entity": "order", "event": "created", "data": {"id": 42, "total": 3}});
        let raw = serde_json::to_vec(&body).unwrap();
        let ev = InboundSpec::default()
            .normalize(body, &raw, &no_headers, None)
            .unwrap();
        assert_eq!(ev.entity, "order");
        assert_eq!(ev.event, "created");
        assert_eq!(ev.internal_id, "42");
        assert_eq!(ev.payload, json!({"id": 42, "total": 3}));
        assert!(ev.event_id.starts_with("sha256:"));
        assert!(!ev.is_delete);
    }

    #[test]
    fn bare_entity_with_fixed_entity_header_event_id_and_timestamp_version() {
        let spec: InboundSpec = serde_json::from_value(json!({
            "entity": {"value": "order"},
            "event_id": {"header": "X-Delivery"},
            "version": {"pointer": "/updated_at"}
        }))
        .unwrap();
        let body = json!({"id": "ord-1", "updated_at": "2024-05-01T12:00:00Z"});
        let ev = spec
            .normalize(
                body,
                b"",
                &|h| (h == "X-Delivery").then(|| "d-9".to_owned()),
                Some("ignored"),
            )
            .unwrap();
        assert_eq!(ev.event_id, "d-9");
        assert_eq!(ev.internal_id, "ord-1");
        assert_eq!(ev.event, "received");
        assert_eq!(ev.source_version, Some(1_714_564_800_000_000));
    }

    #[test]
    fn the_payload_is_what_the_spec_points_at_or_data_or_the_whole_body() {
        let at: InboundSpec = serde_json::from_value(json!({"data": "/resource/order"})).unwrap();
        let body = json!({"entity": "order", "resource": {"order": {"id": "o-1", "n": 2}}, "data": {"x": 1}});
        let ev = at.normalize(body, b"", &no_headers, None).unwrap();
        assert_eq!(ev.payload, json!({"id": "o-1", "n": 2}));
        assert_eq!(ev.internal_id, "o-1");
        let e = at
            .normalize(json!({"entity": "order", "id": 1}), b"", &no_headers, None)
            .unwrap_err();
        assert_eq!(e.field, "data");

        // `data` that is not an object: the whole body is the payload.
        let body = json!({"entity": "order", "id": "o-2", "data": "text"});
        let ev = InboundSpec::default()
            .normalize(body.clone(), b"", &no_headers, None)
            .unwrap();
        assert_eq!(ev.payload, body);
        assert_eq!(ev.internal_id, "o-2");
    }

    #[test]
    fn missing_facts_are_named() {
        let body = json!({"id": "x"});
        let e = InboundSpec::default()
            .normalize(body, b"", &no_headers, None)
            .unwrap_err();
        assert_eq!(e.to_string(), "entity: the body has no value at `/entity`");
        let e = InboundSpec::default()
            .normalize(
                json!({"entity": "Bad Name", "id": 1}),
                b"",
                &no_headers,
                None,
            )
            .unwrap_err();
        assert_eq!(e.field, "entity");
        let e = InboundSpec::default()
            .normalize(json!([1, 2]), b"", &no_headers, None)
            .unwrap_err();
        assert_eq!(e.field, "body");
    }

    #[test]
    fn versions_and_deletes() {
        let spec: InboundSpec =
            serde_json::from_value(json!({"version": {"pointer": "/v"}})).unwrap();
        let body = json!({"entity": "product", "event": "deleted", "id": "p1", "v": 7});
        let ev = spec
            .normalize(body, b"", &no_headers, Some("evt_from_signature"))
            .unwrap();
        assert_eq!(ev.source_version, Some(7));
        assert_eq!(
            ev.event_id, "evt_from_signature",
            "a scheme's delivery id is the event id"
        );
        assert!(ev.is_delete);
        let bad = json!({"entity": "product", "id": "p1", "v": "soon"});
        assert_eq!(
            spec.normalize(bad, b"", &no_headers, None)
                .unwrap_err()
                .field,
            "version"
        );
        assert_eq!(parse_version("12"), Some(12));
        assert_eq!(parse_version("1970-01-01T00:00:01Z"), Some(1_000_000));
    }

    #[test]
    fn unknown_spec_fields_are_refused() {
        let r: Result<InboundSpec, _> = serde_json::from_value(json!({"entitty": {"value": "x"}}));
        assert!(
            r.unwrap_err()
                .to_string()
                .contains("unknown field `entitty`")
        );
    }

    #[test]
    fn versions_beyond_what_a_clock_or_counter_gives_are_refused() {
        assert_eq!(parse_version("42"), Some(42));
        assert!(parse_version("2026-11-26T10:00:00Z").is_some());
        // i64::MAX would make every later change of the entity look stale, for ever.
        assert_eq!(parse_version(&i64::MAX.to_string()), None);
        assert_eq!(parse_version("-5"), None);
        assert_eq!(parse_version(&MAX_VERSION.to_string()), Some(MAX_VERSION));
    }
}
