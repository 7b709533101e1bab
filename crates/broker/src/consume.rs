//! Consumers that survive reconnection.
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions,
    BasicRejectOptions,
};
use lapin::types::FieldTable;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::{Broker, BrokerError, Headers};

/// One message handed to a consumer. Settle it with exactly one of [`Delivery::ack`],
/// [`Delivery::requeue`] or [`Delivery::dead_letter`].
pub struct Delivery {
    pub body: Vec<u8>,
    pub headers: Headers,
    pub routing_key: String,
    pub message_id: Option<String>,
    /// The broker delivered it before (a consumer died or a channel closed).
    pub redelivered: bool,
    acker: lapin::Acker,
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("routing_key", &self.routing_key)
            .field("message_id", &self.message_id)
            .field("redelivered", &self.redelivered)
            .field("bytes", &self.body.len())
            .finish()
    }
}

impl From<lapin::message::Delivery> for Delivery {
    fn from(d: lapin::message::Delivery) -> Self {
        Delivery {
            headers: Headers::from_table(d.properties.headers().as_ref()),
            message_id: d
                .properties
                .message_id()
                .as_ref()
                .map(|m| m.as_str().to_owned()),
            routing_key: d.routing_key.as_str().to_owned(),
            redelivered: d.redelivered,
            body: d.data,
            acker: d.acker,
        }
    }
}

impl Delivery {
    /// Done with it. If the channel has closed meanwhile this fails and the broker will
    /// deliver the message again, which idempotent processing absorbs.
    pub async fn ack(&self) -> Result<(), BrokerError> {
        settled(self.acker.ack(BasicAckOptions::default()).await?)
    }

    /// Put it back at the head of the queue (counts towards the delivery limit).
    pub async fn requeue(&self) -> Result<(), BrokerError> {
        settled(
            self.acker
                .nack(BasicNackOptions {
                    requeue: true,
                    multiple: false,
                })
                .await?,
        )
    }

    /// Let the broker dead-letter it (at-least-once) into the provider's dead-letter queue.
    pub async fn dead_letter(&self) -> Result<(), BrokerError> {
        settled(
            self.acker
                .reject(BasicRejectOptions { requeue: false })
                .await?,
        )
    }
}

/// lapin answers `false` when it did not send the settlement (the channel closed, or the
/// delivery was settled already): the broker still holds the message.
fn settled(sent: bool) -> Result<(), BrokerError> {
    if sent {
        Ok(())
    } else {
        Err(BrokerError::NotSettled)
    }
}

/// Messages taken from a queue for inspection: settle the ones you want; dropping this
/// returns the others to the queue (the channel closes, the broker requeues them).
pub struct Drained {
    pub deliveries: Vec<Delivery>,
    channel: lapin::Channel,
}

impl Drained {
    /// Return every unsettled message to the queue now.
    pub async fn release(self) {
        self.close().await;
    }

    /// Return every unsettled message to the queue now; the deliveries can no longer be
    /// settled (settling one fails).
    pub async fn close(&self) {
        let _ = self.channel.close(200, "released".into()).await;
    }
}

