//! `POST /v1/webhooks/{integration}`.
use axum::body::Body;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use chrono::Utc;
use serde_json::Value;
use switchyard_broker::{OutgoingMessage, PublishError};
use switchyard_core::{Envelope, IntegrationStatus, ids};
use tracing::{Instrument, Span, info, warn};
use uuid::Uuid;

use crate::sources::Source;
use crate::{ApiError, SharedState};
use switchyard_api::ErrorBody;
use switchyard_core::inbound::InboundEvent;
use switchyard_core::webhook_auth::Verified;
use switchyard_store::RouteTarget;

/// The webhook is durable: its jobs are in the broker, one per target that takes it.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(crate) struct Accepted {
    /// One job per target, by id (the same ids when the event was sent before).
    pub(crate) jobs: Vec<Uuid>,
    /// One message per channel route that takes the event (`GET /v1/messages/{id}`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) messages: Vec<Uuid>,
    /// The event was sent before; nothing new was queued.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) duplicate: Option<bool>,
    /// Targets whose route did not take the event, and why.
    pub(crate) skipped: Vec<Skipped>,
    /// Why nothing was queued, when no route takes the event; what a callback settled.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) note: Option<String>,
}

#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(crate) struct Skipped {
    /// The target integration's name.
    pub(crate) target: String,
    pub(crate) reason: String,
}

#[utoipa::path(post, path = "/v1/webhooks/{integration}", tag = "webhooks",
    summary = "Send an event",
    description = "Authenticated as the integration says (an API key, basic auth, a signature scheme, an IP allowlist), not by a bearer token. `202` only once the event's jobs are durable in the broker; a retried event (the same event id) is answered with the same job ids and queued once.",
    security(()),
    params(("integration" = Uuid, Path, description = "The sending integration's id")),
    request_body(content = Object, description = "The sender's event, as its inbound spec reads it; at most the configured size (1 MiB by default)."),
    responses(
        (status = 202, body = Accepted),
        (status = 400, body = ErrorBody, description = "The body is not valid JSON, or holds a NUL character"),
        (status = 401, body = ErrorBody, description = "Not authenticated as the integration's sender"),
        (status = 403, body = ErrorBody, description = "Webhooks are disabled for it, or its allowlist refuses the sender"),
        (status = 404, body = ErrorBody, description = "No such integration"),
        (status = 408, body = ErrorBody, description = "The body came too slowly"),
        (status = 409, body = ErrorBody, description = "The integration is not active"),
        (status = 413, body = ErrorBody, description = "The body is larger than allowed"),
        (status = 415, body = ErrorBody, description = "Not JSON"),
        (status = 422, body = ErrorBody, description = "The event lacks what its inbound spec reads (its id, entity…)"),
        (status = 503, body = ErrorBody, description = "The broker or database is unavailable; retry after `Retry-After`")))]
pub(crate) async fn receive(
    State(state): State<SharedState>,
    Path(integration): Path<String>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let query = query_of(&uri);
    observed(&state, &integration, peer, &headers, &query, Some(body)).await
}

/// The URL's query parameters.
fn query_of(uri: &axum::http::Uri) -> Vec<(String, String)> {
    uri.query()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect()
        })
        .unwrap_or_default()
}

/// [`handle`] in the webhook's span (continuing the sender's trace), timed and counted.
async fn observed(
    state: &SharedState,
    integration: &str,
    peer: std::net::SocketAddr,
    headers: &HeaderMap,
    query: &[(String, String)],
    body: Option<Body>,
) -> Result<Response, ApiError> {
    let span = tracing::info_span!("webhook", %integration, peer = %peer.ip(),
        event_id = tracing::field::Empty, entity = tracing::field::Empty,
        jobs = tracing::field::Empty, otel.kind = "server");
    // A sender's trace goes on here (when traces are exported).
    if let Some(tp) = headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .filter(|t| valid_traceparent(t))
    {
        switchyard_telemetry::continue_trace(&span, tp);
    }
    let clock = std::time::Instant::now();
    let result = handle(state, integration, peer, headers, query, body)
        .instrument(span)
        .await;
    let took = clock.elapsed();
    match &result {
        Ok((outcome, _)) => state.metrics.webhook(outcome, "ok", took),
        Err(e) if e.status == StatusCode::SERVICE_UNAVAILABLE => {
            state.metrics.webhook("unavailable", e.code, took)
        }
        Err(e) => state.metrics.webhook("rejected", e.code, took),
    }
    result.map(|(_, r)| r)
}

