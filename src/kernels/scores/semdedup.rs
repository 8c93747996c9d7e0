//! SemDeDup (Abbas et al. 2023; docs/methods.md#clusters-and-near-duplicates): within a cluster,
//! rows in a given order (SemDeDup's: ascending cosine to the centroid, the hardest first), and
//!
//! ```text
//! semdedup_p = max_{q < p} <y_q, y_p>        (y the normalised rows in that order)
//! ```
//!
//! the highest cosine of row `p` to any row before it (`-inf` for the first). A row is a
//! near-duplicate of an earlier one when its score is above `1 - eps`, so one pass gives the
//! subset for every `eps`.
//!
//! The `m x m` matrix of cosines is never built: the rows are packed once (as both operands),
//! and each column tile (`TILE_COLS` positions, processed in parallel) walks the row blocks
//! before it, keeping a running max per column of the strictly upper triangle. A maximum is
//! exact, so the result does not depend on the thread count or the tile order. Memory: the
//! gathered rows twice (`2 * m * d * 4` bytes) and one tile per thread.

use rayon::prelude::*;

use crate::kernels::engine::aligned::AlignedVec;
use crate::kernels::engine::dispatch::with_kernel;
use crate::kernels::engine::gemm::gemm_packed;
use crate::kernels::engine::isa::Kernel;
use crate::kernels::engine::micro::MicroKernel;
use crate::kernels::engine::pack::{Lhs, Packed, Rhs};
use crate::kernels::engine::tile::{self, TILE_COLS, TILE_ROWS};
use crate::kernels::matrix::Matrix;
use crate::kernels::runtime::interrupt;

/// SemDeDup's score of every row of `x` (see the module docs): `order[r]` is row `r`'s position
/// in SemDeDup's order (a permutation of `0..rows`). `-inf` for the first usable row in that
/// order (no row before it: `score <= 1 - eps` keeps it), `None` for unusable rows (null, NaN
/// or zero), which take no part.
pub fn semdedup(kernel: Kernel, x: &Matrix, order: &[u32]) -> Vec<Option<f32>> {
    let n = x.rows();
    let mut by_position = vec![usize::MAX; n];
    for (r, &p) in order.iter().enumerate() {
        by_position[p as usize] = r;
    }
    let d = x.dim();
    let mut scratch = vec![0f32; d];
    let scales: Vec<Option<f64>> = (0..n).map(|r| x.row_scale(r, true, &mut scratch)).collect();
    let rows: Vec<usize> = by_position.into_iter().filter(|&r| scales[r].is_some()).collect();
    let mut ys = vec![0f32; rows.len() * d];
    x.gather_scaled(&rows, |i| scales[i], &mut ys);
    let maxima = with_kernel!(kernel, k => column_maxima(k, &ys, rows.len(), d));
    let mut out = vec![None; n];
    for (p, &r) in rows.iter().enumerate() {
        // -inf for the first (no row before it); a cosine is at most 1, whatever the rounding.
        out[r] = Some(maxima[p].min(1.0));
    }
    out
}

/// For each of the `m` rows of `ys` (row-major, normalised), the max of its dot products with
/// the rows before it (`NEG_INFINITY` for row 0).
fn column_maxima<K: MicroKernel>(kernel: K, ys: &[f32], m: usize, d: usize) -> Vec<f32> {
    const { tile::check::<K>() };
    let rhs = Packed::<K, Rhs>::new(kernel, ys, m, d);
    let blocks: Vec<Packed<K, Lhs>> = (0..m)
        .step_by(TILE_ROWS)
        .map(|r0| Packed::new(kernel, &ys[r0 * d..(r0 + TILE_ROWS).min(m) * d], TILE_ROWS.min(m - r0), d))
        .collect();
    let mut out = vec![f32::NEG_INFINITY; m];
    out.par_chunks_mut(TILE_COLS).enumerate().for_each(|(t, dst)| {
        let (c0, cols) = (t * TILE_COLS, dst.len());
        let mut z = AlignedVec::zeroed(TILE_ROWS * cols);
        // Row blocks that hold a row before the last column of this tile.
        for (b, lhs) in blocks.iter().enumerate().take_while(|(b, _)| b * TILE_ROWS < c0 + cols) {
            if interrupt::pending() {
                return;
            }
            let (r0, rows) = (b * TILE_ROWS, lhs.rows());
            let z = &mut z[..rows * cols];
            gemm_packed(lhs, &rhs, c0, cols, 1.0, z);
            upper_max(z, r0, c0, dst);
        }
    });
    out
}

