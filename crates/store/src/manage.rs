//! The management API's reads and writes: integration updates, soft delete, status,
//! statistics, cursor-paginated jobs, mapping lookups.
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::FromRow;
use switchyard_core::{Direction, IntegrationStatus, JobStatus};
use uuid::Uuid;

use crate::mappings::Mapping;
use crate::{Integration, JobRow, Result, SealedCredentials, Store, StoreError};

/// Fields to change; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct IntegrationPatch {
    pub name: Option<String>,
    pub direction: Option<Direction>,
    pub entities: Option<Vec<String>>,
    pub settings: Option<Value>,
    pub inbound: Option<Value>,
    pub schedule: Option<Value>,
    pub credentials: Option<SealedCredentials>,
}

/// Filters for listing integrations.
#[derive(Debug, Clone, Default)]
pub struct IntegrationFilter {
    pub tenant: Option<String>,
    pub provider: Option<String>,
    pub status: Option<IntegrationStatus>,
    pub name: Option<String>,
}

/// An integration's figures over a window.
#[derive(Debug, Clone, FromRow, Serialize, utoipa::ToSchema)]
pub struct Stats {
    pub total: i64,
    pub succeeded: i64,
    pub failed: i64,
    pub dead: i64,
    pub in_flight: i64,
    /// Waiting for the integration to be active again (whenever they came).
    pub held: i64,
    /// Left out on purpose (a filter, a `drop` route, a lost conflict, a cancelled sync).
    pub skipped: i64,
    /// Succeeded over finished (succeeded + dead), 0–1; null with nothing finished.
    pub success_rate: Option<f64>,
    pub last_success_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub last_error_at: Option<DateTime<Utc>>,
    pub avg_duration_ms: Option<f64>,
    pub p95_duration_ms: Option<f64>,
}

/// A page of jobs, newest first, and the cursor for the next one.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct JobPage {
    pub jobs: Vec<JobRow>,
    pub next_cursor: Option<String>,
}

/// Filters for a page of jobs; every field narrows it.
#[derive(Debug, Clone, Default)]
pub struct JobQuery {
    pub tenant: Option<String>,
    pub integration_id: Option<Uuid>,
    pub entity: Option<String>,
    pub status: Option<JobStatus>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    /// The record's id where the event came from.
    pub internal_id: Option<String>,
    /// The target's id for the record.
    pub external_id: Option<String>,
    /// Opaque, from the previous page.
    pub cursor: Option<String>,
    pub limit: i64,
}

/// `created_at` (µs) and id of the last row of a page.
fn encode_cursor(at: DateTime<Utc>, id: Uuid) -> String {
    format!("{}_{}", at.timestamp_micros(), id.simple())
}

fn decode_cursor(c: &str) -> Option<(DateTime<Utc>, Uuid)> {
    let (at, id) = c.split_once('_')?;
    Some((
        DateTime::from_timestamp_micros(at.parse().ok()?)?,
        Uuid::parse_str(id).ok()?,
    ))
}

impl Store {
    pub async fn find_integrations(&self, f: &IntegrationFilter) -> Result<Vec<Integration>> {
        let all = self.list_integrations(f.tenant.as_deref()).await?;
        Ok(all
            .into_iter()
            .filter(|i| f.provider.as_ref().is_none_or(|p| *p == i.provider))
            .filter(|i| f.status.is_none_or(|s| s == i.status))
            .filter(|i| f.name.as_ref().is_none_or(|n| *n == i.name))
            .collect())
    }

