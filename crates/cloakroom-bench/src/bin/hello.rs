//! The ceiling the benchmarks compare against: the smallest axum server that answers a GET,
//! built with the same HTTP stack, runtime and profile as cloakroom. `hello [ADDR]` (default
//! 127.0.0.1:8090).

use axum::routing::get;
use axum::Router;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:8090".to_string());
    let app = Router::new().route("/", get(|| async { "hello" }));
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("hello listening on http://{}", listener.local_addr()?);
    axum::serve(listener, app).await
}
