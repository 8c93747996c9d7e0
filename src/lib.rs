//! polars-curate: embedding-only data-selection scores as Polars expressions.
//!
//! Dependencies point one way: `kernels` is pure Rust on slices (no Polars, no PyO3);
//! `expressions` is the thin Polars layer; `python` is the module `polars_curate._internal`,
//! which is also the library Polars loads the plugin expressions from. `settings` holds every
//! environment variable the crate reads, read once (pure Rust, like `kernels`).

pub mod kernels;
pub mod settings;

#[cfg(feature = "python")]
pub mod expressions;
#[cfg(feature = "python")]
mod python;
#[cfg(feature = "python")]
pub mod targets;
