//! The drain cut and the AfterDrain hooks: an acknowledged request is never lost between
//! them. AfterDrain hooks (which persist what handlers accepted) begin only once every
//! handler has returned or been dropped, and once the cut has fired nothing more reaches a
//! client, even on a connection whose task has not yet heard of the cut.

mod common;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::routing::get;
use common::{http1, http2, lifecycle, report, spawn_serve, within};
use lameduck::{Lifecycle, Phase};
use tokio::sync::Notify;

/// Sets its flag when dropped: the handler that owns it is gone.
struct DropFlag(Arc<AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

fn drains_briefly() -> Lifecycle {
    lifecycle(|b| b.drain_timeout(Duration::from_millis(200)))
}

/// What the AfterDrain hook saw when it began.
#[derive(Default)]
struct Seen {
    handler_gone: AtomicBool,
    hook_ran: AtomicBool,
}

fn hook_records_whether_the_handler_is_gone(
    lifecycle: &Lifecycle,
    handler_gone: Arc<AtomicBool>,
) -> Arc<Seen> {
    let seen = Arc::new(Seen::default());
    let record = Arc::clone(&seen);
    lifecycle.on_shutdown("persist", Phase::AfterDrain, move || async move {
        record
            .handler_gone
            .store(handler_gone.load(Ordering::SeqCst), Ordering::SeqCst);
        record.hook_ran.store(true, Ordering::SeqCst);
    });
    seen
}

/// A handler that never finishes; it says when it has begun, and its drop is recorded.
fn endless_handler(started: Arc<Notify>, gone: Arc<AtomicBool>) -> axum::Router {
    axum::Router::new().route(
        "/endless",
        get(move || {
            let flag = DropFlag(Arc::clone(&gone));
            let started = Arc::clone(&started);
            async move {
                let _flag = flag;
                started.notify_one();
                std::future::pending::<&'static str>().await
            }
        }),
    )
}

/// Send `GET path` over a new HTTP/1 or h2c connection; the task yields the status.
async fn send(
    addr: std::net::SocketAddr,
    http2_client: bool,
    path: &'static str,
) -> tokio::task::JoinHandle<Result<http::StatusCode, hyper::Error>> {
    if http2_client {
        let (mut sender, conn) = http2(addr).await;
        tokio::spawn(async move {
            let _conn = conn;
            sender
                .send_request(common::get(path))
                .await
                .map(|r| r.status())
        })
    } else {
        let (mut sender, conn) = http1(addr).await;
        tokio::spawn(async move {
            let _conn = conn;
            sender
                .send_request(common::get(path))
                .await
                .map(|r| r.status())
        })
    }
}

async fn after_drain_waits_for_the_cut_handler(http2_client: bool) {
    let lifecycle = drains_briefly();
    let started = Arc::new(Notify::new());
    let gone = Arc::new(AtomicBool::new(false));
    let seen = hook_records_whether_the_handler_is_gone(&lifecycle, Arc::clone(&gone));
    let (addr, server) = spawn_serve(
        endless_handler(Arc::clone(&started), Arc::clone(&gone)),
        &lifecycle,
    )
    .await;

    let request = send(addr, http2_client, "/endless").await;
    within("handler start", started.notified()).await;
    lifecycle.shutdown();

    let report = report(server).await;
    assert!(seen.hook_ran.load(Ordering::SeqCst));
    assert!(
        seen.handler_gone.load(Ordering::SeqCst),
        "the AfterDrain hook began while the cut handler still existed"
    );
    assert_eq!(report.requests_cut, 1, "{report:?}");
    let answer = within("client", request).await.expect("client task");
    assert!(answer.is_err(), "a cut request got an answer: {answer:?}");
}

#[tokio::test]
async fn after_drain_hooks_begin_once_an_http1_handler_cut_at_the_drain_timeout_is_dropped() {
    after_drain_waits_for_the_cut_handler(false).await;
}

#[tokio::test]
async fn after_drain_hooks_begin_once_an_http2_handler_cut_at_the_drain_timeout_is_dropped() {
    after_drain_waits_for_the_cut_handler(true).await;
}

/// A handler that accepts its order the moment the cut fires: the race of the defect,
/// lined up exactly. Its connection is woken by the handler itself, before any relay of
/// the cut could reach it.
fn accepts_at_the_cut(lifecycle: &Lifecycle, accepted: Arc<Mutex<Vec<usize>>>) -> axum::Router {
    let cut = lifecycle.cut_token();
    let next = Arc::new(AtomicUsize::new(1));
    axum::Router::new().route(
        "/order",
        get(move || {
            let cut = cut.clone();
            let accepted = Arc::clone(&accepted);
            let id = next.fetch_add(1, Ordering::SeqCst);
            async move {
                cut.cancelled().await;
                accepted.lock().expect("lock").push(id);
                format!("accepted {id}")
            }
        }),
    )
}

async fn nothing_is_acknowledged_after_the_cut(http2_client: bool) {
    let lifecycle = drains_briefly();
    let accepted = Arc::new(Mutex::new(Vec::new()));
    let persisted = Arc::new(Mutex::new(None::<Vec<usize>>));
    {
        let accepted = Arc::clone(&accepted);
        let persisted = Arc::clone(&persisted);
        lifecycle.on_shutdown("persist", Phase::AfterDrain, move || async move {
            let snapshot = accepted.lock().expect("lock").clone();
            *persisted.lock().expect("lock") = Some(snapshot);
        });
    }
    let (addr, server) = spawn_serve(
        accepts_at_the_cut(&lifecycle, Arc::clone(&accepted)),
        &lifecycle,
    )
    .await;

    let request = send(addr, http2_client, "/order").await;
    wait_for_requests(&lifecycle, 1).await;
    lifecycle.shutdown();
    let answer = within("client", request).await.expect("client task");
    let report = report(server).await;
    let persisted = persisted
        .lock()
        .expect("lock")
        .clone()
        .expect("the AfterDrain hook ran");
    assert!(
        answer.is_err(),
        "a response was written after the cut: {answer:?} (persisted {persisted:?})"
    );
    assert_eq!(report.requests_cut, 1, "{report:?}");
}

#[tokio::test]
async fn nothing_reaches_an_http1_client_after_the_cut() {
    nothing_is_acknowledged_after_the_cut(false).await;
}

#[tokio::test]
async fn nothing_reaches_an_http2_client_after_the_cut() {
    nothing_is_acknowledged_after_the_cut(true).await;
}

/// Wait until `n` requests are in flight (the handlers have been called).
async fn wait_for_requests(lifecycle: &Lifecycle, n: usize) {
    within("requests in flight", async {
        while lifecycle.requests().active() < n {
            tokio::task::yield_now().await;
        }
    })
    .await;
}
