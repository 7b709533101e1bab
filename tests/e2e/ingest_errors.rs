//! Bad input gets a clear error and publishes nothing; a broker outage gets 503.
use serde_json::{Value, json};
use std::time::Duration;
use uuid::Uuid;

use crate::support::{API_KEY, Harness, Options, order};

async fn error_of(resp: reqwest::Response) -> (u16, String, Value) {
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body: Value = resp.json().await.unwrap();
    (status, retry_after, body)
}

#[tokio::test]
async fn bad_requests_are_refused_with_a_reason_and_nothing_is_published() {
    let h = Harness::with(Options {
        worker: false,
        max_body_bytes: 1024,
        ..Default::default()
    })
    .await;
    let (store, _) = h.store_to_erp(json!({})).await;
    let url = h.url(&format!("/v1/webhooks/{store}"));
    let post = |body: String, key: &str, ct: &str| {
        h.http
            .post(&url)
            .header("content-type", ct)
            .header("x-api-key", key)
            .header("x-event-id", "e1")
            .body(body)
            .send()
    };

    let (s, _, b) = error_of(
        post("{\"id\": ".into(), API_KEY, "application/json")
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (s, b["error"]["code"].as_str().unwrap()),
        (400, "malformed_json")
    );
    assert!(
        b["error"]["message"].as_str().unwrap().contains("line 1"),
        "{b}"
    );

    let (s, _, b) = error_of(
        post(order("o", 1, "1").to_string(), "wrong", "application/json")
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (s, b["error"]["code"].as_str().unwrap()),
        (401, "invalid_credentials")
    );

    let resp = h
        .http
        .post(&url)
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    let (s, _, b) = error_of(resp).await;
    assert_eq!(
        (s, b["error"]["code"].as_str().unwrap()),
        (401, "missing_credentials")
    );

    let (s, _, b) = error_of(
        post(order("o", 1, "1").to_string(), API_KEY, "text/plain")
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (s, b["error"]["code"].as_str().unwrap()),
        (415, "unsupported_media_type")
    );

    let big = json!({"id": "o", "version": 1, "pad": "x".repeat(2000)}).to_string();
    let (s, _, b) = error_of(post(big, API_KEY, "application/json").await.unwrap()).await;
    assert_eq!(
        (s, b["error"]["code"].as_str().unwrap()),
        (413, "payload_too_large")
    );

    let (s, _, b) = error_of(
        post(
            json!({"version": 1}).to_string(),
            API_KEY,
            "application/json",
        )
        .await
        .unwrap(),
    )
    .await;
    assert_eq!(
        (s, b["error"]["code"].as_str().unwrap()),
        (422, "invalid_event")
    );
    assert!(
        b["error"]["message"]
            .as_str()
            .unwrap()
            .contains("internal_id"),
        "{b}"
    );

    for path in [
        format!("/v1/webhooks/{}", Uuid::now_v7()),
        "/v1/webhooks/not-a-uuid".to_owned(),
    ] {
        let resp = h
            .http
            .post(h.url(&path))
            .header("content-type", "application/json")
            .header("x-api-key", API_KEY)
            .body("{}")
            .send()
            .await
            .unwrap();
        let (s, _, b) = error_of(resp).await;
        assert_eq!(
            (s, b["error"]["code"].as_str().unwrap()),
            (404, "unknown_integration")
        );
    }

    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        h.queue_depth(&h.topology.queue("rest")).await,
        0,
        "nothing was published"
    );
    assert!(h.provider.received_requests().await.unwrap().is_empty());
    h.shutdown().await;
}

