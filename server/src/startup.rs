//! Start-up and shutdown: open the store, build `AppState` and the router once, bind
//! (port 0 allowed), serve with header-read timeouts, TCP_NODELAY and a connection limit,
//! and on the stop signal drain in-flight requests and streams, then flush the ledger.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::body::Body;
use axum::http::HeaderValue;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use secrecy::ExposeSecret;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::ServiceExt;

use crate::auth::Authenticator;
use crate::config::Config;
use crate::console::{self, Console};
use crate::keys::{KeyCache, KeyHasher};
use crate::meter::{LedgerWriter, PriceBook};
use crate::route::ModelGroups;
use crate::state::{AppState, RequestLimits};
use crate::store::Store;

pub struct Application {
    listener: TcpListener,
    addr: SocketAddr,
    router: Router,
    state: AppState,
}

impl Application {
    pub async fn build(config: Config) -> anyhow::Result<Application> {
        let store = Store::connect(config.database_url())
            .await
            .with_context(|| {
                format!(
                    "cannot open the database ({})",
                    redact_url(config.database_url())
                )
            })?;
        if let Some(pw) = &config.server.admin_password {
            console::ensure_admin_password(&store, pw.expose_secret()).await?;
        }
        let http = crate::providers::http::client(Duration::from_millis(
            config.server.upstream_connect_timeout_ms,
        ))
        .context("cannot build the HTTP client")?;
        let prices = Arc::new(PriceBook::from_config(&config.prices));
        let models = Arc::new(
            ModelGroups::build(&config, &http, &prices).context("cannot build the HTTP client")?,
        );
        let key_hasher = key_hasher(&config)?;
        let keys = KeyCache::start(store.clone())
            .await
            .context("cannot load the virtual keys")?;
        let auth = Arc::new(
            Authenticator::new(config.server.master_key.as_ref())
                .with_keys(key_hasher.clone(), keys.clone()),
        );
        let alerts = match &config.spend.alert_webhook {
            Some(url) => Some(crate::meter::alerts::Alerts::new(url.clone())?),
            None => None,
        };
        let budgets = crate::meter::budget::Budgets::start(store.clone(), alerts)
            .await
            .context("cannot load the budgets")?;
        let rate_limits = crate::meter::limits::RateLimits::start(
            store.clone(),
            config.server.redis_url.as_ref().map(|u| u.expose_secret()),
        )
        .await
        .context("cannot load the rate limits")?;
        let state = AppState {
            budgets,
            rate_limits,
            store: store.clone(),
            ledger: LedgerWriter::spawn(store.clone()),
            auth: auth.clone(),
            models: models.clone(),
            prices,
            keys,
            key_hasher,
            limits: RequestLimits {
                max_body_bytes: config.server.max_body_bytes,
                body_read_timeout: Duration::from_millis(config.server.body_read_timeout_ms),
            },
            accepting: Arc::new(AtomicBool::new(true)),
            config: Arc::new(config),
        };
        let site_root = state.config.site_root();
        if !site_root.join("pkg").is_dir() {
            tracing::warn!(site_root = %site_root.display(), "console assets not found: pages work without JavaScript only");
        }
        let sso = match (&state.config.sso, state.config.sso_redirect_url()) {
            (Some(cfg), Some(redirect)) => {
                Some(Arc::new(console::sso::Sso::new(cfg.clone(), redirect)?))
            }
            _ => None,
        };
        let console = Arc::new(Console::new(&state, sso, state.config.secure_cookies()));
        let console_router =
            console::routes::router(console, console::routes::leptos_options(&site_root));
        let router = crate::router::router(state.clone(), console_router);
        let listener = TcpListener::bind(state.config.listen_addr())
            .await
            .with_context(|| format!("cannot listen on {}", state.config.listen_addr()))?;
        let addr = listener.local_addr()?;
        Ok(Application {
            listener,
            addr,
            router,
            state,
        })
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until `stop` resolves, then drains and flushes.
    pub async fn run_until_stopped(
        self,
        stop: impl Future<Output = ()> + Send,
    ) -> anyhow::Result<()> {
        let Application {
            listener,
            router,
            state,
            ..
        } = self;
        let cfg = &state.config.server;
        let mut builder = ConnBuilder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(Duration::from_millis(cfg.header_read_timeout_ms))
            .keep_alive(true);
        builder
            .http2()
            .timer(TokioTimer::new())
            .keep_alive_interval(Duration::from_secs(30));
        let graceful = hyper_util::server::graceful::GracefulShutdown::new();
        let slots = Arc::new(Semaphore::new(cfg.max_connections));
        tokio::pin!(stop);
        loop {
            let permit = tokio::select! {
                p = slots.clone().acquire_owned() => p?,
                () = &mut stop => break,
            };
            let (stream, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: pause, do not spin.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = &mut stop => break,
            };
            let _ = stream.set_nodelay(true);
            let router = router.clone();
            let peer_ip = HeaderValue::from_str(&peer.ip().to_string()).ok();
            let svc = hyper::service::service_fn(
                move |mut req: hyper::Request<hyper::body::Incoming>| {
                    let headers = req.headers_mut();
                    headers.remove(console::routes::PEER_HEADER);
                    if let Some(ip) = &peer_ip {
                        headers.insert(console::routes::PEER_HEADER, ip.clone());
                    }
                    router.clone().oneshot(req.map(Body::new))
                },
            );
            let conn = builder
                .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                .into_owned();
            let conn = graceful.watch(conn);
            tokio::spawn(async move {
                let _ = conn.await;
                drop(permit);
            });
        }
        drop(listener);
        state.accepting.store(false, Ordering::Relaxed);
        tracing::info!("stopping: draining in-flight requests");
        let drain = Duration::from_millis(cfg.drain_timeout_ms);
        if tokio::time::timeout(drain, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::warn!("drain deadline passed; closing the remaining connections");
        }
        // Streams cut by the deadline drop their meters, which queue their rows; a moment
        // for those drops to run, then everything queued is written.
        tokio::task::yield_now().await;
        // Streams whose clients left stop reading on now and record their rows.
        crate::proxy::drains_finished(Duration::from_secs(2)).await;
        state.ledger.flush().await;
        // Spending is written and unused budget leases go back for the other instances.
        state.budgets.close().await;
        state.store.close().await;
        tracing::info!("stopped");
        Ok(())
    }
}

/// The virtual keys' hashing secret: configured, or derived from the master key.
fn key_hasher(config: &Config) -> anyhow::Result<KeyHasher> {
    let secret = match (&config.server.key_hash_secret, &config.server.master_key) {
        (Some(s), _) => s.expose_secret().as_bytes().to_vec(),
        (None, Some(m)) => {
            use hmac::Mac;
            let mut mac =
                <hmac::Hmac<sha2::Sha256> as Mac>::new_from_slice(m.expose_secret().as_bytes())
                    .map_err(|_| anyhow::anyhow!("cannot derive the key hashing secret"))?;
            mac.update(b"ai-gateway virtual key hashing v1");
            mac.finalize().into_bytes().to_vec()
        }
        (None, None) => {
            anyhow::bail!("server.key_hash_secret or a master key is needed to hash virtual keys")
        }
    };
    KeyHasher::new(&secret).ok_or_else(|| anyhow::anyhow!("cannot key the virtual key hash"))
}

/// The database URL without a password, for messages.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_owned(),
    }
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
