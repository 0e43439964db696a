//! The proxy API's happy paths: chat, streams, embeddings, models.

use futures_util::StreamExt;
use serde_json::{Value, json};

use crate::harness::{Backend, spawn_app, user};
use crate::on_both_databases;

on_both_databases!(
    chat_is_translated_forwarded_and_metered,
    stream_passes_chunks_and_strips_usage,
    stream_hands_usage_to_clients_that_ask,
    streams_are_not_buffered,
    embeddings_and_models,
    built_in_mock_provider
);

async fn chat_is_translated_forwarded_and_metered(b: Backend) {
    let app = spawn_app(b).await;
    let resp = app
        .chat(json!({"model": "gpt-test", "messages": user("Hello from the tests"), "temperature": 0.3, "user": "u-1"}))
        .await;
    assert_eq!(resp.status(), 200);
    let headers = resp.headers().clone();
    assert!(
        headers["x-request-id"]
            .to_str()
            .unwrap()
            .starts_with("req_")
    );
    assert_eq!(headers["x-gateway-deployment"], "gpt-test#1");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "Mock reply: Hello from the tests"
    );
    // 4 words + 3 per message = 7 prompt tokens; 6 completion tokens.
    assert_eq!(body["usage"]["prompt_tokens"], 7);
    assert_eq!(body["usage"]["completion_tokens"], 6);
    // 7 * 2.5 + 6 * 10 = 77.5 micro-dollars, rounded up.
    assert_eq!(headers["x-gateway-cost-usd"], "0.000078");

    // What reached the upstream: its own model name, the client's parameters, our key.
    let calls = app.mock.calls();
    assert_eq!(calls["chat"], 1);
    assert_eq!(calls["last_authorization_ok"], true);
    let sent = &calls["last_body"];
    assert_eq!(sent["model"], "upstream-gpt");
    assert_eq!(sent["temperature"], 0.3);
    assert_eq!(sent["user"], "u-1");
    assert!(sent.get("stream_options").is_none());

    let rows = app.ledger_rows(1).await;
    assert_eq!(rows.len(), 1);
    let r = &rows[0];
    assert_eq!(r.request_id, headers["x-request-id"].to_str().unwrap());
    assert_eq!(
        (r.status, r.endpoint.as_str(), r.model.as_str()),
        (200, "chat", "gpt-test")
    );
    assert_eq!(r.provider.as_deref(), Some("openai-compatible"));
    assert_eq!(r.deployment.as_deref(), Some("gpt-test#1"));
    assert_eq!(r.key_id.as_deref(), Some("master"));
    assert_eq!(
        (r.prompt_tokens, r.completion_tokens, r.cached_tokens),
        (7, 6, 0)
    );
    assert_eq!(r.cost_micros, 78);
    assert!(!r.stream && !r.usage_estimated);
    app.finish().await;
}

/// Reads an SSE body into its `data:` payloads.
pub async fn sse_events(resp: reqwest::Response) -> Vec<String> {
    let text = resp.text().await.unwrap();
    text.split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .map(str::to_owned)
        .collect()
}

fn joined_content(events: &[String]) -> String {
    events
        .iter()
        .filter(|e| *e != "[DONE]")
        .filter_map(|e| serde_json::from_str::<Value>(e).ok())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect()
}

async fn stream_passes_chunks_and_strips_usage(b: Backend) {
    let app = spawn_app(b).await;
    let resp = app
        .chat(json!({"model": "gpt-test", "stream": true, "messages": user("one two three")}))
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    assert_eq!(resp.headers()["x-gateway-deployment"], "gpt-test#1");
    let events = sse_events(resp).await;
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    assert_eq!(joined_content(&events), "Mock reply: one two three");
    assert!(
        events.iter().all(|e| !e.contains("\"usage\":{")),
        "usage chunk leaked: {events:?}"
    );
    // The gateway asked the upstream for usage although the client did not.
    assert_eq!(
        app.mock.calls()["last_body"]["stream_options"]["include_usage"],
        true
    );
    let rows = app.ledger_rows(1).await;
    let r = &rows[0];
    assert!(r.stream);
    assert_eq!(
        (r.status, r.prompt_tokens, r.completion_tokens),
        (200, 6, 5)
    );
    assert!(!r.usage_estimated);
    assert_eq!(r.cost_micros, 65); // 6 * 2.5 + 5 * 10
    app.finish().await;
}

