//! Health checks: named liveness, readiness and startup checks, each with a
//! timeout and a cache period, run single-flight; readiness and startup also carry the
//! lifecycle's own state as the built-in `lifecycle` check. No HTTP here: the admin router
//! of `lameduck-axum` turns a [`HealthReport`] into `/healthz`, `/readyz` and `/startupz`.

use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use futures_util::FutureExt;
use futures_util::future::{BoxFuture, Shared, join_all};
use tokio::sync::watch;
use tokio::time::Instant;

use crate::hooks::{HookResult, millis, panic_message};
use crate::state::State;

/// Default time a check may take before it counts as failed: 800 ms, under the kubelet's
/// default probe timeout of 1 s, so a slow dependency yields a 503 that names the check
/// instead of a probe timeout that names nothing.
pub const DEFAULT_CHECK_TIMEOUT: Duration = Duration::from_millis(800);

/// Default time a check's result is reused: 1 s. A probe storm (kubelet, load balancers,
/// an operator's `watch curl`) then costs the dependency at most one call a second.
pub const DEFAULT_CHECK_CACHE: Duration = Duration::from_secs(1);

/// The name of the built-in check that readiness and startup carry: it fails with the
/// state's name (`starting`, `draining`, ...) whenever the lifecycle is not Ready
/// (readiness) or is still Starting (startup). The name is reserved.
pub const LIFECYCLE_CHECK: &str = "lifecycle";

/// How often the driver re-runs failing startup checks before turning Ready.
const STARTUP_RETRY: Duration = Duration::from_millis(500);

/// What a check speaks for, which decides the endpoint that runs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CheckKind {
    /// The process is healthy; failure means "restart me" (`/livez`, `/healthz`). Keep
    /// these to what a restart fixes: a deadlock, a wedged event loop, not a database down.
    Liveness,
    /// The process can take traffic now (`/readyz`, `/ready`); failure takes it out of
    /// the load balancer without restarting it.
    Readiness,
    /// The process has finished starting (`/startupz`); the lifecycle stays in Starting
    /// (readiness failing) until every startup check passes.
    Startup,
}

impl CheckKind {
    /// Every kind.
    pub const ALL: [CheckKind; 3] = [Self::Liveness, Self::Readiness, Self::Startup];

    /// The kind's name in lower case.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Liveness => "liveness",
            Self::Readiness => "readiness",
            Self::Startup => "startup",
        }
    }
}

impl fmt::Display for CheckKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

type CheckFn = Box<dyn FnMut() -> BoxFuture<'static, Result<(), String>> + Send>;
/// A run's result; the error is shared by every waiter and the cache.
type Outcome = Result<(), Arc<str>>;
type Running = Shared<BoxFuture<'static, Outcome>>;

/// A health check, for when the defaults of [`Health::readiness`] (and its siblings) are
/// not enough: its own timeout or cache period.
///
/// ```
/// use std::time::Duration;
/// use lameduck::Check;
/// # let lifecycle = lameduck::Lifecycle::builder().exit_process(false).build().unwrap();
/// lifecycle.health().add(
///     Check::readiness("search-index", || async {
///         // index.ping().await
///         Ok::<(), std::io::Error>(())
///     })
///     .timeout(Duration::from_millis(300))
///     .cache_for(Duration::from_secs(5)),
/// );
/// ```
#[must_use = "a check does nothing until it is added with `Health::add`"]
pub struct Check {
    name: Arc<str>,
    kind: CheckKind,
    timeout: Duration,
    cache_for: Duration,
    run: CheckFn,
}

impl fmt::Debug for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Check")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("timeout", &self.timeout)
            .field("cache_for", &self.cache_for)
            .finish_non_exhaustive()
    }
}

impl Check {
    fn new<F, Fut>(name: impl Into<String>, kind: CheckKind, mut f: F) -> Self
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future + Send + 'static,
        Fut::Output: HookResult,
    {
        Self {
            name: Arc::from(name.into()),
            kind,
            timeout: DEFAULT_CHECK_TIMEOUT,
            cache_for: DEFAULT_CHECK_CACHE,
            run: Box::new(move || {
                let fut = f();
                Box::pin(async move { fut.await.into_result() })
            }),
        }
    }

    /// A liveness check named `name` that calls `f` for each run. `f`'s future returns
    /// `()` (always passes once it completes) or `Result<(), E: Display>`; it is cut at
    /// [`DEFAULT_CHECK_TIMEOUT`] and its result reused for [`DEFAULT_CHECK_CACHE`].
    ///
    /// The name appears in URLs (`/livez/NAME`), so keep it to letters, digits, `-`, `_`
    /// and `.`.
    pub fn liveness<F, Fut>(name: impl Into<String>, f: F) -> Self
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future + Send + 'static,
        Fut::Output: HookResult,
    {
        Self::new(name, CheckKind::Liveness, f)
    }

