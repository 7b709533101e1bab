//! OAuth2 state: an integration's sealed token set, rewritten under a fleet-wide lock, and
//! the consent flows under way (`migrations/0009_oauth.sql`).
use chrono::{DateTime, Utc};
use sqlx::{Postgres, Transaction};
use uuid::Uuid;

use crate::{Result, SealedCredentials, Store, StoreError};

/// An integration's token set, locked for refreshing: every other refresher of the fleet
/// waits until this one commits (or drops), then reads what it wrote.
pub struct TokenLock {
    tx: Transaction<'static, Postgres>,
    integration: Uuid,
    /// The token set as stored when the lock was taken.
    pub current: Option<SealedCredentials>,
}

impl TokenLock {
    /// Write a new token set and release the lock.
    pub async fn save(mut self, sealed: &SealedCredentials) -> Result<()> {
        sqlx::query(
            "UPDATE integrations SET oauth_token = $2, oauth_token_key_id = $3, updated_at = now() \
             WHERE id = $1",
        )
        .bind(self.integration)
        .bind(&sealed.bytes)
        .bind(&sealed.key_id)
        .execute(&mut *self.tx)
        .await?;
        self.tx.commit().await?;
        Ok(())
    }

    /// Release the lock without writing.
    pub async fn release(self) -> Result<()> {
        self.tx.commit().await?;
        Ok(())
    }
}

/// A consent flow to start: `state` is stored as its SHA-256 only.
#[derive(Debug, Clone)]
pub struct NewOAuthState<'a> {
    pub state_sha256: &'a str,
    pub integration: Uuid,
    pub verifier: &'a SealedCredentials,
    pub redirect_uri: &'a str,
    pub expires_at: DateTime<Utc>,
}

/// A consent flow taken for its code exchange.
#[derive(Debug, Clone)]
pub struct TakenOAuthState {
    pub integration: Uuid,
    pub verifier: SealedCredentials,
    pub redirect_uri: String,
}

impl Store {
    /// The integration's sealed token set, if it has one.
    pub async fn oauth_token(&self, integration: Uuid) -> Result<Option<SealedCredentials>> {
        oauth_token_in(self.pool(), integration).await
    }

    /// Lock the integration's token set across the fleet (a transaction-scoped advisory
    /// lock) and read it as it is now.
    pub async fn lock_oauth_token(&self, integration: Uuid) -> Result<TokenLock> {
        let key = switchyard_core::ids::oauth_lock_key(integration);
        let mut tx = self
            .pool()
            .begin_with(sqlx::AssertSqlSafe(format!(
                "BEGIN; SELECT pg_advisory_xact_lock({key})"
            )))
            .await?;
        let current = oauth_token_in(&mut *tx, integration).await?;
        Ok(TokenLock {
            tx,
            integration,
            current,
        })
    }

    /// Forget the token set (its consent was revoked).
    pub async fn clear_oauth_token(&self, integration: Uuid) -> Result<()> {
        sqlx::query(
            "UPDATE integrations SET oauth_token = NULL, oauth_token_key_id = NULL, updated_at = now() \
             WHERE id = $1",
        )
        .bind(integration)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    pub async fn create_oauth_state(&self, s: &NewOAuthState<'_>) -> Result<()> {
        sqlx::query(
            "INSERT INTO oauth_states (state_sha256, integration_id, verifier, verifier_key_id, \
               redirect_uri, expires_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(s.state_sha256)
        .bind(s.integration)
        .bind(&s.verifier.bytes)
        .bind(&s.verifier.key_id)
        .bind(s.redirect_uri)
        .bind(s.expires_at)
        .execute(self.pool())
        .await?;
        Ok(())
    }

    /// Take a consent flow's state for its code exchange: once, before it expires. `None`:
    /// unknown, already used, or expired.
    pub async fn take_oauth_state(&self, state_sha256: &str) -> Result<Option<TakenOAuthState>> {
        let row: Option<(Uuid, Vec<u8>, String, String)> = sqlx::query_as(
            "UPDATE oauth_states SET used_at = now() \
             WHERE state_sha256 = $1 AND used_at IS NULL AND expires_at > now() \
             RETURNING integration_id, verifier, verifier_key_id, redirect_uri",
        )
        .bind(state_sha256)
        .fetch_optional(self.pool())
        .await?;
        Ok(row.map(
            |(integration, bytes, key_id, redirect_uri)| TakenOAuthState {
                integration,
                verifier: SealedCredentials { key_id, bytes },
                redirect_uri,
            },
        ))
    }

    /// Record how a consent flow ended (`connected`, or why not).
    pub async fn finish_oauth_state(&self, state_sha256: &str, outcome: &str) -> Result<()> {
        sqlx::query("UPDATE oauth_states SET outcome = $2 WHERE state_sha256 = $1")
            .bind(state_sha256)
            .bind(outcome)
            .execute(self.pool())
            .await?;
        Ok(())
    }

    /// How a consent flow ended, once it has (for `integrations connect`, which waits).
    /// How integration `integration`'s consent flow `state_sha256` ended; `NotFound` when it
    /// has no such flow.
    pub async fn oauth_flow_outcome(
        &self,
        integration: Uuid,
        state_sha256: &str,
    ) -> Result<Option<String>> {
        sqlx::query_scalar::<_, Option<String>>(
            "SELECT outcome FROM oauth_states WHERE state_sha256 = $1 AND integration_id = $2",
        )
        .bind(state_sha256)
        .bind(integration)
        .fetch_optional(self.pool())
        .await?
        .ok_or_else(|| StoreError::NotFound(format!("consent flow {state_sha256}")))
    }

    pub async fn oauth_state_outcome(&self, state_sha256: &str) -> Result<Option<String>> {
        Ok(sqlx::query_scalar::<_, Option<String>>(
            "SELECT outcome FROM oauth_states WHERE state_sha256 = $1",
        )
        .bind(state_sha256)
        .fetch_optional(self.pool())
        .await?
        .flatten())
    }
}

/// The integration's sealed token set, on a pool or inside a transaction.
async fn oauth_token_in<'e, E>(exec: E, integration: Uuid) -> Result<Option<SealedCredentials>>
where
    E: sqlx::Executor<'e, Database = Postgres>,
{
    let row: Option<(Option<Vec<u8>>, Option<String>)> =
        sqlx::query_as("SELECT oauth_token, oauth_token_key_id FROM integrations WHERE id = $1")
            .bind(integration)
            .fetch_optional(exec)
            .await?;
    match row {
        None => Err(StoreError::NotFound(format!("integration {integration}"))),
        Some((Some(bytes), Some(key_id))) => Ok(Some(SealedCredentials { key_id, bytes })),
        Some(_) => Ok(None),
    }
}
