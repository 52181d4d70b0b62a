//! Commit signals: how a reader of a shard learns, without polling, that new records became
//! durable. The shard task bumps a generation after every commit and wakes whoever waits;
//! readers take the generation *before* they read, and when the read finds nothing new they
//! wait for the generation to move past it, so that no commit between the read and the wait
//! is missed. Runtime-agnostic: the shard task runs on a glommio executor, readers on any
//! executor (the network front ends use tokio); it holds `std::task::Waker`s only.
#![forbid(unsafe_code)]

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

/// One shard's signal.
#[derive(Debug, Default)]
pub struct CommitSignal {
    generation: AtomicU64,
    waiting: Mutex<Vec<Waker>>,
}

impl CommitSignal {
    pub fn new() -> Arc<CommitSignal> {
        Arc::new(CommitSignal::default())
    }

    /// The current generation: take it before reading.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Something was committed (or the shard went away): wake every waiter.
    pub fn notify(&self) {
        self.generation.fetch_add(1, Ordering::SeqCst);
        let waiting = std::mem::take(&mut *self.waiting.lock().expect("not poisoned"));
        for waker in waiting {
            waker.wake();
        }
    }

    /// Resolves once the generation differs from `seen`.
    pub fn changed(self: &Arc<Self>, seen: u64) -> Changed {
        Changed { signal: self.clone(), seen }
    }
}

/// The future of [`CommitSignal::changed`].
#[derive(Debug)]
pub struct Changed {
    signal: Arc<CommitSignal>,
    seen: u64,
}

impl Future for Changed {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.signal.generation() != self.seen {
            return Poll::Ready(());
        }
        let mut waiting = self.signal.waiting.lock().expect("not poisoned");
        // Checked again under the lock: `notify` bumps the generation before it takes the
        // lock, so either this sees the new generation or `notify` sees this waker.
        if self.signal.generation() != self.seen {
            return Poll::Ready(());
        }
        // One waker per task: a task that polls again (or waits again after a timeout)
        // replaces its earlier one instead of piling them up.
        waiting.retain(|waker| !waker.will_wake(cx.waker()));
        waiting.push(cx.waker().clone());
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_waiter_wakes_on_the_next_commit_and_not_before() {
        let signal = CommitSignal::new();
        let seen = signal.generation();
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let waiter = {
            let signal = signal.clone();
            std::thread::spawn(move || {
                futures_lite::future::block_on(signal.changed(seen));
                done_tx.send(()).unwrap();
            })
        };
        assert!(done_rx.recv_timeout(Duration::from_millis(50)).is_err(), "woke without a commit");
        signal.notify();
        done_rx.recv_timeout(Duration::from_secs(5)).expect("woken by the commit");
        waiter.join().unwrap();
    }

    #[test]
    fn a_commit_before_the_wait_is_not_missed() {
        let signal = CommitSignal::new();
        let seen = signal.generation();
        signal.notify();
        futures_lite::future::block_on(signal.changed(seen));
    }

    #[test]
    fn polling_again_keeps_one_waker_per_task() {
        let signal = CommitSignal::new();
        let mut changed = signal.changed(signal.generation());
        struct Nothing;
        impl std::task::Wake for Nothing {
            fn wake(self: Arc<Self>) {}
        }
        let waker = Waker::from(Arc::new(Nothing));
        let mut cx = Context::from_waker(&waker);
        for _ in 0..10 {
            assert!(Pin::new(&mut changed).poll(&mut cx).is_pending());
        }
        assert_eq!(signal.waiting.lock().unwrap().len(), 1);
        signal.notify();
        assert!(Pin::new(&mut changed).poll(&mut cx).is_ready());
    }
}
