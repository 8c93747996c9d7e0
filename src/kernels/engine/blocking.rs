//! Block sizes of the loop nest (the `gemm` module), derived once per process from the caches.
//!
//! The caches are read once ([`Caches::detected`]: Linux's sysfs, else CPUID on x86-64, else
//! [`Caches::FALLBACK`]); [`Blocks::derive`] turns them into a micro-kernel's blocks. Nothing
//! else in the crate reads the caches.
//!
//! # Bits
//! Only blocks that cannot change a bit follow the caches: `KC` (partial sums are carried
//! across k-blocks in `C`, in `k` order, so every entry is the same FMA chain whatever `KC`)
//! and the blocking of the outer loops (`MC` rows, `NC` columns: they only choose which entries
//! are computed first, never an entry's chain). The register block `MR x NR` and the fused
//! kernels' tile (`TILE_ROWS x TILE_COLS`, whose partials negCLIPLoss merges per row block) are
//! fixed: the same on every CPU. The gemm tests check that different blocks give the same bits.
//!
//! # The formula
//! As BLIS, one operand per cache level, each one level further out than in BLIS's analytical
//! model (Low et al., "Analytical modeling is enough for high-performance BLIS", TOMS 2016),
//! because our micro-kernels can stream their operands from L2:
//!
//! * `KC = min(1024, (L2 / 2) / (4 (MR + NR)))`, a multiple of 64: one micro-kernel call's
//!   operands (an `A` and a `B` micro-panel, `KC (MR + NR)` floats) take at most half of L2,
//!   the other half keeping the 256 KiB tile of `C` that the fused epilogue reads back;
//! * `MC = L2 / (4 KC)` rows (a multiple of `MR`): the row block's k-block of `A`, re-read once
//!   per `B` micro-panel, stays in L2;
//! * `NC = (L3 / CPUs sharing it) / (4 KC)` columns (a multiple of `NR`): the k-block of `B`'s
//!   columns, re-read once per row block, stays in this core's share of L3.
//!
//! BLIS takes `KC` from L1 instead (the `B` micro-panel stays in L1 while the `A` micro-panels
//! pass): Low et al.'s rule gives `KC = 256` for the AVX-512 8 x 32 block on Zen 5's 48 KiB
//! 12-way L1 and 170 for the AVX2 6 x 16 block on Zen 2's 32 KiB 8-way L1. Measured, those are
//! slower than one k-block of 1024: 386-400 against 405-434 GFLOP/s for a negCLIPLoss batch of
//! 4096 at d = 512 / 768 on Zen 5 (AVX-512, both cores, two rounds), and 84.4 against 86.9
//! GFLOP/s (median of 15, interleaved, on a busy machine) for one 256-row block against 4096
//! packed columns at d = 768 on Zen 2 (AVX2, one core; KC = 384 / 512 / 768: 85.3 / 84.9 /
//! 87.2, 768 being the same single k-block as 1024 there). Our blocks
//! need `4 (MR + NR)` bytes per `MR NR / LANES / 2` cycles at two FMAs per cycle, 20 bytes per
//! cycle for 8 x 32 and 15 for 6 x 16, within what L2 delivers to L1 (64 and 32 bytes per
//! cycle on these cores): the `B` micro-panel need not stay in L1, and what a shorter k-block
//! costs is the micro-kernel's work per call (loading and storing its `MR x NR` partial sums,
//! entering and leaving the loop) once more per k-block.
//!
//! The recorded per-CPU constants, checked by the tests against the formula:
//!
//! | CPU | L1d / L2 / L3 | kernel | KC | MC | measured |
//! |---|---|---|---|---|---|
//! | AMD EPYC Zen 5 (family 26), AVX-512 | 48 KiB / 1 MiB / 32 MiB (L3 assumed) | 8 x 32 | 1024 | 256 | KC 1024 best of 128-1024; the 256-row tiles unsplit |
//! | AMD EPYC Zen 2 (family 23), AVX2 | 32 KiB / 512 KiB / 16 MiB | 6 x 16 | 1024 | 126 | KC 1024 best of 256-1024; MC 66 / 126 / 256 within 1% |
//!
//! `KC` is the cap on both: 1024 is the longest k-block measured (and as long as any embedding
//! width or Gram block here, so one k-block per product). The caches set a shorter one only
//! when L2 is under `8 KiB (MR + NR)` (320 KiB for 8 x 32, 176 KiB for 6 x 16).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

