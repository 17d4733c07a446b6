//! The elementwise losses by name, on host arrays: the command line's view.

use super::cpu::{elementwise_dyn, elementwise_into, HostElementInputs, Inputs};
use super::gpu::ElementwiseInputs;
use super::{reference, Args, ElementwiseLoss, Pointwise};
use crate::core::{Arg, DType, Element, LossValues, Reduction, Upstream};
use crate::error::{Error, Result};
use crate::gpu::engine::Engine;
use crate::gpu::GpuLoss;
use crate::registry::random::Rng;
use crate::registry::{
    host_upstream, labels_i32, spec, BenchJob, BenchRun, BenchSpec, Case, DeviceUpstream,
    Evaluated, GpuSession, HostArray, InputSpec, LossDef, Narrowed, GRAD_OUTPUT,
};

/// An elementwise loss for the command line: one entry per docs/LOSSES.md name.
pub(crate) struct ElementwiseDef {
    pub name: &'static str,
    /// Builds the loss kind from the case's options.
    pub kind: fn(&Case) -> Result<Pointwise>,
    pub inputs: &'static [InputSpec],
    pub options: &'static [&'static str],
}

const INPUT_TARGET: &[InputSpec] = &[
    spec("input", true, true),
    spec("target", false, true),
    GRAD_OUTPUT,
];

/// The family's losses.
pub(crate) const LOSSES: &[&dyn LossDef] = &[
    &MSE,
    &L1,
    &HUBER,
    &SMOOTH_L1,
    &KL_DIV,
    &HINGE,
    &MARGIN_RANKING,
    &BCE_WITH_LOGITS,
    &SIGMOID_FOCAL,
    &QUANTILE,
    &POWER,
    &SOFT_MARGIN,
    &HINGE_EMBEDDING,
    &POISSON_NLL,
    &BCE,
    &GAUSSIAN_NLL,
];

static GAUSSIAN_NLL: ElementwiseDef = ElementwiseDef {
    name: "gaussian-nll",
    kind: |c| {
        Ok(Pointwise::GaussianNll {
            full: c.flag("full", false)?,
            eps: c.option("eps", 1e-6)?,
        })
    },
    inputs: &[
        spec("input", true, true),
        spec("target", false, true),
        spec("var", true, true),
        GRAD_OUTPUT,
    ],
    options: &["reduction", "full", "eps"],
};

static BCE: ElementwiseDef = ElementwiseDef {
    name: "bce",
    kind: |_| Ok(Pointwise::Bce),
    inputs: &[
        spec("input", true, true),
        spec("target", false, true),
        spec("weight", false, false),
        GRAD_OUTPUT,
    ],
    options: &["reduction"],
};

static SOFT_MARGIN: ElementwiseDef = ElementwiseDef {
    name: "soft-margin",
    kind: |_| Ok(Pointwise::SoftMargin),
    inputs: INPUT_TARGET,
    options: &["reduction"],
};

static HINGE_EMBEDDING: ElementwiseDef = ElementwiseDef {
    name: "hinge-embedding",
    kind: |c| {
        Ok(Pointwise::HingeEmbedding {
            margin: c.option("margin", 1.0)?,
        })
    },
    inputs: INPUT_TARGET,
    options: &["reduction", "margin"],
};

static POISSON_NLL: ElementwiseDef = ElementwiseDef {
    name: "poisson-nll",
    kind: |c| {
        Ok(Pointwise::PoissonNll {
            log_input: c.flag("log_input", true)?,
            full: c.flag("full", false)?,
            eps: c.option("eps", 1e-8)?,
        })
    },
    inputs: INPUT_TARGET,
    options: &["reduction", "log_input", "full", "eps"],
};

static MSE: ElementwiseDef = ElementwiseDef {
    name: "mse",
    kind: |_| Ok(Pointwise::Mse),
    inputs: INPUT_TARGET,
    options: &["reduction"],
};

static L1: ElementwiseDef = ElementwiseDef {
    name: "l1",
    kind: |_| Ok(Pointwise::L1),
    inputs: INPUT_TARGET,
    options: &["reduction"],
};

