//! The admin listener under slow, oversized, malformed and too many clients.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::*;
use lameduck::State;
use lameduck_axum::AdminLimits;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

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

/// Reads until the peer closes; true if it closed (or reset) within `within`.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 1024];
    tokio::time::timeout(within, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slowloris_does_not_stop_the_probes() {
    let panics = panics();
    let lifecycle = lifecycle();
    let admin = serve(admin(&lifecycle)).await;
    let addr = admin.local_addr();
    let _run = run(&lifecycle);
    wait_for_state(&lifecycle, State::Ready).await;

    let mut slow = Vec::new();
    for _ in 0..200 {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        stream
            .write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            .await
            .expect("send half a request");
        slow.push(stream);
    }
    for _ in 0..5 {
        let started = Instant::now();
        let reply = get(addr, "/ready").await;
        assert_eq!(reply.status, 200);
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
    }
    assert_eq!(panics.load(Ordering::SeqCst), 0);
    drop(slow);
    lifecycle.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_sent_and_idle_connections_are_cut_at_the_header_read_timeout() {
    let lifecycle = lifecycle();
    let limits = AdminLimits::default().header_read_timeout(Duration::from_millis(500));
    let admin = serve_with(admin(&lifecycle), limits).await;
    let addr = admin.local_addr();

    let mut silent = TcpStream::connect(addr).await.expect("connect");
    let mut dribbling = TcpStream::connect(addr).await.expect("connect");
    dribbling.write_all(b"GET /livez HT").await.expect("send");
    // A kept-alive connection that goes quiet after its first request.
    let mut idle = TcpStream::connect(addr).await.expect("connect");
    idle.write_all(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("send");
    let started = Instant::now();
    assert!(closed_within(&mut silent, PATIENCE).await);
    assert!(closed_within(&mut dribbling, PATIENCE).await);
    assert!(closed_within(&mut idle, PATIENCE).await);
    let elapsed = started.elapsed();
    assert!(elapsed >= Duration::from_millis(300), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_header_is_refused() {
    let panics = panics();
    let lifecycle = lifecycle();
    let admin = serve(admin(&lifecycle)).await;
    let addr = admin.local_addr();
    let big = "a".repeat(64 * 1024);
    let request = format!("GET /livez HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n");
    // hyper answers 431 and closes; a reset before the answer is read would also refuse.
    if let Some(reply) = raw(addr, request.as_bytes()).await {
        assert!(matches!(reply.status, 431 | 400), "{}", reply.status);
    }
    // A request just under the limit is fine.
    let fits = "a".repeat(8 * 1024);
    let reply = request_with_header(addr, &fits).await;
    assert_eq!(reply.map(|r| r.status), Some(200));
    assert_eq!(get(addr, "/livez").await.status, 200);
    assert_eq!(panics.load(Ordering::SeqCst), 0);
}

async fn request_with_header(addr: std::net::SocketAddr, value: &str) -> Option<Reply> {
    let request =
        format!("GET /livez HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Big: {value}\r\n\r\n");
    raw(addr, request.as_bytes()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_gets_a_400_or_a_closed_connection() {
    let panics = panics();
    let lifecycle = lifecycle();
    let admin = serve(admin(&lifecycle)).await;
    let addr = admin.local_addr();
    let garbage: [&[u8]; 8] = [
        b"\x00\x01\x02\x03\xff\xfe\r\n\r\n",
        b"hello\r\n\r\n",
        b"GET /livez HTTP/9.9\r\n\r\n",
        b"GET /li vez HTTP/1.1\r\nHost: x\r\n\r\n",
        b"GET /livez HTTP/1.1\r\nHost x\r\n\r\n",
        b"GET /livez HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
    ];
    for bytes in garbage {
        if let Some(reply) = raw(addr, bytes).await {
            assert!(
                matches!(reply.status, 400 | 505),
                "{:?} got {}",
                String::from_utf8_lossy(bytes),
                reply.status
            );
        }
    }
    assert_eq!(get(addr, "/livez").await.status, 200);
    assert_eq!(panics.load(Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_connection_limit_the_longest_idle_connection_makes_room() {
    let lifecycle = lifecycle();
    let limits = AdminLimits::default().max_connections(4);
    let admin = serve_with(admin(&lifecycle), limits).await;
    let addr = admin.local_addr();

    let mut held = Vec::new();
    for _ in 0..4 {
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        // A full exchange proves the connection has its slot before the next one comes.
        stream
            .write_all(b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("send");
        let mut buf = [0u8; 512];
        let n = stream.read(&mut buf).await.expect("an answer");
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
        held.push(stream);
    }
    // A fifth, fresh probe is answered: the probe must never be the one locked out.
    let reply = raw(
        addr,
        b"GET /livez HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    )
    .await
    .expect("the fresh probe is answered");
    assert_eq!(reply.status, 200);
    // The one that has waited longest for a request gave up its slot.
    assert!(closed_within(&mut held[0], PATIENCE).await);
}
