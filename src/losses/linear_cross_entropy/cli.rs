//! `linear-cross-entropy` by name, on host arrays: the command line's view.

use super::cpu::{linear_cross_entropy as cpu_linear, HostLinearInputs};
use super::gpu::LinearCrossEntropyInputs;
use super::reference::{linear_cross_entropy as reference_linear, RefLinearInputs};
use super::{Args, LinearCrossEntropy};
use crate::core::{Arg, DType, Element, LossValues, Reduction, Upstream};
use crate::error::{Error, Result};
use crate::gpu::engine::Engine;
use crate::gpu::GpuLoss;
use crate::losses::cross_entropy::cli::{cross_entropy_options, random_classes, random_options};
use crate::registry::random::Rng;
use crate::registry::{
    host_upstream, labels_i32, BenchJob, BenchRun, BenchSpec, Case, DeviceUpstream, Evaluated,
    GpuSession, HostArray, InputSpec, LossDef,
};

/// The family's loss.
pub(crate) const LOSSES: &[&dyn LossDef] = &[&LinearDef];

/// `linear-cross-entropy` for the command line (see [`crate::registry`]).
pub(crate) struct LinearDef;

/// A problem on the host, checked for consistent shapes.
struct HostProblem {
    opts: LinearCrossEntropy,
    /// The type of hidden, classifier and bias (their values here widened to f32).
    dtype: DType,
    hidden: Vec<f32>,
    classifier: Vec<f32>,
    bias: Option<Vec<f32>>,
    shape: (usize, usize, usize),
    target: Vec<i32>,
    weight: Option<Vec<f32>>,
    upstream: Option<Vec<f32>>,
}

impl HostProblem {
    fn from_case(def: &LinearDef, case: &Case) -> Result<Self> {
        case.check_names(def)?;
        let ce = cross_entropy_options(case)?;
        let mut opts = LinearCrossEntropy::new()
            .reduction(ce.reduction)
            .ignore_index(ce.ignore_index)
            .label_smoothing(ce.label_smoothing)
            .z_loss(ce.z_loss)
            .softcap(ce.softcap)
            .grad_dtype(ce.grad_dtype);
        if case.options.contains_key("chunk_rows") {
            opts = opts.chunk_rows(case.option("chunk_rows", 0usize)?);
        }
        opts = opts.row_stats(case.flag("row_stats", false)?);
        opts = opts.grad_filter(match case.options.get("grad_filter").map(String::as_str) {
            None | Some("off") => None,
            Some("auto") => Some(LinearCrossEntropy::auto_filter(case.float_dtype("hidden"))),
            Some(_) => Some(case.option("grad_filter", 0.0f32)?),
        });
        let (hidden, hidden_shape) = case.floats("hidden").unwrap_or_default();
        let (classifier, classifier_shape) = case.floats("classifier").unwrap_or_default();
        let bias = case.floats("bias");
        let target = case.input("target").expect("checked: required");
        let weight = case.floats("weight");
        let (scalar_upstream, per_item) = case.upstream_parts();
        let typed = |shape, name| Arg {
            shape,
            dtype: case.float_dtype(name),
        };
        let shape = opts.check(&Args {
            hidden: typed(&hidden_shape, "hidden"),
            classifier: typed(&classifier_shape, "classifier"),
            bias: bias.as_ref().map(|(_, s)| typed(s, "bias")),
            target: Arg {
                shape: &target.shape,
                dtype: DType::I32,
            },
            weight: weight.as_ref().map(|(_, s)| Arg::f32(s)),
            scalar_upstream,
            per_item_upstream: per_item.as_ref().map(|(_, s)| Arg::f32(s)),
        })?;
        Ok(Self {
            opts,
            dtype: case.float_dtype("hidden"),
            hidden,
            classifier,
            bias: bias.map(|(b, _)| b),
            shape,
            target: labels_i32("target", target)?,
            weight: weight.map(|(w, _)| w),
            upstream: per_item
                .map(|(g, _)| g)
                .or(scalar_upstream.map(|g| vec![g])),
        })
    }

    /// The CPU backend on the inputs as `T` (16-bit inputs reach it as 16-bit values).
    fn cpu<T: Element>(&self) -> Result<LossValues> {
        let typed = |v: &[f32]| v.iter().map(|&x| T::from_f32(x)).collect::<Vec<T>>();
        let (hidden, classifier) = (typed(&self.hidden), typed(&self.classifier));
        let bias = self.bias.as_deref().map(typed);
        cpu_linear(
            &self.opts,
            &HostLinearInputs {
                hidden: &hidden,
                classifier: &classifier,
                bias: bias.as_deref(),
                shape: self.shape,
                target: &self.target,
                weight: self.weight.as_deref(),
                upstream: host_upstream(
                    self.upstream.as_deref(),
                    self.shape.0,
                    self.opts.reduction,
                ),
            },
        )
    }

