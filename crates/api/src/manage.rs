//! The management API: integrations, their statistics and mappings, and jobs. Bearer auth;
//! a tenant's key sees only its tenant (another tenant's integration or job is a 404).
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use switchyard_core::{Direction, IntegrationStatus, JobStatus};
use switchyard_ops::integrations as ops;
use switchyard_ops::integrations::IntegrationView;
use switchyard_store::{Integration, IntegrationFilter, JobQuery};
use switchyard_store::{IntegrationEvent, JobPage, Mapping, RouteView, Stats, SyncRun};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::jobs::Principal;
use crate::jobs::{Caller, Visible};
use crate::openapi::Errors;
use crate::{ApiError, SharedState};

/// The integration named in the path.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
#[allow(dead_code)] // Read by `Visible`; here to describe the path.
pub(crate) struct IntegrationId {
    /// The integration's id.
    id: Uuid,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct IntegrationList {
    integrations: Vec<IntegrationView>,
}

/// An integration with the routes from it.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct IntegrationDetail {
    #[serde(flatten)]
    integration: IntegrationView,
    routes: Vec<RouteView>,
}

/// An activated integration, with the held jobs it released.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Activated {
    #[serde(flatten)]
    integration: IntegrationView,
    /// Jobs held while it was inactive, now released in order.
    released_jobs: u64,
    /// Why they could not be released yet (the scheduler releases them later).
    #[serde(skip_serializing_if = "Option::is_none")]
    release_error: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct StatsView {
    integration: Uuid,
    window_hours: i64,
    since: DateTime<Utc>,
    stats: Stats,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct MappingList {
    mappings: Vec<Mapping>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct SyncRunList {
    sync_runs: Vec<SyncRun>,
}

#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct EventList {
    events: Vec<IntegrationEvent>,
}

/// What an integration's webhooks are accepted with: fingerprints, and what this request
/// generated (shown once).
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct SecretsView {
    /// The scheme (`api_key`, `basic`, `standard_webhooks`…).
    scheme: String,
    /// One per accepted secret, to name it in a removal.
    fingerprints: Vec<String>,
    #[serde(flatten)]
    generated: ops::Shown,
}

pub(crate) type ApiResult<T> = Result<T, ApiError>;

pub(crate) fn bad(field: &str, reason: impl Into<String>) -> ApiError {
    ApiError::new(
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_field",
        format!("{field}: {}", reason.into()),
    )
}

pub(crate) fn body<T>(b: Result<Json<T>, axum::extract::rejection::JsonRejection>) -> ApiResult<T> {
    b.map(|Json(v)| v)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_body", e.body_text()))
}

/// A body that may be left out (no `Content-Type`): its default then.
pub(crate) fn optional_body<T: Default>(
    b: Result<Option<Json<T>>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<T> {
    b.map(|b| b.map(|Json(v)| v).unwrap_or_default())
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_body", e.body_text()))
}

pub(crate) fn query<T>(
    q: Result<Query<T>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<T> {
    q.map(|Query(v)| v)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_query", e.body_text()))
}

pub(crate) fn id(raw: &str) -> ApiResult<Uuid> {
    raw.parse().map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_id",
            format!("`{raw}` is not an id (a UUID)"),
        )
    })
}

/// The integration, if the caller may see it.
pub(crate) async fn visible(
    state: &SharedState,
    who: &Principal,
    raw: &str,
) -> ApiResult<Integration> {
    let id = id(raw)?;
    let i = state
        .store
        .integration(id)
        .await
        .map_err(|e| state.store_error(e))?;
    if who.tenant().is_some_and(|t| t != i.tenant) {
        return Err(ApiError::not_found(format!("integration {id} not found")));
    }
    Ok(i)
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListQuery {
    /// Only this tenant's (admin token only; a tenant's key sees its own).
    tenant: Option<String>,
    provider: Option<String>,
    status: Option<IntegrationStatus>,
    /// Only the one with this name (within `tenant`, or within each tenant).
    name: Option<String>,
}

#[utoipa::path(get, path = "/v1/integrations", tag = "integrations",
    summary = "List integrations",
    description = "A tenant's key sees its own; the admin token sees all, or a tenant's with `tenant`.",
    params(ListQuery),
    responses((status = 200, body = IntegrationList), Errors))]
