//! How an integration's webhooks prove who sent them. Stored with digests, never with a
//! secret that could be replayed; compared in constant time.
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

/// The scheme and what it needs, as stored in `integrations.webhook_auth`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "scheme", rename_all = "snake_case", deny_unknown_fields)]
pub enum WebhookAuth {
    /// Anyone who knows the URL may send. Only for trusted networks.
    None,
    /// `X-API-Key: <key>`; several keys may be active at once, so a sender can rotate.
    ApiKey {
        /// Hex SHA-256 of each accepted key.
        key_sha256: Vec<String>,
    },
}

/// Why a webhook was refused. The code is stable (for metrics and the JSON error); the
/// text is for the sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthFailure {
    #[error("the X-API-Key header is missing")]
    MissingKey,
    #[error("the X-API-Key header does not match any active key of this integration")]
    WrongKey,
}

impl AuthFailure {
    pub fn code(self) -> &'static str {
        match self {
            AuthFailure::MissingKey => "missing_credentials",
            AuthFailure::WrongKey => "invalid_credentials",
        }
    }
}

impl WebhookAuth {
    /// An API-key scheme accepting `keys`.
    pub fn api_keys<'a>(keys: impl IntoIterator<Item = &'a str>) -> WebhookAuth {
        WebhookAuth::ApiKey {
            key_sha256: keys.into_iter().map(crate::ids::secret_digest).collect(),
        }
    }

    /// Check one request. `header` looks a request header up by name.
    pub fn verify(&self, header: &dyn Fn(&str) -> Option<String>) -> Result<(), AuthFailure> {
        match self {
            WebhookAuth::None => Ok(()),
            WebhookAuth::ApiKey { key_sha256 } => {
                let given = header("x-api-key").ok_or(AuthFailure::MissingKey)?;
                let digest = crate::ids::secret_digest(given.trim());
                // Compare against every key, without stopping at the first match.
                let mut ok = subtle::Choice::from(0u8);
                for expected in key_sha256 {
                    ok |= digest.as_bytes().ct_eq(expected.as_bytes());
                }
                if bool::from(ok) {
                    Ok(())
                } else {
                    Err(AuthFailure::WrongKey)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_keys_rotate_and_compare() {
        let auth = WebhookAuth::api_keys(["old-key", "new-key"]);
        let with = |k: &'static str| move |h: &str| (h == "x-api-key").then(|| k.to_owned());
        assert_eq!(auth.verify(&with("old-key")), Ok(()));
        assert_eq!(auth.verify(&with("new-key")), Ok(()));
        assert_eq!(auth.verify(&with("nope")), Err(AuthFailure::WrongKey));
        assert_eq!(auth.verify(&|_| None), Err(AuthFailure::MissingKey));
        assert_eq!(WebhookAuth::None.verify(&|_| None), Ok(()));
    }

    #[test]
    fn stored_form_holds_digests_only() {
        let json = serde_json::to_string(&WebhookAuth::api_keys(["s3cret"])).unwrap();
        assert!(!json.contains("s3cret"));
        assert!(json.contains("\"scheme\":\"api_key\""));
        let back: WebhookAuth = serde_json::from_str(&json).unwrap();
        assert_eq!(back, WebhookAuth::api_keys(["s3cret"]));
    }
}
