//! Seeded, portable random partitions of rows into batches (the `B_k(i)` of negCLIPLoss).
//!
//! This is a contract: the same `(n, batch_size, seed, k)` gives the same batches on every
//! platform, thread count and release of polars-curate. The algorithm:
//!
//! 1. Random stream: ChaCha8 (`rand_chacha`) with key = `seed` as 8 little-endian bytes followed
//!    by 24 zero bytes, stream number `k` (so the `K` partitions are independent streams).
//! 2. Permutation: start from `0, 1, ..., n-1`; for `i` from `n-1` down to `1` swap positions
//!    `i` and `j`, with `j` uniform in `0..=i` drawn by Lemire's multiply-and-reject method on
//!    64-bit words (`next_u64`), which is exactly uniform.
//! 3. Batches: `nb = ceil(n / batch_size)` consecutive runs of the permutation; the first
//!    `n % nb` runs hold `n / nb + 1` rows and the rest `n / nb`, so sizes differ by at most one
//!    and none exceeds `batch_size`.

use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};

/// The random stream of partition `k` under `seed`.
fn stream(seed: u64, k: u64) -> ChaCha8Rng {
    let mut key = [0u8; 32];
    key[..8].copy_from_slice(&seed.to_le_bytes());
    let mut rng = ChaCha8Rng::from_seed(key);
    rng.set_stream(k);
    rng
}

/// Uniform integer in `0..range` (`range >= 1`), Lemire's method.
fn bounded(rng: &mut ChaCha8Rng, range: u64) -> u64 {
    let mut m = u128::from(rng.next_u64()) * u128::from(range);
    if (m as u64) < range {
        let threshold = range.wrapping_neg() % range;
        while (m as u64) < threshold {
            m = u128::from(rng.next_u64()) * u128::from(range);
        }
    }
    (m >> 64) as u64
}

/// The permutation of `0..n` for partition `k` (step 2 above).
pub fn permutation(n: usize, seed: u64, k: u64) -> Vec<usize> {
    let mut rng = stream(seed, k);
    let mut p: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        let j = bounded(&mut rng, i as u64 + 1) as usize;
        p.swap(i, j);
    }
    p
}

/// `m` distinct indices of `0..n` drawn by the first `m` steps of a Fisher–Yates shuffle from
/// the bottom (`for i in 0..m: swap(i, i + bounded(n - i))`) on stream `k` of `seed`; in draw
/// order. Used by NormSim_2-D's per-round samples.
pub fn sample(n: usize, m: usize, seed: u64, k: u64) -> Vec<usize> {
    let mut rng = stream(seed, k);
    let mut p: Vec<usize> = (0..n).collect();
    let m = m.min(n);
    for i in 0..m {
        let j = i + bounded(&mut rng, (n - i) as u64) as usize;
        p.swap(i, j);
    }
    p.truncate(m);
    p
}

/// The `[start, end)` ranges of the batches over `n` permuted rows (step 3 above).
pub fn batch_bounds(n: usize, batch_size: usize) -> Vec<(usize, usize)> {
    if n == 0 || batch_size == 0 {
        return Vec::new();
    }
    let nb = n.div_ceil(batch_size);
    let (base, extra) = (n / nb, n % nb);
    let mut out = Vec::with_capacity(nb);
    let mut start = 0;
    for b in 0..nb {
        let len = base + usize::from(b < extra);
        out.push((start, start + len));
        start += len;
    }
    out
}

/// Batch number of every row in partition `k` (what the Python tests and users inspect).
pub fn batch_of_rows(n: usize, batch_size: usize, seed: u64, k: u64) -> Vec<u32> {
    let perm = permutation(n, seed, k);
    let mut out = vec![0u32; n];
    for (b, (s, e)) in batch_bounds(n, batch_size).into_iter().enumerate() {
        for &row in &perm[s..e] {
            out[row] = b as u32;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn permutation_is_a_permutation_and_seeded() {
        for n in [0, 1, 2, 10, 1000] {
            let mut p = permutation(n, 7, 0);
            assert_eq!(p, permutation(n, 7, 0));
            p.sort_unstable();
            assert_eq!(p, (0..n).collect::<Vec<_>>());
        }
        assert_ne!(permutation(100, 7, 0), permutation(100, 7, 1));
        assert_ne!(permutation(100, 7, 0), permutation(100, 8, 0));
    }

    #[test]
    fn permutation_is_pinned() {
        // The contract: these values must never change between releases.
        assert_eq!(permutation(10, 0, 0), PINNED_0_0);
        assert_eq!(permutation(10, 42, 3), PINNED_42_3);
    }

    const PINNED_0_0: [usize; 10] = [9, 2, 3, 4, 6, 7, 0, 1, 5, 8];
    const PINNED_42_3: [usize; 10] = [1, 5, 9, 3, 2, 0, 7, 8, 6, 4];

    #[test]
    fn permutation_is_roughly_uniform() {
        // Position of element 0 over many seeds: each of 4 slots about 1/4 of the time.
        let mut counts = [0usize; 4];
        for seed in 0..4000 {
            let p = permutation(4, seed, 0);
            counts[p.iter().position(|&x| x == 0).unwrap()] += 1;
        }
        for c in counts {
            assert!((850..1150).contains(&c), "{counts:?}");
        }
    }

    #[test]
    fn batches_are_nearly_equal() {
        for n in [1usize, 5, 32, 33, 100, 32768, 32769, 100_000] {
            for b in [1usize, 3, 32, 4096, 32768] {
                let bounds = batch_bounds(n, b);
                assert_eq!(bounds.len(), n.div_ceil(b));
                assert_eq!(bounds.first().unwrap().0, 0);
                assert_eq!(bounds.last().unwrap().1, n);
                let sizes: Vec<usize> = bounds.iter().map(|(s, e)| e - s).collect();
                let (lo, hi) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
                assert!(hi - lo <= 1 && *hi <= b, "n={n} b={b} {sizes:?}");
                assert!(bounds.windows(2).all(|w| w[0].1 == w[1].0));
            }
        }
        assert!(batch_bounds(0, 10).is_empty());
    }

    #[test]
    fn sample_is_distinct_and_seeded() {
        let s = sample(100, 30, 5, 2);
        let mut u = s.clone();
        u.sort_unstable();
        u.dedup();
        assert_eq!(u.len(), 30);
        assert!(u.iter().all(|&v| v < 100));
        assert_eq!(s, sample(100, 30, 5, 2));
        assert_ne!(s, sample(100, 30, 5, 3));
        assert_eq!(sample(5, 9, 0, 0).len(), 5);
    }

    #[test]
    fn batch_of_rows_counts() {
        let ids = batch_of_rows(10, 4, 1, 0);
        let mut counts = [0; 3];
        for b in ids {
            counts[b as usize] += 1;
        }
        assert_eq!(counts, [4, 3, 3]);
    }
}
