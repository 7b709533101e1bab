//! One delivery, from parse to acknowledgement.
use chrono::{DateTime, Utc};
use futures_util::FutureExt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};
use switchyard_broker::{Delivery, Exchange, Headers, OutgoingMessage, header};
use switchyard_core::{Action, DeadReason, Envelope, ErrorClass, IntegrationStatus, WhenInactive};
use switchyard_providers::Operation;
use switchyard_resilience::Admission;
use switchyard_store::{AttemptRecord, Claim, Finish, MappingChange, StoreError};
use tracing::{Instrument, Span, error, info, info_span, warn};

use crate::{Shared, connectors, decide, identity};

/// Test hooks: where a simulated crash stops the worker. The delivery is left unsettled
/// and the worker returns [`crate::WorkerError::Crashed`]; closing the broker connection
/// then returns the message to its queue, as a real crash would.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FaultPoint {
    /// After the provider answered, before the outcome is committed.
    AfterProviderCall,
    /// After the outcome is committed, before the delivery is acknowledged.
    BeforeAck,
    /// The handler panics on the job for this internal id (a poison message); the worker
    /// keeps running.
    PanicFor(String),
}

/// How a delivery is settled.
enum Settle {
    /// Done with: `succeeded`, `duplicate`, `held`, `skipped`, `stale`, `ignored`.
    Ack(&'static str),
    Retry {
        delay: Duration,
        attempts: i32,
        class: ErrorClass,
        message: String,
    },
    Dead {
        reason: DeadReason,
        class: ErrorClass,
        message: String,
    },
    /// Put it back, unchanged, to come again after `delay`: it did not get its turn (its
    /// integration's calls are all taken, or another job is writing its record). Nothing
    /// is recorded and no attempt is spent.
    Later {
        delay: Duration,
        why: &'static str,
        /// For the metrics: `turn` or `record_busy`.
        cause: &'static str,
    },
    /// The database refused to record the job (neither bad data nor an outage), for the
    /// `failures`-th time in a row: come back after `delay`.
    StoreRetry {
        delay: Duration,
        failures: u32,
        message: String,
    },
    /// Leave it unsettled (simulated crash).
    Hold,
}

/// A job's turn at its integration (see [`crate::WorkerConfig::max_per_integration`]).
pub(crate) enum Turn {
    /// Taken (`Some`), or not needed here (`None`: the job is not due yet, or its
    /// integration could not be read, and [`process`] sees to it).
    Now(Option<connectors::Turn>),
    /// Queued behind the integration's earlier jobs ([`wait_turn`]).
    Wait(Waiting),
}

/// A place in line for an integration's turn.
pub(crate) struct Waiting {
    turn: Pin<Box<dyn Future<Output = Option<connectors::Turn>> + Send>>,
    turns: Arc<connectors::Turns>,
}

/// How many rounds of `turn_wait` a job waits in all while its integration's turns keep
/// coming back ([`wait_turn`]).
const TURN_WAIT_ROUNDS: u32 = 8;

/// Wait in line for the job's turn while the integration's calls keep ending: a busy
/// integration's job waits its turn, rather than go round the broker's delay queues and
/// come back a second later; if no turn came back for a whole `round` (a hung provider), or
/// after [`TURN_WAIT_ROUNDS`] rounds, it gives up (`None`: the job is put back), and its
/// delivery stops holding up the deliveries of other tenants behind it.
pub(crate) async fn wait_turn(waiting: Waiting, round: Duration) -> Option<connectors::Turn> {
    let Waiting { mut turn, turns } = waiting;
    let mut seen = turns.ended();
    for _ in 0..TURN_WAIT_ROUNDS {
        tokio::select! {
            t = &mut turn => return t,
            _ = tokio::time::sleep(round) => {}
        }
        let now = turns.ended();
        if now == seen {
            return None;
        }
        seen = now;
    }
    None
}

/// Take the delivery's turn at its integration, or queue for it (in arrival order: the
/// semaphore is fair, and the place is taken here, before the caller moves on).
pub(crate) async fn turn(shared: &Shared, job: &Job) -> Turn {
    if due_at(&job.d.headers).is_some_and(|due| due > Utc::now()) {
        return Turn::Now(None);
    }
    let Ok(env) = &job.env else {
        return Turn::Now(None);
    };
    let Ok(Some(target)) = shared.connectors.get(env.integration_id).await else {
        return Turn::Now(None);
    };
    let turns = target.turns.clone();
    let mut waiting: Pin<Box<dyn Future<Output = Option<connectors::Turn>> + Send>> =
        Box::pin(turns.clone().take());
    match futures_util::poll!(waiting.as_mut()) {
        Poll::Ready(t) => Turn::Now(t),
        Poll::Pending => Turn::Wait(Waiting {
            turn: waiting,
            turns,
        }),
    }
}

/// A delivery and its envelope, read once (the consumer needs the integration for the
/// job's turn, the handler everything).
pub(crate) struct Job {
    d: Delivery,
    env: Result<Envelope, String>,
}

impl Job {
    pub(crate) fn read(d: Delivery) -> Job {
        let env = Envelope::from_slice(&d.body).map_err(|e| e.to_string());
        Job { d, env }
    }
}

pub(crate) async fn handle(shared: &Shared, job: Job, turn: Option<connectors::Turn>) {
    let Job { d, env } = job;
    let env = match env {
        Ok(env) => env,
        Err(e) => {
            warn!(routing_key = %d.routing_key, message_id = ?d.message_id, error = %e,
                "dead-lettering a message that is not a valid envelope");
            let mut headers = d.headers.clone();
            dead_headers(
                &mut headers,
                DeadReason::Malformed,
                ErrorClass::Malformed,
                &e,
            );
            publish_then_ack(
                shared,
                &d,
                OutgoingMessage {
                    exchange: Exchange::DeadLetters,
                    routing_key: d.routing_key.clone(),
                    message_id: d.message_id.clone().unwrap_or_default(),
                    body: d.body.clone(),
                    headers,
                },
            )
            .await;
            return;
        }
    };
    let span = info_span!("job", job_id = %env.id, provider = %env.provider,
        integration = %env.integration_id, entity = %env.entity, internal_id = %env.internal_id,
        redelivered = d.redelivered, record = tracing::field::Empty, otel.kind = "consumer");
    // The webhook's (or sync's) trace goes on here, across the broker.
    if let Some(tp) = &env.trace {
        switchyard_telemetry::continue_trace(&span, tp);
    }
    async {
        if let Some(due) = due_at(&d.headers)
            && due > Utc::now()
        {
            let rest = (due - Utc::now()).to_std().unwrap_or_default();
            redelay(shared, &env, &d, d.headers.clone(), rest).await;
            return;
        }
        let replayed_at = d
            .headers
            .get(header::REPLAYED_AT)
            .and_then(|v| DateTime::parse_from_rfc3339(v).ok())
            .map(|t| t.with_timezone(&Utc));
        let copy = d.headers.get(header::COPY).unwrap_or_default();
        let outcome = AssertUnwindSafe(process(
            shared,
            &env,
            replayed_at,
            d.redelivered,
            copy,
            turn,
        ))
        .catch_unwind()
        .await;
        let decision = match outcome {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => match store_failure(shared, &env, &d.headers, e).await {
                Some(s) => s,
                None => {
                    // Database unreachable: it is back now (or we are stopping); let the
                    // broker deliver the message again.
                    let _ = d.requeue().await;
                    return;
                }
            },
            Err(panic) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| (*s).to_owned())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "unknown panic".into());
                error!(panic = %what, "the handler panicked; dead-lettering the message");
                let message = format!("the worker panicked while processing this job: {what}");
                dead_outside_claim(
                    shared,
                    &env,
                    ErrorClass::Malformed,
                    DeadReason::Malformed,
                    message,
                )
                .await
            }
        };
        // Settling runs under the guard too: a panic there returns the delivery to its
        // queue (whose delivery limit ends a message that always panics) instead of leaving
        // it unacknowledged until the broker's consumer timeout.
        if AssertUnwindSafe(settle(shared, &env, &d, decision))
            .catch_unwind()
            .await
            .is_err()
        {
            error!("settling the job panicked; returning the delivery to its queue");
            let _ = d.requeue().await;
        }
    }
    .instrument(span)
    .await;
}

