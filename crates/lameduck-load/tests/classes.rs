//! Every class against a small in-test server on 127.0.0.1:0: healthy, 503, closed port,
//! reads-then-closes, `Connection: close`, hangs; the time of each failure; plus the idle
//! and slow helpers.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use lameduck_load::{Class, IdleConnections, LoadConfig, LoadReport, Method, SlowRequests, Target};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;

type Handler = Arc<
    dyn Fn(Request<Incoming>) -> Pin<Box<dyn Future<Output = Response<Full<Bytes>>> + Send>>
        + Send
        + Sync,
>;

/// A hyper HTTP/1.1 server (keep-alive on) answering every request with `handler`.
async fn hyper_server(handler: Handler) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let handler = handler.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let handler = handler.clone();
                    async move { Ok::<_, Infallible>(handler(req).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

fn respond(status: StatusCode, body: &'static str) -> Handler {
    Arc::new(move |_req| {
        Box::pin(async move {
            let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
            *response.status_mut() = status;
            response
        })
    })
}

/// A raw TCP server: runs `conn` on every accepted connection.
async fn raw_server<F, Fut>(conn: F) -> SocketAddr
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(conn(stream));
        }
    });
    addr
}

/// Reads one request head (requests in these tests have no body).
async fn read_head(stream: &mut TcpStream) -> bool {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    true
}

fn config(addr: SocketAddr, path: &str) -> LoadConfig {
    let mut config = LoadConfig::new(&format!("http://{addr}{path}")).unwrap();
    config.connections = 4;
    config.rate = 200;
    config.duration = Some(Duration::from_millis(1000));
    config.request_timeout = Duration::from_secs(2);
    config
}

async fn run(config: LoadConfig) -> LoadReport {
    let report = tokio::time::timeout(
        Duration::from_secs(20),
        lameduck_load::run(config, std::future::pending()),
    )
    .await
    .expect("the run ends by itself");
    eprintln!("{report}");
    report
}

