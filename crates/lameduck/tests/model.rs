//! A model-based test of the lifecycle (issue 12): proptest generates random scenarios —
//! triggers, holds, hooks in every phase, tracked tasks and simulated request handlers, at
//! random times — runs each under paused time, records what every participant did, and
//! checks the report and the observed states against that record.
//!
//! Every participant writes to one [`Log`] (paused-clock offset, event); on the one
//! thread of a current-thread runtime the order of the log is the order things happened,
//! so "before" is decided by position in the log and instants are used for the deadline
//! and for durations. Each violation is tagged with its invariant:
//!
//! - `states`: observed states only move forward and end at Stopped; the report's phases
//!   likewise; Ready iff startup was through before the trigger.
//! - `lame-duck`: Stopping waits for the shutdown delay and every drain hold (or names it
//!   abandoned), up to the budget planned from the deadline backwards (the AfterDrain
//!   hooks' timeouts, 250 ms for the cut to settle, the Stopping hooks' timeouts).
//! - `deadline`: the report comes no later than trigger + `deadline()` (+1 ms);
//!   `deadline_exceeded` only with something really pending then; `duration_ms` is right.
//! - `hooks-once`, `hook-outcome`, `hook-abandoned-before-deadline`: each hook runs at most
//!   once, is listed once, with the outcome of what it did.
//! - `after-drain`: AfterDrain hooks begin only after every request handler whose server
//!   drops it at the cut has finished or been dropped, and after every task ended — unless
//!   the time reserved for them has begun (a grace period too short for the wait).
//! - `cuts`, `tasks-abandoned`, `tasks-failed`, `holds`, `clean`, `reason`: the report's
//!   counts and lists match what was live at the cut, what failed, what was held.
//! - `abandoned-stays`: nothing given up on runs on after the report.
//!
//! `MODEL_CASES=N` changes the cases per property; `MODEL_SKIP=tag,tag` leaves tags (by
//! prefix) out of `the_lifecycle_keeps_every_invariant`, to look past a known failure.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::Duration;

use lameduck::{
    CancellationToken, Hook, HookOutcome, Lifecycle, Phase, Reason, Report, Signal, State,
};
use proptest::prelude::*;
use tokio::time::Instant;

// ----- scenarios ----------------------------------------------------------------------

/// How a hook, a startup attempt or a task ends once its work is done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    Ok,
    Err,
    Panic,
}

/// A shutdown hook's body.
#[derive(Debug, Clone, Copy)]
enum Work {
    /// Work this many ms, then end so.
    After(u64, Ending),
    /// Never return.
    Hang,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fire {
    Shutdown,
    PreStop,
    SigTerm,
    Custom,
}

#[derive(Debug, Clone)]
struct TriggerSpec {
    at_ms: u64,
    fire: Fire,
}

#[derive(Debug, Clone)]
struct HookSpec {
    phase: Phase,
    work: Work,
    /// Its own timeout (`Hook::timeout`), else the lifecycle's default.
    timeout_ms: Option<u64>,
}

#[derive(Debug, Clone)]
struct StartupSpec {
    attempt_ms: u64,
    /// Attempts that fail before one succeeds.
    failures: u32,
    /// Every attempt hangs (cut at the hook timeout, retried).
    hang: bool,
}

#[derive(Debug, Clone, Copy)]
enum TaskKind {
    /// Returns as soon as its token is cancelled.
    Prompt,
    /// Returns this many ms after its token is cancelled.
    Late(u64),
    /// Never returns.
    Ignore,
    /// Ends on its own after this many ms, whatever the token.
    Ends(u64, Ending),
}

#[derive(Debug, Clone)]
struct TaskSpec {
    critical: bool,
    kind: TaskKind,
}

/// What a simulated server does with a handler when the cut token fires.
#[derive(Debug, Clone, Copy)]
enum OnCut {
    /// Drop it at once (what `lameduck-http` does).
    Drop,
    /// Drop it this many ms later (unless its work ends first).
    DropAfter(u64),
    /// Let it run to the end of its work.
    Ignore,
}

#[derive(Debug, Clone)]
struct HandlerSpec {
    start_ms: u64,
    work_ms: u64,
    on_cut: OnCut,
    /// Also holds a `connections()` guard for as long as the request.
    connection: bool,
}

#[derive(Debug, Clone)]
struct Scenario {
    delay_ms: u64,
    drain_ms: u64,
    grace_ms: u64,
    hook_timeout_ms: u64,
    concurrent: Vec<Phase>,
    triggers: Vec<TriggerSpec>,
    startup: Vec<StartupSpec>,
    /// Release after this many ms from the start, or never.
    readiness_holds: Vec<Option<u64>>,
    drain_holds: Vec<Option<u64>>,
    exit_holds: Vec<Option<u64>>,
    hooks: Vec<HookSpec>,
    tasks: Vec<TaskSpec>,
    handlers: Vec<HandlerSpec>,
}

impl Scenario {
    /// A scenario with these settings and nothing in it (add at least one trigger).
    fn new(grace_ms: u64, drain_ms: u64, delay_ms: u64, hook_timeout_ms: u64) -> Self {
        Self {
            delay_ms,
            drain_ms,
            grace_ms,
            hook_timeout_ms,
            concurrent: Vec::new(),
            triggers: Vec::new(),
            startup: Vec::new(),
            readiness_holds: Vec::new(),
            drain_holds: Vec::new(),
            exit_holds: Vec::new(),
            hooks: Vec::new(),
            tasks: Vec::new(),
            handlers: Vec::new(),
        }
    }
    fn trigger(mut self, at_ms: u64, fire: Fire) -> Self {
        self.triggers.push(TriggerSpec { at_ms, fire });
        self
    }
    fn hook(mut self, phase: Phase, work: Work) -> Self {
        self.hooks.push(HookSpec {
            phase,
            work,
            timeout_ms: None,
        });
        self
    }
    fn handler(mut self, start_ms: u64, work_ms: u64, on_cut: OnCut, connection: bool) -> Self {
        self.handlers.push(HandlerSpec {
            start_ms,
            work_ms,
            on_cut,
            connection,
        });
        self
    }
    fn task(mut self, critical: bool, kind: TaskKind) -> Self {
        self.tasks.push(TaskSpec { critical, kind });
        self
    }
}

fn hook_name(i: usize, phase: Phase) -> String {
    format!("{phase}-{i}")
}
fn startup_name(i: usize) -> String {
    format!("startup-{i}")
}
fn task_name(i: usize, critical: bool) -> String {
    if critical {
        format!("critical-{i}")
    } else {
        format!("task-{i}")
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HoldKind {
    Readiness,
    Drain,
    Exit,
}

fn hold_name(kind: HoldKind, i: usize) -> String {
    match kind {
        HoldKind::Readiness => format!("ready-hold-{i}"),
        HoldKind::Drain => format!("drain-hold-{i}"),
        HoldKind::Exit => format!("exit-hold-{i}"),
    }
}

// ----- the record ---------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
enum Ev {
    Trigger { i: usize, first: bool },
    StartupBegin { i: usize },
    StartupEnd { i: usize, ok: bool },
    HookBegin { i: usize },
    HookEnd { i: usize },
    TaskEnd { i: usize, failed: bool },
    Skipped { i: usize },
    Enter { i: usize },
    SawCut { i: usize },
    Exit { i: usize },
    Released { kind: HoldKind, i: usize },
    Cut,
    State(State),
    Report,
}

struct Log {
    t0: Instant,
    events: Mutex<Vec<(Duration, Ev)>>,
}

impl Log {
    fn push(&self, ev: Ev) {
        let at = self.t0.elapsed();
        self.events.lock().unwrap().push((at, ev));
    }
}

async fn pause(ms: u64) {
    if ms > 0 {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
}

fn end(ending: Ending) -> Result<(), String> {
    match ending {
        Ending::Ok => Ok(()),
        Ending::Err => Err("deliberate failure".to_owned()),
        Ending::Panic => panic!("deliberate panic"),
    }
}

/// Deliberate panics are expected by the hundred; keep them out of the test output.
fn quiet_deliberate_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if info.payload().downcast_ref::<&str>() == Some(&"deliberate panic") {
                return;
            }
            default(info);
        }));
    });
}

