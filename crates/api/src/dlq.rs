//! `/v1/dlq`: list, replay and purge dead letters (admin token).
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Json, Response};
use serde::{Deserialize, Serialize};
use switchyard_ops::dlq::{self, DeadLetter, DlqError, Filter, Options, Report};
use switchyard_store::Operation;
use utoipa::{IntoParams, ToSchema};

use crate::jobs::{Caller, Principal};
use crate::openapi::Errors;
use crate::{ApiError, SharedState};

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct DeadLetterList {
    dead_letters: Vec<DeadLetter>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListQuery {
    /// The target's provider.
    provider: Option<String>,
    /// Only this tenant's (admin token only; a tenant's key sees its own).
    tenant: Option<String>,
    integration_id: Option<uuid::Uuid>,
    entity: Option<String>,
    reason: Option<switchyard_core::DeadReason>,
    job_id: Option<uuid::Uuid>,
    /// Dead-lettered at or after.
    since: Option<chrono::DateTime<chrono::Utc>>,
    /// Dead-lettered before.
    until: Option<chrono::DateTime<chrono::Utc>>,
    /// How many (default 100).
    #[param(minimum = 1, maximum = 10000)]
    limit: Option<usize>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ActionBody {
    /// Which dead letters (every field narrows it; a tenant's key is held to its own).
    #[serde(default)]
    filter: Filter,
    /// Say what would be done, and do nothing.
    #[serde(default)]
    dry_run: bool,
    /// At most this many (default 1000).
    #[schema(minimum = 1, maximum = 100000)]
    limit: Option<usize>,
    /// Replays per second at most (0.1 to 10,000; by default as fast as the broker
    /// confirms).
    #[schema(minimum = 0.1, maximum = 10000.0)]
    rate: Option<f64>,
}

fn error(e: DlqError, retry: u32) -> ApiError {
    match e {
        DlqError::UnknownProvider(..) => {
            ApiError::new(StatusCode::BAD_REQUEST, "unknown_provider", e.to_string())
        }
        DlqError::Publish(_) => {
            ApiError::unavailable("broker_unavailable", format!("{e}; retry later"), retry)
        }
        DlqError::Store(s) => ApiError::from_store(s, retry),
        DlqError::Invalid(f) => crate::manage::bad(&f.field, f.reason),
    }
}

#[utoipa::path(get, path = "/v1/dlq", tag = "dead letters",
    summary = "List dead letters, newest first",
    params(ListQuery),
    responses((status = 200, body = DeadLetterList), Errors))]
pub(crate) async fn list(
    State(state): State<SharedState>,
    Caller(who): Caller,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<DeadLetterList>, ApiError> {
    let Query(q) = query
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", e.body_text()))?;
    let filter = Filter {
        provider: q.provider,
        // A tenant sees its own dead letters only.
        tenant: who.tenant().map(str::to_owned).or(q.tenant),
        integration_id: q.integration_id,
        entity: q.entity,
        reason: q.reason,
        job_id: q.job_id,
        since: q.since,
        until: q.until,
    };
    let rows = dlq::list(&state.store, &filter, q.limit.unwrap_or(100))
        .await
        .map_err(|e| error(e, state.cfg.retry_after_secs))?;
    Ok(Json(DeadLetterList { dead_letters: rows }))
}

async fn act(
    state: SharedState,
    who: Principal,
    body: Result<Json<ActionBody>, axum::extract::rejection::JsonRejection>,
    replay: bool,
) -> Result<Response, ApiError> {
    let Json(mut b) =
        body.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_body", e.body_text()))?;
    if let Some(t) = who.tenant() {
        // A tenant replays and purges its own dead letters only.
        b.filter.tenant = Some(t.to_owned());
    }
    let o = Options {
        dry_run: b.dry_run,
        limit: b.limit.unwrap_or(1000),
        rate: b.rate,
        actor: who.actor(),
    };
    let retry = state.cfg.retry_after_secs;
    if o.dry_run {
        // Nothing moves: answered at once.
        let r = if replay {
            dlq::replay(&state.broker, &state.store, &b.filter, &o).await
        } else {
            dlq::purge(&state.store, &b.filter, &o).await
        }
        .map_err(|e| error(e, retry))?;
        return Ok(Json(r).into_response());
    }
    let op = dlq::start(
        &state.broker,
        &state.store,
        b.filter,
        o,
        replay,
        who.tenant(),
    )
    .await
    .map_err(|e| error(e, retry))?;
    let location = format!("/v1/operations/{}", op.id);
    Ok((
        StatusCode::ACCEPTED,
        [(header::LOCATION, location)],
        Json(op),
    )
        .into_response())
}

#[utoipa::path(post, path = "/v1/dlq/replay", tag = "dead letters",
    summary = "Replay dead letters",
    description = "Each one's job is reset and sent again to its queue. A dry run answers at once which would be; otherwise the replay runs in the background and the answer is its operation (`Location`), whose progress and report `GET /v1/operations/{id}` reads.",
    request_body = ActionBody,
    responses(
        (status = 200, body = Report, description = "A dry run: what would be replayed"),
        (status = 202, body = Operation, description = "Started: follow it at `Location`",
            headers(("Location" = String, description = "The operation"))),
        Errors))]
