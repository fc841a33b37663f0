//! `InFlightLayer` on its own, with any server: tower calls (paused time, no sockets), and
//! `axum::serve` over a real socket.

mod common;

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use common::lifecycle;
use http::{Request, Response, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use lameduck::Lifecycle;
use lameduck_http::InFlightLayer;
use tower::{Service, ServiceBuilder, ServiceExt};

fn counted_service(
    lifecycle: &Lifecycle,
    calls: Arc<AtomicUsize>,
) -> impl Service<
    Request<()>,
    Response = Response<lameduck_http::InFlightBody<Full<Bytes>>>,
    Error = Infallible,
> + Clone {
    ServiceBuilder::new()
        .layer(InFlightLayer::new(lifecycle).retry_after(Duration::from_secs(5)))
        .service_fn(move |_: Request<()>| {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"hi")))) }
        })
}

fn request(version: Version) -> Request<()> {
    let mut request = Request::new(());
    *request.version_mut() = version;
    request
}

/// Let the layer's state mirror catch up with a transition.
async fn settle() {
    for _ in 0..3 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(start_paused = true)]
async fn the_layer_counts_a_request_until_its_body_ends() {
    let lifecycle = lifecycle(|b| b);
    let calls = Arc::new(AtomicUsize::new(0));
    let service = counted_service(&lifecycle, Arc::clone(&calls));

    let response = service
        .oneshot(request(Version::HTTP_11))
        .await
        .expect("infallible");
    assert_eq!(lifecycle.requests().active(), 1, "the body is not sent yet");
    let body = response
        .into_body()
        .collect()
        .await
        .expect("body")
        .to_bytes();
    assert_eq!(body, "hi");
    assert_eq!(lifecycle.requests().active(), 0);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn the_layer_adds_connection_close_to_http1_responses_from_draining_on() {
    let lifecycle = lifecycle(|b| b);
    let service = counted_service(&lifecycle, Arc::default());
    let ready = service
        .clone()
        .oneshot(request(Version::HTTP_11))
        .await
        .expect("ok");
    assert!(!ready.headers().contains_key("connection"));

    let _hold = lifecycle.hold("test: stay in Draining");
    lifecycle.shutdown();
    let run = tokio::spawn({
        let lifecycle = lifecycle.clone();
        async move { lifecycle.run().await }
    });
    lifecycle.draining().await;
    settle().await;

    for version in [Version::HTTP_10, Version::HTTP_11] {
        let response = service.clone().oneshot(request(version)).await.expect("ok");
        assert_eq!(
            response.status(),
            StatusCode::OK,
            "still served while Draining"
        );
        assert_eq!(response.headers()["connection"], "close");
    }
    // HTTP/2 has no such header (GOAWAY is the server's business).
    let h2 = service
        .clone()
        .oneshot(request(Version::HTTP_2))
        .await
        .expect("ok");
    assert_eq!(h2.status(), StatusCode::OK);
    assert!(!h2.headers().contains_key("connection"));
    run.abort();
}

#[tokio::test(start_paused = true)]
async fn the_layer_answers_503_with_retry_after_and_connection_close_after_stopping() {
    let lifecycle = lifecycle(|b| b);
    let calls = Arc::new(AtomicUsize::new(0));
    let service = counted_service(&lifecycle, Arc::clone(&calls));

    lifecycle.shutdown();
    let report = lifecycle.run().await;
    assert!(report.clean);
    settle().await;

    let response = service
        .clone()
        .oneshot(request(Version::HTTP_11))
        .await
        .expect("ok");
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()["retry-after"], "5");
    assert_eq!(response.headers()["connection"], "close");
    assert!(
        response
            .into_body()
            .collect()
            .await
            .expect("empty")
            .to_bytes()
            .is_empty()
    );
    assert_eq!(calls.load(Ordering::SeqCst), 0, "the service never saw it");
    assert_eq!(lifecycle.requests().active(), 0);

    let h2 = service.oneshot(request(Version::HTTP_2)).await.expect("ok");
    assert_eq!(h2.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(!h2.headers().contains_key("connection"));
}

#[tokio::test]
async fn the_layer_drains_axum_serve_and_answers_503_on_a_kept_alive_connection() {
    let lifecycle = lifecycle(|b| b);
    let (listener, addr) = common::bind().await;
    let app = common::hello().layer(InFlightLayer::new(&lifecycle));
    // A server that knows nothing of the lifecycle: it never closes its connections.
    let server = tokio::spawn(async move { axum::serve(listener, app).await });

    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let response = common::raw_exchange(&mut stream, common::RAW_GET)
        .await
        .expect("ok");
    assert_eq!(response.status, 200);
    assert!(!response.says_close());

    lifecycle.shutdown();
    let report = common::within("report", lifecycle.run()).await;
    assert!(report.clean, "{report:?}");
    settle().await;

    let response = common::raw_exchange(&mut stream, common::RAW_GET)
        .await
        .expect("answered");
    assert_eq!(response.status, 503);
    assert!(response.says_close());
    assert!(
        response
            .head
            .to_ascii_lowercase()
            .contains("retry-after: 1\r\n")
    );
    server.abort();
}
