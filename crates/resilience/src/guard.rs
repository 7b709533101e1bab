//! The fleet's shared breakers and limits: Redis when it answers, this process's own state
//! when it does not.
use redis::Script;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tracing::{info, warn};

use crate::breaker::{self, BreakerPolicy, BreakerState, Outcome, Permit};
use crate::limits::{LocalLimiter, RateLimit};

/// May the call go ahead?
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Go,
    /// A rate limit is used up: try after this long.
    Throttled(Duration),
    /// The provider account's breaker is open: try after this long.
    BreakerOpen(Duration),
}

#[derive(Debug, thiserror::Error)]
#[error("invalid Redis URL: {0}")]
pub struct GuardError(String);

const BREAKER_ACQUIRE: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local wait = tonumber(ARGV[1])
local probes = tonumber(ARGV[2])
local state = redis.call('HGET', KEYS[1], 'state') or 'closed'
if state == 'closed' then return {1, 0, 1} end
if state == 'open' then
  local opened = tonumber(redis.call('HGET', KEYS[1], 'opened_at'))
  if now < opened + wait then return {0, opened + wait - now, 0} end
  redis.call('HSET', KEYS[1], 'state', 'half_open', 'since', now, 'left', probes, 'done', 0, 'failed', 0)
end
local since = tonumber(redis.call('HGET', KEYS[1], 'since'))
local left = tonumber(redis.call('HGET', KEYS[1], 'left'))
if left == 0 and now >= since + wait then
  redis.call('HSET', KEYS[1], 'since', now, 'left', probes, 'done', 0, 'failed', 0)
  left = probes
end
redis.call('PEXPIRE', KEYS[1], 86400000)
if left > 0 then
  redis.call('HINCRBY', KEYS[1], 'left', -1)
  return {1, 0, 0}
end
return {0, math.max(50, math.floor(wait / 4)), 0}
"#;

/// The outcomes of one or more calls (ARGV[1], one letter each, oldest first), applied in
/// order: while half-open each is a probe's; while closed they join the window, which is
/// judged once they are all in. Returns the state after them.
const BREAKER_RECORD: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local codes = ARGV[1]
local window = tonumber(ARGV[2])
local min_calls = tonumber(ARGV[3])
local fail_pct = tonumber(ARGV[4])
local slow_pct = tonumber(ARGV[5])
local probes = tonumber(ARGV[6])
local state = redis.call('HGET', KEYS[1], 'state') or 'closed'
if state == 'open' then return 'open' end
local first = 1
if state == 'half_open' then
  for i = 1, #codes do
    local o = string.sub(codes, i, i)
    local done = redis.call('HINCRBY', KEYS[1], 'done', 1)
    local failed = tonumber(redis.call('HGET', KEYS[1], 'failed') or '0')
    if o == 'f' or o == 'x' or o == 'w' then failed = redis.call('HINCRBY', KEYS[1], 'failed', 1) end
    if done >= probes then
      redis.call('DEL', KEYS[2])
      if failed * 100 >= fail_pct * probes then
        redis.call('HSET', KEYS[1], 'state', 'open', 'opened_at', now)
        return 'open'
      end
      redis.call('HSET', KEYS[1], 'state', 'closed')
      first = i + 1
      state = 'closed'
      break
    end
  end
  if state == 'half_open' then return 'half_open' end
  if first > #codes then return 'closed' end
end
local pushed = {}
for i = first, #codes do pushed[#pushed + 1] = string.sub(codes, i, i) end
redis.call('LPUSH', KEYS[2], unpack(pushed))
redis.call('LTRIM', KEYS[2], 0, window - 1)
redis.call('PEXPIRE', KEYS[2], 86400000)
local items = redis.call('LRANGE', KEYS[2], 0, -1)
local n = #items
if n >= min_calls then
  local f, s = 0, 0
  for _, v in ipairs(items) do
    if v == 'f' or v == 'x' then f = f + 1 end
    if v == 'w' or v == 'x' then s = s + 1 end
  end
  if f * 100 >= fail_pct * n or s * 100 >= slow_pct * n then
    redis.call('HSET', KEYS[1], 'state', 'open', 'opened_at', now)
    redis.call('PEXPIRE', KEYS[1], 86400000)
    redis.call('DEL', KEYS[2])
    return 'open'
  end
