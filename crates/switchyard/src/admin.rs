//! Operator commands. Each is a client of the management API (`--url`, `--token`): an
//! operator needs a token, not the database. Only bootstrap commands (`migrate`, `keys`)
//! open the database.
use anyhow::{Context, bail};
use clap::builder::PossibleValuesParser;
use clap::{Args, Subcommand};
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use std::io::Read;
use switchyard_core::{DeadReason, Direction, IntegrationStatus, JobStatus};
use uuid::Uuid;

use crate::client::{Api, Refused, str_of};
use crate::config::Config;
use crate::output::{self, Output};
use crate::serve::open_store;

/// The values of one of Switchyard's enumerations, as `--help` lists them.
fn choices<T: Copy + 'static>(
    all: &'static [T],
    name: fn(T) -> &'static str,
) -> PossibleValuesParser {
    PossibleValuesParser::new(all.iter().map(move |v| name(*v)))
}

#[derive(Debug, Subcommand)]
pub enum IntegrationsCmd {
    /// Create an integration. Prints its webhook URL and, once, its webhook API key.
    Create(Box<CreateArgs>),
    /// List integrations.
    List {
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long)]
        provider: Option<String>,
        #[arg(long, value_parser = choices(IntegrationStatus::ALL, IntegrationStatus::as_str))]
        status: Option<String>,
    },
    /// Show one integration (by id, tenant/name, or name), with its routes. Credentials are
    /// never shown.
    Show { integration: String },
    /// Rotate an integration's webhook secrets or API keys without downtime: add the new
    /// one, let the sender switch, then remove the old one by its fingerprint.
    #[command(subcommand)]
    WebhookSecrets(SecretsCmd),
    /// Change settings, inbound spec, entities, name or credentials (validated first).
    Update {
        integration: String,
        #[arg(long)]
        name: Option<String>,
        /// Inline JSON, @FILE or - (replaces the settings).
        #[arg(long)]
        settings: Option<String>,
        #[arg(long)]
        inbound: Option<String>,
        #[arg(long, value_delimiter = ',')]
        entities: Option<Vec<String>>,
        #[arg(long, value_parser = choices(Direction::ALL, Direction::as_str))]
        direction: Option<String>,
        /// A JSON file with the new credentials, or - for stdin.
        #[arg(long)]
        credentials_file: Option<String>,
        /// When it syncs on its own, e.g. '{"every": "daily", "at": "02:30", "timezone":
        /// "Europe/Lisbon"}' (hourly, daily, weekly, cron, or manual to stop).
        #[arg(long)]
        schedule: Option<String>,
    },
    /// What happened to it that an operator should know (e.g. moved to `error` after
    /// failed syncs), newest first.
    Events { integration: String },
    /// Soft-delete: it stops sending and receiving; its jobs and mappings stay for audit.
    Delete { integration: String },
    /// Call the provider with its settings and credentials: success moves `inactive` to
    /// `testing`; failure moves it to `error` with the message (an active one stays active).
    Test { integration: String },
    /// Connect an OAuth2 integration: prints the consent URL, then waits (up to ten minutes)
    /// until the provider sends the user back to Switchyard's callback.
    Connect {
        integration: String,
        /// Where the provider sends the user back (default: Switchyard's own callback, at
        /// SWITCHYARD_PUBLIC_URL where it is set).
        #[arg(long)]
        redirect_uri: Option<String>,
        /// Print the URL and return without waiting.
        #[arg(long)]
        no_wait: bool,
    },
    /// Activate: its webhooks are taken, and the jobs held while it was not active are
    /// released in the order they came.
    Activate { integration: String },
    /// Deactivate: its webhooks are refused; jobs for it are held (or dropped, as each route
    /// says).
    Deactivate { integration: String },
    /// Run one of its connector's operations (a charge, a query, a message) and wait for
    /// the provider's answer. `switchyard connectors show <provider>` lists them and their
    /// input. A pending call (an STK push) is settled later by the provider's callback, or
    /// by asking it.
    Operate {
        integration: String,
        /// The operation's name (`charge`, `query`…).
        operation: String,
        /// Its input: inline JSON, @FILE or - for stdin.
        #[arg(long, default_value = "{}")]
        input: String,
        /// Required for unsafe operations (a charge, a send): the same key returns the same
        /// call and never charges twice. Use one key per payment you mean.
        #[arg(long)]
        idempotency_key: Option<String>,
        /// How long to wait for the provider's answer, in seconds (1 to 120).
        #[arg(long, default_value_t = 30)]
        timeout_secs: u64,
    },
    /// Its operation calls, newest first; `--status pending` lists those waiting for the
    /// provider's result.
    Operations {
        integration: String,
        #[arg(long, value_parser = ["running", "pending", "succeeded", "failed", "expired"])]
        status: Option<String>,
        /// The provider's reference (M-Pesa's CheckoutRequestID).
        #[arg(long)]
        reference: Option<String>,
    },
    /// Totals, success rate, last sync and last error, average and p95 duration.
    Stats {
        integration: String,
        #[arg(long, default_value_t = 24)]
        hours: i64,
    },
}

