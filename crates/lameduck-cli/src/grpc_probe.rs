//! `lameduck probe grpc://HOST:PORT[/SERVICE]`: what `grpc_health_probe` does, for images
//! that predate the kubelet's native gRPC probe.
//!
//! One `grpc.health.v1.Health/Check` call on a new plaintext HTTP/2 connection (h2c with
//! prior knowledge, as the kubelet's gRPC probe), with `service` = SERVICE (empty for the
//! whole server); success only when the answer is SERVING. The client is tonic-health's
//! generated one over a hyper HTTP/2 *client connection* made here: tonic's `channel`
//! (balancing, reconnection, buffering) is of no use for a single call and would bring its
//! transport, and with it server code, into a binary meant for minimal images.
//!
//! Each kind of failure has its own exit code ([`Failure::exit_code`]), so that a probe's
//! events tell "not serving" from "nothing listens" from "no health service there".

use std::cell::Cell;
use std::error::Error as StdError;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http::header::{self, HeaderName, HeaderValue};
use http::uri::{Authority, Uri};
use hyper::body::Incoming;
use hyper::client::conn::http2::SendRequest;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::time::Instant;
use tonic::metadata::{Ascii, MetadataKey, MetadataValue};
use tonic::{Code, Status};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::duration;
use crate::grpc_target::GrpcTarget;
use crate::header::Header;
use crate::http_get::{self, AbortOnDrop, GetError};

/// Exit code: the health service answered, but not SERVING.
pub(crate) const EXIT_NOT_SERVING: u8 = 1;
/// Exit code: the server answered NOT_FOUND (it does not know the service).
pub(crate) const EXIT_UNKNOWN_SERVICE: u8 = 3;
/// Exit code: no TCP connection (no such host, refused, reset or unreachable while
/// connecting).
pub(crate) const EXIT_CONNECT: u8 = 4;
/// Exit code: `--timeout` elapsed (or the server answered DEADLINE_EXCEEDED).
pub(crate) const EXIT_TIMEOUT: u8 = 5;
/// Exit code: any other gRPC or protocol error.
pub(crate) const EXIT_OTHER: u8 = 6;

/// Headers that gRPC or HTTP/2 sets or forbids: a `--header` with one of these names is a
/// usage error rather than a request that the server refuses or tonic silently drops.
/// (`grpc-*` names are refused as a prefix, `grpc-timeout` included: it is `--timeout`.)
const RESERVED: [HeaderName; 3] = [header::TE, header::CONTENT_TYPE, header::CONTENT_LENGTH];

/// Connection-specific headers, which HTTP/2 forbids (RFC 9113 section 8.2.2).
const CONNECTION_SPECIFIC: [&str; 5] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "upgrade",
];

/// Why a `--header` cannot be sent with a gRPC request: a usage error.
#[derive(Debug, thiserror::Error)]
pub(crate) enum MetadataError {
    /// `te`, `content-type`, `grpc-*`...
    #[error(
        "header {0:?} cannot be given for grpc:// URLs: gRPC sets it (use --timeout for the deadline)"
    )]
    Reserved(String),
    /// `connection`, `upgrade`...
    #[error("header {0:?} cannot be given for grpc:// URLs: HTTP/2 forbids it")]
    ConnectionSpecific(String),
    /// `*-bin`: binary metadata is base64 on the wire; not worth the code for a probe.
    #[error(
        "header {0:?} cannot be given: binary (-bin) metadata is not supported, only ASCII headers"
    )]
    Binary(String),
    /// A value tonic does not accept as ASCII metadata.
    #[error("invalid value for header {0:?}: gRPC metadata is printable ASCII")]
    Value(String),
    /// `Host` sets `:authority`, so it must be one.
    #[error("invalid value for header \"host\": not a HOST[:PORT] authority")]
    Authority,
}

/// The `--header` arguments as gRPC request metadata.
#[derive(Debug, Clone)]
pub(crate) struct Metadata {
    /// `user-agent`: `lameduck-probe/<version>` unless given; `None` when given empty.
    user_agent: Option<HeaderValue>,
    /// `Host: x` becomes the `:authority` (HTTP/2 has no `Host`), as in `probe http://`.
    authority: Option<Authority>,
    /// Every other header, in order, repeated ones included.
    entries: Vec<(MetadataKey<Ascii>, MetadataValue<Ascii>)>,
}

