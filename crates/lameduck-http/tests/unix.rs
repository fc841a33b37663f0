//! Serving on a Unix socket, through the same `Listener` trait.
#![cfg(unix)]

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

#[tokio::test]
async fn a_unix_socket_is_served_and_drained() {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let path =
        std::env::temp_dir().join(format!("lameduck-http-{}-{nanos}.sock", std::process::id()));
    let listener = UnixListener::bind(&path).expect("bind");
    let lifecycle = lifecycle(|b| b);
    let server = tokio::spawn(lameduck_http::serve(listener, hello(), &lifecycle).into_future());

    let mut stream = UnixStream::connect(&path).await.expect("connect");
    stream.write_all(RAW_GET).await.expect("write");
    let mut response = Vec::new();
    let mut buf = [0u8; 1024];
    while !String::from_utf8_lossy(&response).ends_with("hello") {
        let n = stream.read(&mut buf).await.expect("read");
        assert!(
            n > 0,
            "closed early: {}",
            String::from_utf8_lossy(&response)
        );
        response.extend_from_slice(&buf[..n]);
    }
    assert!(response.starts_with(b"HTTP/1.1 200 OK\r\n"));

    lifecycle.shutdown();
    let report = report(server).await;
    assert!(report.clean, "{report:?}");
    assert!(
        UnixStream::connect(&path).await.is_err(),
        "the listener is closed"
    );
    let _ = std::fs::remove_file(&path);
}
