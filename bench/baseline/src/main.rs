//! `baseline-axum`: the comparison point for lameduck's benchmarks.
//!
//! The same service shape as the `orders`/`hello` examples, served the way axum's
//! documentation shows graceful shutdown: `axum::serve(listener, app)
//! .with_graceful_shutdown(shutdown_signal())`, where `shutdown_signal` waits for Ctrl+C or
//! SIGTERM exactly as axum's `graceful-shutdown` example does.
//!
//! It is deliberately naive: no lame-duck delay (unless `BASELINE_SHUTDOWN_DELAY`, below),
//! readiness that never turns 503, no
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
//!
//! `BASELINE_SHUTDOWN_DELAY` (e.g. `3s`, `500ms`; default 0) is the benchmarks' third side,
//! "axum + a sleep": the shutdown future resolves that long after SIGTERM, so the server
//! keeps serving exactly as before (still accepting, `/ready` still 200: plain axum has no
//! readiness flip) and then shuts down as above. Nothing else changes: it is axum's
//! documented pattern with the `sleep` a preStop hook would add.

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
    let delay = match std::env::var("BASELINE_SHUTDOWN_DELAY") {
        Ok(value) => match parse_delay(&value) {
            Ok(delay) => delay,
            Err(e) => {
                eprintln!("baseline-axum: BASELINE_SHUTDOWN_DELAY={value:?}: {e}");
                std::process::exit(2);
            }
        },
        Err(_) => Duration::ZERO,
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
        .with_graceful_shutdown(async move {
            shutdown_signal().await;
            if !delay.is_zero() {
                // The only addition to axum's pattern: keep serving for the delay.
                println!(
                    "shutdown signal: serving on for {} ms (BASELINE_SHUTDOWN_DELAY), then graceful shutdown",
                    delay.as_millis()
                );
                tokio::time::sleep(delay).await;
            }
        })
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

/// `BASELINE_SHUTDOWN_DELAY`: a number with a unit, `ms` or `s` (`3s`, `1.5s`, `500ms`),
/// or `0`.
fn parse_delay(value: &str) -> Result<Duration, String> {
    let value = value.trim();
    let (number, unit_ms) = if let Some(n) = value.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = value.strip_suffix('s') {
        (n, 1000.0)
    } else if value == "0" {
        (value, 0.0)
    } else {
        return Err("not a duration: give a unit, e.g. 3s or 500ms".to_owned());
    };
    let n: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("not a duration: `{number}` is not a number (e.g. 3s or 500ms)"))?;
    if !n.is_finite() || n < 0.0 || n * unit_ms > 86_400_000.0 {
        return Err("not a duration between 0 and 24 h".to_owned());
    }
    Ok(Duration::from_secs_f64(n * unit_ms / 1000.0))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays() {
        assert_eq!(parse_delay("3s"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_delay("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_delay("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_delay(" 0 "), Ok(Duration::ZERO));
        assert_eq!(parse_delay("0s"), Ok(Duration::ZERO));
        assert!(parse_delay("3").is_err());
        assert!(parse_delay("three s").is_err());
        assert!(parse_delay("-1s").is_err());
        assert!(parse_delay("").is_err());
        assert!(parse_delay("3m").is_err());
    }
}
