//! The shutdown sequence (docs/shutdown-timeline.md): one run per lifecycle, on its own
//! task.

use crate::progress::{Pending, Progress, ProgressLog};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::future::join_all;
use tokio::time::{Instant, sleep_until};
use tracing::Instrument;

use crate::clock::{FAR_FUTURE, deadline_after};
use crate::hooks::{HookOutcome, HookReport, Phase, millis, run_hook};
use crate::lifecycle::Lifecycle;
use crate::report::{Report, StateTiming};
use crate::signal::{Signal, SignalListener};
use crate::state::{Reason, State};

/// Why a wait ended early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Interrupted {
    Deadline,
    Forced,
}

const STARTUP_RETRY_FIRST: Duration = Duration::from_secs(1);
const STARTUP_RETRY_MAX: Duration = Duration::from_secs(30);

struct Timeline {
    entered: Vec<(State, Instant)>,
}

impl Timeline {
    fn transition(&mut self, lifecycle: &Lifecycle, to: State) {
        let now = Instant::now();
        let (from, since) = self
            .entered
            .last()
            .copied()
            .unwrap_or((State::Starting, now));
        if to <= from {
            return;
        }
        lifecycle.inner.set_state(to);
        tracing::info!(
            from = %from,
            to = %to,
            after_ms = millis(now - since),
            "lifecycle state changed"
        );
        self.entered.push((to, now));
    }

    fn timings(&self, end: Instant) -> Vec<StateTiming> {
        self.entered
            .iter()
            .enumerate()
            .map(|(i, (state, at))| {
                let until = self.entered.get(i + 1).map_or(end, |(_, next)| *next);
                StateTiming {
                    state: *state,
                    duration_ms: millis(until - *at),
                }
            })
            .collect()
    }
}

/// Hook outcomes in the order the hooks were due; a hook's slot holds `abandoned` until it
/// finishes, so whatever a deadline or a forced exit interrupts is reported as such, with
/// the time it had run. Each slot also says whether its outcome reached the metrics: a
/// finished run's did (from `run_hook`), a slot that never finished is counted as
/// abandoned when the log is taken.
#[derive(Default)]
struct HookLog(Mutex<Vec<HookSlot>>);

struct HookSlot {
    report: HookReport,
    counted: bool,
    /// When the hook began, while it has not finished: an abandoned hook's duration.
    started: Option<Instant>,
}

impl HookSlot {
    fn new(report: HookReport, counted: bool) -> Self {
        Self {
            report,
            counted,
            started: None,
        }
    }
}

impl HookLog {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<HookSlot>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
    /// A slot for a hook that is due; [`begin`](Self::begin) when it starts.
    fn reserve(&self, name: String, phase: &'static str) -> usize {
        let mut log = self.lock();
        log.push(HookSlot::new(HookReport::abandoned(name, phase), false));
        log.len() - 1
    }
    fn begin(&self, slot: usize) {
        if let Some(entry) = self.lock().get_mut(slot) {
            entry.started = Some(Instant::now());
        }
    }
    fn record(&self, slot: usize, report: HookReport) {
        if let Some(entry) = self.lock().get_mut(slot) {
            *entry = HookSlot::new(report, true);
        }
    }
    /// Drop the newest slot (startup attempts are sequential, so it is the caller's).
    fn pop(&self) {
        self.lock().pop();
    }
    fn push(&self, report: HookReport) {
        self.lock().push(HookSlot::new(report, false));
    }
    /// Startup attempts a trigger interrupted, or whose retry it ended: a shutdown before
    /// Ready is orderly, and the log already has each failure.
    fn forget_startup(&self) {
        self.lock().retain(|slot| slot.report.phase != "startup");
    }
    fn take(&self) -> Vec<HookReport> {
        let now = Instant::now();
        std::mem::take(&mut *self.lock())
            .into_iter()
            .map(|slot| {
                let mut report = slot.report;
                let ran = slot
                    .started
                    .map_or(Duration::ZERO, |at| now.saturating_duration_since(at));
                if !slot.counted {
                    report.duration_ms = millis(ran);
                    crate::metrics::hook_ran(&report.name, report.phase, report.outcome, ran);
                }
                report
            })
            .collect()
    }
}