#[utoipa::path(get, path = "/v1/webhooks/{integration}", tag = "webhooks",
    summary = "Send an event as a GET, or answer a subscription challenge",
    description = "For senders that call back with a GET (Pesapal's IPN): the query parameters are the event (less `key`, the integration's key when its webhook authentication is `query_key`), handled as a POSTed one is. A subscription challenge (Meta's WhatsApp Cloud API: `hub.mode=subscribe`, `hub.verify_token`, `hub.challenge`) is answered with the challenge, as text, when the token is the integration's verify token.",
    security(()),
    params(("integration" = Uuid, Path, description = "The sending integration's id")),
    responses(
        (status = 200, body = String, content_type = "text/plain", description = "The challenge, when the verify token matches"),
        (status = 202, body = Accepted),
        (status = 401, body = ErrorBody, description = "Not authenticated as the integration's sender"),
        (status = 403, body = ErrorBody, description = "A challenge with a verify token that is not the integration's"),
        (status = 404, body = ErrorBody, description = "No such integration"),
        (status = 422, body = ErrorBody, description = "The event lacks what its inbound spec reads"),
        (status = 503, body = ErrorBody, description = "The broker or database is unavailable; retry after `Retry-After`")))]
pub(crate) async fn receive_get(
    State(state): State<SharedState>,
    Path(integration): Path<String>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    uri: axum::http::Uri,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let query = query_of(&uri);
    let param = |name: &str| {
        query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    if param("hub.mode") == Some("subscribe") {
        return challenge(
            &state,
            &integration,
            param("hub.verify_token"),
            param("hub.challenge"),
        )
        .await;
    }
    observed(&state, &integration, peer, &headers, &query, None).await
}

/// A subscription challenge: the challenge back, as text, when the verify token is the
/// integration's.
async fn challenge(
    state: &SharedState,
    integration: &str,
    token: Option<&str>,
    challenge: Option<&str>,
) -> Result<Response, ApiError> {
    let id: Uuid = integration.parse().map_err(|_| {
        reject(
            StatusCode::NOT_FOUND,
            "unknown_integration",
            format!("no integration `{integration}`"),
        )
    })?;
    let source = state
        .sources
        .get(id)
        .await
        .map_err(|e| ApiError::from_store(e, state.cfg.retry_after_secs))?
        .ok_or_else(|| {
            reject(
                StatusCode::NOT_FOUND,
                "unknown_integration",
                format!("no integration {id}"),
            )
        })?;
    let (Some(token), Some(challenge)) = (token, challenge) else {
        return Err(reject(
            StatusCode::BAD_REQUEST,
            "invalid_challenge",
            "a subscription challenge carries hub.verify_token and hub.challenge".into(),
        ));
    };
    if !source.policy.verify_token_matches(token) {
        return Err(reject(
            StatusCode::FORBIDDEN,
            "invalid_verify_token",
            "the verify token is not this integration's (set it with webhook_auth.verify_token)"
                .into(),
        ));
    }
    info!(integration = %id, "subscription challenge answered");
    Ok((
        StatusCode::OK,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        challenge.to_owned(),
    )
        .into_response())
}

/// A webhook goes through four stages, each of which may refuse it with a clear error:
/// authenticate (the integration, its sender, the body and its signature) → parse (the
/// event the integration's inbound spec reads) → route (the targets that take it) →
/// enqueue (one durable job per target, once).
async fn handle(
    state: &SharedState,
    integration: &str,
    peer: std::net::SocketAddr,
    headers: &HeaderMap,
    query: &[(String, String)],
    body: Option<Body>,
) -> Result<(&'static str, Response), ApiError> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let (source, raw, verified) =
        match authenticate(state, integration, peer, headers, query, body).await {
            Ok(x) => x,
            // A provider with a protocol of its own is refused in it (Payme: -32504).
            Err(e) if e.status == StatusCode::UNAUTHORIZED => {
                return match crate::merchant::refused(state, integration).await {
                    Some(reply) => Ok(("rejected", reply)),
                    None => Err(e),
                };
            }
            Err(e) => return Err(e),
        };
    if let Some(m) = &source.merchant {
        return crate::merchant::handle(state, &source, m, &raw).await;
    }
    let doc = document(
        &header(header::CONTENT_TYPE.as_str()).unwrap_or_default(),
        &raw,
    )?;
    if !source.settles.is_empty()
        && let Some(answer) = crate::callbacks::settle(state, &source, &doc).await?
    {
        return Ok(answer);
    }
    let event = parse(&source, doc, &raw, &header, &verified)?;
    let span = Span::current();
    span.record("event_id", event.event_id.as_str());
    span.record("entity", event.entity.as_str());
    // Messages over channel routes are made (durably, in the database) before any job is
    // published: a sender that retries after a 503 gets the same messages.
    let messages = messages(state, &source, &event).await?;
    let (targets, skipped) = route(state, &source, &event);
    if targets.is_empty() {
        if !messages.is_empty() {
            let duplicate = messages.iter().all(|(_, new)| !new);
            info!(event = %event.event, messages = messages.len(), duplicate, "webhook accepted as messages");
            return Ok((
                if duplicate { "duplicate" } else { "accepted" },
                (
                    StatusCode::ACCEPTED,
                    Json(Accepted {
                        jobs: Vec::new(),
                        messages: messages.into_iter().map(|(id, _)| id).collect(),
                        duplicate: Some(duplicate),
                        skipped,
                        note: None,
                    }),
                )
                    .into_response(),
            ));
        }
        info!(event = %event.event, skipped = skipped.len(), "no route takes this event; nothing to do");
        return Ok((
            "no_route",
            (
                StatusCode::ACCEPTED,
                Json(Accepted {
                    jobs: Vec::new(),
                    messages: Vec::new(),
                    duplicate: None,
                    skipped,
                    note: Some(format!(
                        "no route from `{}` takes {}.{}",
                        source.name, event.entity, event.event
                    )),
                }),
            )
                .into_response(),
        ));
    }
    let messages = messages.into_iter().map(|(id, _)| id).collect();
    enqueue(state, &source, event, &targets, skipped, messages, &header).await
}

/// The messages the source's channel routes make of the event (id, whether new).
async fn messages(
    state: &SharedState,
    source: &Source,
    event: &InboundEvent,
) -> Result<Vec<(Uuid, bool)>, ApiError> {
    let routes = switchyard_ops::messages::matching(
        &source.channel_routes,
        &event.entity,
        &event.event,
        &event.payload,
    );
    if routes.is_empty() {
        return Ok(Vec::new());
    }
    state
        .store
        .create_messages(&routes, &event.event_id, &event.payload)
        .await
        .map_err(|e| ApiError::from_store(e, state.cfg.retry_after_secs))
}

/// Refuse a webhook: logged with the reason (never the secret, never the body).
pub(crate) fn reject(status: StatusCode, code: &'static str, message: String) -> ApiError {
    warn!(%code, %message, "webhook rejected");
    ApiError::new(status, code, message)
}

/// The integration exists, takes webhooks from this sender now, and the body (within its
/// limits) carries a valid signature or key.
async fn authenticate(
    state: &SharedState,
    integration: &str,
    peer: std::net::SocketAddr,
    headers: &HeaderMap,
    query: &[(String, String)],
    body: Option<Body>,
) -> Result<(std::sync::Arc<Source>, axum::body::Bytes, Verified), ApiError> {
    let retry = state.cfg.retry_after_secs;

    let id: Uuid = integration.parse().map_err(|_| {
        reject(
            StatusCode::NOT_FOUND,
            "unknown_integration",
            format!("no integration `{integration}` (webhook URLs name the integration's id)"),
        )
    })?;
    let source = state
        .sources
        .get(id)
        .await
        .map_err(|e| ApiError::from_store(e, retry))?
        .ok_or_else(|| {
            reject(
                StatusCode::NOT_FOUND,
                "unknown_integration",
                format!("no integration {id}"),
            )
        })?;
    if source.policy.auth == switchyard_core::webhook_auth::WebhookAuth::Disabled {
        let f = switchyard_core::webhook_auth::AuthFailure::Disabled;
        return Err(reject(
            StatusCode::FORBIDDEN,
            f.code(),
            // Not its name: the caller has proved nothing.
            format!(
                "integration {id} does not receive webhooks; give it a webhook authentication scheme to accept them"
            ),
        ));
    }
    let sender = crate::client::client_ip(peer.ip(), headers, &state.cfg.trusted_proxies);
    if !source.policy.allows(sender) {
        return Err(reject(
            StatusCode::FORBIDDEN,
            "ip_not_allowed",
            format!("{sender} may not send webhooks to this integration"),
        ));
    }

    // `?name` is the URL's query parameter (a callback URL's key).
    let header = |name: &str| match name.strip_prefix('?') {
        Some(param) => query
            .iter()
            .find(|(k, _)| k == param)
            .map(|(_, v)| v.clone()),
        None => headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
    };
    let raw = match body {
        Some(body) => read_body(state, &source, &header, body).await?,
        // A GET callback (Pesapal's IPN): its query parameters are the event, less the
        // integration's key.
        None => {
            let params: serde_json::Map<String, Value> = query
                .iter()
                .filter(|(k, _)| k != "key")
                .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                .collect();
            axum::body::Bytes::from(Value::Object(params).to_string())
        }
    };

    // Signatures are checked over the raw bytes, before anything reads them.
    let secrets: &[Vec<u8>] = match &source.secrets {
        Ok(s) => s,
        // The hub's fault (its vault key is missing), not the sender's: it should retry.
        Err(why) if source.policy.auth.needs_secrets() => {
            tracing::error!(%why, "this integration's webhook secrets cannot be opened; answering 503 until the vault key is configured");
            return Err(ApiError::unavailable(
                "secrets_unavailable",
                "this integration's signing secrets cannot be opened right now; try again later",
                retry,
            ));
        }
        Err(why) => {
            tracing::error!(%why, "this integration's webhook secrets cannot be opened");
            &[]
        }
    };
    let verified = source
        .policy
        .auth
        .verify(&header, &raw, secrets, Utc::now().timestamp())
        .map_err(|f| reject(StatusCode::UNAUTHORIZED, f.code(), f.to_string()))?;
    // Only a sender that proved itself learns the integration's name and status.
    if !matches!(
        source.status,
        IntegrationStatus::Active | IntegrationStatus::Testing
    ) {
        return Err(reject(
            StatusCode::CONFLICT,
            "integration_inactive",
            format!(
                "integration `{}` is {}; activate it to accept webhooks",
                source.name, source.status
            ),
        ));
    }
    Ok((source, raw, verified))
}

/// The body, within the integration's and the service's limits, in time; JSON or a form.
async fn read_body(
    state: &SharedState,
    source: &Source,
    header: &(dyn Fn(&str) -> Option<String> + Sync),
    body: Body,
) -> Result<axum::body::Bytes, ApiError> {
    let content_type = header(header::CONTENT_TYPE.as_str()).unwrap_or_default();
    if !is_json(&content_type) && !is_form(&content_type) {
        return Err(reject(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!(
                "expected Content-Type: application/json or application/x-www-form-urlencoded, got `{}`",
                if content_type.is_empty() {
                    "(none)"
                } else {
                    &content_type
                }
            ),
        ));
    }
    let limit = source
        .policy
        .max_body_bytes
        .map_or(state.cfg.max_body_bytes, |m| {
            m.min(state.cfg.max_body_bytes)
        });
    let too_large = || {
        reject(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("the body is larger than this endpoint's limit of {limit} bytes"),
        )
    };
    if header(header::CONTENT_LENGTH.as_str())
        .and_then(|v| v.parse::<usize>().ok())
        .is_some_and(|n| n > limit)
    {
        return Err(too_large());
    }
    let raw = axum::body::to_bytes(body, limit).await.map_err(|e| {
        // The body did not arrive in time (the server's body timeout), or was too large.
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&e);
        while let Some(c) = cause {
            if c.is::<tower_http::timeout::TimeoutError>() {
                return reject(
                    StatusCode::REQUEST_TIMEOUT,
                    "request_timeout",
                    "the body did not arrive in time; send it again".into(),
                );
            }
            cause = c.source();
        }
        too_large()
    })?;
    Ok(raw)
}

