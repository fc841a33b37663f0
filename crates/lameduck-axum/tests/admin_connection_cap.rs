//! The admin listener at its connection limit: idle and slow clients holding more
//! connections than the limit must not lock the probes out (issue 12, defect 5), and a
//! connection in the middle of a response is never the one given up.
//!
//! Every wait here is on an event (an answer, a close, a check starting), never on a
//! sleep; the header-read timeout is set far beyond any test's length, so it is the limit
//! alone that decides, however slow the machine.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use lameduck::{Check, State};
use lameduck_axum::AdminLimits;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The connection limit the tests use: small, so they hold well over it with few sockets.
const CAP: usize = 32;

/// Fresh probes fired once the limit is reached.
const PROBES: usize = 30;

/// Limits with [`CAP`] connections and no header-read timeout to speak of.
fn limits() -> AdminLimits {
    AdminLimits::default()
        .max_connections(CAP)
        .header_read_timeout(Duration::from_secs(3600))
}

const KEEP_ALIVE_LIVEZ: &[u8] = b"GET /livez HTTP/1.1\r\nHost: x\r\n\r\n";

/// Reads one response head and its `Content-Length` body from a kept-alive connection.
/// `Some(status)` when an answer came, `None` when the server closed (or reset) first.
async fn read_one_answer(stream: &mut TcpStream) -> Option<u16> {
    let mut bytes = Vec::new();
    let mut buf = [0u8; 1024];
    let read = tokio::time::timeout(PATIENCE, async {
        loop {
            if let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&bytes[..end]).to_ascii_lowercase();
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                if bytes.len() >= end + 4 + length {
                    return parse(&bytes).map(|reply| reply.status);
                }
            }
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => bytes.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    read.expect("the server neither answered nor closed in time")
}

/// A connection that has completed one request (so the server has taken it in) and then
/// stays open, idle. Over the limit the server may refuse it or give up an older one; the
/// answer (or the close) is the event waited for either way.
async fn idle_connection(addr: SocketAddr) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let _ = stream.write_all(KEEP_ALIVE_LIVEZ).await;
    let _ = read_one_answer(&mut stream).await;
    stream
}

