//! Configuration: defaults in code, then an optional TOML file (`--config` or
//! `SWITCHYARD_CONFIG`), then `SWITCHYARD_*` environment variables (nested settings with
//! `__`, e.g. `SWITCHYARD_WORKER__PREFETCH=32`). Validated at start; errors name the setting.
use crate::tls;
use anyhow::{Context, bail};
use figment::Figment;
use figment::providers::{Env, Format, Toml};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use switchyard_resilience::{BreakerPolicy, Guard, RetryPolicy};

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// `SWITCHYARD_DATABASE_URL`
    pub database_url: String,
    pub database_max_connections: u32,
    /// `SWITCHYARD_AMQP_URL`
    pub amqp_url: String,
    /// Prefix of every exchange and queue name (isolates deployments sharing a broker).
    pub queue_prefix: String,
    /// Where ingest listens.
    pub listen: SocketAddr,
    /// Where a worker or a scheduler serves `/healthz`, `/readyz` and `/metrics`, or `off`
    /// (`switchyard ingest` and `all` serve them on `listen`).
    pub health_listen: String,
    /// The address users and providers reach ingest at (behind a proxy, its public
    /// https URL), for OAuth2 redirects: `<public_url>/v1/oauth/callback`. Default:
    /// `http://<listen>`.
    pub public_url: Option<String>,
    /// `text` or `json`.
    pub log_format: String,
    /// `<id>:<base64 key>[,…]`: the vault's master keys.
    pub vault_keys: Option<SecretString>,
    /// A file holding the vault's master keys in the same form (one or more lines), for
    /// deployments that mount secrets as files. Read in addition to `vault_keys`.
    pub vault_keys_file: Option<std::path::PathBuf>,
    /// Which vault key seals new secrets (default: the first listed).
    pub vault_active_key: Option<String>,
    /// Bearer token for the management API.
    pub admin_token: Option<SecretString>,
    pub ingest: IngestSettings,
    pub worker: WorkerSettings,
    pub broker: BrokerSettings,
    pub scheduler: SchedulerSettings,
    /// Default retry schedule (an integration's `settings.retry` overrides it).
    pub retry: RetryPolicy,
    /// Default circuit breaker (an integration's `settings.breaker` overrides it).
    pub breaker: BreakerPolicy,
    /// Redis, for breakers and rate limits shared by the fleet; empty for per process.
    pub redis_url: String,
    /// How long a process takes Redis's word that a provider account's breaker is closed
    /// before asking again (0: before every call). A breaker another process opens is
    /// noticed here when one of this process's calls to the account ends (its outcome's
    /// report brings the fleet's state back), or when this runs out.
    pub redis_breaker_trust_ms: u64,
    /// How long the successes of calls admitted on that trust wait to be reported to Redis
    /// together, in one script (0: each call reports its own). Failures and slow calls are
    /// reported at once; the fleet's window sees this process's successes up to this late.
    pub redis_breaker_report_ms: u64,
    /// Where providers may be called.
    pub egress: EgressSettings,
    /// Where operators are told of integrations in `error`, reauthorizations needed and
    /// dead letters piling up.
    pub notify: NotifySettings,
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NotifySettings {
    /// The receiver's URL (`SWITCHYARD_NOTIFY__URL`); none: notifications are kept, and
    /// listed at `GET /v1/notifications`, but not sent.
    pub url: Option<String>,
    /// The Standard Webhooks secret they are signed with (`whsec_…`; `switchyard keys
    /// generate` does not make these: any `whsec_` + base64 of 24+ random bytes).
    pub secret: Option<SecretString>,
    /// Dead letters of one tenant that make a notification (at most one an hour).
    pub dead_letter_threshold: i64,
    /// How long the receiver has to answer, in milliseconds.
    pub timeout_ms: u64,
}