/// What the drain cut at its timeout (or the deadline), whichever path the shutdown took.
#[derive(Default)]
struct Cut {
    connections: usize,
    requests: usize,
    tasks: Vec<String>,
}

/// Cut whatever is still live: servers close their connections and drop their handlers
/// on the cut token, tracked tasks are aborted. Every call adds what it cut to `cut`, so
/// the report counts it even when a later wait is interrupted.
fn cut_now(lifecycle: &Lifecycle, cut: &Mutex<Cut>) {
    let inner = &lifecycle.inner;
    // Counted before the token fires: servers woken by it drop their guards at once.
    let connections = inner.connections.active();
    let requests = inner.requests.active();
    let tasks = inner.tasks.abandon();
    inner.cut_fired.store(true, Ordering::Release);
    inner.cut.cancel();
    let mut cut = cut.lock().unwrap_or_else(PoisonError::into_inner);
    crate::metrics::cut(
        requests.saturating_sub(cut.requests),
        connections.saturating_sub(cut.connections),
        tasks.len(),
    );
    cut.connections = cut.connections.max(connections);
    cut.requests = cut.requests.max(requests);
    cut.tasks.extend(tasks);
}

/// Resolves once no listener, connection, request or tracked task is live.
async fn all_done(lifecycle: &Lifecycle) {
    let inner = &lifecycle.inner;
    tokio::join!(
        inner.listeners.idle(),
        inner.connections.idle(),
        inner.requests.idle(),
        inner.tasks.tracker.wait(),
    );
}

/// How long the report's write to the termination log may take: what is left before the
/// deadline, within these bounds.
const TERMINATION_LOG_WAIT_MIN: Duration = Duration::from_millis(100);
const TERMINATION_LOG_WAIT_MAX: Duration = Duration::from_secs(1);

/// Time, before the deadline, that AfterDrain needs once the cut has settled.
const CUT_SETTLE: Duration = Duration::from_millis(250);

/// The latest the drain may be cut for each AfterDrain hook to get its whole timeout
/// before `deadline`, once the cut has settled ([`CUT_SETTLE`]): see [`phase_needs`].
/// Never before now: when the grace period is too short for all of it, the drain is cut at
/// once and the hooks get what is left.
fn cut_at_the_latest(lifecycle: &Lifecycle, deadline: Instant) -> Instant {
    let needs = phase_needs(lifecycle, Phase::AfterDrain);
    let needs = if needs.is_zero() {
        needs
    } else {
        needs.saturating_add(CUT_SETTLE)
    };
    not_before_now(deadline, needs)
}

/// The latest the lame duck may end for the Stopping hooks to get their timeouts before
/// [`cut_at_the_latest`].
fn lame_duck_ends_at_the_latest(lifecycle: &Lifecycle, deadline: Instant) -> Instant {
    let cut_by = cut_at_the_latest(lifecycle, deadline);
    if cut_by >= deadline {
        // Nothing to keep time for after the drain: the deadline alone bounds the lame duck.
        return deadline;
    }
    not_before_now(cut_by, phase_needs(lifecycle, Phase::Stopping))
}

/// When the AfterDrain hooks must begin, however the cut has settled by then.
fn after_drain_begins(lifecycle: &Lifecycle, deadline: Instant) -> Instant {
    not_before_now(deadline, phase_needs(lifecycle, Phase::AfterDrain))
}

/// The timeouts of `phase`'s hooks still registered: summed, or the longest when the
/// phase is concurrent.
fn phase_needs(lifecycle: &Lifecycle, phase: Phase) -> Duration {
    let config = &lifecycle.inner.config;
    let timeouts = lifecycle
        .registry_for_driver()
        .shutdown
        .iter()
        .filter(|hook| hook.phase == phase)
        .map(|hook| hook.timeout.unwrap_or(config.hook_timeout()))
        .collect::<Vec<_>>();
    if config.concurrent_phases.contains(&phase) {
        timeouts.into_iter().max().unwrap_or_default()
    } else {
        timeouts
            .into_iter()
            .fold(Duration::ZERO, Duration::saturating_add)
    }
}