/// A slowloris: completes one request, then starts the next one's head and sends the rest
/// one byte per [`trickle`] call, never finishing it.
async fn slow_connection(addr: SocketAddr) -> TcpStream {
    let mut stream = idle_connection(addr).await;
    let _ = stream
        .write_all(b"GET /readyz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await;
    stream
}

/// One more header byte on each slow connection (errors ignored: the server may have
/// closed it, which is what it should do to a slowloris at the limit).
async fn trickle(slow: &mut [TcpStream]) {
    for stream in slow {
        let _ = stream.write_all(b"a").await;
    }
}

/// `PROBES` fresh probes, each on a new connection, while the slow connections keep
/// trickling; every one must answer 200.
async fn probes_all_answer(addr: SocketAddr, slow: &mut [TcpStream]) {
    let mut failed = Vec::new();
    for probe in 0..PROBES {
        trickle(slow).await;
        let reply = raw(
            addr,
            b"GET /livez HTTP/1.1\r\nHost: kubelet\r\nConnection: close\r\n\r\n",
        )
        .await;
        match reply {
            Some(reply) if reply.status == 200 => {}
            other => failed.push((probe, other.map(|r| r.status))),
        }
    }
    assert!(
        failed.is_empty(),
        "{} of {PROBES} fresh /livez probes failed (probe, status): {failed:?}",
        failed.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_over_the_limit_do_not_lock_out_fresh_probes() {
    let lifecycle = lifecycle();
    let admin = serve_with(admin(&lifecycle), limits()).await;
    let addr = admin.local_addr();

    let mut held = Vec::new();
    for _ in 0..CAP + CAP / 2 {
        held.push(idle_connection(addr).await);
    }
    probes_all_answer(addr, &mut []).await;
    drop(held);
    admin.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_connections_over_the_limit_do_not_keep_their_slots() {
    let lifecycle = lifecycle();
    let admin = serve_with(admin(&lifecycle), limits()).await;
    let addr = admin.local_addr();

    let mut slow = Vec::new();
    for _ in 0..CAP + CAP / 2 {
        slow.push(slow_connection(addr).await);
    }
    probes_all_answer(addr, &mut slow).await;
    admin.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_idle_connections_together_over_the_limit_do_not_lock_out_probes() {
    let lifecycle = lifecycle();
    let admin = serve_with(admin(&lifecycle), limits()).await;
    let addr = admin.local_addr();

    // Slow ones first (the oldest), then idle ones, then slow ones again (the newest):
    // whichever the server gives up first, none may keep a probe out.
    let mut slow = Vec::new();
    let mut idle = Vec::new();
    for _ in 0..CAP / 2 {
        slow.push(slow_connection(addr).await);
    }
    for _ in 0..CAP {
        idle.push(idle_connection(addr).await);
    }
    for _ in 0..CAP / 2 {
        slow.push(slow_connection(addr).await);
    }
    probes_all_answer(addr, &mut slow).await;
    // The server still answers on a connection it kept.
    drop(idle);
    admin.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_in_the_middle_of_a_response_is_not_given_up() {
    let lifecycle = lifecycle();
    let started = Arc::new(tokio::sync::Notify::new());
    let release = Arc::new(tokio::sync::Notify::new());
    {
        let started = Arc::clone(&started);
        let release = Arc::clone(&release);
        lifecycle.health().add(
            Check::readiness("gate", move || {
                let started = Arc::clone(&started);
                let release = Arc::clone(&release);
                async move {
                    started.notify_one();
                    release.notified().await;
                }
            })
            .timeout(Duration::from_secs(3600)),
        );
    }
    let admin = serve_with(admin(&lifecycle), limits()).await;
    let addr = admin.local_addr();
    let _run = run(&lifecycle);
    wait_for_state(&lifecycle, State::Ready).await;

    // The oldest connection is waiting for its answer: it is mid-response.
    let mut busy = TcpStream::connect(addr).await.expect("connect");
    busy.write_all(b"GET /readyz/gate HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("send");
    tokio::time::timeout(PATIENCE, started.notified())
        .await
        .expect("the gated check starts");

    let mut held = Vec::new();
    for _ in 0..CAP + CAP / 2 {
        held.push(idle_connection(addr).await);
    }
    probes_all_answer(addr, &mut []).await;

    release.notify_one();
    assert_eq!(
        read_one_answer(&mut busy).await,
        Some(200),
        "the connection in the middle of a response was cut"
    );
    drop(held);
    lifecycle.shutdown();
}

/// A client that pipelines requests and never reads the answers. The server's write
/// then waits on it for good: its connection is in the middle of a response, which is
/// never the one given up to make room, and the header-read timeout does not apply. So
/// as many such clients as the limit would lock every probe out, until the write timeout
/// closes them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_never_read_their_answers_do_not_keep_their_slots() {
    const STALLERS: usize = 2;
    let lifecycle = lifecycle();
    let limits = AdminLimits::default()
        .max_connections(STALLERS)
        .header_read_timeout(Duration::from_secs(3600))
        .write_timeout(Duration::from_secs(1));
    let admin = serve_with(admin(&lifecycle), limits).await;
    let addr = admin.local_addr();

    // More requests than the server can answer before its socket's buffers and the
    // client's (kept small) are full, and then more than the kernel holds unread: the
    // client's write cannot finish unless the server closes the connection.
    let flood = KEEP_ALIVE_LIVEZ.repeat((16 << 20) / KEEP_ALIVE_LIVEZ.len());
    let flood = Arc::new(flood);
    let mut floods = Vec::new();
    for _ in 0..STALLERS {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.set_recv_buffer_size(4096).expect("receive buffer");
        socket.set_send_buffer_size(4096).expect("send buffer");
        let mut stream = socket.connect(addr).await.expect("connect");
        // Admitted and answered before the next one connects (the limit is not exceeded,
        // so none is given up).
        stream
            .write_all(KEEP_ALIVE_LIVEZ)
            .await
            .expect("first request");
        assert_eq!(read_one_answer(&mut stream).await, Some(200));
        let flood = Arc::clone(&flood);
        floods.push(tokio::spawn(async move {
            let written = stream.write_all(&flood).await;
            (written, stream)
        }));
    }
    for flood in floods {
        let (written, _stream) = tokio::time::timeout(PATIENCE, flood)
            .await
            .expect("the server never closed a connection whose client does not read")
            .expect("the flooding task");
        assert!(
            written.is_err(),
            "the whole flood was taken: the test's buffers were too large to stall the server"
        );
    }
    let reply = raw(
        addr,
        b"GET /livez HTTP/1.1\r\nHost: kubelet\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(
        reply.map(|r| r.status),
        Some(200),
        "a fresh probe after the stallers"
    );
    admin.shutdown();
}
