//! Branch-free `f32` math that the compiler vectorises: dot products with a fixed summation
//! order, `exp` and `ln` (Cephes polynomials, relative error about 2e-7 in the ranges used).
//!
//! Why hand-written: `f32::exp`/`ln` are libm calls that do not vectorise, and the fused
//! epilogues evaluate one or two of them per entry of every `B x B` tile. No well-kept crate
//! offers slice-free, inlinable SIMD `exp`/`ln` that compile into our loops on stable Rust.
//!
//! Determinism: a function's result depends only on its inputs and on the build it runs in
//! (see [`simd_fn!`]): the AVX2 and AVX-512 builds evaluate the `exp`/`ln` polynomials with
//! fused multiply-adds (the same operations in the same order, so the same bits), the portable
//! build with `*` and `+`. Dot products, maxima and lane sums use plain `*`/`+` in every build.

use super::micro::Mode;

/// Defines a function whose body is compiled once per instruction set, with its
/// `#[inline(always)]` helpers inlined so that their loops vectorise for it. Two forms:
///
/// * `fn name<K>(kernel: K, args..)`: the epilogue of a kernel's products, compiled for that
///   kernel's instruction set with `M = K::Mode`. The build is chosen by the type `K` (the
///   call's kernel, picked once per call by [`crate::kernels::engine::dispatch::with_kernel!`]), never
///   by a
///   test of its own; the `kernel` witness proves the CPU has the instruction set.
/// * `fn name(args..)`: a helper whose bits must not depend on the kernel (`M = Plain` in every
///   build, so `M::mul_add` is two roundings everywhere): the instruction set only changes its
///   speed. Runs in the process's kernel's build ([`crate::kernels::engine::isa::helper_isa`]).
///
/// The AVX-512 builds really use 512-bit vectors: the generic x86-64 tuning does not cap the
/// vector width, and `objdump -d` of the benches shows `zmm` loops in `reduce_tile`, `pow_tile`,
/// `max_abs_tile`, `sum_sq_tile` and `dot_tile` (`ymm` in their AVX2 builds). What keeps them whole
/// is written at [`hsum`] and [`tail`].
macro_rules! simd_fn {
    ($(#[$m:meta])* $vis:vis fn $name:ident<K>($kw:ident : K $(, $arg:ident : $ty:ty)* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$m])*
        #[inline]
        #[allow(clippy::too_many_arguments)]
        $vis fn $name<K: $crate::kernels::engine::micro::MicroKernel>($kw: K $(, $arg: $ty)*) $(-> $ret)? {
            #[inline(always)]
            #[allow(unused, clippy::extra_unused_type_parameters, clippy::too_many_arguments)]
            fn body<M: $crate::kernels::engine::micro::Mode>($($arg: $ty),*) $(-> $ret)? $body
            let _ = $kw;
            match K::ISA {
                #[cfg(target_arch = "x86_64")]
                $crate::kernels::engine::isa::Isa::Avx512 | $crate::kernels::engine::isa::Isa::Amx => {
                    #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
                    #[allow(clippy::too_many_arguments)]
                    unsafe fn avx512<M: $crate::kernels::engine::micro::Mode>($($arg: $ty),*) $(-> $ret)? {
                        body::<M>($($arg),*)
                    }
                    // SAFETY: a `K` witness exists, so the CPU has `K::ISA`'s features.
                    unsafe { avx512::<K::Mode>($($arg),*) }
                }
                #[cfg(target_arch = "x86_64")]
                $crate::kernels::engine::isa::Isa::Avx2 => {
                    #[target_feature(enable = "avx2,fma")]
                    #[allow(clippy::too_many_arguments)]
                    unsafe fn avx2<M: $crate::kernels::engine::micro::Mode>($($arg: $ty),*) $(-> $ret)? {
                        body::<M>($($arg),*)
                    }
                    // SAFETY: a `K` witness exists, so the CPU has AVX2 and FMA.
                    unsafe { avx2::<K::Mode>($($arg),*) }
                }
                _ => body::<K::Mode>($($arg),*),
            }
        }
    };
    ($(#[$m:meta])* $vis:vis fn $name:ident($($arg:ident : $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$m])*
        #[allow(clippy::too_many_arguments)]
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            #[allow(unused, clippy::extra_unused_type_parameters, clippy::too_many_arguments)]
            fn body<M: $crate::kernels::engine::micro::Mode>($($arg: $ty),*) $(-> $ret)? $body
            match $crate::kernels::engine::isa::helper_isa() {
                #[cfg(target_arch = "x86_64")]
                $crate::kernels::engine::isa::Isa::Avx512 | $crate::kernels::engine::isa::Isa::Amx => {
                    #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")]
                    #[allow(clippy::too_many_arguments)]
                    unsafe fn avx512($($arg: $ty),*) $(-> $ret)? {
                        body::<$crate::kernels::engine::micro::Plain>($($arg),*)
                    }
                    // SAFETY: `helper_isa` is the instruction set of a kernel this CPU runs.
                    unsafe { avx512($($arg),*) }
                }
                #[cfg(target_arch = "x86_64")]
                $crate::kernels::engine::isa::Isa::Avx2 => {
                    #[target_feature(enable = "avx2,fma")]
                    #[allow(clippy::too_many_arguments)]
                    unsafe fn avx2($($arg: $ty),*) $(-> $ret)? {
                        body::<$crate::kernels::engine::micro::Plain>($($arg),*)
                    }
                    // SAFETY: as above.
                    unsafe { avx2($($arg),*) }
                }
                _ => body::<$crate::kernels::engine::micro::Plain>($($arg),*),
            }
        }
    };
}
pub(crate) use simd_fn;

const LANES: usize = 16;

/// Sums 16 lanes pairwise in a fixed order.
///
/// Deliberately not inlined (the same bits either way): inlined, this reduction tree makes
/// LLVM's SLP vectorizer cut the 16-lane loops that feed it into 128-bit pieces (seen in the
/// disassembly of the AVX-512 builds); called, those loops stay whole `zmm`/`ymm` vectors.
#[inline(never)]
pub fn hsum(mut acc: [f32; LANES]) -> f32 {
    let mut w = LANES / 2;
    while w > 0 {
        for l in 0..w {
            acc[l] += acc[l + w];
        }
        w /= 2;
    }
    acc[0]
}

/// `sum_k a[k] * b[k]` over the shorter length, accumulated in 16 lanes then summed pairwise:
/// the same bits for the same inputs on every call.
#[inline(always)]
pub fn dot_inline(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0f32; LANES];
    let ca = a.chunks_exact(LANES);
    let cb = b.chunks_exact(LANES);
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        let x: &[f32; LANES] = x.try_into().expect("chunk of 16");
        let y: &[f32; LANES] = y.try_into().expect("chunk of 16");
        for l in 0..LANES {
            acc[l] += x[l] * y[l];
        }
    }
    let (x, y) = (tail(ra, 0.0), tail(rb, 0.0));
    for l in 0..LANES {
        if l < ra.len() {
            acc[l] += x[l] * y[l];
        }
    }
    hsum(acc)
}

