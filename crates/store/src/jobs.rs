//! Jobs: queued rows written by ingest, and the worker's claim → outcome transaction.
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{FromRow, Postgres, QueryBuilder, Row, Transaction};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use switchyard_core::{DeadReason, Envelope, ErrorClass, IntegrationStatus, JobStatus, ids};
use uuid::Uuid;

use crate::{Result, Store, StoreError};

/// What ingest records when it has published a job.
#[derive(Debug, Clone)]
pub struct QueuedJob<'a> {
    pub envelope: &'a Envelope,
}

#[derive(Debug, Clone, FromRow, Serialize, utoipa::ToSchema)]
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
    /// The record the job is about (once a worker has resolved it).
    pub record_id: Option<Uuid>,
}

pub(crate) const JOB_COLUMNS: &str = "id, tenant, integration_id, source_integration_id, provider, entity, \
     action, event, event_id, internal_id, source_version, status, attempts, duplicates, replays, purged_at, \
     external_id, dead_reason, last_error_class, last_error, received_at, started_at, \
     finished_at, duration_ms, created_at, updated_at, record_id";

#[derive(Debug, Clone, FromRow, Serialize, utoipa::ToSchema)]
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

/// What to do to the record's link at the target when a job succeeds.
#[derive(Debug, Clone)]
pub enum MappingChange {
    /// Record (or confirm) the target's id for the record.
    Upsert { external_id: String },
    /// The record was deleted at the target: its links at the target and at the source are
    /// retired, and the record is marked deleted (a later event with the same source id
    /// makes a new record).
    Remove,
}

/// How a job ends this time round.
#[derive(Debug, Clone)]
pub enum Finish {
    Succeeded {
        attempt: AttemptRecord,
        mapping: MappingChange,
        /// The record's version at the target after this write, as the target reported it
        /// (for recognising the target's echo of it).
        written_version: Option<i64>,
        /// What the answer said to keep for the next update.
        kept: Option<serde_json::Value>,
    },
    /// Older than the last version applied from its source: not applied.
    Stale,
    /// Nothing to do (e.g. deleting an entity that was never created at the target, or the
    /// echo of the hub's own write).
    Ignored { reason: String },
    /// Not sent, on purpose (a conflict lost, a `drop` route whose target is not active).
    Skipped {
        reason: String,
        conflict: Option<crate::identity::NewConflict>,
    },
    /// The target is not active: kept, with its envelope, until it is released.
    Held,
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
    /// jobs about the same source record for the same target, wait for us.
    Ready(Box<JobTx>),
}

/// The event's source record as the hub knows it: its link in the source system.
#[derive(Debug, Clone)]
pub struct SourceLink {
    pub record_id: Uuid,
    /// The newest change from the source the hub has applied: its version and when it
    /// was received.
    pub changed_version: Option<i64>,
    pub changed_at: Option<DateTime<Utc>>,
    /// What the hub last wrote to the source system itself (two-way sync): the version
    /// the source reported for it.
    pub written_version: Option<i64>,
    pub written_at: Option<DateTime<Utc>>,
    /// The link was retired (the record was deleted); only a delete job reads such a one.
    pub deleted: bool,
}

/// The record's link at the target: its id there and what the hub last wrote.
#[derive(Debug, Clone)]
pub struct TargetLink {
    pub external_id: String,
    pub last_source_version: Option<i64>,
    pub written_at: Option<DateTime<Utc>>,
    pub written_version: Option<i64>,
    /// When the change last written there was received.
    pub written_change_at: Option<DateTime<Utc>>,
    /// What the last write's answer said to keep for the next update.
    pub kept: Option<serde_json::Value>,
    /// When the hub received the target's own newest change to the record (an event from
    /// the target, not an echo of the hub's writes), if any.
    pub target_changed_at: Option<DateTime<Utc>>,
}

/// A claimed job: its lease on the source record at the target (the claim committed it),
/// and, while it needs one, a transaction under the record's lock.
pub struct JobTx {
    /// Open only while a step needs more than one statement ([`JobTx::lock_record`],
    /// [`JobTx::note_conflict`], a sync run's count); [`JobTx::park`] commits it.
    tx: Option<Transaction<'static, Postgres>>,
    pool: sqlx::PgPool,
    /// The copy of the job's message being processed (see [`Store::claim`]).
    copy: String,
    /// An earlier attempt of this copy may have called the provider without recording it.
    interrupted: bool,
    /// The locks this job holds: its source record's at the target, and the record's own
    /// when [`JobTx::lock_record`] took it. Parking leases them.
    locks: Vec<i64>,
    /// How many of `locks` have a lease (the claim's; the rest are leased by `park`).
    leased: usize,
    /// The claim's lease, until the job calls the provider or records its outcome: a job
    /// dropped before either (an error on the way) gives it back, so that the record's other
    /// jobs need not wait for it to lapse. The lease's `until` tells it from a later claim's.
    unreleased: Option<DateTime<Utc>>,
    job_id: Uuid,
    attempts: i32,
    started: DateTime<Utc>,
    target_status: Option<IntegrationStatus>,
    source: Option<SourceLink>,
    target: Option<TargetLink>,
    /// The claim created the event's record (and its origin link) in its own transaction.
    created_record: bool,
}

/// The columns a job's outcome writes into its record's link at the target.
macro_rules! link_columns {
    () => {
        "(record_id, tenant, integration_id, entity, external_id, last_source_version, \
          last_job_id, written_at, written_version, written_change_at, kept)"
    };
}

/// How a job's outcome updates its record's live link at the target, if there is one.
macro_rules! link_upsert {
    () => {
        "ON CONFLICT (record_id, integration_id) WHERE deleted_at IS NULL DO UPDATE SET \
           external_id = EXCLUDED.external_id, \
           last_source_version = GREATEST(record_links.last_source_version, EXCLUDED.last_source_version), \
           last_job_id = EXCLUDED.last_job_id, written_at = now(), \
           written_version = EXCLUDED.written_version, \
           written_change_at = EXCLUDED.written_change_at, \
           kept = COALESCE(EXCLUDED.kept, record_links.kept), last_synced_at = now()"
    };
}

