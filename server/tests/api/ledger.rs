//! The ledger: a row for every request, streams included, also when the client goes away
//! or the gateway stops; idempotent on the request id.

use std::time::Duration;

use futures_util::StreamExt;
use gateway::meter::{LedgerRow, Usage};
use serde_json::json;

use crate::harness::{Backend, ledger_view, spawn_app, user};
use crate::on_both_databases;
use crate::proxy::spawn_app_hold;

on_both_databases!(
    client_disconnect_mid_stream_is_still_billed,
    without_draining_a_cut_stream_is_estimated,
    shutdown_flushes_every_row,
    replayed_rows_count_once
);

/// Streams "held" and drops the client after the first word.
async fn cut_after_first_word(app: &crate::harness::TestApp) {
    let resp = app
        .chat(
            json!({"model": "held", "stream": true, "messages": user("please write a long story")}),
        )
        .await;
    let mut body = resp.bytes_stream();
    let mut seen = String::new();
    while !seen.contains("\"Mock\"") {
        let chunk = tokio::time::timeout(Duration::from_secs(10), body.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        seen.push_str(&String::from_utf8_lossy(&chunk));
    }
    // The client goes away after the first word, while the upstream is still generating.
    drop(body);
}

async fn client_disconnect_mid_stream_is_still_billed(b: Backend) {
    let app = spawn_app_hold(b).await;
    cut_after_first_word(&app).await;
    // The gateway reads the upstream on to its usage report (relaying nothing).
    tokio::time::sleep(Duration::from_millis(200)).await;
    app.mock.release();
    let rows = app.ledger_rows(1).await;
    assert_eq!(
        rows.len(),
        1,
        "a row lands within seconds of the disconnect"
    );
    let r = &rows[0];
    assert_eq!(
        (r.status, r.error_type.as_deref()),
        (499, Some("client_closed"))
    );
    assert!(r.stream);
    // Exactly what the upstream reported, not an estimate.
    let usage = &app.mock.calls()["usage"];
    assert_eq!(r.prompt_tokens, usage["prompt_tokens"].as_i64().unwrap());
    assert_eq!(
        r.completion_tokens,
        usage["completion_tokens"].as_i64().unwrap()
    );
    assert!(!r.usage_estimated, "{r:?}");
    assert!(r.cost_micros == 0, "held model has no price");
    app.finish().await;
}

async fn without_draining_a_cut_stream_is_estimated(b: Backend) {
    let extra = format!(
        "{}\n[spend]\ndisconnect_drain_ms = 0\n",
        crate::proxy::hold_deployment()
    );
    let app = crate::harness::spawn_app_with(b, &extra).await;
    cut_after_first_word(&app).await;
    let rows = app.ledger_rows(1).await;
    assert_eq!(
        rows.len(),
        1,
        "a row lands within seconds of the disconnect"
    );
    let r = &rows[0];
    assert_eq!(r.status, 499);
    assert!(
        r.prompt_tokens > 0 && r.completion_tokens > 0,
        "never a $0 row for work done: {r:?}"
    );
    assert!(r.usage_estimated);
    app.mock.release();
    app.finish().await;
}

async fn shutdown_flushes_every_row(b: Backend) {
    let mut app = spawn_app(b).await;
    let n = 40;
    let reqs = (0..n).map(|i| {
        let body = json!({"model": if i % 2 == 0 { "gpt-test" } else { "local" }, "stream": i % 3 == 0, "messages": user("count me")});
        app.chat(body)
    });
    for resp in futures_util::future::join_all(reqs).await {
        assert_eq!(resp.status(), 200);
        let _ = resp.bytes().await.unwrap();
    }
    app.stop().await;
    // The gateway is gone; its rows must all be in the database now, none still queued.
    let rows = ledger_view(&app.store).await;
    assert_eq!(rows.len(), n);
    assert!(
        rows.iter()
            .all(|r| r.status == 200 && r.completion_tokens > 0)
    );
    let mut ids: Vec<&str> = rows.iter().map(|r| r.request_id.as_str()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), n, "request ids are unique");
    app.finish().await;
}

async fn replayed_rows_count_once(b: Backend) {
    let app = spawn_app(b).await;
    let row = LedgerRow {
        request_id: "req_replayed".into(),
        ts_ms: 1,
        key_id: None,
        team_id: None,
        project_id: None,
        user_id: None,
        endpoint: "chat",
        model: "m".into(),
        provider: Some("mock"),
        deployment: Some("m#1".into()),
        stream: false,
        status: 200,
        error_type: None,
        usage: Usage {
            prompt_tokens: 3,
            completion_tokens: 4,
            cached_tokens: 1,
        },
        usage_estimated: false,
        cost_micros: 9,
        latency_ms: 1,
        ttfb_ms: Some(1),
        tags: "[]".into(),
    };
    app.store
        .insert_ledger(&[row.clone(), row.clone()])
        .await
        .unwrap();
    app.store.insert_ledger(&[row]).await.unwrap();
    let rows = ledger_view(&app.store).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(
        (
            rows[0].prompt_tokens,
            rows[0].completion_tokens,
            rows[0].cached_tokens,
            rows[0].cost_micros
        ),
        (3, 4, 1, 9)
    );
    app.finish().await;
}
