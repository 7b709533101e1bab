//! Channel routes and the messages they send, with fallback (migration 0018).
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::FromRow;
use uuid::Uuid;

use crate::{Result, Store, StoreError};

/// A route that sends an event as a message over channels, in order.
#[derive(Debug, Clone, FromRow, Serialize, utoipa::ToSchema)]
pub struct ChannelRoute {
    pub id: Uuid,
    pub tenant: String,
    pub source_integration_id: Uuid,
    pub entity: String,
    pub event: String,
    /// Which events it takes (`core::RouteFilter`).
    pub filter: Value,
    /// `[{integration_id, operation, input}]`, tried in this order.
    pub channels: Value,
    pub created_at: DateTime<Utc>,
}

/// One message: an event sent over a channel route.
#[derive(Debug, Clone, FromRow, Serialize, utoipa::ToSchema)]
pub struct Message {
    pub id: Uuid,
    pub tenant: String,
    pub route_id: Uuid,
    pub source_integration_id: Uuid,
    pub event_id: String,
    pub payload: Value,
    /// `sending`, `delivered` or `failed` (every channel failed).
    pub status: String,
    /// The channel being tried, by its place in the route's list.
    pub channel: i32,
    pub next_at: DateTime<Utc>,
    /// Each channel tried: `{channel, integration_id, operation, call_id, status, error}`.
    pub outcomes: Value,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

const ROUTE_COLUMNS: &str =
    "id, tenant, source_integration_id, entity, event, filter, channels, created_at";
const COLUMNS: &str = "id, tenant, route_id, source_integration_id, event_id, payload, status, \
    channel, next_at, outcomes, created_at, updated_at, finished_at";

impl Store {
    pub async fn add_channel_route(&self, r: &ChannelRoute) -> Result<ChannelRoute> {
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "INSERT INTO channel_routes (id, tenant, source_integration_id, entity, event, filter, \
               channels) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING {ROUTE_COLUMNS}"
        )))
        .bind(r.id)
        .bind(&r.tenant)
        .bind(r.source_integration_id)
        .bind(&r.entity)
        .bind(&r.event)
        .bind(&r.filter)
        .bind(&r.channels)
        .fetch_one(self.pool())
        .await?)
    }

    /// Channel routes, of one source or of one tenant (none: every one).
    pub async fn channel_routes(
        &self,
        source: Option<Uuid>,
        tenant: Option<&str>,
    ) -> Result<Vec<ChannelRoute>> {
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {ROUTE_COLUMNS} FROM channel_routes \
             WHERE ($1::uuid IS NULL OR source_integration_id = $1) \
               AND ($2::text IS NULL OR tenant = $2) ORDER BY created_at"
        )))
        .bind(source)
        .bind(tenant)
        .fetch_all(self.pool())
        .await?)
    }

    pub async fn channel_route(&self, id: Uuid) -> Result<ChannelRoute> {
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {ROUTE_COLUMNS} FROM channel_routes WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(self.pool())
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("channel route {id}")))
    }

    pub async fn remove_channel_route(&self, id: Uuid) -> Result<()> {
        sqlx::query("DELETE FROM channel_routes WHERE id = $1")
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// One message per route for an event (the same event again makes none): the ids of
    /// the routes' messages, and whether each is new.
    pub async fn create_messages(
        &self,
        routes: &[&ChannelRoute],
        event_id: &str,
        payload: &Value,
    ) -> Result<Vec<(Uuid, bool)>> {
        let mut out = Vec::with_capacity(routes.len());
        let mut tx = self.pool().begin().await?;
        for r in routes {
            let made: Option<Uuid> = sqlx::query_scalar(
                "INSERT INTO messages (id, tenant, route_id, source_integration_id, event_id, \
                   payload) VALUES ($1, $2, $3, $4, $5, $6) \
                 ON CONFLICT (route_id, event_id) DO NOTHING RETURNING id",
            )
            .bind(Uuid::now_v7())
            .bind(&r.tenant)
            .bind(r.id)
            .bind(r.source_integration_id)
            .bind(event_id)
            .bind(payload)
            .fetch_optional(&mut *tx)
            .await?;
            match made {
                Some(id) => out.push((id, true)),
                None => {
                    let id: Uuid = sqlx::query_scalar(
                        "SELECT id FROM messages WHERE route_id = $1 AND event_id = $2",
                    )
                    .bind(r.id)
                    .bind(event_id)
                    .fetch_one(&mut *tx)
                    .await?;
                    out.push((id, false));
                }
            }
        }
        tx.commit().await?;
        Ok(out)
    }

    /// Take up to `limit` messages due to be looked at, moving their next look on by
    /// `lease` (another scheduler leaves them alone meanwhile).
    pub async fn take_due_messages(
        &self,
        limit: i64,
        lease: std::time::Duration,
    ) -> Result<Vec<Message>> {
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "UPDATE messages SET next_at = now() + make_interval(secs => $2), updated_at = now() \
             WHERE id IN (SELECT id FROM messages WHERE status = 'sending' AND next_at <= now() \
               ORDER BY next_at LIMIT $1 FOR UPDATE SKIP LOCKED) \
             RETURNING {COLUMNS}"
        )))
        .bind(limit)
        .bind(lease.as_secs_f64())
        .fetch_all(self.pool())
        .await?)
    }

    /// Where a message stands after a look: its status, channel, outcomes and next look.
    pub async fn move_message(
        &self,
        id: Uuid,
        status: &str,
        channel: i32,
        outcomes: &Value,
        next_at: DateTime<Utc>,
    ) -> Result<()> {
        sqlx::query(
            "UPDATE messages SET status = $2, channel = $3, outcomes = $4, next_at = $5, \
               finished_at = CASE WHEN $2 <> 'sending' THEN now() END, updated_at = now() \
             WHERE id = $1",
        )
        .bind(id)
        .bind(status)
        .bind(channel)
        .bind(outcomes)
        .bind(next_at)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Look at a message at the next chance (its channel's call just settled).
    pub async fn nudge_message(&self, id: Uuid) -> Result<()> {
        sqlx::query("UPDATE messages SET next_at = now() WHERE id = $1 AND status = 'sending'")
            .bind(id)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    pub async fn message(&self, id: Uuid) -> Result<Message> {
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM messages WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(self.pool())
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("message {id}")))
    }

    /// Messages, newest first.
    pub async fn list_messages(
        &self,
        tenant: Option<&str>,
        route: Option<Uuid>,
        status: Option<&str>,
        limit: i64,
    ) -> Result<Vec<Message>> {
        Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM messages WHERE ($1::text IS NULL OR tenant = $1) \
               AND ($2::uuid IS NULL OR route_id = $2) AND ($3::text IS NULL OR status = $3) \
             ORDER BY created_at DESC LIMIT $4"
        )))
        .bind(tenant)
        .bind(route)
        .bind(status)
        .bind(limit.clamp(1, 1000))
        .fetch_all(self.pool())
        .await?)
    }
}
