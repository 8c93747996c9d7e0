//! The GEMM engine: what every fused kernel's matrix products and epilogues run on.
//!
//! In BLIS terms, one file per part:
//! * [`isa`]: the instruction sets, their detection and the process's [`isa::Kernel`];
//! * [`dispatch`]: a [`isa::Kernel`] value turned into a micro-kernel type once per call
//!   (`with_kernel!`), the one place that knows both;
//! * [`micro`]: the micro-kernels (one type per instruction set, with its register block and
//!   k-block);
//! * [`pack`]: operands packed once into micro-panels laid out for a micro-kernel;
//! * [`gemm`]: the loop nest around the micro-kernel;
//! * [`blocking`]: the loop nest's block sizes, derived once from the CPU's caches;
//! * [`tile`]: the tile shape the fused kernels reduce in cache;
//! * [`aligned`]: cache-line aligned buffers for panels and tiles;
//! * [`fastmath`]: the vectorised epilogue math (`exp`, `ln`, dot products, log-sum-exp), built
//!   once per instruction set.

pub mod aligned;
pub mod blocking;
pub mod dispatch;
pub mod fastmath;
pub mod gemm;
pub mod isa;
pub mod micro;
pub mod pack;
pub mod tile;