/// Decide and record; the broker side is [`settle`]'s.
async fn process(
    shared: &Shared,
    env: &Envelope,
    replayed_at: Option<DateTime<Utc>>,
    redelivered: bool,
    copy: &str,
    turn: Option<connectors::Turn>,
) -> Result<Settle, StoreError> {
    let fault = shared.cfg.fault.clone();
    if let Some(FaultPoint::PanicFor(id)) = &fault
        && *id == env.internal_id
    {
        panic!("test fault point: poison message for {id}");
    }
    let Some(target) = shared.connectors.get(env.integration_id).await? else {
        let message = format!(
            "the target integration {} does not exist (was it deleted?)",
            env.integration_id
        );
        warn!(%message, "dead-lettering");
        // The job's row says so too (unless the id never named an integration at all).
        return Ok(dead_outside_claim(
            shared,
            env,
            ErrorClass::Malformed,
            DeadReason::Malformed,
            message,
        )
        .await);
    };
    // The account's share of this worker: a job past it (its wait for a turn ran out) is
    // put back for a moment rather than wait in a slot other tenants' jobs need. The turn
    // is held from the claim to the call's end (a hung provider holds its share, no
    // more) and given back before the outcome's commit, which waits on no provider.
    let Some(turn) = turn.or_else(|| target.turns.try_take()) else {
        return Ok(Settle::Later {
            delay: jittered(Duration::from_millis(500)),
            why: "every call this worker makes to the integration at once is taken",
            cause: "turn",
        });
    };
    let claim = shared
        .store
        .claim_batched(env, copy, shared.cfg.lease, shared.claims.get())
        .await?;
    let mut tx = match claim {
        Claim::Duplicate { status } => {
            info!(%status, "duplicate delivery: the job already settled; acknowledging");
            return Ok(Settle::Ack("duplicate"));
        }
        Claim::Ready(tx) => tx,
    };
    // A target that is not active holds its jobs (or, if the route says so, drops them).
    if let Some(status) = tx.target_status()
        && status != IntegrationStatus::Active
    {
        if env.route.when_inactive == WhenInactive::Drop {
            let reason =
                format!("the target is {status} and the route drops jobs for inactive targets");
            tx.finish(
                env,
                Finish::Skipped {
                    reason: reason.clone(),
                    conflict: None,
                },
            )
            .await?;
            info!(%reason, "skipped");
            return Ok(Settle::Ack("skipped"));
        }
        tx.finish(env, Finish::Held).await?;
        info!(target_status = %status, "held until the target is active again");
        return Ok(Settle::Ack("held"));
    }
    // The record this event is about: found by the source's id, or made now.
    let mut resolved_now = tx.created_record();
    if tx.source().is_none() {
        if env.action == Action::Delete {
            return ignored(
                tx,
                env,
                "the record is not known to the hub: nothing to delete",
            )
            .await;
        }
        tx.resolve_record(&shared.relaxed, env).await?;
        resolved_now = true;
    }
    let Some(source) = tx.source().cloned() else {
        return Err(StoreError::Corrupt(format!(
            "the record for {} `{}` could not be resolved",
            env.entity, env.internal_id
        )));
    };
    Span::current().record("record", tracing::field::display(source.record_id));
    if let Some(reason) = identity::echo(env.source_version, &source) {
        return ignored(tx, env, &reason).await;
    }
    if !source.deleted
        && let (Some(version), Some(last)) = (env.source_version, source.changed_version)
        && version < last
    {
        tx.finish(env, Finish::Stale).await?;
        info!(
            version,
            last_applied = last,
            "stale event: a newer version is already applied; not applied"
        );
        return Ok(Settle::Ack("stale"));
    }
    // A record other systems know, not yet at this target: lock it here so that two of its
    // sources cannot both create it.
    if env.action == Action::Upsert && tx.target().is_none() && !resolved_now {
        tx.lock_record(env, source.record_id).await?;
    }
    if let Some(t) = tx.target()
        && let Some(source_id) = env.source_integration_id
    {
        match identity::conflict(env, source_id, t) {
            identity::Decision::Apply => {}
            identity::Decision::Skip(conflict) => {
                let reason = conflict.message.clone();
                tx.finish(
                    env,
                    Finish::Skipped {
                        reason: reason.clone(),
                        conflict: Some(conflict),
                    },
                )
                .await?;
                info!(%reason, "conflict: not applied");
                return Ok(Settle::Ack("skipped"));
            }
            identity::Decision::ApplyOver(conflict) => {
                // Recorded with the job's outcome, since the job goes on.
                info!(message = %conflict.message, "conflict: applied over the target's change");
                tx.note_conflict(env, conflict).await?;
            }
        }
    }
    let connector = match &target.connector {
        Ok(c) => c.clone(),
        // The vault key that sealed its credentials is missing here: wait for the operator.
        Err(message) if target.credentials_unopened => {
            warn!(%message, "deferred: the target's credentials cannot be opened");
            return defer(tx, env, &target, replayed_at, message.clone()).await;
        }
        Err(message) => {
            tx.finish(
                env,
                Finish::Dead {
                    attempt: None,
                    class: ErrorClass::Permanent,
                    reason: DeadReason::Rejected,
                    message: message.clone(),
                },
            )
            .await?;
            warn!(%message, "dead-lettering: the target cannot be called");
            return Ok(Settle::Dead {
                reason: DeadReason::Rejected,
                class: ErrorClass::Permanent,
                message: message.clone(),
            });
        }
    };
    let external = tx.target().map(|m| m.external_id.clone());
    let kept = tx.target().and_then(|m| m.kept.clone());
    // Before a create that may repeat an earlier one (a redelivery, a retry, a replay) or
    // that the route asks to link to an existing record, look the record up by its natural
    // key: a provider that ignores Idempotency-Key then still holds one record.
    let look_first = env.action == Action::Upsert
        && external.is_none()
        && connector.can_lookup(&env.entity)
        && (env.route.link_existing
            || !connector.can_create(&env.entity)
            || redelivered
            || replayed_at.is_some()
            || tx.attempts_so_far() > 0
            || tx.interrupted());
    if external.is_none() && env.action == Action::Delete {
        return ignored(
            tx,
            env,
            "the record is not at the target: nothing to delete",
        )
        .await;
    }
    // The records the body refers to (an invoice's customer and items) must have reached
    // the target first: their ids there go into the body. Until they have, the job waits
    // (without spending an attempt) for as long as its retry policy allows.
    let refs = connector.references(&env.entity, &env.payload);
    // `/_switchyard` is the hub's own context (refs, route values, the target's id): what a
    // sender put there is not trusted.
    let mut payload = match env.payload.as_object() {
        Some(m) if m.contains_key("_switchyard") => {
            let mut m = m.clone();
            m.remove("_switchyard");
            std::borrow::Cow::Owned(serde_json::Value::Object(m))
        }
        _ => std::borrow::Cow::Borrowed(&env.payload),
    };
    if !refs.is_empty() {
        let found = shared
            .store
            .target_ids(
                &env.tenant,
                env.source_integration_id,
                env.integration_id,
                &refs,
            )
            .await?;
        let missing: Vec<String> = refs
            .iter()
            .filter(|r| !found.contains_key(*r))
            .map(|(e, id)| format!("{e} `{id}`"))
            .collect();
        if !missing.is_empty() {
            let why = format!(
                "waiting for {} to reach the target first",
                missing.join(", ")
            );
            return defer(tx, env, &target, replayed_at, why).await;
        }
        let mut by_entity = serde_json::Map::new();
        for ((entity, id), target_id) in found {
            by_entity
                .entry(entity)
                .or_insert_with(|| serde_json::json!({}))
                .as_object_mut()
                .map(|m| m.insert(id, serde_json::Value::String(target_id)));
        }
        let mut with = payload.into_owned();
        if let Some(m) = with.as_object_mut() {
            m.insert("_switchyard".into(), serde_json::json!({"refs": by_entity}));
        }
        payload = std::borrow::Cow::Owned(with);
    }
    // The route's values (who this source is at the target), for the body at
    // `/_switchyard/route/<name>`.
    if !env.route.values.is_empty() {
        let mut with = payload.into_owned();
        if let Some(m) = with.as_object_mut() {
            let ctx = m
                .entry("_switchyard")
                .or_insert_with(|| serde_json::json!({}));
            if let Some(c) = ctx.as_object_mut() {
                c.insert(
                    "route".into(),
                    serde_json::Value::Object(env.route.values.clone()),
                );
            }
        }
        payload = std::borrow::Cow::Owned(with);
    }
    // The provider account's rate limits and circuit breaker, shared by the fleet. A job
    // held back by either is deferred without spending an attempt.
    let account = env.integration_id.to_string();
    let guard = &shared.cfg.guard;
    let (class, wait, why) = match guard.admit(&account, &target.breaker, &target.limits).await {
        Admission::Go => (None, Duration::ZERO, String::new()),
        Admission::Throttled(w) => (
            Some(ErrorClass::Throttled),
            w,
            format!("rate limit reached; next slot in {} ms", w.as_millis()),
        ),
        Admission::BreakerOpen(w) => (
            Some(ErrorClass::BreakerOpen),
            // Spread the deferred jobs so they do not return all at once.
            w + Duration::from_millis(rand::random_range(0..=w.as_millis() as u64 / 2)),
            format!(
                "circuit breaker open; probing again in {} ms",
                w.as_millis()
            ),
        ),
    };
    if let Some(class) = class {
        let attempts = tx.attempts_so_far();
        tx.finish(
            env,
            Finish::Retrying {
                attempt: None,
                spend_attempt: false,
                class,
                message: why.clone(),
            },
        )
        .await?;
        info!(%class, retry_in_ms = wait.as_millis() as u64, "deferred: {why}");
        return Ok(Settle::Retry {
            delay: wait,
            attempts,
            class,
            message: why,
        });
    }
    // No database connection waits on the provider: the claim committed the record's
    // lease (the outcome's statement releases it); a step since that needed a transaction
    // commits it here.
    tx.park(shared.cfg.lease).await?;
    let attempt_no = tx.attempts_so_far() + 1;
    let started_at = Utc::now();
    let clock = Instant::now();
    let result = call(
        connector.as_ref(),
        env,
        &payload,
        external.as_deref(),
        kept.as_ref(),
        look_first,
    )
    .instrument(info_span!("provider call", provider = %env.provider,
        attempt = attempt_no, otel.kind = "client"))
    .await;
    let took = clock.elapsed();
    let duration_ms = took.as_millis().min(i32::MAX as u128) as i32;
    let provider_failed = matches!(&result, Err(e) if e.class == ErrorClass::Transient);
    shared.metrics.called(
        &env.provider,
        match &result {
            Ok(_) => "ok",
            Err(e) => e.class.as_str(),
        },
        took,
    );
    if let Some(state) = guard
        .record(
            &account,
            &target.breaker,
            target.breaker.outcome(provider_failed, took),
        )
        .await
    {
        shared.metrics.breaker(&account, state);
    }
    drop(turn);
    if fault == Some(FaultPoint::AfterProviderCall) {
        shared.crashed.cancel();
        return Ok(Settle::Hold);
    }
    match result {
        Ok(out) => {
            let updated = out.updated;
            let out = out.outcome;
            let mapping = match (env.action, out.external_id) {
                (Action::Delete, _) => MappingChange::Remove,
                (Action::Upsert, Some(external_id)) => MappingChange::Upsert { external_id },
                (Action::Upsert, None) => MappingChange::Upsert {
                    external_id: external.clone().unwrap_or_default(),
                },
            };
            let ext = match &mapping {
                MappingChange::Upsert { external_id } => Some(external_id.clone()),
                MappingChange::Remove => None,
            };
            tx.finish_batched(
                env,
                Finish::Succeeded {
                    attempt: AttemptRecord {
                        started_at,
                        duration_ms,
                        status_code: Some(i32::from(out.status)),
                        error_class: None,
                        error: None,
                        request: Some(out.request),
                        response: Some(out.response),
                    },
                    mapping,
                    written_version: out.version,
                    kept: out.kept.clone(),
                },
                shared.outcomes.get(),
            )
            .await?;
            info!(attempt = attempt_no, status = out.status, external_id = ?ext, duration_ms,
                op = match env.action { Action::Delete => "delete", _ if updated => "update", _ => "create" },
                "job succeeded");
            if fault == Some(FaultPoint::BeforeAck) {
                shared.crashed.cancel();
                return Ok(Settle::Hold);
            }
            Ok(Settle::Ack("succeeded"))
        }
        Err(e) => {
            let attempt = AttemptRecord {
                started_at,
                duration_ms,
                status_code: e.status.map(i32::from),
                error_class: Some(e.class),
                error: Some(e.message.clone()),
                request: e.request.clone(),
                response: e.response.clone(),
            };
            let failure = decide::Failure {
                class: e.class,
                message: &e.message,
                retry_after: e.retry_after,
                reauthorize: e.reauthorize,
            };
            let age = job_age(env, replayed_at);
            match decide::after_failure(&failure, &target.retry, attempt_no as u32, age) {
                decide::Verdict::Hold => {
                    // The integration must be connected again (it is now `error`): the job
                    // waits, held, and is released when it is.
                    tx.finish(env, Finish::Held).await?;
                    warn!(error = %e.message, "held: the integration needs connecting again");
                    Ok(Settle::Ack("held"))
                }
                decide::Verdict::Defer { delay } => {
                    let attempts = tx.attempts_so_far();
                    tx.finish(
                        env,
                        Finish::Retrying {
                            attempt: Some(attempt),
                            spend_attempt: false,
                            class: e.class,
                            message: e.message.clone(),
                        },
                    )
                    .await?;
                    info!(retry_in_ms = delay.as_millis() as u64, error = %e.message,
                        "provider throttled the call; deferring without spending an attempt");
                    Ok(Settle::Retry {
                        delay,
                        attempts,
                        class: e.class,
                        message: e.message,
                    })
                }
                decide::Verdict::Retry { delay } => {
                    tx.finish(
                        env,
                        Finish::Retrying {
                            attempt: Some(attempt),
                            spend_attempt: true,
                            class: e.class,
                            message: e.message.clone(),
                        },
                    )
                    .await?;
                    warn!(attempt = attempt_no, retry_in_ms = delay.as_millis() as u64,
                        class = %e.class, error = %e.message, "provider call failed; will retry");
                    Ok(Settle::Retry {
                        delay,
                        attempts: attempt_no,
                        class: e.class,
                        message: e.message,
                    })
                }
                decide::Verdict::Dead { reason, message } => {
                    dead(tx, env, Some(attempt), e.class, reason, message).await
                }
            }
        }
    }
}

