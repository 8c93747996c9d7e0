//! negCLIPLoss (docs/methods.md#negcliploss):
//!
//! ```text
//! ncl_i = s_ii - (tau / 2) * mean_{k=1..K} [ LSE_{j in B_k(i)} (s_ij / tau) + LSE_{j in B_k(i)} (s_ji / tau) ]
//! ```
//!
//! with `B_k(i)` the batch holding row `i` in partition `k` ([`super::partition`]). Per batch
//! of `b` rows this is a `b x b` matrix product `Z = X T^T / tau` with a log-sum-exp over every
//! row (image -> text) and every column (text -> image). `Z` is never built: each row block of
//! `X` (`TILE_ROWS` rows, processed in parallel) walks the column tiles of `T`, and each
//! `TILE_ROWS x TILE_COLS` tile of `Z` is reduced while hot in cache:
//!
//! * rows: per tile, `m = max_j z_ij`, `s = sum_j exp(z_ij - m)`, merged online into `(max, sum)`;
//! * columns: per row block, a shift `M_j` and `s_j = sum_i exp(z_ij - M_j)`, reusing the row's
//!   exponentials (see [`reduce_tile`]); the row blocks' partials are merged afterwards in block
//!   order.
//!
//! Exponentials are always of non-positive arguments (never `exp(s / tau)` unshifted), tile
//! sums are `f32` (at most 256 terms, each <= 1), everything longer is `f64`. The merge order is
//! fixed, so the result does not depend on the thread count.
//!
//! Memory beyond the inputs: `T` of one batch packed in `f32` (`b * d * 4` bytes), one tile and
//! one row block of `X` (converted from float16 as it is needed) per thread, and two floats per
//! (row block, column) for the column partials: about 135 MiB at `b = 32768`, `d = 768`.

use rayon::prelude::*;

use super::partition::{batch_bounds, permutation};
use crate::kernels::engine::aligned::AlignedVec;
use crate::kernels::engine::dispatch::with_kernel;
use crate::kernels::engine::fastmath::{exp, fmax, hsum, max_inline, simd_fn, tail, Lse};
use crate::kernels::engine::gemm::gemm_packed;
use crate::kernels::engine::isa::Kernel;
use crate::kernels::engine::micro::MicroKernel;
use crate::kernels::engine::pack::{Packed, Rhs};
use crate::kernels::engine::tile::{self, TILE_COLS, TILE_ROWS};
use crate::kernels::matrix::Matrix;
use crate::kernels::runtime::interrupt;

/// Parameters of [`neg_clip_loss`] (see [`NegClipParams::validate`] for the accepted ranges).
#[derive(Clone, Copy, Debug)]
#[cfg_attr(feature = "python", derive(serde::Deserialize))]
pub struct NegClipParams {
    pub batch_size: usize,
    pub num_batches: usize,
    pub temperature: f64,
    pub seed: u64,
    pub normalize: bool,
}

/// Most partitions `K` accepted (the reference uses 10; each costs a full pass).
pub const MAX_NUM_BATCHES: usize = 10_000;
/// Accepted temperatures: `s / tau` must stay far inside the `f32` range for any cosine.
pub const TEMPERATURE_RANGE: (f64, f64) = (1e-20, 1e20);

impl NegClipParams {
    /// `Err` naming the argument when a value is out of its range: `batch_size >= 1` (larger
    /// than the rows means one batch), `1 <= num_batches <= MAX_NUM_BATCHES`,
    /// `temperature` in `TEMPERATURE_RANGE`.
    pub fn validate(&self) -> Result<(), String> {
        if self.batch_size == 0 {
            return Err("`batch_size` must be >= 1, got 0".into());
        }
        if !(1..=MAX_NUM_BATCHES).contains(&self.num_batches) {
            return Err(format!("`num_batches` must be in [1, {MAX_NUM_BATCHES}], got {}", self.num_batches));
        }
        let (lo, hi) = TEMPERATURE_RANGE;
        if !(lo..=hi).contains(&self.temperature) {
            return Err(format!("`temperature` must be in [{lo:e}, {hi:e}], got {:?}", self.temperature));
        }
        Ok(())
    }
}

impl Default for NegClipParams {
    /// The reference runs' values: `B = 32768`, `K = 10`, `tau = 0.01`.
    fn default() -> Self {
        Self { batch_size: 32768, num_batches: 10, temperature: 0.01, seed: 0, normalize: true }
    }
}

