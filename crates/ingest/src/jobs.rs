//! `GET /v1/jobs/{id}`: a job with its attempts.
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Json;
use serde_json::{Value, json};
use subtle::ConstantTimeEq;
use uuid::Uuid;

use crate::{ApiError, SharedState};

/// Management endpoints need `Authorization: Bearer <admin token>`.
pub(crate) fn require_admin(state: &SharedState, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(expected) = &state.admin_digest else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "management_disabled",
            "the management API is disabled: set SWITCHYARD_ADMIN_TOKEN to enable it",
        ));
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "missing_credentials",
                "send `Authorization: Bearer <admin token>`",
            )
        })?;
    let digest = switchyard_core::ids::secret_digest(given.trim());
    if bool::from(digest.as_bytes().ct_eq(expected.as_bytes())) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_credentials",
            "the bearer token is not valid",
        ))
    }
}

pub(crate) async fn show(
    State(state): State<SharedState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    require_admin(&state, &headers)?;
    let id: Uuid = id.parse().map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_id",
            format!("`{id}` is not a job id (a UUID)"),
        )
    })?;
    let retry = state.cfg.retry_after_secs;
    let job = state
        .store
        .job(id)
        .await
        .map_err(|e| ApiError::from_store(e, retry))?;
    let attempts = state
        .store
        .job_attempts(id)
        .await
        .map_err(|e| ApiError::from_store(e, retry))?;
    Ok(Json(json!({"job": job, "attempts": attempts})))
}
