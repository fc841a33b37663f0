//! Named async hooks: shutdown hooks bound to a phase, and startup hooks.

use std::fmt;
use std::future::Future;
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio::time::Instant;
use tracing::Instrument;

/// When a shutdown hook runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// As Draining begins (the trigger): e.g. deregister from service discovery. Stopping
    /// waits for these hooks as it waits for holds.
    Draining,
    /// As Stopping begins (listeners closed, task tokens cancelled): e.g. stop consumers.
    /// They run while in-flight requests drain.
    Stopping,
    /// Once in-flight requests and tracked tasks are done (or cut): e.g. flush buffers,
    /// persist state, close database pools.
    AfterDrain,
}

impl Phase {
    /// Every phase, in the order they run.
    pub const ALL: [Phase; 3] = [Phase::Draining, Phase::Stopping, Phase::AfterDrain];

    /// The phase's name as written in the report.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Draining => "draining",
            Self::Stopping => "stopping",
            Self::AfterDrain => "after_drain",
        }
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a hook's or a task's future may return: `()`, or a `Result` whose error is
/// recorded (by its `Display`) in the report.
pub trait HookResult: Send + 'static {
    /// The failure, if any, as text.
    fn into_result(self) -> Result<(), String>;
}

impl HookResult for () {
    fn into_result(self) -> Result<(), String> {
        Ok(())
    }
}

impl<E: fmt::Display + Send + 'static> HookResult for Result<(), E> {
    fn into_result(self) -> Result<(), String> {
        self.map_err(|e| e.to_string())
    }
}

type HookFuture = BoxFuture<'static, Result<(), String>>;

/// A shutdown hook, for when the defaults of
/// [`Lifecycle::on_shutdown`](crate::Lifecycle::on_shutdown) are not enough.
///
/// ```
/// use std::time::Duration;
/// use lameduck::{Hook, Phase};
/// # let lifecycle = lameduck::Lifecycle::builder().exit_process(false).build().unwrap();
/// lifecycle.add_hook(
///     Hook::new("persist-queue", Phase::AfterDrain, || async {
///         // write what is still queued to disk
///         Ok::<(), std::io::Error>(())
///     })
///     .timeout(Duration::from_secs(10)),
/// );
/// ```
#[must_use = "a hook does nothing until it is added with `Lifecycle::add_hook`"]
pub struct Hook {
    pub(crate) name: String,
    pub(crate) phase: Phase,
    pub(crate) timeout: Option<Duration>,
    pub(crate) run: Box<dyn FnOnce() -> HookFuture + Send>,
    /// The span current where the hook was made, which it runs within.
    pub(crate) span: tracing::Span,
}

impl fmt::Debug for Hook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hook")
            .field("name", &self.name)
            .field("phase", &self.phase)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Hook {
    /// A hook named `name` that runs `f` once, in `phase`.
    pub fn new<F, Fut>(name: impl Into<String>, phase: Phase, f: F) -> Self
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future + Send + 'static,
        Fut::Output: HookResult,
    {
        Self {
            name: name.into(),
            phase,
            timeout: None,
            run: Box::new(move || Box::pin(async move { f().await.into_result() })),
            span: tracing::Span::current(),
        }
    }

    /// Cut the hook after `timeout` instead of the lifecycle's default hook timeout.
    /// At most [`MAX_HOOK_TIMEOUT`](crate::MAX_HOOK_TIMEOUT) (24 h): a longer timeout is
    /// capped at it, with a warning in the log (a hook cannot fail to be added, so this is
    /// not an error; a shutdown hook ends at the shutdown deadline long before anyway).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        let max = crate::MAX_HOOK_TIMEOUT;
        if timeout > max {
            tracing::warn!(
                hook = %self.name,
                timeout = ?timeout,
                max = %humantime::format_duration(max),
                "hook timeout is longer than the maximum; capped"
            );
        }
        self.timeout = Some(timeout.min(max));
        self
    }
}

/// A startup hook: runs before Ready and keeps readiness failing until it succeeds.
pub(crate) struct StartupHook {
    pub(crate) name: String,
    pub(crate) timeout: Option<Duration>,
    pub(crate) run: Box<dyn FnMut() -> HookFuture + Send>,
    /// The span current where the hook was registered, which it runs within.
    pub(crate) span: tracing::Span,
}

