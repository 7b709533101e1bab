//! OAuth2 for connectors (the `oauth2` crate does the protocol; this module keeps tokens).
//!
//! An integration's token set lives sealed in the store. A connector reads it, uses the
//! access token until shortly before it expires, and then refreshes it **once for the whole
//! fleet**: the refresher takes a fleet-wide lock (a Postgres advisory lock), reads the token
//! set again (another worker may have refreshed it meanwhile), and only if it is still the
//! old one calls the token endpoint and writes the new set back before releasing the lock. A
//! rotating refresh token (QuickBooks, Xero) is therefore used exactly once. A `401` from the
//! API refreshes once more (unless another worker already has) and repeats the call.
//!
//! An `invalid_grant` (consent revoked, refresh token expired) marks the integration
//! `error` with a `reauthorization_required` event; its jobs are held until it is connected
//! again (`switchyard integrations connect`).
//!
//! Grants: `authorization_code` (with PKCE S256, see `ops::oauth` for the consent flow),
//! `client_credentials` and `password`; the client authenticates with `client_secret_basic`
//! (default) or `client_secret_post`.
use async_trait::async_trait;
use chrono::Utc;
use oauth2::basic::{BasicClient, BasicErrorResponseType};
use oauth2::{
    AuthType, ClientId, ClientSecret, EndpointNotSet, EndpointSet, RefreshToken, RequestTokenError,
    ResourceOwnerPassword, ResourceOwnerUsername, Scope, TokenResponse, TokenUrl,
};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use switchyard_core::ErrorClass;
use tokio::sync::Mutex;

use crate::{ConfigError, Credentials, ProviderError};

/// How an integration obtains its tokens (`settings.auth` with `"type": "oauth2"`).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct OAuthSettings {
    #[serde(default)]
    pub grant: Grant,
    pub token_url: url::Url,
    /// Where the user consents (the authorization code grant).
    #[serde(default)]
    pub authorize_url: Option<url::Url>,
    #[serde(default)]
    pub scopes: Vec<String>,
    #[serde(default)]
    pub client_auth: ClientAuth,
    /// Refresh this long before the access token expires.
    #[serde(default = "default_margin")]
    pub refresh_margin_secs: u64,
    /// Where the access token goes: `Authorization: Bearer` (default) or a query parameter
    /// (Moloni: `access_token`).
    #[serde(default)]
    pub token_in: TokenIn,
    /// How the token endpoint is called: `post` with a form body (RFC 6749), or `get` with
    /// the same parameters in the query string (Moloni's `/v1/grant/`).
    #[serde(default)]
    pub token_method: TokenMethod,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum TokenMethod {
    #[default]
    Post,
    Get,
}

fn default_margin() -> u64 {
    120
}

#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Grant {
    #[default]
    AuthorizationCode,
    ClientCredentials,
    Password,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuth {
    /// `client_secret_basic`: HTTP Basic with the client id and secret.
    #[default]
    Basic,
    /// `client_secret_post`: the client id and secret in the form body.
    Post,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum TokenIn {
    #[default]
    Bearer,
    /// A query parameter of this name.
    Query(String),
}

impl OAuthSettings {
    /// The credentials this grant needs.
    pub fn required_credentials(&self) -> &'static [&'static str] {
        match self.grant {
            Grant::Password => &["client_id", "client_secret", "username", "password"],
            _ => &["client_id", "client_secret"],
        }
    }

    pub fn validate(&self, field: &str) -> Result<(), ConfigError> {
        for (name, url) in [
            ("token_url", Some(&self.token_url)),
            ("authorize_url", self.authorize_url.as_ref()),
        ] {
            if let Some(u) = url
                && !matches!(u.scheme(), "http" | "https")
            {
                return Err(ConfigError::new(
                    format!("{field}.{name}"),
                    "must be an http or https URL",
                ));
            }
        }
        if self.grant == Grant::AuthorizationCode && self.authorize_url.is_none() {
            return Err(ConfigError::new(
                format!("{field}.authorize_url"),
                "the authorization_code grant needs the provider's consent page",
            ));
        }
        Ok(())
    }
}

/// A token set as stored (sealed): never printed.
#[derive(Clone, Serialize, Deserialize)]
pub struct TokenSet {
    pub access_token: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// Unix seconds; `None`: the provider said nothing (used until a `401`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
}

impl std::fmt::Debug for TokenSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenSet")
            .field("expires_at", &self.expires_at)
            .field("has_refresh_token", &self.refresh_token.is_some())
            .finish()
    }
}

