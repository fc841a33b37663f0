//! The `orders` and `hello` examples, run as a platform runs them: readiness polled, load
//! applied, the preStop `/shutdown` called and SIGTERM sent, exit status and termination
//! message read, and the service started again to see that no accepted order was lost.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::sync::mpsc;
use std::time::{Duration, Instant};

use lameduck_platform_tests::{
    Service, TempDir, binary, get, parse_response, request, sample, start_load,
};
use nix::sys::signal::Signal;

fn env(pairs: &[(&str, &str)]) -> Vec<(&'static str, String)> {
    pairs
        .iter()
        .map(|(k, v)| (leak(k), (*v).to_owned()))
        .collect()
}

fn leak(s: &str) -> &'static str {
    Box::leak(s.to_owned().into_boxed_str())
}

/// A safety net for what should take far less; nothing is paced by it.
const PATIENCE: Duration = Duration::from_secs(30);

const LOAD_CONNECTIONS: usize = 32;

/// `GET /events` read as it streams: `first_event` fires once an `event: queue` has
/// arrived; the whole response once the server ends it.
fn read_events(
    addr: std::net::SocketAddr,
    first_event: mpsc::Sender<()>,
) -> std::io::Result<lameduck_platform_tests::Response> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(PATIENCE))?;
    write!(
        stream,
        "GET /events HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    let mut chunk = [0u8; 4096];
    let mut told = false;
    loop {
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        raw.extend_from_slice(&chunk[..n]);
        if !told && String::from_utf8_lossy(&raw).contains("event: queue") {
            told = true;
            let _ = first_event.send(());
        }
    }
    parse_response(&raw)
}

