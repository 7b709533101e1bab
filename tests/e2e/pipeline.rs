//! Webhook → RabbitMQ → worker → provider → Postgres.
use serde_json::json;
use std::time::Duration;
use switchyard_broker::{Exchange, Headers, OutgoingMessage};
use switchyard_worker::FaultPoint;
use wiremock::matchers::{body_json, header, method, path, path_regex};
use wiremock::{Mock, ResponseTemplate};

use crate::support::{Harness, eventually, order};

const WAIT: Duration = Duration::from_secs(15);

fn created(id: &str) -> ResponseTemplate {
    ResponseTemplate::new(201).set_body_json(json!({"id": id}))
}

#[tokio::test]
async fn an_order_webhook_creates_the_order_once_and_maps_its_id() {
    let h = Harness::start().await;
    let (store, erp) = h.store_to_erp(json!({})).await;
    Mock::given(method("POST"))
        .and(path("/api/orders"))
        .and(header("authorization", "Bearer provider-token"))
        .and(body_json(json!({"reference": "ord-1", "total": "19.90", "customer": {"email": "ord-1@example.com"}})))
        .respond_with(created("ext-77"))
        .expect(1)
        .mount(&h.provider)
        .await;

    let jobs = h.accept(store, "evt-1", order("ord-1", 1, "19.90")).await;
    assert_eq!(jobs.len(), 1);
    let job = h.wait_status(jobs[0], "succeeded", WAIT).await;
    assert_eq!(job.attempts, 1);
    assert_eq!(job.external_id.as_deref(), Some("ext-77"));
    let m = h
        .store
        .mapping(erp, "order", "ord-1")
        .await
        .unwrap()
        .expect("mapping");
    assert_eq!(m.external_id, "ext-77");
    assert_eq!(m.last_source_version, Some(1));
    let attempts = h.store.job_attempts(jobs[0]).await.unwrap();
    assert_eq!(attempts.len(), 1);
    assert_eq!(attempts[0].status_code, Some(201));
    assert!(
        !attempts[0]
            .request
            .clone()
            .unwrap_or_default()
            .contains("provider-token")
    );

    // The job is visible through the management API too.
    let resp = h
        .http
        .get(h.url(&format!("/v1/jobs/{}", jobs[0])))
        .bearer_auth(crate::support::ADMIN_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["job"]["status"], "succeeded");
    let unauth = h
        .http
        .get(h.url(&format!("/v1/jobs/{}", jobs[0])))
        .send()
        .await
        .unwrap();
    assert_eq!(unauth.status(), 401);
    h.provider.verify().await;
    h.shutdown().await;
}

#[tokio::test]
async fn the_same_event_twice_has_one_effect() {
    let h = Harness::start().await;
    let (store, erp) = h.store_to_erp(json!({})).await;
    Mock::given(method("POST"))
        .respond_with(created("ext-1"))
        .expect(1)
        .mount(&h.provider)
        .await;

    let first = h.accept(store, "evt-dup", order("ord-1", 1, "5.00")).await;
    let second = h.accept(store, "evt-dup", order("ord-1", 1, "5.00")).await;
    assert_eq!(first, second, "a re-sent event names the same job");
    h.wait_status(first[0], "succeeded", WAIT).await;

    // Past ingest's check, straight into the queue twice more: the worker's claim holds.
    let job = h.store.job(first[0]).await.unwrap();
    let mut env = envelope(
        store,
        erp,
        "evt-dup",
        "ord-1",
        switchyard_core::Action::Upsert,
    );
    assert_eq!(env.id, job.id);
    env.source_version = Some(1);
    env.payload = order("ord-1", 1, "5.00");
    let msg = OutgoingMessage {
        exchange: Exchange::Jobs,
        routing_key: env.routing_key(),
        message_id: env.id.to_string(),
        body: env.to_vec(),
        headers: Headers::default(),
    };
    h.broker.publish(&[msg.clone(), msg]).await.unwrap();
    let id = job.id;
    eventually(
        "both redeliveries are acknowledged as duplicates",
        WAIT,
        || async { h.store.job(id).await.unwrap().duplicates == 2 },
    )
    .await;
    h.provider.verify().await;
    h.shutdown().await;
}

/// A job's first publication goes straight into its provider's work queue (the default
/// exchange); a message the broker dead-letters from there still reaches the provider's
/// dead-letter queue, and the keeper shows the job's own routing key.
#[tokio::test]
async fn a_job_published_straight_to_its_queue_is_dead_lettered_into_its_dead_letter_queue() {
    let h = Harness::with(crate::support::Options {
        worker: false,
        ..Default::default()
    })
    .await;
    let (store, erp) = h.store_to_erp(json!({})).await;
    let env = envelope(
        store,
        erp,
        "evt-dl",
        "ord-1",
        switchyard_core::Action::Upsert,
    );
    h.broker
        .publish(&[OutgoingMessage::job(&env)])
        .await
        .unwrap();
    let queue = h.topology.queue("rest");
    let stop = tokio_util::sync::CancellationToken::new();
    let mut work = h.broker.consume(queue.clone(), 1, stop.clone());
    let d = tokio::time::timeout(WAIT, work.recv())
        .await
        .expect("delivered in time")
        .expect("a delivery");
    assert_eq!(d.routing_key, queue, "through the default exchange");
    // Rejected without requeue: the broker dead-letters it, as at its delivery limit.
    d.dead_letter().await.unwrap();
    let mut dead = h
        .broker
        .consume(h.topology.dead_letter_queue("rest"), 1, stop.clone());
    let d = tokio::time::timeout(WAIT, dead.recv())
        .await
        .expect("dead-lettered in time")
        .expect("a dead letter");
    assert_eq!(d.message_id.as_deref(), Some(env.id.to_string().as_str()));
    let kept = switchyard_ops::dlq::letter(&d, "rest");
    assert_eq!(kept.routing_key, env.routing_key(), "the job's own key");
    assert_eq!(kept.reason, "delivery_limit");
    // The first publication carries no attempt count or first-received time: the kept
    // letter takes them from the envelope.
    assert_eq!(d.headers.get(switchyard_broker::header::ATTEMPT), None);
    assert_eq!(kept.attempts.as_deref(), Some("0"));
    assert_eq!(
        kept.first_received.as_deref(),
        Some(env.received_at.to_rfc3339().as_str())
    );
    d.ack().await.unwrap();
    stop.cancel();
    h.shutdown().await;
}

