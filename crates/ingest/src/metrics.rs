//! Prometheus metrics of the ingest service, at `GET /metrics`.
use axum::extract::State;
use axum::response::IntoResponse;
use prometheus::{HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry};

use crate::SharedState;

pub(crate) struct Metrics {
    registry: Registry,
    /// Webhooks by outcome (`accepted`, `duplicate`, `rejected`, `unavailable`) and code.
    pub(crate) webhooks: IntCounterVec,
    /// Jobs published to the broker.
    pub(crate) jobs: IntCounterVec,
    /// Route targets left out of a webhook (a route's filter, a `drop` route).
    pub(crate) skipped: IntCounter,
    /// Jobs whose `queued` row could not be written after the answer.
    pub(crate) rows_not_written: IntCounter,
    /// How long a webhook took to answer, by outcome.
    latency: HistogramVec,
    /// Other services' metrics in this process, served with these.
    more: Vec<Registry>,
}

impl Metrics {
    pub(crate) fn new(more: Vec<Registry>) -> Metrics {
        let registry = Registry::new();
        let latency = HistogramVec::new(
            HistogramOpts::new(
                "switchyard_webhook_duration_seconds",
                "How long ingest took to answer a webhook (its jobs confirmed by the broker), by outcome",
            )
            .buckets(vec![
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
            ]),
            &["outcome"],
        )
        .expect("static metric definition");
        registry
            .register(Box::new(latency.clone()))
            .expect("registered once");
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
        let rows_not_written = IntCounter::new(
            "switchyard_queued_rows_not_written_total",
            "Accepted jobs whose queued row ingest could not write (the database failed); a worker writes the row when it takes the job",
        )
        .expect("static metric definition");
        registry
            .register(Box::new(skipped.clone()))
            .expect("registered once");
        registry
            .register(Box::new(rows_not_written.clone()))
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
            rows_not_written,
            latency,
            more,
        }
    }

    pub(crate) fn webhook(&self, outcome: &str, code: &str, took: std::time::Duration) {
        self.webhooks.with_label_values(&[outcome, code]).inc();
        self.latency
            .with_label_values(&[outcome])
            .observe(took.as_secs_f64());
    }

    pub(crate) fn skipped(&self, n: usize) {
        self.skipped.inc_by(n as u64);
    }
}

/// Prometheus text exposition.
#[utoipa::path(get, path = "/metrics", tag = "health", security(()),
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain", body = String)))]
pub(crate) async fn render(State(state): State<SharedState>) -> impl IntoResponse {
    let mut all = vec![
        state.metrics.registry.clone(),
        switchyard_providers::metrics::registry(),
    ];
    all.extend(state.metrics.more.iter().cloned());
    switchyard_telemetry::render(&all)
}
