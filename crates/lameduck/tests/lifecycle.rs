//! The lifecycle engine under paused time: transitions, triggers, hooks, holds, tasks and
//! the deadline.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use lameduck::{Builder, Hook, HookOutcome, Lifecycle, Phase, Reason, Report, State};
use tokio::time::Instant;

fn builder() -> Builder {
    Lifecycle::builder()
        .exit_process(false)
        .no_termination_log()
        .no_signals()
        .shutdown_delay(Duration::from_secs(5))
        .drain_timeout(Duration::from_secs(10))
        .grace_period(Duration::from_secs(60))
}

/// Let every runnable task run without letting paused time move.
async fn settle() {
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
}

fn spawn_run(lifecycle: &Lifecycle) -> tokio::task::JoinHandle<Report> {
    let lifecycle = lifecycle.clone();
    tokio::spawn(async move { lifecycle.run().await })
}

fn outcome(report: &Report, name: &str) -> HookOutcome {
    hook(report, name).outcome
}

fn hook<'a>(report: &'a Report, name: &str) -> &'a lameduck::HookReport {
    report
        .hooks
        .iter()
        .find(|h| h.name == name)
        .unwrap_or_else(|| panic!("no hook {name} in {:?}", report.hooks))
}

#[tokio::test(start_paused = true)]
async fn each_transition_in_order_and_each_waits_for_its_cause() {
    let lifecycle = builder().build().unwrap();
    let mut states = lifecycle.subscribe();
    let warm_up = lifecycle.hold_readiness("warm-up");
    let run = spawn_run(&lifecycle);

    settle().await;
    assert_eq!(lifecycle.state(), State::Starting);
    drop(warm_up);
    lifecycle.ready().await;
    assert_eq!(lifecycle.state(), State::Ready);
    assert_eq!(*states.borrow_and_update(), State::Ready);

    let request = lifecycle.requests().enter();
    let hold = lifecycle.hold("finish-batch");
    let triggered_at = Instant::now();
    assert!(lifecycle.shutdown().first);
    lifecycle.draining().await;
    assert_eq!(lifecycle.state(), State::Draining);

    // The delay has passed, but the hold keeps the lifecycle in Draining.
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert_eq!(lifecycle.state(), State::Draining);
    drop(hold);
    lifecycle.stopping().await;
    assert_eq!(triggered_at.elapsed(), Duration::from_secs(7));
    assert!(lifecycle.stop_token().is_cancelled());

    // In Stopping until the in-flight request is done.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(lifecycle.state(), State::Stopping);
    drop(request);
    lifecycle.stopped().await;
    assert_eq!(triggered_at.elapsed(), Duration::from_secs(8));

    let report = run.await.unwrap();
    let order: Vec<State> = report.states.iter().map(|p| p.state).collect();
    assert_eq!(
        order,
        [
            State::Starting,
            State::Ready,
            State::Draining,
            State::Stopping,
            State::Stopped
        ]
    );
    let draining = report
        .states
        .iter()
        .find(|p| p.state == State::Draining)
        .unwrap();
    assert_eq!(draining.duration_ms, 7000);
    assert!(report.clean, "{report:?}");
    assert_eq!(report.duration_ms, 8000);
    assert_eq!(report.reason, Reason::Api);
    assert_eq!(report.exit_code, 0);
    assert!(!lifecycle.cut_token().is_cancelled());
}

#[tokio::test(start_paused = true)]
async fn delay_alone_decides_when_stopping_begins() {
    let lifecycle = builder().build().unwrap();
    let run = spawn_run(&lifecycle);
    lifecycle.ready().await;
    let start = Instant::now();
    lifecycle.trigger(lameduck::Reason::PreStop);
    let mut stopping = tokio_test::task::spawn(lifecycle.stopping());
    tokio::time::sleep(Duration::from_millis(4_999)).await;
    tokio_test::assert_pending!(stopping.poll());
    tokio::time::sleep(Duration::from_millis(1)).await;
    settle().await;
    tokio_test::assert_ready!(stopping.poll());
    assert_eq!(start.elapsed(), Duration::from_secs(5));
    let report = run.await.unwrap();
    assert_eq!(report.reason.to_string(), "prestop");
}