/// What one run produced.
struct Run {
    report: Report,
    events: Vec<(Duration, Ev)>,
    /// `grace_period - safety_margin`.
    deadline: Duration,
    invocations: Vec<usize>,
    reason_after: Option<Reason>,
}

/// Play `s` on the current (paused) runtime and record what happened.
async fn execute(s: &Scenario) -> Run {
    quiet_deliberate_panics();
    let ms = Duration::from_millis;
    let mut builder = Lifecycle::builder()
        .exit_process(false)
        .no_termination_log()
        .no_signals()
        .shutdown_delay(ms(s.delay_ms))
        .drain_timeout(ms(s.drain_ms))
        .grace_period(ms(s.grace_ms))
        .hook_timeout(ms(s.hook_timeout_ms));
    for phase in &s.concurrent {
        builder = builder.concurrent_hooks(*phase);
    }
    let lifecycle = builder.build().unwrap();
    let log = Arc::new(Log {
        t0: Instant::now(),
        events: Mutex::new(Vec::new()),
    });

    // Observers: every state change, and the cut.
    let mut states = lifecycle.subscribe();
    let observer = {
        let log = log.clone();
        tokio::spawn(async move {
            let mut state = *states.borrow_and_update();
            log.push(Ev::State(state));
            while state != State::Stopped && states.changed().await.is_ok() {
                state = *states.borrow_and_update();
                log.push(Ev::State(state));
            }
        })
    };
    {
        let cut = lifecycle.cut_token();
        let log = log.clone();
        tokio::spawn(async move {
            cut.cancelled().await;
            log.push(Ev::Cut);
        });
    }

    // Startup hooks.
    for (i, spec) in s.startup.iter().enumerate() {
        let attempts = Arc::new(AtomicU32::new(0));
        let log = log.clone();
        let spec = spec.clone();
        lifecycle.on_startup(startup_name(i), move || {
            let attempt = attempts.fetch_add(1, Ordering::SeqCst);
            let log = log.clone();
            let spec = spec.clone();
            async move {
                log.push(Ev::StartupBegin { i });
                if spec.hang {
                    std::future::pending::<()>().await;
                }
                pause(spec.attempt_ms).await;
                let ok = attempt >= spec.failures;
                log.push(Ev::StartupEnd { i, ok });
                if ok {
                    Ok(())
                } else {
                    Err("deliberate failure".to_owned())
                }
            }
        });
    }

    // Holds, taken at the start.
    let mut kept = Vec::new();
    for (kind, specs) in [
        (HoldKind::Readiness, &s.readiness_holds),
        (HoldKind::Drain, &s.drain_holds),
        (HoldKind::Exit, &s.exit_holds),
    ] {
        for (i, release) in specs.iter().enumerate() {
            let name = hold_name(kind, i);
            let hold = match kind {
                HoldKind::Readiness => lifecycle.hold_readiness(&name),
                HoldKind::Drain => lifecycle.hold(&name),
                HoldKind::Exit => lifecycle.hold_exit(&name),
            };
            match *release {
                None => kept.push(hold),
                Some(after) => {
                    let log = log.clone();
                    tokio::spawn(async move {
                        pause(after).await;
                        drop(hold);
                        log.push(Ev::Released { kind, i });
                    });
                }
            }
        }
    }

    // Shutdown hooks.
    let counts: Vec<Arc<AtomicUsize>> = s.hooks.iter().map(|_| Arc::default()).collect();
    for (i, spec) in s.hooks.iter().enumerate() {
        let log = log.clone();
        let count = counts[i].clone();
        let work = spec.work;
        let mut hook = Hook::new(hook_name(i, spec.phase), spec.phase, move || async move {
            count.fetch_add(1, Ordering::SeqCst);
            log.push(Ev::HookBegin { i });
            match work {
                Work::Hang => std::future::pending().await,
                Work::After(after, ending) => {
                    pause(after).await;
                    log.push(Ev::HookEnd { i });
                    end(ending)
                }
            }
        });
        if let Some(timeout) = spec.timeout_ms {
            hook = hook.timeout(ms(timeout));
        }
        lifecycle.add_hook(hook);
    }

    // Tracked tasks.
    for (i, spec) in s.tasks.iter().enumerate() {
        let log = log.clone();
        let kind = spec.kind;
        let body = move |cancel: CancellationToken| async move {
            let ending = match kind {
                TaskKind::Prompt => {
                    cancel.cancelled().await;
                    Ending::Ok
                }
                TaskKind::Late(after) => {
                    cancel.cancelled().await;
                    pause(after).await;
                    Ending::Ok
                }
                TaskKind::Ignore => {
                    std::future::pending::<()>().await;
                    Ending::Ok
                }
                TaskKind::Ends(after, ending) => {
                    pause(after).await;
                    ending
                }
            };
            log.push(Ev::TaskEnd {
                i,
                failed: ending != Ending::Ok,
            });
            end(ending)
        };
        if spec.critical {
            lifecycle.spawn_critical(task_name(i, true), body);
        } else {
            lifecycle.spawn(task_name(i, false), body);
        }
    }

    // Simulated request handlers, as a server built on the counters runs them.
    for (i, spec) in s.handlers.iter().enumerate() {
        let lifecycle = lifecycle.clone();
        let log = log.clone();
        let spec = spec.clone();
        tokio::spawn(async move {
            pause(spec.start_ms).await;
            // Listeners are closed from Stopping on.
            if lifecycle.state() >= State::Stopping || lifecycle.cut_token().is_cancelled() {
                log.push(Ev::Skipped { i });
                return;
            }
            let request = lifecycle.requests().enter();
            let connection = spec.connection.then(|| lifecycle.connections().enter());
            log.push(Ev::Enter { i });
            let cut = lifecycle.cut_token();
            let work = pause(spec.work_ms);
            tokio::pin!(work);
            tokio::select! {
                biased;
                () = cut.cancelled() => {
                    log.push(Ev::SawCut { i });
                    match spec.on_cut {
                        OnCut::Drop => {}
                        OnCut::DropAfter(after) => {
                            tokio::select! {
                                biased;
                                () = &mut work => {}
                                () = pause(after) => {}
                            }
                        }
                        OnCut::Ignore => work.await,
                    }
                }
                () = &mut work => {}
            }
            drop(connection);
            drop(request);
            log.push(Ev::Exit { i });
        });
    }

    // Triggers.
    for (i, spec) in s.triggers.iter().enumerate() {
        let lifecycle = lifecycle.clone();
        let log = log.clone();
        let spec = spec.clone();
        tokio::spawn(async move {
            pause(spec.at_ms).await;
            let answer = match spec.fire {
                Fire::Shutdown => lifecycle.shutdown(),
                Fire::PreStop => lifecycle.trigger(lameduck::Reason::PreStop),
                Fire::SigTerm => lifecycle.trigger(Reason::Signal(Signal::Term)),
                Fire::Custom => lifecycle.trigger(Reason::Task(format!("custom-{i}"))),
            };
            log.push(Ev::Trigger {
                i,
                first: answer.first,
            });
        });
    }

    let report = lifecycle.run().await;
    log.push(Ev::Report);
    // Whatever the lifecycle gave up on must stay given up: let a long time pass.
    tokio::time::sleep(Duration::from_secs(120)).await;
    observer.await.unwrap();
    drop(kept);
    let events = log.events.lock().unwrap().clone();
    Run {
        report,
        events,
        deadline: lifecycle.config().deadline(),
        invocations: counts.iter().map(|c| c.load(Ordering::SeqCst)).collect(),
        reason_after: lifecycle.reason(),
    }
}

