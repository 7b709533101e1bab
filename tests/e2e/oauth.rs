//! OAuth2 (the connector kit's first part): the consent flow with PKCE and a single-use
//! state, fleet-wide single-flight refresh with rotating refresh tokens, and revoked consent
//! holding jobs until the integration is connected again.
//!
//! The mock authorization server follows RFC 6749 and RFC 7636 as Intuit documents them for
//! QuickBooks Online (developer.intuit.com/app/developer/qbo/docs/develop/authentication-and-
//! authorization/oauth-2.0): the consent page takes `client_id`, `response_type=code`,
//! `scope`, `redirect_uri`, `state`; the token endpoint takes a form body (`grant_type`,
//! `code` + `code_verifier`, or `refresh_token`) with the client in HTTP Basic, answers
//! `{"access_token", "token_type": "bearer", "expires_in": 3600, "refresh_token",
//! "x_refresh_token_expires_in"}`, rotates the refresh token on every refresh, and refuses a
//! used or revoked one with `400 {"error": "invalid_grant"}`.
use base64::Engine;
use reqwest::Method;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use switchyard_providers::oauth::{OAuth, OAuthSettings, TokenSet};
use switchyard_providers::tokens::StoredTokens;
use uuid::Uuid;
use wiremock::matchers::{header, method, path};
use wiremock::{Mock, Request, ResponseTemplate};

use crate::support::{ADMIN_TOKEN, Harness, Options, call};

const WAIT: Duration = Duration::from_secs(20);

fn form(r: &Request) -> HashMap<String, String> {
    url::form_urlencoded::parse(&r.body).into_owned().collect()
}

/// The authorization server: codes it issued (with their PKCE challenges), the refresh
/// tokens still valid, how many token calls it answered.
#[derive(Clone, Default)]
struct AuthServer(Arc<Mutex<AuthState>>);

#[derive(Default)]
struct AuthState {
    /// code → the S256 challenge it was issued for
    codes: HashMap<String, String>,
    live_refresh: Vec<String>,
    issued: u32,
    calls: u32,
    refreshes_seen: Vec<String>,
    revoked: bool,
}

impl AuthServer {
    fn issue_code(&self, code: &str, challenge: &str) {
        self.0
            .lock()
            .unwrap()
            .codes
            .insert(code.into(), challenge.into());
    }
    fn calls(&self) -> u32 {
        self.0.lock().unwrap().calls
    }
    fn revoke(&self, yes: bool) {
        let mut s = self.0.lock().unwrap();
        s.revoked = yes;
        if yes {
            s.live_refresh.clear();
        }
    }
}

impl wiremock::Respond for AuthServer {
    fn respond(&self, r: &Request) -> ResponseTemplate {
        let f = form(r);
        let mut s = self.0.lock().unwrap();
        s.calls += 1;
        let refuse = || {
            ResponseTemplate::new(400).set_body_json(
                json!({"error": "invalid_grant", "error_description": "token invalid"}),
            )
        };
        match f.get("grant_type").map(String::as_str) {
            Some("authorization_code") => {
                let (Some(code), Some(verifier)) = (f.get("code"), f.get("code_verifier")) else {
                    return refuse();
                };
                let Some(challenge) = s.codes.remove(code) else {
                    return refuse();
                };
                let computed = base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .encode(Sha256::digest(verifier.as_bytes()));
                if computed != challenge {
                    return refuse();
                }
            }
            Some("refresh_token") => {
                let rt = f.get("refresh_token").cloned().unwrap_or_default();
                s.refreshes_seen.push(rt.clone());
                if s.revoked || !s.live_refresh.contains(&rt) {
                    return refuse();
                }
                // Rotation: the refresh token just used is spent.
                s.live_refresh.retain(|t| *t != rt);
            }
            _ => return refuse(),
        }
        s.issued += 1;
        let n = s.issued;
        s.live_refresh.push(format!("rt-{n}"));
        ResponseTemplate::new(200).set_body_json(json!({
            "access_token": format!("at-{n}"), "token_type": "bearer", "expires_in": 3600,
            "refresh_token": format!("rt-{n}"), "x_refresh_token_expires_in": 8726400
        }))
    }
}

