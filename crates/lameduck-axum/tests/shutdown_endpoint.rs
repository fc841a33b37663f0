//! `/shutdown`: the preStop trigger, over real loopback sockets.

mod common;

use std::time::{Duration, Instant};

use axum::body::Body;
use common::*;
use http::Request;
use lameduck::{Reason, State};
use lameduck_axum::AdminLimits;
use tower::ServiceExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_answers_once_the_lame_duck_delay_is_over() {
    let lifecycle = builder()
        .shutdown_delay(Duration::from_secs(1))
        .build()
        .expect("config");
    let admin = serve(admin(&lifecycle)).await;
    let addr = admin.local_addr();
    let run = run(&lifecycle);
    wait_for_state(&lifecycle, State::Ready).await;

    let started = Instant::now();
    let reply = get(addr, "/shutdown").await;
    let elapsed = started.elapsed();
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert!(elapsed >= Duration::from_millis(900), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(10), "{elapsed:?}");
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    let json = reply.json();
    assert_eq!(json["first"], true);
    assert_eq!(json["reason"], "prestop");
    assert!(
        json["state"] == "stopping" || json["state"] == "stopped",
        "{json}"
    );

    let report = tokio::time::timeout(PATIENCE, run)
        .await
        .expect("run returns")
        .expect("run does not panic");
    assert_eq!(report.reason, Reason::PreStop);
    assert!(report.clean);
}