end
return 'closed'
"#;

/// GCRA over every limit in KEYS (times in milliseconds, as floats: Lua's numbers print
/// exactly up to 14 digits). Returns 0 (go) or the wait in microseconds.
const GCRA: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local wait = 0
local nxt = {}
for i = 1, #KEYS do
  local interval = tonumber(ARGV[2 * i - 1])
  local tol = tonumber(ARGV[2 * i])
  local tat = tonumber(redis.call('GET', KEYS[i]) or '0')
  if tat < now then tat = now end
  local allow = tat - tol
  if now < allow then wait = math.max(wait, allow - now) end
  nxt[i] = tat + interval
end
if wait > 0 then return math.ceil(wait * 1000) end
for i = 1, #KEYS do
  redis.call('SET', KEYS[i], string.format('%.3f', nxt[i]), 'PX', math.ceil(nxt[i] - now) + 1000)
end
return 0
"#;

/// How long a process takes the fleet's word that a breaker is closed before asking Redis
/// again ([`Guard::trusting_closed_for`]).
pub const TRUST_CLOSED: Duration = Duration::from_millis(100);

/// How long the successes of calls admitted on trust wait to be reported to Redis together
/// ([`Guard::reporting_every`]).
pub const REPORT_EVERY: Duration = Duration::from_millis(10);

/// At most this many successes wait for one account's report; the next call reports them.
const MAX_HELD: usize = 64;

#[derive(Default)]
struct LocalState {
    breaker: breaker::Local,
    limiter: LocalLimiter,
}

/// A handle to the guard's state, which a report sent later (after [`REPORT_EVERY`]) shares.
pub struct Guard(Arc<Inner>);

impl std::ops::Deref for Guard {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

/// The guard's state (public only as [`Guard`]'s `Deref` target; nothing in it is).
#[doc(hidden)]
pub struct Inner {
    redis: Option<ConnectionManager>,
    prefix: String,
    local: Mutex<HashMap<String, LocalState>>,
    degraded: AtomicBool,
    /// After a Redis failure, decide locally until then (no reconnect storm).
    redis_paused_until: Mutex<Option<Instant>>,
    epoch: Instant,
    /// Per provider account: when Redis last said its breaker was closed, in answer to an
    /// admission or to a call's outcome. Within `trust_closed` of that, a call is admitted
    /// without asking again.
    closed_seen: Mutex<HashMap<String, Instant>>,
    trust_closed: Duration,
    /// Per provider account: the successes of calls admitted on trust, not yet reported
    /// (one letter each), and the policy to report them under.
    held: Mutex<HashMap<String, (String, BreakerPolicy)>>,
    report_every: Duration,
    acquire: Script,
    record: Script,
    gcra: Script,
}

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard")
            .field("shared", &self.redis.is_some())
            .field("degraded", &self.degraded())
            .finish()
    }
}

