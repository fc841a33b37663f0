//! Generates the `helloworld.Greeter` server and client from a description of the service
//! (proto/helloworld.proto, written out), with tonic's `manual` builder: building the
//! example needs no `protoc`. The messages are `prost` structs in src/proto.rs.

fn main() {
    let method = |name: &str, route: &str| {
        tonic_build::manual::Method::builder()
            .name(name)
            .route_name(route)
            .input_type("crate::proto::HelloRequest")
            .output_type("crate::proto::HelloReply")
            .codec_path("tonic_prost::ProstCodec")
    };
    let greeter = tonic_build::manual::Service::builder()
        .name("Greeter")
        .package("helloworld")
        .comment("gRPC's standard greeter (proto/helloworld.proto).")
        .method(
            method("say_hello", "SayHello")
                .comment("One greeting.")
                .build(),
        )
        .method(
            method("say_hello_stream_reply", "SayHelloStreamReply")
                .comment("A stream of greetings.")
                .server_streaming()
                .build(),
        )
        .build();
    // The client is generic over its channel: the example needs no client transport.
    tonic_build::manual::Builder::new()
        .build_transport(false)
        .compile(&[greeter]);
    println!("cargo:rerun-if-changed=build.rs");
}
