//! The cost of `InFlightLayer` on the request path: the same service with and without it,
//! in the same run. A request is the whole exchange a server would do: `oneshot` the
//! request, then poll the response body to its end (which is when the layer lets go).
//!
//! `cargo bench -p lameduck-http --bench layer -- --warm-up-time 1 --measurement-time 3`
#![allow(missing_docs)]

use std::convert::Infallible;
use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{Request, Response};
use http_body::Body;
use http_body_util::Full;
use lameduck_http::InFlightLayer;
use tower::{Layer, Service, ServiceExt};

/// Every future here is ready at once: poll it with a no-op waker, without a runtime's
/// scheduling in the measurement.
fn now<F: Future>(future: F) -> F::Output {
    let mut cx = Context::from_waker(Waker::noop());
    let mut future = pin!(future);
    loop {
        if let Poll::Ready(output) = future.as_mut().poll(&mut cx) {
            return output;
        }
    }
}

fn exchange<S, ReqB, ResB>(service: S, request: Request<ReqB>) -> usize
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    S::Error: std::fmt::Debug,
    ResB: Body,
{
    let response = match now(service.oneshot(request)) {
        Ok(response) => response,
        Err(error) => panic!("{error:?}"),
    };
    let mut body = pin!(response.into_body());
    let mut cx = Context::from_waker(Waker::noop());
    let mut frames = 0;
    while let Poll::Ready(Some(_)) = body.as_mut().poll_frame(&mut cx) {
        frames += 1;
    }
    frames
}

fn layer(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let _entered = runtime.enter();
    let lifecycle = lameduck::Lifecycle::builder()
        .exit_process(false)
        .no_termination_log()
        .no_signals()
        .build()
        .expect("lifecycle");
    let in_flight = InFlightLayer::new(&lifecycle);
    // Let the task that mirrors the lifecycle's state start.
    runtime.block_on(tokio::task::yield_now());

    let trivial = tower::service_fn(|_: Request<()>| {
        std::future::ready(Ok::<_, Infallible>(Response::new(Full::new(
            Bytes::from_static(b"hello"),
        ))))
    });
    let trivial_layered = in_flight.layer(trivial);
    let mut group = c.benchmark_group("trivial service_fn");
    group.bench_function("bare", |b| {
        b.iter(|| black_box(exchange(trivial, black_box(Request::new(())))))
    });
    group.bench_function("with InFlightLayer", |b| {
        b.iter(|| {
            black_box(exchange(
                trivial_layered.clone(),
                black_box(Request::new(())),
            ))
        })
    });
    group.finish();

    let router = axum::Router::new().route("/", axum::routing::get(|| async { "hello" }));
    // Around the router, as `Server` applies it. (`Router::layer` would wrap every route
    // and box each layered response body: axum's cost, not the layer's.)
    let router_layered = in_flight.layer(router.clone());
    let request = || {
        Request::get("/")
            .body(axum::body::Body::empty())
            .expect("request")
    };
    let mut group = c.benchmark_group("axum router");
    group.bench_function("bare", |b| {
        b.iter(|| black_box(exchange(router.clone(), black_box(request()))))
    });
    group.bench_function("with InFlightLayer", |b| {
        b.iter(|| black_box(exchange(router_layered.clone(), black_box(request()))))
    });
    group.finish();
    // What any counting costs: the lifecycle's counter, entered and left once.
    let requests = lifecycle.requests().clone();
    let mut group = c.benchmark_group("floor");
    group.bench_function("lifecycle.requests().enter() + drop", |b| {
        b.iter(|| drop(black_box(requests.enter())))
    });
    group.finish();
    assert_eq!(lifecycle.requests().active(), 0);
}

criterion_group!(benches, layer);
criterion_main!(benches);
