//! Single sign-on with OpenID Connect: the authorisation-code flow with PKCE (S256), `state`
//! and `nonce` bound to the browser by a short-lived cookie and kept server-side (single
//! use), the ID token validated by `openidconnect` (signature and algorithm against the
//! provider's JWKS, issuer, audience, expiry, nonce), then the user found or created just
//! in time and their role and teams mapped from the groups claim.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use openidconnect::core::{
    CoreAuthDisplay, CoreAuthPrompt, CoreAuthenticationFlow, CoreErrorResponseType,
    CoreGenderClaim, CoreJsonWebKey, CoreJweContentEncryptionAlgorithm, CoreJwsSigningAlgorithm,
    CoreProviderMetadata, CoreRevocableToken, CoreRevocationErrorResponse,
    CoreTokenIntrospectionResponse, CoreTokenType,
};
use openidconnect::{
    AdditionalClaims, AuthorizationCode, Client, ClientId, ClientSecret, CsrfToken,
    EmptyExtraTokenFields, EndpointMaybeSet, EndpointNotSet, EndpointSet, IdTokenFields, IssuerUrl,
    Nonce, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, Scope, StandardErrorResponse,
    StandardTokenResponse, TokenResponse,
};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

use super::{Console, hash_token, now_ms, random_token};
use crate::config::SsoConfig;
use crate::store::keys::Actor;
use crate::store::people::SsoIdentity;

/// How long a sign-in may take at the provider.
const ATTEMPT_MAX_AGE_MS: i64 = 10 * 60 * 1000;
/// Provider metadata and keys are read again after this long (key rotation).
const METADATA_TTL: Duration = Duration::from_secs(10 * 60);

/// Every claim beyond the standard ones, so the groups claim's name can be configured.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExtraClaims {
    #[serde(flatten)]
    rest: HashMap<String, serde_json::Value>,
}

impl AdditionalClaims for ExtraClaims {}

type Fields = IdTokenFields<
    ExtraClaims,
    EmptyExtraTokenFields,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJwsSigningAlgorithm,
>;
type Tokens = StandardTokenResponse<Fields, CoreTokenType>;
type OidcClient = Client<
    ExtraClaims,
    CoreAuthDisplay,
    CoreGenderClaim,
    CoreJweContentEncryptionAlgorithm,
    CoreJsonWebKey,
    CoreAuthPrompt,
    StandardErrorResponse<CoreErrorResponseType>,
    Tokens,
    CoreTokenIntrospectionResponse,
    CoreRevocableToken,
    CoreRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

pub struct Sso {
    cfg: SsoConfig,
    redirect: RedirectUrl,
    http: reqwest::Client,
    meta: Mutex<Option<(Instant, CoreProviderMetadata)>>,
}

