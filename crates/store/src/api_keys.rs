//! Tenants' API keys for the management API, stored as SHA-256 digests.
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::FromRow;
use uuid::Uuid;

use crate::{Result, Store, StoreError};

#[derive(Debug, Clone, FromRow, Serialize, utoipa::ToSchema)]
pub struct ApiKey {
    pub id: Uuid,
    pub tenant: String,
    pub name: String,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl Store {
    pub async fn create_api_key(
        &self,
        tenant: &str,
        name: &str,
        key_sha256: &str,
    ) -> Result<ApiKey> {
        let mut tx = self.begin_audited().await?;
        let key = sqlx::query_as(
            "INSERT INTO api_keys (id, tenant, name, key_sha256) VALUES ($1, $2, $3, $4) \
             RETURNING id, tenant, name, created_at, revoked_at",
        )
        .bind(Uuid::now_v7())
        .bind(tenant)
        .bind(name)
        .bind(key_sha256)
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| match StoreError::from(e) {
            StoreError::Conflict(_) => StoreError::Conflict(format!(
                "tenant `{tenant}` already has an API key named `{name}`"
            )),
            other => other,
        })?;
        tx.commit().await?;
        Ok(key)
    }

    /// The tenant an active key belongs to.
    pub async fn api_key_tenant(&self, key_sha256: &str) -> Result<Option<String>> {
        Ok(sqlx::query_scalar(
            "SELECT tenant FROM api_keys WHERE key_sha256 = $1 AND revoked_at IS NULL",
        )
        .bind(key_sha256)
        .fetch_optional(self.pool())
        .await?)
    }

    pub async fn list_api_keys(&self, tenant: Option<&str>) -> Result<Vec<ApiKey>> {
        Ok(sqlx::query_as(
            "SELECT id, tenant, name, created_at, revoked_at FROM api_keys \
             WHERE $1::text IS NULL OR tenant = $1 ORDER BY tenant, name",
        )
        .bind(tenant)
        .fetch_all(self.pool())
        .await?)
    }

    pub async fn revoke_api_key(&self, tenant: &str, name: &str) -> Result<()> {
        let mut tx = self.begin_audited().await?;
        let r = sqlx::query(
            "UPDATE api_keys SET revoked_at = now() WHERE tenant = $1 AND name = $2 AND revoked_at IS NULL",
        )
        .bind(tenant)
        .bind(name)
        .execute(&mut *tx)
        .await?;
        if r.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!(
                "active API key `{name}` of tenant `{tenant}`"
            )));
        }
        tx.commit().await?;
        Ok(())
    }
}