/// How old the job is, for its retry policy's age limit: a replayed job's age counts from
/// its replay.
fn job_age(env: &Envelope, replayed_at: Option<DateTime<Utc>>) -> Duration {
    let since = replayed_at.map_or(env.received_at, |r| r.max(env.received_at));
    (Utc::now() - since).to_std().unwrap_or_default()
}

/// Nothing to do for this job (the reason says why): recorded `ignored`, acknowledged.
async fn ignored(
    tx: Box<switchyard_store::JobTx>,
    env: &Envelope,
    reason: &str,
) -> Result<Settle, StoreError> {
    tx.finish(
        env,
        Finish::Ignored {
            reason: reason.to_owned(),
        },
    )
    .await?;
    info!(%reason, "ignored");
    Ok(Settle::Ack("ignored"))
}

/// A successful call, and whether it updated an existing record (rather than created one).
struct Called {
    outcome: switchyard_providers::CallOutcome,
    updated: bool,
}

/// The provider call for this job: create, update or delete, with a look-up first when
/// asked (a record found is updated and linked instead of created again).
async fn call(
    connector: &dyn switchyard_providers::Connector,
    env: &Envelope,
    payload: &serde_json::Value,
    external: Option<&str>,
    kept: Option<&serde_json::Value>,
    look_first: bool,
) -> Result<Called, switchyard_providers::ProviderError> {
    let mut found = None;
    let mut found_kept = None;
    let mut looked = String::new();
    if look_first {
        let l = connector.lookup(&env.entity, payload).await?;
        looked = format!(
            "{} → {}; ",
            l.request,
            l.external_id.as_deref().unwrap_or("none")
        );
        found = l.external_id;
        found_kept = l.kept;
    }
    let external = external.or(found.as_deref());
    let op = match (env.action, external) {
        (Action::Upsert, None) => Operation::Create {
            entity: &env.entity,
            internal_id: &env.internal_id,
            payload,
            idempotency_key: &env.idempotency_key,
        },
        (Action::Upsert, Some(ext)) => Operation::Update {
            entity: &env.entity,
            internal_id: &env.internal_id,
            external_id: ext,
            payload,
            idempotency_key: &env.idempotency_key,
            // Kept values belong to the record as linked; one found by a look-up has those
            // the look-up kept.
            kept: if found.is_some() {
                found_kept.as_ref()
            } else {
                kept
            },
        },
        (Action::Delete, ext) => Operation::Delete {
            entity: &env.entity,
            internal_id: &env.internal_id,
            external_id: ext.unwrap_or_default(),
        },
    };
    let mut outcome = connector.execute(op).await.map_err(|mut e| {
        if !looked.is_empty() {
            e.request = Some(format!("{looked}{}", e.request.unwrap_or_default()));
        }
        e
    })?;
    if !looked.is_empty() {
        outcome.request = format!("{looked}{}", outcome.request);
    }
    Ok(Called {
        outcome,
        updated: external.is_some(),
    })
}

