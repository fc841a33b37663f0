//! A drain-aware HTTP service in a few lines.
//!
//! ```text
//! LAMEDUCK_SHUTDOWN_DELAY=3s cargo run -p lameduck-http --example hello
//! curl -i localhost:8080/            # hello
//! curl -N localhost:8080/events      # a tick a second, until Stopping
//! kill -TERM <pid>                   # or Ctrl-C: 3 s of lame duck, then drain and exit 0
//! ```
//!
//! While the lame-duck delay runs, `curl -i localhost:8080/` still answers, with
//! `Connection: close`; the event stream ends cleanly when Stopping begins.

use std::convert::Infallible;
use std::time::Duration;

use axum::response::IntoResponse;
use axum::response::sse::{Event, Sse};
use axum::{Extension, Router, body::Body, routing::get};
use lameduck_http::StopToken;

async fn events(Extension(signal): Extension<StopToken>) -> impl IntoResponse {
    let ticks = futures_util::stream::unfold(0u64, |n| async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
        Some((
            Ok::<_, Infallible>(Event::default().data(format!("tick {n}"))),
            n + 1,
        ))
    });
    Sse::new(ticks)
        .into_response()
        .map(|body| Body::new(signal.until_stopping(body)))
}

#[tokio::main]
async fn main() -> Result<lameduck::Report, Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let lifecycle = lameduck::Lifecycle::from_env()?;
    let app = Router::new().route("/", get(|| async { "hello\n" })).route(
        "/events",
        get(events).layer(Extension(StopToken::new(&lifecycle))),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
    Ok(lameduck_http::serve(listener, app, &lifecycle).await)
}
