//! Gram matrices `G = sum_t t t^T` (`d x d`) of a set of scaled rows: the target of NormSim_2
//! (docs/methods.md#normsim_p, `p = 2`) and each round's sample in NormSim_2-D.
//!
//! Rows are taken in blocks of [`GRAM_BLOCK`]. A block's product `T_b^T T_b` is an `f32` GEMM
//! (every entry one FMA chain over the block's rows, see [`crate::kernels::engine::gemm`]); the
//! blocks' products are added, in block order, into an `f64` total, then rounded to `f32`. So `G`
//! has the same bits whatever the thread count.
//!
//! Only the upper triangle is computed (as a symmetric rank-k update would, and as NumPy's
//! `t.T @ t` does through BLAS `syrk`); the lower one is its mirror, so `G` is exactly symmetric.
//! `T_b^T` is packed straight from the row-major block ([`Packed::from_columns`]): no transposed
//! copy.
//!
//! The quadratic form `x^T G x` uses the symmetry too: with `H = diag(G) + 2 * strictly_lower(G)`,
//! `x^T G x = sum_j x_j (H x)_j`, and `(H x)_j` only needs `x_k` for `k <= j`. Computed in column
//! tiles of [`QUAD_COLS`], tile `J` stops at `k < end(J)` ([`Part::kmax`]): 56% of the full
//! product's work at `d = 768`.

use rayon::prelude::*;

use crate::kernels::engine::aligned::AlignedVec;
use crate::kernels::engine::fastmath::{dot_inline, simd_fn};
use crate::kernels::engine::gemm::{gemm_packed_in, Part};
use crate::kernels::engine::micro::MicroKernel;
use crate::kernels::engine::pack::{Lhs, Packed, Rhs};
use crate::kernels::matrix::Matrix;

/// Rows per block product (an `f32` FMA chain of this length per entry).
pub const GRAM_BLOCK: usize = 1024;
/// Block products computed in parallel before being added, in order, to the `f64` total. A
/// fixed number (not the thread count) so that the bits never depend on the machine; it also
/// bounds the memory held by partial products (`GRAM_WAVE * d * d` floats).
const GRAM_WAVE: usize = 8;
/// Rows of `G` per packed `A` block: a multiple of the kernel's `MR` (no padded micro-panels)
/// and of its `NR` (each block's columns start on a `B` micro-panel), small enough that the
/// computed part hugs the diagonal (56% of the full product at `d = 768`) and its `A` block
/// stays in L2. 96 suits every kernel (blocks of 6 x 8, 6 x 16 and 8 x 32).
const GRAM_ROWS: usize = 96;

/// Columns of `X H^T` per tile of the quadratic form (a multiple of the kernel's `NR`).
const QUAD_COLS: usize = 96;

/// Compile-time check that `K`'s blocks tile [`GRAM_ROWS`] and [`QUAD_COLS`].
const fn check<K: MicroKernel>() {
    assert!(
        GRAM_ROWS.is_multiple_of(K::MR) && GRAM_ROWS.is_multiple_of(K::NR),
        "GRAM_ROWS must be a multiple of MR and NR"
    );
    assert!(QUAD_COLS.is_multiple_of(K::NR), "QUAD_COLS must be a multiple of NR");
}

/// The upper triangle of `a^T a` for `a` of `rows x d` (row-major): `c[i * d + j]` for `j >= i`
/// (the lower triangle is left as it is, or partly overwritten near the diagonal).
pub fn gram_upper<K: MicroKernel>(kernel: K, a: &[f32], rows: usize, d: usize, c: &mut [f32]) {
    const { check::<K>() };
    assert!(a.len() >= rows * d && c.len() >= d * d);
    if d == 0 {
        return;
    }
    if rows == 0 {
        c[..d * d].fill(0.0);
        return;
    }
    let b = Packed::<K, Rhs>::from_columns(kernel, a, rows, d, 0, d);
    for i0 in (0..d).step_by(GRAM_ROWS) {
        let mb = GRAM_ROWS.min(d - i0);
        let ap = Packed::<K, Lhs>::from_columns(kernel, a, rows, d, i0, mb);
        // Columns from i0 (a multiple of NR) on: the block's diagonal square and what lies right.
        let part = Part { col0: i0, cols: d - i0, ldc: d, kmax: ap.dim() };
        gemm_packed_in(&ap, &b, part, 1.0, &mut c[i0 * d + i0..]);
    }
}

/// Bytes [`gram_of`] of `rows` rows and then [`pack_quadratic`] allocate at their peak for width
/// `d` and kernel `K` (what `RLIMIT_AS` counts; fewer are touched): the `f64` total with a wave
/// of `f32` block products (as many as the rows have blocks, at most `GRAM_WAVE`), then the
/// total with the `f32` result, then the result with its packed form; plus each thread's
/// gathered and packed block (`GRAM_BLOCK x d`, twice).
pub fn gram_bytes<K: MicroKernel>(d: usize, rows: usize, threads: usize) -> u128 {
    let dd = (d as u128) * (d as u128);
    let wave = rows.div_ceil(GRAM_BLOCK).clamp(1, GRAM_WAVE) as u128;
    let packed = (d.div_ceil(K::NR) * K::NR) as u128 * d as u128 * 4;
    let blocks = threads.max(1) as u128 * (GRAM_BLOCK.min(rows.max(1)) * d) as u128 * 8;
    (dd * (8 + 4 * wave)).max(dd * 12).max(dd * 4 + packed) + blocks
}

