//! Every service shows its operator how it is doing: `/healthz`, `/readyz` and `/metrics`
//! (Prometheus text) on a worker's or scheduler's own port, and the figures move as work
//! goes through (issue 14).
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use switchyard_scheduler::{Scheduler, SchedulerConfig, SystemClock};
use tokio_util::sync::CancellationToken;
use wiremock::matchers::method;
use wiremock::{Mock, ResponseTemplate};

use crate::support::{Creates, Harness, Options, eventually, order};

/// Prometheus text, checked line by line: each sample is `name{labels} value` with a
/// number, under a `# TYPE` of its family. The samples, by `name{labels}`.
fn parse(text: &str) -> BTreeMap<String, f64> {
    let mut typed = std::collections::HashSet::new();
    let mut samples = BTreeMap::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            let name = parts.next().expect("a family name");
            let kind = parts.next().expect("a type");
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind),
                "{line}"
            );
            typed.insert(name.to_owned());
            continue;
        }
        if line.starts_with('#') {
            assert!(line.starts_with("# HELP "), "{line}");
            continue;
        }
        let (key, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("not a number: {line}"));
        let name = key.split('{').next().unwrap();
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s).filter(|f| typed.contains(*f)))
            .unwrap_or(name);
        assert!(typed.contains(family), "no # TYPE for {name}: {line}");
        assert!(
            name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
                && name.starts_with("switchyard_"),
            "{name}"
        );
        samples.insert(key.to_owned(), value);
    }
    samples
}

fn value(samples: &BTreeMap<String, f64>, key: &str) -> f64 {
    samples.get(key).copied().unwrap_or(0.0)
}

#[tokio::test]
async fn worker_and_scheduler_metrics_move_as_work_goes_through() {
    let h = Harness::start().await;
    let store = h.source("store").await;
    let erp = h
        .rest_target(
            "erp",
            "orders",
            json!({"breaker": {"window": 4, "minimum_calls": 4, "failure_rate_pct": 50,
                               "open_wait_ms": 60000, "half_open_probes": 1},
                   "retry": {"initial_delay_ms": 50, "max_delay_ms": 200, "max_attempts": 100}}),
        )
        .await;
    h.route(store, &[erp]).await;
    // The worker's health and metrics on a port of their own, as `switchyard worker`
    // serves them on SWITCHYARD_HEALTH_LISTEN.
    let worker = h.worker.as_ref().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let ready: switchyard_telemetry::ReadyCheck = Arc::new(|| {
        Box::pin(async {
            switchyard_telemetry::Readiness {
                status: "ready",
                checks: BTreeMap::from([("broker", "ok".to_owned())]),
            }
        })
    });
    let stop = CancellationToken::new();
    tokio::spawn(switchyard_telemetry::serve(
        listener,
        vec![worker.metrics.clone()],
        ready,
        stop.clone(),
    ));
    let get = |path: &str| {
        let url = format!("http://127.0.0.1:{port}{path}");
        let http = h.http.clone();
        async move { http.get(url).send().await.unwrap() }
    };
    assert_eq!(get("/healthz").await.status(), 200);
    let r = get("/readyz").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["status"], "ready");
    let scrape = || async {
        let text = get("/metrics").await.text().await.unwrap();
        parse(&text)
    };

    // Two orders succeed: counted by outcome, with their provider calls.
    Mock::given(method("POST"))
        .respond_with(Creates::ids("erp"))
        .up_to_n_times(2)
        .mount(&h.provider)
        .await;
    for i in 0..2 {
        let job = h
            .accept(store, &format!("ok-{i}"), order(&format!("ok-{i}"), 1, "1"))
            .await[0];
        h.wait_status(job, "succeeded", Duration::from_secs(15))
            .await;
    }
    let m = scrape().await;
    let succeeded =
        r#"switchyard_jobs_processed_total{outcome="succeeded",provider="rest",reason=""}"#;
    assert_eq!(value(&m, succeeded), 2.0, "{m:#?}");
    assert_eq!(
        value(&m, r#"switchyard_job_attempts_total{provider="rest"}"#),
        2.0
    );
    assert_eq!(
        value(
            &m,
            r#"switchyard_provider_call_duration_seconds_count{outcome="ok",provider="rest"}"#
        ),
        2.0
    );
    // Then the provider fails: retries counted by class, and the breaker opens (half of
    // its window of four calls failed).
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&h.provider)
        .await;
    for i in 0..6 {
        h.accept(
            store,
            &format!("bad-{i}"),
            order(&format!("bad-{i}"), 1, "1"),
        )
        .await;
    }
    let breaker = format!(r#"switchyard_breaker_state{{integration="{erp}"}}"#);
    eventually(
        "the breaker's gauge shows it open",
        Duration::from_secs(20),
        || async { value(&scrape().await, &breaker) == 2.0 },
    )
    .await;
    // The breaker counts a failed call as soon as the provider answers; the job is counted
    // once its outcome is recorded and its retry published, a moment later.
    eventually(
        "both failed calls counted as retrying jobs",
        Duration::from_secs(20),
        || async {
            value(
                &scrape().await,
                r#"switchyard_jobs_processed_total{outcome="retrying",provider="rest",reason="transient"}"#,
            ) >= 2.0
        },
    )
    .await;
    eventually(
        "jobs deferred by the open breaker",
        Duration::from_secs(20),
        || async {
            value(
                &scrape().await,
                r#"switchyard_job_deferrals_total{cause="breaker_open",provider="rest"}"#,
            ) >= 1.0
        },
    )
    .await;
    stop.cancel();

    // The scheduler's leader samples the fleet's gauges.
    let scheduler = Scheduler::new(
        SchedulerConfig::default(),
        h.store.clone(),
        h.broker.clone(),
        Arc::new(SystemClock),
    );
    scheduler.sample().await.unwrap();
    let text = {
        use prometheus::Encoder;
        let mut out = Vec::new();
        prometheus::TextEncoder::new()
            .encode(&scheduler.registry().gather(), &mut out)
            .unwrap();
        String::from_utf8(out).unwrap()
    };
    let m = parse(&text);
    let queue = format!(
        r#"switchyard_queue_messages{{queue="{}"}}"#,
        h.topology.queue("rest")
    );
    assert!(m.contains_key(&queue), "{m:#?}");
    assert!(m.contains_key("switchyard_jobs_held"), "{m:#?}");
    assert_eq!(
        value(&m, "switchyard_scheduler_leader"),
        0.0,
        "not leading: it was only sampled"
    );
    h.shutdown().await;
}

