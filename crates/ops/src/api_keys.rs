//! Tenants' API keys for the management API (an operator's business: the admin token only),
//! for the CLI and the HTTP API alike.
use switchyard_store::{ApiKey, Store, StoreError};

use crate::integrations::{FieldError, generate_key};

/// A new key, and the plaintext shown once (only its SHA-256 is stored).
#[derive(Debug, Clone)]
pub struct Created {
    pub key: ApiKey,
    pub plaintext: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiKeyError {
    #[error("{0}")]
    Invalid(#[from] FieldError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn check(field: &str, value: &str) -> Result<(), FieldError> {
    if switchyard_core::is_valid_name(value) {
        return Ok(());
    }
    Err(FieldError {
        field: field.to_owned(),
        reason: format!("`{value}` is not a valid {field} (1-64 of a-z, 0-9, _ or -)"),
    })
}

/// Create `tenant`'s key `name`: `sy_` and 48 hex digits. With it, the tenant sees and
/// changes only its own integrations, jobs and dead letters.
pub async fn create(store: &Store, tenant: &str, name: &str) -> Result<Created, ApiKeyError> {
    check("tenant", tenant)?;
    check("name", name)?;
    let plaintext = generate_key();
    let key = store
        .create_api_key(
            tenant,
            name,
            &switchyard_core::ids::secret_digest(&plaintext),
        )
        .await?;
    Ok(Created { key, plaintext })
}

/// Revoke `tenant`'s key `name` at once.
pub async fn revoke(store: &Store, tenant: &str, name: &str) -> Result<(), StoreError> {
    store.revoke_api_key(tenant, name).await
}
