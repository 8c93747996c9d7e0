//! A read-only view of an `n x d` embedding matrix in any of the float widths users store
//! (DataComp ships float16), plus row loading with on-the-fly conversion and L2 normalisation.
//!
//! Rows are converted to `f32` a block at a time (never the whole matrix), so a float16 pool
//! costs its own size in memory plus one block of `f32`.

use std::fmt;

use half::f16;
use rayon::prelude::*;

use super::fastmath::dot;

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
    /// `1 / ||row||` computed in `f32` from the `f32`-converted row; without it, `1`.
    pub fn row_scale(&self, i: usize, normalize: bool, scratch: &mut [f32]) -> Option<f32> {
        if !self.is_valid(i) {
            return None;
        }
        let r = self.row(i, scratch);
        let ss = dot(r, r);
        if !ss.is_finite() {
            return None;
        }
        if normalize {
            if ss > 0.0 {
                Some(1.0 / ss.sqrt())
            } else {
                None
            }
        } else {
            Some(1.0)
        }
    }

    /// `row_scale` of every row, computed in parallel on the current rayon pool.
    pub fn scales(&self, normalize: bool) -> Vec<Option<f32>> {
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

    /// Writes row `rows[k]` times `scale_of(rows[k])` into `dst[k * dim..]`; rows without a
    /// scale are written as zeros.
    pub fn gather_scaled(&self, rows: &[usize], scale_of: impl Fn(usize) -> Option<f32>, dst: &mut [f32]) {
        let d = self.dim;
        for (&i, out) in rows.iter().zip(dst.chunks_exact_mut(d)) {
            match scale_of(i) {
                Some(s) => {
                    self.load_row(i, out);
                    for x in out.iter_mut() {
                        *x *= s;
                    }
                }
                None => out.fill(0.0),
            }
        }
    }
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
}