impl Guard {
    /// Shared through Redis at `url` (connected lazily, reconnecting on its own). A breaker
    /// Redis has said is closed is trusted closed for [`TRUST_CLOSED`], and the successes of
    /// the calls it admits are reported every [`REPORT_EVERY`].
    pub fn shared(url: &str, prefix: &str) -> Result<Guard, GuardError> {
        let client = redis::Client::open(url).map_err(|e| GuardError(e.to_string()))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_millis(300)))
            .set_response_timeout(Some(Duration::from_millis(300)))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let manager = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|e| GuardError(e.to_string()))?;
        Ok(Guard::build(Some(manager), prefix)
            .trusting_closed_for(TRUST_CLOSED)
            .reporting_every(REPORT_EVERY))
    }

    /// How long a breaker Redis has said is closed is taken as closed without asking again
    /// (zero: ask before every call). While calls to an account go on, every outcome's
    /// report brings the fleet's state back, so a breaker another process opens stops this
    /// one's calls as soon as one of its own calls ends, or after this long at most; in
    /// exchange, an admission costs no round trip to Redis.
    pub fn trusting_closed_for(mut self, trust: Duration) -> Guard {
        self.inner_mut().trust_closed = trust;
        self
    }

    /// How long the successes of calls admitted on trust (a breaker Redis has said is
    /// closed) are held to be reported together, in one script (zero: each call reports its
    /// own). A failure, a slow call, or a call admitted without trust is reported at once,
    /// after the held successes, and its answer is the fleet's state then; a held success
    /// is answered `Closed`, as trusted, and a breaker the fleet opened meanwhile is heard
    /// of when the report goes. So the fleet's window sees this process's successes up to
    /// this long late, and this process hears of an open breaker up to this long late too
    /// (and at most [`Guard::trusting_closed_for`] late, as before).
    pub fn reporting_every(mut self, every: Duration) -> Guard {
        self.inner_mut().report_every = every;
        self
    }

    fn inner_mut(&mut self) -> &mut Inner {
        Arc::get_mut(&mut self.0).expect("a guard is configured before it is shared")
    }

    /// Per-process only (no Redis configured).
    pub fn local(prefix: &str) -> Guard {
        Guard::build(None, prefix)
    }

    fn build(redis: Option<ConnectionManager>, prefix: &str) -> Guard {
        Guard(Arc::new(Inner {
            redis,
            prefix: prefix.to_owned(),
            local: Mutex::new(HashMap::new()),
            degraded: AtomicBool::new(false),
            redis_paused_until: Mutex::new(None),
            epoch: Instant::now(),
            closed_seen: Mutex::new(HashMap::new()),
            trust_closed: Duration::ZERO,
            held: Mutex::new(HashMap::new()),
            report_every: Duration::ZERO,
            acquire: Script::new(BREAKER_ACQUIRE),
            record: Script::new(BREAKER_RECORD),
            gcra: Script::new(GCRA),
        }))
    }

    /// Redis is configured but not answering: decisions are per process.
    pub fn degraded(&self) -> bool {
        self.degraded.load(Ordering::Relaxed)
    }

    pub fn is_shared(&self) -> bool {
        self.redis.is_some()
    }

    /// Ask Redis directly (for readiness checks). `None` when no Redis is configured.
    pub async fn ping(&self) -> Option<bool> {
        let mut conn = self.redis.clone()?;
        let ok = tokio::time::timeout(
            Duration::from_millis(500),
            redis::cmd("PING").query_async::<String>(&mut conn),
        )
        .await
        .is_ok_and(|r| r.is_ok());
        Some(ok)
    }

    /// Rate limits first, then the breaker; `key` names the provider account.
    pub async fn admit(
        &self,
        key: &str,
        breaker: &BreakerPolicy,
        limits: &[RateLimit],
    ) -> Admission {
        if !limits.is_empty()
            && let Err(wait) = self.take_token(key, limits).await
        {
            return Admission::Throttled(wait);
        }
        if !breaker.enabled {
            return Admission::Go;
        }
        match self.breaker_acquire(key, breaker).await {
            Permit::Granted => Admission::Go,
            Permit::Denied(wait) => Admission::BreakerOpen(wait),
        }
    }

    async fn take_token(&self, key: &str, limits: &[RateLimit]) -> Result<(), Duration> {
        if let Some(mut conn) = self.conn() {
            let mut inv = self.gcra.prepare_invoke();
            for (i, l) in limits.iter().enumerate() {
                let (interval_us, tolerance_us) = l.gcra();
                inv.key(self.key("rl", &format!("{key}:{i}")))
                    .arg(interval_us as f64 / 1000.0)
                    .arg(tolerance_us as f64 / 1000.0);
            }
            match inv.invoke_async::<u64>(&mut conn).await {
                Ok(0) => {
                    self.redis_ok();
                    return Ok(());
                }
                Ok(wait_us) => {
                    self.redis_ok();
                    return Err(Duration::from_micros(wait_us));
                }
                Err(e) => self.redis_failed(&e),
            }
        }
        let now_us = self.epoch.elapsed().as_micros() as u64;
        let mut local = self.local.lock().expect("lock");
        local
            .entry(key.to_owned())
            .or_default()
            .limiter
            .acquire(limits, now_us)
    }

    async fn breaker_acquire(&self, key: &str, p: &BreakerPolicy) -> Permit {
        if let Some(mut conn) = self.conn() {
            if self.trusted_closed(key) {
                return Permit::Granted;
            }
            let r: Result<(u8, u64, u8), _> = self
                .acquire
                .key(self.key("b", key))
                .arg(p.open_wait_ms)
                .arg(p.half_open_probes)
                .invoke_async(&mut conn)
                .await;
            match r {
                Ok((1, _, closed)) => {
                    self.redis_ok();
                    self.saw_breaker(key, closed == 1);
                    return Permit::Granted;
                }
                Ok((_, wait, _)) => {
                    self.redis_ok();
                    self.saw_breaker(key, false);
                    return Permit::Denied(Duration::from_millis(wait));
                }
                Err(e) => self.redis_failed(&e),
            }
        }
        let now = self.now_ms();
        let mut local = self.local.lock().expect("lock");
        local
            .entry(key.to_owned())
            .or_default()
            .breaker
            .acquire(p, now)
    }

    /// The breakers' states as the fleet shares them (Redis), or as this process keeps them;
    /// `Closed` for a key never judged.
    pub async fn breaker_states(&self, keys: &[String]) -> Vec<BreakerState> {
        let parse = |s: Option<String>| match s.as_deref() {
            Some("open") => BreakerState::Open,
            Some("half_open") => BreakerState::HalfOpen,
            _ => BreakerState::Closed,
        };
        if let Some(mut conn) = self.conn() {
            let mut pipe = redis::pipe();
            for k in keys {
                pipe.cmd("HGET").arg(self.key("b", k)).arg("state");
            }
            match pipe.query_async::<Vec<Option<String>>>(&mut conn).await {
                Ok(states) => {
                    self.redis_ok();
                    return states.into_iter().map(parse).collect();
                }
                Err(e) => self.redis_failed(&e),
            }
        }
        let local = self.local.lock().expect("lock");
        keys.iter()
            .map(|k| {
                local
                    .get(k)
                    .map(|l| l.breaker.state())
                    .unwrap_or(BreakerState::Closed)
            })
            .collect()
    }

    /// Report how an admitted call went: the breaker's state after it (`None` when the
    /// policy has no breaker). A success on trust is held for the next report
    /// ([`Guard::reporting_every`]) and answered `Closed`.
    pub async fn record(
        &self,
        key: &str,
        p: &BreakerPolicy,
        outcome: Outcome,
    ) -> Option<BreakerState> {
        if !p.enabled {
            return None;
        }
        if self.conn().is_some() {
            if outcome == Outcome::Success && self.hold(key, p) {
                return Some(BreakerState::Closed);
            }
            let mut codes = self.take_held(key).map(|(c, _)| c).unwrap_or_default();
            codes.push_str(outcome.code());
            return Some(self.0.report(key, p, &codes).await);
        }
        Some(self.record_locally(key, p, outcome.code()))
    }

    /// Hold a success on trust for the account's next report; false when it must go now (no
    /// trust, holding is off, or the account's report is full).
    fn hold(&self, key: &str, p: &BreakerPolicy) -> bool {
        if self.report_every.is_zero() || !self.trusted_closed(key) {
            return false;
        }
        let mut held = self.held.lock().expect("lock");
        let (codes, policy) = held
            .entry(key.to_owned())
            .or_insert_with(|| (String::new(), p.clone()));
        if codes.len() >= MAX_HELD {
            return false;
        }
        codes.push_str(Outcome::Success.code());
        *policy = p.clone();
        if codes.len() == 1 {
            // The first success held for this account sends the report, unless a call's
            // own report takes it first.
            let inner = self.0.clone();
            let key = key.to_owned();
            tokio::spawn(async move {
                tokio::time::sleep(inner.report_every).await;
                if let Some((codes, policy)) = inner.take_held(&key) {
                    inner.report(&key, &policy, &codes).await;
                }
            });
        }
        true
    }
}

