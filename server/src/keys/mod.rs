//! Virtual keys: 256-bit secrets with a recognisable prefix (`sk-gw-`), shown once and
//! stored only as an HMAC-SHA256 under a server secret, with a short visible prefix for
//! people to tell keys apart. Keys are checked from an in-memory cache; a background task
//! reads keys changed in the database twice a second, so a key revoked on one instance is
//! refused by every instance sharing the database within a second.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

use crate::store::Store;
use crate::store::keys::KeyRow;

pub const KEY_PREFIX: &str = "sk-gw-";
/// Admins' API tokens for the management API: same shape, another prefix.
pub const ADMIN_TOKEN_PREFIX: &str = "sk-gwa-";
const REFRESH_EVERY: Duration = Duration::from_millis(500);

/// What a request knows about the key that authenticated it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    pub id: String,
    pub name: String,
    pub team_id: String,
    pub project_id: Option<String>,
    pub user_id: Option<String>,
    /// Public model names the key may use; empty means every model.
    pub models: Vec<String>,
    pub tags: Vec<String>,
    pub expires_at: Option<i64>,
}

impl KeyInfo {
    pub fn allows(&self, model: &str) -> bool {
        self.models.is_empty() || self.models.iter().any(|m| m == model)
    }
}

/// A fresh secret and what is stored of it.
pub struct NewSecret {
    pub secret: String,
    pub prefix: String,
    pub hash: String,
}

/// Hashes presented secrets with the server secret (HMAC-SHA256, keyed once).
#[derive(Clone)]
pub struct KeyHasher {
    mac: Hmac<Sha256>,
}

impl KeyHasher {
    /// `None` only if HMAC refused the key, which it does for no length.
    pub fn new(secret: &[u8]) -> Option<Self> {
        <Hmac<Sha256> as Mac>::new_from_slice(secret)
            .ok()
            .map(|mac| KeyHasher { mac })
    }

    pub fn hash(&self, presented: &str) -> String {
        let mut mac = self.mac.clone();
        mac.update(presented.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    pub fn generate(&self) -> NewSecret {
        self.generate_with(KEY_PREFIX)
    }

    pub fn generate_with(&self, kind: &str) -> NewSecret {
        let mut raw = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut raw);
        let secret = format!("{kind}{}", hex::encode(raw));
        let prefix = secret[..kind.len() + 8].to_owned();
        let hash = self.hash(&secret);
        NewSecret {
            secret,
            prefix,
            hash,
        }
    }
}

/// Whether a presented credential has the shape of one of our keys (checked before any
/// lookup, so junk costs nothing).
pub fn looks_like_key(s: &str) -> bool {
    has_shape(s, KEY_PREFIX)
}

/// Whether a credential has the shape of an admin's API token.
pub fn looks_like_admin_token(s: &str) -> bool {
    has_shape(s, ADMIN_TOKEN_PREFIX)
}

fn has_shape(s: &str, kind: &str) -> bool {
    s.len() == kind.len() + 64
        && s.starts_with(kind)
        && s[kind.len()..].bytes().all(|b| b.is_ascii_hexdigit())
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(0))
}

struct Entry {
    info: Arc<KeyInfo>,
    /// Until when this hash is accepted (a rotated-out secret's grace period), if limited.
    valid_until: Option<i64>,
}

/// Active keys by hash (current and, during a rotation's grace period, previous secrets).
#[derive(Clone, Default)]
pub struct KeyCache {
    by_hash: Arc<RwLock<HashMap<String, Entry>>>,
    /// Key id → the hashes it holds in `by_hash`, to drop them on change.
    hashes_of: Arc<RwLock<HashMap<String, Vec<String>>>>,
}

fn parse_list(json: &str) -> Vec<String> {
    serde_json::from_str(json).unwrap_or_default()
}

impl KeyCache {
    /// Loads every key and keeps the cache in step with the database.
    pub async fn start(store: Store) -> anyhow::Result<KeyCache> {
        let cache = KeyCache::default();
        let mut since = 0;
        let rows = store.keys_changed_since(since).await?;
        for r in &rows {
            since = since.max(r.updated_at);
            cache.apply(r);
        }
        let c = cache.clone();
        tokio::spawn(async move {
            let mut since = since;
            loop {
                tokio::time::sleep(REFRESH_EVERY).await;
                if store.is_closed() {
                    // The gateway is stopping.
                    break;
                }
                // Rows stamped in the same millisecond as the last seen one are read again
                // (applying a row twice is harmless), so none is missed.
                match store.keys_changed_since(since).await {
                    Ok(rows) => {
                        for r in &rows {
                            since = since.max(r.updated_at);
                            c.apply(r);
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "key cache refresh failed; keeping the last known keys")
                    }
                }
            }
        });
        Ok(cache)
    }

