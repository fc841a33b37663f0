//! One connection through the lifecycle (DESIGN.md §5): served while Ready and Draining,
//! told to go away the way its protocol understands, closed at Stopping once it carries no
//! request, cut at the drain timeout.
//!
//! | | HTTP/1 | HTTP/2 |
//! |---|---|---|
//! | Draining | served; responses say `Connection: close` (the in-flight layer) | GOAWAY; open streams complete |
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
use crate::phase::PhaseWatch;

/// What every connection of one server shares.
pub(crate) struct ServerShared {
    pub(crate) builder: auto::Builder<TokioExecutor>,
    pub(crate) protocols: Protocols,
    pub(crate) header_read_timeout: Option<Duration>,
    pub(crate) first_request_grace: Duration,
    /// The lifecycle's state and events (Draining, Stopping, the cut), relayed.
    pub(crate) phase: PhaseWatch,
    pub(crate) connections: ActivityCounter,
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
    /// The drain timeout cut it.
    Cut,
}

/// Serve one accepted connection to the end, including its life after an upgrade.
pub(crate) async fn serve_connection<L, S, B>(io: L::Io, service: S, server: Arc<ServerShared>)
where
    L: Listener,
    S: hyper::service::Service<http::Request<Incoming>, Response = http::Response<B>>,
    S::Future: 'static,
    S::Error: Into<BoxError>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
    TokioExecutor: hyper::rt::bounds::Http2ServerConnExec<S::Future, B>,
{
    let state = ConnectionState::new();
    let io = TrackedIo::<L>::new(
        io,
        Arc::clone(&state),
        server.protocols,
        server.connections.enter(),
    );
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
            _ = server.phase.cut_token().cancelled() => state.cut(),
            _ = state.closed() => {}
        }
    }
}

/// Drive `connection` through the lifecycle's phases; see the module docs.
pub(crate) async fn drive<C: GracefulConnection>(
    mut connection: Pin<&mut C>,
    state: &ConnectionState,
    server: &ServerShared,
) -> Finished {
    let mut cut = pin!(server.phase.cut_token().cancelled());
    let mut draining = pin!(server.phase.draining_token().cancelled());
    let mut stopping = pin!(server.phase.stopping_token().cancelled());
    // Polling a token's future takes mutexes that every connection shares; they are
    // looked at only when an event has been relayed since the last look, or when this
    // task's waker is not the one they hold (see `phase`).
    let mut events_seen: Option<u32> = None;
    let mut registered: Option<Waker> = None;
    // A connection that has not told us its protocol (nothing read yet) is closed when this
    // fires: hyper's own header-read timeout only starts once the protocol is known.
    let mut silent_armed = server.header_read_timeout.is_some();
    let far = server.header_read_timeout.unwrap_or(Duration::ZERO);
    let mut silent = pin!(sleep_until(Instant::now() + far));
    let mut seen_draining = false;
    let mut seen_stopping = false;
    let mut shutting_down = false;

    poll_fn(|cx| {
        let events = server.phase.events();
        let look = events_seen != Some(events)
            || !registered.as_ref().is_some_and(|w| w.will_wake(cx.waker()));
        if look {
            events_seen = Some(events);
            registered = Some(cx.waker().clone());
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
                let grace = Instant::now() + server.first_request_grace;
                if !silent_armed || grace < silent.deadline() {
                    silent.as_mut().reset(grace);
                }
                silent_armed = true;
            }
        }
        if look && !seen_draining && draining.as_mut().poll(cx).is_ready() {
            seen_draining = true;
        }
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
                Protocol::Http2 => seen_draining,
                // Idle: no request begun since the last response, and the kernel confirmed
                // on the read hyper just made that no new one is waiting.
                Protocol::Http1 => seen_stopping && !state.request_begun() && state.quiet(),
                Protocol::Unknown => false,
            };
            if !shut_down {
                break;
            }
            connection.as_mut().graceful_shutdown();
            shutting_down = true;
        }
        if silent_armed
            && state.protocol() == Protocol::Unknown
            && silent.as_mut().poll(cx).is_ready()
        {
            tracing::debug!("closing a connection that sent no request");
            return Poll::Ready(Finished::Silent);
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
            phase: PhaseWatch::detached(State::Ready),
            connections: ActivityCounter::new(),
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
            server.phase.set(State::Draining);
            assert!(drive.is_woken());
            assert_pending!(drive.poll());
            // A request is under way when Stopping begins: it is not interrupted...
            state.simulate(true, false);
            server.phase.set(State::Stopping);
            assert_pending!(drive.poll());
            // ...and once answered, with the kernel's buffer found empty, the connection
            // is closed.
            state.simulate(false, true);
            assert_pending!(drive.poll());
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
            server.phase.set(State::Stopping);
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
            server.phase.set(State::Draining);
            assert!(drive.is_woken());
            assert_pending!(drive.poll());
            server.phase.set(State::Stopping);
            assert_pending!(drive.poll());
        }
        assert_eq!(connection.shutdowns, 1, "once");
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
            server.phase.set(State::Draining);
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
        server.phase.set(State::Draining);
        assert_ready_eq!(drive.poll(), Finished::Served);
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_connection_gets_the_grace_at_stopping_then_is_closed() {
        let server = server(Some(Duration::from_secs(30)));
        let state = state(Protocol::Unknown);
        let mut connection = pin!(FakeConnection::default());
        let mut drive = task::spawn(drive(connection.as_mut(), &state, &server));
        assert_pending!(drive.poll());
        server.phase.set(State::Stopping);
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
        server.phase.set(State::Stopping);
        assert_pending!(drive.poll());
        state.set_protocol(Protocol::Http1);
        state.simulate(true, false);
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_pending!(drive.poll());
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_that_never_speaks_is_closed_at_the_header_read_timeout() {
        let server = server(Some(Duration::from_secs(30)));
        let state = state(Protocol::Unknown);
        let mut connection = pin!(FakeConnection::default());
        let mut drive = task::spawn(drive(connection.as_mut(), &state, &server));
        assert_pending!(drive.poll());
        tokio::time::advance(Duration::from_secs(29)).await;
        assert_pending!(drive.poll());
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_ready_eq!(drive.poll(), Finished::Silent);
    }

    #[tokio::test(start_paused = true)]
    async fn the_drain_timeout_cuts_the_connection() {
        let server = server(None);
        let state = state(Protocol::Http1);
        let mut connection = pin!(FakeConnection::default());
        let mut drive = task::spawn(drive(connection.as_mut(), &state, &server));
        server.phase.set(State::Stopping);
        assert_pending!(drive.poll());
        server.phase.cut();
        assert!(drive.is_woken());
        assert_ready_eq!(drive.poll(), Finished::Cut);
    }
}
