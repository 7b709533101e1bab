//! Integrations and routes.
use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::FromRow;
use switchyard_core::{ConflictPolicy, Direction, IntegrationStatus, RouteOptions, WhenInactive};
use uuid::Uuid;

use crate::{Result, Store, StoreError};

/// Encrypted credentials as stored: the vault's ciphertext and the id of its key.
#[derive(Clone, PartialEq, Eq)]
pub struct SealedCredentials {
    pub key_id: String,
    pub bytes: Vec<u8>,
}

impl std::fmt::Debug for SealedCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SealedCredentials({}, {} bytes)",
            self.key_id,
            self.bytes.len()
        )
    }
}

#[derive(Debug, Clone, FromRow)]
pub struct Integration {
    pub id: Uuid,
    pub tenant: String,
    pub name: String,
    pub provider: String,
    #[sqlx(try_from = "String")]
    pub status: IntegrationStatus,
    #[sqlx(try_from = "String")]
    pub direction: Direction,
    pub entities: Vec<String>,
    pub settings: Value,
    pub inbound: Value,
    pub webhook_auth: Value,
    #[sqlx(skip)]
    pub credentials: Option<SealedCredentials>,
    /// The webhook signing secrets (a JSON list of strings), sealed.
    #[sqlx(skip)]
    pub webhook_secrets: Option<SealedCredentials>,
    /// When it syncs on its own (`core::schedule::Schedule`), if it does.
    pub schedule: Option<Value>,
    pub next_sync_at: Option<DateTime<Utc>>,
    pub last_sync_at: Option<DateTime<Utc>>,
    /// Failed syncs in a row.
    pub sync_failures: i32,
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(FromRow)]
struct IntegrationRow {
    #[sqlx(flatten)]
    integration: Integration,
    credentials: Option<Vec<u8>>,
    credentials_key_id: Option<String>,
    webhook_secrets: Option<Vec<u8>>,
    webhook_secrets_key_id: Option<String>,
}

impl From<IntegrationRow> for Integration {
    fn from(r: IntegrationRow) -> Self {
        let mut i = r.integration;
        let seal = |key_id: Option<String>, bytes: Option<Vec<u8>>| match (key_id, bytes) {
            (Some(key_id), Some(bytes)) => Some(SealedCredentials { key_id, bytes }),
            _ => None,
        };
        i.credentials = seal(r.credentials_key_id, r.credentials);
        i.webhook_secrets = seal(r.webhook_secrets_key_id, r.webhook_secrets);
        i
    }
}

const INTEGRATION_COLUMNS: &str = "id, tenant, name, provider, status, direction, entities, settings, \
     inbound, webhook_auth, credentials, credentials_key_id, webhook_secrets, \
     webhook_secrets_key_id, schedule, next_sync_at, last_sync_at, sync_failures, last_error, \
     created_at, updated_at";

#[derive(Debug, Clone)]
pub struct NewIntegration {
    pub id: Uuid,
    pub tenant: String,
    pub name: String,
    pub provider: String,
    pub status: IntegrationStatus,
    pub direction: Direction,
    pub entities: Vec<String>,
    pub settings: Value,
    pub inbound: Value,
    pub webhook_auth: Value,
    pub credentials: Option<SealedCredentials>,
    pub webhook_secrets: Option<SealedCredentials>,
    pub schedule: Option<Value>,
}

/// An integration's id and both sealed columns, each (bytes, key id).
type SealedRow = (
    Uuid,
    Option<Vec<u8>>,
    Option<String>,
    Option<Vec<u8>>,
    Option<String>,
    Option<Vec<u8>>,
    Option<String>,
);

/// Which sealed column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretKind {
    Credentials,
    WebhookSecrets,
    /// The OAuth2 token set (access and refresh tokens, expiry).
    OAuthToken,
    /// A consent flow's PKCE verifier (in `oauth_states`).
    OAuthVerifier,
}

