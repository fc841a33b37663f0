//! The load run: workers, the shared pacer, the stop conditions.

use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::config::{LoadConfig, RequestTemplate};
use crate::exchange::{Conn, Exchange, connect, exchange};
use crate::report::{Class, LoadReport, Recorder};

/// How often a request given back unwritten ([`Class::NotSent`]) is retried, each time on
/// a new connection, before the worker gives up on that request slot.
const MAX_RESENDS: u32 = 3;

/// How often the `until_refused` condition is checked.
const REFUSED_CHECK: Duration = Duration::from_millis(50);

/// Runs load as `config` says until its duration has passed, `stop` completes, (with
/// `until_refused`) the target is gone, or (with `new_connections_until`) every worker has
/// left — whichever comes first — then waits for the requests still in flight (each
/// bounded by the request timeout) and reports.
///
/// Must be called within a Tokio runtime: workers are spawned tasks (a multi-threaded
/// runtime spreads them over its threads; `lameduck simulate` runs them on one). If the
/// returned future is dropped, the workers stop taking new requests.
///
/// ```no_run
/// # async fn f() -> Result<(), lameduck_load::ConfigError> {
/// use std::time::Duration;
/// let mut config = lameduck_load::LoadConfig::new("http://127.0.0.1:8080/")?;
/// config.duration = None; // until `stop`
/// let report = lameduck_load::run(config, tokio::time::sleep(Duration::from_secs(2))).await;
/// assert_eq!(report.failures(), 0, "{report}");
/// # Ok(()) }
/// ```
pub async fn run(config: LoadConfig, stop: impl Future<Output = ()>) -> LoadReport {
    run_from(config, stop, Instant::now()).await
}

/// [`run`] with a time zero the caller chose: `start` is the run's start for everything
/// the report measures from it — [`FailureAt::at_ms`](crate::FailureAt::at_ms), the
/// timeline's seconds, `elapsed_ms` — and for `config.duration` (the run ends at
/// `start + duration`). The caller can then place its own events on the same clock: an
/// event at instant `t` is at `(t - start).as_millis()` in the report.
///
/// `start` is usually `Instant::now()` taken just before the call, kept to measure the
/// caller's events from. If it is in the past, the first requests go out at once (missed
/// slots are skipped, not sent as a burst), and nothing is reported before the call; if it
/// is in the future, the first request waits for it. (With a Tokio runtime's clock, pass
/// [`tokio::time::Instant::into_std`].)
///
/// ```no_run
/// # async fn f() -> Result<(), lameduck_load::ConfigError> {
/// use std::time::{Duration, Instant};
/// let config = lameduck_load::LoadConfig::new("http://127.0.0.1:8080/")?;
/// let start = Instant::now();
/// let load = tokio::spawn(lameduck_load::run_from(config, std::future::pending(), start));
/// tokio::time::sleep(Duration::from_secs(3)).await;
/// let trigger_ms = start.elapsed().as_millis();
/// // ... stop the service here ...
/// let report = load.await.expect("load run");
/// let after = report.failures_at.iter().filter(|f| u128::from(f.at_ms) >= trigger_ms);
/// println!("{} failures after the trigger", after.count());
/// # Ok(()) }
/// ```
pub async fn run_from(
    config: LoadConfig,
    stop: impl Future<Output = ()>,
    start: Instant,
) -> LoadReport {
    let token = CancellationToken::new();
    let _stop_workers_on_drop = token.clone().drop_guard();
    let workers = config.connections.max(1);
    let shared = Arc::new(Shared {
        template: config.template(),
        start,
        deadline: config.duration.map(|d| start + d),
        stop: token.clone(),
        pacer: Pacer::new(start, config.rate),
        refused_since: AtomicU64::new(0),
        staying: AtomicUsize::new(workers),
        all_left: CancellationToken::new(),
        config,
    });

    let workers: Vec<_> = (0..workers)
        .map(|_| tokio::spawn(worker(Arc::clone(&shared))))
        .collect();

    let duration = until(shared.deadline);
    tokio::select! {
        () = stop => {}
        () = duration => {}
        () = shared.target_gone() => {}
        () = shared.all_left.cancelled() => {}
    }
    token.cancel();

    let mut all = Recorder::default();
    let mut panics = Vec::new();
    for worker in workers {
        match worker.await {
            Ok(recorder) => all.merge(recorder),
            Err(e) => panics.push(format!("worker: {e}")),
        }
    }
    let config = &shared.config;
    let mut report = LoadReport {
        url: config.target.url().to_owned(),
        method: config.method.to_string(),
        connections: config.connections.max(1),
        rate: config.rate,
        elapsed_ms: u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX),
        ..LoadReport::default()
    };
    all.finish(&mut report);
    report.errors.extend(panics);
    report
}

