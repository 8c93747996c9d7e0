//! Soft Cap and Hard Cap Sampling (FLYT, NeurIPS 2025): draws with repetition, as exponential
//! races, in one pass over the rows per batch and one random number per draw.
//!
//! **Soft Cap (SCS).** Logits `z_i = s_i / T`. Until `total` rows are drawn: draw
//! `b = min(batch, total - drawn)` distinct rows, successive draws without replacement with
//! probabilities `softmax(z)`, then `z_i -= alpha` for each drawn row. The output is each row's
//! count (the times it was drawn); they sum to `total`.
//!
//! **Hard Cap (HCS).** `p = softmax(s / T)`, fixed; `total` draws with replacement, a row at most
//! `limit` times: each draw is from the rows still below the cap, proportionally to `p` (the
//! reference's batches, which drop draws of rows capped within the batch, give this same
//! distribution, so HCS has no batch size).
//!
//! **As races.** Give row `i` the weight `w_i = exp(z_i - max z)` and a time `t_i = E_i / w_i`
//! with `E_i ~ Exp(1)`: the `b` rows with the smallest times are distributed as `b` successive
//! draws without replacement proportional to `w` (the Gumbel top-k: `ln t_i = -(z_i + G_i)`
//! up to a constant). After a batch whose last time is `θ`, a row not drawn has `t_i > θ`, and
//! `t_i - θ ~ Exp(w_i)` independently of everything else (the exponential forgets): its time is
//! still a valid draw for the next batch. So only the drawn rows get new times,
//! `θ + E / w'_i` with their penalised weight, and a batch costs one pass to find its `b`
//! smallest times. HCS is the same race without batches: each row is a Poisson process of rate
//! `w_i` whose events are its draws; a drawn row's next event is at `t + E / w_i`, possibly
//! before `θ` (drawn again in the same pass), and it has none after its `limit`-th.
//!
//! **Randomness** (a contract, like [`super::partition`]): the exponential of row `i`'s `c`-th
//! time is `-ln(u)` with `u = (h >> 11 + 1) / 2^53` and `h` = [`draw_bits`]`(seed, i, c)`, a
//! counter-based 64-bit hash: the result depends on the scores, the parameters and the seed,
//! never on threads or on how rows are split. Ties in time go to the lower row.
//!
//! Rows whose score is NaN (missing) or infinite are never drawn; a row whose weight
//! underflows (`z_i - max z < -745`) has probability zero, as in the reference's `float64`
//! softmax. Memory: the scores (`f32`), a time (`f64`) and a count (`u32`) per row.

use rayon::prelude::*;

use crate::kernels::runtime::{interrupt, memory};

/// Parameters of [`soft_cap`] (see [`SoftCapParams::validate`]).
#[derive(Clone, Copy, Debug)]
#[cfg_attr(feature = "python", derive(serde::Deserialize))]
pub struct SoftCapParams {
    pub total: u64,
    pub batch: u64,
    pub alpha: f64,
    pub temperature: f64,
    pub seed: u64,
}

/// Parameters of [`hard_cap`] (see [`HardCapParams::validate`]).
#[derive(Clone, Copy, Debug)]
#[cfg_attr(feature = "python", derive(serde::Deserialize))]
pub struct HardCapParams {
    pub total: u64,
    pub limit: u32,
    pub temperature: f64,
    pub seed: u64,
}

/// The accepted range of `temperature` (logits `score / temperature` stay finite).
pub const TEMPERATURE_RANGE: (f64, f64) = (1e-6, 1e6);
/// The most draws a row's count (`UInt32`) holds, and so the largest `total`.
pub const MAX_TOTAL: u64 = u32::MAX as u64;

fn check_temperature(t: f64) -> Result<(), String> {
    let (lo, hi) = TEMPERATURE_RANGE;
    if !(lo..=hi).contains(&t) {
        return Err(format!("`temperature` must be in [{lo:e}, {hi:e}], got {t:?}"));
    }
    Ok(())
}

fn check_total(total: u64) -> Result<(), String> {
    if !(1..=MAX_TOTAL).contains(&total) {
        return Err(format!("`total` must be in [1, {MAX_TOTAL}], got {total}"));
    }
    Ok(())
}

