//! A panicking handler is answered `500`, keeps its connection usable, and leaves nothing
//! counted: Stopping is not held up, and the report stays clean.

mod common;

use std::convert::Infallible;

use axum::body::Body;
use bytes::Bytes;
use common::*;
use http::StatusCode;
use http_body_util::BodyExt;

fn panicking_app() -> axum::Router {
    hello()
        .route(
            "/panic",
            axum::routing::get(|| async {
                if true {
                    panic!("handler panicked on purpose");
                }
                "unreachable"
            }),
        )
        .route(
            "/panic-in-body",
            axum::routing::get(|| async {
                let chunks = futures_util::stream::unfold(0, |n| async move {
                    match n {
                        0 => Some((Ok::<_, Infallible>(Bytes::from_static(b"first")), 1)),
                        _ => panic!("body panicked on purpose"),
                    }
                });
                Body::from_stream(chunks)
            }),
        )
}

#[tokio::test]
async fn a_panicking_handler_is_answered_500_and_not_left_counted() {
    let lifecycle = lifecycle(|b| b);
    let (addr, server) = spawn_serve(panicking_app(), &lifecycle).await;

    let (mut sender, _conn) = http1(addr).await;
    for _ in 0..3 {
        let (response, _) = fetch(&mut sender, "/panic").await;
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(lifecycle.requests().active(), 0);
    }
    // The connection survived the panics.
    let (response, body) = fetch(&mut sender, "/").await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(body, "hello");

    // So does HTTP/2, where the handler runs on a task of its own.
    let (mut h2, _conn) = http2(addr).await;
    let response = h2
        .send_request(get("http://test/panic"))
        .await
        .expect("response");
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(lifecycle.requests().active(), 0);

    lifecycle.shutdown();
    let report = report(server).await;
    assert!(report.clean, "{report:?}");
    assert_eq!(report.requests_cut, 0);
}

#[tokio::test]
async fn a_body_that_panics_aborts_its_response_and_is_not_left_counted() {
    let lifecycle = lifecycle(|b| b);
    let (addr, server) = spawn_serve(panicking_app(), &lifecycle).await;

    let (mut sender, conn) = http1(addr).await;
    // hyper may have sent the head before the panic, or not: either way the response is
    // aborted, never passed off as complete.
    let complete = match sender.send_request(get("/panic-in-body")).await {
        Ok(response) => response.into_body().collect().await.is_ok(),
        Err(_) => false,
    };
    assert!(!complete, "cut short");
    let _ = within("connection closed", conn).await;
    assert_eq!(lifecycle.requests().active(), 0);
    assert_eq!(lifecycle.connections().active(), 0);
    assert_eq!(lifecycle.listeners().active(), 1);

    lifecycle.shutdown();
    let report = report(server).await;
    assert!(report.clean, "{report:?}");
}
