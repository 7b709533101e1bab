//! The scheduler: enqueues each integration's scheduled syncs, with exactly one leader
//! across any number of scheduler processes.
//!
//! Leadership is a Postgres session advisory lock ([`switchyard_store::Store::try_lead`]).
//! The leader ticks; the others try for the lock every `lock_retry` and take over when the
//! leader's connection goes (a killed leader's lock is released by Postgres at once).
//! Each slot is also claimed in the database (an integration's `next_sync_at` moves by
//! compare-and-set, and `sync_runs` has one row per slot), so even two leaders for a moment
//! could not enqueue a slot twice.
//!
//! A tick, for every active integration with a schedule:
//! - never planned: plan its next slot (no run now);
//! - due: create the run for the slot and enqueue its first page, and plan the first slot
//!   after *now* — a scheduler down for a day runs a missed schedule once, not once per slot.
//!
//! It also launches runs still `pending` (the broker was down when they were created) and
//! re-enqueues the page of runs whose pager stalled (its message was lost).
#![forbid(unsafe_code)]

use chrono::{DateTime, Utc};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use switchyard_broker::Broker;
use switchyard_core::schedule::Schedule;
use switchyard_ops::sync::{self, SyncError, SyncRequest};
use switchyard_store::{SCHEDULER_LOCK, Store, StoreError};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Where the scheduler reads the time: the system clock, or a test's.
pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that moves only when told (tests).
pub struct ManualClock(Mutex<DateTime<Utc>>);

impl ManualClock {
    pub fn new(at: DateTime<Utc>) -> ManualClock {
        ManualClock(Mutex::new(at))
    }

    pub fn set(&self, at: DateTime<Utc>) {
        *self.0.lock().expect("clock lock") = at;
    }

    pub fn advance(&self, by: chrono::Duration) {
        *self.0.lock().expect("clock lock") += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().expect("clock lock")
    }
}

#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// How often the leader looks for due syncs.
    pub tick: Duration,
    /// How often a follower tries for leadership.
    pub lock_retry: Duration,
    /// A running run whose pager has not moved for this long gets its page enqueued again.
    pub stall_after: Duration,
    /// This process's name in `sync_runs.started_by` and the logs.
    pub instance: String,
    /// Where operators' notifications go (none: they are kept, not sent).
    pub notify: Option<switchyard_ops::notify::NotifyConfig>,
    /// Asks providers how pending operation calls ended when no callback came in time
    /// (none: they wait for their callbacks only).
    pub calls: Option<switchyard_ops::calls::Calls>,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            tick: Duration::from_secs(1),
            lock_retry: Duration::from_secs(2),
            stall_after: Duration::from_secs(300),
            instance: format!(
                "scheduler-{}-{}",
                std::process::id(),
                &uuid::Uuid::now_v7().simple().to_string()[24..]
            ),
            notify: None,
            calls: None,
        }
    }
}

/// What one tick did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tick {
    /// Integrations whose first slot was planned.
    pub planned: usize,
    /// Runs created for due slots.
    pub started: Vec<uuid::Uuid>,
    /// Pending or stalled runs enqueued again.
    pub relaunched: usize,
    /// Held jobs of active integrations published again (an activation that could not
    /// release them, or a job held while its target was being activated).
    pub released: u64,
}

/// Pending operation calls asked, and messages moved on, per round.
const CALLS_PER_ROUND: i64 = 50;

/// How often the leader samples the fleet's gauges.
const SAMPLE_EVERY: Duration = Duration::from_secs(15);

pub struct Scheduler {
    cfg: SchedulerConfig,
    store: Store,
    broker: Broker,
    clock: Arc<dyn Clock>,
    metrics: Metrics,
    http: reqwest::Client,
}

/// The fleet's gauges, sampled by the leader every tick (a follower shows only that it
/// does not lead).
struct Metrics {
    registry: prometheus::Registry,
    leader: prometheus::IntGauge,
    queues: prometheus::IntGaugeVec,
    held: prometheus::IntGauge,
    dead_letters: prometheus::IntGaugeVec,
    sync_runs: prometheus::IntGaugeVec,
}

