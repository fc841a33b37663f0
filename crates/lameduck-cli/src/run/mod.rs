//! `lameduck run -- CMD`: a supervisor for a program whose shutdown cannot be changed.
//!
//! The supervisor is a lameduck [`Lifecycle`] with the SDK's admin endpoints, so its
//! states, timing budget, probes and report are the SDK's own; the child is its one
//! tracked task. On a trigger (SIGTERM, SIGINT, `/shutdown`) readiness fails at once while
//! the child keeps serving through the lame-duck delay; at Stopping the child gets its stop
//! signal, and it has until the deadline (the drain timeout defaults to the time left
//! then) before its process group is killed. Meanwhile the supervisor does what PID 1
//! must: it adopts and reaps orphans and forwards the other signals.

mod fail_safe;
mod readiness;
mod reaper;
mod report;
mod signals;

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use lameduck::{Check, Lifecycle, Reason, State};
use lameduck_http::admin::{AdminError, Endpoints};
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;
use tokio::sync::watch;

pub(crate) use readiness::ReadyProbe;
use reaper::Ended;
use report::ChildFate;
pub(crate) use signals::parse_signal;
use signals::{Heard, Signals};

/// Exit status for a configuration error (`EX_CONFIG`), as the SDK's.
const EXIT_CONFIG: u8 = 78;
/// Exit status when the supervisor itself could not start (as `once`, `env`, `timeout`).
const EXIT_INTERNAL: u8 = 125;
/// Exit status when the child could not be executed, or was not found (as in shells).
const EXIT_CANNOT_EXECUTE: u8 = 126;
const EXIT_NOT_FOUND: u8 = 127;
/// Exit status when the supervisor had to SIGKILL the child: 128 + SIGKILL.
const EXIT_KILLED: u8 = 137;

/// The `LAMEDUCK_*` variables of the command's other subcommands, which may be set in the
/// same environment.
const COMMAND_VARIABLES: [&str; 2] = ["LAMEDUCK_PRESTOP_LOG", "LAMEDUCK_STATE_DIR"];

/// How long the exit waits, at most, for the status of a child just killed.
const KILLED_CHILD_WAIT: Duration = Duration::from_millis(500);

/// How often the child's readiness is asked while it starts.
const READY_POLL: Duration = Duration::from_millis(200);

/// What `lameduck run` was asked to do.
#[derive(Debug)]
pub(crate) struct Plan {
    pub(crate) command: Vec<OsString>,
    pub(crate) ready: Option<ReadyProbe>,
    pub(crate) stop_signal: Signal,
}

/// Supervise `plan.command` until it ends or a shutdown ends it; the exit status.
pub(crate) fn run(plan: Plan) -> u8 {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("lameduck run: cannot start: {error}");
            return EXIT_INTERNAL;
        }
    };
    let status = runtime.block_on(supervise(plan));
    // Admin connections and a readiness probe may still be in progress: not waited for.
    runtime.shutdown_background();
    status
}

/// The lifecycle from the `LAMEDUCK_*` variables, with the signals left to the supervisor
/// and, unless `LAMEDUCK_DRAIN_TIMEOUT` says otherwise, a drain that lasts until the
/// deadline: the child has all the time the grace period leaves. The termination log's
/// path, which the supervisor writes itself (the report has the child in it).
fn configure() -> Result<(Lifecycle, Option<PathBuf>), lameduck::ConfigError> {
    let builder = lameduck::Builder::from_env()?
        .no_signals()
        .exit_process(false);
    let settings = builder.clone().config()?;
    let termination_log = settings.termination_log().map(std::path::Path::to_path_buf);
    let mut builder = builder.no_termination_log();
    if std::env::var_os(lameduck::ENV_DRAIN_TIMEOUT).is_none() {
        let until_deadline = settings
            .deadline()
            .saturating_sub(settings.shutdown_delay());
        builder = builder.drain_timeout(until_deadline);
    }
    Ok((builder.build()?, termination_log))
}

