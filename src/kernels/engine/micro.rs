//! The micro-kernels: kernel types, each declaring its instruction set, register block and the
//! packing layout it reads, and computing one `MR x NR` block of `C` from packed panels. The
//! portable kernel is one type; the x86 kernels (AVX2, AVX-512) are one type and one block body
//! generic over the vector register (`__m256`, `__m512`), whose operations are each one intrinsic.
//!
//! Layout (every kernel so far): `f32` panels, k-major. An `A` micro-panel holds `MR` rows
//! (`a[k * MR + i]`), a `B` micro-panel `NR` rows (`b[k * NR + j]`); see the `pack` module.
//! The loop nest (`gemm::gemm_packed_in`) and the packing take `MR`/`NR` from the kernel type, so
//! a packed operand is typed by the kernel it was packed for.
//!
//! Each kernel type also declares how its build evaluates `a * b + c` ([`Mode`]), which the
//! epilogues compiled for it use (see the `fastmath` module).
//!
//! The kernel types are zero-sized witnesses (see [`super::isa`]): safe code gets one only from
//! a [`Kernel`] the CPU runs, so holding one proves its instruction set is there. Which type a
//! call uses is chosen once, by the `dispatch` module.

use super::isa::{Isa, Kernel};

/// How a build evaluates `a * b + c`: fused in the kernels whose CPUs have FMA (AVX2, AVX-512),
/// two roundings in the portable one (where `f32::mul_add` would be a library call per element).
pub trait Mode {
    fn mul_add(a: f32, b: f32, c: f32) -> f32;
}

/// Fused multiply-add: the AVX2 and AVX-512 builds.
pub struct Fused;
/// `a * b + c` rounded twice: the portable build.
pub struct Plain;

impl Mode for Fused {
    #[inline(always)]
    fn mul_add(a: f32, b: f32, c: f32) -> f32 {
        a.mul_add(b, c)
    }
}

impl Mode for Plain {
    #[inline(always)]
    fn mul_add(a: f32, b: f32, c: f32) -> f32 {
        a * b + c
    }
}

/// One k-block of a block's sum (see [`MicroKernel::block`]): `kc` steps of the packed micro-panels,
/// added to the partial sums in `C` when `load` (else to zero), and scaled by `scale` on the way out.
#[derive(Clone, Copy, Debug)]
pub struct KBlock<'a> {
    /// Steps of `k` in this block.
    pub kc: usize,
    /// The `A` micro-panel: `a[k * MR + i]`, at least `kc` steps.
    pub a: &'a [f32],
    /// The `B` micro-panel: `b[k * NR + j]`, at least `kc` steps.
    pub b: &'a [f32],
    /// Whether `C` holds the partial sums of earlier k-blocks.
    pub load: bool,
    /// The factor applied once, after the sum (`1` except on a product's last k-block).
    pub scale: f32,
}

