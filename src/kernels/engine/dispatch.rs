//! The one place a kernel is chosen: a [`Kernel`] value becomes a kernel *type* once per call.
//!
//! [`with_kernel!`] matches the kernel's [`Witness`] and compiles its body once per kernel type,
//! so everything generic below it (packing, the loop nest, the micro-kernel, the fused
//! epilogues) is monomorphised: no instruction-set test inside the loops (matrixmultiply's
//! `detect(selector)` then `gemm_loop::<K>`). This module knows both sides, the instruction sets
//! ([`super::isa`]) and the micro-kernel types ([`super::micro`]); neither of them knows it.

#[cfg(target_arch = "x86_64")]
use super::isa::Isa;
use super::isa::Kernel;
use super::micro;
#[cfg(target_arch = "x86_64")]
use super::micro::MicroKernel;

/// A kernel type's witness, one variant per kernel this build has (see [`with_kernel!`]).
#[doc(hidden)]
pub enum Witness {
    Portable(micro::Portable),
    #[cfg(target_arch = "x86_64")]
    Avx2(micro::Avx2),
    #[cfg(target_arch = "x86_64")]
    Avx512(micro::Avx512),
}

/// The witness of `kernel`'s type (see [`with_kernel!`]).
#[doc(hidden)]
pub fn witness(kernel: Kernel) -> Witness {
    // SAFETY (each arm): a `Kernel` exists only for an instruction set the CPU supports.
    match kernel.isa() {
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => Witness::Avx512(unsafe { micro::Avx512::new_unchecked() }),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => Witness::Avx2(unsafe { micro::Avx2::new_unchecked() }),
        _ => Witness::Portable(micro::Portable::new()),
    }
}

/// `with_kernel!(kernel, k => expr)`: evaluates `expr` with `k` bound to the witness of
/// `kernel`'s type, `expr` being compiled once per kernel type. This match is the only place a
/// kernel is chosen; everything generic below it is monomorphised.
#[macro_export]
#[doc(hidden)]
macro_rules! with_kernel {
    ($kernel:expr, $k:ident => $body:expr) => {
        match $crate::kernels::engine::dispatch::witness($kernel) {
            $crate::kernels::engine::dispatch::Witness::Portable($k) => $body,
            #[cfg(target_arch = "x86_64")]
            $crate::kernels::engine::dispatch::Witness::Avx2($k) => $body,
            #[cfg(target_arch = "x86_64")]
            $crate::kernels::engine::dispatch::Witness::Avx512($k) => $body,
        }
    };
}
pub use with_kernel;
