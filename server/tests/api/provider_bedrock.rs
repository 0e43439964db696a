//! The `bedrock` provider through the gateway, against the mock upstream's Bedrock face
//! (which checks every SigV4 signature with `MOCK_AWS_SECRET`).

use gateway::testkit::mock_bedrock::MOCK_AWS_SECRET;
use serde_json::{Value, json};

use crate::harness::{Backend, TestApp, spawn_app_with, user};
use crate::on_both_databases;
use crate::proxy::sse_events;

on_both_databases!(
    bedrock_chat_is_translated_signed_and_metered,
    bedrock_stream_is_decoded_and_metered,
    bedrock_tool_call_round_trip,
    bedrock_bad_signature_is_a_bad_gateway,
    bedrock_embeddings
);

const WRONG_SECRET: &str = "wrong/SECRET+that+must+not+leak";

fn deployment(model: &str, upstream: &str, secret: &str) -> String {
    format!(
        r#"
[[deployments]]
model = "{model}"
provider = "bedrock"
upstream_model = "{upstream}"
base_url = "@ROOT@"
region = "us-east-1"
aws_access_key_id = "@KEY@"
aws_secret_access_key = "{secret}"
"#
    )
}

async fn spawn(b: Backend) -> TestApp {
    let toml = [
        deployment(
            "bedrock-test",
            "anthropic.claude-mock-v1:0",
            MOCK_AWS_SECRET,
        ),
        deployment("bedrock-tool", "tool", MOCK_AWS_SECRET),
        deployment("bedrock-bad", "anthropic.claude-mock-v1:0", WRONG_SECRET),
        deployment(
            "bedrock-embed",
            "amazon.titan-embed-text-v2:0",
            MOCK_AWS_SECRET,
        ),
    ]
    .concat();
    spawn_app_with(b, &toml).await
}

async fn bedrock_chat_is_translated_signed_and_metered(b: Backend) {
    let app = spawn(b).await;
    let resp = app
        .chat(json!({
            "model": "bedrock-test",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Hello from the tests"}
            ],
            "temperature": 0.3, "top_p": 0.8, "max_tokens": 50, "stop": "END"
        }))
        .await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-gateway-deployment"], "bedrock-test#1");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["object"], "chat.completion");
    assert_eq!(body["model"], "anthropic.claude-mock-v1:0");
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "Mock reply: Hello from the tests"
    );
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    // (2 + 4 words) + 3 per message = 12 prompt tokens; 6 completion tokens.
    assert_eq!(body["usage"]["prompt_tokens"], 12);
    assert_eq!(body["usage"]["completion_tokens"], 6);

    // What reached the upstream: a Converse body, signed (the mock recomputed the
    // signature), the model id (with its `:`) in the path.
    let calls = app.mock.calls();
    assert_eq!(calls["chat"], 1);
    assert_eq!(calls["by_model"]["anthropic.claude-mock-v1:0"], 1);
    assert_eq!(calls["last_authorization_ok"], true);
    let sent = &calls["last_body"];
    assert_eq!(
        sent["messages"],
        json!([{"role": "user", "content": [{"text": "Hello from the tests"}]}])
    );
    assert_eq!(sent["system"], json!([{"text": "Be brief."}]));
    assert_eq!(
        sent["inferenceConfig"],
        json!({"maxTokens": 50, "temperature": 0.3, "topP": 0.8, "stopSequences": ["END"]})
    );
    assert!(sent.get("model").is_none() && sent.get("toolConfig").is_none());

    let rows = app.ledger_rows(1).await;
    assert_eq!(rows.len(), 1);
    let r = &rows[0];
    assert_eq!((r.status, r.endpoint.as_str()), (200, "chat"));
    assert_eq!(r.provider.as_deref(), Some("bedrock"));
    assert_eq!((r.prompt_tokens, r.completion_tokens), (12, 6));
    assert!(!r.stream && !r.usage_estimated);

    // Parameters Converse cannot honour are refused before any call.
    let resp = app
        .chat(json!({"model": "bedrock-test", "messages": user("hi"), "logprobs": true}))
        .await;
    assert_eq!(resp.status(), 400);
    let err: Value = resp.json().await.unwrap();
    assert_eq!(err["error"]["param"], "logprobs");
    // So are image URLs Bedrock cannot fetch.
    let resp = app
        .chat(
            json!({"model": "bedrock-test", "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.png"}}]}]}),
        )
        .await;
    assert_eq!(resp.status(), 400);
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

async fn bedrock_stream_is_decoded_and_metered(b: Backend) {
    let app = spawn(b).await;
    let resp = app
        .chat(json!({"model": "bedrock-test", "stream": true, "stream_options": {"include_usage": true}, "messages": user("one two three")}))
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
    let finishes: Vec<&str> = parsed
        .iter()
        .filter_map(|v| v["choices"][0]["finish_reason"].as_str())
        .collect();
    assert_eq!(finishes, ["stop"]);
    let usage: Vec<&Value> = parsed.iter().filter(|v| v["usage"].is_object()).collect();
    assert_eq!(usage.len(), 1, "{events:?}");
    assert_eq!(usage[0]["usage"]["prompt_tokens"], 6);
    assert_eq!(usage[0]["usage"]["completion_tokens"], 5);
    assert_eq!(app.mock.calls()["last_authorization_ok"], true);

    let rows = app.ledger_rows(1).await;
    let r = &rows[0];
    assert!(r.stream);
    assert_eq!(r.provider.as_deref(), Some("bedrock"));
    assert_eq!(
        (r.status, r.prompt_tokens, r.completion_tokens),
        (200, 6, 5)
    );
    assert!(!r.usage_estimated);
    app.finish().await;
}

