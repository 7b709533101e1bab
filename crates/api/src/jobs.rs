//! `GET /v1/jobs/{id}`: a job with its attempts.
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Json;
use subtle::ConstantTimeEq;
use switchyard_store::{JobAttempt, JobRow};
use uuid::Uuid;

use crate::openapi::Errors;
use crate::{ApiError, SharedState};

/// A job, with each attempt and the provider's answer to it.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(crate) struct JobDetail {
    job: JobRow,
    attempts: Vec<JobAttempt>,
}

/// Who is calling the management API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Principal {
    /// The operators' admin token: everything.
    Admin,
    /// A tenant's API key: that tenant's integrations, jobs and dead letters only.
    Tenant(String),
}

impl Principal {
    /// The tenant the caller is confined to, if any.
    pub(crate) fn tenant(&self) -> Option<&str> {
        match self {
            Principal::Admin => None,
            Principal::Tenant(t) => Some(t),
        }
    }

    pub(crate) fn actor(&self) -> String {
        match self {
            Principal::Admin => "api:admin".into(),
            Principal::Tenant(t) => format!("api:tenant:{t}"),
        }
    }
}

/// Management endpoints need `Authorization: Bearer <admin token or tenant API key>`.
pub(crate) async fn authorize(
    state: &SharedState,
    headers: &HeaderMap,
) -> Result<Principal, ApiError> {
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "missing_credentials",
                "send `Authorization: Bearer <admin token or tenant API key>`",
            )
        })?;
    authorize_token(state, given).await
}

/// Who a token is: the admin token, or an active API key (looked up by its digest, which
/// reveals nothing of the key).
pub(crate) async fn authorize_token(
    state: &SharedState,
    given: &str,
) -> Result<Principal, ApiError> {
    let digest = switchyard_core::ids::secret_digest(given.trim());
    if let Some(expected) = &state.admin_digest
        && bool::from(digest.as_bytes().ct_eq(expected.as_bytes()))
    {
        return Ok(Principal::Admin);
    }
    match state.store.api_key_tenant(&digest).await {
        Ok(Some(tenant)) => Ok(Principal::Tenant(tenant)),
        Ok(None) => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_credentials",
            "the bearer token is neither the admin token nor an active API key",
        )),
        Err(e) => Err(state.store_error(e)),
    }
}

#[utoipa::path(get, path = "/v1/jobs/{id}", tag = "jobs",
    summary = "A job, with its attempts",
    params(("id" = Uuid, Path, description = "The job's id")),
    responses((status = 200, body = JobDetail), Errors))]
pub(crate) async fn show(
    State(state): State<SharedState>,
    Caller(who): Caller,
    Path(id): Path<String>,
) -> Result<Json<JobDetail>, ApiError> {
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
    // Another tenant's job does not exist, as far as this caller can tell.
    if who.tenant().is_some_and(|t| t != job.tenant) {
        return Err(ApiError::not_found(format!("job {id} not found")));
    }
    let attempts = state
        .store
        .job_attempts(id)
        .await
        .map_err(|e| ApiError::from_store(e, retry))?;
    Ok(Json(JobDetail { job, attempts }))
}

/// The caller of a management endpoint, authenticated (`401` otherwise): a handler that
/// takes it needs no authorization lines of its own.
pub(crate) struct Caller(pub(crate) Principal);

impl axum::extract::FromRequestParts<SharedState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &SharedState,
    ) -> Result<Self, ApiError> {
        // Authenticated already by `name_the_actor`, or not at all yet.
        if let Some(who) = parts.extensions.get::<Principal>() {
            return Ok(Caller(who.clone()));
        }
        authorize(state, &parts.headers).await.map(Caller)
    }
}

/// The integration the path's `{id}` names, if the caller may see it (`404` otherwise, the
/// same for another tenant's as for none), with the caller.
pub(crate) struct Visible {
    pub(crate) who: Principal,
    pub(crate) integration: switchyard_store::Integration,
}

impl axum::extract::FromRequestParts<SharedState> for Visible {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &SharedState,
    ) -> Result<Self, ApiError> {
        let Caller(who) = Caller::from_request_parts(parts, state).await?;
        let params = axum::extract::RawPathParams::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_path", e.body_text()))?;
        let raw = params
            .iter()
            .find_map(|(k, v)| (k == "id").then(|| v.to_owned()))
            .ok_or_else(|| ApiError::not_found("no integration in the path".to_owned()))?;
        let integration = crate::manage::visible(state, &who, &raw).await?;
        Ok(Visible { who, integration })
    }
}

/// Management requests: the caller is authenticated once, here, and named as the actor of
/// the changes the request makes (the audit log). A request that fails authentication goes
/// on to its handler, whose [`Caller`] answers it.
pub(crate) async fn name_the_actor(
    State(state): State<SharedState>,
    mut req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let path = req.uri().path();
    // The dashboard's changes are its visitor's too (its session cookie holds the token).
    if path.starts_with("/ui/")
        && let Some(token) = crate::ui::session_token(req.headers())
    {
        return match authorize_token(&state, &token).await {
            Ok(who) => {
                let actor = format!("{} (dashboard)", who.actor());
                switchyard_store::ACTOR.scope(actor, next.run(req)).await
            }
            Err(_) => next.run(req).await,
        };
    }
    let management = path.starts_with("/v1/") && !path.starts_with("/v1/webhooks/");
    if !management || !req.headers().contains_key(header::AUTHORIZATION) {
        return next.run(req).await;
    }
    match authorize(&state, req.headers()).await {
        Ok(who) => {
            let actor = who.actor();
            req.extensions_mut().insert(who);
            switchyard_store::ACTOR.scope(actor, next.run(req)).await
        }
        Err(_) => next.run(req).await,
    }
}
