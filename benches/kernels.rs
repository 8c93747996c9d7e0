//! Rust micro-benchmarks of the kernels (no Polars, no Python): `make bench-rust`.
//!
//! Every benchmark runs once per kernel type; a kernel this CPU lacks prints `SKIPPED <name>`
//! and measures nothing. The register blocks and k-blocks other than the chosen ones
//! (`PortableBlock<MR, NR>`, `Avx512Block<MR, NV>`: `MR x 16·NV`) are there to re-run the
//! measurements written next to `micro::Portable` and `micro::Avx512`, and `negclip_batch_kc`
//! those of the k-block (`engine::blocking`).
//!
//! Throughput is reported as items/s where one item is one floating-point operation of the
//! matrix product (2·m·n·k), i.e. divan's "items/s" column reads as FLOP/s.

use divan::counter::ItemsCount;
use divan::Bencher;
use polars_curate::kernels::engine::blocking::set_kc;
use polars_curate::kernels::engine::gemm::gemm_packed;
use polars_curate::kernels::engine::micro::{Avx2, Avx512Block, MicroKernel, Portable, PortableBlock};
use polars_curate::kernels::engine::pack::{Lhs, Packed, Rhs};
use polars_curate::kernels::engine::tile::{TILE_COLS, TILE_ROWS};
use polars_curate::kernels::runtime::threads::pool;
use polars_curate::kernels::scores::negclip::{batch_lse_sum, neg_clip_loss, NegClipParams};
use polars_curate::kernels::scores::normsim::{normsim, Power, Target};
use polars_curate::kernels::{Matrix, Values};

fn main() {
    divan::main();
}

/// The witness of `K`, or `None` (and a line saying so) when this CPU lacks it.
fn witness<K: MicroKernel>() -> Option<K> {
    let k = K::detect();
    if k.is_none() {
        eprintln!("SKIPPED {}: this CPU lacks it", std::any::type_name::<K>());
    }
    k
}

fn unit_rows(n: usize, d: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    let mut v: Vec<f32> = (0..n * d)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) - 0.5
        })
        .collect();
    for r in v.chunks_mut(d) {
        let norm = r.iter().map(|x| x * x).sum::<f32>().sqrt();
        r.iter_mut().for_each(|x| *x /= norm);
    }
    v
}

type Portable6x16 = PortableBlock<6, 16>;
type Portable4x8 = PortableBlock<4, 8>;
type Avx512x6x64 = Avx512Block<6, 4>;
type Avx512x8x32 = Avx512Block<8, 2>;
type Avx512x12x32 = Avx512Block<12, 2>;
type Avx512x14x32 = Avx512Block<14, 2>;

/// One row block (256 rows) against 4096 pre-packed columns on one core: the micro-kernel's
/// rate in the loop nest, without packing or epilogue.
#[divan::bench(types = [Portable, Portable6x16, Portable4x8, Avx2, Avx512x6x64, Avx512x8x32, Avx512x12x32, Avx512x14x32], args = [512, 768])]
fn gemm_row_block_one_core<K: MicroKernel>(bencher: Bencher, d: usize) {
    let Some(k) = witness::<K>() else { return };
    let cols = 4096;
    let a = Packed::<K, Lhs>::new(k, &unit_rows(TILE_ROWS, d, 1), TILE_ROWS, d);
    let b = Packed::<K, Rhs>::new(k, &unit_rows(cols, d, 2), cols, d);
    let mut c = vec![0f32; TILE_ROWS * TILE_COLS];
    bencher.counter(ItemsCount::new(2 * TILE_ROWS * cols * d)).bench_local(|| {
        for c0 in (0..cols).step_by(TILE_COLS) {
            gemm_packed(&a, &b, c0, TILE_COLS, 100.0, &mut c);
        }
    });
}

/// One tile on one core, both operands packed by the call (the unshared-operand path).
#[divan::bench(types = [Portable, Avx2, Avx512x8x32], args = [512, 768])]
fn tile_gemm_one_core<K: MicroKernel>(bencher: Bencher, d: usize) {
    let Some(k) = witness::<K>() else { return };
    let a = unit_rows(TILE_ROWS, d, 1);
    let b = unit_rows(TILE_COLS, d, 2);
    let mut c = vec![0f32; TILE_ROWS * TILE_COLS];
    bencher.counter(ItemsCount::new(2 * TILE_ROWS * TILE_COLS * d)).bench_local(|| {
        let (ap, bp) =
            (Packed::<K, Lhs>::new(k, &a, TILE_ROWS, d), Packed::<K, Rhs>::new(k, &b, TILE_COLS, d));
        gemm_packed(&ap, &bp, 0, TILE_COLS, 100.0, &mut c)
    });
}

