//! The [`Lifecycle`] handle: the one thing an application passes around. Registration
//! (hooks, tasks, holds), triggers, and observation of the state machine live here; the
//! shutdown sequence itself is in `driver.rs`.

use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};

use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::activity::ActivityCounter;
use crate::config::{Builder, Config, ConfigError};
use crate::health::Health;
use crate::hold::{Hold, HoldSet};
use crate::hooks::{Hook, HookResult, Phase, StartupHook};
use crate::report::Report;
use crate::signal::{Signal, SignalListener};
use crate::state::{Reason, State};
use crate::tasks::{Finished, Tasks};

/// The lifecycle of one service process: the state machine Starting → Ready → Draining →
/// Stopping → Stopped, the triggers that start shutdown, the hooks, tasks and holds it
/// waits for, and the report it ends with. Cheap to clone; every clone is the same
/// lifecycle.
///
/// Build it once in `main` ([`Lifecycle::from_env`] or [`Lifecycle::builder`]), register
/// what it should run and wait for, then drive it with [`run`](Self::run) (or a serve
/// helper of `lameduck-http`/`lameduck-axum`, which do that for you):
///
/// ```
/// use std::time::Duration;
/// use lameduck::{Lifecycle, Phase};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let lifecycle = Lifecycle::builder()
///     .shutdown_delay(Duration::from_secs(5))
///     .exit_process(false) // inside a test; a service keeps the default
///     .no_termination_log()
///     .build()
///     .unwrap();
///
/// lifecycle.on_shutdown("flush-metrics", Phase::AfterDrain, || async {
///     Ok::<(), std::io::Error>(())
/// });
/// lifecycle.spawn("queue-consumer", |cancel| async move {
///     cancel.cancelled().await; // stop taking work when Stopping begins
/// });
///
/// // Something triggers shutdown: SIGTERM, `/shutdown`, or the application itself.
/// let trigger = lifecycle.shutdown();
/// assert!(trigger.first);
///
/// let report = lifecycle.run().await;
/// assert!(report.clean);
/// assert_eq!(report.hooks[0].name, "flush-metrics");
/// # }
/// ```
#[derive(Clone)]
pub struct Lifecycle {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) config: Config,
    pub(crate) state: watch::Sender<State>,
    /// A lock-free copy of `state` for the request path (the watch takes a read lock).
    pub(crate) state_now: AtomicU8,
    pub(crate) trigger: OnceLock<(Reason, Instant)>,
    pub(crate) triggered: CancellationToken,
    pub(crate) stop: CancellationToken,
    pub(crate) cut: CancellationToken,
    /// Set just before `cut` is cancelled, for a lock-free look from the request path.
    pub(crate) cut_fired: AtomicBool,
    pub(crate) forced: OnceLock<Signal>,
    pub(crate) force: CancellationToken,
    pub(crate) hooks: Mutex<HookRegistry>,
    pub(crate) tasks: Arc<Tasks>,
    pub(crate) drain_holds: Arc<HoldSet>,
    pub(crate) readiness_holds: Arc<HoldSet>,
    pub(crate) exit_holds: Arc<HoldSet>,
    pub(crate) connections: ActivityCounter,
    pub(crate) requests: ActivityCounter,
    pub(crate) listeners: ActivityCounter,
    pub(crate) driver_started: AtomicBool,
    /// The task listening for the configured signals, from the moment the lifecycle is
    /// built inside a runtime (else from the first `run`).
    pub(crate) signal_task: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Set by whichever arms the watchdog first: the driver at the trigger, or the thread
    /// that hears the first signal even when the runtime is blocked.
    pub(crate) watchdog_armed: AtomicBool,
    /// How many signals have been logged: both listeners hear every signal, and the
    /// first to hear its nth logs it.
    pub(crate) signals_logged: AtomicU64,
    pub(crate) report: watch::Sender<Option<Report>>,
    pub(crate) health: Health,
    /// When the current state began, for the metrics' time in state.
    #[cfg(feature = "metrics")]
    pub(crate) state_since: Mutex<Instant>,
}

