//! [`StopToken`]: how a long-lived response (SSE, WebSocket, a streaming body) learns
//! that it should end itself.

use std::sync::Arc;

use lameduck::{CancellationToken, Lifecycle};
use tokio_util::sync::WaitForCancellationFuture;

use crate::body::UntilStopping;

/// Fires when the lifecycle enters Stopping: listeners are closed, and every long-lived
/// response should finish what it is sending and end, before `drain_timeout` cuts it.
///
/// Build one with [`StopToken::new`] and hand it to the handlers that need it (axum:
/// `.layer(Extension(signal))` on their routes, or the router's state); or have
/// [`Server::insert_stop_token`](crate::Server::insert_stop_token) put one into
/// every request's extensions. It is the lifecycle's
/// [`stop_token`](Lifecycle::stop_token) under a name that says what it is for.
///
/// For a streaming body, [`until_stopping`](Self::until_stopping) does the work: the
/// stream ends cleanly (between two frames) when the signal fires.
///
/// ```
/// use std::time::Duration;
/// use lameduck_http::StopToken;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let lifecycle = lameduck::Lifecycle::builder()
///     .shutdown_delay(Duration::ZERO)
///     .exit_process(false)
///     .no_termination_log()
///     .no_signals()
///     .build()
///     .unwrap();
/// let signal = StopToken::new(&lifecycle);
///
/// // A WebSocket or SSE loop selects on the signal next to its own work.
/// let session = tokio::spawn(async move {
///     let mut ticks = 0;
///     loop {
///         tokio::select! {
///             _ = signal.stopping() => return ticks, // say goodbye, then end
///             _ = tokio::time::sleep(Duration::from_secs(1)) => ticks += 1,
///         }
///     }
/// });
///
/// lifecycle.shutdown();
/// let report = lifecycle.run().await;
/// assert!(report.clean);
/// assert!(session.await.unwrap() < 2);
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct StopToken {
    // Behind an `Arc`: cloning a `CancellationToken` takes its node's mutex, and a server
    // clones one into every request.
    stop: Arc<CancellationToken>,
}

impl StopToken {
    /// The signal of `lifecycle`.
    pub fn new(lifecycle: &Lifecycle) -> Self {
        Self {
            stop: Arc::new(lifecycle.stop_token()),
        }
    }

    /// Whether Stopping has begun.
    pub fn is_stopping(&self) -> bool {
        self.stop.is_cancelled()
    }

    /// Resolves when Stopping begins (at once if it has).
    pub fn stopping(&self) -> WaitForCancellationFuture<'_> {
        self.stop.cancelled()
    }

    /// The underlying token (the lifecycle's stop token), e.g. to hand to a task.
    pub fn token(&self) -> &CancellationToken {
        &self.stop
    }

    /// Wrap a streaming response body so that it ends, cleanly and between two frames,
    /// when Stopping begins. Meant for endless streams such as server-sent events: the
    /// client sees a complete response and reconnects (elsewhere).
    pub fn until_stopping<B>(&self, body: B) -> UntilStopping<B> {
        UntilStopping::new(body, CancellationToken::clone(&self.stop))
    }
}