// ----- the invariants -----------------------------------------------------------------

/// The first logged event matching `f`: (position, offset).
fn find(run: &Run, f: impl Fn(&Ev) -> bool) -> Option<(usize, Duration)> {
    run.events
        .iter()
        .enumerate()
        .find(|(_, (_, ev))| f(ev))
        .map(|(seq, (at, _))| (seq, *at))
}

fn expected_outcome(ending: Ending) -> HookOutcome {
    match ending {
        Ending::Ok => HookOutcome::Ok,
        Ending::Err => HookOutcome::Failed,
        Ending::Panic => HookOutcome::Panicked,
    }
}

fn reason_of(s: &Scenario, i: usize) -> Reason {
    match s.triggers[i].fire {
        Fire::Shutdown => Reason::Api,
        Fire::PreStop => Reason::PreStop,
        Fire::SigTerm => Reason::Signal(Signal::Term),
        Fire::Custom => Reason::Task(format!("custom-{i}")),
    }
}

/// Every invariant violated by `run` of `s`, each tagged `[invariant]`.
fn violations(s: &Scenario, run: &Run) -> Vec<String> {
    let mut v = Vec::new();
    let report = &run.report;
    let ms = |d: Duration| d.as_millis();
    let Some((report_seq, report_at)) = find(run, |e| *e == Ev::Report) else {
        return vec!["[run] no report".into()];
    };

    // --- the trigger and the reason ---
    let first_trigger = run
        .events
        .iter()
        .enumerate()
        .find_map(|(seq, (at, ev))| match ev {
            Ev::Trigger { i, .. } => Some((seq, *at, reason_of(s, *i))),
            Ev::TaskEnd { i, .. } if s.tasks[*i].critical => {
                Some((seq, *at, Reason::Task(task_name(*i, true))))
            }
            _ => None,
        });
    let Some((trigger_seq, trigger_at, reason)) = first_trigger else {
        return vec!["[run] a report without any trigger".into()];
    };
    if report.reason != reason {
        v.push(format!(
            "[reason] report says {} but the first trigger was {reason}",
            report.reason
        ));
    }
    if run.reason_after.as_ref() != Some(&reason) {
        v.push(format!(
            "[reason] lifecycle.reason() is {:?}",
            run.reason_after
        ));
    }
    for (seq, (_, ev)) in run.events.iter().enumerate() {
        if let Ev::Trigger { i, first } = ev
            && *first != (seq == trigger_seq)
        {
            v.push(format!("[reason] trigger {i} answered first={first}"));
        }
    }

    // --- states ---
    let observed: Vec<State> = run
        .events
        .iter()
        .filter_map(|(_, ev)| match ev {
            Ev::State(state) => Some(*state),
            _ => None,
        })
        .collect();
    if !observed.windows(2).all(|w| w[0] < w[1]) || observed.last() != Some(&State::Stopped) {
        v.push(format!("[states] observed {observed:?}"));
    }
    let phases: Vec<State> = report.states.iter().map(|p| p.state).collect();
    if !phases.windows(2).all(|w| w[0] < w[1])
        || phases.first() != Some(&State::Starting)
        || phases.last() != Some(&State::Stopped)
        || !observed.iter().all(|s| phases.contains(s))
    {
        v.push(format!(
            "[states] report phases {phases:?}, observed {observed:?}"
        ));
    }
    // Ready iff startup was through (every startup hook succeeded, every readiness hold
    // released) before the trigger; simultaneous events may go either way.
    let startup_done: Vec<Option<(usize, Duration)>> = (0..s.startup.len())
        .map(|i| find(run, |e| *e == Ev::StartupEnd { i, ok: true }))
        .chain((0..s.readiness_holds.len()).map(|i| {
            find(run, |e| {
                *e == Ev::Released {
                    kind: HoldKind::Readiness,
                    i,
                }
            })
        }))
        .collect();
    let ready = phases.contains(&State::Ready);
    if ready
        && !startup_done
            .iter()
            .all(|d| d.is_some_and(|(seq, _)| seq < trigger_seq))
    {
        v.push("[states] Ready although startup was not through before the trigger".into());
    }
    // Startup is through once the last of those happened (or at once when there is none).
    let through_at = startup_done
        .iter()
        .try_fold(Duration::ZERO, |latest, d| d.map(|(_, at)| latest.max(at)));
    if !ready && through_at.is_some_and(|at| at < trigger_at) {
        v.push("[states] never Ready although startup was through before the trigger".into());
    }

    // --- the lame duck: Stopping waits for the delay and the drain holds ---
    let draining = report.states.iter().find(|p| p.state == State::Draining);
    if let Some(draining) = draining {
        let stopping_at = trigger_at + Duration::from_millis(draining.duration_ms);
        let delay_ends = trigger_at + Duration::from_millis(s.delay_ms);
        // The lame duck yields to the budget planned from the deadline backwards.
        let (lame_duck_ends, _) = planned(s, run.deadline);
        if stopping_at < delay_ends.min(trigger_at + lame_duck_ends) {
            v.push(format!(
                "[lame-duck] Stopping began at {}ms, before the shutdown delay ended at {}ms",
                ms(stopping_at),
                ms(delay_ends)
            ));
        }
        for i in 0..s.drain_holds.len() {
            let name = hold_name(HoldKind::Drain, i);
            let released = find(run, |e| {
                *e == Ev::Released {
                    kind: HoldKind::Drain,
                    i,
                }
            });
            if released.is_none_or(|(_, at)| at > stopping_at)
                && !report.holds_abandoned.contains(&name)
            {
                v.push(format!(
                    "[lame-duck] Stopping began at {}ms while {name} was held (released at {:?}ms) and it is not reported abandoned",
                    ms(stopping_at),
                    released.map(|(_, at)| ms(at))
                ));
            }
        }
    } else {
        v.push(format!(
            "[states] no Draining in the report phases {phases:?}"
        ));
    }

    // --- the deadline ---
    let deadline_at = trigger_at + run.deadline;
    let tolerance = Duration::from_millis(1);
    if report_at > deadline_at + tolerance {
        v.push(format!(
            "[deadline] report at {}ms, after the deadline at {}ms",
            ms(report_at),
            ms(deadline_at)
        ));
    }
    if u128::from(report.duration_ms) != ms(report_at - trigger_at) {
        v.push(format!(
            "[deadline] duration_ms {} but the report came {}ms after the trigger",
            report.duration_ms,
            ms(report_at - trigger_at)
        ));
    }
    if !report.deadline_exceeded && report_at >= deadline_at {
        v.push("[deadline] report at the deadline without deadline_exceeded".into());
    }
    if report.deadline_exceeded {
        let pending = pending_at(s, run, trigger_at, deadline_at);
        if pending.is_empty() {
            v.push(format!(
                "[deadline] deadline_exceeded, but nothing was pending at {}ms",
                ms(deadline_at)
            ));
        }
    }

    // --- hooks ---
    for (i, spec) in s.hooks.iter().enumerate() {
        let name = hook_name(i, spec.phase);
        if run.invocations[i] > 1 {
            v.push(format!(
                "[hooks-once] {name} ran {} times",
                run.invocations[i]
            ));
        }
        let entries: Vec<_> = report.hooks.iter().filter(|h| h.name == name).collect();
        let [entry] = entries.as_slice() else {
            v.push(format!(
                "[hooks-once] {name} listed {} times",
                entries.len()
            ));
            continue;
        };
        if entry.phase != spec.phase.as_str() {
            v.push(format!(
                "[hooks-once] {name} listed in phase {}",
                entry.phase
            ));
        }
        let begin = find(run, |e| *e == Ev::HookBegin { i }).map(|(_, at)| at);
        let ended = find(run, |e| *e == Ev::HookEnd { i }).map(|(_, at)| at);
        let timeout = Duration::from_millis(spec.timeout_ms.unwrap_or(s.hook_timeout_ms));
        let took = Duration::from_millis(entry.duration_ms);
        let outcome = entry.outcome;
        let what = format!(
            "[hook-outcome] {name} ({:?}) reported {outcome:?}",
            spec.work
        );
        match (begin, outcome) {
            (None, HookOutcome::Abandoned | HookOutcome::TimedOut) => {}
            (None, _) => v.push(format!("{what} but never ran")),
            (Some(_), HookOutcome::Ok | HookOutcome::Failed | HookOutcome::Panicked) => {
                let matches = match spec.work {
                    Work::After(_, ending) => {
                        ended.is_some() && expected_outcome(ending) == outcome
                    }
                    Work::Hang => false,
                };
                if !matches {
                    v.push(what.clone());
                }
            }
            (Some(began), HookOutcome::TimedOut) => {
                if took != timeout {
                    v.push(format!(
                        "{what} after {}ms, its timeout is {}ms",
                        took.as_millis(),
                        timeout.as_millis()
                    ));
                }
                if let Some(ended) = ended
                    && ended < began + timeout
                {
                    v.push(format!(
                        "{what}, but it had finished after {}ms",
                        ms(ended - began)
                    ));
                }
            }
            // The slot of a hook given up on keeps its placeholder: duration 0.
            (Some(began), HookOutcome::Abandoned) => {
                if let Some(ended) = ended
                    && ended < deadline_at
                {
                    v.push(format!(
                        "{what}, but it had finished after {}ms, before the deadline",
                        ms(ended - began)
                    ));
                }
            }
        }
        // HookOutcome::Abandoned: its phase ended first — the deadline, a forced exit (none
        // here), or, for Draining and Stopping hooks, the end of the time their phase had
        // before the AfterDrain hooks' reserved timeouts.
        let phase_cut_by_the_plan =
            s.hooks[i].phase != Phase::AfterDrain && needs(s, Phase::AfterDrain) > Duration::ZERO;
        if outcome == HookOutcome::Abandoned && !report.deadline_exceeded && !phase_cut_by_the_plan
        {
            v.push(format!(
                "[hook-abandoned-before-deadline] {name} abandoned (began at {:?}ms) without the \
                 deadline ({}ms) being reached",
                begin.map(ms),
                ms(deadline_at),
            ));
        }
    }
    for (i, _) in s.startup.iter().enumerate() {
        let name = startup_name(i);
        let entries: Vec<_> = report.hooks.iter().filter(|h| h.name == name).collect();
        if entries.len() > 1 {
            v.push(format!(
                "[hooks-once] startup hook {name} listed {} times",
                entries.len()
            ));
        }
        if let Some(entry) = entries.first() {
            let succeeded = find(run, |e| *e == Ev::StartupEnd { i, ok: true });
            if entry.outcome == HookOutcome::Ok || succeeded.is_some_and(|(_, at)| at < trigger_at)
            {
                v.push(format!(
                    "[hook-outcome] startup hook {name} reported {:?} but succeeded at {:?}",
                    entry.outcome,
                    succeeded.map(|(_, at)| ms(at))
                ));
            }
        }
    }
    let known = report.hooks.iter().all(|h| {
        s.hooks
            .iter()
            .enumerate()
            .any(|(i, spec)| h.name == hook_name(i, spec.phase))
            || (0..s.startup.len()).any(|i| h.name == startup_name(i))
    });
    if !known {
        v.push("[hooks-once] the report lists a hook nobody registered".into());
    }

    // --- AfterDrain begins after every handler and task is done ---
    // Only handlers whose server drops them at the cut: one that ignores the cut token
    // cannot be waited for without starving the AfterDrain hooks until the deadline.
    let handler_exits: Vec<(usize, Option<(usize, Duration)>)> = (0..s.handlers.len())
        .filter(|&i| !matches!(s.handlers[i].on_cut, OnCut::Ignore))
        .filter(|&i| find(run, |e| *e == Ev::Enter { i }).is_some())
        .map(|i| (i, find(run, |e| *e == Ev::Exit { i })))
        .collect();
    for (i, spec) in s.hooks.iter().enumerate() {
        if spec.phase != Phase::AfterDrain {
            continue;
        }
        let Some((begin_seq, begin_at)) = find(run, |e| *e == Ev::HookBegin { i }) else {
            continue;
        };
        // The one exception, documented: a cut handler still not gone when the AfterDrain
        // hooks' reserved time begins does not hold them back (the grace period is too
        // short for the wait).
        let reserved_from = trigger_at + run.deadline.saturating_sub(needs(s, Phase::AfterDrain));
        for (h, exit) in &handler_exits {
            if begin_at < reserved_from && exit.is_none_or(|(seq, _)| seq > begin_seq) {
                v.push(format!(
                    "[after-drain{}] {} began at {}ms while handler {h} ({:?}) was live (it ended at {:?}ms)",
                    // Tagged apart: a handler its server drops a little after the cut.
                    if matches!(s.handlers[*h].on_cut, OnCut::DropAfter(_)) { "@late-drop" } else { "" },
                    hook_name(i, spec.phase),
                    ms(begin_at),
                    s.handlers[*h],
                    exit.map(|(_, at)| ms(at))
                ));
            }
        }
        for (seq, (at, ev)) in run.events.iter().enumerate() {
            if let Ev::TaskEnd { i: t, .. } = ev
                && seq > begin_seq
            {
                v.push(format!(
                    "[after-drain] {} began at {}ms while task {t} still ran (it ended at {}ms)",
                    hook_name(i, spec.phase),
                    ms(begin_at),
                    ms(*at)
                ));
            }
        }
    }

    // --- what was cut ---
    // Tagged apart: a drain cut before the deadline, then the deadline interrupting a later
    // wait (where the first cut's counts used to be lost).
    let cut_then_deadline = report.deadline_exceeded
        && find(run, |e| *e == Ev::Cut).is_some_and(|(_, at)| at < deadline_at);
    let at_deadline = if cut_then_deadline { "@deadline" } else { "" };
    let saw_cut: Vec<usize> = (0..s.handlers.len())
        .filter(|&i| find(run, |e| *e == Ev::SawCut { i }).is_some())
        .collect();
    let cut_connections = saw_cut
        .iter()
        .filter(|&&i| s.handlers[i].connection)
        .count();
    if report.requests_cut != saw_cut.len() || report.connections_cut != cut_connections {
        v.push(format!(
            "[cuts{at_deadline}] requests_cut {} / connections_cut {}, but {} handlers ({cut_connections} with a connection) were live when the cut fired at {:?}ms",
            report.requests_cut,
            report.connections_cut,
            saw_cut.len(),
            find(run, |e| *e == Ev::Cut).map(|(_, at)| ms(at)),
        ));
    }
    let mut abandoned_expected: Vec<String> = s
        .tasks
        .iter()
        .enumerate()
        .filter(|(i, _)| {
            !run.events
                .iter()
                .any(|(_, e)| matches!(e, Ev::TaskEnd { i: t, .. } if t == i))
        })
        .map(|(i, spec)| task_name(i, spec.critical))
        .collect();
    let mut abandoned = report.tasks_abandoned.clone();
    abandoned_expected.sort();
    abandoned.sort();
    if abandoned != abandoned_expected {
        v.push(format!(
            "[tasks-abandoned{at_deadline}] tasks_abandoned {abandoned:?}, but {abandoned_expected:?} were still running at the cut"
        ));
    }
    let mut failed_expected: Vec<String> = run
        .events
        .iter()
        .filter_map(|(_, e)| match e {
            Ev::TaskEnd { i, failed: true } => Some(task_name(*i, s.tasks[*i].critical)),
            _ => None,
        })
        .collect();
    let mut failed: Vec<String> = report.tasks_failed.iter().map(|f| f.name.clone()).collect();
    failed_expected.sort();
    failed.sort();
    if failed != failed_expected {
        v.push(format!(
            "[tasks-failed] tasks_failed {failed:?}, expected {failed_expected:?}"
        ));
    }

    // --- holds ---
    let released = |kind: HoldKind, i: usize| find(run, |e| *e == Ev::Released { kind, i });
    // A drain hold is overridden when Draining ends, an exit hold when the run ends.
    let stopping_at = report
        .states
        .iter()
        .find(|p| p.state == State::Draining)
        .map_or(report_at, |p| {
            trigger_at + Duration::from_millis(p.duration_ms)
        });
    for name in &report.holds_abandoned {
        let alive = [
            (HoldKind::Drain, &s.drain_holds, stopping_at),
            (HoldKind::Exit, &s.exit_holds, report_at),
        ]
        .into_iter()
        .any(|(kind, specs, overridden_at)| {
            (0..specs.len()).any(|i| {
                hold_name(kind, i) == *name
                    && released(kind, i).is_none_or(|(_, at)| at >= overridden_at)
            })
        });
        if !alive {
            v.push(format!(
                "[holds] {name} reported abandoned but was released before it was overridden"
            ));
        }
    }
    for i in 0..s.exit_holds.len() {
        if !report.deadline_exceeded
            && released(HoldKind::Exit, i).is_none_or(|(seq, _)| seq > report_seq)
        {
            v.push(format!(
                "[holds] run returned before exit hold {i} was released"
            ));
        }
    }

    // --- clean ---
    let clean = report.hooks.iter().all(|h| h.outcome == HookOutcome::Ok)
        && saw_cut.is_empty()
        && abandoned_expected.is_empty()
        && failed_expected.is_empty()
        && !report.deadline_exceeded
        && report.holds_abandoned.is_empty();
    if report.clean != clean {
        v.push(format!(
            "[clean] clean is {} but should be {clean}",
            report.clean
        ));
    }

    // --- what was given up on stays given up on ---
    for (at, ev) in &run.events {
        if *at > report_at
            && matches!(
                ev,
                Ev::HookBegin { .. }
                    | Ev::HookEnd { .. }
                    | Ev::TaskEnd { .. }
                    | Ev::StartupBegin { .. }
                    | Ev::StartupEnd { .. }
            )
        {
            v.push(format!(
                "[abandoned-stays] {ev:?} at {}ms, after the report",
                ms(*at)
            ));
        }
    }
    v
}

