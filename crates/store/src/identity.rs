//! The identity model: records and their links, one per system a record has reached
//! (`migrations/0008_identity.sql`), conflicts between systems' changes, and held jobs.
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::FromRow;
use switchyard_core::ids::NO_SOURCE;
use uuid::Uuid;

use crate::{Result, Store, StoreError};

/// One system's id for a record.
#[derive(Debug, Clone, FromRow, Serialize, utoipa::ToSchema)]
pub struct LinkView {
    pub integration_id: Uuid,
    /// `None` for the tenant's own ids (events without a source integration).
    pub integration_name: Option<String>,
    pub external_id: String,
    /// The system the record was first seen in.
    pub origin: bool,
    pub last_source_version: Option<i64>,
    pub written_at: Option<DateTime<Utc>>,
    pub written_version: Option<i64>,
    pub changed_at: Option<DateTime<Utc>>,
    pub changed_version: Option<i64>,
    pub created_at: DateTime<Utc>,
    pub last_synced_at: DateTime<Utc>,
}

/// A record with its id in every system it has reached.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct RecordView {
    pub id: Uuid,
    pub tenant: String,
    pub entity: String,
    pub created_at: DateTime<Utc>,
    pub deleted_at: Option<DateTime<Utc>>,
    pub links: Vec<LinkView>,
}

/// Two systems changed one record at about the same time; `winner`'s change was kept.
#[derive(Debug, Clone, FromRow, Serialize, utoipa::ToSchema)]
pub struct Conflict {
    pub id: i64,
    pub tenant: String,
    pub record_id: Uuid,
    pub entity: String,
    pub policy: String,
    pub winner_integration: Uuid,
    pub loser_integration: Uuid,
    pub winner_changed_at: Option<DateTime<Utc>>,
    pub loser_changed_at: DateTime<Utc>,
    pub job_id: Uuid,
    pub message: String,
    pub created_at: DateTime<Utc>,
}

/// A conflict to record with a job's outcome.
#[derive(Debug, Clone)]
pub struct NewConflict {
    pub policy: &'static str,
    pub winner: Uuid,
    pub loser: Uuid,
    pub winner_changed_at: Option<DateTime<Utc>>,
    pub loser_changed_at: DateTime<Utc>,
    pub message: String,
}

/// A held job, as it will be published again.
#[derive(Debug, Clone, FromRow)]
pub struct HeldJob {
    pub job_id: Uuid,
    pub envelope: serde_json::Value,
}

const LINK_COLUMNS: &str = "l.integration_id, i.name AS integration_name, l.external_id, l.origin, \
     l.last_source_version, l.written_at, l.written_version, l.changed_at, l.changed_version, \
     l.created_at, l.last_synced_at";

impl Store {
    /// The record that source `source`'s id `source_id` names, created (with its origin
    /// link) if there is none. Committed at once, outside any job's transaction, so the
    /// jobs of one event to several targets do not wait for each other. Returns the record
    /// and whether this call created it.
    pub async fn ensure_record(
        &self,
        tenant: &str,
        entity: &str,
        source: Option<Uuid>,
        source_id: &str,
    ) -> Result<(Uuid, bool)> {
        let source = source.unwrap_or(NO_SOURCE);
        // A concurrent creator's row may commit after this statement's snapshot: then the
        // insert does nothing and the read sees nothing; the next try sees it.
        for _ in 0..3 {
            let row: Option<(Uuid, bool)> = sqlx::query_as(
                "WITH l AS (\
                   INSERT INTO record_links (record_id, tenant, integration_id, entity, external_id, origin) \
                   VALUES ($1, $2, $3, $4, $5, true) \
                   ON CONFLICT (external_id, integration_id, entity, tenant) WHERE deleted_at IS NULL DO NOTHING \
                   RETURNING record_id), \
                 r AS (INSERT INTO records (id, tenant, entity) SELECT record_id, $2, $4 FROM l) \
                 SELECT record_id, true FROM l \
                 UNION ALL \
                 SELECT record_id, false FROM record_links \
                 WHERE external_id = $5 AND integration_id = $3 AND entity = $4 AND tenant = $2 \
                   AND deleted_at IS NULL AND NOT EXISTS (SELECT 1 FROM l)",
            )
            .bind(Uuid::now_v7())
            .bind(tenant)
            .bind(source)
            .bind(entity)
            .bind(source_id)
            .fetch_optional(self.pool())
            .await?;
            if let Some(found) = row {
                return Ok(found);
            }
        }
        Err(StoreError::Corrupt(format!(
            "could not find or create the record for {entity} `{source_id}` of {source}"
        )))
    }

    /// The record that `integration` knows as `id` (a live link), with all its links.
    /// `tenant` confines the look-up to one tenant.
    pub async fn find_record(
        &self,
        tenant: Option<&str>,
        integration: Uuid,
        entity: &str,
        id: &str,
    ) -> Result<Option<RecordView>> {
        let rid: Option<Uuid> = sqlx::query_scalar(
            "SELECT record_id FROM record_links WHERE external_id = $1 AND integration_id = $2 \
             AND entity = $3 AND ($4::text IS NULL OR tenant = $4) AND deleted_at IS NULL LIMIT 1",
        )
        .bind(id)
        .bind(integration)
        .bind(entity)
        .bind(tenant)
        .fetch_optional(self.pool())
        .await?;
        match rid {
            None => Ok(None),
            Some(r) => self.record(r).await.map(Some),
        }
    }

