//! The admission bounds: how many calls may run at once, in total and per
//! action. A call over a bound is refused at once (429), never queued, so
//! admission needs only a count: a semaphore's waiter list, which tokio's
//! locks on every release, would be paid on every call for waiters that
//! never exist.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// At most `limit` holders of a [`Slot`] at once.
#[derive(Debug)]
pub(crate) struct Bound {
    limit: usize,
    taken: AtomicUsize,
}

/// One place within a [`Bound`], given back when dropped.
#[derive(Debug)]
pub(crate) struct Slot(Arc<Bound>);

impl Bound {
    pub(crate) fn new(limit: usize) -> Arc<Bound> {
        Arc::new(Bound {
            limit,
            taken: AtomicUsize::new(0),
        })
    }

    /// A slot, or `None` when all `limit` are taken.
    pub(crate) fn try_take(self: &Arc<Bound>) -> Option<Slot> {
        let taken = self.taken.fetch_add(1, Ordering::Acquire);
        if taken < self.limit {
            Some(Slot(Arc::clone(self)))
        } else {
            self.taken.fetch_sub(1, Ordering::Release);
            None
        }
    }

    /// Slots held now.
    #[cfg(test)]
    fn taken(&self) -> usize {
        self.taken.load(Ordering::Relaxed)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.taken.fetch_sub(1, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_more_than_the_limit_and_a_slot_given_back_is_free_again() {
        let bound = Bound::new(2);
        let first = bound.try_take().unwrap();
        let _second = bound.try_take().unwrap();
        assert!(bound.try_take().is_none());
        assert!(bound.try_take().is_none(), "a refusal takes nothing");
        drop(first);
        assert!(bound.try_take().is_some());
        assert_eq!(bound.taken(), 1);
    }

    #[test]
    fn a_limit_of_zero_admits_nothing() {
        assert!(Bound::new(0).try_take().is_none());
    }

    #[test]
    fn many_threads_never_hold_more_than_the_limit() {
        let bound = Bound::new(3);
        let (holding, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (bound, holding, most) =
                    (Arc::clone(&bound), Arc::clone(&holding), Arc::clone(&most));
                std::thread::spawn(move || {
                    for _ in 0..20_000 {
                        if let Some(slot) = bound.try_take() {
                            let now = holding.fetch_add(1, Ordering::SeqCst) + 1;
                            most.fetch_max(now, Ordering::SeqCst);
                            holding.fetch_sub(1, Ordering::SeqCst);
                            drop(slot);
                        }
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        assert!(most.load(Ordering::Relaxed) <= 3);
        assert_eq!(bound.taken(), 0);
    }
}
