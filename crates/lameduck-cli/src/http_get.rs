//! One HTTP GET with the kubelet's `httpGet` semantics, shared by `probe` and `prestop`.
//!
//! What the kubelet does (`pkg/probe/http`, on Go's `net/http` client), and so what this does:
//! - a new connection for every request (keep-alive disabled, so `Connection: close`);
//! - `User-Agent` and `Accept: */*` sent unless the caller sets them; a caller's *empty*
//!   value removes the header altogether;
//! - redirects (301, 302, 303, 307, 308 with a `Location`) are followed only while they stay
//!   on the original host name (the port may change); a redirect elsewhere is not followed
//!   and its 3xx response is the answer; at most 10 requests are made in total (Go's
//!   limit: the original one and 9 redirects), one more redirect is an error;
//! - at most 10 KiB of the body is read; the rest is never downloaded;
//! - one timeout covers everything: resolving, connecting, every redirect, the body.
//!
//! Only plain HTTP/1.1: TLS would need C code (ring, aws-lc) or a large dependency tree.

use std::error::Error as StdError;
use std::net::SocketAddr;
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, StatusCode};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

use crate::duration;
use crate::header::Header;
use crate::target::{Redirect, Target, UrlError, redact};

/// The most body bytes read, like the kubelet.
pub(crate) const MAX_BODY_BYTES: usize = 10 * 1024;

/// The most requests made for one GET, the original included (Go's redirect limit).
pub(crate) const MAX_REQUESTS: usize = 10;

/// What to fetch and how.
#[derive(Debug, Clone)]
pub(crate) struct GetRequest {
    /// Where to start.
    pub(crate) url: Target,
    /// Headers from the command line, in order.
    pub(crate) headers: Vec<Header>,
    /// Sent as `User-Agent` unless `headers` has one.
    pub(crate) default_user_agent: String,
    /// Deadline for the whole exchange, redirects and body included.
    pub(crate) timeout: Duration,
}

/// The final answer.
#[derive(Debug)]
pub(crate) struct GetResponse {
    /// Its status.
    pub(crate) status: StatusCode,
    /// The URL that gave it (differs from the request's after redirects).
    pub(crate) url: Target,
    /// How many redirects were followed.
    pub(crate) redirects: usize,
    /// For a 3xx answer: why it was not followed.
    pub(crate) unfollowed: Option<Unfollowed>,
    /// The first [`MAX_BODY_BYTES`] of the body.
    pub(crate) body: Vec<u8>,
}

impl GetResponse {
    /// The start of the body as one printable line of at most `max_chars` characters
    /// (control characters and line breaks become spaces), for log lines.
    pub(crate) fn body_excerpt(&self, max_chars: usize) -> String {
        let text = String::from_utf8_lossy(&self.body);
        let mut excerpt: String = text
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .take(max_chars)
            .collect();
        if text.chars().nth(max_chars).is_some() {
            excerpt.push('…');
        }
        excerpt.trim().to_owned()
    }
}

/// Why a 3xx answer was not followed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Unfollowed {
    /// The `Location` names another host (shown as an absolute URL when it is `http://`,
    /// else as given).
    OtherHost(String),
    /// A redirect status without a `Location`.
    NoLocation,
    /// 300, 304, 305, 306: statuses Go's client does not follow.
    NotARedirect,
}

