//! Routing that survives provider failures: retries on another deployment, cooldown of a
//! failing one, fallbacks between groups per trigger, and never a retry once a byte of the
//! answer reached the client.

use futures_util::StreamExt;
use serde_json::{Value, json};

use crate::harness::{ADMIN_PASSWORD, Backend, UPSTREAM_KEY, spawn_app_with, user};
use crate::on_both_databases;
use gateway::testkit::mock_upstream::MockUpstream;

on_both_databases!(
    dead_deployment_is_retried_around_and_cooled_down,
    whole_group_down_falls_back,
    slow_first_byte_fails_over,
    request_errors_are_not_retried_and_streams_never_twice,
    context_window_fallback_only_when_configured,
    cooldown_and_recovery_are_visible,
    route_rules_pick_cheaper_models,
    rpm_cap_spills_to_the_rest_of_the_group
);

fn dead_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

async fn dead_deployment_is_retried_around_and_cooled_down(b: Backend) {
    let port = dead_port();
    let extra = format!(
        "[router]\nretries = 2\nbackoff_ms = 1\nmax_backoff_ms = 5\ncooldown_failures = 2\ncooldown_ms = 60000\n\
         [[deployments]]\nid = \"dead\"\nmodel = \"ha\"\nprovider = \"openai-compatible\"\nbase_url = \"http://127.0.0.1:{port}/v1\"\nweight = 10000\n\
         [[deployments]]\nid = \"alive\"\nmodel = \"ha\"\nprovider = \"openai-compatible\"\nbase_url = \"@MOCK@\"\napi_key = \"@KEY@\"\nweight = 1\n"
    );
    let app = spawn_app_with(b, &extra).await;
    let mut attempts = Vec::new();
    for i in 0..12 {
        let stream = i % 2 == 1;
        let resp = app
            .chat(json!({"model": "ha", "stream": stream, "messages": user("still here")}))
            .await;
        assert_eq!(
            resp.status(),
            200,
            "request {i} must succeed with one deployment down"
        );
        assert_eq!(resp.headers()["x-gateway-deployment"], "alive");
        attempts.push(
            resp.headers()["x-gateway-attempts"]
                .to_str()
                .unwrap()
                .parse::<u32>()
                .unwrap(),
        );
        let _ = resp.bytes().await.unwrap();
    }
    // The heavy-weighted dead one is tried first until it has failed twice, then rests.
    assert!(attempts.iter().take(2).all(|a| *a <= 2), "{attempts:?}");
    assert!(
        attempts.iter().skip(2).all(|a| *a == 1),
        "cooled down, no longer tried: {attempts:?}"
    );
    assert_eq!(app.mock.calls()["chat"], 12);
    let rows = app.ledger_rows(12).await;
    assert!(
        rows.iter()
            .all(|r| r.status == 200 && r.deployment.as_deref() == Some("alive"))
    );
    app.finish().await;
}

async fn whole_group_down_falls_back(b: Backend) {
    let extra = "[router]\nretries = 1\nbackoff_ms = 1\nmax_backoff_ms = 2\n\
        [[deployments]]\nid = \"p1\"\nmodel = \"primary\"\nprovider = \"openai-compatible\"\nupstream_model = \"fail-500\"\nbase_url = \"@MOCK@\"\napi_key = \"@KEY@\"\n\
        [[deployments]]\nid = \"p2\"\nmodel = \"primary\"\nprovider = \"openai-compatible\"\nupstream_model = \"fail-503\"\nbase_url = \"@MOCK@\"\napi_key = \"@KEY@\"\n\
        [[deployments]]\nid = \"backup\"\nmodel = \"secondary\"\nprovider = \"openai-compatible\"\nupstream_model = \"fine\"\nbase_url = \"@MOCK@\"\napi_key = \"@KEY@\"\n\
        [[fallbacks]]\nmodel = \"primary\"\nto = [\"secondary\"]\non = [\"error\"]\n";
    let app = spawn_app_with(b, extra).await;
    let resp = app
        .chat(json!({"model": "primary", "messages": user("anyone")}))
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-gateway-deployment"], "backup");
    assert_eq!(
        resp.headers()["x-gateway-attempts"],
        "3",
        "two in the group, then the fallback"
    );
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "Mock reply: anyone"
    );
    let calls = app.mock.calls();
    assert_eq!(calls["by_model"]["fail-500"], 1);
    assert_eq!(calls["by_model"]["fail-503"], 1);
    assert_eq!(calls["by_model"]["fine"], 1);
    let rows = app.ledger_rows(1).await;
    assert_eq!(
        (rows[0].model.as_str(), rows[0].deployment.as_deref()),
        ("primary", Some("backup"))
    );
    app.finish().await;
}