/// The timeouts of `phase`'s hooks: summed, or the longest when the phase is concurrent.
fn needs(s: &Scenario, phase: Phase) -> Duration {
    let timeouts = s
        .hooks
        .iter()
        .filter(|h| h.phase == phase)
        .map(|h| Duration::from_millis(h.timeout_ms.unwrap_or(s.hook_timeout_ms)));
    if s.concurrent.contains(&phase) {
        timeouts.max().unwrap_or_default()
    } else {
        timeouts.sum()
    }
}

/// The budget planned from the deadline backwards, relative to the trigger: the AfterDrain
/// hooks' timeouts (and 250 ms for the cut to settle) are kept before the deadline, and
/// the Stopping hooks' timeouts before that. Returns when the lame duck ends at the latest
/// and when the drain is cut at the latest.
fn planned(s: &Scenario, deadline: Duration) -> (Duration, Duration) {
    let after = needs(s, Phase::AfterDrain);
    if after.is_zero() {
        return (deadline, deadline);
    }
    let cut_by = deadline.saturating_sub(after + Duration::from_millis(250));
    (cut_by.saturating_sub(needs(s, Phase::Stopping)), cut_by)
}

/// What the driver could still have been waiting for at `deadline_at`.
fn pending_at(s: &Scenario, run: &Run, trigger_at: Duration, deadline_at: Duration) -> Vec<String> {
    let mut pending = Vec::new();
    let at = |f: &dyn Fn(&Ev) -> bool| find(run, f).map(|(_, at)| at);
    if trigger_at + Duration::from_millis(s.delay_ms) >= deadline_at {
        pending.push("the shutdown delay".to_owned());
    }
    for (kind, specs) in [
        (HoldKind::Drain, &s.drain_holds),
        (HoldKind::Exit, &s.exit_holds),
    ] {
        for i in 0..specs.len() {
            if at(&|e| *e == Ev::Released { kind, i }).is_none_or(|r| r >= deadline_at) {
                pending.push(hold_name(kind, i));
            }
        }
    }
    for (i, spec) in s.hooks.iter().enumerate() {
        let timeout = Duration::from_millis(spec.timeout_ms.unwrap_or(s.hook_timeout_ms));
        if let Some(began) = at(&|e| *e == Ev::HookBegin { i })
            && began + timeout >= deadline_at
            && at(&|e| *e == Ev::HookEnd { i }).is_none_or(|e| e >= deadline_at)
        {
            pending.push(hook_name(i, spec.phase));
        }
    }
    let cut_at = at(&|e| *e == Ev::Cut);
    for (i, spec) in s.tasks.iter().enumerate() {
        let ended = at(&|e| matches!(e, Ev::TaskEnd { i: t, .. } if *t == i));
        let running = match ended {
            Some(e) => e >= deadline_at,
            None => cut_at.is_none_or(|c| c >= deadline_at),
        };
        if running {
            pending.push(task_name(i, spec.critical));
        }
    }
    for i in 0..s.handlers.len() {
        if at(&|e| *e == Ev::Enter { i }).is_some()
            && at(&|e| *e == Ev::Exit { i }).is_none_or(|e| e >= deadline_at)
        {
            pending.push(format!("handler {i}"));
        }
    }
    pending
}