impl SecretKind {
    fn columns(self) -> (&'static str, &'static str) {
        match self {
            SecretKind::Credentials => ("credentials", "credentials_key_id"),
            SecretKind::WebhookSecrets => ("webhook_secrets", "webhook_secrets_key_id"),
            SecretKind::OAuthToken => ("oauth_token", "oauth_token_key_id"),
            SecretKind::OAuthVerifier => ("verifier", "verifier_key_id"),
        }
    }

    /// The associated data a value of this kind is sealed with for integration `id`: a
    /// ciphertext copied to another integration, or to another column, does not open.
    pub fn aad(self, id: Uuid) -> Vec<u8> {
        let mut aad = id.as_bytes().to_vec();
        match self {
            SecretKind::Credentials => {}
            SecretKind::WebhookSecrets => aad.extend_from_slice(b"/webhook-secrets"),
            SecretKind::OAuthToken => aad.extend_from_slice(b"/oauth-token"),
            SecretKind::OAuthVerifier => aad.extend_from_slice(b"/oauth-verifier"),
        }
        aad
    }
}

/// A route's target, with what ingest needs to address the job.
#[derive(Debug, Clone, FromRow)]
pub struct RouteTarget {
    pub route_id: Uuid,
    pub entity: String,
    pub event: String,
    pub target_id: Uuid,
    pub target_name: String,
    pub tenant: String,
    pub provider: String,
    #[sqlx(try_from = "String")]
    pub status: IntegrationStatus,
    /// Which events the route lets through (`core::RouteFilter`).
    pub filter: Value,
    #[sqlx(try_from = "String")]
    pub conflict: ConflictPolicy,
    #[sqlx(try_from = "String")]
    pub when_inactive: WhenInactive,
    pub link_existing: bool,
    pub route_values: Value,
}

impl RouteTarget {
    /// What the route gives each of its jobs.
    pub fn options(&self) -> RouteOptions {
        RouteOptions {
            conflict: self.conflict,
            when_inactive: self.when_inactive,
            link_existing: self.link_existing,
            values: self.route_values.as_object().cloned().unwrap_or_default(),
        }
    }
}

/// A route's target, for display.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct RouteTargetView {
    pub id: Uuid,
    pub name: String,
    pub status: IntegrationStatus,
}

/// A route with its targets and options, for display.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct RouteView {
    pub id: Uuid,
    pub source_id: Uuid,
    pub entity: String,
    pub event: String,
    pub filter: Value,
    pub conflict: ConflictPolicy,
    pub when_inactive: WhenInactive,
    pub link_existing: bool,
    pub values: Value,
    pub targets: Vec<RouteTargetView>,
}

/// A route to add (or, for an existing (source, entity, event), targets to add and options
/// to set).
#[derive(Debug, Clone)]
pub struct NewRoute<'a> {
    pub source: Uuid,
    pub entity: &'a str,
    pub event: &'a str,
    pub targets: &'a [Uuid],
    pub filter: &'a Value,
    pub options: &'a RouteOptions,
}