/// Why no answer was obtained.
#[derive(Debug, thiserror::Error)]
pub(crate) enum GetError {
    /// The deadline passed first.
    #[error("timed out after {}", duration::display(*.0))]
    Timeout(Duration),
    /// Host name resolution failed.
    #[error("cannot resolve {host:?}: {source}")]
    Resolve {
        /// The name.
        host: String,
        /// The resolver's error.
        source: std::io::Error,
    },
    /// Resolution gave no address.
    #[error("{0:?} resolves to no address")]
    NoAddress(String),
    /// Nothing listens there.
    #[error("connection refused by {0}")]
    Refused(SocketAddr),
    /// Any other connect error (unreachable network, reset, ...).
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// The address tried last.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The request could not be built from the given headers.
    #[error("cannot build the request: {0}")]
    Request(#[from] http::Error),
    /// The HTTP exchange failed (closed early, garbage instead of HTTP, ...).
    #[error("HTTP exchange with {url} failed: {}", chain(.source))]
    Exchange {
        /// The URL of the failed request.
        url: String,
        /// hyper's error.
        source: hyper::Error,
    },
    /// Reading the body failed.
    #[error("reading the body from {url} failed: {}", chain(.source))]
    Body {
        /// The URL being read.
        url: String,
        /// hyper's error.
        source: hyper::Error,
    },
    /// A `Location` that is not a usable `http://` URL.
    #[error("{url} redirects to {location:?}, which cannot be followed: {source}")]
    Redirect {
        /// The redirecting URL.
        url: String,
        /// The `Location` header, lossily decoded, with any userinfo hidden.
        location: String,
        /// Why it cannot be followed.
        source: UrlError,
    },
    /// Redirect loop or chain too long.
    #[error("stopped after {MAX_REQUESTS} requests: {url} redirects again")]
    TooManyRedirects {
        /// The URL that redirected once too often.
        url: String,
    },
    /// The async runtime could not start (out of file descriptors, say).
    #[error("cannot start the I/O runtime: {0}")]
    Runtime(std::io::Error),
}

/// Performs the GET on a fresh single-threaded runtime, blocking until done.
pub(crate) fn get_blocking(request: &GetRequest) -> Result<GetResponse, GetError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .map_err(GetError::Runtime)?;
    let result = runtime.block_on(get(request));
    // A timed-out name lookup is still running on a blocking thread; a plain drop would wait
    // for it, defeating the timeout.
    runtime.shutdown_background();
    result
}

/// Performs the GET under the request's deadline.
pub(crate) async fn get(request: &GetRequest) -> Result<GetResponse, GetError> {
    tokio::time::timeout(request.timeout, follow(request))
        .await
        .unwrap_or(Err(GetError::Timeout(request.timeout)))
}

/// Sends the request and follows redirects by the kubelet's rules.
async fn follow(request: &GetRequest) -> Result<GetResponse, GetError> {
    let mut url = request.url.clone();
    // Go keeps a custom Host across a redirect only when the Location is relative.
    let mut host_override = last_value(&request.headers, &header::HOST);
    let mut referer = None;
    let mut requests = 0;
    loop {
        let extra = Extra {
            host: host_override.clone(),
            referer: referer.take(),
        };
        let (status, headers, body) = exchange(&url, request, extra).await?;
        requests += 1;
        let unfollowed = |why| GetResponse {
            status,
            url: url.clone(),
            redirects: requests - 1,
            unfollowed: why,
            body: body.clone(),
        };
        if !is_followed_redirect(status) {
            let why = status.is_redirection().then_some(Unfollowed::NotARedirect);
            return Ok(unfollowed(why));
        }
        let Some(location) = headers.get(header::LOCATION) else {
            return Ok(unfollowed(Some(Unfollowed::NoLocation)));
        };
        let location = String::from_utf8_lossy(location.as_bytes()).into_owned();
        // Same order as the kubelet's CheckRedirect: host first, then the count. The host
        // is checked before the URL has to be usable: a redirect to another host is not
        // followed whatever its scheme (`https://other/` included), so it is the answer,
        // not an error. Only a redirect that *would* be followed must be plain http. A
        // port that is not a port fails whatever the host (see `Target::redirect`).
        let next = match url.redirect(&location) {
            Redirect::Follow(next) => next,
            Redirect::OtherHost(shown) => {
                return Ok(unfollowed(Some(Unfollowed::OtherHost(shown))));
            }
            Redirect::Invalid(source) => {
                return Err(GetError::Redirect {
                    url: url.to_string(),
                    location: redact(location.trim()),
                    source,
                });
            }
        };
        if requests >= MAX_REQUESTS {
            return Err(GetError::TooManyRedirects {
                url: url.to_string(),
            });
        }
        let trimmed = location.trim_start();
        if trimmed.starts_with("//") || trimmed.contains("://") {
            host_override = None;
        }
        // Go's client sends the redirecting page as Referer.
        referer = HeaderValue::from_str(&url.to_string()).ok();
        url = next;
    }
}

