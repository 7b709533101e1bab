//! The harness every end-to-end suite shares: a fresh database and a fresh broker prefix per
//! test, ingest and worker started in-process on real RabbitMQ and PostgreSQL, providers
//! mocked with wiremock.
#![allow(dead_code)]

use anyhow::Context;
use secrecy::SecretString;
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use switchyard_broker::{Broker, BrokerConfig, Topology};
use switchyard_core::webhook_auth::{WebhookAuth, WebhookPolicy};
use switchyard_core::{Direction, IntegrationStatus};
use switchyard_ingest::{IngestApp, IngestConfig};
use switchyard_resilience::{Jitter, RetryPolicy};
use switchyard_store::{NewIntegration, SealedCredentials, Store};
use switchyard_vault::Keyring;
use switchyard_worker::{FaultPoint, Worker, WorkerConfig};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;
use wiremock::MockServer;

pub const ADMIN_TOKEN: &str = "test-admin-token";

/// The vault key every harness uses (`k1`), for tests that rotate it.
/// Quorum queues are declared and deleted by one harness at a time: the local RabbitMQ
/// (3.10) has stopped answering under many concurrent declarations and deletions.
static TOPOLOGY_CHANGES: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

pub static TEST_VAULT_KEY: std::sync::OnceLock<SecretString> = std::sync::OnceLock::new();
pub const API_KEY: &str = "test-webhook-key";

pub fn pg_base() -> String {
    std::env::var("SWITCHYARD_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

pub fn redis_url() -> String {
    std::env::var("SWITCHYARD_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

pub fn amqp_url() -> String {
    std::env::var("SWITCHYARD_TEST_AMQP")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into())
}

/// A database of its own, migrated.
pub async fn fresh_database() -> anyhow::Result<(String, String)> {
    let (name, url) = empty_database().await?;
    let store = Store::connect(&url, 2).await?;
    store.migrate().await?;
    store.close().await;
    Ok((name, url))
}

/// A database of its own, with no tables.
pub async fn empty_database() -> anyhow::Result<(String, String)> {
    let admin_url = format!("{}/postgres", pg_base());
    let admin = Store::connect(&admin_url, 2).await.with_context(|| {
        format!("PostgreSQL is not reachable at {admin_url}: start it with `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start` (or `just services`)")
    })?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    // Sweep what failed tests of earlier runs left behind (over an hour old).
    let old: Vec<String> =
        sqlx::query_scalar("SELECT datname FROM pg_database WHERE datname LIKE 'sy_t_%'")
            .fetch_all(admin.pool())
            .await?;
    for name in old {
        if let Some(ts) = name.split('_').nth(2).and_then(|t| t.parse::<u64>().ok())
            && now.saturating_sub(ts) > 3600
        {
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
            )))
            .execute(admin.pool())
            .await;
        }
    }
    let name = format!("sy_t_{now}_{}", &Uuid::new_v4().simple().to_string()[..12]);
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
        .execute(admin.pool())
        .await?;
    admin.close().await;
    Ok((name.clone(), format!("{}/{name}", pg_base())))
}

pub async fn drop_database(name: &str) {
    if let Ok(admin) = Store::connect(&format!("{}/postgres", pg_base()), 2).await {
        let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"
        )))
        .execute(admin.pool())
        .await;
        admin.close().await;
    }
}

/// Retry delays short enough for tests, exact (no jitter) so they can be checked.
pub fn fast_retry() -> RetryPolicy {
    RetryPolicy {
        initial_delay_ms: 100,
        factor: 2.0,
        max_delay_ms: 1_000,
        max_attempts: 5,
        max_age_secs: 600,
        jitter: Jitter::None,
    }
}

