//! Field mapping: how an event's payload becomes the body a provider expects.
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// Where one target field's value comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum FieldSource {
    /// A JSON pointer into the payload, e.g. `"/customer/email"`. A pointer that finds
    /// nothing leaves the field out.
    Pointer(String),
    /// A fixed value only when the pointer finds something: `{"if":
    /// "/_switchyard/external_id", "value": true}` sends QuickBooks' `sparse` on updates only.
    When {
        #[serde(rename = "if")]
        when: String,
        value: Value,
    },
    /// A fixed value: `{"value": "EUR"}`.
    Value { value: Value },
    /// A value from the payload, transformed: a value map (`{"pointer": "/status", "map":
    /// {"paid": 1, "pending": 0}, "default": 0}`) and/or a format (`"format": "decimal:2"`,
    /// `"integer"`, `"string"`, `"date:%d-%m-%Y"` for an RFC 3339 or `YYYY-MM-DD` input).
    Transform {
        pointer: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        map: Option<Map<String, Value>>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        default: Option<Value>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        format: Option<String>,
    },
    /// Text with `{/pointer}` placeholders filled from the payload: `{"template":
    /// "Order {/id} for {/customer/name}"}` (a missing value leaves the field out).
    Template { template: String },
    /// Each element of the array at `each`, mapped by `map` (its pointers read the element):
    /// an invoice's lines. `{"each": "/lines", "map": {"Amount": "/total"}}`.
    Each { each: String, map: FieldMap },
    /// Another record, by the id the event's sender gives it, as the *target's* id for it
    /// (an invoice line's item, an order's customer):
    /// `{"ref": {"entity": "customer", "pointer": "/customer_id"}}`. The pointer reads the
    /// current object (the element, inside `each`).
    Ref {
        #[serde(rename = "ref")]
        reference: Reference,
    },
}

/// What a [`FieldSource::Ref`] points at.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reference {
    pub entity: String,
    pub pointer: String,
}

/// The target's id for the sender's `(entity, id)`, when the hub knows it.
pub type Resolve<'a> = &'a dyn Fn(&str, &str) -> Option<String>;

/// Target field path (dot-separated for nesting, e.g. `"customer.email"`) → source.
/// An empty map sends the payload as it is.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct FieldMap(pub BTreeMap<String, FieldSource>);

/// A field map that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("field `{field}`: {reason}")]
pub struct FieldMapError {
    pub field: String,
    pub reason: &'static str,
}

impl FieldMap {
    /// Check the map once, when it is configured.
    pub fn validate(&self) -> Result<(), FieldMapError> {
        for (field, src) in &self.0 {
            if field.is_empty() || field.split('.').any(str::is_empty) {
                return Err(FieldMapError {
                    field: field.clone(),
                    reason: "a target path has an empty segment",
                });
            }
            if let FieldSource::Pointer(p) = src
                && !(p.is_empty() || p.starts_with('/'))
            {
                return Err(FieldMapError {
                    field: field.clone(),
                    reason: "a JSON pointer starts with `/` (or is empty for the whole payload)",
                });
            }
            match src {
                FieldSource::Each { each, map } => {
                    if !each.starts_with('/') {
                        return Err(FieldMapError {
                            field: field.clone(),
                            reason: "`each` is a JSON pointer to an array (it starts with `/`)",
                        });
                    }
                    map.validate().map_err(|e| FieldMapError {
                        field: format!("{field}.{}", e.field),
                        reason: e.reason,
                    })?;
                }
                FieldSource::Transform {
                    pointer, format, ..
                } if !pointer.starts_with('/')
                    || format.as_deref().is_some_and(|f| !valid_format(f)) =>
                {
                    return Err(FieldMapError {
                        field: field.clone(),
                        reason: "a transform reads a JSON pointer; formats: decimal:N, integer, number, string, date:PATTERN",
                    });
                }
                FieldSource::When { when, .. } if !when.starts_with('/') => {
                    return Err(FieldMapError {
                        field: field.clone(),
                        reason: "`if` is a JSON pointer (it starts with `/`)",
                    });
                }
                FieldSource::Ref { reference }
                    if !reference.pointer.starts_with('/')
                        || !crate::is_valid_name(&reference.entity) =>
                {
                    return Err(FieldMapError {
                        field: field.clone(),
                        reason: "a reference names an entity (a-z, 0-9, _ or -) and a JSON pointer",
                    });
                }
                _ => {}
            }
        }
        // A path may not be both a value and a parent of another path.
        let keys: Vec<&String> = self.0.keys().collect();
        for w in keys.windows(2) {
            if w[1].starts_with(w[0].as_str()) && w[1].as_bytes().get(w[0].len()) == Some(&b'.') {
                return Err(FieldMapError {
                    field: w[1].clone(),
                    reason: "nested under a field that is itself mapped",
                });
            }
        }
        Ok(())
    }