impl Default for NotifySettings {
    fn default() -> Self {
        NotifySettings {
            url: None,
            secret: None,
            dead_letter_threshold: 100,
            timeout_ms: 10_000,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EgressSettings {
    /// Non-public addresses providers may still be called at: CIDRs or addresses,
    /// comma-separated (`10.20.0.0/16,192.168.1.5` for an on-premise ERP). Public addresses
    /// are always allowed; loopback, private, link-local and the like only when listed here.
    pub allow: String,
    /// The longest a provider call may take, in milliseconds, whatever an integration's
    /// `timeout_ms` says (one tenant's hanging provider holds workers only so long).
    pub max_timeout_ms: u64,
}

impl Default for EgressSettings {
    fn default() -> Self {
        EgressSettings {
            allow: String::new(),
            max_timeout_ms: 60_000,
        }
    }
}

impl EgressSettings {
    pub fn policy(&self) -> Result<switchyard_providers::egress::Egress, String> {
        if !(100..=300_000).contains(&self.max_timeout_ms) {
            return Err("max_timeout_ms: must be between 100 and 300000".into());
        }
        let parts: Vec<&str> = self.allow.split(',').collect();
        Ok(switchyard_providers::egress::Egress::new(&parts)?
            .with_max_timeout(Duration::from_millis(self.max_timeout_ms)))
    }
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IngestSettings {
    pub max_body_bytes: usize,
    pub retry_after_secs: u32,
    /// How long a client has to send a request's headers.
    pub header_read_timeout_ms: u64,
    /// How long a client has to send a request's body.
    pub body_timeout_ms: u64,
    /// Connections served at once.
    pub max_connections: usize,
    /// The reverse proxies in front of ingest, comma-separated CIDRs or addresses: a
    /// request from one is taken to come from the client its `X-Forwarded-For` names (for
    /// integrations' IP allowlists). Empty: the connection's own address, always.
    pub trusted_proxies: String,
}

impl IngestSettings {
    pub fn trusted_proxies(&self) -> Result<Vec<ipnet::IpNet>, String> {
        self.trusted_proxies
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse::<ipnet::IpNet>()
                    .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|_| format!("`{s}` is not an address or a CIDR (e.g. 10.0.0.0/8)"))
            })
            .collect()
    }
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkerSettings {
    /// Providers whose queues to consume (default: all).
    pub providers: Vec<String>,
    pub prefetch: u16,
    pub concurrency: usize,
    /// Calls at once to any one integration from one worker (`0`: half of `concurrency`).
    pub max_per_integration: usize,
    /// How long a job waits for its integration's turn, with none of its calls ending, before
    /// it is put back (ms); while they keep ending it waits on, up to eight times this.
    pub turn_wait_ms: u64,
    pub shutdown_grace_secs: u64,
    /// The most pages a sync run reads from one feed before it fails.
    pub sync_max_pages: u64,
    /// How often the worker analyses its tables while they are small (ms; `0`: leave it
    /// to autovacuum).
    pub analyse_young_tables_ms: u64,
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BrokerSettings {
    pub confirm_timeout_ms: u64,
    pub publisher_channels: usize,
    pub delivery_limit: u32,
    pub delay_levels: u8,
    /// Prefix of the (shareable) delay levels; default: `queue_prefix`.
    pub delay_prefix: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SchedulerSettings {
    /// How often the leader looks for due syncs, in milliseconds.
    pub tick_ms: u64,
    /// How often a standby scheduler tries to take over, in milliseconds.
    pub lock_retry_ms: u64,
    /// A sync run whose pager has not moved for this long gets its page enqueued again.
    pub stall_after_secs: u64,
}

impl Default for SchedulerSettings {
    fn default() -> Self {
        SchedulerSettings {
            tick_ms: 1_000,
            lock_retry_ms: 2_000,
            stall_after_secs: 300,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            database_url: "postgres://postgres@127.0.0.1:5432/switchyard".into(),
            database_max_connections: 48,
            amqp_url: "amqp://guest:guest@127.0.0.1:5672/%2f".into(),
            queue_prefix: String::new(),
            listen: "127.0.0.1:8080".parse().expect("static address"),
            health_listen: "127.0.0.1:9090".into(),
            public_url: None,
            log_format: "text".into(),
            vault_keys: None,
            vault_keys_file: None,
            vault_active_key: None,
            admin_token: None,
            ingest: IngestSettings::default(),
            worker: WorkerSettings::default(),
            broker: BrokerSettings::default(),
            scheduler: SchedulerSettings::default(),
            retry: RetryPolicy::default(),
            breaker: BreakerPolicy::default(),
            redis_url: "redis://127.0.0.1:6379".into(),
            redis_breaker_trust_ms: switchyard_resilience::guard::TRUST_CLOSED.as_millis() as u64,
            redis_breaker_report_ms: switchyard_resilience::guard::REPORT_EVERY.as_millis() as u64,
            egress: EgressSettings::default(),
            notify: NotifySettings::default(),
        }
    }
}

impl Default for IngestSettings {
    fn default() -> Self {
        IngestSettings {
            max_body_bytes: 1024 * 1024,
            retry_after_secs: 5,
            header_read_timeout_ms: 10_000,
            body_timeout_ms: 30_000,
            max_connections: 1024,
            trusted_proxies: String::new(),
        }
    }
}

impl Default for WorkerSettings {
    /// The worker's own defaults ([`switchyard_worker::WorkerConfig`]), in the file's units.
    fn default() -> Self {
        let w = switchyard_worker::WorkerConfig::default();
        WorkerSettings {
            providers: w.providers,
            prefetch: w.prefetch,
            concurrency: w.concurrency,
            max_per_integration: w.max_per_integration,
            turn_wait_ms: w.turn_wait.as_millis() as u64,
            shutdown_grace_secs: w.shutdown_grace.as_secs(),
            sync_max_pages: w.sync_max_pages,
            analyse_young_tables_ms: w
                .analyse_young_tables_every
                .map_or(0, |every| every.as_millis() as u64),
        }
    }
}

impl Default for BrokerSettings {
    fn default() -> Self {
        BrokerSettings {
            confirm_timeout_ms: 5_000,
            publisher_channels: 4,
            delivery_limit: 20,
            delay_levels: 22,
            delay_prefix: None,
        }
    }
}

impl Config {
    pub fn load(file: Option<&Path>) -> anyhow::Result<Config> {
        let mut fig = Figment::new();
        if let Some(path) = file {
            if !path.exists() {
                bail!("the configuration file {} does not exist", path.display());
            }
            fig = fig.merge(Toml::file(path));
        }
        // The CLI's own variables are not settings.
        fig = fig.merge(
            Env::prefixed("SWITCHYARD_")
                .ignore(&["config", "url", "token", "output"])
                .split("__"),
        );
        let cfg: Config = fig.extract().map_err(|e| {
            let mut msg = String::from("invalid configuration:");
            for err in e {
                let key = err.path.join(".");
                let hint = if key.is_empty() {
                    String::new()
                } else {
                    format!(
                        " (setting `{key}`, environment SWITCHYARD_{})",
                        key.to_uppercase().replace('.', "__")
                    )
                };
                msg.push_str(&format!("\n  - {}{hint}", err.kind));
            }
            anyhow::anyhow!(msg)
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> anyhow::Result<()> {
        let fail = |setting: &str, why: &str| -> anyhow::Result<()> {
            bail!(
                "invalid configuration: {setting} (SWITCHYARD_{}) {why}",
                setting.to_uppercase().replace('.', "__")
            )
        };
        if !self.database_url.starts_with("postgres://")
            && !self.database_url.starts_with("postgresql://")
        {
            fail("database_url", "must be a postgres:// URL")?;
        }
        let nodes = switchyard_broker::urls(&self.amqp_url);
        if nodes.is_empty()
            || nodes
                .iter()
                .any(|u| !u.starts_with("amqp://") && !u.starts_with("amqps://"))
        {
            fail(
                "amqp_url",
                "must be an amqp:// or amqps:// URL, or a cluster's, comma-separated",
            )?;
        }
        if let Some(url) = &self.notify.url {
            if url::Url::parse(url).map_or(true, |u| !matches!(u.scheme(), "http" | "https")) {
                fail("notify.url", "must be an http(s) URL")?;
            }
            let key = self.notify.secret.as_ref().and_then(|s| {
                switchyard_core::webhook_auth::standard_webhooks_key(s.expose_secret().as_bytes())
            });
            if key.is_none_or(|k| k.len() < 16) {
                fail(
                    "notify.secret",
                    "is required with notify.url: `whsec_` and the base64 of at least 16 random bytes",
                )?;
            }
        }
        if self.notify.dead_letter_threshold < 1 {
            fail("notify.dead_letter_threshold", "must be at least 1")?;
        }
        if self.health_listen != "off" && self.health_listen.parse::<SocketAddr>().is_err() {
            fail(
                "health_listen",
                "must be an address such as 0.0.0.0:9090, or off",
            )?;
        }
        if self.database_max_connections < 2 {
            fail("database_max_connections", "must be at least 2")?;
        }
        if !matches!(self.log_format.as_str(), "text" | "json") {
            fail("log_format", "must be `text` or `json`")?;
        }
        if self.worker.prefetch == 0 {
            fail("worker.prefetch", "must be at least 1")?;
        }
        if self.worker.concurrency == 0 {
            fail("worker.concurrency", "must be at least 1")?;
        }
        if self.scheduler.tick_ms == 0 {
            fail("scheduler.tick_ms", "must be at least 1")?;
        }
        if self.scheduler.lock_retry_ms == 0 {
            fail("scheduler.lock_retry_ms", "must be at least 1")?;
        }
        if self.scheduler.stall_after_secs < 10 {
            fail(
                "scheduler.stall_after_secs",
                "must be at least 10 (a page may take that long to read)",
            )?;
        }
        if self.worker.providers.is_empty() {
            fail("worker.providers", "names no provider")?;
        }
        if let Err(why) = tls::check_database_url(&self.database_url) {
            fail("database_url", &why)?;
        }
        if let Err(why) = tls::check_redis_url(&self.redis_url) {
            fail("redis_url", &why)?;
        }
        if let Err(e) = self.ingest.trusted_proxies() {
            fail("ingest.trusted_proxies", &e)?;
        }
        if let Err(e) = self.egress.policy() {
            match e.strip_prefix("max_timeout_ms: ") {
                Some(why) => fail("egress.max_timeout_ms", why)?,
                None => fail("egress.allow", &e)?,
            }
        }
        if let Some(t) = &self.admin_token
            && t.expose_secret().trim().len() < 16
        {
            fail(
                "admin_token",
                "must be at least 16 characters (leave it unset to turn the operators' token off)",
            )?;
        }
        if self.ingest.max_body_bytes < 64 {
            fail("ingest.max_body_bytes", "must be at least 64")?;
        }
        if !(100..=300_000).contains(&self.ingest.header_read_timeout_ms) {
            fail(
                "ingest.header_read_timeout_ms",
                "must be between 100 and 300000",
            )?;
        }
        if !(100..=600_000).contains(&self.ingest.body_timeout_ms) {
            fail("ingest.body_timeout_ms", "must be between 100 and 600000")?;
        }
        if self.ingest.max_connections == 0 {
            fail("ingest.max_connections", "must be at least 1")?;
        }
        if !(8..=30).contains(&self.broker.delay_levels) {
            fail("broker.delay_levels", "must be between 8 and 30")?;
        }
        if self.broker.delivery_limit == 0 {
            fail("broker.delivery_limit", "must be at least 1")?;
        }
        if self.broker.publisher_channels == 0 {
            fail("broker.publisher_channels", "must be at least 1")?;
        }
        let bad_prefix = |p: &str| p.contains(|c: char| c.is_whitespace() || c == '*' || c == '#');
        if bad_prefix(&self.queue_prefix) {
            fail("queue_prefix", "must not contain spaces, `*` or `#`")?;
        }
        if self.broker.delay_prefix.as_deref().is_some_and(bad_prefix) {
            fail("broker.delay_prefix", "must not contain spaces, `*` or `#`")?;
        }
        self.retry
            .validate()
            .map_err(|e| anyhow::anyhow!("invalid configuration: {e} (SWITCHYARD_RETRY__…)"))?;
        self.breaker
            .validate()
            .map_err(|e| anyhow::anyhow!("invalid configuration: {e} (SWITCHYARD_BREAKER__…)"))?;
        if !self.redis_url.is_empty()
            && !self.redis_url.starts_with("redis://")
            && !self.redis_url.starts_with("rediss://")
        {
            fail(
                "redis_url",
                "must be a redis:// URL, or empty for per-process breakers and limits",
            )?;
        }
        if self.redis_breaker_trust_ms > 10_000 {
            fail(
                "redis_breaker_trust_ms",
                "must be at most 10000 (a breaker the fleet opened would go unnoticed that long)",
            )?;
        }
        if self.redis_breaker_report_ms > 1_000 {
            fail(
                "redis_breaker_report_ms",
                "must be at most 1000 (the fleet's breakers would judge this process's calls that late)",
            )?;
        }
        Ok(())
    }

    /// Breakers and rate limits: shared through Redis, or per process without it.
    pub fn guard(&self) -> anyhow::Result<Arc<Guard>> {
        if self.redis_url.is_empty() {
            return Ok(Arc::new(Guard::local(&self.queue_prefix)));
        }
        Ok(Arc::new(
            Guard::shared(&self.redis_url, &self.queue_prefix)
                .context("invalid configuration: redis_url (SWITCHYARD_REDIS_URL)")?
                .trusting_closed_for(Duration::from_millis(self.redis_breaker_trust_ms))
                .reporting_every(Duration::from_millis(self.redis_breaker_report_ms)),
        ))
    }

    pub fn keyring(&self) -> anyhow::Result<switchyard_vault::Keyring> {
        use secrecy::ExposeSecret;
        let mut specs: Vec<String> = Vec::new();
        if let Some(spec) = &self.vault_keys {
            specs.push(spec.expose_secret().to_owned());
        }
        if let Some(path) = &self.vault_keys_file {
            let text = std::fs::read_to_string(path).with_context(|| {
                format!("invalid configuration: vault_keys_file (SWITCHYARD_VAULT_KEYS_FILE): cannot read {}", path.display())
            })?;
            specs.extend(
                text.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .map(str::to_owned),
            );
        }
        if specs.is_empty() {
            return Ok(switchyard_vault::Keyring::empty());
        }
        switchyard_vault::Keyring::parse(&SecretString::from(specs.join(",")), self.vault_active_key.as_deref())
            .context("invalid configuration: vault_keys (SWITCHYARD_VAULT_KEYS / SWITCHYARD_VAULT_KEYS_FILE)")
    }

    pub fn topology(&self) -> switchyard_broker::Topology {
        switchyard_broker::Topology {
            prefix: self.queue_prefix.clone(),
            providers: switchyard_providers::target_providers(),
            delivery_limit: self.broker.delivery_limit,
            delay_levels: self.broker.delay_levels,
            delay_prefix: self
                .broker
                .delay_prefix
                .clone()
                .unwrap_or_else(|| self.queue_prefix.clone()),
        }
    }

    pub fn broker_config(&self, name: &str) -> switchyard_broker::BrokerConfig {
        let mut b = switchyard_broker::BrokerConfig::new(self.amqp_url.clone(), self.topology());
        b.confirm_timeout = Duration::from_millis(self.broker.confirm_timeout_ms);
        b.publisher_channels = self.broker.publisher_channels;
        b.connection_name = format!("switchyard {name}");
        b
    }

    pub fn ingest_config(
        &self,
        guard: Arc<Guard>,
        keyring: Arc<switchyard_vault::Keyring>,
    ) -> switchyard_ingest::IngestConfig {
        switchyard_ingest::IngestConfig {
            keyring,
            max_body_bytes: self.ingest.max_body_bytes,
            retry_after_secs: self.ingest.retry_after_secs,
            admin_token: self.admin_token.clone(),
            guard: guard.is_shared().then_some(guard),
            oauth_redirect_uri: Some(self.oauth_redirect_uri()),
            header_read_timeout: Duration::from_millis(self.ingest.header_read_timeout_ms),
            body_timeout: Duration::from_millis(self.ingest.body_timeout_ms),
            max_connections: self.ingest.max_connections,
            call_retry: self.retry.clone(),
            call_breaker: self.breaker.clone(),
            // Checked when the configuration was loaded.
            trusted_proxies: self.ingest.trusted_proxies().unwrap_or_default(),
            ..Default::default()
        }
    }

    /// Where a worker or a scheduler serves its health and metrics (`None`: off).
    pub fn health_addr(&self) -> Option<SocketAddr> {
        self.health_listen.parse().ok()
    }

    /// Where a provider sends the user back after consenting.
    pub fn oauth_redirect_uri(&self) -> String {
        let base = self
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", self.listen));
        format!("{}/v1/oauth/callback", base.trim_end_matches('/'))
    }

    pub fn scheduler_config(
        &self,
        calls: Option<switchyard_ops::calls::Calls>,
    ) -> switchyard_scheduler::SchedulerConfig {
        switchyard_scheduler::SchedulerConfig {
            calls,
            tick: Duration::from_millis(self.scheduler.tick_ms),
            lock_retry: Duration::from_millis(self.scheduler.lock_retry_ms),
            stall_after: Duration::from_secs(self.scheduler.stall_after_secs),
            notify: match (&self.notify.url, &self.notify.secret) {
                (Some(url), Some(secret)) => Some(switchyard_ops::notify::NotifyConfig {
                    url: url.clone(),
                    secret: secret.clone(),
                    dead_letter_threshold: self.notify.dead_letter_threshold,
                    timeout: Duration::from_millis(self.notify.timeout_ms),
                }),
                _ => None,
            },
            ..Default::default()
        }
    }

    pub fn worker_config(&self, guard: Arc<Guard>) -> switchyard_worker::WorkerConfig {
        switchyard_worker::WorkerConfig {
            providers: self.worker.providers.clone(),
            prefetch: self.worker.prefetch,
            concurrency: self.worker.concurrency,
            max_per_integration: self.worker.max_per_integration,
            // Capped: a waiting job holds one of the deliveries the broker lets us have.
            turn_wait: Duration::from_millis(self.worker.turn_wait_ms.min(10_000)),
            // A job's calls (look-up, steps, write, token refresh) each end within the
            // fleet's call timeout; a lease longer than ten of them outlives only a crash.
            lease: Duration::from_millis(self.egress.max_timeout_ms) * 10 + Duration::from_secs(30),
            shutdown_grace: Duration::from_secs(self.worker.shutdown_grace_secs),
            sync_max_pages: self.worker.sync_max_pages.max(1),
            analyse_young_tables_every: (self.worker.analyse_young_tables_ms > 0)
                .then(|| Duration::from_millis(self.worker.analyse_young_tables_ms)),
            default_retry: self.retry.clone(),
            default_breaker: self.breaker.clone(),
            guard,
            ..Default::default()
        }
    }
}

#[cfg(test)]
// figment's `Jail` closures return figment's own (large) error type.
#[allow(clippy::result_large_err)]
mod tests {
    use super::*;
    use figment::Jail;

    fn load_err() -> String {
        Config::load(None).unwrap_err().to_string()
    }

    /// The CLI's own variables (`SWITCHYARD_URL`, `SWITCHYARD_TOKEN`, `SWITCHYARD_OUTPUT`)
    /// are not settings: an operator who has them set can still run `migrate` or a service
    /// (found by `just bench`, whose set-up runs `migrate` with them).
    #[test]
    fn the_clis_variables_are_not_settings() {
        Jail::expect_with(|jail| {
            jail.set_env("SWITCHYARD_URL", "http://127.0.0.1:8080");
            jail.set_env("SWITCHYARD_TOKEN", "an-operators-token");
            jail.set_env("SWITCHYARD_OUTPUT", "json");
            Config::load(None).map_err(|e| e.to_string())?;
            Ok(())
        });
    }

    #[test]
    fn notifications_need_a_url_and_a_secret_together_and_health_an_address() {
        Jail::expect_with(|jail| {
            jail.set_env("SWITCHYARD_NOTIFY__URL", "https://ops.example.com/hooks");
            assert!(load_err().contains("notify.secret"), "{}", load_err());
            jail.set_env("SWITCHYARD_NOTIFY__SECRET", "whsec_c2hvcnQ=");
            assert!(
                load_err().contains("notify.secret"),
                "too short: {}",
                load_err()
            );
            jail.set_env(
                "SWITCHYARD_NOTIFY__SECRET",
                "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            );
            let cfg = Config::load(None).expect("valid");
            assert!(cfg.scheduler_config(None).notify.is_some());
            jail.set_env("SWITCHYARD_NOTIFY__URL", "ftp://ops.example.com");
            assert!(load_err().contains("notify.url"), "{}", load_err());
            jail.set_env("SWITCHYARD_NOTIFY__URL", "https://ops.example.com/hooks");
            jail.set_env("SWITCHYARD_HEALTH_LISTEN", "nine");
            assert!(
                load_err().contains("SWITCHYARD_HEALTH_LISTEN"),
                "{}",
                load_err()
            );
            jail.set_env("SWITCHYARD_HEALTH_LISTEN", "off");
            assert_eq!(Config::load(None).expect("valid").health_addr(), None);
            Ok(())
        });
    }

    #[test]
    fn defaults_load_and_env_overrides_nested_settings() {
        Jail::expect_with(|jail| {
            jail.set_env("SWITCHYARD_WORKER__PREFETCH", "7");
            jail.set_env("SWITCHYARD_RETRY__MAX_ATTEMPTS", "3");
            let cfg = Config::load(None).expect("loads");
            assert_eq!(cfg.worker.prefetch, 7);
            assert_eq!(cfg.retry.max_attempts, 3);
            assert_eq!(cfg.worker.concurrency, 128);
            Ok(())
        });
    }

    #[test]
    fn the_breakers_report_interval_is_bounded() {
        Jail::expect_with(|jail| {
            let cfg = Config::load(None).expect("loads");
            assert_eq!(cfg.redis_breaker_report_ms, 10);
            jail.set_env("SWITCHYARD_REDIS_BREAKER_REPORT_MS", "0");
            assert_eq!(
                Config::load(None).expect("valid").redis_breaker_report_ms,
                0
            );
            jail.set_env("SWITCHYARD_REDIS_BREAKER_REPORT_MS", "5000");
            assert!(
                load_err().contains("SWITCHYARD_REDIS_BREAKER_REPORT_MS"),
                "{}",
                load_err()
            );
            Ok(())
        });
    }

    #[test]
    fn errors_name_the_setting() {
        Jail::expect_with(|jail| {
            jail.set_env("SWITCHYARD_WORKER__PREFETCH", "0");
            assert!(
                load_err().contains("SWITCHYARD_WORKER__PREFETCH"),
                "{}",
                load_err()
            );
            jail.set_env("SWITCHYARD_WORKER__PREFETCH", "lots");
            let e = load_err();
            assert!(
                e.contains("worker.prefetch") && e.contains("SWITCHYARD_WORKER__PREFETCH"),
                "{e}"
            );
            jail.set_env("SWITCHYARD_WORKER__PREFETCH", "8");
            jail.set_env("SWITCHYARD_AMQP_URL", "http://nope");
            assert!(load_err().contains("SWITCHYARD_AMQP_URL"), "{}", load_err());
            jail.set_env("SWITCHYARD_AMQP_URL", "amqp://127.0.0.1");
            jail.set_env("SWITCHYARD_LISTEN_ADDR", "x");
            assert!(
                load_err().contains("listen_addr"),
                "an unknown setting is named: {}",
                load_err()
            );
            Ok(())
        });
    }

    #[test]
    fn a_config_file_is_read_and_the_environment_wins() {
        Jail::expect_with(|jail| {
            jail.create_file(
                "sy.toml",
                "queue_prefix = \"staging.\"\n[worker]\nconcurrency = 4\n",
            )?;
            jail.set_env("SWITCHYARD_WORKER__CONCURRENCY", "6");
            let cfg = Config::load(Some(Path::new("sy.toml"))).expect("loads");
            assert_eq!(cfg.queue_prefix, "staging.");
            assert_eq!(cfg.worker.concurrency, 6);
            assert!(
                Config::load(Some(Path::new("missing.toml")))
                    .unwrap_err()
                    .to_string()
                    .contains("does not exist")
            );
            Ok(())
        });
    }

    #[test]
    fn vault_keys_come_from_the_environment_and_a_file() {
        Jail::expect_with(|jail| {
            let k1 = switchyard_vault::Keyring::generate("k1");
            let k2 = switchyard_vault::Keyring::generate("k2");
            use secrecy::ExposeSecret;
            jail.create_file("keys", &format!("# vault keys\n{}\n", k2.expose_secret()))?;
            jail.set_env("SWITCHYARD_VAULT_KEYS", k1.expose_secret());
            jail.set_env("SWITCHYARD_VAULT_KEYS_FILE", "keys");
            jail.set_env("SWITCHYARD_VAULT_ACTIVE_KEY", "k2");
            let ring = Config::load(None)
                .expect("loads")
                .keyring()
                .expect("keyring");
            assert!(ring.has_key("k1") && ring.has_key("k2"));
            assert_eq!(ring.active_key_id(), Some("k2"));
            Ok(())
        });
    }

    #[test]
    fn the_vault_key_setting_is_checked() {
        Jail::expect_with(|jail| {
            jail.set_env("SWITCHYARD_VAULT_KEYS", "k1:notbase64!");
            let cfg = Config::load(None).expect("loads");
            let e = format!("{:#}", cfg.keyring().unwrap_err());
            assert!(e.contains("SWITCHYARD_VAULT_KEYS"), "{e}");
            Ok(())
        });
    }

    #[test]
    fn an_empty_admin_token_and_a_bad_egress_list_are_refused() {
        Jail::expect_with(|jail| {
            jail.set_env("SWITCHYARD_ADMIN_TOKEN", "");
            let e = load_err();
            assert!(e.contains("SWITCHYARD_ADMIN_TOKEN"), "{e}");
            jail.set_env("SWITCHYARD_ADMIN_TOKEN", "   ");
            assert!(load_err().contains("SWITCHYARD_ADMIN_TOKEN"));
            jail.set_env("SWITCHYARD_ADMIN_TOKEN", "a-long-enough-token");
            jail.set_env("SWITCHYARD_EGRESS__ALLOW", "10.0.0.0/8,nonsense");
            let e = load_err();
            assert!(
                e.contains("SWITCHYARD_EGRESS__ALLOW") && e.contains("nonsense"),
                "{e}"
            );
            jail.set_env("SWITCHYARD_EGRESS__ALLOW", "10.0.0.0/8, 127.0.0.1");
            Config::load(None).expect("loads");
            Ok(())
        });
    }

    #[test]
    fn tls_the_build_cannot_honour_is_refused_at_start() {
        Jail::expect_with(|jail| {
            let pg = "postgres://postgres@127.0.0.1:5432/switchyard";
            // Each of these asks for TLS in a way that cannot work: refused now, naming
            // the setting, rather than at the first connection.
            for (var, url, needle, good) in [
                (
                    "SWITCHYARD_DATABASE_URL",
                    format!("{pg}?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem"),
                    "sslrootcert",
                    pg,
                ),
                (
                    "SWITCHYARD_DATABASE_URL",
                    format!("{pg}?sslmode=sometimes"),
                    "sslmode",
                    pg,
                ),
                (
                    "SWITCHYARD_REDIS_URL",
                    "redis+tls://127.0.0.1:6380".to_owned(),
                    "rediss://",
                    "redis://127.0.0.1:6379",
                ),
            ] {
                jail.set_env(var, &url);
                let e = load_err();
                assert!(e.contains(var) && e.contains(needle), "{url}: {e}");
                jail.set_env(var, good);
            }
            // What the build supports loads.
            jail.set_env("SWITCHYARD_DATABASE_URL", format!("{pg}?sslmode=require"));
            jail.set_env("SWITCHYARD_REDIS_URL", "rediss://127.0.0.1:6380");
            jail.set_env(
                "SWITCHYARD_AMQP_URL",
                "amqps://guest:guest@127.0.0.1:5671/%2f",
            );
            Config::load(None).expect("loads");
            Ok(())
        });
    }
}
