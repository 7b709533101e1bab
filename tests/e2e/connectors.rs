//! Built-in connectors end to end: seed 002's hub and spoke with the PrestaShop connector
//! (one source shop, three client shops), a connector created by name over the API with the
//! vendor's limits, and a JSON-RPC target (Odoo) that reports a fault inside a 200.
//!
//! The PrestaShop mocks answer with the fixtures of the providers crate's contract tests
//! (`crates/providers/tests/fixtures/prestashop/`, each citing
//! devdocs.prestashop-project.org/8/webservice). The Odoo answers follow Odoo's JSON-RPC
//! endpoint (`POST /jsonrpc`, service `object`, method `execute_kw`; odoo/http.py answers a
//! failed call with HTTP 200 and `{"jsonrpc": "2.0", "id": …, "error": {"code": 200,
//! "message": "Odoo Server Error", "data": {"name": …, "message": …}}}`).
use reqwest::Method;
use serde_json::{Value, json};
use std::time::Duration;
use switchyard_core::RouteOptions;
use wiremock::matchers::{method, path, query_param};
use wiremock::{Mock, Request, ResponseTemplate};

use crate::support::{ADMIN_TOKEN, Harness, Options, call};

const WAIT: Duration = Duration::from_secs(20);

fn prestashop_fixture(name: &str) -> ResponseTemplate {
    prestashop_answer(name, 200, None)
}

/// A PrestaShop fixture as an answer with `status`, one id changed if asked (each shop
/// numbers its own records).
fn prestashop_answer(name: &str, status: u16, change: Option<(&str, &str)>) -> ResponseTemplate {
    let file = format!(
        "{}/../crates/providers/tests/fixtures/prestashop/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut text = std::fs::read_to_string(&file).expect(&file);
    if let Some((from, to)) = change {
        text = text.replace(&format!("[CDATA[{from}]]"), &format!("[CDATA[{to}]]"));
    }
    ResponseTemplate::new(status)
        .insert_header("content-type", "text/xml;charset=utf-8")
        .set_body_string(text)
}

fn xml_of(r: &Request) -> Value {
    switchyard_providers::xml::to_json(std::str::from_utf8(&r.body).unwrap()).unwrap()
}

#[tokio::test]
async fn prestashop_hub_and_spoke_a_stock_change_reaches_every_client_shop_by_sku() {
    let h = Harness::with(Options::with_providers(&["rest", "prestashop"])).await;
    // The source shop's module pushes stock changes (seed 002: hook → webhook).
    let source = h
        .integration(
            "wholesaler",
            "webhook",
            json!({}),
            json!({"entity": {"value": "stock"}, "event_id": {"header": "X-Event-Id"},
                   "internal_id": {"pointer": "/sku"}}),
            None,
        )
        .await;
    let mut clients = Vec::new();
    for n in 1..=3 {
        let id = h
            .integration(
                &format!("retailer-{n}"),
                "prestashop",
                json!({"base_url": format!("{}/shop-{n}", h.provider.uri())}),
                json!({}),
                Some(json!({"api_key": format!("KEY-{n}")})),
            )
            .await;
        clients.push(id);
        let at = |p: &str| format!("/shop-{n}/api/{p}");
        Mock::given(method("GET"))
            .and(path(at("products")))
            .and(query_param("filter[reference]", "[MUG-1]"))
            .respond_with(prestashop_fixture("products-by-reference.xml"))
            .mount(&h.provider)
            .await;
        Mock::given(method("GET"))
            .and(path(at("stock_availables")))
            .and(query_param("filter[id_product]", "[21]"))
            .respond_with(prestashop_fixture("stock-availables-of-product.xml"))
            .mount(&h.provider)
            .await;
        Mock::given(method("PUT"))
            .and(path(at("stock_availables/43")))
            .respond_with(prestashop_fixture("stock-available-updated.xml"))
            .mount(&h.provider)
            .await;
    }
    h.route_with(
        source,
        "stock",
        &clients,
        json!({}),
        RouteOptions::default(),
    )
    .await;

    let jobs = h
        .accept(source, "stock-1", json!({"sku": "MUG-1", "quantity": 17}))
        .await;
    assert_eq!(jobs.len(), 3, "one job per client shop");
    for j in &jobs {
        h.wait_status(*j, "succeeded", WAIT).await;
    }
    // A second change: each shop's stock_available is linked now, so no look-up again.
    let again = h
        .accept(source, "stock-2", json!({"sku": "MUG-1", "quantity": 5}))
        .await;
    for j in &again {
        h.wait_status(*j, "succeeded", WAIT).await;
    }

    let reqs = h.provider.received_requests().await.unwrap();
    for n in 1..=3 {
        let mine: Vec<&Request> = reqs
            .iter()
            .filter(|r| r.url.path().starts_with(&format!("/shop-{n}/")))
            .collect();
        let gets = mine.iter().filter(|r| r.method.as_str() == "GET").count();
        assert_eq!(
            gets, 2,
            "shop {n}: product by reference, then its stock, once"
        );
        let puts: Vec<&&Request> = mine.iter().filter(|r| r.method.as_str() == "PUT").collect();
        assert_eq!(puts.len(), 2, "shop {n}: two stock changes");
        let key = format!("KEY-{n}:");
        use base64::Engine as _;
        let basic = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(key)
        );
        for p in &puts {
            assert_eq!(
                p.headers["authorization"],
                basic.as_str(),
                "shop {n}'s own key"
            );
        }
        let quantities: Vec<Value> = puts
            .iter()
            .map(|p| xml_of(p)["prestashop"]["stock_available"]["quantity"].clone())
            .collect();
        assert_eq!(quantities, vec![json!("17"), json!("5")]);
        // The second PUT still carries the whole resource, from the first one's answer.
        assert_eq!(
            xml_of(puts[1])["prestashop"]["stock_available"]["id_product"],
            json!("21")
        );
    }
    // Each client shop has its own link for the wholesaler's SKU.
    let (st, r) = call(
        &h,
        Method::GET,
        &format!("/v1/records?integration={source}&entity=stock&id=MUG-1"),
        ADMIN_TOKEN,
        None,
    )
    .await;
    assert_eq!(st, 200, "{r}");
    let links = r["links"].as_array().unwrap();
    for c in &clients {
        assert!(
            links
                .iter()
                .any(|l| l["integration_id"] == json!(c) && l["external_id"] == json!("43")),
            "{r}"
        );
    }
}

