//! Mappings: at each target, the records the hub wrote there, by their origin's id (the
//! `id_mappings` view over the identity model's links).
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::FromRow;
use uuid::Uuid;

use crate::{Result, Store};

#[derive(Debug, Clone, FromRow, Serialize, utoipa::ToSchema)]
pub struct Mapping {
    pub integration_id: Uuid,
    pub entity: String,
    pub internal_id: String,
    pub external_id: String,
    pub last_source_version: Option<i64>,
    pub last_job_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    pub last_synced_at: DateTime<Utc>,
    /// Where the record was first seen (the nil id: the tenant's own ids).
    pub source_integration_id: Uuid,
    pub record_id: Uuid,
}

/// The columns of [`Mapping`], in its field order.
pub(crate) const MAPPING_COLUMNS: &str = "integration_id, entity, internal_id, external_id, \
     last_source_version, last_job_id, created_at, last_synced_at, source_integration_id, record_id";

/// One entity's mapping, on a pool or inside a transaction.
pub(crate) async fn mapping_in<'e, E>(
    exec: E,
    integration: Uuid,
    entity: &str,
    internal_id: &str,
) -> Result<Option<Mapping>>
where
    E: sqlx::Executor<'e, Database = sqlx::Postgres>,
{
    let sql = format!(
        "SELECT {MAPPING_COLUMNS} FROM id_mappings \
         WHERE integration_id = $1 AND entity = $2 AND internal_id = $3 \
         ORDER BY created_at LIMIT 1"
    );
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(integration)
        .bind(entity)
        .bind(internal_id)
        .fetch_optional(exec)
        .await?)
}

impl Store {
    pub async fn mapping(
        &self,
        integration: Uuid,
        entity: &str,
        internal_id: &str,
    ) -> Result<Option<Mapping>> {
        mapping_in(self.pool(), integration, entity, internal_id).await
    }

    pub async fn list_mappings(
        &self,
        integration: Uuid,
        entity: Option<&str>,
        limit: i64,
    ) -> Result<Vec<Mapping>> {
        let sql = format!(
            "SELECT {MAPPING_COLUMNS} FROM id_mappings \
             WHERE integration_id = $1 AND ($2::text IS NULL OR entity = $2) \
             ORDER BY entity, internal_id LIMIT $3"
        );
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(integration)
            .bind(entity)
            .bind(limit)
            .fetch_all(self.pool())
            .await?)
    }

    /// How many mappings an integration has (for progress checks and benchmarks).
    pub async fn count_mappings(&self, integration: Uuid) -> Result<i64> {
        Ok(sqlx::query_scalar(
            "SELECT count(*) FROM record_links WHERE integration_id = $1 AND NOT origin \
                 AND deleted_at IS NULL",
        )
        .bind(integration)
        .fetch_one(self.pool())
        .await?)
    }
}
