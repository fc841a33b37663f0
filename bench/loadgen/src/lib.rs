//! The benchmarks' load client: [`lameduck_load`]'s HTTP load (re-exported here whole, so
//! `lameduck_loadgen::run`, [`LoadConfig`], [`LoadReport`], ... are the same items) plus
//! gRPC load.
//!
//! - Everything of [`lameduck_load`]: [`run`] and [`run_from`] (steady keep-alive HTTP/1.1
//!   load that classifies every request; see that crate for the classes),
//!   [`IdleConnections`], [`SlowRequests`].
//! - [`run_grpc`] is the same for gRPC: unary `helloworld.Greeter/SayHello` calls
//!   (`examples/greeter`) from clients with a tonic channel each, in the same classes (see
//!   the `grpc` module's table), with a [`GrpcReport`].
//!
//! The `loadgen` binary is the command-line front of both (see the package README).
//!
//! # Example
//!
//! ```no_run
//! # async fn f() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! let mut config = lameduck_loadgen::GrpcLoadConfig::new("http://127.0.0.1:50051");
//! config.duration = Some(Duration::from_secs(5));
//! let report = lameduck_loadgen::run_grpc(config, std::future::pending()).await?;
//! println!("{} calls failed", report.failures());
//! # Ok(()) }
//! ```
#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod grpc;

pub use grpc::{GrpcDetail, GrpcLoadConfig, GrpcReport, run_grpc, say_hello_once};
pub use lameduck_load::*;
