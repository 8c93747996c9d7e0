//! The tile shape shared by the fused kernels (negCLIPLoss, NormSim): each row block of
//! `TILE_ROWS` rows is packed once (see [`super::pack`]) and walks the columns in tiles of
//! `TILE_COLS`, each reduced while it is in cache.
//!
//! The same for every kernel: negCLIPLoss merges its column partials per row block, so equal
//! blocks are what lets the AVX2 and AVX-512 kernels give the same bits (their blocks of 6 and
//! 8 rows both tile 256 rows with at most one partial micro-panel).

use super::micro::MicroKernel;

/// Rows of `A` per tile (a row block of negCLIPLoss / NormSim).
pub const TILE_ROWS: usize = 256;
/// Rows of `B` (columns of `C`) per tile. The tile `C` is 256 x 256 floats = 256 KiB: it stays
/// in the 1 MiB L2 while the epilogue reads it back. A multiple of every kernel's `NR`.
pub const TILE_COLS: usize = 256;

/// Compile-time check (use as `const { tile::check::<K>() }`) that `K`'s micro-panels tile
/// [`TILE_COLS`].
pub const fn check<K: MicroKernel>() {
    assert!(TILE_COLS.is_multiple_of(K::NR), "TILE_COLS must be a multiple of the kernel's NR");
}