pub(crate) async fn list(
    State(state): State<SharedState>,
    Caller(who): Caller,
    q: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<IntegrationList>> {
    let q = query(q)?;
    let f = IntegrationFilter {
        tenant: who.tenant().map(str::to_owned).or(q.tenant),
        provider: q.provider,
        status: q.status,
        name: q.name,
    };
    let list = state
        .store
        .find_integrations(&f)
        .await
        .map_err(|e| state.store_error(e))?;
    Ok(Json(IntegrationList {
        integrations: list.iter().map(ops::view).collect(),
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateBody {
    tenant: Option<String>,
    name: String,
    /// A provider, or a built-in connector by name (`"connector": "quickbooks-online"`).
    #[serde(alias = "connector")]
    provider: String,
    #[serde(default)]
    status: Option<IntegrationStatus>,
    #[serde(default)]
    direction: Option<Direction>,
    #[serde(default)]
    entities: Vec<String>,
    #[serde(default = "empty_object")]
    settings: Value,
    #[serde(default = "empty_object")]
    inbound: Value,
    /// Goes in, never comes out.
    credentials: Option<Value>,
    /// `{"scheme": "api_key"}` (a key is generated and returned once, the default for a
    /// `webhook` sender), `{"scheme": "basic", "username": …}` (a password is generated),
    /// `{"scheme": "standard_webhooks"}` (a secret is generated unless `webhook_secrets`
    /// gives one), another signing scheme with `webhook_secrets`, `none` or `disabled`.
    webhook_auth: Option<Value>,
    webhook_secrets: Option<Vec<String>>,
    /// When it syncs on its own (see `core::schedule`).
    schedule: Option<Value>,
}

fn empty_object() -> Value {
    json!({})
}

/// An integration change refused: the field at fault (422), the vault (503), the store.
fn change_error(state: &SharedState, e: ops::CreateError) -> ApiError {
    match e {
        ops::CreateError::Invalid(e) => bad(&e.field, e.reason),
        ops::CreateError::Vault(e) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "vault_unavailable",
            format!("cannot encrypt secrets: {e}"),
        ),
        ops::CreateError::Store(e) => state.store_error(e),
    }
}

#[utoipa::path(post, path = "/v1/integrations", tag = "integrations",
    summary = "Create an integration",
    description = "A generated webhook API key, password or signing secret is answered once, in its own field.",
    request_body = CreateBody,
    responses((status = 201, body = IntegrationView), Errors))]
pub(crate) async fn create(
    State(state): State<SharedState>,
    Caller(who): Caller,
    b: Result<Json<CreateBody>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Response> {
    let b = body(b)?;
    let tenant = match (&who, b.tenant) {
        (Principal::Tenant(t), Some(asked)) if *t != asked => {
            return Err(bad(
                "tenant",
                "a tenant's key creates integrations of its own tenant only",
            ));
        }
        (Principal::Tenant(t), _) => t.clone(),
        (Principal::Admin, Some(t)) => t,
        (Principal::Admin, None) => return Err(bad("tenant", "required with the admin token")),
    };
    let created = ops::create(
        &state.store,
        &state.cfg.keyring,
        ops::CreateRequest {
            tenant,
            name: b.name,
            provider: b.provider,
            status: b.status,
            direction: b.direction,
            entities: b.entities,
            settings: b.settings,
            inbound: b.inbound,
            credentials: b.credentials,
            webhook_auth: b.webhook_auth,
            webhook_secrets: b.webhook_secrets.unwrap_or_default(),
            schedule: b.schedule,
            by_tenant: matches!(who, Principal::Tenant(_)),
        },
    )
    .await
    .map_err(|e| change_error(&state, e))?;
    let v = ops::view(&created.integration).with_generated(created.generated.as_ref());
    Ok((StatusCode::CREATED, Json(v)).into_response())
}

#[utoipa::path(get, path = "/v1/integrations/{id}", tag = "integrations",
    summary = "Show an integration, with its routes",
    params(IntegrationId),
    responses((status = 200, body = IntegrationDetail), Errors))]
pub(crate) async fn show(
    State(state): State<SharedState>,
    Visible { integration: i, .. }: Visible,
) -> ApiResult<Json<IntegrationDetail>> {
    let routes = state
        .store
        .routes(i.id)
        .await
        .map_err(|e| state.store_error(e))?;
    Ok(Json(IntegrationDetail {
        integration: ops::view(&i),
        routes,
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpdateBody {
    name: Option<String>,
    direction: Option<Direction>,
    entities: Option<Vec<String>>,
    settings: Option<Value>,
    inbound: Option<Value>,
    credentials: Option<Value>,
    schedule: Option<Value>,
}

#[utoipa::path(patch, path = "/v1/integrations/{id}", tag = "integrations",
    summary = "Change an integration",
    description = "Only the fields given change; `credentials` replaces the stored ones.",
    params(IntegrationId),
    request_body = UpdateBody,
    responses((status = 200, body = IntegrationView), Errors))]
pub(crate) async fn update(
    State(state): State<SharedState>,
    Visible { integration: i, .. }: Visible,
    b: Result<Json<UpdateBody>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Json<IntegrationView>> {
    let b = body(b)?;
    let updated = ops::update(
        &state.store,
        &state.cfg.keyring,
        &i,
        ops::UpdateRequest {
            name: b.name,
            direction: b.direction,
            entities: b.entities,
            settings: b.settings,
            inbound: b.inbound,
            credentials: b.credentials,
            schedule: b.schedule,
        },
    )
    .await
    .map_err(|e| change_error(&state, e))?;
    Ok(Json(ops::view(&updated)))
}

#[utoipa::path(delete, path = "/v1/integrations/{id}", tag = "integrations",
    summary = "Delete an integration",
    params(IntegrationId),
    responses((status = 204, description = "Deleted"), Errors))]
pub(crate) async fn delete(
    State(state): State<SharedState>,
    Visible { integration: i, .. }: Visible,
) -> ApiResult<StatusCode> {
    ops::delete(&state.store, &i)
        .await
        .map_err(|e| state.store_error(e))?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(post, path = "/v1/integrations/{id}/test", tag = "integrations",
    summary = "Test its connection",
    description = "Calls the provider with the stored credentials; a target in `testing` can then be activated.",
    params(IntegrationId),
    responses((status = 200, body = ops::TestOutcome), Errors))]
pub(crate) async fn test(
    State(state): State<SharedState>,
    Visible { integration: i, .. }: Visible,
) -> ApiResult<Json<ops::TestOutcome>> {
    let out = ops::test_connection(
        &state.store,
        state.cfg.keyring.clone(),
        switchyard_providers::http_client(),
        &i,
    )
    .await
    .map_err(|e| state.store_error(e))?;
    Ok(Json(out))
}

#[utoipa::path(post, path = "/v1/integrations/{id}/activate", tag = "integrations",
    summary = "Activate it",
    description = "The jobs held while it was not active are released, in the order they came.",
    params(IntegrationId),
    responses((status = 200, body = Activated), Errors))]
