//! Self-service keys through the console's server functions, as signed-in SSO users:
//! request → approve → reveal once → use → revoke, and the authorisation matrix (team A's
//! people against team B's objects, members against their own limits), and CSRF.

use reqwest::StatusCode;
use reqwest::header::COOKIE;
use serde_json::{Value, json};

use crate::harness::{Backend, MASTER_KEY, TestApp, user};
use crate::on_both_databases;
use crate::sso::{me, person, spawn_with_sso, sso_sign_in};

on_both_databases!(
    request_approve_reveal_use_revoke,
    team_a_cannot_touch_team_b,
    members_cannot_raise_their_own_access,
    state_changes_need_the_session_csrf_token,
    the_management_api_does_what_the_console_does,
    budgets_in_the_console_follow_roles
);

/// A signed-in person: session cookie and anti-forgery token.
struct Session {
    cookie: String,
    csrf: String,
    id: String,
}

async fn session(
    app: &TestApp,
    idp: &gateway::testkit::mock_oidc::MockOidc,
    login: &str,
    groups: &[&str],
) -> Session {
    let cookie = sso_sign_in(app, idp, person(login, groups))
        .await
        .expect("signs in");
    let me = me(app, &cookie).await;
    Session {
        csrf: me["csrf"].as_str().unwrap().to_owned(),
        id: me["id"].as_str().unwrap().to_owned(),
        cookie,
    }
}

