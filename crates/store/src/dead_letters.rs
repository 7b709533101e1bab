//! Dead letters kept in Postgres (migration 0012), each tenant's apart: the workers' keeper
//! moves every message that reaches a dead-letter queue here, and operators list, replay and
//! purge them with a filter the database answers from an index.
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{FromRow, Postgres, QueryBuilder, Transaction};
use switchyard_core::DeadReason;
use uuid::Uuid;

use crate::{Result, Store};

/// Which dead letters. Every field narrows the selection.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(default, deny_unknown_fields)]
pub struct DeadLetterFilter {
    pub provider: Option<String>,
    pub tenant: Option<String>,
    pub integration_id: Option<Uuid>,
    pub entity: Option<String>,
    pub reason: Option<DeadReason>,
    pub job_id: Option<Uuid>,
    /// Dead-lettered at or after.
    pub since: Option<DateTime<Utc>>,
    /// Dead-lettered before.
    pub until: Option<DateTime<Utc>>,
}

/// A dead letter, as the keeper stores it and operators read it.
#[derive(Debug, Clone, FromRow)]
pub struct DeadLetterRow {
    /// 0 until stored.
    pub id: i64,
    pub provider: String,
    pub message_id: String,
    pub job_id: Option<Uuid>,
    pub tenant: Option<String>,
    pub integration_id: Option<Uuid>,
    pub entity: Option<String>,
    pub internal_id: Option<String>,
    pub reason: String,
    pub error_class: Option<String>,
    pub error: Option<String>,
    pub attempts: Option<String>,
    pub first_received: Option<String>,
    pub replays: Option<String>,
    pub dead_at: DateTime<Utc>,
    pub routing_key: String,
    /// The message's headers, a JSON object of strings.
    pub headers: serde_json::Value,
    pub body: Vec<u8>,
}

const COLUMNS: &str = "id, provider, message_id, job_id, tenant, integration_id, entity, \
    internal_id, reason, error_class, error, attempts, first_received, replays, dead_at, \
    routing_key, headers, body";

/// `WHERE …` for a filter (always at least `true`).
fn push_filter(qb: &mut QueryBuilder<Postgres>, f: &DeadLetterFilter) {
    qb.push(" WHERE true");
    if let Some(p) = &f.provider {
        qb.push(" AND provider = ").push_bind(p.clone());
    }
    if let Some(t) = &f.tenant {
        qb.push(" AND tenant = ").push_bind(t.clone());
    }
    if let Some(i) = f.integration_id {
        qb.push(" AND integration_id = ").push_bind(i);
    }
    if let Some(e) = &f.entity {
        qb.push(" AND entity = ").push_bind(e.clone());
    }
    if let Some(r) = f.reason {
        qb.push(" AND reason = ").push_bind(r.as_str());
    }
    if let Some(j) = f.job_id {
        qb.push(" AND job_id = ").push_bind(j);
    }
    if let Some(s) = f.since {
        qb.push(" AND dead_at >= ").push_bind(s);
    }
    if let Some(u) = f.until {
        qb.push(" AND dead_at < ").push_bind(u);
    }
}

/// Dead letters taken for a replay: locked (other replays skip them) until the transaction
/// commits, which removes them, or rolls back, which leaves them.
pub struct TakenDeadLetters {
    pub rows: Vec<DeadLetterRow>,
    tx: Transaction<'static, Postgres>,
}

