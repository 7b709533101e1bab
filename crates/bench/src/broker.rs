//! RabbitMQ's own ceiling on this machine: no Switchyard code, lapin only.
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use hdrhistogram::Histogram;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Confirmation, Connection, ConnectionProperties};
use std::time::{Duration, Instant};

pub struct Ceiling {
    pub confirm_mps: f64,
    pub consume_mps: f64,
}

/// Confirms outstanding at once while publishing, and the consumer's prefetch.
const WINDOW: usize = 1024;
const PREFETCH: u16 = 256;
const QUEUE: &str = "bench.ceiling";

/// Persistent 1 KiB messages into a fresh durable quorum queue with pipelined confirms, then
/// consumed with manual acks: messages per second, the median of three rounds of `n` (the
/// broker's figures vary from round to round more than ours).
pub async fn ceiling(url: &str, n: usize) -> anyhow::Result<Ceiling> {
    let conn = Connection::connect(url, ConnectionProperties::default()).await?;
    let mut publish = Vec::new();
    let mut consume = Vec::new();
    for _ in 0..3 {
        let ch = fresh_queue(&conn).await?;
        publish.push(publish_all(&ch, n).await?);
        consume.push(consume_all(&conn, n).await?);
        ch.queue_delete(QUEUE.into(), QueueDeleteOptions::default())
            .await?;
    }
    publish.sort_by(f64::total_cmp);
    consume.sort_by(f64::total_cmp);
    let _ = conn.close(200, "done".into()).await;
    Ok(Ceiling {
        confirm_mps: publish[1],
        consume_mps: consume[1],
    })
}

/// The confirm latency of messages published at `rate` per second for `secs` seconds, in
/// microseconds.
pub async fn confirm_latency(url: &str, rate: u64, secs: u64) -> anyhow::Result<Histogram<u64>> {
    let conn = Connection::connect(url, ConnectionProperties::default()).await?;
    let ch = fresh_queue(&conn).await?;
    let latency = at_rate(&ch, rate, secs).await?;
    ch.queue_delete(QUEUE.into(), QueueDeleteOptions::default())
        .await?;
    let _ = conn.close(200, "done".into()).await;
    Ok(latency)
}

/// A new, empty durable quorum queue, and a channel in confirm mode.
async fn fresh_queue(conn: &Connection) -> anyhow::Result<Channel> {
    let ch = conn.create_channel().await?;
    let _ = ch
        .queue_delete(QUEUE.into(), QueueDeleteOptions::default())
        .await;
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    ch.queue_declare(
        QUEUE.into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        args,
    )
    .await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    Ok(ch)
}

async fn publish_one(ch: &Channel) -> anyhow::Result<lapin::PublisherConfirm> {
    Ok(ch
        .basic_publish(
            "".into(),
            QUEUE.into(),
            BasicPublishOptions::default(),
            &[b'x'; 1024],
            BasicProperties::default().with_delivery_mode(2),
        )
        .await?)
}

async fn publish_all(ch: &Channel, n: usize) -> anyhow::Result<f64> {
    let t0 = Instant::now();
    let mut pending = FuturesUnordered::new();
    for _ in 0..n {
        if pending.len() >= WINDOW {
            check(pending.next().await.expect("pending is not empty")?)?;
        }
        pending.push(publish_one(ch).await?);
    }
    while let Some(c) = pending.next().await {
        check(c?)?;
    }
    Ok(n as f64 / t0.elapsed().as_secs_f64())
}

async fn consume_all(conn: &Connection, n: usize) -> anyhow::Result<f64> {
    let ch = conn.create_channel().await?;
    ch.basic_qos(PREFETCH, BasicQosOptions::default()).await?;
    let mut consumer = ch
        .basic_consume(
            QUEUE.into(),
            "bench".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let t0 = Instant::now();
    for got in 0..n {
        let d = consumer
            .next()
            .await
            .ok_or_else(|| anyhow::anyhow!("the consumer stopped after {got} messages"))??;
        d.acker.ack(BasicAckOptions::default()).await?;
    }
    let mps = n as f64 / t0.elapsed().as_secs_f64();
    let _ = ch.close(200, "done".into()).await;
    Ok(mps)
}

/// Each message published at its scheduled time, timed from then to its confirm.
async fn at_rate(ch: &Channel, rate: u64, secs: u64) -> anyhow::Result<Histogram<u64>> {
    let mut h = Histogram::new_with_bounds(1, 60_000_000, 3)?;
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let t0 = Instant::now();
    let mut waiting = FuturesUnordered::new();
    for i in 0..rate * secs {
        let scheduled = t0 + interval * i as u32;
        // Take the confirms that arrive while waiting for this message's time.
        loop {
            tokio::select! {
                biased;
                Some((at, c)) = waiting.next(), if !waiting.is_empty() => {
                    let c: Result<Confirmation, lapin::Error> = c;
                    check(c?)?;
                    h.saturating_record(Instant::now().duration_since(at).as_micros() as u64);
                }
                _ = tokio::time::sleep_until(scheduled.into()) => break,
            }
        }
        let confirm = publish_one(ch).await?;
        waiting.push(async move { (scheduled, confirm.await) });
    }
    while let Some((at, c)) = waiting.next().await {
        check(c?)?;
        h.saturating_record(Instant::now().duration_since(at).as_micros() as u64);
    }
    Ok(h)
}

fn check(c: Confirmation) -> anyhow::Result<()> {
    match c {
        Confirmation::Ack(_) => Ok(()),
        other => anyhow::bail!("the broker did not confirm a message: {other:?}"),
    }
}
