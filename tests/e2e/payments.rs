//! Payments end to end: an M-Pesa STK push run as an operation (the caller gets the
//! `CheckoutRequestID` at once), settled by M-Pesa's callback or, when none comes, by the STK
//! push query, and the settled payment delivered through routes to the school's ERP.
//!
//! The Daraja mock answers with the providers crate's contract-test fixtures
//! (`crates/providers/tests/fixtures/mpesa-daraja/`, each citing developer.safaricom.co.ke).
use reqwest::Method;
use serde_json::{Value, json};
use std::time::Duration;
use uuid::Uuid;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

use crate::support::{ADMIN_TOKEN, Harness, call, eventually};

const WAIT: Duration = Duration::from_secs(20);

fn daraja(name: &str) -> ResponseTemplate {
    let file = format!(
        "{}/../crates/providers/tests/fixtures/mpesa-daraja/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    let f: Value = serde_json::from_str(&std::fs::read_to_string(&file).expect(&file)).unwrap();
    ResponseTemplate::new(f["status"].as_u64().unwrap() as u16).set_body_json(f["body"].clone())
}

fn fixture_body(name: &str) -> Value {
    let file = format!(
        "{}/../crates/providers/tests/fixtures/mpesa-daraja/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str::<Value>(&std::fs::read_to_string(&file).expect(&file)).unwrap()["body"]
        .clone()
}

struct School {
    mpesa: Uuid,
    key: String,
    erp: Uuid,
    daraja: MockServer,
}

/// acme's M-Pesa integration (the Daraja mock, callbacks authenticated by a key in the URL)
/// routed to its ERP: every settled payment becomes a `payment` record there.
async fn school(h: &Harness, query_after_secs: &str) -> School {
    let daraja = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/oauth/v1/generate"))
        .respond_with(self::daraja("token.json"))
        .mount(&daraja)
        .await;
    let credentials = |callback_url: &str| {
        json!({"client_id": "ck", "client_secret": "cs",
               "passkey": "bfb279f9aa9bdbcf158e97dd71a467cd2e0c893059b10f78e6b72ada1ed2c919",
               "callback_url": callback_url})
    };
    let (mpesa, key) = connected(
        h,
        json!({
            "tenant": "acme", "name": "mpesa", "connector": "mpesa-daraja",
            "settings": {"business_short_code": "174379", "party_b": "174379",
                         "base_url": daraja.uri(), "query_after_secs": query_after_secs},
            "credentials": credentials("https://hub.example/later"),
            "webhook_auth": {"scheme": "query_key"}
        }),
    )
    .await;
    // The callback URL names the integration and carries its key: a credential, sealed.
    let (st, r) = call(
        h,
        Method::PATCH,
        &format!("/v1/integrations/{mpesa}"),
        ADMIN_TOKEN,
        Some(
            json!({"credentials": credentials(&h.url(&format!("/v1/webhooks/{mpesa}?key={key}")))}),
        ),
    )
    .await;
    assert_eq!(st, 200, "{r}");
    assert!(!r.to_string().contains(&key), "the key is not shown: {r}");
    let erp = erp_for(
        h,
        mpesa,
        json!({"reference": "/operation/input/account_reference",
               "amount": "/operation/input/amount",
               "status": "/status", "code": "/code",
               "checkout": "/operation/reference"}),
    )
    .await;
    School {
        mpesa,
        key,
        erp,
        daraja,
    }
}

async fn charge(h: &Harness, mpesa: Uuid, key: Option<&str>, input: Value) -> reqwest::Response {
    let mut rb = h
        .http
        .post(h.url(&format!("/v1/integrations/{mpesa}/operations/charge")))
        .bearer_auth(ADMIN_TOKEN)
        .json(&input);
    if let Some(k) = key {
        rb = rb.header("idempotency-key", k);
    }
    rb.send().await.unwrap()
}

/// Daraja accepts STK pushes (`times`: how many it expects, if it checks).
async fn pushes_accepted(s: &School, times: Option<u64>) {
    let mut m = Mock::given(method("POST"))
        .and(path("/mpesa/stkpush/v1/processrequest"))
        .respond_with(daraja("stk-push-accepted.json"));
    if let Some(n) = times {
        m = m.expect(n);
    }
    m.mount(&s.daraja).await;
}

/// A Daraja mock that expects exactly `times` STK pushes.
async fn pushes_accepted_at(server: &MockServer, times: u64) {
    Mock::given(method("POST"))
        .and(path("/mpesa/stkpush/v1/processrequest"))
        .respond_with(daraja("stk-push-accepted.json"))
        .expect(times)
        .mount(server)
        .await;
}

/// The ERP takes payments.
async fn erp_takes_payments(h: &Harness) {
    Mock::given(method("POST"))
        .and(path("/api/payments"))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({"id": "pay-1"})))
        .mount(&h.provider)
        .await;
}