async fn slow_first_byte_fails_over(b: Backend) {
    let extra = "[router]\nbackoff_ms = 1\nmax_backoff_ms = 2\n\
        [[deployments]]\nid = \"slow\"\nmodel = \"s\"\nprovider = \"openai-compatible\"\nupstream_model = \"slow-5000\"\nbase_url = \"@MOCK@\"\napi_key = \"@KEY@\"\nfirst_byte_timeout_ms = 200\nweight = 1000\n\
        [[deployments]]\nid = \"quick\"\nmodel = \"s\"\nprovider = \"openai-compatible\"\nupstream_model = \"quick\"\nbase_url = \"@MOCK@\"\napi_key = \"@KEY@\"\nweight = 1\n";
    let app = spawn_app_with(b, extra).await;
    let mut served_by = Vec::new();
    for _ in 0..3 {
        let resp = app
            .chat(json!({"model": "s", "messages": user("hurry")}))
            .await;
        assert_eq!(resp.status(), 200);
        served_by.push(
            resp.headers()["x-gateway-deployment"]
                .to_str()
                .unwrap()
                .to_owned(),
        );
    }
    assert_eq!(served_by, ["quick", "quick", "quick"]);
    app.finish().await;
}

async fn request_errors_are_not_retried_and_streams_never_twice(b: Backend) {
    let extra = "[router]\nretries = 3\nbackoff_ms = 1\nmax_backoff_ms = 2\n\
        [[deployments]]\nmodel = \"picky\"\nprovider = \"openai-compatible\"\nupstream_model = \"fail-400\"\nbase_url = \"@MOCK@\"\napi_key = \"@KEY@\"\n\
        [[deployments]]\nmodel = \"stalling\"\nprovider = \"openai-compatible\"\nupstream_model = \"stall\"\nbase_url = \"@MOCK@\"\napi_key = \"@KEY@\"\nidle_timeout_ms = 300\n\
        [[deployments]]\nmodel = \"busy\"\nprovider = \"openai-compatible\"\nupstream_model = \"fail-429\"\nbase_url = \"@MOCK@\"\napi_key = \"@KEY@\"\n";
    let app = spawn_app_with(b, extra).await;
    let resp = app
        .chat(json!({"model": "picky", "messages": user("x")}))
        .await;
    assert_eq!(resp.status(), 400);
    assert_eq!(
        app.mock.calls()["by_model"]["fail-400"],
        1,
        "the request itself was wrong: no retry"
    );

    let resp = app
        .chat(json!({"model": "stalling", "stream": true, "messages": user("a b c")}))
        .await;
    assert_eq!(resp.status(), 200);
    let mut body = resp.bytes_stream();
    let mut text = String::new();
    while let Some(c) = body.next().await {
        text.push_str(&String::from_utf8_lossy(&c.unwrap()));
    }
    assert!(text.contains("upstream_timeout"), "{text}");
    assert_eq!(
        app.mock.calls()["by_model"]["stall"],
        1,
        "bytes reached the client: never retried"
    );

    // 429 with Retry-After: 1 is retried (the wait honours the header, capped at 2 ms here).
    let resp = app
        .chat(json!({"model": "busy", "messages": user("x")}))
        .await;
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["retry-after"], "1");
    assert_eq!(
        app.mock.calls()["by_model"]["fail-429"],
        4,
        "first try and three retries"
    );
    app.finish().await;
}

