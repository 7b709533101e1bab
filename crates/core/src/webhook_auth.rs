//! How an integration's webhooks prove who sent them, verified over the raw body bytes with
//! constant-time comparisons. The stored policy holds no secret that could be replayed: API
//! keys and passwords as SHA-256 digests; HMAC secrets live in the vault and are passed in.
//!
//! | scheme | headers | signed content |
//! |---|---|---|
//! | `standard_webhooks` | `webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<b64> …` | `{id}.{timestamp}.{body}`, key = base64 of a `whsec_` secret |
//! | `stripe` | `Stripe-Signature: t=…,v1=<hex>,…` | `{t}.{body}` |
//! | `shopify` | `X-Shopify-Hmac-Sha256: <b64>` | body |
//! | `woocommerce` | `X-WC-Webhook-Signature: <b64>` | body |
//! | `github` | `X-Hub-Signature-256: sha256=<hex>` | body |
//! | `hmac` | configurable | body, or `{timestamp}.{body}` |
//! | `api_key` | `X-API-Key` | — |
//! | `basic` | `Authorization: Basic …` | — |
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Sha256, Sha512};
use subtle::ConstantTimeEq;

/// Everything about receiving an integration's webhooks, as stored in
/// `integrations.webhook_auth`: the scheme, and who may send and how much.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookPolicy {
    #[serde(flatten)]
    pub auth: WebhookAuth,
    /// Senders' addresses allowed (CIDR); empty: any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_cidrs: Vec<ipnet::IpNet>,
    /// Largest body accepted, below the service-wide limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_body_bytes: Option<usize>,
    /// Hex SHA-256 of the verify token a subscription challenge must carry (Meta's WhatsApp
    /// Cloud API: `GET …?hub.mode=subscribe&hub.verify_token=…&hub.challenge=…` is answered
    /// with the challenge when the token matches). Empty: no challenge is answered.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub verify_token_sha256: Vec<String>,
}

impl WebhookPolicy {
    pub fn new(auth: WebhookAuth) -> WebhookPolicy {
        WebhookPolicy {
            auth,
            allowed_cidrs: Vec::new(),
            max_body_bytes: None,
            verify_token_sha256: Vec::new(),
        }
    }

    /// Whether a subscription challenge's verify token is this integration's (constant
    /// time; false when it has none).
    pub fn verify_token_matches(&self, token: &str) -> bool {
        !self.verify_token_sha256.is_empty() && digest_matches(token, &self.verify_token_sha256)
    }

    /// Check a policy and its signing secrets before they are stored: `(field, reason)`.
    /// Bounds what any tenant may ask for: no empty secret or key, a clock tolerance of at
    /// most an hour, and no unauthenticated webhooks open to every address.
    pub fn validate(&self, secrets: &[String]) -> Result<(), (String, String)> {
        let bad = |f: &str, why: &str| Err((f.to_owned(), why.to_owned()));
        let empty = crate::ids::secret_digest("");
        let digests = |f: &str, list: &[String]| {
            if list.is_empty() {
                return bad(f, "names no key; at least one is needed");
            }
            for d in list {
                if d.len() != 64 || !d.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return bad(f, "each must be the hex SHA-256 of a key (64 characters)");
                }
                if d.eq_ignore_ascii_case(&empty) {
                    return bad(
                        f,
                        "holds the SHA-256 of an empty key, which any request would match",
                    );
                }
            }
            Ok(())
        };
        match &self.auth {
            WebhookAuth::None if self.allowed_cidrs.is_empty() => {
                return bad(
                    "webhook_auth",
                    "`none` lets anyone who knows the URL send: name the senders' networks in allowed_cidrs (--allow-ip), or use a signing scheme",
                );
            }
            WebhookAuth::ApiKey {
                header: Some(h), ..
            } if axum_header_name_invalid(h) => {
                return bad(
                    "webhook_auth.header",
                    "is not an HTTP header name (letters, digits and -)",
                );
            }
            WebhookAuth::ApiKey { key_sha256, .. } | WebhookAuth::QueryKey { key_sha256 } => {
                digests("webhook_auth.key_sha256", key_sha256)?
            }
            WebhookAuth::Basic {
                username,
                password_sha256,
            } => {
                if username.trim().is_empty() {
                    return bad("webhook_auth.username", "is empty");
                }
                digests("webhook_auth.password_sha256", password_sha256)?;
            }
            WebhookAuth::StandardWebhooks { tolerance_secs }
            | WebhookAuth::Stripe { tolerance_secs }
            | WebhookAuth::Hmac(GenericHmac { tolerance_secs, .. })
                if !(1..=MAX_TOLERANCE_SECS).contains(tolerance_secs) =>
            {
                return bad(
                    "webhook_auth.tolerance_secs",
                    "must be between 1 and 3600 (an hour): a longer window lets an old delivery be replayed",
                );
            }
            WebhookAuth::Hmac(h) if h.header.trim().is_empty() => {
                return bad("webhook_auth.header", "is empty");
            }
            _ => {}
        }
        if self.max_body_bytes == Some(0) {
            return bad("webhook_auth.max_body_bytes", "must be at least 1");
        }
        if !self.auth.needs_secrets() {
            return Ok(());
        }
        if secrets.is_empty() {
            return bad(
                "webhook_secrets",
                "this scheme signs with secrets: give the sender's",
            );
        }
        for secret in secrets {
            if secret.trim().is_empty() {
                return bad("webhook_secrets", "holds an empty secret");
            }
            if secret.len() > 4096 {
                return bad("webhook_secrets", "holds a secret longer than 4096 bytes");
            }
            if matches!(self.auth, WebhookAuth::StandardWebhooks { .. })
                && standard_webhooks_key(secret.as_bytes()).is_none_or(|k| k.is_empty())
            {
                return bad(
                    "webhook_secrets",
                    "a Standard Webhooks secret is `whsec_` and the key in base64",
                );
            }
        }
        Ok(())
    }

    /// Whether a sender at `ip` may send.
    pub fn allows(&self, ip: std::net::IpAddr) -> bool {
        // An IPv4 sender may arrive as an IPv4-mapped IPv6 address.
        let ip = match ip {
            std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, std::net::IpAddr::V4),
            v4 => v4,
        };
        self.allowed_cidrs.is_empty() || self.allowed_cidrs.iter().any(|n| n.contains(&ip))
    }
}

