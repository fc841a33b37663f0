//! One connection and one request on it, classified. The classification rule of the crate
//! docs lives here.

use std::error::Error as StdError;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::CONNECTION;
use http::{Response, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::task::AbortHandle;

use crate::config::{RequestTemplate, Target};
use crate::report::Class;

/// A client connection: hyper's request sender plus the task driving the socket.
pub(crate) struct Conn {
    sender: SendRequest<Full<Bytes>>,
    task: AbortHandle,
    /// Whether a complete response has already been read on this connection, i.e. the
    /// next request goes on a reused keep-alive connection.
    pub(crate) reused: bool,
}

impl Conn {
    /// Closes the connection now, whatever state it is in. Otherwise dropping a `Conn`
    /// lets hyper close it in order (dropping the sender ends an idle connection; an
    /// unfinished exchange whose future was dropped ends it too), which keeps the normal
    /// `Connection: close` path free of client-side resets.
    pub(crate) fn abort(self) {
        self.task.abort();
    }
}

/// Opens a TCP connection (within `timeout`) and starts hyper's HTTP/1 client on it. Also
/// returns the handle of the task driving the socket, which ends when the connection
/// closes (callers that don't care drop it). The error is the message for
/// [`Class::Refused`].
pub(crate) async fn connect(
    target: &Target,
    timeout: Duration,
) -> Result<(Conn, tokio::task::JoinHandle<()>), String> {
    let stream = match tokio::time::timeout(timeout, TcpStream::connect(target.addrs())).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => return Err(format!("connect: {e}")),
        Err(_) => return Err(format!("connect: not connected within {timeout:?}")),
    };
    // Small requests: don't let Nagle hold them back.
    let _ = stream.set_nodelay(true);
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake: {}", error_chain(&e)))?;
    let task = tokio::spawn(async move {
        // Its errors reach the request's future too; nothing more to do with them here.
        let _ = connection.await;
    });
    Ok((
        Conn {
            sender,
            task: task.abort_handle(),
            reused: false,
        },
        task,
    ))
}

/// How one request on one connection ended.
pub(crate) enum Exchange {
    /// A complete response, body read to the end.
    Response {
        status: StatusCode,
        /// The server asked to close the connection (or it cannot be kept alive).
        close: bool,
        latency: Duration,
    },
    /// The connection was already closed before the request was handed to hyper
    /// (`SendRequest::ready` failed). No request was involved.
    ClosedBeforeSend(String),
    /// hyper handed the request back unwritten ([`Class::NotSent`]).
    NotSent(String),
    /// The request was written but no complete response arrived ([`Class::NoResponse`]).
    NoResponse {
        message: String,
        /// The response head had arrived (it was the body that was cut).
        head_received: bool,
    },
    /// Nothing complete within the request timeout ([`Class::Timeout`]).
    Timeout,
}

impl Exchange {
    /// The class of a request that got this far (not for `ClosedBeforeSend`).
    pub(crate) fn class(&self) -> Class {
        match self {
            Exchange::Response { status, .. } if status.is_server_error() => Class::Status5xx,
            Exchange::Response { .. } => Class::Ok,
            Exchange::ClosedBeforeSend(_) | Exchange::NotSent(_) => Class::NotSent,
            Exchange::NoResponse { .. } => Class::NoResponse,
            Exchange::Timeout => Class::Timeout,
        }
    }
}

/// Sends one request on `conn` and reads the whole response, within `timeout`.
///
/// The rule ("was it written?") is hyper's own: `try_send_request` returns the request in
/// its error (`TrySendError::take_message`) exactly when the connection's dispatcher had
/// not taken it from its queue, i.e. not a byte of it was serialized. Once the dispatcher
/// takes it, it is written at once, and any later failure — reset, EOF before or during
/// the response head (`IncompleteMessage`), a cut body — is `NoResponse`. hyper reports
/// the unwritten case as `is_canceled()`; we decide on the returned message rather than on
/// the error kind, since that is the exact fact.
///
/// `handed` is called once the request has been given to hyper on a live connection.
pub(crate) async fn exchange(
    conn: &mut Conn,
    template: &RequestTemplate,
    timeout: Duration,
    handed: impl FnOnce(),
) -> Exchange {
    let work = async {
        // Waits for hyper to finish the previous exchange; fails if hyper has already seen
        // the server close the connection (a pooled client would discard it silently).
        if let Err(e) = conn.sender.ready().await {
            return Exchange::ClosedBeforeSend(error_chain(&e));
        }
        let started = Instant::now();
        let sent = conn.sender.try_send_request(template.build());
        handed();
        let response = match sent.await {
            Ok(response) => response,
            Err(mut e) => {
                let message = error_chain(e.error());
                return if e.take_message().is_some() {
                    Exchange::NotSent(message)
                } else {
                    Exchange::NoResponse {
                        message,
                        head_received: false,
                    }
                };
            }
        };
        let status = response.status();
        let close = wants_close(&response);
        let mut body = response.into_body();
        loop {
            match body.frame().await {
                None => break,
                Some(Ok(_frame)) => {}
                Some(Err(e)) => {
                    return Exchange::NoResponse {
                        message: format!("body: {}", error_chain(&e)),
                        head_received: true,
                    };
                }
            }
        }
        Exchange::Response {
            status,
            close,
            latency: started.elapsed(),
        }
    };
    match tokio::time::timeout(timeout, work).await {
        Ok(outcome) => outcome,
        Err(_) => Exchange::Timeout,
    }
}

/// Whether the connection will not carry another request after this response: the server
/// said `Connection: close`, or spoke HTTP/1.0 without `keep-alive`.
fn wants_close(response: &Response<Incoming>) -> bool {
    let has_token = |token: &str| {
        response.headers().get_all(CONNECTION).iter().any(|v| {
            v.to_str()
                .map(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
                .unwrap_or(false)
        })
    };
    has_token("close") || (response.version() == Version::HTTP_10 && !has_token("keep-alive"))
}

/// An error and its sources, `outer: inner: innermost`, as one line.
pub(crate) fn error_chain(error: &(dyn StdError + 'static)) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        let _ = write!(out, ": {e}");
        source = e.source();
    }
    out
}
