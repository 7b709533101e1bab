//! Jobs: queued rows written by ingest, and the worker's claim → outcome transaction.
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{FromRow, Postgres, QueryBuilder, Row, Transaction};
use switchyard_core::{DeadReason, Envelope, ErrorClass, JobStatus, ids};
use uuid::Uuid;

use crate::mappings::Mapping;
use crate::{Result, Store, StoreError};

/// What ingest records when it has published a job.
#[derive(Debug, Clone)]
pub struct QueuedJob<'a> {
    pub envelope: &'a Envelope,
}

#[derive(Debug, Clone, FromRow, Serialize)]
pub struct JobRow {
    pub id: Uuid,
    pub tenant: String,
    pub integration_id: Uuid,
    pub source_integration_id: Option<Uuid>,
    pub provider: String,
    pub entity: String,
    pub action: String,
    pub event: String,
    pub event_id: String,
    pub internal_id: String,
    pub source_version: Option<i64>,
    pub status: String,
    pub attempts: i32,
    pub duplicates: i32,
    pub external_id: Option<String>,
    pub dead_reason: Option<String>,
    pub last_error_class: Option<String>,
    pub last_error: Option<String>,
    pub received_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub duration_ms: Option<i32>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub replays: i32,
    pub purged_at: Option<DateTime<Utc>>,
}

pub(crate) const JOB_COLUMNS: &str = "id, tenant, integration_id, source_integration_id, provider, entity, \
     action, event, event_id, internal_id, source_version, status, attempts, duplicates, replays, purged_at, \
     external_id, dead_reason, last_error_class, last_error, received_at, started_at, \
     finished_at, duration_ms, created_at, updated_at";

#[derive(Debug, Clone, FromRow, Serialize)]
pub struct JobAttempt {
    pub attempt: i32,
    pub started_at: DateTime<Utc>,
    pub duration_ms: i32,
    pub outcome: String,
    pub status_code: Option<i32>,
    pub error_class: Option<String>,
    pub error: Option<String>,
    pub request: Option<String>,
    pub response: Option<String>,
}

/// Filters for listing jobs; every field narrows the list.
#[derive(Debug, Clone, Default)]
pub struct JobFilter {
    pub integration_id: Option<Uuid>,
    pub status: Option<JobStatus>,
    pub entity: Option<String>,
    pub limit: i64,
}

/// One provider call, as recorded in `job_attempts`. Summaries only: never credentials.
#[derive(Debug, Clone)]
pub struct AttemptRecord {
    pub started_at: DateTime<Utc>,
    pub duration_ms: i32,
    pub status_code: Option<i32>,
    pub error_class: Option<ErrorClass>,
    pub error: Option<String>,
    pub request: Option<String>,
    pub response: Option<String>,
}

/// What to do to the id mapping when a job succeeds.
#[derive(Debug, Clone)]
pub enum MappingChange {
    /// Record (or confirm) internal id → `external_id`.
    Upsert { external_id: String },
    /// The entity was deleted at the target: forget its mapping.
    Remove,
}

/// How a job ends this time round.
#[derive(Debug, Clone)]
pub enum Finish {
    Succeeded {
        attempt: AttemptRecord,
        mapping: MappingChange,
    },
    /// Older than the last version applied: not applied.
    Stale,
    /// Nothing to do (e.g. deleting an entity that was never created at the target).
    Ignored { reason: String },
    /// The call failed; the job will be retried later.
    Retrying {
        attempt: Option<AttemptRecord>,
        /// A deferral (throttled, breaker open) does not spend one of the job's attempts.
        spend_attempt: bool,
        class: ErrorClass,
        message: String,
    },
    /// The job goes to the dead-letter queue.
    Dead {
        attempt: Option<AttemptRecord>,
        class: ErrorClass,
        reason: DeadReason,
        message: String,
    },
}

/// The result of claiming a job.
pub enum Claim {
    /// The job already has its effect: acknowledge the delivery as a duplicate.
    Duplicate { status: JobStatus },
    /// The job is ours until [`JobTx::finish`]; concurrent deliveries of the same job, and
    /// jobs for the same entity at the same target, wait for us.
    Ready(Box<JobTx>),
}