/// The last `r.len() < 16` values of a row, padded with `pad` to 16 lanes: remainders are
/// handled with constant lane indices (a masked update), so the accumulators stay in
/// registers; indexing them by a run-time lane number would force them to memory and keep the
/// main loop from vectorising.
#[inline(always)]
pub fn tail(r: &[f32], pad: f32) -> [f32; LANES] {
    let mut t = [pad; LANES];
    t[..r.len()].copy_from_slice(r);
    t
}

simd_fn! {
    /// [`dot_inline`] in the process kernel's build (the same bits in every build).
    pub fn dot(a: &[f32], b: &[f32]) -> f32 {
        dot_inline(a, b)
    }
}

// The polynomial coefficients are Cephes' published values, kept digit for digit.
#[allow(clippy::excessive_precision)]
/// `e^x` for `x` in `[-87, 88]`; exactly `0` below `-87` (so `exp(-inf) == 0`: a term that
/// small is below `f32`'s normal range, and every sum we form holds a term `>= 1`), and
/// `e^88` above `88`.
#[inline(always)]
pub fn exp<M: Mode>(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const MAGIC: f32 = 12_582_912.0; // 1.5 * 2^23: adding it rounds to an integer
    let tiny = x < -87.0;
    let x = x.clamp(-87.0, 88.0);
    let t = M::mul_add(x, LOG2E, MAGIC);
    let n = t - MAGIC;
    let ni = (t.to_bits() as i32).wrapping_sub(0x4B40_0000);
    // Cody–Waite: ln 2 = 0.693359375 - 2.12194440e-4, the first part exact in f32.
    let r = M::mul_add(n, 2.121_944_4e-4, M::mul_add(n, -0.693_359_4, x));
    let mut p = 1.987_569_1e-4f32;
    p = M::mul_add(p, r, 1.398_199_9e-3);
    p = M::mul_add(p, r, 8.333_452e-3);
    p = M::mul_add(p, r, 4.166_579_6e-2);
    p = M::mul_add(p, r, 1.666_666_5e-1);
    p = M::mul_add(p, r, 5.000_000_1e-1);
    let y = M::mul_add(p * r, r, r) + 1.0;
    let v = y * f32::from_bits(((ni + 127) as u32) << 23);
    if tiny {
        0.0
    } else {
        v
    }
}

