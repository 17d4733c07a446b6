//! Fused softmax cross-entropy (`shaders/cross_entropy.wgsl`; f64 twin in
//! `reference::cross_entropy`).

use crate::cpu::cross_entropy::{cross_entropy as cpu_cross_entropy, HostRowInputs, HostTarget};
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::launch::KernelKey;
use crate::losses::softmax_focal::SoftmaxFocal;
use crate::losses::{expect_shape, finite, LossOutput, LossValues, Reduction, Status, Upstream};
use crate::random::Rng;
use crate::reference::cross_entropy::{self as reference, RefTarget};
use crate::reference::softmax_focal::softmax_focal as focal_reference;
use crate::registry::{
    labels_i32, Case, DeviceUpstream, Evaluated, HostArray, HostData, InputSpec, LossDef,
};
use crate::shader::{RowIo, Shader};
use crate::tensor::{DType, Tensor};

/// Softmax cross-entropy options. Defaults are PyTorch's `F.cross_entropy` defaults.
///
/// ```
/// use wgpu_losses::{CrossEntropy, Reduction};
/// let ce = CrossEntropy::new().label_smoothing(0.1).reduction(Reduction::Sum);
/// assert_eq!(ce.ignore_index, -100);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct CrossEntropy {
    /// Combination of the per-row losses (default mean, weighted by `w[y]`).
    pub reduction: Reduction,
    /// Class-index rows with this target contribute nothing (default -100).
    pub ignore_index: i32,
    /// ε in [0, 1]: the target is mixed with the uniform distribution (default 0).
    pub label_smoothing: f32,
    /// z-loss coefficient: adds `z * lse²` per row (default 0).
    pub z_loss: f32,
    /// Logit soft-capping `x ← c·tanh(x/c)` before the softmax (default off).
    pub softcap: Option<f32>,
    /// Write the gradient over the logits buffer instead of a new buffer (default false).
    pub in_place: bool,
    /// Compute the gradient (default true); false gives the loss alone.
    pub gradient: bool,
    /// Softmax focal loss's γ: set by [`crate::SoftmaxFocal`], which shares this row kernel.
    pub(crate) focal: Option<f32>,
}

impl Default for CrossEntropy {
    fn default() -> Self {
        Self {
            reduction: Reduction::Mean,
            ignore_index: -100,
            label_smoothing: 0.0,
            z_loss: 0.0,
            softcap: None,
            in_place: false,
            gradient: true,
            focal: None,
        }
    }
}

/// The target of a cross-entropy call.
#[derive(Debug, Clone, Copy)]
pub enum Target<'a> {
    /// Class indices, i32 `[N]`.
    Classes(&'a Tensor),
    /// Class probabilities, f32 `[N, C]`.
    Probabilities(&'a Tensor),
}

/// The device inputs of one cross-entropy call.
#[derive(Debug, Clone, Copy)]
pub struct CrossEntropyInputs<'a> {
    /// f32 `[N, C]`.
    pub logits: &'a Tensor,
    /// Class indices or probabilities.
    pub target: Target<'a>,
    /// Optional per-class weight, f32 `[C]`.
    pub weight: Option<&'a Tensor>,
    /// Upstream gradient (default ones).
    pub upstream: Upstream<'a>,
    /// Where to write the gradient, f32 `[N, C]` (default: a new tensor). Reusing one
    /// buffer across calls saves an allocation and its zero-fill per call.
    pub grad_out: Option<&'a Tensor>,
}

impl<'a> CrossEntropyInputs<'a> {
    /// Logits and target, no weight, upstream gradient of ones.
    pub fn new(logits: &'a Tensor, target: Target<'a>) -> Self {
        Self {
            logits,
            target,
            weight: None,
            upstream: Upstream::Ones,
            grad_out: None,
        }
    }

    /// Writes the gradient into `grad` instead of a new tensor.
    pub fn grad_out(mut self, grad: &'a Tensor) -> Self {
        self.grad_out = Some(grad);
        self
    }

