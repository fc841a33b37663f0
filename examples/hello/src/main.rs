//! The smallest service using lameduck: traffic on :8080 ($PORT), probes and /shutdown on
//! :9090, a graceful shutdown on SIGTERM, and the report on exit.
use anyhow::Context;
use axum::{Router, routing::get};

#[tokio::main]
async fn main() -> anyhow::Result<lameduck::Report> {
    example_logging::init()?;
    let lifecycle = lameduck::Lifecycle::from_env()?;

    let app = Router::new().route("/", get(|| async { "hello\n" }));
    let port = std::env::var("PORT").unwrap_or_else(|_| "8080".into());
    let port: u16 = port
        .parse()
        .with_context(|| format!("PORT={port:?} is not a port"))?;
    let listener = tokio::net::TcpListener::bind(("0.0.0.0", port)).await?;

    Ok(lameduck_axum::serve(listener, app, &lifecycle).await?)
}