/// Activate; the jobs held while it was not active are released, in the order they came.
pub(crate) async fn activate(
    State(state): State<SharedState>,
    Visible {
        who,
        integration: i,
    }: Visible,
) -> ApiResult<Json<Activated>> {
    let by_tenant = matches!(who, Principal::Tenant(_));
    let a = ops::activate(&state.store, &state.broker, &i, by_tenant)
        .await
        .map_err(|e| match e {
            ops::StatusError::TestFirst { .. } => {
                ApiError::new(StatusCode::CONFLICT, "test_first", e.to_string())
            }
            ops::StatusError::Store(e) => state.store_error(e),
        })?;
    Ok(Json(Activated {
        integration: ops::view(&a.integration),
        released_jobs: a.released,
        release_error: a.release_error,
    }))
}

#[utoipa::path(post, path = "/v1/integrations/{id}/deactivate", tag = "integrations",
    summary = "Deactivate it",
    description = "Its webhooks are refused and jobs for it are held (or dropped, as each route says).",
    params(IntegrationId),
    responses((status = 200, body = IntegrationView), Errors))]
pub(crate) async fn deactivate(
    State(state): State<SharedState>,
    Visible { integration: i, .. }: Visible,
) -> ApiResult<Json<IntegrationView>> {
    let i = ops::deactivate(&state.store, &i)
        .await
        .map_err(|e| state.store_error(e))?;
    Ok(Json(ops::view(&i)))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct StatsQuery {
    /// The window, in hours (default 24, 1 to 2160).
    #[param(minimum = 1, maximum = 2160)]
    hours: Option<i64>,
}

#[utoipa::path(get, path = "/v1/integrations/{id}/stats", tag = "integrations",
    summary = "Its jobs' outcomes over a window",
    params(IntegrationId, StatsQuery),
    responses((status = 200, body = StatsView), Errors))]
