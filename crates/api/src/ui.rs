//! The operators' dashboard, served by the API under `/ui`: HTML made on the server (maud),
//! no JavaScript toolchain and no script at all. Log in with the admin token or a tenant's
//! API key (kept in an HttpOnly, SameSite=Strict cookie); a tenant sees its own only, as
//! through the API. Every form that changes something carries a CSRF token derived from
//! the session. No secret is ever rendered: integrations are shown through the same view as
//! the API gives.
// Handlers answer a page either way (the error is a page too), as axum handlers may.
#![allow(clippy::result_large_err)]

use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::{DOCTYPE, Markup, PreEscaped, html};
use serde::Deserialize;
use subtle::ConstantTimeEq;
use switchyard_core::IntegrationStatus;
use switchyard_ops::dlq::{self, Filter, Options};
use switchyard_ops::integrations as ops;
use switchyard_store::{Integration, IntegrationFilter, JobQuery};
use uuid::Uuid;

use crate::jobs::{Principal, authorize_token};
use crate::{ApiError, SharedState};

const COOKIE: &str = "sy_ui";

/// The dashboard's routes (merged into the API's router; not part of its description).
pub(crate) fn router() -> utoipa_axum::router::OpenApiRouter<SharedState> {
    utoipa_axum::router::OpenApiRouter::new()
        .route("/ui", get(overview))
        .route("/ui/login", get(login_page).post(login))
        .route("/ui/logout", post(logout))
        .route("/ui/integrations", get(integrations))
        .route("/ui/integrations/{id}", get(integration))
        .route("/ui/integrations/{id}/{action}", post(integration_action))
        .route("/ui/jobs", get(jobs))
        .route("/ui/jobs/{id}", get(job))
        .route("/ui/dlq", get(dead_letters))
        .route("/ui/dlq/{action}", post(dlq_action))
        .route("/ui/operations/{id}", get(operation))
        .route("/ui/sync-runs/{id}", get(sync_run))
        .route("/ui/sync-runs/{id}/cancel", post(cancel_run))
        .route("/ui/records", get(records))
        .route("/ui/notifications", get(notifications))
}

/// A logged-in visitor: who, and the CSRF token its forms must carry.
struct Session {
    who: Principal,
    csrf: String,
}

fn csrf_for(token: &str) -> String {
    let d = switchyard_core::ids::secret_digest(&format!("switchyard-ui-csrf:{token}"));
    d[..32].to_owned()
}

/// The token the dashboard's session cookie holds.
pub(crate) fn session_token(headers: &HeaderMap) -> Option<String> {
    cookie_token(headers)
}

fn cookie_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|c| {
            c.trim()
                .strip_prefix(&format!("{COOKIE}="))
                .map(str::to_owned)
        })
        .filter(|t| !t.is_empty())
}

/// The session, or the login page.
async fn session(state: &SharedState, headers: &HeaderMap) -> Result<Session, Response> {
    let Some(token) = cookie_token(headers) else {
        return Err(Redirect::to("/ui/login").into_response());
    };
    match authorize_token(state, &token).await {
        Ok(who) => Ok(Session {
            who,
            csrf: csrf_for(&token),
        }),
        Err(_) => Err(Redirect::to("/ui/login").into_response()),
    }
}

/// A form's CSRF token must be the session's.
fn check_csrf(s: &Session, given: &str) -> Result<(), Response> {
    if bool::from(s.csrf.as_bytes().ct_eq(given.as_bytes())) {
        Ok(())
    } else {
        Err((
            StatusCode::FORBIDDEN,
            page(
                "Refused",
                None,
                html! { p { "This form is stale or was not sent from this dashboard. Go back, reload the page and try again." } },
            ),
        )
            .into_response())
    }
}