impl TokenSet {
    /// Usable for at least `margin` more seconds.
    pub fn fresh(&self, margin: u64) -> bool {
        self.expires_at
            .is_none_or(|at| at - margin as i64 > Utc::now().timestamp())
    }

    /// From a token endpoint's answer; a provider that does not rotate its refresh token
    /// keeps the one it had.
    pub fn from_response<T: TokenResponse>(r: &T, previous_refresh: Option<&str>) -> TokenSet {
        TokenSet {
            access_token: r.access_token().secret().clone(),
            refresh_token: r
                .refresh_token()
                .map(|t| t.secret().clone())
                .or_else(|| previous_refresh.map(str::to_owned)),
            expires_at: r
                .expires_in()
                .map(|d| Utc::now().timestamp() + d.as_secs() as i64),
            scope: r.scopes().map(|s| {
                s.iter()
                    .map(|x| x.to_string())
                    .collect::<Vec<_>>()
                    .join(" ")
            }),
        }
    }
}

/// Where an integration's token set is kept, and the fleet-wide lock for refreshing it.
#[async_trait]
pub trait TokenVault: Send + Sync {
    /// The token set as stored now.
    async fn load(&self) -> Result<Option<TokenSet>, String>;
    /// Take the fleet-wide refresh lock; what is stored now comes with it.
    async fn lock(&self) -> Result<Box<dyn LockedTokens>, String>;
    /// The provider refused the grant: the integration needs to be connected again.
    async fn reauthorization_required(&self, message: &str);
}

/// The refresh lock, held.
#[async_trait]
pub trait LockedTokens: Send {
    fn current(&self) -> Option<TokenSet>;
    /// Store `tokens` and release the lock.
    async fn save(self: Box<Self>, tokens: &TokenSet) -> Result<(), String>;
    /// Release the lock, storing nothing.
    async fn release(self: Box<Self>);
}

type TokenClient =
    BasicClient<EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointNotSet, EndpointSet>;

/// One integration's OAuth2 client: its settings, credentials, token vault and the access
/// token it holds.
pub struct OAuth {
    settings: OAuthSettings,
    client_id: String,
    client_secret: Option<SecretString>,
    username: Option<SecretString>,
    password: Option<SecretString>,
    http: reqwest::Client,
    vault: Arc<dyn TokenVault>,
    held: Mutex<Option<TokenSet>>,
}

impl OAuth {
    pub fn new(
        settings: OAuthSettings,
        credentials: &Credentials,
        http: reqwest::Client,
        vault: Arc<dyn TokenVault>,
    ) -> Result<OAuth, ConfigError> {
        for k in settings.required_credentials() {
            if credentials.get(k).is_none() {
                return Err(ConfigError::new(
                    format!("credentials.{k}"),
                    "required by settings.auth (oauth2)",
                ));
            }
        }
        let secret = |k: &str| credentials.get(k).cloned();
        Ok(OAuth {
            client_id: secret("client_id")
                .map(|s| s.expose_secret().to_owned())
                .unwrap_or_default(),
            client_secret: secret("client_secret"),
            username: secret("username"),
            password: secret("password"),
            settings,
            http,
            vault,
            held: Mutex::new(None),
        })
    }

    pub fn settings(&self) -> &OAuthSettings {
        &self.settings
    }

    pub(crate) fn client(&self) -> Result<TokenClient, ProviderError> {
        let mut c = BasicClient::new(ClientId::new(self.client_id.clone()))
            .set_token_uri(TokenUrl::from_url(self.settings.token_url.clone()))
            .set_auth_type(match self.settings.client_auth {
                ClientAuth::Basic => AuthType::BasicAuth,
                ClientAuth::Post => AuthType::RequestBody,
            });
        if let Some(s) = &self.client_secret {
            c = c.set_client_secret(ClientSecret::new(s.expose_secret().to_owned()));
        }
        Ok(c)
    }

    /// An access token to call the API with: the one held, the one stored (another worker
    /// may have refreshed it), or a new one.
    pub async fn access_token(&self) -> Result<String, ProviderError> {
        let margin = self.settings.refresh_margin_secs;
        if let Some(t) = self.held.lock().await.as_ref()
            && t.fresh(margin)
        {
            return Ok(t.access_token.clone());
        }
        self.refresh(None).await
    }

