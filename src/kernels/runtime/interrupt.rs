//! Cooperative cancellation: a long call stops soon after Ctrl-C instead of running to the end.
//!
//! The host (the Python module) hooks SIGINT and calls [`request`] from the signal handler;
//! kernels poll [`pending`] between row blocks, tiles or batches and return early (with
//! meaningless partial results) when it is set; the caller that entered with [`Active::enter`]
//! sees [`pending`] after the kernel returns and reports an interruption instead of a result.
//!
//! The flag is only set while at least one call is active, and it is cleared when the last
//! active call leaves: a Ctrl-C pressed while no kernel runs is Python's business alone and
//! never cancels a later call. (Polars' own engine uses the same scheme for its queries.)
//!
//! State: bit 0 is the flag, the other bits count active calls. Everything is one atomic word,
//! so [`request`] is async-signal-safe.

use std::sync::atomic::{AtomicU64, Ordering};

const FLAG: u64 = 1;
const ONE_CALL: u64 = 2;

/// The flag and the count of active calls (one word; the process has one, [`GLOBAL`]).
pub struct Interrupts(AtomicU64);

impl Interrupts {
    pub const fn new() -> Self {
        Self(AtomicU64::new(0))
    }

    #[inline]
    pub fn pending(&self) -> bool {
        self.0.load(Ordering::Relaxed) & FLAG != 0
    }

    pub fn request(&self) {
        let _ =
            self.0.fetch_update(Ordering::AcqRel, Ordering::Relaxed, |s| (s >= ONE_CALL).then_some(s | FLAG));
    }

    fn enter(&self) {
        self.0.fetch_add(ONE_CALL, Ordering::AcqRel);
    }

    fn leave(&self) {
        let _ = self.0.fetch_update(Ordering::AcqRel, Ordering::Relaxed, |s| {
            Some(if s >> 1 <= 1 { 0 } else { s - ONE_CALL })
        });
    }
}

impl Default for Interrupts {
    fn default() -> Self {
        Self::new()
    }
}

/// This process's state, set by the SIGINT hook and read by every kernel.
pub static GLOBAL: Interrupts = Interrupts::new();

/// Whether an interrupt arrived while a call was active (cheap: one atomic load).
#[inline]
pub fn pending() -> bool {
    GLOBAL.pending()
}

/// Ask active calls to stop (from a signal handler: one atomic operation, no allocation).
/// Does nothing when no call is active.
pub fn request() {
    GLOBAL.request();
}

/// Marks a call as active for its lifetime.
#[must_use = "the call is active only while the guard lives"]
pub struct Active(());

impl Active {
    pub fn enter() -> Self {
        GLOBAL.enter();
        Active(())
    }
}

impl Drop for Active {
    fn drop(&mut self) {
        GLOBAL.leave();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // A private state: the global one is read by every kernel test running in parallel.
    #[test]
    fn flag_lives_while_calls_are_active() {
        let s = Interrupts::new();
        s.request(); // no active call: ignored
        assert!(!s.pending());
        s.enter();
        s.enter();
        assert!(!s.pending());
        s.request();
        assert!(s.pending());
        s.leave();
        assert!(s.pending(), "still one active call");
        s.leave();
        assert!(!s.pending(), "cleared when the last call leaves");
        s.enter();
        assert!(!s.pending(), "a new call starts clean");
    }
}
