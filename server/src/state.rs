//! `AppState`: everything a request needs, built once at start-up and shared.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::auth::Authenticator;
use crate::config::Config;
use crate::keys::{KeyCache, KeyHasher};
use crate::meter::{LedgerWriter, PriceBook};
use crate::route::ModelGroups;
use crate::store::Store;

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub store: Store,
    pub ledger: LedgerWriter,
    pub auth: Arc<Authenticator>,
    pub models: Arc<ModelGroups>,
    pub prices: Arc<PriceBook>,
    pub keys: KeyCache,
    pub key_hasher: KeyHasher,
    pub budgets: Arc<crate::meter::budget::Budgets>,
    pub rate_limits: Arc<crate::meter::limits::RateLimits>,
    pub limits: RequestLimits,
    /// False once draining starts (SIGTERM): readiness fails, load balancers move away.
    pub accepting: Arc<AtomicBool>,
}

/// Bounds on what a client may send.
#[derive(Clone, Copy, Debug)]
pub struct RequestLimits {
    pub max_body_bytes: usize,
    pub body_read_timeout: Duration,
}

impl AppState {
    /// The key lifecycle with its authorisation rules.
    pub fn key_service(&self) -> crate::access::KeyService {
        crate::access::KeyService {
            store: self.store.clone(),
            hasher: self.key_hasher.clone(),
            cache: self.keys.clone(),
            models: self.models.clone(),
            budgets: self.budgets.clone(),
            rate_limits: self.rate_limits.clone(),
        }
    }

    pub fn is_accepting(&self) -> bool {
        self.accepting.load(Ordering::Relaxed)
    }
}
