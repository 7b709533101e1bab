//! Providers fail, throttle and go down: retries on schedule, dead letters with reasons,
//! a fleet-wide breaker and rate limit, replay.
use serde_json::json;
use std::time::{Duration, Instant};
use switchyard_broker::{Exchange, Headers, OutgoingMessage};
use switchyard_ops::dlq;
use switchyard_worker::{FaultPoint, WorkerConfig};
use wiremock::matchers::method;
use wiremock::{Mock, ResponseTemplate};

use crate::support::{ADMIN_TOKEN, Answer, Harness, Options, Scripted, eventually, order, status};

const WAIT: Duration = Duration::from_secs(20);

fn ms(d: Duration) -> i64 {
    d.as_millis() as i64
}

async fn provider(h: &Harness, answers: Vec<Answer>) -> Scripted {
    let s = Scripted::new(answers);
    Mock::given(method("POST"))
        .respond_with(s.clone())
        .mount(&h.provider)
        .await;
    s
}

#[tokio::test]
async fn transient_failures_are_retried_on_the_exponential_schedule() {
    let h = Harness::start().await;
    let (store, _) = h.store_to_erp(json!({})).await;
    let p = provider(
        &h,
        vec![status(500), status(500), status(500), Answer::Create],
    )
    .await;

    let jobs = h.accept(store, "e1", order("ord-1", 1, "1")).await;
    let job = h.wait_status(jobs[0], "succeeded", WAIT).await;
    assert_eq!(job.attempts, 4);
    assert_eq!(h.store.job_attempts(jobs[0]).await.unwrap().len(), 4);

    // fast_retry(): 100 ms, then ×2, no jitter. The delay levels never deliver early; the
    // measured lateness is the worker's own path (publish, TTL expiry, redelivery).
    let calls = p.calls();
    let expected = [100, 200, 400];
    for (i, want) in expected.iter().enumerate() {
        let gap = ms(calls[i + 1] - calls[i]);
        eprintln!(
            "retry {}: expected {want} ms, measured {gap} ms (late by {} ms)",
            i + 1,
            gap - want
        );
        assert!(
            gap >= *want - 2,
            "retry {} came early: {gap} ms < {want} ms",
            i + 1
        );
        assert!(
            gap <= *want + 300,
            "retry {} came too late: {gap} ms for {want} ms",
            i + 1
        );
    }
    h.shutdown().await;
}

#[tokio::test]
async fn a_validation_error_is_dead_lettered_at_once_with_the_providers_message() {
    let h = Harness::start().await;
    let (store, _) = h.store_to_erp(json!({})).await;
    let p = provider(
        &h,
        vec![Answer::With(
            ResponseTemplate::new(422).set_body_json(json!({"message": "total must be positive"})),
        )],
    )
    .await;

    let jobs = h.accept(store, "e1", order("ord-1", 1, "-5")).await;
    let job = h.wait_status(jobs[0], "dead", WAIT).await;
    assert_eq!(job.dead_reason.as_deref(), Some("rejected"));
    assert!(job.last_error.unwrap().contains("total must be positive"));
    assert_eq!(p.count(), 1, "a permanent failure is not retried");
    eventually("the dead letter is kept", WAIT, || async {
        h.dead_letters().await == 1
    })
    .await;
    let letters = dlq::list(&h.store, &dlq::Filter::default(), 10)
        .await
        .unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].reason.as_deref(), Some("rejected"));
    assert_eq!(letters[0].job_id, Some(jobs[0]));
    assert!(
        letters[0]
            .error
            .as_deref()
            .unwrap()
            .contains("total must be positive")
    );
    assert!(letters[0].first_received.is_some() && letters[0].dead_at.is_some());
    h.shutdown().await;
}

