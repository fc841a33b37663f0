//! The lifecycle's state as one atomic, and its events relayed, for the request path.
//!
//! Internal: `Lifecycle::state()` reads a `watch` channel (an `RwLock` read), and a
//! `CancellationToken` takes its node's mutex in `is_cancelled`, in `clone` and in every
//! poll of `cancelled()` (plus the `Notify`'s waiter-list mutex). The lifecycle's tokens
//! are shared by every connection, so polling them on each wake-up of each connection
//! would make every core contend on the same locks on every request. Instead one task
//! per server (or layer) follows the lifecycle and
//!
//! - mirrors the state into an `AtomicU8`, which requests read with a plain load;
//! - relays Draining, Stopping and the drain cut onto tokens of its own, bumping an event
//!   counter *before* cancelling each, so that a connection woken for any reason can tell
//!   with one atomic load whether it needs to look at the tokens at all.
//!
//! The mirror lags a transition by one scheduling of that task; nothing here needs more (a
//! response sent in that instant merely misses its `Connection: close`).

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use lameduck::{Lifecycle, State};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// A cheap, shared view of the lifecycle's state and events.
#[derive(Clone)]
pub(crate) struct StateWatch {
    inner: Arc<Inner>,
}

struct Inner {
    state: AtomicU8,
    /// How many of the tokens below have been cancelled; bumped before each is.
    events: AtomicU32,
    /// Cancelled once the lifecycle is Draining or later.
    draining: CancellationToken,
    /// Cancelled once the lifecycle is Stopping or later.
    stopping: CancellationToken,
    /// Cancelled when the lifecycle's cut token is: the drain timeout cuts what remains.
    cut: CancellationToken,
    /// Whether the follower task runs; until it does (no runtime yet), `pending` holds
    /// what it will follow.
    following: AtomicBool,
    pending: Mutex<Option<Upstream>>,
}

/// What the follower follows: the lifecycle's state channel and its cut token.
struct Upstream {
    states: watch::Receiver<State>,
    cut: CancellationToken,
}

impl Inner {
    fn new(state: State, pending: Option<Upstream>) -> Self {
        Self {
            state: AtomicU8::new(encode(state)),
            events: AtomicU32::new(0),
            draining: CancellationToken::new(),
            stopping: CancellationToken::new(),
            cut: CancellationToken::new(),
            following: AtomicBool::new(pending.is_none()),
            pending: Mutex::new(pending),
        }
    }

    /// Mirror `state`, and fire the tokens it implies. Only the follower (or a reader
    /// without a runtime) calls this, a handful of times per lifecycle.
    fn publish(&self, state: State) {
        self.state.store(encode(state), Ordering::Release);
        if state >= State::Draining {
            self.fire(&self.draining);
        }
        if state >= State::Stopping {
            self.fire(&self.stopping);
        }
    }

    fn fire(&self, token: &CancellationToken) {
        if !token.is_cancelled() {
            // Before the cancel: whoever it wakes must find the counter moved.
            self.events.fetch_add(1, Ordering::Release);
            token.cancel();
        }
    }
}

impl std::fmt::Debug for StateWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateWatch")
            .field("state", &self.state())
            .finish()
    }
}

impl StateWatch {
    /// Start following `lifecycle`; the follower task is spawned now if a tokio runtime is
    /// running, else by [`follow`](Self::follow) or the first [`state`](Self::state) read
    /// from inside one.
    pub(crate) fn new(lifecycle: &Lifecycle) -> Self {
        let states = lifecycle.subscribe();
        let initial = *states.borrow();
        let upstream = Upstream {
            states,
            cut: lifecycle.cut_token(),
        };
        let watch = Self {
            inner: Arc::new(Inner::new(State::Starting, Some(upstream))),
        };
        watch.inner.publish(initial);
        watch.follow();
        watch
    }

    /// A watch that follows nothing: tests move it with [`set`](Self::set) and
    /// [`cut`](Self::cut).
    #[cfg(test)]
    pub(crate) fn detached(state: State) -> Self {
        let watch = Self {
            inner: Arc::new(Inner::new(State::Starting, None)),
        };
        watch.set(state);
        watch
    }

    #[cfg(test)]
    pub(crate) fn set(&self, state: State) {
        self.inner.publish(state);
    }

    #[cfg(test)]
    pub(crate) fn cut(&self) {
        self.inner.fire(&self.inner.cut);
    }

    /// The lifecycle's state, as last mirrored.
    #[inline]
    pub(crate) fn state(&self) -> State {
        if !self.inner.following.load(Ordering::Relaxed) {
            return self.state_slow();
        }
        decode(self.inner.state.load(Ordering::Acquire))
    }

    /// Whether the lifecycle is Draining or later.
    #[inline]
    pub(crate) fn is_draining(&self) -> bool {
        self.state() >= State::Draining
    }

    /// How many events (Draining, Stopping, the cut) have been relayed so far. Read it
    /// *before* looking at the tokens: an event after the read moves it and wakes whoever
    /// waits on that token.
    #[inline]
    pub(crate) fn events(&self) -> u32 {
        self.inner.events.load(Ordering::Acquire)
    }

    /// Cancelled once the lifecycle is Draining or later.
    pub(crate) fn draining_token(&self) -> &CancellationToken {
        &self.inner.draining
    }

    /// Cancelled once the lifecycle is Stopping or later.
    pub(crate) fn stopping_token(&self) -> &CancellationToken {
        &self.inner.stopping
    }

