//! Sync runs: the scheduler's slots, the pager's position, the counts the workers keep, and
//! what happens to an integration whose syncs keep failing.
//!
//! A run's counts are kept by the transactions that settle its jobs, each behind the run's
//! row lock, so the last job to settle sees every other job's count and closes the run. A job
//! counts once, with its first final outcome (`jobs.run_counted`): a dead job replayed later
//! does not change its run's figures.
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{FromRow, Postgres, Transaction};
use switchyard_core::{Envelope, JobStatus, schedule::DEFAULT_DISABLE_AFTER_FAILURES};
use uuid::Uuid;

use crate::{Result, Store, StoreError};

/// One source the pager reads: an integration that can list its changed records of one
/// entity, and the integrations those records go to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Feed {
    pub source: Uuid,
    pub source_name: String,
    pub entity: String,
    pub targets: Vec<Uuid>,
}

#[derive(Debug, Clone, FromRow, Serialize, utoipa::ToSchema)]
pub struct SyncRun {
    pub id: Uuid,
    pub integration_id: Uuid,
    pub tenant: String,
    pub trigger: String,
    pub slot: Option<DateTime<Utc>>,
    pub started_by: String,
    pub direction: String,
    pub entities: Vec<String>,
    pub watermark_from: Option<DateTime<Utc>>,
    pub watermark_to: DateTime<Utc>,
    #[sqlx(json)]
    pub plan: Vec<Feed>,
    pub feed: i32,
    #[serde(skip)]
    pub cursor: Option<String>,
    pub pages: i32,
    pub paging_done: bool,
    pub status: String,
    pub total: i32,
    pub processed: i32,
    pub created: i32,
    pub updated: i32,
    pub failed: i32,
    pub skipped: i32,
    pub error: Option<String>,
    pub cancelled_by: Option<String>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

const RUN_COLUMNS: &str = "id, integration_id, tenant, trigger, slot, started_by, direction, \
     entities, watermark_from, watermark_to, plan, feed, cursor, pages, paging_done, status, \
     total, processed, created, updated, failed, skipped, error, cancelled_by, created_at, \
     started_at, finished_at";

/// A run to create.
#[derive(Debug, Clone)]
pub struct NewRun {
    pub id: Uuid,
    pub integration_id: Uuid,
    pub tenant: String,
    /// `schedule` or `manual`.
    pub trigger: &'static str,
    pub slot: Option<DateTime<Utc>>,
    pub started_by: String,
    pub direction: String,
    pub entities: Vec<String>,
    /// The run reads records changed up to this instant; the next run starts from it.
    pub watermark_to: DateTime<Utc>,
    /// Ignore earlier runs' watermark and read everything.
    pub full: bool,
    pub plan: Vec<Feed>,
}

/// An event in an integration's history (`auto_disabled`, …).
#[derive(Debug, Clone, FromRow, Serialize, utoipa::ToSchema)]
pub struct IntegrationEvent {
    pub id: i64,
    pub kind: String,
    pub message: String,
    pub sync_run_id: Option<Uuid>,
    pub created_at: DateTime<Utc>,
}

/// Where the pager stands after a page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Advance {
    /// Read page `page` next (of feed `feed`).
    Next { page: i32 },
    /// Every feed is read.
    Done,
    /// The run is no longer running, or someone else advanced it: stop.
    Stale,
}

/// Add a settled job to its run's counts (once per job), and close the run if it was the last.
pub(crate) async fn count_for_run(
    tx: &mut Transaction<'static, Postgres>,
    job: Uuid,
    status: JobStatus,
    created: bool,
) -> Result<()> {
    let (c, u, f, s) = match status {
        JobStatus::Succeeded if created => (1, 0, 0, 0),
        JobStatus::Succeeded => (0, 1, 0, 0),
        JobStatus::Dead => (0, 0, 1, 0),
        JobStatus::Stale | JobStatus::Ignored | JobStatus::Skipped => (0, 0, 0, 1),
        _ => return Ok(()),
    };
    let run: Option<Uuid> = sqlx::query_scalar(
        "UPDATE jobs SET run_counted = true \
         WHERE id = $1 AND sync_run_id IS NOT NULL AND NOT run_counted RETURNING sync_run_id",
    )
    .bind(job)
    .fetch_optional(&mut **tx)
    .await?;
    let Some(run) = run else { return Ok(()) };
    sqlx::query(
        "UPDATE sync_runs SET processed = processed + 1, created = created + $2, \
         updated = updated + $3, failed = failed + $4, skipped = skipped + $5 WHERE id = $1",
    )
    .bind(run)
    .bind(c)
    .bind(u)
    .bind(f)
    .bind(s)
    .execute(&mut **tx)
    .await?;
    complete_if_done(tx, run).await
}