/// A webhook's authentication scheme and its parameters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "scheme", rename_all = "snake_case")]
pub enum WebhookAuth {
    /// The integration receives no webhooks (a target that is only called): every request
    /// is refused. The default for integrations that are not webhook senders.
    Disabled,
    /// Anyone who knows the URL may send. Only for trusted networks.
    None,
    /// `X-API-Key: <key>` (or the header `header` names: Flutterwave's `verif-hash`); several
    /// keys may be active at once.
    ApiKey {
        /// Hex SHA-256 of each accepted key.
        key_sha256: Vec<String>,
        /// The header that carries the key (default `X-API-Key`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        header: Option<String>,
    },
    /// `?key=<key>` in the URL's query string, for senders that can set no header (M-Pesa
    /// Daraja's `CallBackURL`); several keys may be active at once. Prefer `api_key` when
    /// the sender can set a header: URLs are kept in more places than headers.
    QueryKey {
        /// Hex SHA-256 of each accepted key.
        key_sha256: Vec<String>,
    },
    /// HTTP Basic.
    Basic {
        username: String,
        /// Hex SHA-256 of each accepted password.
        password_sha256: Vec<String>,
    },
    /// <https://www.standardwebhooks.com>: `whsec_` secrets.
    StandardWebhooks {
        #[serde(default = "default_tolerance")]
        tolerance_secs: i64,
    },
    Stripe {
        #[serde(default = "default_tolerance")]
        tolerance_secs: i64,
    },
    Shopify,
    Woocommerce,
    Github,
    /// Click's SHOP API: `sign_string`, the MD5 (hex) of `click_trans_id` `service_id`
    /// secret `merchant_trans_id` [`merchant_prepare_id`, on Complete] `amount` `action`
    /// `sign_time`, read from the form body (docs.click.uz › Click API: Prepare and
    /// Complete). The secret is the service's SECRET_KEY.
    Click,
    /// For senders not listed: HMAC over the body (or `{timestamp}.{body}`).
    Hmac(GenericHmac),
}

fn default_tolerance() -> i64 {
    300
}

/// The longest clock skew (and so replay window) a signed scheme may be given.
pub const MAX_TOLERANCE_SECS: i64 = 3600;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Algorithm {
    Sha256,
    Sha512,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Encoding {
    Hex,
    Base64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GenericHmac {
    /// The header carrying the signature.
    pub header: String,
    pub algorithm: Algorithm,
    pub encoding: Encoding,
    /// Text before the signature in the header, e.g. `sha256=`.
    #[serde(default)]
    pub prefix: String,
    /// When set, the content signed is `{timestamp}.{body}` with the timestamp (Unix
    /// seconds) from this header, and stale timestamps are refused.
    #[serde(default)]
    pub timestamp_header: Option<String>,
    #[serde(default = "default_tolerance")]
    pub tolerance_secs: i64,
    /// The header carrying the sender's delivery id, used as the event id.
    #[serde(default)]
    pub id_header: Option<String>,
}

/// Why a webhook was refused. `code()` is stable (metrics, the JSON error).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthFailure {
    #[error("the {0} header is missing")]
    Missing(&'static str),
    #[error("the {0} header is malformed: {1}")]
    Malformed(&'static str, &'static str),
    #[error("the signature does not match any active secret of this integration")]
    BadSignature,
    #[error("the credentials do not match this integration's")]
    BadCredentials,
    #[error(
        "the `key` query parameter is missing (this integration's callback URL is …/v1/webhooks/<id>?key=<its webhook key>)"
    )]
    MissingQueryKey,
    #[error("the {0} header is missing")]
    MissingHeader(String),
    #[error("the timestamp is {0} s away from now, more than the {1} s allowed (a replay?)")]
    Stale(i64, i64),
    #[error("this integration's signing secrets are not available")]
    NoSecrets,
    #[error(
        "this integration does not receive webhooks (its webhook authentication is `disabled`)"
    )]
    Disabled,
}

impl AuthFailure {
    pub fn code(&self) -> &'static str {
        match self {
            AuthFailure::Missing("X-API-Key" | "Authorization")
            | AuthFailure::MissingQueryKey
            | AuthFailure::MissingHeader(_) => "missing_credentials",
            AuthFailure::Missing(_) => "missing_signature",
            AuthFailure::Malformed(..) => "malformed_signature",
            AuthFailure::BadSignature => "invalid_signature",
            AuthFailure::BadCredentials => "invalid_credentials",
            AuthFailure::Stale(..) => "stale_timestamp",
            AuthFailure::NoSecrets => "not_configured",
            AuthFailure::Disabled => "webhooks_disabled",
        }
    }
}