/// A claimed job: an open transaction holding the entity's lock.
pub struct JobTx {
    tx: Transaction<'static, Postgres>,
    job_id: Uuid,
    attempts: i32,
    mapping: Option<Mapping>,
    started: DateTime<Utc>,
}

impl JobTx {
    pub fn job_id(&self) -> Uuid {
        self.job_id
    }

    /// Provider calls made for this job before this one.
    pub fn attempts_so_far(&self) -> i32 {
        self.attempts
    }

    /// The entity's current mapping at the target, read under the entity lock.
    pub fn mapping(&self) -> Option<&Mapping> {
        self.mapping.as_ref()
    }

    /// Record the outcome (attempt, job status, mapping) and commit, atomically.
    pub async fn finish(mut self, env: &Envelope, finish: Finish) -> Result<()> {
        let now = Utc::now();
        let duration_ms = (now - self.started)
            .num_milliseconds()
            .clamp(0, i32::MAX as i64) as i32;
        let spend = !matches!(
            &finish,
            Finish::Retrying {
                spend_attempt: false,
                ..
            }
        );
        let (status, attempt, class, message, reason, external_id) = match &finish {
            Finish::Succeeded { attempt, mapping } => {
                let ext = match mapping {
                    MappingChange::Upsert { external_id } => Some(external_id.clone()),
                    MappingChange::Remove => None,
                };
                (JobStatus::Succeeded, Some(attempt), None, None, None, ext)
            }
            Finish::Stale => (JobStatus::Stale, None, None, None, None, None),
            Finish::Ignored { reason } => (
                JobStatus::Ignored,
                None,
                None,
                Some(reason.clone()),
                None,
                None,
            ),
            Finish::Retrying {
                attempt,
                class,
                message,
                ..
            } => (
                JobStatus::Retrying,
                attempt.as_ref(),
                Some(*class),
                Some(message.clone()),
                None,
                None,
            ),
            Finish::Dead {
                attempt,
                class,
                reason,
                message,
            } => (
                JobStatus::Dead,
                attempt.as_ref(),
                Some(*class),
                Some(message.clone()),
                Some(*reason),
                None,
            ),
        };
        let attempts = self.attempts + i32::from(attempt.is_some() && spend);
        let settled = status.is_settled() || status == JobStatus::Dead;
        let (upsert, remove, mapped_to) = match &finish {
            Finish::Succeeded {
                mapping: MappingChange::Upsert { external_id },
                ..
            } => (true, false, Some(external_id.as_str())),
            Finish::Succeeded {
                mapping: MappingChange::Remove,
                ..
            } => (false, true, None),
            _ => (false, false, None),
        };
        // Attempt, mapping and job in one statement (one round trip); a CTE whose flag is
        // false does nothing.
        sqlx::query(
            "WITH a AS (\
               INSERT INTO job_attempts (job_id, attempt, started_at, duration_ms, outcome, \
                 status_code, error_class, error, request, response) \
               SELECT $1, $10, $11, $12, $2, $13, $14, $15, $16, $17 WHERE $18), \
             m AS (\
               INSERT INTO id_mappings (integration_id, entity, internal_id, external_id, \
                 last_source_version, last_job_id) \
               SELECT $19, $20, $21, $22, $23, $1 WHERE $24 \
               ON CONFLICT (integration_id, entity, internal_id) DO UPDATE SET \
                 external_id = EXCLUDED.external_id, \
                 last_source_version = GREATEST(id_mappings.last_source_version, EXCLUDED.last_source_version), \
                 last_job_id = EXCLUDED.last_job_id, last_synced_at = now()), \
             d AS (\
               DELETE FROM id_mappings \
               WHERE $25 AND integration_id = $19 AND entity = $20 AND internal_id = $21) \
             UPDATE jobs SET status = $2, attempts = $3, external_id = COALESCE($4, external_id), \
               dead_reason = $5, last_error_class = COALESCE($6, last_error_class), \
               last_error = COALESCE($7, last_error), \
               finished_at = CASE WHEN $8 THEN now() ELSE NULL END, \
               duration_ms = CASE WHEN $8 THEN $9 ELSE duration_ms END, updated_at = now() \
             WHERE id = $1",
        )
        .bind(self.job_id)
        .bind(status.as_str())
        .bind(attempts)
        .bind(external_id)
        .bind(reason.map(DeadReason::as_str))
        .bind(class.map(ErrorClass::as_str))
        .bind(message)
        .bind(settled)
        .bind(duration_ms)
        .bind(self.attempts + 1)
        .bind(attempt.map(|a| a.started_at))
        .bind(attempt.map(|a| a.duration_ms))
        .bind(attempt.and_then(|a| a.status_code))
        .bind(attempt.and_then(|a| a.error_class.map(ErrorClass::as_str)))
        .bind(attempt.and_then(|a| a.error.as_deref()))
        .bind(attempt.and_then(|a| a.request.as_deref()))
        .bind(attempt.and_then(|a| a.response.as_deref()))
        .bind(attempt.is_some())
        .bind(env.integration_id)
        .bind(&env.entity)
        .bind(&env.internal_id)
        .bind(mapped_to)
        .bind(env.source_version)
        .bind(upsert)
        .bind(remove)
        .execute(&mut *self.tx)
        .await
        .map_err(|e| match StoreError::from(e) {
            StoreError::Conflict(_) if upsert => StoreError::MappingConflict(format!(
                "external id `{}` is already mapped to another {} at this integration",
                mapped_to.unwrap_or_default(),
                env.entity
            )),
            other => other,
        })?;
        if settled && env.sync_run_id.is_some() {
            let created = self.mapping.is_none()
                && matches!(
                    &finish,
                    Finish::Succeeded {
                        mapping: MappingChange::Upsert { .. },
                        ..
                    }
                );
            crate::sync::count_for_run(&mut self.tx, self.job_id, status, created).await?;
        }
        self.tx.commit().await?;
        Ok(())
    }
}