#[tokio::test]
async fn the_breaker_opens_holds_the_provider_off_and_closes_when_it_recovers() {
    let mut h = Harness::with(Options {
        worker: false,
        ..Default::default()
    })
    .await;
    let store = h.source("store").await;
    let erp = h
        .rest_target(
            "erp",
            "orders",
            json!({
                "breaker": {"window": 4, "minimum_calls": 4, "failure_rate_pct": 50,
                            "open_wait_ms": 1000, "half_open_probes": 1},
                "retry": {"initial_delay_ms": 50, "max_delay_ms": 200, "max_attempts": 100}
            }),
        )
        .await;
    h.route(store, &[erp]).await;
    let p = provider(&h, vec![status(503)]).await;
    // Two workers, as two processes would be, one job at a time each: they share one
    // breaker through Redis, so together they cost the provider what one would.
    let one_at_a_time = || WorkerConfig {
        concurrency: 1,
        prefetch: 1,
        ..Options::default().worker_config
    };
    let second = h.spawn_worker(one_at_a_time()).await;
    h.worker = Some(h.spawn_worker(one_at_a_time()).await);

    let mut jobs = Vec::new();
    for i in 0..10 {
        jobs.extend(
            h.accept(store, &format!("e{i}"), order(&format!("ord-{i}"), 1, "1"))
                .await,
        );
    }
    eventually("four failures open the breaker", WAIT, || async {
        p.count() >= 4
    })
    .await;
    let opened = Instant::now();
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let during = p.count();
    let open_periods = (opened.elapsed().as_millis() as usize).div_ceil(1000);
    eprintln!(
        "outage: {during} provider calls: 4 to open the breaker, then {} probe(s) in {open_periods} open period(s)",
        during - 4
    );
    // 4 to open it, 1 more the other worker may have had in flight, then one probe per
    // open period (a failed probe opens it again), and one for the period in progress.
    assert!(
        during <= 4 + 1 + open_periods + 1,
        "the breaker let {during} calls through an outage"
    );

    p.set(vec![Answer::Create]);
    for j in &jobs {
        h.wait_status(*j, "succeeded", WAIT).await;
    }
    let mut spent = 0;
    let mut deferred_by_breaker = false;
    for j in &jobs {
        let row = h.store.job(*j).await.unwrap();
        spent += row.attempts as usize;
        deferred_by_breaker |= row.last_error_class.as_deref() == Some("breaker_open");
    }
    assert_eq!(
        spent,
        p.count(),
        "attempts are spent on provider calls only, none while the breaker was open"
    );
    assert!(
        deferred_by_breaker,
        "some jobs were deferred by the open breaker"
    );
    let _ = second.stop().await;
    h.shutdown().await;
}

#[tokio::test]
async fn two_workers_share_one_rate_limit() {
    let mut h = Harness::with(Options {
        worker: false,
        ..Default::default()
    })
    .await;
    let store = h.source("store").await;
    let erp = h
        .rest_target(
            "erp",
            "orders",
            json!({"rate_limit": {"limit": 5, "per": "second"}}),
        )
        .await;
    h.route(store, &[erp]).await;
    let p = provider(&h, vec![Answer::Create]).await;
    let second = h.spawn_worker(Options::default().worker_config).await;
    h.worker = Some(h.spawn_worker(Options::default().worker_config).await);

    let mut jobs = Vec::new();
    for i in 0..12 {
        jobs.extend(
            h.accept(store, &format!("e{i}"), order(&format!("ord-{i}"), 1, "1"))
                .await,
        );
    }
    for j in &jobs {
        h.wait_status(*j, "succeeded", WAIT).await;
    }
    // 5 a second with no burst: admissions at least 200 ms apart across both workers. The
    // provider sees them through a network and a scheduler, so allow 50 ms of jitter.
    let calls = p.calls();
    assert_eq!(calls.len(), 12);
    let gaps: Vec<i64> = calls.windows(2).map(|w| ms(w[1] - w[0])).collect();
    eprintln!("gaps between calls (ms): {gaps:?}");
    assert!(
        gaps.iter().all(|g| *g >= 150),
        "calls closer than the limit allows: {gaps:?}"
    );
    for (i, t) in calls.iter().enumerate() {
        let in_second = calls[i..]
            .iter()
            .take_while(|u| **u - *t < Duration::from_secs(1))
            .count();
        assert!(in_second <= 5 + 1, "{in_second} calls within one second");
    }
    let _ = second.stop().await;
    h.shutdown().await;
}

#[tokio::test]
async fn a_429_with_retry_after_defers_without_spending_an_attempt() {
    let h = Harness::start().await;
    let (store, _) = h.store_to_erp(json!({})).await;
    let p = provider(
        &h,
        vec![
            Answer::With(ResponseTemplate::new(429).insert_header("retry-after", "2")),
            Answer::Create,
        ],
    )
    .await;
    let jobs = h.accept(store, "e1", order("ord-1", 1, "1")).await;
    let job = h.wait_status(jobs[0], "succeeded", WAIT).await;
    let calls = p.calls();
    let gap = ms(calls[1] - calls[0]);
    eprintln!("Retry-After: 2 → next call {gap} ms later");
    assert!(gap >= 2000, "the provider asked for 2 s and got {gap} ms");
    assert_eq!(job.attempts, 1, "the throttled call spent no attempt");
    assert_eq!(
        h.store.job_attempts(jobs[0]).await.unwrap().len(),
        2,
        "both calls are in the history"
    );
    h.shutdown().await;
}

