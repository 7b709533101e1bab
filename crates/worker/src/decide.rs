//! What becomes of a job that cannot finish now: a pure function of why (the provider's
//! failure, or something the job waits for), the integration's retry policy, the attempts
//! made and the job's age. The worker records and settles what it returns; the tests below
//! cover every class and edge.
use std::time::Duration;
use switchyard_core::{DeadReason, ErrorClass};
use switchyard_resilience::{RetryDecision, RetryPolicy};

/// The longest a job is ever put off in one step, whatever a provider or a policy asks.
pub(crate) const MAX_DELAY: Duration = Duration::from_secs(86_400);

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Verdict {
    /// Try again after `delay` without spending an attempt (the provider said when to come
    /// back, or the job waits for something it needs).
    Defer { delay: Duration },
    /// Try again after `delay`; this attempt counts.
    Retry { delay: Duration },
    /// Send it to the dead letters.
    Dead { reason: DeadReason, message: String },
    /// Keep it until the integration is connected again.
    Hold,
}

/// A failed provider call, as the decision needs it.
#[derive(Debug, Clone)]
pub(crate) struct Failure<'a> {
    pub class: ErrorClass,
    pub message: &'a str,
    /// The provider's `Retry-After`.
    pub retry_after: Option<Duration>,
    /// The provider refused the integration's authorisation for good (a revoked consent).
    pub reauthorize: bool,
}

/// After call number `attempt` (1-based) failed, with the job `age` old (since it was
/// received, or replayed).
pub(crate) fn after_failure(
    f: &Failure<'_>,
    policy: &RetryPolicy,
    attempt: u32,
    age: Duration,
) -> Verdict {
    if f.reauthorize {
        return Verdict::Hold;
    }
    let retry_after = f.retry_after.map(|d| d.min(MAX_DELAY));
    let max_age = Duration::from_secs(policy.max_age_secs);
    // A provider that says when to come back is deferred, not failed: but not past the
    // job's age limit.
    if f.class == ErrorClass::Throttled
        && let Some(delay) = retry_after
    {
        if age.saturating_add(delay) > max_age {
            return Verdict::Dead {
                reason: DeadReason::Exhausted,
                message: format!(
                    "gave up: the provider asked to wait {}s more, past the job's age limit of {}s: {}",
                    delay.as_secs(),
                    policy.max_age_secs,
                    f.message
                ),
            };
        }
        return Verdict::Defer { delay };
    }
    if !f.class.is_retryable() {
        return Verdict::Dead {
            reason: DeadReason::for_class(f.class),
            message: f.message.to_owned(),
        };
    }
    match policy.decide(attempt, age, retry_after) {
        RetryDecision::RetryAfter(delay) => Verdict::Retry {
            delay: delay.min(MAX_DELAY),
        },
        RetryDecision::GiveUp => Verdict::Dead {
            reason: DeadReason::Exhausted,
            message: format!(
                "gave up after {attempt} attempt(s) over {}s: {}",
                age.as_secs(),
                f.message
            ),
        },
    }
}

/// A job that waits for something it cannot do without (a reference not yet at the target,
/// credentials this worker cannot open), `attempts` calls made so far: it waits without
/// spending an attempt for as long as the policy allows. `None`: it has waited long enough.
pub(crate) fn wait(policy: &RetryPolicy, attempts: u32, age: Duration) -> Option<Duration> {
    match policy.decide(attempts.saturating_add(1), age, None) {
        RetryDecision::RetryAfter(delay) => Some(delay.min(MAX_DELAY)),
        RetryDecision::GiveUp => None,
    }
}

/// Database errors in a row (neither bad data nor an outage) after which a job is
/// dead-lettered rather than tried again.
pub(crate) const MAX_STORE_FAILURES: u32 = 10;