/// The columns a link read returns, for [`read_links`]: the source link's, then the
/// target link's, then the target's own newest change.
const LINKS_SELECT: &str = "s.record_id, s.changed_version, s.changed_at, s.written_version,      s.written_at, s.deleted_at IS NOT NULL, t.external_id, t.last_source_version, t.written_at,      t.written_version, t.written_change_at, t.kept,      (SELECT max(x.received_at) FROM jobs x WHERE x.internal_id = t.external_id         AND x.source_integration_id = t.integration_id AND x.entity = t.entity         AND x.status NOT IN ('ignored', 'skipped', 'stale')         AND NOT (x.source_version IS NOT NULL AND t.written_version IS NOT NULL                  AND x.source_version <= t.written_version))";

fn read_links(
    row: &sqlx::postgres::PgRow,
    at: usize,
) -> Result<(Option<SourceLink>, Option<TargetLink>)> {
    let source = match row.try_get::<Option<Uuid>, _>(at)? {
        None => None,
        Some(record_id) => Some(SourceLink {
            record_id,
            changed_version: row.try_get(at + 1)?,
            changed_at: row.try_get(at + 2)?,
            written_version: row.try_get(at + 3)?,
            written_at: row.try_get(at + 4)?,
            deleted: row.try_get::<Option<bool>, _>(at + 5)?.unwrap_or(false),
        }),
    };
    let target = match row.try_get::<Option<String>, _>(at + 6)? {
        None => None,
        Some(external_id) => Some(TargetLink {
            external_id,
            last_source_version: row.try_get(at + 7)?,
            written_at: row.try_get(at + 8)?,
            written_version: row.try_get(at + 9)?,
            written_change_at: row.try_get(at + 10)?,
            kept: row.try_get(at + 11)?,
            target_changed_at: row.try_get(at + 12)?,
        }),
    };
    Ok((source, target))
}

impl JobTx {
    pub fn job_id(&self) -> Uuid {
        self.job_id
    }

    /// Provider calls made for this job before this one.
    pub fn attempts_so_far(&self) -> i32 {
        self.attempts
    }

    /// Whether an earlier attempt of this job got as far as its provider call without
    /// recording the outcome (its lease was still there): the call may have had its effect,
    /// so a create looks the record up first.
    pub fn interrupted(&self) -> bool {
        self.interrupted
    }

    /// The target integration's status, read with the claim (`None`: it is gone).
    pub fn target_status(&self) -> Option<IntegrationStatus> {
        self.target_status
    }

    /// The event's record, by its link at the source (`None`: not known yet).
    pub fn source(&self) -> Option<&SourceLink> {
        self.source.as_ref()
    }

    /// The record's link at the target, read under the lock.
    pub fn target(&self) -> Option<&TargetLink> {
        self.target.as_ref()
    }

    /// Whether the claim made the event's record: the hub had not heard of it, so it is at
    /// no target yet (see [`Store::claim`]).
    pub fn created_record(&self) -> bool {
        self.created_record
    }

    /// Make sure the event's record exists (creating it and its source link if this is the
    /// first the hub hears of it), then, if the record was already known, lock it at the
    /// target and read its links again: two sources of one record then cannot both create
    /// it at the target.
    pub async fn resolve_record(&mut self, store: &Store, env: &Envelope) -> Result<()> {
        let (record, created) = store
            .ensure_record(
                &env.tenant,
                &env.entity,
                env.source_integration_id,
                &env.internal_id,
            )
            .await?;
        if created {
            self.created_record = true;
            self.source = Some(SourceLink {
                record_id: record,
                changed_version: None,
                changed_at: None,
                written_version: None,
                written_at: None,
                deleted: false,
            });
            self.target = None;
            return Ok(());
        }
        self.lock_record(env, record).await
    }

