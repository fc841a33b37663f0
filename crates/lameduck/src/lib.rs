//! # lameduck
//!
//! A correct, fast, boring shutdown for services on Kubernetes and similar platforms.
//!
//! This crate is the engine and knows nothing of HTTP: the lifecycle state machine
//! (Starting → Ready → Draining → Stopping → Stopped), the triggers that start shutdown
//! (signals, the preStop `/shutdown` endpoint, the application), shutdown hooks that run
//! at most once, tracked background tasks, holds, the shutdown deadline, and the report
//! written to the termination log. `lameduck-http` and `lameduck-axum` serve HTTP on top
//! of it.
//!
//! ```no_run
//! use lameduck::{Lifecycle, Phase};
//!
//! #[tokio::main]
//! async fn main() -> Result<lameduck::Report, lameduck::ConfigError> {
//!     let lifecycle = Lifecycle::from_env()?;
//!     lifecycle.on_shutdown("flush", Phase::AfterDrain, || async { /* ... */ });
//!     lifecycle.spawn("consumer", |cancel| async move { cancel.cancelled().await });
//!     // SIGTERM → Draining (lame duck) → Stopping (task cancelled, awaited) → hooks → report;
//!     // the process exits with the report's exit code.
//!     Ok(lifecycle.run().await)
//! }
//! ```
//!
//! The timing, from the first trigger:
//!
//! - `shutdown_delay` of lame duck (readiness fails, traffic is still served),
//!   longer if holds or Draining hooks are still running;
//! - then Stopping: listeners close, task tokens are cancelled, in-flight requests and
//!   tasks get up to `drain_timeout`, then are cut;
//! - then, once every cut handler and task is gone, the AfterDrain hooks, and the report;
//! - and whatever is pending at `grace_period - safety_margin` (the deadline) is abandoned,
//!   so the process always exits before the platform's SIGKILL.
//!
//! The budget is planned from the deadline backwards: the AfterDrain hooks get their whole
//! timeouts before the deadline, so the drain is cut, and the lame duck and the Stopping
//! hooks end, early enough to leave them that time. When the grace period is too short for
//! all of it, the earlier phases give way (they are cut short, and what they abandoned is
//! in the report) and the AfterDrain hooks get what is left. The repository's
//! `docs/shutdown-timeline.md` walks through it step by step, and `docs/guarantees.md`
//! lists every guarantee.
#![forbid(unsafe_code)]
#![deny(missing_docs, unreachable_pub)]
#![doc(test(attr(deny(warnings))))]

mod activity;
mod clock;
mod config;
mod driver;
mod health;
mod hold;
mod hooks;
mod lifecycle;
#[cfg(feature = "metrics")]
pub mod metrics;
#[cfg(not(feature = "metrics"))]
#[path = "metrics_off.rs"]
mod metrics;
mod platform;
mod progress;
mod report;
mod signal;
mod state;
mod systemd;
mod tasks;

pub use activity::{ActivityCounter, ActivityGuard};
pub use config::{
    Builder, Config, ConfigError, ConfigWarning, DEFAULT_DRAIN_TIMEOUT, DEFAULT_GRACE_PERIOD,
    DEFAULT_HOOK_TIMEOUT, DEFAULT_KUBERNETES_SHUTDOWN_DELAY, DEFAULT_TERMINATION_LOG,
    ENV_DRAIN_TIMEOUT, ENV_GRACE_PERIOD, ENV_HOOK_TIMEOUT, ENV_SHUTDOWN_DELAY, ENV_TERMINATION_LOG,
    ENV_VARS, MAX_AUTO_SAFETY_MARGIN, MAX_DRAIN_TIMEOUT, MAX_GRACE_PERIOD, MAX_HOOK_TIMEOUT,
    MAX_SHUTDOWN_DELAY, exit_on_config_error,
};
pub use health::{
    Check, CheckKind, CheckResult, DEFAULT_CHECK_CACHE, DEFAULT_CHECK_TIMEOUT, Health,
    HealthReport, LIFECYCLE_CHECK,
};
pub use hold::Hold;
pub use hooks::{Hook, HookOutcome, HookReport, HookResult, Phase};
pub use lifecycle::{Lifecycle, Trigger};
pub use platform::Platform;
pub use report::{
    EXIT_DEADLINE, EXIT_UNCLEAN, MAX_REPORT_BYTES, Report, StateTiming, write_termination_message,
};
pub use signal::Signal;
pub use state::{Reason, State};
pub use tasks::TaskFailure;

/// Re-exported so users need not depend on tokio-util for the task token type.
pub use tokio_util::sync::CancellationToken;

/// The crate README's Rust snippets, compiled as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