/// What a verified webhook tells about itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Verified {
    /// The sender's delivery id, when the scheme has one: the event id for deduplication.
    pub delivery_id: Option<String>,
    /// For schemes that sign the body but no time (Shopify, WooCommerce, GitHub, an HMAC
    /// without timestamp): a digest of the signed content, the event id instead of the
    /// delivery id, so a captured delivery replayed under a new delivery id is a duplicate.
    pub content_id: Option<String>,
}

/// Whether `h` cannot be an HTTP header name.
fn axum_header_name_invalid(h: &str) -> bool {
    h.is_empty()
        || !h
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A request's header by its lower-case name; `?name` reads the URL's query parameter.
type Header<'a> = &'a dyn Fn(&str) -> Option<String>;

impl WebhookAuth {
    /// An API-key scheme accepting `keys`.
    pub fn api_keys<'a>(keys: impl IntoIterator<Item = &'a str>) -> WebhookAuth {
        WebhookAuth::ApiKey {
            key_sha256: keys.into_iter().map(crate::ids::secret_digest).collect(),
            header: None,
        }
    }

    /// Whether the scheme signs with secrets kept in the vault.
    pub fn needs_secrets(&self) -> bool {
        matches!(
            self,
            WebhookAuth::StandardWebhooks { .. }
                | WebhookAuth::Stripe { .. }
                | WebhookAuth::Shopify
                | WebhookAuth::Woocommerce
                | WebhookAuth::Github
                | WebhookAuth::Click
                | WebhookAuth::Hmac(_)
        )
    }

    /// Check one request. `secrets` are the integration's active signing secrets (several
    /// during a rotation); `now` is Unix seconds.
    pub fn verify(
        &self,
        header: Header<'_>,
        body: &[u8],
        secrets: &[Vec<u8>],
        now: i64,
    ) -> Result<Verified, AuthFailure> {
        if self.needs_secrets() && secrets.is_empty() {
            return Err(AuthFailure::NoSecrets);
        }
        match self {
            WebhookAuth::Disabled => Err(AuthFailure::Disabled),
            WebhookAuth::None => Ok(Verified::default()),
            WebhookAuth::ApiKey {
                key_sha256,
                header: name,
            } => {
                let given = match name {
                    Some(n) => header(&n.to_ascii_lowercase())
                        .ok_or(AuthFailure::MissingHeader(n.clone()))?,
                    None => header("x-api-key").ok_or(AuthFailure::Missing("X-API-Key"))?,
                };
                digest_matches(given.trim(), key_sha256)
                    .then(Verified::default)
                    .ok_or(AuthFailure::BadCredentials)
            }
            WebhookAuth::QueryKey { key_sha256 } => {
                let given = header("?key").ok_or(AuthFailure::MissingQueryKey)?;
                digest_matches(given.trim(), key_sha256)
                    .then(Verified::default)
                    .ok_or(AuthFailure::BadCredentials)
            }
            WebhookAuth::Basic {
                username,
                password_sha256,
            } => {
                let given = header("authorization").ok_or(AuthFailure::Missing("Authorization"))?;
                let b64 = given.strip_prefix("Basic ").ok_or(AuthFailure::Malformed(
                    "Authorization",
                    "expected `Basic <base64>`",
                ))?;
                let decoded = B64
                    .decode(b64.trim())
                    .ok()
                    .and_then(|d| String::from_utf8(d).ok())
                    .ok_or(AuthFailure::Malformed(
                        "Authorization",
                        "not base64 of user:password",
                    ))?;
                let (user, pass) = decoded.split_once(':').ok_or(AuthFailure::Malformed(
                    "Authorization",
                    "not base64 of user:password",
                ))?;
                let user_ok: bool = user.as_bytes().ct_eq(username.as_bytes()).into();
                (digest_matches(pass, password_sha256) & user_ok)
                    .then(Verified::default)
                    .ok_or(AuthFailure::BadCredentials)
            }
            WebhookAuth::StandardWebhooks { tolerance_secs } => {
                standard_webhooks(header, body, secrets, now, *tolerance_secs)
            }
            WebhookAuth::Stripe { tolerance_secs } => {
                stripe(header, body, secrets, now, *tolerance_secs)
            }
            WebhookAuth::Shopify => body_hmac_base64(
                header,
                body,
                secrets,
                ("x-shopify-hmac-sha256", "X-Shopify-Hmac-Sha256"),
                "x-shopify-webhook-id",
            ),
            WebhookAuth::Woocommerce => body_hmac_base64(
                header,
                body,
                secrets,
                ("x-wc-webhook-signature", "X-WC-Webhook-Signature"),
                "x-wc-webhook-delivery-id",
            ),
            WebhookAuth::Github => {
                let sig = required(header, "x-hub-signature-256", "X-Hub-Signature-256")?;
                let hex_sig = sig.strip_prefix("sha256=").ok_or(AuthFailure::Malformed(
                    "X-Hub-Signature-256",
                    "expected `sha256=<hex>`",
                ))?;
                let given = hex::decode(hex_sig)
                    .map_err(|_| AuthFailure::Malformed("X-Hub-Signature-256", "not hex"))?;
                any_secret(secrets, |s| {
                    ct_eq(&mac(Algorithm::Sha256, s, &[body]), &given)
                })?;
                Ok(Verified {
                    delivery_id: header("x-github-delivery"),
                    content_id: Some(crate::ids::content_event_id(body)),
                })
            }
            WebhookAuth::Click => click(body, secrets),
            WebhookAuth::Hmac(g) => generic(g, header, body, secrets, now),
        }
    }
}

