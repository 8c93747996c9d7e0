//! The Python module `polars_curate._internal`: helpers Python calls directly (the plugin
//! expressions themselves are exported by `expressions`).

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3_polars::PolarsAllocator;

use crate::{expressions, kernels, targets};

#[global_allocator]
static ALLOC: PolarsAllocator = PolarsAllocator::new();

/// Prepares a NormSim target from little-endian `float32` bytes (`rows x dim`, row-major) and
/// returns the key that `normsim` expressions refer to.
#[pyfunction]
fn register_target(
    py: Python<'_>,
    data: &[u8],
    rows: usize,
    dim: usize,
    p: f64,
    normalize: bool,
) -> PyResult<u64> {
    py.detach(|| targets::register(data, rows, dim, p, normalize)).map_err(PyValueError::new_err)
}

/// Batch number of each of `n` rows in partition `k` of negCLIPLoss (see `kernels::partition`).
#[pyfunction]
fn batch_assignment(n: usize, batch_size: usize, seed: u64, k: u64) -> PyResult<Vec<u32>> {
    if batch_size == 0 {
        return Err(PyValueError::new_err("batch_size must be >= 1"));
    }
    Ok(kernels::partition::batch_of_rows(n, batch_size, seed, k))
}

/// Worker threads of the plugin's pool (`POLARS_MAX_THREADS` or the number of cores).
#[pyfunction]
fn thread_count() -> usize {
    kernels::pool::pool().current_num_threads()
}

/// The name of this process's kernel (`POLARS_CURATE_KERNEL`, read once, or the best this CPU
/// runs); `ValueError` saying why when the pinned one cannot run.
#[pyfunction]
fn kernel() -> PyResult<&'static str> {
    kernels::isa::Kernel::selected().map(|k| k.name()).map_err(|e| PyValueError::new_err(e.to_string()))
}

/// The kernels this CPU and build can run, most portable first (any of them can be pinned with
/// `POLARS_CURATE_KERNEL` before the first use).
#[pyfunction]
fn available_kernels() -> Vec<&'static str> {
    kernels::isa::Kernel::available().into_iter().map(|k| k.name()).collect()
}

/// Counters for tests: `(targets prepared, normsim calls, most rows in one normsim call)`.
#[pyfunction]
fn stats() -> (usize, usize, usize) {
    use std::sync::atomic::Ordering::Relaxed;
    (
        targets::PREPARED.load(Relaxed),
        expressions::NORMSIM_CALLS.load(Relaxed),
        expressions::NORMSIM_MAX_ROWS.load(Relaxed),
    )
}

#[pymodule]
fn _internal(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_function(wrap_pyfunction!(register_target, m)?)?;
    m.add_function(wrap_pyfunction!(batch_assignment, m)?)?;
    m.add_function(wrap_pyfunction!(thread_count, m)?)?;
    m.add_function(wrap_pyfunction!(kernel, m)?)?;
    m.add_function(wrap_pyfunction!(available_kernels, m)?)?;
    m.add_function(wrap_pyfunction!(stats, m)?)?;
    Ok(())
}
