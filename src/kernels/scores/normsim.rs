//! NormSim_p (docs/methods.md#normsim_p): closeness of each pool embedding `x` to a target set `T`:
//!
//! ```text
//! NormSim_p(x)   = ( sum_t |<x, t>|^p )^(1/p)
//! NormSim_inf(x) = max_t |<x, t>|
//! ```
//!
//! * `p = inf`: tiles of `X T^T` reduced by a running max of `|s|`.
//! * `p = 2`: `sqrt(x^T G x)` with `G = sum_t t t^T` (`d x d`, accumulated once in `f64` when the
//!   target is prepared; both use its symmetry, see [`super::gram`]): per row `O(d^2)` whatever `m`. When the target has no more rows than
//!   dimensions (`m <= d`) the direct `sqrt(sum_t s_t^2)` costs less and is used instead.
//! * other `p`: `exp(LSE_t(p ln|s_t|) / p)`, a running log-sum-exp, so no power overflows or
//!   underflows for large `p`.
//!
//! The `n x m` matrix is never built. The target is prepared once ([`Target::prepare`]) and
//! reused for every batch of rows Polars hands over; each row's result depends only on that row
//! (see [`crate::kernels::engine::gemm`]), so morsel boundaries never change a bit. A target is
//! packed for one kernel and scoring against it always runs that kernel: a layout mismatch cannot
//! be expressed.

use std::fmt;

use rayon::prelude::*;

use super::gram::{gram_of, pack_quadratic, quadratic_rows};
use crate::kernels::engine::aligned::AlignedVec;
use crate::kernels::engine::dispatch::with_kernel;
use crate::kernels::engine::fastmath::{fmax, hmax, ln, max_inline, simd_fn, sum_exp_inline, tail, Lse};
use crate::kernels::engine::gemm::gemm_packed;
use crate::kernels::engine::isa::Kernel;
#[cfg(target_arch = "x86_64")]
use crate::kernels::engine::micro::{Avx2, Avx512};
use crate::kernels::engine::micro::{MicroKernel, Portable};
use crate::kernels::engine::pack::{Lhs, Packed, Rhs};
use crate::kernels::engine::tile::{self, TILE_COLS, TILE_ROWS};
use crate::kernels::matrix::Matrix;
use crate::kernels::runtime::interrupt;

/// The `p` of NormSim_p.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Power {
    /// `p = 2`.
    Two,
    /// `p = inf`: the maximum.
    Inf,
    /// Any other finite `p > 0`.
    Finite(f32),
}

/// Smallest finite `p` accepted: `NormSim_p` grows like `m^(1/p)` for `m` targets, which leaves
/// the `f32` range for smaller `p` (`p = 0.001` would be `inf` for any realistic target set).
pub const MIN_P: f64 = 0.25;

impl Power {
    /// `Err` naming `p` unless it is `inf` or a finite number `>= MIN_P`.
    pub fn validate(p: f64) -> Result<(), String> {
        if p == f64::INFINITY || (p.is_finite() && p >= MIN_P) {
            Ok(())
        } else {
            Err(format!("`p` must be a number >= {MIN_P} or \"inf\", got {p:?}"))
        }
    }

    /// `p` as given by a user (checked by [`Power::validate`]).
    pub fn from_p(p: f64) -> Self {
        if p.is_infinite() {
            Power::Inf
        } else if p == 2.0 {
            Power::Two
        } else {
            Power::Finite(p as f32)
        }
    }
}

/// Why a target set cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetError {
    /// No rows.
    Empty,
    /// Row `i` is null, holds a NaN/infinity, or is a zero vector while normalising.
    BadRow(usize),
}

impl fmt::Display for TargetError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TargetError::Empty => write!(f, "the target set is empty"),
            TargetError::BadRow(i) => {
                write!(f, "target row {i} is null, holds a NaN or infinity, or is a zero vector")
            }
        }
    }
}

