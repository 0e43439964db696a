//! The `gemini` provider through the gateway, against the mock upstream's Gemini face.

use serde_json::{Value, json};

use crate::harness::{Backend, TestApp, spawn_app_with, user};
use crate::on_both_databases;
use crate::proxy::sse_events;

on_both_databases!(
    gemini_chat_is_translated_and_metered,
    gemini_stream_is_translated_and_metered,
    gemini_tool_call_answer,
    gemini_blocked_prompt_is_a_content_policy_error,
    gemini_embeddings
);

const DEPLOYMENTS: &str = r#"
[[deployments]]
model = "gemini-test"
provider = "gemini"
upstream_model = "gemini-mock-flash"
base_url = "@ROOT@"
api_key = "@KEY@"

[[deployments]]
model = "gemini-tool"
provider = "gemini"
upstream_model = "tool"
base_url = "@ROOT@"
api_key = "@KEY@"

[[deployments]]
model = "gemini-blocked"
provider = "gemini"
upstream_model = "blocked"
base_url = "@ROOT@"
api_key = "@KEY@"

[[deployments]]
model = "gemini-embed"
provider = "gemini"
upstream_model = "text-embedding-004"
base_url = "@ROOT@"
api_key = "@KEY@"
"#;

async fn spawn(b: Backend) -> TestApp {
    spawn_app_with(b, DEPLOYMENTS).await
}

async fn gemini_chat_is_translated_and_metered(b: Backend) {
    let app = spawn(b).await;
    let resp = app
        .chat(json!({
            "model": "gemini-test",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Hello from the tests"}
            ],
            "temperature": 0.3, "top_p": 0.8, "max_tokens": 50, "stop": "END"
        }))
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-gateway-deployment"], "gemini-test#1");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], "gemini-mock-flash");
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "Mock reply: Hello from the tests"
    );
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    // (2 + 4 words) + 3 per message = 12 prompt tokens; 6 completion tokens.
    assert_eq!(body["usage"]["prompt_tokens"], 12);
    assert_eq!(body["usage"]["completion_tokens"], 6);

    // What reached the upstream, in Gemini's format, the key in the header only (the
    // mock refuses `?key=` and checks `x-goog-api-key`).
    let calls = app.mock.calls();
    assert_eq!(calls["chat"], 1);
    assert_eq!(calls["by_model"]["gemini-mock-flash"], 1);
    assert_eq!(calls["last_authorization_ok"], true);
    let sent = &calls["last_body"];
    assert_eq!(
        sent["contents"],
        json!([{"role": "user", "parts": [{"text": "Hello from the tests"}]}])
    );
    assert_eq!(
        sent["systemInstruction"],
        json!({"parts": [{"text": "Be brief."}]})
    );
    assert_eq!(
        sent["generationConfig"],
        json!({"temperature": 0.3, "topP": 0.8, "maxOutputTokens": 50, "stopSequences": ["END"]})
    );
    assert!(sent.get("model").is_none() && sent.get("messages").is_none());
    assert!(!sent.to_string().contains(crate::harness::UPSTREAM_KEY));

    let rows = app.ledger_rows(1).await;
    assert_eq!(rows.len(), 1);
    let r = &rows[0];
    assert_eq!((r.status, r.endpoint.as_str()), (200, "chat"));
    assert_eq!(r.provider.as_deref(), Some("gemini"));
    assert_eq!((r.prompt_tokens, r.completion_tokens), (12, 6));
    assert!(!r.stream && !r.usage_estimated);

    // Parameters Gemini cannot honour are refused before any call.
    let resp = app
        .chat(json!({"model": "gemini-test", "messages": user("hi"), "logprobs": true}))
        .await;
    assert_eq!(resp.status(), 400);
    let err: Value = resp.json().await.unwrap();
    assert_eq!(err["error"]["param"], "logprobs");
    assert_eq!(app.mock.calls()["chat"], 1);
    app.finish().await;
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

async fn gemini_stream_is_translated_and_metered(b: Backend) {
    let app = spawn(b).await;
    let resp = app
        .chat(json!({"model": "gemini-test", "stream": true, "stream_options": {"include_usage": true}, "messages": user("one two three")}))
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let events = sse_events(resp).await;
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    assert_eq!(joined_content(&events), "Mock reply: one two three");
    let parsed: Vec<Value> = events
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(e).ok())
        .collect();
    assert_eq!(parsed[0]["choices"][0]["delta"]["role"], "assistant");
    let finishes: Vec<&Value> = parsed
        .iter()
        .filter_map(|v| v["choices"][0]["finish_reason"].as_str().map(|_| v))
        .collect();
    assert_eq!(finishes.len(), 1);
    assert_eq!(finishes[0]["choices"][0]["finish_reason"], "stop");
    let usage: Vec<&Value> = parsed.iter().filter(|v| v["usage"].is_object()).collect();
    assert_eq!(usage.len(), 1, "{events:?}");
    assert_eq!(usage[0]["usage"]["prompt_tokens"], 6);
    assert_eq!(usage[0]["usage"]["completion_tokens"], 5);
    assert_eq!(app.mock.calls()["last_authorization_ok"], true);

    let rows = app.ledger_rows(1).await;
    let r = &rows[0];
    assert!(r.stream);
    assert_eq!(
        (r.status, r.prompt_tokens, r.completion_tokens),
        (200, 6, 5)
    );
    assert!(!r.usage_estimated);
    app.finish().await;
}

