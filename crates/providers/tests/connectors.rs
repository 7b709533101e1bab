//! Contract tests of the built-in connectors against mocks that answer what the vendors'
//! documentation says they answer. Every answer is a fixture under `tests/fixtures/<vendor>/`
//! that names its source; every request is checked field by field against the same docs.
use async_trait::async_trait;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use switchyard_core::ErrorClass;
use switchyard_providers::oauth::{LockedTokens, TokenSet, TokenVault};
use switchyard_providers::{BuildContext, Connector, Credentials, Operation};
use wiremock::matchers::{method, path, query_param};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

fn read(name: &str) -> String {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn fixture(name: &str) -> ResponseTemplate {
    let text = read(name);
    let f: Value = serde_json::from_str(&text).unwrap();
    assert!(f["source"].is_string(), "{name} cites no source");
    let mut t = ResponseTemplate::new(f["status"].as_u64().unwrap() as u16);
    if !f["body"].is_null() {
        t = t.set_body_json(f["body"].clone());
    }
    for h in f["headers"].as_array().into_iter().flatten() {
        t = t.append_header(h[0].as_str().unwrap(), h[1].as_str().unwrap());
    }
    t
}

fn xml_fixture(name: &str, status: u16) -> ResponseTemplate {
    let text = read(name);
    assert!(text.contains("<!-- source:"), "{name} cites no source");
    ResponseTemplate::new(status)
        .insert_header("content-type", "text/xml;charset=utf-8")
        .set_body_string(text)
}

/// One integration's token store, in memory, with a lock that excludes like the store's
/// advisory lock does.
#[derive(Default)]
struct Memory(
    Mutex<Option<TokenSet>>,
    Mutex<Vec<String>>,
    Arc<tokio::sync::Mutex<()>>,
);
#[derive(Clone, Default)]
struct Vault(Arc<Memory>);
struct Held(
    Arc<Memory>,
    Option<TokenSet>,
    #[allow(dead_code)] tokio::sync::OwnedMutexGuard<()>,
);

#[async_trait]
impl TokenVault for Vault {
    async fn load(&self) -> Result<Option<TokenSet>, String> {
        Ok(self.0.0.lock().unwrap().clone())
    }
    async fn lock(&self) -> Result<Box<dyn LockedTokens>, String> {
        let guard = self.0.2.clone().lock_owned().await;
        let now = self.0.0.lock().unwrap().clone();
        Ok(Box::new(Held(self.0.clone(), now, guard)))
    }
    async fn reauthorization_required(&self, message: &str) {
        self.0.1.lock().unwrap().push(message.to_owned());
    }
}

#[async_trait]
impl LockedTokens for Held {
    fn current(&self) -> Option<TokenSet> {
        self.1.clone()
    }
    async fn save(self: Box<Self>, tokens: &TokenSet) -> Result<(), String> {
        *self.0.0.lock().unwrap() = Some(tokens.clone());
        Ok(())
    }
    async fn release(self: Box<Self>) {}
}

fn connected(access: &str) -> Vault {
    let m = Memory::default();
    *m.0.lock().unwrap() = Some(TokenSet {
        access_token: access.into(),
        refresh_token: Some("rt-1".into()),
        expires_at: Some(chrono::Utc::now().timestamp() + 3600),
        scope: None,
    });
    Vault(Arc::new(m))
}

fn credentials(pairs: &[(&str, &str)]) -> Credentials {
    Credentials::from_json(&Value::Object(
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), json!(v)))
            .collect(),
    ))
    .unwrap()
}

fn build(provider: &str, settings: &Value, creds: Credentials, vault: Vault) -> Arc<dyn Connector> {
    let ctx = BuildContext {
        http: switchyard_providers::http_client(),
        tokens: Some(Arc::new(vault)),
    };
    switchyard_providers::build(provider, settings, creds, &ctx).unwrap()
}

fn json_body(r: &Request) -> Value {
    serde_json::from_slice(&r.body).unwrap()
}

fn form_body(r: &Request) -> BTreeMap<String, String> {
    url::form_urlencoded::parse(&r.body).into_owned().collect()
}

fn query(r: &Request) -> BTreeMap<String, String> {
    r.url.query_pairs().into_owned().collect()
}

async fn received(server: &MockServer) -> Vec<Request> {
    server.received_requests().await.unwrap()
}

const KEY: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

fn create<'a>(entity: &'a str, payload: &'a Value) -> Operation<'a> {
    Operation::Create {
        entity,
        internal_id: "int-1",
        payload,
        idempotency_key: KEY,
    }
}

// ---------------------------------------------------------------- QuickBooks Online

fn quickbooks(server: &MockServer) -> Arc<dyn Connector> {
    build(
        "quickbooks-online",
        &json!({"realm_id": "9130357", "base_url": server.uri(), "token_url": format!("{}/oauth2/v1/tokens/bearer", server.uri())}),
        credentials(&[("client_id", "ABc"), ("client_secret", "s3cr3t")]),
        connected("qbo-at"),
    )
}

#[tokio::test]
async fn quickbooks_creates_a_customer_then_updates_it_sparsely_with_its_sync_token() {
    let server = MockServer::start().await;
    let base = "/v3/company/9130357/customer";
    Mock::given(method("POST"))
        .and(path(base))
        .respond_with(fixture("quickbooks/customer-created.json"))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    let qbo = quickbooks(&server);
    let payload = json!({"name": "Ana Lima", "email": "ana@example.com", "phone": "+1 555 0100",
                         "address": {"line1": "1 Main St", "city": "Springfield", "postal_code": "12345"}});
    let out = qbo.execute(create("customer", &payload)).await.unwrap();
    assert_eq!(out.external_id.as_deref(), Some("58"));
    assert_eq!(out.kept, Some(json!({"SyncToken": "0"})));

    let reqs = received(&server).await;
    let r = &reqs[0];
    assert_eq!(r.headers["authorization"], "Bearer qbo-at");
    assert_eq!(r.headers["accept"], "application/json");
    let q = query(r);
    assert_eq!(q["minorversion"], "75");
    // requestid: the job's idempotency key, kept to 50 characters.
    assert_eq!(q["requestid"], &KEY[..50]);
    assert_eq!(
        json_body(r),
        json!({"DisplayName": "Ana Lima", "PrimaryEmailAddr": {"Address": "ana@example.com"},
               "PrimaryPhone": {"FreeFormNumber": "+1 555 0100"},
               "BillAddr": {"Line1": "1 Main St", "City": "Springfield", "PostalCode": "12345"}})
    );

    // The update: a sparse update naming the Id and the SyncToken kept from the create.
    Mock::given(method("POST"))
        .and(path(base))
        .respond_with(fixture("quickbooks/customer-updated.json"))
        .mount(&server)
        .await;
    let changed = json!({"name": "Ana Lima", "email": "ana.lima@example.com"});
    let out = qbo
        .execute(Operation::Update {
            entity: "customer",
            internal_id: "int-1",
            external_id: "58",
            payload: &changed,
            idempotency_key: KEY,
            kept: Some(&json!({"SyncToken": "0"})),
        })
        .await
        .unwrap();
    assert_eq!(out.kept, Some(json!({"SyncToken": "1"})));
    let reqs = received(&server).await;
    assert_eq!(
        json_body(&reqs[1]),
        json!({"Id": "58", "SyncToken": "0", "sparse": true, "DisplayName": "Ana Lima",
               "PrimaryEmailAddr": {"Address": "ana.lima@example.com"}})
    );
}

#[tokio::test]
async fn quickbooks_rereads_a_stale_sync_token_and_tries_once_more() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v3/company/9130357/customer"))
        .respond_with(fixture("quickbooks/stale-object.json"))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v3/company/9130357/customer/58"))
        .respond_with(fixture("quickbooks/customer-read.json"))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/v3/company/9130357/customer"))
        .respond_with(fixture("quickbooks/customer-updated.json"))
        .mount(&server)
        .await;
    let payload = json!({"name": "Ana Lima"});
    let out = quickbooks(&server)
        .execute(Operation::Update {
            entity: "customer",
            internal_id: "int-1",
            external_id: "58",
            payload: &payload,
            idempotency_key: KEY,
            kept: Some(&json!({"SyncToken": "1"})),
        })
        .await
        .unwrap();
    assert!(out.request.contains("after re-reading"), "{}", out.request);
    let reqs = received(&server).await;
    assert_eq!(json_body(&reqs[0])["SyncToken"], "1");
    assert_eq!(json_body(&reqs[2])["SyncToken"], "4");
}

#[tokio::test]
async fn quickbooks_finds_a_customer_by_display_name_with_quotes_escaped() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v3/company/9130357/query"))
        .and(query_param(
            "query",
            r"select * from Customer where DisplayName = 'O\'Brien & Sons'",
        ))
        .respond_with(fixture("quickbooks/query-customer-one.json"))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v3/company/9130357/query"))
        .and(query_param(
            "query",
            "select * from Customer where DisplayName = 'Nobody'",
        ))
        .respond_with(fixture("quickbooks/query-none.json"))
        .mount(&server)
        .await;
    let qbo = quickbooks(&server);
    assert!(qbo.can_lookup("customer"));
    let found = qbo
        .lookup("customer", &json!({"name": "O'Brien & Sons"}))
        .await
        .unwrap();
    assert_eq!(found.external_id.as_deref(), Some("67"));
    // The update that follows needs the record's SyncToken: the look-up keeps it.
    assert_eq!(found.kept, Some(json!({"SyncToken": "3"})));
    let none = qbo
        .lookup("customer", &json!({"name": "Nobody"}))
        .await
        .unwrap();
    assert_eq!(none.external_id, None);
}