#[tokio::test]
async fn updates_go_to_the_external_id_and_older_events_are_stale() {
    let h = Harness::start().await;
    let (store, erp) = h.store_to_erp(json!({})).await;
    Mock::given(method("POST"))
        .respond_with(created("ext-9"))
        .expect(1)
        .mount(&h.provider)
        .await;
    Mock::given(method("PUT"))
        .and(path("/api/orders/ext-9"))
        .and(body_json(json!({"reference": "ord-1", "total": "30.00", "customer": {"email": "ord-1@example.com"}})))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"ok": true})))
        .expect(1)
        .mount(&h.provider)
        .await;

    let v1 = h.accept(store, "evt-v1", order("ord-1", 1, "10.00")).await;
    h.wait_status(v1[0], "succeeded", WAIT).await;
    let v3 = h.accept(store, "evt-v3", order("ord-1", 3, "30.00")).await;
    let job = h.wait_status(v3[0], "succeeded", WAIT).await;
    assert_eq!(job.external_id.as_deref(), Some("ext-9"));
    let v2 = h.accept(store, "evt-v2", order("ord-1", 2, "20.00")).await;
    let stale = h.wait_status(v2[0], "stale", WAIT).await;
    assert_eq!(stale.attempts, 0, "a stale event calls nobody");
    let m = h
        .store
        .mapping(erp, "order", "ord-1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(m.last_source_version, Some(3));
    h.provider.verify().await;
    h.shutdown().await;
}

#[tokio::test]
async fn a_worker_killed_after_recording_but_before_the_ack_causes_no_second_create() {
    let mut h = Harness::with(crate::support::Options {
        worker: false,
        ..Default::default()
    })
    .await;
    let (store, _) = h.store_to_erp(json!({})).await;
    Mock::given(method("POST"))
        .respond_with(created("ext-1"))
        .expect(1)
        .mount(&h.provider)
        .await;

    let doomed = h
        .spawn_worker(Harness::worker_config_with_fault(FaultPoint::BeforeAck))
        .await;
    let jobs = h.accept(store, "evt-1", order("ord-1", 1, "1.00")).await;
    assert!(
        doomed.crashed().await.is_err(),
        "the worker stopped at its fault point"
    );
    // The delivery was never acknowledged: it is back in the queue.
    let queue = h.topology.queue("rest");
    eventually(
        "the unacknowledged message is back in the queue",
        WAIT,
        || async { h.queue_depth(&queue).await == 1 },
    )
    .await;

    h.worker = Some(
        h.spawn_worker(crate::support::Options::default().worker_config)
            .await,
    );
    let id = jobs[0];
    eventually(
        "the redelivery is recognised as a duplicate",
        WAIT,
        || async { h.store.job(id).await.unwrap().duplicates == 1 },
    )
    .await;
    assert_eq!(h.store.job(id).await.unwrap().status, "succeeded");
    h.provider.verify().await;
    h.shutdown().await;
}