pub struct Options {
    pub amqp_url: String,
    pub worker: bool,
    pub worker_config: WorkerConfig,
    pub max_body_bytes: usize,
    /// The providers whose queues the test declares and its worker consumes. Only `rest`
    /// by default: quorum queues are heavy to create and delete, and a queue per built-in
    /// connector in every test wore the test broker out.
    pub providers: Vec<String>,
    /// Ingest's trusted reverse proxies (`X-Forwarded-For`).
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            amqp_url: amqp_url(),
            worker: true,
            worker_config: WorkerConfig {
                default_retry: fast_retry(),
                integration_cache_ttl: Duration::from_millis(200),
                shutdown_grace: Duration::from_secs(10),
                ..WorkerConfig::default()
            },
            max_body_bytes: 64 * 1024,
            providers: vec!["rest".into()],
            trusted_proxies: vec![],
        }
    }
}

impl Options {
    /// The defaults, with queues for these providers.
    pub fn with_providers(providers: &[&str]) -> Options {
        Options {
            providers: providers.iter().map(|p| (*p).to_owned()).collect(),
            ..Options::default()
        }
    }
}

pub struct RunningWorker {
    pub stop: CancellationToken,
    pub broker: Broker,
    /// Its metrics.
    pub metrics: prometheus::Registry,
    pub handle: JoinHandle<Result<(), switchyard_worker::WorkerError>>,
}

impl RunningWorker {
    /// Stop gracefully and close its connection.
    pub async fn stop(self) -> Result<(), switchyard_worker::WorkerError> {
        self.stop.cancel();
        let r = self.handle.await.expect("worker task");
        self.broker.shutdown().await;
        r
    }

    /// Wait for a simulated crash, then close the connection as a dying process would.
    pub async fn crashed(self) -> Result<(), switchyard_worker::WorkerError> {
        let r = tokio::time::timeout(Duration::from_secs(20), self.handle)
            .await
            .expect("the worker should reach its fault point")
            .expect("worker task");
        self.broker.shutdown().await;
        r
    }
}

pub struct Harness {
    pub db_name: String,
    pub db_url: String,
    pub store: Store,
    pub topology: Topology,
    pub broker: Broker,
    pub keyring: Arc<Keyring>,
    pub addr: SocketAddr,
    pub http: reqwest::Client,
    pub provider: MockServer,
    pub stop: CancellationToken,
    pub worker: Option<RunningWorker>,
    ingest: Option<JoinHandle<std::io::Result<()>>>,
    pub amqp_url: String,
}

impl Harness {
    pub async fn start() -> Harness {
        Harness::with(Options::default()).await
    }

    pub async fn with(opts: Options) -> Harness {
        // RUST_LOG=info cargo test … shows the services' logs.
        if std::env::var("RUST_LOG").is_ok() {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
                .with_test_writer()
                .try_init();
        }
        let (db_name, db_url) = fresh_database().await.expect("test database");
        let store = Store::connect(&db_url, 20).await.expect("store");
        let topology = Topology {
            prefix: format!("t{}.", &Uuid::new_v4().simple().to_string()[..10]),
            providers: opts.providers.clone(),
            delivery_limit: 5,
            delay_levels: 15,
            // Shared by every test: quorum queues are slow to create and delete.
            delay_prefix: "sytest.".into(),
        };
        let key = TEST_VAULT_KEY.get_or_init(|| Keyring::generate("k1"));
        let keyring = Arc::new(Keyring::parse(key, None).expect("keyring"));
        let changing = TOPOLOGY_CHANGES.lock().await;
        let broker = Broker::start(BrokerConfig::new(opts.amqp_url.clone(), topology.clone()));
        if opts.amqp_url == amqp_url() {
            let connected = broker.wait_connected(Duration::from_secs(60)).await;
            drop(changing);
            assert!(
                connected,
                "RabbitMQ is not reachable at {}: start it with `rabbitmq-server -detached` (or `just services`)",
                opts.amqp_url
            );
        }
        let stop = CancellationToken::new();
        let app = IngestApp::build(
            IngestConfig {
                max_body_bytes: opts.max_body_bytes,
                retry_after_secs: 3,
                integration_cache_ttl: Duration::from_millis(100),
                admin_token: Some(SecretString::from(ADMIN_TOKEN)),
                guard: Some(Arc::new(
                    switchyard_resilience::Guard::shared(&redis_url(), &topology.prefix).unwrap(),
                )),
                keyring: keyring.clone(),
                oauth_redirect_uri: None,
                header_read_timeout: Duration::from_millis(500),
                body_timeout: Duration::from_millis(500),
                trusted_proxies: opts.trusted_proxies.clone(),
                ..IngestConfig::default()
            },
            store.clone(),
            broker.clone(),
            "127.0.0.1:0".parse().unwrap(),
        )
        .await
        .expect("ingest binds");
        let addr = app.local_addr();
        let ingest = tokio::spawn(app.run_until_stopped(stop.clone()));
        let mut h = Harness {
            db_name,
            db_url,
            store,
            topology,
            broker,
            keyring,
            addr,
            // The harness's ingest closes a connection idle for its header-read timeout
            // (500 ms); a client that reused one just then would see it closed mid-request.
            // Idle connections are dropped here first.
            http: reqwest::Client::builder()
                .pool_idle_timeout(Duration::from_millis(200))
                .build()
                .expect("an HTTP client"),
            provider: MockServer::start().await,
            stop,
            worker: None,
            ingest: Some(ingest),
            amqp_url: opts.amqp_url,
        };
        if opts.worker {
            h.worker = Some(h.spawn_worker(opts.worker_config).await);
        }
        h
    }

