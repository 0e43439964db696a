//! The console's HTTP side: Leptos page rendering and server functions (`/api/*`), the
//! built assets (`pkg/`, from the site directory), the stylesheet (embedded, so a lone
//! binary still serves a styled console), and the gate in front of all of it.

use std::sync::Arc;

use app::port::{ConsolePort, SharedPort};
use app::{App, shell};
use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use leptos::config::LeptosOptions;
use leptos::prelude::provide_context;
use leptos_axum::{LeptosRoutes, generate_route_list, handle_server_fns_with_context};
use tower::ServiceExt;
use tower_http::services::ServeDir;

use super::Console;

/// Internal header carrying the TCP peer address; the server removes any copy a client
/// sent before setting it, so it cannot be forged.
pub const PEER_HEADER: &str = "x-gateway-peer-ip";

const STYLESHEET: &str = include_str!("../../../style/main.css");

#[derive(Clone)]
struct ConsoleState {
    options: LeptosOptions,
    port: SharedPort,
    console: Arc<Console>,
}

impl axum::extract::FromRef<ConsoleState> for LeptosOptions {
    fn from_ref(s: &ConsoleState) -> Self {
        s.options.clone()
    }
}

pub fn leptos_options(site_root: &std::path::Path) -> LeptosOptions {
    LeptosOptions::builder()
        .output_name("gateway")
        .site_root(site_root.to_string_lossy().into_owned())
        .site_pkg_dir("pkg")
        .build()
}

/// Pages, server functions and assets of the console.
pub fn router(console: Arc<Console>, options: LeptosOptions) -> Router {
    let port: SharedPort = console.clone();
    let state = ConsoleState {
        options: options.clone(),
        port: port.clone(),
        console,
    };
    let routes = generate_route_list(App);
    let ctx_port = port.clone();
    let page_opts = options.clone();
    let auth = Router::new()
        .route("/auth/login", get(super::sso::login))
        .route("/auth/callback", get(super::sso::callback))
        .with_state(state.console.clone());
    Router::new()
        .route("/api/{*fn_name}", get(server_fn).post(server_fn))
        .merge(auth)
        .route(app::STYLESHEET_PATH, get(stylesheet))
        .leptos_routes_with_context(
            &state,
            routes,
            move || provide_context(ctx_port.clone()),
            move || shell(page_opts.clone()),
        )
        .fallback(files_or_not_found)
        .layer(middleware::from_fn_with_state(state.clone(), gate))
        .with_state(state)
}

async fn server_fn(State(st): State<ConsoleState>, req: Request) -> Response {
    let port = st.port.clone();
    handle_server_fns_with_context(move || provide_context(port.clone()), req)
        .await
        .into_response()
}

async fn stylesheet() -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/css; charset=utf-8"),
            ),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=300"),
            ),
        ],
        STYLESHEET,
    )
        .into_response()
}

/// Built assets from the site directory; anything else renders the console's Not Found.
async fn files_or_not_found(State(st): State<ConsoleState>, req: Request) -> Response {
    if req.method() == Method::GET || req.method() == Method::HEAD {
        let path = req.uri().path();
        let is_asset =
            path.starts_with("/pkg/") || path == "/favicon.svg" || path == "/favicon.ico";
        if is_asset {
            let root = st.options.site_root.to_string();
            let file_req = Request::builder()
                .uri(req.uri().clone())
                .body(Body::empty());
            if let Ok(file_req) = file_req {
                let Ok(resp) = ServeDir::new(root).oneshot(file_req).await;
                if resp.status() == StatusCode::OK {
                    return resp.into_response();
                }
            }
            return StatusCode::NOT_FOUND.into_response();
        }
    }
    let port = st.port.clone();
    let opts = st.options.clone();
    let handler = leptos_axum::render_app_to_stream_with_context(
        move || provide_context(port.clone()),
        move || shell(opts.clone()),
    );
    handler(req).await.into_response()
}

/// Paths anyone may load: the sign-in and setup pages, assets, and server functions
/// (which check the session themselves).
fn is_public(path: &str) -> bool {
    matches!(path, "/login" | "/setup" | "/favicon.svg" | "/favicon.ico")
        || path == app::STYLESHEET_PATH
        || path.starts_with("/pkg/")
        || path.starts_with("/api/")
        || path.starts_with("/auth/")
}

/// Server functions that run before a session exists (the sign-in and setup forms);
/// every other POST to `/api/*` changes state for a session and must carry its token.
const NO_SESSION_FNS: &[&str] = &["/api/sign_in", "/api/setup_admin"];

/// Largest console form accepted.
const MAX_FORM_BYTES: usize = 64 * 1024;

/// Checks the anti-forgery token of a state-changing server-function call (a form field
/// `csrf_token`, or the `x-csrf-token` header) and hands the request on with its body.
async fn check_csrf(console: &Console, req: Request) -> Result<Request, Response> {
    let refuse =
        |why: &str| (StatusCode::FORBIDDEN, format!("{why}; reload the page")).into_response();
    let (parts, body) = req.into_parts();
    let bytes = match axum::body::to_bytes(body, MAX_FORM_BYTES).await {
        Ok(b) => b,
        Err(_) => return Err((StatusCode::PAYLOAD_TOO_LARGE, "form too large").into_response()),
    };
    let from_header = parts
        .headers
        .get("x-csrf-token")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let presented = from_header.or_else(|| {
        url::form_urlencoded::parse(&bytes)
            .find(|(k, _)| k == "csrf_token")
            .map(|(_, v)| v.into_owned())
    });
    match presented {
        Some(t) if console.csrf_matches(&parts.headers, &t) => {
            Ok(Request::from_parts(parts, Body::from(bytes)))
        }
        Some(_) => Err(refuse("invalid anti-forgery token")),
        None => Err(refuse("missing anti-forgery token")),
    }
}

/// In front of every console route: refuses cross-site state changes, and sends signed-out
/// visitors to the sign-in page before anything renders.
async fn gate(State(st): State<ConsoleState>, req: Request, next: Next) -> Response {
    if req.method() != Method::GET && req.method() != Method::HEAD && is_cross_site(&req) {
        return (StatusCode::FORBIDDEN, "cross-site request refused").into_response();
    }
    let path = req.uri().path().to_owned();
    let mut req = req;
    if req.method() == Method::POST
        && path.starts_with("/api/")
        && !NO_SESSION_FNS.contains(&path.as_str())
    {
        req = match check_csrf(&st.console, req).await {
            Ok(r) => r,
            Err(resp) => return resp,
        };
    }
    let reads = req.method() == Method::GET || req.method() == Method::HEAD;
    if !is_public(&path) && reads {
        if st.console.current_user(req.headers()).await.is_none() {
            return Redirect::to("/login").into_response();
        }
    } else if path == "/setup" && reads && !st.console.setup_needed().await {
        return Redirect::to("/login").into_response();
    }
    next.run(req).await
}

/// A browser says where a request comes from (`Sec-Fetch-Site`, `Origin`); a request from
/// another site must not change anything here.
fn is_cross_site(req: &Request) -> bool {
    let h = req.headers();
    if let Some(site) = h.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        return !matches!(site, "same-origin" | "none");
    }
    match (
        h.get(header::ORIGIN).and_then(|v| v.to_str().ok()),
        h.get(header::HOST).and_then(|v| v.to_str().ok()),
    ) {
        (Some("null"), _) => true,
        (Some(origin), Some(host)) => {
            let origin_host = origin.split_once("://").map_or(origin, |(_, rest)| rest);
            !origin_host.eq_ignore_ascii_case(host)
        }
        _ => false,
    }
}
