//! Dead letters. A message a worker gives up on (or the broker, at its delivery limit) goes to
//! its provider's dead-letter queue, with its reason and last error in `sy-*` headers; the
//! workers' keeper ([`keep`]) moves it from there into Postgres (`dead_letters`), where each
//! tenant's are found by an index, apart from every other tenant's. The jobs table holds
//! their history. A message whose body cannot be read (reason `malformed`) is kept too, with
//! no tenant: the admin can list and purge it.
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::time::Duration;
use switchyard_broker::{
    Broker, Delivery, Exchange, Headers, OutgoingMessage, PublishError, header,
};
use switchyard_core::Envelope;
use switchyard_store::{DeadLetterRow, Store, StoreError};
use tracing::{info, warn};
use uuid::Uuid;

/// Which dead letters. Every field narrows the selection.
pub use switchyard_store::DeadLetterFilter as Filter;

/// One dead letter, as an operator sees it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
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

#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
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
    #[error("the message broker refused a replayed message: {0}")]
    Publish(#[from] PublishError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Invalid(#[from] crate::integrations::FieldError),
}

/// Replays per second an operator may ask for: slower would hold the messages it is
/// replaying for hours; faster is what the broker's confirms allow anyway (no `rate`).
pub const RATE_RANGE: std::ops::RangeInclusive<f64> = 0.1..=10_000.0;

impl Options {
    /// Check the options before anything is taken from a queue.
    pub fn validate(&self) -> Result<(), DlqError> {
        if let Some(r) = self.rate
            && !RATE_RANGE.contains(&r)
        {
            return Err(crate::integrations::FieldError {
                field: "rate".into(),
                reason: format!(
                    "{r} replays a second is outside {}–{}; leave it out to replay as fast as the broker confirms",
                    RATE_RANGE.start(),
                    RATE_RANGE.end()
                ),
            }
            .into());
        }
        if !(1..=MAX_LIMIT).contains(&self.limit) {
            return Err(crate::integrations::FieldError {
                field: "limit".into(),
                reason: format!(
                    "{} is outside 1–{MAX_LIMIT}; replay or purge in several runs",
                    self.limit
                ),
            }
            .into());
        }
        Ok(())
    }
}

/// The most dead letters one replay or purge takes.
pub const MAX_LIMIT: usize = 100_000;

/// How far a replay or purge got: (matched, done).
pub type Progress = tokio::sync::watch::Sender<(usize, usize)>;

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

/// How many dead letters a replay takes at once when no rate is asked for.
const BATCH: usize = 100;

/// What the keeper stores for a message from `provider`'s dead-letter queue.
pub fn letter(d: &Delivery, provider: &str) -> DeadLetterRow {
    let env = Envelope::from_slice(&d.body).ok();
    // Postgres text cannot hold NUL; a provider's error text might.
    let text = |v: &str| v.replace('\0', "\u{fffd}");
    let h = |name: &str| d.headers.get(name).map(text);
    let job_id = env
        .as_ref()
        .map(|e| e.id)
        .or_else(|| d.message_id.as_deref().and_then(|m| m.parse().ok()));
    DeadLetterRow {
        id: 0,
        provider: provider.to_owned(),
        message_id: d
            .message_id
            .clone()
            .filter(|m| !m.is_empty())
            .map(|m| text(&m))
            .unwrap_or_else(|| Uuid::new_v4().to_string()),
        job_id,
        tenant: env.as_ref().map(|e| text(&e.tenant)),
        integration_id: env.as_ref().map(|e| e.integration_id),
        entity: env.as_ref().map(|e| text(&e.entity)),
        internal_id: env.as_ref().map(|e| text(&e.internal_id)),
        // A message the broker dead-lettered itself (delivery limit) has no reason of ours.
        reason: h(header::DEAD_REASON).unwrap_or_else(|| "delivery_limit".to_owned()),
        error_class: h(header::LAST_ERROR_CLASS),
        error: h(header::LAST_ERROR),
        // A job's first publication carries neither (`OutgoingMessage::job`): a letter
        // without them was dead on its first attempt, and its envelope has the time.
        attempts: h(header::ATTEMPT).or_else(|| env.as_ref().map(|_| "0".to_owned())),
        first_received: h(header::FIRST_RECEIVED)
            .or_else(|| env.as_ref().map(|e| e.received_at.to_rfc3339())),
        replays: h(header::REPLAYS),
        dead_at: h(header::DEAD_AT)
            .and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
            .map_or_else(Utc::now, |t| t.with_timezone(&Utc)),
        // The job's own key (`{provider}.{entity}.{action}`): the key the message arrived
        // with may be its work queue's name or carry delay bits.
        routing_key: env
            .as_ref()
            .map_or_else(|| text(&d.routing_key), |e| text(&e.routing_key())),
        headers: serde_json::Value::Object(
            d.headers
                .0
                .iter()
                .map(|(k, v)| (text(k), serde_json::Value::String(text(v))))
                .collect(),
        ),
        body: d.body.clone(),
    }
}

