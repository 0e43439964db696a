//! Single sign-on against the project's OpenID Connect provider (`testkit::mock_oidc`):
//! the whole code flow over HTTP as a browser makes it, just-in-time users with roles and
//! teams from their groups, and every way a sign-in must be refused.

use gateway::testkit::mock_oidc::{Fault, MockOidc, MockUser};
use reqwest::StatusCode;
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};

use crate::harness::{Backend, TestApp, spawn_app_with};
use crate::on_both_databases;

on_both_databases!(
    sign_in_creates_the_user_with_roles_and_teams,
    forged_or_replayed_sign_ins_are_refused,
    broken_id_tokens_are_refused,
    only_allowed_domains_and_verified_emails_sign_in
);

pub const CLIENT_ID: &str = "gateway-tests";
pub const CLIENT_SECRET: &str = "client secret: +/ &%";

pub fn sso_toml(issuer: &str) -> String {
    format!(
        r#"
[sso]
issuer = "{issuer}"
client_id = "{CLIENT_ID}"
client_secret = "{CLIENT_SECRET}"
redirect_url = "http://127.0.0.1:9/auth/callback"
scopes = ["email", "profile", "groups"]
allowed_domains = ["example.com"]
label = "Sign in with Example"

[[sso.roles]]
group = "gw-admins"
role = "admin"

[[sso.roles]]
group = "gw-finance"
role = "finance"

[[sso.teams]]
group = "alpha"
team = "Alpha"

[[sso.teams]]
group = "alpha-leads"
team = "Alpha"
role = "lead"

[[sso.teams]]
group = "beta"
team = "Beta"

[[sso.teams]]
group = "beta-leads"
team = "Beta"
role = "lead"
"#
    )
}

pub async fn spawn_with_sso(b: Backend) -> (TestApp, MockOidc) {
    let idp = MockOidc::start(CLIENT_ID, CLIENT_SECRET).await;
    let app = spawn_app_with(b, &sso_toml(idp.issuer())).await;
    (app, idp)
}

pub fn person(login: &str, groups: &[&str]) -> MockUser {
    MockUser {
        sub: format!("sub-{login}"),
        email: format!("{login}@example.com"),
        email_verified: true,
        name: format!("{login} Example"),
        groups: groups.iter().map(|g| (*g).to_owned()).collect(),
    }
}

fn cookie_pair(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap_or_default().to_owned()
}

/// A sign-in up to the provider's answer: (attempt cookie, callback query string).
pub async fn start_sign_in(app: &TestApp) -> (String, String) {
    let start = app
        .http
        .get(format!("{}/auth/login", app.url))
        .send()
        .await
        .unwrap();
    assert!(start.status().is_redirection(), "{}", start.status());
    let attempt = cookie_pair(start.headers()[SET_COOKIE].to_str().unwrap());
    assert!(attempt.starts_with("gateway_sso="), "{attempt}");
    let to_idp = start.headers()[LOCATION].to_str().unwrap().to_owned();
    let back = app.http.get(&to_idp).send().await.unwrap();
    assert_eq!(
        back.status(),
        StatusCode::FOUND,
        "{}",
        back.text().await.unwrap()
    );
    let back_to = back.headers()[LOCATION].to_str().unwrap().to_owned();
    let query = back_to.split_once('?').unwrap().1.to_owned();
    (attempt, query)
}

/// The provider's redirect back to the gateway, as the browser follows it.
pub async fn callback(app: &TestApp, attempt: Option<&str>, query: &str) -> reqwest::Response {
    let mut req = app.http.get(format!("{}/auth/callback?{query}", app.url));
    if let Some(c) = attempt {
        req = req.header(COOKIE, c);
    }
    req.send().await.unwrap()
}

/// Signs `user` in through the provider; the session cookie, or the refusal's status.
pub async fn sso_sign_in(
    app: &TestApp,
    idp: &MockOidc,
    user: MockUser,
) -> Result<String, StatusCode> {
    idp.set_user(user);
    let (attempt, query) = start_sign_in(app).await;
    let done = callback(app, Some(&attempt), &query).await;
    let cookies: Vec<String> = done
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect();
    // The attempt cookie is cleared whatever the outcome.
    assert!(
        cookies
            .iter()
            .any(|c| c.starts_with("gateway_sso=;") && c.contains("Max-Age=0")),
        "{cookies:?}"
    );
    if done.status() != StatusCode::SEE_OTHER {
        let status = done.status();
        let body = done.text().await.unwrap();
        assert!(body.contains("data-testid=\"sso-error\""), "{body}");
        assert!(
            !cookies.iter().any(|c| c.starts_with("gateway_session=")),
            "no session for a refused sign-in"
        );
        return Err(status);
    }
    assert_eq!(done.headers()[LOCATION], "/");
    let session = cookies
        .iter()
        .find(|c| c.starts_with("gateway_session="))
        .expect("session cookie");
    assert!(session.contains("HttpOnly") && session.contains("SameSite=Lax"));
    Ok(cookie_pair(session))
}

