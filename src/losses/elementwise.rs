//! Elementwise losses (`shaders/elementwise.wgsl`; f64 twin in `reference::elementwise`):
//! regression, distribution and margin losses, BCE with logits and sigmoid focal loss.
//!
//! One kernel serves them all: a per-element term with its derivative, the gradient written
//! in the same pass, and one deterministic two-level sum of the loss.

use crate::cpu::elementwise::{elementwise as cpu_elementwise, HostElementInputs};
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::launch::KernelKey;
use crate::losses::{expect_shape, finite, LossOutput, LossValues, Reduction, Status, Upstream};
use crate::random::Rng;
use crate::reference::elementwise as reference;
use crate::registry::{labels_i32, Case, DeviceUpstream, Evaluated, HostArray, InputSpec, LossDef};
use crate::shader::{ElementIo, Shader};
use crate::tensor::{DType, Tensor};

/// Which elementwise loss, with its parameters (each field documents the PyTorch /
/// torchvision default that the command line uses).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pointwise {
    /// `(x − y)²`.
    Mse,
    /// `|x − y|`; gradient `sign(x − y)` with sign(0) = 0.
    L1,
    /// `½d²` if `|d| < delta`, else `delta·(|d| − ½delta)`; delta > 0.
    Huber {
        /// Threshold (default 1).
        delta: f32,
    },
    /// `½d²/beta` if `|d| < beta`, else `|d| − ½beta`; beta = 0 is L1.
    SmoothL1 {
        /// Threshold (default 1).
        beta: f32,
    },
    /// `F.kl_div`: input is log-probabilities; `y·(log y − x)` (0 where y ≤ 0), or
    /// `e^y·(y − x)` with `log_target`.
    KlDiv {
        /// The target is given as log-probabilities (default false).
        log_target: bool,
    },
    /// Binary hinge `max(0, 1 − y·x)`, y ∈ {−1, +1}.
    Hinge,
    /// `max(0, −y·(x1 − x2) + margin)`, y ∈ {−1, +1}.
    MarginRanking {
        /// Margin (default 0).
        margin: f32,
    },
    /// Binary cross-entropy on logits, with optional `weight` and `pos_weight` inputs.
    BceWithLogits,
    /// torchvision's `sigmoid_focal_loss`: `ce·(1 − p_t)^gamma`, times `α_t` when alpha ≥ 0.
    SigmoidFocal {
        /// Balance of positives; negative disables it (default 0.25).
        alpha: f32,
        /// Focusing exponent ≥ 0 (default 2).
        gamma: f32,
    },
}

impl Pointwise {
    /// The loss's id in `shaders/elementwise.wgsl` (its `LOSS` override).
    fn shader_id(self) -> u32 {
        match self {
            Pointwise::Mse => 0,
            Pointwise::L1 | Pointwise::SmoothL1 { beta: 0.0 } => 1,
            Pointwise::Huber { .. } => 2,
            Pointwise::SmoothL1 { .. } => 3,
            Pointwise::KlDiv { log_target: false } => 4,
            Pointwise::KlDiv { log_target: true } => 5,
            Pointwise::Hinge => 6,
            Pointwise::MarginRanking { .. } => 7,
            Pointwise::BceWithLogits => 8,
            Pointwise::SigmoidFocal { .. } => 9,
        }
    }

    /// The two shader parameters.
    fn params(self) -> (f32, f32) {
        match self {
            Pointwise::Huber { delta } => (delta, 0.0),
            Pointwise::SmoothL1 { beta } => (beta, 0.0),
            Pointwise::MarginRanking { margin } => (margin, 0.0),
            Pointwise::SigmoidFocal { alpha, gamma } => (alpha, gamma),
            _ => (0.0, 0.0),
        }
    }

