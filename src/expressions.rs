//! The thin layer: every `#[polars_expr]` unpacks its inputs, checks what Polars cannot check
//! for us (dtypes, widths, row counts), calls one kernel and wraps the result as a Series.
//!
//! Kwargs deserialize straight into the kernels' parameter types, whose `validate` is the one
//! place each range is stated (Python calls it through `_internal.validate` when an expression
//! is built, so a bad argument is a `ValueError` at once). Dtypes and widths are checked twice:
//! when Polars plans the query (the output-type functions below, so that a column Polars could
//! not even hand over, such as a width-0 array, never reaches the plugin) and again on the data.
//! Every error is a `ComputeError` naming the argument and column. Nothing here may panic on
//! user data; each body also runs under `catch_unwind`, so even a bug surfaces as an error.

use std::panic::{catch_unwind, AssertUnwindSafe};

use polars::prelude::*;
use polars_arrow::array::{FixedSizeListArray, PrimitiveArray};
use pyo3_polars::derive::{polars_expr, CallerContext};
use serde::Deserialize;

use crate::kernels::engine::isa::Kernel;
use crate::kernels::runtime::{interrupt, threads};
use crate::kernels::scores::clip_score::clip_score as clip_score_kernel;
use crate::kernels::scores::clipcov::{clipcov as clipcov_kernel, ClipCovParams};
use crate::kernels::scores::dynamic::{normsim2_dynamic as dynamic_kernel, DynamicParams};
use crate::kernels::scores::negclip::{neg_clip_loss as neg_clip_loss_kernel, NegClipParams};
use crate::kernels::scores::normsim::{nearest, normsim as normsim_kernel, Power, Target};
use crate::kernels::scores::sampling::{
    hard_cap as hard_cap_kernel, soft_cap as soft_cap_kernel, HardCapParams, SamplingError, SoftCapParams,
};
use crate::kernels::scores::semdedup::semdedup as semdedup_kernel;
use crate::kernels::{Matrix, Values};
use crate::targets::{self, TargetSpec};

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

/// Checks at planning time that input `i` (argument `arg`) is `Array(Float16|Float32|Float64,
/// d)` with `d >= 1`; returns `d`.
fn embedding_field(fields: &[Field], i: usize, arg: &str) -> PolarsResult<usize> {
    let f = fields.get(i).ok_or_else(|| polars_err!(ComputeError: "`{arg}` is missing"))?;
    let name = f.name();
    match f.dtype() {
        DataType::Array(inner, width) => {
            if !matches!(inner.as_ref(), DataType::Float16 | DataType::Float32 | DataType::Float64) {
                polars_bail!(
                    ComputeError: "`{arg}` (column \"{name}\") must be an Array of Float16, Float32 or Float64, got Array({inner}, {width}); \
                     cast it, e.g. pl.col(\"{name}\").cast(pl.Array(pl.Float32, {width}))"
                );
            }
            if *width == 0 {
                polars_bail!(ComputeError: "`{arg}` (column \"{name}\") has width 0; embeddings need at least one dimension");
            }
            Ok(*width)
        }
        DataType::List(inner) => polars_bail!(
            ComputeError: "`{arg}` (column \"{name}\") is a List column; embeddings must be fixed-width Arrays: \
             use pl.col(\"{name}\").cast(pl.Array(pl.{inner:?}, width))"
        ),
        other => polars_bail!(
            ComputeError: "`{arg}` (column \"{name}\") must be an Array of Float16, Float32 or Float64, got {other}"
        ),
    }
}

fn same_width_fields(fields: &[Field], a: &str, b: &str) -> PolarsResult<()> {
    let (wa, wb) = (embedding_field(fields, 0, a)?, embedding_field(fields, 1, b)?);
    polars_ensure!(wa == wb, ComputeError: "`{a}` and `{b}` must have the same embedding width, got {wa} and {wb}");
    Ok(())
}

fn output(fields: &[Field], dtype: DataType) -> PolarsResult<Field> {
    let name = fields.first().map_or_else(|| PlSmallStr::from_static("score"), |f| f.name().clone());
    Ok(Field::new(name, dtype))
}

fn invalid(msg: String) -> PolarsError {
    polars_err!(ComputeError: "{msg}")
}

/// This process's kernel (`POLARS_CURATE_KERNEL` or the best the CPU runs), or the error that
/// says why the pinned one cannot run.
pub(crate) fn kernel() -> PolarsResult<Kernel> {
    Kernel::selected().map_err(|e| polars_err!(ComputeError: "{e}"))
}

