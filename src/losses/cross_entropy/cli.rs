//! `cross-entropy` and `softmax-focal` by name, on host arrays: the command line's view.

use super::cpu::{
    cross_entropy as cpu_cross_entropy, cross_entropy_into, softmax_focal_into, HostRowInputs,
    HostTarget,
};
use super::gpu::{CrossEntropyInputs, Target};
use super::reference::{self, softmax_focal as focal_reference, RefTarget};
use super::{Args, CrossEntropy, SoftmaxFocal};
use crate::core::{Arg, DType, Element, LossValues, Reduction, Upstream};
use crate::error::{Error, Result};
use crate::gpu::engine::Engine;
use crate::gpu::GpuLoss;
use crate::registry::random::Rng;
use crate::registry::{
    host_upstream, labels_i32, BenchJob, BenchRun, BenchSpec, Case, DeviceUpstream, Evaluated,
    GpuSession, HostArray, HostData, InputSpec, LossDef,
};

/// The family's losses.
pub(crate) const LOSSES: &[&dyn LossDef] = &[&RowDef::CROSS_ENTROPY, &RowDef::SOFTMAX_FOCAL];

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
    /// The logits widened to f32, and their type.
    logits: Vec<f32>,
    dtype: DType,
    n: usize,
    c: usize,
    classes: Option<Vec<i32>>,
    probs: Option<Vec<f32>>,
    weight: Option<Vec<f32>>,
    upstream: Option<Vec<f32>>,
}

/// `ignore_index` from `case` (default -100), which must fit in i32.
fn ignore_index(case: &Case) -> Result<i32> {
    let ignore: i64 = case.option("ignore_index", -100)?;
    i32::try_from(ignore).map_err(|_| Error::Option {
        option: "ignore_index",
        value: ignore.to_string(),
        reason: "must fit in i32",
    })
}

/// Cross-entropy's options from `case` (`softcap` = `none` or `off` turns capping off): the
/// command line's one reading of them, for cross-entropy and the fused linear loss.
pub(crate) fn cross_entropy_options(case: &Case) -> Result<CrossEntropy> {
    let softcap = match case.options.get("softcap").map(String::as_str) {
        None | Some("none") | Some("off") => None,
        Some(_) => Some(case.option("softcap", 0.0f32)?),
    };
    Ok(CrossEntropy::new()
        .reduction(case.option("reduction", Reduction::Mean)?)
        .ignore_index(ignore_index(case)?)
        .label_smoothing(case.option("label_smoothing", 0.0)?)
        .z_loss(case.option("z_loss", 0.0)?)
        .softcap(softcap)
        .grad_dtype(case.grad_dtype_option()?))
}

/// Class indices in `[0, c)` for `n` rows, about a fifth of them `ignore_index` -100.
pub(crate) fn random_classes(rng: &mut Rng, n: usize, c: usize) -> Vec<i64> {
    (0..n)
        .map(|_| {
            if rng.chance(0.2) {
                -100
            } else {
                rng.below(c) as i64
            }
        })
        .collect()
}