#[tokio::test]
async fn exhausted_jobs_are_dead_lettered_and_replayed_once_the_provider_is_fixed() {
    let h = Harness::start().await;
    let store = h.source("store").await;
    let erp = h
        .rest_target(
            "erp",
            "orders",
            json!({"retry": {"max_attempts": 3, "initial_delay_ms": 50}}),
        )
        .await;
    let other = h
        .rest_target("other", "other", json!({"retry": {"max_attempts": 1}}))
        .await;
    h.route(store, &[erp, other]).await;
    let p = provider(&h, vec![status(503)]).await;

    let jobs = h.accept(store, "e1", order("ord-1", 1, "1")).await;
    let (erp_job, other_job) = {
        let a = h.store.job(jobs[0]).await.unwrap();
        if a.integration_id == erp {
            (jobs[0], jobs[1])
        } else {
            (jobs[1], jobs[0])
        }
    };
    let dead = h.wait_status(erp_job, "dead", WAIT).await;
    h.wait_status(other_job, "dead", WAIT).await;
    assert_eq!(dead.dead_reason.as_deref(), Some("exhausted"));
    assert_eq!(dead.attempts, 3);
    eventually("both dead letters are kept", WAIT, || async {
        h.dead_letters().await == 2
    })
    .await;
    let calls_before = p.count();

    // Look first: a dry run moves nothing (through the HTTP API).
    let resp = h
        .http
        .post(h.url("/v1/dlq/replay"))
        .bearer_auth(ADMIN_TOKEN)
        .json(&json!({"filter": {"reason": "exhausted", "integration_id": erp}, "dry_run": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let report: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(
        (report["matched"].as_u64(), report["moved"].as_u64()),
        (Some(1), Some(0))
    );
    assert_eq!(h.dead_letters().await, 2);
    let listed: serde_json::Value = h
        .http
        .get(h.url(&format!("/v1/dlq?reason=exhausted&integration_id={erp}")))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(listed["dead_letters"].as_array().unwrap().len(), 1);

    // Fixed: replay only erp's.
    p.set(vec![Answer::Create]);
    let f = dlq::Filter {
        reason: Some(switchyard_core::DeadReason::Exhausted),
        integration_id: Some(erp),
        ..Default::default()
    };
    let o = dlq::Options {
        dry_run: false,
        limit: 100,
        rate: Some(50.0),
        actor: "test".into(),
    };
    let r = dlq::replay(&h.broker, &h.store, &f, &o).await.unwrap();
    assert_eq!((r.matched, r.moved), (1, 1));
    let job = h.wait_status(erp_job, "succeeded", WAIT).await;
    assert_eq!(job.attempts, 1, "a replay starts with fresh attempts");
    assert_eq!(job.replays, 1);
    assert_eq!(
        h.store.job_attempts(erp_job).await.unwrap().len(),
        4,
        "and keeps its history"
    );
    assert_eq!(p.count(), calls_before + 1, "processed once");
    assert_eq!(
        h.dead_letters().await,
        1,
        "the other integration's dead letter stays"
    );
    let audit: i64 = sqlx::query_scalar("SELECT count(*) FROM dlq_actions WHERE action = 'replay'")
        .fetch_one(h.store.pool())
        .await
        .unwrap();
    assert_eq!(audit, 2, "the dry run and the replay are both on record");

    // A dead letter whose job has since succeeded is acknowledged as a duplicate on replay.
    let env = {
        let letters = h
            .store
            .dead_letters(&dlq::Filter::default(), 10)
            .await
            .unwrap();
        let body = letters[0].body.clone();
        let mut env = switchyard_core::Envelope::from_slice(&body).unwrap();
        env.integration_id = erp;
        env.id = job.id;
        env.idempotency_key = switchyard_core::ids::idempotency_key(
            env.source_integration_id,
            &env.event_id,
            erp,
            env.action,
        );
        env
    };
    let mut headers = Headers::default();
    headers.set(switchyard_broker::header::DEAD_REASON, "exhausted");
    h.broker
        .publish(&[OutgoingMessage {
            exchange: Exchange::DeadLetters,
            routing_key: env.routing_key(),
            message_id: env.id.to_string(),
            body: env.to_vec(),
            headers,
        }])
        .await
        .unwrap();
    eventually("the dead letter is kept", WAIT, || async {
        h.dead_letters().await == 2
    })
    .await;
    let r = dlq::replay(
        &h.broker,
        &h.store,
        &dlq::Filter {
            job_id: Some(job.id),
            ..Default::default()
        },
        &o,
    )
    .await
    .unwrap();
    assert_eq!(r.moved, 1);
    let id = job.id;
    eventually(
        "the replay is acknowledged as a duplicate",
        WAIT,
        || async { h.store.job(id).await.unwrap().duplicates == 1 },
    )
    .await;
    assert_eq!(h.store.job(id).await.unwrap().status, "succeeded");
    assert_eq!(p.count(), calls_before + 1, "no second effect");
    h.shutdown().await;
}

#[tokio::test]
async fn a_poison_message_is_dead_lettered_and_the_consumer_keeps_going() {
    let mut h = Harness::with(Options {
        worker: false,
        ..Default::default()
    })
    .await;
    let (store, _) = h.store_to_erp(json!({})).await;
    let p = provider(&h, vec![Answer::Create]).await;
    h.worker = Some(
        h.spawn_worker(Harness::worker_config_with_fault(FaultPoint::PanicFor(
            "poison".into(),
        )))
        .await,
    );

    let poison = h.accept(store, "p", order("poison", 1, "1")).await;
    let dead = h.wait_status(poison[0], "dead", WAIT).await;
    assert_eq!(dead.dead_reason.as_deref(), Some("malformed"));
    assert!(dead.last_error.unwrap().contains("panicked"));
    let fine = h.accept(store, "f", order("ord-1", 1, "1")).await;
    h.wait_status(fine[0], "succeeded", WAIT).await;
    assert_eq!(p.count(), 1);
    // And a message that is not an envelope at all goes straight to the DLQ (published
    // into the work queue as ingest publishes: the worker dead-letters it under the key it
    // came with, the queue's name).
    h.broker
        .publish(&[OutgoingMessage {
            exchange: Exchange::WorkQueue,
            routing_key: "rest.order.upsert".into(),
            message_id: "garbage".into(),
            body: b"{not json".to_vec(),
            headers: Headers::default(),
        }])
        .await
        .unwrap();
    eventually("both are kept", WAIT, || async {
        h.dead_letters().await == 2
    })
    .await;
    let letters = dlq::list(
        &h.store,
        &dlq::Filter {
            reason: Some(switchyard_core::DeadReason::Malformed),
            ..Default::default()
        },
        10,
    )
    .await
    .unwrap();
    assert_eq!(letters.len(), 2);
    let o = dlq::Options {
        dry_run: false,
        limit: 10,
        rate: None,
        actor: "test".into(),
    };
    let purged = dlq::purge(&h.store, &dlq::Filter::default(), &o)
        .await
        .unwrap();
    assert_eq!(purged.moved, 2);
    assert_eq!(h.dead_letters().await, 0);
    h.shutdown().await;
}

/// A target whose credentials this worker cannot open (their vault key is missing here) is
/// the hub's problem, not the job's: the job waits and retries, it is not dead-lettered.
#[tokio::test]
async fn credentials_the_worker_cannot_open_make_the_job_wait_not_die() {
    let h = Harness::start().await;
    let (store, erp) = h.store_to_erp(json!({})).await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({"id": "E-1"})))
        .mount(&h.provider)
        .await;
    sqlx::query("UPDATE integrations SET credentials_key_id = 'k-gone' WHERE id = $1")
        .bind(erp)
        .execute(h.store.pool())
        .await
        .unwrap();
    let jobs = h.accept(store, "evt-1", order("o-1", 1, "1.00")).await;
    let job = h.wait_status(jobs[0], "retrying", WAIT).await;
    let why = job.last_error.unwrap_or_default();
    assert!(why.contains("credentials"), "{why}");
    assert_eq!(
        job.attempts, 0,
        "no attempt spent: the provider was not called"
    );
    assert!(
        h.provider.received_requests().await.unwrap().is_empty(),
        "nothing was sent"
    );
}

/// An integration's calls at once count calls, not outcomes waiting for their commit: a
/// job whose call has ended gives its turn back before its outcome is written, so a slow
/// commit does not hold back the integration's next call.
#[tokio::test]
async fn a_job_gives_its_turn_back_when_its_call_ends() {
    let h = Harness::start().await;
    let shop = h.source("shop").await;
    let erp = h
        .rest_target("erp", "orders", json!({"concurrency": 1}))
        .await;
    h.route(shop, &[erp]).await;
    // The first order's call takes a moment, long enough to lock its job's row after its
    // claim and before its outcome.
    Mock::given(method("POST"))
        .and(wiremock::matchers::body_string_contains("ord-slow"))
        .respond_with(
            ResponseTemplate::new(201)
                .set_body_json(json!({"id": "E-slow"}))
                .set_delay(Duration::from_millis(700)),
        )
        .mount(&h.provider)
        .await;
    Mock::given(method("POST"))
        .respond_with(crate::support::Creates::ids("E"))
        .mount(&h.provider)
        .await;
    let first = h.accept(shop, "e-slow", order("ord-slow", 1, "1")).await[0];
    eventually("the first job to be claimed", WAIT, || async {
        h.job_status(first).await.as_deref() == Some("running")
    })
    .await;
    let mut hold = h.store.pool().begin().await.unwrap();
    sqlx::query("SELECT 1 FROM jobs WHERE id = $1 FOR UPDATE")
        .bind(first)
        .execute(&mut *hold)
        .await
        .unwrap();
    eventually(
        "the first job's outcome to wait for its row",
        WAIT,
        || async { h.waiting_on_locks().await > 0 },
    )
    .await;
    // The account takes one call at a time, and the first job's has ended.
    let second = h.accept(shop, "e-next", order("ord-next", 1, "1")).await[0];
    eventually(
        "the second job's call while the first job's outcome waits",
        WAIT,
        || async {
            h.provider
                .received_requests()
                .await
                .unwrap()
                .iter()
                .any(|r| String::from_utf8_lossy(&r.body).contains("ord-next"))
        },
    )
    .await;
    assert_eq!(h.job_status(first).await.as_deref(), Some("running"));
    hold.rollback().await.unwrap();
    assert_eq!(
        h.wait_status(first, "succeeded", WAIT)
            .await
            .external_id
            .as_deref(),
        Some("E-slow")
    );
    h.wait_status(second, "succeeded", WAIT).await;
}

/// A create that takes a moment: `201 {"id": "E-<n>"}` after 30 ms.
struct SlowCreates(std::sync::atomic::AtomicU64);

impl wiremock::Respond for SlowCreates {
    fn respond(&self, _: &wiremock::Request) -> ResponseTemplate {
        let n = self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        ResponseTemplate::new(201)
            .set_body_json(json!({"id": format!("E-{n}")}))
            .set_delay(Duration::from_millis(30))
    }
}

/// A busy integration's jobs wait in line for their turns while its calls keep ending,
/// longer than `turn_wait`, instead of going round the broker's delay queues (a second or
/// more each). Only jobs whose integration's calls have all stopped are put back (see
/// `a_tenant_whose_provider_hangs_does_not_stall_the_others`).
#[tokio::test]
async fn a_busy_integrations_jobs_wait_their_turn_instead_of_being_put_back() {
    let h = Harness::with(Options {
        worker: false,
        ..Options::default()
    })
    .await;
    let shop = h.source("shop").await;
    let erp = h
        .rest_target("erp", "orders", json!({"concurrency": 1}))
        .await;
    h.route(shop, &[erp]).await;
    Mock::given(method("POST"))
        .respond_with(SlowCreates(std::sync::atomic::AtomicU64::new(1)))
        .mount(&h.provider)
        .await;
    let worker = h
        .spawn_worker(WorkerConfig {
            turn_wait: Duration::from_millis(300),
            ..Options::default().worker_config
        })
        .await;
    // One call at a time, 30 ms each and more: the last of 16 waits well past 300 ms.
    let mut jobs = Vec::new();
    for n in 0..16 {
        jobs.extend(
            h.accept(shop, &format!("e-{n}"), order(&format!("ord-{n}"), 1, "1"))
                .await,
        );
    }
    for j in &jobs {
        h.wait_status(*j, "succeeded", WAIT).await;
    }
    let put_back: f64 = worker
        .metrics
        .gather()
        .iter()
        .filter(|f| f.name() == "switchyard_job_deferrals_total")
        .flat_map(|f| f.get_metric().iter())
        .filter(|m| m.get_label().iter().any(|l| l.value() == "turn"))
        .map(|m| m.get_counter().get_value())
        .sum();
    assert_eq!(
        put_back, 0.0,
        "jobs put back while the integration's calls kept ending"
    );
    worker.stop().await.unwrap();
    h.shutdown().await;
}

/// A provider that accepts connections and never answers: a hung ERP.
async fn black_hole() -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((conn, _)) = listener.accept().await {
            held.push(conn);
        }
    });
    (format!("http://{addr}"), task)
}

