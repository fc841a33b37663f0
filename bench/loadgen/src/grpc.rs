//! gRPC load: unary `helloworld.Greeter/SayHello` calls (`examples/greeter`'s protocol)
//! from clients that each have their own tonic [`Channel`], classified into the same
//! [`Class`]es as HTTP load and reported in the same [`LoadReport`] (per-second timeline,
//! latency, sample errors), with [`GrpcDetail`] for what only gRPC has.
//!
//! Each client's channel is made with [`Endpoint::connect_lazy`], as a real client's is:
//! it connects on the first call, and after the server's GOAWAY (or a closed connection)
//! it reconnects on the next call. A call on a channel whose connect fails fails at once.
//! tonic does not retry, so every failed call is the application's failure.
//!
//! # Classes of an RPC
//!
//! | class | gRPC meaning |
//! |---|---|
//! | `ok` | a reply (status OK) |
//! | `refused` | unavailable before it was sent: the connect failed (`tonic::ConnectError`, a refused TCP connect), or the channel's connection closed before hyper took the call (hyper's `canceled`) |
//! | `no_response` | sent, no reply: the stream was reset, the connection closed under it, or the server's GOAWAY (or a `REFUSED_STREAM` reset) ended it; the last also counted in [`GrpcDetail::no_response_goaway`] |
//! | `status_5xx` | the server answered with a status other than OK (per code in [`GrpcDetail::status_codes`]) |
//! | `timeout` | no reply within the request timeout (the call is then cancelled) |
//!
//! `not_sent` does not occur: tonic gives no call back for a resend. A status that carries
//! a transport error as its source was made by the client; one without a source came
//! from the server.

use std::collections::BTreeMap;
use std::error::Error as StdError;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use greeter::proto::{GreeterClient, HelloRequest};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};

use lameduck_load::{Class, LoadReport, Pacer, Recorder, next_slot};

/// What a gRPC load run does.
#[derive(Debug, Clone)]
pub struct GrpcLoadConfig {
    /// The server, `http://host:port`.
    pub uri: String,
    /// Clients, each with its own channel (one HTTP/2 connection), one call at a time.
    pub clients: usize,
    /// Aggregate calls/s over all clients; 0 means as fast as possible.
    pub rate: u64,
    /// How long to start calls; `None`: until the `stop` future completes.
    pub duration: Option<Duration>,
    /// From starting a call to its reply; past it the call is cancelled, `timeout`.
    pub request_timeout: Duration,
    /// The channel's TCP connect timeout; past it the call is `refused`.
    pub connect_timeout: Duration,
    /// Pause after a refused call before the client's next slot.
    pub reconnect_backoff: Duration,
}

impl GrpcLoadConfig {
    /// 32 clients, 2000 calls/s, 10 s, timeouts as [`LoadConfig`](crate::LoadConfig)'s.
    pub fn new(uri: impl Into<String>) -> GrpcLoadConfig {
        GrpcLoadConfig {
            uri: uri.into(),
            clients: 32,
            rate: 2000,
            duration: Some(Duration::from_secs(10)),
            request_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(2),
            reconnect_backoff: Duration::from_millis(10),
        }
    }
}

/// What gRPC adds to the classes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrpcDetail {
    /// Of `refused`: the connect failed (refused, or not within the connect timeout).
    pub refused_connect: u64,
    /// Of `refused`: the channel's connection had closed before hyper took the call
    /// (hyper's `canceled`): not sent.
    pub refused_unsent: u64,
    /// Of `no_response`: ended by the server's GOAWAY (an h2 GOAWAY error: the stream was
    /// above the GOAWAY's last stream id, or could not be opened once the GOAWAY had
    /// arrived) or by a `REFUSED_STREAM` reset. By HTTP/2's rules the server did not
    /// process these; a client with gRPC's transparent retry would resend them.
    pub no_response_goaway: u64,
    /// Of `status_5xx`: the server's status codes (`Unavailable`, ...) and their counts.
    pub status_codes: BTreeMap<String, u64>,
}

impl GrpcDetail {
    fn merge(&mut self, other: GrpcDetail) {
        self.refused_connect += other.refused_connect;
        self.refused_unsent += other.refused_unsent;
        self.no_response_goaway += other.no_response_goaway;
        for (code, n) in other.status_codes {
            *self.status_codes.entry(code).or_default() += n;
        }
    }
}

