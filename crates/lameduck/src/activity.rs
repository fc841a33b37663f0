//! Counting open connections and in-flight requests, so Stopping ends the moment the
//! last one is done.
//!
//! This sits on the request path, so it is two atomics and no lock: the waiter's
//! [`Notify`] is only touched when the count reaches zero while somebody is watching.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use tokio::sync::Notify;

/// A count of live units of work (connections, requests) that Stopping waits for.
/// Cheap to clone; each [`enter`](Self::enter) returns a guard that counts until dropped.
///
/// Servers built on `lameduck-http` report to the counters of
/// [`Lifecycle::connections`](crate::Lifecycle::connections) and
/// [`Lifecycle::requests`](crate::Lifecycle::requests) themselves; another server can do
/// the same so that draining waits for its work too:
///
/// ```
/// # let lifecycle = lameduck::Lifecycle::builder().exit_process(false).build().unwrap();
/// let requests = lifecycle.requests().clone();
/// let guard = requests.enter();
/// assert_eq!(requests.active(), 1);
/// drop(guard); // the response is complete
/// assert_eq!(requests.active(), 0);
/// ```
#[derive(Clone, Default)]
pub struct ActivityCounter {
    inner: Arc<CounterInner>,
}

#[derive(Default)]
struct CounterInner {
    active: AtomicUsize,
    watched: AtomicBool,
    idle: Notify,
}

impl std::fmt::Debug for ActivityCounter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActivityCounter")
            .field("active", &self.active())
            .finish()
    }
}

/// One live unit of work; dropping it ends it.
#[must_use = "the activity ends as soon as the guard is dropped"]
#[derive(Debug)]
pub struct ActivityGuard {
    counter: ActivityCounter,
}

impl ActivityCounter {
    /// A counter at zero.
    pub fn new() -> Self {
        Self::default()
    }

    /// Count one more unit of work until the returned guard is dropped.
    #[inline]
    pub fn enter(&self) -> ActivityGuard {
        self.inner.active.fetch_add(1, Ordering::SeqCst);
        ActivityGuard {
            counter: self.clone(),
        }
    }

    /// How many units are live now.
    pub fn active(&self) -> usize {
        self.inner.active.load(Ordering::SeqCst)
    }

    /// Resolves when no unit is live.
    pub async fn idle(&self) {
        self.inner.watched.store(true, Ordering::SeqCst);
        loop {
            let notified = self.inner.idle.notified();
            tokio::pin!(notified);
            // Registering before reading the count closes the window in which the last
            // guard could drop between our read and our wait.
            notified.as_mut().enable();
            if self.active() == 0 {
                return;
            }
            notified.await;
        }
    }
}

impl Drop for ActivityGuard {
    #[inline]
    fn drop(&mut self) {
        let inner = &self.counter.inner;
        if inner.active.fetch_sub(1, Ordering::SeqCst) == 1 && inner.watched.load(Ordering::SeqCst)
        {
            inner.idle.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_test::{assert_pending, assert_ready, task};

    #[test]
    fn idle_waits_for_the_last_guard() {
        let counter = ActivityCounter::new();
        let a = counter.enter();
        let b = counter.enter();
        let mut idle = task::spawn(counter.idle());
        assert_pending!(idle.poll());
        drop(a);
        assert_pending!(idle.poll());
        drop(b);
        assert!(idle.is_woken());
        assert_ready!(idle.poll());
    }

    #[test]
    fn idle_is_immediate_at_zero() {
        let counter = ActivityCounter::new();
        drop(counter.enter());
        let mut idle = task::spawn(counter.idle());
        assert_ready!(idle.poll());
    }

    #[tokio::test]
    async fn many_threads_enter_and_leave() {
        let counter = ActivityCounter::new();
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let counter = counter.clone();
                std::thread::spawn(move || {
                    for _ in 0..10_000 {
                        drop(counter.enter());
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().ok();
        }
        assert_eq!(counter.active(), 0);
        counter.idle().await;
    }
}
