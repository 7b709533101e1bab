//! An event from an integration, delivered onward through its routes: which targets take it
//! (entity, event, filter, a route that drops jobs for an inactive target) and one job
//! envelope per target. Ingest uses both for webhooks; [`publish`] does the whole of it for
//! events the hub makes itself (a settled payment).
use chrono::{DateTime, Utc};
use serde_json::Value;
use switchyard_broker::{Broker, OutgoingMessage};
use switchyard_core::{
    Action, Direction, ENVELOPE_VERSION, Envelope, IntegrationStatus, RouteFilter, WhenInactive,
    ids,
};
use switchyard_store::{QueuedJob, RouteTarget, Store, StoreError};
use uuid::Uuid;

/// What an event is, as routes and jobs see it.
#[derive(Debug, Clone)]
pub struct Event<'a> {
    pub entity: &'a str,
    pub event: &'a str,
    pub event_id: &'a str,
    pub internal_id: &'a str,
    pub is_delete: bool,
    pub source_version: Option<i64>,
    pub occurred_at: Option<DateTime<Utc>>,
    pub payload: &'a Value,
}

/// Every matching route's targets, and those left out with why (target name, reason): a
/// filter, or a route that drops jobs for its inactive target. Other inactive targets get
/// the job too: the worker holds it until the target is active.
pub fn matching<'t>(
    targets: &'t [RouteTarget],
    entity: &str,
    event: &str,
    payload: &Value,
) -> (Vec<&'t RouteTarget>, Vec<(String, String)>) {
    let mut active = Vec::new();
    let mut skipped = Vec::new();
    for t in targets
        .iter()
        .filter(|t| t.entity == entity && (t.event == "*" || t.event == event))
    {
        let filtered = RouteFilter::parse(&t.filter)
            .map_err(|e| format!("the route's filter is not valid: {e}"))
            .and_then(|f| f.check(payload));
        if let Err(reason) = filtered {
            skipped.push((t.target_name.clone(), reason));
        } else if t.status != IntegrationStatus::Active && t.when_inactive == WhenInactive::Drop {
            skipped.push((
                t.target_name.clone(),
                format!(
                    "the target is {} and the route drops jobs for inactive targets",
                    t.status
                ),
            ));
        } else {
            active.push(t);
        }
    }
    (active, skipped)
}

/// One job envelope per target for an event from `source`, each with the event's payload
/// (`payload`, the event's own, moved into the last envelope and copied for the others;
/// `event.payload` is not read).
pub fn envelopes(
    source: Uuid,
    event: &Event<'_>,
    payload: Value,
    targets: &[&RouteTarget],
    received_at: DateTime<Utc>,
    trace: &str,
) -> Vec<Envelope> {
    let action = if event.is_delete {
        Action::Delete
    } else {
        Action::Upsert
    };
    let mut payload = Some(payload);
    targets
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let payload = if i + 1 == targets.len() {
                payload.take()
            } else {
                payload.clone()
            }
            .unwrap_or_default();
            let key = ids::idempotency_key(Some(source), event.event_id, t.target_id, action);
            Envelope {
                v: ENVELOPE_VERSION,
                id: ids::job_id(&key),
                idempotency_key: key,
                tenant: t.tenant.clone(),
                integration_id: t.target_id,
                provider: t.provider.clone(),
                source_integration_id: Some(source),
                event_id: event.event_id.to_owned(),
                event: event.event.to_owned(),
                entity: event.entity.to_owned(),
                action,
                direction: Direction::Export,
                internal_id: event.internal_id.to_owned(),
                source_version: event.source_version,
                occurred_at: event.occurred_at,
                received_at,
                payload,
                sync_run_id: None,
                route: t.options(),
                trace: Some(trace.to_owned()),
            }
        })
        .collect()
}

#[derive(Debug, thiserror::Error)]
pub enum DeliverError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the broker did not take the event's jobs: {0}")]
    Broker(String),
}

/// What [`publish`] did.
#[derive(Debug, Clone, Default)]
pub struct Delivered {
    /// One job per target that takes the event (the same ids when it was delivered before).
    pub jobs: Vec<Uuid>,
    /// Targets whose route did not take it, and why.
    pub skipped: Vec<(String, String)>,
}

/// Deliver an event from `source` through its routes: its jobs published with the broker's
/// confirm, once (jobs that exist are not published again), and recorded as `queued`.
pub async fn publish(
    store: &Store,
    broker: &Broker,
    source: Uuid,
    event: &Event<'_>,
) -> Result<Delivered, DeliverError> {
    let targets = store.route_targets(source).await?;
    let (active, skipped) = matching(&targets, event.entity, event.event, event.payload);
    let envelopes = envelopes(
        source,
        event,
        event.payload.clone(),
        &active,
        Utc::now(),
        &new_traceparent(),
    );
    let ids: Vec<Uuid> = envelopes.iter().map(|e| e.id).collect();
    if envelopes.is_empty() {
        return Ok(Delivered { jobs: ids, skipped });
    }
    let existing = store.existing_jobs(&ids).await?;
    let fresh: Vec<&Envelope> = envelopes
        .iter()
        .filter(|e| !existing.contains(&e.id))
        .collect();
    if !fresh.is_empty() {
        let messages: Vec<OutgoingMessage> =
            fresh.iter().map(|e| OutgoingMessage::job(e)).collect();
        broker
            .publish(&messages)
            .await
            .map_err(|e| DeliverError::Broker(e.to_string()))?;
        let queued: Vec<QueuedJob<'_>> = fresh.iter().map(|e| QueuedJob { envelope: e }).collect();
        if let Err(e) = store.record_queued(&queued).await {
            // The jobs are durable in the broker; workers will create their rows.
            tracing::warn!(error = %e, "jobs enqueued but not yet recorded; workers will record them");
        }
    }
    Ok(Delivered { jobs: ids, skipped })
}

/// A new W3C trace context, for jobs that continue no sender's trace.
pub fn new_traceparent() -> String {
    let trace = Uuid::new_v4().simple().to_string();
    let span = &Uuid::new_v4().simple().to_string()[..16];
    format!("00-{trace}-{span}-01")
}