pub(crate) async fn stats(
    State(state): State<SharedState>,
    Visible { integration: i, .. }: Visible,
    q: Result<Query<StatsQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<StatsView>> {
    let hours = query(q)?.hours.unwrap_or(24).clamp(1, 24 * 90);
    let since = Utc::now() - chrono::Duration::hours(hours);
    let s = state
        .store
        .stats(i.id, since)
        .await
        .map_err(|e| state.store_error(e))?;
    Ok(Json(StatsView {
        integration: i.id,
        window_hours: hours,
        since,
        stats: s,
    }))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct MappingQuery {
    /// The entity; required with `internal_id` or `external_id`.
    entity: Option<String>,
    /// Switchyard's id for the record.
    internal_id: Option<String>,
    /// The integration's id for the record.
    external_id: Option<String>,
    /// For a list: how many (default 100, at most 1000).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
}

#[utoipa::path(get, path = "/v1/integrations/{id}/mappings", tag = "records",
    summary = "Its id mappings",
    description = "By `entity` and `internal_id` or `external_id`, or a list (`limit`, at most 1000).",
    params(IntegrationId, MappingQuery),
    responses((status = 200, body = MappingList), Errors))]
pub(crate) async fn mappings(
    State(state): State<SharedState>,
    Visible { integration: i, .. }: Visible,
    q: Result<Query<MappingQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<MappingList>> {
    let q = query(q)?;
    let retry = state.cfg.retry_after_secs;
    let err = |e| ApiError::from_store(e, retry);
    let rows = match (&q.entity, &q.internal_id, &q.external_id) {
        (Some(e), Some(internal), None) => state
            .store
            .mapping(i.id, e, internal)
            .await
            .map_err(err)?
            .into_iter()
            .collect(),
        (Some(e), None, Some(external)) => state
            .store
            .mapping_by_external(i.id, e, external)
            .await
            .map_err(err)?
            .into_iter()
            .collect(),
        (None, Some(_), _) | (None, _, Some(_)) => {
            return Err(bad("entity", "required to look a mapping up by id"));
        }
        (_, Some(_), Some(_)) => {
            return Err(bad(
                "internal_id",
                "give internal_id or external_id, not both",
            ));
        }
        (e, None, None) => state
            .store
            .list_mappings(i.id, e.as_deref(), q.limit.unwrap_or(100).clamp(1, 1000))
            .await
            .map_err(err)?,
    };
    Ok(Json(MappingList { mappings: rows }))
}

#[utoipa::path(delete, path = "/v1/integrations/{id}/mappings/{entity}/{internal_id}", tag = "records",
    summary = "Forget one mapping",
    description = "The next job for the record creates it again at the target.",
    params(IntegrationId,
        ("entity" = String, Path, description = "The entity (`customer`, `invoice`…)"),
        ("internal_id" = String, Path, description = "The record's internal id")),
    responses((status = 204, description = "Forgotten"), Errors))]