static HUBER: ElementwiseDef = ElementwiseDef {
    name: "huber",
    kind: |c| {
        Ok(Pointwise::Huber {
            delta: c.option("delta", 1.0)?,
        })
    },
    inputs: INPUT_TARGET,
    options: &["reduction", "delta"],
};

static SMOOTH_L1: ElementwiseDef = ElementwiseDef {
    name: "smooth-l1",
    kind: |c| {
        Ok(Pointwise::SmoothL1 {
            beta: c.option("beta", 1.0)?,
        })
    },
    inputs: INPUT_TARGET,
    options: &["reduction", "beta"],
};

static KL_DIV: ElementwiseDef = ElementwiseDef {
    name: "kl-div",
    kind: |c| {
        Ok(Pointwise::KlDiv {
            log_target: c.flag("log_target", false)?,
        })
    },
    inputs: INPUT_TARGET,
    options: &["reduction", "log_target"],
};

static HINGE: ElementwiseDef = ElementwiseDef {
    name: "hinge",
    kind: |_| Ok(Pointwise::Hinge),
    inputs: INPUT_TARGET,
    options: &["reduction"],
};

static MARGIN_RANKING: ElementwiseDef = ElementwiseDef {
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
        GRAD_OUTPUT,
    ],
    options: &["reduction", "margin"],
};

static BCE_WITH_LOGITS: ElementwiseDef = ElementwiseDef {
    name: "bce-with-logits",
    kind: |_| Ok(Pointwise::BceWithLogits),
    inputs: &[
        spec("logits", true, true),
        spec("target", false, true),
        spec("weight", false, false),
        spec("pos_weight", false, false),
        GRAD_OUTPUT,
    ],
    options: &["reduction"],
};

static SIGMOID_FOCAL: ElementwiseDef = ElementwiseDef {
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
        GRAD_OUTPUT,
    ],
    options: &["reduction", "alpha", "gamma"],
};

static QUANTILE: ElementwiseDef = ElementwiseDef {
    name: "quantile",
    kind: |c| {
        Ok(Pointwise::Quantile {
            q: c.option("q", 0.5)?,
        })
    },
    inputs: INPUT_TARGET,
    options: &["reduction", "q"],
};

static POWER: ElementwiseDef = ElementwiseDef {
    name: "power",
    kind: |c| {
        Ok(Pointwise::Power {
            p: c.option("p", 1.5)?,
        })
    },
    inputs: INPUT_TARGET,
    options: &["reduction", "p"],
};

/// A checked host problem: loss, the named input arrays, their common shape.
struct HostProblem {
    loss: ElementwiseLoss,
    shape: Vec<usize>,
    /// input, target (x1, x2 for margin ranking), widened to f32, and their types.
    a: Vec<f32>,
    b: Vec<f32>,
    dtypes: (DType, DType),
    labels: Option<Vec<f32>>,
    /// Gaussian NLL's variance (widened) with its shape, and its type.
    var: Option<(Vec<f32>, Vec<usize>)>,
    var_dtype: DType,
    weight: Option<(Vec<f32>, Vec<usize>)>,
    pos_weight: Option<Vec<f32>>,
    upstream: Option<Vec<f32>>,
}