impl TakenDeadLetters {
    /// Remove those of them with these ids, and reset their jobs for fresh attempts (a job
    /// that is no longer dead is left as it is), in the transaction: call it before
    /// republishing them, so that a worker taking a republished job waits for the reset
    /// (its row is locked until [`TakenDeadLetters::commit`]). The others are left as they
    /// were.
    pub async fn remove(&mut self, ids: &[i64]) -> Result<()> {
        let jobs: Vec<Uuid> = self
            .rows
            .iter()
            .filter(|r| ids.contains(&r.id))
            .filter_map(|r| r.job_id)
            .collect();
        sqlx::query(
            "WITH d AS (DELETE FROM dead_letters WHERE id = ANY($1)) \
             UPDATE jobs SET status = 'queued', attempts = 0, replays = replays + 1, \
               dead_reason = NULL, finished_at = NULL, purged_at = NULL, updated_at = now() \
             WHERE id = ANY($2) AND status = 'dead'",
        )
        .bind(ids)
        .bind(&jobs)
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// Commit what [`TakenDeadLetters::remove`] did (once the messages are republished);
    /// dropped instead, it is undone.
    pub async fn commit(self) -> Result<()> {
        self.tx.commit().await?;
        Ok(())
    }
}

impl Store {
    /// Keep a message that reached a dead-letter queue. The same message again (dead again
    /// after a replay, or redelivered to the keeper) replaces the earlier one.
    pub async fn keep_dead_letter(&self, d: &DeadLetterRow) -> Result<()> {
        sqlx::query(
            "INSERT INTO dead_letters (provider, message_id, job_id, tenant, integration_id, \
               entity, internal_id, reason, error_class, error, attempts, first_received, \
               replays, dead_at, routing_key, headers, body) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17) \
             ON CONFLICT (provider, message_id) DO UPDATE SET job_id = EXCLUDED.job_id, \
               tenant = EXCLUDED.tenant, integration_id = EXCLUDED.integration_id, \
               entity = EXCLUDED.entity, internal_id = EXCLUDED.internal_id, \
               reason = EXCLUDED.reason, error_class = EXCLUDED.error_class, \
               error = EXCLUDED.error, attempts = EXCLUDED.attempts, \
               first_received = EXCLUDED.first_received, replays = EXCLUDED.replays, \
               dead_at = EXCLUDED.dead_at, routing_key = EXCLUDED.routing_key, \
               headers = EXCLUDED.headers, body = EXCLUDED.body, kept_at = now()",
        )
        .bind(&d.provider)
        .bind(&d.message_id)
        .bind(d.job_id)
        .bind(&d.tenant)
        .bind(d.integration_id)
        .bind(&d.entity)
        .bind(&d.internal_id)
        .bind(&d.reason)
        .bind(&d.error_class)
        .bind(&d.error)
        .bind(&d.attempts)
        .bind(&d.first_received)
        .bind(&d.replays)
        .bind(d.dead_at)
        .bind(&d.routing_key)
        .bind(&d.headers)
        .bind(&d.body)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// The dead letters that match, oldest first, at most `limit`.
    pub async fn dead_letters(
        &self,
        f: &DeadLetterFilter,
        limit: usize,
    ) -> Result<Vec<DeadLetterRow>> {
        let mut qb = QueryBuilder::new(format!("SELECT {COLUMNS} FROM dead_letters"));
        push_filter(&mut qb, f);
        qb.push(" ORDER BY dead_at, id LIMIT ")
            .push_bind(limit.min(i64::MAX as usize) as i64);
        Ok(qb
            .build_query_as::<DeadLetterRow>()
            .fetch_all(self.pool())
            .await?)
    }

    /// The newest dead letter's id (0: none): a replay takes only dead letters kept before
    /// it began, so a replayed job that dies again is not taken again by the same replay.
    pub async fn newest_dead_letter(&self) -> Result<i64> {
        Ok(
            sqlx::query_scalar("SELECT COALESCE(max(id), 0) FROM dead_letters")
                .fetch_one(self.pool())
                .await?,
        )
    }

    /// Take up to `limit` matching dead letters with ids up to `upto`, oldest first, for a
    /// replay (see [`TakenDeadLetters`]); dead letters another replay holds, and those in
    /// `skip`, are passed over.
    pub async fn take_dead_letters(
        &self,
        f: &DeadLetterFilter,
        limit: usize,
        skip: &[i64],
        upto: i64,
    ) -> Result<TakenDeadLetters> {
        let mut tx = self.pool().begin().await?;
        let mut qb = QueryBuilder::new(format!("SELECT {COLUMNS} FROM dead_letters"));
        push_filter(&mut qb, f);
        qb.push(" AND id <= ").push_bind(upto);
        if !skip.is_empty() {
            qb.push(" AND id <> ALL(")
                .push_bind(skip.to_vec())
                .push(")");
        }
        qb.push(" ORDER BY dead_at, id LIMIT ")
            .push_bind(limit.min(i64::MAX as usize) as i64)
            .push(" FOR UPDATE SKIP LOCKED");
        let rows = qb
            .build_query_as::<DeadLetterRow>()
            .fetch_all(&mut *tx)
            .await?;
        Ok(TakenDeadLetters { rows, tx })
    }

    /// Remove up to `limit` matching dead letters for good, oldest first; their jobs stay
    /// `dead`, marked purged. The purged jobs' ids (`None` for a message that named none).
    pub async fn purge_dead_letters(
        &self,
        f: &DeadLetterFilter,
        limit: usize,
    ) -> Result<Vec<Option<Uuid>>> {
        let mut qb = QueryBuilder::new(
            "WITH p AS (DELETE FROM dead_letters WHERE id IN (SELECT id FROM dead_letters",
        );
        push_filter(&mut qb, f);
        qb.push(" ORDER BY dead_at, id LIMIT ")
            .push_bind(limit.min(i64::MAX as usize) as i64)
            .push(
                " FOR UPDATE SKIP LOCKED) RETURNING job_id), \
                 j AS (UPDATE jobs SET purged_at = now(), updated_at = now() \
                   WHERE id IN (SELECT job_id FROM p)) \
                 SELECT job_id FROM p",
            );
        Ok(qb
            .build_query_scalar::<Option<Uuid>>()
            .fetch_all(self.pool())
            .await?)
    }
}