#[tokio::test(start_paused = true)]
async fn a_trigger_before_ready_goes_straight_to_draining() {
    let lifecycle = builder().shutdown_delay(Duration::ZERO).build().unwrap();
    let _never_ready = lifecycle.hold_readiness("never");
    let run = spawn_run(&lifecycle);
    settle().await;
    lifecycle.shutdown();
    let report = run.await.unwrap();
    let order: Vec<State> = report.states.iter().map(|p| p.state).collect();
    assert_eq!(
        order,
        [
            State::Starting,
            State::Draining,
            State::Stopping,
            State::Stopped
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn first_trigger_wins_and_concurrent_triggers_see_one_shutdown() {
    let lifecycle = builder().build().unwrap();
    let run = spawn_run(&lifecycle);
    lifecycle.ready().await;
    let barrier = Arc::new(tokio::sync::Barrier::new(100));
    let triggers: Vec<_> = (0..100)
        .map(|i| {
            let lifecycle = lifecycle.clone();
            let barrier = barrier.clone();
            tokio::spawn(async move {
                barrier.wait().await;
                match i % 3 {
                    0 => lifecycle.shutdown(),
                    1 => lifecycle.trigger(lameduck::Reason::PreStop),
                    _ => lifecycle.trigger(Reason::Task(format!("t{i}"))),
                }
            })
        })
        .collect();
    let mut answers = Vec::new();
    for t in triggers {
        answers.push(t.await.unwrap());
    }
    assert_eq!(answers.iter().filter(|a| a.first).count(), 1);
    let winner = answers.iter().find(|a| a.first).unwrap().reason.clone();
    assert!(answers.iter().all(|a| a.reason == winner));
    let report = run.await.unwrap();
    assert_eq!(report.reason, winner);
    assert_eq!(lifecycle.reason(), Some(winner));
    // A trigger after the end changes nothing either.
    assert!(!lifecycle.shutdown().first);
}

#[tokio::test(start_paused = true)]
async fn hooks_run_exactly_once_under_100_concurrent_triggers_and_runs() {
    let lifecycle = builder().build().unwrap();
    let counts: Arc<[AtomicUsize; 3]> = Arc::new(Default::default());
    for (i, phase) in Phase::ALL.into_iter().enumerate() {
        let counts = counts.clone();
        lifecycle.on_shutdown(format!("count-{phase}"), phase, move || async move {
            counts[i].fetch_add(1, Ordering::SeqCst);
        });
    }
    let mut runs = Vec::new();
    for i in 0..100 {
        let lifecycle = lifecycle.clone();
        runs.push(tokio::spawn(async move {
            if i % 2 == 0 {
                lifecycle.trigger(lameduck::Reason::PreStop);
            } else {
                lifecycle.shutdown();
            }
            lifecycle.run().await
        }));
    }
    let mut reports = Vec::new();
    for r in runs {
        reports.push(r.await.unwrap());
    }
    for count in counts.iter() {
        assert_eq!(count.load(Ordering::SeqCst), 1);
    }
    assert!(reports.iter().all(|r| r.hooks.len() == 3 && r.clean));
    assert!(reports.windows(2).all(|w| w[0].to_json() == w[1].to_json()));
}

#[tokio::test(start_paused = true)]
async fn hooks_run_in_phase_order_and_reverse_registration_order() {
    let lifecycle = builder().shutdown_delay(Duration::ZERO).build().unwrap();
    let order = Arc::new(Mutex::new(Vec::new()));
    for (name, phase) in [
        ("after-1", Phase::AfterDrain),
        ("stop-1", Phase::Stopping),
        ("drain-1", Phase::Draining),
        ("after-2", Phase::AfterDrain),
        ("stop-2", Phase::Stopping),
    ] {
        let order = order.clone();
        lifecycle.on_shutdown(name, phase, move || async move {
            order.lock().unwrap().push(name);
        });
    }
    lifecycle.shutdown();
    let report = lifecycle.run().await;
    assert_eq!(
        *order.lock().unwrap(),
        ["drain-1", "stop-2", "stop-1", "after-2", "after-1"]
    );
    let reported: Vec<&str> = report.hooks.iter().map(|h| h.name.as_str()).collect();
    assert_eq!(
        reported,
        ["drain-1", "stop-2", "stop-1", "after-2", "after-1"]
    );
    assert!(report.clean);
}

#[tokio::test(start_paused = true)]
async fn concurrent_phase_runs_its_hooks_together() {
    let lifecycle = builder()
        .shutdown_delay(Duration::ZERO)
        .concurrent_hooks(Phase::AfterDrain)
        .build()
        .unwrap();
    for i in 0..3 {
        lifecycle.on_shutdown(format!("slow-{i}"), Phase::AfterDrain, || {
            tokio::time::sleep(Duration::from_secs(1))
        });
    }
    let start = Instant::now();
    lifecycle.shutdown();
    let report = lifecycle.run().await;
    assert_eq!(start.elapsed(), Duration::from_secs(1));
    assert_eq!(report.hooks.len(), 3);
    assert!(report.clean);
}

#[tokio::test(start_paused = true)]
async fn hanging_hook_is_cut_at_its_timeout_and_panicking_hook_does_not_stop_the_others() {
    let lifecycle = builder().shutdown_delay(Duration::ZERO).build().unwrap();
    let ran = Arc::new(AtomicUsize::new(0));
    {
        let ran = ran.clone();
        lifecycle.on_shutdown("first-registered", Phase::AfterDrain, move || async move {
            ran.fetch_add(1, Ordering::SeqCst);
        });
    }
    lifecycle.add_hook(
        Hook::new("hangs", Phase::AfterDrain, std::future::pending::<()>)
            .timeout(Duration::from_secs(2)),
    );
    lifecycle.on_shutdown("panics", Phase::AfterDrain, || async {
        if true {
            panic!("hook exploded");
        }
    });
    lifecycle.on_shutdown("fails", Phase::AfterDrain, || async {
        Err::<(), _>("disk full")
    });
    let start = Instant::now();
    lifecycle.shutdown();
    let report = lifecycle.run().await;
    assert_eq!(start.elapsed(), Duration::from_secs(2));
    assert_eq!(ran.load(Ordering::SeqCst), 1);
    assert_eq!(outcome(&report, "first-registered"), HookOutcome::Ok);
    assert_eq!(outcome(&report, "hangs"), HookOutcome::TimedOut);
    assert_eq!(outcome(&report, "panics"), HookOutcome::Panicked);
    assert_eq!(outcome(&report, "fails"), HookOutcome::Failed);
    let fails = report.hooks.iter().find(|h| h.name == "fails").unwrap();
    assert_eq!(fails.error.as_deref(), Some("disk full"));
    assert!(!report.clean);
    assert!(!report.deadline_exceeded);
    assert_eq!(report.exit_code, lameduck::EXIT_UNCLEAN);
}

#[tokio::test(start_paused = true)]
async fn deadline_overrides_a_hold() {
    // grace 10 s → safety margin 1 s → deadline 9 s after the trigger.
    let lifecycle = builder()
        .grace_period(Duration::from_secs(10))
        .drain_timeout(Duration::from_secs(2))
        .shutdown_delay(Duration::from_secs(1))
        .build()
        .unwrap();
    let _forgotten = lifecycle.hold("forgotten");
    let start = Instant::now();
    lifecycle.shutdown();
    let report = lifecycle.run().await;
    assert_eq!(start.elapsed(), Duration::from_secs(9));
    assert!(report.deadline_exceeded);
    assert_eq!(report.holds_abandoned, ["forgotten"]);
    assert_eq!(report.exit_code, lameduck::EXIT_DEADLINE);
    assert!(lifecycle.cut_token().is_cancelled());
}

#[tokio::test(start_paused = true)]
async fn a_forgotten_hold_is_given_up_in_time_for_the_after_drain_hooks() {
    // Deadline at 9 s; `after` needs its 5 s (the default hook timeout) and the cut its
    // 250 ms to settle: the lame duck is ended at 3.75 s, and `after` runs in full.
    let lifecycle = builder()
        .grace_period(Duration::from_secs(10))
        .drain_timeout(Duration::from_secs(2))
        .shutdown_delay(Duration::from_secs(1))
        .build()
        .unwrap();
    let _forgotten = lifecycle.hold("forgotten");
    lifecycle.on_shutdown("after", Phase::AfterDrain, || {
        tokio::time::sleep(Duration::from_secs(4))
    });
    let start = Instant::now();
    lifecycle.shutdown();
    let report = lifecycle.run().await;
    assert_eq!(start.elapsed(), Duration::from_millis(3750 + 4000));
    assert!(!report.deadline_exceeded);
    assert_eq!(report.holds_abandoned, ["forgotten"]);
    assert_eq!(outcome(&report, "after"), HookOutcome::Ok);
    assert_eq!(report.exit_code, lameduck::EXIT_UNCLEAN);
}

#[tokio::test(start_paused = true)]
async fn deadline_is_honoured_with_a_hook_that_never_returns() {
    let lifecycle = builder()
        .grace_period(Duration::from_secs(10))
        .shutdown_delay(Duration::from_secs(1))
        .hook_timeout(Duration::from_secs(3600))
        .build()
        .unwrap();
    lifecycle.on_shutdown("never-returns", Phase::Stopping, std::future::pending::<()>);
    let start = Instant::now();
    lifecycle.shutdown();
    let report = lifecycle.run().await;
    assert_eq!(start.elapsed(), Duration::from_secs(9));
    assert!(report.deadline_exceeded);
    assert_eq!(outcome(&report, "never-returns"), HookOutcome::Abandoned);
    // It ran from Stopping (after the 1 s delay) until the deadline: the time it had, not 0
    // because it never finished.
    assert_eq!(report.states[1].duration_ms, 1000, "{:?}", report.states);
    assert_eq!(hook(&report, "never-returns").duration_ms, 8000);
    assert!(!report.clean);
    assert_eq!(report.exit_code, lameduck::EXIT_DEADLINE);
}

#[tokio::test(start_paused = true)]
async fn a_stopping_hook_that_never_returns_is_given_up_in_time_for_the_after_drain_hooks() {
    let lifecycle = builder()
        .grace_period(Duration::from_secs(10))
        .shutdown_delay(Duration::from_secs(1))
        .hook_timeout(Duration::from_secs(3600))
        .build()
        .unwrap();
    lifecycle.on_shutdown("never-returns", Phase::Stopping, std::future::pending::<()>);
    lifecycle.add_hook(
        lameduck::Hook::new("after", Phase::AfterDrain, || {
            tokio::time::sleep(Duration::from_millis(1500))
        })
        .timeout(Duration::from_secs(2)),
    );
    let start = Instant::now();
    lifecycle.shutdown();
    let report = lifecycle.run().await;
    // Deadline 9 s, less 2 s for `after` and 250 ms for the cut to settle.
    assert_eq!(start.elapsed(), Duration::from_millis(6750 + 1500));
    assert!(!report.deadline_exceeded);
    assert_eq!(outcome(&report, "never-returns"), HookOutcome::Abandoned);
    // It ran from the trigger (the budget gave the lame duck no time) until it was given up.
    assert_eq!(hook(&report, "never-returns").duration_ms, 6750);
    assert_eq!(outcome(&report, "after"), HookOutcome::Ok);
    assert_eq!(report.exit_code, lameduck::EXIT_UNCLEAN);
}

#[tokio::test(start_paused = true)]
async fn tasks_are_cancelled_at_stopping_and_awaited() {
    let lifecycle = builder()
        .shutdown_delay(Duration::from_secs(2))
        .build()
        .unwrap();
    let finished = Arc::new(AtomicUsize::new(0));
    let cancelled_at = Arc::new(Mutex::new(None));
    {
        let finished = finished.clone();
        let cancelled_at = cancelled_at.clone();
        lifecycle.spawn("consumer", move |cancel| async move {
            cancel.cancelled().await;
            *cancelled_at.lock().unwrap() = Some(Instant::now());
            // Finish the message in hand.
            tokio::time::sleep(Duration::from_secs(3)).await;
            finished.fetch_add(1, Ordering::SeqCst);
        });
    }
    let start = Instant::now();
    lifecycle.shutdown();
    let report = lifecycle.run().await;
    assert_eq!(finished.load(Ordering::SeqCst), 1);
    let cancelled_at = cancelled_at.lock().unwrap().unwrap();
    assert_eq!(cancelled_at - start, Duration::from_secs(2));
    assert_eq!(start.elapsed(), Duration::from_secs(5));
    assert!(report.clean, "{report:?}");
    assert!(report.tasks_abandoned.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_task_that_ignores_cancellation_is_abandoned_at_the_drain_timeout() {
    let lifecycle = builder()
        .shutdown_delay(Duration::ZERO)
        .drain_timeout(Duration::from_secs(4))
        .build()
        .unwrap();
    lifecycle.spawn("stubborn", |_cancel| std::future::pending::<()>());
    lifecycle.spawn("fails", |_cancel| async { Err::<(), _>("broken pipe") });
    lifecycle.on_shutdown("after", Phase::AfterDrain, || async {});
    let start = Instant::now();
    lifecycle.shutdown();
    let report = lifecycle.run().await;
    assert_eq!(start.elapsed(), Duration::from_secs(4));
    assert_eq!(report.tasks_abandoned, ["stubborn"]);
    assert_eq!(report.tasks_failed.len(), 1);
    assert_eq!(report.tasks_failed[0].name, "fails");
    assert_eq!(report.tasks_failed[0].error, "broken pipe");
    // The drain timeout is not the deadline: the AfterDrain hooks still run.
    assert_eq!(outcome(&report, "after"), HookOutcome::Ok);
    assert!(!report.deadline_exceeded);
    assert_eq!(report.exit_code, lameduck::EXIT_UNCLEAN);
}

#[tokio::test(start_paused = true)]
async fn in_flight_work_past_the_drain_timeout_is_counted_as_cut() {
    let lifecycle = builder()
        .shutdown_delay(Duration::ZERO)
        .drain_timeout(Duration::from_secs(3))
        .build()
        .unwrap();
    let _connection = lifecycle.connections().enter();
    let _request = lifecycle.requests().enter();
    lifecycle.shutdown();
    let report = lifecycle.run().await;
    assert_eq!(report.connections_cut, 1);
    assert_eq!(report.requests_cut, 1);
    assert!(lifecycle.cut_token().is_cancelled());
    assert!(!report.clean);
}

#[tokio::test(start_paused = true)]
async fn a_failing_critical_task_triggers_shutdown() {
    let lifecycle = builder().shutdown_delay(Duration::ZERO).build().unwrap();
    lifecycle.spawn_critical("db-listener", |_cancel| async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        Err::<(), _>("connection lost")
    });
    let report = lifecycle.run().await;
    assert_eq!(report.reason.to_string(), "task:db-listener");
    assert_eq!(report.tasks_failed[0].error, "connection lost");
}

#[tokio::test(start_paused = true)]
async fn startup_hooks_hold_readiness_until_they_succeed() {
    let lifecycle = builder().build().unwrap();
    let attempts = Arc::new(AtomicUsize::new(0));
    {
        let attempts = attempts.clone();
        lifecycle.on_startup("warm-up", move || {
            let attempt = attempts.fetch_add(1, Ordering::SeqCst);
            async move {
                if attempt < 2 {
                    Err("cache not reachable")
                } else {
                    Ok(())
                }
            }
        });
    }
    let start = Instant::now();
    let run = spawn_run(&lifecycle);
    settle().await;
    assert_eq!(lifecycle.state(), State::Starting);
    lifecycle.ready().await;
    // Retried after 1 s, then after 2 s more.
    assert_eq!(start.elapsed(), Duration::from_secs(3));
    assert_eq!(attempts.load(Ordering::SeqCst), 3);
    lifecycle.shutdown();
    let report = run.await.unwrap();
    assert!(report.clean, "{report:?}");
}

#[tokio::test(start_paused = true)]
async fn report_of_1000_hooks_stays_under_4096_bytes() {
    let lifecycle = builder().shutdown_delay(Duration::ZERO).build().unwrap();
    for i in 0..1000 {
        lifecycle.on_shutdown(format!("hook-{i}"), Phase::AfterDrain, || async {});
    }
    lifecycle.shutdown();
    let report = lifecycle.run().await;
    assert_eq!(report.hooks.len(), 1000);
    let json = report.to_json();
    assert!(json.len() <= lameduck::MAX_REPORT_BYTES, "{}", json.len());
    let value: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(value["reason"], "api");
    assert_eq!(value["clean"], true);
    assert!(value["duration_ms"].is_u64());
    assert!(value["hooks"][0]["name"].is_string());
    assert_eq!(value["hooks"][0]["outcome"], "ok");
}

#[tokio::test(start_paused = true)]
async fn exit_holds_delay_the_end_of_run() {
    let lifecycle = builder().shutdown_delay(Duration::ZERO).build().unwrap();
    let response = lifecycle.hold_exit("shutdown-response");
    lifecycle.shutdown();
    let mut run = tokio_test::task::spawn(lifecycle.run());
    tokio_test::assert_pending!(run.poll());
    tokio::time::sleep(Duration::from_secs(1)).await;
    tokio_test::assert_pending!(run.poll());
    // Everything is done but the response: Stopped (and the report) come after it.
    assert_eq!(lifecycle.state(), State::Stopping);
    assert!(lifecycle.report().is_none());
    drop(response);
    settle().await;
    let report = tokio_test::assert_ready!(run.poll());
    assert!(report.clean);
    assert_eq!(lifecycle.state(), State::Stopped);
}

#[tokio::test(start_paused = true)]
async fn the_report_is_there_once_stopped_resolves() {
    let lifecycle = builder().shutdown_delay(Duration::ZERO).build().unwrap();
    let response = lifecycle.hold_exit("shutdown-response");
    let run = spawn_run(&lifecycle);
    lifecycle.shutdown();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(1)).await;
        drop(response);
    });
    lifecycle.stopped().await;
    let report = lifecycle.report().expect("a report once stopped");
    assert_eq!(report.to_json(), run.await.unwrap().to_json());
}

#[tokio::test(start_paused = true)]
async fn the_drain_timeout_cuts_on_time_while_a_stopping_hook_still_runs() {
    let lifecycle = builder()
        .shutdown_delay(Duration::ZERO)
        .drain_timeout(Duration::from_secs(2))
        .hook_timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    lifecycle.on_shutdown("slow-stop", Phase::Stopping, || {
        tokio::time::sleep(Duration::from_secs(6))
    });
    // A request that a server drops when the cut fires.
    let request = lifecycle.requests().enter();
    let cut = lifecycle.cut_token();
    let server_cut = cut.clone();
    tokio::spawn(async move {
        server_cut.cancelled().await;
        drop(request);
    });
    let start = Instant::now();
    lifecycle.shutdown();
    let run = spawn_run(&lifecycle);
    cut.cancelled().await;
    assert_eq!(start.elapsed(), Duration::from_secs(2));
    let report = run.await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_secs(6));
    assert_eq!(report.requests_cut, 1);
    assert_eq!(outcome(&report, "slow-stop"), HookOutcome::Ok);
}

