//! `switchyard`: the integration hub's one binary.
#![forbid(unsafe_code)]

mod admin;
mod config;
mod serve;
mod tls;

use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// Switchyard carries webhooks and sync requests to the systems that must hear of them,
/// exactly once in effect, with every outcome and every id mapping on record.
#[derive(Debug, Parser)]
#[command(name = "switchyard", version, propagate_version = true)]
struct Cli {
    /// A TOML configuration file; `SWITCHYARD_*` environment variables override it.
    #[arg(long, global = true, env = "SWITCHYARD_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the HTTP ingest service (webhooks, job lookups, health).
    Ingest,
    /// Run a worker: consume provider queues and call providers.
    Worker,
    /// Run the scheduler: enqueue scheduled syncs (one leader among any number of these).
    Scheduler,
    /// Run ingest, a worker and the scheduler in one process (for a laptop or a small install).
    All,
    /// Apply pending database migrations.
    Migrate,
    /// Print the HTTP API's description (OpenAPI 3.1, as served at `/openapi.json`).
    Openapi,
    /// Create, list and inspect integrations.
    #[command(subcommand)]
    Integrations(admin::IntegrationsCmd),
    /// Add and list routes: which events go to which targets.
    #[command(subcommand)]
    Routes(admin::RoutesCmd),
    /// Inspect jobs.
    #[command(subcommand)]
    Jobs(admin::JobsCmd),
    /// Start, watch and cancel batch syncs.
    #[command(subcommand)]
    Sync(admin::SyncCmd),
    /// Inspect internal ↔ external id mappings (at one target, by the record's origin id).
    #[command(subcommand)]
    Mappings(admin::MappingsCmd),
    /// Look a record up by any system's id for it: its id in every system it reached.
    #[command(subcommand)]
    Records(admin::RecordsCmd),
    /// Conflicts between systems' changes to one record (two-way sync).
    #[command(subcommand)]
    Conflicts(admin::ConflictsCmd),
    /// The kinds of provider Switchyard can connect to, and what their settings are.
    #[command(subcommand)]
    Connectors(admin::ConnectorsCmd),
    /// Inspect, replay and purge dead letters.
    #[command(subcommand)]
    Dlq(admin::DlqCmd),
    /// Tenants' API keys for the management API.
    #[command(subcommand)]
    ApiKeys(admin::ApiKeysCmd),
    /// Who changed what, and when: integrations, credentials, secrets, routes, API keys,
    /// dead-letter actions (never a secret's value).
    Audit(admin::AuditArgs),
    /// Vault keys.
    #[command(subcommand)]
    Keys(admin::KeysCmd),
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    if let Command::Keys(admin::KeysCmd::Generate { id }) = &cli.command {
        admin::keys_generate(id);
        return Ok(());
    }
    if let Command::Openapi = &cli.command {
        println!("{}", switchyard_ingest::openapi_json());
        return Ok(());
    }
    let cfg = config::Config::load(cli.config.as_deref())?;
    // Where providers may be called (validated by `load`).
    switchyard_providers::egress::configure(cfg.egress.policy().map_err(|e| anyhow::anyhow!(e))?);
    let command = match cli.command {
        Command::Ingest => return serve::run(cfg, serve::Services::Ingest).await,
        Command::Worker => return serve::run(cfg, serve::Services::Worker).await,
        Command::Scheduler => return serve::run(cfg, serve::Services::Scheduler).await,
        Command::All => return serve::run(cfg, serve::Services::All).await,
        Command::Migrate => return serve::migrate(&cfg).await,
        other => other,
    };
    // An operator's command: its changes are the operator's in the audit log.
    switchyard_store::ACTOR
        .scope(admin::actor(), admin_command(&cfg, command))
        .await
}

async fn admin_command(cfg: &config::Config, command: Command) -> anyhow::Result<()> {
    match command {
        Command::Ingest
        | Command::Worker
        | Command::Scheduler
        | Command::All
        | Command::Migrate
        | Command::Openapi => unreachable!("services are run above"),
        Command::Audit(args) => admin::audit(cfg, args).await,
        Command::Integrations(cmd) => admin::integrations(cfg, cmd).await,
        Command::Routes(cmd) => admin::routes(cfg, cmd).await,
        Command::Jobs(cmd) => admin::jobs(cfg, cmd).await,
        Command::Mappings(cmd) => admin::mappings(cfg, cmd).await,
        Command::Records(cmd) => admin::records(cfg, cmd).await,
        Command::Conflicts(cmd) => admin::conflicts(cfg, cmd).await,
        Command::Connectors(cmd) => admin::connectors(cmd),
        Command::Sync(cmd) => admin::sync(cfg, cmd).await,
        Command::Dlq(cmd) => admin::dlq(cfg, cmd).await,
        Command::ApiKeys(cmd) => admin::api_keys(cfg, cmd).await,
        Command::Keys(admin::KeysCmd::Rotate) => admin::keys_rotate(cfg).await,
        Command::Keys(admin::KeysCmd::Generate { .. }) => unreachable!("handled above"),
    }
}