#[tokio::test]
async fn quickbooks_invoice_lines_carry_the_target_ids_of_customer_and_items() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v3/company/9130357/invoice"))
        .respond_with(fixture("quickbooks/invoice-created.json"))
        .mount(&server)
        .await;
    let qbo = quickbooks(&server);
    let mut payload = json!({"number": "1037", "date": "2026-11-20T10:00:00Z", "customer_id": "c-9",
        "lines": [{"item_id": "sku-design", "quantity": "2", "unit_price": "75", "amount": "150.00", "description": "Design"}]});
    assert_eq!(
        qbo.references("invoice", &payload),
        vec![
            ("customer".to_owned(), "c-9".to_owned()),
            ("item".to_owned(), "sku-design".to_owned())
        ]
    );
    // What the worker adds once both have reached QuickBooks.
    payload["_switchyard"] =
        json!({"refs": {"customer": {"c-9": "58"}, "item": {"sku-design": "7"}}});
    let out = qbo.execute(create("invoice", &payload)).await.unwrap();
    assert_eq!(out.external_id.as_deref(), Some("130"));
    let reqs = received(&server).await;
    assert_eq!(
        json_body(&reqs[0]),
        json!({"DocNumber": "1037", "TxnDate": "2026-11-20", "CustomerRef": {"value": "58"},
               "Line": [{"DetailType": "SalesItemLineDetail", "Description": "Design", "Amount": 150,
                         "SalesItemLineDetail": {"ItemRef": {"value": "7"}, "Qty": 2, "UnitPrice": 75}}]})
    );
}

#[tokio::test]
async fn quickbooks_throttling_and_faults_are_classified_with_intuits_message() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v3/company/9130357/item"))
        .respond_with(fixture("quickbooks/throttled.json"))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/v3/company/9130357/invoice"))
        .respond_with(fixture("quickbooks/fault-in-200.json"))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v3/company/9130357/companyinfo/9130357"))
        .respond_with(fixture("quickbooks/company-info.json"))
        .expect(1)
        .mount(&server)
        .await;
    let qbo = quickbooks(&server);
    let e = qbo
        .execute(create("item", &json!({"name": "Design", "price": 75})))
        .await
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::Throttled);
    assert!(
        e.message.contains("The request limit was reached"),
        "{}",
        e.message
    );
    let e = qbo
        .execute(create("invoice", &json!({"number": "1"})))
        .await
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::Permanent);
    assert!(e.message.contains("answered 200"), "{}", e.message);
    assert!(
        e.message
            .contains("Something you're trying to use has been made inactive"),
        "{}",
        e.message
    );
    qbo.test_connection().await.unwrap();
}

#[test]
fn quickbooks_declares_intuits_limits() {
    let s = switchyard_providers::with_defaults("quickbooks-online", &json!({"realm_id": "1"}));
    assert_eq!(s["rate_limit"], json!({"limit": 500, "per": "minute"}));
    assert_eq!(s["concurrency"], json!(10));
}

// ---------------------------------------------------------------- Moloni

fn moloni(server: &MockServer) -> Arc<dyn Connector> {
    build(
        "moloni",
        &json!({"company_id": "5", "document_set_id": "88", "base_url": format!("{}/v1", server.uri()),
               "tax_id": "1234", "maturity_date_id": "11", "payment_method_id": "22"}),
        credentials(&[
            ("client_id", "devid"),
            ("client_secret", "devsecret"),
            ("username", "ana@example.pt"),
            ("password", "pw"),
        ]),
        Vault::default(),
    )
}

async fn moloni_grant(server: &MockServer) {
    Mock::given(method("GET"))
        .and(path("/v1/grant/"))
        .and(query_param("grant_type", "password"))
        .and(query_param("client_id", "devid"))
        .and(query_param("client_secret", "devsecret"))
        .and(query_param("username", "ana@example.pt"))
        .and(query_param("password", "pw"))
        .respond_with(fixture("moloni/grant.json"))
        .expect(1)
        .mount(server)
        .await;
}

#[tokio::test]
async fn moloni_inserts_a_customer_with_a_form_body_and_the_token_in_the_query() {
    let server = MockServer::start().await;
    moloni_grant(&server).await;
    Mock::given(method("POST"))
        .and(path("/v1/customers/insert/"))
        .respond_with(fixture("moloni/customer-inserted.json"))
        .mount(&server)
        .await;
    let payload =
        json!({"number": "C-0001", "name": "Ana Lima", "email": "ana@example.pt", "city": "Porto"});
    let out = moloni(&server)
        .execute(create("customer", &payload))
        .await
        .unwrap();
    assert_eq!(out.external_id.as_deref(), Some("31250"));
    let reqs = received(&server).await;
    let r = reqs
        .iter()
        .find(|r| r.url.path() == "/v1/customers/insert/")
        .unwrap();
    assert_eq!(
        query(r)["access_token"],
        "5f1e2d3c4b5a69788796a5b4c3d2e1f0a9b8c7d6"
    );
    assert_eq!(
        r.headers["content-type"],
        "application/x-www-form-urlencoded"
    );
    let f = form_body(r);
    for (k, v) in [
        ("company_id", "5"),
        ("number", "C-0001"),
        ("name", "Ana Lima"),
        ("vat", "999999990"),
        ("email", "ana@example.pt"),
        ("city", "Porto"),
        ("address", ""),
        ("zip_code", ""),
        ("country_id", "1"),
        ("language_id", "1"),
        ("maturity_date_id", "11"),
        ("payment_method_id", "22"),
        ("salesman_id", "0"),
        ("payment_day", "0"),
        ("discount", "0"),
        ("credit_limit", "0"),
        ("delivery_method_id", "0"),
    ] {
        assert_eq!(f.get(k).map(String::as_str), Some(v), "field {k} in {f:?}");
    }
    assert!(
        !f.contains_key("customer_id"),
        "a create names no customer_id"
    );
}

#[tokio::test]
async fn moloni_finds_customers_by_number_and_invoices_with_lines() {
    let server = MockServer::start().await;
    moloni_grant(&server).await;
    Mock::given(method("POST"))
        .and(path("/v1/customers/getByNumber/"))
        .respond_with(fixture("moloni/customers-by-number.json"))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/invoices/insert/"))
        .respond_with(fixture("moloni/invoice-inserted.json"))
        .mount(&server)
        .await;
    let m = moloni(&server);
    let found = m
        .lookup("customer", &json!({"number": "C-0001"}))
        .await
        .unwrap();
    assert_eq!(found.external_id.as_deref(), Some("31250"));
    let mut invoice = json!({"customer_id": "wc-7", "date": "2026-11-20", "your_reference": "WC-1001",
        "lines": [{"product_id": "p-1", "name": "Caneca", "quantity": 2, "unit_price": "4.5"}]});
    invoice["_switchyard"] =
        json!({"refs": {"customer": {"wc-7": "31250"}, "product": {"p-1": "771"}}});
    let out = m.execute(create("invoice", &invoice)).await.unwrap();
    assert_eq!(out.external_id.as_deref(), Some("9012345"));
    let reqs = received(&server).await;
    let lookup = reqs
        .iter()
        .find(|r| r.url.path() == "/v1/customers/getByNumber/")
        .unwrap();
    assert_eq!(form_body(lookup)["number"], "C-0001");
    assert_eq!(form_body(lookup)["company_id"], "5");
    let r = reqs
        .iter()
        .find(|r| r.url.path() == "/v1/invoices/insert/")
        .unwrap();
    let f = form_body(r);
    for (k, v) in [
        ("company_id", "5"),
        ("document_set_id", "88"),
        ("customer_id", "31250"),
        ("date", "2026-11-20"),
        ("your_reference", "WC-1001"),
        ("status", "0"),
        ("products[0][product_id]", "771"),
        ("products[0][name]", "Caneca"),
        ("products[0][qty]", "2"),
        ("products[0][price]", "4.50"),
        ("products[0][taxes][0][tax_id]", "1234"),
    ] {
        assert_eq!(f.get(k).map(String::as_str), Some(v), "field {k} in {f:?}");
    }
}

#[tokio::test]
async fn moloni_field_errors_in_a_200_fail_the_call_with_their_description() {
    let server = MockServer::start().await;
    moloni_grant(&server).await;
    Mock::given(method("POST"))
        .and(path("/v1/customers/insert/"))
        .respond_with(fixture("moloni/field-errors.json"))
        .mount(&server)
        .await;
    let e = moloni(&server)
        .execute(create(
            "customer",
            &json!({"number": "C-2", "name": "X", "vat": "123"}),
        ))
        .await
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::Permanent);
    assert!(
        e.message.contains("não é um número de contribuinte válido"),
        "{}",
        e.message
    );
}

// ---------------------------------------------------------------- PrestaShop

fn prestashop(server: &MockServer) -> Arc<dyn Connector> {
    build(
        "prestashop",
        &json!({"base_url": server.uri()}),
        credentials(&[("api_key", "WSKEY123")]),
        Vault::default(),
    )
}

