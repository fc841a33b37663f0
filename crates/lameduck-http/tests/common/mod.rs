//! Helpers shared by the integration tests: lifecycles for tests, servers on loopback
//! port 0, and small HTTP/1 clients (hyper's, and a raw one that sees exactly what the
//! server sends).
#![allow(dead_code, unreachable_pub)]

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::{TokioExecutor, TokioIo};
use lameduck::{Builder, Lifecycle, Report};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// Generous bound for anything that should happen "at once".
pub const PATIENCE: Duration = Duration::from_secs(10);

/// A lifecycle for a test: no delay unless `tune` sets one, no signals, no process exit.
pub fn lifecycle(tune: impl FnOnce(Builder) -> Builder) -> Lifecycle {
    tune(
        Lifecycle::builder()
            .shutdown_delay(Duration::ZERO)
            .exit_process(false)
            .no_termination_log()
            .no_signals(),
    )
    .build()
    .expect("a valid test configuration")
}

pub async fn bind() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    (listener, addr)
}

/// Serve `app` with `lameduck_http::serve` on a new loopback port; the task yields the
/// lifecycle's report.
pub async fn spawn_serve(
    app: axum::Router,
    lifecycle: &Lifecycle,
) -> (SocketAddr, JoinHandle<Report>) {
    let (listener, addr) = bind().await;
    let server = lameduck_http::serve(listener, app, lifecycle);
    (addr, tokio::spawn(server.into_future()))
}

/// Wait for `fut`, failing the test after [`PATIENCE`].
pub async fn within<F: std::future::IntoFuture>(what: &str, fut: F) -> F::Output {
    tokio::time::timeout(PATIENCE, fut)
        .await
        .unwrap_or_else(|_| panic!("{what}: not done within {PATIENCE:?}"))
}

/// Wait until `condition` holds, failing the test after [`PATIENCE`]: for a state that has
/// no notification of its own (a counter reaching a value other than zero). The condition
/// is looked at again each time the task is polled after yielding, i.e. once the tasks
/// that were ready, the server's among them, have had their turn.
pub async fn until(what: &str, mut condition: impl FnMut() -> bool) {
    within(what, async {
        while !condition() {
            tokio::task::yield_now().await;
        }
    })
    .await;
}

/// The report of a server task.
pub async fn report(server: JoinHandle<Report>) -> Report {
    within("server", server).await.expect("server task")
}

/// A hyper HTTP/1 client connection; its connection task is returned too.
pub async fn http1(
    addr: SocketAddr,
) -> (
    hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    JoinHandle<hyper::Result<()>>,
) {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    (sender, tokio::spawn(conn.with_upgrades()))
}

/// A hyper h2c (prior knowledge) client connection.
pub async fn http2(
    addr: SocketAddr,
) -> (
    hyper::client::conn::http2::SendRequest<Empty<Bytes>>,
    JoinHandle<hyper::Result<()>>,
) {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("handshake");
    (sender, tokio::spawn(conn))
}

pub fn get(path: &str) -> Request<Empty<Bytes>> {
    Request::get(path)
        .header("host", "test")
        .body(Empty::new())
        .expect("a valid request")
}

/// Send `GET path` and read the whole response.
pub async fn fetch(
    sender: &mut hyper::client::conn::http1::SendRequest<Empty<Bytes>>,
    path: &str,
) -> (Response<()>, Bytes) {
    sender.ready().await.expect("connection ready");
    let response = sender.send_request(get(path)).await.expect("response");
    let (parts, body) = response.into_parts();
    let body = body.collect().await.expect("whole body").to_bytes();
    (Response::from_parts(parts, ()), body)
}

pub fn says_close<B>(response: &Response<B>) -> bool {
    response
        .headers()
        .get("connection")
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"))
}

/// What a raw HTTP/1 exchange got back.
#[derive(Debug)]
pub struct RawResponse {
    pub status: u16,
    pub head: String,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn says_close(&self) -> bool {
        self.head
            .to_ascii_lowercase()
            .contains("\r\nconnection: close\r\n")
    }
}

pub const RAW_GET: &[u8] = b"GET / HTTP/1.1\r\nhost: test\r\n\r\n";

/// Write `request` (if any) and read one response with a `content-length` body.
pub async fn raw_exchange(stream: &mut TcpStream, request: &[u8]) -> io::Result<RawResponse> {
    if !request.is_empty() {
        stream.write_all(request).await?;
    }
    read_raw_response(stream).await
}

pub async fn read_raw_response(stream: &mut TcpStream) -> io::Result<RawResponse> {
    let mut buf = Vec::new();
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "closed before a response",
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "no status"))?;
    let length: usize = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0);
    let mut body = buf[head_end..].to_vec();
    while body.len() < length {
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "body cut short",
            ));
        }
        body.extend_from_slice(&chunk[..n]);
    }
    Ok(RawResponse { status, head, body })
}

/// Read until the server closes: `Ok(bytes read)` on an orderly close, `Err` on a reset.
pub async fn read_until_closed(stream: &mut TcpStream) -> io::Result<usize> {
    let mut total = 0;
    let mut chunk = [0u8; 1024];
    loop {
        match stream.read(&mut chunk).await? {
            0 => return Ok(total),
            n => total += n,
        }
    }
}

/// A router answering `hello` on `/`.
pub fn hello() -> axum::Router {
    axum::Router::new().route("/", axum::routing::get(|| async { "hello" }))
}

/// A tower service (no axum) answering `hello`.
pub async fn hello_service(
    _: Request<hyper::body::Incoming>,
) -> Result<Response<String>, Infallible> {
    Ok(Response::new(String::from("hello")))
}