#[allow(clippy::excessive_precision)]
/// Natural log for positive normal `x` (zero gives about `-87.3`, not `-inf`).
#[inline(always)]
pub fn ln<M: Mode>(x: f32) -> f32 {
    const SQRT_HALF: f32 = std::f32::consts::FRAC_1_SQRT_2;
    let bits = x.to_bits();
    let mut e = ((bits >> 23) & 0xff) as i32 - 126;
    let m0 = f32::from_bits((bits & 0x807f_ffff) | 0x3f00_0000); // mantissa in [0.5, 1)
    let small = m0 < SQRT_HALF;
    e -= small as i32;
    let m = if small { m0 + m0 } else { m0 } - 1.0;
    let z = m * m;
    let mut y = 7.037_683_6e-2f32;
    y = M::mul_add(y, m, -1.151_461_1e-1);
    y = M::mul_add(y, m, 1.167_699_9e-1);
    y = M::mul_add(y, m, -1.242_014_1e-1);
    y = M::mul_add(y, m, 1.424_932_3e-1);
    y = M::mul_add(y, m, -1.666_805_8e-1);
    y = M::mul_add(y, m, 2.000_071_4e-1);
    y = M::mul_add(y, m, -2.499_999_4e-1);
    y = M::mul_add(y, m, 3.333_333_1e-1);
    y = y * m * z;
    let fe = e as f32;
    y = M::mul_add(fe, -2.121_944_4e-4, y);
    y = M::mul_add(-0.5, z, y);
    M::mul_add(fe, 0.693_359_4, m + y)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::engine::micro::{Fused, Plain};

    /// The worst `err(got, want)` over `xs`, with `got = f(x)` and `want = reference(x)` in `f64`.
    fn worst(
        xs: impl Iterator<Item = f32>,
        f: impl Fn(f32) -> f32,
        reference: impl Fn(f64) -> f64,
        err: impl Fn(f64, f64) -> f64,
    ) -> f64 {
        xs.map(|x| err(f(x) as f64, reference(x as f64))).fold(0f64, f64::max)
    }

    #[test]
    fn exp_is_accurate() {
        let xs = || (0..=200_000).map(|i| -87.0 + 175.0 * (i as f32) / 200_000.0);
        let relative = |got: f64, want: f64| ((got - want) / want).abs();
        for worst in
            [worst(xs(), exp::<Plain>, f64::exp, relative), worst(xs(), exp::<Fused>, f64::exp, relative)]
        {
            assert!(worst < 5e-7, "worst relative error {worst}");
        }
        assert_eq!(exp::<Plain>(0.0), 1.0);
        assert_eq!(exp::<Fused>(0.0), 1.0);
        assert_eq!(exp::<Plain>(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp::<Fused>(-87.5), 0.0);
    }

    #[test]
    fn ln_is_accurate() {
        let xs = || (1..=200_000).map(|i| 1e-30f32 * 1.0005f32.powi(i % 140_000) + i as f32 * 1e-3);
        let error = |got: f64, want: f64| (got - want).abs() / want.abs().max(1.0);
        for worst in [worst(xs(), ln::<Plain>, f64::ln, error), worst(xs(), ln::<Fused>, f64::ln, error)] {
            assert!(worst < 5e-7, "worst error {worst}");
        }
        assert_eq!(ln::<Plain>(1.0), 0.0);
    }

    #[test]
    fn exp_in_every_kernel_build() {
        use crate::kernels::engine::dispatch::with_kernel;
        use crate::kernels::engine::isa::Isa;
        use crate::kernels::testutil::kernels;
        let x: Vec<f32> =
            (0..=20_000).map(|i| -87.0 + 175.0 * i as f32 / 20_000.0).chain([-90.0, 0.0]).collect();
        let mut fused: Option<Vec<f32>> = None;
        for kernel in kernels() {
            let mut y = vec![f32::NAN; x.len()];
            with_kernel!(kernel, k => exp_slice(k, &x, &mut y));
            for (&a, &b) in x.iter().zip(&y) {
                let want = if a < -87.0 { 0.0 } else { f64::from(a).exp() };
                assert!((f64::from(b) - want).abs() <= 5e-7 * want, "{kernel} exp({a}) = {b}");
            }
            // Every fused build evaluates the same polynomial with the same FMAs: the same bits.
            if kernel.isa() != Isa::Portable {
                match &fused {
                    Some(f) => assert_eq!(f, &y, "{kernel}"),
                    None => fused = Some(y),
                }
            }
        }
    }

    #[test]
    fn dot_matches_naive_and_both_builds_agree() {
        for n in [0usize, 1, 15, 16, 17, 127, 128, 129, 768] {
            let a: Vec<f32> = (0..n).map(|i| ((i * 7919) % 13) as f32 - 6.0).collect();
            let b: Vec<f32> = (0..n).map(|i| ((i * 104_729) % 11) as f32 * 0.5).collect();
            let naive: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
            assert_eq!(dot(&a, &b), naive, "n = {n}"); // small integers: exact either way
            assert_eq!(dot(&a, &b).to_bits(), dot_inline(&a, &b).to_bits());
        }
    }
}

/// Online log-sum-exp state of one row or column: the value is `max + ln(sum)` where every
/// term was stored as `exp(v - max)`. Merging keeps `sum <= count` and never overflows.
#[derive(Clone, Copy, Debug)]
pub struct Lse {
    pub max: f32,
    pub sum: f64,
}

impl Lse {
    pub const EMPTY: Lse = Lse { max: f32::NEG_INFINITY, sum: 0.0 };

    /// Adds a partial `(max, sum)` computed elsewhere (e.g. over one tile).
    #[inline]
    pub fn merge(&mut self, max: f32, sum: f64) {
        if max == f32::NEG_INFINITY {
            return;
        }
        if max > self.max {
            self.sum = self.sum * f64::from(self.max - max).exp() + sum;
            self.max = max;
        } else {
            self.sum += sum * f64::from(max - self.max).exp();
        }
    }

    /// `ln(sum_j exp(v_j))`; `-inf` when nothing was added.
    #[inline]
    pub fn value(&self) -> f64 {
        f64::from(self.max) + self.sum.ln()
    }
}

/// Elementwise `max` that the vectoriser turns into `maxps` (no NaN semantics needed: inputs
/// are finite).
#[inline(always)]
pub fn fmax(a: f32, b: f32) -> f32 {
    if a > b {
        a
    } else {
        b
    }
}

/// The maximum of 16 lanes (not inlined, for the reason given at [`hsum`]).
#[inline(never)]
pub fn hmax(mut acc: [f32; LANES]) -> f32 {
    let mut w = LANES / 2;
    while w > 0 {
        for l in 0..w {
            acc[l] = fmax(acc[l], acc[l + w]);
        }
        w /= 2;
    }
    acc[0]
}

/// `max_j v[j]` in 16 lanes.
#[inline(always)]
pub fn max_inline(v: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let c = v.chunks_exact(LANES);
    let r = tail(c.remainder(), f32::NEG_INFINITY);
    for x in c {
        let x: &[f32; LANES] = x.try_into().expect("chunk of 16");
        for l in 0..LANES {
            acc[l] = fmax(acc[l], x[l]);
        }
    }
    for l in 0..LANES {
        acc[l] = fmax(acc[l], r[l]);
    }
    hmax(acc)
}

/// `sum_j exp(v[j] - m)` in 16 lanes.
#[inline(always)]
pub fn sum_exp_inline<M: Mode>(v: &[f32], m: f32) -> f32 {
    let mut acc = [0f32; LANES];
    let c = v.chunks_exact(LANES);
    let (r, k) = (tail(c.remainder(), m), c.remainder().len());
    for x in c {
        let x: &[f32; LANES] = x.try_into().expect("chunk of 16");
        for l in 0..LANES {
            acc[l] += exp::<M>(x[l] - m);
        }
    }
    for l in 0..LANES {
        if l < k {
            acc[l] += exp::<M>(r[l] - m);
        }
    }
    hsum(acc)
}

#[cfg(test)]
mod lse_tests {
    use super::*;
    use crate::kernels::engine::micro::Plain;

    #[test]
    fn lse_merge_matches_direct() {
        let v: Vec<f32> = (0..1000).map(|i| ((i * 37) % 101) as f32 * 0.9 - 40.0).collect();
        let want = v.iter().map(|&x| f64::from(x).exp()).sum::<f64>().ln();
        let mut s = Lse::EMPTY;
        for part in v.chunks(64) {
            let m = max_inline(part);
            s.merge(m, f64::from(sum_exp_inline::<Plain>(part, m)));
        }
        assert!((s.value() - want).abs() < 1e-6, "{} vs {want}", s.value());
        assert_eq!(Lse::EMPTY.value(), f64::NEG_INFINITY);
    }
}

simd_fn! {
    /// `y[i] = exp(x[i])` in `kernel`'s build (the benchmark of [`exp`]'s throughput).
    pub fn exp_slice<K>(kernel: K, x: &[f32], y: &mut [f32]) {
        for (o, &v) in y.iter_mut().zip(x) {
            *o = exp::<M>(v);
        }
    }
}
