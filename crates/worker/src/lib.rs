//! The worker: consumes per-provider queues and carries each job to its provider.
//!
//! For each delivery: parse the envelope (unparseable → dead letter `malformed`), claim the
//! job in Postgres under its entity's lock (already settled → ack as duplicate), skip an
//! event older than the mapping's last applied version (`stale`), call the provider, record
//! attempt, outcome and id mapping in the same transaction, then acknowledge. Retryable
//! failures are re-published through the delay levels; the rest are dead-lettered with a
//! reason.
//!
//! Workers also read sync runs' pages from the sync queue (see `sync`).
#![forbid(unsafe_code)]

mod connectors;
mod decide;
mod identity;
mod keeper;
mod metrics;
mod process;
mod sync;

pub use process::FaultPoint;

use std::sync::Arc;
use std::time::Duration;
use switchyard_broker::Broker;
use switchyard_resilience::{BreakerPolicy, Guard, RetryPolicy};
use switchyard_store::Store;
use switchyard_vault::Keyring;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

/// At most this many jobs' successes in one statement (group commit).
const OUTCOMES_PER_STATEMENT: usize = 64;
/// At most this many jobs' claims in one call. The calls go one at a time unless they are
/// full, which makes the largest batches: with four at once a call carried about four
/// claims, and the function's fixed cost per call (executor start-up of its statement, its
/// commit) was paid every four jobs; with one, PostgreSQL's CPU per job fell by two fifths
/// in `just bench`. A claim waits on no provider, only on the short transactions that hold
/// its record's lock, so one call at a time holds no tenant up behind another's.
const CLAIMS_PER_CALL: usize = 32;
/// Full claim calls, and full outcome statements, at once. With a backlog, one call at a
/// time bound the worker: in `just bench`'s processing phase the claim batcher was busy
/// 85–94 % of the time with full calls of 7–8 ms while a sixth of the machine's CPU was
/// idle (ARCHITECTURE.md, Performance). Calls that are not full still go one at a time.
const FULL_CALLS_AT_ONCE: usize = 2;

#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Providers whose queues this worker consumes.
    pub providers: Vec<String>,
    /// Unacknowledged deliveries per queue.
    pub prefetch: u16,
    /// Jobs processed at once, across queues.
    pub concurrency: usize,
    /// Calls at once to any one integration from this process (its own `concurrency`
    /// setting may ask for fewer). Further jobs for it are put back for a moment instead of
    /// waiting in a slot every tenant shares: a tenant whose provider hangs holds at most
    /// this many. A job holds its turn from its claim to its call's end; its outcome's
    /// commit waits on no provider, so it does not count. `0`: half of `concurrency`.
    pub max_per_integration: usize,
    /// How long a job waits, in arrival order, for its integration's turn with none of the
    /// integration's turns coming back, before it is put back; while turns keep coming back
    /// (the provider is busy, not hung) it waits on, up to eight times this in all. Waiting
    /// keeps jobs in order and the broker quiet while a provider is merely busy; the bound
    /// keeps a hung provider's jobs from holding every delivery the broker lets this worker
    /// have.
    pub turn_wait: Duration,
    /// How long a job may hold its record's lock across its provider calls before another
    /// job may take it (only a crashed worker's job holds one that long).
    pub lease: Duration,
    /// How long shutdown waits for in-flight jobs.
    pub shutdown_grace: Duration,
    /// The retry schedule an integration gets when its settings name none.
    pub default_retry: RetryPolicy,
    /// The circuit breaker an integration gets when its settings name none.
    pub default_breaker: BreakerPolicy,
    /// Breakers and rate limits, shared through Redis (or per process).
    pub guard: Arc<Guard>,
    /// How long an integration's settings are cached.
    pub integration_cache_ttl: Duration,
    /// The most pages one sync run reads from one feed; a provider whose pages never end
    /// (a broken total, a cursor that loops) fails the run there instead of paging for ever.
    pub sync_max_pages: u64,
    /// How often the worker looks for tables to analyse while they are small and changing
    /// (`Store::analyse_young_tables`; the first look is at start-up): a plan it keeps per
    /// connection, made while a table was empty, reads the whole table on every call until
    /// the table is analysed, and autovacuum looks only once a minute. A table is analysed
    /// only when it has about doubled, so looking often makes its analyses sooner, not more
    /// of them. `None`: leave it to autovacuum.
    pub analyse_young_tables_every: Option<Duration>,
    /// Test hook: simulate a crash at this point (see [`FaultPoint`]). Never set in
    /// production configuration.
    pub fault: Option<FaultPoint>,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            providers: switchyard_providers::target_providers(),
            prefetch: 256,
            concurrency: 128,
            max_per_integration: 0,
            turn_wait: Duration::from_millis(250),
            lease: Duration::from_secs(630),
            shutdown_grace: Duration::from_secs(30),
            default_retry: RetryPolicy::default(),
            default_breaker: BreakerPolicy::default(),
            guard: Arc::new(Guard::local("")),
            integration_cache_ttl: Duration::from_secs(5),
            sync_max_pages: 10_000,
            analyse_young_tables_every: Some(Duration::from_millis(250)),
            fault: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("worker configuration: {0}")]
    Config(String),
    #[error("the worker stopped at test fault point {0:?}")]
    Crashed(FaultPoint),
}