/// The GEMM of one negCLIPLoss batch without its epilogue (every tile computed, nothing
/// reduced), all cores: the ceiling that `negclip_batch` can reach.
#[divan::bench(types = [Portable, Avx2, Avx512x6x64, Avx512x8x32, Avx512x12x32, Avx512x14x32], args = [512, 768])]
fn gemm_batch_only<K: MicroKernel>(bencher: Bencher, d: usize) {
    use rayon::prelude::*;
    let Some(k) = witness::<K>() else { return };
    let b = 4096;
    let x = unit_rows(b, d, 3);
    let t = Packed::<K, Rhs>::new(k, &unit_rows(b, d, 4), b, d);
    bencher.counter(ItemsCount::new(2 * b * b * d)).bench(|| {
        pool().install(|| {
            x.par_chunks(TILE_ROWS * d).for_each(|xb| {
                let rows = xb.len() / d;
                let xp = Packed::<K, Lhs>::new(k, xb, rows, d);
                let mut tile = vec![0f32; rows * TILE_COLS];
                for c0 in (0..b).step_by(TILE_COLS) {
                    let cols = TILE_COLS.min(b - c0);
                    gemm_packed(&xp, &t, c0, cols, 100.0, &mut tile);
                }
                std::hint::black_box(&tile);
            })
        })
    });
}

/// One negCLIPLoss batch of 4096 (GEMM + row and column log-sum-exp), all cores.
#[divan::bench(types = [Portable, Avx2, Avx512x6x64, Avx512x8x32, Avx512x12x32, Avx512x14x32], args = [512, 768])]
fn negclip_batch<K: MicroKernel>(bencher: Bencher, d: usize) {
    let Some(k) = witness::<K>() else { return };
    let b = 4096;
    let x = unit_rows(b, d, 3);
    let t = Packed::<K, Rhs>::new(k, &unit_rows(b, d, 4), b, d);
    bencher.counter(ItemsCount::new(2 * b * b * d)).bench(|| {
        let load_x = |r0: usize, n: usize, dst: &mut [f32]| dst.copy_from_slice(&x[r0 * d..(r0 + n) * d]);
        pool().install(|| batch_lse_sum(&load_x, &t, 100.0))
    });
}

/// `negclip_batch` at d = 768 with k-blocks of 256, 384, 512 and 1024 (this CPU's own is in
/// `negclip_batch`): the measurements of `engine::blocking`'s notes.
#[divan::bench(types = [Portable, Avx2, Avx512x8x32], args = [256, 384, 512, 1024])]
fn negclip_batch_kc<K: MicroKernel>(bencher: Bencher, kc: usize) {
    set_kc(kc);
    negclip_batch::<K>(bencher, 768);
    set_kc(0);
}

/// Whole negCLIPLoss on float16 input (conversion, partitions, K = 2), all cores.
#[divan::bench(types = [Portable, Avx2, Avx512x8x32])]
fn negclip_f16<K: MicroKernel>(bencher: Bencher) {
    let Some(k) = witness::<K>() else { return };
    let (n, d) = (4096, 512);
    let x: Vec<half::f16> = unit_rows(n, d, 5).into_iter().map(half::f16::from_f32).collect();
    let t: Vec<half::f16> = unit_rows(n, d, 6).into_iter().map(half::f16::from_f32).collect();
    let (xm, tm) = (
        Matrix::new(Values::F16(&x), n, d, None).unwrap(),
        Matrix::new(Values::F16(&t), n, d, None).unwrap(),
    );
    let p = NegClipParams { batch_size: n, num_batches: 2, ..NegClipParams::default() };
    bencher
        .counter(ItemsCount::new(2 * n * n * d * 2))
        .bench(|| pool().install(|| neg_clip_loss(k.kernel(), &xm, &tm, &p)));
}

/// Whole negCLIPLoss on float32 input, one partition: compare with `negclip_batch` to see the
/// cost of everything around the batch (norms, CLIPScore, permutation, gathers).
#[divan::bench(types = [Portable, Avx2, Avx512x8x32])]
fn negclip_f32_k1<K: MicroKernel>(bencher: Bencher) {
    let Some(k) = witness::<K>() else { return };
    let (n, d) = (4096, 768);
    let x = unit_rows(n, d, 9);
    let t = unit_rows(n, d, 10);
    let (xm, tm) = (
        Matrix::new(Values::F32(&x), n, d, None).unwrap(),
        Matrix::new(Values::F32(&t), n, d, None).unwrap(),
    );
    let p = NegClipParams { batch_size: n, num_batches: 1, ..NegClipParams::default() };
    bencher
        .counter(ItemsCount::new(2 * n * n * d))
        .bench(|| pool().install(|| neg_clip_loss(k.kernel(), &xm, &tm, &p)));
}

