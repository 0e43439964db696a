//! Rate limits: requests and tokens per minute, requests in flight, for keys and teams;
//! 429 with `Retry-After` and OpenAI's `x-ratelimit-*` headers.

use serde_json::{Value, json};

use crate::harness::{Backend, TestApp, admin_call as admin, spawn_app_with, user};
use crate::on_both_databases;

on_both_databases!(
    requests_per_minute_per_key,
    tokens_per_minute_per_key,
    parallel_requests_per_team,
    limits_are_shared_through_redis
);

const EXTRA: &str = r#"
[[deployments]]
model = "slow"
provider = "openai-compatible"
upstream_model = "slow-500"
base_url = "@MOCK@"
api_key = "@KEY@"
"#;

/// (team id, key id, secret) of a new key with these extra fields.
async fn key_with(app: &TestApp, fields: Value) -> (String, String, String) {
    let name = format!("rl-{}", uuid::Uuid::new_v4().simple());
    let (_, team) = admin(app, reqwest::Method::POST, "/teams", json!({"name": name})).await;
    let mut body = json!({"name": "k", "team_id": team["id"]});
    for (k, v) in fields.as_object().unwrap() {
        body[k] = v.clone();
    }
    let (s, key) = admin(app, reqwest::Method::POST, "/keys", body).await;
    assert_eq!(s, 201, "{key}");
    (
        team["id"].as_str().unwrap().to_owned(),
        key["id"].as_str().unwrap().to_owned(),
        key["key"].as_str().unwrap().to_owned(),
    )
}

async fn call(app: &TestApp, key: &str, model: &str) -> reqwest::Response {
    app.http
        .post(format!("{}/v1/chat/completions", app.url))
        .bearer_auth(key)
        .json(&json!({"model": model, "messages": user("Hello from the tests")}))
        .send()
        .await
        .unwrap()
}

async fn requests_per_minute_per_key(b: Backend) {
    let app = spawn_app_with(b, EXTRA).await;
    let (_, _, key) = key_with(&app, json!({"rpm_limit": 3})).await;
    let mut remaining = Vec::new();
    for _ in 0..3 {
        let r = call(&app, &key, "gpt-test").await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["x-ratelimit-limit-requests"], "3");
        assert!(
            r.headers()["x-ratelimit-reset-requests"]
                .to_str()
                .unwrap()
                .ends_with('s')
        );
        remaining.push(
            r.headers()["x-ratelimit-remaining-requests"]
                .to_str()
                .unwrap()
                .to_owned(),
        );
    }
    assert_eq!(remaining, ["2", "1", "0"]);
    let r = call(&app, &key, "gpt-test").await;
    assert_eq!(r.status(), 429);
    assert_eq!(
        r.headers()["x-gateway-cost-usd"],
        "0.000000",
        "a cost on every answer"
    );
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["type"], "rate_limit_exceeded");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("3 requests per minute")
    );
    // The refusal is on the ledger, and the upstream never saw it.
    let rows = app.ledger_rows(4).await;
    assert_eq!(rows.iter().filter(|r| r.status == 429).count(), 1);
    assert_eq!(app.mock.calls()["chat"], 3);
    // Without a limit, no headers.
    let (_, _, free) = key_with(&app, json!({})).await;
    let r = call(&app, &free, "gpt-test").await;
    assert!(r.headers().get("x-ratelimit-limit-requests").is_none());
    app.finish().await;
}

async fn tokens_per_minute_per_key(b: Backend) {
    let app = spawn_app_with(b, EXTRA).await;
    let (_, key_id, key) = key_with(&app, json!({"tpm_limit": 30})).await;
    // Each call uses 7 + 6 tokens (counted from the upstream's usage once it answers).
    let mut ok = 0;
    let mut refused = None;
    for _ in 0..10 {
        let r = call(&app, &key, "gpt-test").await;
        if r.status() == 429 {
            refused = Some(r.json::<Value>().await.unwrap());
            break;
        }
        assert_eq!(r.status(), 200);
        ok += 1;
    }
    assert_eq!(
        ok, 3,
        "13 + 13 = 26 < 30 admits a third; 39 refuses the fourth"
    );
    let msg = refused.unwrap()["error"]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        msg.contains("30 tokens per minute") && msg.contains(&key_id),
        "{msg}"
    );
    app.finish().await;
}