fn oauth_settings(h: &Harness) -> Value {
    json!({"type": "oauth2", "grant": "authorization_code",
           "authorize_url": format!("{}/connect/oauth2", h.provider.uri()),
           "token_url": format!("{}/oauth2/v1/tokens/bearer", h.provider.uri()),
           "scopes": ["com.intuit.quickbooks.accounting"]})
}

async fn oauth_target(h: &Harness) -> Uuid {
    let settings = json!({
        "base_url": h.provider.uri(), "timeout_ms": 2000,
        "auth": oauth_settings(h),
        "entities": {"order": {"create": {"method": "POST", "path": "/api/orders"},
                               "body": {"reference": "/id"}}}
    });
    h.integration(
        "qbo",
        "rest",
        settings,
        json!({}),
        Some(json!({"client_id": "cid", "client_secret": "csecret"})),
    )
    .await
}

/// Go through the consent as the user's browser would: open the consent URL (the mock
/// "user" consents and the server issues a code for its challenge), then follow the redirect
/// to Switchyard's callback.
async fn consent(
    h: &Harness,
    auth: &AuthServer,
    integration: Uuid,
    code: &str,
) -> (u16, String, String) {
    let (st, c) = call(
        h,
        Method::POST,
        &format!("/v1/integrations/{integration}/oauth/authorize"),
        ADMIN_TOKEN,
        None,
    )
    .await;
    assert_eq!(st, 200, "{c}");
    let url = url::Url::parse(c["authorize_url"].as_str().unwrap()).unwrap();
    let q: HashMap<String, String> = url.query_pairs().into_owned().collect();
    assert_eq!(q["response_type"], "code");
    assert_eq!(q["client_id"], "cid");
    assert_eq!(q["code_challenge_method"], "S256");
    assert_eq!(q["scope"], "com.intuit.quickbooks.accounting");
    assert!(q["redirect_uri"].ends_with("/v1/oauth/callback"));
    auth.issue_code(code, &q["code_challenge"]);
    let back = h
        .http
        .get(h.url("/v1/oauth/callback"))
        .query(&[
            ("state", q["state"].as_str()),
            ("code", code),
            ("realmId", "9130"),
        ])
        .send()
        .await
        .unwrap();
    let status = back.status().as_u16();
    (status, back.text().await.unwrap(), q["state"].clone())
}

#[tokio::test]
async fn connecting_exchanges_the_code_with_its_pkce_verifier_once() {
    let h = Harness::start().await;
    let auth = AuthServer::default();
    Mock::given(method("POST"))
        .and(path("/oauth2/v1/tokens/bearer"))
        .and(header("authorization", "Basic Y2lkOmNzZWNyZXQ="))
        .respond_with(auth.clone())
        .mount(&h.provider)
        .await;
    let qbo = oauth_target(&h).await;
    let (status, page, state) = consent(&h, &auth, qbo, "code-1").await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("is connected"), "{page}");
    let events = h.store.integration_events(qbo, 10).await.unwrap();
    assert!(events.iter().any(|e| e.kind == "connected"));

    // The same state again (a replayed redirect) is refused.
    let again = h
        .http
        .get(h.url("/v1/oauth/callback"))
        .query(&[("state", state.as_str()), ("code", "code-1")])
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 400);
    assert!(again.text().await.unwrap().contains("already used"));
    assert_eq!(auth.calls(), 1, "one code exchange");

    // A wrong verifier is refused by the server (the mock checks S256): simulate by
    // issuing the code for another challenge.
    let (st, c) = call(
        &h,
        Method::POST,
        &format!("/v1/integrations/{qbo}/oauth/authorize"),
        ADMIN_TOKEN,
        None,
    )
    .await;
    assert_eq!(st, 200);
    let url = url::Url::parse(c["authorize_url"].as_str().unwrap()).unwrap();
    let q: HashMap<String, String> = url.query_pairs().into_owned().collect();
    auth.issue_code("code-2", "not-the-challenge");
    let bad = h
        .http
        .get(h.url("/v1/oauth/callback"))
        .query(&[("state", q["state"].as_str()), ("code", "code-2")])
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 502);
    assert!(bad.text().await.unwrap().contains("invalid_grant"));

    // Jobs call the API with the token the code bought.
    let store = h.source("store").await;
    h.route(store, &[qbo]).await;
    Mock::given(method("POST"))
        .and(path("/api/orders"))
        .and(header("authorization", "Bearer at-1"))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({"id": "Q-1"})))
        .expect(1)
        .mount(&h.provider)
        .await;
    let jobs = h
        .accept(store, "e-1", crate::support::order("o-1", 1, "1.00"))
        .await;
    h.wait_status(jobs[0], "succeeded", WAIT).await;
    h.provider.verify().await;
    h.shutdown().await;
}