/// Keep a message from `provider`'s dead-letter queue in Postgres, then acknowledge it. If
/// it cannot be stored, it stays in the queue (the caller retries).
pub async fn keep(store: &Store, d: &Delivery, provider: &str) -> Result<(), StoreError> {
    let row = letter(d, provider);
    store.keep_dead_letter(&row).await?;
    if let Err(e) = d.ack().await {
        // Stored; the broker delivers it again and it replaces itself.
        warn!(error = %e, message_id = %row.message_id, "kept a dead letter but could not acknowledge it");
    }
    Ok(())
}

fn view(r: DeadLetterRow) -> DeadLetter {
    DeadLetter {
        job_id: r.job_id,
        provider: r.provider,
        tenant: r.tenant,
        integration_id: r.integration_id,
        entity: r.entity,
        internal_id: r.internal_id,
        reason: Some(r.reason),
        error_class: r.error_class,
        error: r.error,
        attempts: r.attempts,
        first_received: r.first_received,
        dead_at: Some(r.dead_at),
        replays: r.replays,
    }
}

fn check_provider(f: &Filter) -> Result<(), DlqError> {
    match &f.provider {
        Some(p) if !switchyard_providers::info(p).is_some_and(|i| i.is_target) => {
            Err(DlqError::UnknownProvider(
                p.clone(),
                switchyard_providers::target_providers().join(", "),
            ))
        }
        _ => Ok(()),
    }
}

/// The dead letters that match, oldest first, at most `limit`.
pub async fn list(store: &Store, f: &Filter, limit: usize) -> Result<Vec<DeadLetter>, DlqError> {
    check_provider(f)?;
    Ok(store
        .dead_letters(f, limit)
        .await?
        .into_iter()
        .map(view)
        .collect())
}

/// Put matching dead letters back on the jobs exchange with fresh attempts, oldest first.
/// Each batch is taken under a row lock (a concurrent replay skips it), republished
/// (confirmed), and then removed with its jobs reset (a job that succeeded meanwhile stays
/// succeeded, and its replay is acknowledged by the worker as a duplicate). If publishing
/// fails, the batch stays where it was.
pub async fn replay(
    broker: &Broker,
    store: &Store,
    f: &Filter,
    o: &Options,
) -> Result<Report, DlqError> {
    replay_reporting(broker, store, f, o, None).await
}

/// [`replay`], telling `progress` after each batch.
pub async fn replay_reporting(
    broker: &Broker,
    store: &Store,
    f: &Filter,
    o: &Options,
    progress: Option<&Progress>,
) -> Result<Report, DlqError> {
    o.validate()?;
    check_provider(f)?;
    let mut report = Report::new("replay", o.dry_run);
    if o.dry_run {
        for r in store.dead_letters(f, o.limit).await? {
            report.add(r.job_id);
        }
        return finish(store, f, o, report).await;
    }
    let pause = o.rate.map(|r| Duration::from_secs_f64(1.0 / r));
    let batch = if pause.is_some() { 1 } else { BATCH };
    // Dead letters left (a body no version can read): not taken again. Nor are dead
    // letters kept after the replay began (a replayed job that died again).
    let mut skip = Vec::new();
    let upto = store.newest_dead_letter().await?;
    while report.matched < o.limit {
        let mut taken = store
            .take_dead_letters(f, (o.limit - report.matched).min(batch), &skip, upto)
            .await?;
        if taken.rows.is_empty() {
            break;
        }
        let mut messages = Vec::new();
        let mut moved = Vec::new();
        for r in &taken.rows {
            report.add(r.job_id);
            match republished(r) {
                Ok(m) => {
                    messages.push(m);
                    moved.push(r.id);
                }
                Err(why) => {
                    report.failed.push(why);
                    skip.push(r.id);
                }
            }
        }
        // Reset first, under the rows' locks, so that a worker taking a republished job
        // waits for it; if the broker refuses, the transaction is dropped and nothing moved.
        taken.remove(&moved).await?;
        broker.publish(&messages).await?;
        taken.commit().await?;
        report.moved += moved.len();
        if let Some(p) = progress {
            p.send_replace((report.matched, report.moved));
        }
        if let Some(pause) = pause {
            tokio::time::sleep(pause).await;
        }
    }
    finish(store, f, o, report).await
}

