//! The identity model: records known by an id in each system, per-source mappings, two-way
//! sync without echoes, conflicts, held deliveries, route filters, look-up before create,
//! deletions, and the migration of the mappings of before.
//!
//! Providers are wiremock servers. The REST shapes are the generic connector's own (a JSON
//! body, the id in the response, `Idempotency-Key` on creates); the look-ups follow the
//! common `GET /collection?field=value` search of REST APIs (WooCommerce's
//! `GET /wp-json/wc/v3/products?sku=…`, documented at
//! woocommerce.github.io/woocommerce-rest-api-docs/#list-all-products, returns a list).
use reqwest::Method;
use serde_json::{Value, json};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use switchyard_core::{ConflictPolicy, IntegrationStatus, RouteOptions, WhenInactive};
use switchyard_worker::FaultPoint;
use uuid::Uuid;
use wiremock::matchers::{method, path, path_regex, query_param};
use wiremock::{Mock, Request, ResponseTemplate};

use crate::support::{ADMIN_TOKEN, API_KEY, Creates, Harness, Options, call, order};

const WAIT: Duration = Duration::from_secs(20);

fn calls_to<'a>(reqs: &'a [Request], verb: &str, prefix: &str) -> Vec<&'a Request> {
    reqs.iter()
        .filter(|r| r.method.as_str() == verb && r.url.path().starts_with(prefix))
        .collect()
}

fn json_of(r: &Request) -> Value {
    serde_json::from_slice(&r.body).unwrap()
}