#[tokio::test(start_paused = true)]
async fn a_startup_hook_cut_by_a_trigger_stops_running_and_is_reported() {
    let lifecycle = builder().shutdown_delay(Duration::ZERO).build().unwrap();
    let iterations = Arc::new(AtomicUsize::new(0));
    {
        let iterations = iterations.clone();
        lifecycle.on_startup("endless-warm-up", move || {
            let iterations = iterations.clone();
            async move {
                while iterations.fetch_add(1, Ordering::SeqCst) < usize::MAX {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        });
    }
    let run = spawn_run(&lifecycle);
    tokio::time::sleep(Duration::from_millis(1_050)).await;
    lifecycle.shutdown();
    let report = run.await.unwrap();
    let seen = iterations.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        iterations.load(Ordering::SeqCst),
        seen,
        "the hook kept running"
    );
    // A shutdown before Ready is orderly: the interrupted warm-up is no failure of it.
    assert!(report.hooks.iter().all(|h| h.name != "endless-warm-up"));
    assert!(report.clean, "{report:?}");
    assert_eq!(report.exit_code, 0);
}

/// The same races on a real multi-threaded runtime, where triggers truly run in parallel.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallel_triggers_on_threads_start_one_shutdown_and_run_each_hook_once() {
    let lifecycle = builder().shutdown_delay(Duration::ZERO).build().unwrap();
    let runs = Arc::new(AtomicUsize::new(0));
    for phase in Phase::ALL {
        let runs = runs.clone();
        lifecycle.on_shutdown(format!("hook-{phase}"), phase, move || async move {
            runs.fetch_add(1, Ordering::SeqCst);
        });
    }
    let barrier = Arc::new(std::sync::Barrier::new(100));
    let threads: Vec<_> = (0..100)
        .map(|i| {
            let lifecycle = lifecycle.clone();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                if i % 2 == 0 {
                    lifecycle.shutdown()
                } else {
                    lifecycle.trigger(lameduck::Reason::PreStop)
                }
            })
        })
        .collect();
    let triggers: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    assert_eq!(triggers.iter().filter(|t| t.first).count(), 1);
    let mut reports = Vec::new();
    for _ in 0..10 {
        let lifecycle = lifecycle.clone();
        reports.push(tokio::spawn(async move { lifecycle.run().await }));
    }
    for report in reports {
        let report = report.await.unwrap();
        assert_eq!(report.hooks.len(), 3);
        assert!(report.clean);
    }
    assert_eq!(runs.load(Ordering::SeqCst), 3);
}
