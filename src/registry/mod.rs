//! Losses by name, on host arrays: what the command line (`eval`, `check`, `bench`) and the
//! registry-wide tests drive. Each loss family implements [`LossDef`] in its `cli.rs`; the
//! one list of them is [`crate::losses::all`].

use std::collections::BTreeMap;
use std::str::FromStr;

pub mod compare;
pub mod random;
pub mod session;

use crate::core::cpu_math::Floats;
use crate::core::reference::RefOutput;
use crate::core::{Arg, DType, LossValues, Reduction, Upstream};
use crate::error::{Error, Result};
use crate::gpu::engine::Engine;
use crate::gpu::tensor::Tensor;
use compare::Tolerance;
use random::Rng;
pub use session::GpuSession;

/// Element data of a host array.
#[derive(Debug, Clone, PartialEq)]
pub enum HostData {
    /// Floats (f32 and f64 files are read as f32).
    F32(Vec<f32>),
    /// Integers (int32 and int64 files).
    I64(Vec<i64>),
    /// Half-precision floats (f16 files), kept as f16 up to the kernel.
    F16(Vec<half::f16>),
    /// bfloat16 values (from `dtype=bf16`: NumPy has no bf16 files).
    BF16(Vec<half::bf16>),
}

impl HostData {
    /// The element type as a tensor would hold it (integers as i32).
    pub fn dtype(&self) -> DType {
        match self {
            HostData::F32(_) => DType::F32,
            HostData::I64(_) => DType::I32,
            HostData::F16(_) => DType::F16,
            HostData::BF16(_) => DType::BF16,
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            HostData::F32(v) => v.len(),
            HostData::I64(v) => v.len(),
            HostData::F16(v) => v.len(),
            HostData::BF16(v) => v.len(),
        }
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Keeps the first `n` elements.
    pub fn truncate(&mut self, n: usize) {
        match self {
            HostData::F32(v) => v.truncate(n),
            HostData::I64(v) => v.truncate(n),
            HostData::F16(v) => v.truncate(n),
            HostData::BF16(v) => v.truncate(n),
        }
    }

    /// The values as f32: 16-bit floats widen exactly, integers convert.
    pub fn to_f32(&self) -> Vec<f32> {
        match self {
            HostData::F32(v) => v.clone(),
            HostData::I64(v) => v.iter().map(|&x| x as f32).collect(),
            HostData::F16(v) => v.iter().map(|x| x.to_f32()).collect(),
            HostData::BF16(v) => v.iter().map(|x| x.to_f32()).collect(),
        }
    }
}

/// A host array with its shape.
#[derive(Debug, Clone, PartialEq)]
pub struct HostArray {
    /// Outermost first; `[]` for a scalar.
    pub shape: Vec<usize>,
    /// The elements, row-major.
    pub data: HostData,
}

impl HostArray {
    /// A float array.
    pub fn f32(shape: &[usize], data: Vec<f32>) -> Self {
        Self {
            shape: shape.to_vec(),
            data: HostData::F32(data),
        }
    }

    /// An integer array.
    pub fn i64(shape: &[usize], data: Vec<i64>) -> Self {
        Self {
            shape: shape.to_vec(),
            data: HostData::I64(data),
        }
    }

    /// A float array of `dtype` (f32, f16 or bf16) holding `data` rounded to it.
    pub fn rounded(shape: &[usize], data: &[f32], dtype: DType) -> Self {
        let data = match dtype {
            DType::F16 => HostData::F16(data.iter().map(|&x| half::f16::from_f32(x)).collect()),
            DType::BF16 => HostData::BF16(data.iter().map(|&x| half::bf16::from_f32(x)).collect()),
            _ => HostData::F32(data.to_vec()),
        };
        Self {
            shape: shape.to_vec(),
            data,
        }
    }
}

/// One problem: named inputs and options (values as text, as on the command line).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Case {
    /// Inputs by name (docs/LOSSES.md spellings).
    pub inputs: BTreeMap<String, HostArray>,
    /// Options by name.
    pub options: BTreeMap<String, String>,
}

