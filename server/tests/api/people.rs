//! Users and team memberships through the management API, audited.

use serde_json::{Value, json};

use crate::harness::{Backend, spawn_app};
use crate::on_both_databases;

on_both_databases!(users_and_memberships, admin_api_tokens);

async fn users_and_memberships(b: Backend) {
    let app = spawn_app(b).await;
    let post = |path: &str, body: Value| app.post(path).json(&body).send();
    let team: Value = post("/admin/v1/teams", json!({"name": "gamma"}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let team_id = team["id"].as_str().unwrap().to_owned();

    let created = post(
        "/admin/v1/users",
        json!({"email": "Ada@Example.com", "display_name": "Ada"}),
    )
    .await
    .unwrap();
    assert_eq!(created.status(), 201);
    let ada: Value = created.json().await.unwrap();
    assert_eq!(
        (ada["email"].as_str(), ada["role"].as_str()),
        (Some("ada@example.com"), Some("member"))
    );
    let ada_id = ada["id"].as_str().unwrap().to_owned();
    for (body, param) in [
        (json!({"email": "ada@example.com"}), "email"),
        (json!({"email": "not an address"}), "email"),
        (json!({"email": "bob@example.com", "role": "owner"}), "role"),
    ] {
        let r = post("/admin/v1/users", body).await.unwrap();
        assert_eq!(r.status(), 400);
        assert_eq!(r.json::<Value>().await.unwrap()["error"]["param"], param);
    }

    let members_path = format!("/admin/v1/teams/{team_id}/members");
    let set = post(&members_path, json!({"user_id": ada_id, "role": "member"}))
        .await
        .unwrap();
    assert_eq!(set.status(), 200);
    let promoted = post(&members_path, json!({"user_id": ada_id, "role": "lead"}))
        .await
        .unwrap();
    assert_eq!(promoted.json::<Value>().await.unwrap()["role"], "lead");
    assert_eq!(
        post(&members_path, json!({"user_id": ada_id, "role": "boss"}))
            .await
            .unwrap()
            .status(),
        400
    );
    assert_eq!(
        post(
            &members_path,
            json!({"user_id": "user_nope", "role": "member"})
        )
        .await
        .unwrap()
        .status(),
        400
    );
    assert_eq!(
        post(
            "/admin/v1/teams/team_nope/members",
            json!({"user_id": ada_id, "role": "member"})
        )
        .await
        .unwrap()
        .status(),
        404
    );
    let members: Value = app
        .get(&members_path)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(members["data"].as_array().unwrap().len(), 1);
    assert_eq!(members["data"][0]["role"], "lead");
    let users: Value = app
        .get("/admin/v1/users")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        users["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|u| u["id"] == ada_id.as_str())
    );
    assert!(
        !users.to_string().contains("password"),
        "no password hash is listed"
    );

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
            "user.create",
            "team.member.set",
            "team.member.set"
        ]
    );
    let last = &audit["data"][3];
    assert_eq!(last["before_json"], "{\"role\":\"member\"}");
    app.finish().await;
}

async fn admin_api_tokens(b: Backend) {
    let app = spawn_app(b).await;
    let post = |path: &str, body: Value| app.post(path).json(&body).send();
    let root: Value = post(
        "/admin/v1/users",
        json!({"email": "root@example.com", "role": "admin"}),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    let dev: Value = post("/admin/v1/users", json!({"email": "dev@example.com"}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let refused = post(
        &format!("/admin/v1/users/{}/tokens", dev["id"].as_str().unwrap()),
        json!({"name": "ci"}),
    )
    .await
    .unwrap();
    assert_eq!(refused.status(), 400, "members hold no management tokens");
    let created = post(
        &format!("/admin/v1/users/{}/tokens", root["id"].as_str().unwrap()),
        json!({"name": "ci"}),
    )
    .await
    .unwrap();
    assert_eq!(created.status(), 201);
    let created: Value = created.json().await.unwrap();
    let token = created["token"].as_str().unwrap().to_owned();
    assert!(token.starts_with("sk-gwa-") && token.len() == 71, "{token}");

    // The token works on the management API, and changes are audited under its admin.
    let with_token = |method: reqwest::Method, path: &str| {
        app.http
            .request(method, format!("{}{path}", app.url))
            .bearer_auth(&token)
    };
    assert_eq!(
        with_token(reqwest::Method::GET, "/admin/v1/keys")
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let team = with_token(reqwest::Method::POST, "/admin/v1/teams")
        .json(&json!({"name": "ops"}))
        .send()
        .await
        .unwrap();
    assert_eq!(team.status(), 201);
    let audit: Value = app
        .get("/admin/v1/audit")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let last = audit["data"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(
        (last["action"].as_str(), last["actor"].as_str()),
        (Some("team.create"), Some("admin:root@example.com"))
    );
    assert!(
        !audit.to_string().contains(&token[7..]),
        "the token is not in the audit log"
    );
    // Not a proxy credential.
    let proxy = app
        .http
        .post(format!("{}/v1/chat/completions", app.url))
        .bearer_auth(&token)
        .json(&json!({"model": "local", "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(proxy.status(), 401);

    let revoke = app
        .http
        .delete(format!(
            "{}/admin/v1/tokens/{}",
            app.url,
            created["id"].as_str().unwrap()
        ))
        .bearer_auth(crate::harness::MASTER_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(revoke.status(), 200);
    assert_eq!(
        with_token(reqwest::Method::GET, "/admin/v1/keys")
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    app.finish().await;
}
