//! Server functions of the console (`/api/*`). Each one checks the session on the server;
//! the pages never decide access on their own.

use leptos::prelude::*;
use leptos::server_fn::codec::GetUrl;

use crate::dto::{
    KeyDto, ModelGroupDto, MyKeysDto, OverviewDto, SecretDto, SessionUser, SpendDto, TeamsDto,
    UsersDto,
};

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
            ConsoleError::NotFound(_) => StatusCode::NOT_FOUND,
            ConsoleError::Conflict(_) => StatusCode::CONFLICT,
            ConsoleError::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        };
        set_status(status);
        ServerFnError::new(e.to_string())
    }
}

/// The signed-in user, or `None` for a visitor.
#[server(endpoint = "me", input = GetUrl)]
pub async fn current_user() -> Result<Option<SessionUser>, ServerFnError> {
    let port = ssr::port()?;
    let headers = ssr::headers().await?;
    Ok(port.current_user(&headers).await)
}

#[server(endpoint = "setup_needed", input = GetUrl)]
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

/// `csrf_token` is checked by the console's gate before any state-changing server
/// function runs; it is an argument so the hydrated form sends it.
#[server(endpoint = "sign_out")]
pub async fn sign_out(csrf_token: String) -> Result<(), ServerFnError> {
    let _ = csrf_token;
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

#[server(endpoint = "overview", input = GetUrl)]
pub async fn overview() -> Result<OverviewDto, ServerFnError> {
    let (port, user) = ssr::require_user().await?;
    port.overview(&user).await.map_err(ssr::console_error)
}

#[server(endpoint = "models", input = GetUrl)]
pub async fn models() -> Result<Vec<ModelGroupDto>, ServerFnError> {
    let (port, user) = ssr::require_user().await?;
    port.models(&user).await.map_err(ssr::console_error)
}

/// The single sign-on button's label, when SSO is configured.
#[server(endpoint = "sso", input = GetUrl)]
pub async fn sso_label() -> Result<Option<String>, ServerFnError> {
    Ok(ssr::port()?.sso_label())
}

#[server(endpoint = "my_keys", input = GetUrl)]
pub async fn my_keys() -> Result<MyKeysDto, ServerFnError> {
    let (port, user) = ssr::require_user().await?;
    port.my_keys(&user).await.map_err(ssr::console_error)
}

#[server(endpoint = "teams", input = GetUrl)]
pub async fn teams() -> Result<TeamsDto, ServerFnError> {
    let (port, user) = ssr::require_user().await?;
    port.teams(&user).await.map_err(ssr::console_error)
}

#[server(endpoint = "users", input = GetUrl)]
pub async fn users() -> Result<UsersDto, ServerFnError> {
    let (port, user) = ssr::require_user().await?;
    port.users(&user).await.map_err(ssr::console_error)
}

#[cfg(feature = "ssr")]
fn optional(s: Option<String>) -> Option<String> {
    s.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
}

/// A comma- or space-separated model list from a form.
pub fn split_models(s: &str) -> Vec<String> {
    s.split([',', ' ', '\n'])
        .map(str::trim)
        .filter(|m| !m.is_empty())
        .map(str::to_owned)
        .collect()
}

#[server(endpoint = "request_key")]
pub async fn request_key(
    csrf_token: String,
    team_id: String,
    name: String,
    project: Option<String>,
    models: Option<String>,
    purpose: Option<String>,
) -> Result<KeyDto, ServerFnError> {
    let _ = csrf_token;
    let (port, user) = ssr::require_user().await?;
    let headers = ssr::headers().await?;
    let form = crate::port::KeyRequestForm {
        team_id,
        name,
        project: optional(project),
        models: split_models(&models.unwrap_or_default()),
        purpose: optional(purpose),
    };
    port.request_key(&headers, &user, form)
        .await
        .map_err(ssr::console_error)
}

#[server(endpoint = "reveal_key")]
pub async fn reveal_key(csrf_token: String, key_id: String) -> Result<SecretDto, ServerFnError> {
    let _ = csrf_token;
    let (port, user) = ssr::require_user().await?;
    let headers = ssr::headers().await?;
    port.reveal_key(&headers, &user, &key_id)
        .await
        .map_err(ssr::console_error)
}

#[server(endpoint = "rotate_key")]
pub async fn rotate_key(csrf_token: String, key_id: String) -> Result<SecretDto, ServerFnError> {
    let _ = csrf_token;
    let (port, user) = ssr::require_user().await?;
    let headers = ssr::headers().await?;
    port.rotate_key(&headers, &user, &key_id)
        .await
        .map_err(ssr::console_error)
}

#[server(endpoint = "revoke_key")]
pub async fn revoke_key(csrf_token: String, key_id: String) -> Result<KeyDto, ServerFnError> {
    let _ = csrf_token;
    let (port, user) = ssr::require_user().await?;
    let headers = ssr::headers().await?;
    port.revoke_key(&headers, &user, &key_id)
        .await
        .map_err(ssr::console_error)
}

/// A lead's decision: `decision` is `approve` or `reject` (with a reason).
#[server(endpoint = "decide_key")]
pub async fn decide_key(
    csrf_token: String,
    key_id: String,
    decision: String,
    reason: Option<String>,
) -> Result<KeyDto, ServerFnError> {
    let _ = csrf_token;
    let (port, user) = ssr::require_user().await?;
    let headers = ssr::headers().await?;
    let approve = match decision.as_str() {
        "approve" => true,
        "reject" => false,
        _ => {
            return Err(ssr::console_error(crate::port::ConsoleError::Invalid(
                "decision is approve or reject".into(),
            )));
        }
    };
    port.decide_key(&headers, &user, &key_id, approve, optional(reason))
        .await
        .map_err(ssr::console_error)
}

#[server(endpoint = "set_key_limits")]
pub async fn set_key_limits(
    csrf_token: String,
    key_id: String,
    models: Option<String>,
    rpm_limit: Option<String>,
    tpm_limit: Option<String>,
) -> Result<KeyDto, ServerFnError> {
    let _ = csrf_token;
    let (port, user) = ssr::require_user().await?;
    let headers = ssr::headers().await?;
    let number = |v: Option<String>, what: &str| -> Result<Option<i64>, ServerFnError> {
        match optional(v) {
            None => Ok(None),
            Some(s) => s.parse::<i64>().map(Some).map_err(|_| {
                ssr::console_error(crate::port::ConsoleError::Invalid(format!(
                    "{what} must be a whole number"
                )))
            }),
        }
    };
    let limits = crate::port::KeyLimitsForm {
        models: split_models(&models.unwrap_or_default()),
        rpm_limit: number(rpm_limit, "rpm_limit")?,
        tpm_limit: number(tpm_limit, "tpm_limit")?,
    };
    port.set_key_limits(&headers, &user, &key_id, limits)
        .await
        .map_err(ssr::console_error)
}

#[server(endpoint = "set_user_role")]
pub async fn set_user_role(
    csrf_token: String,
    user_id: String,
    role: String,
) -> Result<(), ServerFnError> {
    let _ = csrf_token;
    let (port, user) = ssr::require_user().await?;
    let headers = ssr::headers().await?;
    port.set_user_role(&headers, &user, &user_id, &role)
        .await
        .map_err(ssr::console_error)
}

#[server(endpoint = "set_membership")]
pub async fn set_membership(
    csrf_token: String,
    team_id: String,
    user_id: String,
    role: String,
) -> Result<(), ServerFnError> {
    let _ = csrf_token;
    let (port, user) = ssr::require_user().await?;
    let headers = ssr::headers().await?;
    port.set_membership(&headers, &user, &team_id, &user_id, &role)
        .await
        .map_err(ssr::console_error)
}

#[server(endpoint = "create_team")]
pub async fn create_team(csrf_token: String, name: String) -> Result<(), ServerFnError> {
    let _ = csrf_token;
    let (port, user) = ssr::require_user().await?;
    let headers = ssr::headers().await?;
    port.create_team(&headers, &user, &name)
        .await
        .map_err(ssr::console_error)
}

#[server(endpoint = "spend", input = GetUrl)]
pub async fn spend() -> Result<SpendDto, ServerFnError> {
    let (port, user) = ssr::require_user().await?;
    port.spend(&user).await.map_err(ssr::console_error)
}

/// Sets (or, with an empty amount, removes) a budget. `thresholds` is a comma-separated
/// list of percentages.
#[server(endpoint = "set_budget")]
pub async fn set_budget(
    csrf_token: String,
    scope: String,
    amount_usd: Option<String>,
    period: String,
    thresholds: Option<String>,
) -> Result<(), ServerFnError> {
    let _ = csrf_token;
    let (port, user) = ssr::require_user().await?;
    let headers = ssr::headers().await?;
    let invalid = |m: &str| ssr::console_error(crate::port::ConsoleError::Invalid(m.to_owned()));
    let amount_usd = match optional(amount_usd) {
        None => None,
        Some(a) => Some(
            a.trim_start_matches('$')
                .parse::<f64>()
                .map_err(|_| invalid("the amount is a number of US dollars"))?,
        ),
    };
    let thresholds = match optional(thresholds) {
        None => vec![50, 80, 100],
        Some(t) => t
            .split([',', ' '])
            .filter(|p| !p.is_empty())
            .map(|p| p.trim_end_matches('%').parse::<u32>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| invalid("thresholds are percentages, e.g. 50, 80, 100"))?,
    };
    let form = crate::port::BudgetForm {
        scope,
        amount_usd,
        period,
        thresholds,
    };
    port.set_budget(&headers, &user, form)
        .await
        .map_err(ssr::console_error)
}