/// NormSim against 4096 targets for p = inf, 2 (Gram), 2.5 and 3, all cores.
#[divan::bench(types = [Portable, Avx2, Avx512x8x32], args = ["inf", "2", "2.5", "3"])]
fn normsim_4096<K: MicroKernel>(bencher: Bencher, p: &str) {
    let Some(k) = witness::<K>() else { return };
    let (n, m, d) = (4096, 4096, 768);
    let x = unit_rows(n, d, 7);
    let t = unit_rows(m, d, 8);
    let power = Power::from_p(p.parse().unwrap());
    let tm = Matrix::new(Values::F32(&t), m, d, None).unwrap();
    let target = Target::prepare(k.kernel(), &tm, power, true).unwrap();
    let xm = Matrix::new(Values::F32(&x), n, d, None).unwrap();
    let flops = if power == Power::Two { 2 * n * d * d } else { 2 * n * m * d };
    bencher.counter(ItemsCount::new(flops)).bench(|| pool().install(|| normsim(&xm, &target, true)));
}

/// The negCLIPLoss epilogue alone on one 256 x 256 tile (one core): items = tile entries.
#[divan::bench(types = [Portable, Avx2, Avx512x8x32])]
fn negclip_epilogue_one_core<K: MicroKernel>(bencher: Bencher) {
    use polars_curate::kernels::engine::fastmath::Lse;
    use polars_curate::kernels::scores::negclip::reduce_tile;
    let Some(k) = witness::<K>() else { return };
    let z: Vec<f32> = (0..TILE_ROWS * TILE_COLS).map(|i| ((i * 7919) % 1000) as f32 * 0.05).collect();
    let mut row = vec![Lse::EMPTY; TILE_ROWS];
    let (mut cm, mut cs) = (vec![0f32; TILE_COLS], vec![0f32; TILE_COLS]);
    bencher
        .counter(ItemsCount::new(TILE_ROWS * TILE_COLS))
        .bench_local(|| reduce_tile(k, &z, TILE_ROWS, TILE_COLS, &mut row, &mut cm, &mut cs));
}

/// Throughput of the vectorised `exp` (items = elements).
#[divan::bench(types = [Portable, Avx2, Avx512x8x32])]
fn fast_exp_one_core<K: MicroKernel>(bencher: Bencher) {
    use polars_curate::kernels::engine::fastmath::exp_slice;
    let Some(k) = witness::<K>() else { return };
    let x: Vec<f32> = (0..65536).map(|i| -((i % 1000) as f32) * 0.05).collect();
    let mut y = vec![0f32; x.len()];
    bencher.counter(ItemsCount::new(x.len())).bench_local(|| exp_slice(k, &x, &mut y));
}

/// Preparing a NormSim_2 target: its Gram matrix (upper triangle, f64 waves) packed as the
/// triangular factor, all cores; items = the useful flops 2·m·d².
#[divan::bench(types = [Portable, Avx2, Avx512x8x32])]
fn gram_prepare_16384<K: MicroKernel>(bencher: Bencher) {
    let Some(k) = witness::<K>() else { return };
    let (m, d) = (16384, 768);
    let t = unit_rows(m, d, 11);
    let tm = Matrix::new(Values::F32(&t), m, d, None).unwrap();
    bencher
        .counter(ItemsCount::new(2 * m * d * d))
        .bench(|| pool().install(|| Target::prepare(k.kernel(), &tm, Power::Two, true).unwrap()));
}

/// CLIPScore of 400,000 pairs at d = 768 (memory-bound: 2.4 GB read), all cores; items = pairs.
#[divan::bench]
fn clip_score_400k(bencher: Bencher) {
    use polars_curate::kernels::scores::clip_score::clip_score;
    let (n, d) = (400_000, 768);
    let x = unit_rows(n, d, 12);
    let t = unit_rows(n, d, 13);
    let (xm, tm) = (
        Matrix::new(Values::F32(&x), n, d, None).unwrap(),
        Matrix::new(Values::F32(&t), n, d, None).unwrap(),
    );
    bencher.counter(ItemsCount::new(n)).bench(|| pool().install(|| clip_score(&xm, &tm, true)));
}
