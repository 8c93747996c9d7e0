//! A read-only view of an `n x d` embedding matrix in any of the float widths users store
//! (DataComp ships float16), plus row loading with on-the-fly conversion and L2 normalisation.
//!
//! Rows are converted to `f32` a block at a time (never the whole matrix), so a float16 pool
//! costs its own size in memory plus one block of `f32`.

use std::fmt;

use half::f16;
use rayon::prelude::*;

use super::engine::fastmath::dot;

/// The flat values of a row-major matrix.
#[derive(Clone, Copy, Debug)]
pub enum Values<'a> {
    F16(&'a [f16]),
    F32(&'a [f32]),
    F64(&'a [f64]),
}

impl Values<'_> {
    pub fn len(&self) -> usize {
        match self {
            Values::F16(v) => v.len(),
            Values::F32(v) => v.len(),
            Values::F64(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The flat buffer does not hold `rows * dim` values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShapeError {
    pub rows: usize,
    pub dim: usize,
    pub len: usize,
}

impl fmt::Display for ShapeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "expected {} x {} = {} values, got {}",
            self.rows,
            self.dim,
            self.rows.saturating_mul(self.dim),
            self.len
        )
    }
}

impl std::error::Error for ShapeError {}

/// An `rows x dim` row-major matrix with an optional per-row mask (`false` = null row).
#[derive(Clone, Copy, Debug)]
pub struct Matrix<'a> {
    values: Values<'a>,
    rows: usize,
    dim: usize,
    mask: Option<&'a [bool]>,
}

impl<'a> Matrix<'a> {
    /// Checks that `values` holds exactly `rows * dim` numbers and `mask` (if any) `rows` flags.
    pub fn new(
        values: Values<'a>,
        rows: usize,
        dim: usize,
        mask: Option<&'a [bool]>,
    ) -> Result<Self, ShapeError> {
        let expected = rows.checked_mul(dim);
        if expected != Some(values.len()) || mask.is_some_and(|m| m.len() != rows) {
            return Err(ShapeError { rows, dim, len: values.len() });
        }
        Ok(Self { values, rows, dim, mask })
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn dim(&self) -> usize {
        self.dim
    }

    /// False when row `i` is masked out (null).
    #[inline]
    pub fn is_valid(&self, i: usize) -> bool {
        self.mask.is_none_or(|m| m[i])
    }

    /// Converts row `i` to `f32` into `dst` (`dst.len() == dim`).
    #[inline]
    pub fn load_row(&self, i: usize, dst: &mut [f32]) {
        let d = self.dim;
        let r = i * d..(i + 1) * d;
        match self.values {
            Values::F16(v) => {
                // `half` uses F16C when the CPU has it (runtime detection).
                use half::slice::HalfFloatSliceExt;
                v[r].convert_to_f32_slice(dst);
            }
            Values::F32(v) => dst.copy_from_slice(&v[r]),
            Values::F64(v) => {
                for (o, x) in dst.iter_mut().zip(&v[r]) {
                    *o = *x as f32;
                }
            }
        }
    }

    /// Row `i` as `f64` (exact for every input width) into `dst` (`dst.len() == dim`).
    pub fn load_row_f64(&self, i: usize, dst: &mut [f64]) {
        let d = self.dim;
        let r = i * d..(i + 1) * d;
        match self.values {
            Values::F16(v) => dst.iter_mut().zip(&v[r]).for_each(|(o, x)| *o = f64::from(*x)),
            Values::F32(v) => dst.iter_mut().zip(&v[r]).for_each(|(o, x)| *o = f64::from(*x)),
            Values::F64(v) => dst.copy_from_slice(&v[r]),
        }
    }

    /// Row `i` as `f32`: borrowed when the matrix is `f32`, else converted into `scratch`.
    #[inline]
    pub fn row<'s>(&'s self, i: usize, scratch: &'s mut [f32]) -> &'s [f32] {
        match self.values {
            Values::F32(v) => &v[i * self.dim..(i + 1) * self.dim],
            _ => {
                self.load_row(i, scratch);
                scratch
            }
        }
    }

    /// The factor that makes row `i` usable, or `None` when the row is null, holds a NaN or an
    /// infinity, or (with `normalize`) has zero norm. With `normalize` the factor is
    /// `1 / ||row||`; without it, `1` (and a row whose values or squared norm exceed the `f32`
    /// range, where products are computed, is unusable).
    ///
    /// Any finite vector is usable when normalising, whatever its magnitude (`1e20` or `1e-25` in
    /// `f32`, `1e±300` in `f64`): the common case (squared norm in `[2^-60, 2^60]`) is computed
    /// in `f32` from the converted row; other rows take a scaled `f64` path that can neither
    /// overflow nor underflow. The factor is an `f64` because it may lie outside the `f32`
    /// range; [`Matrix::gather_scaled`] applies it before rounding to `f32`.
    pub fn row_scale(&self, i: usize, normalize: bool, scratch: &mut [f32]) -> Option<f64> {
        if !self.is_valid(i) {
            return None;
        }
        if let Values::F64(v) = self.values {
            return scale_f64(&v[i * self.dim..(i + 1) * self.dim], normalize);
        }
        let r = self.row(i, scratch);
        let ss = dot(r, r);
        if (SS_LO..=SS_HI).contains(&ss) {
            return Some(if normalize { f64::from(1.0 / ss.sqrt()) } else { 1.0 });
        }
        if !normalize {
            return (ss.is_finite() && r.iter().all(|x| x.is_finite())).then_some(1.0);
        }
        // f32 values squared neither overflow nor underflow in f64.
        if !r.iter().all(|x| x.is_finite()) {
            return None;
        }
        let ss: f64 = r.iter().map(|&x| f64::from(x) * f64::from(x)).sum();
        (ss > 0.0).then(|| 1.0 / ss.sqrt())
    }

    /// `row_scale` of every row, computed in parallel on the current rayon pool.
    pub fn scales(&self, normalize: bool) -> Vec<Option<f64>> {
        const CHUNK: usize = 1024;
        let mut out = vec![None; self.rows];
        out.par_chunks_mut(CHUNK).enumerate().for_each(|(c, dst)| {
            let mut scratch = vec![0f32; self.dim];
            for (k, o) in dst.iter_mut().enumerate() {
                *o = self.row_scale(c * CHUNK + k, normalize, &mut scratch);
            }
        });
        out
    }

    /// Writes row `rows[k]` times `scale_of(rows[k])` into `dst[k * dim..]`, rounded to `f32`;
    /// rows without a scale are written as zeros. Scales in the `f32` range multiply in `f32`
    /// (the common case, bit for bit what a plain `f32` product gives); others, and `f64`
    /// values, multiply in `f64` before rounding.
    pub fn gather_scaled(&self, rows: &[usize], scale_of: impl Fn(usize) -> Option<f64>, dst: &mut [f32]) {
        let d = self.dim;
        for (&i, out) in rows.iter().zip(dst.chunks_exact_mut(d)) {
            match (scale_of(i), self.values) {
                (None, _) => out.fill(0.0),
                (Some(s), Values::F64(v)) => {
                    for (o, &x) in out.iter_mut().zip(&v[i * d..(i + 1) * d]) {
                        *o = (x * s) as f32;
                    }
                }
                (Some(s), _) if (SCALE_LO..=SCALE_HI).contains(&s) => {
                    self.load_row(i, out);
                    let s = s as f32;
                    for x in out.iter_mut() {
                        *x *= s;
                    }
                }
                (Some(s), _) => {
                    self.load_row(i, out);
                    for x in out.iter_mut() {
                        *x = (f64::from(*x) * s) as f32;
                    }
                }
            }
        }
    }
}

/// Squared norms (in `f32`) for which the `f32` norm is exact to rounding: far from overflow,
/// and large enough that elements whose squares underflow cannot matter.
pub const SS_LO: f32 = 8.673_617e-19; // 2^-60
pub const SS_HI: f32 = 1.152_921_5e18; // 2^60
/// Scales applied in `f32` (see [`Matrix::gather_scaled`]).
const SCALE_LO: f64 = 1.0 / (1u64 << 40) as f64;
const SCALE_HI: f64 = (1u64 << 40) as f64;

/// Largest element of an `f64` row below which the row counts as zero (2^-1000, about 9e-302).
pub const TINY_F64: f64 = 9.332_636_185_032_189e-302;

/// [`Matrix::row_scale`] of an `f64` row: `1 / ||row||` through `max |x|` so that no square
/// overflows or underflows; without `normalize`, `1` when the row fits `f32` products.
fn scale_f64(row: &[f64], normalize: bool) -> Option<f64> {
    let mut big = 0f64;
    for &x in row {
        if !x.is_finite() {
            return None;
        }
        big = big.max(x.abs());
    }
    if !normalize {
        // Products run in f32: the values and their squared norm must stay in its range.
        let ss: f64 = row.iter().map(|x| x * x).sum();
        return (ss <= f64::from(f32::MAX)).then_some(1.0);
    }
    // Below 2^-1000 the factor `1 / big` would leave the f64 range: such a row is treated as
    // the zero vector (documented).
    if big < TINY_F64 {
        return None;
    }
    let inv = 1.0 / big;
    let ss: f64 = row.iter().map(|&x| (x * inv).powi(2)).sum();
    Some(inv / ss.sqrt())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_is_checked() {
        let v = [1.0f32; 6];
        assert!(Matrix::new(Values::F32(&v), 2, 3, None).is_ok());
        let e = Matrix::new(Values::F32(&v), 2, 4, None).unwrap_err();
        assert_eq!(e.to_string(), "expected 2 x 4 = 8 values, got 6");
        assert!(Matrix::new(Values::F32(&v), 2, 3, Some(&[true])).is_err());
        assert!(Matrix::new(Values::F32(&v), usize::MAX, 3, None).is_err());
    }

    #[test]
    fn scales_flag_bad_rows() {
        let v = [3.0f64, 4.0, 0.0, 0.0, f64::NAN, 1.0, 1.0, f64::INFINITY, 1.0, 0.0];
        let mask = [true, true, true, true, false];
        let m = Matrix::new(Values::F64(&v), 5, 2, Some(&mask)).unwrap();
        let s = m.scales(true);
        assert_eq!(s[0], Some(0.2));
        assert_eq!(s[1], None); // zero vector
        assert_eq!(s[2], None); // NaN
        assert_eq!(s[3], None); // infinity
        assert_eq!(s[4], None); // masked
        let raw = m.scales(false);
        assert_eq!(raw[1], Some(1.0)); // a zero vector is fine without normalising
    }

    #[test]
    fn f16_rows_convert() {
        let v: Vec<f16> = [1.0f32, -2.0, 0.5, 8.0].iter().map(|&x| f16::from_f32(x)).collect();
        let m = Matrix::new(Values::F16(&v), 2, 2, None).unwrap();
        let mut dst = [0f32; 4];
        let scales = [None, Some(2.0)];
        m.gather_scaled(&[1, 0], |i| scales[i], &mut dst);
        assert_eq!(dst, [1.0, 16.0, 0.0, 0.0]);
    }

    // (Subnormal f32 inputs, e.g. 1e-40, are themselves rounded to a few bits: their direction
    // is not `dir`, so they are left out here; they are still usable.)
    #[test]
    fn any_finite_magnitude_normalises_to_its_direction() {
        let dir = [0.6f64, -0.8, 0.0];
        let expect = |got: &[f32]| {
            for (g, w) in got.iter().zip(dir) {
                assert!((f64::from(*g) - w).abs() < 1e-6, "{got:?}");
            }
        };
        for mag in [1.0f64, 1e20, 1e-25, 1e-36, 3e37] {
            let v: Vec<f32> = dir.iter().map(|x| (x * mag) as f32).collect();
            let m = Matrix::new(Values::F32(&v), 1, 3, None).unwrap();
            let s = m.scales(true);
            let mut out = [0f32; 3];
            m.gather_scaled(&[0], |i| s[i], &mut out);
            expect(&out);
        }
        for mag in [1e200f64, 1e-200, 1e300, 1e-290, f64::MAX / 2.0] {
            let v: Vec<f64> = dir.iter().map(|x| x * mag).collect();
            let m = Matrix::new(Values::F64(&v), 1, 3, None).unwrap();
            let s = m.scales(true);
            let mut out = [0f32; 3];
            m.gather_scaled(&[0], |i| s[i], &mut out);
            expect(&out);
            // Without normalising, values beyond f32 cannot take part in f32 products.
            assert_eq!(m.scales(false)[0].is_some(), mag < 1e18, "{mag}");
        }
        let v: Vec<f64> = dir.iter().map(|x| x * 1e-305).collect();
        assert_eq!(Matrix::new(Values::F64(&v), 1, 3, None).unwrap().scales(true), [None]);
    }
}
