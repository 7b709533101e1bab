//! One connection kept between calls, for a caller that runs one statement at a time.
use sqlx::PgConnection;
use sqlx::pool::PoolConnection;
use tokio::sync::Mutex;

use crate::{Result, Store};

/// One of a pool's connections, kept between calls. A pool checks a connection with a round
/// trip when it hands it out and with another when it is given back; a caller that runs one
/// statement at a time on it (a [`crate::batch::Batcher`]'s calls: ingest's duplicate check
/// and its queued rows) paid three round trips per statement. A call that fails gives the
/// connection back (the pool closes it if it is broken), and the next call takes another:
/// after the database restarts, one call fails.
#[derive(Debug)]
pub struct Held {
    store: Store,
    conn: Mutex<Option<PoolConnection<sqlx::Postgres>>>,
}

impl Held {
    /// Run `f` on the kept connection, taking one from the pool first if there is none.
    pub async fn on<T>(&self, f: impl AsyncFnOnce(&mut PgConnection) -> Result<T>) -> Result<T> {
        let mut slot = self.conn.lock().await;
        let conn = match &mut *slot {
            Some(c) => c,
            None => slot.insert(self.store.pool().acquire().await?),
        };
        let out = f(conn).await;
        if out.is_err() {
            *slot = None;
        }
        out
    }
}

impl Store {
    /// A connection of this store's pool, kept between calls ([`Held`]).
    pub fn held(&self) -> Held {
        Held {
            store: self.clone(),
            conn: Mutex::new(None),
        }
    }
}
