//! NormSim targets travel inside the expression; prepared targets are cached by content.
//!
//! An expression carries its target as a [`TargetSpec`]: the target's `float32` values inline
//! (up to [`INLINE_MAX`] bytes) or the path of a `.npy` file holding them, plus their content key
//! (XXH3 of the shape and the bytes). So an expression is a self-contained value: a query plan
//! serialised in one process (`LazyFrame.serialize`) runs in another, and a Ray worker needs
//! nothing but the plan.
//!
//! Preparing a target (normalising, packing, and for `p = 2` the Gram matrix) happens on first
//! use in each process and is cached by `(key, p, normalize)`, so a streaming query that calls
//! `normsim` once per morsel prepares once. The cache holds at most
//! `POLARS_CURATE_TARGET_CACHE_MB` MiB (default 2048) of prepared targets, least recently used
//! out first, and drops any target no query has used for `POLARS_CURATE_TARGET_IDLE_S` seconds
//! (default 60; both read once per process, see [`crate::settings`]): Polars gives a plugin no
//! signal when an expression is dropped, so "no longer used by any expression" is observed as
//! "not used for a while". A dropped target is prepared again if a query uses it later.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Instant;

use polars::prelude::*;
use serde::Deserialize;

use crate::kernels::engine::isa::Kernel;
use crate::kernels::runtime::threads::try_pool;
use crate::kernels::scores::normsim::{Power, Target};
use crate::kernels::{Matrix, Values};

/// Largest target carried inline in an expression's kwargs (bigger ones travel as a path).
pub const INLINE_MAX: usize = 64 << 20;

/// A target as an expression carries it (built by `polars_curate._expr`).
#[derive(Deserialize, Clone)]
pub struct TargetSpec {
    /// [`key`] of the `float32` values.
    pub key: u64,
    pub rows: usize,
    pub dim: usize,
    /// The values, little-endian `float32`, row-major (`rows * dim * 4` bytes).
    #[serde(default)]
    pub data: Option<serde_bytes::ByteBuf>,
    /// Or a `.npy` file (`<f4`, C order, shape `(rows, dim)`) holding them.
    #[serde(default)]
    pub path: Option<String>,
}

/// The content key of a target: XXH3-64 of `rows`, `dim` and the little-endian `float32`
/// bytes, cut to 63 bits (it travels as a Python int that serde-pickle reads as an `i64`).
pub fn key(bytes: &[u8], rows: usize, dim: usize) -> u64 {
    let mut h = hasher(rows, dim);
    h.update(bytes);
    h.digest() >> 1
}

/// The hasher behind [`key`], fed the shape; `update` it with the bytes, then `digest() >> 1`.
pub fn hasher(rows: usize, dim: usize) -> xxhash_rust::xxh3::Xxh3 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(&(rows as u64).to_le_bytes());
    h.update(&(dim as u64).to_le_bytes());
    h
}

type Slot = Arc<OnceLock<Result<Arc<Target>, String>>>;

struct Entry {
    slot: Slot,
    bytes: usize,
    last_used: Instant,
}

#[derive(Default)]
struct Cache {
    /// By `(content key, p bits, normalize, kernel)`: a target is packed for one kernel.
    entries: HashMap<(u64, u64, bool, Kernel), Entry>,
    hits: u64,
    misses: u64,
}

fn cache() -> &'static Mutex<Cache> {
    static CACHE: OnceLock<Mutex<Cache>> = OnceLock::new();
    CACHE.get_or_init(Default::default)
}

/// `(entries, bytes, hits, misses)` of this process's cache (what `target_cache_info` shows).
pub fn info() -> (usize, usize, u64, u64) {
    let c = cache().lock().unwrap_or_else(PoisonError::into_inner);
    (c.entries.len(), c.entries.values().map(|e| e.bytes).sum(), c.hits, c.misses)
}

/// Releases every cached target no call is using right now.
pub fn clear() {
    let mut c = cache().lock().unwrap_or_else(PoisonError::into_inner);
    c.entries.retain(|_, e| Arc::strong_count(&e.slot) > 1);
}