async fn stream_hands_usage_to_clients_that_ask(b: Backend) {
    let app = spawn_app(b).await;
    let resp = app
        .chat(json!({"model": "gpt-test", "stream": true, "stream_options": {"include_usage": true}, "messages": user("hi")}))
        .await;
    let events = sse_events(resp).await;
    let usage: Vec<Value> = events
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(e).ok())
        .filter(|v| v["usage"].is_object())
        .collect();
    assert_eq!(usage.len(), 1, "{events:?}");
    assert_eq!(usage[0]["usage"]["prompt_tokens"], 4);
    assert_eq!(usage[0]["choices"], json!([]));
    app.finish().await;
}

/// The upstream sends two events and then waits for a signal; the client must see those
/// events before the signal is given, so the gateway cannot be holding them back.
async fn streams_are_not_buffered(b: Backend) {
    let app = spawn_app_hold(b).await;
    let resp = app
        .chat(json!({"model": "held", "stream": true, "messages": user("alpha beta")}))
        .await;
    assert_eq!(resp.status(), 200);
    let mut body = resp.bytes_stream();
    let mut seen = String::new();
    while !seen.contains("\"Mock\"") {
        let chunk = tokio::time::timeout(std::time::Duration::from_secs(10), body.next())
            .await
            .expect("first events arrive while the upstream still holds the rest")
            .expect("stream open")
            .expect("bytes");
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(!seen.contains("[DONE]"));
    app.mock.release();
    while let Some(chunk) = body.next().await {
        seen.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
    }
    assert!(seen.ends_with("data: [DONE]\n\n"), "{seen}");
    app.finish().await;
}

pub async fn spawn_app_hold(b: Backend) -> crate::harness::TestApp {
    // A deployment whose upstream model is the mock's `hold` behaviour.
    crate::harness::spawn_app_with(b, &hold_deployment()).await
}

pub fn hold_deployment() -> String {
    String::from(
        "[[deployments]]\nmodel = \"held\"\nprovider = \"openai-compatible\"\nupstream_model = \"hold\"\nbase_url = \"@MOCK@\"\napi_key = \"@KEY@\"\n",
    )
}

async fn embeddings_and_models(b: Backend) {
    let app = spawn_app(b).await;
    let resp = app
        .post("/v1/embeddings")
        .json(&json!({"model": "embed-test", "input": ["a b", "c"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["data"].as_array().unwrap().len(), 2);
    assert_eq!(body["usage"]["prompt_tokens"], 3);
    assert_eq!(app.mock.calls()["embeddings"], 1);

    let models: Value = app
        .get("/v1/models")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["embed-test", "gpt-test", "local"]);
    assert_eq!(models["object"], "list");
    let one = app.get("/v1/models/local").send().await.unwrap();
    assert_eq!(one.status(), 200);
    let rows = app.ledger_rows(1).await;
    assert_eq!(
        (
            rows[0].endpoint.as_str(),
            rows[0].prompt_tokens,
            rows[0].completion_tokens
        ),
        ("embeddings", 3, 0)
    );
    app.finish().await;
}

async fn built_in_mock_provider(b: Backend) {
    let app = spawn_app(b).await;
    let body: Value = app
        .chat(json!({"model": "local", "messages": user("x y"), "max_tokens": 2}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], "Mock reply:");
    assert_eq!(body["usage"]["completion_tokens"], 2);
    let events = sse_events(
        app.chat(json!({"model": "local", "stream": true, "messages": user("x y")}))
            .await,
    )
    .await;
    assert_eq!(joined_content(&events), "Mock reply: x y");
    assert_eq!(
        app.mock.calls()["chat"],
        0,
        "the mock provider never calls out"
    );
    let rows = app.ledger_rows(2).await;
    assert_eq!(rows.len(), 2);
    assert!(
        rows.iter()
            .all(|r| r.provider.as_deref() == Some("mock") && r.completion_tokens > 0)
    );
    app.finish().await;
}
