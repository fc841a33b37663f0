//! Tracked background work: spawned on a [`TaskTracker`], given a [`CancellationToken`]
//! that is cancelled when Stopping begins, and awaited until the drain deadline.

use std::collections::BTreeMap;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use futures_util::FutureExt;
use tokio::task::AbortHandle;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::hooks::{HookResult, panic_message};

/// A tracked task that failed (returned an error or panicked).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct TaskFailure {
    /// The task's name.
    pub name: String,
    /// The error or panic message.
    pub error: String,
}

#[derive(Default)]
pub(crate) struct Tasks {
    pub(crate) tracker: TaskTracker,
    next_id: AtomicU64,
    running: Mutex<BTreeMap<u64, (Arc<str>, AbortHandle)>>,
    failed: Mutex<Vec<TaskFailure>>,
}

/// What a finished task asks of the lifecycle.
pub(crate) enum Finished {
    Quietly,
    /// A critical task ended; shutdown should start with this task's name as the reason.
    Critical(String),
}

impl Tasks {
    pub(crate) fn spawn<Fut>(
        self: &Arc<Self>,
        name: String,
        fut: Fut,
        on_finish: impl FnOnce(Finished) + Send + 'static,
        critical: bool,
    ) where
        Fut: std::future::Future + Send + 'static,
        Fut::Output: HookResult,
    {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let name: Arc<str> = Arc::from(name);
        let tasks = Arc::clone(self);
        let task_name = Arc::clone(&name);
        // The lock is held across spawn so the task cannot finish (and deregister) before
        // it is registered.
        // Within the span current where the task was spawned.
        let span = tracing::info_span!("task", task = %name);
        let mut running = self.running.lock().unwrap_or_else(PoisonError::into_inner);
        let handle = self.tracker.spawn(
            async move {
                let result = match AssertUnwindSafe(fut).catch_unwind().await {
                    Ok(output) => output.into_result(),
                    Err(payload) => Err(format!("panicked: {}", panic_message(payload.as_ref()))),
                };
                tasks
                    .running
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(&id);
                if let Err(error) = &result {
                    tracing::error!(task = %task_name, %error, "task failed");
                    tasks
                        .failed
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push(TaskFailure {
                            name: task_name.to_string(),
                            error: error.clone(),
                        });
                }
                on_finish(if critical {
                    Finished::Critical(task_name.to_string())
                } else {
                    Finished::Quietly
                });
            }
            .instrument(span),
        );
        running.insert(id, (name, handle.abort_handle()));
    }

    pub(crate) fn running_names(&self) -> Vec<String> {
        self.running
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .map(|(name, _)| name.to_string())
            .collect()
    }

    /// Abort whatever is still running and return its names.
    pub(crate) fn abandon(&self) -> Vec<String> {
        let running =
            std::mem::take(&mut *self.running.lock().unwrap_or_else(PoisonError::into_inner));
        running
            .into_values()
            .map(|(name, handle)| {
                handle.abort();
                name.to_string()
            })
            .collect()
    }

    pub(crate) fn failures(&self) -> Vec<TaskFailure> {
        self.failed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}
