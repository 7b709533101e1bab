//! Target integrations and their connectors, cached briefly so a busy worker does not read
//! the same row and decrypt the same credentials for every job.
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use switchyard_providers::{Connector, HttpClient};
use switchyard_resilience::{BreakerPolicy, RateLimit, RetryPolicy, settings};
use switchyard_store::{Integration, Store, StoreError};
use switchyard_vault::Keyring;
use tokio::sync::Mutex;
use uuid::Uuid;

/// A target integration, ready to call.
pub(crate) struct Target {
    /// `Err` says why the integration's settings or credentials cannot work.
    pub(crate) connector: Result<Arc<dyn Connector>, String>,
    /// The error above is that the credentials cannot be opened here (a vault key missing):
    /// the hub's problem, which jobs wait out instead of dying of it.
    pub(crate) credentials_unopened: bool,
    pub(crate) retry: RetryPolicy,
    pub(crate) breaker: BreakerPolicy,
    pub(crate) limits: Vec<RateLimit>,
    /// Calls at once to this account from this process: `settings.concurrency`, at most
    /// the worker's per-integration share.
    pub(crate) turns: Arc<Turns>,
}

/// One integration's turns in this process (its calls at once), and how many have been
/// given back: a job waiting for a turn tells a busy integration (turns keep coming back)
/// from a hung one (none do) by it.
pub(crate) struct Turns {
    permits: Arc<tokio::sync::Semaphore>,
    ended: AtomicU64,
}

impl Turns {
    fn new(n: usize) -> Turns {
        Turns {
            permits: Arc::new(tokio::sync::Semaphore::new(n)),
            ended: AtomicU64::new(0),
        }
    }

    /// A turn if one is free now.
    pub(crate) fn try_take(self: &Arc<Self>) -> Option<Turn> {
        let permit = self.permits.clone().try_acquire_owned().ok()?;
        Some(Turn {
            _permit: permit,
            turns: self.clone(),
        })
    }

    /// The next turn, in arrival order (the semaphore is fair: the place in line is the
    /// future's, from its first poll).
    pub(crate) async fn take(self: Arc<Self>) -> Option<Turn> {
        let permit = self.permits.clone().acquire_owned().await.ok()?;
        Some(Turn {
            _permit: permit,
            turns: self,
        })
    }

    /// Turns given back so far.
    pub(crate) fn ended(&self) -> u64 {
        self.ended.load(Ordering::Relaxed)
    }
}

/// A job's turn at its integration; given back when dropped.
pub(crate) struct Turn {
    _permit: tokio::sync::OwnedSemaphorePermit,
    turns: Arc<Turns>,
}

impl Drop for Turn {
    fn drop(&mut self) {
        self.turns.ended.fetch_add(1, Ordering::Relaxed);
    }
}

pub(crate) struct Cache {
    store: Store,
    keyring: Arc<Keyring>,
    ttl: Duration,
    default_retry: RetryPolicy,
    default_breaker: BreakerPolicy,
    per_integration: usize,
    http: HttpClient,
    entries: Mutex<HashMap<Uuid, (Instant, Arc<Target>)>>,
    /// Kept across rebuilds of a target, so a refreshed entry does not open a second set
    /// of turns while calls under the first are still running.
    turns: std::sync::Mutex<HashMap<Uuid, (usize, Arc<Turns>)>>,
}

impl Cache {
    pub(crate) fn new(
        store: Store,
        keyring: Arc<Keyring>,
        ttl: Duration,
        default_retry: RetryPolicy,
        default_breaker: BreakerPolicy,
        per_integration: usize,
    ) -> Cache {
        Cache {
            store,
            keyring,
            ttl,
            default_retry,
            default_breaker,
            per_integration,
            http: switchyard_providers::http_client(),
            entries: Mutex::new(HashMap::new()),
            turns: std::sync::Mutex::new(HashMap::new()),
        }
    }

    /// The integration, or `None` if it does not exist (or was deleted).
    pub(crate) async fn get(&self, id: Uuid) -> Result<Option<Arc<Target>>, StoreError> {
        if let Some((at, t)) = self.entries.lock().await.get(&id)
            && at.elapsed() < self.ttl
        {
            return Ok(Some(t.clone()));
        }
        let integration = match self.store.integration(id).await {
            Ok(i) => i,
            Err(StoreError::NotFound(_)) => {
                self.entries.lock().await.remove(&id);
                return Ok(None);
            }
            Err(e) => return Err(e),
        };
        let target = Arc::new(self.build(&integration));
        self.entries
            .lock()
            .await
            .insert(id, (Instant::now(), target.clone()));
        Ok(Some(target))
    }

    fn build(&self, integration: &Integration) -> Target {
        let retry = settings::retry(&self.default_retry, &integration.settings);
        let breaker = settings::breaker(&self.default_breaker, &integration.settings);
        let limits = settings::rate_limits(&integration.settings);
        let settings_ok = match (&retry, &breaker, &limits) {
            (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => Err(e.clone()),
            _ => Ok(()),
        };
        let mut credentials_unopened = false;
        let connector = settings_ok.and_then(|_| {
            let credentials =
                switchyard_ops::integrations::open_credentials(&self.keyring, integration)
                    .inspect_err(|_| credentials_unopened = true)?;
            switchyard_providers::build(
                &integration.provider,
                &integration.settings,
                credentials,
                &switchyard_providers::BuildContext::for_integration(
                    self.http.clone(),
                    self.store.clone(),
                    self.keyring.clone(),
                    integration.id,
                ),
            )
            .map_err(|e| e.to_string())
        });
        let n = switchyard_providers::concurrency(&integration.settings)
            .ok()
            .flatten()
            .map_or(self.per_integration, |n| n.min(self.per_integration));
        let turns = {
            let mut map = self.turns.lock().unwrap_or_else(|e| e.into_inner());
            match map.get(&integration.id) {
                Some((m, t)) if *m == n => t.clone(),
                _ => {
                    let t = Arc::new(Turns::new(n));
                    map.insert(integration.id, (n, t.clone()));
                    t
                }
            }
        };
        Target {
            turns,
            retry: retry.unwrap_or_else(|_| self.default_retry.clone()),
            breaker: breaker.unwrap_or_else(|_| self.default_breaker.clone()),
            limits: limits.unwrap_or_default(),
            connector: connector
                .map_err(|e| format!("integration `{}` cannot be called: {e}", integration.name)),
            credentials_unopened,
        }
    }
}