impl Metadata {
    /// Checks and converts the `--header` arguments.
    pub(crate) fn new(headers: &[Header]) -> Result<Self, MetadataError> {
        let mut user_agent = Some(
            HeaderValue::from_str(&format!("lameduck-probe/{}", env!("CARGO_PKG_VERSION")))
                .map_err(|_| MetadataError::Value("user-agent".to_owned()))?,
        );
        let mut authority = None;
        let mut entries = Vec::new();
        for Header { name, value } in headers {
            let shown = name.as_str().to_owned();
            if *name == header::USER_AGENT {
                // As for http://: the last one wins; an empty value removes it.
                user_agent = (!value.is_empty()).then(|| value.clone());
                continue;
            }
            if *name == header::HOST {
                let text = value.to_str().map_err(|_| MetadataError::Authority)?;
                authority = Some(text.parse().map_err(|_| MetadataError::Authority)?);
                continue;
            }
            if RESERVED.contains(name) || shown.starts_with("grpc-") {
                return Err(MetadataError::Reserved(shown));
            }
            if CONNECTION_SPECIFIC.contains(&shown.as_str()) {
                return Err(MetadataError::ConnectionSpecific(shown));
            }
            if shown.ends_with("-bin") {
                return Err(MetadataError::Binary(shown));
            }
            let key = MetadataKey::<Ascii>::from_bytes(name.as_str().as_bytes())
                .map_err(|_| MetadataError::Binary(shown.clone()))?;
            let value = MetadataValue::<Ascii>::try_from(value.as_bytes())
                .map_err(|_| MetadataError::Value(shown))?;
            entries.push((key, value));
        }
        Ok(Self {
            user_agent,
            authority,
            entries,
        })
    }
}

/// Why the probe failed; its [`Failure::exit_code`] tells the kind.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Failure {
    /// NOT_SERVING, UNKNOWN, SERVICE_UNKNOWN (or a status this client does not know).
    #[error("{url}: service {} is {status}", shown_service(.service))]
    NotServing {
        /// The URL probed.
        url: String,
        /// The service checked.
        service: String,
        /// The status's name.
        status: String,
    },
    /// gRPC status NOT_FOUND: the health service does not know the service.
    #[error("{url}: unknown service {}: the server answered NOT_FOUND{}", shown_service(.service), with_detail(.message))]
    UnknownService {
        /// The URL probed.
        url: String,
        /// The service checked.
        service: String,
        /// The status message.
        message: String,
    },
    /// Refused, no such host, unreachable...
    #[error("{url}: cannot connect: {source}")]
    Connect {
        /// The URL probed.
        url: String,
        /// Why, naming the address or host.
        source: GetError,
    },
    /// The connection, once made, was closed or reset before an answer. Not "cannot
    /// connect" (exit 4): an HTTP/1 server answering the HTTP/2 preface and closing ends
    /// either as a protocol error or as a reset, depending on timing, and must not get
    /// two different exit codes.
    #[error("{url}: connection to {addr} closed or reset before an answer: {detail}")]
    ConnectionLost {
        /// The URL probed.
        url: String,
        /// The address connected to.
        addr: String,
        /// The error and its causes, on one line.
        detail: String,
    },
    /// `--timeout` elapsed.
    #[error("{url}: timed out after {} {phase}", duration::display(*.after))]
    Timeout {
        /// The URL probed.
        url: String,
        /// The timeout.
        after: Duration,
        /// What was being waited for.
        phase: &'static str,
    },
    /// The server gave up at the deadline it was sent.
    #[error("{url}: the server answered DEADLINE_EXCEEDED (deadline sent: {}){}", duration::display(*.after), with_detail(.message))]
    ServerDeadline {
        /// The URL probed.
        url: String,
        /// The timeout.
        after: Duration,
        /// The status message.
        message: String,
    },
    /// Any other gRPC status, or an HTTP/2 or protocol error.
    #[error("{url}: gRPC error {code}{}", with_detail(.message))]
    Rpc {
        /// The URL probed.
        url: String,
        /// The status code's name (`UNIMPLEMENTED`).
        code: &'static str,
        /// The status message and its causes, on one line.
        message: String,
    },
    /// The HTTP/2 connection could not be set up.
    #[error("{url}: HTTP/2 handshake failed: {detail}")]
    Handshake {
        /// The URL probed.
        url: String,
        /// The error and its causes, on one line.
        detail: String,
    },
    /// The async runtime could not start (out of file descriptors, say), or a request could
    /// not be built.
    #[error("{0}")]
    Internal(String),
}

