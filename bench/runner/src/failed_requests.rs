//! Part 1: failed requests across a shutdown.
//!
//! Keep-alive clients (lameduck-loadgen) send `GET /` at a steady rate; after `before`
//! the service gets SIGTERM; traffic keeps arriving for the propagation `window` (as it
//! does while endpoints and load balancers catch up), then stops. Every request is
//! classified. lameduck (`hello`) runs with `LAMEDUCK_SHUTDOWN_DELAY` = window + 1 s, as it
//! is meant to be deployed (the delay covers the propagation time); the baseline is
//! `baseline-axum`.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use lameduck_loadgen::{Counts, LoadConfig, LoadReport};
use serde::{Deserialize, Serialize};

use crate::process::{Bins, Side, Spec, ms};

const READY_WITHIN: Duration = Duration::from_secs(15);

/// What part 1 runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Settings {
    pub(crate) connections: usize,
    /// Aggregate requests/s.
    pub(crate) rate: u64,
    /// Steady load before SIGTERM, ms.
    pub(crate) before_ms: u64,
    /// Load after SIGTERM (the propagation window), ms.
    pub(crate) window_ms: u64,
    /// lameduck's `LAMEDUCK_SHUTDOWN_DELAY`, ms.
    pub(crate) shutdown_delay_ms: u64,
    /// Runs per side (alternating sides).
    pub(crate) trials: usize,
}

impl Settings {
    pub(crate) fn new(quick: bool) -> Settings {
        Settings {
            connections: if quick { 16 } else { 32 },
            rate: if quick { 1000 } else { 2000 },
            before_ms: if quick { 2000 } else { 3000 },
            window_ms: 2000,
            shutdown_delay_ms: 3000,
            trials: if quick { 1 } else { 3 },
        }
    }
}

/// One run against one service.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Trial {
    /// loadgen's report: totals per class, latency, the per-second timeline.
    pub(crate) report: LoadReport,
    /// SIGTERM to process exit (waitpid), ms.
    pub(crate) sigterm_to_exit_ms: f64,
    pub(crate) exit_code: i32,
}

/// All runs against one side.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SideOutcome {
    pub(crate) side: Side,
    pub(crate) service: String,
    /// Summed over the trials.
    pub(crate) totals: Counts,
    pub(crate) no_response_reused: u64,
    pub(crate) trials: Vec<Trial>,
}

impl SideOutcome {
    pub(crate) fn failures(&self) -> u64 {
        self.totals.failures()
    }

    pub(crate) fn requests(&self) -> u64 {
        self.totals.total() - self.totals.not_sent
    }
}

/// Part 1's result.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Outcome {
    pub(crate) settings: Settings,
    pub(crate) lameduck: SideOutcome,
    pub(crate) baseline: SideOutcome,
}

pub(crate) async fn run(bins: &Bins, quick: bool, dir: &Path) -> Result<Outcome> {
    let settings = Settings::new(quick);
    let hello = bins.get("hello")?;
    let baseline = bins.get("baseline-axum")?;
    let mut outcomes = [
        new_side(Side::Lameduck, "hello"),
        new_side(Side::Baseline, "baseline-axum"),
    ];
    for n in 0..settings.trials {
        for (side, outcome) in Side::BOTH.into_iter().zip(outcomes.iter_mut()) {
            let spec = match side {
                Side::Lameduck => Spec::lameduck(
                    "hello",
                    hello.clone(),
                    dir,
                    Duration::from_millis(settings.shutdown_delay_ms),
                    &[],
                )?,
                Side::Baseline => Spec::baseline(baseline.clone())?,
            };
            let trial = trial(&spec, &settings, dir)
                .await
                .with_context(|| format!("{} ({}), trial {}", side.label(), spec.name, n + 1))?;
            eprintln!(
                "  [1] {:<8} trial {}: {} requests, {} failed (refused {}, no_response {}, 5xx {}, timeout {}); SIGTERM→exit {:.0} ms, status {}",
                side.label(),
                n + 1,
                trial.report.counts.total() - trial.report.counts.not_sent,
                trial.report.failures(),
                trial.report.counts.refused,
                trial.report.counts.no_response,
                trial.report.counts.status_5xx,
                trial.report.counts.timeout,
                trial.sigterm_to_exit_ms,
                trial.exit_code
            );
            add(&mut outcome.totals, &trial.report.counts);
            outcome.no_response_reused += trial.report.no_response_reused;
            outcome.trials.push(trial);
        }
    }
    let [lameduck, baseline] = outcomes;
    Ok(Outcome {
        settings,
        lameduck,
        baseline,
    })
}

fn new_side(side: Side, service: &str) -> SideOutcome {
    SideOutcome {
        side,
        service: service.to_owned(),
        totals: Counts::default(),
        no_response_reused: 0,
        trials: Vec::new(),
    }
}

pub(crate) fn add(total: &mut Counts, c: &Counts) {
    total.ok += c.ok;
    total.status_5xx += c.status_5xx;
    total.refused += c.refused;
    total.no_response += c.no_response;
    total.timeout += c.timeout;
    total.not_sent += c.not_sent;
}

async fn trial(spec: &Spec, settings: &Settings, dir: &Path) -> Result<Trial> {
    let service = spec.start(dir, READY_WITHIN).await?;
    let mut config = LoadConfig::new(&service.url("/"))?;
    config.connections = settings.connections;
    config.rate = settings.rate;
    config.duration = None;
    let start = tokio::time::Instant::now();
    let sigterm_at = start + Duration::from_millis(settings.before_ms);
    let stop_at = sigterm_at + Duration::from_millis(settings.window_ms);
    let (report, sent) = tokio::join!(
        lameduck_loadgen::run(config, tokio::time::sleep_until(stop_at)),
        async {
            tokio::time::sleep_until(sigterm_at).await;
            service.sigterm()
        }
    );
    let sent = sent?;
    let exit = service
        .wait_exit(Duration::from_millis(settings.shutdown_delay_ms) + Duration::from_secs(30))
        .await?;
    Ok(Trial {
        report,
        sigterm_to_exit_ms: ms(exit.at.saturating_duration_since(sent)),
        exit_code: exit.code(),
    })
}
