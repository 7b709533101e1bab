//! The management API: integrations, routes, records, jobs, syncs, dead letters and their
//! operations, API keys, the audit log. Bearer auth (the admin token, or a tenant's API key
//! that confines the caller to its tenant). Every handler describes itself with
//! `#[utoipa::path]` and is served by `routes!` from that description, so the OpenAPI
//! document and the routing cannot drift apart. Served beside the webhook path by ingest
//! (one process, one port), from its own crate.
#![forbid(unsafe_code)]
// utoipa's `path` macro names parameter types by their full path.
#![allow(unused_qualifications)]

mod api_keys;
mod audit;
mod calls;
mod dlq;
mod error;
mod identity;
mod jobs;
mod manage;
mod messages;
mod notices;
mod oauth;
mod openapi;
mod ui;

pub use error::ApiError;
pub use openapi::{ApiDoc, ErrorBody, ErrorDetail};

use secrecy::ExposeSecret;
use std::sync::Arc;
use switchyard_broker::Broker;
use switchyard_store::Store;
use utoipa_axum::router::OpenApiRouter;

/// What the management API needs to know.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Bearer token of the operators; without one only tenants' API keys are accepted.
    pub admin_token: Option<secrecy::SecretString>,
    /// What `Retry-After` tells a caller when the database or broker is down, in seconds.
    pub retry_after_secs: u32,
    /// Seals and opens integrations' credentials and webhook secrets.
    pub keyring: Arc<switchyard_vault::Keyring>,
    /// Where providers send users back after OAuth2 consent; default: the request's
    /// `Host` + `/v1/oauth/callback`.
    pub oauth_redirect_uri: Option<String>,
    /// The fleet's breakers (Redis), for the dashboard; none: not shown.
    pub guard: Option<Arc<switchyard_resilience::Guard>>,
    /// The fleet's default retry schedule and breaker, for operations (an integration's
    /// settings override them).
    pub call_retry: switchyard_resilience::RetryPolicy,
    pub call_breaker: switchyard_resilience::BreakerPolicy,
}

pub(crate) struct ApiState {
    pub(crate) cfg: ApiConfig,
    pub(crate) store: Store,
    pub(crate) broker: Broker,
    pub(crate) admin_digest: Option<String>,
    /// Runs connectors' operations for `/v1/integrations/{id}/operations/{name}`.
    pub(crate) calls: switchyard_ops::calls::Calls,
}

pub(crate) type SharedState = Arc<ApiState>;

impl ApiState {
    /// A store error as the caller should see it (503 with Retry-After when the database is
    /// unreachable).
    pub(crate) fn store_error(&self, e: switchyard_store::StoreError) -> ApiError {
        ApiError::from_store(e, self.cfg.retry_after_secs)
    }
}

/// The management API's routes with their description, ready to be merged with others
/// (ingest serves it beside the webhook path).
pub fn routes(cfg: ApiConfig, store: Store, broker: Broker) -> OpenApiRouter {
    let admin_digest = cfg
        .admin_token
        .as_ref()
        .map(|t| switchyard_core::ids::secret_digest(t.expose_secret()));
    let calls = switchyard_ops::calls::Calls {
        store: store.clone(),
        broker: broker.clone(),
        keyring: cfg.keyring.clone(),
        http: switchyard_providers::http_client(),
        // Without the fleet's Redis, this process's own breakers and limits.
        guard: cfg
            .guard
            .clone()
            .unwrap_or_else(|| Arc::new(switchyard_resilience::Guard::local("api"))),
        default_retry: cfg.call_retry.clone(),
        default_breaker: cfg.call_breaker.clone(),
    };
    let state = Arc::new(ApiState {
        cfg,
        store,
        broker,
        admin_digest,
        calls,
    });
    endpoints()
        .merge(ui::router())
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            jobs::name_the_actor,
        ))
        .with_state(state)
}

/// The management API's description alone (no server needed).
pub fn description() -> utoipa::openapi::OpenApi {
    endpoints().into_openapi()
}

/// Every endpoint: a handler's `#[utoipa::path]` says its path, method, parameters and
/// answers, and `routes!` serves it there. A new endpoint is its handler (with its
/// description) and one line here.
fn endpoints() -> OpenApiRouter<SharedState> {
    use utoipa_axum::routes;
    OpenApiRouter::new()
        .routes(routes!(manage::list, manage::create))
        .routes(routes!(manage::show, manage::update, manage::delete))
        .routes(routes!(manage::test))
        .routes(routes!(manage::webhook_secrets, manage::add_webhook_secret))
        .routes(routes!(manage::remove_webhook_secret))
        .routes(routes!(manage::activate))
        .routes(routes!(manage::deactivate))
        .routes(routes!(manage::stats))
        .routes(routes!(manage::events))
        .routes(routes!(oauth::authorize))
        .routes(routes!(oauth::callback))
        .routes(routes!(oauth::flow))
        .routes(routes!(calls::run))
        .routes(routes!(calls::list))
        .routes(routes!(manage::mappings))
        .routes(routes!(manage::delete_mapping))
        .routes(routes!(manage::sync))
        .routes(routes!(manage::sync_runs))
        .routes(routes!(manage::sync_run))
        .routes(routes!(manage::cancel_sync_run))
        .routes(routes!(manage::jobs))
        .routes(routes!(jobs::show))
        .routes(routes!(identity::list_routes, identity::add_route))
        .routes(routes!(identity::show_route, identity::remove_route))
        .routes(routes!(identity::remove_route_target))
        .routes(routes!(messages::list, messages::add))
        .routes(routes!(messages::show, messages::remove))
        .routes(routes!(messages::messages))
        .routes(routes!(messages::message))
        .routes(routes!(identity::find_record))
        .routes(routes!(identity::show_record))
        .routes(routes!(identity::conflicts))
        .routes(routes!(identity::connectors))
        .routes(routes!(identity::connector))
        .routes(routes!(dlq::list))
        .routes(routes!(dlq::replay))
        .routes(routes!(dlq::purge))
        .routes(routes!(dlq::operations))
        .routes(routes!(dlq::operation))
        .routes(routes!(api_keys::list, api_keys::create))
        .routes(routes!(api_keys::revoke))
        .routes(routes!(audit::list))
        .routes(routes!(notices::list))
}