/// The event the integration's inbound spec reads from the body: its entity, id, version
/// and event id (refused: not JSON, missing what the spec needs, NUL characters, event ids
/// reserved for Switchyard).
fn parse(
    source: &Source,
    parsed: Value,
    raw: &[u8],
    header: &(dyn Fn(&str) -> Option<String> + Sync),
    verified: &Verified,
) -> Result<InboundEvent, ApiError> {
    if let Some(at) = nul_at(&parsed, &mut String::new()) {
        return Err(reject(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_event",
            format!(
                "the webhook contains a NUL character (\\u0000) at `{at}`, which no text field can hold; remove it"
            ),
        ));
    }
    let event = source
        .inbound
        .normalize(
            parsed,
            raw,
            header,
            // A scheme that signs no time: the signed content names the event, so a replay
            // under a new delivery id is a duplicate.
            verified
                .content_id
                .as_deref()
                .or(verified.delivery_id.as_deref()),
        )
        .map_err(|e| {
            reject(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_event",
                format!("the webhook lacks what this integration needs: {e}"),
            )
        })?;
    if ids::is_reserved_event_id(&event.event_id) {
        return Err(reject(
            StatusCode::UNPROCESSABLE_ENTITY,
            "reserved_event_id",
            format!(
                "event ids starting with {} are Switchyard's own; send another event id",
                ids::RESERVED_EVENT_PREFIXES.join(", ")
            ),
        ));
    }
    Ok(event)
}

