//! The system under test: a fresh database and queues, the nginx provider, and `switchyard`
//! processes (release build) started and stopped as an operator would.
use anyhow::{Context, bail};
use lapin::options::{QueueDeclareOptions, QueueDeleteOptions, QueuePurgeOptions};
use lapin::types::FieldTable;
use lapin::{Connection, ConnectionProperties};
use sqlx::PgPool;
use sqlx::postgres::{PgListener, PgPoolOptions};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::Settings;

/// The benchmark deployment's admin token (its own database; nothing else accepts it).
const ADMIN_TOKEN: &str = "switchyard-bench-admin-token";
const PREFIX: &str = "bench.";
const LISTEN: &str = "127.0.0.1:8092";
const PROVIDER: &str = "127.0.0.1:18080";

pub struct Env {
    bin: PathBuf,
    run: PathBuf,
    envs: Vec<(String, String)>,
    pub db: PgPool,
    amqp: Connection,
    /// Stands in for autovacuum when the server has it switched off (see [`maintain`]).
    maintenance: Option<tokio::task::JoinHandle<()>>,
    pub store_id: String,
    pub secret: String,
    pub base: String,
}

pub fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "this machine".into())
}

impl Env {
    /// A fresh database, fresh queues, the provider running, and the integrations made.
    pub async fn prepare(s: &Settings) -> anyhow::Result<Env> {
        let bin: PathBuf = std::env::var("BENCH_BIN")
            .unwrap_or_else(|_| "target/release/switchyard".into())
            .into();
        if !bin.exists() {
            bail!(
                "{} is missing: build it with `cargo build --release -p switchyard` (`just bench` does)",
                bin.display()
            );
        }
        let run = PathBuf::from(".run/bench");
        std::fs::create_dir_all(run.join("nginx/tmp"))?;
        // A previous run that was interrupted may have left its nginx behind.
        if stop_nginx() {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        if std::net::TcpListener::bind(PROVIDER).is_err() {
            bail!(
                "{PROVIDER} is taken: the benchmark's nginx provider needs it (is `just up`'s mock provider running? `just down` stops it)"
            );
        }
        if std::net::TcpListener::bind(LISTEN).is_err() {
            bail!("{LISTEN} is taken: the benchmark's ingest needs it");
        }
        // The shared workload's nginx, plus a status page that counts its requests.
        let conf = std::fs::read_to_string(s.shared.join("nginx-mock.conf"))
            .context("reading nginx-mock.conf")?;
        let conf = conf.replacen(
            "        location / {",
            "        location = /nginx_status {\n            stub_status;\n        }\n\n        location / {",
            1,
        );
        let nginx_conf = std::fs::canonicalize(&run)?.join("nginx.conf");
        std::fs::write(&nginx_conf, conf)?;
        let prefix = format!("{}/", std::fs::canonicalize(run.join("nginx"))?.display());
        let ok = Command::new("nginx")
            .args(["-p", &prefix, "-c"])
            .arg(&nginx_conf)
            .status()
            .context("starting nginx (apt-get install -y nginx)")?;
        if !ok.success() {
            bail!("nginx did not start; see {prefix}nginx-error.log");
        }

        let admin = PgPoolOptions::new()
            .max_connections(1)
            .connect(&format!("{}/postgres", s.pg))
            .await
            .context("connecting to PostgreSQL")?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            s.db
        )))
        .execute(&admin)
        .await?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {}", s.db)))
            .execute(&admin)
            .await?;
        admin.close().await;
        // The database is on this machine: no TLS, as a co-located deployment would connect
        // (the broker's connection is plain AMQP too). Over TLS, encryption on both ends was
        // about a tenth of the machine's CPU per job.
        let db_url = format!("{}/{}?sslmode=disable", s.pg, s.db);

        let amqp = Connection::connect(&s.amqp, ConnectionProperties::default())
            .await
            .context("connecting to RabbitMQ")?;
        let ch = amqp.create_channel().await?;
        for q in ["sy.q.rest", "sy.dlq.rest", "sy.sync"] {
            let _ = ch
                .queue_delete(format!("{PREFIX}{q}").into(), QueueDeleteOptions::default())
                .await;
        }
        let _ = ch.close(200, "done".into()).await;

        let key = output(Command::new(&bin).args(["keys", "generate", "--id", "bench"]))?;
        let envs: Vec<(String, String)> = vec![
            ("SWITCHYARD_DATABASE_URL".into(), db_url.clone()),
            ("SWITCHYARD_QUEUE_PREFIX".into(), PREFIX.into()),
            ("SWITCHYARD_LISTEN".into(), LISTEN.into()),
            ("SWITCHYARD_VAULT_KEYS".into(), key.trim().into()),
            // The CLI sets the benchmark up through the API, with this token.
            ("SWITCHYARD_ADMIN_TOKEN".into(), ADMIN_TOKEN.into()),
            // The benchmark's provider is on this machine.
            ("SWITCHYARD_EGRESS__ALLOW".into(), "127.0.0.0/8".into()),
            ("RUST_LOG".into(), "warn".into()),
        ];
        let mut env = Env {
            bin,
            run,
            envs,
            db: PgPoolOptions::new()
                .max_connections(4)
                .connect(&db_url)
                .await?,
            amqp,
            maintenance: None,
            store_id: String::new(),
            secret: "bench-shopify-secret".into(),
            base: format!("http://{LISTEN}"),
        };
        env.cli(&["migrate"])?;
        let autovacuum: String = sqlx::query_scalar("SHOW autovacuum")
            .fetch_one(&env.db)
            .await?;
        if autovacuum != "on" {
            println!(
                "   (this server runs with autovacuum off: the bench analyses and vacuums the tables that cross autovacuum's default thresholds, every 10 s)\n"
            );
            env.maintenance = Some(tokio::spawn(maintain(env.db.clone())));
        }
        std::fs::write(env.run.join("secret"), &env.secret)?;
        // The CLI is a client of the API: an ingest for the set-up, stopped after it.
        let setup = env.start("ingest").await?;
        let store = env.cli(&[
            "integrations",
            "create",
            "--name",
            "bench-store",
            "--provider",
            "webhook",
            "--status",
            "active",
            "--output",
            "json",
            "--inbound",
            r#"{"entity": {"value": "order"}}"#,
            "--webhook-auth",
            "shopify",
            "--webhook-secret-file",
            ".run/bench/secret",
        ])?;
        let v: serde_json::Value = serde_json::from_str(&store)?;
        env.store_id = v["id"].as_str().context("the store's id")?.to_owned();
        env.cli(&[
            "integrations", "create", "--name", "bench-target", "--provider", "rest",
            // A target receives no webhooks: its scheme is the default, `disabled`.
            "--status", "active", "--settings",
            &format!(r#"{{"base_url": "http://{PROVIDER}", "entities": {{"order": {{"create": {{"method": "POST", "path": "/api/orders"}}}}}}}}"#),
        ])?;
        env.cli(&[
            "routes",
            "add",
            "--from",
            "bench-store",
            "--entity",
            "order",
            "--to",
            "bench-target",
        ])?;
        drop(setup);
        Ok(env)
    }

    fn cli(&self, args: &[&str]) -> anyhow::Result<String> {
        output(
            Command::new(&self.bin)
                .args(args)
                .envs(self.envs.clone())
                .env("SWITCHYARD_URL", &self.base)
                .env("SWITCHYARD_TOKEN", ADMIN_TOKEN),
        )
    }

    /// Start `switchyard <what>` and wait until it is ready.
    pub async fn start(&self, what: &str) -> anyhow::Result<Proc> {
        let log = std::fs::File::create(self.run.join(format!("{what}.log")))?;
        // Postgres allows 100 connections here: ingest batches its writes and needs few; the
        // worker needs its concurrency and a few more.
        let pool = if what == "ingest" { "16" } else { "40" };
        let child = Command::new(&self.bin)
            .arg(what)
            .envs(self.envs.clone())
            .env("SWITCHYARD_DATABASE_MAX_CONNECTIONS", pool)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting switchyard {what}"))?;
        let p = Proc { child };
        if what == "ingest" {
            let http = reqwest::Client::new();
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if let Ok(r) = http.get(format!("{}/readyz", self.base)).send().await
                    && r.status().is_success()
                {
                    break;
                }
                if Instant::now() > deadline {
                    bail!("ingest did not become ready; see .run/bench/ingest.log");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        } else {
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        Ok(p)
    }

    pub async fn queue_depth(&self) -> anyhow::Result<u32> {
        let ch = self.amqp.create_channel().await?;
        let q = ch
            .queue_declare(
                format!("{PREFIX}sy.q.rest").into(),
                QueueDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await?;
        let _ = ch.close(200, "done".into()).await;
        Ok(q.message_count())
    }

    pub async fn purge_queue(&self) -> anyhow::Result<()> {
        let ch = self.amqp.create_channel().await?;
        ch.queue_purge(
            format!("{PREFIX}sy.q.rest").into(),
            QueuePurgeOptions::default(),
        )
        .await?;
        let _ = ch.close(200, "done".into()).await;
        Ok(())
    }

    /// The provider's request count so far (nginx's stub_status).
    pub async fn provider_requests(&self) -> anyhow::Result<u64> {
        let text = reqwest::get(format!("http://{PROVIDER}/nginx_status"))
            .await?
            .text()
            .await?;
        // "Active connections: 1\nserver accepts handled requests\n 3 3 5\n…"
        let n = text
            .lines()
            .nth(2)
            .and_then(|l| l.split_whitespace().nth(2))
            .and_then(|v| v.parse::<u64>().ok())
            .context("reading nginx's request count")?;
        Ok(n)
    }

    /// Wait until `n` mapping rows exist for records made since `since` (the record ids are
    /// UUIDv7, ordered by time, so the count reads only the phase's own rows however many
    /// the database holds): how long they took from this call, by the database's clock, and
    /// the worker's resident memory, sampled each second.
    pub async fn wait_mappings(
        &self,
        since: uuid::Uuid,
        n: usize,
        worker: &Proc,
        within: Duration,
    ) -> anyhow::Result<Mapped> {
        let deadline = Instant::now() + within;
        // The phase's length is read off the database's clock: from here to the last
        // mapping's write, whenever the loop below sees it.
        let started: f64 =
            sqlx::query_scalar("SELECT extract(epoch FROM clock_timestamp())::float8")
                .fetch_one(&self.db)
                .await?;
        let mut samples = Vec::new();
        let mut last_sample = Instant::now() - Duration::from_secs(1);
        loop {
            if last_sample.elapsed() >= Duration::from_secs(1) {
                samples.push(worker.rss_mb());
                last_sample = Instant::now();
            }
            // The records' links at targets (the mappings).
            let have: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM record_links WHERE record_id >= $1 AND NOT origin \
                 AND deleted_at IS NULL",
            )
            .bind(since)
            .fetch_one(&self.db)
            .await?;
            if have as usize >= n {
                samples.push(worker.rss_mb());
                let last: f64 = sqlx::query_scalar(
                    "SELECT extract(epoch FROM max(written_at))::float8 FROM record_links \
                     WHERE record_id >= $1 AND NOT origin AND deleted_at IS NULL",
                )
                .bind(since)
                .fetch_one(&self.db)
                .await?;
                return Ok(Mapped {
                    secs: last - started,
                    rss_mb: samples,
                });
            }
            if Instant::now() > deadline {
                bail!("only {have} of {n} mappings after {within:?}; see .run/bench/worker.log");
            }
            // Counting rows costs the database (≈ 1 ms per thousand rows, charged to
            // PostgreSQL's CPU per item): once a second while far from the end, every 100 ms
            // near it. Counting every 10 ms near the end was an eighth of PostgreSQL's CPU
            // in the processing phase. How late the count sees the end does not change the
            // phase's length (the last write's time), only the CPU lines' window.
            let near = have as usize * 100 >= n * 97;
            tokio::time::sleep(Duration::from_millis(if near { 100 } else { 1000 })).await;
        }
    }

    /// Let the database catch up between phases (VACUUM ANALYZE, then a checkpoint), so
    /// that one phase's maintenance does not land on the next one's figures. Growing the
    /// database by a million mappings in seconds writes enough WAL to start a checkpoint,
    /// which then ran through the phases after it: ingest's p99 at 1,000/s was 55–177 ms
    /// behind it (six runs), 7 ms without the growth.
    pub async fn settle(&self) -> anyhow::Result<()> {
        sqlx::raw_sql("VACUUM ANALYZE").execute(&self.db).await?;
        // Needs a superuser or `pg_checkpoint`; without either, phases may share one.
        if let Err(e) = sqlx::raw_sql("CHECKPOINT").execute(&self.db).await {
            eprintln!("   (no checkpoint between phases: {e})");
        }
        Ok(())
    }

    pub async fn distinct_external_ids(&self, since: uuid::Uuid) -> anyhow::Result<i64> {
        Ok(sqlx::query_scalar(
            "SELECT count(DISTINCT external_id) FROM record_links WHERE record_id >= $1 \
             AND NOT origin AND deleted_at IS NULL",
        )
        .bind(since)
        .fetch_one(&self.db)
        .await?)
    }

    /// A NOTIFY, with the source's id, when a record's link at a target commits (for the
    /// end-to-end delays). The look-up names `deleted_at IS NULL` so that it uses the
    /// links' partial index: without it, every insert scanned the whole table and the
    /// bench's own trigger was most of PostgreSQL's CPU in the end-to-end phase.
    pub async fn notify_on_mappings(&self) -> anyhow::Result<()> {
        sqlx::raw_sql(
            "CREATE OR REPLACE FUNCTION bench_mapping_notify() RETURNS trigger AS $$ \
             BEGIN IF NOT NEW.origin THEN PERFORM pg_notify('bench_mapping', \
               (SELECT external_id FROM record_links WHERE record_id = NEW.record_id AND origin AND deleted_at IS NULL LIMIT 1)); \
             END IF; RETURN NEW; END $$ \
             LANGUAGE plpgsql; \
             CREATE TRIGGER bench_mapping_notify AFTER INSERT ON record_links \
             FOR EACH ROW EXECUTE FUNCTION bench_mapping_notify();",
        )
        .execute(&self.db)
        .await?;
        Ok(())
    }

    pub async fn listen_mappings(&self) -> anyhow::Result<PgListener> {
        let mut l = PgListener::connect_with(&self.db).await?;
        l.listen("bench_mapping").await?;
        Ok(l)
    }

    pub async fn finish(self) {
        if let Some(m) = &self.maintenance {
            m.abort();
        }
        stop_nginx();
        self.db.close().await;
        let _ = self.amqp.close(200, "done".into()).await;
        // The database stays for inspection; the next run drops it.
    }
}

impl Env {
    /// Grow the database to a deployment's size: `integrations` more integrations (spread
    /// over 100 tenants) and `links` more mappings (records known in two systems each: half
    /// of them between the bench's own store and target, whose look-ups the jobs then share
    /// an index with, the rest between the new integrations). The record ids sort before
    /// any the worker makes.
    pub async fn grow(&self, integrations: i64, links: i64) -> anyhow::Result<()> {
        let store: uuid::Uuid = self.store_id.parse()?;
        let mut tx = self.db.begin().await?;
        sqlx::query(
            "INSERT INTO integrations (id, tenant, name, provider, status) \
             SELECT ('00000000-0000-4000-8000-' || lpad(to_hex(i), 12, '0'))::uuid, \
               'tenant-' || (i % 100), 'grown-' || i, 'rest', 'active' \
             FROM generate_series(1, $1) i",
        )
        .bind(integrations)
        .execute(&mut *tx)
        .await?;
        let records = links / 2;
        sqlx::query(
            "WITH b AS (SELECT tenant FROM integrations WHERE id = $2) \
             INSERT INTO records (id, tenant, entity) \
             SELECT ('00000000-0000-7000-8000-' || lpad(to_hex(i), 12, '0'))::uuid, b.tenant, 'order' \
             FROM b, generate_series(1, $1) i",
        )
        .bind(records)
        .bind(store)
        .execute(&mut *tx)
        .await?;
        // Each record: its origin link and its link at a target.
        sqlx::query(
            "WITH b AS (SELECT tenant FROM integrations WHERE id = $2), \
             t AS (SELECT id FROM integrations WHERE name = 'bench-target' AND deleted_at IS NULL) \
             INSERT INTO record_links (record_id, tenant, integration_id, entity, external_id, origin) \
             SELECT ('00000000-0000-7000-8000-' || lpad(to_hex(i), 12, '0'))::uuid, b.tenant, \
               CASE WHEN i % 2 = 0 AND side = 'src' THEN $2 \
                 WHEN i % 2 = 0 THEN t.id \
                 ELSE ('00000000-0000-4000-8000-' || \
                   lpad(to_hex((i + (side = 'ext')::int) % $3 + 1), 12, '0'))::uuid END, \
               'order', side || '-grown-' || i, side = 'src' \
             FROM b, t, generate_series(1, $1) i, (VALUES ('src'), ('ext')) v(side) \
             ORDER BY i",
        )
        .bind(records)
        .bind(store)
        .bind(integrations)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }
}

/// What autovacuum does, on its default thresholds, for a server that has it switched off
/// (this machine's PostgreSQL does): every 10 seconds (autovacuum's default is a minute, too
/// long for a phase of this bench's length), analyse a table once more than 50 rows plus a
/// tenth of it changed, and vacuum it once more than 50 plus a fifth of it are dead.
/// Without it, a table that grew from empty during a phase kept the plans made when it was
/// empty, and the worker's look-ups scanned whole indexes (a sixth of the throughput). What
/// it costs counts in PostgreSQL's CPU, as autovacuum's would.
async fn maintain(db: PgPool) {
    loop {
        tokio::time::sleep(Duration::from_secs(10)).await;
        let due: Vec<(String, bool)> = match sqlx::query_as(
            "SELECT s.relname::text, s.n_dead_tup > 50 + 0.2 * greatest(c.reltuples, 0) \
             FROM pg_stat_user_tables s JOIN pg_class c ON c.oid = s.relid \
             WHERE s.n_dead_tup > 50 + 0.2 * greatest(c.reltuples, 0) \
                OR s.n_mod_since_analyze > 50 + 0.1 * greatest(c.reltuples, 0)",
        )
        .fetch_all(&db)
        .await
        {
            Ok(d) => d,
            Err(_) => continue,
        };
        for (table, vacuum) in due {
            let verb = if vacuum { "VACUUM ANALYZE" } else { "ANALYZE" };
            let _ = sqlx::raw_sql(sqlx::AssertSqlSafe(format!("{verb} \"{table}\"")))
                .execute(&db)
                .await;
        }
    }
}

/// Stop the benchmark's nginx if it runs; whether it did.
pub fn stop_nginx() -> bool {
    let run = PathBuf::from(".run/bench");
    let (Ok(prefix), Ok(conf)) = (
        std::fs::canonicalize(run.join("nginx")),
        std::fs::canonicalize(run.join("nginx.conf")),
    ) else {
        return false;
    };
    if !prefix.join("nginx.pid").exists() {
        return false;
    }
    Command::new("nginx")
        .arg("-p")
        .arg(format!("{}/", prefix.display()))
        .arg("-c")
        .arg(conf)
        .args(["-s", "quit"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn output(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd.output().context("running switchyard")?;
    if !out.status.success() {
        bail!(
            "`{:?}` failed: {}",
            cmd,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8(out.stdout)?)
}

/// A running `switchyard` process; killed if the benchmark ends without stopping it.
pub struct Proc {
    child: Child,
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A process's resident memory now, in MB.
pub fn rss_mb(pid: u32) -> f64 {
    status_field(pid, "VmRSS:")
}

fn status_field(pid: u32, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn rss_mb(&self) -> f64 {
        rss_mb(self.child.id())
    }

    /// The process's peak resident set so far.
    pub fn peak_rss_mb(&self) -> f64 {
        status_field(self.child.id(), "VmHWM:")
    }

    /// SIGTERM (a graceful stop), then wait for it.
    pub async fn stop(&mut self) {
        let _ = Command::new("kill")
            .arg(self.child.id().to_string())
            .status();
        for _ in 0..300 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// CPU time used by each part of the system, read from /proc (user + system), in seconds.
#[derive(Debug, Clone, Default)]
pub struct Cpu(pub std::collections::BTreeMap<&'static str, f64>);

impl Cpu {
    /// Now, per part: switchyard (ingest and worker), rabbitmq, postgres, redis, nginx, and
    /// this load generator.
    pub fn now() -> Cpu {
        let tick = 100.0; // USER_HZ on Linux
        let me = std::process::id().to_string();
        let mut out = std::collections::BTreeMap::new();
        let Ok(dir) = std::fs::read_dir("/proc") else {
            return Cpu(out);
        };
        for e in dir.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if !name.bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{name}/stat")) else {
                continue;
            };
            // pid (comm) state … utime(14) stime(15)
            let Some((head, rest)) = stat.rsplit_once(')') else {
                continue;
            };
            let comm = head.split_once('(').map(|(_, c)| c).unwrap_or("");
            let f: Vec<&str> = rest.split_whitespace().collect();
            let (Some(u), Some(s)) = (f.get(11), f.get(12)) else {
                continue;
            };
            let secs = (u.parse::<f64>().unwrap_or(0.0) + s.parse::<f64>().unwrap_or(0.0)) / tick;
            let part = if name == me {
                "load generator"
            } else if comm == "switchyard" {
                "switchyard"
            } else if comm.starts_with("beam") || comm == "erl_child_setup" {
                "rabbitmq"
            } else if comm.starts_with("postgres") {
                "postgres"
            } else if comm.starts_with("redis") {
                "redis"
            } else if comm == "nginx" {
                "nginx"
            } else {
                continue;
            };
            *out.entry(part).or_insert(0.0) += secs;
        }
        Cpu(out)
    }

    /// CPU per item since `before`, in microseconds, largest first: "switchyard 310 µs, …".
    pub fn per_item(&self, before: &Cpu, items: usize) -> PerItem {
        let mut parts: Vec<(&'static str, f64)> = self
            .0
            .iter()
            .map(|(k, v)| {
                (
                    *k,
                    (v - before.0.get(k).copied().unwrap_or(0.0)) * 1e6 / items.max(1) as f64,
                )
            })
            .filter(|(_, us)| *us >= 1.0)
            .collect();
        parts.sort_by(|a, b| b.1.total_cmp(&a.1));
        PerItem(parts)
    }
}

/// CPU microseconds per item, by process, most first.
pub struct PerItem(Vec<(&'static str, f64)>);

impl PerItem {
    /// Across the machine, less the load generator (the bench's own client).
    pub fn total_us(&self) -> f64 {
        self.0
            .iter()
            .filter(|(k, _)| *k != "load generator")
            .map(|p| p.1)
            .sum::<f64>()
            .round()
    }
}

impl std::fmt::Display for PerItem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let total: f64 = self.0.iter().map(|p| p.1).sum();
        let list: Vec<String> = self
            .0
            .iter()
            .map(|(k, us)| format!("{k} {us:.0}"))
            .collect();
        write!(f, "CPU per item {total:.0} µs: {}", list.join(", "))
    }
}

/// A processing phase's mappings, all committed.
pub struct Mapped {
    /// From the call to the last mapping's write, by the database's clock.
    pub secs: f64,
    pub rss_mb: Vec<f64>,
}
