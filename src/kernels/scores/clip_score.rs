//! CLIPScore: `s_ii = <x_i, t_i> / (||x_i|| ||t_i||)` per row (docs/methods.md#clipscore).
//!
//! Memory-bound: one pass over both matrices, three dot products per row (`x.x`, `t.t`, `x.t`)
//! accumulated in 16 `f32` lanes. Rows are independent, so results do not depend on how the
//! input is split.

use rayon::prelude::*;

use crate::kernels::engine::fastmath::{dot_inline, simd_fn};
use crate::kernels::matrix::{Matrix, SS_HI, SS_LO};

/// Rows per parallel task: big enough to hide scheduling, small enough to balance two cores.
const CHUNK: usize = 2048;

/// `x.t`, `x.x`, `t.t` of one pair of rows.
#[inline(always)]
fn pair_dots(x: &[f32], t: &[f32]) -> (f32, f32, f32) {
    (dot_inline(x, t), dot_inline(x, x), dot_inline(t, t))
}

/// Cosine (or, without `normalize`, the raw dot product) of `x` and `t`, computed in `f32`,
/// when both squared norms lie in `[SS_LO, SS_HI]` (every realistic embedding); `None`
/// otherwise, and the caller takes [`pair_score_wide`].
#[inline(always)]
fn pair_score_fast(x: &[f32], t: &[f32], normalize: bool) -> Option<f32> {
    let (xt, xx, tt) = pair_dots(x, t);
    let ok = |v: f32| (SS_LO..=SS_HI).contains(&v);
    if !(ok(xx) && ok(tt) && xt.is_finite()) {
        return None;
    }
    Some(if normalize { (xt as f64 / (xx as f64 * tt as f64).sqrt()) as f32 } else { xt })
}

/// The same score in `f64` from each row's exact values and [`Matrix::row_scale`] factor: any
/// finite vectors score like their directions, whatever their magnitude.
#[cold]
fn pair_score_wide(image: &Matrix, i: usize, text: &Matrix, j: usize, normalize: bool) -> Option<f32> {
    let d = image.dim();
    let mut scratch = vec![0f32; d];
    let sx = image.row_scale(i, normalize, &mut scratch)?;
    let st = text.row_scale(j, normalize, &mut scratch)?;
    let (mut x, mut t) = (vec![0f64; d], vec![0f64; d]);
    image.load_row_f64(i, &mut x);
    text.load_row_f64(j, &mut t);
    Some(x.iter().zip(&t).map(|(a, b)| (a * sx) * (b * st)).sum::<f64>() as f32)
}

/// CLIPScore of image row `i` and text row `j`: `None` where either row is null or unusable
/// (see [`Matrix::row_scale`]). Shared with negCLIPLoss so that its `s_ii` is bit-identical to
/// `clip_score`.
#[inline(always)]
pub(crate) fn pair_score(
    image: &Matrix,
    i: usize,
    text: &Matrix,
    j: usize,
    normalize: bool,
    xs: &mut [f32],
    ts: &mut [f32],
) -> Option<f32> {
    if !(image.is_valid(i) && text.is_valid(j)) {
        return None;
    }
    if let Some(v) = pair_score_fast(image.row(i, xs), text.row(j, ts), normalize) {
        return Some(v);
    }
    pair_score_wide(image, i, text, j, normalize)
}

simd_fn! {
    fn score_rows(image: &Matrix, text: &Matrix, start: usize, normalize: bool, xs: &mut [f32], ts: &mut [f32], out: &mut [Option<f32>]) {
        // A one-row side is broadcast against every row of the other.
        let (bx, bt) = (image.rows() == 1, text.rows() == 1);
        for (k, o) in out.iter_mut().enumerate() {
            let (i, j) = (if bx { 0 } else { start + k }, if bt { 0 } else { start + k });
            *o = pair_score(image, i, text, j, normalize, xs, ts);
        }
    }
}

/// CLIPScore of every row. `image` and `text` have the same width and either the same number
/// of rows or one row (broadcast). Returns one entry per output row, `None` where a row is
/// null, holds a NaN/infinity, or (with `normalize`) is a zero vector.
pub fn clip_score(image: &Matrix, text: &Matrix, normalize: bool) -> Vec<Option<f32>> {
    debug_assert_eq!(image.dim(), text.dim());
    let n = if image.rows() == 1 { text.rows() } else { image.rows() };
    let d = image.dim();
    let mut out = vec![None; n];
    out.par_chunks_mut(CHUNK).enumerate().for_each(|(c, dst)| {
        let (mut xs, mut ts) = (vec![0f32; d], vec![0f32; d]);
        score_rows(image, text, c * CHUNK, normalize, &mut xs, &mut ts, dst);
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::Values;

    #[test]
    fn cosine_and_bad_rows() {
        let x = [1.0f32, 0.0, 3.0, 4.0, 1.0, 1.0, f32::NAN, 0.0];
        let t = [1.0f32, 1.0, 3.0, 4.0, 0.0, 0.0, 1.0, 0.0];
        let mask = [true, true, true, true];
        let xm = Matrix::new(Values::F32(&x), 4, 2, Some(&mask)).unwrap();
        let tm = Matrix::new(Values::F32(&t), 4, 2, None).unwrap();
        let s = clip_score(&xm, &tm, true);
        assert!((s[0].unwrap() - std::f32::consts::FRAC_1_SQRT_2).abs() < 1e-7);
        assert_eq!(s[1], Some(1.0));
        assert_eq!(s[2], None); // zero text vector
        assert_eq!(s[3], None); // NaN
        let raw = clip_score(&xm, &tm, false);
        assert_eq!(raw[1], Some(25.0));
        assert_eq!(raw[2], Some(0.0));
    }

    #[test]
    fn broadcast_one_row() {
        let x = [1.0f32, 0.0];
        let t = [1.0f32, 0.0, 0.0, 2.0, 1.0, 1.0];
        let xm = Matrix::new(Values::F32(&x), 1, 2, None).unwrap();
        let tm = Matrix::new(Values::F32(&t), 3, 2, None).unwrap();
        let s = clip_score(&xm, &tm, true);
        assert_eq!(s.len(), 3);
        assert_eq!(s[0], Some(1.0));
        assert_eq!(s[1], Some(0.0));
    }

    #[test]
    fn magnitudes_score_like_directions() {
        let (x, t) = ([0.6f64, 0.8], [1.0f64, 0.0]);
        for mag in [1e20f64, 1e-25, 1e-36] {
            let xs: Vec<f32> = x.iter().map(|v| (v * mag) as f32).collect();
            let ts: Vec<f32> = t.iter().map(|v| (v * mag) as f32).collect();
            let xm = Matrix::new(Values::F32(&xs), 1, 2, None).unwrap();
            let tm = Matrix::new(Values::F32(&ts), 1, 2, None).unwrap();
            let s = clip_score(&xm, &tm, true)[0].unwrap();
            assert!((s - 0.6).abs() < 1e-6, "{mag}: {s}");
        }
        for mag in [1e200f64, 1e-200] {
            let xs: Vec<f64> = x.iter().map(|v| v * mag).collect();
            let ts: Vec<f64> = t.iter().map(|v| v * mag).collect();
            let xm = Matrix::new(Values::F64(&xs), 1, 2, None).unwrap();
            let tm = Matrix::new(Values::F64(&ts), 1, 2, None).unwrap();
            let s = clip_score(&xm, &tm, true)[0].unwrap();
            assert!((s - 0.6).abs() < 1e-6, "{mag}: {s}");
        }
    }
}