#[test]
fn prestop_then_sigterm_under_load_loses_nothing_and_orders_survive_a_restart() {
    let dir = TempDir::new("orders-restart");
    let state = dir.path().join("orders-state.json");
    let settings = env(&[
        ("LAMEDUCK_SHUTDOWN_DELAY", "3s"),
        ("LAMEDUCK_DRAIN_TIMEOUT", "10s"),
        ("LAMEDUCK_GRACE_PERIOD", "30s"),
        ("ORDERS_WORK_TIME", "300ms"),
        ("ORDERS_STATE", state.to_str().unwrap()),
        // Each accepted traffic connection is logged: the test sees the load arrive.
        ("RUST_LOG", "info,lameduck_http::serve=trace"),
    ]);
    let orders = binary("orders");
    let mut service = Service::start(&orders, dir.path(), "first", &settings);
    service.wait_ready();
    assert_eq!(get(service.admin, "/startupz").unwrap().status, 200);
    assert_eq!(get(service.admin, "/livez").unwrap().status, 200);

    // Orders arrive faster than the worker (300 ms each) takes them: a queue builds.
    let mut ids = Vec::new();
    for i in 0..12 {
        let body = format!(r#"{{"item":"book-{i}","quantity":1}}"#);
        let response = request(service.traffic, "POST", "/orders", &[], Some(&body)).unwrap();
        assert_eq!(response.status, 202, "{response:?}");
        let order: serde_json::Value = serde_json::from_str(&response.body).unwrap();
        ids.push(order["id"].as_u64().unwrap());
    }

    service.skip_logged();
    let (load, stop_load) = start_load(&service, LOAD_CONNECTIONS, 1_000);
    // Under load: every client of the load generator has connected.
    for _ in 0..LOAD_CONNECTIONS {
        service.wait_for_log("connection accepted", PATIENCE);
    }

    // The kubelet's preStop httpGet: it blocks for the lame-duck delay.
    let admin = service.admin;
    let (prestop_tx, prestop_rx) = mpsc::channel();
    let prestop = std::thread::spawn(move || {
        let start = Instant::now();
        let response = get(admin, "/shutdown");
        let _ = prestop_tx.send(());
        (response, start.elapsed())
    });
    let triggered = Instant::now();
    // The preStop call has been taken: the lifecycle is Draining.
    service.wait_for_log("to=draining", PATIENCE);

    // Lame duck: readiness fails at once, liveness holds, and traffic is still served,
    // on new connections too, each told to go away.
    let ready = get(service.admin, "/readyz?verbose").unwrap();
    assert_eq!(ready.status, 503, "{ready:?}");
    assert!(ready.body.contains("[-]lifecycle"), "{}", ready.body);
    assert_eq!(get(service.admin, "/livez").unwrap().status, 200);
    let fresh = get(service.traffic, "/").unwrap();
    assert_eq!(fresh.status, 200);
    assert_eq!(fresh.header("connection"), Some("close"));
    let late_order = request(
        service.traffic,
        "POST",
        "/orders",
        &[],
        Some(r#"{"item":"late"}"#),
    )
    .unwrap();
    assert_eq!(late_order.status, 202);
    let late: serde_json::Value = serde_json::from_str(&late_order.body).unwrap();
    ids.push(late["id"].as_u64().unwrap());

    // Traffic keeps arriving through the delay (endpoint removal still propagating); it
    // stops before the listener closes, as a balancer's would. Until then, /shutdown must
    // not answer: the delay is what is under test, so the wait is for that answer,
    // bounded by the delay.
    let until_balancer_stops =
        Duration::from_secs(3).saturating_sub(triggered.elapsed() + Duration::from_millis(400));
    assert!(
        matches!(
            prestop_rx.recv_timeout(until_balancer_stops),
            Err(mpsc::RecvTimeoutError::Timeout)
        ),
        "/shutdown answered before the delay was over"
    );
    let _ = stop_load.send(());
    let load = load.join().unwrap();

    let (response, blocked_for) = prestop.join().unwrap();
    let response = response.unwrap();
    assert_eq!(response.status, 200);
    let body: serde_json::Value = serde_json::from_str(&response.body).unwrap();
    assert_eq!(body["first"], true);
    assert_eq!(body["reason"], "prestop");
    assert!(
        blocked_for >= Duration::from_millis(2_900),
        "{blocked_for:?}"
    );

    // The kubelet's SIGTERM after preStop: the normal sequence, not a second trigger.
    service.signal(Signal::SIGTERM);
    let status = service.wait_exit(Duration::from_secs(25));
    assert_eq!(status, 0, "{}", service.logs());
    assert!(triggered.elapsed() < Duration::from_secs(20));

    assert!(load.counts.ok > 500, "{load}");
    assert_eq!(load.counts.no_response, 0, "{load}");
    assert_eq!(load.counts.refused, 0, "{load}");
    assert_eq!(load.counts.status_5xx, 0, "{load}");
    assert_eq!(load.counts.timeout, 0, "{load}");

    let report = service.report();
    assert_eq!(report["reason"], "prestop");
    assert_eq!(report["clean"], true, "{report}");
    let hooks: Vec<&str> = report["hooks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["name"].as_str().unwrap())
        .collect();
    assert_eq!(hooks, ["stop-worker", "persist-orders"]);
    assert!(
        get(service.traffic, "/").is_err(),
        "still serving after exit"
    );

    // The next process reads back what was still queued: no accepted order is lost.
    let persisted: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state).unwrap()).unwrap();
    assert!(
        !persisted["queue"].as_array().unwrap().is_empty(),
        "the test needs orders still queued at shutdown: {persisted}"
    );
    let mut second = Service::start(&orders, dir.path(), "second", &settings);
    second.wait_ready();
    for id in &ids {
        let found = get(second.traffic, &format!("/orders/{id}")).unwrap();
        assert_eq!(found.status, 200, "order {id} lost across the restart");
    }
    second.signal(Signal::SIGTERM);
    assert_eq!(second.wait_exit(Duration::from_secs(25)), 0);
}

#[test]
fn a_second_sigterm_forces_the_exit() {
    let dir = TempDir::new("orders-force");
    let settings = env(&[
        ("LAMEDUCK_SHUTDOWN_DELAY", "20s"),
        (
            "ORDERS_STATE",
            dir.path().join("state.json").to_str().unwrap(),
        ),
    ]);
    let mut service = Service::start(&binary("orders"), dir.path(), "force", &settings);
    service.wait_ready();
    service.skip_logged();
    service.signal(Signal::SIGTERM);
    // The first SIGTERM has been taken: the lifecycle is Draining, readiness fails.
    service.wait_for_log("to=draining", PATIENCE);
    assert_eq!(
        get(service.admin, "/readyz").map(|r| r.status).unwrap_or(0),
        503,
        "readiness never flipped"
    );
    let second = Instant::now();
    service.signal(Signal::SIGTERM);
    let status = service.wait_exit(Duration::from_secs(10));
    assert_eq!(status, 128 + 15);
    assert!(second.elapsed() < Duration::from_secs(5));
    let report = service.report();
    assert_eq!(report["forced_by"], "SIGTERM");
    assert_eq!(report["reason"], "signal:SIGTERM");
    assert_eq!(report["clean"], false);
}

#[test]
fn a_grace_period_shorter_than_a_request_cuts_it_in_time_for_the_after_drain_hooks() {
    let dir = TempDir::new("orders-deadline");
    // Deadline = 4 s - 0.4 s safety margin; the request wants 60 s. `persist-orders` needs
    // its 5 s hook timeout, more than the whole deadline: the budget, planned from the
    // deadline backwards, cuts the drain at once and the hook runs in what is left.
    let settings = env(&[
        ("LAMEDUCK_SHUTDOWN_DELAY", "0s"),
        ("LAMEDUCK_DRAIN_TIMEOUT", "20s"),
        ("LAMEDUCK_GRACE_PERIOD", "4s"),
        (
            "ORDERS_STATE",
            dir.path().join("state.json").to_str().unwrap(),
        ),
        ("RUST_LOG", "info,lameduck_http::serve=trace"),
    ]);
    let mut service = Service::start(&binary("orders"), dir.path(), "deadline", &settings);
    service.wait_ready();
    assert!(
        service.logs().contains("longer than the shutdown deadline"),
        "the inconsistent settings should be warned about:\n{}",
        service.logs()
    );
    let traffic = service.traffic;
    service.skip_logged();
    let slow = std::thread::spawn(move || get(traffic, "/work?ms=60000"));
    // The slow request's connection is the server's before the signal (its request, sent
    // right after connecting, is read within the first-request grace at the latest).
    service.wait_for_log("connection accepted", PATIENCE);

    let sigterm = Instant::now();
    service.signal(Signal::SIGTERM);
    let status = service.wait_exit(Duration::from_secs(30));
    let took = sigterm.elapsed();
    // Unclean (a request was cut), but done before the deadline.
    assert_eq!(status, 1, "{}", service.logs());
    // Before the platform's SIGKILL at 4 s.
    assert!(took < Duration::from_secs(4), "exited after {took:?}");
    assert!(
        slow.join().unwrap().is_err(),
        "the cut request got an answer"
    );
    let report = service.report();
    assert_eq!(report["deadline_exceeded"], false, "{report}");
    assert_eq!(report["requests_cut"], 1, "{report}");
    assert_eq!(report["clean"], false);
    let persist = report["hooks"]
        .as_array()
        .and_then(|hooks| hooks.iter().find(|h| h["name"] == "persist-orders"))
        .unwrap_or_else(|| panic!("persist-orders in {report}"));
    assert_eq!(persist["outcome"], "ok", "{report}");
    assert!(
        service
            .logs()
            .contains("lame duck cut short to leave the AfterDrain hooks their time")
            || service.logs().contains("drain timeout reached"),
        "{}",
        service.logs()
    );
}

#[test]
fn the_event_stream_ends_cleanly_at_shutdown() {
    let dir = TempDir::new("orders-sse");
    let settings = env(&[
        ("LAMEDUCK_SHUTDOWN_DELAY", "500ms"),
        (
            "ORDERS_STATE",
            dir.path().join("state.json").to_str().unwrap(),
        ),
    ]);
    let mut service = Service::start(&binary("orders"), dir.path(), "sse", &settings);
    service.wait_ready();
    let traffic = service.traffic;
    let (first_event_tx, first_event) = mpsc::channel();
    let stream = std::thread::spawn(move || read_events(traffic, first_event_tx));
    // A queue event has come through before the signal.
    first_event
        .recv_timeout(PATIENCE)
        .expect("a first queue event");
    service.signal(Signal::SIGTERM);
    // A chunked body that ends with its last chunk: a clean end, not a cut connection.
    let events = stream.join().unwrap().unwrap();
    assert_eq!(events.status, 200);
    assert!(events.body.contains("event: queue"), "{}", events.body);
    assert!(
        events.body.trim_end().ends_with("data: stopping"),
        "{}",
        events.body
    );
    assert_eq!(service.wait_exit(Duration::from_secs(20)), 0);
    assert_eq!(service.report()["clean"], true);
}

#[test]
fn a_bad_setting_stops_the_service_at_once_naming_it() {
    let dir = TempDir::new("orders-bad");
    for (var, value) in [
        ("LAMEDUCK_DRAIN_TIMEOUT", "twenty"),
        ("LAMEDUCK_ADMIN_ADDR", "nowhere"),
        ("ORDERS_WORK_TIME", "slow"),
        ("PORT", "eighty"),
    ] {
        let output = std::process::Command::new(binary("orders"))
            .env(var, value)
            .env("ORDERS_STATE", dir.path().join("state.json"))
            .output()
            .unwrap();
        assert!(!output.status.success(), "{var}={value} was accepted");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains(var) && stderr.contains(value),
            "{var}={value}: {stderr}"
        );
    }
}

