//! The management API: integrations, their statistics and mappings, and jobs. Bearer auth;
//! a tenant's key sees only its tenant (another tenant's integration or job is a 404).
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Value, json};
use switchyard_core::{Direction, IntegrationStatus, JobStatus};
use switchyard_ops::integrations as ops;
use switchyard_store::{Integration, IntegrationFilter, JobQuery};
use uuid::Uuid;

use crate::jobs::Principal;
use crate::jobs::{Caller, Visible};
use crate::{ApiError, SharedState};

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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListQuery {
    tenant: Option<String>,
    provider: Option<String>,
    status: Option<IntegrationStatus>,
}

pub(crate) async fn list(
    State(state): State<SharedState>,
    Caller(who): Caller,
    q: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Value>> {
    let q = query(q)?;
    let f = IntegrationFilter {
        tenant: who.tenant().map(str::to_owned).or(q.tenant),
        provider: q.provider,
        status: q.status,
    };
    let list = state
        .store
        .find_integrations(&f)
        .await
        .map_err(|e| state.store_error(e))?;
    Ok(Json(
        json!({"integrations": list.iter().map(ops::view).collect::<Vec<_>>()}),
    ))
}

#[derive(Debug, Deserialize)]
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
    let mut v = ops::view(&created.integration);
    if let Some(g) = &created.generated {
        v[g.field()] = json!(g.value());
    }
    Ok((StatusCode::CREATED, Json(v)).into_response())
}

pub(crate) async fn show(
    State(state): State<SharedState>,
    Visible { integration: i, .. }: Visible,
) -> ApiResult<Json<Value>> {
    let mut v = ops::view(&i);
    v["routes"] = serde_json::to_value(
        state
            .store
            .routes(i.id)
            .await
            .map_err(|e| state.store_error(e))?,
    )
    .unwrap_or_default();
    Ok(Json(v))
}

#[derive(Debug, Deserialize)]
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