/// Results on the host: the loss and the gradient of each differentiable input.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluated<T> {
    /// One value for mean/sum (`loss_shape` `[]`), one per item for none.
    pub loss: Vec<T>,
    /// Shape of the loss.
    pub loss_shape: Vec<usize>,
    /// (input name, gradient, shape) for each differentiable input.
    pub grads: Vec<(&'static str, Vec<T>, Vec<usize>)>,
    /// (name, values) of per-row statistics the loss reported (`LossValues::rows`: the
    /// fused linear loss's `lse` and `correct` with `row_stats=true`); none from the
    /// reference.
    pub rows: Vec<(&'static str, Vec<T>)>,
    /// The reference's `RefOutput::grad_terms`; 0 for GPU results.
    pub grad_terms: f64,
    /// The reference's `RefOutput::loss_terms`; 0 for GPU and CPU results.
    pub loss_terms: f64,
    /// The reference's `RefOutput::decision_gap`; infinite for GPU and
    /// CPU results.
    pub decision_gap: f64,
}

impl Evaluated<f32> {
    /// A GPU or CPU result: every gradient has the shape `grad_shape`.
    pub fn from_values(out: LossValues, loss_shape: Vec<usize>, grad_shape: &[usize]) -> Self {
        Self {
            loss: out.loss,
            loss_shape,
            grads: out
                .grads
                .into_iter()
                .map(|(name, g)| (name, g, grad_shape.to_vec()))
                .collect(),
            rows: out.rows,
            grad_terms: 0.0,
            loss_terms: 0.0,
            decision_gap: f64::INFINITY,
        }
    }
}

impl Evaluated<f64> {
    /// A reference result: every gradient has the shape `grad_shape`.
    pub fn from_reference(out: RefOutput, loss_shape: Vec<usize>, grad_shape: &[usize]) -> Self {
        Self {
            loss: out.loss,
            loss_shape,
            grads: out
                .grads
                .into_iter()
                .map(|(name, g)| (name, g, grad_shape.to_vec()))
                .collect(),
            rows: Vec::new(),
            grad_terms: out.grad_terms,
            loss_terms: out.loss_terms,
            decision_gap: out.decision_gap,
        }
    }

    /// Whether a discrete decision of the loss (mining, a hinge's gradient) lies within f32
    /// rounding of its boundary (`decision_gap` below 1e-5 of the distance scale), where an
    /// f32 result may legitimately decide the other way; comparisons draw another case.
    pub fn ambiguous(&self) -> bool {
        self.decision_gap < 1e-5
    }

    /// `tol` for this result's loss: its error is measured against the scale of the terms
    /// whose difference forms it, where that is larger than the loss.
    pub fn loss_tolerance(&self, tol: Tolerance) -> Tolerance {
        Tolerance {
            floor: tol.floor.max(self.loss_terms),
            ..tol
        }
    }

    /// `tol` for this result's gradients: their error is measured against the scale of the
    /// terms they are summed from.
    pub fn grad_tolerance(&self, tol: Tolerance) -> Tolerance {
        Tolerance {
            floor: tol.floor.max(self.grad_terms),
            ..tol
        }
    }
}

/// Declared input of a loss.
#[derive(Debug, Clone, Copy)]
pub struct InputSpec {
    /// docs/LOSSES.md name.
    pub name: &'static str,
    /// Whether a gradient is returned for it.
    pub differentiable: bool,
    /// Whether it must be given.
    pub required: bool,
}

/// A loss as the command line sees it.
pub trait LossDef: Sync {
    /// The docs/LOSSES.md name, e.g. `cross-entropy`.
    fn name(&self) -> &'static str;
    /// Its inputs.
    fn inputs(&self) -> &'static [InputSpec];
    /// Its option names.
    fn options(&self) -> &'static [&'static str];
    /// Whether its differentiable inputs may be f16 or bf16 (then it also takes the option
    /// `grad_dtype`).
    fn half_precision(&self) -> bool {
        false
    }
    /// Runs on the GPU in `session`: through its plan and input tensors when they fit.
    ///
    /// # Errors
    /// Bad inputs or options, device errors.
    fn gpu_in(&self, session: &mut GpuSession<'_>, case: &Case) -> Result<Evaluated<f32>>;
    /// Runs on the GPU, a one-off call.
    ///
    /// # Errors
    /// As [`LossDef::gpu_in`].
    fn gpu(&self, engine: &Engine, case: &Case) -> Result<Evaluated<f32>> {
        self.gpu_in(&mut GpuSession::new(engine), case)
    }
    /// Runs the multi-threaded CPU backend.
    ///
    /// # Errors
    /// Bad inputs or options.
    fn cpu(&self, case: &Case) -> Result<Evaluated<f32>>;
    /// Runs the f64 reference.
    ///
    /// # Errors
    /// Bad inputs or options.
    fn reference(&self, case: &Case) -> Result<Evaluated<f64>>;
    /// A random problem covering the loss's options, for `check`.
    fn random_case(&self, rng: &mut Rng) -> Case;
    /// The benchmark's problems for this loss, resident on the device and on the host,
    /// handed to `run` one at a time (each is dropped before the next is made): its own
    /// shapes, or `spec.shapes` when given.
    ///
    /// # Errors
    /// Allocation and device errors; those of `run`.
    fn bench(
        &self,
        engine: &Engine,
        rng: &mut Rng,
        spec: &BenchSpec,
        run: &mut BenchRun<'_>,
    ) -> Result<()>;
}

/// What `wgpu-losses bench` asks of each loss.
#[derive(Debug, Clone, Default)]
pub struct BenchSpec {
    /// A short run: fewer and smaller shapes.
    pub quick: bool,
    /// Shapes to run instead of the loss's own (`[N, C]`, `[N, D]`, or elements).
    pub shapes: Vec<Vec<usize>>,
    /// Element types of the differentiable inputs to run (default: f32, and bf16 for the
    /// losses that read 16-bit floats).
    pub dtypes: Vec<DType>,
}

impl BenchSpec {
    /// The element types to run for a loss that reads 16-bit floats (`half`) or not.
    pub fn dtypes(&self, half: bool) -> Vec<DType> {
        let wanted = match self.dtypes.is_empty() {
            true => vec![DType::F32, DType::BF16],
            false => self.dtypes.clone(),
        };
        wanted
            .into_iter()
            .filter(|&d| half || d == DType::F32)
            .collect()
    }

    /// The shapes to run: the requested ones, else `quick` or `full`.
    pub fn shapes(&self, quick: &[&[usize]], full: &[&[usize]]) -> Vec<Vec<usize>> {
        if !self.shapes.is_empty() {
            return self.shapes.clone();
        }
        let own = if self.quick { quick } else { full };
        own.iter().map(|s| s.to_vec()).collect()
    }

    /// The shapes as `[N, D]` pairs (a 1-D shape `[N]` is `[N, 1]`).
    ///
    /// # Errors
    /// [`Error::Shape`] for a shape of more than two dimensions.
    pub fn pairs(&self, quick: &[&[usize]], full: &[&[usize]]) -> Result<Vec<(usize, usize)>> {
        self.shapes(quick, full)
            .into_iter()
            .map(|s| match s[..] {
                [n] => Ok((n, 1)),
                [n, d] => Ok((n, d)),
                _ => Err(Error::Shape {
                    input: "--shape",
                    expected: "N or NxD".into(),
                    got: s,
                }),
            })
            .collect()
    }
}

/// One row of `wgpu-losses bench`: a problem timed on the GPU and on the CPU backend.
pub struct BenchJob<'a> {
    /// The row's name (the loss's, or a variant of it such as `mined batch-hard`).
    pub label: &'a str,
    /// The problem's shape.
    pub shape: Vec<usize>,
    /// The least bytes one call can move: inputs read once, gradients written once.
    pub bytes_min: usize,
    /// The bytes the GPU kernels of one call read and write (re-reads, intermediate arrays),
    /// from their structure; zero-fills are not kernels (`bench --json` adds the engine's
    /// count of them).
    pub bytes_moved: usize,
    /// Floating-point operations of one call, for the all-pairs losses' FLOP rate.
    pub flops: Option<f64>,
    /// Records one GPU call through a plan (inputs resident, gradients into buffers reused
    /// where the loss takes them).
    pub gpu: &'a mut dyn FnMut(&mut wgpu::CommandEncoder) -> Result<()>,
    /// One CPU backend call on the same problem.
    pub cpu: &'a mut dyn FnMut() -> Result<()>,
}

