//! `LoadConfig::new_connections_until`: past it, workers keep their keep-alive connection
//! and leave once the server closes it, against a small raw HTTP/1.1 server on
//! 127.0.0.1:0 that decides per connection and per moment how to answer.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use lameduck_load::{Class, LoadConfig, LoadReport};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the server does with one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    /// 200, keep-alive.
    KeepAlive,
    /// 200 with `Connection: close`, then close (as a draining server does).
    Close,
    /// Read the request, then close without a byte of answer (the keep-alive race's
    /// losing side, made certain).
    Drop,
}

type Decide = Arc<dyn Fn(usize, Instant) -> Answer + Send + Sync>;

/// A raw HTTP/1.1 server: connection `n` (0-based, in accept order) answers each request
/// as `decide(n, now)` says.
async fn server(decide: Decide) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let n = accepted.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(serve(stream, n, decide.clone()));
        }
    });
    addr
}

async fn serve(mut stream: TcpStream, n: usize, decide: Decide) {
    loop {
        // One request at a time (the client waits for each response), no bodies.
        let mut head = Vec::new();
        let mut chunk = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(k) => head.extend_from_slice(&chunk[..k]),
            }
        }
        let (response, close): (&[u8], bool) = match decide(n, Instant::now()) {
            Answer::KeepAlive => (b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok", false),
            Answer::Close => (
                b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 2\r\n\r\nok",
                true,
            ),
            Answer::Drop => return,
        };
        if stream.write_all(response).await.is_err() || close {
            return;
        }
    }
}

fn config(addr: SocketAddr, until: Instant) -> LoadConfig {
    let mut config = LoadConfig::new(&format!("http://{addr}/")).unwrap();
    config.connections = 4;
    config.rate = 200;
    // Ended by the workers leaving; the `stop` of `run` is the bound.
    config.duration = None;
    config.request_timeout = Duration::from_secs(2);
    config.new_connections_until = Some(until);
    config
}

/// Runs until every worker has left; `stop` at 10 s is the bound (and fails the test).
async fn run(config: LoadConfig, start: Instant) -> LoadReport {
    let report = tokio::time::timeout(
        Duration::from_secs(20),
        lameduck_load::run_from(config, tokio::time::sleep(Duration::from_secs(10)), start),
    )
    .await
    .expect("the run ends");
    eprintln!("{report}");
    assert!(
        report.elapsed_ms < 10_000,
        "ended by the workers leaving, not by `stop`: {report}"
    );
    report
}

fn ms(since: Duration) -> u64 {
    u64::try_from(since.as_millis()).unwrap()
}