/// Batches at most this large are scored in parallel with each other (each one alone has too
/// few row blocks to keep the cores busy); larger ones one at a time, parallel inside.
const SMALL_BATCH: usize = 2 * TILE_ROWS;

/// Row blocks computed before their column partials are merged (see [`batch_lse_sum`]).
const WAVE_BLOCKS: usize = 32;

/// A column whose maximum is more than this many nats below the tile's maximum has its sum
/// recomputed with its own shift (its terms relative to the tile maximum could underflow `f32`,
/// whose normal range ends at `e^-87`).
const COLUMN_FALLBACK: f32 = 40.0;

simd_fn! {
    /// Reduces one tile `z` (`rows x cols`, row-major): merges each row's partial into
    /// `row_lse[i]` and writes this row block's column partials `(max, sum)`.
    ///
    /// One exponential per entry: `e_ij = exp(z_ij - m_i)` with `m_i` the row's maximum gives the
    /// row sum, and `e_ij * exp(m_i - M)` (`M` the tile maximum, one `exp` per row) the column
    /// terms `exp(z_ij - M)`. Columns whose maximum is far below `M` are redone exactly.
    ///
    /// `rows <= TILE_ROWS`. Compiled for `kernel`'s instruction set.
    pub fn reduce_tile<K>(kernel: K, z: &[f32], rows: usize, cols: usize, row_lse: &mut [Lse], col_max: &mut [f32], col_sum: &mut [f32]) {
        let col_max = &mut col_max[..cols];
        let col_sum = &mut col_sum[..cols];
        col_max.fill(f32::NEG_INFINITY);
        col_sum.fill(0.0);
        let full = cols / 16 * 16;
        // Pass 1: row maxima, then column maxima 16 columns at a time down the rows (the
        // accumulator stays in registers; updating `col_max` in place row by row compiles to
        // masked stores, which are microcoded on AMD cores). Maxima are exact: the order of the
        // passes changes no bit.
        let mut row_max = [f32::NEG_INFINITY; TILE_ROWS];
        for (r, rm) in z.chunks_exact(cols).take(rows).zip(row_max.iter_mut()) {
            *rm = max_inline(r);
        }
        for (j0, cm) in (0..full).step_by(16).zip(col_max[..full].chunks_exact_mut(16)) {
            let mut c = [f32::NEG_INFINITY; 16];
            for r in z.chunks_exact(cols).take(rows) {
                let rc: &[f32; 16] = r[j0..j0 + 16].try_into().expect("chunk of 16");
                for l in 0..16 {
                    c[l] = fmax(c[l], rc[l]);
                }
            }
            cm.copy_from_slice(&c);
        }
        for j in full..cols {
            col_max[j] = z.chunks_exact(cols).take(rows).fold(f32::NEG_INFINITY, |m, r| fmax(m, r[j]));
        }
        let tile_max = max_inline(col_max);
        // Pass 2: one exponential per entry for both sums.
        for ((r, lse), &m) in z.chunks_exact(cols).take(rows).zip(row_lse.iter_mut()).zip(&row_max) {
            let f = exp::<M>(m - tile_max);
            // Fixed-size arrays let the compiler drop bounds checks and vectorise 16 lanes.
            let mut acc = [0f32; 16];
            for (rc, cs) in r[..full].chunks_exact(16).zip(col_sum[..full].chunks_exact_mut(16)) {
                let rc: &[f32; 16] = rc.try_into().expect("chunk of 16");
                let cs: &mut [f32; 16] = cs.try_into().expect("chunk of 16");
                for l in 0..16 {
                    let e = exp::<M>(rc[l] - m);
                    acc[l] += e;
                    cs[l] = M::mul_add(e, f, cs[l]);
                }
            }
            let (rt, k) = (tail(&r[full..], m), cols - full);
            for l in 0..16 {
                if l < k {
                    let e = exp::<M>(rt[l] - m);
                    acc[l] += e;
                    col_sum[full + l] = M::mul_add(e, f, col_sum[full + l]);
                }
            }
            lse.merge(m, f64::from(hsum(acc)));
        }
        for j in 0..cols {
            if tile_max - col_max[j] > COLUMN_FALLBACK {
                let cm = col_max[j];
                col_sum[j] = z.chunks_exact(cols).take(rows).map(|r| exp::<M>(r[j] - cm)).sum();
            } else {
                col_max[j] = tile_max;
            }
        }
    }
}

