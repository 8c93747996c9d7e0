//! Packed GEMM for our tiles: operands packed once, reused by every tile that reads them.
//!
//! `C = scale * A B^T` with `A` (rows x d) and `B` (cols x d) row-major embeddings. In BLIS
//! terms: `k` is cut into blocks of [`KC`]; `A` is packed into micro-panels of [`MR`] rows and
//! `B` into micro-panels of [`NR`] rows, each k-major (`panel[k][r]`). The micro-kernel keeps a
//! `MR x NR` block of `C` in registers: per `k` step it loads two 8-float vectors of `B`,
//! broadcasts `MR` values of `A` and does `2 MR` FMAs.
//!
//! Why our own, rather than a GEMM crate: a batch's texts (negCLIPLoss) or a target set (NormSim)
//! is the `B` of hundreds of tiles, and a row block is the `A` of all its tiles. Packing each
//! once instead of once per tile call removes most of the data movement, and the tile stays in
//! L2 for the fused epilogue. The crates we measured here pack both operands inside every call
//! and take no pre-packed operand: `gemm` 0.19 reaches the machine's ceiling on whole products
//! (about 185 GFLOP/s on 4096 x 768 x 4096) but 125-140 GFLOP/s called per 256 x 256 tile, and
//! `matrixmultiply` (ndarray's backend, our first version) 150-160; this kernel runs the same
//! tiles at the ceiling. What is hand-written is only the register block and the loops
//! around it; threads (rayon), half floats (half) and random numbers (rand_chacha) are crates.
//!
//! Determinism: every entry is one sequential FMA chain over all of `k` (partial sums are
//! carried across k-blocks) scaled once at the end: the same bits whatever the tile's shape or
//! the row's position in it.

use super::aligned::AlignedVec;

/// Rows of `A` per micro-panel (broadcast side).
pub const MR: usize = 6;
/// Rows of `B` per micro-panel (vector side: two AVX2 vectors).
pub const NR: usize = 16;
/// `k` per block. Embeddings have `d <= 1024`, so this is one block: every entry of `C` is written
/// once. Measured on negCLIPLoss batches of 4096 (GEMM plus epilogue, both cores, the block
/// sizes interleaved in one process, median of 25): 174 / 171 / 165 / 165 GFLOP/s at d = 512
/// and 191 / 178 / 184 / 177 at d = 768 for `KC` = 1024 / 512 / 384 / 256: the `B`
/// micro-panel leaving L1 for L2 (which the prefetcher streams well) costs less than
/// reloading the partial sums of every `C` block once per extra k-block.
pub const KC: usize = 1024;

/// A matrix (`n x d`, row-major) packed into micro-panels of `width` rows:
/// `data[panel][k][r]`, so any k-block of a panel is `kc * width` contiguous floats. Rows beyond
/// `n` are zero.
#[derive(Debug, Clone)]
pub struct Packed {
    data: AlignedVec,
    n: usize,
    d: usize,
    width: usize,
}

impl Packed {
    /// Packs `src` (`n x d`) into panels of `width` rows.
    pub fn new(src: &[f32], n: usize, d: usize, width: usize) -> Self {
        assert!(src.len() >= n * d);
        Self::from_rows(n, d, width, |r0, count, dst| dst.copy_from_slice(&src[r0 * d..(r0 + count) * d]))
    }

    /// Packs `n` rows produced by `rows(r0, count, dst)`, which writes rows `r0..r0 + count`
    /// (row-major, `count x d`) into `dst`: one panel at a time, so no unpacked copy of the
    /// whole matrix is ever held. Panels are filled in parallel on the current rayon pool.
    pub fn from_rows(
        n: usize,
        d: usize,
        width: usize,
        rows: impl Fn(usize, usize, &mut [f32]) + Sync,
    ) -> Self {
        use rayon::prelude::*;
        let w = width;
        let mut data = AlignedVec::zeroed(n.div_ceil(w) * w * d);
        if d > 0 {
            data.par_chunks_mut(d * w).enumerate().for_each_init(Vec::new, |buf, (p, panel)| {
                let count = w.min(n - p * w);
                buf.resize(count * d, 0.0);
                rows(p * w, count, buf);
                for (r, row) in buf.chunks_exact(d).enumerate() {
                    for (k, &v) in row.iter().enumerate() {
                        panel[k * w + r] = v;
                    }
                }
            });
        }
        Self { data, n, d, width }
    }