async fn store_tokens(h: &Harness, id: Uuid, t: &TokenSet) {
    let sealed = switchyard_providers::tokens::seal(&h.keyring, id, t).unwrap();
    h.store
        .lock_oauth_token(id)
        .await
        .unwrap()
        .save(&sealed)
        .await
        .unwrap();
}

#[tokio::test]
async fn two_workers_refreshing_at_once_make_one_token_call_and_never_reuse_a_rotated_token() {
    let h = Harness::with(Options {
        worker: false,
        ..Default::default()
    })
    .await;
    let auth = AuthServer::default();
    Mock::given(method("POST"))
        .and(path("/oauth2/v1/tokens/bearer"))
        .respond_with(auth.clone())
        .mount(&h.provider)
        .await;
    let qbo = oauth_target(&h).await;
    auth.0.lock().unwrap().live_refresh.push("rt-0".into());
    let expired = TokenSet {
        access_token: "at-0".into(),
        refresh_token: Some("rt-0".into()),
        expires_at: Some(chrono::Utc::now().timestamp() - 10),
        scope: None,
    };
    // Token requests are counted (the counter is the process's: other tests may add to it).
    let refreshes = || async {
        let text = h.metrics().await;
        text.lines()
            .find(|l| {
                l.starts_with(
                    r#"switchyard_oauth_token_requests_total{outcome="ok",request="refresh"}"#,
                )
            })
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let refreshed_before = refreshes().await;
    store_tokens(&h, qbo, &expired).await;
    let mut settings = oauth_settings(&h);
    settings.as_object_mut().unwrap().remove("type");
    let settings: OAuthSettings = serde_json::from_value(settings).unwrap();
    let creds = switchyard_providers::Credentials::from_json(
        &json!({"client_id": "cid", "client_secret": "csecret"}),
    )
    .unwrap();
    // Two workers: each its own client, cache and database connection.
    let worker = || {
        OAuth::new(
            settings.clone(),
            &creds,
            switchyard_providers::http_client(),
            Arc::new(StoredTokens::new(h.store.clone(), h.keyring.clone(), qbo)),
        )
        .unwrap()
    };
    let (a, b) = (worker(), worker());
    let (ta, tb) = tokio::join!(a.access_token(), b.access_token());
    assert_eq!(ta.unwrap(), "at-1");
    assert_eq!(tb.unwrap(), "at-1");
    assert_eq!(
        auth.calls(),
        1,
        "one call to the token endpoint for the fleet"
    );

    // The API refuses at-1 (say it was revoked early): both workers ask for a refresh at
    // once; one call, with the rotated rt-1, never rt-0 again.
    let (ra, rb) = tokio::join!(a.refresh(Some("at-1")), b.refresh(Some("at-1")));
    assert_eq!(ra.unwrap(), "at-2");
    assert_eq!(rb.unwrap(), "at-2");
    let seen = auth.0.lock().unwrap().refreshes_seen.clone();
    assert_eq!(
        seen,
        ["rt-0", "rt-1"],
        "each refresh token used exactly once"
    );
    assert!(
        refreshes().await >= refreshed_before + 1.0,
        "a refresh shows in switchyard_oauth_token_requests_total"
    );
    h.shutdown().await;
}

#[tokio::test]
async fn revoked_consent_holds_the_jobs_until_the_integration_is_connected_again() {
    let h = Harness::start().await;
    let auth = AuthServer::default();
    Mock::given(method("POST"))
        .and(path("/oauth2/v1/tokens/bearer"))
        .respond_with(auth.clone())
        .mount(&h.provider)
        .await;
    Mock::given(method("POST"))
        .and(path("/api/orders"))
        .and(header("authorization", "Bearer at-1"))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({"id": "Q-1"})))
        .expect(1)
        .mount(&h.provider)
        .await;
    let qbo = oauth_target(&h).await;
    let expired = TokenSet {
        access_token: "at-0".into(),
        refresh_token: Some("rt-revoked".into()),
        expires_at: Some(chrono::Utc::now().timestamp() - 10),
        scope: None,
    };
    store_tokens(&h, qbo, &expired).await;
    auth.revoke(true);
    let store = h.source("store").await;
    h.route(store, &[qbo]).await;
    let jobs = h
        .accept(store, "e-1", crate::support::order("o-1", 1, "1.00"))
        .await;
    h.wait_status(jobs[0], "held", WAIT).await;
    let i = h.store.integration(qbo).await.unwrap();
    assert_eq!(i.status, switchyard_core::IntegrationStatus::Error);
    assert!(
        i.last_error
            .unwrap()
            .contains("connect the integration again")
    );
    let events = h.store.integration_events(qbo, 10).await.unwrap();
    assert!(
        events.iter().any(|e| e.kind == "reauthorization_required"),
        "{events:?}"
    );

    // Connected again: active, and the held job goes through with the new token.
    auth.revoke(false);
    let (status, page, _) = consent(&h, &auth, qbo, "code-9").await;
    assert_eq!(status, 200, "{page}");
    h.wait_status(jobs[0], "succeeded", WAIT).await;
    assert_eq!(
        h.store.integration(qbo).await.unwrap().status,
        switchyard_core::IntegrationStatus::Active
    );
    h.provider.verify().await;
    h.shutdown().await;
}