/// Close a running run whose paging is done and whose every job has settled; record the
/// outcome on its integration, moving it to `error` after too many failed syncs in a row.
/// The caller holds (or takes here) the run's row lock.
async fn complete_if_done(tx: &mut Transaction<'static, Postgres>, run: Uuid) -> Result<()> {
    let done: Option<(Uuid, String, Option<String>, i32, i32)> = sqlx::query_as(
        "UPDATE sync_runs SET finished_at = now(), \
           status = CASE WHEN error IS NULL AND failed = 0 THEN 'succeeded' ELSE 'failed' END \
         WHERE id = $1 AND status = 'running' AND paging_done AND processed >= total \
         RETURNING integration_id, status, error, failed, total",
    )
    .bind(run)
    .fetch_optional(&mut **tx)
    .await?;
    let Some((integration, status, error, failed, total)) = done else {
        return Ok(());
    };
    if status == "succeeded" {
        sqlx::query(
            "UPDATE integrations SET sync_failures = 0, last_sync_at = now() WHERE id = $1",
        )
        .bind(integration)
        .execute(&mut **tx)
        .await?;
        return Ok(());
    }
    let why = match error {
        Some(e) => format!("sync run {run} failed: {e}"),
        None => format!("sync run {run} failed: {failed} of {total} records could not be synced"),
    };
    // The threshold is the integration's own (schedule.disable_after_failures), 0 = never.
    let limit = format!(
        "COALESCE((schedule->>'disable_after_failures')::int, {DEFAULT_DISABLE_AFTER_FAILURES})"
    );
    let sql = format!(
        "UPDATE integrations SET sync_failures = sync_failures + 1, last_sync_at = now(), \
           last_error = $2, \
           status = CASE WHEN {limit} > 0 AND sync_failures + 1 >= {limit} THEN 'error' ELSE status END \
         WHERE id = $1 RETURNING sync_failures, status, {limit}"
    );
    let (failures, status, limit): (i32, String, i32) = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(integration)
        .bind(&why)
        .fetch_one(&mut **tx)
        .await?;
    if status == "error" && limit > 0 && failures == limit {
        // Emitted once: by the failure that crosses the threshold.
        sqlx::query(
            "INSERT INTO integration_events (integration_id, kind, message, sync_run_id) \
             VALUES ($1, 'auto_disabled', $2, $3)",
        )
        .bind(integration)
        .bind(format!(
            "moved to `error` after {failures} failed syncs in a row; the last: {why}. \
             Fix the cause, then run `switchyard integrations activate`"
        ))
        .bind(run)
        .execute(&mut **tx)
        .await?;
        tracing::warn!(%integration, failures, last = %why,
            "integration moved to `error` after too many failed syncs in a row");
    }
    Ok(())
}