#[tokio::test]
async fn two_sources_with_the_same_local_id_are_two_records() {
    let h = Harness::start().await;
    let shop_a = h.source("shop-a").await;
    let shop_b = h.source("shop-b").await;
    let erp = h.rest_target("erp", "orders", json!({})).await;
    h.route(shop_a, &[erp]).await;
    h.route(shop_b, &[erp]).await;
    Mock::given(method("POST"))
        .respond_with(Creates::ids("erp"))
        .mount(&h.provider)
        .await;
    Mock::given(method("PUT"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({})))
        .mount(&h.provider)
        .await;

    // Each shop numbers its orders itself; both send `same-1`, even with the same event id.
    let a = h.accept(shop_a, "evt-1", order("same-1", 1, "10.00")).await;
    h.wait_status(a[0], "succeeded", WAIT).await;
    let b = h.accept(shop_b, "evt-1", order("same-1", 1, "20.00")).await;
    assert_ne!(a, b, "another source's event id does not pre-empt this one");
    h.wait_status(b[0], "succeeded", WAIT).await;

    let find = |source: Uuid| {
        let h = &h;
        async move {
            let (st, r) = call(
                h,
                Method::GET,
                &format!("/v1/records?integration={source}&entity=order&id=same-1"),
                ADMIN_TOKEN,
                None,
            )
            .await;
            assert_eq!(st, 200, "{r}");
            r
        }
    };
    let (ra, rb) = (find(shop_a).await, find(shop_b).await);
    assert_ne!(ra["id"], rb["id"], "two records");
    let at_erp = |r: &Value| {
        r["links"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["integration_id"] == json!(erp))
            .unwrap()["external_id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let (ext_a, ext_b) = (at_erp(&ra), at_erp(&rb));
    assert_ne!(ext_a, ext_b, "two external ids");

    // A later update from shop B goes to shop B's order, and only there.
    let b2 = h.accept(shop_b, "evt-2", order("same-1", 2, "21.00")).await;
    h.wait_status(b2[0], "succeeded", WAIT).await;
    let reqs = h.provider.received_requests().await.unwrap();
    assert_eq!(calls_to(&reqs, "POST", "/api/orders").len(), 2);
    let puts = calls_to(&reqs, "PUT", "/api/orders");
    assert_eq!(puts.len(), 1);
    assert_eq!(puts[0].url.path(), format!("/api/orders/{ext_b}"));
    assert_eq!(json_of(puts[0])["total"], "21.00");

    // The mapping view answers per source, and from the ERP's side back.
    let m = h
        .store
        .mapping(erp, "order", "same-1")
        .await
        .unwrap()
        .unwrap();
    assert!(m.external_id == ext_a || m.external_id == ext_b);
    let (st, back) = call(
        &h,
        Method::GET,
        &format!("/v1/records?integration={erp}&entity=order&id={ext_b}"),
        ADMIN_TOKEN,
        None,
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(back["id"], rb["id"]);

    // Event ids Switchyard makes itself cannot be sent.
    let forged = h
        .send(shop_a, "sync:x:order:1:1", order("o-9", 1, "1"))
        .await;
    assert_eq!(forged.status(), 422);
    let body: Value = forged.json().await.unwrap();
    assert_eq!(body["error"]["code"], "reserved_event_id", "{body}");
    h.shutdown().await;
}

/// A provider whose writes answer with the record's id and a version that grows with each
/// write, as the `version_pointer` of a two-way manifest expects.
#[derive(Clone)]
struct Versioned {
    id: &'static str,
    version: Arc<Mutex<i64>>,
}

impl wiremock::Respond for Versioned {
    fn respond(&self, _: &Request) -> ResponseTemplate {
        let mut v = self.version.lock().unwrap();
        *v += 1;
        ResponseTemplate::new(200).set_body_json(json!({"id": self.id, "version": *v}))
    }
}

fn two_way_system(h: &Harness, prefix: &str) -> (Value, Value) {
    let settings = json!({
        "base_url": h.provider.uri(), "auth": {"type": "bearer"}, "timeout_ms": 2000,
        "entities": {"order": {
            "create": {"method": "POST", "path": format!("/{prefix}/orders")},
            "update": {"method": "PUT", "path": format!("/{prefix}/orders/{{external_id}}")},
            "body": {"id": "/id", "status": "/status", "total": "/total"},
            "version_pointer": "/version"
        }}
    });
    let inbound = json!({"entity": {"value": "order"}, "event_id": {"header": "X-Event-Id"},
                         "version": {"pointer": "/version"}});
    (settings, inbound)
}

#[tokio::test]
async fn two_way_sync_updates_through_the_identity_ignores_echoes_and_settles_conflicts() {
    let mut h = Harness::start().await;
    let (s, i) = two_way_system(&h, "shop");
    let shop = h
        .integration("shop", "rest", s, i, Some(json!({"token": "t"})))
        .await;
    let (s, i) = two_way_system(&h, "erp");
    let erp = h
        .integration("erp", "rest", s, i, Some(json!({"token": "t"})))
        .await;
    h.route(shop, &[erp]).await;
    // Both sides report versions: the pair can tell echoes, and adding it says nothing more.
    let (st, r) = call(
        &h,
        Method::POST,
        "/v1/routes",
        ADMIN_TOKEN,
        Some(json!({"source": erp, "entity": "order", "targets": [shop]})),
    )
    .await;
    assert_eq!(st, 201, "{r}");
    assert_eq!(r["warnings"], json!([]), "{r}");
    // A system without versions in a two-way pair is pointed out.
    let plain = h.rest_target("plain", "plain", json!({})).await;
    h.route(plain, &[shop]).await;
    let (st, r) = call(
        &h,
        Method::POST,
        "/v1/routes",
        ADMIN_TOKEN,
        Some(json!({"source": shop, "entity": "order", "targets": [plain]})),
    )
    .await;
    assert_eq!(st, 201, "{r}");
    let warnings = r["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 1, "{r}");
    assert!(
        warnings[0]
            .as_str()
            .unwrap()
            .contains("`plain` has no settings.entities.order.version_pointer"),
        "{r}"
    );
    // (the same route as shop → erp: one route per source, entity and event)
    let (st, _) = call(
        &h,
        Method::DELETE,
        &format!("/v1/routes/{}/targets/{plain}", r["id"].as_str().unwrap()),
        ADMIN_TOKEN,
        None,
    )
    .await;
    assert_eq!(st, 200);
    Mock::given(method("POST"))
        .and(path("/erp/orders"))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({"id": "E-1", "version": 1})))
        .mount(&h.provider)
        .await;
    let erp_version = Arc::new(Mutex::new(1));
    Mock::given(method("PUT"))
        .and(path("/erp/orders/E-1"))
        .respond_with(Versioned {
            id: "E-1",
            version: erp_version.clone(),
        })
        .mount(&h.provider)
        .await;
    Mock::given(method("PUT"))
        .and(path("/shop/orders/S-1"))
        .respond_with(Versioned {
            id: "S-1",
            version: Arc::new(Mutex::new(1)),
        })
        .mount(&h.provider)
        .await;
    let ev = |id: &str, v: i64, status: &str| json!({"id": id, "version": v, "status": status, "total": "10.00"});

    // The shop's new order is created at the ERP.
    let j = h.accept(shop, "s-1", ev("S-1", 1, "pending")).await;
    h.wait_status(j[0], "succeeded", WAIT).await;
    // The ERP reports that create (its version 1, as its create answered): an echo.
    let j = h.accept(erp, "e-1", ev("E-1", 1, "pending")).await;
    let echo = h.wait_status(j[0], "ignored", WAIT).await;
    assert!(echo.last_error.unwrap().contains("echo"));
    // A real change at the ERP updates the shop's order (never a second create).
    let j = h.accept(erp, "e-2", ev("E-1", 2, "paid")).await;
    h.wait_status(j[0], "succeeded", WAIT).await;
    // The shop reports that update (its version 2, as its update answered): nothing goes back.
    let j = h.accept(shop, "s-2", ev("S-1", 2, "paid")).await;
    h.wait_status(j[0], "ignored", WAIT).await;

    let reqs = h.provider.received_requests().await.unwrap();
    assert_eq!(
        calls_to(&reqs, "POST", "/shop").len(),
        0,
        "never a create at the shop"
    );
    let shop_puts = calls_to(&reqs, "PUT", "/shop/orders/S-1");
    assert_eq!(shop_puts.len(), 1);
    assert_eq!(json_of(shop_puts[0])["status"], "paid");
    assert_eq!(calls_to(&reqs, "POST", "/erp").len(), 1);
    assert_eq!(calls_to(&reqs, "PUT", "/erp").len(), 0, "no ping-pong");

    // Two near-simultaneous changes: the shop's, then the ERP's, both received before
    // either is applied. Last writer wins: the ERP's change, everywhere.
    let w = h.worker.take().unwrap();
    w.stop().await.unwrap();
    let from_shop = h.accept(shop, "s-3", ev("S-1", 3, "cancelled")).await;
    let from_erp = h.accept(erp, "e-3", ev("E-1", 3, "shipped")).await;
    // One job at a time, in the order they came: the shop's first meets the ERP's newer
    // change pending (a conflict). The other order ends the same everywhere, but with the
    // shop's change dropped as older than the hub's write of the ERP's change (an echo of
    // an earlier state), not as a conflict; this test is about the conflict.
    h.worker = Some(
        h.spawn_worker(switchyard_worker::WorkerConfig {
            concurrency: 1,
            ..Options::default().worker_config
        })
        .await,
    );
    let lost = h.wait_status(from_shop[0], "skipped", WAIT).await;
    assert!(lost.last_error.unwrap().contains("last_writer_wins"));
    h.wait_status(from_erp[0], "succeeded", WAIT).await;
    let reqs = h.provider.received_requests().await.unwrap();
    assert_eq!(
        calls_to(&reqs, "PUT", "/erp").len(),
        0,
        "the ERP keeps its own change"
    );
    let shop_puts = calls_to(&reqs, "PUT", "/shop/orders/S-1");
    assert_eq!(shop_puts.len(), 2);
    assert_eq!(json_of(shop_puts[1])["status"], "shipped");
    let (st, c) = call(&h, Method::GET, "/v1/conflicts", ADMIN_TOKEN, None).await;
    assert_eq!(st, 200);
    let conflicts = c["conflicts"].as_array().unwrap();
    assert_eq!(conflicts.len(), 1, "{c}");
    assert_eq!(conflicts[0]["winner_integration"], json!(erp));
    assert_eq!(conflicts[0]["loser_integration"], json!(shop));
    assert_eq!(conflicts[0]["policy"], "last_writer_wins");
    assert_eq!(*erp_version.lock().unwrap(), 1);
    h.shutdown().await;
}

#[tokio::test]
async fn a_target_that_is_not_active_holds_its_jobs_and_releases_them_in_order() {
    let h = Harness::with(Options {
        worker_config: switchyard_worker::WorkerConfig {
            concurrency: 1,
            ..Options::default().worker_config
        },
        ..Default::default()
    })
    .await;
    let (store, erp) = h.store_to_erp(json!({})).await;
    Mock::given(method("POST"))
        .respond_with(Creates::ids("erp"))
        .mount(&h.provider)
        .await;
    // A failed test of an active integration records the failure and leaves it active.
    Mock::given(method("GET"))
        .and(path("/"))
        .respond_with(ResponseTemplate::new(503))
        .mount(&h.provider)
        .await;
    let (st, t) = call(
        &h,
        Method::POST,
        &format!("/v1/integrations/{erp}/test"),
        ADMIN_TOKEN,
        None,
    )
    .await;
    assert_eq!(st, 200, "{t}");
    assert_eq!(t["ok"], false);
    assert_eq!(t["status"], "active");
    assert_eq!(
        h.store.integration(erp).await.unwrap().status,
        IntegrationStatus::Active
    );

    // Inactive for three orders, in error for two more: all five are held, none lost.
    h.store
        .set_status(erp, IntegrationStatus::Inactive, None)
        .await
        .unwrap();
    let mut jobs = Vec::new();
    for n in 1..=5 {
        if n == 4 {
            h.store
                .set_status(erp, IntegrationStatus::Error, Some("down"))
                .await
                .unwrap();
        }
        jobs.extend(
            h.accept(store, &format!("e-{n}"), order(&format!("o-{n}"), 1, "1"))
                .await,
        );
    }
    for j in &jobs {
        h.wait_status(*j, "held", WAIT).await;
    }
    assert!(calls_to(&h.provider.received_requests().await.unwrap(), "POST", "/").is_empty());
    assert_eq!(h.store.count_held(erp).await.unwrap(), 5);
    let (st, stats) = call(
        &h,
        Method::GET,
        &format!("/v1/integrations/{erp}/stats"),
        ADMIN_TOKEN,
        None,
    )
    .await;
    assert_eq!(st, 200, "{stats}");
    assert_eq!(
        stats.pointer("/stats/held").or(stats.get("held")),
        Some(&json!(5)),
        "{stats}"
    );
    let (st, held) = call(&h, Method::GET, "/v1/jobs?status=held", ADMIN_TOKEN, None).await;
    assert_eq!(st, 200, "{held}");
    assert_eq!(held["jobs"].as_array().unwrap().len(), 5);

    let (st, a) = call(
        &h,
        Method::POST,
        &format!("/v1/integrations/{erp}/activate"),
        ADMIN_TOKEN,
        None,
    )
    .await;
    assert_eq!(st, 200, "{a}");
    assert_eq!(a["released_jobs"], 5);
    for j in &jobs {
        h.wait_status(*j, "succeeded", WAIT).await;
    }
    let refs: Vec<String> = calls_to(
        &h.provider.received_requests().await.unwrap(),
        "POST",
        "/api",
    )
    .iter()
    .map(|r| json_of(r)["reference"].as_str().unwrap().to_owned())
    .collect();
    assert_eq!(
        refs,
        ["o-1", "o-2", "o-3", "o-4", "o-5"],
        "delivered once each, in order"
    );
    assert_eq!(h.store.count_held(erp).await.unwrap(), 0);

    // A route that says `drop` drops, on purpose and visibly.
    h.route_with(
        store,
        "order",
        &[erp],
        json!({}),
        RouteOptions {
            when_inactive: WhenInactive::Drop,
            ..Default::default()
        },
    )
    .await;
    h.store
        .set_status(erp, IntegrationStatus::Inactive, None)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await; // ingest's route cache
    let resp = h.send(store, "e-6", order("o-6", 1, "1")).await;
    assert_eq!(resp.status(), 202);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["jobs"], json!([]), "{body}");
    assert!(
        body["skipped"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("drops"),
        "{body}"
    );
    h.shutdown().await;
}

#[tokio::test]
async fn routes_filter_on_payload_values_and_are_managed_over_http() {
    let h = Harness::start().await;
    let store = h.source("store").await;
    let erp = h.rest_target("erp", "orders", json!({})).await;
    Mock::given(method("POST"))
        .respond_with(Creates::ids("erp"))
        .expect(1)
        .mount(&h.provider)
        .await;
    // Only final orders (seed 000 syncs only final invoices).
    let (st, route) = call(
        &h,
        Method::POST,
        "/v1/routes",
        ADMIN_TOKEN,
        Some(json!({"source": store, "entity": "order", "targets": [erp],
                    "filter": {"/status": ["paid", "completed"]}})),
    )
    .await;
    assert_eq!(st, 201, "{route}");
    let (st, bad) = call(
        &h,
        Method::POST,
        "/v1/routes",
        ADMIN_TOKEN,
        Some(json!({"source": store, "entity": "order", "targets": [erp], "filter": {"status": ["paid"]}})),
    )
    .await;
    assert_eq!(st, 422);
    assert!(
        bad["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("filter:"),
        "{bad}"
    );

    let with = |status: &str| {
        let mut o = order("o-1", 1, "5.00");
        o["status"] = json!(status);
        o
    };
    let resp = h.send(store, "e-1", with("pending")).await;
    assert_eq!(resp.status(), 202);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["jobs"], json!([]));
    assert!(
        body["skipped"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("/status is \"pending\""),
        "{body}"
    );
    let paid = h.accept(store, "e-2", with("paid")).await;
    h.wait_status(paid[0], "succeeded", WAIT).await;

    let (st, list) = call(
        &h,
        Method::GET,
        &format!("/v1/routes?source={store}"),
        ADMIN_TOKEN,
        None,
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(
        list["routes"][0]["filter"],
        json!({"/status": ["paid", "completed"]})
    );
    assert_eq!(list["routes"][0]["targets"][0]["name"], "erp");
    let id = route["id"].as_str().unwrap();
    let (st, gone) = call(
        &h,
        Method::DELETE,
        &format!("/v1/routes/{id}/targets/{erp}"),
        ADMIN_TOKEN,
        None,
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(gone["route_removed"], true, "its last target");
    let (st, _) = call(
        &h,
        Method::GET,
        &format!("/v1/routes/{id}"),
        ADMIN_TOKEN,
        None,
    )
    .await;
    assert_eq!(st, 404);
    h.route(store, &[erp]).await;
    let (_, list) = call(
        &h,
        Method::GET,
        &format!("/v1/routes?source={store}"),
        ADMIN_TOKEN,
        None,
    )
    .await;
    let id = list["routes"][0]["id"].as_str().unwrap().to_owned();
    let (st, _) = call(
        &h,
        Method::DELETE,
        &format!("/v1/routes/{id}"),
        ADMIN_TOKEN,
        None,
    )
    .await;
    assert_eq!(st, 204);
    tokio::time::sleep(Duration::from_millis(150)).await; // ingest's route cache
    let resp = h.send(store, "e-3", with("paid")).await;
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["jobs"], json!([]), "no route any more: {body}");
    h.provider.verify().await;
    h.shutdown().await;
}

/// A provider that ignores `Idempotency-Key` (as most ERPs do) but can be searched by
/// reference: every POST creates a record.
#[derive(Clone, Default)]
struct Ledger(Arc<Mutex<Vec<(String, String)>>>);

impl Ledger {
    fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }
}

struct LedgerCreate(Ledger);
impl wiremock::Respond for LedgerCreate {
    fn respond(&self, r: &Request) -> ResponseTemplate {
        let reference = json_of(r)["reference"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let mut l = (self.0).0.lock().unwrap();
        let id = format!("erp-{}", l.len() + 1);
        l.push((id.clone(), reference));
        ResponseTemplate::new(201).set_body_json(json!({"id": id}))
    }
}

struct LedgerSearch(Ledger);
impl wiremock::Respond for LedgerSearch {
    fn respond(&self, r: &Request) -> ResponseTemplate {
        let wanted = r
            .url
            .query_pairs()
            .find(|(k, _)| k == "reference")
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default();
        let found: Vec<Value> = (self.0)
            .0
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, reference)| *reference == wanted)
            .map(|(id, reference)| json!({"id": id, "reference": reference}))
            .collect();
        ResponseTemplate::new(200).set_body_json(found)
    }
}

#[tokio::test]
async fn a_worker_killed_between_call_and_commit_leaves_one_record_at_a_provider_that_ignores_idempotency_keys()
 {
    let mut h = Harness::with(Options {
        worker: false,
        ..Default::default()
    })
    .await;
    let lookup =
        json!({"path": "/api/orders", "query": {"reference": "{key}"}, "key_pointer": "/id"});
    let store = h.source("store").await;
    let erp = h
        .rest_target("erp", "orders", json!({"idempotency_header": null}))
        .await;
    let mut settings = h.store.integration(erp).await.unwrap().settings;
    settings["entities"]["order"]["lookup"] = lookup;
    h.store
        .update_integration(
            erp,
            &switchyard_store::IntegrationPatch {
                settings: Some(settings),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    h.route(store, &[erp]).await;
    let ledger = Ledger::default();
    Mock::given(method("POST"))
        .and(path("/api/orders"))
        .respond_with(LedgerCreate(ledger.clone()))
        .mount(&h.provider)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/orders"))
        .respond_with(LedgerSearch(ledger.clone()))
        .mount(&h.provider)
        .await;
    Mock::given(method("PUT"))
        .and(path_regex("^/api/orders/erp-[0-9]+$"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({})))
        .mount(&h.provider)
        .await;

    let doomed = h
        .spawn_worker(Harness::worker_config_with_fault(
            FaultPoint::AfterProviderCall,
        ))
        .await;
    let jobs = h.accept(store, "evt-1", order("ord-1", 1, "1.00")).await;
    assert!(doomed.crashed().await.is_err());
    assert_eq!(
        ledger.len(),
        1,
        "the create reached the provider before the crash"
    );
    h.worker = Some(h.spawn_worker(Options::default().worker_config).await);
    let job = h.wait_status(jobs[0], "succeeded", WAIT).await;

    // The redelivered job looked first, found the record and updated it.
    assert_eq!(ledger.len(), 1, "exactly one record at the provider");
    assert_eq!(job.external_id.as_deref(), Some("erp-1"));
    let reqs = h.provider.received_requests().await.unwrap();
    assert_eq!(calls_to(&reqs, "POST", "/api/orders").len(), 1);
    assert_eq!(calls_to(&reqs, "GET", "/api/orders").len(), 1);
    assert_eq!(calls_to(&reqs, "PUT", "/api/orders/erp-1").len(), 1);
    assert_eq!(h.store.count_mappings(erp).await.unwrap(), 1);
    h.shutdown().await;
}

#[tokio::test]
async fn link_existing_finds_the_targets_record_by_sku_and_updates_it() {
    let h = Harness::start().await;
    let catalog = h
        .integration(
            "catalog",
            "webhook",
            json!({}),
            json!({"entity": {"value": "product"}, "event_id": {"header": "X-Event-Id"}}),
            None,
        )
        .await;
    let settings = json!({
        "base_url": h.provider.uri(), "auth": {"type": "bearer"}, "timeout_ms": 2000,
        "entities": {"product": {
            "create": {"method": "POST", "path": "/wp-json/wc/v3/products"},
            "update": {"method": "PUT", "path": "/wp-json/wc/v3/products/{external_id}"},
            "body": {"sku": "/sku", "name": "/name", "regular_price": "/price"},
            "lookup": {"path": "/wp-json/wc/v3/products", "query": {"sku": "{key}"}, "key_pointer": "/sku"}
        }}
    });
    let shop = h
        .integration(
            "shop",
            "rest",
            settings,
            json!({}),
            Some(json!({"token": "t"})),
        )
        .await;
    // Without a look-up at the target, linking is refused, and says why.
    let (st, err) = call(
        &h,
        Method::POST,
        "/v1/routes",
        ADMIN_TOKEN,
        Some(
            json!({"source": catalog, "entity": "order", "targets": [shop], "link_existing": true}),
        ),
    )
    .await;
    assert_eq!(st, 422, "{err}");
    h.route_with(
        catalog,
        "product",
        &[shop],
        json!({}),
        RouteOptions {
            link_existing: true,
            conflict: ConflictPolicy::LastWriterWins,
            ..Default::default()
        },
    )
    .await;
    // WooCommerce lists products matching `sku` (a list, by id).
    Mock::given(method("GET"))
        .and(path("/wp-json/wc/v3/products"))
        .and(query_param("sku", "SKU-1"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!([{"id": 77, "sku": "SKU-1", "name": "Old name"}])),
        )
        .mount(&h.provider)
        .await;
    Mock::given(method("GET"))
        .and(path("/wp-json/wc/v3/products"))
        .and(query_param("sku", "SKU-2"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!([])))
        .mount(&h.provider)
        .await;
    Mock::given(method("PUT"))
        .and(path("/wp-json/wc/v3/products/77"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"id": 77})))
        .expect(1)
        .mount(&h.provider)
        .await;
    Mock::given(method("POST"))
        .and(path("/wp-json/wc/v3/products"))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({"id": 78})))
        .expect(1)
        .mount(&h.provider)
        .await;
    let send = |sku: &str, n: &str| {
        let body = json!({"id": format!("p-{sku}"), "sku": sku, "name": n, "price": "9.90"});
        let h = &h;
        let ev = format!("ev-{sku}");
        async move {
            let resp = h
                .http
                .post(h.url(&format!("/v1/webhooks/{catalog}")))
                .header("content-type", "application/json")
                .header("x-api-key", API_KEY)
                .header("x-event-id", ev)
                .body(body.to_string())
                .send()
                .await
                .unwrap();
            let v: Value = resp.json().await.unwrap();
            v["jobs"][0].as_str().unwrap().parse::<Uuid>().unwrap()
        }
    };
    let linked = send("SKU-1", "New name").await;
    let created = send("SKU-2", "Another").await;
    let j = h.wait_status(linked, "succeeded", WAIT).await;
    assert_eq!(
        j.external_id.as_deref(),
        Some("77"),
        "linked to the existing product"
    );
    let j = h.wait_status(created, "succeeded", WAIT).await;
    assert_eq!(j.external_id.as_deref(), Some("78"), "none found: created");
    let reqs = h.provider.received_requests().await.unwrap();
    let put = calls_to(&reqs, "PUT", "/wp-json/wc/v3/products/77");
    assert_eq!(json_of(put[0])["name"], "New name");
    h.provider.verify().await;
    h.shutdown().await;
}

