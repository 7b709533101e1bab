//! Operator commands: integrations, routes, jobs, mappings, keys.
use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use secrecy::ExposeSecret;
use serde_json::{Value, json};
use std::io::Read;
use switchyard_core::{Direction, IntegrationStatus, JobStatus};
use switchyard_store::{Integration, JobFilter, Store};
use uuid::Uuid;

use crate::config::Config;
use crate::serve::open_store;

#[derive(Debug, Subcommand)]
pub enum IntegrationsCmd {
    /// Create an integration. Prints its webhook URL and, once, its webhook API key.
    Create(Box<CreateArgs>),
    /// List integrations.
    List {
        #[arg(long)]
        tenant: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Show one integration (by id, or as tenant/name) as JSON. Credentials are never shown.
    Show {
        integration: String,
    },
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
        #[arg(long)]
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
    Events {
        integration: String,
    },
    /// Soft-delete: it stops sending and receiving; its jobs and mappings stay for audit.
    Delete {
        integration: String,
    },
    /// Call the provider with its settings and credentials: success moves `inactive` to
    /// `testing`; failure moves it to `error` with the message (an active one stays active).
    Test {
        integration: String,
    },
    /// Connect an OAuth2 integration: prints the consent URL, then waits (up to ten minutes)
    /// until the provider sends the user back to Switchyard's callback (`switchyard all` or
    /// `ingest` must be running and reachable at SWITCHYARD_PUBLIC_URL).
    Connect {
        integration: String,
        /// Where the provider sends the user back (default: SWITCHYARD_PUBLIC_URL, else
        /// http://<listen>, + /v1/oauth/callback).
        #[arg(long)]
        redirect_uri: Option<String>,
        /// Print the URL and return without waiting.
        #[arg(long)]
        no_wait: bool,
    },
    Activate {
        integration: String,
    },
    Deactivate {
        integration: String,
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
    /// Only these senders (CIDR, repeatable) may send webhooks.
    #[arg(long = "allow-ip")]
    allow_ips: Vec<String>,
    /// Largest webhook body accepted for this integration.
    #[arg(long)]
    max_body_bytes: Option<usize>,
    /// `inactive` until tested and activated (as the management API does), or `active`.
    #[arg(long, default_value = "inactive")]
    status: String,
    #[arg(long, default_value = "export")]
    direction: String,
    /// Comma-separated entities this integration syncs (orders, products, …).
    #[arg(long, value_delimiter = ',')]
    entities: Vec<String>,
    /// When it syncs on its own, e.g. '{"every": "hourly"}' or '{"every": "cron", "cron":
    /// "0 */6 * * *", "timezone": "Europe/Paris"}' (inline JSON or @FILE).
    #[arg(long)]
    schedule: Option<String>,
    #[arg(long)]
    json: bool,
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
        /// Wait for the run to end, printing its progress.
        #[arg(long)]
        wait: bool,
    },
    /// An integration's sync runs, newest first.
    Runs {
        integration: String,
        #[arg(long, default_value_t = 20)]
        limit: i64,
    },
    /// One sync run, with its counts, as JSON.
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
    /// Show a job with its attempts, as JSON.
    Show { id: Uuid },
    /// List jobs, newest first.
    List {
        /// Target integration (id or tenant/name).
        #[arg(long)]
        integration: Option<String>,
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        entity: Option<String>,
        #[arg(long, default_value_t = 50)]
        limit: i64,
        #[arg(long)]
        json: bool,
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
        #[arg(long)]
        json: bool,
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
    /// exhausted, rejected, auth or malformed.
    #[arg(long)]
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
    /// List dead letters, oldest first.
    List {
        #[command(flatten)]
        filter: DlqFilterArgs,
        #[arg(long, default_value_t = 100)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
    /// Show one dead job: its dead letter, its row and every attempt.
    Show { job: Uuid },
    /// Put dead letters back to work with fresh attempts (their history is kept).
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
    #[arg(long)]
    json: bool,
}

/// `switchyard audit`: the newest changes first.
pub async fn audit(cfg: &Config, a: AuditArgs) -> anyhow::Result<()> {
    let store = open_store(cfg).await?;
    let entries = store
        .audit(
            &switchyard_store::AuditFilter {
                tenant: a.tenant,
                actor: a.actor,
                action: a.action,
                object: a.object,
                since: a.since,
                ..Default::default()
            },
            a.limit,
        )
        .await?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&entries)?);
        return Ok(());
    }
    println!(
        "{:<20} {:<18} {:<10} {:<22} {:<36} CHANGED",
        "AT", "ACTOR", "TENANT", "ACTION", "OBJECT"
    );
    for e in &entries {
        let fields: Vec<&str> = e
            .changes
            .as_object()
            .map(|o| o.keys().map(String::as_str).collect())
            .unwrap_or_default();
        println!(
            "{:<20} {:<18} {:<10} {:<22} {:<36} {}",
            e.at.format("%Y-%m-%d %H:%M:%S"),
            e.actor,
            e.tenant.as_deref().unwrap_or("-"),
            e.action,
            e.object_id,
            fields.join(", ")
        );
    }
    Ok(())
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

pub async fn api_keys(cfg: &Config, cmd: ApiKeysCmd) -> anyhow::Result<()> {
    let store = open_store(cfg).await?;
    match cmd {
        ApiKeysCmd::Create { tenant, name } => {
            let key = switchyard_ops::api_keys::create(&store, &tenant, &name)
                .await?
                .plaintext;
            println!("API key `{name}` of tenant `{tenant}`, shown once: {key}");
            println!("use it as: Authorization: Bearer {key}");
        }
        ApiKeysCmd::List { tenant } => {
            for k in store.list_api_keys(tenant.as_deref()).await? {
                let state = match k.revoked_at {
                    Some(t) => format!("revoked {}", t.format("%Y-%m-%d %H:%M")),
                    None => "active".into(),
                };
                println!("{:<16} {:<20} {}", k.tenant, k.name, state);
            }
        }
        ApiKeysCmd::Revoke { tenant, name } => {
            store.revoke_api_key(&tenant, &name).await?;
            println!("revoked API key `{name}` of tenant `{tenant}`");
        }
    }
    Ok(())
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

async fn resolve(store: &Store, reference: &str) -> anyhow::Result<Integration> {
    if let Ok(id) = reference.parse::<Uuid>() {
        return Ok(store.integration(id).await?);
    }
    let (tenant, name) = reference.split_once('/').unwrap_or(("default", reference));
    Ok(store.integration_by_name(tenant, name).await?)
}

/// The id of an integration named by an optional option.
async fn resolve_id(store: &Store, reference: Option<&str>) -> anyhow::Result<Option<Uuid>> {
    Ok(match reference {
        Some(r) => Some(resolve(store, r).await?.id),
        None => None,
    })
}

pub async fn webhook_secrets(cfg: &Config, store: &Store, cmd: SecretsCmd) -> anyhow::Result<()> {
    use switchyard_ops::integrations::{self as ops, SecretChange};
    let keyring = cfg.keyring()?;
    let (reference, change) = match cmd {
        SecretsCmd::List { integration } => (integration, None),
        SecretsCmd::Add { integration, file } => {
            let secrets = match file {
                None => Vec::new(),
                Some(path) => std::fs::read_to_string(&path)
                    .with_context(|| format!("--file: cannot read {path}"))?
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(str::to_owned)
                    .collect(),
            };
            (integration, Some(SecretChange::Add { secrets }))
        }
        SecretsCmd::Remove {
            integration,
            fingerprint,
        } => (integration, Some(SecretChange::Remove { fingerprint })),
    };
    let i = resolve(store, &reference).await?;
    let now = match change {
        None => ops::webhook_secrets(&keyring, &i)?,
        Some(change) => ops::change_webhook_secrets(store, &keyring, &i, change)
            .await
            .map_err(|e| match e {
                ops::SecretsError::Invalid(f) if f.field == "secret" => {
                    anyhow::anyhow!("--file: {}", f.reason)
                }
                e => e.into(),
            })?,
    };
    for f in &now.fingerprints {
        println!("{f}");
    }
    if let Some(g) = &now.generated {
        println!("new {}, shown once: {}", g.describe(), g.value());
    }
    Ok(())
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
    if !a.allow_ips.is_empty() {
        v["allowed_cidrs"] = json!(a.allow_ips);
    }
    if let Some(n) = a.max_body_bytes {
        v["max_body_bytes"] = json!(n);
    }
    Ok(Some(v))
}

/// A field error, named by the flag that sets it.
fn cli_field(e: &switchyard_ops::integrations::FieldError) -> String {
    let flag = match e.field.as_str() {
        "webhook_secrets" => "--webhook-secret-file",
        "webhook_auth.max_body_bytes" => "--max-body-bytes",
        f if f.starts_with("webhook_auth") => "--webhook-auth",
        _ => return e.to_string(),
    };
    format!("{flag}: {}", e.reason)
}

/// How an integration's webhooks authenticate (the HTTP API's `webhook_auth.scheme`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
#[value(rename_all = "snake_case")]
pub enum Scheme {
    /// An `X-API-Key` header; a key is generated and shown once.
    ApiKey,
    /// HTTP Basic (user from --basic-user); a password is generated and shown once.
    Basic,
    /// Standard Webhooks signatures; without --webhook-secret-file a `whsec_` secret is
    /// generated and shown once.
    StandardWebhooks,
    Stripe,
    Shopify,
    Woocommerce,
    Github,
    /// A generic HMAC signature (settings in --webhook-hmac).
    Hmac,
    /// Anyone may send (only with --allow-ip).
    None,
    /// It receives no webhooks.
    Disabled,
}

pub async fn integrations(cfg: &Config, cmd: IntegrationsCmd) -> anyhow::Result<()> {
    let store = open_store(cfg).await?;
    match cmd {
        IntegrationsCmd::Create(a) => {
            let status: IntegrationStatus = a.status.parse().context("--status")?;
            let direction: Direction = a.direction.parse().context("--direction")?;
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
            let inbound = read_json("inbound", &a.inbound)?;
            let schedule = a
                .schedule
                .as_deref()
                .map(|s| read_json("schedule", s))
                .transpose()?;
            let credentials = match &a.credentials_file {
                None => None,
                Some(path) => Some(read_json(
                    "credentials-file",
                    &format!("{}{path}", if path == "-" { "" } else { "@" }),
                )?),
            };
            let webhook_secrets: Vec<String> = match &a.webhook_secret_file {
                Some(path) => std::fs::read_to_string(path)
                    .with_context(|| format!("--webhook-secret-file: cannot read {path}"))?
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(str::to_owned)
                    .collect(),
                None => Vec::new(),
            };
            let webhook_auth = webhook_auth_json(&a)?;
            let created = switchyard_ops::integrations::create(
                &store,
                &cfg.keyring()?,
                switchyard_ops::integrations::CreateRequest {
                    tenant: a.tenant,
                    name: a.name,
                    provider,
                    status: Some(status),
                    direction: Some(direction),
                    entities: a.entities,
                    settings,
                    inbound,
                    credentials,
                    webhook_auth,
                    webhook_secrets,
                    schedule,
                    by_tenant: false,
                },
            )
            .await
            .map_err(|e| match e {
                switchyard_ops::integrations::CreateError::Invalid(e) => {
                    anyhow::anyhow!("invalid integration: {}", cli_field(&e))
                }
                e => e.into(),
            })?;
            let i = &created.integration;
            if a.json {
                let v = switchyard_ops::integrations::view(i)
                    .with_generated(created.generated.as_ref());
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!("created integration {}/{} ({})", i.tenant, i.name, i.id);
                if i.webhook_auth.get("scheme").and_then(Value::as_str) != Some("disabled") {
                    println!("  webhook URL: http://{}/v1/webhooks/{}", cfg.listen, i.id);
                }
                if let Some(g) = &created.generated {
                    println!("  {}, shown once: {}", g.describe(), g.value());
                }
            }
        }
        IntegrationsCmd::List { tenant, json } => {
            let list = store.list_integrations(tenant.as_deref()).await?;
            if json {
                let v: Vec<_> = list
                    .iter()
                    .map(switchyard_ops::integrations::view)
                    .collect();
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                println!(
                    "{:<36}  {:<12} {:<20} {:<8} {:<8}",
                    "ID", "TENANT", "NAME", "PROVIDER", "STATUS"
                );
                for i in list {
                    println!(
                        "{:<36}  {:<12} {:<20} {:<8} {:<8}",
                        i.id, i.tenant, i.name, i.provider, i.status
                    );
                }
            }
        }
        IntegrationsCmd::WebhookSecrets(cmd) => webhook_secrets(cfg, &store, cmd).await?,
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
            let i = resolve(&store, &integration).await?;
            let credentials = credentials_file
                .map(|p| {
                    read_json(
                        "credentials-file",
                        &format!("{}{p}", if p == "-" { "" } else { "@" }),
                    )
                })
                .transpose()?;
            let request = switchyard_ops::integrations::UpdateRequest {
                name,
                direction: direction
                    .map(|d| d.parse())
                    .transpose()
                    .context("--direction")?,
                entities,
                settings: settings.map(|s| read_json("settings", &s)).transpose()?,
                inbound: inbound.map(|s| read_json("inbound", &s)).transpose()?,
                credentials,
                schedule: schedule.map(|s| read_json("schedule", &s)).transpose()?,
            };
            let updated =
                switchyard_ops::integrations::update(&store, &cfg.keyring()?, &i, request)
                    .await
                    .map_err(|e| match e {
                        switchyard_ops::integrations::CreateError::Invalid(e) => {
                            anyhow::anyhow!("invalid integration: {e}")
                        }
                        e => e.into(),
                    })?;
            println!(
                "{}",
                serde_json::to_string_pretty(&switchyard_ops::integrations::view(&updated))?
            );
        }
        IntegrationsCmd::Delete { integration } => {
            let i = resolve(&store, &integration).await?;
            store.delete_integration(i.id).await?;
            println!(
                "deleted {}/{} (its jobs and mappings are kept)",
                i.tenant, i.name
            );
        }
        IntegrationsCmd::Test { integration } => {
            let i = resolve(&store, &integration).await?;
            let out = switchyard_ops::integrations::test_connection(
                &store,
                std::sync::Arc::new(cfg.keyring()?),
                switchyard_providers::http_client(),
                &i,
            )
            .await?;
            let verdict = if out.ok { "ok" } else { "FAILED" };
            println!(
                "test {verdict}: {} (status now {})",
                out.message, out.status
            );
            if !out.ok {
                bail!("the connection test failed");
            }
        }
        IntegrationsCmd::Connect {
            integration,
            redirect_uri,
            no_wait,
        } => {
            let i = resolve(&store, &integration).await?;
            let redirect = redirect_uri.unwrap_or_else(|| cfg.oauth_redirect_uri());
            let consent = switchyard_ops::oauth::begin(&store, &cfg.keyring()?, &i, &redirect)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            println!(
                "Open this page and allow access (the link works once, for 10 minutes):\n\n  {}\n",
                consent.authorize_url
            );
            if no_wait {
                return Ok(());
            }
            println!("waiting for the provider to send you back to {redirect} …");
            let deadline = consent.expires_at;
            loop {
                if let Some(outcome) = switchyard_ops::oauth::outcome(&store, &consent.flow).await?
                {
                    if outcome == "connected" {
                        let now = store.integration(i.id).await?;
                        println!("connected: {}/{} is {}", now.tenant, now.name, now.status);
                        break;
                    }
                    bail!("not connected: {outcome}");
                }
                if chrono::Utc::now() > deadline {
                    bail!(
                        "the consent link expired unused; run `switchyard integrations connect {}` again",
                        i.name
                    );
                }
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        }
        IntegrationsCmd::Activate { integration } => {
            let i = resolve(&store, &integration).await?;
            store
                .set_status(i.id, IntegrationStatus::Active, None)
                .await?;
            println!("{}/{} is active", i.tenant, i.name);
            let held = store.count_held(i.id).await?;
            if held > 0 {
                let broker = connect_broker(cfg).await?;
                let released = switchyard_ops::held::release(&store, &broker, i.id).await;
                broker.shutdown().await;
                match released {
                    Ok(n) => println!("released {n} held job(s), in the order they arrived"),
                    Err(e) => bail!(
                        "{held} job(s) are still held ({e}); the scheduler releases them, or run `switchyard integrations activate` again"
                    ),
                }
            }
        }
        IntegrationsCmd::Deactivate { integration } => {
            let i = resolve(&store, &integration).await?;
            store
                .set_status(i.id, IntegrationStatus::Inactive, None)
                .await?;
            println!("{}/{} is inactive", i.tenant, i.name);
        }
        IntegrationsCmd::Stats { integration, hours } => {
            let i = resolve(&store, &integration).await?;
            let since = chrono::Utc::now() - chrono::Duration::hours(hours.clamp(1, 24 * 90));
            let s = store.stats(i.id, since).await?;
            println!(
                "{}",
                serde_json::to_string_pretty(
                    &json!({"integration": i.name, "window_hours": hours, "stats": s})
                )?
            );
        }
        IntegrationsCmd::Show { integration } => {
            let i = resolve(&store, &integration).await?;
            let mut v = serde_json::to_value(switchyard_ops::integrations::view(&i))?;
            v["routes"] = serde_json::to_value(store.routes(i.id).await?)?;
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        IntegrationsCmd::Events { integration } => {
            let i = resolve(&store, &integration).await?;
            let events = store.integration_events(i.id, 100).await?;
            if events.is_empty() {
                println!("no events for {}/{}", i.tenant, i.name);
            }
            for e in events {
                println!(
                    "{}  {:<14} {}",
                    e.created_at.format("%Y-%m-%d %H:%M:%S"),
                    e.kind,
                    e.message
                );
            }
        }
    }
    Ok(())
}

fn print_run(run: &switchyard_store::SyncRun) {
    println!(
        "{}  {:<9} {:<8} pages {:>3}  jobs {:>5}  processed {:>5}  created {:>5}  updated {:>5}  failed {:>4}  skipped {:>4}{}",
        run.id,
        run.status,
        run.trigger,
        run.pages,
        run.total,
        run.processed,
        run.created,
        run.updated,
        run.failed,
        run.skipped,
        run.error
            .as_deref()
            .map(|e| format!("\n    error: {e}"))
            .unwrap_or_default()
    );
}

pub async fn sync(cfg: &Config, cmd: SyncCmd) -> anyhow::Result<()> {
    let store = open_store(cfg).await?;
    match cmd {
        SyncCmd::Start {
            integration,
            entities,
            full,
            wait,
        } => {
            let i = resolve(&store, &integration).await?;
            let broker = connect_broker(cfg).await?;
            let req = switchyard_ops::sync::SyncRequest {
                trigger: "manual",
                slot: None,
                started_by: actor(),
                entities,
                full,
                now: chrono::Utc::now(),
            };
            let started = switchyard_ops::sync::start(&store, &broker, &i, req).await;
            broker.shutdown().await;
            let run = match started {
                Ok(Some(run)) => run,
                Ok(None) => bail!("this sync has already been started"),
                Err(e) => bail!("{e}"),
            };
            println!(
                "sync run {} started for {}/{} ({} direction, entities: {}); watch it with `switchyard sync show {}`",
                run.id,
                i.tenant,
                i.name,
                run.direction,
                run.entities.join(", "),
                run.id
            );
            if wait {
                loop {
                    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                    let r = store.sync_run(run.id).await?;
                    print_run(&r);
                    if !matches!(r.status.as_str(), "pending" | "running") {
                        break;
                    }
                }
            }
        }
        SyncCmd::Runs { integration, limit } => {
            let i = resolve(&store, &integration).await?;
            let runs = store.sync_runs(i.id, limit).await?;
            if runs.is_empty() {
                println!("no sync runs for {}/{} yet", i.tenant, i.name);
            }
            for r in &runs {
                print_run(r);
            }
        }
        SyncCmd::Show { run } => {
            let r = store.sync_run(run).await?;
            println!("{}", serde_json::to_string_pretty(&r)?);
        }
        SyncCmd::Cancel { run } => {
            let r = store.cancel_run(run, &actor()).await?;
            println!(
                "sync run {} cancelled: {} of {} jobs skipped, the rest finished or finishing",
                r.id, r.skipped, r.total
            );
        }
    }
    Ok(())
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

pub async fn routes(cfg: &Config, cmd: RoutesCmd) -> anyhow::Result<()> {
    let store = open_store(cfg).await?;
    match cmd {
        RoutesCmd::Add {
            from,
            entity,
            event,
            targets,
            options,
        } => {
            let source = resolve(&store, &from).await.context("--from")?;
            let mut resolved = Vec::new();
            for t in &targets {
                resolved.push(
                    resolve(&store, t)
                        .await
                        .with_context(|| format!("--to {t}"))?,
                );
            }
            let filter = match &options.filter {
                Some(f) => read_json("filter", f)?,
                None => json!({}),
            };
            let request = switchyard_ops::routes::RouteRequest {
                source: &source,
                entity: &entity,
                event: &event,
                targets: &resolved,
                filter: &filter,
                options: switchyard_core::RouteOptions {
                    conflict: options.conflict,
                    when_inactive: options.when_inactive,
                    link_existing: options.link_existing,
                    values: route_values(&options.values)?,
                },
            };
            let (route, warnings) = switchyard_ops::routes::add_checked(&store, &request)
                .await
                .map_err(|e| anyhow::anyhow!("invalid route: {e}"))?;
            for w in &warnings {
                eprintln!("warning: {w}");
            }
            println!(
                "route {route}: {}/{} {entity}.{event} → {}",
                source.tenant,
                source.name,
                targets.join(", ")
            );
        }
        RoutesCmd::List { integration } => {
            let source = resolve(&store, &integration).await?;
            let routes = store.routes(source.id).await?;
            if routes.is_empty() {
                println!("no routes from {}/{}", source.tenant, source.name);
            }
            for r in routes {
                let names: Vec<String> = r
                    .targets
                    .iter()
                    .map(|t| format!("{} ({})", t.name, t.status))
                    .collect();
                println!("{}  {}.{} → {}", r.id, r.entity, r.event, names.join(", "));
                let filter = if r.filter == json!({}) {
                    "none".to_owned()
                } else {
                    r.filter.to_string()
                };
                println!(
                    "    filter: {filter}; conflicts: {}; while a target is inactive: {}{}",
                    r.conflict,
                    r.when_inactive,
                    if r.link_existing {
                        "; links existing records"
                    } else {
                        ""
                    }
                );
                if r.values != json!({}) {
                    println!("    values: {}", r.values);
                }
            }
        }
        RoutesCmd::Remove {
            from,
            entity,
            event,
            target,
        } => {
            let source = resolve(&store, &from).await.context("--from")?;
            let route = store
                .routes(source.id)
                .await?
                .into_iter()
                .find(|r| r.entity == entity && r.event == event)
                .with_context(|| {
                    format!(
                        "no route from {}/{} for {entity}.{event}",
                        source.tenant, source.name
                    )
                })?;
            match target {
                None => {
                    store.remove_route(route.id).await?;
                    println!("removed route {}: {entity}.{event}", route.id);
                }
                Some(t) => {
                    let target = resolve(&store, &t)
                        .await
                        .with_context(|| format!("--to {t}"))?;
                    let gone = store.remove_route_target(route.id, target.id).await?;
                    println!(
                        "removed {} from route {}{}",
                        target.name,
                        route.id,
                        if gone {
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

pub async fn jobs(cfg: &Config, cmd: JobsCmd) -> anyhow::Result<()> {
    let store = open_store(cfg).await?;
    match cmd {
        JobsCmd::Show { id } => {
            let job = store.job(id).await?;
            let attempts = store.job_attempts(id).await?;
            let v = json!({"job": job, "attempts": attempts});
            println!("{}", serde_json::to_string_pretty(&v)?);
        }
        JobsCmd::List {
            integration,
            status,
            entity,
            limit,
            json,
        } => {
            let integration_id = resolve_id(&store, integration.as_deref()).await?;
            let status = match status {
                Some(s) => Some(s.parse::<JobStatus>().context("--status")?),
                None => None,
            };
            let rows = store
                .list_jobs(&JobFilter {
                    integration_id,
                    status,
                    entity,
                    limit,
                })
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                println!(
                    "{:<36}  {:<9} {:<8} {:<14} {:>3} {:<20} ERROR",
                    "JOB", "STATUS", "ENTITY", "INTERNAL ID", "TRY", "EXTERNAL ID"
                );
                for j in rows {
                    println!(
                        "{:<36}  {:<9} {:<8} {:<20} {:>3} {:<20} {}",
                        j.id,
                        j.status,
                        j.entity,
                        j.internal_id,
                        j.attempts,
                        j.external_id.unwrap_or_default(),
                        j.last_error.unwrap_or_default()
                    );
                }
            }
        }
    }
    Ok(())
}

pub async fn records(cfg: &Config, cmd: RecordsCmd) -> anyhow::Result<()> {
    let store = open_store(cfg).await?;
    match cmd {
        RecordsCmd::Show {
            integration,
            entity,
            id,
            to,
        } => {
            let i = resolve(&store, &integration).await.context("--in")?;
            let Some(record) = store
                .find_record(Some(&i.tenant), i.id, &entity, &id)
                .await?
            else {
                bail!(
                    "{}/{} has no {entity} `{id}` that Switchyard knows of",
                    i.tenant,
                    i.name
                );
            };
            match to {
                Some(t) => {
                    let target = resolve(&store, &t).await.context("--to")?;
                    match record.links.iter().find(|l| l.integration_id == target.id) {
                        Some(l) => println!("{}", l.external_id),
                        None => bail!(
                            "{}/{}'s {entity} `{id}` has not reached {}/{}",
                            i.tenant,
                            i.name,
                            target.tenant,
                            target.name
                        ),
                    }
                }
                None => println!("{}", serde_json::to_string_pretty(&record)?),
            }
        }
    }
    Ok(())
}

pub fn connectors(cmd: ConnectorsCmd) -> anyhow::Result<()> {
    match cmd {
        ConnectorsCmd::List => {
            for p in switchyard_providers::providers() {
                println!(
                    "{:<18} {:<7} {}",
                    p.name,
                    if p.is_target { "target" } else { "source" },
                    p.description
                );
            }
        }
        ConnectorsCmd::Show { name } => {
            let k = switchyard_providers::kind(&name).map_err(|_| {
                anyhow::anyhow!("no provider `{name}`; `switchyard connectors list` lists them")
            })?;
            println!("{}", serde_json::to_string_pretty(&k.describe())?);
        }
    }
    Ok(())
}

pub async fn conflicts(cfg: &Config, cmd: ConflictsCmd) -> anyhow::Result<()> {
    let store = open_store(cfg).await?;
    match cmd {
        ConflictsCmd::List {
            integration,
            tenant,
            limit,
        } => {
            let integration = resolve_id(&store, integration.as_deref()).await?;
            let rows = store
                .conflicts(tenant.as_deref(), integration, limit)
                .await?;
            if rows.is_empty() {
                println!("no conflicts");
            }
            for c in rows {
                println!(
                    "{}  {} record {}  {}  winner {} loser {}\n    {}",
                    c.created_at.format("%Y-%m-%d %H:%M:%S"),
                    c.entity,
                    c.record_id,
                    c.policy,
                    c.winner_integration,
                    c.loser_integration,
                    c.message
                );
            }
        }
    }
    Ok(())
}

pub async fn mappings(cfg: &Config, cmd: MappingsCmd) -> anyhow::Result<()> {
    let store = open_store(cfg).await?;
    match cmd {
        MappingsCmd::Show {
            integration,
            entity,
            internal_id,
            external_id,
        } => {
            let i = resolve(&store, &integration).await?;
            let m = match (internal_id, external_id) {
                (Some(internal), _) => store.mapping(i.id, &entity, &internal).await?,
                (None, Some(external)) => {
                    store.mapping_by_external(i.id, &entity, &external).await?
                }
                (None, None) => unreachable!("clap requires one"),
            };
            match m {
                Some(m) => println!("{}", serde_json::to_string_pretty(&m)?),
                None => bail!("no such mapping"),
            }
        }
        MappingsCmd::Delete {
            integration,
            entity,
            internal_id,
        } => {
            let i = resolve(&store, &integration).await?;
            store.delete_mapping(i.id, &entity, &internal_id).await?;
            println!("forgot {entity} `{internal_id}` at {}/{}", i.tenant, i.name);
        }
        MappingsCmd::List {
            integration,
            entity,
            limit,
            json,
        } => {
            let i = resolve(&store, &integration).await?;
            let rows = store.list_mappings(i.id, entity.as_deref(), limit).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                println!(
                    "{:<10} {:<20} {:<36} {:>8}  LAST SYNCED",
                    "ENTITY", "INTERNAL ID", "EXTERNAL ID", "VERSION"
                );
                for m in rows {
                    println!(
                        "{:<10} {:<20} {:<36} {:>8}  {}",
                        m.entity,
                        m.internal_id,
                        m.external_id,
                        m.last_source_version
                            .map(|v| v.to_string())
                            .unwrap_or_else(|| "-".into()),
                        m.last_synced_at.format("%Y-%m-%d %H:%M:%S")
                    );
                }
            }
        }
    }
    Ok(())
}

async fn dlq_filter(
    store: &Store,
    a: DlqFilterArgs,
) -> anyhow::Result<switchyard_ops::dlq::Filter> {
    let time =
        |what: &str, v: Option<String>| -> anyhow::Result<Option<chrono::DateTime<chrono::Utc>>> {
            v.map(|t| {
                chrono::DateTime::parse_from_rfc3339(&t)
                    .map(|t| t.with_timezone(&chrono::Utc))
                    .with_context(|| format!("--{what}: `{t}` is not an RFC 3339 time"))
            })
            .transpose()
        };
    Ok(switchyard_ops::dlq::Filter {
        provider: a.provider,
        tenant: a.tenant,
        integration_id: match a.integration {
            Some(r) => Some(resolve(store, &r).await.context("--integration")?.id),
            None => None,
        },
        entity: a.entity,
        reason: a
            .reason
            .map(|r| r.parse())
            .transpose()
            .context("--reason")?,
        job_id: a.job,
        since: time("since", a.since)?,
        until: time("until", a.until)?,
    })
}

async fn connect_broker(cfg: &Config) -> anyhow::Result<switchyard_broker::Broker> {
    let broker = switchyard_broker::Broker::start(cfg.broker_config("cli"));
    if !broker
        .wait_connected(std::time::Duration::from_secs(10))
        .await
    {
        broker.shutdown().await;
        bail!(
            "cannot reach RabbitMQ at {} (is it running? `just services` starts it)",
            crate::serve::redact(&cfg.amqp_url)
        );
    }
    Ok(broker)
}

/// Who runs this command, for the audit log and dead-letter actions: `cli:` and the user.
pub fn actor() -> String {
    format!(
        "cli:{}",
        std::env::var("USER").unwrap_or_else(|_| "unknown".into())
    )
}

pub async fn dlq(cfg: &Config, cmd: DlqCmd) -> anyhow::Result<()> {
    use switchyard_ops::dlq;
    let store = open_store(cfg).await?;
    let broker = connect_broker(cfg).await?;
    let result = async {
        match cmd {
            DlqCmd::List { filter, limit, json } => {
                let f = dlq_filter(&store, filter).await?;
                let rows = dlq::list(&store, &f, limit).await?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&rows)?);
                } else {
                    println!("{:<36}  {:<9} {:<8} {:<20} {:<10} {:<20} ERROR", "JOB", "PROVIDER", "ENTITY", "INTERNAL ID", "REASON", "DEAD AT");
                    for d in &rows {
                        println!(
                            "{:<36}  {:<9} {:<8} {:<20} {:<10} {:<20} {}",
                            d.job_id.map(|j| j.to_string()).unwrap_or_else(|| "?".into()),
                            d.provider,
                            d.entity.clone().unwrap_or_default(),
                            d.internal_id.clone().unwrap_or_default(),
                            d.reason.clone().unwrap_or_default(),
                            d.dead_at.map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string()).unwrap_or_default(),
                            d.error.clone().unwrap_or_default()
                        );
                    }
                    println!("{} dead letter(s)", rows.len());
                }
            }
            DlqCmd::Show { job } => {
                let f = dlq::Filter { job_id: Some(job), ..Default::default() };
                let letters = dlq::list(&store, &f, 1).await?;
                let row = store.job(job).await?;
                let attempts = store.job_attempts(job).await?;
                println!("{}", serde_json::to_string_pretty(&json!({
                    "dead_letter": letters.first(),
                    "job": row,
                    "attempts": attempts,
                }))?);
            }
            DlqCmd::Replay { filter, dry_run, limit, rate } => {
                let f = dlq_filter(&store, filter).await?;
                let o = dlq::Options { dry_run, limit, rate, actor: actor() };
                let r = dlq::replay(&broker, &store, &f, &o).await?;
                print_report(&r);
            }
            DlqCmd::Purge { filter, dry_run, limit, yes } => {
                if !dry_run && !yes {
                    bail!("purging deletes dead letters for good: add --yes (or look first with --dry-run)");
                }
                let f = dlq_filter(&store, filter).await?;
                let o = dlq::Options { dry_run, limit, rate: None, actor: actor() };
                let r = dlq::purge(&store, &f, &o).await?;
                print_report(&r);
            }
        }
        Ok::<_, anyhow::Error>(())
    }
    .await;
    broker.shutdown().await;
    result
}

fn print_report(r: &switchyard_ops::dlq::Report) {
    let verb = if r.action == "replay" {
        "replayed"
    } else {
        "purged"
    };
    if r.dry_run {
        println!(
            "dry run: {} dead letter(s) match; nothing was {verb}",
            r.matched
        );
    } else {
        println!(
            "{} of {} matching dead letter(s) {verb}",
            r.moved, r.matched
        );
    }
    for id in &r.job_ids {
        println!("  {id}");
    }
    for f in &r.failed {
        println!("  not {verb}: {f}");
    }
}