/// `switchyard all` serves every service's metrics on its one port, and ingest's own move
/// with the webhooks it answers.
#[tokio::test]
async fn ingest_counts_webhooks_by_outcome_with_their_latency() {
    let h = Harness::with(Options {
        worker: false,
        ..Default::default()
    })
    .await;
    let (store, _) = h.store_to_erp(json!({})).await;
    h.accept(store, "e1", order("o-1", 1, "1")).await;
    let refused = h
        .http
        .post(h.url(&format!("/v1/webhooks/{store}")))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 401);
    let text = h.metrics().await;
    let m = parse(&text);
    assert_eq!(
        value(
            &m,
            r#"switchyard_webhooks_total{code="ok",outcome="accepted"}"#
        ),
        1.0,
        "{m:#?}"
    );
    assert_eq!(
        value(
            &m,
            r#"switchyard_webhook_duration_seconds_count{outcome="accepted"}"#
        ),
        1.0
    );
    assert!(
        m.keys().any(
            |k| k.starts_with(r#"switchyard_webhooks_total{code="missing_api_key""#)
                || (k.starts_with("switchyard_webhooks_total{")
                    && k.contains(r#"outcome="rejected""#))
        ),
        "{m:#?}"
    );
    h.shutdown().await;
}

/// An OTLP collector in the test: it keeps what services export to `/v1/traces` (JSON).
async fn collector() -> (String, Arc<std::sync::Mutex<Vec<Value>>>) {
    let got = Arc::new(std::sync::Mutex::new(Vec::new()));
    let keep = got.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: axum::body::Bytes| {
            let keep = keep.clone();
            async move {
                if let Ok(v) = serde_json::from_slice::<Value>(&body) {
                    keep.lock().unwrap().push(v);
                }
                axum::Json(json!({}))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), got)
}

/// (service, trace id, span id, parent span id, name) of every span exported.
fn spans(exports: &[Value]) -> Vec<(String, String, String, String, String)> {
    let mut out = Vec::new();
    for e in exports {
        for rs in e["resourceSpans"].as_array().into_iter().flatten() {
            let service = rs["resource"]["attributes"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|a| a["key"] == "service.name")
                .and_then(|a| a["value"]["stringValue"].as_str())
                .unwrap_or("")
                .to_owned();
            for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
                for s in ss["spans"].as_array().into_iter().flatten() {
                    let text = |k: &str| s[k].as_str().unwrap_or("").to_lowercase();
                    out.push((
                        service.clone(),
                        text("traceId"),
                        text("spanId"),
                        text("parentSpanId"),
                        text("name"),
                    ));
                }
            }
        }
    }
    out
}

/// One webhook is one trace (issue 14): `switchyard ingest` and `switchyard worker`, run as
/// two processes exporting to an OTLP collector, continue the sender's `traceparent` across
/// the broker, and the worker's job span is a child of ingest's webhook span.
#[tokio::test]
async fn one_webhook_is_one_trace_across_ingest_the_broker_and_the_worker() {
    let h = Harness::with(Options {
        worker: false,
        ..Default::default()
    })
    .await;
    let (store, _erp) = h.store_to_erp(json!({})).await;
    Mock::given(method("POST"))
        .respond_with(Creates::ids("erp"))
        .mount(&h.provider)
        .await;
    let (otlp, exported) = collector().await;
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let bin = std::env::var("SWITCHYARD_BIN")
        .unwrap_or_else(|_| format!("{}/../target/debug/switchyard", env!("CARGO_MANIFEST_DIR")));
    let log_dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/traces");
    std::fs::create_dir_all(&log_dir).unwrap();
    let spawn = |service: &str| {
        let log = std::fs::File::create(log_dir.join(format!("{service}.log"))).unwrap();
        std::process::Command::new(&bin)
            .arg(service)
            .envs(h.service_env(&crate::support::amqp_url()))
            .env("SWITCHYARD_LISTEN", format!("127.0.0.1:{port}"))
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", &otlp)
            .env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json")
            .env("OTEL_BSP_SCHEDULE_DELAY", "100")
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("starting switchyard")
    };
    /// Stopped however the test ends.
    struct Procs(Vec<std::process::Child>);
    impl Drop for Procs {
        fn drop(&mut self) {
            for p in &mut self.0 {
                let _ = p.kill();
                let _ = p.wait();
            }
        }
    }
    let procs = Procs(vec![spawn("ingest"), spawn("worker")]);
    eventually(
        "the ingest process is ready",
        Duration::from_secs(30),
        || async {
            h.http
                .get(format!("http://127.0.0.1:{port}/readyz"))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
        },
    )
    .await;

    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let answer = h
        .http
        .post(format!("http://127.0.0.1:{port}/v1/webhooks/{store}"))
        .header("content-type", "application/json")
        .header("x-api-key", crate::support::API_KEY)
        .header("x-event-id", "traced-1")
        .header("traceparent", format!("00-{trace}-00f067aa0ba902b7-01"))
        .body(order("traced-1", 1, "1").to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 202);
    let job: Value = answer.json().await.unwrap();
    let job = job["jobs"][0].as_str().unwrap().parse().unwrap();
    h.wait_status(job, "succeeded", Duration::from_secs(20))
        .await;
    eventually(
        "spans from ingest and the worker",
        Duration::from_secs(20),
        || async {
            let all = spans(&exported.lock().unwrap());
            let ours: Vec<_> = all.iter().filter(|s| s.1 == trace).collect();
            ours.iter()
                .any(|s| s.0 == "switchyard-ingest" && s.4 == "webhook")
                && ours
                    .iter()
                    .any(|s| s.0 == "switchyard-worker" && s.4 == "job")
                && ours
                    .iter()
                    .any(|s| s.0 == "switchyard-worker" && s.4 == "provider call")
        },
    )
    .await;
    let all = spans(&exported.lock().unwrap());
    let webhook = all
        .iter()
        .find(|s| s.1 == trace && s.4 == "webhook")
        .unwrap();
    let job_span = all.iter().find(|s| s.1 == trace && s.4 == "job").unwrap();
    assert_eq!(
        webhook.3, "00f067aa0ba902b7",
        "the sender's span is the webhook's parent"
    );
    assert_eq!(
        job_span.3, webhook.2,
        "the job's span is the webhook span's child"
    );
    drop(procs);
    h.shutdown().await;
}

/// Operators are told (issue 14): an integration that moved to `error` and dead letters
/// beyond the threshold become notifications, delivered to the configured URL as Standard
/// Webhooks that verify with the secret, once each; one the receiver refuses is tried again
/// after its backoff. `GET /v1/notifications` lists them.
#[tokio::test]
async fn operators_are_notified_signed_once_and_retried() {
    use switchyard_core::webhook_auth::WebhookAuth;
    let h = Harness::with(Options {
        worker: false,
        ..Default::default()
    })
    .await;
    let (_store, erp) = h.store_to_erp(json!({})).await;
    let receiver = wiremock::MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(500))
        .up_to_n_times(1)
        .mount(&receiver)
        .await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(204))
        .mount(&receiver)
        .await;
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let scheduler = Scheduler::new(
        SchedulerConfig {
            notify: Some(switchyard_ops::notify::NotifyConfig {
                url: receiver.uri(),
                secret: secrecy::SecretString::from(secret),
                dead_letter_threshold: 2,
                timeout: Duration::from_secs(2),
            }),
            ..Default::default()
        },
        h.store.clone(),
        h.broker.clone(),
        Arc::new(SystemClock),
    );
    // What the sync path writes when an integration moves to `error`; a plain `connected`
    // is not an operator's concern.
    h.store
        .add_integration_event(
            erp,
            "auto_disabled",
            "moved to `error` after 3 failed syncs",
        )
        .await
        .unwrap();
    h.store
        .add_integration_event(erp, "connected", "connected")
        .await
        .unwrap();
    for n in 0..2 {
        h.store
            .keep_dead_letter(&crate::support::dead_letter_row(
                "acme",
                erp,
                &format!("dead-{n}"),
                "exhausted",
                b"{}",
            ))
            .await
            .unwrap();
    }
    let first = scheduler.notify().await.unwrap();
    assert_eq!(
        (first.made, first.sent, first.failed),
        (2, 1, 1),
        "{first:?}"
    );
    // Nothing new, and the refused one waits for its backoff.
    let again = scheduler.notify().await.unwrap();
    assert_eq!(
        (again.made, again.sent, again.failed),
        (0, 0, 0),
        "{again:?}"
    );
    sqlx::query("UPDATE notifications SET next_attempt_at = now() WHERE sent_at IS NULL")
        .execute(h.store.pool())
        .await
        .unwrap();
    let retried = scheduler.notify().await.unwrap();
    assert_eq!((retried.sent, retried.failed), (1, 0), "{retried:?}");

    let got = receiver.received_requests().await.unwrap();
    assert_eq!(got.len(), 3, "two notifications, one of them twice");
    let mut kinds = std::collections::BTreeSet::new();
    for r in &got {
        let header = |name: &str| {
            r.headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        WebhookAuth::StandardWebhooks {
            tolerance_secs: 300,
        }
        .verify(
            &header,
            &r.body,
            &[secret.as_bytes().to_vec()],
            chrono::Utc::now().timestamp(),
        )
        .unwrap_or_else(|e| panic!("a notification that does not verify: {e}"));
        let body: Value = serde_json::from_slice(&r.body).unwrap();
        kinds.insert(body["type"].as_str().unwrap().to_owned());
        assert_eq!(body["data"]["tenant"], "acme", "{body}");
    }
    assert_eq!(
        kinds.into_iter().collect::<Vec<_>>(),
        ["dead_letters.threshold", "integration.error"]
    );
    let (st, listed) = crate::support::call(
        &h,
        reqwest::Method::GET,
        "/v1/notifications",
        crate::support::ADMIN_TOKEN,
        None,
    )
    .await;
    assert_eq!(st, 200);
    let listed = listed["notifications"].as_array().unwrap().clone();
    assert_eq!(listed.len(), 2);
    assert!(listed.iter().all(|n| !n["sent_at"].is_null()), "{listed:?}");
    assert!(
        listed.iter().any(|n| n["kind"] == "integration.error"
            && n["message"].as_str().unwrap().contains("acme/erp")),
        "{listed:?}"
    );
    h.shutdown().await;
}
