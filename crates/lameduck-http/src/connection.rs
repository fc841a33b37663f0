//! One connection through the lifecycle: served while Ready and Draining,
//! told to go away the way its protocol understands, closed at Stopping once it carries no
//! request, cut at the drain timeout.
//!
//! | | HTTP/1 | HTTP/2 |
//! |---|---|---|
//! | Draining | served; responses say `Connection: close` (the in-flight layer) | GOAWAY, open streams complete; a connection opened during the delay gets it at Stopping |
//! | Stopping | closed at once if no request has begun, else after its response | closed once its streams are done |
//! | drain timeout | cut | cut |
//!
//! Internal: HTTP/1 is not given hyper's `graceful_shutdown` while Draining, since that
//! closes an idle keep-alive connection at once and races the client's next request;
//! `Connection: close` on the next response moves the client without a race.

use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Poll, Waker};
use std::time::Duration;

use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use lameduck::ActivityCounter;
use tokio::time::{Instant, sleep_until};

use crate::BoxError;
use crate::io::{ConnectionState, Protocol, Protocols, TrackedIo};
use crate::listener::Listener;
use crate::state_watch::StateWatch;

/// What every connection of one server shares.
pub(crate) struct ServerShared {
    pub(crate) builder: auto::Builder<TokioExecutor>,
    pub(crate) protocols: Protocols,
    pub(crate) header_read_timeout: Option<Duration>,
    pub(crate) first_request_grace: Duration,
    /// The lifecycle's state and events (Draining, Stopping, the cut), relayed.
    pub(crate) states: StateWatch,
    pub(crate) connections: ActivityCounter,
    /// The lifecycle served, looked at (one atomic load) on every read, write and wake-up
    /// for the cut: it ends the connection before the relayed cut token is even heard.
    pub(crate) lifecycle: lameduck::Lifecycle,
}

/// A hyper connection that can be asked to finish gracefully.
pub(crate) trait GracefulConnection: Future<Output = Result<(), BoxError>> {
    fn graceful_shutdown(self: Pin<&mut Self>);
}

impl<I, S, B> GracefulConnection for auto::UpgradeableConnection<'_, I, S, TokioExecutor>
where
    S: hyper::service::Service<http::Request<Incoming>, Response = http::Response<B>>,
    S::Future: 'static,
    S::Error: Into<BoxError>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    TokioExecutor: hyper::rt::bounds::Http2ServerConnExec<S::Future, B>,
{
    fn graceful_shutdown(self: Pin<&mut Self>) {
        auto::UpgradeableConnection::graceful_shutdown(self);
    }
}

/// How a connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Finished {
    /// hyper is done with it (closed, or upgraded and handed to the application).
    Served,
    /// It sent no request in time and was closed.
    Silent,
    /// Stopping found it idle, with nothing left to write, and closed it.
    Idle,
    /// The drain timeout cut it.
    Cut,
}

/// Serve one accepted connection to the end, including its life after an upgrade. The
/// service is made for the connection, so that it can report to the connection's state.
pub(crate) async fn serve_connection<L, S, B>(
    io: L::Io,
    make_service: impl FnOnce(Arc<ConnectionState>) -> S,
    server: Arc<ServerShared>,
) where
    L: Listener,
    S: hyper::service::Service<http::Request<Incoming>, Response = http::Response<B>>,
    S::Future: 'static,
    S::Error: Into<BoxError>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
    TokioExecutor: hyper::rt::bounds::Http2ServerConnExec<S::Future, B>,
{
    let state = ConnectionState::of(&server.lifecycle);
    let io = TrackedIo::<L>::new(
        io,
        Arc::clone(&state),
        server.protocols,
        server.connections.enter(),
    );
    let service = make_service(Arc::clone(&state));
    let finished = {
        let connection = pin!(
            server
                .builder
                .serve_connection_with_upgrades(TokioIo::new(io), service)
        );
        drive(connection, &state, &server).await
    };
    // hyper has let go; if the stream lives on, the connection was upgraded (WebSocket) and
    // the application holds it. It stays counted until it is dropped, or cut.
    if finished == Finished::Served && state.is_open() {
        tokio::select! {
            _ = server.states.cut_token().cancelled() => state.cut(),
            _ = state.closed() => {}
        }
    }
}