    pub async fn update_integration(&self, id: Uuid, p: &IntegrationPatch) -> Result<Integration> {
        let mut tx = self.begin_audited().await?;
        let (key_id, bytes) = match &p.credentials {
            Some(c) => (Some(c.key_id.clone()), Some(c.bytes.clone())),
            None => (None, None),
        };
        let r = sqlx::query(
            "UPDATE integrations SET \
               name = COALESCE($2, name), direction = COALESCE($3, direction), \
               entities = COALESCE($4, entities), settings = COALESCE($5, settings), \
               inbound = COALESCE($6, inbound), schedule = COALESCE($7, schedule), \
               next_sync_at = CASE WHEN $7 IS NULL THEN next_sync_at ELSE NULL END, \
               credentials = COALESCE($8, credentials), \
               credentials_key_id = COALESCE($9, credentials_key_id), updated_at = now() \
             WHERE id = $1 AND deleted_at IS NULL",
        )
        .bind(id)
        .bind(p.name.as_deref())
        .bind(p.direction.map(Direction::as_str))
        .bind(p.entities.as_ref())
        .bind(p.settings.as_ref())
        .bind(p.inbound.as_ref())
        .bind(p.schedule.as_ref())
        .bind(bytes)
        .bind(key_id)
        .execute(&mut *tx)
        .await
        .map_err(|e| match StoreError::from(e) {
            StoreError::Conflict(_) => StoreError::Conflict(format!(
                "the tenant already has an integration named `{}`",
                p.name.as_deref().unwrap_or_default()
            )),
            other => other,
        })?;
        if r.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("integration {id}")));
        }
        tx.commit().await?;
        self.integration(id).await
    }

    /// Move an integration to `status`, recording (or clearing) its last error.
    pub async fn set_status(
        &self,
        id: Uuid,
        status: IntegrationStatus,
        error: Option<&str>,
    ) -> Result<()> {
        let mut tx = self.begin_audited().await?;
        let r = sqlx::query(
            "UPDATE integrations SET status = $2, last_error = COALESCE($3, last_error), updated_at = now() \
             WHERE id = $1 AND deleted_at IS NULL",
        )
        .bind(id)
        .bind(status.as_str())
        .bind(error)
        .execute(&mut *tx)
        .await?;
        if r.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("integration {id}")));
        }
        tx.commit().await?;
        Ok(())
    }

    /// Soft delete: the integration stops receiving and sending; its jobs, attempts and
    /// mappings stay for audit, and its name becomes free.
    pub async fn delete_integration(&self, id: Uuid) -> Result<()> {
        let mut tx = self.begin_audited().await?;
        let r = sqlx::query(
            "UPDATE integrations SET deleted_at = now(), status = 'inactive', updated_at = now() \
             WHERE id = $1 AND deleted_at IS NULL",
        )
        .bind(id)
        .execute(&mut *tx)
        .await?;
        if r.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!("integration {id}")));
        }
        tx.commit().await?;
        Ok(())
    }

    /// Figures over jobs created since `since`.
    pub async fn stats(&self, id: Uuid, since: DateTime<Utc>) -> Result<Stats> {
        Ok(sqlx::query_as(
            "SELECT count(*) AS total, \
               count(*) FILTER (WHERE status = 'succeeded') AS succeeded, \
               count(*) FILTER (WHERE status = 'retrying') AS failed, \
               count(*) FILTER (WHERE status = 'dead') AS dead, \
               count(*) FILTER (WHERE status IN ('queued', 'running', 'retrying')) AS in_flight, \
               (SELECT count(*) FROM held_jobs WHERE integration_id = $1) AS held, \
               count(*) FILTER (WHERE status = 'skipped') AS skipped, \
               (count(*) FILTER (WHERE status = 'succeeded'))::float8 \
                 / NULLIF(count(*) FILTER (WHERE status IN ('succeeded', 'dead')), 0) AS success_rate, \
               max(finished_at) FILTER (WHERE status = 'succeeded') AS last_success_at, \
               (array_agg(last_error ORDER BY updated_at DESC) FILTER (WHERE last_error IS NOT NULL AND status IN ('retrying', 'dead')))[1] AS last_error, \
               max(updated_at) FILTER (WHERE last_error IS NOT NULL AND status IN ('retrying', 'dead')) AS last_error_at, \
               avg(duration_ms)::float8 AS avg_duration_ms, \
               percentile_cont(0.95) WITHIN GROUP (ORDER BY duration_ms) FILTER (WHERE duration_ms IS NOT NULL) AS p95_duration_ms \
             FROM jobs WHERE integration_id = $1 AND created_at >= $2",
        )
        .bind(id)
        .bind(since)
        .fetch_one(self.pool())
        .await?)
    }

    /// A page of jobs, newest first. The cursor is stable under inserts.
    pub async fn job_page(&self, q: &JobQuery) -> Result<JobPage> {
        let limit = q.limit.clamp(1, 500);
        let cursor = match &q.cursor {
            None => None,
            Some(c) => Some(decode_cursor(c).ok_or_else(|| {
                StoreError::BadInput(format!("`{c}` is not a cursor from a previous page"))
            })?),
        };
        let sql = format!(
            "SELECT {} FROM jobs \
             WHERE ($1::text IS NULL OR tenant = $1) AND ($2::uuid IS NULL OR integration_id = $2) \
               AND ($3::text IS NULL OR entity = $3) AND ($4::text IS NULL OR status = $4) \
               AND ($5::timestamptz IS NULL OR created_at >= $5) AND ($6::timestamptz IS NULL OR created_at < $6) \
               AND ($7::timestamptz IS NULL OR (created_at, id) < ($7, $8)) \
               AND ($10::text IS NULL OR internal_id = $10) AND ($11::text IS NULL OR external_id = $11) \
             ORDER BY created_at DESC, id DESC LIMIT $9",
            crate::jobs::JOB_COLUMNS
        );
        let mut jobs: Vec<JobRow> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(q.tenant.as_deref())
            .bind(q.integration_id)
            .bind(q.entity.as_deref())
            .bind(q.status.map(JobStatus::as_str))
            .bind(q.since)
            .bind(q.until)
            .bind(cursor.map(|c| c.0))
            .bind(cursor.map(|c| c.1))
            .bind(limit + 1)
            .bind(q.internal_id.as_deref())
            .bind(q.external_id.as_deref())
            .fetch_all(self.pool())
            .await?;
        let next_cursor = if jobs.len() as i64 > limit {
            jobs.truncate(limit as usize);
            jobs.last().map(|j| encode_cursor(j.created_at, j.id))
        } else {
            None
        };
        Ok(JobPage { jobs, next_cursor })
    }

    pub async fn mapping_by_external(
        &self,
        integration: Uuid,
        entity: &str,
        external_id: &str,
    ) -> Result<Option<Mapping>> {
        let sql = format!(
            "SELECT {} FROM id_mappings \
             WHERE integration_id = $1 AND entity = $2 AND external_id = $3",
            crate::mappings::MAPPING_COLUMNS
        );
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(integration)
            .bind(entity)
            .bind(external_id)
            .fetch_optional(self.pool())
            .await?)
    }

    /// Forget a mapping, so the entity is created again on its next event.
    pub async fn delete_mapping(
        &self,
        integration: Uuid,
        entity: &str,
        internal_id: &str,
    ) -> Result<()> {
        let r = sqlx::query(
            "UPDATE record_links SET deleted_at = now() WHERE integration_id = $1 AND entity = $2 \
             AND NOT origin AND deleted_at IS NULL AND record_id IN (SELECT record_id FROM id_mappings \
               WHERE integration_id = $1 AND entity = $2 AND internal_id = $3)",
        )
            .bind(integration)
            .bind(entity)
            .bind(internal_id)
            .execute(self.pool())
            .await?;
        if r.rows_affected() == 0 {
            return Err(StoreError::NotFound(format!(
                "mapping of {entity} `{internal_id}`"
            )));
        }
        Ok(())
    }
}

impl Store {
    /// Events received since `since` that made jobs (webhooks and other events; not sync
    /// runs' reads), a tenant's only when `tenant` is given.
    pub async fn events_since(&self, tenant: Option<&str>, since: DateTime<Utc>) -> Result<i64> {
        Ok(sqlx::query_scalar(
            "SELECT count(DISTINCT (source_integration_id, event_id)) FROM jobs \
             WHERE created_at >= $2 AND ($1::text IS NULL OR tenant = $1) AND sync_run_id IS NULL",
        )
        .bind(tenant)
        .bind(since)
        .fetch_one(self.pool())
        .await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip() {
        let at = DateTime::from_timestamp_micros(1_700_000_000_123_456).unwrap();
        let id = Uuid::from_u128(42);
        assert_eq!(decode_cursor(&encode_cursor(at, id)), Some((at, id)));
        assert_eq!(decode_cursor("garbage"), None);
    }
}
