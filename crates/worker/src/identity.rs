//! The two-way sync decisions, pure: is this event the echo of the hub's own write, and
//! when the target changed the record too, whose change wins.
use chrono::{DateTime, Utc};
use switchyard_core::{ConflictPolicy, Envelope};
use switchyard_store::{NewConflict, SourceLink, TargetLink};
use uuid::Uuid;

/// `Some(reason)` when an event from a system about a record, at `version`, is that
/// system's report of what the hub itself wrote there: the system reported the version of
/// the hub's write, and the event is not newer.
pub(crate) fn echo(version: Option<i64>, source: &SourceLink) -> Option<String> {
    let (v, written) = (version?, source.written_version?);
    (v <= written).then(|| {
        format!("echo of the hub's own write (version {v}, the hub's write was version {written}): not sent back")
    })
}

/// What to do with a job whose target has changed the record itself.
#[derive(Debug)]
pub(crate) enum Decision {
    /// No conflict: apply.
    Apply,
    /// The target's change wins: do not apply; record the conflict.
    Skip(NewConflict),
    /// This change wins over the target's: apply, and record the conflict.
    ApplyOver(NewConflict),
}

/// Decide by the route's policy. `env` is a change from `source` received at
/// `env.received_at`; `target.target_changed_at` is when the hub received the target's own
/// newest change to the record (none: no conflict).
pub(crate) fn conflict(env: &Envelope, source: Uuid, target: &TargetLink) -> Decision {
    let this = env.received_at;
    let Some(theirs) = target.target_changed_at else {
        return Decision::Apply;
    };
    let policy = env.route.conflict;
    let record =
        |winner: Uuid, loser: Uuid, winner_at: DateTime<Utc>, loser_at, why: String| NewConflict {
            policy: policy.as_str(),
            winner,
            loser,
            winner_changed_at: Some(winner_at),
            loser_changed_at: loser_at,
            message: why,
        };
    let t = env.integration_id;
    match policy {
        ConflictPolicy::LastWriterWins if theirs > this => Decision::Skip(record(
            t,
            source,
            theirs,
            this,
            format!(
                "conflict: the target changed this {} at {theirs} after this change ({this}); the later change wins (last_writer_wins)",
                env.entity
            ),
        )),
        ConflictPolicy::LastWriterWins => Decision::Apply,
        ConflictPolicy::SourceWins if theirs > this => Decision::ApplyOver(record(
            source,
            t,
            this,
            theirs,
            format!(
                "conflict: the target changed this {} at {theirs}, after this change ({this}); the route's source wins (source_wins)",
                env.entity
            ),
        )),
        ConflictPolicy::SourceWins => Decision::Apply,
        ConflictPolicy::TargetWins if target.written_at.is_none_or(|w| theirs > w) => {
            Decision::Skip(record(
                t,
                source,
                theirs,
                this,
                format!(
                    "conflict: the target changed this {} itself at {theirs} and the hub has not written it since; the route's target wins (target_wins)",
                    env.entity
                ),
            ))
        }
        ConflictPolicy::TargetWins => Decision::Apply,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_core::{Action, Direction, RouteOptions};

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap()
    }

    fn env(received: i64, policy: ConflictPolicy) -> Envelope {
        Envelope {
            v: 1,
            id: Uuid::from_u128(1),
            idempotency_key: "k".into(),
            tenant: "t".into(),
            integration_id: Uuid::from_u128(20),
            provider: "rest".into(),
            source_integration_id: Some(Uuid::from_u128(10)),
            event_id: "e".into(),
            event: "updated".into(),
            entity: "order".into(),
            action: Action::Upsert,
            direction: Direction::Export,
            internal_id: "1".into(),
            source_version: None,
            occurred_at: None,
            received_at: at(received),
            payload: serde_json::json!({}),
            sync_run_id: None,
            route: RouteOptions {
                conflict: policy,
                ..Default::default()
            },
            trace: None,
        }
    }

    fn target(changed: Option<i64>, written: Option<i64>) -> TargetLink {
        TargetLink {
            external_id: "x".into(),
            last_source_version: None,
            written_at: written.map(at),
            written_version: None,
            written_change_at: None,
            kept: None,
            target_changed_at: changed.map(at),
        }
    }

    #[test]
    fn echoes_are_the_hubs_own_versions() {
        let link = |w| SourceLink {
            record_id: Uuid::nil(),
            changed_version: None,
            changed_at: None,
            written_version: w,
            written_at: None,
            deleted: false,
        };
        assert!(echo(Some(5), &link(Some(5))).is_some());
        assert!(echo(Some(4), &link(Some(5))).is_some());
        assert!(
            echo(Some(6), &link(Some(5))).is_none(),
            "a newer change is real"
        );
        assert!(echo(None, &link(Some(5))).is_none());
        assert!(echo(Some(5), &link(None)).is_none());
    }

    #[test]
    fn last_writer_wins_by_time() {
        let s = Uuid::from_u128(10);
        let e = env(100, ConflictPolicy::LastWriterWins);
        assert!(matches!(
            conflict(&e, s, &target(None, None)),
            Decision::Apply
        ));
        assert!(matches!(
            conflict(&e, s, &target(Some(50), None)),
            Decision::Apply
        ));
        match conflict(&e, s, &target(Some(150), None)) {
            Decision::Skip(c) => {
                assert_eq!(c.winner, e.integration_id);
                assert_eq!(c.loser, s);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn source_wins_and_target_wins() {
        let s = Uuid::from_u128(10);
        let e = env(100, ConflictPolicy::SourceWins);
        assert!(matches!(
            conflict(&e, s, &target(Some(150), None)),
            Decision::ApplyOver(_)
        ));
        let e = env(100, ConflictPolicy::TargetWins);
        // The target changed after the hub last wrote it: its change stays.
        assert!(matches!(
            conflict(&e, s, &target(Some(50), Some(40))),
            Decision::Skip(_)
        ));
        // The hub wrote it after its last change: nothing of its own to keep.
        assert!(matches!(
            conflict(&e, s, &target(Some(50), Some(60))),
            Decision::Apply
        ));
    }
}
