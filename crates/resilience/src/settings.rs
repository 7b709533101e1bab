//! The sections of an integration's settings every provider shares (`retry`, `breaker`,
//! `rate_limit`), read over the fleet's defaults. Errors name the setting.
use crate::{BreakerPolicy, RateLimit, RetryPolicy};

/// The integration's `retry` settings over `default`.
pub fn retry(default: &RetryPolicy, settings: &serde_json::Value) -> Result<RetryPolicy, String> {
    let policy: RetryPolicy = overlay(default, settings, "retry")?;
    policy.validate()?;
    Ok(policy)
}

/// The most calls an integration may ask its breaker to see before it judges: with more,
/// a hanging provider would hold the fleet's workers for that many timeouts first.
pub const MAX_BREAKER_MINIMUM_CALLS: u32 = 100;

/// The integration's `breaker` settings over `default`. The fleet's breaker is a floor: an
/// integration may tune it but not turn it off, nor make it blind for long.
pub fn breaker(
    default: &BreakerPolicy,
    settings: &serde_json::Value,
) -> Result<BreakerPolicy, String> {
    let policy: BreakerPolicy = overlay(default, settings, "breaker")?;
    policy.validate()?;
    if default.enabled && !policy.enabled {
        return Err(
            "breaker.enabled: the circuit breaker cannot be turned off for one \
             integration; it keeps a failing provider from holding the workers every tenant \
             shares (tune breaker.failure_rate_pct or breaker.open_wait_ms instead)"
                .into(),
        );
    }
    if policy.minimum_calls > MAX_BREAKER_MINIMUM_CALLS
        && policy.minimum_calls > default.minimum_calls
    {
        return Err(format!(
            "breaker.minimum_calls must be at most {MAX_BREAKER_MINIMUM_CALLS}"
        ));
    }
    Ok(policy)
}

/// `settings[section]`'s fields over `default`'s.
fn overlay<T: serde::Serialize + serde::de::DeserializeOwned + Clone>(
    default: &T,
    settings: &serde_json::Value,
    section: &str,
) -> Result<T, String> {
    let Some(overrides) = settings.get(section) else {
        return Ok(default.clone());
    };
    let mut merged = serde_json::to_value(default).expect("a policy serialises");
    match (merged.as_object_mut(), overrides.as_object()) {
        (Some(base), Some(over)) => {
            for (k, v) in over {
                base.insert(k.clone(), v.clone());
            }
        }
        _ => return Err(format!("settings.{section} must be an object")),
    }
    serde_json::from_value(merged).map_err(|e| format!("settings.{section}: {e}"))
}

/// `settings.rate_limit`: one limit or a list (e.g. per minute and per hour).
pub fn rate_limits(settings: &serde_json::Value) -> Result<Vec<RateLimit>, String> {
    let limits: Vec<RateLimit> = match settings.get("rate_limit") {
        None => return Ok(Vec::new()),
        Some(v @ serde_json::Value::Array(_)) => serde_json::from_value(v.clone()),
        Some(v) => serde_json::from_value(v.clone()).map(|l| vec![l]),
    }
    .map_err(|e| format!("settings.rate_limit: {e}"))?;
    for l in &limits {
        l.validate()?;
    }
    Ok(limits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_settings_override_the_defaults() {
        let d = RetryPolicy::default();
        let p = retry(&d, &serde_json::json!({"retry": {"max_attempts": 3}})).unwrap();
        assert_eq!(p.max_attempts, 3);
        assert_eq!(p.initial_delay_ms, d.initial_delay_ms);
        assert_eq!(retry(&d, &serde_json::json!({})).unwrap(), d);
        let err = retry(&d, &serde_json::json!({"retry": {"factor": 0}})).unwrap_err();
        assert!(err.contains("retry.factor"), "{err}");
    }

    #[test]
    fn an_integration_cannot_turn_the_fleets_breaker_off() {
        let d = BreakerPolicy::default();
        let err = breaker(&d, &serde_json::json!({"breaker": {"enabled": false}})).unwrap_err();
        assert!(err.starts_with("breaker.enabled"), "{err}");
        let err = breaker(
            &d,
            &serde_json::json!({"breaker": {"window": 1000, "minimum_calls": 1000}}),
        )
        .unwrap_err();
        assert!(err.starts_with("breaker.minimum_calls"), "{err}");
        // Tuning is fine.
        let p = breaker(
            &d,
            &serde_json::json!({"breaker": {"failure_rate_pct": 90}}),
        )
        .unwrap();
        assert_eq!(p.failure_rate_pct, 90);
        // An operator who turned it off for the fleet turned it off.
        let off = BreakerPolicy {
            enabled: false,
            ..d
        };
        assert!(!breaker(&off, &serde_json::json!({})).unwrap().enabled);
    }

    #[test]
    fn rate_limits_are_one_or_many() {
        use serde_json::json;
        assert!(rate_limits(&json!({})).unwrap().is_empty());
        let one = rate_limits(&json!({"rate_limit": {"limit": 500, "per": "minute"}})).unwrap();
        assert_eq!(one.len(), 1);
        let two = rate_limits(&json!({"rate_limit": [
            {"limit": 60, "per": "minute"}, {"limit": 1000, "per": "hour"}]}))
        .unwrap();
        assert_eq!(two.len(), 2);
        // Xero: 60 a minute and 5,000 a day.
        let xero = rate_limits(&json!({"rate_limit": [{"limit": 60, "per": "minute"},
            {"limit": 5000, "per": "day"}]}))
        .unwrap();
        assert_eq!(xero[1].gcra().0, 86_400_000_000 / 5000);
        let err = rate_limits(&json!({"rate_limit": {"limit": 5, "per": "week"}})).unwrap_err();
        assert!(err.starts_with("settings.rate_limit"), "{err}");
    }
}