/// Wait (retry later without spending an attempt) for something the job cannot do without,
/// for as long as its retry policy's `max_age_secs` allows; then give up.
async fn defer(
    tx: Box<switchyard_store::JobTx>,
    env: &Envelope,
    target: &connectors::Target,
    replayed_at: Option<DateTime<Utc>>,
    why: String,
) -> Result<Settle, StoreError> {
    let attempts = tx.attempts_so_far();
    let age = job_age(env, replayed_at);
    match decide::wait(&target.retry, attempts.max(0) as u32, age) {
        Some(delay) => {
            tx.finish(
                env,
                Finish::Retrying {
                    attempt: None,
                    spend_attempt: false,
                    class: ErrorClass::Transient,
                    message: why.clone(),
                },
            )
            .await?;
            info!(retry_in_ms = delay.as_millis() as u64, "deferred: {why}");
            Ok(Settle::Retry {
                delay,
                attempts,
                class: ErrorClass::Transient,
                message: why,
            })
        }
        None => {
            let message = format!("gave up {why}");
            dead(
                tx,
                env,
                None,
                ErrorClass::Permanent,
                DeadReason::Exhausted,
                message,
            )
            .await
        }
    }
}

async fn dead(
    tx: Box<switchyard_store::JobTx>,
    env: &Envelope,
    attempt: Option<AttemptRecord>,
    class: ErrorClass,
    reason: DeadReason,
    message: String,
) -> Result<Settle, StoreError> {
    tx.finish(
        env,
        Finish::Dead {
            attempt,
            class,
            reason,
            message: message.clone(),
        },
    )
    .await?;
    warn!(%reason, %class, error = %message, "job dead-lettered");
    Ok(Settle::Dead {
        reason,
        class,
        message,
    })
}

