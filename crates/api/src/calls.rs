//! `/v1/integrations/{id}/operations…`: run a connector's named operation and wait for the
//! provider's answer; list the calls (the pending ones waiting for a callback).
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Json, Response};
use serde::{Deserialize, Serialize};
use std::time::Duration;
use switchyard_ops::calls::RunError;
use switchyard_store::{CallFilter, OperationCall};
use utoipa::{IntoParams, ToSchema};

use crate::jobs::Visible;
use crate::manage::{IntegrationId, query};
use crate::openapi::Errors;
use crate::{ApiError, SharedState};

type ApiResult<T> = Result<T, ApiError>;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // Read by the handler through `Path`; here to describe the path.
pub(crate) struct OperationPath {
    /// The integration's id.
    id: uuid::Uuid,
    /// The operation's name (`charge`, `query`, `send`…; `GET /v1/connectors/{name}` lists them).
    name: String,
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct RunOptions {
    /// How long to wait for the provider's answer, in seconds (1 to 120; default 30).
    timeout_secs: Option<u64>,
}

#[utoipa::path(post, path = "/v1/integrations/{id}/operations/{name}", tag = "operations",
    summary = "Run an operation and wait for its answer",
    description = "Calls the connector's named operation (M-Pesa's `charge`, `query`…) through the integration's rate limits and circuit breaker, and answers with the call: `200` when it ended (`succeeded` or `failed`, with the provider's answer or error), `202` when it is `pending` (the provider will report the result: a callback, or a query after a while, settles it and delivers the outcome through the integration's routes). Unsafe operations need an `Idempotency-Key` header: the same key answers with the same call (`Idempotent-Replayed: true`), never a second charge; the same key with another input is refused. The call is also a job: `GET /v1/jobs/{id}` shows its attempts.",
    params(OperationPath, RunOptions,
        ("Idempotency-Key" = Option<String>, Header, description = "Required for unsafe operations: 1 to 255 characters, unique per request you mean")),
    request_body(content = Object, description = "The operation's input (`GET /v1/connectors/{name}` lists the fields each needs)."),
    responses(
        (status = 200, body = OperationCall, description = "It ended: `succeeded` or `failed`"),
        (status = 202, body = OperationCall, description = "It is `pending`: the result comes later"),
        (status = 400, body = crate::ErrorBody, description = "No `Idempotency-Key` for an unsafe operation, or a body that is not a JSON object"),
        (status = 404, body = crate::ErrorBody, description = "No such integration or operation"),
        (status = 409, body = crate::ErrorBody, description = "The call with this key is still running"),
        (status = 422, body = crate::ErrorBody, description = "Input missing, or the key was used with another input"),
        (status = 503, body = crate::ErrorBody, description = "The provider's breaker or rate limit kept the call from being made; the key may be used again after `Retry-After`"),
        Errors))]
pub(crate) async fn run(
    State(state): State<SharedState>,
    Visible { integration: i, .. }: Visible,
    Path((_, name)): Path<(String, String)>,
    q: Result<Query<RunOptions>, axum::extract::rejection::QueryRejection>,
    headers: HeaderMap,
    b: Result<Option<Json<serde_json::Value>>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Response> {
    let opts = query(q)?;
    let timeout = opts.timeout_secs.unwrap_or(30);
    if !(1..=120).contains(&timeout) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_query",
            "timeout_secs is between 1 and 120",
        ));
    }
    let input = crate::manage::optional_body(b)?;
    let input = if input.is_null() {
        serde_json::json!({})
    } else {
        input
    };
    let key = match headers.get("idempotency-key") {
        None => None,
        Some(v) => Some(v.to_str().map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_idempotency_key",
                "the Idempotency-Key is printable ASCII",
            )
        })?),
    };
    let ran = state
        .calls
        .run(&i, &name, &input, key, Duration::from_secs(timeout))
        .await
        .map_err(|e| run_error(&state, e))?;
    let status = if ran.call.status == "pending" {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    let mut resp = (status, Json(ran.call)).into_response();
    if ran.replayed {
        resp.headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(resp)
}

fn run_error(state: &SharedState, e: RunError) -> ApiError {
    let message = e.to_string();
    match e {
        RunError::UnknownOperation(_) => {
            ApiError::new(StatusCode::NOT_FOUND, "unknown_operation", message)
        }
        RunError::Invalid(_) => {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_input", message)
        }
        RunError::KeyRequired(_) => {
            ApiError::new(StatusCode::BAD_REQUEST, "idempotency_key_required", message)
        }
        RunError::KeyReused(_) => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency_key_reused",
            message,
        ),
        RunError::InProgress(_) => ApiError {
            retry_after_secs: Some(1),
            ..ApiError::new(StatusCode::CONFLICT, "operation_in_progress", message)
        },
        RunError::NotMade { retry_after, .. } => ApiError::unavailable(
            "provider_unavailable",
            message,
            retry_after.as_secs().clamp(1, u32::MAX as u64) as u32,
        ),
        RunError::Unusable(_) => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "integration_unusable",
            message,
        ),
        RunError::Store(e) => state.store_error(e),
    }
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct CallQuery {
    /// `running`, `pending`, `succeeded`, `failed` or `expired`.
    status: Option<String>,
    /// The provider's reference (M-Pesa's `CheckoutRequestID`).
    reference: Option<String>,
    /// At most this many (default 100, at most 1000).
    limit: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct CallList {
    calls: Vec<OperationCall>,
}

#[utoipa::path(get, path = "/v1/integrations/{id}/operations", tag = "operations",
    summary = "List its operation calls",
    description = "Newest first; `?status=pending` lists the calls waiting for the provider's result.",
    params(IntegrationId, CallQuery),
    responses((status = 200, body = CallList), Errors))]
pub(crate) async fn list(
    State(state): State<SharedState>,
    Visible { integration: i, .. }: Visible,
    q: Result<Query<CallQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<CallList>> {
    let q = query(q)?;
    if let Some(s) = &q.status
        && !["running", "pending", "succeeded", "failed", "expired"].contains(&s.as_str())
    {
        return Err(crate::manage::bad(
            "status",
            "one of running, pending, succeeded, failed, expired",
        ));
    }
    let calls = state
        .store
        .list_calls(&CallFilter {
            integration_id: Some(i.id),
            tenant: None,
            status: q.status,
            reference: q.reference,
            limit: q.limit.unwrap_or(100),
        })
        .await
        .map_err(|e| state.store_error(e))?;
    Ok(Json(CallList { calls }))
}
