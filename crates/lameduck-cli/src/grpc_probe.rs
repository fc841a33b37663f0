//! `lameduck probe grpc://HOST:PORT[/SERVICE]`: what `grpc_health_probe` does, for images
//! that predate the kubelet's native gRPC probe.
//!
//! One `grpc.health.v1.Health/Check` call on a new plaintext HTTP/2 connection (h2c with
//! prior knowledge, as the kubelet's gRPC probe), with `service` = SERVICE (empty for the
//! whole server); success only when the answer is SERVING. The call is made here on a hyper
//! HTTP/2 *client connection*: the request (`HealthCheckRequest`, one string field) and the
//! answer (`HealthCheckResponse`, one enum field) are encoded and decoded by hand, and the
//! gRPC status read from the trailers as tonic's client does, so the binary, meant for
//! minimal images, carries neither tonic nor prost (issue 18).
//!
//! Each kind of failure has its own exit code ([`Failure::exit_code`]), so that a probe's
//! events tell "not serving" from "nothing listens" from "no health service there".

use std::cell::Cell;
use std::error::Error as StdError;
use std::fmt;
use std::time::Duration;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, Uri};
use http::{Method, StatusCode, Version};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::time::Instant;

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

/// The method called: `grpc.health.v1.Health/Check`.
const CHECK_PATH: &str = "/grpc.health.v1.Health/Check";

/// The largest answer read (tonic's default limit for a decoded message): a health answer
/// is a few bytes.
const MAX_RESPONSE_BYTES: usize = 4 * 1024 * 1024;

/// Headers that gRPC or HTTP/2 sets or forbids: a `--header` with one of these names is a
/// usage error rather than a request that the server refuses.
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
    /// A value that cannot be ASCII metadata.
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
    entries: Vec<(HeaderName, HeaderValue)>,
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
            // ASCII metadata is any valid header value (as tonic's `MetadataValue<Ascii>`).
            entries.push((name.clone(), value.clone()));
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
    let (mut sender, connection) =
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
    // The deadline the server sees (`grpc-timeout`): what is left of --timeout.
    let request = health_request(
        authority,
        target.service(),
        metadata,
        deadline.saturating_duration_since(Instant::now()),
    )
    .map_err(|err| Failure::Internal(format!("{url}: cannot build the request: {err}")))?;
    phase.set("waiting for the Health/Check answer");
    let timeout = deadline.saturating_duration_since(Instant::now());
    let answer = async {
        std::future::poll_fn(|cx| sender.poll_ready(cx))
            .await
            .map_err(Status::from_hyper)?;
        let response = sender
            .send_request(request)
            .await
            .map_err(Status::from_hyper)?;
        read_answer(response).await
    };
    match answer.await {
        Ok(status) => judge(target, status),
        Err(status) => Err(classify(target, &peer, &status, timeout)),
    }
}

/// The `Health/Check` request: `HealthCheckRequest { service }` in one uncompressed gRPC
/// message, with the headers tonic's client sends and the `--header` metadata.
fn health_request(
    authority: Authority,
    service: &str,
    metadata: &Metadata,
    timeout: Duration,
) -> Result<http::Request<Full<Bytes>>, http::Error> {
    let uri = Uri::builder()
        .scheme("http")
        .authority(authority)
        .path_and_query(CHECK_PATH)
        .build()?;
    let mut request = http::Request::builder()
        .method(Method::POST)
        .uri(uri)
        .version(Version::HTTP_2)
        .body(Full::new(Bytes::from(encode_request(service))))?;
    let headers = request.headers_mut();
    for (name, value) in &metadata.entries {
        headers.append(name.clone(), value.clone());
    }
    if let Some(user_agent) = &metadata.user_agent {
        headers.insert(header::USER_AGENT, user_agent.clone());
    }
    headers.insert(header::TE, HeaderValue::from_static("trailers"));
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    if let Ok(value) = HeaderValue::from_str(&grpc_timeout(timeout)) {
        headers.insert(HeaderName::from_static("grpc-timeout"), value);
    }
    Ok(request)
}

