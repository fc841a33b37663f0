//! Recipe: HTTPS with tokio-rustls, served by lameduck's drain-aware server.
//!
//! Traffic on :8443 (`$PORT`) over TLS, with the certificate chain and private key read
//! from the PEM files named by `TLS_CERT` and `TLS_KEY`; probes and `/shutdown` in plain
//! HTTP on the admin port (`LAMEDUCK_ADMIN_ADDR`, default :9090), where the kubelet calls
//! them. `/` answers `hello`; `/work?ms=N` takes N milliseconds (a request to have in
//! flight across a shutdown).
//!
//! [`TlsListener`] implements [`lameduck_http::Listener`] around a `TcpListener`. Its
//! `accept` returns as soon as TCP has accepted, with a [`TlsConnection`] whose handshake
//! runs on the connection's own task, on its first read or write: a slow (or silent)
//! client's handshake never holds up the accept loop, and every accepted connection is
//! the server's from the start (counted, drained, cut). The alternative, a handshake
//! inside `accept`, would serialise handshakes, and handshakes on a side task would leave
//! connections the server does not know of at Stopping.
//!
//! Against `lameduck_axum::serve` over plain TCP, this **keeps** everything the server
//! does with a connection's bytes: the lame duck (readiness 503, traffic served through
//! the delay, `Connection: close` on HTTP/1 and GOAWAY on HTTP/2 — offered by ALPN —
//! from Draining on); at Stopping, the connections the kernel had queued are still
//! accepted (their handshakes then run within the first-request grace); in-flight
//! requests finish, bodies included, up to the drain timeout; at the cut nothing more is
//! written (the server refuses every read and write, and [`TlsConnection`] sends neither
//! `close_notify` nor records rustls still holds) and the handlers are dropped before the
//! AfterDrain hooks; every connection
//! and request counted; the header-read timeout (the handshake is part of the wait for
//! the first request, so a client that never completes its handshake is closed after it);
//! hooks, deadline, watchdog, report and exit status.
//!
//! It **loses**:
//!
//! - closing an idle keep-alive connection at Stopping *without a race*: lameduck's
//!   server looks for a request already in the socket before closing it
//!   ([`Listener::read_queued`](lameduck_http::Listener::read_queued)), which cannot be
//!   done under TLS (the bytes are encrypted records), so such a request may get no
//!   answer, as with any HTTP/1 server; HTTP/2 clients (GOAWAY) are not affected;
//! - a clean TLS end at the cut: connections cut there are closed without
//!   `close_notify`, so the client sees an unexpected end of stream (over plain TCP it
//!   sees the connection closed too; a normal close still sends `close_notify`);
//! - certificate reloading: the files are read once at start (a rotated certificate
//!   needs a restart, which is what this SDK makes safe).
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use anyhow::Context as _;
use axum::{Router, extract::Query, routing::get};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// A TCP listener whose connections speak TLS (see the crate docs).
struct TlsListener {
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    lifecycle: lameduck::Lifecycle,
}

impl lameduck_http::Listener for TlsListener {
    type Io = TlsConnection;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> io::Result<(TlsConnection, SocketAddr)> {
        let (tcp, peer) = self.tcp.accept().await?;
        Ok((
            TlsConnection::new(&self.acceptor, &self.lifecycle, tcp),
            peer,
        ))
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.tcp.local_addr()
    }

    /// The TCP listener's own: every connection the kernel has queued, asked of the
    /// kernel directly; their handshakes run on their own tasks like any other.
    fn accept_backlog(self) -> Vec<(TlsConnection, SocketAddr)> {
        let Self {
            tcp,
            acceptor,
            lifecycle,
        } = self;
        lameduck_http::Listener::accept_backlog(tcp)
            .into_iter()
            .map(|(tcp, peer)| (TlsConnection::new(&acceptor, &lifecycle, tcp), peer))
            .collect()
    }

    // `read_queued` keeps its default (nothing known to be queued): the socket's bytes
    // are TLS records, not requests.
}

/// A server-side TLS connection whose handshake runs on its first read or write.
struct TlsConnection {
    tls: Tls,
    /// To look at the drain cut when the server closes the connection.
    lifecycle: lameduck::Lifecycle,
}

enum Tls {
    Handshaking(Box<tokio_rustls::Accept<TcpStream>>),
    Ready(Box<TlsStream<TcpStream>>),
    Failed,
}

impl TlsConnection {
    fn new(acceptor: &TlsAcceptor, lifecycle: &lameduck::Lifecycle, tcp: TcpStream) -> Self {
        Self {
            tls: Tls::Handshaking(Box::new(acceptor.accept(tcp))),
            lifecycle: lifecycle.clone(),
        }
    }