struct Shared {
    config: LoadConfig,
    template: RequestTemplate,
    start: Instant,
    deadline: Option<Instant>,
    stop: CancellationToken,
    pacer: Option<Pacer>,
    /// Milliseconds since `start`, plus one, of the first refused connect since the last
    /// sign of life (a connect or a complete response); 0 when there is none.
    refused_since: AtomicU64,
    /// Workers that have not left (see `LoadConfig::new_connections_until`).
    staying: AtomicUsize,
    /// Cancelled when the last worker leaves.
    all_left: CancellationToken,
}

/// Resolves at `deadline`, or never without one: the end of a run of a set duration.
pub async fn until(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
        None => std::future::pending().await,
    }
}

/// Waits for the next send time a run's workers share (from `pacer`, or at once without
/// one); false once the run is over: `stop` cancelled, or the slot at or after `deadline`.
///
/// How [`run`]'s workers pace themselves, public for load over other protocols that
/// should pace the same way (`bench/loadgen`'s gRPC load): each worker loops
/// `while next_slot(..).await { one request }`.
pub async fn next_slot(
    stop: &CancellationToken,
    pacer: Option<&Pacer>,
    deadline: Option<Instant>,
) -> bool {
    if stop.is_cancelled() {
        return false;
    }
    let now = Instant::now();
    let at = match pacer {
        Some(pacer) => pacer.claim(now),
        None => now,
    };
    if deadline.is_some_and(|deadline| at >= deadline) {
        return false;
    }
    if at <= now {
        return true;
    }
    tokio::select! {
        () = tokio::time::sleep_until(at.into()) => true,
        () = stop.cancelled() => false,
    }
}

/// Hands out send times `interval` apart, shared by all workers, so the aggregate rate is
/// steady however the work is spread. A slot is never in the past: when every worker was
/// busy (a slow or hanging server), missed slots are skipped rather than sent as a burst
/// afterwards.
///
/// Shared by a run's workers (behind an `Arc`), with [`next_slot`].
#[derive(Debug)]
pub struct Pacer {
    slots: Mutex<Slots>,
}

#[derive(Debug)]
struct Slots {
    next: Instant,
    interval: Duration,
}

impl Pacer {
    /// `rate` slots a second from `start`; `None` for 0 (as fast as possible).
    pub fn new(start: Instant, rate: u64) -> Option<Pacer> {
        (rate > 0).then(|| Pacer {
            slots: Mutex::new(Slots {
                next: start,
                interval: Duration::from_nanos(1_000_000_000 / rate),
            }),
        })
    }

    /// Takes the next slot: the later of the next free one and `now`; the one after it
    /// is `interval` later.
    pub fn claim(&self, now: Instant) -> Instant {
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        let at = slots.next.max(now);
        slots.next = at + slots.interval;
        at
    }

    /// Spaces the slots from now on `scale` times as far apart as `rate` slots a second
    /// would: `rate × 1/scale` slots a second. For the workers that stay once others have
    /// left, at `connections / staying`, so each keeps its own pace.
    fn rescale(&self, rate: u64, scale: f64) {
        let mut slots = self.slots.lock().unwrap_or_else(PoisonError::into_inner);
        slots.interval = Duration::from_secs_f64(scale / rate.max(1) as f64);
    }
}

