//! The thin layer: every `#[polars_expr]` unpacks its inputs, checks what Polars cannot check
//! for us (dtypes, widths, row counts), calls one kernel and wraps the result as a Series.
//!
//! Argument-level problems (`batch_size < 1`, ...) are rejected in Python when the expression is
//! built; everything that depends on the data is checked here and returned as a
//! `ComputeError` naming the argument. Nothing here may panic on user data: a panic that escapes
//! a plugin leaves the user with an opaque error at best, so each body also runs under
//! `catch_unwind` and any bug surfaces as an error with its message.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};

use polars::prelude::*;
use polars_arrow::array::{FixedSizeListArray, PrimitiveArray};
use pyo3_polars::derive::polars_expr;
use serde::Deserialize;

use crate::kernels::clipcov::{clipcov as clipcov_kernel, ClipCovParams};
use crate::kernels::dynamic::{normsim2_dynamic as dynamic_kernel, DynamicParams};
use crate::kernels::isa::Kernel;
use crate::kernels::negclip::{neg_clip_loss as neg_clip_loss_kernel, NegClipParams};
use crate::kernels::normsim::{nearest, normsim as normsim_kernel};
use crate::kernels::{clip_score::clip_score as clip_score_kernel, pool::pool, Keep, Matrix, Values};
use crate::targets;

/// Polars' float16 (`polars_utils::float16::pf16`, a `repr(transparent)` `half::f16`).
type PlF16 = <Float16Type as PolarsNumericType>::Native;

/// An embedding column ready to be viewed as a [`Matrix`]: one contiguous chunk plus a row mask.
pub(crate) struct Embeddings {
    array: FixedSizeListArray,
    width: usize,
    mask: Option<Vec<bool>>,
}

impl Embeddings {
    /// Checks that `s` is `Array(Float16|Float32|Float64, d)` and makes it one chunk. `arg` names
    /// the argument in error messages.
    pub(crate) fn new(s: &Series, arg: &str) -> PolarsResult<Self> {
        let name = s.name();
        let (inner, width) = match s.dtype() {
            DataType::Array(inner, width) => (inner.as_ref().clone(), *width),
            DataType::List(inner) => polars_bail!(
                ComputeError: "`{arg}` (column \"{name}\") is a List column; embeddings must be fixed-width Arrays: \
                 use pl.col(\"{name}\").cast(pl.Array(pl.{inner:?}, width))"
            ),
            other => polars_bail!(
                ComputeError: "`{arg}` (column \"{name}\") must be an Array of Float16, Float32 or Float64, got {other}"
            ),
        };
        if !matches!(inner, DataType::Float16 | DataType::Float32 | DataType::Float64) {
            polars_bail!(
                ComputeError: "`{arg}` (column \"{name}\") must be an Array of Float16, Float32 or Float64, got Array({inner}, {width}); \
                 cast it, e.g. pl.col(\"{name}\").cast(pl.Array(pl.Float32, {width}))"
            );
        }
        if width == 0 {
            polars_bail!(ComputeError: "`{arg}` (column \"{name}\") has width 0; embeddings need at least one dimension");
        }
        let ca = s.array()?.rechunk();
        let n = ca.len();
        let array = match ca.downcast_iter().next() {
            Some(a) => a.clone(),
            None => FixedSizeListArray::new_empty(ArrowDataType::FixedSizeList(
                Box::new(ArrowField::new("item".into(), inner.to_arrow(CompatLevel::newest()), true)),
                width,
            )),
        };
        let row_valid = array.validity();
        let inner_valid = array.values().validity().filter(|v| v.unset_bits() > 0);
        let mask = if row_valid.is_some_and(|v| v.unset_bits() > 0) || inner_valid.is_some() {
            Some(
                (0..n)
                    .map(|i| {
                        row_valid.is_none_or(|v| v.get_bit(i))
                            && inner_valid.is_none_or(|v| (i * width..(i + 1) * width).all(|k| v.get_bit(k)))
                    })
                    .collect(),
            )
        } else {
            None
        };
        Ok(Self { array, width, mask })
    }

    pub(crate) fn rows(&self) -> usize {
        self.array.len()
    }

    pub(crate) fn width(&self) -> usize {
        self.width
    }

    /// The values as a kernel matrix.
    pub(crate) fn matrix(&self, arg: &str) -> PolarsResult<Matrix<'_>> {
        let values = self.array.values().as_any();
        let v = if let Some(a) = values.downcast_ref::<PrimitiveArray<f32>>() {
            Values::F32(a.values().as_slice())
        } else if let Some(a) = values.downcast_ref::<PrimitiveArray<f64>>() {
            Values::F64(a.values().as_slice())
        } else if let Some(a) = values.downcast_ref::<PrimitiveArray<PlF16>>() {
            // Same layout as `half::f16`, checked by `bytemuck` (both are `Pod`, same size).
            Values::F16(bytemuck::cast_slice(a.values().as_slice()))
        } else {
            polars_bail!(ComputeError: "`{arg}`: unsupported inner array type {:?}", self.array.values().dtype());
        };
        Matrix::new(v, self.rows(), self.width, self.mask.as_deref())
            .map_err(|e| polars_err!(ComputeError: "`{arg}`: {e}"))
    }
}

