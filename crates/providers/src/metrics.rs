//! The connectors' own metrics, kept for the whole process (token requests happen wherever a
//! connector runs: workers, and ingest for OAuth2 consent). Served with each service's.
use prometheus::{IntCounterVec, Opts, Registry};
use std::sync::LazyLock;

struct Metrics {
    registry: Registry,
    token_requests: IntCounterVec,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(|| {
    let registry = Registry::new();
    let token_requests = IntCounterVec::new(
        Opts::new(
            "switchyard_oauth_token_requests_total",
            "Calls to providers' OAuth2 token endpoints, by what was asked (refresh, client_credentials, password, authorization_code) and outcome (ok, refused: the integration must be connected again, failed)",
        ),
        &["request", "outcome"],
    )
    .expect("a valid metric");
    registry
        .register(Box::new(token_requests.clone()))
        .expect("registered once");
    Metrics {
        registry,
        token_requests,
    }
});

/// The connectors' metrics, for a `/metrics` endpoint.
pub fn registry() -> Registry {
    METRICS.registry.clone()
}

pub(crate) fn token_request(request: &str, outcome: &str) {
    METRICS
        .token_requests
        .with_label_values(&[request, outcome])
        .inc();
}
