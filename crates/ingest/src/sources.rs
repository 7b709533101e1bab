//! Source integrations (webhook senders) with their routes, cached briefly. While the
//! database is unreachable, a cached entry is used however old it is, so ingest keeps
//! accepting webhooks for integrations it has seen.
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use switchyard_core::IntegrationStatus;
use switchyard_core::inbound::InboundSpec;
use switchyard_core::webhook_auth::WebhookPolicy;
use switchyard_store::{RouteTarget, Store, StoreError};
use switchyard_vault::{Keyring, Sealed};
use tokio::sync::RwLock;
use tracing::warn;
use uuid::Uuid;

pub(crate) struct Source {
    pub(crate) id: Uuid,
    pub(crate) name: String,
    pub(crate) status: IntegrationStatus,
    pub(crate) inbound: InboundSpec,
    pub(crate) policy: WebhookPolicy,
    /// The decrypted signing secrets, or why they cannot be opened.
    pub(crate) secrets: Result<Vec<Vec<u8>>, String>,
    pub(crate) targets: Vec<RouteTarget>,
    /// Operations of its connector that its callbacks settle (by name).
    pub(crate) settles: Vec<(String, switchyard_providers::operations::SettleSpec)>,
    /// Its channel routes (messages with fallback).
    pub(crate) channel_routes: Vec<switchyard_store::ChannelRoute>,
    /// The provider drives its own transactions by calling the hub (Payme): how, and how
    /// the operation it pays is settled.
    pub(crate) merchant: Option<(
        switchyard_providers::operations::MerchantSpec,
        switchyard_providers::operations::SettleSpec,
    )>,
}

/// When an entry was loaded, and the integration (`None`: there is no such integration).
type Entry = (Instant, Option<Arc<Source>>);

pub(crate) struct Cache {
    store: Store,
    keyring: Arc<Keyring>,
    ttl: Duration,
    entries: RwLock<HashMap<Uuid, Entry>>,
}

impl Cache {
    pub(crate) fn new(store: Store, ttl: Duration, keyring: Arc<Keyring>) -> Cache {
        Cache {
            store,
            keyring,
            ttl,
            entries: RwLock::new(HashMap::new()),
        }
    }

    /// The source integration, `None` if there is no such (undeleted) integration.
    pub(crate) async fn get(&self, id: Uuid) -> Result<Option<Arc<Source>>, StoreError> {
        let cached = self.entries.read().await.get(&id).cloned();
        if let Some((at, entry)) = &cached
            && at.elapsed() < self.ttl
        {
            return Ok(entry.clone());
        }
        match self.load(id).await {
            Ok(entry) => {
                let mut map = self.entries.write().await;
                if map.len() > 10_000 {
                    map.clear();
                }
                map.insert(id, (Instant::now(), entry.clone()));
                Ok(entry)
            }
            Err(e) if e.is_unavailable() => match cached {
                Some((_, entry)) => {
                    warn!(integration = %id, error = %e, "database unreachable; using the cached integration");
                    Ok(entry)
                }
                None => Err(e),
            },
            Err(e) => Err(e),
        }
    }

    async fn load(&self, id: Uuid) -> Result<Option<Arc<Source>>, StoreError> {
        let integration = match self.store.integration(id).await {
            Ok(i) => i,
            Err(StoreError::NotFound(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        let inbound: InboundSpec = serde_json::from_value(integration.inbound.clone())
            .map_err(|e| StoreError::Corrupt(format!("integration {id}: inbound settings: {e}")))?;
        let policy: WebhookPolicy = serde_json::from_value(integration.webhook_auth.clone())
            .map_err(|e| StoreError::Corrupt(format!("integration {id}: webhook_auth: {e}")))?;
        let secrets = match &integration.webhook_secrets {
            None => Ok(Vec::new()),
            Some(s) => self
                .keyring
                .open(
                    &Sealed {
                        key_id: s.key_id.clone(),
                        bytes: s.bytes.clone(),
                    },
                    &switchyard_ops::keys::aad(id, switchyard_store::SecretKind::WebhookSecrets),
                )
                .map_err(|e| e.to_string())
                .and_then(|plain| {
                    use secrecy::ExposeSecret;
                    serde_json::from_slice::<Vec<String>>(plain.expose_secret())
                        .map(|v| v.into_iter().map(String::into_bytes).collect())
                        .map_err(|_| "the decrypted secrets are not a JSON list".to_owned())
                }),
        };
        let targets = self.store.route_targets(id).await?;
        let channel_routes = self.store.channel_routes(Some(id), None).await?;
        let manifest = switchyard_providers::kind(&integration.provider)
            .ok()
            .and_then(|k| k.manifest(&integration.settings))
            .and_then(|m| switchyard_providers::rest::Manifest::parse(&m).ok());
        let merchant = manifest.as_ref().and_then(|m| {
            let spec = m.merchant.clone()?;
            let settle = m.operations.get(&spec.operation)?.settle.clone()?;
            Some((spec, settle))
        });
        let settles = manifest
            .map(|m| {
                m.operations
                    .into_iter()
                    .filter_map(|(name, op)| {
                        op.settle
                            .filter(|s| s.callback.is_some())
                            .map(|s| (name, s))
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(Some(Arc::new(Source {
            id,
            name: integration.name,
            status: integration.status,
            inbound,
            policy,
            secrets,
            targets,
            settles,
            channel_routes,
            merchant,
        })))
    }
}