pub(crate) struct Shared {
    pub(crate) cfg: WorkerConfig,
    pub(crate) store: Store,
    /// For making records: their commit need not wait for the disk, since the job's own
    /// commit, which waits, flushes the WAL up to and past them (and a record lost with a
    /// crash before it is made again by the job's retry).
    pub(crate) relaxed: Store,
    pub(crate) broker: Broker,
    pub(crate) connectors: connectors::Cache,
    pub(crate) crashed: CancellationToken,
    pub(crate) stop: CancellationToken,
    pub(crate) metrics: metrics::Metrics,
    /// Successes of jobs that end together, recorded in one statement and commit; set when
    /// the worker runs (it is a task).
    pub(crate) outcomes: std::sync::OnceLock<switchyard_store::OutcomeBatcher>,
    /// Claims of jobs that start together, made in one call and commit; set when the
    /// worker runs.
    pub(crate) claims: std::sync::OnceLock<switchyard_store::ClaimBatcher>,
}

/// A worker, ready to run.
#[derive(Clone)]
pub struct Worker(Arc<Shared>);

impl Worker {
    pub fn new(
        cfg: WorkerConfig,
        store: Store,
        broker: Broker,
        keyring: Arc<Keyring>,
    ) -> Result<Worker, WorkerError> {
        if cfg.prefetch == 0 {
            return Err(WorkerError::Config("prefetch must be at least 1".into()));
        }
        if cfg.concurrency == 0 {
            return Err(WorkerError::Config("concurrency must be at least 1".into()));
        }
        cfg.default_retry.validate().map_err(WorkerError::Config)?;
        cfg.default_breaker
            .validate()
            .map_err(WorkerError::Config)?;
        for p in &cfg.providers {
            match switchyard_providers::info(p) {
                Some(info) if info.is_target => {}
                _ => {
                    return Err(WorkerError::Config(format!(
                        "`{p}` has no work queue; providers with one: {}",
                        switchyard_providers::target_providers().join(", ")
                    )));
                }
            }
        }
        let ttl = cfg.integration_cache_ttl;
        let per_integration = match cfg.max_per_integration {
            0 => (cfg.concurrency / 2).max(1),
            n => n.min(cfg.concurrency),
        };
        Ok(Worker(Arc::new(Shared {
            connectors: connectors::Cache::new(
                store.clone(),
                keyring,
                ttl,
                cfg.default_retry.clone(),
                cfg.default_breaker.clone(),
                per_integration,
            ),
            relaxed: store.relaxed(4),
            cfg,
            store,
            broker,
            crashed: CancellationToken::new(),
            stop: CancellationToken::new(),
            metrics: metrics::Metrics::new(),
            outcomes: std::sync::OnceLock::new(),
            claims: std::sync::OnceLock::new(),
        })))
    }

    /// This worker's metrics, for a `/metrics` endpoint.
    pub fn registry(&self) -> prometheus::Registry {
        self.0.metrics.registry.clone()
    }

