//! Running the services.
use anyhow::Context;
use std::sync::Arc;
use std::time::Duration;
use switchyard_broker::Broker;
use switchyard_ingest::IngestApp;
use switchyard_store::Store;
use switchyard_worker::Worker;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::Config;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Services {
    Ingest,
    Worker,
    Scheduler,
    All,
}

/// Logs to stdout (JSON or text), and spans to an OpenTelemetry collector over OTLP when
/// `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set; the
/// exporter reads the other standard `OTEL_*` variables (protocol, headers, batch delay).
/// The returned provider flushes the spans left when it is shut down.
pub fn init_tracing(
    cfg: &Config,
    service: &str,
) -> Option<opentelemetry_sdk::trace::SdkTracerProvider> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{EnvFilter, Layer};
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new("info,lapin=warn,amq_protocol=warn,sqlx=warn,tower_http=warn")
    });
    // Colour only on a terminal: a log file or a collector gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let fmt = tracing_subscriber::fmt::layer()
        .with_ansi(ansi)
        .with_target(false);
    let logs = if cfg.log_format == "json" {
        fmt.json()
            .flatten_event(true)
            .with_current_span(true)
            .boxed()
    } else {
        fmt.compact().boxed()
    };
    let (traces, provider) = match otlp_provider(service) {
        Ok(Some(provider)) => {
            use opentelemetry::trace::TracerProvider as _;
            let tracer = provider.tracer("switchyard");
            (
                Some(tracing_opentelemetry::layer().with_tracer(tracer)),
                Some(provider),
            )
        }
        Ok(None) => (None, None),
        Err(e) => {
            eprintln!("warning: traces are not exported: {e}");
            (None, None)
        }
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(logs)
        .with(traces)
        .init();
    if provider.is_some() {
        info!(service, "exporting traces over OTLP");
    }
    provider
}

