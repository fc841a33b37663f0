//! What the lifecycle records through the `metrics` facade (feature `metrics`): states and
//! their durations, the shutdown's reason and duration, hook outcomes, the cut, health
//! checks, and the sampled counts of requests and connections.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::time::Duration;

use lameduck::metrics as names;
use lameduck::{Check, CheckKind, Hook, Lifecycle, Phase};
use metrics_util::CompositeKey;
use metrics_util::debugging::{DebugValue, DebuggingRecorder};

/// What a snapshot held. Taking a snapshot resets the debugging recorder's values, so each
/// check point takes one and asks it everything.
type Seen = Vec<(
    CompositeKey,
    Option<metrics::Unit>,
    Option<metrics::SharedString>,
    DebugValue,
)>;

/// One metric's value: `labels` must all be on it (it may carry more).
fn value<'a>(seen: &'a Seen, name: &str, labels: &[(&str, &str)]) -> Option<&'a DebugValue> {
    seen.iter()
        .find(|(key, ..)| {
            let key = key.key();
            key.name() == name
                && labels
                    .iter()
                    .all(|(k, v)| key.labels().any(|l| l.key() == *k && l.value() == *v))
        })
        .map(|(.., value)| value)
}

fn gauge(seen: &Seen, name: &str, labels: &[(&str, &str)]) -> f64 {
    match value(seen, name, labels) {
        Some(DebugValue::Gauge(v)) => v.into_inner(),
        other => panic!("{name} {labels:?} is no gauge: {other:?}"),
    }
}

fn counter(seen: &Seen, name: &str, labels: &[(&str, &str)]) -> u64 {
    match value(seen, name, labels) {
        Some(DebugValue::Counter(v)) => *v,
        other => panic!("{name} {labels:?} is no counter: {other:?}"),
    }
}

fn histogram_len(seen: &Seen, name: &str, labels: &[(&str, &str)]) -> usize {
    match value(seen, name, labels) {
        Some(DebugValue::Histogram(v)) => v.len(),
        other => panic!("{name} {labels:?} is no histogram: {other:?}"),
    }
}

