//! The Python module `polars_curate._internal`: helpers Python calls directly (the plugin
//! expressions themselves are exported by `expressions`).

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3_polars::PolarsAllocator;

use polars::prelude::PolarsError;
use pyo3_polars::PySeries;

use crate::expressions::Embeddings;
use crate::kernels::engine::isa::Kernel;
use crate::kernels::runtime::{interrupt, memory, threads};
use crate::kernels::scores::kmeans::{self, KMeansParams};
use crate::kernels::scores::partition;
use crate::{expressions, targets};

#[global_allocator]
static ALLOC: PolarsAllocator = PolarsAllocator::new();

/// Content key of a target given as little-endian `float32` bytes (`rows x dim`, row-major):
/// what a `normsim` expression carries to find its prepared target.
#[pyfunction]
fn target_key(py: Python<'_>, data: &[u8], rows: usize, dim: usize) -> PyResult<u64> {
    if Some(data.len()) != rows.checked_mul(dim).and_then(|v| v.checked_mul(4)) {
        return Err(PyValueError::new_err(format!(
            "expected {rows} x {dim} float32 values, got {} bytes",
            data.len()
        )));
    }
    Ok(py.detach(|| targets::key(data, rows, dim)))
}

/// The same key computed over `float32` bytes given in pieces (for targets too large to copy
/// into one `bytes`): `update` each row-major piece in order, then `digest`.
#[pyclass(module = "polars_curate._internal")]
struct TargetHasher {
    state: xxhash_rust::xxh3::Xxh3,
}

#[pymethods]
impl TargetHasher {
    #[new]
    fn new(rows: usize, dim: usize) -> Self {
        Self { state: targets::hasher(rows, dim) }
    }

    fn update(&mut self, py: Python<'_>, data: &[u8]) {
        py.detach(|| self.state.update(data));
    }

    fn digest(&self) -> u64 {
        self.state.digest() >> 1
    }
}

/// Raises `ValueError` when the pickled `kwargs` of expression `name` are out of range, with
/// the message the plugin would give when the query runs.
#[pyfunction]
fn validate(name: &str, kwargs: &[u8]) -> PyResult<()> {
    expressions::validate(name, kwargs).map_err(PyValueError::new_err)
}

/// Batch number of each of `n` rows in partition `k` of negCLIPLoss (see `kernels::scores::partition`).
#[pyfunction]
fn batch_assignment(py: Python<'_>, n: usize, batch_size: usize, seed: u64, k: u64) -> PyResult<Vec<u32>> {
    if batch_size == 0 {
        return Err(PyValueError::new_err("`batch_size` must be >= 1, got 0"));
    }
    if n > u32::MAX as usize {
        return Err(PyValueError::new_err(format!("`n` must be at most {} rows, got {n}", u32::MAX)));
    }
    // The permutation (8 bytes a row), the result (4) and the Python list made from it (~40).
    memory::check(n as u128 * 52, || format!("batch_assignment of {n} rows"))
        .map_err(|e| PyValueError::new_err(e.to_string()))?;
    Ok(py.detach(|| partition::batch_of_rows(n, batch_size, seed, k)))
}

/// Spherical k-means of the rows of `sample` (an `Array` column of embeddings): the `k x d`
/// unit centroids as little-endian `float32` bytes. `on_step(iteration, objective, moved,
/// empty)` is called after each iteration (the progress line; returning `False` stops early).
/// The work runs on the plugin's pool without the GIL; Ctrl-C stops it between tiles.
#[pyfunction]
fn kmeans_fit(
    py: Python<'_>,
    sample: PySeries,
    k: usize,
    iters: usize,
    seed: u64,
    on_step: Bound<'_, PyAny>,
) -> PyResult<Vec<u8>> {
    let params = KMeansParams { k, iters, seed };
    params.validate().map_err(PyValueError::new_err)?;
    let emb = Embeddings::new(&sample.0, "sample").map_err(|e| PyValueError::new_err(e.to_string()))?;
    let kernel = Kernel::selected().map_err(|e| PyValueError::new_err(e.to_string()))?;
    let pool = threads::try_pool().map_err(|e| PyValueError::new_err(e.to_string()))?;
    let callback = on_step.unbind();
    let mut failed: Option<PyErr> = None;
    // Held until the interrupt is read below (dropping the last guard clears the flag).
    let _active = interrupt::Active::enter();
    let fitted = py.detach(|| {
        let m = emb.matrix("sample")?;
        // A panic (a bug) becomes an error, never an abort of the user's Python.
        Ok::<_, PolarsError>(pool.install(|| {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                kmeans::fit(kernel, &m, &params, |it, s| {
                    if interrupt::pending() {
                        return false;
                    }
                    Python::attach(|py| match callback.call1(py, (it, s.objective, s.moved, s.empty)) {
                        Ok(v) => v.is_truthy(py).unwrap_or(true),
                        Err(e) => {
                            failed = Some(e);
                            false
                        }
                    })
                })
            }))
        }))
    });
    if interrupt::pending() {
        return Err(pyo3::exceptions::PyKeyboardInterrupt::new_err("k-means interrupted"));
    }
    if let Some(e) = failed {
        return Err(e);
    }
    let centroids = fitted
        .map_err(|e| PyValueError::new_err(e.to_string()))?
        .map_err(|_| PyValueError::new_err("k-means failed (a bug: a panic; please report it)"))?
        .map_err(|e| PyValueError::new_err(e.to_string()))?;
    Ok(bytemuck::cast_slice(&centroids).to_vec())
}