use super::micro::MicroKernel;

/// The data caches one core sees: sizes in bytes of one instance of each level, and how many
/// logical CPUs share the last level.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caches {
    /// Level 1 data cache.
    pub l1d: usize,
    /// Level 2 (unified).
    pub l2: usize,
    /// Level 3 (unified); `0` when there is none.
    pub l3: usize,
    /// Logical CPUs sharing one L3 (`>= 1`).
    pub l3_sharing: usize,
    /// Where the sizes come from: `"sysfs"`, `"cpuid"` or `"fallback"`.
    pub source: &'static str,
}

impl Caches {
    /// When neither sysfs nor CPUID says (another OS on another architecture): a common
    /// server core of the last decade.
    pub const FALLBACK: Caches =
        Caches { l1d: 32 << 10, l2: 1 << 20, l3: 16 << 20, l3_sharing: 8, source: "fallback" };

    /// This CPU's caches (those of CPU 0), read once per process.
    pub fn detected() -> &'static Caches {
        static CACHES: OnceLock<Caches> = OnceLock::new();
        CACHES.get_or_init(|| {
            Caches::from_sysfs(std::path::Path::new("/sys/devices/system/cpu/cpu0/cache"))
                .or_else(from_cpuid)
                .unwrap_or(Caches::FALLBACK)
        })
    }

    /// The caches described under `dir` (`index*/{level,type,size,shared_cpu_list}`, as Linux
    /// lays out `/sys/devices/system/cpu/cpu0/cache`); `None` without an L1 data cache and an
    /// L2.
    pub fn from_sysfs(dir: &std::path::Path) -> Option<Caches> {
        let read = |p: std::path::PathBuf| std::fs::read_to_string(p).ok();
        let levels = std::fs::read_dir(dir).ok()?.filter_map(|e| {
            let p = e.ok()?.path();
            let kind = read(p.join("type"))?;
            let level = read(p.join("level"))?.trim().parse::<u32>().ok()?;
            let size = parse_size(&read(p.join("size"))?)?;
            let sharing = read(p.join("shared_cpu_list")).map_or(1, |s| cpu_count(&s));
            Some(Level { level, data: kind.trim() != "Instruction", size, sharing })
        });
        Caches::from_levels(levels, "sysfs")
    }

    fn from_levels(levels: impl IntoIterator<Item = Level>, source: &'static str) -> Option<Caches> {
        let mut c = Caches { l1d: 0, l2: 0, l3: 0, l3_sharing: 1, source };
        for l in levels.into_iter().filter(|l| l.data && l.size > 0) {
            match l.level {
                1 => c.l1d = l.size,
                2 => c.l2 = l.size,
                3 => (c.l3, c.l3_sharing) = (l.size, l.sharing.max(1)),
                _ => {}
            }
        }
        (c.l1d > 0 && c.l2 > 0).then_some(c)
    }
}

/// One cache as sysfs or CPUID describe it.
struct Level {
    level: u32,
    /// A data or unified cache (not an instruction cache).
    data: bool,
    size: usize,
    /// Logical CPUs sharing it.
    sharing: usize,
}

