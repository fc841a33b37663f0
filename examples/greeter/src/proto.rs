//! The messages of proto/helloworld.proto, as prost would generate them, and the service
//! code tonic generates from build.rs.

/// `helloworld.HelloRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HelloRequest {
    /// Who to greet.
    #[prost(string, tag = "1")]
    pub name: String,
}

/// `helloworld.HelloReply`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct HelloReply {
    /// The greeting.
    #[prost(string, tag = "1")]
    pub message: String,
}

#[allow(missing_docs, unreachable_pub, clippy::all)]
mod generated {
    include!(concat!(env!("OUT_DIR"), "/helloworld.Greeter.rs"));
}

pub use generated::greeter_client::GreeterClient;
pub use generated::greeter_server::{Greeter, GreeterServer};