/// Sessions of the test's database that sit in an open transaction doing nothing.
async fn idle_in_transaction(h: &Harness) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND state = 'idle in transaction'",
    )
    .bind(&h.db_name)
    .fetch_one(h.store.pool())
    .await
    .unwrap()
}

#[tokio::test]
async fn a_tenant_whose_provider_hangs_does_not_stall_the_others() {
    // Four jobs at once in all; one integration may hold at most half of them.
    let h = Harness::with(Options {
        worker_config: WorkerConfig {
            concurrency: 4,
            ..Options::default().worker_config
        },
        ..Options::default()
    })
    .await;
    let (hung_url, _hole) = black_hole().await;
    let shop_a = h.source("shop-a").await;
    let erp_a = h
        .rest_target(
            "erp-a",
            "orders",
            json!({"base_url": hung_url, "timeout_ms": 120000}),
        )
        .await;
    h.route(shop_a, &[erp_a]).await;
    let shop_b = h.source("shop-b").await;
    let erp_b = h.rest_target("erp-b", "orders", json!({})).await;
    h.route(shop_b, &[erp_b]).await;
    Mock::given(method("POST"))
        .respond_with(crate::support::Creates::ids("B"))
        .mount(&h.provider)
        .await;
    // Tenant A's jobs arrive first, and more of them than the worker has slots.
    let mut a_jobs = Vec::new();
    for n in 0..8 {
        a_jobs.extend(
            h.accept(
                shop_a,
                &format!("a-{n}"),
                order(&format!("a{n}"), 1, "1.00"),
            )
            .await,
        );
    }
    let running = async || {
        let mut n = 0;
        for j in &a_jobs {
            if h.job_status(*j).await.as_deref() == Some("running") {
                n += 1;
            }
        }
        n
    };
    eventually("tenant A's calls to reach its provider", WAIT, || async {
        running().await == 2
    })
    .await;
    // Tenant B's jobs still go through while A's provider holds its calls.
    let mut b_jobs = Vec::new();
    for n in 0..6 {
        b_jobs.extend(
            h.accept(
                shop_b,
                &format!("b-{n}"),
                order(&format!("b{n}"), 1, "1.00"),
            )
            .await,
        );
    }
    for j in &b_jobs {
        h.wait_status(*j, "succeeded", WAIT).await;
    }
    // A holds two calls, and no database connection waits on them.
    assert_eq!(
        running().await,
        2,
        "tenant A calls at most its share at once"
    );
    assert_eq!(
        idle_in_transaction(&h).await,
        0,
        "a database connection was held open across a provider call"
    );
}

