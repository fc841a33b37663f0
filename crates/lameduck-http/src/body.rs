//! Response bodies: [`InFlightBody`] keeps its request counted until the body ends;
//! [`UntilStopping`] ends an endless stream when Stopping begins.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http_body::{Body, Frame, SizeHint};
use lameduck::CancellationToken;
use pin_project_lite::pin_project;
use tokio_util::sync::WaitForCancellationFutureOwned;

use crate::in_flight::RequestGuard;

pin_project! {
    /// The response body of [`InFlight`](crate::InFlight): the inner body, with the
    /// request's in-flight guard that is released when the body ends (its last frame, an
    /// error, or the body being dropped, e.g. when the client goes away). A request is in
    /// flight until its response has been produced *and sent*; a streaming body is part
    /// of it.
    pub struct InFlightBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B> {
        Tracked {
            #[pin]
            inner: B,
            guard: Option<RequestGuard>,
        },
        // The empty body of a `503` answered after Stopping began.
        Empty,
    }
}

impl<B> InFlightBody<B> {
    pub(crate) fn tracked(inner: B, guard: Option<RequestGuard>) -> Self {
        Self {
            kind: Kind::Tracked { inner, guard },
        }
    }

    pub(crate) fn empty() -> Self {
        Self { kind: Kind::Empty }
    }
}

impl<B: std::fmt::Debug> std::fmt::Debug for InFlightBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.kind {
            Kind::Tracked { inner, guard } => f
                .debug_struct("InFlightBody")
                .field("inner", inner)
                .field("in_flight", &guard.is_some())
                .finish(),
            Kind::Empty => f.debug_struct("InFlightBody").finish_non_exhaustive(),
        }
    }
}

/// Ends a response body's request with its last frame (or its error): servers stop
/// polling once `is_end_stream` is true, so the guard goes with that frame rather than
/// waiting for the body to be dropped.
#[inline]
pub(crate) fn end_with_last_frame<T, E>(
    frame: &Option<Result<T, E>>,
    body: &impl Body,
    guard: &mut Option<RequestGuard>,
) {
    if !matches!(frame, Some(Ok(_))) || body.is_end_stream() {
        guard.take();
    }
}

impl<B: Body> Body for InFlightBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        match self.project().kind.project() {
            KindProj::Tracked { mut inner, guard } => {
                let frame = ready!(inner.as_mut().poll_frame(cx));
                end_with_last_frame(&frame, &*inner, guard);
                Poll::Ready(frame)
            }
            KindProj::Empty => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Tracked { inner, .. } => inner.is_end_stream(),
            Kind::Empty => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Tracked { inner, .. } => inner.size_hint(),
            Kind::Empty => SizeHint::with_exact(0),
        }
    }
}

pin_project! {
    /// A body that ends, between two frames, when Stopping begins; made by
    /// [`StopToken::until_stopping`](crate::StopToken::until_stopping). Until then
    /// it is the inner body, frame for frame. It never announces an exact length, since it
    /// may end early.
    pub struct UntilStopping<B> {
        #[pin]
        inner: B,
        #[pin]
        stopping: WaitForCancellationFutureOwned,
        stopped: bool,
    }
}

impl<B> UntilStopping<B> {
    pub(crate) fn new(inner: B, stop: CancellationToken) -> Self {
        Self {
            inner,
            stopping: stop.cancelled_owned(),
            stopped: false,
        }
    }
}

impl<B: std::fmt::Debug> std::fmt::Debug for UntilStopping<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UntilStopping")
            .field("inner", &self.inner)
            .field("stopped", &self.stopped)
            .finish()
    }
}

impl<B: Body> Body for UntilStopping<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        if *this.stopped {
            return Poll::Ready(None);
        }
        if this.stopping.poll(cx).is_ready() {
            *this.stopped = true;
            return Poll::Ready(None);
        }
        this.inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.stopped || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let mut hint = SizeHint::new();
        if let Some(upper) = self.inner.size_hint().upper() {
            hint.set_upper(upper);
        }
        hint
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full, StreamBody};
    use lameduck::ActivityCounter;
    use std::convert::Infallible;
    use tokio_test::{assert_pending, assert_ready, task};

    #[tokio::test]
    async fn guard_is_released_with_the_last_frame() {
        let counter = ActivityCounter::new();
        let mut body = InFlightBody::tracked(
            Full::new(Bytes::from_static(b"hi")),
            Some(RequestGuard::new(counter.enter())),
        );
        assert_eq!(counter.active(), 1);
        let frame = body.frame().await.expect("a frame").expect("data");
        assert_eq!(frame.into_data().ok(), Some(Bytes::from_static(b"hi")));
        assert_eq!(counter.active(), 0, "released with the last frame");
        assert!(body.frame().await.is_none());
    }

    #[tokio::test]
    async fn guard_is_released_when_the_body_is_dropped_unfinished() {
        let counter = ActivityCounter::new();
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(1);
        let stream = tokio_stream_from(rx);
        let body = InFlightBody::tracked(
            StreamBody::new(stream),
            Some(RequestGuard::new(counter.enter())),
        );
        assert_eq!(counter.active(), 1);
        drop(body);
        drop(tx);
        assert_eq!(counter.active(), 0);
    }

    #[test]
    fn until_stopping_ends_between_frames() {
        let stop = CancellationToken::new();
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, Infallible>>(4);
        let mut body = Box::pin(UntilStopping::new(
            StreamBody::new(tokio_stream_from(rx)),
            stop.clone(),
        ));
        assert!(body.size_hint().exact().is_none());
        let mut next = task::spawn(async { body.frame().await.map(|f| f.is_ok()) });
        assert_pending!(next.poll());
        tx.try_send(Ok(Frame::data(Bytes::from_static(b"event"))))
            .expect("room");
        assert!(next.is_woken());
        assert_eq!(assert_ready!(next.poll()), Some(true));
        drop(next);

        let mut next = task::spawn(async { body.frame().await.map(|f| f.is_ok()) });
        assert_pending!(next.poll());
        stop.cancel();
        assert!(next.is_woken());
        assert_eq!(assert_ready!(next.poll()), None, "ends cleanly");
        drop(next);
        assert!(body.is_end_stream());
    }

    /// A `Stream` over an mpsc receiver, without pulling in tokio-stream.
    fn tokio_stream_from<T>(
        mut rx: tokio::sync::mpsc::Receiver<T>,
    ) -> impl futures_util::Stream<Item = T> {
        futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx))
    }
}