    /// Refresh, unless the stored token is already another than `rejected` (the one the API
    /// refused) and fresh. Single-flight across the fleet (see the module's doc).
    pub async fn refresh(&self, rejected: Option<&str>) -> Result<String, ProviderError> {
        single_flight(
            self.vault.as_ref(),
            &self.held,
            self.settings.refresh_margin_secs,
            rejected,
            |current| async move { self.obtain(current.as_ref()).await },
        )
        .await
    }

    /// A new token set from the token endpoint, by the integration's grant.
    async fn obtain(&self, current: Option<&TokenSet>) -> Result<TokenSet, ProviderError> {
        let refresh = current.and_then(|c| c.refresh_token.clone());
        match self.exchange(refresh.clone()).await {
            Ok(t) => Ok(t),
            // A refresh token refused under the password grant: log in again.
            Err(e)
                if e.reauthorize && self.settings.grant == Grant::Password && refresh.is_some() =>
            {
                self.exchange(None).await
            }
            Err(e) => Err(e),
        }
    }

    /// One call to the token endpoint: a refresh when there is a refresh token, else the
    /// grant itself.
    async fn exchange(&self, refresh: Option<String>) -> Result<TokenSet, ProviderError> {
        let client = self.client()?;
        let http = token_http(&self.http, self.settings.token_method);
        let scopes: Vec<Scope> = self
            .settings
            .scopes
            .iter()
            .map(|s| Scope::new(s.clone()))
            .collect();
        let answer = match (self.settings.grant, &refresh) {
            (_, Some(r)) => {
                client
                    .exchange_refresh_token(&RefreshToken::new(r.clone()))
                    .request_async(&http)
                    .await
            }
            (Grant::AuthorizationCode, None) => {
                return Err(reauthorize(
                    "no refresh token is stored: connect the integration (`switchyard integrations connect`)",
                ));
            }
            (Grant::ClientCredentials, None) => {
                client
                    .exchange_client_credentials()
                    .add_scopes(scopes)
                    .request_async(&http)
                    .await
            }
            (Grant::Password, None) => {
                let user = ResourceOwnerUsername::new(
                    self.username
                        .as_ref()
                        .map(|u| u.expose_secret().to_owned())
                        .unwrap_or_default(),
                );
                let pass = ResourceOwnerPassword::new(
                    self.password
                        .as_ref()
                        .map(|p| p.expose_secret().to_owned())
                        .unwrap_or_default(),
                );
                client
                    .exchange_password(&user, &pass)
                    .add_scopes(scopes)
                    .request_async(&http)
                    .await
            }
        };
        let asked = match (self.settings.grant, &refresh) {
            (_, Some(_)) => "refresh",
            (Grant::ClientCredentials, None) => "client_credentials",
            (Grant::Password, None) => "password",
            (Grant::AuthorizationCode, None) => "authorization_code",
        };
        let got = answer
            .map(|r| TokenSet::from_response(&r, refresh.as_deref()))
            .map_err(token_error);
        crate::metrics::token_request(
            asked,
            match &got {
                Ok(_) => "ok",
                Err(e) if e.reauthorize => "refused",
                Err(_) => "failed",
            },
        );
        got
    }
}

/// A credential that expires (an OAuth2 token, a login session), renewed once for the fleet:
/// the one stored is used when it is fresh and not `rejected` (the one the API refused);
/// otherwise, under the vault's lock, `obtain` makes a new one from what is stored, which is
/// saved and held. A refused grant marks the integration for reauthorization.
pub(crate) async fn single_flight<F, Fut>(
    vault: &dyn TokenVault,
    held: &Mutex<Option<TokenSet>>,
    margin: u64,
    rejected: Option<&str>,
    obtain: F,
) -> Result<String, ProviderError>
where
    F: FnOnce(Option<TokenSet>) -> Fut,
    Fut: Future<Output = Result<TokenSet, ProviderError>>,
{
    let usable = |t: &TokenSet| t.fresh(margin) && Some(t.access_token.as_str()) != rejected;
    let stored = vault.load().await.map_err(store_error)?;
    if let Some(t) = stored.filter(usable) {
        let token = t.access_token.clone();
        *held.lock().await = Some(t);
        return Ok(token);
    }
    let lock = vault.lock().await.map_err(store_error)?;
    let current = lock.current();
    if let Some(t) = current.clone().filter(usable) {
        lock.release().await;
        let token = t.access_token.clone();
        *held.lock().await = Some(t);
        return Ok(token);
    }
    match obtain(current).await {
        Ok(new) => {
            lock.save(&new).await.map_err(store_error)?;
            let token = new.access_token.clone();
            *held.lock().await = Some(new);
            Ok(token)
        }
        Err(e) => {
            lock.release().await;
            if e.reauthorize {
                *held.lock().await = None;
                vault.reauthorization_required(&e.message).await;
            }
            Err(e)
        }
    }
}