/// Row and column log-sum-exps of `Z = X T^T * inv_tau` over one batch of `b` rows, relative
/// to the diagonal: `(LSE_j z_ij - z_ii) + (LSE_j z_ji - z_ii)` per batch position. Both terms
/// are `>= 0` (each sum holds its diagonal term) and exactly 0 for a one-row batch, because
/// `z_ii` is the product's own diagonal entry. `t` holds the batch's normalised texts, packed
/// once for all row blocks (for the kernel that computes the batch); `load_x(r0, rows, dst)`
/// writes the normalised images of batch rows `r0..r0 + rows` into `dst` (`rows x d`), so images
/// are converted one row block at a time.
pub fn batch_lse_sum<K: MicroKernel>(
    load_x: &(dyn Fn(usize, usize, &mut [f32]) + Sync),
    t: &Packed<K, Rhs>,
    inv_tau: f32,
) -> Vec<f64> {
    const { tile::check::<K>() };
    let (b, d, kernel) = (t.rows(), t.dim(), t.kernel());
    let blocks = b.div_ceil(TILE_ROWS);
    let mut out = Vec::with_capacity(b);
    let mut zdiag: Vec<f32> = Vec::with_capacity(b);
    let mut cols = vec![Lse::EMPTY; b];
    // Row blocks run in parallel in waves of WAVE_BLOCKS; after each wave its column partials
    // are merged, in block order, into the running column sums. The merge order is the block
    // order whatever the wave, so the bits do not depend on it; the waves bound the partials
    // held at once to `WAVE_BLOCKS * b` pairs of floats (16 MiB at b = 32768) instead of
    // `b / TILE_ROWS * b`.
    for w0 in (0..blocks).step_by(WAVE_BLOCKS) {
        if interrupt::pending() {
            break;
        }
        type Block = (Vec<f64>, Vec<f32>, Vec<f32>, Vec<f32>);
        let wave: Vec<Block> = (w0..blocks.min(w0 + WAVE_BLOCKS))
            .into_par_iter()
            .map(|blk| {
                let r0 = blk * TILE_ROWS;
                let rows = TILE_ROWS.min(b - r0);
                let mut xb = vec![0f32; rows * d];
                load_x(r0, rows, &mut xb);
                let xb = Packed::new(kernel, &xb, rows, d);
                let mut tile = AlignedVec::zeroed(rows * TILE_COLS);
                let mut row_lse = vec![Lse::EMPTY; rows];
                let mut diag = vec![0f32; rows];
                let mut col_max = vec![f32::NEG_INFINITY; b];
                let mut col_sum = vec![0f32; b];
                for c0 in (0..b).step_by(TILE_COLS) {
                    if interrupt::pending() {
                        break;
                    }
                    let cols = TILE_COLS.min(b - c0);
                    gemm_packed(&xb, t, c0, cols, inv_tau, &mut tile);
                    // This block's diagonal entries that fall in this column tile.
                    for (i, z) in diag.iter_mut().enumerate() {
                        if (c0..c0 + cols).contains(&(r0 + i)) {
                            *z = tile[i * cols + r0 + i - c0];
                        }
                    }
                    reduce_tile(
                        kernel,
                        &tile[..rows * cols],
                        rows,
                        cols,
                        &mut row_lse,
                        &mut col_max[c0..c0 + cols],
                        &mut col_sum[c0..c0 + cols],
                    );
                }
                let rel = row_lse.iter().zip(&diag).map(|(l, &z)| l.value() - f64::from(z)).collect();
                (rel, diag, col_max, col_sum)
            })
            .collect();
        for (rel, diag, _, _) in &wave {
            out.extend_from_slice(rel);
            zdiag.extend_from_slice(diag);
        }
        cols.par_iter_mut().enumerate().for_each(|(j, col)| {
            for (_, _, m, s) in &wave {
                col.merge(m[j], f64::from(s[j]));
            }
        });
    }
    out.resize(b, f64::NAN); // only short when interrupted
    zdiag.resize(b, 0.0);
    out.par_iter_mut().zip(&cols).zip(&zdiag).for_each(|((o, col), &z)| *o += col.value() - f64::from(z));
    out
}

/// negCLIPLoss of every row of `image`/`text` (same shape), computed with `kernel`. Rows that
/// are null, hold a NaN or infinity, or (when normalising) are zero get `None` and take no part
/// in any batch. Runs on the current rayon pool.
pub fn neg_clip_loss(kernel: Kernel, image: &Matrix, text: &Matrix, p: &NegClipParams) -> Vec<Option<f32>> {
    with_kernel!(kernel, k => neg_clip_loss_in(k, image, text, p))
}

