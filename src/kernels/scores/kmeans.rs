//! Spherical k-means (cosine) on rows in memory (docs/methods.md#clusters-and-near-duplicates):
//! centroids are unit vectors, a row belongs to `argmax_j <x, c_j>` (ties: the lower index), and
//! a centroid is the normalised mean of its rows.
//!
//! The contract (deterministic for a seed, whatever the threads):
//!
//! * **init**: the first `k` rows drawn by [`super::partition::sample`] on stream
//!   [`INIT_STREAM`] of `seed` (a seeded Fisher-Yates, like faiss's random init), normalised;
//! * **iteration**: assign every row on the fused argmax kernel ([`super::normsim::nearest`]:
//!   no `n x k` matrix), record the objective `sum_i max_j <x_i, c_j>` (faiss's, for spherical
//!   k-means) and the rows whose cluster changed, then set each centroid to the normalised sum
//!   of its rows, summed in `f64` in row order;
//! * **empty clusters** (no rows, or rows that sum to zero, which leave no direction): each, in
//!   index order, takes the row that fits its own centroid worst (lowest cosine; ties: the lower
//!   row) among the rows not yet taken this iteration.
//!
//! Memory: the rows (as stored), the centroids packed once per iteration, a label and a cosine
//! per row, and the `k x d` sums.

use rayon::prelude::*;

use super::normsim::{nearest, Power, Target};
use super::partition::sample;
use crate::kernels::engine::isa::Kernel;
use crate::kernels::matrix::{Matrix, Values};

/// Parameters of [`fit`] (see [`KMeansParams::validate`]).
#[derive(Clone, Copy, Debug)]
pub struct KMeansParams {
    pub k: usize,
    pub iters: usize,
    pub seed: u64,
}

/// The random stream of the initial centroids.
pub const INIT_STREAM: u64 = 0x6b6d_6561_6e73; // "kmeans"

impl KMeansParams {
    /// `Err` naming the argument: `k >= 1` (at most `u32::MAX`). `iters = 0` gives the seeded
    /// initial centroids.
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=u32::MAX as usize).contains(&self.k) {
            return Err(format!("`k` must be in [1, {}], got {}", u32::MAX, self.k));
        }
        Ok(())
    }
}

/// One iteration as the caller sees it: its objective (before the update) and the rows whose
/// cluster changed (every usable row in the first iteration).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Step {
    pub objective: f64,
    pub moved: u64,
    pub empty: u64,
}

/// Why k-means cannot run on these rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TooFewRows {
    pub k: usize,
    pub rows: usize,
}

impl std::fmt::Display for TooFewRows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "k-means with k = {} needs at least {} usable rows, got {}", self.k, self.k, self.rows)
    }
}

impl std::error::Error for TooFewRows {}

/// The fitted centroids (`k x d`, row-major, unit) after `iters` iterations, calling `on_step`
/// after each. Rows that are null, NaN or zero take no part.
pub fn fit(
    kernel: Kernel,
    x: &Matrix,
    p: &KMeansParams,
    mut on_step: impl FnMut(usize, Step) -> bool,
) -> Result<Vec<f32>, TooFewRows> {
    let (n, d) = (x.rows(), x.dim());
    let mut scratch = vec![0f32; d];
    let scales: Vec<Option<f64>> = (0..n).map(|r| x.row_scale(r, true, &mut scratch)).collect();
    let usable: Vec<usize> = (0..n).filter(|&r| scales[r].is_some()).collect();
    if usable.len() < p.k {
        return Err(TooFewRows { k: p.k, rows: usable.len() });
    }
    let init: Vec<usize> =
        sample(usable.len(), p.k, p.seed, INIT_STREAM).into_iter().map(|i| usable[i]).collect();
    let mut centroids = vec![0f32; p.k * d];
    x.gather_scaled(&init, |i| scales[i], &mut centroids);
    let mut labels: Vec<Option<u32>> = vec![None; n];
    for it in 0..p.iters {
        let found = assign(kernel, x, &centroids, p.k);
        let moved = found.iter().zip(&labels).filter(|(f, l)| f.map(|v| v.0) != **l).count() as u64;
        let objective = found
            .par_chunks(1 << 14)
            .map(|c| c.iter().flatten().map(|v| f64::from(v.1)).sum::<f64>())
            .collect::<Vec<_>>()
            .iter()
            .sum();
        labels = found.iter().map(|f| f.map(|v| v.0)).collect();
        let empty = update(x, &scales, &found, &mut centroids, p.k);
        if !on_step(it, Step { objective, moved, empty }) {
            break;
        }
    }
    Ok(centroids)
}

/// Each row's nearest centroid and its cosine (`None` for unusable rows).
pub fn assign(kernel: Kernel, x: &Matrix, centroids: &[f32], k: usize) -> Vec<Option<(u32, f32)>> {
    let c = Matrix::new(Values::F32(centroids), k, x.dim(), None).expect("centroids are k x d");
    let target = Target::prepare(kernel, &c, Power::Inf, true).expect("centroids are finite unit rows");
    nearest(x, &target, true)
}

