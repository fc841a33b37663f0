//! Holds (beacons): named guards that keep the lifecycle from moving on while they live.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::watch;

/// A named guard that keeps the lifecycle where it is until it is dropped: out of
/// `Stopping` (from [`Lifecycle::hold`](crate::Lifecycle::hold)), out of `Ready`
/// (from [`Lifecycle::hold_readiness`](crate::Lifecycle::hold_readiness)), or from
/// finishing (from [`Lifecycle::hold_exit`](crate::Lifecycle::hold_exit)). The shutdown
/// deadline overrides every hold; holds still alive then are named in the report.
///
/// Dropping a hold at once releases it at once, which is why it is `#[must_use]`:
/// `let _ = lifecycle.hold("x");` holds nothing, `let _hold = lifecycle.hold("x");` does.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// let lifecycle = lameduck::Lifecycle::builder().exit_process(false).build().unwrap();
/// let hold = lifecycle.hold("flush-cache");
/// tokio::spawn(async move {
///     // ... finish something that must happen while still serving ...
///     drop(hold);
/// });
/// # }
/// ```
#[must_use = "a hold is released as soon as it is dropped"]
pub struct Hold {
    set: Arc<HoldSet>,
    id: u64,
}

impl Hold {
    /// The name given when the hold was taken.
    pub fn name(&self) -> String {
        self.set
            .held
            .borrow()
            .get(&self.id)
            .map(|n| n.to_string())
            .unwrap_or_default()
    }
}

impl fmt::Debug for Hold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hold").field("name", &self.name()).finish()
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        self.set.held.send_modify(|held| {
            held.remove(&self.id);
        });
    }
}

/// The live holds of one kind, observable so a waiter wakes the moment the last goes.
pub(crate) struct HoldSet {
    next_id: AtomicU64,
    held: watch::Sender<BTreeMap<u64, Arc<str>>>,
}

impl HoldSet {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Self {
            next_id: AtomicU64::new(0),
            held: watch::Sender::new(BTreeMap::new()),
        })
    }

    pub(crate) fn take(self: &Arc<Self>, name: &str) -> Hold {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.held.send_modify(|held| {
            held.insert(id, Arc::from(name));
        });
        Hold {
            set: Arc::clone(self),
            id,
        }
    }

    pub(crate) fn names(&self) -> Vec<String> {
        self.held.borrow().values().map(|n| n.to_string()).collect()
    }

    pub(crate) async fn released(&self) {
        let mut rx = self.held.subscribe();
        // The sender lives in `self`, so `wait_for` cannot fail while we are borrowed.
        let _ = rx.wait_for(|held| held.is_empty()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio_test::{assert_pending, assert_ready, task};

    #[test]
    fn released_waits_for_every_hold() {
        let set = HoldSet::new();
        let a = set.take("a");
        let b = set.take("b");
        assert_eq!(set.names(), vec!["a".to_string(), "b".to_string()]);
        let mut released = task::spawn(set.released());
        assert_pending!(released.poll());
        drop(a);
        assert!(released.is_woken());
        assert_pending!(released.poll());
        assert_eq!(b.name(), "b");
        drop(b);
        assert!(released.is_woken());
        assert_ready!(released.poll());
        assert!(set.names().is_empty());
    }

    #[test]
    fn released_is_ready_when_nothing_is_held() {
        let set = HoldSet::new();
        let mut released = task::spawn(set.released());
        assert_ready!(released.poll());
    }
}