    /// The open transaction ([`JobTx::reopen`] opens it).
    fn conn(&mut self) -> Result<&mut Transaction<'static, Postgres>> {
        self.tx.as_mut().ok_or_else(|| {
            StoreError::Corrupt("a job's transaction was used before it was opened".into())
        })
    }

    /// Lock the record at the target and read its links again (before a create of a
    /// record that other systems already know). [`StoreError::Busy`] if another job holds
    /// the record across a provider call.
    pub async fn lock_record(&mut self, env: &Envelope, record: Uuid) -> Result<()> {
        let key = ids::record_lock_key(env.integration_id, record);
        let job = self.job_id;
        self.reopen().await?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(key)
            .execute(&mut **self.conn()?)
            .await?;
        // A statement of its own: its snapshot is taken after the lock was granted.
        let leased: Option<DateTime<Utc>> = sqlx::query_scalar(
            "SELECT until FROM job_leases WHERE lock_key = $1 \
             AND NOT (job_id = $2 AND copy_id = $3) AND until > now()",
        )
        .bind(key)
        .bind(job)
        .bind(self.copy.clone())
        .fetch_optional(&mut **self.conn()?)
        .await?;
        if let Some(until) = leased {
            return Err(StoreError::Busy { until });
        }
        if !self.locks.contains(&key) {
            self.locks.push(key);
        }
        let sql = format!(
            "SELECT {LINKS_SELECT} FROM record_links s              LEFT JOIN record_links t ON t.record_id = s.record_id AND t.integration_id = $2                AND t.deleted_at IS NULL              WHERE s.record_id = $1 AND s.integration_id = $3 AND s.entity = $4 AND s.deleted_at IS NULL"
        );
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(record)
            .bind(env.integration_id)
            .bind(env.source_integration_id.unwrap_or(ids::NO_SOURCE))
            .bind(&env.entity)
            .fetch_optional(&mut **self.conn()?)
            .await?;
        if let Some(row) = row {
            (self.source, self.target) = read_links(&row, 0)?;
        }
        Ok(())
    }

    /// Record a conflict that this job wins (it goes on to be applied), with its outcome.
    pub async fn note_conflict(
        &mut self,
        env: &Envelope,
        c: crate::identity::NewConflict,
    ) -> Result<()> {
        let Some(record) = self.source.as_ref().map(|s| s.record_id) else {
            return Ok(());
        };
        self.reopen().await?;
        sqlx::query(
            "INSERT INTO record_conflicts (tenant, record_id, entity, policy, winner_integration, \
               loser_integration, winner_changed_at, loser_changed_at, job_id, message) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (job_id) DO NOTHING",
        )
        .bind(&env.tenant)
        .bind(record)
        .bind(&env.entity)
        .bind(c.policy)
        .bind(c.winner)
        .bind(c.loser)
        .bind(c.winner_changed_at)
        .bind(c.loser_changed_at)
        .bind(self.job_id)
        .bind(&c.message)
        .execute(&mut **self.conn()?)
        .await?;
        Ok(())
    }

    /// Before the provider call: lease this job's locks for `ttl` and commit, so that no
    /// database connection is held while the provider answers (or does not). Jobs that
    /// need the same locks meanwhile find the lease and come back later
    /// ([`StoreError::Busy`]). [`JobTx::resume`] continues.
    pub async fn park(&mut self, ttl: Duration) -> Result<()> {
        let ms = ttl.as_millis().min(i32::MAX as u128) as i64;
        // The claim's lease is kept across the call from here on (the outcome releases it).
        self.unreleased = None;
        let Some(mut tx) = self.tx.take() else {
            // Nothing since the claim needed a transaction: its lease is committed.
            return Ok(());
        };
        // The claim leased its own lock; a record locked since (`lock_record`) is leased
        // now. Losing a lease with a database crash loses nothing a retry cannot redo, so
        // the commit (the claim's) need not wait for the disk.
        if self.locks.len() > self.leased {
            sqlx::query(
                "WITH c AS (SELECT set_config('synchronous_commit', 'off', true)) \
             INSERT INTO job_leases (lock_key, job_id, copy_id, until) \
             SELECT k, $2, $4, now() + make_interval(secs => $3::float8 / 1000) \
             FROM c, unnest($1::bigint[]) k \
             ON CONFLICT (lock_key) DO UPDATE SET job_id = EXCLUDED.job_id, \
               copy_id = EXCLUDED.copy_id, until = EXCLUDED.until",
            )
            .bind(&self.locks)
            .bind(self.job_id)
            .bind(ms as f64)
            .bind(&self.copy)
            .execute(&mut *tx)
            .await?;
            self.leased = self.locks.len();
        }
        tx.commit().await?;
        Ok(())
    }

    /// A transaction under the job's lock, for a step that needs more than one statement
    /// (locking the record, noting a conflict that is committed with the claim's lease
    /// before the call, a sync run's count). The outcome alone needs none: its one
    /// statement writes everything and releases the leases atomically, and the leases keep
    /// every other job away from the record until it has.
    async fn reopen(&mut self) -> Result<()> {
        if self.tx.is_some() {
            return Ok(());
        }
        let lock = self.locks.first().copied().unwrap_or_default();
        self.tx = Some(locked(&self.pool, lock).await?);
        Ok(())
    }

    /// Record the outcome (attempt, job status, links, held envelope, conflict) and commit,
    /// atomically.
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
            Finish::Succeeded {
                attempt, mapping, ..
            } => {
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
            Finish::Skipped { reason, .. } => (
                JobStatus::Skipped,
                None,
                None,
                Some(reason.clone()),
                None,
                None,
            ),
            Finish::Held => (JobStatus::Held, None, None, None, None, None),
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
        let (upsert, remove, mapped_to, written_version, kept) = match &finish {
            Finish::Succeeded {
                mapping: MappingChange::Upsert { external_id },
                written_version,
                kept,
                ..
            } => (
                true,
                false,
                Some(external_id.as_str()),
                *written_version,
                kept.clone(),
            ),
            Finish::Succeeded {
                mapping: MappingChange::Remove,
                ..
            } => (false, true, None, None, None),
            _ => (false, false, None, None, None),
        };
        let applied = upsert || remove;
        let record = self.source.as_ref().map(|s| s.record_id);
        let source = env.source_integration_id.unwrap_or(ids::NO_SOURCE);
        let held = matches!(finish, Finish::Held);
        let held_envelope = if held {
            Some(serde_json::to_value(env).map_err(|e| StoreError::Corrupt(e.to_string()))?)
        } else {
            None
        };
        let conflict = match &finish {
            Finish::Skipped {
                conflict: Some(c), ..
            } => Some(c),
            _ => None,
        };
        let counted = settled && env.sync_run_id.is_some();
        if counted {
            self.reopen().await?;
        }
        // Attempt, links, held envelope, conflict and job in one statement (one round
        // trip). Only the parts this outcome needs are in its text: every table a statement
        // names is locked and set up each time it runs, whether or not its part writes
        // anything, and that was a fifth of PostgreSQL's CPU per job in `just bench`. The
        // parameters keep their numbers in every variant (a part left out leaves its
        // parameters unused), so one list of binds serves them all.
        let part = |on: bool, sql: &'static str| if on { sql } else { "" };
        let sql = format!(
            "WITH a AS (\
               INSERT INTO job_attempts (job_id, attempt, started_at, duration_ms, outcome, \
                 status_code, error_class, error, request, response) \
               SELECT $1, $10, $11, $12, $2, $13, $14, $15, $16, $17 WHERE $18), \
             {m}{s}{d}{h}{c}\
             l AS (DELETE FROM job_leases WHERE lock_key = ANY($40) AND job_id = $1) \
             UPDATE jobs SET status = $2, attempts = $3, external_id = COALESCE($4, external_id), \
               dead_reason = $5, last_error_class = COALESCE($6, last_error_class), \
               last_error = COALESCE($7, last_error), record_id = COALESCE($26, record_id), \
               finished_at = CASE WHEN $8 THEN now() ELSE NULL END, \
               duration_ms = CASE WHEN $8 THEN $9 ELSE duration_ms END, updated_at = now() \
             WHERE id = $1 \
             RETURNING set_config('synchronous_commit', 'on', true)",
            m = part(
                upsert && record.is_some(),
                concat!(
                    "m AS (INSERT INTO record_links ",
                    link_columns!(),
                    " SELECT $26, $27, $19, $20, $22, $23, $1, now(), $28, $29, $39 \
                     WHERE $24 AND $26 IS NOT NULL ",
                    link_upsert!(),
                    "), "
                ),
            ),
            s = part(
                applied && !remove && env.source_version.is_some() && record.is_some(),
                "s AS (\
                   UPDATE record_links SET changed_at = $29, changed_version = $23 \
                   WHERE $30 AND NOT $25 AND $23 IS NOT NULL AND record_id = $26 \
                     AND integration_id = $31 AND deleted_at IS NULL \
                     AND (changed_version IS NULL OR changed_version < $23)), ",
            ),
            d = part(
                remove && record.is_some(),
                "d AS (\
                   UPDATE record_links SET deleted_at = now() \
                   WHERE $25 AND record_id = $26 AND integration_id IN ($19, $31) AND deleted_at IS NULL), \
                 dr AS (UPDATE records SET deleted_at = COALESCE(deleted_at, now()) WHERE $25 AND id = $26), ",
            ),
            h = part(
                held_envelope.is_some(),
                "h AS (\
                   INSERT INTO held_jobs (job_id, integration_id, envelope, received_at) \
                   SELECT $1, $19, $32, $29 WHERE $32 IS NOT NULL ON CONFLICT (job_id) DO NOTHING), ",
            ),
            c = part(
                conflict.is_some() && record.is_some(),
                "c AS (\
                   INSERT INTO record_conflicts (tenant, record_id, entity, policy, winner_integration, \
                     loser_integration, winner_changed_at, loser_changed_at, job_id, message) \
                   SELECT $27, $26, $20, $33, $34, $35, $36, $37, $1, $38 WHERE $33 IS NOT NULL AND $26 IS NOT NULL \
                   ON CONFLICT (job_id) DO NOTHING), ",
            ),
        );
        let q = sqlx::query(sqlx::AssertSqlSafe(sql))
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
            .bind(record)
            .bind(&env.tenant)
            .bind(written_version)
            .bind(env.received_at)
            .bind(applied)
            .bind(source)
            .bind(held_envelope)
            .bind(conflict.map(|c| c.policy))
            .bind(conflict.map(|c| c.winner))
            .bind(conflict.map(|c| c.loser))
            .bind(conflict.and_then(|c| c.winner_changed_at))
            .bind(conflict.map(|c| c.loser_changed_at))
            .bind(conflict.map(|c| c.message.as_str()))
            .bind(kept)
            .bind(&self.locks);
        // Parked (after a provider call): one statement on its own, its own transaction.
        // Either way the commit waits for the disk (the claim had turned that off).
        let done = match self.tx.as_mut() {
            Some(tx) => q.execute(&mut **tx).await,
            None => q.execute(&self.pool).await,
        };
        done.map_err(|e| match StoreError::from(e) {
            StoreError::Conflict(_) if upsert => StoreError::MappingConflict(format!(
                "external id `{}` is already linked to another {} at this integration",
                mapped_to.unwrap_or_default(),
                env.entity
            )),
            other => other,
        })?;
        if counted {
            let created = self.target.is_none()
                && matches!(
                    &finish,
                    Finish::Succeeded {
                        mapping: MappingChange::Upsert { .. },
                        ..
                    }
                );
            let job = self.job_id;
            crate::sync::count_for_run(self.conn()?, job, status, created).await?;
        }
        if let Some(tx) = self.tx.take() {
            tx.commit().await?;
        }
        // The statement released the leases.
        self.unreleased = None;
        Ok(())
    }
}

