//! `baseline-axum`: the comparison point for lameduck's benchmarks.
//!
//! The same service shape as the `orders`/`hello` examples, served the way axum's
//! documentation shows graceful shutdown: `axum::serve(listener, app)
//! .with_graceful_shutdown(shutdown_signal())`, where `shutdown_signal` waits for Ctrl+C or
//! SIGTERM exactly as axum's `graceful-shutdown` example does.
//!
//! It is deliberately naive: no lame-duck delay, readiness that never turns 503, no
//! `Connection: close` while draining. On SIGTERM axum stops accepting at once, closes idle
//! connections, lets in-flight requests finish, and the process exits. Do not improve it:
//! the benchmarks measure what that costs.
//!
//! Routes:
//!
//! - `GET /` → 200 `hello`
//! - `GET /work?ms=N` → sleeps N ms, then 200
//! - `POST /orders` (JSON `{"item":"x"}`) → 202 `{"id":N,"item":"x","status":"queued"}`
//! - `GET /healthz`, `GET /ready` → 200 `ok`
//!
//! Listens on `0.0.0.0:$PORT` (default 8080) and prints `listening on ADDR` once bound.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use tokio::signal;

#[tokio::main]
async fn main() {
    let port: u16 = match std::env::var("PORT") {
        Ok(port) => port.parse().expect("PORT must be a port number"),
        Err(_) => 8080,
    };

    let app = Router::new()
        .route("/", get(|| async { "hello" }))
        .route("/work", get(work))
        .route("/orders", post(create_order))
        .route("/healthz", get(|| async { "ok" }))
        .route("/ready", get(|| async { "ok" }))
        .with_state(Arc::new(AtomicU64::new(1)));

    let listener = tokio::net::TcpListener::bind(("0.0.0.0", port))
        .await
        .expect("failed to bind");
    println!(
        "listening on {}",
        listener
            .local_addr()
            .expect("bound listener has an address")
    );

    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown_signal())
        .await
        .expect("server error");
}

#[derive(Deserialize)]
struct WorkParams {
    ms: Option<u64>,
}

async fn work(Query(params): Query<WorkParams>) -> &'static str {
    tokio::time::sleep(Duration::from_millis(params.ms.unwrap_or(0))).await;
    "done"
}

#[derive(Deserialize)]
struct NewOrder {
    item: String,
}

async fn create_order(
    State(next_id): State<Arc<AtomicU64>>,
    Json(order): Json<NewOrder>,
) -> (StatusCode, Json<serde_json::Value>) {
    let id = next_id.fetch_add(1, Ordering::Relaxed);
    (
        StatusCode::ACCEPTED,
        Json(serde_json::json!({ "id": id, "item": order.item, "status": "queued" })),
    )
}

// As in axum's `examples/graceful-shutdown`.
async fn shutdown_signal() {
    let ctrl_c = async {
        signal::ctrl_c()
            .await
            .expect("failed to install Ctrl+C handler");
    };

    #[cfg(unix)]
    let terminate = async {
        signal::unix::signal(signal::unix::SignalKind::terminate())
            .expect("failed to install signal handler")
            .recv()
            .await;
    };

    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();

    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
}