#[tokio::test]
async fn an_unreachable_broker_gets_503_with_retry_after_and_readyz_says_so() {
    let h = Harness::with(Options {
        amqp_url: "amqp://guest:guest@127.0.0.1:1/%2f".into(),
        worker: false,
        ..Default::default()
    })
    .await;
    let (store, _) = h.store_to_erp(json!({})).await;

    let (s, retry_after, b) = error_of(h.send(store, "e1", order("o", 1, "1")).await).await;
    assert_eq!(s, 503);
    assert_eq!(retry_after, "3");
    assert_eq!(b["error"]["code"], "broker_unavailable");

    let ready = h.http.get(h.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    let body: Value = ready.json().await.unwrap();
    assert_eq!(body["checks"]["database"], "ok");
    assert!(
        body["checks"]["broker"]
            .as_str()
            .unwrap()
            .starts_with("down")
    );
    let health = h.http.get(h.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    // Nothing was recorded as a job either.
    assert!(
        h.store
            .list_jobs(&Default::default())
            .await
            .unwrap()
            .is_empty()
    );
    h.shutdown().await;
}

#[tokio::test]
async fn readyz_is_ready_when_broker_and_database_are() {
    let h = Harness::with(Options {
        worker: false,
        ..Default::default()
    })
    .await;
    let ready = h.http.get(h.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);
    h.shutdown().await;
}

#[tokio::test]
async fn an_event_with_no_route_is_accepted_and_does_nothing() {
    let h = Harness::with(Options {
        worker: false,
        ..Default::default()
    })
    .await;
    let store = h.source("store").await;
    let resp = h.send(store, "e1", order("o", 1, "1")).await;
    assert_eq!(resp.status(), 202);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["jobs"], json!([]));
    assert!(
        body["note"]
            .as_str()
            .unwrap()
            .contains("no route from `store` takes order.received"),
        "{body}"
    );
    h.shutdown().await;
}

#[tokio::test]
async fn services_refuse_an_unmigrated_database_and_say_what_to_do() {
    let (name, url) = crate::support::empty_database().await.unwrap();
    let store = switchyard_store::Store::connect(&url, 2).await.unwrap();
    let err = store.ensure_migrated().await.unwrap_err();
    assert!(matches!(
        err,
        switchyard_store::StoreError::NotMigrated { .. }
    ));
    assert!(
        err.to_string().contains("run `switchyard migrate`"),
        "{err}"
    );
    store.migrate().await.unwrap();
    store.ensure_migrated().await.unwrap();
    store.close().await;
    crate::support::drop_database(&name).await;
}

/// Reported: a webhook whose body is `{"id": "nul\u0000x"}` was answered 202, and its job
/// then failed in the database (`invalid byte sequence for encoding "UTF8": 0x00`) and was
/// retried every 5 s for ever. PostgreSQL's text cannot hold NUL: refuse it at the door, and
/// dead-letter (as malformed) any job the database refuses as bad data.
#[tokio::test]
async fn a_nul_character_is_refused_at_ingest_and_a_job_the_database_refuses_is_dead_lettered() {
    let h = Harness::start().await;
    let (store, erp) = h.store_to_erp(json!({})).await;
    let resp = h
        .send(store, "e-nul", json!({"id": "nul\u{0000}x", "version": 1}))
        .await;
    assert_eq!(resp.status(), 422);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_event");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("NUL"),
        "{body}"
    );
    let resp = h
        .send(
            store,
            "e-nul-2",
            json!({"id": "o-1", "version": 1, "note": "a\u{0000}b"}),
        )
        .await;
    assert_eq!(resp.status(), 422, "anywhere in the data");

    // One that got past ingest anyway (an older build, another producer): the worker
    // dead-letters it instead of retrying it for ever.
    let mut env = switchyard_core::Envelope {
        v: switchyard_core::ENVELOPE_VERSION,
        id: Uuid::nil(),
        idempotency_key: "k-nul".into(),
        tenant: "acme".into(),
        integration_id: erp,
        provider: "rest".into(),
        source_integration_id: Some(store),
        event_id: "e-nul-3".into(),
        event: "created".into(),
        entity: "order".into(),
        action: switchyard_core::Action::Upsert,
        direction: switchyard_core::Direction::Export,
        internal_id: "nul\u{0000}y".into(),
        source_version: None,
        occurred_at: None,
        received_at: chrono::Utc::now(),
        payload: json!({"id": "nul\u{0000}y"}),
        sync_run_id: None,
        route: Default::default(),
        trace: None,
    };
    env.id = switchyard_core::ids::job_id(&env.idempotency_key);
    h.broker
        .publish(&[switchyard_broker::OutgoingMessage::job(&env)])
        .await
        .unwrap();
    crate::support::eventually(
        "the job is dead-lettered and its dead letter kept",
        Duration::from_secs(20),
        || async {
            let kept = switchyard_ops::dlq::list(&h.store, &Default::default(), 10)
                .await
                .unwrap();
            kept.len() == 1 && kept[0].internal_id.as_deref() == Some("nul\u{fffd}y")
        },
    )
    .await;
    h.shutdown().await;
}

