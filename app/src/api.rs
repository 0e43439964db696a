//! Server functions of the console (`/api/*`). Each one checks the session on the server;
//! the pages never decide access on their own.

use leptos::prelude::*;

use crate::dto::{ModelGroupDto, OverviewDto, SessionUser};

#[cfg(feature = "ssr")]
pub mod ssr {
    use http::{HeaderMap, StatusCode, header::SET_COOKIE};
    use leptos::prelude::*;
    use leptos_axum::ResponseOptions;

    use crate::dto::SessionUser;
    use crate::port::{ConsoleError, SharedPort};

    pub fn port() -> Result<SharedPort, ServerFnError> {
        use_context::<SharedPort>().ok_or_else(|| ServerFnError::new("console unavailable"))
    }

    pub async fn headers() -> Result<HeaderMap, ServerFnError> {
        leptos_axum::extract::<HeaderMap>()
            .await
            .map_err(|e| ServerFnError::new(e.to_string()))
    }

    pub fn set_status(status: StatusCode) {
        if let Some(opts) = use_context::<ResponseOptions>() {
            opts.set_status(status);
        }
    }

    pub fn set_cookie(value: &str) {
        if let (Some(opts), Ok(v)) = (use_context::<ResponseOptions>(), value.parse()) {
            opts.append_header(SET_COOKIE, v);
        }
    }

    /// The signed-in user, or a 401 for the server function.
    pub async fn require_user() -> Result<(SharedPort, SessionUser), ServerFnError> {
        let port = port()?;
        let headers = headers().await?;
        match port.current_user(&headers).await {
            Some(user) => Ok((port, user)),
            None => {
                set_status(StatusCode::UNAUTHORIZED);
                Err(ServerFnError::new("not signed in"))
            }
        }
    }

    pub fn console_error(e: ConsoleError) -> ServerFnError {
        let status = match e {
            ConsoleError::BadCredentials => StatusCode::UNAUTHORIZED,
            ConsoleError::Throttled => StatusCode::TOO_MANY_REQUESTS,
            ConsoleError::Forbidden(_) => StatusCode::FORBIDDEN,
            ConsoleError::Invalid(_) => StatusCode::BAD_REQUEST,
            ConsoleError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        };
        set_status(status);
        ServerFnError::new(e.to_string())
    }
}

/// The signed-in user, or `None` for a visitor.
#[server(endpoint = "me")]
pub async fn current_user() -> Result<Option<SessionUser>, ServerFnError> {
    let port = ssr::port()?;
    let headers = ssr::headers().await?;
    Ok(port.current_user(&headers).await)
}

#[server(endpoint = "setup_needed")]
pub async fn setup_needed() -> Result<bool, ServerFnError> {
    Ok(ssr::port()?.setup_needed().await)
}

/// Signs the local admin in and goes to the Overview; a failure comes back to the form
/// as `?error=` so the page says why, with or without JavaScript.
#[server(endpoint = "sign_in")]
pub async fn sign_in(username: String, password: String) -> Result<(), ServerFnError> {
    let port = ssr::port()?;
    let headers = ssr::headers().await?;
    match port.sign_in(&headers, &username, &password).await {
        Ok(cookie) => {
            ssr::set_cookie(&cookie);
            leptos_axum::redirect("/");
        }
        Err(e) => {
            let code = match e {
                crate::port::ConsoleError::Throttled => "throttled",
                crate::port::ConsoleError::BadCredentials => "invalid",
                _ => "failed",
            };
            leptos_axum::redirect(&format!("/login?error={code}"));
        }
    }
    Ok(())
}

#[server(endpoint = "sign_out")]
pub async fn sign_out() -> Result<(), ServerFnError> {
    let port = ssr::port()?;
    let headers = ssr::headers().await?;
    let cookie = port.sign_out(&headers).await;
    ssr::set_cookie(&cookie);
    leptos_axum::redirect("/login?signed_out=1");
    Ok(())
}

/// First-run setup of the local admin's password (only while no admin exists).
#[server(endpoint = "setup_admin")]
pub async fn setup_admin(
    master_key: String,
    password: String,
    confirm: String,
) -> Result<(), ServerFnError> {
    let port = ssr::port()?;
    if password != confirm {
        leptos_axum::redirect("/setup?error=mismatch");
        return Ok(());
    }
    match port.setup_admin(&master_key, &password).await {
        Ok(()) => leptos_axum::redirect("/login?setup=done"),
        Err(crate::port::ConsoleError::Invalid(_)) => leptos_axum::redirect("/setup?error=weak"),
        Err(_) => leptos_axum::redirect("/setup?error=denied"),
    }
    Ok(())
}

#[server(endpoint = "overview")]
pub async fn overview() -> Result<OverviewDto, ServerFnError> {
    let (port, user) = ssr::require_user().await?;
    port.overview(&user).await.map_err(ssr::console_error)
}

#[server(endpoint = "models")]
pub async fn models() -> Result<Vec<ModelGroupDto>, ServerFnError> {
    let (port, user) = ssr::require_user().await?;
    port.models(&user).await.map_err(ssr::console_error)
}
