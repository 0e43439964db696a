//! Virtual keys through the management API: created (secret shown once, stored as a keyed
//! hash), used on the proxy with their model allow-list, rotated with a grace period,
//! revoked (at once here, within a second on another instance), every change audited.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::{Backend, TestApp, spawn_app, user};
use crate::on_both_databases;

on_both_databases!(
    key_lifecycle_through_the_admin_api,
    revoked_key_is_refused_by_another_instance
);

async fn admin_post(app: &TestApp, path: &str, body: Value) -> reqwest::Response {
    app.post(path).json(&body).send().await.unwrap()
}

async fn chat_with(app: &TestApp, url: &str, key: &str, model: &str) -> reqwest::Response {
    app.http
        .post(format!("{url}/v1/chat/completions"))
        .bearer_auth(key)
        .json(&json!({"model": model, "messages": user("hi")}))
        .send()
        .await
        .unwrap()
}

async fn new_key(app: &TestApp, body: Value) -> Value {
    let resp = admin_post(app, "/admin/v1/keys", body).await;
    assert_eq!(resp.status(), 201);
    resp.json().await.unwrap()
}

async fn key_lifecycle_through_the_admin_api(b: Backend) {
    let app = spawn_app(b).await;
    let team: Value = admin_post(&app, "/admin/v1/teams", json!({"name": "alpha"}))
        .await
        .json()
        .await
        .unwrap();
    let team_id = team["id"].as_str().unwrap();
    let dup = admin_post(&app, "/admin/v1/teams", json!({"name": "alpha"})).await;
    assert_eq!(dup.status(), 400);
    let bad = admin_post(
        &app,
        "/admin/v1/keys",
        json!({"name": "x", "team_id": team_id, "models": ["nope"]}),
    )
    .await;
    assert_eq!(bad.status(), 400);

    let created = new_key(
        &app,
        json!({"name": "svc", "team_id": team_id, "project": "web", "models": ["gpt-test"], "tags": ["web"],
               "budget_usd": 1.5, "budget_period": "monthly", "rpm_limit": 60}),
    )
    .await;
    let secret = created["key"].as_str().unwrap().to_owned();
    let id = created["id"].as_str().unwrap().to_owned();
    assert!(
        secret.starts_with("sk-gw-") && secret.len() == 70,
        "{secret}"
    );
    assert!(secret.starts_with(created["prefix"].as_str().unwrap()));
    assert_eq!(created["budget_usd"], 1.5);

    // On the proxy: its models only, attributed to its team and project.
    assert_eq!(
        chat_with(&app, &app.url, &secret, "gpt-test")
            .await
            .status(),
        200
    );
    let denied = chat_with(&app, &app.url, &secret, "local").await;
    assert_eq!(denied.status(), 403);
    assert_eq!(
        denied.json::<Value>().await.unwrap()["error"]["code"],
        "model_not_allowed"
    );
    let models: Value = app
        .http
        .get(format!("{}/v1/models", app.url))
        .bearer_auth(&secret)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(models["data"].as_array().unwrap().len(), 1);
    let admin = app
        .http
        .get(format!("{}/admin/v1/deployments", app.url))
        .bearer_auth(&secret)
        .send()
        .await
        .unwrap();
    assert_eq!(
        admin.status(),
        403,
        "virtual keys never reach the management API"
    );
    let rows = app.ledger_rows(2).await;
    let r = rows.iter().find(|r| r.status == 200).unwrap();
    assert_eq!(r.key_id.as_deref(), Some(id.as_str()));
    assert_eq!(r.tags, "[\"web\"]");

    // Listed without the secret or its hash; the hash is no credential.
    let list = app
        .get("/admin/v1/keys")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        !list.contains(&secret) && !list.contains("key_hash"),
        "{list}"
    );
    let listed: Value = serde_json::from_str(&list).unwrap();
    assert!(
        listed["data"][0].get("key").is_none(),
        "the secret is shown once only"
    );
    let stored: Vec<(Option<String>,)> = match &app.store {
        gateway::store::Store::Sqlite(p) => sqlx::query_as("SELECT key_hash FROM api_keys")
            .fetch_all(p)
            .await
            .unwrap(),
        gateway::store::Store::Postgres(p) => sqlx::query_as("SELECT key_hash FROM api_keys")
            .fetch_all(p)
            .await
            .unwrap(),
    };
    let hash = stored[0].0.clone().unwrap();
    assert_ne!(hash, secret);
    assert!(!hash.contains(&secret[6..]));
    assert_eq!(
        chat_with(&app, &app.url, &hash, "gpt-test").await.status(),
        401
    );
    assert_eq!(
        chat_with(
            &app,
            &app.url,
            &format!("sk-gw-{}", &hash[..64]),
            "gpt-test"
        )
        .await
        .status(),
        401
    );

    // Rotation: both secrets work during the grace period; with no grace the old one stops.
    let rotated: Value = admin_post(
        &app,
        &format!("/admin/v1/keys/{id}/rotate"),
        json!({"grace_seconds": 600}),
    )
    .await
    .json()
    .await
    .unwrap();
    let second = rotated["key"].as_str().unwrap().to_owned();
    assert_ne!(second, secret);
    assert_eq!(
        chat_with(&app, &app.url, &secret, "gpt-test")
            .await
            .status(),
        200
    );
    assert_eq!(
        chat_with(&app, &app.url, &second, "gpt-test")
            .await
            .status(),
        200
    );
    let third: Value = admin_post(
        &app,
        &format!("/admin/v1/keys/{id}/rotate"),
        json!({"grace_seconds": 0}),
    )
    .await
    .json()
    .await
    .unwrap();
    let third = third["key"].as_str().unwrap().to_owned();
    assert_eq!(
        chat_with(&app, &app.url, &second, "gpt-test")
            .await
            .status(),
        401
    );
    assert_eq!(
        chat_with(&app, &app.url, &secret, "gpt-test")
            .await
            .status(),
        401
    );
    assert_eq!(
        chat_with(&app, &app.url, &third, "gpt-test").await.status(),
        200
    );

    // Revocation: refused at once.
    let revoked = app
        .http
        .delete(format!("{}/admin/v1/keys/{id}", app.url))
        .bearer_auth(crate::harness::MASTER_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 200);
    assert_eq!(
        chat_with(&app, &app.url, &third, "gpt-test").await.status(),
        401
    );
    let again = admin_post(&app, &format!("/admin/v1/keys/{id}/rotate"), json!({})).await;
    assert_eq!(
        again.status(),
        409,
        "a revoked key cannot be rotated back to life"
    );
    let missing = app
        .http
        .delete(format!("{}/admin/v1/keys/key_nope", app.url))
        .bearer_auth(crate::harness::MASTER_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);

    // Every change audited, in a chain that verifies.
    let audit: Value = app
        .get("/admin/v1/audit")
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
        .map(|r| r["action"].as_str().unwrap())
        .collect();
    assert_eq!(
        actions,
        [
            "team.create",
            "key.create",
            // The key was created with a budget and an rpm limit: those are its own rows.
            "budget.set",
            "rate_limit.set",
            "key.rotate",
            "key.rotate",
            "key.revoke"
        ]
    );
    assert!(
        !audit.to_string().contains(&third[6..]) && !audit.to_string().contains(&hash),
        "no secret or hash in the audit log"
    );
    app.finish().await;
}

