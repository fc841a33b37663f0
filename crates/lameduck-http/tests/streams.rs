//! Long-lived responses: an SSE stream and an upgraded (WebSocket-like) connection learn of
//! the shutdown through the `StopToken` in their request and end themselves; one that
//! does not is cut at the drain timeout.

mod common;

use std::convert::Infallible;
use std::time::Duration;

use axum::Extension;
use axum::body::Body;
use axum::response::IntoResponse;
use axum::response::sse::{Event, Sse};
use bytes::Bytes;
use common::*;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use lameduck::State;
use lameduck_http::StopToken;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test]
async fn an_sse_stream_ends_cleanly_when_stopping_begins() {
    let lifecycle = lifecycle(|b| b.drain_timeout(Duration::from_secs(20)));
    let signal = Extension(StopToken::new(&lifecycle));
    let app = axum::Router::new().route(
        "/events",
        axum::routing::get(|Extension(signal): Extension<StopToken>| async move {
            let events = futures_util::stream::unfold(0u32, |n| async move {
                tokio::time::sleep(Duration::from_millis(10)).await;
                Some((
                    Ok::<_, Infallible>(Event::default().data(n.to_string())),
                    n + 1,
                ))
            });
            Sse::new(events)
                .into_response()
                .map(|body| Body::new(signal.until_stopping(body)))
        })
        .layer(signal),
    );
    let (addr, server) = spawn_serve(app, &lifecycle).await;

    let (mut sender, _conn) = http1(addr).await;
    let response = sender.send_request(get("/events")).await.expect("head");
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    let mut text = String::new();
    while !text.contains("data: 2\n") {
        let frame = within("events", body.frame())
            .await
            .expect("open")
            .expect("data");
        if let Ok(data) = frame.into_data() {
            text.push_str(&String::from_utf8_lossy(&data));
        }
    }
    assert_eq!(lifecycle.requests().active(), 1);

    lifecycle.shutdown();
    // The stream ends by itself: a complete response, not an error.
    let rest = within("end of stream", body.collect())
        .await
        .expect("a clean end")
        .to_bytes();
    text.push_str(&String::from_utf8_lossy(&rest));
    assert!(lifecycle.state() >= State::Stopping);
    assert!(text.starts_with("data: 0\n\ndata: 1\n\n"), "{text}");

    let report = report(server).await;
    assert!(report.clean, "{report:?}");
    assert_eq!(report.requests_cut, 0);
}

#[tokio::test]
async fn requests_carry_the_signal_only_when_the_server_is_asked_to() {
    for insert in [false, true] {
        let lifecycle = lifecycle(|b| b);
        let (listener, addr) = bind().await;
        let service = tower::service_fn(|req: Request<hyper::body::Incoming>| async move {
            let carried = req.extensions().get::<StopToken>().is_some();
            Ok::<_, Infallible>(Response::new(carried.to_string()))
        });
        let server = lameduck_http::serve(listener, service, &lifecycle);
        let server = if insert {
            server.insert_stop_token()
        } else {
            server
        };
        let server = tokio::spawn(server.into_future());
        let (mut sender, _conn) = http1(addr).await;
        let response = sender.send_request(get("/")).await.expect("response");
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        assert_eq!(
            body,
            insert.to_string().as_bytes(),
            "insert_stop_token: {insert}"
        );
        lifecycle.shutdown();
        drop(sender);
        assert!(report(server).await.clean);
    }
}

/// A service that upgrades `/echo` (watching the shutdown signal) and `/stubborn`
/// (ignoring it) to an echo protocol.
async fn upgrading(
    mut req: Request<hyper::body::Incoming>,
) -> Result<Response<Empty<Bytes>>, Infallible> {
    let watch_signal = req.uri().path() == "/echo";
    let signal = req
        .extensions()
        .get::<StopToken>()
        .cloned()
        .expect("every request carries the signal");
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let mut io = TokioIo::new(upgraded);
        let mut buf = [0u8; 64];
        loop {
            tokio::select! {
                _ = signal.stopping(), if watch_signal => {
                    let _ = io.write_all(b"bye").await;
                    let _ = io.shutdown().await;
                    return;
                }
                read = io.read(&mut buf) => match read {
                    Ok(0) | Err(_) => return,
                    Ok(n) => if io.write_all(&buf[..n]).await.is_err() { return },
                },
            }
        }
    });
    Ok(Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header("connection", "upgrade")
        .header("upgrade", "echo")
        .body(Empty::new())
        .expect("a valid response"))
}

async fn upgrade(addr: std::net::SocketAddr, path: &str) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let request = format!(
        "GET {path} HTTP/1.1\r\nhost: test\r\nconnection: upgrade\r\nupgrade: echo\r\n\r\n"
    );
    let response = raw_exchange(&mut stream, request.as_bytes())
        .await
        .expect("101");
    assert_eq!(response.status, 101);
    stream.write_all(b"ping").await.expect("write");
    let mut echo = [0u8; 4];
    stream.read_exact(&mut echo).await.expect("echo");
    assert_eq!(&echo, b"ping");
    stream
}

#[tokio::test]
async fn an_upgraded_connection_is_tracked_and_ends_itself_on_the_signal() {
    let lifecycle = lifecycle(|b| b.drain_timeout(Duration::from_secs(20)));
    let (listener, addr) = bind().await;
    let server = tokio::spawn(
        lameduck_http::serve(listener, tower::service_fn(upgrading), &lifecycle)
            .insert_stop_token()
            .into_future(),
    );

    let mut stream = upgrade(addr, "/echo").await;
    // hyper is done with it, yet it is counted.
    assert_eq!(lifecycle.connections().active(), 1);

    lifecycle.shutdown();
    let mut rest = Vec::new();
    within("goodbye", stream.read_to_end(&mut rest))
        .await
        .expect("orderly close");
    assert_eq!(rest, b"bye");

    let report = report(server).await;
    assert!(report.clean, "{report:?}");
    assert_eq!(lifecycle.connections().active(), 0);
}

#[tokio::test]
async fn an_upgraded_connection_that_ignores_the_signal_is_cut_at_the_drain_timeout() {
    let lifecycle = lifecycle(|b| b.drain_timeout(Duration::from_millis(300)));
    let (listener, addr) = bind().await;
    let server = tokio::spawn(
        lameduck_http::serve(listener, tower::service_fn(upgrading), &lifecycle)
            .insert_stop_token()
            .into_future(),
    );

    let mut stream = upgrade(addr, "/stubborn").await;
    lifecycle.shutdown();
    let report = report(server).await;
    assert!(!report.clean);
    assert_eq!(report.connections_cut, 1, "{report:?}");
    assert_eq!(report.requests_cut, 0, "its request was answered (101)");

    // Cut: the application's read failed and it let go of the connection.
    let mut rest = Vec::new();
    let _ = within("cut", stream.read_to_end(&mut rest)).await;
    assert!(rest.is_empty());
    assert_eq!(lifecycle.connections().active(), 0);
}
