//! Vault key rotation: re-seal every stored secret under the active key.
use secrecy::ExposeSecret;
use switchyard_store::{SealedCredentials, SecretKind, Store, StoreError};
use switchyard_vault::{Keyring, Sealed, VaultError};
use uuid::Uuid;

/// The associated data that binds a sealed value to its integration and purpose.
pub fn aad(id: Uuid, kind: SecretKind) -> Vec<u8> {
    kind.aad(id)
}

#[derive(Debug, thiserror::Error)]
pub enum RotateError {
    #[error("no vault key is configured (SWITCHYARD_VAULT_KEYS)")]
    NoActiveKey,
    #[error("integration {0}: {1} (is the key that sealed it still in SWITCHYARD_VAULT_KEYS?)")]
    Open(Uuid, VaultError),
    #[error(transparent)]
    Vault(#[from] VaultError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotated {
    pub found: usize,
    pub resealed: usize,
}

/// Re-seal under the keyring's active key every value sealed under another. Services keep
/// working meanwhile as long as their keyring holds both keys; each value is replaced only
/// if it is still exactly what was read (its bytes, not only its key: a value changed
/// meanwhile under the old key is left for the next rotation).
pub async fn rotate(store: &Store, keyring: &Keyring) -> Result<Rotated, RotateError> {
    let active = keyring
        .active_key_id()
        .ok_or(RotateError::NoActiveKey)?
        .to_owned();
    let pending = store.sealed_not_under(&active).await?;
    let mut resealed = 0;
    for (id, kind, sealed) in &pending {
        let aad = aad(*id, *kind);
        let plain = keyring
            .open(
                &Sealed {
                    key_id: sealed.key_id.clone(),
                    bytes: sealed.bytes.clone(),
                },
                &aad,
            )
            .map_err(|e| RotateError::Open(*id, e))?;
        let new = keyring.seal(plain.expose_secret(), &aad)?;
        let new = SealedCredentials {
            key_id: new.key_id,
            bytes: new.bytes,
        };
        if store
            .set_sealed(*id, *kind, Some(&new), Some(sealed))
            .await?
        {
            resealed += 1;
        }
    }
    Ok(Rotated {
        found: pending.len(),
        resealed,
    })
}
