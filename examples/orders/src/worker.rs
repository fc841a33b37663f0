//! The background worker: one order at a time; when Stopping begins it stops taking new
//! ones but finishes the order in hand.

use std::time::Duration;

use lameduck::CancellationToken;

use crate::store::Orders;

pub async fn run(orders: Orders, work_time: Duration, cancel: CancellationToken) {
    let mut processed = 0u64;
    loop {
        let order = tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            order = orders.next() => order,
        };
        // Not cancellable: an order taken is an order finished.
        tokio::time::sleep(work_time).await;
        orders.finish(order.id);
        processed += 1;
    }
    tracing::info!(
        processed,
        queued = orders.queue_len(),
        "order worker stopped"
    );
}