/// What times a [`BenchJob`].
pub type BenchRun<'r> = dyn FnMut(BenchJob<'_>) -> Result<()> + 'r;

impl Case {
    /// Checks that every input and option is known to `def` and the required inputs are here.
    ///
    /// # Errors
    /// [`Error::Unknown`] for a stray name, [`Error::Shape`] for a missing input.
    pub fn check_names(&self, def: &dyn LossDef) -> Result<()> {
        for name in self.inputs.keys() {
            if !def.inputs().iter().any(|s| s.name == name) {
                let known: Vec<_> = def.inputs().iter().map(|s| s.name).collect();
                return Err(Error::Unknown {
                    kind: "input",
                    name: name.clone(),
                    hint: format!(" for {} (inputs: {})", def.name(), known.join(", ")),
                });
            }
        }
        for spec in def.inputs().iter().filter(|s| s.differentiable) {
            let dtype = self.float_dtype(spec.name);
            if dtype != DType::F32 && !def.half_precision() {
                return Err(Error::DType {
                    input: spec.name,
                    expected: "f32 (this loss does not read 16-bit floats yet)",
                    got: dtype.name(),
                });
            }
        }
        for spec in def.inputs().iter().filter(|s| !s.differentiable) {
            if let Some(a) = self.input(spec.name) {
                if matches!(a.data, HostData::F16(_) | HostData::BF16(_)) {
                    return Err(Error::DType {
                        input: spec.name,
                        expected: "f32 or integers (only differentiable inputs may be 16-bit)",
                        got: a.data.dtype().name(),
                    });
                }
            }
        }
        for name in self.options.keys() {
            if name == "grad_dtype" && def.half_precision() {
                continue;
            }
            if !def.options().contains(&name.as_str()) {
                return Err(Error::Unknown {
                    kind: "option",
                    name: name.clone(),
                    hint: format!(
                        " for {} (options: {})",
                        def.name(),
                        def.options().join(", ")
                    ),
                });
            }
        }
        for spec in def.inputs().iter().filter(|s| s.required) {
            if !self.inputs.contains_key(spec.name) {
                return Err(Error::Shape {
                    input: spec.name,
                    expected: "an array (required input is missing)".into(),
                    got: vec![],
                });
            }
        }
        Ok(())
    }

