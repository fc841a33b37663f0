//! The recipes of crates/lameduck-axum/README.md, each example run as a platform runs it.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::sync::mpsc;
use std::time::{Duration, Instant};

use lameduck_platform_tests::{Service, TempDir, binary, env, get, start_load};
use nix::sys::signal::Signal;

/// A safety net for what should take far less; nothing is paced by it.
const PATIENCE: Duration = Duration::from_secs(30);

const LOAD_CONNECTIONS: usize = 32;

#[test]
fn axum_serve_recipe_sigterm_under_load_fails_no_request() {
    let dir = TempDir::new("recipe-axum-serve");
    let delay = Duration::from_secs(3);
    let settings = env(&[
        ("LAMEDUCK_SHUTDOWN_DELAY", "3s"),
        ("LAMEDUCK_DRAIN_TIMEOUT", "10s"),
        ("LAMEDUCK_GRACE_PERIOD", "30s"),
        // axum::serve logs each accepted connection at trace: the test sees the load.
        ("RUST_LOG", "info,axum::serve=trace"),
    ]);
    let mut service = Service::start(&binary("axum-serve"), dir.path(), "axum-serve", &settings);
    service.wait_ready();
    assert_eq!(get(service.traffic, "/").unwrap().body, "hello\n");

    service.skip_logged();
    let (load, stop_load) = start_load(&service, LOAD_CONNECTIONS, 1_000);
    // Under load: every client of the load generator has connected.
    for _ in 0..LOAD_CONNECTIONS {
        service.wait_for_log("accepted", PATIENCE);
    }

    let triggered = Instant::now();
    service.signal(Signal::SIGTERM);
    service.wait_for_log("to=draining", PATIENCE);

    // Lame duck: readiness fails, liveness holds, traffic is still served (on new
    // connections too), each response telling the client to go.
    let ready = get(service.admin, "/readyz?verbose").unwrap();
    assert_eq!(ready.status, 503, "{ready:?}");
    assert_eq!(get(service.admin, "/livez").unwrap().status, 200);
    let fresh = get(service.traffic, "/").unwrap();
    assert_eq!(fresh.status, 200);
    assert_eq!(fresh.header("connection"), Some("close"));

    // A second `/shutdown` triggers nothing and answers once the lame duck is over
    // (Stopping): until the balancer has stopped sending, it must not have answered.
    let admin = service.admin;
    let (stopping_tx, stopping_rx) = mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let response = get(admin, "/shutdown");
        let _ = stopping_tx.send(());
        response
    });
    // Traffic keeps arriving while readiness has failed and endpoint removal propagates;
    // it stops before the listener closes, as a balancer's would.
    let until_balancer_stops =
        delay.saturating_sub(triggered.elapsed() + Duration::from_millis(400));
    assert!(
        matches!(
            stopping_rx.recv_timeout(until_balancer_stops),
            Err(mpsc::RecvTimeoutError::Timeout)
        ),
        "the lame duck ended before the delay was over"
    );
    let _ = stop_load.send(());
    let load = load.join().unwrap();

    let answer = waiter.join().unwrap().unwrap();
    assert_eq!(answer.status, 200, "{answer:?}");
    let body: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
    assert_eq!(body["first"], false, "{body}");

    let status = service.wait_exit(Duration::from_secs(25));
    assert_eq!(status, 0, "{}", service.logs());

    eprintln!("{load}");
    assert!(load.counts.ok > 500, "{load}");
    assert_eq!(load.failures(), 0, "{load}");
    assert_eq!(load.counts.no_response, 0, "{load}");
    assert_eq!(load.counts.refused, 0, "{load}");
    assert_eq!(load.counts.status_5xx, 0, "{load}");
    assert_eq!(load.counts.timeout, 0, "{load}");

    let report = service.report();
    assert_eq!(report["reason"], "signal:SIGTERM", "{report}");
    assert_eq!(report["clean"], true, "{report}");
    assert_eq!(report["requests_cut"], 0, "{report}");
    assert_eq!(report["deadline_exceeded"], false, "{report}");
    assert!(
        get(service.traffic, "/").is_err(),
        "still serving after exit"
    );
}

