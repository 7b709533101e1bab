//! `just bench`: Switchyard's throughput and latency, measured against RabbitMQ's own ceiling
//! on the same machine in the same run, on the shared workload (`../shared/bench/WORKLOAD.md`):
//! the nginx mock provider, the order template, one mapping row per job.
//!
//! Phases: (1) the broker alone: persistent 1 KiB messages into a durable quorum queue with
//! pipelined publisher confirms, then consumed with manual acks; (2) ingest with workers
//! stopped: N signed webhooks at 64 and at 256 connections (closed model), then an open model
//! at a fixed arrival rate whose latencies count from each request's *scheduled* start (no
//! coordinated omission); (3) processing: the queue holds N jobs, a worker starts, until every
//! mapping row exists; the provider's request count must equal N; (3b) the same after growing
//! the database by 10,000 integrations and 1,000,000 mappings (cost as data grows); (4) end to end: webhooks at
//! a fixed rate with a worker running, the delay from each 202 to its mapping row's commit
//! (a NOTIFY from a trigger the bench adds); (5) peak resident memory of ingest and worker.
//! Between phases the database is vacuumed and analysed, so that one phase's maintenance does
//! not land on the next one's figures; each phase reports the CPU each process spent per item
//! (from /proc), the profile that explains a missed target.
//!
//! Prints a report and, last, one JSON line. Settings from the environment: `BENCH_N`
//! (20000), `BENCH_RATE` (1000 per second), `BENCH_SECS` (10, each open-model phase),
//! `BENCH_SOAK_SECS` (0: no soak; 300 for the 5-minute memory check) at `BENCH_SOAK_RATE` (500),
//! `BENCH_SHARED` (`../shared/bench`), `BENCH_DB` (`switchyard_bench`).
#![forbid(unsafe_code)]

mod broker;
mod load;
mod procs;

use anyhow::{Context, bail};
use serde_json::json;
use std::time::{Duration, Instant};