fn describe(s: &Scenario, run: &Run) -> String {
    let mut out = format!("{s:#?}\nreport: {}\nevents:\n", run.report.to_json());
    for (at, ev) in &run.events {
        out.push_str(&format!("  {:>6}ms {ev:?}\n", at.as_millis()));
    }
    out
}

/// Assert that `s` violates none of the invariants, printing the run when it does.
async fn check(s: &Scenario) -> Run {
    let run = execute(s).await;
    let v = violations(s, &run);
    assert!(v.is_empty(), "{}\n{}", v.join("\n"), describe(s, &run));
    run
}

// ----- the property -------------------------------------------------------------------

fn ending() -> impl Strategy<Value = Ending> {
    prop_oneof![4 => Just(Ending::Ok), 1 => Just(Ending::Err), 1 => Just(Ending::Panic)]
}

fn phase() -> impl Strategy<Value = Phase> {
    prop_oneof![
        Just(Phase::Draining),
        Just(Phase::Stopping),
        Just(Phase::AfterDrain)
    ]
}

fn release() -> impl Strategy<Value = Option<u64>> {
    prop::option::weighted(0.9, 0..4_000u64)
}

fn hook_spec() -> impl Strategy<Value = HookSpec> {
    let work = prop_oneof![
        9 => (0..1_500u64, ending()).prop_map(|(after, e)| Work::After(after, e)),
        1 => Just(Work::Hang),
    ];
    (phase(), work, prop::option::weighted(0.25, 0..3_000u64)).prop_map(
        |(phase, work, timeout_ms)| HookSpec {
            phase,
            work,
            timeout_ms,
        },
    )
}