/// `deadline - before`, but not earlier than now (nor later than the deadline).
fn not_before_now(deadline: Instant, before: Duration) -> Instant {
    let now = Instant::now().min(deadline);
    deadline.checked_sub(before).unwrap_or(now).max(now)
}

pub(crate) async fn drive(lifecycle: Lifecycle) {
    let inner = Arc::clone(&lifecycle.inner);
    let mut timeline = Timeline {
        entered: vec![(State::Starting, Instant::now())],
    };
    let hook_log = HookLog::default();

    // Starting: startup hooks, startup checks, readiness holds; a trigger cuts this short.
    tokio::select! {
        biased;
        _ = inner.triggered.cancelled() => {}
        _ = async {
            run_startup_hooks(&lifecycle, &hook_log).await;
            inner.health.startup_passed().await;
            inner.readiness_holds.released().await;
        } => timeline.transition(&lifecycle, State::Ready),
    }

    inner.triggered.cancelled().await;
    // A trigger before Ready is an orderly shutdown: the startup hook it interrupted (or
    // whose retry it ended) is no failure of the shutdown.
    hook_log.forget_startup();
    let (reason, triggered_at) = match inner.trigger.get() {
        Some((reason, at)) => (reason.clone(), *at),
        // `triggered` is only cancelled after `trigger` is set.
        None => (Reason::Api, Instant::now()),
    };
    crate::metrics::shutdown_began(&reason);
    let span = tracing::info_span!("shutdown", reason = %reason);
    shut_down(lifecycle, timeline, hook_log, reason, triggered_at)
        .instrument(span)
        .await;
}

/// A tracing span for one state of the shutdown, within the `shutdown` span.
fn state_span(state: State) -> tracing::Span {
    tracing::info_span!("state", state = %state)
}