impl Inner {
    /// The only way the state changes: the atomic copy first, so that whoever the watch
    /// wakes reads the new state from either.
    pub(crate) fn set_state(&self, state: State) {
        // With metrics, the change and its gauges are made under the lock that
        // `record_metrics` samples under, so a sample never pairs one state with the
        // other's start (and overwrites the time the state that ended lasted).
        #[cfg(feature = "metrics")]
        let _sampling = {
            let mut since = self
                .state_since
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let now = Instant::now();
            let left = State::from_u8(self.state_now.load(Ordering::Acquire));
            crate::metrics::state_changed(left, now - *since, state);
            *since = now;
            since
        };
        self.state_now.store(state as u8, Ordering::Release);
        self.state.send_replace(state);
    }
}

#[derive(Default)]
pub(crate) struct HookRegistry {
    pub(crate) startup: Vec<StartupHook>,
    pub(crate) startup_taken: bool,
    pub(crate) shutdown: Vec<Hook>,
    pub(crate) phases_taken: Vec<Phase>,
}

/// The answer to a trigger: whether it was the one that started shutdown, and the reason
/// that did.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Trigger {
    /// True for the first trigger only; later ones observe the same shutdown.
    pub first: bool,
    /// The first trigger's reason (the one in the report), whichever call this was.
    pub reason: Reason,
}

impl fmt::Debug for Lifecycle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lifecycle")
            .field("state", &self.state())
            .field("reason", &self.reason())
            .finish_non_exhaustive()
    }
}

impl Lifecycle {
    /// A builder with the defaults (docs/configuration.md). No `LAMEDUCK_*` variable is
    /// read; three defaults still look at the environment: the platform, whose budget
    /// sets the defaults of the delay, grace period, drain and hook timeouts (see
    /// [`Platform`](crate::Platform): 5 s of delay when `KUBERNETES_SERVICE_HOST` is set,
    /// and so on; [`Builder::platform`] sets it instead), the termination log
    /// (`/dev/termination-log` when it is writable), and systemd's notifications (sent
    /// when `NOTIFY_SOCKET` is set; see [`Builder::no_sd_notify`]).
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// Defaults overridden by the `LAMEDUCK_*` environment variables; a bad value is an
    /// error naming the variable and the value. Shorthand for
    /// `Builder::from_env()?.build()`.
    pub fn from_env() -> Result<Self, ConfigError> {
        Builder::from_env()?.build()
    }

    pub(crate) fn with_config(config: Config) -> Self {
        let origins = &config.origins;
        tracing::info!(
            platform = %config.platform,
            detected_by = %config.platform_source,
            grace_period = %humantime::format_duration(config.grace_period),
            grace_period_from = %origins.grace_period,
            shutdown_delay = %humantime::format_duration(config.shutdown_delay),
            shutdown_delay_from = %origins.shutdown_delay,
            drain_timeout = %humantime::format_duration(config.drain_timeout),
            drain_timeout_from = %origins.drain_timeout,
            hook_timeout = %humantime::format_duration(config.hook_timeout),
            hook_timeout_from = %origins.hook_timeout,
            deadline = %humantime::format_duration(config.deadline()),
            "shutdown budget"
        );
        if let Some(path) = config.termination_log() {
            crate::report::install_panic_hook(path);
        }
        #[cfg(feature = "metrics")]
        crate::metrics::describe();
        let state = watch::Sender::new(State::Starting);
        let health = Health::new(state.subscribe());
        let lifecycle = Self {
            inner: Arc::new(Inner {
                config,
                state,
                state_now: AtomicU8::new(State::Starting as u8),
                trigger: OnceLock::new(),
                triggered: CancellationToken::new(),
                stop: CancellationToken::new(),
                cut: CancellationToken::new(),
                cut_fired: AtomicBool::new(false),
                forced: OnceLock::new(),
                force: CancellationToken::new(),
                hooks: Mutex::new(HookRegistry::default()),
                tasks: Arc::new(Tasks::default()),
                drain_holds: HoldSet::new(),
                readiness_holds: HoldSet::new(),
                exit_holds: HoldSet::new(),
                connections: ActivityCounter::new(),
                requests: ActivityCounter::new(),
                listeners: ActivityCounter::new(),
                driver_started: AtomicBool::new(false),
                signal_task: Mutex::new(None),
                watchdog_armed: AtomicBool::new(false),
                signals_logged: AtomicU64::new(0),
                report: watch::Sender::new(None),
                health,
                #[cfg(feature = "metrics")]
                state_since: Mutex::new(Instant::now()),
            }),
        };
        if std::process::id() == 1 {
            tracing::warn!(
                "running as PID 1: signals reach this process only through the handlers \
                 lameduck installs, and orphaned child processes are not reaped; run it under \
                 an init (tini, `docker run --init`) if it starts other programs"
            );
        }
        // A SIGTERM while the service is still loading must not be lost: as a PID
        // namespace's init the kernel drops any signal without a handler, and elsewhere
        // the default disposition would end the process without a report.
        if tokio::runtime::Handle::try_current().is_ok() {
            lifecycle.listen_for_signals();
        }
        lifecycle
    }