pub struct Settings {
    n: usize,
    rate: u64,
    secs: u64,
    shared: std::path::PathBuf,
    db: String,
    amqp: String,
    pg: String,
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> anyhow::Result<T> {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .map_err(|_| anyhow::anyhow!("{name}=`{v}` is not a valid value")),
        Err(_) => Ok(default),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let r = run().await;
    procs::stop_nginx();
    r
}

async fn run() -> anyhow::Result<()> {
    let s = Settings {
        n: env_or("BENCH_N", 20_000)?,
        rate: env_or("BENCH_RATE", 1_000)?,
        secs: env_or("BENCH_SECS", 10)?,
        shared: env_or("BENCH_SHARED", "../shared/bench".into())?,
        db: env_or("BENCH_DB", "switchyard_bench".to_owned())?,
        amqp: "amqp://guest:guest@127.0.0.1:5672/%2f".into(),
        pg: "postgres://postgres@127.0.0.1:5432".into(),
    };
    if !s.shared.join("WORKLOAD.md").exists() {
        bail!(
            "the shared workload is not at {} (set BENCH_SHARED)",
            s.shared.display()
        );
    }
    let started = Instant::now();
    println!(
        "Switchyard benchmark — N = {}, open-model rate {}/s for {} s, on {} ({} CPUs)\n",
        s.n,
        s.rate,
        s.secs,
        procs::hostname(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );

    println!("1. the broker alone (no Switchyard code)");
    let cpu = procs::Cpu::now();
    let ceiling = broker::ceiling(&s.amqp, s.n)
        .await
        .context("broker ceiling")?;
    // Three rounds of `n` messages, each published and consumed.
    let ceiling_cpu = procs::Cpu::now().per_item(&cpu, 3 * s.n);
    println!(
        "   publish, confirms pipelined: {:>8.0} msg/s\n   consume, manual acks:        {:>8.0} msg/s\n",
        ceiling.confirm_mps, ceiling.consume_mps
    );
    println!("   {ceiling_cpu} (a message published and consumed)");
    let confirm_latency = broker::confirm_latency(&s.amqp, s.rate, s.secs)
        .await
        .context("broker confirm latency")?;
    println!(
        "   publish → confirm at {}/s: p50 {:.2} ms, p99 {:.2} ms, p99.9 {:.2} ms\n",
        s.rate,
        ms(confirm_latency.value_at_quantile(0.5)),
        ms(confirm_latency.value_at_quantile(0.99)),
        ms(confirm_latency.value_at_quantile(0.999))
    );

    let env = procs::Env::prepare(&s).await?;
    let template = std::fs::read_to_string(s.shared.join("order-template.json"))
        .context("reading order-template.json")?;
    let target = load::Target::new(&env, template);

    println!("2. ingest, workers stopped");
    let mut ingest = env.start("ingest").await?;
    let cpu = procs::Cpu::now();
    let c64 = load::closed(&target, 64, s.n).await?;
    println!("   {}", c64.line("c=64 "));
    let ingest_cpu = procs::Cpu::now().per_item(&cpu, s.n);
    println!("   {ingest_cpu}");
    let depth = env.queue_depth().await?;
    if depth < s.n as u32 {
        bail!(
            "the queue holds {depth} jobs after {} accepted webhooks",
            s.n
        );
    }

    env.settle().await?;
    println!("\n3. processing: {} queued jobs, one worker", s.n);
    let before = env.provider_requests().await?;
    let since = uuid::Uuid::now_v7();
    let mut worker = env.start("worker").await?;
    let cpu = procs::Cpu::now();
    let mapped = env
        .wait_mappings(since, s.n, &worker, Duration::from_secs(600))
        .await?;
    let (process_secs, rss_samples) = (mapped.secs, mapped.rss_mb);
    let process_jps = s.n as f64 / process_secs;
    let process_cpu = procs::Cpu::now().per_item(&cpu, s.n);
    // Less the status request that read `before`.
    let provider_calls = env.provider_requests().await? - before - 1;
    let distinct = env.distinct_external_ids(since).await?;
    println!(
        "   {} jobs in {:.1} s = {:.0} jobs/s; the provider saw {} requests; {} distinct external ids",
        s.n, process_secs, process_jps, provider_calls, distinct
    );
    println!("   {process_cpu}");
    if provider_calls != s.n as u64 || distinct != s.n as i64 {
        println!(
            "   WARNING: expected exactly {} provider requests and ids",
            s.n
        );
    }
    println!(
        "   worker RSS during the run: first {:.1} MB, last {:.1} MB, max {:.1} MB",
        rss_samples.first().copied().unwrap_or(0.0),
        rss_samples.last().copied().unwrap_or(0.0),
        rss_samples.iter().copied().fold(0.0, f64::max)
    );
    worker.stop().await;

    let (grown_integrations, grown_links) = (
        env_or("BENCH_GROW_INTEGRATIONS", 10_000i64)?,
        env_or("BENCH_GROW_MAPPINGS", 1_000_000i64)?,
    );
    println!(
        "\n3b. processing as data grows: {grown_integrations} more integrations and {grown_links} more mappings, then {} queued jobs, one worker",
        s.n
    );
    let t = Instant::now();
    env.grow(grown_integrations, grown_links).await?;
    env.settle().await?;
    println!("   grown in {:.1} s", t.elapsed().as_secs_f64());
    load::closed(&target, 64, s.n).await?;
    env.settle().await?;
    let before = env.provider_requests().await?;
    let since = uuid::Uuid::now_v7();
    let mut worker = env.start("worker").await?;
    let cpu = procs::Cpu::now();
    let grown = env
        .wait_mappings(since, s.n, &worker, Duration::from_secs(600))
        .await?;
    let grown_jps = s.n as f64 / grown.secs;
    let grown_cpu = procs::Cpu::now().per_item(&cpu, s.n);
    let grown_calls = env.provider_requests().await? - before - 1;
    println!(
        "   {} jobs = {:.0} jobs/s ({:.2} of the empty database's); the provider saw {} requests",
        s.n,
        grown_jps,
        grown_jps / process_jps,
        grown_calls
    );
    println!("   {grown_cpu}");
    worker.stop().await;

    env.settle().await?;
    println!("\n2b. ingest at 256 connections, workers stopped");
    let c256 = load::closed(&target, 256, s.n).await?;
    println!("   {}", c256.line("c=256"));
    env.purge_queue().await?;
    env.settle().await?;
    println!(
        "\n2c. ingest, open model at {}/s for {} s (latency from each request's scheduled start)",
        s.rate, s.secs
    );
    let cpu = procs::Cpu::now();
    let open = load::open(&target, s.rate, s.secs, None).await?;
    println!("   {}", open.line("1k/s "));
    println!("   {}", procs::Cpu::now().per_item(&cpu, open.ok));
    env.purge_queue().await?;
    env.settle().await?;

    println!(
        "\n4. end to end at {}/s for {} s, one worker running: 202 → mapping row committed",
        s.rate, s.secs
    );
    env.notify_on_mappings().await?;
    let mut worker = env.start("worker").await?;
    let listener = env.listen_mappings().await?;
    let cpu = procs::Cpu::now();
    let e2e = load::open(&target, s.rate, s.secs, Some(listener)).await?;
    let e2e_cpu = procs::Cpu::now().per_item(&cpu, e2e.ok);
    let e2e_delays = e2e.delays.as_ref().expect("measured");
    println!(
        "   {} webhooks; delay p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms ({} mappings not seen)",
        e2e.ok,
        ms(e2e_delays.value_at_quantile(0.5)),
        ms(e2e_delays.value_at_quantile(0.99)),
        ms(e2e_delays.max()),
        e2e.unseen
    );
    println!("   {e2e_cpu}");
    let mut worker_rss = worker.peak_rss_mb();
    let soak_secs: u64 = env_or("BENCH_SOAK_SECS", 0)?;
    let mut soak = None;
    if soak_secs > 0 {
        let rate: u64 = env_or("BENCH_SOAK_RATE", 500)?;
        println!(
            "\n6. soak: {rate}/s for {soak_secs} s with the worker running; its resident memory every 10 s"
        );
        let pid = worker.pid();
        let sampler = tokio::spawn(async move {
            let mut samples = Vec::new();
            loop {
                samples.push(procs::rss_mb(pid));
                tokio::time::sleep(Duration::from_secs(10)).await;
                if samples.len() as u64 > soak_secs / 10 {
                    return samples;
                }
            }
        });
        let out = load::open(&target, rate, soak_secs, None).await?;
        let samples = sampler.await?;
        let line: Vec<String> = samples.iter().map(|m| format!("{m:.1}")).collect();
        println!("   {} webhooks; worker RSS MB: {}", out.ok, line.join(" "));
        worker_rss = worker_rss.max(worker.peak_rss_mb());
        soak = Some(samples);
    }
    worker.stop().await;
    let ingest_rss = ingest.peak_rss_mb();
    ingest.stop().await;
    env.finish().await;

    println!("\n5. peak resident memory: ingest {ingest_rss:.1} MB, worker {worker_rss:.1} MB\n");
    let ingest_ratio = c64.rps / ceiling.confirm_mps;
    let process_ratio = process_jps / ceiling.consume_mps;
    let grown_ratio = grown_jps / process_jps;
    let targets = [
        (
            "ingest_ratio ≥ 0.30",
            ingest_ratio >= 0.30,
            format!("{ingest_ratio:.3}"),
        ),
        (
            "process_ratio ≥ 0.25",
            process_ratio >= 0.25,
            format!("{process_ratio:.3}"),
        ),
        (
            "processing with 1M mappings within 10 % of empty",
            grown_ratio >= 0.9,
            format!("{grown_ratio:.2}"),
        ),
        (
            "ingest p99 ≤ 10 ms at 1k/s",
            ms(open.latency.value_at_quantile(0.99)) <= 10.0,
            format!("{:.1} ms", ms(open.latency.value_at_quantile(0.99))),
        ),
        (
            "end-to-end p99 ≤ 250 ms at 1k/s",
            ms(e2e_delays.value_at_quantile(0.99)) <= 250.0 && e2e.unseen == 0,
            format!("{:.1} ms", ms(e2e_delays.value_at_quantile(0.99))),
        ),
    ];
    println!("targets:");
    for (what, met, got) in &targets {
        println!(
            "   {} {what}: {got}",
            if *met { "met   " } else { "MISSED" }
        );
    }
    println!(
        "(the whole run took {:.0} s)",
        started.elapsed().as_secs_f64()
    );
    let out = json!({
        "broker_confirm_mps": round(ceiling.confirm_mps),
        "broker_consume_mps": round(ceiling.consume_mps),
        "broker_confirm_p99_ms_at_1k": ms(confirm_latency.value_at_quantile(0.99)),
        "ingest_rps_c64": round(c64.rps),
        "ingest_p50_ms_c64": ms(c64.latency.value_at_quantile(0.5)),
        "ingest_p99_ms_c64": ms(c64.latency.value_at_quantile(0.99)),
        "ingest_rps_c256": round(c256.rps),
        "ingest_p99_ms_c256": ms(c256.latency.value_at_quantile(0.99)),
        "ingest_p50_ms_at_1k": ms(open.latency.value_at_quantile(0.5)),
        "ingest_p99_ms_at_1k": ms(open.latency.value_at_quantile(0.99)),
        "ingest_p999_ms_at_1k": ms(open.latency.value_at_quantile(0.999)),
        "process_jps": round(process_jps),
        "process_jps_1m_mappings": round(grown_jps),
        "process_cpu_us": process_cpu.total_us(),
        "ingest_cpu_us": ingest_cpu.total_us(),
        "provider_requests": provider_calls,
        "e2e_p50_ms": ms(e2e_delays.value_at_quantile(0.5)),
        "e2e_p99_ms": ms(e2e_delays.value_at_quantile(0.99)),
        "ingest_rss_mb": round(ingest_rss),
        "worker_rss_mb": round(worker_rss),
        "ingest_ratio": (ingest_ratio * 1000.0).round() / 1000.0,
        "process_ratio": (process_ratio * 1000.0).round() / 1000.0,
    });
    let mut out = out;
    if let Some(samples) = soak {
        out["soak_worker_rss_mb_first"] = json!(round(samples.first().copied().unwrap_or(0.0)));
        out["soak_worker_rss_mb_last"] = json!(round(samples.last().copied().unwrap_or(0.0)));
        out["soak_worker_rss_mb_max"] = json!(round(samples.iter().copied().fold(0.0, f64::max)));
    }
    println!("{out}");
    Ok(())
}

/// Microseconds (the histograms' unit) as milliseconds, to 0.01.
fn ms(us: u64) -> f64 {
    (us as f64 / 10.0).round() / 100.0
}

fn round(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}