/// Why a sign-in was refused; the details go to the log, the person sees the gist.
#[derive(Debug)]
enum Failure {
    /// The browser's attempt is missing, stale, replayed, or its state does not match.
    BadAttempt(&'static str),
    /// The provider said no (the person cancelled, or an error).
    Provider(String),
    /// The code exchange or the ID token failed validation.
    Token(String),
    /// The person is not allowed in (domain, unverified e-mail).
    NotAllowed(&'static str),
    Internal(String),
}

impl Failure {
    /// What went wrong, for the log (never shown to the person).
    fn detail(&self) -> String {
        match self {
            Failure::BadAttempt(m) | Failure::NotAllowed(m) => (*m).to_owned(),
            Failure::Provider(m) | Failure::Token(m) | Failure::Internal(m) => m.clone(),
        }
    }
}

impl Sso {
    pub fn new(cfg: SsoConfig, redirect: url::Url) -> anyhow::Result<Sso> {
        let http = reqwest::Client::builder()
            // The provider's answers are followed by nobody: no redirect can steer a token
            // request elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(15))
            .build()?;
        Ok(Sso {
            redirect: RedirectUrl::from_url(redirect),
            cfg,
            http,
            meta: Mutex::new(None),
        })
    }

    pub fn label(&self) -> &str {
        &self.cfg.label
    }

    async fn client(&self, refresh: bool) -> Result<OidcClient, Failure> {
        let mut cached = self.meta.lock().await;
        let stale = cached
            .as_ref()
            .is_none_or(|(at, _)| refresh || at.elapsed() > METADATA_TTL);
        if stale {
            let issuer = IssuerUrl::new(self.cfg.issuer.clone())
                .map_err(|e| Failure::Internal(format!("issuer: {e}")))?;
            let meta = CoreProviderMetadata::discover_async(issuer, &self.http)
                .await
                .map_err(|e| Failure::Internal(format!("provider discovery failed: {e}")))?;
            *cached = Some((Instant::now(), meta));
        }
        let Some((_, meta)) = cached.as_ref() else {
            return Err(Failure::Internal("no provider metadata".into()));
        };
        Ok(OidcClient::from_provider_metadata(
            meta.clone(),
            ClientId::new(self.cfg.client_id.clone()),
            Some(ClientSecret::new(
                self.cfg.client_secret.expose_secret().to_owned(),
            )),
        )
        .set_redirect_uri(self.redirect.clone()))
    }

    /// Role and teams from the groups claim.
    fn identity(
        &self,
        subject: String,
        email: String,
        name: Option<String>,
        groups: &[String],
    ) -> SsoIdentity {
        const RANK: &[&str] = &["member", "auditor", "finance", "admin"];
        let rank = |r: &str| RANK.iter().position(|x| *x == r).unwrap_or(0);
        let role = self
            .cfg
            .roles
            .iter()
            .filter(|m| groups.contains(&m.group))
            .map(|m| m.role.as_str())
            .max_by_key(|r| rank(r))
            .unwrap_or(&self.cfg.default_role)
            .to_owned();
        let mut teams: Vec<(String, String)> = Vec::new();
        for m in self.cfg.teams.iter().filter(|m| groups.contains(&m.group)) {
            match teams.iter_mut().find(|(t, _)| *t == m.team) {
                // A lead mapping beats a member one for the same team.
                Some(existing) if m.role == "lead" => existing.1 = "lead".into(),
                Some(_) => {}
                None => teams.push((m.team.clone(), m.role.clone())),
            }
        }
        let mut managed: Vec<String> = self.cfg.teams.iter().map(|m| m.team.clone()).collect();
        managed.sort();
        managed.dedup();
        SsoIdentity {
            subject,
            email,
            display_name: name,
            role,
            teams,
            managed_teams: managed,
        }
    }

    fn domain_allowed(&self, email: &str) -> bool {
        let Some((_, domain)) = email.rsplit_once('@') else {
            return false;
        };
        self.cfg.allowed_domains.is_empty()
            || self
                .cfg
                .allowed_domains
                .iter()
                .any(|d| d.eq_ignore_ascii_case(domain))
    }
}

fn attempt_cookie_name(secure: bool) -> &'static str {
    if secure {
        "__Host-gateway_sso"
    } else {
        "gateway_sso"
    }
}

/// The cookie binding a sign-in to this browser: sent back on the provider's top-level
/// redirect (`SameSite=Lax`), never readable by scripts, gone after ten minutes.
fn attempt_cookie(secure: bool, value: &str, max_age_s: u64) -> String {
    let mut c = format!(
        "{}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age_s}",
        attempt_cookie_name(secure)
    );
    if secure {
        c.push_str("; Secure");
    }
    c
}

fn with_cookies(mut resp: Response, cookies: &[String]) -> Response {
    for c in cookies {
        if let Ok(v) = HeaderValue::from_str(c) {
            resp.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// A plain page for a refused sign-in (the console is not rendered for visitors here).
fn refusal_page(status: StatusCode, message: &str) -> Response {
    let body = format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Sign-in refused</title>\
         <link rel=\"icon\" href=\"/favicon.svg\" type=\"image/svg+xml\">\
         <link rel=\"stylesheet\" href=\"{css}\"></head><body><div class=\"auth-page\"><div class=\"card auth-card\">\
         <h1>Sign-in refused</h1><p class=\"error\" data-testid=\"sso-error\">{message}</p>\
         <p><a href=\"/login\">Back to sign-in</a></p></div></div></body></html>",
        css = app::STYLESHEET_PATH,
    );
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        body,
    )
        .into_response()
}

/// `GET /auth/login`: starts a sign-in at the provider.
pub async fn login(State(console): State<Arc<Console>>, headers: HeaderMap) -> Response {
    let Some(sso) = console.sso.clone() else {
        return refusal_page(StatusCode::NOT_FOUND, "Single sign-on is not configured.");
    };
    // Every start stores an attempt: bounded per client address.
    let ip = super::client_ip(&headers);
    if !console.sso_starts.allow(&ip) {
        return refusal_page(
            StatusCode::TOO_MANY_REQUESTS,
            "Too many sign-in attempts. Wait a minute and try again.",
        );
    }
    console.sso_starts.fail(&ip);
    let client = match sso.client(false).await {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e.detail(), "sso: cannot reach the identity provider");
            return refusal_page(
                StatusCode::BAD_GATEWAY,
                "The identity provider cannot be reached. Try again later.",
            );
        }
    };
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let mut request = client
        .authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        )
        .add_scope(Scope::new("openid".into()))
        .set_pkce_challenge(challenge);
    for s in sso.cfg.scopes.iter().filter(|s| *s != "openid") {
        request = request.add_scope(Scope::new(s.clone()));
    }
    let (url, state, nonce) = request.url();
    let attempt = random_token();
    if let Err(e) = console
        .store()
        .create_sso_login(
            &hash_token(&attempt),
            state.secret(),
            nonce.secret(),
            verifier.secret(),
            now_ms(),
        )
        .await
    {
        tracing::error!(error = %e, "sso: cannot record the sign-in attempt");
        return refusal_page(StatusCode::INTERNAL_SERVER_ERROR, "Internal error.");
    }
    with_cookies(
        Redirect::to(url.as_str()).into_response(),
        &[attempt_cookie(console.secure_cookies(), &attempt, 600)],
    )
}

