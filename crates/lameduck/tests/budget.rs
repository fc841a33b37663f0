//! The shutdown budget, planned from the deadline backwards: AfterDrain hooks get their
//! timeouts before the deadline, they begin only once the work the cut ended is gone, the
//! report counts every cut whatever path the shutdown took, and a shutdown requested
//! before Ready is orderly. Paused time throughout.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use lameduck::{Hook, HookOutcome, Lifecycle, Phase, Report};
use tokio::time::Instant;

fn lifecycle(grace: Duration, drain: Duration) -> Lifecycle {
    Lifecycle::builder()
        .shutdown_delay(Duration::ZERO)
        .grace_period(grace)
        .drain_timeout(drain)
        .exit_process(false)
        .no_termination_log()
        .no_signals()
        .build()
        .expect("a valid test configuration")
}

/// A request in flight that takes `work`, or ends when the cut drops it (as a server
/// drops its handlers), whichever comes first; sets `gone` when it has ended.
fn request(lifecycle: &Lifecycle, work: Duration, gone: Arc<AtomicBool>) {
    let guard = lifecycle.requests().enter();
    let cut = lifecycle.cut_token();
    tokio::spawn(async move {
        tokio::select! {
            _ = tokio::time::sleep(work) => {}
            _ = cut.cancelled() => {}
        }
        // The handler is gone a little after the cut, as a server's connection task hears
        // of it one scheduling later.
        tokio::task::yield_now().await;
        tokio::task::yield_now().await;
        gone.store(true, Ordering::SeqCst);
        drop(guard);
    });
}

fn outcome(report: &Report, name: &str) -> HookOutcome {
    report
        .hooks
        .iter()
        .find(|h| h.name == name)
        .unwrap_or_else(|| panic!("hook {name} is in the report: {report:?}"))
        .outcome
}

#[tokio::test(start_paused = true)]
async fn after_drain_hooks_keep_their_timeout_when_a_request_outlives_the_grace_period() {
    // Grace 3 s: the deadline is at 2.7 s. A slow request would hold the drain (20 s) past
    // it; the drain is cut early enough for `persist` to get its whole second.
    let lifecycle = lifecycle(Duration::from_secs(3), Duration::from_secs(20));
    let gone = Arc::new(AtomicBool::new(false));
    request(&lifecycle, Duration::from_secs(60), Arc::clone(&gone));
    let ran_after_the_handler = Arc::new(AtomicBool::new(false));
    {
        let gone = Arc::clone(&gone);
        let ran = Arc::clone(&ran_after_the_handler);
        lifecycle.add_hook(
            Hook::new("persist", Phase::AfterDrain, move || async move {
                ran.store(gone.load(Ordering::SeqCst), Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(900)).await;
            })
            .timeout(Duration::from_secs(1)),
        );
    }
    let started = Instant::now();
    lifecycle.shutdown();
    let report = lifecycle.run().await;

    assert_eq!(outcome(&report, "persist"), HookOutcome::Ok, "{report:?}");
    assert!(ran_after_the_handler.load(Ordering::SeqCst));
    assert!(!report.deadline_exceeded, "{report:?}");
    assert_eq!(report.requests_cut, 1, "{report:?}");
    assert!(
        started.elapsed() <= Duration::from_millis(2700),
        "{report:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn after_drain_hooks_begin_only_once_the_cut_handlers_are_gone() {
    let lifecycle = lifecycle(Duration::from_secs(30), Duration::from_secs(1));
    let gone = Arc::new(AtomicBool::new(false));
    request(&lifecycle, Duration::from_secs(60), Arc::clone(&gone));
    let saw_handler_gone = Arc::new(AtomicBool::new(false));
    {
        let gone = Arc::clone(&gone);
        let saw = Arc::clone(&saw_handler_gone);
        lifecycle.on_shutdown("persist", Phase::AfterDrain, move || async move {
            saw.store(gone.load(Ordering::SeqCst), Ordering::SeqCst);
        });
    }
    lifecycle.shutdown();
    let report = lifecycle.run().await;

    assert_eq!(outcome(&report, "persist"), HookOutcome::Ok);
    assert!(
        saw_handler_gone.load(Ordering::SeqCst),
        "AfterDrain began while a cut handler was still running"
    );
    assert_eq!(report.requests_cut, 1);
}

#[tokio::test(start_paused = true)]
async fn the_report_counts_the_cut_when_a_stopping_hook_runs_into_the_deadline() {
    // GRACE=3s DRAIN=1s, a 60 s request, a task that ignores its token and a Stopping hook
    // that never ends: the drain cuts at 1 s, the deadline ends the hook.
    let lifecycle = lifecycle(Duration::from_secs(3), Duration::from_secs(1));
    request(
        &lifecycle,
        Duration::from_secs(60),
        Arc::new(AtomicBool::new(false)),
    );
    let _connection = lifecycle.connections().enter();
    lifecycle.spawn("order-worker", |_cancel| std::future::pending::<()>());
    lifecycle.on_shutdown("stop-worker", Phase::Stopping, || {
        std::future::pending::<()>()
    });
    lifecycle.shutdown();
    let report = lifecycle.run().await;

    assert_eq!(report.requests_cut, 1, "{report:?}");
    assert_eq!(report.connections_cut, 1, "{report:?}");
    assert_eq!(report.tasks_abandoned, vec!["order-worker".to_owned()]);
    assert!(!report.clean);
}

#[tokio::test(start_paused = true)]
async fn a_shutdown_before_ready_is_orderly() {
    let lifecycle = lifecycle(Duration::from_secs(30), Duration::from_secs(20));
    lifecycle.on_startup("warm-up", || tokio::time::sleep(Duration::from_secs(10)));
    let driven = {
        let lifecycle = lifecycle.clone();
        tokio::spawn(async move { lifecycle.run().await })
    };
    // The startup hook is running when the trigger comes.
    tokio::time::sleep(Duration::from_millis(5)).await;
    lifecycle.shutdown();
    let report = driven.await.expect("run");

    assert!(report.clean, "{report:?}");
    assert_eq!(report.exit_code, 0);
}

#[tokio::test(start_paused = true)]
async fn a_shutdown_while_a_failed_startup_hook_waits_to_retry_is_orderly() {
    let lifecycle = lifecycle(Duration::from_secs(30), Duration::from_secs(20));
    lifecycle.on_startup("connect", || async {
        Err::<(), _>(std::io::Error::other("not yet"))
    });
    let driven = {
        let lifecycle = lifecycle.clone();
        tokio::spawn(async move { lifecycle.run().await })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    lifecycle.shutdown();
    let report = driven.await.expect("run");

    assert!(report.clean, "{report:?}");
    assert_eq!(report.exit_code, 0);
}