fn only(report: &LoadReport, class: Class) {
    for other in Class::ALL {
        if other != class {
            assert_eq!(report.counts.get(other), 0, "{other} in\n{report}");
        }
    }
    assert!(report.counts.get(class) > 0, "no {class} in\n{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthy_server_all_ok_on_kept_alive_connections() {
    let addr = hyper_server(respond(StatusCode::OK, "hello")).await;
    let report = run(config(addr, "/")).await;
    only(&report, Class::Ok);
    // 200/s for 1 s: the pacer keeps the rate (generous bounds for a loaded machine).
    assert!((100..=220).contains(&report.counts.ok), "{report}");
    assert_eq!(
        report.connections_opened, 4,
        "keep-alive: one connection per worker"
    );
    assert_eq!(report.idle_closed, 0);
    assert!(report.latency_p50_us > 0 && report.latency_p99_us >= report.latency_p50_us);
    let seconds: u64 = report.timeline.iter().map(|b| b.counts.ok).sum();
    assert_eq!(seconds, report.counts.ok);
    // The JSON has the classes at the top level.
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["ok"], report.counts.ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_sends_json_body_and_headers() {
    let handler: Handler = Arc::new(|req: Request<Incoming>| {
        Box::pin(async move {
            let good = req.method() == hyper::Method::POST
                && req.uri() == "/orders"
                && req.headers()["content-type"] == "application/json"
                && req.headers()["x-bench"] == "1";
            let body = req.into_body().collect().await.unwrap().to_bytes();
            let mut response = Response::new(Full::new(Bytes::from_static(b"{\"id\":1}")));
            *response.status_mut() = if good && body.as_ref() == br#"{"item":"x"}"# {
                StatusCode::ACCEPTED
            } else {
                StatusCode::INTERNAL_SERVER_ERROR
            };
            response
        })
    });
    let addr = hyper_server(handler).await;
    let mut config = config(addr, "/orders")
        .json_body(r#"{"item":"x"}"#)
        .header("X-Bench: 1")
        .unwrap();
    config.method = Method::POST;
    config.duration = Some(Duration::from_millis(300));
    let report = run(config).await;
    only(&report, Class::Ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_answering_503_is_all_status_5xx() {
    let addr = hyper_server(respond(StatusCode::SERVICE_UNAVAILABLE, "draining")).await;
    let report = run(config(addr, "/")).await;
    only(&report, Class::Status5xx);
    assert_eq!(report.failures(), report.counts.status_5xx);
    assert!(report.latency_p50_us > 0, "5xx responses have latency too");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_listed_with_their_times() {
    // 200 for the first 400 ms of the run, 500 after: the failures start near 400 ms.
    let start = Instant::now();
    let flip = start + Duration::from_millis(400);
    let handler: Handler = Arc::new(move |_req| {
        Box::pin(async move {
            let mut response = Response::new(Full::new(Bytes::from_static(b"x")));
            if Instant::now() >= flip {
                *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            }
            response
        })
    });
    let addr = hyper_server(handler).await;
    let report = tokio::time::timeout(
        Duration::from_secs(20),
        lameduck_load::run_from(config(addr, "/"), std::future::pending(), start),
    )
    .await
    .expect("the run ends by itself");
    eprintln!("{report}");
    assert!(report.counts.ok > 0, "{report}");
    assert!(report.counts.status_5xx > 0, "{report}");
    assert_eq!(report.failures(), report.counts.status_5xx, "{report}");
    // One entry per failure, all status_5xx, in start order, within the run.
    let times = &report.failures_at;
    assert_eq!(times.len() as u64, report.counts.status_5xx);
    assert_eq!(report.failures_at_dropped, 0);
    assert!(
        times.iter().all(|f| f.class == Class::Status5xx),
        "{times:?}"
    );
    assert!(
        times.windows(2).all(|w| w[0].at_ms <= w[1].at_ms),
        "{times:?}"
    );
    // An attempt started just before the flip may be answered just after it.
    let first = times[0].at_ms;
    assert!((300..=600).contains(&first), "first failure at {first} ms");
    assert!(times.iter().all(|f| f.at_ms < 1000), "{times:?}");
    // The same times as the timeline's: nothing failed in a second without failures.
    for f in times {
        let second = &report.timeline[usize::try_from(f.at_ms / 1000).unwrap()];
        assert!(second.counts.status_5xx > 0);
    }
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["failures_at"][0]["class"], "status_5xx");
    assert_eq!(json["failures_at"][0]["at_ms"], first);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_from_measures_from_the_given_start() {
    let addr = hyper_server(respond(StatusCode::BAD_GATEWAY, "no")).await;
    // A start 2 s ago: the run ends at start + duration, and the times count from start.
    let start = Instant::now() - Duration::from_secs(2);
    let mut config = config(addr, "/");
    config.duration = Some(Duration::from_millis(2500));
    let report = tokio::time::timeout(
        Duration::from_secs(20),
        lameduck_load::run_from(config, std::future::pending(), start),
    )
    .await
    .expect("the run ends by itself");
    eprintln!("{report}");
    only(&report, Class::Status5xx);
    assert!(report.elapsed_ms >= 2500, "{report}");
    // About 200/s for 0.5 s: no burst for the 2 s of slots before the call.
    assert!(report.counts.status_5xx <= 150, "{report}");
    let times = &report.failures_at;
    assert_eq!(times.len() as u64, report.counts.status_5xx);
    assert!(
        times.iter().all(|f| (2000..2500).contains(&f.at_ms)),
        "{times:?}"
    );
    assert_eq!(report.timeline[0].counts.total(), 0);
    assert_eq!(report.timeline[1].counts.total(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_without_failures_lists_none() {
    let addr = hyper_server(respond(StatusCode::OK, "hello")).await;
    let mut config = config(addr, "/");
    config.duration = Some(Duration::from_millis(300));
    let report = run(config).await;
    only(&report, Class::Ok);
    assert!(report.failures_at.is_empty());
    let json = serde_json::to_value(&report).unwrap();
    assert!(json.get("failures_at").is_none(), "{json}");
    assert!(json.get("failures_at_dropped").is_none(), "{json}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_port_is_all_refused() {
    let addr = {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap()
    };
    let report = run(config(addr, "/")).await;
    only(&report, Class::Refused);
    assert_eq!(report.connections_opened, 0);
    // Refused attempts take request slots too: the attempt rate stays near 200/s.
    assert!(report.counts.refused <= 220, "{report}");
    assert!(
        report
            .errors
            .iter()
            .any(|e| e.starts_with("refused: connect:")),
        "{:?}",
        report.errors
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn until_refused_stops_when_the_target_is_gone() {
    let addr = {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap()
    };
    let mut config = config(addr, "/");
    config.duration = None;
    config.until_refused = Some(Duration::from_millis(300));
    let started = Instant::now();
    let report = run(config).await;
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(300), "{took:?}");
    assert!(took < Duration::from_secs(5), "{took:?}");
    only(&report, Class::Refused);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_future_ends_the_run_early() {
    let addr = hyper_server(respond(StatusCode::OK, "hello")).await;
    let mut config = config(addr, "/");
    config.duration = Some(Duration::from_secs(60));
    let started = Instant::now();
    let report = lameduck_load::run(config, tokio::time::sleep(Duration::from_millis(300))).await;
    assert!(started.elapsed() < Duration::from_secs(5));
    only(&report, Class::Ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_then_close_without_answer_is_no_response() {
    // Half of the connections end with FIN, half with RST.
    let n = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let addr = raw_server(move |mut stream| {
        let reset = n
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            .is_multiple_of(2);
        async move {
            if read_head(&mut stream).await && reset {
                stream.set_zero_linger().unwrap();
            }
            drop(stream);
        }
    })
    .await;
    let mut config = config(addr, "/");
    config.duration = Some(Duration::from_millis(500));
    let report = run(config).await;
    only(&report, Class::NoResponse);
    // Every request went out on a new connection: nothing a retrying client would hide.
    assert_eq!(report.no_response_reused, 0);
    assert_eq!(report.connections_opened, report.counts.no_response);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_close_makes_workers_reconnect() {
    let handler: Handler = Arc::new(|_req| {
        Box::pin(async move {
            let mut response = Response::new(Full::new(Bytes::from_static(b"bye")));
            response
                .headers_mut()
                .insert("connection", "close".parse().unwrap());
            response
        })
    });
    let addr = hyper_server(handler).await;
    let mut config = config(addr, "/");
    config.duration = Some(Duration::from_millis(500));
    let report = run(config).await;
    only(&report, Class::Ok);
    assert!(report.connections_opened > 4, "{report}");
    // One connection per request: the worker never tries a closed connection.
    assert_eq!(report.connections_opened, report.counts.ok, "{report}");
    assert_eq!(report.idle_closed, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_closed_by_server_is_reconnected_not_failed() {
    // Answers one request per connection with keep-alive, then closes the idle
    // connection 10 ms later; workers come back every ~200 ms, long after hyper has read
    // the FIN.
    let addr = raw_server(|mut stream| async move {
        if read_head(&mut stream).await {
            let _ = stream
                .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                .await;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let mut config = config(addr, "/");
    config.connections = 2;
    config.rate = 10;
    let report = run(config).await;
    only(&report, Class::Ok);
    assert!(report.idle_closed > 0, "{report}");
    assert_eq!(report.connections_opened, report.counts.ok, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hanging_server_is_timeout() {
    let addr = raw_server(|mut stream| async move {
        read_head(&mut stream).await;
        tokio::time::sleep(Duration::from_secs(30)).await;
    })
    .await;
    let mut config = config(addr, "/");
    config.connections = 2;
    config.rate = 20;
    config.duration = Some(Duration::from_millis(600));
    config.request_timeout = Duration::from_millis(200);
    let started = Instant::now();
    let report = run(config).await;
    only(&report, Class::Timeout);
    // In-flight requests end by their timeout, not the server.
    assert!(started.elapsed() < Duration::from_secs(5));
    // A timed-out connection is dropped: every request after it needs a new one.
    assert_eq!(report.connections_opened, report.counts.timeout, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_are_held_until_the_server_closes_them() {
    let close = Arc::new(Notify::new());
    let closer = close.clone();
    let addr = raw_server(move |mut stream| {
        let close = closer.clone();
        async move {
            let notified = close.notified();
            if read_head(&mut stream).await {
                let _ = stream
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                    .await;
                notified.await;
            }
        }
    })
    .await;
    let target = Target::parse(&format!("http://{addr}/")).unwrap();
    let idle = IdleConnections::open(&target, 50, Duration::from_secs(5)).await;
    assert_eq!(idle.opened(), 50, "{:?}", idle.errors());
    assert_eq!(idle.failed(), 0);
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(idle.closed(), 0, "held, not closed");
    let wait = idle.wait_all_closed();
    tokio::pin!(wait);
    assert!(
        tokio::time::timeout(Duration::from_millis(100), &mut wait)
            .await
            .is_err(),
        "does not finish while the connections are open"
    );
    close.notify_waiters();
    tokio::time::timeout(Duration::from_secs(5), wait)
        .await
        .expect("finishes once the server closed them");
    assert_eq!(idle.closed(), 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_requests_are_in_flight_together() {
    let handler: Handler = Arc::new(|_req| {
        Box::pin(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            Response::new(Full::new(Bytes::from_static(b"done")))
        })
    });
    let addr = hyper_server(handler).await;
    let target = Target::parse(&format!("http://{addr}/work?ms=300")).unwrap();
    let started = Instant::now();
    let slow = SlowRequests::start(&target, 40, Duration::from_secs(5));
    slow.wait_sent().await;
    assert_eq!(slow.sent(), 40);
    let report = tokio::time::timeout(Duration::from_secs(10), slow.finish())
        .await
        .unwrap();
    assert_eq!(report.requests, 40);
    assert_eq!(report.counts.ok, 40, "{:?}", report.errors);
    assert!(report.latency_p50_us >= 300_000);
    // Concurrent, not one after another.
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_requests_cut_by_the_server_are_no_response() {
    let addr = raw_server(|mut stream| async move {
        if read_head(&mut stream).await {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    let target = Target::parse(&format!("http://{addr}/work?ms=1000")).unwrap();
    let slow = SlowRequests::start(&target, 10, Duration::from_secs(5));
    let report = slow.finish().await;
    assert_eq!(report.counts.no_response, 10, "{:?}", report.errors);
}
