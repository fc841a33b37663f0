//! `lameduck probe grpc://...` against the greeter in each state it passes through: the
//! exec form of the kubelet's gRPC probes, answered by lameduck-tonic's health service.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use greeter::proto::{GreeterClient, HelloRequest};
use lameduck_platform_tests::{Service, TempDir, binary, env};
use nix::sys::signal::Signal;

/// A safety net for what should take far less; nothing is paced by it.
const PATIENCE: Duration = Duration::from_secs(30);

/// Runs the probe once; its exit code and what it printed on stderr.
fn probe(addr: SocketAddr, service: &str) -> (i32, String) {
    let url = format!(
        "grpc://{addr}{}",
        if service.is_empty() {
            String::new()
        } else {
            format!("/{service}")
        }
    );
    let output = Command::new(binary("lameduck"))
        .args(["probe", "--timeout", "10s", &url])
        .output()
        .expect("running lameduck probe");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    (output.status.code().expect("an exit code"), stderr)
}

fn assert_probe(addr: SocketAddr, service: &str, code: i32, says: &str) {
    let (got, stderr) = probe(addr, service);
    assert_eq!(got, code, "probe of {service:?}: {stderr}");
    assert!(
        stderr.contains(says),
        "probe of {service:?} said {stderr:?}, not {says:?}"
    );
}

/// Ready, Draining, Stopping (held open by a server stream in flight) and after the exit:
/// readiness names follow the lame duck, liveness and startup do not, and once the
/// listener is closed the probe says it cannot connect.
#[test]
fn the_probe_follows_the_greeter_through_a_shutdown() {
    let dir = TempDir::new("grpc-probe");
    let mut service = Service::start(
        &binary("greeter"),
        dir.path(),
        "greeter",
        &env(&[
            // Long enough for the probes below on any machine; Draining is left by the
            // delay ending, which nothing here waits for but the log line.
            ("LAMEDUCK_SHUTDOWN_DELAY", "5s"),
            ("LAMEDUCK_DRAIN_TIMEOUT", "60s"),
            ("LAMEDUCK_GRACE_PERIOD", "90s"),
            ("GREETER_STREAM_REPLIES", "1000"),
            ("GREETER_STREAM_INTERVAL", "100ms"),
        ]),
    );
    service.wait_ready();
    let grpc = service.traffic;

    // Ready.
    assert_probe(grpc, "", 0, "");
    assert_probe(grpc, "helloworld.Greeter", 0, "");
    assert_probe(grpc, lameduck_tonic::LIVENESS_SERVICE, 0, "");
    assert_probe(grpc, lameduck_tonic::STARTUP_SERVICE, 0, "");
    assert_probe(grpc, "nope.Service", 3, "unknown service \"nope.Service\"");

    // A server stream in flight, so Stopping lasts until the client lets go of it.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (first_reply, first_reply_seen) = std::sync::mpsc::channel();
    let (let_go, let_go_seen) = tokio::sync::oneshot::channel::<()>();
    let stream = runtime.spawn(async move {
        let channel = tonic::transport::Endpoint::from_shared(format!("http://{grpc}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut replies = GreeterClient::new(channel)
            .say_hello_stream_reply(HelloRequest {
                name: "probe".into(),
            })
            .await
            .unwrap()
            .into_inner();
        replies.message().await.unwrap().expect("a first reply");
        first_reply.send(()).unwrap();
        let _ = let_go_seen.await;
    });
    first_reply_seen
        .recv_timeout(PATIENCE)
        .expect("the stream's first reply");

    // Draining: readiness NOT_SERVING, liveness and startup still SERVING.
    service.signal(Signal::SIGTERM);
    service.wait_for_log("to=draining", PATIENCE);
    assert_probe(
        grpc,
        "",
        1,
        "service \"\" (the whole server) is NOT_SERVING",
    );
    assert_probe(grpc, "helloworld.Greeter", 1, "NOT_SERVING");
    assert_probe(grpc, lameduck_tonic::LIVENESS_SERVICE, 0, "");
    assert_probe(grpc, lameduck_tonic::STARTUP_SERVICE, 0, "");

    // Stopping: the listener is closed while the stream is still served.
    service.wait_for_log("to=stopping", PATIENCE);
    assert_probe(grpc, "", 4, "cannot connect");
    assert!(!stream.is_finished(), "the stream is still in flight");

    // The client lets go; the drain ends, the service exits clean, and nothing answers.
    let_go.send(()).unwrap();
    runtime.block_on(stream).unwrap();
    assert_eq!(service.wait_exit(PATIENCE), 0, "{}", service.logs());
    assert_eq!(service.report()["clean"], true);
    assert_probe(grpc, lameduck_tonic::LIVENESS_SERVICE, 4, "cannot connect");
}
