//! The tile shape shared by the fused kernels (negCLIPLoss, NormSim): each row block of
//! `TILE_ROWS` rows is packed once (see [`super::packed`]) and walks the columns in tiles of
//! `TILE_COLS`, each reduced while it is in cache.

use super::packed::NR;

/// Rows of `A` per tile (a row block of negCLIPLoss / NormSim).
pub const TILE_ROWS: usize = 256;
/// Rows of `B` (columns of `C`) per tile. The tile `C` is 256 x 256 floats = 256 KiB: it stays
/// in the 1 MiB L2 while the epilogue reads it back. A multiple of `packed::NR`.
pub const TILE_COLS: usize = 256;

const _: () = assert!(TILE_COLS.is_multiple_of(NR));