/// `G = sum_{i in rows} (s_i x_i)(s_i x_i)^T` with `s_i = scale_of(i)` (rows without a scale
/// count as zero), as `f32` (`d x d`, row-major, exactly symmetric), computed with `kernel`.
/// Runs on the current rayon pool.
pub fn gram_of<K: MicroKernel>(
    kernel: K,
    x: &Matrix,
    rows: &[usize],
    scale_of: impl Fn(usize) -> Option<f64> + Sync,
) -> Vec<f32> {
    let d = x.dim();
    let mut g = vec![0f64; d * d];
    for wave in rows.chunks(GRAM_BLOCK * GRAM_WAVE) {
        if crate::kernels::runtime::interrupt::pending() {
            break;
        }
        let partials: Vec<AlignedVec> = wave
            .par_chunks(GRAM_BLOCK)
            .map(|rc| {
                let mut buf = vec![0f32; rc.len() * d];
                x.gather_scaled(rc, &scale_of, &mut buf);
                let mut c = AlignedVec::zeroed(d * d);
                gram_upper(kernel, &buf, rc.len(), d, &mut c);
                c
            })
            .collect();
        g.par_chunks_mut(d).enumerate().for_each(|(i, row)| {
            for p in &partials {
                for (t, &v) in row[i..].iter_mut().zip(&p[i * d + i..(i + 1) * d]) {
                    *t += f64::from(v);
                }
            }
        });
    }
    let mut out = vec![0f32; d * d];
    for i in 0..d {
        for j in i..d {
            let v = g[i * d + j] as f32;
            out[i * d + j] = v;
            out[j * d + i] = v;
        }
    }
    out
}

/// `H = diag(G) + 2 * strictly_lower(G)` (`d x d`), packed for `kernel` as the `B` operand of
/// [`quadratic_tile`]. Doubling is exact, so `H` holds `G`'s values.
pub fn pack_quadratic<K: MicroKernel>(kernel: K, g: &[f32], d: usize) -> Packed<K, Rhs> {
    assert!(g.len() >= d * d);
    Packed::from_rows(kernel, d, d, |r0, n, dst| {
        for (j, row) in (r0..r0 + n).zip(dst.chunks_exact_mut(d)) {
            for (k, h) in row.iter_mut().enumerate() {
                *h = match k.cmp(&j) {
                    std::cmp::Ordering::Less => 2.0 * g[j * d + k],
                    std::cmp::Ordering::Equal => g[j * d + k],
                    std::cmp::Ordering::Greater => 0.0,
                };
            }
        }
    })
}

/// Columns `c0..c0 + cols` of `X H^T` (`c0` a multiple of `QUAD_COLS`, `rows x cols` into `z`)
/// for the packed row block `xp` and `h` from [`pack_quadratic`]: only `k < c0 + cols`, where
/// `H` is not zero, is computed.
fn quadratic_tile<K: MicroKernel>(
    xp: &Packed<K, Lhs>,
    h: &Packed<K, Rhs>,
    c0: usize,
    cols: usize,
    z: &mut [f32],
) {
    gemm_packed_in(xp, h, Part { col0: c0, cols, ldc: cols, kmax: c0 + cols }, 1.0, z);
}

simd_fn! {
    /// `acc[i] += sum_j z_ij * x[i][c0 + j]` for the rows of `x` (`d` floats each).
    fn dot_tile<K>(kernel: K, z: &[f32], cols: usize, x: &[f32], d: usize, c0: usize, acc: &mut [f64]) {
        for (i, (r, a)) in z.chunks_exact(cols).zip(acc.iter_mut()).enumerate() {
            *a += f64::from(dot_inline(r, &x[i * d + c0..i * d + c0 + cols]));
        }
    }
}

