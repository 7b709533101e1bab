//! The message body of every job (JSON, versioned). AMQP properties and headers carry the
//! delivery facts (attempt, first received, last error); the body carries the event.
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{Action, Direction};

/// The envelope format this build writes. Readers accept this version only; a message of
/// another version is dead-lettered as `malformed` with a message that says so.
pub const ENVELOPE_VERSION: u32 = 1;

/// One event for one target integration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// Format version, [`ENVELOPE_VERSION`].
    pub v: u32,
    /// The job id, derived from the idempotency key ([`crate::ids::job_id`]).
    pub id: Uuid,
    /// (event id, target, action), hashed ([`crate::ids::idempotency_key`]).
    pub idempotency_key: String,
    pub tenant: String,
    /// The target integration: the account this job acts on.
    pub integration_id: Uuid,
    /// The target's provider; also the first word of the routing key.
    pub provider: String,
    /// The integration the event came from, if it came from a webhook.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_integration_id: Option<Uuid>,
    /// The sender's event id (or `sha256:<body digest>` when it sent none).
    pub event_id: String,
    /// The sender's event name (`created`, `updated`, `deleted`, …).
    pub event: String,
    pub entity: String,
    pub action: Action,
    pub direction: Direction,
    /// The tenant's own id for the entity.
    pub internal_id: String,
    /// A monotonic version of the entity at the source (a number, or a timestamp in
    /// microseconds); an event older than the last applied one is `stale`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_version: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub occurred_at: Option<DateTime<Utc>>,
    pub received_at: DateTime<Utc>,
    /// The event's data, as the sender sent it.
    pub payload: serde_json::Value,
    /// The sync run that enqueued the job, if a sync did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sync_run_id: Option<Uuid>,
    /// What the route that made this job says (conflicts, inactive targets, linking).
    #[serde(default, skip_serializing_if = "crate::RouteOptions::is_default")]
    pub route: crate::RouteOptions,
    /// W3C `traceparent` of the request that produced the job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<String>,
}

/// Why a message body is not an envelope this build can process.
#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    #[error("the message is not a Switchyard envelope: {0}")]
    Json(#[from] serde_json::Error),
    #[error(
        "envelope version {found} is not supported (this worker reads version {ENVELOPE_VERSION})"
    )]
    Version { found: u32 },
    #[error("the envelope's routing fields are invalid: {0}")]
    Invalid(&'static str),
}

impl Envelope {
    /// Parse and check a message body.
    pub fn from_slice(body: &[u8]) -> Result<Envelope, EnvelopeError> {
        let env: Envelope = serde_json::from_slice(body)?;
        if env.v != ENVELOPE_VERSION {
            return Err(EnvelopeError::Version { found: env.v });
        }
        if !crate::is_valid_name(&env.provider) {
            return Err(EnvelopeError::Invalid("provider"));
        }
        if !crate::is_valid_name(&env.entity) {
            return Err(EnvelopeError::Invalid("entity"));
        }
        if env.internal_id.is_empty() {
            return Err(EnvelopeError::Invalid("internal_id"));
        }
        Ok(env)
    }

    pub fn to_vec(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("an envelope always serialises")
    }

    /// `{provider}.{entity}.{action}`, the key on the jobs exchange.
    pub fn routing_key(&self) -> String {
        routing_key(&self.provider, &self.entity, self.action)
    }
}

/// `{provider}.{entity}.{action}`.
pub fn routing_key(provider: &str, entity: &str, action: Action) -> String {
    format!("{provider}.{entity}.{action}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Envelope {
        Envelope {
            v: ENVELOPE_VERSION,
            id: Uuid::from_u128(1),
            idempotency_key: "k".into(),
            tenant: "acme".into(),
            integration_id: Uuid::from_u128(2),
            provider: "rest".into(),
            source_integration_id: None,
            event_id: "evt".into(),
            event: "created".into(),
            entity: "order".into(),
            action: Action::Upsert,
            direction: Direction::Export,
            internal_id: "ord-1".into(),
            source_version: Some(3),
            occurred_at: None,
            received_at: DateTime::from_timestamp(0, 0).unwrap(),
            payload: serde_json::json!({"id": "ord-1"}),
            sync_run_id: None,
            route: Default::default(),
            trace: None,
        }
    }

    #[test]
    fn round_trips() {
        let e = sample();
        assert_eq!(Envelope::from_slice(&e.to_vec()).unwrap(), e);
        assert_eq!(e.routing_key(), "rest.order.upsert");
    }

    #[test]
    fn rejects_other_versions_and_garbage() {
        let mut e = sample();
        e.v = 9;
        let err = Envelope::from_slice(&e.to_vec()).unwrap_err();
        assert!(err.to_string().contains("version 9"), "{err}");
        assert!(matches!(
            Envelope::from_slice(b"{not json"),
            Err(EnvelopeError::Json(_))
        ));
        let mut e = sample();
        e.entity = "Order.Created".into();
        assert!(matches!(
            Envelope::from_slice(&e.to_vec()),
            Err(EnvelopeError::Invalid("entity"))
        ));
    }
}
