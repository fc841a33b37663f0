//! What to send where: [`Target`] (a parsed `http://` URL) and [`LoadConfig`].

use std::net::{SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HOST};
use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Uri};
use http_body_util::Full;

/// A configuration error: a URL, header or value the load generator cannot use.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The URL did not parse, or is not `http://host:port/...`.
    #[error("invalid URL {url:?}: {reason}")]
    Url {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The URL's host did not resolve to any address.
    #[error("cannot resolve {authority:?}: {reason}")]
    Resolve {
        /// `host:port` from the URL.
        authority: String,
        /// The resolver's answer.
        reason: String,
    },
    /// A header was not `Name: value`, or its name or value is not valid HTTP.
    #[error("invalid header {header:?}: {reason}")]
    Header {
        /// The header as given.
        header: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// Where requests go: the resolved addresses of an `http://host:port/path?query` URL.
///
/// The host is resolved once, when the target is parsed, so that reconnecting (which a
/// draining server makes clients do often) costs no DNS lookup. Connecting tries the
/// addresses in order, like [`tokio::net::TcpStream::connect`].
#[derive(Debug, Clone)]
pub struct Target {
    url: String,
    addrs: Vec<SocketAddr>,
    authority: HeaderValue,
    path_and_query: PathAndQuery,
}

impl Target {
    /// Parses and resolves an `http://` URL. The port defaults to 80, the path to `/`.
    /// `https` is not supported: the benchmarks run on loopback.
    pub fn parse(url: &str) -> Result<Target, ConfigError> {
        let bad = |reason: &str| ConfigError::Url {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        let uri: Uri = url
            .parse()
            .map_err(|e: http::uri::InvalidUri| bad(&e.to_string()))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some(other) => {
                return Err(bad(&format!("scheme {other:?} is not supported, use http")));
            }
            None => return Err(bad("no scheme, expected http://host:port/path")),
        }
        let authority = uri.authority().ok_or_else(|| bad("no host"))?;
        let port = authority.port_u16().unwrap_or(80);
        let host = authority.host();
        // `[::1]` in a URL is `::1` to the resolver.
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let addrs: Vec<SocketAddr> = (host, port)
            .to_socket_addrs()
            .map_err(|e| ConfigError::Resolve {
                authority: authority.to_string(),
                reason: e.to_string(),
            })?
            .collect();
        if addrs.is_empty() {
            return Err(ConfigError::Resolve {
                authority: authority.to_string(),
                reason: "no addresses".to_owned(),
            });
        }
        let authority =
            HeaderValue::from_str(authority.as_str()).map_err(|e| bad(&e.to_string()))?;
        let path_and_query = uri
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        Ok(Target {
            url: url.to_owned(),
            addrs,
            authority,
            path_and_query,
        })
    }

    /// The same server with another path (and query), e.g. `"/work?ms=5000"`.
    pub fn with_path(&self, path_and_query: &str) -> Result<Target, ConfigError> {
        let pq: PathAndQuery =
            path_and_query
                .parse()
                .map_err(|e: http::uri::InvalidUri| ConfigError::Url {
                    url: path_and_query.to_owned(),
                    reason: e.to_string(),
                })?;
        let authority = self.authority.to_str().unwrap_or_default();
        Ok(Target {
            url: format!("http://{authority}{pq}"),
            addrs: self.addrs.clone(),
            authority: self.authority.clone(),
            path_and_query: pq,
        })
    }

    /// The URL as given.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The addresses connections go to, tried in order.
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// The request target sent on the request line, e.g. `/work?ms=10`.
    pub fn path_and_query(&self) -> &str {
        self.path_and_query.as_str()
    }
}

/// Everything [`run`](crate::run) needs: target, request shape, concurrency, rate, limits.
///
/// Start from [`LoadConfig::new`] (which sets the defaults below) and change the public
/// fields:
///
/// ```no_run
/// # fn main() -> Result<(), lameduck_load::ConfigError> {
/// use std::time::Duration;
/// let mut config = lameduck_load::LoadConfig::new("http://127.0.0.1:8080/orders")?
///     .json_body(r#"{"item":"x"}"#);
/// config.connections = 8;
/// config.rate = 500;
/// config.duration = Some(Duration::from_secs(3));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct LoadConfig {
    /// Where requests go.
    pub target: Target,
    /// Request method. Default `GET`.
    pub method: Method,
    /// Extra request headers (`Host` is always set from the URL). Default none.
    pub headers: HeaderMap,
    /// Request body; sent with `content-type: application/json` unless [`headers`]
    /// says otherwise. Default none.
    ///
    /// [`headers`]: LoadConfig::headers
    pub body: Option<Bytes>,
    /// Concurrent workers, each with one keep-alive connection at a time. Default 32.
    pub connections: usize,
    /// Aggregate requests per second over all workers; 0 sends as fast as the workers
    /// can. Default 2000.
    pub rate: u64,
    /// How long to keep starting requests; `None` runs until the `stop` future of
    /// [`run`](crate::run) completes. Default 10 s.
    pub duration: Option<Duration>,
    /// Time allowed from handing a request to the connection to the end of the
    /// response body; past it the request is a [`Class::Timeout`](crate::Class::Timeout)
    /// and the connection is dropped. Default 5 s.
    pub request_timeout: Duration,
    /// Time allowed for a TCP connect; past it the attempt is
    /// [`Class::Refused`](crate::Class::Refused). Default 2 s.
    pub connect_timeout: Duration,
    /// Pause of a worker after a refused connect before it takes its next request
    /// slot, so a dead target is not spun on. Default 10 ms.
    pub reconnect_backoff: Duration,
    /// Stop once connects have been refused, with no response and no successful
    /// connect in between, for this long (the target is gone). Default `None`.
    pub until_refused: Option<Duration>,
    /// The last instant at which a worker may open a new connection; `None` (the
    /// default): always.
    ///
    /// After it, each worker goes on sending on the keep-alive connection it has, at its
    /// share of the rate (`rate / connections`), but opens no other: once the server
    /// closes that connection (a `Connection: close` response, an EOF or a reset, a
    /// request given back unwritten), or if it has none, the worker *leaves*. Leaving is
    /// not a failure, and the request slot it would have used is not an attempt of any
    /// class; a request written on the connection and not answered is `no_response` as
    /// always. The aggregate rate shrinks with each worker that leaves, so those that stay
    /// keep their pace. The report says when each worker left
    /// ([`LoadReport::left_at_ms`](crate::LoadReport::left_at_ms)), and the run ends
    /// once every worker has left (or, as always, at `duration`, `stop` or
    /// `until_refused`: the caller's bound on clients that are never sent away).
    ///
    /// This is how clients of a Kubernetes Service behave once the endpoint of a
    /// terminating pod is removed: kube-proxy (conntrack) keeps ESTABLISHED connections
    /// going to the old pod, only new connections go elsewhere, so a keep-alive client
    /// stays on the old pod until the pod closes its connection.
    pub new_connections_until: Option<Instant>,
}

impl LoadConfig {
    /// A configuration for `url` with the defaults documented on each field.
    pub fn new(url: &str) -> Result<LoadConfig, ConfigError> {
        Ok(LoadConfig {
            target: Target::parse(url)?,
            method: Method::GET,
            headers: HeaderMap::new(),
            body: None,
            connections: 32,
            rate: 2000,
            duration: Some(Duration::from_secs(10)),
            request_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(2),
            reconnect_backoff: Duration::from_millis(10),
            until_refused: None,
            new_connections_until: None,
        })
    }

    /// Sets the body (sent as JSON unless a `content-type` header is set).
    pub fn json_body(mut self, body: impl Into<Bytes>) -> LoadConfig {
        self.body = Some(body.into());
        self
    }

    /// Adds a header given as `Name: value`, as on curl's command line.
    pub fn header(mut self, line: &str) -> Result<LoadConfig, ConfigError> {
        let (name, value) = parse_header(line)?;
        self.headers.append(name, value);
        Ok(self)
    }

    pub(crate) fn template(&self) -> RequestTemplate {
        RequestTemplate::new(
            &self.target,
            self.method.clone(),
            &self.headers,
            self.body.clone(),
        )
    }
}

/// Parses `Name: value`.
pub(crate) fn parse_header(line: &str) -> Result<(HeaderName, HeaderValue), ConfigError> {
    let bad = |reason: String| ConfigError::Header {
        header: line.to_owned(),
        reason,
    };
    let (name, value) = line
        .split_once(':')
        .ok_or_else(|| bad("expected `Name: value`".to_owned()))?;
    let name = HeaderName::from_bytes(name.trim().as_bytes()).map_err(|e| bad(e.to_string()))?;
    let value = HeaderValue::from_str(value.trim()).map_err(|e| bad(e.to_string()))?;
    Ok((name, value))
}

/// A request built once and cloned for every send (bodies are `Bytes`: cheap to clone).
#[derive(Debug, Clone)]
pub(crate) struct RequestTemplate {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
}

impl RequestTemplate {
    pub(crate) fn new(
        target: &Target,
        method: Method,
        extra: &HeaderMap,
        body: Option<Bytes>,
    ) -> RequestTemplate {
        let mut headers = HeaderMap::new();
        headers.insert(HOST, target.authority.clone());
        if body.is_some() && !extra.contains_key(CONTENT_TYPE) {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        for (name, value) in extra {
            headers.append(name, value.clone());
        }
        RequestTemplate {
            method,
            uri: Uri::from(target.path_and_query.clone()),
            headers,
            body: body.unwrap_or_default(),
        }
    }

    pub(crate) fn get(target: &Target) -> RequestTemplate {
        RequestTemplate::new(target, Method::GET, &HeaderMap::new(), None)
    }

    pub(crate) fn build(&self) -> Request<Full<Bytes>> {
        let mut request = Request::new(Full::new(self.body.clone()));
        *request.method_mut() = self.method.clone();
        *request.uri_mut() = self.uri.clone();
        *request.headers_mut() = self.headers.clone();
        request
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn parses_urls() {
        let t = Target::parse("http://127.0.0.1:8080/work?ms=5").unwrap();
        assert_eq!(
            t.addrs(),
            &["127.0.0.1:8080".parse::<SocketAddr>().unwrap()]
        );
        assert_eq!(t.path_and_query(), "/work?ms=5");
        let t = Target::parse("http://127.0.0.1:81").unwrap();
        assert_eq!(t.path_and_query(), "/");
        let t = Target::parse("http://[::1]:81/x").unwrap();
        assert_eq!(t.addrs(), &["[::1]:81".parse::<SocketAddr>().unwrap()]);
        let w = t.with_path("/work?ms=1").unwrap();
        assert_eq!(w.url(), "http://[::1]:81/work?ms=1");
        assert!(Target::parse("https://127.0.0.1/").is_err());
        assert!(Target::parse("127.0.0.1:80").is_err());
    }

    #[test]
    fn builds_requests() {
        let config = LoadConfig::new("http://127.0.0.1:9/orders")
            .unwrap()
            .json_body("{}")
            .header("X-Test: 1")
            .unwrap();
        let req = config.template().build();
        assert_eq!(req.headers()[HOST], "127.0.0.1:9");
        assert_eq!(req.headers()[CONTENT_TYPE], "application/json");
        assert_eq!(req.headers()["x-test"], "1");
        assert_eq!(req.uri(), "/orders");
        assert!(parse_header("nocolon").is_err());
    }
}
