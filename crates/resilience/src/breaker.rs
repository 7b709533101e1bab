//! A circuit breaker with resilience4j's semantics: a count-based sliding window of the last
//! `window` calls; once it holds `minimum_calls`, the breaker opens when the failure rate or
//! the slow-call rate reaches its threshold; it stays open `open_wait_ms`, then lets
//! `half_open_probes` calls through; their outcomes close it or open it again.
//!
//! [`Local`] is the per-process state machine; `guard` runs the same machine in Redis (Lua)
//! for the fleet. Both are tested against the same scenarios.
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BreakerPolicy {
    pub enabled: bool,
    /// Calls in the sliding window.
    pub window: u32,
    /// Calls the window must hold before rates are judged.
    pub minimum_calls: u32,
    /// Failure rate (percent) that opens the breaker.
    pub failure_rate_pct: u32,
    /// A call slower than this (ms) is slow.
    pub slow_call_ms: u64,
    /// Slow-call rate (percent) that opens the breaker.
    pub slow_call_rate_pct: u32,
    /// How long the breaker stays open before probing (ms).
    pub open_wait_ms: u64,
    /// Calls let through while half-open.
    pub half_open_probes: u32,
}

impl Default for BreakerPolicy {
    fn default() -> Self {
        BreakerPolicy {
            enabled: true,
            window: 20,
            minimum_calls: 10,
            failure_rate_pct: 50,
            slow_call_ms: 10_000,
            slow_call_rate_pct: 80,
            open_wait_ms: 30_000,
            half_open_probes: 3,
        }
    }
}

impl BreakerPolicy {
    pub fn validate(&self) -> Result<(), String> {
        if self.window == 0 || self.window > 1000 {
            return Err("breaker.window must be between 1 and 1000".into());
        }
        if self.minimum_calls == 0 || self.minimum_calls > self.window {
            return Err("breaker.minimum_calls must be between 1 and breaker.window".into());
        }
        if self.failure_rate_pct == 0 || self.failure_rate_pct > 100 {
            return Err("breaker.failure_rate_pct must be between 1 and 100".into());
        }
        if self.slow_call_rate_pct == 0 || self.slow_call_rate_pct > 100 {
            return Err("breaker.slow_call_rate_pct must be between 1 and 100".into());
        }
        if self.half_open_probes == 0 || self.half_open_probes > 1000 {
            return Err("breaker.half_open_probes must be between 1 and 1000".into());
        }
        if self.open_wait_ms == 0 || self.open_wait_ms > 86_400_000 {
            return Err("breaker.open_wait_ms must be between 1 and 86400000 (a day)".into());
        }
        if self.slow_call_ms == 0 || self.slow_call_ms > 3_600_000 {
            return Err("breaker.slow_call_ms must be between 1 and 3600000 (an hour)".into());
        }
        Ok(())
    }

    /// How a finished call counts.
    pub fn outcome(&self, failed: bool, took: Duration) -> Outcome {
        let slow = took.as_millis() as u64 > self.slow_call_ms;
        match (failed, slow) {
            (false, false) => Outcome::Success,
            (true, false) => Outcome::Failure,
            (false, true) => Outcome::SlowSuccess,
            (true, true) => Outcome::SlowFailure,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Failure,
    SlowSuccess,
    SlowFailure,
}

impl Outcome {
    /// One letter, as stored in Redis: `s`, `f`, `w` (slow success), `x` (slow failure).
    pub fn code(self) -> &'static str {
        match self {
            Outcome::Success => "s",
            Outcome::Failure => "f",
            Outcome::SlowSuccess => "w",
            Outcome::SlowFailure => "x",
        }
    }

    /// The outcome [`Outcome::code`] stands for (an unknown letter counts as a failure).
    pub fn from_code(code: char) -> Outcome {
        match code {
            's' => Outcome::Success,
            'w' => Outcome::SlowSuccess,
            'x' => Outcome::SlowFailure,
            _ => Outcome::Failure,
        }
    }

    pub fn failed(self) -> bool {
        matches!(self, Outcome::Failure | Outcome::SlowFailure)
    }

    pub fn slow(self) -> bool {
        matches!(self, Outcome::SlowSuccess | Outcome::SlowFailure)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    Closed,
    Open,
    HalfOpen,
}

/// The answer to "may I call?".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permit {
    Granted,
    /// Try again after this long.
    Denied(Duration),
}

/// One breaker's state, in process. Time is milliseconds on any monotonic clock.
#[derive(Debug, Clone)]
pub struct Local {
    state: BreakerState,
    window: VecDeque<Outcome>,
    opened_at: u64,
    half_open_since: u64,
    probes_left: u32,
    probes_done: u32,
    probes_failed: u32,
}

impl Default for Local {
    fn default() -> Self {
        Local {
            state: BreakerState::Closed,
            window: VecDeque::new(),
            opened_at: 0,
            half_open_since: 0,
            probes_left: 0,
            probes_done: 0,
            probes_failed: 0,
        }
    }
}

impl Local {
    pub fn state(&self) -> BreakerState {
        self.state
    }

    pub fn acquire(&mut self, p: &BreakerPolicy, now: u64) -> Permit {
        match self.state {
            BreakerState::Closed => Permit::Granted,
            BreakerState::Open => {
                let until = self.opened_at + p.open_wait_ms;
                if now < until {
                    return Permit::Denied(Duration::from_millis(until - now));
                }
                self.enter_half_open(p, now);
                self.take_probe(p, now)
            }
            BreakerState::HalfOpen => self.take_probe(p, now),
        }
    }

    fn enter_half_open(&mut self, p: &BreakerPolicy, now: u64) {
        self.state = BreakerState::HalfOpen;
        self.half_open_since = now;
        self.probes_left = p.half_open_probes;
        self.probes_done = 0;
        self.probes_failed = 0;
    }