impl Metrics {
    fn new() -> Metrics {
        use prometheus::{IntGauge, IntGaugeVec, Opts};
        let leader = IntGauge::new(
            "switchyard_scheduler_leader",
            "1 while this scheduler leads (ticks), 0 while it stands by",
        )
        .expect("a valid metric");
        let queues = IntGaugeVec::new(
            Opts::new(
                "switchyard_queue_messages",
                "Messages waiting in each work, sync and dead-letter queue (sampled by the leading scheduler)",
            ),
            &["queue"],
        )
        .expect("a valid metric");
        let held = IntGauge::new(
            "switchyard_jobs_held",
            "Jobs held for targets that are not active (sampled by the leading scheduler)",
        )
        .expect("a valid metric");
        let dead_letters = IntGaugeVec::new(
            Opts::new(
                "switchyard_dead_letters",
                "Dead letters kept, by provider (sampled by the leading scheduler)",
            ),
            &["provider"],
        )
        .expect("a valid metric");
        let sync_runs = IntGaugeVec::new(
            Opts::new(
                "switchyard_sync_runs",
                "Sync runs, by status (sampled by the leading scheduler)",
            ),
            &["status"],
        )
        .expect("a valid metric");
        let registry = prometheus::Registry::new();
        for m in [
            Box::new(leader.clone()) as Box<dyn prometheus::core::Collector>,
            Box::new(queues.clone()),
            Box::new(held.clone()),
            Box::new(dead_letters.clone()),
            Box::new(sync_runs.clone()),
        ] {
            registry.register(m).expect("registered once");
        }
        Metrics {
            registry,
            leader,
            queues,
            held,
            dead_letters,
            sync_runs,
        }
    }
}

impl Scheduler {
    pub fn new(cfg: SchedulerConfig, store: Store, broker: Broker, clock: Arc<dyn Clock>) -> Self {
        Scheduler {
            cfg,
            store,
            broker,
            clock,
            metrics: Metrics::new(),
            http: reqwest::Client::new(),
        }
    }

    /// Make the operators' notifications that are due and deliver those waiting (when a URL
    /// is configured; the leader calls this every tick).
    pub async fn notify(&self) -> Result<switchyard_ops::notify::Round, StoreError> {
        let Some(cfg) = &self.cfg.notify else {
            return Ok(Default::default());
        };
        switchyard_ops::notify::run_once(&self.store, &self.http, cfg).await
    }

    /// Ask providers how the pending operation calls whose time has come ended (the leader
    /// calls this every tick; tests call it directly). Returns how many were settled.
    pub async fn settle_due(&self) -> Result<usize, StoreError> {
        match &self.cfg.calls {
            Some(calls) => calls.settle_due(CALLS_PER_ROUND).await,
            None => Ok(0),
        }
    }

    /// Move messages over channel routes on: send on the current channel, or go on to the
    /// next (the leader calls this every tick). Returns how many ended.
    pub async fn advance_messages(&self) -> Result<usize, StoreError> {
        match &self.cfg.calls {
            Some(calls) => calls.advance_messages(CALLS_PER_ROUND).await,
            None => Ok(0),
        }
    }

    /// The scheduler's metrics, for a `/metrics` endpoint.
    pub fn registry(&self) -> prometheus::Registry {
        self.metrics.registry.clone()
    }

    /// Sample the fleet's gauges: queue depths (passive declares), held jobs, dead letters
    /// and sync runs.
    pub async fn sample(&self) -> Result<(), StoreError> {
        let topology = self.broker.topology().clone();
        let mut queues = vec![topology.sync_queue()];
        for p in switchyard_providers::target_providers() {
            queues.push(topology.queue(&p));
            queues.push(topology.dead_letter_queue(&p));
        }
        for q in queues {
            // A queue not declared yet (no worker for its provider) has nothing in it.
            let n = self.broker.message_count(&q).await.unwrap_or(0);
            self.metrics
                .queues
                .with_label_values(&[&q])
                .set(i64::from(n));
        }
        let d = self.store.depths().await?;
        self.metrics.held.set(d.held);
        for (provider, n) in d.dead_letters {
            self.metrics
                .dead_letters
                .with_label_values(&[&provider])
                .set(n);
        }
        for (status, n) in d.sync_runs {
            self.metrics.sync_runs.with_label_values(&[&status]).set(n);
        }
        Ok(())
    }

