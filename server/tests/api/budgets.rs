//! Budgets hold: concurrent requests, several instances, streams, and the API that sets
//! them. Prices are chosen so a request's worst case is exactly $0.10: output at $12,500
//! per million tokens, input free, `max_tokens: 8`.

use std::collections::HashMap;

use serde_json::{Value, json};

use crate::harness::{Backend, MASTER_KEY, TestApp, admin_call as admin, spawn_app_with, user};
use crate::on_both_databases;

on_both_databases!(
    fifty_parallel_requests_never_cross_one_dollar,
    sequential_spend_stops_at_the_budget,
    budgets_api_validates_and_reports,
    a_keys_budget_fields_are_its_budget,
    each_threshold_alerts_once_per_period,
    a_new_period_starts_afresh,
    spend_is_reported_by_group,
    a_streams_cost_arrives_at_its_end,
    team_and_project_budgets_bind_their_keys,
    a_dead_instances_lease_comes_back,
    unpriced_models_can_be_refused
);

mod multi_instance {
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn three_instances_on_one_postgres_never_cross_one_dollar() {
        super::three_instances(crate::harness::Backend::Postgres).await
    }
}

const EXTRA: &str = r#"
[[deployments]]
model = "priced-slow"
provider = "openai-compatible"
upstream_model = "slow-400"
base_url = "@MOCK@"
api_key = "@KEY@"

[[deployments]]
model = "priced"
provider = "openai-compatible"
upstream_model = "upstream-priced"
base_url = "@MOCK@"
api_key = "@KEY@"

[[prices]]
model = "priced-slow"
input_per_mtok = 0.0
output_per_mtok = 12500.0

[[prices]]
model = "priced"
input_per_mtok = 0.0
output_per_mtok = 12500.0
"#;

