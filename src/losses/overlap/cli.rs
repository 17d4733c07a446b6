//! `dice` and `tversky` by name, on host arrays: the command line's view.

use super::cpu::{overlap as cpu_overlap, HostOverlapInputs, HostOverlapTarget};
use super::gpu::OverlapInputs;
use super::reference::{overlap as reference_overlap, RefOverlapInputs, RefOverlapTarget};
use super::{Activation, Args, Layout, Overlap, OverlapKind};
use crate::core::{Arg, DType, Element, LossValues, Reduction, Upstream};
use crate::error::Result;
use crate::gpu::engine::Engine;
use crate::gpu::GpuLoss;
use crate::registry::random::Rng;
use crate::registry::{
    f64s, host_upstream, labels_i32, spec, BenchJob, BenchRun, BenchSpec, Case, DeviceUpstream,
    Evaluated, GpuSession, HostArray, HostData, InputSpec, LossDef, GRAD_OUTPUT,
};

/// The family's losses.
pub(crate) const LOSSES: &[&dyn LossDef] = &[&OverlapDef::Dice, &OverlapDef::Tversky];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OverlapDef {
    Dice,
    Tversky,
}

/// The target as the case holds it.
enum Target {
    OneHot(Vec<f32>),
    Indices(Vec<i32>),
}

/// A checked host problem.
struct Problem {
    opts: Overlap,
    /// The input widened to f32, its type and shape.
    input: Vec<f32>,
    dtype: DType,
    shape: Vec<usize>,
    target: Target,
    target_shape: Vec<usize>,
    weight: Option<Vec<f32>>,
    upstream: Option<Vec<f32>>,
    layout: Layout,
}

impl OverlapDef {
    fn problem(&self, case: &Case) -> Result<Problem> {
        case.check_names(self)?;
        let kind = match self {
            OverlapDef::Dice => OverlapKind::Dice {
                squared_pred: case.flag("squared_pred", false)?,
                jaccard: case.flag("jaccard", false)?,
            },
            OverlapDef::Tversky => OverlapKind::Tversky {
                alpha: case.option("alpha", 0.5)?,
                beta: case.option("beta", 0.5)?,
            },
        };
        let opts = Overlap::new(kind)
            .activation(case.option("activation", Activation::None)?)
            .include_background(case.flag("include_background", true)?)
            .smooth(
                case.option("smooth_nr", 1e-5)?,
                case.option("smooth_dr", 1e-5)?,
            )
            .batch(case.flag("batch", false)?)
            .reduction(case.option("reduction", Reduction::Mean)?)
            .grad_dtype(case.grad_dtype_option()?);
        opts.validate()?;
        let (input, shape) = case.floats("input").expect("checked: required");
        let dtype = case.float_dtype("input");
        let t = case.input("target").expect("checked: required");
        let target = match &t.data {
            HostData::I64(_) => Target::Indices(labels_i32("target", t)?),
            other => Target::OneHot(other.to_f32()),
        };
        let weight = case.floats("weight").map(|(w, _)| w);
        let (scalar_upstream, per_item) = case.upstream_parts();
        let layout = opts.check(&Args {
            input: Arg {
                shape: &shape,
                dtype,
            },
            target: Arg {
                shape: &t.shape,
                dtype: t.data.dtype(),
            },
            weight: weight.as_deref(),
            scalar_upstream,
            per_item_upstream: per_item.as_ref().map(|(_, s)| Arg::f32(s)),
        })?;
        Ok(Problem {
            opts,
            input,
            dtype,
            shape,
            target,
            target_shape: t.shape.clone(),
            weight,
            upstream: per_item
                .map(|(g, _)| g)
                .or(scalar_upstream.map(|g| vec![g])),
            layout,
        })
    }
}

impl Problem {
    fn loss_shape(&self) -> Vec<usize> {
        match self.opts.reduction {
            Reduction::None => self.layout.group_shape(),
            _ => vec![],
        }
    }

    fn evaluated(&self, out: LossValues) -> Evaluated<f32> {
        Evaluated::from_values(out, self.loss_shape(), &self.shape)
    }

