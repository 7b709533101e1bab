//! A small stand-in for a provider's REST API, for `just up`'s demo: it creates, updates,
//! reads and deletes entities in memory, and logs every call. Listens on
//! `MOCK_PROVIDER_ADDR` (default 127.0.0.1:18080).
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
        "{}-{}",
        &entity[..entity.len().min(3)],
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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let addr = std::env::var("MOCK_PROVIDER_ADDR").unwrap_or_else(|_| "127.0.0.1:18080".into());
    let app = Router::new()
        .route("/", get(|| async { Json(json!({"ok": true})) }))
        .route("/api/{entity}", post(create))
        .route("/api/{entity}/{id}", get(read).put(update).delete(delete))
        .with_state(Arc::new(Provider::default()));
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("mock provider listening on http://{addr}");
    axum::serve(listener, app).await?;
    Ok(())
}