type TokenFuture =
    std::pin::Pin<Box<dyn Future<Output = Result<oauth2::HttpResponse, TokenHttpError>> + Send>>;

/// The `oauth2` crate's HTTP client: the connectors' own, each call owning what it uses.
fn token_http(
    http: &reqwest::Client,
    method: TokenMethod,
) -> impl Fn(oauth2::HttpRequest) -> TokenFuture + use<> {
    let http = http.clone();
    move |req| {
        let http = http.clone();
        let req = match method {
            TokenMethod::Post => req,
            TokenMethod::Get => as_get(req),
        };
        Box::pin(async move { send_token_request(&http, req).await })
    }
}

/// The token request as a GET: the form body's parameters moved into the query string.
fn as_get(req: oauth2::HttpRequest) -> oauth2::HttpRequest {
    let (mut parts, body) = req.into_parts();
    let mut url = match url::Url::parse(&parts.uri.to_string()) {
        Ok(u) => u,
        Err(_) => return oauth2::HttpRequest::from_parts(parts, body),
    };
    url.query_pairs_mut()
        .extend_pairs(url::form_urlencoded::parse(&body).into_owned());
    parts.method = oauth2::http::Method::GET;
    parts.headers.remove(oauth2::http::header::CONTENT_TYPE);
    if let Ok(uri) = url.as_str().parse() {
        parts.uri = uri;
    }
    oauth2::HttpRequest::from_parts(parts, Vec::new())
}

/// The token endpoint refused: why, classified. `invalid_grant` means consent is gone.
pub(crate) fn token_error<RE: std::error::Error + 'static>(
    e: RequestTokenError<RE, oauth2::basic::BasicErrorResponse>,
) -> ProviderError {
    match e {
        RequestTokenError::ServerResponse(r) => {
            let what = match r.error_description() {
                Some(d) => format!("{}: {d}", r.error()),
                None => r.error().to_string(),
            };
            match r.error() {
                BasicErrorResponseType::InvalidGrant => reauthorize(&format!(
                    "the provider refused the grant ({what}); connect the integration again"
                )),
                BasicErrorResponseType::InvalidClient
                | BasicErrorResponseType::UnauthorizedClient => ProviderError::new(
                    ErrorClass::Auth,
                    format!(
                        "the token endpoint refused the client ({what}): check client_id and client_secret"
                    ),
                ),
                _ => ProviderError::new(
                    ErrorClass::Permanent,
                    format!("the token endpoint refused: {what}"),
                ),
            }
        }
        RequestTokenError::Request(e) => ProviderError::new(
            ErrorClass::Transient,
            format!("the token endpoint could not be reached: {e}"),
        ),
        RequestTokenError::Parse(e, _) => ProviderError::new(
            ErrorClass::Transient,
            format!("the token endpoint's answer is not a token response: {e}"),
        ),
        RequestTokenError::Other(e) => ProviderError::new(
            ErrorClass::Transient,
            format!("the token endpoint failed: {e}"),
        ),
    }
}

fn reauthorize(message: &str) -> ProviderError {
    let mut e = ProviderError::new(ErrorClass::Auth, message);
    e.reauthorize = true;
    e
}

fn store_error(e: impl std::fmt::Display) -> ProviderError {
    ProviderError::new(
        ErrorClass::Transient,
        format!("the integration's tokens could not be read or written: {e}"),
    )
}

/// The `oauth2` crate's HTTP calls, through the connectors' own client (no redirects,
/// timeouts).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TokenHttpError(String);

pub(crate) async fn send_token_request(
    http: &reqwest::Client,
    req: oauth2::HttpRequest,
) -> Result<oauth2::HttpResponse, TokenHttpError> {
    let (parts, body) = req.into_parts();
    let mut rb = http
        .request(parts.method, parts.uri.to_string())
        .timeout(crate::egress::policy().call_timeout(Duration::from_secs(30)))
        .body(body);
    for (k, v) in &parts.headers {
        rb = rb.header(k, v);
    }
    let resp = rb
        .send()
        .await
        .map_err(|e| TokenHttpError(crate::rest::source_chain(&e)))?;
    let mut out = oauth2::http::Response::builder().status(resp.status().as_u16());
    for (k, v) in resp.headers() {
        out = out.header(k.as_str(), v.as_bytes());
    }
    let ok = resp.status().is_success();
    let body = resp
        .bytes()
        .await
        .map_err(|e| TokenHttpError(e.to_string()))?;
    let body = if ok { lenient(&body) } else { body.to_vec() };
    out.body(body).map_err(|e| TokenHttpError(e.to_string()))
}

