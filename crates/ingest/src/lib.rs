//! Ingest: the HTTP front door. Verifies each webhook, normalises it into one envelope per
//! route target, publishes them with publisher confirms and answers `202` only once the
//! broker has confirmed every one. Serves, on the same port, the management API (its own
//! crate, `switchyard-api`), the API's description and docs page, and health.
#![forbid(unsafe_code)]
// utoipa's `path` macro names parameter types by their full path.
#![allow(unused_qualifications)]

mod callbacks;
mod client;
mod merchant;
mod metrics;
pub(crate) mod sources;
mod webhooks;

pub use switchyard_api::ApiError;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json};
use axum::routing::get;
use secrecy::SecretString;

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use switchyard_broker::Broker;
use switchyard_core::Envelope;
use switchyard_store::{QueuedJob, Store};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use tracing::{info, warn};
use uuid::Uuid;

#[derive(Debug, Clone)]
pub struct IngestConfig {
    /// Largest webhook body accepted, in bytes.
    pub max_body_bytes: usize,
    /// What `Retry-After` tells a sender when the broker or database is down, in seconds.
    pub retry_after_secs: u32,
    /// How long an integration's routes and settings are cached.
    pub integration_cache_ttl: Duration,
    /// Bearer token for the management endpoints (`/v1/jobs`); without one they are off.
    pub admin_token: Option<SecretString>,
    /// The fleet's shared breakers and limits, for `readyz` to report on Redis.
    pub guard: Option<Arc<switchyard_resilience::Guard>>,
    /// Opens integrations' sealed webhook signing secrets.
    pub keyring: Arc<switchyard_vault::Keyring>,
    /// Where providers send users back after OAuth2 consent; default: this request's
    /// `Host` + `/v1/oauth/callback`.
    pub oauth_redirect_uri: Option<String>,
    /// How long a client has to send a request's headers (slow senders hold a connection).
    pub header_read_timeout: Duration,
    /// How long a client has to send a request's body.
    pub body_timeout: Duration,
    /// Connections served at once; more wait to be accepted.
    pub max_connections: usize,
    /// The operator's reverse proxies: a request from one of them is taken to come from
    /// the client its `X-Forwarded-For` names (for integrations' IP allowlists).
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// Other services' metrics in this process (`switchyard all`: the worker's and the
    /// scheduler's), served with ingest's at `/metrics`.
    pub more_metrics: Vec<prometheus::Registry>,
    /// The fleet's default retry schedule and breaker, for operations run through the API.
    pub call_retry: switchyard_resilience::RetryPolicy,
    pub call_breaker: switchyard_resilience::BreakerPolicy,
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            max_body_bytes: 1024 * 1024,
            retry_after_secs: 5,
            integration_cache_ttl: Duration::from_secs(5),
            admin_token: None,
            guard: None,
            keyring: Arc::new(switchyard_vault::Keyring::empty()),
            oauth_redirect_uri: None,
            header_read_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            max_connections: 1024,
            trusted_proxies: Vec::new(),
            more_metrics: Vec::new(),
            call_retry: Default::default(),
            call_breaker: Default::default(),
        }
    }
}

pub(crate) struct AppState {
    pub(crate) cfg: IngestConfig,
    pub(crate) store: Store,
    pub(crate) broker: Broker,
    pub(crate) sources: sources::Cache,
    pub(crate) metrics: metrics::Metrics,
    /// Duplicate checks of concurrent webhooks, one query for many: the ids that exist.
    pub(crate) check: switchyard_store::batch::Batcher<Uuid, Result<Arc<HashSet<Uuid>>, String>>,
    /// Queued job rows of concurrent webhooks, one insert and commit for many, written after
    /// the answer: their jobs wait in [`switchyard_store::Unrecorded`] until it finishes.
    pub(crate) record: switchyard_store::batch::Batcher<Envelope, ()>,
}

pub(crate) type SharedState = Arc<AppState>;

