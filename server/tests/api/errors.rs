//! Every failure answers in OpenAI's error shape with SPEC's status, reveals nothing of the
//! upstream (URL, key), and still leaves a ledger row.

use futures_util::StreamExt;
use serde_json::{Value, json};

use crate::harness::{Backend, TestApp, spawn_app, spawn_app_with, user};
use crate::on_both_databases;

on_both_databases!(
    client_errors_have_openai_shape,
    upstream_failures_are_mapped_without_leaks,
    upstream_timeouts_answer_504,
    stalled_stream_ends_with_an_error_event
);

/// Asserts the OpenAI error shape and returns the body.
async fn error_body(resp: reqwest::Response, status: u16) -> Value {
    assert_eq!(resp.status().as_u16(), status);
    assert_eq!(resp.headers()["content-type"], "application/json");
    assert!(resp.headers().contains_key("x-request-id"));
    let body: Value = resp.json().await.unwrap();
    let e = &body["error"];
    assert!(e["message"].is_string(), "{body}");
    assert!(e["type"].is_string(), "{body}");
    assert!(
        e.as_object().unwrap().contains_key("param") && e.as_object().unwrap().contains_key("code"),
        "{body}"
    );
    body
}

async fn client_errors_have_openai_shape(b: Backend) {
    let app = spawn_app(b).await;
    let url = |p: &str| format!("{}{p}", app.url);
    let chat = json!({"model": "gpt-test", "messages": user("hi")});

    let none = app
        .http
        .post(url("/v1/chat/completions"))
        .json(&chat)
        .send()
        .await
        .unwrap();
    assert_eq!(none.headers()["www-authenticate"], "Bearer");
    let e = error_body(none, 401).await;
    assert_eq!(e["error"]["code"], "invalid_api_key");
    let bad = app
        .http
        .post(url("/v1/chat/completions"))
        .bearer_auth("sk-wrong")
        .json(&chat)
        .send()
        .await
        .unwrap();
    error_body(bad, 401).await;
    let injected = app
        .http
        .get(url("/v1/models"))
        .bearer_auth("x' OR '1'='1")
        .send()
        .await
        .unwrap();
    error_body(injected, 401).await;
    // Unknown paths under /v1 are not revealed to unauthenticated callers either.
    error_body(
        app.http.get(url("/v1/nothing-here")).send().await.unwrap(),
        401,
    )
    .await;

    let e = error_body(
        app.chat(json!({"model": "no-such-model", "messages": user("hi")}))
            .await,
        404,
    )
    .await;
    assert_eq!(e["error"]["code"], "model_not_found");
    let e = error_body(
        app.post("/v1/chat/completions")
            .body("{not json")
            .send()
            .await
            .unwrap(),
        400,
    )
    .await;
    assert_eq!(e["error"]["type"], "invalid_request_error");
    let e = error_body(app.chat(json!({"model": "gpt-test"})).await, 400).await;
    assert!(
        e["error"]["message"].as_str().unwrap().contains("messages"),
        "{e}"
    );
    let e = error_body(
        app.chat(json!({"model": "gpt-test", "messages": []})).await,
        400,
    )
    .await;
    assert_eq!(e["error"]["param"], "messages");
    let e = error_body(
        app.chat(json!({"model": "gpt-test", "messages": user("hi"), "base_url": "http://169.254.169.254/"})).await,
        400,
    )
    .await;
    assert_eq!(e["error"]["param"], "base_url");
    let big = "x".repeat(70_000);
    let e = error_body(
        app.chat(json!({"model": "gpt-test", "messages": user(&big)}))
            .await,
        413,
    )
    .await;
    assert_eq!(e["error"]["code"], "request_too_large");
    error_body(app.get("/v1/nothing-here").send().await.unwrap(), 404).await;
    error_body(app.get("/v1/chat/completions").send().await.unwrap(), 405).await;
    assert_eq!(
        app.mock.calls()["chat"],
        0,
        "no invalid request reached the upstream"
    );

    // Authenticated requests that reached a handler each left a row (404 model, 400 ×4, 413).
    let rows = app.ledger_rows(6).await;
    let statuses: Vec<i64> = rows.iter().map(|r| r.status).collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 400).count(),
        4,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 404).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 413).count(),
        1,
        "{statuses:?}"
    );
    app.finish().await;
}

const FAILURES: &str = r#"
[[deployments]]
model = "boom"
provider = "openai-compatible"
upstream_model = "fail-500"
base_url = "@MOCK@"
api_key = "@KEY@"

[[deployments]]
model = "busy"
provider = "openai-compatible"
upstream_model = "fail-429"
base_url = "@MOCK@"
api_key = "@KEY@"

[[deployments]]
model = "picky"
provider = "openai-compatible"
upstream_model = "fail-400"
base_url = "@MOCK@"
api_key = "@KEY@"

[[deployments]]
model = "wrong-key"
provider = "openai-compatible"
base_url = "@MOCK@"
api_key = "sk-this-key-is-wrong-and-SECRET-77"

