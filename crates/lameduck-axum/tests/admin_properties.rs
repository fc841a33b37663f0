//! Properties of the admin endpoints' request handling: arbitrary paths, queries, methods
//! and headers sent through the admin router never panic, answer only statuses the docs
//! allow, never leak a check's error text unless opted in, and never answer readiness
//! 200 once shutdown has begun; raw bytes on a real admin socket never bring it down.
//! Also the black-box regression for issue 12, defect 8 (`/readyz?exclude=lifecycle`
//! while draining).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::body::Body;
use axum::http::{Method, Request, StatusCode, header};
use common::*;
use lameduck::{Lifecycle, State};
use lameduck_axum::TOKEN_HEADER;
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestCaseError, TestRunner};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tower::ServiceExt as _;

/// What the failing checks say; no generated request contains it, so a body that does
/// leaked it.
const SECRET: &str = "pw=hunter2-9f1c7e";
const TOKEN: &str = "prop-test-token-0c4d";
const HEALTH_BASES: [&str; 5] = ["/healthz", "/livez", "/ready", "/readyz", "/startupz"];
const CHECK_NAMES: [&str; 6] = ["lifecycle", "db", "cache", "loop", "sick", "warm"];

/// Counts panics anywhere in this test binary (the previous hook still prints them).
fn panics() -> Arc<AtomicUsize> {
    static COUNT: std::sync::OnceLock<Arc<AtomicUsize>> = std::sync::OnceLock::new();
    Arc::clone(COUNT.get_or_init(|| {
        let count = Arc::new(AtomicUsize::new(0));
        let seen = Arc::clone(&count);
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            seen.fetch_add(1, Ordering::SeqCst);
            previous(info);
        }));
        count
    }))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime")
}

/// The admin endpoints of a [`checked_lifecycle`], with a shutdown token.
fn checked_admin(lifecycle: &Lifecycle) -> lameduck_axum::Admin {
    admin(lifecycle).shutdown_token(TOKEN)
}

/// A lifecycle with passing and failing checks of every kind (the failing ones say
/// [`SECRET`]), and drain and grace periods longer than any test.
fn checked_lifecycle() -> Lifecycle {
    let lifecycle = builder()
        .drain_timeout(Duration::from_secs(3600))
        .grace_period(Duration::from_secs(7200))
        .build()
        .expect("a valid configuration");
    let health = lifecycle.health();
    health.readiness("db", || async { Err::<(), _>(SECRET) });
    health.readiness("cache", || async {});
    health.liveness("loop", || async {});
    health.liveness("sick", || async { Err::<(), _>(SECRET) });
    health.startup("warm", || async {});
    lifecycle
}

/// One lifecycle in each state, kept there until dropped.
struct Lifecycles {
    all: Vec<(State, Lifecycle)>,
    _holds: Vec<Box<dyn std::any::Any + Send>>,
}

async fn lifecycles() -> Lifecycles {
    let mut all = Vec::new();
    let mut holds: Vec<Box<dyn std::any::Any + Send>> = Vec::new();

    let starting = checked_lifecycle();
    holds.push(Box::new(starting.hold_readiness("starting")));
    holds.push(Box::new(run(&starting)));
    all.push((State::Starting, starting));

    let ready = checked_lifecycle();
    holds.push(Box::new(run(&ready)));
    wait_for_state(&ready, State::Ready).await;
    all.push((State::Ready, ready));

    let draining = checked_lifecycle();
    holds.push(Box::new(run(&draining)));
    wait_for_state(&draining, State::Ready).await;
    holds.push(Box::new(draining.hold("lame duck")));
    draining.shutdown();
    wait_for_state(&draining, State::Draining).await;
    all.push((State::Draining, draining));

    let stopping = checked_lifecycle();
    holds.push(Box::new(run(&stopping)));
    wait_for_state(&stopping, State::Ready).await;
    holds.push(Box::new(stopping.requests().enter()));
    stopping.shutdown();
    wait_for_state(&stopping, State::Stopping).await;
    all.push((State::Stopping, stopping));

    Lifecycles { all, _holds: holds }
}

// ---------------------------------------------------------------------------------------
// Generators

/// A percent-encoded form of `s`: unreserved bytes as they are (or encoded anyway, at
/// random), every other byte as `%XX`.
fn encode(s: &str, force: &[bool]) -> String {
    let mut out = String::new();
    for (i, b) in s.bytes().enumerate() {
        let plain = b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~');
        if plain && !force.get(i).copied().unwrap_or(false) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A word: a check name, a near miss, or anything at all.
fn word() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => proptest::sample::select(&CHECK_NAMES[..]).prop_map(str::to_owned),
        1 => Just(String::new()),
        1 => Just("LIFECYCLE".to_owned()),
        1 => Just("lifecycle ".to_owned()),
        2 => "\\PC{0,12}",
        1 => proptest::collection::vec(any::<u8>(), 0..8)
            .prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
    ]
}