/// The HTTP routes, for embedding or testing.
pub fn router(cfg: IngestConfig, store: Store, broker: Broker) -> Router {
    let management = switchyard_api::routes(
        switchyard_api::ApiConfig {
            admin_token: cfg.admin_token.clone(),
            retry_after_secs: cfg.retry_after_secs,
            keyring: cfg.keyring.clone(),
            oauth_redirect_uri: cfg.oauth_redirect_uri.clone(),
            guard: cfg.guard.clone(),
            call_retry: cfg.call_retry.clone(),
            call_breaker: cfg.call_breaker.clone(),
        },
        store.clone(),
        broker.clone(),
    );
    // Each batcher runs one statement at a time, on a connection it keeps
    // ([`switchyard_store::Held`]). The duplicate check is planned per call: the jobs table
    // grows from empty ([`Store::planned_per_call`]).
    let check_conn = Arc::new(store.planned_per_call(1).held());
    let check = switchyard_store::batch::Batcher::spawn(
        2000,
        switchyard_store::batch::GATHER,
        move |ids: Vec<Uuid>| {
            let held = check_conn.clone();
            async move {
                held.on(async |c| switchyard_store::existing_jobs(c, &ids).await)
                    .await
                    .map(|found| Arc::new(found.into_iter().collect::<HashSet<Uuid>>()))
                    .map_err(|e| e.to_string())
            }
        },
    );
    let metrics = metrics::Metrics::new(cfg.more_metrics.clone());
    let not_written = metrics.rows_not_written.clone();
    let record_store = store.relaxed(1);
    let record_conn = Arc::new(record_store.held());
    // No one waits on these rows, so every insert gathers the rows that come within its
    // window (fewer, larger inserts), as the worker's outcomes do.
    let record = switchyard_store::batch::Batcher::spawn_gathering(
        1000,
        switchyard_store::batch::GATHER_EVERY_CALL,
        move |envs: Vec<Envelope>| {
            let held = record_conn.clone();
            let store = record_store.clone();
            let not_written = not_written.clone();
            async move {
                let queued: Vec<QueuedJob<'_>> =
                    envs.iter().map(|e| QueuedJob { envelope: e }).collect();
                let written = held
                    .on(async |c| switchyard_store::record_queued(c, &queued).await)
                    .await;
                store.unrecorded().remove(envs.iter().map(|e| &e.id));
                if let Err(e) = written {
                    // The jobs are durable in the broker; a worker makes a row it misses.
                    not_written.inc_by(envs.len() as u64);
                    warn!(error = %e, jobs = envs.len(),
                        "jobs enqueued but not yet recorded; workers will record them");
                }
            }
        },
    );
    let state = Arc::new(AppState {
        check,
        record,
        sources: sources::Cache::new(
            store.clone(),
            cfg.integration_cache_ttl,
            cfg.keyring.clone(),
        ),
        metrics,
        cfg,
        store,
        broker,
    });
    let (routes, spec) = front_door()
        .with_state(state)
        .merge(management)
        .split_for_parts();
    let spec_json = bytes::Bytes::from(spec.to_pretty_json().expect("the spec serializes"));
    routes
        .route(
            "/openapi.json",
            get(move || {
                let body = spec_json.clone();
                async move {
                    (
                        [(axum::http::header::CONTENT_TYPE, "application/json")],
                        body,
                    )
                }
            }),
        )
        .merge({
            use utoipa_scalar::Servable;
            utoipa_scalar::Scalar::with_url("/docs", spec)
        })
        .fallback(|| async { ApiError::not_found("no such endpoint") })
        .layer(PropagateRequestIdLayer::x_request_id())
        // The request's path only: a callback URL's query may carry the integration's key.
        .layer(TraceLayer::new_for_http().make_span_with(
            |req: &axum::http::Request<axum::body::Body>| {
                tracing::debug_span!("request", method = %req.method(), path = %req.uri().path())
            },
        ))
        .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
}

/// The webhook path and health, with their description (the management API's routes are
/// merged in by [`router`]).
fn front_door() -> utoipa_axum::router::OpenApiRouter<SharedState> {
    use utoipa::OpenApi;
    use utoipa_axum::routes;
    utoipa_axum::router::OpenApiRouter::with_openapi(switchyard_api::ApiDoc::openapi())
        .routes(routes!(webhooks::receive, webhooks::receive_get))
        .routes(routes!(healthz))
        .routes(routes!(readyz))
        .routes(routes!(metrics::render))
}

/// The API's description, as served at `/openapi.json`.
pub fn openapi_json() -> String {
    let mut spec = front_door().into_openapi();
    spec.merge(switchyard_api::description());
    spec.to_pretty_json().expect("the spec serializes")
}

/// The ingest service bound to its listener.
pub struct IngestApp {
    listener: TcpListener,
    router: Router,
    cfg: IngestConfig,
    /// Its `queued` rows still being written are waited for when it stops.
    store: Store,
}

impl IngestApp {
    /// Bind `addr` (port 0 for any) and build the routes.
    pub async fn build(
        cfg: IngestConfig,
        store: Store,
        broker: Broker,
        addr: SocketAddr,
    ) -> std::io::Result<IngestApp> {
        let listener = TcpListener::bind(addr).await?;
        Ok(IngestApp::with_listener(cfg, store, broker, listener))
    }