    /// Adds per-class weights.
    pub fn weight(mut self, weight: &'a Tensor) -> Self {
        self.weight = Some(weight);
        self
    }

    /// Sets the upstream gradient.
    pub fn upstream(mut self, upstream: Upstream<'a>) -> Self {
        self.upstream = upstream;
        self
    }
}

/// Mirrors `Params` in `shaders/cross_entropy.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct CeParams {
    pub n: u32,
    pub c: u32,
    pub row_base: u32,
    pub flags: u32,
    pub ignore_index: i32,
    pub smoothing: f32,
    pub z_loss: f32,
    pub softcap: f32,
    pub grad_output: f32,
    pub denom: f32,
    pub gamma: f32,
    pub _pad: u32,
}

const DENOM_FROM_BUFFER: u32 = 4;
const UPSTREAM_PER_ROW: u32 = 8;
const WANT_GRAD: u32 = 16;

/// Invocations per row: a power of two up to the workgroup size, with about `per_thread`
/// elements each. Software adapters run a workgroup's invocations in turn and pay for each
/// barrier, so they get long runs per invocation and many rows per workgroup.
fn row_threads(engine: &Engine, c: usize) -> u32 {
    let per_thread = if engine.adapter_info().device_type == wgpu::DeviceType::Cpu {
        1024
    } else {
        16
    };
    (c.div_ceil(per_thread).next_power_of_two() as u32).min(engine.workgroup_size())
}

impl CrossEntropy {
    /// PyTorch's defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the reduction.
    pub fn reduction(mut self, r: Reduction) -> Self {
        self.reduction = r;
        self
    }

    /// Sets the ignored target value.
    pub fn ignore_index(mut self, i: i32) -> Self {
        self.ignore_index = i;
        self
    }

    /// Sets label smoothing ε.
    pub fn label_smoothing(mut self, eps: f32) -> Self {
        self.label_smoothing = eps;
        self
    }

    /// Sets the z-loss coefficient.
    pub fn z_loss(mut self, z: f32) -> Self {
        self.z_loss = z;
        self
    }

    /// Caps logits at `c·tanh(x/c)`; `None` turns capping off.
    pub fn softcap(mut self, c: Option<f32>) -> Self {
        self.softcap = c;
        self
    }

    /// Writes the gradient over the logits.
    pub fn in_place(mut self, yes: bool) -> Self {
        self.in_place = yes;
        self
    }

    /// Whether to compute the gradient at all.
    pub fn gradient(mut self, yes: bool) -> Self {
        self.gradient = yes;
        self
    }

    /// Checks the options.
    ///
    /// # Errors
    /// [`Error::Option`] for ε outside [0, 1], a negative or non-finite z-loss, or a softcap
    /// that is not a positive finite number.
    pub fn validate(&self) -> Result<()> {
        let bad = |option, value: f32, reason| {
            Err(Error::Option {
                option,
                value: value.to_string(),
                reason,
            })
        };
        if self.reduction == Reduction::BatchMean {
            return Err(Error::Option {
                option: "reduction",
                value: "batchmean".into(),
                reason: "batchmean is for kl-div; use mean",
            });
        }
        if !(0.0..=1.0).contains(&self.label_smoothing) {
            return bad("label_smoothing", self.label_smoothing, "must be in [0, 1]");
        }
        if !(self.z_loss.is_finite() && self.z_loss >= 0.0) {
            return bad("z_loss", self.z_loss, "must be finite and >= 0");
        }
        if let Some(c) = self.softcap {
            if !(c.is_finite() && c > 0.0) {
                return bad("softcap", c, "must be finite and > 0");
            }
        }
        Ok(())
    }