/// The gRPC message of `HealthCheckRequest { service }`: the 5-byte prefix (not
/// compressed, length) and the protobuf encoding, field 1 (`string service`) left out when
/// empty, as proto3 does.
fn encode_request(service: &str) -> Vec<u8> {
    let mut message = Vec::with_capacity(service.len() + 6);
    if !service.is_empty() {
        message.push(0x0a); // field 1, length-delimited
        put_varint(&mut message, service.len() as u64);
        message.extend_from_slice(service.as_bytes());
    }
    let mut framed = Vec::with_capacity(message.len() + 5);
    framed.push(0);
    framed.extend_from_slice(
        &u32::try_from(message.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes(),
    );
    framed.extend_from_slice(&message);
    framed
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// A varint at the start of `input`: its value and the rest of `input`.
fn take_varint(input: &[u8]) -> Option<(u64, &[u8])> {
    let mut value = 0_u64;
    for (index, byte) in input.iter().enumerate().take(10) {
        value |= u64::from(byte & 0x7f) << (7 * index);
        if byte & 0x80 == 0 {
            return Some((value, &input[index + 1..]));
        }
    }
    None
}

/// `status` (field 1, an enum) of a protobuf `HealthCheckResponse`; 0 (UNKNOWN) when
/// absent, the last one when repeated, other fields skipped (as prost decodes it).
fn decode_response(mut input: &[u8]) -> Option<i32> {
    let mut status = 0;
    while !input.is_empty() {
        let (key, rest) = take_varint(input)?;
        let (field, wire_type) = (key >> 3, key & 7);
        if field == 0 {
            return None;
        }
        input = match wire_type {
            0 => {
                let (value, rest) = take_varint(rest)?;
                if field == 1 {
                    // An enum is an int32 on the wire: the low 32 bits.
                    status = value as i32;
                }
                rest
            }
            1 => rest.get(8..)?,
            2 => {
                let (len, rest) = take_varint(rest)?;
                rest.get(usize::try_from(len).ok()?..)?
            }
            5 => rest.get(4..)?,
            _ => return None,
        };
    }
    Some(status)
}

/// `grpc-timeout` as tonic writes it: the most precise unit that keeps the value within
/// the 8 digits the gRPC spec allows.
fn grpc_timeout(timeout: Duration) -> String {
    const MAX: u128 = 99_999_999;
    let secs = u128::from(timeout.as_secs());
    [
        (timeout.as_nanos(), 'n'),
        (timeout.as_micros(), 'u'),
        (timeout.as_millis(), 'm'),
        (secs, 'S'),
        (secs / 60, 'M'),
        (secs / 3600, 'H'),
    ]
    .into_iter()
    .find(|(value, _)| *value <= MAX)
    .map_or_else(
        || format!("{MAX}H"),
        |(value, unit)| format!("{value}{unit}"),
    )
}

/// The answer's serving status, or the call's failure, read as tonic's unary client reads
/// it: a `grpc-status` in the headers (trailers-only) ends the call; else the message, then
/// the trailers' `grpc-status` (without one, a code inferred from the HTTP status).
async fn read_answer(response: http::Response<Incoming>) -> Result<i32, Status> {
    let (parts, mut body) = response.into_parts();
    // Trailers-only: a failed call ends here; an OK one expects no further status.
    let expect_trailers = match Status::from_headers(&parts.headers) {
        Some(status) if status.code != Code::Ok => return Err(status),
        Some(_) => false,
        None => true,
    };
    let mut data = Vec::new();
    let mut trailers = None;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(Status::from_hyper)?;
        match frame.into_data() {
            Ok(chunk) => {
                if data.len() + chunk.len() > MAX_RESPONSE_BYTES + 5 {
                    return Err(Status::new(
                        Code::OutOfRange,
                        format!(
                            "Error, decoded message length too large: over {MAX_RESPONSE_BYTES} bytes"
                        ),
                    ));
                }
                data.extend_from_slice(&chunk);
            }
            Err(frame) => {
                if let Ok(map) = frame.into_trailers() {
                    trailers = Some(map);
                }
            }
        }
    }
    let message = first_message(&data)?;
    if expect_trailers {
        match trailers.as_ref().and_then(Status::from_headers) {
            Some(status) if status.code != Code::Ok => return Err(status),
            Some(_) => {}
            None => return Err(Status::from_http(parts.status)),
        }
    }
    let message =
        message.ok_or_else(|| Status::new(Code::Internal, "Missing response message."))?;
    decode_response(message).ok_or_else(|| {
        Status::new(
            Code::Internal,
            "failed to decode Protobuf message: HealthCheckResponse: invalid encoding",
        )
    })
}

/// The first gRPC message of a response body, if there is one.
fn first_message(data: &[u8]) -> Result<Option<&[u8]>, Status> {
    if data.is_empty() {
        return Ok(None);
    }
    let protocol =
        |message: &str| Status::new(Code::Internal, format!("protocol error: {message}"));
    let [flag, a, b, c, d, rest @ ..] = data else {
        return Err(protocol("received a truncated message"));
    };
    match flag {
        0 => {}
        1 => {
            return Err(protocol(
                "received message with compressed-flag but no grpc-encoding was specified",
            ));
        }
        other => {
            return Err(protocol(&format!(
                "received message with invalid compression flag: {other} (valid flags are 0 and 1)"
            )));
        }
    }
    let len = u32::from_be_bytes([*a, *b, *c, *d]) as usize;
    rest.get(..len)
        .map(Some)
        .ok_or_else(|| protocol("received a truncated message"))
}

/// gRPC status codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Code {
    Ok,
    Cancelled,
    Unknown,
    InvalidArgument,
    DeadlineExceeded,
    NotFound,
    AlreadyExists,
    PermissionDenied,
    ResourceExhausted,
    FailedPrecondition,
    Aborted,
    OutOfRange,
    Unimplemented,
    Internal,
    Unavailable,
    DataLoss,
    Unauthenticated,
}