impl std::error::Error for TargetError {}

/// A target's panels, packed for one kernel: the variant is the kernel scoring uses.
#[derive(Debug)]
enum Panels {
    Portable(Packed<Portable, Rhs>),
    #[cfg(target_arch = "x86_64")]
    Avx2(Packed<Avx2, Rhs>),
    #[cfg(target_arch = "x86_64")]
    Avx512(Packed<Avx512, Rhs>),
}

/// Wraps panels packed for a kernel type into [`Panels`].
trait IntoPanels {
    fn into_panels(self) -> Panels;
}

impl IntoPanels for Packed<Portable, Rhs> {
    fn into_panels(self) -> Panels {
        Panels::Portable(self)
    }
}

#[cfg(target_arch = "x86_64")]
impl IntoPanels for Packed<Avx2, Rhs> {
    fn into_panels(self) -> Panels {
        Panels::Avx2(self)
    }
}

#[cfg(target_arch = "x86_64")]
impl IntoPanels for Packed<Avx512, Rhs> {
    fn into_panels(self) -> Panels {
        Panels::Avx512(self)
    }
}

/// `with_panels!(panels, p => expr)`: `expr` with `p` bound to the typed panels (one arm per
/// kernel type, like [`with_kernel!`]).
macro_rules! with_panels {
    ($panels:expr, $p:ident => $body:expr) => {
        match $panels {
            Panels::Portable($p) => $body,
            #[cfg(target_arch = "x86_64")]
            Panels::Avx2($p) => $body,
            #[cfg(target_arch = "x86_64")]
            Panels::Avx512($p) => $body,
        }
    };
}

/// A target set ready for scoring: its normalised rows, or `G` when `p = 2` uses it, packed once
/// as the `B` operand of every tile, for the kernel it was prepared with.
#[derive(Debug)]
pub struct Target {
    panels: Panels,
    m: usize,
    d: usize,
    power: Power,
    uses_gram: bool,
}

impl Target {
    /// Converts (and with `normalize`, L2-normalises) the target rows and packs them for
    /// `kernel`; for `p = 2` with `m > d` packs (the triangular form of) their Gram matrix
    /// `G = sum_t t t^T` instead (see [`super::gram`]). Never holds an unpacked copy of the whole
    /// target.
    pub fn prepare(kernel: Kernel, t: &Matrix, power: Power, normalize: bool) -> Result<Self, TargetError> {
        let (m, d) = (t.rows(), t.dim());
        if m == 0 {
            return Err(TargetError::Empty);
        }
        let scales = t.scales(normalize);
        if let Some(bad) = scales.iter().position(Option::is_none) {
            return Err(TargetError::BadRow(bad));
        }
        let idx: Vec<usize> = (0..m).collect();
        let uses_gram = power == Power::Two && m > d;
        let panels = with_kernel!(kernel, k => {
            if uses_gram {
                pack_quadratic(k, &gram_of(k, t, &idx, |i| scales[i]), d).into_panels()
            } else {
                Packed::<_, Rhs>::from_rows(k, m, d, |r0, n, dst| t.gather_scaled(&idx[r0..r0 + n], |i| scales[i], dst))
                    .into_panels()
            }
        });
        Ok(Self { panels, m, d, power, uses_gram })
    }

    /// The kernel this target is packed for (scoring against it runs this kernel).
    pub fn kernel(&self) -> Kernel {
        with_panels!(&self.panels, p => p.kernel().kernel())
    }

    pub fn rows(&self) -> usize {
        self.m
    }

    pub fn dim(&self) -> usize {
        self.d
    }

    pub fn power(&self) -> Power {
        self.power
    }
}

