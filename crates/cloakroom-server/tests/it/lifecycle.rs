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

#[tokio::test]
async fn sigterm_stops_the_binary_cleanly_and_keeps_the_data() {
    let dir = tempfile::tempdir().unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let spawn = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_cloakroom"))
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .env("CLOAKROOM_DATA_DIR", dir.path())
            .env("CLOAKROOM_ARGON2_MEMORY_KIB", "64")
            .env("CLOAKROOM_ARGON2_ITERATIONS", "1")
            .env("CLOAKROOM_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let ready = || async {
        for _ in 0..100 {
            if http.get(format!("{base}/healthz")).send().await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the server did not start");
    };
    let mut child = spawn();
    ready().await;
    let origin = format!("http://localhost:{port}");
    let creds = serde_json::json!({"email": "term@example.com", "password": PASSWORD});
    let res = http
        .post(format!("{base}/auth/signup"))
        .header("origin", &origin)
        .json(&creds)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let res = http
        .post(format!("{base}/auth/login"))
        .header("origin", &origin)
        .json(&creds)
        .send()
        .await
        .unwrap();
    let token = session_token(res.headers()).unwrap();
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert!(exit.success(), "exit status after SIGTERM: {exit:?}");
    let mut child = spawn();
    ready().await;
    let res = http
        .get(format!("{base}/auth/whoami"))
        .header("cookie", format!("cloakroom_session={token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "the session survived the restart");
    let _ = child.kill();
    let _ = child.wait();
}
