//! Routes of the application's on the admin listener (`Admin::route`), through
//! `lameduck_axum::serve`: served next to the probes, under the same hardening, through
//! Draining; unable to shadow a probe.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::routing;
use common::*;
use lameduck::State;
use tokio::net::TcpListener;

async fn metrics() -> &'static str {
    "up 1\n"
}

async fn bind() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    (listener, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_of_ours_answers_next_to_the_probes_until_the_end() {
    let lifecycle = builder()
        .shutdown_delay(Duration::ZERO)
        .build()
        .expect("a valid configuration");
    let (traffic, _) = bind().await;
    let (admin_listener, admin_addr) = bind().await;
    let app = Router::new().route("/", routing::get(|| async { "hello" }));
    let serve = lameduck_axum::serve(traffic, app, &lifecycle).admin(
        admin(&lifecycle)
            .route("/metrics", routing::get(metrics))
            .listener(admin_listener),
    );
    let serve = tokio::spawn(serve.into_future());

    wait_for_state(&lifecycle, State::Ready).await;
    let reply = get(admin_addr, "/metrics").await;
    assert_eq!((reply.status, reply.body.as_str()), (200, "up 1\n"));
    // Left as the handler made it.
    assert_eq!(reply.header("cache-control"), None);
    assert_eq!(get(admin_addr, "/livez").await.status, 200);
    assert_eq!(get(admin_addr, "/readyz").await.status, 200);
    assert_eq!(head(admin_addr, "/metrics").await.status, 200);
    let unknown = get(admin_addr, "/nope").await;
    assert_eq!(unknown.status, 404);
    assert_eq!(unknown.header("cache-control"), Some("no-store"));

    // Draining (held there): the probes say so, the route still answers.
    let lame_duck = lifecycle.hold("test");
    lifecycle.shutdown();
    wait_for_state(&lifecycle, State::Draining).await;
    let reply = get(admin_addr, "/metrics").await;
    assert_eq!((reply.status, reply.body.as_str()), (200, "up 1\n"));
    assert_eq!(get(admin_addr, "/livez").await.status, 200);
    assert_eq!(get(admin_addr, "/readyz").await.status, 503);

    drop(lame_duck);
    let report = tokio::time::timeout(PATIENCE, serve)
        .await
        .expect("serve returns")
        .expect("no panic")
        .expect("serve started");
    assert!(report.clean, "{report:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_of_ours_is_under_the_admin_limits() {
    let lifecycle = lifecycle();
    let admin = serve(admin(&lifecycle).route("/metrics", routing::get(metrics))).await;
    let addr = admin.local_addr();
    let big = "x".repeat(20 * 1024);
    let reply = request(addr, "GET", "/metrics", &[("X-Big", &big)]).await;
    assert_eq!(reply.status, 431, "a head over the limit");
    let reply = get(addr, "/metrics").await;
    assert_eq!(reply.status, 200);
    admin.shutdown();
    tokio::time::timeout(PATIENCE, admin.wait())
        .await
        .expect("the admin server ends");
}

/// The panic message of `Admin::route(path, ..)`, if it panics.
fn refusal(path: &str) -> Option<String> {
    let lifecycle = lifecycle();
    panics_with(|| {
        admin(&lifecycle)
            .route(path, routing::get(metrics))
            .router()
    })
}

#[test]
fn a_route_that_would_shadow_a_probe_is_refused_at_construction() {
    for (path, builtin) in [
        ("/livez", "/livez"),
        ("/healthz", "/healthz"),
        ("/ready", "/ready"),
        ("/readyz", "/readyz"),
        ("/startupz", "/startupz"),
        ("/shutdown", "/shutdown"),
        ("/readyz/db", "/readyz"),
        ("/livez/{name}", "/livez"),
        ("/startupz/{*rest}", "/startupz"),
        ("/ready/", "/ready"),
        ("/shutdown/now", "/shutdown"),
    ] {
        let message = refusal(path).unwrap_or_else(|| panic!("{path} was accepted"));
        assert!(
            message.contains(&format!(
                "`{path}` is reserved for the built-in `{builtin}`"
            )),
            "{path}: {message}"
        );
    }
    // Merely similar paths are the application's to use.
    for path in [
        "/metrics",
        "/livezz",
        "/readyz-extra",
        "/debug/readyz",
        "/{page}",
    ] {
        assert_eq!(refusal(path), None, "{path} was refused");
    }
}

#[test]
fn shutdown_stays_reserved_when_the_endpoint_is_off() {
    let lifecycle = lifecycle();
    let refused = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _ = admin(&lifecycle)
            .shutdown_endpoint(false)
            .route("/shutdown", routing::get(metrics));
    }));
    assert!(refused.is_err());
}

/// A parameter or wildcard at the root is allowed: the built-in paths, being static,
/// take precedence over it.
#[tokio::test]
async fn a_catch_all_of_ours_leaves_the_probes_alone() {
    use axum::body::Body;
    use tower::ServiceExt;

    let lifecycle = lifecycle();
    for path in ["/{page}", "/{*rest}"] {
        let router = admin(&lifecycle)
            .route(path, routing::get(|| async { "mine" }))
            .router();
        for (uri, expected) in [("/livez", "ok"), ("/metrics", "mine")] {
            let request = http::Request::get(uri)
                .body(Body::empty())
                .expect("a request");
            let response = router.clone().oneshot(request).await.expect("infallible");
            let body = axum::body::to_bytes(response.into_body(), 1024)
                .await
                .expect("body");
            assert_eq!(body, expected, "{path}: GET {uri}");
        }
    }
}

/// The panic message of `build`, or `None` if it did not panic.
fn panics_with(build: impl FnOnce() -> Router) -> Option<String> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(build))
        .err()
        .map(|payload| {
            payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default()
        })
}

/// `Admin::router()` merged into an application's router that has a route of its own at a
/// built-in path and method: axum's overlap panic at start, never a probe or the preStop
/// trigger silently answered by the application's handler.
#[test]
fn merging_over_a_probe_or_the_trigger_panics_rather_than_shadowing_it() {
    let lifecycle = lifecycle();
    let mine = || async { "mine" };
    let cases = [
        (
            "GET /healthz before the merge",
            panics_with(|| {
                Router::new()
                    .route("/healthz", routing::get(mine))
                    .merge(admin(&lifecycle).router())
            }),
        ),
        (
            "POST /shutdown before the merge",
            panics_with(|| {
                Router::new()
                    .route("/shutdown", routing::post(mine))
                    .merge(admin(&lifecycle).router())
            }),
        ),
        (
            "GET /livez after the merge",
            panics_with(|| {
                Router::new()
                    .merge(admin(&lifecycle).router())
                    .route("/livez", routing::get(mine))
            }),
        ),
    ];
    for (case, panicked) in cases {
        let message = panicked.unwrap_or_else(|| panic!("{case}: no panic"));
        assert!(
            message.contains("Overlapping method route"),
            "{case}: {message}"
        );
    }
}
