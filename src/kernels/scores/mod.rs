//! The scores: one file per method, each built on the engine (`super::engine`) and run within
//! the runtime (`super::runtime`).
//!
//! * CLIPScore in [`clip_score`]; negCLIPLoss in [`negclip`], with its seeded batches in
//!   [`partition`];
//! * NormSim_p in [`normsim`], with the Gram matrices of `p = 2` in [`gram`]; NormSim_2-D in
//!   [`dynamic`];
//! * ClipCov in [`clipcov`];
//! * spherical k-means in [`kmeans`], SemDeDup in [`semdedup`];
//! * Soft and Hard Cap Sampling (draws with repetition) in [`sampling`].
//!
//! The selection kernels ([`dynamic`], [`clipcov`]) share [`Keep`] and [`KernelError`].

pub mod clip_score;
pub mod clipcov;
pub mod dynamic;
pub mod gram;
pub mod kmeans;
pub mod negclip;
pub mod normsim;
pub mod partition;
pub mod sampling;
pub mod semdedup;

use crate::kernels::runtime::memory;

/// Why a selection kernel cannot run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KernelError {
    /// A `keep` count larger than the number of usable rows.
    Keep { keep: usize, rows: usize },
    /// A buffer the arguments call for does not fit in memory.
    Memory(memory::AllocError),
}

impl std::fmt::Display for KernelError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KernelError::Keep { keep, rows } => {
                write!(f, "`keep` = {keep} is more than the {rows} rows with usable embeddings")
            }
            KernelError::Memory(e) => e.fmt(f),
        }
    }
}

impl std::error::Error for KernelError {}

impl From<memory::AllocError> for KernelError {
    fn from(e: memory::AllocError) -> Self {
        KernelError::Memory(e)
    }
}

/// How many rows to keep: a count, or a fraction `num / den` of the usable rows (rounded down).
///
/// From Python it arrives as a pair `(num, den)`: `den == 0` means the count `num`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "python", derive(serde::Deserialize), serde(from = "(u64, u64)"))]
pub enum Keep {
    Count(usize),
    Fraction { num: u64, den: u64 },
}

impl From<(u64, u64)> for Keep {
    fn from((num, den): (u64, u64)) -> Self {
        if den == 0 {
            Keep::Count(usize::try_from(num).unwrap_or(usize::MAX))
        } else {
            Keep::Fraction { num, den }
        }
    }
}

impl Keep {
    /// `Err` when a fraction is above 1.
    pub fn validate(&self) -> Result<(), String> {
        match *self {
            Keep::Fraction { num, den } if num > den => {
                Err(format!("`keep` as a fraction must be in [0, 1], got {num}/{den}"))
            }
            _ => Ok(()),
        }
    }

    /// The count for `n` usable rows, or an error when a count exceeds `n`.
    pub fn resolve(self, n: usize) -> Result<usize, KernelError> {
        match self {
            Keep::Count(k) if k > n => Err(KernelError::Keep { keep: k, rows: n }),
            Keep::Count(k) => Ok(k),
            Keep::Fraction { num, den } => {
                let k = (n as u128 * u128::from(num)) / u128::from(den.max(1));
                Ok((k as usize).min(n))
            }
        }
    }
}
