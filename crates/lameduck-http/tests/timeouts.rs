//! The header-read timeout over real sockets: a connection that waits for its client too
//! long (nothing sent, headers sent too slowly, idle between requests) is closed; one whose
//! request is being handled, waits for the service, or whose response is still going out,
//! however long, is not.

mod common;

use std::time::{Duration, Instant};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tower::ServiceBuilder;

const TIMEOUT: Duration = Duration::from_secs(1);

/// Size of `/big`: far more than the kernel's socket buffers hold, so that it is still
/// being written long after its body has ended.
const BIG: usize = 24 << 20;

/// The routes: `/` answers at once, `/slow` after 3 s, `/big` with `BIG` bytes.
fn app() -> axum::Router {
    hello()
        .route(
            "/slow",
            axum::routing::get(|| async {
                tokio::time::sleep(Duration::from_secs(3)).await;
                "slow"
            }),
        )
        .route("/big", axum::routing::get(|| async { vec![b'x'; BIG] }))
}

/// A server of `app()` with a 1 s header-read timeout.
async fn server() -> (std::net::SocketAddr, lameduck::Lifecycle) {
    let lifecycle = lifecycle(|b| b);
    let (listener, addr) = bind().await;
    let server = lameduck_http::serve(listener, app(), &lifecycle).header_read_timeout(TIMEOUT);
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

#[tokio::test]
async fn a_response_still_going_out_to_a_slow_reader_is_not_cut_off() {
    let (addr, _lifecycle) = server().await;
    // A small receive buffer, so that the kernel cannot take the response off the server's
    // hands: the server is writing for as long as the client is reading.
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .set_recv_buffer_size(64 << 10)
        .expect("receive buffer");
    let mut stream = socket.connect(addr).await.expect("connect");
    stream
        .write_all(b"GET /big HTTP/1.1\r\nhost: test\r\n\r\n")
        .await
        .expect("write");
    // About 8 MiB/s: three times the timeout for the whole response.
    let start = Instant::now();
    let mut received = 0;
    let mut chunk = vec![0u8; 64 << 10];
    let read_slowly = async {
        loop {
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => break,
                Ok(n) => received += n,
            }
            if received % (256 << 10) < chunk.len() {
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
            if received >= BIG {
                break;
            }
        }
    };
    within("the big response", read_slowly).await;
    assert!(
        received >= BIG,
        "cut off after {received} of {BIG} bytes and {:?}",
        start.elapsed()
    );
    assert!(
        start.elapsed() > TIMEOUT * 2,
        "read in {:?}: too fast to show anything",
        start.elapsed()
    );
}

#[tokio::test]
async fn a_request_waiting_for_the_service_to_be_ready_is_not_cut_off() {
    let lifecycle = lifecycle(|b| b);
    let (listener, addr) = bind().await;
    // One request at a time: while `/slow` is handled, the next waits in `poll_ready`.
    let service = ServiceBuilder::new().concurrency_limit(1).service(app());
    let server = lameduck_http::serve(listener, service, &lifecycle).header_read_timeout(TIMEOUT);
    tokio::spawn(std::future::IntoFuture::into_future(server));

    let mut slow = TcpStream::connect(addr).await.expect("connect");
    let mut queued = TcpStream::connect(addr).await.expect("connect");
    slow.write_all(b"GET /slow HTTP/1.1\r\nhost: test\r\n\r\n")
        .await
        .expect("write");
    tokio::time::sleep(Duration::from_millis(200)).await;
    let started = Instant::now();
    let (slow_answer, queued_answer) = tokio::join!(
        within("the slow answer", read_raw_response(&mut slow)),
        within("the queued answer", raw_exchange(&mut queued, RAW_GET)),
    );
    assert_eq!(slow_answer.expect("the slow answer").status, 200);
    assert_eq!(queued_answer.expect("the queued answer").status, 200);
    // It waited behind `/slow`, longer than the timeout.
    assert!(started.elapsed() > TIMEOUT * 2, "{:?}", started.elapsed());
}

/// Zero is refused where it is given, not found out from connections that close before
/// their first request: "no limit" is `None` (a zero that means "no limit" elsewhere must
/// not quietly mean "close at once" here).
#[tokio::test]
#[should_panic(expected = "header_read_timeout(Duration::ZERO) would close every connection")]
async fn a_zero_header_read_timeout_is_refused() {
    let lifecycle = lifecycle(|b| b);
    let (listener, _) = bind().await;
    let _ = lameduck_http::serve(listener, app(), &lifecycle).header_read_timeout(Duration::ZERO);
}

#[test]
#[should_panic(expected = "AdminLimits::header_read_timeout(Duration::ZERO)")]
fn a_zero_admin_header_read_timeout_is_refused() {
    let _ = lameduck_http::admin::AdminLimits::default().header_read_timeout(Duration::ZERO);
}

#[test]
#[should_panic(expected = "AdminLimits::write_timeout(Duration::ZERO)")]
fn a_zero_admin_write_timeout_is_refused() {
    let _ = lameduck_http::admin::AdminLimits::default().write_timeout(Duration::ZERO);
}