impl StartupHook {
    pub(crate) fn new<F, Fut>(name: String, mut f: F) -> Self
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future + Send + 'static,
        Fut::Output: HookResult,
    {
        Self {
            name,
            timeout: None,
            run: Box::new(move || {
                let fut = f();
                Box::pin(async move { fut.await.into_result() })
            }),
            span: tracing::Span::current(),
        }
    }
}

/// How a hook ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HookOutcome {
    /// It returned successfully.
    Ok,
    /// It returned an error.
    Failed,
    /// It panicked.
    Panicked,
    /// It was cut at its timeout.
    TimedOut,
    /// Its phase ended first, so it was cut or never started: the shutdown deadline, a
    /// forced exit, or the end of the time its phase could have without taking the
    /// AfterDrain hooks' timeouts (the budget is planned from the deadline backwards).
    Abandoned,
}

impl HookOutcome {
    /// The outcome's name as written in the report.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Failed => "failed",
            Self::Panicked => "panicked",
            Self::TimedOut => "timed_out",
            Self::Abandoned => "abandoned",
        }
    }
}

/// One hook's line in the [`Report`](crate::Report).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct HookReport {
    /// The hook's name.
    pub name: String,
    /// The phase it belongs to (`"startup"` for startup hooks).
    pub phase: &'static str,
    /// How it ended.
    pub outcome: HookOutcome,
    /// How long it ran: for a hook abandoned while it ran, until it was abandoned; 0 for
    /// one that never began (its phase never came).
    pub duration_ms: u64,
    /// The error or panic message, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl HookReport {
    pub(crate) fn abandoned(name: String, phase: &'static str) -> Self {
        Self {
            name,
            phase,
            outcome: HookOutcome::Abandoned,
            duration_ms: 0,
            error: None,
        }
    }
}

/// Run one hook in its own task (so a panic is caught and the others still run), cut at
/// its timeout or at `deadline`, whichever comes first.
pub(crate) async fn run_hook(
    registered_in: &tracing::Span,
    name: String,
    phase: &'static str,
    run: HookFuture,
    timeout: Duration,
    deadline: Instant,
) -> HookReport {
    let started = Instant::now();
    // Not `started + timeout`: a timeout too long for the clock means "no timeout of its
    // own", not a panic that leaves the phase (or readiness) stuck.
    let own_limit = crate::clock::deadline_after(started, timeout);
    let limit = own_limit.min(deadline);
    // Aborted when this future is dropped (a trigger during startup, the deadline, a
    // forced exit), so a hook that is given up on does not go on running.
    let span = hook_span(registered_in, &name, phase);
    let mut handle = AbortOnDrop(tokio::spawn(run.instrument(span.clone())));
    let (outcome, error) = match tokio::time::timeout_at(limit, &mut handle.0).await {
        Ok(Ok(Ok(()))) => (HookOutcome::Ok, None),
        Ok(Ok(Err(error))) => (HookOutcome::Failed, Some(error)),
        Ok(Err(join_error)) => match join_error.try_into_panic() {
            Ok(payload) => (HookOutcome::Panicked, Some(panic_message(payload.as_ref()))),
            Err(_) => (HookOutcome::Abandoned, Some("cancelled".to_owned())),
        },
        Err(_) => {
            handle.0.abort();
            if deadline < own_limit {
                (
                    HookOutcome::Abandoned,
                    Some("its phase ended: the shutdown deadline, or the time kept for the AfterDrain hooks".into()),
                )
            } else {
                (
                    HookOutcome::TimedOut,
                    Some(format!(
                        "timed out after {}",
                        humantime::format_duration(timeout)
                    )),
                )
            }
        }
    };
    let took = started.elapsed();
    let duration_ms = millis(took);
    crate::metrics::hook_ran(&name, phase, outcome, took);
    span.in_scope(|| match outcome {
        HookOutcome::Ok => tracing::info!(hook = %name, phase, duration_ms, "hook finished"),
        _ => tracing::warn!(
            hook = %name,
            phase,
            duration_ms,
            outcome = outcome.as_str(),
            error = error.as_deref().unwrap_or(""),
            "hook did not succeed"
        ),
    });
    HookReport {
        name,
        phase,
        outcome,
        duration_ms,
        error,
    }
}

