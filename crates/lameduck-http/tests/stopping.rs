//! Stopping: the listener closes, idle connections close at once, in-flight requests
//! finish up to the drain timeout and are cut after it.

mod common;

use std::convert::Infallible;
use std::time::{Duration, Instant};

use axum::body::Body;
use bytes::Bytes;
use common::*;
use http_body_util::BodyExt;
use lameduck::State;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

/// A route whose body is streamed from chunks the test sends; `started` fires when the
/// handler runs.
fn streaming_route(chunks: mpsc::Receiver<Bytes>, started: oneshot::Sender<()>) -> axum::Router {
    let slot = std::sync::Arc::new(std::sync::Mutex::new(Some((chunks, started))));
    axum::Router::new().route(
        "/stream",
        axum::routing::get(move || {
            let taken = slot.lock().expect("lock").take();
            async move {
                let (rx, started) = taken.expect("one request");
                let _ = started.send(());
                let stream = futures_util::stream::unfold(rx, |mut rx| async move {
                    rx.recv()
                        .await
                        .map(|chunk| (Ok::<_, Infallible>(chunk), rx))
                });
                Body::from_stream(stream)
            }
        }),
    )
}

#[tokio::test]
async fn stopping_refuses_new_connections() {
    let lifecycle = lifecycle(|b| b);
    let (chunks, rx) = mpsc::channel(1);
    let (started_tx, started) = oneshot::channel();
    let (addr, server) = spawn_serve(streaming_route(rx, started_tx), &lifecycle).await;

    // A request in flight keeps the lifecycle in Stopping while the test knocks.
    let (mut sender, _conn) = http1(addr).await;
    let response = sender.send_request(get("/stream")).await.expect("head");
    started.await.expect("handler started");
    lifecycle.shutdown();
    lifecycle.stopping().await;
    until("listener closed", || lifecycle.listeners().active() == 0).await;

    match TcpStream::connect(addr).await {
        Err(error) => assert_eq!(error.kind(), std::io::ErrorKind::ConnectionRefused),
        Ok(mut stream) => {
            // Refused as far as HTTP goes: closed without a response.
            let answer = raw_exchange(&mut stream, RAW_GET).await;
            assert!(
                answer.is_err(),
                "a new connection was served at Stopping: {answer:?}"
            );
        }
    }
    assert_eq!(lifecycle.state(), State::Stopping);

    drop(chunks);
    let body = response.into_body().collect().await.expect("whole body");
    assert!(body.to_bytes().is_empty());
    let report = report(server).await;
    assert!(report.clean, "{report:?}");
}

/// Raise the soft limit on open files to the hard limit; the number of connections the
/// test may open (two descriptors each, plus some slack).
fn room_for_connections(wanted: usize) -> usize {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return wanted.min(400);
    };
    let limit = if setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
        hard
    } else {
        soft
    };
    let room = usize::try_from(limit.saturating_sub(200) / 2).unwrap_or(usize::MAX);
    wanted.min(room)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connections_close_at_once_at_stopping() {
    let count = room_for_connections(1000);
    assert!(
        count >= 400,
        "too few file descriptors for this test: {count}"
    );
    let lifecycle = lifecycle(|b| b.drain_timeout(Duration::from_secs(20)));
    let (addr, server) = spawn_serve(hello(), &lifecycle).await;

    let mut clients = Vec::with_capacity(count);
    for _ in 0..count {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        let response = raw_exchange(&mut stream, RAW_GET).await.expect("response");
        assert!(!response.says_close());
        clients.push(stream);
    }
    assert_eq!(lifecycle.connections().active(), count);
    assert_eq!(lifecycle.listeners().active(), 1);

    let started = Instant::now();
    lifecycle.shutdown();
    let report = report(server).await;
    let took = started.elapsed();
    assert!(report.clean, "{report:?}");
    assert_eq!(report.connections_cut, 0);
    assert!(
        took < Duration::from_secs(5),
        "{count} idle connections took {took:?}"
    );

    for mut stream in clients {
        assert_eq!(
            within("close", read_until_closed(&mut stream))
                .await
                .expect("closed in order, not reset"),
            0
        );
    }
    assert_eq!(lifecycle.connections().active(), 0);
}

#[tokio::test]
async fn request_in_flight_across_the_stop_completes_with_its_whole_body() {
    let lifecycle = lifecycle(|b| b.drain_timeout(Duration::from_secs(20)));
    let (chunks, rx) = mpsc::channel(4);
    let (started_tx, started) = oneshot::channel();
    let (addr, server) = spawn_serve(streaming_route(rx, started_tx), &lifecycle).await;

    let (mut sender, _conn) = http1(addr).await;
    let response = sender.send_request(get("/stream")).await.expect("head");
    started.await.expect("handler started");
    let mut body = response.into_body();
    chunks
        .send(Bytes::from_static(b"before "))
        .await
        .expect("send");
    let mut received = body
        .frame()
        .await
        .expect("frame")
        .expect("data")
        .into_data()
        .expect("data")
        .to_vec();

    lifecycle.shutdown();
    lifecycle.stopping().await;
    assert_eq!(
        lifecycle.requests().active(),
        1,
        "the streaming response is in flight"
    );
    chunks
        .send(Bytes::from_static(b"during "))
        .await
        .expect("send");
    chunks
        .send(Bytes::from_static(b"stopping"))
        .await
        .expect("send");
    drop(chunks);
    let rest = within("rest", body.collect())
        .await
        .expect("whole body")
        .to_bytes();
    received.extend_from_slice(&rest);
    assert_eq!(received, b"before during stopping");

    let report = report(server).await;
    assert!(report.clean, "{report:?}");
    assert_eq!(report.requests_cut, 0);
}

