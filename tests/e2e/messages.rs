//! Messages with fallback channels: a school's reminder goes out on WhatsApp, and on SMS
//! only when WhatsApp fails for good or reports no delivery in time; each channel's outcome
//! is recorded and each channel sends at most once.
//!
//! The mocks answer with the providers crate's fixtures (`whatsapp/`, citing
//! developers.facebook.com/docs/whatsapp/cloud-api; `africastalking/`, citing
//! developers.africastalking.com/docs/sms).
use hmac::{Hmac, Mac};
use reqwest::Method;
use serde_json::{Value, json};
use sha2::Sha256;
use std::time::Duration;
use uuid::Uuid;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use crate::support::{ADMIN_TOKEN, API_KEY, Harness, call, eventually};

const WAIT: Duration = Duration::from_secs(20);
const APP_SECRET: &str = "meta-app-secret-e2e";

fn answer(vendor: &str, name: &str) -> ResponseTemplate {
    let file = format!(
        "{}/../crates/providers/tests/fixtures/{vendor}/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    let f: Value = serde_json::from_str(&std::fs::read_to_string(&file).expect(&file)).unwrap();
    ResponseTemplate::new(f["status"].as_u64().unwrap() as u16).set_body_json(f["body"].clone())
}

fn fixture_text(vendor: &str, name: &str) -> Value {
    let file = format!(
        "{}/../crates/providers/tests/fixtures/{vendor}/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(&file).expect(&file)).unwrap()
}

struct Channels {
    school: Uuid,
    whatsapp: Uuid,
    whatsapp_api: MockServer,
    sms_key: String,
    sms: Uuid,
    sms_api: MockServer,
}

async fn create(h: &Harness, body: Value) -> Value {
    crate::support::create_active(h, body).await.1
}

/// WhatsApp's text message of the reminder.
fn text() -> Value {
    json!({"operation": "send", "input": {"to": "/guardian/whatsapp", "text": "/text"}})
}

/// The school's ERP sends reminders; they go out on WhatsApp, then SMS.
async fn channels(h: &Harness, whatsapp_within: &str, whatsapp_send: Value) -> Channels {
    let whatsapp_api = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/v21.0/106540352242922"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"id": "106540352242922"})))
        .mount(&whatsapp_api)
        .await;
    let sms_api = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/version1/user"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"UserData": {"balance": "KES 100.00"}})),
        )
        .mount(&sms_api)
        .await;
    let wa = create(
        h,
        json!({"tenant": "acme", "name": "whatsapp", "connector": "whatsapp-cloud",
               "settings": {"phone_number_id": "106540352242922", "base_url": whatsapp_api.uri(),
                            "deliver_within_secs": whatsapp_within},
               "credentials": {"token": "EAAG-x"},
               "webhook_auth": {"scheme": "github", "verify_token": "meta-verify-7f3a"},
               "webhook_secrets": [APP_SECRET]}),
    )
    .await;
    let sms = create(
        h,
        json!({"tenant": "acme", "name": "sms", "connector": "africastalking",
               "settings": {"username": "sandbox", "base_url": sms_api.uri()},
               "credentials": {"api_key": "atsk_x"},
               "webhook_auth": {"scheme": "query_key"}}),
    )
    .await;
    let school = h
        .integration(
            "school-erp",
            "webhook",
            json!({}),
            json!({"entity": {"value": "reminder"}, "event_id": {"pointer": "/id"},
                   "internal_id": {"pointer": "/id"}}),
            None,
        )
        .await;
    let whatsapp: Uuid = wa["id"].as_str().unwrap().parse().unwrap();
    let sms_id: Uuid = sms["id"].as_str().unwrap().parse().unwrap();
    let (st, route) = call(
        h,
        Method::POST,
        "/v1/channel-routes",
        ADMIN_TOKEN,
        Some(json!({"source": school.to_string(), "entity": "reminder", "channels": [
            {"integration_id": whatsapp, "operation": whatsapp_send["operation"], "input": whatsapp_send["input"]},
            {"integration_id": sms_id, "operation": "send",
             "input": {"to": "/guardian/phone", "text": "/text"}}
        ]})),
    )
    .await;
    assert_eq!(st, 201, "{route}");
    Channels {
        school,
        whatsapp,
        whatsapp_api,
        sms_key: sms["webhook_api_key"].as_str().unwrap().to_owned(),
        sms: sms_id,
        sms_api,
    }
}

async fn remind(h: &Harness, c: &Channels, id: &str) -> Value {
    let r = h
        .http
        .post(h.url(&format!("/v1/webhooks/{}", c.school)))
        .header("x-api-key", API_KEY)
        .json(
            &json!({"id": id, "text": "Term 1 fees of KES 1,500 are due on Friday",
                      "guardian": {"whatsapp": "254712345678", "phone": "+254711XXXYYY"}}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    r.json().await.unwrap()
}

async fn requests_to(server: &MockServer, p: &str) -> usize {
    server
        .received_requests()
        .await
        .unwrap_or_default()
        .iter()
        .filter(|r| r.url.path() == p && r.method.as_str() == "POST")
        .count()
}

/// Run what the leading scheduler runs each tick until `done`.
async fn ticks_until<F, Fut>(h: &Harness, what: &str, mut done: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let calls = h.calls();
    eventually(what, WAIT, || {
        let calls = calls.clone();
        let check = done();
        async move {
            calls.settle_due(10).await.unwrap();
            calls.advance_messages(10).await.unwrap();
            check.await
        }
    })
    .await;
}

async fn message(h: &Harness, id: &Value) -> Value {
    let (st, m) = call(
        h,
        Method::GET,
        &format!("/v1/messages/{}", id.as_str().unwrap()),
        ADMIN_TOKEN,
        None,
    )
    .await;
    assert_eq!(st, 200, "{m}");
    m
}

#[tokio::test]
async fn whatsapp_fails_for_good_so_the_sms_goes_once() {
    let h = Harness::start().await;
    let c = channels(&h, "300", text()).await;
    Mock::given(method("POST"))
        .and(path("/v21.0/106540352242922/messages"))
        .respond_with(answer("whatsapp", "not-on-whatsapp.json"))
        .mount(&c.whatsapp_api)
        .await;
    Mock::given(method("POST"))
        .and(path("/version1/messaging"))
        .respond_with(answer("africastalking", "sms-sent.json"))
        .mount(&c.sms_api)
        .await;
    let accepted = remind(&h, &c, "rem-1").await;
    let id = accepted["messages"][0].clone();
    assert!(id.is_string(), "{accepted}");
    ticks_until(&h, "the SMS is sent", || async {
        requests_to(&c.sms_api, "/version1/messaging").await == 1
    })
    .await;
    let m = message(&h, &id).await;
    assert_eq!(
        (m["status"].as_str(), m["channel"].as_i64()),
        (Some("sending"), Some(1)),
        "{m}"
    );
    assert_eq!(m["outcomes"][0]["status"], "failed");
    assert!(
        m["outcomes"][0]["error"]
            .as_str()
            .unwrap()
            .contains("Message undeliverable"),
        "{m}"
    );

    // Africa's Talking reports the SMS delivered (a form post to its callback URL).
    let report = fixture_text("africastalking", "delivery-report.json");
    let r = h
        .http
        .post(h.url(&format!("/v1/webhooks/{}?key={}", c.sms, c.sms_key)))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(report["form"].as_str().unwrap().to_owned())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    ticks_until(&h, "the message is delivered", || async {
        message(&h, &id).await["status"] == "delivered"
    })
    .await;
    let m = message(&h, &id).await;
    assert_eq!(m["outcomes"].as_array().unwrap().len(), 2, "{m}");
    assert_eq!(m["outcomes"][1]["status"], "succeeded");
    // Operators follow it from the CLI too.
    let (ok, out, err) = h.cli(&["messages", "show", id.as_str().unwrap()]).await;
    assert!(ok, "{err}");
    assert!(
        out.contains("delivered") && out.contains("Message undeliverable"),
        "{out}"
    );
    let (ok, out, err) = h.cli(&["messages", "list", "--status", "delivered"]).await;
    assert!(ok && out.contains("rem-1"), "{out}{err}");
    let (ok, out, err) = h.cli(&["messages", "routes"]).await;
    assert!(
        ok && out.contains("reminder.*") && out.contains(":send"),
        "{out}{err}"
    );
    // Each channel sent once, whatever runs again; the same event again makes no message.
    let calls = h.calls();
    calls.advance_messages(10).await.unwrap();
    let again = remind(&h, &c, "rem-1").await;
    assert_eq!(again["duplicate"], true, "{again}");
    calls.advance_messages(10).await.unwrap();
    assert_eq!(
        requests_to(&c.whatsapp_api, "/v21.0/106540352242922/messages").await,
        1
    );
    assert_eq!(requests_to(&c.sms_api, "/version1/messaging").await, 1);
    let _ = c.whatsapp;
    h.shutdown().await;
}

#[tokio::test]
async fn whatsapp_delivers_so_no_sms_goes() {
    let h = Harness::start().await;
    // A template message: outside the 24-hour window only templates are delivered.
    let c = channels(
        &h,
        "300",
        json!({"operation": "send_template", "input": {
            "to": "/guardian/whatsapp", "template": {"value": "fee_reminder"},
            "components": {"value": [{"parameters": [{"type": "text", "text": "KES 1,500"}]}]}}}),
    )
    .await;
    Mock::given(method("POST"))
        .and(path("/v21.0/106540352242922/messages"))
        .and(wiremock::matchers::body_partial_json(
            json!({"type": "template", "template": {"name": "fee_reminder"}}),
        ))
        .respond_with(answer("whatsapp", "message-accepted.json"))
        .expect(1)
        .mount(&c.whatsapp_api)
        .await;
    Mock::given(method("POST"))
        .and(path("/version1/messaging"))
        .respond_with(answer("africastalking", "sms-sent.json"))
        .expect(0)
        .mount(&c.sms_api)
        .await;
    let accepted = remind(&h, &c, "rem-2").await;
    let id = accepted["messages"][0].clone();
    ticks_until(&h, "WhatsApp took it", || async {
        requests_to(&c.whatsapp_api, "/v21.0/106540352242922/messages").await == 1
    })
    .await;
    // Meta reports it delivered, signed with the app secret (X-Hub-Signature-256).
    let status =
        serde_json::to_vec(&fixture_text("whatsapp", "status-delivered.json")["body"]).unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(APP_SECRET.as_bytes()).unwrap();
    mac.update(&status);
    let signature = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    let post = |sig: String| {
        h.http
            .post(h.url(&format!("/v1/webhooks/{}", c.whatsapp)))
            .header("content-type", "application/json")
            .header("x-hub-signature-256", sig)
            .body(status.clone())
            .send()
    };
    assert_eq!(post("sha256=00".into()).await.unwrap().status(), 401);
    assert_eq!(post(signature).await.unwrap().status(), 202);
    ticks_until(&h, "the message is delivered", || async {
        message(&h, &id).await["status"] == "delivered"
    })
    .await;
    let m = message(&h, &id).await;
    assert_eq!(m["outcomes"].as_array().unwrap().len(), 1, "{m}");
    assert_eq!(m["outcomes"][0]["status"], "succeeded");
    for _ in 0..3 {
        h.calls().advance_messages(10).await.unwrap();
    }
    h.shutdown().await;
}

#[tokio::test]
async fn whatsapp_reports_no_delivery_in_time_so_the_sms_goes() {
    let h = Harness::start().await;
    // WhatsApp has one second to report delivery.
    let c = channels(&h, "1", text()).await;
    Mock::given(method("POST"))
        .and(path("/v21.0/106540352242922/messages"))
        .respond_with(answer("whatsapp", "message-accepted.json"))
        .expect(1)
        .mount(&c.whatsapp_api)
        .await;
    Mock::given(method("POST"))
        .and(path("/version1/messaging"))
        .respond_with(answer("africastalking", "sms-sent.json"))
        .expect(1)
        .mount(&c.sms_api)
        .await;
    let accepted = remind(&h, &c, "rem-3").await;
    let id = accepted["messages"][0].clone();
    ticks_until(&h, "the SMS is sent", || async {
        requests_to(&c.sms_api, "/version1/messaging").await == 1
    })
    .await;
    let m = message(&h, &id).await;
    assert_eq!(m["outcomes"][0]["status"], "expired", "{m}");
    assert!(
        m["outcomes"][0]["error"]
            .as_str()
            .unwrap()
            .contains("no result came within 1 s"),
        "{m}"
    );
    let (_, list) = call(
        &h,
        Method::GET,
        "/v1/messages?status=sending",
        ADMIN_TOKEN,
        None,
    )
    .await;
    assert_eq!(list["messages"].as_array().unwrap().len(), 1, "{list}");
    // A channel route from the CLI; an operation the connector does not have is named.
    let school = c.school.to_string();
    let (ok, out, err) = h
        .cli(&[
            "messages",
            "route-add",
            "--from",
            &school,
            "--entity",
            "receipt",
            "--channel",
            r#"sms:send:{"to": "/phone", "text": "/text"}"#,
        ])
        .await;
    assert!(ok, "{out}{err}");
    let (ok, _, err) = h
        .cli(&[
            "messages",
            "route-add",
            "--from",
            &school,
            "--entity",
            "receipt",
            "--channel",
            "sms:fax",
        ])
        .await;
    assert!(
        !ok && err.contains("channels[0].operation") && err.contains("fax"),
        "{err}"
    );
    h.shutdown().await;
}