/// Into `dst[j]` (column `c0 + j`), the max over the tile's rows `r0 + i < c0 + j` of `z[i, j]`.
fn upper_max(z: &[f32], r0: usize, c0: usize, dst: &mut [f32]) {
    let cols = dst.len();
    for (i, row) in z.chunks_exact(cols).enumerate() {
        let first = (r0 + i + 1).saturating_sub(c0); // columns after row r0 + i
        for (o, &v) in dst.iter_mut().zip(row).skip(first) {
            if v > *o {
                *o = v;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testutil::kernels;
    use crate::kernels::Values;

    fn naive(x: &[f32], d: usize, order: &[u32]) -> Vec<Option<f64>> {
        let n = x.len() / d;
        let norm = |r: usize| -> Vec<f64> {
            let v: Vec<f64> = x[r * d..(r + 1) * d].iter().map(|&a| f64::from(a)).collect();
            let s = v.iter().map(|a| a * a).sum::<f64>().sqrt();
            v.iter().map(|a| a / s).collect()
        };
        let mut by_pos = vec![0usize; n];
        for (r, &p) in order.iter().enumerate() {
            by_pos[p as usize] = r;
        }
        let mut out = vec![None; n];
        if n > 0 {
            out[by_pos[0]] = Some(f64::NEG_INFINITY);
        }
        for p in 1..n {
            let yp = norm(by_pos[p]);
            let best = (0..p)
                .map(|q| norm(by_pos[q]).iter().zip(&yp).map(|(a, b)| a * b).sum::<f64>())
                .fold(f64::NEG_INFINITY, f64::max);
            out[by_pos[p]] = Some(best);
        }
        out
    }

    #[test]
    fn equals_the_definition_at_tile_edges() {
        for n in [1usize, 2, 255, 256, 257, 600] {
            let d = 19;
            let x: Vec<f32> = (0..n * d).map(|i| ((i * 7919 + 13) % 97) as f32 / 48.0 - 1.0).collect();
            let order = shuffled(n);
            let want = naive(&x, d, &order);
            for kernel in kernels() {
                let m = Matrix::new(Values::F32(&x), n, d, None).unwrap();
                let got = semdedup(kernel, &m, &order);
                for (g, w) in got.iter().zip(&want) {
                    match (g, w) {
                        (None, None) => {}
                        (Some(g), Some(w)) => {
                            let same = f64::from(*g) == *w || (f64::from(*g) - w).abs() < 1e-5;
                            assert!(same, "{kernel} n={n}: {g} vs {w}")
                        }
                        _ => panic!("{kernel} n={n}: {got:?}"),
                    }
                }
            }
        }
    }

    /// A fixed permutation of `0..n` (Fisher-Yates on a small LCG).
    fn shuffled(n: usize) -> Vec<u32> {
        let mut p: Vec<u32> = (0..n as u32).collect();
        let mut s = 12345u64;
        for i in (1..n).rev() {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            p.swap(i, (s >> 33) as usize % (i + 1));
        }
        p
    }

    #[test]
    fn duplicates_score_one_and_unusable_rows_take_no_part() {
        let x = [1.0f32, 0.0, 0.0, 1.0, 2.0, 0.0, 0.0, 0.0, 0.6, 0.8];
        let m = Matrix::new(Values::F32(&x), 5, 2, None).unwrap();
        for kernel in kernels() {
            let got = semdedup(kernel, &m, &[0, 1, 2, 3, 4]);
            assert_eq!(got[0], Some(f32::NEG_INFINITY), "the first row: none before it");
            assert!((got[1].unwrap() - 0.0).abs() < 1e-6);
            assert!((got[2].unwrap() - 1.0).abs() < 1e-6, "a scaled copy is a duplicate");
            assert_eq!(got[3], None, "a zero row");
            assert!((got[4].unwrap() - 0.8).abs() < 1e-6);
        }
    }
}