#[tokio::test]
async fn prestashop_writes_products_as_xml_with_the_key_as_basic_user() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/products"))
        .respond_with(xml_fixture("prestashop/product-created.xml", 201))
        .mount(&server)
        .await;
    let ps = prestashop(&server);
    let out = ps
        .execute(create(
            "product",
            &json!({"sku": "MUG-1", "name": "Mug", "price": 9.5}),
        ))
        .await
        .unwrap();
    assert_eq!(out.external_id.as_deref(), Some("21"));
    let reqs = received(&server).await;
    let r = &reqs[0];
    // `WSKEY123:` in Basic: the key is the user, the password empty.
    assert_eq!(r.headers["authorization"], "Basic V1NLRVkxMjM6");
    assert_eq!(r.headers["accept"], "application/xml");
    assert!(
        r.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/xml")
    );
    let body = String::from_utf8(r.body.clone()).unwrap();
    let sent = switchyard_providers::xml::to_json(&body).unwrap();
    assert_eq!(
        sent,
        json!({"prestashop": {"product": {
            "reference": "MUG-1", "price": "9.500000", "active": "1", "state": "1",
            "id_category_default": "2",
            "name": {"language": {"@id": "1", "#text": "Mug"}}}}})
    );
}

#[tokio::test]
async fn prestashop_sets_stock_through_the_products_stock_available() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/products"))
        .and(query_param("filter[reference]", "[MUG-1]"))
        .and(query_param("display", "[id]"))
        .respond_with(xml_fixture("prestashop/products-by-reference.xml", 200))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/products"))
        .and(query_param("filter[reference]", "[NOPE]"))
        .respond_with(xml_fixture("prestashop/products-none.xml", 200))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/stock_availables"))
        .and(query_param("filter[id_product]", "[21]"))
        .and(query_param("filter[id_product_attribute]", "[0]"))
        .and(query_param("display", "full"))
        .respond_with(xml_fixture(
            "prestashop/stock-availables-of-product.xml",
            200,
        ))
        .mount(&server)
        .await;
    Mock::given(method("PUT"))
        .and(path("/api/stock_availables/43"))
        .respond_with(xml_fixture("prestashop/stock-available-updated.xml", 200))
        .mount(&server)
        .await;
    let ps = prestashop(&server);
    assert!(
        !ps.can_create("stock"),
        "stock is found and updated, never created"
    );
    let stock = json!({"sku": "MUG-1", "quantity": 17});
    let found = ps.lookup("stock", &stock).await.unwrap();
    assert_eq!(found.external_id.as_deref(), Some("43"));
    let none = ps.lookup("stock", &json!({"sku": "NOPE"})).await.unwrap();
    assert_eq!(none.external_id, None);
    let out = ps
        .execute(Operation::Update {
            entity: "stock",
            internal_id: "MUG-1",
            external_id: "43",
            payload: &stock,
            idempotency_key: KEY,
            kept: found.kept.as_ref(),
        })
        .await
        .unwrap();
    assert_eq!(
        out.kept,
        Some(
            json!({"id_product": "21", "id_product_attribute": "0", "id_shop": "1",
                    "depends_on_stock": "0", "out_of_stock": "2"})
        )
    );
    let reqs = received(&server).await;
    let put = reqs.iter().find(|r| r.method.as_str() == "PUT").unwrap();
    let sent = switchyard_providers::xml::to_json(std::str::from_utf8(&put.body).unwrap()).unwrap();
    // A PUT carries the whole resource: what the look-up kept, and the new quantity.
    assert_eq!(
        sent,
        json!({"prestashop": {"stock_available": {"id": "43", "id_product": "21",
            "id_product_attribute": "0", "id_shop": "1", "depends_on_stock": "0",
            "out_of_stock": "2", "quantity": "17"}}})
    );
    // A stock change for a product the shop does not have cannot create it.
    let e = ps
        .execute(create("stock", &json!({"sku": "NOPE", "quantity": 1})))
        .await
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::Permanent);
    assert!(
        e.message.contains("must exist there first"),
        "{}",
        e.message
    );
}

#[tokio::test]
async fn prestashop_xml_errors_are_reported_with_their_message() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/products"))
        .respond_with(xml_fixture("prestashop/error.xml", 400))
        .mount(&server)
        .await;
    let e = prestashop(&server)
        .execute(create("product", &json!({"sku": "MUG-1", "price": "x"})))
        .await
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::Permanent);
    assert!(
        e.message.contains("Property Product->price is not valid"),
        "{}",
        e.message
    );
}

// ---------------------------------------------------------------- SAP Business One (a manifest)

/// SAP Business One's Service Layer as a `rest` manifest with session auth: not a built-in
/// connector yet, but the kit's session login, proven against the Service Layer's documented
/// login, cookies and `401 Invalid session`.
fn sap_b1(server: &MockServer, vault: Vault) -> Arc<dyn Connector> {
    build(
        "rest",
        &json!({
            "base_url": format!("{}/b1s/v1", server.uri()),
            "values": {"company_db": "SBODEMOUS"},
            "auth": {"type": "session",
                     "login": {"method": "POST", "path": "/Login", "envelope": {
                         "CompanyDB": "{settings.company_db}",
                         "UserName": "{credentials.username}",
                         "Password": "{credentials.password}"}},
                     "session_pointer": "/SessionId",
                     "timeout_pointer": "/SessionTimeout",
                     "send": {"cookie": "B1SESSION"}},
            "idempotency_header": null,
            "error_message_pointer": "/error/message/value",
            "entities": {"customer": {
                "create": {"method": "POST", "path": "/BusinessPartners"},
                "body": {"CardCode": "/code", "CardName": "/name", "EmailAddress": "/email",
                         "CardType": {"value": "cCustomer"}},
                "id_pointer": "/CardCode"}}
        }),
        credentials(&[("username", "manager"), ("password", "1234")]),
        vault,
    )
}

#[tokio::test]
async fn a_session_login_is_shared_by_the_fleet_and_renewed_on_a_401() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/b1s/v1/Login"))
        .respond_with(fixture("sap-b1/login.json"))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/b1s/v1/Login"))
        .respond_with(fixture("sap-b1/login-again.json"))
        .mount(&server)
        .await;
    let first = "B1SESSION=0b6e2d9a-8c1f-11f0-8000-0050568b2f9b; ROUTEID=.node1";
    let second = "B1SESSION=7f3a0c11-8c20-11f0-8000-0050568b2f9b; ROUTEID=.node2";
    Mock::given(method("POST"))
        .and(path("/b1s/v1/BusinessPartners"))
        .and(wiremock::matchers::header("cookie", first))
        .respond_with(fixture("sap-b1/business-partner-created.json"))
        .up_to_n_times(2)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/b1s/v1/BusinessPartners"))
        .and(wiremock::matchers::header("cookie", first))
        .respond_with(fixture("sap-b1/invalid-session.json"))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/b1s/v1/BusinessPartners"))
        .and(wiremock::matchers::header("cookie", second))
        .respond_with(fixture("sap-b1/business-partner-created.json"))
        .mount(&server)
        .await;

    // Two workers (two connectors) sharing the integration's vault, at once: one login.
    let vault = Vault::default();
    let (a, b) = (
        sap_b1(&server, vault.clone()),
        sap_b1(&server, vault.clone()),
    );
    let payload = json!({"code": "C20000", "name": "Ana Lima", "email": "ana@example.com"});
    let (ra, rb) = tokio::join!(
        a.execute(create("customer", &payload)),
        b.execute(create("customer", &payload))
    );
    assert_eq!(ra.unwrap().external_id.as_deref(), Some("C20000"));
    assert_eq!(rb.unwrap().external_id.as_deref(), Some("C20000"));
    let logins = |reqs: &[Request]| {
        reqs.iter()
            .filter(|r| r.url.path().ends_with("/Login"))
            .count()
    };
    assert_eq!(
        logins(&received(&server).await),
        1,
        "one login for the fleet"
    );
    let login = received(&server).await;
    assert_eq!(
        json_body(
            login
                .iter()
                .find(|r| r.url.path().ends_with("/Login"))
                .unwrap()
        ),
        json!({"CompanyDB": "SBODEMOUS", "UserName": "manager", "Password": "1234"})
    );

    // The Service Layer drops the session: the next call logs in again, once, and goes on.
    let out = a.execute(create("customer", &payload)).await.unwrap();
    assert_eq!(out.external_id.as_deref(), Some("C20000"));
    assert_eq!(logins(&received(&server).await), 2);
    // The other worker finds the new session in the vault: no login of its own.
    b.execute(create("customer", &payload)).await.unwrap();
    assert_eq!(logins(&received(&server).await), 2);
}

#[tokio::test]
async fn a_refused_login_says_so_with_the_providers_message() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/b1s/v1/Login"))
        .respond_with(ResponseTemplate::new(401).set_body_json(json!(
            {"error": {"code": 100000027, "message": {"lang": "en-us", "value": "Login failed"}}})))
        .mount(&server)
        .await;
    let e = sap_b1(&server, Vault::default())
        .execute(create("customer", &json!({"code": "C1", "name": "X"})))
        .await
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::Auth);
    assert!(e.message.contains("Login failed"), "{}", e.message);
}

// ---------------------------------------------------------------- NetSuite (a manifest)