/// `"48K"`, `"1024K"`, `"32M"` or a plain number of bytes.
fn parse_size(s: &str) -> Option<usize> {
    let s = s.trim();
    let (num, unit) = match s.as_bytes().last()? {
        b'K' | b'k' => (&s[..s.len() - 1], 1 << 10),
        b'M' | b'm' => (&s[..s.len() - 1], 1 << 20),
        b'G' | b'g' => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    num.trim().parse::<usize>().ok()?.checked_mul(unit)
}

/// The number of CPUs in a list such as `"0-3,8,10-11"` (at least 1).
fn cpu_count(list: &str) -> usize {
    let count = |r: &str| match r.split_once('-') {
        Some((a, b)) => {
            b.trim().parse::<usize>().ok()?.checked_sub(a.trim().parse::<usize>().ok()?).map(|n| n + 1)
        }
        None => r.trim().parse::<usize>().ok().map(|_| 1),
    };
    list.trim().split(',').filter_map(count).sum::<usize>().max(1)
}

/// The caches from CPUID's deterministic cache parameters (leaf 4 on Intel, 0x8000_001D on AMD:
/// the same layout).
#[cfg(target_arch = "x86_64")]
fn from_cpuid() -> Option<Caches> {
    use std::arch::x86_64::{__cpuid, __cpuid_count};
    // A leaf is read only when the maximum leaf of its range reports it.
    let amd = __cpuid(0x8000_0000).eax >= 0x8000_001D && {
        let v = __cpuid(0);
        (v.ebx, v.edx, v.ecx) == (0x6874_7541, 0x6974_6E65, 0x444D_4163) // "AuthenticAMD"
    };
    let leaf = if amd { 0x8000_001D } else { 4 };
    if !amd && __cpuid(0).eax < 4 {
        return None;
    }
    let levels = (0..16).map_while(|i| {
        let r = __cpuid_count(leaf, i);
        let kind = r.eax & 0x1F;
        (kind != 0).then(|| {
            let field = |v: u32, lo: u32, bits: u32| ((v >> lo) & ((1 << bits) - 1)) as usize + 1;
            let size =
                field(r.ebx, 22, 10) * field(r.ebx, 12, 10) * field(r.ebx, 0, 12) * (r.ecx as usize + 1);
            Level { level: (r.eax >> 5) & 7, data: kind != 2, size, sharing: field(r.eax, 14, 12) }
        })
    });
    Caches::from_levels(levels.collect::<Vec<_>>(), "cpuid")
}

#[cfg(not(target_arch = "x86_64"))]
fn from_cpuid() -> Option<Caches> {
    None
}

/// The block sizes of the loop nest for one micro-kernel (see the module notes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Blocks {
    /// Steps of `k` per k-block (BLIS loop 4).
    pub kc: usize,
    /// Rows of `A` per block (loop 3): a multiple of `MR`.
    pub mc: usize,
    /// Columns (rows of `B`) per block (loop 5): a multiple of `NR`.
    pub nc: usize,
}

/// `KC` asked for by [`set_kc`] (0: derived from the caches).
static KC_OVERRIDE: AtomicUsize = AtomicUsize::new(0);

/// Use k-blocks of `kc` from the next product on (`0`: back to the caches' value), for
/// measurements and tests. It changes speed only, never a bit.
pub fn set_kc(kc: usize) {
    KC_OVERRIDE.store(kc, Ordering::Relaxed);
}

impl Blocks {
    /// The blocks of micro-kernel `K` on this CPU (`KC` as [`set_kc`] asks, if it does).
    pub fn of<K: MicroKernel>() -> Blocks {
        let b = Blocks::derive(Caches::detected(), K::MR, K::NR);
        match KC_OVERRIDE.load(Ordering::Relaxed) {
            0 => b,
            kc => Blocks { kc, ..b },
        }
    }