    /// Packs columns `col0..col0 + n` of `src` (`k` rows of `ld` floats, row-major) as the `n`
    /// rows (each of length `k`) of a transposed operand: `A^T` of a row block without
    /// transposing it first. Sequential (meant for callers that are already parallel).
    pub fn from_columns(src: &[f32], k: usize, ld: usize, col0: usize, n: usize, width: usize) -> Self {
        assert!(col0 + n <= ld && src.len() >= k * ld);
        let mut data = AlignedVec::zeroed(n.div_ceil(width) * width * k);
        if k > 0 {
            for (q, panel) in data.chunks_exact_mut(k * width).enumerate() {
                let c = col0 + q * width;
                let count = width.min(col0 + n - c);
                for (row, dst) in src.chunks_exact(ld).zip(panel.chunks_exact_mut(width)) {
                    dst[..count].copy_from_slice(&row[c..c + count]);
                }
            }
        }
        Self { data, n, d: k, width }
    }

    pub fn rows(&self) -> usize {
        self.n
    }

    pub fn dim(&self) -> usize {
        self.d
    }

    /// The `kc * width` floats of panel `p` for `k` in `k0..k0 + kc`.
    #[inline]
    fn panel(&self, k0: usize, kc: usize, p: usize) -> &[f32] {
        let start = (p * self.d + k0) * self.width;
        &self.data[start..start + kc * self.width]
    }
}