    /// Consume until `stop` is cancelled, then stop taking deliveries, let in-flight jobs
    /// finish (up to the grace period) and return. The caller closes the broker after.
    pub async fn run(self, stop: CancellationToken) -> Result<(), WorkerError> {
        let shared = self.0;
        // The outcomes go one statement at a time (group commit), on connections that keep
        // the statement's plan (`Store::planned_once`).
        let outcome_store = shared.store.planned_once(2);
        let _ = shared
            .outcomes
            .set(outcome_store.outcome_batcher(OUTCOMES_PER_STATEMENT, FULL_CALLS_AT_ONCE));
        let _ = shared.claims.set(shared.store.claim_batcher(
            CLAIMS_PER_CALL,
            FULL_CALLS_AT_ONCE,
            shared.cfg.lease,
        ));
        let consume_stop = CancellationToken::new();
        let tracker = TaskTracker::new();
        let permits = Arc::new(Semaphore::new(shared.cfg.concurrency));
        let topology = shared.broker.topology().clone();
        for provider in &shared.cfg.providers {
            let mut rx = shared.broker.consume(
                topology.queue(provider),
                shared.cfg.prefetch,
                consume_stop.clone(),
            );
            let shared = shared.clone();
            let permits = permits.clone();
            let tracker2 = tracker.clone();
            tracker.spawn(async move {
                while let Some(delivery) = rx.recv().await {
                    let delivery = process::Job::read(delivery);
                    // The integration's turn first, so that a job waiting for one holds no
                    // slot; a job that must wait does so in its own task, queued in
                    // arrival order behind the integration's earlier jobs.
                    let turn = match process::turn(&shared, &delivery).await {
                        process::Turn::Wait(waiting) => {
                            let shared = shared.clone();
                            let permits = permits.clone();
                            tracker2.spawn(async move {
                                let turn = process::wait_turn(waiting, shared.cfg.turn_wait).await;
                                let Ok(permit) = permits.acquire_owned().await else {
                                    return;
                                };
                                // Without its turn, the job is put back for a moment.
                                process::handle(&shared, delivery, turn).await;
                                drop(permit);
                            });
                            continue;
                        }
                        process::Turn::Now(turn) => turn,
                    };
                    let Ok(permit) = permits.clone().acquire_owned().await else {
                        break;
                    };
                    let shared = shared.clone();
                    tracker2.spawn(async move {
                        process::handle(&shared, delivery, turn).await;
                        drop(permit);
                    });
                }
            });
        }
        for provider in &shared.cfg.providers {
            // Dead letters, into the database, where each tenant's are kept apart.
            let mut rx = shared.broker.consume(
                topology.dead_letter_queue(provider),
                16,
                consume_stop.clone(),
            );
            let (shared, provider) = (shared.clone(), provider.clone());
            tracker.spawn(async move {
                while let Some(d) = rx.recv().await {
                    keeper::keep(&shared, &provider, d).await;
                }
            });
        }
        {
            // Sync pages: few at once, each may hold a provider listing call.
            let mut rx = shared
                .broker
                .consume(topology.sync_queue(), 2, consume_stop.clone());
            let shared = shared.clone();
            let tracker2 = tracker.clone();
            tracker.spawn(async move {
                while let Some(delivery) = rx.recv().await {
                    let shared = shared.clone();
                    tracker2.spawn(async move { sync::handle(&shared, delivery).await });
                }
            });
        }
        if let Some(every) = shared.cfg.analyse_young_tables_every {
            let (store, stop) = (shared.store.clone(), consume_stop.clone());
            tracker.spawn(async move {
                // At once, then every `every`: a backlog waiting at start-up fills the
                // tables fastest in the first seconds.
                loop {
                    // An outage is reported by the jobs that meet it; this only waits.
                    match store.analyse_young_tables().await {
                        Ok(t) if !t.is_empty() => debug!(tables = ?t, "analysed young tables"),
                        Ok(_) => {}
                        Err(e) => debug!(error = %e, "could not analyse young tables"),
                    }
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = tokio::time::sleep(every) => {}
                    }
                }
            });
        }
        info!(providers = ?shared.cfg.providers, prefetch = shared.cfg.prefetch,
            concurrency = shared.cfg.concurrency, "worker started");
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = shared.crashed.cancelled() => {
                consume_stop.cancel();
                shared.stop.cancel();
                let point = shared.cfg.fault.clone().expect("only a fault point crashes the worker");
                warn!(?point, "worker stopping at a test fault point without settling its delivery");
                return Err(WorkerError::Crashed(point));
            }
        }
        info!("worker stopping: no new deliveries; finishing in-flight jobs");
        consume_stop.cancel();
        tracker.close();
        let grace = shared.cfg.shutdown_grace;
        tokio::select! {
            _ = tracker.wait() => info!("worker stopped; every in-flight job settled"),
            _ = tokio::time::sleep(grace) => {
                shared.stop.cancel();
                warn!(grace_secs = grace.as_secs(), "worker stopped with jobs still in flight; the broker will redeliver them");
            }
        }
        Ok(())
    }
}