    /// Use a listener bound by the caller.
    pub fn with_listener(
        cfg: IngestConfig,
        store: Store,
        broker: Broker,
        listener: TcpListener,
    ) -> IngestApp {
        IngestApp {
            router: router(cfg.clone(), store.clone(), broker),
            listener,
            cfg,
            store,
        }
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Serve until `stop` is cancelled, then finish the requests in flight (for up to 30 s)
    /// and the `queued` rows of the jobs they answered for (for up to 5 s).
    ///
    /// Each connection must send a request's headers within `header_read_timeout` and its
    /// body within `body_timeout` (a slow sender is answered `408` or cut off), and at most
    /// `max_connections` are served at once (more wait to be accepted).
    pub async fn run_until_stopped(self, stop: CancellationToken) -> std::io::Result<()> {
        use hyper_util::rt::{TokioIo, TokioTimer};
        info!(addr = %self.local_addr(), "ingest listening");
        let cfg = self.cfg.clone();
        let router = self
            .router
            .layer(tower_http::timeout::RequestBodyTimeoutLayer::new(
                cfg.body_timeout,
            ));
        let slots = Arc::new(tokio::sync::Semaphore::new(cfg.max_connections.max(1)));
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        loop {
            let slot = tokio::select! {
                _ = stop.cancelled() => break,
                s = slots.clone().acquire_owned() => s.expect("the semaphore is never closed"),
            };
            let (stream, peer) = tokio::select! {
                _ = stop.cancelled() => break,
                accepted = self.listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: back off, keep serving.
                        tracing::warn!(error = %e, "ingest could not accept a connection");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let router = router.clone();
            // The peer address feeds the integrations' IP allowlists.
            let service = hyper::service::service_fn(
                move |mut req: axum::extract::Request<hyper::body::Incoming>| {
                    req.extensions_mut()
                        .insert(axum::extract::ConnectInfo(peer));
                    tower::ServiceExt::oneshot(router.clone(), req)
                },
            );
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(cfg.header_read_timeout)
                .serve_connection(TokioIo::new(stream), service);
            let conn = graceful.watch(conn);
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, %peer, "connection ended");
                }
                drop(slot);
            });
        }
        drop(self.listener);
        if tokio::time::timeout(Duration::from_secs(30), graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("ingest stopped with requests still in flight after 30 s");
        }
        // The rows of jobs already answered for: their insert finishes, or the workers make
        // them when they claim the jobs.
        let left = self.store.unrecorded().len();
        if !self
            .store
            .unrecorded()
            .drained(Duration::from_secs(5))
            .await
        {
            tracing::warn!(
                jobs = self.store.unrecorded().len(),
                "ingest stopped before writing some queued rows; the workers will write them"
            );
        } else if left > 0 {
            tracing::debug!(jobs = left, "wrote the last queued rows");
        }
        info!("ingest stopped");
        Ok(())
    }
}

#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
struct Health {
    /// `ok` while the process serves.
    status: &'static str,
}

/// Whether the process is up (nothing else is checked).
#[utoipa::path(get, path = "/healthz", tag = "health", security(()),
    responses((status = 200, body = Health)))]
async fn healthz() -> Json<Health> {
    Json(Health { status: "ok" })
}

#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
struct Readiness {
    /// `ready`, `degraded` (Redis down: breakers and limits go per process) or `not_ready`.
    status: &'static str,
    checks: Checks,
}

#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
struct Checks {
    broker: String,
    database: String,
    redis: String,
}

/// Ready when the broker is connected and the database answers. Redis being down does not
/// stop the fleet (breakers and limits go per process), so it makes the answer `degraded`,
/// still 200.
#[utoipa::path(get, path = "/readyz", tag = "health", security(()),
    responses((status = 200, body = Readiness, description = "Ready, or degraded"),
        (status = 503, body = Readiness, description = "Not ready: the broker or the database is down")))]
async fn readyz(State(state): State<SharedState>) -> impl IntoResponse {
    let broker_ok = state.broker.is_connected();
    let db = tokio::time::timeout(Duration::from_secs(2), state.store.ping()).await;
    let db_check = match db {
        Ok(Ok(())) => "ok".to_owned(),
        Ok(Err(e)) => format!("down: {e}"),
        Err(_) => "down: no answer within 2 s".to_owned(),
    };
    let redis = match &state.cfg.guard {
        Some(g) => g.ping().await,
        None => None,
    };
    let ready = broker_ok && db_check == "ok";
    let status = match (ready, redis) {
        (false, _) => "not_ready",
        (true, Some(false)) => "degraded",
        (true, _) => "ready",
    };
    let body = Readiness {
        status,
        checks: Checks {
            broker: if broker_ok {
                "ok"
            } else {
                "down: not connected"
            }
            .to_owned(),
            database: db_check,
            redis: match redis {
                None => "not configured: breakers and rate limits are per process",
                Some(true) => "ok",
                Some(false) => "down: breakers and rate limits are per process until it is back",
            }
            .to_owned(),
        },
    };
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body))
}