#[test]
fn hello_shuts_down_cleanly_on_sigterm() {
    let dir = TempDir::new("hello");
    let mut service = Service::start(
        &binary("hello"),
        dir.path(),
        "hello",
        &env(&[("LAMEDUCK_SHUTDOWN_DELAY", "200ms")]),
    );
    service.wait_ready();
    assert_eq!(get(service.traffic, "/").unwrap().body, "hello\n");
    service.signal(Signal::SIGTERM);
    assert_eq!(service.wait_exit(Duration::from_secs(20)), 0);
    let report = service.report();
    assert_eq!(report["reason"], "signal:SIGTERM");
    assert_eq!(report["clean"], true);
    // Two listeners hear it (the runtime's and a thread of its own); one says so.
    let logs = service.logs();
    assert_eq!(logs.matches("signal received").count(), 1, "{logs}");
}

/// `hello`'s `main` returns `anyhow::Result<lameduck::Report>` and passes a configuration
/// error up with `?`: it prints the error's message after `Error: ` (no derived `Debug`
/// noise) and exits 1, the status stable Rust gives an `Err` from `main`. The same for a
/// setting of the admin endpoints, which `lameduck_axum::serve` reads.
#[test]
fn hello_returns_a_bad_setting_from_main_with_its_message() {
    for (var, value, expected) in [
        (
            "LAMEDUCK_DRAIN_TIMEOUT",
            "twenty",
            "Error: LAMEDUCK_DRAIN_TIMEOUT=\"twenty\" is not a duration",
        ),
        (
            "LAMEDUCK_ADMIN_ADDR",
            "nowhere",
            "Error: LAMEDUCK_ADMIN_ADDR=\"nowhere\" is not a socket address",
        ),
    ] {
        let output = std::process::Command::new(binary("hello"))
            .env(var, value)
            .env("PORT", "0")
            .env("LAMEDUCK_TERMINATION_LOG", "none")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{var}={value}: {stderr}");
        assert!(stderr.contains(expected), "{var}={value}: {stderr}");
        assert!(!stderr.contains("InvalidDuration {"), "{stderr}");
    }
}

