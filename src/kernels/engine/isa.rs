//! The instruction sets: which ones this CPU has, and which kernel this process uses.
//!
//! The CPU is inspected once ([`Isa::detected`]); the kernel a process uses is chosen once
//! ([`Kernel::selected`]: the best one the CPU runs, or the one `POLARS_CURATE_KERNEL` pins) and
//! handed to every call as a value. A call turns that value into a *kernel type* once (the
//! `dispatch` module's `with_kernel!`), and everything below (packing, the loop nest, the
//! micro-kernel, the fused epilogues) is monomorphised for that type: no instruction-set test
//! inside the loops. This module knows nothing of those types: the micro-kernels build on it,
//! and the dispatch builds on both.
//!
//! Soundness: the kernel types (the `micro` module's `Avx2`, ...) are zero-sized *witnesses*: safe
//! code can only obtain one from a [`Kernel`], and a [`Kernel`] only exists for an instruction set
//! the CPU has. So code holding a witness may call that instruction set's `#[target_feature]`
//! functions.
//!
//! Determinism: a kernel's results are bit-identical across threads, chunking, engines and
//! morsels. Different kernels may differ in the last bits (the portable kernel rounds every
//! product, the others fuse multiply-adds); pin one with `POLARS_CURATE_KERNEL` for identical
//! bits across a fleet of different CPUs.
//!
//! # AMX (not built yet)
//! [`Isa::Amx`] is detected and reported, but there is no AMX kernel: nothing this project was
//! developed on could run one, and CI machines with AMX would pick an untested kernel. How it
//! would plug in:
//! * a micro-kernel type `Amx` implementing `micro::MicroKernel` with its own packed
//!   element type: each `f32` operand split into bfloat16 `hi = bf16(x)`, `lo = bf16(x - hi)`,
//!   packed in the VNNI pair layout `TDPBF16PS` reads (`K/2 x N x 2`); the products
//!   `hi*hi + hi*lo + lo*hi` accumulated in `f32` tiles (error ~2^-16 relative, within the tests'
//!   tolerance), a `16 x 16` `f32` tile per accumulator, 2 x 2 accumulators per micro-tile;
//! * Linux grants the tile state only after `arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`
//!   (once per process, before [`Kernel::new`] accepts `amx`; a refusal makes `amx` unavailable);
//! * `LDTILECFG`/`TILELOADD`/`TDPBF16PS`/`TILESTORED` through `asm!` (the intrinsics are not
//!   stable), the epilogues shared with the AVX-512 build (every AMX CPU has AVX-512);
//! * [`Isa::has_kernel`] turns true and [`Kernel::best`] prefers it only once it has been run and
//!   measured on a CPU that has AMX.

use std::fmt;
use std::sync::OnceLock;

/// An instruction set a kernel can be built for, from the most portable to the widest.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Isa {
    /// Plain Rust the compiler vectorises for the baseline target (SSE2 on x86-64).
    Portable,
    /// AVX2 + FMA (256-bit).
    Avx2,
    /// AVX-512 F/BW/DQ/VL + FMA (512-bit).
    Avx512,
    /// AMX tiles (BF16); detected, no kernel yet.
    Amx,
}

impl Isa {
    /// Every instruction set, in preference order from the most portable.
    pub const ALL: [Isa; 4] = [Isa::Portable, Isa::Avx2, Isa::Avx512, Isa::Amx];

    /// The name `POLARS_CURATE_KERNEL` takes.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Portable => "portable",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
            Isa::Amx => "amx",
        }
    }

    /// The instruction set named `name` (case-insensitive, surrounding spaces ignored).
    pub fn parse(name: &str) -> Option<Isa> {
        let name = name.trim().to_ascii_lowercase();
        Isa::ALL.into_iter().find(|isa| isa.name() == name)
    }

    /// What the CPU must have, in words (for error messages).
    fn requires(self) -> &'static str {
        match self {
            Isa::Portable => "nothing",
            Isa::Avx2 => "AVX2 and FMA",
            Isa::Avx512 => "AVX-512 F, BW, DQ and VL, and FMA",
            Isa::Amx => "AMX (tiles and BF16, enabled by the OS)",
        }
    }

    /// Whether this CPU (and its OS) supports the instruction set. Checked once per process.
    pub fn on_cpu(self) -> bool {
        static FOUND: OnceLock<[bool; 4]> = OnceLock::new();
        FOUND.get_or_init(|| Isa::ALL.map(detect))[self as usize]
    }

    /// Whether this build has a kernel for the instruction set.
    pub fn has_kernel(self) -> bool {
        match self {
            Isa::Portable => true,
            Isa::Avx2 | Isa::Avx512 => cfg!(target_arch = "x86_64"),
            Isa::Amx => false,
        }
    }

    /// The widest instruction set this CPU has a kernel for.
    pub fn detected() -> Isa {
        Kernel::best().isa()
    }
}