/// A client that sends its headers, or its body, too slowly (slowloris) loses the
/// connection instead of holding it: the harness gives each 500 ms.
#[tokio::test]
async fn slow_senders_are_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let h = Harness::with(Options {
        worker: false,
        ..Default::default()
    })
    .await;
    let addr = h
        .url("/")
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_owned();
    // Headers that never end.
    let mut slow = tokio::net::TcpStream::connect(&addr).await.unwrap();
    slow.write_all(b"POST /v1/webhooks/x HTTP/1.1\r\nHost: a\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut buf)).await;
    assert!(
        read.is_ok(),
        "the connection is still open after 5 s of silence"
    );
    // A body that never comes.
    let source = h.source("shop").await;
    let mut slow = tokio::net::TcpStream::connect(&addr).await.unwrap();
    slow.write_all(
        format!(
            "POST /v1/webhooks/{source} HTTP/1.1\r\nHost: a\r\ncontent-type: application/json\r\nx-api-key: {}\r\ncontent-length: 100\r\n\r\n{{\"id\":",
            API_KEY
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), slow.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "a body that never comes holds the connection");
    let answer = String::from_utf8_lossy(&buf);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
}

/// A harness without workers and a route from a store to an ERP; the jobs table locked
/// against inserts (until the transaction ends); and the store's webhook `e1`, answered
/// meanwhile: the harness, the store, the lock and the webhook's job ids.
async fn answered_while_no_row_can_be_written() -> (
    Harness,
    Uuid,
    sqlx::Transaction<'static, sqlx::Postgres>,
    Vec<Uuid>,
) {
    let h = Harness::with(Options {
        worker: false,
        ..Default::default()
    })
    .await;
    let (store, _) = h.store_to_erp(json!({})).await;
    let mut lock = h.store.pool().begin().await.unwrap();
    sqlx::query("LOCK TABLE jobs IN SHARE MODE")
        .execute(&mut *lock)
        .await
        .unwrap();
    // (A hang guard, not a measure: the old ingest waited for the row before answering.)
    let jobs = tokio::time::timeout(
        Duration::from_secs(20),
        h.accept(store, "e1", order("o1", 1, "1")),
    )
    .await
    .expect("answered while its row cannot be written yet");
    (h, store, lock, jobs)
}

