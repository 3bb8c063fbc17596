//! Each connection's outbound queue: the worker queues Transitions (and the
//! odd `FatalError`) without waiting, and the connection's task sends them
//! in order.
//!
//! A queue is bounded three ways: [`OUTBOUND_QUEUE`] messages and
//! [`OUTBOUND_QUEUE_BYTES`] of results for one connection, and
//! [`MAX_QUEUED_RESULT_BYTES_TOTAL`] for every connection together. A
//! connection past a bound counts as too slow: the worker drops it, and it
//! reconnects and resyncs.
//!
//! A fan-out queues one message on each of its subscribers' queues from the
//! worker's thread, so a queue costs one uncontended lock to fill and one to
//! drain, and a connection with nothing queued finds so without taking the
//! lock. The queues also carry the server's shutdown to every connection
//! ([`OutboundQueues::close_all`]), so a connection's task waits on its queue
//! alone, not on a shutdown signal shared (and locked) by all of them.

use std::collections::{HashMap, VecDeque};
use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use futures::task::AtomicWaker;
use livebase_schema::protocol::{ServerMessage, StateModification};
use livebase_schema::Value;

/// Messages queued for one connection before it counts as too slow and is
/// dropped (it reconnects and resyncs).
pub const OUTBOUND_QUEUE: usize = 256;
/// Bytes of query results queued for one connection before it counts as too
/// slow, whatever the number of messages: 256 Transitions of near-megabyte
/// results would otherwise hold a quarter of a gigabyte for one laggard.
pub const OUTBOUND_QUEUE_BYTES: usize = 16 << 20;

/// Most bytes of results waiting in the outbound queues of all connections
/// together (counted as [`queued_size`] counts them). Past it, a connection
/// with [`LAGGING_MESSAGES`] or more messages already waiting counts as too
/// slow and is dropped, as it is past its own
/// [`OUTBOUND_QUEUE_BYTES`]; one that keeps up (its socket
/// still taking the last message) is sent its next, so it is not dropped for
/// others' backlog. Without it, a thousand connections that stop reading
/// could each hold their own 16 MiB.
pub const MAX_QUEUED_RESULT_BYTES_TOTAL: usize = 1 << 30;
/// Messages waiting in a connection's queue that make it a laggard once all
/// queues together are past [`MAX_QUEUED_RESULT_BYTES_TOTAL`].
pub const LAGGING_MESSAGES: usize = 2;

/// Why a queue gives no more messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// The worker let the connection go: it fell too far behind, or the
    /// worker stopped. What was queued before is still given out first.
    Dropped,
    /// The server is shutting down; whatever was queued is discarded.
    ShuttingDown,
}

/// Why a message could not be queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum QueueError {
    /// Too many messages or too many bytes wait already.
    Full,
    /// The connection is gone (or going).
    Closed,
}

/// Every connection's outbound queue: the bytes they hold together, and
/// each live queue, so that a shutdown reaches all of them.
#[derive(Debug)]
pub(super) struct OutboundQueues {
    bytes: AtomicUsize,
    max: usize,
    live: Mutex<Registry>,
}

#[derive(Debug, Default)]
struct Registry {
    /// Set by [`OutboundQueues::close_all`]: a queue made after it is made
    /// closed.
    closing: bool,
    next: u64,
    queues: HashMap<u64, Arc<Queue>>,
}

/// One connection's queue, shared by its two ends.
#[derive(Debug)]
struct Queue {
    state: Mutex<State>,
    /// Whether the receiving end has something to take (a message or the
    /// end): set under the lock by whoever gives it something, cleared under
    /// the lock by the receiver when it finds nothing. Read without the lock
    /// first, so an idle connection's wake-ups do not touch the lock.
    ready: AtomicBool,
    waker: AtomicWaker,
}

