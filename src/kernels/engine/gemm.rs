//! Packed GEMM for our tiles: operands packed once, reused by every tile that reads them.
//!
//! `C = scale * A B^T` with `A` (rows x d) and `B` (cols x d) row-major embeddings. In BLIS
//! terms: `k` is cut into blocks of `K::KC`; `A` is packed into micro-panels of `K::MR` rows and
//! `B` into micro-panels of `K::NR` rows, each k-major (`panel[k][r]`), for a micro-kernel `K`
//! ([`super::micro`]) that keeps an `MR x NR` block of `C` in registers. A packed operand is
//! typed by its kernel and side (`Packed<K, Lhs>` / `Packed<K, Rhs>`), so a product can only
//! read panels laid out for the kernel that computes it; the loop nest is monomorphised per
//! kernel and chosen once per call ([`super::isa`]).
//!
//! Why our own, rather than a GEMM crate: a batch's texts (negCLIPLoss) or a target set (NormSim)
//! is the `B` of hundreds of tiles, and a row block is the `A` of all its tiles. Packing each
//! once instead of once per tile call removes most of the data movement, and the tile stays in
//! L2 for the fused epilogue. The crates we measured (on an AVX2 EPYC) pack both operands inside
//! every call and take no pre-packed operand: `gemm` 0.19 reaches the machine's ceiling on whole
//! products (about 185 GFLOP/s on 4096 x 768 x 4096) but 125-140 GFLOP/s called per 256 x 256
//! tile, and `matrixmultiply` (ndarray's backend, our first version) 150-160; our kernel runs the
//! same tiles at the ceiling. What is hand-written is only the register blocks and the loops
//! around them; threads (rayon), half floats (half) and random numbers (rand_chacha) are crates.
//!
//! Determinism: every entry is one sequential chain over all of `k` (partial sums are carried
//! across k-blocks) scaled once at the end: the same bits whatever the tile's shape or the row's
//! position in it. The AVX2 and AVX-512 kernels compute the same fused chain, so they agree bit
//! for bit; the portable kernel rounds each product first.

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
            for (q, panel) in data.chunks_exact_mut(k * w).enumerate() {
                let c = col0 + q * w;
                let count = w.min(col0 + n - c);
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
    fn panel(&self, k0: usize, kc: usize, p: usize) -> &[f32] {
        let w = S::width::<K>();
        let start = (p * self.d + k0) * w;
        &self.data[start..start + kc * w]
    }
}

/// `c[i * cols + j] = scale * sum_k A[i][k] * B[col0 + j][k]` for the `rows = a.rows()` rows of
/// `a` and `cols` rows of `b` starting at `col0` (a multiple of `K::NR`).
///
/// # Panics
/// If `col0` is not a multiple of `K::NR`, the range exceeds `b`, `c` is too small or the widths
/// differ (caller bugs, never user data).
pub fn gemm_packed<K: MicroKernel>(
    a: &Packed<K, Lhs>,
    b: &Packed<K, Rhs>,
    col0: usize,
    cols: usize,
    scale: f32,
    c: &mut [f32],
) {
    gemm_packed_ld(a, b, col0, cols, scale, c, cols);
}

