//! Prometheus metrics of the ingest service, at `GET /metrics`.
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use prometheus::{Encoder, IntCounter, IntCounterVec, Opts, Registry, TextEncoder};

use crate::SharedState;

pub(crate) struct Metrics {
    registry: Registry,
    /// Webhooks by outcome (`accepted`, `duplicate`, `rejected`, `unavailable`) and code.
    pub(crate) webhooks: IntCounterVec,
    /// Jobs published to the broker.
    pub(crate) jobs: IntCounterVec,
    /// Route targets left out of a webhook (a route's filter, a `drop` route).
    pub(crate) skipped: IntCounter,
}

impl Metrics {
    pub(crate) fn new() -> Metrics {
        let registry = Registry::new();
        let webhooks = IntCounterVec::new(
            Opts::new(
                "switchyard_webhooks_total",
                "Webhooks received, by outcome and reason code",
            ),
            &["outcome", "code"],
        )
        .expect("static metric definition");
        let jobs = IntCounterVec::new(
            Opts::new(
                "switchyard_jobs_published_total",
                "Jobs published to the broker, by provider",
            ),
            &["provider"],
        )
        .expect("static metric definition");
        let skipped = IntCounter::new(
            "switchyard_route_targets_skipped_total",
            "Route targets a webhook did not go to: a route's filter or a drop route left them out",
        )
        .expect("static metric definition");
        registry
            .register(Box::new(skipped.clone()))
            .expect("registered once");
        registry
            .register(Box::new(webhooks.clone()))
            .expect("registered once");
        registry
            .register(Box::new(jobs.clone()))
            .expect("registered once");
        Metrics {
            registry,
            webhooks,
            jobs,
            skipped,
        }
    }

    pub(crate) fn webhook(&self, outcome: &str, code: &str) {
        self.webhooks.with_label_values(&[outcome, code]).inc();
    }

    pub(crate) fn skipped(&self, n: usize) {
        self.skipped.inc_by(n as u64);
    }
}

/// Prometheus text exposition.
#[utoipa::path(get, path = "/metrics", tag = "health", security(()),
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain", body = String)))]
pub(crate) async fn render(State(state): State<SharedState>) -> impl IntoResponse {
    let mut out = Vec::new();
    let encoder = TextEncoder::new();
    let _ = encoder.encode(&state.metrics.registry.gather(), &mut out);
    (
        [(header::CONTENT_TYPE, encoder.format_type().to_owned())],
        out,
    )
}