impl Store {
    /// Move an integration's next slot from `expected` to `next`, if no one else has.
    pub async fn plan_next_sync(
        &self,
        id: Uuid,
        expected: Option<DateTime<Utc>>,
        next: Option<DateTime<Utc>>,
    ) -> Result<bool> {
        let r = sqlx::query(
            "UPDATE integrations SET next_sync_at = $3 \
             WHERE id = $1 AND next_sync_at IS NOT DISTINCT FROM $2",
        )
        .bind(id)
        .bind(expected)
        .bind(next)
        .execute(self.pool())
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Create a run. For a scheduled run, `advance` = (the slot as read, the next slot): the
    /// integration's `next_sync_at` moves in the same transaction, and only if it still reads
    /// the slot, so a slot makes one run whatever the number of schedulers. `None` when
    /// another scheduler took the slot.
    pub async fn create_run(
        &self,
        new: &NewRun,
        advance: Option<(DateTime<Utc>, Option<DateTime<Utc>>)>,
    ) -> Result<Option<SyncRun>> {
        let mut tx = self.pool().begin().await?;
        if let Some((slot, next)) = advance {
            let r = sqlx::query(
                "UPDATE integrations SET next_sync_at = $3 WHERE id = $1 AND next_sync_at = $2",
            )
            .bind(new.integration_id)
            .bind(slot)
            .bind(next)
            .execute(&mut *tx)
            .await?;
            if r.rows_affected() == 0 {
                return Ok(None);
            }
        }
        let sql = format!(
            "INSERT INTO sync_runs (id, integration_id, tenant, trigger, slot, started_by, direction, \
               entities, watermark_from, watermark_to, plan) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, \
               CASE WHEN $9 THEN NULL ELSE (SELECT max(watermark_to) FROM sync_runs \
                 WHERE integration_id = $2 AND status = 'succeeded' AND entities @> $8) END, \
               $10, $11) \
             ON CONFLICT (integration_id, slot) WHERE slot IS NOT NULL DO NOTHING \
             RETURNING {RUN_COLUMNS}"
        );
        let run: Option<SyncRun> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(new.id)
            .bind(new.integration_id)
            .bind(&new.tenant)
            .bind(new.trigger)
            .bind(new.slot)
            .bind(&new.started_by)
            .bind(&new.direction)
            .bind(&new.entities)
            .bind(new.full)
            .bind(new.watermark_to)
            .bind(sqlx::types::Json(&new.plan))
            .fetch_optional(&mut *tx)
            .await?;
        if run.is_some() {
            tx.commit().await?;
        }
        Ok(run)
    }

    /// The run's first page is enqueued: it is running.
    pub async fn mark_run_started(&self, id: Uuid) -> Result<()> {
        sqlx::query(
            "UPDATE sync_runs SET status = 'running', started_at = COALESCE(started_at, now()) \
             WHERE id = $1 AND status = 'pending'",
        )
        .bind(id)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// A run whose first page could not be enqueued: failed, with why.
    pub async fn abandon_run(&self, id: Uuid, error: &str) -> Result<()> {
        sqlx::query(
            "UPDATE sync_runs SET status = 'failed', error = $2, finished_at = now() \
             WHERE id = $1 AND status = 'pending'",
        )
        .bind(id)
        .bind(error)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Runs created more than `older_than` ago whose first page was never enqueued.
    pub async fn pending_runs(&self, older_than: DateTime<Utc>) -> Result<Vec<SyncRun>> {
        let sql = format!(
            "SELECT {RUN_COLUMNS} FROM sync_runs WHERE status = 'pending' AND created_at < $1 \
             ORDER BY created_at LIMIT 100"
        );
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(older_than)
            .fetch_all(self.pool())
            .await?)
    }

    /// Running runs whose pager has not moved since `before` (its page message was lost).
    pub async fn stalled_runs(&self, before: DateTime<Utc>) -> Result<Vec<SyncRun>> {
        let sql = format!(
            "SELECT {RUN_COLUMNS} FROM sync_runs WHERE status = 'running' AND NOT paging_done \
               AND COALESCE(paged_at, started_at) < $1 ORDER BY created_at LIMIT 100"
        );
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(before)
            .fetch_all(self.pool())
            .await?)
    }

    /// Note that a run's page was enqueued again (it is not stalled any more).
    pub async fn touch_run(&self, id: Uuid) -> Result<()> {
        sqlx::query("UPDATE sync_runs SET paged_at = now() WHERE id = $1")
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    pub async fn sync_run(&self, id: Uuid) -> Result<SyncRun> {
        let sql = format!("SELECT {RUN_COLUMNS} FROM sync_runs WHERE id = $1");
        sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(self.pool())
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("sync run {id}")))
    }

