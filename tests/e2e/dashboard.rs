//! The dashboard in a real browser (issue 14): headless Chromium, driven through ChromeDriver
//! (Debian's `chromium` and `chromium-driver`; `scripts/browser-setup.sh` installs them),
//! logs in, goes through each page and the dead-letter replay workflow, and saves a
//! screenshot of each page in `target/screenshots/`. Also, without a browser: a tenant sees
//! its own only, a form without its CSRF token is refused, and no secret is rendered.
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use std::time::Duration;

use crate::support::{ADMIN_TOKEN, Harness};

/// ChromeDriver on a free port, stopped with the guard.
struct Driver {
    child: std::process::Child,
    port: u16,
    profile: std::path::PathBuf,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

fn driver() -> Driver {
    let bin = "/usr/bin/chromedriver";
    assert!(
        std::path::Path::new(bin).exists() && std::path::Path::new("/usr/bin/chromium").exists(),
        "Chromium and ChromeDriver are missing: run scripts/browser-setup.sh (`just test` does)"
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = std::process::Command::new(bin)
        .arg(format!("--port={port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("starting chromedriver");
    let profile = std::env::temp_dir().join(format!("sy-chromium-{port}"));
    Driver {
        child,
        port,
        profile,
    }
}

async fn browser(d: &Driver) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--disable-quic", "--no-first-run", "--disable-background-networking",
                     "--disable-component-update", "--disable-sync", "--window-size=1280,900",
                     format!("--user-data-dir={}", d.profile.display())]
        }),
    );
    let url = format!("http://127.0.0.1:{}", d.port);
    for _ in 0..50 {
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        if let Ok(c) = ClientBuilder::new(connector)
            .capabilities(caps.clone())
            .connect(&url)
            .await
        {
            return c;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("ChromeDriver did not answer at {url}");
}

async fn click(c: &Client, what: Locator<'_>) {
    c.find(what).await.unwrap().click().await.unwrap();
}

async fn shot(c: &Client, name: &str) {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    let png = c.screenshot().await.expect("a screenshot");
    std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
}

/// The page's text once it holds `needle` (the browser may still be loading the page a
/// click asked for); panics with the text after 10 s.
async fn text_with(c: &Client, needle: &str) -> String {
    let mut last = String::new();
    for _ in 0..100 {
        if let Ok(body) = c.find(Locator::Css("body")).await
            && let Ok(text) = body.text().await
        {
            if text.contains(needle) {
                return text;
            }
            last = text;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the page never said `{needle}`: {last}");
}

#[tokio::test]
async fn an_operator_works_through_the_dashboard_in_a_browser() {
    let h = Harness::start().await;
    // One order reached the ERP; one was refused for good (a dead letter to replay).
    let (store, erp, done, dead) = h.one_done_one_dead().await;

    let d = driver();
    let c = browser(&d).await;
    let ui = |p: &str| h.url(p);
    // Not logged in: the login page.
    c.goto(&ui("/ui")).await.unwrap();
    text_with(&c, "Admin token or a tenant's API key").await;
    c.find(Locator::Css("input[name=token]"))
        .await
        .unwrap()
        .send_keys("not-a-token")
        .await
        .unwrap();
    click(&c, Locator::Css("form button")).await;
    text_with(&c, "neither the admin token").await;
    c.find(Locator::Css("input[name=token]"))
        .await
        .unwrap()
        .send_keys(ADMIN_TOKEN)
        .await
        .unwrap();
    shot(&c, "login").await;
    click(&c, Locator::Css("form button")).await;

    // The overview.
    let text = text_with(&c, "Overview").await;
    assert!(
        text.contains("acme/erp") && text.contains("dead letters"),
        "{text}"
    );
    assert!(
        text.contains("Breaker") && text.contains("closed"),
        "{text}"
    );
    assert!(text.contains("events / s"), "{text}");
    shot(&c, "overview").await;
    // An integration: its settings, stats, routes; never its credentials.
    c.goto(&ui(&format!("/ui/integrations/{erp}")))
        .await
        .unwrap();
    text_with(&c, "Last 24 hours").await;
    // Its stored credential (`provider-token`) and the store's webhook key never appear.
    let source = c.source().await.unwrap();
    assert!(
        !source.contains("provider-token") && !source.contains(crate::support::API_KEY),
        "a secret rendered"
    );
    shot(&c, "integration").await;
    // Jobs: search, and one job's attempts as a timeline.
    c.goto(&ui(&format!("/ui/jobs?integration={erp}&status=dead")))
        .await
        .unwrap();
    let text = text_with(&c, &dead.to_string()).await;
    assert!(!text.contains(&done.to_string()), "{text}");
    click(&c, Locator::LinkText(&dead.to_string())).await;
    let text = text_with(&c, "Attempts").await;
    assert!(text.contains("422"), "{text}");
    shot(&c, "job").await;
    // Found by the record's own id too.
    c.goto(&ui("/ui/jobs?internal_id=ord-2")).await.unwrap();
    let text = text_with(&c, &dead.to_string()).await;
    assert!(!text.contains(&done.to_string()), "{text}");
    // Dead letters: a dry run, then the replay, followed to its end.
    c.goto(&ui("/ui/dlq")).await.unwrap();
    text_with(&c, "1 dead letter(s) match").await;
    shot(&c, "dead-letters").await;
    click(&c, Locator::XPath("//button[text()='Dry run']")).await;
    text_with(&c, "1 dead letter(s) would be replayed").await;
    c.goto(&ui("/ui/dlq")).await.unwrap();
    click(&c, Locator::Id("replay")).await;
    // The operation's page refreshes itself until the replay ends.
    text_with(&c, "dlq.replay: succeeded").await;
    shot(&c, "replay").await;
    h.wait_status(dead, "succeeded", Duration::from_secs(15))
        .await;
    // Purge wants its box ticked.
    c.goto(&ui("/ui/dlq")).await.unwrap();
    click(&c, Locator::XPath("//button[text()='Purge these']")).await;
    text_with(&c, "Tick the box").await;
    // Records and notifications.
    c.goto(&ui(&format!(
        "/ui/records?integration={store}&entity=order&id=ord-1"
    )))
    .await
    .unwrap();
    text_with(&c, "erp-").await;
    shot(&c, "records").await;
    c.goto(&ui("/ui/notifications")).await.unwrap();
    text_with(&c, "Notifications").await;
    // The dashboard's changes are audited as its visitor's.
    let (_, audit) = crate::support::call(
        &h,
        reqwest::Method::GET,
        "/v1/audit?action=dlq_action.",
        ADMIN_TOKEN,
        None,
    )
    .await;
    assert!(
        audit["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["actor"] == "api:admin (dashboard)"),
        "{audit}"
    );
    // Logging out ends the session.
    click(&c, Locator::XPath("//button[text()='Log out']")).await;
    text_with(&c, "Log in").await;
    c.goto(&ui("/ui")).await.unwrap();
    text_with(&c, "Admin token or a tenant's API key").await;
    c.close().await.unwrap();
    h.shutdown().await;
}

/// Without a browser: the session cookie, a tenant's own view, CSRF on every change.
#[tokio::test]
async fn the_dashboard_keeps_tenants_apart_and_refuses_forged_forms() {
    let h = Harness::with(crate::support::Options {
        worker: false,
        ..Default::default()
    })
    .await;
    let (_store, erp) = h.store_to_erp(json!({})).await;
    h.store
        .create_api_key(
            "beta",
            "ui",
            &switchyard_core::ids::secret_digest("beta-ui-key"),
        )
        .await
        .unwrap();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let login = |token: &str| {
        let http = http.clone();
        let url = h.url("/ui/login");
        let token = token.to_owned();
        async move {
            let r = http
                .post(url)
                .form(&[("token", token)])
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 303);
            let cookie = r.headers()["set-cookie"].to_str().unwrap().to_owned();
            assert!(
                cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
                "{cookie}"
            );
            cookie.split(';').next().unwrap().to_owned()
        }
    };
    let get = |cookie: String, path: String| {
        let http = http.clone();
        let url = h.url(&path);
        async move {
            let r = http.get(url).header("cookie", cookie).send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    let beta = login("beta-ui-key").await;
    let (st, overview) = get(beta.clone(), "/ui".into()).await;
    assert_eq!(st, 200);
    assert!(
        overview.contains("tenant beta") && !overview.contains("acme/erp"),
        "{overview}"
    );
    let (st, _) = get(beta.clone(), format!("/ui/integrations/{erp}")).await;
    assert_eq!(st, 404, "another tenant's integration is not there");
    // A change without the session's CSRF token is refused, and changes nothing.
    let admin = login(ADMIN_TOKEN).await;
    let r = http
        .post(h.url(&format!("/ui/integrations/{erp}/deactivate")))
        .header("cookie", admin.clone())
        .form(&[("csrf", "forged")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let (_, v): (u16, Value) = crate::support::call(
        &h,
        reqwest::Method::GET,
        &format!("/v1/integrations/{erp}"),
        ADMIN_TOKEN,
        None,
    )
    .await;
    assert_eq!(v["status"], "active", "nothing changed");
    // No cookie: the login page.
    let r = http.get(h.url("/ui/dlq")).send().await.unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/ui/login");
    h.shutdown().await;
}
