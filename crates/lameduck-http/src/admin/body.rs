//! The body of every built-in admin answer: complete, and for `/shutdown` holding the exit
//! until it is written.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use lameduck::Hold;

/// The body of a built-in admin answer: one complete chunk (or none), never an error. A
/// `/shutdown` answer also keeps an exit hold until the server drops the body, which
/// hyper's HTTP/1 does as it queues the last bytes, in the same poll that then flushes
/// them: so `run()` cannot return, and the process cannot exit, before the answer is
/// written.
// Internal: dropping the hold as the handler returns was rejected: when the endpoints are
// merged into an h2 server, the response is written later by the connection's task, after
// `run()` may already have returned.
#[derive(Debug)]
pub struct AdminBody {
    data: Option<Bytes>,
    _hold: Option<Hold>,
}

impl AdminBody {
    pub(super) fn new(data: impl Into<Bytes>) -> Self {
        let data = data.into();
        Self {
            data: (!data.is_empty()).then_some(data),
            _hold: None,
        }
    }

    pub(super) fn empty() -> Self {
        Self {
            data: None,
            _hold: None,
        }
    }

    pub(super) fn held(data: impl Into<Bytes>, hold: Hold) -> Self {
        Self {
            _hold: Some(hold),
            ..Self::new(data)
        }
    }
}

impl http_body::Body for AdminBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.get_mut().data.take().map(|data| Ok(Frame::data(data))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        let len = self.data.as_ref().map_or(0, Bytes::len);
        SizeHint::with_exact(u64::try_from(len).unwrap_or(u64::MAX))
    }
}
