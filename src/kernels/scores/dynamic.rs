//! NormSim_2-D (docs/methods.md#normsim_2-d): iterative proxy-target selection when no downstream data
//! is known.
//!
//! Start from all usable rows (`n` of them). With `chunk = ceil((n - keep) / steps)`, in round
//! `r = 1..=steps`:
//!
//! 1. sample `ceil(sample_fraction * |S|)` of the survivors `S` (seeded, see below);
//! 2. `G = sum_{x in sample} x x^T` (`d x d`, no `1/m`);
//! 3. score every survivor by `x^T G x` (= NormSim_2 squared against the sample);
//! 4. drop the lowest-scoring survivors (ties: the later row goes first) until
//!    `max(keep, n - r * chunk)` remain.
//!
//! The output per row is the number of rounds it survived: `r - 1` if dropped in round `r`,
//! `steps` if kept, so `value >= s` is the subset after round `s` and exactly `keep` rows have
//! `value == steps`.
//!
//! Sampling: the survivors in row order are shuffled by a partial Fisher–Yates driven by
//! ChaCha8 with key `seed` and stream `r` (the same generator as negCLIPLoss's partitions) and
//! the first `ceil(sample_fraction * |S|)` taken. With `sample_fraction = 1` the sample is all
//! survivors and the result does not depend on the seed.
//!
//! Cost per round: `2 * sample * d^2` (Gram) + `2 * |S| * d^2` (scores), both tiled GEMMs.

use rayon::prelude::*;

use super::gram::{gram_bytes, gram_of, pack_quadratic, quadratic_rows};
use super::partition::sample;
use super::{Keep, KernelError};
use crate::kernels::engine::dispatch::with_kernel;
use crate::kernels::engine::isa::Kernel;
use crate::kernels::engine::micro::MicroKernel;
use crate::kernels::engine::pack::{Lhs, Packed};
use crate::kernels::engine::tile::TILE_ROWS;
use crate::kernels::matrix::Matrix;
use crate::kernels::runtime::{interrupt, memory};

/// Parameters of [`normsim2_dynamic`] (see [`DynamicParams::validate`]).
#[derive(Clone, Copy, Debug)]
#[cfg_attr(feature = "python", derive(serde::Deserialize))]
pub struct DynamicParams {
    /// Rows to keep: a count (at most the number of usable rows) or a fraction of them.
    pub keep: Keep,
    pub steps: usize,
    pub sample_fraction: f64,
    pub seed: u64,
    pub normalize: bool,
}

/// Most rounds accepted: the output (rounds survived, `UInt32`) must hold `steps`.
pub const MAX_STEPS: usize = u32::MAX as usize - 1;

impl DynamicParams {
    /// `Err` naming the argument: `1 <= steps <= MAX_STEPS`, `sample_fraction` in `(0, 1]`,
    /// `keep` valid.
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=MAX_STEPS).contains(&self.steps) {
            return Err(format!("`steps` must be in [1, {MAX_STEPS}], got {}", self.steps));
        }
        if !(self.sample_fraction > 0.0 && self.sample_fraction <= 1.0) {
            return Err(format!("`sample_fraction` must be in (0, 1], got {:?}", self.sample_fraction));
        }
        self.keep.validate()
    }
}

/// `x_i^T G x_i` for each of `rows` (tiles of `X H^T`, see [`super::gram`], then a row dot
/// product), computed with `kernel`.
pub fn quadratic_form<K: MicroKernel>(
    kernel: K,
    x: &Matrix,
    rows: &[usize],
    scales: &[Option<f64>],
    g: &[f32],
) -> Vec<f64> {
    let d = x.dim();
    let h = pack_quadratic(kernel, g, d);
    let mut out = vec![0f64; rows.len()];
    out.par_chunks_mut(TILE_ROWS).zip(rows.par_chunks(TILE_ROWS)).for_each(|(dst, rc)| {
        let mut xs = vec![0f32; rc.len() * d];
        x.gather_scaled(rc, |i| scales[i], &mut xs);
        quadratic_rows(&Packed::<K, Lhs>::new(kernel, &xs, rc.len(), d), &xs, &h, dst);
    });
    out
}

/// Rounds survived by every row (`None` for unusable rows), computed with `kernel`. An error
/// when a `keep` count exceeds the usable rows, or when the `d x d` matrices of a very wide
/// column do not fit in memory (checked before anything is allocated). `steps` must fit the
/// `u32` output (the caller checks); rounds after the last drop cost nothing.
pub fn normsim2_dynamic(
    kernel: Kernel,
    x: &Matrix,
    p: &DynamicParams,
) -> Result<Vec<Option<u32>>, KernelError> {
    with_kernel!(kernel, k => dynamic_in(k, x, p))
}

