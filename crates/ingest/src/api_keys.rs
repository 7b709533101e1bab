//! `/v1/api-keys`: tenants' API keys (the admin token only).
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Json;
use serde::Deserialize;
use serde_json::{Value, json};
use switchyard_ops::api_keys::{self, ApiKeyError};

use crate::jobs::{Caller, Principal};
use crate::manage::bad;
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListQuery {
    tenant: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateBody {
    tenant: String,
    name: String,
}

fn key_json(k: &switchyard_store::ApiKey) -> Value {
    json!({"tenant": k.tenant, "name": k.name, "created_at": k.created_at,
           "revoked_at": k.revoked_at})
}

/// `GET /v1/api-keys?tenant=`: keys, never the keys themselves.
pub(crate) async fn list(
    State(state): State<SharedState>,
    _: Admin,
    q: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) =
        q.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", e.body_text()))?;
    let keys = state
        .store
        .list_api_keys(q.tenant.as_deref())
        .await
        .map_err(|e| state.store_error(e))?;
    Ok(Json(
        json!({"api_keys": keys.iter().map(key_json).collect::<Vec<_>>()}),
    ))
}

/// `POST /v1/api-keys`: a tenant's new key, returned once as `api_key`.
pub(crate) async fn create(
    State(state): State<SharedState>,
    _: Admin,
    b: Result<Json<CreateBody>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let Json(b) =
        b.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_body", e.body_text()))?;
    let created = api_keys::create(&state.store, &b.tenant, &b.name)
        .await
        .map_err(|e| match e {
            ApiKeyError::Invalid(f) => bad(&f.field, f.reason),
            ApiKeyError::Store(e) => state.store_error(e),
        })?;
    let mut v = key_json(&created.key);
    v["api_key"] = json!(created.plaintext);
    Ok((StatusCode::CREATED, Json(v)))
}

/// `DELETE /v1/api-keys/{tenant}/{name}`: revoke it at once.
pub(crate) async fn revoke(
    State(state): State<SharedState>,
    _: Admin,
    Path((tenant, name)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    state
        .store
        .revoke_api_key(&tenant, &name)
        .await
        .map_err(|e| state.store_error(e))?;
    Ok(Json(
        json!({"tenant": tenant, "name": name, "revoked": true}),
    ))
}
