//! Part 5: resident memory per open connection.
//!
//! RSS (`VmRSS` in /proc/PID/status) with N idle keep-alive connections open, minus RSS
//! before they were opened, divided by N. Before the "before" reading, 200 connections
//! are opened and closed once so that one-time allocations (thread-local caches, the
//! first buffers) are not charged to the connections. Same services as part 4.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::drain_speed::{open_idle, spec};
use crate::process::{Bins, Side};

const READY_WITHIN: Duration = Duration::from_secs(15);
const SETTLE: Duration = Duration::from_millis(500);

/// What part 5 runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Settings {
    pub(crate) connections: usize,
}

impl Settings {
    pub(crate) fn new(quick: bool) -> Settings {
        Settings {
            connections: if quick { 1_000 } else { 10_000 },
        }
    }
}

/// One side's reading.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SideOutcome {
    pub(crate) side: Side,
    pub(crate) service: String,
    pub(crate) rss_before_kib: u64,
    pub(crate) rss_with_connections_kib: u64,
    /// (with − before) / connections, bytes.
    pub(crate) bytes_per_connection: f64,
}

/// Part 5's result.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Outcome {
    pub(crate) settings: Settings,
    pub(crate) lameduck: SideOutcome,
    pub(crate) baseline: SideOutcome,
}

pub(crate) async fn run(bins: &Bins, quick: bool, dir: &Path) -> Result<Outcome> {
    let settings = Settings::new(quick);
    let lameduck = measure(bins, Side::Lameduck, &settings, dir)
        .await
        .context("lameduck (orders)")?;
    let baseline = measure(bins, Side::Baseline, &settings, dir)
        .await
        .context("baseline (baseline-axum)")?;
    Ok(Outcome {
        settings,
        lameduck,
        baseline,
    })
}

async fn measure(bins: &Bins, side: Side, settings: &Settings, dir: &Path) -> Result<SideOutcome> {
    let spec = spec(bins, side, dir)?;
    let service = spec.start(dir, READY_WITHIN).await?;
    // Warm-up: some connections opened, used and closed.
    drop(open_idle(&service, 200).await?);
    tokio::time::sleep(SETTLE).await;
    let before = service.rss_kib()?;
    let idle = open_idle(&service, settings.connections).await?;
    tokio::time::sleep(SETTLE).await;
    let with = service.rss_kib()?;
    let outcome = SideOutcome {
        side,
        service: spec.name.clone(),
        rss_before_kib: before,
        rss_with_connections_kib: with,
        bytes_per_connection: (with as f64 - before as f64) * 1024.0 / settings.connections as f64,
    };
    eprintln!(
        "  [5] {:<8} RSS {} KiB → {} KiB with {} idle connections: {:.0} bytes/connection",
        side.label(),
        before,
        with,
        settings.connections,
        outcome.bytes_per_connection
    );
    service.sigterm()?;
    service.wait_exit(Duration::from_secs(30)).await?;
    drop(idle);
    Ok(outcome)
}
