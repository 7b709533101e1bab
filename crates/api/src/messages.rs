//! `/v1/channel-routes…` and `/v1/messages…`: events sent as messages over channels with
//! fallback (WhatsApp, then SMS), and the messages with each channel's outcome.
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Json;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use switchyard_ops::messages::{Channel, RouteError};
use switchyard_store::{ChannelRoute, Message};
use utoipa::{IntoParams, ToSchema};

use crate::jobs::{Caller, Principal};
use crate::manage::{bad, body, id, query, visible};
use crate::openapi::Errors;
use crate::{ApiError, SharedState};

type ApiResult<T> = Result<T, ApiError>;

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ChannelRouteBody {
    /// The integration whose events are sent (its id, or tenant/name).
    source: String,
    entity: String,
    /// An event name, or `*` for every event of the entity.
    #[serde(default = "any_event")]
    event: String,
    /// Which events it takes (the same filters as routes').
    #[serde(default = "empty_object")]
    filter: Value,
    /// Tried in this order: the next when one fails for good or reports no delivery in time.
    channels: Vec<Channel>,
}

fn any_event() -> String {
    "*".into()
}

fn empty_object() -> Value {
    json!({})
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ChannelRouteList {
    routes: Vec<ChannelRoute>,
}

#[utoipa::path(post, path = "/v1/channel-routes", tag = "messages",
    summary = "Send a source's events as messages over channels, with fallback",
    description = "Each event the route takes becomes a message, sent on the first channel (a connector's operation such as WhatsApp's `send_template`); when a channel fails for good, or reports no delivery within its connector's deadline, the next is tried. A message is sent at most once per channel.",
    request_body = ChannelRouteBody,
    responses((status = 201, body = ChannelRoute), Errors))]
pub(crate) async fn add(
    State(state): State<SharedState>,
    Caller(who): Caller,
    b: Result<Json<ChannelRouteBody>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<(StatusCode, Json<ChannelRoute>)> {
    let b = body(b)?;
    let source = visible(&state, &who, &b.source)
        .await
        .map_err(|_| bad("source", format!("no integration `{}`", b.source)))?;
    for (n, c) in b.channels.iter().enumerate() {
        visible(&state, &who, &c.integration_id.to_string())
            .await
            .map_err(|_| {
                bad(
                    &format!("channels[{n}].integration_id"),
                    format!("no integration {}", c.integration_id),
                )
            })?;
    }
    let route = switchyard_ops::messages::add_route(
        &state.store,
        &source,
        &b.entity,
        &b.event,
        b.filter,
        b.channels,
    )
    .await
    .map_err(|e| match e {
        RouteError::Invalid { field, reason } => bad(&field, reason),
        RouteError::Store(e) => state.store_error(e),
    })?;
    Ok((StatusCode::CREATED, Json(route)))
}

#[utoipa::path(get, path = "/v1/channel-routes", tag = "messages",
    summary = "List channel routes",
    responses((status = 200, body = ChannelRouteList), Errors))]
pub(crate) async fn list(
    State(state): State<SharedState>,
    Caller(who): Caller,
) -> ApiResult<Json<ChannelRouteList>> {
    let routes = state
        .store
        .channel_routes(None, who.tenant())
        .await
        .map_err(|e| state.store_error(e))?;
    Ok(Json(ChannelRouteList { routes }))
}

/// The channel route `raw` names, if the caller may see it.
async fn visible_route(state: &SharedState, who: &Principal, raw: &str) -> ApiResult<ChannelRoute> {
    let missing = || ApiError::not_found(format!("channel route {raw} not found"));
    let route = match state.store.channel_route(id(raw)?).await {
        Ok(r) => r,
        Err(switchyard_store::StoreError::NotFound(_)) => return Err(missing()),
        Err(e) => return Err(state.store_error(e)),
    };
    if who.tenant().is_some_and(|t| t != route.tenant) {
        return Err(missing());
    }
    Ok(route)
}

#[utoipa::path(get, path = "/v1/channel-routes/{id}", tag = "messages",
    summary = "Show a channel route",
    params(("id" = Uuid, Path, description = "The channel route's id")),
    responses((status = 200, body = ChannelRoute), Errors))]
pub(crate) async fn show(
    State(state): State<SharedState>,
    Caller(who): Caller,
    Path(raw): Path<String>,
) -> ApiResult<Json<ChannelRoute>> {
    Ok(Json(visible_route(&state, &who, &raw).await?))
}

#[utoipa::path(delete, path = "/v1/channel-routes/{id}", tag = "messages",
    summary = "Remove a channel route and its messages",
    params(("id" = Uuid, Path, description = "The channel route's id")),
    responses((status = 204, description = "Removed"), Errors))]
pub(crate) async fn remove(
    State(state): State<SharedState>,
    Caller(who): Caller,
    Path(raw): Path<String>,
) -> ApiResult<StatusCode> {
    let route = visible_route(&state, &who, &raw).await?;
    state
        .store
        .remove_channel_route(route.id)
        .await
        .map_err(|e| state.store_error(e))?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(crate) struct MessageQuery {
    /// One channel route's.
    route: Option<uuid::Uuid>,
    /// `sending`, `delivered` or `failed`.
    status: Option<String>,
    /// At most this many (default 100, at most 1000).
    limit: Option<i64>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct MessageList {
    messages: Vec<Message>,
}

#[utoipa::path(get, path = "/v1/messages", tag = "messages",
    summary = "List messages, newest first",
    description = "Each with the channel being tried and every channel's outcome.",
    params(MessageQuery),
    responses((status = 200, body = MessageList), Errors))]
pub(crate) async fn messages(
    State(state): State<SharedState>,
    Caller(who): Caller,
    q: Result<Query<MessageQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<MessageList>> {
    let q = query(q)?;
    if let Some(s) = &q.status
        && !["sending", "delivered", "failed"].contains(&s.as_str())
    {
        return Err(bad("status", "one of sending, delivered, failed"));
    }
    let messages = state
        .store
        .list_messages(
            who.tenant(),
            q.route,
            q.status.as_deref(),
            q.limit.unwrap_or(100),
        )
        .await
        .map_err(|e| state.store_error(e))?;
    Ok(Json(MessageList { messages }))
}

#[utoipa::path(get, path = "/v1/messages/{id}", tag = "messages",
    summary = "Show a message and its channels' outcomes",
    params(("id" = Uuid, Path, description = "The message's id")),
    responses((status = 200, body = Message), Errors))]
pub(crate) async fn message(
    State(state): State<SharedState>,
    Caller(who): Caller,
    Path(raw): Path<String>,
) -> ApiResult<Json<Message>> {
    let missing = || ApiError::not_found(format!("message {raw} not found"));
    let m = match state.store.message(id(&raw)?).await {
        Ok(m) => m,
        Err(switchyard_store::StoreError::NotFound(_)) => return Err(missing()),
        Err(e) => return Err(state.store_error(e)),
    };
    if who.tenant().is_some_and(|t| t != m.tenant) {
        return Err(missing());
    }
    Ok(Json(m))
}
