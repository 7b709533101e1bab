//! Identifiers derived from what identifies an event, so that every delivery of the same
//! event to the same target names the same job.
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::Action;

/// The idempotency key of a job: one event, one target integration, one action.
/// Hex SHA-256 over the three parts, length-prefixed so that no two triples collide.
pub fn idempotency_key(event_id: &str, target: Uuid, action: Action) -> String {
    let mut h = Sha256::new();
    for part in [
        event_id.as_bytes(),
        target.as_bytes(),
        action.as_str().as_bytes(),
    ] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    hex::encode(h.finalize())
}

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

/// A 64-bit lock key for one entity at one target (Postgres advisory locks take a bigint).
pub fn entity_lock_key(target: Uuid, entity: &str, internal_id: &str) -> i64 {
    let mut h = Sha256::new();
    h.update(target.as_bytes());
    for part in [entity.as_bytes(), internal_id.as_bytes()] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    let d = h.finalize();
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
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
        let a = idempotency_key("evt-1", t, Action::Upsert);
        assert_eq!(a, idempotency_key("evt-1", t, Action::Upsert));
        assert_ne!(a, idempotency_key("evt-1", t, Action::Delete));
        assert_ne!(
            a,
            idempotency_key("evt-1", Uuid::from_u128(8), Action::Upsert)
        );
        // length prefixes: moving a byte between parts changes the key
        assert_ne!(
            idempotency_key("evt-1u", t, Action::Upsert),
            idempotency_key("evt-1", t, Action::Upsert)
        );
    }

    #[test]
    fn job_id_is_a_v8_uuid_derived_from_the_key() {
        let id = job_id("abc");
        assert_eq!(id.get_version_num(), 8);
        assert_eq!(id, job_id("abc"));
        assert_ne!(id, job_id("abd"));
    }

    #[test]
    fn entity_lock_keys_differ_per_entity() {
        let t = Uuid::from_u128(1);
        assert_ne!(
            entity_lock_key(t, "order", "1"),
            entity_lock_key(t, "order", "2")
        );
        assert_ne!(
            entity_lock_key(t, "order", "1"),
            entity_lock_key(t, "orde", "r1")
        );
    }
}