/// The current-thread runtime runs every task the lifecycle spawns on this thread, so the
/// thread's local recorder sees them all.
#[tokio::test(start_paused = true)]
async fn a_shutdown_is_recorded_from_ready_to_stopped() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);

    let lifecycle = Lifecycle::builder()
        .exit_process(false)
        .no_termination_log()
        .no_signals()
        .shutdown_delay(Duration::from_secs(2))
        .drain_timeout(Duration::from_secs(3))
        .grace_period(Duration::from_secs(60))
        .build()
        .unwrap();
    lifecycle.health().add(Check::readiness("db", || async {
        Err::<(), _>("connection refused")
    }));
    lifecycle.on_shutdown("flush", Phase::AfterDrain, || async {});
    lifecycle.on_shutdown("deregister", Phase::Draining, || async {
        Err::<(), _>("registry unreachable")
    });
    lifecycle.spawn("stubborn", |_cancel| std::future::pending::<()>());
    // A request that outlives the drain is cut: its server drops it when the cut fires.
    let request = lifecycle.requests().enter();
    tokio::spawn({
        let cut = lifecycle.cut_token();
        async move {
            cut.cancelled().await;
            drop(request);
        }
    });

    let run = tokio::spawn({
        let lifecycle = lifecycle.clone();
        async move { lifecycle.run().await }
    });
    lifecycle.ready().await;
    let report = lifecycle.health().check(CheckKind::Readiness).await;
    assert!(!report.ok);
    lifecycle.record_metrics();
    let seen = snapshotter.snapshot().into_vec();
    assert_eq!(gauge(&seen, names::STATE, &[("state", "ready")]), 1.0);
    assert_eq!(gauge(&seen, names::STATE, &[("state", "starting")]), 0.0);
    assert_eq!(gauge(&seen, names::REQUESTS_IN_FLIGHT, &[]), 1.0);
    assert_eq!(gauge(&seen, names::CONNECTIONS_OPEN, &[]), 0.0);

    assert_eq!(
        counter(
            &seen,
            names::HEALTH_CHECKS,
            &[("check", "db"), ("kind", "readiness"), ("result", "fail")]
        ),
        1
    );
    assert_eq!(
        histogram_len(
            &seen,
            names::HEALTH_CHECK_DURATION,
            &[("check", "db"), ("kind", "readiness")]
        ),
        1
    );

    lifecycle.shutdown();
    lifecycle.draining().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    lifecycle.record_metrics();
    let seen = snapshotter.snapshot().into_vec();
    assert_eq!(gauge(&seen, names::STATE, &[("state", "draining")]), 1.0);
    assert_eq!(gauge(&seen, names::STATE, &[("state", "ready")]), 0.0);
    assert_eq!(
        gauge(&seen, names::STATE_DURATION, &[("state", "draining")]),
        1.0
    );
    assert_eq!(gauge(&seen, names::SHUTDOWN_DURATION, &[]), 1.0);
    assert_eq!(counter(&seen, names::SHUTDOWNS, &[("reason", "api")]), 1);
    // The Draining hook has run.
    assert_eq!(
        counter(
            &seen,
            names::HOOK_RUNS,
            &[
                ("hook", "deregister"),
                ("phase", "draining"),
                ("outcome", "failed")
            ]
        ),
        1
    );

    let report = run.await.unwrap();
    assert_eq!(report.requests_cut, 1);
    let seen = snapshotter.snapshot().into_vec();
    assert_eq!(gauge(&seen, names::STATE, &[("state", "stopped")]), 1.0);
    assert_eq!(gauge(&seen, names::STATE, &[("state", "stopping")]), 0.0);
    assert_eq!(
        gauge(&seen, names::STATE_DURATION, &[("state", "draining")]),
        2.0
    );
    assert_eq!(
        gauge(&seen, names::STATE_DURATION, &[("state", "stopping")]),
        3.0
    );
    assert_eq!(gauge(&seen, names::SHUTDOWN_DURATION, &[]), 5.0);
    assert_eq!(counter(&seen, names::REQUESTS_CUT, &[]), 1);
    assert_eq!(counter(&seen, names::CONNECTIONS_CUT, &[]), 0);
    assert_eq!(counter(&seen, names::TASKS_ABANDONED, &[]), 1);
    assert_eq!(
        counter(
            &seen,
            names::HOOK_RUNS,
            &[
                ("hook", "flush"),
                ("phase", "after_drain"),
                ("outcome", "ok")
            ]
        ),
        1
    );
    assert_eq!(
        histogram_len(&seen, names::HOOK_DURATION, &[("hook", "flush")]),
        1
    );
}

/// A hook the deadline never let begin is counted as abandoned, once.
#[tokio::test(start_paused = true)]
async fn a_hook_that_never_ran_is_counted_as_abandoned() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);

    let lifecycle = Lifecycle::builder()
        .exit_process(false)
        .no_termination_log()
        .no_signals()
        .shutdown_delay(Duration::ZERO)
        .grace_period(Duration::from_secs(10))
        .build()
        .unwrap();
    // AfterDrain hooks run in reverse registration order: "hangs" first, into the deadline.
    lifecycle.on_shutdown("never", Phase::AfterDrain, || async {});
    lifecycle.add_hook(
        Hook::new("hangs", Phase::AfterDrain, std::future::pending::<()>)
            .timeout(Duration::from_secs(3600)),
    );
    lifecycle.shutdown();
    let report = lifecycle.run().await;
    assert!(report.deadline_exceeded, "{report:?}");
    let seen = snapshotter.snapshot().into_vec();
    for hook in ["hangs", "never"] {
        assert_eq!(
            counter(
                &seen,
                names::HOOK_RUNS,
                &[("hook", hook), ("outcome", "abandoned")]
            ),
            1,
            "{hook}: {report:?}"
        );
    }
}