#[tokio::test]
async fn a_connector_is_created_by_name_with_the_vendors_limits() {
    let h = Harness::start().await;
    let (st, c) = call(
        &h,
        Method::GET,
        "/v1/connectors/quickbooks-online",
        ADMIN_TOKEN,
        None,
    )
    .await;
    assert_eq!(st, 200, "{c}");
    assert!(c["credentials"]["client_id"].is_string(), "{c}");
    assert_eq!(c["settings"]["realm_id"]["required"], json!(true));

    let (st, r) = call(
        &h,
        Method::POST,
        "/v1/integrations",
        ADMIN_TOKEN,
        Some(
            json!({"tenant": "acme", "name": "books", "connector": "quickbooks-online",
                    "settings": {"realm_id": "9130357"},
                    "credentials": {"client_id": "ABc", "client_secret": "s3cr3t"}}),
        ),
    )
    .await;
    assert_eq!(st, 201, "{r}");
    assert_eq!(r["provider"], "quickbooks-online");
    assert_eq!(
        r["settings"]["rate_limit"],
        json!({"limit": 500, "per": "minute"})
    );
    assert_eq!(r["settings"]["concurrency"], json!(10));

    // A setting the connector does not have is named.
    let (st, r) = call(
        &h,
        Method::POST,
        "/v1/integrations",
        ADMIN_TOKEN,
        Some(
            json!({"tenant": "acme", "name": "books2", "connector": "quickbooks-online",
                    "settings": {"realmid": "9130357"}}),
        ),
    )
    .await;
    assert_eq!(st, 422, "{r}");
    assert!(r.to_string().contains("settings.realm_id"), "{r}");
}