impl Failure {
    /// The exit code documented in `lameduck help probe`.
    pub(crate) fn exit_code(&self) -> u8 {
        match self {
            Self::NotServing { .. } => EXIT_NOT_SERVING,
            Self::UnknownService { .. } => EXIT_UNKNOWN_SERVICE,
            Self::Connect { .. } => EXIT_CONNECT,
            Self::Timeout { .. } | Self::ServerDeadline { .. } => EXIT_TIMEOUT,
            Self::ConnectionLost { .. }
            | Self::Rpc { .. }
            | Self::Handshake { .. }
            | Self::Internal(_) => EXIT_OTHER,
        }
    }
}

/// `"helloworld.Greeter"`, or `"" (the whole server)`.
fn shown_service(service: &str) -> String {
    if service.is_empty() {
        "\"\" (the whole server)".to_owned()
    } else {
        format!("{service:?}")
    }
}

/// `: message`, or nothing for an empty one.
fn with_detail(message: &str) -> String {
    if message.is_empty() {
        String::new()
    } else {
        format!(": {message}")
    }
}

/// The longest server-supplied text put in a message: it ends up in pod events.
const MAX_MESSAGE_CHARS: usize = 300;

/// Server-supplied text as one short printable line: control characters and line breaks
/// become spaces, and it is cut at [`MAX_MESSAGE_CHARS`].
fn one_line(text: &str) -> String {
    let mut line: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(MAX_MESSAGE_CHARS)
        .collect();
    if text.chars().nth(MAX_MESSAGE_CHARS).is_some() {
        line.push('…');
    }
    line.trim().to_owned()
}

/// Probes `target` once, blocking, on a fresh single-threaded runtime.
pub(crate) fn run(
    target: &GrpcTarget,
    metadata: &Metadata,
    timeout: Duration,
) -> Result<(), Failure> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .map_err(|err| Failure::Internal(format!("cannot start the I/O runtime: {err}")))?;
    let result = runtime.block_on(probe(target, metadata, timeout));
    // A timed-out name lookup is still running on a blocking thread; a plain drop would wait
    // for it, defeating the timeout.
    runtime.shutdown_background();
    result
}

/// The probe under one deadline covering resolving, connecting, the handshake and the call.
async fn probe(target: &GrpcTarget, metadata: &Metadata, timeout: Duration) -> Result<(), Failure> {
    let deadline = Instant::now() + timeout;
    // Where the time went, for the timeout's message.
    let phase = Cell::new("connecting");
    match tokio::time::timeout_at(deadline, check(target, metadata, deadline, &phase)).await {
        Ok(result) => result,
        Err(_) => Err(Failure::Timeout {
            url: target.to_string(),
            after: timeout,
            phase: phase.get(),
        }),
    }
}