    fn take_probe(&mut self, p: &BreakerPolicy, now: u64) -> Permit {
        // Probes whose outcome never came back (a worker died) are given up on after a
        // further wait, so the breaker cannot stay half-open for ever.
        if self.probes_left == 0 && now >= self.half_open_since + p.open_wait_ms {
            self.enter_half_open(p, now);
        }
        if self.probes_left > 0 {
            self.probes_left -= 1;
            Permit::Granted
        } else {
            Permit::Denied(Duration::from_millis((p.open_wait_ms / 4).max(50)))
        }
    }

    pub fn record(&mut self, p: &BreakerPolicy, outcome: Outcome, now: u64) {
        match self.state {
            BreakerState::Open => {}
            BreakerState::HalfOpen => {
                self.probes_done += 1;
                if outcome.failed() || outcome.slow() {
                    self.probes_failed += 1;
                }
                if self.probes_done >= p.half_open_probes {
                    if self.probes_failed * 100 >= p.failure_rate_pct * p.half_open_probes {
                        self.open(now);
                    } else {
                        self.state = BreakerState::Closed;
                        self.window.clear();
                    }
                }
            }
            BreakerState::Closed => {
                self.window.push_front(outcome);
                self.window.truncate(p.window as usize);
                let n = self.window.len() as u32;
                if n >= p.minimum_calls {
                    let failed = self.window.iter().filter(|o| o.failed()).count() as u32;
                    let slow = self.window.iter().filter(|o| o.slow()).count() as u32;
                    if failed * 100 >= p.failure_rate_pct * n
                        || slow * 100 >= p.slow_call_rate_pct * n
                    {
                        self.open(now);
                    }
                }
            }
        }
    }

    fn open(&mut self, now: u64) {
        self.state = BreakerState::Open;
        self.opened_at = now;
        self.window.clear();
    }
}

#[cfg(test)]
pub(crate) mod scenario {
    //! The behaviour both implementations must show, written once.
    use super::*;

    pub fn policy() -> BreakerPolicy {
        BreakerPolicy {
            enabled: true,
            window: 4,
            minimum_calls: 4,
            failure_rate_pct: 50,
            slow_call_ms: 1000,
            slow_call_rate_pct: 100,
            open_wait_ms: 1000,
            half_open_probes: 2,
        }
    }

    #[test]
    fn opens_on_failure_rate_probes_then_closes() {
        let p = policy();
        let mut b = Local::default();
        // Below the minimum number of calls nothing opens it.
        for t in 0..3 {
            assert_eq!(b.acquire(&p, t), Permit::Granted);
            b.record(&p, Outcome::Failure, t);
        }
        assert_eq!(b.state(), BreakerState::Closed);
        b.record(&p, Outcome::Success, 3);
        assert_eq!(b.state(), BreakerState::Open, "3 of 4 failed ≥ 50%");
        assert_eq!(
            b.acquire(&p, 500),
            Permit::Denied(Duration::from_millis(503))
        );
        // After the wait: two probes, then no more until they report.
        assert_eq!(b.acquire(&p, 1003), Permit::Granted);
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert_eq!(b.acquire(&p, 1004), Permit::Granted);
        assert!(matches!(b.acquire(&p, 1005), Permit::Denied(_)));
        b.record(&p, Outcome::Success, 1010);
        b.record(&p, Outcome::Success, 1011);
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn a_failed_probe_reopens_and_lost_probes_are_replaced() {
        let p = policy();
        let mut b = Local::default();
        for t in 0..4 {
            b.record(&p, Outcome::Failure, t);
        }
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(b.acquire(&p, 2000), Permit::Granted);
        assert_eq!(b.acquire(&p, 2000), Permit::Granted);
        b.record(&p, Outcome::Failure, 2001);
        b.record(&p, Outcome::Success, 2002);
        assert_eq!(b.state(), BreakerState::Open, "1 of 2 probes failed ≥ 50%");
        // Probes granted but never reported are replaced after a further wait.
        assert_eq!(b.acquire(&p, 3002), Permit::Granted);
        assert_eq!(b.acquire(&p, 3002), Permit::Granted);
        assert!(matches!(b.acquire(&p, 3003), Permit::Denied(_)));
        assert_eq!(b.acquire(&p, 4003), Permit::Granted);
    }

    #[test]
    fn slow_calls_open_it_too() {
        let p = policy();
        let mut b = Local::default();
        for t in 0..4 {
            b.record(&p, p.outcome(false, Duration::from_millis(1500)), t);
        }
        assert_eq!(b.state(), BreakerState::Open);
    }

    #[test]
    fn policies_are_checked() {
        assert!(BreakerPolicy::default().validate().is_ok());
        let bad = BreakerPolicy {
            minimum_calls: 30,
            ..BreakerPolicy::default()
        };
        assert!(bad.validate().unwrap_err().contains("minimum_calls"));
    }

    #[test]
    fn waits_and_thresholds_are_bounded() {
        let p = BreakerPolicy {
            open_wait_ms: u64::MAX,
            ..BreakerPolicy::default()
        };
        assert!(p.validate().unwrap_err().contains("open_wait_ms"));
        let p = BreakerPolicy {
            slow_call_ms: u64::MAX,
            ..BreakerPolicy::default()
        };
        assert!(p.validate().unwrap_err().contains("slow_call_ms"));
        // Probes are counted against the failure rate in u32: bounded, so never overflow.
        let p = BreakerPolicy {
            half_open_probes: u32::MAX,
            ..BreakerPolicy::default()
        };
        assert!(p.validate().unwrap_err().contains("half_open_probes"));
    }
}
