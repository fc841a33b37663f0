//! Draining (lame duck): keep accepting and serving, but tell every client to go away —
//! `Connection: close` on HTTP/1, GOAWAY on HTTP/2.

mod common;

use std::convert::Infallible;

use axum::body::Body;
use bytes::Bytes;
use common::*;
use http_body_util::BodyExt;
use lameduck::State;
use tokio::net::TcpStream;
use tokio::sync::mpsc;

#[tokio::test]
async fn draining_accepts_and_serves_new_connections_with_connection_close() {
    let lifecycle = lifecycle(|b| b);
    let (addr, server) = spawn_serve(hello(), &lifecycle).await;

    // Ready: keep-alive as usual.
    let mut old = TcpStream::connect(addr).await.expect("connect");
    let response = raw_exchange(&mut old, RAW_GET).await.expect("response");
    assert_eq!(response.status, 200);
    assert!(!response.says_close(), "no Connection: close while Ready");

    let hold = lifecycle.hold("test: stay in Draining");
    lifecycle.shutdown();
    lifecycle.draining().await;

    // A new connection during Draining is accepted and served, and told to go.
    for _ in 0..3 {
        let mut new = TcpStream::connect(addr)
            .await
            .expect("accepted while Draining");
        let response = raw_exchange(&mut new, RAW_GET)
            .await
            .expect("served while Draining");
        assert_eq!(response.status, 200);
        assert_eq!(response.body, b"hello");
        assert!(response.says_close(), "{}", response.head);
        assert_eq!(
            read_until_closed(&mut new).await.expect("an orderly close"),
            0,
            "the server closes after the response"
        );
    }
    // The keep-alive connection from before is told on its next response.
    let response = raw_exchange(&mut old, RAW_GET).await.expect("served");
    assert!(response.says_close());
    assert_eq!(lifecycle.state(), State::Draining);

    drop(hold);
    let report = report(server).await;
    assert!(report.clean, "{report:?}");
}

#[tokio::test]
async fn h2c_client_gets_goaway_and_its_open_stream_completes() {
    let lifecycle = lifecycle(|b| b);
    let (chunks_tx, chunks_rx) = mpsc::channel::<Bytes>(4);
    let chunks_rx = std::sync::Arc::new(std::sync::Mutex::new(Some(chunks_rx)));
    let app = axum::Router::new().route(
        "/stream",
        axum::routing::get(move || {
            let rx = chunks_rx.lock().expect("lock").take().expect("one stream");
            async move {
                let stream = futures_util::stream::unfold(rx, |mut rx| async move {
                    rx.recv()
                        .await
                        .map(|chunk| (Ok::<_, Infallible>(chunk), rx))
                });
                Body::from_stream(stream)
            }
        }),
    );
    let (addr, server) = spawn_serve(app, &lifecycle).await;

    let (mut sender, connection) = http2(addr).await;
    let response = sender
        .send_request(get("http://test/stream"))
        .await
        .expect("response head");
    assert_eq!(response.status(), 200);
    assert_eq!(response.version(), http::Version::HTTP_2);
    let mut body = response.into_body();
    chunks_tx
        .send(Bytes::from_static(b"one "))
        .await
        .expect("send");
    let first = body.frame().await.expect("a frame").expect("data");
    assert_eq!(first.into_data().ok(), Some(Bytes::from_static(b"one ")));

    let hold = lifecycle.hold("test: stay in Draining");
    lifecycle.shutdown();
    lifecycle.draining().await;

    // The open stream completes, whole.
    chunks_tx
        .send(Bytes::from_static(b"two"))
        .await
        .expect("send");
    drop(chunks_tx);
    let rest = within("rest of the stream", body.collect())
        .await
        .expect("the stream completes")
        .to_bytes();
    assert_eq!(rest, Bytes::from_static(b"two"));

    // GOAWAY: with its last stream done, the server closes the connection — while still
    // Draining, so it can only be the graceful shutdown — and no new stream is accepted.
    within("connection closed after GOAWAY", connection)
        .await
        .expect("connection task")
        .expect("an orderly end");
    assert_eq!(lifecycle.state(), State::Draining);
    assert!(
        sender
            .send_request(get("http://test/stream"))
            .await
            .is_err()
    );

    // A new h2c connection is still served during Draining.
    let (mut sender, _connection) = http2(addr).await;
    let hello = sender
        .send_request(get("http://test/"))
        .await
        .expect("served while Draining");
    assert_eq!(hello.status(), 404);

    drop(hold);
    let report = report(server).await;
    assert!(report.clean, "{report:?}");
}