/// A micro-kernel: its register block, its arithmetic, and the block computation.
///
/// # Safety
/// Implementors must only be constructible (by safe code) when the CPU supports [`Self::ISA`]:
/// generic code relies on that to call `ISA`'s `#[target_feature]` functions.
pub unsafe trait MicroKernel: Copy + Send + Sync + 'static {
    /// The instruction set (also that of the epilogues compiled for this kernel).
    const ISA: Isa;
    /// Rows of `A` per micro-panel (the broadcast side).
    const MR: usize;
    /// Rows of `B` per micro-panel (the vector side).
    const NR: usize;
    /// How the epilogues evaluate `a * b + c` in this kernel's build.
    type Mode: Mode;

    /// The witness, unchecked.
    ///
    /// # Safety
    /// The CPU must support [`Self::ISA`] (the dispatch knows it from a [`Kernel`]).
    unsafe fn new_unchecked() -> Self;

    /// The [`Kernel`] this witness stands for.
    fn kernel(self) -> Kernel {
        // A witness exists only when the CPU supports `ISA` (the trait's contract).
        Kernel::trusted(Self::ISA)
    }

    /// The witness, if this CPU runs the kernel (for benchmarks and tests that name a kernel type;
    /// entry points take a [`Kernel`] instead).
    fn detect() -> Option<Self> {
        // SAFETY: `Kernel::new` checked that the CPU supports `ISA`.
        Kernel::new(Self::ISA).ok().map(|_| unsafe { Self::new_unchecked() })
    }

    /// The full `MR x NR` block: [`MicroKernel::block`] with `mr = MR` and `nr = NR`, without its
    /// checks. This is all a kernel writes itself; edge blocks are the shared `edge_block`.
    ///
    /// # Safety
    /// `s.a` and `s.b` hold `s.kc` steps (`kc * MR` and `kc * NR` floats) and `c` holds `MR` rows
    /// of `NR` floats `ldc` apart (`c.len() >= (MR - 1) * ldc + NR`, and `NR <= ldc` when
    /// `MR > 1`): what [`MicroKernel::block`] checks before calling it.
    unsafe fn full_block(self, s: KBlock<'_>, c: &mut [f32], ldc: usize);

    /// One block of `C` (row stride `ldc`, `c` starting at the block's top-left), for the k-block
    /// `s = KBlock { kc, a, b, load, scale }`:
    ///
    /// ```text
    /// c[i * ldc + j] = scale * (c0_ij + sum_{k < kc} a[k * MR + i] * b[k * NR + j])   i < mr, j < nr
    /// ```
    ///
    /// with `c0_ij = c[i * ldc + j]` when `load`, else `0`; the sum is one chain in `k` order
    /// (fused multiply-adds, except in the portable kernel), so an entry's bits depend only on
    /// its row of `A`, its row of `B` and `kc`. Nothing else of `c` is written.
    ///
    /// A full block goes to the kernel's [`MicroKernel::full_block`], a partial one (`mr < MR` or
    /// `nr < NR`, at the bottom or right edge of a product) to `edge_block`, the same for every
    /// kernel.
    ///
    /// # Panics
    /// If a panel is shorter than `kc` steps, `mr > MR`, `nr > NR` or `c` is too short (caller
    /// bugs, never user data).
    #[inline]
    fn block(self, s: KBlock<'_>, c: &mut [f32], ldc: usize, mr: usize, nr: usize) {
        check::<Self>(&s, c, ldc, mr, nr);
        if mr == Self::MR && nr == Self::NR {
            // SAFETY: `check` bounds the panels and the full block of `c`.
            unsafe { self.full_block(s, c, ldc) }
        } else if mr > 0 && nr > 0 {
            edge_block(self, s, c, ldc, mr, nr);
        }
    }
}

#[inline(always)]
fn check<K: MicroKernel>(s: &KBlock<'_>, c: &[f32], ldc: usize, mr: usize, nr: usize) {
    assert!(s.a.len() >= s.kc * K::MR && s.b.len() >= s.kc * K::NR && mr <= K::MR && nr <= K::NR);
    assert!(mr == 0 || nr == 0 || ((mr == 1 || nr <= ldc) && c.len() >= (mr - 1) * ldc + nr));
}

/// Floats in the scratch tile of [`edge_block`]: room for every register block there is (the
/// largest, the benchmarks' AVX-512 14 x 32, holds 448).
const EDGE_TILE: usize = 512;

/// [`MicroKernel::block`] for an edge block (`0 < mr <= MR`, `0 < nr <= NR`, not both full): the
/// one edge path of every kernel. The kernel's full block is computed into a scratch tile (row
/// stride `NR`, its `mr x nr` corner loaded from `c` when `load`), and that corner is copied to
/// `c`. Each entry is the same chain as in a full block (the rows and columns past the edge are
/// computed from whatever the panels hold there, zero padding or rows outside the requested
/// range, and dropped), so an entry's bits never depend on whether it lies in an edge block.
///
/// A scratch tile rather than masked loads and stores: AVX2 masked stores are microcoded on AMD
/// cores and the portable kernel has none, and edge blocks are at most one row and one column of
/// blocks per product.
fn edge_block<K: MicroKernel>(kernel: K, s: KBlock<'_>, c: &mut [f32], ldc: usize, mr: usize, nr: usize) {
    const { assert!(K::MR * K::NR <= EDGE_TILE, "a register block larger than EDGE_TILE") };
    let nrr = K::NR;
    let mut tile = [0f32; EDGE_TILE];
    let t = &mut tile[..K::MR * nrr];
    if s.load {
        // The edge's `mr` rows of `nr` partial sums; the rest of the tile stays zero.
        for i in 0..mr {
            t[i * nrr..i * nrr + nr].copy_from_slice(&c[i * ldc..i * ldc + nr]);
        }
    }
    // SAFETY: the caller checked the panels (`check`); `t` holds `MR` rows of `NR` floats `NR`
    // apart.
    unsafe { kernel.full_block(s, t, nrr) }
    // Only the edge's `mr x nr` entries reach `c`.
    for i in 0..mr {
        c[i * ldc..i * ldc + nr].copy_from_slice(&t[i * nrr..i * nrr + nr]);
    }
}