    /// The input `name`, if given.
    pub fn input(&self, name: &str) -> Option<&HostArray> {
        self.inputs.get(name)
    }

    /// The float input `name` as f32 (16-bit floats widen exactly, integers are
    /// converted), if given.
    pub fn floats(&self, name: &'static str) -> Option<(Vec<f32>, Vec<usize>)> {
        self.input(name).map(|a| (a.data.to_f32(), a.shape.clone()))
    }

    /// The `grad_dtype` option: `None` (each input's own type) unless set.
    ///
    /// # Errors
    /// [`Error::Option`] for text that is not f32, f16 or bf16.
    pub fn grad_dtype_option(&self) -> Result<Option<DType>> {
        self.options
            .get("grad_dtype")
            .map(|t| t.parse())
            .transpose()
    }

    /// The element type the gradient of input `name` is written in: the `grad_dtype` option
    /// when set (and valid), else the input's own type.
    pub fn grad_dtype(&self, name: &str) -> DType {
        self.options
            .get("grad_dtype")
            .and_then(|d| d.parse().ok())
            .unwrap_or_else(|| self.float_dtype(name))
    }

    /// The element type of the float input `name`: f32 when absent or not a 16-bit float.
    pub fn float_dtype(&self, name: &str) -> DType {
        match self.input(name).map(|a| a.data.dtype()) {
            Some(d @ (DType::F16 | DType::BF16)) => d,
            _ => DType::F32,
        }
    }