    /// A readiness check, as [`liveness`](Self::liveness) describes for liveness.
    pub fn readiness<F, Fut>(name: impl Into<String>, f: F) -> Self
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future + Send + 'static,
        Fut::Output: HookResult,
    {
        Self::new(name, CheckKind::Readiness, f)
    }

    /// A startup check, as [`liveness`](Self::liveness) describes for liveness.
    pub fn startup<F, Fut>(name: impl Into<String>, f: F) -> Self
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future + Send + 'static,
        Fut::Output: HookResult,
    {
        Self::new(name, CheckKind::Startup, f)
    }

    /// Fail a run that takes longer than `timeout` (default [`DEFAULT_CHECK_TIMEOUT`]).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Reuse a run's result, pass or fail, for `period` after it finished (default
    /// [`DEFAULT_CHECK_CACHE`]). Zero still runs the check once for all concurrent probes.
    pub fn cache_for(mut self, period: Duration) -> Self {
        self.cache_for = period;
        self
    }
}

/// A registered check and its single-flight slot.
struct Entry {
    name: Arc<str>,
    kind: CheckKind,
    timeout: Duration,
    cache_for: Duration,
    slot: Mutex<Slot>,
}

struct Slot {
    run: CheckFn,
    /// The last finished run, and when it finished.
    last: Option<(Outcome, Instant)>,
    /// The run in progress, which every probe that arrives meanwhile awaits.
    running: Option<Running>,
}

impl Entry {
    /// The check's result: cached if fresh, else the run in progress, else a new run.
    /// Returns the outcome and whether it came from the cache.
    async fn evaluate(self: &Arc<Self>) -> (Outcome, bool) {
        let running = {
            let mut slot = self.slot.lock().unwrap_or_else(PoisonError::into_inner);
            match &slot.running {
                Some(running) => running.clone(),
                None => {
                    if let Some((outcome, at)) = &slot.last
                        && at.elapsed() < self.cache_for
                    {
                        return (outcome.clone(), true);
                    }
                    let running = self.start(&mut slot);
                    slot.running = Some(running.clone());
                    running
                }
            }
        };
        (running.await, false)
    }

    /// Start a run on its own task: it finishes (or times out) and fills the cache even if
    /// every probe waiting for it goes away, and a panic in it is a failed check, not a
    /// failed probe. One task per run, not per probe.
    // Internal: a `tokio::sync::Mutex` held across the run was rejected: a probe that
    // gives up would cancel the run for everyone queued behind it.
    fn start(self: &Arc<Self>, slot: &mut Slot) -> Running {
        let made = std::panic::catch_unwind(AssertUnwindSafe(|| (slot.run)()));
        let entry = Arc::clone(self);
        let task = tokio::spawn(async move {
            let started = Instant::now();
            let outcome: Outcome = match made {
                Err(payload) => Err(panicked(payload.as_ref())),
                Ok(fut) => {
                    let run = AssertUnwindSafe(fut).catch_unwind();
                    match tokio::time::timeout(entry.timeout, run).await {
                        Ok(Ok(Ok(()))) => Ok(()),
                        Ok(Ok(Err(error))) => Err(Arc::from(error)),
                        Ok(Err(payload)) => Err(panicked(payload.as_ref())),
                        Err(_) => Err(Arc::from(format!(
                            "timed out after {}",
                            humantime::format_duration(entry.timeout)
                        ))),
                    }
                }
            };
            entry.finish(&outcome, started);
            outcome
        });
        async move {
            // Only a runtime shutting down cancels the task.
            task.await
                .unwrap_or_else(|_| Err(Arc::from("cancelled: the runtime is shutting down")))
        }
        .boxed()
        .shared()
    }

    fn finish(&self, outcome: &Outcome, started: Instant) {
        let took = started.elapsed();
        crate::metrics::check_ran(&self.name, self.kind.as_str(), outcome.is_ok(), took);
        let duration_ms = millis(took);
        let previous = {
            let mut slot = self.slot.lock().unwrap_or_else(PoisonError::into_inner);
            slot.running = None;
            slot.last.replace((outcome.clone(), Instant::now()))
        };
        // Failure details always go to the log, whatever the endpoints show.
        match outcome {
            Err(error) => tracing::warn!(
                check = %self.name,
                kind = %self.kind,
                duration_ms,
                error = %error,
                "health check failed"
            ),
            Ok(()) if matches!(previous, Some((Err(_), _))) => tracing::info!(
                check = %self.name,
                kind = %self.kind,
                duration_ms,
                "health check passes again"
            ),
            Ok(()) => {}
        }
    }
}

