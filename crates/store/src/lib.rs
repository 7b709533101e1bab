//! Postgres: integrations, routes, jobs and their attempts, id mappings. The only crate that
//! speaks SQL. Migrations live in the workspace's `migrations/` folder and are embedded here.
#![forbid(unsafe_code)]

mod api_keys;
mod audit;
pub mod batch;
mod calls;
mod dead_letters;
mod held;
mod identity;
mod integrations;
mod jobs;
mod leader;
mod manage;
mod mappings;
mod messages;
mod notifications;
mod oauth;
mod operations;
mod sync;
mod unrecorded;
mod upkeep;

pub use api_keys::ApiKey;
pub use audit::{AuditEntry, AuditFilter};
pub use calls::{Begun, CallEnd, CallFilter, NewCall, OperationCall, Settlement};
pub use dead_letters::{DeadLetterFilter, DeadLetterRow, TakenDeadLetters};
pub use held::Held;
pub use identity::{Conflict, HeldJob, LinkView, NewConflict, RecordView};
pub use integrations::{
    Integration, NewIntegration, NewRoute, RouteTarget, RouteTargetView, RouteView,
    SealedCredentials, SecretKind,
};
pub use jobs::{
    AttemptRecord, Claim, ClaimBatcher, Finish, JobAttempt, JobFilter, JobRow, JobTx,
    MappingChange, OutcomeBatcher, QueuedJob, SourceLink, Succeeded, TargetLink, existing_jobs,
    record_queued,
};
pub use leader::{Leadership, SCHEDULER_LOCK};
pub use manage::{IntegrationFilter, IntegrationPatch, JobPage, JobQuery, Stats};
pub use mappings::Mapping;
pub use messages::{ChannelRoute, Message};
pub use notifications::Notification;
pub use oauth::{NewOAuthState, TakenOAuthState, TokenLock};
pub use operations::{Depths, Operation, STALLED_AFTER};
pub use sync::{Advance, Feed, IntegrationEvent, NewRun, SyncRun};
pub use unrecorded::Unrecorded;

tokio::task_local! {
    /// Who makes the changes in this task — an operator's request (`api:admin`,
    /// `api:tenant:acme`) or command (`cli:root`) — for the audit log. Set it with
    /// `ACTOR.scope(who, future)`; changes made outside one are the system's.
    pub static ACTOR: String;
}

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{PgPool, migrate::Migrator};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

static MIGRATOR: Migrator = sqlx::migrate!("../../migrations");

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{0} not found")]
    NotFound(String),
    #[error("conflict: {0}")]
    Conflict(String),
    /// A provider's external id is already mapped to another of our entities.
    #[error("{0}")]
    MappingConflict(String),
    #[error(
        "the database is not migrated (missing migrations: {missing}); run `switchyard migrate` first"
    )]
    NotMigrated { missing: String },
    #[error("the database URL is invalid: {0}")]
    BadUrl(String),
    #[error("the database is unreachable: {0}")]
    Unavailable(#[source] sqlx::Error),
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("a stored value is invalid: {0}")]
    Corrupt(String),
    /// The caller's input cannot be used (e.g. a cursor that is not ours).
    #[error("{0}")]
    BadInput(String),
    /// Another job holds the record across a provider call, until `until` at the latest.
    #[error("another job is writing this record (lease until {until})")]
    Busy {
        until: chrono::DateTime<chrono::Utc>,
    },
}

impl StoreError {
    /// Whether the database refused the data itself (SQLSTATE class 22: a NUL in text, a
    /// number out of range): trying again cannot help.
    pub fn is_bad_data(&self) -> bool {
        self.bad_data_code().is_some()
    }

    /// The SQLSTATE of a value the database refused (class 22, "data exception"): `22021`
    /// for text holding a NUL character, `22003` for a number out of range…
    pub fn bad_data_code(&self) -> Option<String> {
        match self {
            StoreError::Database(sqlx::Error::Database(db)) => db
                .code()
                .filter(|c| c.starts_with("22"))
                .map(|c| c.into_owned()),
            _ => None,
        }
    }

    /// Whether the database could not be reached at all (as opposed to refusing a query).
    pub fn is_unavailable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_))
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::Io(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Tls(_)
            | sqlx::Error::WorkerCrashed => StoreError::Unavailable(e),
            // The server is shutting down or restarting (57P01–57P03 "operator
            // intervention"), or the connection failed (class 08): an outage, not a refusal.
            sqlx::Error::Database(db)
                if db
                    .code()
                    .is_some_and(|c| c.starts_with("57P") || c.starts_with("08")) =>
            {
                StoreError::Unavailable(e)
            }
            sqlx::Error::Database(db) if db.is_unique_violation() => {
                StoreError::Conflict(db.message().to_owned())
            }
            sqlx::Error::Database(db) if db.is_foreign_key_violation() => {
                StoreError::Conflict(db.message().to_owned())
            }
            _ => StoreError::Database(e),
        }
    }
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A handle to the database; cheap to clone.
#[derive(Clone, Debug)]
pub struct Store {
    pool: PgPool,
    /// Jobs whose `queued` rows ingest is writing after its answer, shared by every clone
    /// and by the stores made beside this one.
    unrecorded: Arc<Unrecorded>,
}

