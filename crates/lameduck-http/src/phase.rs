//! The lifecycle's state as one atomic, for the request path.
//!
//! Internal: `Lifecycle::state()` reads a `watch` channel (an `RwLock` read) and
//! `CancellationToken::is_cancelled` takes a mutex; both are shared cache lines that every
//! core would bounce on every request. Instead one task per server (or layer) follows the
//! lifecycle's channel and mirrors the state into an `AtomicU8`, which requests read with
//! a plain load. The mirror lags a transition by one scheduling of that task; nothing here
//! needs more (a response sent in that instant merely misses its `Connection: close`).

use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use lameduck::{Lifecycle, State};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// A cheap, shared view of the lifecycle's state.
#[derive(Clone)]
pub(crate) struct PhaseWatch {
    inner: Arc<Inner>,
}

struct Inner {
    state: AtomicU8,
    /// Cancelled once the lifecycle is Draining or later.
    draining: CancellationToken,
    /// Whether the follower task runs; until it does (no runtime yet), `pending` holds
    /// the receiver it will use.
    following: AtomicBool,
    pending: Mutex<Option<watch::Receiver<State>>>,
}

impl std::fmt::Debug for PhaseWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PhaseWatch")
            .field("state", &self.state())
            .finish()
    }
}

impl PhaseWatch {
    /// Start following `lifecycle`; the follower task is spawned now if a tokio runtime is
    /// running, else on the first [`state`](Self::state) read from inside one.
    pub(crate) fn new(lifecycle: &Lifecycle) -> Self {
        let rx = lifecycle.subscribe();
        let initial = *rx.borrow();
        let watch = Self {
            inner: Arc::new(Inner {
                state: AtomicU8::new(encode(initial)),
                draining: CancellationToken::new(),
                following: AtomicBool::new(false),
                pending: Mutex::new(Some(rx)),
            }),
        };
        if initial.is_shutting_down() {
            watch.inner.draining.cancel();
        }
        watch.follow();
        watch
    }

    /// A watch that follows nothing: tests move it with [`set`](Self::set).
    #[cfg(test)]
    pub(crate) fn detached(state: State) -> Self {
        let watch = Self {
            inner: Arc::new(Inner {
                state: AtomicU8::new(encode(state)),
                draining: CancellationToken::new(),
                following: AtomicBool::new(true),
                pending: Mutex::new(None),
            }),
        };
        watch.set(state);
        watch
    }

    #[cfg(test)]
    pub(crate) fn set(&self, state: State) {
        self.inner.state.store(encode(state), Ordering::Release);
        if state.is_shutting_down() {
            self.inner.draining.cancel();
        }
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

    /// Cancelled once the lifecycle is Draining or later.
    pub(crate) fn draining_token(&self) -> &CancellationToken {
        &self.inner.draining
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
            Some(rx) => {
                let state = *rx.borrow();
                self.inner.state.store(encode(state), Ordering::Release);
                if state.is_shutting_down() {
                    self.inner.draining.cancel();
                }
                state
            }
            None => decode(self.inner.state.load(Ordering::Acquire)),
        }
    }

    fn follow(&self) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let rx = self
            .inner
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(rx) = rx {
            runtime.spawn(follow(rx, Arc::clone(&self.inner)));
            self.inner.following.store(true, Ordering::Release);
        }
    }
}

/// Mirror every state change until Stopped, or until the lifecycle is gone. Holds only the
/// receiver, so it never keeps a lifecycle alive.
async fn follow(mut rx: watch::Receiver<State>, inner: Arc<Inner>) {
    loop {
        let state = *rx.borrow_and_update();
        inner.state.store(encode(state), Ordering::Release);
        if state.is_shutting_down() {
            inner.draining.cancel();
        }
        if state == State::Stopped || rx.changed().await.is_err() {
            return;
        }
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

    fn lifecycle() -> Lifecycle {
        Lifecycle::builder()
            .exit_process(false)
            .no_termination_log()
            .no_signals()
            .build()
            .expect("a valid configuration")
    }

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

    #[test]
    fn without_a_runtime_reads_the_channel() {
        let lifecycle = lifecycle();
        let watch = PhaseWatch::new(&lifecycle);
        assert_eq!(watch.state(), State::Starting);
        assert!(!watch.is_draining());
        assert!(!watch.draining_token().is_cancelled());
    }

    #[tokio::test(start_paused = true)]
    async fn follows_the_lifecycle_to_the_end() {
        let lifecycle = lifecycle();
        let watch = PhaseWatch::new(&lifecycle);
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