fn panicked(payload: &(dyn std::any::Any + Send)) -> Arc<str> {
    Arc::from(format!("panicked: {}", panic_message(payload)))
}

/// One check's line in a [`HealthReport`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CheckResult {
    /// The check's name ([`LIFECYCLE_CHECK`] for the built-in one).
    pub name: String,
    /// Whether it passed.
    pub ok: bool,
    /// Why it failed. For a registered check this may name hosts or credentials, so
    /// endpoints withhold it unless the application opts in; for the built-in
    /// `lifecycle` check it is the state's name, which is no secret.
    pub error: Option<String>,
    /// Whether the result was reused from a run that finished within the cache period.
    pub cached: bool,
    /// Whether this is the built-in `lifecycle` check.
    pub builtin: bool,
}

impl CheckResult {
    fn from_outcome(name: &str, (outcome, cached): (Outcome, bool)) -> Self {
        Self {
            name: name.to_owned(),
            ok: outcome.is_ok(),
            error: outcome.err().map(|e| e.to_string()),
            cached,
            builtin: false,
        }
    }
}

/// The outcome of every check of one kind, as an endpoint reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct HealthReport {
    /// The kind that was checked.
    pub kind: CheckKind,
    /// True when every check that ran passed (and so when none ran).
    pub ok: bool,
    /// Each check that ran: the built-in `lifecycle` check first, then the registered
    /// ones in registration order.
    pub checks: Vec<CheckResult>,
    /// Names asked to be excluded that match no check of this kind (likely a typo in a
    /// probe's `?exclude=`).
    pub unmatched_excludes: Vec<String>,
}

/// The health registry of a [`Lifecycle`](crate::Lifecycle), reached with
/// [`Lifecycle::health`](crate::Lifecycle::health).
///
/// Each check is run single-flight: however many probes arrive at once, one run is in
/// progress per check and they all await it; its result is reused for the cache period;
/// a run that outlasts its timeout fails, and the probes waiting for it are answered at
/// that timeout. Readiness also fails while the lifecycle is not Ready, and startup while
/// it is Starting (the built-in [`LIFECYCLE_CHECK`]); liveness has no such check, so it
/// keeps passing while the service drains.
///
/// Once shutdown has begun (Draining or later) readiness never passes, whatever a probe
/// excludes: [`check_excluding`](Self::check_excluding) keeps the failing `lifecycle`
/// check even when asked to leave it out, and [`check_named`](Self::check_named) (one
/// check, as `/readyz/NAME` asks) adds it. Excluding `lifecycle` is only honoured before
/// shutdown, e.g. while Starting.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use lameduck::CheckKind;
/// let lifecycle = lameduck::Lifecycle::builder().exit_process(false).build().unwrap();
/// lifecycle.health().readiness("db", || async {
///     // db.ping().await
///     Ok::<(), std::io::Error>(())
/// });
/// lifecycle.health().liveness("event-loop", || async {});
///
/// let report = lifecycle.health().check(CheckKind::Readiness).await;
/// assert!(!report.ok); // still Starting: `lifecycle` fails with "starting"
/// assert_eq!(report.checks[0].error.as_deref(), Some("starting"));
/// assert!(report.checks[1].ok); // db
/// assert!(lifecycle.health().check(CheckKind::Liveness).await.ok);
/// # }
/// ```
pub struct Health {
    // Internal: a copy-on-write list, so a probe takes the read lock only to clone an Arc;
    // writers are registrations, rare and early.
    checks: RwLock<Arc<[Arc<Entry>]>>,
    state: watch::Receiver<State>,
}

