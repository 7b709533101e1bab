//! Operations with answers: a caller runs a connector's named operation (`charge`, `query`,
//! `send`) and waits for the provider's answer (`run`). A call goes through the
//! integration's rate limits and circuit breaker, is recorded as a job with its attempts,
//! and an unsafe operation is made at most once per `Idempotency-Key`: the same key
//! answers with the stored call.
//!
//! A pending call (the answer only acknowledged) is settled by the provider's callback
//! (ingest, [`settle`]) or, when none came in time, by asking ([`settle_due`], from the
//! leading scheduler). Settling delivers an event from the integration through its routes
//! (`payment.succeeded` → the school's ERP).
use chrono::{Duration as ChronoDuration, Utc};
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use std::time::{Duration, Instant};
use switchyard_broker::Broker;
use switchyard_core::{ErrorClass, IntegrationStatus};
use switchyard_providers::operations::{Outcome, SettleSpec};
use switchyard_providers::{Connector, HttpClient, ProviderError};
use switchyard_resilience::{Admission, BreakerPolicy, Guard, RetryDecision, RetryPolicy};
use switchyard_store::{
    AttemptRecord, Begun, CallEnd, Integration, NewCall, OperationCall, Settlement, Store,
    StoreError,
};
use switchyard_vault::Keyring;
use tracing::{info, warn};
use uuid::Uuid;

use crate::deliver::{self, DeliverError, Event};

/// What running operations needs.
#[derive(Clone)]
pub struct Calls {
    pub store: Store,
    pub broker: Broker,
    pub keyring: Arc<Keyring>,
    pub http: HttpClient,
    pub guard: Arc<Guard>,
    pub default_retry: RetryPolicy,
    pub default_breaker: BreakerPolicy,
}

impl std::fmt::Debug for Calls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Calls").finish_non_exhaustive()
    }
}

/// Provider calls a settling or sending round makes at once.
pub(crate) const AT_ONCE: usize = 8;

/// `f` over `items`, at most `n` at once (each in a task of its own); the results in the
/// order they end.
pub(crate) async fn at_most<T, F, Fut, R>(n: usize, items: Vec<T>, f: F) -> Vec<R>
where
    F: Fn(T) -> Fut,
    Fut: Future<Output = R> + Send + 'static,
    R: Send + 'static,
{
    let permits = Arc::new(tokio::sync::Semaphore::new(n.max(1)));
    let mut set = tokio::task::JoinSet::new();
    for item in items {
        let permits = permits.clone();
        let fut = f(item);
        set.spawn(async move {
            let _permit = permits.acquire_owned().await;
            fut.await
        });
    }
    let mut out = Vec::new();
    while let Some(r) = set.join_next().await {
        match r {
            Ok(r) => out.push(r),
            Err(e) => warn!(error = %e, "a provider call's task failed"),
        }
    }
    out
}

/// The longest a caller may wait for an operation's answer.
pub const MAX_DEADLINE: Duration = Duration::from_secs(120);

/// Why a call was not made (or cannot be answered).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{0}")]
    UnknownOperation(String),
    #[error("{0}")]
    Invalid(String),
    #[error(
        "`{0}` is unsafe (it may charge or send): give an `Idempotency-Key` header, so that a retried request is made once"
    )]
    KeyRequired(String),
    #[error(
        "this Idempotency-Key was used for `{0}` with another input; use a new key for a new request"
    )]
    KeyReused(String),
    #[error("the call with this Idempotency-Key is still running; ask again in a moment")]
    InProgress(Box<OperationCall>),
    /// The breaker or a rate limit kept the call from being made within the deadline; the
    /// key may be used again.
    #[error("{message}")]
    NotMade {
        message: String,
        retry_after: Duration,
    },
    #[error("the integration cannot be called: {0}")]
    Unusable(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A call's answer: the stored call, and whether it was made before (its key's).
#[derive(Debug)]
pub struct Ran {
    pub call: OperationCall,
    pub replayed: bool,
}

fn digest(v: &Value) -> String {
    hex::encode(Sha256::digest(v.to_string().as_bytes()))
}

impl Calls {
    fn connector(&self, i: &Integration) -> Result<Arc<dyn Connector>, String> {
        let creds = crate::integrations::open_credentials(&self.keyring, i)?;
        switchyard_providers::build(
            &i.provider,
            &i.settings,
            creds,
            &switchyard_providers::BuildContext::for_integration(
                self.http.clone(),
                self.store.clone(),
                self.keyring.clone(),
                i.id,
            ),
        )
        .map_err(|e| e.to_string())
    }

