//! What a route says beyond "from here to there": which events it lets through (a filter on
//! payload values), what to do while a target is not active, how to settle a conflict
//! between two systems' changes, and whether a create first looks for an existing record.
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;

string_enum!(
    /// Two systems changed one record at about the same time: whose change wins.
    #[derive(Default)]
    ConflictPolicy {
        /// The later change wins everywhere (by when the hub received it; within one
        /// system, by its version).
        #[default]
        LastWriterWins => "last_writer_wins",
        /// The route's source wins: its changes are applied over the target's.
        SourceWins => "source_wins",
        /// The route's target wins: a target's own change that the hub has not overwritten
        /// is never overwritten by this route.
        TargetWins => "target_wins",
    }
);

string_enum!(
    /// A job whose target is not `active`.
    #[derive(Default)]
    WhenInactive {
        /// Kept (`held`) and released in order when the target is active again.
        #[default]
        Hold => "hold",
        /// Dropped, on purpose: the job is recorded as `skipped`.
        Drop => "drop",
    }
);

/// The options a route gives each of its jobs (carried in the envelope, so a job keeps the
/// options it was routed with).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct RouteOptions {
    #[serde(default)]
    pub conflict: ConflictPolicy,
    #[serde(default)]
    pub when_inactive: WhenInactive,
    /// Before creating, look the record up at the target by its natural key (the
    /// connector's `lookup`) and update it when found.
    #[serde(default)]
    pub link_existing: bool,
    /// Values the route gives its jobs' bodies, at `/_switchyard/route/<name>`: what differs
    /// per source at the same target (the customer each retailer is at the wholesaler).
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub values: serde_json::Map<String, Value>,
}

impl RouteOptions {
    pub fn is_default(&self) -> bool {
        *self == RouteOptions::default()
    }
}

/// Which events a route lets through: each JSON pointer into the event's data must hold one
/// of its values (`{"/status": ["paid", "completed"]}`). Empty: every event.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RouteFilter(pub BTreeMap<String, Vec<Value>>);

/// Why a filter is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct FilterError(pub String);

impl RouteFilter {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Read and check a filter: pointers start with `/`, each lists at least one value.
    pub fn parse(v: &Value) -> Result<RouteFilter, FilterError> {
        let f: RouteFilter = serde_json::from_value(v.clone()).map_err(|_| {
            FilterError(
                "a filter is an object of JSON pointers to lists of accepted values, e.g. {\"/status\": [\"paid\"]}"
                    .into(),
            )
        })?;
        for (pointer, values) in &f.0 {
            if !pointer.starts_with('/') {
                return Err(FilterError(format!(
                    "`{pointer}` is not a JSON pointer (it starts with `/`)"
                )));
            }
            if values.is_empty() {
                return Err(FilterError(format!("`{pointer}` lists no accepted value")));
            }
        }
        Ok(f)
    }

    /// `Ok` if the data passes; otherwise why not, for the operator.
    pub fn check(&self, data: &Value) -> Result<(), String> {
        for (pointer, accepted) in &self.0 {
            match data.pointer(pointer) {
                Some(v) if accepted.iter().any(|a| same(a, v)) => {}
                Some(v) => {
                    return Err(format!(
                        "filtered out: {pointer} is {v}, not one of {}",
                        Value::Array(accepted.clone())
                    ));
                }
                None => return Err(format!("filtered out: the event has no {pointer}")),
            }
        }
        Ok(())
    }
}

/// Equal values; a number and its text (`2` and `"2"`) are the same here, since senders
/// disagree on which to send.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::String(s), Value::Number(n)) | (Value::Number(n), Value::String(s)) => {
            *s == n.to_string()
        }
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn filters_let_through_what_they_list() {
        let f = RouteFilter::parse(&json!({"/status": ["paid", "completed"]})).unwrap();
        assert!(f.check(&json!({"status": "paid"})).is_ok());
        assert!(f.check(&json!({"status": "completed", "x": 1})).is_ok());
        let why = f.check(&json!({"status": "pending"})).unwrap_err();
        assert!(why.contains("/status is \"pending\""), "{why}");
        assert!(f.check(&json!({})).unwrap_err().contains("no /status"));
        let n = RouteFilter::parse(&json!({"/total_pages": [2]})).unwrap();
        assert!(n.check(&json!({"total_pages": "2"})).is_ok());
        assert!(RouteFilter::default().check(&json!(null)).is_ok());
    }

    #[test]
    fn bad_filters_say_why() {
        assert!(RouteFilter::parse(&json!({"status": ["x"]})).is_err());
        assert!(RouteFilter::parse(&json!({"/status": []})).is_err());
        assert!(RouteFilter::parse(&json!(["x"])).is_err());
    }

    #[test]
    fn options_default_and_round_trip() {
        assert!(RouteOptions::default().is_default());
        let o: RouteOptions = serde_json::from_value(json!({"conflict": "target_wins"})).unwrap();
        assert_eq!(o.conflict, ConflictPolicy::TargetWins);
        assert_eq!(o.when_inactive, WhenInactive::Hold);
        assert!("sideways".parse::<ConflictPolicy>().is_err());
    }
}