#[derive(Debug, Subcommand)]
pub enum SecretsCmd {
    /// Fingerprints of the active secrets (or API keys).
    List { integration: String },
    /// Add a secret (signing schemes: read from --file; api_key: a new key is generated
    /// and shown once). Old and new are both accepted until the old one is removed.
    Add {
        integration: String,
        #[arg(long)]
        file: Option<String>,
    },
    /// Stop accepting the secret (or API key) with this fingerprint.
    Remove {
        integration: String,
        #[arg(long)]
        fingerprint: String,
    },
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    #[arg(long, default_value = "default")]
    tenant: String,
    /// Unique within the tenant: a-z, 0-9, _ or -.
    #[arg(long)]
    name: String,
    /// `rest` (an HTTP API described by a manifest), `webhook` (only sends webhooks), or a
    /// built-in connector (`switchyard connectors list`).
    #[arg(long, required_unless_present = "connector")]
    provider: Option<String>,
    /// A built-in connector, e.g. quickbooks-online, prestashop, moloni (the same as
    /// --provider NAME); `switchyard connectors show NAME` lists its settings.
    #[arg(long, conflicts_with = "provider")]
    connector: Option<String>,
    /// The settings (a manifest for `rest`, a connector's settings) and common settings:
    /// inline JSON, @FILE, or - for stdin.
    #[arg(long, default_value = "{}")]
    settings: String,
    /// One setting, KEY=VALUE (repeatable; over --settings), e.g. --setting realm_id=9130357.
    #[arg(long = "setting", value_name = "KEY=VALUE")]
    setting: Vec<String>,
    /// How this integration's webhooks are read (entity, event, ids): inline JSON or @FILE.
    #[arg(long, default_value = "{}")]
    inbound: String,
    /// A JSON file with the credentials (an object of strings), or - for stdin. They are
    /// encrypted with the vault's active key and never shown again.
    #[arg(long)]
    credentials_file: Option<String>,
    /// How its webhooks authenticate. Default: api_key for the `webhook` provider, disabled
    /// for any other (give a scheme to a target that also sends webhooks, e.g. an ERP in a
    /// two-way sync).
    #[arg(long, value_enum)]
    webhook_auth: Option<Scheme>,
    /// The signing secrets of a signing scheme, one per line (several while rotating). For
    /// standard_webhooks without a file a `whsec_` secret is generated and shown once.
    #[arg(long)]
    webhook_secret_file: Option<String>,
    /// The generic HMAC scheme's settings, e.g.
    /// '{"header": "X-Signature", "algorithm": "sha256", "encoding": "hex", "prefix": "sha256="}'.
    #[arg(long)]
    webhook_hmac: Option<String>,
    /// The user name for basic auth (its password is generated and shown once).
    #[arg(long, default_value = "webhook")]
    basic_user: String,
    /// With --webhook-auth api_key: the header that carries the key, when the sender cannot
    /// send X-API-Key (Flutterwave: verif-hash).
    #[arg(long)]
    webhook_key_header: Option<String>,
    /// The verify token a subscription challenge must carry (Meta's WhatsApp Cloud API:
    /// GET …?hub.mode=subscribe&hub.verify_token=…&hub.challenge=…).
    #[arg(long)]
    verify_token: Option<String>,
    /// Only these senders (CIDR, repeatable) may send webhooks.
    #[arg(long = "allow-ip")]
    allow_ips: Vec<String>,
    /// Largest webhook body accepted for this integration.
    #[arg(long)]
    max_body_bytes: Option<usize>,
    /// `inactive` until tested and activated, or `active` at once.
    #[arg(long, default_value = "inactive", value_parser = choices(IntegrationStatus::ALL, IntegrationStatus::as_str))]
    status: String,
    #[arg(long, default_value = "export", value_parser = choices(Direction::ALL, Direction::as_str))]
    direction: String,
    /// Comma-separated entities this integration syncs (orders, products, …).
    #[arg(long, value_delimiter = ',')]
    entities: Vec<String>,
    /// When it syncs on its own, e.g. '{"every": "hourly"}' or '{"every": "cron", "cron":
    /// "0 */6 * * *", "timezone": "Europe/Paris"}' (inline JSON or @FILE).
    #[arg(long)]
    schedule: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum SyncCmd {
    /// Start a sync of an integration now (import: its changed records to its routes'
    /// targets; export: its sources' changed records to it).
    Start {
        integration: String,
        /// Only these entities (comma-separated).
        #[arg(long, value_delimiter = ',')]
        entities: Option<Vec<String>>,
        /// Read every record, not only those changed since the last successful sync.
        #[arg(long)]
        full: bool,
        /// Wait for the run to end, with its progress; exits non-zero unless it succeeds.
        #[arg(long)]
        wait: bool,
    },
    /// An integration's sync runs, newest first.
    Runs {
        integration: String,
        #[arg(long, default_value_t = 20)]
        limit: i64,
    },
    /// One sync run, with its counts.
    Show { run: Uuid },
    /// Cancel a run: no further page is read; its jobs that have not started are skipped.
    Cancel { run: Uuid },
}

/// A route's filter and options.
#[derive(Debug, Args)]
pub struct RouteOptionArgs {
    /// Only events whose data hold one of the listed values at each JSON pointer, e.g.
    /// '{"/status": ["paid", "completed"]}'. Others are skipped (and say so).
    #[arg(long)]
    filter: Option<String>,
    /// When a target changed the record too: last_writer_wins, source_wins, target_wins.
    #[arg(long, default_value = "last_writer_wins")]
    conflict: switchyard_core::ConflictPolicy,
    /// While a target is not active: hold its jobs (released in order on activation) or
    /// drop them (recorded as skipped).
    #[arg(long, default_value = "hold")]
    when_inactive: switchyard_core::WhenInactive,
    /// Before creating a record at a target, look it up there by its natural key (the
    /// target's `lookup`) and update it when it exists (a catalog already in the target).
    #[arg(long)]
    link_existing: bool,
    /// A value for the route's jobs' bodies, NAME=VALUE (repeatable): a body map reads it at
    /// /_switchyard/route/NAME (e.g. --value id_customer=7: who this source is at the target).
    #[arg(long = "value", value_name = "NAME=VALUE")]
    values: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum RoutesCmd {
    /// Route an entity's events from one integration to one or more targets. Adding to an
    /// existing route (same source, entity and event) adds targets and sets its options.
    Add {
        /// The source integration (id or tenant/name).
        #[arg(long)]
        from: String,
        #[arg(long)]
        entity: String,
        /// The event name to match, or `*` for every event of the entity.
        #[arg(long, default_value = "*")]
        event: String,
        /// A target integration (id or tenant/name); repeat for fan-out.
        #[arg(long = "to", required = true)]
        targets: Vec<String>,
        #[command(flatten)]
        options: RouteOptionArgs,
    },
    /// List the routes from an integration, with their options.
    List { integration: String },
    /// Remove a route, or only one of its targets (`--to`). Jobs already made go on.
    Remove {
        /// The source integration (id or tenant/name).
        #[arg(long)]
        from: String,
        #[arg(long)]
        entity: String,
        #[arg(long, default_value = "*")]
        event: String,
        /// Remove only this target (the route goes when its last target does).
        #[arg(long = "to")]
        target: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum JobsCmd {
    /// Show a job with its attempts.
    Show { id: Uuid },
    /// List jobs, newest first.
    List {
        /// Target integration (id or tenant/name).
        #[arg(long)]
        integration: Option<String>,
        #[arg(long, value_parser = choices(JobStatus::ALL, JobStatus::as_str))]
        status: Option<String>,
        #[arg(long)]
        entity: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
}

#[derive(Debug, Subcommand)]
pub enum RecordsCmd {
    /// A record by any system's id for it, with its id in every system it has reached:
    /// "what is shop A's order 1001 in the ERP" is `records show --in shop-a --entity order
    /// --id 1001 --to erp`, and back.
    Show {
        /// The integration whose id you have (id or tenant/name).
        #[arg(long = "in")]
        integration: String,
        #[arg(long)]
        entity: String,
        /// That integration's id for the record.
        #[arg(long)]
        id: String,
        /// Print only the record's id in this integration.
        #[arg(long)]
        to: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConnectorsCmd {
    /// Every provider kind.
    List,
    /// One provider kind: what it is and what its settings are.
    Show { name: String },
}

#[derive(Debug, Subcommand)]
pub enum ConflictsCmd {
    /// Conflicts between two systems' changes to one record, newest first.
    List {
        /// Only conflicts this integration took part in.
        #[arg(long)]
        integration: Option<String>,
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
}

#[derive(Debug, Subcommand)]
pub enum MappingsCmd {
    /// Look one mapping up by internal or external id.
    Show {
        integration: String,
        #[arg(long)]
        entity: String,
        #[arg(
            long,
            conflicts_with = "external_id",
            required_unless_present = "external_id"
        )]
        internal_id: Option<String>,
        #[arg(long)]
        external_id: Option<String>,
    },
    /// Forget a mapping, so the entity is created again on its next event.
    Delete {
        integration: String,
        #[arg(long)]
        entity: String,
        #[arg(long)]
        internal_id: String,
    },
    /// List an integration's id mappings.
    List {
        integration: String,
        #[arg(long)]
        entity: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: i64,
    },
}

/// Which dead letters (every option narrows the selection).
#[derive(Debug, Args)]
pub struct DlqFilterArgs {
    #[arg(long)]
    provider: Option<String>,
    #[arg(long)]
    tenant: Option<String>,
    /// The target integration (id or tenant/name).
    #[arg(long)]
    integration: Option<String>,
    #[arg(long)]
    entity: Option<String>,
    #[arg(long, value_parser = choices(DeadReason::ALL, DeadReason::as_str))]
    reason: Option<String>,
    #[arg(long)]
    job: Option<Uuid>,
    /// Dead-lettered at or after (RFC 3339, e.g. 2026-11-22T08:00:00Z).
    #[arg(long)]
    since: Option<String>,
    /// Dead-lettered before (RFC 3339).
    #[arg(long)]
    until: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum DlqCmd {
    /// List dead letters, newest first.
    List {
        #[command(flatten)]
        filter: DlqFilterArgs,
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Show one dead job: its dead letter, its row and every attempt.
    Show { job: Uuid },
    /// Put dead letters back to work with fresh attempts (their history is kept). Exits
    /// non-zero when some could not be replayed.
    Replay {
        #[command(flatten)]
        filter: DlqFilterArgs,
        /// Say what would move, move nothing.
        #[arg(long)]
        dry_run: bool,
        #[arg(long, default_value_t = 1000)]
        limit: usize,
        /// At most this many replays a second.
        #[arg(long)]
        rate: Option<f64>,
    },
    /// Delete dead letters for good (their jobs stay `dead`, marked purged).
    Purge {
        #[command(flatten)]
        filter: DlqFilterArgs,
        #[arg(long)]
        dry_run: bool,
        #[arg(long, default_value_t = 1000)]
        limit: usize,
        /// Required to purge for real.
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Only this tenant's things.
    #[arg(long)]
    tenant: Option<String>,
    /// Only changes by this actor (`api:admin`, `api:tenant:acme`, `cli:root`, `system`).
    #[arg(long)]
    actor: Option<String>,
    /// Only this action (`integration.update`), or a prefix ending in a dot (`route.`).
    #[arg(long)]
    action: Option<String>,
    /// Only changes to this thing (an integration's, route's or API key's id).
    #[arg(long)]
    object: Option<String>,
    /// Since this time (RFC 3339).
    #[arg(long)]
    since: Option<chrono::DateTime<chrono::Utc>>,
    #[arg(long, default_value_t = 50)]
    limit: i64,
}

#[derive(Debug, Subcommand)]
pub enum ApiKeysCmd {
    /// Create a tenant's API key; it is shown once. With it, the tenant sees and replays
    /// only its own integrations, jobs and dead letters.
    Create {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        name: String,
    },
    /// List API keys (never the keys themselves).
    List {
        #[arg(long)]
        tenant: Option<String>,
    },
    /// Revoke a key at once.
    Revoke {
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        name: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysCmd {
    /// Print a new random vault key as `<id>:<base64>`, for SWITCHYARD_VAULT_KEYS.
    Generate {
        #[arg(long, default_value = "k1")]
        id: String,
    },
    /// Re-encrypt every stored secret under the active vault key. Run it with the old and
    /// the new key in SWITCHYARD_VAULT_KEYS and SWITCHYARD_VAULT_ACTIVE_KEY naming the new
    /// one; services keep working throughout (they open either). Then drop the old key.
    Rotate,
}

pub fn keys_generate(id: &str) {
    println!(
        "{}",
        switchyard_vault::Keyring::generate(id).expose_secret()
    );
}

pub async fn keys_rotate(cfg: &Config) -> anyhow::Result<()> {
    let store = open_store(cfg).await?;
    let keyring = cfg.keyring()?;
    let r = switchyard_ops::keys::rotate(&store, &keyring).await?;
    let active = keyring.active_key_id().unwrap_or_default();
    println!(
        "re-encrypted {} of {} secret(s) under vault key `{active}`",
        r.resealed, r.found
    );
    if r.resealed < r.found {
        println!("some changed meanwhile; run `switchyard keys rotate` again");
    }
    Ok(())
}

/// Inline JSON, `@file`, or `-` for stdin.
fn read_json(what: &str, arg: &str) -> anyhow::Result<Value> {
    let text = if arg == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("reading stdin")?;
        s
    } else if let Some(path) = arg.strip_prefix('@') {
        std::fs::read_to_string(path).with_context(|| format!("--{what}: cannot read {path}"))?
    } else {
        arg.to_owned()
    };
    serde_json::from_str(&text).with_context(|| format!("--{what}: not valid JSON"))
}

/// The webhook policy the create flags ask for, as the HTTP API takes it.
fn webhook_auth_json(a: &CreateArgs) -> anyhow::Result<Option<Value>> {
    let Some(scheme) = a.webhook_auth else {
        if a.allow_ips.is_empty() && a.max_body_bytes.is_none() {
            return Ok(None);
        }
        bail!("--allow-ip and --max-body-bytes go with --webhook-auth");
    };
    // The choice's name is the API's spelling (snake_case).
    let name = clap::ValueEnum::to_possible_value(&scheme)
        .map(|p| p.get_name().to_owned())
        .context("--webhook-auth")?;
    let mut v = json!({"scheme": name});
    match scheme {
        Scheme::Hmac => {
            let spec = read_json(
                "webhook-hmac",
                a.webhook_hmac
                    .as_deref()
                    .context("--webhook-hmac is required with --webhook-auth hmac")?,
            )?;
            let Value::Object(spec) = spec else {
                bail!("--webhook-hmac: must be a JSON object");
            };
            v.as_object_mut().expect("an object").extend(spec);
        }
        Scheme::Basic => v["username"] = json!(a.basic_user),
        _ => {}
    }
    if let Some(h) = &a.webhook_key_header {
        if scheme != Scheme::ApiKey {
            bail!("--webhook-key-header goes with --webhook-auth api_key");
        }
        v["header"] = json!(h);
    }
    if let Some(t) = &a.verify_token {
        v["verify_token"] = json!(t);
    }
    if !a.allow_ips.is_empty() {
        v["allowed_cidrs"] = json!(a.allow_ips);
    }
    if let Some(n) = a.max_body_bytes {
        v["max_body_bytes"] = json!(n);
    }
    Ok(Some(v))
}

/// How an integration's webhooks authenticate (the HTTP API's `webhook_auth.scheme`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum Scheme {
    /// An `X-API-Key` header (or --webhook-key-header); a key is generated and shown once.
    ApiKey,
    /// `?key=…` in the callback URL, for senders that set no header (M-Pesa, Pesapal,
    /// Africa's Talking); a key is generated and shown once.
    QueryKey,
    /// HTTP Basic (user from --basic-user); a password is generated and shown once.
    Basic,
    /// Standard Webhooks signatures; without --webhook-secret-file a `whsec_` secret is
    /// generated and shown once.
    StandardWebhooks,
    Stripe,
    Shopify,
    Woocommerce,
    Github,
    /// Click's sign_string (MD5 with the service's secret key, from --webhook-secret-file).
    Click,
    /// A generic HMAC signature (settings in --webhook-hmac).
    Hmac,
    /// Anyone may send (only with --allow-ip).
    None,
    /// It receives no webhooks.
    Disabled,
}

/// `--value NAME=VALUE` pairs: a value that reads as JSON (a number, true, false) is that;
/// anything else is text.
fn route_values(pairs: &[String]) -> anyhow::Result<serde_json::Map<String, Value>> {
    pairs
        .iter()
        .map(|kv| {
            let (k, v) = kv
                .split_once('=')
                .with_context(|| format!("--value {kv}: write it NAME=VALUE"))?;
            let value = match serde_json::from_str::<Value>(v) {
                Ok(n @ (Value::Number(_) | Value::Bool(_))) => n,
                _ => Value::String(v.to_owned()),
            };
            Ok((k.trim().to_owned(), value))
        })
        .collect()
}

/// `switchyard audit`: the newest changes first.
pub async fn audit(api: &Api, out: Output, a: AuditArgs) -> anyhow::Result<()> {
    let mut q = vec![("limit", a.limit.to_string())];
    for (k, v) in [
        ("tenant", a.tenant),
        ("actor", a.actor),
        ("action", a.action),
        ("object", a.object),
        ("since", a.since.map(|t| t.to_rfc3339())),
    ] {
        if let Some(v) = v {
            q.push((k, v));
        }
    }
    let page = api.get("/v1/audit", &q).await?;
    if out == Output::Json {
        output::json(&page);
        return Ok(());
    }
    let rows = page["entries"].as_array().into_iter().flatten().map(|e| {
        let changed: Vec<&str> = e["changes"]
            .as_object()
            .map(|o| o.keys().map(String::as_str).collect())
            .unwrap_or_default();
        vec![
            short_time(&e["at"]),
            str_of(&e["actor"]),
            str_of(&e["tenant"]),
            str_of(&e["action"]),
            str_of(&e["object_id"]),
            changed.join(", "),
        ]
    });
    output::table(
        &["AT", "ACTOR", "TENANT", "ACTION", "OBJECT", "CHANGED"],
        rows,
    );
    Ok(())
}

/// An RFC 3339 time from the API, to the second.
fn short_time(v: &Value) -> String {
    v.as_str()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|| "-".into())
}

pub async fn api_keys(api: &Api, out: Output, cmd: ApiKeysCmd) -> anyhow::Result<()> {
    match cmd {
        ApiKeysCmd::Create { tenant, name } => {
            let made = api
                .post("/v1/api-keys", &json!({"tenant": tenant, "name": name}))
                .await?;
            if out == Output::Json {
                output::json(&made);
                return Ok(());
            }
            let key = str_of(&made["api_key"]);
            println!("API key `{name}` of tenant `{tenant}`, shown once: {key}");
            println!("use it as: Authorization: Bearer {key}");
        }
        ApiKeysCmd::List { tenant } => {
            let q: Vec<_> = tenant.into_iter().map(|t| ("tenant", t)).collect();
            let keys = api.get("/v1/api-keys", &q).await?;
            if out == Output::Json {
                output::json(&keys);
                return Ok(());
            }
            let rows = keys["api_keys"].as_array().into_iter().flatten().map(|k| {
                vec![
                    str_of(&k["tenant"]),
                    str_of(&k["name"]),
                    short_time(&k["created_at"]),
                    match k["revoked_at"] {
                        Value::Null => "active".into(),
                        ref t => format!("revoked {}", short_time(t)),
                    },
                ]
            });
            output::table(&["TENANT", "NAME", "CREATED", "STATE"], rows);
        }
        ApiKeysCmd::Revoke { tenant, name } => {
            let gone = api
                .delete(&format!("/v1/api-keys/{}/{}", seg(&tenant), seg(&name)))
                .await?;
            if out == Output::Json {
                output::json(&gone);
            } else {
                println!("revoked API key `{name}` of tenant `{tenant}`");
            }
        }
    }
    Ok(())
}

/// A path segment, percent-encoded.
fn seg(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

/// A file's non-empty lines (secrets, one per line).
fn lines_of(flag: &str, path: &str) -> anyhow::Result<Vec<String>> {
    Ok(std::fs::read_to_string(path)
        .with_context(|| format!("{flag}: cannot read {path}"))?
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect())
}

/// A JSON file, or `-` for stdin.
fn json_file(flag: &str, path: &str) -> anyhow::Result<Value> {
    read_json(
        flag,
        &format!("{}{path}", if path == "-" { "" } else { "@" }),
    )
}

/// A refusal whose message names an API field, named by the flag that sets it.
fn with_flags(e: anyhow::Error) -> anyhow::Error {
    let Some(r) = e.downcast_ref::<Refused>() else {
        return e;
    };
    let (field, reason) = r.message.split_once(": ").unwrap_or(("", &r.message));
    let flag = match field {
        "webhook_secrets" => "--webhook-secret-file",
        "webhook_auth.max_body_bytes" => "--max-body-bytes",
        f if f.starts_with("webhook_auth") => "--webhook-auth",
        _ => return anyhow::anyhow!("invalid integration: {}", r.message),
    };
    anyhow::anyhow!("invalid integration: {flag}: {reason}")
}

pub async fn webhook_secrets(api: &Api, out: Output, cmd: SecretsCmd) -> anyhow::Result<()> {
    let now = match cmd {
        SecretsCmd::List { integration } => {
            let id = api.integration_id(&integration).await?;
            api.get(&format!("/v1/integrations/{id}/webhook-secrets"), &[])
                .await?
        }
        SecretsCmd::Add { integration, file } => {
            let id = api.integration_id(&integration).await?;
            let body = match file {
                None => json!({}),
                Some(path) => match lines_of("--file", &path)?.as_slice() {
                    [one] => json!({"secret": one}),
                    _ => bail!("--file: give one secret (one line)"),
                },
            };
            api.post(&format!("/v1/integrations/{id}/webhook-secrets"), &body)
                .await
                .map_err(|e| match e.downcast_ref::<Refused>() {
                    Some(r) if r.message.starts_with("secret: ") => {
                        anyhow::anyhow!("--file: {}", &r.message["secret: ".len()..])
                    }
                    _ => e,
                })?
        }
        SecretsCmd::Remove {
            integration,
            fingerprint,
        } => {
            let id = api.integration_id(&integration).await?;
            api.delete(&format!(
                "/v1/integrations/{id}/webhook-secrets/{}",
                seg(&fingerprint)
            ))
            .await?
        }
    };
    if out == Output::Json {
        output::json(&now);
        return Ok(());
    }
    for f in now["fingerprints"].as_array().into_iter().flatten() {
        println!("{}", str_of(f));
    }
    print_generated(&now, "new ");
    Ok(())
}

/// A key, password or secret the request generated: shown once.
fn print_generated(v: &Value, prefix: &str) {
    let key = if v["webhook_auth"] == "query_key" {
        "webhook key (the sender calls back to …/v1/webhooks/<id>?key=<this key>)"
    } else {
        "webhook API key (send it as X-API-Key, or in the header the scheme names)"
    };
    for (field, what) in [
        ("webhook_api_key", key),
        ("webhook_password", "webhook basic-auth password"),
        (
            "webhook_secret",
            "webhook signing secret (give it to the sender)",
        ),
    ] {
        if let Some(value) = v[field].as_str() {
            println!("{prefix}{what}, shown once: {value}");
        }
    }
}

pub async fn integrations(api: &Api, out: Output, cmd: IntegrationsCmd) -> anyhow::Result<()> {
    let print = |v: &Value, keys: &[&str]| {
        if out == Output::Json {
            output::json(v)
        } else {
            output::fields(v, keys)
        }
    };
    match cmd {
        IntegrationsCmd::Create(a) => {
            let provider = a
                .connector
                .clone()
                .or(a.provider.clone())
                .context("give --provider or --connector")?;
            let mut settings = read_json("settings", &a.settings)?;
            for kv in &a.setting {
                let (k, v) = kv
                    .split_once('=')
                    .with_context(|| format!("--setting {kv}: write it KEY=VALUE"))?;
                let obj = settings
                    .as_object_mut()
                    .context("--settings must be a JSON object")?;
                obj.insert(k.trim().to_owned(), json!(v));
            }
            let mut body = json!({
                "tenant": a.tenant,
                "name": a.name,
                "provider": provider,
                "status": a.status,
                "direction": a.direction,
                "entities": a.entities,
                "settings": settings,
                "inbound": read_json("inbound", &a.inbound)?,
            });
            if let Some(s) = &a.schedule {
                body["schedule"] = read_json("schedule", s)?;
            }
            if let Some(path) = &a.credentials_file {
                body["credentials"] = json_file("credentials-file", path)?;
            }
            if let Some(path) = &a.webhook_secret_file {
                body["webhook_secrets"] = json!(lines_of("--webhook-secret-file", path)?);
            }
            if let Some(w) = webhook_auth_json(&a)? {
                body["webhook_auth"] = w;
            }
            let made = api
                .post("/v1/integrations", &body)
                .await
                .map_err(with_flags)?;
            if out == Output::Json {
                output::json(&made);
                return Ok(());
            }
            println!(
                "created integration {}/{} ({})",
                str_of(&made["tenant"]),
                str_of(&made["name"]),
                str_of(&made["id"])
            );
            if let Some(path) = made["webhook_path"].as_str() {
                println!("  webhook URL: {}{path}", api.base());
            }
            print_generated(&made, "  ");
        }
        IntegrationsCmd::List {
            tenant,
            provider,
            status,
        } => {
            let q: Vec<(&str, String)> = [
                ("tenant", tenant),
                ("provider", provider),
                ("status", status),
            ]
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k, v)))
            .collect();
            let list = api.get("/v1/integrations", &q).await?;
            if out == Output::Json {
                output::json(&list);
                return Ok(());
            }
            let rows = list["integrations"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|i| {
                    vec![
                        str_of(&i["id"]),
                        str_of(&i["tenant"]),
                        str_of(&i["name"]),
                        str_of(&i["provider"]),
                        str_of(&i["status"]),
                        str_of(&i["last_error"]),
                    ]
                });
            output::table(
                &["ID", "TENANT", "NAME", "PROVIDER", "STATUS", "LAST ERROR"],
                rows,
            );
        }
        IntegrationsCmd::WebhookSecrets(cmd) => webhook_secrets(api, out, cmd).await?,
        IntegrationsCmd::Update {
            integration,
            name,
            settings,
            inbound,
            entities,
            direction,
            credentials_file,
            schedule,
        } => {
            let id = api.integration_id(&integration).await?;
            let mut body = json!({});
            if let Some(n) = name {
                body["name"] = json!(n);
            }
            if let Some(d) = direction {
                body["direction"] = json!(d);
            }
            if let Some(e) = entities {
                body["entities"] = json!(e);
            }
            if let Some(s) = settings {
                body["settings"] = read_json("settings", &s)?;
            }
            if let Some(s) = inbound {
                body["inbound"] = read_json("inbound", &s)?;
            }
            if let Some(p) = credentials_file {
                body["credentials"] = json_file("credentials-file", &p)?;
            }
            if let Some(s) = schedule {
                body["schedule"] = read_json("schedule", &s)?;
            }
            let updated = api
                .patch(&format!("/v1/integrations/{id}"), &body)
                .await
                .map_err(|e| anyhow::anyhow!("invalid integration: {e}"))?;
            print(&updated, INTEGRATION_FIELDS);
        }
        IntegrationsCmd::Delete { integration } => {
            let i = api.integration(&integration).await?;
            api.delete(&format!("/v1/integrations/{}", str_of(&i["id"])))
                .await?;
            if out == Output::Json {
                output::json(&json!({"deleted": i["id"]}));
            } else {
                println!(
                    "deleted {}/{} (its jobs and mappings are kept)",
                    str_of(&i["tenant"]),
                    str_of(&i["name"])
                );
            }
        }
        IntegrationsCmd::Test { integration } => {
            let id = api.integration_id(&integration).await?;
            let r = api
                .post(&format!("/v1/integrations/{id}/test"), &json!({}))
                .await?;
            let ok = r["ok"].as_bool() == Some(true);
            if out == Output::Json {
                output::json(&r);
            } else {
                println!(
                    "test {}: {} (status now {})",
                    if ok { "ok" } else { "FAILED" },
                    str_of(&r["message"]),
                    str_of(&r["status"])
                );
            }
            if !ok {
                bail!("the connection test failed");
            }
        }
        IntegrationsCmd::Connect {
            integration,
            redirect_uri,
            no_wait,
        } => {
            let id = api.integration_id(&integration).await?;
            let body = match redirect_uri {
                Some(r) => json!({"redirect_uri": r}),
                None => json!({}),
            };
            let consent = api
                .post(&format!("/v1/integrations/{id}/oauth/authorize"), &body)
                .await?;
            println!(
                "Open this page and allow access (the link works once, for 10 minutes):\n\n  {}\n",
                str_of(&consent["authorize_url"])
            );
            if no_wait {
                return Ok(());
            }
            let flow = str_of(&consent["flow"]);
            let deadline = consent["expires_at"]
                .as_str()
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.with_timezone(&chrono::Utc))
                .unwrap_or_else(|| chrono::Utc::now() + chrono::Duration::minutes(10));
            let spinner = indicatif::ProgressBar::new_spinner()
                .with_message("waiting for the provider to send you back …");
            spinner.enable_steady_tick(std::time::Duration::from_millis(120));
            loop {
                let f = api
                    .get(&format!("/v1/integrations/{id}/oauth/flows/{flow}"), &[])
                    .await?;
                if let Some(outcome) = f["outcome"].as_str() {
                    spinner.finish_and_clear();
                    if outcome != "connected" {
                        bail!("not connected: {outcome}");
                    }
                    let now = api.get(&format!("/v1/integrations/{id}"), &[]).await?;
                    println!(
                        "connected: {}/{} is {}",
                        str_of(&now["tenant"]),
                        str_of(&now["name"]),
                        str_of(&now["status"])
                    );
                    break;
                }
                if chrono::Utc::now() > deadline {
                    spinner.finish_and_clear();
                    bail!(
                        "the consent link expired unused; run `switchyard integrations connect {integration}` again"
                    );
                }
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        }
        IntegrationsCmd::Activate { integration } => {
            let id = api.integration_id(&integration).await?;
            let v = api
                .post(&format!("/v1/integrations/{id}/activate"), &json!({}))
                .await?;
            if out == Output::Json {
                output::json(&v);
                return Ok(());
            }
            println!(
                "{}/{} is {}",
                str_of(&v["tenant"]),
                str_of(&v["name"]),
                str_of(&v["status"])
            );
            let released = v["released_jobs"].as_u64().unwrap_or(0);
            if released > 0 {
                println!("released {released} held job(s), in the order they arrived");
            }
            if let Some(e) = v["release_error"].as_str() {
                bail!(
                    "its held jobs are still held ({e}); the scheduler releases them, or run `switchyard integrations activate` again"
                );
            }
        }
        IntegrationsCmd::Deactivate { integration } => {
            let id = api.integration_id(&integration).await?;
            let v = api
                .post(&format!("/v1/integrations/{id}/deactivate"), &json!({}))
                .await?;
            if out == Output::Json {
                output::json(&v);
            } else {
                println!(
                    "{}/{} is {}",
                    str_of(&v["tenant"]),
                    str_of(&v["name"]),
                    str_of(&v["status"])
                );
            }
        }
        IntegrationsCmd::Operate {
            integration,
            operation,
            input,
            idempotency_key,
            timeout_secs,
        } => {
            let id = api.integration_id(&integration).await?;
            let body = read_json("--input", &input)?;
            let headers: Vec<(&str, &str)> = idempotency_key
                .as_deref()
                .map(|k| ("idempotency-key", k))
                .into_iter()
                .collect();
            let v = api
                .call_with(
                    reqwest::Method::POST,
                    &format!("/v1/integrations/{id}/operations/{operation}"),
                    &[("timeout_secs", timeout_secs.to_string())],
                    Some(&body),
                    &headers,
                )
                .await?;
            if out == Output::Json {
                output::json(&v);
            } else {
                output::fields(&v, CALL_FIELDS);
                if v["status"] == "pending" {
                    println!(
                        "pending: the provider reports the result later; follow it with `switchyard integrations operations {integration} --reference {}`",
                        str_of(&v["reference"])
                    );
                }
            }
            if v["status"] == "failed" {
                bail!("the operation failed: {}", str_of(&v["error"]));
            }
        }
        IntegrationsCmd::Operations {
            integration,
            status,
            reference,
        } => {
            let id = api.integration_id(&integration).await?;
            let mut query = Vec::new();
            if let Some(s) = status {
                query.push(("status", s));
            }
            if let Some(r) = reference {
                query.push(("reference", r));
            }
            let v = api
                .get(&format!("/v1/integrations/{id}/operations"), &query)
                .await?;
            if out == Output::Json {
                output::json(&v);
                return Ok(());
            }
            let rows = v["calls"].as_array().into_iter().flatten().map(|c| {
                vec![
                    str_of(&c["id"]),
                    short_time(&c["created_at"]),
                    str_of(&c["operation"]),
                    str_of(&c["status"]),
                    str_of(&c["reference"]),
                    match (&c["result_code"], &c["result_message"]) {
                        (Value::Null, _) => str_of(&c["error"]),
                        (code, msg) => format!("{}: {}", str_of(code), str_of(msg)),
                    },
                    str_of(&c["settled_by"]),
                ]
            });
            output::table(
                &[
                    "ID",
                    "AT",
                    "OPERATION",
                    "STATUS",
                    "REFERENCE",
                    "RESULT",
                    "SETTLED BY",
                ],
                rows,
            );
        }
        IntegrationsCmd::Stats { integration, hours } => {
            let id = api.integration_id(&integration).await?;
            let v = api
                .get(
                    &format!("/v1/integrations/{id}/stats"),
                    &[("hours", hours.clamp(1, 24 * 90).to_string())],
                )
                .await?;
            if out == Output::Json {
                output::json(&v);
            } else {
                println!("the last {} hour(s):", str_of(&v["window_hours"]));
                let keys: Vec<String> = v["stats"]
                    .as_object()
                    .map(|o| o.keys().cloned().collect())
                    .unwrap_or_default();
                let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
                output::fields(&v["stats"], &keys);
            }
        }
        IntegrationsCmd::Show { integration } => {
            let i = api.integration(&integration).await?;
            // By id, the answer carries the routes; by name, ask again by id.
            let i = if i.get("routes").is_some() {
                i
            } else {
                api.get(&format!("/v1/integrations/{}", str_of(&i["id"])), &[])
                    .await?
            };
            if out == Output::Json {
                output::json(&i);
                return Ok(());
            }
            output::fields(&i, INTEGRATION_FIELDS);
            print_routes(&i["routes"]);
        }
        IntegrationsCmd::Events { integration } => {
            let id = api.integration_id(&integration).await?;
            let v = api
                .get(&format!("/v1/integrations/{id}/events"), &[])
                .await?;
            if out == Output::Json {
                output::json(&v);
                return Ok(());
            }
            let rows = v["events"].as_array().into_iter().flatten().map(|e| {
                vec![
                    short_time(&e["created_at"]),
                    str_of(&e["kind"]),
                    str_of(&e["message"]),
                ]
            });
            output::table(&["AT", "EVENT", "MESSAGE"], rows);
        }
    }
    Ok(())
}

/// What `integrations operate` prints of a call, in this order.
const CALL_FIELDS: &[&str] = &[
    "id",
    "operation",
    "status",
    "reference",
    "result_code",
    "result_message",
    "error",
    "settled_by",
    "idempotency_key",
    "answer",
];

/// What `integrations show` lists, in this order.
const INTEGRATION_FIELDS: &[&str] = &[
    "id",
    "tenant",
    "name",
    "provider",
    "status",
    "direction",
    "entities",
    "webhook_auth",
    "webhook_path",
    "has_credentials",
    "schedule",
    "next_sync_at",
    "last_sync_at",
    "sync_failures",
    "last_error",
    "settings",
    "inbound",
    "created_at",
    "updated_at",
];

fn print_routes(routes: &Value) {
    let rows = routes.as_array().into_iter().flatten().map(|r| {
        let targets: Vec<String> = r["targets"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|t| format!("{} ({})", str_of(&t["name"]), str_of(&t["status"])))
            .collect();
        let filter = match &r["filter"] {
            Value::Object(o) if o.is_empty() => "-".to_owned(),
            f => f.to_string(),
        };
        let mut options = vec![
            format!("conflicts: {}", str_of(&r["conflict"])),
            format!("inactive target: {}", str_of(&r["when_inactive"])),
        ];
        if r["link_existing"] == json!(true) {
            options.push("links existing records".into());
        }
        if matches!(&r["values"], Value::Object(o) if !o.is_empty()) {
            options.push(format!("values: {}", r["values"]));
        }
        vec![
            str_of(&r["id"]),
            format!("{}.{}", str_of(&r["entity"]), str_of(&r["event"])),
            targets.join(", "),
            filter,
            options.join("; "),
        ]
    });
    output::table(&["ROUTE", "EVENTS", "TO", "FILTER", "OPTIONS"], rows);
}

fn run_row(r: &Value) -> Vec<String> {
    let n = |k: &str| str_of(&r[k]);
    vec![
        n("id"),
        n("status"),
        n("trigger"),
        n("pages"),
        n("total"),
        n("processed"),
        n("created"),
        n("updated"),
        n("failed"),
        n("skipped"),
        n("error"),
    ]
}

const RUN_COLUMNS: &[&str] = &[
    "RUN",
    "STATUS",
    "TRIGGER",
    "PAGES",
    "JOBS",
    "PROCESSED",
    "CREATED",
    "UPDATED",
    "FAILED",
    "SKIPPED",
    "ERROR",
];

pub async fn sync(api: &Api, out: Output, cmd: SyncCmd) -> anyhow::Result<()> {
    match cmd {
        SyncCmd::Start {
            integration,
            entities,
            full,
            wait,
        } => {
            let i = api.integration(&integration).await?;
            let mut body = json!({"full": full});
            if let Some(e) = entities {
                body["entities"] = json!(e);
            }
            let run = api
                .post(
                    &format!("/v1/integrations/{}/sync", str_of(&i["id"])),
                    &body,
                )
                .await?;
            let id = str_of(&run["id"]);
            if !wait {
                if out == Output::Json {
                    output::json(&run);
                } else {
                    println!(
                        "sync run {id} started for {}/{} ({} direction, entities: {}); watch it with `switchyard sync show {id}`",
                        str_of(&i["tenant"]),
                        str_of(&i["name"]),
                        str_of(&run["direction"]),
                        run["entities"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .map(str_of)
                            .collect::<Vec<_>>()
                            .join(", "),
                    );
                }
                return Ok(());
            }
            if out == Output::Table {
                println!(
                    "sync run {id} started for {}/{}",
                    str_of(&i["tenant"]),
                    str_of(&i["name"])
                );
            }
            let bar = indicatif::ProgressBar::new(0).with_style(
                indicatif::ProgressStyle::with_template(
                    "{spinner} {msg} [{bar:30}] {pos}/{len} jobs",
                )
                .expect("a valid template")
                .progress_chars("=> "),
            );
            if out == Output::Json || !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
                bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
            }
            let last = loop {
                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                let r = api.get(&format!("/v1/sync-runs/{id}"), &[]).await?;
                bar.set_length(r["total"].as_u64().unwrap_or(0));
                bar.set_position(r["processed"].as_u64().unwrap_or(0));
                bar.set_message(format!(
                    "{}, page {}",
                    str_of(&r["status"]),
                    str_of(&r["pages"])
                ));
                bar.tick();
                if !matches!(r["status"].as_str(), Some("pending" | "running")) {
                    break r;
                }
            };
            bar.finish_and_clear();
            if out == Output::Json {
                output::json(&last);
            } else {
                output::table(RUN_COLUMNS, [run_row(&last)]);
            }
            let status = str_of(&last["status"]);
            if status != "succeeded" {
                bail!("sync run {id} ended {status}");
            }
        }
        SyncCmd::Runs { integration, limit } => {
            let id = api.integration_id(&integration).await?;
            let runs = api
                .get(
                    &format!("/v1/integrations/{id}/sync-runs"),
                    &[("limit", limit.to_string())],
                )
                .await?;
            if out == Output::Json {
                output::json(&runs);
            } else {
                output::table(
                    RUN_COLUMNS,
                    runs["sync_runs"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .map(run_row),
                );
            }
        }
        SyncCmd::Show { run } => {
            let r = api.get(&format!("/v1/sync-runs/{run}"), &[]).await?;
            if out == Output::Json {
                output::json(&r);
            } else {
                output::fields(
                    &r,
                    &[
                        "id",
                        "integration_id",
                        "status",
                        "trigger",
                        "started_by",
                        "direction",
                        "entities",
                        "pages",
                        "total",
                        "processed",
                        "created",
                        "updated",
                        "failed",
                        "skipped",
                        "error",
                        "created_at",
                        "finished_at",
                    ],
                );
            }
        }
        SyncCmd::Cancel { run } => {
            let r = api
                .post(&format!("/v1/sync-runs/{run}/cancel"), &json!({}))
                .await?;
            if out == Output::Json {
                output::json(&r);
            } else {
                println!(
                    "sync run {} cancelled: {} of {} jobs skipped, the rest finished or finishing",
                    str_of(&r["id"]),
                    str_of(&r["skipped"]),
                    str_of(&r["total"])
                );
            }
        }
    }
    Ok(())
}

pub async fn routes(api: &Api, out: Output, cmd: RoutesCmd) -> anyhow::Result<()> {
    match cmd {
        RoutesCmd::Add {
            from,
            entity,
            event,
            targets,
            options,
        } => {
            let source = api.integration_id(&from).await.context("--from")?;
            let mut ids = Vec::new();
            for t in &targets {
                ids.push(
                    api.integration_id(t)
                        .await
                        .with_context(|| format!("--to {t}"))?,
                );
            }
            let filter = match &options.filter {
                Some(f) => read_json("filter", f)?,
                None => json!({}),
            };
            let body = json!({
                "source": source,
                "entity": entity,
                "event": event,
                "targets": ids,
                "filter": filter,
                "conflict": options.conflict,
                "when_inactive": options.when_inactive,
                "link_existing": options.link_existing,
                "values": route_values(&options.values)?,
            });
            let route = api
                .post("/v1/routes", &body)
                .await
                .map_err(|e| anyhow::anyhow!("invalid route: {e}"))?;
            for w in route["warnings"].as_array().into_iter().flatten() {
                eprintln!("warning: {}", str_of(w));
            }
            if out == Output::Json {
                output::json(&route);
            } else {
                println!(
                    "route {}: {from} {entity}.{event} → {}",
                    str_of(&route["id"]),
                    targets.join(", ")
                );
            }
        }
        RoutesCmd::List { integration } => {
            let source = api.integration_id(&integration).await?;
            let routes = api.get("/v1/routes", &[("source", source)]).await?;
            if out == Output::Json {
                output::json(&routes);
            } else {
                print_routes(&routes["routes"]);
            }
        }
        RoutesCmd::Remove {
            from,
            entity,
            event,
            target,
        } => {
            let source = api.integration_id(&from).await.context("--from")?;
            let routes = api.get("/v1/routes", &[("source", source)]).await?;
            let route = routes["routes"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|r| r["entity"] == json!(entity) && r["event"] == json!(event))
                .with_context(|| format!("no route from {from} for {entity}.{event}"))?;
            let route_id = str_of(&route["id"]);
            match target {
                None => {
                    api.delete(&format!("/v1/routes/{route_id}")).await?;
                    println!("removed route {route_id}: {entity}.{event}");
                }
                Some(t) => {
                    let target = api
                        .integration_id(&t)
                        .await
                        .with_context(|| format!("--to {t}"))?;
                    let r = api
                        .delete(&format!("/v1/routes/{route_id}/targets/{target}"))
                        .await?;
                    println!(
                        "removed {t} from route {route_id}{}",
                        if r["route_removed"] == json!(true) {
                            " (its last target: the route is gone too)"
                        } else {
                            ""
                        }
                    );
                }
            }
        }
    }
    Ok(())
}

fn print_job(v: &Value) {
    output::fields(
        &v["job"],
        &[
            "id",
            "tenant",
            "integration_id",
            "entity",
            "action",
            "internal_id",
            "external_id",
            "status",
            "attempts",
            "last_error",
            "received_at",
            "updated_at",
        ],
    );
    let rows = v["attempts"].as_array().into_iter().flatten().map(|a| {
        vec![
            str_of(&a["attempt"]),
            short_time(&a["started_at"]),
            str_of(&a["outcome"]),
            str_of(&a["http_status"]),
            str_of(&a["duration_ms"]),
            str_of(&a["error"]),
        ]
    });
    output::table(&["TRY", "AT", "OUTCOME", "HTTP", "MS", "ERROR"], rows);
}

pub async fn jobs(api: &Api, out: Output, cmd: JobsCmd) -> anyhow::Result<()> {
    match cmd {
        JobsCmd::Show { id } => {
            let v = api.get(&format!("/v1/jobs/{id}"), &[]).await?;
            if out == Output::Json {
                output::json(&v);
            } else {
                print_job(&v);
            }
        }
        JobsCmd::List {
            integration,
            status,
            entity,
            limit,
        } => {
            let mut q = vec![("limit", limit.to_string())];
            if let Some(i) = integration {
                q.push(("integration_id", api.integration_id(&i).await?));
            }
            if let Some(s) = status {
                q.push(("status", s));
            }
            if let Some(e) = entity {
                q.push(("entity", e));
            }
            let page = api.get("/v1/jobs", &q).await?;
            if out == Output::Json {
                output::json(&page);
                return Ok(());
            }
            let rows = page["jobs"].as_array().into_iter().flatten().map(|j| {
                vec![
                    str_of(&j["id"]),
                    str_of(&j["status"]),
                    str_of(&j["entity"]),
                    str_of(&j["internal_id"]),
                    str_of(&j["attempts"]),
                    str_of(&j["external_id"]),
                    str_of(&j["last_error"]),
                ]
            });
            output::table(
                &[
                    "JOB",
                    "STATUS",
                    "ENTITY",
                    "INTERNAL ID",
                    "TRY",
                    "EXTERNAL ID",
                    "ERROR",
                ],
                rows,
            );
        }
    }
    Ok(())
}

pub async fn records(api: &Api, out: Output, cmd: RecordsCmd) -> anyhow::Result<()> {
    let RecordsCmd::Show {
        integration,
        entity,
        id,
        to,
    } = cmd;
    let source = api.integration(&integration).await.context("--in")?;
    let record = api
        .get(
            "/v1/records",
            &[
                ("integration", str_of(&source["id"])),
                ("entity", entity.clone()),
                ("id", id.clone()),
            ],
        )
        .await?;
    match to {
        Some(t) => {
            let target = api.integration_id(&t).await.context("--to")?;
            match record["links"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|l| l["integration_id"] == json!(target))
            {
                Some(l) => println!("{}", str_of(&l["external_id"])),
                None => bail!("{integration}'s {entity} `{id}` has not reached {t}"),
            }
        }
        None if out == Output::Json => output::json(&record),
        None => {
            output::fields(&record, &["id", "tenant", "entity", "created_at"]);
            let rows = record["links"].as_array().into_iter().flatten().map(|l| {
                vec![
                    str_of(&l["integration_name"]),
                    str_of(&l["integration_id"]),
                    str_of(&l["external_id"]),
                    str_of(&l["last_source_version"]),
                    short_time(&l["last_synced_at"]),
                ]
            });
            output::table(
                &["IN", "INTEGRATION", "ITS ID", "VERSION", "LAST SYNCED"],
                rows,
            );
        }
    }
    Ok(())
}

pub async fn connectors(api: &Api, out: Output, cmd: ConnectorsCmd) -> anyhow::Result<()> {
    match cmd {
        ConnectorsCmd::List => {
            let v = api.get("/v1/connectors", &[]).await?;
            if out == Output::Json {
                output::json(&v);
                return Ok(());
            }
            let rows = v["connectors"].as_array().into_iter().flatten().map(|p| {
                vec![
                    str_of(&p["name"]),
                    if p["is_target"] == json!(true) {
                        "target".into()
                    } else {
                        "source".into()
                    },
                    str_of(&p["description"]),
                ]
            });
            output::table(&["NAME", "KIND", "DESCRIPTION"], rows);
        }
        ConnectorsCmd::Show { name } => {
            let v = api
                .get(&format!("/v1/connectors/{}", seg(&name)), &[])
                .await
                .map_err(|e| match e.downcast_ref::<Refused>() {
                    Some(r) if r.status == 404 => anyhow::anyhow!(
                        "no provider `{name}`; `switchyard connectors list` lists them"
                    ),
                    _ => e,
                })?;
            output::json(&v);
        }
    }
    Ok(())
}

pub async fn conflicts(api: &Api, out: Output, cmd: ConflictsCmd) -> anyhow::Result<()> {
    let ConflictsCmd::List {
        integration,
        tenant,
        limit,
    } = cmd;
    let mut q = vec![("limit", limit.to_string())];
    if let Some(i) = integration {
        q.push(("integration", api.integration_id(&i).await?));
    }
    if let Some(t) = tenant {
        q.push(("tenant", t));
    }
    let v = api.get("/v1/conflicts", &q).await?;
    if out == Output::Json {
        output::json(&v);
        return Ok(());
    }
    let rows = v["conflicts"].as_array().into_iter().flatten().map(|c| {
        vec![
            short_time(&c["created_at"]),
            str_of(&c["entity"]),
            str_of(&c["record_id"]),
            str_of(&c["policy"]),
            str_of(&c["winner_integration"]),
            str_of(&c["loser_integration"]),
            str_of(&c["message"]),
        ]
    });
    output::table(
        &["AT", "ENTITY", "RECORD", "POLICY", "WINNER", "LOSER", "WHY"],
        rows,
    );
    Ok(())
}

fn mapping_rows(v: &Value) -> impl Iterator<Item = Vec<String>> + '_ {
    v["mappings"].as_array().into_iter().flatten().map(|m| {
        vec![
            str_of(&m["entity"]),
            str_of(&m["internal_id"]),
            str_of(&m["external_id"]),
            str_of(&m["last_source_version"]),
            short_time(&m["last_synced_at"]),
        ]
    })
}

const MAPPING_COLUMNS: &[&str] = &[
    "ENTITY",
    "INTERNAL ID",
    "EXTERNAL ID",
    "VERSION",
    "LAST SYNCED",
];

pub async fn mappings(api: &Api, out: Output, cmd: MappingsCmd) -> anyhow::Result<()> {
    match cmd {
        MappingsCmd::Show {
            integration,
            entity,
            internal_id,
            external_id,
        } => {
            let id = api.integration_id(&integration).await?;
            let mut q = vec![("entity", entity)];
            match (internal_id, external_id) {
                (Some(i), _) => q.push(("internal_id", i)),
                (None, Some(e)) => q.push(("external_id", e)),
                (None, None) => unreachable!("clap requires one"),
            }
            let v = api
                .get(&format!("/v1/integrations/{id}/mappings"), &q)
                .await?;
            if v["mappings"].as_array().is_none_or(Vec::is_empty) {
                bail!("no such mapping");
            }
            if out == Output::Json {
                output::json(&v["mappings"][0]);
            } else {
                output::table(MAPPING_COLUMNS, mapping_rows(&v));
            }
        }
        MappingsCmd::Delete {
            integration,
            entity,
            internal_id,
        } => {
            let id = api.integration_id(&integration).await?;
            api.delete(&format!(
                "/v1/integrations/{id}/mappings/{}/{}",
                seg(&entity),
                seg(&internal_id)
            ))
            .await?;
            println!("forgot {entity} `{internal_id}` at {integration}");
        }
        MappingsCmd::List {
            integration,
            entity,
            limit,
        } => {
            let id = api.integration_id(&integration).await?;
            let mut q = vec![("limit", limit.to_string())];
            if let Some(e) = entity {
                q.push(("entity", e));
            }
            let v = api
                .get(&format!("/v1/integrations/{id}/mappings"), &q)
                .await?;
            if out == Output::Json {
                output::json(&v);
            } else {
                output::table(MAPPING_COLUMNS, mapping_rows(&v));
            }
        }
    }
    Ok(())
}

/// The dead-letter filter, as the API takes it.
async fn dlq_filter(api: &Api, a: DlqFilterArgs) -> anyhow::Result<Value> {
    let time = |what: &str, v: Option<String>| -> anyhow::Result<Option<String>> {
        v.map(|t| {
            chrono::DateTime::parse_from_rfc3339(&t)
                .map(|t| t.to_rfc3339())
                .with_context(|| format!("--{what}: `{t}` is not an RFC 3339 time"))
        })
        .transpose()
    };
    let integration = match a.integration {
        Some(r) => Some(api.integration_id(&r).await.context("--integration")?),
        None => None,
    };
    let mut f = serde_json::Map::new();
    for (k, v) in [
        ("provider", a.provider),
        ("tenant", a.tenant),
        ("integration_id", integration),
        ("entity", a.entity),
        ("reason", a.reason),
        ("job_id", a.job.map(|j| j.to_string())),
        ("since", time("since", a.since)?),
        ("until", time("until", a.until)?),
    ] {
        if let Some(v) = v {
            f.insert(k.to_owned(), json!(v));
        }
    }
    Ok(Value::Object(f))
}

/// Who runs a bootstrap command, for the audit log: `cli:` and the user.
pub fn actor() -> String {
    format!(
        "cli:{}",
        std::env::var("USER").unwrap_or_else(|_| "unknown".into())
    )
}

pub async fn dlq(api: &Api, out: Output, cmd: DlqCmd) -> anyhow::Result<()> {
    match cmd {
        DlqCmd::List { filter, limit } => {
            let f = dlq_filter(api, filter).await?;
            let mut q: Vec<(&str, String)> = f
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, v)| (k.as_str(), str_of(v)))
                .collect();
            q.push(("limit", limit.to_string()));
            let v = api.get("/v1/dlq", &q).await?;
            if out == Output::Json {
                output::json(&v);
                return Ok(());
            }
            let rows = v["dead_letters"].as_array().into_iter().flatten().map(|d| {
                vec![
                    str_of(&d["job_id"]),
                    str_of(&d["provider"]),
                    str_of(&d["entity"]),
                    str_of(&d["internal_id"]),
                    str_of(&d["reason"]),
                    short_time(&d["dead_at"]),
                    str_of(&d["error"]),
                ]
            });
            output::table(
                &[
                    "JOB",
                    "PROVIDER",
                    "ENTITY",
                    "INTERNAL ID",
                    "REASON",
                    "DEAD AT",
                    "ERROR",
                ],
                rows,
            );
        }
        DlqCmd::Show { job } => {
            let letters = api.get("/v1/dlq", &[("job_id", job.to_string())]).await?;
            let row = api.get(&format!("/v1/jobs/{job}"), &[]).await?;
            let letter = letters["dead_letters"][0].clone();
            if out == Output::Json {
                output::json(&json!({
                    "dead_letter": letter,
                    "job": row["job"],
                    "attempts": row["attempts"],
                }));
            } else {
                if letter.is_null() {
                    println!("no dead letter for job {job}");
                } else {
                    output::fields(
                        &letter,
                        &[
                            "reason",
                            "error_class",
                            "error",
                            "attempts",
                            "dead_at",
                            "replays",
                        ],
                    );
                }
                print_job(&row);
            }
        }
        DlqCmd::Replay {
            filter,
            dry_run,
            limit,
            rate,
        } => {
            let body = json!({
                "filter": dlq_filter(api, filter).await?,
                "dry_run": dry_run,
                "limit": limit,
                "rate": rate,
            });
            let r = api.post("/v1/dlq/replay", &body).await?;
            follow(api, out, r).await?;
        }
        DlqCmd::Purge {
            filter,
            dry_run,
            limit,
            yes,
        } => {
            if !dry_run && !yes {
                bail!(
                    "purging deletes dead letters for good: add --yes (or look first with --dry-run)"
                );
            }
            let body = json!({
                "filter": dlq_filter(api, filter).await?,
                "dry_run": dry_run,
                "limit": limit,
            });
            let r = api.post("/v1/dlq/purge", &body).await?;
            follow(api, out, r).await?;
        }
    }
    Ok(())
}

/// A replay or purge: a dry run's report at once; a real one runs on the server as an
/// operation, followed here with a progress bar until it ends.
async fn follow(api: &Api, out: Output, answer: Value) -> anyhow::Result<()> {
    if answer.get("action").is_some() {
        return report(out, &answer);
    }
    let id = str_of(&answer["id"]);
    let bar = indicatif::ProgressBar::new_spinner().with_style(
        indicatif::ProgressStyle::with_template("{spinner} {msg}").expect("a valid template"),
    );
    if out == Output::Json || !std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    bar.enable_steady_tick(std::time::Duration::from_millis(120));
    let op = loop {
        let op = api.get(&format!("/v1/operations/{id}"), &[]).await?;
        bar.set_message(format!(
            "{} {id}: {} of {} matched so far done",
            str_of(&op["kind"]),
            str_of(&op["done"]),
            str_of(&op["matched"])
        ));
        if op["status"] != "running" {
            break op;
        }
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    };
    bar.finish_and_clear();
    match &op["result"] {
        Value::Null => {
            if out == Output::Json {
                output::json(&op);
            }
            bail!(
                "{} {id} {}: {}",
                str_of(&op["kind"]),
                str_of(&op["status"]),
                str_of(&op["error"])
            )
        }
        result => report(out, result),
    }
}

/// A replay's or purge's report; an error when some matched letters did not move.
fn report(out: Output, r: &Value) -> anyhow::Result<()> {
    let verb = if r["action"] == "replay" {
        "replayed"
    } else {
        "purged"
    };
    let matched = r["matched"].as_u64().unwrap_or(0);
    let moved = r["moved"].as_u64().unwrap_or(0);
    let dry_run = r["dry_run"] == json!(true);
    if out == Output::Json {
        output::json(r);
    } else if dry_run {
        println!("dry run: {matched} dead letter(s) match; nothing was {verb}");
    } else {
        println!("{moved} of {matched} matching dead letter(s) {verb}");
        for id in r["job_ids"].as_array().into_iter().flatten() {
            println!("  {}", str_of(id));
        }
        for f in r["failed"].as_array().into_iter().flatten() {
            println!("  not {verb}: {}", str_of(f));
        }
    }
    if !dry_run && moved < matched {
        bail!(
            "{} of {matched} dead letter(s) were not {verb}; run it again to retry them",
            matched - moved
        );
    }
    Ok(())
}

#[derive(Debug, Subcommand)]
pub enum MessagesCmd {
    /// Send an integration's events as messages over channels, tried in order: the next
    /// when one fails for good or reports no delivery in time.
    RouteAdd {
        /// The integration whose events are sent (id, tenant/name or name).
        #[arg(long)]
        from: String,
        #[arg(long)]
        entity: String,
        /// The event name to match, or `*` for every event of the entity.
        #[arg(long, default_value = "*")]
        event: String,
        /// A channel, in order: INTEGRATION:OPERATION or INTEGRATION:OPERATION:INPUT, INPUT
        /// being a field map over the event's data as JSON, e.g.
        /// 'sms:send:{"to": "/guardian/phone", "text": "/text"}'. Repeat for each channel.
        #[arg(long = "channel", required = true)]
        channels: Vec<String>,
    },
    /// The channel routes.
    Routes,
    /// Remove a channel route (and its messages).
    RouteRemove { id: String },
    /// Messages, newest first.
    List {
        #[arg(long, value_parser = ["sending", "delivered", "failed"])]
        status: Option<String>,
        /// One channel route's.
        #[arg(long)]
        route: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
    },
    /// One message, with each channel's outcome.
    Show { id: String },
}

/// `INTEGRATION:OPERATION[:INPUT]` as the API's channel.
async fn channel_arg(api: &Api, arg: &str) -> anyhow::Result<Value> {
    let (integration, rest) = arg
        .split_once(':')
        .with_context(|| format!("--channel {arg}: write it INTEGRATION:OPERATION[:INPUT]"))?;
    let (operation, input) = match rest.split_once(':') {
        Some((op, input)) => (op, read_json("channel", input)?),
        None => (rest, json!({})),
    };
    Ok(json!({
        "integration_id": api.integration_id(integration).await?,
        "operation": operation,
        "input": input,
    }))
}

pub async fn messages(api: &Api, out: Output, cmd: MessagesCmd) -> anyhow::Result<()> {
    match cmd {
        MessagesCmd::RouteAdd {
            from,
            entity,
            event,
            channels,
        } => {
            let mut list = Vec::with_capacity(channels.len());
            for c in &channels {
                list.push(channel_arg(api, c).await?);
            }
            let body = json!({"source": api.integration_id(&from).await?, "entity": entity,
                              "event": event, "channels": list});
            let v = api.post("/v1/channel-routes", &body).await?;
            if out == Output::Json {
                output::json(&v);
            } else {
                println!("channel route {} added", str_of(&v["id"]));
            }
        }
        MessagesCmd::Routes => {
            let v = api.get("/v1/channel-routes", &[]).await?;
            if out == Output::Json {
                output::json(&v);
                return Ok(());
            }
            let rows = v["routes"].as_array().into_iter().flatten().map(|r| {
                let channels: Vec<String> = r["channels"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|c| {
                        format!(
                            "{}:{}",
                            str_of(&c["integration_id"]),
                            str_of(&c["operation"])
                        )
                    })
                    .collect();
                vec![
                    str_of(&r["id"]),
                    str_of(&r["tenant"]),
                    str_of(&r["source_integration_id"]),
                    format!("{}.{}", str_of(&r["entity"]), str_of(&r["event"])),
                    channels.join(" → "),
                ]
            });
            output::table(&["ID", "TENANT", "FROM", "EVENT", "CHANNELS"], rows);
        }
        MessagesCmd::RouteRemove { id } => {
            api.delete(&format!("/v1/channel-routes/{id}")).await?;
            if out != Output::Json {
                println!("channel route {id} removed");
            }
        }
        MessagesCmd::List {
            status,
            route,
            limit,
        } => {
            let mut q = vec![("limit", limit.to_string())];
            if let Some(s) = status {
                q.push(("status", s));
            }
            if let Some(r) = route {
                q.push(("route", r));
            }
            let v = api.get("/v1/messages", &q).await?;
            if out == Output::Json {
                output::json(&v);
                return Ok(());
            }
            let rows = v["messages"].as_array().into_iter().flatten().map(|m| {
                vec![
                    str_of(&m["id"]),
                    short_time(&m["created_at"]),
                    str_of(&m["event_id"]),
                    str_of(&m["status"]),
                    str_of(&m["channel"]),
                    m["outcomes"].as_array().map_or(0, Vec::len).to_string(),
                ]
            });
            output::table(&["ID", "AT", "EVENT", "STATUS", "CHANNEL", "TRIED"], rows);
        }
        MessagesCmd::Show { id } => {
            let m = api.get(&format!("/v1/messages/{id}"), &[]).await?;
            if out == Output::Json {
                output::json(&m);
                return Ok(());
            }
            output::fields(
                &m,
                &[
                    "id",
                    "route_id",
                    "event_id",
                    "status",
                    "channel",
                    "created_at",
                    "finished_at",
                ],
            );
            let rows = m["outcomes"].as_array().into_iter().flatten().map(|o| {
                vec![
                    str_of(&o["channel"]),
                    str_of(&o["integration_id"]),
                    str_of(&o["operation"]),
                    str_of(&o["status"]),
                    str_of(&o["error"]),
                    str_of(&o["call_id"]),
                ]
            });
            output::table(
                &[
                    "CHANNEL",
                    "INTEGRATION",
                    "OPERATION",
                    "STATUS",
                    "ERROR",
                    "CALL",
                ],
                rows,
            );
        }
    }
    Ok(())
}
