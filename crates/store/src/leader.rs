//! Leadership by Postgres session advisory lock: whoever holds the lock leads; the lock goes
//! with its connection, so a leader that dies (process killed, connection lost) lets another
//! take over as soon as Postgres notices.
use sqlx::{Connection, PgConnection};

use crate::{Result, Store};

/// The lock key of the scheduler's leadership (any fixed number; "sy-sched").
pub const SCHEDULER_LOCK: i64 = 0x7379_2d73_6368_6564;

/// A held leadership: a dedicated connection holding the lock.
pub struct Leadership {
    conn: PgConnection,
    key: i64,
}

impl Store {
    /// Take the lock `key` if no one holds it. `None`: someone else leads.
    pub async fn try_lead(&self, key: i64) -> Result<Option<Leadership>> {
        let mut conn = self.pool().acquire().await?.detach();
        let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(key)
            .fetch_one(&mut conn)
            .await?;
        if got {
            Ok(Some(Leadership { conn, key }))
        } else {
            let _ = conn.close().await;
            Ok(None)
        }
    }
}

impl Leadership {
    /// Whether the lock is still ours (its connection is alive).
    pub async fn still_held(&mut self) -> bool {
        sqlx::query("SELECT 1")
            .execute(&mut self.conn)
            .await
            .is_ok()
    }

    /// Give the lock up now rather than when the connection closes.
    pub async fn release(mut self) {
        let _ = sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(self.key)
            .execute(&mut self.conn)
            .await;
        let _ = self.conn.close().await;
    }
}