/// [`gemm_packed`] into rows of `c` that are `ldc >= cols` floats apart: entry `(i, j)` goes to
/// `c[i * ldc + j]`, the rest of each row is left as it is.
pub fn gemm_packed_ld<K: MicroKernel>(
    a: &Packed<K, Lhs>,
    b: &Packed<K, Rhs>,
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
pub fn gemm_packed_k<K: MicroKernel>(
    a: &Packed<K, Lhs>,
    b: &Packed<K, Rhs>,
    col0: usize,
    cols: usize,
    kmax: usize,
    scale: f32,
    c: &mut [f32],
    ldc: usize,
) {
    let (mr_, nr_) = (K::MR, K::NR);
    assert!(a.d == b.d && col0.is_multiple_of(nr_));
    assert!(col0 + cols <= b.n && ldc >= cols && kmax <= a.d);
    assert!(a.n == 0 || c.len() >= (a.n - 1) * ldc + cols);
    let (rows, d, kernel) = (a.n, kmax, a.kernel);
    if d == 0 {
        for i in 0..rows {
            c[i * ldc..i * ldc + cols].fill(0.0);
        }
        return;
    }
    let kc_max = K::KC;
    let last_k0 = (d - 1) / kc_max * kc_max;
    for k0 in (0..d).step_by(kc_max) {
        let kc = kc_max.min(d - k0);
        let s = if k0 == last_k0 { scale } else { 1.0 };
        // B micro-panel outer (stays in L1), A micro-panels inner (the row block's k-block stays
        // in L2). Between k-blocks `c` holds the raw partial sums, so that every entry is one
        // chain over all of `k`; the scale is applied once, after the last block.
        for q in 0..cols.div_ceil(nr_) {
            let nr = nr_.min(cols - q * nr_);
            let bp = b.panel(k0, kc, col0 / nr_ + q);
            for p in 0..rows.div_ceil(mr_) {
                let mr = mr_.min(rows - p * mr_);
                let at = p * mr_ * ldc + q * nr_;
                kernel.block(kc, a.panel(k0, kc, p), bp, &mut c[at..], ldc, mr, nr, k0 > 0, s);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::engine::isa::{with_kernel, Isa, Kernel};
    use crate::kernels::testutil::{kernels, uniform};

    /// Shapes `(m, n, d)` at `K`'s block edges: 0, 1, `MR`/`NR` +-1 and multiples, `KC` +-1, and
    /// past the largest embedding width (1024).
    fn edge_shapes<K: MicroKernel>() -> Vec<(usize, usize, usize)> {
        let (mr, nr) = (K::MR, K::NR);
        let mut v = vec![
            (1, 1, 1),
            (0, 3, 4),
            (3, 5, 0),
            (mr - 1, nr - 1, 7),
            (mr, nr, 256),
            (mr + 1, nr + 1, 257),
            (2 * mr + 1, 2 * nr - 1, 600),
            (3 * mr - 1, 3 * nr + 1, 33),
            (15, 16, 17),
            (17, 15, 16),
            (127, 129, 128),
            (257, 3, 512),
            (mr + 1, nr - 1, K::KC - 1),
            (mr - 1, nr + 1, K::KC),
            (mr + 1, nr + 1, K::KC + 1),
            (7, 20, 2 * K::KC + 3),
            (mr, nr, 1025),
        ];
        v.push((256, 256, 768));
        v
    }

    /// The product at every edge shape against a float64 reference, through `gemm_packed_ld`
    /// with `ldc > cols`: every entry is written (`c` starts as NaN) and nothing between rows is.
    fn naive_at_block_edges<K: MicroKernel>(kernel: K) {
        for (m, n, d) in edge_shapes::<K>() {
            let a = uniform(m * d, 1);
            let b = uniform(n * d, 2);
            let (pa, pb) = (Packed::<K, Lhs>::new(kernel, &a, m, d), Packed::<K, Rhs>::new(kernel, &b, n, d));
            let ldc = n + 3;
            let mut c = vec![f32::NAN; m * ldc];
            gemm_packed_ld(&pa, &pb, 0, n, 2.0, &mut c, ldc);
            for i in 0..m {
                for j in 0..n {
                    let want: f64 =
                        (0..d).map(|k| f64::from(a[i * d + k]) * f64::from(b[j * d + k])).sum::<f64>() * 2.0;
                    assert!(
                        (f64::from(c[i * ldc + j]) - want).abs() <= 1e-5 * (d as f64).sqrt(),
                        "{} ({m},{n},{d}) [{i},{j}]: {} vs {want}",
                        K::ISA,
                        c[i * ldc + j]
                    );
                }
                assert!(
                    c[i * ldc + n..(i + 1) * ldc].iter().all(|v| v.is_nan()),
                    "{} wrote past a row",
                    K::ISA
                );
            }
        }
    }

    #[test]
    fn matches_naive_at_block_edges() {
        for kernel in kernels() {
            with_kernel!(kernel, k => naive_at_block_edges(k));
        }
        // The register blocks measured against the chosen ones (see `micro::Portable`, `micro::Avx512`).
        naive_at_block_edges(crate::kernels::engine::micro::PortableBlock::<6, 16>::detect().unwrap());
        naive_at_block_edges(crate::kernels::engine::micro::PortableBlock::<4, 8>::detect().unwrap());
        #[cfg(target_arch = "x86_64")]
        {
            use crate::kernels::engine::micro::Avx512Block;
            if let Some(k) = Avx512Block::<6, 4>::detect() {
                naive_at_block_edges(k);
            }
            if let Some(k) = Avx512Block::<12, 2>::detect() {
                naive_at_block_edges(k);
            }
            if let Some(k) = Avx512Block::<14, 2>::detect() {
                naive_at_block_edges(k);
            }
        }
    }

    fn column_ranges<K: MicroKernel>(kernel: K) {
        let (m, d) = (40, 300);
        let n = 4 * K::NR;
        let a = uniform(m * d, 3);
        let b = uniform(n * d, 4);
        let pb = Packed::<K, Rhs>::new(kernel, &b, n, d);
        let mut full = vec![0f32; m * n];
        gemm_packed(&Packed::new(kernel, &a, m, d), &pb, 0, n, 1.0, &mut full);
        // Columns NR..3 NR only, and rows 7..40 as their own block.
        let sub = &a[7 * d..];
        let w = 2 * K::NR;
        let mut part = vec![0f32; (m - 7) * w];
        gemm_packed(&Packed::new(kernel, sub, m - 7, d), &pb, K::NR, w, 1.0, &mut part);
        for i in 0..m - 7 {
            for j in 0..w {
                assert_eq!(part[i * w + j].to_bits(), full[(i + 7) * n + K::NR + j].to_bits(), "{}", K::ISA);
            }
        }
    }

    #[test]
    fn column_ranges_and_row_positions_give_the_same_bits() {
        for kernel in kernels() {
            with_kernel!(kernel, k => column_ranges(k));
        }
    }

    fn row_positions<K: MicroKernel>(kernel: K) {
        use crate::kernels::engine::tile::TILE_ROWS;
        let gemm = |a: &[f32], b: &Packed<K, Rhs>, c: &mut [f32]| {
            gemm_packed(&Packed::new(kernel, a, TILE_ROWS, b.dim()), b, 0, b.rows(), 100.0, c);
        };
        for &(cols, d) in &[(256, 768), (44, 768), (1, 512), (7, 33)] {
            let a = uniform(TILE_ROWS * d, 3);
            let b = Packed::new(kernel, &uniform(cols * d, 4), cols, d);
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
                            "{} cols={cols} d={d} shift={shift} [{i},{j}]",
                            K::ISA
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn entries_do_not_depend_on_row_position_or_shape() {
        for kernel in kernels() {
            with_kernel!(kernel, k => row_positions(k));
        }
    }

    /// `C` of a product with its shape's every edge, by one kernel.
    fn product<K: MicroKernel>(kernel: K, a: &[f32], b: &[f32], m: usize, n: usize, d: usize) -> Vec<f32> {
        let mut c = vec![f32::NAN; m * n];
        gemm_packed(&Packed::new(kernel, a, m, d), &Packed::new(kernel, b, n, d), 0, n, 0.5, &mut c);
        c
    }

    #[test]
    fn kernels_agree() {
        for &(m, n, d) in &[(37usize, 75usize, 300usize), (9, 33, 1041), (1, 1, 5)] {
            let a = uniform(m * d, 5);
            let b = uniform(n * d, 6);
            let portable = product(crate::kernels::engine::micro::Portable::new(), &a, &b, m, n, d);
            let fused: Vec<Kernel> = kernels().into_iter().filter(|k| k.isa() != Isa::Portable).collect();
            for &kernel in &fused {
                let got = with_kernel!(kernel, k => product(k, &a, &b, m, n, d));
                for (g, w) in got.iter().zip(&portable) {
                    assert!(
                        (g - w).abs() <= 1e-6 * (d as f32).sqrt(),
                        "{kernel} ({m},{n},{d}): {g} vs portable {w}"
                    );
                }
                // Both fused kernels chain the same FMAs in the same order: the same bits.
                let first = with_kernel!(fused[0], k => product(k, &a, &b, m, n, d));
                assert_eq!(got, first, "{kernel} vs {}", fused[0]);
            }
        }
    }
}