/// What a NetSuite account does with a request: recompute its OAuth 1.0a HMAC-SHA256
/// signature from what arrived (RFC 5849 §3.4.1, written out here independently of the
/// signing code) and compare.
fn netsuite_signature_is_valid(r: &Request, consumer_secret: &str, token_secret: &str) -> bool {
    use base64::Engine as _;
    use hmac::Mac as _;
    fn enc(s: &str) -> String {
        s.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect()
    }
    let Some(auth) = r.headers.get("authorization").and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let Some(fields) = auth.strip_prefix("OAuth ") else {
        return false;
    };
    let mut oauth: BTreeMap<String, String> = fields
        .split(',')
        .filter_map(|kv| kv.trim().split_once('='))
        .map(|(k, v)| {
            let v = v.trim_matches('"');
            let v = percent_encoding::percent_decode_str(v)
                .decode_utf8_lossy()
                .into_owned();
            (k.to_owned(), v)
        })
        .collect();
    let Some(signature) = oauth.remove("oauth_signature") else {
        return false;
    };
    oauth.remove("realm");
    let mut params: Vec<(String, String)> = r.url.query_pairs().into_owned().collect();
    params.extend(oauth);
    let mut encoded: Vec<(String, String)> = params.iter().map(|(k, v)| (enc(k), enc(v))).collect();
    encoded.sort();
    let normalized = encoded
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    // The URI the client called: scheme, the Host it named, the path.
    let host = r.headers["host"].to_str().unwrap();
    let base_uri = format!("http://{host}{}", r.url.path());
    let base = format!(
        "{}&{}&{}",
        r.method.as_str(),
        enc(&base_uri),
        enc(&normalized)
    );
    let key = format!("{}&{}", enc(consumer_secret), enc(token_secret));
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(base.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes()) == signature
}

fn netsuite(server: &MockServer) -> Arc<dyn Connector> {
    build(
        "rest",
        &json!({
            "base_url": format!("{}/services/rest/record/v1", server.uri()),
            "auth": {"type": "oauth1", "realm": "1234567_SB1"},
            "idempotency_header": "X-NetSuite-Idempotency-Key",
            "error_message_pointer": "/o:errorDetails/0/detail",
            "entities": {"customer": {
                "create": {"method": "POST", "path": "/customer"},
                "update": {"method": "PATCH", "path": "/customer/{external_id}"},
                "body": {"companyName": "/name", "email": "/email",
                         "subsidiary.id": {"value": "1"}},
                "id_from_location": true,
                "lookup": {"path": "/customer", "query": {"q": "email IS \"{key}\""},
                           "key_pointer": "/email", "items_pointer": "/items", "id_pointer": "/id"}}}
        }),
        credentials(&[
            ("consumer_key", "ck-1"),
            ("consumer_secret", "cs-1"),
            ("token_id", "tk-1"),
            ("token_secret", "ts-1"),
        ]),
        Vault::default(),
    )
}

#[tokio::test]
async fn netsuite_requests_are_signed_with_oauth1_hmac_sha256_and_the_id_read_from_location() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/services/rest/record/v1/customer"))
        .and(|r: &Request| netsuite_signature_is_valid(r, "cs-1", "ts-1"))
        .respond_with(fixture("netsuite/customer-created.json"))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/services/rest/record/v1/customer"))
        .and(|r: &Request| netsuite_signature_is_valid(r, "cs-1", "ts-1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "links": [], "count": 1, "hasMore": false, "offset": 0, "totalResults": 1,
            "items": [{"links": [], "id": "647"}]})))
        .mount(&server)
        .await;
    Mock::given(method("PATCH"))
        .and(path("/services/rest/record/v1/customer/647"))
        .respond_with(fixture("netsuite/invalid-value.json"))
        .mount(&server)
        .await;
    let ns = netsuite(&server);
    let payload = json!({"name": "Lima & Filhos", "email": "ana@example.com"});
    let out = ns.execute(create("customer", &payload)).await.unwrap();
    assert_eq!(out.external_id.as_deref(), Some("647"));
    // A query is signed too (its parameters are part of the base string).
    let found = ns.lookup("customer", &payload).await.unwrap();
    assert_eq!(found.external_id.as_deref(), Some("647"));
    let reqs = received(&server).await;
    let auth = reqs[0].headers["authorization"].to_str().unwrap();
    assert!(auth.starts_with("OAuth realm=\"1234567_SB1\","), "{auth}");
    assert!(
        auth.contains("oauth_signature_method=\"HMAC-SHA256\""),
        "{auth}"
    );
    assert!(auth.contains("oauth_token=\"tk-1\""), "{auth}");
    assert_eq!(reqs[0].headers["x-netsuite-idempotency-key"], KEY);
    assert!(
        !netsuite_signature_is_valid(&reqs[0], "another-secret", "ts-1"),
        "the account's check refuses a request signed with other keys"
    );
    assert_eq!(
        json_body(&reqs[0]),
        json!({"companyName": "Lima & Filhos", "email": "ana@example.com", "subsidiary": {"id": "1"}})
    );
    // Its error shape gives the detail.
    let e = ns
        .execute(Operation::Update {
            entity: "customer",
            internal_id: "int-1",
            external_id: "647",
            payload: &json!({"email": "not-an-email"}),
            idempotency_key: KEY,
            kept: None,
        })
        .await
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::Permanent);
    assert!(
        e.message
            .contains("Invalid value for the resource or sub-resource field 'email'"),
        "{}",
        e.message
    );
}

#[tokio::test]
async fn prestashop_places_an_order_from_a_cart_made_first() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/carts"))
        .respond_with(xml_fixture("prestashop/cart-created.xml", 201))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/api/orders"))
        .respond_with(xml_fixture("prestashop/order-created.xml", 201))
        .expect(1)
        .mount(&server)
        .await;
    let ps = prestashop(&server);
    let mut order = json!({"id": "R1-1001", "total": "19.00", "total_products": "19.00",
                           "lines": [{"product_id": "9", "quantity": 2}]});
    assert_eq!(
        ps.references("order", &order),
        vec![("product".to_owned(), "9".to_owned())],
        "the cart's rows name products: the order waits for them"
    );
    // What the worker adds: the wholesaler's id for the retailer's product 9, and the
    // route's values (who this retailer is at the wholesaler).
    order["_switchyard"] = json!({"refs": {"product": {"9": "21"}},
                                  "route": {"id_customer": 7, "id_address": 12}});
    let out = ps.execute(create("order", &order)).await.unwrap();
    assert_eq!(out.external_id.as_deref(), Some("5002"));
    assert!(out.request.contains("/api/carts → 311"), "{}", out.request);
    let reqs = received(&server).await;
    let sent = |p: &str| {
        let r = reqs.iter().find(|r| r.url.path() == p).unwrap();
        switchyard_providers::xml::to_json(std::str::from_utf8(&r.body).unwrap()).unwrap()
    };
    assert_eq!(
        sent("/api/carts"),
        json!({"prestashop": {"cart": {
            "id_currency": "1", "id_lang": "1", "id_carrier": "1", "id_customer": "7",
            "id_address_delivery": "12", "id_address_invoice": "12",
            "associations": {"cart_rows": {"cart_row": {
                "id_product": "21", "id_product_attribute": "0", "quantity": "2"}}}}}})
    );
    assert_eq!(
        sent("/api/orders"),
        json!({"prestashop": {"order": {
            "id_cart": "311", "id_customer": "7", "id_address_delivery": "12",
            "id_address_invoice": "12", "id_currency": "1", "id_lang": "1", "id_carrier": "1",
            "current_state": "2", "module": "ps_wirepayment", "payment": "Bank wire",
            "total_paid": "19.000000", "total_paid_real": "19.000000",
            "total_products": "19.000000", "total_products_wt": "19.000000",
            "conversion_rate": "1"}}})
    );
}

#[tokio::test]
async fn moloni_refreshes_an_expired_token_with_its_refresh_token_by_get() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v1/grant/"))
        .and(query_param("grant_type", "refresh_token"))
        .and(query_param("client_id", "devid"))
        .and(query_param("client_secret", "devsecret"))
        .and(query_param("refresh_token", "rt-old"))
        .respond_with(fixture("moloni/grant.json"))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/v1/customers/insert/"))
        .and(query_param(
            "access_token",
            "5f1e2d3c4b5a69788796a5b4c3d2e1f0a9b8c7d6",
        ))
        .respond_with(fixture("moloni/customer-inserted.json"))
        .expect(1)
        .mount(&server)
        .await;
    // The stored token expired a minute ago; its refresh token is still good.
    let vault = Vault::default();
    *vault.0.0.lock().unwrap() = Some(TokenSet {
        access_token: "at-expired".into(),
        refresh_token: Some("rt-old".into()),
        expires_at: Some(chrono::Utc::now().timestamp() - 60),
        scope: None,
    });
    let m = build(
        "moloni",
        &json!({"company_id": "5", "document_set_id": "88", "base_url": format!("{}/v1", server.uri())}),
        credentials(&[
            ("client_id", "devid"),
            ("client_secret", "devsecret"),
            ("username", "ana@example.pt"),
            ("password", "pw"),
        ]),
        vault.clone(),
    );
    m.execute(create("customer", &json!({"number": "C-3", "name": "Rui"})))
        .await
        .unwrap();
    let stored = vault.0.0.lock().unwrap().clone().unwrap();
    assert_eq!(
        stored.refresh_token.as_deref(),
        Some("0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a1b"),
        "the new refresh token is kept"
    );
}

