//! The fault suite (`just faults`; also part of `just test`): a stream of webhooks from two
//! tenants flows through ingest, the real broker, PostgreSQL and Redis to two real
//! `switchyard worker` processes, while, one phase at a time, workers are killed with
//! SIGKILL, PostgreSQL restarts, Redis stops, tenant A's provider flaps (30 % 503) and then
//! hangs. The provider is lookup-capable and ignores idempotency keys, so a retried create
//! that the hub did not recognise would show up as a duplicate record.
//!
//! For each phase it prints accepted webhooks, jobs settled, records at the provider,
//! duplicates and the time to recover (from the fault's end until every job of the phase
//! settled), and it requires: nothing lost, no duplicate record, and tenant B's throughput
//! while A's provider hangs at least half of its rate in the baseline phase.
//!
//! Last, on a 3-node RabbitMQ cluster started locally (`scripts/rabbit-cluster.sh`; the
//! workers and ingest are given all three addresses), the node leading the work queue is
//! stopped mid-stream and started again.
use serde_json::{Value, json};
use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use uuid::Uuid;
use wiremock::matchers::path_regex;
use wiremock::{Mock, Request, ResponseTemplate};

use crate::support::{API_KEY, Harness, Options, amqp_url, order};
use switchyard_core::webhook_auth::{WebhookAuth, WebhookPolicy};

/// Webhooks a second, per tenant, while a phase runs.
const RATE: u64 = 50;
/// How long each phase sends (and its fault lasts).
const PHASE: Duration = Duration::from_secs(6);
/// The longest a phase may take to settle after its fault ends.
const RECOVERY_LIMIT: Duration = Duration::from_secs(180);

const NORMAL: u8 = 0;
const FLAP: u8 = 1;
const HANG: u8 = 2;

/// (tenant path, reference) → ids created for it.
type Records = Arc<Mutex<HashMap<(String, String), Vec<String>>>>;

/// A provider that keeps every record it creates (by the body's `reference`), finds them by
/// reference, and ignores idempotency keys. Tenant A's half can be made to flap or hang.
#[derive(Clone, Default)]
struct Provider {
    records: Records,
    created: Arc<AtomicUsize>,
    calls: Arc<AtomicUsize>,
    mode_a: Arc<AtomicU8>,
}

impl Provider {
    fn set_a(&self, mode: u8) {
        self.mode_a.store(mode, Ordering::SeqCst);
    }

    /// (records, duplicates) among these references of tenant `path`.
    fn tally(&self, path: &str, references: &[String]) -> (usize, usize) {
        let r = self.records.lock().unwrap();
        let mut records = 0;
        let mut duplicates = 0;
        for reference in references {
            if let Some(ids) = r.get(&(path.to_owned(), reference.clone())) {
                records += 1;
                duplicates += ids.len() - 1;
            }
        }
        (records, duplicates)
    }
}

impl wiremock::Respond for Provider {
    fn respond(&self, r: &Request) -> ResponseTemplate {
        let tenant_path = r
            .url
            .path()
            .split('/')
            .nth(2)
            .unwrap_or_default()
            .to_owned();
        if tenant_path == "a-orders" {
            match self.mode_a.load(Ordering::SeqCst) {
                // Three calls in every ten, spread out.
                FLAP if (self.calls.fetch_add(1, Ordering::SeqCst) * 7) % 10 < 3 => {
                    return ResponseTemplate::new(503).set_body_json(json!({"error": "flapping"}));
                }
                // Longer than the integration's timeout: the call times out.
                HANG => return ResponseTemplate::new(503).set_delay(Duration::from_secs(30)),
                _ => {}
            }
        }
        match r.method.as_str() {
            "POST" => {
                let body: Value = serde_json::from_slice(&r.body).unwrap_or_default();
                let reference = body["reference"].as_str().unwrap_or_default().to_owned();
                let n = self.created.fetch_add(1, Ordering::SeqCst) + 1;
                let id = format!("{tenant_path}-{n}");
                self.records
                    .lock()
                    .unwrap()
                    .entry((tenant_path, reference))
                    .or_default()
                    .push(id.clone());
                ResponseTemplate::new(201).set_body_json(json!({"id": id}))
            }
            "GET" => {
                let wanted = r
                    .url
                    .query_pairs()
                    .find(|(k, _)| k == "reference")
                    .map(|(_, v)| v.into_owned())
                    .unwrap_or_default();
                let found: Vec<Value> = self
                    .records
                    .lock()
                    .unwrap()
                    .get(&(tenant_path, wanted.clone()))
                    .map(|ids| {
                        ids.iter()
                            .map(|id| json!({"id": id, "reference": wanted}))
                            .collect()
                    })
                    .unwrap_or_default();
                ResponseTemplate::new(200).set_body_json(found)
            }
            _ => ResponseTemplate::new(200).set_body_json(json!({"ok": true})),
        }
    }
}