    /// Applies the `dtype` option (`f32`, `f16` or `bf16`), if set: every differentiable
    /// input of `def` is rounded to it (to nearest, ties to even) and the option removed.
    /// Other inputs keep their types.
    ///
    /// # Errors
    /// [`Error::Option`] for another dtype, or for a 16-bit dtype with a loss that reads f32
    /// only.
    pub fn apply_dtype(mut self, def: &dyn LossDef) -> Result<Self> {
        let Some(text) = self.options.remove("dtype") else {
            return Ok(self);
        };
        let dtype: DType = text.parse()?;
        for spec in def.inputs().iter().filter(|s| s.differentiable) {
            if let Some(a) = self.inputs.get_mut(spec.name) {
                if a.data.dtype().is_float() {
                    *a = HostArray::rounded(&a.shape, &a.data.to_f32(), dtype);
                }
            }
        }
        Ok(self)
    }

    /// The option `name` parsed, or `default`.
    ///
    /// # Errors
    /// [`Error::Option`] when the text does not parse.
    pub fn option<T: FromStr>(&self, name: &'static str, default: T) -> Result<T> {
        match self.options.get(name) {
            None => Ok(default),
            Some(text) => text.parse().map_err(|_| Error::Option {
                option: name,
                value: text.clone(),
                reason: "does not parse as the option's type",
            }),
        }
    }

    /// The boolean option `name` (true/false/1/0), or `default`.
    ///
    /// # Errors
    /// [`Error::Option`] for other text.
    pub fn flag(&self, name: &'static str, default: bool) -> Result<bool> {
        match self.options.get(name).map(|s| s.to_ascii_lowercase()) {
            None => Ok(default),
            Some(t) if t == "true" || t == "1" => Ok(true),
            Some(t) if t == "false" || t == "0" => Ok(false),
            Some(t) => Err(Error::Option {
                option: name,
                value: t,
                reason: "expected true or false",
            }),
        }
    }

    /// Adds an input (builder style).
    pub fn with(mut self, name: &str, a: HostArray) -> Self {
        self.inputs.insert(name.into(), a);
        self
    }

    /// Adds an option (builder style).
    pub fn set(mut self, name: &str, value: impl ToString) -> Self {
        self.options.insert(name.into(), value.to_string());
        self
    }
}

/// Integer labels as i32, from an integer array or a float array of whole numbers.
///
/// # Errors
/// [`Error::Value`] naming the first value that is not a whole number in i32's range.
pub fn labels_i32(input: &'static str, a: &HostArray) -> Result<Vec<i32>> {
    let bad = |row: usize, value: String| Error::Value {
        input,
        row,
        value,
        reason: "labels must be whole numbers in i32's range".into(),
    };
    match &a.data {
        HostData::I64(v) => v
            .iter()
            .enumerate()
            .map(|(i, &x)| i32::try_from(x).map_err(|_| bad(i, x.to_string())))
            .collect(),
        floats => floats
            .to_f32()
            .iter()
            .enumerate()
            .map(|(i, &x)| {
                if x.fract() == 0.0 && x.abs() < 2.1e9 {
                    Ok(x as i32)
                } else {
                    Err(bad(i, x.to_string()))
                }
            })
            .collect(),
    }
}

