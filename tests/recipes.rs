//! The recipes of crates/lameduck-axum/README.md, each example run as a platform runs it.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::sync::mpsc;
use std::time::{Duration, Instant};

use lameduck_loadgen::{LoadConfig, LoadReport};
use lameduck_platform_tests::{Service, TempDir, binary, get};
use nix::sys::signal::Signal;

/// A safety net for what should take far less; nothing is paced by it.
const PATIENCE: Duration = Duration::from_secs(30);

const LOAD_CONNECTIONS: usize = 32;

fn env(pairs: &[(&'static str, &str)]) -> Vec<(&'static str, String)> {
    pairs.iter().map(|(k, v)| (*k, (*v).to_owned())).collect()
}

/// Keep-alive load on `/` from `connections` clients until `stop` fires.
fn start_load(
    service: &Service,
    connections: usize,
    rate: u64,
) -> (
    std::thread::JoinHandle<LoadReport>,
    tokio::sync::oneshot::Sender<()>,
) {
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let mut config = LoadConfig::new(&format!("http://{}/", service.traffic)).unwrap();
    config.connections = connections;
    config.rate = rate;
    config.duration = None;
    let load = std::thread::spawn(move || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
            .block_on(lameduck_loadgen::run(config, async {
                let _ = stop_rx.await;
            }))
    });
    (load, stop_tx)
}

#[test]
fn axum_serve_recipe_sigterm_under_load_fails_no_request() {
    let dir = TempDir::new("recipe-axum-serve");
    let delay = Duration::from_secs(3);
    let settings = env(&[
        ("LAMEDUCK_SHUTDOWN_DELAY", "3s"),
        ("LAMEDUCK_DRAIN_TIMEOUT", "10s"),
        ("LAMEDUCK_GRACE_PERIOD", "30s"),
        // axum::serve logs each accepted connection at trace: the test sees the load.
        ("RUST_LOG", "info,axum::serve=trace"),
    ]);
    let mut service = Service::start(&binary("axum-serve"), dir.path(), "axum-serve", &settings);
    service.wait_ready();
    assert_eq!(get(service.traffic, "/").unwrap().body, "hello\n");

    service.skip_logged();
    let (load, stop_load) = start_load(&service, LOAD_CONNECTIONS, 1_000);
    // Under load: every client of the load generator has connected.
    for _ in 0..LOAD_CONNECTIONS {
        service.wait_for_log("accepted", PATIENCE);
    }

    let triggered = Instant::now();
    service.signal(Signal::SIGTERM);
    service.wait_for_log("to=draining", PATIENCE);

    // Lame duck: readiness fails, liveness holds, traffic is still served (on new
    // connections too), each response telling the client to go.
    let ready = get(service.admin, "/readyz?verbose").unwrap();
    assert_eq!(ready.status, 503, "{ready:?}");
    assert_eq!(get(service.admin, "/livez").unwrap().status, 200);
    let fresh = get(service.traffic, "/").unwrap();
    assert_eq!(fresh.status, 200);
    assert_eq!(fresh.header("connection"), Some("close"));

    // A second `/shutdown` triggers nothing and answers once the lame duck is over
    // (Stopping): until the balancer has stopped sending, it must not have answered.
    let admin = service.admin;
    let (stopping_tx, stopping_rx) = mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let response = get(admin, "/shutdown");
        let _ = stopping_tx.send(());
        response
    });
    // Traffic keeps arriving while readiness has failed and endpoint removal propagates;
    // it stops before the listener closes, as a balancer's would.
    let until_balancer_stops =
        delay.saturating_sub(triggered.elapsed() + Duration::from_millis(400));
    assert!(
        matches!(
            stopping_rx.recv_timeout(until_balancer_stops),
            Err(mpsc::RecvTimeoutError::Timeout)
        ),
        "the lame duck ended before the delay was over"
    );
    let _ = stop_load.send(());
    let load = load.join().unwrap();

    let answer = waiter.join().unwrap().unwrap();
    assert_eq!(answer.status, 200, "{answer:?}");
    let body: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
    assert_eq!(body["first"], false, "{body}");

    let status = service.wait_exit(Duration::from_secs(25));
    assert_eq!(status, 0, "{}", service.logs());

    eprintln!("{load}");
    assert!(load.counts.ok > 500, "{load}");
    assert_eq!(load.failures(), 0, "{load}");
    assert_eq!(load.counts.no_response, 0, "{load}");
    assert_eq!(load.counts.refused, 0, "{load}");
    assert_eq!(load.counts.status_5xx, 0, "{load}");
    assert_eq!(load.counts.timeout, 0, "{load}");

    let report = service.report();
    assert_eq!(report["reason"], "signal:SIGTERM", "{report}");
    assert_eq!(report["clean"], true, "{report}");
    assert_eq!(report["requests_cut"], 0, "{report}");
    assert_eq!(report["deadline_exceeded"], false, "{report}");
    assert!(
        get(service.traffic, "/").is_err(),
        "still serving after exit"
    );
}