/// Connects and calls `Health/Check`.
async fn check(
    target: &GrpcTarget,
    metadata: &Metadata,
    deadline: Instant,
    phase: &Cell<&'static str>,
) -> Result<(), Failure> {
    let url = target.to_string();
    let stream = http_get::connect(target.host(), target.port())
        .await
        .map_err(|source| Failure::Connect {
            url: url.clone(),
            source,
        })?;
    // The address connected to, for a reset's message (the host, should the OS not say).
    let peer = stream
        .peer_addr()
        .map_or_else(|_| target.authority().to_string(), |addr| addr.to_string());
    phase.set("in the HTTP/2 handshake");
    let (sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .map_err(|err| match lost_connection(&err) {
                Some(detail) => Failure::ConnectionLost {
                    url: url.clone(),
                    addr: peer.clone(),
                    detail,
                },
                None => Failure::Handshake {
                    url: url.clone(),
                    detail: one_line(&http_get::chain(&err)),
                },
            })?;
    // The connection task does the socket I/O; aborting it when we return closes the socket.
    let _connection = AbortOnDrop(tokio::spawn(connection));

    let authority = metadata
        .authority
        .clone()
        .unwrap_or_else(|| target.authority().clone());
    let origin = Uri::builder()
        .scheme("http")
        .authority(authority)
        .path_and_query("/")
        .build()
        .map_err(|err| Failure::Internal(format!("{url}: cannot build the request: {err}")))?;
    let mut client = HealthClient::with_origin(Http2(sender), origin);
    let mut request = tonic::Request::new(HealthCheckRequest {
        service: target.service().to_owned(),
    });
    // The deadline the server sees (`grpc-timeout`): what is left of --timeout.
    request.set_timeout(deadline.saturating_duration_since(Instant::now()));
    let map = request.metadata_mut();
    for (key, value) in &metadata.entries {
        map.append(key.clone(), value.clone());
    }
    if let Some(user_agent) = &metadata.user_agent {
        let value = MetadataValue::<Ascii>::try_from(user_agent.as_bytes())
            .map_err(|_| Failure::Internal("invalid user-agent".to_owned()))?;
        map.insert("user-agent", value);
    }
    phase.set("waiting for the Health/Check answer");
    let timeout = deadline.saturating_duration_since(Instant::now());
    match client.check(request).await {
        Ok(response) => judge(target, response.into_inner().status),
        Err(status) => Err(classify(target, &peer, &status, timeout)),
    }
}

/// SERVING is a success; any other answer of the health service is exit 1.
fn judge(target: &GrpcTarget, status: i32) -> Result<(), Failure> {
    let name = match ServingStatus::try_from(status) {
        Ok(ServingStatus::Serving) => return Ok(()),
        Ok(other) => other.as_str_name().to_owned(),
        Err(_) => format!("an unknown status ({status})"),
    };
    Err(Failure::NotServing {
        url: target.to_string(),
        service: target.service().to_owned(),
        status: name,
    })
}

/// The failure for an RPC that ended with `status` (from the server, or made by tonic from
/// an HTTP/2 or I/O error).
fn classify(target: &GrpcTarget, peer: &str, status: &Status, timeout: Duration) -> Failure {
    let url = target.to_string();
    let message = one_line(status.message());
    match status.code() {
        Code::NotFound => Failure::UnknownService {
            url,
            service: target.service().to_owned(),
            message,
        },
        Code::DeadlineExceeded => Failure::ServerDeadline {
            url,
            after: timeout,
            message,
        },
        code => {
            if let Some(detail) = lost_connection(status) {
                return Failure::ConnectionLost {
                    url,
                    addr: peer.to_owned(),
                    detail,
                };
            }
            // tonic's messages for transport errors ("h2 protocol error: ...") say more with
            // their causes.
            let detail = match StdError::source(status) {
                Some(source) => {
                    let causes = http_get::chain(source);
                    if message.contains(&causes) {
                        message
                    } else if message.is_empty() {
                        one_line(&causes)
                    } else {
                        one_line(&format!("{message}: {causes}"))
                    }
                }
                None => message,
            };
            Failure::Rpc {
                url,
                code: code_name(code),
                message: detail,
            }
        }
    }
}

/// The error chain on one line when it holds an I/O error saying that the peer closed,
/// reset or aborted the connection, for a clearer message than tonic's.
fn lost_connection(error: &(dyn StdError + 'static)) -> Option<String> {
    let mut source = Some(error);
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>()
            && matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::ConnectionAborted
                    | std::io::ErrorKind::BrokenPipe
            )
        {
            return Some(one_line(&io.to_string()));
        }
        source = err.source();
    }
    None
}

/// The canonical name of a gRPC status code, as in the gRPC documentation and
/// `grpc_health_probe`'s messages.
fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// hyper's HTTP/2 sender as the tower service tonic's generated client calls (tonic's
/// `GrpcService` is implemented for such services).
struct Http2(SendRequest<tonic::body::Body>);

