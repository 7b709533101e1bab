//! The exchanges and queues Switchyard uses, declared idempotently at start.
//!
//! ```text
//! {p}sy.jobs (topic) ──{provider}.#──▶ {p}sy.q.{provider}  (quorum; DLX → {p}sy.dlx)
//! {p}sy.dlx  (topic) ──{provider}.#──▶ {p}sy.dlq.{provider} (quorum)
//! ```
use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{Channel, ExchangeKind};

/// Names and settings of the broker resources. `prefix` isolates one deployment (or one
/// test) from another on a shared broker.
#[derive(Debug, Clone)]
pub struct Topology {
    pub prefix: String,
    /// One work queue and one dead-letter queue per provider.
    pub providers: Vec<String>,
    /// Deliveries of one message before the broker dead-letters it as poison.
    pub delivery_limit: u32,
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

    pub fn dead_letter_queue(&self, provider: &str) -> String {
        format!("{}sy.dlq.{provider}", self.prefix)
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
        for p in &self.providers {
            let pattern = ShortString::from(format!("{p}.#"));
            ch.queue_declare(self.queue(p).into(), qopts, self.work_queue_args())
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
            ch.queue_bind(
                self.dead_letter_queue(p).into(),
                self.dead_letter_exchange().into(),
                pattern,
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        }
        Ok(())
    }
}