/// Click's `sign_string` over the form's fields; the delivery is the Click transaction and
/// its action (Prepare and Complete are two events).
fn click(body: &[u8], secrets: &[Vec<u8>]) -> Result<Verified, AuthFailure> {
    use md5::Digest as _;
    let fields: std::collections::HashMap<String, String> =
        form_urlencoded::parse(body).into_owned().collect();
    let get = |k: &str| fields.get(k).map(String::as_str).unwrap_or_default();
    let given = get("sign_string").trim().to_ascii_lowercase();
    if given.is_empty() {
        return Err(AuthFailure::Missing("sign_string"));
    }
    let action = get("action");
    let prepare = if action == "1" {
        get("merchant_prepare_id")
    } else {
        ""
    };
    any_secret(secrets, |s| {
        let mut h = md5::Md5::new();
        for part in [
            get("click_trans_id").as_bytes(),
            get("service_id").as_bytes(),
            s,
            get("merchant_trans_id").as_bytes(),
            prepare.as_bytes(),
            get("amount").as_bytes(),
            action.as_bytes(),
            get("sign_time").as_bytes(),
        ] {
            h.update(part);
        }
        ct_eq(hex::encode(h.finalize()).as_bytes(), given.as_bytes())
    })?;
    Ok(Verified {
        delivery_id: Some(format!("click:{}:{action}", get("click_trans_id"))),
        content_id: None,
    })
}

/// Shopify's and WooCommerce's scheme: the base64 HMAC-SHA256 of the body in one header
/// (lower-case name, name as shown), the delivery id in another.
fn body_hmac_base64(
    header: Header<'_>,
    body: &[u8],
    secrets: &[Vec<u8>],
    (name, shown): (&str, &'static str),
    id_header: &str,
) -> Result<Verified, AuthFailure> {
    let given = decode_b64(&required(header, name, shown)?, shown)?;
    any_secret(secrets, |s| {
        ct_eq(&mac(Algorithm::Sha256, s, &[body]), &given)
    })?;
    Ok(Verified {
        delivery_id: header(id_header),
        content_id: Some(crate::ids::content_event_id(body)),
    })
}

fn digest_matches(given: &str, digests: &[String]) -> bool {
    let digest = crate::ids::secret_digest(given);
    // Compare with every digest, without stopping at the first match.
    let mut ok = subtle::Choice::from(0u8);
    for expected in digests {
        ok |= digest.as_bytes().ct_eq(expected.as_bytes());
    }
    ok.into()
}

fn required(header: Header<'_>, name: &str, shown: &'static str) -> Result<String, AuthFailure> {
    header(name)
        .filter(|v| !v.trim().is_empty())
        .ok_or(AuthFailure::Missing(shown))
}

fn decode_b64(v: &str, shown: &'static str) -> Result<Vec<u8>, AuthFailure> {
    B64.decode(v.trim())
        .map_err(|_| AuthFailure::Malformed(shown, "not base64"))
}

fn mac(alg: Algorithm, key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    fn run<M: Mac + hmac::digest::KeyInit>(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
        let mut m = <M as Mac>::new_from_slice(key).expect("HMAC takes any key length");
        for p in parts {
            m.update(p);
        }
        m.finalize().into_bytes().to_vec()
    }
    match alg {
        Algorithm::Sha256 => run::<Hmac<Sha256>>(key, parts),
        Algorithm::Sha512 => run::<Hmac<Sha512>>(key, parts),
    }
}

fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    a.ct_eq(b).into()
}

/// Ok if any secret satisfies `check` (every secret is tried: no early exit on a match).
fn any_secret(secrets: &[Vec<u8>], check: impl Fn(&[u8]) -> bool) -> Result<(), AuthFailure> {
    let mut ok = false;
    for s in secrets {
        ok |= check(s);
    }
    if ok {
        Ok(())
    } else {
        Err(AuthFailure::BadSignature)
    }
}

fn fresh(ts: i64, now: i64, tolerance: i64) -> Result<(), AuthFailure> {
    // Any two i64 differ by at most u64::MAX: no overflow, whatever a sender writes.
    let skew = i64::try_from(now.abs_diff(ts)).unwrap_or(i64::MAX);
    if skew > tolerance {
        Err(AuthFailure::Stale(skew, tolerance))
    } else {
        Ok(())
    }
}

/// A Standard Webhooks secret: `whsec_` and the base64 of the key (or the base64 alone).
pub fn standard_webhooks_key(secret: &[u8]) -> Option<Vec<u8>> {
    let s = std::str::from_utf8(secret).ok()?;
    B64.decode(s.strip_prefix("whsec_").unwrap_or(s)).ok()
}

/// Sign as a Standard Webhooks sender does: the `webhook-signature` value (`v1,<base64>`)
/// for message `id` sent at `timestamp` (Unix seconds) with `body`, under the key of a
/// `whsec_` secret.
pub fn standard_webhooks_signature(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("v1,{}", B64.encode(mac.finalize().into_bytes()))
}