/// A host upstream gradient for a CPU run: per item when the reduction is none and it has one
/// value per item, a scalar when it has one value, ones when absent.
pub(crate) fn host_upstream(
    host: Option<&[f32]>,
    items: usize,
    reduction: Reduction,
) -> Upstream<'_, [f32]> {
    match host {
        Some(g) if reduction == Reduction::None && g.len() == items => Upstream::PerItem(g),
        Some(g) => g.first().map_or(Upstream::Ones, |&s| Upstream::Scalar(s)),
        None => Upstream::Ones,
    }
}

/// A host upstream gradient moved to the device for a GPU run: per item when the reduction
/// is none and it has one value per item of `shape`, else a scalar.
pub(crate) struct DeviceUpstream {
    per_item: Option<Tensor>,
    scalar: Option<f32>,
}

impl DeviceUpstream {
    pub(crate) fn upload(
        session: &mut GpuSession<'_>,
        host: Option<&[f32]>,
        shape: &[usize],
        reduction: Reduction,
    ) -> Result<Self> {
        let items: usize = shape.iter().product();
        Ok(match host {
            // One item's upstream is a scalar (which is checked to be finite).
            Some(g) if reduction == Reduction::None && g.len() == items && items > 1 => Self {
                per_item: Some(session.upload("upstream", g, shape)?),
                scalar: None,
            },
            Some(g) => Self {
                per_item: None,
                scalar: g.first().copied(),
            },
            None => Self {
                per_item: None,
                scalar: None,
            },
        })
    }

    pub(crate) fn get(&self) -> Upstream<'_, Tensor> {
        match (&self.per_item, self.scalar) {
            (Some(t), _) => Upstream::PerItem(t),
            (None, Some(g)) => Upstream::Scalar(g),
            (None, None) => Upstream::Ones,
        }
    }
}

/// The rows of a metric loss: its differentiable inputs, checked by the loss's family.
pub(crate) struct Rows {
    /// (name, data) in declaration order, widened to f32.
    pub rows: Vec<(&'static str, Vec<f32>)>,
    pub n: usize,
    pub dim: usize,
    /// The rows' element type (one for all, by the families' rules).
    pub dtype: DType,
}

impl Rows {
    /// `arrays` as rows once `check` (the family's rule, given each input's name and shape)
    /// has accepted them and given (N, D).
    ///
    /// # Errors
    /// Those of `check`.
    pub(crate) fn checked(
        arrays: RowArrays,
        check: impl FnOnce(&[(&'static str, Arg<'_>)]) -> Result<(usize, usize)>,
    ) -> Result<Self> {
        let args: Vec<_> = arrays
            .iter()
            .map(|(name, _, shape, dtype)| {
                let arg = Arg {
                    shape,
                    dtype: *dtype,
                };
                (*name, arg)
            })
            .collect();
        let (n, dim) = check(&args)?;
        let dtype = arrays.first().map_or(DType::F32, |a| a.3);
        Ok(Rows {
            rows: arrays
                .into_iter()
                .map(|(name, x, _, _)| (name, x))
                .collect(),
            n,
            dim,
            dtype,
        })
    }

    /// The data of the `i`-th row input.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.rows[i].1
    }
}