async fn parallel_requests_per_team(b: Backend) {
    let app = spawn_app_with(b, EXTRA).await;
    let (team, _, key) = key_with(&app, json!({})).await;
    let (s, body) = admin(
        &app,
        reqwest::Method::PUT,
        "/rate_limits",
        json!({"scope_type": "team", "scope_id": team, "max_parallel": 2}),
    )
    .await;
    assert_eq!(s, 200, "{body}");
    let (s, _) = admin(
        &app,
        reqwest::Method::PUT,
        "/rate_limits",
        json!({"scope_type": "team", "scope_id": team, "max_parallel": 0}),
    )
    .await;
    assert_eq!(s, 400);
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let (http, url, key) = (app.http.clone(), app.url.clone(), key.clone());
        tasks.push(tokio::spawn(async move {
            http.post(format!("{url}/v1/chat/completions"))
                .bearer_auth(key)
                .json(&json!({"model": "slow", "messages": user("hi")}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }));
    }
    let mut codes = Vec::new();
    for t in tasks {
        codes.push(t.await.unwrap());
    }
    codes.sort_unstable();
    assert_eq!(codes, [200, 200, 429, 429, 429, 429]);
    // Once they finished, the slots are free again.
    assert_eq!(call(&app, &key, "slow").await.status(), 200);
    let (_, list) = admin(&app, reqwest::Method::GET, "/rate_limits", Value::Null).await;
    assert_eq!(list["data"][0]["max_parallel"], 2);
    app.finish().await;
}

async fn limits_are_shared_through_redis(b: Backend) {
    let extra = format!("@SERVER@ redis_url = \"redis://127.0.0.1:6379\"\n{EXTRA}");
    let app = spawn_app_with(b, &extra).await;
    let (_, _, key) = key_with(&app, json!({"rpm_limit": 4})).await;
    let (team2, _, key2) = key_with(&app, json!({})).await;
    // Started after the keys exist, so it knows them at once.
    let second = app.sibling().await;
    // Alternating between two instances: four in all, not four each.
    let urls = [app.url.clone(), second.url.clone()];
    let mut codes = Vec::new();
    for i in 0..8 {
        let r = app
            .http
            .post(format!("{}/v1/chat/completions", urls[i % 2]))
            .bearer_auth(&key)
            .json(&json!({"model": "gpt-test", "messages": user("Hello from the tests")}))
            .send()
            .await
            .unwrap();
        codes.push(r.status().as_u16());
    }
    assert_eq!(codes, [200, 200, 200, 200, 429, 429, 429, 429]);
    // Requests in flight are shared too, and freed when they end.
    let (s, _) = admin(
        &app,
        reqwest::Method::PUT,
        "/rate_limits",
        json!({"scope_type": "team", "scope_id": team2, "max_parallel": 1}),
    )
    .await;
    assert_eq!(s, 200);
    // The other instance reads limit changes within a second.
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    let send = |url: String| {
        let (http, key) = (app.http.clone(), key2.clone());
        async move {
            http.post(format!("{url}/v1/chat/completions"))
                .bearer_auth(key)
                .json(&json!({"model": "slow", "messages": user("hi")}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    let first = tokio::spawn(send(urls[0].clone()));
    tokio::time::sleep(std::time::Duration::from_millis(150)).await;
    let other = send(urls[1].clone()).await;
    assert_eq!((first.await.unwrap(), other), (200, 429));
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    assert_eq!(send(urls[1].clone()).await, 200, "the place was freed");
    second.stop().await;
    app.finish().await;
}
