//! The hard races of Stopping: bytes that reached the kernel before the server's runtime
//! noticed them. The server runs on a single-threaded runtime of its own, which the test
//! stalls (a handler that blocks its thread) to line the race up: the client's bytes land
//! in the kernel, then Stopping begins, and when the runtime resumes the stop is handled
//! before the runtime has polled the socket's readiness. Whatever the scheduling, the
//! assertion is the guarantee: the request is answered, not reset.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::{PATIENCE, RAW_GET, lifecycle};
use lameduck::{Lifecycle, Report, State};

struct StallableServer {
    addr: SocketAddr,
    lifecycle: Lifecycle,
    stalled: Receiver<()>,
    resume: Sender<()>,
    thread: JoinHandle<Report>,
}

impl StallableServer {
    fn start() -> Self {
        let lifecycle = lifecycle(|b| b);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr");
        let (stalled_tx, stalled) = channel();
        let (resume, resume_rx) = channel::<()>();
        let stall = Arc::new(Mutex::new((stalled_tx, resume_rx)));
        let app = common::hello().route(
            "/stall",
            axum::routing::get(move || {
                let stall = Arc::clone(&stall);
                async move {
                    let stall = stall.lock().expect("lock");
                    stall.0.send(()).expect("test listening");
                    // Blocks the server's only thread until the test has set the race up.
                    stall.1.recv_timeout(PATIENCE).expect("resumed");
                    "resumed"
                }
            }),
        );
        let server_lifecycle = lifecycle.clone();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                lameduck_http::serve(listener, app, &server_lifecycle).await
            })
        });
        Self {
            addr,
            lifecycle,
            stalled,
            resume,
            thread,
        }
    }

    fn connect(&self) -> TcpStream {
        let stream = TcpStream::connect(self.addr).expect("connect");
        stream.set_read_timeout(Some(PATIENCE)).expect("timeout");
        stream
    }

    fn wait_for(&self, state: State) {
        let start = Instant::now();
        while self.lifecycle.state() < state {
            assert!(start.elapsed() < PATIENCE, "never reached {state}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Block the server's runtime; returns the connection of the stalling request.
    fn stall(&self) -> TcpStream {
        let mut staller = self.connect();
        staller
            .write_all(b"GET /stall HTTP/1.1\r\nhost: test\r\n\r\n")
            .expect("write");
        self.stalled.recv_timeout(PATIENCE).expect("server stalled");
        staller
    }

    fn resume(&self) {
        self.resume.send(()).expect("resume");
    }

    fn report(self) -> Report {
        self.thread.join().expect("server thread")
    }
}

/// Read one response (with a `content-length` body) from a blocking stream.
fn read_response(stream: &mut TcpStream) -> std::io::Result<(u16, String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end + 4]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + length {
                let status = head[9..12].parse().unwrap_or(0);
                return Ok((status, head, buf[end + 4..end + 4 + length].to_vec()));
            }
        }
        let n = stream.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[test]
fn a_request_already_in_the_socket_when_stopping_begins_is_answered() {
    answered_though_in_the_socket_when_stopping_begins(RAW_GET);
}

/// Past the runtime's readiness cache the server reads a bounded window at a time; a
/// request several windows long must still arrive whole.
#[test]
fn a_long_request_already_in_the_socket_when_stopping_begins_is_answered() {
    let long = format!(
        "GET / HTTP/1.1\r\nhost: test\r\nx-padding: {}\r\n\r\n",
        "p".repeat(6000)
    );
    answered_though_in_the_socket_when_stopping_begins(long.as_bytes());
}

fn answered_though_in_the_socket_when_stopping_begins(request: &[u8]) {
    let server = StallableServer::start();
    // A keep-alive connection, idle since before the shutdown (no `Connection: close`).
    let mut idle = server.connect();
    idle.write_all(RAW_GET).expect("write");
    let (status, head, _) = read_response(&mut idle).expect("first response");
    assert_eq!(status, 200);
    assert!(!head.contains("connection: close"));

    let hold = server.lifecycle.hold("test: Stopping waits for the setup");
    server.lifecycle.shutdown();
    server.wait_for(State::Draining);

    let mut staller = server.stall();
    // The server cannot run: the request sits in its socket's buffer, unread...
    idle.write_all(request).expect("write");
    // ...as Stopping begins (the driver runs as soon as the thread is free).
    drop(hold);
    server.resume();

    let (status, head, body) = read_response(&mut idle).expect("answered, not reset");
    assert_eq!(status, 200);
    assert_eq!(body, b"hello");
    assert!(head.contains("connection: close"), "{head}");
    let (status, _, body) = read_response(&mut staller).expect("the staller is answered");
    assert_eq!((status, body.as_slice()), (200, b"resumed".as_slice()));

    let report = server.report();
    assert!(report.clean, "{report:?}");
}

#[test]
fn a_connection_in_the_listen_backlog_when_stopping_begins_is_served() {
    let server = StallableServer::start();
    let hold = server.lifecycle.hold("test: Stopping waits for the setup");
    server.lifecycle.shutdown();
    server.wait_for(State::Draining);

    let mut staller = server.stall();
    // The kernel completes the handshake and queues the connection; the server's runtime,
    // stalled, has not seen it. The request is written before Stopping begins.
    let mut queued = server.connect();
    queued.write_all(RAW_GET).expect("write");
    drop(hold);
    server.resume();

    let (status, head, body) = read_response(&mut queued).expect("served, not reset");
    assert_eq!(status, 200);
    assert_eq!(body, b"hello");
    assert!(head.contains("connection: close"), "{head}");
    let (status, _, _) = read_response(&mut staller).expect("the staller is answered");
    assert_eq!(status, 200);

    let addr = server.addr;
    let report = server.report();
    assert!(report.clean, "{report:?}");
    assert!(TcpStream::connect(addr).is_err(), "the listener is closed");
}