    /// An integration's runs, newest first.
    pub async fn sync_runs(&self, integration: Uuid, limit: i64) -> Result<Vec<SyncRun>> {
        let sql = format!(
            "SELECT {RUN_COLUMNS} FROM sync_runs WHERE integration_id = $1 \
             ORDER BY created_at DESC LIMIT $2"
        );
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(integration)
            .bind(limit.clamp(1, 1000))
            .fetch_all(self.pool())
            .await?)
    }

    /// Record a page's jobs as queued, before they are published, and add the new ones to the
    /// run's total. Only while the run is running and still at `page`; returns how many jobs
    /// were new, or `None` when the run has moved on (cancelled, or another pager did it).
    pub async fn record_page_jobs(
        &self,
        run: Uuid,
        page: i32,
        jobs: &[Envelope],
    ) -> Result<Option<u64>> {
        let mut tx = self.pool().begin().await?;
        let at: Option<i32> = sqlx::query_scalar(
            "SELECT pages FROM sync_runs WHERE id = $1 AND status = 'running' FOR UPDATE",
        )
        .bind(run)
        .fetch_optional(&mut *tx)
        .await?;
        if at != Some(page) {
            return Ok(None);
        }
        let mut added = 0;
        for chunk in jobs.chunks(1000) {
            added += crate::jobs::queued_rows(chunk)
                .build()
                .execute(&mut *tx)
                .await?
                .rows_affected();
        }
        sqlx::query("UPDATE sync_runs SET total = total + $2, paged_at = now() WHERE id = $1")
            .bind(run)
            .bind(added as i32)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some(added))
    }

    /// Move the pager past page `page` (whose jobs are published): to `cursor` in the same
    /// feed, or to the next feed, or to the end. Only one pager moves a run past a page.
    pub async fn advance_run(
        &self,
        run: Uuid,
        page: i32,
        next_cursor: Option<&str>,
    ) -> Result<Advance> {
        let mut tx = self.pool().begin().await?;
        let row: Option<(i32, i32)> = sqlx::query_as(
            "SELECT feed, jsonb_array_length(plan) FROM sync_runs \
             WHERE id = $1 AND status = 'running' AND pages = $2 AND NOT paging_done FOR UPDATE",
        )
        .bind(run)
        .bind(page)
        .fetch_optional(&mut *tx)
        .await?;
        let Some((feed, feeds)) = row else {
            return Ok(Advance::Stale);
        };
        let (feed, cursor) = match next_cursor {
            Some(c) => (feed, Some(c)),
            None => (feed + 1, None),
        };
        let done = feed >= feeds;
        sqlx::query(
            "UPDATE sync_runs SET pages = pages + 1, feed = $2, cursor = $3, paging_done = $4, \
             paged_at = now() WHERE id = $1",
        )
        .bind(run)
        .bind(feed)
        .bind(cursor)
        .bind(done)
        .execute(&mut *tx)
        .await?;
        if done {
            complete_if_done(&mut tx, run).await?;
        }
        tx.commit().await?;
        Ok(if done {
            Advance::Done
        } else {
            Advance::Next { page: page + 1 }
        })
    }

    /// The pager cannot go on (the source cannot be listed): stop paging, with why. Jobs
    /// already enqueued still run; the run ends `failed` when they have settled.
    pub async fn fail_paging(&self, run: Uuid, error: &str) -> Result<()> {
        let mut tx = self.pool().begin().await?;
        let r = sqlx::query(
            "UPDATE sync_runs SET paging_done = true, error = $2, paged_at = now() \
             WHERE id = $1 AND status = 'running' AND NOT paging_done",
        )
        .bind(run)
        .bind(error)
        .execute(&mut *tx)
        .await?;
        if r.rows_affected() == 1 {
            complete_if_done(&mut tx, run).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Cancel a run: no further page is read, its jobs that have not started are marked
    /// `skipped` (rows kept, counted), jobs in flight finish. `Conflict` if it has ended.
    pub async fn cancel_run(&self, run: Uuid, by: &str) -> Result<SyncRun> {
        let mut tx = self.pool().begin().await?;
        let r = sqlx::query(
            "UPDATE sync_runs SET status = 'cancelled', cancelled_by = $2, finished_at = now() \
             WHERE id = $1 AND status IN ('pending', 'running')",
        )
        .bind(run)
        .bind(by)
        .execute(&mut *tx)
        .await?;
        if r.rows_affected() == 0 {
            let current = self.sync_run(run).await?;
            return Err(StoreError::Conflict(format!(
                "sync run {run} has already ended ({})",
                current.status
            )));
        }
        sqlx::query(
            "WITH s AS (UPDATE jobs SET status = 'skipped', run_counted = true, \
                          finished_at = now(), updated_at = now() \
                        WHERE sync_run_id = $1 AND status IN ('queued', 'retrying') \
                          AND NOT run_counted RETURNING 1) \
             UPDATE sync_runs SET skipped = skipped + (SELECT count(*) FROM s), \
                                  processed = processed + (SELECT count(*) FROM s) \
             WHERE id = $1",
        )
        .bind(run)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        self.sync_run(run).await
    }

    /// Record something an operator should hear of about an integration.
    pub async fn add_integration_event(
        &self,
        integration: Uuid,
        kind: &str,
        message: &str,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO integration_events (integration_id, kind, message) VALUES ($1, $2, $3)",
        )
        .bind(integration)
        .bind(kind)
        .bind(message)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// An integration's events, newest first.
    pub async fn integration_events(
        &self,
        integration: Uuid,
        limit: i64,
    ) -> Result<Vec<IntegrationEvent>> {
        Ok(sqlx::query_as(
            "SELECT id, kind, message, sync_run_id, created_at FROM integration_events \
             WHERE integration_id = $1 ORDER BY id DESC LIMIT $2",
        )
        .bind(integration)
        .bind(limit.clamp(1, 1000))
        .fetch_all(self.pool())
        .await?)
    }
}
