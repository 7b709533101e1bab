//! Long operations run in the background (dead-letter replays and purges): started, moved
//! on as they progress, finished with their result.
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::FromRow;
use uuid::Uuid;

use crate::{Result, Store, StoreError};

/// An operation as callers read it.
#[derive(Debug, Clone, FromRow, Serialize, utoipa::ToSchema)]
pub struct Operation {
    pub id: Uuid,
    /// The tenant a tenant's key started it for; none for the admin's.
    pub tenant: Option<String>,
    /// `dlq.replay` or `dlq.purge`.
    pub kind: String,
    pub actor: String,
    /// What was asked.
    pub request: Value,
    /// `running`, `succeeded`, `partial` (some could not be done: see `result`), `failed`
    /// (see `error`), or `interrupted` (the process running it stopped; run it again: what
    /// was done stays done).
    pub status: String,
    /// Matched so far.
    pub matched: i64,
    /// Done so far (replayed or purged).
    pub done: i64,
    /// The report, once finished.
    pub result: Option<Value>,
    pub error: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// A running operation that has not moved for this long was interrupted (its process
/// stopped): it moves at least every few seconds while it runs.
pub const STALLED_AFTER: chrono::Duration = chrono::Duration::seconds(60);

impl Operation {
    fn seen(mut self) -> Operation {
        if self.status == "running" && Utc::now() - self.updated_at > STALLED_AFTER {
            self.status = "interrupted".into();
            self.error = Some(format!(
                "no progress since {}: the process running it stopped; run it again (what was done stays done)",
                self.updated_at.format("%Y-%m-%d %H:%M:%S UTC")
            ));
        }
        self
    }
}

const COLUMNS: &str = "id, tenant, kind, actor, request, status, matched, done, result, error, \
                       created_at, updated_at, finished_at";

impl Store {
    pub async fn create_operation(
        &self,
        tenant: Option<&str>,
        kind: &str,
        actor: &str,
        request: &Value,
    ) -> Result<Operation> {
        let sql = format!(
            "INSERT INTO operations (id, tenant, kind, actor, request) VALUES ($1, $2, $3, $4, $5) \
             RETURNING {COLUMNS}"
        );
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(Uuid::now_v7())
            .bind(tenant)
            .bind(kind)
            .bind(actor)
            .bind(request)
            .fetch_one(self.pool())
            .await?)
    }

    /// How far it got (also: it is still running).
    pub async fn operation_progress(&self, id: Uuid, matched: i64, done: i64) -> Result<()> {
        sqlx::query(
            "UPDATE operations SET matched = $2, done = $3, updated_at = now() \
             WHERE id = $1 AND status = 'running'",
        )
        .bind(id)
        .bind(matched)
        .bind(done)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    pub async fn finish_operation(
        &self,
        id: Uuid,
        status: &str,
        result: Option<&Value>,
        error: Option<&str>,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE operations SET status = $2, result = $3, error = $4, \
               matched = COALESCE(($3->>'matched')::bigint, matched), \
               done = COALESCE(($3->>'moved')::bigint, done), \
               updated_at = now(), finished_at = now() \
             WHERE id = $1",
        )
        .bind(id)
        .bind(status)
        .bind(result)
        .bind(error)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    pub async fn operation(&self, id: Uuid) -> Result<Operation> {
        let sql = format!("SELECT {COLUMNS} FROM operations WHERE id = $1");
        sqlx::query_as::<_, Operation>(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(self.pool())
            .await?
            .map(Operation::seen)
            .ok_or_else(|| StoreError::NotFound(format!("operation {id}")))
    }

    /// Newest first; a tenant's only, when `tenant` is given.
    pub async fn operations(&self, tenant: Option<&str>, limit: i64) -> Result<Vec<Operation>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM operations WHERE ($1::text IS NULL OR tenant = $1) \
             ORDER BY created_at DESC LIMIT $2"
        );
        Ok(sqlx::query_as::<_, Operation>(sqlx::AssertSqlSafe(sql))
            .bind(tenant)
            .bind(limit.clamp(1, 500))
            .fetch_all(self.pool())
            .await?
            .into_iter()
            .map(Operation::seen)
            .collect())
    }
}

/// What the scheduler's leader samples for the fleet's gauges.
#[derive(Debug, Clone, Default)]
pub struct Depths {
    /// Jobs held for targets that are not active.
    pub held: i64,
    /// Dead letters kept, by provider.
    pub dead_letters: Vec<(String, i64)>,
    /// Sync runs, by status.
    pub sync_runs: Vec<(String, i64)>,
}

impl Store {
    /// Dead letters kept, by provider; a tenant's only, when `tenant` is given.
    pub async fn dead_letter_counts(&self, tenant: Option<&str>) -> Result<Vec<(String, i64)>> {
        Ok(sqlx::query_as(
            "SELECT provider, count(*) FROM dead_letters WHERE ($1::text IS NULL OR tenant = $1) \
             GROUP BY provider ORDER BY provider",
        )
        .bind(tenant)
        .fetch_all(self.pool())
        .await?)
    }

    pub async fn depths(&self) -> Result<Depths> {
        let held: i64 = sqlx::query_scalar("SELECT count(*) FROM held_jobs")
            .fetch_one(self.pool())
            .await?;
        let dead_letters = self.dead_letter_counts(None).await?;
        let sync_runs = sqlx::query_as(
            "SELECT status, count(*) FROM sync_runs GROUP BY status ORDER BY status",
        )
        .fetch_all(self.pool())
        .await?;
        Ok(Depths {
            held,
            dead_letters,
            sync_runs,
        })
    }
}