/// The differentiable inputs of a loss as given (widened to f32), with their shapes and
/// element types, before its family's checks.
pub(crate) type RowArrays = Vec<(&'static str, Vec<f32>, Vec<usize>, DType)>;

/// Float values with their shape.
pub(crate) type Values = (Vec<f32>, Vec<usize>);

impl Case {
    /// The differentiable inputs of `def` (floats), with their shapes.
    pub(crate) fn row_arrays(&self, def: &dyn LossDef) -> RowArrays {
        def.inputs()
            .iter()
            .filter(|s| s.differentiable)
            .map(|s| {
                let (x, shape) = self.floats(s.name).expect("checked: required");
                (s.name, x, shape, self.float_dtype(s.name))
            })
            .collect()
    }

    /// `grad_output`: one element is a scalar; anything else per-item values with their
    /// shape, for the loss's checks to judge.
    pub(crate) fn upstream_parts(&self) -> (Option<f32>, Option<Values>) {
        match self.floats("grad_output") {
            Some((g, s)) if s.iter().product::<usize>() == 1 => (Some(g[0]), None),
            Some(per_item) => (None, Some(per_item)),
            None => (None, None),
        }
    }

    /// `grad_output` of a loss that is always a mean, by the rule of every backend: a finite
    /// scalar (1 when absent).
    ///
    /// # Errors
    /// As `Upstream::scalar`.
    pub(crate) fn mean_upstream(&self) -> Result<f32> {
        let (scalar, per_item) = self.upstream_parts();
        let per_item = per_item.as_ref().map(|(_, s)| Arg::f32(s));
        match (scalar, &per_item) {
            (_, Some(arg)) => Upstream::PerItem(arg),
            (Some(g), None) => Upstream::Scalar(g),
            (None, None) => Upstream::Ones,
        }
        .scalar()
    }

    /// `reduction` for the losses that are always a mean: only `mean` is accepted.
    ///
    /// # Errors
    /// [`Error::Option`] for any other reduction.
    pub(crate) fn mean_only(&self) -> Result<()> {
        match self.options.get("reduction").map(String::as_str) {
            None | Some("mean") => Ok(()),
            Some(other) => Err(Error::Option {
                option: "reduction",
                value: other.into(),
                reason: "this loss is a mean over anchors, pairs or triplets: only mean",
            }),
        }
    }
}

/// `spec(name, differentiable, required)`: an [`InputSpec`] in one line.
pub(crate) const fn spec(name: &'static str, differentiable: bool, required: bool) -> InputSpec {
    InputSpec {
        name,
        differentiable,
        required,
    }
}

/// The upstream gradient input every loss takes.
pub(crate) const GRAD_OUTPUT: InputSpec = spec("grad_output", false, false);

/// f32 values widened to f64, for the reference.
pub(crate) fn f64s(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| x as f64).collect()
}

impl Case {
    /// Adds a random `grad_output`: per item of `shape` when `per_item` (reduction none),
    /// else a scalar.
    pub(crate) fn with_random_upstream(
        self,
        rng: &mut Rng,
        shape: &[usize],
        per_item: bool,
    ) -> Self {
        let g = if per_item {
            let n = shape.iter().product();
            HostArray::f32(shape, rng.normals(n, 1.0))
        } else {
            HostArray::f32(&[], vec![rng.range(-2.0, 2.0) as f32])
        };
        self.with("grad_output", g)
    }
}

/// f32 values held as a float type for a CPU call: borrowed as f32, or narrowed (exactly,
/// for values already rounded to the type) into a 16-bit copy.
#[derive(Debug)]
pub(crate) enum Narrowed<'a> {
    F32(&'a [f32]),
    F16(Vec<half::f16>),
    BF16(Vec<half::bf16>),
}

impl<'a> Narrowed<'a> {
    pub(crate) fn new(values: &'a [f32], dtype: DType) -> Self {
        match dtype {
            DType::F16 => Narrowed::F16(values.iter().map(|&x| half::f16::from_f32(x)).collect()),
            DType::BF16 => {
                Narrowed::BF16(values.iter().map(|&x| half::bf16::from_f32(x)).collect())
            }
            _ => Narrowed::F32(values),
        }
    }

    pub(crate) fn floats(&self) -> Floats<'_> {
        match self {
            Narrowed::F32(v) => Floats::F32(v),
            Narrowed::F16(v) => Floats::F16(v),
            Narrowed::BF16(v) => Floats::BF16(v),
        }
    }
}