    /// Checks the inputs' types and shapes against each other; returns (N, C).
    fn check_inputs(&self, inputs: &CrossEntropyInputs<'_>) -> Result<(usize, usize)> {
        self.validate()?;
        let logits = inputs.logits;
        logits.expect_dtype("logits", DType::F32)?;
        let &[n, c] = logits.shape() else {
            return Err(Error::Shape {
                input: "logits",
                expected: "[N, C]".into(),
                got: logits.shape().to_vec(),
            });
        };
        if n == 0 {
            return Err(Error::Empty("logits"));
        }
        if c == 0 {
            return Err(Error::Shape {
                input: "logits",
                expected: "[N, C] with C >= 1".into(),
                got: vec![n, c],
            });
        }
        match inputs.target {
            Target::Classes(t) => {
                t.expect_dtype("target", DType::I32)?;
                expect_shape("target", t, &[n])?;
            }
            Target::Probabilities(t) => {
                t.expect_dtype("target", DType::F32)?;
                expect_shape("target", t, &[n, c])?;
            }
        }
        if let Some(w) = inputs.weight {
            w.expect_dtype("weight", DType::F32)?;
            expect_shape("weight", w, &[c])?;
        }
        if let Some(g) = inputs.grad_out {
            g.expect_dtype("grad_out", DType::F32)?;
            expect_shape("grad_out", g, &[n, c])?;
            if self.in_place || !self.gradient {
                return Err(Error::Option {
                    option: "grad_out",
                    value: "given".into(),
                    reason: "conflicts with in_place and with gradient(false)",
                });
            }
        }
        match inputs.upstream {
            Upstream::Ones => {}
            Upstream::Scalar(g) => finite("grad_output", g)?,
            Upstream::PerItem(g) => {
                if self.reduction != Reduction::None {
                    return Err(Error::Option {
                        option: "grad_output",
                        value: format!("{:?}", g.shape()),
                        reason: "a per-item upstream gradient needs reduction none",
                    });
                }
                g.expect_dtype("grad_output", DType::F32)?;
                expect_shape("grad_output", g, &[n])?;
            }
        }
        Ok((n, c))
    }

    /// Records the loss (and gradient) into `encoder`. Submit the encoder, then read the
    /// results with [`Engine::read_output`] (which also reports invalid targets) or use the
    /// device tensors directly; call [`Engine::check_status`] to validate targets.
    ///
    /// # Errors
    /// Invalid options or shapes ([`Error::Option`], [`Error::Shape`], [`Error::DType`],
    /// [`Error::Empty`]), sizes past the adapter's limits, wgpu errors.
    pub fn record(
        &self,
        engine: &Engine,
        encoder: &mut wgpu::CommandEncoder,
        inputs: &CrossEntropyInputs<'_>,
    ) -> Result<LossOutput> {
        let (n, c) = self.check_inputs(inputs)?;
        engine.scoped(|| self.record_checked(engine, encoder, inputs, n, c))
    }

