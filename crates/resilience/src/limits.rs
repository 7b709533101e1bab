//! Rate limits per provider account: GCRA (the generic cell rate algorithm), one Lua script
//! for the fleet and the same arithmetic in process as the fallback.
//!
//! A limit `{limit: 500, per: minute, burst: 1}` lets at most 500 calls through in any
//! minute-long window; `burst` of them may go at once. The emission interval is
//! `per / (limit − burst + 1)` and the tolerance `(burst − 1) × interval`, which together
//! keep every window within `limit`. The price of a burst is a lower steady rate
//! (`limit − burst + 1` per window): a burst of 1 uses the whole limit.
use serde::{Deserialize, Serialize};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Per {
    Second,
    Minute,
    Hour,
    /// Daily quotas (Xero: 5,000 calls a day per organisation).
    Day,
}

impl Per {
    pub fn millis(self) -> u64 {
        match self {
            Per::Second => 1_000,
            Per::Minute => 60_000,
            Per::Hour => 3_600_000,
            Per::Day => 86_400_000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    pub limit: u32,
    pub per: Per,
    #[serde(default = "one")]
    pub burst: u32,
}

fn one() -> u32 {
    1
}

impl RateLimit {
    pub fn validate(&self) -> Result<(), String> {
        if self.limit == 0 {
            return Err("rate_limit.limit must be at least 1".into());
        }
        if self.burst == 0 || self.burst > self.limit {
            return Err("rate_limit.burst must be between 1 and rate_limit.limit".into());
        }
        Ok(())
    }

    /// Emission interval and tolerance, in microseconds.
    pub fn gcra(&self) -> (u64, u64) {
        let interval = self.per.millis() * 1000 / u64::from(self.limit - self.burst + 1);
        (interval, interval * u64::from(self.burst - 1))
    }
}

/// In-process GCRA over several limits: all must allow, then all advance.
#[derive(Debug, Clone, Default)]
pub struct LocalLimiter {
    /// Theoretical arrival time per limit, microseconds.
    tat: Vec<u64>,
}

impl LocalLimiter {
    /// `Ok` to go now, or how long to wait. `now` in microseconds on a monotonic clock.
    pub fn acquire(&mut self, limits: &[RateLimit], now: u64) -> Result<(), Duration> {
        if self.tat.len() != limits.len() {
            self.tat = vec![0; limits.len()];
        }
        let mut wait = 0u64;
        let mut next = Vec::with_capacity(limits.len());
        for (l, tat) in limits.iter().zip(&self.tat) {
            let (interval, tolerance) = l.gcra();
            let tat = (*tat).max(now);
            let allow_at = tat.saturating_sub(tolerance);
            if now < allow_at {
                wait = wait.max(allow_at - now);
            }
            next.push(tat + interval);
        }
        if wait > 0 {
            return Err(Duration::from_micros(wait));
        }
        self.tat = next;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_more_than_the_limit_in_any_window() {
        let limits = [RateLimit {
            limit: 5,
            per: Per::Second,
            burst: 2,
        }];
        let mut l = LocalLimiter::default();
        let mut granted = Vec::new();
        let mut now = 0u64;
        while now < 3_000_000 {
            match l.acquire(&limits, now) {
                Ok(()) => granted.push(now),
                Err(wait) => now += wait.as_micros() as u64,
            }
        }
        for (i, t) in granted.iter().enumerate() {
            let in_window = granted[i..]
                .iter()
                .take_while(|u| **u < t + 1_000_000)
                .count();
            assert!(in_window <= 5, "{in_window} calls in the second from {t}");
        }
        // 2 at once, then the steady rate of limit − burst + 1 = 4 a second.
        assert_eq!(granted.len(), 13, "the limit is used, not starved");
        assert_eq!(granted[0], granted[1], "a burst of 2 goes at once");
    }

    #[test]
    fn every_limit_must_allow() {
        let limits = [
            RateLimit {
                limit: 10,
                per: Per::Second,
                burst: 10,
            },
            RateLimit {
                limit: 3,
                per: Per::Minute,
                burst: 3,
            },
        ];
        let mut l = LocalLimiter::default();
        for _ in 0..3 {
            assert!(l.acquire(&limits, 0).is_ok());
        }
        let wait = l.acquire(&limits, 0).unwrap_err();
        assert!(
            wait > Duration::from_secs(10),
            "the per-minute limit holds: {wait:?}"
        );
    }

    #[test]
    fn settings() {
        let l: RateLimit = serde_json::from_str(r#"{"limit": 500, "per": "minute"}"#).unwrap();
        assert_eq!(l.burst, 1);
        assert_eq!(l.gcra(), (120_000, 0));
        assert!(
            RateLimit {
                limit: 2,
                per: Per::Hour,
                burst: 3
            }
            .validate()
            .is_err()
        );
    }
}
