//! The load generator: signed order webhooks (Shopify's scheme: base64 HMAC-SHA256 of the
//! body), closed model (fixed concurrency) and open model (fixed arrival rate, latency from
//! each request's scheduled start, so a slow response cannot hide the requests queued behind
//! it).
use base64::Engine;
use hdrhistogram::Histogram;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use sqlx::postgres::PgListener;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

use crate::procs::Env;

pub struct Target {
    http: reqwest::Client,
    url: String,
    secret: String,
    template: String,
    next: AtomicU64,
}

impl Target {
    pub fn new(env: &Env, template: String) -> Arc<Target> {
        Arc::new(Target {
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(1024)
                // Below ingest's header-read timeout (10 s), which also closes idle
                // keep-alive connections: a request sent on a connection the server is closing
                // at that moment fails ("error sending request") through no fault of ingest.
                .pool_idle_timeout(Duration::from_secs(5))
                .timeout(Duration::from_secs(30))
                .build()
                .expect("static client configuration"),
            url: format!("{}/v1/webhooks/{}", env.base, env.store_id),
            secret: env.secret.clone(),
            template,
            next: AtomicU64::new(1),
        })
    }

    /// Send the next order; its internal id when ingest answered 2xx.
    async fn send(&self) -> Result<String, String> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let body = self.template.replace("__N__", &n.to_string());
        let mut mac = Hmac::<Sha256>::new_from_slice(self.secret.as_bytes()).expect("any key");
        mac.update(body.as_bytes());
        let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        let r = self
            .http
            .post(&self.url)
            .header("content-type", "application/json")
            .header("x-shopify-hmac-sha256", sig)
            .header("x-shopify-webhook-id", format!("bench-{n}"))
            .body(body)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = r.status();
        let _ = r.bytes().await;
        if status.is_success() {
            Ok(format!("ord-{n}"))
        } else {
            Err(format!("HTTP {status}"))
        }
    }
}

pub struct Outcome {
    pub rps: f64,
    /// Response times in microseconds.
    pub latency: Histogram<u64>,
    pub ok: usize,
    pub errors: usize,
    pub first_error: Option<String>,
    /// End to end: 202 → mapping row committed, in microseconds.
    pub delays: Option<Histogram<u64>>,
    /// Accepted webhooks whose mapping row was not seen.
    pub unseen: usize,
}

impl Outcome {
    fn empty() -> Outcome {
        Outcome {
            rps: 0.0,
            latency: histogram(),
            ok: 0,
            errors: 0,
            first_error: None,
            delays: None,
            unseen: 0,
        }
    }

    pub fn line(&self, label: &str) -> String {
        let ms = |q: f64| self.latency.value_at_quantile(q) as f64 / 1000.0;
        format!(
            "{label} {:>7.0} req/s   p50 {:>6.2} ms   p99 {:>6.2} ms   p99.9 {:>6.2} ms   ({} ok, {} failed{})",
            self.rps,
            ms(0.5),
            ms(0.99),
            ms(0.999),
            self.ok,
            self.errors,
            self.first_error
                .as_deref()
                .map(|e| format!(": {e}"))
                .unwrap_or_default()
        )
    }
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000, 3).expect("static bounds")
}

/// `n` webhooks from `concurrency` connections, each sending the next when its last is
/// answered.
pub async fn closed(t: &Arc<Target>, concurrency: usize, n: usize) -> anyhow::Result<Outcome> {
    let left = Arc::new(AtomicUsize::new(n));
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let t = t.clone();
        let left = left.clone();
        tasks.push(tokio::spawn(async move {
            let mut h = histogram();
            let (mut ok, mut errors, mut first_error) = (0, 0, None);
            while left
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| v.checked_sub(1))
                .is_ok()
            {
                let s = Instant::now();
                match t.send().await {
                    Ok(_) => ok += 1,
                    Err(e) => {
                        errors += 1;
                        first_error.get_or_insert(e);
                    }
                }
                h.saturating_record(s.elapsed().as_micros() as u64);
            }
            (h, ok, errors, first_error)
        }));
    }
    let mut out = Outcome::empty();
    for task in tasks {
        let (h, ok, errors, e) = task.await?;
        out.latency.add(&h)?;
        out.ok += ok;
        out.errors += errors;
        if out.first_error.is_none() {
            out.first_error = e;
        }
    }
    out.rps = out.ok as f64 / t0.elapsed().as_secs_f64();
    Ok(out)
}

/// `rate` webhooks a second for `secs` seconds, each sent at its scheduled time whatever the
/// others are doing. With a listener, also the delay from each 202 to its mapping's commit.
pub async fn open(
    t: &Arc<Target>,
    rate: u64,
    secs: u64,
    listener: Option<PgListener>,
) -> anyhow::Result<Outcome> {
    let accepted: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let seen: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let watching = listener.is_some();
    let listen_task = listener.map(|mut l| {
        let seen = seen.clone();
        tokio::spawn(async move {
            while let Ok(n) = l.recv().await {
                seen.lock()
                    .await
                    .insert(n.payload().to_owned(), Instant::now());
            }
        })
    });
    let total = rate * secs;
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let t0 = Instant::now();
    let mut tasks = Vec::with_capacity(total as usize);
    for i in 0..total {
        let scheduled = t0 + interval * i as u32;
        tokio::time::sleep_until(scheduled.into()).await;
        let t = t.clone();
        let accepted = accepted.clone();
        tasks.push(tokio::spawn(async move {
            let r = t.send().await;
            let done = Instant::now();
            if let Ok(id) = &r
                && watching
            {
                accepted.lock().await.insert(id.clone(), done);
            }
            (done - scheduled, r)
        }));
    }
    let mut out = Outcome::empty();
    for task in tasks {
        let (took, r) = task.await?;
        out.latency.saturating_record(took.as_micros() as u64);
        match r {
            Ok(_) => out.ok += 1,
            Err(e) => {
                out.errors += 1;
                out.first_error.get_or_insert(e);
            }
        }
    }
    out.rps = out.ok as f64 / t0.elapsed().as_secs_f64();
    if let Some(task) = listen_task {
        // Wait for every accepted webhook's mapping (the queue may still be draining).
        let want = accepted.lock().await.len();
        let deadline = Instant::now() + Duration::from_secs(180);
        while seen.lock().await.len() < want && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        task.abort();
        let accepted = accepted.lock().await;
        let seen = seen.lock().await;
        let mut delays = histogram();
        for (id, at) in accepted.iter() {
            match seen.get(id) {
                Some(s) => {
                    delays.saturating_record(s.saturating_duration_since(*at).as_micros() as u64)
                }
                None => out.unseen += 1,
            }
        }
        out.delays = Some(delays);
    }
    Ok(out)
}