#[derive(Debug, Default)]
struct State {
    /// Each message with the size it counts for.
    messages: VecDeque<(ServerMessage, usize)>,
    bytes: usize,
    end: Option<Ended>,
    /// The receiving end is gone: nothing more is queued or counted.
    receiver_gone: bool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl OutboundQueues {
    /// Queues whose results together may hold `max` bytes.
    pub(super) fn new(max: usize) -> OutboundQueues {
        OutboundQueues {
            bytes: AtomicUsize::new(0),
            max,
            live: Mutex::new(Registry::default()),
        }
    }

    /// A new connection's queue: the worker's end and the connection's.
    pub(super) fn queue(self: &Arc<Self>) -> (Outbound, OutboundRx) {
        let queue = Arc::new(Queue {
            state: Mutex::new(State::default()),
            ready: AtomicBool::new(false),
            waker: AtomicWaker::new(),
        });
        let mut live = lock(&self.live);
        let id = live.next;
        live.next += 1;
        if live.closing {
            queue.end(Ended::ShuttingDown, &self.bytes);
        } else {
            live.queues.insert(id, queue.clone());
        }
        drop(live);
        (
            Outbound {
                queue: queue.clone(),
                all: self.clone(),
            },
            OutboundRx {
                queue,
                all: self.clone(),
                id,
            },
        )
    }

    /// Bytes of results waiting in every queue.
    pub(super) fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Acquire)
    }

    /// Ends every queue, now and to come, with [`Ended::ShuttingDown`].
    pub(super) fn close_all(&self) {
        let queues: Vec<Arc<Queue>> = {
            let mut live = lock(&self.live);
            live.closing = true;
            live.queues.drain().map(|(_, q)| q).collect()
        };
        for queue in queues {
            queue.end(Ended::ShuttingDown, &self.bytes);
        }
    }
}

impl Queue {
    /// Ends the queue (the first reason stays); on shutdown what is queued
    /// goes, uncounted, with it.
    fn end(&self, why: Ended, total: &AtomicUsize) {
        let mut state = lock(&self.state);
        if state.end.is_none() {
            state.end = Some(why);
        }
        if why == Ended::ShuttingDown {
            state.messages.clear();
            total.fetch_sub(state.bytes, Ordering::AcqRel);
            state.bytes = 0;
        }
        self.ready.store(true, Ordering::Release);
        drop(state);
        self.waker.wake();
    }
}

/// The worker's end of one connection's outbound queue. Dropping it ends
/// the queue ([`Ended::Dropped`]) once what it holds is taken.
#[derive(Debug)]
pub struct Outbound {
    queue: Arc<Queue>,
    all: Arc<OutboundQueues>,
}

impl Outbound {
    /// Queues `msg` unless the connection already has too much waiting; a
    /// single message over the byte budget is still accepted by an otherwise
    /// empty queue, so no result is too big to ever be sent.
    pub(super) fn try_send(&self, msg: ServerMessage) -> Result<(), QueueError> {
        let size = queued_size(&msg);
        let mut state = lock(&self.queue.state);
        if state.receiver_gone || state.end.is_some() {
            return Err(QueueError::Closed);
        }
        let waiting = state.messages.len();
        let total = self.all.bytes.load(Ordering::Acquire);
        let over_own = state.bytes > 0 && state.bytes + size > OUTBOUND_QUEUE_BYTES;
        let over_total = waiting >= LAGGING_MESSAGES && total + size > self.all.max;
        if waiting >= OUTBOUND_QUEUE || over_own || over_total {
            return Err(QueueError::Full);
        }
        state.messages.push_back((msg, size));
        state.bytes += size;
        self.all.bytes.fetch_add(size, Ordering::AcqRel);
        self.queue.ready.store(true, Ordering::Release);
        drop(state);
        self.queue.waker.wake();
        Ok(())
    }

    /// Bytes of results waiting in the queue.
    pub fn queued_bytes(&self) -> usize {
        lock(&self.queue.state).bytes
    }
}

impl Drop for Outbound {
    fn drop(&mut self) {
        self.queue.end(Ended::Dropped, &self.all.bytes);
    }
}

/// The connection's end of its outbound queue.
#[derive(Debug)]
pub struct OutboundRx {
    queue: Arc<Queue>,
    all: Arc<OutboundQueues>,
    id: u64,
}

impl OutboundRx {
    /// The next message, or why there will be none.
    pub async fn recv(&mut self) -> Result<ServerMessage, Ended> {
        poll_fn(|cx| self.poll_recv(cx)).await
    }

    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Result<ServerMessage, Ended>> {
        if let Some(next) = self.try_take() {
            return Poll::Ready(next);
        }
        self.queue.waker.register(cx.waker());
        // Whatever came between the first look and the registration.
        match self.try_take() {
            Some(next) => Poll::Ready(next),
            None => Poll::Pending,
        }
    }

    fn try_take(&mut self) -> Option<Result<ServerMessage, Ended>> {
        if !self.queue.ready.load(Ordering::Acquire) {
            return None;
        }
        let mut state = lock(&self.queue.state);
        if let Some((msg, size)) = state.messages.pop_front() {
            state.bytes -= size;
            self.all.bytes.fetch_sub(size, Ordering::AcqRel);
            if state.messages.is_empty() && state.end.is_none() {
                self.queue.ready.store(false, Ordering::Release);
            }
            return Some(Ok(msg));
        }
        if let Some(end) = state.end {
            return Some(Err(end));
        }
        self.queue.ready.store(false, Ordering::Release);
        None
    }
}

