//! The one thread pool all plugin work runs on.
//!
//! Why a dedicated pool: Polars calls an elementwise plugin from several of its own threads at
//! once (one per morsel in the streaming engine). If every call spread its work over all cores
//! we would run `threads x threads` busy threads. Instead every call hands its work to this
//! pool and blocks; the calling Polars threads sleep meanwhile, so at most that many threads
//! compute at any moment, and a single large expression still keeps every core busy.
//!
//! Size: [`set_threads`] if called, else `POLARS_MAX_THREADS` if set to a positive integer (read
//! once per process, [`crate::settings`]), else the number of cores. A Ray task (or any host that
//! hands a process a share of a machine) sets it to the CPUs it was given.
//!
//! Fork safety: a child made by `fork()` inherits this process's memory but none of its threads,
//! so a pool built before the fork would wait forever for workers that do not exist. The pool
//! remembers the process id it was built in; a call from another process (the child) builds a
//! fresh pool there, and the parent's, whose threads do not exist in the child, is leaked rather
//! than dropped (dropping would signal threads that are not there).
//!
//! Results never depend on the pool size: work is split into fixed-size tiles whose results are
//! combined in a fixed order (tested with 1 and 3 threads).

use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// Number of worker threads the next pool gets: [`set_threads`], else `POLARS_MAX_THREADS` if
/// set to a positive integer, else the number of cores.
pub fn threads() -> usize {
    match REQUESTED.load(Ordering::Relaxed) {
        0 => crate::settings::get()
            .max_threads
            .unwrap_or_else(|| std::thread::available_parallelism().unwrap_or(NonZeroUsize::MIN))
            .get(),
        n => n,
    }
}

/// Threads asked for by [`set_threads`] (0: not set).
static REQUESTED: AtomicUsize = AtomicUsize::new(0);

/// Use `n` worker threads from the next call on (`0`: back to the default). Calls in flight
/// finish on the pool they started on.
pub fn set_threads(n: usize) {
    REQUESTED.store(n, Ordering::Relaxed);
}

struct Current {
    pid: u32,
    threads: usize,
    pool: Arc<rayon::ThreadPool>,
}

static CURRENT: Mutex<Option<Current>> = Mutex::new(None);

/// Why the pool could not be built (the OS refused to start threads).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolError(pub String);

impl std::fmt::Display for PoolError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "polars-curate could not start its worker threads: {}", self.0)
    }
}

impl std::error::Error for PoolError {}

/// The pool of this process, built on first use, rebuilt after a fork or a [`set_threads`].
pub fn try_pool() -> Result<Arc<rayon::ThreadPool>, PoolError> {
    let pid = std::process::id();
    let want = threads();
    let mut cur = CURRENT.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(c) = cur.as_ref() {
        if c.pid == pid && c.threads == want {
            return Ok(c.pool.clone());
        }
    }
    if let Some(old) = cur.take() {
        if old.pid != pid {
            // Built by the parent before a fork: its threads do not exist here.
            std::mem::forget(old.pool);
        }
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(want)
        .thread_name(|i| format!("polars-curate-{i}"))
        .build()
        .map_err(|e| PoolError(e.to_string()))?;
    let pool = Arc::new(pool);
    *cur = Some(Current { pid, threads: want, pool: pool.clone() });
    Ok(pool)
}

/// [`try_pool`] for callers that cannot report an error (benchmarks, tests).
///
/// # Panics
/// When the OS refuses to start threads.
pub fn pool() -> Arc<rayon::ThreadPool> {
    try_pool().unwrap_or_else(|e| panic!("{e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resizes_on_request() {
        set_threads(3);
        assert_eq!(pool().current_num_threads(), 3);
        set_threads(1);
        assert_eq!(pool().current_num_threads(), 1);
        set_threads(0);
        assert_eq!(pool().current_num_threads(), threads());
    }
}
