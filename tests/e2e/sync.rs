//! Batch syncs and the scheduler: paging through a provider's changed records, cancelling,
//! auto-disable after failed syncs, one run per slot with an injected clock, and one leader
//! among several schedulers.
//!
//! The provider lists orders the way WooCommerce's REST API does (`GET
//! /wp-json/wc/v3/orders?modified_after=…&page=N&per_page=…`, the page count in
//! `X-WP-TotalPages`, `date_modified_gmt` without a zone).
use chrono::{DateTime, Duration as Days, Utc};
use reqwest::Method;
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;
use switchyard_core::Direction;
use switchyard_scheduler::{ManualClock, Scheduler, SchedulerConfig};
use switchyard_store::{IntegrationPatch, SyncRun};
use uuid::Uuid;
use wiremock::matchers::{method, path, query_param};
use wiremock::{Mock, MockGuard, ResponseTemplate};

use crate::support::{ADMIN_TOKEN, Answer, Creates, Harness, Scripted, call, eventually, status};

const ORDERS: &str = "/wp-json/wc/v3/orders";

/// A WooCommerce store as an import source: its orders can be listed, and are routed to
/// the `erp` target. Returns (shop, erp).
async fn shop_to_erp(h: &Harness, shop_retry: Value, schedule: Option<Value>) -> (Uuid, Uuid) {
    let settings = json!({
        "base_url": h.provider.uri(),
        "auth": {"type": "basic"},
        "timeout_ms": 2000,
        "retry": shop_retry,
        "entities": {"order": {
            "create": {"method": "POST", "path": ORDERS},
            "list": {
                "path": ORDERS,
                "since_param": "modified_after",
                "query": {"per_page": "3", "orderby": "modified", "order": "asc"},
                "version_pointer": "/date_modified_gmt",
                "pagination": {"style": "page", "total_pages_header": "X-WP-TotalPages"}
            }
        }}
    });
    let shop = h
        .integration(
            "shop",
            "rest",
            settings,
            json!({}),
            Some(json!({"username": "ck_test", "password": "cs_test"})),
        )
        .await;
    h.store
        .update_integration(
            shop,
            &IntegrationPatch {
                direction: Some(Direction::Import),
                schedule,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let erp = h.rest_target("erp", "orders", json!({})).await;
    h.route(shop, &[erp]).await;
    (shop, erp)
}

/// A WooCommerce order as its list endpoint returns it.
fn woo_order(id: u64) -> Value {
    json!({"id": id, "status": "processing", "total": format!("{id}.00"),
           "date_modified_gmt": format!("2026-11-20T10:00:{:02}", id % 60),
           "billing": {"email": format!("buyer{id}@example.com")}})
}

/// Serve `pages` pages of 3 orders each (ids 1…), as WooCommerce paginates.
async fn serve_pages(h: &Harness, pages: u64) {
    for p in 1..=pages {
        let orders: Vec<Value> = (1..=3).map(|i| woo_order((p - 1) * 3 + i)).collect();
        Mock::given(method("GET"))
            .and(path(ORDERS))
            .and(query_param("page", p.to_string()))
            .respond_with(
                ResponseTemplate::new(200)
                    .insert_header("X-WP-Total", (pages * 3).to_string())
                    .insert_header("X-WP-TotalPages", pages.to_string())
                    .set_body_json(orders),
            )
            .mount(&h.provider)
            .await;
    }
}

/// The ERP creates every order it is sent (`201 {"id": "erp-<n>"}`), while the guard lives.
async fn erp_creates(h: &Harness) -> MockGuard {
    Mock::given(method("POST"))
        .and(path("/api/orders"))
        .respond_with(Creates::ids("erp"))
        .mount_as_scoped(&h.provider)
        .await
}

async fn start_sync(h: &Harness, integration: Uuid) -> SyncRun {
    let (st, body) = call(
        h,
        Method::POST,
        &format!("/v1/integrations/{integration}/sync"),
        ADMIN_TOKEN,
        None,
    )
    .await;
    assert_eq!(st, 202, "{body}");
    h.store
        .sync_run(body["id"].as_str().unwrap().parse().unwrap())
        .await
        .unwrap()
}

async fn wait_run(h: &Harness, run: Uuid, want: &str) -> SyncRun {
    eventually(
        &format!("sync run {run} to end"),
        Duration::from_secs(30),
        || async {
            !matches!(
                h.store.sync_run(run).await.unwrap().status.as_str(),
                "pending" | "running"
            )
        },
    )
    .await;
    let r = h.store.sync_run(run).await.unwrap();
    assert_eq!(r.status, want, "{r:?}");
    r
}

async fn count(h: &Harness, sql: &str, id: Uuid) -> i64 {
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
        .bind(id)
        .fetch_one(h.store.pool())
        .await
        .unwrap()
}

#[tokio::test]
async fn import_pages_through_three_pages_one_job_per_record_and_counts_add_up() {
    let h = Harness::start().await;
    let (shop, erp) = shop_to_erp(&h, json!({}), None).await;
    serve_pages(&h, 3).await;
    let creates = erp_creates(&h).await;

    let run = start_sync(&h, shop).await;
    assert_eq!(run.trigger, "manual");
    assert_eq!(run.direction, "import");
    assert_eq!(run.entities, vec!["order".to_string()]);
    assert_eq!(run.watermark_from, None, "a first sync reads everything");
    let run = wait_run(&h, run.id, "succeeded").await;
    assert_eq!(run.pages, 3);
    assert_eq!(
        (
            run.total,
            run.processed,
            run.created,
            run.updated,
            run.failed,
            run.skipped
        ),
        (9, 9, 9, 0, 0, 0),
        "one job per record, all created: {run:?}"
    );
    assert_eq!(
        count(
            &h,
            "SELECT count(*) FROM jobs WHERE sync_run_id = $1 AND status = 'succeeded'",
            run.id
        )
        .await,
        9
    );
    assert_eq!(
        count(
            &h,
            "SELECT count(*) FROM id_mappings WHERE integration_id = $1 AND entity = 'order'",
            erp
        )
        .await,
        9
    );
    let m = h
        .store
        .mapping(erp, "order", "7")
        .await
        .unwrap()
        .expect("order 7 is mapped");
    assert!(m.external_id.starts_with("erp-"));
    assert_eq!(
        creates.received_requests().await.len(),
        9,
        "one create per record"
    );

    // The next sync reads from the first one's watermark; the same record versions make
    // no new job.
    let second = start_sync(&h, shop).await;
    assert_eq!(second.watermark_from, Some(run.watermark_to));
    let second = wait_run(&h, second.id, "succeeded").await;
    assert_eq!((second.total, second.processed), (0, 0));
    let lists = h.provider.received_requests().await.unwrap();
    let since = run
        .watermark_to
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    assert!(
        lists.iter().any(|r| r
            .url
            .query_pairs()
            .any(|(k, v)| k == "modified_after" && v == since)),
        "the second sync asked for records modified after the first one's watermark"
    );
    assert_eq!(
        creates.received_requests().await.len(),
        9,
        "nothing created twice"
    );
    let shop_row = h.store.integration(shop).await.unwrap();
    assert!(shop_row.last_sync_at.is_some());
    h.shutdown().await;
}

#[tokio::test]
async fn an_export_sync_reads_the_sources_that_route_into_it() {
    let h = Harness::start().await;
    let (_shop, erp) = shop_to_erp(&h, json!({}), None).await;
    serve_pages(&h, 2).await;
    let creates = erp_creates(&h).await;
    // The ERP exports: its sync reads the shop (which routes orders into it).
    let run = start_sync(&h, erp).await;
    assert_eq!(run.direction, "export");
    assert_eq!(run.plan.len(), 1);
    assert_eq!(run.plan[0].source_name, "shop");
    let run = wait_run(&h, run.id, "succeeded").await;
    assert_eq!((run.total, run.created, run.pages), (6, 6, 2));
    assert_eq!(creates.received_requests().await.len(), 6);
    h.shutdown().await;
}

#[tokio::test]
async fn listing_respects_the_sources_rate_limit() {
    let h = Harness::start().await;
    let (shop, _erp) = shop_to_erp(&h, json!({}), None).await;
    let mut settings = h.store.integration(shop).await.unwrap().settings;
    settings["rate_limit"] = json!({"limit": 2, "per": "second", "burst": 1});
    h.store
        .update_integration(
            shop,
            &IntegrationPatch {
                settings: Some(settings),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    serve_pages(&h, 3).await;
    let _creates = erp_creates(&h).await;
    let run = start_sync(&h, shop).await;
    wait_run(&h, run.id, "succeeded").await;
    let lists: Vec<_> = h
        .provider
        .received_requests()
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.method.as_str() == "GET" && r.url.path() == ORDERS)
        .collect();
    assert_eq!(lists.len(), 3);
    // Two a second with no burst: one every 500 ms at the most, never sooner. The mock
    // records arrival order, not time, so the check is on the run: three pages cannot have
    // been read in under a second.
    let r = h.store.sync_run(run.id).await.unwrap();
    let paging = r.finished_at.unwrap() - r.started_at.unwrap();
    assert!(
        paging >= chrono::Duration::milliseconds(950),
        "three pages under a 2/s limit took {paging:?}"
    );
    h.shutdown().await;
}

#[tokio::test]
async fn cancelling_a_running_sync_skips_its_remaining_jobs() {
    let h = Harness::start().await;
    let (shop, erp) = shop_to_erp(&h, json!({}), None).await;
    serve_pages(&h, 2).await;
    // The ERP is down: every job fails once and waits 8 s before its next try (long enough
    // that the cancel below finds every job waiting, even on a loaded machine).
    h.store
        .update_integration(
            erp,
            &IntegrationPatch {
                settings: Some({
                    let mut s = h.store.integration(erp).await.unwrap().settings;
                    s["retry"] = json!({"initial_delay_ms": 8000, "max_delay_ms": 10000, "jitter": "none", "max_attempts": 5});
                    s
                }),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let erp_calls = Scripted::new(vec![status(503)]);
    Mock::given(method("POST"))
        .and(path("/api/orders"))
        .respond_with(erp_calls.clone())
        .mount(&h.provider)
        .await;

    let run = start_sync(&h, shop).await;
    eventually("every job tried once", Duration::from_secs(20), || async {
        let r = h.store.sync_run(run.id).await.unwrap();
        r.paging_done && r.total == 6 && erp_calls.count() >= 6
    })
    .await;
    // The first cancel ends the run; a second finds it ended.
    let mut cancelled_at = None;
    for want in [200, 409] {
        let cancel = format!("/v1/sync-runs/{}/cancel", run.id);
        let (st, body) = call(&h, Method::POST, &cancel, ADMIN_TOKEN, None).await;
        assert_eq!(st, want, "{body}");
        if want == 200 {
            assert_eq!(body["status"], "cancelled");
            let now: DateTime<Utc> = sqlx::query_scalar("SELECT now()")
                .fetch_one(h.store.pool())
                .await
                .unwrap();
            cancelled_at = Some(now);
        }
    }

    eventually("every job of the run settled", Duration::from_secs(20), || async {
        count(&h, "SELECT count(*) FROM jobs WHERE sync_run_id = $1 AND status NOT IN ('skipped', 'succeeded', 'dead')", run.id).await == 0
    })
    .await;
    let r = h.store.sync_run(run.id).await.unwrap();
    assert_eq!(r.status, "cancelled");
    assert_eq!(
        r.skipped, 6,
        "jobs waiting to retry are skipped, not lost: {r:?}"
    );
    assert_eq!(r.processed, r.total);
    assert_eq!(
        count(
            &h,
            "SELECT count(*) FROM jobs WHERE sync_run_id = $1 AND status = 'skipped'",
            run.id
        )
        .await,
        6,
        "their rows stay, marked skipped"
    );
    // The retries come back from the delay queue and are dropped without a call: a job the
    // cancel skipped counts its retry as a duplicate; a job that was between tries when the
    // cancel came (a loaded machine) is skipped by its retry's claim, after the cancel.
    let calls = erp_calls.count();
    let q = h.topology.queue("rest");
    let cancelled_at = cancelled_at.expect("the cancel answered 200");
    eventually(
        "the retries came back and were dropped",
        Duration::from_secs(20),
        || async {
            let came_back: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM jobs WHERE sync_run_id = $1 AND (duplicates > 0 \
                 OR (status = 'skipped' AND updated_at > $2))",
            )
            .bind(run.id)
            .bind(cancelled_at)
            .fetch_one(h.store.pool())
            .await
            .unwrap();
            h.queue_depth(&q).await == 0 && came_back == 6
        },
    )
    .await;
    assert_eq!(erp_calls.count(), calls, "no call for a skipped job");
    h.shutdown().await;
}

#[tokio::test]
async fn consecutive_failed_syncs_move_the_integration_to_error_with_an_event() {
    let h = Harness::start().await;
    let (shop, _erp) = shop_to_erp(
        &h,
        json!({"initial_delay_ms": 20, "max_attempts": 2, "jitter": "none"}),
        Some(json!({"every": "manual", "disable_after_failures": 2})),
    )
    .await;
    let lists = Scripted::new(vec![Answer::With(
        ResponseTemplate::new(500)
            .set_body_json(json!({"code": "internal_server_error", "message": "Database down"})),
    )]);
    Mock::given(method("GET"))
        .and(path(ORDERS))
        .respond_with(lists.clone())
        .mount(&h.provider)
        .await;

    let first = start_sync(&h, shop).await;
    let first = wait_run(&h, first.id, "failed").await;
    let err = first.error.clone().unwrap();
    assert!(
        err.contains("Database down") && err.contains("after 2 tries"),
        "{err}"
    );
    let i = h.store.integration(shop).await.unwrap();
    assert_eq!((i.status.as_str(), i.sync_failures), ("active", 1));
    assert!(
        h.store
            .integration_events(shop, 10)
            .await
            .unwrap()
            .is_empty()
    );

    let second = start_sync(&h, shop).await;
    wait_run(&h, second.id, "failed").await;
    let i = h.store.integration(shop).await.unwrap();
    assert_eq!((i.status.as_str(), i.sync_failures), ("error", 2));
    assert!(i.last_error.unwrap().contains("Database down"));
    let events = h.store.integration_events(shop, 10).await.unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].kind, "auto_disabled");
    assert_eq!(events[0].sync_run_id, Some(second.id));
    let (st, body) = call(
        &h,
        Method::GET,
        &format!("/v1/integrations/{shop}/events"),
        ADMIN_TOKEN,
        None,
    )
    .await;
    assert_eq!(
        (st, body["events"][0]["kind"].as_str()),
        (200, Some("auto_disabled"))
    );

    let (st, body) = call(
        &h,
        Method::POST,
        &format!("/v1/integrations/{shop}/sync"),
        ADMIN_TOKEN,
        None,
    )
    .await;
    assert_eq!(st, 409, "an integration in error does not sync: {body}");
    assert_eq!(lists.count(), 4, "two tries per sync");
    h.shutdown().await;
}

#[tokio::test]
async fn schedule_and_sync_validation_errors_name_the_field() {
    let h = Harness::start().await;
    let (shop, erp) = shop_to_erp(&h, json!({}), None).await;
    for (schedule, field) in [
        (json!({"every": "daily", "at": "26:00"}), "schedule.at"),
        (
            json!({"every": "cron", "cron": "61 * * * *"}),
            "schedule.cron",
        ),
        (
            json!({"every": "weekly", "timezone": "Europe/Atlantis"}),
            "schedule.timezone",
        ),
        (json!({"every": "sometimes"}), "schedule"),
    ] {
        let (st, body) = call(
            &h,
            Method::PATCH,
            &format!("/v1/integrations/{shop}"),
            ADMIN_TOKEN,
            Some(json!({"schedule": schedule})),
        )
        .await;
        assert_eq!(st, 422, "{body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .starts_with(&format!("{field}:")),
            "{body}"
        );
    }
    let (st, body) = call(
        &h,
        Method::PATCH,
        &format!("/v1/integrations/{shop}"),
        ADMIN_TOKEN,
        Some(json!({"schedule": {"every": "daily", "at": "02:30", "timezone": "Europe/Lisbon"}})),
    )
    .await;
    assert_eq!(st, 200, "{body}");
    assert_eq!(body["schedule"]["at"], "02:30");
    // The ERP lists nothing: a sync of it has nothing to read, and says how to fix that.
    h.store
        .update_integration(
            erp,
            &IntegrationPatch {
                direction: Some(Direction::Import),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let (st, body) = call(
        &h,
        Method::POST,
        &format!("/v1/integrations/{erp}/sync"),
        ADMIN_TOKEN,
        None,
    )
    .await;
    assert_eq!(st, 409, "{body}");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("list"),
        "{body}"
    );
    h.shutdown().await;
}

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().to_utc()
}

async fn slots(h: &Harness, integration: Uuid) -> Vec<(DateTime<Utc>, String)> {
    sqlx::query_as("SELECT slot, started_by FROM sync_runs WHERE integration_id = $1 ORDER BY slot")
        .bind(integration)
        .fetch_all(h.store.pool())
        .await
        .unwrap()
}

/// The shop syncing hourly into an ERP that creates every order. Returns the shop.
async fn hourly_shop(h: &Harness) -> (Uuid, MockGuard) {
    let (shop, _) = shop_to_erp(h, json!({}), Some(json!({"every": "hourly"}))).await;
    serve_pages(h, 1).await;
    (shop, erp_creates(h).await)
}

#[tokio::test]
async fn an_hourly_schedule_runs_once_per_hour_and_a_missed_day_once() {
    let h = Harness::start().await;
    let (shop, _creates) = hourly_shop(&h).await;
    let clock = Arc::new(ManualClock::new(at("2026-11-24T10:00:00Z")));
    let s = Scheduler::new(
        SchedulerConfig {
            instance: "only".into(),
            ..Default::default()
        },
        h.store.clone(),
        h.broker.clone(),
        clock.clone(),
    );
    let t = s.tick().await.unwrap();
    assert_eq!(
        (t.planned, t.started.len()),
        (1, 0),
        "the first tick plans, runs nothing"
    );
    assert_eq!(
        h.store.integration(shop).await.unwrap().next_sync_at,
        Some(at("2026-11-24T11:00:00Z"))
    );
    for (now, runs) in [
        ("2026-11-24T10:59:59Z", 0),
        ("2026-11-24T11:00:00Z", 1),
        ("2026-11-24T11:00:00Z", 0),
        ("2026-11-24T11:30:00Z", 0),
        ("2026-11-24T12:00:05Z", 1),
        ("2026-11-24T12:59:00Z", 0),
    ] {
        clock.set(at(now));
        assert_eq!(s.tick().await.unwrap().started.len(), runs, "at {now}");
    }
    // The scheduler is down for three days: one run on recovery, not 72.
    clock.set(at("2026-11-27T12:10:00Z"));
    assert_eq!(s.tick().await.unwrap().started.len(), 1);
    assert_eq!(s.tick().await.unwrap().started.len(), 0);
    assert_eq!(
        h.store.integration(shop).await.unwrap().next_sync_at,
        Some(at("2026-11-27T13:00:00Z"))
    );
    let got: Vec<DateTime<Utc>> = slots(&h, shop).await.into_iter().map(|(s, _)| s).collect();
    assert_eq!(
        got,
        vec![
            at("2026-11-24T11:00:00Z"),
            at("2026-11-24T12:00:00Z"),
            at("2026-11-24T13:00:00Z")
        ]
    );
    for r in h.store.sync_runs(shop, 10).await.unwrap() {
        assert_eq!(r.trigger, "schedule");
        wait_run(&h, r.id, "succeeded").await;
    }
    h.shutdown().await;
}

#[tokio::test]
async fn two_schedulers_one_leader_and_the_other_takes_over_when_it_dies() {
    let h = Harness::start().await;
    let (shop, _creates) = hourly_shop(&h).await;
    let clock = Arc::new(ManualClock::new(at("2026-11-24T10:00:00Z")));
    let spawn = |name: &str| {
        let s = Scheduler::new(
            SchedulerConfig {
                instance: name.into(),
                tick: Duration::from_millis(20),
                lock_retry: Duration::from_millis(50),
                ..Default::default()
            },
            h.store.clone(),
            h.broker.clone(),
            clock.clone(),
        );
        tokio::spawn(s.run(tokio_util::sync::CancellationToken::new()))
    };
    let mut tasks = std::collections::HashMap::from([("a", spawn("a")), ("b", spawn("b"))]);
    eventually(
        "the first slot planned",
        Duration::from_secs(10),
        || async {
            h.store
                .integration(shop)
                .await
                .unwrap()
                .next_sync_at
                .is_some()
        },
    )
    .await;
    let mut hour = 0;
    let advance_and_wait = async |hour: &mut i64| {
        *hour += 1;
        clock.set(at("2026-11-24T10:00:00Z") + Days::hours(*hour));
        let want = *hour as usize;
        eventually(
            &format!("the run of hour {hour}"),
            Duration::from_secs(15),
            || async { slots(&h, shop).await.len() == want },
        )
        .await;
    };
    for _ in 0..3 {
        advance_and_wait(&mut hour).await;
    }
    let before = slots(&h, shop).await;
    let leader = before[0].1.clone();
    assert!(
        before.iter().all(|(_, by)| *by == leader),
        "one leader enqueued every slot: {before:?}"
    );

    // Kill the leader: its task and its database connection go.
    tasks.remove(leader.as_str()).unwrap().abort();
    let other = if leader == "a" { "b" } else { "a" };
    for _ in 0..3 {
        advance_and_wait(&mut hour).await;
    }
    let after = slots(&h, shop).await;
    assert_eq!(after.len(), 6, "one run per slot: {after:?}");
    assert!(
        after[3..].iter().all(|(_, by)| by == other),
        "the other took over: {after:?}"
    );
    let mut distinct: Vec<_> = after.iter().map(|(s, _)| *s).collect();
    distinct.dedup();
    assert_eq!(distinct.len(), 6, "no slot enqueued twice");
    for t in tasks.into_values() {
        t.abort();
    }
    h.shutdown().await;
}

#[tokio::test]
async fn a_feed_whose_pages_never_end_fails_the_run_at_the_page_limit() {
    let h = Harness::with(crate::support::Options {
        worker_config: switchyard_worker::WorkerConfig {
            sync_max_pages: 4,
            ..crate::support::Options::default().worker_config
        },
        ..crate::support::Options::default()
    })
    .await;
    let (shop, _erp) = shop_to_erp(&h, json!({}), None).await;
    // No total, and every page full: by its own account the shop always has more.
    Mock::given(method("GET"))
        .and(path(ORDERS))
        .respond_with(
            ResponseTemplate::new(200).set_body_json((1..=3).map(woo_order).collect::<Vec<_>>()),
        )
        .mount(&h.provider)
        .await;
    let _creates = erp_creates(&h).await;
    let run = start_sync(&h, shop).await;
    let run = wait_run(&h, run.id, "failed").await;
    assert_eq!(run.pages, 4, "{run:?}");
    let why = run.error.unwrap_or_default();
    assert!(why.contains("4 pages"), "{why}");
}

/// The CLI, as an API client, starts a sync and waits for it with its progress: it exits
/// zero when the run succeeds and non-zero, naming the status, when it fails (issue 13).
#[tokio::test]
async fn the_cli_waits_for_a_sync_and_exits_non_zero_when_it_fails() {
    let h = Harness::start().await;
    let (shop, _erp) = shop_to_erp(
        &h,
        json!({"initial_delay_ms": 20, "max_attempts": 1, "jitter": "none"}),
        None,
    )
    .await;
    serve_pages(&h, 2).await;
    let creates = erp_creates(&h).await;
    let (ok, out, err) = h.cli(&["sync", "start", &shop.to_string(), "--wait"]).await;
    assert!(ok, "{out}\n{err}");
    assert!(out.contains("succeeded"), "{out}");
    let (ok, out, _) = h
        .cli(&["sync", "runs", "acme/shop", "--output", "json"])
        .await;
    assert!(ok);
    let (_, http) = call(
        &h,
        Method::GET,
        &format!("/v1/integrations/{shop}/sync-runs?limit=20"),
        ADMIN_TOKEN,
        None,
    )
    .await;
    assert_eq!(serde_json::from_str::<Value>(&out).unwrap(), http);
    assert_eq!(http["sync_runs"][0]["total"], 6, "{http}");

    // The shop's list now fails: the run fails, and so does the command.
    drop(creates);
    h.provider.reset().await;
    Mock::given(method("GET"))
        .and(path(ORDERS))
        .respond_with(ResponseTemplate::new(500).set_body_json(json!({"message": "Database down"})))
        .mount(&h.provider)
        .await;
    let (ok, out, err) = h
        .cli(&["sync", "start", "acme/shop", "--full", "--wait"])
        .await;
    assert!(!ok, "a failed run exits non-zero: {out}");
    assert!(err.contains("ended failed"), "{err}");
    assert!(out.contains("Database down"), "the table shows why: {out}");
    h.shutdown().await;
}
