//! A connection's outgoing queue, bounded in bytes, and the writer task
//! that drains it into socketioxide.
//!
//! socketioxide keeps its own per-socket packet buffer (`max_buffer_size`
//! packets) and answers `InternalChannelFull` when it is full, without a
//! way to wait for room. The writer retries after a short sleep while the
//! client reads slowly; meanwhile frames wait here, counted in bytes. When
//! a push would go over the budget, the queue is dropped, the client gets
//! `rt:error` `{code: "slow_client", message}` as soon as socketioxide's
//! buffer has room again (within [`SLOW_CLIENT_GRACE`]), and is
//! disconnected; a client that never reads is dropped by the engine.io
//! heartbeat (its pongs stop). So a connection holds at most
//! `outgoing_queue_bytes` here plus socketioxide's buffer of
//! `engine_buffer_packets` frames.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use socketioxide::extract::SocketRef;
use socketioxide::{SendError, SocketError};
use tokio::sync::Notify;

use crate::hub::{lock, Counters, Frame};
use crate::wire;

/// How long a slow client gets to read its backlog and the reason before
/// the writer stops trying to tell it.
pub const SLOW_CLIENT_GRACE: Duration = Duration::from_secs(5);

/// The wait between two attempts while socketioxide's buffer is full.
const RETRY: Duration = Duration::from_millis(2);

#[derive(Default)]
struct Queue {
    frames: VecDeque<Frame>,
    bytes: usize,
    /// Why the connection is being closed (the queue overflowed).
    overflow: Option<String>,
    closed: bool,
}

/// A connection's outgoing queue.
pub(crate) struct Outbox {
    queue: Mutex<Queue>,
    notify: Notify,
    budget: usize,
    counters: Arc<Counters>,
}

enum Next {
    Frame(Frame),
    Overflow(String),
    Closed,
}

impl Outbox {
    pub(crate) fn new(budget: usize, counters: Arc<Counters>) -> Arc<Self> {
        Arc::new(Outbox {
            queue: Mutex::new(Queue::default()),
            notify: Notify::new(),
            budget,
            counters,
        })
    }

    /// Queues `frame`; `false` when the connection is closing or the frame
    /// would go over the budget (the connection is then closed with a
    /// reason). A frame larger than the budget is queued when nothing else
    /// waits.
    pub(crate) fn push(&self, frame: Frame) -> bool {
        let mut q = lock(&self.queue);
        if q.closed || q.overflow.is_some() {
            return false;
        }
        if !q.frames.is_empty() && q.bytes + frame.bytes > self.budget {
            let dropped = q.bytes;
            q.frames.clear();
            q.bytes = 0;
            self.counters
                .queued_bytes
                .fetch_sub(dropped, Ordering::Relaxed);
            self.counters
                .slow_disconnects
                .fetch_add(1, Ordering::Relaxed);
            q.overflow = Some(format!(
                "the client did not read fast enough: its outgoing queue went over {} bytes \
                 (outgoing_queue_bytes)",
                self.budget
            ));
            drop(q);
            self.notify.notify_one();
            return false;
        }
        q.bytes += frame.bytes;
        self.counters
            .queued_bytes
            .fetch_add(frame.bytes, Ordering::Relaxed);
        q.frames.push_back(frame);
        drop(q);
        self.notify.notify_one();
        true
    }

    /// Stops the writer (the socket disconnected).
    pub(crate) fn close(&self) {
        let mut q = lock(&self.queue);
        q.closed = true;
        let dropped = std::mem::take(&mut q.bytes);
        q.frames.clear();
        self.counters
            .queued_bytes
            .fetch_sub(dropped, Ordering::Relaxed);
        drop(q);
        self.notify.notify_one();
    }

    fn overflowed(&self) -> bool {
        lock(&self.queue).overflow.is_some()
    }

    async fn next(&self) -> Next {
        loop {
            let notified = self.notify.notified();
            {
                let mut q = lock(&self.queue);
                if q.closed {
                    return Next::Closed;
                }
                if let Some(reason) = q.overflow.clone() {
                    return Next::Overflow(reason);
                }
                if let Some(frame) = q.frames.pop_front() {
                    q.bytes -= frame.bytes;
                    self.counters
                        .queued_bytes
                        .fetch_sub(frame.bytes, Ordering::Relaxed);
                    return Next::Frame(frame);
                }
            }
            notified.await;
        }
    }
}

/// Drains `outbox` into `socket` until the socket closes or overflows.
pub(crate) async fn writer(outbox: Arc<Outbox>, socket: SocketRef) {
    loop {
        match outbox.next().await {
            Next::Closed => return,
            Next::Frame(frame) => {
                // While the buffer is full, keep trying, unless the queue
                // overflows meanwhile (then say why and stop).
                loop {
                    match socket.emit(frame.event, &*frame.data) {
                        Ok(()) => break,
                        Err(SendError::Socket(SocketError::InternalChannelFull)) => {
                            if outbox.overflowed() {
                                break;
                            }
                            tokio::time::sleep(RETRY).await;
                        }
                        Err(SendError::Serialize(e)) => {
                            tracing::warn!(error = %e, "realtime socketio: a frame did not serialize");
                            break;
                        }
                        Err(SendError::Socket(_)) => return,
                    }
                }
            }
            Next::Overflow(reason) => {
                tracing::info!(sid = %socket.id, %reason, "realtime socketio: disconnecting a slow client");
                say_and_disconnect(&socket, &reason).await;
                return;
            }
        }
    }
}

/// Sends `rt:error` `{code: "slow_client", message}` and disconnects,
/// waiting up to [`SLOW_CLIENT_GRACE`] for room in socketioxide's buffer.
async fn say_and_disconnect(socket: &SocketRef, reason: &str) {
    let error = serde_json::json!({"code": "slow_client", "message": reason});
    let deadline = tokio::time::Instant::now() + SLOW_CLIENT_GRACE;
    let mut said = false;
    while tokio::time::Instant::now() < deadline {
        if !said {
            match socket.emit(wire::ERROR, &error) {
                Ok(()) => said = true,
                Err(SendError::Socket(SocketError::InternalChannelFull)) => {}
                Err(_) => return,
            }
        }
        if said {
            match socket.clone().disconnect() {
                Err(SocketError::InternalChannelFull) => {}
                _ => return,
            }
        }
        tokio::time::sleep(RETRY * 5).await;
    }
    tracing::info!(
        sid = %socket.id,
        "realtime socketio: a slow client did not read within the grace period; the engine.io \
         heartbeat closes it"
    );
}
