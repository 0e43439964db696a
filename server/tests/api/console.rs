//! The console over plain HTTP, as a browser without JavaScript uses it: the gate, sign-in,
//! the Overview (read from the database through a server function), sign-out, first-run
//! setup, and refusal of cross-site posts.

use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use serde_json::json;

use crate::harness::{
    ADMIN_PASSWORD, Backend, MASTER_KEY, TestApp, spawn_app, spawn_app_opts, user,
};
use crate::on_both_databases;

on_both_databases!(
    sign_in_overview_sign_out,
    wrong_password_and_throttling,
    first_run_setup_needs_master_key,
    cross_site_posts_are_refused
);

fn form(app: &TestApp, path: &str, fields: &[(&str, &str)]) -> reqwest::RequestBuilder {
    app.http
        .post(format!("{}{path}", app.url))
        .header("accept", "text/html")
        .header("origin", app.url.clone())
        .form(fields)
}

/// The session's anti-forgery token, as the pages get it.
pub async fn csrf(app: &TestApp, cookie: &str) -> String {
    let me: serde_json::Value = app
        .http
        .get(format!("{}/api/me", app.url))
        .header(COOKIE, cookie)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    me["csrf"].as_str().expect("signed in").to_owned()
}

/// Signs in through the form and returns the session cookie (`name=value`).
pub async fn sign_in(app: &TestApp, password: &str) -> Result<String, String> {
    let resp = form(
        app,
        "/api/sign_in",
        &[("username", "admin"), ("password", password)],
    )
    .send()
    .await
    .unwrap();
    let location = resp
        .headers()
        .get(LOCATION)
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    assert!(resp.status().is_redirection(), "{}", resp.status());
    match resp.headers().get(SET_COOKIE) {
        Some(c) if location == "/" => {
            let c = c.to_str().unwrap();
            assert!(
                c.contains("HttpOnly") && c.contains("SameSite=Lax") && c.contains("Path=/"),
                "{c}"
            );
            Ok(c.split(';').next().unwrap().to_owned())
        }
        _ => Err(location),
    }
}

