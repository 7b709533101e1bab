//! When an integration syncs on its own: never (`manual`), hourly, daily, weekly, or on a cron
//! expression, in a time zone. Every kind becomes a cron schedule (the `cron` crate) so that
//! the next slot is computed in one place, daylight saving time included.
//!
//! ```json
//! {"every": "hourly", "minute": 15}
//! {"every": "daily", "at": "02:30", "timezone": "Europe/Lisbon"}
//! {"every": "weekly", "day": "mon", "at": "06:00", "timezone": "America/New_York"}
//! {"every": "cron", "cron": "*/15 8-18 * * mon-fri", "timezone": "Europe/Paris"}
//! {"every": "manual"}
//! ```
//! Options on every kind: `entities` (sync these only; default: all the integration's), and
//! `disable_after_failures` (move the integration to `error` after this many failed syncs in
//! a row; default 5, 0 never).
use chrono::{DateTime, NaiveTime, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use std::str::FromStr;

/// Failed syncs in a row after which an integration is moved to `error`, by default.
pub const DEFAULT_DISABLE_AFTER_FAILURES: u32 = 5;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Schedule {
    pub every: Every,
    /// hourly: the minute past the hour (0–59).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub minute: Option<u32>,
    /// daily and weekly: the local time, `HH:MM`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<String>,
    /// weekly: `mon` … `sun`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub day: Option<String>,
    /// cron: five fields (minute hour day-of-month month day-of-week) or six with seconds first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cron: Option<String>,
    /// An IANA time zone name; default UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entities: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disable_after_failures: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Every {
    Manual,
    Hourly,
    Daily,
    Weekly,
    Cron,
}

/// A schedule that cannot work, with the field at fault (`schedule.at`, …).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct ScheduleError {
    pub field: String,
    pub reason: String,
}

fn err(field: &str, reason: impl Into<String>) -> ScheduleError {
    ScheduleError {
        field: format!("schedule.{field}"),
        reason: reason.into(),
    }
}

/// A checked schedule, ready to compute slots.
#[derive(Debug, Clone)]
pub struct Compiled {
    cron: Option<cron::Schedule>,
    tz: Tz,
}

impl Schedule {
    /// Read and check a schedule as stored in `integrations.schedule`.
    pub fn from_json(value: &serde_json::Value) -> Result<Schedule, ScheduleError> {
        let s: Schedule = serde_json::from_value(value.clone()).map_err(|e| ScheduleError {
            field: "schedule".into(),
            reason: e.to_string(),
        })?;
        s.compile()?;
        Ok(s)
    }

    pub fn disable_after_failures(&self) -> u32 {
        self.disable_after_failures
            .unwrap_or(DEFAULT_DISABLE_AFTER_FAILURES)
    }