pub async fn me(app: &TestApp, cookie: &str) -> serde_json::Value {
    app.http
        .get(format!("{}/api/me", app.url))
        .header(COOKIE, cookie)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn sign_in_creates_the_user_with_roles_and_teams(b: Backend) {
    let (app, idp) = spawn_with_sso(b).await;
    // The sign-in page offers SSO.
    let login = app
        .http
        .get(format!("{}/login", app.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        login.contains("href=\"/auth/login\"") && login.contains("Sign in with Example"),
        "{login}"
    );

    let cookie = sso_sign_in(
        &app,
        &idp,
        person("bob", &["alpha", "alpha-leads", "gw-finance"]),
    )
    .await
    .expect("bob signs in");
    // PKCE S256, state and nonce went to the provider.
    let q = idp.last_authorize_query().unwrap();
    let get = |k: &str| q.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    assert_eq!(get("code_challenge_method").as_deref(), Some("S256"));
    assert!(get("code_challenge").is_some_and(|c| c.len() >= 43));
    assert!(get("state").is_some_and(|s| s.len() >= 16));
    assert!(get("nonce").is_some_and(|s| s.len() >= 16));
    assert!(get("scope").is_some_and(|s| s.split(' ').any(|x| x == "openid")));

    let me1 = me(&app, &cookie).await;
    assert_eq!(me1["username"], "bob@example.com");
    assert_eq!(me1["role"], "finance");
    let teams = me1["teams"].as_array().unwrap();
    assert_eq!(teams.len(), 1, "{me1}");
    assert_eq!(teams[0]["name"], "Alpha");
    assert_eq!(teams[0]["role"], "lead");
    // The console's pages open with the SSO session.
    let page = app
        .http
        .get(format!("{}/keys", app.url))
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);

    // The groups change at the provider: the next sign-in follows them (lead → member of
    // Beta only, no longer finance), and the user is the same one (found by subject).
    let again = sso_sign_in(&app, &idp, person("bob", &["beta"]))
        .await
        .expect("bob signs in again");
    assert_ne!(again, cookie, "a new session id at every sign-in");
    let me2 = me(&app, &again).await;
    assert_eq!(me2["id"], me1["id"]);
    assert_eq!(me2["role"], "member");
    let teams = me2["teams"].as_array().unwrap();
    assert_eq!(teams.len(), 1, "{me2}");
    assert_eq!(teams[0]["name"], "Beta");
    assert_eq!(teams[0]["role"], "member");

    // Just-in-time creation, membership changes and role changes are all audited.
    let audit: serde_json::Value = app
        .http
        .get(format!("{}/admin/v1/audit", app.url))
        .bearer_auth(crate::harness::MASTER_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(audit["chain_intact"], true);
    let actions: Vec<&str> = audit["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["actor"] == "sso")
        .map(|r| r["action"].as_str().unwrap())
        .collect();
    for want in [
        "user.sso_create",
        "team.create",
        "team.member.set",
        "user.sso_update",
        "team.member.remove",
    ] {
        assert!(actions.contains(&want), "{want} in {actions:?}");
    }
    app.finish().await;
}

async fn forged_or_replayed_sign_ins_are_refused(b: Backend) {
    let (app, idp) = spawn_with_sso(b).await;
    idp.set_user(person("alice", &["alpha"]));

    // Missing or wrong state.
    let (attempt, query) = start_sign_in(&app).await;
    let no_state: String = query
        .split('&')
        .filter(|kv| !kv.starts_with("state="))
        .collect::<Vec<_>>()
        .join("&");
    assert_eq!(
        callback(&app, Some(&attempt), &no_state).await.status(),
        400
    );
    let (attempt, query) = start_sign_in(&app).await;
    let bad_state: String = query
        .split('&')
        .map(|kv| {
            if kv.starts_with("state=") {
                "state=forged-state-value".to_owned()
            } else {
                kv.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("&");
    assert_eq!(
        callback(&app, Some(&attempt), &bad_state).await.status(),
        400
    );
    // The attempt is spent by the failed try: the genuine answer cannot follow it.
    assert_eq!(callback(&app, Some(&attempt), &query).await.status(), 400);

    // Without the browser's attempt cookie (a login started elsewhere, or a link planted
    // by an attacker), the provider's answer is refused.
    let (_attempt, query) = start_sign_in(&app).await;
    let calls = idp.token_calls();
    assert_eq!(callback(&app, None, &query).await.status(), 400);
    assert_eq!(idp.token_calls(), calls, "no code exchange for it");

    // A code used once cannot sign anyone in again, even inside a fresh attempt.
    let (attempt, query) = start_sign_in(&app).await;
    let ok = callback(&app, Some(&attempt), &query).await;
    assert_eq!(ok.status(), StatusCode::SEE_OTHER);
    let old_code = query
        .split('&')
        .find(|kv| kv.starts_with("code="))
        .unwrap()
        .to_owned();
    let (attempt2, query2) = start_sign_in(&app).await;
    let replay: String = query2
        .split('&')
        .map(|kv| {
            if kv.starts_with("code=") {
                old_code.clone()
            } else {
                kv.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("&");
    let refused = callback(&app, Some(&attempt2), &replay).await;
    assert_eq!(refused.status(), 401);
    assert!(
        !refused
            .headers()
            .get_all(SET_COOKIE)
            .iter()
            .any(|c| c.to_str().unwrap().starts_with("gateway_session=")),
        "no session from a replayed code"
    );

    // The provider reporting an error (the person cancelled).
    let (attempt, query) = start_sign_in(&app).await;
    let state = query
        .split('&')
        .find(|kv| kv.starts_with("state="))
        .unwrap()
        .to_owned();
    let cancelled = format!("error=access_denied&{state}");
    assert_eq!(
        callback(&app, Some(&attempt), &cancelled).await.status(),
        401
    );
    app.finish().await;
}

async fn broken_id_tokens_are_refused(b: Backend) {
    let (app, idp) = spawn_with_sso(b).await;
    for fault in [
        Fault::WrongNonce,
        Fault::WrongAudience,
        Fault::WrongIssuer,
        Fault::Unsigned,
        Fault::WrongKey,
        Fault::Expired,
    ] {
        idp.set_fault(fault);
        assert_eq!(
            sso_sign_in(&app, &idp, person("alice", &["gw-admins"])).await,
            Err(StatusCode::UNAUTHORIZED),
            "{fault:?}"
        );
    }
    // Nobody was created by any of them.
    let users: serde_json::Value = app
        .http
        .get(format!("{}/admin/v1/users", app.url))
        .bearer_auth(crate::harness::MASTER_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(!users.to_string().contains("alice@example.com"), "{users}");
    idp.set_fault(Fault::None);
    let cookie = sso_sign_in(&app, &idp, person("alice", &["gw-admins"]))
        .await
        .expect("a sound token signs in");
    assert_eq!(me(&app, &cookie).await["role"], "admin");
    app.finish().await;
}

async fn only_allowed_domains_and_verified_emails_sign_in(b: Backend) {
    let (app, idp) = spawn_with_sso(b).await;
    let mut mallory = person("mallory", &["gw-admins"]);
    mallory.email = "mallory@evil.test".into();
    assert_eq!(
        sso_sign_in(&app, &idp, mallory).await,
        Err(StatusCode::FORBIDDEN)
    );
    let mut lookalike = person("eve", &["gw-admins"]);
    lookalike.email = "eve@example.com.evil.test".into();
    assert_eq!(
        sso_sign_in(&app, &idp, lookalike).await,
        Err(StatusCode::FORBIDDEN)
    );
    let mut unverified = person("trent", &["gw-admins"]);
    unverified.email_verified = false;
    assert_eq!(
        sso_sign_in(&app, &idp, unverified).await,
        Err(StatusCode::FORBIDDEN)
    );
    // Starting sign-ins stores attempts: one address cannot start them without bound.
    let mut codes = Vec::new();
    for _ in 0..31 {
        let r = app
            .http
            .get(format!("{}/auth/login", app.url))
            .send()
            .await
            .unwrap();
        codes.push(r.status().as_u16());
    }
    assert_eq!(codes.last(), Some(&429), "{codes:?}");
    app.finish().await;
}