/// Per-request headers that change along a redirect chain.
#[derive(Debug, Default)]
struct Extra {
    /// `Host` to send instead of the URL's authority.
    host: Option<HeaderValue>,
    /// `Referer` to send.
    referer: Option<HeaderValue>,
}

/// The statuses Go's client follows.
fn is_followed_redirect(status: StatusCode) -> bool {
    matches!(status.as_u16(), 301 | 302 | 303 | 307 | 308)
}

/// One request on a new connection: status, headers and the first [`MAX_BODY_BYTES`].
async fn exchange(
    url: &Target,
    request: &GetRequest,
    extra: Extra,
) -> Result<(StatusCode, HeaderMap, Vec<u8>), GetError> {
    let exchange_error = |source| GetError::Exchange {
        url: url.to_string(),
        source,
    };
    let stream = connect(url.host(), url.port()).await?;
    let (mut sender, connection) = hyper::client::conn::http1::Builder::new()
        // Go writes canonical header case; a few servers care.
        .title_case_headers(true)
        .handshake(TokioIo::new(stream))
        .await
        .map_err(exchange_error)?;
    // The connection task does the socket I/O; aborting it when we return closes the socket
    // without downloading the rest of a large body.
    let _connection = AbortOnDrop(tokio::spawn(connection));
    let response = sender
        .send_request(build(url, request, extra)?)
        .await
        .map_err(exchange_error)?;
    let (parts, mut body) = response.into_parts();
    let mut prefix = Vec::new();
    while prefix.len() < MAX_BODY_BYTES {
        let Some(frame) = body.frame().await else {
            break;
        };
        let frame = frame.map_err(|source| GetError::Body {
            url: url.to_string(),
            source,
        })?;
        if let Ok(data) = frame.into_data() {
            let room = MAX_BODY_BYTES - prefix.len();
            prefix.extend_from_slice(&data[..data.len().min(room)]);
        }
    }
    Ok((parts.status, parts.headers, prefix))
}

/// Builds the GET for `url`, applying the header rules described in the module docs.
fn build(
    url: &Target,
    request: &GetRequest,
    extra: Extra,
) -> Result<hyper::Request<Empty<Bytes>>, http::Error> {
    let mut builder = hyper::Request::builder()
        .method(Method::GET)
        .uri(url.path_and_query());
    let host = match extra.host {
        Some(host) => host,
        None => HeaderValue::from_str(url.authority())?,
    };
    builder = builder.header(header::HOST, host);
    for given in &request.headers {
        let defaulted = given.name == header::USER_AGENT || given.name == header::ACCEPT;
        if given.name == header::HOST || (defaulted && given.value.is_empty()) {
            continue;
        }
        builder = builder.header(&given.name, &given.value);
    }
    let has = |name: &header::HeaderName| request.headers.iter().any(|h| h.name == name);
    if !has(&header::USER_AGENT) {
        builder = builder.header(header::USER_AGENT, &request.default_user_agent);
    }
    if !has(&header::ACCEPT) {
        builder = builder.header(header::ACCEPT, "*/*");
    }
    if !has(&header::CONNECTION) {
        builder = builder.header(header::CONNECTION, "close");
    }
    if let Some(referer) = extra.referer {
        builder = builder.header(header::REFERER, referer);
    }
    builder.body(Empty::new())
}