    /// Lead when we can, tick while we lead, until `stop`.
    pub async fn run(self, stop: CancellationToken) {
        let me = self.cfg.instance.clone();
        info!(instance = %me, "scheduler started; waiting for leadership");
        let mut announced_follower = false;
        while !stop.is_cancelled() {
            let lead = match self.store.try_lead(SCHEDULER_LOCK).await {
                Ok(l) => l,
                Err(e) => {
                    warn!(error = %e, "cannot reach the database to take leadership; retrying");
                    None
                }
            };
            let Some(mut lead) = lead else {
                if !announced_follower {
                    info!(instance = %me, "another scheduler leads; standing by");
                    announced_follower = true;
                }
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(self.cfg.lock_retry) => continue,
                }
            };
            info!(instance = %me, "this scheduler leads");
            self.metrics.leader.set(1);
            announced_follower = false;
            let mut sampled = None;
            let mut calls_round: Option<tokio::task::JoinHandle<()>> = None;
            loop {
                if let Err(e) = self.tick().await {
                    warn!(error = %e, "scheduler tick failed; trying again next tick");
                }
                if let Err(e) = self.notify().await {
                    warn!(error = %e, "could not handle notifications; trying again next tick");
                }
                // Provider calls (queries, messages) run beside the tick, one round at a
                // time: a slow provider does not hold the schedule up.
                if let Some(calls) = &self.cfg.calls
                    && calls_round
                        .as_ref()
                        .is_none_or(tokio::task::JoinHandle::is_finished)
                {
                    let calls = calls.clone();
                    calls_round = Some(tokio::spawn(async move {
                        if let Err(e) = calls.settle_due(CALLS_PER_ROUND).await {
                            warn!(error = %e, "could not ask for pending operation calls' results; trying again next tick");
                        }
                        if let Err(e) = calls.advance_messages(CALLS_PER_ROUND).await {
                            warn!(error = %e, "could not move messages on; trying again next tick");
                        }
                    }));
                }
                // Every 15 s at most (a passive declare per queue).
                if sampled.is_none_or(|t: std::time::Instant| t.elapsed() >= SAMPLE_EVERY) {
                    sampled = Some(std::time::Instant::now());
                    if let Err(e) = self.sample().await {
                        warn!(error = %e, "could not sample the fleet's gauges; trying again next tick");
                    }
                }
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tokio::time::sleep(self.cfg.tick) => {}
                }
                if !lead.still_held().await {
                    warn!(instance = %me, "lost the leadership's database connection; trying to lead again");
                    break;
                }
            }
            self.metrics.leader.set(0);
            if stop.is_cancelled() {
                lead.release().await;
            }
        }
        info!(instance = %me, "scheduler stopped");
    }

    /// Look once for due syncs (the leader calls this every tick; tests call it directly).
    pub async fn tick(&self) -> Result<Tick, StoreError> {
        let now = self.clock.now();
        let mut out = Tick::default();
        for i in self.store.scheduled_integrations(now).await? {
            let compiled = match i
                .schedule
                .as_ref()
                .map(|s| Schedule::from_json(s).and_then(|x| x.compile()))
            {
                Some(Ok(c)) => c,
                Some(Err(e)) => {
                    warn!(integration = %i.name, error = %e, "integration has an invalid schedule; not scheduling it");
                    continue;
                }
                None => continue,
            };
            let next = compiled.next_after(now);
            let Some(slot) = i.next_sync_at else {
                if next.is_some() && self.store.plan_next_sync(i.id, None, next).await? {
                    out.planned += 1;
                }
                continue;
            };
            let req = SyncRequest {
                trigger: "schedule",
                slot: Some((slot, next)),
                started_by: self.cfg.instance.clone(),
                entities: None,
                full: false,
                now,
            };
            match sync::start(&self.store, &self.broker, &i, req).await {
                Ok(Some(run)) => {
                    info!(integration = %i.name, run = %run.id, %slot, next = ?next, "scheduled sync started");
                    out.started.push(run.id);
                }
                Ok(None) => {}
                Err(SyncError::Store(e)) => return Err(e),
                Err(e) => {
                    warn!(integration = %i.name, error = %e, "scheduled sync created but not yet enqueued; will retry")
                }
            }
        }
        out.relaunched += self.relaunch().await?;
        for integration in self.store.active_with_held_jobs().await? {
            match switchyard_ops::held::release(&self.store, &self.broker, integration).await {
                Ok(n) => out.released += n,
                Err(switchyard_ops::held::ReleaseError::Store(e)) => return Err(e),
                Err(e) => warn!(%integration, error = %e, "held jobs cannot be released yet"),
            }
        }
        Ok(out)
    }

    /// Enqueue runs left pending (the broker was down), and stalled runs' current page. These
    /// ages are read on the wall clock, as the database writes them.
    async fn relaunch(&self) -> Result<usize, StoreError> {
        let mut n = 0;
        let wall = Utc::now();
        for run in self
            .store
            .pending_runs(wall - chrono::Duration::seconds(5))
            .await?
        {
            match sync::launch(&self.store, &self.broker, &run).await {
                Ok(()) => n += 1,
                Err(SyncError::Store(e)) => return Err(e),
                Err(e) => {
                    warn!(run = %run.id, error = %e, "pending sync run still cannot be enqueued")
                }
            }
        }
        let stall = chrono::Duration::from_std(self.cfg.stall_after).unwrap_or_default();
        for run in self.store.stalled_runs(wall - stall).await? {
            warn!(run = %run.id, page = run.pages, "sync run stalled; enqueueing its page again");
            if sync::publish_page(&self.broker, run.id, run.pages)
                .await
                .is_ok()
            {
                self.store.touch_run(run.id).await?;
                n += 1;
            }
        }
        Ok(n)
    }
}
