//! Statuses, actions and failure classes shared by every crate.

macro_rules! string_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, ::serde::Serialize, ::serde::Deserialize, ::utoipa::ToSchema)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($(#[$vmeta])* $variant),+ }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The stable text form, as stored in the database and shown to users.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.pad(self.as_str())
            }
        }

        impl TryFrom<String> for $name {
            type Error = $crate::model::UnknownValue;
            fn try_from(s: String) -> Result<Self, $crate::model::UnknownValue> {
                s.parse()
            }
        }

        impl ::std::str::FromStr for $name {
            type Err = $crate::model::UnknownValue;
            fn from_str(s: &str) -> Result<Self, $crate::model::UnknownValue> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err($crate::model::UnknownValue {
                        kind: stringify!($name),
                        value: s.to_owned(),
                        expected: &[$($text),+],
                    }),
                }
            }
        }
    };
}

/// A text value that is not one of an enumeration's values.
#[derive(Debug, Clone, thiserror::Error)]
#[error("`{value}` is not a valid {kind}; expected one of: {}", expected.join(", "))]
pub struct UnknownValue {
    pub kind: &'static str,
    pub value: String,
    pub expected: &'static [&'static str],
}

string_enum!(
    /// Lifecycle of an integration (seed 003/004 statuses).
    IntegrationStatus {
        Active => "active",
        Inactive => "inactive",
        Error => "error",
        Testing => "testing",
    }
);

string_enum!(
    /// Which way data flows for an integration.
    Direction {
        Export => "export",
        Import => "import",
        Bidirectional => "bidirectional",
    }
);

string_enum!(
    /// What a job does to the target entity.
    Action {
        /// Create the entity, or update it when it is already mapped.
        Upsert => "upsert",
        /// Delete the mapped entity; nothing to do when it is not mapped.
        Delete => "delete",
    }
);

string_enum!(
    /// Where a job stands. `succeeded`, `stale`, `ignored` and `dead` are final until an
    /// operator replays a dead job.
    JobStatus {
        Queued => "queued",
        Running => "running",
        Retrying => "retrying",
        Succeeded => "succeeded",
        Stale => "stale",
        Ignored => "ignored",
        /// Not sent, on purpose: its sync run was cancelled, a route filter or a `drop`
        /// route left it out, or a conflict policy let another system's change win.
        Skipped => "skipped",
        /// Its target is not active: kept, in order, until the target is activated.
        Held => "held",
        Dead => "dead",
    }
);

impl JobStatus {
    /// A job in one of these states has had its effect (or decided it needs none): a
    /// redelivery of it is a duplicate.
    pub fn is_settled(self) -> bool {
        matches!(
            self,
            JobStatus::Succeeded | JobStatus::Stale | JobStatus::Ignored | JobStatus::Skipped
        )
    }
}

string_enum!(
    /// How a provider call failed (DESIGN.md's failure classes).
    ErrorClass {
        /// Timeout, connection reset, 5xx: retry with backoff.
        Transient => "transient",
        /// 429 or our own rate limit: defer without spending an attempt.
        Throttled => "throttled",
        /// The provider account's circuit breaker is open: defer without spending an attempt.
        BreakerOpen => "breaker_open",
        /// Credentials rejected.
        Auth => "auth",
        /// The provider refused the request as it is (validation error, unknown entity).
        Permanent => "permanent",
        /// The message or its configuration cannot be processed at all.
        Malformed => "malformed",
    }
);

impl ErrorClass {
    /// Whether another attempt may succeed without anyone changing anything.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            ErrorClass::Transient | ErrorClass::Throttled | ErrorClass::BreakerOpen
        )
    }
}

string_enum!(
    /// Why a message ended in a dead-letter queue.
    DeadReason {
        /// Retryable failures until the attempts or the age ran out.
        Exhausted => "exhausted",
        /// The provider rejected the request (permanent failure).
        Rejected => "rejected",
        /// Credentials were refused.
        Auth => "auth",
        /// The message could not be parsed or its target is not usable.
        Malformed => "malformed",
    }
);

impl DeadReason {
    /// The dead-letter reason for a failure that will not be retried.
    pub fn for_class(class: ErrorClass) -> DeadReason {
        match class {
            ErrorClass::Auth => DeadReason::Auth,
            ErrorClass::Permanent => DeadReason::Rejected,
            ErrorClass::Malformed => DeadReason::Malformed,
            ErrorClass::Transient | ErrorClass::Throttled | ErrorClass::BreakerOpen => {
                DeadReason::Exhausted
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_forms_round_trip() {
        for s in JobStatus::ALL {
            assert_eq!(s.as_str().parse::<JobStatus>().unwrap(), *s);
        }
        for c in ErrorClass::ALL {
            assert_eq!(c.as_str().parse::<ErrorClass>().unwrap(), *c);
        }
    }

    #[test]
    fn unknown_value_names_the_choices() {
        let err = "paused".parse::<IntegrationStatus>().unwrap_err();
        assert_eq!(
            err.to_string(),
            "`paused` is not a valid IntegrationStatus; expected one of: active, inactive, error, testing"
        );
    }

    #[test]
    fn settled_statuses() {
        assert!(JobStatus::Succeeded.is_settled());
        assert!(!JobStatus::Dead.is_settled());
        assert!(!JobStatus::Retrying.is_settled());
    }
}