pub(crate) async fn delete_mapping(
    State(state): State<SharedState>,
    Visible { integration: i, .. }: Visible,
    Path((_, entity, internal_id)): Path<(String, String, String)>,
) -> ApiResult<StatusCode> {
    ops::forget_mapping(&state.store, &i, &entity, &internal_id)
        .await
        .map_err(|e| state.store_error(e))?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct JobsQuery {
    /// The target integration.
    integration_id: Option<Uuid>,
    entity: Option<String>,
    status: Option<JobStatus>,
    /// Received at or after.
    since: Option<DateTime<Utc>>,
    /// Received before.
    until: Option<DateTime<Utc>>,
    /// The record's id where the event came from.
    internal_id: Option<String>,
    /// The target's id for the record.
    external_id: Option<String>,
    /// The previous page's `next_cursor`.
    cursor: Option<String>,
    /// Jobs per page (default 50, at most 500).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<i64>,
}

#[utoipa::path(get, path = "/v1/jobs", tag = "jobs",
    summary = "Search jobs",
    description = "Newest first, a page at a time: pass `next_cursor` back as `cursor`.",
    params(JobsQuery),
    responses((status = 200, body = JobPage), Errors))]
pub(crate) async fn jobs(
    State(state): State<SharedState>,
    Caller(who): Caller,
    q: Result<Query<JobsQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<JobPage>> {
    let q = query(q)?;
    let page = state
        .store
        .job_page(&JobQuery {
            tenant: who.tenant().map(str::to_owned),
            integration_id: q.integration_id,
            entity: q.entity,
            status: q.status,
            since: q.since,
            until: q.until,
            internal_id: q.internal_id,
            external_id: q.external_id,
            cursor: q.cursor,
            limit: q.limit.unwrap_or(50),
        })
        .await
        .map_err(|e| state.store_error(e))?;
    Ok(Json(page))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct SyncBody {
    /// Only these entities.
    entities: Option<Vec<String>>,
    /// Read every record, not only those changed since the last successful run.
    #[serde(default)]
    full: bool,
}

#[utoipa::path(post, path = "/v1/integrations/{id}/sync", tag = "syncs",
    summary = "Start a sync now",
    description = "Answers at once with the run; follow it at `GET /v1/sync-runs/{id}`.",
    params(IntegrationId),
    request_body(content = Option<SyncBody>, description = "Optional: which entities, and whether in full."),
    responses((status = 202, body = SyncRun), Errors))]
/// `POST /v1/integrations/{id}/sync`: start a sync now.
pub(crate) async fn sync(
    State(state): State<SharedState>,
    Visible {
        who,
        integration: i,
    }: Visible,
    b: Result<Option<Json<SyncBody>>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Response> {
    use switchyard_ops::sync::{SyncError, SyncRequest, start};
    let b = optional_body(b)?;
    if let Some(bad_entity) = b
        .entities
        .iter()
        .flatten()
        .find(|e| !switchyard_core::is_valid_name(e))
    {
        return Err(bad(
            "entities",
            format!("`{bad_entity}` is not an entity name"),
        ));
    }
    let req = SyncRequest {
        trigger: "manual",
        slot: None,
        started_by: who.actor(),
        entities: b.entities,
        full: b.full,
        now: Utc::now(),
    };
    match start(&state.store, &state.broker, &i, req).await {
        Ok(Some(run)) => Ok((StatusCode::ACCEPTED, Json(run)).into_response()),
        Ok(None) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "sync_exists",
            "this sync has already been started",
        )),
        Err(SyncError::Refused(m)) => Err(ApiError::new(StatusCode::CONFLICT, "cannot_sync", m)),
        Err(SyncError::Store(e)) => Err(state.store_error(e)),
        Err(e @ SyncError::Broker { .. }) => Err(ApiError::unavailable(
            "broker_unavailable",
            e.to_string(),
            state.cfg.retry_after_secs,
        )),
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(crate) struct RunsQuery {
    /// How many (default 20, at most 200).
    #[param(minimum = 1, maximum = 200)]
    limit: Option<i64>,
}

#[utoipa::path(get, path = "/v1/integrations/{id}/sync-runs", tag = "syncs",
    summary = "Its sync runs, newest first",
    params(IntegrationId, RunsQuery),
    responses((status = 200, body = SyncRunList), Errors))]
