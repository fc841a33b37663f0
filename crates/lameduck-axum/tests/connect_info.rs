//! `ConnectInfo<SocketAddr>` for the handlers that lameduck-axum serves: on the traffic
//! listener of `lameduck_axum::serve` once `connect_info()` asks for it (not by default:
//! it costs every request), and always on the admin listener (probes and routes of the
//! application's alike).

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::routing::get;
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

async fn whoami(ConnectInfo(peer): ConnectInfo<SocketAddr>) -> String {
    peer.to_string()
}

/// `GET path` on a connection of its own; the reply and the client's own address.
async fn get_from(addr: SocketAddr, path: &str) -> (Reply, SocketAddr) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let me = stream.local_addr().expect("client address");
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .expect("write");
    let mut bytes = Vec::new();
    tokio::time::timeout(PATIENCE, stream.read_to_end(&mut bytes))
        .await
        .expect("the server answers in time")
        .expect("read");
    (parse(&bytes).expect("an HTTP response"), me)
}

async fn bind() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("local addr");
    (listener, addr)
}

/// `lameduck_axum::serve` of `/whoami` on both listeners, `.connect_info()` or not; the
/// traffic and admin addresses, and a way to end it and check its report.
struct Served {
    lifecycle: lameduck::Lifecycle,
    traffic: SocketAddr,
    admin: SocketAddr,
    serve: tokio::task::JoinHandle<Result<lameduck::Report, lameduck_axum::AdminError>>,
}

async fn serve_whoami(connect_info: bool) -> Served {
    let lifecycle = builder()
        .shutdown_delay(Duration::ZERO)
        .build()
        .expect("a valid configuration");
    let (traffic, traffic_addr) = bind().await;
    let (admin_listener, admin_addr) = bind().await;
    let app = Router::new().route("/whoami", get(whoami));
    let mut serve = lameduck_axum::serve(traffic, app, &lifecycle).admin(
        admin(&lifecycle)
            .route("/whoami", get(whoami))
            .listener(admin_listener),
    );
    if connect_info {
        serve = serve.connect_info();
    }
    Served {
        serve: tokio::spawn(serve.into_future()),
        lifecycle,
        traffic: traffic_addr,
        admin: admin_addr,
    }
}

impl Served {
    async fn shut_down_cleanly(self) {
        self.lifecycle.shutdown();
        let report = tokio::time::timeout(PATIENCE, self.serve)
            .await
            .expect("serve returns")
            .expect("no panic")
            .expect("serve started");
        assert!(report.clean, "{report:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handlers_get_the_client_address_on_both_listeners() {
    let served = serve_whoami(true).await;
    for addr in [served.traffic, served.admin] {
        let (reply, me) = get_from(addr, "/whoami").await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert_eq!(reply.body, me.to_string());
    }
    served.shut_down_cleanly().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_connect_info_the_traffic_router_has_no_address() {
    let served = serve_whoami(false).await;
    // axum's own answer to a missing extension, as under `axum::serve` without
    // `into_make_service_with_connect_info`.
    let (reply, _) = get_from(served.traffic, "/whoami").await;
    assert_eq!(reply.status, 500, "{}", reply.body);
    assert!(
        reply.body.contains("Missing request extension"),
        "{}",
        reply.body
    );
    // The admin listener has it regardless.
    let (reply, me) = get_from(served.admin, "/whoami").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.body, me.to_string());
    served.shut_down_cleanly().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_spawn_gives_the_client_address_too() {
    let lifecycle = lifecycle();
    let admin = serve(admin(&lifecycle).route("/whoami", get(whoami))).await;
    let (reply, me) = get_from(admin.local_addr(), "/whoami").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.body, me.to_string());
    admin.shutdown();
    tokio::time::timeout(PATIENCE, admin.wait())
        .await
        .expect("the admin server ends");
}