impl SoftCapParams {
    /// `Err` naming the argument: `total` and `batch` at least 1, `alpha` finite and not
    /// negative, `temperature` in [`TEMPERATURE_RANGE`].
    pub fn validate(&self) -> Result<(), String> {
        check_total(self.total)?;
        if self.batch == 0 {
            return Err("`batch` must be >= 1, got 0".into());
        }
        if !(self.alpha.is_finite() && self.alpha >= 0.0) {
            return Err(format!("`alpha` must be a finite number >= 0, got {:?}", self.alpha));
        }
        check_temperature(self.temperature)
    }
}

impl HardCapParams {
    /// `Err` naming the argument: `total` and `limit` at least 1, `temperature` in range.
    pub fn validate(&self) -> Result<(), String> {
        check_total(self.total)?;
        if self.limit == 0 {
            return Err("`limit` must be >= 1, got 0".into());
        }
        check_temperature(self.temperature)
    }
}

/// Why a sampler cannot draw what is asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SamplingError {
    /// Fewer rows with a probability than one batch (SCS) or than `total / limit` (HCS).
    TooFew {
        needed: u64,
        rows: usize,
        what: &'static str,
    },
    Memory(memory::AllocError),
}

impl std::fmt::Display for SamplingError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SamplingError::TooFew { needed, rows, what } => write!(
                f,
                "{what} needs {needed} rows with a probability, but only {rows} rows have a finite score"
            ),
            SamplingError::Memory(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for SamplingError {}

/// The hash behind row `row`'s `count`-th exponential (see the module docs): SplitMix64's
/// finaliser over `seed`, `row` and `count` mixed in turn.
pub fn draw_bits(seed: u64, row: u64, count: u64) -> u64 {
    fn mix(mut z: u64) -> u64 {
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    let a = mix(seed.wrapping_add(0x9e37_79b9_7f4a_7c15));
    let b = mix(a ^ row.wrapping_mul(0xd1b5_4a32_d192_ed03));
    mix(b ^ count.wrapping_mul(0x8cb9_2ba7_2f3d_8dd7).wrapping_add(0x9e37_79b9_7f4a_7c15))
}

/// `Exp(1)` from [`draw_bits`]: `-ln(u)`, `u` in `(0, 1]`.
fn exponential(seed: u64, row: usize, count: u32) -> f64 {
    let u = ((draw_bits(seed, row as u64, u64::from(count)) >> 11) + 1) as f64 / (1u64 << 53) as f64;
    -u.ln()
}

/// The race's state: each row's next time and draws so far, over the scores it reads. A
/// row's log-weight `s_i / T - max - alpha * c_i` is computed when needed (16 bytes a row in
/// all: the scores, a time, a count).
struct Race<'a> {
    scores: &'a [f32],
    temperature: f64,
    zmax: f64,
    alpha: f64,
    times: Vec<f64>,
    counts: Vec<u32>,
    seed: u64,
}

/// Rows per chunk of a parallel pass (chunks are merged in order).
const CHUNK: usize = 1 << 16;

impl<'a> Race<'a> {
    fn new(scores: &'a [f32], temperature: f64, alpha: f64, seed: u64) -> Result<Self, SamplingError> {
        let n = scores.len();
        memory::check(n as u128 * 12, || format!("sampling {n} rows")).map_err(SamplingError::Memory)?;
        let zmax = scores
            .par_iter()
            .filter(|v| v.is_finite())
            .map(|&v| f64::from(v) / temperature)
            .reduce(|| f64::NEG_INFINITY, f64::max);
        let mut race = Race { scores, temperature, zmax, alpha, times: Vec::new(), counts: vec![0; n], seed };
        race.times = (0..n).into_par_iter().map(|i| exponential(seed, i, 0) / race.weight(i)).collect();
        Ok(race)
    }

    /// Row `i`'s weight now (`0` for a row without a finite score).
    fn weight(&self, i: usize) -> f64 {
        let s = self.scores[i];
        if !s.is_finite() {
            return 0.0;
        }
        (f64::from(s) / self.temperature - self.zmax - self.alpha * f64::from(self.counts[i])).exp()
    }

    /// Rows that can be drawn (a positive weight).
    fn eligible(&self) -> usize {
        self.times.par_iter().filter(|t| t.is_finite()).count()
    }

    /// The sum of the weights of the rows that can still be drawn (to size a search window).
    fn rate(&self) -> f64 {
        (0..self.times.len())
            .into_par_iter()
            .filter(|&i| self.times[i].is_finite())
            .map(|i| self.weight(i))
            .sum()
    }

    /// The `k` rows with the smallest times (all after `from`), in `(time, row)` order, and the
    /// `k`-th time; fewer when fewer rows have a finite time.
    fn smallest(&self, k: usize, from: f64, rate: f64) -> (Vec<(f64, u32)>, f64) {
        let mut width = 1.5 * k as f64 / rate.max(f64::MIN_POSITIVE);
        loop {
            let upto = from + width;
            let mut got: Vec<(f64, u32)> = self
                .times
                .par_chunks(CHUNK)
                .enumerate()
                .map(|(c, ts)| {
                    let base = (c * CHUNK) as u32;
                    let near = ts.iter().enumerate().filter(|(_, t)| **t <= upto);
                    near.map(|(i, t)| (*t, base + i as u32)).collect::<Vec<_>>()
                })
                .flatten()
                .collect();
            if got.len() >= k || !upto.is_finite() {
                let by = |a: &(f64, u32), b: &(f64, u32)| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1));
                if got.len() > k {
                    got.select_nth_unstable_by(k - 1, by);
                    got.truncate(k);
                }
                got.sort_unstable_by(by);
                let theta = got.last().map_or(from, |e| e.0);
                return (got, theta);
            }
            width *= 4.0;
        }
    }
}