    fn cpu<T: Element>(&self) -> Result<LossValues> {
        let input: Vec<T> = self.input.iter().map(|&x| T::from_f32(x)).collect();
        cpu_overlap(
            &self.opts,
            &HostOverlapInputs {
                input: &input,
                shape: &self.shape,
                target: match &self.target {
                    Target::OneHot(t) => HostOverlapTarget::OneHot(t),
                    Target::Indices(t) => HostOverlapTarget::Indices(t),
                },
                weight: self.weight.as_deref(),
                upstream: host_upstream(
                    self.upstream.as_deref(),
                    self.layout.groups(),
                    self.opts.reduction,
                ),
            },
        )
    }
}

impl LossDef for OverlapDef {
    fn name(&self) -> &'static str {
        match self {
            OverlapDef::Dice => "dice",
            OverlapDef::Tversky => "tversky",
        }
    }

    fn half_precision(&self) -> bool {
        true
    }

    fn inputs(&self) -> &'static [InputSpec] {
        const INPUTS: &[InputSpec] = &[
            spec("input", true, true),
            spec("target", false, true),
            spec("weight", false, false),
            GRAD_OUTPUT,
        ];
        INPUTS
    }

    fn options(&self) -> &'static [&'static str] {
        match self {
            OverlapDef::Dice => &[
                "reduction",
                "activation",
                "include_background",
                "squared_pred",
                "jaccard",
                "smooth_nr",
                "smooth_dr",
                "batch",
            ],
            OverlapDef::Tversky => &[
                "reduction",
                "activation",
                "include_background",
                "alpha",
                "beta",
                "smooth_nr",
                "smooth_dr",
                "batch",
            ],
        }
    }

    fn gpu_in(&self, s: &mut GpuSession<'_>, case: &Case) -> Result<Evaluated<f32>> {
        let p = self.problem(case)?;
        let input = s.upload_as("input", &p.input, &p.shape, p.dtype)?;
        let target = match &p.target {
            Target::OneHot(t) => s.upload("target", t, &p.target_shape)?,
            Target::Indices(t) => s.upload_i32("target", t, &p.target_shape)?,
        };
        let upstream = DeviceUpstream::upload(
            s,
            p.upstream.as_deref(),
            &p.layout.group_shape(),
            p.opts.reduction,
        )?;
        let inputs = OverlapInputs {
            input: &input,
            target: &target,
            weight: p.weight.as_deref(),
            upstream: upstream.get(),
        };
        let out = s.run(&p.opts, &inputs)?;
        Ok(p.evaluated(out))
    }

    fn cpu(&self, case: &Case) -> Result<Evaluated<f32>> {
        let p = self.problem(case)?;
        let out = match p.dtype {
            DType::F16 => p.cpu::<half::f16>()?,
            DType::BF16 => p.cpu::<half::bf16>()?,
            _ => p.cpu::<f32>()?,
        };
        Ok(p.evaluated(out))
    }

    fn reference(&self, case: &Case) -> Result<Evaluated<f64>> {
        let p = self.problem(case)?;
        let one_hot;
        let indices: Vec<i64>;
        let target = match &p.target {
            Target::OneHot(t) => {
                one_hot = f64s(t);
                RefOverlapTarget::OneHot(&one_hot)
            }
            Target::Indices(t) => {
                indices = t.iter().map(|&v| v as i64).collect();
                RefOverlapTarget::Indices(&indices)
            }
        };
        let upstream = p.upstream.as_deref().map_or(vec![1.0], f64s);
        let out = reference_overlap(
            &p.opts,
            RefOverlapInputs {
                input: &f64s(&p.input),
                shape: &p.shape,
                target,
                weight: p.weight.as_deref(),
                upstream: &upstream,
            },
        )?;
        Ok(Evaluated::from_reference(out, p.loss_shape(), &p.shape))
    }

    fn random_case(&self, rng: &mut Rng) -> Case {
        let n = 1 + rng.below(3);
        let c = 1 + rng.below(4);
        let spatial: Vec<usize> = (0..1 + rng.below(3)).map(|_| 1 + rng.below(7)).collect();
        let s: usize = spatial.iter().product();
        let shape = [&[n, c][..], &spatial].concat();
        let activation = match (c, rng.below(3)) {
            (1, 2) => "sigmoid",
            (_, a) => ["none", "sigmoid", "softmax"][a],
        };
        let input = match activation {
            // Probabilities, some exactly 0 or 1.
            "none" => (0..n * c * s)
                .map(|_| match rng.below(8) {
                    0 => 0.0,
                    1 => 1.0,
                    _ => rng.range(0.0, 1.0) as f32,
                })
                .collect(),
            _ => rng.normals(n * c * s, 2.0),
        };
        let mut case = Case::default()
            .with("input", HostArray::f32(&shape, input))
            .set("activation", activation);
        // Class indices (often leaving a channel empty), hard one-hot, or soft labels.
        let labels: Vec<i64> = (0..n * s).map(|_| rng.below(c) as i64).collect();
        case = match rng.below(3) {
            0 => {
                let target_shape = match rng.chance(0.5) {
                    true => [&[n][..], &spatial].concat(),
                    false => [&[n, 1][..], &spatial].concat(),
                };
                case.with("target", HostArray::i64(&target_shape, labels))
            }
            hard => {
                let mut t = vec![0.0f32; n * c * s];
                for (at, &l) in labels.iter().enumerate() {
                    let (i, q) = (at / s, at % s);
                    t[(i * c + l as usize) * s + q] = 1.0;
                }
                if hard == 2 {
                    t.iter_mut().for_each(|v| *v = rng.range(0.0, 1.0) as f32);
                }
                case.with("target", HostArray::f32(&shape, t))
            }
        };
        if c > 1 && rng.chance(0.3) {
            case = case.set("include_background", false);
        }
        match self {
            OverlapDef::Dice => {
                case = case
                    .set("squared_pred", rng.chance(0.3))
                    .set("jaccard", rng.chance(0.3));
            }
            OverlapDef::Tversky => {
                case = case
                    .set("alpha", rng.range(0.0, 1.0) as f32)
                    .set("beta", rng.range(0.0, 1.0) as f32);
            }
        }
        let smooth = [(1e-5, 1e-5), (0.0, 1e-5), (1.0, 1.0)][rng.below(3)];
        case = case
            .set("smooth_nr", smooth.0)
            .set("smooth_dr", smooth.1)
            .set("batch", rng.chance(0.3));
        if rng.chance(0.4) {
            let w = (0..c).map(|_| rng.range(0.0, 2.0) as f32).collect();
            case = case.with("weight", HostArray::f32(&[c], w));
        }
        let reduction = ["mean", "sum", "none"][rng.below(3)];
        case = case.set("reduction", reduction);
        if rng.chance(0.3) {
            let kept = c - (case.options.contains_key("include_background") as usize);
            let groups: &[usize] = match case.options["batch"].as_str() {
                "true" => &[kept],
                _ => &[n, kept],
            };
            case = case.with_random_upstream(rng, groups, reduction == "none");
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
        // 3-D segmentation: softmax over a few classes, class-index labels.
        for shape in spec.shapes(&[&[2, 4, 32, 32, 32]], &[&[2, 4, 96, 96, 96]]) {
            let (n, c) = (shape[0], shape[1].max(2));
            let shape = [&[n, c][..], shape.get(2..).unwrap_or(&[])].concat();
            let s: usize = shape[2..].iter().product();
            let logits = rng.normals(n * c * s, 1.0);
            let labels: Vec<i32> = (0..n * s).map(|_| rng.below(c) as i32).collect();
            let kind = match self {
                OverlapDef::Dice => OverlapKind::DICE,
                OverlapDef::Tversky => OverlapKind::TVERSKY,
            };
            let loss = Overlap::new(kind).activation(Activation::Softmax);
            let device_logits = engine.upload(&logits, &shape)?;
            let label_shape = [&[n][..], &shape[2..]].concat();
            let device_labels = engine.upload_i32(&labels, &label_shape)?;
            let mut plan = loss.plan(engine);
            let inputs = OverlapInputs::new(&device_logits, &device_labels);
            let host = HostOverlapInputs {
                input: &logits[..],
                shape: &shape,
                target: HostOverlapTarget::Indices(&labels),
                weight: None,
                upstream: Upstream::Ones,
            };
            // Logits and labels read, the gradient written; the kernels read the logits five
            // times (the softmax's normalizer twice, then each channel's prediction in the
            // sums, the gradient's shared term and the gradient) and the labels twice.
            let (block, labels_bytes) = (n * c * s * 4, n * s * 4);
            run(BenchJob {
                label: self.name(),
                shape: shape.clone(),
                bytes_min: 2 * block + labels_bytes,
                bytes_moved: 6 * block + 2 * labels_bytes,
                flops: None,
                gpu: &mut |e| plan.record(e, &inputs).map(|_| ()),
                cpu: &mut || cpu_overlap(&loss, &host).map(|_| ()),
            })?;
        }
        Ok(())
    }
}
