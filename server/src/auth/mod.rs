//! Authentication of API callers. Today the master key; virtual keys (looked up from an
//! in-memory cache by their keyed hash) plug in as another [`Principal`]. A presented
//! secret is checked for shape first, so junk never reaches a lookup, and compared in
//! constant time.

use axum::http::{HeaderMap, header};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use std::sync::Arc;

use crate::error::ApiError;
use crate::keys::{KeyCache, KeyHasher, KeyInfo, looks_like_key};

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// The bootstrap admin key (`GATEWAY_MASTER_KEY`).
    Master,
    /// A virtual key.
    Key(Arc<KeyInfo>),
}

impl Principal {
    /// The ledger's key id for this principal.
    pub fn key_id(&self) -> Option<String> {
        match self {
            Principal::Master => Some("master".to_owned()),
            Principal::Key(k) => Some(k.id.clone()),
        }
    }

    pub fn key(&self) -> Option<&KeyInfo> {
        match self {
            Principal::Key(k) => Some(k),
            Principal::Master => None,
        }
    }

    /// Whether this caller may use the public model name.
    pub fn may_use(&self, model: &str) -> bool {
        self.key().is_none_or(|k| k.allows(model))
    }
}

pub struct Authenticator {
    master_digest: Option<[u8; 32]>,
    keys: Option<(KeyHasher, KeyCache)>,
}

/// Longest credential accepted; real ones are far shorter.
const MAX_TOKEN_LEN: usize = 512;

impl Authenticator {
    pub fn new(master_key: Option<&SecretString>) -> Self {
        Authenticator {
            master_digest: master_key.map(|k| digest(k.expose_secret())),
            keys: None,
        }
    }

    /// Also accepts the virtual keys in `cache`.
    pub fn with_keys(mut self, hasher: KeyHasher, cache: KeyCache) -> Self {
        self.keys = Some((hasher, cache));
        self
    }

    /// Checks `Authorization: Bearer …` (or `x-api-key`, which Anthropic clients send).
    pub fn authenticate(&self, headers: &HeaderMap) -> Result<Principal, ApiError> {
        let token = bearer(headers)
            .or_else(|| headers.get("x-api-key").and_then(|v| v.to_str().ok()))
            .ok_or(ApiError::Unauthorized(
                "missing API key: send it as \"Authorization: Bearer <key>\"",
            ))?;
        if !well_formed(token) {
            return Err(ApiError::Unauthorized("invalid API key"));
        }
        if looks_like_key(token) {
            // Memory only: no database round trip, and a stored hash is never a key.
            if let Some((hasher, cache)) = &self.keys
                && let Some(info) = cache.lookup(&hasher.hash(token))
            {
                return Ok(Principal::Key(info));
            }
            return Err(ApiError::Unauthorized("invalid API key"));
        }
        if self.is_master(token) {
            return Ok(Principal::Master);
        }
        Err(ApiError::Unauthorized("invalid API key"))
    }

    pub fn is_master(&self, token: &str) -> bool {
        self.master_digest
            .is_some_and(|m| bool::from(m.ct_eq(&digest(token))))
    }
}

fn digest(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, rest) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
}

/// Printable ASCII without spaces or quotes, bounded: anything else is not a key of ours.
fn well_formed(token: &str) -> bool {
    !token.is_empty()
        && token.len() <= MAX_TOKEN_LEN
        && token
            .bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'\'' | b'"' | b'\\'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(auth: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, auth.parse().unwrap());
        h
    }

    #[test]
    fn master_key_accepted_others_refused() {
        let a = Authenticator::new(Some(&SecretString::from("master-key-0123456789")));
        assert_eq!(
            a.authenticate(&headers("Bearer master-key-0123456789"))
                .unwrap(),
            Principal::Master
        );
        assert_eq!(
            a.authenticate(&headers("bearer master-key-0123456789"))
                .unwrap(),
            Principal::Master
        );
        assert!(
            a.authenticate(&headers("Bearer master-key-012345678"))
                .is_err()
        );
        assert!(
            a.authenticate(&headers("Basic master-key-0123456789"))
                .is_err()
        );
        assert!(a.authenticate(&headers("Bearer ' OR 1=1 --")).is_err());
        assert!(a.authenticate(&HeaderMap::new()).is_err());
        let mut h = HeaderMap::new();
        h.insert("x-api-key", "master-key-0123456789".parse().unwrap());
        assert!(a.authenticate(&h).is_ok());
        let none = Authenticator::new(None);
        assert!(none.authenticate(&headers("Bearer anything")).is_err());
    }
}