/// `GET /v1/integrations/{id}/sync-runs`: newest first.
pub(crate) async fn sync_runs(
    State(state): State<SharedState>,
    Visible { integration: i, .. }: Visible,
    q: Result<Query<RunsQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<SyncRunList>> {
    let q = query(q)?;
    let runs = state
        .store
        .sync_runs(i.id, q.limit.unwrap_or(20))
        .await
        .map_err(|e| state.store_error(e))?;
    Ok(Json(SyncRunList { sync_runs: runs }))
}

/// The run, if the caller may see it.
pub(crate) async fn visible_run(
    state: &SharedState,
    who: &Principal,
    raw: &str,
) -> ApiResult<switchyard_store::SyncRun> {
    let id = id(raw)?;
    let run = state
        .store
        .sync_run(id)
        .await
        .map_err(|e| state.store_error(e))?;
    if who.tenant().is_some_and(|t| t != run.tenant) {
        return Err(ApiError::not_found(format!("sync run {id} not found")));
    }
    Ok(run)
}

#[utoipa::path(get, path = "/v1/sync-runs/{id}", tag = "syncs",
    summary = "A sync run and its progress",
    params(("id" = Uuid, Path, description = "The run's id")),
    responses((status = 200, body = SyncRun), Errors))]
/// `GET /v1/sync-runs/{id}`
pub(crate) async fn sync_run(
    State(state): State<SharedState>,
    Caller(who): Caller,
    Path(raw): Path<String>,
) -> ApiResult<Json<SyncRun>> {
    Ok(Json(visible_run(&state, &who, &raw).await?))
}

#[utoipa::path(post, path = "/v1/sync-runs/{id}/cancel", tag = "syncs",
    summary = "Cancel a sync run",
    description = "No further page is read; its jobs not yet started are skipped.",
    params(("id" = Uuid, Path, description = "The run's id")),
    responses((status = 200, body = SyncRun), Errors))]
/// `POST /v1/sync-runs/{id}/cancel`: no further page; jobs not yet started are skipped.
pub(crate) async fn cancel_sync_run(
    State(state): State<SharedState>,
    Caller(who): Caller,
    Path(raw): Path<String>,
) -> ApiResult<Json<SyncRun>> {
    let run = visible_run(&state, &who, &raw).await?;
    let run = switchyard_ops::sync::cancel(&state.store, run.id, &who.actor())
        .await
        .map_err(|e| state.store_error(e))?;
    Ok(Json(run))
}

#[utoipa::path(get, path = "/v1/integrations/{id}/events", tag = "integrations",
    summary = "Its events, newest first",
    description = "Status changes made by Switchyard itself (`auto_disabled`…), reauthorizations.",
    params(IntegrationId),
    responses((status = 200, body = EventList), Errors))]