/// Attempts of any class that started in the seconds from `from_s` on.
fn attempts_from_second(report: &LoadReport, from_s: usize) -> u64 {
    report
        .timeline
        .iter()
        .skip(from_s)
        .map(|b| b.counts.total())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_stay_on_their_connection_and_leave_when_it_closes() {
    // Keep-alive until 1.3 s, `Connection: close` after: past the instant (0.3 s) the
    // workers keep their connections for a second, then leave at their next response.
    let start = Instant::now();
    let close_at = start + Duration::from_millis(1300);
    let addr = server(Arc::new(move |_, now| {
        if now < close_at {
            Answer::KeepAlive
        } else {
            Answer::Close
        }
    }))
    .await;
    let report = run(config(addr, start + Duration::from_millis(300)), start).await;
    assert_eq!(report.failures(), 0, "{report}");
    assert_eq!(report.counts.not_sent, 0, "{report}");
    // One connection per worker, kept: none opened after the instant.
    assert_eq!(report.connections_opened, 4, "{report}");
    // Every worker left, each after its close: at or after 1.3 s, and soon after.
    assert_eq!(report.left_at_ms.len(), 4, "{report}");
    assert!(
        report
            .left_at_ms
            .iter()
            .all(|&at| (1300..5000).contains(&at)),
        "{:?}",
        report.left_at_ms
    );
    assert!(report.left_at_ms.windows(2).all(|w| w[0] <= w[1]));
    // They kept their pace between the instant and the close: second 1 (1.0–2.0 s) has
    // the ~60 requests of 1.0–1.3 s at 200/s and then one last one per worker.
    let second_1 = report.timeline[1].counts.ok;
    assert!((20..=80).contains(&second_1), "{report}");
    // Nothing after the last worker left.
    assert!(report.elapsed_ms < 5000, "{report}");
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["left_at_ms"].as_array().unwrap().len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn before_the_instant_workers_reconnect_after_it_they_leave() {
    // `Connection: close` on every response, from the start: before the instant each
    // request needs a new connection (as always); past it, each worker leaves after the
    // response on the connection it has.
    let start = Instant::now();
    let until = start + Duration::from_millis(400);
    let addr = server(Arc::new(|_, _| Answer::Close)).await;
    let report = run(config(addr, until), start).await;
    assert_eq!(report.failures(), 0, "{report}");
    assert!(report.connections_opened > 4, "{report}");
    // A request per connection: no request went out without its own new connection
    // (those started before the instant; a worker with none past it leaves unrecorded).
    assert_eq!(report.connections_opened, report.counts.ok, "{report}");
    assert_eq!(report.left_at_ms.len(), 4, "{report}");
    assert!(
        report.left_at_ms.iter().all(|&at| at >= 400),
        "{:?}",
        report.left_at_ms
    );
    // ~80 requests in 0.4 s, then the workers go: nothing in the seconds after.
    assert!(report.counts.ok <= 100, "{report}");
    assert_eq!(attempts_from_second(&report, 1), 0, "{report}");
    assert!(report.elapsed_ms < 1000, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_on_a_connection_closed_under_it_is_no_response_and_the_worker_leaves() {
    // Keep-alive until 0.8 s; then every request read is dropped unanswered (the
    // connection closed under it). Past the instant (0.3 s) no worker reconnects: one
    // `no_response` per worker, on its reused connection, and no refused attempts.
    let start = Instant::now();
    let drop_at = start + Duration::from_millis(800);
    let addr = server(Arc::new(move |_, now| {
        if now < drop_at {
            Answer::KeepAlive
        } else {
            Answer::Drop
        }
    }))
    .await;
    let report = run(config(addr, start + Duration::from_millis(300)), start).await;
    assert_eq!(report.counts.no_response, 4, "{report}");
    assert_eq!(report.no_response_reused, 4, "{report}");
    assert_eq!(report.failures(), 4, "{report}");
    assert_eq!(report.counts.refused, 0, "{report}");
    assert_eq!(report.connections_opened, 4, "{report}");
    assert_eq!(report.left_at_ms.len(), 4, "{report}");
    let first_failure = report.failures_at.first().unwrap().at_ms;
    assert!(first_failure >= ms(Duration::from_millis(790)), "{report}");
    assert!(
        report
            .failures_at
            .iter()
            .all(|f| f.class == Class::NoResponse),
        "{report}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_that_stay_keep_their_pace() {
    // Connections 0 and 1 are sent away at 0.3 s, 2 and 3 are kept until 1.6 s: the two
    // that stay go on at 50/s each (200/s over 4 workers), not at 100/s each.
    let start = Instant::now();
    let split = start + Duration::from_millis(300);
    let end = start + Duration::from_millis(1600);
    let addr = server(Arc::new(move |n, now| {
        if (n < 2 && now >= split) || now >= end {
            Answer::Close
        } else {
            Answer::KeepAlive
        }
    }))
    .await;
    let report = run(config(addr, start + Duration::from_millis(200)), start).await;
    assert_eq!(report.failures(), 0, "{report}");
    assert_eq!(report.left_at_ms.len(), 4, "{report}");
    assert!(report.left_at_ms[1] < 1000, "{:?}", report.left_at_ms);
    assert!(report.left_at_ms[2] >= 1600, "{:?}", report.left_at_ms);
    // Second 1 (1.0–2.0 s): two workers at 50/s until 1.6 s: ~60, and at 100/s it would
    // be ~120.
    let second_1 = report.timeline[1].counts.ok;
    assert!((25..=85).contains(&second_1), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_without_a_connection_past_the_instant_leaves_at_once() {
    // Nothing listens: every connect before the instant is refused; past it the workers
    // leave without another attempt.
    let addr = {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap()
    };
    let start = Instant::now();
    let report = run(config(addr, start + Duration::from_millis(300)), start).await;
    assert_eq!(report.counts.refused, report.counts.total(), "{report}");
    assert!(report.counts.refused > 0, "{report}");
    assert_eq!(report.left_at_ms.len(), 4, "{report}");
    assert!(
        report.failures_at.iter().all(|f| f.at_ms < 300 + 50),
        "{report}"
    );
    assert!(report.elapsed_ms < 1000, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_setting_nobody_leaves() {
    let start = Instant::now();
    let addr = server(Arc::new(|_, _| Answer::Close)).await;
    let mut config = config(addr, start);
    config.new_connections_until = None;
    config.duration = Some(Duration::from_millis(300));
    let report = lameduck_load::run_from(config, std::future::pending(), start).await;
    assert_eq!(report.failures(), 0, "{report}");
    assert!(report.left_at_ms.is_empty(), "{report}");
    assert_eq!(report.connections_opened, report.counts.ok, "{report}");
    let json = serde_json::to_value(&report).unwrap();
    assert!(json.get("left_at_ms").is_none(), "{json}");
}
