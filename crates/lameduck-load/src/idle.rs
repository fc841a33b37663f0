//! Idle keep-alive connections, for drain-speed benchmarks.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, watch};

use crate::config::{RequestTemplate, Target};
use crate::exchange::{Conn, Exchange, connect, exchange};

/// Connections opened at the same time while opening idle connections, so a large count
/// does not overflow the server's accept backlog.
const OPEN_PARALLELISM: usize = 64;

/// `count` keep-alive connections, each used for one `GET` and then held idle: what a
/// server has to close when it stops (`Stopping` closes idle connections at once).
///
/// The server closing a held connection is seen (hyper reads the EOF of an idle
/// connection), counted by [`closed`](IdleConnections::closed) and awaited by
/// [`wait_all_closed`](IdleConnections::wait_all_closed). Dropping the value closes
/// whatever is still open.
///
/// Each connection is a file descriptor in this process and one in the server: 10,000 of
/// them need `ulimit -n` above 10,000 for each (the common default of 1,024 is not enough).
///
/// ```no_run
/// # async fn f() -> Result<(), lameduck_load::ConfigError> {
/// use std::time::Duration;
/// let target = lameduck_load::Target::parse("http://127.0.0.1:8080/")?;
/// let idle = lameduck_load::IdleConnections::open(&target, 1000, Duration::from_secs(5)).await;
/// assert_eq!(idle.opened(), 1000, "{:?}", idle.errors());
/// // ... send SIGTERM to the server, then:
/// idle.wait_all_closed().await;
/// # Ok(()) }
/// ```
pub struct IdleConnections {
    /// Held for their senders: dropping one lets hyper close the connection.
    held: Vec<Conn>,
    failed: usize,
    errors: Vec<String>,
    closed: watch::Receiver<usize>,
    opened_in: Duration,
}

impl std::fmt::Debug for IdleConnections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdleConnections")
            .field("opened", &self.opened())
            .field("failed", &self.failed)
            .field("closed", &self.closed())
            .field("errors", &self.errors)
            .finish()
    }
}

impl IdleConnections {
    /// Opens `count` connections to `target`, sends one `GET` of the target's path on each
    /// and reads the response, each within `timeout`. Connections that fail, or whose
    /// response says `Connection: close`, are counted in [`failed`](Self::failed).
    pub async fn open(target: &Target, count: usize, timeout: Duration) -> IdleConnections {
        let start = Instant::now();
        let template = Arc::new(RequestTemplate::get(target));
        let limit = Arc::new(Semaphore::new(OPEN_PARALLELISM));
        let (closed_tx, closed) = watch::channel(0usize);
        let closed_tx = Arc::new(closed_tx);
        let tasks: Vec<_> = (0..count)
            .map(|_| {
                let (target, template, limit) = (target.clone(), template.clone(), limit.clone());
                let closed_tx = Arc::clone(&closed_tx);
                tokio::spawn(async move {
                    let _permit = limit.acquire().await.map_err(|e| e.to_string())?;
                    let (mut conn, task) = connect(&target, timeout).await?;
                    match exchange(&mut conn, &template, timeout, || {}).await {
                        Exchange::Response { close: false, .. } => {}
                        Exchange::Response { close: true, .. } => {
                            return Err("the server closed the connection after the response \
                                        (Connection: close)"
                                .to_owned());
                        }
                        Exchange::ClosedBeforeSend(m)
                        | Exchange::NotSent(m)
                        | Exchange::NoResponse { message: m, .. } => return Err(m),
                        Exchange::Timeout => return Err(format!("timeout after {timeout:?}")),
                    }
                    tokio::spawn(async move {
                        // Ends when the server closes the idle connection (or on drop).
                        let _ = task.await;
                        closed_tx.send_modify(|n| *n += 1);
                    });
                    Ok::<_, String>(conn)
                })
            })
            .collect();
        let mut held = Vec::with_capacity(count);
        let mut failed = 0;
        let mut errors = Vec::new();
        for task in tasks {
            let error = match task.await {
                Ok(Ok(conn)) => {
                    held.push(conn);
                    continue;
                }
                Ok(Err(e)) => e,
                Err(e) => e.to_string(),
            };
            failed += 1;
            if errors.len() < 5 && !errors.contains(&error) {
                errors.push(error);
            }
        }
        IdleConnections {
            held,
            failed,
            errors,
            closed,
            opened_in: start.elapsed(),
        }
    }

    /// Connections opened and held (each got a complete keep-alive response).
    pub fn opened(&self) -> usize {
        self.held.len()
    }

    /// Connections that could not be opened and held.
    pub fn failed(&self) -> usize {
        self.failed
    }

    /// The first few distinct reasons connections failed.
    pub fn errors(&self) -> &[String] {
        &self.errors
    }

    /// How long opening took.
    pub fn opened_in(&self) -> Duration {
        self.opened_in
    }

    /// Held connections the server has closed so far.
    pub fn closed(&self) -> usize {
        *self.closed.borrow()
    }

    /// Completes once the server has closed every held connection.
    pub async fn wait_all_closed(&self) {
        let opened = self.opened();
        let mut closed = self.closed.clone();
        // The sender lives as long as any held connection's watcher; if it is gone,
        // every watcher has finished, i.e. every connection has closed.
        let _ = closed.wait_for(|&n| n >= opened).await;
    }
}
