//! `rabbitmqctl stop_app` / `start_app` while idle: ingest and worker recover without a
//! process restart, and the next webhook is processed.
use serde_json::json;
use std::process::Command;
use std::time::Duration;
use wiremock::Mock;
use wiremock::matchers::method;

use crate::support::{Creates, Harness, eventually, order};

fn rabbitmqctl(arg: &str) {
    let out = Command::new("rabbitmqctl")
        .arg(arg)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "rabbitmqctl {arg} could not run ({e}); this suite needs the local RabbitMQ's CLI"
            )
        });
    assert!(
        out.status.success(),
        "rabbitmqctl {arg} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn ingest_and_worker_recover_from_a_broker_restart() {
    let h = Harness::start().await;
    let (store, _) = h.store_to_erp(json!({})).await;
    Mock::given(method("POST"))
        .respond_with(Creates::ids("ext"))
        .mount(&h.provider)
        .await;
    let before = h.accept(store, "before", order("ord-0", 1, "1")).await;
    h.wait_status(before[0], "succeeded", Duration::from_secs(15))
        .await;

    rabbitmqctl("stop_app");
    // However the test ends, the broker is started again (the suites after it need it).
    struct Restart;
    impl Drop for Restart {
        fn drop(&mut self) {
            if std::thread::panicking() {
                let _ = Command::new("rabbitmqctl").arg("start_app").output();
            }
        }
    }
    let _restart = Restart;
    eventually(
        "ingest notices the broker is gone",
        Duration::from_secs(20),
        || async { !h.broker.is_connected() },
    )
    .await;
    let during = h.send(store, "during", order("ord-1", 1, "1")).await;
    assert_eq!(
        during.status(),
        503,
        "no 2xx while the broker cannot confirm"
    );
    rabbitmqctl("start_app");

    eventually("ingest reconnects", Duration::from_secs(60), || async {
        h.broker.is_connected()
    })
    .await;
    // The worker reconnects on its own connection; the next webhook goes all the way.
    let started = std::time::Instant::now();
    let jobs = loop {
        let r = h.send(store, "after", order("ord-2", 1, "1")).await;
        if r.status() == 202 {
            break h.accept(store, "after", order("ord-2", 1, "1")).await;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "ingest still refuses webhooks: {}",
            r.status()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    h.wait_status(jobs[0], "succeeded", Duration::from_secs(60))
        .await;
    h.shutdown().await;
}