/// The result of [`run_grpc`]: the classes, latency, timeline and errors as for HTTP
/// (`method` is the RPC, `connections` the clients), plus [`GrpcDetail`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GrpcReport {
    /// Classes, latency, timeline, sample errors.
    #[serde(flatten)]
    pub load: LoadReport,
    /// The gRPC detail within the classes.
    #[serde(flatten)]
    pub detail: GrpcDetail,
}

impl GrpcReport {
    /// Failed calls: `status_5xx + refused + no_response + timeout`.
    pub fn failures(&self) -> u64 {
        self.load.failures()
    }
}

/// How a failed call is classified (from its [`tonic::Status`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Failure {
    /// The connect failed.
    Connect,
    /// hyper gave the call back: its connection closed before the call was taken.
    Unsent,
    /// The server's GOAWAY or a REFUSED_STREAM reset ended the stream.
    GoAway,
    /// Sent, then the stream or connection failed.
    NoResponse,
    /// The server answered with this status.
    Status(tonic::Code),
}

impl Failure {
    fn class(self) -> Class {
        match self {
            Failure::Connect | Failure::Unsent => Class::Refused,
            Failure::GoAway | Failure::NoResponse => Class::NoResponse,
            Failure::Status(_) => Class::Status5xx,
        }
    }
}

/// Classifies a failed call by the transport error in its status's source chain; a
/// status without a source is the server's answer.
pub(crate) fn classify(status: &tonic::Status) -> Failure {
    let mut source = StdError::source(status);
    if source.is_none() {
        return Failure::Status(status.code());
    }
    while let Some(e) = source {
        if e.is::<tonic::ConnectError>() {
            return Failure::Connect;
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>()
            && io.kind() == std::io::ErrorKind::ConnectionRefused
        {
            return Failure::Connect;
        }
        if let Some(hyper) = e.downcast_ref::<hyper::Error>()
            && hyper.is_canceled()
        {
            return Failure::Unsent;
        }
        if let Some(h2) = e.downcast_ref::<h2::Error>() {
            let refused = h2.is_go_away() && h2.is_remote()
                || h2.reason() == Some(h2::Reason::REFUSED_STREAM);
            return if refused {
                Failure::GoAway
            } else {
                Failure::NoResponse
            };
        }
        source = e.source();
    }
    Failure::NoResponse
}

/// The status and its source chain, for the sample errors.
fn describe(status: &tonic::Status) -> String {
    let mut out = format!("{:?}: {}", status.code(), status.message());
    let mut source = StdError::source(status);
    let mut last = String::new();
    while let Some(e) = source {
        let text = e.to_string();
        // tonic's messages often repeat their source's.
        if text != last && !out.ends_with(&text) {
            out.push_str(" / ");
            out.push_str(&text);
        }
        last = text;
        source = e.source();
    }
    out
}

struct Shared {
    config: GrpcLoadConfig,
    start: Instant,
    deadline: Option<Instant>,
    stop: CancellationToken,
    pacer: Option<Pacer>,
}

impl Shared {
    /// Waits for the next send time; false once the run is over (as the HTTP load's).
    async fn next_slot(&self) -> bool {
        next_slot(&self.stop, self.pacer.as_ref(), self.deadline).await
    }
}

/// Runs gRPC load as `config` says until its duration has passed or `stop` completes,
/// then waits for the calls still in flight (each bounded by the request timeout) and
/// reports. Must be called within a multi-threaded Tokio runtime. Fails only if the URI
/// is not one tonic accepts.
pub async fn run_grpc(
    config: GrpcLoadConfig,
    stop: impl Future<Output = ()>,
) -> Result<GrpcReport, tonic::transport::Error> {
    let endpoint = Endpoint::from_shared(config.uri.clone())?
        .connect_timeout(config.connect_timeout)
        .tcp_nodelay(true);
    let start = Instant::now();
    let token = CancellationToken::new();
    let _stop_workers_on_drop = token.clone().drop_guard();
    let shared = Arc::new(Shared {
        start,
        deadline: config.duration.map(|d| start + d),
        stop: token.clone(),
        pacer: Pacer::new(start, config.rate),
        config,
    });
    let clients = shared.config.clients.max(1);
    let workers: Vec<_> = (0..clients)
        .map(|_| tokio::spawn(worker(Arc::clone(&shared), endpoint.connect_lazy())))
        .collect();
    let duration = lameduck_load::until(shared.deadline);
    tokio::select! {
        () = stop => {}
        () = duration => {}
    }
    token.cancel();

    let mut all = Recorder::default();
    let mut detail = GrpcDetail::default();
    let mut panics = Vec::new();
    for worker in workers {
        match worker.await {
            Ok((recorder, d)) => {
                all.merge(recorder);
                detail.merge(d);
            }
            Err(e) => panics.push(format!("worker: {e}")),
        }
    }
    let mut load = LoadReport {
        url: shared.config.uri.clone(),
        method: "helloworld.Greeter/SayHello".to_owned(),
        connections: clients,
        rate: shared.config.rate,
        elapsed_ms: u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX),
        ..LoadReport::default()
    };
    all.finish(&mut load);
    load.errors.extend(panics);
    Ok(GrpcReport { load, detail })
}