/// [`neg_clip_loss`] monomorphised for one kernel.
fn neg_clip_loss_in<K: MicroKernel>(
    kernel: K,
    image: &Matrix,
    text: &Matrix,
    p: &NegClipParams,
) -> Vec<Option<f32>> {
    let n = image.rows();
    let d = image.dim();
    debug_assert_eq!(n, text.rows());
    debug_assert_eq!(d, text.dim());
    let sx = image.scales(p.normalize);
    let st = text.scales(p.normalize);
    let valid: Vec<usize> = (0..n).filter(|&i| sx[i].is_some() && st[i].is_some()).collect();
    let nv = valid.len();
    let inv_tau = (1.0 / p.temperature) as f32;
    let mut acc = vec![0f64; nv];
    for k in 0..p.num_batches {
        if interrupt::pending() {
            break;
        }
        let perm = permutation(nv, p.seed, k as u64);
        let bounds = batch_bounds(nv, p.batch_size);
        let score = |&(s, e): &(usize, usize)| {
            let rows: Vec<usize> = perm[s..e].iter().map(|&q| valid[q]).collect();
            let b = rows.len();
            // Texts: converted and packed once for the batch (every row block reads all of them).
            let tb = Packed::<K, Rhs>::from_rows(kernel, b, d, |r0, n, dst| {
                text.gather_scaled(&rows[r0..r0 + n], |i| st[i], dst);
            });
            // Images: converted a row block at a time by the task that uses them.
            let load_x = |r0: usize, n: usize, dst: &mut [f32]| {
                image.gather_scaled(&rows[r0..r0 + n], |i| sx[i], dst);
            };
            batch_lse_sum(&load_x, &tb, inv_tau)
        };
        let per_batch: Vec<Vec<f64>> = if p.batch_size <= SMALL_BATCH {
            bounds.par_iter().map(score).collect()
        } else {
            bounds.iter().map(score).collect()
        };
        for ((s, _), lse) in bounds.iter().zip(&per_batch) {
            for (q, v) in lse.iter().enumerate() {
                acc[perm[s + q]] += v;
            }
        }
    }
    // ncl_i = s_ii - tau/2 mean_k [LSE_row + LSE_col] = -tau/2 mean_k [(LSE_row - z_ii) +
    // (LSE_col - z_ii)] with z_ii = s_ii / tau the product's own diagonal entry: no
    // cancellation between s_ii and the log-sum-exps, never positive, and exactly 0 where every
    // batch of the row is the row alone. `min(0)` absorbs the last-bit rounding of a sum's
    // diagonal term; `+ 0.0` turns -0.0 into 0.0.
    let half_tau = p.temperature / 2.0;
    let mut out = vec![None; n];
    for (q, &i) in valid.iter().enumerate() {
        let v = (-half_tau * acc[q] / p.num_batches as f64).min(0.0) + 0.0;
        out[i] = Some(v as f32);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testutil::{fused_kernels, kernels, Inputs};
    use crate::kernels::Values;

    /// Naive f64 reference on one batch = all rows.
    fn naive(x: &[f32], t: &[f32], n: usize, d: usize, tau: f64) -> Vec<f64> {
        let norm = |v: &[f32]| -> Vec<f64> {
            let s = v.iter().map(|&a| f64::from(a) * f64::from(a)).sum::<f64>().sqrt();
            v.iter().map(|&a| f64::from(a) / s).collect()
        };
        let xs: Vec<Vec<f64>> = x.chunks(d).map(norm).collect();
        let ts: Vec<Vec<f64>> = t.chunks(d).map(norm).collect();
        let s = |i: usize, j: usize| xs[i].iter().zip(&ts[j]).map(|(a, b)| a * b).sum::<f64>();
        let lse = |f: &dyn Fn(usize) -> f64| {
            let v: Vec<f64> = (0..n).map(f).collect();
            let m = v.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            m + v.iter().map(|a| (a - m).exp()).sum::<f64>().ln()
        };
        (0..n).map(|i| s(i, i) - tau / 2.0 * (lse(&|j| s(i, j) / tau) + lse(&|j| s(j, i) / tau))).collect()
    }

    #[test]
    fn one_batch_matches_naive_at_tile_edges() {
        for kernel in kernels() {
            for &(n, d) in &[(1usize, 3usize), (2, 5), (17, 8), (255, 16), (257, 33), (600, 64)] {
                let data = Inputs::new(n, n, d, 1);
                let (xm, tm) = (data.xm(), data.tm());
                let p = NegClipParams {
                    batch_size: n,
                    num_batches: 1,
                    temperature: 0.05,
                    seed: 3,
                    normalize: true,
                };
                let got = neg_clip_loss(kernel, &xm, &tm, &p);
                let want = naive(&data.x, &data.t, n, d, 0.05);
                for i in 0..n {
                    let g = f64::from(got[i].unwrap());
                    assert!((g - want[i]).abs() < 2e-5, "{kernel} n={n} d={d} row {i}: {g} vs {}", want[i]);
                }
            }
        }
    }

    #[test]
    fn kernels_agree() {
        let (n, d) = (700, 200);
        let data = Inputs::new(n, n, d, 31);
        let (xm, tm) = (data.xm(), data.tm());
        let p =
            NegClipParams { batch_size: 600, num_batches: 2, temperature: 0.01, seed: 5, normalize: true };
        let portable = neg_clip_loss(Kernel::portable(), &xm, &tm, &p);
        let fused = fused_kernels();
        for &kernel in &fused {
            let got = neg_clip_loss(kernel, &xm, &tm, &p);
            for i in 0..n {
                let (g, w) = (got[i].unwrap(), portable[i].unwrap());
                assert!((g - w).abs() <= 1e-5 * w.abs().max(0.01), "{kernel} row {i}: {g} vs portable {w}");
            }
            // The fused kernels compute the same chains on the same tiles: the same bits.
            assert_eq!(got, neg_clip_loss(fused[0], &xm, &tm, &p), "{kernel} vs {}", fused[0]);
        }
    }

    #[test]
    fn independent_of_thread_count() {
        let data = Inputs::new(700, 700, 24, 5);
        let (xm, tm) = (data.xm(), data.tm());
        let p =
            NegClipParams { batch_size: 300, num_batches: 3, temperature: 0.01, seed: 9, normalize: true };
        for kernel in kernels() {
            let run = |threads| {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                pool.install(|| neg_clip_loss(kernel, &xm, &tm, &p))
            };
            let one = run(1);
            assert_eq!(one, run(3), "{kernel}");
            let small = NegClipParams { batch_size: 50, ..p };
            let pool1 = rayon::ThreadPoolBuilder::new().num_threads(1).build().unwrap();
            let pool3 = rayon::ThreadPoolBuilder::new().num_threads(3).build().unwrap();
            assert_eq!(
                pool1.install(|| neg_clip_loss(kernel, &xm, &tm, &small)),
                pool3.install(|| neg_clip_loss(kernel, &xm, &tm, &small)),
                "{kernel}"
            );
        }
    }

    #[test]
    fn invalid_rows_take_no_part() {
        let (n, d) = (6, 4);
        let Inputs { mut x, t, .. } = Inputs::new(n, n, d, 7);
        x[2 * d..3 * d].fill(0.0); // zero image vector
        let mask = [true, true, true, true, false, true];
        let xm = Matrix::new(Values::F32(&x), n, d, Some(&mask)).unwrap();
        let tm = Matrix::new(Values::F32(&t), n, d, None).unwrap();
        let p = NegClipParams { batch_size: 100, num_batches: 1, temperature: 0.1, seed: 0, normalize: true };
        let keep = [0usize, 1, 3, 5];
        let xk: Vec<f32> = keep.iter().flat_map(|&i| x[i * d..(i + 1) * d].to_vec()).collect();
        let tk: Vec<f32> = keep.iter().flat_map(|&i| t[i * d..(i + 1) * d].to_vec()).collect();
        let want = naive(&xk, &tk, 4, d, 0.1);
        for kernel in kernels() {
            let got = neg_clip_loss(kernel, &xm, &tm, &p);
            assert!(got[2].is_none() && got[4].is_none());
            for (q, &i) in keep.iter().enumerate() {
                assert!((f64::from(got[i].unwrap()) - want[q]).abs() < 1e-5, "{kernel}");
            }
        }
    }

    #[test]
    fn empty_input() {
        let xm = Matrix::new(Values::F32(&[]), 0, 4, None).unwrap();
        for kernel in kernels() {
            assert!(neg_clip_loss(kernel, &xm, &xm, &NegClipParams::default()).is_empty());
        }
    }
}