// ------------------------------------------ Business Central and Xero (manifests, not connectors)

#[tokio::test]
async fn an_odata_update_sends_the_etag_it_kept_as_if_match() {
    let server = MockServer::start().await;
    let base = "/v2.0/tenant/production/api/v2.0/companies(5d115c9c-44e3-ea11-bb43-000d3a2feca1)";
    Mock::given(method("POST"))
        .and(path(format!("{base}/customers")))
        .respond_with(fixture("business-central/customer-created.json"))
        .mount(&server)
        .await;
    Mock::given(method("PATCH"))
        .and(path(format!(
            "{base}/customers(5d115c9c-44e3-ea11-bb43-000d3a2feca2)"
        )))
        .and(wiremock::matchers::header(
            "if-match",
            "W/\"JzQ0O0VnQUFBQUo3QlRFQU1BQXdBQUFBQUE9PTE7MDsn\"",
        ))
        .respond_with(fixture("business-central/customer-updated.json"))
        .expect(1)
        .mount(&server)
        .await;
    let bc = build(
        "rest",
        &json!({
            "base_url": format!("{}{base}", server.uri()),
            "auth": {"type": "bearer"},
            "entities": {"customer": {
                "create": {"method": "POST", "path": "/customers"},
                "update": {"method": "PATCH", "path": "/customers({external_id})",
                           "headers": {"If-Match": "{kept.etag}"}},
                "body": {"displayName": "/name", "email": "/email"},
                "id_pointer": "/id",
                "keep": {"etag": "/@odata.etag"}}}
        }),
        credentials(&[("token", "aad-token")]),
        Vault::default(),
    );
    let created = bc
        .execute(create(
            "customer",
            &json!({"name": "Ana Lima", "email": "ana@example.com"}),
        ))
        .await
        .unwrap();
    let updated = bc
        .execute(Operation::Update {
            entity: "customer",
            internal_id: "int-1",
            external_id: created.external_id.as_deref().unwrap(),
            payload: &json!({"name": "Ana Lima", "email": "ana.lima@example.com"}),
            idempotency_key: KEY,
            kept: created.kept.as_ref(),
        })
        .await
        .unwrap();
    assert_eq!(
        updated.kept,
        Some(json!({"etag": "W/\"JzQ0O0VnQUFBQUo3QlRFQU1BQXdBQUFBQUE9PTI7MDsn\""}))
    );
}

#[tokio::test]
async fn a_xero_invoice_goes_in_a_list_with_the_tenant_header_from_credentials() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api.xro/2.0/Invoices"))
        .and(wiremock::matchers::header(
            "xero-tenant-id",
            "70784a63-d24b-46a9-a4db-0e70a274b056",
        ))
        .respond_with(fixture("xero/invoices-created.json"))
        .mount(&server)
        .await;
    let xero = build(
        "rest",
        &json!({
            "base_url": format!("{}/api.xro/2.0", server.uri()),
            "auth": {"type": "bearer"},
            "headers": {"xero-tenant-id": "{credentials.tenant_id}"},
            "entities": {"invoice": {
                "create": {"method": "POST", "path": "/Invoices"},
                "wrap": "Invoices", "wrap_array": true,
                "body": {"Type": {"value": "ACCREC"}, "InvoiceNumber": "/number",
                         "Contact.ContactID": "/contact_id"},
                "id_pointer": "/Invoices/0/InvoiceID"}}
        }),
        credentials(&[
            ("token", "xero-at"),
            ("tenant_id", "70784a63-d24b-46a9-a4db-0e70a274b056"),
        ]),
        Vault::default(),
    );
    let out = xero
        .execute(create(
            "invoice",
            &json!({"number": "INV-0042", "contact_id": "0b7c6b5a-2e4f-4d8a-9c1b-3a5e7f9d1c2b"}),
        ))
        .await
        .unwrap();
    assert_eq!(
        out.external_id.as_deref(),
        Some("4f7b0e2a-3d5c-4c1e-8a6b-9f2d1e0c7b35")
    );
    let reqs = received(&server).await;
    assert_eq!(
        json_body(&reqs[0]),
        json!({"Invoices": [{"Type": "ACCREC", "InvoiceNumber": "INV-0042",
                             "Contact": {"ContactID": "0b7c6b5a-2e4f-4d8a-9c1b-3a5e7f9d1c2b"}}]})
    );
}

// ---------------------------------------------------------------- Odoo (a manifest)

#[tokio::test]
async fn an_odoo_partner_is_found_by_json_rpc_search_read_and_written_by_execute_kw() {
    // odoo.com/documentation › Developer › External API: object.execute_kw(db, uid, password,
    // model, method, args, kwargs); over JSON-RPC at /jsonrpc, the answer's `result`.
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/jsonrpc"))
        .and(wiremock::matchers::body_partial_json(
            json!({"params": {"args": [
            "acme", 2, "odoo-key", "res.partner", "search_read",
            [[["email", "=", "o\"brien@example.com"]]], {"fields": ["id"]}]}}),
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!(
            {"jsonrpc": "2.0", "id": null, "result": [{"id": 42}]})))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/jsonrpc"))
        .and(wiremock::matchers::body_partial_json(
            json!({"params": {"args": [
            "acme", 2, "odoo-key", "res.partner", "write", [[42], {"name": "O'Brien"}]]}}),
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!(
            {"jsonrpc": "2.0", "id": null, "result": true})))
        .expect(1)
        .mount(&server)
        .await;
    let rpc = |method: &str, args: Value| {
        json!({"jsonrpc": "2.0", "method": "call", "params": {"service": "object", "method": "execute_kw",
               "args": ["{settings.db}", 2, "{credentials.password}", "res.partner", method, args]}})
    };
    let odoo = build(
        "rest",
        &json!({
            "base_url": server.uri(),
            "values": {"db": "acme"},
            "idempotency_header": null,
            "error_pointer": "/error",
            "error_message_pointer": "/error/data/message",
            "entities": {"customer": {
                "create": {"method": "POST", "path": "/jsonrpc", "envelope": rpc("create", json!(["{body}"]))},
                "update": {"method": "POST", "path": "/jsonrpc", "envelope": rpc("write", json!([["{external_id}"], "{body}"]))},
                "body": {"name": "/name"},
                "id_pointer": "/result",
                "lookup": {"method": "POST", "path": "/jsonrpc", "key_pointer": "/email",
                           "envelope": {"jsonrpc": "2.0", "method": "call", "params": {"service": "object", "method": "execute_kw",
                               "args": ["{settings.db}", 2, "{credentials.password}", "res.partner", "search_read",
                                        [[["email", "=", "{key}"]]], {"fields": ["id"]}]}},
                           "items_pointer": "/result", "id_pointer": "/id"}}}
        }),
        credentials(&[("password", "odoo-key")]),
        Vault::default(),
    );
    let payload = json!({"name": "O'Brien", "email": "o\"brien@example.com"});
    let found = odoo.lookup("customer", &payload).await.unwrap();
    assert_eq!(found.external_id.as_deref(), Some("42"));
    odoo.execute(Operation::Update {
        entity: "customer",
        internal_id: "int-1",
        external_id: "42",
        payload: &payload,
        idempotency_key: KEY,
        kept: None,
    })
    .await
    .unwrap();
}

// ---------------------------------------------------------------- listing changed records

/// A QuickBooks query page of `n` customers numbered from `first`, shaped as the fixture.
fn quickbooks_page(first: u64, n: u64) -> ResponseTemplate {
    let text = read("quickbooks/query-customers-page.json");
    let f: Value = serde_json::from_str(&text).unwrap();
    let one = f["body"]["QueryResponse"]["Customer"][0].clone();
    let customers: Vec<Value> = (first..first + n)
        .map(|i| {
            let mut c = one.clone();
            c["Id"] = json!(i.to_string());
            c["DisplayName"] = json!(format!("Customer {i}"));
            c
        })
        .collect();
    ResponseTemplate::new(200).set_body_json(json!({"QueryResponse": {
        "Customer": customers, "startPosition": first, "maxResults": n}, "time": f["body"]["time"]}))
}

#[tokio::test]
async fn quickbooks_lists_changed_customers_by_startposition() {
    let server = MockServer::start().await;
    let q = |start: u64| {
        format!(
            "select * from Customer where Metadata.LastUpdatedTime > '2026-11-20T10:00:00+00:00' orderby Metadata.LastUpdatedTime STARTPOSITION {start} MAXRESULTS 100"
        )
    };
    Mock::given(method("GET"))
        .and(path("/v3/company/9130357/query"))
        .and(query_param("query", q(1)))
        .respond_with(quickbooks_page(1, 100))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v3/company/9130357/query"))
        .and(query_param("query", q(101)))
        .respond_with(quickbooks_page(101, 3))
        .mount(&server)
        .await;
    let qbo = quickbooks(&server);
    let since = chrono::DateTime::parse_from_rfc3339("2026-11-20T10:00:00Z")
        .unwrap()
        .with_timezone(&chrono::Utc);
    let mut cursor: Option<String> = None;
    let mut ids = Vec::new();
    loop {
        let page = qbo
            .list_changed(switchyard_providers::ListQuery {
                entity: "customer",
                since: Some(since),
                cursor: cursor.as_deref(),
            })
            .await
            .unwrap();
        ids.extend(page.records.iter().map(|r| r.id.clone()));
        assert!(
            page.records.iter().all(|r| r.version.is_some()),
            "LastUpdatedTime is the version"
        );
        match page.next {
            Some(n) => cursor = Some(n),
            None => break,
        }
    }
    assert_eq!(ids.len(), 103);
    assert_eq!(ids.last().map(String::as_str), Some("103"));
}