/// The kit reads errors inside a `2xx` body (`error_pointer`): Odoo's JSON-RPC answers a
/// fault with `200 {"jsonrpc": "2.0", "error": {"code": 200, "message": "Odoo Server Error",
/// "data": {"name": …, "message": …}}}` (odoo/http.py, JSON-RPC dispatcher).
#[tokio::test]
async fn a_fault_inside_a_200_is_dead_lettered_with_its_message() {
    let h = Harness::start().await;
    let store = h.source("store").await;
    let odoo = h
        .rest_target(
            "odoo",
            "orders",
            json!({"error_pointer": "/error", "error_message_pointer": "/error/data/message"}),
        )
        .await;
    h.route(store, &[odoo]).await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "jsonrpc": "2.0", "id": null,
            "error": {"code": 200, "message": "Odoo Server Error",
                      "data": {"name": "odoo.exceptions.ValidationError",
                               "message": "The partner's country is required"}}})))
        .expect(1)
        .mount(&h.provider)
        .await;
    let jobs = h
        .accept(store, "e-1", crate::support::order("o-1", 1, "1"))
        .await;
    let job = h.wait_status(jobs[0], "dead", WAIT).await;
    assert_eq!(job.dead_reason.as_deref(), Some("rejected"));
    assert!(
        job.last_error
            .unwrap()
            .contains("The partner's country is required"),
        "the provider's own message"
    );
    h.provider.verify().await;
    h.shutdown().await;
}

/// A provider that creates slowly and notes when each call arrived.
#[derive(Clone, Default)]
struct Slow(Arc<Mutex<Vec<std::time::Instant>>>);

impl wiremock::Respond for Slow {
    fn respond(&self, _: &Request) -> ResponseTemplate {
        let mut calls = self.0.lock().unwrap();
        calls.push(std::time::Instant::now());
        ResponseTemplate::new(201)
            .set_body_json(json!({"id": format!("slow-{}", calls.len())}))
            .set_delay(Duration::from_millis(300))
    }
}

async fn calls_with_cap(cap: Value) -> Vec<std::time::Instant> {
    let h = Harness::start().await;
    let store = h.source("store").await;
    let erp = h.rest_target("erp", "orders", cap).await;
    h.route(store, &[erp]).await;
    let slow = Slow::default();
    Mock::given(method("POST"))
        .respond_with(slow.clone())
        .mount(&h.provider)
        .await;
    let sends = (1..=3).map(|n| {
        let h = &h;
        async move {
            h.accept(
                store,
                &format!("e-{n}"),
                crate::support::order(&format!("o-{n}"), 1, "1"),
            )
            .await
        }
    });
    let jobs: Vec<Uuid> = futures_util::future::join_all(sends)
        .await
        .into_iter()
        .flatten()
        .collect();
    for j in &jobs {
        h.wait_status(*j, "succeeded", WAIT).await;
    }
    let mut calls = slow.0.lock().unwrap().clone();
    calls.sort();
    h.shutdown().await;
    calls
}

