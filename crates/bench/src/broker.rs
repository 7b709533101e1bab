//! RabbitMQ's own ceiling on this machine: no Switchyard code, lapin only.
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Confirmation, Connection, ConnectionProperties};
use std::time::Instant;

pub struct Ceiling {
    pub confirm_mps: f64,
    pub consume_mps: f64,
}

/// Confirms outstanding at once while publishing, and the consumer's prefetch.
const WINDOW: usize = 1024;
const PREFETCH: u16 = 256;

/// Publish `n` persistent 1 KiB messages into a fresh durable quorum queue with pipelined
/// confirms, then consume them with manual acks; both in messages per second.
pub async fn ceiling(url: &str, n: usize) -> anyhow::Result<Ceiling> {
    let conn = Connection::connect(url, ConnectionProperties::default()).await?;
    let ch = conn.create_channel().await?;
    let queue = "bench.ceiling";
    let _ = ch
        .queue_delete(queue.into(), QueueDeleteOptions::default())
        .await;
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    ch.queue_declare(
        queue.into(),
        QueueDeclareOptions {
            durable: true,
            ..Default::default()
        },
        args,
    )
    .await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    let body = vec![b'x'; 1024];
    let t0 = Instant::now();
    let mut pending = FuturesUnordered::new();
    for _ in 0..n {
        if pending.len() >= WINDOW {
            check(pending.next().await.expect("pending is not empty")?)?;
        }
        let confirm = ch
            .basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions::default(),
                &body,
                BasicProperties::default().with_delivery_mode(2),
            )
            .await?;
        pending.push(confirm);
    }
    while let Some(c) = pending.next().await {
        check(c?)?;
    }
    let confirm_mps = n as f64 / t0.elapsed().as_secs_f64();

    let consumer_ch = conn.create_channel().await?;
    consumer_ch
        .basic_qos(PREFETCH, BasicQosOptions::default())
        .await?;
    let mut consumer = consumer_ch
        .basic_consume(
            queue.into(),
            "bench".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let t0 = Instant::now();
    let mut got = 0;
    while got < n {
        let d = consumer
            .next()
            .await
            .ok_or_else(|| anyhow::anyhow!("the consumer stopped after {got} messages"))??;
        d.acker.ack(BasicAckOptions::default()).await?;
        got += 1;
    }
    let consume_mps = n as f64 / t0.elapsed().as_secs_f64();
    let _ = consumer_ch.close(200, "done".into()).await;
    ch.queue_delete(queue.into(), QueueDeleteOptions::default())
        .await?;
    let _ = conn.close(200, "done".into()).await;
    Ok(Ceiling {
        confirm_mps,
        consume_mps,
    })
}

fn check(c: Confirmation) -> anyhow::Result<()> {
    match c {
        Confirmation::Ack(_) => Ok(()),
        other => anyhow::bail!("the broker did not confirm a message: {other:?}"),
    }
}
