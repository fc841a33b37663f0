//! A rolling restart under load: 32 keep-alive clients hammer the server while it is shut
//! down with a lame-duck delay of 1 s. No request that was written may go without a
//! complete response, no connection may be refused before Stopping, and the report must
//! be clean.
//!
//! The clients behave like real ones: they keep connections alive, reconnect when a
//! response says `Connection: close` (or the connection was closed while idle, before
//! anything was written), and stop when a connection is refused after Stopping — which is
//! expected: the platform no longer routes there.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::*;
use http_body_util::BodyExt;
use lameduck::{Lifecycle, State};
use tokio::net::TcpStream;

const CLIENTS: usize = 32;

#[derive(Default, Debug)]
struct Tally {
    ok: AtomicUsize,
    ok_while_draining: AtomicUsize,
    told_to_close: AtomicUsize,
    connections: AtomicUsize,
    /// Written, and no complete response: must stay zero.
    lost: AtomicUsize,
    /// Refused while the lifecycle was not yet Stopping: must stay zero.
    refused_early: AtomicUsize,
    /// Refused after Stopping began: expected.
    refused_after_stopping: AtomicUsize,
    /// Not written: the connection was closed while idle (the client retries).
    not_written: AtomicUsize,
}

fn add(counter: &AtomicUsize) {
    counter.fetch_add(1, Ordering::Relaxed);
}

async fn client(addr: SocketAddr, lifecycle: Lifecycle, tally: Arc<Tally>) {
    let mut sender = None;
    loop {
        let mut current = match sender.take() {
            Some(current) => current,
            None => match TcpStream::connect(addr).await {
                Ok(stream) => {
                    add(&tally.connections);
                    let io = hyper_util::rt::TokioIo::new(stream);
                    let Ok((send, conn)) = hyper::client::conn::http1::handshake(io).await else {
                        add(&tally.lost);
                        return;
                    };
                    tokio::spawn(conn);
                    send
                }
                Err(_) if lifecycle.state() >= State::Stopping => {
                    add(&tally.refused_after_stopping);
                    return;
                }
                Err(error) => {
                    eprintln!("refused early: {error}");
                    add(&tally.refused_early);
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    continue;
                }
            },
        };
        if current.ready().await.is_err() {
            add(&tally.not_written);
            continue;
        }
        let state = lifecycle.state();
        match current.send_request(get("/")).await {
            Ok(response) => {
                let close = says_close(&response);
                match response.into_body().collect().await.map(|b| b.to_bytes()) {
                    Ok(body) if body.len() == 1024 => {
                        add(&tally.ok);
                        if state == State::Draining {
                            add(&tally.ok_while_draining);
                        }
                    }
                    other => {
                        eprintln!("incomplete body: {other:?}");
                        add(&tally.lost);
                    }
                }
                if close {
                    add(&tally.told_to_close);
                } else {
                    sender = Some(current);
                }
            }
            // Closed before the request was written: a real client retries it.
            Err(error) if error.is_canceled() => add(&tally.not_written),
            Err(error) => {
                eprintln!("lost request: {error:?}");
                add(&tally.lost);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolling_restart_under_load_loses_no_request() {
    let lifecycle = lifecycle(|b| {
        b.shutdown_delay(Duration::from_secs(1))
            .drain_timeout(Duration::from_secs(10))
    });
    let served = Arc::new(AtomicUsize::new(0));
    let app = axum::Router::new().route(
        "/",
        axum::routing::get({
            let served = Arc::clone(&served);
            move || {
                let n = served.fetch_add(1, Ordering::Relaxed);
                async move {
                    // Some requests take a while, so that some are in flight at any moment.
                    tokio::time::sleep(Duration::from_micros((n % 8) as u64 * 250)).await;
                    vec![b'x'; 1024]
                }
            }
        }),
    );
    let (addr, server) = spawn_serve(app, &lifecycle).await;

    let tally = Arc::new(Tally::default());
    let clients: Vec<_> = (0..CLIENTS)
        .map(|_| tokio::spawn(client(addr, lifecycle.clone(), Arc::clone(&tally))))
        .collect();

    tokio::time::sleep(Duration::from_millis(500)).await;
    lifecycle.shutdown();
    let report = report(server).await;
    for client in clients {
        within("client", client).await.expect("client task");
    }
    eprintln!("{tally:#?}");

    assert_eq!(tally.lost.load(Ordering::Relaxed), 0, "{tally:#?}");
    assert_eq!(tally.refused_early.load(Ordering::Relaxed), 0, "{tally:#?}");
    assert!(report.clean, "{report:?}");
    assert_eq!(report.exit_code, 0);
    assert!(tally.ok.load(Ordering::Relaxed) > 100, "{tally:#?}");
    assert!(
        tally.ok_while_draining.load(Ordering::Relaxed) > 0,
        "{tally:#?}"
    );
    assert!(
        tally.told_to_close.load(Ordering::Relaxed) > 0,
        "{tally:#?}"
    );
    assert_eq!(
        tally.refused_after_stopping.load(Ordering::Relaxed),
        CLIENTS,
        "every client ends on a refused connection: {tally:#?}"
    );
}