/// This process's kernel (`POLARS_CURATE_KERNEL` or the best the CPU runs), or the error that
/// says why the pinned one cannot run.
pub(crate) fn kernel() -> PolarsResult<Kernel> {
    Kernel::selected().map_err(|e| polars_err!(ComputeError: "{e}"))
}

/// Runs `f` with the process's kernel on the plugin's thread pool and turns a panic (a bug) into
/// an error.
fn guarded<T>(what: &str, f: impl FnOnce(Kernel) -> PolarsResult<T> + Send) -> PolarsResult<T>
where
    T: Send,
{
    let kernel = kernel()?;
    match catch_unwind(AssertUnwindSafe(|| pool().install(|| f(kernel)))) {
        Ok(r) => r,
        Err(payload) => {
            let msg = payload
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            polars_bail!(ComputeError: "polars-curate internal error in {what}: {msg} (please report this)")
        }
    }
}

fn same_width(a: &Embeddings, an: &str, b: &Embeddings, bn: &str) -> PolarsResult<()> {
    polars_ensure!(
        a.width() == b.width(),
        ComputeError: "`{an}` and `{bn}` must have the same embedding width, got {} and {}", a.width(), b.width()
    );
    Ok(())
}

fn to_series(name: PlSmallStr, values: Vec<Option<f32>>) -> Series {
    Float32Chunked::from_iter_options(name, values.into_iter()).into_series()
}

fn to_u32_series(name: PlSmallStr, values: Vec<Option<u32>>) -> Series {
    UInt32Chunked::from_iter_options(name, values.into_iter()).into_series()
}

/// `keep` as sent by Python: a count (`keep_den == 0`) or the fraction `keep_num / keep_den`.
fn keep_of(num: u64, den: u64) -> PolarsResult<Keep> {
    Ok(if den == 0 {
        Keep::Count(
            usize::try_from(num).map_err(|_| polars_err!(ComputeError: "`keep` is too large: {num}"))?,
        )
    } else {
        Keep::Fraction { num, den }
    })
}

fn keep_error((keep, n): (usize, usize)) -> PolarsError {
    polars_err!(ComputeError: "`keep` = {keep} is more than the {n} rows with usable embeddings")
}

#[derive(Deserialize)]
struct ClipScoreKwargs {
    normalize: bool,
}

#[polars_expr(output_type=Float32)]
fn clip_score(inputs: &[Series], kwargs: ClipScoreKwargs) -> PolarsResult<Series> {
    let (img, txt) = (Embeddings::new(&inputs[0], "image")?, Embeddings::new(&inputs[1], "text")?);
    same_width(&img, "image", &txt, "text")?;
    let (n, m) = (img.rows(), txt.rows());
    polars_ensure!(
        n == m || n == 1 || m == 1,
        ComputeError: "`image` and `text` must have the same number of rows, got {n} and {m}"
    );
    let out = guarded("clip_score", |_| {
        Ok(clip_score_kernel(&img.matrix("image")?, &txt.matrix("text")?, kwargs.normalize))
    })?;
    Ok(to_series(inputs[0].name().clone(), out))
}

#[derive(Deserialize)]
struct NegClipKwargs {
    batch_size: usize,
    num_batches: usize,
    temperature: f64,
    seed: u64,
    normalize: bool,
}

#[polars_expr(output_type=Float32)]
fn neg_clip_loss(inputs: &[Series], kwargs: NegClipKwargs) -> PolarsResult<Series> {
    let (img, txt) = (Embeddings::new(&inputs[0], "image")?, Embeddings::new(&inputs[1], "text")?);
    same_width(&img, "image", &txt, "text")?;
    polars_ensure!(
        img.rows() == txt.rows(),
        ComputeError: "`image` and `text` must have the same number of rows, got {} and {}", img.rows(), txt.rows()
    );
    polars_ensure!(kwargs.batch_size >= 1, ComputeError: "`batch_size` must be >= 1, got {}", kwargs.batch_size);
    polars_ensure!(kwargs.num_batches >= 1, ComputeError: "`num_batches` must be >= 1, got {}", kwargs.num_batches);
    polars_ensure!(
        kwargs.temperature.is_finite() && kwargs.temperature > 0.0,
        ComputeError: "`temperature` must be a finite number > 0, got {}", kwargs.temperature
    );
    let params = NegClipParams {
        batch_size: kwargs.batch_size,
        num_batches: kwargs.num_batches,
        temperature: kwargs.temperature,
        seed: kwargs.seed,
        normalize: kwargs.normalize,
    };
    let out = guarded("neg_clip_loss", |kernel| {
        Ok(neg_clip_loss_kernel(kernel, &img.matrix("image")?, &txt.matrix("text")?, &params))
    })?;
    Ok(to_series(inputs[0].name().clone(), out))
}

/// Calls of `normsim` and the most rows one call received: how tests see that a streaming
/// query hands the plugin morsels rather than the whole column.
pub static NORMSIM_CALLS: AtomicUsize = AtomicUsize::new(0);
pub static NORMSIM_MAX_ROWS: AtomicUsize = AtomicUsize::new(0);

