//! Turning a panicking handler into a `500`, so that one bad request neither takes its
//! connection down (HTTP/1 runs the handler on the connection's task) nor leaves anything
//! counted: the in-flight guard outside this layer sees an ordinary response.

use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::task::{Context, Poll};

use http::{Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tower_service::Service;

use crate::BoxError;

/// The error a response body reports when it panicked mid-stream; the server then aborts
/// the response (HTTP/1: closes the connection; HTTP/2: resets the stream).
#[derive(Debug, thiserror::Error)]
#[error("the response body panicked: {0}")]
pub(crate) struct BodyPanicked(String);

/// Answers `500` when the inner service panics, in `call` or in its future; a body that
/// panics mid-stream ends with [`BodyPanicked`].
#[derive(Clone, Debug)]
pub(crate) struct CatchPanic<S> {
    inner: S,
}

impl<S> CatchPanic<S> {
    pub(crate) fn new(inner: S) -> Self {
        Self { inner }
    }
}

impl<S, ReqBody, ResBody> Service<Request<ReqBody>> for CatchPanic<S>
where
    S: Service<Request<ReqBody>, Response = Response<ResBody>>,
{
    type Response = Response<CatchPanicBody<ResBody>>;
    type Error = S::Error;
    type Future = CatchPanicFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        match catch_unwind(AssertUnwindSafe(|| self.inner.call(req))) {
            Ok(future) => CatchPanicFuture::Running { future },
            Err(payload) => {
                log_panic("handler", &payload);
                CatchPanicFuture::Panicked
            }
        }
    }
}

pin_project! {
    #[project = FutureProj]
    pub(crate) enum CatchPanicFuture<F> {
        Running { #[pin] future: F },
        Panicked,
        Done,
    }
}

impl<F, B, E> Future for CatchPanicFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<CatchPanicBody<B>>, E>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let polled = match self.as_mut().project() {
            FutureProj::Running { future } => {
                match catch_unwind(AssertUnwindSafe(|| future.poll(cx))) {
                    Ok(Poll::Pending) => return Poll::Pending,
                    Ok(Poll::Ready(result)) => Some(result),
                    Err(payload) => {
                        log_panic("handler", &payload);
                        None
                    }
                }
            }
            FutureProj::Panicked => None,
            FutureProj::Done => return Poll::Pending,
        };
        // A future that panicked must not be polled again: it is dropped here.
        self.set(CatchPanicFuture::Done);
        Poll::Ready(match polled {
            Some(result) => result.map(|response| response.map(CatchPanicBody::new)),
            None => Ok(internal_server_error()),
        })
    }
}

fn internal_server_error<B>() -> Response<CatchPanicBody<B>> {
    let mut response = Response::new(CatchPanicBody::Empty);
    *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    response
}

fn log_panic(what: &str, payload: &Box<dyn std::any::Any + Send>) {
    tracing::error!(panic = %panic_message(payload), "{what} panicked; answering 500");
}

fn panic_message(payload: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        String::from("(no message)")
    }
}

pin_project! {
    #[project = BodyProj]
    pub(crate) enum CatchPanicBody<B> {
        Running { #[pin] inner: B },
        Empty,
    }
}

impl<B> CatchPanicBody<B> {
    fn new(inner: B) -> Self {
        Self::Running { inner }
    }
}

impl<B> Body for CatchPanicBody<B>
where
    B: Body,
    B::Error: Into<BoxError>,
{
    type Data = B::Data;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let payload = match self.as_mut().project() {
            BodyProj::Running { inner } => {
                match catch_unwind(AssertUnwindSafe(|| inner.poll_frame(cx))) {
                    Ok(polled) => return polled.map(|f| f.map(|f| f.map_err(Into::into))),
                    Err(payload) => payload,
                }
            }
            BodyProj::Empty => return Poll::Ready(None),
        };
        tracing::error!(panic = %panic_message(&payload), "response body panicked; aborting the response");
        self.set(CatchPanicBody::Empty);
        Poll::Ready(Some(Err(BodyPanicked(panic_message(&payload)).into())))
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Running { inner } => inner.is_end_stream(),
            Self::Empty => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Running { inner } => inner.size_hint(),
            Self::Empty => SizeHint::with_exact(0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use std::convert::Infallible;
    use tower::ServiceExt;

    #[tokio::test]
    async fn a_panic_in_call_is_a_500() {
        let svc = CatchPanic::new(tower::service_fn(
            |_: Request<()>| -> std::future::Ready<Result<Response<Full<Bytes>>, Infallible>> {
                panic!("in call")
            },
        ));
        let response = svc.oneshot(Request::new(())).await.expect("infallible");
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(response.into_body().collect().await.is_ok());
    }

    #[tokio::test]
    async fn a_panic_in_the_future_is_a_500() {
        let svc = CatchPanic::new(tower::service_fn(|_: Request<()>| async {
            if true {
                panic!("in future");
            }
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::new())))
        }));
        let response = svc.oneshot(Request::new(())).await.expect("infallible");
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    }

    #[tokio::test]
    async fn a_panic_in_the_body_is_a_body_error() {
        struct Panicking;
        impl Body for Panicking {
            type Data = Bytes;
            type Error = Infallible;
            fn poll_frame(
                self: Pin<&mut Self>,
                _: &mut Context<'_>,
            ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
                panic!("in body")
            }
        }
        let svc = CatchPanic::new(tower::service_fn(|_: Request<()>| async {
            Ok::<_, Infallible>(Response::new(Panicking))
        }));
        let response = svc.oneshot(Request::new(())).await.expect("infallible");
        assert_eq!(response.status(), StatusCode::OK);
        let mut body = response.into_body();
        let error = body.frame().await.expect("a frame").expect_err("an error");
        assert!(error.to_string().contains("in body"));
        assert!(body.frame().await.is_none());
    }
}
