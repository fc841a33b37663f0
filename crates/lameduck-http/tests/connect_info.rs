//! `Server::connect_info`: each connection's peer address in every request's extensions,
//! as axum's `ConnectInfo` (over TCP and a Unix socket, HTTP/1 and HTTP/2) or a type of
//! one's own.

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::routing::get;
use http::{Request, Response};
use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

use common::*;

async fn whoami(ConnectInfo(peer): ConnectInfo<SocketAddr>) -> String {
    peer.to_string()
}

fn app() -> Router {
    Router::new().route("/whoami", get(whoami))
}

#[tokio::test]
async fn axum_handlers_get_connect_info_over_http1() {
    let lifecycle = lifecycle(|b| b);
    let (listener, addr) = bind().await;
    let server = lameduck_http::serve(listener, app(), &lifecycle).connect_info(ConnectInfo);
    let server = tokio::spawn(server.into_future());

    let mut client = TcpStream::connect(addr).await.expect("connect");
    let me = client.local_addr().expect("client address");
    // Twice on one keep-alive connection: every request gets it, not just the first.
    for _ in 0..2 {
        let response = within(
            "response",
            raw_exchange(&mut client, b"GET /whoami HTTP/1.1\r\nhost: test\r\n\r\n"),
        )
        .await
        .expect("a response");
        assert_eq!(response.status, 200, "{}", response.head);
        assert_eq!(String::from_utf8_lossy(&response.body), me.to_string());
    }

    drop(client);
    lifecycle.shutdown();
    assert!(report(server).await.clean);
}

#[tokio::test]
async fn axum_handlers_get_connect_info_over_http2() {
    let lifecycle = lifecycle(|b| b);
    let (listener, addr) = bind().await;
    let server = lameduck_http::serve(listener, app(), &lifecycle).connect_info(ConnectInfo);
    let server = tokio::spawn(server.into_future());

    let stream = TcpStream::connect(addr).await.expect("connect");
    let me = stream.local_addr().expect("client address");
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("handshake");
    let conn = tokio::spawn(conn);
    for _ in 0..2 {
        let response = within("response", sender.send_request(common::get("/whoami")))
            .await
            .expect("a response");
        assert_eq!(response.status(), 200);
        let body = response
            .into_body()
            .collect()
            .await
            .expect("body")
            .to_bytes();
        assert_eq!(String::from_utf8_lossy(&body), me.to_string());
    }

    drop(sender);
    lifecycle.shutdown();
    assert!(report(server).await.clean);
    let _ = within("client connection", conn).await;
}

/// Without `connect_info` nothing is inserted: axum's extractor fails, as under
/// `axum::serve(listener, app)`.
#[tokio::test]
async fn without_connect_info_nothing_is_inserted() {
    let lifecycle = lifecycle(|b| b);
    let (addr, server) = spawn_serve(app(), &lifecycle).await;

    let mut client = TcpStream::connect(addr).await.expect("connect");
    let response = within(
        "response",
        raw_exchange(&mut client, b"GET /whoami HTTP/1.1\r\nhost: test\r\n\r\n"),
    )
    .await
    .expect("a response");
    assert_eq!(response.status, 500, "{}", response.head);

    drop(client);
    lifecycle.shutdown();
    assert!(report(server).await.clean);
}

/// Data of one's own, for a plain tower service.
#[derive(Clone, Debug)]
struct Peer(SocketAddr);

#[tokio::test]
async fn a_tower_service_reads_data_of_its_own() {
    let lifecycle = lifecycle(|b| b);
    let (listener, addr) = bind().await;
    let service = tower::service_fn(|request: Request<hyper::body::Incoming>| async move {
        let peer = request
            .extensions()
            .get::<Peer>()
            .map(|Peer(addr)| addr.to_string())
            .unwrap_or_default();
        Ok::<_, Infallible>(Response::new(peer))
    });
    let server = lameduck_http::serve(listener, service, &lifecycle).connect_info(Peer);
    let server = tokio::spawn(server.into_future());

    let mut client = TcpStream::connect(addr).await.expect("connect");
    let me = client.local_addr().expect("client address");
    let response = within("response", raw_exchange(&mut client, RAW_GET))
        .await
        .expect("a response");
    assert_eq!(response.status, 200);
    assert_eq!(String::from_utf8_lossy(&response.body), me.to_string());

    drop(client);
    lifecycle.shutdown();
    assert!(report(server).await.clean);
}

#[cfg(unix)]
#[tokio::test]
async fn axum_handlers_get_the_unix_peer_address() {
    use std::time::{SystemTime, UNIX_EPOCH};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::UnixListener;
    use tokio::net::unix::SocketAddr as UnixAddr;

    async fn unix_whoami(ConnectInfo(peer): ConnectInfo<UnixAddr>) -> String {
        match peer.as_pathname() {
            Some(path) => path.display().to_string(),
            None => String::from("unnamed"),
        }
    }

    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let dir = std::env::temp_dir();
    let base = format!("lameduck-http-ci-{}-{nanos}", std::process::id());
    let server_path = dir.join(format!("{base}.sock"));
    let client_path = dir.join(format!("{base}-client.sock"));

    let lifecycle = lifecycle(|b| b);
    let listener = UnixListener::bind(&server_path).expect("bind");
    let app = Router::new().route("/", get(unix_whoami));
    let server = lameduck_http::serve(listener, app, &lifecycle).connect_info(ConnectInfo);
    let server = tokio::spawn(server.into_future());

    // A client bound to a path of its own, so that the server sees a named peer.
    let socket =
        socket2::Socket::new(socket2::Domain::UNIX, socket2::Type::STREAM, None).expect("socket");
    socket
        .bind(&socket2::SockAddr::unix(&client_path).expect("client path"))
        .expect("bind the client");
    socket
        .connect(&socket2::SockAddr::unix(&server_path).expect("server path"))
        .expect("connect");
    let stream = std::os::unix::net::UnixStream::from(socket);
    stream.set_nonblocking(true).expect("non-blocking");
    let mut stream = tokio::net::UnixStream::from_std(stream).expect("register");

    stream
        .write_all(b"GET / HTTP/1.1\r\nhost: test\r\nconnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut response = Vec::new();
    within("response", stream.read_to_end(&mut response))
        .await
        .expect("read");
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
    assert!(
        response.ends_with(&format!("\r\n\r\n{}", client_path.display())),
        "{response}"
    );

    drop(stream);
    lifecycle.shutdown();
    assert!(report(server).await.clean);
    let _ = std::fs::remove_file(&server_path);
    let _ = std::fs::remove_file(&client_path);
}
