//! Slow in-flight requests, for drain-speed benchmarks.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;

use crate::config::{RequestTemplate, Target};
use crate::exchange::{Exchange, connect, exchange};
use crate::report::{Class, Counts, LoadReport, Recorder};

/// Connects made at the same time while starting slow requests.
const CONNECT_PARALLELISM: usize = 64;

/// `count` concurrent `GET` requests, each on its own new connection — typically to
/// `/work?ms=N`, so that they are all in flight when the server is told to stop.
///
/// ```no_run
/// # async fn f() -> Result<(), lameduck_load::ConfigError> {
/// use std::time::Duration;
/// let target = lameduck_load::Target::parse("http://127.0.0.1:8080/work?ms=5000")?;
/// let slow = lameduck_load::SlowRequests::start(&target, 1000, Duration::from_secs(30));
/// slow.wait_sent().await;
/// // ... send SIGTERM to the server, then:
/// let report = slow.finish().await;
/// assert_eq!(report.counts.ok, 1000, "{:?}", report.errors);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct SlowRequests {
    tasks: Vec<JoinHandle<Recorder>>,
    sent: watch::Receiver<usize>,
    start: Instant,
}

/// How the slow requests ended.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SlowReport {
    /// Requests started.
    pub requests: usize,
    /// Counts per class (flattened in JSON).
    #[serde(flatten)]
    pub counts: Counts,
    /// Median latency of complete responses, µs; 0 if none.
    pub latency_p50_us: u64,
    /// Largest latency of a complete response, µs; 0 if none.
    pub latency_max_us: u64,
    /// From [`SlowRequests::start`] to the last request classified, ms.
    pub elapsed_ms: u64,
    /// The first few distinct error messages of each failing class, as `class: message`.
    pub errors: Vec<String>,
}

impl SlowRequests {
    /// Starts the requests (spawns a task each; call within a Tokio runtime). Each has
    /// `timeout` from being handed to its connection to the end of its response body.
    pub fn start(target: &Target, count: usize, timeout: Duration) -> SlowRequests {
        let start = Instant::now();
        let template = Arc::new(RequestTemplate::get(target));
        let limit = Arc::new(Semaphore::new(CONNECT_PARALLELISM));
        let (sent_tx, sent) = watch::channel(0usize);
        let sent_tx = Arc::new(sent_tx);
        let tasks = (0..count)
            .map(|_| {
                let (target, template) = (target.clone(), Arc::clone(&template));
                let (limit, sent_tx) = (Arc::clone(&limit), Arc::clone(&sent_tx));
                tokio::spawn(async move {
                    let mut recorder = Recorder::default();
                    let settled = AtomicBool::new(false);
                    let settle = || {
                        if !settled.swap(true, Ordering::Relaxed) {
                            sent_tx.send_modify(|n| *n += 1);
                        }
                    };
                    let attempt = start.elapsed();
                    let connected = {
                        let _permit = limit.acquire().await;
                        connect(&target, timeout).await
                    };
                    let mut conn = match connected {
                        Ok((conn, _task)) => conn,
                        Err(message) => {
                            recorder.record(attempt, Class::Refused, None);
                            recorder.error(Class::Refused, message);
                            settle();
                            return recorder;
                        }
                    };
                    recorder.connections_opened += 1;
                    let outcome = exchange(&mut conn, &template, timeout, settle).await;
                    settle();
                    let class = match &outcome {
                        // A brand-new connection closed before the request was written.
                        Exchange::ClosedBeforeSend(_) => Class::Refused,
                        other => other.class(),
                    };
                    match outcome {
                        Exchange::Response { latency, .. } => {
                            recorder.record(attempt, class, Some(latency));
                        }
                        Exchange::ClosedBeforeSend(message)
                        | Exchange::NotSent(message)
                        | Exchange::NoResponse { message, .. } => {
                            recorder.record(attempt, class, None);
                            recorder.error(class, message);
                        }
                        Exchange::Timeout => {
                            conn.abort();
                            recorder.record(attempt, class, None);
                            recorder
                                .error(class, format!("no complete response within {timeout:?}"));
                        }
                    }
                    recorder
                })
            })
            .collect();
        SlowRequests { tasks, sent, start }
    }

    /// Requests handed to hyper on a live connection (hyper writes them at once), or
    /// already failed, so far.
    pub fn sent(&self) -> usize {
        *self.sent.borrow()
    }

    /// Completes once every request has been handed to hyper on a live connection or has
    /// already failed. The bytes reach the server a moment later: allow the server a few
    /// milliseconds before assuming they are all in flight there.
    pub async fn wait_sent(&self) {
        let count = self.tasks.len();
        let mut sent = self.sent.clone();
        // If the sender is gone, every task has finished: all settled.
        let _ = sent.wait_for(|&n| n >= count).await;
    }

    /// Waits for every request to be classified and reports.
    pub async fn finish(self) -> SlowReport {
        let requests = self.tasks.len();
        let mut all = Recorder::default();
        let mut panics = Vec::new();
        for task in self.tasks {
            match task.await {
                Ok(recorder) => all.merge(recorder),
                Err(e) => panics.push(format!("task: {e}")),
            }
        }
        let mut full = LoadReport::default();
        all.finish(&mut full);
        full.errors.extend(panics);
        SlowReport {
            requests,
            counts: full.counts,
            latency_p50_us: full.latency_p50_us,
            latency_max_us: full.latency_max_us,
            elapsed_ms: u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX),
            errors: full.errors,
        }
    }
}