#[tokio::test]
async fn an_accounts_concurrency_cap_holds_its_calls_to_one_at_a_time() {
    let capped = calls_with_cap(json!({"concurrency": 1})).await;
    assert_eq!(capped.len(), 3);
    for w in capped.windows(2) {
        // Never two at once: each call starts after the one before it answered.
        assert!(
            w[1] - w[0] >= Duration::from_millis(300),
            "{:?}",
            w[1] - w[0]
        );
    }
    // Without the cap the same three calls overlap (the comparison that makes the above
    // mean something).
    let free = calls_with_cap(json!({})).await;
    assert!(
        free[2] - free[0] < Duration::from_millis(300),
        "{:?}",
        free[2] - free[0]
    );
}

/// What a write's answer says to keep (QuickBooks Online's `SyncToken`, see the providers'
/// unit test for the vendor's shapes) is stored with the record's link at the target and
/// goes into the next update.
#[tokio::test]
async fn kept_values_travel_from_one_write_to_the_next() {
    let h = Harness::start().await;
    let store = h.source("store").await;
    let settings = json!({
        "base_url": format!("{}/v3/company/9130", h.provider.uri()), "auth": {"type": "bearer"},
        "idempotency_header": null, "idempotency_query": "requestid", "timeout_ms": 2000,
        "entities": {"order": {
            "create": {"method": "POST", "path": "/customer"},
            "update": {"method": "POST", "path": "/customer"},
            "body": {"DisplayName": "/id", "Id": "/_switchyard/external_id",
                     "SyncToken": "/_switchyard/kept/SyncToken"},
            "id_pointer": "/Customer/Id", "keep": {"SyncToken": "/Customer/SyncToken"}}}
    });
    let qbo = h
        .integration(
            "qbo",
            "rest",
            settings,
            json!({}),
            Some(json!({"token": "t"})),
        )
        .await;
    h.route(store, &[qbo]).await;
    let token = Arc::new(Mutex::new(0));
    let t = token.clone();
    Mock::given(method("POST"))
        .and(path("/v3/company/9130/customer"))
        .respond_with(move |_: &Request| {
            let mut n = t.lock().unwrap();
            let body = json!({"Customer": {"Id": "58", "SyncToken": n.to_string()}});
            *n += 1;
            ResponseTemplate::new(200).set_body_json(body)
        })
        .mount(&h.provider)
        .await;
    for v in 1..=3 {
        let j = h
            .accept(
                store,
                &format!("e-{v}"),
                crate::support::order("c-1", v, "1"),
            )
            .await;
        h.wait_status(j[0], "succeeded", WAIT).await;
    }
    let bodies: Vec<Value> = h
        .provider
        .received_requests()
        .await
        .unwrap()
        .iter()
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .collect();
    assert_eq!(
        bodies[0],
        json!({"DisplayName": "c-1"}),
        "a create has no id or token"
    );
    assert_eq!(
        bodies[1],
        json!({"DisplayName": "c-1", "Id": "58", "SyncToken": "0"})
    );
    assert_eq!(
        bodies[2],
        json!({"DisplayName": "c-1", "Id": "58", "SyncToken": "1"})
    );
    h.shutdown().await;
}

