//! `/v1/api-keys`: tenants' API keys (the admin token only).
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Json;
use serde::{Deserialize, Serialize};
use switchyard_ops::api_keys::{self, ApiKeyError};
use switchyard_store::ApiKey;
use utoipa::{IntoParams, ToSchema};

use crate::jobs::{Caller, Principal};
use crate::manage::bad;
use crate::openapi::Errors;
use crate::{ApiError, SharedState};

/// A caller with the admin token (`403 admin_only` for a tenant's key).
pub(crate) struct Admin;

impl axum::extract::FromRequestParts<SharedState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &SharedState,
    ) -> Result<Self, ApiError> {
        match Caller::from_request_parts(parts, state).await?.0 {
            Principal::Admin => Ok(Admin),
            Principal::Tenant(_) => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "admin_only",
                "API keys are managed with the admin token",
            )),
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListQuery {
    /// Only this tenant's.
    tenant: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateBody {
    /// The tenant the key acts for.
    tenant: String,
    /// A name for the key, unique within the tenant (`ci`, `erp-sync`…).
    name: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ApiKeyList {
    /// Never the keys themselves.
    api_keys: Vec<ApiKey>,
}

/// A new key: `api_key` is shown once, here.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ApiKeyCreated {
    #[serde(flatten)]
    key: ApiKey,
    /// The key: send it as `Authorization: Bearer <key>`. Shown once.
    api_key: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ApiKeyRevoked {
    tenant: String,
    name: String,
    revoked: bool,
}

/// `GET /v1/api-keys?tenant=`: keys, never the keys themselves.
#[utoipa::path(get, path = "/v1/api-keys", tag = "access",
    summary = "List tenants' API keys (admin token)",
    params(ListQuery),
    responses((status = 200, body = ApiKeyList), Errors))]
pub(crate) async fn list(
    State(state): State<SharedState>,
    _: Admin,
    q: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<ApiKeyList>, ApiError> {
    let Query(q) =
        q.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", e.body_text()))?;
    let keys = state
        .store
        .list_api_keys(q.tenant.as_deref())
        .await
        .map_err(|e| state.store_error(e))?;
    Ok(Json(ApiKeyList { api_keys: keys }))
}

/// `POST /v1/api-keys`: a tenant's new key, returned once as `api_key`.
#[utoipa::path(post, path = "/v1/api-keys", tag = "access",
    summary = "Create a tenant's API key (admin token)",
    request_body = CreateBody,
    responses((status = 201, body = ApiKeyCreated), Errors))]
pub(crate) async fn create(
    State(state): State<SharedState>,
    _: Admin,
    b: Result<Json<CreateBody>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<ApiKeyCreated>), ApiError> {
    let Json(b) =
        b.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_body", e.body_text()))?;
    let created = api_keys::create(&state.store, &b.tenant, &b.name)
        .await
        .map_err(|e| match e {
            ApiKeyError::Invalid(f) => bad(&f.field, f.reason),
            ApiKeyError::Store(e) => state.store_error(e),
        })?;
    Ok((
        StatusCode::CREATED,
        Json(ApiKeyCreated {
            key: created.key,
            api_key: created.plaintext,
        }),
    ))
}

/// `DELETE /v1/api-keys/{tenant}/{name}`: revoke it at once.
#[utoipa::path(delete, path = "/v1/api-keys/{tenant}/{name}", tag = "access",
    summary = "Revoke a tenant's API key at once (admin token)",
    params(("tenant" = String, Path), ("name" = String, Path)),
    responses((status = 200, body = ApiKeyRevoked), Errors))]
pub(crate) async fn revoke(
    State(state): State<SharedState>,
    _: Admin,
    Path((tenant, name)): Path<(String, String)>,
) -> Result<Json<ApiKeyRevoked>, ApiError> {
    api_keys::revoke(&state.store, &tenant, &name)
        .await
        .map_err(|e| state.store_error(e))?;
    Ok(Json(ApiKeyRevoked {
        tenant,
        name,
        revoked: true,
    }))
}