impl Drop for OutboundRx {
    /// What is left in a dropped queue no longer counts toward the total.
    fn drop(&mut self) {
        let mut state = lock(&self.queue.state);
        state.receiver_gone = true;
        state.messages.clear();
        self.all.bytes.fetch_sub(state.bytes, Ordering::AcqRel);
        state.bytes = 0;
        drop(state);
        lock(&self.all.live).queues.remove(&self.id);
    }
}

/// What a queued message counts for: its results' sizes plus a little for
/// the envelope. Results are shared between subscribers, so this is what the
/// message keeps alive at most, counted the same on both ends of the queue.
fn queued_size(msg: &ServerMessage) -> usize {
    const ENVELOPE: usize = 64;
    match msg {
        ServerMessage::Transition { modifications, .. } => {
            ENVELOPE
                + modifications
                    .iter()
                    .map(|m| match m {
                        StateModification::QueryUpdated { value, .. } => ENVELOPE + value.size(),
                        StateModification::QueryFailed { error, .. } => {
                            ENVELOPE
                                + error.message.len()
                                + error.data.as_ref().map_or(0, Value::size)
                        }
                        StateModification::QueryRemoved { .. } => ENVELOPE,
                    })
                    .sum::<usize>()
        }
        _ => ENVELOPE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;

    fn fatal(n: u32) -> ServerMessage {
        ServerMessage::FatalError {
            error: n.to_string(),
        }
    }

    #[test]
    fn messages_come_out_in_order_then_the_end() {
        let all = Arc::new(OutboundQueues::new(MAX_QUEUED_RESULT_BYTES_TOTAL));
        let (tx, mut rx) = all.queue();
        assert!(rx.recv().now_or_never().is_none(), "nothing queued yet");
        for n in 0..3 {
            tx.try_send(fatal(n)).unwrap();
        }
        assert_eq!(all.bytes(), 3 * 64);
        drop(tx);
        for n in 0..3 {
            assert_eq!(rx.recv().now_or_never(), Some(Ok(fatal(n))));
        }
        assert_eq!(all.bytes(), 0);
        assert_eq!(rx.recv().now_or_never(), Some(Err(Ended::Dropped)));
    }

    #[test]
    fn a_full_queue_refuses_and_a_gone_receiver_closes() {
        let all = Arc::new(OutboundQueues::new(MAX_QUEUED_RESULT_BYTES_TOTAL));
        let (tx, rx) = all.queue();
        for n in 0..OUTBOUND_QUEUE {
            tx.try_send(fatal(n as u32)).unwrap();
        }
        assert_eq!(tx.try_send(fatal(0)), Err(QueueError::Full));
        drop(rx);
        assert_eq!(
            all.bytes(),
            0,
            "a dropped receiver's messages no longer count"
        );
        assert_eq!(tx.try_send(fatal(0)), Err(QueueError::Closed));
    }

    #[test]
    fn shutdown_ends_every_queue_now_and_later_and_discards_what_waits() {
        let all = Arc::new(OutboundQueues::new(MAX_QUEUED_RESULT_BYTES_TOTAL));
        let (tx, mut rx) = all.queue();
        tx.try_send(fatal(1)).unwrap();
        all.close_all();
        assert_eq!(all.bytes(), 0);
        assert_eq!(rx.recv().now_or_never(), Some(Err(Ended::ShuttingDown)));
        assert_eq!(tx.try_send(fatal(2)), Err(QueueError::Closed));
        let (_tx, mut late) = all.queue();
        assert_eq!(late.recv().now_or_never(), Some(Err(Ended::ShuttingDown)));
        drop(rx);
        assert!(lock(&all.live).queues.is_empty());
    }

    #[tokio::test]
    async fn a_waiting_receiver_wakes_for_a_message_queued_on_another_thread() {
        let all = Arc::new(OutboundQueues::new(MAX_QUEUED_RESULT_BYTES_TOTAL));
        let (tx, mut rx) = all.queue();
        let sender = std::thread::spawn(move || {
            for n in 0..1000 {
                tx.try_send(fatal(n)).unwrap();
                if n % 100 == 0 {
                    std::thread::yield_now();
                }
                while lock(&tx.queue.state).messages.len() > 10 {
                    std::thread::yield_now();
                }
            }
        });
        for n in 0..1000 {
            assert_eq!(rx.recv().await, Ok(fatal(n)));
        }
        sender.join().unwrap();
        assert_eq!(rx.recv().await, Err(Ended::Dropped));
    }
}