impl Inner {
    fn conn(&self) -> Option<ConnectionManager> {
        let paused = *self.redis_paused_until.lock().expect("lock");
        match paused {
            Some(until) if Instant::now() < until => None,
            _ => self.redis.clone(),
        }
    }

    fn redis_failed(&self, error: &redis::RedisError) {
        *self.redis_paused_until.lock().expect("lock") =
            Some(Instant::now() + Duration::from_secs(1));
        if !self.degraded.swap(true, Ordering::Relaxed) {
            warn!(%error, "Redis is unreachable: breakers and rate limits are per process until it is back");
        }
    }

    fn redis_ok(&self) {
        if self.degraded.swap(false, Ordering::Relaxed) {
            info!(
                "Redis is reachable again: breakers and rate limits are shared by the fleet again"
            );
        }
    }

    fn key(&self, kind: &str, key: &str) -> String {
        format!("{}sy:{kind}:{key}", self.prefix)
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Note what Redis said of `key`'s breaker: closed (trusted for `trust_closed`) or not.
    fn saw_breaker(&self, key: &str, closed: bool) {
        if self.trust_closed.is_zero() {
            return;
        }
        let mut seen = self.closed_seen.lock().expect("lock");
        if closed {
            match seen.get_mut(key) {
                Some(at) => *at = Instant::now(),
                None => {
                    seen.insert(key.to_owned(), Instant::now());
                }
            }
        } else {
            seen.remove(key);
        }
    }

    fn trusted_closed(&self, key: &str) -> bool {
        !self.trust_closed.is_zero()
            && self
                .closed_seen
                .lock()
                .expect("lock")
                .get(key)
                .is_some_and(|at| at.elapsed() < self.trust_closed)
    }

    fn take_held(&self, key: &str) -> Option<(String, BreakerPolicy)> {
        self.held.lock().expect("lock").remove(key)
    }

    /// Send these outcomes (oldest first) to the fleet's breaker: the state after them.
    /// Without Redis, this process's own breaker takes them.
    async fn report(&self, key: &str, p: &BreakerPolicy, codes: &str) -> BreakerState {
        if let Some(mut conn) = self.conn() {
            let r: Result<String, _> = self
                .record
                .key(self.key("b", key))
                .key(self.key("bw", key))
                .arg(codes)
                .arg(p.window)
                .arg(p.minimum_calls)
                .arg(p.failure_rate_pct)
                .arg(p.slow_call_rate_pct)
                .arg(p.half_open_probes)
                .invoke_async(&mut conn)
                .await;
            match r {
                Ok(state) => {
                    self.redis_ok();
                    self.saw_breaker(key, state == "closed");
                    if state == "open" && codes.ends_with(['f', 'x']) {
                        tracing::debug!(key, "breaker open");
                    }
                    return match state.as_str() {
                        "open" => BreakerState::Open,
                        "half_open" => BreakerState::HalfOpen,
                        _ => BreakerState::Closed,
                    };
                }
                Err(e) => self.redis_failed(&e),
            }
        }
        self.record_locally(key, p, codes)
    }

    fn record_locally(&self, key: &str, p: &BreakerPolicy, codes: &str) -> BreakerState {
        let now = self.now_ms();
        let mut local = self.local.lock().expect("lock");
        let breaker = &mut local.entry(key.to_owned()).or_default().breaker;
        for code in codes.chars() {
            breaker.record(p, Outcome::from_code(code), now);
        }
        breaker.state()
    }
}