/// A `switchyard worker` process of the test's deployment.
struct Workers {
    bin: String,
    env: Vec<(String, String)>,
    procs: Vec<Child>,
    log: std::path::PathBuf,
}

impl Workers {
    fn spawn(&self, n: usize) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log.join(format!("worker-{n}.log")))
            .expect("worker log");
        Command::new(&self.bin)
            .arg("worker")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("starting a worker process")
    }

    /// SIGKILL worker `n` and start it again.
    fn kill_and_restart(&mut self, n: usize) {
        let _ = self.procs[n].kill();
        let _ = self.procs[n].wait();
        self.procs[n] = self.spawn(n);
    }

    /// The last `lines` lines of each worker's log, for a failure message.
    fn log_tails(&self, lines: usize) -> String {
        (0..self.procs.len())
            .map(|n| {
                let log = std::fs::read_to_string(self.log.join(format!("worker-{n}.log")))
                    .unwrap_or_default();
                let all: Vec<&str> = log.lines().collect();
                let tail = all[all.len().saturating_sub(lines)..].join("\n");
                format!("--- worker {n}, last {lines} lines of its log ---\n{tail}")
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn stop(&mut self) {
        for p in &mut self.procs {
            let _ = p.kill();
            let _ = p.wait();
        }
    }
}

// A failed phase must not leave worker processes behind, consuming for a deployment that
// is gone.
impl Drop for Workers {
    fn drop(&mut self) {
        self.stop();
    }
}

#[derive(Debug, Default)]
struct Sent {
    /// Job ids of accepted webhooks, per tenant (`a`, `b`).
    jobs: HashMap<&'static str, Vec<Uuid>>,
    references: HashMap<&'static str, Vec<String>>,
    refused: usize,
}

/// Send `RATE` webhooks a second per tenant for `PHASE`, retrying a refused one as a sender
/// would (a 503 while the database restarts).
async fn send_phase(h: &Harness, sources: &[(&'static str, Uuid)], phase: &str) -> Sent {
    let sent = Arc::new(Mutex::new(Sent::default()));
    let mut tick = tokio::time::interval(Duration::from_millis(1000 / RATE));
    let started = Instant::now();
    let mut n = 0;
    let mut tasks = Vec::new();
    while started.elapsed() < PHASE {
        tick.tick().await;
        n += 1;
        for (tenant, source) in sources {
            let reference = format!("{phase}-{tenant}-{n}");
            let (h_http, url, sent) = (
                h.http.clone(),
                h.url(&format!("/v1/webhooks/{source}")),
                sent.clone(),
            );
            let tenant = *tenant;
            tasks.push(tokio::spawn(async move {
                let body = order(&reference, 1, "1.00");
                for _ in 0..200 {
                    let resp = h_http
                        .post(&url)
                        .header("content-type", "application/json")
                        .header("x-api-key", API_KEY)
                        .header("x-event-id", &reference)
                        .body(body.to_string())
                        .send()
                        .await;
                    match resp {
                        Ok(r) if r.status() == 202 => {
                            let v: Value = r.json().await.unwrap_or_default();
                            let mut s = sent.lock().unwrap();
                            for j in v["jobs"].as_array().into_iter().flatten() {
                                if let Some(id) = j.as_str().and_then(|s| s.parse().ok()) {
                                    s.jobs.entry(tenant).or_default().push(id);
                                }
                            }
                            s.references.entry(tenant).or_default().push(reference);
                            return;
                        }
                        _ => {
                            sent.lock().unwrap().refused += 1;
                            tokio::time::sleep(Duration::from_millis(250)).await;
                        }
                    }
                }
                panic!("webhook {reference} was refused for 50 s");
            }));
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    Arc::try_unwrap(sent).unwrap().into_inner().unwrap()
}

/// How many of these jobs have succeeded.
async fn succeeded(h: &Harness, jobs: &[Uuid]) -> usize {
    loop {
        match sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM jobs WHERE id = ANY($1) AND status = 'succeeded'",
        )
        .bind(jobs)
        .fetch_one(h.store.pool())
        .await
        {
            Ok(n) => return n as usize,
            // The database may be restarting.
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// Wait until every job settled (bounded); the time it took.
async fn recover(h: &Harness, jobs: &[Uuid]) -> Duration {
    let since = Instant::now();
    while succeeded(h, jobs).await < jobs.len() && since.elapsed() < RECOVERY_LIMIT {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    since.elapsed()
}

fn pg_restart() {
    let ver = std::fs::read_dir("/etc/postgresql")
        .expect("a Debian PostgreSQL cluster under /etc/postgresql")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .max_by_key(|v| v.parse::<u32>().unwrap_or(0))
        .expect("a PostgreSQL version");
    let ok = Command::new("pg_ctlcluster")
        .args(["--skip-systemctl-redirect", &ver, "main", "restart"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "could not restart PostgreSQL {ver} (run as root)");
}

fn redis(up: bool) {
    if up {
        crate::redis_outage::start_redis();
    } else {
        let _ = Command::new("redis-cli")
            .args(["shutdown", "nosave"])
            .status();
    }
}

struct Row {
    phase: &'static str,
    accepted: usize,
    settled: usize,
    records: usize,
    duplicates: usize,
    recovery: Duration,
    note: String,
}

/// Two tenants, each a store feeding its own ERP on `provider`; A's ERP is the one that
/// misbehaves. The sources, by tenant.
async fn deployment(h: &Harness, provider: &Provider) -> Vec<(&'static str, Uuid)> {
    Mock::given(path_regex("^/api/"))
        .respond_with(provider.clone())
        .mount(&h.provider)
        .await;
    let mut sources = Vec::new();
    for (tenant, path) in [("a", "a-orders"), ("b", "b-orders")] {
        let source = h
            .integration_full(
                tenant,
                &format!("store-{tenant}"),
                "webhook",
                json!({}),
                json!({"entity": {"value": "order"}, "event_id": {"header": "X-Event-Id"},
                       "version": {"pointer": "/version"}}),
                None,
                WebhookPolicy::new(WebhookAuth::api_keys([API_KEY])),
                &[],
            )
            .await;
        let erp = h
            .integration_full(
                tenant,
                &format!("erp-{tenant}"),
                "rest",
                json!({
                    "base_url": h.provider.uri(), "auth": {"type": "bearer"}, "timeout_ms": 2000,
                    "idempotency_header": null,
                    "retry": {"initial_delay_ms": 200, "max_delay_ms": 2000, "max_attempts": 100,
                              "max_age_secs": 3600},
                    "breaker": {"open_wait_ms": 2000},
                    "entities": {"order": {
                        "create": {"method": "POST", "path": format!("/api/{path}")},
                        "update": {"method": "PUT", "path": format!("/api/{path}/{{external_id}}")},
                        "lookup": {"path": format!("/api/{path}"), "query": {"reference": "{key}"},
                                   "key_pointer": "/id"},
                        "body": {"reference": "/id", "total": "/total"}
                    }}
                }),
                json!({}),
                Some(json!({"token": "t"})),
                WebhookPolicy::new(WebhookAuth::Disabled),
                &[],
            )
            .await;
        h.route(source, &[erp]).await;
        sources.push((tenant, source));
    }
    sources
}

/// Two `switchyard worker` processes of `h`'s deployment, on the broker at `amqp`.
/// `extra`: environment that overrides the defaults.
async fn start_workers(h: &Harness, amqp: &str, name: &str, extra: &[(&str, &str)]) -> Workers {
    let bin = std::env::var("SWITCHYARD_BIN")
        .unwrap_or_else(|_| format!("{}/../target/debug/switchyard", env!("CARGO_MANIFEST_DIR")));
    assert!(
        std::path::Path::new(&bin).exists(),
        "{bin} is missing: `cargo build -p switchyard` first (`just faults` and `just test` do)"
    );
    let log = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../target/faults")
        .join(name);
    // This run's logs only: a failure shows their tails.
    let _ = std::fs::remove_dir_all(&log);
    std::fs::create_dir_all(&log).unwrap();
    let env: Vec<(String, String)> = h
        .service_env(amqp)
        .into_iter()
        .chain(
            extra
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        )
        .collect();
    let mut workers = Workers {
        bin,
        env,
        procs: Vec::new(),
        log,
    };
    for n in 0..2 {
        let p = workers.spawn(n);
        workers.procs.push(p);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    for (n, p) in workers.procs.iter_mut().enumerate() {
        if let Ok(Some(status)) = p.try_wait() {
            let log = std::fs::read_to_string(workers.log.join(format!("worker-{n}.log")))
                .unwrap_or_default();
            panic!("worker {n} exited at once ({status}):\n{log}");
        }
    }
    workers
}

#[derive(Clone, Copy, PartialEq)]
enum Fault {
    None,
    KillWorkers,
    RestartPostgres,
    StopRedis,
    Flap,
    Hang,
    /// Stop the cluster node leading the work queue `queue`, then start it again.
    StopLeader(&'static str),
}

fn cluster(args: &[&str]) -> Option<String> {
    script("rabbit-cluster.sh", args)
}

/// Run one of the project's scripts; its output if it succeeded.
fn script(name: &str, args: &[&str]) -> Option<String> {
    let script = format!("{}/../scripts/{name}", env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(script).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// One phase: send for `PHASE` under `fault`, end the fault, wait for every job to settle,
/// and count. `baseline_b`: the share of tenant B's jobs that had succeeded by the end of the
/// baseline phase's sending (set by it).
#[allow(clippy::too_many_arguments)]
async fn run_phase(
    h: &Harness,
    sources: &[(&'static str, Uuid)],
    provider: &Provider,
    workers: &mut Workers,
    i: usize,
    phase: &'static str,
    fault: Fault,
    baseline_b: &mut f64,
) -> Row {
    let key = format!("p{i}");
    let started = Instant::now();
    let sending = send_phase(h, sources, &key);
    let faulting = async {
        match fault {
            Fault::None => None,
            Fault::KillWorkers => {
                let mut n = 0;
                while started.elapsed() < PHASE {
                    tokio::time::sleep(Duration::from_millis(1500)).await;
                    workers.kill_and_restart(n % 2);
                    n += 1;
                }
                Some(format!("{n} workers killed"))
            }
            Fault::RestartPostgres => {
                tokio::time::sleep(Duration::from_secs(1)).await;
                tokio::task::spawn_blocking(pg_restart).await.unwrap();
                None
            }
            Fault::StopRedis => {
                tokio::time::sleep(Duration::from_secs(1)).await;
                redis(false);
                tokio::time::sleep(PHASE - Duration::from_secs(2)).await;
                redis(true);
                None
            }
            Fault::Flap => {
                provider.set_a(FLAP);
                None
            }
            Fault::Hang => {
                provider.set_a(HANG);
                None
            }
            Fault::StopLeader(queue) => {
                tokio::time::sleep(Duration::from_millis(1500)).await;
                let leader = tokio::task::spawn_blocking(move || cluster(&["leader", queue]))
                    .await
                    .unwrap()
                    .expect("the cluster names the queue's leader");
                let n = leader
                    .trim_start_matches("sy")
                    .chars()
                    .next()
                    .unwrap()
                    .to_string();
                tokio::task::spawn_blocking({
                    let n = n.clone();
                    move || cluster(&["stop-node", &n])
                })
                .await
                .unwrap();
                tokio::time::sleep(PHASE.saturating_sub(started.elapsed())).await;
                tokio::task::spawn_blocking({
                    let n = n.clone();
                    move || cluster(&["start-node", &n])
                })
                .await
                .unwrap()
                .expect("the stopped node starts again");
                Some(format!(
                    "stopped sy{n}, the work queue's leader, for the rest of the phase"
                ))
            }
        }
    };
    let (sent, fault_note) = tokio::join!(sending, faulting);
    // How B fared while the fault was on: the share of its jobs that had succeeded by the
    // time the last webhook of the phase was accepted. Not its jobs per second: the senders
    // share this process with ingest and the mock provider, and when the hung provider's
    // connections slow them the window stretches (from 6 s to 12-13 s on a slow machine)
    // while B's jobs are offered no faster, which halved a rate with no worker at fault.
    let b_jobs = sent.jobs.get("b").cloned().unwrap_or_default();
    let window = started.elapsed().as_secs_f64();
    let b_done = succeeded(h, &b_jobs).await;
    let b_share = b_done as f64 / b_jobs.len().max(1) as f64;
    provider.set_a(NORMAL);
    let all: Vec<Uuid> = sent.jobs.values().flatten().copied().collect();
    let recovery = recover(h, &all).await;
    let settled = succeeded(h, &all).await;
    let refs = |t: &str| sent.references.get(t).cloned().unwrap_or_default();
    let (ra, da) = provider.tally("a-orders", &refs("a"));
    let (rb, db) = provider.tally("b-orders", &refs("b"));
    let mut note = format!("{} refused and resent", sent.refused);
    if let Some(n) = fault_note {
        note = format!("{n}; {note}");
    }
    if fault == Fault::None {
        *baseline_b = b_share;
    }
    if fault == Fault::Hang {
        note = format!(
            "tenant B's jobs done as they were sent while A hung: {b_done} of {} ({:.0} %), \
             {:.0} % of the baseline's {:.0} % (the phase's webhooks were accepted over \
             {window:.1} s)",
            b_jobs.len(),
            100.0 * b_share,
            100.0 * b_share / baseline_b.max(f64::MIN_POSITIVE),
            100.0 * *baseline_b
        );
        assert!(
            b_share >= *baseline_b / 2.0,
            "while A's provider hung, tenant B got less than half as many of its jobs done as they were sent as in the baseline: {note}"
        );
    }
    if settled < all.len() {
        // Stop here, not after every later phase has waited its limit too, and say where
        // the jobs stopped: their statuses, and what the workers logged.
        let statuses: Vec<(String, i64)> = sqlx::query_as(
            "SELECT status::text, count(*) FROM jobs WHERE id = ANY($1) GROUP BY 1 ORDER BY 1",
        )
        .bind(&all)
        .fetch_all(h.store.pool())
        .await
        .unwrap_or_default();
        panic!(
            "{phase}: {} of {} accepted jobs did not succeed within {} s of the fault's end \
             ({note}); their statuses: {statuses:?}; records at the provider: {}\n{}",
            all.len() - settled,
            all.len(),
            RECOVERY_LIMIT.as_secs(),
            ra + rb,
            workers.log_tails(40)
        );
    }
    Row {
        phase,
        accepted: all.len(),
        settled,
        records: ra + rb,
        duplicates: da + db,
        recovery,
        note,
    }
}

// Two threads: the test process serves ingest, the mock provider and the senders at once,
// and on one thread the provider's hung connections and the workers' retries against it
// slowed the senders (a phase's six seconds of webhooks took twelve), which read as tenant
// B's throughput falling while A hung.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_of_jobs_survives_killed_workers_and_restarted_services() {
    // Queues for every provider: the worker processes declare them all.
    let providers = switchyard_providers::target_providers();
    let providers: Vec<&str> = providers.iter().map(String::as_str).collect();
    let h = Harness::with(Options {
        worker: false,
        ..Options::with_providers(&providers)
    })
    .await;
    let provider = Provider::default();
    let sources = deployment(&h, &provider).await;
    let mut workers = start_workers(&h, &amqp_url(), "local", &[]).await;
    let mut rows: Vec<Row> = Vec::new();
    let mut baseline_b = 0.0;
    let phases = [
        ("baseline", Fault::None),
        ("worker SIGKILL every 1.5 s", Fault::KillWorkers),
        ("PostgreSQL restart", Fault::RestartPostgres),
        ("Redis stopped 4 s", Fault::StopRedis),
        ("tenant A's provider: 30 % 503", Fault::Flap),
        ("tenant A's provider hangs", Fault::Hang),
    ];
    for (i, (phase, fault)) in phases.into_iter().enumerate() {
        let row = run_phase(
            &h,
            &sources,
            &provider,
            &mut workers,
            i,
            phase,
            fault,
            &mut baseline_b,
        )
        .await;
        rows.push(row);
    }
    workers.stop();
    redis(true);
    h.shutdown().await;

    // The same stream on a 3-node cluster, whose work-queue leader is stopped.
    let started = tokio::task::spawn_blocking(|| cluster(&["start"]))
        .await
        .unwrap();
    assert!(
        started.is_some(),
        "the local 3-node RabbitMQ cluster did not start (scripts/rabbit-cluster.sh start)"
    );
    let nodes = (1..=3)
        .map(|n| format!("amqp://guest:guest@127.0.0.1:{}/%2f", 5680 + n))
        .collect::<Vec<_>>()
        .join(",");
    let h = Harness::with(Options {
        worker: false,
        amqp_url: nodes.clone(),
        ..Options::with_providers(&providers)
    })
    .await;
    assert!(h.broker.wait_connected(Duration::from_secs(60)).await);
    let provider = Provider::default();
    let sources = deployment(&h, &provider).await;
    let mut workers = start_workers(&h, &nodes, "cluster", &[]).await;
    let queue: &'static str = Box::leak(h.topology.queue("rest").into_boxed_str());
    let row = run_phase(
        &h,
        &sources,
        &provider,
        &mut workers,
        9,
        "3-node RabbitMQ: queue leader stopped",
        Fault::StopLeader(queue),
        &mut baseline_b,
    )
    .await;
    rows.push(row);
    workers.stop();
    h.shutdown().await;
    cluster(&["stop"]);

    println!(
        "\nfault suite: two tenants, {RATE} webhooks/s each, {} s per phase, 2 worker processes",
        PHASE.as_secs()
    );
    println!(
        "| phase | accepted | settled | records at provider | duplicates | lost | recovery (s) | note |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---|");
    for r in &rows {
        println!(
            "| {} | {} | {} | {} | {} | {} | {:.1} | {} |",
            r.phase,
            r.accepted,
            r.settled,
            r.records,
            r.duplicates,
            r.accepted - r.settled,
            r.recovery.as_secs_f64(),
            r.note
        );
    }
    let total: usize = rows.iter().map(|r| r.accepted).sum();
    assert!(total >= 3000, "only {total} jobs went through the suite");
    for r in &rows {
        assert_eq!(r.settled, r.accepted, "{}: jobs lost", r.phase);
        assert_eq!(
            r.records, r.accepted,
            "{}: records missing at the provider",
            r.phase
        );
        assert_eq!(
            r.duplicates, 0,
            "{}: duplicate records at the provider",
            r.phase
        );
    }
}

/// TLS to RabbitMQ and Redis, end to end: worker processes given `amqps://` and `rediss://`
/// URLs, and told to trust a private CA through `SSL_CERT_FILE` (as an operator would), carry
/// a stream of jobs; the broker says every one of their connections is TLS, and the breaker's
/// state is in the Redis that listens only for TLS.
#[tokio::test]
async fn workers_reach_rabbitmq_and_redis_over_tls() {
    let ca = tokio::task::spawn_blocking(|| script("tls-services.sh", &["start"]))
        .await
        .unwrap()
        .expect("the TLS RabbitMQ node and Redis did not start (scripts/tls-services.sh start)");
    let providers = switchyard_providers::target_providers();
    let providers: Vec<&str> = providers.iter().map(String::as_str).collect();
    // The test's own ingest publishes over the node's plain port; the workers speak TLS.
    let h = Harness::with(Options {
        worker: false,
        amqp_url: "amqp://guest:guest@127.0.0.1:5690/%2f".into(),
        ..Options::with_providers(&providers)
    })
    .await;
    assert!(h.broker.wait_connected(Duration::from_secs(30)).await);
    let provider = Provider::default();
    let sources = deployment(&h, &provider).await;
    let mut workers = start_workers(
        &h,
        "amqps://guest:guest@localhost:5691/%2f",
        "tls",
        &[
            ("SWITCHYARD_REDIS_URL", "rediss://localhost:6390"),
            ("SSL_CERT_FILE", &ca),
        ],
    )
    .await;
    let sent = send_phase(&h, &sources, "tls").await;
    let jobs: Vec<Uuid> = sent.jobs.values().flatten().copied().collect();
    recover(&h, &jobs).await;
    let done = succeeded(&h, &jobs).await;
    let connections = script("tls-services.sh", &["ssl-connections"]).unwrap_or_default();
    let redis_keys = Command::new("redis-cli")
        .args([
            "--tls",
            "--cacert",
            &ca,
            "-h",
            "localhost",
            "-p",
            "6390",
            "dbsize",
        ])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    workers.stop();
    h.shutdown().await;
    script("tls-services.sh", &["stop"]);

    assert!(!jobs.is_empty());
    assert_eq!(
        done,
        jobs.len(),
        "every job succeeded through the TLS broker"
    );
    let ssl: Vec<&str> = connections.lines().map(str::trim).collect();
    // The test's own (plain) connection, and at least one per worker process.
    assert!(
        ssl.iter().filter(|s| **s == "true").count() >= 2,
        "the workers' broker connections are TLS: {connections:?}"
    );
    assert!(
        redis_keys.parse::<u64>().is_ok_and(|n| n > 0),
        "the workers kept their breaker state in the TLS-only Redis (keys: {redis_keys:?})"
    );
}
