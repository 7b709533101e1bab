//! The connection supervisor: one AMQP connection per process, re-established with
//! exponential backoff whenever it fails, with the topology redeclared each time.
use backon::{BackoffBuilder, ExponentialBuilder};
use futures_util::StreamExt;
use lapin::options::ConfirmSelectOptions;
use lapin::{Channel, Connection, ConnectionProperties, Event};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::{Mutex, Notify, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::Topology;

#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// `amqp://user:pass@host:port/vhost`
    pub url: String,
    pub topology: Topology,
    /// Channels used round-robin for publishing (each in confirm mode).
    pub publisher_channels: usize,
    /// How long a publish waits for the broker's confirm before giving up.
    pub confirm_timeout: Duration,
    pub reconnect_min_delay: Duration,
    pub reconnect_max_delay: Duration,
    /// Shown in the RabbitMQ management UI.
    pub connection_name: String,
}

impl BrokerConfig {
    pub fn new(url: impl Into<String>, topology: Topology) -> BrokerConfig {
        BrokerConfig {
            url: url.into(),
            topology,
            publisher_channels: 4,
            confirm_timeout: Duration::from_secs(5),
            reconnect_min_delay: Duration::from_millis(200),
            reconnect_max_delay: Duration::from_secs(5),
            connection_name: "switchyard".into(),
        }
    }
}

/// A live connection and its publishing channels.
pub(crate) struct Session {
    pub(crate) conn: Connection,
    publishers: Vec<Channel>,
    next: AtomicUsize,
    pub(crate) generation: u64,
}

impl Session {
    pub(crate) fn publisher(&self) -> &Channel {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.publishers.len();
        &self.publishers[i]
    }
}

pub(crate) struct Inner {
    pub(crate) config: BrokerConfig,
    pub(crate) state: watch::Sender<Option<Arc<Session>>>,
    generation: AtomicU64,
    broken: Notify,
    stop: CancellationToken,
    task: Mutex<Option<JoinHandle<()>>>,
}

/// A handle on the supervised connection; cheap to clone.
#[derive(Clone)]
pub struct Broker(pub(crate) Arc<Inner>);

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("connected", &self.is_connected())
            .field("prefix", &self.0.config.topology.prefix)
            .finish()
    }
}

impl Broker {
    /// Start the supervisor. It connects in the background; use
    /// [`Broker::wait_connected`] to wait for the first session.
    pub fn start(config: BrokerConfig) -> Broker {
        let (state, _) = watch::channel(None);
        let inner = Arc::new(Inner {
            config,
            state,
            generation: AtomicU64::new(0),
            broken: Notify::new(),
            stop: CancellationToken::new(),
            task: Mutex::new(None),
        });
        let handle = tokio::spawn(supervise(inner.clone()));
        *inner.task.try_lock().expect("fresh mutex") = Some(handle);
        Broker(inner)
    }

    pub fn topology(&self) -> &Topology {
        &self.0.config.topology
    }

    /// Whether a session is up right now.
    pub fn is_connected(&self) -> bool {
        self.0
            .state
            .borrow()
            .as_ref()
            .is_some_and(|s| s.conn.status().connected())
    }

    /// Wait until a session is up, at most `timeout`.
    pub async fn wait_connected(&self, timeout: Duration) -> bool {
        let mut rx = self.0.state.subscribe();
        matches!(
            tokio::time::timeout(timeout, rx.wait_for(Option::is_some)).await,
            Ok(Ok(_))
        )
    }

    pub(crate) fn session(&self) -> Option<Arc<Session>> {
        self.0.state.borrow().clone()
    }

    /// A publisher or consumer saw session `generation` fail: reconnect.
    pub(crate) fn report_broken(&self, generation: u64) {
        if self.0.generation.load(Ordering::SeqCst) == generation {
            self.0.broken.notify_one();
        }
    }

    pub(crate) fn stopping(&self) -> &CancellationToken {
        &self.0.stop
    }

    /// Close the connection and stop reconnecting. Unacknowledged deliveries return to
    /// their queues.
    pub async fn shutdown(&self) {
        self.0.stop.cancel();
        if let Some(task) = self.0.task.lock().await.take() {
            let _ = task.await;
        }
    }
}

fn backoff(cfg: &BrokerConfig) -> impl Iterator<Item = Duration> {
    ExponentialBuilder::default()
        .with_min_delay(cfg.reconnect_min_delay)
        .with_max_delay(cfg.reconnect_max_delay)
        .with_jitter()
        .without_max_times()
        .build()
}

/// The broker's addresses: `url` may list a cluster's nodes, comma-separated
/// (`amqp://u:p@h1:5672/%2f,amqp://u:p@h2:5672/%2f`).
pub fn urls(url: &str) -> Vec<&str> {
    url.split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .collect()
}

