//! ClipCov (Joshi et al., AISTATS 2024; docs/methods.md#clipcov): per class `V_c`, greedily maximise
//!
//! ```text
//! F(S) = sum_{i in S} sum_{j in V_c} A_ij - (lambda / 2) sum_{i,j in S} A_ij + w sum_{i in S} s_ii
//! A_ij = s_ij + s_ji = <x_i, t_j> + <x_j, t_i>
//! ```
//!
//! With class sums `X_V = sum_{j in V_c} x_j`, `T_V = sum t_j` and selected sums `X_S`, `T_S`:
//! `sum_{j in V_c} A_ij = <x_i, T_V> + <t_i, X_V>` and `sum_{i,j in S} A_ij = 2 <X_S, T_S>`, so
//! the marginal gain of adding `e` is
//!
//! ```text
//! gain(e | S) = <x_e, T_V> + <t_e, X_V> + (w - lambda) s_ee - lambda (<x_e, T_S> + <t_e, X_S>)
//! ```
//!
//! It depends on `S` only through `X_S` and `T_S`: after picking rows with sums `dX`, `dT`, every
//! gain drops by `lambda (<x_e, dT> + <t_e, dX>)`, one matrix–vector product over the class.
//! Memory is `O(n_c d)` per class in flight, never `O(n^2)`.
//!
//! `pick_batch = 1` is exact greedy (largest gain, ties to the earlier row); larger values pick
//! that many top-gain rows per update.

use std::collections::BTreeMap;

use rayon::prelude::*;

use super::{Keep, KernelError};
use crate::kernels::engine::fastmath::{dot_inline, simd_fn};
use crate::kernels::matrix::Matrix;
use crate::kernels::runtime::interrupt;

/// Rows per parallel task of a gain update.
const GAIN_CHUNK: usize = 4096;

simd_fn! {
    /// `gain[k] = <x_e, tv> + <t_e, xv> + w_minus_lambda * <x_e, t_e>` for `e = e0 + k` (rows of
    /// `d` floats). Dot products in plain arithmetic: the same bits in every build.
    fn initial_gains(x: &[f32], t: &[f32], d: usize, e0: usize, xv: &[f32], tv: &[f32], w_minus_lambda: f64, gain: &mut [f64]) {
        for (k, g) in gain.iter_mut().enumerate() {
            let e = e0 + k;
            let (xe, te) = (&x[e * d..(e + 1) * d], &t[e * d..(e + 1) * d]);
            *g = f64::from(dot_inline(xe, tv))
                + f64::from(dot_inline(te, xv))
                + w_minus_lambda * f64::from(dot_inline(xe, te));
        }
    }
}

simd_fn! {
    /// `gain[k] -= lambda * (<x_e, dt> + <t_e, dx>)` for `e = e0 + k`.
    fn update_gains(x: &[f32], t: &[f32], d: usize, e0: usize, dx: &[f32], dt: &[f32], lambda: f64, gain: &mut [f64]) {
        for (k, g) in gain.iter_mut().enumerate() {
            let e = e0 + k;
            let (xe, te) = (&x[e * d..(e + 1) * d], &t[e * d..(e + 1) * d]);
            *g -= lambda * (f64::from(dot_inline(xe, dt)) + f64::from(dot_inline(te, dx)));
        }
    }
}

/// Parameters of [`clipcov`] (see [`ClipCovParams::validate`]).
#[derive(Clone, Copy, Debug)]
#[cfg_attr(feature = "python", derive(serde::Deserialize))]
pub struct ClipCovParams {
    /// Rows to pick in total (a count or a fraction of the usable rows), split over classes in
    /// proportion to their sizes.
    pub keep: Keep,
    pub lambda: f64,
    pub easiness_weight: f64,
    pub pick_batch: usize,
    pub normalize: bool,
}

impl ClipCovParams {
    /// `Err` naming the argument: `lambda` and `easiness_weight` finite and `>= 0`,
    /// `pick_batch >= 1`, `keep` valid.
    pub fn validate(&self) -> Result<(), String> {
        for (v, arg) in [(self.lambda, "lambda_"), (self.easiness_weight, "easiness_weight")] {
            if !(v.is_finite() && v >= 0.0) {
                return Err(format!("`{arg}` must be a finite number >= 0, got {v:?}"));
            }
        }
        if self.pick_batch == 0 {
            return Err("`pick_batch` must be >= 1, got 0".into());
        }
        self.keep.validate()
    }
}