impl Broker {
    /// Take up to `max` ready messages (and about `max_bytes` of bodies) from `queue` without
    /// settling them, for operators to look at, replay or purge. Stops when that much is
    /// held or no message came for a moment.
    pub async fn drain(
        &self,
        queue: &str,
        max: u16,
        max_bytes: usize,
    ) -> Result<Drained, BrokerError> {
        let session = self.session().ok_or(BrokerError::Unavailable)?;
        let ch = session.conn.create_channel().await?;
        // Fails early, and clearly, if the queue does not exist.
        ch.queue_declare(
            queue.into(),
            lapin::options::QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await?;
        let mut deliveries = Vec::new();
        ch.basic_qos(max.max(1), BasicQosOptions::default()).await?;
        let mut consumer = ch
            .basic_consume(
                queue.into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        // The message count is not enough: messages just returned to a quorum queue may not
        // be counted yet. Take what comes until the queue has been quiet for a moment.
        let mut held = 0usize;
        while deliveries.len() < max as usize && held < max_bytes {
            match tokio::time::timeout(Duration::from_millis(300), consumer.next()).await {
                Ok(Some(Ok(d))) => {
                    held += d.data.len();
                    deliveries.push(Delivery::from(d));
                }
                Ok(Some(Err(e))) => return Err(e.into()),
                Ok(None) | Err(_) => break,
            }
        }
        let _ = ch
            .basic_cancel(consumer.tag(), BasicCancelOptions::default())
            .await;
        Ok(Drained {
            deliveries,
            channel: ch,
        })
    }

    /// Consume `queue` with `prefetch` unacknowledged deliveries at most, resubscribing on
    /// every new session, until `stop` is cancelled. Deliveries arrive on the returned
    /// channel; when `stop` fires, the broker is told to stop sending (basic.cancel) and the
    /// channel closes. Deliveries already handed out can still be settled until
    /// [`Broker::shutdown`].
    pub fn consume(
        &self,
        queue: String,
        prefetch: u16,
        stop: CancellationToken,
    ) -> mpsc::Receiver<Delivery> {
        let (tx, rx) = mpsc::channel(1);
        let broker = self.clone();
        tokio::spawn(async move { broker.consume_loop(queue, prefetch, stop, tx).await });
        rx
    }

    async fn consume_loop(
        self,
        queue: String,
        prefetch: u16,
        stop: CancellationToken,
        tx: mpsc::Sender<Delivery>,
    ) {
        let mut state = self.0.state.subscribe();
        loop {
            let session = tokio::select! {
                _ = stop.cancelled() => return,
                _ = self.stopping().cancelled() => return,
                s = state.wait_for(Option::is_some) => match s {
                    Ok(s) => s.clone().expect("waited for Some"),
                    Err(_) => return,
                },
            };
            let generation = session.generation;
            let opened = async {
                let ch = session.conn.create_channel().await?;
                ch.basic_qos(prefetch, BasicQosOptions::default()).await?;
                let consumer = ch
                    .basic_consume(
                        queue.as_str().into(),
                        "".into(),
                        BasicConsumeOptions::default(),
                        FieldTable::default(),
                    )
                    .await?;
                Ok::<_, lapin::Error>((ch, consumer))
            }
            .await;
            let (ch, mut consumer) = match opened {
                Ok(x) => x,
                Err(error) => {
                    warn!(%queue, %error, "cannot consume; will retry on the next connection");
                    self.report_broken(generation);
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                    continue;
                }
            };
            drop(session);
            info!(%queue, prefetch, generation, "consuming");
            let tag = consumer.tag();
            loop {
                let next = tokio::select! {
                    _ = stop.cancelled() => {
                        let _ = ch.basic_cancel(tag.clone(), BasicCancelOptions::default()).await;
                        debug!(%queue, "stopped consuming");
                        return;
                    }
                    changed = state.changed() => {
                        if changed.is_err() { return; }
                        let same = state.borrow().as_ref().is_some_and(|s| s.generation == generation);
                        if same { continue; }
                        break;
                    }
                    next = consumer.next() => next,
                };
                match next {
                    Some(Ok(d)) => {
                        let delivery = Delivery::from(d);
                        tokio::select! {
                            _ = stop.cancelled() => {
                                // Not handed out: it returns to the queue when the channel closes.
                                let _ = ch.basic_cancel(tag.clone(), BasicCancelOptions::default()).await;
                                return;
                            }
                            sent = tx.send(delivery) => if sent.is_err() { return },
                        }
                    }
                    Some(Err(error)) => {
                        warn!(%queue, %error, "the consumer failed; resubscribing");
                        self.report_broken(generation);
                        break;
                    }
                    None => {
                        warn!(%queue, "the broker cancelled the consumer; resubscribing");
                        self.report_broken(generation);
                        break;
                    }
                }
            }
            // Wait for a session other than the one that failed.
            let _ = tokio::select! {
                _ = stop.cancelled() => return,
                s = state.wait_for(|s| s.as_ref().is_some_and(|s| s.generation != generation)) => s.map(|_| ()),
            };
        }
    }
}