async fn sign_in_overview_sign_out(b: Backend) {
    let app = spawn_app(b).await;
    // Signed out: every page sends you to the sign-in page; server functions say 401.
    for path in ["/", "/keys", "/settings", "/nowhere"] {
        let r = app
            .http
            .get(format!("{}{path}", app.url))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 303, "{path}");
        assert_eq!(r.headers()[LOCATION], "/login");
    }
    let head = app.http.head(format!("{}/", app.url)).send().await.unwrap();
    assert_eq!(head.status(), 303, "HEAD is gated like GET");
    let r = app
        .http
        .get(format!("{}/api/overview", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let login = app
        .http
        .get(format!("{}/login", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 200);
    assert!(
        login
            .text()
            .await
            .unwrap()
            .contains("action=\"/api/sign_in\"")
    );

    // Some traffic for the Overview to count: 2 calls, 7+6 and 6+5 tokens (see proxy tests).
    assert_eq!(
        app.chat(json!({"model": "gpt-test", "messages": user("Hello from the tests")}))
            .await
            .status(),
        200
    );
    assert_eq!(
        app.chat(json!({"model": "gpt-test", "messages": user("one two three")}))
            .await
            .status(),
        200
    );
    app.ledger_rows(2).await;

    let cookie = sign_in(&app, ADMIN_PASSWORD).await.expect("signed in");
    let page = app
        .http
        .get(format!("{}/", app.url))
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    assert!(html.contains("<h1>Overview</h1>"), "{html}");
    // The data is in the document itself, not in streamed fragments that need a script.
    assert!(
        !html.contains("<template") && !html.contains("Loading…"),
        "{html}"
    );
    assert!(html.contains("data-testid=\"stat-requests\""), "{html}");
    assert!(
        html.contains("gpt-test") && html.contains("embed-test"),
        "models listed"
    );
    assert!(html.contains("data-testid=\"who\""), "signed-in user shown");
    for nav in [
        "My keys",
        "Team",
        "Users &amp; roles",
        "Spend",
        "Audit",
        "Models",
        "Settings",
    ] {
        assert!(html.contains(&format!(">{nav}</a>")), "nav {nav}");
    }
    // The server function reads the ledger.
    let o: serde_json::Value = app
        .http
        .get(format!("{}/api/overview", app.url))
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(o["requests_today"], 2);
    assert_eq!(o["prompt_tokens_today"], 13);
    assert_eq!(o["completion_tokens_today"], 11);
    assert_eq!(o["models"].as_array().unwrap().len(), 3);

    // Signing out changes state: without the session's anti-forgery token it is refused.
    let forged = form(&app, "/api/sign_out", &[])
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
    let token = csrf(&app, &cookie).await;
    let out = form(&app, "/api/sign_out", &[("csrf_token", token.as_str())])
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    assert!(out.status().is_redirection());
    assert_eq!(out.headers()[LOCATION], "/login?signed_out=1");
    assert!(
        out.headers()[SET_COOKIE]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
    // The session is gone on the server, not just in the browser.
    let again = app
        .http
        .get(format!("{}/", app.url))
        .header(COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 303);
    app.finish().await;
}

async fn wrong_password_and_throttling(b: Backend) {
    let app = spawn_app(b).await;
    assert_eq!(
        sign_in(&app, "not the password").await,
        Err("/login?error=invalid".to_owned())
    );
    let forged = app
        .http
        .get(format!("{}/", app.url))
        .header(COOKIE, format!("gateway_session={}", "a".repeat(64)));
    assert_eq!(forged.send().await.unwrap().status(), 303);
    for _ in 0..4 {
        let _ = sign_in(&app, "still wrong").await;
    }
    // Five failures within a minute: even the right password waits now.
    assert_eq!(
        sign_in(&app, ADMIN_PASSWORD).await,
        Err("/login?error=throttled".to_owned())
    );
    app.finish().await;
}

async fn first_run_setup_needs_master_key(b: Backend) {
    let app = spawn_app_opts(b, "", false).await;
    let page = app
        .http
        .get(format!("{}/setup", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let setup = |key: &'static str, pw: &'static str| {
        form(
            &app,
            "/api/setup_admin",
            &[("master_key", key), ("password", pw), ("confirm", pw)],
        )
        .send()
    };
    let r = setup("wrong-master-key-000000", "a long enough password")
        .await
        .unwrap();
    assert_eq!(r.headers()[LOCATION], "/setup?error=denied");
    let r = setup(MASTER_KEY, "short").await.unwrap();
    assert_eq!(r.headers()[LOCATION], "/setup?error=weak");
    let r = setup(MASTER_KEY, "a long enough password").await.unwrap();
    assert_eq!(r.headers()[LOCATION], "/login?setup=done");
    // Only once: a second setup cannot replace the admin.
    let r = setup(MASTER_KEY, "another long password").await.unwrap();
    assert_eq!(r.headers()[LOCATION], "/setup?error=denied");
    let page = app
        .http
        .get(format!("{}/setup", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 303);
    assert!(sign_in(&app, "a long enough password").await.is_ok());
    app.finish().await;
}

async fn cross_site_posts_are_refused(b: Backend) {
    let app = spawn_app(b).await;
    let evil = app
        .http
        .post(format!("{}/api/sign_in", app.url))
        .header("origin", "https://evil.example")
        .form(&[("username", "admin"), ("password", ADMIN_PASSWORD)])
        .send()
        .await
        .unwrap();
    assert_eq!(evil.status(), 403);
    assert!(evil.headers().get(SET_COOKIE).is_none());
    let fetch_meta = app
        .http
        .post(format!("{}/api/sign_out", app.url))
        .header("sec-fetch-site", "cross-site")
        .send()
        .await
        .unwrap();
    assert_eq!(fetch_meta.status(), 403);
    app.finish().await;
}
