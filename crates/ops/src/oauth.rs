//! Connecting an OAuth2 integration (the authorization code grant with PKCE), for the CLI
//! (`switchyard integrations connect`) and the HTTP API alike: [`begin`] makes the consent
//! URL and keeps the flow's `state` (as its SHA-256, single use, ten minutes) with its PKCE
//! verifier (sealed); [`complete`] takes that state back from the provider's redirect
//! (`GET /v1/oauth/callback`), exchanges the code, stores the token set, and moves an
//! integration that was waiting for reauthorization back to `active`, releasing its held
//! jobs.
use chrono::{DateTime, Duration, Utc};
use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use switchyard_broker::Broker;
use switchyard_core::IntegrationStatus;
use switchyard_providers::oauth::{self, OAuthSettings};
use switchyard_providers::rest::{Auth, Manifest};
use switchyard_store::{
    Integration, NewOAuthState, SealedCredentials, SecretKind, Store, StoreError,
};
use switchyard_vault::{Keyring, Sealed};
use tracing::{info, warn};

/// How long a consent flow may take.
pub const STATE_TTL_MINUTES: i64 = 10;

#[derive(Debug, thiserror::Error)]
pub enum OAuthFlowError {
    #[error("{0}")]
    NotOAuth(String),
    #[error(
        "this consent link is unknown, was already used, or expired: start again (`switchyard integrations connect`)"
    )]
    BadState,
    #[error("the provider refused the code: {0}")]
    Exchange(String),
    #[error("the vault: {0}")]
    Vault(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A consent flow under way.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema)]
pub struct Consent {
    /// Open this to consent.
    pub authorize_url: String,
    /// The flow's id, to wait for its outcome ([`outcome`]): the SHA-256 of its `state`.
    pub flow: String,
    pub expires_at: DateTime<Utc>,
}

fn state_digest(state: &str) -> String {
    hex::encode(Sha256::digest(state.as_bytes()))
}

/// The integration's OAuth2 settings, if it uses the authorization code grant.
pub fn settings_of(i: &Integration) -> Result<OAuthSettings, OAuthFlowError> {
    // A built-in connector's settings are its parameters: its manifest says how it is
    // authorised.
    let manifest = switchyard_providers::manifest(&i.provider, &i.settings).ok_or_else(|| {
        OAuthFlowError::NotOAuth(format!(
            "`{}` ({}) is not called by a manifest, so not by OAuth2",
            i.name, i.provider
        ))
    })?;
    let m = Manifest::parse(&manifest).map_err(|e| OAuthFlowError::NotOAuth(e.to_string()))?;
    match m.auth {
        Auth::OAuth2(s) if s.grant == oauth::Grant::AuthorizationCode => Ok(*s),
        Auth::OAuth2(_) => Err(OAuthFlowError::NotOAuth(format!(
            "`{}` gets its tokens by itself (its grant needs no consent)",
            i.name
        ))),
        _ => Err(OAuthFlowError::NotOAuth(format!(
            "`{}` does not use OAuth2 (settings.auth.type is not oauth2)",
            i.name
        ))),
    }
}

fn seal(
    keyring: &Keyring,
    i: &Integration,
    kind: SecretKind,
    plain: &[u8],
) -> Result<SealedCredentials, OAuthFlowError> {
    let s = keyring
        .seal(plain, &kind.aad(i.id))
        .map_err(|e| OAuthFlowError::Vault(e.to_string()))?;
    Ok(SealedCredentials {
        key_id: s.key_id,
        bytes: s.bytes,
    })
}

/// Start connecting `i`: the consent URL, sending the user back to `redirect_uri`.
pub async fn begin(
    store: &Store,
    keyring: &Keyring,
    i: &Integration,
    redirect_uri: &str,
) -> Result<Consent, OAuthFlowError> {
    let settings = settings_of(i)?;
    let creds =
        crate::integrations::open_credentials(keyring, i).map_err(OAuthFlowError::NotOAuth)?;
    let start = oauth::consent(&settings, &creds, redirect_uri)
        .map_err(|e| OAuthFlowError::NotOAuth(e.to_string()))?;
    let verifier = seal(
        keyring,
        i,
        SecretKind::OAuthVerifier,
        start.verifier.expose_secret().as_bytes(),
    )?;
    let flow = state_digest(start.state.expose_secret());
    let expires_at = Utc::now() + Duration::minutes(STATE_TTL_MINUTES);
    store
        .create_oauth_state(&NewOAuthState {
            state_sha256: &flow,
            integration: i.id,
            verifier: &verifier,
            redirect_uri,
            expires_at,
        })
        .await?;
    Ok(Consent {
        authorize_url: start.url.to_string(),
        flow,
        expires_at,
    })
}

/// Finish connecting, from the provider's redirect (`state`, `code`). Returns the
/// integration as it now is.
pub async fn complete(
    store: &Store,
    keyring: Arc<Keyring>,
    broker: Option<&Broker>,
    http: &reqwest::Client,
    state: &str,
    code: &str,
) -> Result<Integration, OAuthFlowError> {
    let flow = state_digest(state);
    let taken = store
        .take_oauth_state(&flow)
        .await?
        .ok_or(OAuthFlowError::BadState)?;
    let i = store.integration(taken.integration).await?;
    let result = async {
        let settings = settings_of(&i)?;
        let creds = crate::integrations::open_credentials(&keyring, &i)
            .map_err(OAuthFlowError::NotOAuth)?;
        let verifier = keyring
            .open(
                &Sealed {
                    key_id: taken.verifier.key_id.clone(),
                    bytes: taken.verifier.bytes.clone(),
                },
                &SecretKind::OAuthVerifier.aad(i.id),
            )
            .map_err(|e| OAuthFlowError::Vault(e.to_string()))?;
        let verifier = String::from_utf8_lossy(verifier.expose_secret()).into_owned();
        let tokens = oauth::exchange_code(
            &settings,
            &creds,
            http,
            code,
            &verifier,
            &taken.redirect_uri,
        )
        .await
        .map_err(|e| OAuthFlowError::Exchange(e.message))?;
        let sealed = switchyard_providers::tokens::seal(&keyring, i.id, &tokens)
            .map_err(OAuthFlowError::Vault)?;
        store.lock_oauth_token(i.id).await?.save(&sealed).await?;
        Ok::<(), OAuthFlowError>(())
    }
    .await;
    if let Err(e) = &result {
        let _ = store.finish_oauth_state(&flow, &e.to_string()).await;
        warn!(integration = %i.name, error = %e, "connecting failed");
        result?;
    }
    store.finish_oauth_state(&flow, "connected").await?;
    store
        .add_integration_event(
            i.id,
            "connected",
            "connected: the provider granted access (OAuth2)",
        )
        .await?;
    if i.status == IntegrationStatus::Error {
        store
            .set_status(i.id, IntegrationStatus::Active, None)
            .await?;
        if let Some(b) = broker
            && let Err(e) = crate::held::release(store, b, i.id).await
        {
            warn!(integration = %i.name, error = %e, "connected; its held jobs are released by the scheduler");
        }
    }
    info!(integration = %i.name, "connected (OAuth2)");
    Ok(store.integration(i.id).await?)
}

/// How a consent flow ended: `None` while under way; `Some("connected")` or why not.
pub async fn outcome(store: &Store, flow: &str) -> Result<Option<String>, StoreError> {
    store.oauth_state_outcome(flow).await
}