fn standard_webhooks(
    header: Header<'_>,
    body: &[u8],
    secrets: &[Vec<u8>],
    now: i64,
    tolerance: i64,
) -> Result<Verified, AuthFailure> {
    let id = required(header, "webhook-id", "webhook-id")?;
    let ts_text = required(header, "webhook-timestamp", "webhook-timestamp")?;
    let sigs = required(header, "webhook-signature", "webhook-signature")?;
    let ts: i64 = ts_text
        .trim()
        .parse()
        .map_err(|_| AuthFailure::Malformed("webhook-timestamp", "not Unix seconds"))?;
    fresh(ts, now, tolerance)?;
    let mut given = Vec::new();
    for part in sigs.split(' ').filter(|p| !p.is_empty()) {
        let (version, sig) = part.split_once(',').ok_or(AuthFailure::Malformed(
            "webhook-signature",
            "expected `v1,<base64>`",
        ))?;
        if version == "v1" {
            given.push(decode_b64(sig, "webhook-signature")?);
        }
    }
    if given.is_empty() {
        return Err(AuthFailure::Malformed(
            "webhook-signature",
            "no v1 signature",
        ));
    }
    let keys: Vec<Vec<u8>> = secrets
        .iter()
        .filter_map(|s| standard_webhooks_key(s))
        .collect();
    if keys.is_empty() {
        return Err(AuthFailure::NoSecrets);
    }
    any_secret(&keys, |k| {
        let expected = mac(
            Algorithm::Sha256,
            k,
            &[id.as_bytes(), b".", ts_text.trim().as_bytes(), b".", body],
        );
        given.iter().fold(false, |acc, g| acc | ct_eq(&expected, g))
    })?;
    Ok(Verified {
        content_id: None,
        delivery_id: Some(id),
    })
}

fn stripe(
    header: Header<'_>,
    body: &[u8],
    secrets: &[Vec<u8>],
    now: i64,
    tolerance: i64,
) -> Result<Verified, AuthFailure> {
    let h = required(header, "stripe-signature", "Stripe-Signature")?;
    let mut ts = None;
    let mut given = Vec::new();
    for item in h.split(',') {
        let (k, v) = item.trim().split_once('=').ok_or(AuthFailure::Malformed(
            "Stripe-Signature",
            "expected `t=…,v1=…`",
        ))?;
        match k {
            "t" => ts = Some(v.to_owned()),
            "v1" => given.push(
                hex::decode(v)
                    .map_err(|_| AuthFailure::Malformed("Stripe-Signature", "v1 is not hex"))?,
            ),
            _ => {}
        }
    }
    let ts_text = ts.ok_or(AuthFailure::Malformed(
        "Stripe-Signature",
        "no timestamp (t=)",
    ))?;
    let t: i64 = ts_text
        .parse()
        .map_err(|_| AuthFailure::Malformed("Stripe-Signature", "t is not Unix seconds"))?;
    if given.is_empty() {
        return Err(AuthFailure::Malformed(
            "Stripe-Signature",
            "no v1 signature",
        ));
    }
    fresh(t, now, tolerance)?;
    any_secret(secrets, |s| {
        let expected = mac(Algorithm::Sha256, s, &[ts_text.as_bytes(), b".", body]);
        given.iter().fold(false, |acc, g| acc | ct_eq(&expected, g))
    })?;
    // Stripe's event id is in the body.
    let delivery_id = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("id").and_then(|i| i.as_str().map(str::to_owned)));
    Ok(Verified {
        delivery_id,
        content_id: None,
    })
}