/// Soft Cap Sampling: each row's count of draws (see the module docs); a NaN score is a row
/// without a score. Stops early (with the counts so far) on Ctrl-C; the caller reports it.
pub fn soft_cap(scores: &[f32], p: &SoftCapParams) -> Result<Vec<u32>, SamplingError> {
    let mut race = Race::new(scores, p.temperature, p.alpha, p.seed)?;
    let rows = race.eligible();
    let first = p.batch.min(p.total);
    if (rows as u64) < first {
        return Err(SamplingError::TooFew { needed: first, rows, what: "a Soft Cap batch" });
    }
    let (mut drawn, mut theta, mut rate) = (0u64, 0f64, race.rate());
    while drawn < p.total && !interrupt::pending() {
        let b = p.batch.min(p.total - drawn) as usize;
        let (batch, t) = race.smallest(b, theta, rate);
        if batch.len() < b {
            // Penalties took weights below what a float64 holds (probability zero).
            let rows = batch.len();
            return Err(SamplingError::TooFew { needed: b as u64, rows, what: "a Soft Cap batch" });
        }
        theta = t;
        for &(_, i) in &batch {
            let i = i as usize;
            let before = race.weight(i);
            race.counts[i] += 1;
            let w = race.weight(i);
            rate += w - before;
            race.times[i] = theta + exponential(race.seed, i, race.counts[i]) / w;
        }
        drawn += b as u64;
    }
    Ok(race.counts)
}

