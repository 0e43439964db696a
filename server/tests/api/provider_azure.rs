//! Azure OpenAI through the gateway (deployment URL, `api-version`, `api-key`), and the
//! Anthropic dialect served by every other provider kind: Gemini, Bedrock, Azure.

use gateway::testkit::mock_bedrock::MOCK_AWS_SECRET;
use serde_json::{Value, json};

use crate::harness::{Backend, MASTER_KEY, spawn_app_with, user};
use crate::on_both_databases;
use crate::proxy::sse_events;

on_both_databases!(
    azure_chat_and_stream,
    anthropic_dialect_on_every_provider_kind
);

fn deployments() -> String {
    format!(
        r#"
[[deployments]]
model = "azure-gpt"
provider = "azure"
upstream_model = "my-gpt4o-deployment"
base_url = "@ROOT@"
api_key = "@KEY@"

[[deployments]]
model = "azure-pinned"
provider = "azure"
upstream_model = "other-deployment"
api_version = "2025-01-01-preview"
base_url = "@ROOT@"
api_key = "@KEY@"

[[deployments]]
model = "gemini-test"
provider = "gemini"
upstream_model = "gemini-mock-flash"
base_url = "@ROOT@"
api_key = "@KEY@"

[[deployments]]
model = "bedrock-test"
provider = "bedrock"
upstream_model = "anthropic.claude-mock-v1:0"
base_url = "@ROOT@"
region = "eu-west-1"
aws_access_key_id = "@KEY@"
aws_secret_access_key = "{MOCK_AWS_SECRET}"
"#
    )
}

async fn azure_chat_and_stream(b: Backend) {
    let app = spawn_app_with(b, &deployments()).await;
    let resp = app
        .chat(json!({"model": "azure-gpt", "messages": user("hello azure")}))
        .await;
    assert_eq!(resp.status(), 200, "{:?}", resp.text().await);
    let app_calls = app.mock.calls();
    // The mock routes Azure by the deployment in the path and checks api-key + api-version.
    assert_eq!(app_calls["by_model"]["my-gpt4o-deployment"], 1);
    assert_eq!(app_calls["last_authorization_ok"], true);
    let events = sse_events(
        app.chat(json!({"model": "azure-pinned", "stream": true, "messages": user("a b")}))
            .await,
    )
    .await;
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    assert_eq!(app.mock.calls()["by_model"]["other-deployment"], 1);
    assert_eq!(
        app.mock.calls()["last_body"]["stream_options"]["include_usage"],
        true
    );
    let rows = app.ledger_rows(2).await;
    assert!(
        rows.iter()
            .all(|r| r.provider.as_deref() == Some("azure") && r.completion_tokens > 0),
        "{rows:?}"
    );
    app.finish().await;
}

async fn anthropic_dialect_on_every_provider_kind(b: Backend) {
    let app = spawn_app_with(b, &deployments()).await;
    for model in ["gemini-test", "bedrock-test", "azure-gpt", "local"] {
        for stream in [false, true] {
            let resp = app
                .http
                .post(format!("{}/v1/messages", app.url))
                .header("x-api-key", MASTER_KEY)
                .json(&json!({"model": model, "max_tokens": 50, "stream": stream,
                    "messages": [{"role": "user", "content": "ping from claude code"}]}))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200, "{model} stream={stream}");
            let text = if stream {
                let body = resp.text().await.unwrap();
                assert!(body.starts_with("event: message_start"), "{model}: {body}");
                assert!(
                    body.trim_end()
                        .ends_with("data: {\"type\":\"message_stop\"}"),
                    "{model}: {body}"
                );
                body.split("\n\n")
                    .filter_map(|f| f.lines().nth(1))
                    .filter_map(|d| {
                        serde_json::from_str::<Value>(d.trim_start_matches("data: ")).ok()
                    })
                    .filter_map(|d| d["delta"]["text"].as_str().map(str::to_owned))
                    .collect::<String>()
            } else {
                let m: Value = resp.json().await.unwrap();
                assert_eq!(m["type"], "message");
                assert!(m["usage"]["output_tokens"].as_i64().unwrap() > 0, "{m}");
                m["content"][0]["text"].as_str().unwrap().to_owned()
            };
            assert_eq!(
                text, "Mock reply: ping from claude code",
                "{model} stream={stream}"
            );
        }
    }
    app.finish().await;
}
