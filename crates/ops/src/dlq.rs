//! Dead letters: each provider's dead-letter queue holds the messages, with their reason and
//! last error in `sy-*` headers; the jobs table holds their history. Filters apply to the
//! messages themselves, so a message whose body cannot be read (reason `malformed`) can be
//! listed and purged too.
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::time::Duration;
use switchyard_broker::{
    Broker, BrokerError, Delivery, Exchange, OutgoingMessage, PublishError, header,
};
use switchyard_core::{DeadReason, Envelope};
use switchyard_store::{Store, StoreError};
use tracing::{info, warn};
use uuid::Uuid;

/// Which dead letters. Every field narrows the selection.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Filter {
    pub provider: Option<String>,
    pub tenant: Option<String>,
    pub integration_id: Option<Uuid>,
    pub entity: Option<String>,
    pub reason: Option<DeadReason>,
    pub job_id: Option<Uuid>,
    /// Dead-lettered at or after.
    pub since: Option<DateTime<Utc>>,
    /// Dead-lettered before.
    pub until: Option<DateTime<Utc>>,
}

/// One dead letter, as an operator sees it.
#[derive(Debug, Clone, Serialize)]
pub struct DeadLetter {
    pub job_id: Option<Uuid>,
    pub provider: String,
    pub tenant: Option<String>,
    pub integration_id: Option<Uuid>,
    pub entity: Option<String>,
    pub internal_id: Option<String>,
    pub reason: Option<String>,
    pub error_class: Option<String>,
    pub error: Option<String>,
    pub attempts: Option<String>,
    pub first_received: Option<String>,
    pub dead_at: Option<DateTime<Utc>>,
    pub replays: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub action: &'static str,
    pub dry_run: bool,
    pub matched: usize,
    pub moved: usize,
    pub job_ids: Vec<Uuid>,
    /// Messages that matched but could not be moved, with why.
    pub failed: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum DlqError {
    #[error("`{0}` has no dead-letter queue; providers with one: {1}")]
    UnknownProvider(String, String),
    #[error("the message broker: {0}")]
    Broker(#[from] BrokerError),
    #[error("the message broker refused a replayed message: {0}")]
    Publish(#[from] PublishError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0}")]
    BadRequest(String),
}

/// Replays per second an operator may ask for: slower would hold the messages it is
/// replaying for hours; faster is what the broker's confirms allow anyway (no `rate`).
pub const RATE_RANGE: std::ops::RangeInclusive<f64> = 0.1..=10_000.0;

/// The most bytes of dead letters held at once while scanning one queue.
const SCAN_MAX_BYTES: usize = 64 << 20;

/// How long a rate-limited replay holds the messages it has taken before it returns the
/// rest and takes the next ones.
const HOLD_FOR: Duration = Duration::from_secs(10);

impl Options {
    /// Check the options before anything is taken from a queue.
    pub fn validate(&self) -> Result<(), DlqError> {
        if let Some(r) = self.rate
            && !RATE_RANGE.contains(&r)
        {
            return Err(DlqError::BadRequest(format!(
                "rate: {r} replays a second is outside {}–{}; leave it out to replay as fast as the broker confirms",
                RATE_RANGE.start(),
                RATE_RANGE.end()
            )));
        }
        if self.limit == 0 {
            return Err(DlqError::BadRequest("limit: must be at least 1".into()));
        }
        Ok(())
    }
}

/// How a replay or purge goes.
#[derive(Debug, Clone)]
pub struct Options {
    pub dry_run: bool,
    /// At most this many messages.
    pub limit: usize,
    /// Replays per second at most (`None`: as fast as the broker confirms).
    pub rate: Option<f64>,
    /// Who asked (recorded).
    pub actor: String,
}

/// Messages held at once while scanning one queue.
const SCAN_MAX: u16 = 10_000;

fn view(d: &Delivery, provider: &str) -> (DeadLetter, Option<Envelope>) {
    let env = Envelope::from_slice(&d.body).ok();
    let h = |name: &str| d.headers.get(name).map(str::to_owned);
    let dl = DeadLetter {
        job_id: env
            .as_ref()
            .map(|e| e.id)
            .or_else(|| d.message_id.as_deref().and_then(|m| m.parse().ok())),
        provider: provider.to_owned(),
        tenant: env.as_ref().map(|e| e.tenant.clone()),
        integration_id: env.as_ref().map(|e| e.integration_id),
        entity: env.as_ref().map(|e| e.entity.clone()),
        internal_id: env.as_ref().map(|e| e.internal_id.clone()),
        // A message the broker dead-lettered itself (delivery limit) has no reason of ours.
        reason: h(header::DEAD_REASON).or_else(|| Some("delivery_limit".to_owned())),
        error_class: h(header::LAST_ERROR_CLASS),
        error: h(header::LAST_ERROR),
        attempts: h(header::ATTEMPT),
        first_received: h(header::FIRST_RECEIVED),
        dead_at: h(header::DEAD_AT)
            .and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
            .map(|t| t.with_timezone(&Utc)),
        replays: h(header::REPLAYS),
    };
    (dl, env)
}

fn matches(f: &Filter, dl: &DeadLetter) -> bool {
    let eq = |want: &Option<String>, have: &Option<String>| want.is_none() || want == have;
    eq(&f.tenant, &dl.tenant)
        && eq(&f.entity, &dl.entity)
        && (f.integration_id.is_none() || f.integration_id == dl.integration_id)
        && (f.job_id.is_none() || f.job_id == dl.job_id)
        && (f.reason.is_none() || f.reason.map(|r| r.as_str().to_owned()) == dl.reason)
        && (f.since.is_none() || dl.dead_at.is_some_and(|t| Some(t) >= f.since))
        && (f.until.is_none() || dl.dead_at.is_some_and(|t| Some(t) < f.until))
}

fn providers(broker: &Broker, f: &Filter) -> Result<Vec<String>, DlqError> {
    let all = &broker.topology().providers;
    match &f.provider {
        None => Ok(all.clone()),
        Some(p) if all.contains(p) => Ok(vec![p.clone()]),
        Some(p) => Err(DlqError::UnknownProvider(p.clone(), all.join(", "))),
    }
}

/// The dead letters that match, oldest first, at most `limit`.
pub async fn list(broker: &Broker, f: &Filter, limit: usize) -> Result<Vec<DeadLetter>, DlqError> {
    let mut out = Vec::new();
    for p in providers(broker, f)? {
        let drained = broker
            .drain(
                &broker.topology().dead_letter_queue(&p),
                SCAN_MAX,
                SCAN_MAX_BYTES,
            )
            .await?;
        for d in &drained.deliveries {
            let (dl, _) = view(d, &p);
            if matches(f, &dl) && out.len() < limit {
                out.push(dl);
            }
        }
        drained.release().await;
    }
    Ok(out)
}

/// Put matching dead letters back on the jobs exchange with fresh attempts. Each job's row
/// is reset first (only if it is still dead: a job that succeeded meanwhile stays
/// succeeded, and its replay is acknowledged by the worker as a duplicate), then the message
/// is republished (confirmed), then removed from the dead-letter queue.
pub async fn replay(
    broker: &Broker,
    store: &Store,
    f: &Filter,
    o: &Options,
) -> Result<Report, DlqError> {
    act(broker, store, f, o, Action::Replay).await
}

/// Remove matching dead letters for good (their jobs stay `dead`, marked purged).
pub async fn purge(
    broker: &Broker,
    store: &Store,
    f: &Filter,
    o: &Options,
) -> Result<Report, DlqError> {
    act(broker, store, f, o, Action::Purge).await
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Replay,
    Purge,
}

impl Action {
    fn name(self) -> &'static str {
        match self {
            Action::Replay => "replay",
            Action::Purge => "purge",
        }
    }
}

/// Scan every selected dead-letter queue, apply `action` to each match (up to the limit),
/// and record what was done. Messages that do not match are returned to their queue at
/// once, so an operation holds only what it is working on; a rate-limited replay works in
/// rounds of what it replays in [`HOLD_FOR`], returning the rest between rounds.
async fn act(
    broker: &Broker,
    store: &Store,
    f: &Filter,
    o: &Options,
    action: Action,
) -> Result<Report, DlqError> {
    o.validate()?;
    let mut report = Report {
        action: action.name(),
        dry_run: o.dry_run,
        matched: 0,
        moved: 0,
        job_ids: vec![],
        failed: vec![],
    };
    let pause = match action {
        Action::Replay => o.rate.map(|r| Duration::from_secs_f64(1.0 / r)),
        Action::Purge => None,
    };
    // A dry run takes nothing, so one round sees everything.
    let round = match pause {
        Some(p) if !o.dry_run => ((HOLD_FOR.as_secs_f64() / p.as_secs_f64()) as usize).max(1),
        _ => o.limit,
    };
    for p in providers(broker, f)? {
        let queue = broker.topology().dead_letter_queue(&p);
        // Messages seen and left (a replay that failed): not taken again.
        let mut seen = std::collections::HashSet::new();
        while report.matched < o.limit {
            let drained = broker.drain(&queue, SCAN_MAX, SCAN_MAX_BYTES).await?;
            let want = round.min(o.limit - report.matched);
            let mut chosen = Vec::new();
            for d in &drained.deliveries {
                let (dl, env) = view(d, &p);
                let key = d.message_id.clone().unwrap_or_default();
                if chosen.len() < want && matches(f, &dl) && seen.insert(key) {
                    chosen.push((d, dl, env));
                } else if let Err(e) = d.requeue().await {
                    warn!(error = %e, "could not return a dead letter early; it returns when the scan ends");
                }
            }
            let took = chosen.len();
            for (d, dl, env) in chosen {
                report.matched += 1;
                if let Some(id) = dl.job_id {
                    report.job_ids.push(id);
                }
                if o.dry_run {
                    continue;
                }
                let moved = match action {
                    Action::Replay => replay_one(broker, store, d, env, &mut report.failed).await?,
                    Action::Purge => {
                        d.ack().await?;
                        if let Some(id) = dl.job_id {
                            store.mark_purged(id).await?;
                        }
                        true
                    }
                };
                if moved {
                    report.moved += 1;
                    if let Some(pause) = pause {
                        tokio::time::sleep(pause).await;
                    }
                }
            }
            drained.release().await;
            if took < want || o.dry_run {
                break;
            }
        }
    }
    store
        .record_dlq_action(
            action.name(),
            &o.actor,
            &serde_json::to_value(f).unwrap_or_default(),
            o.dry_run,
            report.matched,
            report.moved,
            &report.job_ids,
        )
        .await?;
    info!(actor = %o.actor, action = action.name(), matched = report.matched, moved = report.moved,
        dry_run = o.dry_run, "dead letters handled");
    Ok(report)
}

/// Reset the job, republish the message with fresh attempts, remove the dead letter.
/// `Ok(false)` (and a line in `failed`) when the message cannot be replayed.
async fn replay_one(
    broker: &Broker,
    store: &Store,
    d: &Delivery,
    env: Option<Envelope>,
    failed: &mut Vec<String>,
) -> Result<bool, DlqError> {
    let Some(env) = env else {
        failed.push(format!(
            "message {:?}: its body is not an envelope this version can process; purge it instead",
            d.message_id
        ));
        return Ok(false);
    };
    store.reset_for_replay(env.id).await?;
    let mut headers = d.headers.clone();
    for h in [header::DEAD_REASON, header::DEAD_AT, header::DUE_AT] {
        headers.0.remove(h);
    }
    let replays = headers
        .get(header::REPLAYS)
        .and_then(|v| v.parse::<u32>().ok())
        .unwrap_or(0)
        + 1;
    headers
        .set(header::ATTEMPT, "0")
        .set(header::REPLAYS, replays.to_string())
        .set(header::REPLAYED_AT, Utc::now().to_rfc3339());
    broker
        .publish(&[OutgoingMessage {
            exchange: Exchange::Jobs,
            routing_key: env.routing_key(),
            message_id: env.id.to_string(),
            body: d.body.clone(),
            headers,
        }])
        .await?;
    if let Err(e) = d.ack().await {
        // Republished but still in the DLQ: a later replay is acknowledged as a duplicate.
        warn!(error = %e, job_id = %env.id, "replayed, but could not remove the dead letter");
    }
    Ok(true)
}
