//! The management API for routes (list, add, remove a route or a target), records (look a
//! record up by any system's id for it) and conflicts. Tenant keys see their tenant only.
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Json;
use serde::Deserialize;
use serde_json::{Value, json};
use switchyard_core::{ConflictPolicy, RouteOptions, WhenInactive};
use switchyard_ops::routes::{RouteError, RouteRequest};
use uuid::Uuid;

use crate::jobs::Caller;
use crate::manage::{ApiResult, bad, body, id, query, visible};
use crate::{ApiError, SharedState};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RoutesQuery {
    /// The source integration.
    source: String,
}

/// `GET /v1/routes?source=`: the routes from an integration, with their options.
pub(crate) async fn list_routes(
    State(state): State<SharedState>,
    Caller(who): Caller,
    q: Result<Query<RoutesQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Value>> {
    let q = query(q)?;
    let source = visible(&state, &who, &q.source).await?;
    let routes = state
        .store
        .routes(source.id)
        .await
        .map_err(|e| state.store_error(e))?;
    Ok(Json(json!({"routes": routes})))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RouteBody {
    source: String,
    entity: String,
    #[serde(default = "any_event")]
    event: String,
    targets: Vec<String>,
    #[serde(default = "empty_object")]
    filter: Value,
    #[serde(default)]
    conflict: ConflictPolicy,
    #[serde(default)]
    when_inactive: WhenInactive,
    #[serde(default)]
    link_existing: bool,
    /// Values the route gives its jobs' bodies (`/_switchyard/route/<name>`).
    #[serde(default)]
    values: serde_json::Map<String, Value>,
}

fn any_event() -> String {
    "*".into()
}

fn empty_object() -> Value {
    json!({})
}

/// `POST /v1/routes`: add a route (or targets and options to an existing one).
pub(crate) async fn add_route(
    State(state): State<SharedState>,
    Caller(who): Caller,
    b: Result<Json<RouteBody>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<(StatusCode, Json<Value>)> {
    let b = body(b)?;
    let source = visible(&state, &who, &b.source)
        .await
        .map_err(|_| bad("source", format!("no integration `{}`", b.source)))?;
    let mut targets = Vec::with_capacity(b.targets.len());
    for (n, t) in b.targets.iter().enumerate() {
        targets.push(
            visible(&state, &who, t)
                .await
                .map_err(|_| bad(&format!("targets[{n}]"), format!("no integration `{t}`")))?,
        );
    }
    let request = RouteRequest {
        source: &source,
        entity: &b.entity,
        event: &b.event,
        targets: &targets,
        filter: &b.filter,
        options: RouteOptions {
            conflict: b.conflict,
            when_inactive: b.when_inactive,
            link_existing: b.link_existing,
            values: b.values,
        },
    };
    let (route, warnings) = switchyard_ops::routes::add_checked(&state.store, &request)
        .await
        .map_err(|e| match e {
            RouteError::Invalid(f) => bad(&f.field, f.reason),
            RouteError::Store(e) => state.store_error(e),
        })?;
    let view = state
        .store
        .route(route)
        .await
        .map_err(|e| state.store_error(e))?;
    let mut v = json!(view);
    v["warnings"] = json!(warnings);
    Ok((StatusCode::CREATED, Json(v)))
}

/// The route, if the caller may see its source.
async fn visible_route(
    state: &SharedState,
    who: &crate::jobs::Principal,
    raw: &str,
) -> ApiResult<switchyard_store::RouteView> {
    let route = state
        .store
        .route(id(raw)?)
        .await
        .map_err(|e| state.store_error(e))?;
    visible(state, who, &route.source_id.to_string())
        .await
        .map_err(|_| ApiError::not_found(format!("route {raw} not found")))?;
    Ok(route)
}

/// `GET /v1/routes/{id}`.
pub(crate) async fn show_route(
    State(state): State<SharedState>,
    Caller(who): Caller,
    Path(raw): Path<String>,
) -> ApiResult<Json<Value>> {
    Ok(Json(json!(visible_route(&state, &who, &raw).await?)))
}

/// `DELETE /v1/routes/{id}`: the route and all its targets; jobs already made go on.
pub(crate) async fn remove_route(
    State(state): State<SharedState>,
    Caller(who): Caller,
    Path(raw): Path<String>,
) -> ApiResult<StatusCode> {
    let route = visible_route(&state, &who, &raw).await?;
    state
        .store
        .remove_route(route.id)
        .await
        .map_err(|e| state.store_error(e))?;
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /v1/routes/{id}/targets/{target}`: one target; the route goes with its last.
pub(crate) async fn remove_route_target(
    State(state): State<SharedState>,
    Caller(who): Caller,
    Path((raw, target)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let route = visible_route(&state, &who, &raw).await?;
    let target = id(&target)?;
    let gone = state
        .store
        .remove_route_target(route.id, target)
        .await
        .map_err(|e| state.store_error(e))?;
    Ok(Json(json!({"route_removed": gone})))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RecordQuery {
    /// The integration whose id you have.
    integration: String,
    entity: String,
    /// That integration's id for the record.
    id: String,
}

/// `GET /v1/records?integration=&entity=&id=`: a record by any system's id for it, with its
/// id in every system it has reached.
pub(crate) async fn find_record(
    State(state): State<SharedState>,
    Caller(who): Caller,
    q: Result<Query<RecordQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Value>> {
    let q = query(q)?;
    let i = visible(&state, &who, &q.integration).await?;
    let record = state
        .store
        .find_record(Some(&i.tenant), i.id, &q.entity, &q.id)
        .await
        .map_err(|e| state.store_error(e))?
        .ok_or_else(|| {
            ApiError::not_found(format!(
                "{} has no {} `{}` that Switchyard knows of",
                i.name, q.entity, q.id
            ))
        })?;
    Ok(Json(json!(record)))
}

/// `GET /v1/records/{id}`.
pub(crate) async fn show_record(
    State(state): State<SharedState>,
    Caller(who): Caller,
    Path(raw): Path<String>,
) -> ApiResult<Json<Value>> {
    let record = state
        .store
        .record(id(&raw)?)
        .await
        .map_err(|e| state.store_error(e))?;
    if who.tenant().is_some_and(|t| t != record.tenant) {
        return Err(ApiError::not_found(format!("record {raw} not found")));
    }
    Ok(Json(json!(record)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ConflictQuery {
    integration: Option<String>,
    tenant: Option<String>,
    limit: Option<i64>,
}

/// `GET /v1/conflicts?integration=&tenant=&limit=`: newest first.
pub(crate) async fn conflicts(
    State(state): State<SharedState>,
    Caller(who): Caller,
    q: Result<Query<ConflictQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Value>> {
    let q = query(q)?;
    let integration: Option<Uuid> = match &q.integration {
        Some(raw) => Some(visible(&state, &who, raw).await?.id),
        None => None,
    };
    let tenant = who.tenant().map(str::to_owned).or(q.tenant);
    let rows = state
        .store
        .conflicts(tenant.as_deref(), integration, q.limit.unwrap_or(100))
        .await
        .map_err(|e| state.store_error(e))?;
    Ok(Json(json!({"conflicts": rows})))
}

/// `GET /v1/connectors`: the provider kinds Switchyard can connect to.
pub(crate) async fn connectors(_: Caller) -> ApiResult<Json<Value>> {
    Ok(Json(
        json!({"connectors": switchyard_providers::providers()}),
    ))
}

/// `GET /v1/connectors/{name}`: one connector's settings, credentials, limits and entities.
pub(crate) async fn connector(_: Caller, Path(name): Path<String>) -> ApiResult<Json<Value>> {
    let kind = switchyard_providers::kind(&name)
        .map_err(|e| ApiError::new(StatusCode::NOT_FOUND, "not_found", e.reason))?;
    Ok(Json(kind.describe()))
}