    /// The settings in force.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The health checks: register liveness, readiness and startup checks here; the admin
    /// endpoints (`/livez`, `/readyz`, `/startupz`) run them.
    ///
    /// ```
    /// # let lifecycle = lameduck::Lifecycle::builder().exit_process(false).build().unwrap();
    /// lifecycle.health().readiness("db", || async {
    ///     // db.ping().await
    ///     Ok::<(), std::io::Error>(())
    /// });
    /// ```
    pub fn health(&self) -> &Health {
        &self.inner.health
    }

    // ----- triggers -------------------------------------------------------------------

    /// Start shutdown with `reason`: for integrations that trigger on someone else's
    /// behalf (the admin `/shutdown` endpoint passes [`Reason::PreStop`]); an application
    /// calls [`shutdown`](Self::shutdown). Idempotent: the first trigger wins and is the
    /// recorded reason; later ones change nothing and return the same shutdown's reason.
    pub fn trigger(&self, reason: Reason) -> Trigger {
        let mut first = false;
        let (winner, _) = self.inner.trigger.get_or_init(|| {
            first = true;
            (reason, Instant::now())
        });
        if first {
            tracing::info!(reason = %winner, "shutdown triggered");
            self.inner.triggered.cancel();
        }
        Trigger {
            first,
            reason: winner.clone(),
        }
    }

    /// Start shutdown from the application (reason `api`).
    pub fn shutdown(&self) -> Trigger {
        self.trigger(Reason::Api)
    }

    /// The first trigger's reason, once shutdown has started.
    pub fn reason(&self) -> Option<Reason> {
        self.inner.trigger.get().map(|(reason, _)| reason.clone())
    }

    // ----- observation ---------------------------------------------------------------

    /// The current state.
    ///
    /// One atomic load, no lock: cheap enough to call on every request.
    pub fn state(&self) -> State {
        State::from_u8(self.inner.state_now.load(Ordering::Acquire))
    }

    /// Set the sampled metrics (in-flight requests, open connections, time in the current
    /// state, time since the trigger) from the lifecycle's counters now. A running
    /// lifecycle does so by itself at every state change and every
    /// [`SAMPLE_PERIOD`](crate::metrics::SAMPLE_PERIOD); an exporter calls it before it
    /// renders a scrape, so the scrape is current. See [`metrics`](crate::metrics) for the
    /// names. Feature `metrics`.
    ///
    /// ```
    /// # let lifecycle = lameduck::Lifecycle::builder().exit_process(false).build().unwrap();
    /// lifecycle.record_metrics(); // then render the recorder's output
    /// ```
    #[cfg(feature = "metrics")]
    pub fn record_metrics(&self) {
        let inner = &self.inner;
        // The state and its start together (see `Inner::set_state`).
        let since = inner
            .state_since
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let state = self.state();
        let since_trigger = match (state, inner.trigger.get()) {
            // From Stopping on the driver sets the shutdown's whole duration at the end;
            // the time since the trigger is sampled while it is under way.
            (State::Stopped, _) | (_, None) => None,
            (_, Some((_, at))) => Some(at.elapsed()),
        };
        crate::metrics::sample(
            inner.requests.active(),
            inner.connections.active(),
            state,
            since.elapsed(),
            since_trigger,
        );
    }