    /// The blocks for an `mr x nr` register block on a CPU with `caches` (the formula, see the
    /// module notes).
    pub fn derive(caches: &Caches, mr: usize, nr: usize) -> Blocks {
        const F32: usize = std::mem::size_of::<f32>();
        // KC: one call's operands, an A and a B micro-panel, in half of L2.
        let kc = (caches.l2 / 2 / (F32 * (mr + nr)) / KC_STEP * KC_STEP).clamp(KC_STEP, KC_MAX);
        // MC: the row block's k-block of A in L2.
        let mc = (caches.l2 / (F32 * kc) / mr * mr).max(mr);
        // NC: the k-block of B's columns in this core's share of L3 (no blocking without L3).
        let nc = match caches.l3 {
            0 => usize::MAX / 2 / nr * nr,
            l3 => (l3 / caches.l3_sharing.max(1) / (F32 * kc) / nr * nr).max(nr),
        };
        Blocks { kc, mc, nc }
    }
}

/// The longest k-block: the longest measured (see the module notes).
pub const KC_MAX: usize = 1024;
/// k-blocks are a multiple of this (and at least this long).
const KC_STEP: usize = 64;

#[cfg(test)]
mod tests {
    use super::*;

    const KIB: usize = 1 << 10;

    #[test]
    fn sizes_and_cpu_lists_parse() {
        assert_eq!(parse_size("48K\n"), Some(48 * KIB));
        assert_eq!(parse_size("32M"), Some(32 << 20));
        assert_eq!(parse_size("512"), Some(512));
        assert_eq!(parse_size("x"), None);
        assert_eq!(cpu_count("0-3,8,10-11\n"), 7);
        assert_eq!(cpu_count("0"), 1);
        assert_eq!(cpu_count(""), 1);
    }