/// Worker threads of the plugin's pool.
#[pyfunction]
fn thread_count() -> PyResult<usize> {
    Ok(threads::try_pool().map_err(|e| PyValueError::new_err(e.to_string()))?.current_num_threads())
}

/// The name of this process's kernel (`POLARS_CURATE_KERNEL`, read once, or the best this CPU
/// runs); `ValueError` saying why when the pinned one cannot run.
#[pyfunction]
fn kernel() -> PyResult<&'static str> {
    Kernel::selected().map(|k| k.name()).map_err(|e| PyValueError::new_err(e.to_string()))
}

/// The kernels this CPU and build can run, most portable first (any of them can be pinned with
/// `POLARS_CURATE_KERNEL` before the first use).
#[pyfunction]
fn available_kernels() -> Vec<&'static str> {
    Kernel::available().into_iter().map(|k| k.name()).collect()
}

/// Use `n` worker threads from the next call on (`0`: back to `POLARS_MAX_THREADS` or the
/// number of cores).
#[pyfunction]
fn set_thread_count(n: usize) {
    threads::set_threads(n);
}

/// Where plugin calls run their kernel from the next call on: `"auto"` (the default: on the
/// calling thread when Polars calls in parallel, else on the pool), `"pool"` or `"caller"`.
#[pyfunction]
fn set_thread_mode(mode: &str) -> PyResult<()> {
    let m = threads::Mode::parse(mode).ok_or_else(|| {
        PyValueError::new_err(format!("thread mode must be auto, pool or caller, got {mode:?}"))
    })?;
    threads::set_mode(m);
    Ok(())
}

/// `(mode, calls run on their calling thread, calls run on the pool)`.
#[pyfunction]
fn thread_placements() -> (&'static str, usize, usize) {
    let (caller, pool) = threads::placements();
    (threads::mode().name(), caller, pool)
}

/// `(entries, bytes, hits, misses)` of this process's cache of prepared targets.
#[pyfunction]
fn target_cache_info() -> (usize, usize, u64, u64) {
    targets::info()
}

/// Releases every prepared target no running query is using.
#[pyfunction]
fn target_cache_clear() {
    targets::clear();
}

#[pymodule]
fn _internal(m: &Bound<'_, PyModule>) -> PyResult<()> {
    // Ctrl-C asks running kernels to stop (see `kernels::runtime::interrupt`). signal-hook chains to the
    // handler already installed (Python's, or Polars' which chains to Python's), so Python still
    // raises KeyboardInterrupt.
    // SAFETY: the action is one atomic operation, which is async-signal-safe.
    unsafe {
        signal_hook::low_level::register(
            signal_hook::consts::SIGINT,
            crate::kernels::runtime::interrupt::request,
        )
        .map_err(|e| PyValueError::new_err(format!("cannot hook Ctrl-C: {e}")))?;
    }
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add("INLINE_TARGET_MAX", targets::INLINE_MAX)?;
    // The kernels' own ranges, so the Python layer checks (and states) the same ones.
    m.add("MAX_NUM_BATCHES", crate::kernels::scores::negclip::MAX_NUM_BATCHES)?;
    m.add("MAX_STEPS", crate::kernels::scores::dynamic::MAX_STEPS)?;
    m.add("MAX_TOTAL", crate::kernels::scores::sampling::MAX_TOTAL)?;
    m.add_function(wrap_pyfunction!(target_key, m)?)?;
    m.add_class::<TargetHasher>()?;
    m.add_function(wrap_pyfunction!(validate, m)?)?;
    m.add_function(wrap_pyfunction!(batch_assignment, m)?)?;
    m.add_function(wrap_pyfunction!(kmeans_fit, m)?)?;
    m.add_function(wrap_pyfunction!(thread_count, m)?)?;
    m.add_function(wrap_pyfunction!(kernel, m)?)?;
    m.add_function(wrap_pyfunction!(available_kernels, m)?)?;
    m.add_function(wrap_pyfunction!(set_thread_count, m)?)?;
    m.add_function(wrap_pyfunction!(set_thread_mode, m)?)?;
    m.add_function(wrap_pyfunction!(thread_placements, m)?)?;
    m.add_function(wrap_pyfunction!(target_cache_info, m)?)?;
    m.add_function(wrap_pyfunction!(target_cache_clear, m)?)?;
    Ok(())
}
