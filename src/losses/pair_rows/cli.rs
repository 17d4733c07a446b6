//! `contrastive` and `triplet` by name, on host arrays: the command line's view.

use super::cpu::{HostContrastiveInputs, HostTripletInputs};
use super::gpu::{ContrastiveInputs, TripletInputs};
use super::{
    check, cpu, first_bad_sign, reference, Args, Contrastive, CosineEmbedding, Triplet,
    PAIRWISE_EPS,
};
use crate::core::{Arg, DType, Element, LossValues, Reduction, Upstream};
use crate::error::{Error, Result};
use crate::gpu::engine::Engine;
use crate::gpu::GpuLoss;
use crate::registry::random::Rng;
use crate::registry::{
    f64s, host_upstream, spec, BenchJob, BenchRun, BenchSpec, Case, DeviceUpstream, Evaluated,
    GpuSession, HostArray, InputSpec, LossDef, Rows, GRAD_OUTPUT,
};
use crate::Distance;

/// The family's losses.
pub(crate) const LOSSES: &[&dyn LossDef] = &[
    &PairDef::Contrastive,
    &PairDef::Triplet,
    &PairDef::CosineEmbedding,
    &PairDef::TripletDistance,
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PairDef {
    Contrastive,
    Triplet,
    CosineEmbedding,
    /// `TripletMarginWithDistanceLoss`: the triplet loss over a named distance.
    TripletDistance,
}

#[derive(Debug, Clone, Copy)]
enum Opts {
    Contrastive(Contrastive),
    Triplet(Triplet),
    CosineEmbedding(CosineEmbedding),
}

impl Opts {
    fn reduction(&self) -> Reduction {
        match self {
            Opts::Contrastive(o) => o.reduction,
            Opts::Triplet(o) => o.reduction,
            Opts::CosineEmbedding(o) => o.reduction,
        }
    }
}

/// A checked host problem.
struct Problem {
    opts: Opts,
    rows: Rows,
    y: Option<Vec<f32>>,
    upstream: Option<Vec<f32>>,
}

impl PairDef {
    fn problem(&self, case: &Case) -> Result<Problem> {
        case.check_names(self)?;
        let opts = match self {
            PairDef::Contrastive => Opts::Contrastive(Contrastive {
                reduction: case.option("reduction", Reduction::Mean)?,
                margin: case.option("margin", 1.0)?,
                eps: case.option("eps", PAIRWISE_EPS)?,
                gradient: true,
                grad_dtype: case.grad_dtype_option()?,
            }),
            PairDef::Triplet => {
                let p: f32 = case.option("p", 2.0)?;
                if p != 1.0 && p != 2.0 {
                    return Err(Error::Option {
                        option: "p",
                        value: p.to_string(),
                        reason: "must be 1 or 2",
                    });
                }
                Opts::Triplet(Triplet {
                    reduction: case.option("reduction", Reduction::Mean)?,
                    margin: case.option("margin", 1.0)?,
                    p: p as u32,
                    eps: case.option("eps", PAIRWISE_EPS)?,
                    swap: case.flag("swap", false)?,
                    distance: Distance::Euclidean,
                    gradient: true,
                    grad_dtype: case.grad_dtype_option()?,
                })
            }
            PairDef::TripletDistance => Opts::Triplet(
                Triplet::new()
                    .reduction(case.option("reduction", Reduction::Mean)?)
                    .margin(case.option("margin", 1.0)?)
                    .swap(case.flag("swap", false)?)
                    .distance(case.option("distance", Distance::Euclidean)?)
                    .grad_dtype(case.grad_dtype_option()?),
            ),
            PairDef::CosineEmbedding => Opts::CosineEmbedding(
                CosineEmbedding::new()
                    .reduction(case.option("reduction", Reduction::Mean)?)
                    .margin(case.option("margin", 0.0)?)
                    .grad_dtype(case.grad_dtype_option()?),
            ),
        };
        match opts {
            Opts::Contrastive(o) => o.validate()?,
            Opts::Triplet(o) => o.validate()?,
            Opts::CosineEmbedding(o) => o.validate()?,
        }
        let arrays = case.row_arrays(self);
        let y = case.floats("y");
        let (scalar_upstream, per_item) = case.upstream_parts();
        let rows = Rows::checked(arrays, |rows| {
            let args = Args {
                rows,
                y: y.as_ref().map(|(_, s)| Arg::f32(s)),
                scalar_upstream,
                per_item_upstream: per_item.as_ref().map(|(_, s)| Arg::f32(s)),
            };
            check(&args, opts.reduction())
        })?;
        let y = y.map(|(y, _)| y);
        if let (Some(y), PairDef::CosineEmbedding) = (&y, self) {
            if let Some((row, value)) = first_bad_sign(y) {
                return Err(Error::Value {
                    input: "y",
                    row,
                    value: value.to_string(),
                    reason: "labels must be -1 or +1".into(),
                });
            }
        } else if let Some(y) = &y {
            if let Some(row) = y.iter().position(|v| !(0.0..=1.0).contains(v)) {
                return Err(Error::Value {
                    input: "y",
                    row,
                    value: y[row].to_string(),
                    reason: "contrastive labels must be in [0, 1] (1 = similar)".into(),
                });
            }
        }
        let upstream = per_item
            .map(|(g, _)| g)
            .or(scalar_upstream.map(|g| vec![g]));
        Ok(Problem {
            opts,
            rows,
            y,
            upstream,
        })
    }
}

impl Problem {
    fn loss_shape(&self) -> Vec<usize> {
        if self.opts.reduction() == Reduction::None {
            vec![self.rows.n]
        } else {
            vec![]
        }
    }

    fn evaluated(&self, out: LossValues) -> Evaluated<f32> {
        Evaluated::from_values(out, self.loss_shape(), &[self.rows.n, self.rows.dim])
    }

    fn y(&self) -> &[f32] {
        self.y.as_deref().expect("checked: required")
    }

    /// The CPU backend on the rows as `T` (16-bit rows reach it as 16-bit values).
    fn cpu<T: Element>(&self) -> Result<LossValues> {
        let r = &self.rows;
        let rows: Vec<Vec<T>> = (0..r.rows.len())
            .map(|i| r.row(i).iter().map(|&x| T::from_f32(x)).collect())
            .collect();
        let upstream = host_upstream(self.upstream.as_deref(), r.n, self.opts.reduction());
        match self.opts {
            Opts::Contrastive(o) => cpu::contrastive(
                &o,
                &HostContrastiveInputs {
                    x1: &rows[0],
                    x2: &rows[1],
                    y: self.y(),
                    dim: r.dim,
                    upstream,
                },
            ),
            Opts::Triplet(o) => cpu::triplet(
                &o,
                &HostTripletInputs {
                    anchor: &rows[0],
                    positive: &rows[1],
                    negative: &rows[2],
                    dim: r.dim,
                    upstream,
                },
            ),
            Opts::CosineEmbedding(o) => cpu::cosine_embedding(
                &o,
                &HostContrastiveInputs {
                    x1: &rows[0],
                    x2: &rows[1],
                    y: self.y(),
                    dim: r.dim,
                    upstream,
                },
            ),
        }
    }
}

impl LossDef for PairDef {
    fn half_precision(&self) -> bool {
        true
    }

    fn name(&self) -> &'static str {
        match self {
            PairDef::Contrastive => "contrastive",
            PairDef::Triplet => "triplet",
            PairDef::CosineEmbedding => "cosine-embedding",
            PairDef::TripletDistance => "triplet-distance",
        }
    }

    fn inputs(&self) -> &'static [InputSpec] {
        const PAIRS: &[InputSpec] = &[
            spec("x1", true, true),
            spec("x2", true, true),
            spec("y", false, true),
            GRAD_OUTPUT,
        ];
        const TRIPLETS: &[InputSpec] = &[
            spec("anchor", true, true),
            spec("positive", true, true),
            spec("negative", true, true),
            GRAD_OUTPUT,
        ];
        match self {
            PairDef::Contrastive | PairDef::CosineEmbedding => PAIRS,
            PairDef::Triplet | PairDef::TripletDistance => TRIPLETS,
        }
    }

    fn options(&self) -> &'static [&'static str] {
        match self {
            PairDef::Contrastive => &["reduction", "margin", "eps"],
            PairDef::Triplet => &["reduction", "margin", "p", "eps", "swap"],
            PairDef::CosineEmbedding => &["reduction", "margin"],
            PairDef::TripletDistance => &["reduction", "margin", "distance", "swap"],
        }
    }

    fn gpu_in(&self, s: &mut GpuSession<'_>, case: &Case) -> Result<Evaluated<f32>> {
        let p = self.problem(case)?;
        let (n, dim) = (p.rows.n, p.rows.dim);
        let rows: Vec<crate::Tensor> = p
            .rows
            .rows
            .iter()
            .map(|(name, x)| s.upload_as(name, x, &[n, dim], p.rows.dtype))
            .collect::<Result<_>>()?;
        let up = DeviceUpstream::upload(s, p.upstream.as_deref(), &[n], p.opts.reduction())?;
        let pairs = |y| ContrastiveInputs {
            x1: &rows[0],
            x2: &rows[1],
            y,
            upstream: up.get(),
        };
        let out = match p.opts {
            Opts::Contrastive(o) => {
                let y = s.upload("y", p.y(), &[n])?;
                s.run(&o, &pairs(&y))?
            }
            Opts::CosineEmbedding(o) => {
                let y = s.upload("y", p.y(), &[n])?;
                s.run(&o, &pairs(&y))?
            }
            Opts::Triplet(o) => s.run(
                &o,
                &TripletInputs {
                    anchor: &rows[0],
                    positive: &rows[1],
                    negative: &rows[2],
                    upstream: up.get(),
                },
            )?,
        };
        Ok(p.evaluated(out))
    }

    fn cpu(&self, case: &Case) -> Result<Evaluated<f32>> {
        let p = self.problem(case)?;
        let out = match p.rows.dtype {
            DType::F16 => p.cpu::<half::f16>()?,
            DType::BF16 => p.cpu::<half::bf16>()?,
            _ => p.cpu::<f32>()?,
        };
        Ok(p.evaluated(out))
    }

    fn reference(&self, case: &Case) -> Result<Evaluated<f64>> {
        let p = self.problem(case)?;
        let rows: Vec<Vec<f64>> = p.rows.rows.iter().map(|(_, x)| f64s(x)).collect();
        let up = p.upstream.as_deref().map_or(vec![1.0], f64s);
        let dim = p.rows.dim;
        let out = match p.opts {
            Opts::Contrastive(o) => {
                reference::contrastive(&o, &rows[0], &rows[1], &f64s(p.y()), dim, &up)
            }
            Opts::Triplet(o) => reference::triplet(&o, &rows[0], &rows[1], &rows[2], dim, &up),
            Opts::CosineEmbedding(o) => {
                reference::cosine_embedding(&o, &rows[0], &rows[1], &f64s(p.y()), dim, &up)
            }
        };
        Ok(Evaluated::from_reference(
            out,
            p.loss_shape(),
            &[p.rows.n, dim],
        ))
    }

    fn random_case(&self, rng: &mut Rng) -> Case {
        let (n, dim) = rng.metric_shape();
        let rows = |rng: &mut Rng| HostArray::f32(&[n, dim], rng.normals(n * dim, 0.6));
        let reductions = ["mean", "sum", "none"];
        let mut case = match self {
            PairDef::Contrastive => {
                let y = (0..n).map(|_| rng.below(2) as f32).collect();
                Case::default()
                    .with("x1", rows(rng))
                    .with("x2", rows(rng))
                    .with("y", HostArray::f32(&[n], y))
                    .set("margin", rng.range(0.0, 2.0 * (dim as f64).sqrt()) as f32)
            }
            PairDef::Triplet => Case::default()
                .with("anchor", rows(rng))
                .with("positive", rows(rng))
                .with("negative", rows(rng))
                .set("margin", rng.range(0.0, 1.5) as f32)
                .set("p", 1 + rng.below(2))
                .set("swap", rng.chance(0.5)),
            PairDef::TripletDistance => Case::default()
                .with("anchor", rows(rng))
                .with("positive", rows(rng))
                .with("negative", rows(rng))
                .set("margin", rng.range(0.0, 1.5) as f32)
                .set("distance", ["euclidean", "cosine"][rng.below(2)])
                .set("swap", rng.chance(0.5)),
            PairDef::CosineEmbedding => {
                let y = (0..n)
                    .map(|_| if rng.chance(0.5) { 1.0 } else { -1.0 })
                    .collect();
                Case::default()
                    .with("x1", rows(rng))
                    .with("x2", rows(rng))
                    .with("y", HostArray::f32(&[n], y))
                    .set("margin", rng.range(-0.5, 0.5) as f32)
            }
        };
        let reduction = reductions[rng.below(3)];
        case = case.set("reduction", reduction);
        if rng.chance(0.3) && matches!(self, PairDef::Contrastive | PairDef::Triplet) {
            case = case.set("eps", rng.range(0.0, 0.1) as f32);
        }
        if rng.chance(0.3) {
            case = case.with_random_upstream(rng, &[n], reduction == "none");
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
        for (n, d) in spec.pairs(&[&[16_384, 128]], &[&[65_536, 128]])? {
            self.bench_shape(engine, rng, (n, d), run)?;
        }
        Ok(())
    }
}