#[tokio::test]
async fn a_deleted_record_is_deleted_where_it_went_and_its_id_then_names_a_new_one() {
    let h = Harness::start().await;
    let (store, erp) = h.store_to_erp(json!({})).await;
    Mock::given(method("POST"))
        .respond_with(Creates::ids("erp"))
        .mount(&h.provider)
        .await;
    Mock::given(method("DELETE"))
        .and(path("/api/orders/erp-1"))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&h.provider)
        .await;
    let j = h.accept(store, "e-1", order("o-1", 1, "1")).await;
    h.wait_status(j[0], "succeeded", WAIT).await;
    let first = h
        .store
        .find_record(None, store, "order", "o-1")
        .await
        .unwrap()
        .unwrap();

    let mut gone = order("o-1", 2, "1");
    gone["event"] = json!("deleted");
    let j = h.accept(store, "e-2", gone).await;
    h.wait_status(j[0], "succeeded", WAIT).await;
    assert!(
        h.store
            .find_record(None, store, "order", "o-1")
            .await
            .unwrap()
            .is_none()
    );
    let old = h.store.record(first.id).await.unwrap();
    assert!(old.deleted_at.is_some(), "the identity is marked deleted");
    assert_eq!(h.store.count_mappings(erp).await.unwrap(), 0);

    // The same source id later is a new record, created anew.
    let j = h.accept(store, "e-3", order("o-1", 1, "2")).await;
    let job = h.wait_status(j[0], "succeeded", WAIT).await;
    assert_eq!(job.external_id.as_deref(), Some("erp-2"));
    let second = h
        .store
        .find_record(None, store, "order", "o-1")
        .await
        .unwrap()
        .unwrap();
    assert_ne!(first.id, second.id);
    h.provider.verify().await;
    h.shutdown().await;
}