    fn record_checked(
        &self,
        engine: &Engine,
        encoder: &mut wgpu::CommandEncoder,
        inputs: &CrossEntropyInputs<'_>,
        n: usize,
        c: usize,
    ) -> Result<LossOutput> {
        let wg = engine.workgroup_size();
        let threads = row_threads(engine, c);
        let team = engine.subgroup_width().min(threads);
        let rows_per_group = (wg / threads) as usize;
        let probs = matches!(inputs.target, Target::Probabilities(_));
        let target = match inputs.target {
            Target::Classes(t) | Target::Probabilities(t) => t,
        };
        let windows = engine.row_windows(n, c as u64 * 4, true)?;

        let loss_rows = engine.zeros(&[n], DType::F32)?;
        let loss = match self.reduction {
            Reduction::None => loss_rows.clone(),
            _ => engine.zeros(&[], DType::F32)?,
        };
        let grad = match (self.gradient, self.in_place) {
            (false, _) => None,
            (true, true) => Some(inputs.logits.clone()),
            (true, false) => match inputs.grad_out {
                Some(g) => Some(g.clone()),
                None => Some(engine.zeros(&[n, c], DType::F32)?),
            },
        };
        let status = engine.scratch(1);
        let denom = engine.scratch(1);
        let dummy = engine.scratch(4);
        // A read-write binding cannot share a buffer with read-only ones.
        let unused_grad = engine.scratch(1);

        let denom_from_buffer = self.reduction == Reduction::Mean && !probs;
        let flags = [
            (
                UPSTREAM_PER_ROW,
                matches!(inputs.upstream, Upstream::PerItem(_)),
            ),
            (WANT_GRAD, grad.is_some()),
            (DENOM_FROM_BUFFER, denom_from_buffer),
        ]
        .into_iter()
        .filter(|&(_, on)| on)
        .fold(0, |flags, (flag, _)| flags | flag);
        let host_denom = match self.reduction {
            Reduction::Mean if probs => n as f32,
            _ => 1.0,
        };
        let grad_output = match inputs.upstream {
            Upstream::Scalar(g) => g,
            _ => 1.0,
        };

        let io = RowIo {
            in_place: self.in_place && grad.is_some(),
            vec4: c.is_multiple_of(4),
        };
        let shader = Shader::CrossEntropy(io);
        let key = |entry, threads| KernelKey {
            shader,
            entry,
            overrides: vec![
                ("WG_SIZE", wg),
                ("ROW_THREADS", threads),
                ("TEAM", team),
                ("PROBS", probs as u32),
                ("WEIGHTED", inputs.weight.is_some() as u32),
                ("SUMS", (probs || self.label_smoothing > 0.0) as u32),
                ("CAPPED", self.softcap.is_some() as u32),
                ("FOCAL", self.focal.is_some() as u32),
            ],
        };
        let row_elems = if probs { c } else { 1 };
        let launch = |entry, encoder: &mut wgpu::CommandEncoder| -> Result<()> {
            for w in &windows {
                let rows = w.len();
                let params = CeParams {
                    n: rows as u32,
                    c: c as u32,
                    row_base: w.start as u32,
                    flags,
                    ignore_index: self.ignore_index,
                    smoothing: self.label_smoothing,
                    z_loss: self.z_loss,
                    softcap: self.softcap.unwrap_or(1.0),
                    grad_output,
                    denom: host_denom,
                    gamma: self.focal.unwrap_or(0.0),
                    _pad: 0,
                };
                let uniform = engine.uniform(&params);
                let mut resources = vec![
                    uniform.as_entire_binding(),
                    target.window(w.start * row_elems, rows * row_elems),
                    match inputs.weight {
                        Some(t) => t.binding(),
                        None => dummy.as_entire_binding(),
                    },
                    match inputs.upstream {
                        Upstream::PerItem(t) => t.window(w.start, rows),
                        _ => dummy.as_entire_binding(),
                    },
                    denom.as_entire_binding(),
                    loss_rows.window(w.start, rows),
                    status.as_entire_binding(),
                    inputs.logits.window(w.start * c, rows * c),
                ];
                if !io.in_place {
                    resources.push(match &grad {
                        Some(g) => g.window(w.start * c, rows * c),
                        None => unused_grad.as_entire_binding(),
                    });
                }
                let (groups, threads) = if entry == "row_weights" {
                    (rows.div_ceil(wg as usize), wg)
                } else {
                    (rows.div_ceil(rows_per_group), threads)
                };
                engine.dispatch(encoder, key(entry, threads), &resources, groups as u32)?;
            }
            Ok(())
        };

        if denom_from_buffer {
            launch("row_weights", encoder)?;
            engine.record_sum(encoder, loss_rows.buffer(), n, 1.0, None, &denom)?;
        }
        launch("main", encoder)?;
        match self.reduction {
            Reduction::None => {}
            Reduction::Sum => {
                engine.record_sum(encoder, loss_rows.buffer(), n, 1.0, None, loss.buffer())?
            }
            Reduction::Mean if probs => engine.record_sum(
                encoder,
                loss_rows.buffer(),
                n,
                1.0 / n as f32,
                None,
                loss.buffer(),
            )?,
            Reduction::Mean | Reduction::BatchMean => engine.record_sum(
                encoder,
                loss_rows.buffer(),
                n,
                1.0,
                Some(&denom),
                loss.buffer(),
            )?,
        }

        let status = (!probs).then(|| Status {
            flag: status,
            input: "target",
            values: target.clone(),
            reason: format!(
                "class index outside [0, {c}) and not ignore_index {}",
                self.ignore_index
            ),
        });
        Ok(LossOutput {
            loss,
            grads: grad.into_iter().map(|g| ("logits", g)).collect(),
            status,
        })
    }