/// Bind the 14 columns every job row starts with (`id` … `received_at`, `sync_run_id`), in
/// order, from the envelope: `$1` … `$14`.
fn bind_envelope<'q>(
    q: sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments>,
    env: &'q Envelope,
) -> sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments> {
    q.bind(env.id)
        .bind(&env.idempotency_key)
        .bind(&env.tenant)
        .bind(env.integration_id)
        .bind(env.source_integration_id)
        .bind(&env.provider)
        .bind(&env.entity)
        .bind(env.action.as_str())
        .bind(&env.event)
        .bind(&env.event_id)
        .bind(&env.internal_id)
        .bind(env.source_version)
        .bind(env.received_at)
        .bind(env.sync_run_id)
}

/// `INSERT` of `queued` job rows for these envelopes; an existing row (same id or key) is
/// left as it is.
pub(crate) fn queued_rows<'a>(
    envelopes: impl IntoIterator<Item = &'a Envelope>,
) -> QueryBuilder<Postgres> {
    let mut qb: QueryBuilder<Postgres> = QueryBuilder::new(
        "INSERT INTO jobs (id, idempotency_key, tenant, integration_id, source_integration_id, \
         provider, entity, action, event, event_id, internal_id, source_version, received_at, \
         sync_run_id) ",
    );
    qb.push_values(envelopes, |mut b, e| {
        b.push_bind(e.id)
            .push_bind(&e.idempotency_key)
            .push_bind(&e.tenant)
            .push_bind(e.integration_id)
            .push_bind(e.source_integration_id)
            .push_bind(&e.provider)
            .push_bind(&e.entity)
            .push_bind(e.action.as_str())
            .push_bind(&e.event)
            .push_bind(&e.event_id)
            .push_bind(&e.internal_id)
            .push_bind(e.source_version)
            .push_bind(e.received_at)
            .push_bind(e.sync_run_id);
    });
    // The id is derived from the key, so either unique index may report the conflict.
    qb.push(" ON CONFLICT DO NOTHING");
    qb
}

