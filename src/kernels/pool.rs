//! The one thread pool all plugin work runs on.
//!
//! Why a dedicated pool: Polars calls an elementwise plugin from several of its own threads at
//! once (one per morsel in the streaming engine). If every call spread its work over all cores
//! we would run `threads x threads` busy threads. Instead every call hands its work to this
//! fixed pool of `POLARS_MAX_THREADS` (default: all cores) workers and blocks; the calling
//! Polars threads sleep meanwhile, so at most that many threads compute at any moment, and a
//! single large expression still keeps every core busy.
//!
//! Results never depend on the pool size: work is split into fixed-size tiles whose results are
//! combined in a fixed order (tested with 1 and 3 threads).

use std::sync::OnceLock;

/// Number of worker threads: `POLARS_MAX_THREADS` if set to a positive integer, else the number
/// of cores.
pub fn threads() -> usize {
    std::env::var("POLARS_MAX_THREADS")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// The process-wide pool (built on first use).
pub fn pool() -> &'static rayon::ThreadPool {
    static POOL: OnceLock<rayon::ThreadPool> = OnceLock::new();
    POOL.get_or_init(|| {
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads())
            .thread_name(|i| format!("polars-curate-{i}"))
            .build()
            // Only fails when the OS refuses to start threads; the expression layer turns the
            // panic into a Python error.
            .expect("polars-curate could not start its worker threads")
    })
}