async fn context_window_fallback_only_when_configured(b: Backend) {
    let extra = "[[deployments]]\nmodel = \"small\"\nprovider = \"mock\"\n\
        [[deployments]]\nmodel = \"boom\"\nprovider = \"openai-compatible\"\nupstream_model = \"fail-500\"\nbase_url = \"@MOCK@\"\napi_key = \"@KEY@\"\n\
        [[fallbacks]]\nmodel = \"boom\"\nto = [\"small\"]\non = [\"context_window\"]\n\
        [router]\nretries = 0\n";
    let app = spawn_app_with(b, extra).await;
    // A 5xx is an `error`, not a context-window failure: this fallback does not apply.
    let resp = app
        .chat(json!({"model": "boom", "messages": user("x")}))
        .await;
    assert_eq!(resp.status(), 502);
    let rows = app.ledger_rows(1).await;
    assert_eq!(
        rows[0].provider.as_deref(),
        Some("openai-compatible"),
        "the mock fallback never served"
    );
    app.finish().await;
}

async fn deployment_status(app: &crate::harness::TestApp, id: &str) -> Value {
    let all: Value = app
        .get("/admin/v1/deployments")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    all["data"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["deployments"].as_array().unwrap().clone())
        .find(|d| d["id"] == id)
        .unwrap()
}