#[tokio::test]
async fn request_longer_than_the_drain_timeout_is_cut_and_counted() {
    let lifecycle = lifecycle(|b| b.drain_timeout(Duration::from_millis(300)));
    let (_chunks, rx) = mpsc::channel(1);
    let (started_tx, started) = oneshot::channel();
    let (addr, server) = spawn_serve(streaming_route(rx, started_tx), &lifecycle).await;

    let (mut sender, conn) = http1(addr).await;
    let response = sender.send_request(get("/stream")).await.expect("head");
    started.await.expect("handler started");

    lifecycle.shutdown();
    let report = report(server).await;
    assert!(!report.clean);
    assert_eq!(report.exit_code, lameduck::EXIT_UNCLEAN);
    assert!(report.requests_cut >= 1, "{report:?}");
    assert!(report.connections_cut >= 1, "{report:?}");

    // The client sees its response cut short.
    assert!(within("cut", response.into_body().collect()).await.is_err());
    let _ = within("connection", conn).await;
    assert_eq!(lifecycle.requests().active(), 0);
    assert_eq!(lifecycle.connections().active(), 0);
}

#[tokio::test]
async fn a_silent_connection_gets_a_grace_for_its_first_request_then_is_closed() {
    let lifecycle = lifecycle(|b| b);
    let (listener, addr) = bind().await;
    let server = lameduck_http::serve(listener, hello(), &lifecycle)
        .first_request_grace(Duration::from_millis(1500));
    let server = tokio::spawn(server.into_future());
    // An idle keep-alive connection, closed at once at Stopping: its close tells the test
    // that the server's connections have been told of Stopping.
    let mut witness = TcpStream::connect(addr).await.expect("connect");
    let first = raw_exchange(&mut witness, RAW_GET).await.expect("first");
    assert!(!first.says_close());

    let hold = lifecycle.hold("test");
    lifecycle.shutdown();
    lifecycle.draining().await;
    let mut late = TcpStream::connect(addr).await.expect("connect");
    let mut never = TcpStream::connect(addr).await.expect("connect");
    // Both accepted (the witness counts too).
    until("both accepted", || lifecycle.connections().active() == 3).await;
    drop(hold);
    lifecycle.stopping().await;
    // Stopping has reached the connections (and `late` was woken with the witness): what
    // `late` sends now comes within its grace, after Stopping.
    assert_eq!(
        within("witness closed", read_until_closed(&mut witness))
            .await
            .expect("orderly"),
        0
    );

    let response = raw_exchange(&mut late, RAW_GET)
        .await
        .expect("served within the grace");
    assert_eq!(response.status, 200);
    assert!(response.says_close());
    assert_eq!(
        within("closed", read_until_closed(&mut never))
            .await
            .expect("orderly"),
        0
    );
    let report = report(server).await;
    assert!(report.clean, "{report:?}");
}

#[tokio::test]
async fn a_partial_request_at_stopping_is_finished_and_answered() {
    let lifecycle = lifecycle(|b| b);
    let (addr, server) = spawn_serve(hello(), &lifecycle).await;
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let first = raw_exchange(&mut stream, RAW_GET).await.expect("first");
    assert!(!first.says_close());
    // A second keep-alive connection: the server's answers on it, and its close at
    // Stopping, tell the test when the server has had its turn at both connections.
    let mut witness = TcpStream::connect(addr).await.expect("connect");
    assert!(
        !raw_exchange(&mut witness, RAW_GET)
            .await
            .expect("first")
            .says_close()
    );

    // Half a request on a keep-alive connection when Stopping begins...
    let (head, tail) = RAW_GET.split_at(10);
    stream.write_all(head).await.expect("write");
    // ...read by the server: the half request and this one were in the kernel together,
    // and the runtime woke both connections at once.
    assert!(
        !raw_exchange(&mut witness, RAW_GET)
            .await
            .expect("second")
            .says_close()
    );
    lifecycle.shutdown();
    lifecycle.stopping().await;
    // The idle witness is closed at Stopping; the connection with the half request was
    // woken for Stopping with it, and has had its turn.
    assert_eq!(
        within("witness closed", read_until_closed(&mut witness))
            .await
            .expect("orderly"),
        0
    );
    // ...is not mistaken for an idle connection.
    let response = raw_exchange(&mut stream, tail).await.expect("answered");
    assert_eq!(response.status, 200);
    assert!(response.says_close());
    let report = report(server).await;
    assert!(report.clean, "{report:?}");
}