    /// Build the request body from a payload (references left out).
    pub fn apply(&self, payload: &Value) -> Value {
        self.apply_with(payload, &|_, _| None)
    }

    /// Build the request body, references resolved by `resolve` (one it cannot resolve is
    /// left out; [`FieldMap::references`] lists them first so a job can wait for them).
    pub fn apply_with(&self, payload: &Value, resolve: Resolve<'_>) -> Value {
        if self.0.is_empty() {
            return payload.clone();
        }
        let mut out = Map::new();
        for (path, src) in &self.0 {
            let value = match src {
                FieldSource::Pointer(p) => match payload.pointer(p) {
                    Some(v) => v.clone(),
                    None => continue,
                },
                FieldSource::Value { value } => value.clone(),
                FieldSource::When { when, value } => match payload.pointer(when) {
                    Some(v) if !v.is_null() => value.clone(),
                    _ => continue,
                },
                FieldSource::Transform {
                    pointer,
                    map,
                    default,
                    format,
                } => {
                    let found = payload.pointer(pointer);
                    let mapped = match (map, found) {
                        (Some(m), Some(v)) => m
                            .get(
                                v.as_str()
                                    .map_or_else(|| v.to_string(), str::to_owned)
                                    .as_str(),
                            )
                            .cloned()
                            .or_else(|| default.clone()),
                        (Some(_), None) | (None, None) => default.clone(),
                        (None, Some(v)) => Some(v.clone()),
                    };
                    match mapped.and_then(|v| match format {
                        Some(f) => formatted(&v, f),
                        None => Some(v),
                    }) {
                        Some(v) => v,
                        None => continue,
                    }
                }
                FieldSource::Template { template } => match fill(template, payload) {
                    Some(t) => Value::String(t),
                    None => continue,
                },
                FieldSource::Each { each, map } => match payload.pointer(each) {
                    Some(Value::Array(items)) => {
                        Value::Array(items.iter().map(|i| map.apply_with(i, resolve)).collect())
                    }
                    _ => continue,
                },
                FieldSource::Ref { reference } => {
                    match payload.pointer(&reference.pointer).and_then(id_text) {
                        Some(id) => match resolve(&reference.entity, &id) {
                            Some(target_id) => Value::String(target_id),
                            None => continue,
                        },
                        None => continue,
                    }
                }
            };
            insert_path(&mut out, path, value);
        }
        Value::Object(out)
    }

    /// Every other record this payload's body refers to: (entity, the sender's id).
    pub fn references(&self, payload: &Value) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for src in self.0.values() {
            match src {
                FieldSource::Ref { reference } => {
                    if let Some(id) = payload.pointer(&reference.pointer).and_then(id_text) {
                        out.push((reference.entity.clone(), id));
                    }
                }
                FieldSource::Each { each, map } => {
                    if let Some(Value::Array(items)) = payload.pointer(each) {
                        for i in items {
                            out.extend(map.references(i));
                        }
                    }
                }
                _ => {}
            }
        }
        out.sort();
        out.dedup();
        out
    }
}