/// A database failure while processing. `None`: the database is unreachable, and we waited
/// until it is back (or we are stopping); the delivery should be requeued.
/// Dead-letter a job outside a claim (the claim failed or never ran): its row says so too
/// (created if ingest has not recorded it; a row that cannot be written is left, the dead
/// letter keeps the job).
async fn dead_outside_claim(
    shared: &Shared,
    env: &Envelope,
    class: ErrorClass,
    reason: DeadReason,
    message: String,
) -> Settle {
    let _ = shared.store.mark_dead(env, class, reason, &message).await;
    Settle::Dead {
        reason,
        class,
        message,
    }
}

async fn store_failure(
    shared: &Shared,
    env: &Envelope,
    headers: &Headers,
    e: StoreError,
) -> Option<Settle> {
    match e {
        StoreError::Busy { until } => {
            // Usually released within a call's time; a crashed worker's lease lapses.
            let left = (until - Utc::now()).to_std().unwrap_or_default();
            Some(Settle::Later {
                delay: jittered(Duration::from_millis(250))
                    .min(left.max(Duration::from_millis(50))),
                why: "another job is writing this record",
                cause: "record_busy",
            })
        }
        StoreError::MappingConflict(message) => {
            warn!(%message, "job dead-lettered: its outcome conflicts with a recorded mapping");
            Some(
                dead_outside_claim(
                    shared,
                    env,
                    ErrorClass::Permanent,
                    DeadReason::Rejected,
                    message,
                )
                .await,
            )
        }
        e if e.is_bad_data() => {
            let message = format!("the database refused this job's data: {e}");
            // Its row may not be writable either (the same data); the dead letter keeps it.
            warn!(error = %e, "job dead-lettered: the database refuses its data");
            Some(
                dead_outside_claim(
                    shared,
                    env,
                    ErrorClass::Malformed,
                    DeadReason::Malformed,
                    message,
                )
                .await,
            )
        }
        e if e.is_unavailable() => {
            warn!(error = %e, "the database is unreachable; holding the job until it is back");
            let mut wait = Duration::from_millis(250);
            loop {
                tokio::select! {
                    _ = shared.stop.cancelled() => return None,
                    _ = tokio::time::sleep(wait) => {}
                }
                if shared.store.ping().await.is_ok() {
                    info!("the database is reachable again; the job will be redelivered");
                    return None;
                }
                wait = (wait * 2).min(Duration::from_secs(5));
            }
        }
        e => {
            let failures = headers
                .get(header::STORE_FAILURES)
                .and_then(|v| v.parse::<u32>().ok())
                .unwrap_or(0)
                .saturating_add(1);
            match decide::after_store_failure(failures) {
                Some(delay) => {
                    error!(error = %e, failures, retry_in_ms = delay.as_millis() as u64,
                        "database error while processing; retrying the job");
                    Some(Settle::StoreRetry {
                        delay,
                        failures,
                        message: e.to_string(),
                    })
                }
                None => {
                    let message = format!(
                        "gave up: the database refused to record this job {failures} times in a row: {e}"
                    );
                    error!(%message, "job dead-lettered");
                    Some(
                        dead_outside_claim(
                            shared,
                            env,
                            ErrorClass::Transient,
                            DeadReason::Exhausted,
                            message,
                        )
                        .await,
                    )
                }
            }
        }
    }
}

