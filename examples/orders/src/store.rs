//! Orders: accepted into a queue, worked off by one background worker, and persisted at
//! shutdown so that no accepted order is lost across a restart.

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

/// What a client posts.
#[derive(Debug, Clone, Deserialize)]
pub struct NewOrder {
    pub item: String,
    #[serde(default = "one")]
    pub quantity: u32,
}

fn one() -> u32 {
    1
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Queued,
    Processing,
    Done,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Order {
    pub id: u64,
    pub item: String,
    pub quantity: u32,
    pub status: Status,
}

#[derive(Default, Serialize, Deserialize)]
struct Book {
    next_id: u64,
    orders: BTreeMap<u64, Order>,
    queue: VecDeque<u64>,
}

/// The order book, shared by the handlers and the worker.
#[derive(Clone)]
pub struct Orders {
    book: Arc<Mutex<Book>>,
    queued: Arc<Notify>,
    capacity: usize,
}

impl Orders {
    pub fn new(capacity: usize) -> Self {
        Self {
            book: Arc::default(),
            queued: Arc::default(),
            capacity,
        }
    }

    fn book(&self) -> std::sync::MutexGuard<'_, Book> {
        self.book.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Accept an order; `None` when the queue is full.
    pub fn accept(&self, new: NewOrder) -> Option<Order> {
        let order = {
            let mut book = self.book();
            if book.queue.len() >= self.capacity {
                return None;
            }
            book.next_id += 1;
            let order = Order {
                id: book.next_id,
                item: new.item,
                quantity: new.quantity,
                status: Status::Queued,
            };
            book.orders.insert(order.id, order.clone());
            book.queue.push_back(order.id);
            order
        };
        self.queued.notify_one();
        Some(order)
    }

    pub fn get(&self, id: u64) -> Option<Order> {
        self.book().orders.get(&id).cloned()
    }

    pub fn queue_len(&self) -> usize {
        self.book().queue.len()
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The next queued order, marked as processing; waits until there is one.
    pub async fn next(&self) -> Order {
        loop {
            let notified = self.queued.notified();
            {
                let mut book = self.book();
                if let Some(id) = book.queue.pop_front()
                    && let Some(order) = book.orders.get_mut(&id)
                {
                    order.status = Status::Processing;
                    return order.clone();
                }
            }
            notified.await;
        }
    }

    pub fn finish(&self, id: u64) {
        if let Some(order) = self.book().orders.get_mut(&id) {
            order.status = Status::Done;
        }
    }

    /// Write every order to `path` (atomically: temp file, then rename). An order that
    /// was being processed when the worker stopped goes back to the queue.
    pub fn save(&self, path: &Path) -> std::io::Result<usize> {
        let json = {
            let mut book = self.book();
            let interrupted: Vec<u64> = book
                .orders
                .values()
                .filter(|o| o.status == Status::Processing)
                .map(|o| o.id)
                .collect();
            for id in interrupted {
                if let Some(order) = book.orders.get_mut(&id) {
                    order.status = Status::Queued;
                }
                book.queue.push_front(id);
            }
            serde_json::to_vec(&*book).map_err(std::io::Error::other)?
        };
        let queued = self.queue_len();
        let tmp = temp_path(path);
        std::fs::write(&tmp, json)?;
        std::fs::rename(&tmp, path)?;
        Ok(queued)
    }

    /// Read back what the previous process saved; queued orders are queued again.
    pub fn load(path: &Path, capacity: usize) -> std::io::Result<Self> {
        let orders = Self::new(capacity);
        match std::fs::read(path) {
            Ok(bytes) => {
                let book: Book = serde_json::from_slice(&bytes).map_err(|e| {
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        format!("{}: {e}", path.display()),
                    )
                })?;
                *orders.book() = book;
                Ok(orders)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(orders),
            Err(e) => Err(e),
        }
    }
}

fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn saved_queue_comes_back_in_order() {
        let dir = std::env::temp_dir().join(format!("orders-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("state.json");
        let orders = Orders::new(10);
        for item in ["a", "b", "c"] {
            orders
                .accept(NewOrder {
                    item: item.into(),
                    quantity: 1,
                })
                .unwrap();
        }
        let first = orders.next().await;
        assert_eq!(first.item, "a");
        orders.finish(first.id);
        let interrupted = orders.next().await;
        assert_eq!(interrupted.item, "b");
        assert_eq!(orders.save(&path).unwrap(), 2);

        let back = Orders::load(&path, 10).unwrap();
        assert_eq!(back.get(first.id).unwrap().status, Status::Done);
        assert_eq!(back.next().await.item, "b");
        assert_eq!(back.next().await.item, "c");
        let new = back
            .accept(NewOrder {
                item: "d".into(),
                quantity: 1,
            })
            .unwrap();
        assert_eq!(new.id, 4);
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn a_full_queue_refuses() {
        let orders = Orders::new(1);
        let new = || NewOrder {
            item: "x".into(),
            quantity: 1,
        };
        assert!(orders.accept(new()).is_some());
        assert!(orders.accept(new()).is_none());
    }
}
