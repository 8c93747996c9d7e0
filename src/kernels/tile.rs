//! The matrix-product building block: one cache-sized tile `C = scale * A B^T`.
//!
//! Both operands are row-major with rows of length `d` (embeddings), so `A B^T` is a matrix of
//! dot products. The product itself is `matrixmultiply`'s packed, register-blocked AVX2/FMA
//! micro-kernel (ndarray's GEMM backend, picked at run time). We call it one tile at a time,
//! single-threaded, on every core at once, and put our own fused reduction ("epilogue") on each
//! tile while it is still in cache. Parallelism is over tiles, never inside one, so a tile's
//! bits never depend on the thread count.
//!
//! Why `matrixmultiply` and not the `gemm` crate: measured here, 256 x 256 x 768 tiles on both
//! cores run at 170-190 GFLOP/s with `matrixmultiply` (NumPy/OpenBLAS: about 180 on one large
//! product) and at 125-140 with `gemm` 0.19, sequential tiles or its own threading alike
//! (`benches/kernels.rs`, `tile_gemm_*`).

/// Rows of `A` per tile. 256 rows x 768 floats = 768 KiB of `A`, packed once per tile row.
pub const TILE_ROWS: usize = 256;
/// Rows of `B` (columns of `C`) per tile. The tile `C` is 256 x 256 floats = 256 KiB: it stays
/// in the 1 MiB L2 while the epilogue reads it back.
pub const TILE_COLS: usize = 256;

/// `c[i * cols + j] = scale * sum_k a[i * d + k] * b[j * d + k]` for `i < rows`, `j < cols`.
///
/// For a fixed shape `(rows, cols, d)` the bits of `c[i][j]` depend only on row `i` of `a` and
/// row `j` of `b`, not on where the rows sit (checked by `entries_do_not_depend_on_row_
/// position`). Different shapes can round differently (`gemm` takes other paths for thin
/// matrices), so callers that need results independent of how rows are batched always call it
/// with `rows = TILE_ROWS`, padding with zero rows. (`matrixmultiply`'s blocking is a compile-time
/// constant, so in fact shapes do not matter today; the padding keeps that an implementation
/// detail rather than a promise we depend on.)
///
/// # Panics
/// If a slice is shorter than its shape (a bug in the caller, never user data).
pub fn gemm_abt(a: &[f32], rows: usize, b: &[f32], cols: usize, d: usize, scale: f32, c: &mut [f32]) {
    assert!(a.len() >= rows * d && b.len() >= cols * d && c.len() >= rows * cols);
    if rows == 0 || cols == 0 {
        return;
    }
    // SAFETY: the strides address exactly the `rows x d` block of `a`, `d x cols` of `b^T` (row
    // `j` of `b` is column `j`) and `rows x cols` of `c`, whose sizes were asserted above; with
    // beta = 0, `c` is only written.
    unsafe {
        matrixmultiply::sgemm(
            rows,
            d,
            cols,
            scale,
            a.as_ptr(),
            d as isize,
            1,
            b.as_ptr(),
            1,
            d as isize,
            0.0,
            c.as_mut_ptr(),
            cols as isize,
            1,
        );
    }
}

/// `c = a^T a` for `a` of `rows x d` (row-major): one block's share of the Gram matrix
/// `sum_t t t^T` (`d x d`, row-major).
pub fn gram(a: &[f32], rows: usize, d: usize, c: &mut [f32]) {
    assert!(a.len() >= rows * d && c.len() >= d * d);
    if d == 0 {
        return;
    }
    // SAFETY: `a^T` is read with strides (1, d) over the asserted `rows x d` block; `c` is d x d
    // and, with beta = 0, only written.
    unsafe {
        matrixmultiply::sgemm(
            d,
            rows,
            d,
            1.0,
            a.as_ptr(),
            1,
            d as isize,
            a.as_ptr(),
            d as isize,
            1,
            0.0,
            c.as_mut_ptr(),
            d as isize,
            1,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::kernels::testutil::uniform as random;

    #[test]
    fn matches_naive_at_block_edges() {
        for &(m, n, d) in &[
            (0, 3, 4),
            (1, 1, 1),
            (15, 16, 17),
            (17, 15, 16),
            (127, 129, 128),
            (256, 256, 768),
            (257, 3, 512),
        ] {
            let a = random(m * d, 1);
            let b = random(n * d, 2);
            let mut c = vec![f32::NAN; m * n];
            gemm_abt(&a, m, &b, n, d, 2.0, &mut c);
            for i in 0..m {
                for j in 0..n {
                    let want: f64 =
                        (0..d).map(|k| a[i * d + k] as f64 * b[j * d + k] as f64).sum::<f64>() * 2.0;
                    let got = c[i * n + j] as f64;
                    assert!(
                        (got - want).abs() <= 1e-5 * (d as f64).sqrt(),
                        "({m},{n},{d}) [{i},{j}] {got} vs {want}"
                    );
                }
            }
        }
    }

    #[test]
    fn entries_do_not_depend_on_row_position() {
        for &(cols, d) in &[(TILE_COLS, 768), (44, 768), (1, 512), (7, 33)] {
            let a = random(TILE_ROWS * d, 3);
            let b = random(cols * d, 4);
            let mut full = vec![f32::NAN; TILE_ROWS * cols];
            gemm_abt(&a, TILE_ROWS, &b, cols, d, 100.0, &mut full);
            for shift in [1usize, 17, 255] {
                // The same rows, rotated by `shift` positions.
                let mut rot = a[shift * d..].to_vec();
                rot.extend_from_slice(&a[..shift * d]);
                let mut c = vec![f32::NAN; TILE_ROWS * cols];
                gemm_abt(&rot, TILE_ROWS, &b, cols, d, 100.0, &mut c);
                for i in 0..TILE_ROWS {
                    let src = (i + shift) % TILE_ROWS;
                    for j in 0..cols {
                        assert_eq!(
                            c[i * cols + j].to_bits(),
                            full[src * cols + j].to_bits(),
                            "cols={cols} d={d} shift={shift} [{i},{j}]"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn gram_matches_naive() {
        for &(m, d) in &[(37usize, 9usize), (1, 1), (300, 17), (0, 3)] {
            let a = random(m * d, 5);
            let mut c = vec![f32::NAN; d * d];
            gram(&a, m, d, &mut c);
            for p in 0..d {
                for q in 0..d {
                    let term = |t: usize| f64::from(a[t * d + p]) * f64::from(a[t * d + q]);
                    let want: f64 = (0..m).map(term).sum();
                    let size: f64 = (0..m).map(|t| term(t).abs()).sum();
                    assert!((f64::from(c[p * d + q]) - want).abs() <= 1e-6 * size, "({m},{d}) [{p},{q}]");
                }
            }
        }
    }
}
