//! Shared helpers of the integration tests: running the binary, tiny HTTP servers, temp dirs.
#![allow(dead_code, unreachable_pub, clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// The binary under test.
pub fn lameduck() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_lameduck"));
    command.stdin(Stdio::null());
    command
}

/// Runs the binary to completion; returns its output and how long it took.
pub fn run(args: &[&str]) -> (Output, Duration) {
    let started = Instant::now();
    let output = lameduck().args(args).output().unwrap();
    (output, started.elapsed())
}

/// stderr as text.
pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A request as the test server saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    /// `GET /path HTTP/1.1`.
    pub request_line: String,
    /// The raw head, request line and headers.
    pub head: String,
}

impl Seen {
    /// The path of the request line.
    pub fn path(&self) -> &str {
        self.request_line.split(' ').nth(1).unwrap_or("")
    }
}

/// A test HTTP server on 127.0.0.1 and an OS-chosen port. Every connection gets its own
/// thread; the handler writes whatever it wants, however slowly.
pub struct Server {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Server {
    /// Starts a server calling `handler` for each request head.
    pub fn start<F>(handler: F) -> Self
    where
        F: Fn(&Seen, &mut TcpStream) + Send + Sync + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let handler = Arc::new(handler);
        let seen_by_server = Arc::clone(&seen);
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let handler = Arc::clone(&handler);
                let seen = Arc::clone(&seen_by_server);
                thread::spawn(move || {
                    let Some(request) = read_head(&mut stream) else {
                        return;
                    };
                    seen.lock().unwrap().push(request.clone());
                    handler(&request, &mut stream);
                });
            }
        });
        Self { addr, seen }
    }

    /// Answers every request with `status` and an empty body.
    pub fn status(status: u16) -> Self {
        Self::start(move |_, stream| respond(stream, status, &[], b""))
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Requests received so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

/// Reads a request head (up to the blank line).
fn read_head(stream: &mut TcpStream) -> Option<Seen> {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    let mut reader = BufReader::new(stream.try_clone().ok()?);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        head.push_str(&line);
        if line == "\r\n" || line == "\n" {
            break;
        }
    }
    let request_line = head.lines().next().unwrap_or("").to_owned();
    Some(Seen { request_line, head })
}

/// Writes a complete response with `Content-Length` and closes.
pub fn respond(stream: &mut TcpStream, status: u16, headers: &[(&str, &str)], body: &[u8]) {
    let mut response = format!(
        "HTTP/1.1 {status} Whatever\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        response.push_str(&format!("{name}: {value}\r\n"));
    }
    response.push_str("Connection: close\r\n\r\n");
    let _ = stream.write_all(response.as_bytes());
    let _ = stream.write_all(body);
    let _ = stream.flush();
}

/// A port on 127.0.0.1 where nothing listens (bound, then released).
pub fn dead_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// A fresh, empty directory for one test, removed when dropped.
pub struct TempDir(PathBuf);

impl std::ops::Deref for TempDir {
    type Target = Path;

    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Creates a [`TempDir`] whose name mentions `name`.
pub fn temp_dir(name: &str) -> TempDir {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "lameduck-cli-test-{}-{}-{name}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    TempDir(dir)
}

/// Polls `condition` every 20 ms until it holds or `limit` passes; returns whether it held.
pub fn eventually(limit: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Reads from `reader` until a line containing `needle` arrives (or end of stream).
pub fn wait_for_line(reader: &mut impl BufRead, needle: &str) -> bool {
    let mut line = String::new();
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return false,
            Ok(_) if line.contains(needle) => return true,
            Ok(_) => {}
        }
    }
}

/// Drains a reader to a string (for a child's remaining stderr).
pub fn drain(mut reader: impl Read) -> String {
    let mut rest = String::new();
    let _ = reader.read_to_string(&mut rest);
    rest
}
