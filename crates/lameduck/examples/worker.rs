//! A background worker with no HTTP at all: a tracked task, a hold, hooks, and the report.
//!
//! ```text
//! LAMEDUCK_SHUTDOWN_DELAY=2s cargo run -p lameduck --example worker
//! # then press Ctrl-C (or `kill -TERM <pid>`); a second Ctrl-C forces the exit
//! ```
use std::time::Duration;

use lameduck::{Lifecycle, Phase};

#[tokio::main]
async fn main() -> Result<lameduck::Report, lameduck::ConfigError> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let lifecycle = Lifecycle::from_env()?;

    lifecycle.on_startup("warm-up", || async {
        tokio::time::sleep(Duration::from_millis(200)).await;
    });
    lifecycle.spawn("ticker", |cancel| async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut jobs = 0u64;
        loop {
            tokio::select! {
                _ = cancel.cancelled() => break,
                _ = tick.tick() => jobs += 1,
            }
        }
        tracing::info!(jobs, "ticker finished the job in hand");
    });
    lifecycle.on_shutdown("deregister", Phase::Draining, || async {
        tracing::info!("deregistered from discovery");
    });
    lifecycle.on_shutdown("flush", Phase::AfterDrain, || async {
        tracing::info!("flushed buffers");
    });

    let report = lifecycle.run().await;
    println!("{}", report.to_json());
    Ok(report)
}