/// One `SayHello` call on a new channel, within `timeout`: whether a server answers it
/// (a readiness check). The error says why not.
pub async fn say_hello_once(uri: &str, timeout: Duration) -> Result<(), String> {
    let endpoint = Endpoint::from_shared(uri.to_owned())
        .map_err(|e| format!("{uri}: {e}"))?
        .connect_timeout(timeout);
    let call = async {
        let mut client = GreeterClient::new(endpoint.connect_lazy());
        client
            .say_hello(HelloRequest {
                name: "ready?".to_owned(),
            })
            .await
    };
    match tokio::time::timeout(timeout, call).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(status)) => Err(describe(&status)),
        Err(_) => Err(format!("no reply within {timeout:?}")),
    }
}

/// One client: its own channel, one call per slot.
async fn worker(shared: Arc<Shared>, channel: Channel) -> (Recorder, GrpcDetail) {
    let mut client = GreeterClient::new(channel);
    let mut recorder = Recorder::default();
    let mut detail = GrpcDetail::default();
    let timeout = shared.config.request_timeout;
    while shared.next_slot().await {
        let attempt = shared.start.elapsed();
        let sent = Instant::now();
        let call = client.say_hello(HelloRequest {
            name: "bench".to_owned(),
        });
        match tokio::time::timeout(timeout, call).await {
            Ok(Ok(_reply)) => recorder.record(attempt, Class::Ok, Some(sent.elapsed())),
            Err(_) => {
                recorder.record(attempt, Class::Timeout, None);
                recorder.error(
                    Class::Timeout,
                    format!("no reply within {timeout:?} (cancelled)"),
                );
            }
            Ok(Err(status)) => {
                let failure = classify(&status);
                let class = failure.class();
                let latency = matches!(failure, Failure::Status(_)).then(|| sent.elapsed());
                recorder.record(attempt, class, latency);
                recorder.error(class, describe(&status));
                match failure {
                    Failure::Connect => detail.refused_connect += 1,
                    Failure::Unsent => detail.refused_unsent += 1,
                    Failure::GoAway => detail.no_response_goaway += 1,
                    Failure::NoResponse => {}
                    Failure::Status(code) => {
                        *detail.status_codes.entry(format!("{code:?}")).or_default() += 1;
                    }
                }
                if class == Class::Refused {
                    tokio::select! {
                        () = tokio::time::sleep(shared.config.reconnect_backoff) => {}
                        () = shared.stop.cancelled() => {}
                    }
                }
            }
        }
    }
    (recorder, detail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_classified_by_their_source() {
        // The server's answer: no source.
        let server = tonic::Status::unavailable("shutting down");
        assert_eq!(classify(&server), Failure::Status(tonic::Code::Unavailable));
        assert_eq!(classify(&server).class(), Class::Status5xx);
        // A refused connect, as tonic's channel reports it.
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let connect = tonic::Status::from_error(Box::new(tonic::ConnectError(Box::new(refused))));
        assert_eq!(classify(&connect), Failure::Connect);
        assert_eq!(classify(&connect).class(), Class::Refused);
        // A stream reset by the peer, and one refused.
        let reset = tonic::Status::from_error(Box::new(h2::Error::from(h2::Reason::CANCEL)));
        assert_eq!(classify(&reset).class(), Class::NoResponse);
        let refused_stream =
            tonic::Status::from_error(Box::new(h2::Error::from(h2::Reason::REFUSED_STREAM)));
        assert_eq!(classify(&refused_stream), Failure::GoAway);
        // An unknown client-side error: counted as sent.
        let other = tonic::Status::from_error(Box::new(std::io::Error::other("broken pipe")));
        assert_eq!(classify(&other), Failure::NoResponse);
    }
}