/// The `hook` span a hook runs in: a child of the span that was current where the hook
/// was registered, when there was one, else of the shutdown's state span (the span
/// current here), which it then follows from.
fn hook_span(registered_in: &tracing::Span, name: &str, phase: &'static str) -> tracing::Span {
    if registered_in.is_none() {
        return tracing::info_span!("hook", hook = %name, phase = %phase);
    }
    let span = tracing::info_span!(parent: registered_in, "hook", hook = %name, phase = %phase);
    span.follows_from(tracing::Span::current());
    span
}

struct AbortOnDrop<T>(tokio::task::JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".to_owned()
    }
}

pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn boxed<F: Future<Output = Result<(), String>> + Send + 'static>(f: F) -> HookFuture {
        Box::pin(f)
    }

    #[tokio::test(start_paused = true)]
    async fn outcomes() {
        let far = Instant::now() + Duration::from_secs(3600);
        let t = Duration::from_secs(1);
        let ok = run_hook(
            &tracing::Span::none(),
            "ok".into(),
            "stopping",
            boxed(async { Ok(()) }),
            t,
            far,
        )
        .await;
        assert_eq!(ok.outcome, HookOutcome::Ok);
        let failed = run_hook(
            &tracing::Span::none(),
            "f".into(),
            "stopping",
            boxed(async { Err("boom".into()) }),
            t,
            far,
        )
        .await;
        assert_eq!(failed.outcome, HookOutcome::Failed);
        assert_eq!(failed.error.as_deref(), Some("boom"));
        let panicked = run_hook(
            &tracing::Span::none(),
            "p".into(),
            "stopping",
            boxed(async { panic!("hook exploded") }),
            t,
            far,
        )
        .await;
        assert_eq!(panicked.outcome, HookOutcome::Panicked);
        assert_eq!(panicked.error.as_deref(), Some("hook exploded"));
        let started = Instant::now();
        let hung = run_hook(
            &tracing::Span::none(),
            "h".into(),
            "stopping",
            boxed(std::future::pending()),
            t,
            far,
        )
        .await;
        assert_eq!(hung.outcome, HookOutcome::TimedOut);
        assert_eq!(started.elapsed(), t);
        let started = Instant::now();
        let cut = run_hook(
            &tracing::Span::none(),
            "d".into(),
            "stopping",
            boxed(std::future::pending()),
            t,
            Instant::now() + Duration::from_millis(300),
        )
        .await;
        assert_eq!(cut.outcome, HookOutcome::Abandoned);
        assert_eq!(started.elapsed(), Duration::from_millis(300));
    }

    /// A timeout the clock cannot add (`LAMEDUCK_HOOK_TIMEOUT=500000000000y` before it was
    /// bounded) runs the hook as if it had none, instead of panicking the driver.
    #[tokio::test(start_paused = true)]
    async fn a_timeout_beyond_the_clock_does_not_panic() {
        let far = Instant::now() + Duration::from_secs(3600);
        for timeout in [
            Duration::MAX,
            Duration::from_secs(500_000_000_000 * 31_557_600),
        ] {
            let ok = run_hook(
                &tracing::Span::none(),
                "ok".into(),
                "startup",
                boxed(async { Ok(()) }),
                timeout,
                far,
            )
            .await;
            assert_eq!(ok.outcome, HookOutcome::Ok);
            let started = Instant::now();
            let cut = run_hook(
                &tracing::Span::none(),
                "d".into(),
                "stopping",
                boxed(std::future::pending()),
                timeout,
                Instant::now() + Duration::from_millis(300),
            )
            .await;
            assert_eq!(cut.outcome, HookOutcome::Abandoned);
            assert_eq!(started.elapsed(), Duration::from_millis(300));
        }
    }

    #[test]
    fn timeouts_given_in_code_are_capped() {
        let hook = |timeout| Hook::new("h", Phase::Stopping, || async {}).timeout(timeout);
        assert_eq!(hook(Duration::MAX).timeout, Some(crate::MAX_HOOK_TIMEOUT));
        assert_eq!(
            hook(crate::MAX_HOOK_TIMEOUT + Duration::from_nanos(1)).timeout,
            Some(crate::MAX_HOOK_TIMEOUT)
        );
        assert_eq!(
            hook(crate::MAX_HOOK_TIMEOUT).timeout,
            Some(crate::MAX_HOOK_TIMEOUT)
        );
        assert_eq!(
            hook(Duration::from_secs(10)).timeout,
            Some(Duration::from_secs(10))
        );
    }
}