    /// Run `operation` of `i` with `input`, waiting at most `deadline` for the answer.
    pub async fn run(
        &self,
        i: &Integration,
        operation: &str,
        input: &Value,
        key: Option<&str>,
        deadline: Duration,
    ) -> Result<Ran, RunError> {
        let started = Instant::now();
        let deadline = deadline.min(MAX_DEADLINE);
        if !matches!(
            i.status,
            IntegrationStatus::Active | IntegrationStatus::Testing
        ) {
            return Err(RunError::Invalid(format!(
                "integration `{}` is {}; activate it to run its operations",
                i.name, i.status
            )));
        }
        let connector = self.connector(i).map_err(RunError::Unusable)?;
        let spec = connector.operation(operation).cloned().ok_or_else(|| {
            let names = connector.operation_names();
            RunError::UnknownOperation(if names.is_empty() {
                format!("`{}` ({}) declares no operations", i.name, i.provider)
            } else {
                format!(
                    "`{}` ({}) has no operation `{operation}`; it has {}",
                    i.name,
                    i.provider,
                    names.join(", ")
                )
            })
        })?;
        if !input.is_object() {
            return Err(RunError::Invalid(
                "the input is a JSON object of the operation's fields".into(),
            ));
        }
        let missing = spec.missing_input(input);
        if !missing.is_empty() {
            return Err(RunError::Invalid(format!(
                "`{operation}` needs {} in its input",
                missing.join(", ")
            )));
        }
        if !spec.safe && key.is_none() {
            return Err(RunError::KeyRequired(operation.to_owned()));
        }
        if let Some(k) = key
            && (k.is_empty() || k.len() > 255 || k.chars().any(char::is_control))
        {
            return Err(RunError::Invalid(
                "an Idempotency-Key is 1 to 255 printable characters".into(),
            ));
        }
        let input_sha256 = digest(input);
        let begun = self
            .store
            .begin_call(&NewCall {
                id: Uuid::now_v7(),
                tenant: &i.tenant,
                integration_id: i.id,
                provider: &i.provider,
                operation,
                idempotency_key: key,
                input,
                input_sha256: &input_sha256,
            })
            .await?;
        let call = match begun {
            Begun::Existing(c) if c.input_sha256 != input_sha256 => {
                return Err(RunError::KeyReused(operation.to_owned()));
            }
            Begun::Existing(c) if c.status == "running" => {
                return Err(RunError::InProgress(Box::new(c)));
            }
            Begun::Existing(c) => {
                return Ok(Ran {
                    call: c,
                    replayed: true,
                });
            }
            Begun::Make(c) => c,
        };

        let retry = switchyard_resilience::settings::retry(&self.default_retry, &i.settings)
            .unwrap_or_else(|_| self.default_retry.clone());
        let breaker = switchyard_resilience::settings::breaker(&self.default_breaker, &i.settings)
            .unwrap_or_else(|_| self.default_breaker.clone());
        let limits = switchyard_resilience::settings::rate_limits(&i.settings).unwrap_or_default();
        let account = i.id.to_string();
        let mut attempts: Vec<(AttemptRecord, &'static str)> = Vec::new();
        let left = |started: Instant| deadline.saturating_sub(started.elapsed());
        let result: Result<switchyard_providers::operations::OperationAnswer, ProviderError> = loop {
            // The breaker and the rate limits first; a wait that fits in the deadline is
            // waited out.
            let wait = match self.guard.admit(&account, &breaker, &limits).await {
                Admission::Go => None,
                Admission::Throttled(w) => Some((
                    ErrorClass::Throttled,
                    w,
                    format!(
                        "the integration's rate limit is used up; the next call may go in {} ms",
                        w.as_millis()
                    ),
                )),
                Admission::BreakerOpen(w) => Some((
                    ErrorClass::BreakerOpen,
                    w,
                    format!(
                        "the provider is failing (its circuit breaker is open); it is tried again in {} ms",
                        w.as_millis()
                    ),
                )),
            };
            if let Some((class, w, message)) = wait {
                if w < left(started) {
                    tokio::time::sleep(w).await;
                    continue;
                }
                if attempts.is_empty() {
                    self.store
                        .end_call(
                            call.id,
                            &CallEnd {
                                status: "failed",
                                called: false,
                                error_class: Some(class.as_str().into()),
                                error: Some(message.clone()),
                                ..CallEnd::default()
                            },
                        )
                        .await?;
                    return Err(RunError::NotMade {
                        message,
                        retry_after: w,
                    });
                }
                break Err(ProviderError::new(class, message));
            }
            let at = Utc::now();
            let clock = Instant::now();
            let answer = tokio::time::timeout(
                left(started).max(Duration::from_millis(1)),
                connector.operate(operation, input, key),
            )
            .await
            .unwrap_or_else(|_| {
                Err(ProviderError::new(
                    ErrorClass::Transient,
                    format!(
                        "the provider did not answer within the deadline ({} ms)",
                        deadline.as_millis()
                    ),
                ))
            });
            let took = clock.elapsed();
            let failed = matches!(&answer, Err(e) if e.class == ErrorClass::Transient);
            self.guard
                .record(&account, &breaker, breaker.outcome(failed, took))
                .await;
            let (status_code, request, response) = match &answer {
                Ok(a) => (
                    Some(a.status as i32),
                    Some(a.request.clone()),
                    Some(a.body.to_string()),
                ),
                Err(e) => (
                    e.status.map(i32::from),
                    e.request.clone(),
                    e.response.clone(),
                ),
            };
            let retryable = matches!(&answer, Err(e) if e.class.is_retryable());
            attempts.push((
                AttemptRecord {
                    started_at: at,
                    duration_ms: took.as_millis().min(i32::MAX as u128) as i32,
                    status_code,
                    error_class: answer.as_ref().err().map(|e| e.class),
                    error: answer.as_ref().err().map(|e| e.message.clone()),
                    request,
                    response,
                },
                match (&answer, retryable) {
                    (Ok(_), _) => "succeeded",
                    (Err(_), true) if spec.safe => "retrying",
                    (Err(_), _) => "dead",
                },
            ));
            // Only a safe operation is tried again: an unsafe one may have taken effect
            // even when its answer was lost.
            if let Err(e) = &answer
                && spec.safe
                && e.class.is_retryable()
                && let RetryDecision::RetryAfter(d) =
                    retry.decide(attempts.len() as u32, started.elapsed(), e.retry_after)
                && d < left(started)
            {
                tokio::time::sleep(d).await;
                continue;
            }
            break answer;
        };

        let end = match result {
            Ok(a) => {
                let (status, query_at) = match (&spec.settle, &a.outcome) {
                    // Refused at once (an SMS to an invalid number): nothing to wait for.
                    (Some(_), Some(o)) if !o.succeeded => ("failed", None),
                    (Some(s), _) => (
                        "pending",
                        match (&s.query, s.expire_after_secs) {
                            (Some(_), _) => Some(s.query_after_secs),
                            (None, Some(e)) => Some(e),
                            (None, None) => None,
                        }
                        .map(|secs| Utc::now() + ChronoDuration::seconds(secs as i64)),
                    ),
                    (None, Some(o)) if !o.succeeded => ("failed", None),
                    (None, _) => ("succeeded", None),
                };
                CallEnd {
                    status,
                    called: true,
                    reference: a.reference.clone(),
                    answer: Some(a.body.clone()),
                    answer_status: Some(a.status as i32),
                    result_code: a.outcome.as_ref().map(|o| o.code.clone()),
                    result_message: a.outcome.as_ref().and_then(|o| o.message.clone()),
                    query_at,
                    attempts,
                    ..CallEnd::default()
                }
            }
            Err(e) => CallEnd {
                status: "failed",
                called: !attempts.is_empty(),
                answer: e
                    .response
                    .as_deref()
                    .map(|r| serde_json::from_str(r).unwrap_or_else(|_| Value::String(r.into()))),
                answer_status: e.status.map(i32::from),
                error_class: Some(e.class.as_str().into()),
                error: Some(e.message),
                attempts,
                ..CallEnd::default()
            },
        };
        let call = self.store.end_call(call.id, &end).await?;
        info!(integration = %i.id, %operation, call = %call.id, status = %call.status, "operation called");
        Ok(Ran {
            call,
            replayed: false,
        })
    }

    /// Ask the provider how the pending calls whose time has come ended (up to `limit`);
    /// settle those it says have ended, ask the others again later, and give up (`expired`)
    /// on those asked `max_queries` times. Returns how many were settled.
    pub async fn settle_due(&self, limit: i64) -> Result<usize, StoreError> {
        let due = self
            .store
            .take_due_calls(limit, Duration::from_secs(60))
            .await?;
        let mut settled = 0;
        let mut unavailable = None;
        let results = at_most(AT_ONCE, due, |call| {
            let this = self.clone();
            async move { (call.id, this.query(&call).await) }
        })
        .await;
        for (id, r) in results {
            match r {
                Ok(true) => settled += 1,
                Ok(false) => {}
                Err(e) if e.is_unavailable() => unavailable = Some(e),
                Err(e) => {
                    warn!(call = %id, error = %e, "could not ask for a pending call's result")
                }
            }
        }
        match unavailable {
            Some(e) => Err(e),
            None => Ok(settled),
        }
    }

    /// A pending call not settled by asking: asked again later (doubling, at most hourly),
    /// or given up (`expired`) once it was asked `max_queries` times.
    async fn later(
        &self,
        call: &OperationCall,
        why: String,
        spec: Option<&SettleSpec>,
    ) -> Result<bool, StoreError> {
        let max = spec.map_or(1, |s| s.max_queries) as i32;
        let base = spec.map_or(60, |s| s.query_after_secs.max(1));
        let next = base.saturating_mul(1 << call.queries.clamp(0, 6)).min(3600);
        let expire = (call.queries >= max)
            .then(|| format!("no result after asking {} times: {why}", call.queries));
        info!(call = %call.id, %why, expired = expire.is_some(), "pending call not settled by asking");
        self.store
            .defer_call(
                call.id,
                Utc::now() + ChronoDuration::seconds(next as i64),
                expire.as_deref(),
            )
            .await
            .map(|_| false)
    }

    /// Ask for one pending call's result. `Ok(true)`: settled.
    async fn query(&self, call: &OperationCall) -> Result<bool, StoreError> {
        let i = match self.store.integration(call.integration_id).await {
            Ok(i) => i,
            // Nobody can ask any more.
            Err(StoreError::NotFound(_)) => {
                self.store
                    .defer_call(call.id, Utc::now(), Some("its integration was deleted"))
                    .await?;
                return Ok(false);
            }
            Err(e) => return Err(e),
        };
        let connector = match self.connector(&i) {
            Ok(c) => c,
            Err(e) => {
                return self
                    .later(call, format!("the integration cannot be called: {e}"), None)
                    .await;
            }
        };
        let Some(spec) = connector
            .operation(&call.operation)
            .and_then(|o| o.settle.clone())
        else {
            return self
                .later(
                    call,
                    format!("`{}` is no longer settled later", call.operation),
                    None,
                )
                .await;
        };
        let Some(query) = spec.query.clone() else {
            // Nothing to ask: no result within the time allowed is no result.
            let why = format!(
                "no result came within {} s",
                spec.expire_after_secs.unwrap_or_default()
            );
            info!(call = %call.id, %why, "pending call expired");
            self.store
                .defer_call(call.id, Utc::now(), Some(&why))
                .await?;
            return Ok(false);
        };
        let mut input = call.input.clone();
        if let (Value::Object(m), Some(r)) = (&mut input, &call.reference) {
            m.insert("reference".into(), Value::String(r.clone()));
        }
        let breaker = switchyard_resilience::settings::breaker(&self.default_breaker, &i.settings)
            .unwrap_or_else(|_| self.default_breaker.clone());
        let limits = switchyard_resilience::settings::rate_limits(&i.settings).unwrap_or_default();
        let account = i.id.to_string();
        if self.guard.admit(&account, &breaker, &limits).await != Admission::Go {
            return self
                .later(
                    call,
                    "the breaker or a rate limit held the query back".into(),
                    Some(&spec),
                )
                .await;
        }
        let clock = Instant::now();
        let answer = connector.operate(&query, &input, None).await;
        let failed = matches!(&answer, Err(e) if e.class == ErrorClass::Transient);
        self.guard
            .record(&account, &breaker, breaker.outcome(failed, clock.elapsed()))
            .await;
        match answer {
            Ok(a) => match a.outcome {
                Some(o) => settle(
                    &self.store,
                    &self.broker,
                    i.id,
                    call,
                    &spec,
                    &o,
                    &a.body,
                    "query",
                )
                .await
                .map(|s| s.settled)
                .or_else(|e| match e {
                    DeliverError::Store(s) => Err(s),
                    DeliverError::Broker(b) => {
                        warn!(call = %call.id, error = %b, "settled by asking, but the event could not be delivered yet; asking again later");
                        Ok(false)
                    }
                }),
                None => self.later(call, "the provider says it has not ended yet".into(), Some(&spec)).await,
            },
            Err(e) => self.later(call, e.message, Some(&spec)).await,
        }
    }
}

/// Deliver an event about a call through its integration's routes: `<entity>.<event>`, event
/// id `operation:<call id><suffix>`, the record being the call, data `{operation: {id, name,
/// reference, input, idempotency_key}, status: <event>}` and `more`'s fields.
#[allow(clippy::too_many_arguments)]
pub async fn deliver_about(
    store: &Store,
    broker: &Broker,
    source: Uuid,
    call: &OperationCall,
    entity: &str,
    event: &str,
    suffix: &str,
    more: Value,
) -> Result<deliver::Delivered, DeliverError> {
    let mut payload = serde_json::json!({
        "operation": {
            "id": call.id,
            "name": call.operation,
            "reference": call.reference,
            "input": call.input,
            "idempotency_key": call.idempotency_key,
        },
        "status": event,
    });
    if let (Value::Object(p), Value::Object(m)) = (&mut payload, more) {
        p.extend(m);
    }
    let event_id = format!(
        "{}{}{suffix}",
        switchyard_core::ids::OPERATION_EVENT_PREFIX,
        call.id
    );
    let internal_id = call.id.to_string();
    deliver::publish(
        store,
        broker,
        source,
        &Event {
            entity,
            event,
            event_id: &event_id,
            internal_id: &internal_id,
            is_delete: false,
            source_version: None,
            occurred_at: Some(Utc::now()),
            payload: &payload,
        },
    )
    .await
}

/// What settling did.
#[derive(Debug, Default)]
pub struct Settled {
    /// This settled the call (false: it was settled before).
    pub settled: bool,
    pub call: Option<OperationCall>,
    pub delivered: deliver::Delivered,
}

/// Settle a pending call with its outcome: the event (`<settle.entity>.succeeded` or
/// `.failed`, event id `operation:<call id>`) is delivered through the integration's
/// routes first (durably, once), then the call is marked. A call settled before is left as
/// it is, and its event is not delivered again.
#[allow(clippy::too_many_arguments)]
pub async fn settle(
    store: &Store,
    broker: &Broker,
    source: Uuid,
    call: &OperationCall,
    spec: &SettleSpec,
    outcome: &Outcome,
    result: &Value,
    by: &'static str,
) -> Result<Settled, DeliverError> {
    if call.status != "pending" {
        return Ok(Settled {
            settled: false,
            call: Some(call.clone()),
            ..Settled::default()
        });
    }
    let status = if outcome.succeeded {
        "succeeded"
    } else {
        "failed"
    };
    let delivered = deliver_about(
        store,
        broker,
        source,
        call,
        &spec.entity,
        status,
        "",
        serde_json::json!({
            "code": outcome.code,
            "message": outcome.message,
            "settled_by": by,
            "result": result,
        }),
    )
    .await?;
    let marked = store
        .settle_call(
            call.id,
            &Settlement {
                succeeded: outcome.succeeded,
                code: &outcome.code,
                message: outcome.message.as_deref(),
                result,
                by,
            },
        )
        .await?;
    info!(call = %call.id, %by, %status, jobs = delivered.jobs.len(), "pending call settled");
    // A message's channel call: the message goes on now, not at the channel's deadline.
    if marked.is_some()
        && let Some(message) = call
            .idempotency_key
            .as_deref()
            .and_then(crate::messages::message_of_key)
    {
        store.nudge_message(message).await?;
    }
    Ok(Settled {
        settled: marked.is_some(),
        call: marked,
        delivered,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_input_is_the_same_digest_whatever_the_order_of_its_fields() {
        // An Idempotency-Key sent again with the same input must not read as another input.
        let a: Value =
            serde_json::from_str(r#"{"phone": "2547", "amount": 10, "x": {"b": 1, "a": 2}}"#)
                .unwrap();
        let b: Value =
            serde_json::from_str(r#"{"x": {"a": 2, "b": 1}, "amount": 10, "phone": "2547"}"#)
                .unwrap();
        assert_eq!(digest(&a), digest(&b));
        let c: Value =
            serde_json::from_str(r#"{"phone": "2547", "amount": 11, "x": {"b": 1, "a": 2}}"#)
                .unwrap();
        assert_ne!(digest(&a), digest(&c));
    }

    #[test]
    fn a_message_is_named_by_its_channel_calls_key() {
        let id = Uuid::now_v7();
        assert_eq!(
            crate::messages::message_of_key(&format!("message:{id}:1")),
            Some(id)
        );
        assert_eq!(crate::messages::message_of_key("adm-0042"), None);
        assert_eq!(crate::messages::message_of_key("message:nope:0"), None);
    }
}