impl Code {
    const ALL: [Self; 17] = [
        Self::Ok,
        Self::Cancelled,
        Self::Unknown,
        Self::InvalidArgument,
        Self::DeadlineExceeded,
        Self::NotFound,
        Self::AlreadyExists,
        Self::PermissionDenied,
        Self::ResourceExhausted,
        Self::FailedPrecondition,
        Self::Aborted,
        Self::OutOfRange,
        Self::Unimplemented,
        Self::Internal,
        Self::Unavailable,
        Self::DataLoss,
        Self::Unauthenticated,
    ];

    /// A `grpc-status` value: `0` to `16`, written without leading zeros; anything else is
    /// UNKNOWN (as in tonic).
    fn from_bytes(bytes: &[u8]) -> Self {
        let index = match bytes {
            [digit @ b'0'..=b'9'] => digit - b'0',
            [b'1', digit @ b'0'..=b'6'] => 10 + (digit - b'0'),
            _ => return Self::Unknown,
        };
        Self::ALL[usize::from(index)]
    }
}

/// How a call ended other than with an answer: a status from the server, or one made here
/// from the HTTP status or an HTTP/2 or I/O error (`source`), as tonic makes them.
#[derive(Debug)]
struct Status {
    code: Code,
    message: String,
    source: Option<Box<dyn StdError + Send + Sync>>,
}

