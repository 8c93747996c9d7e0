//! Process-wide registry of prepared NormSim targets.
//!
//! A target (thousands to millions of embeddings) is converted, normalised and, for `p = 2`,
//! reduced to its Gram matrix once, when Python registers it; expressions carry only its key.
//! So a streaming query that calls `normsim` once per morsel never re-reads or re-prepares it.
//! The key is a hash of the target's bytes and parameters, so registering the same target twice
//! prepares it once. Targets live until the process ends.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use polars::prelude::*;

use crate::kernels::isa::Kernel;
use crate::kernels::normsim::{Power, Target};
use crate::kernels::pool::pool;
use crate::kernels::{Matrix, Values};

fn registry() -> &'static Mutex<HashMap<u64, Arc<Target>>> {
    static REG: OnceLock<Mutex<HashMap<u64, Arc<Target>>>> = OnceLock::new();
    REG.get_or_init(Default::default)
}

/// How many targets this process has prepared (tests check that it is once per target).
pub static PREPARED: AtomicUsize = AtomicUsize::new(0);

/// The key under which `(bytes, rows, dim, p, normalize)` is registered (`bytes`: the target's
/// little-endian `f32` values): XXH3-64 of the parameters and the bytes.
pub fn key(bytes: &[u8], rows: usize, dim: usize, p: f64, normalize: bool) -> u64 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(&(rows as u64).to_le_bytes());
    h.update(&(dim as u64).to_le_bytes());
    h.update(&p.to_bits().to_le_bytes());
    h.update(&[u8::from(normalize)]);
    h.update(bytes);
    // 63 bits: the key travels through the expression's pickled kwargs as a Python int, which
    // serde-pickle reads back as an i64.
    h.digest() >> 1
}

/// Prepares and registers a target given as little-endian `f32` bytes (idempotent); returns its
/// key.
pub fn register(bytes: &[u8], rows: usize, dim: usize, p: f64, normalize: bool) -> Result<u64, String> {
    if Some(bytes.len()) != rows.checked_mul(dim).and_then(|v| v.checked_mul(4)) {
        return Err(format!("target: expected {rows} x {dim} float32 values, got {} bytes", bytes.len()));
    }
    // The process's kernel (fixed for its life, so a registered target always matches it).
    let kernel = Kernel::selected().map_err(|e| e.to_string())?;
    let k = key(bytes, rows, dim, p, normalize);
    if registry().lock().map_err(|e| e.to_string())?.contains_key(&k) {
        return Ok(k);
    }
    // Read the bytes in place when they are aligned floats in this machine's order (a Python
    // `bytes` object's data always is aligned on little-endian machines); copy otherwise.
    let copied: Vec<f32>;
    let values: &[f32] = match bytemuck::try_cast_slice::<u8, f32>(bytes) {
        Ok(v) if cfg!(target_endian = "little") => v,
        _ => {
            copied = bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
            &copied
        }
    };
    let m = Matrix::new(Values::F32(values), rows, dim, None).map_err(|e| format!("target: {e}"))?;
    let target = pool()
        .install(|| Target::prepare(kernel, &m, Power::from_p(p), normalize))
        .map_err(|e| format!("target: {e}"))?;
    PREPARED.fetch_add(1, Ordering::Relaxed);
    registry().lock().map_err(|e| e.to_string())?.insert(k, Arc::new(target));
    Ok(k)
}

/// The target registered under `key`.
pub fn get(key: u64) -> PolarsResult<Arc<Target>> {
    let reg = registry().lock().map_err(|e| polars_err!(ComputeError: "target registry poisoned: {e}"))?;
    reg.get(&key).cloned().ok_or_else(|| {
        polars_err!(
            ComputeError: "`target` is not registered in this process; build the expression with \
             polars_curate.normsim(...) in the process that runs the query"
        )
    })
}