fn task_spec() -> impl Strategy<Value = TaskSpec> {
    let kind = prop_oneof![
        3 => Just(TaskKind::Prompt),
        2 => (0..3_000u64).prop_map(TaskKind::Late),
        1 => Just(TaskKind::Ignore),
        2 => (0..5_000u64, ending()).prop_map(|(after, e)| TaskKind::Ends(after, e)),
    ];
    (prop::bool::weighted(0.3), kind).prop_map(|(critical, kind)| TaskSpec { critical, kind })
}

fn handler_spec() -> impl Strategy<Value = HandlerSpec> {
    let on_cut = prop_oneof![
        6 => Just(OnCut::Drop),
        2 => (1..100u64).prop_map(OnCut::DropAfter),
        1 => Just(OnCut::Ignore),
    ];
    let work = prop_oneof![5 => 0..3_000u64, 1 => Just(60_000u64)];
    (0..4_000u64, work, on_cut, any::<bool>()).prop_map(
        |(start_ms, work_ms, on_cut, connection)| HandlerSpec {
            start_ms,
            work_ms,
            on_cut,
            connection,
        },
    )
}

fn trigger_spec() -> impl Strategy<Value = TriggerSpec> {
    let fire = prop_oneof![
        Just(Fire::Shutdown),
        Just(Fire::PreStop),
        Just(Fire::SigTerm),
        Just(Fire::Custom)
    ];
    (prop_oneof![1 => Just(0u64), 5 => 0..3_000u64], fire)
        .prop_map(|(at_ms, fire)| TriggerSpec { at_ms, fire })
}

