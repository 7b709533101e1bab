//! The vault: provider credentials encrypted at rest with AES-256-GCM. Every ciphertext is
//! stored with the id of the key that sealed it, so keys can rotate: new secrets are sealed
//! with the active key, old ones open with whichever key sealed them.
//!
//! Ciphertext layout: 12-byte random nonce ‖ AES-256-GCM ciphertext and tag. The caller's
//! associated data (the integration id) binds a ciphertext to its row: a ciphertext copied
//! onto another integration does not open.
#![forbid(unsafe_code)]

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use rand::RngCore;
use secrecy::{ExposeSecret, SecretBox, SecretString};
use std::collections::BTreeMap;
use std::fmt;

const NONCE_LEN: usize = 12;

#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    #[error(
        "no vault key is configured: set SWITCHYARD_VAULT_KEYS to `<key id>:<base64 of 32 bytes>` (generate one with `switchyard keys generate`)"
    )]
    NoKeys,
    #[error("vault key `{0}`: {1}")]
    BadKey(String, &'static str),
    #[error("the active vault key `{0}` is not among the configured keys")]
    UnknownActive(String),
    #[error("this secret was sealed with vault key `{0}`, which is not configured")]
    MissingKey(String),
    #[error("a secret could not be opened: wrong key, or the ciphertext was altered")]
    Open,
}

/// An encrypted secret and the id of the key that sealed it.
#[derive(Clone, PartialEq, Eq)]
pub struct Sealed {
    pub key_id: String,
    pub bytes: Vec<u8>,
}

impl fmt::Debug for Sealed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Sealed({}, {} bytes)", self.key_id, self.bytes.len())
    }
}

/// The master keys this process knows, and which one seals new secrets.
pub struct Keyring {
    keys: BTreeMap<String, SecretBox<[u8; 32]>>,
    active: Option<String>,
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("key_ids", &self.keys.keys().collect::<Vec<_>>())
            .field("active", &self.active)
            .finish()
    }
}

impl Keyring {
    /// A keyring with no keys: it can neither seal nor open.
    pub fn empty() -> Keyring {
        Keyring {
            keys: BTreeMap::new(),
            active: None,
        }
    }

