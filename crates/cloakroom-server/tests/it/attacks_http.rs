//! CSRF (X1–X3) and the HTTP layer (H1–H10).

use crate::support::*;
use reqwest::Method;
use serde_json::json;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test]
async fn x1_x2_cross_origin_cookie_posts_are_refused() {
    let t = TestServer::start().await;
    let token = t.user("csrf@example.com").await;
    let post = |headers: Vec<(&'static str, &'static str)>| {
        let mut rb = t
            .http
            .post(t.url("/auth/logout"))
            .header("cookie", format!("cloakroom_session={token}"));
        for (k, v) in headers {
            rb = rb.header(k, v);
        }
        async move { rb.send().await.unwrap() }
    };
    for headers in [
        vec![("origin", "https://evil.example")],
        vec![("origin", "null")],
        vec![("sec-fetch-site", "cross-site")],
        vec![("sec-fetch-site", "same-site")],
        vec![("referer", "https://evil.example/page")],
        vec![], // X2: neither Origin nor Sec-Fetch-Site nor Referer: fail safe.
    ] {
        let res = post(headers.clone()).await;
        assert_eq!(res.status(), 403, "{headers:?}");
        assert_eq!(error_code(res).await, "cross_origin_request");
    }
    assert_eq!(t.whoami_status(&token).await, 200, "nothing was done");
    // Same-origin, told either way, is fine.
    let res = post(vec![("sec-fetch-site", "same-origin")]).await;
    assert_eq!(res.status(), 204);
}

#[tokio::test]
async fn x1_cross_site_login_and_signup_are_refused_too() {
    let t = TestServer::start().await;
    let res = t
        .http
        .post(t.url("/auth/signup"))
        .header("origin", "https://evil.example")
        .json(&json!({"email": "x@example.com", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);
}

#[tokio::test]
async fn x3_h2_only_json_is_accepted() {
    let t = TestServer::start().await;
    let body = r#"{"email":"ct@example.com","password":"correct horse battery staple"}"#;
    for ct in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        Some("multipart/form-data; boundary=x"),
        Some("application/json; charset=utf-16"),
        Some("application/jsonx"),
        None,
    ] {
        let mut rb = t.req(Method::POST, "/auth/signup").body(body);
        if let Some(ct) = ct {
            rb = rb.header("content-type", ct);
        }
        let res = rb.send().await.unwrap();
        assert_eq!(res.status(), 415, "{ct:?}");
        assert_eq!(error_code(res).await, "unsupported_media_type");
    }
    let res = t
        .req(Method::POST, "/auth/signup")
        .header("content-type", "Application/JSON; charset=UTF-8")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
}

#[tokio::test]
async fn h1_h4_h5_malformed_json_gets_the_error_envelope() {
    let t = TestServer::start().await;
    let deep = format!("{}{}", "[".repeat(8_000), "]".repeat(8_000));
    for body in [
        r#"{"email":"a@b.c","password":"xxxxxxxxx""#,
        r#"{"email":"a@b.c","password":"xxxxxxxxx",}"#,
        r#"{"email":"a@b.c", /* hi */ "password":"xxxxxxxxx"}"#,
        r#"{"email":"a@b.c","email":"b@b.c","password":"xxxxxxxxx"}"#,
        r#"{"email":"a@b.c","password":"xxxxxxxxx","extra":1}"#,
        r#"[]"#,
        r#"null"#,
        "",
        &deep,
    ] {
        let res = t
            .req(Method::POST, "/auth/login")
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 400, "{}", &body[..body.len().min(60)]);
        let v: serde_json::Value = res.json().await.unwrap();
        let code = v["error"]["code"].as_str().unwrap();
        assert!(
            code == "invalid_json" || code == "invalid_request",
            "{code}"
        );
        assert!(v["error"]["message"].is_string());
    }
    assert_eq!(
        t.http.get(t.url("/healthz")).send().await.unwrap().status(),
        200
    );
}

#[tokio::test]
async fn h3_chunked_and_lying_bodies_are_limited() {
    let t = TestServer::start().await;
    // Chunked, no Content-Length.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        (0..40).map(|_| Ok(vec![b' '; 1024])).collect();
    let res = t
        .req(Method::POST, "/auth/login")
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 413);
    // A Content-Length that lies low.
    let addr = t.base.trim_start_matches("http://").to_string();
    let mut s = TcpStream::connect(&addr).await.unwrap();
    let body = " ".repeat(20_000);
    let req = format!(
        "POST /auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 20000\r\nConnection: close\r\n\r\n{body}"
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out).await;
    assert!(
        out.starts_with("HTTP/1.1 413"),
        "{}",
        &out[..out.len().min(80)]
    );
}

async fn raw(addr: &str, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).to_string()
}