    /// A `watch` receiver of the state: it always holds the latest state, but one that is
    /// not looked at between two changes skips the first (use [`draining`](Self::draining),
    /// [`stopping`](Self::stopping) and the like to wait for a particular state).
    pub fn subscribe(&self) -> watch::Receiver<State> {
        self.inner.state.subscribe()
    }

    async fn reached(&self, state: State) {
        let mut rx = self.subscribe();
        // The sender lives as long as `self`, so this cannot fail.
        let _ = rx.wait_for(|s| *s >= state).await;
    }

    /// Resolves once the lifecycle is Ready — or already past it: a shutdown triggered
    /// during startup also resolves it, so check [`state`](Self::state) when it matters.
    pub async fn ready(&self) {
        self.reached(State::Ready).await
    }

    /// Resolves once shutdown has been triggered (Draining began).
    pub async fn draining(&self) {
        self.reached(State::Draining).await
    }

    /// Resolves once Stopping began: listeners close and task tokens are cancelled.
    pub async fn stopping(&self) {
        self.reached(State::Stopping).await
    }

    /// Resolves once everything is done or abandoned and the report is written (so
    /// [`report`](Self::report) returns it from then on).
    pub async fn stopped(&self) {
        self.reached(State::Stopped).await
    }

    /// A token cancelled when Stopping begins: servers stop accepting, long-lived
    /// responses (SSE, WebSocket) end themselves.
    pub fn stop_token(&self) -> CancellationToken {
        self.inner.stop.clone()
    }

    /// A token cancelled when the drain deadline (or the shutdown deadline) cuts whatever
    /// is still in flight: servers close the connections that remain.
    pub fn cut_token(&self) -> CancellationToken {
        self.inner.cut.clone()
    }

    /// Whether the cut has fired: from then on a server writes nothing more to its
    /// clients, and the AfterDrain hooks wait until every handler has returned or been
    /// dropped. One atomic load, no lock, unlike `cut_token().is_cancelled()`: servers
    /// look at it on every read and write of a connection.
    #[inline]
    pub fn is_cut(&self) -> bool {
        self.inner.cut_fired.load(Ordering::Acquire)
    }

    /// Open connections; Stopping waits until it is zero (bounded by `drain_timeout`).
    pub fn connections(&self) -> &ActivityCounter {
        &self.inner.connections
    }

    /// Listeners still accepting. A server counts each listener from the moment it serves
    /// until it has closed it at Stopping (having accepted what the kernel had queued), so
    /// that Stopping cannot end in between; they are not connections, so neither the
    /// report nor the metrics count them as such.
    pub fn listeners(&self) -> &ActivityCounter {
        &self.inner.listeners
    }

    /// In-flight requests; Stopping waits until it is zero (bounded by `drain_timeout`).
    pub fn requests(&self) -> &ActivityCounter {
        &self.inner.requests
    }

    /// The report, once the lifecycle has stopped.
    pub fn report(&self) -> Option<Report> {
        self.inner.report.borrow().clone()
    }

    // ----- registration --------------------------------------------------------------

    /// Run `f` once when `phase` begins, cut at the default hook timeout. Within a phase,
    /// hooks run one after another in reverse registration order (like `defer`), unless
    /// the phase was made concurrent with
    /// [`Builder::concurrent_hooks`](crate::Builder::concurrent_hooks). A hook that fails,
    /// panics or times out is recorded in the report; the others still run.
    ///
    /// ```
    /// # let lifecycle = lameduck::Lifecycle::builder().exit_process(false).build().unwrap();
    /// lifecycle.on_shutdown("close-db", lameduck::Phase::AfterDrain, || async {
    ///     // pool.close().await
    /// });
    /// ```
    pub fn on_shutdown<F, Fut>(&self, name: impl Into<String>, phase: Phase, f: F)
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future + Send + 'static,
        Fut::Output: HookResult,
    {
        self.add_hook(Hook::new(name, phase, f));
    }

