//! `/v1/dlq`: list, replay and purge dead letters (admin token).
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Json;
use serde::Deserialize;
use serde_json::{Value, json};
use switchyard_ops::dlq::{self, DlqError, Filter, Options};

use crate::jobs::{Caller, Principal};
use crate::{ApiError, SharedState};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListQuery {
    provider: Option<String>,
    tenant: Option<String>,
    integration_id: Option<uuid::Uuid>,
    entity: Option<String>,
    reason: Option<switchyard_core::DeadReason>,
    job_id: Option<uuid::Uuid>,
    since: Option<chrono::DateTime<chrono::Utc>>,
    until: Option<chrono::DateTime<chrono::Utc>>,
    limit: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ActionBody {
    #[serde(default)]
    filter: Filter,
    #[serde(default)]
    dry_run: bool,
    limit: Option<usize>,
    /// Replays per second at most.
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
        DlqError::BadRequest(m) => {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_field", m)
        }
    }
}

pub(crate) async fn list(
    State(state): State<SharedState>,
    Caller(who): Caller,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
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
    Ok(Json(json!({"dead_letters": rows})))
}

async fn act(
    state: SharedState,
    who: Principal,
    body: Result<Json<ActionBody>, axum::extract::rejection::JsonRejection>,
    replay: bool,
) -> Result<Json<Value>, ApiError> {
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
    let r = if replay {
        dlq::replay(&state.broker, &state.store, &b.filter, &o).await
    } else {
        dlq::purge(&state.store, &b.filter, &o).await
    }
    .map_err(|e| error(e, state.cfg.retry_after_secs))?;
    Ok(Json(serde_json::to_value(r).unwrap_or_default()))
}

pub(crate) async fn replay(
    State(state): State<SharedState>,
    Caller(who): Caller,
    body: Result<Json<ActionBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    act(state, who, body, true).await
}

pub(crate) async fn purge(
    State(state): State<SharedState>,
    Caller(who): Caller,
    body: Result<Json<ActionBody>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    act(state, who, body, false).await
}
