//! Part 4: drain speed — how long a service takes from Stopping to exit.
//!
//! With `LAMEDUCK_SHUTDOWN_DELAY=0` lameduck enters Stopping at SIGTERM, so both sides are
//! measured the same way: SIGTERM → process exit (waitpid), in two situations:
//!
//! - `idle`: N idle keep-alive connections open (each used once, then held:
//!   `lameduck_loadgen::IdleConnections`); nothing in flight. Stopping closes them at once.
//! - `slow`: M slow requests in flight (`GET /work?ms=2000`, each on its own connection:
//!   `lameduck_loadgen::SlowRequests`), SIGTERM ~300 ms after they were sent. Both sides
//!   must wait for them; what counts is how soon after the last response the process is
//!   gone, and that every request got its answer.
//!
//! lameduck is `orders` (it has `/work`), the baseline `baseline-axum`.
//!
//! The floor: the baseline with the same idle connections, killed with SIGKILL. No server
//! can exit faster than the kernel tears down its process and sockets (and, on loopback,
//! the clients' sides of them on the same cores), which `waitpid` waits for.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use lameduck_loadgen::{IdleConnections, SlowRequests, Target};
use serde::{Deserialize, Serialize};

use crate::overhead::median;
use crate::process::{Bins, Service, Side, Spec, ms};
use nix::sys::signal::Signal;

const READY_WITHIN: Duration = Duration::from_secs(15);

/// What part 4 runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Settings {
    pub(crate) idle_connections: usize,
    pub(crate) slow_requests: usize,
    /// `/work?ms=` of the slow requests.
    pub(crate) slow_ms: u64,
    /// Runs per side and situation (alternating sides).
    pub(crate) trials: usize,
}

impl Settings {
    pub(crate) fn new(quick: bool) -> Settings {
        Settings {
            idle_connections: if quick { 1_000 } else { 10_000 },
            slow_requests: if quick { 100 } else { 1_000 },
            slow_ms: 2000,
            // Five: the floor alone moves by up to 2x between trials on a shared VM.
            trials: if quick { 1 } else { 5 },
        }
    }
}

/// One idle-connections run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct IdleTrial {
    pub(crate) opened: usize,
    /// SIGTERM (SIGKILL for the floor) → exit (waitpid), ms.
    pub(crate) sigterm_to_exit_ms: f64,
    /// SIGTERM → the client saw every connection closed, ms.
    pub(crate) sigterm_to_all_closed_ms: Option<f64>,
    /// lameduck's own account of Stopping (its report), ms.
    pub(crate) stopping_ms: Option<u64>,
    pub(crate) exit_code: i32,
}

/// One slow-requests run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SlowTrial {
    pub(crate) requests: usize,
    /// Requests that got a complete answer (`ok`).
    pub(crate) ok: u64,
    pub(crate) failed: u64,
    /// SIGTERM → exit (waitpid), ms.
    pub(crate) sigterm_to_exit_ms: f64,
    /// The last response's arrival → exit, ms (negative: the exit was seen first).
    pub(crate) last_response_to_exit_ms: f64,
    pub(crate) stopping_ms: Option<u64>,
    pub(crate) exit_code: i32,
    pub(crate) errors: Vec<String>,
}

/// One side's runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SideOutcome {
    pub(crate) side: Side,
    pub(crate) service: String,
    pub(crate) idle: Vec<IdleTrial>,
    pub(crate) slow: Vec<SlowTrial>,
    pub(crate) idle_median_exit_ms: f64,
    pub(crate) slow_median_exit_ms: f64,
    pub(crate) slow_median_after_last_ms: f64,
}

/// Part 4's result.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Outcome {
    pub(crate) settings: Settings,
    pub(crate) lameduck: SideOutcome,
    pub(crate) baseline: SideOutcome,
    /// The baseline with the same idle connections, SIGKILL → exit.
    #[serde(default)]
    pub(crate) floor: Vec<IdleTrial>,
    #[serde(default)]
    pub(crate) floor_median_exit_ms: f64,
    /// lameduck's own account of how long Stopping took, idle connections (median).
    #[serde(default)]
    pub(crate) lameduck_idle_median_stopping_ms: Option<f64>,
}

