//! lameduck-http's admin endpoints on hyper alone (what `lameduck run` serves) answer
//! exactly as this crate's axum router does (whose method routing is axum's own, as before
//! the endpoints moved to lameduck-http): same status, same headers that matter, same
//! body, for every built-in path, method, query and check name, before and after the
//! trigger.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{PATIENCE, Reply, builder, request, run, wait_for_state};
use lameduck_axum::Admin;
use lameduck_http::admin::Endpoints;
use tokio::net::TcpListener;

/// The headers a client or a proxy acts on.
const COMPARED_HEADERS: [&str; 6] = [
    "content-type",
    "content-length",
    "cache-control",
    "x-content-type-options",
    "allow",
    "www-authenticate",
];

/// Method, path and headers of one request.
type Case = (
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
);

const CASES: &[Case] = &[
    ("GET", "/livez", &[]),
    ("GET", "/healthz?verbose", &[]),
    ("GET", "/readyz", &[]),
    ("GET", "/readyz?verbose=1&exclude=db&exclude=typo", &[]),
    ("GET", "/ready?verbose=false", &[]),
    ("GET", "/startupz", &[("Accept", "application/json")]),
    (
        "GET",
        "/readyz",
        &[("Accept", "text/html, application/json")],
    ),
    ("GET", "/readyz/db", &[]),
    ("GET", "/readyz/a%20b", &[]),
    ("GET", "/readyz/a%20b", &[("Accept", "application/json")]),
    ("GET", "/readyz/nope", &[]),
    ("GET", "/livez/nope", &[("Accept", "application/json")]),
    ("GET", "/readyz/%FF", &[]),
    ("PATCH", "/readyz/%FF", &[]),
    ("POST", "/shutdown", &[("X-Lameduck-Token", "wrong")]),
    ("HEAD", "/livez", &[]),
    ("HEAD", "/readyz/db", &[]),
    ("POST", "/readyz", &[]),
    ("PUT", "/livez/db", &[]),
    ("DELETE", "/shutdown", &[]),
    ("GET", "/", &[]),
    ("GET", "/readyz/", &[]),
    ("GET", "/readyz/a/b", &[]),
    ("GET", "/readyzz", &[]),
    ("GET", "/metrics", &[]),
    ("GET", "/shutdown", &[]),
    ("GET", "/shutdown", &[("X-Lameduck-Token", "wrong")]),
];

fn comparable(reply: &Reply) -> (u16, Vec<(String, Option<String>)>, String) {
    let headers = COMPARED_HEADERS
        .iter()
        .map(|name| ((*name).to_owned(), reply.header(name).map(str::to_owned)))
        .collect();
    (reply.status, headers, reply.body.clone())
}

async fn loopback() -> TcpListener {
    TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port")
}

async fn compare_all(lifecycle_state: &str, with_axum: SocketAddr, without: SocketAddr) {
    for (method, path, headers) in CASES {
        let expected = comparable(&request(with_axum, method, path, headers).await);
        let got = comparable(&request(without, method, path, headers).await);
        assert_eq!(
            got, expected,
            "{method} {path} {headers:?} while {lifecycle_state}: without axum (left) and \
             with axum (right) differ"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_endpoints_without_axum_answer_as_the_axum_router_does() {
    let lifecycle = builder()
        .shutdown_delay(Duration::ZERO)
        .build()
        .expect("config");
    let health = lifecycle.health();
    health.readiness("db", || async { Err::<(), _>("connection refused") });
    health.readiness("a b", || async {});
    health.liveness("loop", || async {});
    let with_axum = Admin::from_env(&lifecycle)
        .expect("admin settings")
        .shutdown_token("s3cret")
        .listener(loopback().await)
        .spawn()
        .await
        .expect("serve with axum");
    let without = Endpoints::from_env(&lifecycle)
        .expect("admin settings")
        .shutdown_token("s3cret")
        .listener(loopback().await)
        .spawn()
        .await
        .expect("serve without axum");
    let (with_axum, without) = (with_axum.local_addr(), without.local_addr());

    compare_all("starting", with_axum, without).await;
    let report = run(&lifecycle);
    wait_for_state(&lifecycle, lameduck::State::Ready).await;
    compare_all("ready", with_axum, without).await;

    // Both servers end once `run()` returns: held open for the comparison below.
    let hold = lifecycle.hold_exit("comparison");

    // The trigger, on the server without axum: the same answer as the SDK's.
    let answer = request(
        without,
        "POST",
        "/shutdown",
        &[("X-Lameduck-Token", "s3cret")],
    )
    .await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.header("cache-control"), Some("no-store"));
    assert_eq!(answer.json()["reason"], "prestop", "{answer:?}");
    assert_eq!(answer.json()["first"], true, "{answer:?}");
    let again = request(
        with_axum,
        "GET",
        "/shutdown",
        &[("X-Lameduck-Token", "s3cret")],
    )
    .await;
    assert_eq!(again.json()["first"], false, "{again:?}");
    assert_eq!(lifecycle.reason(), Some(lameduck::Reason::PreStop));
    compare_all("shutting down", with_axum, without).await;
    drop(hold);
    let report = tokio::time::timeout(PATIENCE, report)
        .await
        .expect("run returns")
        .expect("run does not panic");
    assert_eq!(report.reason, lameduck::Reason::PreStop);
}