/// Drops idle entries, then least recently used ones while over budget; entries in use by a
/// running call (their slot is shared) are kept.
fn evict(c: &mut Cache, now: Instant) {
    let settings = crate::settings::get();
    let idle = settings.target_idle;
    c.entries.retain(|_, e| Arc::strong_count(&e.slot) > 1 || now.duration_since(e.last_used) < idle);
    let budget = settings.target_cache_bytes;
    loop {
        let total: usize = c.entries.values().map(|e| e.bytes).sum();
        if total <= budget {
            return;
        }
        let victim = c
            .entries
            .iter()
            .filter(|(_, e)| Arc::strong_count(&e.slot) == 1)
            .min_by_key(|(_, e)| e.last_used)
            .map(|(k, _)| *k);
        match victim {
            Some(k) => {
                c.entries.remove(&k);
            }
            None => return,
        }
    }
}

/// The prepared target of `spec` for `p` and `normalize`, packed for `kernel`: from the cache,
/// or loaded, checked against its key and prepared (once, even when many morsels ask at the
/// same time).
///
/// Call it outside the plugin's pool: the callers that wait for a preparation block their
/// thread, and a pool worker blocked here while it holds work stolen from that preparation
/// would never let it finish (a deadlock seen in about one run in six before this rule).
pub fn get(
    kernel: Kernel,
    spec: &TargetSpec,
    p: f64,
    normalize: bool,
    arg: &str,
) -> PolarsResult<Arc<Target>> {
    debug_assert!(
        crate::kernels::runtime::threads::try_pool()
            .map_or(true, |pool| pool.current_thread_index().is_none()),
        "targets::get called inside the plugin's pool"
    );
    let ck = (spec.key, p.to_bits(), normalize, kernel);
    let slot: Slot = {
        let mut c = cache().lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        let slot = if let Some(e) = c.entries.get_mut(&ck) {
            e.last_used = now;
            let slot = e.slot.clone();
            c.hits += 1;
            slot
        } else {
            let slot: Slot = Arc::default();
            // What the prepared form holds: the Gram matrix for p = 2 with more rows than
            // dimensions (see `Target::prepare`), else the packed rows.
            let rows = if p == 2.0 && spec.rows > spec.dim { spec.dim } else { spec.rows };
            let bytes = rows.saturating_mul(spec.dim).saturating_mul(4);
            c.entries.insert(ck, Entry { slot: slot.clone(), bytes, last_used: now });
            c.misses += 1;
            slot
        };
        // After the insertion, so that the budget holds with the new entry (which is in use
        // by this call, hence never the one evicted).
        evict(&mut c, now);
        slot
    };
    let result = slot.get_or_init(|| prepare(kernel, spec, p, normalize).map(Arc::new)).clone();
    match result {
        Ok(t) => Ok(t),
        Err(msg) => {
            // Do not keep a failure: the file may be fixed before the next try.
            let mut c = cache().lock().unwrap_or_else(PoisonError::into_inner);
            if c.entries.get(&ck).is_some_and(|e| Arc::ptr_eq(&e.slot, &slot)) {
                c.entries.remove(&ck);
            }
            polars_bail!(ComputeError: "`{arg}`: {msg}")
        }
    }
}