/// Runs `f` with the process's kernel as an interruptible call and turns a panic (a bug) into an
/// error: on the calling thread when Polars calls in parallel (`context`), else on the plugin's
/// thread pool (one level of parallelism, see `threads::run`). After Ctrl-C the kernels stop
/// between tiles and the call reports the interruption.
fn guarded<T>(
    what: &str,
    context: CallerContext,
    f: impl FnOnce(Kernel) -> PolarsResult<T> + Send,
) -> PolarsResult<T>
where
    T: Send,
{
    let kernel = kernel()?;
    let _active = interrupt::Active::enter();
    let run = || {
        threads::run(context.parallel(), || f(kernel))
            .unwrap_or_else(|e| Err(polars_err!(ComputeError: "{e}")))
    };
    let result = unpanicked(what, run)?;
    if interrupt::pending() {
        polars_bail!(ComputeError: "{what} interrupted (KeyboardInterrupt)");
    }
    result
}

/// `f()`, with a panic (a bug) turned into an error naming `what`.
fn unpanicked<T>(what: &str, f: impl FnOnce() -> PolarsResult<T>) -> PolarsResult<PolarsResult<T>> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => Ok(r),
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

/// The prepared target of an expression, fetched on the calling (Polars) thread, never inside
/// the plugin's pool: concurrent morsels wait for one preparation there, and a pool worker
/// that waited for it while holding stolen work of that preparation would deadlock the pool.
fn prepared_target(
    what: &str,
    spec: &TargetSpec,
    p: f64,
    normalize: bool,
    arg: &str,
) -> PolarsResult<std::sync::Arc<Target>> {
    let kernel = kernel()?;
    unpanicked(what, || targets::get(kernel, spec, p, normalize, arg))?
}

fn same_width(a: &Embeddings, an: &str, b: &Embeddings, bn: &str) -> PolarsResult<()> {
    polars_ensure!(
        a.width() == b.width(),
        ComputeError: "`{an}` and `{bn}` must have the same embedding width, got {} and {}", a.width(), b.width()
    );
    Ok(())
}

/// The `image` and `text` columns of a two-column expression whose kwargs passed their check
/// (`checked`): embeddings of the same width.
fn image_text(inputs: &[Series], checked: Result<(), String>) -> PolarsResult<(Embeddings, Embeddings)> {
    checked.map_err(invalid)?;
    let (img, txt) = (Embeddings::new(&inputs[0], "image")?, Embeddings::new(&inputs[1], "text")?);
    same_width(&img, "image", &txt, "text")?;
    Ok((img, txt))
}

/// The output field (`dtype`) of a two-column expression, [`image_text`] at planning time.
fn image_text_field(fields: &[Field], checked: Result<(), String>, dtype: DataType) -> PolarsResult<Field> {
    checked.map_err(invalid)?;
    same_width_fields(fields, "image", "text")?;
    output(fields, dtype)
}

/// A kernel's values, one per row: the expression's output column.
trait RowValues: Send {
    fn into_column(self, name: PlSmallStr) -> Series;
}

impl RowValues for Vec<Option<f32>> {
    fn into_column(self, name: PlSmallStr) -> Series {
        Float32Chunked::from_iter_options(name, self.into_iter()).into_series()
    }
}

impl RowValues for Vec<u32> {
    fn into_column(self, name: PlSmallStr) -> Series {
        UInt32Chunked::from_vec(name, self).into_series()
    }
}

impl RowValues for Vec<Option<u32>> {
    fn into_column(self, name: PlSmallStr) -> Series {
        UInt32Chunked::from_iter_options(name, self.into_iter()).into_series()
    }
}

/// [`guarded`] `f`, its values as the output column, named after the first input: a whole-column
/// expression, which Polars calls once (the plugin's pool runs it).
fn column<T: RowValues>(
    inputs: &[Series],
    what: &str,
    f: impl FnOnce(Kernel) -> PolarsResult<T> + Send,
) -> PolarsResult<Series> {
    elementwise(inputs, CallerContext::default(), what, f)
}

/// [`column`] for an elementwise expression, which Polars may call once per morsel from each of
/// its threads (`context.parallel()`): then the kernel runs on the calling thread.
fn elementwise<T: RowValues>(
    inputs: &[Series],
    context: CallerContext,
    what: &str,
    f: impl FnOnce(Kernel) -> PolarsResult<T> + Send,
) -> PolarsResult<Series> {
    Ok(guarded(what, context, f)?.into_column(inputs[0].name().clone()))
}

