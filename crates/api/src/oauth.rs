//! OAuth2 consent over HTTP: `POST /v1/integrations/{id}/oauth/authorize` answers the
//! consent URL; the provider sends the user back to `GET /v1/oauth/callback`, whose single-use
//! `state` (not a bearer token) says which integration it is for.
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Json, Response};
use serde::Deserialize;
use switchyard_ops::oauth::{self, Consent, OAuthFlowError};
use utoipa::{IntoParams, ToSchema};

use crate::jobs::authorize as authorize_caller;
use crate::manage::{ApiResult, visible};
use crate::openapi::Errors;
use crate::{ApiError, SharedState};

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct AuthorizeBody {
    /// Where the provider sends the user back; default: this service's callback.
    redirect_uri: Option<String>,
}

fn flow_error(state: &SharedState, e: OAuthFlowError) -> ApiError {
    match e {
        OAuthFlowError::NotOAuth(m) => {
            ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "not_oauth", m)
        }
        OAuthFlowError::BadState => {
            ApiError::new(StatusCode::BAD_REQUEST, "invalid_state", e.to_string())
        }
        OAuthFlowError::Exchange(m) => ApiError::new(StatusCode::BAD_GATEWAY, "exchange_failed", m),
        OAuthFlowError::Vault(m) => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "vault_unavailable", m)
        }
        OAuthFlowError::Store(e) => state.store_error(e),
    }
}

/// `POST /v1/integrations/{id}/oauth/authorize`: the consent URL to open.
#[utoipa::path(post, path = "/v1/integrations/{id}/oauth/authorize", tag = "integrations",
    summary = "Connect with OAuth2: the consent URL to open",
    description = "Open `authorize_url` in a browser; the provider sends the user back to `/v1/oauth/callback`, which stores the tokens.",
    params(crate::manage::IntegrationId),
    request_body(content = Option<AuthorizeBody>, description = "Optional: where the provider sends the user back."),
    responses((status = 200, body = Consent), Errors))]
pub(crate) async fn authorize(
    State(state): State<SharedState>,
    headers: HeaderMap,
    Path(raw): Path<String>,
    b: Result<Option<Json<AuthorizeBody>>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Json<Consent>> {
    let who = authorize_caller(&state, &headers).await?;
    let i = visible(&state, &who, &raw).await?;
    let b = crate::manage::optional_body(b)?;
    let redirect = match (b.redirect_uri, &state.cfg.oauth_redirect_uri) {
        (Some(r), _) => r,
        (None, Some(r)) => r.clone(),
        (None, None) => {
            let host = headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .unwrap_or("127.0.0.1");
            format!("http://{host}/v1/oauth/callback")
        }
    };
    let consent = oauth::begin(&state.store, &state.cfg.keyring, &i, &redirect)
        .await
        .map_err(|e| flow_error(&state, e))?;
    Ok(Json(consent))
}

/// How a consent flow ended.
#[derive(Debug, serde::Serialize, ToSchema)]
pub(crate) struct FlowOutcome {
    flow: String,
    /// None while the user has not come back; `connected`, or why not.
    outcome: Option<String>,
}

/// `GET /v1/integrations/{id}/oauth/flows/{flow}`: whether the user came back, and how.
#[utoipa::path(get, path = "/v1/integrations/{id}/oauth/flows/{flow}", tag = "integrations",
    summary = "How a consent flow ended",
    description = "Poll it after opening the consent URL: `outcome` is null until the provider sends the user back.",
    params(crate::manage::IntegrationId, ("flow" = String, Path, description = "The `flow` answered with the consent URL")),
    responses((status = 200, body = FlowOutcome), Errors))]
pub(crate) async fn flow(
    State(state): State<SharedState>,
    crate::jobs::Visible { integration: i, .. }: crate::jobs::Visible,
    Path((_, flow)): Path<(String, String)>,
) -> ApiResult<Json<FlowOutcome>> {
    let outcome = state
        .store
        .oauth_flow_outcome(i.id, &flow)
        .await
        .map_err(|e| state.store_error(e))?;
    Ok(Json(FlowOutcome { flow, outcome }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct CallbackQuery {
    /// The single-use state the consent URL carried.
    state: Option<String>,
    /// The authorization code to exchange.
    code: Option<String>,
    /// The provider's refusal (`access_denied`), per RFC 6749 §4.1.2.1.
    error: Option<String>,
    error_description: Option<String>,
}

/// `GET /v1/oauth/callback?state=&code=`: the provider's redirect after consent.
#[utoipa::path(get, path = "/v1/oauth/callback", tag = "integrations",
    summary = "Where the provider sends the user back after consent",
    description = "Opened by the user's browser, not called by clients: answers a page saying whether the integration is connected. Its `state` says which integration; no bearer token.",
    security(()),
    params(CallbackQuery),
    responses(
        (status = 200, description = "Connected", content_type = "text/html", body = String),
        (status = 400, description = "Not connected: the provider refused, or the answer was not valid", content_type = "text/html", body = String),
        (status = 502, description = "Not connected: the code exchange failed", content_type = "text/html", body = String),
        (status = 503, description = "Not connected: the database or vault is unavailable", content_type = "text/html", body = String)))]
pub(crate) async fn callback(
    State(state): State<SharedState>,
    q: Result<Query<CallbackQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let page = |status: StatusCode, title: &str, text: &str| {
        let esc = |s: &str| {
            s.replace('&', "&amp;")
                .replace('<', "&lt;")
                .replace('>', "&gt;")
        };
        (
            status,
            Html(format!(
                "<!doctype html><meta charset=utf-8><title>Switchyard: {t}</title><h1>{t}</h1><p>{x}</p>",
                t = esc(title),
                x = esc(text)
            )),
        )
            .into_response()
    };
    let Ok(Query(q)) = q else {
        return page(
            StatusCode::BAD_REQUEST,
            "Not connected",
            "The provider's answer could not be read.",
        );
    };
    if let Some(err) = q.error {
        let why = q.error_description.unwrap_or(err);
        return page(
            StatusCode::BAD_REQUEST,
            "Not connected",
            &format!("The provider said: {why}"),
        );
    }
    let (Some(s), Some(code)) = (q.state, q.code) else {
        return page(
            StatusCode::BAD_REQUEST,
            "Not connected",
            "The provider sent no code or no state.",
        );
    };
    let http = switchyard_providers::http_client();
    match oauth::complete(
        &state.store,
        state.cfg.keyring.clone(),
        Some(&state.broker),
        &http,
        &s,
        &code,
    )
    .await
    {
        Ok(i) => page(
            StatusCode::OK,
            "Connected",
            &format!(
                "{}/{} is connected. You can close this page.",
                i.tenant, i.name
            ),
        ),
        Err(e) => {
            let err = flow_error(&state, e);
            page(err.status, "Not connected", &err.message)
        }
    }
}
