//! The matrix-product building blocks on plain row-major slices, for callers that use an
//! operand once: each call packs both operands (see [`super::packed`]). Hot loops that reuse an
//! operand pack it themselves, once.

use super::packed::{gemm_packed, Packed, MR, NR};

/// Rows of `A` per tile (a row block of negCLIPLoss / NormSim).
pub const TILE_ROWS: usize = 256;
/// Rows of `B` (columns of `C`) per tile. The tile `C` is 256 x 256 floats = 256 KiB: it stays
/// in the 1 MiB L2 while the epilogue reads it back. A multiple of `packed::NR`.
pub const TILE_COLS: usize = 256;

const _: () = assert!(TILE_COLS.is_multiple_of(NR));

/// `c[i * cols + j] = scale * sum_k a[i * d + k] * b[j * d + k]` for `i < rows`, `j < cols`.
///
/// Every entry is one FMA chain over `k` in order (`packed::gemm_packed`), so its bits depend
/// only on row `i` of `a` and row `j` of `b`, never on the shape or on where the rows sit.
///
/// # Panics
/// If a slice is shorter than its shape (a bug in the caller, never user data).
pub fn gemm_abt(a: &[f32], rows: usize, b: &[f32], cols: usize, d: usize, scale: f32, c: &mut [f32]) {
    assert!(a.len() >= rows * d && b.len() >= cols * d && c.len() >= rows * cols);
    if rows == 0 || cols == 0 {
        return;
    }
    gemm_packed(&Packed::new(a, rows, d, MR), &Packed::new(b, cols, d, NR), 0, cols, scale, c);
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
    fn entries_do_not_depend_on_row_position_or_shape() {
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
}