/// The new centroids (normalised sums of their rows, in row order, `f64`), with empty clusters
/// re-seeded (see the module docs); the number of empty clusters.
fn update(
    x: &Matrix,
    scales: &[Option<f64>],
    found: &[Option<(u32, f32)>],
    centroids: &mut [f32],
    k: usize,
) -> u64 {
    let d = x.dim();
    let mut members: Vec<Vec<usize>> = vec![Vec::new(); k];
    for (r, f) in found.iter().enumerate() {
        if let Some((c, _)) = f {
            members[*c as usize].push(r);
        }
    }
    centroids.par_chunks_mut(d).zip(&members).for_each(|(c, rows)| {
        if rows.is_empty() {
            return;
        }
        let mut sum = vec![0f64; d];
        let mut row = vec![0f32; d];
        for &r in rows {
            x.gather_scaled(&[r], |i| scales[i], &mut row);
            for (s, &v) in sum.iter_mut().zip(&row) {
                *s += f64::from(v);
            }
        }
        let norm = sum.iter().map(|v| v * v).sum::<f64>().sqrt();
        for (o, s) in c.iter_mut().zip(&sum) {
            *o = if norm > 0.0 { (s / norm) as f32 } else { 0.0 };
        }
    });
    let empty: Vec<usize> = (0..k)
        .filter(|&c| members[c].is_empty() || centroids[c * d..(c + 1) * d].iter().all(|&v| v == 0.0))
        .collect();
    reseed(x, scales, found, &empty, centroids)
}

/// Empty clusters take the worst-fitting rows (lowest cosine, ties: the lower row), in order.
fn reseed(
    x: &Matrix,
    scales: &[Option<f64>],
    found: &[Option<(u32, f32)>],
    empty: &[usize],
    centroids: &mut [f32],
) -> u64 {
    let d = x.dim();
    if empty.is_empty() {
        return 0;
    }
    let mut worst: Vec<(f32, usize)> =
        found.iter().enumerate().filter_map(|(r, f)| f.map(|v| (v.1, r))).collect();
    worst.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
    for (&c, &(_, r)) in empty.iter().zip(&worst) {
        x.gather_scaled(&[r], |i| scales[i], &mut centroids[c * d..(c + 1) * d]);
    }
    empty.len() as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::testutil::kernels;

    fn clusters(n: usize, d: usize, k: usize) -> Vec<f32> {
        (0..n * d)
            .map(|i| {
                let (r, j) = (i / d, i % d);
                let centre = if j == r % k { 3.0 } else { 0.0 };
                centre + ((i * 7919 + 13) % 101) as f32 / 101.0 - 0.5
            })
            .collect()
    }

    #[test]
    fn finds_planted_clusters_deterministically() {
        let (n, d, k) = (600, 8, 4);
        let x = clusters(n, d, k);
        let m = Matrix::new(Values::F32(&x), n, d, None).unwrap();
        for kernel in kernels() {
            let mut steps = Vec::new();
            let p = KMeansParams { k, iters: 8, seed: 3 };
            let c = fit(kernel, &m, &p, |_, s| {
                steps.push(s);
                true
            })
            .unwrap();
            assert_eq!(c, fit(kernel, &m, &p, |_, _| true).unwrap(), "{kernel}: seeded");
            assert!(steps.windows(2).all(|w| w[1].objective >= w[0].objective - 1e-6), "{steps:?}");
            assert_eq!(steps.last().unwrap().moved, 0);
            let labels = assign(kernel, &m, &c, k);
            for r in 0..n {
                assert_eq!(
                    labels[r].unwrap().0,
                    labels[r % k].unwrap().0,
                    "row {r} with its planted cluster"
                );
            }
        }
    }

    #[test]
    fn too_few_rows_and_empty_clusters() {
        let x = [1.0f32, 0.0, 0.0, 1.0, 0.0, 0.0];
        let m = Matrix::new(Values::F32(&x), 3, 2, None).unwrap();
        let err = fit(kernels()[0], &m, &KMeansParams { k: 3, iters: 1, seed: 0 }, |_, _| true);
        assert_eq!(err, Err(TooFewRows { k: 3, rows: 2 }));
        // Two identical rows, k = 2: one cluster empties and takes the worst-fitting row.
        let x = [1.0f32, 0.0, 1.0, 0.0, 0.0, 1.0];
        let m = Matrix::new(Values::F32(&x), 3, 2, None).unwrap();
        let c = fit(kernels()[0], &m, &KMeansParams { k: 2, iters: 3, seed: 0 }, |_, _| true).unwrap();
        let mut got: Vec<(i32, i32)> =
            c.chunks(2).map(|v| (v[0].round() as i32, v[1].round() as i32)).collect();
        got.sort();
        assert_eq!(got, vec![(0, 1), (1, 0)]);
        // Rows that cancel out leave their cluster no direction: re-seeded, never a zero centroid.
        let x = [1.0f32, 0.0, -1.0, 0.0];
        let m = Matrix::new(Values::F32(&x), 2, 2, None).unwrap();
        let mut steps = Vec::new();
        let c = fit(kernels()[0], &m, &KMeansParams { k: 1, iters: 3, seed: 0 }, |_, s| {
            steps.push(s.empty);
            true
        })
        .unwrap();
        assert_eq!((c[0].abs(), c[1]), (1.0, 0.0));
        assert_eq!(steps, vec![1, 1, 1]);
    }
}