/// A token answer as RFC 6749 §5.1 has it, from providers that stray: M-Pesa Daraja's
/// `GET /oauth/v1/generate` answers `{"access_token": "…", "expires_in": "3599"}`, with no
/// `token_type` and the lifetime as a string. Other answers pass unchanged.
fn lenient(body: &[u8]) -> Vec<u8> {
    let Ok(serde_json::Value::Object(mut m)) = serde_json::from_slice(body) else {
        return body.to_vec();
    };
    if !m.contains_key("access_token") {
        return body.to_vec();
    }
    m.entry("token_type").or_insert_with(|| "bearer".into());
    if let Some(n) = m
        .get("expires_in")
        .and_then(serde_json::Value::as_str)
        .and_then(|s| s.trim().parse::<u64>().ok())
    {
        m.insert("expires_in".into(), n.into());
    }
    serde_json::to_vec(&m).unwrap_or_else(|_| body.to_vec())
}

/// A token store that holds nothing: for checking an integration's settings before it
/// exists (no token is read or written).
pub struct NoTokens;

#[async_trait]
impl TokenVault for NoTokens {
    async fn load(&self) -> Result<Option<TokenSet>, String> {
        Ok(None)
    }
    async fn lock(&self) -> Result<Box<dyn LockedTokens>, String> {
        Err("this integration is not stored yet".into())
    }
    async fn reauthorization_required(&self, _message: &str) {}
}

/// A consent flow's start: where to send the user, the `state` to expect back and the PKCE
/// verifier to keep (secret) for the code exchange.
pub struct ConsentStart {
    pub url: url::Url,
    pub state: SecretString,
    pub verifier: SecretString,
}

/// The consent URL for an authorization code grant with PKCE (S256).
pub fn consent(
    settings: &OAuthSettings,
    credentials: &Credentials,
    redirect_uri: &str,
) -> Result<ConsentStart, ConfigError> {
    let authorize = settings.authorize_url.clone().ok_or_else(|| {
        ConfigError::new(
            "settings.auth.authorize_url",
            "connecting needs the provider's consent page",
        )
    })?;
    let client_id = credentials
        .get("client_id")
        .map(|s| s.expose_secret().to_owned())
        .ok_or_else(|| ConfigError::new("credentials.client_id", "required to connect"))?;
    let redirect = oauth2::RedirectUrl::new(redirect_uri.to_owned())
        .map_err(|e| ConfigError::new("redirect_uri", e.to_string()))?;
    let client = BasicClient::new(ClientId::new(client_id))
        .set_auth_uri(oauth2::AuthUrl::from_url(authorize))
        .set_redirect_uri(redirect);
    let (challenge, verifier) = oauth2::PkceCodeChallenge::new_random_sha256();
    let (url, state) = client
        .authorize_url(oauth2::CsrfToken::new_random)
        .add_scopes(settings.scopes.iter().map(|s| Scope::new(s.clone())))
        .set_pkce_challenge(challenge)
        .url();
    Ok(ConsentStart {
        url,
        state: SecretString::from(state.secret().clone()),
        verifier: SecretString::from(verifier.secret().clone()),
    })
}

