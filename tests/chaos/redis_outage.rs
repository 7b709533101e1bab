//! Redis stopped while jobs flow: the fleet keeps processing with per-process breakers and
//! limits, readyz says `degraded`, and everything is shared again once Redis is back.
use serde_json::json;
use std::process::Command;
use std::time::Duration;
use wiremock::Mock;
use wiremock::matchers::method;

use crate::support::{Creates, Harness, eventually, order};

fn redis_up() -> bool {
    Command::new("redis-cli")
        .arg("ping")
        .output()
        .is_ok_and(|o| o.status.success() && o.stdout.starts_with(b"PONG"))
}

pub(crate) fn start_redis() {
    let ok = Command::new("redis-server")
        .args([
            "--daemonize",
            "yes",
            "--bind",
            "127.0.0.1",
            "--port",
            "6379",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        ok,
        "could not start redis-server again; start it by hand: redis-server --daemonize yes --bind 127.0.0.1 --port 6379"
    );
}

#[tokio::test]
async fn jobs_complete_while_redis_is_down_and_readyz_says_degraded() {
    assert!(
        redis_up(),
        "Redis is not running: start it with `just services`"
    );
    let h = Harness::start().await;
    let store = h.source("store").await;
    let erp = h
        .rest_target(
            "erp",
            "orders",
            json!({"rate_limit": {"limit": 50, "per": "second", "burst": 10}}),
        )
        .await;
    h.route(store, &[erp]).await;
    Mock::given(method("POST"))
        .respond_with(Creates::ids("ext"))
        .mount(&h.provider)
        .await;

    let before = h.accept(store, "b", order("ord-0", 1, "1")).await;
    h.wait_status(before[0], "succeeded", Duration::from_secs(15))
        .await;

    let _ = Command::new("redis-cli")
        .args(["shutdown", "nosave"])
        .status();
    // Whatever happens below, Redis comes back for everyone else.
    let _restart = RestartRedis;
    eventually("Redis is down", Duration::from_secs(10), || async {
        !redis_up()
    })
    .await;
    let mut jobs = Vec::new();
    for i in 1..=5 {
        jobs.extend(
            h.accept(store, &format!("d{i}"), order(&format!("ord-{i}"), 1, "1"))
                .await,
        );
    }
    for j in &jobs {
        h.wait_status(*j, "succeeded", Duration::from_secs(20))
            .await;
    }
    let ready = h.http.get(h.url("/readyz")).send().await.unwrap();
    assert_eq!(
        ready.status(),
        200,
        "Redis down does not make the service unready"
    );
    let body: serde_json::Value = ready.json().await.unwrap();
    assert_eq!(body["status"], "degraded", "{body}");
    assert!(
        body["checks"]["redis"]
            .as_str()
            .unwrap()
            .starts_with("down")
    );

    start_redis();
    eventually("Redis is back", Duration::from_secs(10), || async {
        redis_up()
    })
    .await;
    let ready: serde_json::Value = h
        .http
        .get(h.url("/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["status"], "ready");
    let after = h.accept(store, "a", order("ord-9", 1, "1")).await;
    h.wait_status(after[0], "succeeded", Duration::from_secs(15))
        .await;
    h.shutdown().await;
}

struct RestartRedis;

impl Drop for RestartRedis {
    fn drop(&mut self) {
        if !redis_up() {
            start_redis();
        }
    }
}
