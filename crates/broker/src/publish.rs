//! Confirmed, mandatory, persistent publishing.
use lapin::options::BasicPublishOptions;
use lapin::{BasicProperties, Confirmation};
use std::time::Duration;

use crate::{Broker, Headers};

/// Which exchange a message goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exchange {
    /// `{p}sy.jobs`, routed to the provider's work queue by a topic match.
    Jobs,
    /// Straight into the provider's work queue, through the broker's default exchange (the
    /// queue's name is the key it travels under). The message's `routing_key` is still the
    /// job's own (`{provider}.{entity}.{action}`), whose first word names the provider. A
    /// job's first publication goes this way: RabbitMQ then routes it without matching
    /// topic patterns, which cost it about a quarter of its CPU per message at 64 publishers
    /// (ARCHITECTURE.md, Performance).
    WorkQueue,
    /// `{p}sy.dlx`, routed to the provider's dead-letter queue.
    DeadLetters,
    /// The delay levels: the routing key must come from [`crate::Topology::delay_routing_key`].
    Delay,
}

#[derive(Debug, Clone)]
pub struct OutgoingMessage {
    pub exchange: Exchange,
    pub routing_key: String,
    pub message_id: String,
    pub body: Vec<u8>,
    pub headers: Headers,
}

impl OutgoingMessage {
    /// A job's first publication: straight into its provider's work queue, with the trace
    /// context if there is one. It carries no attempt count and no first-received time: a
    /// message without them is at attempt 0, and the envelope has the time it was received
    /// (the worker adds both headers when it puts the job back for a retry). Each header
    /// costs the broker CPU on every publish and every delivery; these two were about 7 µs
    /// of RabbitMQ's CPU per webhook in `just bench`'s ingest phase.
    pub fn job(env: &switchyard_core::Envelope) -> OutgoingMessage {
        let mut headers = Headers::default();
        if let Some(t) = &env.trace {
            headers.set(crate::header::TRACEPARENT, t.clone());
        }
        OutgoingMessage {
            exchange: Exchange::WorkQueue,
            routing_key: env.routing_key(),
            message_id: env.id.to_string(),
            body: env.to_vec(),
            headers,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("the message broker is not connected")]
    Unavailable,
    #[error("the message broker did not confirm the message within {0:?}")]
    Timeout(Duration),
    #[error("the message broker refused the message (a queue is full or unavailable)")]
    Nacked,
    #[error("no queue is bound for routing key `{0}` (is the provider's queue declared?)")]
    Unroutable(String),
    #[error("publishing failed: {0}")]
    Amqp(#[from] lapin::Error),
}

impl Broker {
    /// The exchange and the key a message is published with.
    fn destination(&self, m: &OutgoingMessage) -> (String, String) {
        let t = self.topology();
        match m.exchange {
            Exchange::Jobs => (t.jobs_exchange(), m.routing_key.clone()),
            Exchange::WorkQueue => {
                let provider = m.routing_key.split('.').next().unwrap_or_default();
                // The default exchange: its name is empty.
                (String::new(), t.queue(provider))
            }
            Exchange::DeadLetters => (t.dead_letter_exchange(), m.routing_key.clone()),
            Exchange::Delay => (t.delay_entry(), m.routing_key.clone()),
        }
    }

    /// Publish every message (persistent, mandatory) and wait for the broker to confirm all
    /// of them. `Ok` means every message is durably enqueued; on `Err` some may have been
    /// enqueued and some not, so the caller must treat the batch as not accepted and the
    /// consumer side must be idempotent (it is: jobs are keyed by idempotency key).
    pub async fn publish(&self, messages: &[OutgoingMessage]) -> Result<(), PublishError> {
        let session = self.session().ok_or(PublishError::Unavailable)?;
        let ch = session.publisher();
        let timeout = self.0.config.confirm_timeout;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let mut pending = Vec::with_capacity(messages.len());
        for m in messages {
            let props = BasicProperties::default()
                .with_delivery_mode(2)
                .with_content_type("application/json".into())
                .with_message_id(m.message_id.as_str().into())
                .with_timestamp(now)
                .with_headers(m.headers.to_table());
            let (exchange, key) = self.destination(m);
            let confirm = ch
                .basic_publish(
                    exchange.into(),
                    key.into(),
                    BasicPublishOptions {
                        mandatory: true,
                        immediate: false,
                    },
                    &m.body,
                    props,
                )
                .await;
            match confirm {
                Ok(c) => pending.push((c, &m.routing_key)),
                Err(e) => {
                    self.report_broken(session.generation);
                    return Err(e.into());
                }
            }
        }
        let wait_all = async {
            for (confirm, key) in pending {
                match confirm.await {
                    Ok(Confirmation::Ack(None)) => {}
                    Ok(Confirmation::Ack(Some(_))) => {
                        return Err(PublishError::Unroutable(key.clone()));
                    }
                    Ok(Confirmation::Nack(_)) => return Err(PublishError::Nacked),
                    Ok(Confirmation::NotRequested) => {
                        unreachable!("publishing channels are in confirm mode")
                    }
                    Err(e) => {
                        self.report_broken(session.generation);
                        return Err(e.into());
                    }
                }
            }
            Ok(())
        };
        tokio::time::timeout(timeout, wait_all)
            .await
            .map_err(|_| PublishError::Timeout(timeout))?
    }
}
