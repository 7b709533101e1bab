//! The store behind an integration's OAuth2 tokens: sealed in the vault (bound to the
//! integration), locked across the fleet while refreshed (`Store::lock_oauth_token`), and an
//! integration whose grant was refused moved to `error` with a `reauthorization_required`
//! event (its jobs are then held).
use async_trait::async_trait;
use secrecy::ExposeSecret;
use std::sync::Arc;
use switchyard_core::IntegrationStatus;
use switchyard_store::{SealedCredentials, SecretKind, Store, TokenLock};
use switchyard_vault::{Keyring, Sealed};
use uuid::Uuid;

use crate::oauth::{LockedTokens, TokenSet, TokenVault};

/// An integration's tokens in the store.
pub struct StoredTokens {
    store: Store,
    keyring: Arc<Keyring>,
    integration: Uuid,
}

impl StoredTokens {
    pub fn new(store: Store, keyring: Arc<Keyring>, integration: Uuid) -> StoredTokens {
        StoredTokens {
            store,
            keyring,
            integration,
        }
    }
}

/// Seal a token set for `integration`.
pub fn seal(
    keyring: &Keyring,
    integration: Uuid,
    t: &TokenSet,
) -> Result<SealedCredentials, String> {
    let plain = serde_json::to_vec(t).map_err(|e| e.to_string())?;
    let s = keyring
        .seal(&plain, &SecretKind::OAuthToken.aad(integration))
        .map_err(|e| e.to_string())?;
    Ok(SealedCredentials {
        key_id: s.key_id,
        bytes: s.bytes,
    })
}

fn open(keyring: &Keyring, integration: Uuid, s: &SealedCredentials) -> Result<TokenSet, String> {
    let plain = keyring
        .open(
            &Sealed {
                key_id: s.key_id.clone(),
                bytes: s.bytes.clone(),
            },
            &SecretKind::OAuthToken.aad(integration),
        )
        .map_err(|e| format!("the stored token set does not open: {e}"))?;
    serde_json::from_slice(plain.expose_secret())
        .map_err(|_| "the stored token set is not a token set".to_owned())
}

#[async_trait]
impl TokenVault for StoredTokens {
    async fn load(&self) -> Result<Option<TokenSet>, String> {
        match self
            .store
            .oauth_token(self.integration)
            .await
            .map_err(|e| e.to_string())?
        {
            None => Ok(None),
            Some(s) => open(&self.keyring, self.integration, &s).map(Some),
        }
    }

    async fn lock(&self) -> Result<Box<dyn LockedTokens>, String> {
        let lock = self
            .store
            .lock_oauth_token(self.integration)
            .await
            .map_err(|e| e.to_string())?;
        let current = match &lock.current {
            None => None,
            Some(s) => Some(open(&self.keyring, self.integration, s)?),
        };
        Ok(Box::new(Locked {
            lock,
            current,
            keyring: self.keyring.clone(),
            integration: self.integration,
        }))
    }

    async fn reauthorization_required(&self, message: &str) {
        let i = self.integration;
        let r = async {
            self.store.clear_oauth_token(i).await?;
            self.store
                .set_status(i, IntegrationStatus::Error, Some(message))
                .await?;
            self.store
                .add_integration_event(i, "reauthorization_required", message)
                .await
        }
        .await;
        match r {
            Ok(()) => tracing::warn!(integration = %i, %message,
                "the provider refused the integration's grant; it is in `error` and its jobs are held until it is connected again"),
            Err(e) => {
                tracing::error!(integration = %i, error = %e, "could not record that the integration needs connecting again")
            }
        }
    }
}

struct Locked {
    lock: TokenLock,
    current: Option<TokenSet>,
    keyring: Arc<Keyring>,
    integration: Uuid,
}

#[async_trait]
impl LockedTokens for Locked {
    fn current(&self) -> Option<TokenSet> {
        self.current.clone()
    }

    async fn save(self: Box<Self>, tokens: &TokenSet) -> Result<(), String> {
        let sealed = seal(&self.keyring, self.integration, tokens)?;
        self.lock.save(&sealed).await.map_err(|e| e.to_string())
    }

    async fn release(self: Box<Self>) {
        let _ = self.lock.release().await;
    }
}