/// From the trigger to Stopped.
async fn shut_down(
    lifecycle: Lifecycle,
    mut timeline: Timeline,
    hook_log: HookLog,
    reason: Reason,
    triggered_at: Instant,
) {
    let inner = Arc::clone(&lifecycle.inner);
    let config = &inner.config;
    let deadline = deadline_after(triggered_at, config.deadline());
    if config.exit_process() {
        arm_watchdog(&lifecycle);
    }

    // The budget is planned from the deadline backwards: the AfterDrain hooks get their
    // timeouts before the deadline, so the lame duck, the Stopping hooks and the drain
    // end early enough to leave them that time (see `cut_at_the_latest`).
    let cut = Mutex::new(Cut::default());

    // From here on the termination log says the shutdown is under way, should the
    // process be killed before its report.
    let progress = config.termination_log().and_then(ProgressLog::start);
    let tell_progress = |state: State| {
        if let Some(log) = &progress {
            log.write(&progress_of(&lifecycle, &reason, state, triggered_at));
        }
    };

    // Draining (lame duck): keep serving for the delay, for holds and Draining hooks.
    let (mut interrupted, mut holds_abandoned) = async {
        timeline.transition(&lifecycle, State::Draining);
        tell_progress(State::Draining);
        let lame_duck_ends = lame_duck_ends_at_the_latest(&lifecycle, deadline);
        let draining_hooks = run_phase(&lifecycle, &hook_log, Phase::Draining, lame_duck_ends);
        let lame_duck = async {
            tokio::join!(
                sleep_until(deadline_after(triggered_at, config.shutdown_delay())),
                inner.drain_holds.released(),
                draining_hooks,
            )
        };
        let interrupted = match bounded(&lifecycle, lame_duck_ends, lame_duck).await {
            Ok(_) => None,
            Err(Interrupted::Forced) => Some(Interrupted::Forced),
            Err(Interrupted::Deadline) if lame_duck_ends >= deadline => {
                tracing::error!("shutdown deadline reached; abandoning what is pending");
                Some(Interrupted::Deadline)
            }
            Err(Interrupted::Deadline) => {
                tracing::warn!(
                    holds = ?inner.drain_holds.names(),
                    "lame duck cut short to leave the AfterDrain hooks their time"
                );
                None
            }
        };
        (interrupted, inner.drain_holds.names())
    }
    .instrument(state_span(State::Draining))
    .await;

    // Stopping: listeners close, tokens are cancelled, in-flight work finishes, then the
    // AfterDrain hooks run.
    async {
        timeline.transition(&lifecycle, State::Stopping);
        tell_progress(State::Stopping);
        inner.stop.cancel();
        inner.tasks.tracker.close();
        if interrupted.is_none() {
            let cut_by = cut_at_the_latest(&lifecycle, deadline);
            let drain_deadline = deadline_after(Instant::now(), config.drain_timeout()).min(cut_by);
            let stopping_hooks = run_phase(&lifecycle, &hook_log, Phase::Stopping, cut_by);
            // The drain timeout cuts in-flight work on time even while Stopping hooks still
            // run; the hooks have timeouts of their own.
            let drain = async {
                tokio::select! {
                    _ = all_done(&lifecycle) => {}
                    _ = sleep_until(drain_deadline) => {
                        tracing::warn!(
                            connections = inner.connections.active(),
                            requests = inner.requests.active(),
                            tasks = ?inner.tasks.running_names(),
                            "drain timeout reached; cutting what remains"
                        );
                        cut_now(&lifecycle, &cut);
                    }
                }
            };
            if let Err(why) = bounded(&lifecycle, deadline, async {
                tokio::join!(drain, stopping_hooks)
            })
            .await
            {
                interrupted = Some(why);
            }
        }

        if interrupted.is_none() {
            // AfterDrain begins only once every handler has returned or been dropped: servers
            // drop what they still run when the cut fires, a scheduling or two later. A server
            // that does not is waited for until the deadline leaves the hooks only their time.
            let settled = async {
                let settle_until = after_drain_begins(&lifecycle, deadline);
                tokio::select! {
                    _ = all_done(&lifecycle) => {}
                    _ = sleep_until(settle_until) => {
                        tracing::error!(
                            connections = inner.connections.active(),
                            requests = inner.requests.active(),
                            "work still running after the cut; AfterDrain hooks begin anyway"
                        );
                        cut_now(&lifecycle, &cut);
                    }
                }
            };
            if let Err(why) = bounded(&lifecycle, deadline, settled).await {
                interrupted = Some(why);
            }
        }
        if interrupted.is_none() {
            let after_drain = run_phase(&lifecycle, &hook_log, Phase::AfterDrain, deadline);
            interrupted = bounded(&lifecycle, deadline, after_drain).await.err();
        }
        if interrupted.is_none() {
            // Responses that must reach their client before the process exits (`/shutdown`).
            if let Err(why) = bounded(&lifecycle, deadline, inner.exit_holds.released()).await {
                interrupted = Some(why);
                holds_abandoned.extend(inner.exit_holds.names());
            }
        }
        if interrupted.is_some() {
            if interrupted == Some(Interrupted::Deadline) {
                tracing::error!("shutdown deadline reached; abandoning what is pending");
            }
            cut_now(&lifecycle, &cut);
            abandon_unrun_hooks(&lifecycle, &hook_log);
        }
    }
    .instrument(state_span(State::Stopping))
    .await;
    if let Some(task) = inner
        .signal_task
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take()
    {
        task.abort();
    }

    let stopped_at = Instant::now();
    let stopping_since = timeline.entered.last().map_or(stopped_at, |(_, at)| *at);
    timeline.entered.push((State::Stopped, stopped_at));
    let cut = cut.into_inner().unwrap_or_else(PoisonError::into_inner);
    let report = Report {
        reason,
        clean: false,
        duration_ms: millis(stopped_at - triggered_at),
        exit_code: 0,
        forced_by: inner.forced.get().copied(),
        deadline_exceeded: interrupted == Some(Interrupted::Deadline)
            || (interrupted.is_none() && stopped_at >= deadline),
        states: timeline.timings(stopped_at),
        hooks: hook_log.take(),
        tasks_abandoned: cut.tasks,
        tasks_failed: inner.tasks.failures(),
        holds_abandoned,
        connections_cut: cut.connections,
        requests_cut: cut.requests,
    }
    .finish();
    report.log_summary();
    if let Some(path) = config.termination_log() {
        // The file is the operator's: a FIFO nobody reads or a hung network file system
        // must not keep the process past the deadline.
        let within = deadline
            .saturating_duration_since(Instant::now())
            .clamp(TERMINATION_LOG_WAIT_MIN, TERMINATION_LOG_WAIT_MAX);
        let (done, outcome) = tokio::sync::oneshot::channel();
        let bytes = report.to_json().into_bytes();
        let tell = move |r| {
            let _ = done.send(r);
        };
        // After the progress messages, on their writer, so none can land after it.
        let spawned = match &progress {
            Some(log) => log.finish(bytes, tell),
            None => crate::report::spawn_write(path, bytes, tell),
        };
        let written = match spawned {
            Ok(()) => match tokio::time::timeout(within, outcome).await {
                Ok(Ok(result)) => result,
                Ok(Err(_)) => Err(std::io::Error::other("the writing thread ended")),
                Err(_) => Err(crate::report::timed_out(within)),
            },
            Err(error) => Err(error),
        };
        if let Err(error) = written {
            tracing::error!(path = %path.display(), %error, "could not write the termination log");
        }
    }
    let exit_now =
        config.exit_process() && (report.forced_by.is_some() || report.deadline_exceeded);
    let status = report.exit_code;
    // The report first, then Stopped: whoever sees Stopped can read the report.
    inner.report.send_replace(Some(report));
    inner.set_state(State::Stopped);
    // As the report has them (the termination log's write is not part of the shutdown's
    // time): after Stopped, so that no sample overwrites them.
    crate::metrics::shutdown_ended(stopped_at - triggered_at, stopped_at - stopping_since);
    tracing::info!(
        from = %State::Stopping,
        to = %State::Stopped,
        after_ms = millis(stopped_at - stopping_since),
        "lifecycle state changed"
    );
    if exit_now {
        // Blocking threads or a stuck `main` must not carry the process past SIGKILL.
        std::process::exit(i32::from(status));
    }
}

