//! The greeter itself: nothing in it knows about shutdown. Draining, the health service
//! and the report are lameduck-tonic's.

use std::pin::Pin;
use std::time::Duration;

use futures_util::Stream;
use tonic::{Request, Response, Status};

use crate::proto::{Greeter, HelloReply, HelloRequest};

/// How `SayHelloStreamReply` streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamSettings {
    /// How many replies a stream sends.
    pub replies: u32,
    /// The time between two replies.
    pub interval: Duration,
}

impl Default for StreamSettings {
    fn default() -> Self {
        Self {
            replies: 5,
            interval: Duration::from_secs(1),
        }
    }
}

/// The greeter.
#[derive(Debug, Clone, Default)]
pub struct MyGreeter {
    stream: StreamSettings,
}

impl MyGreeter {
    /// A greeter whose streams follow `stream`.
    pub fn new(stream: StreamSettings) -> Self {
        Self { stream }
    }
}

fn greeting(request: &HelloRequest) -> String {
    let name = if request.name.is_empty() {
        "world"
    } else {
        &request.name
    };
    format!("Hello {name}!")
}

type ReplyStream = Pin<Box<dyn Stream<Item = Result<HelloReply, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl Greeter for MyGreeter {
    async fn say_hello(
        &self,
        request: Request<HelloRequest>,
    ) -> Result<Response<HelloReply>, Status> {
        Ok(Response::new(HelloReply {
            message: greeting(request.get_ref()),
        }))
    }

    type SayHelloStreamReplyStream = ReplyStream;

    async fn say_hello_stream_reply(
        &self,
        request: Request<HelloRequest>,
    ) -> Result<Response<Self::SayHelloStreamReplyStream>, Status> {
        let greeting = greeting(request.get_ref());
        let StreamSettings { replies, interval } = self.stream;
        let stream = futures_util::stream::unfold(0, move |sent| {
            let greeting = greeting.clone();
            async move {
                if sent == replies {
                    return None;
                }
                if sent > 0 {
                    tokio::time::sleep(interval).await;
                }
                let reply = HelloReply {
                    message: format!("{greeting} ({}/{replies})", sent + 1),
                };
                Some((Ok(reply), sent + 1))
            }
        });
        Ok(Response::new(Box::pin(stream)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::StreamExt;

    #[tokio::test]
    async fn says_hello() {
        let reply = MyGreeter::default()
            .say_hello(Request::new(HelloRequest {
                name: "lameduck".into(),
            }))
            .await
            .expect("a reply");
        assert_eq!(reply.into_inner().message, "Hello lameduck!");
    }

    #[tokio::test(start_paused = true)]
    async fn streams_the_configured_replies() {
        let greeter = MyGreeter::new(StreamSettings {
            replies: 3,
            interval: Duration::from_secs(2),
        });
        let started = tokio::time::Instant::now();
        let replies: Vec<String> = greeter
            .say_hello_stream_reply(Request::new(HelloRequest::default()))
            .await
            .expect("a stream")
            .into_inner()
            .map(|r| r.expect("a reply").message)
            .collect()
            .await;
        assert_eq!(
            replies,
            [
                "Hello world! (1/3)",
                "Hello world! (2/3)",
                "Hello world! (3/3)"
            ]
        );
        assert_eq!(started.elapsed(), Duration::from_secs(4));
    }
}