[[deployments]]
model = "not-sse"
provider = "openai-compatible"
base_url = "@MOCK@"
api_key = "@KEY@"
"#;

async fn upstream_failures_are_mapped_without_leaks(b: Backend) {
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_port = dead.local_addr().unwrap().port();
    drop(dead);
    let extra = format!(
        "{FAILURES}\n[[deployments]]\nmodel = \"dead\"\nprovider = \"openai-compatible\"\nbase_url = \"http://127.0.0.1:{dead_port}/v1\"\napi_key = \"@KEY@\"\n"
    );
    let app = spawn_app_with(b, &extra).await;
    let ask = |m: &str| app.chat(json!({"model": m, "messages": user("hi")}));

    let e = error_body(ask("boom").await, 502).await;
    assert_eq!(e["error"]["code"], "upstream_error");
    assert!(
        !e.to_string().contains("mock failure"),
        "upstream text of a 5xx is not passed on"
    );
    let resp = ask("busy").await;
    assert_eq!(resp.headers()["retry-after"], "1");
    let e = error_body(resp, 429).await;
    assert_eq!(e["error"]["type"], "rate_limit_exceeded");
    let e = error_body(ask("picky").await, 400).await;
    assert_eq!(
        e["error"]["message"], "mock failure 400",
        "a request the upstream refused says why"
    );
    let e = error_body(ask("wrong-key").await, 502).await;
    let text = e.to_string();
    assert!(!text.contains("SECRET"), "{text}");
    let e = error_body(ask("dead").await, 502).await;
    assert!(
        !e.to_string().contains(&dead_port.to_string()),
        "upstream address leaked: {e}"
    );
    let resp = app
        .chat(json!({"model": "not-sse", "stream": true, "messages": user("hi")}))
        .await;
    error_body(resp, 502).await;

    let rows = app.ledger_rows(6).await;
    let mut labels: Vec<(i64, String)> = rows
        .iter()
        .map(|r| (r.status, r.error_type.clone().unwrap_or_default()))
        .collect();
    labels.sort();
    assert_eq!(
        labels,
        [
            (400, "upstream_rejected".to_owned()),
            (429, "upstream_rate_limited".to_owned()),
            (502, "upstream_error".to_owned()),
            (502, "upstream_error".to_owned()),
            (502, "upstream_error".to_owned()),
            (502, "upstream_error".to_owned()),
        ]
    );
    assert!(
        rows.iter()
            .all(|r| r.prompt_tokens == 0 && r.cost_micros == 0),
        "failed calls cost nothing"
    );
    app.finish().await;
}

async fn upstream_timeouts_answer_504(b: Backend) {
    let extra = "[[deployments]]\nmodel = \"sluggish\"\nprovider = \"openai-compatible\"\nupstream_model = \"slow-5000\"\n\
        base_url = \"@MOCK@\"\napi_key = \"@KEY@\"\nfirst_byte_timeout_ms = 200\n";
    let app = spawn_app_with(b, extra).await;
    let e = error_body(
        app.chat(json!({"model": "sluggish", "messages": user("hi")}))
            .await,
        504,
    )
    .await;
    assert_eq!(e["error"]["code"], "upstream_timeout");
    let rows = app.ledger_rows(1).await;
    assert_eq!(
        (rows[0].status, rows[0].error_type.as_deref()),
        (504, Some("upstream_timeout"))
    );
    app.finish().await;
}

async fn stalled_stream_ends_with_an_error_event(b: Backend) {
    let extra = "[[deployments]]\nmodel = \"stalling\"\nprovider = \"openai-compatible\"\nupstream_model = \"stall\"\n\
        base_url = \"@MOCK@\"\napi_key = \"@KEY@\"\nidle_timeout_ms = 300\n\
        [[prices]]\nmodel = \"stalling\"\ninput_per_mtok = 1.0\noutput_per_mtok = 2.0\n";
    let app: TestApp = spawn_app_with(b, extra).await;
    let resp = app
        .chat(json!({"model": "stalling", "stream": true, "messages": user("one two three")}))
        .await;
    assert_eq!(resp.status(), 200);
    let mut text = String::new();
    let mut body = resp.bytes_stream();
    while let Some(chunk) = body.next().await {
        text.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
    }
    let last = text.trim_end().rsplit("\n\n").next().unwrap();
    let v: Value = serde_json::from_str(last.strip_prefix("data: ").unwrap()).unwrap();
    assert_eq!(v["error"]["code"], "upstream_timeout", "{text}");
    let rows = app.ledger_rows(1).await;
    let r = &rows[0];
    assert_eq!(r.status, 504);
    // The upstream generated text but never reported usage: estimated, flagged, not $0.
    assert!(
        r.usage_estimated && r.completion_tokens > 0 && r.prompt_tokens > 0,
        "{r:?}"
    );
    assert!(r.cost_micros > 0);
    app.finish().await;
}