#[derive(Deserialize)]
struct NormSimKwargs {
    target_key: u64,
    normalize: bool,
}

#[polars_expr(output_type=Float32)]
fn normsim(inputs: &[Series], kwargs: NormSimKwargs) -> PolarsResult<Series> {
    let emb = Embeddings::new(&inputs[0], "embedding")?;
    let target = targets::get(kwargs.target_key)?;
    NORMSIM_CALLS.fetch_add(1, Ordering::Relaxed);
    NORMSIM_MAX_ROWS.fetch_max(emb.rows(), Ordering::Relaxed);
    polars_ensure!(
        emb.width() == target.dim(),
        ComputeError: "`embedding` and `target` must have the same embedding width, got {} and {}", emb.width(), target.dim()
    );
    let out =
        guarded("normsim", |_| Ok(normsim_kernel(&emb.matrix("embedding")?, &target, kwargs.normalize)))?;
    Ok(to_series(inputs[0].name().clone(), out))
}

#[derive(Deserialize)]
struct DynamicKwargs {
    keep_num: u64,
    keep_den: u64,
    steps: usize,
    sample_fraction: f64,
    seed: u64,
    normalize: bool,
}

#[polars_expr(output_type=UInt32)]
fn normsim2_dynamic(inputs: &[Series], kwargs: DynamicKwargs) -> PolarsResult<Series> {
    let emb = Embeddings::new(&inputs[0], "embedding")?;
    polars_ensure!(kwargs.steps >= 1, ComputeError: "`steps` must be >= 1, got {}", kwargs.steps);
    polars_ensure!(
        kwargs.sample_fraction > 0.0 && kwargs.sample_fraction <= 1.0,
        ComputeError: "`sample_fraction` must be in (0, 1], got {}", kwargs.sample_fraction
    );
    let params = DynamicParams {
        keep: keep_of(kwargs.keep_num, kwargs.keep_den)?,
        steps: kwargs.steps,
        sample_fraction: kwargs.sample_fraction,
        seed: kwargs.seed,
        normalize: kwargs.normalize,
    };
    let out = guarded("normsim2_dynamic", |kernel| {
        dynamic_kernel(kernel, &emb.matrix("embedding")?, &params).map_err(keep_error)
    })?;
    Ok(to_u32_series(inputs[0].name().clone(), out))
}

#[derive(Deserialize)]
struct ClipCovKwargs {
    keep_num: u64,
    keep_den: u64,
    lambda: f64,
    easiness_weight: f64,
    pick_batch: usize,
    normalize: bool,
}

#[polars_expr(output_type=UInt32)]
fn clipcov(inputs: &[Series], kwargs: ClipCovKwargs) -> PolarsResult<Series> {
    let (img, txt) = (Embeddings::new(&inputs[0], "image")?, Embeddings::new(&inputs[1], "text")?);
    same_width(&img, "image", &txt, "text")?;
    let n = img.rows();
    polars_ensure!(
        txt.rows() == n && inputs[2].len() == n,
        ComputeError: "`image`, `text` and `classes` must have the same number of rows, got {}, {} and {}",
        n, txt.rows(), inputs[2].len()
    );
    // Python sends `classes.rank("dense")`: an unsigned integer code per class.
    let codes = inputs[2]
        .cast(&DataType::UInt32)
        .map_err(|_| polars_err!(ComputeError: "`classes` must be a column of class labels, got {}", inputs[2].dtype()))?;
    let codes: Vec<Option<u32>> =
        codes.u32()?.downcast_iter().flat_map(|a| a.iter().map(|v| v.copied())).collect();
    let params = ClipCovParams {
        keep: keep_of(kwargs.keep_num, kwargs.keep_den)?,
        lambda: kwargs.lambda,
        easiness_weight: kwargs.easiness_weight,
        pick_batch: kwargs.pick_batch.max(1),
        normalize: kwargs.normalize,
    };
    let out = guarded("clipcov", |_| {
        clipcov_kernel(&img.matrix("image")?, &txt.matrix("text")?, &codes, &params).map_err(keep_error)
    })?;
    Ok(to_u32_series(inputs[0].name().clone(), out))
}

#[derive(Deserialize)]
struct ZeroShotKwargs {
    target_key: u64,
    normalize: bool,
}

#[polars_expr(output_type=UInt32)]
fn zero_shot_labels(inputs: &[Series], kwargs: ZeroShotKwargs) -> PolarsResult<Series> {
    let emb = Embeddings::new(&inputs[0], "image")?;
    let target = targets::get(kwargs.target_key)?;
    polars_ensure!(
        emb.width() == target.dim(),
        ComputeError: "`image` and `class_embeddings` must have the same embedding width, got {} and {}",
        emb.width(), target.dim()
    );
    let out = guarded("zero_shot_labels", |_| Ok(nearest(&emb.matrix("image")?, &target, kwargs.normalize)))?;
    Ok(to_u32_series(inputs[0].name().clone(), out))
}