#[derive(Deserialize)]
pub struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
}

/// `GET /auth/callback`: the provider sends the browser back here.
pub async fn callback(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    Query(q): Query<CallbackQuery>,
) -> Response {
    let secure = console.secure_cookies();
    // The attempt cookie is single use whatever happens next.
    let clear = attempt_cookie(secure, "", 0);
    let result = finish(&console, &headers, q).await;
    match result {
        Ok(session_cookie) => {
            with_cookies(Redirect::to("/").into_response(), &[clear, session_cookie])
        }
        Err(f) => {
            let (status, message) = match &f {
                Failure::BadAttempt(_) => (
                    StatusCode::BAD_REQUEST,
                    "This sign-in expired, was already used or was not started in this browser. Start again.",
                ),
                Failure::Provider(_) => (
                    StatusCode::UNAUTHORIZED,
                    "The identity provider did not sign you in.",
                ),
                Failure::Token(_) => (
                    StatusCode::UNAUTHORIZED,
                    "The identity provider's answer could not be verified.",
                ),
                Failure::NotAllowed(m) => (StatusCode::FORBIDDEN, *m),
                Failure::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "Internal error."),
            };
            tracing::warn!(reason = %f.detail(), "sso: sign-in refused");
            with_cookies(refusal_page(status, message), &[clear])
        }
    }
}

