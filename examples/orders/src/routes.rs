//! The HTTP API.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::Stream;
use lameduck::{CancellationToken, Lifecycle};
use serde::Deserialize;

use crate::store::{NewOrder, Orders};

/// The longest `/work?ms=` accepted: a drain test needs slow requests, not stuck ones.
const MAX_WORK_MS: u64 = 120_000;
const EVENT_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Clone)]
struct App {
    orders: Orders,
    stop: CancellationToken,
}

pub fn router(orders: Orders, lifecycle: &Lifecycle) -> Router {
    Router::new()
        .route("/", get(|| async { "orders: ok\n" }))
        .route("/work", get(work))
        .route("/orders", post(create_order))
        .route("/orders/{id}", get(get_order))
        .route("/events", get(events))
        .with_state(App {
            orders,
            stop: lifecycle.stop_token(),
        })
}

#[derive(Deserialize)]
struct WorkParams {
    ms: u64,
}

async fn work(Query(params): Query<WorkParams>) -> Response {
    if params.ms > MAX_WORK_MS {
        return (
            StatusCode::BAD_REQUEST,
            format!("ms={} is over the limit of {MAX_WORK_MS}\n", params.ms),
        )
            .into_response();
    }
    tokio::time::sleep(Duration::from_millis(params.ms)).await;
    format!("worked {} ms\n", params.ms).into_response()
}

async fn create_order(State(app): State<App>, Json(new): Json<NewOrder>) -> Response {
    match app.orders.accept(new) {
        Some(order) => {
            let location = HeaderValue::from_str(&format!("/orders/{}", order.id));
            let mut response = (StatusCode::ACCEPTED, Json(order)).into_response();
            if let Ok(location) = location {
                response.headers_mut().insert(header::LOCATION, location);
            }
            response
        }
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "1")],
            "order queue full\n",
        )
            .into_response(),
    }
}

async fn get_order(State(app): State<App>, Path(id): Path<u64>) -> Response {
    match app.orders.get(id) {
        Some(order) => Json(order).into_response(),
        None => (StatusCode::NOT_FOUND, format!("no order {id}\n")).into_response(),
    }
}

/// Server-sent events: the queue depth every second, and a last `bye` event when the
/// service begins Stopping, after which the stream ends cleanly (the client sees a
/// complete response, not a cut connection).
async fn events(State(app): State<App>) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let stream = futures_util::stream::unfold(Some(app), |app| async move {
        let app = app?;
        tokio::select! {
            biased;
            _ = app.stop.cancelled() => {
                Some((Ok(Event::default().event("bye").data("stopping")), None))
            }
            _ = tokio::time::sleep(EVENT_INTERVAL) => {
                let queued = app.orders.queue_len();
                let event = Event::default().event("queue").data(format!("{{\"queued\":{queued}}}"));
                Some((Ok(event), Some(app)))
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}