/// An invoice whose lines name the sender's items and customer goes out with the *target's*
/// ids for them, and waits until they have reached the target. Shapes follow QuickBooks
/// Online's Invoice (developer.intuit.com, Invoice entity: `CustomerRef.value`, `Line[]`
/// with `DetailType: SalesItemLineDetail` and `SalesItemLineDetail.ItemRef.value`) and its
/// create answers (`{"Customer": {"Id"}}`, `{"Item": {"Id"}}`, `{"Invoice": {"Id"}}`).
#[tokio::test]
async fn an_invoice_waits_for_its_customer_and_carries_the_targets_ids() {
    let h = Harness::start().await;
    let shop = h
        .integration(
            "shop",
            "webhook",
            json!({}),
            json!({"event_id": {"header": "X-Event-Id"}}),
            None,
        )
        .await;
    let settings = json!({
        "base_url": format!("{}/v3/company/9130", h.provider.uri()), "auth": {"type": "bearer"},
        "timeout_ms": 2000,
        "entities": {
            "customer": {"create": {"method": "POST", "path": "/customer"},
                         "body": {"DisplayName": "/name"}, "id_pointer": "/Customer/Id"},
            "product": {"create": {"method": "POST", "path": "/item"},
                        "body": {"Name": "/name", "Sku": "/id"}, "id_pointer": "/Item/Id"},
            "invoice": {"create": {"method": "POST", "path": "/invoice"},
                        "body": {
                            "CustomerRef.value": {"ref": {"entity": "customer", "pointer": "/customer_id"}},
                            "Line": {"each": "/lines", "map": {
                                "Amount": "/total", "DetailType": {"value": "SalesItemLineDetail"},
                                "SalesItemLineDetail.ItemRef.value": {"ref": {"entity": "product", "pointer": "/sku"}},
                                "SalesItemLineDetail.Qty": "/qty"}}},
                        "id_pointer": "/Invoice/Id"}}
    });
    let qbo = h
        .integration(
            "qbo",
            "rest",
            settings,
            json!({}),
            Some(json!({"token": "t"})),
        )
        .await;
    for entity in ["customer", "product", "invoice"] {
        h.route_with(shop, entity, &[qbo], json!({}), Default::default())
            .await;
    }
    for (p, name, id) in [
        ("/v3/company/9130/customer", "Customer", "58"),
        ("/v3/company/9130/invoice", "Invoice", "130"),
    ] {
        Mock::given(method("POST"))
            .and(path(p))
            .respond_with(
                ResponseTemplate::new(200).set_body_json(
                    json!({ name: {"Id": id}, "time": "2026-11-20T09:00:00.000-08:00"}),
                ),
            )
            .mount(&h.provider)
            .await;
    }
    Mock::given(method("POST"))
        .and(path("/v3/company/9130/item"))
        .respond_with(|r: &Request| {
            let b: Value = serde_json::from_slice(&r.body).unwrap();
            let id = if b["Sku"] == "A-1" { "11" } else { "12" };
            ResponseTemplate::new(200).set_body_json(json!({"Item": {"Id": id}}))
        })
        .mount(&h.provider)
        .await;
    let send = |ev: &str, entity: &str, data: Value| {
        let h = &h;
        let body = json!({"entity": entity, "data": data});
        let ev = ev.to_owned();
        async move { h.accept(shop, &ev, body).await[0] }
    };
    for (sku, name) in [("A-1", "Anchor"), ("B-2", "Buoy")] {
        let j = send(
            &format!("p-{sku}"),
            "product",
            json!({"id": sku, "name": name}),
        )
        .await;
        h.wait_status(j, "succeeded", WAIT).await;
    }
    let invoice = send("i-1", "invoice", json!({"id": "inv-1", "customer_id": 7,
        "lines": [{"sku": "A-1", "qty": 2, "total": "20.00"}, {"sku": "B-2", "qty": 1, "total": "5.00"}]})).await;
    let waiting = h.wait_status(invoice, "retrying", WAIT).await;
    assert!(
        waiting
            .last_error
            .unwrap()
            .contains("waiting for customer `7`")
    );
    assert_eq!(waiting.attempts, 0, "waiting spends no attempt");
    let customer = send("c-7", "customer", json!({"id": 7, "name": "Ana"})).await;
    h.wait_status(customer, "succeeded", WAIT).await;
    h.wait_status(invoice, "succeeded", WAIT).await;
    let reqs = h.provider.received_requests().await.unwrap();
    let posted: Vec<Value> = reqs
        .iter()
        .filter(|r| r.url.path().ends_with("/invoice"))
        .map(|r| serde_json::from_slice(&r.body).unwrap())
        .collect();
    assert_eq!(posted.len(), 1, "the invoice went out once, complete");
    assert_eq!(
        posted[0],
        json!({"CustomerRef": {"value": "58"}, "Line": [
            {"Amount": "20.00", "DetailType": "SalesItemLineDetail",
             "SalesItemLineDetail": {"ItemRef": {"value": "11"}, "Qty": 2}},
            {"Amount": "5.00", "DetailType": "SalesItemLineDetail",
             "SalesItemLineDetail": {"ItemRef": {"value": "12"}, "Qty": 1}}]})
    );
    h.shutdown().await;
}