async fn supervise(plan: Plan) -> u8 {
    let (lifecycle, termination_log) = match configure() {
        Ok(configured) => configured,
        Err(error) => {
            eprintln!("lameduck run: configuration error: {error}");
            return EXIT_CONFIG;
        }
    };
    // The SDK logs these through `tracing`, which the command does not print. The
    // command's own variables are not typos.
    for warning in lifecycle.config().warnings() {
        if let lameduck::ConfigWarning::UnknownVariable(name) = warning
            && COMMAND_VARIABLES.contains(&name.as_str())
        {
            continue;
        }
        eprintln!("lameduck run: warning: {warning}");
    }
    let admin = match Endpoints::from_env(&lifecycle) {
        Ok(admin) => admin,
        Err(error) => {
            eprintln!("lameduck run: configuration error: {error}");
            return EXIT_CONFIG;
        }
    };
    if let Err(error) = reaper::become_subreaper() {
        eprintln!(
            "lameduck run: cannot become a child subreaper ({error}); orphans of the child are \
             reaped only when lameduck is PID 1"
        );
    }
    // Before the child exists, so that no signal meant for it (or SIGCHLD) is missed.
    let mut signals = match Signals::register() {
        Ok(signals) => signals,
        Err(error) => {
            eprintln!("lameduck run: cannot handle signals: {error}");
            return EXIT_INTERNAL;
        }
    };
    // The probes answer before the child starts: a failed bind stops everything at once.
    let admin = match admin.spawn().await {
        Ok(admin) => admin,
        Err(error) => {
            eprintln!("lameduck run: {error}");
            return match error {
                AdminError::Bind { .. } | AdminError::LocalAddr(_) => EXIT_INTERNAL,
                _ => EXIT_CONFIG,
            };
        }
    };
    eprintln!(
        "lameduck run: admin endpoints on http://{}",
        admin.local_addr()
    );

    let pid = match start(&plan.command) {
        Ok(pid) => pid,
        Err(status) => return status,
    };
    fail_safe::install(pid, plan.stop_signal, lifecycle.config().deadline());
    let supervised = Supervised {
        pid,
        stop_signal: plan.stop_signal,
        ended: watch::channel(None).0,
        stop_sent: Arc::new(AtomicBool::new(false)),
        killed: Arc::new(AtomicBool::new(false)),
    };
    supervised.register(&lifecycle, plan.ready);

    let mut finished = tokio::spawn({
        let lifecycle = lifecycle.clone();
        async move { lifecycle.run().await }
    });
    // SIGCHLD was registered before the child existed; this covers a child already gone.
    supervised.collect();
    loop {
        if let Some(ended) = supervised.ended() {
            // A child that ends before Stopping ends the supervisor at once: nothing is left
            // to serve, and the platform should restart (or complete) the pod now.
            if lifecycle.state() < State::Stopping {
                return supervised.exit_early(&lifecycle, ended, termination_log);
            }
        }
        tokio::select! {
            report = &mut finished => {
                let Ok(report) = report else {
                    eprintln!("lameduck run: the lifecycle task failed");
                    supervised.kill_group();
                    return EXIT_INTERNAL;
                };
                let grace = lifecycle.config().grace_period();
                return supervised
                    .exit_after(&report, grace, &mut signals, termination_log)
                    .await;
            }
            heard = signals.next() => match heard {
                Heard::Child => supervised.collect(),
                Heard::Shutdown(signal) => supervised.on_shutdown_signal(&lifecycle, signal),
                Heard::Forward(signal) => supervised.send(signal),
            },
        }
    }
}

/// Start the child in a process group of its own, with the supervisor's stdio and
/// environment; its pid, or the exit status for a command that cannot run.
fn start(command: &[OsString]) -> Result<Pid, u8> {
    let Some((program, args)) = command.split_first() else {
        eprintln!("lameduck run: no command given");
        return Err(EXIT_NOT_FOUND);
    };
    let spawned = std::os::unix::process::CommandExt::process_group(
        std::process::Command::new(program).args(args),
        0,
    )
    .spawn();
    match spawned {
        // Never waited on through `Child`: the reaper collects its status.
        Ok(child) => match i32::try_from(child.id()) {
            Ok(pid) => Ok(Pid::from_raw(pid)),
            Err(_) => Err(EXIT_INTERNAL),
        },
        Err(error) => {
            eprintln!(
                "lameduck run: cannot run {}: {error}",
                program.to_string_lossy()
            );
            Err(if error.kind() == std::io::ErrorKind::NotFound {
                EXIT_NOT_FOUND
            } else {
                EXIT_CANNOT_EXECUTE
            })
        }
    }
}