simd_fn! {
    fn max_abs_tile<K>(kernel: K, z: &[f32], cols: usize, acc: &mut [f32]) {
        for (r, a) in z.chunks_exact(cols).zip(acc.iter_mut()) {
            let mut lanes = [0f32; 16];
            let c = r.chunks_exact(16);
            let rem = tail(c.remainder(), 0.0);
            for x in c {
                let x: &[f32; 16] = x.try_into().expect("chunk of 16");
                for l in 0..16 {
                    lanes[l] = fmax(lanes[l], x[l].abs());
                }
            }
            for l in 0..16 {
                lanes[l] = fmax(lanes[l], rem[l].abs());
            }
            *a = fmax(*a, hmax(lanes));
        }
    }
}

simd_fn! {
    fn sum_sq_tile<K>(kernel: K, z: &[f32], cols: usize, acc: &mut [f64]) {
        for (r, a) in z.chunks_exact(cols).zip(acc.iter_mut()) {
            *a += f64::from(crate::kernels::engine::fastmath::dot_inline(r, r));
        }
    }
}

simd_fn! {
    /// Online `LSE_j(p ln|z_ij|)` per row; `z` is overwritten with `p ln|z|`. A zero (or
    /// subnormal) `z` is a zero term: `-inf`, whose exponential is exactly 0, so a row
    /// orthogonal to every target scores exactly 0.
    fn pow_tile<K>(kernel: K, z: &mut [f32], cols: usize, p: f32, acc: &mut [Lse]) {
        for (r, a) in z.chunks_exact_mut(cols).zip(acc.iter_mut()) {
            for v in r.iter_mut() {
                let x = v.abs();
                *v = if x < f32::MIN_POSITIVE { f32::NEG_INFINITY } else { p * ln::<M>(x) };
            }
            let m = max_inline(r);
            if m > f32::NEG_INFINITY {
                let s = sum_exp_inline::<M>(r, m);
                a.merge(m, f64::from(s));
            }
        }
    }
}

/// Rows `r0..r0 + rows` of `x`: each row's scale (`None`: unusable), the scaled rows
/// (`rows x d`, unusable ones zero) and the same packed as the `A` operand. Each entry of a tile
/// is one FMA chain over `k` (see [`crate::kernels::engine::gemm`]), so a row's result never
/// depends on the rows it was batched with: no padding needed.
fn row_block<K: MicroKernel>(
    kernel: K,
    x: &Matrix,
    r0: usize,
    rows: usize,
    normalize: bool,
) -> (Vec<Option<f64>>, Vec<f32>, Packed<K, Lhs>) {
    let d = x.dim();
    let mut scratch = vec![0f32; d];
    let idx: Vec<usize> = (r0..r0 + rows).collect();
    let scales: Vec<Option<f64>> = idx.iter().map(|&i| x.row_scale(i, normalize, &mut scratch)).collect();
    let mut xs = vec![0f32; rows * d];
    x.gather_scaled(&idx, |i| scales[i - r0], &mut xs);
    let xp = Packed::new(kernel, &xs, rows, d);
    (scales, xs, xp)
}

/// Per-row accumulator of one row block.
enum Acc {
    Max(Vec<f32>),
    Sum(Vec<f64>),
    Log(Vec<Lse>),
}

/// `score(xs, xp)` for every [`TILE_ROWS`] row block of `x` in parallel (the block from
/// [`row_block`]: its scaled rows and the same packed), one value per row of the block: the
/// values of the usable rows, `None` for the others.
fn by_row_block<K: MicroKernel, T: Copy + Send>(
    kernel: K,
    x: &Matrix,
    normalize: bool,
    score: impl Fn(&[f32], &Packed<K, Lhs>) -> Vec<T> + Sync,
) -> Vec<Option<T>> {
    const { tile::check::<K>() };
    let mut out = vec![None; x.rows()];
    out.par_chunks_mut(TILE_ROWS).enumerate().for_each(|(blk, dst)| {
        let (scales, xs, xp) = row_block(kernel, x, blk * TILE_ROWS, dst.len(), normalize);
        for ((o, s), v) in dst.iter_mut().zip(&scales).zip(score(&xs, &xp)) {
            *o = s.map(|_| v);
        }
    });
    out
}