    /// Check every field and build the cron schedule.
    pub fn compile(&self) -> Result<Compiled, ScheduleError> {
        let tz = match &self.timezone {
            None => Tz::UTC,
            Some(name) => Tz::from_str(name).map_err(|_| {
                err(
                    "timezone",
                    format!("`{name}` is not an IANA time zone name (e.g. Europe/Lisbon, UTC)"),
                )
            })?,
        };
        if self.disable_after_failures.is_some_and(|n| n > 1000) {
            return Err(err(
                "disable_after_failures",
                "at most 1000 (0 never disables)",
            ));
        }
        if let Some(entities) = &self.entities {
            if entities.is_empty() {
                return Err(err("entities", "names no entity; leave it out to sync all"));
            }
            if let Some(bad) = entities.iter().find(|e| !crate::is_valid_name(e)) {
                return Err(err(
                    "entities",
                    format!("`{bad}` is not an entity name (a-z, 0-9, _ or -)"),
                ));
            }
        }
        let unexpected = |field: &str, value: bool| {
            if value {
                Err(err(
                    field,
                    format!("does not apply to `every: {}`", self.every.as_str()),
                ))
            } else {
                Ok(())
            }
        };
        let expr = match self.every {
            Every::Manual => {
                unexpected("minute", self.minute.is_some())?;
                unexpected("at", self.at.is_some())?;
                unexpected("day", self.day.is_some())?;
                unexpected("cron", self.cron.is_some())?;
                None
            }
            Every::Hourly => {
                unexpected("at", self.at.is_some())?;
                unexpected("day", self.day.is_some())?;
                unexpected("cron", self.cron.is_some())?;
                let m = self.minute.unwrap_or(0);
                if m > 59 {
                    return Err(err("minute", "must be between 0 and 59"));
                }
                Some(format!("0 {m} * * * *"))
            }
            Every::Daily | Every::Weekly => {
                unexpected("minute", self.minute.is_some())?;
                unexpected("cron", self.cron.is_some())?;
                let at = self.at.as_deref().unwrap_or("00:00");
                let t = NaiveTime::parse_from_str(at, "%H:%M")
                    .map_err(|_| err("at", format!("`{at}` is not a time as HH:MM (24-hour)")))?;
                let (h, m) = (chrono::Timelike::hour(&t), chrono::Timelike::minute(&t));
                if self.every == Every::Daily {
                    unexpected("day", self.day.is_some())?;
                    Some(format!("0 {m} {h} * * *"))
                } else {
                    let day = self.day.as_deref().unwrap_or("mon").to_ascii_lowercase();
                    const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
                    if !DAYS.contains(&day.as_str()) {
                        return Err(err(
                            "day",
                            format!("`{day}` is not one of {}", DAYS.join(", ")),
                        ));
                    }
                    Some(format!("0 {m} {h} * * {day}"))
                }
            }
            Every::Cron => {
                unexpected("minute", self.minute.is_some())?;
                unexpected("at", self.at.is_some())?;
                unexpected("day", self.day.is_some())?;
                let c = self
                    .cron
                    .as_deref()
                    .ok_or_else(|| err("cron", "is required with `every: cron`"))?;
                match c.split_whitespace().count() {
                    5 => Some(format!("0 {c}")),
                    6 => Some(c.to_owned()),
                    n => {
                        return Err(err(
                            "cron",
                            format!(
                                "has {n} fields; expected 5 (minute hour day month weekday) or 6 (seconds first)"
                            ),
                        ));
                    }
                }
            }
        };
        let cron = match expr {
            None => None,
            Some(e) => Some(cron::Schedule::from_str(&e).map_err(|x| {
                err(
                    "cron",
                    format!(
                        "`{}` is not a valid cron expression: {x}",
                        self.cron.as_deref().unwrap_or(&e)
                    ),
                )
            })?),
        };
        // A sync reads whole feeds: more than once a minute is a mistake (or a load test on
        // someone else's API). Checked over the next slots from a fixed day.
        if let Some(c) = &cron {
            let from = DateTime::<Utc>::from_timestamp(1_767_225_600, 0)
                .unwrap_or_default()
                .with_timezone(&tz);
            let slots: Vec<_> = c.after(&from).take(64).collect();
            if slots.windows(2).any(|w| (w[1] - w[0]).num_seconds() < 60) {
                return Err(err(
                    "cron",
                    "runs more than once a minute; a schedule may run at most once a minute",
                ));
            }
        }
        Ok(Compiled { cron, tz })
    }
}

impl Every {
    pub fn as_str(self) -> &'static str {
        match self {
            Every::Manual => "manual",
            Every::Hourly => "hourly",
            Every::Daily => "daily",
            Every::Weekly => "weekly",
            Every::Cron => "cron",
        }
    }
}

impl Compiled {
    /// The first slot strictly after `t`, or `None` for a manual schedule (or a cron
    /// expression with no future slot).
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let cron = self.cron.as_ref()?;
        cron.after(&t.with_timezone(&self.tz))
            .next()
            .map(|d| d.with_timezone(&Utc))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn next(v: &serde_json::Value, t: &str) -> Option<DateTime<Utc>> {
        Schedule::from_json(v)
            .unwrap()
            .compile()
            .unwrap()
            .next_after(at(t))
    }