#[tokio::test]
async fn dead_letter_operations_are_bounded_and_check_their_acks() {
    let mut h = Harness::start().await;
    let (mine, theirs) = (uuid::Uuid::now_v7(), uuid::Uuid::now_v7());
    h.publish_dead_letters("acme", mine, 0..3).await;
    h.publish_dead_letters("beta", theirs, 3..6).await;
    eventually("six dead letters kept", WAIT, || async {
        h.dead_letters().await == 6
    })
    .await;
    let tenant = |t: &str| dlq::Filter {
        tenant: Some(t.into()),
        ..Default::default()
    };
    let options = |rate: Option<f64>| dlq::Options {
        dry_run: false,
        limit: 100,
        rate,
        actor: "test".into(),
    };
    // An absurd rate is refused, not a panic or a replay that holds messages for ages.
    for rate in [1e-30, 0.0001, f64::NAN, -1.0, 1e12] {
        let e = dlq::replay(&h.broker, &h.store, &tenant("acme"), &options(Some(rate)))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("rate"), "{rate}: {e}");
    }
    assert_eq!(h.dead_letters().await, 6, "nothing moved");
    // A slow replay holds only what it is replaying: another tenant's dead letters can be
    // listed, in full, meanwhile.
    let replay = {
        let (broker, store, acme) = (h.broker.clone(), h.store.clone(), tenant("acme"));
        let o = options(Some(2.0));
        tokio::spawn(async move { dlq::replay(&broker, &store, &acme, &o).await })
    };
    eventually(
        "the other tenant's letters are listed while it runs",
        WAIT,
        || async {
            !replay.is_finished()
                && dlq::list(&h.store, &tenant("beta"), 100)
                    .await
                    .unwrap()
                    .len()
                    == 3
        },
    )
    .await;
    let report = replay.await.unwrap().unwrap();
    assert_eq!((report.matched, report.moved), (3, 3));
    assert_eq!(
        dlq::list(&h.store, &tenant("beta"), 100)
            .await
            .unwrap()
            .len(),
        3
    );
    // An acknowledgement the broker never got is not reported as done.
    // (The keeper stopped, so the letter stays in the queue.)
    if let Some(w) = h.worker.take() {
        w.stop().await.unwrap();
    }
    h.publish_dead_letters("beta", theirs, 6..7).await;
    let drained = h
        .broker
        .drain(&h.topology.dead_letter_queue("rest"), 10, 1 << 20)
        .await
        .unwrap();
    let first = &drained.deliveries[0];
    drained.close().await;
    assert!(
        first.ack().await.is_err(),
        "an ack on a closed channel succeeded"
    );
    eventually("the letter is back", WAIT, || async {
        h.queue_depth(&h.topology.dead_letter_queue("rest")).await == 1
    })
    .await;
    h.shutdown().await;
}