fn scenario() -> impl Strategy<Value = Scenario> {
    let settings = (
        0..=3_000u64,
        0..=3_000u64,
        (10..=1_000u64).prop_map(|g| g * 10),
        0..=3_000u64,
        prop::collection::vec(phase(), 0..3),
    );
    let startup = (
        prop::collection::vec(
            (
                0..1_000u64,
                prop_oneof![3 => Just(0u32), 1 => 1..3u32],
                prop::bool::weighted(0.1),
            )
                .prop_map(|(attempt_ms, failures, hang)| StartupSpec {
                    attempt_ms,
                    failures,
                    hang,
                }),
            0..2,
        ),
        prop::collection::vec(prop::option::weighted(0.9, 0..1_500u64), 0..2),
    );
    let holds = (
        prop::collection::vec(release(), 0..3),
        prop::collection::vec(release(), 0..2),
    );
    (
        settings,
        prop::collection::vec(trigger_spec(), 1..4),
        startup,
        holds,
        prop::collection::vec(hook_spec(), 0..7),
        prop::collection::vec(task_spec(), 0..4),
        prop::collection::vec(handler_spec(), 0..5),
    )
        .prop_map(
            |(
                (delay_ms, drain_ms, grace_ms, hook_timeout_ms, concurrent),
                triggers,
                (startup, readiness_holds),
                (drain_holds, exit_holds),
                hooks,
                tasks,
                handlers,
            )| Scenario {
                delay_ms,
                drain_ms,
                grace_ms,
                hook_timeout_ms,
                concurrent,
                triggers,
                startup,
                readiness_holds,
                drain_holds,
                exit_holds,
                hooks,
                tasks,
                handlers,
            },
        )
}

