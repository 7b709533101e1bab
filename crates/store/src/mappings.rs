//! Internal id ↔ external id mappings.
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::FromRow;
use uuid::Uuid;

use crate::{Result, Store};

#[derive(Debug, Clone, FromRow, Serialize)]
pub struct Mapping {
    pub integration_id: Uuid,
    pub entity: String,
    pub internal_id: String,
    pub external_id: String,
    pub last_source_version: Option<i64>,
    pub last_job_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub last_synced_at: DateTime<Utc>,
}

impl Store {
    pub async fn mapping(
        &self,
        integration: Uuid,
        entity: &str,
        internal_id: &str,
    ) -> Result<Option<Mapping>> {
        Ok(sqlx::query_as(
            "SELECT integration_id, entity, internal_id, external_id, last_source_version, \
                    last_job_id, created_at, last_synced_at \
             FROM id_mappings WHERE integration_id = $1 AND entity = $2 AND internal_id = $3",
        )
        .bind(integration)
        .bind(entity)
        .bind(internal_id)
        .fetch_optional(self.pool())
        .await?)
    }

    pub async fn list_mappings(
        &self,
        integration: Uuid,
        entity: Option<&str>,
        limit: i64,
    ) -> Result<Vec<Mapping>> {
        Ok(sqlx::query_as(
            "SELECT integration_id, entity, internal_id, external_id, last_source_version, \
                    last_job_id, created_at, last_synced_at \
             FROM id_mappings WHERE integration_id = $1 AND ($2::text IS NULL OR entity = $2) \
             ORDER BY entity, internal_id LIMIT $3",
        )
        .bind(integration)
        .bind(entity)
        .bind(limit)
        .fetch_all(self.pool())
        .await?)
    }

    /// How many mappings an integration has (for progress checks and benchmarks).
    pub async fn count_mappings(&self, integration: Uuid) -> Result<i64> {
        Ok(
            sqlx::query_scalar("SELECT count(*) FROM id_mappings WHERE integration_id = $1")
                .bind(integration)
                .fetch_one(self.pool())
                .await?,
        )
    }
}