/// Two processes' guards on one fleet's Redis: `here` (trusting a closed breaker for
/// `trust`) admits a call, hearing from Redis that the breaker is closed; then the other
/// process fails four calls in a row and the fleet's breaker opens. Returns `here` and the
/// policy.
async fn opened_behind_its_back(
    trust: Duration,
    report_every: Duration,
) -> (
    switchyard_resilience::Guard,
    switchyard_resilience::BreakerPolicy,
) {
    use switchyard_resilience::{Admission, Guard, Outcome};
    let prefix = format!("t{}:", uuid::Uuid::new_v4().simple());
    let here = Guard::shared(&crate::support::redis_url(), &prefix)
        .unwrap()
        .trusting_closed_for(trust)
        .reporting_every(report_every);
    let there = Guard::shared(&crate::support::redis_url(), &prefix).unwrap();
    let p = switchyard_resilience::BreakerPolicy {
        window: 4,
        minimum_calls: 4,
        open_wait_ms: 60_000,
        ..Default::default()
    };
    assert_eq!(here.admit("acct", &p, &[]).await, Admission::Go);
    for _ in 0..4 {
        assert_eq!(there.admit("acct", &p, &[]).await, Admission::Go);
        there.record("acct", &p, Outcome::Failure).await;
    }
    assert!(matches!(
        there.admit("acct", &p, &[]).await,
        Admission::BreakerOpen(_)
    ));
    (here, p)
}