/// `acc[i] += x_i^T G x_i` for the rows of one block: `xs` holds them (`rows x d`), `xp` the
/// same rows packed, `h` comes from [`pack_quadratic`]. `sum_j x_j (H x)_j` tile by tile.
pub fn quadratic_rows<K: MicroKernel>(xp: &Packed<K, Lhs>, xs: &[f32], h: &Packed<K, Rhs>, acc: &mut [f64]) {
    const { check::<K>() };
    let (rows, d) = (xp.rows(), xp.dim());
    let mut tile = AlignedVec::zeroed(rows * QUAD_COLS);
    for c0 in (0..d).step_by(QUAD_COLS) {
        let cols = QUAD_COLS.min(d - c0);
        let z = &mut tile[..rows * cols];
        quadratic_tile(xp, h, c0, cols, z);
        dot_tile(xp.kernel(), z, cols, xs, d, c0, acc);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::engine::dispatch::with_kernel;
    use crate::kernels::testutil::{assert_close, each_kernel, kernels, uniform};
    use crate::kernels::Values;

    fn upper_triangle<K: MicroKernel>(kernel: K) {
        for &(m, d) in
            &[(37usize, 9usize), (1, 1), (300, 17), (0, 3), (50, 97), (130, 200), (5, 95), (9, 193)]
        {
            let a = uniform(m * d, 5);
            let mut c = vec![f32::NAN; d * d];
            gram_upper(kernel, &a, m, d, &mut c);
            for p in 0..d {
                for q in p..d {
                    let term = |t: usize| f64::from(a[t * d + p]) * f64::from(a[t * d + q]);
                    let want: f64 = (0..m).map(term).sum();
                    let size: f64 = (0..m).map(|t| term(t).abs()).sum();
                    assert_close(f64::from(c[p * d + q]), want, 1e-6 * size, || {
                        format!("{} ({m},{d}) [{p},{q}]", K::ISA)
                    });
                }
            }
        }
    }

    #[test]
    fn upper_triangle_matches_naive() {
        each_kernel!(upper_triangle);
    }

    #[test]
    fn gram_of_is_symmetric_scaled_and_thread_independent() {
        let (m, d) = (2 * GRAM_BLOCK + 77, 40);
        let v = uniform(m * d, 6);
        let x = Matrix::new(Values::F32(&v), m, d, None).unwrap();
        let rows: Vec<usize> = (0..m).rev().step_by(2).collect();
        let scale = |i: usize| (!i.is_multiple_of(5)).then_some(0.5 + (i % 3) as f64);
        for kernel in kernels() {
            let run = |threads| {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                pool.install(|| with_kernel!(kernel, k => gram_of(k, &x, &rows, scale)))
            };
            let g = run(1);
            assert_eq!(g, run(3), "{kernel}");
            for p in 0..d {
                for q in 0..d {
                    assert_eq!(g[p * d + q].to_bits(), g[q * d + p].to_bits());
                    let term = |&i: &usize| {
                        let s = scale(i).unwrap_or(0.0);
                        s * s * f64::from(v[i * d + p]) * f64::from(v[i * d + q])
                    };
                    let want: f64 = rows.iter().map(term).sum();
                    let size: f64 = rows.iter().map(|i| term(i).abs()).sum();
                    assert!(
                        (f64::from(g[p * d + q]) - want).abs() <= 1e-6 * size.max(1e-30),
                        "{kernel} [{p},{q}]"
                    );
                }
            }
        }
    }

    fn quadratic_form<K: MicroKernel>(kernel: K) {
        use crate::kernels::engine::gemm::gemm_packed;
        for &(n, d) in &[(7usize, 5usize), (13, 96), (20, 150), (3, 200), (9, 31), (1, 97)] {
            let t = uniform(3 * d * d, 7);
            let g = gram_of(
                kernel,
                &Matrix::new(Values::F32(&t), 3 * d, d, None).unwrap(),
                &(0..3 * d).collect::<Vec<_>>(),
                |_| Some(1.0),
            );
            let x = uniform(n * d, 8);
            let xp = Packed::<K, Lhs>::new(kernel, &x, n, d);
            let h = pack_quadratic(kernel, &g, d);
            let mut q = vec![0f64; n];
            for c0 in (0..d).step_by(QUAD_COLS) {
                let cols = QUAD_COLS.min(d - c0);
                let mut z = vec![f32::NAN; n * cols];
                quadratic_tile(&xp, &h, c0, cols, &mut z);
                // The truncated product equals the full one with H's zeros (same bits).
                let mut zf = vec![f32::NAN; n * cols];
                gemm_packed(&xp, &h, c0, cols, 1.0, &mut zf);
                assert_eq!(z, zf);
                for i in 0..n {
                    for j in 0..cols {
                        q[i] += f64::from(z[i * cols + j]) * f64::from(x[i * d + c0 + j]);
                    }
                }
            }
            let mut rows_q = vec![0f64; n];
            quadratic_rows(&xp, &x, &h, &mut rows_q);
            for i in 0..n {
                let xi = &x[i * d..(i + 1) * d];
                let want: f64 = (0..d)
                    .flat_map(|a| (0..d).map(move |b| (a, b)))
                    .map(|(a, b)| f64::from(xi[a]) * f64::from(g[a * d + b]) * f64::from(xi[b]))
                    .sum();
                for (what, got) in [("tiles", q[i]), ("quadratic_rows", rows_q[i])] {
                    let tol = 1e-4 * want.abs().max(1.0);
                    assert_close(got, want, tol, || format!("{} ({n},{d}) row {i} {what}", K::ISA));
                }
            }
        }
    }

    #[test]
    fn quadratic_form_through_triangular_tiles() {
        each_kernel!(quadratic_form);
    }
}
