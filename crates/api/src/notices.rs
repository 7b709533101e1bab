//! `GET /v1/notifications`: what operators were told (or are being told), newest first.
use axum::extract::{Query, State};
use axum::response::Json;
use serde::{Deserialize, Serialize};
use switchyard_store::Notification;
use utoipa::{IntoParams, ToSchema};

use crate::jobs::Caller;
use crate::openapi::Errors;
use crate::{ApiError, SharedState};

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct NoticesQuery {
    /// How many (default 50, at most 500).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct NotificationList {
    notifications: Vec<Notification>,
}

#[utoipa::path(get, path = "/v1/notifications", tag = "notifications",
    summary = "What operators were told, newest first",
    description = "An integration that moved to `error`, one that needs connecting again, dead letters beyond the threshold; with whether and when the configured URL took each. A tenant's key sees its own.",
    params(NoticesQuery),
    responses((status = 200, body = NotificationList), Errors))]
pub(crate) async fn list(
    State(state): State<SharedState>,
    Caller(who): Caller,
    q: Result<Query<NoticesQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<NotificationList>, ApiError> {
    let q = crate::manage::query(q)?;
    let notifications = state
        .store
        .notifications(who.tenant(), q.limit.unwrap_or(50))
        .await
        .map_err(|e| state.store_error(e))?;
    Ok(Json(NotificationList { notifications }))
}
