//! Every token an upstream reports is metered once: over a thousand mixed requests —
//! plain, streamed, streams cut by the client, retried around a dead deployment, failed
//! over to another group — the ledger's tokens equal what the mock upstream reported, and
//! a stop in the middle of load loses no row.

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::json;

use crate::harness::{Backend, ledger_view, spawn_app_with, user};
use crate::on_both_databases;

on_both_databases!(
    a_thousand_mixed_requests_meter_exactly,
    stopping_under_load_loses_no_row
);

const EXTRA: &str = "[router]\nretries = 2\nbackoff_ms = 1\nmax_backoff_ms = 2\ncooldown_failures = 1000000\n\
    [[deployments]]\nid = \"dead\"\nmodel = \"flaky\"\nprovider = \"openai-compatible\"\nupstream_model = \"fail-500\"\nbase_url = \"@MOCK@\"\napi_key = \"@KEY@\"\nweight = 1\n\
    [[deployments]]\nid = \"alive\"\nmodel = \"flaky\"\nprovider = \"openai-compatible\"\nupstream_model = \"alive-up\"\nbase_url = \"@MOCK@\"\napi_key = \"@KEY@\"\nweight = 1\n\
    [[deployments]]\nid = \"broken\"\nmodel = \"doomed\"\nprovider = \"openai-compatible\"\nupstream_model = \"fail-503\"\nbase_url = \"@MOCK@\"\napi_key = \"@KEY@\"\n\
    [[deployments]]\nid = \"rescue\"\nmodel = \"rescue\"\nprovider = \"openai-compatible\"\nupstream_model = \"rescue-up\"\nbase_url = \"@MOCK@\"\napi_key = \"@KEY@\"\n\
    [[fallbacks]]\nmodel = \"doomed\"\nto = [\"rescue\"]\non = [\"error\"]\n";

/// One request of kind `i % 5`; returns whether the client saw a complete answer.
async fn one(app: &crate::harness::TestApp, i: usize) -> bool {
    let words = format!("request number {i} {}", "word ".repeat(i % 7));
    let msgs = user(&words);
    match i % 5 {
        0 => {
            app.chat(json!({"model": "gpt-test", "messages": msgs}))
                .await
                .status()
                == 200
        }
        1 => {
            let r = app
                .chat(json!({"model": "gpt-test", "stream": true, "messages": msgs}))
                .await;
            r.status() == 200 && r.bytes().await.is_ok()
        }
        2 => {
            // The client reads three chunks and goes away.
            let r = app
                .chat(json!({"model": "flaky", "stream": true, "messages": msgs}))
                .await;
            let mut body = r.bytes_stream();
            for _ in 0..3 {
                if body.next().await.is_none() {
                    break;
                }
            }
            false
        }
        3 => {
            app.chat(json!({"model": "flaky", "messages": msgs}))
                .await
                .status()
                == 200
        }
        _ => {
            app.chat(json!({"model": "doomed", "messages": msgs}))
                .await
                .status()
                == 200
        }
    }
}

async fn a_thousand_mixed_requests_meter_exactly(b: Backend) {
    let app = spawn_app_with(b, EXTRA).await;
    let n = 1000;
    let app_ref = &app;
    let results: Vec<bool> = futures_util::stream::iter(0..n)
        .map(|i| async move { one(app_ref, i).await })
        .buffer_unordered(16)
        .collect()
        .await;
    assert_eq!(
        results.iter().filter(|ok| **ok).count(),
        n / 5 * 4,
        "every uncut request answered"
    );
    let rows = app.ledger_rows(n).await;
    assert_eq!(rows.len(), n, "one row per request");
    let calls = app.mock.calls();
    let (up_prompt, up_completion) = (
        calls["usage"]["prompt_tokens"].as_i64().unwrap(),
        calls["usage"]["completion_tokens"].as_i64().unwrap(),
    );
    let prompt: i64 = rows.iter().map(|r| r.prompt_tokens).sum();
    let completion: i64 = rows.iter().map(|r| r.completion_tokens).sum();
    assert!(up_prompt > 0 && up_completion > 0);
    assert_eq!(
        (prompt, completion),
        (up_prompt, up_completion),
        "ledger vs upstream"
    );
    assert!(rows.iter().all(|r| !r.usage_estimated), "nothing estimated");
    // Retries and fail-overs cost attempts at the upstream, not rows.
    assert!(calls["chat"].as_i64().unwrap() > n as i64);
    app.finish().await;
}

async fn stopping_under_load_loses_no_row(b: Backend) {
    let mut app = spawn_app_with(b, EXTRA).await;
    let url = app.url.clone();
    let http = app.http.clone();
    // Load from outside the app's handle: requests keep coming while the gateway stops.
    let load = tokio::spawn(async move {
        let mut answered = 0usize;
        let mut tasks = futures_util::stream::iter(0..400)
            .map(|i| {
                let (http, url) = (http.clone(), url.clone());
                async move {
                    let body = json!({"model": if i % 2 == 0 { "gpt-test" } else { "flaky" }, "stream": i % 3 == 0, "messages": user("under load")});
                    match http
                        .post(format!("{url}/v1/chat/completions"))
                        .bearer_auth(crate::harness::MASTER_KEY)
                        .json(&body)
                        .send()
                        .await
                    {
                        Ok(r) if r.status() == 200 => r.bytes().await.is_ok(),
                        _ => false,
                    }
                }
            })
            .buffer_unordered(12);
        while let Some(ok) = tasks.next().await {
            answered += usize::from(ok);
        }
        answered
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    app.stop().await;
    let answered = load.await.unwrap();
    let rows = ledger_view(&app.store).await;
    assert!(answered > 0, "some requests were served before the stop");
    // Every request the gateway answered has its row; none is written twice.
    let ok_rows = rows.iter().filter(|r| r.status == 200).count();
    assert!(ok_rows >= answered, "{ok_rows} rows for {answered} answers");
    let mut ids: Vec<&str> = rows.iter().map(|r| r.request_id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), rows.len());
    // And the upstream's usage for them is all there.
    let calls = app.mock.calls();
    let completion: i64 = rows.iter().map(|r| r.completion_tokens).sum();
    assert_eq!(
        completion,
        calls["usage"]["completion_tokens"].as_i64().unwrap()
    );
    app.finish().await;
}