async fn bedrock_tool_call_round_trip(b: Backend) {
    let app = spawn(b).await;
    let tools = json!([{"type": "function", "function": {"name": "get_weather", "description": "Weather", "parameters": {"type": "object", "properties": {"query": {"type": "string"}}}}}]);
    let resp = app
        .chat(json!({
            "model": "bedrock-tool",
            "messages": user("weather in Paris"),
            "tools": tools,
            "tool_choice": "required"
        }))
        .await;
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    let choice = &body["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    assert_eq!(choice["message"]["content"], Value::Null);
    let call = &choice["message"]["tool_calls"][0];
    assert_eq!(call["id"], "tooluse_mock1");
    assert_eq!(call["function"]["name"], "get_weather");
    let args: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(args, json!({"query": "weather in Paris"}));
    let sent = &app.mock.calls()["last_body"];
    assert_eq!(
        sent["toolConfig"],
        json!({
            "tools": [{"toolSpec": {"name": "get_weather", "description": "Weather",
                "inputSchema": {"json": {"type": "object", "properties": {"query": {"type": "string"}}}}}}],
            "toolChoice": {"any": {}}
        })
    );

    // Streamed, the call arrives as a start and argument fragments.
    let resp = app
        .chat(json!({"model": "bedrock-tool", "stream": true, "messages": user("weather in Paris"), "tools": tools}))
        .await;
    assert_eq!(resp.status(), 200);
    let events = sse_events(resp).await;
    let parsed: Vec<Value> = events
        .iter()
        .filter_map(|e| serde_json::from_str::<Value>(e).ok())
        .collect();
    let deltas: Vec<&Value> = parsed
        .iter()
        .filter_map(|v| v["choices"][0]["delta"]["tool_calls"].get(0))
        .collect();
    assert_eq!(deltas[0]["id"], "tooluse_mock1");
    assert_eq!(deltas[0]["function"]["name"], "get_weather");
    let streamed: String = deltas
        .iter()
        .filter_map(|d| d["function"]["arguments"].as_str())
        .collect();
    assert_eq!(
        serde_json::from_str::<Value>(&streamed).unwrap(),
        json!({"query": "weather in Paris"})
    );
    assert!(
        parsed
            .iter()
            .any(|v| v["choices"][0]["finish_reason"] == "tool_calls")
    );

    // The result goes back as a toolResult in a user turn.
    let resp = app
        .chat(json!({
            "model": "bedrock-test",
            "messages": [
                {"role": "user", "content": "weather in Paris"},
                {"role": "assistant", "content": null, "tool_calls": [call]},
                {"role": "tool", "tool_call_id": "tooluse_mock1", "content": "{\"temp\": 21}"}
            ]
        }))
        .await;
    assert_eq!(resp.status(), 200);
    let sent = &app.mock.calls()["last_body"];
    assert_eq!(
        sent["messages"][1],
        json!({"role": "assistant", "content": [{"toolUse": {"toolUseId": "tooluse_mock1", "name": "get_weather", "input": {"query": "weather in Paris"}}}]})
    );
    assert_eq!(
        sent["messages"][2],
        json!({"role": "user", "content": [{"toolResult": {"toolUseId": "tooluse_mock1", "content": [{"json": {"temp": 21}}], "status": "success"}}]})
    );
    app.finish().await;
}

async fn bedrock_bad_signature_is_a_bad_gateway(b: Backend) {
    let app = spawn(b).await;
    let resp = app
        .chat(json!({"model": "bedrock-bad", "messages": user("hello")}))
        .await;
    assert_eq!(resp.status(), 502);
    let text = resp.text().await.unwrap();
    assert!(!text.contains(WRONG_SECRET), "{text}");
    assert!(!text.contains(MOCK_AWS_SECRET), "{text}");
    // The key id was right; the signature (made with the wrong secret) was not.
    assert_eq!(app.mock.calls()["last_authorization_ok"], true);
    let rows = app.ledger_rows(1).await;
    assert_eq!(rows[0].status, 502);
    assert_eq!(rows[0].provider.as_deref(), Some("bedrock"));
    app.finish().await;
}

async fn bedrock_embeddings(b: Backend) {
    let app = spawn(b).await;
    let resp = app
        .post("/v1/embeddings")
        .json(&json!({"model": "bedrock-embed", "input": ["a b", "hello world again"]}))
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
    // Titan counts the tokens of each input: 2 + 3.
    assert_eq!(
        body["usage"],
        json!({"prompt_tokens": 5, "total_tokens": 5})
    );
    let calls = app.mock.calls();
    assert_eq!(calls["embeddings"], 2, "one invoke per input");
    assert_eq!(calls["last_authorization_ok"], true);
    assert_eq!(
        calls["last_body"],
        json!({"inputText": "hello world again"})
    );
    let rows = app.ledger_rows(1).await;
    assert_eq!(
        (
            rows[0].endpoint.as_str(),
            rows[0].provider.as_deref(),
            rows[0].prompt_tokens,
            rows[0].completion_tokens
        ),
        ("embeddings", Some("bedrock"), 5, 0)
    );
    app.finish().await;
}
