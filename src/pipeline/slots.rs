//! How many plugins a batch runs at a time (`--parallel N`).
//!
//! A batch prepares more calls than it runs: a call that waits for a slot has its
//! sandbox's init cloned and its `started` entry durable, so that the fsync of that
//! entry (the wait that left the CPUs idle) overlaps other calls' plugins. A slot is
//! held from the go until the call's whole tree is reaped.

use crate::spawn::stop::{Watch, Why};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

/// How often a call waiting for a slot looks whether it must stop: a stop is a
/// signal's flag or another thread's cancel, which cannot wake a condition variable.
const STOP_POLL: Duration = Duration::from_millis(20);

#[derive(Debug)]
pub struct Slots {
    free: Mutex<usize>,
    freed: Condvar,
}

/// One running call's slot, given back when dropped.
#[derive(Debug)]
pub struct Slot<'a>(&'a Slots);

impl Slots {
    pub fn new(n: usize) -> Slots {
        Slots {
            free: Mutex::new(n.max(1)),
            freed: Condvar::new(),
        }
    }

    /// Waits for a free slot, or until the call must stop (then it does not run).
    pub fn take(&self, stop: &Watch) -> Result<Slot<'_>, Why> {
        let mut free = self.free.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(why) = stop.stopped() {
                // The wake-up this call may have taken is another waiter's.
                if *free > 0 {
                    self.freed.notify_one();
                }
                return Err(why);
            }
            if *free > 0 {
                *free -= 1;
                return Ok(Slot(self));
            }
            free = self
                .freed
                .wait_timeout(free, STOP_POLL)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        *self.0.free.lock().unwrap_or_else(|e| e.into_inner()) += 1;
        self.0.freed.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spawn::stop::Cancel;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn no_more_than_n_are_held_at_once() {
        let slots = Slots::new(2);
        let (held, most) = (AtomicUsize::new(0), AtomicUsize::new(0));
        std::thread::scope(|s| {
            for _ in 0..6 {
                s.spawn(|| {
                    for _ in 0..50 {
                        let _slot = slots.take(&Watch::default()).unwrap();
                        let now = held.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_micros(200));
                        held.fetch_sub(1, Ordering::SeqCst);
                    }
                });
            }
        });
        assert_eq!(most.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn a_call_stopped_while_it_waits_gets_no_slot() {
        let slots = Slots::new(1);
        let _held = slots.take(&Watch::default()).unwrap();
        let cancel = Cancel::new().unwrap();
        let watch = Watch::with(cancel.clone());
        let fire = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            cancel.fire(Why::Cancelled);
        });
        assert_eq!(slots.take(&watch).unwrap_err(), Why::Cancelled);
        fire.join().unwrap();
    }
}