/// `orders` passes configuration errors to `exit_on_config_error`: 78 (`EX_CONFIG`) for the
/// core's settings and the admin endpoints' alike, and the token is never echoed.
#[test]
fn orders_exits_78_on_a_bad_admin_setting_without_echoing_the_token() {
    let dir = TempDir::new("orders-bad-admin");
    for (var, value) in [
        ("LAMEDUCK_ADMIN_ADDR", "nowhere"),
        ("LAMEDUCK_SHUTDOWN_TOKEN", "two words"),
    ] {
        let output = std::process::Command::new(binary("orders"))
            .env(var, value)
            .env("ORDERS_STATE", dir.path().join("state.json"))
            .env("LAMEDUCK_TERMINATION_LOG", "none")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(78), "{var}={value}: {stderr}");
        assert!(stderr.contains("configuration error"), "{stderr}");
        assert!(stderr.contains(var), "{stderr}");
        if var == "LAMEDUCK_SHUTDOWN_TOKEN" {
            assert!(!stderr.contains(value), "the token was echoed: {stderr}");
        } else {
            assert!(stderr.contains(value), "{stderr}");
        }
    }
}

/// The termination log read the way the kubelet reads it after a SIGKILL: while the
/// shutdown runs, it already says that shutdown had begun, why, in which state and what
/// it was waiting for; the final report would replace it, but the process is killed in
/// the middle of its drain, before it gets there.
#[test]
fn a_sigkill_in_the_middle_of_the_drain_leaves_a_termination_message_that_says_so() {
    let dir = TempDir::new("orders-sigkill");
    let mut service = Service::start(
        &binary("orders"),
        dir.path(),
        "orders",
        &env(&[
            (
                "ORDERS_STATE",
                dir.path().join("state.json").to_str().unwrap(),
            ),
            ("LAMEDUCK_SHUTDOWN_DELAY", "1s"),
            ("LAMEDUCK_DRAIN_TIMEOUT", "60s"),
            ("LAMEDUCK_GRACE_PERIOD", "90s"),
        ]),
    );
    service.wait_ready();

    // A request that outlasts the test, in flight across the shutdown.
    let traffic = service.traffic;
    let slow = std::thread::spawn(move || request(traffic, "GET", "/work?ms=120000", &[], None));
    let message = |wanted: &str| -> serde_json::Value {
        // The message is written by a thread of the service's own once the state has
        // changed: read until it says so (a safety net, not a pace).
        let patience = Instant::now() + PATIENCE;
        loop {
            let text = std::fs::read_to_string(&service.termination_log).unwrap_or_default();
            if let Ok(json) = serde_json::from_str::<serde_json::Value>(&text)
                && json["state"] == wanted
            {
                return json;
            }
            assert!(Instant::now() < patience, "no {wanted} message: {text:?}");
            std::thread::sleep(Duration::from_millis(20));
        }
    };

    service.signal(Signal::SIGTERM);
    service.wait_for_log("to=draining", PATIENCE);
    let draining = message("draining");
    assert_eq!(draining["in_progress"], true, "{draining}");
    service.wait_for_log("to=stopping", PATIENCE);
    let stopping = message("stopping");
    assert_eq!(stopping["pending"]["requests"], 1, "{stopping}");

    service.signal(Signal::SIGKILL);
    assert_eq!(service.wait_exit(PATIENCE), 128 + 9);
    let after_kill = service.report();
    assert_eq!(after_kill["reason"], "signal:SIGTERM", "{after_kill}");
    assert_eq!(after_kill["in_progress"], true, "{after_kill}");
    assert_eq!(after_kill["clean"], false, "{after_kill}");
    assert_eq!(after_kill["state"], "stopping", "{after_kill}");
    assert!(
        after_kill["since_trigger_ms"].as_u64().unwrap() >= 1000,
        "{after_kill}"
    );
    assert_eq!(after_kill["pending"]["requests"], 1, "{after_kill}");
    // The slow request was cut by the kill, not answered.
    assert!(slow.join().unwrap().is_err());
}