/// M-Pesa's callback to the integration's callback URL: its status and answer.
async fn callback(h: &Harness, s: &School, body: &Value) -> (u16, Value) {
    let url = h.url(&format!("/v1/webhooks/{}?key={}", s.mpesa, s.key));
    let r = h.http.post(url).json(body).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

fn fees() -> Value {
    json!({"phone": "254708374149", "amount": 1500, "account_reference": "ADM-0042"})
}

async fn erp_payments(h: &Harness) -> Vec<Value> {
    h.provider
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .filter(|r: &&Request| r.url.path() == "/api/payments")
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .collect()
}

#[tokio::test]
async fn an_stk_push_answers_at_once_and_its_callback_settles_it_and_reaches_the_erp() {
    let h = Harness::start().await;
    let s = school(&h, "60").await;
    pushes_accepted(&s, Some(1)).await;
    erp_takes_payments(&h).await;

    // A charge may cost money: it needs an Idempotency-Key.
    let r = charge(&h, s.mpesa, None, fees()).await;
    assert_eq!(r.status(), 400);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["code"], "idempotency_key_required", "{e}");

    let r = charge(&h, s.mpesa, Some("adm-0042-term-1"), fees()).await;
    assert_eq!(r.status(), 202, "pending: the result comes later");
    let first: Value = r.json().await.unwrap();
    assert_eq!(first["status"], "pending", "{first}");
    assert_eq!(first["reference"], "ws_CO_191220191020363925");
    assert_eq!(
        first["answer"]["CustomerMessage"],
        "Success. Request accepted for processing"
    );
    let call_id: Uuid = first["id"].as_str().unwrap().parse().unwrap();

    // The same key again: the same call, no second push.
    let r = charge(&h, s.mpesa, Some("adm-0042-term-1"), fees()).await;
    assert_eq!(r.status(), 202);
    assert_eq!(r.headers()["idempotent-replayed"], "true");
    let again: Value = r.json().await.unwrap();
    assert_eq!(again["id"], first["id"]);
    // The same key with another amount is refused.
    let mut more = fees();
    more["amount"] = json!(15000);
    let r = charge(&h, s.mpesa, Some("adm-0042-term-1"), more).await;
    assert_eq!(r.status(), 422);

    // The call is a job with its attempt.
    let job = h.store.job(call_id).await.unwrap();
    assert_eq!((job.status.as_str(), job.attempts), ("succeeded", 1));
    let attempts = h.store.job_attempts(call_id).await.unwrap();
    assert!(
        attempts[0]
            .request
            .as_deref()
            .unwrap_or_default()
            .contains("/mpesa/stkpush/v1/processrequest")
    );

    // Operators see it pending.
    let (st, pending) = call(
        &h,
        Method::GET,
        &format!("/v1/integrations/{}/operations?status=pending", s.mpesa),
        ADMIN_TOKEN,
        None,
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(pending["calls"].as_array().unwrap().len(), 1, "{pending}");

    // M-Pesa's callback: without the URL's key, or with another, it is refused.
    let paid = fixture_body("stk-callback-paid.json");
    for url in [
        format!("/v1/webhooks/{}", s.mpesa),
        format!("/v1/webhooks/{}?key=sy_not_it", s.mpesa),
    ] {
        let r = h.http.post(h.url(&url)).json(&paid).send().await.unwrap();
        assert_eq!(r.status(), 401, "{url}");
    }
    assert_eq!(erp_payments(&h).await.len(), 0);
    let (st, accepted) = callback(&h, &s, &paid).await;
    assert_eq!(st, 202);
    assert_eq!(accepted["duplicate"], false, "{accepted}");
    let job: Uuid = accepted["jobs"][0].as_str().unwrap().parse().unwrap();
    h.wait_status(job, "succeeded", WAIT).await;
    let sent = erp_payments(&h).await;
    assert_eq!(sent.len(), 1);
    assert_eq!(
        sent[0],
        json!({"reference": "ADM-0042", "amount": 1500, "status": "succeeded", "code": "0",
               "checkout": "ws_CO_191220191020363925"})
    );
    let settled = h.store.call(call_id).await.unwrap();
    assert_eq!(settled.status, "succeeded");
    assert_eq!(settled.settled_by.as_deref(), Some("callback"));
    assert_eq!(
        settled.result.as_ref().unwrap()["Body"]["stkCallback"]["CallbackMetadata"]["Item"][1]["Value"],
        "NLJ7RT61SV"
    );

    // M-Pesa repeats the callback: nothing new happens.
    let (st, repeated) = callback(&h, &s, &paid).await;
    assert_eq!(st, 202);
    assert_eq!(repeated["duplicate"], true, "{repeated}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(erp_payments(&h).await.len(), 1);
    // The dashboard shows the integration's calls, and never its key.
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let r = http
        .post(h.url("/ui/login"))
        .form(&[("token", ADMIN_TOKEN)])
        .send()
        .await
        .unwrap();
    let cookie = r.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let page = http
        .get(h.url(&format!("/ui/integrations/{}", s.mpesa)))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        page.contains("Operation calls") && page.contains("ws_CO_191220191020363925"),
        "{page}"
    );
    assert!(!page.contains(&s.key), "the webhook key is never rendered");
    // A callback for a reference no call has is refused, and says so.
    let mut stranger = paid.clone();
    stranger["Body"]["stkCallback"]["CheckoutRequestID"] = json!("ws_CO_000");
    assert_eq!(callback(&h, &s, &stranger).await.0, 404);
    h.shutdown().await;
}

#[tokio::test]
async fn a_cancelled_push_is_delivered_as_a_failed_payment() {
    let h = Harness::start().await;
    let s = school(&h, "60").await;
    pushes_accepted(&s, None).await;
    erp_takes_payments(&h).await;
    // From the CLI this time.
    let mpesa = s.mpesa.to_string();
    let (ok, out, err) = h
        .cli(&[
            "integrations",
            "operate",
            &mpesa,
            "charge",
            "--input",
            &fees().to_string(),
        ])
        .await;
    assert!(!ok, "an unsafe operation without a key is refused: {out}");
    assert!(err.contains("Idempotency-Key"), "{err}");
    let (ok, out, err) = h
        .cli(&[
            "integrations",
            "operate",
            &mpesa,
            "charge",
            "--input",
            &fees().to_string(),
            "--idempotency-key",
            "k-1",
        ])
        .await;
    assert!(ok, "{err}");
    assert!(
        out.contains("ws_CO_191220191020363925") && out.contains("pending"),
        "{out}"
    );
    let (ok, out, err) = h
        .cli(&["integrations", "operations", &mpesa, "--status", "pending"])
        .await;
    assert!(ok && out.contains("ws_CO_191220191020363925"), "{out}{err}");
    let (st, accepted) = callback(&h, &s, &fixture_body("stk-callback-cancelled.json")).await;
    assert_eq!(st, 202);
    let job: Uuid = accepted["jobs"][0].as_str().unwrap().parse().unwrap();
    h.wait_status(job, "succeeded", WAIT).await;
    let sent = erp_payments(&h).await;
    assert_eq!(sent[0]["status"], "failed");
    assert_eq!(sent[0]["code"], "1032");
    let (_, calls) = call(
        &h,
        Method::GET,
        &format!("/v1/integrations/{}/operations", s.mpesa),
        ADMIN_TOKEN,
        None,
    )
    .await;
    assert_eq!(calls["calls"][0]["status"], "failed");
    assert_eq!(
        calls["calls"][0]["result_message"],
        "Request cancelled by user"
    );
    let _ = s.erp;
    h.shutdown().await;
}

#[tokio::test]
async fn a_lost_callback_is_settled_by_the_query_after_the_deadline() {
    let h = Harness::start().await;
    // Ask one second after the push when no callback came.
    let s = school(&h, "1").await;
    pushes_accepted(&s, Some(1)).await;
    // The customer has not answered at the first query; the second finds it paid.
    Mock::given(method("POST"))
        .and(path("/mpesa/stkpushquery/v1/query"))
        .respond_with(daraja("stk-query-processing.json"))
        .up_to_n_times(1)
        .mount(&s.daraja)
        .await;
    Mock::given(method("POST"))
        .and(path("/mpesa/stkpushquery/v1/query"))
        .respond_with(daraja("stk-query-paid.json"))
        .mount(&s.daraja)
        .await;
    erp_takes_payments(&h).await;
    let r = charge(&h, s.mpesa, Some("adm-0042-term-1"), fees()).await;
    assert_eq!(r.status(), 202);
    let first: Value = r.json().await.unwrap();
    let call_id: Uuid = first["id"].as_str().unwrap().parse().unwrap();

    // What the leading scheduler runs every tick.
    let calls = h.calls();
    // Nothing is asked before its time.
    assert_eq!(calls.settle_due(10).await.unwrap(), 0);
    eventually("the query settles the call", WAIT, || async {
        calls.settle_due(10).await.unwrap();
        h.store.call(call_id).await.unwrap().status != "pending"
    })
    .await;
    let settled = h.store.call(call_id).await.unwrap();
    assert_eq!(settled.status, "succeeded");
    assert_eq!(settled.settled_by.as_deref(), Some("query"));
    assert_eq!(settled.queries, 2, "asked once too early, then again");
    eventually("the ERP has the payment", WAIT, || async {
        erp_payments(&h).await.len() == 1
    })
    .await;
    assert_eq!(erp_payments(&h).await[0]["status"], "succeeded");
    // The callback, late, changes nothing.
    let (_, late) = callback(&h, &s, &fixture_body("stk-callback-paid.json")).await;
    assert_eq!(late["duplicate"], true, "{late}");
    h.shutdown().await;
}

/// A connector integration created over the API as an operator would, tested and
/// activated: its id and generated webhook key.
async fn connected(h: &Harness, body: Value) -> (Uuid, String) {
    let (id, created) = connected_as(h, body).await;
    let key = created["webhook_api_key"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    (id, key)
}

/// [`connected`], with the whole answer to the create.
async fn connected_as(h: &Harness, body: Value) -> (Uuid, Value) {
    crate::support::create_active(h, body).await
}

/// A payment provider's integration whose payments go to the ERP, and an order of it
/// (`charge`): the call, pending.
async fn order_at(h: &Harness, body: Value, input: Value) -> (Uuid, Value, Value) {
    let (id, created) = connected_as(h, body).await;
    erp_for(
        h,
        id,
        json!({"reference": "/operation/reference", "status": "/status"}),
    )
    .await;
    erp_takes_payments(h).await;
    let r = h
        .http
        .post(h.url(&format!("/v1/integrations/{id}/operations/charge")))
        .bearer_auth(ADMIN_TOKEN)
        .header("idempotency-key", "adm-0042")
        .json(&input)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    (id, created, r.json().await.unwrap())
}

/// An ERP taking `payment` events from `source`, made into its payments by `body`.
async fn erp_for(h: &Harness, source: Uuid, body: Value) -> Uuid {
    let erp = h
        .integration(
            "erp",
            "rest",
            json!({"base_url": h.provider.uri(), "auth": {"type": "bearer"}, "timeout_ms": 2000,
                   "entities": {"payment": {
                       "create": {"method": "POST", "path": "/api/payments"},
                       "update": {"method": "PUT", "path": "/api/payments/{external_id}"},
                       "body": body}}}),
            json!({}),
            Some(json!({"token": "erp-token"})),
        )
        .await;
    h.route_with(source, "payment", &[erp], json!({}), Default::default())
        .await;
    erp
}

fn fixture_of(vendor: &str, name: &str) -> (u16, Value) {
    let file = format!(
        "{}/../crates/providers/tests/fixtures/{vendor}/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    let f: Value = serde_json::from_str(&std::fs::read_to_string(&file).expect(&file)).unwrap();
    (f["status"].as_u64().unwrap() as u16, f["body"].clone())
}

fn answer(vendor: &str, name: &str) -> ResponseTemplate {
    let (status, body) = fixture_of(vendor, name);
    ResponseTemplate::new(status).set_body_json(body)
}

#[tokio::test]
async fn pesapals_get_ipn_is_acknowledged_as_documented_and_settled_by_the_status_it_asks() {
    let h = Harness::start().await;
    let pesapal = MockServer::start().await;
    for (m, p, f) in [
        ("POST", "/api/Auth/RequestToken", "token.json"),
        (
            "POST",
            "/api/Transactions/SubmitOrderRequest",
            "order-submitted.json",
        ),
        (
            "GET",
            "/api/Transactions/GetTransactionStatus",
            "status-completed.json",
        ),
    ] {
        Mock::given(method(m))
            .and(path(p))
            .respond_with(answer("pesapal", f))
            .mount(&pesapal)
            .await;
    }
    Mock::given(method("GET"))
        .and(path("/api/URLSetup/GetIpnList"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!([])))
        .mount(&pesapal)
        .await;
    let (id, key) = connected(
        &h,
        json!({"tenant": "acme", "name": "pesapal", "connector": "pesapal",
               "settings": {"callback_url": "https://school.example/paid", "base_url": pesapal.uri(),
                            "ipn_id": "e32182ca-0983-4fa0-91bc-c3bb813ba750"},
               "credentials": {"consumer_key": "ck", "consumer_secret": "cs",
                               "ipn_url": "https://hub.example/ipn"},
               "webhook_auth": {"scheme": "query_key"}}),
    )
    .await;
    erp_for(
        &h,
        id,
        json!({"reference": "/operation/reference", "status": "/status"}),
    )
    .await;
    erp_takes_payments(&h).await;
    let r = h
        .http
        .post(h.url(&format!("/v1/integrations/{id}/operations/charge")))
        .bearer_auth(ADMIN_TOKEN)
        .header("idempotency-key", "adm-0042")
        .json(&json!({"id": "ADM-0042", "amount": 1500, "description": "Term 1 fees", "email": "p@example.com"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let charged: Value = r.json().await.unwrap();
    assert!(charged["answer"]["redirect_url"].is_string(), "{charged}");
    let call_id: Uuid = charged["id"].as_str().unwrap().parse().unwrap();

    // Pesapal's IPN: a GET whose query names the order; the reply is Pesapal's documented
    // acknowledgement.
    let ipn = |key: &str| {
        h.url(&format!(
            "/v1/webhooks/{id}?key={key}&OrderTrackingId=b945e4af-80a5-4ec1-8706-e03f8332fb04&OrderNotificationType=IPNCHANGE&OrderMerchantReference=ADM-0042"
        ))
    };
    assert_eq!(
        h.http.get(ipn("sy_wrong")).send().await.unwrap().status(),
        401
    );
    let r = h.http.get(ipn(&key)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let ack: Value = r.json().await.unwrap();
    assert_eq!(
        ack,
        json!({"orderNotificationType": "IPNCHANGE",
               "orderTrackingId": "b945e4af-80a5-4ec1-8706-e03f8332fb04",
               "orderMerchantReference": "ADM-0042", "status": 200})
    );
    // The IPN carries no status: the hub asks at once (the scheduler's next tick).
    let calls = h.calls();
    assert_eq!(calls.settle_due(10).await.unwrap(), 1);
    let settled = h.store.call(call_id).await.unwrap();
    assert_eq!(
        (settled.status.as_str(), settled.settled_by.as_deref()),
        ("succeeded", Some("query"))
    );
    assert_eq!(settled.result_message.as_deref(), Some("Completed"));
    eventually("the ERP has the payment", WAIT, || async {
        erp_payments(&h).await.len() == 1
    })
    .await;
    // Pesapal retries its IPN: the same acknowledgement, nothing new.
    let r = h.http.get(ipn(&key)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap(), ack);
    assert_eq!(calls.settle_due(10).await.unwrap(), 0);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(erp_payments(&h).await.len(), 1);
    h.shutdown().await;
}

#[tokio::test]
async fn flutterwaves_webhook_is_authenticated_by_verif_hash_and_verified_before_it_settles() {
    let h = Harness::start().await;
    let flw = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/v3/payments"))
        .respond_with(answer("flutterwave", "payment-link.json"))
        .mount(&flw)
        .await;
    Mock::given(method("GET"))
        .and(path("/v3/transactions/verify_by_reference"))
        .respond_with(answer("flutterwave", "verify-successful.json"))
        .expect(1)
        .mount(&flw)
        .await;
    Mock::given(method("GET"))
        .and(path("/v3/balances"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"status": "success", "data": []})),
        )
        .mount(&flw)
        .await;
    let (id, hash) = connected(
        &h,
        json!({"tenant": "acme", "name": "flutterwave", "connector": "flutterwave",
               "settings": {"redirect_url": "https://school.example/paid", "base_url": flw.uri()},
               "credentials": {"token": "FLWSECK_TEST-x"},
               "webhook_auth": {"scheme": "api_key", "header": "verif-hash"}}),
    )
    .await;
    erp_for(
        &h,
        id,
        json!({"reference": "/operation/reference", "status": "/status"}),
    )
    .await;
    erp_takes_payments(&h).await;
    let r = h
        .http
        .post(h.url(&format!("/v1/integrations/{id}/operations/charge")))
        .bearer_auth(ADMIN_TOKEN)
        .header("idempotency-key", "adm-0042-t1")
        .json(&json!({"tx_ref": "ADM-0042-T1", "amount": 1500, "email": "parent@example.com"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let charged: Value = r.json().await.unwrap();
    assert_eq!(charged["reference"], "ADM-0042-T1");
    assert_eq!(
        charged["answer"]["data"]["link"],
        "https://checkout.flutterwave.com/v3/hosted/pay/f524c1196ffda5556341"
    );

    let (_, hook) = fixture_of("flutterwave", "webhook-charge-completed.json");
    let post = |hash: Option<&str>| {
        let mut rb = h
            .http
            .post(h.url(&format!("/v1/webhooks/{id}")))
            .json(&hook);
        if let Some(v) = hash {
            rb = rb.header("verif-hash", v);
        }
        rb.send()
    };
    assert_eq!(post(None).await.unwrap().status(), 401);
    assert_eq!(post(Some("not-the-hash")).await.unwrap().status(), 401);
    let r = post(Some(&hash)).await.unwrap();
    assert_eq!(r.status(), 202);
    let calls = h.calls();
    assert_eq!(calls.settle_due(10).await.unwrap(), 1, "verified at once");
    let settled = h
        .store
        .call(charged["id"].as_str().unwrap().parse().unwrap())
        .await
        .unwrap();
    assert_eq!(
        (settled.status.as_str(), settled.result_code.as_deref()),
        ("succeeded", Some("successful"))
    );
    eventually("the ERP has the payment", WAIT, || async {
        erp_payments(&h).await.len() == 1
    })
    .await;
    // Flutterwave sends it again: nothing new (the verification ran once).
    let r = post(Some(&hash)).await.unwrap();
    assert_eq!(r.status(), 202);
    let again: Value = r.json().await.unwrap();
    assert_eq!(again["duplicate"], true, "{again}");
    assert_eq!(calls.settle_due(10).await.unwrap(), 0);
    h.shutdown().await;
}

#[tokio::test]
async fn a_subscription_challenge_is_answered_only_with_the_verify_token() {
    let h = Harness::start().await;
    // Meta's WhatsApp Cloud API verifies a webhook URL with a GET before it posts to it
    // (developers.facebook.com/docs/graph-api/webhooks/getting-started: hub.mode=subscribe,
    // hub.verify_token, hub.challenge; answer the challenge).
    let (st, created) = call(
        &h,
        Method::POST,
        "/v1/integrations",
        ADMIN_TOKEN,
        Some(json!({"tenant": "acme", "name": "wa-statuses", "provider": "webhook",
                    "inbound": {"entity": {"value": "message"}, "event_id": {"pointer": "/entry/0/id"}},
                    "webhook_auth": {"scheme": "api_key", "verify_token": "meta-verify-7f3a"}})),
    )
    .await;
    assert_eq!(st, 201, "{created}");
    assert!(
        !created.to_string().contains("meta-verify-7f3a"),
        "the token is kept as a digest"
    );
    let id = created["id"].as_str().unwrap();
    let challenge = |token: &str| {
        h.http
            .get(h.url(&format!(
                "/v1/webhooks/{id}?hub.mode=subscribe&hub.verify_token={token}&hub.challenge=1158201444"
            )))
            .send()
    };
    let r = challenge("meta-verify-7f3a").await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    assert_eq!(r.text().await.unwrap(), "1158201444");
    assert_eq!(challenge("guess").await.unwrap().status(), 403);
    h.shutdown().await;
}

#[tokio::test]
async fn a_form_encoded_callback_is_read_as_its_fields_and_deduplicated() {
    let h = Harness::start().await;
    // Africa's Talking posts SMS delivery reports as a form: id, status, phoneNumber,
    // networkCode, failureReason, retryCount
    // (developers.africastalking.com/docs/sms/notifications: delivery reports).
    let source = h
        .integration(
            "at-reports",
            "webhook",
            json!({}),
            json!({"entity": {"value": "order"}, "event_id": {"pointer": "/id"},
                   "internal_id": {"pointer": "/id"}}),
            None,
        )
        .await;
    let erp = h.rest_target("erp", "orders", json!({})).await;
    h.route(source, &[erp]).await;
    Mock::given(method("POST"))
        .and(path("/api/orders"))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({"id": "r-1"})))
        .mount(&h.provider)
        .await;
    let form = "id=ATXid_dda2a6b6ce0a36d4d3a7d2f8e1a5b6f1&status=Success&phoneNumber=%2B254711XXXYYY&networkCode=63902&retryCount=0";
    let send = || {
        h.http
            .post(h.url(&format!("/v1/webhooks/{source}")))
            .header("x-api-key", crate::support::API_KEY)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form)
            .send()
    };
    let r = send().await.unwrap();
    assert_eq!(r.status(), 202);
    let first: Value = r.json().await.unwrap();
    let job: Uuid = first["jobs"][0].as_str().unwrap().parse().unwrap();
    h.wait_status(job, "succeeded", WAIT).await;
    let sent: Vec<Value> = h
        .provider
        .received_requests()
        .await
        .unwrap()
        .iter()
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .collect();
    assert_eq!(
        sent[0]["reference"],
        "ATXid_dda2a6b6ce0a36d4d3a7d2f8e1a5b6f1"
    );
    let r = send().await.unwrap();
    let again: Value = r.json().await.unwrap();
    assert_eq!(again["duplicate"], true, "{again}");
    // Another media type is still refused, with the ones accepted named.
    let r = h
        .http
        .post(h.url(&format!("/v1/webhooks/{source}")))
        .header("x-api-key", crate::support::API_KEY)
        .header("content-type", "text/plain")
        .body("id=1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    assert!(r.text().await.unwrap().contains("x-www-form-urlencoded"));
    h.shutdown().await;
}

#[tokio::test]
async fn an_open_breaker_keeps_a_charge_from_being_made_and_its_key_may_be_used_again() {
    let h = Harness::start().await;
    let daraja = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/oauth/v1/generate"))
        .respond_with(self::daraja("token.json"))
        .mount(&daraja)
        .await;
    // Daraja is failing: every query answers 500.
    Mock::given(method("POST"))
        .and(path("/mpesa/stkpushquery/v1/query"))
        .respond_with(ResponseTemplate::new(500).set_body_json(json!({
            "requestId": "1", "errorCode": "500.001.1001", "errorMessage": "The transaction is being processed"})))
        .mount(&daraja)
        .await;
    pushes_accepted_at(&daraja, 1).await;
    let (mpesa, _) = connected(
        &h,
        json!({"tenant": "acme", "name": "mpesa", "connector": "mpesa-daraja",
               "settings": {"business_short_code": "174379", "party_b": "174379",
                            "base_url": daraja.uri(),
                            "retry": {"max_attempts": 1},
                            "breaker": {"window": 2, "minimum_calls": 2, "failure_rate_pct": 50,
                                        "open_wait_ms": 3000, "half_open_probes": 1}},
               "credentials": {"client_id": "ck", "client_secret": "cs", "passkey": "pk",
                               "callback_url": "https://hub.example/cb"},
               "webhook_auth": {"scheme": "query_key"}}),
    )
    .await;
    for _ in 0..2 {
        let (st, q) = call(
            &h,
            Method::POST,
            &format!("/v1/integrations/{mpesa}/operations/query"),
            ADMIN_TOKEN,
            Some(json!({"reference": "ws_CO_1"})),
        )
        .await;
        assert_eq!((st, q["status"].as_str()), (200, Some("failed")), "{q}");
        assert_eq!(q["error_class"], "transient", "{q}");
    }
    // The breaker is open for longer than the caller waits: the charge is not made, and
    // the answer says when to come back.
    let r = h
        .http
        .post(h.url(&format!(
            "/v1/integrations/{mpesa}/operations/charge?timeout_secs=1"
        )))
        .bearer_auth(ADMIN_TOKEN)
        .header("idempotency-key", "adm-0042-t1")
        .json(&fees())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["code"], "provider_unavailable", "{e}");
    // The same key, once the breaker lets a call through, makes the charge (once); a caller
    // that waits long enough is held until then.
    eventually("the breaker lets the charge through", WAIT, || async {
        charge(&h, mpesa, Some("adm-0042-t1"), fees())
            .await
            .status()
            == 202
    })
    .await;
    let r = charge(&h, mpesa, Some("adm-0042-t1"), fees()).await;
    assert_eq!(r.status(), 202);
    assert_eq!(r.headers()["idempotent-replayed"], "true");
    h.shutdown().await;
}

/// A payment provider's checkout page (its connection test reads it).
async fn checkout() -> MockServer {
    let checkout = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&checkout)
        .await;
    checkout
}

/// acme's Payme integration whose payments go to the ERP, and its order ADM-0042 of
/// 150,000 tiyin: the checkout page, the integration, Payme's key and the order's call.
async fn payme_order(h: &Harness) -> (MockServer, Uuid, String, Value) {
    let checkout = checkout().await;
    let (id, created, order) = order_at(
        h,
        json!({"tenant": "acme", "name": "payme", "connector": "payme",
               "settings": {"merchant_id": "5e730e8e0b852a417aa49ceb", "checkout_url": checkout.uri()},
               "webhook_auth": {"scheme": "basic", "username": "Paycom"}}),
        json!({"order_id": "ADM-0042", "amount": 150000}),
    )
    .await;
    let key = created["webhook_password"].as_str().unwrap().to_owned();
    (checkout, id, key, order)
}

/// The Click service's SECRET_KEY in these tests.
const CLICK_SECRET: &str = "xXb8SKqjgZS6Ww";

/// acme's Click integration whose payments go to the ERP, and its order ADM-0042 of
/// 1,500.00 sums: the checkout page, the integration and the order's call.
async fn click_order(h: &Harness) -> (MockServer, Uuid, Value) {
    let checkout = checkout().await;
    let (id, _, order) = order_at(
        h,
        json!({"tenant": "acme", "name": "click", "connector": "click",
               "settings": {"service_id": "18400", "merchant_id": "11600", "checkout_url": checkout.uri()},
               "webhook_auth": {"scheme": "click"}, "webhook_secrets": [CLICK_SECRET]}),
        json!({"order_id": "ADM-0042", "amount": "1500.00"}),
    )
    .await;
    (checkout, id, order)
}

/// A JSON-RPC request from Payme's side, as its Merchant API documents them
/// (developer.help.paycom.uz/metody-merchant-api/): `{method, params, id}`, basic auth
/// `Paycom:<key>`.
async fn payme_rpc(h: &Harness, id: Uuid, key: &str, method: &str, params: Value) -> Value {
    let r = h
        .http
        .post(h.url(&format!("/v1/webhooks/{id}")))
        .basic_auth("Paycom", Some(key))
        .json(&json!({"method": method, "params": params, "id": 2032}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "Payme is always answered 200");
    r.json().await.unwrap()
}

#[tokio::test]
async fn paymes_merchant_api_is_answered_in_its_own_forms_and_perform_settles_the_order() {
    let h = Harness::start().await;
    // The school's order: a checkout link, nothing called.
    let (checkout, id, key, order) = payme_order(&h).await;
    // base64("m=5e730e8e0b852a417aa49ceb;ac.order_id=ADM-0042;a=150000")
    assert_eq!(
        order["answer"]["url"],
        format!(
            "{}/bT01ZTczMGU4ZTBiODUyYTQxN2FhNDljZWI7YWMub3JkZXJfaWQ9QURNLTAwNDI7YT0xNTAwMDA=",
            checkout.uri()
        )
    );
    let call_id = order["id"].as_str().unwrap().to_owned();

    // Another key is refused in Payme's form.
    let e = payme_rpc(
        &h,
        id,
        "not-the-key",
        "CheckTransaction",
        json!({"id": "x"}),
    )
    .await;
    assert_eq!(e["error"]["code"], -32504, "{e}");
    assert!(
        e["error"]["message"]["ru"].is_string()
            && e["error"]["message"]["uz"].is_string()
            && e["error"]["message"]["en"].is_string(),
        "{e}"
    );
    // Wrong amount, unknown order, unknown method.
    let account = json!({"order_id": "ADM-0042"});
    let e = payme_rpc(
        &h,
        id,
        &key,
        "CheckPerformTransaction",
        json!({"amount": 100, "account": account}),
    )
    .await;
    assert_eq!(
        (e["error"]["code"].as_i64(), e["id"].as_i64()),
        (Some(-31001), Some(2032)),
        "{e}"
    );
    let e = payme_rpc(
        &h,
        id,
        &key,
        "CheckPerformTransaction",
        json!({"amount": 150000, "account": {"order_id": "nope"}}),
    )
    .await;
    assert_eq!(
        (e["error"]["code"].as_i64(), e["error"]["data"].as_str()),
        (Some(-31050), Some("order_id")),
        "{e}"
    );
    let e = payme_rpc(&h, id, &key, "ChangePassword", json!({})).await;
    assert_eq!(e["error"]["code"], -32601, "{e}");
    // The documented flow.
    let ok = payme_rpc(
        &h,
        id,
        &key,
        "CheckPerformTransaction",
        json!({"amount": 150000, "account": account}),
    )
    .await;
    assert_eq!(ok, json!({"result": {"allow": true}, "id": 2032}));
    let tx = json!({"id": "5305e3bab097f420a62ced0b", "time": 1399114284039_i64, "amount": 150000, "account": account});
    let created = payme_rpc(&h, id, &key, "CreateTransaction", tx.clone()).await;
    assert_eq!(created["result"]["state"], 1, "{created}");
    assert_eq!(created["result"]["transaction"], call_id.as_str());
    assert!(created["result"]["create_time"].as_i64().unwrap() > 1_700_000_000_000);
    let again = payme_rpc(&h, id, &key, "CreateTransaction", tx.clone()).await;
    assert_eq!(
        again, created,
        "the same transaction again is the same answer"
    );
    let mut other = tx.clone();
    other["id"] = json!("6305e3bab097f420a62ced0c");
    let busy = payme_rpc(&h, id, &key, "CreateTransaction", other).await;
    assert!(
        (-31099..=-31050).contains(&busy["error"]["code"].as_i64().unwrap()),
        "{busy}"
    );
    let checked = payme_rpc(
        &h,
        id,
        &key,
        "CheckTransaction",
        json!({"id": "5305e3bab097f420a62ced0b"}),
    )
    .await;
    assert_eq!(checked["result"]["state"], 1);
    assert_eq!(checked["result"]["perform_time"], 0);
    assert_eq!(checked["result"]["reason"], Value::Null);

    let performed = payme_rpc(
        &h,
        id,
        &key,
        "PerformTransaction",
        json!({"id": "5305e3bab097f420a62ced0b"}),
    )
    .await;
    assert_eq!(performed["result"]["state"], 2, "{performed}");
    assert_eq!(performed["result"]["transaction"], call_id.as_str());
    let call = h.store.call(call_id.parse().unwrap()).await.unwrap();
    assert_eq!(call.status, "succeeded");
    eventually("the ERP has the payment", WAIT, || async {
        erp_payments(&h).await.len() == 1
    })
    .await;
    assert_eq!(
        erp_payments(&h).await[0],
        json!({"reference": "ADM-0042", "status": "succeeded"})
    );
    // Payme retries: the same answer, no second payment.
    let again = payme_rpc(
        &h,
        id,
        &key,
        "PerformTransaction",
        json!({"id": "5305e3bab097f420a62ced0b"}),
    )
    .await;
    assert_eq!(again, performed);
    let e = payme_rpc(
        &h,
        id,
        &key,
        "CheckPerformTransaction",
        json!({"amount": 150000, "account": account}),
    )
    .await;
    assert_eq!(e["error"]["code"], -31051, "paid: {e}");
    let e = payme_rpc(&h, id, &key, "PerformTransaction", json!({"id": "no-such"})).await;
    assert_eq!(e["error"]["code"], -31003, "{e}");

    // A refund after the payment: state -2, and the ERP's payment is updated.
    Mock::given(method("PUT"))
        .and(path("/api/payments/pay-1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"id": "pay-1"})))
        .expect(1)
        .mount(&h.provider)
        .await;
    let cancelled = payme_rpc(
        &h,
        id,
        &key,
        "CancelTransaction",
        json!({"id": "5305e3bab097f420a62ced0b", "reason": 5}),
    )
    .await;
    assert_eq!(cancelled["result"]["state"], -2, "{cancelled}");
    eventually("the ERP has the refund", WAIT, || async {
        h.provider
            .received_requests()
            .await
            .unwrap_or_default()
            .iter()
            .any(|r| {
                r.method.as_str() == "PUT"
                    && serde_json::from_slice::<Value>(&r.body)
                        .is_ok_and(|b| b["status"] == "refunded")
            })
    })
    .await;
    let statement = payme_rpc(
        &h,
        id,
        &key,
        "GetStatement",
        json!({"from": 1399114284000_i64, "to": 1399114285000_i64}),
    )
    .await;
    let txs = statement["result"]["transactions"].as_array().unwrap();
    assert_eq!(txs.len(), 1, "{statement}");
    assert_eq!(
        (txs[0]["state"].as_i64(), txs[0]["reason"].as_i64()),
        (Some(-2), Some(5))
    );
    // Not JSON: Payme's parse error.
    let r = h
        .http
        .post(h.url(&format!("/v1/webhooks/{id}")))
        .basic_auth("Paycom", Some(&key))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"]["code"], -32700, "{e}");
    h.shutdown().await;
}

/// A form as Click's SHOP API posts it (docs.click.uz/click-api-request), signed with
/// `secret` as Click signs it.
fn click_form(
    secret: &str,
    action: u8,
    amount: &str,
    prepare_id: Option<i64>,
    error: i64,
) -> String {
    use md5::Digest as _;
    let sign_time = "2019-10-18 14:12:45";
    let prepare = prepare_id.map(|p| p.to_string()).unwrap_or_default();
    let sign = hex::encode(md5::Md5::digest(format!(
        "2207357{}{secret}ADM-0042{prepare}{amount}{action}{sign_time}",
        18400
    )));
    let mut pairs = vec![
        ("click_trans_id", "2207357".to_owned()),
        ("service_id", "18400".to_owned()),
        ("click_paydoc_id", "1601".to_owned()),
        ("merchant_trans_id", "ADM-0042".to_owned()),
        ("amount", amount.to_owned()),
        ("action", action.to_string()),
        ("error", error.to_string()),
        (
            "error_note",
            if error == 0 {
                "Success"
            } else {
                "Insufficient funds"
            }
            .to_owned(),
        ),
        ("sign_time", sign_time.to_owned()),
        ("sign_string", sign),
    ];
    if let Some(p) = prepare_id {
        pairs.push(("merchant_prepare_id", p.to_string()));
    }
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish()
}

#[tokio::test]
async fn clicks_prepare_and_complete_are_answered_in_its_forms_and_complete_settles_the_order() {
    let h = Harness::start().await;
    let (checkout, id, order) = click_order(&h).await;
    let secret = CLICK_SECRET;
    assert_eq!(
        order["answer"]["url"],
        format!(
            "{}?service_id=18400&merchant_id=11600&amount=1500.00&transaction_param=ADM-0042&return_url=",
            checkout.uri()
        )
    );
    let post = |form: String| {
        h.http
            .post(h.url(&format!("/v1/webhooks/{id}")))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(form)
            .send()
    };
    let answer = |form: String| async move {
        let r = post(form).await.unwrap();
        assert_eq!(r.status(), 200, "Click is always answered 200");
        r.json::<Value>().await.unwrap()
    };
    // A forged signature, another amount, an unknown action: Click's codes.
    let e = answer(click_form("guess", 0, "1500.00", None, 0)).await;
    assert_eq!(
        (e["error"].as_i64(), e["error_note"].as_str()),
        (Some(-1), Some("SIGN CHECK FAILED!")),
        "{e}"
    );
    let e = answer(click_form(secret, 0, "15.00", None, 0)).await;
    assert_eq!(e["error"], -2, "{e}");
    let e = answer(click_form(secret, 7, "1500.00", None, 0)).await;
    assert_eq!(e["error"], -3, "{e}");
    // Prepare, then Complete.
    let prepared = answer(click_form(secret, 0, "1500.00", None, 0)).await;
    assert_eq!(prepared["error"], 0, "{prepared}");
    assert_eq!(prepared["error_note"], "Success");
    assert_eq!(
        (
            prepared["click_trans_id"].as_i64(),
            prepared["merchant_trans_id"].as_str()
        ),
        (Some(2207357), Some("ADM-0042"))
    );
    let prepare_id = prepared["merchant_prepare_id"]
        .as_i64()
        .expect("a prepare id");
    let e = answer(click_form(secret, 1, "1500.00", Some(prepare_id + 1), 0)).await;
    assert_eq!(e["error"], -6, "another prepare id: {e}");
    let done = answer(click_form(secret, 1, "1500.00", Some(prepare_id), 0)).await;
    assert_eq!(
        done,
        json!({"click_trans_id": 2207357, "merchant_trans_id": "ADM-0042",
               "merchant_confirm_id": prepare_id, "error": 0, "error_note": "Success"})
    );
    let call = h
        .store
        .call(order["id"].as_str().unwrap().parse().unwrap())
        .await
        .unwrap();
    assert_eq!(
        (call.status.as_str(), call.settled_by.as_deref()),
        ("succeeded", Some("callback"))
    );
    eventually("the ERP has the payment", WAIT, || async {
        erp_payments(&h).await.len() == 1
    })
    .await;
    // Click completes again: already paid, nothing new.
    let e = answer(click_form(secret, 1, "1500.00", Some(prepare_id), 0)).await;
    assert_eq!(e["error"], -4, "{e}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(erp_payments(&h).await.len(), 1);
    h.shutdown().await;
}

#[tokio::test]
async fn a_click_payment_that_fails_at_click_cancels_the_order_and_the_erp_hears_it() {
    let h = Harness::start().await;
    let (_checkout, id, order) = click_order(&h).await;
    let secret = CLICK_SECRET;
    let answer = |form: String| {
        let url = h.url(&format!("/v1/webhooks/{id}"));
        let http = h.http.clone();
        async move {
            http.post(url)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(form)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    let prepared = answer(click_form(secret, 0, "1500.00", None, 0)).await;
    let prepare_id = prepared["merchant_prepare_id"].as_i64().unwrap();
    // Click reports the payment failed (its own negative code) on Complete.
    let e = answer(click_form(secret, 1, "1500.00", Some(prepare_id), -5017)).await;
    assert_eq!(
        (e["error"].as_i64(), e["error_note"].as_str()),
        (Some(-9), Some("Transaction cancelled")),
        "{e}"
    );
    let call = h
        .store
        .call(order["id"].as_str().unwrap().parse().unwrap())
        .await
        .unwrap();
    assert_eq!(
        (call.status.as_str(), call.result_code.as_deref()),
        ("failed", Some("-5017"))
    );
    eventually("the ERP hears of the failed payment", WAIT, || async {
        erp_payments(&h).await.len() == 1
    })
    .await;
    assert_eq!(erp_payments(&h).await[0]["status"], "failed");
    // A new Prepare for the cancelled order: cancelled.
    let e = answer(click_form(secret, 0, "1500.00", None, 0)).await;
    assert_eq!(e["error"], -9, "{e}");
    h.shutdown().await;
}

#[tokio::test]
async fn a_payme_transaction_cancelled_before_it_is_performed_fails_the_order() {
    let h = Harness::start().await;
    let (_checkout, id, key, order) = payme_order(&h).await;
    let account = json!({"order_id": "ADM-0042"});
    let tx = json!({"id": "5305e3bab097f420a62ced0b", "time": 1399114284039_i64, "amount": 150000, "account": account});
    payme_rpc(&h, id, &key, "CreateTransaction", tx).await;
    let cancelled = payme_rpc(
        &h,
        id,
        &key,
        "CancelTransaction",
        json!({"id": "5305e3bab097f420a62ced0b", "reason": 3}),
    )
    .await;
    assert_eq!(cancelled["result"]["state"], -1, "{cancelled}");
    assert!(cancelled["result"]["cancel_time"].as_i64().unwrap() > 0);
    let again = payme_rpc(
        &h,
        id,
        &key,
        "CancelTransaction",
        json!({"id": "5305e3bab097f420a62ced0b", "reason": 3}),
    )
    .await;
    assert_eq!(again, cancelled, "a repeated cancel is the same answer");
    let e = payme_rpc(
        &h,
        id,
        &key,
        "PerformTransaction",
        json!({"id": "5305e3bab097f420a62ced0b"}),
    )
    .await;
    assert_eq!(e["error"]["code"], -31008, "{e}");
    let call = h
        .store
        .call(order["id"].as_str().unwrap().parse().unwrap())
        .await
        .unwrap();
    assert_eq!(call.status, "failed");
    eventually("the ERP hears of the failed payment", WAIT, || async {
        erp_payments(&h).await.len() == 1
    })
    .await;
    assert_eq!(erp_payments(&h).await[0]["status"], "failed");
    h.shutdown().await;
}