impl PairDef {
    /// One bench row: `n` rows of `d`.
    fn bench_shape(
        &self,
        engine: &Engine,
        rng: &mut Rng,
        (n, d): (usize, usize),
        run: &mut BenchRun<'_>,
    ) -> Result<()> {
        let count = self.inputs().iter().filter(|s| s.differentiable).count();
        let host: Vec<Vec<f32>> = (0..count).map(|_| rng.normals(n * d, 0.5)).collect();
        let rows: Vec<crate::Tensor> = host
            .iter()
            .map(|x| engine.upload(x, &[n, d]))
            .collect::<Result<_>>()?;
        let shape = vec![n, d];
        // The row kernel reads each row twice (distances, then gradients).
        let block = n * d * 4;
        match self {
            PairDef::Contrastive | PairDef::CosineEmbedding => {
                // Pairs with labels: 1 similar / 0 not, or ±1 for cosine embedding.
                let cosine = *self == PairDef::CosineEmbedding;
                let y: Vec<f32> = (0..n)
                    .map(|_| match (rng.chance(0.5), cosine) {
                        (true, _) => 1.0,
                        (false, true) => -1.0,
                        (false, false) => 0.0,
                    })
                    .collect();
                let yt = engine.upload(&y, &[n])?;
                let (contrastive, cosine_loss) = (Contrastive::new(), CosineEmbedding::new());
                let (mut plan, mut cosine_plan) =
                    (contrastive.plan(engine), cosine_loss.plan(engine));
                let inputs = ContrastiveInputs {
                    x1: &rows[0],
                    x2: &rows[1],
                    y: &yt,
                    upstream: Upstream::Ones,
                };
                let host = HostContrastiveInputs {
                    x1: &host[0],
                    x2: &host[1],
                    y: &y,
                    dim: d,
                    upstream: Upstream::Ones,
                };
                run(BenchJob {
                    label: self.name(),
                    shape,
                    bytes_min: 4 * block,
                    bytes_moved: 6 * block,
                    flops: None,
                    gpu: &mut |e| match cosine {
                        true => cosine_plan.record(e, &inputs).map(|_| ()),
                        false => plan.record(e, &inputs).map(|_| ()),
                    },
                    cpu: &mut || match cosine {
                        true => cpu::cosine_embedding(&cosine_loss, &host).map(|_| ()),
                        false => cpu::contrastive(&contrastive, &host).map(|_| ()),
                    },
                })
            }
            PairDef::Triplet | PairDef::TripletDistance => {
                let loss = match self {
                    PairDef::TripletDistance => Triplet::new().distance(Distance::Cosine),
                    _ => Triplet::new(),
                };
                let mut plan = loss.plan(engine);
                let inputs = TripletInputs {
                    anchor: &rows[0],
                    positive: &rows[1],
                    negative: &rows[2],
                    upstream: Upstream::Ones,
                };
                let host = HostTripletInputs {
                    anchor: &host[0],
                    positive: &host[1],
                    negative: &host[2],
                    dim: d,
                    upstream: Upstream::Ones,
                };
                run(BenchJob {
                    label: self.name(),
                    shape,
                    bytes_min: 6 * block,
                    bytes_moved: 9 * block,
                    flops: None,
                    gpu: &mut |e| plan.record(e, &inputs).map(|_| ()),
                    cpu: &mut || cpu::triplet(&loss, &host).map(|_| ()),
                })
            }
        }
    }
}
