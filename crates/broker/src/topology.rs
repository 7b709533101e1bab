//! The exchanges and queues Switchyard uses, declared idempotently at start.
//!
//! ```text
//! (default)           ──{p}sy.q.{provider}─▶ {p}sy.q.{provider}   (a job's first publication)
//! {p}sy.jobs  (topic) ──{provider}.#──────▶ {p}sy.q.{provider}   (quorum; DLX → {p}sy.dlx)
//! {p}sy.dlx   (topic) ──{provider}.#──────▶ {p}sy.dlq.{provider} (quorum)
//!                     ──{p}sy.q.{provider}─▶ {p}sy.dlq.{provider}
//! {d}sy.retry (topic) ──*.….*.{p}{provider}.#─▶ {p}sy.q.{provider}
//! {d}sy.delay.{L} for L = levels-1 … 0: delayed retries (below)
//! ```
//!
//! `{p}` is the deployment's prefix; `{d}`, the delay prefix, names the delay levels, which
//! several deployments (or test runs) on one broker may share: a delayed message's key
//! carries its deployment's prefix, so the shared `sy.retry` exchange hands it back to the
//! right queue.
//!
//! Delayed retries use the "delay levels" scheme (NServiceBus): level `L` has a quorum
//! queue whose every message waits exactly 2^L ms, then dead-letters to level `L-1` (level
//! 0 to `sy.retry`). A message's routing key spells its delay in binary, one word per
//! level, highest first, followed by its own key: `0.1.1.0.….1.rest.order.upsert`. At each
//! level's exchange a `1` routes it into that level's queue, a `0` straight on to the next
//! level. Every queue holds messages of one TTL only, so nothing waits behind a longer
//! delay (no head-of-line blocking), and the delays add up to exactly what was asked.
use lapin::options::{
    ExchangeBindOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{Channel, ExchangeKind};
use std::time::Duration;

/// Names and settings of the broker resources. `prefix` isolates one deployment (or one
/// test) from another on a shared broker.
#[derive(Debug, Clone)]
pub struct Topology {
    pub prefix: String,
    /// One work queue and one dead-letter queue per provider.
    pub providers: Vec<String>,
    /// Deliveries of one message before the broker dead-letters it as poison.
    pub delivery_limit: u32,
    /// Delay levels: the longest single delay is 2^levels − 1 ms (22 levels: about 70 min;
    /// longer delays take several hops). Everyone sharing a delay prefix must agree on it.
    pub delay_levels: u8,
    /// Prefix of the delay levels' queues and exchanges (shareable; see the module docs).
    pub delay_prefix: String,
}

impl Topology {
    pub fn jobs_exchange(&self) -> String {
        format!("{}sy.jobs", self.prefix)
    }

    pub fn dead_letter_exchange(&self) -> String {
        format!("{}sy.dlx", self.prefix)
    }

    pub fn queue(&self, provider: &str) -> String {
        format!("{}sy.q.{provider}", self.prefix)
    }

    /// The sync pager's queue: one message per page of a sync run to read.
    pub fn sync_queue(&self) -> String {
        format!("{}sy.sync", self.prefix)
    }

    /// The routing key of sync page messages on the jobs exchange (no provider's name
    /// starts with `_`).
    pub const SYNC_ROUTING_KEY: &'static str = "_sync.page";

    pub fn dead_letter_queue(&self, provider: &str) -> String {
        format!("{}sy.dlq.{provider}", self.prefix)
    }

    pub fn retry_exchange(&self) -> String {
        format!("{}sy.retry", self.delay_prefix)
    }

    pub fn delay_exchange(&self, level: u8) -> String {
        format!("{}sy.delay.{level:02}", self.delay_prefix)
    }

    pub fn delay_queue(&self, level: u8) -> String {
        format!("{}sy.delay.q.{level:02}", self.delay_prefix)
    }

    /// The binding key that picks this deployment's delayed messages for `provider`.
    fn delayed_pattern(&self, provider: &str) -> String {
        format!(
            "{}{}{provider}.#",
            "*.".repeat(self.delay_levels as usize),
            self.prefix
        )
    }

    /// Where a delayed message enters: the highest level's exchange.
    pub fn delay_entry(&self) -> String {
        self.delay_exchange(self.delay_levels - 1)
    }

    /// The longest delay one pass through the levels gives.
    pub fn max_delay(&self) -> Duration {
        Duration::from_millis((1u64 << self.delay_levels) - 1)
    }

    /// The routing key that delays a message of this deployment with key `key` by `delay`
    /// (capped at [`Topology::max_delay`]).
    pub fn delay_routing_key(&self, delay: Duration, key: &str) -> String {
        let ms = (delay.as_millis() as u64).min(self.max_delay().as_millis() as u64);
        let mut out = String::with_capacity(self.delay_levels as usize * 2 + key.len());
        for level in (0..self.delay_levels).rev() {
            out.push(if ms & (1 << level) != 0 { '1' } else { '0' });
            out.push('.');
        }
        out.push_str(&self.prefix);
        out.push_str(key);
        out
    }

    /// A message's own key (`{provider}.{entity}.{action}`) from the key it arrived with,
    /// which for a retried message starts with its delay bits and this deployment's prefix.
    pub fn original_key<'a>(&self, key: &'a str) -> &'a str {
        let words = self.delay_levels as usize;
        let mut rest = key;
        for _ in 0..words {
            match rest.split_once('.') {
                Some((w, tail)) if w == "0" || w == "1" => rest = tail,
                _ => return key,
            }
        }
        rest.strip_prefix(self.prefix.as_str()).unwrap_or(rest)
    }

    /// `*.` once per level above `level`: the words before `level`'s own word.
    fn words_before(&self, level: u8) -> String {
        "*.".repeat((self.delay_levels - 1 - level) as usize)
    }

    fn work_queue_args(&self) -> FieldTable {
        let mut args = FieldTable::default();
        let s = |v: &str| AMQPValue::LongString(v.into());
        args.insert("x-queue-type".into(), s("quorum"));
        args.insert(
            "x-dead-letter-exchange".into(),
            s(&self.dead_letter_exchange()),
        );
        args.insert("x-dead-letter-strategy".into(), s("at-least-once"));
        args.insert("x-overflow".into(), s("reject-publish"));
        args.insert(
            "x-delivery-limit".into(),
            AMQPValue::LongLongInt(i64::from(self.delivery_limit)),
        );
        args
    }

    /// Declare everything. Safe to repeat; fails if a queue exists with other arguments
    /// (the broker closes the channel with PRECONDITION_FAILED and says which).
    pub(crate) async fn declare(&self, ch: &Channel) -> Result<(), lapin::Error> {
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        };
        for ex in [self.jobs_exchange(), self.dead_letter_exchange()] {
            ch.exchange_declare(
                ex.into(),
                ExchangeKind::Topic,
                durable,
                FieldTable::default(),
            )
            .await?;
        }
        let qopts = QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        let mut quorum = FieldTable::default();
        quorum.insert(
            "x-queue-type".into(),
            AMQPValue::LongString("quorum".into()),
        );
        self.declare_delay_levels(ch).await?;
        ch.queue_declare(self.sync_queue().into(), qopts, quorum.clone())
            .await?;
        ch.queue_bind(
            self.sync_queue().into(),
            self.jobs_exchange().into(),
            Self::SYNC_ROUTING_KEY.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
        for p in &self.providers {
            let pattern = ShortString::from(format!("{p}.#"));
            ch.queue_declare(self.queue(p).into(), qopts, self.work_queue_args())
                .await?;
            ch.queue_bind(
                self.queue(p).into(),
                self.retry_exchange().into(),
                self.delayed_pattern(p).into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
            ch.queue_bind(
                self.queue(p).into(),
                self.jobs_exchange().into(),
                pattern.clone(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
            ch.queue_declare(self.dead_letter_queue(p).into(), qopts, quorum.clone())
                .await?;
            // A message the broker dead-letters (delivery limit) keeps the key it arrived
            // with: for a retried one, its delay bits first; for a job's first publication,
            // which came through the default exchange, its work queue's name.
            for key in [
                pattern,
                self.delayed_pattern(p).into(),
                self.queue(p).into(),
            ] {
                ch.queue_bind(
                    self.dead_letter_queue(p).into(),
                    self.dead_letter_exchange().into(),
                    key,
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
            }
        }
        Ok(())
    }

    async fn declare_delay_levels(&self, ch: &Channel) -> Result<(), lapin::Error> {
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..Default::default()
        };
        let qopts = QueueDeclareOptions {
            durable: true,
            ..Default::default()
        };
        ch.exchange_declare(
            self.retry_exchange().into(),
            ExchangeKind::Topic,
            durable,
            FieldTable::default(),
        )
        .await?;
        for level in 0..self.delay_levels {
            ch.exchange_declare(
                self.delay_exchange(level).into(),
                ExchangeKind::Topic,
                durable,
                FieldTable::default(),
            )
            .await?;
        }
        for level in 0..self.delay_levels {
            let next = if level == 0 {
                self.retry_exchange()
            } else {
                self.delay_exchange(level - 1)
            };
            let mut args = FieldTable::default();
            let s = |v: &str| AMQPValue::LongString(v.into());
            args.insert("x-queue-type".into(), s("quorum"));
            args.insert(
                "x-message-ttl".into(),
                AMQPValue::LongLongInt(1i64 << level),
            );
            args.insert("x-dead-letter-exchange".into(), s(&next));
            args.insert("x-dead-letter-strategy".into(), s("at-least-once"));
            args.insert("x-overflow".into(), s("reject-publish"));
            ch.queue_declare(self.delay_queue(level).into(), qopts, args)
                .await?;
            let before = self.words_before(level);
            ch.queue_bind(
                self.delay_queue(level).into(),
                self.delay_exchange(level).into(),
                format!("{before}1.#").into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
            ch.exchange_bind(
                next.into(),
                self.delay_exchange(level).into(),
                format!("{before}0.#").into(),
                ExchangeBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        }
        Ok(())
    }

    /// Delete this deployment's own queues and exchanges (tests clean up with it). The
    /// delay levels stay: other deployments may share them, and messages of theirs may be
    /// waiting in them.
    pub async fn delete(&self, ch: &Channel) -> Result<(), lapin::Error> {
        use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
        for p in &self.providers {
            for q in [self.queue(p), self.dead_letter_queue(p)] {
                ch.queue_delete(q.into(), QueueDeleteOptions::default())
                    .await?;
            }
        }
        ch.queue_delete(self.sync_queue().into(), QueueDeleteOptions::default())
            .await?;
        for e in [self.jobs_exchange(), self.dead_letter_exchange()] {
            ch.exchange_delete(e.into(), ExchangeDeleteOptions::default())
                .await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topo(levels: u8) -> Topology {
        Topology {
            prefix: "t.".into(),
            providers: vec!["rest".into()],
            delivery_limit: 10,
            delay_levels: levels,
            delay_prefix: "shared.".into(),
        }
    }

    #[test]
    fn delay_keys_spell_the_delay_in_binary_highest_level_first() {
        let t = topo(4);
        assert_eq!(t.max_delay(), Duration::from_millis(15));
        assert_eq!(
            t.delay_routing_key(Duration::from_millis(5), "rest.order.upsert"),
            "0.1.0.1.t.rest.order.upsert"
        );
        assert_eq!(
            t.delay_routing_key(Duration::from_millis(99), "k"),
            "1.1.1.1.t.k"
        );
        assert_eq!(t.delay_routing_key(Duration::ZERO, "k"), "0.0.0.0.t.k");
        assert_eq!(t.delayed_pattern("rest"), "*.*.*.*.t.rest.#");
        assert_eq!(t.words_before(3), "");
        assert_eq!(t.words_before(0), "*.*.*.");
        assert_eq!(t.delay_entry(), "shared.sy.delay.03");
        assert_eq!(
            t.original_key("0.1.0.1.t.rest.order.upsert"),
            "rest.order.upsert"
        );
        assert_eq!(t.original_key("rest.order.upsert"), "rest.order.upsert");
    }
}
