//! Helpers shared by the admin tests: lifecycles for tests, an admin server on a loopback
//! port, and a raw HTTP/1.1 client (so HEAD, garbage and half-sent requests are easy).
#![allow(dead_code, unreachable_pub)]

use std::net::SocketAddr;
use std::time::Duration;

use lameduck::Lifecycle;
use lameduck_axum::{Admin, AdminLimits, AdminServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Anything a test waits for that should take far less.
pub const PATIENCE: Duration = Duration::from_secs(10);

pub fn builder() -> lameduck::Builder {
    Lifecycle::builder()
        .exit_process(false)
        .no_termination_log()
        .no_signals()
}

pub fn lifecycle() -> Lifecycle {
    builder().build().expect("a valid configuration")
}

/// The admin endpoints of `lifecycle`, with the settings of the test's environment.
pub fn admin(lifecycle: &Lifecycle) -> Admin {
    Admin::from_env(lifecycle).expect("the admin settings of the environment")
}

pub async fn serve(admin: Admin) -> AdminServer {
    serve_with(admin, AdminLimits::default()).await
}

pub async fn serve_with(admin: Admin, limits: AdminLimits) -> AdminServer {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port");
    admin
        .limits(limits)
        .listener(listener)
        .spawn()
        .await
        .expect("serve the admin endpoints")
}

/// Start driving the lifecycle; the handle yields the report.
pub fn run(lifecycle: &Lifecycle) -> tokio::task::JoinHandle<lameduck::Report> {
    let lifecycle = lifecycle.clone();
    tokio::spawn(async move { lifecycle.run().await })
}

pub async fn wait_for_state(lifecycle: &Lifecycle, state: lameduck::State) {
    let mut rx = lifecycle.subscribe();
    tokio::time::timeout(PATIENCE, rx.wait_for(|s| *s == state))
        .await
        .expect("the lifecycle reaches the state in time")
        .expect("the lifecycle is alive");
}

/// With the clock paused: return once every task has run until it waits for something
/// that will not come by itself (the paused clock moves only when the runtime is idle).
pub async fn settle() {
    tokio::time::sleep(Duration::from_millis(1)).await;
}

#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).expect("a JSON body")
    }
}

/// Send raw bytes, read until the server closes, parse what came back; `None` if the
/// server closed (or reset) without an answer.
pub async fn raw(addr: SocketAddr, request: &[u8]) -> Option<Reply> {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    // A server that rejects the request may close before reading all of it.
    let _ = stream.write_all(request).await;
    let mut bytes = Vec::new();
    let read = tokio::time::timeout(PATIENCE, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => bytes.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(
        read.is_ok(),
        "the server neither answered nor closed in time"
    );
    parse(&bytes)
}

pub fn parse(bytes: &[u8]) -> Option<Reply> {
    let text = String::from_utf8_lossy(bytes);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let mut lines = head.split("\r\n");
    let status = lines.next()?.split_whitespace().nth(1)?.parse().ok()?;
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Some(Reply {
        status,
        headers,
        body: body.to_owned(),
    })
}

/// One request on its own connection (`Connection: close`).
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> Reply {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (name, value) in headers {
        req.push_str(&format!("{name}: {value}\r\n"));
    }
    if method == "POST" {
        req.push_str("Content-Length: 0\r\n");
    }
    req.push_str("\r\n");
    raw(addr, req.as_bytes())
        .await
        .unwrap_or_else(|| panic!("no answer to {method} {path}"))
}

pub async fn get(addr: SocketAddr, path: &str) -> Reply {
    request(addr, "GET", path, &[]).await
}

pub async fn head(addr: SocketAddr, path: &str) -> Reply {
    request(addr, "HEAD", path, &[]).await
}

pub async fn get_json(addr: SocketAddr, path: &str) -> Reply {
    request(addr, "GET", path, &[("Accept", "application/json")]).await
}
