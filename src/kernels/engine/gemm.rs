//! The loop nest of the packed GEMM: `C = scale * A B^T` for our tiles, from operands packed
//! once ([`super::pack`]) and reused by every tile that reads them.
//!
//! In BLIS terms: the columns are cut into blocks of `NC`, `k` into blocks of `KC` and the rows
//! into blocks of `MC` ([`Blocks`], derived once from the CPU's caches by [`super::blocking`]);
//! each block walks the `B` micro-panels (`K::NR` rows) and, inside, the `A` micro-panels
//! (`K::MR` rows), handing each `MR x NR` block of `C` to the micro-kernel `K`
//! ([`super::micro`]). The callers' tiles ([`super::tile`]) are at most 256 x 256, so `MC` and
//! `NC` split them only on CPUs with small caches. The loop nest is monomorphised per kernel
//! and chosen once per call ([`super::isa`]).
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
//! across k-blocks) scaled once at the end: the same bits whatever the tile's shape, the row's
//! position in it or the block sizes (so whatever the CPU's caches). The AVX2 and AVX-512
//! kernels compute the same fused chain, so they agree bit for bit; the portable kernel rounds
//! each product first.

use super::blocking::Blocks;
use super::micro::{KBlock, MicroKernel};
use super::pack::{Lhs, Packed, Rhs};

/// `c[i * cols + j] = scale * sum_k A[i][k] * B[col0 + j][k]` for the `rows = a.rows()` rows of
/// `a` and `cols` rows of `b` starting at `col0` (a multiple of `K::NR`): [`gemm_packed_in`] of
/// the whole sum into rows `cols` floats apart.
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
    gemm_packed_in(a, b, Part { col0, cols, ldc: cols, kmax: a.dim() }, scale, c);
}

/// The part of `A B^T` that [`gemm_packed_in`] computes, and where it puts it.
#[derive(Clone, Copy, Debug)]
pub struct Part {
    /// The first column (row of `B`): a multiple of `K::NR`.
    pub col0: usize,
    /// Columns `col0..col0 + cols`.
    pub cols: usize,
    /// Floats between rows of `c` (`>= cols`): entry `(i, j)` goes to `c[i * ldc + j]`, the rest
    /// of each row is left as it is.
    pub ldc: usize,
    /// The sum runs over `k < kmax` only (`<= dim`): for a `B` whose rows are zero from `kmax` on
    /// (a triangular factor), this skips the zero part and gives the same bits as the full
    /// product (adding `x * 0` to a chain leaves it unchanged).
    pub kmax: usize,
}

/// [`gemm_packed`] for any [`Part`]: entry `(i, j)` is
/// `c[i * ldc + j] = scale * sum_{k < kmax} A[i][k] * B[col0 + j][k]`, in this CPU's blocks
/// ([`Blocks::of`]).
///
/// # Panics
/// As [`gemm_packed`], and if `ldc < cols` or `kmax` exceeds the width.
pub fn gemm_packed_in<K: MicroKernel>(
    a: &Packed<K, Lhs>,
    b: &Packed<K, Rhs>,
    part: Part,
    scale: f32,
    c: &mut [f32],
) {
    gemm_blocked(a, b, part, scale, c, Blocks::of::<K>());
}