/// Remove matching dead letters for good (their jobs stay `dead`, marked purged).
pub async fn purge(store: &Store, f: &Filter, o: &Options) -> Result<Report, DlqError> {
    o.validate()?;
    check_provider(f)?;
    let mut report = Report::new("purge", o.dry_run);
    if o.dry_run {
        for r in store.dead_letters(f, o.limit).await? {
            report.add(r.job_id);
        }
    } else {
        for job in store.purge_dead_letters(f, o.limit).await? {
            report.add(job);
            report.moved += 1;
        }
    }
    finish(store, f, o, report).await
}

/// Start a replay (or purge) in the background: its operation, answered at once; its
/// progress and result are recorded on it as it goes.
pub async fn start(
    broker: &Broker,
    store: &Store,
    f: Filter,
    o: Options,
    replaying: bool,
    tenant: Option<&str>,
) -> Result<switchyard_store::Operation, DlqError> {
    o.validate()?;
    check_provider(&f)?;
    let request = serde_json::json!({"filter": f, "limit": o.limit, "rate": o.rate});
    let kind = if replaying { "dlq.replay" } else { "dlq.purge" };
    let op = store
        .create_operation(tenant, kind, &o.actor, &request)
        .await?;
    let (id, broker, store) = (op.id, broker.clone(), store.clone());
    let actor = o.actor.clone();
    let work = async move {
        let (tx, mut rx) = tokio::sync::watch::channel((0, 0));
        let run = async {
            if replaying {
                replay_reporting(&broker, &store, &f, &o, Some(&tx)).await
            } else {
                purge(&store, &f, &o).await
            }
        };
        tokio::pin!(run);
        // Progress is written every second at most (and shows the operation is alive).
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let outcome = loop {
            tokio::select! {
                r = &mut run => break r,
                _ = tick.tick() => {
                    let (m, d) = *rx.borrow_and_update();
                    if let Err(e) = store.operation_progress(id, m as i64, d as i64).await {
                        warn!(operation = %id, error = %e, "could not record an operation's progress");
                    }
                }
            }
        };
        let (status, result, error) = match outcome {
            Ok(r) if r.moved < r.matched => ("partial", serde_json::to_value(&r).ok(), None),
            Ok(r) => ("succeeded", serde_json::to_value(&r).ok(), None),
            Err(e) => ("failed", None, Some(e.to_string())),
        };
        if let Err(e) = store
            .finish_operation(id, status, result.as_ref(), error.as_deref())
            .await
        {
            warn!(operation = %id, error = %e, "could not record how an operation ended");
        }
    };
    // Its changes are the caller's in the audit log.
    tokio::spawn(switchyard_store::ACTOR.scope(actor, work));
    Ok(op)
}

impl Report {
    fn new(action: &'static str, dry_run: bool) -> Report {
        Report {
            action,
            dry_run,
            matched: 0,
            moved: 0,
            job_ids: vec![],
            failed: vec![],
        }
    }

    fn add(&mut self, job: Option<Uuid>) {
        self.matched += 1;
        if let Some(id) = job {
            self.job_ids.push(id);
        }
    }
}

/// Record what was done.
async fn finish(
    store: &Store,
    f: &Filter,
    o: &Options,
    report: Report,
) -> Result<Report, DlqError> {
    store
        .record_dlq_action(
            report.action,
            &o.actor,
            &serde_json::to_value(f).unwrap_or_default(),
            o.dry_run,
            report.matched,
            report.moved,
            &report.job_ids,
        )
        .await?;
    info!(actor = %o.actor, action = report.action, matched = report.matched, moved = report.moved,
        dry_run = o.dry_run, "dead letters handled");
    Ok(report)
}

/// The message that replays a dead letter, with fresh attempts; `Err` says why it cannot be
/// replayed.
fn republished(r: &DeadLetterRow) -> Result<OutgoingMessage, String> {
    let Ok(env) = Envelope::from_slice(&r.body) else {
        return Err(format!(
            "message {}: its body is not an envelope this version can process; purge it instead",
            r.message_id
        ));
    };
    let mut headers = Headers::default();
    if let Some(map) = r.headers.as_object() {
        for (k, v) in map {
            if let Some(v) = v.as_str() {
                headers.set(k, v);
            }
        }
    }
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
    Ok(OutgoingMessage {
        exchange: Exchange::Jobs,
        routing_key: env.routing_key(),
        message_id: env.id.to_string(),
        body: r.body.clone(),
        headers,
    })
}