impl fmt::Display for Isa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(target_arch = "x86_64")]
fn detect(isa: Isa) -> bool {
    use std::is_x86_feature_detected as has;
    match isa {
        Isa::Portable => true,
        Isa::Avx2 => has!("avx2") && has!("fma"),
        Isa::Avx512 => {
            has!("avx512f") && has!("avx512bw") && has!("avx512dq") && has!("avx512vl") && has!("fma")
        }
        Isa::Amx => amx_on_cpu(),
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn detect(isa: Isa) -> bool {
    isa == Isa::Portable
}

/// AMX-TILE and AMX-BF16 (CPUID leaf 7: EDX bits 24 and 22) with the tile state enabled in
/// XCR0 (bits 17 and 18). Whether Linux will also grant the tile data (`arch_prctl`) is only
/// known when asking, which a future AMX kernel does (see the module notes).
#[cfg(target_arch = "x86_64")]
fn amx_on_cpu() -> bool {
    use std::arch::x86_64::{__cpuid, __cpuid_count};
    // CPUID exists on every x86-64 CPU; leaf 7 is read only when leaf 0 reports it.
    let max_leaf = __cpuid(0).eax;
    let edx7 = if max_leaf >= 7 { __cpuid_count(7, 0).edx } else { 0 };
    let ecx1 = __cpuid(1).ecx;
    let tile_bf16 = max_leaf >= 7 && edx7 & (1 << 24) != 0 && edx7 & (1 << 22) != 0;
    let osxsave = ecx1 & (1 << 27) != 0;
    if !(tile_bf16 && osxsave) {
        return false;
    }
    // SAFETY: OSXSAVE is set, so XGETBV is enabled.
    let xcr0 = unsafe { xgetbv0() };
    xcr0 & (0b11 << 17) == 0b11 << 17
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "xsave")]
unsafe fn xgetbv0() -> u64 {
    std::arch::x86_64::_xgetbv(0)
}

/// A kernel this process can run: an instruction set the CPU supports and this build has a
/// kernel for. Cheap to copy; pass it to the entry points (`neg_clip_loss`, `Target::prepare`,
/// ...), which turn it into a kernel type once per call.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Kernel(Isa);

/// Why a kernel cannot be used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KernelUnavailable {
    /// `POLARS_CURATE_KERNEL` holds no kernel's name.
    Unknown(String),
    /// The CPU lacks the instruction set.
    NotOnCpu(Isa),
    /// This build has no kernel for the instruction set.
    NotBuilt(Isa),
}

impl fmt::Display for KernelUnavailable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let runs = Kernel::available().iter().map(|k| k.name()).collect::<Vec<_>>().join(", ");
        match self {
            KernelUnavailable::Unknown(v) => write!(
                f,
                "POLARS_CURATE_KERNEL={v:?} is not a kernel: use one of portable, avx2, avx512, amx, or unset it \
                 (this CPU runs: {runs})"
            ),
            KernelUnavailable::NotOnCpu(isa) => write!(
                f,
                "the {isa} kernel needs {}, which this CPU lacks: set POLARS_CURATE_KERNEL to one it runs \
                 ({runs}) or unset it",
                isa.requires()
            ),
            KernelUnavailable::NotBuilt(isa) => write!(
                f,
                "the {isa} kernel is not available in this build (there is no {isa} kernel yet; this CPU has \
                 {}: {}): set POLARS_CURATE_KERNEL to one this CPU runs ({runs}) or unset it",
                isa.requires(),
                if isa.on_cpu() { "yes" } else { "no" }
            ),
        }
    }
}

impl std::error::Error for KernelUnavailable {}

impl Kernel {
    /// The kernel for `isa`, if this CPU supports it and this build has one.
    pub fn new(isa: Isa) -> Result<Kernel, KernelUnavailable> {
        if !isa.has_kernel() {
            Err(KernelUnavailable::NotBuilt(isa))
        } else if !isa.on_cpu() {
            Err(KernelUnavailable::NotOnCpu(isa))
        } else {
            Ok(Kernel(isa))
        }
    }

