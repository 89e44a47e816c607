//! The go of a one-shot call, given by whichever of its two halves ends last: the
//! `started` entry made durable (on its own thread) or the sandbox started (its init
//! cloned, the id maps written). Usually the disk is the slower: its thread then gives
//! the go as the fdatasync returns, instead of waking the call's thread to give it
//! (a wake-up, 25–50 µs here, on every one-shot call's path).

use std::os::fd::OwnedFd;
use std::sync::Mutex;

#[derive(Default)]
pub(super) struct Gate {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    audited: bool,
    /// The go's pipe, once the sandbox has started (and while the go is not given).
    pipe: Option<OwnedFd>,
    went: Option<Went>,
}

/// The go's result, and when it was given (the call's timeout counts from there).
pub(super) type Went = (std::time::Instant, nix::Result<usize>);

fn give(pipe: &OwnedFd) -> Went {
    (std::time::Instant::now(), crate::spawn::give_go(pipe))
}

impl Gate {
    /// The `started` entry is durable.
    pub fn audited(&self) {
        let mut s = self.lock();
        s.audited = true;
        if let Some(pipe) = s.pipe.take() {
            s.went = Some(give(&pipe));
        }
    }

    /// The sandbox has started and waits for the go on `pipe`.
    pub fn started(&self, pipe: OwnedFd) {
        let mut s = self.lock();
        match s.audited {
            true => s.went = Some(give(&pipe)),
            false => s.pipe = Some(pipe),
        }
    }

    /// The go's result, if it was given here (both halves ended well).
    pub fn went(self) -> Option<Went> {
        self.state
            .into_inner()
            .unwrap_or_else(|e| e.into_inner())
            .went
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pipe() -> (OwnedFd, OwnedFd) {
        nix::unistd::pipe().unwrap()
    }

    fn read_all(r: OwnedFd) -> Vec<u8> {
        use std::io::Read;
        let mut out = Vec::new();
        std::fs::File::from(r).read_to_end(&mut out).unwrap();
        out
    }

    #[test]
    fn the_go_is_given_once_both_halves_ended_whatever_their_order() {
        for audited_first in [true, false] {
            let (r, w) = pipe();
            let gate = Gate::default();
            if audited_first {
                gate.audited();
                gate.started(w);
            } else {
                gate.started(w);
                gate.audited();
            }
            assert_eq!(gate.went().map(|(_, w)| w.unwrap()), Some(1));
            assert_eq!(read_all(r), b"g");
        }
    }

    #[test]
    fn no_go_without_a_durable_entry() {
        let (r, w) = pipe();
        let gate = Gate::default();
        gate.started(w);
        assert!(gate.went().is_none());
        assert_eq!(read_all(r), b"");
    }
}
