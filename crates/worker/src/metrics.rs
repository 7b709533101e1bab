//! A worker's Prometheus metrics (served at `/metrics` on `SWITCHYARD_HEALTH_LISTEN`, or by
//! ingest's `/metrics` in `switchyard all`).
use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry};
use std::time::Duration;
use switchyard_resilience::BreakerState;

pub(crate) struct Metrics {
    pub(crate) registry: Registry,
    /// Jobs settled, by provider, outcome and reason.
    jobs: IntCounterVec,
    /// Provider calls, by provider and outcome (`ok` or the failure class), in seconds.
    calls: HistogramVec,
    /// Attempts made (provider calls), by provider.
    attempts: IntCounterVec,
    /// Jobs put off without spending an attempt, by provider and cause.
    deferrals: IntCounterVec,
    /// Each integration's breaker: 0 closed, 1 half-open, 2 open.
    breakers: IntGaugeVec,
}

fn counter(name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    IntCounterVec::new(Opts::new(name, help), labels).expect("a valid metric")
}

impl Metrics {
    pub(crate) fn new() -> Metrics {
        let registry = Registry::new();
        let jobs = counter(
            "switchyard_jobs_processed_total",
            "Jobs a worker settled, by provider, outcome (succeeded, retrying, dead, duplicate, held, skipped, stale, ignored) and reason (the failure class or dead-letter reason)",
            &["provider", "outcome", "reason"],
        );
        let calls = HistogramVec::new(
            HistogramOpts::new(
                "switchyard_provider_call_duration_seconds",
                "Provider calls, by provider and outcome (ok, or the failure class)",
            )
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
            &["provider", "outcome"],
        )
        .expect("a valid metric");
        let attempts = counter(
            "switchyard_job_attempts_total",
            "Attempts made (provider calls), by provider",
            &["provider"],
        );
        let deferrals = counter(
            "switchyard_job_deferrals_total",
            "Jobs put off without spending an attempt, by provider and cause (rate_limit, breaker_open, turn, record_busy, database)",
            &["provider", "cause"],
        );
        let breakers = IntGaugeVec::new(
            Opts::new(
                "switchyard_breaker_state",
                "Each integration's circuit breaker as this worker last saw it: 0 closed, 1 half-open, 2 open",
            ),
            &["integration"],
        )
        .expect("a valid metric");
        for m in [
            Box::new(jobs.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(calls.clone()),
            Box::new(attempts.clone()),
            Box::new(deferrals.clone()),
            Box::new(breakers.clone()),
        ] {
            registry.register(m).expect("registered once");
        }
        Metrics {
            registry,
            jobs,
            calls,
            attempts,
            deferrals,
            breakers,
        }
    }

    pub(crate) fn settled(&self, provider: &str, outcome: &str, reason: &str) {
        self.jobs
            .with_label_values(&[provider, outcome, reason])
            .inc();
    }

    pub(crate) fn deferred(&self, provider: &str, cause: &str) {
        self.deferrals.with_label_values(&[provider, cause]).inc();
    }

    pub(crate) fn called(&self, provider: &str, outcome: &str, took: Duration) {
        self.attempts.with_label_values(&[provider]).inc();
        self.calls
            .with_label_values(&[provider, outcome])
            .observe(took.as_secs_f64());
    }

    pub(crate) fn breaker(&self, integration: &str, state: BreakerState) {
        let v = match state {
            BreakerState::Closed => 0,
            BreakerState::HalfOpen => 1,
            BreakerState::Open => 2,
        };
        self.breakers.with_label_values(&[integration]).set(v);
    }
}