    /// The kernel of a witness (which exists only when the CPU runs it).
    pub(super) fn trusted(isa: Isa) -> Kernel {
        Kernel(isa)
    }

    /// The portable kernel (every CPU runs it).
    pub fn portable() -> Kernel {
        Kernel(Isa::Portable)
    }

    /// Every kernel this process can run, most portable first.
    pub fn available() -> Vec<Kernel> {
        Isa::ALL.into_iter().filter_map(|isa| Kernel::new(isa).ok()).collect()
    }

    /// The widest kernel this CPU runs.
    pub fn best() -> Kernel {
        Kernel::available().into_iter().next_back().unwrap_or(Kernel(Isa::Portable))
    }

    /// The kernel named `name` (`None`, empty or `"auto"`: [`Kernel::best`]).
    pub fn from_name(name: Option<&str>) -> Result<Kernel, KernelUnavailable> {
        match name.map(str::trim) {
            None | Some("") => Ok(Kernel::best()),
            Some(v) if v.eq_ignore_ascii_case("auto") => Ok(Kernel::best()),
            Some(v) => Kernel::new(Isa::parse(v).ok_or_else(|| KernelUnavailable::Unknown(v.to_string()))?),
        }
    }

    /// This process's kernel: the one `POLARS_CURATE_KERNEL` names, else [`Kernel::best`]. The
    /// variable is read once per process ([`crate::settings`]); an unusable value is an error
    /// every time.
    pub fn selected() -> Result<Kernel, KernelUnavailable> {
        static SELECTED: OnceLock<Result<Kernel, KernelUnavailable>> = OnceLock::new();
        SELECTED.get_or_init(|| Kernel::from_name(crate::settings::get().kernel.as_deref())).clone()
    }

    pub fn isa(self) -> Isa {
        self.0
    }

    pub fn name(self) -> &'static str {
        self.0.name()
    }
}

impl fmt::Display for Kernel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The instruction set of kernel-independent helpers (see the `fastmath` module's `simd_fn!`):
/// the selected kernel's, or the best one when `POLARS_CURATE_KERNEL` is unusable (every
/// expression reports that error before any kernel runs; such helpers give the same bits in
/// every build).
pub fn helper_isa() -> Isa {
    static ISA: OnceLock<Isa> = OnceLock::new();
    *ISA.get_or_init(|| Kernel::selected().unwrap_or_else(|_| Kernel::best()).isa())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_errors_say_what_to_do() {
        for isa in Isa::ALL {
            assert_eq!(Isa::parse(isa.name()), Some(isa));
            assert_eq!(Isa::parse(&format!(" {} ", isa.name().to_uppercase())), Some(isa));
        }
        assert_eq!(Kernel::from_name(None), Ok(Kernel::best()));
        assert_eq!(Kernel::from_name(Some("")), Ok(Kernel::best()));
        assert_eq!(Kernel::from_name(Some("AUTO")), Ok(Kernel::best()));
        assert_eq!(Kernel::from_name(Some("portable")), Ok(Kernel::portable()));
        let e = Kernel::from_name(Some("avx9")).unwrap_err();
        assert_eq!(e, KernelUnavailable::Unknown("avx9".into()));
        let msg = e.to_string();
        assert!(msg.contains("POLARS_CURATE_KERNEL=\"avx9\"") && msg.contains("portable"), "{msg}");
        let e = Kernel::from_name(Some("amx")).unwrap_err();
        assert_eq!(e, KernelUnavailable::NotBuilt(Isa::Amx));
        assert!(e.to_string().contains("not available in this build"), "{e}");
    }

    #[test]
    fn available_kernels_are_the_ones_the_cpu_runs() {
        let avail = Kernel::available();
        assert_eq!(avail[0], Kernel::portable());
        assert_eq!(Kernel::best(), *avail.last().unwrap());
        for isa in Isa::ALL {
            match Kernel::new(isa) {
                Ok(k) => {
                    assert!(isa.on_cpu() && isa.has_kernel() && avail.contains(&k));
                    println!("kernel {isa}: available");
                }
                Err(e) => {
                    assert!(!avail.iter().any(|k| k.isa() == isa));
                    println!("kernel {isa}: SKIPPED on this machine: {e}");
                }
            }
        }
        println!("CPU has AMX: {}", Isa::Amx.on_cpu());
    }
}