#[tokio::test]
async fn a_worker_killed_between_the_call_and_the_record_retries_with_the_same_idempotency_key() {
    let mut h = Harness::with(crate::support::Options {
        worker: false,
        ..Default::default()
    })
    .await;
    let (store, erp) = h.store_to_erp(json!({})).await;
    Mock::given(method("POST"))
        .respond_with(created("ext-1"))
        .mount(&h.provider)
        .await;

    let doomed = h
        .spawn_worker(Harness::worker_config_with_fault(
            FaultPoint::AfterProviderCall,
        ))
        .await;
    let jobs = h.accept(store, "evt-1", order("ord-1", 1, "1.00")).await;
    assert!(doomed.crashed().await.is_err());
    h.worker = Some(
        h.spawn_worker(crate::support::Options::default().worker_config)
            .await,
    );
    h.wait_status(jobs[0], "succeeded", WAIT).await;

    // Nothing was recorded before the crash, so the create is repeated: with the same
    // Idempotency-Key, which a provider that honours it turns into one order.
    let calls = h.provider.received_requests().await.unwrap();
    assert_eq!(calls.len(), 2);
    let keys: Vec<_> = calls
        .iter()
        .map(|r| {
            r.headers
                .get("idempotency-key")
                .unwrap()
                .to_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(keys[0], keys[1]);
    assert_eq!(h.store.count_mappings(erp).await.unwrap(), 1);
    h.shutdown().await;
}

#[tokio::test]
async fn one_route_fans_out_to_three_targets() {
    let h = Harness::start().await;
    let store = h.source("wholesaler").await;
    let mut targets = Vec::new();
    for (i, name) in ["retailer-a", "retailer-b", "retailer-c"]
        .iter()
        .enumerate()
    {
        let t = h
            .rest_target(name, &format!("r{i}/orders"), json!({}))
            .await;
        Mock::given(method("POST"))
            .and(path(format!("/api/r{i}/orders")))
            .respond_with(created(&format!("{name}-1")))
            .expect(1)
            .mount(&h.provider)
            .await;
        targets.push(t);
    }
    h.route(store, &targets).await;

    let jobs = h.accept(store, "stock-1", order("sku-1", 1, "0")).await;
    assert_eq!(jobs.len(), 3);
    for j in &jobs {
        h.wait_status(*j, "succeeded", WAIT).await;
    }
    for (t, name) in targets
        .iter()
        .zip(["retailer-a", "retailer-b", "retailer-c"])
    {
        let m = h
            .store
            .mapping(*t, "order", "sku-1")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(m.external_id, format!("{name}-1"));
    }
    h.provider.verify().await;
    h.shutdown().await;
}

#[tokio::test]
async fn a_deleted_event_deletes_the_mapped_entity_and_forgets_the_mapping() {
    let h = Harness::start().await;
    let (store, erp) = h.store_to_erp(json!({})).await;
    Mock::given(method("POST"))
        .respond_with(created("ext-5"))
        .expect(1)
        .mount(&h.provider)
        .await;
    Mock::given(method("DELETE"))
        .and(path_regex("^/api/orders/ext-5$"))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&h.provider)
        .await;
    let created_job = h.accept(store, "e1", order("ord-5", 1, "1")).await;
    h.wait_status(created_job[0], "succeeded", WAIT).await;
    let mut gone = order("ord-5", 2, "1");
    gone["event"] = json!("deleted");
    let del = h.accept(store, "e2", gone.clone()).await;
    h.wait_status(del[0], "succeeded", WAIT).await;
    assert!(
        h.store
            .mapping(erp, "order", "ord-5")
            .await
            .unwrap()
            .is_none()
    );
    // Deleting what is not mapped is a no-op, recorded as ignored.
    let again = h.accept(store, "e3", gone).await;
    h.wait_status(again[0], "ignored", WAIT).await;
    h.provider.verify().await;
    h.shutdown().await;
}

#[tokio::test]
async fn a_job_whose_target_was_deleted_meanwhile_is_dead_lettered_and_says_why() {
    let mut h = Harness::with(crate::support::Options {
        worker: false,
        ..Default::default()
    })
    .await;
    let (store, erp) = h.store_to_erp(json!({})).await;
    let jobs = h.accept(store, "e1", order("ord-1", 1, "1")).await;
    h.store.delete_integration(erp).await.unwrap();
    h.worker = Some(
        h.spawn_worker(crate::support::Options::default().worker_config)
            .await,
    );
    let dead = h.wait_status(jobs[0], "dead", WAIT).await;
    assert_eq!(dead.dead_reason.as_deref(), Some("malformed"));
    assert!(dead.last_error.unwrap().contains("does not exist"));
    assert!(h.provider.received_requests().await.unwrap().is_empty());
    h.shutdown().await;
}

/// An order event from `source` to `target`, as ingest would publish it.
fn envelope(
    source: uuid::Uuid,
    target: uuid::Uuid,
    event_id: &str,
    internal_id: &str,
    action: switchyard_core::Action,
) -> switchyard_core::Envelope {
    let key = switchyard_core::ids::idempotency_key(Some(source), event_id, target, action);
    switchyard_core::Envelope {
        v: switchyard_core::ENVELOPE_VERSION,
        id: switchyard_core::ids::job_id(&key),
        idempotency_key: key,
        tenant: "acme".into(),
        integration_id: target,
        provider: "rest".into(),
        source_integration_id: Some(source),
        event_id: event_id.into(),
        event: "received".into(),
        entity: "order".into(),
        action,
        direction: switchyard_core::Direction::Export,
        internal_id: internal_id.into(),
        source_version: None,
        occurred_at: None,
        received_at: chrono::Utc::now(),
        payload: order(internal_id, 1, "1.00"),
        sync_run_id: None,
        route: Default::default(),
        trace: None,
    }
}

fn ready(c: switchyard_store::Result<switchyard_store::Claim>) -> Box<switchyard_store::JobTx> {
    match c {
        Ok(switchyard_store::Claim::Ready(tx)) => tx,
        Ok(switchyard_store::Claim::Duplicate { status }) => panic!("a duplicate ({status})"),
        Err(e) => panic!("the claim failed: {e}"),
    }
}

/// A claim held off by another job's lease on its record.
fn busy(c: switchyard_store::Result<switchyard_store::Claim>, what: &str) {
    match c {
        Err(switchyard_store::StoreError::Busy { .. }) => {}
        Ok(switchyard_store::Claim::Ready(_)) => panic!("{what} was let through"),
        Ok(switchyard_store::Claim::Duplicate { status }) => panic!("a duplicate ({status})"),
        Err(e) => panic!("{e}"),
    }
}

/// The worker claims the jobs that start together in one call (`claim_jobs`); each job's
/// answer is the one a claim of its own gives: a new record made (once, for two targets),
/// a record held by another job, a delete of a record never seen, a settled job's copy. A
/// job given up before its provider call gives its lease back at once; a parked one keeps
/// it.
#[tokio::test]
async fn claims_made_together_answer_as_claims_made_alone() {
    use switchyard_core::Action::{Delete, Upsert};
    use switchyard_store::{Claim, StoreError};
    let h = Harness::start().await;
    let (store, erp) = h.store_to_erp(json!({})).await;
    let crm = h.rest_target("crm", "orders", json!({})).await;
    Mock::given(method("POST"))
        .respond_with(created("ext-s"))
        .expect(1)
        .mount(&h.provider)
        .await;
    // A job that went through the worker: its copy is a duplicate.
    let done = h.accept(store, "evt-s", order("ord-s", 1, "1.00")).await;
    h.wait_status(done[0], "succeeded", WAIT).await;
    let settled = envelope(store, erp, "evt-s", "ord-s", Upsert);
    assert_eq!(settled.id, done[0]);

    let a = envelope(store, erp, "evt-a", "ord-a", Upsert);
    let a_crm = envelope(store, crm, "evt-a", "ord-a", Upsert);
    let b = envelope(store, erp, "evt-b", "ord-b", Upsert);
    let a_again = envelope(store, erp, "evt-a2", "ord-a", Upsert);
    let gone = envelope(store, erp, "evt-z", "ord-z", Delete);
    let lease = Duration::from_secs(600);
    let claims = h
        .store
        .claim_together(
            &[
                (&a, "c1"),
                (&a_crm, "c1"),
                (&b, "c1"),
                (&a_again, "c1"),
                (&gone, "c1"),
                (&settled, "c1"),
            ],
            lease,
        )
        .await
        .expect("one call for all of them");
    let mut claims = claims.into_iter();
    let a_tx = ready(claims.next().unwrap());
    let a_crm_tx = ready(claims.next().unwrap());
    let mut b_tx = ready(claims.next().unwrap());
    assert!(
        a_tx.created_record() && a_crm_tx.created_record() && b_tx.created_record(),
        "each new order's record is made by its claim"
    );
    let record = a_tx.source().unwrap().record_id;
    assert_eq!(
        a_crm_tx.source().unwrap().record_id,
        record,
        "one event to two targets makes one record"
    );
    assert_ne!(b_tx.source().unwrap().record_id, record);
    busy(
        claims.next().unwrap(),
        "a second job about ord-a at the ERP",
    );
    let gone_tx = ready(claims.next().unwrap());
    assert!(gone_tx.source().is_none(), "ord-z was never seen");
    match claims.next().unwrap() {
        Ok(Claim::Duplicate { status }) => assert_eq!(status.as_str(), "succeeded"),
        _ => panic!("a settled job's copy must be a duplicate"),
    }
    assert_eq!(h.store.job(settled.id).await.unwrap().duplicates, 1);
    assert_eq!(
        h.store.job(a.id).await.unwrap().status,
        "running",
        "a claimed job is running"
    );
    assert!(
        h.store.job(a_again.id).await.is_err(),
        "the held-off job's claim wrote nothing"
    );

    // Parked (across its provider call), b keeps its lease: another job about ord-b waits.
    b_tx.park(lease).await.unwrap();
    drop(b_tx);
    let b_again = envelope(store, erp, "evt-b2", "ord-b", Upsert);
    assert!(matches!(
        h.store.claim(&b_again, "c1", lease).await,
        Err(StoreError::Busy { .. })
    ));
    // Given up before its call, a gives its lease back at once: the next job about ord-a
    // goes ahead, and finds the record a's claim made.
    drop(a_tx);
    drop(a_crm_tx);
    drop(gone_tx);
    let deadline = std::time::Instant::now() + WAIT;
    let mut next = loop {
        match h.store.claim(&a_again, "c1", lease).await {
            Ok(Claim::Ready(tx)) => break tx,
            Err(StoreError::Busy { .. }) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => panic!("a's lease was not given back: {e}"),
            Ok(Claim::Duplicate { status }) => panic!("a duplicate ({status})"),
        }
    };
    assert!(!next.created_record());
    assert_eq!(next.source().unwrap().record_id, record);
    next.park(lease).await.unwrap();
    h.provider.verify().await;
    h.shutdown().await;
}

/// Two copies of one job's message (a sender's retry that ingest published twice) whose
/// claims share a call: one copy gets the job, the other finds it held; and two copies of a
/// settled job are each counted a duplicate. (The call's answers were once keyed by the
/// job's id, so both copies took the first's answer: both went on with the job.)
#[tokio::test]
async fn two_copies_of_one_job_claimed_together_are_claimed_once() {
    use switchyard_core::Action::Upsert;
    use switchyard_store::Claim;
    let h = Harness::start().await;
    let (store, erp) = h.store_to_erp(json!({})).await;
    let lease = Duration::from_secs(600);
    let job = envelope(store, erp, "evt-c", "ord-c", Upsert);
    let mut claims = h
        .store
        .claim_together(&[(&job, "copy-1"), (&job, "copy-2")], lease)
        .await
        .unwrap()
        .into_iter();
    let mut first = ready(claims.next().unwrap());
    busy(claims.next().unwrap(), "the second copy of one job");
    first
        .park(lease)
        .await
        .expect("the first copy goes on to its call");
    drop(first);

    // A settled job's two copies: each is a duplicate, and each is counted.
    Mock::given(method("POST"))
        .respond_with(created("ext-d"))
        .expect(1)
        .mount(&h.provider)
        .await;
    let done = h.accept(store, "evt-d", order("ord-d", 1, "1.00")).await;
    h.wait_status(done[0], "succeeded", WAIT).await;
    let settled = envelope(store, erp, "evt-d", "ord-d", Upsert);
    let claims = h
        .store
        .claim_together(&[(&settled, ""), (&settled, "")], lease)
        .await
        .unwrap();
    for c in claims {
        assert!(matches!(c, Ok(Claim::Duplicate { .. })));
    }
    assert_eq!(h.store.job(settled.id).await.unwrap().duplicates, 2);
    h.provider.verify().await;
    h.shutdown().await;
}

/// Writes a job's queued row as another of ingest's calls would (`record_queued`), inside
/// `tx`, without committing.
async fn write_job_row(tx: &mut sqlx::PgConnection, env: &switchyard_core::Envelope) {
    switchyard_store::record_queued(tx, &[switchyard_store::QueuedJob { envelope: env }])
        .await
        .expect("the other writer is never the deadlock's victim");
}

/// Ingest's queued rows and the worker's claims write job rows in id order. At 1,000
/// webhooks/s a job's delivery often reaches the worker before ingest has recorded its
/// queued row, so the two write the same rows at once; in different orders they deadlocked
/// (`just bench`'s end-to-end phase: a claim call stuck for PostgreSQL's one-second
/// `deadlock_timeout` every few seconds, every other claim behind it). Here another writer
/// takes the lower row, each statement is given the two jobs higher first, and the other
/// writer then takes the higher row: in id order, nobody waits on anybody in a cycle.
#[tokio::test]
async fn queued_rows_and_claims_write_job_rows_in_id_order() {
    use switchyard_core::Action::Upsert;
    use switchyard_store::QueuedJob;
    let h = Harness::with(crate::support::Options {
        worker: false,
        ..Default::default()
    })
    .await;
    let (store, erp) = h.store_to_erp(json!({})).await;
    for side in ["queued rows", "claims"] {
        let mut envs: Vec<_> = (1..=2)
            .map(|n| {
                envelope(
                    store,
                    erp,
                    &format!("evt-{side}-{n}"),
                    &format!("ord-{side}-{n}"),
                    Upsert,
                )
            })
            .collect();
        envs.sort_by_key(|e| e.id);
        let (low, high) = (envs[0].clone(), envs[1].clone());
        let mut other = h.store.pool().begin().await.unwrap();
        write_job_row(&mut other, &low).await;
        let statement = {
            let (store, side) = (h.store.clone(), side);
            let (high, low) = (high.clone(), low.clone());
            tokio::spawn(async move {
                if side == "claims" {
                    store
                        .claim_together(&[(&high, "c1"), (&low, "c1")], Duration::from_secs(60))
                        .await
                        .map(|claims| claims.into_iter().all(|c| c.is_ok()))
                } else {
                    store
                        .record_queued(&[
                            QueuedJob { envelope: &high },
                            QueuedJob { envelope: &low },
                        ])
                        .await
                        .map(|()| true)
                }
            })
        };
        // The statement reaches the lower row and waits for the other writer.
        eventually(
            "the statement to wait for the lower row",
            Duration::from_secs(10),
            || async { h.waiting_on_locks().await > 0 },
        )
        .await;
        write_job_row(&mut other, &high).await;
        other.commit().await.unwrap();
        let done = statement.await.unwrap();
        assert!(
            matches!(done, Ok(true)),
            "{side}: {done:?} (a deadlock's victim)"
        );
    }
}

/// The shared statements the worker and ingest send for many jobs at once, called
/// directly: queued rows, then three parked jobs' successes in one statement. The worker
/// falls back to one statement per job when a shared one fails, so the pipeline's tests
/// would still pass if the shared statement always failed; this one would not.
#[tokio::test]
async fn outcomes_recorded_together_are_each_jobs_own() {
    use switchyard_core::Action::Upsert;
    use switchyard_store::{AttemptRecord, Finish, MappingChange, QueuedJob};
    let h = Harness::with(crate::support::Options {
        worker: false,
        ..Default::default()
    })
    .await;
    let (store, erp) = h.store_to_erp(json!({})).await;
    let envs: Vec<_> = (1..=3)
        .map(|n| {
            envelope(
                store,
                erp,
                &format!("evt-t{n}"),
                &format!("ord-t{n}"),
                Upsert,
            )
        })
        .collect();
    let queued: Vec<QueuedJob<'_>> = envs.iter().map(|e| QueuedJob { envelope: e }).collect();
    h.store
        .record_queued(&queued)
        .await
        .expect("one insert for all");
    for e in &envs {
        assert_eq!(h.store.job(e.id).await.unwrap().status, "queued");
    }
    let lease = Duration::from_secs(600);
    let claims = h
        .store
        .claim_together(&envs.iter().map(|e| (e, "c1")).collect::<Vec<_>>(), lease)
        .await
        .expect("one call for all");
    let mut items = Vec::new();
    let mut held = Vec::new();
    for (n, (claim, env)) in claims.into_iter().zip(&envs).enumerate() {
        let mut tx = ready(claim);
        tx.park(lease).await.unwrap();
        let finish = Finish::Succeeded {
            attempt: AttemptRecord {
                started_at: chrono::Utc::now(),
                duration_ms: 7,
                status_code: Some(201),
                error_class: None,
                error: None,
                request: Some(format!("POST /api/orders ({n})")),
                response: Some(format!(r#"{{"id": "ext-t{n}"}}"#)),
            },
            mapping: MappingChange::Upsert {
                external_id: format!("ext-t{n}"),
            },
            written_version: Some(n as i64),
            kept: None,
        };
        items.push(
            tx.batch_item(env, &finish)
                .expect("a parked job's success goes with others'"),
        );
        held.push(tx);
    }
    h.store
        .record_succeeded(&items)
        .await
        .expect("one statement for the three successes");
    drop(held);
    for (n, env) in envs.iter().enumerate() {
        let job = h.store.job(env.id).await.unwrap();
        assert_eq!(job.status, "succeeded", "{}", env.internal_id);
        assert_eq!(job.attempts, 1);
        assert_eq!(
            job.external_id.as_deref(),
            Some(format!("ext-t{n}").as_str())
        );
        let attempts = h.store.job_attempts(env.id).await.unwrap();
        assert_eq!(attempts.len(), 1);
        assert_eq!(attempts[0].status_code, Some(201));
        let m = h
            .store
            .mapping(erp, "order", &env.internal_id)
            .await
            .unwrap()
            .expect("each record's link at the ERP");
        assert_eq!(m.external_id, format!("ext-t{n}"));
        // Its lease went with the statement: the next job about the record goes ahead.
        let next = envelope(store, erp, &format!("evt-u{n}"), &env.internal_id, Upsert);
        let mut tx = ready(h.store.claim(&next, "c1", lease).await);
        assert_eq!(
            tx.target().map(|t| t.external_id.clone()).as_deref(),
            Some(format!("ext-t{n}").as_str()),
            "the next job finds the link"
        );
        tx.park(lease).await.unwrap();
    }
    h.shutdown().await;
}

/// The rows of `table` the database has read, by whole scans and through indexes.
async fn rows_read(store: &switchyard_store::Store, table: &str) -> i64 {
    // The counts of this connection's own statements are reported when it goes idle.
    sqlx::query("SELECT pg_stat_force_next_flush()")
        .execute(store.pool())
        .await
        .unwrap();
    sqlx::query_scalar(
        "SELECT (SELECT seq_tup_read FROM pg_stat_user_tables WHERE relname = $1) \
         + (SELECT coalesce(sum(idx_tup_read), 0)::bigint FROM pg_stat_user_indexes \
            WHERE relname = $1)",
    )
    .bind(table)
    .fetch_one(store.pool())
    .await
    .unwrap()
}

/// A job of an order upsert (event `evt-{tag}`, order `ord-{tag}`) claimed on `claims` and
/// parked with a ten-minute lease, as before a provider call.
async fn claimed_and_parked(
    claims: &switchyard_store::Store,
    source: uuid::Uuid,
    target: uuid::Uuid,
    tag: &str,
) -> Box<switchyard_store::JobTx> {
    let lease = Duration::from_secs(600);
    let env = envelope(
        source,
        target,
        &format!("evt-{tag}"),
        &format!("ord-{tag}"),
        switchyard_core::Action::Upsert,
    );
    let mut tx = ready(claims.claim(&env, "c1", lease).await);
    tx.park(lease).await.unwrap();
    tx
}

/// Pages of `table` and its indexes that `store`'s connections have read.
async fn pages_read(store: &switchyard_store::Store, table: &str) -> i64 {
    // The counts of this connection's own statements are reported when it goes idle.
    sqlx::query("SELECT pg_stat_force_next_flush()")
        .execute(store.pool())
        .await
        .unwrap();
    sqlx::query_scalar(
        "SELECT heap_blks_hit + heap_blks_read + idx_blks_hit + idx_blks_read \
         FROM pg_statio_user_tables WHERE relname = $1",
    )
    .bind(table)
    .fetch_one(store.pool())
    .await
    .unwrap()
}

/// Ingest's duplicate check reads each job id through the primary key, whatever the jobs
/// table held when its connection first ran the check: a plan made while the table was
/// empty (a new deployment, or statistics taken when it was) read the whole table on every
/// check until the table was analysed again. The check is planned per call
/// (`Store::planned_per_call`).
#[tokio::test]
async fn the_duplicate_check_reads_by_key_however_the_table_grew() {
    let (name, url) = crate::support::fresh_database().await.unwrap();
    let base = switchyard_store::Store::connect(&url, 1).await.unwrap();
    // Analysed while empty, as autovacuum does a new deployment's tables: the planner then
    // believes the table empty, and a whole scan of it the cheapest look-up.
    sqlx::query("ANALYZE jobs")
        .execute(base.pool())
        .await
        .unwrap();
    let check = base.planned_per_call(1);
    // A statement's plan is otherwise fixed after its first five runs on a connection.
    for _ in 0..6 {
        check.existing_jobs(&[uuid::Uuid::new_v4()]).await.unwrap();
    }
    sqlx::query(
        "INSERT INTO integrations (id, tenant, name, provider) \
         VALUES ('00000000-0000-4000-8000-000000000001', 'acme', 'erp', 'rest')",
    )
    .execute(base.pool())
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO jobs (id, idempotency_key, tenant, integration_id, provider, entity, \
         action, event, event_id, internal_id, received_at) \
         SELECT gen_random_uuid(), 'k' || n, 'acme', '00000000-0000-4000-8000-000000000001', \
         'rest', 'order', 'upsert', 'received', 'e' || n, 'o' || n, now() \
         FROM generate_series(1, 3000) n",
    )
    .execute(base.pool())
    .await
    .unwrap();
    let known: Vec<uuid::Uuid> = sqlx::query_scalar("SELECT id FROM jobs LIMIT 2")
        .fetch_all(base.pool())
        .await
        .unwrap();
    let before = rows_read(&check, "jobs").await;
    for _ in 0..3 {
        let found = check
            .existing_jobs(&[known[0], known[1], uuid::Uuid::new_v4()])
            .await
            .unwrap();
        assert_eq!(found.len(), 2, "the check finds the jobs that exist");
    }
    let read = rows_read(&check, "jobs").await - before;
    assert!(
        read <= 6,
        "three checks of three ids read {read} rows of a 3,000-row table"
    );
    check.close().await;
    base.close().await;
    crate::support::drop_database(&name).await;
}

/// The worker's shared outcome statement keeps one plan per connection
/// (`Store::planned_once`). It takes arrays, and a plan made for each call's array sizes
/// looks cheaper than the generic one, so on an ordinary connection PostgreSQL planned the
/// statement again on every call: a sixteenth of its CPU per job in `just bench`.
#[tokio::test]
async fn the_outcome_statement_is_planned_once() {
    use switchyard_core::Action::Upsert;
    use switchyard_store::{AttemptRecord, Finish, MappingChange};
    let h = Harness::with(crate::support::Options {
        worker: false,
        ..Default::default()
    })
    .await;
    let (store, erp) = h.store_to_erp(json!({})).await;
    // One connection: the statement's plans and the count of them are that connection's.
    let outcomes = h.store.planned_once(1);
    let lease = Duration::from_secs(600);
    // A deployment's tables, analysed: the plan for four jobs looks cheaper than one for
    // any number of them only once the tables hold more than a few rows.
    grow_links(&h.store, erp, 20_000).await;
    sqlx::query("ANALYZE record_links")
        .execute(h.store.pool())
        .await
        .unwrap();
    // Four jobs a call, as the worker's outcomes arrive together.
    for round in 0..7 {
        let mut items = Vec::new();
        let mut held = Vec::new();
        let mut ids = Vec::new();
        for n in 0..4 {
            let name = format!("p{round}-{n}");
            let env = envelope(
                store,
                erp,
                &format!("evt-{name}"),
                &format!("ord-{name}"),
                Upsert,
            );
            let mut tx = ready(h.store.claim(&env, "c1", lease).await);
            tx.park(lease).await.unwrap();
            let finish = Finish::Succeeded {
                attempt: AttemptRecord {
                    started_at: chrono::Utc::now(),
                    duration_ms: 3,
                    status_code: Some(201),
                    error_class: None,
                    error: None,
                    request: None,
                    response: None,
                },
                mapping: MappingChange::Upsert {
                    external_id: format!("ext-{name}"),
                },
                written_version: None,
                kept: None,
            };
            items.push(
                tx.batch_item(&env, &finish)
                    .expect("a parked job's success"),
            );
            held.push(tx);
            ids.push(env.id);
        }
        outcomes.record_succeeded(&items).await.unwrap();
        drop(held);
        for id in ids {
            assert_eq!(h.store.job(id).await.unwrap().status, "succeeded");
        }
    }
    let (generic, custom): (i64, i64) = sqlx::query_as(
        "SELECT generic_plans, custom_plans FROM pg_prepared_statements \
         WHERE statement LIKE '%INSERT INTO job_attempts%'",
    )
    .fetch_one(outcomes.pool())
    .await
    .expect("the outcome statement is prepared on the connection");
    assert_eq!(
        (generic, custom),
        (7, 0),
        "seven outcomes: plans (generic, custom)"
    );
    outcomes.close().await;
    h.shutdown().await;
}

/// The worker's claim reads a record's links by key once the links table has grown from
/// empty: it analyses its small tables every few seconds (`Store::analyse_young_tables`),
/// which drops the plan a connection made while the table was empty. That plan built a
/// hash table of every link on each claim, and autovacuum looks only once a minute.
#[tokio::test]
async fn the_claim_reads_links_by_key_once_a_young_table_is_analysed() {
    let h = Harness::with(crate::support::Options {
        worker: false,
        ..Default::default()
    })
    .await;
    let (store, erp) = h.store_to_erp(json!({})).await;
    // Analysed while empty, as a deployment's tables are before their first rows.
    sqlx::query("ANALYZE record_links")
        .execute(h.store.pool())
        .await
        .unwrap();
    // One connection: the claim function's plan and the rows it reads are that connection's.
    let claims = h.store.planned_once(1);
    let mut held = vec![claimed_and_parked(&claims, store, erp, "y0").await];
    grow_links(&h.store, store, 3_000).await;
    let analysed = h.store.analyse_young_tables().await.unwrap();
    assert!(
        analysed.contains(&"record_links"),
        "3,000 new links: analysed {analysed:?}"
    );
    // Analysed on a small sample (statistics target 10, not 100): what the plan needs is
    // the table's size, and a default analysis of a 20,000-row jobs table took 100–130 ms.
    let bounds: Option<i32> = sqlx::query_scalar(
        "SELECT array_length(histogram_bounds::text::text[], 1) FROM pg_stats \
         WHERE tablename = 'record_links' AND attname = 'external_id' \
           AND schemaname = current_schema()",
    )
    .fetch_one(h.store.pool())
    .await
    .unwrap();
    assert_eq!(bounds, Some(11), "a histogram of 10 buckets");
    let before = rows_read(&claims, "record_links").await;
    for n in 1..=3 {
        held.push(claimed_and_parked(&claims, store, erp, &format!("y{n}")).await);
    }
    let read = rows_read(&claims, "record_links").await - before;
    assert!(
        read <= 30,
        "three claims read {read} rows of a 3,000-row links table"
    );
    // A second look finds nothing more to do.
    assert!(h.store.analyse_young_tables().await.unwrap().is_empty());
    drop(held);
    claims.close().await;
    h.shutdown().await;
}

/// The claim looks a record's lease up by its key, however many ended leases the table
/// still holds. Every job adds a lease and its outcome deletes it, so between two vacuums
/// (autovacuum looks once a minute) the table holds mostly dead rows: in `just bench`'s
/// processing phase it grew to a hundred pages between the bench's vacuums. The claim's
/// plan, made once per connection while the table was small, scanned every page of it, in
/// each of its two look-ups, on every call.
#[tokio::test]
async fn the_claim_reads_leases_by_key_however_many_have_ended() {
    let h = Harness::with(crate::support::Options {
        worker: false,
        ..Default::default()
    })
    .await;
    let (store, erp) = h.store_to_erp(json!({})).await;
    // One connection: the claim function's plan and the pages it reads are that connection's.
    let claims = h.store.planned_once(1);
    let mut held = vec![claimed_and_parked(&claims, store, erp, "l0").await];
    // 20,000 jobs' leases, taken and given back.
    sqlx::raw_sql(
        "INSERT INTO job_leases (lock_key, job_id, until) \
         SELECT -n, gen_random_uuid(), now() FROM generate_series(1, 20000) n; \
         DELETE FROM job_leases WHERE lock_key < 0;",
    )
    .execute(h.store.pool())
    .await
    .unwrap();
    let pages: i64 = sqlx::query_scalar("SELECT pg_relation_size('job_leases') / 8192")
        .fetch_one(h.store.pool())
        .await
        .unwrap();
    assert!(pages >= 80, "the ended leases take {pages} pages");
    let before = pages_read(&claims, "job_leases").await;
    for n in 1..=3 {
        held.push(claimed_and_parked(&claims, store, erp, &format!("l{n}")).await);
    }
    let read = pages_read(&claims, "job_leases").await - before;
    assert!(
        read <= 60,
        "three claims read {read} pages of a {pages}-page leases table and its index"
    );
    drop(held);
    claims.close().await;
    h.shutdown().await;
}

/// A running worker analyses its young tables by itself, on its configured period.
#[tokio::test]
async fn a_running_worker_analyses_a_links_table_that_grew_from_empty() {
    let mut opts = crate::support::Options::default();
    opts.worker_config.analyse_young_tables_every = Some(Duration::from_millis(100));
    let h = Harness::with(opts).await;
    let (store, _erp) = h.store_to_erp(json!({})).await;
    grow_links(&h.store, store, 500).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let rows: f32 =
            sqlx::query_scalar("SELECT reltuples FROM pg_class WHERE relname = 'record_links'")
                .fetch_one(h.store.pool())
                .await
                .unwrap();
        if rows >= 500.0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the links table's statistics still count {rows} rows"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    h.shutdown().await;
}

/// A worker analyses its young tables as it starts, not one period later: a backlog waiting
/// at start-up fills them fastest in its first seconds.
#[tokio::test]
async fn a_worker_analyses_young_tables_as_it_starts() {
    let h = Harness::with(crate::support::Options {
        worker: false,
        ..crate::support::Options::default()
    })
    .await;
    let (store, _erp) = h.store_to_erp(json!({})).await;
    grow_links(&h.store, store, 500).await;
    let worker = h
        .spawn_worker(switchyard_worker::WorkerConfig {
            analyse_young_tables_every: Some(Duration::from_secs(3600)),
            ..crate::support::Options::default().worker_config
        })
        .await;
    eventually(
        "the links table's statistics to count its rows",
        Duration::from_secs(20),
        || async {
            let rows: f32 =
                sqlx::query_scalar("SELECT reltuples FROM pg_class WHERE relname = 'record_links'")
                    .fetch_one(h.store.pool())
                    .await
                    .unwrap();
            rows >= 500.0
        },
    )
    .await;
    worker.stop().await.unwrap();
    h.shutdown().await;
}

/// A worker whose database user does not own the tables leaves them to autovacuum:
/// PostgreSQL would skip them anyway, with a warning in its log on every round.
#[tokio::test]
async fn young_tables_the_worker_does_not_own_are_left_alone() {
    let (name, url) = crate::support::fresh_database().await.unwrap();
    let owner = switchyard_store::Store::connect(&url, 1).await.unwrap();
    grow_links(&owner, uuid::Uuid::new_v4(), 500).await;
    // A role of the cluster (roles are not per database), made once, reused by later runs.
    sqlx::raw_sql(
        "DO $$ BEGIN CREATE ROLE sy_test_not_owner LOGIN; \
         EXCEPTION WHEN duplicate_object THEN NULL; END $$; \
         GRANT USAGE ON SCHEMA public TO sy_test_not_owner; \
         GRANT SELECT ON ALL TABLES IN SCHEMA public TO sy_test_not_owner;",
    )
    .execute(owner.pool())
    .await
    .unwrap();
    let opts: sqlx::postgres::PgConnectOptions = url.parse().unwrap();
    let as_other = sqlx::ConnectOptions::to_url_lossy(&opts.username("sy_test_not_owner"));
    let other = switchyard_store::Store::connect(as_other.as_str(), 1)
        .await
        .unwrap();
    assert_eq!(
        other.analyse_young_tables().await.unwrap(),
        Vec::<&str>::new(),
        "a user that owns no table analyses none"
    );
    assert!(
        owner
            .analyse_young_tables()
            .await
            .unwrap()
            .contains(&"record_links"),
        "the owner analyses the grown links table"
    );
    other.close().await;
    owner.close().await;
    crate::support::drop_database(&name).await;
}

/// A job row keeps no lock on its integrations' rows: while another transaction holds the
/// source's and the target's rows, a webhook is accepted and its job goes through. With the
/// job row's foreign keys, recording the queued job waited for that transaction (each job
/// locked its integrations' rows to check the keys: every job of an integration the same
/// row).
#[tokio::test]
async fn a_webhook_and_its_job_take_no_lock_on_their_integrations() {
    let h = Harness::start().await;
    let (store, erp) = h.store_to_erp(json!({})).await;
    Mock::given(method("POST"))
        .respond_with(crate::support::Creates::ids("ext"))
        .mount(&h.provider)
        .await;
    let mut holder = h.store.pool().begin().await.unwrap();
    sqlx::query("SELECT 1 FROM integrations WHERE id = ANY($1) FOR UPDATE")
        .bind(vec![store, erp])
        .execute(&mut *holder)
        .await
        .unwrap();
    let accepted = tokio::time::timeout(
        Duration::from_secs(10),
        h.accept(store, "locked-1", order("ord-locked", 1, "1")),
    )
    .await
    .expect("the webhook waited for the lock on its integrations' rows");
    h.wait_status(accepted[0], "succeeded", Duration::from_secs(15))
        .await;
    holder.rollback().await.unwrap();
    h.shutdown().await;
}

/// Two workers analyse at the same moment: the one that finds a table busy (another session
/// analysing or vacuuming it) leaves it for its next round, without a warning in the
/// worker's log (PostgreSQL's "skipping analyze … lock not available", which the fault suite's
/// two workers logged every few seconds).
#[tokio::test]
async fn a_young_table_another_session_is_analysing_is_skipped_quietly() {
    use std::sync::{Arc, Mutex};
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Captured {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let (name, url) = crate::support::fresh_database().await.unwrap();
    let store = switchyard_store::Store::connect(&url, 2).await.unwrap();
    grow_links(&store, uuid::Uuid::new_v4(), 500).await;
    // Another session holds the lock an analyse or a vacuum takes.
    let mut other = store.pool().begin().await.unwrap();
    sqlx::query("LOCK TABLE record_links IN SHARE UPDATE EXCLUSIVE MODE")
        .execute(&mut *other)
        .await
        .unwrap();
    let log = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing_subscriber::filter::LevelFilter::DEBUG)
        .with_ansi(false)
        .with_writer({
            let log = log.clone();
            move || log.clone()
        })
        .finish();
    let analysed = {
        use tracing_subscriber::util::SubscriberInitExt;
        let _logging = subscriber.set_default();
        store.analyse_young_tables().await.unwrap()
    };
    let logged = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
    assert!(
        !analysed.contains(&"record_links"),
        "a table another session holds is not reported as analysed: {analysed:?}"
    );
    assert!(
        !logged.contains("WARN"),
        "skipping a busy table logs no warning:\n{logged}"
    );
    other.rollback().await.unwrap();
    assert!(
        store
            .analyse_young_tables()
            .await
            .unwrap()
            .contains(&"record_links"),
        "the next round analyses it"
    );
    store.close().await;
    crate::support::drop_database(&name).await;
}

/// Add `n` links of records unknown to the tests at `integration`, on one connection whose
/// changes then reach the statistics at once (a session reports them when it goes idle, at
/// most once a second unless forced).
async fn grow_links(store: &switchyard_store::Store, integration: uuid::Uuid, n: i64) {
    let mut conn = store.pool().acquire().await.unwrap();
    sqlx::query(
        "INSERT INTO record_links (record_id, tenant, integration_id, entity, external_id) \
         SELECT gen_random_uuid(), 'acme', $1, 'order', 'grown-' || n \
         FROM generate_series(1, $2) n",
    )
    .bind(integration)
    .bind(n)
    .execute(&mut *conn)
    .await
    .unwrap();
    sqlx::query("SELECT pg_stat_force_next_flush()")
        .execute(&mut *conn)
        .await
        .unwrap();
}
