//! # lameduck-http
//!
//! Drain-aware HTTP serving for [`lameduck`]: what makes a rolling restart lose zero
//! requests.
//!
//! - [`serve`] / [`Server`] serve any tower (or axum) service over HTTP/1.1 and h2c on
//!   hyper-util's auto connection, following the lifecycle: keep serving while Draining
//!   but tell clients to go away (`Connection: close`, GOAWAY), accept what the kernel
//!   has already queued and close the listener at Stopping, close idle connections at
//!   once, let in-flight requests finish (bodies included) up to `drain_timeout`, cut
//!   the rest. Every connection and request is reported to the lifecycle, so Stopping
//!   ends the moment the last one is done. From the instant the cut fires, no connection
//!   reads or writes another byte (each read and write looks at it, lock-free) and the
//!   handlers still running are dropped with their connections; the lifecycle's
//!   AfterDrain hooks begin only once they are gone, so a response a client received
//!   was produced before those hooks ran.
//! - [`InFlightLayer`] does the request side for any other server: counts in-flight
//!   requests until their response body ends, adds `Connection: close` from Draining on,
//!   and answers `503` with `Retry-After` once Stopping has begun.
//! - [`StopToken`] lets long-lived responses (SSE, WebSocket, streams) end
//!   themselves cleanly when Stopping begins.
//! - [`admin`]: the probes (`/livez`, `/readyz`, `/startupz`) and `/shutdown` on a
//!   hardened HTTP/1 listener of their own, without a web framework (`lameduck-axum`'s
//!   `Admin` is the same endpoints as an axum router, with routes of your own).
//! - [`Server::connect_info`] gives handlers the peer's address, as axum's
//!   `into_make_service_with_connect_info` does (`.connect_info(axum::extract::ConnectInfo)`).
//!
//! ```no_run
//! use axum::{Router, routing::get};
//!
//! #[tokio::main]
//! async fn main() -> Result<lameduck::Report, Box<dyn std::error::Error>> {
//!     let lifecycle = lameduck::Lifecycle::from_env()?;
//!     let app = Router::new().route("/", get(|| async { "hello" }));
//!     let listener = tokio::net::TcpListener::bind("0.0.0.0:8080").await?;
//!     // Serves until SIGTERM, drains, runs the hooks, writes the report; the process
//!     // exits with the report's exit code.
//!     Ok(lameduck_http::serve(listener, app, &lifecycle).await)
//! }
//! ```
//!
//! A service with several listeners runs each with [`Server::listen`] and the lifecycle
//! once:
//!
//! ```
//! use std::convert::Infallible;
//! use std::time::Duration;
//! use http::{Request, Response};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let lifecycle = lameduck::Lifecycle::builder()
//!     .shutdown_delay(Duration::ZERO)
//!     .exit_process(false)
//!     .no_termination_log()
//!     .no_signals()
//!     .build()
//!     .unwrap();
//! let hello = tower::service_fn(|_: Request<hyper::body::Incoming>| async {
//!     Ok::<_, Infallible>(Response::new(String::from("hello")))
//! });
//! let public = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
//! let internal = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
//! let public = tokio::spawn(lameduck_http::serve(public, hello.clone(), &lifecycle).listen());
//! let internal = tokio::spawn(lameduck_http::serve(internal, hello, &lifecycle).http1_only().listen());
//!
//! lifecycle.shutdown();
//! let report = lifecycle.run().await;
//! public.await.unwrap();
//! internal.await.unwrap();
//! assert!(report.clean);
//! # }
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs, unreachable_pub)]
#![doc(test(attr(deny(warnings))))]

pub mod admin;
mod body;
mod connection;
mod in_flight;
mod io;
mod listener;
mod panic;
mod request;
mod serve;
mod state_watch;
mod stop_token;

pub use body::{InFlightBody, UntilStopping};
pub use in_flight::{DEFAULT_RETRY_AFTER, InFlight, InFlightLayer, ResponseFuture};
pub use listener::Listener;
pub use serve::{
    DEFAULT_FIRST_REQUEST_GRACE, DEFAULT_HEADER_READ_TIMEOUT, ServeFuture, Server, serve,
};
pub use stop_token::StopToken;

/// The README's examples, compiled and run as doc-tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

/// The error type hyper and tower pass around.
pub(crate) type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The lifecycles of the unit tests: no signal handlers, no termination log, no exit.
#[cfg(test)]
pub(crate) mod test_support {
    pub(crate) fn builder() -> lameduck::Builder {
        lameduck::Lifecycle::builder()
            .exit_process(false)
            .no_signals()
            .no_termination_log()
    }

    pub(crate) fn lifecycle() -> lameduck::Lifecycle {
        builder().build().expect("a valid test configuration")
    }
}
