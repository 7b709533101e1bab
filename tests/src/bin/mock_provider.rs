//! A small stand-in for a provider's REST API, for `just up`'s demo: it creates, updates,
//! reads and deletes entities in memory, and logs every call. It also plays a WooCommerce
//! store whose orders can be listed (`GET /wp-json/wc/v3/orders?page=&per_page=&modified_after=`,
//! page count in `X-WP-TotalPages`), for the demo's import sync. Listens on
//! `MOCK_PROVIDER_ADDR` (default 127.0.0.1:18080).
//!
//! Ids are unique across restarts (`ord-<start tag>-1000`, the tag is the start time in
//! base 36), so records it created before a restart, and the hub's mappings to them, never
//! collide with new ones.
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Json};
use axum::routing::{get, post};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::Mutex;

#[derive(Default)]
struct Provider {
    /// Tells this process's ids from an earlier one's.
    tag: String,
    next: AtomicU64,
    items: Mutex<HashMap<(String, String), Value>>,
    by_key: Mutex<HashMap<String, String>>,
}

type S = Arc<Provider>;

async fn create(
    State(p): State<S>,
    Path(entity): Path<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> impl IntoResponse {
    // Honour Idempotency-Key the way payment APIs do: the same key returns the same entity.
    let key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    if let Some(k) = &key
        && let Some(id) = p.by_key.lock().await.get(k).cloned()
    {
        println!("POST /api/{entity} (replayed Idempotency-Key) -> 200 {id}");
        return (StatusCode::OK, Json(json!({"id": id})));
    }
    let id = format!(
        "{}-{}-{}",
        &entity[..entity.len().min(3)],
        p.tag,
        1000 + p.next.fetch_add(1, Ordering::SeqCst)
    );
    p.items
        .lock()
        .await
        .insert((entity.clone(), id.clone()), body.clone());
    if let Some(k) = key {
        p.by_key.lock().await.insert(k, id.clone());
    }
    println!("POST /api/{entity} -> 201 {id} {body}");
    (StatusCode::CREATED, Json(json!({"id": id})))
}

async fn update(
    State(p): State<S>,
    Path((entity, id)): Path<(String, String)>,
    Json(body): Json<Value>,
) -> impl IntoResponse {
    let mut items = p.items.lock().await;
    match items.get_mut(&(entity.clone(), id.clone())) {
        Some(v) => {
            *v = body.clone();
            println!("PUT /api/{entity}/{id} -> 200 {body}");
            (StatusCode::OK, Json(json!({"id": id})))
        }
        None => {
            println!("PUT /api/{entity}/{id} -> 404");
            (
                StatusCode::NOT_FOUND,
                Json(json!({"message": format!("no {entity} {id}")})),
            )
        }
    }
}

async fn read(State(p): State<S>, Path((entity, id)): Path<(String, String)>) -> impl IntoResponse {
    match p.items.lock().await.get(&(entity, id)) {
        Some(v) => (StatusCode::OK, Json(v.clone())),
        None => (StatusCode::NOT_FOUND, Json(json!({"message": "not found"}))),
    }
}

async fn delete(State(p): State<S>, Path((entity, id)): Path<(String, String)>) -> StatusCode {
    let gone = p
        .items
        .lock()
        .await
        .remove(&(entity.clone(), id.clone()))
        .is_some();
    println!(
        "DELETE /api/{entity}/{id} -> {}",
        if gone { 204 } else { 404 }
    );
    if gone {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::NOT_FOUND
    }
}

/// WooCommerce's order list: seven orders, modified on 2026-11-20, paginated.
async fn woo_orders(
    axum::extract::Query(q): axum::extract::Query<HashMap<String, String>>,
) -> impl IntoResponse {
    let per_page: usize = q
        .get("per_page")
        .and_then(|v| v.parse().ok())
        .unwrap_or(10)
        .clamp(1, 100);
    let page: usize = q
        .get("page")
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
        .max(1);
    let since = q.get("modified_after").cloned().unwrap_or_default();
    let all: Vec<Value> = (1..=7)
        .map(|n| {
            json!({"id": 500 + n, "status": "processing", "currency": "EUR",
                   "total": format!("{}.50", 10 * n),
                   "date_modified_gmt": format!("2026-11-20T09:{n:02}:00"),
                   "billing": {"email": format!("buyer{n}@example.com")}})
        })
        // Stored times have no zone (GMT); `modified_after` is RFC 3339 here.
        .filter(|o| {
            since.is_empty()
                || format!("{}Z", o["date_modified_gmt"].as_str().unwrap_or_default()) > since
        })
        .collect();
    let pages = all.len().div_ceil(per_page).max(1);
    let items: Vec<Value> = all
        .iter()
        .skip((page - 1) * per_page)
        .take(per_page)
        .cloned()
        .collect();
    println!(
        "GET /wp-json/wc/v3/orders page {page}/{pages} -> {} orders",
        items.len()
    );
    (
        [
            ("X-WP-Total", all.len().to_string()),
            ("X-WP-TotalPages", pages.to_string()),
        ],
        Json(Value::Array(items)),
    )
}

/// The start time in milliseconds, in base 36: short, and different at every start.
fn start_tag() -> String {
    let mut ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let mut tag = Vec::new();
    while ms > 0 {
        tag.push(char::from_digit((ms % 36) as u32, 36).unwrap_or('0'));
        ms /= 36;
    }
    tag.iter().rev().collect()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let addr = std::env::var("MOCK_PROVIDER_ADDR").unwrap_or_else(|_| "127.0.0.1:18080".into());
    let app = Router::new()
        .route("/", get(|| async { Json(json!({"ok": true})) }))
        .route("/api/{entity}", post(create))
        .route("/api/{entity}/{id}", get(read).put(update).delete(delete))
        .route("/wp-json/wc/v3/orders", get(woo_orders))
        .with_state(Arc::new(Provider {
            tag: start_tag(),
            ..Provider::default()
        }));
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("mock provider listening on http://{addr}");
    axum::serve(listener, app).await?;
    Ok(())
}
