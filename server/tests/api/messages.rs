//! `/v1/messages` (Anthropic's dialect) served by an OpenAI-compatible deployment and by an
//! Anthropic one, and `/v1/chat/completions` served by Anthropic: both directions of the
//! translation, streaming included, with Anthropic's error shape on `/v1/messages`.

use serde_json::{Value, json};

use crate::harness::{Backend, MASTER_KEY, spawn_app_with};
use crate::on_both_databases;

on_both_databases!(
    messages_served_by_openai_deployment,
    messages_served_by_anthropic_deployment,
    openai_dialect_served_by_anthropic,
    messages_errors_in_anthropic_shape
);

const CLAUDE: &str = "[[deployments]]\nmodel = \"claude\"\nprovider = \"anthropic\"\nupstream_model = \"claude-up\"\nbase_url = \"@ROOT@\"\napi_key = \"@KEY@\"\n\
    [[deployments]]\nmodel = \"claude-tools\"\nprovider = \"anthropic\"\nupstream_model = \"tool\"\nbase_url = \"@ROOT@\"\napi_key = \"@KEY@\"\n";

fn messages_req(app: &crate::harness::TestApp, body: Value) -> reqwest::RequestBuilder {
    app.http
        .post(format!("{}/v1/messages", app.url))
        .header("x-api-key", MASTER_KEY)
        .header("anthropic-version", "2023-06-01")
        .json(&body)
}

/// Parses an Anthropic event stream into (event, data) pairs.
async fn events(resp: reqwest::Response) -> Vec<(String, Value)> {
    let text = resp.text().await.unwrap();
    text.split("\n\n")
        // SSE comments (the gateway's cost line) are for tools, not events.
        .filter(|f| !f.trim().is_empty() && !f.starts_with(':'))
        .map(|f| {
            let mut lines = f.lines();
            let ev = lines
                .next()
                .unwrap()
                .trim_start_matches("event: ")
                .to_owned();
            let data =
                serde_json::from_str(lines.next().unwrap().trim_start_matches("data: ")).unwrap();
            (ev, data)
        })
        .collect()
}

fn streamed_text(evs: &[(String, Value)]) -> String {
    evs.iter()
        .filter_map(|(_, d)| d["delta"]["text"].as_str())
        .collect()
}

async fn messages_served_by_openai_deployment(b: Backend) {
    let app = spawn_app_with(b, "").await;
    let body = json!({"model": "gpt-test", "max_tokens": 20, "system": "Be brief.",
        "messages": [{"role": "user", "content": "Hello from anthropic"}]});
    let resp = messages_req(&app, body.clone()).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-gateway-deployment"], "gpt-test#1");
    let m: Value = resp.json().await.unwrap();
    assert_eq!(m["type"], "message");
    assert_eq!(m["model"], "gpt-test");
    assert_eq!(
        m["content"][0],
        json!({"type": "text", "text": "Mock reply: Hello from anthropic"})
    );
    assert_eq!(m["stop_reason"], "end_turn");
    // system (2 words + 3) + user (3 words + 3) = 11 prompt tokens; 5 out.
    assert_eq!(
        (
            m["usage"]["input_tokens"].as_i64(),
            m["usage"]["output_tokens"].as_i64()
        ),
        (Some(11), Some(5))
    );
    let sent = &app.mock.calls()["last_body"];
    assert_eq!(sent["model"], "upstream-gpt");
    assert_eq!(sent["max_tokens"], 20);
    assert_eq!(
        sent["messages"][0],
        json!({"role": "system", "content": "Be brief."})
    );

    let mut streaming = body;
    streaming["stream"] = json!(true);
    let resp = messages_req(&app, streaming).send().await.unwrap();
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let evs = events(resp).await;
    let kinds: Vec<&str> = evs.iter().map(|(e, _)| e.as_str()).collect();
    assert_eq!(kinds.first(), Some(&"message_start"));
    assert_eq!(&kinds[kinds.len() - 2..], ["message_delta", "message_stop"]);
    assert_eq!(streamed_text(&evs), "Mock reply: Hello from anthropic");
    assert_eq!(evs[evs.len() - 2].1["usage"]["output_tokens"], 5);
    let rows = app.ledger_rows(2).await;
    assert!(
        rows.iter()
            .all(|r| r.endpoint == "messages" && r.prompt_tokens == 11 && r.completion_tokens == 5),
        "{rows:?}"
    );
    app.finish().await;
}

