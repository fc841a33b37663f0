//! Panics on the request path: a handler that panics is answered `500`, so that one bad
//! request neither takes its connection down (HTTP/1 runs the handler on the connection's
//! task) nor leaves anything counted; a body that panics mid-stream ends its response with
//! [`BodyPanicked`]. The catching itself is done where the request is served
//! (`request.rs`), in the same future and body that count it.

use http::{Response, StatusCode};

/// The error a response body reports when it panicked mid-stream; the server then aborts
/// the response (HTTP/1: closes the connection; HTTP/2: resets the stream).
#[derive(Debug, thiserror::Error)]
#[error("the response body panicked: {0}")]
pub(crate) struct BodyPanicked(String);

impl BodyPanicked {
    pub(crate) fn new(message: String) -> Self {
        Self(message)
    }
}

/// The `500` that replaces the response of a handler that panicked.
pub(crate) fn internal_server_error<B>(body: B) -> Response<B> {
    let mut response = Response::new(body);
    *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    response
}

pub(crate) fn log_panic(what: &str, payload: &Box<dyn std::any::Any + Send>) {
    tracing::error!(panic = %panic_message(payload), "{what} panicked; answering 500");
}

/// The message of a panic, when it has one (`panic!` with a literal or a format).
pub(crate) fn panic_message(payload: &Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        String::from("(no message)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_message_of_a_panic_is_found_whatever_its_form() {
        let literal: Box<dyn std::any::Any + Send> = Box::new("literal");
        let formatted: Box<dyn std::any::Any + Send> = Box::new(format!("formatted {}", 1));
        let other: Box<dyn std::any::Any + Send> = Box::new(7_u32);
        assert_eq!(panic_message(&literal), "literal");
        assert_eq!(panic_message(&formatted), "formatted 1");
        assert_eq!(panic_message(&other), "(no message)");
    }
}
