//! `GET /v1/audit`: who changed what, and when (a tenant sees its own things only).
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Json;
use serde::Deserialize;
use serde_json::{Value, json};
use switchyard_store::AuditFilter;

use crate::jobs::Caller;
use crate::{ApiError, SharedState};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AuditQuery {
    tenant: Option<String>,
    actor: Option<String>,
    action: Option<String>,
    object: Option<String>,
    since: Option<chrono::DateTime<chrono::Utc>>,
    until: Option<chrono::DateTime<chrono::Utc>>,
    before: Option<i64>,
    /// At most 1000 (default 100).
    limit: Option<i64>,
}

pub(crate) async fn list(
    State(state): State<SharedState>,
    Caller(who): Caller,
    q: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) =
        q.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", e.body_text()))?;
    let filter = AuditFilter {
        // A tenant sees what was done to its own things.
        tenant: who.tenant().map(str::to_owned).or(q.tenant),
        actor: q.actor,
        action: q.action,
        object: q.object,
        since: q.since,
        until: q.until,
        before: q.before,
    };
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let entries = state
        .store
        .audit(&filter, limit)
        .await
        .map_err(|e| state.store_error(e))?;
    let next = (entries.len() as i64 == limit)
        .then(|| entries.last().map(|e| e.id))
        .flatten();
    Ok(Json(json!({"entries": entries, "next_before": next})))
}