/// `value` in `format`; `None` when it cannot be (the field is then left out).
fn formatted(value: &Value, format: &str) -> Option<Value> {
    let text = || {
        value
            .as_str()
            .map_or_else(|| value.to_string(), str::to_owned)
    };
    let number = || match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        _ => None,
    };
    match format.split_once(':') {
        Some(("decimal", places)) => {
            let places: usize = places.parse().ok().filter(|p| *p <= 12)?;
            Some(Value::String(format!("{:.*}", places, number()?)))
        }
        Some(("date", pattern)) => {
            let t = text();
            let date = chrono::DateTime::parse_from_rfc3339(&t)
                .map(|d| d.date_naive())
                .or_else(|_| chrono::NaiveDate::parse_from_str(&t, "%Y-%m-%d"))
                .ok()?;
            let mut out = String::new();
            std::fmt::Write::write_fmt(&mut out, format_args!("{}", date.format(pattern))).ok()?;
            Some(Value::String(out))
        }
        None if format == "integer" => {
            let n = number()?;
            (n.fract() == 0.0 && n.abs() < 9.0e15).then(|| Value::from(n as i64))
        }
        // A whole number stays whole (`2`, not `2.0`: form bodies write it as text).
        None if format == "number" => {
            let n = number()?;
            if n.fract() == 0.0 && n.abs() < 9.0e15 {
                Some(Value::from(n as i64))
            } else {
                serde_json::Number::from_f64(n).map(Value::Number)
            }
        }
        None if format == "string" => Some(Value::String(text())),
        _ => None,
    }
}