/// Every matching route's targets, and those left out with why (a filter, a route that
/// drops jobs for its inactive target).
fn route<'s>(
    state: &SharedState,
    source: &'s Source,
    event: &InboundEvent,
) -> (Vec<&'s RouteTarget>, Vec<Skipped>) {
    let (active, skipped) = switchyard_ops::deliver::matching(
        &source.targets,
        &event.entity,
        &event.event,
        &event.payload,
    );
    if !skipped.is_empty() {
        state.metrics.skipped(skipped.len());
    }
    let skipped = skipped
        .into_iter()
        .map(|(target, reason)| Skipped { target, reason })
        .collect();
    (active, skipped)
}

/// One job per target, published durably once: a re-sent webhook whose jobs exist is
/// answered without publishing again; a broker that does not confirm is a 503.
async fn enqueue(
    state: &SharedState,
    source: &Source,
    mut event: InboundEvent,
    active: &[&RouteTarget],
    skipped: Vec<Skipped>,
    messages: Vec<Uuid>,
    header: &(dyn Fn(&str) -> Option<String> + Sync),
) -> Result<(&'static str, Response), ApiError> {
    let retry = state.cfg.retry_after_secs;
    let received_at = Utc::now();
    // The jobs continue this request's trace: its span, when traces are exported; else the
    // sender's traceparent, or a new one (so that logs can still be joined up).
    let trace = switchyard_telemetry::current_traceparent()
        .or_else(|| header("traceparent").filter(|t| valid_traceparent(t)))
        .unwrap_or_else(switchyard_ops::deliver::new_traceparent);
    let envelopes = switchyard_ops::deliver::envelopes(
        source.id,
        &switchyard_ops::deliver::Event {
            entity: &event.entity,
            event: &event.event,
            event_id: &event.event_id,
            internal_id: &event.internal_id,
            is_delete: event.is_delete,
            source_version: event.source_version,
            occurred_at: event.occurred_at,
            // Routes have been matched; the envelopes take the payload itself (below).
            payload: &Value::Null,
        },
        // The event's payload itself, not a copy: the envelopes are what is left of it.
        std::mem::take(&mut event.payload),
        active,
        received_at,
        &trace,
    );
    let job_ids: Vec<Uuid> = envelopes.iter().map(|e| e.id).collect();
    Span::current().record("jobs", job_ids.len());

    // A re-sent webhook whose jobs exist is answered without publishing again. Its jobs
    // exist when this process is still writing their rows (read first: a job that leaves
    // the set before the database is read was committed), or in the database. If the
    // database cannot say, publish: workers deduplicate by idempotency key.
    let mut existing = state.store.unrecorded().which(&job_ids);
    let unknown: Vec<Uuid> = job_ids
        .iter()
        .filter(|id| !existing.contains(id))
        .copied()
        .collect();
    if !unknown.is_empty() {
        match state.check.call(unknown).await {
            Some(Ok(ids)) => existing.extend(ids.iter().copied()),
            Some(Err(e)) => {
                warn!(error = %e, "could not check for duplicates; publishing (workers deduplicate)");
            }
            None => {}
        }
    }
    let outgoing: Vec<OutgoingMessage> = envelopes
        .iter()
        .filter(|e| !existing.contains(&e.id))
        .map(OutgoingMessage::job)
        .collect();
    if outgoing.is_empty() {
        info!("duplicate webhook: its jobs already exist");
        return Ok((
            "duplicate",
            (
                StatusCode::ACCEPTED,
                Json(Accepted {
                    jobs: job_ids,
                    messages,
                    duplicate: Some(true),
                    skipped,
                    note: None,
                }),
            )
                .into_response(),
        ));
    }

    if let Err(e) = state.broker.publish(&outgoing).await {
        let code = match e {
            PublishError::Nacked => "queue_full",
            _ => "broker_unavailable",
        };
        warn!(error = %e, "could not enqueue the webhook's jobs; asking the sender to retry");
        return Err(ApiError::unavailable(
            code,
            format!("the webhook was not accepted: {e}; retry later"),
            retry,
        ));
    }
    drop(outgoing);
    // The published envelopes themselves go to the queued rows (no copy of their payloads).
    let queued: Vec<Envelope> = envelopes
        .into_iter()
        .filter(|e| !existing.contains(&e.id))
        .collect();
    for e in &queued {
        state
            .metrics
            .jobs
            .with_label_values(&[e.provider.as_str()])
            .inc();
    }
    // Their rows are written after the answer, many webhooks' in one insert (a worker's claim
    // makes a row it misses). Until then the jobs wait in `Unrecorded`, where this process's
    // duplicate checks and reads find them.
    state.store.unrecorded().add(queued.iter().map(|e| e.id));
    if let Err(queued) = state.record.submit(queued).await {
        // Ingest is stopping: the workers will make the rows.
        state
            .store
            .unrecorded()
            .remove(queued.iter().map(|e| &e.id));
    }
    info!(event = %event.event, internal_id = %event.internal_id, "webhook accepted");
    Ok((
        "accepted",
        (
            StatusCode::ACCEPTED,
            Json(Accepted {
                jobs: job_ids,
                messages,
                duplicate: Some(false),
                skipped,
                note: None,
            }),
        )
            .into_response(),
    ))
}