/// `GET /metrics` on the admin port: lameduck's metrics as Prometheus text, current at
/// each scrape, so a scrape in the delay sees the shutdown under way.
#[test]
fn metrics_are_scraped_on_the_admin_port_and_follow_the_shutdown() {
    let dir = TempDir::new("orders-metrics");
    let mut service = Service::start(
        &binary("orders"),
        dir.path(),
        "orders",
        &env(&[
            (
                "ORDERS_STATE",
                dir.path().join("state.json").to_str().unwrap(),
            ),
            ("LAMEDUCK_SHUTDOWN_DELAY", "30s"),
            ("LAMEDUCK_GRACE_PERIOD", "60s"),
        ]),
    );
    service.wait_ready();
    let ready = get(service.admin, "/metrics").expect("GET /metrics");
    assert_eq!(ready.status, 200, "{ready:?}");
    assert!(
        ready
            .header("content-type")
            .is_some_and(|t| t.starts_with("text/plain; version=0.0.4")),
        "{ready:?}"
    );
    let text = &ready.body;
    for help in [
        "# TYPE lameduck_state gauge",
        "# TYPE lameduck_requests_in_flight gauge",
        "# TYPE lameduck_connections_open gauge",
        "# TYPE lameduck_state_duration_seconds gauge",
        "# TYPE lameduck_hook_runs_total counter",
        "# TYPE lameduck_hook_duration_seconds summary",
        "# TYPE lameduck_health_checks_total counter",
        "# TYPE lameduck_health_check_duration_seconds summary",
    ] {
        assert!(text.contains(help), "no {help:?} in\n{text}");
    }
    assert_eq!(
        sample(text, "lameduck_state{state=\"ready\"}"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(text, "lameduck_state{state=\"draining\"}"),
        Some(0.0),
        "{text}"
    );
    assert_eq!(
        sample(text, "lameduck_requests_in_flight"),
        Some(0.0),
        "{text}"
    );
    // Counters exist before anything is counted, so the first increase shows as one.
    for counter in [
        "lameduck_requests_cut_total",
        "lameduck_connections_cut_total",
        "lameduck_tasks_abandoned_total",
    ] {
        assert_eq!(sample(text, counter), Some(0.0), "{counter} in\n{text}");
    }
    // This scrape's connection is on the admin port, which is no traffic connection.
    assert_eq!(
        sample(text, "lameduck_connections_open"),
        Some(0.0),
        "{text}"
    );
    assert_eq!(
        sample(
            text,
            "lameduck_hook_runs_total{hook=\"warm-up\",phase=\"startup\",outcome=\"ok\"}"
        ),
        Some(1.0),
        "{text}"
    );
    assert!(
        sample(
            text,
            "lameduck_health_checks_total{check=\"order-queue\",kind=\"readiness\",result=\"pass\"}"
        )
        .is_some_and(|runs| runs >= 1.0),
        "{text}"
    );

    service.signal(Signal::SIGTERM);
    service.wait_for_log("to=draining", PATIENCE);
    let draining = get(service.admin, "/metrics").expect("GET /metrics in the delay");
    assert_eq!(draining.status, 200, "{draining:?}");
    let text = &draining.body;
    assert_eq!(
        sample(text, "lameduck_state{state=\"ready\"}"),
        Some(0.0),
        "{text}"
    );
    assert_eq!(
        sample(text, "lameduck_state{state=\"draining\"}"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(text, "lameduck_shutdowns_total{reason=\"signal:SIGTERM\"}"),
        Some(1.0),
        "{text}"
    );
    assert!(
        sample(text, "lameduck_state_duration_seconds{state=\"ready\"}").is_some_and(|s| s > 0.0),
        "{text}"
    );
    assert!(
        sample(text, "lameduck_shutdown_duration_seconds").is_some_and(|s| s < 30.0),
        "{text}"
    );

    // A second signal ends the 30 s delay at once; the scrape has seen what it came for.
    service.signal(Signal::SIGTERM);
    assert_eq!(service.wait_exit(PATIENCE), 128 + 15);
}