#[tokio::test]
async fn prestashop_lists_changed_products_by_limit_offset_in_xml() {
    let server = MockServer::start().await;
    let product = read("prestashop/product-created.xml");
    let body = product
        .split_once("<product>")
        .and_then(|(_, rest)| rest.split_once("</product>"))
        .map(|(inner, _)| inner.to_owned())
        .unwrap();
    let page = |first: u32, n: u32| {
        let items: String = (first..first + n)
            .map(|i| {
                format!(
                    "<product>{}</product>",
                    body.replace("[CDATA[21]]", &format!("[CDATA[{i}]]"))
                        .replace(
                            "</state>",
                            "</state><date_upd><![CDATA[2026-11-21 09:30:00]]></date_upd>"
                        )
                )
            })
            .collect();
        ResponseTemplate::new(200)
            .insert_header("content-type", "text/xml;charset=utf-8")
            .set_body_string(format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<prestashop xmlns:xlink=\"http://www.w3.org/1999/xlink\"><products>{items}</products></prestashop>"
            ))
    };
    for (limit, first, n) in [("0,50", 1, 50), ("50,50", 51, 1)] {
        Mock::given(method("GET"))
            .and(path("/api/products"))
            .and(query_param("limit", limit))
            .and(query_param("filter[date_upd]", ">[2026-11-20 10:00:00]"))
            .and(query_param("date", "1"))
            .and(query_param("display", "full"))
            .respond_with(page(first, n))
            .mount(&server)
            .await;
    }
    let ps = prestashop(&server);
    let since = chrono::DateTime::parse_from_rfc3339("2026-11-20T10:00:00Z")
        .unwrap()
        .with_timezone(&chrono::Utc);
    let first = ps
        .list_changed(switchyard_providers::ListQuery {
            entity: "product",
            since: Some(since),
            cursor: None,
        })
        .await
        .unwrap();
    assert_eq!(first.records.len(), 50);
    assert_eq!(first.next.as_deref(), Some("50"));
    assert_eq!(first.records[0].payload["reference"], json!("MUG-1"));
    let last = ps
        .list_changed(switchyard_providers::ListQuery {
            entity: "product",
            since: Some(since),
            cursor: Some("50"),
        })
        .await
        .unwrap();
    // One product: XML gives it as an element, read as a list of one.
    assert_eq!(last.records.len(), 1);
    assert_eq!(last.records[0].id, "51");
    assert_eq!(last.next, None);
    // None changed: an empty <products/>.
    Mock::given(method("GET"))
        .and(path("/api/products"))
        .and(query_param("filter[date_upd]", ">[2030-01-01 00:00:00]"))
        .respond_with(xml_fixture("prestashop/products-none.xml", 200))
        .mount(&server)
        .await;
    let none = ps
        .list_changed(switchyard_providers::ListQuery {
            entity: "product",
            since: Some(
                chrono::DateTime::parse_from_rfc3339("2030-01-01T00:00:00Z")
                    .unwrap()
                    .with_timezone(&chrono::Utc),
            ),
            cursor: None,
        })
        .await
        .unwrap();
    assert!(none.records.is_empty() && none.next.is_none());
}

// M-Pesa Daraja ---------------------------------------------------------------------------

fn daraja(base: &str, vault: Vault) -> Arc<dyn Connector> {
    build(
        "mpesa-daraja",
        &json!({"business_short_code": "174379", "party_b": "174379", "base_url": base}),
        credentials(&[
            ("client_id", "ck"),
            ("client_secret", "cs"),
            ("callback_url", "https://hub.example/v1/webhooks/1?key=k"),
            // The sandbox's published passkey (developer.safaricom.co.ke/test_credentials).
            (
                "passkey",
                "bfb279f9aa9bdbcf158e97dd71a467cd2e0c893059b10f78e6b72ada1ed2c919",
            ),
        ]),
        vault,
    )
}

/// The STK password is base64(short code ‖ passkey ‖ the body's own Timestamp).
fn check_password(body: &Value) {
    use base64::Engine as _;
    let ts = body["Timestamp"].as_str().unwrap();
    assert_eq!(ts.len(), 14, "Timestamp is YYYYMMDDHHmmss");
    let expected = base64::engine::general_purpose::STANDARD.encode(format!(
        "174379bfb279f9aa9bdbcf158e97dd71a467cd2e0c893059b10f78e6b72ada1ed2c919{ts}"
    ));
    assert_eq!(body["Password"], json!(expected));
}

#[tokio::test]
async fn daraja_gets_a_token_by_basic_auth_and_pushes_an_stk_charge() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/oauth/v1/generate"))
        .and(query_param("grant_type", "client_credentials"))
        // base64("ck:cs")
        .and(wiremock::matchers::header(
            "authorization",
            "Basic Y2s6Y3M=",
        ))
        .respond_with(fixture("mpesa-daraja/token.json"))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/mpesa/stkpush/v1/processrequest"))
        .and(wiremock::matchers::header(
            "authorization",
            "Bearer c9SQxWWhmdVRlyh0zh8gZDTkubVF",
        ))
        .respond_with(fixture("mpesa-daraja/stk-push-accepted.json"))
        .expect(1)
        .mount(&server)
        .await;
    let vault = Vault::default();
    let c = daraja(&server.uri(), vault.clone());
    assert!(c.operation("charge").unwrap().settle.is_some());
    let answer = c
        .operate(
            "charge",
            &json!({"phone": "254708374149", "amount": "10.00", "account_reference": "INV-7"}),
            Some("key-1"),
        )
        .await
        .unwrap();
    assert_eq!(
        answer.reference.as_deref(),
        Some("ws_CO_191220191020363925")
    );
    assert_eq!(answer.outcome, None, "the push only acknowledges");
    // The token answer (no token_type, expires_in as text) was understood and kept.
    let kept = vault.load().await.unwrap().unwrap();
    assert_eq!(kept.access_token, "c9SQxWWhmdVRlyh0zh8gZDTkubVF");
    assert!(kept.expires_at.unwrap() > chrono::Utc::now().timestamp() + 3000);

    let requests = server.received_requests().await.unwrap();
    let push = requests
        .iter()
        .find(|r| r.url.path() == "/mpesa/stkpush/v1/processrequest")
        .unwrap();
    assert!(
        push.headers.get("idempotency-key").is_none(),
        "Daraja takes no idempotency key"
    );
    let body = json_body(push);
    check_password(&body);
    assert_eq!(body["BusinessShortCode"], "174379");
    assert_eq!(body["TransactionType"], "CustomerPayBillOnline");
    assert_eq!(body["Amount"], 10);
    assert_eq!(body["PartyA"], "254708374149");
    assert_eq!(body["PartyB"], "174379");
    assert_eq!(body["PhoneNumber"], "254708374149");
    assert_eq!(
        body["CallBackURL"],
        "https://hub.example/v1/webhooks/1?key=k"
    );
    assert_eq!(body["AccountReference"], "INV-7");
    assert_eq!(body["TransactionDesc"], "Payment");
}

#[tokio::test]
async fn daraja_refusals_and_a_query_still_processing_are_classified() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/mpesa/stkpush/v1/processrequest"))
        .respond_with(fixture("mpesa-daraja/stk-push-invalid.json"))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/mpesa/stkpushquery/v1/query"))
        .respond_with(fixture("mpesa-daraja/stk-query-processing.json"))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/mpesa/stkpushquery/v1/query"))
        .respond_with(fixture("mpesa-daraja/stk-query-paid.json"))
        .mount(&server)
        .await;
    let c = daraja(&server.uri(), connected("at-1"));
    let err = c
        .operate(
            "charge",
            &json!({"phone": "07", "amount": 1, "account_reference": "INV-7"}),
            Some("k"),
        )
        .await
        .unwrap_err();
    assert_eq!(err.class, ErrorClass::Permanent);
    assert!(
        err.message.contains("Invalid PhoneNumber"),
        "{}",
        err.message
    );
    // A charge without what it needs is refused before any call.
    let err = c
        .operate("charge", &json!({"phone": "254708374149"}), Some("k"))
        .await
        .unwrap_err();
    assert!(err.message.contains("amount"), "{}", err.message);

    // The customer has not answered yet: a transient failure, asked again later.
    let q = json!({"reference": "ws_CO_191220191020363925"});
    let err = c.operate("query", &q, None).await.unwrap_err();
    assert_eq!(err.class, ErrorClass::Transient);
    assert!(err.message.contains("being processed"), "{}", err.message);
    let answer = c.operate("query", &q, None).await.unwrap();
    let outcome = answer.outcome.unwrap();
    assert!(outcome.succeeded);
    assert_eq!(outcome.code, "0");
    let requests = server.received_requests().await.unwrap();
    let query = json_body(requests.last().unwrap());
    check_password(&query);
    assert_eq!(query["CheckoutRequestID"], "ws_CO_191220191020363925");
}