    /// Cancelled when the drain timeout (or the deadline) cuts what remains.
    pub(crate) fn cut_token(&self) -> &CancellationToken {
        &self.inner.cut
    }

    #[cold]
    fn state_slow(&self) -> State {
        self.follow();
        let pending = self
            .inner
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match pending.as_ref() {
            // No runtime to follow from: read the channel itself.
            Some(upstream) => {
                let state = *upstream.states.borrow();
                self.inner.publish(state);
                state
            }
            None => decode(self.inner.state.load(Ordering::Acquire)),
        }
    }

    /// Spawn the follower task if it is not running and a runtime is.
    pub(crate) fn follow(&self) {
        if self.inner.following.load(Ordering::Acquire) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let upstream = self
            .inner
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(upstream) = upstream {
            runtime.spawn(follow(upstream, Arc::clone(&self.inner)));
            self.inner.following.store(true, Ordering::Release);
        }
    }
}

/// Mirror every state change until Stopped, or until the lifecycle is gone, and relay the
/// cut. Holds only the receiver and the token, so it never keeps a lifecycle alive.
async fn follow(mut upstream: Upstream, inner: Arc<Inner>) {
    loop {
        let state = *upstream.states.borrow_and_update();
        inner.publish(state);
        if state == State::Stopped {
            break;
        }
        tokio::select! {
            changed = upstream.states.changed() => if changed.is_err() {
                break;
            },
            () = upstream.cut.cancelled(), if !inner.cut.is_cancelled() => inner.fire(&inner.cut),
        }
    }
    // The cut comes before Stopped, but the channel may have skipped ahead of it.
    if upstream.cut.is_cancelled() {
        inner.fire(&inner.cut);
    }
}

fn encode(state: State) -> u8 {
    match state {
        State::Starting => 0,
        State::Ready => 1,
        State::Draining => 2,
        State::Stopping => 3,
        State::Stopped => 4,
    }
}

fn decode(value: u8) -> State {
    match value {
        0 => State::Starting,
        1 => State::Ready,
        2 => State::Draining,
        3 => State::Stopping,
        _ => State::Stopped,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::test_support::lifecycle;

    #[test]
    fn encoding_round_trips_in_order() {
        let states = [
            State::Starting,
            State::Ready,
            State::Draining,
            State::Stopping,
            State::Stopped,
        ];
        for pair in states.windows(2) {
            assert!(encode(pair[0]) < encode(pair[1]));
        }
        for state in states {
            assert_eq!(decode(encode(state)), state);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn relays_each_event_once_and_counts_it_before_the_token_fires() {
        let lifecycle = Lifecycle::builder()
            .shutdown_delay(std::time::Duration::ZERO)
            .drain_timeout(std::time::Duration::from_secs(1))
            .exit_process(false)
            .no_termination_log()
            .no_signals()
            .build()
            .expect("a valid configuration");
        let watch = StateWatch::new(&lifecycle);
        assert_eq!(watch.events(), 0);
        // A request that never ends: the drain timeout cuts it.
        let _request = lifecycle.requests().enter();
        let seen = tokio::spawn({
            let watch = watch.clone();
            async move {
                let mut seen = Vec::new();
                watch.draining_token().cancelled().await;
                seen.push(watch.events());
                watch.stopping_token().cancelled().await;
                seen.push(watch.events());
                watch.cut_token().cancelled().await;
                seen.push(watch.events());
                seen
            }
        });
        lifecycle.shutdown();
        let report = lifecycle.run().await;
        assert!(!report.clean, "the request was cut");
        let seen = seen.await.expect("the watching task");
        assert!(seen[0] >= 1 && seen[1] >= 2, "{seen:?}");
        assert_eq!(seen[2], 3, "draining, stopping and the cut, once each");
        tokio::task::yield_now().await;
        assert_eq!(watch.events(), 3);
        assert_eq!(watch.state(), State::Stopped);
    }

    #[test]
    fn a_detached_watch_fires_what_a_state_implies() {
        let watch = StateWatch::detached(State::Stopping);
        assert!(watch.draining_token().is_cancelled());
        assert!(watch.stopping_token().is_cancelled());
        assert!(!watch.cut_token().is_cancelled());
        assert_eq!(watch.events(), 2);
        watch.set(State::Stopping);
        assert_eq!(watch.events(), 2, "an event fires once");
        watch.cut();
        assert_eq!(watch.events(), 3);
    }

    #[test]
    fn without_a_runtime_reads_the_channel() {
        let lifecycle = lifecycle();
        let watch = StateWatch::new(&lifecycle);
        assert_eq!(watch.state(), State::Starting);
        assert!(!watch.is_draining());
        assert!(!watch.draining_token().is_cancelled());
    }

    #[tokio::test(start_paused = true)]
    async fn follows_the_lifecycle_to_the_end() {
        let lifecycle = lifecycle();
        let watch = StateWatch::new(&lifecycle);
        let mut states = lifecycle.subscribe();
        let hold = lifecycle.hold("test");
        lifecycle.shutdown();
        let run = tokio::spawn({
            let lifecycle = lifecycle.clone();
            async move { lifecycle.run().await }
        });
        let _ = states.wait_for(|s| *s == State::Draining).await;
        watch.draining_token().cancelled().await;
        assert_eq!(watch.state(), State::Draining);
        drop(hold);
        let report = run.await.expect("the lifecycle task");
        assert!(report.clean);
        tokio::task::yield_now().await;
        assert_eq!(watch.state(), State::Stopped);
    }
}