async fn messages_served_by_anthropic_deployment(b: Backend) {
    let app = spawn_app_with(b, CLAUDE).await;
    let body = json!({"model": "claude", "max_tokens": 30,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Hi there"}]}]});
    let m: Value = messages_req(&app, body.clone())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(m["content"][0]["text"], "Mock reply: Hi there");
    assert_eq!(m["stop_reason"], "end_turn");
    let sent = &app.mock.calls()["last_body"];
    assert_eq!(sent["model"], "claude-up");
    assert_eq!(sent["max_tokens"], 30);
    assert_eq!(
        sent["messages"][0]["content"][0],
        json!({"type": "text", "text": "Hi there"})
    );
    assert_eq!(app.mock.calls()["last_authorization_ok"], true);

    let tools = json!({"model": "claude-tools", "max_tokens": 30, "stream": true,
        "tools": [{"name": "lookup", "description": "Looks things up", "input_schema": {"type": "object"}}],
        "messages": [{"role": "user", "content": "find cats"}]});
    let evs = events(messages_req(&app, tools).send().await.unwrap()).await;
    let tool_start = evs
        .iter()
        .find(|(e, d)| e == "content_block_start" && d["content_block"]["type"] == "tool_use")
        .unwrap();
    assert_eq!(tool_start.1["content_block"]["name"], "lookup");
    let args: String = evs
        .iter()
        .filter_map(|(_, d)| d["delta"]["partial_json"].as_str())
        .collect();
    assert_eq!(
        serde_json::from_str::<Value>(&args).unwrap(),
        json!({"query": "cats"})
    );
    let delta = &evs.iter().find(|(e, _)| e == "message_delta").unwrap().1;
    assert_eq!(delta["delta"]["stop_reason"], "tool_use");
    app.finish().await;
}

async fn openai_dialect_served_by_anthropic(b: Backend) {
    let app = spawn_app_with(b, CLAUDE).await;
    let resp = app
        .chat(json!({"model": "claude", "max_tokens": 40, "temperature": 0.2,
            "messages": [{"role": "system", "content": "Sys"}, {"role": "user", "content": "one two"}]}))
        .await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "Mock reply: one two"
    );
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    let sent = &app.mock.calls()["last_body"];
    assert_eq!(sent["system"], json!([{"type": "text", "text": "Sys"}]));
    assert_eq!(sent["temperature"], 0.2);
    assert_eq!(sent["max_tokens"], 40);

    let resp = app
        .chat(json!({"model": "claude-tools", "stream": true, "stream_options": {"include_usage": true},
            "tools": [{"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}],
            "messages": [{"role": "user", "content": "find"}]}))
        .await;
    let text = resp.text().await.unwrap();
    let chunks: Vec<Value> = text
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert!(text.trim_end().ends_with("data: [DONE]"));
    let call = chunks
        .iter()
        .find(|c| c["choices"][0]["delta"]["tool_calls"][0]["id"].is_string())
        .unwrap();
    assert_eq!(
        call["choices"][0]["delta"]["tool_calls"][0]["function"]["name"],
        "lookup"
    );
    assert!(
        chunks
            .iter()
            .any(|c| c["choices"][0]["finish_reason"] == "tool_calls")
    );
    let usage = chunks.iter().find(|c| c["usage"].is_object()).unwrap();
    assert_eq!(usage["usage"]["completion_tokens"], 3);

    // A parameter Anthropic cannot honour: a clear 400 naming it.
    let resp = app.chat(json!({"model": "claude", "logprobs": true, "messages": [{"role": "user", "content": "x"}]})).await;
    assert_eq!(resp.status(), 400);
    let e: Value = resp.json().await.unwrap();
    assert_eq!(e["error"]["param"], "logprobs");
    app.finish().await;
}

async fn messages_errors_in_anthropic_shape(b: Backend) {
    let app = spawn_app_with(b, "").await;
    let bad_key = app
        .http
        .post(format!("{}/v1/messages", app.url))
        .header("x-api-key", "nope")
        .json(&json!({"model": "gpt-test", "max_tokens": 5, "messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad_key.status(), 401);
    let e: Value = bad_key.json().await.unwrap();
    assert_eq!(e["type"], "error");
    assert_eq!(e["error"]["type"], "authentication_error");
    let missing = messages_req(
        &app,
        json!({"model": "gpt-test", "messages": [{"role": "user", "content": "x"}]}),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(missing.status(), 400);
    let e: Value = missing.json().await.unwrap();
    assert_eq!(e["error"]["type"], "invalid_request_error");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("max_tokens")
    );
    let unknown = messages_req(
        &app,
        json!({"model": "nope", "max_tokens": 5, "messages": [{"role": "user", "content": "x"}]}),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(unknown.status(), 404);
    assert_eq!(
        unknown.json::<Value>().await.unwrap()["error"]["type"],
        "not_found_error"
    );
    app.finish().await;
}