#[tokio::test]
async fn a_json_rpc_fault_inside_a_200_is_dead_lettered_with_its_message() {
    let h = Harness::start().await;
    let source = h.source("shop").await;
    let odoo = h
        .integration(
            "odoo",
            "rest",
            json!({
                "base_url": h.provider.uri(),
                "values": {"db": "acme"},
                "error_pointer": "/error",
                "error_message_pointer": "/error/data/message",
                "idempotency_header": null,
                "entities": {"order": {
                    "create": {"method": "POST", "path": "/jsonrpc", "envelope": {
                        "jsonrpc": "2.0", "method": "call",
                        "params": {"service": "object", "method": "execute_kw",
                                   "args": ["{settings.db}", 2, "{credentials.password}",
                                            "sale.order", "create", ["{body}"]]}}},
                    "body": {"client_order_ref": "/id", "amount_total": "/total"},
                    "id_pointer": "/result"
                }}
            }),
            json!({}),
            Some(json!({"password": "odoo-api-key"})),
        )
        .await;
    h.route(source, &[odoo]).await;
    Mock::given(method("POST"))
        .and(path("/jsonrpc"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "jsonrpc": "2.0", "id": null,
            "error": {"code": 200, "message": "Odoo Server Error",
                      "data": {"name": "odoo.exceptions.ValidationError",
                               "message": "The customer reference must be unique", "arguments": []}}})))
        .mount(&h.provider)
        .await;

    let jobs = h
        .accept(
            source,
            "evt-1",
            json!({"id": "SO-1", "version": 1, "total": "10.00"}),
        )
        .await;
    let job = h.wait_status(jobs[0], "dead", WAIT).await;
    let err = job.last_error.unwrap_or_default();
    assert!(
        err.contains("The customer reference must be unique"),
        "{err}"
    );
    assert_eq!(job.attempts, 1, "a fault is permanent: no retry");
    let reqs = h.provider.received_requests().await.unwrap();
    assert_eq!(
        serde_json::from_slice::<Value>(&reqs[0].body).unwrap(),
        json!({"jsonrpc": "2.0", "method": "call",
               "params": {"service": "object", "method": "execute_kw",
                          "args": ["acme", 2, "odoo-api-key", "sale.order", "create",
                                   [{"client_order_ref": "SO-1", "amount_total": "10.00"}]]}})
    );
}

/// The wholesaler's answers to order creates: its documented order, numbered 5001, 5002, …
struct NumberedOrders(std::sync::atomic::AtomicU32);

impl wiremock::Respond for NumberedOrders {
    fn respond(&self, _: &Request) -> ResponseTemplate {
        let n = 5001 + self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        prestashop_answer("order-created.xml", 201, Some(("5002", &n.to_string())))
    }
}