/// The child and what has been done to it.
struct Supervised {
    pid: Pid,
    stop_signal: Signal,
    /// Set once its end has been reaped.
    ended: watch::Sender<Option<Ended>>,
    /// Whether the stop signal has been sent (at Stopping, or on a second signal).
    stop_sent: Arc<AtomicBool>,
    /// Whether its process group had to be killed.
    killed: Arc<AtomicBool>,
}

impl Supervised {
    /// Wire the child into the lifecycle: liveness while it runs, readiness from
    /// `--ready`, and the tracked task that stops it at Stopping and kills its group if the
    /// drain is cut.
    fn register(&self, lifecycle: &Lifecycle, ready: Option<ReadyProbe>) {
        let ended = self.ended.subscribe();
        lifecycle.health().liveness("child", move || {
            let ended = *ended.borrow();
            async move {
                match ended {
                    None => Ok(()),
                    Some(ended) => Err(format!("the child has ended ({})", describe(ended))),
                }
            }
        });
        if let Some(probe) = ready {
            let hold = lifecycle.hold_readiness("child-ready");
            let starting = lifecycle.clone();
            let first = probe.clone();
            tokio::spawn(async move {
                // Until the first success, or until shutdown makes readiness moot.
                while starting.state() == State::Starting {
                    if first.check().await.is_ok() {
                        break;
                    }
                    tokio::time::sleep(READY_POLL).await;
                }
                drop(hold);
                // Logged once the lifecycle is Ready, so that whoever reads the log can
                // rely on /readyz.
                starting.ready().await;
                if starting.state() == State::Ready {
                    eprintln!("lameduck run: the child is ready ({first} answers)");
                }
            });
            let probe = Arc::new(probe);
            let draining = lifecycle.clone();
            // Not cached: each /readyz asks the child once, so an answer never reflects a
            // failure from before the child was up (probes come seconds apart anyway). Not
            // asked once shutdown has begun: readiness fails then whatever the child says,
            // and a busy child must not slow that answer down.
            lifecycle.health().add(
                Check::readiness("child", move || {
                    let probe = Arc::clone(&probe);
                    let shutting_down = draining.state().is_shutting_down();
                    async move {
                        if shutting_down {
                            return Err("not asked: shutting down".to_owned());
                        }
                        probe.check().await
                    }
                })
                .cache_for(Duration::ZERO),
            );
        } else {
            let started = lifecycle.clone();
            tokio::spawn(async move {
                started.ready().await;
                if started.state() == State::Ready {
                    eprintln!("lameduck run: the child has started: ready (no --ready given)");
                }
            });
        }

        let mut ended = self.ended.subscribe();
        let pid = self.pid;
        let stop_signal = self.stop_signal;
        let stop_sent = Arc::clone(&self.stop_sent);
        let killed = Arc::clone(&self.killed);
        lifecycle.spawn("child", move |stopping| async move {
            // Dropped when the drain is cut (the task is aborted) with the child still there.
            let mut guard = KillGroupOnDrop {
                pid,
                killed,
                armed: true,
            };
            tokio::select! {
                _ = stopping.cancelled() => {
                    if !stop_sent.swap(true, Ordering::SeqCst) {
                        eprintln!("lameduck run: stopping: sending {stop_signal} to the child");
                        signal_child(pid, stop_signal);
                    }
                    until_ended(&mut ended).await;
                }
                () = until_ended(&mut ended) => {}
            }
            guard.armed = false;
        });
    }

    /// Reap whatever has ended, and note the child's end.
    fn collect(&self) {
        if let Some(ended) = reaper::reap(self.pid) {
            eprintln!("lameduck run: the child {}", describe(ended));
            self.ended.send_replace(Some(ended));
        }
    }

    fn ended(&self) -> Option<Ended> {
        *self.ended.borrow()
    }

    /// SIGTERM or SIGINT: the first starts the shutdown; a later one sends the stop signal
    /// at once (the platform is in a hurry), without waiting for the lame duck to end.
    fn on_shutdown_signal(&self, lifecycle: &Lifecycle, signal: Signal) {
        let sdk_signal = match signal {
            Signal::SIGINT => lameduck::Signal::Int,
            _ => lameduck::Signal::Term,
        };
        let trigger = lifecycle.trigger(Reason::Signal(sdk_signal));
        if trigger.first {
            eprintln!(
                "lameduck run: {signal}: shutting down (readiness fails now; {} to the child at \
                 Stopping)",
                self.stop_signal
            );
        } else {
            if !self.stop_sent.swap(true, Ordering::SeqCst) {
                eprintln!(
                    "lameduck run: {signal} again: sending {} to the child now",
                    self.stop_signal
                );
            }
            signal_child(self.pid, self.stop_signal);
        }
    }