    /// The established stream, driving the handshake until it is.
    fn poll_established(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<&mut TlsStream<TcpStream>>> {
        if let Tls::Handshaking(accept) = &mut self.tls {
            match ready!(Pin::new(&mut **accept).poll(cx)) {
                Ok(stream) => self.tls = Tls::Ready(Box::new(stream)),
                Err(error) => {
                    tracing::debug!(%error, "TLS handshake failed");
                    self.tls = Tls::Failed;
                    return Poll::Ready(Err(error));
                }
            }
        }
        match &mut self.tls {
            Tls::Ready(stream) => Poll::Ready(Ok(stream)),
            Tls::Handshaking(_) | Tls::Failed => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "the TLS handshake failed",
            ))),
        }
    }
}

impl AsyncRead for TlsConnection {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match ready!(self.get_mut().poll_established(cx)) {
            Ok(stream) => Pin::new(stream).poll_read(cx, buf),
            Err(error) => Poll::Ready(Err(error)),
        }
    }
}

impl AsyncWrite for TlsConnection {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match ready!(self.get_mut().poll_established(cx)) {
            Ok(stream) => Pin::new(stream).poll_write(cx, buf),
            Err(error) => Poll::Ready(Err(error)),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match ready!(self.get_mut().poll_established(cx)) {
            Ok(stream) => Pin::new(stream).poll_write_vectored(cx, bufs),
            Err(error) => Poll::Ready(Err(error)),
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.get_mut().tls {
            Tls::Ready(stream) => Pin::new(stream).poll_flush(cx),
            // Nothing written yet: nothing to flush.
            Tls::Handshaking(_) | Tls::Failed => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match &mut this.tls {
            // After the drain cut nothing more goes out, not even records rustls still
            // holds: the socket is closed by dropping it, without close_notify.
            Tls::Ready(_) if this.lifecycle.is_cut() => Poll::Ready(Ok(())),
            // close_notify (after what rustls still holds), then the TCP write side.
            Tls::Ready(stream) => Pin::new(stream).poll_shutdown(cx),
            // Closed before the handshake ended: dropping the socket is the whole close.
            Tls::Handshaking(_) | Tls::Failed => Poll::Ready(Ok(())),
        }
    }
}

/// The server's TLS settings from PEM files: the certificate chain (leaf first) and the
/// private key (PKCS#8, PKCS#1 or SEC1). HTTP/2 and HTTP/1.1 offered by ALPN.
fn tls_config(cert: &Path, key: &Path) -> anyhow::Result<rustls::ServerConfig> {
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("TLS_CERT={}: no certificate chain", cert.display()))?;
    anyhow::ensure!(
        !chain.is_empty(),
        "TLS_CERT={}: no certificate in the file",
        cert.display()
    );
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("TLS_KEY={}: no private key", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .context("the certificate and the key do not make a TLS configuration")?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

fn env_path(name: &str) -> anyhow::Result<std::path::PathBuf> {
    std::env::var_os(name)
        .map(Into::into)
        .with_context(|| format!("{name} is not set: the path of a PEM file"))
}

#[derive(serde::Deserialize)]
struct Work {
    ms: u64,
}

async fn work(Query(Work { ms }): Query<Work>) -> String {
    tracing::info!(ms, "work started");
    tokio::time::sleep(Duration::from_millis(ms.min(600_000))).await;
    format!("worked {ms} ms\n")
}

#[tokio::main]
async fn main() -> anyhow::Result<lameduck::Report> {
    example_logging::init()?;
    // First: SIGTERM is heard from here on.
    let lifecycle = lameduck::Lifecycle::from_env()?;

    let config = tls_config(&env_path("TLS_CERT")?, &env_path("TLS_KEY")?)?;
    let port = std::env::var("PORT").unwrap_or_else(|_| "8443".into());
    let port: u16 = port
        .parse()
        .with_context(|| format!("PORT={port:?} is not a port"))?;
    let listener = TlsListener {
        tcp: TcpListener::bind(("0.0.0.0", port)).await?,
        acceptor: TlsAcceptor::from(Arc::new(config)),
        lifecycle: lifecycle.clone(),
    };

    // Probes and the preStop `/shutdown` in plain HTTP on their own port.
    let admin = lameduck_axum::Admin::from_env(&lifecycle)?.spawn().await?;
    tracing::info!(admin = %admin.local_addr(), "admin endpoints listening");
    tracing::info!(addr = %listener.tcp.local_addr()?, "serving HTTPS");

    let app = Router::new()
        .route("/", get(|| async { "hello\n" }))
        .route("/work", get(work));
    // Serves until Stopping, drains, runs the hooks, writes the report; the process exits
    // with the report's exit code.
    Ok(lameduck_http::serve(listener, app, &lifecycle).await)
}