    #[test]
    fn every_kind_computes_its_next_slot() {
        assert_eq!(
            next(&json!({"every": "hourly"}), "2026-11-24T10:00:00Z"),
            Some(at("2026-11-24T11:00:00Z")),
            "strictly after: a slot at t is not the next one"
        );
        assert_eq!(
            next(
                &json!({"every": "hourly", "minute": 15}),
                "2026-11-24T10:20:00Z"
            ),
            Some(at("2026-11-24T11:15:00Z"))
        );
        assert_eq!(
            next(
                &json!({"every": "daily", "at": "02:30", "timezone": "Europe/Lisbon"}),
                "2026-07-01T12:00:00Z"
            ),
            Some(at("2026-07-02T01:30:00Z")),
            "Lisbon is UTC+1 in summer"
        );
        assert_eq!(
            next(
                &json!({"every": "weekly", "day": "mon", "at": "06:00"}),
                "2026-11-24T10:00:00Z"
            ),
            Some(at("2026-11-30T06:00:00Z"))
        );
        assert_eq!(
            next(
                &json!({"every": "cron", "cron": "*/15 8-18 * * mon-fri", "timezone": "America/New_York"}),
                "2026-11-28T12:00:00Z"
            ),
            Some(at("2026-11-30T13:00:00Z")),
            "Saturday noon UTC → Monday 08:00 in New York (UTC-5)"
        );
        assert_eq!(
            next(&json!({"every": "manual"}), "2026-11-24T10:00:00Z"),
            None
        );
    }

    #[test]
    fn errors_name_the_field() {
        let e = |v: serde_json::Value| Schedule::from_json(&v).unwrap_err();
        assert_eq!(
            e(json!({"every": "daily", "at": "25:00"})).field,
            "schedule.at"
        );
        assert_eq!(
            e(json!({"every": "daily", "timezone": "Mars/Olympus"})).field,
            "schedule.timezone"
        );
        assert_eq!(e(json!({"every": "cron"})).field, "schedule.cron");
        assert_eq!(
            e(json!({"every": "cron", "cron": "* * *"})).field,
            "schedule.cron"
        );
        assert_eq!(
            e(json!({"every": "cron", "cron": "99 * * * *"})).field,
            "schedule.cron"
        );
        assert_eq!(
            e(json!({"every": "hourly", "minute": 60})).field,
            "schedule.minute"
        );
        assert_eq!(
            e(json!({"every": "hourly", "at": "02:00"})).field,
            "schedule.at"
        );
        assert_eq!(
            e(json!({"every": "weekly", "day": "someday"})).field,
            "schedule.day"
        );
        assert_eq!(
            e(json!({"every": "hourly", "entities": ["Bad Name"]})).field,
            "schedule.entities"
        );
        assert_eq!(e(json!({"every": "fortnightly"})).field, "schedule");
    }

    #[test]
    fn disable_after_failures_is_bounded() {
        let e = Schedule::from_json(&serde_json::json!(
            {"every": "hourly", "disable_after_failures": 4_000_000_000u64}))
        .unwrap_err();
        assert_eq!(e.field, "schedule.disable_after_failures");
        assert!(
            Schedule::from_json(&serde_json::json!(
            {"every": "hourly", "disable_after_failures": 1000}))
            .is_ok()
        );
    }
}

#[cfg(test)]
mod bounds {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_schedule_runs_at_most_once_a_minute() {
        for c in ["* * * * * *", "*/10 * * * * *", "0,30 * * * * *"] {
            let e = Schedule::from_json(&json!({"every": "cron", "cron": c})).unwrap_err();
            assert_eq!(e.field, "schedule.cron", "{c}");
            assert!(e.reason.contains("once a minute"), "{c}: {}", e.reason);
        }
        for c in ["* * * * *", "0 * * * * *", "*/15 8-18 * * mon-fri"] {
            Schedule::from_json(&json!({"every": "cron", "cron": c})).unwrap();
        }
    }
}