/// Hard Cap Sampling: each row's count of draws, at most `limit` (see the module docs).
pub fn hard_cap(scores: &[f32], p: &HardCapParams) -> Result<Vec<u32>, SamplingError> {
    let mut race = Race::new(scores, p.temperature, 0.0, p.seed)?;
    let rows = race.eligible();
    if (rows as u128) * u128::from(p.limit) < u128::from(p.total) {
        let needed = p.total.div_ceil(u64::from(p.limit));
        return Err(SamplingError::TooFew { needed, rows, what: "Hard Cap Sampling of `total` draws" });
    }
    let (mut drawn, mut theta, mut rate, mut open) = (0u64, 0f64, race.rate(), rows);
    while drawn < p.total && !interrupt::pending() {
        let k = HARD_CAP_PASS.min(p.total - drawn).min(open as u64) as usize;
        let (first, t) = race.smallest(k, theta, rate);
        theta = t;
        let (mut events, next) = race.events_until(&first, theta, p.limit);
        let room = (p.total - drawn) as usize;
        if events.len() >= room {
            // The last pass: the first `room` events in time order, and done.
            events.select_nth_unstable_by(room - 1, |a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            for &(_, i) in &events[..room] {
                race.counts[i as usize] += 1;
            }
            break;
        }
        for &(_, i) in &events {
            race.counts[i as usize] += 1;
        }
        for (&(_, i), &t) in first.iter().zip(&next) {
            if !t.is_finite() {
                rate -= race.weight(i as usize); // capped
                open -= 1;
            }
            race.times[i as usize] = t;
        }
        drawn += events.len() as u64;
    }
    Ok(race.counts)
}

/// Draws per pass of [`hard_cap`] (any size gives the same counts; this one keeps a pass's
/// candidates small).
const HARD_CAP_PASS: u64 = 1 << 20;

impl Race<'_> {
    /// Every event at or before `theta` of the rows `first` (their next event, then the ones
    /// after it while at or before `theta` and below `limit`), as `(time, row)`, and each row's
    /// next event after those (`INFINITY` once it has `limit`); the counts are not changed.
    fn events_until(&self, first: &[(f64, u32)], theta: f64, limit: u32) -> (Vec<(f64, u32)>, Vec<f64>) {
        let mut events = Vec::with_capacity(first.len());
        let mut next = Vec::with_capacity(first.len());
        for &(t0, row) in first {
            let i = row as usize;
            let w = self.weight(i);
            let (mut t, mut c) = (t0, self.counts[i]);
            loop {
                events.push((t, row));
                c += 1;
                if c >= limit {
                    t = f64::INFINITY;
                    break;
                }
                t += exponential(self.seed, i, c) / w;
                if t > theta {
                    break;
                }
            }
            next.push(t);
        }
        (events, next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scores(n: usize) -> Vec<f32> {
        (0..n).map(|i| if i % 17 == 5 { f32::NAN } else { ((i * 7919) % 101) as f32 / 25.0 }).collect()
    }

    #[test]
    fn soft_cap_draws_total_and_a_batch_never_twice() {
        let s = scores(1000);
        let valid = s.iter().filter(|v| v.is_finite()).count() as u64;
        // One batch of every valid row: each exactly once.
        let p = SoftCapParams { total: valid, batch: valid, alpha: 0.15, temperature: 1.0, seed: 3 };
        let c = soft_cap(&s, &p).unwrap();
        assert!(c.iter().zip(&s).all(|(&c, v)| c == u32::from(v.is_finite())));
        for (total, batch) in [(5000, 100), (777, 1), (3000, 900)] {
            let p = SoftCapParams { total, batch, alpha: 0.15, temperature: 0.5, seed: 1 };
            let c = soft_cap(&s, &p).unwrap();
            assert_eq!(c.iter().map(|&x| u64::from(x)).sum::<u64>(), total);
            assert!(c.iter().zip(&s).all(|(&c, v)| v.is_finite() || c == 0));
            // Batches of distinct rows: no row more often than there were batches.
            assert!(c.iter().all(|&x| u64::from(x) <= total.div_ceil(batch)));
            assert_eq!(c, soft_cap(&s, &p).unwrap(), "seeded");
        }
    }

    #[test]
    fn hard_cap_draws_total_and_respects_the_limit() {
        let s = scores(500);
        for (total, limit) in [(1000, 15), (2000, 5), (1, 1)] {
            let p = HardCapParams { total, limit, temperature: 0.2, seed: 9 };
            let c = hard_cap(&s, &p).unwrap();
            assert_eq!(c.iter().map(|&x| u64::from(x)).sum::<u64>(), total);
            assert!(c.iter().all(|&x| x <= limit));
            assert!(c.iter().zip(&s).all(|(&c, v)| v.is_finite() || c == 0));
        }
        // Exactly at capacity: every valid row drawn `limit` times.
        let valid = s.iter().filter(|v| v.is_finite()).count() as u64;
        let c =
            hard_cap(&s, &HardCapParams { total: 3 * valid, limit: 3, temperature: 1.0, seed: 0 }).unwrap();
        assert!(c.iter().zip(&s).all(|(&c, v)| c == if v.is_finite() { 3 } else { 0 }));
        let err = hard_cap(&s, &HardCapParams { total: 3 * valid + 1, limit: 3, temperature: 1.0, seed: 0 });
        assert!(matches!(err, Err(SamplingError::TooFew { .. })));
    }

    #[test]
    fn too_few_rows_for_a_batch_is_an_error() {
        let s = vec![1.0, f32::NAN, 0.5];
        let p = SoftCapParams { total: 10, batch: 3, alpha: 0.1, temperature: 1.0, seed: 0 };
        assert!(matches!(soft_cap(&s, &p), Err(SamplingError::TooFew { needed: 3, rows: 2, .. })));
        assert!(SoftCapParams { batch: 0, ..p }.validate().is_err());
        assert!(SoftCapParams { alpha: f64::NAN, ..p }.validate().is_err());
        let msg = SoftCapParams { temperature: 1e-300, ..p }.validate().unwrap_err();
        assert!(msg.contains("got 1e-300"), "{msg}");
    }

    #[test]
    fn the_draw_hash_is_a_contract() {
        assert_eq!(draw_bits(0, 0, 0), draw_bits(0, 0, 0));
        assert_ne!(draw_bits(0, 1, 0), draw_bits(0, 0, 1));
        assert_ne!(draw_bits(1, 0, 0), draw_bits(0, 0, 0));
    }
}
