//! Users and team memberships through the management API, audited.

use serde_json::{Value, json};

use crate::harness::{Backend, spawn_app};
use crate::on_both_databases;

on_both_databases!(users_and_memberships);

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
