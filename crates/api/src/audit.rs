//! `GET /v1/audit`: who changed what, and when (a tenant sees its own things only).
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Json;
use serde::{Deserialize, Serialize};
use switchyard_store::{AuditEntry, AuditFilter};
use utoipa::{IntoParams, ToSchema};

use crate::jobs::Caller;
use crate::openapi::Errors;
use crate::{ApiError, SharedState};

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct AuditPage {
    /// Newest first.
    entries: Vec<AuditEntry>,
    /// Pass it as `before` for the next page; none after the last.
    next_before: Option<i64>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct AuditQuery {
    /// Only what was done to this tenant's things (admin token only).
    tenant: Option<String>,
    /// Who did it (`api:admin`, `api:tenant:acme`, `cli:…`).
    actor: Option<String>,
    /// `insert`, `update` or `delete`.
    action: Option<String>,
    /// The kind of thing (`integrations`, `routes`, `api_keys`…).
    object: Option<String>,
    since: Option<chrono::DateTime<chrono::Utc>>,
    until: Option<chrono::DateTime<chrono::Utc>>,
    /// The previous page's `next_before`.
    before: Option<i64>,
    /// At most 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
}

#[utoipa::path(get, path = "/v1/audit", tag = "access",
    summary = "Who changed what, and when",
    description = "Every change to integrations, routes, credentials, secrets, API keys, statuses and dead letters; never a secret's value.",
    params(AuditQuery),
    responses((status = 200, body = AuditPage), Errors))]
pub(crate) async fn list(
    State(state): State<SharedState>,
    Caller(who): Caller,
    q: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<AuditPage>, ApiError> {
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
    Ok(Json(AuditPage {
        entries,
        next_before: next,
    }))
}