/// The header-read timeout, kept here rather than by hyper, which arms, registers and
/// cancels a timer for every request (and polls the socket once more): a tenth of what a
/// trivial request costs. Here one timer per connection ticks every eighth of the timeout.
/// A connection that, at every tick over a whole timeout, had no request in progress and
/// no new one dispatched is closed: a client that sends nothing, sends its headers too
/// slowly, or stays idle between requests — what hyper's timeout closes too. It is closed
/// after more than one timeout and at most a quarter more.
struct WaitingForClient {
    tick: Duration,
    idle_ticks: u32,
    last_dispatched: u32,
}

impl WaitingForClient {
    const TICKS_PER_TIMEOUT: u32 = 8;

    fn new(timeout: Duration) -> Self {
        Self {
            tick: timeout / Self::TICKS_PER_TIMEOUT,
            idle_ticks: 0,
            last_dispatched: 0,
        }
    }

    /// One tick; true when the connection has waited for its client too long.
    fn tick(&mut self, state: &ConnectionState) -> bool {
        let (dispatched, in_progress) = state.requests();
        let writing = state.take_write_activity();
        if in_progress || writing || dispatched != self.last_dispatched {
            self.last_dispatched = dispatched;
            self.idle_ticks = 0;
            return false;
        }
        self.idle_ticks += 1;
        self.idle_ticks > Self::TICKS_PER_TIMEOUT
    }
}

/// `from + after`, but never further than about 30 years (as tokio caps `sleep`): the
/// header-read timeout and the first-request grace are not bounded, and `Instant +
/// Duration` panics when the sum does not fit the clock. A longer one means "never".
fn deadline_after(from: Instant, after: Duration) -> Instant {
    const FAR_FUTURE: Duration = Duration::from_secs(30 * 365 * 24 * 3600);
    let mut after = after.min(FAR_FUTURE);
    // Halving ends at zero, and `from + 0` always fits.
    loop {
        if let Some(at) = from.checked_add(after) {
            return at;
        }
        if after.is_zero() {
            return from;
        }
        after /= 2;
    }
}

