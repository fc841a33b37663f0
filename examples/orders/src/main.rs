//! `orders`: a realistic service on lameduck. Orders are accepted over HTTP, queued to a
//! background worker, and persisted at shutdown so the next process picks them up.
//!
//! | variable | meaning | default |
//! |---|---|---|
//! | `PORT` | traffic port (on 0.0.0.0) | `8080` |
//! | `ORDERS_STATE` | where queued orders are persisted at shutdown and read at start | `$TMPDIR/orders-state.json` |
//! | `ORDERS_WORK_TIME` | how long the worker takes per order | `50ms` |
//! | `ORDERS_WARMUP` | how long the startup hook's warm-up takes | `200ms` |
//! | `ORDERS_QUEUE_CAPACITY` | queued orders before `POST /orders` answers 503 and readiness fails | `10000` |
//! | `LAMEDUCK_*` | the lifecycle settings (docs/configuration.md) | |
//!
//! The admin port (`LAMEDUCK_ADMIN_ADDR`) also answers `GET /metrics`: lameduck's metrics
//! (docs/observability.md) as Prometheus text.

mod routes;
mod settings;
mod store;
mod worker;

use anyhow::Context;
use lameduck::{CancellationToken, Lifecycle, Phase};
use lameduck_axum::Admin;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::settings::Settings;
use crate::store::Orders;

#[tokio::main]
async fn main() -> anyhow::Result<lameduck::Report> {
    // A bad setting exits 78 (EX_CONFIG), naming the variable and the value.
    example_logging::init().unwrap_or_else(|e| lameduck::exit_on_config_error(e));
    // Before the lifecycle, so the metrics' descriptions reach the recorder.
    let prometheus = PrometheusBuilder::new()
        .install_recorder()
        .context("installing the Prometheus recorder")?;
    let lifecycle = Lifecycle::from_env().unwrap_or_else(|e| lameduck::exit_on_config_error(e));
    let admin = Admin::from_env(&lifecycle)
        .unwrap_or_else(|e| lameduck::exit_on_config_error(e))
        .route("/metrics", metrics_endpoint(&lifecycle, prometheus));
    let settings = Settings::from_env().unwrap_or_else(|e| {
        eprintln!("orders: configuration error: {e}");
        std::process::exit(78)
    });

    let orders = Orders::load(&settings.state, settings.queue_capacity)
        .with_context(|| format!("reading ORDERS_STATE={}", settings.state.display()))?;
    let restored = orders.queue_len();
    if restored > 0 {
        tracing::info!(restored, "queued orders restored from the previous run");
    }

    let warmup = settings.warmup;
    lifecycle.on_startup("warm-up", move || tokio::time::sleep(warmup));
    {
        let orders = orders.clone();
        lifecycle.health().readiness("order-queue", move || {
            let orders = orders.clone();
            async move {
                if orders.queue_len() < orders.capacity() {
                    Ok(())
                } else {
                    Err(format!("queue full ({} orders)", orders.capacity()))
                }
            }
        });
    }

    // The worker stops taking orders when Stopping begins and finishes the one in hand.
    let worker_done = CancellationToken::new();
    {
        let orders = orders.clone();
        let done = worker_done.clone();
        let work_time = settings.work_time;
        lifecycle.spawn("order-worker", move |cancel| async move {
            worker::run(orders, work_time, cancel).await;
            done.cancel();
        });
    }
    lifecycle.on_shutdown("stop-worker", Phase::Stopping, move || async move {
        worker_done.cancelled().await;
    });
    {
        let orders = orders.clone();
        let state = settings.state.clone();
        lifecycle.on_shutdown("persist-orders", Phase::AfterDrain, move || async move {
            let queued = orders.save(&state)?;
            tracing::info!(queued, path = %state.display(), "orders persisted");
            Ok::<(), std::io::Error>(())
        });
    }

    let app = routes::router(orders, &lifecycle);
    let listener = tokio::net::TcpListener::bind(("0.0.0.0", settings.port))
        .await
        .with_context(|| format!("binding PORT={}", settings.port))?;
    Ok(lameduck_axum::serve(listener, app, &lifecycle)
        .admin(admin)
        .await?)
}

/// `GET /metrics`: the sampled gauges brought up to date, then everything recorded, as
/// Prometheus text.
fn metrics_endpoint(
    lifecycle: &Lifecycle,
    prometheus: PrometheusHandle,
) -> axum::routing::MethodRouter {
    let lifecycle = lifecycle.clone();
    axum::routing::get(move || {
        lifecycle.record_metrics();
        let body = prometheus.render();
        async move {
            (
                [(
                    axum::http::header::CONTENT_TYPE,
                    "text/plain; version=0.0.4; charset=utf-8",
                )],
                body,
            )
        }
    })
}
