//! Notifications for operators: made from integration events and dead-letter counts,
//! delivered (and retried) by the leading scheduler, read back by the API.
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::FromRow;
use uuid::Uuid;

use crate::{Result, Store};

#[derive(Debug, Clone, FromRow, Serialize, utoipa::ToSchema)]
pub struct Notification {
    pub id: Uuid,
    /// `integration.error`, `integration.reauthorization_required` or
    /// `dead_letters.threshold`.
    pub kind: String,
    pub tenant: Option<String>,
    pub integration_id: Option<Uuid>,
    pub message: String,
    pub created_at: DateTime<Utc>,
    /// When the configured URL took it; none while it is still being tried.
    pub sent_at: Option<DateTime<Utc>>,
    pub attempts: i32,
    pub last_error: Option<String>,
}

const COLUMNS: &str = "id, kind, tenant, integration_id, message, created_at, sent_at, attempts, \
                       last_error";

impl Store {
    /// Make the notifications that are due: one per integration event of the last day that
    /// an operator must act on, and one per tenant whose dead letters reached
    /// `dead_letter_threshold` (again at most hourly). Returns how many were made.
    pub async fn collect_notifications(&self, dead_letter_threshold: i64) -> Result<u64> {
        let events = sqlx::query(
            "INSERT INTO notifications (id, kind, tenant, integration_id, event_id, message) \
             SELECT gen_random_uuid(), \
                    CASE e.kind WHEN 'reauthorization_required' THEN 'integration.reauthorization_required' \
                                ELSE 'integration.error' END, \
                    i.tenant, e.integration_id, e.id, \
                    i.tenant || '/' || i.name || ': ' || e.message \
             FROM integration_events e JOIN integrations i ON i.id = e.integration_id \
             WHERE e.kind IN ('auto_disabled', 'test_failed', 'reauthorization_required') \
               AND e.created_at > now() - interval '1 day' \
             ON CONFLICT (event_id) DO NOTHING",
        )
        .execute(self.pool())
        .await?
        .rows_affected();
        let piles = sqlx::query(
            "INSERT INTO notifications (id, kind, tenant, message) \
             SELECT gen_random_uuid(), 'dead_letters.threshold', d.tenant, \
                    coalesce(d.tenant, 'no tenant') || ': ' || d.n || ' dead letters are waiting \
                    (the threshold is ' || $1 || '); look at them with `switchyard dlq list`' \
             FROM (SELECT tenant, count(*) AS n FROM dead_letters GROUP BY tenant) d \
             WHERE d.n >= $1 AND NOT EXISTS ( \
               SELECT 1 FROM notifications n WHERE n.kind = 'dead_letters.threshold' \
                 AND n.tenant IS NOT DISTINCT FROM d.tenant \
                 AND n.created_at > now() - interval '1 hour')",
        )
        .bind(dead_letter_threshold)
        .execute(self.pool())
        .await?
        .rows_affected();
        Ok(events + piles)
    }

    /// Notifications to deliver now (oldest first).
    pub async fn due_notifications(&self, limit: i64) -> Result<Vec<Notification>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM notifications \
             WHERE sent_at IS NULL AND next_attempt_at <= now() \
             ORDER BY created_at LIMIT $1"
        );
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(limit)
            .fetch_all(self.pool())
            .await?)
    }

    pub async fn notification_sent(&self, id: Uuid) -> Result<()> {
        sqlx::query(
            "UPDATE notifications SET sent_at = now(), attempts = attempts + 1, last_error = NULL \
             WHERE id = $1",
        )
        .bind(id)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// It was not taken: try again after `retry_in`.
    pub async fn notification_failed(
        &self,
        id: Uuid,
        error: &str,
        retry_in: chrono::Duration,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE notifications SET attempts = attempts + 1, last_error = $2, \
               next_attempt_at = now() + $3 WHERE id = $1",
        )
        .bind(id)
        .bind(error)
        .bind(retry_in)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Newest first; a tenant's only, when `tenant` is given.
    pub async fn notifications(
        &self,
        tenant: Option<&str>,
        limit: i64,
    ) -> Result<Vec<Notification>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM notifications WHERE ($1::text IS NULL OR tenant = $1) \
             ORDER BY created_at DESC LIMIT $2"
        );
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql))
            .bind(tenant)
            .bind(limit.clamp(1, 500))
            .fetch_all(self.pool())
            .await?)
    }
}
