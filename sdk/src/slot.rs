//! [`Slot`]: where the background worker leaves a subscription's newest
//! result and its [`crate::client::Subscription`] stream picks it up. A leaf
//! between the two, so neither imports the other for it.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use livebase_schema::protocol::FunctionError;
use livebase_schema::Value;

/// Where the worker leaves a subscription's newest result for its stream.
#[derive(Debug, Default)]
pub(crate) struct Slot {
    inner: Mutex<SlotInner>,
}

#[derive(Debug, Default)]
struct SlotInner {
    latest: Option<Result<Value, FunctionError>>,
    /// `latest` changed since the stream last yielded.
    unseen: bool,
    /// The worker has stopped: the stream ends.
    closed: bool,
    waker: Option<Waker>,
}

impl Slot {
    // A std mutex, not tokio's: it is held only to swap a value, never across
    // an `.await`.
    fn lock(&self) -> MutexGuard<'_, SlotInner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The newest result, whether or not the stream has yielded it.
    pub(crate) fn latest(&self) -> Option<Result<Value, FunctionError>> {
        self.lock().latest.clone()
    }

    /// The stream's next item: the newest result if it has not been yielded,
    /// the end once the worker has stopped, or pending (woken by the next
    /// [`Slot::set`] or [`Slot::close`]).
    pub(crate) fn poll_next(
        &self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Value, FunctionError>>> {
        let mut slot = self.lock();
        if slot.unseen {
            slot.unseen = false;
            if let Some(result) = slot.latest.clone() {
                return Poll::Ready(Some(result));
            }
        }
        if slot.closed {
            return Poll::Ready(None);
        }
        slot.waker = Some(cx.waker().clone());
        Poll::Pending
    }

    pub(crate) fn set(&self, result: Result<Value, FunctionError>) {
        let waker = {
            let mut slot = self.lock();
            slot.latest = Some(result);
            slot.unseen = true;
            slot.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    pub(crate) fn close(&self) {
        let waker = {
            let mut slot = self.lock();
            slot.closed = true;
            slot.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}
