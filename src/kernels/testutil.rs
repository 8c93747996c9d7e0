//! Seeded test data for the kernels' unit tests.

/// `n` values uniform in `[-0.5, 0.5)` from a 64-bit LCG seeded with `seed` (portable, fast,
/// good enough for test inputs).
pub fn uniform(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) - 0.5
        })
        .collect()
}