impl Store {
    pub async fn create_integration(&self, new: &NewIntegration) -> Result<Integration> {
        let mut tx = self.begin_audited().await?;
        let parts = |c: &Option<SealedCredentials>| match c {
            Some(c) => (Some(c.key_id.clone()), Some(c.bytes.clone())),
            None => (None, None),
        };
        let (key_id, bytes) = parts(&new.credentials);
        let (wkey_id, wbytes) = parts(&new.webhook_secrets);
        let sql = format!(
            "INSERT INTO integrations (id, tenant, name, provider, status, direction, entities, \
             settings, inbound, webhook_auth, credentials, credentials_key_id, webhook_secrets, \
             webhook_secrets_key_id, schedule) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) RETURNING {INTEGRATION_COLUMNS}"
        );
        let row: IntegrationRow = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(new.id)
            .bind(&new.tenant)
            .bind(&new.name)
            .bind(&new.provider)
            .bind(new.status.as_str())
            .bind(new.direction.as_str())
            .bind(&new.entities)
            .bind(&new.settings)
            .bind(&new.inbound)
            .bind(&new.webhook_auth)
            .bind(bytes)
            .bind(key_id)
            .bind(wbytes)
            .bind(wkey_id)
            .bind(new.schedule.as_ref())
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| match StoreError::from(e) {
                StoreError::Conflict(_) => StoreError::Conflict(format!(
                    "tenant `{}` already has an integration named `{}`",
                    new.tenant, new.name
                )),
                other => other,
            })?;
        tx.commit().await?;
        Ok(row.into())
    }

    /// Replace a sealed column (new secrets, or the same ones re-sealed under another key).
    /// With `expect`, only if the column still holds exactly that sealed value (so a
    /// concurrent change is not overwritten). Returns whether it was replaced.
    pub async fn set_sealed(
        &self,
        id: Uuid,
        kind: SecretKind,
        sealed: Option<&SealedCredentials>,
        expect: Option<&SealedCredentials>,
    ) -> Result<bool> {
        let mut tx = self.begin_audited().await?;
        let (col, key_col) = kind.columns();
        // With `expect`, a compare-and-set on the stored bytes themselves: a value changed
        // since it was read (even under the same key) is left alone.
        let sql = format!(
            "UPDATE integrations SET {col} = $2, {key_col} = $3, updated_at = now() \
             WHERE id = $1 AND ($4::bytea IS NULL OR ({col} = $4 AND {key_col} = $5))"
        );
        let r = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .bind(sealed.map(|s| s.bytes.clone()))
            .bind(sealed.map(|s| s.key_id.clone()))
            .bind(expect.map(|s| s.bytes.clone()))
            .bind(expect.map(|s| s.key_id.clone()))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(r.rows_affected() == 1)
    }

    /// Every sealed value not sealed under `key_id` (deleted integrations included: their
    /// secrets must rotate too).
    pub async fn sealed_not_under(
        &self,
        key_id: &str,
    ) -> Result<Vec<(Uuid, SecretKind, SealedCredentials)>> {
        let rows: Vec<SealedRow> = sqlx::query_as(
            "SELECT id, credentials, credentials_key_id, webhook_secrets, webhook_secrets_key_id, \
               oauth_token, oauth_token_key_id \
             FROM integrations WHERE credentials_key_id <> $1 OR webhook_secrets_key_id <> $1 \
               OR oauth_token_key_id <> $1",
        )
        .bind(key_id)
        .fetch_all(self.pool())
        .await?;
        let mut out = Vec::new();
        for (id, c, ck, w, wk, o, ok) in rows {
            if let (Some(bytes), Some(k)) = (o, ok)
                && k != key_id
            {
                out.push((
                    id,
                    SecretKind::OAuthToken,
                    SealedCredentials { key_id: k, bytes },
                ));
            }
            if let (Some(bytes), Some(k)) = (c, ck)
                && k != key_id
            {
                out.push((
                    id,
                    SecretKind::Credentials,
                    SealedCredentials { key_id: k, bytes },
                ));
            }
            if let (Some(bytes), Some(k)) = (w, wk)
                && k != key_id
            {
                out.push((
                    id,
                    SecretKind::WebhookSecrets,
                    SealedCredentials { key_id: k, bytes },
                ));
            }
        }
        Ok(out)
    }

    /// Replace how an integration's webhooks are authenticated.
    /// Replace an integration's webhook policy if it is still `expect` (compare-and-set):
    /// `false` when it changed meanwhile.
    pub async fn set_webhook_auth(&self, id: Uuid, policy: &Value, expect: &Value) -> Result<bool> {
        let mut tx = self.begin_audited().await?;
        let r = sqlx::query(
            "UPDATE integrations SET webhook_auth = $2, updated_at = now() \
             WHERE id = $1 AND webhook_auth = $3 AND deleted_at IS NULL",
        )
        .bind(id)
        .bind(policy)
        .bind(expect)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(r.rows_affected() == 1)
    }

    /// An integration that has not been deleted.
    pub async fn integration(&self, id: Uuid) -> Result<Integration> {
        let sql = format!(
            "SELECT {INTEGRATION_COLUMNS} FROM integrations WHERE id = $1 AND deleted_at IS NULL"
        );
        let row: Option<IntegrationRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(self.pool())
            .await?;
        row.map(Into::into)
            .ok_or_else(|| StoreError::NotFound(format!("integration {id}")))
    }

    pub async fn integration_by_name(&self, tenant: &str, name: &str) -> Result<Integration> {
        let sql = format!(
            "SELECT {INTEGRATION_COLUMNS} FROM integrations \
             WHERE tenant = $1 AND name = $2 AND deleted_at IS NULL"
        );
        let row: Option<IntegrationRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(tenant)
            .bind(name)
            .fetch_optional(self.pool())
            .await?;
        row.map(Into::into).ok_or_else(|| {
            StoreError::NotFound(format!("integration `{name}` of tenant `{tenant}`"))
        })
    }

    pub async fn list_integrations(&self, tenant: Option<&str>) -> Result<Vec<Integration>> {
        let sql = format!(
            "SELECT {INTEGRATION_COLUMNS} FROM integrations \
             WHERE deleted_at IS NULL AND ($1::text IS NULL OR tenant = $1) ORDER BY tenant, name"
        );
        let rows: Vec<IntegrationRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(tenant)
            .fetch_all(self.pool())
            .await?;
        Ok(rows.into_iter().map(Into::into).collect())
    }

    /// Active integrations with a schedule other than manual, due at `now` or never planned
    /// yet (the scheduler's tick).
    pub async fn scheduled_integrations(&self, now: DateTime<Utc>) -> Result<Vec<Integration>> {
        let sql = format!(
            "SELECT {INTEGRATION_COLUMNS} FROM integrations \
             WHERE status = 'active' AND deleted_at IS NULL AND schedule IS NOT NULL \
               AND schedule->>'every' <> 'manual' \
               AND (next_sync_at IS NULL OR next_sync_at <= $1) \
             ORDER BY next_sync_at NULLS FIRST LIMIT 500"
        );
        let rows: Vec<IntegrationRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(now)
            .fetch_all(self.pool())
            .await?;
        Ok(rows.into_iter().map(Into::into).collect())
    }

    /// Add a route from `source` for (`entity`, `event`) to `targets`, or add targets to the
    /// route that already exists for that pair.
    pub async fn add_route(&self, r: &NewRoute<'_>) -> Result<Uuid> {
        let mut tx = self.begin_audited().await?;
        let route_id: Uuid = sqlx::query_scalar(
            "INSERT INTO routes (id, source_integration_id, entity, event, filter, conflict, \
               when_inactive, link_existing, route_values) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
             ON CONFLICT (source_integration_id, entity, event) DO UPDATE SET \
               filter = EXCLUDED.filter, conflict = EXCLUDED.conflict, \
               when_inactive = EXCLUDED.when_inactive, link_existing = EXCLUDED.link_existing, \
               route_values = EXCLUDED.route_values \
             RETURNING id",
        )
        .bind(Uuid::now_v7())
        .bind(r.source)
        .bind(r.entity)
        .bind(r.event)
        .bind(r.filter)
        .bind(r.options.conflict.as_str())
        .bind(r.options.when_inactive.as_str())
        .bind(r.options.link_existing)
        .bind(Value::Object(r.options.values.clone()))
        .fetch_one(&mut *tx)
        .await?;
        for target in r.targets {
            sqlx::query(
                "INSERT INTO route_targets (route_id, target_integration_id) VALUES ($1, $2) \
                 ON CONFLICT DO NOTHING",
            )
            .bind(route_id)
            .bind(target)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(route_id)
    }

    /// Remove a route with all its targets; jobs already made keep going.
    pub async fn remove_route(&self, route: Uuid) -> Result<()> {
        let mut tx = self.begin_audited().await?;
        let r = sqlx::query("DELETE FROM routes WHERE id = $1")
            .bind(route)
            .execute(&mut *tx)
            .await?;
        if r.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("route {route}")));
        }
        tx.commit().await?;
        Ok(())
    }

    /// Remove one target from a route; the route goes too when it was its last target.
    /// Returns whether the route itself was removed.
    pub async fn remove_route_target(&self, route: Uuid, target: Uuid) -> Result<bool> {
        let mut tx = self.begin_audited().await?;
        let r = sqlx::query(
            "DELETE FROM route_targets WHERE route_id = $1 AND target_integration_id = $2",
        )
        .bind(route)
        .bind(target)
        .execute(&mut *tx)
        .await?;
        if r.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!(
                "integration {target} as a target of route {route}"
            )));
        }
        let gone = sqlx::query(
            "DELETE FROM routes WHERE id = $1 \
             AND NOT EXISTS (SELECT 1 FROM route_targets WHERE route_id = $1)",
        )
        .bind(route)
        .execute(&mut *tx)
        .await?
        .rows_affected()
            == 1;
        tx.commit().await?;
        Ok(gone)
    }

    /// One route, for display (with the id of its source, to check who may see it).
    pub async fn route(&self, route: Uuid) -> Result<RouteView> {
        let source: Uuid =
            sqlx::query_scalar("SELECT source_integration_id FROM routes WHERE id = $1")
                .bind(route)
                .fetch_optional(self.pool())
                .await?
                .ok_or_else(|| StoreError::NotFound(format!("route {route}")))?;
        self.routes(source)
            .await?
            .into_iter()
            .find(|r| r.id == route)
            .ok_or_else(|| StoreError::NotFound(format!("route {route}")))
    }

    /// Every target of every route from `source`, whatever the entity and event.
    pub async fn route_targets(&self, source: Uuid) -> Result<Vec<RouteTarget>> {
        let rows = sqlx::query_as(
            "SELECT r.id AS route_id, r.entity, r.event, i.id AS target_id, i.name AS target_name, \
                    i.tenant, i.provider, i.status, r.filter, r.conflict, r.when_inactive, \
                    r.link_existing, r.route_values \
             FROM routes r \
             JOIN route_targets t ON t.route_id = r.id \
             JOIN integrations i ON i.id = t.target_integration_id AND i.deleted_at IS NULL \
             WHERE r.source_integration_id = $1 \
             ORDER BY r.entity, r.event, i.name",
        )
        .bind(source)
        .fetch_all(self.pool())
        .await?;
        Ok(rows)
    }

    /// The sources that route `entity` records (any event) into `target`: (source, entity).
    pub async fn route_sources(&self, target: Uuid) -> Result<Vec<(Integration, String)>> {
        let pairs: Vec<(Uuid, String)> = sqlx::query_as(
            "SELECT DISTINCT r.source_integration_id, r.entity FROM routes r \
             JOIN route_targets t ON t.route_id = r.id WHERE t.target_integration_id = $1 \
             ORDER BY r.entity",
        )
        .bind(target)
        .fetch_all(self.pool())
        .await?;
        let mut out = Vec::with_capacity(pairs.len());
        for (source, entity) in pairs {
            match self.integration(source).await {
                Ok(i) => out.push((i, entity)),
                Err(StoreError::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// Routes from `source`, grouped, for display.
    pub async fn routes(&self, source: Uuid) -> Result<Vec<RouteView>> {
        let mut out: Vec<RouteView> = Vec::new();
        for t in self.route_targets(source).await? {
            let target = RouteTargetView {
                id: t.target_id,
                name: t.target_name.clone(),
                status: t.status,
            };
            match out.last_mut() {
                Some(r) if r.id == t.route_id => r.targets.push(target),
                _ => out.push(RouteView {
                    id: t.route_id,
                    source_id: source,
                    entity: t.entity,
                    event: t.event,
                    filter: t.filter,
                    conflict: t.conflict,
                    when_inactive: t.when_inactive,
                    link_existing: t.link_existing,
                    values: t.route_values,
                    targets: vec![target],
                }),
            }
        }
        Ok(out)
    }
}
