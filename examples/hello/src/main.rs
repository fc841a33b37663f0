//! The smallest service using lameduck: traffic on :8080 ($PORT), probes and /shutdown on
//! :9090, a graceful shutdown on SIGTERM, and the report on exit.
//!
//! Built with `--features metrics`, it also serves lameduck's metrics as Prometheus text at
//! `GET /metrics` on :9090 (what the benchmarks use to measure their cost).
use anyhow::Context;
use axum::{Router, routing::get};

#[tokio::main]
async fn main() -> anyhow::Result<lameduck::Report> {
    example_logging::init()?;
    // Before the lifecycle, so that the metrics' descriptions reach the recorder.
    #[cfg(feature = "metrics")]
    let prometheus = metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder()?;
    let lifecycle = lameduck::Lifecycle::from_env()?;

    let app = Router::new().route("/", get(|| async { "hello\n" }));
    let port = std::env::var("PORT").unwrap_or_else(|_| "8080".into());
    let port: u16 = port
        .parse()
        .with_context(|| format!("PORT={port:?} is not a port"))?;
    let listener = tokio::net::TcpListener::bind(("0.0.0.0", port)).await?;

    let serve = lameduck_axum::serve(listener, app, &lifecycle);
    #[cfg(feature = "metrics")]
    let serve = serve.admin(
        lameduck_axum::Admin::from_env(&lifecycle)?.route("/metrics", {
            let lifecycle = lifecycle.clone();
            get(move || {
                lifecycle.record_metrics();
                let body = prometheus.render();
                async move { body }
            })
        }),
    );
    Ok(serve.await?)
}