#[tokio::test]
async fn h7_framing_attacks() {
    let t = TestServer::start().await;
    let addr = t.base.trim_start_matches("http://").to_string();
    let mut many = String::from("GET /healthz HTTP/1.1\r\nHost: x\r\n");
    for i in 0..150 {
        many.push_str(&format!("X-H{i}: v\r\n"));
    }
    many.push_str("Connection: close\r\n\r\n");
    let out = raw(&addr, many.as_bytes()).await;
    assert!(
        out.starts_with("HTTP/1.1 431"),
        "{}",
        &out[..out.len().min(60)]
    );
    let huge = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\nConnection: close\r\n\r\n",
        "a".repeat(70 * 1024)
    );
    let out = raw(&addr, huge.as_bytes()).await;
    assert!(
        out.starts_with("HTTP/1.1 431"),
        "{}",
        &out[..out.len().min(60)]
    );
    // Content-Length with Transfer-Encoding: hyper frames by Transfer-Encoding and drops the
    // Content-Length before the application sees it (RFC 9112 §6.3), so the two can never
    // disagree about where the request ends. The empty chunked body is then refused.
    let smuggle = b"POST /auth/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 40\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n0\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
    let out = raw(&addr, smuggle).await;
    assert!(
        out.starts_with("HTTP/1.1 400"),
        "{}",
        &out[..out.len().min(60)]
    );
    assert_eq!(
        out.matches("HTTP/1.1").count(),
        1,
        "a smuggled second request was answered"
    );
}

#[tokio::test]
async fn h6_slow_headers_are_cut_off_while_others_are_served() {
    let t = TestServer::start_with(|r| r.header_timeout_secs = Some(1)).await;
    let addr = t.base.trim_start_matches("http://").to_string();
    let mut slow = Vec::new();
    for _ in 0..20 {
        let mut s = TcpStream::connect(&addr).await.unwrap();
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        slow.push(s);
    }
    // A kept-alive connection that answered one request, then trickles the next head: the
    // timer of the second head counts from its own start.
    let mut kept = TcpStream::connect(&addr).await.unwrap();
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut first = [0u8; 12];
    kept.read_exact(&mut first).await.unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");
    tokio::time::sleep(Duration::from_millis(600)).await;
    kept.write_all(b"GET /healthz HTTP/1.1\r\n").await.unwrap();
    slow.push(kept);
    assert_eq!(
        t.http.get(t.url("/healthz")).send().await.unwrap().status(),
        200
    );
    let start = Instant::now();
    for mut s in slow {
        let mut buf = Vec::new();
        let r = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
        assert!(r.is_ok(), "a slow connection was left open");
    }
    assert!(start.elapsed() < Duration::from_secs(4));
}

#[tokio::test]
async fn h8_h9_methods_and_response_headers() {
    let t = TestServer::start().await;
    let token = t.user("hdr@example.com").await;
    // X6: state-changing routes answer 405 to GET.
    for path in [
        "/auth/logout",
        "/auth/logout-all",
        "/auth/login",
        "/auth/signup",
        "/auth/password",
    ] {
        let res = t.get(path, &token).await;
        assert_eq!(res.status(), 405, "{path}");
        assert_eq!(error_code(res).await, "method_not_allowed");
    }
    let res = t
        .http
        .request(Method::from_bytes(b"BREW").unwrap(), t.url("/auth/whoami"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 405);
    let res = t
        .http
        .get(t.url("/auth/whoami"))
        .header("origin", "https://evil.example")
        .header("cookie", format!("cloakroom_session={token}"))
        .send()
        .await
        .unwrap();
    assert!(res.headers().get("access-control-allow-origin").is_none());
    // whoami is answered without the router: the same headers as every other answer.
    let h = res.headers();
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["cache-control"], "no-store");
    assert_eq!(
        h["content-security-policy"],
        "default-src 'none'; frame-ancestors 'none'"
    );
    assert_eq!(h["content-type"], "application/json");
    let length: usize = h["content-length"].to_str().unwrap().parse().unwrap();
    assert_eq!(res.bytes().await.unwrap().len(), length);
    let res = t.http.get(t.url("/nope")).send().await.unwrap();
    assert_eq!(res.status(), 404);
    assert_eq!(res.headers()["x-content-type-options"], "nosniff");
    assert_eq!(error_code(res).await, "not_found");
}

#[tokio::test]
async fn h10_store_errors_are_generic() {
    let t = TestServer::start().await;
    let token = t.user("h10@example.com").await;
    // Break the store underneath the running server: drop the sessions table.
    let url = format!("sqlite://{}", t.db_path().display());
    let pool = sqlx_free_sql(&url, "DROP TABLE sessions").await;
    assert!(pool, "could not alter the test database");
    let res = t
        .login_raw(json!({"email": "h10@example.com", "password": PASSWORD}))
        .await;
    assert!(res.status().is_server_error());
    let body = res.text().await.unwrap().to_lowercase();
    assert!(body.contains("\"internal\""), "{body}");
    for leak in ["sql", "sessions", "table", "select", "insert"] {
        assert!(!body.contains(leak), "{leak} in {body}");
    }
    // Sessions already in memory keep working.
    assert_eq!(t.whoami_status(&token).await, 200);
}

/// Runs one SQL statement on the test database from a second connection.
async fn sqlx_free_sql(url: &str, sql: &str) -> bool {
    use sqlx::Connection;
    let Ok(mut conn) = sqlx::SqliteConnection::connect(url).await else {
        return false;
    };
    sqlx::query(sql).execute(&mut conn).await.is_ok()
}
