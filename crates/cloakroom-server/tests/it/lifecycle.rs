//! Start, restart and graceful shutdown.

use crate::support::*;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test]
async fn shutdown_lets_an_in_flight_request_finish() {
    let mut t = TestServer::start().await;
    let addr = t.base.trim_start_matches("http://").to_string();
    let body = format!(r#"{{"email":"inflight@example.com","password":"{PASSWORD}"}}"#);
    let (head, tail) = body.split_at(10);
    let mut s = TcpStream::connect(&addr).await.unwrap();
    let req = format!(
        "POST /auth/signup HTTP/1.1\r\nHost: x\r\nOrigin: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{head}",
        t.origin,
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let server = t.server.take().unwrap();
    let stopping = tokio::spawn(server.shutdown());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!stopping.is_finished(), "shutdown waits for the request");
    s.write_all(tail.as_bytes()).await.unwrap();
    let mut out = vec![0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut out))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&out[..n]);
    assert!(text.starts_with("HTTP/1.1 201"), "{text}");
    drop(s);
    tokio::time::timeout(Duration::from_secs(10), stopping)
        .await
        .unwrap()
        .unwrap();
    // Nothing was half-written: the account is there after a restart.
    let t = t.restart().await;
    t.login("inflight@example.com", PASSWORD).await;
}