pub(crate) async fn update(
    State(state): State<SharedState>,
    Visible { integration: i, .. }: Visible,
    b: Result<Json<UpdateBody>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Json<Value>> {
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

pub(crate) async fn delete(
    State(state): State<SharedState>,
    Visible { integration: i, .. }: Visible,
) -> ApiResult<StatusCode> {
    state
        .store
        .delete_integration(i.id)
        .await
        .map_err(|e| state.store_error(e))?;
    Ok(StatusCode::NO_CONTENT)
}

pub(crate) async fn test(
    State(state): State<SharedState>,
    Visible { integration: i, .. }: Visible,
) -> ApiResult<Json<Value>> {
    let out = ops::test_connection(
        &state.store,
        state.cfg.keyring.clone(),
        switchyard_providers::http_client(),
        &i,
    )
    .await
    .map_err(|e| state.store_error(e))?;
    Ok(Json(serde_json::to_value(out).unwrap_or_default()))
}

async fn set_status(
    state: SharedState,
    i: Integration,
    status: IntegrationStatus,
) -> ApiResult<Json<Value>> {
    let retry = state.cfg.retry_after_secs;
    state
        .store
        .set_status(i.id, status, None)
        .await
        .map_err(|e| ApiError::from_store(e, retry))?;
    let i = state
        .store
        .integration(i.id)
        .await
        .map_err(|e| ApiError::from_store(e, retry))?;
    Ok(Json(ops::view(&i)))
}

/// Activate; the jobs held while it was not active are released, in the order they came.
pub(crate) async fn activate(
    State(state): State<SharedState>,
    Visible {
        who,
        integration: i,
    }: Visible,
) -> ApiResult<Json<Value>> {
    // A tenant's target goes live once its connection test passed (`testing`); `inactive`
    // and `error` ones are tested first.
    let is_target = switchyard_providers::info(&i.provider).is_some_and(|p| p.is_target);
    if matches!(who, Principal::Tenant(_))
        && is_target
        && matches!(
            i.status,
            IntegrationStatus::Inactive | IntegrationStatus::Error
        )
    {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "test_first",
            format!(
                "integration `{}` is {}: run its connection test first (POST /v1/integrations/{}/test); it can be activated once the test passes",
                i.name, i.status, i.id
            ),
        ));
    }
    let mut v = set_status(state.clone(), i, IntegrationStatus::Active).await?;
    let id: Uuid = v["id"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_default();
    match switchyard_ops::held::release(&state.store, &state.broker, id).await {
        Ok(n) => v["released_jobs"] = json!(n),
        Err(e) => {
            // Still held: the scheduler releases them once the broker takes them.
            tracing::warn!(integration = %id, error = %e, "activated, but its held jobs could not be released yet");
            v["released_jobs"] = json!(0);
            v["release_error"] = json!(e.to_string());
        }
    }
    Ok(v)
}

pub(crate) async fn deactivate(
    State(state): State<SharedState>,
    Visible { integration: i, .. }: Visible,
) -> ApiResult<Json<Value>> {
    set_status(state, i, IntegrationStatus::Inactive).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StatsQuery {
    /// The window, in hours (default 24).
    hours: Option<i64>,
}

pub(crate) async fn stats(
    State(state): State<SharedState>,
    Visible { integration: i, .. }: Visible,
    q: Result<Query<StatsQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Value>> {
    let hours = query(q)?.hours.unwrap_or(24).clamp(1, 24 * 90);
    let since = Utc::now() - chrono::Duration::hours(hours);
    let s = state
        .store
        .stats(i.id, since)
        .await
        .map_err(|e| state.store_error(e))?;
    Ok(Json(
        json!({"integration": i.id, "window_hours": hours, "since": since, "stats": s}),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct MappingQuery {
    entity: Option<String>,
    internal_id: Option<String>,
    external_id: Option<String>,
    limit: Option<i64>,
}

pub(crate) async fn mappings(
    State(state): State<SharedState>,
    Visible { integration: i, .. }: Visible,
    q: Result<Query<MappingQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Value>> {
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
    Ok(Json(json!({"mappings": rows})))
}

pub(crate) async fn delete_mapping(
    State(state): State<SharedState>,
    Visible { integration: i, .. }: Visible,
    Path((_, entity, internal_id)): Path<(String, String, String)>,
) -> ApiResult<StatusCode> {
    state
        .store
        .delete_mapping(i.id, &entity, &internal_id)
        .await
        .map_err(|e| state.store_error(e))?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct JobsQuery {
    integration_id: Option<Uuid>,
    entity: Option<String>,
    status: Option<JobStatus>,
    since: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
    cursor: Option<String>,
    limit: Option<i64>,
}

pub(crate) async fn jobs(
    State(state): State<SharedState>,
    Caller(who): Caller,
    q: Result<Query<JobsQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Value>> {
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
            cursor: q.cursor,
            limit: q.limit.unwrap_or(50),
        })
        .await
        .map_err(|e| state.store_error(e))?;
    Ok(Json(serde_json::to_value(page).unwrap_or_default()))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct SyncBody {
    /// Only these entities.
    entities: Option<Vec<String>>,
    /// Read every record, not only those changed since the last successful run.
    #[serde(default)]
    full: bool,
}

/// `POST /v1/integrations/{id}/sync`: start a sync now.
pub(crate) async fn sync(
    State(state): State<SharedState>,
    Visible {
        who,
        integration: i,
    }: Visible,
    b: Option<Json<SyncBody>>,
) -> ApiResult<Response> {
    use switchyard_ops::sync::{SyncError, SyncRequest, start};
    let b = b.map(|Json(b)| b).unwrap_or_default();
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
        Ok(Some(run)) => Ok((StatusCode::ACCEPTED, Json(json!(run))).into_response()),
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RunsQuery {
    limit: Option<i64>,
}

/// `GET /v1/integrations/{id}/sync-runs`: newest first.
pub(crate) async fn sync_runs(
    State(state): State<SharedState>,
    Visible { integration: i, .. }: Visible,
    q: Result<Query<RunsQuery>, axum::extract::rejection::QueryRejection>,
) -> ApiResult<Json<Value>> {
    let q = query(q)?;
    let runs = state
        .store
        .sync_runs(i.id, q.limit.unwrap_or(20))
        .await
        .map_err(|e| state.store_error(e))?;
    Ok(Json(json!({"sync_runs": runs})))
}

/// The run, if the caller may see it.
async fn visible_run(
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

/// `GET /v1/sync-runs/{id}`
pub(crate) async fn sync_run(
    State(state): State<SharedState>,
    Caller(who): Caller,
    Path(raw): Path<String>,
) -> ApiResult<Json<Value>> {
    Ok(Json(json!(visible_run(&state, &who, &raw).await?)))
}

/// `POST /v1/sync-runs/{id}/cancel`: no further page; jobs not yet started are skipped.
pub(crate) async fn cancel_sync_run(
    State(state): State<SharedState>,
    Caller(who): Caller,
    Path(raw): Path<String>,
) -> ApiResult<Json<Value>> {
    let run = visible_run(&state, &who, &raw).await?;
    let run = state
        .store
        .cancel_run(run.id, &who.actor())
        .await
        .map_err(|e| state.store_error(e))?;
    Ok(Json(json!(run)))
}

/// `GET /v1/integrations/{id}/events`: newest first (e.g. `auto_disabled`).
pub(crate) async fn events(
    State(state): State<SharedState>,
    Visible { integration: i, .. }: Visible,
) -> ApiResult<Json<Value>> {
    let events = state
        .store
        .integration_events(i.id, 100)
        .await
        .map_err(|e| state.store_error(e))?;
    Ok(Json(json!({"events": events})))
}

#[derive(Debug, Default, Deserialize)]
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

fn secrets_json(s: &ops::WebhookSecrets) -> Value {
    let mut v = json!({"scheme": s.scheme, "fingerprints": s.fingerprints});
    if let Some(g) = &s.generated {
        v[g.field()] = json!(g.value());
    }
    v
}

/// `GET /v1/integrations/{id}/webhook-secrets`: fingerprints of what its webhooks are
/// accepted with (never the secrets).
pub(crate) async fn webhook_secrets(
    State(state): State<SharedState>,
    Visible { integration: i, .. }: Visible,
) -> ApiResult<Json<Value>> {
    let s = ops::webhook_secrets(&state.cfg.keyring, &i).map_err(|e| secrets_error(&state, e))?;
    Ok(Json(secrets_json(&s)))
}

/// `POST /v1/integrations/{id}/webhook-secrets`: accept another secret (or a generated API
/// key or password, returned once); the old ones stay accepted until removed.
pub(crate) async fn add_webhook_secret(
    State(state): State<SharedState>,
    Visible { integration: i, .. }: Visible,
    b: Result<Json<AddSecretBody>, axum::extract::rejection::JsonRejection>,
) -> ApiResult<Json<Value>> {
    let b = body(b)?;
    let change = ops::SecretChange::Add {
        secrets: b.secret.into_iter().collect(),
    };
    let s = ops::change_webhook_secrets(&state.store, &state.cfg.keyring, &i, change)
        .await
        .map_err(|e| secrets_error(&state, e))?;
    Ok(Json(secrets_json(&s)))
}

/// `DELETE /v1/integrations/{id}/webhook-secrets/{fingerprint}`: stop accepting one (never
/// the last).
pub(crate) async fn remove_webhook_secret(
    State(state): State<SharedState>,
    Visible { integration: i, .. }: Visible,
    Path((_, fingerprint)): Path<(String, String)>,
) -> ApiResult<Json<Value>> {
    let change = ops::SecretChange::Remove { fingerprint };
    let s = ops::change_webhook_secrets(&state.store, &state.cfg.keyring, &i, change)
        .await
        .map_err(|e| secrets_error(&state, e))?;
    Ok(Json(secrets_json(&s)))
}