    /// Records, submits, waits and reads back: the one-call convenience.
    ///
    /// # Errors
    /// As [`CrossEntropy::record`], plus [`Error::Value`] for a class index outside `[0, C)`
    /// that is not `ignore_index` (naming the first such row and its value).
    pub fn run(&self, engine: &Engine, inputs: &CrossEntropyInputs<'_>) -> Result<LossValues> {
        engine.execute(|e| self.record(engine, e, inputs))
    }
}

/// `cross-entropy` and `softmax-focal` (which runs on the same row kernel) for the command
/// line (see [`crate::registry`]).
pub(crate) struct RowDef {
    focal: bool,
}

impl RowDef {
    pub(crate) const CROSS_ENTROPY: RowDef = RowDef { focal: false };
    pub(crate) const SOFTMAX_FOCAL: RowDef = RowDef { focal: true };
}

/// A cross-entropy problem on the host, checked for consistent shapes.
struct HostProblem {
    opts: CrossEntropy,
    logits: Vec<f32>,
    n: usize,
    c: usize,
    classes: Option<Vec<i32>>,
    probs: Option<Vec<f32>>,
    weight: Option<Vec<f32>>,
    upstream: Option<Vec<f32>>,
}

impl HostProblem {
    fn from_case(def: &RowDef, case: &Case) -> Result<Self> {
        case.check_names(def)?;
        let ignore: i64 = case.option("ignore_index", -100)?;
        let ignore = i32::try_from(ignore).map_err(|_| Error::Option {
            option: "ignore_index",
            value: ignore.to_string(),
            reason: "must fit in i32",
        })?;
        let reduction = case.option("reduction", Reduction::Mean)?;
        let opts = if def.focal {
            SoftmaxFocal::new()
                .reduction(reduction)
                .ignore_index(ignore)
                .gamma(case.option("gamma", 2.0)?)
                .row_kernel()
        } else {
            let softcap = match case.options.get("softcap").map(String::as_str) {
                None | Some("none") | Some("off") => None,
                Some(_) => Some(case.option("softcap", 0.0f32)?),
            };
            CrossEntropy::new()
                .reduction(reduction)
                .ignore_index(ignore)
                .label_smoothing(case.option("label_smoothing", 0.0)?)
                .z_loss(case.option("z_loss", 0.0)?)
                .softcap(softcap)
        };
        opts.validate()?;
        let (logits, shape) = case.floats("logits").unwrap_or_default();
        let &[n, c] = shape.as_slice() else {
            return Err(Error::shape("logits", "[N, C]".into(), &shape));
        };
        if n == 0 {
            return Err(Error::Empty("logits"));
        }
        if c == 0 {
            return Err(Error::shape("logits", "[N, C] with C >= 1".into(), &shape));
        }
        let target = case.input("target").expect("checked: required");
        let (mut classes, mut probs) = (None, None);
        match (&target.data, target.shape.as_slice()) {
            (_, [m]) if *m == n => classes = Some(labels_i32("target", target)?),
            (HostData::F32(p), [m, k]) if *m == n && *k == c && !def.focal => {
                probs = Some(p.clone())
            }
            _ => {
                return Err(Error::shape(
                    "target",
                    if def.focal {
                        format!("[{n}] class indices")
                    } else {
                        format!("[{n}] class indices or [{n}, {c}] float probabilities")
                    },
                    &target.shape,
                ))
            }
        }
        let weight_name = if def.focal { "alpha" } else { "weight" };
        let weight = match case.floats(weight_name) {
            Some((w, s)) if s == [c] => Some(w),
            Some((_, s)) => return Err(Error::shape(weight_name, format!("[{c}]"), &s)),
            None => None,
        };
        let upstream = match case.floats("grad_output") {
            Some((g, s)) if s.iter().product::<usize>() == 1 => Some(g),
            Some((g, s)) if s == [n] && opts.reduction == Reduction::None => Some(g),
            Some((_, s)) => {
                return Err(Error::shape(
                    "grad_output",
                    format!("a scalar, or [{n}] with reduction none"),
                    &s,
                ))
            }
            None => None,
        };
        Ok(Self {
            opts,
            logits,
            n,
            c,
            classes,
            probs,
            weight,
            upstream,
        })
    }