/// [`gemm_packed_in`] in the blocks `blocks`, which change the order entries are computed in,
/// never an entry's bits: each is one chain over `k < kmax` in order, scaled once.
///
/// # Panics
/// As [`gemm_packed_in`], and if a block is zero or `mc`, `nc` are not multiples of `MR`, `NR`.
pub fn gemm_blocked<K: MicroKernel>(
    a: &Packed<K, Lhs>,
    b: &Packed<K, Rhs>,
    part: Part,
    scale: f32,
    c: &mut [f32],
    blocks: Blocks,
) {
    let Part { col0, cols, ldc, kmax } = part;
    let Blocks { kc: kc_max, mc, nc } = blocks;
    let (mr_, nr_) = (K::MR, K::NR);
    assert!(a.dim() == b.dim() && col0.is_multiple_of(nr_));
    assert!(col0 + cols <= b.rows() && ldc >= cols && kmax <= a.dim());
    assert!(a.rows() == 0 || c.len() >= (a.rows() - 1) * ldc + cols);
    assert!(kc_max > 0 && mc > 0 && nc > 0 && mc.is_multiple_of(mr_) && nc.is_multiple_of(nr_));
    let (rows, d, kernel) = (a.rows(), kmax, a.kernel());
    if d == 0 {
        // An empty sum: every entry is zero.
        for i in 0..rows {
            c[i * ldc..i * ldc + cols].fill(0.0);
        }
        return;
    }
    let last_k0 = (d - 1) / kc_max * kc_max;
    // Columns in blocks of `NC` (BLIS loop 5): their k-blocks of `B` stay in L3.
    for j0 in (0..cols).step_by(nc) {
        let j1 = cols.min(j0 + nc);
        // k-blocks of `KC` (loop 4). Between k-blocks `c` holds the raw partial sums, so that
        // every entry is one chain over all of `k`; the scale is applied once, after the last.
        for k0 in (0..d).step_by(kc_max) {
            let kc = kc_max.min(d - k0);
            let s = if k0 == last_k0 { scale } else { 1.0 };
            // Rows in blocks of `MC` (loop 3): a block's k-block of `A` stays in L2.
            for i0 in (0..rows).step_by(mc) {
                let i1 = rows.min(i0 + mc);
                // B micro-panels outer (loop 2): one stays close while every A micro-panel of
                // the row block passes it.
                for q in j0 / nr_..j1.div_ceil(nr_) {
                    let nr = nr_.min(cols - q * nr_);
                    let bp = b.panel(k0, kc, col0 / nr_ + q);
                    // A micro-panels inner (loop 1).
                    for p in i0 / mr_..i1.div_ceil(mr_) {
                        let mr = mr_.min(rows - p * mr_);
                        let at = p * mr_ * ldc + q * nr_;
                        let ks = KBlock { kc, a: a.panel(k0, kc, p), b: bp, load: k0 > 0, scale: s };
                        kernel.block(ks, &mut c[at..], ldc, mr, nr);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::engine::dispatch::with_kernel;
    use crate::kernels::testutil::{assert_close, each_kernel, fused_kernels, uniform};

    /// Shapes `(m, n, d)` at `K`'s block edges: 0, 1, `MR`/`NR` +-1 and multiples, this CPU's `KC` +-1, and
    /// past the largest embedding width (1024).
    fn edge_shapes<K: MicroKernel>() -> Vec<(usize, usize, usize)> {
        let (mr, nr, kc) = (K::MR, K::NR, Blocks::of::<K>().kc);
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
            (mr + 1, nr - 1, kc - 1),
            (mr - 1, nr + 1, kc),
            (mr + 1, nr + 1, kc + 1),
            (7, 20, 2 * kc + 3),
            (mr, nr, 1025),
        ];
        v.push((256, 256, 768));
        v
    }

    /// The product at every edge shape against a float64 reference, through `gemm_packed_in`
    /// with `ldc > cols`: every entry is written (`c` starts as NaN) and nothing between rows is.
    fn naive_at_block_edges<K: MicroKernel>(kernel: K) {
        for (m, n, d) in edge_shapes::<K>() {
            let a = uniform(m * d, 1);
            let b = uniform(n * d, 2);
            let (pa, pb) = (Packed::<K, Lhs>::new(kernel, &a, m, d), Packed::<K, Rhs>::new(kernel, &b, n, d));
            let ldc = n + 3;
            let mut c = vec![f32::NAN; m * ldc];
            gemm_packed_in(&pa, &pb, Part { col0: 0, cols: n, ldc, kmax: d }, 2.0, &mut c);
            for i in 0..m {
                for j in 0..n {
                    let want: f64 =
                        (0..d).map(|k| f64::from(a[i * d + k]) * f64::from(b[j * d + k])).sum::<f64>() * 2.0;
                    let tol = 1e-5 * (d as f64).sqrt();
                    assert_close(f64::from(c[i * ldc + j]), want, tol, || {
                        format!("{} ({m},{n},{d}) [{i},{j}]", K::ISA)
                    });
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
        each_kernel!(naive_at_block_edges);
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

    /// `C` of `part` in the blocks `blocks`, NaN where nothing is written.
    fn blocked<K: MicroKernel>(
        a: &Packed<K, Lhs>,
        b: &Packed<K, Rhs>,
        part: Part,
        blocks: Blocks,
    ) -> Vec<u32> {
        let mut c = vec![f32::NAN; a.rows() * part.ldc];
        gemm_blocked(a, b, part, 0.5, &mut c, blocks);
        c.iter().map(|v| v.to_bits()).collect()
    }

    /// Other block sizes than this CPU's give the same bits: k-blocks of 1, 63-65, `kmax` +-1
    /// and this CPU's `KC` +-1, against one k-block over all of `k`, with the smallest row and
    /// column blocks and this CPU's, for whole products, column ranges and triangular parts.
    fn blocks_do_not_change_bits<K: MicroKernel>(kernel: K) {
        let own = Blocks::of::<K>();
        let (mr, nr) = (K::MR, K::NR);
        let unblocked = |kc| Blocks { kc, mc: (1 << 20) / mr * mr, nc: (1 << 20) / nr * nr };
        for &(m, n, d) in
            &[(2 * mr + 1, 3 * nr - 1, 300), (mr, 2 * nr, own.kc + 1), (37, 75, 64), (5, 9, 129)]
        {
            let (pa, pb) = (
                Packed::new(kernel, &uniform(m * d, 7), m, d),
                Packed::new(kernel, &uniform(n * d, 8), n, d),
            );
            let parts = [
                Part { col0: 0, cols: n, ldc: n + 2, kmax: d },
                Part { col0: nr, cols: n.saturating_sub(nr), ldc: n, kmax: d },
                Part { col0: 0, cols: n, ldc: n, kmax: d / 2 + 1 },
            ];
            for part in parts.into_iter().filter(|p| p.col0 + p.cols <= n) {
                let want = blocked(&pa, &pb, part, unblocked(part.kmax));
                let k = part.kmax;
                for kc in [1, 63, 64, 65, k - 1, k, k + 1, own.kc - 1, own.kc, own.kc + 1]
                    .into_iter()
                    .filter(|&kc| kc > 0)
                {
                    for (mc, nc) in [(mr, nr), (2 * mr, 2 * nr), (own.mc, own.nc), ((1 << 20) / mr * mr, nr)]
                    {
                        let got = blocked(&pa, &pb, part, Blocks { kc, mc, nc });
                        assert!(got == want, "{} ({m},{n},{d}) {part:?} kc={kc} mc={mc} nc={nc}", K::ISA);
                    }
                }
            }
        }
    }

    #[test]
    fn block_sizes_do_not_change_bits() {
        each_kernel!(blocks_do_not_change_bits);
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
        each_kernel!(column_ranges);
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
        each_kernel!(row_positions);
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
            let fused = fused_kernels();
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