#[tokio::test]
async fn the_mappings_of_before_migrate_and_every_one_still_resolves() {
    let (name, url) = crate::support::empty_database().await.unwrap();
    let db = sqlx::PgPool::connect(&url).await.unwrap();
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../migrations");
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "sql"))
        .collect();
    files.sort();
    let (before, identity): (Vec<_>, Vec<_>) = files
        .into_iter()
        .partition(|p| p.file_name().unwrap().to_str().unwrap() < "0008");
    for f in &before {
        sqlx::raw_sql(sqlx::AssertSqlSafe(std::fs::read_to_string(f).unwrap()))
            .execute(&db)
            .await
            .unwrap();
    }
    // Today's data: a store whose orders went to two targets, an ERP's mapping with no
    // known source, and one whose job is gone.
    let (store, erp, wh) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
    for (id, n, p) in [
        (store, "store", "webhook"),
        (erp, "erp", "rest"),
        (wh, "wh", "rest"),
    ] {
        sqlx::query(
            "INSERT INTO integrations (id, tenant, name, provider) VALUES ($1, 'acme', $2, $3)",
        )
        .bind(id)
        .bind(n)
        .bind(p)
        .execute(&db)
        .await
        .unwrap();
    }
    let mut job_of = Vec::new();
    for (internal, target) in [("o-1", erp), ("o-1", wh), ("o-2", erp)] {
        let job = Uuid::now_v7();
        sqlx::query(
            "INSERT INTO jobs (id, idempotency_key, tenant, integration_id, source_integration_id, \
             provider, entity, action, event, event_id, internal_id, received_at, status) \
             VALUES ($1, $1::text, 'acme', $2, $3, 'rest', 'order', 'upsert', 'created', $1::text, $4, now(), 'succeeded')",
        )
        .bind(job)
        .bind(target)
        .bind(store)
        .bind(internal)
        .execute(&db)
        .await
        .unwrap();
        job_of.push(job);
    }
    let old = [
        (erp, "o-1", "E-1", Some(job_of[0]), Some(3i64)),
        (wh, "o-1", "W-1", Some(job_of[1]), Some(3)),
        (erp, "o-2", "E-2", Some(job_of[2]), None),
        (erp, "legacy-9", "E-9", None, Some(1)),
    ];
    for (t, internal, external, job, version) in old {
        sqlx::query(
            "INSERT INTO id_mappings (integration_id, entity, internal_id, external_id, last_source_version, last_job_id) \
             VALUES ($1, 'order', $2, $3, $4, $5)",
        )
        .bind(t)
        .bind(internal)
        .bind(external)
        .bind(version)
        .bind(job)
        .execute(&db)
        .await
        .unwrap();
    }
    for f in &identity {
        sqlx::raw_sql(sqlx::AssertSqlSafe(std::fs::read_to_string(f).unwrap()))
            .execute(&db)
            .await
            .unwrap();
    }
    db.close().await;

    let s = switchyard_store::Store::connect(&url, 2).await.unwrap();
    for (t, internal, external, _, version) in old {
        let m = s.mapping(t, "order", internal).await.unwrap().unwrap();
        assert_eq!(m.external_id, external, "{internal}");
        assert_eq!(m.last_source_version, version);
        let back = s
            .mapping_by_external(t, "order", external)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(back.internal_id, internal);
    }
    // o-1 went to two targets from one source: one record, three links.
    let r = s
        .find_record(Some("acme"), store, "order", "o-1")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r.links.len(), 3, "{r:?}");
    assert!(
        r.links
            .iter()
            .any(|l| l.origin && l.integration_id == store)
    );
    assert_eq!(
        r.links.iter().find(|l| l.origin).unwrap().changed_version,
        Some(3)
    );
    // A mapping whose source is unknown belongs to the tenant's own ids.
    let legacy = s.mapping(erp, "order", "legacy-9").await.unwrap().unwrap();
    assert_eq!(legacy.source_integration_id, Uuid::nil());
    s.close().await;
    crate::support::drop_database(&name).await;
}