    /// Pass `signal` on to the child, as tini does.
    fn send(&self, signal: Signal) {
        signal_child(self.pid, signal);
    }

    fn kill_group(&self) {
        if killpg(self.pid, Signal::SIGKILL).is_ok() {
            self.killed.store(true, Ordering::SeqCst);
        }
    }

    fn fate(&self) -> ChildFate {
        ChildFate {
            pid: self.pid.as_raw(),
            ended: self.ended(),
            killed: self.killed.load(Ordering::SeqCst),
        }
    }

    /// The child ended before Stopping: exit with its status now.
    fn exit_early(&self, lifecycle: &Lifecycle, ended: Ended, log: Option<PathBuf>) -> u8 {
        let status = ended.exit_code();
        let reason = lifecycle
            .reason()
            .map_or_else(|| "child-exited".to_owned(), |reason| reason.to_string());
        eprintln!("lameduck run: exiting {status}, the child's status");
        self.end_group_leftovers();
        report::write(
            log,
            report::early(&reason, lifecycle.state().as_str(), self.fate(), status),
            report::WRITE_WAIT,
        );
        status
    }

    /// The lifecycle has finished: the child ended, or was killed at the cut. What is left
    /// of the grace period (the safety margin, after a kill at the deadline) bounds the
    /// waits here, so that the exit still comes before the platform's SIGKILL.
    async fn exit_after(
        &self,
        report: &lameduck::Report,
        grace_period: Duration,
        signals: &mut Signals,
        log: Option<PathBuf>,
    ) -> u8 {
        let left = grace_period.saturating_sub(Duration::from_millis(report.duration_ms));
        // A child killed at the cut dies at once; its status is worth a short wait.
        if self.ended().is_none() {
            let wait_for_end = async {
                loop {
                    if signals.next().await == Heard::Child {
                        self.collect();
                        if self.ended().is_some() {
                            return;
                        }
                    }
                }
            };
            let settle = (left / 4).min(KILLED_CHILD_WAIT);
            let _ = tokio::time::timeout(settle, wait_for_end).await;
        }
        let status = if self.killed.load(Ordering::SeqCst) {
            EXIT_KILLED
        } else {
            self.ended().map_or(EXIT_KILLED, Ended::exit_code)
        };
        eprintln!("lameduck run: exiting {status}");
        self.end_group_leftovers();
        report::write(
            log,
            report::with_child(report, self.fate(), status),
            (left / 4).min(report::WRITE_WAIT),
        );
        status
    }

    /// Processes the child started in its group and left behind do not outlive the
    /// supervisor (they would be re-parented to the system, or die with the PID namespace).
    fn end_group_leftovers(&self) {
        let _ = killpg(self.pid, Signal::SIGKILL);
    }
}

/// Kills the child's process group when dropped armed: when the lifecycle abandons the
/// child's task at the drain cut or the deadline.
struct KillGroupOnDrop {
    pid: Pid,
    killed: Arc<AtomicBool>,
    armed: bool,
}

impl Drop for KillGroupOnDrop {
    fn drop(&mut self) {
        if self.armed && killpg(self.pid, Signal::SIGKILL).is_ok() {
            self.killed.store(true, Ordering::SeqCst);
            eprintln!(
                "lameduck run: the child did not stop in time: SIGKILL sent to its process group"
            );
        }
    }
}

/// Resolves once the child's end has been reaped.
async fn until_ended(ended: &mut watch::Receiver<Option<Ended>>) {
    // Err: the sender is gone with the supervisor; there is nothing left to wait for.
    let _ = ended.wait_for(Option::is_some).await.map(|_| ());
}

fn signal_child(pid: Pid, signal: Signal) {
    if let Err(error) = kill(pid, signal) {
        // ESRCH: it has just ended; its status is reaped next.
        if error != nix::errno::Errno::ESRCH {
            eprintln!("lameduck run: cannot send {signal} to the child: {error}");
        }
    }
}

fn describe(ended: Ended) -> String {
    match ended {
        Ended::Exited(code) => format!("exited with status {code}"),
        Ended::Signaled(signal) => format!("was ended by {signal}"),
    }
}
