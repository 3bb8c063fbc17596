//! A stream polled again only once it has asked to be.
//!
//! A connection's event loop looks at the client's frames first on every
//! turn. Polling a WebSocket that has nothing to read is not free: the split
//! halves' shared lock, the socket's readiness, and tungstenite growing (and
//! zeroing) its read buffer before it finds nothing. A fan-out turn that
//! only sends a Transition paid all of that for every subscriber. [`Woken`]
//! remembers whether the stream woke the task since it last answered
//! `Pending`: until it has, polling [`Woken::next`] answers `Pending` at
//! once, without touching the stream. (The check is inside the future, not
//! a `select!` precondition: those are evaluated once per `select!`, and a
//! branch disabled there would stay so while the task waits.)

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use futures::task::AtomicWaker;
use futures::Stream;

/// `stream`, with a record of whether it may have something for its reader.
pub struct Woken<S> {
    stream: S,
    flag: Arc<Flag>,
    /// Hands the stream a waker that sets the flag, then wakes the task.
    waker: Waker,
}

struct Flag {
    /// Set when the stream wakes its reader, or has just answered: it may
    /// have more to give.
    woken: AtomicBool,
    /// The task reading the stream.
    task: AtomicWaker,
}

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::SeqCst);
        self.task.wake();
    }
}

impl<S: Stream + Unpin> Woken<S> {
    pub fn new(stream: S) -> Woken<S> {
        let flag = Arc::new(Flag {
            // Never polled yet: it may hold something already.
            woken: AtomicBool::new(true),
            task: AtomicWaker::new(),
        });
        let waker = Waker::from(flag.clone());
        Woken {
            stream,
            flag,
            waker,
        }
    }

    /// The stream's next item.
    pub async fn next(&mut self) -> Option<S::Item> {
        std::future::poll_fn(|cx| self.poll_next(cx)).await
    }

    /// Polls the stream if it may have something; else answers `Pending`
    /// at once, to be polled again when the stream wakes the task.
    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        // The task is registered before the flag is looked at: a wake after
        // the look reaches the task that looked.
        self.flag.task.register(cx.waker());
        if !self.flag.woken.swap(false, Ordering::SeqCst) {
            return Poll::Pending;
        }
        let mut inner = Context::from_waker(&self.waker);
        let polled = Pin::new(&mut self.stream).poll_next(&mut inner);
        if polled.is_ready() {
            self.flag.woken.store(true, Ordering::SeqCst);
        }
        polled
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use futures::channel::mpsc;
    use futures::StreamExt;

    use super::*;

    /// A channel's receiver that counts its polls.
    struct Counted {
        rx: mpsc::UnboundedReceiver<u32>,
        polls: Arc<AtomicUsize>,
    }

    impl Stream for Counted {
        type Item = u32;
        fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<u32>> {
            self.polls.fetch_add(1, Ordering::SeqCst);
            self.rx.poll_next_unpin(cx)
        }
    }

    #[tokio::test]
    async fn a_stream_is_looked_at_again_only_after_it_woke_its_reader() {
        let (tx, rx) = mpsc::unbounded();
        let polls = Arc::new(AtomicUsize::new(0));
        let mut stream = Woken::new(Counted {
            rx,
            polls: polls.clone(),
        });
        let polled = || polls.load(Ordering::SeqCst);
        tx.unbounded_send(1).unwrap();
        assert_eq!(stream.next().await, Some(1));
        assert_eq!(polled(), 1);

        // It just gave an item, so it is looked at again: empty now.
        assert!(futures::poll!(Box::pin(stream.next())).is_pending());
        assert_eq!(polled(), 2);
        // Not woken since: more turns leave the stream alone.
        for _ in 0..5 {
            assert!(futures::poll!(Box::pin(stream.next())).is_pending());
        }
        assert_eq!(polled(), 2, "an empty stream that did not wake is skipped");

        // A send from another task wakes the reader, and the stream is
        // looked at once more.
        let sender = tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            tx.unbounded_send(2).unwrap();
            tx
        });
        assert_eq!(stream.next().await, Some(2));
        assert_eq!(polled(), 3);
        let tx = sender.await.unwrap();

        // The end of the stream is an item too.
        drop(tx);
        assert_eq!(stream.next().await, None);
    }
}