    /// Puts a key's current state in the cache (or takes it out).
    pub fn apply(&self, r: &KeyRow) {
        let (Ok(mut by_hash), Ok(mut hashes_of)) = (self.by_hash.write(), self.hashes_of.write())
        else {
            return;
        };
        for h in hashes_of.remove(&r.id).unwrap_or_default() {
            by_hash.remove(&h);
        }
        if r.status != "active" {
            return;
        }
        let info = Arc::new(KeyInfo {
            id: r.id.clone(),
            name: r.name.clone(),
            team_id: r.team_id.clone(),
            project_id: r.project_id.clone(),
            user_id: r.user_id.clone(),
            models: parse_list(&r.models),
            tags: parse_list(&r.tags),
            expires_at: r.expires_at,
        });
        let mut held = Vec::new();
        if let Some(h) = &r.key_hash {
            by_hash.insert(
                h.clone(),
                Entry {
                    info: info.clone(),
                    valid_until: None,
                },
            );
            held.push(h.clone());
        }
        if let (Some(h), Some(until)) = (&r.previous_key_hash, r.previous_valid_until) {
            by_hash.insert(
                h.clone(),
                Entry {
                    info,
                    valid_until: Some(until),
                },
            );
            held.push(h.clone());
        }
        hashes_of.insert(r.id.clone(), held);
    }

    /// The key for a presented secret's hash, if it is active, unexpired and (for a
    /// rotated-out secret) within its grace period.
    pub fn lookup(&self, hash: &str) -> Option<Arc<KeyInfo>> {
        let map = self.by_hash.read().ok()?;
        let e = map.get(hash)?;
        let now = now_ms();
        if e.valid_until.is_some_and(|u| now >= u) || e.info.expires_at.is_some_and(|x| now >= x) {
            return None;
        }
        Some(e.info.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_have_the_prefix_and_hash_with_the_server_secret() {
        let h = KeyHasher::new(b"server secret").unwrap();
        let k = h.generate();
        assert!(looks_like_key(&k.secret), "{}", k.secret);
        assert_eq!(k.prefix.len(), 14);
        assert!(k.secret.starts_with(&k.prefix));
        assert_eq!(h.hash(&k.secret), k.hash);
        assert_ne!(KeyHasher::new(b"another").unwrap().hash(&k.secret), k.hash);
        assert_ne!(h.generate().secret, k.secret);
        assert!(!looks_like_key("sk-gw-' OR 1=1 --"));
        assert!(!looks_like_key(&k.hash), "a stored hash is not a key");
    }

    fn row(id: &str, hash: &str, status: &str) -> KeyRow {
        KeyRow {
            id: id.into(),
            name: "n".into(),
            prefix: "sk-gw-xxxx".into(),
            key_hash: Some(hash.into()),
            team_id: "t".into(),
            project_id: None,
            user_id: None,
            status: status.into(),
            models: "[\"m1\"]".into(),
            tags: "[]".into(),
            rpm_limit: None,
            tpm_limit: None,
            budget_micros: None,
            budget_period: None,
            expires_at: None,
            created_at: 0,
            updated_at: 0,
            previous_key_hash: None,
            previous_valid_until: None,
            purpose: None,
            decided_by: None,
            decided_at: None,
            decision_reason: None,
        }
    }

    #[test]
    fn cache_follows_revocation_rotation_and_expiry() {
        let c = KeyCache::default();
        c.apply(&row("k1", "h1", "active"));
        let info = c.lookup("h1").unwrap();
        assert!(info.allows("m1") && !info.allows("m2"));
        let mut rotated = row("k1", "h2", "active");
        rotated.previous_key_hash = Some("h1".into());
        rotated.previous_valid_until = Some(now_ms() + 60_000);
        c.apply(&rotated);
        assert!(
            c.lookup("h1").is_some() && c.lookup("h2").is_some(),
            "both during the grace period"
        );
        rotated.previous_valid_until = Some(now_ms() - 1);
        c.apply(&rotated);
        assert!(
            c.lookup("h1").is_none() && c.lookup("h2").is_some(),
            "old secret after the grace period"
        );
        c.apply(&row("k1", "h2", "revoked"));
        assert!(c.lookup("h2").is_none());
        let mut expired = row("k2", "h3", "active");
        expired.expires_at = Some(now_ms() - 1);
        c.apply(&expired);
        assert!(c.lookup("h3").is_none());
    }
}
