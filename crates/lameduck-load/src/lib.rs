//! Steady keep-alive HTTP/1.1 load that classifies every request across a server shutdown.
//!
//! "How many requests failed while the server stopped, and how?": totals from wrk or hey
//! cannot say whether a request was refused at connect, written and then lost, or answered
//! with a 5xx. This crate sends steady keep-alive HTTP/1.1 load with hyper's low-level
//! connection API ([`hyper::client::conn::http1`] over a [`tokio::net::TcpStream`], not the
//! pooled client) so that it knows exactly when a connection is new, whether a request was
//! written, and how each exchange ended.
//!
//! It is shared by the `lameduck simulate` command (load at a service while the kubelet's
//! termination sequence plays) and lameduck's benchmarks (`bench/loadgen`'s `loadgen`
//! binary, `bench/runner`, the platform tests). It needs only hyper's HTTP/1 client and
//! Tokio, so it stays small enough for the static `lameduck` binary.
//!
//! - [`run`] drives `connections` workers, each keeping one keep-alive connection, at a
//!   steady aggregate `rate`, and returns a [`LoadReport`]: totals per [`Class`], latency,
//!   a per-second timeline, the time and class of each failed request
//!   ([`LoadReport::failures_at`]) and sample errors (serde-serializable). [`run_from`] is
//!   the same with a time zero the caller chose, so that the times in the report can be
//!   set against the caller's own events ("failures from +1.2 s after SIGTERM").
//! - [`IdleConnections`] opens K keep-alive connections, uses each once and holds them
//!   idle; [`SlowRequests`] keeps K slow requests in flight. Both are for drain-speed
//!   benchmarks.
//! - [`Recorder`], [`Pacer`] and [`next_slot`] are the recording and pacing [`run`] uses,
//!   for load over other protocols reported the same way (`bench/loadgen`'s gRPC load).
//!
//! # Classes
//!
//! Every attempt gets exactly one [`Class`]:
//!
//! | class | meaning | a failure? |
//! |---|---|---|
//! | `ok` | complete response, status below 500, body read to the end | no |
//! | `status_5xx` | complete response with a 5xx status | yes |
//! | `refused` | no connection to write on: connect failed (refused, reset, unreachable, connect timeout), or a new connection was closed before the request could be written | yes |
//! | `no_response` | the request was written, no complete response came (reset, EOF before or in the head, body cut) | yes |
//! | `timeout` | no complete response within the request timeout | yes |
//! | `not_sent` | hyper gave the request back unwritten: its connection closed first | no |
//!
//! # When is a request "written"?
//!
//! The rule is hyper's own, and exact. A request handed to
//! [`SendRequest::try_send_request`](hyper::client::conn::http1::SendRequest::try_send_request)
//! waits in the connection's queue until the connection's dispatcher takes it, and the
//! dispatcher serializes it to the socket as soon as it does. If the connection fails
//! before that, hyper returns the request inside the error
//! ([`TrySendError::take_message`](hyper::client::conn::TrySendError::take_message) is
//! `Some`; the error `is_canceled()`): the server cannot have seen it, the class is
//! `not_sent`, and the worker sends it again on a new connection (at most 3 times), as real
//! clients do with a request that never left. Once the dispatcher has taken it, hyper no
//! longer returns it, and any failure — connection reset, EOF before or while reading the
//! head (`IncompleteMessage`), a cut body — is `no_response`: the bytes went out, so the
//! server could have seen the request, and the client cannot know whether it was acted on.
//!
//! The classic keep-alive race — the server closes an idle connection just as the client
//! reuses it — falls on either side of that line:
//!
//! - hyper had already read the server's FIN: the worker finds the connection closed
//!   before handing the request over (`SendRequest::ready` fails) and reconnects, as a
//!   connection pool does. No request is involved; the report counts it in `idle_closed`.
//! - the FIN was still in flight: hyper takes the request and writes it, then reads EOF or
//!   a reset: `no_response`. Clients such as Go's `net/http` retry exactly this case
//!   (reused connection, nothing read back) for idempotent requests only, since the server
//!   might have acted on it. The report counts these also in `no_response_reused`, so the
//!   share of failures an idempotent-retrying client would have hidden is visible. The
//!   load generator itself does not retry them: a failure is a failure.
//!
//! # Other behaviour
//!
//! - A response with `Connection: close` (how a draining server moves clients away) makes
//!   the worker open a new connection for its next request.
//! - With [`LoadConfig::new_connections_until`], past that instant a worker opens no new
//!   connection: it goes on sending on the keep-alive connection it has, at its pace, and
//!   *leaves* once the server closes it (`Connection: close`, EOF, reset) — as a client of
//!   a Kubernetes Service does once the terminating pod's endpoint is gone (conntrack keeps
//!   established connections on the old pod). Leaving is not an attempt, let alone a
//!   failure; a request written on the connection and never answered is `no_response`.
//!   The run ends when every worker has left, if nothing ends it before;
//!   [`LoadReport::left_at_ms`] says when each left.
//! - After a refused connect the worker pauses `reconnect_backoff` (10 ms) before its next
//!   request slot. Every attempt, refused ones included, takes a slot, so the attempt rate
//!   stays at `rate` while the target is gone.
//! - Latency is from handing the request to hyper to the end of the response body
//!   (connect time excluded), for complete responses (`ok` and `status_5xx`).
//! - The timeline buckets attempts by the second in which they started.
//! - Each failed attempt (a failing class, [`Class::is_failure`]) is also listed with the
//!   milliseconds from the run's start to the attempt's start, in
//!   [`LoadReport::failures_at`], in start order: the earliest [`FAILURES_AT_CAP`]
//!   (100,000) of them; any more are counted in [`LoadReport::failures_at_dropped`].
//!
//! # Example
//!
//! ```no_run
//! # async fn f() -> Result<(), lameduck_load::ConfigError> {
//! use std::time::Duration;
//! let mut config = lameduck_load::LoadConfig::new("http://127.0.0.1:8080/")?;
//! config.connections = 32;
//! config.rate = 2000;
//! config.duration = Some(Duration::from_secs(5));
//! let report = lameduck_load::run(config, std::future::pending()).await;
//! println!("{report}");
//! for failure in &report.failures_at {
//!     println!("+{} ms: {}", failure.at_ms, failure.class);
//! }
//! # Ok(()) }
//! ```
//!
//! With a time zero of the caller's ([`run_from`]), to say when failures came relative to
//! an event of its own (here a signal sent 2 s into the run):
//!
//! ```no_run
//! # async fn f() -> Result<(), lameduck_load::ConfigError> {
//! use std::time::{Duration, Instant};
//! let config = lameduck_load::LoadConfig::new("http://127.0.0.1:8080/")?;
//! let start = Instant::now();
//! let load = tokio::spawn(lameduck_load::run_from(config, std::future::pending(), start));
//! tokio::time::sleep(Duration::from_secs(2)).await;
//! let signal_ms = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
//! // ... send the signal ...
//! let Ok(report) = load.await else { return Ok(()) };
//! if let Some(first) = report.failures_at.first() {
//!     let after = i128::from(first.at_ms) - i128::from(signal_ms);
//!     println!("first failure ({}) {after:+} ms after the signal", first.class);
//! }
//! # Ok(()) }
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod config;
mod exchange;
mod idle;
mod load;
mod report;
mod slow;

pub use config::{ConfigError, LoadConfig, Target};
pub use http::Method;
pub use idle::IdleConnections;
pub use load::{Pacer, next_slot, run, run_from, until};
pub use report::{Bucket, Class, Counts, FAILURES_AT_CAP, FailureAt, LoadReport, Recorder};
pub use slow::{SlowReport, SlowRequests};