#[test]
fn daraja_callbacks_settle_by_checkout_request_id_and_result_code() {
    let m = switchyard_providers::rest::Manifest::parse(
        &switchyard_providers::connectors::MPESA
            .manifest(&json!({"business_short_code": "1", "party_b": "1"}))
            .unwrap(),
    )
    .unwrap();
    let settle = m.operations["charge"].settle.clone().unwrap();
    assert_eq!(settle.query.as_deref(), Some("query"));
    assert_eq!(settle.query_after_secs, 60);
    let read = |name: &str| -> Value {
        serde_json::from_str::<Value>(&read(name)).unwrap()["body"].clone()
    };
    let paid = read("mpesa-daraja/stk-callback-paid.json");
    assert_eq!(
        paid.pointer(&settle.callback.as_ref().unwrap().reference_pointer),
        Some(&json!("ws_CO_191220191020363925"))
    );
    assert!(
        settle
            .callback
            .as_ref()
            .unwrap()
            .result
            .as_ref()
            .unwrap()
            .read(&paid)
            .unwrap()
            .succeeded
    );
    let cancelled = settle
        .callback
        .as_ref()
        .unwrap()
        .result
        .as_ref()
        .unwrap()
        .read(&read("mpesa-daraja/stk-callback-cancelled.json"))
        .unwrap();
    assert!(!cancelled.succeeded);
    assert_eq!(cancelled.code, "1032");
    assert_eq!(
        cancelled.message.as_deref(),
        Some("Request cancelled by user")
    );
}

// Pesapal 3.0 ------------------------------------------------------------------------------

fn pesapal(base: &str) -> Arc<dyn Connector> {
    build(
        "pesapal",
        &json!({"callback_url": "https://school.example/paid", "base_url": base,
                "ipn_id": "e32182ca-0983-4fa0-91bc-c3bb813ba750"}),
        credentials(&[
            ("consumer_key", "qkio1BGGYAXTu2JOfm7XSXNruoZsrqEW"),
            ("consumer_secret", "osGQ364R49cXKeOYSpaOnT++rHs="),
            ("ipn_url", "https://hub.example/v1/webhooks/1?key=k"),
        ]),
        Vault::default(),
    )
}

#[tokio::test]
async fn pesapal_logs_in_submits_an_order_and_reads_its_status() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/Auth/RequestToken"))
        .respond_with(fixture("pesapal/token.json"))
        .expect(1)
        .mount(&server)
        .await;
    let bearer = "Bearer eyJhbGciOiJodHRwOi8vd3d3LnczLm9yZy8yMDAxLzA0L3htbGRzaWctbW9yZSNobWFjLXNoYTI1NiIsInR5cCI6IkpXVCJ9";
    Mock::given(method("POST"))
        .and(path("/api/Transactions/SubmitOrderRequest"))
        .and(wiremock::matchers::header("authorization", bearer))
        .respond_with(fixture("pesapal/order-submitted.json"))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/Transactions/GetTransactionStatus"))
        .and(query_param(
            "orderTrackingId",
            "b945e4af-80a5-4ec1-8706-e03f8332fb04",
        ))
        .and(wiremock::matchers::header("authorization", bearer))
        .respond_with(fixture("pesapal/status-completed.json"))
        .mount(&server)
        .await;
    let c = pesapal(&server.uri());
    let answer = c
        .operate(
            "charge",
            &json!({"id": "ADM-0042", "amount": "1500.00", "description": "Term 1 fees",
                    "email": "parent@example.com", "phone": "0723xxxxxx"}),
            Some("k"),
        )
        .await
        .unwrap();
    assert_eq!(
        answer.reference.as_deref(),
        Some("b945e4af-80a5-4ec1-8706-e03f8332fb04")
    );
    assert!(
        answer.body["redirect_url"]
            .as_str()
            .unwrap()
            .contains("OrderTrackingId=")
    );
    let requests = server.received_requests().await.unwrap();
    let login = json_body(&requests[0]);
    assert_eq!(
        login,
        json!({"consumer_key": "qkio1BGGYAXTu2JOfm7XSXNruoZsrqEW", "consumer_secret": "osGQ364R49cXKeOYSpaOnT++rHs="})
    );
    let order = json_body(&requests[1]);
    assert_eq!(
        order,
        json!({"id": "ADM-0042", "currency": "KES", "amount": 1500, "description": "Term 1 fees",
               "callback_url": "https://school.example/paid",
               "notification_id": "e32182ca-0983-4fa0-91bc-c3bb813ba750",
               "billing_address": {"email_address": "parent@example.com", "phone_number": "0723xxxxxx"}})
    );
    // The status's error object holds only nulls: not an error.
    let status = c
        .operate(
            "status",
            &json!({"reference": "b945e4af-80a5-4ec1-8706-e03f8332fb04"}),
            None,
        )
        .await
        .unwrap();
    let o = status.outcome.unwrap();
    assert!(o.succeeded);
    assert_eq!(o.message.as_deref(), Some("Completed"));
}

#[tokio::test]
async fn pesapal_reports_an_error_inside_a_200_and_acknowledges_its_ipn_as_documented() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/Auth/RequestToken"))
        .respond_with(fixture("pesapal/token.json"))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/api/Transactions/SubmitOrderRequest"))
        .respond_with(fixture("pesapal/order-refused.json"))
        .mount(&server)
        .await;
    let c = pesapal(&server.uri());
    let err = c
        .operate(
            "charge",
            &json!({"id": "A", "amount": 1, "description": "x", "email": "e@x"}),
            Some("k"),
        )
        .await
        .unwrap_err();
    assert_eq!(err.class, ErrorClass::Permanent);
    assert!(
        err.message.contains("Invalid notification id"),
        "{}",
        err.message
    );

    // The IPN URL (with the integration's key) comes from the sealed credentials.
    Mock::given(method("POST"))
        .and(path("/api/URLSetup/RegisterIPN"))
        .and(wiremock::matchers::body_json(json!({
            "url": "https://hub.example/v1/webhooks/1?key=k", "ipn_notification_type": "GET"})))
        .respond_with(fixture("pesapal/ipn-registered.json"))
        .expect(1)
        .mount(&server)
        .await;
    let registered = c
        .operate("register_ipn", &json!({}), Some("k"))
        .await
        .unwrap();
    assert_eq!(
        registered.body["ipn_id"],
        "e32182ca-0983-4fa0-91bc-c3bb813ba750"
    );

    let spec = c.operation("charge").unwrap().settle.clone().unwrap();
    assert!(
        spec.callback.as_ref().unwrap().result.is_none(),
        "the IPN does not carry the status"
    );
    let ipn = json!({"OrderTrackingId": "b945e4af-80a5-4ec1-8706-e03f8332fb04",
                     "OrderNotificationType": "IPNCHANGE", "OrderMerchantReference": "ADM-0042"});
    assert_eq!(
        spec.callback.unwrap().reply.unwrap().body.apply(&ipn),
        json!({"orderNotificationType": "IPNCHANGE",
               "orderTrackingId": "b945e4af-80a5-4ec1-8706-e03f8332fb04",
               "orderMerchantReference": "ADM-0042", "status": 200})
    );
}

// Flutterwave ------------------------------------------------------------------------------

#[tokio::test]
async fn flutterwave_makes_a_payment_link_named_by_tx_ref_and_verifies_it() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v3/payments"))
        .and(wiremock::matchers::header(
            "authorization",
            "Bearer FLWSECK_TEST-x",
        ))
        .respond_with(fixture("flutterwave/payment-link.json"))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v3/transactions/verify_by_reference"))
        .and(query_param("tx_ref", "ADM-0042-T1"))
        .respond_with(fixture("flutterwave/verify-successful.json"))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v3/transactions/verify_by_reference"))
        .and(query_param("tx_ref", "nope"))
        .respond_with(fixture("flutterwave/verify-not-found.json"))
        .mount(&server)
        .await;
    let c = build(
        "flutterwave",
        &json!({"redirect_url": "https://school.example/paid", "base_url": server.uri()}),
        credentials(&[("token", "FLWSECK_TEST-x")]),
        Vault::default(),
    );
    let answer = c
        .operate(
            "charge",
            &json!({"tx_ref": "ADM-0042-T1", "amount": 1500, "email": "parent@example.com",
                    "phone": "254712345678", "name": "Jane Parent"}),
            Some("k"),
        )
        .await
        .unwrap();
    // The caller names the payment: its tx_ref is the reference.
    assert_eq!(answer.reference.as_deref(), Some("ADM-0042-T1"));
    let requests = server.received_requests().await.unwrap();
    assert_eq!(
        json_body(&requests[0]),
        json!({"tx_ref": "ADM-0042-T1", "amount": 1500, "currency": "KES",
               "redirect_url": "https://school.example/paid",
               "customer": {"email": "parent@example.com", "phonenumber": "254712345678", "name": "Jane Parent"},
               "customizations": {"title": "Payment"}})
    );
    let verified = c
        .operate("verify", &json!({"reference": "ADM-0042-T1"}), None)
        .await
        .unwrap();
    assert!(verified.outcome.unwrap().succeeded);
    let err = c
        .operate("verify", &json!({"reference": "nope"}), None)
        .await
        .unwrap_err();
    assert_eq!(err.class, ErrorClass::Permanent);
    assert!(
        err.message.contains("No transaction was found"),
        "{}",
        err.message
    );
    // Its webhook names the payment by tx_ref and is verified, not trusted.
    let settle = c.operation("charge").unwrap().settle.clone().unwrap();
    let hook: Value =
        serde_json::from_str::<Value>(&read("flutterwave/webhook-charge-completed.json")).unwrap()
            ["body"]
            .clone();
    assert_eq!(
        hook.pointer(&settle.callback.as_ref().unwrap().reference_pointer),
        Some(&json!("ADM-0042-T1"))
    );
    assert!(settle.callback.as_ref().unwrap().result.is_none());
}

