//! Statistics for the worker's tables while they are young.
//!
//! A connection keeps the plan it made for the claim function and the shared outcome
//! statement on their first calls (they are planned once: planning them per call cost more
//! than running them). A plan made while a table was empty builds a hash table of the
//! whole table on every call, and stays until the table is next analysed, which drops every
//! connection's plans on it. Autovacuum analyses a table once 50 rows plus a tenth of it
//! have changed, but looks only once a minute (`autovacuum_naptime`): a new deployment
//! that starts with a backlog spent that minute reading its whole links table per claim.
//! The worker analyses its growing tables while they are small, each time one has doubled.
//! Once analysed with some rows, a table's size in a new plan follows its size on disk, so
//! a plan made at half the size is not far off; analysing at every tenth of growth, as
//! autovacuum does, dropped every connection's plans more often than it helped.
//! `job_leases` is left out: it stays small and changes with every job, so it would be
//! analysed, and every claim planned again, on every round.
//!
//! These analyses read a tenth of the rows a default one reads ([`YOUNG_STATISTICS_TARGET`]):
//! what they are for is the table's size, which a small sample measures as well as a large
//! one. At the default target, analysing a `jobs` table of 20,000 rows (thirty columns)
//! took 100–130 ms, and in `just bench`'s processing phase on an empty database the
//! worker's analyses were about a sixth of PostgreSQL's time (ARCHITECTURE.md,
//! Performance). Autovacuum's own analyses, at the default target, come after.

use crate::{Result, Store};

/// The growing tables the worker's planned-once statements read.
const WATCHED: [&str; 4] = ["jobs", "job_attempts", "records", "record_links"];

/// Tables whose statistics count this many rows or more are left to autovacuum: by then a
/// plan's shape no longer changes as the table grows, and analysing costs more.
const YOUNG_BELOW_ROWS: f32 = 100_000.0;

/// The statistics target of the worker's analyses (`default_statistics_target`, whose
/// default is 100): 3,000 sampled rows. A column given its own target keeps it.
const YOUNG_STATISTICS_TARGET: u32 = 10;

/// SQLSTATE `lock_not_available`: a `NOWAIT` lock another session holds.
const LOCK_NOT_AVAILABLE: &str = "55P03";

impl Store {
    /// Analyse each of the worker's growing tables that its statistics call small (fewer
    /// than 100,000 rows, or never analysed) and that has changed by more than 50 rows plus
    /// its size since (about doubled). Returns the tables analysed. A table another session
    /// is analysing or vacuuming is skipped quietly, not waited for, and so is one this database
    /// user may not analyse (it does not own it): PostgreSQL would only warn, in its log,
    /// every time.
    pub async fn analyse_young_tables(&self) -> Result<Vec<&'static str>> {
        let due: Vec<String> = sqlx::query_scalar(
            "SELECT s.relname::text FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid \
             WHERE s.schemaname = current_schema() AND s.relname = ANY($1) \
               AND c.reltuples < $2 \
               AND s.n_mod_since_analyze > 50 + greatest(c.reltuples, 0) \
               AND pg_has_role(c.relowner, 'USAGE')",
        )
        .bind(WATCHED)
        .bind(YOUNG_BELOW_ROWS)
        .fetch_all(self.pool())
        .await?;
        let mut analysed = Vec::new();
        for table in WATCHED.into_iter().filter(|t| due.iter().any(|d| d == t)) {
            // The lock an analyse takes, tried first: a table another session is analysing
            // or vacuuming (another worker of the fleet, autovacuum) is left for the next
            // round. `ANALYZE (SKIP_LOCKED)` would skip it too, but with a warning that
            // reaches the worker's log.
            let mut tx = self.pool().begin().await?;
            let locked = sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "LOCK TABLE {table} IN SHARE UPDATE EXCLUSIVE MODE NOWAIT"
            )))
            .execute(&mut *tx)
            .await;
            match locked {
                Ok(_) => {}
                Err(sqlx::Error::Database(e))
                    if e.code().as_deref() == Some(LOCK_NOT_AVAILABLE) =>
                {
                    continue;
                }
                Err(e) => return Err(e.into()),
            }
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "SET LOCAL default_statistics_target = {YOUNG_STATISTICS_TARGET}; ANALYZE {table}"
            )))
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            analysed.push(table);
        }
        Ok(analysed)
    }
}