/// Connect to the first node that answers, starting with a different one each time (so a
/// fleet does not pile onto the first node of the list, and a node that is down is passed).
async fn connect(cfg: &BrokerConfig, generation: u64) -> Result<Session, String> {
    let nodes = urls(&cfg.url);
    let mut errors = Vec::new();
    let mut conn = None;
    for i in 0..nodes.len() {
        let url = nodes[(generation as usize + i) % nodes.len()];
        let props = ConnectionProperties::default()
            .with_connection_name(cfg.connection_name.clone().into());
        match tokio::time::timeout(Duration::from_secs(10), Connection::connect(url, props)).await {
            Ok(Ok(c)) => {
                conn = Some(c);
                break;
            }
            Ok(Err(e)) => errors.push(format!("{}: {e}", redact(url))),
            Err(_) => errors.push(format!("{}: timed out after 10 s", redact(url))),
        }
    }
    let conn = conn.ok_or_else(|| errors.join("; "))?;
    let setup = async {
        let ch = conn.create_channel().await?;
        cfg.topology.declare(&ch).await?;
        let _ = ch.close(200, "topology declared".into()).await;
        let mut publishers = Vec::with_capacity(cfg.publisher_channels.max(1));
        for _ in 0..cfg.publisher_channels.max(1) {
            let ch = conn.create_channel().await?;
            ch.confirm_select(ConfirmSelectOptions::default()).await?;
            publishers.push(ch);
        }
        Ok::<_, lapin::Error>(publishers)
    };
    match setup.await {
        Ok(publishers) => Ok(Session {
            conn,
            publishers,
            next: AtomicUsize::new(0),
            generation,
        }),
        Err(e) => {
            let _ = conn.close(200, "setup failed".into()).await;
            Err(format!("declaring the topology failed: {e}"))
        }
    }
}

async fn supervise(inner: Arc<Inner>) {
    let cfg = &inner.config;
    let mut delays = backoff(cfg);
    let mut failures = 0u32;
    while !inner.stop.is_cancelled() {
        let generation = inner.generation.load(Ordering::SeqCst) + 1;
        match connect(cfg, generation).await {
            Ok(session) => {
                if failures > 0 {
                    info!(
                        generation,
                        "reconnected to RabbitMQ after {failures} failed attempt(s); topology redeclared"
                    );
                } else {
                    info!(generation, prefix = %cfg.topology.prefix, "connected to RabbitMQ; topology declared");
                }
                failures = 0;
                delays = backoff(cfg);
                let session = Arc::new(session);
                let mut events = session.conn.events_listener();
                inner.generation.store(generation, Ordering::SeqCst);
                inner.state.send_replace(Some(session.clone()));
                let lost = loop {
                    tokio::select! {
                        _ = inner.stop.cancelled() => break None,
                        _ = inner.broken.notified() => break Some("a channel failed".to_owned()),
                        ev = events.next() => match ev {
                            Some(Event::Error(e)) => break Some(e.to_string()),
                            Some(_) => {}
                            None => break Some("the connection's event stream ended".to_owned()),
                        },
                        _ = tokio::time::sleep(Duration::from_millis(500)) => {
                            if !session.conn.status().connected() {
                                break Some("the connection is closed".to_owned());
                            }
                        }
                    }
                };
                inner.state.send_replace(None);
                match lost {
                    None => {
                        let _ = session
                            .conn
                            .close(200, "switchyard shutting down".into())
                            .await;
                        info!("closed the RabbitMQ connection");
                        return;
                    }
                    Some(reason) => {
                        warn!(%reason, "lost the RabbitMQ connection; reconnecting");
                        let _ = tokio::time::timeout(
                            Duration::from_secs(1),
                            session.conn.close(200, "reconnecting".into()),
                        )
                        .await;
                    }
                }
            }
            Err(error) => {
                failures += 1;
                let delay = delays.next().unwrap_or(cfg.reconnect_max_delay);
                // Say it loudly once, then quietly: an operator needs to know, not to be flooded.
                if failures == 1 || failures.is_power_of_two() {
                    warn!(%error, attempt = failures, retry_in_ms = delay.as_millis() as u64,
                        "cannot connect to RabbitMQ; retrying");
                }
                tokio::select! {
                    _ = inner.stop.cancelled() => return,
                    _ = tokio::time::sleep(delay) => {}
                }
                continue;
            }
        }
        let delay = delays.next().unwrap_or(cfg.reconnect_min_delay);
        tokio::select! {
            _ = inner.stop.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

/// The URL without its password, for logs.
pub(crate) fn redact(url: &str) -> String {
    if url.contains(',') {
        return urls(url)
            .into_iter()
            .map(redact)
            .collect::<Vec<_>>()
            .join(",");
    }
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let creds = &url[scheme + 3..at];
            let user = creds.split(':').next().unwrap_or("");
            format!("{}{user}:***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn redacts_passwords() {
        assert_eq!(
            super::redact("amqp://guest:secret@127.0.0.1:5672/%2f"),
            "amqp://guest:***@127.0.0.1:5672/%2f"
        );
        assert_eq!(super::redact("amqp://127.0.0.1"), "amqp://127.0.0.1");
        assert_eq!(
            super::redact("amqp://u:p@h1:5672/%2f, amqp://u:p@h2:5672/%2f"),
            "amqp://u:***@h1:5672/%2f,amqp://u:***@h2:5672/%2f"
        );
    }

    #[test]
    fn a_cluster_is_several_urls() {
        assert_eq!(
            super::urls("amqp://h1:5672/%2f, amqp://h2:5672/%2f,"),
            ["amqp://h1:5672/%2f", "amqp://h2:5672/%2f"]
        );
        assert_eq!(super::urls("amqp://h1"), ["amqp://h1"]);
    }
}