    /// Register a [`Hook`] built with its own options.
    pub fn add_hook(&self, hook: Hook) {
        let mut registry = self.registry();
        if registry.phases_taken.contains(&hook.phase) {
            tracing::warn!(
                hook = %hook.name,
                phase = %hook.phase,
                "hook registered after its phase began; it will not run"
            );
            return;
        }
        registry.shutdown.push(hook);
    }

    /// Run `f` before Ready; readiness stays failing until it succeeds. A startup hook
    /// that fails or times out is retried with backoff (1 s, doubling, at most 30 s) until
    /// it succeeds or shutdown begins, so it should be safe to repeat (a warm-up, a
    /// connectivity check). Startup hooks run in registration order.
    ///
    /// ```
    /// # let lifecycle = lameduck::Lifecycle::builder().exit_process(false).build().unwrap();
    /// lifecycle.on_startup("warm-cache", || async { Ok::<(), std::io::Error>(()) });
    /// ```
    pub fn on_startup<F, Fut>(&self, name: impl Into<String>, f: F)
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future + Send + 'static,
        Fut::Output: HookResult,
    {
        let name = name.into();
        let mut registry = self.registry();
        if registry.startup_taken {
            tracing::warn!(hook = %name, "startup hook registered after startup; it will not run");
            return;
        }
        registry.startup.push(StartupHook::new(name, f));
    }

