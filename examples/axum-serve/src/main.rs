//! Recipe: keeping `axum::serve`, with lameduck's lifecycle around it.
//!
//! Traffic on :8080 (`$PORT`) through `axum::serve(listener, app)`, shut down gracefully
//! when Stopping begins; the [`InFlightLayer`] on the router; probes and `/shutdown` on
//! their own port (`LAMEDUCK_ADMIN_ADDR`, default :9090); `Lifecycle::run` gives the
//! report and the exit status.
//!
//! Against `lameduck_axum::serve`, this **keeps**:
//!
//! - the lame duck: readiness 503 from the first moment of shutdown, traffic still
//!   accepted and served for `LAMEDUCK_SHUTDOWN_DELAY`, and every HTTP/1 response from
//!   Draining on says `Connection: close` (the layer);
//! - at Stopping, no new connections (the graceful shutdown drops the listener), and a
//!   request that still arrives on an open connection is answered `503` with
//!   `Retry-After` and `Connection: close` (the layer) rather than reaching the handler;
//! - in-flight requests finish, bodies included: each is counted until its body has been
//!   sent, Stopping waits for them up to `LAMEDUCK_DRAIN_TIMEOUT`, and the report counts
//!   those still running at the cut (`requests_cut`);
//! - the AfterDrain hooks begin only once every counted handler has finished (or the
//!   hooks' own time has come), the hooks run once, the deadline, the watchdog, the
//!   report and the exit status, the admin endpoints with their hardening.
//!
//! It **loses**:
//!
//! - connections the kernel had already queued when Stopping began: `axum::serve` drops
//!   its listener, which resets them (lameduck's server accepts and serves them first);
//! - closing idle keep-alive connections at Stopping *without a race*: hyper's graceful
//!   shutdown closes a connection that looks idle, even if a request has reached the
//!   kernel but not yet the runtime (that client sees its connection closed without an
//!   answer); lameduck's server looks at the socket first;
//! - the header-read timeout and the first-request grace: a client that sends its
//!   request head slowly, or not at all, keeps its connection as long as it likes (not
//!   counted, so it does not hold up the drain; hyper's graceful shutdown closes one that
//!   has sent nothing, and the process exit closes the rest);
//! - the drain cut: `axum::serve` does not close connections on `cut_token()`, so from
//!   the cut until `run()` returns (the AfterDrain hooks' time) a late handler can still
//!   write its answer — a client may get a `202` for work the hooks no longer persist.
//!   What is still possible is done: `main` returns as soon as `run()` has, without
//!   waiting for `axum::serve`, so dropping the runtime closes every connection left;
//!   and the shutdown deadline (and the watchdog) end the process before the SIGKILL
//!   whatever the connections do. Keep handlers shorter than the drain timeout, or use
//!   `lameduck_axum::serve`, if that matters;
//! - HTTP/2 (axum's `http2` feature is off here) and `ConnectInfo` unless you add
//!   `into_make_service_with_connect_info`; open connections are not counted in the
//!   report's `connections` (only requests are).
//!
//! [`InFlightLayer`]: lameduck_http::InFlightLayer
use anyhow::Context;
use axum::{Router, routing::get};

#[tokio::main]
async fn main() -> anyhow::Result<lameduck::Report> {
    example_logging::init()?;
    // First: SIGTERM is heard from here on.
    let lifecycle = lameduck::Lifecycle::from_env()?;

    // The layer counts each request until its body is sent, says `Connection: close`
    // from Draining on, and answers 503 once Stopping has begun.
    let app = Router::new()
        .route("/", get(|| async { "hello\n" }))
        .layer(lameduck_http::InFlightLayer::new(&lifecycle));

    // Probes and the preStop `/shutdown` on their own port, until the process exits.
    let admin = lameduck_axum::Admin::from_env(&lifecycle)?.spawn().await?;
    tracing::info!(admin = %admin.local_addr(), "admin endpoints listening");

    let port = std::env::var("PORT").unwrap_or_else(|_| "8080".into());
    let port: u16 = port
        .parse()
        .with_context(|| format!("PORT={port:?} is not a port"))?;
    let listener = tokio::net::TcpListener::bind(("0.0.0.0", port)).await?;
    tracing::info!(addr = %listener.local_addr()?, "serving traffic");

    // axum::serve stops accepting when Stopping begins (not at SIGTERM: the lame duck
    // keeps serving through the delay), then waits for its connections.
    let stopping = lifecycle.stop_token().cancelled_owned();
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(stopping)
            .await
    });

    // Turns Ready, waits for a trigger, runs the whole sequence, writes the report.
    let report = lifecycle.run().await;
    // Not awaited: connections still open after the drain (axum::serve does not close
    // them at the cut) must not hold up the exit; dropping the runtime closes them.
    if server.is_finished() {
        match server.await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => tracing::error!(%error, "axum::serve failed"),
            Err(error) => tracing::error!(%error, "the server task failed"),
        }
    } else {
        tracing::warn!("connections still open at exit are closed now");
    }
    Ok(report)
}
