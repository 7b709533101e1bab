//! `switchyard`: the integration hub's one binary.
#![forbid(unsafe_code)]

mod admin;
mod client;
mod config;
mod output;
mod serve;
mod tls;

use clap::{Parser, Subcommand};
use std::path::PathBuf;

/// mimalloc rather than glibc's malloc: under load, glibc's allocator (its free-list
/// consolidation above all) took about a tenth of the machine's CPU in `just bench`'s
/// profile, most of it in ingest and the worker (issue 15).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Switchyard carries webhooks and sync requests to the systems that must hear of them,
/// exactly once in effect, with every outcome and every id mapping on record.
#[derive(Debug, Parser)]
#[command(name = "switchyard", version, propagate_version = true)]
struct Cli {
    /// A TOML configuration file; `SWITCHYARD_*` environment variables override it.
    #[arg(long, global = true, env = "SWITCHYARD_CONFIG")]
    config: Option<PathBuf>,
    #[command(flatten)]
    remote: client::Remote,
    /// How operator commands print: tables for people, or the API's JSON for scripts.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value_t,
        env = "SWITCHYARD_OUTPUT"
    )]
    output: output::Output,
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
    /// Events sent as messages over channels with fallback (WhatsApp, then SMS): channel
    /// routes, and the messages with each channel's outcome.
    #[command(subcommand)]
    Messages(admin::MessagesCmd),
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
    /// Vault keys (on the database: run where Switchyard runs).
    #[command(subcommand)]
    Keys(admin::KeysCmd),
    /// Print a shell completion script: `switchyard completions bash >
    /// /etc/bash_completion.d/switchyard`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
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
    match cli.command {
        Command::Keys(admin::KeysCmd::Generate { id }) => {
            admin::keys_generate(&id);
            return Ok(());
        }
        Command::Openapi => {
            println!("{}", switchyard_ingest::openapi_json());
            return Ok(());
        }
        Command::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "switchyard",
                &mut std::io::stdout(),
            );
            return Ok(());
        }
        _ => {}
    }
    let out = cli.output;
    // Operator commands: clients of the management API.
    let remote = || client::Api::new(&cli.remote);
    match cli.command {
        Command::Audit(args) => return admin::audit(&remote()?, out, args).await,
        Command::Integrations(cmd) => return admin::integrations(&remote()?, out, cmd).await,
        Command::Routes(cmd) => return admin::routes(&remote()?, out, cmd).await,
        Command::Jobs(cmd) => return admin::jobs(&remote()?, out, cmd).await,
        Command::Mappings(cmd) => return admin::mappings(&remote()?, out, cmd).await,
        Command::Records(cmd) => return admin::records(&remote()?, out, cmd).await,
        Command::Conflicts(cmd) => return admin::conflicts(&remote()?, out, cmd).await,
        Command::Messages(cmd) => return admin::messages(&remote()?, out, cmd).await,
        Command::Connectors(cmd) => return admin::connectors(&remote()?, out, cmd).await,
        Command::Sync(cmd) => return admin::sync(&remote()?, out, cmd).await,
        Command::Dlq(cmd) => return admin::dlq(&remote()?, out, cmd).await,
        Command::ApiKeys(cmd) => return admin::api_keys(&remote()?, out, cmd).await,
        _ => {}
    }
    // Services and bootstrap commands: the configuration, the database.
    let cfg = config::Config::load(cli.config.as_deref())?;
    // Where providers may be called (validated by `load`).
    switchyard_providers::egress::configure(cfg.egress.policy().map_err(|e| anyhow::anyhow!(e))?);
    match cli.command {
        Command::Ingest => serve::run(cfg, serve::Services::Ingest).await,
        Command::Worker => serve::run(cfg, serve::Services::Worker).await,
        Command::Scheduler => serve::run(cfg, serve::Services::Scheduler).await,
        Command::All => serve::run(cfg, serve::Services::All).await,
        Command::Migrate => serve::migrate(&cfg).await,
        // Its changes are the operator's in the audit log.
        Command::Keys(admin::KeysCmd::Rotate) => {
            switchyard_store::ACTOR
                .scope(admin::actor(), admin::keys_rotate(&cfg))
                .await
        }
        _ => unreachable!("every other command is answered above"),
    }
}
