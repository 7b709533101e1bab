//! The management API for routes (list, add, remove a route or a target), records (look a
//! record up by any system's id for it) and conflicts. Tenant keys see their tenant only.
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Json;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use switchyard_core::{ConflictPolicy, RouteOptions, WhenInactive};
use switchyard_ops::routes::{RouteError, RouteRequest};
use switchyard_providers::ProviderInfo;
use switchyard_store::{Conflict, RecordView, RouteView};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::jobs::Caller;
use crate::manage::{ApiResult, bad, body, id, query, visible};
use crate::openapi::Errors;
use crate::{ApiError, SharedState};

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct RouteList {
    routes: Vec<RouteView>,
}

/// The route as it is now, with what to check about it.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct RouteAdded {
    #[serde(flatten)]
    route: RouteView,
    /// Things that work but may not be what was meant (an entity a target does not take…).
    warnings: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct TargetRemoved {
    /// The route went with its last target.
    route_removed: bool,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ConflictList {
    conflicts: Vec<Conflict>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ConnectorList {
    connectors: Vec<ProviderInfo>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct RoutesQuery {
    /// The source integration's id.
    #[param(value_type = Uuid)]
    source: String,
}

/// `GET /v1/routes?source=`: the routes from an integration, with their options.
#[utoipa::path(get, path = "/v1/routes", tag = "routes",
    summary = "The routes from an integration",
    params(RoutesQuery),
    responses((status = 200, body = RouteList), Errors))]
pub(crate) async fn list_routes(
    State(state): State<SharedState>,
    Caller(who): Caller,
    q: Result<Query<RoutesQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<RouteList>> {
    let q = query(q)?;
    let source = visible(&state, &who, &q.source).await?;
    let routes = state
        .store
        .routes(source.id)
        .await
        .map_err(|e| state.store_error(e))?;
    Ok(Json(RouteList { routes }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct RouteBody {
    /// The integration the events come from (its id).
    #[schema(value_type = Uuid)]
    source: String,
    /// The entity it carries (`customer`, `invoice`…).
    entity: String,
    /// The event (`created`, `updated`…), or `*` for every one.
    #[serde(default = "any_event")]
    event: String,
    /// The integrations the events go to (their ids).
    #[schema(value_type = Vec<Uuid>)]
    targets: Vec<String>,
    /// Which events go: each JSON pointer into the event's data must hold one of its
    /// values (`{"/status": ["paid"]}`).
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
#[utoipa::path(post, path = "/v1/routes", tag = "routes",
    summary = "Add a route, or targets to one",
    request_body = RouteBody,
    responses((status = 201, body = RouteAdded), Errors))]
pub(crate) async fn add_route(
    State(state): State<SharedState>,
    Caller(who): Caller,
    b: Result<Json<RouteBody>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<(StatusCode, Json<RouteAdded>)> {
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
    Ok((
        StatusCode::CREATED,
        Json(RouteAdded {
            route: view,
            warnings,
        }),
    ))
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
#[utoipa::path(get, path = "/v1/routes/{id}", tag = "routes",
    summary = "Show a route",
    params(("id" = Uuid, Path, description = "The route's id")),
    responses((status = 200, body = RouteView), Errors))]
pub(crate) async fn show_route(
    State(state): State<SharedState>,
    Caller(who): Caller,
    Path(raw): Path<String>,
) -> ApiResult<Json<RouteView>> {
    Ok(Json(visible_route(&state, &who, &raw).await?))
}

/// `DELETE /v1/routes/{id}`: the route and all its targets; jobs already made go on.
#[utoipa::path(delete, path = "/v1/routes/{id}", tag = "routes",
    summary = "Remove a route and all its targets",
    description = "Jobs already made go on.",
    params(("id" = Uuid, Path, description = "The route's id")),
    responses((status = 204, description = "Removed"), Errors))]
pub(crate) async fn remove_route(
    State(state): State<SharedState>,
    Caller(who): Caller,
    Path(raw): Path<String>,
) -> ApiResult<StatusCode> {
    let route = visible_route(&state, &who, &raw).await?;
    switchyard_ops::routes::remove(&state.store, route.id)
        .await
        .map_err(|e| state.store_error(e))?;
    Ok(StatusCode::NO_CONTENT)
}

/// `DELETE /v1/routes/{id}/targets/{target}`: one target; the route goes with its last.
#[utoipa::path(delete, path = "/v1/routes/{id}/targets/{target}", tag = "routes",
    summary = "Remove one target from a route",
    description = "The route goes with its last target.",
    params(("id" = Uuid, Path, description = "The route's id"),
        ("target" = Uuid, Path, description = "The target integration's id")),
    responses((status = 200, body = TargetRemoved), Errors))]