/// `GET /v1/integrations/{id}/events`: newest first (e.g. `auto_disabled`).
pub(crate) async fn events(
    State(state): State<SharedState>,
    Visible { integration: i, .. }: Visible,
) -> ApiResult<Json<EventList>> {
    let events = state
        .store
        .integration_events(i.id, 100)
        .await
        .map_err(|e| state.store_error(e))?;
    Ok(Json(EventList { events }))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct AddSecretBody {
    /// The sender's new signing secret (signing schemes); left out for `api_key` and
    /// `basic`, whose new key or password is generated and returned once.
    secret: Option<String>,
}

fn secrets_error(state: &SharedState, e: ops::SecretsError) -> ApiError {
    match e {
        ops::SecretsError::Invalid(e) => bad(&e.field, e.reason),
        ops::SecretsError::NotFound(_) => {
            ApiError::new(StatusCode::NOT_FOUND, "not_found", e.to_string())
        }
        ops::SecretsError::Changed => ApiError::new(StatusCode::CONFLICT, "changed", e.to_string()),
        ops::SecretsError::Vault(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "vault_unavailable",
            e.to_string(),
        ),
        ops::SecretsError::Store(e) => state.store_error(e),
    }
}

fn secrets_json(s: &ops::WebhookSecrets) -> SecretsView {
    SecretsView {
        scheme: s.scheme.clone(),
        fingerprints: s.fingerprints.clone(),
        generated: ops::Shown::from(s.generated.as_ref()),
    }
}

#[utoipa::path(get, path = "/v1/integrations/{id}/webhook-secrets", tag = "integrations",
    summary = "What its webhooks are accepted with",
    description = "Fingerprints only, never the secrets.",
    params(IntegrationId),
    responses((status = 200, body = SecretsView), Errors))]
/// `GET /v1/integrations/{id}/webhook-secrets`: fingerprints of what its webhooks are
/// accepted with (never the secrets).
pub(crate) async fn webhook_secrets(
    State(state): State<SharedState>,
    Visible { integration: i, .. }: Visible,
) -> ApiResult<Json<SecretsView>> {
    let s = ops::webhook_secrets(&state.cfg.keyring, &i).map_err(|e| secrets_error(&state, e))?;
    Ok(Json(secrets_json(&s)))
}

#[utoipa::path(post, path = "/v1/integrations/{id}/webhook-secrets", tag = "integrations",
    summary = "Accept another webhook secret",
    description = "For a rotation: the old ones stay accepted until removed. For `api_key` and `basic`, a new key or password is generated and answered once.",
    params(IntegrationId),
    request_body = AddSecretBody,
    responses((status = 200, body = SecretsView), Errors))]
/// `POST /v1/integrations/{id}/webhook-secrets`: accept another secret (or a generated API
/// key or password, returned once); the old ones stay accepted until removed.
pub(crate) async fn add_webhook_secret(
    State(state): State<SharedState>,
    Visible { integration: i, .. }: Visible,
    b: Result<Json<AddSecretBody>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Json<SecretsView>> {
    let b = body(b)?;
    let change = ops::SecretChange::Add {
        secrets: b.secret.into_iter().collect(),
    };
    let s = ops::change_webhook_secrets(&state.store, &state.cfg.keyring, &i, change)
        .await
        .map_err(|e| secrets_error(&state, e))?;
    Ok(Json(secrets_json(&s)))
}

#[utoipa::path(delete, path = "/v1/integrations/{id}/webhook-secrets/{fingerprint}", tag = "integrations",
    summary = "Stop accepting one webhook secret",
    description = "Never the last one.",
    params(IntegrationId, ("fingerprint" = String, Path, description = "As listed")),
    responses((status = 200, body = SecretsView), Errors))]
/// `DELETE /v1/integrations/{id}/webhook-secrets/{fingerprint}`: stop accepting one (never
/// the last).
pub(crate) async fn remove_webhook_secret(
    State(state): State<SharedState>,
    Visible { integration: i, .. }: Visible,
    Path((_, fingerprint)): Path<(String, String)>,
) -> ApiResult<Json<SecretsView>> {
    let change = ops::SecretChange::Remove { fingerprint };
    let s = ops::change_webhook_secrets(&state.store, &state.cfg.keyring, &i, change)
        .await
        .map_err(|e| secrets_error(&state, e))?;
    Ok(Json(secrets_json(&s)))
}
