//! Calls of connectors' named operations (`operation_calls`, migration 0017), each also a
//! job (same id, action `operation`) whose attempts are its provider calls.
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::FromRow;
use uuid::Uuid;

use crate::{AttemptRecord, Result, Store, StoreError};

/// One call of an operation, as stored.
#[derive(Debug, Clone, FromRow, Serialize, utoipa::ToSchema)]
pub struct OperationCall {
    /// Also the id of its job (`GET /v1/jobs/{id}` shows its attempts).
    pub id: Uuid,
    pub tenant: String,
    pub integration_id: Uuid,
    pub operation: String,
    pub idempotency_key: Option<String>,
    #[serde(skip)]
    pub input_sha256: String,
    pub input: Value,
    /// `running`; `pending` (answered, waiting for its result: a callback or a query);
    /// `succeeded`; `failed`; `expired` (no result came, and asking gave none).
    pub status: String,
    /// Whether the provider was called (a call the breaker refused was not).
    pub called: bool,
    /// The provider's reference for what it started (M-Pesa's `CheckoutRequestID`).
    pub reference: Option<String>,
    /// The provider's answer to the call.
    pub answer: Option<Value>,
    pub answer_status: Option<i32>,
    pub error_class: Option<String>,
    pub error: Option<String>,
    /// The result's code and message, once it is known (`0`, "The service request is
    /// processed successfully.").
    pub result_code: Option<String>,
    pub result_message: Option<String>,
    /// What settled it: the callback's body or the query's answer.
    pub result: Option<Value>,
    /// `answer`, `callback` or `query`.
    pub settled_by: Option<String>,
    /// How many times the provider was asked for the result.
    pub queries: i32,
    /// When it will be asked next, while pending.
    pub query_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub settled_at: Option<DateTime<Utc>>,
    /// The provider's own transaction for it, when the provider drives one (Payme).
    pub provider_state: Option<Value>,
}

const COLUMNS: &str = "id, tenant, integration_id, operation, idempotency_key, input_sha256, \
    input, status, called, reference, answer, answer_status, error_class, error, result_code, \
    result_message, result, settled_by, queries, query_at, created_at, updated_at, settled_at, \
    provider_state";

/// A call about to be made.
#[derive(Debug, Clone)]
pub struct NewCall<'a> {
    pub id: Uuid,
    pub tenant: &'a str,
    pub integration_id: Uuid,
    pub provider: &'a str,
    pub operation: &'a str,
    pub idempotency_key: Option<&'a str>,
    pub input: &'a Value,
    pub input_sha256: &'a str,
}

/// What [`Store::begin_call`] found.
#[derive(Debug)]
pub enum Begun {
    /// A new call (or one whose key was used by a call that never reached the provider):
    /// make it.
    Make(OperationCall),
    /// The key's call, as it stands: answer with it.
    Existing(OperationCall),
}

/// How a call ends (or stands, while pending).
#[derive(Debug, Clone, Default)]
pub struct CallEnd {
    /// `pending`, `succeeded`, `failed`.
    pub status: &'static str,
    pub called: bool,
    pub reference: Option<String>,
    pub answer: Option<Value>,
    pub answer_status: Option<i32>,
    pub error_class: Option<String>,
    pub error: Option<String>,
    pub result_code: Option<String>,
    pub result_message: Option<String>,
    /// When to ask for the result (a pending call).
    pub query_at: Option<DateTime<Utc>>,
    /// The job's attempts (one per provider call).
    pub attempts: Vec<(AttemptRecord, &'static str)>,
}

/// What settles a pending call.
#[derive(Debug, Clone)]
pub struct Settlement<'a> {
    pub succeeded: bool,
    pub code: &'a str,
    pub message: Option<&'a str>,
    pub result: &'a Value,
    /// `callback` or `query`.
    pub by: &'static str,
}