#[derive(Deserialize)]
pub struct ClipScoreKwargs {
    normalize: bool,
}

fn clip_score_field(fields: &[Field], _: ClipScoreKwargs) -> PolarsResult<Field> {
    image_text_field(fields, Ok(()), DataType::Float32)
}

#[polars_expr(output_type_func_with_kwargs=clip_score_field)]
fn clip_score(inputs: &[Series], context: CallerContext, kwargs: ClipScoreKwargs) -> PolarsResult<Series> {
    let (img, txt) = image_text(inputs, Ok(()))?;
    let (n, m) = (img.rows(), txt.rows());
    polars_ensure!(
        n == m || n == 1 || m == 1,
        ComputeError: "`image` and `text` must have the same number of rows, got {n} and {m}"
    );
    elementwise(inputs, context, "clip_score", |_| {
        Ok(clip_score_kernel(&img.matrix("image")?, &txt.matrix("text")?, kwargs.normalize))
    })
}

fn neg_clip_loss_field(fields: &[Field], params: NegClipParams) -> PolarsResult<Field> {
    image_text_field(fields, params.validate(), DataType::Float32)
}

#[polars_expr(output_type_func_with_kwargs=neg_clip_loss_field)]
fn neg_clip_loss(inputs: &[Series], kwargs: NegClipParams) -> PolarsResult<Series> {
    let (img, txt) = image_text(inputs, kwargs.validate())?;
    polars_ensure!(
        img.rows() == txt.rows(),
        ComputeError: "`image` and `text` must have the same number of rows, got {} and {}", img.rows(), txt.rows()
    );
    column(inputs, "neg_clip_loss", |kernel| {
        Ok(neg_clip_loss_kernel(kernel, &img.matrix("image")?, &txt.matrix("text")?, &kwargs))
    })
}

#[derive(Deserialize)]
pub struct NormSimKwargs {
    target: TargetSpec,
    p: f64,
    normalize: bool,
}

impl NormSimKwargs {
    fn validate(&self) -> PolarsResult<()> {
        Power::validate(self.p).map_err(invalid)
    }
}

fn normsim_field(fields: &[Field], kwargs: NormSimKwargs) -> PolarsResult<Field> {
    kwargs.validate()?;
    let w = embedding_field(fields, 0, "embedding")?;
    let t = kwargs.target.dim;
    polars_ensure!(w == t, ComputeError: "`embedding` and `target` must have the same embedding width, got {w} and {t}");
    output(fields, DataType::Float32)
}

#[polars_expr(output_type_func_with_kwargs=normsim_field)]
fn normsim(inputs: &[Series], context: CallerContext, kwargs: NormSimKwargs) -> PolarsResult<Series> {
    kwargs.validate()?;
    let emb = Embeddings::new(&inputs[0], "embedding")?;
    polars_ensure!(
        emb.width() == kwargs.target.dim,
        ComputeError: "`embedding` and `target` must have the same embedding width, got {} and {}", emb.width(), kwargs.target.dim
    );
    let target = prepared_target("normsim", &kwargs.target, kwargs.p, kwargs.normalize, "target")?;
    elementwise(inputs, context, "normsim", |_| {
        Ok(normsim_kernel(&emb.matrix("embedding")?, &target, kwargs.normalize))
    })
}

fn normsim2_dynamic_field(fields: &[Field], params: DynamicParams) -> PolarsResult<Field> {
    params.validate().map_err(invalid)?;
    embedding_field(fields, 0, "embedding")?;
    output(fields, DataType::UInt32)
}

#[polars_expr(output_type_func_with_kwargs=normsim2_dynamic_field)]
fn normsim2_dynamic(inputs: &[Series], kwargs: DynamicParams) -> PolarsResult<Series> {
    kwargs.validate().map_err(invalid)?;
    let emb = Embeddings::new(&inputs[0], "embedding")?;
    column(inputs, "normsim2_dynamic", |kernel| {
        dynamic_kernel(kernel, &emb.matrix("embedding")?, &kwargs)
            .map_err(|e| polars_err!(ComputeError: "{e}"))
    })
}

fn clipcov_field(fields: &[Field], params: ClipCovParams) -> PolarsResult<Field> {
    image_text_field(fields, params.validate(), DataType::UInt32)
}