#[tokio::test]
async fn a_breaker_another_process_opens_stops_this_ones_calls_when_its_trust_runs_out() {
    use switchyard_resilience::Admission;
    let (here, p) = opened_behind_its_back(Duration::from_secs(2), Duration::ZERO).await;
    assert_eq!(
        here.admit("acct", &p, &[]).await,
        Admission::Go,
        "within its trust, this process does not ask again"
    );
    tokio::time::sleep(Duration::from_millis(2100)).await;
    assert!(
        matches!(here.admit("acct", &p, &[]).await, Admission::BreakerOpen(_)),
        "once the trust has run out, the fleet's open breaker holds this process's calls"
    );
}

#[tokio::test]
async fn a_calls_outcome_tells_this_process_the_fleet_opened_its_breaker() {
    use switchyard_resilience::{Admission, BreakerState, Outcome};
    let (here, p) = opened_behind_its_back(Duration::from_secs(60), Duration::ZERO).await;
    // This process's call in flight ends (well): the answer is the fleet's state.
    assert_eq!(
        here.record("acct", &p, Outcome::Success).await,
        Some(BreakerState::Open)
    );
    assert!(
        matches!(here.admit("acct", &p, &[]).await, Admission::BreakerOpen(_)),
        "a process that heard the breaker is open stops at once, whatever its trust"
    );
}

#[tokio::test]
async fn a_success_held_for_its_report_hears_of_the_open_breaker_when_the_report_goes() {
    use switchyard_resilience::{Admission, BreakerState, Outcome};
    let (here, p) =
        opened_behind_its_back(Duration::from_secs(60), Duration::from_millis(300)).await;
    // This process's call in flight ends well: held for the report, answered as trusted.
    assert_eq!(
        here.record("acct", &p, Outcome::Success).await,
        Some(BreakerState::Closed)
    );
    assert_eq!(
        here.admit("acct", &p, &[]).await,
        Admission::Go,
        "until its report goes, this process goes on trust"
    );
    eventually(
        "the report brings the fleet's open breaker back",
        WAIT,
        || async { matches!(here.admit("acct", &p, &[]).await, Admission::BreakerOpen(_)) },
    )
    .await;
}