/// A self-signed certificate for `localhost`, made for this run, written as PEM into
/// `dir`: the `TLS_CERT` and `TLS_KEY` settings for the `tls` example, and the
/// certificate for a client to trust.
fn self_signed_certificate(
    dir: &std::path::Path,
) -> (
    Vec<(&'static str, String)>,
    rustls_pki_types::CertificateDer<'static>,
) {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    let settings = vec![
        ("TLS_CERT", cert.to_str().unwrap().to_owned()),
        ("TLS_KEY", key.to_str().unwrap().to_owned()),
    ];
    (settings, certified.cert.der().clone())
}

/// One HTTPS request on a new connection (HTTP/1.1, `Connection: close`) to `addr`,
/// trusting only `ca` and expecting the name `localhost`; read until the server ends the
/// TLS stream (with `close_notify`: an end without it is an error here).
fn https_get(
    addr: std::net::SocketAddr,
    ca: &rustls_pki_types::CertificateDer<'static>,
    path: &str,
) -> std::io::Result<lameduck_platform_tests::Response> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(ca.clone())
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| std::io::Error::other(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let name = rustls_pki_types::ServerName::try_from("localhost")
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(async move {
            let exchange = async {
                let tcp = tokio::net::TcpStream::connect(addr).await?;
                let mut tls = connector.connect(name, tcp).await?;
                let head =
                    format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
                tls.write_all(head.as_bytes()).await?;
                let mut raw = Vec::new();
                tls.read_to_end(&mut raw).await?;
                lameduck_platform_tests::parse_response(&raw)
            };
            tokio::time::timeout(PATIENCE, exchange)
                .await
                .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))?
        })
}

#[test]
fn tls_recipe_serves_https_and_finishes_a_request_in_flight_at_sigterm() {
    let dir = TempDir::new("recipe-tls");
    let (tls, ca) = self_signed_certificate(dir.path());
    let mut settings = env(&[
        ("LAMEDUCK_SHUTDOWN_DELAY", "200ms"),
        ("LAMEDUCK_DRAIN_TIMEOUT", "20s"),
    ]);
    settings.extend(tls);
    let mut service = Service::start(&binary("tls"), dir.path(), "tls", &settings);
    service.wait_ready();

    let hello = https_get(service.traffic, &ca, "/").unwrap();
    assert_eq!(hello.status, 200, "{hello:?}");
    assert_eq!(hello.body, "hello\n");

    // A request whose handler is running when SIGTERM comes.
    service.skip_logged();
    let traffic = service.traffic;
    let ca_for_slow = ca.clone();
    let slow = std::thread::spawn(move || https_get(traffic, &ca_for_slow, "/work?ms=2000"));
    service.wait_for_log("work started", PATIENCE);
    service.signal(Signal::SIGTERM);
    service.wait_for_log("to=draining", PATIENCE);

    let slow = slow.join().unwrap().unwrap();
    assert_eq!(slow.status, 200, "{slow:?}");
    assert_eq!(slow.body, "worked 2000 ms\n");

    let status = service.wait_exit(Duration::from_secs(25));
    assert_eq!(status, 0, "{}", service.logs());
    let report = service.report();
    assert_eq!(report["reason"], "signal:SIGTERM", "{report}");
    assert_eq!(report["clean"], true, "{report}");
    assert_eq!(report["requests_cut"], 0, "{report}");
    assert_eq!(report["connections_cut"], 0, "{report}");
    // The request was in flight through the whole lame duck and into Stopping: the
    // drain waited for it.
    let phases = report["states"].as_array().unwrap();
    assert!(phases.iter().any(|p| p["state"] == "stopping"), "{report}");
}

#[test]
fn tls_recipe_cuts_a_request_at_the_drain_timeout_without_answering_it() {
    let dir = TempDir::new("recipe-tls-cut");
    let (tls, ca) = self_signed_certificate(dir.path());
    let mut settings = env(&[
        ("LAMEDUCK_SHUTDOWN_DELAY", "0s"),
        ("LAMEDUCK_DRAIN_TIMEOUT", "1s"),
    ]);
    settings.extend(tls);
    let mut service = Service::start(&binary("tls"), dir.path(), "tls-cut", &settings);
    service.wait_ready();
    service.skip_logged();
    let traffic = service.traffic;
    let slow = std::thread::spawn(move || https_get(traffic, &ca, "/work?ms=60000"));
    service.wait_for_log("work started", PATIENCE);
    service.signal(Signal::SIGTERM);

    // Cut at the drain timeout: no answer, and the TLS stream ends without close_notify.
    let cut = slow.join().unwrap();
    assert!(
        cut.as_ref()
            .is_err_and(|e| e.kind() == std::io::ErrorKind::UnexpectedEof),
        "the cut request got an answer, or its stream ended otherwise: {cut:?}"
    );
    let status = service.wait_exit(Duration::from_secs(25));
    assert_eq!(status, 1, "{}", service.logs());
    let report = service.report();
    assert_eq!(report["clean"], false, "{report}");
    assert_eq!(report["requests_cut"], 1, "{report}");
    assert_eq!(report["deadline_exceeded"], false, "{report}");
}