/// The termination log's message for `state`, while the shutdown runs.
fn progress_of(
    lifecycle: &Lifecycle,
    reason: &Reason,
    state: State,
    triggered_at: Instant,
) -> Progress {
    let inner = &lifecycle.inner;
    let mut progress = Progress::new(
        reason,
        state,
        Instant::now().saturating_duration_since(triggered_at),
    );
    progress.pending = Pending {
        connections: inner.connections.active(),
        requests: inner.requests.active(),
        tasks: inner.tasks.running_names(),
        holds: inner.drain_holds.names(),
    };
    progress
}

/// Wait for `fut`, unless the deadline passes or a second signal forces the exit first.
async fn bounded<F: std::future::Future>(
    lifecycle: &Lifecycle,
    deadline: Instant,
    fut: F,
) -> Result<F::Output, Interrupted> {
    tokio::select! {
        biased;
        _ = lifecycle.inner.force.cancelled() => Err(Interrupted::Forced),
        _ = sleep_until(deadline) => Err(Interrupted::Deadline),
        output = fut => Ok(output),
    }
}

async fn run_startup_hooks(lifecycle: &Lifecycle, hook_log: &HookLog) {
    let hooks = {
        let mut registry = lifecycle.registry_for_driver();
        registry.startup_taken = true;
        std::mem::take(&mut registry.startup)
    };
    let default_timeout = lifecycle.inner.config.hook_timeout();
    let far = deadline_after(Instant::now(), FAR_FUTURE);
    for mut hook in hooks {
        let mut backoff = STARTUP_RETRY_FIRST;
        loop {
            // Until an attempt succeeds, its slot says how it went: `abandoned` while it
            // runs (a trigger may cut it), then its failure while the retry waits.
            let slot = hook_log.reserve(hook.name.clone(), "startup");
            hook_log.begin(slot);
            let report = run_hook(
                &hook.span,
                hook.name.clone(),
                "startup",
                (hook.run)(),
                hook.timeout.unwrap_or(default_timeout),
                far,
            )
            .await;
            if report.outcome == HookOutcome::Ok {
                hook_log.pop();
                break;
            }
            tracing::warn!(hook = %hook.name, retry_in = ?backoff, "startup hook will be retried");
            hook_log.record(slot, report);
            tokio::select! {
                _ = lifecycle.inner.triggered.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            hook_log.pop();
            backoff = (backoff * 2).min(STARTUP_RETRY_MAX);
        }
    }
}

/// Run the hooks of `phase` once: they are taken out of the registry (and given their
/// slots in the report, `abandoned` until they finish) now, not when the returned future
/// is first polled, so no trigger can run them again and a phase cut short before it was
/// polled still reports them.
fn run_phase<'a>(
    lifecycle: &Lifecycle,
    hook_log: &'a HookLog,
    phase: Phase,
    deadline: Instant,
) -> impl std::future::Future<Output = ()> + 'a {
    let hooks: Vec<_> = {
        let mut registry = lifecycle.registry_for_driver();
        registry.phases_taken.push(phase);
        let (mine, rest) = std::mem::take(&mut registry.shutdown)
            .into_iter()
            .partition(|h| h.phase == phase);
        registry.shutdown = rest;
        mine
    };
    let config = &lifecycle.inner.config;
    let default_timeout = config.hook_timeout();
    let concurrent = config.concurrent_phases.contains(&phase);
    // Reverse registration order, like `defer`: what was set up last is torn down first.
    let runs: Vec<_> = hooks
        .into_iter()
        .rev()
        .map(|hook| {
            let slot = hook_log.reserve(hook.name.clone(), phase.as_str());
            let timeout = hook.timeout.unwrap_or(default_timeout);
            async move {
                hook_log.begin(slot);
                let report = run_hook(
                    &hook.span,
                    hook.name,
                    phase.as_str(),
                    (hook.run)(),
                    timeout,
                    deadline,
                )
                .await;
                hook_log.record(slot, report);
            }
        })
        .collect();
    async move {
        if concurrent {
            join_all(runs).await;
        } else {
            for run in runs {
                run.await;
            }
        }
    }
}

