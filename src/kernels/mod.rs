//! Pure kernels on slices: no Polars, no PyO3.
//!
//! Everything here works on flat row-major buffers (`row * dim + col`) and is unit-tested and
//! benchmarked without Polars. The expression layer (the crate's `expressions` module) only
//! validates, converts and calls into this module.
//!
//! By role: [`engine`] is the GEMM (instruction sets, micro-kernels, packing and loop nest,
//! epilogue math), [`runtime`] what a call runs within (threads, interrupts, memory checks),
//! [`scores`] the methods built on them; [`matrix`] is the input they all read.

pub mod engine;
pub mod matrix;
pub mod runtime;
pub mod scores;

#[cfg(test)]
mod testutil;

pub use matrix::{Matrix, ShapeError, Values};