/// A template with `{/pointer}` placeholders filled from `payload`.
fn fill(template: &str, payload: &Value) -> Option<String> {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find("{/") {
        out.push_str(&rest[..start]);
        let end = rest[start..].find('}')? + start;
        let v = payload.pointer(&rest[start + 1..end])?;
        out.push_str(&v.as_str().map_or_else(|| v.to_string(), str::to_owned));
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    Some(out)
}

/// Which formats a transform may name.
fn valid_format(f: &str) -> bool {
    match f.split_once(':') {
        Some(("decimal", p)) => p.parse::<usize>().is_ok_and(|p| p <= 12),
        Some(("date", p)) => !p.is_empty(),
        None => matches!(f, "integer" | "number" | "string"),
        _ => false,
    }
}

/// An id as text: a string, or a number written out.
fn id_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn insert_path(out: &mut Map<String, Value>, path: &str, value: Value) {
    let mut segments = path.split('.').peekable();
    let mut cur = out;
    while let Some(seg) = segments.next() {
        if segments.peek().is_none() {
            cur.insert(seg.to_owned(), value);
            return;
        }
        let next = cur
            .entry(seg.to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
        if !next.is_object() {
            *next = Value::Object(Map::new());
        }
        cur = next.as_object_mut().expect("just made an object");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn maps_nested_fields_and_constants() {
        let map: FieldMap = serde_json::from_value(json!({
            "reference": "/id",
            "customer.email": "/customer/email",
            "customer.name": "/customer/name",
            "currency": {"value": "EUR"},
            "missing": "/nope"
        }))
        .unwrap();
        map.validate().unwrap();
        let body = map.apply(&json!({"id": "ord-1", "customer": {"email": "a@b.c", "name": "Jo"}}));
        assert_eq!(
            body,
            json!({"reference": "ord-1", "currency": "EUR", "customer": {"email": "a@b.c", "name": "Jo"}})
        );
    }

    #[test]
    fn empty_map_passes_the_payload_through() {
        assert_eq!(FieldMap::default().apply(&json!({"a": 1})), json!({"a": 1}));
    }

    #[test]
    fn bad_maps_are_explained() {
        let map: FieldMap = serde_json::from_value(json!({"a": "id"})).unwrap();
        assert_eq!(map.validate().unwrap_err().field, "a");
        let map: FieldMap = serde_json::from_value(json!({"a": "/x", "a.b": "/y"})).unwrap();
        assert_eq!(map.validate().unwrap_err().field, "a.b");
        let map: FieldMap = serde_json::from_value(json!({"a..b": "/x"})).unwrap();
        assert!(map.validate().is_err());
    }

    #[test]
    fn line_items_and_references_become_the_targets_ids() {
        let map: FieldMap = serde_json::from_value(json!({
            "CustomerRef.value": {"ref": {"entity": "customer", "pointer": "/customer_id"}},
            "Line": {"each": "/lines", "map": {
                "Amount": "/total",
                "DetailType": {"value": "SalesItemLineDetail"},
                "SalesItemLineDetail.ItemRef.value": {"ref": {"entity": "product", "pointer": "/sku"}},
                "SalesItemLineDetail.Qty": "/qty"}}
        }))
        .unwrap();
        map.validate().unwrap();
        let invoice = json!({"id": "inv-1", "customer_id": 7,
            "lines": [{"sku": "A-1", "qty": 2, "total": "20.00"}, {"sku": "B-2", "qty": 1, "total": "5.00"}]});
        assert_eq!(
            map.references(&invoice),
            [
                ("customer".to_owned(), "7".to_owned()),
                ("product".into(), "A-1".into()),
                ("product".into(), "B-2".into())
            ]
        );
        let ids = |entity: &str, id: &str| match (entity, id) {
            ("customer", "7") => Some("58".to_owned()),
            ("product", "A-1") => Some("11".to_owned()),
            ("product", "B-2") => Some("12".to_owned()),
            _ => None,
        };
        assert_eq!(
            map.apply_with(&invoice, &ids),
            json!({"CustomerRef": {"value": "58"}, "Line": [
                {"Amount": "20.00", "DetailType": "SalesItemLineDetail",
                 "SalesItemLineDetail": {"ItemRef": {"value": "11"}, "Qty": 2}},
                {"Amount": "5.00", "DetailType": "SalesItemLineDetail",
                 "SalesItemLineDetail": {"ItemRef": {"value": "12"}, "Qty": 1}}]})
        );
        let bad: FieldMap =
            serde_json::from_value(json!({"Line": {"each": "/lines", "map": {"x": "y"}}})).unwrap();
        assert_eq!(bad.validate().unwrap_err().field, "Line.x");
    }

    #[test]
    fn value_maps_formats_and_templates() {
        let map: FieldMap = serde_json::from_value(json!({
            "status": {"pointer": "/status", "map": {"paid": 1, "pending": 0}, "default": 0},
            "price": {"pointer": "/total", "format": "decimal:2"},
            "qty": {"pointer": "/qty", "format": "integer"},
            "date": {"pointer": "/created", "format": "date:%d-%m-%Y"},
            "notes": {"template": "Order {/id} for {/customer/name}"},
            "missing": {"template": "{/nope}"}
        }))
        .unwrap();
        map.validate().unwrap();
        let out = map.apply(
            &json!({"id": "o-1", "status": "refunded", "total": "12.5", "qty": 3.0,
            "created": "2026-11-20T09:00:00+00:00", "customer": {"name": "Ana"}}),
        );
        assert_eq!(
            out,
            json!({"status": 0, "price": "12.50", "qty": 3, "date": "20-11-2026",
                   "notes": "Order o-1 for Ana"})
        );
        let bad: FieldMap =
            serde_json::from_value(json!({"x": {"pointer": "/a", "format": "roman"}})).unwrap();
        assert!(bad.validate().is_err());
    }

    #[test]
    fn a_value_can_depend_on_another_being_there() {
        let m: FieldMap = serde_json::from_value(json!({
            "sparse": {"if": "/_switchyard/external_id", "value": true},
            "Id": "/_switchyard/external_id",
            "DisplayName": "/name"
        }))
        .unwrap();
        m.validate().unwrap();
        let none: Resolve<'_> = &|_, _| None;
        assert_eq!(
            m.apply_with(&json!({"name": "Ana"}), none),
            json!({"DisplayName": "Ana"})
        );
        assert_eq!(
            m.apply_with(
                &json!({"name": "Ana", "_switchyard": {"external_id": "58"}}),
                none
            ),
            json!({"DisplayName": "Ana", "Id": "58", "sparse": true})
        );
        let bad: FieldMap =
            serde_json::from_value(json!({"x": {"if": "nope", "value": 1}})).unwrap();
        assert!(bad.validate().is_err());
    }
}