pub(crate) async fn replay(
    State(state): State<SharedState>,
    Caller(who): Caller,
    body: Result<Json<ActionBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    act(state, who, body, true).await
}

#[utoipa::path(post, path = "/v1/dlq/purge", tag = "dead letters",
    summary = "Purge dead letters",
    description = "Gone for good (their jobs stay `dead`). A dry run answers at once which would be; otherwise the purge runs in the background and the answer is its operation.",
    request_body = ActionBody,
    responses(
        (status = 200, body = Report, description = "A dry run: what would be purged"),
        (status = 202, body = Operation, description = "Started: follow it at `Location`",
            headers(("Location" = String, description = "The operation"))),
        Errors))]
pub(crate) async fn purge(
    State(state): State<SharedState>,
    Caller(who): Caller,
    body: Result<Json<ActionBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    act(state, who, body, false).await
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct OperationsQuery {
    /// How many (default 20, at most 500).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct OperationList {
    /// Newest first.
    operations: Vec<Operation>,
}

/// `GET /v1/operations`: the caller's long operations, newest first.
#[utoipa::path(get, path = "/v1/operations", tag = "dead letters",
    summary = "Long operations (replays, purges), newest first",
    params(OperationsQuery),
    responses((status = 200, body = OperationList), Errors))]
pub(crate) async fn operations(
    State(state): State<SharedState>,
    Caller(who): Caller,
    q: Result<Query<OperationsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<OperationList>, ApiError> {
    let q = crate::manage::query(q)?;
    let operations = state
        .store
        .operations(who.tenant(), q.limit.unwrap_or(20))
        .await
        .map_err(|e| state.store_error(e))?;
    Ok(Json(OperationList { operations }))
}

/// `GET /v1/operations/{id}`: how far it got; its report once finished.
#[utoipa::path(get, path = "/v1/operations/{id}", tag = "dead letters",
    summary = "A long operation: its progress, and its report once finished",
    params(("id" = Uuid, Path, description = "The operation's id")),
    responses((status = 200, body = Operation), Errors))]
pub(crate) async fn operation(
    State(state): State<SharedState>,
    Caller(who): Caller,
    Path(raw): Path<String>,
) -> Result<Json<Operation>, ApiError> {
    visible_operation(&state, &who, &raw).await.map(Json)
}

/// The operation, if the caller may see it: another tenant's (or the admin's) operation does
/// not exist, for a tenant.
pub(crate) async fn visible_operation(
    state: &SharedState,
    who: &Principal,
    raw: &str,
) -> Result<Operation, ApiError> {
    let id = crate::manage::id(raw)?;
    let op = state
        .store
        .operation(id)
        .await
        .map_err(|e| state.store_error(e))?;
    if let Some(t) = who.tenant()
        && op.tenant.as_deref() != Some(t)
    {
        return Err(ApiError::not_found(format!("operation {id} not found")));
    }
    Ok(op)
}
