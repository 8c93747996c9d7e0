//! Pure kernels on slices: no Polars, no PyO3.
//!
//! Everything here works on flat row-major buffers (`row * dim + col`) and is unit-tested and
//! benchmarked without Polars. The expression layer (`crate::expressions`) only validates,
//! converts and calls into this module.

pub mod aligned;
pub mod clip_score;
pub mod clipcov;
pub mod dynamic;
pub mod fastmath;
pub mod gram;
pub mod isa;
pub mod matrix;
pub mod micro;
pub mod negclip;
pub mod normsim;
pub mod packed;
pub mod partition;
pub mod pool;
pub mod tile;

#[cfg(test)]
mod testutil;

pub use matrix::{Matrix, ShapeError, Values};

/// How many rows to keep: a count, or a fraction `num / den` of the usable rows (rounded down).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Keep {
    Count(usize),
    Fraction { num: u64, den: u64 },
}

impl Keep {
    /// The count for `n` usable rows, or `Err((keep, n))` when a count exceeds `n`.
    pub fn resolve(self, n: usize) -> Result<usize, (usize, usize)> {
        match self {
            Keep::Count(k) if k > n => Err((k, n)),
            Keep::Count(k) => Ok(k),
            Keep::Fraction { num, den } => {
                let k = (n as u128 * u128::from(num)) / u128::from(den.max(1));
                Ok((k as usize).min(n))
            }
        }
    }
}