fn otlp_provider(
    service: &str,
) -> anyhow::Result<Option<opentelemetry_sdk::trace::SdkTracerProvider>> {
    let configured = [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ]
    .iter()
    .any(|v| std::env::var(v).is_ok_and(|s| !s.trim().is_empty()));
    if !configured {
        return Ok(None);
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()
        .context("the OTLP exporter (OTEL_EXPORTER_OTLP_*)")?;
    let name =
        std::env::var("OTEL_SERVICE_NAME").unwrap_or_else(|_| format!("switchyard-{service}"));
    Ok(Some(
        opentelemetry_sdk::trace::SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(
                opentelemetry_sdk::Resource::builder()
                    .with_service_name(name)
                    .build(),
            )
            .build(),
    ))
}

/// Connect to Postgres, waiting up to 30 s for it, and check migrations.
pub async fn open_store(cfg: &Config) -> anyhow::Result<Store> {
    let store = Store::connect_lazy(&cfg.database_url, cfg.database_max_connections)
        .context("invalid configuration: database_url (SWITCHYARD_DATABASE_URL)")?;
    let mut waited = Duration::ZERO;
    loop {
        match store.ping().await {
            Ok(()) => break,
            Err(e) if e.is_unavailable() && waited < Duration::from_secs(30) => {
                if waited.is_zero() {
                    warn!(error = %e, "the database is not reachable yet; waiting up to 30 s");
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
                waited += Duration::from_secs(1);
            }
            Err(e) => {
                return Err(e).context(format!(
                    "cannot reach the database at {} (is PostgreSQL running? see README: `just up`)",
                    redact(&cfg.database_url)
                ));
            }
        }
    }
    store.ensure_migrated().await?;
    Ok(store)
}

pub async fn migrate(cfg: &Config) -> anyhow::Result<()> {
    let store = Store::connect(&cfg.database_url, 2)
        .await
        .with_context(|| format!("cannot reach the database at {}", redact(&cfg.database_url)))?;
    store.migrate().await?;
    println!("database migrated: {}", redact(&cfg.database_url));
    Ok(())
}

pub async fn run(cfg: Config, which: Services) -> anyhow::Result<()> {
    let name = match which {
        Services::Ingest => "ingest",
        Services::Worker => "worker",
        Services::Scheduler => "scheduler",
        Services::All => "all",
    };
    let traces = init_tracing(&cfg, name);
    let result = run_services(cfg, which, name).await;
    if let Some(provider) = traces {
        // The spans still in the batch go out before the process ends.
        let _ = tokio::task::spawn_blocking(move || provider.shutdown()).await;
    }
    result
}

async fn run_services(cfg: Config, which: Services, name: &str) -> anyhow::Result<()> {
    let store = open_store(&cfg).await?;
    let keyring = Arc::new(cfg.keyring()?);
    let guard = cfg.guard()?;
    let broker = Broker::start(cfg.broker_config(name));
    if !broker.wait_connected(Duration::from_secs(10)).await {
        warn!(
            "RabbitMQ is not reachable yet; continuing and retrying in the background (ingest answers 503 meanwhile)"
        );
    }
    let stop = CancellationToken::new();
    tokio::spawn(shutdown_signal(stop.clone()));

    let mut tasks = tokio::task::JoinSet::new();
    let worker = match which {
        Services::Worker | Services::All => Some(Worker::new(
            cfg.worker_config(guard.clone()),
            store.clone(),
            broker.clone(),
            keyring.clone(),
        )?),
        _ => None,
    };
    let scheduler = match which {
        Services::Scheduler | Services::All => Some(switchyard_scheduler::Scheduler::new(
            cfg.scheduler_config(Some(switchyard_ops::calls::Calls {
                store: store.clone(),
                broker: broker.clone(),
                keyring: keyring.clone(),
                http: switchyard_providers::http_client(),
                guard: guard.clone(),
                default_retry: cfg.retry.clone(),
                default_breaker: cfg.breaker.clone(),
            })),
            store.clone(),
            broker.clone(),
            Arc::new(switchyard_scheduler::SystemClock),
        )),
        _ => None,
    };
    let registries: Vec<_> = worker
        .iter()
        .map(Worker::registry)
        .chain(scheduler.iter().map(|s| s.registry()))
        .collect();
    if matches!(which, Services::Ingest | Services::All) {
        if cfg.admin_token.is_none() {
            warn!(
                "SWITCHYARD_ADMIN_TOKEN is not set: only tenants' API keys can use the management API"
            );
        }
        let mut ingest_cfg = cfg.ingest_config(guard.clone(), keyring.clone());
        // One port for everything in `all`: the worker's and scheduler's metrics too.
        ingest_cfg.more_metrics = registries.clone();
        let app = IngestApp::build(ingest_cfg, store.clone(), broker.clone(), cfg.listen)
            .await
            .with_context(|| {
                format!(
                    "cannot listen on {} (setting `listen`, SWITCHYARD_LISTEN)",
                    cfg.listen
                )
            })?;
        let stop = stop.clone();
        tasks.spawn(async move {
            app.run_until_stopped(stop)
                .await
                .map_err(anyhow::Error::from)
        });
    } else if let Some(addr) = cfg.health_addr() {
        // A worker or a scheduler alone: its own port for probes and metrics.
        match tokio::net::TcpListener::bind(addr).await {
            Ok(listener) => {
                let ready = readiness(store.clone(), broker.clone(), guard.clone());
                let stop = stop.clone();
                let mut registries = registries;
                registries.push(switchyard_providers::metrics::registry());
                tasks.spawn(async move {
                    switchyard_telemetry::serve(listener, registries, ready, stop)
                        .await
                        .map_err(anyhow::Error::from)
                });
            }
            Err(e) => warn!(
                %addr, error = %e,
                "cannot serve health and metrics (setting `health_listen`, SWITCHYARD_HEALTH_LISTEN); running without them"
            ),
        }
    }
    if let Some(worker) = worker {
        let stop = stop.clone();
        tasks.spawn(async move { worker.run(stop).await.map_err(anyhow::Error::from) });
    }
    if let Some(scheduler) = scheduler {
        let stop = stop.clone();
        tasks.spawn(async move {
            scheduler.run(stop).await;
            Ok(())
        });
    }
    let mut result = Ok(());
    while let Some(done) = tasks.join_next().await {
        let r = done.context("a service task failed").and_then(|r| r);
        if let Err(e) = r {
            warn!(error = %e, "a service stopped with an error; stopping the others");
            stop.cancel();
            result = Err(e);
        }
    }
    broker.shutdown().await;
    store.close().await;
    info!("switchyard stopped");
    result
}

/// A worker's or a scheduler's readiness: the broker connected and the database answering;
/// `degraded` while Redis is down (breakers and limits go per process).
fn readiness(
    store: Store,
    broker: Broker,
    guard: Arc<switchyard_resilience::Guard>,
) -> switchyard_telemetry::ReadyCheck {
    Arc::new(move || {
        let (store, broker, guard) = (store.clone(), broker.clone(), guard.clone());
        Box::pin(async move {
            let mut checks = std::collections::BTreeMap::new();
            let broker_ok = broker.is_connected();
            checks.insert(
                "broker",
                if broker_ok {
                    "ok"
                } else {
                    "down: not connected"
                }
                .to_owned(),
            );
            let db = match tokio::time::timeout(Duration::from_secs(2), store.ping()).await {
                Ok(Ok(())) => "ok".to_owned(),
                Ok(Err(e)) => format!("down: {e}"),
                Err(_) => "down: no answer within 2 s".to_owned(),
            };
            let db_ok = db == "ok";
            checks.insert("database", db);
            let redis = guard.ping().await;
            checks.insert(
                "redis",
                match redis {
                    None => "not configured: breakers and rate limits are per process",
                    Some(true) => "ok",
                    Some(false) => {
                        "down: breakers and rate limits are per process until it is back"
                    }
                }
                .to_owned(),
            );
            let status = match (broker_ok && db_ok, redis) {
                (false, _) => "not_ready",
                (true, Some(false)) => "degraded",
                (true, _) => "ready",
            };
            switchyard_telemetry::Readiness { status, checks }
        })
    })
}

async fn shutdown_signal(stop: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => info!("interrupted; shutting down gracefully"),
        _ = term => info!("SIGTERM; shutting down gracefully"),
    }
    stop.cancel();
}

/// A URL without its password.
pub fn redact(url: &str) -> String {
    if url.contains(',') {
        return url
            .split(',')
            .map(|u| redact(u.trim()))
            .collect::<Vec<_>>()
            .join(",");
    }
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}