/// [`normsim2_dynamic`] monomorphised for one kernel.
fn dynamic_in<K: MicroKernel>(
    kernel: K,
    x: &Matrix,
    p: &DynamicParams,
) -> Result<Vec<Option<u32>>, KernelError> {
    let (d, n_all) = (x.dim(), x.rows());
    let sampled = ((p.sample_fraction * n_all as f64).ceil() as usize).min(n_all);
    let bytes = gram_bytes::<K>(d, sampled, rayon::current_num_threads());
    memory::check(bytes, || format!("NormSim_2-D's d x d matrices for {d}-wide embeddings"))?;
    let scales = x.scales(p.normalize);
    let mut alive: Vec<usize> = (0..n_all).filter(|&i| scales[i].is_some()).collect();
    let n = alive.len();
    let keep = p.keep.resolve(n)?;
    let steps = p.steps.max(1);
    let chunk = (n - keep).div_ceil(steps);
    let mut out: Vec<Option<u32>> = scales.iter().map(|s| s.map(|_| steps as u32)).collect();
    for r in 1..=steps {
        if alive.len() <= keep || interrupt::pending() {
            break;
        }
        let target = keep.max(n.saturating_sub(r.saturating_mul(chunk)));
        if alive.len() <= target {
            continue;
        }
        let m = ((p.sample_fraction * alive.len() as f64).ceil() as usize).clamp(1, alive.len());
        let picked: Vec<usize> = if m == alive.len() {
            alive.clone()
        } else {
            let mut s: Vec<usize> =
                sample(alive.len(), m, p.seed, r as u64).into_iter().map(|q| alive[q]).collect();
            s.sort_unstable();
            s
        };
        let g = gram_of(kernel, x, &picked, |i| scales[i]);
        let score = quadratic_form(kernel, x, &alive, &scales, &g);
        // Highest score first; among equal scores the earlier row first (so the later row is
        // dropped first). `total_cmp` orders NaN (impossible for usable rows) deterministically.
        let mut order: Vec<usize> = (0..alive.len()).collect();
        order.sort_by(|&a, &b| score[b].total_cmp(&score[a]).then(alive[a].cmp(&alive[b])));
        for &q in &order[target..] {
            out[alive[q]] = Some((r - 1) as u32);
        }
        let mut survivors: Vec<usize> = order[..target].iter().map(|&q| alive[q]).collect();
        survivors.sort_unstable();
        alive = survivors;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testutil::kernels;
    use crate::kernels::Values;

    fn data(n: usize, d: usize, seed: u64) -> Vec<f32> {
        crate::kernels::testutil::uniform(n * d, seed)
    }

    #[test]
    fn survivors_shrink_linearly_to_keep() {
        let (n, d) = (103, 8);
        let x = data(n, d, 1);
        let m = Matrix::new(Values::F32(&x), n, d, None).unwrap();
        for (keep, steps, frac) in [(10, 7, 1.0), (50, 500, 0.1), (103, 5, 0.5), (0, 3, 0.3), (1, 1, 1.0)] {
            let p = DynamicParams {
                keep: Keep::Count(keep),
                steps,
                sample_fraction: frac,
                seed: 4,
                normalize: true,
            };
            for kernel in kernels() {
                let out: Vec<u32> =
                    normsim2_dynamic(kernel, &m, &p).unwrap().into_iter().map(Option::unwrap).collect();
                let chunk = (n - keep).div_ceil(steps);
                for r in 1..=steps {
                    let survivors = out.iter().filter(|&&v| v as usize >= r).count();
                    assert_eq!(
                        survivors,
                        keep.max(n.saturating_sub(r * chunk)),
                        "{kernel} keep={keep} steps={steps} r={r}"
                    );
                }
                assert_eq!(out.iter().filter(|&&v| v as usize == steps).count(), keep);
            }
        }
    }

    #[test]
    fn deterministic_across_threads() {
        let (n, d) = (700, 12);
        let x = data(n, d, 2);
        let m = Matrix::new(Values::F32(&x), n, d, None).unwrap();
        let p = DynamicParams {
            keep: Keep::Fraction { num: 1, den: 7 },
            steps: 20,
            sample_fraction: 0.1,
            seed: 9,
            normalize: true,
        };
        for kernel in kernels() {
            let run = |t| {
                rayon::ThreadPoolBuilder::new()
                    .num_threads(t)
                    .build()
                    .unwrap()
                    .install(|| normsim2_dynamic(kernel, &m, &p))
            };
            let one = run(1).unwrap();
            assert_eq!(one.iter().filter(|v| **v == Some(20)).count(), 100);
            assert_eq!(one, run(3).unwrap(), "{kernel}");
            let too_many = DynamicParams { keep: Keep::Count(701), ..p };
            assert_eq!(
                normsim2_dynamic(kernel, &m, &too_many),
                Err(KernelError::Keep { keep: 701, rows: 700 })
            );
        }
    }

    #[test]
    fn absurd_width_is_refused_before_allocating() {
        let d = 100_000;
        let v = vec![1f32; 2 * d];
        let m = Matrix::new(Values::F32(&v), 2, d, None).unwrap();
        let p =
            DynamicParams { keep: Keep::Count(1), steps: 1, sample_fraction: 1.0, seed: 0, normalize: true };
        for kernel in kernels() {
            match normsim2_dynamic(kernel, &m, &p) {
                Err(KernelError::Memory(e)) => assert!(e.to_string().contains("100000-wide"), "{e}"),
                other => panic!("{kernel}: expected a memory error, got {other:?}"),
            }
        }
    }

    #[test]
    fn huge_steps_end_after_the_last_drop() {
        let (n, d) = (50, 4);
        let x = data(n, d, 3);
        let m = Matrix::new(Values::F32(&x), n, d, None).unwrap();
        let steps = u32::MAX as usize - 1;
        let p =
            DynamicParams { keep: Keep::Count(10), steps, sample_fraction: 1.0, seed: 0, normalize: true };
        let out = normsim2_dynamic(Kernel::best(), &m, &p).unwrap();
        assert_eq!(out.iter().filter(|v| **v == Some(steps as u32)).count(), 10);
        // One row dropped per round (chunk = 1): rounds 0..40 recorded.
        assert_eq!(out.iter().flatten().filter(|&&v| (v as usize) < steps).max(), Some(&39));
    }
}
