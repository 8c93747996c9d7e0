//! Packing: an operand of `C = scale * A B^T` laid out once for a micro-kernel, then read by
//! every tile's loop nest (the `gemm` module).
//!
//! `A` (rows x d) and `B` (cols x d) are row-major embeddings. `A` is packed into micro-panels of
//! `K::MR` rows and `B` into micro-panels of `K::NR` rows, each k-major (`panel[k][r]`), for the
//! micro-kernel `K` ([`super::micro`]) that keeps an `MR x NR` block of `C` in registers; any
//! k-block of a panel is contiguous. A packed operand is typed by its kernel and side
//! (`Packed<K, Lhs>` / `Packed<K, Rhs>`), so a product can only read panels laid out for the
//! kernel that computes it. Rows past the end are zero, so edge micro-panels compute from zeros.

use std::marker::PhantomData;

use super::aligned::AlignedVec;
use super::micro::MicroKernel;

/// Which operand a packed matrix is: its panel width is the kernel's `MR` (`Lhs`, the `A` of
/// `A B^T`) or `NR` (`Rhs`, the `B`).
pub trait Side: Send + Sync + 'static {
    fn width<K: MicroKernel>() -> usize;
}

/// The `A` side: micro-panels of `K::MR` rows.
#[derive(Debug)]
pub enum Lhs {}
/// The `B` side: micro-panels of `K::NR` rows.
#[derive(Debug)]
pub enum Rhs {}

impl Side for Lhs {
    fn width<K: MicroKernel>() -> usize {
        K::MR
    }
}

impl Side for Rhs {
    fn width<K: MicroKernel>() -> usize {
        K::NR
    }
}

/// A matrix (`n x d`, row-major) packed for kernel `K` as side `S`, in micro-panels of
/// `w = S::width::<K>()` rows: `data[panel][k][r]`, so any k-block of a panel is `kc * w`
/// contiguous floats. Rows beyond `n` are zero.
#[derive(Debug, Clone)]
pub struct Packed<K: MicroKernel, S: Side> {
    data: AlignedVec,
    n: usize,
    d: usize,
    kernel: K,
    side: PhantomData<S>,
}

impl<K: MicroKernel, S: Side> Packed<K, S> {
    /// Packs `src` (`n x d`).
    pub fn new(kernel: K, src: &[f32], n: usize, d: usize) -> Self {
        assert!(src.len() >= n * d);
        Self::from_rows(kernel, n, d, |r0, count, dst| dst.copy_from_slice(&src[r0 * d..(r0 + count) * d]))
    }

    /// Packs `n` rows produced by `rows(r0, count, dst)`, which writes rows `r0..r0 + count`
    /// (row-major, `count x d`) into `dst`: one panel at a time, so no unpacked copy of the
    /// whole matrix is ever held. Panels are filled in parallel on the current rayon pool.
    pub fn from_rows(kernel: K, n: usize, d: usize, rows: impl Fn(usize, usize, &mut [f32]) + Sync) -> Self {
        use rayon::prelude::*;
        let w = S::width::<K>();
        let mut data = AlignedVec::zeroed(n.div_ceil(w) * w * d);
        if d > 0 {
            // One micro-panel per task: its `w` rows are produced, then transposed into it.
            data.par_chunks_mut(d * w).enumerate().for_each_init(Vec::new, |buf, (p, panel)| {
                let count = w.min(n - p * w);
                buf.resize(count * d, 0.0);
                rows(p * w, count, buf);
                // Row `r` of the panel becomes lane `r` of every k step (`panel[k][r]`).
                for (r, row) in buf.chunks_exact(d).enumerate() {
                    for (k, &v) in row.iter().enumerate() {
                        panel[k * w + r] = v;
                    }
                }
            });
        }
        Self { data, n, d, kernel, side: PhantomData }
    }

    /// Packs columns `col0..col0 + n` of `src` (`k` rows of `ld` floats, row-major) as the `n`
    /// rows (each of length `k`) of a transposed operand: `A^T` of a row block without
    /// transposing it first. Sequential (meant for callers that are already parallel).
    pub fn from_columns(kernel: K, src: &[f32], k: usize, ld: usize, col0: usize, n: usize) -> Self {
        assert!(col0 + n <= ld && src.len() >= k * ld);
        let w = S::width::<K>();
        let mut data = AlignedVec::zeroed(n.div_ceil(w) * w * k);
        if k > 0 {
            // One micro-panel of `w` columns at a time.
            for (q, panel) in data.chunks_exact_mut(k * w).enumerate() {
                let c = col0 + q * w;
                let count = w.min(col0 + n - c);
                // Source row `k` holds the panel's k step contiguously: a straight copy.
                for (row, dst) in src.chunks_exact(ld).zip(panel.chunks_exact_mut(w)) {
                    dst[..count].copy_from_slice(&row[c..c + count]);
                }
            }
        }
        Self { data, n, d: k, kernel, side: PhantomData }
    }

    pub fn rows(&self) -> usize {
        self.n
    }

    pub fn dim(&self) -> usize {
        self.d
    }

    /// The kernel these panels are laid out for.
    pub fn kernel(&self) -> K {
        self.kernel
    }

    /// The `kc * w` floats of panel `p` for `k` in `k0..k0 + kc`.
    #[inline]
    pub(super) fn panel(&self, k0: usize, kc: usize, p: usize) -> &[f32] {
        let w = S::width::<K>();
        let start = (p * self.d + k0) * w;
        &self.data[start..start + kc * w]
    }
}
