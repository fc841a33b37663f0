//! `lameduck probe grpc://...` against real gRPC servers on 127.0.0.1: tonic's server with
//! tonic-health's reporter (in this test process), a port where nothing listens, a listener
//! that never answers, and an HTTP/1 server.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::Duration;

use common::{dead_port, run, stderr};
use tonic::metadata::MetadataMap;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;
use tonic_health::ServingStatus;
use tonic_health::pb::health_server::HealthServer;
use tonic_health::server::{HealthService, health_reporter};

/// A generous bound for anything that should be quick, so slow machines do not flake.
const QUICK: Duration = Duration::from_secs(5);

/// A tonic server on 127.0.0.1 (OS-chosen port), on a runtime of its own thread; stopped
/// and joined when dropped.
struct GrpcServer {
    addr: SocketAddr,
    /// The metadata of every request the health service received.
    seen: Arc<Mutex<Vec<MetadataMap>>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl GrpcServer {
    /// With the health service, its statuses set as given (the whole server, `""`, is
    /// SERVING unless set otherwise), or, for `None`, without any service at all.
    fn start(health: Option<Vec<(&'static str, ServingStatus)>>) -> Self {
        let (ready_tx, ready_rx) = mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let recorded = Arc::clone(&seen);
        let thread = thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                let addr = listener.local_addr().unwrap();
                let mut builder = Server::builder();
                let router = match health {
                    Some(statuses) => {
                        let (reporter, service) = health_reporter();
                        for (name, status) in statuses {
                            reporter.set_service_status(name, status).await;
                        }
                        let record = move |request: tonic::Request<()>| {
                            recorded.lock().unwrap().push(request.metadata().clone());
                            Ok(request)
                        };
                        builder.add_service(InterceptedService::new(service, record))
                    }
                    None => builder.add_optional_service(None::<HealthServer<HealthService>>),
                };
                // The listener is bound and the statuses set: the probe may start.
                ready_tx.send(addr).unwrap();
                router
                    .serve_with_incoming_shutdown(TcpIncoming::from(listener), async {
                        let _ = stop_rx.await;
                    })
                    .await
                    .unwrap();
            });
        });
        let addr = ready_rx.recv().unwrap();
        Self {
            addr,
            seen,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    fn url(&self, service: &str) -> String {
        format!("grpc://{}{service}", self.addr)
    }
}

impl Drop for GrpcServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A listener that accepts one connection and never writes a byte; it holds the
/// connection until the client closes it.
fn silent_listener() -> (SocketAddr, thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let thread = thread::spawn(move || {
        if let Ok((mut stream, _)) = listener.accept() {
            let mut sink = Vec::new();
            let _ = stream.read_to_end(&mut sink);
        }
    });
    (addr, thread)
}