    pub(crate) fn registry_for_driver(&self) -> std::sync::MutexGuard<'_, HookRegistry> {
        self.registry()
    }

    fn registry(&self) -> std::sync::MutexGuard<'_, HookRegistry> {
        self.inner
            .hooks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Spawn tracked background work. `f` gets a token that is cancelled when Stopping
    /// begins; the task should then finish what it holds and return. Stopping waits for
    /// it until the drain deadline; a task still running then is aborted and named in the
    /// report, and so is one that fails or panics.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// # let lifecycle = lameduck::Lifecycle::builder().exit_process(false).build().unwrap();
    /// lifecycle.spawn("ticker", |cancel| async move {
    ///     let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
    ///     loop {
    ///         tokio::select! {
    ///             _ = cancel.cancelled() => break,
    ///             _ = tick.tick() => { /* work */ }
    ///         }
    ///     }
    /// });
    /// # }
    /// ```
    pub fn spawn<F, Fut>(&self, name: impl Into<String>, f: F)
    where
        F: FnOnce(CancellationToken) -> Fut,
        Fut: Future + Send + 'static,
        Fut::Output: HookResult,
    {
        let fut = f(self.inner.stop.child_token());
        self.inner
            .tasks
            .spawn(name.into(), fut, |_: Finished| {}, false);
    }

    /// Like [`spawn`](Self::spawn), for a task the service cannot live without: if it
    /// fails, panics or returns before shutdown began, shutdown is triggered with reason
    /// `task:NAME`.
    pub fn spawn_critical<F, Fut>(&self, name: impl Into<String>, f: F)
    where
        F: FnOnce(CancellationToken) -> Fut,
        Fut: Future + Send + 'static,
        Fut::Output: HookResult,
    {
        let fut = f(self.inner.stop.child_token());
        let lifecycle = self.clone();
        self.inner.tasks.spawn(
            name.into(),
            fut,
            move |finished| {
                if let Finished::Critical(name) = finished
                    && lifecycle.reason().is_none()
                {
                    tracing::error!(task = %name, "critical task ended; shutting down");
                    lifecycle.trigger(Reason::Task(name));
                }
            },
            true,
        );
    }

    /// Keep the lifecycle in Draining until the returned guard is dropped (bounded by the
    /// shutdown deadline): for work that must finish while the service is still serving.
    pub fn hold(&self, name: &str) -> Hold {
        self.inner.drain_holds.take(name)
    }

    /// Keep readiness failing (the lifecycle in Starting) until the returned guard is
    /// dropped: e.g. until a cache is loaded.
    ///
    /// Only startup is held: once the lifecycle is Ready, a new readiness hold changes
    /// nothing (a warning is logged); register a readiness check with
    /// [`health`](Self::health) for a condition that can come and go.
    pub fn hold_readiness(&self, name: &str) -> Hold {
        if self.state() != State::Starting {
            tracing::warn!(hold = name, state = %self.state(), "readiness hold taken after startup; it holds nothing");
        }
        self.inner.readiness_holds.take(name)
    }

    /// Keep [`run`](Self::run) from returning (and so the process from exiting) until the
    /// returned guard is dropped, bounded by the deadline: for a response that must reach
    /// its client, like `/shutdown`'s.
    pub fn hold_exit(&self, name: &str) -> Hold {
        self.inner.exit_holds.take(name)
    }

    // ----- driving -------------------------------------------------------------------

    /// Install the handlers of the configured signals and spawn the task that turns them
    /// into triggers, once. Needs a tokio runtime.
    fn listen_for_signals(&self) {
        let mut task = self
            .inner
            .signal_task
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let signals = self.inner.config.signals();
        if task.is_some() || signals.is_empty() {
            return;
        }
        match SignalListener::new(signals) {
            Ok(listener) => {
                let names: Vec<&str> = signals.iter().map(|s| s.name()).collect();
                tracing::info!(signals = ?names, "listening for shutdown signals");
                if self.inner.config.exit_process() {
                    crate::driver::arm_watchdog_on_first_signal(self);
                }
                *task = Some(tokio::spawn(crate::driver::listen_for_signals(
                    self.clone(),
                    listener,
                )));
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for signals; only other triggers will work");
            }
        }
    }

    /// Drive the lifecycle to the end and return the report: run startup hooks, turn Ready,
    /// listen for the configured signals, and when a trigger comes, run the shutdown
    /// sequence (docs/shutdown-timeline.md). The report is logged and written to the termination log
    /// before this returns.
    ///
    /// Any number of callers may `run` the same lifecycle; one sequence runs (on its own
    /// task, so dropping a caller does not stop it) and every caller gets the same report.
    ///
    /// The configured signals are listened to from the moment the lifecycle is built inside
    /// a tokio runtime (else from the first call of `run`): a signal that arrives while the
    /// service is still loading is a trigger like any other, and the shutdown it asked for
    /// proceeds as soon as `run` is called. Build the lifecycle first in `main`: before it
    /// exists, a SIGTERM has its default effect of ending the process without a report.
    pub async fn run(&self) -> Report {
        if !self.inner.driver_started.swap(true, Ordering::SeqCst) {
            // Built outside a runtime: listening starts here, before anything awaits, so
            // that no signal between this call and the driver's first poll is lost.
            self.listen_for_signals();
            if let Some(settings) = self.inner.config.sd_notify.clone() {
                crate::systemd::spawn(self, settings);
            }
            tokio::spawn(crate::driver::drive(self.clone()));
            #[cfg(feature = "metrics")]
            tokio::spawn(sample_metrics(self.clone()));
        }
        let mut rx = self.inner.report.subscribe();
        loop {
            if let Some(report) = rx.borrow_and_update().clone() {
                return report;
            }
            if rx.changed().await.is_err() {
                // Unreachable while `self` holds the sender; pend rather than invent a report.
                std::future::pending::<()>().await;
            }
        }
    }
}

/// Sample the gauges every [`SAMPLE_PERIOD`](crate::metrics::SAMPLE_PERIOD) until Stopped.
#[cfg(feature = "metrics")]
async fn sample_metrics(lifecycle: Lifecycle) {
    let mut states = lifecycle.subscribe();
    let mut tick = tokio::time::interval(crate::metrics::SAMPLE_PERIOD);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        lifecycle.record_metrics();
        if lifecycle.state() == State::Stopped {
            return;
        }
        tokio::select! {
            _ = tick.tick() => {}
            changed = states.changed() => if changed.is_err() { return },
        }
    }
}