impl Status {
    fn new(code: Code, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            source: None,
        }
    }

    /// With an I/O error of `kind` as its source.
    #[cfg(test)]
    fn with_io_source(mut self, kind: std::io::ErrorKind) -> Self {
        self.source = Some(Box::new(std::io::Error::from(kind)));
        self
    }

    /// `grpc-status` and `grpc-message` (percent-decoded), if `headers` has a status.
    fn from_headers(headers: &HeaderMap) -> Option<Self> {
        let code = Code::from_bytes(headers.get("grpc-status")?.as_bytes());
        let message = match headers.get("grpc-message") {
            Some(value) => match String::from_utf8(percent_decode(value.as_bytes())) {
                Ok(message) => message,
                Err(err) => format!(
                    "Error deserializing status message header: {}",
                    err.utf8_error()
                ),
            },
            None => String::new(),
        };
        Some(Self::new(code, message))
    }

    /// No `grpc-status` at the end of the answer: a code from the HTTP status
    /// (gRPC's http-grpc-status-mapping).
    fn from_http(status: StatusCode) -> Self {
        let code = match status {
            StatusCode::BAD_REQUEST => Code::Internal,
            StatusCode::UNAUTHORIZED => Code::Unauthenticated,
            StatusCode::FORBIDDEN => Code::PermissionDenied,
            StatusCode::NOT_FOUND => Code::Unimplemented,
            StatusCode::TOO_MANY_REQUESTS
            | StatusCode::BAD_GATEWAY
            | StatusCode::SERVICE_UNAVAILABLE
            | StatusCode::GATEWAY_TIMEOUT => Code::Unavailable,
            StatusCode::OK => {
                return Self::new(
                    Code::Unknown,
                    "protocol error: missing grpc-status trailer, stream was terminated without \
                     a final status (possible truncation by a proxy or load balancer)",
                );
            }
            _ => Code::Unknown,
        };
        Self::new(
            code,
            format!(
                "grpc-status header missing, mapped from HTTP status code {}",
                status.as_u16()
            ),
        )
    }

    /// An HTTP/2 or I/O error of the call, coded as tonic's client codes it.
    fn from_hyper(error: hyper::Error) -> Self {
        let code = if error.is_timeout() {
            Code::Unavailable
        } else if error.is_canceled() {
            Code::Cancelled
        } else {
            Code::Unknown
        };
        Self {
            code,
            message: error.to_string(),
            source: Some(Box::new(error)),
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", code_name(self.code), self.message)
    }
}

impl StdError for Status {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_deref()
            .map(|err| err as &(dyn StdError + 'static))
    }
}

/// `%XX` escapes decoded (`grpc-message` is percent-encoded); a bad escape stays as it is.
fn percent_decode(input: &[u8]) -> Vec<u8> {
    let hex = |byte: u8| char::from(byte).to_digit(16);
    let mut out = Vec::with_capacity(input.len());
    let mut index = 0;
    while index < input.len() {
        if input[index] == b'%'
            && let (Some(high), Some(low)) = (
                input.get(index + 1).copied().and_then(hex),
                input.get(index + 2).copied().and_then(hex),
            )
        {
            out.push((high * 16 + low) as u8);
            index += 3;
            continue;
        }
        out.push(input[index]);
        index += 1;
    }
    out
}

/// The health service's `ServingStatus` names.
fn serving_status_name(status: i32) -> Option<&'static str> {
    match status {
        0 => Some("UNKNOWN"),
        1 => Some("SERVING"),
        2 => Some("NOT_SERVING"),
        3 => Some("SERVICE_UNKNOWN"),
        _ => None,
    }
}

/// `ServingStatus::SERVING`.
const SERVING: i32 = 1;

/// SERVING is a success; any other answer of the health service is exit 1.
fn judge(target: &GrpcTarget, status: i32) -> Result<(), Failure> {
    if status == SERVING {
        return Ok(());
    }
    let name = match serving_status_name(status) {
        Some(name) => name.to_owned(),
        None => format!("an unknown status ({status})"),
    };
    Err(Failure::NotServing {
        url: target.to_string(),
        service: target.service().to_owned(),
        status: name,
    })
}