/// A raw (already encoded) query component, including some that do not decode.
fn raw_component() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => (word(), proptest::collection::vec(any::<bool>(), 0..16))
            .prop_map(|(w, force)| encode(&w, &force)),
        1 => Just("%".to_owned()),
        1 => Just("%zz".to_owned()),
        1 => Just("%FF%FE".to_owned()),
        1 => Just("a+b".to_owned()),
    ]
}

fn query_pair() -> impl Strategy<Value = String> {
    let key = prop_oneof![
        4 => Just("exclude".to_owned()),
        3 => Just("verbose".to_owned()),
        1 => Just("Verbose".to_owned()),
        1 => Just("exclude[]".to_owned()),
        1 => raw_component(),
    ];
    let value = prop_oneof![
        3 => raw_component(),
        1 => proptest::sample::select(&["", "0", "1", "false", "true"][..]).prop_map(str::to_owned),
    ];
    (key, proptest::option::of(value)).prop_map(|(k, v)| match v {
        Some(v) => format!("{k}={v}"),
        None => k,
    })
}

fn query() -> impl Strategy<Value = Option<String>> {
    let pairs = proptest::collection::vec(query_pair(), 0..8).prop_map(|p| p.join("&"));
    // A huge one: the same exclusion thousands of times (kept under http's URI limit).
    let huge = (
        proptest::sample::select(&CHECK_NAMES[..]),
        1000usize..3000,
        any::<bool>(),
    )
        .prop_map(|(name, n, verbose)| {
            let mut q = vec![format!("exclude={name}"); n].join("&");
            if verbose {
                q.push_str("&verbose");
            }
            q
        });
    prop_oneof![
        1 => Just(None),
        6 => pairs.prop_map(Some),
        1 => huge.prop_map(Some),
    ]
}

fn path() -> impl Strategy<Value = String> {
    let base = prop_oneof![
        6 => proptest::sample::select(&HEALTH_BASES[..]).prop_map(str::to_owned),
        1 => Just("/shutdown".to_owned()),
        1 => Just("/".to_owned()),
        1 => Just("/metrics".to_owned()),
        1 => Just("//readyz".to_owned()),
        1 => Just("/READYZ".to_owned()),
    ];
    let tail = prop_oneof![
        3 => Just(String::new()),
        1 => Just("/".to_owned()),
        4 => raw_component().prop_map(|c| format!("/{c}")),
        1 => (raw_component(), raw_component()).prop_map(|(a, b)| format!("/{a}/{b}")),
    ];
    (base, tail).prop_map(|(b, t)| format!("{b}{t}"))
}

fn method() -> impl Strategy<Value = Method> {
    prop_oneof![
        4 => Just(Method::GET),
        2 => Just(Method::HEAD),
        1 => Just(Method::POST),
        1 => proptest::sample::select(
            &[Method::PUT, Method::DELETE, Method::OPTIONS, Method::PATCH, Method::TRACE, Method::CONNECT][..]
        ),
        1 => "[A-Z]{1,10}".prop_map(|m| Method::from_bytes(m.as_bytes()).unwrap_or(Method::GET)),
    ]
}

fn header_value() -> impl Strategy<Value = String> {
    // Visible ASCII and spaces: what a header value may hold.
    "[ -~]{0,40}"
}

fn headers() -> impl Strategy<Value = Vec<(String, String)>> {
    let accept = prop_oneof![
        Just("application/json".to_owned()),
        Just("text/plain".to_owned()),
        Just("*/*".to_owned()),
        Just("text/html, application/json;q=0.9".to_owned()),
        Just("APPLICATION/JSON".to_owned()),
        header_value(),
    ]
    .prop_map(|v| ("accept".to_owned(), v));
    let token = prop_oneof![Just(String::new()), header_value()]
        .prop_map(|v| (TOKEN_HEADER.to_ascii_lowercase(), v));
    let other = ("[a-z][a-z0-9-]{0,15}", header_value());
    let one = prop_oneof![3 => accept, 1 => token, 2 => other];
    proptest::collection::vec(one, 0..6)
}

#[derive(Debug, Clone)]
struct Case {
    state: usize,
    expose: bool,
    method: Method,
    path: String,
    query: Option<String>,
    headers: Vec<(String, String)>,
}