#[tokio::test]
async fn prestashop_hub_and_spoke_each_retailers_order_lands_once_at_the_wholesaler() {
    let h = Harness::with(Options::with_providers(&["rest", "prestashop"])).await;
    let shop = |n: &str| format!("{}/{n}", h.provider.uri());
    // The wholesaler is a PrestaShop shop that also sends webhooks (its module).
    let wholesaler = h
        .integration(
            "wholesaler",
            "prestashop",
            json!({"base_url": shop("wholesale")}),
            json!({"entity": {"pointer": "/entity"}, "event_id": {"header": "X-Event-Id"},
                   "internal_id": {"pointer": "/id"}}),
            Some(json!({"api_key": "KEY-W"})),
        )
        .await;
    let mut retailers = Vec::new();
    for n in 1..=3 {
        let r = h
            .integration(
                &format!("retailer-{n}"),
                "prestashop",
                json!({"base_url": shop(&format!("shop-{n}"))}),
                json!({"entity": {"value": "order"}, "event_id": {"header": "X-Event-Id"},
                       "internal_id": {"pointer": "/id"}}),
                Some(json!({"api_key": format!("KEY-{n}")})),
            )
            .await;
        retailers.push(r);
        // Each retailer has the wholesaler's mug as its own product 9 (same reference).
        let products = format!("/shop-{n}/api/products");
        Mock::given(method("GET"))
            .and(path(products.as_str()))
            .and(query_param("filter[reference]", "[MUG-1]"))
            .respond_with(prestashop_answer(
                "products-by-reference.xml",
                200,
                Some(("21", "9")),
            ))
            .mount(&h.provider)
            .await;
        Mock::given(method("PUT"))
            .and(path(format!("{products}/9")))
            .respond_with(prestashop_answer(
                "product-created.xml",
                200,
                Some(("21", "9")),
            ))
            .mount(&h.provider)
            .await;
        // Its orders go to the wholesaler, as the wholesaler's customer 7n at address 12n.
        h.route_with(
            r,
            "order",
            &[wholesaler],
            json!({}),
            RouteOptions {
                values: serde_json::from_value(
                    json!({"id_customer": 70 + n, "id_address": 120 + n}),
                )
                .unwrap(),
                ..RouteOptions::default()
            },
        )
        .await;
    }
    // The wholesaler's catalog reaches the retailers, linked by reference.
    h.route_with(
        wholesaler,
        "product",
        &retailers,
        json!({}),
        RouteOptions {
            link_existing: true,
            ..RouteOptions::default()
        },
    )
    .await;
    Mock::given(method("POST"))
        .and(path("/wholesale/api/carts"))
        .respond_with(prestashop_answer("cart-created.xml", 201, None))
        .mount(&h.provider)
        .await;
    Mock::given(method("POST"))
        .and(path("/wholesale/api/orders"))
        .respond_with(NumberedOrders(Default::default()))
        .mount(&h.provider)
        .await;

    for j in h
        .accept(
            wholesaler,
            "product-21",
            json!({"entity": "product", "id": "21", "sku": "MUG-1", "name": "Mug", "price": "9.50"}),
        )
        .await
    {
        h.wait_status(j, "succeeded", WAIT).await;
    }
    let mut orders = Vec::new();
    for (n, r) in retailers.iter().enumerate() {
        let jobs = h
            .accept(
                *r,
                "order-1001",
                json!({"id": "1001", "total": "19.00", "total_products": "19.00",
                       "lines": [{"product_id": "9", "quantity": 2}]}),
            )
            .await;
        assert_eq!(jobs.len(), 1, "retailer {n}: one job, to the wholesaler");
        orders.push(jobs[0]);
    }
    for j in &orders {
        h.wait_status(*j, "succeeded", WAIT).await;
    }

    let reqs = h.provider.received_requests().await.unwrap();
    let carts: Vec<Value> = reqs
        .iter()
        .filter(|r| r.url.path() == "/wholesale/api/carts")
        .map(|r| xml_of(r)["prestashop"]["cart"].clone())
        .collect();
    assert_eq!(carts.len(), 3, "one cart per retailer's order");
    let mut customers: Vec<String> = carts
        .iter()
        .map(|c| c["id_customer"].as_str().unwrap().to_owned())
        .collect();
    customers.sort();
    assert_eq!(
        customers,
        ["71", "72", "73"],
        "each retailer as its own customer"
    );
    for c in &carts {
        assert_eq!(
            c["associations"]["cart_rows"]["cart_row"]["id_product"],
            json!("21"),
            "the retailer's product 9 is the wholesaler's 21"
        );
    }
    assert_eq!(
        reqs.iter()
            .filter(|r| r.url.path() == "/wholesale/api/orders")
            .count(),
        3,
        "each order lands once"
    );
    // Three records (all three retailers call their order 1001), each with its own order at
    // the wholesaler.
    let mut at_wholesaler = Vec::new();
    for r in &retailers {
        let (st, rec) = call(
            &h,
            Method::GET,
            &format!("/v1/records?integration={r}&entity=order&id=1001"),
            ADMIN_TOKEN,
            None,
        )
        .await;
        assert_eq!(st, 200, "{rec}");
        let link = rec["links"]
            .as_array()
            .unwrap()
            .iter()
            .find(|l| l["integration_id"] == json!(wholesaler))
            .cloned()
            .unwrap_or_else(|| panic!("no wholesaler link: {rec}"));
        at_wholesaler.push(link["external_id"].as_str().unwrap().to_owned());
    }
    at_wholesaler.sort();
    at_wholesaler.dedup();
    assert_eq!(at_wholesaler.len(), 3, "{at_wholesaler:?}");
}

#[tokio::test]
async fn what_a_sender_puts_under_switchyard_is_not_trusted() {
    let h = Harness::start().await;
    let source = h.source("shop").await;
    let erp = h
        .rest_target(
            "erp",
            "orders",
            json!({"entities": {"order": {
                "create": {"method": "POST", "path": "/api/orders"},
                "body": {"reference": "/id", "Id": "/_switchyard/external_id",
                         "customer": "/_switchyard/route/id_customer"}}}}),
        )
        .await;
    h.route(source, &[erp]).await;
    Mock::given(method("POST"))
        .and(path("/api/orders"))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({"id": "E-1"})))
        .mount(&h.provider)
        .await;
    let jobs = h
        .accept(
            source,
            "evt-1",
            json!({"id": "1001", "version": 1,
                   "_switchyard": {"external_id": "someone-elses", "route": {"id_customer": 1}}}),
        )
        .await;
    h.wait_status(jobs[0], "succeeded", WAIT).await;
    let reqs = h.provider.received_requests().await.unwrap();
    assert_eq!(
        serde_json::from_slice::<Value>(&reqs[0].body).unwrap(),
        json!({"reference": "1001"}),
        "the hub's own context comes from the hub"
    );
}
