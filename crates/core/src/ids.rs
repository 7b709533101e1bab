//! Identifiers derived from what identifies an event, so that every delivery of the same
//! event to the same target names the same job.
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::Action;

/// The idempotency key of a job: one event from one source, one target integration, one
/// action. Hex SHA-256 over the parts, length-prefixed so that no two tuples collide. The
/// source is part of it, so one sender's event id cannot pre-empt another's; `None` (an
/// event with no source integration) is a namespace of its own.
pub fn idempotency_key(
    source: Option<Uuid>,
    event_id: &str,
    target: Uuid,
    action: Action,
) -> String {
    let mut h = Sha256::new();
    let source = source.map(|s| *s.as_bytes());
    for part in [
        source.as_ref().map_or(&b""[..], |s| &s[..]),
        event_id.as_bytes(),
        target.as_bytes(),
        action.as_str().as_bytes(),
    ] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    hex::encode(h.finalize())
}

/// Event ids that only Switchyard itself makes (a sync's records); a webhook may not send
/// one, so no sender can forge or pre-empt them.
pub const RESERVED_EVENT_PREFIXES: &[&str] = &["sync:", OPERATION_EVENT_PREFIX];

/// The event id of a settled operation call: `operation:<call id>`.
pub const OPERATION_EVENT_PREFIX: &str = "operation:";

/// Whether `event_id` starts with a reserved prefix (case-insensitively).
pub fn is_reserved_event_id(event_id: &str) -> bool {
    RESERVED_EVENT_PREFIXES.iter().any(|p| {
        event_id
            .get(..p.len())
            .is_some_and(|head| head.eq_ignore_ascii_case(p))
    })
}

/// The integration id that stands for "no source integration": the tenant's own ids.
pub const NO_SOURCE: Uuid = Uuid::nil();

/// The job id for an idempotency key: a UUIDv8 made of the key's first 16 bytes. Two
/// deliveries of the same event name the same job, so `202 {"jobs":[…]}` answers with the
/// same ids for a retried webhook.
pub fn job_id(idempotency_key: &str) -> Uuid {
    let digest = Sha256::digest(idempotency_key.as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    Uuid::new_v8(bytes)
}

/// An event id for a sender that gives none: the SHA-256 of the raw body, so a re-sent
/// identical body is recognised as the same event.
pub fn content_event_id(body: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(body)))
}

/// A 64-bit lock key for one source record at one target (Postgres advisory locks take a
/// bigint): jobs about the same (source, entity, source id) for the same target run one at a
/// time.
pub fn entity_lock_key(target: Uuid, entity: &str, source: Option<Uuid>, source_id: &str) -> i64 {
    let mut h = Sha256::new();
    h.update(target.as_bytes());
    h.update(source.unwrap_or(NO_SOURCE).as_bytes());
    for part in [entity.as_bytes(), source_id.as_bytes()] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    lock_key(&h.finalize())
}

/// A 64-bit lock key for one record at one target: taken before a record that already has
/// links elsewhere is first written to a target, so two sources of one record cannot both
/// create it there.
pub fn record_lock_key(target: Uuid, record: Uuid) -> i64 {
    let mut h = Sha256::new();
    h.update(b"record");
    h.update(target.as_bytes());
    h.update(record.as_bytes());
    lock_key(&h.finalize())
}

/// A 64-bit lock key for one integration's OAuth2 token set: refreshes take it, so the
/// fleet refreshes once.
pub fn oauth_lock_key(integration: Uuid) -> i64 {
    let mut h = Sha256::new();
    h.update(b"oauth");
    h.update(integration.as_bytes());
    lock_key(&h.finalize())
}

fn lock_key(digest: &[u8]) -> i64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(b)
}

/// Hex SHA-256 of a secret, for storing API keys without storing them.
pub fn secret_digest(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_stable_and_distinct() {
        let t = Uuid::from_u128(7);
        let s = Some(Uuid::from_u128(3));
        let a = idempotency_key(s, "evt-1", t, Action::Upsert);
        assert_eq!(a, idempotency_key(s, "evt-1", t, Action::Upsert));
        assert_ne!(a, idempotency_key(s, "evt-1", t, Action::Delete));
        assert_ne!(
            a,
            idempotency_key(s, "evt-1", Uuid::from_u128(8), Action::Upsert)
        );
        // another source's event with the same id is another job
        assert_ne!(
            a,
            idempotency_key(Some(Uuid::from_u128(4)), "evt-1", t, Action::Upsert)
        );
        assert_ne!(a, idempotency_key(None, "evt-1", t, Action::Upsert));
        // length prefixes: moving a byte between parts changes the key
        assert_ne!(
            idempotency_key(s, "evt-1u", t, Action::Upsert),
            idempotency_key(s, "evt-1", t, Action::Upsert)
        );
    }

    #[test]
    fn reserved_event_ids() {
        assert!(is_reserved_event_id("sync:shop:order:1:2"));
        assert!(is_reserved_event_id("SYNC:x"));
        assert!(!is_reserved_event_id("sync"));
        assert!(!is_reserved_event_id("evt-sync:1"));
        assert!(!is_reserved_event_id("é"));
    }

    #[test]
    fn job_id_is_a_v8_uuid_derived_from_the_key() {
        let id = job_id("abc");
        assert_eq!(id.get_version_num(), 8);
        assert_eq!(id, job_id("abc"));
        assert_ne!(id, job_id("abd"));
    }

    #[test]
    fn lock_keys_differ_per_source_record() {
        let t = Uuid::from_u128(1);
        let s = Some(Uuid::from_u128(2));
        assert_ne!(
            entity_lock_key(t, "order", s, "1"),
            entity_lock_key(t, "order", s, "2")
        );
        assert_ne!(
            entity_lock_key(t, "order", s, "1"),
            entity_lock_key(t, "orde", s, "r1")
        );
        assert_ne!(
            entity_lock_key(t, "order", s, "1"),
            entity_lock_key(t, "order", Some(Uuid::from_u128(9)), "1")
        );
        assert_ne!(
            record_lock_key(t, Uuid::from_u128(5)),
            record_lock_key(t, Uuid::from_u128(6))
        );
    }
}
