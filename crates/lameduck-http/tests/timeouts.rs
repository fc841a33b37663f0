//! The header-read timeout over real sockets: a connection that waits for its client too
//! long (nothing sent, headers sent too slowly, idle between requests) is closed; one whose
//! request is being handled, however long, is not.

mod common;

use std::time::{Duration, Instant};

use common::*;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const TIMEOUT: Duration = Duration::from_secs(1);

/// A server with a 1 s header-read timeout: `/` answers at once, `/slow` after 3 s.
async fn server() -> (std::net::SocketAddr, lameduck::Lifecycle) {
    let lifecycle = lifecycle(|b| b);
    let (listener, addr) = bind().await;
    let app = hello().route(
        "/slow",
        axum::routing::get(|| async {
            tokio::time::sleep(Duration::from_secs(3)).await;
            "slow"
        }),
    );
    let server = lameduck_http::Server::new(listener, app, &lifecycle).header_read_timeout(TIMEOUT);
    tokio::spawn(std::future::IntoFuture::into_future(server));
    (addr, lifecycle)
}

/// How long until the server closed `stream`, from `since`.
async fn closed_after(stream: &mut TcpStream, since: Instant) -> Duration {
    within(
        "the server closes the connection",
        read_until_closed(stream),
    )
    .await
    .ok();
    since.elapsed()
}

fn assert_closed_after_the_timeout(after: Duration) {
    // Never before the timeout; the upper bound only guards against "never".
    assert!(
        after >= TIMEOUT,
        "closed after {after:?}, before the timeout"
    );
    assert!(after < TIMEOUT * 5, "closed only after {after:?}");
}

#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed() {
    let (addr, _lifecycle) = server().await;
    let start = Instant::now();
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    assert_closed_after_the_timeout(closed_after(&mut stream, start).await);
}

#[tokio::test]
async fn headers_that_trickle_in_are_cut_off() {
    let (addr, _lifecycle) = server().await;
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let start = Instant::now();
    stream
        .write_all(b"GET / HTTP/1.1\r\n")
        .await
        .expect("write");
    // One header line every 200 ms, never the blank line that ends them.
    let trickle = async {
        for n in 0.. {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let line = format!("x-slow-{n}: 1\r\n");
            if stream.write_all(line.as_bytes()).await.is_err() {
                return start.elapsed();
            }
            if start.elapsed() > TIMEOUT * 5 {
                break;
            }
        }
        start.elapsed()
    };
    let after = trickle.await;
    // A write may still succeed just after the close: the read side says for sure.
    let after = after.min(closed_after(&mut stream, start).await);
    assert_closed_after_the_timeout(after);
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_and_a_slow_request_is_not() {
    let (addr, _lifecycle) = server().await;
    let mut idle = TcpStream::connect(addr).await.expect("connect");
    let mut slow = TcpStream::connect(addr).await.expect("connect");

    let answered = raw_exchange(&mut idle, b"GET / HTTP/1.1\r\nhost: test\r\n\r\n")
        .await
        .expect("an answer");
    assert_eq!(answered.status, 200);
    let idle_since = Instant::now();
    // Three times the timeout in the handler: that connection is not waiting for its client.
    let started = Instant::now();
    let (idle_closed_after, slow_answer) = tokio::join!(
        closed_after(&mut idle, idle_since),
        raw_exchange(&mut slow, b"GET /slow HTTP/1.1\r\nhost: test\r\n\r\n"),
    );
    assert_closed_after_the_timeout(idle_closed_after);
    assert_eq!(slow_answer.expect("the slow answer").status, 200);
    assert!(started.elapsed() >= Duration::from_secs(3));
}