/// Splits `keep` picks over classes of sizes `sizes` (total `n`) in proportion to their sizes:
/// `floor(keep * n_c / n)` each, and the leftover picks one each to the classes with the largest
/// remainders (ties: the earlier class).
pub fn quotas(sizes: &[usize], keep: usize) -> Vec<usize> {
    let n: usize = sizes.iter().sum();
    if n == 0 {
        return vec![0; sizes.len()];
    }
    let keep = keep.min(n) as u128;
    let n128 = n as u128;
    let mut q: Vec<usize> = sizes.iter().map(|&s| (keep * s as u128 / n128) as usize).collect();
    let mut left = keep as usize - q.iter().sum::<usize>();
    let mut by_rem: Vec<usize> = (0..sizes.len()).collect();
    by_rem.sort_by(|&a, &b| {
        let (ra, rb) = (keep * sizes[a] as u128 % n128, keep * sizes[b] as u128 % n128);
        rb.cmp(&ra).then(a.cmp(&b))
    });
    for c in by_rem {
        if left == 0 {
            break;
        }
        if q[c] < sizes[c] {
            q[c] += 1;
            left -= 1;
        }
    }
    q
}

/// Greedy pick order within one class (`x`, `t`: the class's normalised rows, `n_c x d`).
pub fn greedy_class(x: &[f32], t: &[f32], d: usize, quota: usize, p: &ClipCovParams) -> Vec<Option<u32>> {
    let nc = x.len().checked_div(d).unwrap_or(0);
    let sum = |m: &[f32]| -> Vec<f32> {
        let mut s = vec![0f64; d];
        for r in m.chunks_exact(d) {
            for (a, &b) in s.iter_mut().zip(r) {
                *a += f64::from(b);
            }
        }
        s.into_iter().map(|v| v as f32).collect()
    };
    let (xv, tv) = (sum(x), sum(t));
    let mut gain = vec![0f64; nc];
    let w_minus_lambda = p.easiness_weight - p.lambda;
    gain.par_chunks_mut(GAIN_CHUNK).enumerate().for_each(|(c, g)| {
        initial_gains(x, t, d, c * GAIN_CHUNK, &xv, &tv, w_minus_lambda, g);
    });
    let mut order: Vec<Option<u32>> = vec![None; nc];
    let mut picked = 0usize;
    let mut candidates: Vec<usize> = (0..nc).collect();
    while picked < quota.min(nc) {
        if interrupt::pending() {
            break;
        }
        let b = p.pick_batch.max(1).min(quota - picked);
        // Largest gain first, ties to the earlier row.
        let better = |a: &usize, c: &usize| gain[*c].total_cmp(&gain[*a]).then(a.cmp(c));
        let chosen: Vec<usize> = if b == 1 {
            let best = candidates.iter().copied().min_by(better).into_iter().collect();
            best
        } else {
            if b < candidates.len() {
                candidates.select_nth_unstable_by(b - 1, better);
            }
            let mut c = candidates[..b].to_vec();
            c.sort_by(better);
            c
        };
        for &e in &chosen {
            order[e] = Some(picked as u32);
            picked += 1;
        }
        candidates.retain(|&e| order[e].is_none());
        if candidates.is_empty() || picked >= quota {
            break;
        }
        let (dx, dt) = {
            let mut dx = vec![0f32; d];
            let mut dt = vec![0f32; d];
            for &e in &chosen {
                for k in 0..d {
                    dx[k] += x[e * d + k];
                    dt[k] += t[e * d + k];
                }
            }
            (dx, dt)
        };
        gain.par_chunks_mut(GAIN_CHUNK).enumerate().for_each(|(c, g)| {
            update_gains(x, t, d, c * GAIN_CHUNK, &dx, &dt, p.lambda, g);
        });
    }
    order
}