/// A webhook is answered once its jobs are durable in the broker; their `queued` rows are
/// written after the answer. Until a row is committed, the process that answered finds the
/// job: a re-sent webhook is a duplicate (published once) and `GET /v1/jobs/{id}` waits for
/// the row rather than answer 404. Here the jobs table is locked against inserts while
/// that happens.
#[tokio::test]
async fn a_webhook_is_answered_before_its_queued_row_is_written_and_its_job_is_found() {
    let (h, store, lock, jobs) = answered_while_no_row_can_be_written().await;
    assert_eq!(jobs.len(), 1);
    assert!(
        h.store.unrecorded().contains(&jobs[0]),
        "its row is being written"
    );

    let again = h.send(store, "e1", order("o1", 1, "1")).await;
    assert_eq!(again.status(), 202);
    let again: Value = again.json().await.unwrap();
    assert_eq!(again["duplicate"], true, "{again}");
    assert_eq!(
        h.queue_depth(&h.topology.queue("rest")).await,
        1,
        "published once"
    );

    let read = tokio::spawn({
        let http = h.http.clone();
        let url = h.url(&format!("/v1/jobs/{}", jobs[0]));
        async move {
            let resp = http
                .get(url)
                .bearer_auth(crate::support::ADMIN_TOKEN)
                .send()
                .await
                .unwrap();
            (resp.status().as_u16(), resp.json::<Value>().await.unwrap())
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!read.is_finished(), "the read waits for the row");
    lock.rollback().await.unwrap();
    let (status, body) = read.await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["job"]["status"], "queued");
    assert!(
        h.store.unrecorded().drained(Duration::from_secs(20)).await,
        "the row was written"
    );
    h.shutdown().await;
}

/// A stopping ingest finishes writing the queued rows of the jobs it answered for (for up to
/// 5 s) before it ends.
#[tokio::test]
async fn a_stopping_ingest_writes_the_queued_rows_of_the_jobs_it_answered_for() {
    let (mut h, _, lock, jobs) = answered_while_no_row_can_be_written().await;

    let ingest = h.stop_ingest();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !ingest.is_finished(),
        "ingest waits for the row it is writing"
    );
    lock.rollback().await.unwrap();
    ingest.await.unwrap().unwrap();
    let status: Option<String> = sqlx::query_scalar("SELECT status FROM jobs WHERE id = $1")
        .bind(jobs[0])
        .fetch_optional(h.store.pool())
        .await
        .unwrap();
    assert_eq!(
        status.as_deref(),
        Some("queued"),
        "written before ingest ended"
    );
    h.shutdown().await;
}

/// Ingest's duplicate check and its queued rows run on connections they keep
/// (`switchyard_store::Held`). When the database drops them (as in a restart), the next
/// webhook is still accepted: its check cannot say, so it is published (workers
/// deduplicate), and its queued row is left for the worker to make. The webhook after it is
/// checked and recorded on new connections.
#[tokio::test]
async fn ingest_takes_new_connections_when_the_database_drops_its_own() {
    let h = Harness::with(Options {
        worker: false,
        ..Default::default()
    })
    .await;
    let (store, _) = h.store_to_erp(json!({})).await;
    let first = h.accept(store, "e1", order("o1", 1, "1")).await;
    assert_eq!(h.store.job(first[0]).await.unwrap().status, "queued");

    let dropped: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid() \
           AND application_name = 'switchyard'",
    )
    .fetch_all(h.store.pool())
    .await
    .unwrap();
    assert!(dropped.len() >= 2, "ingest's two kept connections and more");

    let second = h.accept(store, "e2", order("o2", 1, "1")).await;
    assert_eq!(second.len(), 1);
    // Its row, written after the answer, fails on the dropped connection (or is written on
    // a new one).
    assert!(h.store.unrecorded().drained(Duration::from_secs(20)).await);
    assert!(
        h.metrics()
            .await
            .contains("switchyard_queued_rows_not_written_total 1"),
        "its row was not written"
    );
    let third = h.accept(store, "e3", order("o3", 1, "1")).await;
    assert_eq!(
        h.store.job(third[0]).await.unwrap().status,
        "queued",
        "recorded on a new connection"
    );
    let again = h.send(store, "e3", order("o3", 1, "1")).await;
    assert_eq!(again.status(), 202);
    let again: Value = again.json().await.unwrap();
    assert_eq!(
        again["duplicate"], true,
        "checked on a new connection: {again}"
    );
    assert_eq!(
        h.queue_depth(&h.topology.queue("rest")).await,
        3,
        "e1, e2 and e3 once"
    );
    h.shutdown().await;
}