fn paused_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap()
}

/// The cases per property: `MODEL_CASES=20000` for a longer soak.
fn cases() -> u32 {
    std::env::var("MODEL_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(1024)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: cases(),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn the_lifecycle_keeps_every_invariant(s in scenario()) {
        let run = paused_runtime().block_on(execute(&s));
        let skip = std::env::var("MODEL_SKIP").unwrap_or_default();
        let v: Vec<String> = violations(&s, &run)
            .into_iter()
            .filter(|m| !skip.split(',').any(|t| !t.is_empty() && m.starts_with(&format!("[{t}"))))
            .collect();
        prop_assert!(v.is_empty(), "{}\n{}", v.join("\n"), describe(&s, &run));
    }
}

// ----- named scenarios ----------------------------------------------------------------

fn at_ms(run: &Run, f: impl Fn(&Ev) -> bool) -> Option<u128> {
    find(run, f).map(|(_, at)| at.as_millis())
}

/// GRACE=3s DRAIN=1s: the drain cut at 1.1 s cuts a 60 s request; a Stopping hook that
/// never returns then runs into the deadline (2.8 s). The cut request is still counted.
#[tokio::test(start_paused = true)]
async fn a_request_cut_at_the_drain_timeout_is_counted_when_a_stopping_hook_hangs_into_the_deadline()
 {
    let s = Scenario::new(3_000, 1_000, 0, 5_000)
        .trigger(100, Fire::SigTerm)
        .hook(Phase::Stopping, Work::Hang)
        .handler(0, 60_000, OnCut::Drop, true);
    let run = check(&s).await;
    assert_eq!(at_ms(&run, |e| *e == Ev::Cut), Some(1_100));
    assert_eq!(run.report.requests_cut, 1);
    assert_eq!(run.report.connections_cut, 1);
    assert!(run.report.deadline_exceeded);
    assert_eq!(run.report.duration_ms, 2_700);
}

/// The same defect seen through a task: aborted at the drain cut, then forgotten when
/// the deadline interrupts the Stopping hooks.
#[tokio::test(start_paused = true)]
async fn a_task_abandoned_at_the_drain_timeout_is_named_when_a_stopping_hook_hangs_into_the_deadline()
 {
    let s = Scenario::new(3_000, 1_000, 0, 5_000)
        .trigger(100, Fire::Shutdown)
        .hook(Phase::Stopping, Work::Hang)
        .task(false, TaskKind::Ignore);
    let run = check(&s).await;
    assert_eq!(run.report.tasks_abandoned, ["task-0"]);
}

/// A handler whose work ends 1 ms after the drain cut fired, before its server got round
/// to dropping it (5 ms after the cut): AfterDrain waits for it.
#[tokio::test(start_paused = true)]
async fn after_drain_waits_for_a_handler_that_finishes_1ms_after_the_cut() {
    let s = Scenario::new(10_000, 1_000, 0, 5_000)
        .trigger(0, Fire::Shutdown)
        .hook(Phase::AfterDrain, Work::After(0, Ending::Ok))
        .handler(0, 1_001, OnCut::DropAfter(5), false);
    let run = check(&s).await;
    assert_eq!(at_ms(&run, |e| *e == Ev::Cut), Some(1_000));
    assert_eq!(at_ms(&run, |e| *e == Ev::Exit { i: 0 }), Some(1_001));
    assert!(at_ms(&run, |e| *e == Ev::HookBegin { i: 0 }) >= Some(1_001));
    assert_eq!(run.report.requests_cut, 1);
    assert!(!run.report.deadline_exceeded);
}

/// What `lameduck-http` does: the handler is dropped the moment the cut fires, and
/// AfterDrain begins after that.
#[tokio::test(start_paused = true)]
async fn after_drain_begins_after_a_handler_dropped_at_the_cut() {
    let s = Scenario::new(10_000, 1_000, 0, 5_000)
        .trigger(0, Fire::Shutdown)
        .hook(Phase::AfterDrain, Work::After(0, Ending::Ok))
        .handler(0, 60_000, OnCut::Drop, true);
    let run = check(&s).await;
    assert_eq!(run.report.requests_cut, 1);
    assert_eq!(run.report.connections_cut, 1);
    assert_eq!(run.report.hooks[0].outcome, HookOutcome::Ok);
}

/// A SIGTERM while a startup hook is between retries and a readiness hold is held: straight
/// from Starting to Draining, every shutdown hook once, the signal as the reason.
#[tokio::test(start_paused = true)]
async fn a_sigterm_before_ready_goes_straight_to_draining() {
    let mut s = Scenario::new(10_000, 1_000, 200, 1_000)
        .trigger(1_500, Fire::SigTerm)
        .trigger(1_600, Fire::Shutdown)
        .hook(Phase::Draining, Work::After(100, Ending::Ok))
        .hook(Phase::Stopping, Work::After(100, Ending::Ok))
        .hook(Phase::AfterDrain, Work::After(100, Ending::Ok))
        .handler(1_000, 400, OnCut::Drop, true);
    s.startup.push(StartupSpec {
        attempt_ms: 300,
        failures: 5,
        hang: false,
    });
    s.readiness_holds.push(None);
    let run = check(&s).await;
    let phases: Vec<State> = run.report.states.iter().map(|p| p.state).collect();
    assert_eq!(
        phases,
        [
            State::Starting,
            State::Draining,
            State::Stopping,
            State::Stopped
        ]
    );
    assert_eq!(run.report.reason.to_string(), "signal:SIGTERM");
    assert_eq!(run.invocations, [1, 1, 1]);
    assert_eq!(run.report.requests_cut, 0);
    assert!(!run.report.deadline_exceeded);
}
