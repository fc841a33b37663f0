//! The health endpoints over real loopback sockets, in every lifecycle state.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;
use lameduck::{Check, State};

/// Expected status of each health path in a state: (path, Starting, Ready, Draining, Stopping).
const TABLE: [(&str, [u16; 4]); 15] = [
    ("/healthz", [200, 200, 200, 200]),
    ("/livez", [200, 200, 200, 200]),
    ("/ready", [503, 200, 503, 503]),
    ("/readyz", [503, 200, 503, 503]),
    ("/startupz", [503, 200, 200, 200]),
    ("/healthz/loop", [200, 200, 200, 200]),
    ("/livez/loop", [200, 200, 200, 200]),
    // One check passes, but readiness never does once shutdown has begun.
    ("/ready/db", [200, 200, 503, 503]),
    ("/readyz/db", [200, 200, 503, 503]),
    ("/readyz/lifecycle", [503, 200, 503, 503]),
    ("/startupz/lifecycle", [503, 200, 200, 200]),
    ("/startupz/warm", [200, 200, 200, 200]),
    ("/readyz/nope", [404, 404, 404, 404]),
    ("/livez/lifecycle", [404, 404, 404, 404]),
    ("/nope", [404, 404, 404, 404]),
];

async fn check_table(addr: std::net::SocketAddr, column: usize, state: State) {
    for (path, statuses) in TABLE {
        let expected = statuses[column];
        let got = get(addr, path).await;
        assert_eq!(got.status, expected, "GET {path} in {state}: {}", got.body);
        assert_eq!(got.header("cache-control"), Some("no-store"), "GET {path}");
        let got = head(addr, path).await;
        assert_eq!(got.status, expected, "HEAD {path} in {state}");
        assert!(got.body.is_empty(), "HEAD {path} has a body");
        assert_eq!(got.header("cache-control"), Some("no-store"), "HEAD {path}");
    }
    // The lifecycle check names the state whatever the details setting.
    let verbose = get(addr, "/readyz?verbose").await;
    match state {
        State::Ready => assert!(verbose.body.contains("[+]lifecycle ok"), "{}", verbose.body),
        _ => assert!(
            verbose
                .body
                .contains(&format!("[-]lifecycle failed: {state}")),
            "{}",
            verbose.body
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_endpoints_follow_the_lifecycle_in_every_state() {
    let lifecycle = lifecycle();
    lifecycle.health().liveness("loop", || async {});
    lifecycle.health().readiness("db", || async {});
    lifecycle.health().startup("warm", || async {});
    let admin = serve(admin(&lifecycle)).await;
    let addr = admin.local_addr();

    let booting = lifecycle.hold_readiness("boot");
    let run = run(&lifecycle);
    check_table(addr, 0, State::Starting).await;
    assert_eq!(lifecycle.state(), State::Starting);

    drop(booting);
    wait_for_state(&lifecycle, State::Ready).await;
    check_table(addr, 1, State::Ready).await;

    let lame_duck = lifecycle.hold("test");
    lifecycle.shutdown();
    wait_for_state(&lifecycle, State::Draining).await;
    check_table(addr, 2, State::Draining).await;
    assert_eq!(lifecycle.state(), State::Draining);

    let in_flight = lifecycle.requests().enter();
    drop(lame_duck);
    wait_for_state(&lifecycle, State::Stopping).await;
    check_table(addr, 3, State::Stopping).await;
    assert_eq!(lifecycle.state(), State::Stopping);

    drop(in_flight);
    let report = tokio::time::timeout(PATIENCE, run)
        .await
        .expect("run returns")
        .expect("run does not panic");
    assert!(report.clean);
    tokio::time::timeout(PATIENCE, admin.wait())
        .await
        .expect("the admin server ends once run() returned");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verbose_lists_every_check_and_withholds_details() {
    let lifecycle = lifecycle();
    lifecycle
        .health()
        .readiness("db", || async { Err::<(), _>("password=hunter2 refused") });
    lifecycle.health().readiness("cache", || async {});
    let admin = serve(admin(&lifecycle)).await;
    let addr = admin.local_addr();
    let _run = run(&lifecycle);
    wait_for_state(&lifecycle, State::Ready).await;

    let reply = get(addr, "/readyz?verbose").await;
    assert_eq!(reply.status, 503);
    assert_eq!(
        reply.body,
        "[+]lifecycle ok\n[-]db failed: reason withheld\n[+]cache ok\nreadyz check failed\n"
    );
    assert!(
        reply
            .header("content-type")
            .is_some_and(|t| t.starts_with("text/plain"))
    );
    // A failure lists the checks even without ?verbose, still without the secret.
    let reply = get(addr, "/ready").await;
    assert_eq!(reply.status, 503);
    assert!(reply.body.contains("[-]db failed"), "{}", reply.body);
    assert!(reply.body.ends_with("ready check failed\n"));
    assert!(!reply.body.contains("hunter2"));

    let reply = get(addr, "/livez").await;
    assert_eq!((reply.status, reply.body.as_str()), (200, "ok"));
    let reply = get(addr, "/healthz?verbose").await;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (200, "healthz check passed\n")
    );
    let reply = get(addr, "/readyz/cache?verbose").await;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (200, "[+]cache ok\nreadyz check passed\n")
    );
    let reply = get(addr, "/readyz/db").await;
    assert_eq!(reply.status, 503);
    assert!(!reply.body.contains("hunter2"));
    lifecycle.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expose_details_shows_why_a_check_failed() {
    let lifecycle = lifecycle();
    lifecycle.health().readiness("db", || async {
        Err::<(), _>("connection refused\nto 10.0.0.1")
    });
    let admin = serve(admin(&lifecycle).expose_details(true)).await;
    let addr = admin.local_addr();

    let reply = get(addr, "/readyz").await;
    assert_eq!(reply.status, 503);
    assert_eq!(
        reply.body,
        "[-]lifecycle failed: starting\n[-]db failed: connection refused to 10.0.0.1\nreadyz check failed\n"
    );
    let json = get_json(addr, "/readyz").await.json();
    assert_eq!(
        json,
        serde_json::json!({
            "status": "failed",
            "checks": [
                {"name": "lifecycle", "ok": false, "error": "starting"},
                {"name": "db", "ok": false, "error": "connection refused\nto 10.0.0.1"},
            ]
        })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exclude_leaves_checks_out() {
    let lifecycle = lifecycle();
    lifecycle
        .health()
        .readiness("db", || async { Err::<(), _>("down") });
    lifecycle
        .health()
        .readiness("queue", || async { Err::<(), _>("down") });
    lifecycle.health().readiness("cache", || async {});
    let admin = serve(admin(&lifecycle)).await;
    let addr = admin.local_addr();
    let _run = run(&lifecycle);
    wait_for_state(&lifecycle, State::Ready).await;

    assert_eq!(get(addr, "/readyz?exclude=db").await.status, 503);
    let reply = get(addr, "/readyz?exclude=db&exclude=queue").await;
    assert_eq!((reply.status, reply.body.as_str()), (200, "ok"));
    let reply = get(
        addr,
        "/readyz?exclude=db&exclude=queue&exclude=typo&verbose",
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.body,
        "[+]lifecycle ok\n[+]cache ok\n\
         warn: some health checks cannot be excluded: no matches for \"typo\"\n\
         readyz check passed\n"
    );
    let json = get_json(addr, "/readyz?exclude=db&exclude=queue")
        .await
        .json();
    assert_eq!(
        json,
        serde_json::json!({"status": "ok", "checks": [
            {"name": "lifecycle", "ok": true},
            {"name": "cache", "ok": true},
        ]})
    );
    // Percent-encoded names decode; a query that does not decode is a 400.
    lifecycle
        .health()
        .readiness("a b", || async { Err::<(), _>("down") });
    let reply = get(addr, "/readyz?exclude=db&exclude=queue&exclude=a%20b").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    lifecycle.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_on_accept_application_json() {
    let lifecycle = lifecycle();
    lifecycle
        .health()
        .readiness("db", || async { Err::<(), _>("secret") });
    lifecycle.health().liveness("loop", || async {});
    let admin = serve(admin(&lifecycle)).await;
    let addr = admin.local_addr();

    let reply = get_json(addr, "/readyz").await;
    assert_eq!(reply.status, 503);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(reply.header("cache-control"), Some("no-store"));
    assert_eq!(
        reply.json(),
        serde_json::json!({"status": "failed", "checks": [
            {"name": "lifecycle", "ok": false, "error": "starting"},
            {"name": "db", "ok": false},
        ]})
    );
    let reply = get_json(addr, "/livez").await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.json(),
        serde_json::json!({"status": "ok", "checks": [{"name": "loop", "ok": true}]})
    );
    let reply = get_json(addr, "/readyz/db").await;
    assert_eq!(
        reply.json(),
        serde_json::json!({"status": "failed", "checks": [{"name": "db", "ok": false}]})
    );
    let reply = get_json(addr, "/readyz/nope").await;
    assert_eq!(reply.status, 404);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(
        reply.json(),
        serde_json::json!({"status": "not_found", "error": "no readiness check named \"nope\""})
    );
    let reply = get(addr, "/livez/db").await;
    assert_eq!(
        (reply.status, reply.body.as_str()),
        (404, "no liveness check named \"db\"\n")
    );
    let reply = request(addr, "HEAD", "/livez", &[("Accept", "application/json")]).await;
    assert_eq!(
        (
            reply.status,
            reply.header("content-type"),
            reply.body.as_str()
        ),
        (200, Some("application/json"), "")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_methods_and_unknown_paths() {
    let lifecycle = lifecycle();
    let admin = serve(admin(&lifecycle)).await;
    let addr = admin.local_addr();
    for (method, path, status) in [
        ("POST", "/readyz", 405),
        ("DELETE", "/shutdown", 405),
        ("GET", "/", 404),
        ("GET", "/readyz/", 404),
        ("GET", "/readyz/a/b", 404),
        ("GET", "/metrics", 404),
    ] {
        let reply = request(addr, method, path, &[]).await;
        assert_eq!(reply.status, status, "{method} {path}");
        assert_eq!(
            reply.header("cache-control"),
            Some("no-store"),
            "{method} {path}"
        );
    }
    // Nothing was triggered by any of that.
    assert_eq!(lifecycle.reason(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_slower_than_its_timeout_fails_without_delaying_the_probe() {
    let lifecycle = lifecycle();
    lifecycle.health().add(
        Check::readiness("hung", || tokio::time::sleep(Duration::from_secs(30)))
            .timeout(Duration::from_millis(200)),
    );
    let admin = serve(admin(&lifecycle).expose_details(true)).await;
    let addr = admin.local_addr();
    let started = Instant::now();
    let reply = get(addr, "/readyz/hung").await;
    let elapsed = started.elapsed();
    assert_eq!(reply.status, 503);
    assert!(
        reply.body.contains("[-]hung failed: timed out after 200ms"),
        "{}",
        reply.body
    );
    assert!(elapsed >= Duration::from_millis(150), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(2), "{elapsed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_probes_run_a_slow_check_once() {
    let lifecycle = lifecycle();
    let runs = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&runs);
    lifecycle.health().add(
        Check::readiness("slow", move || {
            counter.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_secs(2))
        })
        .timeout(Duration::from_secs(5))
        // No cache: only single-flight keeps this at one run.
        .cache_for(Duration::ZERO),
    );
    let admin = serve(admin(&lifecycle)).await;
    let addr = admin.local_addr();
    let _run = run(&lifecycle);
    wait_for_state(&lifecycle, State::Ready).await;

    let probes: Vec<_> = (0..200)
        .map(|_| tokio::spawn(async move { get(addr, "/readyz").await.status }))
        .collect();
    for probe in probes {
        assert_eq!(probe.await.expect("the probe task"), 200);
    }
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    lifecycle.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn startup_checks_hold_readiness_until_they_pass() {
    let lifecycle = lifecycle();
    let warm = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&warm);
    // How often the check has been run: the lifecycle's attempts, until a probe asks.
    let (attempts_tx, mut attempts) = tokio::sync::watch::channel(0usize);
    lifecycle.health().add(
        Check::startup("warm-cache", move || {
            attempts_tx.send_modify(|n| *n += 1);
            let warm = flag.load(Ordering::SeqCst);
            async move { if warm { Ok(()) } else { Err("cold") } }
        })
        .cache_for(Duration::ZERO),
    );
    let admin = serve(admin(&lifecycle).expose_details(true)).await;
    let addr = admin.local_addr();
    let _run = run(&lifecycle);

    // The lifecycle has run the check, seen it fail, and gone back to run it again: the
    // failure it saw did not make it Ready.
    tokio::time::timeout(PATIENCE, attempts.wait_for(|n| *n >= 2))
        .await
        .expect("the lifecycle retries its startup check")
        .expect("the check is alive");
    assert_eq!(lifecycle.state(), State::Starting);
    let reply = get(addr, "/startupz").await;
    assert_eq!(reply.status, 503);
    assert_eq!(
        reply.body,
        "[-]lifecycle failed: starting\n[-]warm-cache failed: cold\nstartupz check failed\n"
    );
    assert_eq!(get(addr, "/readyz").await.status, 503);
    assert_eq!(get(addr, "/livez").await.status, 200);

    warm.store(true, Ordering::SeqCst);
    wait_for_state(&lifecycle, State::Ready).await;
    assert_eq!(get(addr, "/startupz").await.status, 200);
    assert_eq!(get(addr, "/readyz").await.status, 200);
    lifecycle.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_router_merges_into_an_application_router() {
    let lifecycle = lifecycle();
    let app = axum::Router::new()
        .route("/", axum::routing::get(|| async { "hello" }))
        .merge(admin(&lifecycle).shutdown_endpoint(false).router());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("local address");
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    assert_eq!(get(addr, "/").await.body, "hello");
    let reply = get(addr, "/livez").await;
    assert_eq!(
        (reply.status, reply.header("cache-control")),
        (200, Some("no-store"))
    );
    assert_eq!(get(addr, "/readyz").await.status, 503);
    assert_eq!(get(addr, "/shutdown").await.status, 404);
    assert_eq!(lifecycle.reason(), None);
    server.abort();
}
