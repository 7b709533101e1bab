//! Retry schedules: exponential growth from backon, with full jitter
//! (`delay = random(0, min(max_delay, initial × factor^(n-1)))`, the AWS "full jitter"
//! scheme, which spreads a fleet's retries instead of synchronising them).
use backon::{BackoffBuilder, ExponentialBuilder};
use rand::Rng;
use serde::{Deserialize, Serialize};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Jitter {
    /// Uniform in `[0, delay]`.
    #[default]
    Full,
    /// Exactly the exponential delay (useful to reason about, and in tests).
    None,
}

/// How a provider's failed jobs are retried. Every field has a default suited to a provider
/// API; an integration overrides any of them in its settings under `retry`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RetryPolicy {
    /// Delay before the second attempt, in milliseconds.
    pub initial_delay_ms: u64,
    pub factor: f32,
    /// No delay exceeds this, in milliseconds.
    pub max_delay_ms: u64,
    /// Provider calls in all, the first included.
    pub max_attempts: u32,
    /// A job older than this (since ingest received it), in seconds, is not retried again.
    pub max_age_secs: u64,
    pub jitter: Jitter,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            initial_delay_ms: 1_000,
            factor: 2.0,
            max_delay_ms: 300_000,
            max_attempts: 8,
            max_age_secs: 24 * 3600,
            jitter: Jitter::Full,
        }
    }
}

/// What to do after a retryable failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryDecision {
    RetryAfter(Duration),
    /// Attempts or age ran out.
    GiveUp,
}

impl RetryPolicy {
    /// Check the values once, when configured. Errors name the field.
    pub fn validate(&self) -> Result<(), String> {
        if self.initial_delay_ms == 0 {
            return Err("retry.initial_delay_ms must be at least 1".into());
        }
        if !(self.factor >= 1.0 && self.factor <= 10.0) {
            return Err("retry.factor must be between 1 and 10".into());
        }
        if self.max_delay_ms < self.initial_delay_ms {
            return Err("retry.max_delay_ms must be at least retry.initial_delay_ms".into());
        }
        if self.max_attempts == 0 || self.max_attempts > 100 {
            return Err("retry.max_attempts must be between 1 and 100".into());
        }
        Ok(())
    }

    /// The capped exponential delay after failed attempt number `attempt` (1-based),
    /// before jitter.
    pub fn base_delay(&self, attempt: u32) -> Duration {
        let mut schedule = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(self.initial_delay_ms))
            .with_max_delay(Duration::from_millis(self.max_delay_ms))
            .with_factor(self.factor)
            .without_max_times()
            .build();
        let n = attempt.max(1) as usize;
        schedule
            .nth(n - 1)
            .unwrap_or(Duration::from_millis(self.max_delay_ms))
    }

    /// After failed attempt number `attempt` (1-based) of a job received `age` ago: retry
    /// when, or give up. The provider's `Retry-After`, when given, replaces the computed
    /// delay.
    pub fn decide(
        &self,
        attempt: u32,
        age: Duration,
        retry_after: Option<Duration>,
    ) -> RetryDecision {
        if attempt >= self.max_attempts {
            return RetryDecision::GiveUp;
        }
        let delay = match retry_after {
            Some(d) => d,
            None => {
                let base = self.base_delay(attempt);
                match self.jitter {
                    Jitter::None => base,
                    Jitter::Full => {
                        let ms = base.as_millis() as u64;
                        Duration::from_millis(rand::rng().random_range(0..=ms))
                    }
                }
            }
        };
        if age.saturating_add(delay) > Duration::from_secs(self.max_age_secs) {
            return RetryDecision::GiveUp;
        }
        RetryDecision::RetryAfter(delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            initial_delay_ms: 100,
            factor: 2.0,
            max_delay_ms: 1_000,
            max_attempts: 6,
            max_age_secs: 60,
            jitter: Jitter::None,
        }
    }

    #[test]
    fn grows_exponentially_up_to_the_cap() {
        let p = policy();
        let ms: Vec<u128> = (1..=6).map(|n| p.base_delay(n).as_millis()).collect();
        assert_eq!(ms, vec![100, 200, 400, 800, 1000, 1000]);
    }

    #[test]
    fn gives_up_on_attempts_or_age_and_honours_retry_after() {
        let p = policy();
        assert_eq!(
            p.decide(1, Duration::ZERO, None),
            RetryDecision::RetryAfter(Duration::from_millis(100))
        );
        assert_eq!(p.decide(6, Duration::ZERO, None), RetryDecision::GiveUp);
        assert_eq!(
            p.decide(2, Duration::from_secs(60), None),
            RetryDecision::GiveUp
        );
        assert_eq!(
            p.decide(1, Duration::ZERO, Some(Duration::from_secs(2))),
            RetryDecision::RetryAfter(Duration::from_secs(2))
        );
    }

    #[test]
    fn full_jitter_stays_within_the_delay() {
        let p = RetryPolicy {
            jitter: Jitter::Full,
            ..policy()
        };
        for _ in 0..200 {
            match p.decide(3, Duration::ZERO, None) {
                RetryDecision::RetryAfter(d) => assert!(d <= Duration::from_millis(400)),
                RetryDecision::GiveUp => panic!("should retry"),
            }
        }
    }

    #[test]
    fn settings_are_checked() {
        assert!(RetryPolicy::default().validate().is_ok());
        let bad = RetryPolicy {
            factor: 0.5,
            ..RetryPolicy::default()
        };
        assert!(bad.validate().unwrap_err().contains("retry.factor"));
        // Partial settings keep the other defaults; unknown ones are refused.
        let p: RetryPolicy = serde_json::from_str(r#"{"max_attempts": 3}"#).unwrap();
        assert_eq!(
            p,
            RetryPolicy {
                max_attempts: 3,
                ..RetryPolicy::default()
            }
        );
        let err = serde_json::from_str::<RetryPolicy>(r#"{"max_attempt": 3}"#).unwrap_err();
        assert!(err.to_string().contains("unknown field `max_attempt`"));
    }
}
