//! Message headers Switchyard reads and writes. Our own names start with `sy-`: from
//! RabbitMQ 3.13 on, `x-` headers belong to the broker.
use lapin::types::{AMQPValue, FieldTable, ShortString};
use std::collections::BTreeMap;

pub mod names {
    /// Provider calls made for the job so far.
    pub const ATTEMPT: &str = "sy-attempt";
    /// When ingest first received the event (RFC 3339).
    pub const FIRST_RECEIVED: &str = "sy-first-received";
    /// The class and message of the last failure.
    pub const LAST_ERROR: &str = "sy-last-error";
    pub const LAST_ERROR_CLASS: &str = "sy-last-error-class";
    /// Why the message is in a dead-letter queue.
    pub const DEAD_REASON: &str = "sy-dead-reason";
    /// When the message was dead-lettered (RFC 3339).
    pub const DEAD_AT: &str = "sy-dead-at";
    /// A retry delayed longer than the delay levels' span: when it is really due (RFC 3339).
    pub const DUE_AT: &str = "sy-due-at";
    /// How many times an operator replayed the message from a dead-letter queue.
    pub const REPLAYS: &str = "sy-replays";
    /// When it was last replayed (RFC 3339): its retry age counts from then.
    pub const REPLAYED_AT: &str = "sy-replayed-at";
    /// W3C trace context.
    pub const TRACEPARENT: &str = "traceparent";
    /// Which copy of a job's message this is: set when a message is first published and
    /// kept through retries and redeliveries. A sender's retry that ingest publishes again
    /// is another copy of the same job; the worker lets only one copy hold the job.
    pub const COPY: &str = "sy-copy";
    /// How many times in a row the database refused to record this job (an error that is
    /// neither bad data nor an outage): bounded, then dead-lettered.
    pub const STORE_FAILURES: &str = "sy-store-failures";
}

/// Text headers of a message (integers are read as their decimal text).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(pub BTreeMap<String, String>);

impl Headers {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    pub fn set(&mut self, name: &str, value: impl Into<String>) -> &mut Self {
        self.0.insert(name.to_owned(), value.into());
        self
    }

    pub fn attempt(&self) -> u32 {
        self.get(names::ATTEMPT)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    pub(crate) fn from_table(table: Option<&FieldTable>) -> Headers {
        let mut out = BTreeMap::new();
        if let Some(t) = table {
            for (k, v) in t.inner() {
                let text = match v {
                    AMQPValue::LongString(s) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
                    AMQPValue::ShortString(s) => s.as_str().to_owned(),
                    AMQPValue::LongLongInt(n) => n.to_string(),
                    AMQPValue::LongInt(n) => n.to_string(),
                    AMQPValue::LongUInt(n) => n.to_string(),
                    AMQPValue::ShortInt(n) => n.to_string(),
                    _ => continue,
                };
                out.insert(k.as_str().to_owned(), text);
            }
        }
        Headers(out)
    }

    pub(crate) fn to_table(&self) -> FieldTable {
        let mut t = FieldTable::default();
        for (k, v) in &self.0 {
            t.insert(
                ShortString::from(k.as_str()),
                AMQPValue::LongString(v.as_str().into()),
            );
        }
        if !self.0.contains_key(names::COPY) {
            t.insert(
                ShortString::from(names::COPY),
                AMQPValue::LongString(uuid::Uuid::new_v4().simple().to_string().into()),
            );
        }
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_a_field_table() {
        let mut h = Headers::default();
        h.set(names::ATTEMPT, "3").set(names::LAST_ERROR, "timeout");
        let mut back = Headers::from_table(Some(&h.to_table()));
        // A message first published gets its copy id; one that has it keeps it.
        let copy = back.get(names::COPY).expect("a copy id").to_owned();
        assert_eq!(
            Headers::from_table(Some(&back.to_table())).get(names::COPY),
            Some(copy.as_str())
        );
        back.0.remove(names::COPY);
        assert_eq!(back, h);
        assert_eq!(back.attempt(), 3);
        assert_eq!(Headers::default().attempt(), 0);
    }
}
