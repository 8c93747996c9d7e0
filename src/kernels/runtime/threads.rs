//! The one thread pool all plugin work runs on.
//!
//! Why a dedicated pool: Polars calls an elementwise plugin from several of its own threads at
//! once (one per morsel in the streaming engine). If every call spread its work over all cores
//! we would run `threads x threads` busy threads. Instead every call hands its work to this
//! pool and blocks; the calling Polars threads sleep meanwhile, so at most that many threads
//! compute at any moment, and a single large expression still keeps every core busy.
//!
//! One level of parallelism ([`run`], [`Mode`]): when the caller says it already calls in
//! parallel (pyo3-polars' `CallerContext::parallel`), a call runs on the calling thread instead,
//! sequentially inside (the thread's own one-thread rayon pool, the thread itself). Polars 2.1
//! never says so (its `call_plugin` passes a default context), so today every call takes the
//! pool; `benches/bench_threads.py` measured no gain from the calling thread in a streaming
//! `sink_parquet` on 2 cores (README, Design, Threads). [`set_mode`] forces either placement.
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

/// Where a plugin call runs its kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// On the calling thread when the caller already runs calls in parallel, else on the pool:
    /// one level of parallelism either way. The default.
    Auto,
    /// Always on the pool (the caller waits).
    Pool,
    /// Always on the calling thread, sequential inside.
    Caller,
}

impl Mode {
    pub const ALL: [Mode; 3] = [Mode::Auto, Mode::Pool, Mode::Caller];

    pub fn name(self) -> &'static str {
        match self {
            Mode::Auto => "auto",
            Mode::Pool => "pool",
            Mode::Caller => "caller",
        }
    }

    pub fn parse(name: &str) -> Option<Mode> {
        Mode::ALL.into_iter().find(|m| m.name() == name)
    }
}

/// [`Mode`] as a number (its index in [`Mode::ALL`]).
static MODE: AtomicUsize = AtomicUsize::new(0);

/// Place calls as `mode` says from the next call on.
pub fn set_mode(mode: Mode) {
    MODE.store(Mode::ALL.iter().position(|&m| m == mode).unwrap_or(0), Ordering::Relaxed);
}

pub fn mode() -> Mode {
    Mode::ALL[MODE.load(Ordering::Relaxed).min(2)]
}

/// Calls run on the calling thread and on the pool since the process started.
static ON_CALLER: AtomicUsize = AtomicUsize::new(0);
static ON_POOL: AtomicUsize = AtomicUsize::new(0);

/// `(calls run on their calling thread, calls run on the pool)` so far.
pub fn placements() -> (usize, usize) {
    (ON_CALLER.load(Ordering::Relaxed), ON_POOL.load(Ordering::Relaxed))
}

thread_local! {
    /// This thread's own pool of one thread, the thread itself (rayon's `use_current_thread`):
    /// `install` runs a call right here and its parallel loops sequentially. Built at the
    /// thread's first call on itself; `None` if rayon refuses (a thread of another pool).
    static OWN: Option<rayon::ThreadPool> =
        rayon::ThreadPoolBuilder::new().num_threads(1).use_current_thread().build().ok();
}

/// Runs `f` (a kernel, parallel on the current rayon pool) where [`mode`] says, `parallel`
/// telling whether the caller already runs calls like this one in parallel: on the plugin's
/// pool, or sequentially on the calling thread. Results do not depend on which (the kernels'
/// work is split in fixed tiles combined in a fixed order).
pub fn run<T: Send>(parallel: bool, f: impl FnOnce() -> T + Send) -> Result<T, PoolError> {
    let on_caller = match mode() {
        Mode::Auto => parallel,
        Mode::Pool => false,
        Mode::Caller => true,
    };
    if on_caller && OWN.with(Option::is_some) {
        ON_CALLER.fetch_add(1, Ordering::Relaxed);
        // (`OWN` is `Some` here: it was built above and is never taken.)
        return Ok(OWN.with(|own| match own {
            Some(pool) => pool.install(f),
            None => f(),
        }));
    }
    ON_POOL.fetch_add(1, Ordering::Relaxed);
    Ok(try_pool()?.install(f))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_on_the_pool_or_the_calling_thread() {
        let here = std::thread::current().id();
        let (caller0, pool0) = placements();
        // On the calling thread: the same thread, one rayon thread, sequential inside.
        let (id, n) = run(true, || (std::thread::current().id(), rayon::current_num_threads())).unwrap();
        assert_eq!((id, n), (here, 1));
        // On the pool: one of its threads.
        let name = run(false, || std::thread::current().name().map(str::to_owned)).unwrap();
        assert!(name.is_some_and(|n| n.starts_with("polars-curate-")));
        let (caller1, pool1) = placements();
        assert!(caller1 > caller0 && pool1 > pool0);
        // The same sums either way (a parallel sum on the pool, a sequential one here).
        let v: Vec<f64> = (0..100_000).map(|i| (i as f64).sqrt()).collect();
        let sum = || {
            use rayon::prelude::*;
            v.par_chunks(1000).map(|c| c.iter().sum::<f64>()).collect::<Vec<_>>()
        };
        assert_eq!(run(true, sum).unwrap(), run(false, sum).unwrap());
        for m in Mode::ALL {
            assert_eq!(Mode::parse(m.name()), Some(m));
        }
    }

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