    /// Names of the differentiable inputs, as gradients are reported.
    pub fn grad_names(self) -> &'static [&'static str] {
        match self {
            Pointwise::MarginRanking { .. } => &["x1", "x2"],
            Pointwise::BceWithLogits | Pointwise::SigmoidFocal { .. } => &["logits"],
            _ => &["input"],
        }
    }

    /// Checks the parameters.
    ///
    /// # Errors
    /// [`Error::Option`] for a non-finite parameter, delta ≤ 0, beta < 0 or gamma < 0.
    pub fn validate(self) -> Result<()> {
        let bad = |option, value: f32, reason| {
            Err(Error::Option {
                option,
                value: value.to_string(),
                reason,
            })
        };
        match self {
            Pointwise::Huber { delta } if !(delta.is_finite() && delta > 0.0) => {
                bad("delta", delta, "must be finite and > 0")
            }
            Pointwise::SmoothL1 { beta } if !(beta.is_finite() && beta >= 0.0) => {
                bad("beta", beta, "must be finite and >= 0")
            }
            Pointwise::MarginRanking { margin } => finite("margin", margin),
            Pointwise::SigmoidFocal { alpha, gamma } => {
                finite("alpha", alpha)?;
                if !(gamma.is_finite() && gamma >= 0.0) {
                    return bad("gamma", gamma, "must be finite and >= 0");
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

/// An elementwise loss with its reduction.
///
/// ```
/// use wgpu_losses::{ElementwiseLoss, Pointwise, Reduction};
/// let huber = ElementwiseLoss::new(Pointwise::Huber { delta: 0.5 }).reduction(Reduction::Sum);
/// assert_eq!(huber.reduction, Reduction::Sum);
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ElementwiseLoss {
    /// The loss and its parameters.
    pub kind: Pointwise,
    /// Combination of the per-element losses (default mean over all elements;
    /// `BatchMean`, kl-div only, divides the sum by the first dimension).
    pub reduction: Reduction,
    /// Compute the gradient (default true).
    pub gradient: bool,
}

/// The device inputs of an elementwise loss call.
#[derive(Debug, Clone, Copy)]
pub struct ElementwiseInputs<'a> {
    /// The differentiable input: `input`, `logits`, or `x1` for margin ranking.
    pub input: &'a Tensor,
    /// The target, or `x2` for margin ranking (then also differentiable).
    pub target: &'a Tensor,
    /// Margin ranking's labels `y` (±1), input-shaped.
    pub labels: Option<&'a Tensor>,
    /// BCE's weight: the input's shape, or its last dimension (broadcast).
    pub weight: Option<&'a Tensor>,
    /// BCE's positive weight, the input's last dimension.
    pub pos_weight: Option<&'a Tensor>,
    /// Upstream gradient (default ones); per element only with reduction none.
    pub upstream: Upstream<'a>,
    /// Where to write the gradient of `input` (and of `x2` for margin ranking), in the
    /// input's shape (default: new tensors). Reusing buffers saves an allocation and its
    /// zero-fill per call.
    pub grad_out: [Option<&'a Tensor>; 2],
}

impl<'a> ElementwiseInputs<'a> {
    /// Input and target.
    pub fn new(input: &'a Tensor, target: &'a Tensor) -> Self {
        Self {
            input,
            target,
            labels: None,
            weight: None,
            pos_weight: None,
            upstream: Upstream::Ones,
            grad_out: [None, None],
        }
    }

    /// Writes the gradient of `input` (`x1`) into `grad`.
    pub fn grad_out(mut self, grad: &'a Tensor) -> Self {
        self.grad_out[0] = Some(grad);
        self
    }

    /// Writes the gradient of margin ranking's `x2` into `grad`.
    pub fn grad_out_x2(mut self, grad: &'a Tensor) -> Self {
        self.grad_out[1] = Some(grad);
        self
    }

    /// Margin ranking's `x1`, `x2` and labels `y`.
    pub fn ranking(x1: &'a Tensor, x2: &'a Tensor, y: &'a Tensor) -> Self {
        Self {
            labels: Some(y),
            ..Self::new(x1, x2)
        }
    }

    /// Adds BCE's weight.
    pub fn weight(mut self, w: &'a Tensor) -> Self {
        self.weight = Some(w);
        self
    }

    /// Adds BCE's positive weight.
    pub fn pos_weight(mut self, pw: &'a Tensor) -> Self {
        self.pos_weight = Some(pw);
        self
    }

    /// Sets the upstream gradient.
    pub fn upstream(mut self, upstream: Upstream<'a>) -> Self {
        self.upstream = upstream;
        self
    }
}

/// Mirrors `Params` in `shaders/elementwise.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    len: u32,
    base: u32,
    inner: u32,
    scale: f32,
    p0: f32,
    p1: f32,
    group_base: u32,
    _pad: u32,
}

/// Chunks (of 1 or 4 elements) per invocation: long runs amortize the workgroup's one
/// partial-sum tree, whose barriers software adapters pay for dearly.
const ITEMS: u32 = 16;

impl ElementwiseLoss {
    /// The loss with mean reduction and a gradient.
    pub fn new(kind: Pointwise) -> Self {
        Self {
            kind,
            reduction: Reduction::Mean,
            gradient: true,
        }
    }

    /// Sets the reduction.
    pub fn reduction(mut self, r: Reduction) -> Self {
        self.reduction = r;
        self
    }

    /// Whether to compute the gradient.
    pub fn gradient(mut self, yes: bool) -> Self {
        self.gradient = yes;
        self
    }

    /// Checks the options.
    ///
    /// # Errors
    /// As [`Pointwise::validate`]; `BatchMean` for a loss other than kl-div.
    pub fn validate(&self) -> Result<()> {
        self.kind.validate()?;
        if self.reduction == Reduction::BatchMean && !matches!(self.kind, Pointwise::KlDiv { .. }) {
            return Err(Error::Option {
                option: "reduction",
                value: "batchmean".into(),
                reason: "batchmean is for kl-div only",
            });
        }
        Ok(())
    }

    /// The mean's denominator for an input of `shape`.
    fn denominator(&self, shape: &[usize]) -> f64 {
        match self.reduction {
            Reduction::Mean => shape.iter().product::<usize>() as f64,
            Reduction::BatchMean => shape.first().copied().unwrap_or(1) as f64,
            _ => 1.0,
        }
    }

    fn check_inputs(&self, inputs: &ElementwiseInputs<'_>) -> Result<()> {
        self.validate()?;
        let names = self.kind.grad_names();
        let shape = inputs.input.shape();
        inputs.input.expect_dtype(names[0], DType::F32)?;
        if inputs.input.is_empty() {
            return Err(Error::Empty(names[0]));
        }
        if inputs.input.len() > u32::MAX as usize / 2 {
            return Err(Error::Limit(format!(
                "{} elements exceed the kernel's u32 indexing",
                inputs.input.len()
            )));
        }
        let target_name = if names.len() == 2 { names[1] } else { "target" };
        inputs.target.expect_dtype(target_name, DType::F32)?;
        expect_shape(target_name, inputs.target, shape)?;
        let ranking = matches!(self.kind, Pointwise::MarginRanking { .. });
        match (ranking, inputs.labels) {
            (true, Some(y)) => {
                y.expect_dtype("y", DType::F32)?;
                expect_shape("y", y, shape)?;
            }
            (true, None) => return Err(Error::Empty("y")),
            (false, Some(_)) => return Err(unused("y")),
            (false, None) => {}
        }
        let bce = self.kind == Pointwise::BceWithLogits;
        let inner = shape.last().copied().unwrap_or(1);
        if let Some(w) = inputs.weight {
            if !bce {
                return Err(unused("weight"));
            }
            w.expect_dtype("weight", DType::F32)?;
            if w.shape() != shape && w.shape() != [inner] {
                return Err(Error::Shape {
                    input: "weight",
                    expected: format!("{shape:?} or [{inner}]"),
                    got: w.shape().to_vec(),
                });
            }
        }
        if let Some(pw) = inputs.pos_weight {
            if !bce {
                return Err(unused("pos_weight"));
            }
            pw.expect_dtype("pos_weight", DType::F32)?;
            expect_shape("pos_weight", pw, &[inner])?;
        }
        for (k, g) in inputs.grad_out.iter().enumerate() {
            if let Some(g) = g {
                if k >= names.len() || !self.gradient {
                    return Err(unused("grad_out"));
                }
                g.expect_dtype("grad_out", DType::F32)?;
                expect_shape("grad_out", g, shape)?;
            }
        }
        match inputs.upstream {
            Upstream::Ones => Ok(()),
            Upstream::Scalar(g) => finite("grad_output", g),
            Upstream::PerItem(g) => {
                if self.reduction != Reduction::None {
                    return Err(Error::Option {
                        option: "grad_output",
                        value: format!("{:?}", g.shape()),
                        reason: "a per-item upstream gradient needs reduction none",
                    });
                }
                g.expect_dtype("grad_output", DType::F32)?;
                expect_shape("grad_output", g, shape)
            }
        }
    }

    /// Records the loss and gradient(s) into `encoder`.
    ///
    /// # Errors
    /// Invalid options, shapes or types; wgpu errors. Labels outside ±1 (hinge, margin
    /// ranking) are reported by [`Engine::check_status`] / [`Engine::read_output`].
    pub fn record(
        &self,
        engine: &Engine,
        encoder: &mut wgpu::CommandEncoder,
        inputs: &ElementwiseInputs<'_>,
    ) -> Result<LossOutput> {
        self.check_inputs(inputs)?;
        engine.scoped(|| self.record_checked(engine, encoder, inputs))
    }

    fn record_checked(
        &self,
        engine: &Engine,
        encoder: &mut wgpu::CommandEncoder,
        inputs: &ElementwiseInputs<'_>,
    ) -> Result<LossOutput> {
        let shape = inputs.input.shape();
        let len = inputs.input.len();
        let inner = shape.last().copied().unwrap_or(1);
        let wg = engine.workgroup_size();
        let vec4 = len.is_multiple_of(4);
        let block = (wg * ITEMS) as usize * if vec4 { 4 } else { 1 };
        let blocks = len.div_ceil(block);
        // Partials are bound whole (their index is offset by `group_base`), so windows align
        // for the element arrays alone.
        let windows = engine.row_windows(blocks, block as u64 * 4, false)?;
        let names = self.kind.grad_names();
        let ranking = names.len() == 2;

        let per_element = self.reduction == Reduction::None;
        let out = engine.zeros(&[if per_element { len } else { blocks }], DType::F32)?;
        let loss = if per_element {
            Tensor::reshaped(out.clone(), shape)
        } else {
            engine.zeros(&[], DType::F32)?
        };
        let grads: Vec<Tensor> = if self.gradient {
            names
                .iter()
                .zip(inputs.grad_out)
                .map(|(_, given)| match given {
                    Some(g) => Ok(g.clone()),
                    None => engine.zeros(shape, DType::F32),
                })
                .collect::<Result<_>>()?
        } else {
            Vec::new()
        };
        let status = engine.scratch(1);
        let dummy = engine.scratch(4);
        let dummy_rw = engine.scratch(4);

        let weight_full = inputs.weight.is_some_and(|w| w.shape() == shape);
        let specialize = [
            ("PER_ELEMENT_OUT", per_element),
            (
                "UPSTREAM_PER_ELEMENT",
                matches!(inputs.upstream, Upstream::PerItem(_)),
            ),
            ("C_PER_CLASS", inputs.weight.is_some() && !weight_full),
            ("HAS_C", inputs.weight.is_some() || ranking),
            ("HAS_D", inputs.pos_weight.is_some()),
            ("WANT_GRAD", self.gradient),
        ];
        let upstream = match inputs.upstream {
            Upstream::Scalar(g) => g as f64,
            _ => 1.0,
        };
        let scale = (upstream / self.denominator(shape)) as f32;
        let (p0, p1) = self.kind.params();
        let key = KernelKey {
            shader: Shader::Elementwise(ElementIo { vec4 }),
            entry: "main",
            overrides: [
                ("WG_SIZE", wg),
                ("ITEMS", ITEMS),
                ("TEAM", engine.subgroup_width()),
                ("LOSS", self.kind.shader_id()),
            ]
            .into_iter()
            .chain(specialize.map(|(name, on)| (name, on as u32)))
            .collect(),
        };
        for w in &windows {
            let (start, count) = (w.start * block, (w.end * block).min(len) - w.start * block);
            let uniform = engine.uniform(&Params {
                len: count as u32,
                base: start as u32,
                inner: inner as u32,
                scale,
                p0,
                p1,
                group_base: w.start as u32,
                _pad: 0,
            });
            let c = match (inputs.labels, inputs.weight) {
                (Some(t), _) => t.window(start, count),
                (None, Some(t)) if weight_full => t.window(start, count),
                (None, Some(t)) => t.binding(),
                (None, None) => dummy.as_entire_binding(),
            };
            let resources = [
                uniform.as_entire_binding(),
                inputs.input.window(start, count),
                inputs.target.window(start, count),
                c,
                inputs
                    .pos_weight
                    .map_or(dummy.as_entire_binding(), Tensor::binding),
                match inputs.upstream {
                    Upstream::PerItem(t) => t.window(start, count),
                    _ => dummy.as_entire_binding(),
                },
                grads
                    .first()
                    .map_or(dummy_rw.as_entire_binding(), |g| g.window(start, count)),
                grads
                    .get(1)
                    .map_or(dummy_rw.as_entire_binding(), |g| g.window(start, count)),
                if per_element {
                    out.window(start, count)
                } else {
                    out.binding()
                },
                status.as_entire_binding(),
            ];
            engine.dispatch(encoder, key.clone(), &resources, w.len() as u32)?;
        }
        if !per_element {
            let scale = (1.0 / self.denominator(shape)) as f32;
            engine.record_sum(encoder, out.buffer(), blocks, scale, None, loss.buffer())?;
        }
        let checked = match self.kind {
            Pointwise::Hinge => Some(("target", inputs.target)),
            Pointwise::MarginRanking { .. } => inputs.labels.map(|y| ("y", y)),
            _ => None,
        };
        Ok(LossOutput {
            loss,
            grads: names.iter().copied().zip(grads).collect(),
            status: checked.map(|(input, values)| Status {
                flag: status,
                input,
                values: values.clone(),
                reason: "labels must be -1 or +1".into(),
            }),
        })
    }

    /// Records, submits, waits and reads back.
    ///
    /// # Errors
    /// As [`ElementwiseLoss::record`], plus [`Error::Value`] for a label outside ±1.
    pub fn run(&self, engine: &Engine, inputs: &ElementwiseInputs<'_>) -> Result<LossValues> {
        engine.execute(|e| self.record(engine, e, inputs))
    }
}

fn unused(input: &'static str) -> Error {
    Error::Shape {
        input,
        expected: "nothing: this loss takes no such input".into(),
        got: vec![],
    }
}

/// An elementwise loss for the command line: one entry per LOSSES.md name.
pub(crate) struct ElementwiseDef {
    pub name: &'static str,
    /// Builds the loss kind from the case's options.
    pub kind: fn(&Case) -> Result<Pointwise>,
    pub inputs: &'static [InputSpec],
    pub options: &'static [&'static str],
}

const fn spec(name: &'static str, differentiable: bool, required: bool) -> InputSpec {
    InputSpec {
        name,
        differentiable,
        required,
    }
}

const INPUT_TARGET: &[InputSpec] = &[
    spec("input", true, true),
    spec("target", false, true),
    spec("grad_output", false, false),
];

/// The registered elementwise losses.
pub(crate) static DEFS: [ElementwiseDef; 9] = [
    ElementwiseDef {
        name: "mse",
        kind: |_| Ok(Pointwise::Mse),
        inputs: INPUT_TARGET,
        options: &["reduction"],
    },
    ElementwiseDef {
        name: "l1",
        kind: |_| Ok(Pointwise::L1),
        inputs: INPUT_TARGET,
        options: &["reduction"],
    },
    ElementwiseDef {
        name: "huber",
        kind: |c| {
            Ok(Pointwise::Huber {
                delta: c.option("delta", 1.0)?,
            })
        },
        inputs: INPUT_TARGET,
        options: &["reduction", "delta"],
    },
    ElementwiseDef {
        name: "smooth-l1",
        kind: |c| {
            Ok(Pointwise::SmoothL1 {
                beta: c.option("beta", 1.0)?,
            })
        },
        inputs: INPUT_TARGET,
        options: &["reduction", "beta"],
    },
    ElementwiseDef {
        name: "kl-div",
        kind: |c| {
            Ok(Pointwise::KlDiv {
                log_target: c.flag("log_target", false)?,
            })
        },
        inputs: INPUT_TARGET,
        options: &["reduction", "log_target"],
    },
    ElementwiseDef {
        name: "hinge",
        kind: |_| Ok(Pointwise::Hinge),
        inputs: INPUT_TARGET,
        options: &["reduction"],
    },
    ElementwiseDef {
        name: "margin-ranking",
        kind: |c| {
            Ok(Pointwise::MarginRanking {
                margin: c.option("margin", 0.0)?,
            })
        },
        inputs: &[
            spec("x1", true, true),
            spec("x2", true, true),
            spec("y", false, true),
            spec("grad_output", false, false),
        ],
        options: &["reduction", "margin"],
    },
    ElementwiseDef {
        name: "bce-with-logits",
        kind: |_| Ok(Pointwise::BceWithLogits),
        inputs: &[
            spec("logits", true, true),
            spec("target", false, true),
            spec("weight", false, false),
            spec("pos_weight", false, false),
            spec("grad_output", false, false),
        ],
        options: &["reduction"],
    },
    ElementwiseDef {
        name: "sigmoid-focal",
        kind: |c| {
            Ok(Pointwise::SigmoidFocal {
                alpha: c.option("alpha", 0.25)?,
                gamma: c.option("gamma", 2.0)?,
            })
        },
        inputs: &[
            spec("logits", true, true),
            spec("target", false, true),
            spec("grad_output", false, false),
        ],
        options: &["reduction", "alpha", "gamma"],
    },
];

/// A checked host problem: loss, the named input arrays, their common shape.
struct HostProblem {
    loss: ElementwiseLoss,
    shape: Vec<usize>,
    /// input, target (x1, x2 for margin ranking).
    a: Vec<f32>,
    b: Vec<f32>,
    labels: Option<Vec<f32>>,
    weight: Option<(Vec<f32>, Vec<usize>)>,
    pos_weight: Option<Vec<f32>>,
    upstream: Option<Vec<f32>>,
}

impl ElementwiseDef {
    fn problem(&self, case: &Case) -> Result<HostProblem> {
        case.check_names(self)?;
        let kind = (self.kind)(case)?;
        let loss = ElementwiseLoss::new(kind).reduction(case.option("reduction", Reduction::Mean)?);
        loss.validate()?;
        let names: Vec<&'static str> = self.inputs.iter().map(|s| s.name).collect();
        let (a, shape) = case.floats(names[0]).expect("checked: required");
        let (b, b_shape) = case.floats(names[1]).expect("checked: required");
        if shape.iter().product::<usize>() == 0 {
            return Err(Error::Empty(names[0]));
        }
        let same = |input: &'static str, s: &[usize]| {
            if s == shape.as_slice() {
                Ok(())
            } else {
                Err(Error::Shape {
                    input,
                    expected: format!("{shape:?}"),
                    got: s.to_vec(),
                })
            }
        };
        same(names[1], &b_shape)?;
        let labels = match case.input("y") {
            Some(y) => {
                same("y", &y.shape)?;
                Some(labels_i32("y", y)?.into_iter().map(|v| v as f32).collect())
            }
            None => None,
        };
        let inner = shape.last().copied().unwrap_or(1);
        let weight = case.floats("weight");
        if let Some((_, s)) = &weight {
            if s != &shape && s != &[inner] {
                return Err(Error::Shape {
                    input: "weight",
                    expected: format!("{shape:?} or [{inner}]"),
                    got: s.clone(),
                });
            }
        }
        let pos_weight = match case.floats("pos_weight") {
            Some((pw, s)) if s == [inner] => Some(pw),
            Some((_, s)) => {
                return Err(Error::Shape {
                    input: "pos_weight",
                    expected: format!("[{inner}]"),
                    got: s,
                })
            }
            None => None,
        };
        let upstream = match case.floats("grad_output") {
            Some((g, s)) if s.iter().product::<usize>() == 1 => Some(g),
            Some((g, s)) if s == shape && loss.reduction == Reduction::None => Some(g),
            Some((_, s)) => {
                return Err(Error::Shape {
                    input: "grad_output",
                    expected: format!("a scalar, or {shape:?} with reduction none"),
                    got: s,
                })
            }
            None => None,
        };
        Ok(HostProblem {
            loss,
            shape,
            a,
            b,
            labels,
            weight,
            pos_weight,
            upstream,
        })
    }
}

impl HostProblem {
    fn loss_shape(&self) -> Vec<usize> {
        match self.loss.reduction {
            Reduction::None => self.shape.clone(),
            _ => vec![],
        }
    }

    fn evaluated(&self, out: LossValues) -> Evaluated<f32> {
        Evaluated::from_values(out, self.loss_shape(), &self.shape)
    }

    /// Host-side label check, so `eval` names the offending element before any dispatch.
    fn check_labels(&self) -> Result<()> {
        let (input, values) = match (self.loss.kind, &self.labels) {
            (Pointwise::Hinge, _) => ("target", &self.b),
            (_, Some(y)) => ("y", y),
            _ => return Ok(()),
        };
        match values.iter().position(|&v| v != 1.0 && v != -1.0) {
            Some(row) => Err(Error::Value {
                input,
                row,
                value: values[row].to_string(),
                reason: "labels must be -1 or +1".into(),
            }),
            None => Ok(()),
        }
    }
}

impl LossDef for ElementwiseDef {
    fn name(&self) -> &'static str {
        self.name
    }

    fn inputs(&self) -> &'static [InputSpec] {
        self.inputs
    }

    fn options(&self) -> &'static [&'static str] {
        self.options
    }

    fn gpu(&self, engine: &Engine, case: &Case) -> Result<Evaluated<f32>> {
        let p = self.problem(case)?;
        p.check_labels()?;
        let shape = &p.shape;
        let a = engine.upload(&p.a, shape)?;
        let b = engine.upload(&p.b, shape)?;
        let labels = p
            .labels
            .as_ref()
            .map(|y| engine.upload(y, shape))
            .transpose()?;
        let weight = p
            .weight
            .as_ref()
            .map(|(w, s)| engine.upload(w, s))
            .transpose()?;
        let pos_weight = p
            .pos_weight
            .as_ref()
            .map(|pw| engine.upload(pw, &[pw.len()]))
            .transpose()?;
        let upstream =
            DeviceUpstream::upload(engine, p.upstream.as_deref(), shape, p.loss.reduction)?;
        let inputs = ElementwiseInputs {
            input: &a,
            target: &b,
            labels: labels.as_ref(),
            weight: weight.as_ref(),
            pos_weight: pos_weight.as_ref(),
            grad_out: [None, None],
            upstream: upstream.get(),
        };
        let out = p.loss.run(engine, &inputs)?;
        Ok(p.evaluated(out))
    }

    fn cpu(&self, case: &Case) -> Result<Evaluated<f32>> {
        let p = self.problem(case)?;
        let inputs = HostElementInputs {
            shape: &p.shape,
            input: &p.a,
            target: &p.b,
            labels: p.labels.as_deref(),
            weight: p.weight.as_ref().map(|(w, _)| w.as_slice()),
            pos_weight: p.pos_weight.as_deref(),
            upstream: p.upstream.as_deref().unwrap_or(&[]),
        };
        Ok(p.evaluated(cpu_elementwise(&p.loss, &inputs)?))
    }

    fn reference(&self, case: &Case) -> Result<Evaluated<f64>> {
        let p = self.problem(case)?;
        p.check_labels()?;
        let f64s = |v: &[f32]| v.iter().map(|&x| x as f64).collect::<Vec<f64>>();
        let weight = p.weight.as_ref().map(|(w, _)| f64s(w));
        let (a, b) = (f64s(&p.a), f64s(&p.b));
        let labels = p.labels.as_deref().map(f64s);
        let pos_weight = p.pos_weight.as_deref().map(f64s);
        let inputs = reference::RefInputs {
            a: &a,
            b: &b,
            labels: labels.as_deref(),
            weight: weight.as_deref(),
            pos_weight: pos_weight.as_deref(),
        };
        let upstream = p.upstream.as_deref().map_or(vec![1.0], f64s);
        let out = reference::elementwise(&p.loss, &p.shape, inputs, &upstream)?;
        Ok(Evaluated::from_reference(out, p.loss_shape(), &p.shape))
    }

    fn random_case(&self, rng: &mut Rng) -> Case {
        let rows = 1 + rng.below(300);
        let cols = 1 + rng.below(40);
        let shape = [rows, cols];
        let len = rows * cols;
        let reductions: &[&str] = if self.name == "kl-div" {
            &["mean", "sum", "none", "batchmean"]
        } else {
            &["mean", "sum", "none"]
        };
        let mut case = Case::default().set("reduction", reductions[rng.below(reductions.len())]);
        let normal = |rng: &mut Rng, scale| HostArray::f32(&shape, rng.normals(len, scale));
        let unit = |rng: &mut Rng| {
            HostArray::f32(&shape, (0..len).map(|_| rng.uniform() as f32).collect())
        };
        let signs = |rng: &mut Rng| {
            HostArray::f32(
                &shape,
                (0..len)
                    .map(|_| if rng.chance(0.5) { 1.0 } else { -1.0 })
                    .collect(),
            )
        };
        match self.name {
            "kl-div" => {
                let log_target = rng.chance(0.5);
                let mut t: Vec<f32> = (0..len).map(|_| rng.uniform() as f32).collect();
                t.iter_mut().for_each(|v| {
                    if *v < 0.1 {
                        *v = 0.0
                    }
                });
                if log_target {
                    t.iter_mut().for_each(|v| *v = (*v + 1e-3).ln());
                }
                let x: Vec<f32> = (0..len)
                    .map(|_| (rng.uniform() as f32 + 1e-3).ln())
                    .collect();
                case = case
                    .with("input", HostArray::f32(&shape, x))
                    .with("target", HostArray::f32(&shape, t))
                    .set("log_target", log_target);
            }
            "hinge" => {
                case = case
                    .with("input", normal(rng, 2.0))
                    .with("target", signs(rng))
            }
            "margin-ranking" => {
                case = case
                    .with("x1", normal(rng, 1.0))
                    .with("x2", normal(rng, 1.0))
                    .with("y", signs(rng))
                    .set("margin", rng.range(-0.5, 1.0) as f32);
            }
            "bce-with-logits" | "sigmoid-focal" => {
                case = case
                    .with("logits", normal(rng, 3.0))
                    .with("target", unit(rng));
                if self.name == "sigmoid-focal" {
                    case = case
                        .set(
                            "alpha",
                            if rng.chance(0.3) {
                                -1.0
                            } else {
                                rng.uniform() as f32
                            },
                        )
                        .set("gamma", [0.0, 0.5, 1.0, 2.0, 3.5][rng.below(5)]);
                } else {
                    if rng.chance(0.5) {
                        let full = rng.chance(0.5);
                        let s: Vec<usize> = if full { shape.to_vec() } else { vec![cols] };
                        let n = s.iter().product();
                        let w = (0..n).map(|_| rng.range(0.1, 2.0) as f32).collect();
                        case = case.with("weight", HostArray::f32(&s, w));
                    }
                    if rng.chance(0.5) {
                        let pw = (0..cols).map(|_| rng.range(0.1, 4.0) as f32).collect();
                        case = case.with("pos_weight", HostArray::f32(&[cols], pw));
                    }
                }
            }
            _ => {
                case = case
                    .with("input", normal(rng, 2.0))
                    .with("target", normal(rng, 2.0));
                if self.name == "huber" {
                    case = case.set("delta", rng.range(0.1, 3.0) as f32);
                }
                if self.name == "smooth-l1" {
                    case = case.set(
                        "beta",
                        if rng.chance(0.2) {
                            0.0
                        } else {
                            rng.range(0.1, 3.0) as f32
                        },
                    );
                }
            }
        }
        if rng.chance(0.3) {
            let none = case.options.get("reduction").is_some_and(|r| r == "none");
            case = if none {
                case.with("grad_output", normal(rng, 1.0))
            } else {
                case.with(
                    "grad_output",
                    HostArray::f32(&[], vec![rng.range(-2.0, 2.0) as f32]),
                )
            };
        }
        case
    }
}