    /// A worker of its own, as another process would be: its own broker connection (so it
    /// can crash alone) and its own Redis connection for the shared breakers and limits.
    pub async fn spawn_worker(&self, mut cfg: WorkerConfig) -> RunningWorker {
        // It consumes the queues this test declared.
        cfg.providers = self.topology.providers.clone();
        cfg.guard = Arc::new(
            switchyard_resilience::Guard::shared(&redis_url(), &self.topology.prefix).unwrap(),
        );
        let changing = TOPOLOGY_CHANGES.lock().await;
        let broker = Broker::start(BrokerConfig::new(
            self.amqp_url.clone(),
            self.topology.clone(),
        ));
        broker.wait_connected(Duration::from_secs(60)).await;
        drop(changing);
        let worker = Worker::new(
            cfg,
            self.store.clone(),
            broker.clone(),
            self.keyring.clone(),
        )
        .expect("worker config");
        let metrics = worker.registry();
        let stop = CancellationToken::new();
        let handle = tokio::spawn(worker.run(stop.clone()));
        RunningWorker {
            stop,
            broker,
            metrics,
            handle,
        }
    }

    pub fn worker_config_with_fault(fault: FaultPoint) -> WorkerConfig {
        WorkerConfig {
            fault: Some(fault),
            ..Options::default().worker_config
        }
    }

    /// Stop ingest, as a deployment's SIGTERM does, and hand over its task, to see what it
    /// finishes before it ends.
    pub fn stop_ingest(&mut self) -> JoinHandle<std::io::Result<()>> {
        self.stop.cancel();
        self.ingest.take().expect("ingest runs")
    }

    pub async fn shutdown(mut self) {
        if let Some(w) = self.worker.take() {
            let _ = w.stop().await;
        }
        self.stop.cancel();
        if let Some(i) = self.ingest.take() {
            let _ = i.await;
        }
        {
            let _changing = TOPOLOGY_CHANGES.lock().await;
            let _ = self.broker.delete_topology().await;
        }
        self.broker.shutdown().await;
        self.store.close().await;
        drop_database(&self.db_name).await;
    }