/// `acc += A_panel B_panel^T` over `kc` steps, as plain arrays (the portable kernel; the compiler
/// vectorises the 16-wide rows).
#[inline(always)]
fn kernel_portable(kc: usize, a: &[f32], b: &[f32], acc: &mut [[f32; NR]; MR]) {
    for k in 0..kc {
        let bk: &[f32; NR] = b[k * NR..(k + 1) * NR].try_into().expect("NR floats");
        for (i, row) in acc.iter_mut().enumerate() {
            let x = a[k * MR + i];
            for (c, &y) in row.iter_mut().zip(bk) {
                *c = x.mul_add(y, *c);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn kernel_avx2(kc: usize, a: &[f32], b: &[f32], acc: &mut [[f32; NR]; MR]) {
    use std::arch::x86_64::*;
    assert!(a.len() >= kc * MR && b.len() >= kc * NR);
    let (a, b) = (a.as_ptr(), b.as_ptr());
    // SAFETY: each row of `acc` holds 16 floats.
    let load =
        |r: usize| unsafe { (_mm256_loadu_ps(acc[r].as_ptr()), _mm256_loadu_ps(acc[r].as_ptr().add(8))) };
    let ((mut c00, mut c01), (mut c10, mut c11), (mut c20, mut c21)) = (load(0), load(1), load(2));
    let ((mut c30, mut c31), (mut c40, mut c41), (mut c50, mut c51)) = (load(3), load(4), load(5));
    for k in 0..kc {
        // SAFETY: k < kc and the panels hold kc * NR and kc * MR floats (asserted above).
        unsafe {
            let b0 = _mm256_loadu_ps(b.add(k * NR));
            let b1 = _mm256_loadu_ps(b.add(k * NR + 8));
            let ak = a.add(k * MR);
            let x = _mm256_broadcast_ss(&*ak);
            c00 = _mm256_fmadd_ps(x, b0, c00);
            c01 = _mm256_fmadd_ps(x, b1, c01);
            let x = _mm256_broadcast_ss(&*ak.add(1));
            c10 = _mm256_fmadd_ps(x, b0, c10);
            c11 = _mm256_fmadd_ps(x, b1, c11);
            let x = _mm256_broadcast_ss(&*ak.add(2));
            c20 = _mm256_fmadd_ps(x, b0, c20);
            c21 = _mm256_fmadd_ps(x, b1, c21);
            let x = _mm256_broadcast_ss(&*ak.add(3));
            c30 = _mm256_fmadd_ps(x, b0, c30);
            c31 = _mm256_fmadd_ps(x, b1, c31);
            let x = _mm256_broadcast_ss(&*ak.add(4));
            c40 = _mm256_fmadd_ps(x, b0, c40);
            c41 = _mm256_fmadd_ps(x, b1, c41);
            let x = _mm256_broadcast_ss(&*ak.add(5));
            c50 = _mm256_fmadd_ps(x, b0, c50);
            c51 = _mm256_fmadd_ps(x, b1, c51);
        }
    }
    for (row, (lo, hi)) in
        acc.iter_mut().zip([(c00, c01), (c10, c11), (c20, c21), (c30, c31), (c40, c41), (c50, c51)])
    {
        // SAFETY: each row holds 16 floats.
        unsafe {
            _mm256_storeu_ps(row.as_mut_ptr(), lo);
            _mm256_storeu_ps(row.as_mut_ptr().add(8), hi);
        }
    }
}

/// `acc += A_panel B_panel^T`: continues each entry's FMA chain over `kc` more steps.
#[inline]
fn kernel(kc: usize, a: &[f32], b: &[f32], acc: &mut [[f32; NR]; MR]) {
    #[cfg(target_arch = "x86_64")]
    if super::fastmath::has_avx2() {
        // SAFETY: the CPU has AVX2 and FMA.
        return unsafe { kernel_avx2(kc, a, b, acc) };
    }
    kernel_portable(kc, a, b, acc)
}

/// `c[i * cols + j] = scale * sum_k A[i][k] * B[col0 + j][k]` for the `rows = a.rows()` rows of
/// `a` and `cols` rows of `b` starting at `col0` (a multiple of [`NR`]).
///
/// # Panics
/// If `col0` is not a multiple of `NR`, the range exceeds `b`, `c` is too small or the widths
/// differ (caller bugs, never user data).
pub fn gemm_packed(a: &Packed, b: &Packed, col0: usize, cols: usize, scale: f32, c: &mut [f32]) {
    gemm_packed_ld(a, b, col0, cols, scale, c, cols);
}

/// [`gemm_packed`] into rows of `c` that are `ldc >= cols` floats apart: entry `(i, j)` goes to
/// `c[i * ldc + j]`, the rest of each row is left as it is.
pub fn gemm_packed_ld(
    a: &Packed,
    b: &Packed,
    col0: usize,
    cols: usize,
    scale: f32,
    c: &mut [f32],
    ldc: usize,
) {
    gemm_packed_k(a, b, col0, cols, a.d, scale, c, ldc);
}

/// [`gemm_packed_ld`] over `k < kmax` only: for a `B` whose rows are zero from `kmax` on (a
/// triangular factor), this skips the zero part and gives the same bits as the full product
/// (adding `x * 0` to a chain leaves it unchanged).
#[allow(clippy::too_many_arguments)]
pub fn gemm_packed_k(
    a: &Packed,
    b: &Packed,
    col0: usize,
    cols: usize,
    kmax: usize,
    scale: f32,
    c: &mut [f32],
    ldc: usize,
) {
    assert!(a.width == MR && b.width == NR && a.d == b.d && col0.is_multiple_of(NR));
    assert!(col0 + cols <= b.n && ldc >= cols && kmax <= a.d);
    assert!(a.n == 0 || c.len() >= (a.n - 1) * ldc + cols);
    let (rows, d) = (a.n, kmax);
    if d == 0 {
        for i in 0..rows {
            c[i * ldc..i * ldc + cols].fill(0.0);
        }
        return;
    }
    let last_k0 = (d - 1) / KC * KC;
    for k0 in (0..d).step_by(KC) {
        let kc = KC.min(d - k0);
        // B micro-panel outer (stays in L1), A micro-panels inner (the row block's k-block stays
        // in L2). Between k-blocks `c` holds the raw partial sums, so that every entry is one
        // FMA chain over all of `k`; the scale is applied once, after the last block.
        for q in 0..cols.div_ceil(NR) {
            let nr = NR.min(cols - q * NR);
            let bp = b.panel(k0, kc, col0 / NR + q);
            for p in 0..rows.div_ceil(MR) {
                let mr = MR.min(rows - p * MR);
                let mut acc = [[0f32; NR]; MR];
                if k0 > 0 {
                    for (i, row) in acc.iter_mut().enumerate().take(mr) {
                        row[..nr].copy_from_slice(&c[(p * MR + i) * ldc + q * NR..][..nr]);
                    }
                }
                kernel(kc, a.panel(k0, kc, p), bp, &mut acc);
                let s = if k0 == last_k0 { scale } else { 1.0 };
                for (i, row) in acc.iter().enumerate().take(mr) {
                    let dst = &mut c[(p * MR + i) * ldc + q * NR..][..nr];
                    for (o, &v) in dst.iter_mut().zip(row) {
                        *o = s * v;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testutil::uniform;

    #[test]
    fn matches_naive_at_block_edges() {
        for &(m, n, d) in &[
            (1, 1, 1),
            (5, 15, 7),
            (6, 16, 256),
            (7, 17, 257),
            (13, 33, 600),
            (256, 256, 768),
            (7, 20, 1100),
            (3, 5, 0),
            (0, 3, 4),
            (15, 16, 17),
            (17, 15, 16),
            (127, 129, 128),
            (257, 3, 512),
        ] {
            let a = uniform(m * d, 1);
            let b = uniform(n * d, 2);
            let (pa, pb) = (Packed::new(&a, m, d, MR), Packed::new(&b, n, d, NR));
            let mut c = vec![f32::NAN; m * n];
            gemm_packed(&pa, &pb, 0, n, 2.0, &mut c);
            for i in 0..m {
                for j in 0..n {
                    let want: f64 =
                        (0..d).map(|k| f64::from(a[i * d + k]) * f64::from(b[j * d + k])).sum::<f64>() * 2.0;
                    assert!(
                        (f64::from(c[i * n + j]) - want).abs() <= 1e-5 * (d as f64).sqrt(),
                        "({m},{n},{d}) [{i},{j}]"
                    );
                }
            }
        }
    }

    #[test]
    fn column_ranges_and_row_positions_give_the_same_bits() {
        let (m, n, d) = (40, 64, 300);
        let a = uniform(m * d, 3);
        let b = uniform(n * d, 4);
        let pb = Packed::new(&b, n, d, NR);
        let mut full = vec![0f32; m * n];
        gemm_packed(&Packed::new(&a, m, d, MR), &pb, 0, n, 1.0, &mut full);
        // Columns 16..48 only, and rows 7..40 as their own block.
        let sub = &a[7 * d..];
        let mut part = vec![0f32; (m - 7) * 32];
        gemm_packed(&Packed::new(sub, m - 7, d, MR), &pb, 16, 32, 1.0, &mut part);
        for i in 0..m - 7 {
            for j in 0..32 {
                assert_eq!(part[i * 32 + j].to_bits(), full[(i + 7) * n + 16 + j].to_bits());
            }
        }
    }

    #[test]
    fn entries_do_not_depend_on_row_position_or_shape() {
        use crate::kernels::tile::TILE_ROWS;
        let gemm = |a: &[f32], b: &Packed, c: &mut [f32]| {
            gemm_packed(&Packed::new(a, TILE_ROWS, b.dim(), MR), b, 0, b.rows(), 100.0, c);
        };
        for &(cols, d) in &[(256, 768), (44, 768), (1, 512), (7, 33)] {
            let a = uniform(TILE_ROWS * d, 3);
            let b = Packed::new(&uniform(cols * d, 4), cols, d, NR);
            let mut full = vec![f32::NAN; TILE_ROWS * cols];
            gemm(&a, &b, &mut full);
            for shift in [1usize, 17, 255] {
                // The same rows, rotated by `shift` positions.
                let mut rot = a[shift * d..].to_vec();
                rot.extend_from_slice(&a[..shift * d]);
                let mut c = vec![f32::NAN; TILE_ROWS * cols];
                gemm(&rot, &b, &mut c);
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
    fn portable_and_avx2_kernels_agree() {
        let a = uniform(MR * 300, 5);
        let b = uniform(NR * 300, 6);
        let mut got = [[0.5f32; NR]; MR];
        kernel(300, &a, &b, &mut got);
        let mut portable = [[0.5f32; NR]; MR];
        kernel_portable(300, &a, &b, &mut portable);
        for i in 0..MR {
            for j in 0..NR {
                // Both are sequential FMA chains over k: identical bits.
                assert_eq!(got[i][j].to_bits(), portable[i][j].to_bits());
            }
        }
    }
}