impl fmt::Debug for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let checks = self.snapshot();
        f.debug_struct("Health")
            .field(
                "checks",
                &checks
                    .iter()
                    .map(|e| format!("{}:{}", e.kind, e.name))
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Health {
    pub(crate) fn new(state: watch::Receiver<State>) -> Self {
        Self {
            checks: RwLock::new(Arc::from(Vec::new())),
            state,
        }
    }

    /// Register a liveness check with the default timeout and cache period.
    pub fn liveness<F, Fut>(&self, name: impl Into<String>, f: F)
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future + Send + 'static,
        Fut::Output: HookResult,
    {
        self.add(Check::liveness(name, f));
    }

    /// Register a readiness check with the default timeout and cache period.
    pub fn readiness<F, Fut>(&self, name: impl Into<String>, f: F)
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future + Send + 'static,
        Fut::Output: HookResult,
    {
        self.add(Check::readiness(name, f));
    }

    /// Register a startup check with the default timeout and cache period. The lifecycle
    /// turns Ready only once startup hooks have succeeded and every startup check passes
    /// (re-run every 500 ms until then).
    pub fn startup<F, Fut>(&self, name: impl Into<String>, f: F)
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future + Send + 'static,
        Fut::Output: HookResult,
    {
        self.add(Check::startup(name, f));
    }

    /// Register a [`Check`] built with its own options. A second check of the same kind
    /// and name, or one named [`LIFECYCLE_CHECK`], is refused with a warning in the log.
    pub fn add(&self, check: Check) {
        let Check {
            name,
            kind,
            timeout,
            cache_for,
            run,
        } = check;
        if &*name == LIFECYCLE_CHECK {
            tracing::warn!(check = %name, %kind, "check name is reserved; check not added");
            return;
        }
        if name.is_empty() || name.contains(['/', '?', '#']) || name.contains(char::is_whitespace) {
            tracing::warn!(check = %name, %kind, "check name cannot be used in a URL path");
        }
        let mut checks = self.checks.write().unwrap_or_else(PoisonError::into_inner);
        if checks.iter().any(|e| e.kind == kind && e.name == name) {
            tracing::warn!(check = %name, %kind, "a check of this kind and name exists; check not added");
            return;
        }
        let entry = Arc::new(Entry {
            name,
            kind,
            timeout,
            cache_for,
            slot: Mutex::new(Slot {
                run,
                last: None,
                running: None,
            }),
        });
        *checks = checks.iter().cloned().chain([entry]).collect();
    }

    /// The names of the registered checks of `kind`, in registration order (the built-in
    /// `lifecycle` check not included).
    #[cfg(test)]
    fn names(&self, kind: CheckKind) -> Vec<String> {
        self.snapshot()
            .iter()
            .filter(|e| e.kind == kind)
            .map(|e| e.name.to_string())
            .collect()
    }

    /// Run every check of `kind` (concurrently, each single-flight and cached) and the
    /// built-in `lifecycle` check where it applies.
    pub async fn check(&self, kind: CheckKind) -> HealthReport {
        self.check_excluding::<&str>(kind, &[]).await
    }

    /// Like [`check`](Self::check), leaving out the checks named in `exclude` (the
    /// built-in `lifecycle` check too, if named: an explicit choice of whoever probes).
    ///
    /// Except once shutdown has begun (Draining or later): then a readiness report always
    /// carries the failing `lifecycle` check, whatever `exclude` says, and never passes.
    /// A probe that excludes it (`/readyz?exclude=lifecycle`) would otherwise keep the
    /// pod in the load balancer through the lame duck.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use lameduck::{CheckKind, LIFECYCLE_CHECK};
    /// let lifecycle = lameduck::Lifecycle::builder()
    ///     .exit_process(false)
    ///     .no_signals()
    ///     .no_termination_log()
    ///     .build()
    ///     .unwrap();
    /// # let driver = lifecycle.clone();
    /// # let run = tokio::spawn(async move { driver.run().await });
    /// lifecycle.shutdown(); // on to Draining
    /// # let mut states = lifecycle.subscribe();
    /// # states.wait_for(|s| s.is_shutting_down()).await.unwrap();
    /// let report = lifecycle
    ///     .health()
    ///     .check_excluding(CheckKind::Readiness, &[LIFECYCLE_CHECK])
    ///     .await;
    /// assert!(!report.ok);
    /// assert_eq!(report.checks[0].name, LIFECYCLE_CHECK);
    /// # run.await.unwrap();
    /// # }
    /// ```
    pub async fn check_excluding<S: AsRef<str>>(
        &self,
        kind: CheckKind,
        exclude: &[S],
    ) -> HealthReport {
        let excluded = |name: &str| exclude.iter().any(|e| e.as_ref() == name);
        let entries = self.snapshot();
        let selected: Vec<&Arc<Entry>> = entries
            .iter()
            .filter(|e| e.kind == kind && !excluded(&e.name))
            .collect();
        let outcomes = join_all(selected.iter().map(|e| e.evaluate())).await;
        // The state once the checks have run: a drain that began meanwhile counts.
        let state = *self.state.borrow();
        let mut checks: Vec<CheckResult> = builtin(kind, state)
            .filter(|_| !excluded(LIFECYCLE_CHECK) || vetoes(kind, state))
            .into_iter()
            .collect();
        checks.extend(
            selected
                .iter()
                .zip(outcomes)
                .map(|(e, outcome)| CheckResult::from_outcome(&e.name, outcome)),
        );
        let known = |name: &str| {
            (name == LIFECYCLE_CHECK && kind != CheckKind::Liveness)
                || entries.iter().any(|e| e.kind == kind && &*e.name == name)
        };
        let mut unmatched_excludes: Vec<String> = Vec::new();
        for name in exclude.iter().map(AsRef::as_ref) {
            if !known(name) && !unmatched_excludes.iter().any(|u| u == name) {
                unmatched_excludes.push(name.to_owned());
            }
        }
        HealthReport {
            kind,
            ok: checks.iter().all(|c| c.ok),
            checks,
            unmatched_excludes,
        }
    }

    /// Run the one check of `kind` named `name` (which may be [`LIFECYCLE_CHECK`] for
    /// readiness and startup); `None` if there is no such check.
    ///
    /// This is the check's own result. What an endpoint for one check should answer is
    /// [`check_named`](Self::check_named), which also fails readiness once shutdown has
    /// begun.
    async fn check_one(&self, kind: CheckKind, name: &str) -> Option<CheckResult> {
        if name == LIFECYCLE_CHECK {
            return self.builtin(kind);
        }
        let entry = self
            .snapshot()
            .iter()
            .find(|e| e.kind == kind && &*e.name == name)
            .cloned()?;
        Some(CheckResult::from_outcome(
            &entry.name,
            entry.evaluate().await,
        ))
    }

    /// The one check of `kind` named `name` as an endpoint reports it (`/readyz/NAME`):
    /// `None` if there is no such check, else a report of that check alone, except that
    /// once shutdown has begun (Draining or later) a readiness report also carries the
    /// failing `lifecycle` check, first, and never passes, whichever check was named.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use lameduck::CheckKind;
    /// let lifecycle = lameduck::Lifecycle::builder()
    ///     .exit_process(false)
    ///     .no_signals()
    ///     .no_termination_log()
    ///     .build()
    ///     .unwrap();
    /// lifecycle.health().readiness("db", || async {});
    /// let report = lifecycle.health().check_named(CheckKind::Readiness, "db").await;
    /// assert!(report.is_some_and(|r| r.ok)); // Starting, but only `db` was asked for
    /// # let driver = lifecycle.clone();
    /// # let run = tokio::spawn(async move { driver.run().await });
    /// lifecycle.shutdown();
    /// # let mut states = lifecycle.subscribe();
    /// # states.wait_for(|s| s.is_shutting_down()).await.unwrap();
    /// let report = lifecycle.health().check_named(CheckKind::Readiness, "db").await;
    /// assert!(report.is_some_and(|r| !r.ok && r.checks.len() == 2)); // lifecycle, db
    /// # run.await.unwrap();
    /// # }
    /// ```
    pub async fn check_named(&self, kind: CheckKind, name: &str) -> Option<HealthReport> {
        let result = self.check_one(kind, name).await?;
        let mut checks = Vec::with_capacity(2);
        // The state once the check has run: a drain that began meanwhile counts.
        let state = *self.state.borrow();
        if !result.builtin
            && vetoes(kind, state)
            && let Some(builtin) = builtin(kind, state)
        {
            checks.push(builtin);
        }
        checks.push(result);
        Some(HealthReport {
            kind,
            ok: checks.iter().all(|c| c.ok),
            checks,
            unmatched_excludes: Vec::new(),
        })
    }

    /// Resolves once every startup check passes (at once if there is none). The driver
    /// awaits this before turning Ready.
    pub(crate) async fn startup_passed(&self) {
        loop {
            let entries = self.snapshot();
            let startup: Vec<_> = entries
                .iter()
                .filter(|e| e.kind == CheckKind::Startup)
                .collect();
            let outcomes = join_all(startup.iter().map(|e| e.evaluate())).await;
            if outcomes.iter().all(|(outcome, _)| outcome.is_ok()) {
                return;
            }
            tokio::time::sleep(STARTUP_RETRY).await;
        }
    }

    /// The built-in check of `kind`: the lifecycle's state, where it decides.
    fn builtin(&self, kind: CheckKind) -> Option<CheckResult> {
        builtin(kind, *self.state.borrow())
    }

    fn snapshot(&self) -> Arc<[Arc<Entry>]> {
        Arc::clone(&self.checks.read().unwrap_or_else(PoisonError::into_inner))
    }
}

/// Whether the built-in check overrides any exclusion: for readiness once shutdown has
/// begun (it then fails with the state's name). Probes may leave `lifecycle` out while
/// Starting (e.g. to see the other checks pass), never to stay in the load balancer while
/// the lame duck drains.
fn vetoes(kind: CheckKind, state: State) -> bool {
    kind == CheckKind::Readiness && state.is_shutting_down()
}

/// The built-in check of `kind` in `state`; liveness has none.
fn builtin(kind: CheckKind, state: State) -> Option<CheckResult> {
    let ok = match kind {
        CheckKind::Liveness => return None,
        CheckKind::Readiness => state == State::Ready,
        CheckKind::Startup => state != State::Starting,
    };
    Some(CheckResult {
        name: LIFECYCLE_CHECK.to_owned(),
        ok,
        error: (!ok).then(|| state.as_str().to_owned()),
        cached: false,
        builtin: true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn health() -> (watch::Sender<State>, Health) {
        let state = watch::Sender::new(State::Starting);
        let health = Health::new(state.subscribe());
        (state, health)
    }

    /// A check that counts its runs, sleeps `takes`, then passes or fails as `fail` says.
    fn counting(
        takes: Duration,
        fail: Arc<std::sync::atomic::AtomicBool>,
    ) -> (
        Arc<AtomicUsize>,
        impl FnMut() -> BoxFuture<'static, Result<(), String>> + Send + 'static,
    ) {
        let runs = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&runs);
        let f = move || {
            counter.fetch_add(1, Ordering::SeqCst);
            let fail = fail.load(Ordering::SeqCst);
            async move {
                tokio::time::sleep(takes).await;
                if fail {
                    Err("db unreachable".to_owned())
                } else {
                    Ok(())
                }
            }
            .boxed()
        };
        (runs, f)
    }

    fn never_fails() -> Arc<std::sync::atomic::AtomicBool> {
        Arc::new(std::sync::atomic::AtomicBool::new(false))
    }

    #[tokio::test(start_paused = true)]
    async fn concurrent_probes_run_a_slow_check_once() {
        let (_state, health) = health();
        let (runs, f) = counting(Duration::from_millis(500), never_fails());
        health.add(Check::liveness("slow", f));
        let started = Instant::now();
        let reports = join_all((0..200).map(|_| health.check(CheckKind::Liveness))).await;
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert_eq!(started.elapsed(), Duration::from_millis(500));
        assert!(reports.iter().all(|r| r.ok && !r.checks[0].cached));
    }

    #[tokio::test(start_paused = true)]
    async fn results_are_cached_for_the_cache_period() {
        let (_state, health) = health();
        let fail = never_fails();
        let (runs, f) = counting(Duration::from_millis(10), Arc::clone(&fail));
        health.add(Check::liveness("db", f).cache_for(Duration::from_secs(2)));

        let first = health.check_one(CheckKind::Liveness, "db").await;
        assert_eq!(first.map(|r| (r.ok, r.cached)), Some((true, false)));
        fail.store(true, Ordering::SeqCst);
        tokio::time::advance(Duration::from_millis(1900)).await;
        let cached = health.check_one(CheckKind::Liveness, "db").await;
        assert_eq!(cached.map(|r| (r.ok, r.cached)), Some((true, true)));
        assert_eq!(runs.load(Ordering::SeqCst), 1);

        tokio::time::advance(Duration::from_millis(200)).await;
        let fresh = health.check_one(CheckKind::Liveness, "db").await;
        assert_eq!(
            fresh.map(|r| (r.ok, r.cached, r.error)),
            Some((false, false, Some("db unreachable".to_owned())))
        );
        assert_eq!(runs.load(Ordering::SeqCst), 2);
        // Failures are cached too: a dependency that is down is not hammered.
        let again = health.check(CheckKind::Liveness).await;
        assert!(!again.ok && again.checks[0].cached);
        assert_eq!(runs.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn zero_cache_period_runs_every_time_but_still_single_flight() {
        let (_state, health) = health();
        let (runs, f) = counting(Duration::from_millis(100), never_fails());
        health.add(Check::liveness("db", f).cache_for(Duration::ZERO));
        join_all((0..10).map(|_| health.check(CheckKind::Liveness))).await;
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        health.check(CheckKind::Liveness).await;
        assert_eq!(runs.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_check_slower_than_its_timeout_fails_at_the_timeout() {
        let (_state, health) = health();
        let (_runs, f) = counting(Duration::from_secs(60), never_fails());
        health.add(Check::readiness("hung", f).timeout(Duration::from_millis(300)));
        let started = Instant::now();
        let result = health.check_one(CheckKind::Readiness, "hung").await;
        assert_eq!(started.elapsed(), Duration::from_millis(300));
        let result = result.expect("the check exists");
        assert!(!result.ok);
        assert_eq!(result.error.as_deref(), Some("timed out after 300ms"));
    }

    #[tokio::test(start_paused = true)]
    async fn default_timeout_is_under_the_kubelet_probe_timeout() {
        assert!(DEFAULT_CHECK_TIMEOUT < Duration::from_secs(1));
        let (_state, health) = health();
        health.readiness("hung", std::future::pending::<()>);
        let started = Instant::now();
        let report = health.check(CheckKind::Readiness).await;
        assert_eq!(started.elapsed(), DEFAULT_CHECK_TIMEOUT);
        assert!(!report.checks[1].ok);
    }

    #[tokio::test(start_paused = true)]
    async fn a_panicking_check_fails_and_is_run_again_later() {
        let (_state, health) = health();
        let runs = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&runs);
        health.liveness("boom", move || {
            counter.fetch_add(1, Ordering::SeqCst);
            async {
                panic!("check exploded");
                #[allow(unreachable_code)]
                ()
            }
        });
        let result = health.check_one(CheckKind::Liveness, "boom").await;
        assert_eq!(
            result.and_then(|r| r.error),
            Some("panicked: check exploded".to_owned())
        );
        tokio::time::advance(DEFAULT_CHECK_CACHE).await;
        health.check(CheckKind::Liveness).await;
        assert_eq!(runs.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn the_lifecycle_check_follows_the_state() {
        let (state, health) = health();
        let expect = |report: &HealthReport| -> (bool, Option<String>) {
            let builtin = &report.checks[0];
            assert!(builtin.builtin);
            assert_eq!(builtin.name, LIFECYCLE_CHECK);
            (report.ok, builtin.error.clone())
        };
        let readiness = health.check(CheckKind::Readiness).await;
        assert_eq!(expect(&readiness), (false, Some("starting".into())));
        let startup = health.check(CheckKind::Startup).await;
        assert_eq!(expect(&startup), (false, Some("starting".into())));

        state.send_replace(State::Ready);
        assert_eq!(
            expect(&health.check(CheckKind::Readiness).await),
            (true, None)
        );
        assert_eq!(
            expect(&health.check(CheckKind::Startup).await),
            (true, None)
        );

        for (s, name) in [
            (State::Draining, "draining"),
            (State::Stopping, "stopping"),
            (State::Stopped, "stopped"),
        ] {
            state.send_replace(s);
            let readiness = health.check(CheckKind::Readiness).await;
            assert_eq!(expect(&readiness), (false, Some(name.into())));
            assert!(health.check(CheckKind::Startup).await.ok);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn liveness_passes_in_every_state() {
        let (state, health) = health();
        health.liveness("loop", || async {});
        for s in [
            State::Starting,
            State::Ready,
            State::Draining,
            State::Stopping,
            State::Stopped,
        ] {
            state.send_replace(s);
            let report = health.check(CheckKind::Liveness).await;
            assert!(report.ok, "liveness failed in {s}");
            assert_eq!(report.checks.len(), 1);
            assert_eq!(report.checks[0].name, "loop");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn readiness_needs_the_state_and_every_check() {
        let (state, health) = health();
        state.send_replace(State::Ready);
        health.readiness("db", || async { Err::<(), _>("refused") });
        health.readiness("cache", || async {});
        let report = health.check(CheckKind::Readiness).await;
        assert!(!report.ok);
        let names: Vec<_> = report.checks.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["lifecycle", "db", "cache"]);
        assert_eq!(report.checks[1].error.as_deref(), Some("refused"));

        let report = health
            .check_excluding(CheckKind::Readiness, &["db", "nope"])
            .await;
        assert!(report.ok);
        assert_eq!(report.checks.len(), 2);
        assert_eq!(report.unmatched_excludes, ["nope"]);
    }

    #[tokio::test(start_paused = true)]
    async fn readiness_fails_once_shutting_down_whatever_is_excluded() {
        let (state, health) = health();
        health.readiness("db", || async {});
        health.readiness("cache", || async {});
        let every = [LIFECYCLE_CHECK, "db", "cache"];
        state.send_replace(State::Ready);
        assert!(
            health
                .check_excluding(CheckKind::Readiness, &[LIFECYCLE_CHECK])
                .await
                .ok
        );
        assert!(
            health
                .check_excluding(CheckKind::Readiness, &every)
                .await
                .ok
        );

        for s in [State::Draining, State::Stopping, State::Stopped] {
            state.send_replace(s);
            for exclude in [&[LIFECYCLE_CHECK][..], &every[..], &["db"][..], &[][..]] {
                let report = health.check_excluding(CheckKind::Readiness, exclude).await;
                assert!(!report.ok, "readiness passed in {s} excluding {exclude:?}");
                // The built-in check is listed, failing with the state's name.
                let builtin = &report.checks[0];
                assert!(builtin.builtin && !builtin.ok, "{report:?}");
                assert_eq!(builtin.error.as_deref(), Some(s.as_str()));
                assert!(report.unmatched_excludes.is_empty(), "{report:?}");
            }
            // One check by name: the check, after the failing lifecycle check.
            for name in ["db", "cache"] {
                let report = health.check_named(CheckKind::Readiness, name).await;
                let report = report.expect("the check exists");
                assert!(!report.ok, "/readyz/{name} passed in {s}");
                let names: Vec<_> = report.checks.iter().map(|c| c.name.as_str()).collect();
                assert_eq!(names, [LIFECYCLE_CHECK, name]);
                assert!(report.checks[1].ok, "the check itself still passes");
            }
            let report = health
                .check_named(CheckKind::Readiness, LIFECYCLE_CHECK)
                .await;
            assert!(report.is_some_and(|r| !r.ok && r.checks.len() == 1));
            // Startup and liveness are not affected.
            assert!(health.check_excluding(CheckKind::Startup, &every).await.ok);
            assert!(
                health
                    .check_named(CheckKind::Readiness, "nope")
                    .await
                    .is_none()
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn check_named_is_the_one_check_before_shutdown() {
        let (state, health) = health();
        health.readiness("db", || async {});
        health.readiness("down", || async { Err::<(), _>("refused") });
        for s in [State::Starting, State::Ready] {
            state.send_replace(s);
            let db = health.check_named(CheckKind::Readiness, "db").await;
            assert!(db.is_some_and(|r| r.ok && r.checks.len() == 1), "{s}");
            let down = health.check_named(CheckKind::Readiness, "down").await;
            assert!(down.is_some_and(|r| !r.ok && r.checks.len() == 1), "{s}");
        }
        // Leaving `lifecycle` out while Starting is still the prober's choice.
        state.send_replace(State::Starting);
        let report = health
            .check_excluding(CheckKind::Readiness, &[LIFECYCLE_CHECK, "down"])
            .await;
        assert!(report.ok, "{report:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn check_one_finds_by_kind_and_name() {
        let (_state, health) = health();
        health.readiness("db", || async {});
        assert!(health.check_one(CheckKind::Readiness, "db").await.is_some());
        assert!(health.check_one(CheckKind::Liveness, "db").await.is_none());
        assert!(health.check_one(CheckKind::Readiness, "x").await.is_none());
        let builtin = health
            .check_one(CheckKind::Readiness, LIFECYCLE_CHECK)
            .await;
        assert_eq!(builtin.map(|c| c.builtin), Some(true));
        assert!(
            health
                .check_one(CheckKind::Liveness, LIFECYCLE_CHECK)
                .await
                .is_none()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn reserved_and_duplicate_names_are_refused() {
        let (_state, health) = health();
        health.readiness(LIFECYCLE_CHECK, || async {});
        health.readiness("db", || async {});
        health.readiness("db", || async { Err::<(), _>("second") });
        health.liveness("db", || async {});
        assert_eq!(health.names(CheckKind::Readiness), ["db"]);
        assert_eq!(health.names(CheckKind::Liveness), ["db"]);
        assert!(
            health
                .check_one(CheckKind::Readiness, "db")
                .await
                .is_some_and(|c| c.ok)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn startup_passed_waits_for_every_startup_check() {
        let (_state, health) = health();
        let fail = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let (_runs, f) = counting(Duration::ZERO, Arc::clone(&fail));
        health.add(Check::startup("migrations", f).cache_for(Duration::ZERO));
        let mut passed = tokio_test::task::spawn(health.startup_passed());
        tokio_test::assert_pending!(passed.poll());
        tokio::time::sleep(Duration::from_secs(3)).await;
        tokio_test::assert_pending!(passed.poll());
        fail.store(false, Ordering::SeqCst);
        tokio::time::sleep(STARTUP_RETRY * 2).await;
        // Let the spawned run finish and the waiter see it.
        for _ in 0..10 {
            if passed.poll().is_ready() {
                return;
            }
            tokio::task::yield_now().await;
        }
        panic!("startup_passed did not resolve once the check passed");
    }

    #[tokio::test(start_paused = true)]
    async fn the_lifecycle_turns_ready_once_startup_checks_pass() {
        let lifecycle = crate::Lifecycle::builder()
            .exit_process(false)
            .no_termination_log()
            .no_signals()
            .build()
            .expect("a valid configuration");
        let fail = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let (_runs, f) = counting(Duration::from_millis(10), Arc::clone(&fail));
        lifecycle.health().add(Check::startup("migrations", f));
        let driver = lifecycle.clone();
        let run = tokio::spawn(async move { driver.run().await });

        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(lifecycle.state(), State::Starting);
        assert!(!lifecycle.health().check(CheckKind::Startup).await.ok);
        fail.store(false, Ordering::SeqCst);
        // Within a cache period and a retry interval.
        tokio::time::timeout(DEFAULT_CHECK_CACHE + STARTUP_RETRY * 2, lifecycle.ready())
            .await
            .expect("Ready once the startup check passes");
        assert_eq!(lifecycle.state(), State::Ready);
        assert!(lifecycle.health().check(CheckKind::Startup).await.ok);

        lifecycle.shutdown();
        let report = run.await.expect("run does not panic");
        assert!(report.clean);
    }

    #[tokio::test(start_paused = true)]
    async fn startup_passed_is_immediate_without_startup_checks() {
        let (_state, health) = health();
        health.readiness("db", std::future::pending::<()>);
        let mut passed = tokio_test::task::spawn(health.startup_passed());
        tokio_test::assert_ready!(passed.poll());
    }
}
