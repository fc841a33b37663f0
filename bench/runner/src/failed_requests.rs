//! Part 1: failed requests across a shutdown.
//!
//! Keep-alive clients (lameduck-loadgen) send `GET /` at a steady rate; after `before`
//! the service gets SIGTERM; traffic keeps arriving for the propagation `window` (as it
//! does while endpoints and load balancers catch up), then stops. Every request is
//! classified. lameduck (`hello`) runs with `LAMEDUCK_SHUTDOWN_DELAY` = window + 1 s, as it
//! is meant to be deployed (the delay covers the propagation time); the baseline is
//! `baseline-axum`, run twice: as axum's docs show it, and with `BASELINE_SHUTDOWN_DELAY`
//! = lameduck's delay ("axum + the same delay": what a preStop `sleep` gives plain axum).
//! The sides alternate within each trial round.

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
    /// Runs per side (alternating sides; the delayed baseline too).
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
    /// The baseline with `BASELINE_SHUTDOWN_DELAY` = lameduck's delay ("axum + the same
    /// delay"): SIGTERM, serve on for the delay, then axum's graceful shutdown.
    #[serde(default)]
    pub(crate) delayed: bool,
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

    /// `lameduck`, `baseline` or `baseline_delay` (CSV names).
    pub(crate) fn label(&self) -> &'static str {
        side_label(self.side, self.delayed)
    }
}

/// `lameduck`, `baseline`, or `baseline_delay` for the baseline with lameduck's delay.
pub(crate) fn side_label(side: Side, delayed: bool) -> &'static str {
    match (side, delayed) {
        (Side::Baseline, true) => "baseline_delay",
        (side, _) => side.label(),
    }
}

/// Part 1's result.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Outcome {
    pub(crate) settings: Settings,
    pub(crate) lameduck: SideOutcome,
    pub(crate) baseline: SideOutcome,
    /// `baseline-axum` with `BASELINE_SHUTDOWN_DELAY` = `settings.shutdown_delay_ms`.
    #[serde(default)]
    pub(crate) baseline_delay: Option<SideOutcome>,
}

impl Outcome {
    /// The sides that ran: lameduck, the baseline, the baseline with the delay.
    pub(crate) fn sides(&self) -> impl Iterator<Item = &SideOutcome> {
        [
            Some(&self.lameduck),
            Some(&self.baseline),
            self.baseline_delay.as_ref(),
        ]
        .into_iter()
        .flatten()
    }
}

pub(crate) async fn run(bins: &Bins, quick: bool, dir: &Path) -> Result<Outcome> {
    let settings = Settings::new(quick);
    let hello = bins.get("hello")?;
    let baseline = bins.get("baseline-axum")?;
    let delay = Duration::from_millis(settings.shutdown_delay_ms);
    let mut outcomes = [
        new_side(Side::Lameduck, false, "hello"),
        new_side(Side::Baseline, false, "baseline-axum"),
        new_side(Side::Baseline, true, "baseline-axum"),
    ];
    for n in 0..settings.trials {
        for outcome in outcomes.iter_mut() {
            let spec = match (outcome.side, outcome.delayed) {
                (Side::Lameduck, _) => Spec::lameduck("hello", hello.clone(), dir, delay, &[])?,
                (Side::Baseline, false) => Spec::baseline(baseline.clone())?,
                (Side::Baseline, true) => Spec::baseline_delayed(baseline.clone(), delay)?,
            };
            let label = outcome.label();
            let trial = trial(&spec, &settings, dir)
                .await
                .with_context(|| format!("{label} ({}), trial {}", spec.name, n + 1))?;
            eprintln!(
                "  [1] {label:<14} trial {}: {} requests, {} failed (refused {}, no_response {} [reused {}], 5xx {}, timeout {}); SIGTERM→exit {:.0} ms, status {}",
                n + 1,
                trial.report.counts.total() - trial.report.counts.not_sent,
                trial.report.failures(),
                trial.report.counts.refused,
                trial.report.counts.no_response,
                trial.report.no_response_reused,
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
    let [lameduck, baseline, baseline_delay] = outcomes;
    Ok(Outcome {
        settings,
        lameduck,
        baseline,
        baseline_delay: Some(baseline_delay),
    })
}

fn new_side(side: Side, delayed: bool, service: &str) -> SideOutcome {
    SideOutcome {
        side,
        service: service.to_owned(),
        delayed,
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