    fn loss_shape(&self) -> Vec<usize> {
        match self.opts.reduction {
            Reduction::None => vec![self.n],
            _ => vec![],
        }
    }

    fn evaluated(&self, out: LossValues) -> Evaluated<f32> {
        Evaluated::from_values(out, self.loss_shape(), &[self.n, self.c])
    }
}

impl LossDef for RowDef {
    fn name(&self) -> &'static str {
        if self.focal {
            "softmax-focal"
        } else {
            "cross-entropy"
        }
    }

    fn inputs(&self) -> &'static [InputSpec] {
        const FOCAL: [InputSpec; 4] = [
            InputSpec {
                name: "logits",
                differentiable: true,
                required: true,
            },
            InputSpec {
                name: "target",
                differentiable: false,
                required: true,
            },
            InputSpec {
                name: "alpha",
                differentiable: false,
                required: false,
            },
            InputSpec {
                name: "grad_output",
                differentiable: false,
                required: false,
            },
        ];
        if self.focal {
            return &FOCAL;
        }
        const INPUTS: [InputSpec; 4] = [
            InputSpec {
                name: "logits",
                differentiable: true,
                required: true,
            },
            InputSpec {
                name: "target",
                differentiable: false,
                required: true,
            },
            InputSpec {
                name: "weight",
                differentiable: false,
                required: false,
            },
            InputSpec {
                name: "grad_output",
                differentiable: false,
                required: false,
            },
        ];
        &INPUTS
    }

    fn options(&self) -> &'static [&'static str] {
        if self.focal {
            return &["reduction", "gamma", "ignore_index"];
        }
        &[
            "reduction",
            "ignore_index",
            "label_smoothing",
            "z_loss",
            "softcap",
        ]
    }

    fn gpu(&self, engine: &Engine, case: &Case) -> Result<Evaluated<f32>> {
        let p = HostProblem::from_case(self, case)?;
        let (n, c) = (p.n, p.c);
        let logits = engine.upload(&p.logits, &[n, c])?;
        let target = match (&p.classes, &p.probs) {
            (Some(y), _) => engine.upload_i32(y, &[n])?,
            (_, Some(t)) => engine.upload(t, &[n, c])?,
            _ => unreachable!("one target kind is set"),
        };
        let target = match p.classes {
            Some(_) => Target::Classes(&target),
            None => Target::Probabilities(&target),
        };
        let weight = p
            .weight
            .as_ref()
            .map(|w| engine.upload(w, &[c]))
            .transpose()?;
        let upstream =
            DeviceUpstream::upload(engine, p.upstream.as_deref(), &[n], p.opts.reduction)?;
        let mut inputs = CrossEntropyInputs::new(&logits, target);
        inputs.weight = weight.as_ref();
        inputs.upstream = upstream.get();
        let out = p.opts.run(engine, &inputs)?;
        Ok(p.evaluated(out))
    }

    fn cpu(&self, case: &Case) -> Result<Evaluated<f32>> {
        let p = HostProblem::from_case(self, case)?;
        let target = match (&p.classes, &p.probs) {
            (Some(y), _) => HostTarget::Classes(y),
            (_, Some(t)) => HostTarget::Probabilities(t),
            _ => unreachable!("one target kind is set"),
        };
        let inputs = HostRowInputs {
            logits: &p.logits,
            shape: (p.n, p.c),
            target,
            weight: p.weight.as_deref(),
            upstream: p.upstream.as_deref().unwrap_or(&[]),
        };
        Ok(p.evaluated(cpu_cross_entropy(&p.opts, &inputs)?))
    }

    fn reference(&self, case: &Case) -> Result<Evaluated<f64>> {
        let p = HostProblem::from_case(self, case)?;
        let to64 = |v: &[f32]| v.iter().map(|&x| x as f64).collect::<Vec<f64>>();
        let classes: Option<Vec<i64>> = p
            .classes
            .as_ref()
            .map(|y| y.iter().map(|&v| v as i64).collect());
        let probs = p.probs.as_deref().map(to64);
        let target = match (&classes, &probs) {
            (Some(y), _) => RefTarget::Classes(y),
            (_, Some(t)) => RefTarget::Probabilities(t),
            _ => unreachable!("one target kind is set"),
        };
        let weight = p.weight.as_deref().map(to64);
        let upstream = p.upstream.as_deref().map_or(vec![1.0], to64);
        let out = match (p.opts.focal, &classes) {
            (Some(gamma), Some(y)) => {
                let focal = SoftmaxFocal::new()
                    .reduction(p.opts.reduction)
                    .ignore_index(p.opts.ignore_index)
                    .gamma(gamma);
                let logits = to64(&p.logits);
                focal_reference(&focal, &logits, (p.n, p.c), y, weight.as_deref(), &upstream)?
            }
            _ => reference::cross_entropy(
                &p.opts,
                &to64(&p.logits),
                (p.n, p.c),
                target,
                weight.as_deref(),
                &upstream,
            )?,
        };
        Ok(Evaluated::from_reference(out, p.loss_shape(), &[p.n, p.c]))
    }

    fn random_case(&self, rng: &mut Rng) -> Case {
        let n = 1 + rng.below(64);
        let c = (rng.range(0.0, 12.0).exp2() as usize).max(1);
        let scale = *[1.0, 5.0, 100.0].get(rng.below(3)).unwrap_or(&1.0);
        let mut case = Case::default()
            .with("logits", HostArray::f32(&[n, c], rng.normals(n * c, scale)))
            .set("reduction", ["mean", "sum", "none"][rng.below(3)]);
        if self.focal {
            let y = (0..n)
                .map(|_| {
                    if rng.chance(0.2) {
                        -100
                    } else {
                        rng.below(c) as i64
                    }
                })
                .collect();
            case = case
                .with("target", HostArray::i64(&[n], y))
                .set("gamma", [0.0, 0.5, 1.0, 2.0, 3.0][rng.below(5)]);
            if rng.chance(0.5) {
                let a = (0..c).map(|_| rng.range(0.1, 1.0) as f32).collect();
                case = case.with("alpha", HostArray::f32(&[c], a));
            }
            return case;
        }
        if rng.chance(0.3) {
            let mut t: Vec<f32> = (0..n * c).map(|_| rng.uniform() as f32).collect();
            for row in t.chunks_mut(c) {
                let s: f32 = row.iter().sum();
                row.iter_mut().for_each(|v| *v /= s);
            }
            case = case.with("target", HostArray::f32(&[n, c], t));
        } else {
            let y = (0..n)
                .map(|_| {
                    if rng.chance(0.2) {
                        -100
                    } else {
                        rng.below(c) as i64
                    }
                })
                .collect();
            case = case.with("target", HostArray::i64(&[n], y));
        }
        if rng.chance(0.5) {
            let w = (0..c).map(|_| rng.range(0.1, 2.0) as f32).collect();
            case = case.with("weight", HostArray::f32(&[c], w));
        }
        if rng.chance(0.5) {
            case = case.set("label_smoothing", rng.range(0.0, 1.0) as f32);
        }
        if rng.chance(0.3) {
            case = case.set("z_loss", rng.range(0.0, 1e-3) as f32);
        }
        if rng.chance(0.3) {
            case = case.set("softcap", rng.range(1.0, 50.0) as f32);
        }
        case
    }
}
