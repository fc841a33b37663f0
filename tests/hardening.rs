//! Black-box regression tests for defects found by attacking the release binaries: the
//! `orders` example run as a platform runs it, hostile timing and hostile files included.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use lameduck_platform_tests::{Service, TempDir, binary, env, get, sample};
use nix::sys::signal::Signal;

/// A safety net for what should take far less; nothing is paced by it.
const PATIENCE: Duration = Duration::from_secs(30);

/// `POST /orders` with all of its body but the last byte sent; [`finish`] sends that byte
/// and reads the answer. The handler cannot return before then.
struct PendingOrder {
    stream: TcpStream,
    last: u8,
}

fn begin_order(addr: SocketAddr, item: &str) -> PendingOrder {
    let body = format!(r#"{{"item":"{item}","quantity":1}}"#);
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    stream.set_read_timeout(Some(PATIENCE)).expect("timeout");
    let head = format!(
        "POST /orders HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    let (most, last) = body.as_bytes().split_at(body.len() - 1);
    stream.write_all(head.as_bytes()).expect("head");
    stream.write_all(most).expect("body");
    PendingOrder {
        stream,
        last: last[0],
    }
}

impl PendingOrder {
    /// The accepted order's id, or `None` if the order was not acknowledged.
    fn finish(mut self) -> Option<u64> {
        self.stream.write_all(&[self.last]).ok()?;
        let mut raw = Vec::new();
        // A cut connection may reset rather than close: what was read is what counts.
        let _ = self.stream.read_to_end(&mut raw);
        let response = lameduck_platform_tests::parse_response(&raw).ok()?;
        if response.status != 202 {
            return None;
        }
        let order: serde_json::Value = serde_json::from_str(&response.body).ok()?;
        order["id"].as_u64()
    }
}

/// Wait until the service's own metrics (`GET /metrics` on the admin port, current at each
/// scrape) count `wanted` requests in flight.
fn wait_for_requests_in_flight(admin: SocketAddr, wanted: u64) {
    let deadline = Instant::now() + PATIENCE;
    let mut last = String::new();
    while Instant::now() < deadline {
        if let Ok(scrape) = get(admin, "/metrics") {
            if sample(&scrape.body, "lameduck_requests_in_flight") == Some(wanted as f64) {
                return;
            }
            last = scrape.body;
        }
        // A poll's pace, not a synchronisation: the condition above is.
        std::thread::sleep(Duration::from_millis(5));
    }
    panic!("never {wanted} request(s) in flight; last scrape:\n{last}");
}

fn assert_all_present(dir: &Path, state: &Path, acked: &[u64]) {
    let mut next = Service::start(
        &binary("orders"),
        dir,
        "orders-next",
        &env(&[
            ("ORDERS_STATE", state.to_str().expect("utf-8 path")),
            ("ORDERS_WORK_TIME", "1h"),
        ]),
    );
    next.wait_ready();
    for id in acked {
        let answer = get(next.traffic, &format!("/orders/{id}")).expect("GET order");
        assert_eq!(
            answer.status,
            200,
            "order {id} was acknowledged (202) but is gone after the restart; acked {acked:?}\n{}",
            next.logs()
        );
    }
    next.signal(Signal::SIGTERM);
    next.wait_exit(PATIENCE);
}

/// Defect 1: acknowledged orders were lost at the drain cut, because AfterDrain hooks ran
/// as soon as the cut fired while handlers still answered `202`. Orders complete all
/// around the cut; every acknowledged one must survive the restart.
#[test]
fn no_order_acknowledged_around_the_drain_cut_is_lost() {
    const ORDERS: u64 = 60;
    let dir = TempDir::new("cut-orders");
    let state = dir.path().join("orders.json");
    let mut orders = Service::start(
        &binary("orders"),
        dir.path(),
        "orders",
        &env(&[
            ("LAMEDUCK_SHUTDOWN_DELAY", "0s"),
            ("LAMEDUCK_DRAIN_TIMEOUT", "300ms"),
            ("ORDERS_STATE", state.to_str().expect("utf-8 path")),
            ("ORDERS_WORK_TIME", "1h"),
        ]),
    );
    orders.wait_ready();
    let traffic = orders.traffic;
    let all_begun = Arc::new(Barrier::new(ORDERS as usize + 1));
    let signalled = Arc::new(Barrier::new(ORDERS as usize + 1));
    let clients: Vec<_> = (0..ORDERS)
        .map(|i| {
            let all_begun = Arc::clone(&all_begun);
            let signalled = Arc::clone(&signalled);
            std::thread::spawn(move || {
                let order = begin_order(traffic, &format!("item-{i}"));
                all_begun.wait();
                signalled.wait();
                // The load's shape, not a synchronisation: completions spread over 0.6 s
                // after SIGTERM, across the cut at 0.3 s.
                std::thread::sleep(Duration::from_millis(i * 10));
                order.finish()
            })
        })
        .collect();
    all_begun.wait();
    orders.signal(Signal::SIGTERM);
    signalled.wait();
    let acked: Vec<u64> = clients
        .into_iter()
        .filter_map(|c| c.join().expect("client thread"))
        .collect();
    orders.wait_exit(PATIENCE);
    assert_all_present(dir.path(), &state, &acked);
}

/// Defect 2: with a request slower than the grace period in flight, the deadline abandoned
/// `persist-orders` and every acknowledged order was lost. The drain is now cut early
/// enough for the AfterDrain hooks to run.
#[test]
fn a_slow_request_does_not_cost_the_acknowledged_orders() {
    let dir = TempDir::new("slow-orders");
    let state = dir.path().join("orders.json");
    let mut orders = Service::start(
        &binary("orders"),
        dir.path(),
        "orders",
        &env(&[
            ("LAMEDUCK_SHUTDOWN_DELAY", "0s"),
            ("LAMEDUCK_GRACE_PERIOD", "3s"),
            ("ORDERS_STATE", state.to_str().expect("utf-8 path")),
            ("ORDERS_WORK_TIME", "1h"),
        ]),
    );
    orders.wait_ready();
    let acked: Vec<u64> = (0..5)
        .map(|i| {
            begin_order(orders.traffic, &format!("item-{i}"))
                .finish()
                .expect("accepted while ready")
        })
        .collect();
    let mut slow = TcpStream::connect(orders.traffic).expect("connect");
    slow.write_all(b"GET /work?ms=60000 HTTP/1.1\r\nHost: orders\r\n\r\n")
        .expect("request");
    // The grace period is shorter than persist-orders' timeout, so the drain is cut as
    // Stopping begins: the request must have begun by then to be in flight, not merely
    // sent. (Sent but unread, it is a cut connection, not a cut request.)
    wait_for_requests_in_flight(orders.admin, 1);
    orders.signal(Signal::SIGTERM);
    let status = orders.wait_exit(PATIENCE);
    let report = orders.report();
    let persist = report["hooks"]
        .as_array()
        .and_then(|hooks| hooks.iter().find(|h| h["name"] == "persist-orders"))
        .unwrap_or_else(|| panic!("persist-orders in {report}"));
    assert_eq!(persist["outcome"], "ok", "{report}");
    assert_eq!(report["requests_cut"], 1, "{report}");
    assert_ne!(status, 0, "a request was cut: not clean");
    drop(slow);
    assert_all_present(dir.path(), &state, &acked);
}

/// Defect 6: a termination log nobody reads (a FIFO) kept the process alive past the grace
/// period: the report's write and the watchdog's both blocked in `open`.
#[test]
fn a_termination_log_nobody_reads_does_not_delay_the_exit() {
    let dir = TempDir::new("fifo-log");
    let fifo = dir.path().join("termination-log");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo");
    assert!(made.success());
    let mut orders = Service::start(
        &binary("orders"),
        dir.path(),
        "orders",
        &env(&[
            ("LAMEDUCK_SHUTDOWN_DELAY", "0s"),
            ("LAMEDUCK_GRACE_PERIOD", "10s"),
            (
                "LAMEDUCK_TERMINATION_LOG",
                fifo.to_str().expect("utf-8 path"),
            ),
            (
                "ORDERS_STATE",
                dir.path().join("s.json").to_str().expect("utf-8"),
            ),
        ]),
    );
    orders.wait_ready();
    let signalled = Instant::now();
    orders.signal(Signal::SIGTERM);
    let status = orders.wait_exit(PATIENCE);
    let took = signalled.elapsed();
    assert!(
        took < Duration::from_secs(10),
        "exited {took:?} after SIGTERM, past the 10 s grace period"
    );
    assert_eq!(status, 0, "{}", orders.logs());
    assert!(
        orders
            .logs()
            .contains("could not write the termination log"),
        "{}",
        orders.logs()
    );
}

/// Defect 9: a SIGTERM while the service was still loading (before `run()`) was lost, or
/// ended the process without a report. The handlers now exist from the moment the
/// lifecycle is built, and the early signal starts an orderly shutdown; the state loaded
/// is persisted again.
#[test]
fn a_sigterm_while_the_state_loads_is_an_orderly_shutdown() {
    let dir = TempDir::new("early-sigterm");
    let state = dir.path().join("orders.json");
    // A large state, so that loading it takes a while after the handlers exist.
    let orders_json: Vec<String> = (1..=200_000)
        .map(|id| {
            format!(r#""{id}":{{"id":{id},"item":"item-{id}","quantity":1,"status":"queued"}}"#)
        })
        .collect();
    let queue: Vec<String> = (1..=200_000).map(|id: u32| id.to_string()).collect();
    std::fs::write(
        &state,
        format!(
            r#"{{"next_id":200001,"orders":{{{}}},"queue":[{}]}}"#,
            orders_json.join(","),
            queue.join(",")
        ),
    )
    .expect("state file");
    let mut orders = Service::start(
        &binary("orders"),
        dir.path(),
        "orders",
        &env(&[
            ("LAMEDUCK_SHUTDOWN_DELAY", "0s"),
            ("ORDERS_STATE", state.to_str().expect("utf-8 path")),
        ]),
    );
    orders.wait_for_log("listening for shutdown signals", PATIENCE);
    orders.signal(Signal::SIGTERM);
    let status = orders.wait_exit(PATIENCE);
    assert_eq!(status, 0, "{}", orders.logs());
    let report = orders.report();
    assert_eq!(report["reason"], "signal:SIGTERM", "{report}");
    assert_eq!(report["clean"], true, "{report}");
    let saved: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&state).expect("state")).expect("json");
    assert_eq!(
        saved["orders"].as_object().map(serde_json::Map::len),
        Some(200_000),
        "the loaded orders were persisted again"
    );
}

/// Defect 10: a SIGTERM during start-up (the warm-up hook still running) exited 1,
/// "unclean". A shutdown requested before Ready is orderly: exit 0, with a report.
#[test]
fn a_sigterm_during_the_warm_up_exits_zero_with_a_report() {
    let dir = TempDir::new("warm-up-sigterm");
    let mut orders = Service::start(
        &binary("orders"),
        dir.path(),
        "orders",
        &env(&[
            ("LAMEDUCK_SHUTDOWN_DELAY", "0s"),
            ("ORDERS_WARMUP", "1h"),
            (
                "ORDERS_STATE",
                dir.path().join("s.json").to_str().expect("utf-8"),
            ),
        ]),
    );
    orders.wait_for_log("admin endpoints listening", PATIENCE);
    let starting = get(orders.admin, "/readyz").expect("readyz");
    assert_eq!(starting.status, 503, "still warming up");
    orders.signal(Signal::SIGTERM);
    let status = orders.wait_exit(PATIENCE);
    assert_eq!(status, 0, "{}", orders.logs());
    let report = orders.report();
    assert_eq!(report["clean"], true, "{report}");
    assert_eq!(report["exit_code"], 0, "{report}");
}