/// `f(c0, cols, z)` for each tile `z` of `X T^T` (columns `c0..c0 + cols`, `rows x cols`): the row
/// block `xp` against every row of `panels`, [`TILE_COLS`] at a time; no further tile once an
/// interrupt is pending.
fn for_each_tile<K: MicroKernel>(
    xp: &Packed<K, Lhs>,
    panels: &Packed<K, Rhs>,
    mut f: impl FnMut(usize, usize, &mut [f32]),
) {
    let (rows, b_rows) = (xp.rows(), panels.rows());
    let mut tile = AlignedVec::zeroed(rows * TILE_COLS);
    for c0 in (0..b_rows).step_by(TILE_COLS) {
        if interrupt::pending() {
            break;
        }
        let cols = TILE_COLS.min(b_rows - c0);
        let z = &mut tile[..rows * cols];
        gemm_packed(xp, panels, c0, cols, 1.0, z);
        f(c0, cols, z);
    }
}

/// NormSim of every row of `x` against `target` (same width), with the kernel the target was
/// prepared for. Rows that are null, hold a NaN or infinity, or (when normalising) are zero get
/// `None`. Runs on the current rayon pool.
pub fn normsim(x: &Matrix, target: &Target, normalize: bool) -> Vec<Option<f32>> {
    debug_assert_eq!(x.dim(), target.d);
    with_panels!(&target.panels, p => by_row_block(p.kernel(), x, normalize, |xs, xp| normsim_rows(target, p, xs, xp)))
}

/// [`normsim`] of one row block (`xs` its scaled rows, `xp` the same packed), monomorphised for
/// the kernel of `panels` (the target's).
fn normsim_rows<K: MicroKernel>(
    target: &Target,
    panels: &Packed<K, Rhs>,
    xs: &[f32],
    xp: &Packed<K, Lhs>,
) -> Vec<f32> {
    let (rows, kernel) = (xp.rows(), panels.kernel());
    let acc = if target.uses_gram {
        let mut a = vec![0.0; rows];
        quadratic_rows(xp, xs, panels, &mut a);
        Acc::Sum(a)
    } else {
        let mut acc = match target.power {
            Power::Inf => Acc::Max(vec![0.0; rows]),
            Power::Two => Acc::Sum(vec![0.0; rows]),
            Power::Finite(_) => Acc::Log(vec![Lse::EMPTY; rows]),
        };
        for_each_tile(xp, panels, |_, cols, z| match (&mut acc, target.power) {
            (Acc::Max(a), _) => max_abs_tile(kernel, z, cols, a),
            (Acc::Sum(a), _) => sum_sq_tile(kernel, z, cols, a),
            (Acc::Log(a), Power::Finite(p)) => pow_tile(kernel, z, cols, p, a),
            (Acc::Log(_), _) => unreachable!("log accumulator only for finite p"),
        });
        acc
    };
    let value = |i: usize| -> f32 {
        match (&acc, target.power) {
            (Acc::Max(a), _) => a[i],
            (Acc::Sum(a), _) => a[i].max(0.0).sqrt() as f32,
            (Acc::Log(a), Power::Finite(p)) => (a[i].value() / f64::from(p)).exp() as f32,
            (Acc::Log(_), _) => f32::NAN,
        }
    };
    (0..rows).map(value).collect()
}

simd_fn! {
    /// Running argmax of each row of the tile (strict `>`: ties keep the earlier column).
    fn argmax_tile<K>(kernel: K, z: &[f32], cols: usize, c0: usize, best: &mut [(f32, u32)]) {
        for (r, b) in z.chunks_exact(cols).zip(best.iter_mut()) {
            for (j, &v) in r.iter().enumerate() {
                if v > b.0 {
                    *b = (v, (c0 + j) as u32);
                }
            }
        }
    }
}