/// The portable kernel: plain `f32` arithmetic the compiler vectorises for the baseline target,
/// with an `MR x NR` block. [`Portable`] is the block chosen by measurement; the others exist for
/// the benchmarks that chose it.
///
/// Every product is rounded and then added (`c += a * b`, never a fused multiply-add:
/// `f32::mul_add` is a library call per element on CPUs without FMA). So results are the same on
/// every CPU and every build of this kernel (deterministic per build, whatever the target), and
/// differ from the FMA kernels' in the last bits.
#[derive(Clone, Copy, Debug)]
pub struct PortableBlock<const MR: usize, const NR: usize>(());

/// The portable kernel: 6 x 8. Measured on an AMD EPYC (Zen 5) with the x86-64 baseline (SSE2,
/// 16 registers), one core, a 256-row block against 4096 packed columns, median GFLOP/s at d = 512
/// / 768: 6 x 8 41.6 / 41.0, 4 x 8 41.8 / 42.2, 6 x 16 23.0 / 22.9, 4 x 16 22.9 / 22.7, 8 x 8
/// 22.5 / 22.4: twelve `f32x4` accumulators fit the registers, 24 or 16 spill. (The block shape
/// never changes a bit: every entry is the same chain.)
pub type Portable = PortableBlock<6, 8>;

impl<const MR: usize, const NR: usize> PortableBlock<MR, NR> {
    /// Every CPU runs the portable kernel.
    pub(crate) fn new() -> Self {
        PortableBlock(())
    }
}

// SAFETY: the portable kernel needs no instruction-set extension.
unsafe impl<const MR: usize, const NR: usize> MicroKernel for PortableBlock<MR, NR> {
    const ISA: Isa = Isa::Portable;
    const MR: usize = MR;
    const NR: usize = NR;
    type Mode = Plain;

    unsafe fn new_unchecked() -> Self {
        Self::new()
    }