/// The failure for an RPC that ended with `status` (from the server, or made here from an
/// HTTP/2 or I/O error).
fn classify(target: &GrpcTarget, peer: &str, status: &Status, timeout: Duration) -> Failure {
    let url = target.to_string();
    let message = one_line(&status.message);
    match status.code {
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
            // The messages of transport errors ("connection error") say more with their
            // causes.
            let detail = match StdError::source(status) {
                Some(source) => {
                    let causes = http_get::chain(source);
                    if message.contains(&causes) {
                        message
                    } else if message.is_empty() || causes.starts_with(&message) {
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
/// reset or aborted the connection, for a clearer message than hyper's.
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
        assert!(judge(&t, SERVING).is_ok());
        for (status, name) in [(2, "NOT_SERVING"), (0, "UNKNOWN"), (3, "SERVICE_UNKNOWN")] {
            let failure = judge(&t, status).err();
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
            code_of(Status::new(Code::NotFound, "unknown service")),
            EXIT_UNKNOWN_SERVICE
        );
        assert_eq!(
            code_of(Status::new(Code::DeadlineExceeded, "late")),
            EXIT_TIMEOUT
        );
        for status in [
            Status::new(Code::Unimplemented, ""),
            Status::new(Code::Unavailable, "down"),
            Status::new(Code::Internal, "h2 protocol error"),
            Status::new(Code::Unknown, "?"),
            Status::new(Code::PermissionDenied, "no"),
        ] {
            assert_eq!(code_of(status), EXIT_OTHER);
        }
        let reset = Status::new(Code::Unknown, "connection error")
            .with_io_source(std::io::ErrorKind::ConnectionReset);
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
            message(Status::new(Code::Unimplemented, "")),
            "grpc://h:1/svc: gRPC error UNIMPLEMENTED"
        );
        assert_eq!(
            message(Status::new(Code::Unavailable, "line one\nline two")),
            "grpc://h:1/svc: gRPC error UNAVAILABLE: line one line two"
        );
        assert_eq!(
            message(Status::new(Code::NotFound, "unknown service svc")),
            "grpc://h:1/svc: unknown service \"svc\": the server answered NOT_FOUND: unknown service svc"
        );
        let long = "x".repeat(MAX_MESSAGE_CHARS + 10);
        assert!(message(Status::new(Code::Internal, long)).ends_with('…'));
    }

    #[test]
    fn the_request_is_a_framed_health_check_request() {
        assert_eq!(encode_request(""), [0, 0, 0, 0, 0]);
        assert_eq!(
            encode_request("a.B"),
            [0, 0, 0, 0, 5, 0x0a, 3, b'a', b'.', b'B']
        );
        let long = "s".repeat(200);
        let framed = encode_request(&long);
        assert_eq!(&framed[..8], &[0, 0, 0, 0, 203, 0x0a, 0xc8, 0x01]);
        assert_eq!(framed.len(), 5 + 203);
    }

    #[test]
    fn the_answer_decodes_as_prost_would() {
        assert_eq!(decode_response(&[]), Some(0));
        assert_eq!(decode_response(&[0x08, 1]), Some(1));
        assert_eq!(decode_response(&[0x08, 2]), Some(2));
        // Unknown fields skipped; the last `status` wins.
        assert_eq!(
            decode_response(&[0x12, 2, b'h', b'i', 0x08, 1, 0x1d, 0, 0, 0, 0, 0x08, 3]),
            Some(3)
        );
        assert_eq!(decode_response(&[0x08]), None);
        assert_eq!(decode_response(&[0x12, 5, 1]), None);
        assert_eq!(first_message(&[]).ok(), Some(None));
        assert_eq!(
            first_message(&[0, 0, 0, 0, 2, 0x08, 1]).ok(),
            Some(Some(&[0x08_u8, 1][..]))
        );
        assert!(first_message(&[1, 0, 0, 0, 0]).is_err());
        assert!(first_message(&[0, 0, 0, 0, 9, 0x08]).is_err());
    }

    #[test]
    fn grpc_timeout_and_message_as_tonic_writes_and_reads_them() {
        assert_eq!(grpc_timeout(Duration::from_millis(500)), "500000u");
        assert_eq!(grpc_timeout(Duration::from_millis(99)), "99000000n");
        assert_eq!(grpc_timeout(Duration::from_secs(3600)), "3600000m");
        assert_eq!(grpc_timeout(Duration::from_secs(200_000)), "200000S");
        assert_eq!(percent_decode(b"not%20found%3A x%zz%"), b"not found: x%zz%");
        let mut headers = HeaderMap::new();
        headers.insert("grpc-status", HeaderValue::from_static("5"));
        headers.insert("grpc-message", HeaderValue::from_static("no%20such"));
        let status = Status::from_headers(&headers).map(|s| (s.code, s.message));
        assert_eq!(status, Some((Code::NotFound, "no such".to_owned())));
        headers.insert("grpc-status", HeaderValue::from_static("99"));
        assert_eq!(
            Status::from_headers(&headers).map(|s| s.code),
            Some(Code::Unknown)
        );
        assert_eq!(
            Status::from_http(StatusCode::NOT_FOUND).code,
            Code::Unimplemented
        );
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