/// A team, and a key in it with a budget of `usd` (total).
async fn budgeted_key(app: &TestApp, usd: f64) -> (String, String) {
    let (_, team) = admin(
        app,
        reqwest::Method::POST,
        "/teams",
        json!({"name": "spenders"}),
    )
    .await;
    let (s, key) = admin(
        app,
        reqwest::Method::POST,
        "/keys",
        json!({"name": "k", "team_id": team["id"]}),
    )
    .await;
    assert_eq!(s, 201, "{key}");
    let id = key["id"].as_str().unwrap().to_owned();
    let (s, b) = admin(
        app,
        reqwest::Method::PUT,
        "/budgets",
        json!({"scope_type": "key", "scope_id": id, "amount_usd": usd, "period": "total"}),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    (id, key["key"].as_str().unwrap().to_owned())
}

async fn chat(http: &reqwest::Client, base: &str, key: &str, model: &str) -> (u16, Value) {
    let r = http
        .post(format!("{base}/v1/chat/completions"))
        .bearer_auth(key)
        .json(&json!({"model": model, "messages": user("Hello from the tests"), "max_tokens": 8}))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

/// Ledger rows of one key: (count of 200s, recorded cost).
async fn spent(app: &TestApp, key_id: &str, expect_rows: usize) -> (usize, i64) {
    let rows = app.ledger_rows(expect_rows).await;
    let mine: Vec<_> = rows
        .iter()
        .filter(|r| r.key_id.as_deref() == Some(key_id))
        .collect();
    let ok = mine.iter().filter(|r| r.status == 200).count();
    (ok, mine.iter().map(|r| r.cost_micros).sum())
}

fn refused_right(body: &Value) {
    assert_eq!(body["error"]["type"], "insufficient_quota", "{body}");
    assert_eq!(body["error"]["code"], "budget_exceeded", "{body}");
    let msg = body["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("key budget") && msg.contains("1.000000"),
        "{msg}"
    );
}

async fn fifty_parallel_requests_never_cross_one_dollar(b: Backend) {
    let app = spawn_app_with(b, EXTRA).await;
    let (key_id, key) = budgeted_key(&app, 1.0).await;
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let (http, url, key) = (app.http.clone(), app.url.clone(), key.clone());
        tasks.push(tokio::spawn(async move {
            chat(&http, &url, &key, "priced-slow").await
        }));
    }
    let mut by_status: HashMap<u16, usize> = HashMap::new();
    for t in tasks {
        let (s, body) = t.await.unwrap();
        *by_status.entry(s).or_default() += 1;
        if s == 429 {
            refused_right(&body);
        }
    }
    let admitted = by_status.get(&200).copied().unwrap_or(0);
    assert!((1..=10).contains(&admitted), "{by_status:?}");
    assert_eq!(
        admitted + by_status.get(&429).copied().unwrap_or(0),
        50,
        "{by_status:?}"
    );
    let (ok, cost) = spent(&app, &key_id, 50).await;
    assert_eq!(ok, admitted);
    assert!(cost <= 1_000_000, "recorded {cost}");
    assert!(cost > 0);
    app.finish().await;
}

async fn sequential_spend_stops_at_the_budget(b: Backend) {
    let app = spawn_app_with(b, EXTRA).await;
    let (key_id, key) = budgeted_key(&app, 1.0).await;
    let mut admitted = 0;
    let mut refused = None;
    for _ in 0..40 {
        let (s, body) = chat(&app.http, &app.url, &key, "priced").await;
        match s {
            200 => admitted += 1,
            429 => {
                refused = Some(body);
                break;
            }
            other => panic!("{other}: {body}"),
        }
    }
    let refused = refused.expect("the budget ran out");
    refused_right(&refused);
    let (ok, cost) = spent(&app, &key_id, admitted + 1).await;
    assert_eq!(ok, admitted);
    // Each request really cost less than its $0.10 worst case: more than ten got through,
    // and the last one admitted still fitted its worst case.
    assert!(admitted > 10, "{admitted}");
    assert!(
        cost <= 1_000_000 && cost + 100_000 > 1_000_000,
        "recorded {cost}"
    );
    // The budget's figures agree with the ledger once written back.
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let (_, list) = admin(&app, reqwest::Method::GET, "/budgets", Value::Null).await;
    let mine = &list["data"][0];
    assert_eq!(mine["scope_id"], key_id.as_str());
    assert!(
        (mine["spent_usd"].as_f64().unwrap() * 1e6 - cost as f64).abs() < 1.0,
        "{mine} vs {cost}"
    );
    // The master key is the operator's: no budget applies to it.
    let r = app
        .http
        .post(format!("{}/v1/chat/completions", app.url))
        .bearer_auth(MASTER_KEY)
        .json(&json!({"model": "priced", "messages": user("hi"), "max_tokens": 8}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Raising the budget lets the key spend again at once.
    let (s, _) = admin(
        &app,
        reqwest::Method::PUT,
        "/budgets",
        json!({"scope_type": "key", "scope_id": key_id, "amount_usd": 2.0, "period": "total"}),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(chat(&app.http, &app.url, &key, "priced").await.0, 200);
    app.finish().await;
}

async fn budgets_api_validates_and_reports(b: Backend) {
    let app = spawn_app_with(b, EXTRA).await;
    let (key_id, _) = budgeted_key(&app, 5.0).await;
    use reqwest::Method;
    for bad in [
        json!({"scope_type": "galaxy", "scope_id": key_id, "amount_usd": 1, "period": "total"}),
        json!({"scope_type": "key", "scope_id": "key_nope", "amount_usd": 1, "period": "total"}),
        json!({"scope_type": "key", "scope_id": key_id, "amount_usd": -1, "period": "total"}),
        json!({"scope_type": "key", "scope_id": key_id, "amount_usd": 1, "period": "hourly"}),
        json!({"scope_type": "key", "scope_id": key_id, "amount_usd": 1, "period": "daily", "thresholds": [0]}),
        json!({"scope_type": "key", "scope_id": key_id, "amount_usd": 1, "period": "daily", "colour": "red"}),
    ] {
        let (s, body) = admin(&app, Method::PUT, "/budgets", bad.clone()).await;
        assert_eq!(s, 400, "{bad} → {body}");
        assert!(body["error"]["message"].is_string());
    }
    let (s, b) = admin(
        &app,
        Method::PUT,
        "/budgets",
        json!({"scope_type": "key", "scope_id": key_id, "amount_usd": 3, "period": "monthly", "thresholds": [80, 50]}),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["thresholds"], json!([50, 80]));
    assert_eq!(b["period"], "monthly");
    assert!(
        b["resets_at"].as_str().unwrap().ends_with("-01T00:00:00Z"),
        "{b}"
    );
    assert_eq!(b["spent_usd"], 0.0);
    let (s, _) = admin(
        &app,
        Method::DELETE,
        &format!("/budgets/key/{key_id}"),
        Value::Null,
    )
    .await;
    assert_eq!(s, 200);
    let (s, _) = admin(
        &app,
        Method::DELETE,
        &format!("/budgets/key/{key_id}"),
        Value::Null,
    )
    .await;
    assert_eq!(s, 404);
    // Budget changes are audited.
    let (_, audit) = admin(&app, Method::GET, "/audit", Value::Null).await;
    let text = audit.to_string();
    assert!(text.contains("budget.set") && text.contains("budget.delete"));
    app.finish().await;
}

async fn three_instances(b: Backend) {
    let app = spawn_app_with(b, EXTRA).await;
    let (key_id, key) = budgeted_key(&app, 1.0).await;
    let second = app.sibling().await;
    let third = app.sibling().await;
    let urls = [app.url.clone(), second.url.clone(), third.url.clone()];
    let mut tasks = Vec::new();
    for i in 0..50 {
        let (http, url, key) = (app.http.clone(), urls[i % 3].clone(), key.clone());
        tasks.push(tokio::spawn(async move {
            chat(&http, &url, &key, "priced-slow").await
        }));
    }
    let mut admitted = 0;
    for t in tasks {
        let (s, body) = t.await.unwrap();
        match s {
            200 => admitted += 1,
            429 => refused_right(&body),
            other => panic!("{other}: {body}"),
        }
    }
    assert!((1..=10).contains(&admitted), "{admitted}");
    let (ok, cost) = spent(&app, &key_id, 50).await;
    assert_eq!(ok, admitted);
    assert!(cost <= 1_000_000, "recorded {cost}");
    second.stop().await;
    third.stop().await;
    app.finish().await;
}

async fn a_keys_budget_fields_are_its_budget(b: Backend) {
    use reqwest::Method;
    let app = spawn_app_with(b, EXTRA).await;
    let (_, team) = admin(&app, Method::POST, "/teams", json!({"name": "t"})).await;
    let (s, key) = admin(
        &app,
        Method::POST,
        "/keys",
        json!({"name": "k", "team_id": team["id"], "budget_usd": 0.15, "budget_period": "daily"}),
    )
    .await;
    assert_eq!(s, 201, "{key}");
    let (id, secret) = (key["id"].as_str().unwrap(), key["key"].as_str().unwrap());
    let (_, list) = admin(&app, Method::GET, "/budgets", Value::Null).await;
    assert_eq!(list["data"][0]["scope_id"], id);
    assert_eq!(list["data"][0]["period"], "daily");
    assert_eq!(chat(&app.http, &app.url, secret, "priced").await.0, 200);
    let (s, body) = chat(&app.http, &app.url, secret, "priced").await;
    assert_eq!(
        s, 429,
        "$0.075 left cannot cover a $0.10 worst case: {body}"
    );
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("resets at")
    );
    let (s, _) = admin(
        &app,
        Method::PATCH,
        &format!("/keys/{id}"),
        json!({"budget_usd": null}),
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(
        chat(&app.http, &app.url, secret, "priced").await.0,
        200,
        "no budget any more"
    );
    app.finish().await;
}

/// A webhook receiver: the JSON bodies it was sent.
async fn hook() -> (String, std::sync::Arc<std::sync::Mutex<Vec<Value>>>) {
    use axum::routing::post;
    let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let sink = got.clone();
    let app = axum::Router::new().route(
        "/hook",
        post(move |axum::Json(v): axum::Json<Value>| {
            let sink = sink.clone();
            async move {
                sink.lock().unwrap().push(v);
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, got)
}

async fn each_threshold_alerts_once_per_period(b: Backend) {
    let (url, got) = hook().await;
    let app = spawn_app_with(b, &format!("{EXTRA}\n[spend]\nalert_webhook = \"{url}\"\n")).await;
    let (key_id, key) = budgeted_key(&app, 1.0).await;
    let second = app.sibling().await;
    // Spend the budget from two instances at once, until it refuses.
    let mut refused = 0;
    for round in 0..30 {
        let (a, b2) = tokio::join!(
            chat(&app.http, &app.url, &key, "priced"),
            chat(&app.http, &second.url, &key, "priced")
        );
        refused += usize::from(a.0 == 429) + usize::from(b2.0 == 429);
        if refused >= 2 || round == 29 {
            break;
        }
    }
    assert!(refused >= 1);
    // Alerts go out after spending is written back (every 200 ms).
    let mut thresholds: Vec<u64> = Vec::new();
    for _ in 0..50 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        thresholds = got
            .lock()
            .unwrap()
            .iter()
            .map(|v| v["budget"]["threshold_percent"].as_u64().unwrap())
            .collect();
        if thresholds.len() >= 2 {
            break;
        }
    }
    tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    let all = got.lock().unwrap().clone();
    thresholds.sort_unstable();
    let mut sorted: Vec<u64> = all
        .iter()
        .map(|v| v["budget"]["threshold_percent"].as_u64().unwrap())
        .collect();
    sorted.sort_unstable();
    let mut unique = sorted.clone();
    unique.dedup();
    assert_eq!(sorted, unique, "each threshold once: {all:?}");
    assert!(sorted.contains(&50) && sorted.contains(&80), "{all:?}");
    let text = all[0]["text"].as_str().unwrap();
    assert!(
        text.contains(&key_id) && text.contains("Budget alert"),
        "{text}"
    );
    second.stop().await;
    app.finish().await;
}

async fn a_new_period_starts_afresh(b: Backend) {
    use reqwest::Method;
    let app = spawn_app_with(b, EXTRA).await;
    let (key_id, key) = budgeted_key(&app, 1.0).await;
    let (_, budget) = admin(
        &app,
        Method::PUT,
        "/budgets",
        json!({"scope_type": "key", "scope_id": key_id, "amount_usd": 0.15, "period": "daily"}),
    )
    .await;
    // Yesterday the whole budget was spent; today's period is a new one.
    let today = gateway::meter::budget::Period::Daily.start(gateway::access::now_ms());
    let budget_id = budget["id"].as_str().unwrap();
    let sql = "INSERT INTO budget_periods (budget_id, period_start, spent_micros, leased_micros, alerted) VALUES ($1, $2, 150000, 0, '[]')";
    match &app.store {
        gateway::store::Store::Sqlite(p) => {
            sqlx::query(sql)
                .bind(budget_id)
                .bind(today - 86_400_000)
                .execute(p)
                .await
                .unwrap();
        }
        gateway::store::Store::Postgres(p) => {
            sqlx::query(sql)
                .bind(budget_id)
                .bind(today - 86_400_000)
                .execute(p)
                .await
                .unwrap();
        }
    }
    assert_eq!(
        chat(&app.http, &app.url, &key, "priced").await.0,
        200,
        "today is not yesterday"
    );
    assert_eq!(
        chat(&app.http, &app.url, &key, "priced").await.0,
        429,
        "today's budget is used"
    );
    let (_, list) = admin(&app, Method::GET, "/budgets", Value::Null).await;
    let now_start = gateway::meter::budget::rfc3339(today);
    assert_eq!(list["data"][0]["period_start"], now_start.as_str());
    app.finish().await;
}

async fn spend_is_reported_by_group(b: Backend) {
    use reqwest::Method;
    let app = spawn_app_with(b, EXTRA).await;
    let mut keys = Vec::new();
    for team in ["red", "blue"] {
        let (_, t) = admin(&app, Method::POST, "/teams", json!({"name": team})).await;
        let (_, k) = admin(
            &app,
            Method::POST,
            "/keys",
            json!({"name": team, "team_id": t["id"], "project": "p"}),
        )
        .await;
        keys.push((
            t["id"].as_str().unwrap().to_owned(),
            k["key"].as_str().unwrap().to_owned(),
        ));
    }
    // red: 3 calls, blue: 1 call (each $0.075 on "priced").
    for (i, n) in [(0usize, 3), (1, 1)] {
        for _ in 0..n {
            assert_eq!(chat(&app.http, &app.url, &keys[i].1, "priced").await.0, 200);
        }
    }
    assert_eq!(
        chat(&app.http, &app.url, &keys[0].1, "gpt-test").await.0,
        200
    );
    let rows = app.ledger_rows(5).await;
    let ledger_total: i64 = rows.iter().map(|r| r.cost_micros).sum();
    let (s, by_team) = admin(&app, Method::GET, "/spend?group_by=team", Value::Null).await;
    assert_eq!(s, 200, "{by_team}");
    let data = by_team["data"].as_array().unwrap();
    assert_eq!(data.len(), 2, "{by_team}");
    assert_eq!(data[0]["name"], "red", "dearest first");
    assert_eq!(data[0]["requests"], 4);
    assert_eq!(data[1]["name"], "blue");
    assert_eq!(data[1]["cost_micros"], 75_000);
    assert_eq!(by_team["total"]["cost_micros"], ledger_total);
    let (_, by_model) = admin(&app, Method::GET, "/spend?group_by=model", Value::Null).await;
    let models: Vec<&str> = by_model["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["group"].as_str().unwrap())
        .collect();
    assert_eq!(models, ["priced", "gpt-test"]);
    for q in [
        "group_by=team&from=2020-01-01&to=2020-02-01",
        "group_by=provider&from=1577836800&to=1580515200",
    ] {
        let (s, empty) = admin(&app, Method::GET, &format!("/spend?{q}"), Value::Null).await;
        assert_eq!(s, 200);
        assert_eq!(empty["data"], json!([]), "{q}");
    }
    let (_, ranged) = admin(
        &app,
        Method::GET,
        "/spend?group_by=key&from=2020-01-01T00:00:00Z",
        Value::Null,
    )
    .await;
    assert_eq!(ranged["data"].as_array().unwrap().len(), 2);
    for bad in [
        "group_by=colour",
        "from=yesterday",
        "group_by=team&from=2030-01-01&to=2020-01-01",
        "sort=cost",
    ] {
        let (s, body) = admin(&app, Method::GET, &format!("/spend?{bad}"), Value::Null).await;
        assert_eq!(s, 400, "{bad}: {body}");
    }
    app.finish().await;
}

async fn a_streams_cost_arrives_at_its_end(b: Backend) {
    let app = spawn_app_with(b, EXTRA).await;
    let r = app
        .chat(json!({"model": "priced", "stream": true, "messages": user("Hello from the tests")}))
        .await;
    assert_eq!(r.status(), 200);
    assert!(
        r.headers().get("x-gateway-cost-usd").is_none(),
        "headers leave before usage"
    );
    let body = r.text().await.unwrap();
    let rows = app.ledger_rows(1).await;
    let cost = gateway::meter::micros_to_usd_string(rows[0].cost_micros);
    assert!(rows[0].cost_micros > 0);
    let comment = format!(": x-gateway-cost-usd {cost}\n\ndata: [DONE]");
    assert!(body.contains(&comment), "{body}");
    app.finish().await;
}

async fn team_and_project_budgets_bind_their_keys(b: Backend) {
    use reqwest::Method;
    let app = spawn_app_with(b, EXTRA).await;
    let (_, team) = admin(&app, Method::POST, "/teams", json!({"name": "bound"})).await;
    let team_id = team["id"].as_str().unwrap();
    let (_, k1) = admin(
        &app,
        Method::POST,
        "/keys",
        json!({"name": "a", "team_id": team_id, "project": "p1"}),
    )
    .await;
    let (_, k2) = admin(
        &app,
        Method::POST,
        "/keys",
        json!({"name": "b", "team_id": team_id, "project": "p2"}),
    )
    .await;
    let project = k1["project_id"].as_str().unwrap();
    // The project of key a: room for one request; the team: room for two.
    for (scope, id, usd) in [("project", project, 0.15), ("team", team_id, 0.25)] {
        let (s, body) = admin(
            &app,
            Method::PUT,
            "/budgets",
            json!({"scope_type": scope, "scope_id": id, "amount_usd": usd, "period": "monthly"}),
        )
        .await;
        assert_eq!(s, 200, "{body}");
    }
    let (a, bk) = (k1["key"].as_str().unwrap(), k2["key"].as_str().unwrap());
    assert_eq!(chat(&app.http, &app.url, a, "priced").await.0, 200);
    let (s, body) = chat(&app.http, &app.url, a, "priced").await;
    assert_eq!(s, 429);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("project budget"),
        "{body}"
    );
    // Key b is in another project: the team's $0.25 has $0.175 left, room for two more
    // $0.10 worst cases ($0.075 each in fact), not three.
    assert_eq!(chat(&app.http, &app.url, bk, "priced").await.0, 200);
    assert_eq!(chat(&app.http, &app.url, bk, "priced").await.0, 200);
    let (s, body) = chat(&app.http, &app.url, bk, "priced").await;
    assert_eq!(s, 429);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("team budget"),
        "{body}"
    );
    app.finish().await;
}

async fn a_dead_instances_lease_comes_back(b: Backend) {
    use reqwest::Method;
    let app = spawn_app_with(b, EXTRA).await;
    let (key_id, key) = budgeted_key(&app, 0.2).await;
    let (_, list) = admin(&app, Method::GET, "/budgets", Value::Null).await;
    let budget_id = list["data"][0]["id"].as_str().unwrap().to_owned();
    // An instance that died holding the whole budget as a lease, renewed long ago.
    let period = "INSERT INTO budget_periods (budget_id, period_start, spent_micros, leased_micros, alerted) VALUES ($1, 0, 0, 200000, '[]')";
    let lease = "INSERT INTO budget_leases (instance_id, budget_id, period_start, amount_micros, expires_at) VALUES ('gw_dead', $1, 0, 200000, 1)";
    match &app.store {
        gateway::store::Store::Sqlite(p) => {
            sqlx::query(period)
                .bind(&budget_id)
                .execute(p)
                .await
                .unwrap();
            sqlx::query(lease)
                .bind(&budget_id)
                .execute(p)
                .await
                .unwrap();
        }
        gateway::store::Store::Postgres(p) => {
            sqlx::query(period)
                .bind(&budget_id)
                .execute(p)
                .await
                .unwrap();
            sqlx::query(lease)
                .bind(&budget_id)
                .execute(p)
                .await
                .unwrap();
        }
    }
    // Its expired lease is reclaimed: the budget serves this instance again.
    assert_eq!(chat(&app.http, &app.url, &key, "priced").await.0, 200);
    let (_, list) = admin(&app, Method::GET, "/budgets", Value::Null).await;
    assert_eq!(list["data"][0]["scope_id"], key_id.as_str());
    assert!(list["data"][0]["reserved_usd"].as_f64().unwrap() <= 0.2);
    app.finish().await;
}

async fn unpriced_models_can_be_refused(b: Backend) {
    let app = spawn_app_with(b, &format!("{EXTRA}\n[spend]\nunpriced = \"refuse\"\n")).await;
    // embed-test has no price (neither configured nor in the catalog).
    let r = app
        .post("/v1/embeddings")
        .json(&json!({"model": "embed-test", "input": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no price"),
        "{body}"
    );
    assert_eq!(
        app.chat(json!({"model": "priced", "messages": user("hi")}))
            .await
            .status(),
        200
    );
    app.finish().await;
}