pub(crate) async fn remove_route_target(
    State(state): State<SharedState>,
    Caller(who): Caller,
    Path((raw, target)): Path<(String, String)>,
) -> ApiResult<Json<TargetRemoved>> {
    let route = visible_route(&state, &who, &raw).await?;
    let target = id(&target)?;
    let gone = switchyard_ops::routes::remove_target(&state.store, route.id, target)
        .await
        .map_err(|e| state.store_error(e))?;
    Ok(Json(TargetRemoved {
        route_removed: gone,
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct RecordQuery {
    /// The integration whose id you have.
    #[param(value_type = Uuid)]
    integration: String,
    /// The entity (`customer`, `invoice`…).
    entity: String,
    /// That integration's id for the record.
    id: String,
}

/// `GET /v1/records?integration=&entity=&id=`: a record by any system's id for it, with its
/// id in every system it has reached.
#[utoipa::path(get, path = "/v1/records", tag = "records",
    summary = "Find a record by one system's id for it",
    description = "Answers its id in every system it has reached.",
    params(RecordQuery),
    responses((status = 200, body = RecordView), Errors))]
pub(crate) async fn find_record(
    State(state): State<SharedState>,
    Caller(who): Caller,
    q: Result<Query<RecordQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<RecordView>> {
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
    Ok(Json(record))
}

/// `GET /v1/records/{id}`.
#[utoipa::path(get, path = "/v1/records/{id}", tag = "records",
    summary = "Show a record",
    params(("id" = Uuid, Path, description = "Switchyard's id for the record")),
    responses((status = 200, body = RecordView), Errors))]
pub(crate) async fn show_record(
    State(state): State<SharedState>,
    Caller(who): Caller,
    Path(raw): Path<String>,
) -> ApiResult<Json<RecordView>> {
    let record = state
        .store
        .record(id(&raw)?)
        .await
        .map_err(|e| state.store_error(e))?;
    if who.tenant().is_some_and(|t| t != record.tenant) {
        return Err(ApiError::not_found(format!("record {raw} not found")));
    }
    Ok(Json(record))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct ConflictQuery {
    /// Only those involving this integration (its id).
    #[param(value_type = Option<Uuid>)]
    integration: Option<String>,
    /// Only this tenant's (admin token only).
    tenant: Option<String>,
    /// How many (default 100, at most 1000).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
}

/// `GET /v1/conflicts?integration=&tenant=&limit=`: newest first.
#[utoipa::path(get, path = "/v1/conflicts", tag = "records",
    summary = "Conflicts settled between systems, newest first",
    params(ConflictQuery),
    responses((status = 200, body = ConflictList), Errors))]
pub(crate) async fn conflicts(
    State(state): State<SharedState>,
    Caller(who): Caller,
    q: Result<Query<ConflictQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<ConflictList>> {
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
    Ok(Json(ConflictList { conflicts: rows }))
}

/// `GET /v1/connectors`: the provider kinds Switchyard can connect to.
#[utoipa::path(get, path = "/v1/connectors", tag = "connectors",
    summary = "The systems Switchyard connects to",
    responses((status = 200, body = ConnectorList), Errors))]
pub(crate) async fn connectors(_: Caller) -> ApiResult<Json<ConnectorList>> {
    Ok(Json(ConnectorList {
        connectors: switchyard_providers::providers()
            .into_iter()
            .copied()
            .collect(),
    }))
}

/// `GET /v1/connectors/{name}`: one connector's settings, credentials, limits and entities.
#[utoipa::path(get, path = "/v1/connectors/{name}", tag = "connectors",
    summary = "One connector: its settings, credentials, limits and entities",
    params(("name" = String, Path, description = "As listed (`quickbooks-online`, `xero`…)")),
    responses((status = 200, body = Object, description = "The connector's description"), Errors))]
pub(crate) async fn connector(_: Caller, Path(name): Path<String>) -> ApiResult<Json<Value>> {
    let kind = switchyard_providers::kind(&name)
        .map_err(|e| ApiError::new(StatusCode::NOT_FOUND, "not_found", e.reason))?;
    Ok(Json(kind.describe()))
}