async fn revoked_key_is_refused_by_another_instance(b: Backend) {
    let app = spawn_app(b).await;
    let other = app.sibling().await;
    let team: Value = admin_post(&app, "/admin/v1/teams", json!({"name": "beta"}))
        .await
        .json()
        .await
        .unwrap();
    let created = new_key(&app, json!({"name": "svc", "team_id": team["id"]})).await;
    let secret = created["key"].as_str().unwrap().to_owned();
    let id = created["id"].as_str().unwrap().to_owned();

    // The other instance learns of the new key by its refresh.
    let deadline = Instant::now() + Duration::from_secs(5);
    while chat_with(&app, &other.url, &secret, "gpt-test")
        .await
        .status()
        != 200
    {
        assert!(
            Instant::now() < deadline,
            "the other instance never accepted the key"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let revoked_at = Instant::now();
    let r = app
        .http
        .delete(format!("{}/admin/v1/keys/{id}", app.url))
        .bearer_auth(crate::harness::MASTER_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    loop {
        let status = chat_with(&app, &other.url, &secret, "gpt-test")
            .await
            .status();
        if status == 401 {
            break;
        }
        assert!(
            revoked_at.elapsed() < Duration::from_millis(1500),
            "still accepted {:?} after revocation",
            revoked_at.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    other.stop().await;
    app.finish().await;
}

#[tokio::test]
async fn openapi_document_lists_every_management_route() {
    let app = spawn_app(Backend::Sqlite).await;
    let doc: Value = app
        .http
        .get(format!("{}/admin/v1/openapi.json", app.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    for (path, method) in [
        ("/deployments", "get"),
        ("/teams", "get"),
        ("/teams", "post"),
        ("/keys", "get"),
        ("/keys", "post"),
        ("/keys/{id}", "delete"),
        ("/keys/{id}/rotate", "post"),
        ("/keys/{id}", "get"),
        ("/keys/{id}", "patch"),
        ("/keys/{id}/approve", "post"),
        ("/keys/{id}/reject", "post"),
        ("/teams/{id}", "patch"),
        ("/teams/{id}/projects", "get"),
        ("/teams/{id}/members/{user_id}", "delete"),
        ("/users/{id}", "patch"),
        ("/budgets", "get"),
        ("/budgets", "put"),
        ("/budgets/{scope_type}/{scope_id}", "delete"),
        ("/rate_limits", "get"),
        ("/rate_limits", "put"),
        ("/spend", "get"),
        ("/audit", "get"),
        ("/users", "get"),
        ("/users", "post"),
        ("/teams/{id}/members", "get"),
        ("/teams/{id}/members", "post"),
        ("/users/{id}/tokens", "post"),
        ("/tokens/{id}", "delete"),
    ] {
        assert!(
            paths[path][method].is_object(),
            "{method} {path} is not documented"
        );
        // And the route exists: refused without credentials, and with the master key not
        // a 404/405 (an unknown id answers 404 in JSON with code `unknown_url` only when the
        // route itself is missing).
        let url = format!("{}/admin/v1{}", app.url, path.replace("{id}", "x"));
        let method: reqwest::Method = method.to_uppercase().parse().unwrap();
        let anon = app.http.request(method.clone(), &url).send().await.unwrap();
        assert_eq!(anon.status(), 401, "{method} {path}");
        let authed = app
            .http
            .request(method.clone(), &url)
            .bearer_auth(crate::harness::MASTER_KEY)
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        let status = authed.status();
        let text = authed.text().await.unwrap();
        assert!(
            status != 405 && !text.contains("unknown_url"),
            "{method} {path}: {status} {text}"
        );
    }
    // Every $ref points at a schema that exists.
    let text = doc.to_string();
    for r in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
        let name = r.split('"').next().unwrap();
        assert!(
            doc["components"]["schemas"][name].is_object(),
            "missing schema {name}"
        );
    }
    app.finish().await;
}