/// A parked job's success, recorded with other jobs' in one statement and one commit
/// ([`Store::record_succeeded`], through an [`OutcomeBatcher`]): what [`JobTx::finish`]
/// writes for it, as data.
#[derive(Debug, Clone)]
pub struct Succeeded {
    job_id: Uuid,
    attempt_no: i32,
    started_at: DateTime<Utc>,
    attempt_ms: i32,
    status_code: Option<i32>,
    request: Option<String>,
    response: Option<String>,
    integration_id: Uuid,
    source: Uuid,
    entity: String,
    tenant: String,
    record_id: Uuid,
    external_id: String,
    source_version: Option<i64>,
    written_version: Option<i64>,
    received_at: DateTime<Utc>,
    kept: Option<serde_json::Value>,
    job_ms: i32,
    locks: Vec<i64>,
}

/// Records the outcomes of jobs that end together in one statement and commit.
pub type OutcomeBatcher = crate::batch::Batcher<Succeeded, std::result::Result<(), String>>;

/// A transaction holding the advisory lock `lock`, begun in one round trip (the key is a
/// number we computed).
async fn locked(pool: &sqlx::PgPool, lock: i64) -> Result<Transaction<'static, Postgres>> {
    Ok(pool
        .begin_with(sqlx::AssertSqlSafe(format!(
            "BEGIN; SELECT pg_advisory_xact_lock({lock})"
        )))
        .await?)
}

/// The source record's lock at the target: the key every job about it takes.
fn lock_key(env: &Envelope) -> i64 {
    ids::entity_lock_key(
        env.integration_id,
        &env.entity,
        env.source_integration_id,
        &env.internal_id,
    )
}

/// What a claim needs of a job's envelope (its payload stays with the caller).
#[derive(Debug, Clone)]
pub struct ClaimArgs {
    /// This request's own number: its answer's key.
    token: u64,
    id: Uuid,
    key: String,
    tenant: String,
    integration: Uuid,
    source_integration: Option<Uuid>,
    provider: String,
    entity: String,
    action: String,
    event: String,
    event_id: String,
    internal_id: String,
    source_version: Option<i64>,
    received_at: DateTime<Utc>,
    sync_run: Option<Uuid>,
    /// The source integration, or [`ids::NO_SOURCE`].
    source: Uuid,
    copy: String,
    lock: i64,
    /// The id of the record the claim makes, if it makes one.
    record: Uuid,
    /// An upsert outside a sync run makes the record it has not heard of.
    create: bool,
}

