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
    /// A fixed value: `{"value": "EUR"}`.
    Value { value: Value },
}

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

    /// Build the request body from a payload.
    pub fn apply(&self, payload: &Value) -> Value {
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
            };
            insert_path(&mut out, path, value);
        }
        Value::Object(out)
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
}