impl Store {
    /// Record published jobs as `queued` so `GET /v1/jobs/{id}` finds them at once. A job a
    /// worker already claimed is left as it is.
    pub async fn record_queued(&self, jobs: &[QueuedJob<'_>]) -> Result<()> {
        if jobs.is_empty() {
            return Ok(());
        }
        queued_rows(jobs.iter().map(|j| j.envelope))
            .build()
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Which of these job ids already exist (a re-sent webhook).
    pub async fn existing_jobs(&self, ids: &[Uuid]) -> Result<Vec<Uuid>> {
        Ok(sqlx::query_scalar("SELECT id FROM jobs WHERE id = ANY($1)")
            .bind(ids)
            .fetch_all(self.pool())
            .await?)
    }

    /// Claim a job for processing: lock its entity at the target, create or update its row,
    /// and read the entity's mapping. Returns [`Claim::Duplicate`] when the job has already
    /// had its effect.
    pub async fn claim(&self, env: &Envelope) -> Result<Claim> {
        // BEGIN and the entity's lock in one round trip (the key is a number we computed).
        let lock = ids::entity_lock_key(env.integration_id, &env.entity, &env.internal_id);
        let mut tx = self
            .pool()
            .begin_with(sqlx::AssertSqlSafe(format!(
                "BEGIN; SELECT pg_advisory_xact_lock({lock})"
            )))
            .await?;
        // The job's row and the entity's mapping in one round trip (the lock is held, so the
        // mapping read is current).
        let row = bind_envelope(
            sqlx::query(
            "WITH j AS (\
             INSERT INTO jobs (id, idempotency_key, tenant, integration_id, source_integration_id, \
             provider, entity, action, event, event_id, internal_id, source_version, received_at, \
             sync_run_id, status, started_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, 'running', now()) \
             ON CONFLICT (id) DO UPDATE SET \
               status = CASE WHEN jobs.status IN ('succeeded', 'stale', 'ignored', 'skipped') THEN jobs.status ELSE 'running' END, \
               duplicates = jobs.duplicates + CASE WHEN jobs.status IN ('succeeded', 'stale', 'ignored', 'skipped') THEN 1 ELSE 0 END, \
               started_at = COALESCE(jobs.started_at, now()), \
               updated_at = now() \
             RETURNING status, attempts, started_at) \
             SELECT j.status, j.attempts, j.started_at, m.integration_id, m.entity, m.internal_id, \
                    m.external_id, m.last_source_version, m.last_job_id, m.created_at, m.last_synced_at \
             FROM j LEFT JOIN id_mappings m \
               ON m.integration_id = $4 AND m.entity = $7 AND m.internal_id = $11",
            ),
            env,
        )
        .fetch_one(&mut *tx)
        .await?;
        let (status, attempts, started): (String, i32, DateTime<Utc>) =
            (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
        let status: JobStatus =
            status
                .parse()
                .map_err(|e: switchyard_core::model::UnknownValue| {
                    StoreError::Corrupt(e.to_string())
                })?;
        if status.is_settled() {
            tx.commit().await?;
            return Ok(Claim::Duplicate { status });
        }
        if let Some(run) = env.sync_run_id {
            let run_status: Option<String> =
                sqlx::query_scalar("SELECT status FROM sync_runs WHERE id = $1")
                    .bind(run)
                    .fetch_optional(&mut *tx)
                    .await?;
            if run_status.as_deref() == Some("cancelled") {
                // Its run was cancelled while it waited (e.g. between retries): skip it.
                sqlx::query(
                    "UPDATE jobs SET status = 'skipped', finished_at = now(), updated_at = now() \
                     WHERE id = $1",
                )
                .bind(env.id)
                .execute(&mut *tx)
                .await?;
                crate::sync::count_for_run(&mut tx, env.id, JobStatus::Skipped, false).await?;
                tx.commit().await?;
                return Ok(Claim::Duplicate {
                    status: JobStatus::Skipped,
                });
            }
        }
        let mapping = match row.try_get::<Option<Uuid>, _>(3)? {
            None => None,
            Some(integration_id) => Some(Mapping {
                integration_id,
                entity: row.try_get(4)?,
                internal_id: row.try_get(5)?,
                external_id: row.try_get(6)?,
                last_source_version: row.try_get(7)?,
                last_job_id: row.try_get(8)?,
                created_at: row.try_get(9)?,
                last_synced_at: row.try_get(10)?,
            }),
        };
        // The id is derived from the idempotency key, so the row's id is the envelope's.
        let job_id = env.id;
        Ok(Claim::Ready(Box::new(JobTx {
            tx,
            job_id,
            attempts,
            mapping,
            started,
        })))
    }

    /// Mark a job dead outside a claim (its claim's transaction failed, or never ran). The
    /// row is created if ingest has not recorded it yet.
    pub async fn mark_dead(
        &self,
        env: &Envelope,
        class: ErrorClass,
        reason: DeadReason,
        message: &str,
    ) -> Result<()> {
        let mut tx = self.pool().begin().await?;
        bind_envelope(
            sqlx::query(
            "INSERT INTO jobs (id, idempotency_key, tenant, integration_id, source_integration_id, \
             provider, entity, action, event, event_id, internal_id, source_version, received_at, \
             sync_run_id, status, dead_reason, last_error_class, last_error, finished_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, 'dead', $15, $16, $17, now()) \
             ON CONFLICT (id) DO UPDATE SET status = 'dead', \
               dead_reason = EXCLUDED.dead_reason, last_error_class = EXCLUDED.last_error_class, \
               last_error = EXCLUDED.last_error, finished_at = now(), updated_at = now()",
        ),
            env,
        )
        .bind(reason.as_str())
        .bind(class.as_str())
        .bind(message)
        .execute(&mut *tx)
        .await?;
        crate::sync::count_for_run(&mut tx, env.id, JobStatus::Dead, false).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Make a dead job processable again: fresh attempts, its history kept. A job that is no
    /// longer dead (it succeeded meanwhile) is left alone, so its replay is a duplicate.
    pub async fn reset_for_replay(&self, id: Uuid) -> Result<bool> {
        let r = sqlx::query(
            "UPDATE jobs SET status = 'queued', attempts = 0, replays = replays + 1,              dead_reason = NULL, finished_at = NULL, purged_at = NULL, updated_at = now()              WHERE id = $1 AND status = 'dead'",
        )
        .bind(id)
        .execute(self.pool())
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Note that a dead job's message was purged from its dead-letter queue.
    pub async fn mark_purged(&self, id: Uuid) -> Result<()> {
        sqlx::query("UPDATE jobs SET purged_at = now(), updated_at = now() WHERE id = $1")
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// Record an operator's replay or purge.
    #[allow(clippy::too_many_arguments)]
    pub async fn record_dlq_action(
        &self,
        action: &str,
        actor: &str,
        filter: &serde_json::Value,
        dry_run: bool,
        matched: usize,
        moved: usize,
        job_ids: &[Uuid],
    ) -> Result<i64> {
        Ok(sqlx::query_scalar(
            "INSERT INTO dlq_actions (action, actor, filter, dry_run, matched, moved, job_ids)              VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
        )
        .bind(action)
        .bind(actor)
        .bind(filter)
        .bind(dry_run)
        .bind(matched as i32)
        .bind(moved as i32)
        .bind(job_ids)
        .fetch_one(self.pool())
        .await?)
    }

    pub async fn job(&self, id: Uuid) -> Result<JobRow> {
        let sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1");
        sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(self.pool())
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("job {id}")))
    }

    pub async fn job_attempts(&self, id: Uuid) -> Result<Vec<JobAttempt>> {
        Ok(sqlx::query_as(
            "SELECT attempt, started_at, duration_ms, outcome, status_code, error_class, error, \
             request, response FROM job_attempts WHERE job_id = $1 ORDER BY attempt, id",
        )
        .bind(id)
        .fetch_all(self.pool())
        .await?)
    }

    /// Newest first.
    pub async fn list_jobs(&self, f: &JobFilter) -> Result<Vec<JobRow>> {
        let sql = format!(
            "SELECT {JOB_COLUMNS} FROM jobs \
             WHERE ($1::uuid IS NULL OR integration_id = $1) \
               AND ($2::text IS NULL OR status = $2) \
               AND ($3::text IS NULL OR entity = $3) \
             ORDER BY created_at DESC, id LIMIT $4"
        );
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(f.integration_id)
            .bind(f.status.map(JobStatus::as_str))
            .bind(f.entity.as_deref())
            .bind(if f.limit > 0 { f.limit } else { 100 })
            .fetch_all(self.pool())
            .await?)
    }
}