fn prepare(kernel: Kernel, spec: &TargetSpec, p: f64, normalize: bool) -> Result<Target, String> {
    let expected = spec
        .rows
        .checked_mul(spec.dim)
        .and_then(|v| v.checked_mul(4))
        .ok_or_else(|| format!("a {} x {} target is too large", spec.rows, spec.dim))?;
    let loaded: Vec<u8>;
    let bytes: &[u8] = match (&spec.data, &spec.path) {
        (Some(d), _) => d.as_slice(),
        (None, Some(path)) => {
            loaded = read_npy_f32(Path::new(path), spec.rows, spec.dim)?;
            &loaded
        }
        (None, None) => return Err("the expression carries no target data".into()),
    };
    if bytes.len() != expected {
        return Err(format!(
            "expected {} x {} float32 values, got {} bytes",
            spec.rows,
            spec.dim,
            bytes.len()
        ));
    }
    if key(bytes, spec.rows, spec.dim) != spec.key {
        return Err(match &spec.path {
            Some(path) => {
                format!("target file {path} changed since the expression was built; build it again")
            }
            None => "target data does not match its key (corrupt expression)".into(),
        });
    }
    // In place when the bytes are aligned floats in this machine's order; copied otherwise.
    let copied: Vec<f32>;
    let values: &[f32] = match bytemuck::try_cast_slice::<u8, f32>(bytes) {
        Ok(v) if cfg!(target_endian = "little") => v,
        _ => {
            copied = bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
            &copied
        }
    };
    let m = Matrix::new(Values::F32(values), spec.rows, spec.dim, None).map_err(|e| e.to_string())?;
    let pool = try_pool().map_err(|e| e.to_string())?;
    pool.install(|| Target::prepare(kernel, &m, Power::from_p(p), normalize)).map_err(|e| e.to_string())
}

/// The data of a `.npy` file of dtype `<f4`, C order, shape `(rows, dim)`.
fn read_npy_f32(path: &Path, rows: usize, dim: usize) -> Result<Vec<u8>, String> {
    let shown = path.display();
    let raw = std::fs::read(path).map_err(|e| format!("cannot read target file {shown}: {e}"))?;
    let bad = |why: &str| format!("target file {shown} is not the float32 .npy it was: {why}");
    if raw.len() < 10 || &raw[..6] != b"\x93NUMPY" {
        return Err(bad("no .npy header"));
    }
    let (hlen, start) = match raw[6] {
        1 => (usize::from(u16::from_le_bytes([raw[8], raw[9]])), 10),
        2 | 3 if raw.len() >= 12 => (u32::from_le_bytes([raw[8], raw[9], raw[10], raw[11]]) as usize, 12),
        _ => return Err(bad("unknown .npy version")),
    };
    let header = raw.get(start..start + hlen).ok_or_else(|| bad("truncated header"))?;
    let header = std::str::from_utf8(header).map_err(|_| bad("header is not text"))?;
    let compact: String = header.chars().filter(|c| !c.is_whitespace()).collect();
    let shape = format!("'shape':({rows},{dim})");
    if !(compact.contains("'descr':'<f4'")
        && compact.contains("'fortran_order':False")
        && compact.contains(&shape))
    {
        return Err(bad(&format!("header {header:?}")));
    }
    Ok(raw[start + hlen..].to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npy_round_trip_and_key_check() {
        let dir = std::env::temp_dir().join(format!("pc-targets-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let values: Vec<f32> = vec![1.0, 0.0, 0.0, 1.0, 0.6, 0.8];
        let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let header = "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 2), }";
        let mut file = b"\x93NUMPY\x01\x00".to_vec();
        let pad = 64 - (10 + header.len() + 1) % 64;
        let h = format!("{header}{}\n", " ".repeat(pad));
        file.extend_from_slice(&(h.len() as u16).to_le_bytes());
        file.extend_from_slice(h.as_bytes());
        file.extend_from_slice(&bytes);
        let path = dir.join("t.npy");
        std::fs::write(&path, &file).unwrap();
        assert_eq!(read_npy_f32(&path, 3, 2).unwrap(), bytes);
        assert!(read_npy_f32(&path, 2, 3).is_err());
        let spec = TargetSpec {
            key: key(&bytes, 3, 2),
            rows: 3,
            dim: 2,
            data: None,
            path: Some(path.display().to_string()),
        };
        assert_eq!(get(Kernel::best(), &spec, f64::INFINITY, true, "target").unwrap().rows(), 3);
        let stale = TargetSpec { key: spec.key ^ 1, ..spec };
        let e = get(Kernel::best(), &stale, 2.0, true, "target").unwrap_err().to_string();
        assert!(e.contains("changed since the expression was built"), "{e}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