/// The target row most similar to each row and that similarity: `(argmax_j <x, t_j>, max_j
/// <x, t_j>)` with both normalised when `normalize` (cosine), else raw inner products (ties:
/// the lower index). `None` where the row is unusable. A zero-shot classifier when the target
/// rows are text embeddings of class prompts; the cluster of a row when they are k-means
/// centroids (DataComp's image-based filter: raw inner products). `target` must not use a
/// Gram matrix (prepare it with `Power::Inf`).
pub fn nearest(x: &Matrix, target: &Target, normalize: bool) -> Vec<Option<(u32, f32)>> {
    debug_assert!(!target.uses_gram);
    let found = with_panels!(&target.panels, p => by_row_block(p.kernel(), x, normalize, |_, xp| nearest_rows(p, xp)));
    if normalize {
        return found;
    }
    // Raw products: a zero row ties every target row at 0 and has no nearest one (null, as
    // when normalising), rather than the first.
    let mut scratch = vec![0f32; x.dim()];
    found
        .into_iter()
        .enumerate()
        .map(|(r, f)| f.filter(|_| x.row_scale(r, true, &mut scratch).is_some()))
        .collect()
}

/// [`nearest`] of one packed row block, monomorphised for the kernel of `panels` (the target's).
fn nearest_rows<K: MicroKernel>(panels: &Packed<K, Rhs>, xp: &Packed<K, Lhs>) -> Vec<(u32, f32)> {
    let mut best = vec![(f32::NEG_INFINITY, 0u32); xp.rows()];
    for_each_tile(xp, panels, |c0, cols, z| argmax_tile(panels.kernel(), z, cols, c0, &mut best));
    best.into_iter().map(|(v, j)| (j, v)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testutil::{fused_kernels, kernels, matrix, Inputs};
    use crate::kernels::Values;

    fn naive(x: &[f32], t: &[f32], d: usize, p: f64) -> Vec<f64> {
        let norm = |v: &[f32]| -> Vec<f64> {
            let s = v.iter().map(|&a| f64::from(a).powi(2)).sum::<f64>().sqrt();
            v.iter().map(|&a| f64::from(a) / s).collect()
        };
        let ts: Vec<Vec<f64>> = t.chunks(d).map(norm).collect();
        x.chunks(d)
            .map(|r| {
                let xr = norm(r);
                let s: Vec<f64> =
                    ts.iter().map(|tr| tr.iter().zip(&xr).map(|(a, b)| a * b).sum::<f64>().abs()).collect();
                if p.is_infinite() {
                    s.iter().cloned().fold(0.0, f64::max)
                } else {
                    s.iter().map(|v| v.powf(p)).sum::<f64>().powf(1.0 / p)
                }
            })
            .collect()
    }

    #[test]
    fn matches_naive_for_every_power() {
        for kernel in kernels() {
            for &(n, m, d) in &[
                (1usize, 1usize, 20usize),
                (3, 5, 20),
                (257, 19, 20),
                (300, 21, 20),
                (40, 600, 20),
                (9, 33, 31),
                (17, 31, 7),
            ] {
                let data = Inputs::new(n, m, d, 11);
                let (xm, tm) = (data.xm(), data.tm());
                for p in [f64::INFINITY, 2.0, 1.0, 2.5, 3.0, 3.5, 40.0] {
                    let target = Target::prepare(kernel, &tm, Power::from_p(p), true).unwrap();
                    assert_eq!(target.kernel(), kernel);
                    let got = normsim(&xm, &target, true);
                    let want = naive(&data.x, &data.t, d, p);
                    for i in 0..n {
                        let g = f64::from(got[i].unwrap());
                        assert!(
                            (g - want[i]).abs() <= 2e-5 * want[i].max(1e-3),
                            "{kernel} n={n} m={m} d={d} p={p} row {i}: {g} vs {}",
                            want[i]
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn kernels_agree() {
        let (n, m, d) = (300, 700, 96);
        let data = Inputs::new(n, m, d, 41);
        let (xm, tm) = (data.xm(), data.tm());
        for p in [f64::INFINITY, 2.0, 2.5, 3.0] {
            let run = |k| normsim(&xm, &Target::prepare(k, &tm, Power::from_p(p), true).unwrap(), true);
            let portable = run(Kernel::portable());
            let fused = fused_kernels();
            for &kernel in &fused {
                let got = run(kernel);
                for i in 0..n {
                    let (g, w) = (got[i].unwrap(), portable[i].unwrap());
                    assert!((g - w).abs() <= 1e-5 * w.abs().max(0.01), "{kernel} p={p} row {i}: {g} vs {w}");
                }
                assert_eq!(got, run(fused[0]), "p={p}: {kernel} vs {}", fused[0]);
            }
        }
    }

    #[test]
    fn bad_targets_and_rows() {
        for kernel in kernels() {
            let t = [1.0f32, 0.0, 0.0, 0.0];
            let tm = Matrix::new(Values::F32(&t), 2, 2, None).unwrap();
            assert_eq!(Target::prepare(kernel, &tm, Power::Inf, true).unwrap_err(), TargetError::BadRow(1));
            let empty = Matrix::new(Values::F32(&[]), 0, 2, None).unwrap();
            assert_eq!(Target::prepare(kernel, &empty, Power::Inf, true).unwrap_err(), TargetError::Empty);
            let tm1 = Matrix::new(Values::F32(&t[..2]), 1, 2, None).unwrap();
            let good = Target::prepare(kernel, &tm1, Power::Inf, true).unwrap();
            let x = [0.0f32, 0.0, 3.0, 4.0];
            let got = normsim(&Matrix::new(Values::F32(&x), 2, 2, None).unwrap(), &good, true);
            assert_eq!(got[0], None);
            assert!((got[1].unwrap() - 0.6).abs() < 1e-7, "{kernel}");
        }
    }

    #[test]
    fn nearest_is_argmax_with_ties_to_lower_index() {
        for kernel in kernels() {
            let t = [1.0f32, 0.0, 0.0, 1.0, 1.0, 0.0, -1.0, 0.0];
            let tm = Matrix::new(Values::F32(&t), 4, 2, None).unwrap();
            let target = Target::prepare(kernel, &tm, Power::Inf, true).unwrap();
            let x = [0.9f32, 0.1, 0.1, 0.9, -1.0, 0.1, 0.0, 0.0];
            let got = nearest(&Matrix::new(Values::F32(&x), 4, 2, None).unwrap(), &target, true);
            let labels: Vec<Option<u32>> = got.iter().map(|g| g.map(|v| v.0)).collect();
            assert_eq!(labels, vec![Some(0), Some(1), Some(3), None], "{kernel}");
            let cosine = 0.9f32 / (0.82f32).sqrt();
            assert!((got[0].unwrap().1 - cosine).abs() < 1e-6, "{kernel}: the cosine of the best");
        }
    }

    #[test]
    fn rows_do_not_depend_on_the_batch_they_come_in() {
        let (n, m, d) = (600, 300, 64);
        let data = Inputs::new(n, m, d, 21);
        let tm = data.tm();
        for kernel in kernels() {
            for p in [f64::INFINITY, 2.0, 3.0] {
                let target = Target::prepare(kernel, &tm, Power::from_p(p), true).unwrap();
                let all = normsim(&data.xm(), &target, true);
                for (s, e) in [(0, 1), (3, 40), (250, 600), (599, 600)] {
                    let part = normsim(&matrix(&data.x[s * d..e * d], d), &target, true);
                    assert_eq!(part, all[s..e].to_vec(), "{kernel} p={p} rows {s}..{e}");
                }
            }
        }
    }
}