/// A built-in connector is connected like any OAuth2 integration: QuickBooks Online, made
/// by name, its consent and token endpoints pointed at the mock authorization server.
#[tokio::test]
async fn a_built_in_connector_is_connected_with_two_commands_worth_of_calls() {
    let h = Harness::with(Options::with_providers(&["rest", "quickbooks-online"])).await;
    let auth = AuthServer::default();
    Mock::given(method("POST"))
        .and(path("/oauth2/v1/tokens/bearer"))
        .respond_with(auth.clone())
        .mount(&h.provider)
        .await;
    // 1. create it by name
    let (st, created) = call(
        &h,
        Method::POST,
        "/v1/integrations",
        ADMIN_TOKEN,
        Some(
            json!({"tenant": "acme", "name": "books", "connector": "quickbooks-online",
            "status": "active",
            "settings": {"realm_id": "9130", "base_url": h.provider.uri(),
                         "authorize_url": format!("{}/connect/oauth2", h.provider.uri()),
                         "token_url": format!("{}/oauth2/v1/tokens/bearer", h.provider.uri())},
            "credentials": {"client_id": "cid", "client_secret": "csecret"}}),
        ),
    )
    .await;
    assert_eq!(st, 201, "{created}");
    let books: Uuid = created["id"].as_str().unwrap().parse().unwrap();
    // 2. connect it
    let (status, page, _) = consent(&h, &auth, books, "code-qbo").await;
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("is connected"), "{page}");
    // Its connection test reads the company's info with that token.
    Mock::given(method("GET"))
        .and(path("/v3/company/9130/companyinfo/9130"))
        .and(header("authorization", "Bearer at-1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!(
            {"CompanyInfo": {"CompanyName": "Sandbox Company_US_1", "Id": "1"}, "time": "2026-11-26T05:54:00.000-08:00"})))
        .expect(1)
        .mount(&h.provider)
        .await;
    let (st, tested) = call(
        &h,
        Method::POST,
        &format!("/v1/integrations/{books}/test"),
        ADMIN_TOKEN,
        None,
    )
    .await;
    assert_eq!(st, 200, "{tested}");

    // Its jobs call QuickBooks with the token the consent bought.
    let store = h
        .integration(
            "store",
            "webhook",
            json!({}),
            json!({"entity": {"pointer": "/entity"}, "event_id": {"header": "X-Event-Id"}}),
            None,
        )
        .await;
    h.route_with(
        store,
        "customer",
        &[books],
        json!({}),
        switchyard_core::RouteOptions::default(),
    )
    .await;
    Mock::given(method("POST"))
        .and(path("/v3/company/9130/customer"))
        .and(header("authorization", "Bearer at-1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!(
            {"Customer": {"Id": "58", "SyncToken": "0", "DisplayName": "Ana"}, "time": "2026-11-26T05:20:31.173-08:00"})))
        .expect(1)
        .mount(&h.provider)
        .await;
    let jobs = h
        .http
        .post(h.url(&format!("/v1/webhooks/{store}")))
        .header("content-type", "application/json")
        .header("x-api-key", crate::support::API_KEY)
        .header("x-event-id", "cust-1")
        .body(json!({"entity": "customer", "id": "c-1", "name": "Ana"}).to_string())
        .send()
        .await
        .unwrap();
    let status = jobs.status();
    let body: Value = jobs.json().await.unwrap();
    assert_eq!(status, 202, "{body}");
    let job: Uuid = body["jobs"][0].as_str().unwrap().parse().unwrap();
    let done = h
        .wait_status(job, "succeeded", Duration::from_secs(20))
        .await;
    assert_eq!(done.external_id.as_deref(), Some("58"));
}