impl Store {
    /// Connect lazily: the pool opens connections when first used, so a service can start
    /// (and report itself not ready) while the database is down.
    pub fn connect_lazy(url: &str, max_connections: u32) -> Result<Store> {
        let opts = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::BadUrl(e.to_string()))?
            .application_name("switchyard");
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .min_connections(0)
            .acquire_timeout(Duration::from_secs(5))
            .connect_lazy_with(opts);
        Ok(Store {
            pool,
            unrecorded: Arc::default(),
        })
    }

    /// A small second pool on the same database whose commits do not wait for the WAL to
    /// reach disk (`synchronous_commit = off`), for writes that are best effort by design
    /// (ingest's `queued` rows: the broker holds the job durably, and a worker recreates a
    /// row lost in a crash). Visibility is unchanged; only a crash can lose the last few
    /// hundred milliseconds of them.
    pub fn relaxed(&self, max_connections: u32) -> Store {
        self.beside(max_connections, &[("synchronous_commit", "off")])
    }

    /// A small second pool on the same database whose statements are planned anew on every
    /// call (`plan_cache_mode = force_custom_plan`), for a cheap statement whose best plan
    /// changes as its table grows. A connection otherwise keeps the plan it made on a
    /// statement's first calls: made while the table was empty (a new deployment, or
    /// statistics taken when it was), it read the whole table on every later call until the
    /// table was analysed again. A plan made per call sees the table's current size, even
    /// with statistics taken when it was empty. Ingest's duplicate check runs here.
    pub fn planned_per_call(&self, max_connections: u32) -> Store {
        self.beside(max_connections, &[("plan_cache_mode", "force_custom_plan")])
    }

    /// A small second pool on the same database whose statements keep one plan per
    /// connection (`plan_cache_mode = force_generic_plan`), for a statement that takes
    /// arrays: a plan made for the arrays' sizes in each call is cheaper to run than the
    /// generic one, so PostgreSQL never settled on the generic plan and planned the
    /// statement again on every call. The worker's shared outcome statement runs here
    /// ([`Store::record_succeeded`]): planning it was a sixteenth of PostgreSQL's CPU per
    /// job. Like every plan kept across calls, one made while a table was empty stays until
    /// the table is next analysed.
    pub fn planned_once(&self, max_connections: u32) -> Store {
        self.beside(
            max_connections,
            &[("plan_cache_mode", "force_generic_plan")],
        )
    }

    fn beside(&self, max_connections: u32, settings: &[(&str, &str)]) -> Store {
        let opts = self
            .pool
            .connect_options()
            .as_ref()
            .clone()
            .options(settings.iter().copied());
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .min_connections(0)
            .acquire_timeout(Duration::from_secs(5))
            .connect_lazy_with(opts);
        Store {
            pool,
            unrecorded: self.unrecorded.clone(),
        }
    }

    /// Connect and check that the database is reachable.
    pub async fn connect(url: &str, max_connections: u32) -> Result<Store> {
        let store = Store::connect_lazy(url, max_connections)?;
        store.ping().await?;
        Ok(store)
    }

    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    /// Apply every pending migration.
    pub async fn migrate(&self) -> Result<()> {
        MIGRATOR.run(&self.pool).await?;
        Ok(())
    }

    /// Fail with [`StoreError::NotMigrated`] unless every migration this build knows has
    /// been applied.
    pub async fn ensure_migrated(&self) -> Result<()> {
        let applied: Vec<i64> = match sqlx::query_scalar(
            "SELECT version FROM _sqlx_migrations WHERE success ORDER BY version",
        )
        .fetch_all(&self.pool)
        .await
        {
            Ok(v) => v,
            Err(sqlx::Error::Database(db)) if db.code().as_deref() == Some("42P01") => Vec::new(),
            Err(e) => return Err(e.into()),
        };
        let missing: Vec<String> = MIGRATOR
            .iter()
            .filter(|m| !m.migration_type.is_down_migration() && !applied.contains(&m.version))
            .map(|m| format!("{} {}", m.version, m.description))
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(StoreError::NotMigrated {
                missing: missing.join(", "),
            })
        }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Jobs whose `queued` rows ingest is writing after its answer ([`Unrecorded`]).
    pub fn unrecorded(&self) -> &Unrecorded {
        &self.unrecorded
    }

    /// A transaction whose changes the audit log (migration 0013) attributes to [`ACTOR`],
    /// or to `system` outside an operator's request or command.
    pub(crate) async fn begin_audited(&self) -> Result<sqlx::Transaction<'static, sqlx::Postgres>> {
        let mut tx = self.pool.begin().await?;
        if let Ok(actor) = ACTOR.try_with(Clone::clone) {
            sqlx::query("SELECT set_config('switchyard.actor', $1, true)")
                .bind(actor)
                .execute(&mut *tx)
                .await?;
        }
        Ok(tx)
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}