/// Exchange the authorization code the provider sent back, with the flow's PKCE verifier.
pub async fn exchange_code(
    settings: &OAuthSettings,
    credentials: &Credentials,
    http: &reqwest::Client,
    code: &str,
    verifier: &str,
    redirect_uri: &str,
) -> Result<TokenSet, ProviderError> {
    let oauth = OAuth::new(
        settings.clone(),
        credentials,
        http.clone(),
        Arc::new(NoTokens),
    )
    .map_err(|e| ProviderError::new(ErrorClass::Permanent, e.to_string()))?;
    let redirect = oauth2::RedirectUrl::new(redirect_uri.to_owned())
        .map_err(|e| ProviderError::new(ErrorClass::Permanent, e.to_string()))?;
    let client = oauth.client()?.set_redirect_uri(redirect);
    let http_fn = token_http(http, settings.token_method);
    let got = client
        .exchange_code(oauth2::AuthorizationCode::new(code.to_owned()))
        .set_pkce_verifier(oauth2::PkceCodeVerifier::new(verifier.to_owned()))
        .request_async(&http_fn)
        .await
        .map(|r| TokenSet::from_response(&r, None))
        .map_err(token_error);
    crate::metrics::token_request(
        "authorization_code",
        match &got {
            Ok(_) => "ok",
            Err(e) if e.reauthorize => "refused",
            Err(_) => "failed",
        },
    );
    got
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use wiremock::matchers::{body_string, method, path, query_param};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    /// One process's token store, in memory.
    #[derive(Default)]
    struct Memory(std::sync::Mutex<Option<TokenSet>>);

    struct MemoryLock(Arc<Memory>, Option<TokenSet>);

    #[async_trait]
    impl TokenVault for Arc<Memory> {
        async fn load(&self) -> Result<Option<TokenSet>, String> {
            Ok(self.0.lock().unwrap().clone())
        }
        async fn lock(&self) -> Result<Box<dyn LockedTokens>, String> {
            let current = self.0.lock().unwrap().clone();
            Ok(Box::new(MemoryLock(self.clone(), current)))
        }
        async fn reauthorization_required(&self, _message: &str) {}
    }

    #[async_trait]
    impl LockedTokens for MemoryLock {
        fn current(&self) -> Option<TokenSet> {
            self.1.clone()
        }
        async fn save(self: Box<Self>, tokens: &TokenSet) -> Result<(), String> {
            *self.0.0.lock().unwrap() = Some(tokens.clone());
            Ok(())
        }
        async fn release(self: Box<Self>) {}
    }

    /// Moloni's password grant is a GET with the parameters in the query string
    /// (`GET /v1/grant/?grant_type=password&client_id=…&client_secret=…&username=…&password=…`,
    /// as its public API clients call it); its API then takes `?access_token=` and form bodies.
    #[tokio::test]
    async fn a_password_grant_by_get_and_the_token_in_the_query() {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path("/v1/grant/"))
            .and(query_param("grant_type", "password"))
            .and(query_param("client_id", "dev"))
            .and(query_param("client_secret", "sec"))
            .and(query_param("username", "ana@example.pt"))
            .and(query_param("password", "pw"))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                "access_token": "mol-at", "expires_in": 3600, "token_type": "bearer",
                "scope": null, "refresh_token": "mol-rt"})))
            .expect(1)
            .mount(&server)
            .await;
        Mock::given(method("POST"))
            .and(path("/v1/customers/insert/"))
            .and(query_param("access_token", "mol-at"))
            .and(body_string("company_id=5&name=Ana&vat=PT123"))
            .respond_with(
                ResponseTemplate::new(200).set_body_json(json!({"valid": 1, "customer_id": 4242})),
            )
            .expect(1)
            .mount(&server)
            .await;
        let manifest = json!({
            "base_url": format!("{}/v1", server.uri()),
            "auth": {"type": "oauth2", "grant": "password", "client_auth": "post",
                     "token_method": "get", "token_in": {"query": "access_token"},
                     "token_url": format!("{}/v1/grant/", server.uri())},
            "body_encoding": "form", "idempotency_header": null,
            "entities": {"customer": {
                "create": {"method": "POST", "path": "/customers/insert/"},
                "body": {"company_id": {"value": 5}, "name": "/name", "vat": "/vat"},
                "id_pointer": "/customer_id"}}
        });
        let creds = Credentials::from_json(&json!({"client_id": "dev", "client_secret": "sec",
            "username": "ana@example.pt", "password": "pw"}))
        .unwrap();
        let c = crate::rest::RestConnector::new(
            crate::rest::Manifest::parse(&manifest).unwrap(),
            creds,
            crate::http_client(),
            Some(Arc::new(Arc::new(Memory::default()))),
        )
        .unwrap();
        use crate::Connector;
        let out = c
            .execute(crate::Operation::Create {
                entity: "customer",
                internal_id: "c-1",
                payload: &json!({"name": "Ana", "vat": "PT123"}),
                idempotency_key: "k",
            })
            .await
            .unwrap();
        assert_eq!(out.external_id.as_deref(), Some("4242"));
        assert!(
            !out.request.contains("mol-at"),
            "no token in the recorded request: {}",
            out.request
        );
        server.verify().await;
    }
}