/// The database refused to record a job for the `failures`-th time in a row (1-based):
/// try again after a growing delay (5 s, doubling, at most 5 minutes), or, past
/// [`MAX_STORE_FAILURES`], give up (`None`).
pub(crate) fn after_store_failure(failures: u32) -> Option<Duration> {
    if failures >= MAX_STORE_FAILURES {
        return None;
    }
    let doubled = 5u64.saturating_mul(1u64 << failures.saturating_sub(1).min(20));
    Some(Duration::from_secs(doubled.min(300)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_resilience::Jitter;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            initial_delay_ms: 100,
            factor: 2.0,
            max_delay_ms: 1_000,
            max_attempts: 4,
            max_age_secs: 60,
            jitter: Jitter::None,
        }
    }

    fn failure(class: ErrorClass) -> Failure<'static> {
        Failure {
            class,
            message: "provider said no",
            retry_after: None,
            reauthorize: false,
        }
    }

    const YOUNG: Duration = Duration::from_secs(1);

    #[test]
    fn transient_failures_retry_on_the_schedule_until_attempts_run_out() {
        let f = failure(ErrorClass::Transient);
        assert_eq!(
            after_failure(&f, &policy(), 1, YOUNG),
            Verdict::Retry {
                delay: Duration::from_millis(100)
            }
        );
        match after_failure(&f, &policy(), 3, YOUNG) {
            // backon's factor is a float: whole milliseconds are what count.
            Verdict::Retry { delay } => assert_eq!(delay.as_millis(), 400),
            v => panic!("{v:?}"),
        }
        match after_failure(&f, &policy(), 4, YOUNG) {
            Verdict::Dead { reason, message } => {
                assert_eq!(reason, DeadReason::Exhausted);
                assert!(
                    message.starts_with("gave up after 4 attempt(s)"),
                    "{message}"
                );
                assert!(message.ends_with("provider said no"), "{message}");
            }
            v => panic!("{v:?}"),
        }
    }

    #[test]
    fn an_old_job_is_not_retried_past_its_age_limit() {
        let f = failure(ErrorClass::Transient);
        let v = after_failure(&f, &policy(), 1, Duration::from_secs(60));
        assert!(
            matches!(
                v,
                Verdict::Dead {
                    reason: DeadReason::Exhausted,
                    ..
                }
            ),
            "{v:?}"
        );
    }

    #[test]
    fn permanent_auth_and_malformed_failures_die_at_once_with_their_reason() {
        for (class, reason) in [
            (ErrorClass::Permanent, DeadReason::Rejected),
            (ErrorClass::Auth, DeadReason::Auth),
            (ErrorClass::Malformed, DeadReason::Malformed),
        ] {
            assert_eq!(
                after_failure(&failure(class), &policy(), 1, YOUNG),
                Verdict::Dead {
                    reason,
                    message: "provider said no".into()
                },
                "{class}"
            );
        }
    }

    #[test]
    fn a_revoked_consent_holds_the_job() {
        let f = Failure {
            reauthorize: true,
            ..failure(ErrorClass::Auth)
        };
        assert_eq!(after_failure(&f, &policy(), 1, YOUNG), Verdict::Hold);
    }

    #[test]
    fn retry_after_defers_without_an_attempt_even_past_max_attempts() {
        let f = Failure {
            retry_after: Some(Duration::from_secs(7)),
            ..failure(ErrorClass::Throttled)
        };
        assert_eq!(
            after_failure(&f, &policy(), 99, YOUNG),
            Verdict::Defer {
                delay: Duration::from_secs(7)
            }
        );
        // A throttle without a time is retried like any transient failure.
        assert_eq!(
            after_failure(&failure(ErrorClass::Throttled), &policy(), 1, YOUNG),
            Verdict::Retry {
                delay: Duration::from_millis(100)
            }
        );
    }

    #[test]
    fn an_absurd_retry_after_is_bounded_and_never_outlives_the_job() {
        let f = Failure {
            retry_after: Some(Duration::from_secs(10_000_000_000_000)),
            ..failure(ErrorClass::Throttled)
        };
        let lenient = RetryPolicy {
            max_age_secs: u64::MAX,
            ..policy()
        };
        assert_eq!(
            after_failure(&f, &lenient, 1, Duration::MAX),
            Verdict::Dead {
                reason: DeadReason::Exhausted,
                message: format!(
                    "gave up: the provider asked to wait 86400s more, past the job's age limit of {}s: provider said no",
                    u64::MAX
                )
            }
        );
        assert_eq!(
            after_failure(&f, &lenient, 1, YOUNG),
            Verdict::Defer { delay: MAX_DELAY }
        );
        // Past the age limit: dead, not deferred for ever.
        let v = after_failure(&f, &policy(), 1, YOUNG);
        assert!(
            matches!(
                v,
                Verdict::Dead {
                    reason: DeadReason::Exhausted,
                    ..
                }
            ),
            "{v:?}"
        );
        // A transient failure's Retry-After is bounded too.
        let t = Failure {
            retry_after: Some(Duration::from_secs(10_000_000)),
            ..failure(ErrorClass::Transient)
        };
        let v = after_failure(&t, &lenient, 1, YOUNG);
        assert_eq!(v, Verdict::Retry { delay: MAX_DELAY });
    }

    #[test]
    fn a_waiting_job_waits_without_attempts_until_its_age_limit() {
        assert_eq!(wait(&policy(), 0, YOUNG), Some(Duration::from_millis(100)));
        assert_eq!(wait(&policy(), 0, Duration::from_secs(61)), None);
        // Attempts made count toward max_attempts; the count never overflows.
        assert_eq!(wait(&policy(), u32::MAX, YOUNG), None);
    }

    #[test]
    fn database_refusals_are_retried_a_bounded_number_of_times() {
        assert_eq!(after_store_failure(1), Some(Duration::from_secs(5)));
        assert_eq!(after_store_failure(2), Some(Duration::from_secs(10)));
        assert_eq!(after_store_failure(8), Some(Duration::from_secs(300)));
        assert_eq!(after_store_failure(MAX_STORE_FAILURES), None);
        assert_eq!(after_store_failure(u32::MAX), None);
    }
}