    /// A sysfs cache directory with `(level, type, size, shared_cpu_list)` entries.
    fn fake_sysfs(name: &str, entries: &[(u32, &str, &str, &str)]) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("polars-curate-caches-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for (i, (level, kind, size, shared)) in entries.iter().enumerate() {
            let d = dir.join(format!("index{i}"));
            std::fs::create_dir_all(&d).unwrap();
            for (file, v) in
                [("level", level.to_string()), ("type", kind.to_string()), ("size", size.to_string())]
            {
                std::fs::write(d.join(file), format!("{v}\n")).unwrap();
            }
            std::fs::write(d.join("shared_cpu_list"), shared).unwrap();
        }
        dir
    }

    #[test]
    fn sysfs_is_read() {
        let dir = fake_sysfs(
            "zen2",
            &[
                (1, "Data", "32K", "0"),
                (1, "Instruction", "32K", "0"),
                (2, "Unified", "512K", "0"),
                (3, "Unified", "16384K", "0-1"),
            ],
        );
        let c = Caches::from_sysfs(&dir).unwrap();
        assert_eq!(c, Caches { l1d: 32 * KIB, l2: 512 * KIB, l3: 16 << 20, l3_sharing: 2, source: "sysfs" });
        // Without an L2 there is nothing to derive from.
        let dir = fake_sysfs("l1only", &[(1, "Data", "32K", "0")]);
        assert_eq!(Caches::from_sysfs(&dir), None);
        assert_eq!(Caches::from_sysfs(&dir.join("missing")), None);
    }

    #[test]
    fn this_cpu() {
        let c = Caches::detected();
        let cpuid = from_cpuid();
        println!("caches ({}): {c:?}; cpuid: {cpuid:?}", c.source);
        assert!(c.l1d > 0 && c.l1d <= c.l2);
        if let Some(id) = cpuid {
            assert!(id.l1d > 0 && id.l1d <= id.l2, "{id:?}");
        }
        for kernel in crate::kernels::testutil::kernels() {
            let b = crate::kernels::engine::dispatch::with_kernel!(kernel, k => blocks_of(k));
            println!("{kernel}: {b:?}");
            assert!(b.kc >= KC_STEP && b.kc <= KC_MAX && b.mc > 0 && b.nc > 0);
        }
    }

    fn blocks_of<K: MicroKernel>(_: K) -> Blocks {
        Blocks::of::<K>()
    }

    /// The fused scores (negCLIPLoss, NormSim for p = inf, 3 and 2 with its Gram matrix, the
    /// nearest row) give the same bits with other k-blocks, through the override every product
    /// reads. Tests running meanwhile see it too, which changes none of their bits either.
    #[test]
    fn scores_do_not_depend_on_kc() {
        use crate::kernels::scores::negclip::{neg_clip_loss, NegClipParams};
        use crate::kernels::scores::normsim::{nearest, normsim, Power, Target};
        use crate::kernels::testutil::{kernels, Inputs};
        let inp = Inputs::new(300, 300, 200, 11);
        let params = NegClipParams { batch_size: 300, num_batches: 2, ..NegClipParams::default() };
        let bits = |v: Vec<Option<f32>>| v.into_iter().map(|x| x.map(f32::to_bits)).collect::<Vec<_>>();
        for kernel in kernels() {
            let run = || {
                let mut out = vec![bits(neg_clip_loss(kernel, &inp.xm(), &inp.tm(), &params))];
                for p in [f64::INFINITY, 3.0, 2.0] {
                    let target = Target::prepare(kernel, &inp.tm(), Power::from_p(p), true).unwrap();
                    out.push(bits(normsim(&inp.xm(), &target, true)));
                }
                let target = Target::prepare(kernel, &inp.tm(), Power::from_p(f64::INFINITY), true).unwrap();
                (out, nearest(&inp.xm(), &target, true))
            };
            set_kc(0);
            let want = run();
            for kc in [64, 129, 199] {
                set_kc(kc);
                let got = run();
                set_kc(0);
                assert!(got == want, "{kernel}: KC = {kc} changed the bits");
            }
        }
    }

    /// The formula against the constants measured per CPU (the table in the module notes).
    #[test]
    fn formula_gives_the_recorded_constants() {
        let zen5 = Caches { l1d: 48 * KIB, l2: 1 << 20, l3: 32 << 20, l3_sharing: 8, source: "sysfs" };
        let zen2 = Caches { l1d: 32 * KIB, l2: 512 * KIB, l3: 16 << 20, l3_sharing: 4, source: "sysfs" };
        #[cfg(target_arch = "x86_64")]
        {
            use crate::kernels::engine::micro::{Avx2, Avx512};
            assert_eq!((Avx512::MR, Avx512::NR, Avx2::MR, Avx2::NR), (8, 32, 6, 16));
        }
        // Zen 5, AVX-512 8 x 32: KC 1024, and the 256-row tiles are not split.
        let b = Blocks::derive(&zen5, 8, 32);
        assert_eq!((b.kc, b.mc), (1024, 256));
        assert!(b.nc >= 1024, "{b:?}");
        // Zen 2, AVX2 6 x 16: KC 1024, rows of A in blocks of 126 (its L2 holds 128 rows of 1024).
        let b = Blocks::derive(&zen2, 6, 16);
        assert_eq!((b.kc, b.mc), (1024, 126));
        assert!(b.nc >= 1024, "{b:?}");
        // The portable 6 x 8 block on either.
        assert_eq!(Blocks::derive(&zen2, 6, 8).kc, 1024);
        // Where the caches shorten KC: a 256 KiB L2 for 8 x 32 (128 KiB / 160 B = 819 steps).
        let small = Caches { l2: 256 * KIB, ..zen5 };
        assert_eq!(Blocks::derive(&small, 8, 32), Blocks { kc: 768, mc: 80, nc: 1344 });
        // No L3: columns are not blocked; a tiny L2: the shortest k-block.
        let tiny = Caches { l2: 16 * KIB, l3: 0, ..zen2 };
        let b = Blocks::derive(&tiny, 6, 16);
        assert_eq!((b.kc, b.mc), (KC_STEP, 60));
        assert!(b.nc > 1 << 40);
    }
}