/// A fresh account's breaker on one fleet's Redis, trusted closed by `guard` (which has
/// asked once), and a connection to read its window with.
async fn trusted_account(
    report_every: Duration,
) -> (
    switchyard_resilience::Guard,
    redis::aio::MultiplexedConnection,
    String,
) {
    use switchyard_resilience::{Admission, Guard};
    let prefix = format!("t{}:", uuid::Uuid::new_v4().simple());
    let guard = Guard::shared(&crate::support::redis_url(), &prefix)
        .unwrap()
        .trusting_closed_for(Duration::from_secs(60))
        .reporting_every(report_every);
    assert_eq!(
        guard
            .admit(
                "acct",
                &switchyard_resilience::BreakerPolicy::default(),
                &[]
            )
            .await,
        Admission::Go
    );
    let redis = redis::Client::open(crate::support::redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    (guard, redis, format!("{prefix}sy:bw:acct"))
}

/// The account's breaker window in Redis, newest first.
async fn window(redis: &redis::aio::MultiplexedConnection, key: &str) -> Vec<String> {
    redis::cmd("LRANGE")
        .arg(key)
        .arg(0)
        .arg(-1)
        .query_async(&mut redis.clone())
        .await
        .unwrap()
}

#[tokio::test]
async fn successes_on_trust_are_reported_together_and_a_failure_at_once_after_them() {
    use switchyard_resilience::{BreakerPolicy, BreakerState, Outcome};
    let p = BreakerPolicy::default();
    // Held for a minute: only a failure, or a full report, sends them.
    let (guard, redis, key) = trusted_account(Duration::from_secs(60)).await;
    for _ in 0..3 {
        assert_eq!(
            guard.record("acct", &p, Outcome::Success).await,
            Some(BreakerState::Closed)
        );
    }
    assert!(window(&redis, &key).await.is_empty(), "held, not sent");
    assert_eq!(
        guard.record("acct", &p, Outcome::Failure).await,
        Some(BreakerState::Closed)
    );
    assert_eq!(
        window(&redis, &key).await,
        ["f", "s", "s", "s"],
        "the failure went at once, after the successes held before it (newest first)"
    );
    // A slow call is not held either.
    guard.record("acct", &p, Outcome::SlowSuccess).await;
    assert_eq!(window(&redis, &key).await.len(), 5);

    // An account's report holds at most 64; the next success sends them all.
    let (guard, redis, key) = trusted_account(Duration::from_secs(60)).await;
    for _ in 0..64 {
        guard.record("acct", &p, Outcome::Success).await;
    }
    assert!(window(&redis, &key).await.is_empty());
    guard.record("acct", &p, Outcome::Success).await;
    assert_eq!(
        window(&redis, &key).await.len(),
        p.window as usize,
        "65 reported; the window keeps its last {}",
        p.window
    );

    // Otherwise the report goes on its own after the configured time.
    let (guard, redis, key) = trusted_account(Duration::from_millis(50)).await;
    guard.record("acct", &p, Outcome::Success).await;
    guard.record("acct", &p, Outcome::Success).await;
    eventually("the held successes are reported", WAIT, || async {
        window(&redis, &key).await.len() == 2
    })
    .await;
}

#[tokio::test]
async fn held_successes_reported_while_the_breaker_is_half_open_are_its_probes() {
    use switchyard_resilience::{Admission, BreakerPolicy, BreakerState, Guard, Outcome};
    let p = BreakerPolicy {
        window: 4,
        minimum_calls: 4,
        open_wait_ms: 100,
        half_open_probes: 2,
        ..Default::default()
    };
    let (here, redis, key) = trusted_account(Duration::from_secs(60)).await;
    let prefix = key.trim_end_matches("sy:bw:acct").to_owned();
    // Two of this process's calls end well, on trust: held.
    here.record("acct", &p, Outcome::Success).await;
    here.record("acct", &p, Outcome::Success).await;
    // Meanwhile another process opens the breaker, and after its wait takes a probe.
    let there = Guard::shared(&crate::support::redis_url(), &prefix).unwrap();
    for _ in 0..4 {
        there.record("acct", &p, Outcome::Failure).await;
    }
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(there.admit("acct", &p, &[]).await, Admission::Go);
    // This process's next call fails: its report carries the two successes first, which
    // are the half-open breaker's two probes and close it; the failure then starts the
    // closed breaker's new window.
    assert_eq!(
        here.record("acct", &p, Outcome::Failure).await,
        Some(BreakerState::Closed)
    );
    assert_eq!(window(&redis, &key).await, ["f"]);
}

#[tokio::test]
async fn with_no_trust_every_call_asks_the_fleet() {
    use switchyard_resilience::Admission;
    let (here, p) = opened_behind_its_back(Duration::ZERO, Duration::ZERO).await;
    assert!(matches!(
        here.admit("acct", &p, &[]).await,
        Admission::BreakerOpen(_)
    ));
}