/// A deployment that fails cools down, shows so on the Models page and the admin API,
/// and is probed back in once its upstream answers again.
async fn cooldown_and_recovery_are_visible(b: Backend) {
    let port = dead_port();
    let extra = format!(
        "[router]\nretries = 1\nbackoff_ms = 1\nmax_backoff_ms = 2\ncooldown_failures = 2\ncooldown_ms = 2000\n\
         [[deployments]]\nid = \"flaky\"\nmodel = \"ha\"\nprovider = \"openai-compatible\"\nbase_url = \"http://127.0.0.1:{port}/v1\"\napi_key = \"@KEY@\"\nweight = 10000\n\
         [[deployments]]\nid = \"steady\"\nmodel = \"ha\"\nprovider = \"openai-compatible\"\nbase_url = \"@MOCK@\"\napi_key = \"@KEY@\"\nweight = 1\n\
         [[prices]]\nmodel = \"ha\"\ninput_per_mtok = 1.5\noutput_per_mtok = 2.0\n"
    );
    let app = spawn_app_with(b, &extra).await;
    // Signed in first: the page must be read while the deployment still rests.
    let cookie = crate::console::sign_in(&app, ADMIN_PASSWORD).await.unwrap();
    for _ in 0..2 {
        assert_eq!(
            app.chat(json!({"model": "ha", "messages": user("x")}))
                .await
                .status(),
            200
        );
    }
    let flaky = deployment_status(&app, "flaky").await;
    assert_eq!(flaky["status"], "cooling_down", "{flaky}");
    assert_eq!(flaky["failures"], 2);
    assert_eq!(flaky["input_per_mtok"], 1.5);
    assert_eq!(deployment_status(&app, "steady").await["status"], "up");
    // Virtual keys and anonymous callers never reach the management API.
    let anon = app
        .http
        .get(format!("{}/admin/v1/deployments", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(anon.status(), 401);

    let page = app
        .http
        .get(format!("{}/models", app.url))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    let html = page.text().await.unwrap();
    assert!(
        html.contains("data-id=\"flaky\" data-status=\"cooling_down\""),
        "{html}"
    );
    assert!(html.contains("cooling down ("), "{html}");

    // The upstream comes back on the same port; once the cooldown ends a request probes it.
    let revived = MockUpstream::start(
        format!("127.0.0.1:{port}").parse().unwrap(),
        Some(UPSTREAM_KEY.to_owned()),
    )
    .await
    .unwrap();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let resp = app
            .chat(json!({"model": "ha", "messages": user("x")}))
            .await;
        assert_eq!(resp.status(), 200);
        if resp.headers()["x-gateway-deployment"] == "flaky" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "flaky was never probed back in"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(revived.calls()["chat"], 1);
    let flaky = deployment_status(&app, "flaky").await;
    assert_eq!(
        (
            flaky["status"].as_str(),
            flaky["consecutive_failures"].as_u64()
        ),
        (Some("up"), None)
    );
    let page = app
        .http
        .get(format!("{}/models", app.url))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert!(
        page.text()
            .await
            .unwrap()
            .contains("data-id=\"flaky\" data-status=\"up\"")
    );
    app.finish().await;
}

async fn route_rules_pick_cheaper_models(b: Backend) {
    let extra = "[[route_rules]]\nmodel = \"gpt-test\"\nto = \"local\"\nmax_prompt_tokens = 5\n\
        [[route_rules]]\nmodel = \"gpt-test\"\nto = \"local\"\ntags = [\"batch\"]\n";
    let app = spawn_app_with(b, extra).await;
    let served = |resp: &reqwest::Response| {
        resp.headers()["x-gateway-deployment"]
            .to_str()
            .unwrap()
            .to_owned()
    };
    let small = app
        .chat(json!({"model": "gpt-test", "messages": user("hi")}))
        .await;
    assert_eq!(
        served(&small),
        "local#1",
        "a small prompt goes to the cheaper model"
    );
    let long = "word ".repeat(40);
    let big = app
        .chat(json!({"model": "gpt-test", "messages": user(&long)}))
        .await;
    assert_eq!(served(&big), "gpt-test#1");
    let tagged = app
        .post("/v1/chat/completions")
        .header("x-gateway-tags", "batch, nightly")
        .json(&json!({"model": "gpt-test", "messages": user(&long)}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        served(&tagged),
        "local#1",
        "tagged batch work goes to the cheaper model"
    );
    let bad = app
        .post("/v1/chat/completions")
        .header("x-gateway-tags", "ok, not ok!")
        .json(&json!({"model": "gpt-test", "messages": user("x")}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let rows = app.ledger_rows(4).await;
    let tagged_row = rows.iter().find(|r| r.tags != "[]").unwrap();
    assert_eq!(tagged_row.tags, "[\"batch\",\"nightly\"]");
    assert_eq!(
        (tagged_row.model.as_str(), tagged_row.deployment.as_deref()),
        ("gpt-test", Some("local#1"))
    );
    app.finish().await;
}

async fn rpm_cap_spills_to_the_rest_of_the_group(b: Backend) {
    let extra = "[[deployments]]\nid = \"capped\"\nmodel = \"g\"\nprovider = \"mock\"\nweight = 10000\nrpm = 3\n\
        [[deployments]]\nid = \"spare\"\nmodel = \"g\"\nprovider = \"mock\"\nweight = 1\n";
    let app = spawn_app_with(b, extra).await;
    let mut served = Vec::new();
    for _ in 0..6 {
        let resp = app.chat(json!({"model": "g", "messages": user("x")})).await;
        served.push(
            resp.headers()["x-gateway-deployment"]
                .to_str()
                .unwrap()
                .to_owned(),
        );
    }
    // Within one minute: three for the capped one, the rest spill over. (The six requests
    // take milliseconds; only a minute boundary falling among them could reset the count.)
    assert_eq!(&served[..3], ["capped", "capped", "capped"], "{served:?}");
    assert!(
        served[3..].iter().filter(|s| *s == "spare").count() >= 2,
        "{served:?}"
    );
    app.finish().await;
}