/// What a settlement counts as: a job's outcome (with its reason), or a deferral's cause.
fn count(shared: &Shared, env: &Envelope, s: &Settle) {
    let m = &shared.metrics;
    let p = env.provider.as_str();
    match s {
        Settle::Ack(outcome) => m.settled(p, outcome, ""),
        Settle::Retry {
            class: ErrorClass::Throttled,
            ..
        } => m.deferred(p, "rate_limit"),
        Settle::Retry {
            class: ErrorClass::BreakerOpen,
            ..
        } => m.deferred(p, "breaker_open"),
        Settle::Retry { class, .. } => m.settled(p, "retrying", class.as_str()),
        Settle::Dead { reason, .. } => m.settled(p, "dead", reason.as_str()),
        Settle::Later { cause, .. } => m.deferred(p, cause),
        Settle::StoreRetry { .. } => m.deferred(p, "database"),
        Settle::Hold => {}
    }
}

async fn settle(shared: &Shared, env: &Envelope, d: &Delivery, s: Settle) {
    count(shared, env, &s);
    match s {
        Settle::Hold => {}
        Settle::Later { delay, why, .. } => {
            // Frequent while a provider is slow: not an operator's concern at info level.
            tracing::debug!(retry_in_ms = delay.as_millis() as u64, "put back: {why}");
            redelay(shared, env, d, d.headers.clone(), delay).await;
        }
        Settle::StoreRetry {
            delay,
            failures,
            message,
        } => {
            let mut headers = d.headers.clone();
            headers
                .set(header::STORE_FAILURES, failures.to_string())
                .set(header::LAST_ERROR, clip(&message));
            redelay(shared, env, d, headers, delay).await;
        }
        Settle::Ack(_) => {
            if let Err(e) = d.ack().await {
                warn!(error = %e, "could not acknowledge; the broker will redeliver and the job will be recognised as a duplicate");
            }
        }
        Settle::Retry {
            delay,
            attempts,
            class,
            message,
        } => {
            let mut headers = d.headers.clone();
            headers
                .set(header::ATTEMPT, attempts.max(0).to_string())
                .set(header::LAST_ERROR_CLASS, class.as_str())
                .set(header::LAST_ERROR, clip(&message));
            redelay(shared, env, d, headers, delay).await;
        }
        Settle::Dead {
            reason,
            class,
            message,
        } => {
            let mut headers = d.headers.clone();
            dead_headers(&mut headers, reason, class, &message);
            publish_then_ack(
                shared,
                d,
                OutgoingMessage {
                    exchange: Exchange::DeadLetters,
                    routing_key: env.routing_key(),
                    message_id: env.id.to_string(),
                    body: d.body.clone(),
                    headers,
                },
            )
            .await;
        }
    }
}