/// The value of the last header named `name`, if any.
fn last_value(headers: &[Header], name: &header::HeaderName) -> Option<HeaderValue> {
    headers
        .iter()
        .rev()
        .find(|h| h.name == name)
        .map(|h| h.value.clone())
}

/// Resolves and connects, trying each address in turn as Go's dialer does (shared with
/// `probe grpc://`).
pub(crate) async fn connect(host: &str, port: u16) -> Result<TcpStream, GetError> {
    let addrs = tokio::net::lookup_host((host, port))
        .await
        .map_err(|source| GetError::Resolve {
            host: host.to_owned(),
            source,
        })?;
    let mut last_error = None;
    for addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(stream) => return Ok(stream),
            Err(err) => last_error = Some((addr, err)),
        }
    }
    Err(match last_error {
        None => GetError::NoAddress(host.to_owned()),
        Some((addr, err)) if err.kind() == std::io::ErrorKind::ConnectionRefused => {
            GetError::Refused(addr)
        }
        Some((addr, source)) => GetError::Connect { addr, source },
    })
}

/// Aborts a spawned task when dropped.
pub(crate) struct AbortOnDrop<T>(pub(crate) JoinHandle<T>);

impl<T> Drop for AbortOnDrop<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// An error and its sources on one line: hyper's top-level messages ("client error") say
/// little without them.
pub(crate) fn chain(error: &dyn StdError) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::header::parse as parse_header;

    fn request(headers: &[&str]) -> GetRequest {
        GetRequest {
            url: Target::parse("http://h:8/p?q").unwrap_or_else(|e| panic!("{e}")),
            headers: headers
                .iter()
                .map(|h| parse_header(h).unwrap_or_else(|e| panic!("{e}")))
                .collect(),
            default_user_agent: "lameduck-probe/test".to_owned(),
            timeout: Duration::from_secs(1),
        }
    }

    fn built(headers: &[&str]) -> hyper::Request<Empty<Bytes>> {
        let request = request(headers);
        build(&request.url, &request, Extra::default()).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn defaults() {
        let req = built(&[]);
        assert_eq!(req.uri(), "/p?q");
        let h = req.headers();
        assert_eq!(h[header::HOST], "h:8");
        assert_eq!(h[header::USER_AGENT], "lameduck-probe/test");
        assert_eq!(h[header::ACCEPT], "*/*");
        assert_eq!(h[header::CONNECTION], "close");
    }

    #[test]
    fn caller_headers_override_and_empty_removes() {
        let req = built(&[
            "User-Agent: custom",
            "Accept:",
            "Host: virtual",
            "X-A: 1",
            "X-A: 2",
        ]);
        let h = req.headers();
        assert_eq!(h[header::USER_AGENT], "custom");
        assert!(h.get(header::ACCEPT).is_none());
        assert_eq!(h.get_all(header::HOST).iter().count(), 1);
        assert_eq!(h.get_all("x-a").iter().count(), 2);
        let req = built(&["User-Agent:"]);
        assert!(req.headers().get(header::USER_AGENT).is_none());
    }

    #[test]
    fn body_excerpt_is_one_short_line() {
        let response = GetResponse {
            status: StatusCode::OK,
            url: request(&[]).url,
            redirects: 0,
            unfollowed: None,
            body: b"draining\r\nbye now".to_vec(),
        };
        assert_eq!(response.body_excerpt(100), "draining  bye now");
        assert_eq!(response.body_excerpt(5), "drain…");
    }

    #[test]
    fn followed_statuses() {
        for code in [301, 302, 303, 307, 308] {
            assert!(is_followed_redirect(
                StatusCode::from_u16(code).unwrap_or_default()
            ));
        }
        for code in [200, 300, 304, 305, 404] {
            assert!(!is_followed_redirect(
                StatusCode::from_u16(code).unwrap_or_default()
            ));
        }
    }
}