/// Cross-entropy's optional inputs and options over `c` classes (a class `weight`, label
/// smoothing, z-loss, softcap), each drawn or not: the random cases of cross-entropy and of
/// the fused linear loss.
pub(crate) fn random_options(rng: &mut Rng, mut case: Case, c: usize) -> Case {
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

impl HostProblem {
    fn from_case(def: &RowDef, case: &Case) -> Result<Self> {
        case.check_names(def)?;
        let opts = if def.focal {
            SoftmaxFocal::new()
                .reduction(case.option("reduction", Reduction::Mean)?)
                .ignore_index(ignore_index(case)?)
                .gamma(case.option("gamma", 2.0)?)
                .grad_dtype(case.grad_dtype_option()?)
                .row_kernel()
        } else {
            cross_entropy_options(case)?
        };
        let (logits, shape) = case.floats("logits").unwrap_or_default();
        let dtype = case.float_dtype("logits");
        let target = case.input("target").expect("checked: required");
        let probabilities = target.shape.len() == 2;
        let weight = case.floats(if def.focal { "alpha" } else { "weight" });
        let (scalar_upstream, per_item) = case.upstream_parts();
        let (n, c) = opts.check(&Args {
            logits: Arg {
                shape: &shape,
                dtype,
            },
            target: Arg {
                shape: &target.shape,
                dtype: match (&target.data, probabilities) {
                    // Whole-number floats are accepted as class indices.
                    (_, false) => DType::I32,
                    (data, true) => data.dtype(),
                },
            },
            probabilities,
            weight: weight.as_ref().map(|(_, s)| Arg::f32(s)),
            scalar_upstream,
            per_item_upstream: per_item.as_ref().map(|(_, s)| Arg::f32(s)),
        })?;
        let (classes, probs) = match &target.data {
            HostData::F32(p) if probabilities => (None, Some(p.clone())),
            _ => (Some(labels_i32("target", target)?), None),
        };
        let weight = weight.map(|(w, _)| w);
        let upstream = per_item
            .map(|(g, _)| g)
            .or(scalar_upstream.map(|g| vec![g]));
        Ok(Self {
            opts,
            logits,
            dtype,
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

impl RowDef {
    /// One benchmark row: logits `x` of `[n, c]` as `T` with class targets `y`, and the
    /// gradient in `T`.
    fn bench_one<T: Element>(
        &self,
        engine: &Engine,
        x: &[f32],
        y: &[i32],
        (n, c): (usize, usize),
        run: &mut BenchRun<'_>,
    ) -> Result<()> {
        let x: Vec<T> = x.iter().map(|&v| T::from_f32(v)).collect();
        let logits = engine.upload_values(&x, &[n, c])?;
        let target = engine.upload_i32(y, &[n])?;
        // Both backends write into gradient buffers allocated once, as a training loop would.
        let grad = engine.zeros(&[n, c], T::DTYPE)?;
        let mut host_grad = vec![T::from_f32(0.0); n * c];
        let inputs = CrossEntropyInputs::new(&logits, Target::Classes(&target)).grad_out(&grad);
        let host = HostRowInputs {
            logits: &x,
            shape: (n, c),
            target: HostTarget::Classes(y),
            weight: None,
            upstream: Upstream::Ones,
        };
        let (ce, focal) = (CrossEntropy::new(), SoftmaxFocal::new());
        let (mut ce_plan, mut focal_plan) = (ce.plan(engine), focal.plan(engine));
        // The row kernel reads each row once or twice (the log-sum-exp, then the gradient,
        // unless the row stayed on chip) and writes the gradient.
        let logits_bytes = n * c * T::DTYPE.size() as usize;
        let reads = super::gpu::logit_reads(engine, n, c);
        let label = match T::DTYPE {
            DType::F32 => self.name().to_string(),
            d => format!("{} {}", self.name(), d.name()),
        };
        run(BenchJob {
            label: &label,
            shape: vec![n, c],
            bytes_min: 2 * logits_bytes,
            bytes_moved: (reads + 1) * logits_bytes,
            flops: None,
            gpu: &mut |e| {
                if self.focal {
                    focal_plan.record(e, &inputs).map(|_| ())
                } else {
                    ce_plan.record(e, &inputs).map(|_| ())
                }
            },
            cpu: &mut || {
                if self.focal {
                    softmax_focal_into(&focal, &host, &mut host_grad).map(|_| ())
                } else {
                    cross_entropy_into(&ce, &host, &mut host_grad).map(|_| ())
                }
            },
        })
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

    fn half_precision(&self) -> bool {
        true
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

    fn gpu_in(&self, s: &mut GpuSession<'_>, case: &Case) -> Result<Evaluated<f32>> {
        let p = HostProblem::from_case(self, case)?;
        let (n, c) = (p.n, p.c);
        let logits = s.upload_as("logits", &p.logits, &[n, c], p.dtype)?;
        let target = match (&p.classes, &p.probs) {
            (Some(y), _) => s.upload_i32("target", y, &[n])?,
            (_, Some(t)) => s.upload("target", t, &[n, c])?,
            _ => unreachable!("one target kind is set"),
        };
        let target = match p.classes {
            Some(_) => Target::Classes(&target),
            None => Target::Probabilities(&target),
        };
        let weight = p
            .weight
            .as_ref()
            .map(|w| s.upload("weight", w, &[c]))
            .transpose()?;
        let upstream = DeviceUpstream::upload(s, p.upstream.as_deref(), &[n], p.opts.reduction)?;
        let mut inputs = CrossEntropyInputs::new(&logits, target);
        inputs.weight = weight.as_ref();
        inputs.upstream = upstream.get();
        let out = s.run(&p.opts, &inputs)?;
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
            upstream: host_upstream(p.upstream.as_deref(), p.n, p.opts.reduction),
        };
        // 16-bit logits reach the backend as 16-bit values.
        fn narrowed<T: Element>(
            inputs: &HostRowInputs<'_>,
            opts: &CrossEntropy,
        ) -> Result<LossValues> {
            let logits: Vec<T> = inputs.logits.iter().map(|&x| T::from_f32(x)).collect();
            let narrow = HostRowInputs {
                logits: &logits,
                shape: inputs.shape,
                target: inputs.target,
                weight: inputs.weight,
                upstream: inputs.upstream,
            };
            cpu_cross_entropy(opts, &narrow)
        }
        let out = match p.dtype {
            DType::F16 => narrowed::<half::f16>(&inputs, &p.opts)?,
            DType::BF16 => narrowed::<half::bf16>(&inputs, &p.opts)?,
            _ => cpu_cross_entropy(&p.opts, &inputs)?,
        };
        Ok(p.evaluated(out))
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
            let y = random_classes(rng, n, c);
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
            let y = random_classes(rng, n, c);
            case = case.with("target", HostArray::i64(&[n], y));
        }
        random_options(rng, case, c)
    }

    fn bench(
        &self,
        engine: &Engine,
        rng: &mut Rng,
        spec: &BenchSpec,
        run: &mut BenchRun<'_>,
    ) -> Result<()> {
        let quick: &[&[usize]] = &[&[32, 10], &[1024, 4096], &[64, 32000]];
        let full: &[&[usize]] = &[
            &[32, 10],
            &[1024, 4096],
            &[4096, 4096],
            &[256, 32000],
            &[4096, 32000],
            &[512, 50257],
            &[64, 131072],
        ];
        // Softmax focal shares the kernel: by default it is timed where there are 4096
        // classes.
        let focal_own = |&(_, c): &(usize, usize)| !spec.shapes.is_empty() || c == 4096;
        let shapes = spec.pairs(quick, full)?;
        for (n, c) in shapes.into_iter().filter(|s| !self.focal || focal_own(s)) {
            let x = rng.normals(n * c, 2.0);
            let y: Vec<i32> = (0..n).map(|_| rng.below(c) as i32).collect();
            for dtype in spec.dtypes(true) {
                match dtype {
                    DType::F16 => self.bench_one::<half::f16>(engine, &x, &y, (n, c), run)?,
                    DType::BF16 => self.bench_one::<half::bf16>(engine, &x, &y, (n, c), run)?,
                    _ => self.bench_one::<f32>(engine, &x, &y, (n, c), run)?,
                }
            }
        }
        Ok(())
    }
}