    /// Ingest's `/metrics`, as Prometheus text.
    /// Sessions of the test's database waiting for a lock (a row another transaction
    /// holds).
    pub async fn waiting_on_locks(&self) -> i64 {
        sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 \
             AND wait_event_type = 'Lock'",
        )
        .bind(&self.db_name)
        .fetch_one(self.store.pool())
        .await
        .unwrap()
    }

    pub async fn metrics(&self) -> String {
        self.http
            .get(self.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// A webhook sender: entity `order`, event id from `X-Event-Id`, version at `/version`.
    pub async fn source(&self, name: &str) -> Uuid {
        self.integration(
            name,
            "webhook",
            json!({}),
            json!({
                "entity": {"value": "order"},
                "event_id": {"header": "X-Event-Id"},
                "version": {"pointer": "/version"},
            }),
            None,
        )
        .await
    }

    /// A REST target on the mock provider, orders at `{base}/api/{path}`.
    pub async fn rest_target(&self, name: &str, path: &str, extra: Value) -> Uuid {
        let mut settings = json!({
            "base_url": self.provider.uri(),
            "auth": {"type": "bearer"},
            "timeout_ms": 2000,
            "entities": {"order": {
                "create": {"method": "POST", "path": format!("/api/{path}")},
                "update": {"method": "PUT", "path": format!("/api/{path}/{{external_id}}")},
                "delete": {"method": "DELETE", "path": format!("/api/{path}/{{external_id}}")},
                "body": {"reference": "/id", "total": "/total", "customer.email": "/customer/email"}
            }}
        });
        if let (Some(base), Some(more)) = (settings.as_object_mut(), extra.as_object()) {
            for (k, v) in more {
                base.insert(k.clone(), v.clone());
            }
        }
        self.integration(
            name,
            "rest",
            settings,
            json!({}),
            Some(json!({"token": "provider-token"})),
        )
        .await
    }

    pub async fn integration(
        &self,
        name: &str,
        provider: &str,
        settings: Value,
        inbound: Value,
        credentials: Option<Value>,
    ) -> Uuid {
        self.integration_full(
            "acme",
            name,
            provider,
            settings,
            inbound,
            credentials,
            WebhookPolicy::new(WebhookAuth::api_keys([API_KEY])),
            &[],
        )
        .await
    }

    /// An integration with everything chosen: tenant, webhook policy and signing secrets.
    #[allow(clippy::too_many_arguments)]
    pub async fn integration_full(
        &self,
        tenant: &str,
        name: &str,
        provider: &str,
        settings: Value,
        inbound: Value,
        credentials: Option<Value>,
        policy: WebhookPolicy,
        webhook_secrets: &[&str],
    ) -> Uuid {
        let id = Uuid::now_v7();
        let webhook_secrets =
            (!webhook_secrets.is_empty()).then(|| self.seal_secrets(id, webhook_secrets));
        let credentials = credentials.map(|c| {
            let sealed = self
                .keyring
                .seal(c.to_string().as_bytes(), id.as_bytes())
                .unwrap();
            SealedCredentials {
                key_id: sealed.key_id,
                bytes: sealed.bytes,
            }
        });
        self.store
            .create_integration(&NewIntegration {
                id,
                tenant: tenant.into(),
                name: name.into(),
                provider: provider.into(),
                status: IntegrationStatus::Active,
                direction: Direction::Export,
                entities: vec!["order".into()],
                settings,
                inbound,
                webhook_auth: serde_json::to_value(&policy).unwrap(),
                credentials,
                webhook_secrets,
                schedule: None,
            })
            .await
            .expect("create integration")
            .id
    }

    /// Webhook signing secrets, sealed as the CLI seals them.
    pub fn seal_secrets(&self, id: Uuid, secrets: &[&str]) -> SealedCredentials {
        let aad = switchyard_ops::keys::aad(id, switchyard_store::SecretKind::WebhookSecrets);
        let sealed = self
            .keyring
            .seal(serde_json::to_string(secrets).unwrap().as_bytes(), &aad)
            .unwrap();
        SealedCredentials {
            key_id: sealed.key_id,
            bytes: sealed.bytes,
        }
    }

    /// The usual set-up: a `store` that sends order webhooks, routed to an `erp` REST target
    /// (orders at `/api/orders`) with `extra` settings. Returns (store, erp).
    pub async fn store_to_erp(&self, extra: Value) -> (Uuid, Uuid) {
        let store = self.source("store").await;
        let erp = self.rest_target("erp", "orders", extra).await;
        self.route(store, &[erp]).await;
        (store, erp)
    }

    pub async fn route(&self, source: Uuid, targets: &[Uuid]) {
        self.route_with(source, "order", targets, json!({}), Default::default())
            .await;
    }

    /// A route for `entity` events with a filter and options.
    pub async fn route_with(
        &self,
        source: Uuid,
        entity: &str,
        targets: &[Uuid],
        filter: Value,
        options: switchyard_core::RouteOptions,
    ) -> Uuid {
        self.store
            .add_route(&switchyard_store::NewRoute {
                source,
                entity,
                event: "*",
                targets,
                filter: &filter,
                options: &options,
            })
            .await
            .expect("route")
    }

    /// acme's store routed to its ERP, with one order that reached the ERP (`ord-1`, as
    /// `erp-1`: a mapping and a record) and one the ERP refused for good (`ord-2`: a dead
    /// job, its dead letter kept). The ERP creates whatever comes after (`erp-b-…`).
    /// Returns (store, erp, the done job, the dead job).
    pub async fn one_done_one_dead(&self) -> (Uuid, Uuid, Uuid, Uuid) {
        use wiremock::matchers::method;
        use wiremock::{Mock, ResponseTemplate};
        let (store, erp) = self.store_to_erp(json!({})).await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(201).set_body_json(json!({"id": "erp-1"})))
            .up_to_n_times(1)
            .mount(&self.provider)
            .await;
        Mock::given(method("POST"))
            .respond_with(ResponseTemplate::new(422).set_body_json(json!({"message": "no"})))
            .up_to_n_times(1)
            .mount(&self.provider)
            .await;
        Mock::given(method("POST"))
            .respond_with(Creates::ids("erp-b"))
            .mount(&self.provider)
            .await;
        let done = self.accept(store, "e1", order("ord-1", 1, "1")).await[0];
        self.wait_status(done, "succeeded", Duration::from_secs(15))
            .await;
        let dead = self.accept(store, "e2", order("ord-2", 1, "1")).await[0];
        self.wait_status(dead, "dead", Duration::from_secs(15))
            .await;
        eventually(
            "the dead letter is kept",
            Duration::from_secs(10),
            || async { self.dead_letters().await == 1 },
        )
        .await;
        (store, erp, done, dead)
    }

    /// POST an order webhook.
    pub async fn send(&self, source: Uuid, event_id: &str, body: Value) -> reqwest::Response {
        self.http
            .post(self.url(&format!("/v1/webhooks/{source}")))
            .header("content-type", "application/json")
            .header("x-api-key", API_KEY)
            .header("x-event-id", event_id)
            .body(body.to_string())
            .send()
            .await
            .expect("ingest answers")
    }

    /// Send and expect 202; the job ids.
    pub async fn accept(&self, source: Uuid, event_id: &str, body: Value) -> Vec<Uuid> {
        let resp = self.send(source, event_id, body).await;
        let status = resp.status();
        let body: Value = resp.json().await.unwrap();
        assert_eq!(status, 202, "ingest refused the webhook: {body}");
        body["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().parse().unwrap())
            .collect()
    }

    /// What the leading scheduler runs to settle pending operation calls.
    pub fn calls(&self) -> switchyard_ops::calls::Calls {
        switchyard_ops::calls::Calls {
            store: self.store.clone(),
            broker: self.broker.clone(),
            keyring: self.keyring.clone(),
            http: switchyard_providers::http_client(),
            guard: Arc::new(
                switchyard_resilience::Guard::shared(&redis_url(), &self.topology.prefix).unwrap(),
            ),
            default_retry: Default::default(),
            default_breaker: Default::default(),
        }
    }

    pub async fn job_status(&self, id: Uuid) -> Option<String> {
        self.store.job(id).await.ok().map(|j| j.status)
    }

    /// Wait until the job reaches `status` (bounded: fails after `within`).
    pub async fn wait_status(
        &self,
        id: Uuid,
        status: &str,
        within: Duration,
    ) -> switchyard_store::JobRow {
        let started = Instant::now();
        loop {
            if let Ok(j) = self.store.job(id).await
                && j.status == status
            {
                return j;
            }
            if started.elapsed() > within {
                let now = self
                    .store
                    .job(id)
                    .await
                    .map(|j| format!("{} ({:?})", j.status, j.last_error));
                panic!("job {id} did not become {status} within {within:?}; it is {now:?}");
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    pub async fn queue_depth(&self, queue: &str) -> u32 {
        self.broker
            .message_count(queue)
            .await
            .expect("queue exists")
    }

    /// The environment a `switchyard` service process needs to join this harness's
    /// deployment: its database, broker (queue prefix, delay levels), Redis and vault key,
    /// calling providers on this machine.
    pub fn service_env(&self, amqp: &str) -> Vec<(String, String)> {
        use secrecy::ExposeSecret;
        [
            ("SWITCHYARD_DATABASE_URL", self.db_url.clone()),
            ("SWITCHYARD_DATABASE_MAX_CONNECTIONS", "8".into()),
            ("SWITCHYARD_AMQP_URL", amqp.to_owned()),
            ("SWITCHYARD_REDIS_URL", redis_url()),
            ("SWITCHYARD_QUEUE_PREFIX", self.topology.prefix.clone()),
            (
                "SWITCHYARD_BROKER__DELAY_PREFIX",
                self.topology.delay_prefix.clone(),
            ),
            (
                "SWITCHYARD_BROKER__DELAY_LEVELS",
                self.topology.delay_levels.to_string(),
            ),
            (
                "SWITCHYARD_BROKER__DELIVERY_LIMIT",
                self.topology.delivery_limit.to_string(),
            ),
            ("SWITCHYARD_WORKER__PROVIDERS", "[rest]".into()),
            ("SWITCHYARD_WORKER__SHUTDOWN_GRACE_SECS", "2".into()),
            ("SWITCHYARD_EGRESS__ALLOW", "127.0.0.1/32".into()),
            ("SWITCHYARD_EGRESS__MAX_TIMEOUT_MS", "2000".into()),
            (
                "SWITCHYARD_VAULT_KEYS",
                TEST_VAULT_KEY
                    .get()
                    .expect("vault key")
                    .expose_secret()
                    .to_owned(),
            ),
            ("SWITCHYARD_LOG_FORMAT", "text".into()),
            ("SWITCHYARD_HEALTH_LISTEN", "off".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    /// Run the `switchyard` CLI (the debug build) as an operator would from another machine:
    /// with only this harness's URL and the admin token in its environment (no database, no
    /// broker, no vault key): (success, stdout, stderr).
    pub async fn cli(&self, args: &[&str]) -> (bool, String, String) {
        self.cli_as(ADMIN_TOKEN, args).await
    }

    /// [`Harness::cli`] with another token (a tenant's API key).
    pub async fn cli_as(&self, token: &str, args: &[&str]) -> (bool, String, String) {
        let bin = std::env::var("SWITCHYARD_BIN").unwrap_or_else(|_| {
            format!("{}/../target/debug/switchyard", env!("CARGO_MANIFEST_DIR"))
        });
        assert!(
            std::path::Path::new(&bin).exists(),
            "{bin} is missing: `cargo build -p switchyard` first (`just test` does)"
        );
        let mut cmd = std::process::Command::new(bin);
        cmd.args(args)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("SWITCHYARD_URL", self.url(""))
            .env("SWITCHYARD_TOKEN", token);
        let out = tokio::task::spawn_blocking(move || cmd.output())
            .await
            .expect("the CLI's task")
            .expect("running the switchyard CLI");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    /// Dead letters the workers' keeper has stored.
    pub async fn dead_letters(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM dead_letters")
            .fetch_one(self.store.pool())
            .await
            .unwrap_or(0)
    }

    /// Put a dead letter for `integration` of `tenant` (order `o-{n}`, reason `exhausted`)
    /// straight on the dead-letter exchange, as a worker would.
    pub async fn publish_dead_letters(
        &self,
        tenant: &str,
        integration: Uuid,
        ns: std::ops::Range<u32>,
    ) {
        let messages: Vec<_> = ns.map(|n| dead_letter(tenant, integration, n)).collect();
        for chunk in messages.chunks(500) {
            self.broker
                .publish(chunk)
                .await
                .expect("dead letters published");
        }
    }
}

fn dead_letter(tenant: &str, integration: Uuid, n: u32) -> switchyard_broker::OutgoingMessage {
    let event = format!("dl-{n}");
    let key = switchyard_core::ids::idempotency_key(
        None,
        &event,
        integration,
        switchyard_core::Action::Upsert,
    );
    let env = switchyard_core::Envelope {
        v: switchyard_core::ENVELOPE_VERSION,
        id: switchyard_core::ids::job_id(&key),
        idempotency_key: key,
        tenant: tenant.into(),
        integration_id: integration,
        provider: "rest".into(),
        source_integration_id: None,
        event_id: event,
        event: "received".into(),
        entity: "order".into(),
        action: switchyard_core::Action::Upsert,
        direction: Direction::Export,
        internal_id: format!("o-{n}"),
        source_version: None,
        occurred_at: None,
        received_at: chrono::Utc::now(),
        payload: order(&format!("o-{n}"), 1, "1.00"),
        sync_run_id: None,
        route: Default::default(),
        trace: None,
    };
    let mut headers = switchyard_broker::Headers::default();
    headers.set(switchyard_broker::header::DEAD_REASON, "exhausted");
    switchyard_broker::OutgoingMessage {
        exchange: switchyard_broker::Exchange::DeadLetters,
        routing_key: env.routing_key(),
        message_id: env.id.to_string(),
        body: env.to_vec(),
        headers,
    }
}

/// Call the management API with a bearer token: (status, JSON body or null).
/// A dead letter of `tenant`'s at `integration`, kept as the workers' keeper keeps one
/// (`body`: the message; not an envelope makes one no version can replay).
pub fn dead_letter_row(
    tenant: &str,
    integration: Uuid,
    message_id: &str,
    reason: &str,
    body: &[u8],
) -> switchyard_store::DeadLetterRow {
    switchyard_store::DeadLetterRow {
        id: 0,
        provider: "rest".into(),
        message_id: message_id.into(),
        job_id: None,
        tenant: Some(tenant.into()),
        integration_id: Some(integration),
        entity: Some("order".into()),
        internal_id: None,
        reason: reason.into(),
        error_class: None,
        error: None,
        attempts: None,
        first_received: None,
        replays: None,
        dead_at: chrono::Utc::now(),
        routing_key: "rest".into(),
        headers: json!({}),
        body: body.to_vec(),
    }
}

/// A long operation's answer (`202`, its operation), followed until it ends: the operation.
pub async fn finished(h: &Harness, token: &str, started: &Value) -> Value {
    let id = started["id"].as_str().expect("an operation id").to_owned();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (st, op) = call(
            h,
            reqwest::Method::GET,
            &format!("/v1/operations/{id}"),
            token,
            None,
        )
        .await;
        assert_eq!(st, 200, "{op}");
        if op["status"] != "running" {
            return op;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "operation {id} still running after 30 s: {op}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub async fn call(
    h: &Harness,
    m: reqwest::Method,
    path: &str,
    token: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let mut rb = h.http.request(m, h.url(path)).bearer_auth(token);
    if let Some(b) = body {
        rb = rb.json(&b);
    }
    let resp = rb.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// An integration created over the API (as the admin), tested and activated: its id and the
/// create's whole answer (with any credential generated for it).
pub async fn create_active(h: &Harness, body: Value) -> (Uuid, Value) {
    let (st, created) = call(
        h,
        reqwest::Method::POST,
        "/v1/integrations",
        ADMIN_TOKEN,
        Some(body),
    )
    .await;
    assert_eq!(st, 201, "{created}");
    let id: Uuid = created["id"].as_str().unwrap().parse().unwrap();
    for step in ["test", "activate"] {
        let (st, r) = call(
            h,
            reqwest::Method::POST,
            &format!("/v1/integrations/{id}/{step}"),
            ADMIN_TOKEN,
            None,
        )
        .await;
        assert_eq!(st, 200, "{step}: {r}");
    }
    (id, created)
}

/// Poll `f` until it returns true (bounded by `within`).
pub async fn eventually<F, Fut>(what: &str, within: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let started = Instant::now();
    while !f().await {
        assert!(started.elapsed() < within, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

pub fn order(id: &str, version: i64, total: &str) -> Value {
    json!({"id": id, "version": version, "total": total, "customer": {"email": format!("{id}@example.com")}})
}

/// A provider's create: `201 {"id": "<prefix>-<n>"}`, a new id each call (as real APIs do).
pub struct Creates {
    prefix: &'static str,
    next: std::sync::atomic::AtomicU64,
}

impl Creates {
    pub fn ids(prefix: &'static str) -> Creates {
        Creates {
            prefix,
            next: std::sync::atomic::AtomicU64::new(1),
        }
    }
}

impl wiremock::Respond for Creates {
    fn respond(&self, _: &wiremock::Request) -> wiremock::ResponseTemplate {
        let n = self.next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        wiremock::ResponseTemplate::new(201)
            .set_body_json(json!({"id": format!("{}-{n}", self.prefix)}))
    }
}

/// One answer of a [`Scripted`] provider.
#[derive(Clone)]
pub enum Answer {
    /// `201 {"id": "ext-<n>"}`, a fresh id each time, as a real create.
    Create,
    /// This response, as it is.
    With(wiremock::ResponseTemplate),
}

pub fn status(code: u16) -> Answer {
    Answer::With(wiremock::ResponseTemplate::new(code))
}

/// A provider that answers from a script (the last answer repeats) and records when each
/// call arrived. The rest of the script can be replaced mid-test with [`Scripted::set`].
#[derive(Clone)]
pub struct Scripted {
    inner: Arc<std::sync::Mutex<ScriptedInner>>,
}

struct ScriptedInner {
    answers: Vec<Answer>,
    calls: Vec<Instant>,
    created: u64,
}

impl Scripted {
    pub fn new(answers: Vec<Answer>) -> Scripted {
        Scripted {
            inner: Arc::new(std::sync::Mutex::new(ScriptedInner {
                answers,
                calls: Vec::new(),
                created: 0,
            })),
        }
    }

    /// From the next call on, answer with `answers`.
    pub fn set(&self, answers: Vec<Answer>) {
        let mut i = self.inner.lock().unwrap();
        let done = i.calls.len().min(i.answers.len());
        i.answers.truncate(done);
        while i.answers.len() < i.calls.len() {
            let last = i.answers.last().cloned().expect("a scripted answer");
            i.answers.push(last);
        }
        i.answers.extend(answers);
    }

    pub fn calls(&self) -> Vec<Instant> {
        self.inner.lock().unwrap().calls.clone()
    }

    pub fn count(&self) -> usize {
        self.inner.lock().unwrap().calls.len()
    }
}

impl wiremock::Respond for Scripted {
    fn respond(&self, _: &wiremock::Request) -> wiremock::ResponseTemplate {
        let mut i = self.inner.lock().unwrap();
        let n = i.calls.len();
        i.calls.push(Instant::now());
        match i
            .answers
            .get(n)
            .or(i.answers.last())
            .cloned()
            .expect("a scripted answer")
        {
            Answer::With(t) => t,
            Answer::Create => {
                i.created += 1;
                wiremock::ResponseTemplate::new(201)
                    .set_body_json(json!({"id": format!("ext-{}", i.created)}))
            }
        }
    }
}