/// Hooks of phases that never began are reported as abandoned.
fn abandon_unrun_hooks(lifecycle: &Lifecycle, hook_log: &HookLog) {
    let mut registry = lifecycle.registry_for_driver();
    registry.phases_taken.extend(Phase::ALL);
    for hook in std::mem::take(&mut registry.shutdown).into_iter().rev() {
        hook_log.push(HookReport::abandoned(hook.name, hook.phase.as_str()));
    }
}

pub(crate) async fn listen_for_signals(lifecycle: Lifecycle, mut listener: SignalListener) {
    let first = listener.recv().await;
    heard_first(&lifecycle, first);
    let mut heard = 1;
    loop {
        heard += 1;
        if heard_again(&lifecycle, listener.recv().await, heard) {
            return;
        }
    }
}

/// Whether this listener, hearing its `nth` signal, is the first of the two to hear it,
/// and so the one to log it: both listeners hear every delivery.
fn first_to_hear(lifecycle: &Lifecycle, nth: u64) -> bool {
    lifecycle
        .inner
        .signals_logged
        .fetch_max(nth, Ordering::SeqCst)
        < nth
}

/// The first signal this listener heard: a trigger (a no-op when another came first).
fn heard_first(lifecycle: &Lifecycle, signal: Signal) {
    if first_to_hear(lifecycle, 1) {
        tracing::info!(%signal, "signal received");
    }
    lifecycle.trigger(Reason::Signal(signal));
}

/// A later signal: forces the exit when so configured (true), else is ignored.
///
/// Two listeners hear every signal: the runtime's task and, when the process is to exit,
/// a thread of its own. Each counts its own signals, and whichever triggered the shutdown
/// had taken the first signal before anyone could see the state change, so a second
/// signal sent after that is never merged into the first by both.
fn heard_again(lifecycle: &Lifecycle, signal: Signal, nth: u64) -> bool {
    if lifecycle.inner.config.force_on_second_signal() {
        if lifecycle.inner.forced.set(signal).is_ok() {
            tracing::error!(%signal, "second signal during shutdown; forcing exit");
        }
        lifecycle.inner.force.cancel();
        return true;
    }
    if first_to_hear(lifecycle, nth) {
        tracing::warn!(%signal, "signal ignored: shutdown already under way");
    }
    false
}