/// Where the first NUL character is in a JSON document (a key or a string), as a JSON
/// pointer (`""` for the root).
fn nul_at(v: &Value, at: &mut String) -> Option<String> {
    match v {
        Value::String(s) if s.contains('\0') => Some(at.clone()),
        Value::Object(m) => m.iter().find_map(|(k, x)| {
            let len = at.len();
            at.push('/');
            at.push_str(&k.replace('~', "~0").replace('/', "~1"));
            let found = if k.contains('\0') {
                Some(at.clone())
            } else {
                nul_at(x, at)
            };
            at.truncate(len);
            found
        }),
        Value::Array(items) => items.iter().enumerate().find_map(|(i, x)| {
            let len = at.len();
            at.push_str(&format!("/{i}"));
            let found = nul_at(x, at);
            at.truncate(len);
            found
        }),
        _ => None,
    }
}

/// The body as JSON: a JSON body as it is, a form's fields as an object of strings (the
/// last of a repeated name wins).
fn document(content_type: &str, raw: &[u8]) -> Result<Value, ApiError> {
    if is_form(content_type) {
        let fields: serde_json::Map<String, Value> = url::form_urlencoded::parse(raw)
            .map(|(k, v)| (k.into_owned(), Value::String(v.into_owned())))
            .collect();
        return Ok(Value::Object(fields));
    }
    serde_json::from_slice(raw).map_err(|e| {
        reject(
            StatusCode::BAD_REQUEST,
            "malformed_json",
            format!("the body is not valid JSON: {e}"),
        )
    })
}

