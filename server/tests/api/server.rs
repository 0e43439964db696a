//! The HTTP server itself: health, request ids everywhere, header read timeouts.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::{Backend, spawn_app};
use crate::on_both_databases;

on_both_databases!(health_and_request_ids, slow_headers_are_cut_off);

async fn health_and_request_ids(b: Backend) {
    let app = spawn_app(b).await;
    let live = app
        .http
        .get(format!("{}/health/live", app.url))
        .send()
        .await
        .unwrap();
    assert_eq!(live.status(), 200);
    let ready: serde_json::Value = app
        .http
        .get(format!("{}/health/ready", app.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["status"], "ok");
    assert_eq!(ready["database"], true);
    let page = app
        .http
        .get(format!("{}/login", app.url))
        .send()
        .await
        .unwrap();
    let a = page.headers()["x-request-id"].to_str().unwrap().to_owned();
    let b2 = app
        .http
        .get(format!("{}/health/live", app.url))
        .header("x-request-id", "client-chosen")
        .send()
        .await
        .unwrap();
    let id = b2.headers()["x-request-id"].to_str().unwrap();
    assert_ne!(
        id, "client-chosen",
        "clients cannot choose the gateway's request id"
    );
    assert_ne!(a, id);
    app.finish().await;
}

/// A client that never finishes its headers is disconnected after the configured 500 ms.
async fn slow_headers_are_cut_off(b: Backend) {
    let app = spawn_app(b).await;
    let mut sock = tokio::net::TcpStream::connect(app.url.trim_start_matches("http://"))
        .await
        .unwrap();
    sock.write_all(b"GET /health/live HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), sock.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "connection must be closed by the server");
    let text = String::from_utf8_lossy(&buf);
    assert!(!text.contains("200 OK"), "{text}");
    app.finish().await;
}