    fn loss_shape(&self) -> Vec<usize> {
        match self.opts.reduction {
            Reduction::None => vec![self.shape.0],
            _ => vec![],
        }
    }

    /// Each gradient's shape, by name.
    fn grad_shape(&self, name: &str) -> Vec<usize> {
        let (n, h, v) = self.shape;
        match name {
            "hidden" => vec![n, h],
            "classifier" => vec![v, h],
            _ => vec![v],
        }
    }

    fn evaluated(&self, out: LossValues) -> Evaluated<f32> {
        Evaluated {
            loss: out.loss,
            loss_shape: self.loss_shape(),
            grads: out
                .grads
                .into_iter()
                .map(|(name, g)| (name, g, self.grad_shape(name)))
                .collect(),
            rows: out.rows,
            grad_terms: 0.0,
            loss_terms: 0.0,
            decision_gap: f64::INFINITY,
        }
    }
}

// The target before the classifier: the first required input after the hidden states is
// the one whose rows must match theirs.
const INPUTS: [InputSpec; 6] = [
    InputSpec {
        name: "hidden",
        differentiable: true,
        required: true,
    },
    InputSpec {
        name: "target",
        differentiable: false,
        required: true,
    },
    InputSpec {
        name: "classifier",
        differentiable: true,
        required: true,
    },
    InputSpec {
        name: "bias",
        differentiable: true,
        required: false,
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

impl LossDef for LinearDef {
    fn half_precision(&self) -> bool {
        true
    }

    fn name(&self) -> &'static str {
        "linear-cross-entropy"
    }

    fn inputs(&self) -> &'static [InputSpec] {
        &INPUTS
    }

    fn options(&self) -> &'static [&'static str] {
        &[
            "reduction",
            "ignore_index",
            "label_smoothing",
            "z_loss",
            "softcap",
            "chunk_rows",
            "row_stats",
            "grad_filter",
        ]
    }

    fn gpu_in(&self, s: &mut GpuSession<'_>, case: &Case) -> Result<Evaluated<f32>> {
        let p = HostProblem::from_case(self, case)?;
        let (n, h, v) = p.shape;
        let hidden = s.upload_as("hidden", &p.hidden, &[n, h], p.dtype)?;
        let classifier = s.upload_as("classifier", &p.classifier, &[v, h], p.dtype)?;
        let target = s.upload_i32("target", &p.target, &[n])?;
        let bias = p
            .bias
            .as_ref()
            .map(|b| s.upload_as("bias", b, &[v], p.dtype))
            .transpose()?;
        let weight = p
            .weight
            .as_ref()
            .map(|w| s.upload("weight", w, &[v]))
            .transpose()?;
        let upstream = DeviceUpstream::upload(s, p.upstream.as_deref(), &[n], p.opts.reduction)?;
        let inputs = LinearCrossEntropyInputs {
            hidden: &hidden,
            classifier: &classifier,
            bias: bias.as_ref(),
            target: &target,
            weight: weight.as_ref(),
            upstream: upstream.get(),
        };
        let out = s.run(&p.opts, &inputs)?;
        Ok(p.evaluated(out))
    }

    fn cpu(&self, case: &Case) -> Result<Evaluated<f32>> {
        let p = HostProblem::from_case(self, case)?;
        let out = match p.dtype {
            DType::F16 => p.cpu::<half::f16>()?,
            DType::BF16 => p.cpu::<half::bf16>()?,
            _ => p.cpu::<f32>()?,
        };
        Ok(p.evaluated(out))
    }

    fn reference(&self, case: &Case) -> Result<Evaluated<f64>> {
        let p = HostProblem::from_case(self, case)?;
        if p.opts.row_stats {
            return Err(Error::Option {
                option: "row_stats",
                value: "true".into(),
                reason: "the f64 reference does not report lse and correct (gpu and cpu do)",
            });
        }
        if let Some(eps) = p.opts.grad_filter {
            return Err(Error::Option {
                option: "grad_filter",
                value: eps.to_string(),
                reason: "the f64 reference computes every gradient term (gpu and cpu filter)",
            });
        }
        let to64 = |v: &[f32]| v.iter().map(|&x| x as f64).collect::<Vec<f64>>();
        let target: Vec<i64> = p.target.iter().map(|&y| y as i64).collect();
        let (hidden, classifier) = (to64(&p.hidden), to64(&p.classifier));
        let bias = p.bias.as_deref().map(to64);
        let weight = p.weight.as_deref().map(to64);
        let upstream = p.upstream.as_deref().map_or(vec![1.0], to64);
        let out = reference_linear(
            &p.opts,
            &RefLinearInputs {
                hidden: &hidden,
                classifier: &classifier,
                bias: bias.as_deref(),
                shape: p.shape,
                target: &target,
                weight: weight.as_deref(),
                upstream: &upstream,
            },
        )?;
        Ok(Evaluated {
            loss: out.loss,
            loss_shape: p.loss_shape(),
            grads: out
                .grads
                .into_iter()
                .map(|(name, g)| (name, g, p.grad_shape(name)))
                .collect(),
            rows: Vec::new(),
            grad_terms: out.grad_terms,
            loss_terms: out.loss_terms,
            decision_gap: out.decision_gap,
        })
    }

    fn random_case(&self, rng: &mut Rng) -> Case {
        let n = 1 + rng.below(150);
        let h = 1 + rng.below(40);
        let v = 1 + rng.below(300);
        // Logits of order 1: hidden and classifier entries of about 1/√H each.
        let scale = 1.5 / (h as f64).sqrt();
        let y = random_classes(rng, n, v);
        let mut case = Case::default()
            .with("hidden", HostArray::f32(&[n, h], rng.normals(n * h, 1.0)))
            .with(
                "classifier",
                HostArray::f32(&[v, h], rng.normals(v * h, scale)),
            )
            .with("target", HostArray::i64(&[n], y))
            .set("reduction", ["mean", "sum", "none"][rng.below(3)]);
        if rng.chance(0.5) {
            case = case.with("bias", HostArray::f32(&[v], rng.normals(v, 1.0)));
        }
        if rng.chance(0.4) {
            case = case.set("chunk_rows", 64);
        }
        random_options(rng, case, v)
    }

    fn bench(
        &self,
        engine: &Engine,
        rng: &mut Rng,
        spec: &BenchSpec,
        run: &mut BenchRun<'_>,
    ) -> Result<()> {
        let quick: &[&[usize]] = &[&[256, 128, 4096]];
        // 2048×512×16384 (206 GFLOP) takes 28 s per call on lavapipe: ask for it with --shape.
        let full: &[&[usize]] = &[&[256, 128, 4096], &[1024, 256, 8192]];
        for shape in spec.shapes(quick, full) {
            let &[n, h, v] = &shape[..] else {
                return Err(Error::Shape {
                    input: "--shape",
                    expected: "NxHxV".into(),
                    got: shape,
                });
            };
            let x = rng.normals(n * h, 1.0);
            let w = rng.normals(v * h, 1.5 / (h as f64).sqrt());
            let y: Vec<i32> = (0..n).map(|_| rng.below(v) as i32).collect();
            let hidden = engine.upload(&x, &[n, h])?;
            let classifier = engine.upload(&w, &[v, h])?;
            let target = engine.upload_i32(&y, &[n])?;
            let inputs = LinearCrossEntropyInputs::new(&hidden, &classifier, &target);
            let opts = LinearCrossEntropy::new();
            let mut plan = opts.plan(engine);
            let host = HostLinearInputs {
                hidden: &x,
                classifier: &w,
                bias: None,
                shape: (n, h, v),
                target: &y,
                weight: None,
                upstream: Upstream::Ones,
            };
            let chunk = opts.rows_per_chunk(n, v).min(n);
            // Inputs read, gradients written; the kernels also write and re-read each chunk's
            // logits three times and read the inputs once per product.
            let inputs_bytes = (n * h + v * h) * 4;
            let chunks = n.div_ceil(chunk);
            run(BenchJob {
                label: self.name(),
                shape: shape.clone(),
                bytes_min: 2 * inputs_bytes,
                bytes_moved: 2 * inputs_bytes + 4 * n * v * 4 + chunks * 2 * v * h * 4,
                flops: Some(6.0 * (n * h * v) as f64),
                gpu: &mut |e| plan.record(e, &inputs).map(|_| ()),
                cpu: &mut || cpu_linear(&opts, &host).map(|_| ()),
            })?;
        }
        Ok(())
    }
}