impl ClaimArgs {
    fn new(env: &Envelope, copy: &str) -> ClaimArgs {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        ClaimArgs {
            token: NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
            id: env.id,
            key: env.idempotency_key.clone(),
            tenant: env.tenant.clone(),
            integration: env.integration_id,
            source_integration: env.source_integration_id,
            provider: env.provider.clone(),
            entity: env.entity.clone(),
            action: env.action.as_str().to_owned(),
            event: env.event.clone(),
            event_id: env.event_id.clone(),
            internal_id: env.internal_id.clone(),
            source_version: env.source_version,
            received_at: env.received_at,
            sync_run: env.sync_run_id,
            source: env.source_integration_id.unwrap_or(ids::NO_SOURCE),
            copy: copy.to_owned(),
            lock: lock_key(env),
            record: Uuid::now_v7(),
            create: env.action == switchyard_core::Action::Upsert && env.sync_run_id.is_none(),
        }
    }
}

/// A claim's answer: a row `claim_jobs` returns, after the job's place.
#[derive(Debug, Clone)]
pub struct ClaimRow {
    status: Option<String>,
    attempts: Option<i32>,
    started_at: Option<DateTime<Utc>>,
    target_status: Option<String>,
    source: Option<SourceLink>,
    target: Option<TargetLink>,
    busy_until: Option<DateTime<Utc>>,
    own: bool,
    created_record: Option<Uuid>,
    run_status: Option<String>,
    lease_until: Option<DateTime<Utc>>,
}

impl ClaimRow {
    fn read(row: &sqlx::postgres::PgRow, at: usize) -> Result<ClaimRow> {
        let (source, target) = read_links(row, at + 4)?;
        Ok(ClaimRow {
            status: row.try_get(at)?,
            attempts: row.try_get(at + 1)?,
            started_at: row.try_get(at + 2)?,
            target_status: row.try_get(at + 3)?,
            source,
            target,
            busy_until: row.try_get(at + 17)?,
            own: row.try_get::<Option<bool>, _>(at + 18)?.unwrap_or(false),
            created_record: row.try_get(at + 19)?,
            run_status: row.try_get(at + 20)?,
            lease_until: row.try_get(at + 21)?,
        })
    }
}

/// Claims jobs that arrive together in one call and commit.
pub type ClaimBatcher =
    crate::batch::Batcher<ClaimArgs, std::result::Result<Arc<HashMap<u64, ClaimRow>>, String>>;

impl Drop for JobTx {
    /// A job dropped between its claim and its provider call (an error on the way) gives
    /// its lease back at once, as the claim's rollback did when the claim was a transaction
    /// left open; otherwise the record's other jobs would wait for it to lapse. Only that
    /// lease is removed: a later claim of the same copy has another `until`.
    fn drop(&mut self) {
        let (Some(until), Some(&lock)) = (self.unreleased.take(), self.locks.first()) else {
            return;
        };
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let (pool, job) = (self.pool.clone(), self.job_id);
        rt.spawn(async move {
            let gone = sqlx::query(
                "DELETE FROM job_leases WHERE lock_key = $1 AND job_id = $2 AND until = $3",
            )
            .bind(lock)
            .bind(job)
            .bind(until)
            .execute(&pool)
            .await;
            if let Err(e) = gone {
                tracing::warn!(error = %e, %job,
                    "a job's lease could not be given back; it lapses at its time");
            }
        });
    }
}

impl JobTx {
    /// [`JobTx::finish`], except that a parked job's success is recorded together with
    /// the successes of other jobs ending at the same moment, in one statement and one
    /// commit that waits for the disk (group commit), when `batch` is given. The call
    /// returns once that commit is done. If the shared statement fails (one of its jobs'
    /// external ids is already linked to another record, say), none of it was written, and
    /// each of its jobs records its outcome alone, where its own error is reported.
    pub async fn finish_batched(
        self,
        env: &Envelope,
        finish: Finish,
        batch: Option<&OutcomeBatcher>,
    ) -> Result<()> {
        if let (Some(batch), Some(item)) = (batch, self.batch_item(env, &finish)) {
            match batch.call(vec![item]).await {
                Some(Ok(())) => return Ok(()),
                Some(Err(e)) => tracing::warn!(error = %e,
                    "recording several jobs' outcomes together failed; recording this one alone"),
                None => {}
            }
        }
        self.finish(env, finish).await
    }

    /// What [`Store::record_succeeded`] records of this job's `finish`, when it can go
    /// with other jobs' (a parked job's success, outside a sync run); `None` otherwise.
    pub fn batch_item(&self, env: &Envelope, finish: &Finish) -> Option<Succeeded> {
        // Parked (no open transaction) and not counted by a sync run: its outcome is one
        // statement of its own, which the batch's statement does for many.
        if self.tx.is_some() || self.unreleased.is_some() || env.sync_run_id.is_some() {
            return None;
        }
        let Finish::Succeeded {
            attempt,
            mapping: MappingChange::Upsert { external_id },
            written_version,
            kept,
        } = finish
        else {
            return None;
        };
        let record_id = self.source.as_ref()?.record_id;
        Some(Succeeded {
            job_id: self.job_id,
            attempt_no: self.attempts + 1,
            started_at: attempt.started_at,
            attempt_ms: attempt.duration_ms,
            status_code: attempt.status_code,
            request: attempt.request.clone(),
            response: attempt.response.clone(),
            integration_id: env.integration_id,
            source: env.source_integration_id.unwrap_or(ids::NO_SOURCE),
            entity: env.entity.clone(),
            tenant: env.tenant.clone(),
            record_id,
            external_id: external_id.clone(),
            source_version: env.source_version,
            written_version: *written_version,
            received_at: env.received_at,
            kept: kept.clone(),
            job_ms: (Utc::now() - self.started)
                .num_milliseconds()
                .clamp(0, i32::MAX as i64) as i32,
            locks: self.locks.clone(),
        })
    }
}

