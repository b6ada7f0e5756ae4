//! An open-loop latency probe: sends `GET URL` at a fixed rate, whatever the server's speed
//! (a closed-loop tool like wrk would slow down with the server and hide its stalls), and prints
//! p50, p99 and the worst latency. `probe URL RATE SECONDS [HEADER: VALUE]`.

use std::time::{Duration, Instant};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), String> {
    let mut args = std::env::args().skip(1);
    let usage = "usage: probe URL RATE SECONDS [HEADER: VALUE]";
    let url = args.next().ok_or(usage)?;
    let rate: u64 = args.next().and_then(|r| r.parse().ok()).ok_or(usage)?;
    let secs: u64 = args.next().and_then(|s| s.parse().ok()).ok_or(usage)?;
    let header = args.next();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()
        .map_err(|e| e.to_string())?;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let mut tick = tokio::time::interval(Duration::from_nanos(1_000_000_000 / rate.max(1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let total = rate * secs;
    for _ in 0..total {
        tick.tick().await;
        let mut req = client.get(&url);
        if let Some((name, value)) = header.as_deref().and_then(|h| h.split_once(": ")) {
            req = req.header(name, value);
        }
        let tx = tx.clone();
        // Each request on its own task: a slow answer never delays the next send.
        tokio::spawn(async move {
            let start = Instant::now();
            let ok = req.send().await.is_ok_and(|r| r.status().is_success());
            let _ = tx.send((start.elapsed(), ok));
        });
    }
    drop(tx);
    let mut latencies = Vec::with_capacity(total as usize);
    let mut errors = 0u64;
    while let Some((latency, ok)) = rx.recv().await {
        if !ok {
            errors += 1;
        }
        latencies.push(latency.as_secs_f64() * 1000.0);
    }
    latencies.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q) as usize];
    println!(
        "probe {rate}/s for {secs}s: {} requests, {errors} errors, p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        latencies.len(),
        at(0.5),
        at(0.99),
        at(1.0)
    );
    Ok(())
}