impl ElementwiseDef {
    fn problem(&self, case: &Case) -> Result<HostProblem> {
        case.check_names(self)?;
        let kind = (self.kind)(case)?;
        let loss = ElementwiseLoss::new(kind)
            .reduction(case.option("reduction", Reduction::Mean)?)
            .grad_dtype(case.grad_dtype_option()?);
        let names: Vec<&'static str> = self.inputs.iter().map(|s| s.name).collect();
        let dtypes = (case.float_dtype(names[0]), case.float_dtype(names[1]));
        let (a, shape) = case.floats(names[0]).expect("checked: required");
        let (b, b_shape) = case.floats(names[1]).expect("checked: required");
        let labels = case.input("y");
        let var = case.floats("var");
        let weight = case.floats("weight");
        let pos_weight = case.floats("pos_weight");
        let (scalar_upstream, per_item) = case.upstream_parts();
        loss.check(&Args {
            input: Arg {
                shape: &shape,
                dtype: dtypes.0,
            },
            target: Arg {
                shape: &b_shape,
                dtype: dtypes.1,
            },
            labels: labels.map(|y| Arg::f32(&y.shape)),
            var: var.as_ref().map(|(_, s)| Arg {
                shape: s,
                dtype: case.float_dtype("var"),
            }),
            weight: weight.as_ref().map(|(_, s)| Arg::f32(s)),
            pos_weight: pos_weight.as_ref().map(|(_, s)| Arg::f32(s)),
            scalar_upstream,
            per_item_upstream: per_item.as_ref().map(|(_, s)| Arg::f32(s)),
        })?;
        let labels = labels
            .map(|y| labels_i32("y", y))
            .transpose()?
            .map(|y| y.into_iter().map(|v| v as f32).collect());
        let pos_weight = pos_weight.map(|(pw, _)| pw);
        let upstream = per_item
            .map(|(g, _)| g)
            .or(scalar_upstream.map(|g| vec![g]));
        Ok(HostProblem {
            loss,
            shape,
            a,
            b,
            dtypes,
            labels,
            var,
            var_dtype: case.float_dtype("var"),
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
        self.var_grad_shaped(Evaluated::from_values(out, self.loss_shape(), &self.shape))
    }

    /// Gaussian NLL's variance gradient takes the variance's shape.
    fn var_grad_shaped<T>(&self, mut e: Evaluated<T>) -> Evaluated<T> {
        if let Some((_, shape)) = &self.var {
            for (name, _, s) in e.grads.iter_mut() {
                if *name == "var" {
                    *s = shape.clone();
                }
            }
        }
        e
    }

    /// Host-side label check, so `eval` names the offending element before any dispatch.
    fn check_labels(&self) -> Result<()> {
        if self.loss.kind == Pointwise::Bce {
            if let Some(row) = self.a.iter().position(|p| !(0.0..=1.0).contains(p)) {
                return Err(Error::Value {
                    input: "input",
                    row,
                    value: self.a[row].to_string(),
                    reason: "probabilities must be in [0, 1]".into(),
                });
            }
        }
        let (input, values) = match (self.loss.kind, &self.labels) {
            (k, _) if k.signed_target() => ("target", &self.b),
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

    fn half_precision(&self) -> bool {
        true
    }

    fn inputs(&self) -> &'static [InputSpec] {
        self.inputs
    }

    fn options(&self) -> &'static [&'static str] {
        self.options
    }

    fn gpu_in(&self, s: &mut GpuSession<'_>, case: &Case) -> Result<Evaluated<f32>> {
        let p = self.problem(case)?;
        p.check_labels()?;
        let shape = &p.shape;
        let a = s.upload_as("input", &p.a, shape, p.dtypes.0)?;
        let b = s.upload_as("target", &p.b, shape, p.dtypes.1)?;
        let labels = p
            .labels
            .as_ref()
            .map(|y| s.upload("labels", y, shape))
            .transpose()?;
        let weight = p
            .weight
            .as_ref()
            .map(|(w, shape)| s.upload("weight", w, shape))
            .transpose()?;
        let pos_weight = p
            .pos_weight
            .as_ref()
            .map(|pw| s.upload("pos_weight", pw, &[pw.len()]))
            .transpose()?;
        let var = p
            .var
            .as_ref()
            .map(|(v, shape)| s.upload_as("var", v, shape, p.var_dtype))
            .transpose()?;
        let upstream = DeviceUpstream::upload(s, p.upstream.as_deref(), shape, p.loss.reduction)?;
        let inputs = ElementwiseInputs {
            input: &a,
            target: &b,
            labels: labels.as_ref(),
            var: var.as_ref(),
            weight: weight.as_ref(),
            pos_weight: pos_weight.as_ref(),
            grad_out: [None, None],
            upstream: upstream.get(),
        };
        let out = s.run(&p.loss, &inputs)?;
        Ok(p.evaluated(out))
    }

    fn cpu(&self, case: &Case) -> Result<Evaluated<f32>> {
        let p = self.problem(case)?;
        // 16-bit inputs reach the backend as 16-bit values.
        let (a, b) = (
            Narrowed::new(&p.a, p.dtypes.0),
            Narrowed::new(&p.b, p.dtypes.1),
        );
        let inputs = Inputs {
            shape: &p.shape,
            input: a.floats(),
            target: b.floats(),
            labels: p.labels.as_deref(),
            var: p.var.as_ref().map(|(v, _)| v.as_slice()),
            var_dtype: p.var_dtype,
            weight: p.weight.as_ref().map(|(w, _)| w.as_slice()),
            pos_weight: p.pos_weight.as_deref(),
            upstream: host_upstream(p.upstream.as_deref(), p.a.len(), p.loss.reduction),
        };
        Ok(p.evaluated(elementwise_dyn(&p.loss, &inputs, p.dtypes)?))
    }

    fn reference(&self, case: &Case) -> Result<Evaluated<f64>> {
        let p = self.problem(case)?;
        p.check_labels()?;
        let f64s = |v: &[f32]| v.iter().map(|&x| x as f64).collect::<Vec<f64>>();
        let weight = p.weight.as_ref().map(|(w, _)| f64s(w));
        let (a, b) = (f64s(&p.a), f64s(&p.b));
        let labels = p.labels.as_deref().map(f64s);
        let var = p.var.as_ref().map(|(v, _)| f64s(v));
        let pos_weight = p.pos_weight.as_deref().map(f64s);
        let inputs = reference::RefInputs {
            a: &a,
            b: &b,
            labels: labels.as_deref(),
            var: var.as_deref(),
            weight: weight.as_deref(),
            pos_weight: pos_weight.as_deref(),
        };
        let upstream = p.upstream.as_deref().map_or(vec![1.0], f64s);
        let out = reference::elementwise(&p.loss, &p.shape, inputs, &upstream)?;
        Ok(p.var_grad_shaped(Evaluated::from_reference(out, p.loss_shape(), &p.shape)))
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
            "hinge" | "soft-margin" => {
                case = case
                    .with("input", normal(rng, 2.0))
                    .with("target", signs(rng))
            }
            "hinge-embedding" => {
                // Some inputs exactly at the margin, where no gradient passes.
                let margin = rng.range(-0.5, 2.0) as f32;
                let mut x = rng.normals(len, 1.5);
                x.iter_mut().for_each(|v| {
                    if rng.chance(0.05) {
                        *v = margin
                    }
                });
                case = case
                    .with("input", HostArray::f32(&shape, x))
                    .with("target", signs(rng))
                    .set("margin", margin);
            }
            "bce" => {
                // Probabilities with some exact 0s and 1s (the clamps), targets in [0, 1].
                let p = (0..len)
                    .map(|_| match rng.below(20) {
                        0 => 0.0,
                        1 => 1.0,
                        _ => rng.uniform() as f32,
                    })
                    .collect();
                case = case
                    .with("input", HostArray::f32(&shape, p))
                    .with("target", unit(rng));
                if rng.chance(0.5) {
                    let full = rng.chance(0.5);
                    let s: Vec<usize> = if full { shape.to_vec() } else { vec![cols] };
                    let n = s.iter().product();
                    let w = (0..n).map(|_| rng.range(0.1, 2.0) as f32).collect();
                    case = case.with("weight", HostArray::f32(&s, w));
                }
            }
            "poisson-nll" => {
                // Counts as targets; log-rates, or positive rates without log_input.
                let log_input = rng.chance(0.5);
                let counts = (0..len).map(|_| rng.below(6) as f32).collect();
                let x = if log_input {
                    rng.normals(len, 1.0)
                } else {
                    (0..len).map(|_| rng.range(0.05, 4.0) as f32).collect()
                };
                case = case
                    .with("input", HostArray::f32(&shape, x))
                    .with("target", HostArray::f32(&shape, counts))
                    .set("log_input", log_input)
                    .set("full", rng.chance(0.5));
                if rng.chance(0.3) {
                    case = case.set("eps", rng.range(1e-8, 0.1) as f32);
                }
            }
            "gaussian-nll" => {
                // A variance per element or per row ([rows] or [rows, 1]); some below eps
                // (clamped) and some exactly 0.
                let var_shape = match rng.below(3) {
                    0 => shape.to_vec(),
                    1 => vec![rows],
                    _ => vec![rows, 1],
                };
                let n = var_shape.iter().product();
                let var = (0..n)
                    .map(|_| match rng.below(20) {
                        0 => 0.0,
                        1 => 1e-8,
                        _ => rng.range(0.05, 3.0) as f32,
                    })
                    .collect();
                case = case
                    .with("input", normal(rng, 1.0))
                    .with("target", normal(rng, 1.0))
                    .with("var", HostArray::f32(&var_shape, var))
                    .set("full", rng.chance(0.5));
                if rng.chance(0.3) {
                    case = case.set("eps", rng.range(1e-6, 0.5) as f32);
                }
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
            "power" => {
                // Some exact ties (d = 0), where the gradient is 0, and p = 1 (the l1 case).
                let x = rng.normals(len, 2.0);
                let mut t = rng.normals(len, 2.0);
                for (t, &x) in t.iter_mut().zip(&x) {
                    if rng.chance(0.1) {
                        *t = x;
                    }
                }
                let p = if rng.chance(0.2) {
                    1.0
                } else {
                    rng.range(1.0, 4.0) as f32
                };
                case = case
                    .with("input", HostArray::f32(&shape, x))
                    .with("target", HostArray::f32(&shape, t))
                    .set("p", p);
            }
            "quantile" => {
                // Some exact ties (d = 0), where the gradient is 0.
                let x = rng.normals(len, 2.0);
                let mut t = rng.normals(len, 2.0);
                for (t, &x) in t.iter_mut().zip(&x) {
                    if rng.chance(0.1) {
                        *t = x;
                    }
                }
                case = case
                    .with("input", HostArray::f32(&shape, x))
                    .with("target", HostArray::f32(&shape, t))
                    .set("q", rng.range(0.01, 0.99) as f32);
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

    fn bench(
        &self,
        engine: &Engine,
        rng: &mut Rng,
        spec: &BenchSpec,
        run: &mut BenchRun<'_>,
    ) -> Result<()> {
        // 4M elements: 48 MB moved, past the last-level cache of most CPUs.
        for shape in spec.shapes(&[&[4 << 20]], &[&[4 << 20]]) {
            self.bench_shape(engine, rng, &shape, &spec.dtypes(true), run)?;
        }
        Ok(())
    }
}

impl ElementwiseDef {
    /// One bench row: `shape`'s elements, 1-D on the host.
    fn bench_shape(
        &self,
        engine: &Engine,
        rng: &mut Rng,
        shape: &[usize],
        dtypes: &[DType],
        run: &mut BenchRun<'_>,
    ) -> Result<()> {
        let n: usize = shape.iter().product();
        let kind = (self.kind)(&Case::default())?;
        let ranking = matches!(kind, Pointwise::MarginRanking { .. });
        let x = rng.normals(n, 2.0);
        let unit: Vec<f32> = (0..n).map(|_| rng.uniform() as f32).collect();
        let signs: Vec<f32> = (0..n)
            .map(|_| if rng.chance(0.5) { 1.0 } else { -1.0 })
            .collect();
        // Targets in [0, 1]; ±1 labels for hinge's target and margin ranking's y.
        let target = if kind.signed_target() { &signs } else { &unit };
        let data = BenchData {
            kind,
            shape,
            x: &x,
            target,
            signs: &signs,
        };
        // Margin ranking's x2 is differentiable: it takes the input's type.
        for &dtype in dtypes {
            match (dtype, ranking) {
                (DType::F16, false) => self.bench_typed::<half::f16, f32>(engine, &data, run)?,
                (DType::F16, true) => {
                    self.bench_typed::<half::f16, half::f16>(engine, &data, run)?
                }
                (DType::BF16, false) => self.bench_typed::<half::bf16, f32>(engine, &data, run)?,
                (DType::BF16, true) => {
                    self.bench_typed::<half::bf16, half::bf16>(engine, &data, run)?
                }
                _ => self.bench_typed::<f32, f32>(engine, &data, run)?,
            }
        }
        Ok(())
    }

    /// One bench row: the input as `A`, the target (or x2) as `B`, gradients in their types.
    fn bench_typed<A: Element, B: Element>(
        &self,
        engine: &Engine,
        data: &BenchData<'_>,
        run: &mut BenchRun<'_>,
    ) -> Result<()> {
        let n = data.x.len();
        let ranking = matches!(data.kind, Pointwise::MarginRanking { .. });
        let x: Vec<A> = data.x.iter().map(|&v| A::from_f32(v)).collect();
        let target: Vec<B> = data.target.iter().map(|&v| B::from_f32(v)).collect();
        let (xt, tt, st) = (
            engine.upload_values(&x, &[n])?,
            engine.upload_values(&target, &[n])?,
            engine.upload(data.signs, &[n])?,
        );
        // Both backends write into gradient buffers allocated once.
        let (g1, g2) = (engine.zeros(&[n], A::DTYPE)?, engine.zeros(&[n], B::DTYPE)?);
        let (mut host_g1, mut host_g2) = (vec![A::from_f32(0.0); n], vec![B::from_f32(0.0); n]);
        // Gaussian NLL: a variance per element, in [0.1, 1.1].
        let gaussian = matches!(data.kind, Pointwise::GaussianNll { .. });
        let var: Vec<f32> = data.target.iter().map(|&t| t + 0.1).collect();
        let vt = engine.upload(&var, &[n])?;
        let inputs = if ranking {
            ElementwiseInputs::ranking(&xt, &tt, &st)
                .grad_out(&g1)
                .grad_out_x2(&g2)
        } else if gaussian {
            ElementwiseInputs::gaussian(&xt, &tt, &vt)
                .grad_out(&g1)
                .grad_out_x2(&g2)
        } else {
            ElementwiseInputs::new(&xt, &tt).grad_out(&g1)
        };
        let host = HostElementInputs {
            shape: &[n],
            input: &x,
            target: &target,
            labels: ranking.then_some(data.signs),
            var: gaussian.then_some(&var[..]),
            weight: None,
            pos_weight: None,
            upstream: Upstream::Ones,
        };
        let loss = ElementwiseLoss::new(data.kind);
        let mut plan = loss.plan(engine);
        // Inputs read (with labels for ranking) and gradients written (x2's too for
        // ranking), each once; the partial sums are a few kB.
        let (a, b) = (A::DTYPE.size() as usize, B::DTYPE.size() as usize);
        let bytes = if ranking {
            n * (2 * a + 2 * b + 4)
        } else if gaussian {
            n * (2 * a + b + 8)
        } else {
            n * (2 * a + b)
        };
        let label = match A::DTYPE {
            DType::F32 => self.name.to_string(),
            t => format!("{} {}", self.name, t.name()),
        };
        run(BenchJob {
            label: &label,
            shape: data.shape.to_vec(),
            bytes_min: bytes,
            bytes_moved: bytes,
            flops: None,
            gpu: &mut |e| plan.record(e, &inputs).map(|_| ()),
            cpu: &mut || elementwise_into(&loss, &host, &mut host_g1, &mut host_g2).map(|_| ()),
        })
    }
}

/// The host data of one elementwise bench shape.
struct BenchData<'a> {
    kind: Pointwise,
    shape: &'a [usize],
    x: &'a [f32],
    target: &'a [f32],
    signs: &'a [f32],
}