    /// Parse `id:base64key[,id:base64key…]`. The active key is `active` if given, else the
    /// first one listed.
    pub fn parse(spec: &SecretString, active: Option<&str>) -> Result<Keyring, VaultError> {
        let mut keys = BTreeMap::new();
        let mut first = None;
        for item in spec
            .expose_secret()
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            let (id, b64) = item
                .split_once(':')
                .ok_or_else(|| VaultError::BadKey(String::new(), "expected `<id>:<base64>`"))?;
            let id = id.trim();
            if id.is_empty()
                || !id
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(VaultError::BadKey(
                    id.to_owned(),
                    "a key id is letters, digits, - or _",
                ));
            }
            let raw = B64
                .decode(b64.trim())
                .map_err(|_| VaultError::BadKey(id.to_owned(), "not valid base64"))?;
            let key: [u8; 32] = raw.try_into().map_err(|_| {
                VaultError::BadKey(id.to_owned(), "must decode to exactly 32 bytes")
            })?;
            first.get_or_insert_with(|| id.to_owned());
            if keys
                .insert(id.to_owned(), SecretBox::new(Box::new(key)))
                .is_some()
            {
                return Err(VaultError::BadKey(id.to_owned(), "listed twice"));
            }
        }
        let active = match active {
            Some(a) if !keys.contains_key(a) => {
                return Err(VaultError::UnknownActive(a.to_owned()));
            }
            Some(a) => Some(a.to_owned()),
            None => first,
        };
        Ok(Keyring { keys, active })
    }

    /// A fresh random key in the form [`Keyring::parse`] reads.
    pub fn generate(id: &str) -> SecretString {
        let mut key = [0u8; 32];
        rand::rng().fill_bytes(&mut key);
        SecretString::from(format!("{id}:{}", B64.encode(key)))
    }

    pub fn active_key_id(&self) -> Option<&str> {
        self.active.as_deref()
    }

    pub fn has_key(&self, id: &str) -> bool {
        self.keys.contains_key(id)
    }

    fn cipher(&self, id: &str) -> Result<Aes256Gcm, VaultError> {
        let key = self
            .keys
            .get(id)
            .ok_or_else(|| VaultError::MissingKey(id.to_owned()))?;
        Ok(Aes256Gcm::new(key.expose_secret().into()))
    }

    /// Encrypt with the active key. `aad` binds the ciphertext to its owner.
    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Result<Sealed, VaultError> {
        let id = self.active.as_deref().ok_or(VaultError::NoKeys)?;
        let cipher = self.cipher(id)?;
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let ct = cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad,
                },
            )
            .map_err(|_| VaultError::Open)?;
        let mut bytes = Vec::with_capacity(NONCE_LEN + ct.len());
        bytes.extend_from_slice(&nonce);
        bytes.extend_from_slice(&ct);
        Ok(Sealed {
            key_id: id.to_owned(),
            bytes,
        })
    }

    /// Decrypt with the key the secret names.
    pub fn open(&self, sealed: &Sealed, aad: &[u8]) -> Result<SecretBox<Vec<u8>>, VaultError> {
        let cipher = self.cipher(&sealed.key_id)?;
        if sealed.bytes.len() < NONCE_LEN {
            return Err(VaultError::Open);
        }
        let (nonce, ct) = sealed.bytes.split_at(NONCE_LEN);
        cipher
            .decrypt(Nonce::from_slice(nonce), Payload { msg: ct, aad })
            .map(|p| SecretBox::new(Box::new(p)))
            .map_err(|_| VaultError::Open)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(spec: &str, active: Option<&str>) -> Keyring {
        Keyring::parse(&SecretString::from(spec.to_owned()), active).unwrap()
    }

    #[test]
    fn seals_and_opens_with_the_key_it_names() {
        let k1 = Keyring::generate("k1");
        let k2 = Keyring::generate("k2");
        let both = format!("{},{}", k1.expose_secret(), k2.expose_secret());
        let old = ring(k1.expose_secret(), None);
        let sealed = old.seal(b"hunter2", b"integration-1").unwrap();
        assert_eq!(sealed.key_id, "k1");
        assert!(!sealed.bytes.windows(7).any(|w| w == b"hunter2"));

        let rotated = ring(&both, Some("k2"));
        assert_eq!(rotated.active_key_id(), Some("k2"));
        let opened = rotated.open(&sealed, b"integration-1").unwrap();
        assert_eq!(opened.expose_secret().as_slice(), b"hunter2");
        assert_eq!(rotated.seal(b"x", b"").unwrap().key_id, "k2");
    }

    #[test]
    fn refuses_the_wrong_owner_tampering_and_unknown_keys() {
        let k = ring(Keyring::generate("k1").expose_secret(), None);
        let mut sealed = k.seal(b"secret", b"a").unwrap();
        assert!(matches!(k.open(&sealed, b"b"), Err(VaultError::Open)));
        let last = sealed.bytes.len() - 1;
        sealed.bytes[last] ^= 1;
        assert!(matches!(k.open(&sealed, b"a"), Err(VaultError::Open)));
        sealed.key_id = "gone".into();
        assert!(matches!(
            k.open(&sealed, b"a"),
            Err(VaultError::MissingKey(_))
        ));
        assert!(matches!(
            Keyring::empty().seal(b"x", b""),
            Err(VaultError::NoKeys)
        ));
    }

    #[test]
    fn bad_specs_are_explained() {
        let bad = |s: &str| {
            Keyring::parse(&SecretString::from(s.to_owned()), None)
                .unwrap_err()
                .to_string()
        };
        assert!(bad("k1").contains("expected `<id>:<base64>`"));
        assert!(bad("k1:!!!").contains("not valid base64"));
        assert!(bad("k1:AAAA").contains("exactly 32 bytes"));
        let k = Keyring::generate("k1");
        let err = Keyring::parse(&k, Some("k9")).unwrap_err();
        assert!(matches!(err, VaultError::UnknownActive(_)));
        // the key material never shows in Debug
        let r = Keyring::parse(&k, None).unwrap();
        assert!(!format!("{r:?}").contains(&k.expose_secret()[3..]));
    }
}