#[polars_expr(output_type_func_with_kwargs=clipcov_field)]
fn clipcov(inputs: &[Series], kwargs: ClipCovParams) -> PolarsResult<Series> {
    let (img, txt) = image_text(inputs, kwargs.validate())?;
    let n = img.rows();
    let nc = inputs[2].len();
    polars_ensure!(
        txt.rows() == n && (nc == n || nc == 1),
        ComputeError: "`image`, `text` and `classes` must have the same number of rows (or `classes` one), got {}, {} and {}",
        n, txt.rows(), nc
    );
    // Python sends `classes.rank("dense")`: an unsigned integer code per class.
    let codes = inputs[2]
        .cast(&DataType::UInt32)
        .map_err(|_| polars_err!(ComputeError: "`classes` must be a column of class labels, got {}", inputs[2].dtype()))?;
    let mut codes: Vec<Option<u32>> =
        codes.u32()?.downcast_iter().flat_map(|a| a.iter().map(|v| v.copied())).collect();
    if nc == 1 && n != 1 {
        codes = vec![codes[0]; n]; // one label for every row, as Polars broadcasts a literal
    }
    column(inputs, "clipcov", |_| {
        clipcov_kernel(&img.matrix("image")?, &txt.matrix("text")?, &codes, &kwargs)
            .map_err(|e| polars_err!(ComputeError: "{e}"))
    })
}

/// Kwargs of [`assign_clusters`]: the centroids (or class embeddings), how to compare, and
/// how the Python function names its arguments (`zero_shot_labels` calls this too).
#[derive(Deserialize)]
pub struct AssignKwargs {
    target: TargetSpec,
    normalize: bool,
    /// Only the index (`UInt32`), not the struct of index and similarity.
    index_only: bool,
    args: (String, String),
}

impl AssignKwargs {
    fn check_width(&self, w: usize) -> PolarsResult<()> {
        let (t, (a, b)) = (self.target.dim, &self.args);
        polars_ensure!(w == t, ComputeError: "`{a}` and `{b}` must have the same embedding width, got {w} and {t}");
        Ok(())
    }

    fn dtype(&self) -> DataType {
        if self.index_only {
            return DataType::UInt32;
        }
        let fields = [
            Field::new("cluster".into(), DataType::UInt32),
            Field::new("similarity".into(), DataType::Float32),
        ];
        DataType::Struct(fields.into())
    }
}

fn assign_clusters_field(fields: &[Field], kwargs: AssignKwargs) -> PolarsResult<Field> {
    kwargs.check_width(embedding_field(fields, 0, &kwargs.args.0)?)?;
    output(fields, kwargs.dtype())
}

/// The nearest row of a target for every row (k-means assignment, zero-shot labels): one
/// implementation, [`nearest`], on the fused argmax kernel.
#[polars_expr(output_type_func_with_kwargs=assign_clusters_field)]
fn assign_clusters(inputs: &[Series], context: CallerContext, kwargs: AssignKwargs) -> PolarsResult<Series> {
    let arg = kwargs.args.0.as_str();
    let emb = Embeddings::new(&inputs[0], arg)?;
    kwargs.check_width(emb.width())?;
    let target =
        prepared_target("assign_clusters", &kwargs.target, f64::INFINITY, kwargs.normalize, &kwargs.args.1)?;
    let found =
        guarded("assign_clusters", context, |_| Ok(nearest(&emb.matrix(arg)?, &target, kwargs.normalize)))?;
    let name = inputs[0].name().clone();
    let index = UInt32Chunked::from_iter_options("cluster".into(), found.iter().map(|f| f.map(|v| v.0)));
    if kwargs.index_only {
        return Ok(index.with_name(name).into_series());
    }
    let similarity =
        Float32Chunked::from_iter_options("similarity".into(), found.iter().map(|f| f.map(|v| v.1)));
    let fields = [index.into_series(), similarity.into_series()];
    Ok(StructChunked::from_series(name, found.len(), fields.iter())?.into_series())
}

fn semdedup_field(fields: &[Field]) -> PolarsResult<Field> {
    embedding_field(fields, 0, "embedding")?;
    output(fields, DataType::Float32)
}