    #[inline]
    unsafe fn full_block(self, s: KBlock<'_>, c: &mut [f32], ldc: usize) {
        let KBlock { kc, a, b, load, scale } = s;
        let mut acc = [[0f32; NR]; MR];
        if load {
            // Each row's partial sums from earlier k-blocks.
            for (i, row) in acc.iter_mut().enumerate() {
                row.copy_from_slice(&c[i * ldc..i * ldc + NR]);
            }
        }
        // One k step at a time, in order (so each entry is one chain): a rank-1 update of the
        // `MR x NR` accumulators, which LLVM's vectoriser keeps in vector registers. Written with
        // one exit and whole-row updates because its output is fragile here: on an AVX2 EPYC
        // this form vectorises in every instance (negCLIPLoss end to end, `negclip_f32_k1`:
        // 38 GFLOP/s, where the library's instance of the earlier form was scalar, 3-5), and the
        // benchmark's 6 x 8 row block runs at about 20 (24 with the earlier form there).
        let (ap, bp) = (&a.as_chunks::<MR>().0[..kc], &b.as_chunks::<NR>().0[..kc]);
        for (ak, bk) in ap.iter().zip(bp) {
            // Row `i` broadcasts `a[k][i]` against the `NR` floats of `b[k]`.
            for (row, &x) in acc.iter_mut().zip(ak) {
                *row = std::array::from_fn(|j| row[j] + x * bk[j]);
            }
        }
        // Scaled once, on the way out.
        for (i, row) in acc.iter().enumerate() {
            for (o, &v) in c[i * ldc..i * ldc + NR].iter_mut().zip(row) {
                *o = scale * v;
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
pub use x86::{Avx2, Avx512, Avx512Block, SimdBlock};

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;
    use std::marker::PhantomData;

    use super::*;

    /// The x86 kernels: an `MR x LANES·NV` register block of `V` vectors (`MR · NV` accumulators,
    /// `NV` vectors of `B` and one broadcast of `A` per step). One type and one
    /// block body (`block_body`) for every vector type; [`Avx2`] and [`Avx512`] are the blocks
    /// chosen by measurement, the other shapes exist for the benchmarks that chose them.
    #[derive(Clone, Copy, Debug)]
    pub struct SimdBlock<V, const MR: usize, const NV: usize>(PhantomData<V>);

    /// The AVX2+FMA kernel: 6 x 16 (12 `ymm` accumulators, two vectors of `B` and one broadcast
    /// per step: 15 of the 16 registers). Measured at the GEMM ceiling of AVX2 EPYCs. (Its
    /// k-block comes from the caches: see the `blocking` module.)
    pub type Avx2 = SimdBlock<__m256, 6, 2>;

    /// The AVX-512 kernel with an `MR x 16·NV` register block (`MR · NV` `zmm` accumulators).
    /// [`Avx512`] is the block chosen by measurement; the others exist for the benchmarks that
    /// chose it.
    pub type Avx512Block<const MR: usize, const NV: usize> = SimdBlock<__m512, MR, NV>;

    /// The AVX-512 kernel: 8 x 32 (16 `zmm` accumulators, two vectors of `B`, one broadcast).
    ///
    /// Register block, measured on an AMD EPYC (Zen 5, family 26, 2 cores), median GFLOP/s at
    /// d = 512 / 768 (`make bench-rust` re-runs it):
    ///
    /// | block   | one core, 256 rows x 4096 packed columns | GEMM of a 4096 batch, 2 cores | with the negCLIPLoss epilogue |
    /// |---------|-----------|-----------|-----------|
    /// | 6 x 64  | 233 / 228 | 236 (a noisy run) / 462 | 395 / 398 |
    /// | 8 x 32  | 230 / 217 | 464 / 462 | 400 / 409 |
    /// | 12 x 32 | 224 / 226 | 456 / 457 | 349 / 385 |
    /// | 14 x 32 | 227 / 220 | 451 / 446 | 382 / 419 |
    ///
    /// (the AVX2 6 x 16 block: 115 / 117 on one core). The four are within this VM's noise; 8 x 32
    /// is kept because 8 rows and 32 columns tile the 256 x 256 tiles and the 96-row Gram blocks
    /// with no partial micro-panel, and it needs the fewest accumulators (latency 4 x 2 FMA pipes
    /// = 8 in flight; it has 16). (Its k-block comes from the caches: see the `blocking` module.)
    pub type Avx512 = Avx512Block<8, 2>;

    // SAFETY: only constructed (`new_unchecked`) when the CPU has `V::ISA`'s features.
    unsafe impl<V: Vector, const MR: usize, const NV: usize> MicroKernel for SimdBlock<V, MR, NV> {
        const ISA: Isa = V::ISA;
        const MR: usize = MR;
        const NR: usize = V::LANES * NV;
        type Mode = Fused;

        unsafe fn new_unchecked() -> Self {
            SimdBlock(PhantomData)
        }

        #[inline]
        unsafe fn full_block(self, s: KBlock<'_>, c: &mut [f32], ldc: usize) {
            // SAFETY: the witness proves the features; the caller bounds the panels and the block.
            unsafe { V::block::<MR, NV>(s, c.as_mut_ptr(), ldc) }
        }
    }

    /// A vector register of `f32` lanes as the x86 kernels use it (`__m256`, `__m512`): its
    /// instruction set, its lanes and the operations of `block_body`, each one intrinsic.
    ///
    /// # Safety
    /// The operations need [`Vector::ISA`]'s features: they may only run inlined into
    /// [`Vector::block`], which implementors compile with those features.
    pub(crate) unsafe trait Vector: Copy + std::fmt::Debug + Send + Sync + 'static {
        /// The instruction set whose features the operations need.
        const ISA: Isa;
        /// `f32` lanes per vector.
        const LANES: usize;
        /// All lanes zero.
        unsafe fn zero() -> Self;
        /// All lanes `x`.
        unsafe fn splat(x: f32) -> Self;
        /// All lanes `*p`.
        unsafe fn broadcast(p: *const f32) -> Self;
        /// `LANES` floats from `p` (unaligned).
        unsafe fn load(p: *const f32) -> Self;
        /// `LANES` floats to `p` (unaligned).
        unsafe fn store(self, p: *mut f32);
        /// `self * b + c`, rounded once.
        unsafe fn fmadd(self, b: Self, c: Self) -> Self;
        /// `self * b`.
        unsafe fn mul(self, b: Self) -> Self;
        /// `block_body` for `Self`, compiled with [`Vector::ISA`]'s features.
        ///
        /// # Safety
        /// The CPU has the features; as `block_body`.
        unsafe fn block<const MR: usize, const NV: usize>(s: KBlock<'_>, c: *mut f32, ldc: usize);
    }

    /// [`Vector`] for `$v`, each operation the named intrinsic, and [`Vector::block`] compiled
    /// with `$features`.
    macro_rules! vector {
        ($v:ty, $isa:expr, $lanes:literal, $features:literal, $zero:ident, $splat:ident,
         |$p:ident| $broadcast:expr, $load:ident, $store:ident, $fmadd:ident, $mul:ident) => {
            // SAFETY: each operation is an intrinsic of `$features`, and `block` (where alone they
            // run, inlined) is compiled with them.
            unsafe impl Vector for $v {
                const ISA: Isa = $isa;
                const LANES: usize = $lanes;
                #[inline(always)]
                unsafe fn zero() -> Self {
                    unsafe { $zero() }
                }
                #[inline(always)]
                unsafe fn splat(x: f32) -> Self {
                    unsafe { $splat(x) }
                }
                #[inline(always)]
                unsafe fn broadcast($p: *const f32) -> Self {
                    unsafe { $broadcast }
                }
                #[inline(always)]
                unsafe fn load(p: *const f32) -> Self {
                    unsafe { $load(p) }
                }
                #[inline(always)]
                unsafe fn store(self, p: *mut f32) {
                    unsafe { $store(p, self) }
                }
                #[inline(always)]
                unsafe fn fmadd(self, b: Self, c: Self) -> Self {
                    unsafe { $fmadd(self, b, c) }
                }
                #[inline(always)]
                unsafe fn mul(self, b: Self) -> Self {
                    unsafe { $mul(self, b) }
                }
                #[inline]
                unsafe fn block<const MR: usize, const NV: usize>(s: KBlock<'_>, c: *mut f32, ldc: usize) {
                    #[target_feature(enable = $features)]
                    unsafe fn run<const MR: usize, const NV: usize>(s: KBlock<'_>, c: *mut f32, ldc: usize) {
                        // SAFETY: as `block`'s contract; the features are enabled here.
                        unsafe { block_body::<$v, MR, NV>(s, c, ldc) }
                    }
                    // SAFETY: the caller's contract: the CPU has the features.
                    unsafe { run::<MR, NV>(s, c, ldc) }
                }
            }
        };
    }

    #[rustfmt::skip]
    vector!(__m256, Isa::Avx2, 8, "avx2,fma", _mm256_setzero_ps, _mm256_set1_ps,
        |p| _mm256_broadcast_ss(&*p), _mm256_loadu_ps, _mm256_storeu_ps, _mm256_fmadd_ps, _mm256_mul_ps);
    #[rustfmt::skip]
    vector!(__m512, Isa::Avx512, 16, "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma", _mm512_setzero_ps,
        _mm512_set1_ps, |p| _mm512_set1_ps(*p), _mm512_loadu_ps, _mm512_storeu_ps, _mm512_fmadd_ps, _mm512_mul_ps);

    /// [`MicroKernel::full_block`] for [`SimdBlock`]: the `MR x LANES·NV` block, one text for
    /// every vector type (inlined into [`Vector::block`], which compiles it with the features).
    ///
    /// # Safety
    /// `V::ISA`'s features are enabled; `s.a`, `s.b` hold `s.kc` steps; `c` holds `MR` rows of
    /// `LANES·NV` floats `ldc` apart.
    #[inline(always)]
    unsafe fn block_body<V: Vector, const MR: usize, const NV: usize>(
        s: KBlock<'_>,
        c: *mut f32,
        ldc: usize,
    ) {
        let (a, b, nrr, lanes) = (s.a.as_ptr(), s.b.as_ptr(), V::LANES * NV, V::LANES);
        // SAFETY (every operation): the features are enabled (the contract).
        let mut acc = [[unsafe { V::zero() }; NV]; MR];
        if s.load {
            // Each row's partial sums from earlier k-blocks, `NV` vectors.
            for (i, row) in acc.iter_mut().enumerate() {
                for (v, r) in row.iter_mut().enumerate() {
                    // SAFETY: row `i < MR` of `c` holds `LANES·NV` floats.
                    *r = unsafe { V::load(c.add(i * ldc + lanes * v)) };
                }
            }
        }
        // One k step at a time, in order (so each entry is one FMA chain).
        for k in 0..s.kc {
            // SAFETY: k < kc and the panels hold kc steps.
            unsafe {
                let bk = b.add(k * nrr);
                let mut bv = [V::zero(); NV];
                // The `NV` vectors of `b[k]`.
                for (v, x) in bv.iter_mut().enumerate() {
                    *x = V::load(bk.add(lanes * v));
                }
                let ak = a.add(k * MR);
                // Row `i` broadcasts `a[k][i]` against each of them.
                for (i, row) in acc.iter_mut().enumerate() {
                    let x = V::broadcast(ak.add(i));
                    for (r, &y) in row.iter_mut().zip(&bv) {
                        *r = x.fmadd(y, *r);
                    }
                }
            }
        }
        let scale = unsafe { V::splat(s.scale) };
        // Scaled once, on the way out.
        for (i, row) in acc.iter().enumerate() {
            for (v, &r) in row.iter().enumerate() {
                // SAFETY: row `i < MR` of `c` holds `LANES·NV` floats.
                unsafe { scale.mul(r).store(c.add(i * ldc + lanes * v)) };
            }
        }
    }
}