fn page(title: &str, s: Option<&Session>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { "Switchyard · " (title) }
                style { (PreEscaped(STYLE)) }
            }
            body {
                header {
                    strong { "Switchyard" }
                    @if let Some(s) = s {
                        nav {
                            a href="/ui" { "Overview" }
                            a href="/ui/integrations" { "Integrations" }
                            a href="/ui/jobs" { "Jobs" }
                            a href="/ui/dlq" { "Dead letters" }
                            a href="/ui/records" { "Records" }
                            a href="/ui/notifications" { "Notifications" }
                        }
                        span.who { (match &s.who { Principal::Admin => "admin".to_owned(), Principal::Tenant(t) => format!("tenant {t}") }) }
                        form method="post" action="/ui/logout" {
                            input type="hidden" name="csrf" value=(s.csrf);
                            button { "Log out" }
                        }
                    }
                }
                main {
                    h1 { (title) }
                    (PreEscaped(body.into_string()))
                }
            }
        }
    }
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}\
header{display:flex;gap:1.5rem;align-items:center;padding:.6rem 1.5rem;background:#1d2330;color:#fff}\
header a{color:#cfe0ff;margin-right:1rem;text-decoration:none}header form{margin-left:auto}\
main{padding:1rem 1.5rem}table{border-collapse:collapse;background:#fff;margin:.5rem 0 1.5rem}\
th,td{border:1px solid #dde1e8;padding:.3rem .6rem;text-align:left;font-size:.9rem;vertical-align:top}\
th{background:#eef1f5}.error,.dead,.failed{color:#b3261e}.active,.succeeded{color:#1b7a35}\
.cards{display:flex;gap:1rem;flex-wrap:wrap}.card{background:#fff;border:1px solid #dde1e8;padding:.6rem 1rem;min-width:9rem}\
.card b{display:block;font-size:1.6rem}form.inline{display:inline}input,select,button{margin:.2rem}\
pre{white-space:pre-wrap;max-width:60rem}";

fn status_class(s: &str) -> &str {
    match s {
        "active" | "succeeded" => "succeeded",
        "error" | "dead" | "failed" | "expired" => "error",
        _ => "",
    }
}

fn when(t: Option<chrono::DateTime<chrono::Utc>>) -> String {
    t.map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|| "–".into())
}

/// An API error as a page (taken by value, so that `map_err(fail)` reads).
#[allow(clippy::needless_pass_by_value)]
fn fail(e: ApiError) -> Response {
    (
        e.status,
        page(
            "Something went wrong",
            None,
            html! { p.error { (e.message) } },
        ),
    )
        .into_response()
}

type Page = Result<Response, Response>;

#[derive(Deserialize)]
struct LoginForm {
    token: String,
}

async fn login_page() -> Markup {
    login_form(None)
}

fn login_form(error: Option<&str>) -> Markup {
    page(
        "Log in",
        None,
        html! {
            @if let Some(e) = error { p.error { (e) } }
            form method="post" action="/ui/login" {
                label { "Admin token or a tenant's API key " input type="password" name="token" autocomplete="off" autofocus; }
                button { "Log in" }
            }
        },
    )
}

async fn login(State(state): State<SharedState>, Form(f): Form<LoginForm>) -> Response {
    let token = f.token.trim().to_owned();
    match authorize_token(&state, &token).await {
        Ok(_) => {
            let secure = if state
                .cfg
                .oauth_redirect_uri
                .as_deref()
                .is_some_and(|u| u.starts_with("https://"))
            {
                "; Secure"
            } else {
                ""
            };
            (
                StatusCode::SEE_OTHER,
                [
                    (
                        header::SET_COOKIE,
                        format!("{COOKIE}={token}; Path=/ui; HttpOnly; SameSite=Strict{secure}"),
                    ),
                    (header::LOCATION, "/ui".to_owned()),
                ],
            )
                .into_response()
        }
        Err(e) if e.status == StatusCode::UNAUTHORIZED => (
            StatusCode::UNAUTHORIZED,
            login_form(Some(
                "That is neither the admin token nor an active API key.",
            )),
        )
            .into_response(),
        Err(e) => fail(e),
    }
}

#[derive(Deserialize)]
struct CsrfForm {
    csrf: String,
}

async fn logout(
    State(state): State<SharedState>,
    headers: HeaderMap,
    Form(f): Form<CsrfForm>,
) -> Page {
    let s = session(&state, &headers).await?;
    check_csrf(&s, &f.csrf)?;
    Ok((
        StatusCode::SEE_OTHER,
        [
            (
                header::SET_COOKIE,
                format!("{COOKIE}=; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=0"),
            ),
            (header::LOCATION, "/ui/login".to_owned()),
        ],
    )
        .into_response())
}

async fn visible_integrations(
    state: &SharedState,
    s: &Session,
) -> Result<Vec<Integration>, Response> {
    state
        .store
        .find_integrations(&IntegrationFilter {
            tenant: s.who.tenant().map(str::to_owned),
            ..Default::default()
        })
        .await
        .map_err(|e| fail(state.store_error(e)))
}

async fn overview(State(state): State<SharedState>, headers: HeaderMap) -> Page {
    let s = session(&state, &headers).await?;
    let list = visible_integrations(&state, &s).await?;
    let since = chrono::Utc::now() - chrono::Duration::hours(1);
    let mut rows = Vec::new();
    let (mut total, mut failed) = (0i64, 0i64);
    for i in list.iter().take(100) {
        let st = state
            .store
            .stats(i.id, since)
            .await
            .map_err(|e| fail(state.store_error(e)))?;
        total += st.total;
        failed += st.dead;
        rows.push((i, st));
    }
    let events = state
        .store
        .events_since(s.who.tenant(), since)
        .await
        .map_err(|e| fail(state.store_error(e)))?;
    let by_provider = state
        .store
        .dead_letter_counts(s.who.tenant())
        .await
        .map_err(|e| fail(state.store_error(e)))?;
    let letters: i64 = by_provider.iter().map(|(_, n)| n).sum();
    let mut queues = Vec::new();
    if matches!(s.who, Principal::Admin) {
        let topology = state.broker.topology().clone();
        for p in switchyard_providers::target_providers() {
            if let Ok(n) = state.broker.message_count(&topology.queue(&p)).await {
                queues.push((p, n));
            }
        }
    }
    // Each target's breaker, as the fleet shares it.
    let breakers = match &state.cfg.guard {
        Some(g) => {
            let keys: Vec<String> = rows.iter().map(|(i, _)| i.id.to_string()).collect();
            g.breaker_states(&keys).await
        }
        None => Vec::new(),
    };
    let in_error: Vec<&Integration> = list
        .iter()
        .filter(|i| i.status == IntegrationStatus::Error)
        .collect();
    let body = html! {
        div.cards {
            div.card { b { (list.len()) } "integrations" }
            div.card { b class=(if in_error.is_empty() { "" } else { "error" }) { (in_error.len()) } "in error" }
            div.card { b { (format!("{:.2}", events as f64 / 3600.0)) } "events / s (last hour)" }
            div.card { b { (format!("{:.2}", total as f64 / 3600.0)) } "jobs / s (last hour)" }
            div.card { b { (if total > 0 { format!("{:.1} %", 100.0 * failed as f64 / total as f64) } else { "–".into() }) } "dead (last hour)" }
            div.card { b { (letters) } "dead letters" }
        }
        @if !in_error.is_empty() {
            h2 { "In error" }
            table { tr { th { "Integration" } th { "Last error" } }
                @for i in &in_error { tr { td { a href={"/ui/integrations/" (i.id)} { (i.tenant) "/" (i.name) } } td.error { (i.last_error.clone().unwrap_or_default()) } } }
            }
        }
        h2 { "Last hour, per integration" }
        table {
            tr { th { "Integration" } th { "Status" } th { "Breaker" } th { "Jobs" } th { "Succeeded" } th { "Dead" } th { "In flight" } th { "Held" } th { "p95 ms" } }
            @for (n, (i, st)) in rows.iter().enumerate() {
                tr {
                    td { a href={"/ui/integrations/" (i.id)} { (i.tenant) "/" (i.name) } }
                    td class=(status_class(i.status.as_str())) { (i.status) }
                    td { (match breakers.get(n) {
                        Some(switchyard_resilience::BreakerState::Open) => "open",
                        Some(switchyard_resilience::BreakerState::HalfOpen) => "half-open",
                        Some(switchyard_resilience::BreakerState::Closed) => "closed",
                        None => "–",
                    }) }
                    td { (st.total) } td { (st.succeeded) } td { (st.dead) } td { (st.in_flight) } td { (st.held) }
                    td { (st.p95_duration_ms.map(|v| format!("{v:.0}")).unwrap_or_else(|| "–".into())) }
                }
            }
        }
        h2 { "Dead letters by provider" }
        table { tr { th { "Provider" } th { "Dead letters" } }
            @for (p, n) in &by_provider { tr { td { a href={"/ui/dlq?provider=" (p)} { (p) } } td { (n) } } }
        }
        @if !queues.is_empty() {
            h2 { "Work queues" }
            table { tr { th { "Provider" } th { "Waiting" } }
                @for (p, n) in &queues { tr { td { (p) } td { (n) } } }
            }
        }
    };
    Ok(page("Overview", Some(&s), body).into_response())
}

async fn integrations(State(state): State<SharedState>, headers: HeaderMap) -> Page {
    let s = session(&state, &headers).await?;
    let list = visible_integrations(&state, &s).await?;
    let body = html! {
        table {
            tr { th { "Integration" } th { "Provider" } th { "Status" } th { "Direction" } th { "Last sync" } th { "Last error" } }
            @for i in &list {
                tr {
                    td { a href={"/ui/integrations/" (i.id)} { (i.tenant) "/" (i.name) } }
                    td { (i.provider) }
                    td class=(status_class(i.status.as_str())) { (i.status) }
                    td { (i.direction) }
                    td { (when(i.last_sync_at)) }
                    td.error { (i.last_error.clone().unwrap_or_default()) }
                }
            }
        }
    };
    Ok(page("Integrations", Some(&s), body).into_response())
}

/// The integration the path names, if the session may see it.
async fn visible(state: &SharedState, s: &Session, raw: &str) -> Result<Integration, Response> {
    crate::manage::visible(state, &s.who, raw)
        .await
        .map_err(fail)
}

async fn integration(
    State(state): State<SharedState>,
    headers: HeaderMap,
    Path(raw): Path<String>,
) -> Page {
    let s = session(&state, &headers).await?;
    let i = visible(&state, &s, &raw).await?;
    let err = |e| fail(state.store_error(e));
    let st = state
        .store
        .stats(i.id, chrono::Utc::now() - chrono::Duration::hours(24))
        .await
        .map_err(err)?;
    let events = state
        .store
        .integration_events(i.id, 20)
        .await
        .map_err(err)?;
    let runs = state.store.sync_runs(i.id, 10).await.map_err(err)?;
    let routes = state.store.routes(i.id).await.map_err(err)?;
    let calls = state
        .store
        .list_calls(&switchyard_store::CallFilter {
            integration_id: Some(i.id),
            limit: 20,
            ..Default::default()
        })
        .await
        .map_err(err)?;
    let v = ops::view(&i);
    let oauth = ops::open_credentials(&state.cfg.keyring, &i).is_ok()
        && i.settings.pointer("/auth/type").and_then(|t| t.as_str()) == Some("oauth2");
    let body = html! {
        table {
            tr { th { "Id" } td { (v.id) } }
            tr { th { "Provider" } td { (v.provider) } }
            tr { th { "Status" } td class=(status_class(v.status.as_str())) { (v.status) } }
            tr { th { "Direction" } td { (v.direction) } }
            tr { th { "Entities" } td { (v.entities.join(", ")) } }
            tr { th { "Webhooks" } td { (v.webhook_auth.clone().unwrap_or_default()) " " (v.webhook_path.clone().unwrap_or_default()) } }
            tr { th { "Credentials" } td { (if v.has_credentials { "stored (never shown)" } else { "none" }) } }
            tr { th { "Schedule" } td { (v.schedule.as_ref().map(|s| s.to_string()).unwrap_or_else(|| "–".into())) } }
            tr { th { "Last sync" } td { (when(v.last_sync_at)) } }
            tr { th { "Last error" } td.error { (v.last_error.clone().unwrap_or_default()) } }
        }
        @for (action, label) in [("test", "Test the connection"), ("activate", "Activate"), ("deactivate", "Deactivate"), ("sync", "Sync now")] {
            form.inline method="post" action={"/ui/integrations/" (i.id) "/" (action)} {
                input type="hidden" name="csrf" value=(s.csrf);
                button { (label) }
            }
        }
        @if oauth {
            form.inline method="post" action={"/ui/integrations/" (i.id) "/connect"} {
                input type="hidden" name="csrf" value=(s.csrf);
                button { "Connect (OAuth)" }
            }
        }
        h2 { "Last 24 hours" }
        table {
            tr { th { "Jobs" } th { "Succeeded" } th { "Dead" } th { "In flight" } th { "Held" } th { "Skipped" } th { "Success rate" } th { "Avg ms" } th { "p95 ms" } }
            tr {
                td { (st.total) } td { (st.succeeded) } td { (st.dead) } td { (st.in_flight) } td { (st.held) } td { (st.skipped) }
                td { (st.success_rate.map(|r| format!("{:.1} %", r * 100.0)).unwrap_or_else(|| "–".into())) }
                td { (st.avg_duration_ms.map(|v| format!("{v:.0}")).unwrap_or_else(|| "–".into())) }
                td { (st.p95_duration_ms.map(|v| format!("{v:.0}")).unwrap_or_else(|| "–".into())) }
            }
        }
        p { a href={"/ui/jobs?integration=" (i.id)} { "Its jobs" } " · " a href={"/ui/dlq?integration=" (i.id)} { "Its dead letters" } }
        h2 { "Routes from it" }
        table { tr { th { "Events" } th { "To" } th { "Conflicts" } th { "While a target is inactive" } }
            @for r in &routes { tr {
                td { (r.entity) "." (r.event) }
                td { @for t in &r.targets { a href={"/ui/integrations/" (t.id)} { (t.name) } " " } }
                td { (r.conflict) } td { (r.when_inactive) }
            } }
        }
        h2 { "Sync runs" }
        table { tr { th { "Run" } th { "Status" } th { "Trigger" } th { "Jobs" } th { "Processed" } th { "Failed" } th { "Started" } }
            @for r in &runs { tr {
                td { a href={"/ui/sync-runs/" (r.id)} { (r.id) } }
                td class=(status_class(&r.status)) { (r.status) } td { (r.trigger) } td { (r.total) } td { (r.processed) } td { (r.failed) }
                td { (when(Some(r.created_at))) }
            } }
        }
        @if !calls.is_empty() {
            h2 { "Operation calls" }
            table { tr { th { "When" } th { "Operation" } th { "Status" } th { "Reference" } th { "Result" } th { "Settled by" } }
                @for c in &calls { tr {
                    td { (when(Some(c.created_at))) }
                    td { a href={"/ui/jobs/" (c.id)} { (c.operation) } }
                    td class=(status_class(&c.status)) { (c.status) }
                    td { (c.reference.clone().unwrap_or_default()) }
                    td { (match (&c.result_code, &c.error) {
                        (Some(code), _) => format!("{code}: {}", c.result_message.clone().unwrap_or_default()),
                        (None, Some(e)) => e.clone(),
                        (None, None) => String::new(),
                    }) }
                    td { (c.settled_by.clone().unwrap_or_default()) }
                } }
            }
        }
        h2 { "Events" }
        table { tr { th { "When" } th { "Event" } th { "Message" } }
            @for e in &events { tr { td { (when(Some(e.created_at))) } td { (e.kind) } td { (e.message) } } }
        }
    };
    let title = format!("{}/{}", i.tenant, i.name);
    Ok(page(&title, Some(&s), body).into_response())
}

async fn integration_action(
    State(state): State<SharedState>,
    headers: HeaderMap,
    Path((raw, action)): Path<(String, String)>,
    Form(f): Form<CsrfForm>,
) -> Page {
    let s = session(&state, &headers).await?;
    check_csrf(&s, &f.csrf)?;
    let i = visible(&state, &s, &raw).await?;
    let back = format!("/ui/integrations/{}", i.id);
    let by_tenant = matches!(s.who, Principal::Tenant(_));
    let message = match action.as_str() {
        "test" => {
            let out = ops::test_connection(
                &state.store,
                state.cfg.keyring.clone(),
                switchyard_providers::http_client(),
                &i,
            )
            .await
            .map_err(|e| fail(state.store_error(e)))?;
            format!(
                "Connection test {}: {} (status now {})",
                if out.ok { "passed" } else { "failed" },
                out.message,
                out.status
            )
        }
        "activate" => match ops::activate(&state.store, &state.broker, &i, by_tenant).await {
            Ok(a) => format!("Active; {} held job(s) released.", a.released),
            Err(e) => e.to_string(),
        },
        "deactivate" => {
            ops::deactivate(&state.store, &i)
                .await
                .map_err(|e| fail(state.store_error(e)))?;
            "Inactive: its webhooks are refused and jobs for it are held.".into()
        }
        "sync" => {
            let req = switchyard_ops::sync::SyncRequest {
                trigger: "manual",
                slot: None,
                started_by: s.who.actor(),
                entities: None,
                full: false,
                now: chrono::Utc::now(),
            };
            match switchyard_ops::sync::start(&state.store, &state.broker, &i, req).await {
                Ok(Some(run)) => {
                    return Ok(Redirect::to(&format!("/ui/sync-runs/{}", run.id)).into_response());
                }
                Ok(None) => "This sync has already been started.".into(),
                Err(e) => e.to_string(),
            }
        }
        "connect" => {
            let redirect = state
                .cfg
                .oauth_redirect_uri
                .clone()
                .unwrap_or_else(|| "/v1/oauth/callback".into());
            match switchyard_ops::oauth::begin(&state.store, &state.cfg.keyring, &i, &redirect)
                .await
            {
                Ok(c) => return Ok(Redirect::to(&c.authorize_url).into_response()),
                Err(e) => e.to_string(),
            }
        }
        _ => return Err(fail(ApiError::not_found("no such action"))),
    };
    let body = html! { p { (message) } p { a href=(back) { "Back to the integration" } } };
    Ok(page("Done", Some(&s), body).into_response())
}

#[derive(Deserialize, Default)]
struct JobSearch {
    id: Option<String>,
    internal_id: Option<String>,
    external_id: Option<String>,
    integration: Option<String>,
    status: Option<String>,
    entity: Option<String>,
    since: Option<String>,
}

async fn jobs(
    State(state): State<SharedState>,
    headers: HeaderMap,
    Query(q): Query<JobSearch>,
) -> Page {
    let s = session(&state, &headers).await?;
    if let Some(id) = q.id.as_deref().map(str::trim).filter(|i| !i.is_empty()) {
        return Ok(Redirect::to(&format!("/ui/jobs/{id}")).into_response());
    }
    let integration = match q.integration.as_deref().filter(|i| !i.is_empty()) {
        Some(raw) => Some(visible(&state, &s, raw).await?.id),
        None => None,
    };
    let status = q
        .status
        .as_deref()
        .filter(|s| !s.is_empty())
        .and_then(|s| s.parse().ok());
    let since = q
        .since
        .as_deref()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&chrono::Utc));
    let page_ = state
        .store
        .job_page(&JobQuery {
            tenant: s.who.tenant().map(str::to_owned),
            integration_id: integration,
            entity: q.entity.clone().filter(|e| !e.is_empty()),
            status,
            since,
            until: None,
            internal_id: q.internal_id.clone().filter(|v| !v.is_empty()),
            external_id: q.external_id.clone().filter(|v| !v.is_empty()),
            cursor: None,
            limit: 100,
        })
        .await
        .map_err(|e| fail(state.store_error(e)))?;
    let body = html! {
        form method="get" action="/ui/jobs" {
            input name="id" placeholder="job id" value=(q.id.clone().unwrap_or_default());
            input name="integration" placeholder="integration id" value=(q.integration.clone().unwrap_or_default());
            input name="internal_id" placeholder="internal id" value=(q.internal_id.clone().unwrap_or_default());
            input name="external_id" placeholder="external id" value=(q.external_id.clone().unwrap_or_default());
            input name="entity" placeholder="entity" value=(q.entity.clone().unwrap_or_default());
            select name="status" {
                option value="" { "any status" }
                @for st in switchyard_core::JobStatus::ALL {
                    option value=(st.as_str()) selected[q.status.as_deref() == Some(st.as_str())] { (st.as_str()) }
                }
            }
            input name="since" placeholder="since (RFC 3339)" value=(q.since.clone().unwrap_or_default());
            button { "Search" }
        }
        table {
            tr { th { "Job" } th { "Status" } th { "Entity" } th { "Internal id" } th { "External id" } th { "Tries" } th { "Received" } th { "Last error" } }
            @for j in &page_.jobs { tr {
                td { a href={"/ui/jobs/" (j.id)} { (j.id) } }
                td class=(status_class(&j.status)) { (j.status) }
                td { (j.entity) } td { (j.internal_id) } td { (j.external_id.clone().unwrap_or_default()) }
                td { (j.attempts) } td { (when(Some(j.received_at))) } td.error { (j.last_error.clone().unwrap_or_default()) }
            } }
        }
    };
    Ok(page("Jobs", Some(&s), body).into_response())
}

async fn job(
    State(state): State<SharedState>,
    headers: HeaderMap,
    Path(raw): Path<String>,
) -> Page {
    let s = session(&state, &headers).await?;
    let id: Uuid = crate::manage::id(&raw).map_err(fail)?;
    let j = state
        .store
        .job(id)
        .await
        .map_err(|e| fail(state.store_error(e)))?;
    if s.who.tenant().is_some_and(|t| t != j.tenant) {
        return Err(fail(ApiError::not_found(format!("job {id} not found"))));
    }
    let attempts = state
        .store
        .job_attempts(id)
        .await
        .map_err(|e| fail(state.store_error(e)))?;
    let body = html! {
        table {
            tr { th { "Status" } td class=(status_class(&j.status)) { (j.status) } }
            tr { th { "Target" } td { a href={"/ui/integrations/" (j.integration_id)} { (j.integration_id) } " (" (j.provider) ")" } }
            tr { th { "Event" } td { (j.entity) "." (j.event) " " (j.event_id) } }
            tr { th { "Ids" } td { "internal " (j.internal_id) " → external " (j.external_id.clone().unwrap_or_else(|| "–".into())) } }
            tr { th { "Received" } td { (when(Some(j.received_at))) } }
            tr { th { "Dead reason" } td { (j.dead_reason.clone().unwrap_or_default()) } }
        }
        h2 { "Attempts" }
        table {
            tr { th { "#" } th { "When" } th { "Outcome" } th { "HTTP" } th { "ms" } th { "Request" } th { "Provider's answer" } }
            @for a in &attempts { tr {
                td { (a.attempt) } td { (when(Some(a.started_at))) }
                td class=(status_class(&a.outcome)) { (a.outcome) " " (a.error_class.clone().unwrap_or_default()) }
                td { (a.status_code.map(|c| c.to_string()).unwrap_or_default()) } td { (a.duration_ms) }
                td { pre { (a.request.clone().unwrap_or_default()) } }
                td { pre { (a.error.clone().or(a.response.clone()).unwrap_or_default()) } }
            } }
        }
    };
    Ok(page(&format!("Job {id}"), Some(&s), body).into_response())
}

#[derive(Deserialize, Default)]
struct DlqSearch {
    provider: Option<String>,
    integration: Option<String>,
    reason: Option<String>,
}

impl DlqSearch {
    fn filter(&self, who: &Principal) -> Filter {
        Filter {
            provider: self.provider.clone().filter(|p| !p.is_empty()),
            tenant: who.tenant().map(str::to_owned),
            integration_id: self.integration.as_deref().and_then(|i| i.parse().ok()),
            reason: self.reason.as_deref().and_then(|r| r.parse().ok()),
            ..Default::default()
        }
    }
}

async fn dead_letters(
    State(state): State<SharedState>,
    headers: HeaderMap,
    Query(q): Query<DlqSearch>,
) -> Page {
    let s = session(&state, &headers).await?;
    let rows = dlq::list(&state.store, &q.filter(&s.who), 200)
        .await
        .map_err(|e| fail(ApiError::new(StatusCode::BAD_REQUEST, "dlq", e.to_string())))?;
    let hidden = html! {
        input type="hidden" name="csrf" value=(s.csrf);
        input type="hidden" name="provider" value=(q.provider.clone().unwrap_or_default());
        input type="hidden" name="integration" value=(q.integration.clone().unwrap_or_default());
        input type="hidden" name="reason" value=(q.reason.clone().unwrap_or_default());
    };
    let body = html! {
        form method="get" action="/ui/dlq" {
            input name="provider" placeholder="provider" value=(q.provider.clone().unwrap_or_default());
            input name="integration" placeholder="integration id" value=(q.integration.clone().unwrap_or_default());
            select name="reason" {
                option value="" { "any reason" }
                @for r in switchyard_core::DeadReason::ALL {
                    option value=(r.as_str()) selected[q.reason.as_deref() == Some(r.as_str())] { (r.as_str()) }
                }
            }
            button { "Filter" }
        }
        p { (rows.len()) " dead letter(s) match." }
        form.inline method="post" action="/ui/dlq/dry-run" { (hidden) button { "Dry run" } }
        form.inline method="post" action="/ui/dlq/replay" { (hidden) button id="replay" { "Replay these" } }
        form.inline method="post" action="/ui/dlq/purge" {
            (hidden)
            label { input type="checkbox" name="confirm" value="yes"; " yes, delete them for good" }
            button { "Purge these" }
        }
        table {
            tr { th { "Job" } th { "Provider" } th { "Entity" } th { "Internal id" } th { "Reason" } th { "Dead at" } th { "Error" } }
            @for d in &rows { tr {
                td { @if let Some(j) = d.job_id { a href={"/ui/jobs/" (j)} { (j) } } }
                td { (d.provider) } td { (d.entity.clone().unwrap_or_default()) } td { (d.internal_id.clone().unwrap_or_default()) }
                td { (d.reason.clone().unwrap_or_default()) } td { (when(d.dead_at)) } td.error { (d.error.clone().unwrap_or_default()) }
            } }
        }
    };
    Ok(page("Dead letters", Some(&s), body).into_response())
}

#[derive(Deserialize)]
struct DlqForm {
    csrf: String,
    provider: Option<String>,
    integration: Option<String>,
    reason: Option<String>,
    confirm: Option<String>,
}

async fn dlq_action(
    State(state): State<SharedState>,
    headers: HeaderMap,
    Path(action): Path<String>,
    Form(f): Form<DlqForm>,
) -> Page {
    let s = session(&state, &headers).await?;
    check_csrf(&s, &f.csrf)?;
    let filter = DlqSearch {
        provider: f.provider.clone(),
        integration: f.integration.clone(),
        reason: f.reason.clone(),
    }
    .filter(&s.who);
    let options = |dry_run| Options {
        dry_run,
        limit: 1000,
        rate: None,
        actor: s.who.actor(),
    };
    let err = |e: dlq::DlqError| fail(ApiError::new(StatusCode::BAD_REQUEST, "dlq", e.to_string()));
    match action.as_str() {
        "dry-run" => {
            let r = dlq::replay(&state.broker, &state.store, &filter, &options(true))
                .await
                .map_err(err)?;
            let body = html! {
                p { (r.matched) " dead letter(s) would be replayed; nothing was moved." }
                p { a href="/ui/dlq" { "Back to the dead letters" } }
            };
            Ok(page("Dry run", Some(&s), body).into_response())
        }
        "replay" | "purge" => {
            if action == "purge" && f.confirm.as_deref() != Some("yes") {
                let body = html! { p.error { "Tick the box to confirm: purged dead letters are gone for good." } p { a href="/ui/dlq" { "Back" } } };
                return Ok((
                    StatusCode::UNPROCESSABLE_ENTITY,
                    page("Not purged", Some(&s), body),
                )
                    .into_response());
            }
            let op = dlq::start(
                &state.broker,
                &state.store,
                filter,
                options(false),
                action == "replay",
                s.who.tenant(),
            )
            .await
            .map_err(err)?;
            Ok(Redirect::to(&format!("/ui/operations/{}", op.id)).into_response())
        }
        _ => Err(fail(ApiError::not_found("no such action"))),
    }
}

async fn operation(
    State(state): State<SharedState>,
    headers: HeaderMap,
    Path(raw): Path<String>,
) -> Page {
    let s = session(&state, &headers).await?;
    let op = crate::dlq::visible_operation(&state, &s.who, &raw)
        .await
        .map_err(fail)?;
    let running = op.status == "running";
    let body = html! {
        @if running { meta http-equiv="refresh" content="1"; }
        p id="status" class=(status_class(&op.status)) { (op.kind) ": " (op.status) }
        p { (op.done) " of " (op.matched) " matching dead letter(s) " (if running { "done so far" } else { "done" }) "." }
        @if let Some(e) = &op.error { p.error { (e) } }
        @if let Some(r) = &op.result {
            @for f in r["failed"].as_array().into_iter().flatten() { p.error { "not done: " (f.as_str().unwrap_or_default()) } }
        }
        p { a href="/ui/dlq" { "Back to the dead letters" } }
    };
    Ok(page("Operation", Some(&s), body).into_response())
}

async fn sync_run(
    State(state): State<SharedState>,
    headers: HeaderMap,
    Path(raw): Path<String>,
) -> Page {
    let s = session(&state, &headers).await?;
    let r = crate::manage::visible_run(&state, &s.who, &raw)
        .await
        .map_err(fail)?;
    let running = matches!(r.status.as_str(), "pending" | "running");
    let body = html! {
        @if running { meta http-equiv="refresh" content="1"; }
        p id="status" class=(status_class(&r.status)) { (r.status) }
        table {
            tr { th { "Pages" } th { "Jobs" } th { "Processed" } th { "Created" } th { "Updated" } th { "Failed" } th { "Skipped" } }
            tr { td { (r.pages) } td { (r.total) } td { (r.processed) } td { (r.created) } td { (r.updated) } td { (r.failed) } td { (r.skipped) } }
        }
        @if let Some(e) = &r.error { p.error { (e) } }
        @if running {
            form method="post" action={"/ui/sync-runs/" (r.id) "/cancel"} {
                input type="hidden" name="csrf" value=(s.csrf);
                button { "Cancel this run" }
            }
        }
        p { a href={"/ui/integrations/" (r.integration_id)} { "Back to the integration" } }
    };
    Ok(page("Sync run", Some(&s), body).into_response())
}

async fn cancel_run(
    State(state): State<SharedState>,
    headers: HeaderMap,
    Path(raw): Path<String>,
    Form(f): Form<CsrfForm>,
) -> Page {
    let s = session(&state, &headers).await?;
    check_csrf(&s, &f.csrf)?;
    let r = crate::manage::visible_run(&state, &s.who, &raw)
        .await
        .map_err(fail)?;
    let id = r.id;
    switchyard_ops::sync::cancel(&state.store, id, &s.who.actor())
        .await
        .map_err(|e| fail(state.store_error(e)))?;
    Ok(Redirect::to(&format!("/ui/sync-runs/{id}")).into_response())
}

#[derive(Deserialize, Default)]
struct RecordSearch {
    integration: Option<String>,
    entity: Option<String>,
    id: Option<String>,
}

async fn records(
    State(state): State<SharedState>,
    headers: HeaderMap,
    Query(q): Query<RecordSearch>,
) -> Page {
    let s = session(&state, &headers).await?;
    let list = visible_integrations(&state, &s).await?;
    let mut found = None;
    let mut note = None;
    if let (Some(i), Some(e), Some(id)) = (&q.integration, &q.entity, &q.id)
        && !id.is_empty()
    {
        let i = visible(&state, &s, i).await?;
        match state
            .store
            .find_record(Some(&i.tenant), i.id, e, id)
            .await
            .map_err(|e| fail(state.store_error(e)))?
        {
            Some(r) => found = Some(r),
            None => {
                note = Some(format!(
                    "{} has no {e} `{id}` that Switchyard knows of.",
                    i.name
                ))
            }
        }
    }
    let body = html! {
        form method="get" action="/ui/records" {
            select name="integration" {
                @for i in &list { option value=(i.id) selected[q.integration.as_deref() == Some(&i.id.to_string())] { (i.tenant) "/" (i.name) } }
            }
            input name="entity" placeholder="entity" value=(q.entity.clone().unwrap_or_default());
            input name="id" placeholder="its id for the record" value=(q.id.clone().unwrap_or_default());
            button { "Look up" }
        }
        @if let Some(n) = note { p { (n) } }
        @if let Some(r) = &found {
            p { "Record " (r.id) " (" (r.entity) ")" }
            table { tr { th { "In" } th { "Its id" } th { "Version" } th { "Last synced" } }
                @for l in &r.links { tr {
                    td { a href={"/ui/integrations/" (l.integration_id)} { (l.integration_name.clone().unwrap_or_else(|| l.integration_id.to_string())) } }
                    td { (l.external_id) } td { (l.last_source_version.map(|v| v.to_string()).unwrap_or_default()) } td { (when(Some(l.last_synced_at))) }
                } }
            }
        }
    };
    Ok(page("Records", Some(&s), body).into_response())
}

async fn notifications(State(state): State<SharedState>, headers: HeaderMap) -> Page {
    let s = session(&state, &headers).await?;
    let list = state
        .store
        .notifications(s.who.tenant(), 100)
        .await
        .map_err(|e| fail(state.store_error(e)))?;
    let body = html! {
        table { tr { th { "When" } th { "Kind" } th { "Message" } th { "Delivered" } }
            @for n in &list { tr {
                td { (when(Some(n.created_at))) } td { (n.kind) } td { (n.message) }
                td { (n.sent_at.map(|t| when(Some(t))).unwrap_or_else(|| format!("not yet ({} tries)", n.attempts))) }
            } }
        }
    };
    Ok(page("Notifications", Some(&s), body).into_response())
}
