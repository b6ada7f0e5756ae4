//! Fills a running cloakroom with live sessions, for the memory measurement: signs one user up,
//! then logs in `N` times (each login is a new session) with 64 requests in flight.
//! `fill BASE_URL N` (the server should run with a cheap Argon2 cost for this).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

#[tokio::main]
async fn main() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let base = args.next().ok_or("usage: fill BASE_URL N")?;
    let n: u64 = args
        .next()
        .and_then(|n| n.parse().ok())
        .ok_or("usage: fill BASE_URL N")?;
    let origin = base.replace("127.0.0.1", "localhost");
    let client = reqwest::Client::new();
    let creds = serde_json::json!({"email": "fill@example.com", "password": "correct horse battery staple"});
    let res = client
        .post(format!("{base}/auth/signup"))
        .header("origin", &origin)
        .json(&creds)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if !res.status().is_success() && res.status().as_u16() != 409 {
        return Err(format!("signup failed: {}", res.status()));
    }
    let next = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for _ in 0..64 {
        let (client, base, origin, creds) =
            (client.clone(), base.clone(), origin.clone(), creds.clone());
        let (next, failed) = (Arc::clone(&next), Arc::clone(&failed));
        workers.push(tokio::spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < n {
                let ok = client
                    .post(format!("{base}/auth/login"))
                    .header("origin", &origin)
                    .json(&creds)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                if !ok {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for w in workers {
        w.await.map_err(|e| e.to_string())?;
    }
    println!("{n} logins, {} failed", failed.load(Ordering::Relaxed));
    Ok(())
}