pub(crate) async fn run(bins: &Bins, quick: bool, dir: &Path) -> Result<Outcome> {
    let settings = Settings::new(quick);
    let mut sides = [
        new_side(Side::Lameduck, "orders"),
        new_side(Side::Baseline, "baseline-axum"),
    ];
    let mut floor = Vec::new();
    for n in 0..settings.trials {
        for outcome in sides.iter_mut() {
            let side = outcome.side;
            let trial = idle(&spec(bins, side, dir)?, &settings, dir, Signal::SIGTERM)
                .await
                .with_context(|| format!("{} idle connections, trial {}", side.label(), n + 1))?;
            eprintln!(
                "  [4] {:<8} {} idle connections: SIGTERM→exit {:.1} ms (all closed at the client after {}), status {}",
                side.label(),
                trial.opened,
                trial.sigterm_to_exit_ms,
                trial
                    .sigterm_to_all_closed_ms
                    .map_or("-".to_owned(), |v| format!("{v:.1} ms")),
                trial.exit_code
            );
            outcome.idle.push(trial);
        }
        let trial = idle(
            &spec(bins, Side::Baseline, dir)?,
            &settings,
            dir,
            Signal::SIGKILL,
        )
        .await
        .with_context(|| format!("floor (SIGKILL) idle connections, trial {}", n + 1))?;
        eprintln!(
            "  [4] floor    {} idle connections: SIGKILL→exit {:.1} ms",
            trial.opened, trial.sigterm_to_exit_ms
        );
        floor.push(trial);
        for outcome in sides.iter_mut() {
            let side = outcome.side;
            let trial = slow(&spec(bins, side, dir)?, &settings, dir)
                .await
                .with_context(|| format!("{} slow requests, trial {}", side.label(), n + 1))?;
            eprintln!(
                "  [4] {:<8} {} slow requests: {} ok, {} failed; SIGTERM→exit {:.1} ms, last response→exit {:.1} ms, status {}",
                side.label(),
                trial.requests,
                trial.ok,
                trial.failed,
                trial.sigterm_to_exit_ms,
                trial.last_response_to_exit_ms,
                trial.exit_code
            );
            outcome.slow.push(trial);
        }
    }
    for outcome in sides.iter_mut() {
        outcome.idle_median_exit_ms =
            median(outcome.idle.iter().map(|t| t.sigterm_to_exit_ms).collect());
        outcome.slow_median_exit_ms =
            median(outcome.slow.iter().map(|t| t.sigterm_to_exit_ms).collect());
        outcome.slow_median_after_last_ms = median(
            outcome
                .slow
                .iter()
                .map(|t| t.last_response_to_exit_ms)
                .collect(),
        );
    }
    let [lameduck, baseline] = sides;
    let floor_median_exit_ms = median(floor.iter().map(|t| t.sigterm_to_exit_ms).collect());
    let stopping: Vec<f64> = lameduck
        .idle
        .iter()
        .filter_map(|t| t.stopping_ms.map(|ms| ms as f64))
        .collect();
    let lameduck_idle_median_stopping_ms =
        (stopping.len() == lameduck.idle.len()).then(|| median(stopping));
    Ok(Outcome {
        settings,
        lameduck,
        baseline,
        floor,
        floor_median_exit_ms,
        lameduck_idle_median_stopping_ms,
    })
}

fn new_side(side: Side, service: &str) -> SideOutcome {
    SideOutcome {
        side,
        service: service.to_owned(),
        idle: Vec::new(),
        slow: Vec::new(),
        idle_median_exit_ms: f64::NAN,
        slow_median_exit_ms: f64::NAN,
        slow_median_after_last_ms: f64::NAN,
    }
}

/// The service for `side`, lameduck with no lame-duck delay (Stopping at SIGTERM).
pub(crate) fn spec(bins: &Bins, side: Side, dir: &Path) -> Result<Spec> {
    match side {
        Side::Lameduck => Spec::lameduck(
            "orders",
            bins.get("orders")?,
            dir,
            Duration::ZERO,
            &[(
                "ORDERS_STATE",
                dir.join("orders-drain-state.json").display().to_string(),
            )],
        ),
        Side::Baseline => Spec::baseline(bins.get("baseline-axum")?),
    }
}

/// Opens `count` idle keep-alive connections to the service; all must open.
pub(crate) async fn open_idle(service: &Service, count: usize) -> Result<IdleConnections> {
    let target = Target::parse(&service.url("/"))?;
    let idle = IdleConnections::open(&target, count, Duration::from_secs(10)).await;
    if idle.opened() != count {
        bail!(
            "only {} of {count} idle connections opened to {} ({} failed: {:?})",
            idle.opened(),
            service.name,
            idle.failed(),
            idle.errors()
        );
    }
    Ok(idle)
}

/// `signal` → exit with the idle connections open (SIGTERM, or SIGKILL for the floor).
async fn idle(spec: &Spec, settings: &Settings, dir: &Path, signal: Signal) -> Result<IdleTrial> {
    let service = spec.start(dir, READY_WITHIN).await?;
    let idle = open_idle(&service, settings.idle_connections).await?;
    // Let every connection settle into its idle state on the server.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sent = service.signal(signal)?;
    let (exit, all_closed) = tokio::join!(service.wait_exit(Duration::from_secs(30)), async {
        tokio::time::timeout(Duration::from_secs(35), idle.wait_all_closed())
            .await
            .ok()
            .map(|()| ms(sent.elapsed()))
    });
    let exit = exit?;
    Ok(IdleTrial {
        opened: idle.opened(),
        sigterm_to_exit_ms: ms(exit.at.saturating_duration_since(sent)),
        sigterm_to_all_closed_ms: all_closed,
        stopping_ms: service.phase_ms("stopping"),
        exit_code: exit.code(),
    })
}

async fn slow(spec: &Spec, settings: &Settings, dir: &Path) -> Result<SlowTrial> {
    let service = spec.start(dir, READY_WITHIN).await?;
    let target = Target::parse(&service.url(&format!("/work?ms={}", settings.slow_ms)))?;
    let slow = SlowRequests::start(&target, settings.slow_requests, Duration::from_secs(30));
    slow.wait_sent().await;
    // The requests were handed over; give the server a moment to read them all.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let sent = service.sigterm()?;
    let finished = tokio::spawn(async move {
        let report = slow.finish().await;
        (report, Instant::now())
    });
    let exit = service.wait_exit(Duration::from_secs(60)).await?;
    let (report, last_response) = finished.await.context("slow requests task")?;
    let after_last = if exit.at >= last_response {
        ms(exit.at - last_response)
    } else {
        -ms(last_response - exit.at)
    };
    Ok(SlowTrial {
        requests: report.requests,
        ok: report.counts.ok,
        failed: report.counts.failures(),
        sigterm_to_exit_ms: ms(exit.at.saturating_duration_since(sent)),
        last_response_to_exit_ms: after_last,
        stopping_ms: service.phase_ms("stopping"),
        exit_code: exit.code(),
        errors: report.errors,
    })
}