/// Which calls to list.
#[derive(Debug, Clone, Default)]
pub struct CallFilter {
    pub integration_id: Option<Uuid>,
    pub tenant: Option<String>,
    pub status: Option<String>,
    pub reference: Option<String>,
    pub limit: i64,
}

impl Store {
    /// Start a call, or find the call its idempotency key already made. A new call's row
    /// and its job (`running`) are written together.
    pub async fn begin_call(&self, c: &NewCall<'_>) -> Result<Begun> {
        let mut tx = self.pool().begin().await?;
        let made: Option<OperationCall> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "INSERT INTO operation_calls (id, tenant, integration_id, operation, idempotency_key, \
               input_sha256, input, status) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, 'running') \
             ON CONFLICT (integration_id, operation, idempotency_key) \
               WHERE idempotency_key IS NOT NULL DO NOTHING \
             RETURNING {COLUMNS}"
        )))
        .bind(c.id)
        .bind(c.tenant)
        .bind(c.integration_id)
        .bind(c.operation)
        .bind(c.idempotency_key)
        .bind(c.input_sha256)
        .bind(c.input)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(call) = made {
            sqlx::query(
                "INSERT INTO jobs (id, idempotency_key, tenant, integration_id, provider, entity, \
                   action, event, event_id, internal_id, status, received_at, started_at) \
                 VALUES ($1, 'operation:' || $1::text, $2, $3, $4, 'operation', 'operation', $5, \
                   'operation:' || $1::text, $1::text, 'running', now(), now())",
            )
            .bind(c.id)
            .bind(c.tenant)
            .bind(c.integration_id)
            .bind(c.provider)
            .bind(c.operation)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            return Ok(Begun::Make(call));
        }
        // The key was used: that call stands, unless it never reached the provider, when
        // this request takes it over (with its own input).
        let retaken: Option<OperationCall> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "UPDATE operation_calls SET status = 'running', input = $4, input_sha256 = $5, \
               error_class = NULL, error = NULL, updated_at = now() \
             WHERE integration_id = $1 AND operation = $2 AND idempotency_key = $3 \
               AND status = 'failed' AND NOT called \
             RETURNING {COLUMNS}"
        )))
        .bind(c.integration_id)
        .bind(c.operation)
        .bind(c.idempotency_key)
        .bind(c.input)
        .bind(c.input_sha256)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(call) = retaken {
            sqlx::query("UPDATE jobs SET status = 'running', updated_at = now() WHERE id = $1")
                .bind(call.id)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            return Ok(Begun::Make(call));
        }
        let existing: OperationCall = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM operation_calls \
             WHERE integration_id = $1 AND operation = $2 AND idempotency_key = $3"
        )))
        .bind(c.integration_id)
        .bind(c.operation)
        .bind(c.idempotency_key)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| StoreError::Conflict("the idempotency key's call vanished".into()))?;
        tx.commit().await?;
        Ok(Begun::Existing(existing))
    }

    /// Record how a call ended (or that it is pending), its job and its attempts, in one
    /// transaction.
    pub async fn end_call(&self, id: Uuid, end: &CallEnd) -> Result<OperationCall> {
        let mut tx = self.pool().begin().await?;
        let call: OperationCall = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "UPDATE operation_calls SET status = $2, called = called OR $3, \
               reference = COALESCE($4, reference), answer = COALESCE($5, answer), \
               answer_status = COALESCE($6, answer_status), error_class = $7, error = $8, \
               result_code = $9, result_message = $10, query_at = $11, \
               settled_by = CASE WHEN $2 IN ('succeeded', 'failed') AND $3 AND $7 IS NULL \
                 THEN 'answer' END, \
               settled_at = CASE WHEN $2 <> 'pending' THEN now() END, updated_at = now() \
             WHERE id = $1 RETURNING {COLUMNS}"
        )))
        .bind(id)
        .bind(end.status)
        .bind(end.called)
        .bind(&end.reference)
        .bind(&end.answer)
        .bind(end.answer_status)
        .bind(&end.error_class)
        .bind(&end.error)
        .bind(&end.result_code)
        .bind(&end.result_message)
        .bind(end.query_at)
        .fetch_one(&mut *tx)
        .await?;
        let first: i32 = sqlx::query_scalar(
            "SELECT COALESCE(max(attempt), 0) FROM job_attempts WHERE job_id = $1",
        )
        .bind(id)
        .fetch_one(&mut *tx)
        .await?;
        for (n, (a, outcome)) in end.attempts.iter().enumerate() {
            sqlx::query(
                "INSERT INTO job_attempts (job_id, attempt, started_at, duration_ms, outcome, \
                   status_code, error_class, error, request, response) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
            )
            .bind(id)
            .bind(first + n as i32 + 1)
            .bind(a.started_at)
            .bind(a.duration_ms)
            .bind(outcome)
            .bind(a.status_code)
            .bind(a.error_class.map(|c| c.as_str()))
            .bind(&a.error)
            .bind(&a.request)
            .bind(&a.response)
            .execute(&mut *tx)
            .await?;
        }
        // The job is the provider call: it succeeded when the provider answered (whatever
        // the operation's result), and is dead when it did not.
        let answered = end.error_class.is_none();
        let dead_reason = end
            .error_class
            .as_deref()
            .and_then(|c| c.parse::<switchyard_core::ErrorClass>().ok())
            .map(|c| switchyard_core::DeadReason::for_class(c).as_str());
        sqlx::query(
            "UPDATE jobs SET status = $2, attempts = attempts + $3, dead_reason = $4, \
               last_error_class = COALESCE($5, last_error_class), \
               last_error = COALESCE($6, last_error), external_id = COALESCE($7, external_id), \
               finished_at = now(), \
               duration_ms = (extract(epoch FROM now() - started_at) * 1000)::int, \
               updated_at = now() WHERE id = $1",
        )
        .bind(id)
        .bind(if answered { "succeeded" } else { "dead" })
        .bind(end.attempts.len() as i32)
        .bind(dead_reason)
        .bind(&end.error_class)
        .bind(&end.error)
        .bind(&end.reference)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(call)
    }

    /// The pending call of `integration` with this provider reference, if any; a settled one
    /// too (`settled: true`), so a callback repeated after it is recognised.
    pub async fn call_by_reference(
        &self,
        integration: Uuid,
        reference: &str,
    ) -> Result<Option<OperationCall>> {
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM operation_calls WHERE integration_id = $1 AND reference = $2"
        )))
        .bind(integration)
        .bind(reference)
        .fetch_optional(self.pool())
        .await?)
    }

    /// Settle a pending call. `None` when it is no longer pending (already settled).
    pub async fn settle_call(&self, id: Uuid, s: &Settlement<'_>) -> Result<Option<OperationCall>> {
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "UPDATE operation_calls SET status = $2, result_code = $3, result_message = $4, \
               result = $5, settled_by = $6, settled_at = now(), query_at = NULL, \
               updated_at = now() \
             WHERE id = $1 AND status = 'pending' RETURNING {COLUMNS}"
        )))
        .bind(id)
        .bind(if s.succeeded { "succeeded" } else { "failed" })
        .bind(s.code)
        .bind(s.message)
        .bind(s.result)
        .bind(s.by)
        .fetch_optional(self.pool())
        .await?)
    }

    /// Take up to `limit` pending calls whose time to be asked has come, moving their next
    /// time on by `lease` (so that another scheduler does not ask at once too) and counting
    /// the query.
    pub async fn take_due_calls(
        &self,
        limit: i64,
        lease: std::time::Duration,
    ) -> Result<Vec<OperationCall>> {
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "UPDATE operation_calls SET query_at = now() + make_interval(secs => $2), \
               queries = queries + 1, updated_at = now() \
             WHERE id IN (SELECT id FROM operation_calls \
               WHERE status = 'pending' AND query_at <= now() \
               ORDER BY query_at LIMIT $1 FOR UPDATE SKIP LOCKED) \
             RETURNING {COLUMNS}"
        )))
        .bind(limit)
        .bind(lease.as_secs_f64())
        .fetch_all(self.pool())
        .await?)
    }

    /// A pending call's next query, after one that did not settle it; or, with `expire`, give
    /// it up (`expired`) with why.
    pub async fn defer_call(
        &self,
        id: Uuid,
        at: DateTime<Utc>,
        expire: Option<&str>,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE operation_calls SET \
               status = CASE WHEN $3::text IS NULL THEN status ELSE 'expired' END, \
               query_at = CASE WHEN $3::text IS NULL THEN $2 END, \
               error = COALESCE($3, error), \
               settled_at = CASE WHEN $3::text IS NULL THEN NULL ELSE now() END, \
               updated_at = now() \
             WHERE id = $1 AND status = 'pending'",
        )
        .bind(id)
        .bind(at)
        .bind(expire)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Ask for a pending call's result at the next chance (its callback said only that
    /// something changed). False when it is not pending.
    pub async fn call_due_now(&self, id: Uuid) -> Result<bool> {
        Ok(sqlx::query(
            "UPDATE operation_calls SET query_at = now(), updated_at = now() \
             WHERE id = $1 AND status = 'pending'",
        )
        .bind(id)
        .execute(self.pool())
        .await?
        .rows_affected()
            == 1)
    }

    /// The call whose provider transaction is `tx` (Payme's transaction id).
    pub async fn call_by_provider_tx(
        &self,
        integration: Uuid,
        tx: &str,
    ) -> Result<Option<OperationCall>> {
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM operation_calls \
             WHERE integration_id = $1 AND provider_state->>'id' = $2"
        )))
        .bind(integration)
        .bind(tx)
        .fetch_optional(self.pool())
        .await?)
    }

    /// Record the provider's transaction for a call, if the call has none or has this one
    /// (`tx`). False: another transaction holds it.
    pub async fn set_provider_state(&self, id: Uuid, tx: &str, state: &Value) -> Result<bool> {
        Ok(sqlx::query(
            "UPDATE operation_calls SET provider_state = $3, updated_at = now() \
             WHERE id = $1 AND (provider_state IS NULL OR provider_state->>'id' = $2)",
        )
        .bind(id)
        .bind(tx)
        .bind(state)
        .execute(self.pool())
        .await?
        .rows_affected()
            == 1)
    }

    /// The provider transactions of an integration created between two times (Unix ms).
    pub async fn provider_transactions(
        &self,
        integration: Uuid,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<OperationCall>> {
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM operation_calls WHERE integration_id = $1 \
               AND provider_state IS NOT NULL \
               AND (provider_state->>'time')::bigint BETWEEN $2 AND $3 \
             ORDER BY (provider_state->>'time')::bigint LIMIT 1000"
        )))
        .bind(integration)
        .bind(from_ms)
        .bind(to_ms)
        .fetch_all(self.pool())
        .await?)
    }

    pub async fn call(&self, id: Uuid) -> Result<OperationCall> {
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM operation_calls WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(self.pool())
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("operation call {id}")))
    }

    /// Calls, newest first.
    pub async fn list_calls(&self, f: &CallFilter) -> Result<Vec<OperationCall>> {
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM operation_calls \
             WHERE ($1::uuid IS NULL OR integration_id = $1) AND ($2::text IS NULL OR tenant = $2) \
               AND ($3::text IS NULL OR status = $3) AND ($4::text IS NULL OR reference = $4) \
             ORDER BY created_at DESC LIMIT $5"
        )))
        .bind(f.integration_id)
        .bind(&f.tenant)
        .bind(&f.status)
        .bind(&f.reference)
        .bind(if f.limit > 0 { f.limit.min(1000) } else { 100 })
        .fetch_all(self.pool())
        .await?)
    }
}