// Africa's Talking SMS and WhatsApp Cloud API ---------------------------------------------

#[tokio::test]
async fn africastalking_sends_a_form_with_its_api_key_and_reads_each_recipients_status() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/version1/messaging"))
        .and(wiremock::matchers::header("apikey", "atsk_x"))
        .and(wiremock::matchers::body_string_contains(
            "to=%2B254711XXXYYY",
        ))
        .respond_with(fixture("africastalking/sms-sent.json"))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/version1/messaging"))
        .and(wiremock::matchers::body_string_contains("to=%2B2547&"))
        .respond_with(fixture("africastalking/sms-invalid-number.json"))
        .mount(&server)
        .await;
    let c = build(
        "africastalking",
        &json!({"username": "sandbox", "base_url": server.uri()}),
        credentials(&[("api_key", "atsk_x")]),
        Vault::default(),
    );
    let sent = c
        .operate(
            "send",
            &json!({"to": "+254711XXXYYY", "text": "Fees of KES 1,500 are due"}),
            Some("k"),
        )
        .await
        .unwrap();
    assert_eq!(sent.reference.as_deref(), Some("ATPid_SampleTxnId123"));
    assert!(sent.outcome.unwrap().succeeded, "101 Sent: accepted");
    let requests = server.received_requests().await.unwrap();
    assert_eq!(
        requests[0].headers["content-type"],
        "application/x-www-form-urlencoded"
    );
    let form = form_body(&requests[0]);
    assert_eq!(form["username"], "sandbox");
    assert_eq!(form["message"], "Fees of KES 1,500 are due");
    assert!(!form.contains_key("from"), "no sender id: the default");
    // A recipient refused inside the 201.
    let refused = c
        .operate("send", &json!({"to": "+2547", "text": "x"}), Some("k2"))
        .await
        .unwrap();
    let o = refused.outcome.unwrap();
    assert!(!o.succeeded);
    assert_eq!(
        (o.code.as_str(), o.message.as_deref()),
        ("403", Some("InvalidPhoneNumber"))
    );
    // Its delivery report (a form) settles the message.
    let settle = c.operation("send").unwrap().settle.clone().unwrap();
    let report: Value = serde_json::from_str(&read("africastalking/delivery-report.json")).unwrap();
    let fields: serde_json::Map<String, Value> =
        url::form_urlencoded::parse(report["form"].as_str().unwrap().as_bytes())
            .map(|(k, v)| (k.into_owned(), Value::String(v.into_owned())))
            .collect();
    let fields = Value::Object(fields);
    assert_eq!(
        fields.pointer(&settle.callback.as_ref().unwrap().reference_pointer),
        Some(&json!("ATPid_SampleTxnId123"))
    );
    assert!(
        settle
            .callback
            .as_ref()
            .unwrap()
            .result
            .as_ref()
            .unwrap()
            .read(&fields)
            .unwrap()
            .succeeded
    );
    assert_eq!(settle.expire_after_secs, Some(600));
}

#[tokio::test]
async fn whatsapp_sends_text_and_template_messages_and_reads_meta_errors() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v21.0/106540352242922/messages"))
        .and(wiremock::matchers::header("authorization", "Bearer EAAG-x"))
        .and(wiremock::matchers::body_partial_json(
            json!({"to": "254712345678"}),
        ))
        .respond_with(fixture("whatsapp/message-accepted.json"))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/v21.0/106540352242922/messages"))
        .and(wiremock::matchers::body_partial_json(
            json!({"to": "254700000000"}),
        ))
        .respond_with(fixture("whatsapp/not-on-whatsapp.json"))
        .mount(&server)
        .await;
    let c = build(
        "whatsapp-cloud",
        &json!({"phone_number_id": "106540352242922", "base_url": server.uri()}),
        credentials(&[("token", "EAAG-x")]),
        Vault::default(),
    );
    let sent = c
        .operate(
            "send",
            &json!({"to": "254712345678", "text": "Fees are due"}),
            Some("k"),
        )
        .await
        .unwrap();
    assert_eq!(
        sent.reference.as_deref(),
        Some("wamid.HBgMMjU0NzEyMzQ1Njc4FQIAERgSQzVGNzc2QjM0RDA4QjA3NjM1AA==")
    );
    c.operate(
        "send_template",
        &json!({"to": "254712345678", "template": "fee_reminder",
                "components": [{"parameters": [{"type": "text", "text": "KES 1,500"}]}]}),
        Some("k2"),
    )
    .await
    .unwrap();
    let requests = server.received_requests().await.unwrap();
    assert_eq!(
        json_body(&requests[0]),
        json!({"messaging_product": "whatsapp", "recipient_type": "individual", "to": "254712345678",
               "type": "text", "text": {"preview_url": false, "body": "Fees are due"}})
    );
    assert_eq!(
        json_body(&requests[1]),
        json!({"messaging_product": "whatsapp", "recipient_type": "individual", "to": "254712345678",
               "type": "template",
               "template": {"name": "fee_reminder", "language": {"code": "en"},
                            "components": [{"type": "body", "parameters": [{"type": "text", "text": "KES 1,500"}]}]}})
    );
    let err = c
        .operate(
            "send",
            &json!({"to": "254700000000", "text": "x"}),
            Some("k3"),
        )
        .await
        .unwrap_err();
    assert_eq!(err.class, ErrorClass::Permanent);
    assert!(
        err.message.contains("Message undeliverable"),
        "{}",
        err.message
    );
    // A delivered status settles it.
    let settle = c.operation("send").unwrap().settle.clone().unwrap();
    let status: Value = serde_json::from_str::<Value>(&read("whatsapp/status-delivered.json"))
        .unwrap()["body"]
        .clone();
    assert_eq!(
        status
            .pointer(&settle.callback.as_ref().unwrap().reference_pointer)
            .and_then(Value::as_str),
        sent.reference.as_deref()
    );
    assert!(
        settle
            .callback
            .as_ref()
            .unwrap()
            .result
            .as_ref()
            .unwrap()
            .read(&status)
            .unwrap()
            .succeeded
    );
}

// Payme -----------------------------------------------------------------------------------

#[tokio::test]
async fn payme_makes_a_checkout_link_without_calling_anything() {
    // Nothing listens here: a call would fail.
    let c = build(
        "payme",
        &json!({"merchant_id": "5e730e8e0b852a417aa49ceb", "checkout_url": "http://127.0.0.1:9"}),
        credentials(&[]),
        Vault::default(),
    );
    let a = c
        .operate(
            "charge",
            &json!({"order_id": "ADM-0042", "amount": 150000}),
            Some("k"),
        )
        .await
        .unwrap();
    // https://checkout.paycom.uz/<base64("m=…;ac.order_id=…;a=…")> (developer.help.paycom.uz,
    // payment initialisation by GET).
    assert_eq!(
        a.body["url"],
        "http://127.0.0.1:9/bT01ZTczMGU4ZTBiODUyYTQxN2FhNDljZWI7YWMub3JkZXJfaWQ9QURNLTAwNDI7YT0xNTAwMDA="
    );
    assert_eq!(a.reference.as_deref(), Some("ADM-0042"));
}

#[tokio::test]
async fn flutterwave_refunds_and_africastalking_answers_its_balance() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v3/transactions/288200108/refund"))
        .and(wiremock::matchers::body_json(json!({"amount": 500})))
        .respond_with(fixture("flutterwave/refund-initiated.json"))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/version1/user"))
        .and(query_param("username", "sandbox"))
        .and(wiremock::matchers::header("apikey", "atsk_x"))
        .respond_with(fixture("africastalking/user-data.json"))
        .mount(&server)
        .await;
    let flw = build(
        "flutterwave",
        &json!({"redirect_url": "https://school.example/paid", "base_url": server.uri()}),
        credentials(&[("token", "FLWSECK_TEST-x")]),
        Vault::default(),
    );
    assert!(
        !flw.operation("refund").unwrap().safe,
        "a refund needs an Idempotency-Key"
    );
    let refund = flw
        .operate(
            "refund",
            &json!({"transaction_id": 288200108, "amount": 500}),
            Some("r-1"),
        )
        .await
        .unwrap();
    let o = refund.outcome.unwrap();
    assert!(o.succeeded);
    assert_eq!(o.message.as_deref(), Some("Transaction refund initiated"));
    assert_eq!(refund.body["data"]["amount_refunded"], 500);
    let at = build(
        "africastalking",
        &json!({"username": "sandbox", "base_url": server.uri()}),
        credentials(&[("api_key", "atsk_x")]),
        Vault::default(),
    );
    let balance = at.operate("balance", &json!({}), None).await.unwrap();
    assert_eq!(balance.body["UserData"]["balance"], "KES 1785.50");
}