// On the current-thread runtime, whose clock the test can move past the lame-duck delay.
#[tokio::test]
async fn shutdown_blocks_until_draining_ends_and_keeps_probes_answering() {
    let lifecycle = builder()
        .shutdown_delay(Duration::from_millis(300))
        .build()
        .expect("config");
    let admin = serve(admin(&lifecycle)).await;
    let addr = admin.local_addr();
    let _run = run(&lifecycle);
    wait_for_state(&lifecycle, State::Ready).await;

    let lame_duck = lifecycle.hold("slow-deregistration");
    let call = tokio::spawn(async move { request(addr, "POST", "/shutdown", &[]).await });
    wait_for_state(&lifecycle, State::Draining).await;
    // The delay is the time under test: the clock moves past it at once, with the call
    // waiting in its handler, so that only the hold keeps the lifecycle Draining. (Paused
    // only for this, not while sockets are in use: a paused clock jumps ahead whenever
    // the runtime is idle, even while the kernel still carries bytes.)
    tokio::time::pause();
    tokio::time::advance(Duration::from_millis(600)).await;
    tokio::time::resume();
    assert!(
        !call.is_finished(),
        "/shutdown answered while still Draining"
    );
    assert_eq!(lifecycle.state(), State::Draining);
    // The admin listener is not drained: probes answer meanwhile.
    assert_eq!(get(addr, "/readyz").await.status, 503);
    assert_eq!(get(addr, "/livez").await.status, 200);

    drop(lame_duck);
    let reply = tokio::time::timeout(PATIENCE, call)
        .await
        .expect("/shutdown answers once Stopping began")
        .expect("the call task");
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["first"], true);
    // The answer was made once Draining was over, not merely sent late.
    assert_ne!(reply.json()["state"], "draining");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_shutdown_calls_trigger_once_and_all_answer_before_run_returns() {
    let lifecycle = builder()
        .shutdown_delay(Duration::from_millis(500))
        .build()
        .expect("config");
    // No close grace: once run() returns, connections are dropped at once, as the
    // process exiting would.
    let limits = AdminLimits::default().close_grace(Duration::ZERO);
    let admin = serve_with(admin(&lifecycle), limits).await;
    let addr = admin.local_addr();
    let run = run(&lifecycle);
    wait_for_state(&lifecycle, State::Ready).await;

    let calls: Vec<_> = (0..20)
        .map(|i| {
            let method = if i % 2 == 0 { "GET" } else { "POST" };
            tokio::spawn(async move { request(addr, method, "/shutdown", &[]).await })
        })
        .collect();
    let report = tokio::time::timeout(PATIENCE, run)
        .await
        .expect("run returns")
        .expect("run does not panic");
    // Stop the server the moment run() returned (as the process would exit): every call
    // still has its full answer.
    admin.shutdown();
    let mut firsts = 0;
    for call in calls {
        let reply = call.await.expect("the call task");
        assert_eq!(reply.status, 200, "{}", reply.body);
        let json = reply.json();
        assert_eq!(json["reason"], "prestop");
        if json["first"] == true {
            firsts += 1;
        }
    }
    assert_eq!(firsts, 1);
    assert_eq!(report.reason, Reason::PreStop);
    assert!(report.holds_abandoned.is_empty());
    assert!(report.clean);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_call_after_the_delay_answers_at_once() {
    let lifecycle = builder()
        .shutdown_delay(Duration::from_millis(200))
        .build()
        .expect("config");
    let admin = serve(admin(&lifecycle)).await;
    let addr = admin.local_addr();
    let _run = run(&lifecycle);
    let in_flight = lifecycle.requests().enter(); // keeps Stopping from ending
    let first = get(addr, "/shutdown").await.json();
    assert_eq!(first["first"], true);
    let started = Instant::now();
    let again = head(addr, "/shutdown").await;
    assert_eq!((again.status, again.body.as_str()), (200, ""));
    let again = get(addr, "/shutdown").await.json();
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(again["first"], false);
    assert_eq!(again["state"], "stopping");
    drop(in_flight);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_is_required_when_configured() {
    let lifecycle = lifecycle();
    let admin = serve(admin(&lifecycle).shutdown_token("s3cret-token")).await;
    let addr = admin.local_addr();
    let run = run(&lifecycle);
    wait_for_state(&lifecycle, State::Ready).await;

    let missing = get(addr, "/shutdown").await;
    assert_eq!(missing.status, 401);
    assert_eq!(missing.header("cache-control"), Some("no-store"));
    for wrong in ["s3cret-tokex", "s3cret", "", "s3cret-token-and-more"] {
        let reply = request(addr, "POST", "/shutdown", &[("X-Lameduck-Token", wrong)]).await;
        assert_eq!(reply.status, 403, "token {wrong:?}");
    }
    assert_eq!(head(addr, "/shutdown").await.status, 401);
    // Nothing was triggered.
    assert_eq!(get(addr, "/readyz").await.status, 200);
    assert_eq!(lifecycle.state(), State::Ready);
    assert_eq!(lifecycle.reason(), None);

    let reply = request(
        addr,
        "GET",
        "/shutdown",
        &[("X-Lameduck-Token", "s3cret-token")],
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.json()["first"], true);
    let report = tokio::time::timeout(PATIENCE, run)
        .await
        .expect("run returns")
        .expect("run does not panic");
    assert_eq!(report.reason, Reason::PreStop);
}

// No sockets here, so the clock can stay paused: it moves only when every task is idle.
#[tokio::test(start_paused = true)]
async fn run_does_not_return_until_the_shutdown_answer_is_sent() {
    let lifecycle = lifecycle();
    let router = admin(&lifecycle).router();
    let run = run(&lifecycle);
    let request = Request::get("/shutdown")
        .body(Body::empty())
        .expect("a request");
    let response = tokio::time::timeout(PATIENCE, router.oneshot(request))
        .await
        .expect("/shutdown answers")
        .expect("infallible");
    assert_eq!(response.status(), 200);
    // Everything is done but the answer's body, which a server has not sent yet: the
    // lifecycle waits in Stopping (Stopped comes with the report, after the answer).
    wait_for_state(&lifecycle, State::Stopping).await;
    // Until nothing can run any more (the paused clock advances only then): the lifecycle
    // has done all it can and waits for the answer alone.
    settle().await;
    assert!(
        !run.is_finished(),
        "run() returned before the answer was sent"
    );
    assert_eq!(lifecycle.state(), State::Stopping);
    assert!(lifecycle.report().is_none());

    let body = axum::body::to_bytes(response.into_body(), 1024)
        .await
        .expect("the body");
    let json: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
    assert_eq!(json["first"], true);
    let report = tokio::time::timeout(PATIENCE, run)
        .await
        .expect("run returns once the answer is sent")
        .expect("run does not panic");
    assert!(report.clean);
}

#[test]
fn a_token_that_cannot_travel_in_a_header_is_refused_without_echoing_it() {
    let lifecycle = lifecycle();
    for bad in ["", "two words", "tab\there", "naïve"] {
        let panic = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _ = admin(&lifecycle).shutdown_token(bad);
        }))
        .expect_err("a bad token is refused");
        let message = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_default();
        assert!(message.contains("visible ASCII"), "{message}");
        if !bad.is_empty() {
            assert!(!message.contains(bad), "{message} must not echo the token");
        }
    }
}