/// SemDeDup's score of every row: its highest cosine to a row before it in the order given
/// (`inputs[1]`: the rows' positions, a permutation), null for the first and unusable rows.
#[polars_expr(output_type_func=semdedup_field)]
fn semdedup(inputs: &[Series]) -> PolarsResult<Series> {
    let emb = Embeddings::new(&inputs[0], "embedding")?;
    let n = emb.rows();
    let order = inputs[1].cast(&DataType::UInt32)?;
    let order: Vec<u32> = order.u32()?.iter().map(|v| v.unwrap_or(u32::MAX)).collect();
    polars_ensure!(
        order.len() == n && is_permutation(&order),
        ComputeError: "`order` must give each of the {n} rows one position (a permutation of 0..{n})"
    );
    column(inputs, "semdedup", |kernel| Ok(semdedup_kernel(kernel, &emb.matrix("embedding")?, &order)))
}

fn is_permutation(order: &[u32]) -> bool {
    let mut seen = vec![false; order.len()];
    order.iter().all(|&i| (i as usize) < seen.len() && !std::mem::replace(&mut seen[i as usize], true))
}

/// Checks the parameters of expression `name` as the plugin will (`kwargs`: the pickled
/// kwargs): `Err` with the message the plugin would give.
pub fn validate(name: &str, kwargs: &[u8]) -> Result<(), String> {
    fn parse<'a, T: Deserialize<'a>>(k: &'a [u8]) -> Result<T, String> {
        // The very parse the plugin call does.
        pyo3_polars::derive::_parse_kwargs(k).map_err(|e| format!("invalid arguments: {e}"))
    }
    match name {
        "neg_clip_loss" => parse::<NegClipParams>(kwargs)?.validate(),
        "normsim2_dynamic" => parse::<DynamicParams>(kwargs)?.validate(),
        "clipcov" => parse::<ClipCovParams>(kwargs)?.validate(),
        "normsim" => Power::validate(parse::<NormSimKwargs>(kwargs)?.p),
        "soft_cap_sample" => parse::<SoftCapParams>(kwargs)?.validate(),
        "hard_cap_sample" => parse::<HardCapParams>(kwargs)?.validate(),
        "clip_score" | "assign_clusters" | "semdedup" => Ok(()),
        other => Err(format!("unknown expression {other:?}")),
    }
}

/// A score column as the samplers read it: `Float32`, NaN for null.
fn score_values(s: &Series, arg: &str) -> PolarsResult<Vec<f32>> {
    polars_ensure!(
        s.dtype().is_primitive_numeric(),
        ComputeError: "`{arg}` (column \"{}\") must be numeric, got {}", s.name(), s.dtype()
    );
    let f = s.cast(&DataType::Float32)?;
    Ok(f.f32()?.iter().map(|v| v.unwrap_or(f32::NAN)).collect())
}

/// The output of a sampler: a `UInt32` count per row, after the plugin's parameter checks.
fn sample_field(fields: &[Field], checked: Result<(), String>) -> PolarsResult<Field> {
    checked.map_err(invalid)?;
    output(fields, DataType::UInt32)
}

fn soft_cap_sample_field(fields: &[Field], params: SoftCapParams) -> PolarsResult<Field> {
    sample_field(fields, params.validate())
}

#[polars_expr(output_type_func_with_kwargs=soft_cap_sample_field)]
fn soft_cap_sample(inputs: &[Series], kwargs: SoftCapParams) -> PolarsResult<Series> {
    sample(inputs, "soft_cap_sample", kwargs.validate(), &kwargs, soft_cap_kernel)
}

fn hard_cap_sample_field(fields: &[Field], params: HardCapParams) -> PolarsResult<Field> {
    sample_field(fields, params.validate())
}

#[polars_expr(output_type_func_with_kwargs=hard_cap_sample_field)]
fn hard_cap_sample(inputs: &[Series], kwargs: HardCapParams) -> PolarsResult<Series> {
    sample(inputs, "hard_cap_sample", kwargs.validate(), &kwargs, hard_cap_kernel)
}

/// A sampler over the score column: checked parameters, the scores, the guarded draw.
fn sample<P: Sync>(
    inputs: &[Series],
    what: &str,
    checked: Result<(), String>,
    params: &P,
    draw: fn(&[f32], &P) -> Result<Vec<u32>, SamplingError>,
) -> PolarsResult<Series> {
    checked.map_err(invalid)?;
    let scores = score_values(&inputs[0], "score")?;
    column(inputs, what, |_| draw(&scores, params).map_err(|e| polars_err!(ComputeError: "{e}")))
}