fn is_form(content_type: &str) -> bool {
    content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .eq_ignore_ascii_case("application/x-www-form-urlencoded")
}

fn is_json(content_type: &str) -> bool {
    let mime = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
}

fn valid_traceparent(t: &str) -> bool {
    let parts: Vec<&str> = t.split('-').collect();
    parts.len() == 4
        && parts[0].len() == 2
        && parts[1].len() == 32
        && parts[2].len() == 16
        && parts[3].len() == 2
        && parts
            .iter()
            .all(|p| p.bytes().all(|b| b.is_ascii_hexdigit()))
        && parts[1] != "00000000000000000000000000000000"
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_content_types() {
        assert!(is_json("application/json"));
        assert!(is_json("application/json; charset=utf-8"));
        assert!(is_json("application/cloudevents+json"));
        assert!(!is_json("text/plain"));
        assert!(!is_json(""));
    }

    #[test]
    fn nul_characters_are_found_with_their_place() {
        let mut at = String::new();
        assert_eq!(
            nul_at(&json!({"a": [1, "x\u{0}"]}), &mut at).as_deref(),
            Some("/a/1")
        );
        assert_eq!(
            nul_at(&json!({"k\u{0}": 1}), &mut at).as_deref(),
            Some("/k\u{0}")
        );
        assert_eq!(nul_at(&json!({"a": "fine"}), &mut at), None);
    }

    #[test]
    fn traceparents() {
        assert!(valid_traceparent(
            &switchyard_ops::deliver::new_traceparent()
        ));
        assert!(!valid_traceparent("00-abc-def-01"));
    }
}