async fn finish(
    console: &Console,
    headers: &HeaderMap,
    q: CallbackQuery,
) -> Result<String, Failure> {
    let sso = console
        .sso
        .clone()
        .ok_or(Failure::BadAttempt("sso is not configured"))?;
    let attempt = super::token_cookie(headers, attempt_cookie_name(console.secure_cookies()))
        .ok_or(Failure::BadAttempt("no attempt cookie"))?;
    let (state, nonce, verifier) = console
        .store()
        .take_sso_login(&hash_token(&attempt), now_ms(), ATTEMPT_MAX_AGE_MS)
        .await
        .map_err(|e| Failure::Internal(e.to_string()))?
        .ok_or(Failure::BadAttempt("unknown, used or expired attempt"))?;
    let got_state = q.state.unwrap_or_default();
    {
        use subtle::ConstantTimeEq;
        if got_state.len() != state.len()
            || !bool::from(got_state.as_bytes().ct_eq(state.as_bytes()))
        {
            return Err(Failure::BadAttempt("state does not match"));
        }
    }
    if let Some(e) = q.error {
        return Err(Failure::Provider(e.chars().take(100).collect()));
    }
    let code = q
        .code
        .filter(|c| !c.is_empty() && c.len() <= 4096)
        .ok_or(Failure::Provider("no code".into()))?;
    let client = sso.client(false).await?;
    let tokens = client
        .exchange_code(AuthorizationCode::new(code))
        .map_err(|e| Failure::Internal(e.to_string()))?
        .set_pkce_verifier(PkceCodeVerifier::new(verifier))
        .request_async(&sso.http)
        .await
        .map_err(|e| Failure::Token(format!("code exchange: {e}")))?;
    let id_token = tokens
        .id_token()
        .ok_or(Failure::Token("no id_token".into()))?;
    let nonce = Nonce::new(nonce);
    let claims = match id_token.claims(&client.id_token_verifier(), &nonce) {
        Ok(c) => c.clone(),
        Err(first) => {
            // The provider may have rotated its keys: read them again once.
            let fresh = sso.client(true).await?;
            id_token
                .claims(&fresh.id_token_verifier(), &nonce)
                .map_err(|_| Failure::Token(format!("id token: {first}")))?
                .clone()
        }
    };
    let email = claims
        .email()
        .map(|e| e.as_str().trim().to_lowercase())
        .filter(|e| e.contains('@') && e.len() <= 254)
        .ok_or(Failure::NotAllowed("Your account has no e-mail address."))?;
    if claims.email_verified() == Some(false) {
        return Err(Failure::NotAllowed("Your e-mail address is not verified."));
    }
    if !sso.domain_allowed(&email) {
        return Err(Failure::NotAllowed(
            "Your e-mail domain is not allowed to sign in here.",
        ));
    }
    let groups: Vec<String> = match claims.additional_claims().rest.get(&sso.cfg.groups_claim) {
        Some(serde_json::Value::Array(a)) => a
            .iter()
            .filter_map(|v| v.as_str().map(str::to_owned))
            .take(1000)
            .collect(),
        Some(serde_json::Value::String(s)) => vec![s.clone()],
        _ => Vec::new(),
    };
    let name = claims
        .name()
        .and_then(|n| n.get(None))
        .map(|n| n.as_str().chars().take(128).collect::<String>());
    let subject = format!("{}|{}", claims.issuer().as_str(), claims.subject().as_str());
    let who = sso.identity(subject, email, name, &groups);
    let actor = Actor {
        name: "sso".into(),
        source_ip: Some(super::client_ip(headers)),
    };
    let user = console
        .store()
        .upsert_sso_user(&who, now_ms(), &actor)
        .await
        .map_err(|e| Failure::Internal(e.to_string()))?;
    let cookie = console
        .open_session(headers, &user.id)
        .await
        .map_err(|e| Failure::Internal(e.to_string()))?;
    tracing::info!(user = %user.username, role = %user.role, "signed in with sso");
    Ok(cookie)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{SsoRoleMapping, SsoTeamMapping};

    fn sso() -> Sso {
        let cfg = SsoConfig {
            issuer: "https://idp.example.com".into(),
            client_id: "gw".into(),
            client_secret: "s".to_owned().into(),
            redirect_url: None,
            scopes: vec![],
            groups_claim: "groups".into(),
            allowed_domains: vec!["example.com".into()],
            default_role: "member".into(),
            label: "SSO".into(),
            roles: vec![
                SsoRoleMapping {
                    group: "fin".into(),
                    role: "finance".into(),
                },
                SsoRoleMapping {
                    group: "ops".into(),
                    role: "admin".into(),
                },
            ],
            teams: vec![
                SsoTeamMapping {
                    group: "alpha".into(),
                    team: "Alpha".into(),
                    role: "member".into(),
                },
                SsoTeamMapping {
                    group: "alpha-leads".into(),
                    team: "Alpha".into(),
                    role: "lead".into(),
                },
                SsoTeamMapping {
                    group: "beta".into(),
                    team: "Beta".into(),
                    role: "member".into(),
                },
            ],
        };
        Sso::new(cfg, "https://gw.example.com/auth/callback".parse().unwrap()).unwrap()
    }

    #[test]
    fn groups_map_to_the_highest_role_and_lead_wins_in_a_team() {
        let s = sso();
        let g = |v: &[&str]| v.iter().map(|x| (*x).to_owned()).collect::<Vec<_>>();
        let who = s.identity(
            "i|1".into(),
            "a@example.com".into(),
            None,
            &g(&["alpha-leads", "alpha", "fin", "ops"]),
        );
        assert_eq!(who.role, "admin");
        assert_eq!(who.teams, vec![("Alpha".to_owned(), "lead".to_owned())]);
        assert_eq!(
            who.managed_teams,
            vec!["Alpha".to_owned(), "Beta".to_owned()]
        );
        let plain = s.identity(
            "i|2".into(),
            "b@example.com".into(),
            None,
            &g(&["unrelated"]),
        );
        assert_eq!(plain.role, "member");
        assert!(plain.teams.is_empty());
    }

    #[test]
    fn only_allowed_domains_sign_in() {
        let s = sso();
        assert!(s.domain_allowed("a@example.com"));
        assert!(s.domain_allowed("a@EXAMPLE.com"));
        assert!(!s.domain_allowed("a@evil.test"));
        assert!(!s.domain_allowed("a@example.com.evil.test"));
        assert!(!s.domain_allowed("no-at-sign"));
    }
}