/// Pick order of every row within its class (`None`: not picked, or unusable, or no class).
/// `classes[i]` is a class code (any `u32`); classes are visited in code order. An error when a
/// `keep` count exceeds the usable rows.
pub fn clipcov(
    image: &Matrix,
    text: &Matrix,
    classes: &[Option<u32>],
    p: &ClipCovParams,
) -> Result<Vec<Option<u32>>, KernelError> {
    let n = image.rows();
    let d = image.dim();
    let sx = image.scales(p.normalize);
    let st = text.scales(p.normalize);
    let mut groups: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
    for i in 0..n {
        if let (Some(c), Some(_), Some(_)) = (classes[i], sx[i], st[i]) {
            groups.entry(c).or_default().push(i);
        }
    }
    let groups: Vec<Vec<usize>> = groups.into_values().collect();
    let sizes: Vec<usize> = groups.iter().map(Vec::len).collect();
    let q = quotas(&sizes, p.keep.resolve(sizes.iter().sum())?);
    let per_class: Vec<Vec<Option<u32>>> = groups
        .par_iter()
        .zip(q.par_iter())
        .map(|(rows, &quota)| {
            if quota == 0 {
                return vec![None; rows.len()];
            }
            let mut x = vec![0f32; rows.len() * d];
            let mut t = vec![0f32; rows.len() * d];
            image.gather_scaled(rows, |i| sx[i], &mut x);
            text.gather_scaled(rows, |i| st[i], &mut t);
            greedy_class(&x, &t, d, quota, p)
        })
        .collect();
    let mut out = vec![None; n];
    for (rows, orders) in groups.iter().zip(per_class) {
        for (&i, o) in rows.iter().zip(orders) {
            out[i] = o;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotas_are_proportional_with_largest_remainders() {
        assert_eq!(quotas(&[5, 3, 2], 5), vec![3, 1, 1]); // 2.5, 1.5, 1.0 -> remainders .5, .5
        assert_eq!(quotas(&[10, 10, 10], 10), vec![4, 3, 3]);
        assert_eq!(quotas(&[1, 1], 5), vec![1, 1]);
        assert_eq!(quotas(&[], 3), Vec::<usize>::new());
        assert_eq!(quotas(&[7, 0, 3], 4), vec![3, 0, 1]);
        let q = quotas(&[13, 29, 58], 37);
        assert_eq!(q.iter().sum::<usize>(), 37);
    }

    /// Brute force: F evaluated from its definition for every candidate at every step.
    fn brute(x: &[f32], t: &[f32], d: usize, k: usize, lambda: f64, w: f64) -> Vec<Option<u32>> {
        let n = x.len() / d;
        let s = |i: usize, j: usize| {
            (0..d).map(|q| f64::from(x[i * d + q]) * f64::from(t[j * d + q])).sum::<f64>()
        };
        let a = |i: usize, j: usize| s(i, j) + s(j, i);
        let f = |set: &[usize]| {
            let cover: f64 = set.iter().map(|&i| (0..n).map(|j| a(i, j)).sum::<f64>()).sum();
            let red: f64 = set.iter().map(|&i| set.iter().map(|&j| a(i, j)).sum::<f64>()).sum();
            let easy: f64 = set.iter().map(|&i| s(i, i)).sum();
            cover - lambda / 2.0 * red + w * easy
        };
        let mut set = Vec::new();
        let mut out = vec![None; n];
        for step in 0..k {
            let base = f(&set);
            let mut best: Option<(usize, f64)> = None;
            for e in (0..n).filter(|e| !set.contains(e)) {
                let mut with = set.clone();
                with.push(e);
                let g = f(&with) - base;
                if best.is_none_or(|(_, bg)| g > bg) {
                    best = Some((e, g));
                }
            }
            let (e, _) = best.unwrap();
            set.push(e);
            out[e] = Some(step as u32);
        }
        out
    }

    #[test]
    fn exact_greedy_matches_brute_force() {
        let (n, d) = (24, 5);
        let mut x = crate::kernels::testutil::uniform(n * d, 3);
        let mut t = crate::kernels::testutil::uniform(n * d, 4);
        for m in [&mut x, &mut t] {
            for row in m.chunks_mut(d) {
                let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt();
                row.iter_mut().for_each(|v| *v /= norm);
            }
        }
        for (lambda, w, k) in [(1.0, 2.0, 10), (0.3, 0.0, 24), (2.0, 1.0, 5)] {
            let p = ClipCovParams {
                keep: Keep::Count(k),
                lambda,
                easiness_weight: w,
                pick_batch: 1,
                normalize: true,
            };
            assert_eq!(
                greedy_class(&x, &t, d, k, &p),
                brute(&x, &t, d, k, lambda, w),
                "lambda={lambda} w={w}"
            );
        }
    }
}
