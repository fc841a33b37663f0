//! The `helloworld.Greeter` gRPC service, served with lameduck (the `greeter` binary).
//!
//! The library part is the protocol and the service, so tests and other programs can
//! call it with the generated [`proto::GreeterClient`].

pub mod proto;
mod service;

pub use service::{MyGreeter, StreamSettings};