impl Shared {
    fn millis_since_start(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Waits for this worker's next send time; false once the run is over.
    async fn next_slot(&self) -> bool {
        next_slot(&self.stop, self.pacer.as_ref(), self.deadline).await
    }

    fn on_refused(&self) {
        let now = self.millis_since_start().saturating_add(1);
        let _ = self
            .refused_since
            .compare_exchange(0, now, Ordering::Relaxed, Ordering::Relaxed);
    }

    fn on_alive(&self) {
        if self.refused_since.load(Ordering::Relaxed) != 0 {
            self.refused_since.store(0, Ordering::Relaxed);
        }
    }

    /// Completes once connects have been refused, with no sign of life in between, for
    /// `until_refused`; never without that setting.
    async fn target_gone(&self) {
        let Some(window) = self.config.until_refused else {
            return std::future::pending().await;
        };
        let window = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
        loop {
            tokio::time::sleep(REFUSED_CHECK).await;
            let since = self.refused_since.load(Ordering::Relaxed);
            if since != 0 && self.millis_since_start().saturating_add(1) - since >= window {
                return;
            }
        }
    }

    /// Whether a worker may open a new connection now.
    fn may_connect(&self) -> bool {
        self.config
            .new_connections_until
            .is_none_or(|until| Instant::now() < until)
    }

    /// A worker leaves: it records when, and the workers that stay share a smaller rate.
    fn leave(&self, recorder: &mut Recorder) {
        recorder.left(self.start.elapsed());
        let staying = self
            .staying
            .fetch_sub(1, Ordering::AcqRel)
            .saturating_sub(1);
        if staying == 0 {
            self.all_left.cancel();
        } else if let Some(pacer) = &self.pacer {
            let all = self.config.connections.max(1);
            pacer.rescale(self.config.rate, all as f64 / staying as f64);
        }
    }

    async fn backoff(&self) {
        tokio::select! {
            () = tokio::time::sleep(self.config.reconnect_backoff) => {}
            () = self.stop.cancelled() => {}
        }
    }
}

/// One worker: one connection at a time, one request at a time, a request per slot.
/// Past `new_connections_until`, it leaves once it has no connection.
async fn worker(shared: Arc<Shared>) -> Recorder {
    let mut recorder = Recorder::default();
    let mut conn = None;
    loop {
        if shared.stop.is_cancelled() {
            break;
        }
        // Leave before taking a slot, so that the slot goes to a worker that stays.
        if conn.is_none() && !shared.may_connect() {
            shared.leave(&mut recorder);
            break;
        }
        if !shared.next_slot().await {
            break;
        }
        if let Slot::Left = one_request(&shared, &mut conn, &mut recorder).await {
            shared.leave(&mut recorder);
            break;
        }
    }
    recorder
}

/// How a request slot ended for its worker.
enum Slot {
    /// It goes on to its next slot.
    Done,
    /// It needed a new connection past `new_connections_until`: it leaves, and the slot
    /// was no attempt.
    Left,
}

/// One request slot: connect if needed, send, classify. Resends only what hyper gave
/// back unwritten; reconnects without counting a request when hyper had already seen the
/// server close an idle keep-alive connection. Needing a new connection when it may no
/// longer open one, it records nothing more and says it left.
async fn one_request(shared: &Shared, conn: &mut Option<Conn>, recorder: &mut Recorder) -> Slot {
    let mut resends = 0;
    loop {
        let attempt = shared.start.elapsed();
        let mut c = match conn.take() {
            Some(c) => c,
            None if !shared.may_connect() => return Slot::Left,
            None => match connect(&shared.config.target, shared.config.connect_timeout).await {
                Ok((c, _task)) => {
                    recorder.connections_opened += 1;
                    shared.on_alive();
                    c
                }
                Err(message) => {
                    recorder.record(attempt, Class::Refused, None);
                    recorder.error(Class::Refused, message);
                    shared.on_refused();
                    shared.backoff().await;
                    return Slot::Done;
                }
            },
        };
        let reused = c.reused;
        let timeout = shared.config.request_timeout;
        let outcome = exchange(&mut c, &shared.template, timeout, || {}).await;
        let class = outcome.class();
        match outcome {
            Exchange::Response { close, latency, .. } => {
                recorder.record(attempt, class, Some(latency));
                shared.on_alive();
                if !close {
                    c.reused = true;
                    *conn = Some(c);
                }
                return Slot::Done;
            }
            Exchange::ClosedBeforeSend(message) => {
                if reused {
                    // The server closed this idle keep-alive connection and hyper saw it
                    // before we used it: like a pool, just reconnect. No request yet.
                    recorder.idle_closed += 1;
                    continue;
                }
                // A brand-new connection, closed before we could write on it: the server
                // is not serving (a reset right after connecting).
                recorder.record(attempt, Class::Refused, None);
                recorder.error(
                    Class::Refused,
                    format!("new connection closed before the request was written: {message}"),
                );
                shared.on_refused();
                shared.backoff().await;
                return Slot::Done;
            }
            Exchange::NotSent(message) => {
                recorder.record(attempt, Class::NotSent, None);
                recorder.error(Class::NotSent, message);
                resends += 1;
                if resends > MAX_RESENDS || shared.stop.is_cancelled() {
                    return Slot::Done;
                }
            }
            Exchange::NoResponse {
                message,
                head_received,
            } => {
                recorder.record(attempt, Class::NoResponse, None);
                if reused && !head_received {
                    recorder.no_response_reused += 1;
                }
                let conn_kind = if reused { "reused" } else { "new" };
                recorder.error(
                    Class::NoResponse,
                    format!("{message} ({conn_kind} connection)"),
                );
                return Slot::Done;
            }
            Exchange::Timeout => {
                c.abort();
                recorder.record(attempt, Class::Timeout, None);
                recorder.error(
                    Class::Timeout,
                    format!("no complete response within {timeout:?}"),
                );
                return Slot::Done;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn pacer_spaces_slots_and_skips_missed_ones() {
        let t0 = Instant::now();
        let pacer = Pacer::new(t0, 100).unwrap();
        assert_eq!(pacer.claim(t0), t0);
        assert_eq!(pacer.claim(t0), t0 + Duration::from_millis(10));
        assert_eq!(pacer.claim(t0), t0 + Duration::from_millis(20));
        // Everyone was busy for a second: no burst of the missed slots.
        let later = t0 + Duration::from_secs(1);
        assert_eq!(pacer.claim(later), later);
        assert_eq!(pacer.claim(later), later + Duration::from_millis(10));
        // Half the workers left: half the rate from the next slot on.
        pacer.rescale(100, 2.0);
        assert_eq!(pacer.claim(later), later + Duration::from_millis(20));
        assert_eq!(pacer.claim(later), later + Duration::from_millis(40));
    }
}