impl Store {
    /// A batcher of jobs' successes ([`JobTx::finish_batched`]), up to `max` a statement,
    /// each statement gathering for [`crate::batch::GATHER_EVERY_CALL`], up to `calls`
    /// statements at once when they are full ([`crate::batch::Batcher::spawn_overlapping`]).
    /// Needs a Tokio runtime (it runs as a task).
    pub fn outcome_batcher(&self, max: usize, calls: usize) -> OutcomeBatcher {
        let store = self.clone();
        crate::batch::Batcher::spawn_overlapping(
            max,
            crate::batch::GATHER_EVERY_CALL,
            calls,
            move |items: Vec<Succeeded>| {
                let store = store.clone();
                async move {
                    store
                        .record_succeeded(&items)
                        .await
                        .map_err(|e| e.to_string())
                }
            },
        )
    }

    /// Record the successes of several parked jobs in one statement and commit: each job's
    /// attempt, its record's link at the target (and its source link's last change), its
    /// leases released, and its row; as [`JobTx::finish`] does for one. The worker runs it
    /// on connections that keep its plan ([`Store::planned_once`]).
    pub async fn record_succeeded(&self, items: &[Succeeded]) -> Result<()> {
        if items.is_empty() {
            return Ok(());
        }
        let col = |f: fn(&Succeeded) -> Uuid| items.iter().map(f).collect::<Vec<_>>();
        let (lock_keys, lock_jobs): (Vec<i64>, Vec<Uuid>) = items
            .iter()
            .flat_map(|i| i.locks.iter().map(move |k| (*k, i.job_id)))
            .unzip();
        sqlx::query(concat!(
            "WITH i AS (\
               SELECT * FROM unnest($1::uuid[], $2::int4[], $3::timestamptz[], $4::int4[], \
                 $5::int4[], $6::text[], $7::text[], $8::uuid[], $9::uuid[], $10::text[], \
                 $11::text[], $12::uuid[], $13::text[], $14::int8[], $15::int8[], \
                 $16::timestamptz[], $17::jsonb[], $18::int4[]) \
               AS t(job_id, attempt, started_at, attempt_ms, status_code, request, response, \
                 integration_id, source, entity, tenant, record_id, external_id, \
                 source_version, written_version, received_at, kept, job_ms)), \
             a AS (\
               INSERT INTO job_attempts (job_id, attempt, started_at, duration_ms, outcome, \
                 status_code, request, response) \
               SELECT job_id, attempt, started_at, attempt_ms, 'succeeded', status_code, \
                 request, response FROM i), \
             m AS (INSERT INTO record_links ",
            link_columns!(),
            " SELECT record_id, tenant, integration_id, entity, external_id, source_version, \
                 job_id, now(), written_version, received_at, kept FROM i ",
            link_upsert!(),
            "), \
             s AS (\
               UPDATE record_links r SET changed_at = i.received_at, changed_version = i.source_version \
               FROM i WHERE i.source_version IS NOT NULL AND r.record_id = i.record_id \
                 AND r.integration_id = i.source AND r.deleted_at IS NULL \
                 AND (r.changed_version IS NULL OR r.changed_version < i.source_version)), \
             l AS (\
               DELETE FROM job_leases USING unnest($19::int8[], $20::uuid[]) AS k(lock_key, job_id) \
               WHERE job_leases.lock_key = k.lock_key AND job_leases.job_id = k.job_id) \
             UPDATE jobs SET status = 'succeeded', attempts = i.attempt, \
               external_id = i.external_id, dead_reason = NULL, \
               record_id = i.record_id, finished_at = now(), duration_ms = i.job_ms, \
               updated_at = now() \
             FROM i WHERE jobs.id = i.job_id"
        ))
        .bind(col(|i| i.job_id))
        .bind(items.iter().map(|i| i.attempt_no).collect::<Vec<_>>())
        .bind(items.iter().map(|i| i.started_at).collect::<Vec<_>>())
        .bind(items.iter().map(|i| i.attempt_ms).collect::<Vec<_>>())
        .bind(items.iter().map(|i| i.status_code).collect::<Vec<_>>())
        .bind(items.iter().map(|i| i.request.clone()).collect::<Vec<_>>())
        .bind(items.iter().map(|i| i.response.clone()).collect::<Vec<_>>())
        .bind(col(|i| i.integration_id))
        .bind(col(|i| i.source))
        .bind(items.iter().map(|i| i.entity.clone()).collect::<Vec<_>>())
        .bind(items.iter().map(|i| i.tenant.clone()).collect::<Vec<_>>())
        .bind(col(|i| i.record_id))
        .bind(items.iter().map(|i| i.external_id.clone()).collect::<Vec<_>>())
        .bind(items.iter().map(|i| i.source_version).collect::<Vec<_>>())
        .bind(items.iter().map(|i| i.written_version).collect::<Vec<_>>())
        .bind(items.iter().map(|i| i.received_at).collect::<Vec<_>>())
        .bind(items.iter().map(|i| i.kept.clone()).collect::<Vec<_>>())
        .bind(items.iter().map(|i| i.job_ms).collect::<Vec<_>>())
        .bind(lock_keys)
        .bind(lock_jobs)
        .execute(self.pool())
        .await?;
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
/// left as it is. The rows go in id order, as the claim's (`claim_jobs`) do: a worker often
/// claims a job while ingest is still recording its queued row, and two statements that
/// write the same rows in different orders can deadlock (PostgreSQL breaks the cycle only
/// after `deadlock_timeout`, a second).
pub(crate) fn queued_rows<'a>(
    envelopes: impl IntoIterator<Item = &'a Envelope>,
) -> QueryBuilder<Postgres> {
    let mut envelopes: Vec<&Envelope> = envelopes.into_iter().collect();
    envelopes.sort_by_key(|e| e.id);
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

/// [`Store::record_queued`] on any connection (a [`crate::Held`] one: ingest's).
pub async fn record_queued<'e>(
    on: impl sqlx::PgExecutor<'e>,
    jobs: &[QueuedJob<'_>],
) -> Result<()> {
    if jobs.is_empty() {
        return Ok(());
    }
    queued_rows(jobs.iter().map(|j| j.envelope))
        .build()
        .execute(on)
        .await?;
    Ok(())
}

/// How long a read waits for a job's `queued` row that ingest is still writing: as long as
/// the insert can wait for a connection.
const UNRECORDED_WAIT: Duration = Duration::from_secs(5);

/// [`Store::existing_jobs`] on any connection (a [`crate::Held`] one: ingest's).
pub async fn existing_jobs<'e>(on: impl sqlx::PgExecutor<'e>, ids: &[Uuid]) -> Result<Vec<Uuid>> {
    Ok(sqlx::query_scalar("SELECT id FROM jobs WHERE id = ANY($1)")
        .bind(ids)
        .fetch_all(on)
        .await?)
}

impl Store {
    /// Record published jobs as `queued` so `GET /v1/jobs/{id}` finds them at once. A job a
    /// worker already claimed is left as it is.
    pub async fn record_queued(&self, jobs: &[QueuedJob<'_>]) -> Result<()> {
        record_queued(self.pool(), jobs).await
    }

    /// Which of these job ids already exist (a re-sent webhook).
    pub async fn existing_jobs(&self, ids: &[Uuid]) -> Result<Vec<Uuid>> {
        existing_jobs(self.pool(), ids).await
    }

    /// Claim a job for processing: lock its entity at the target, create or update its row,
    /// and read the entity's mapping. Returns [`Claim::Duplicate`] when the job has already
    /// had its effect.
    ///
    /// A lease on the record held by another job, or by this same job through another copy
    /// of its message (a sender's retry that ingest published twice), makes the claim
    /// [`StoreError::Busy`]. Only the same `copy` (the message's `sy-copy` header) takes
    /// its own lease over: one copy is never processed twice at once, so its lease is left
    /// from an attempt that crashed.
    ///
    /// The claim also takes this job's lease on its lock, for `lease`, in the same statement
    /// (see [`JobTx::park`]), and its commit does not wait for the disk: a job that ends
    /// without a provider call turns the wait back on with its outcome.
    ///
    /// An upsert about a record the hub has not heard of (no link at its source) makes the
    /// record and its origin link in the same statement, when its target is active and the
    /// claim goes on (it took its lease) ([`JobTx::created_record`]): one round trip and one commit fewer than
    /// [`JobTx::resolve_record`], which remains for the rest (a job of a sync run, a record
    /// another job created meanwhile). The new link's index entry then waits for the
    /// claim's commit, before the provider call, so another target's job for the same event
    /// waits that long at most.
    pub async fn claim(&self, env: &Envelope, copy: &str, lease: Duration) -> Result<Claim> {
        // One round trip: `claim_jobs` (migration 0020) takes the source record's lock at
        // the target, then writes and reads with a snapshot taken after the lock was
        // granted, and its transaction commits as it returns.
        let args = ClaimArgs::new(env, copy);
        let token = args.token;
        let row = self
            .claim_rows(vec![args], lease)
            .await?
            .remove(&token)
            .ok_or_else(|| {
                StoreError::Corrupt(format!("the claim of job {} returned no row", env.id))
            })?;
        self.claimed(row, env, copy).await
    }

    /// [`Store::claim`], with the claims of other jobs arriving at the same moment in one
    /// call, one statement and one commit, when `batch` is given. If the shared call fails,
    /// each of its jobs is claimed alone, where its own error is reported.
    pub async fn claim_batched(
        &self,
        env: &Envelope,
        copy: &str,
        lease: Duration,
        batch: Option<&ClaimBatcher>,
    ) -> Result<Claim> {
        if let Some(batch) = batch {
            let args = ClaimArgs::new(env, copy);
            let token = args.token;
            match batch.call(vec![args]).await {
                Some(Ok(rows)) => {
                    if let Some(row) = rows.get(&token) {
                        return self.claimed(row.clone(), env, copy).await;
                    }
                }
                Some(Err(e)) => tracing::warn!(error = %e,
                    "claiming several jobs together failed; claiming this one alone"),
                None => {}
            }
        }
        self.claim(env, copy, lease).await
    }

    /// A batcher of jobs' claims ([`Store::claim_batched`]), up to `max` a call, each
    /// gathering for [`crate::batch::GATHER_EVERY_CALL`], one call at a time unless calls
    /// are full: then up to `calls` at once ([`crate::batch::Batcher::spawn_overlapping`];
    /// the largest batches, since a call's fixed cost is most of a small batch's, and a
    /// backlog is not held to one call's pace). Each job is leased for `lease`. Needs a
    /// Tokio runtime (it runs as a task).
    pub fn claim_batcher(&self, max: usize, calls: usize, lease: Duration) -> ClaimBatcher {
        let store = self.clone();
        crate::batch::Batcher::spawn_overlapping(
            max,
            crate::batch::GATHER_EVERY_CALL,
            calls,
            move |items: Vec<ClaimArgs>| {
                let store = store.clone();
                async move {
                    store
                        .claim_rows(items, lease)
                        .await
                        .map(Arc::new)
                        .map_err(|e| e.to_string())
                }
            },
        )
    }

    /// Claim these jobs (each with the copy of its message) in one call and commit, as
    /// [`Store::claim`] claims one; a job about the same record at the same target as an
    /// earlier one in the list is claimed alone, after. What the worker's claims that
    /// arrive together go through ([`Store::claim_batched`]).
    pub async fn claim_together(
        &self,
        jobs: &[(&Envelope, &str)],
        lease: Duration,
    ) -> Result<Vec<Result<Claim>>> {
        let args: Vec<ClaimArgs> = jobs
            .iter()
            .map(|(env, copy)| ClaimArgs::new(env, copy))
            .collect();
        let tokens: Vec<u64> = args.iter().map(|a| a.token).collect();
        let rows = self.claim_rows(args, lease).await?;
        let mut out = Vec::with_capacity(jobs.len());
        for ((env, copy), token) in jobs.iter().zip(tokens) {
            out.push(match rows.get(&token) {
                Some(row) => self.claimed(row.clone(), env, copy).await,
                None => self.claim(env, copy, lease).await,
            });
        }
        Ok(out)
    }

    /// Claim these jobs in one call (`claim_jobs`, migration 0020). A job whose lock key is
    /// already in the call (two jobs about one record at one target) is left out: its
    /// caller finds no row and claims it alone, after.
    async fn claim_rows(
        &self,
        items: Vec<ClaimArgs>,
        lease: Duration,
    ) -> Result<HashMap<u64, ClaimRow>> {
        let mut seen = std::collections::HashSet::new();
        let items: Vec<ClaimArgs> = items.into_iter().filter(|i| seen.insert(i.lock)).collect();
        let col = |f: fn(&ClaimArgs) -> Uuid| items.iter().map(f).collect::<Vec<_>>();
        let text = |f: fn(&ClaimArgs) -> &str| items.iter().map(f).collect::<Vec<_>>();
        let rows = sqlx::query(
            "SELECT * FROM claim_jobs($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, \
             $13, $14, $15, $16, $17, $18, $19, $20)",
        )
        .bind(col(|i| i.id))
        .bind(text(|i| &i.key))
        .bind(text(|i| &i.tenant))
        .bind(col(|i| i.integration))
        .bind(
            items
                .iter()
                .map(|i| i.source_integration)
                .collect::<Vec<_>>(),
        )
        .bind(text(|i| &i.provider))
        .bind(text(|i| &i.entity))
        .bind(text(|i| &i.action))
        .bind(text(|i| &i.event))
        .bind(text(|i| &i.event_id))
        .bind(text(|i| &i.internal_id))
        .bind(items.iter().map(|i| i.source_version).collect::<Vec<_>>())
        .bind(items.iter().map(|i| i.received_at).collect::<Vec<_>>())
        .bind(items.iter().map(|i| i.sync_run).collect::<Vec<_>>())
        .bind(col(|i| i.source))
        .bind(text(|i| &i.copy))
        .bind(lease.as_millis().min(i32::MAX as u128) as f64)
        .bind(items.iter().map(|i| i.lock).collect::<Vec<_>>())
        .bind(col(|i| i.record))
        .bind(items.iter().map(|i| i.create).collect::<Vec<_>>())
        .fetch_all(self.pool())
        .await?;
        // A row names its job by its place in the call: two copies of one job's message may
        // both be waiting (only one of them is in the call), and the id would not tell them
        // apart.
        rows.iter()
            .map(|r| {
                let place = r.try_get::<i64, _>(0)?;
                let args = usize::try_from(place - 1)
                    .ok()
                    .and_then(|i| items.get(i))
                    .ok_or_else(|| {
                        StoreError::Corrupt(format!("a claim answered for place {place}"))
                    })?;
                Ok((args.token, ClaimRow::read(r, 1)?))
            })
            .collect()
    }

    /// What a claim's row means for the job.
    async fn claimed(&self, row: ClaimRow, env: &Envelope, copy: &str) -> Result<Claim> {
        if let Some(status) = row.status.as_deref() {
            let status: JobStatus =
                status
                    .parse()
                    .map_err(|e: switchyard_core::model::UnknownValue| {
                        StoreError::Corrupt(e.to_string())
                    })?;
            if status.is_settled() {
                return Ok(Claim::Duplicate { status });
            }
        }
        // Another job holds this record at the target across a provider call (the claim
        // wrote nothing).
        if let Some(until) = row.busy_until {
            return Err(StoreError::Busy { until });
        }
        let (Some(attempts), Some(started)) = (row.attempts, row.started_at) else {
            return Err(StoreError::Corrupt(format!(
                "the claim of job {} returned no job row",
                env.id
            )));
        };
        // The id is derived from the idempotency key, so the row's id is the envelope's.
        let job_id = env.id;
        let lock = lock_key(env);
        if row.run_status.as_deref() == Some("cancelled") {
            // Its run was cancelled while it waited (e.g. between retries): skip it, drop
            // the lease the claim took, and commit waiting for the disk.
            let mut tx = locked(self.pool(), lock).await?;
            sqlx::query(
                "WITH l AS (DELETE FROM job_leases WHERE lock_key = $2 AND job_id = $1) \
                 UPDATE jobs SET status = 'skipped', finished_at = now(), updated_at = now() \
                 WHERE id = $1",
            )
            .bind(job_id)
            .bind(lock)
            .execute(&mut *tx)
            .await?;
            crate::sync::count_for_run(&mut tx, job_id, JobStatus::Skipped, false).await?;
            tx.commit().await?;
            return Ok(Claim::Duplicate {
                status: JobStatus::Skipped,
            });
        }
        let target_status = row
            .target_status
            .map(|s| s.parse::<IntegrationStatus>())
            .transpose()
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let (mut source, mut target) = (row.source, row.target);
        let created_record = match row.created_record {
            Some(record_id) => {
                source = Some(SourceLink {
                    record_id,
                    changed_version: None,
                    changed_at: None,
                    written_version: None,
                    written_at: None,
                    deleted: false,
                });
                target = None;
                true
            }
            None => false,
        };
        Ok(Claim::Ready(Box::new(JobTx {
            tx: None,
            pool: self.pool().clone(),
            copy: copy.to_owned(),
            // This copy's own lease: an earlier attempt got as far as the provider call
            // and no further (a crash, the database lost before the outcome was recorded).
            interrupted: row.own,
            locks: vec![lock],
            leased: 1,
            unreleased: row.lease_until,
            job_id,
            attempts,
            started,
            target_status,
            source,
            target,
            created_record,
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
        let mut tx = self.begin_audited().await?;
        let id = sqlx::query_scalar(
            "INSERT INTO dlq_actions (action, actor, filter, dry_run, matched, moved, job_ids)              VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
        )
        .bind(action)
        .bind(actor)
        .bind(filter)
        .bind(dry_run)
        .bind(matched as i32)
        .bind(moved as i32)
        .bind(job_ids)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(id)
    }

    /// A job's row. A job whose `queued` row ingest (in this process) is still writing after
    /// its answer is waited for ([`crate::Unrecorded`]), so it is found as soon as it is
    /// answered for.
    pub async fn job(&self, id: Uuid) -> Result<JobRow> {
        // The set before the table: a job that leaves it in between was committed first.
        if self.unrecorded().contains(&id) {
            self.unrecorded().left(&id, UNRECORDED_WAIT).await;
        }
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