/// A thread of its own that hears the configured signals even when the async runtime is
/// blocked (a handler holding a worker thread with blocking work when SIGTERM comes): the
/// first triggers the shutdown and arms the watchdog, so that the process still ends
/// before the platform's SIGKILL; a second forces the exit, as the runtime's listener does.
pub(crate) fn arm_watchdog_on_first_signal(lifecycle: &Lifecycle) {
    let config = &lifecycle.inner.config;
    let numbers: Vec<i32> = config.signals().iter().map(|s| s.number()).collect();
    let mut heard = match signal_hook::iterator::Signals::new(&numbers) {
        Ok(heard) => heard,
        Err(error) => {
            tracing::error!(%error, "cannot watch signals off the runtime; the watchdog is armed only by the runtime");
            return;
        }
    };
    let lifecycle = lifecycle.clone();
    let spawned = std::thread::Builder::new()
        .name("lameduck-signal-watch".into())
        .spawn(move || {
            let signal_of = |number: i32| {
                lifecycle
                    .inner
                    .config
                    .signals()
                    .iter()
                    .copied()
                    .find(|s| s.number() == number)
            };
            let mut nth = 0;
            for number in heard.forever() {
                let Some(signal) = signal_of(number) else {
                    continue;
                };
                nth += 1;
                if nth == 1 {
                    heard_first(&lifecycle, signal);
                    arm_watchdog(&lifecycle);
                } else if heard_again(&lifecycle, signal, nth) {
                    return;
                }
            }
        });
    if let Err(error) = spawned {
        tracing::error!(%error, "could not start the signal watch thread");
    }
}

/// Start the watchdog once, timed from the trigger: it fires at the grace period less half
/// the safety margin.
fn arm_watchdog(lifecycle: &Lifecycle) {
    let inner = &lifecycle.inner;
    if inner.watchdog_armed.swap(true, Ordering::SeqCst) {
        return;
    }
    let config = &inner.config;
    let triggered_at = inner.trigger.get().map_or_else(Instant::now, |(_, at)| *at);
    let fires_at = deadline_after(
        triggered_at,
        config
            .grace_period()
            .saturating_sub(config.safety_margin() / 2),
    );
    start_watchdog(
        lifecycle,
        fires_at.saturating_duration_since(Instant::now()),
    );
}

/// A thread, independent of the async runtime, that ends the process just before the
/// platform's SIGKILL if the lifecycle has not finished by then (a hook or handler blocked
/// the runtime's threads). Once the report exists it does nothing: a process whose `main`
/// does not return after a clean shutdown is not ended by it.
fn start_watchdog(lifecycle: &Lifecycle, after: Duration) {
    let lifecycle = lifecycle.clone();
    let spawned = std::thread::Builder::new()
        .name("lameduck-watchdog".into())
        .spawn(move || {
            std::thread::sleep(after);
            if lifecycle.inner.report.borrow().is_some() {
                return;
            }
            let reason = lifecycle
                .reason()
                .map(|r| r.to_string())
                .unwrap_or_default();
            let message = serde_json::json!({
                "reason": reason,
                "clean": false,
                "exit_code": crate::report::EXIT_DEADLINE,
                "deadline_exceeded": true,
                "watchdog": "the runtime did not finish the shutdown before the deadline",
            })
            .to_string();
            eprintln!("lameduck: shutdown watchdog fired: {message}");
            if let Some(path) = lifecycle.inner.config.termination_log() {
                // The exit must not depend on the write: at most a quarter of the margin.
                let within = (lifecycle.inner.config.safety_margin() / 4)
                    .clamp(Duration::from_millis(20), TERMINATION_LOG_WAIT_MAX);
                if let Err(error) = crate::report::write_within(path, message.into_bytes(), within)
                {
                    eprintln!(
                        "lameduck: could not write the termination log {}: {error}",
                        path.display()
                    );
                }
            }
            std::process::exit(i32::from(crate::report::EXIT_DEADLINE));
        });
    if let Err(error) = spawned {
        tracing::error!(%error, "could not start the shutdown watchdog");
    }
}