/// Send the message back through the delay levels, to arrive after `delay`.
async fn redelay(
    shared: &Shared,
    env: &Envelope,
    d: &Delivery,
    mut headers: Headers,
    delay: Duration,
) {
    let topology = shared.broker.topology();
    let delay = delay.min(decide::MAX_DELAY);
    if delay > topology.max_delay() {
        let due = chrono::Duration::from_std(delay)
            .ok()
            .and_then(|d| Utc::now().checked_add_signed(d))
            .unwrap_or_else(Utc::now);
        headers.set(
            header::DUE_AT,
            due.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        );
    } else {
        headers.0.remove(header::DUE_AT);
    }
    headers
        .0
        .entry(header::FIRST_RECEIVED.to_owned())
        .or_insert_with(|| env.received_at.to_rfc3339());
    publish_then_ack(
        shared,
        d,
        OutgoingMessage {
            exchange: Exchange::Delay,
            routing_key: topology.delay_routing_key(delay, &env.routing_key()),
            message_id: env.id.to_string(),
            body: d.body.clone(),
            headers,
        },
    )
    .await;
}

/// Publish (confirmed), then acknowledge the original. If publishing fails the original is
/// left to the broker, which redelivers it: nothing is lost, at worst it is processed again.
async fn publish_then_ack(shared: &Shared, d: &Delivery, msg: OutgoingMessage) {
    match shared.broker.publish(std::slice::from_ref(&msg)).await {
        Ok(()) => {
            if let Err(e) = d.ack().await {
                warn!(error = %e, "published onward but could not acknowledge; the broker will redeliver");
            }
        }
        Err(e) => {
            warn!(error = %e, exchange = ?msg.exchange, "could not publish onward; returning the delivery to its queue");
            let _ = d.requeue().await;
        }
    }
}

fn dead_headers(headers: &mut Headers, reason: DeadReason, class: ErrorClass, message: &str) {
    headers
        .set(header::DEAD_REASON, reason.as_str())
        .set(header::DEAD_AT, Utc::now().to_rfc3339())
        .set(header::LAST_ERROR_CLASS, class.as_str())
        .set(header::LAST_ERROR, clip(message));
}

fn due_at(h: &Headers) -> Option<DateTime<Utc>> {
    h.get(header::DUE_AT)
        .and_then(|v| DateTime::parse_from_rfc3339(v).ok())
        .map(|t| t.with_timezone(&Utc))
}

/// `base` to twice `base`, so that jobs put back together do not return together.
fn jittered(base: Duration) -> Duration {
    base + Duration::from_millis(rand::random_range(0..=base.as_millis() as u64))
}

/// Header values stay small.
fn clip(s: &str) -> String {
    if s.len() <= 512 {
        return s.to_owned();
    }
    let mut end = 512;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}