#[test]
fn serving_whole_server_exits_0_silently_with_user_agent_and_deadline() {
    let server = GrpcServer::start(Some(vec![]));
    let (output, took) = run(&["probe", "-H", "X-Probe: yes", &server.url("")]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(stderr(&output), "");
    assert!(took < QUICK, "{took:?}");
    let seen = server.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    let version = env!("CARGO_PKG_VERSION");
    let user_agent = seen[0].get("user-agent").and_then(|v| v.to_str().ok());
    assert_eq!(
        user_agent,
        Some(format!("lameduck-probe/{version}").as_str())
    );
    assert_eq!(
        seen[0].get("x-probe").and_then(|v| v.to_str().ok()),
        Some("yes")
    );
    // --timeout (1s by default) is sent as the gRPC deadline: what is left of it, in
    // milliseconds or a finer unit.
    let deadline = seen[0].get("grpc-timeout").and_then(|v| v.to_str().ok());
    assert!(deadline.is_some(), "{seen:?}");
}

#[test]
fn user_agent_can_be_overridden() {
    let server = GrpcServer::start(Some(vec![]));
    let (output, _) = run(&[
        "probe",
        "-H",
        "User-Agent: kube-probe/1.30",
        &server.url(""),
    ]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let seen = server.seen.lock().unwrap().clone();
    let user_agent = seen[0].get("user-agent").and_then(|v| v.to_str().ok());
    assert_eq!(user_agent, Some("kube-probe/1.30"));
}

#[test]
fn named_service_serving_exits_0() {
    let server = GrpcServer::start(Some(vec![
        ("", ServingStatus::NotServing),
        ("helloworld.Greeter", ServingStatus::Serving),
    ]));
    let (output, _) = run(&["probe", &server.url("/helloworld.Greeter")]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert_eq!(stderr(&output), "");
}

#[test]
fn not_serving_exits_1_naming_status_and_service() {
    let server = GrpcServer::start(Some(vec![
        ("", ServingStatus::NotServing),
        ("helloworld.Greeter", ServingStatus::NotServing),
    ]));
    let (output, _) = run(&["probe", &server.url("")]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert_eq!(
        stderr(&output),
        format!(
            "lameduck probe: grpc://{}: service \"\" (the whole server) is NOT_SERVING\n",
            server.addr
        )
    );
    let (output, _) = run(&["probe", &server.url("/helloworld.Greeter")]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert_eq!(
        stderr(&output),
        format!(
            "lameduck probe: grpc://{}/helloworld.Greeter: service \"helloworld.Greeter\" is NOT_SERVING\n",
            server.addr
        )
    );
}

#[test]
fn unknown_status_exits_1() {
    let server = GrpcServer::start(Some(vec![("a.B", ServingStatus::Unknown)]));
    let (output, _) = run(&["probe", &server.url("/a.B")]);
    assert_eq!(output.status.code(), Some(1), "{}", stderr(&output));
    assert_eq!(
        stderr(&output),
        format!(
            "lameduck probe: grpc://{}/a.B: service \"a.B\" is UNKNOWN\n",
            server.addr
        )
    );
}

#[test]
fn unknown_service_exits_3() {
    let server = GrpcServer::start(Some(vec![]));
    let (output, _) = run(&["probe", &server.url("/no.Such")]);
    assert_eq!(output.status.code(), Some(3), "{}", stderr(&output));
    assert_eq!(
        stderr(&output),
        format!(
            "lameduck probe: grpc://{}/no.Such: unknown service \"no.Such\": the server answered NOT_FOUND: service not registered\n",
            server.addr
        )
    );
}

#[test]
fn closed_port_exits_4_naming_the_address() {
    let port = dead_port();
    let (output, took) = run(&["probe", &format!("grpc://127.0.0.1:{port}")]);
    assert_eq!(output.status.code(), Some(4), "{}", stderr(&output));
    assert_eq!(
        stderr(&output),
        format!(
            "lameduck probe: grpc://127.0.0.1:{port}: cannot connect: connection refused by 127.0.0.1:{port}\n"
        )
    );
    assert!(took < QUICK, "{took:?}");
}

#[test]
fn silent_listener_exits_5_at_the_timeout() {
    let (addr, listener) = silent_listener();
    let (output, took) = run(&["probe", "--timeout", "300ms", &format!("grpc://{addr}")]);
    assert_eq!(output.status.code(), Some(5), "{}", stderr(&output));
    let message = stderr(&output);
    assert!(
        message.starts_with(&format!(
            "lameduck probe: grpc://{addr}: timed out after 300ms "
        )),
        "{message}"
    );
    assert_eq!(message.lines().count(), 1, "{message}");
    assert!(took >= Duration::from_millis(250), "{took:?}");
    assert!(took < QUICK, "{took:?}");
    // The probe has exited, so its connection is closed and the listener's read ends.
    listener.join().unwrap();
}

#[test]
fn server_without_health_service_exits_6_unimplemented() {
    let server = GrpcServer::start(None);
    let (output, _) = run(&["probe", &server.url("")]);
    assert_eq!(output.status.code(), Some(6), "{}", stderr(&output));
    let message = stderr(&output);
    assert!(
        message.starts_with(&format!(
            "lameduck probe: grpc://{}: gRPC error UNIMPLEMENTED",
            server.addr
        )),
        "{message}"
    );
    assert_eq!(message.lines().count(), 1, "{message}");
}

#[test]
fn http1_server_exits_6_with_a_protocol_error() {
    // Answers the HTTP/2 preface as an HTTP/1.1 server would, then closes its side
    // cleanly, reading until the client leaves (so the close is not a reset).
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = thread::spawn(move || {
        if let Ok((mut stream, _)) = listener.accept() {
            let mut first = [0_u8; 16];
            let _ = stream.read(&mut first);
            let _ = stream.write_all(
                b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
            let _ = stream.shutdown(std::net::Shutdown::Write);
            let mut sink = Vec::new();
            let _ = stream.read_to_end(&mut sink);
        }
    });
    let (output, _) = run(&["probe", &format!("grpc://{addr}")]);
    assert_eq!(output.status.code(), Some(6), "{}", stderr(&output));
    let message = stderr(&output);
    assert!(
        message.starts_with(&format!("lameduck probe: grpc://{addr}: ")),
        "{message}"
    );
    assert_eq!(message.lines().count(), 1, "{message}");
    server.join().unwrap();
}

#[test]
fn bad_grpc_urls_and_headers_are_usage_errors() {
    for (url, expected) in [
        ("grpcs://127.0.0.1:443", "no TLS in this binary"),
        ("grpc://127.0.0.1", "no port"),
        (
            "grpc://127.0.0.1:65536",
            "port \"65536\" is not a number from 1 to 65535",
        ),
        (
            "grpc://127.0.0.1:0/x",
            "port \"0\" is not a number from 1 to 65535",
        ),
        (
            "grpc://user:s3cret@127.0.0.1:1",
            "credentials in the URL are not supported",
        ),
    ] {
        let (output, _) = run(&["probe", url]);
        assert_eq!(output.status.code(), Some(2), "{url}: {}", stderr(&output));
        let message = stderr(&output);
        assert!(message.contains(expected), "{url}: {message}");
        assert!(!message.contains("s3cret"), "{message}");
    }
    let (output, _) = run(&["probe", "-H", "grpc-timeout: 1S", "grpc://127.0.0.1:1"]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("gRPC sets it"),
        "{}",
        stderr(&output)
    );
}