    /// A record and its live links.
    pub async fn record(&self, id: Uuid) -> Result<RecordView> {
        let (tenant, entity, created_at, deleted_at): (
            String,
            String,
            DateTime<Utc>,
            Option<DateTime<Utc>>,
        ) = sqlx::query_as(
            "SELECT tenant, entity, created_at, deleted_at FROM records WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(self.pool())
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("record {id}")))?;
        let sql = format!(
            "SELECT {LINK_COLUMNS} FROM record_links l LEFT JOIN integrations i ON i.id = l.integration_id \
             WHERE l.record_id = $1 AND (l.deleted_at IS NULL OR $2) ORDER BY l.origin DESC, l.created_at"
        );
        let links = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .bind(deleted_at.is_some())
            .fetch_all(self.pool())
            .await?;
        Ok(RecordView {
            id,
            tenant,
            entity,
            created_at,
            deleted_at,
            links,
        })
    }

    /// The target's ids for records the source knows as `refs` (entity, the source's id):
    /// those that have reached the target.
    pub async fn target_ids(
        &self,
        tenant: &str,
        source: Option<Uuid>,
        target: Uuid,
        refs: &[(String, String)],
    ) -> Result<std::collections::HashMap<(String, String), String>> {
        let (entities, ids): (Vec<String>, Vec<String>) = refs.iter().cloned().unzip();
        let rows: Vec<(String, String, String)> = sqlx::query_as(
            "SELECT s.entity, s.external_id, t.external_id FROM record_links s \
             JOIN record_links t ON t.record_id = s.record_id AND t.integration_id = $3 \
               AND t.deleted_at IS NULL \
             JOIN unnest($4::text[], $5::text[]) AS r(entity, id) \
               ON s.entity = r.entity AND s.external_id = r.id \
             WHERE s.integration_id = $2 AND s.tenant = $1 AND s.deleted_at IS NULL",
        )
        .bind(tenant)
        .bind(source.unwrap_or(NO_SOURCE))
        .bind(target)
        .bind(&entities)
        .bind(&ids)
        .fetch_all(self.pool())
        .await?;
        Ok(rows.into_iter().map(|(e, s, t)| ((e, s), t)).collect())
    }

    /// Conflicts, newest first; every filter narrows.
    pub async fn conflicts(
        &self,
        tenant: Option<&str>,
        integration: Option<Uuid>,
        limit: i64,
    ) -> Result<Vec<Conflict>> {
        Ok(sqlx::query_as(
            "SELECT id, tenant, record_id, entity, policy, winner_integration, loser_integration, \
                    winner_changed_at, loser_changed_at, job_id, message, created_at \
             FROM record_conflicts \
             WHERE ($1::text IS NULL OR tenant = $1) \
               AND ($2::uuid IS NULL OR winner_integration = $2 OR loser_integration = $2) \
             ORDER BY id DESC LIMIT $3",
        )
        .bind(tenant)
        .bind(integration)
        .bind(limit.clamp(1, 1000))
        .fetch_all(self.pool())
        .await?)
    }

    /// The oldest `limit` jobs held for `integration`, in the order they were received.
    pub async fn held_jobs(&self, integration: Uuid, limit: i64) -> Result<Vec<HeldJob>> {
        Ok(sqlx::query_as(
            "SELECT job_id, envelope FROM held_jobs WHERE integration_id = $1 \
             ORDER BY received_at, job_id LIMIT $2",
        )
        .bind(integration)
        .bind(limit)
        .fetch_all(self.pool())
        .await?)
    }

    /// Held jobs that have been published again: no longer held, queued.
    pub async fn released(&self, jobs: &[Uuid]) -> Result<()> {
        sqlx::query(
            "WITH d AS (DELETE FROM held_jobs WHERE job_id = ANY($1) RETURNING job_id) \
             UPDATE jobs SET status = 'queued', updated_at = now() \
             WHERE id IN (SELECT job_id FROM d) AND status = 'held'",
        )
        .bind(jobs)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// How many jobs are held for `integration`.
    pub async fn count_held(&self, integration: Uuid) -> Result<i64> {
        Ok(
            sqlx::query_scalar("SELECT count(*) FROM held_jobs WHERE integration_id = $1")
                .bind(integration)
                .fetch_one(self.pool())
                .await?,
        )
    }

    /// Active integrations that have held jobs (the scheduler releases them).
    pub async fn active_with_held_jobs(&self) -> Result<Vec<Uuid>> {
        Ok(sqlx::query_scalar(
            "SELECT DISTINCT h.integration_id FROM held_jobs h \
             JOIN integrations i ON i.id = h.integration_id \
             WHERE i.status = 'active' AND i.deleted_at IS NULL",
        )
        .fetch_all(self.pool())
        .await?)
    }
}