async fn gemini_tool_call_answer(b: Backend) {
    let app = spawn(b).await;
    let resp = app
        .chat(json!({
            "model": "gemini-tool",
            "messages": user("weather in Paris"),
            "tools": [{"type": "function", "function": {"name": "get_weather", "description": "Weather", "parameters": {"type": "object", "properties": {"query": {"type": "string"}}}}}],
            "tool_choice": "required"
        }))
        .await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    let choice = &body["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    assert_eq!(choice["message"]["content"], Value::Null);
    let call = &choice["message"]["tool_calls"][0];
    assert!(call["id"].as_str().unwrap().starts_with("call_"));
    assert_eq!(call["function"]["name"], "get_weather");
    let args: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(args, json!({"query": "weather in Paris"}));

    let sent = &app.mock.calls()["last_body"];
    assert_eq!(
        sent["tools"][0]["functionDeclarations"][0]["name"],
        "get_weather"
    );
    assert_eq!(
        sent["toolConfig"],
        json!({"functionCallingConfig": {"mode": "ANY"}})
    );

    // The result goes back as a functionResponse named after the call.
    let id = call["id"].as_str().unwrap();
    let resp = app
        .chat(json!({
            "model": "gemini-test",
            "messages": [
                {"role": "user", "content": "weather in Paris"},
                {"role": "assistant", "content": null, "tool_calls": [call]},
                {"role": "tool", "tool_call_id": id, "content": "{\"temp\": 21}"}
            ]
        }))
        .await;
    assert_eq!(resp.status(), 200);
    let sent = &app.mock.calls()["last_body"];
    assert_eq!(
        sent["contents"][1],
        json!({"role": "model", "parts": [{"functionCall": {"name": "get_weather", "args": {"query": "weather in Paris"}}}]})
    );
    assert_eq!(
        sent["contents"][2],
        json!({"role": "user", "parts": [{"functionResponse": {"name": "get_weather", "response": {"content": {"temp": 21}}}}]})
    );
    app.finish().await;
}

async fn gemini_blocked_prompt_is_a_content_policy_error(b: Backend) {
    let app = spawn(b).await;
    let resp = app
        .chat(json!({"model": "gemini-blocked", "messages": user("something bad")}))
        .await;
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "content_policy_violation");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("SAFETY"),
        "{body}"
    );
    assert_eq!(app.mock.calls()["chat"], 1);
    let rows = app.ledger_rows(1).await;
    assert_eq!(rows[0].status, 400);
    assert_eq!(rows[0].provider.as_deref(), Some("gemini"));
    app.finish().await;
}

async fn gemini_embeddings(b: Backend) {
    let app = spawn(b).await;
    let resp = app
        .post("/v1/embeddings")
        .json(&json!({"model": "gemini-embed", "input": ["a b", "hello world!"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["object"], "list");
    let data = body["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    assert_eq!(data[1]["index"], 1);
    assert_eq!(data[1]["object"], "embedding");
    assert_eq!(data[0]["embedding"].as_array().unwrap().len(), 8);
    // Gemini reports no usage: 3 + 12 characters are estimated as 4 tokens.
    assert_eq!(
        body["usage"],
        json!({"prompt_tokens": 4, "total_tokens": 4})
    );

    let calls = app.mock.calls();
    assert_eq!(calls["embeddings"], 1);
    assert_eq!(calls["last_authorization_ok"], true);
    assert_eq!(
        calls["last_body"],
        json!({"requests": [
            {"model": "models/text-embedding-004", "content": {"parts": [{"text": "a b"}]}},
            {"model": "models/text-embedding-004", "content": {"parts": [{"text": "hello world!"}]}}
        ]})
    );
    let rows = app.ledger_rows(1).await;
    assert_eq!(
        (
            rows[0].endpoint.as_str(),
            rows[0].prompt_tokens,
            rows[0].completion_tokens
        ),
        ("embeddings", 4, 0)
    );
    app.finish().await;
}