fn case() -> impl Strategy<Value = Case> {
    (
        0usize..4,
        any::<bool>(),
        method(),
        path(),
        query(),
        headers(),
    )
        .prop_map(|(state, expose, method, path, query, headers)| Case {
            state,
            expose,
            method,
            path,
            query,
            headers,
        })
}

// ---------------------------------------------------------------------------------------
// Properties

/// Statuses the admin endpoints are documented to answer (200/503 health, 404 unknown
/// check or path, 400 a query or name that does not decode, 405 a wrong method, 401/403
/// `/shutdown` without or with a wrong token).
const ALLOWED: [u16; 7] = [200, 400, 401, 403, 404, 405, 503];

fn is_readiness(path: &str) -> bool {
    ["/readyz", "/ready"]
        .iter()
        .any(|base| path == *base || path.starts_with(&format!("{base}/")))
}

#[test]
fn admin_router_answers_arbitrary_requests_within_the_documented_contract() {
    let rt = runtime();
    let states = rt.block_on(lifecycles());
    let routers: Vec<[axum::Router; 2]> = states
        .all
        .iter()
        .map(|(_, l)| [false, true].map(|expose| checked_admin(l).expose_details(expose).router()))
        .collect();
    let mut runner = TestRunner::new(ProptestConfig {
        cases: 400,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let result = runner.run(&case(), |case| {
        let uri = match &case.query {
            Some(q) => format!("{}?{q}", case.path),
            None => case.path.clone(),
        };
        let mut request = Request::builder().method(case.method.clone()).uri(&uri);
        for (name, value) in &case.headers {
            request = request.header(name.as_str(), value.as_str());
        }
        // A request http itself cannot represent never reaches the router.
        let Ok(request) = request.body(Body::empty()) else {
            return Ok(());
        };
        let (state, lifecycle) = &states.all[case.state];
        assert_eq!(
            lifecycle.state(),
            *state,
            "the lifecycle stays where it was put"
        );
        let router = routers[case.state][usize::from(case.expose)].clone();
        let (status, headers, body) = rt.block_on(async move {
            let response = router.oneshot(request).await.expect("infallible");
            let (parts, body) = response.into_parts();
            let bytes = axum::body::to_bytes(body, usize::MAX)
                .await
                .expect("a body");
            (parts.status, parts.headers, bytes)
        });
        let body = String::from_utf8_lossy(&body);
        let context = format!("{} {uri} in {state} -> {status}: {body:?}", case.method);

        prop_assert!(ALLOWED.contains(&status.as_u16()), "{context}");
        prop_assert_eq!(
            headers
                .get(header::CACHE_CONTROL)
                .and_then(|v| v.to_str().ok()),
            Some("no-store"),
            "{}",
            context
        );
        if !case.expose {
            prop_assert!(!body.contains(SECRET), "leaked: {context}");
        }
        if state.is_shutting_down() && is_readiness(&case.path) {
            prop_assert_ne!(status, StatusCode::OK, "{}", context);
        }
        let wants_json = case
            .headers
            .iter()
            .any(|(n, v)| n == "accept" && v.contains("application/json"));
        let health_path = HEALTH_BASES.iter().any(|b| case.path.starts_with(b));
        if wants_json
            && health_path
            && matches!(status.as_u16(), 200 | 503)
            && case.method == Method::GET
        {
            let json: Result<serde_json::Value, _> = serde_json::from_str(&body);
            prop_assert!(json.is_ok(), "not JSON: {context}");
        }
        Ok::<(), TestCaseError>(())
    });
    if let Err(error) = result {
        panic!("{error}");
    }
}

/// Bytes that look like HTTP/1 more or less.
fn raw_request() -> impl Strategy<Value = Vec<u8>> {
    let line = (
        prop_oneof![
            Just("GET"),
            Just("HEAD"),
            Just("POST"),
            Just("G\0T"),
            Just("")
        ],
        path(),
        query(),
        prop_oneof![
            Just("HTTP/1.1"),
            Just("HTTP/1.0"),
            Just("HTTP/2.0"),
            Just("HTTP/9"),
            Just("")
        ],
    )
        .prop_map(|(m, p, q, v)| match q {
            Some(q) => format!("{m} {p}?{q} {v}"),
            None => format!("{m} {p} {v}"),
        });
    let structured = (
        line,
        proptest::collection::vec(("[ -~]{0,20}", "[ -~]{0,40}"), 0..6),
        proptest::collection::vec(any::<u8>(), 0..64),
    )
        .prop_map(|(line, headers, tail)| {
            let mut bytes = line.into_bytes();
            bytes.extend_from_slice(b"\r\n");
            for (n, v) in headers {
                bytes.extend_from_slice(format!("{n}: {v}\r\n").as_bytes());
            }
            bytes.extend_from_slice(b"\r\n");
            bytes.extend_from_slice(&tail);
            bytes
        });
    prop_oneof![
        3 => structured,
        1 => proptest::collection::vec(any::<u8>(), 0..512),
    ]
}

#[test]
fn raw_bytes_on_the_admin_socket_never_bring_it_down() {
    let panics = panics();
    let rt = runtime();
    let (lifecycle, admin) = rt.block_on(async {
        let lifecycle = checked_lifecycle();
        let admin = serve(checked_admin(&lifecycle)).await;
        (lifecycle, admin)
    });
    let addr = admin.local_addr();
    let mut runner = TestRunner::new(ProptestConfig {
        cases: 24,
        failure_persistence: None,
        ..ProptestConfig::default()
    });
    let result = runner.run(&raw_request(), |bytes| {
        let answer = rt.block_on(async {
            let mut stream = TcpStream::connect(addr).await.expect("connect");
            let _ = stream.write_all(&bytes).await;
            // End of input: the server answers what it has, then closes.
            let _ = stream.shutdown().await;
            let mut got = Vec::new();
            let read = tokio::time::timeout(PATIENCE, async {
                let mut buf = [0u8; 4096];
                loop {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
            })
            .await;
            assert!(read.is_ok(), "the server neither answered nor closed");
            let probe = get(addr, "/livez").await;
            (parse(&got).map(|r| r.status), probe.status)
        });
        let (status, probe) = answer;
        if let Some(status) = status {
            prop_assert!(
                ALLOWED.contains(&status) || matches!(status, 414 | 431 | 501 | 505),
                "{:?} got {}",
                String::from_utf8_lossy(&bytes),
                status
            );
        }
        // `sick` fails: liveness answers 503, and it answers.
        prop_assert_eq!(probe, 503);
        prop_assert_eq!(panics.load(Ordering::SeqCst), 0);
        Ok(())
    });
    admin.shutdown();
    drop(lifecycle);
    if let Err(error) = result {
        panic!("{error}");
    }
}

// ---------------------------------------------------------------------------------------
// Issue 12, defect 8: readiness is never 200 once shutdown has begun.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_is_503_once_draining_whatever_the_probe_excludes() {
    let lifecycle = builder()
        .drain_timeout(Duration::from_secs(3600))
        .grace_period(Duration::from_secs(7200))
        .build()
        .expect("a valid configuration");
    lifecycle.health().readiness("db", || async {});
    lifecycle.health().readiness("cache", || async {});
    let admin = serve(admin(&lifecycle)).await;
    let addr = admin.local_addr();
    let run = run(&lifecycle);
    wait_for_state(&lifecycle, State::Ready).await;

    let paths = [
        "/readyz?exclude=lifecycle",
        "/readyz?exclude=lifecycle&exclude=db&exclude=cache",
        "/readyz/db",
        "/readyz/cache",
        "/ready?exclude=lifecycle",
        "/ready?exclude=lifecycle&exclude=db&exclude=cache",
        "/ready/db",
    ];
    // While Ready, these all pass: the exclusions themselves are fine.
    for path in paths {
        assert_eq!(get(addr, path).await.status, 200, "{path} while ready");
    }

    let lame_duck = lifecycle.hold("test");
    lifecycle.shutdown();
    wait_for_state(&lifecycle, State::Draining).await;
    for path in paths {
        let reply = get(addr, path).await;
        assert_eq!(reply.status, 503, "{path} while draining: {}", reply.body);
        let json = get_json(addr, path).await;
        assert_eq!(json.status, 503, "{path} (JSON) while draining");
    }
    // `?verbose` still lists the checks, and says why.
    let reply = get(addr, "/readyz?exclude=lifecycle&verbose").await;
    assert_eq!(reply.status, 503);
    assert_eq!(
        reply.body,
        "[-]lifecycle failed: draining\n[+]db ok\n[+]cache ok\nreadyz check failed\n"
    );

    let in_flight = lifecycle.requests().enter();
    drop(lame_duck);
    wait_for_state(&lifecycle, State::Stopping).await;
    for path in paths {
        assert_eq!(get(addr, path).await.status, 503, "{path} while stopping");
    }
    drop(in_flight);
    lifecycle.shutdown();
    drop(run);
}