impl tower_service::Service<http::Request<tonic::body::Body>> for Http2 {
    type Response = http::Response<Incoming>;
    type Error = hyper::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<tonic::body::Body>) -> Self::Future {
        Box::pin(self.0.send_request(request))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::header::parse as parse_header;

    fn target(input: &str) -> GrpcTarget {
        GrpcTarget::parse(input).unwrap_or_else(|err| panic!("{input}: {err}"))
    }

    const PEER: &str = "127.0.0.1:1";

    fn metadata(headers: &[&str]) -> Result<Metadata, MetadataError> {
        let headers: Vec<Header> = headers
            .iter()
            .map(|h| parse_header(h).unwrap_or_else(|e| panic!("{e}")))
            .collect();
        Metadata::new(&headers)
    }

    #[test]
    fn only_serving_is_a_success() {
        let t = target("grpc://127.0.0.1:50051");
        assert!(judge(&t, ServingStatus::Serving as i32).is_ok());
        for (status, name) in [
            (ServingStatus::NotServing, "NOT_SERVING"),
            (ServingStatus::Unknown, "UNKNOWN"),
            (ServingStatus::ServiceUnknown, "SERVICE_UNKNOWN"),
        ] {
            let failure = judge(&t, status as i32).err();
            assert_eq!(failure.as_ref().map(Failure::exit_code), Some(1));
            assert_eq!(
                failure.map(|f| f.to_string()),
                Some(format!(
                    "grpc://127.0.0.1:50051: service \"\" (the whole server) is {name}"
                ))
            );
        }
        let named = target("grpc://h:1/helloworld.Greeter");
        assert_eq!(
            judge(&named, 42).err().map(|f| f.to_string()),
            Some("grpc://h:1/helloworld.Greeter: service \"helloworld.Greeter\" is an unknown status (42)".to_owned())
        );
    }

    #[test]
    fn grpc_status_codes_map_to_exit_codes() {
        let t = target("grpc://h:1/svc");
        let second = Duration::from_secs(1);
        let code_of = |status: Status| classify(&t, PEER, &status, second).exit_code();
        assert_eq!(
            code_of(Status::not_found("unknown service")),
            EXIT_UNKNOWN_SERVICE
        );
        assert_eq!(code_of(Status::deadline_exceeded("late")), EXIT_TIMEOUT);
        for status in [
            Status::unimplemented(""),
            Status::unavailable("down"),
            Status::internal("h2 protocol error"),
            Status::unknown("?"),
            Status::permission_denied("no"),
        ] {
            assert_eq!(code_of(status), EXIT_OTHER);
        }
        let reset = Status::from_error(Box::new(std::io::Error::from(
            std::io::ErrorKind::ConnectionReset,
        )));
        // After the connection was made, a reset is not "cannot connect" (see
        // `Failure::ConnectionLost`).
        let failure = classify(&t, PEER, &reset, second);
        assert!(
            matches!(failure, Failure::ConnectionLost { .. }),
            "{failure}"
        );
        assert_eq!(failure.exit_code(), EXIT_OTHER);
    }

    #[test]
    fn messages_name_the_code_and_service_on_one_line() {
        let t = target("grpc://h:1/svc");
        let second = Duration::from_secs(1);
        let message = |status: Status| classify(&t, PEER, &status, second).to_string();
        assert_eq!(
            message(Status::unimplemented("")),
            "grpc://h:1/svc: gRPC error UNIMPLEMENTED"
        );
        assert_eq!(
            message(Status::unavailable("line one\nline two")),
            "grpc://h:1/svc: gRPC error UNAVAILABLE: line one line two"
        );
        assert_eq!(
            message(Status::not_found("unknown service svc")),
            "grpc://h:1/svc: unknown service \"svc\": the server answered NOT_FOUND: unknown service svc"
        );
        let long = "x".repeat(MAX_MESSAGE_CHARS + 10);
        assert!(message(Status::internal(long)).ends_with('…'));
    }

    #[test]
    fn headers_become_ascii_metadata() {
        let version = env!("CARGO_PKG_VERSION");
        let m = metadata(&["X-Token: abc", "x-token: def"]).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(m.entries.len(), 2);
        assert_eq!(
            m.user_agent.as_ref().map(HeaderValue::as_bytes),
            Some(format!("lameduck-probe/{version}").as_bytes())
        );
        assert!(m.authority.is_none());

        let m = metadata(&["User-Agent: custom/1", "Host: api.local:8443"])
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            m.user_agent.as_ref().map(HeaderValue::as_bytes),
            Some(&b"custom/1"[..])
        );
        assert_eq!(
            m.authority.as_ref().map(Authority::as_str),
            Some("api.local:8443")
        );
        assert!(m.entries.is_empty());

        let m = metadata(&["User-Agent:"]).unwrap_or_else(|e| panic!("{e}"));
        assert!(m.user_agent.is_none());
    }

    #[test]
    fn headers_grpc_sets_or_http2_forbids_are_refused() {
        for header in ["grpc-timeout: 1S", "Content-Type: x", "TE: trailers"] {
            assert!(
                matches!(metadata(&[header]), Err(MetadataError::Reserved(_))),
                "{header}"
            );
        }
        assert!(matches!(
            metadata(&["Connection: close"]),
            Err(MetadataError::ConnectionSpecific(_))
        ));
        assert!(matches!(
            metadata(&["x-blob-bin: AAEC"]),
            Err(MetadataError::Binary(_))
        ));
        assert!(matches!(
            metadata(&["Host: a b"]),
            Err(MetadataError::Authority)
        ));
        assert!(matches!(
            metadata(&["Host:"]),
            Err(MetadataError::Authority)
        ));
    }
}