/// Drive `connection` through the lifecycle's states; see the module docs.
pub(crate) async fn drive<C: GracefulConnection>(
    mut connection: Pin<&mut C>,
    state: &ConnectionState,
    server: &ServerShared,
) -> Finished {
    let mut cut = pin!(server.states.cut_token().cancelled());
    let mut draining = pin!(server.states.draining_token().cancelled());
    let mut stopping = pin!(server.states.stopping_token().cancelled());
    // Polling a token's future takes mutexes that every connection shares; they are
    // looked at only when an event has been relayed since the last look, or when this
    // task's waker is not the one they hold (see `state_watch`).
    let mut events_seen: Option<u32> = None;
    let mut registered: Option<Waker> = None;
    // The header-read timeout's ticks (see `WaitingForClient`) and, at Stopping, the end
    // of the grace of a connection that has sent nothing: one timer set to the earlier of
    // the two, polled only when it may have fired.
    let mut waiting = server.header_read_timeout.map(WaitingForClient::new);
    let mut next_tick = deadline_after(
        Instant::now(),
        waiting.as_ref().map_or(Duration::ZERO, |w| w.tick),
    );
    let mut grace_ends: Option<Instant> = None;
    let mut silent_armed = waiting.is_some();
    let mut silent = pin!(sleep_until(next_tick));
    let mut silent_registered = false;
    let mut seen_draining = false;
    let mut seen_stopping = false;
    let mut shutting_down = false;
    let mut opened_while_draining: Option<bool> = None;

    poll_fn(|cx| {
        // Whatever woke the connection, once the cut has fired it writes nothing more and
        // drops what it still runs, so AfterDrain hooks find every handler gone.
        if state.is_cut() {
            return Poll::Ready(Finished::Cut);
        }
        let events = server.states.events();
        let look = events_seen != Some(events)
            || !registered.as_ref().is_some_and(|w| w.will_wake(cx.waker()));
        if look {
            events_seen = Some(events);
            registered = Some(cx.waker().clone());
            silent_registered = false;
        }
        if look && cut.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Finished::Cut);
        }
        if look && !seen_stopping && stopping.as_mut().poll(cx).is_ready() {
            seen_stopping = true;
            seen_draining = true;
            // Before hyper reads again: what the kernel holds must be seen, not guessed.
            state.set_stopping();
            if state.protocol() == Protocol::Unknown {
                let grace = deadline_after(Instant::now(), server.first_request_grace);
                grace_ends = Some(grace);
                if !silent_armed || grace < silent.deadline() {
                    silent.as_mut().reset(grace);
                    silent_registered = false;
                }
                silent_armed = true;
            }
        }
        if look && !seen_draining && draining.as_mut().poll(cx).is_ready() {
            seen_draining = true;
        }
        // Asked of the lifecycle itself, not only of the relayed token: a connection
        // accepted just after the trigger, before the relay has passed it on, was opened
        // in the delay too.
        let opened_while_draining = *opened_while_draining
            .get_or_insert_with(|| seen_draining || server.lifecycle.state().is_shutting_down());
        loop {
            if let Poll::Ready(result) = connection.as_mut().poll(cx) {
                if let Err(error) = result {
                    tracing::debug!(%error, "connection ended with an error");
                }
                return Poll::Ready(Finished::Served);
            }
            if shutting_down {
                break;
            }
            let shut_down = match state.protocol() {
                // A connection opened during the delay is told at Stopping, not at once:
                // a GOAWAY on a fresh connection races the calls the client has queued
                // on it (grpcio fails one met before the first stream; tonic fails any
                // call queued as the GOAWAY arrives), and by Stopping its client's routing
                // has caught up, so it reconnects elsewhere once, not once per call.
                Protocol::Http2 => seen_stopping || (seen_draining && !opened_while_draining),
                // Idle: no request begun since the last response, and the kernel confirmed
                // on the read hyper just made that no new one is waiting.
                Protocol::Http1 => seen_stopping && !state.request_begun() && state.quiet(),
                Protocol::Unknown => false,
            };
            if !shut_down {
                break;
            }
            // An idle HTTP/1 connection with nothing left to write is closed by dropping it:
            // close(2) sends the same FIN as hyper's shutdown, one system call and hyper's
            // closing steps sooner, which with thousands of idle connections is most of
            // Stopping's own time.
            if state.protocol() == Protocol::Http1 && state.nothing_to_write() {
                return Poll::Ready(Finished::Idle);
            }
            connection.as_mut().graceful_shutdown();
            shutting_down = true;
        }
        // A timer's poll is not free: look only when it has fired, or has not yet been
        // polled (registered) with this task's waker.
        while silent_armed && (!silent_registered || silent.is_elapsed()) {
            silent_registered = true;
            if silent.as_mut().poll(cx).is_pending() {
                break;
            }
            let fired_at = silent.deadline();
            let protocol = state.protocol();
            // The grace matters only until the client has said something.
            let grace = grace_ends.filter(|_| protocol == Protocol::Unknown);
            if grace.is_some_and(|end| fired_at >= end) {
                tracing::debug!(
                    "closing a connection that sent no request by the end of its grace"
                );
                return Poll::Ready(Finished::Silent);
            }
            // HTTP/2 has no header-read timeout.
            let ticking = waiting.as_mut().filter(|_| protocol != Protocol::Http2);
            let ticks = ticking.is_some();
            if let Some(waiting) = ticking
                && fired_at >= next_tick
            {
                if waiting.tick(state) {
                    tracing::debug!("closing a connection that sent no complete request in time");
                    return Poll::Ready(Finished::Silent);
                }
                // From the deadline, not from now: late wake-ups must not add up.
                next_tick = deadline_after(next_tick, waiting.tick);
            }
            let next = match (ticks, grace) {
                (true, Some(end)) => next_tick.min(end),
                (true, None) => next_tick,
                (false, Some(end)) => end,
                (false, None) => {
                    silent_armed = false;
                    break;
                }
            };
            silent.as_mut().reset(next);
            silent_registered = false;
        }
        Poll::Pending
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use lameduck::State;
    use std::task::Context;
    use tokio_test::{assert_pending, assert_ready_eq, task};

    /// A connection that records graceful shutdowns, and ends on one if told to.
    #[derive(Default)]
    struct FakeConnection {
        shutdowns: usize,
        ends_on_shutdown: bool,
    }

    impl Future for FakeConnection {
        type Output = Result<(), BoxError>;
        fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Self::Output> {
            if self.ends_on_shutdown && self.shutdowns > 0 {
                Poll::Ready(Ok(()))
            } else {
                Poll::Pending
            }
        }
    }

    impl GracefulConnection for FakeConnection {
        fn graceful_shutdown(mut self: Pin<&mut Self>) {
            self.shutdowns += 1;
        }
    }

    fn server(header_read_timeout: Option<Duration>) -> ServerShared {
        ServerShared {
            builder: auto::Builder::new(TokioExecutor::new()),
            protocols: Protocols::Both,
            header_read_timeout,
            first_request_grace: Duration::from_secs(1),
            states: StateWatch::detached(State::Ready),
            connections: ActivityCounter::new(),
            lifecycle: crate::test_support::lifecycle(),
        }
    }

    fn state(protocol: Protocol) -> Arc<ConnectionState> {
        let state = ConnectionState::new();
        state.set_protocol(protocol);
        state
    }

    #[tokio::test(start_paused = true)]
    async fn http1_is_left_alone_while_draining_and_closed_at_stopping_once_idle() {
        let server = server(None);
        let state = state(Protocol::Http1);
        let mut connection = pin!(FakeConnection::default());
        {
            let mut drive = task::spawn(drive(connection.as_mut(), &state, &server));
            assert_pending!(drive.poll());
            server.states.set(State::Draining);
            assert!(drive.is_woken());
            assert_pending!(drive.poll());
            // A request is under way when Stopping begins: it is not interrupted...
            state.simulate(true, false);
            server.states.set(State::Stopping);
            assert_pending!(drive.poll());
            // ...and once answered, with the kernel's buffer found empty and nothing left
            // to write, the connection is closed: dropped, without hyper's shutdown.
            state.simulate(false, true);
            assert_ready_eq!(drive.poll(), Finished::Idle);
        }
        assert_eq!(connection.shutdowns, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_http1_connection_still_writing_is_left_to_hyper_to_finish_and_close() {
        let server = server(None);
        let state = state(Protocol::Http1);
        let mut connection = pin!(FakeConnection::default());
        {
            let mut drive = task::spawn(drive(connection.as_mut(), &state, &server));
            server.states.set(State::Stopping);
            // The response's first bytes went out, the rest waits for the socket.
            state.simulate(false, true);
            state.simulate_write(true);
            assert_pending!(drive.poll());
        }
        assert_eq!(
            connection.shutdowns, 1,
            "hyper finishes the response, then closes"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_http1_connection_whose_response_body_has_not_ended_is_left_to_hyper() {
        let server = server(None);
        let state = state(Protocol::Http1);
        let mut connection = pin!(FakeConnection::default());
        {
            let mut drive = task::spawn(drive(connection.as_mut(), &state, &server));
            server.states.set(State::Stopping);
            // A streamed response: its head went out, its body has not ended.
            state.request_dispatched();
            state.simulate(false, true);
            assert_pending!(drive.poll());
        }
        assert_eq!(connection.shutdowns, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn http1_is_not_closed_while_the_kernel_has_not_been_asked() {
        let server = server(None);
        let state = state(Protocol::Http1);
        let mut connection = pin!(FakeConnection::default());
        {
            let mut drive = task::spawn(drive(connection.as_mut(), &state, &server));
            server.states.set(State::Stopping);
            assert_pending!(drive.poll());
        }
        assert_eq!(connection.shutdowns, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn http2_gets_goaway_when_draining_begins() {
        let server = server(None);
        let state = state(Protocol::Http2);
        let mut connection = pin!(FakeConnection::default());
        {
            let mut drive = task::spawn(drive(connection.as_mut(), &state, &server));
            assert_pending!(drive.poll());
            server.states.set(State::Draining);
            assert!(drive.is_woken());
            assert_pending!(drive.poll());
            server.states.set(State::Stopping);
            assert_pending!(drive.poll());
        }
        assert_eq!(connection.shutdowns, 1, "once");
    }

    /// A connection opened during the delay gets its GOAWAY at Stopping: met on a fresh
    /// connection, a GOAWAY races the calls its client has queued (grpcio failed one in 40
    /// met before the first stream; tonic fails a call queued as it arrives), and told
    /// after each first stream, a client reusing its channel met that race on every call.
    #[tokio::test(start_paused = true)]
    async fn http2_opened_while_draining_gets_goaway_at_stopping() {
        let server = server(None);
        let state = state(Protocol::Http2);
        let mut connection = pin!(FakeConnection::default());
        server.states.set(State::Draining);
        let shutdowns_while_draining = {
            let mut drive = task::spawn(drive(connection.as_mut(), &state, &server));
            assert_pending!(drive.poll());
            assert_pending!(drive.poll());
            drop(drive);
            connection.shutdowns
        };
        assert_eq!(shutdowns_while_draining, 0);
        {
            let mut drive = task::spawn(drive(connection.as_mut(), &state, &server));
            assert_pending!(drive.poll());
            server.states.set(State::Stopping);
            assert!(drive.is_woken());
            assert_pending!(drive.poll());
        }
        assert_eq!(connection.shutdowns, 1);
    }

    /// The relay of the lifecycle's state to the server lags behind it a little: a
    /// connection accepted in that moment was still opened after the trigger.
    #[tokio::test(start_paused = true)]
    async fn http2_opened_before_the_relay_heard_of_the_trigger_gets_goaway_at_stopping() {
        let mut server = server(None);
        server.lifecycle = crate::test_support::builder()
            .shutdown_delay(Duration::from_secs(60))
            .build()
            .expect("a valid test configuration");
        let driver = server.lifecycle.clone();
        let _run = tokio::spawn(async move { driver.run().await });
        server.lifecycle.shutdown();
        server.lifecycle.draining().await;
        let state = state(Protocol::Http2);
        let mut connection = pin!(FakeConnection::default());
        {
            // The relayed state is still Ready at the first poll, Draining right after.
            let mut drive = task::spawn(drive(connection.as_mut(), &state, &server));
            assert_pending!(drive.poll());
            server.states.set(State::Draining);
            assert_pending!(drive.poll());
        }
        assert_eq!(connection.shutdowns, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn wake_ups_without_an_event_do_not_hide_the_next_one() {
        let server = server(None);
        let state = state(Protocol::Http2);
        let mut connection = pin!(FakeConnection::default());
        {
            let mut drive = task::spawn(drive(connection.as_mut(), &state, &server));
            // Wake-ups for the connection's own I/O: the tokens are not looked at again...
            for _ in 0..3 {
                assert_pending!(drive.poll());
            }
            // ...yet the waker they hold is this task's, and the event moves the counter.
            server.states.set(State::Draining);
            assert!(drive.is_woken());
            assert_pending!(drive.poll());
        }
        assert_eq!(connection.shutdowns, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn the_connection_ends_when_hyper_is_done() {
        let server = server(None);
        let state = state(Protocol::Http2);
        let mut connection = pin!(FakeConnection {
            shutdowns: 0,
            ends_on_shutdown: true,
        });
        let mut drive = task::spawn(drive(connection.as_mut(), &state, &server));
        assert_pending!(drive.poll());
        server.states.set(State::Draining);
        assert_ready_eq!(drive.poll(), Finished::Served);
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_connection_gets_the_grace_at_stopping_then_is_closed() {
        let server = server(Some(Duration::from_secs(30)));
        let state = state(Protocol::Unknown);
        let mut connection = pin!(FakeConnection::default());
        let mut drive = task::spawn(drive(connection.as_mut(), &state, &server));
        assert_pending!(drive.poll());
        server.states.set(State::Stopping);
        assert_pending!(drive.poll());
        tokio::time::advance(Duration::from_millis(999)).await;
        assert_pending!(drive.poll());
        tokio::time::advance(Duration::from_millis(2)).await;
        assert!(drive.is_woken());
        assert_ready_eq!(drive.poll(), Finished::Silent);
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_that_speaks_is_not_closed_by_the_grace() {
        let server = server(Some(Duration::from_secs(30)));
        let state = state(Protocol::Unknown);
        let mut connection = pin!(FakeConnection::default());
        let mut drive = task::spawn(drive(connection.as_mut(), &state, &server));
        server.states.set(State::Stopping);
        assert_pending!(drive.poll());
        state.set_protocol(Protocol::Http1);
        state.simulate(true, false);
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_pending!(drive.poll());
    }

    #[tokio::test(start_paused = true)]
    async fn a_tick_due_before_the_grace_ends_does_not_shorten_it() {
        // Ticks every 3.75 s; Stopping at 3.25 s: the grace ends at 4.25 s, after a tick.
        let server = server(Some(TIMEOUT));
        let state = state(Protocol::Unknown);
        let mut connection = pin!(FakeConnection::default());
        let mut drive = task::spawn(drive(connection.as_mut(), &state, &server));
        assert_pending!(drive.poll());
        tokio::time::advance(Duration::from_millis(3250)).await;
        assert_pending!(drive.poll());
        server.states.set(State::Stopping);
        assert_pending!(drive.poll());
        tokio::time::advance(Duration::from_millis(900)).await;
        assert_pending!(drive.poll());
        tokio::time::advance(Duration::from_millis(101)).await;
        assert_ready_eq!(drive.poll(), Finished::Silent);
    }

    /// Advance the paused clock in 250 ms steps for `seconds`, polling `drive` at each
    /// step (a task's timers fire only when it is polled); the time at which it finished,
    /// if it did. `each_step` plays the client and the service.
    async fn run_for<F: Future<Output = Finished>>(
        drive: &mut task::Spawn<F>,
        seconds: u64,
        mut each_step: impl FnMut(Duration),
    ) -> Option<(Duration, Finished)> {
        let start = Instant::now();
        let step = Duration::from_millis(250);
        while start.elapsed() < Duration::from_secs(seconds) {
            tokio::time::advance(step).await;
            each_step(start.elapsed());
            if let Poll::Ready(finished) = drive.poll() {
                return Some((start.elapsed(), finished));
            }
        }
        None
    }

    const TIMEOUT: Duration = Duration::from_secs(30);

    fn closed_within_a_quarter_more(closed: Option<(Duration, Finished)>) {
        let (at, finished) = closed.expect("closed");
        assert_eq!(finished, Finished::Silent);
        assert!(
            at > TIMEOUT && at <= TIMEOUT + TIMEOUT / 4,
            "closed after {at:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_that_never_speaks_is_closed_after_the_header_read_timeout() {
        let server = server(Some(TIMEOUT));
        let state = state(Protocol::Unknown);
        let mut connection = pin!(FakeConnection::default());
        let mut drive = task::spawn(drive(connection.as_mut(), &state, &server));
        assert_pending!(drive.poll());
        closed_within_a_quarter_more(run_for(&mut drive, 60, |_| {}).await);
    }

    #[tokio::test(start_paused = true)]
    async fn headers_sent_too_slowly_close_the_connection() {
        let server = server(Some(TIMEOUT));
        let state = state(Protocol::Http1);
        let mut connection = pin!(FakeConnection::default());
        let mut drive = task::spawn(drive(connection.as_mut(), &state, &server));
        assert_pending!(drive.poll());
        // A byte now and then (slowloris), never a whole request: nothing is dispatched.
        let trickle = |_: Duration| state.simulate(true, false);
        closed_within_a_quarter_more(run_for(&mut drive, 60, trickle).await);
    }

    #[tokio::test(start_paused = true)]
    async fn an_idle_keep_alive_connection_is_closed_after_the_timeout() {
        let server = server(Some(TIMEOUT));
        let state = state(Protocol::Http1);
        let mut connection = pin!(FakeConnection::default());
        let mut drive = task::spawn(drive(connection.as_mut(), &state, &server));
        assert_pending!(drive.poll());
        // One request, answered at once; then nothing.
        state.request_dispatched();
        state.request_ended();
        closed_within_a_quarter_more(run_for(&mut drive, 60, |_| {}).await);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_in_progress_keeps_its_connection_past_the_timeout() {
        let server = server(Some(TIMEOUT));
        let state = state(Protocol::Http1);
        let mut connection = pin!(FakeConnection::default());
        let mut drive = task::spawn(drive(connection.as_mut(), &state, &server));
        assert_pending!(drive.poll());
        // A slow handler: dispatched, its response takes 100 s.
        state.request_dispatched();
        assert_eq!(run_for(&mut drive, 100, |_| {}).await, None);
        // Once it ends, the connection waits for its client again, for one timeout.
        state.request_ended();
        closed_within_a_quarter_more(run_for(&mut drive, 60, |_| {}).await);
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_with_requests_coming_is_left_open() {
        let server = server(Some(TIMEOUT));
        let state = state(Protocol::Http1);
        let mut connection = pin!(FakeConnection::default());
        let mut drive = task::spawn(drive(connection.as_mut(), &state, &server));
        assert_pending!(drive.poll());
        // A request every 20 s, each answered at once: always well within the timeout.
        let mut next = Duration::from_secs(20);
        let client = |now: Duration| {
            if now >= next {
                state.request_dispatched();
                state.request_ended();
                next += Duration::from_secs(20);
            }
        };
        assert_eq!(run_for(&mut drive, 300, client).await, None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_response_still_being_written_keeps_its_connection() {
        let server = server(Some(TIMEOUT));
        let state = state(Protocol::Http1);
        let mut connection = pin!(FakeConnection::default());
        let mut drive = task::spawn(drive(connection.as_mut(), &state, &server));
        assert_pending!(drive.poll());
        // The body has ended (hyper holds the rest), and bytes go out to a slow reader.
        state.request_dispatched();
        state.request_ended();
        let slow_reader = |_: Duration| state.simulate_write(false);
        assert_eq!(run_for(&mut drive, 100, slow_reader).await, None);
        // A client that stops reading: the write waits, the connection is not idle.
        state.simulate_write(true);
        assert_eq!(run_for(&mut drive, 100, |_| {}).await, None);
        // Everything sent: one timeout later, it is closed.
        state.simulate_write(false);
        closed_within_a_quarter_more(run_for(&mut drive, 60, |_| {}).await);
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_waiting_for_the_service_keeps_its_connection() {
        let server = server(Some(TIMEOUT));
        let state = state(Protocol::Http1);
        let mut connection = pin!(FakeConnection::default());
        let mut drive = task::spawn(drive(connection.as_mut(), &state, &server));
        assert_pending!(drive.poll());
        state.set_awaiting_service(true);
        assert_eq!(run_for(&mut drive, 100, |_| {}).await, None);
        state.set_awaiting_service(false);
        closed_within_a_quarter_more(run_for(&mut drive, 60, |_| {}).await);
    }

    #[tokio::test(start_paused = true)]
    async fn http2_connections_have_no_header_read_timeout() {
        let server = server(Some(TIMEOUT));
        let state = state(Protocol::Http2);
        let mut connection = pin!(FakeConnection::default());
        let mut drive = task::spawn(drive(connection.as_mut(), &state, &server));
        assert_pending!(drive.poll());
        assert_eq!(run_for(&mut drive, 120, |_| {}).await, None);
    }

    #[tokio::test(start_paused = true)]
    async fn the_drain_timeout_cuts_the_connection() {
        let server = server(None);
        let state = state(Protocol::Http1);
        let mut connection = pin!(FakeConnection::default());
        let mut drive = task::spawn(drive(connection.as_mut(), &state, &server));
        server.states.set(State::Stopping);
        assert_pending!(drive.poll());
        server.states.cut();
        assert!(drive.is_woken());
        assert_ready_eq!(drive.poll(), Finished::Cut);
    }

    /// Timeouts too long for the clock (`Server::header_read_timeout(Duration::MAX)`,
    /// `first_request_grace(Duration::MAX)`) mean "never", not a panic in every
    /// connection's task.
    #[tokio::test(start_paused = true)]
    async fn timeouts_too_long_for_the_clock_do_not_panic() {
        let mut server = server(Some(Duration::MAX));
        server.first_request_grace = Duration::MAX;
        let state = state(Protocol::Unknown);
        let mut connection = pin!(FakeConnection::default());
        let mut drive = task::spawn(drive(connection.as_mut(), &state, &server));
        assert_pending!(drive.poll());
        server.states.set(State::Stopping);
        assert_pending!(drive.poll());
        tokio::time::advance(Duration::from_secs(24 * 3600)).await;
        assert_pending!(drive.poll());
    }
}