/// Calls a state-changing server function as `who` (with their token, unless overridden).
async fn call(
    app: &TestApp,
    who: &Session,
    name: &str,
    fields: &[(&str, &str)],
) -> (StatusCode, Value) {
    let mut form: Vec<(&str, &str)> = vec![("csrf_token", who.csrf.as_str())];
    form.extend_from_slice(fields);
    let r = app
        .http
        .post(format!("{}/api/{name}", app.url))
        .header(COOKIE, &who.cookie)
        .form(&form)
        .send()
        .await
        .unwrap();
    let status = r.status();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn read(app: &TestApp, who: &Session, name: &str) -> (StatusCode, Value) {
    let r = app
        .http
        .get(format!("{}/api/{name}", app.url))
        .header(COOKIE, &who.cookie)
        .send()
        .await
        .unwrap();
    let status = r.status();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

fn team_id(me_teams: &Value, name: &str) -> String {
    me_teams["teams"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == name)
        .map(|t| t["id"].as_str().unwrap().to_owned())
        .expect("team")
}

async fn chat_with_key(app: &TestApp, key: &str) -> StatusCode {
    app.http
        .post(format!("{}/v1/chat/completions", app.url))
        .bearer_auth(key)
        .json(&json!({"model": "gpt-test", "messages": user("hi")}))
        .send()
        .await
        .unwrap()
        .status()
}

/// alice requests a key in Alpha; bob (Alpha's lead) approves it. Returns the key id.
async fn requested_and_approved(app: &TestApp, alice: &Session, bob: &Session) -> String {
    let alpha = team_id(&me(app, &alice.cookie).await, "Alpha");
    let (s, key) = call(
        app,
        alice,
        "request_key",
        &[
            ("team_id", &alpha),
            ("name", "notebook"),
            ("project", "research"),
            ("models", "gpt-test"),
            ("purpose", "experiments"),
        ],
    )
    .await;
    assert_eq!(s, 200, "{key}");
    assert_eq!(key["status"], "requested");
    assert_eq!(key["project"], "research");
    let id = key["id"].as_str().unwrap().to_owned();
    let (s, decided) = call(
        app,
        bob,
        "decide_key",
        &[("key_id", &id), ("decision", "approve")],
    )
    .await;
    assert_eq!(s, 200, "{decided}");
    assert_eq!(decided["status"], "approved");
    id
}

async fn request_approve_reveal_use_revoke(b: Backend) {
    let (app, idp) = spawn_with_sso(b).await;
    let alice = session(&app, &idp, "alice", &["alpha"]).await;
    let bob = session(&app, &idp, "bob", &["alpha", "alpha-leads"]).await;
    let id = requested_and_approved(&app, &alice, &bob).await;

    // The lead sees the team's key, never a secret.
    let (_, teams) = read(&app, &bob, "teams").await;
    assert!(teams.to_string().contains(&id));
    assert!(!teams.to_string().contains("sk-gw-"), "{teams}");

    // The owner reveals it once.
    let (s, secret) = call(&app, &alice, "reveal_key", &[("key_id", &id)]).await;
    assert_eq!(s, 200, "{secret}");
    let key = secret["secret"].as_str().unwrap().to_owned();
    assert!(key.starts_with("sk-gw-") && key.len() == 70, "{key}");
    let (s, again) = call(&app, &alice, "reveal_key", &[("key_id", &id)]).await;
    assert_eq!(s, 409, "{again}");
    let (_, mine) = read(&app, &alice, "my_keys").await;
    assert!(!mine.to_string().contains(&key), "never shown again");
    assert_eq!(mine["keys"][0]["status"], "active");
    assert_eq!(chat_with_key(&app, &key).await, 200);

    // The ledger attributes the call to the key, its team, project and owner.
    let rows = app.ledger_rows(1).await;
    assert_eq!(rows[0].key_id.as_deref(), Some(id.as_str()));
    assert_eq!(rows[0].user_id.as_deref(), Some(alice.id.as_str()));
    assert!(rows[0].project_id.is_some() && rows[0].team_id.is_some());

    // A stored row holds no secret.
    let k = app.store.key(&id).await.unwrap().unwrap();
    assert_ne!(k.key_hash.as_deref(), Some(key.as_str()));
    assert!(key.starts_with(&k.prefix));

    // The lead revokes it: refused at once.
    let (s, revoked) = call(&app, &bob, "revoke_key", &[("key_id", &id)]).await;
    assert_eq!(s, 200, "{revoked}");
    assert_eq!(chat_with_key(&app, &key).await, 401);

    // A rejection carries its reason to the member.
    let alpha = team_id(&me(&app, &alice.cookie).await, "Alpha");
    let (_, second) = call(
        &app,
        &alice,
        "request_key",
        &[("team_id", &alpha), ("name", "second")],
    )
    .await;
    let second_id = second["id"].as_str().unwrap().to_owned();
    let (s, _) = call(
        &app,
        &bob,
        "decide_key",
        &[("key_id", &second_id), ("decision", "reject")],
    )
    .await;
    assert_eq!(s, 400, "a rejection needs a reason");
    let (s, rejected) = call(
        &app,
        &bob,
        "decide_key",
        &[
            ("key_id", &second_id),
            ("decision", "reject"),
            ("reason", "use the shared key"),
        ],
    )
    .await;
    assert_eq!(s, 200, "{rejected}");
    let (_, mine) = read(&app, &alice, "my_keys").await;
    assert!(mine.to_string().contains("use the shared key"));
    let (s, _) = call(&app, &alice, "reveal_key", &[("key_id", &second_id)]).await;
    assert_eq!(s, 409, "a rejected key has no secret to reveal");

    // Everything above is in the audit log, chained.
    let audit: Value = app
        .http
        .get(format!("{}/admin/v1/audit", app.url))
        .bearer_auth(MASTER_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(audit["chain_intact"], true);
    let text = audit.to_string();
    for action in [
        "key.request",
        "key.approve",
        "key.reveal",
        "key.revoke",
        "key.reject",
    ] {
        assert!(text.contains(action), "{action}");
    }
    assert!(!text.contains(&key), "no secret in the audit log");
    app.finish().await;
}

async fn team_a_cannot_touch_team_b(b: Backend) {
    let (app, idp) = spawn_with_sso(b).await;
    let alice = session(&app, &idp, "alice", &["alpha"]).await;
    let bob = session(&app, &idp, "bob", &["alpha", "alpha-leads"]).await;
    let carol = session(&app, &idp, "carol", &["beta"]).await;
    let dave = session(&app, &idp, "dave", &["beta", "beta-leads"]).await;
    let pending = {
        let alpha = team_id(&me(&app, &alice.cookie).await, "Alpha");
        let (_, k) = call(
            &app,
            &alice,
            "request_key",
            &[("team_id", &alpha), ("name", "pending")],
        )
        .await;
        k["id"].as_str().unwrap().to_owned()
    };
    let approved = requested_and_approved(&app, &alice, &bob).await;
    let alpha = team_id(&me(&app, &alice.cookie).await, "Alpha");

    // Team B's member and lead against team A's objects: every key operation says "no
    // such key" (existence is not revealed), and nothing changed.
    for who in [&carol, &dave] {
        for key in [&pending, &approved] {
            for (f, extra) in [
                ("reveal_key", vec![]),
                ("rotate_key", vec![]),
                ("revoke_key", vec![]),
                ("decide_key", vec![("decision", "approve")]),
                (
                    "set_key_limits",
                    vec![("models", "gpt-test"), ("rpm_limit", "1000")],
                ),
            ] {
                let mut fields = vec![("key_id", key.as_str())];
                fields.extend(extra);
                let (s, body) = call(&app, who, f, &fields).await;
                assert_eq!(s, 404, "{f} on {key}: {body}");
            }
        }
        // A key request in someone else's team.
        let (s, _) = call(
            &app,
            who,
            "request_key",
            &[("team_id", &alpha), ("name", "sneaky")],
        )
        .await;
        assert_eq!(s, 404);
        // Their views hold nothing of team A.
        for view in ["my_keys", "teams"] {
            let (s, v) = read(&app, who, view).await;
            assert_eq!(s, 200);
            let text = v.to_string();
            assert!(
                !text.contains(&pending) && !text.contains(&approved) && !text.contains("Alpha"),
                "{view}: {text}"
            );
        }
    }
    assert_eq!(
        app.store.key(&pending).await.unwrap().unwrap().status,
        "requested"
    );
    assert_eq!(
        app.store.key(&approved).await.unwrap().unwrap().status,
        "approved"
    );
    // Spend figures follow the same lines: alice's request counts for her and her lead,
    // not for team B (nor does a master-key call count for anyone but admins).
    let (_, secret) = call(&app, &alice, "reveal_key", &[("key_id", &approved)]).await;
    assert_eq!(
        chat_with_key(&app, secret["secret"].as_str().unwrap()).await,
        200
    );
    assert_eq!(
        app.chat(json!({"model": "gpt-test", "messages": user("master")}))
            .await
            .status(),
        200
    );
    app.ledger_rows(2).await;
    for (who, want) in [(&alice, 1), (&bob, 1), (&carol, 0), (&dave, 0)] {
        let (s, o) = read(&app, who, "overview").await;
        assert_eq!(s, 200);
        assert_eq!(o["requests_today"], want, "{}", who.id);
    }
    // Team A's own member sees only their own keys, not the team's other members' keys.
    let (_, alice_teams) = read(&app, &alice, "teams").await;
    assert_eq!(
        alice_teams["teams"][0]["keys"],
        json!([]),
        "members see no team keys"
    );
    // The management API takes no session and no virtual key.
    let r = app
        .http
        .get(format!("{}/admin/v1/keys", app.url))
        .header(COOKIE, &dave.cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    app.finish().await;
}

async fn members_cannot_raise_their_own_access(b: Backend) {
    let (app, idp) = spawn_with_sso(b).await;
    let alice = session(&app, &idp, "alice", &["alpha"]).await;
    let bob = session(&app, &idp, "bob", &["alpha", "alpha-leads"]).await;
    let root = session(&app, &idp, "root", &["gw-admins"]).await;
    let id = requested_and_approved(&app, &alice, &bob).await;
    let alpha = team_id(&me(&app, &alice.cookie).await, "Alpha");

    // Own role, own memberships, teams, user list: admins only.
    for (f, fields) in [
        (
            "set_user_role",
            vec![("user_id", alice.id.as_str()), ("role", "admin")],
        ),
        (
            "set_membership",
            vec![
                ("team_id", alpha.as_str()),
                ("user_id", alice.id.as_str()),
                ("role", "lead"),
            ],
        ),
        ("create_team", vec![("name", "Alice's own team")]),
    ] {
        let (s, body) = call(&app, &alice, f, &fields).await;
        assert_eq!(s, 403, "{f}: {body}");
    }
    assert_eq!(read(&app, &alice, "users").await.0, 403);
    // Own key's models and limits, own request's decision.
    let (s, _) = call(
        &app,
        &alice,
        "set_key_limits",
        &[("key_id", &id), ("models", "gpt-test,embed-test")],
    )
    .await;
    assert_eq!(s, 403);
    let (_, own) = call(
        &app,
        &alice,
        "request_key",
        &[("team_id", &alpha), ("name", "self-approved")],
    )
    .await;
    let own_id = own["id"].as_str().unwrap().to_owned();
    let (s, _) = call(
        &app,
        &alice,
        "decide_key",
        &[("key_id", &own_id), ("decision", "approve")],
    )
    .await;
    assert_eq!(s, 403);
    // A lead does not approve their own request either.
    let (_, bobs) = call(
        &app,
        &bob,
        "request_key",
        &[("team_id", &alpha), ("name", "bobs")],
    )
    .await;
    let bobs_id = bobs["id"].as_str().unwrap().to_owned();
    let (s, _) = call(
        &app,
        &bob,
        "decide_key",
        &[("key_id", &bobs_id), ("decision", "approve")],
    )
    .await;
    assert_eq!(s, 403);
    // Models outside the configuration or the team's allow-list are refused at request time.
    let (s, _) = call(
        &app,
        &alice,
        "request_key",
        &[
            ("team_id", &alpha),
            ("name", "x"),
            ("models", "gpt-5-secret"),
        ],
    )
    .await;
    assert_eq!(s, 400);
    let r = app
        .http
        .patch(format!("{}/admin/v1/teams/{alpha}", app.url))
        .bearer_auth(MASTER_KEY)
        .json(&json!({"models": ["gpt-test"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (s, _) = call(
        &app,
        &alice,
        "request_key",
        &[("team_id", &alpha), ("name", "x"), ("models", "embed-test")],
    )
    .await;
    assert_eq!(s, 400, "not in the team's allow-list");

    // The lead sets limits; the role change is the admin's, never their own.
    let (s, limited) = call(
        &app,
        &bob,
        "set_key_limits",
        &[("key_id", &id), ("models", "gpt-test"), ("rpm_limit", "1")],
    )
    .await;
    assert_eq!(s, 200, "{limited}");
    assert_eq!(limited["rpm_limit"], 1);
    // A limit set in the console is enforced, not only shown.
    let (_, secret) = call(&app, &alice, "reveal_key", &[("key_id", &id)]).await;
    let secret = secret["secret"].as_str().unwrap();
    assert_eq!(chat_with_key(&app, secret).await, 200);
    assert_eq!(chat_with_key(&app, secret).await, 429);
    let (s, _) = call(
        &app,
        &root,
        "set_user_role",
        &[("user_id", root.id.as_str()), ("role", "member")],
    )
    .await;
    assert_eq!(s, 403, "nobody changes their own role");
    let (s, _) = call(
        &app,
        &root,
        "set_user_role",
        &[("user_id", alice.id.as_str()), ("role", "auditor")],
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(
        me(&app, &alice.cookie).await["role"],
        "auditor",
        "effective at once"
    );
    app.finish().await;
}

async fn state_changes_need_the_session_csrf_token(b: Backend) {
    let (app, idp) = spawn_with_sso(b).await;
    let alice = session(&app, &idp, "alice", &["alpha"]).await;
    let carol = session(&app, &idp, "carol", &["beta"]).await;
    let alpha = team_id(&me(&app, &alice.cookie).await, "Alpha");
    let fns = [
        "sign_out",
        "request_key",
        "reveal_key",
        "rotate_key",
        "revoke_key",
        "decide_key",
        "set_key_limits",
        "set_user_role",
        "set_membership",
        "create_team",
    ];
    for f in fns {
        for token in [None, Some("0".repeat(32)), Some(carol.csrf.clone())] {
            let mut form = vec![("team_id", alpha.clone()), ("name", "forged".to_owned())];
            if let Some(t) = &token {
                form.push(("csrf_token", t.clone()));
            }
            let r = app
                .http
                .post(format!("{}/api/{f}", app.url))
                .header(COOKIE, &alice.cookie)
                .form(&form)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 403, "{f} with {token:?}");
        }
    }
    // A cross-site form post is refused even with the right token.
    let r = app
        .http
        .post(format!("{}/api/request_key", app.url))
        .header(COOKIE, &alice.cookie)
        .header("origin", "https://evil.example")
        .form(&[
            ("csrf_token", alice.csrf.as_str()),
            ("team_id", &alpha),
            ("name", "forged"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let (_, mine) = read(&app, &alice, "my_keys").await;
    assert_eq!(mine["keys"], json!([]), "nothing was created");
    // With the token, the same request goes through.
    let (s, _) = call(
        &app,
        &alice,
        "request_key",
        &[("team_id", &alpha), ("name", "genuine")],
    )
    .await;
    assert_eq!(s, 200);
    app.finish().await;
}

async fn admin(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = app
        .http
        .request(method, format!("{}/admin/v1{path}", app.url))
        .bearer_auth(MASTER_KEY);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await.unwrap();
    (r.status(), r.json().await.unwrap_or(Value::Null))
}

async fn the_management_api_does_what_the_console_does(b: Backend) {
    use reqwest::Method;
    let (app, idp) = spawn_with_sso(b).await;
    let alice = session(&app, &idp, "alice", &["alpha"]).await;
    let alpha = team_id(&me(&app, &alice.cookie).await, "Alpha");
    let mut ids = Vec::new();
    for name in ["one", "two"] {
        let (_, k) = call(
            &app,
            &alice,
            "request_key",
            &[("team_id", &alpha), ("name", name)],
        )
        .await;
        ids.push(k["id"].as_str().unwrap().to_owned());
    }
    let (s, pending) = admin(
        &app,
        Method::GET,
        &format!("/keys?team_id={alpha}&status=requested"),
        None,
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(pending["data"].as_array().unwrap().len(), 2);
    assert_eq!(
        admin(&app, Method::GET, "/keys?colour=red", None).await.0,
        400
    );

    let (s, k) = admin(
        &app,
        Method::POST,
        &format!("/keys/{}/approve", ids[0]),
        None,
    )
    .await;
    assert_eq!(
        (s, k["status"].as_str()),
        (StatusCode::OK, Some("approved")),
        "{k}"
    );
    assert_eq!(k["decided_by"], "master");
    let (s, _) = admin(
        &app,
        Method::POST,
        &format!("/keys/{}/approve", ids[0]),
        None,
    )
    .await;
    assert_eq!(s, 409, "decided once");
    let (s, _) = admin(
        &app,
        Method::POST,
        &format!("/keys/{}/reject", ids[1]),
        Some(json!({})),
    )
    .await;
    assert_eq!(s, 400, "a rejection says why");
    let (s, k) = admin(
        &app,
        Method::POST,
        &format!("/keys/{}/reject", ids[1]),
        Some(json!({"reason": "duplicate"})),
    )
    .await;
    assert_eq!(
        (s, k["decision_reason"].as_str()),
        (StatusCode::OK, Some("duplicate"))
    );

    let (s, k) = admin(
        &app,
        Method::PATCH,
        &format!("/keys/{}", ids[0]),
        Some(json!({"rpm_limit": 100, "budget_usd": 2.5, "budget_period": "monthly", "tags": ["ml"]})),
    )
    .await;
    assert_eq!(s, 200, "{k}");
    assert_eq!(
        (k["rpm_limit"].as_i64(), k["budget_usd"].as_f64()),
        (Some(100), Some(2.5))
    );
    let (_, k) = admin(
        &app,
        Method::PATCH,
        &format!("/keys/{}", ids[0]),
        Some(json!({"rpm_limit": null})),
    )
    .await;
    assert_eq!(k["rpm_limit"], Value::Null, "null clears");
    assert_eq!(k["budget_usd"], 2.5, "absent keeps");
    assert_eq!(
        admin(
            &app,
            Method::PATCH,
            &format!("/keys/{}", ids[0]),
            Some(json!({"models": ["nope"]}))
        )
        .await
        .0,
        400
    );
    assert_eq!(
        admin(&app, Method::GET, &format!("/keys/{}", ids[0]), None)
            .await
            .1["tags"],
        json!(["ml"])
    );
    assert_eq!(
        admin(&app, Method::GET, "/keys/key_none", None).await.0,
        404
    );

    let (s, u) = admin(
        &app,
        Method::PATCH,
        &format!("/users/{}", alice.id),
        Some(json!({"role": "auditor"})),
    )
    .await;
    assert_eq!((s, u["role"].as_str()), (StatusCode::OK, Some("auditor")));
    assert_eq!(
        admin(
            &app,
            Method::PATCH,
            &format!("/users/{}", alice.id),
            Some(json!({"role": "root"}))
        )
        .await
        .0,
        400
    );
    let (s, p) = admin(&app, Method::GET, &format!("/teams/{alpha}/projects"), None).await;
    assert_eq!((s, p["object"].as_str()), (StatusCode::OK, Some("list")));
    let (s, _) = admin(
        &app,
        Method::DELETE,
        &format!("/teams/{alpha}/members/{}", alice.id),
        None,
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(
        me(&app, &alice.cookie).await["teams"],
        json!([]),
        "out of the team at once"
    );
    assert_eq!(
        admin(
            &app,
            Method::DELETE,
            &format!("/teams/{alpha}/members/{}", alice.id),
            None
        )
        .await
        .0,
        404
    );
    app.finish().await;
}

async fn budgets_in_the_console_follow_roles(b: Backend) {
    let (app, idp) = spawn_with_sso(b).await;
    let alice = session(&app, &idp, "alice", &["alpha"]).await;
    let bob = session(&app, &idp, "bob", &["alpha", "alpha-leads"]).await;
    let carol = session(&app, &idp, "carol", &["beta"]).await;
    let fin = session(&app, &idp, "fin", &["gw-finance"]).await;
    let key = requested_and_approved(&app, &alice, &bob).await;
    let alpha = team_id(&me(&app, &alice.cookie).await, "Alpha");
    let team_scope = format!("team:{alpha}");
    let key_scope = format!("key:{key}");
    // Finance sets the team's budget; the lead sets a member's key budget; the member
    // cannot set their own, nor another team's person touch either.
    for (session, scope, amount, want) in [
        (&fin, &team_scope, "100", 200),
        (&bob, &key_scope, "5", 200),
        (&alice, &key_scope, "500", 403),
        (&bob, &team_scope, "1000", 403),
        (&carol, &team_scope, "1000", 404),
        (&carol, &key_scope, "1000", 404),
    ] {
        let who = &session.id;
        let (s, body) = call(
            &app,
            session,
            "set_budget",
            &[
                ("scope", scope),
                ("amount_usd", amount),
                ("period", "monthly"),
                ("thresholds", "50, 90"),
            ],
        )
        .await;
        assert_eq!(s, want, "{who} on {scope}: {body}");
    }
    let (s, _) = call(
        &app,
        &fin,
        "set_budget",
        &[
            ("scope", &team_scope),
            ("amount_usd", "-1"),
            ("period", "monthly"),
        ],
    )
    .await;
    assert_eq!(s, 400);
    // What each sees on the Spend page.
    let scopes = |v: &Value| -> Vec<String> {
        v["budgets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| {
                format!(
                    "{}:{}",
                    b["scope_type"].as_str().unwrap(),
                    b["scope_id"].as_str().unwrap()
                )
            })
            .collect()
    };
    let (_, f) = read(&app, &fin, "spend").await;
    assert_eq!(scopes(&f).len(), 2, "{f}");
    let (_, a) = read(&app, &alice, "spend").await;
    assert_eq!(
        scopes(&a),
        std::slice::from_ref(&key_scope),
        "a member sees their own key's budget"
    );
    assert_eq!(a["settable"], json!([]));
    assert_eq!(a["budgets"][0]["amount_usd"], 5.0);
    assert_eq!(a["budgets"][0]["thresholds"], json!([50, 90]));
    let (_, c) = read(&app, &carol, "spend").await;
    assert_eq!(c["budgets"], json!([]));
    assert!(
        !c.to_string().contains(&alpha),
        "nothing of team Alpha: {c}"
    );
    // The key's budget is enforced: its fields say so, too.
    let k = app.store.key(&key).await.unwrap().unwrap();
    assert_eq!(k.budget_micros, Some(5_000_000));
    // An empty amount removes it.
    let (s, _) = call(
        &app,
        &bob,
        "set_budget",
        &[
            ("scope", &key_scope),
            ("amount_usd", ""),
            ("period", "monthly"),
        ],
    )
    .await;
    assert_eq!(s, 200);
    let (_, a) = read(&app, &alice, "spend").await;
    assert_eq!(a["budgets"], json!([]));
    app.finish().await;
}