fn generic(
    g: &GenericHmac,
    header: Header<'_>,
    body: &[u8],
    secrets: &[Vec<u8>],
    now: i64,
) -> Result<Verified, AuthFailure> {
    let name = g.header.to_ascii_lowercase();
    let raw = header(&name).ok_or(AuthFailure::Missing("signature"))?;
    let sig = raw
        .trim()
        .strip_prefix(g.prefix.as_str())
        .ok_or(AuthFailure::Malformed(
            "signature",
            "does not start with the configured prefix",
        ))?;
    let given = match g.encoding {
        Encoding::Hex => {
            hex::decode(sig).map_err(|_| AuthFailure::Malformed("signature", "not hex"))?
        }
        Encoding::Base64 => decode_b64(sig, "signature")?,
    };
    let ts = match &g.timestamp_header {
        None => None,
        Some(h) => {
            let t = header(&h.to_ascii_lowercase()).ok_or(AuthFailure::Missing("timestamp"))?;
            let n: i64 = t
                .trim()
                .parse()
                .map_err(|_| AuthFailure::Malformed("timestamp", "not Unix seconds"))?;
            fresh(n, now, g.tolerance_secs)?;
            Some(t.trim().to_owned())
        }
    };
    any_secret(secrets, |s| {
        let expected = match &ts {
            Some(t) => mac(g.algorithm, s, &[t.as_bytes(), b".", body]),
            None => mac(g.algorithm, s, &[body]),
        };
        ct_eq(&expected, &given)
    })?;
    Ok(Verified {
        delivery_id: g
            .id_header
            .as_ref()
            .and_then(|h| header(&h.to_ascii_lowercase())),
        // Without a signed time, the signed body is all that tells a replay apart.
        content_id: ts.is_none().then(|| crate::ids::content_event_id(body)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
        let owned: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), (*v).to_owned()))
            .collect();
        move |name: &str| {
            owned
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        }
    }

    const SW_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const SW_BODY: &[u8] = br#"{"test": 2432232314}"#;
    const SW_SIG: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    #[test]
    fn clicks_sign_string_is_checked_on_prepare_and_complete() {
        // The expected MD5s were computed independently (`printf %s … | md5sum`).
        let secret = b"xXb8SKqjgZS6Ww".to_vec();
        let none = |_: &str| None;
        let prepare = "click_trans_id=2207357&service_id=18400&click_paydoc_id=1601&merchant_trans_id=ADM-0042&amount=1500.00&action=0&error=0&error_note=Success&sign_time=2019-10-18+14%3A12%3A45&sign_string=4d6862c412c54a3b30cec81479143904";
        let v = WebhookAuth::Click
            .verify(&none, prepare.as_bytes(), std::slice::from_ref(&secret), 0)
            .unwrap();
        assert_eq!(v.delivery_id.as_deref(), Some("click:2207357:0"));
        let complete = "click_trans_id=2207357&service_id=18400&click_paydoc_id=1601&merchant_trans_id=ADM-0042&merchant_prepare_id=1700123456789&amount=1500.00&action=1&error=0&error_note=Success&sign_time=2019-10-18+14%3A12%3A50&sign_string=435c72ae48ab5ccb43c48645e72a2cb0";
        assert!(
            WebhookAuth::Click
                .verify(&none, complete.as_bytes(), std::slice::from_ref(&secret), 0)
                .is_ok()
        );
        // Another amount, or another secret: refused.
        let forged = prepare.replace("amount=1500.00", "amount=1.00");
        assert_eq!(
            WebhookAuth::Click
                .verify(&none, forged.as_bytes(), std::slice::from_ref(&secret), 0)
                .unwrap_err(),
            AuthFailure::BadSignature
        );
        assert!(
            WebhookAuth::Click
                .verify(&none, prepare.as_bytes(), &[b"other".to_vec()], 0)
                .is_err()
        );
    }

    #[test]
    fn a_query_key_is_read_from_the_url_not_from_a_header() {
        let auth = WebhookAuth::QueryKey {
            key_sha256: vec![crate::ids::secret_digest("sy_k")],
        };
        let query = |name: &str| (name == "?key").then(|| "sy_k".to_owned());
        assert!(auth.verify(&query, b"{}", &[], 0).is_ok());
        let wrong = |name: &str| (name == "?key").then(|| "sy_x".to_owned());
        assert_eq!(
            auth.verify(&wrong, b"{}", &[], 0).unwrap_err(),
            AuthFailure::BadCredentials
        );
        // The key as a header is not the key in the URL.
        let header = |name: &str| (name == "key" || name == "x-api-key").then(|| "sy_k".to_owned());
        let missing = auth.verify(&header, b"{}", &[], 0).unwrap_err();
        assert_eq!(missing, AuthFailure::MissingQueryKey);
        assert_eq!(missing.code(), "missing_credentials");
    }

    #[test]
    fn what_we_sign_standard_webhooks_verifies() {
        let key = standard_webhooks_key(SW_SECRET.as_bytes()).unwrap();
        let sig = standard_webhooks_signature(&key, "msg_1", 1_700_000_000, b"{}");
        let header = |name: &str| match name {
            "webhook-id" => Some("msg_1".to_owned()),
            "webhook-timestamp" => Some("1700000000".to_owned()),
            "webhook-signature" => Some(sig.clone()),
            _ => None,
        };
        let auth = WebhookAuth::StandardWebhooks {
            tolerance_secs: 300,
        };
        assert!(
            auth.verify(
                &header,
                b"{}",
                &[SW_SECRET.as_bytes().to_vec()],
                1_700_000_010
            )
            .is_ok()
        );
        assert!(
            auth.verify(
                &header,
                b"{ }",
                &[SW_SECRET.as_bytes().to_vec()],
                1_700_000_010
            )
            .is_err()
        );
    }

    #[test]
    fn standard_webhooks_reference_vector_and_failures() {
        let auth = WebhookAuth::StandardWebhooks {
            tolerance_secs: 300,
        };
        let secrets = vec![SW_SECRET.as_bytes().to_vec()];
        let h = |sig: &str, ts: &str| {
            headers(&[
                ("webhook-id", "msg_p5jXN8AQM9LWM0D4loKWxJek"),
                ("webhook-timestamp", ts),
                ("webhook-signature", sig),
            ])
        };
        let ok = auth
            .verify(&h(SW_SIG, "1614265330"), SW_BODY, &secrets, 1_614_265_330)
            .unwrap();
        assert_eq!(
            ok.delivery_id.as_deref(),
            Some("msg_p5jXN8AQM9LWM0D4loKWxJek")
        );
        // Several signatures (rotation): any valid one passes.
        let both = format!("v1,AAAA {SW_SIG}");
        assert!(
            auth.verify(&h(&both, "1614265330"), SW_BODY, &secrets, 1_614_265_330)
                .is_ok()
        );
        let e = |r: Result<Verified, AuthFailure>| r.unwrap_err().code();
        assert_eq!(
            e(auth.verify(
                &h(SW_SIG, "1614265330"),
                b"{\"test\": 1}",
                &secrets,
                1_614_265_330
            )),
            "invalid_signature"
        );
        assert_eq!(
            e(auth.verify(
                &h(SW_SIG, "1614265330"),
                SW_BODY,
                &[b"whsec_c2VjcmV0".to_vec()],
                1_614_265_330
            )),
            "invalid_signature"
        );
        assert_eq!(
            e(auth.verify(
                &h(SW_SIG, "1614265330"),
                SW_BODY,
                &secrets,
                1_614_265_330 + 301
            )),
            "stale_timestamp"
        );
        assert_eq!(
            e(auth.verify(
                &h("garbage", "1614265330"),
                SW_BODY,
                &secrets,
                1_614_265_330
            )),
            "malformed_signature"
        );
        assert_eq!(
            e(auth.verify(&headers(&[]), SW_BODY, &secrets, 0)),
            "missing_signature"
        );
    }

    #[test]
    fn absurd_timestamps_are_stale_not_an_overflow() {
        let auth = WebhookAuth::StandardWebhooks {
            tolerance_secs: 300,
        };
        let secrets = vec![SW_SECRET.as_bytes().to_vec()];
        for (ts, nows) in [
            (i64::MIN, [i64::MAX, 1_614_265_330]),
            (i64::MAX, [i64::MIN, 1_614_265_330]),
        ] {
            let ts = ts.to_string();
            let h = headers(&[
                ("webhook-id", "msg_1"),
                ("webhook-timestamp", ts.as_str()),
                ("webhook-signature", SW_SIG),
            ]);
            for now in nows {
                assert_eq!(
                    auth.verify(&h, SW_BODY, &secrets, now).unwrap_err().code(),
                    "stale_timestamp",
                    "{ts} at {now}"
                );
            }
        }
    }

    #[test]
    fn github_reference_vector() {
        let auth = WebhookAuth::Github;
        let secrets = vec![b"It's a Secret to Everybody".to_vec()];
        let h = headers(&[
            (
                "X-Hub-Signature-256",
                "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
            ),
            ("X-GitHub-Delivery", "d-1"),
        ]);
        let ok = auth.verify(&h, b"Hello, World!", &secrets, 0).unwrap();
        assert_eq!(ok.delivery_id.as_deref(), Some("d-1"));
        assert_eq!(
            auth.verify(&h, b"Hello, World?", &secrets, 0)
                .unwrap_err()
                .code(),
            "invalid_signature"
        );
        let bad = headers(&[("X-Hub-Signature-256", "757107ea")]);
        assert_eq!(
            auth.verify(&bad, b"Hello, World!", &secrets, 0)
                .unwrap_err()
                .code(),
            "malformed_signature"
        );
    }

    // Vectors computed with Python's hmac module, an implementation independent of this one.
    const BODY: &[u8] = br#"{"id":"evt_1","type":"payment_intent.succeeded"}"#;

    #[test]
    fn stripe_vector_tolerance_and_event_id() {
        let auth = WebhookAuth::Stripe {
            tolerance_secs: 300,
        };
        let secrets = vec![b"whsec_test_stripe_secret".to_vec()];
        let sig = "t=1700000000,v1=b2585e3ff743dea5d54af77485ea2cc857e0030709be2ffa4522a77a876231e5,v0=ignored";
        let h = headers(&[("Stripe-Signature", sig)]);
        let ok = auth.verify(&h, BODY, &secrets, 1_700_000_100).unwrap();
        assert_eq!(ok.delivery_id.as_deref(), Some("evt_1"));
        assert_eq!(
            auth.verify(&h, BODY, &secrets, 1_700_000_301)
                .unwrap_err()
                .code(),
            "stale_timestamp"
        );
        assert_eq!(
            auth.verify(&h, BODY, &[b"whsec_other".to_vec()], 1_700_000_000)
                .unwrap_err()
                .code(),
            "invalid_signature"
        );
        let no_t = headers(&[("Stripe-Signature", "v1=b2585e3f")]);
        assert_eq!(
            auth.verify(&no_t, BODY, &secrets, 0).unwrap_err().code(),
            "malformed_signature"
        );
    }

    #[test]
    fn shopify_and_woocommerce_vectors() {
        let shop = headers(&[
            (
                "X-Shopify-Hmac-Sha256",
                "d4e4tZRsuUeSaP4Cw/2ukmOKXu7Ww+IqNH9X7zWuqyc=",
            ),
            ("X-Shopify-Webhook-Id", "sh-1"),
        ]);
        let ok = WebhookAuth::Shopify
            .verify(&shop, BODY, &[b"shpss_test_secret".to_vec()], 0)
            .unwrap();
        assert_eq!(ok.delivery_id.as_deref(), Some("sh-1"));
        let woo = headers(&[
            (
                "X-WC-Webhook-Signature",
                "nIalWYsGrm/igBxiDJlBrKQwOGnvAJOaFEnSWV/KBgk=",
            ),
            ("X-WC-Webhook-Delivery-ID", "42"),
        ]);
        let ok = WebhookAuth::Woocommerce
            .verify(&woo, BODY, &[b"woo_test_secret".to_vec()], 0)
            .unwrap();
        assert_eq!(ok.delivery_id.as_deref(), Some("42"));
        // Rotation: the old and the new secret are both active.
        let both = [b"old".to_vec(), b"woo_test_secret".to_vec()];
        assert!(
            WebhookAuth::Woocommerce
                .verify(&woo, BODY, &both, 0)
                .is_ok()
        );
        assert_eq!(
            WebhookAuth::Woocommerce
                .verify(&woo, BODY, &[b"old".to_vec()], 0)
                .unwrap_err()
                .code(),
            "invalid_signature"
        );
    }

    #[test]
    fn generic_hmac_sha512_over_timestamp_and_body() {
        let auth = WebhookAuth::Hmac(GenericHmac {
            header: "X-Signature".into(),
            algorithm: Algorithm::Sha512,
            encoding: Encoding::Hex,
            prefix: "sha512=".into(),
            timestamp_header: Some("X-Timestamp".into()),
            tolerance_secs: 60,
            id_header: Some("X-Delivery".into()),
        });
        let sig = "sha512=e50e6c81a9d5348933428fc7cf97d8e9861a1b418fb6d0f2afe8ae14178eeac74357a2636ee92f3164a3989733f433b3949e85864e241138ea64ca3d24d6754e";
        let h = headers(&[
            ("X-Signature", sig),
            ("X-Timestamp", "1700000000"),
            ("X-Delivery", "x-9"),
        ]);
        let secrets = [b"generic-secret".to_vec()];
        assert_eq!(
            auth.verify(&h, BODY, &secrets, 1_700_000_030)
                .unwrap()
                .delivery_id
                .as_deref(),
            Some("x-9")
        );
        assert_eq!(
            auth.verify(&h, BODY, &secrets, 1_700_000_061)
                .unwrap_err()
                .code(),
            "stale_timestamp"
        );
        let unprefixed = headers(&[("X-Signature", &sig[7..]), ("X-Timestamp", "1700000000")]);
        assert_eq!(
            auth.verify(&unprefixed, BODY, &secrets, 1_700_000_000)
                .unwrap_err()
                .code(),
            "malformed_signature"
        );
    }

    #[test]
    fn api_keys_and_basic_auth() {
        let auth = WebhookAuth::api_keys(["old-key", "new-key"]);
        for k in ["old-key", "new-key"] {
            assert!(
                auth.verify(&headers(&[("X-API-Key", k)]), b"", &[], 0)
                    .is_ok()
            );
        }
        assert_eq!(
            auth.verify(&headers(&[("X-API-Key", "nope")]), b"", &[], 0)
                .unwrap_err()
                .code(),
            "invalid_credentials"
        );
        assert_eq!(
            auth.verify(&headers(&[]), b"", &[], 0).unwrap_err().code(),
            "missing_credentials"
        );
        let basic = WebhookAuth::Basic {
            username: "shop".into(),
            password_sha256: vec![crate::ids::secret_digest("pw")],
        };
        let good = format!("Basic {}", B64.encode("shop:pw"));
        assert!(
            basic
                .verify(&headers(&[("Authorization", &good)]), b"", &[], 0)
                .is_ok()
        );
        let wrong = format!("Basic {}", B64.encode("shop:nope"));
        assert_eq!(
            basic
                .verify(&headers(&[("Authorization", &wrong)]), b"", &[], 0)
                .unwrap_err()
                .code(),
            "invalid_credentials"
        );
        assert_eq!(
            basic
                .verify(&headers(&[("Authorization", "Bearer x")]), b"", &[], 0)
                .unwrap_err()
                .code(),
            "malformed_signature"
        );
        let json = serde_json::to_string(&WebhookAuth::api_keys(["s3cret"])).unwrap();
        assert!(!json.contains("s3cret"), "only digests are stored");
    }

    #[test]
    fn policies_read_and_check_addresses() {
        let p: WebhookPolicy = serde_json::from_value(serde_json::json!({
            "scheme": "stripe", "tolerance_secs": 60, "allowed_cidrs": ["10.0.0.0/8", "::1/128"], "max_body_bytes": 4096
        }))
        .unwrap();
        assert_eq!(p.auth, WebhookAuth::Stripe { tolerance_secs: 60 });
        assert!(p.allows("10.1.2.3".parse().unwrap()));
        assert!(p.allows("::ffff:10.1.2.3".parse().unwrap()));
        assert!(p.allows("::1".parse().unwrap()));
        assert!(!p.allows("192.168.1.1".parse().unwrap()));
        assert!(WebhookPolicy::new(WebhookAuth::None).allows("8.8.8.8".parse().unwrap()));
        let plain: WebhookPolicy =
            serde_json::from_value(serde_json::json!({"scheme": "api_key", "key_sha256": []}))
                .unwrap();
        assert_eq!(plain.max_body_bytes, None);
        let back = serde_json::to_value(&p).unwrap();
        assert_eq!(back["scheme"], "stripe");
    }

    #[test]
    fn schemes_that_sign_need_secrets() {
        assert_eq!(
            WebhookAuth::Github
                .verify(&headers(&[]), b"", &[], 0)
                .unwrap_err()
                .code(),
            "not_configured"
        );
    }

    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        fn schemes() -> Vec<WebhookAuth> {
            vec![
                WebhookAuth::StandardWebhooks {
                    tolerance_secs: 300,
                },
                WebhookAuth::Stripe {
                    tolerance_secs: 300,
                },
                WebhookAuth::Shopify,
                WebhookAuth::Woocommerce,
                WebhookAuth::Github,
                WebhookAuth::api_keys(["k"]),
                WebhookAuth::Basic {
                    username: "u".into(),
                    password_sha256: vec![],
                },
                WebhookAuth::Hmac(GenericHmac {
                    header: "x-sig".into(),
                    algorithm: Algorithm::Sha256,
                    encoding: Encoding::Base64,
                    prefix: "v=".into(),
                    timestamp_header: Some("x-ts".into()),
                    tolerance_secs: 10,
                    id_header: None,
                }),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(2000))]
            /// Every header parser, fed any text, answers without panicking.
            #[test]
            fn no_header_value_makes_a_parser_panic(value in ".{0,200}", ts in ".{0,24}", body in proptest::collection::vec(any::<u8>(), 0..64), now in any::<i64>()) {
                let all = [
                    "webhook-id", "webhook-timestamp", "webhook-signature", "stripe-signature",
                    "x-shopify-hmac-sha256", "x-wc-webhook-signature", "x-hub-signature-256",
                    "x-api-key", "authorization", "x-sig",
                ];
                let h = |name: &str| if name == "x-ts" || name == "webhook-timestamp" { Some(ts.clone()) } else if all.contains(&name) { Some(value.clone()) } else { None };
                for s in schemes() {
                    let _ = s.verify(&h, &body, &[b"whsec_c2VjcmV0".to_vec()], now);
                }
            }
        }
    }
}
