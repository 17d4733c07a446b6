//! `ranknet`, `pairwise-hinge`, `listnet`, `listmle` and `lambda-ndcg` by name, on host
//! arrays: the command line's view.

use super::cpu::{ranking as cpu_ranking, HostRankingInputs};
use super::gpu::RankingInputs;
use super::reference::{ranking as reference_ranking, RefRankingInputs};
use super::{Args, Ranking, RankingKind};
use crate::core::{Arg, DType, Element, LossValues, Reduction, Upstream};
use crate::error::Result;
use crate::gpu::engine::Engine;
use crate::gpu::GpuLoss;
use crate::registry::random::Rng;
use crate::registry::{
    host_upstream, labels_i32, spec, BenchJob, BenchRun, BenchSpec, Case, DeviceUpstream,
    Evaluated, GpuSession, HostArray, InputSpec, LossDef, GRAD_OUTPUT,
};

/// The family's losses.
pub(crate) const LOSSES: &[&dyn LossDef] = &[
    &RankingDef::RankNet,
    &RankingDef::PairwiseHinge,
    &RankingDef::ListNet,
    &RankingDef::ListMle,
    &RankingDef::LambdaNdcg,
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RankingDef {
    RankNet,
    PairwiseHinge,
    ListNet,
    ListMle,
    LambdaNdcg,
}

/// A checked host problem.
struct Problem {
    opts: Ranking,
    /// The scores widened to f32, and their type.
    scores: Vec<f32>,
    dtype: DType,
    q: usize,
    l: usize,
    relevance: Vec<f32>,
    lengths: Option<Vec<i32>>,
    upstream: Option<Vec<f32>>,
}

impl RankingDef {
    fn problem(&self, case: &Case) -> Result<Problem> {
        case.check_names(self)?;
        let kind = match self {
            RankingDef::RankNet => RankingKind::RankNet,
            RankingDef::PairwiseHinge => RankingKind::PairwiseHinge {
                margin: case.option("margin", 1.0)?,
            },
            RankingDef::ListNet => RankingKind::ListNet,
            RankingDef::ListMle => RankingKind::ListMle,
            RankingDef::LambdaNdcg => RankingKind::LambdaNdcg,
        };
        let k: Option<u32> = match case.options.get("k") {
            Some(_) => Some(case.option("k", 0u32)?),
            None => None,
        };
        let opts = Ranking::new(kind)
            .reduction(case.option("reduction", Reduction::Mean)?)
            .k(k)
            .ndcg(case.flag("ndcg", false)?)
            .grad_dtype(case.grad_dtype_option()?);
        opts.validate()?;
        let (scores, shape) = case.floats("scores").unwrap_or_default();
        let dtype = case.float_dtype("scores");
        let (relevance, relevance_shape) = case.floats("relevance").expect("checked: required");
        let lengths = case.input("lengths");
        let (scalar_upstream, per_item) = case.upstream_parts();
        let (q, l) = opts.check(&Args {
            scores: Arg {
                shape: &shape,
                dtype,
            },
            relevance: Arg::f32(&relevance_shape),
            lengths: lengths.map(|a| Arg {
                shape: &a.shape,
                dtype: DType::I32,
            }),
            scalar_upstream,
            per_item_upstream: per_item.as_ref().map(|(_, s)| Arg::f32(s)),
        })?;
        Ok(Problem {
            opts,
            scores,
            dtype,
            q,
            l,
            relevance,
            lengths: lengths.map(|a| labels_i32("lengths", a)).transpose()?,
            upstream: per_item
                .map(|(g, _)| g)
                .or(scalar_upstream.map(|g| vec![g])),
        })
    }
}

impl Problem {
    fn loss_shape(&self) -> Vec<usize> {
        match self.opts.reduction {
            Reduction::None => vec![self.q],
            _ => vec![],
        }
    }

    fn evaluated(&self, out: LossValues) -> Evaluated<f32> {
        Evaluated::from_values(out, self.loss_shape(), &[self.q, self.l])
    }

    fn cpu<T: Element>(&self) -> Result<LossValues> {
        let scores: Vec<T> = self.scores.iter().map(|&x| T::from_f32(x)).collect();
        cpu_ranking(
            &self.opts,
            &HostRankingInputs {
                scores: &scores,
                relevance: &self.relevance,
                shape: (self.q, self.l),
                lengths: self.lengths.as_deref(),
                upstream: host_upstream(self.upstream.as_deref(), self.q, self.opts.reduction),
            },
        )
    }
}

impl LossDef for RankingDef {
    fn name(&self) -> &'static str {
        match self {
            RankingDef::RankNet => "ranknet",
            RankingDef::PairwiseHinge => "pairwise-hinge",
            RankingDef::ListNet => "listnet",
            RankingDef::ListMle => "listmle",
            RankingDef::LambdaNdcg => "lambda-ndcg",
        }
    }

    fn half_precision(&self) -> bool {
        true
    }

    fn inputs(&self) -> &'static [InputSpec] {
        const INPUTS: &[InputSpec] = &[
            spec("scores", true, true),
            spec("relevance", false, true),
            spec("lengths", false, false),
            GRAD_OUTPUT,
        ];
        INPUTS
    }

    fn options(&self) -> &'static [&'static str] {
        match self {
            RankingDef::PairwiseHinge => &["reduction", "k", "ndcg", "margin"],
            _ => &["reduction", "k", "ndcg"],
        }
    }

    fn gpu_in(&self, s: &mut GpuSession<'_>, case: &Case) -> Result<Evaluated<f32>> {
        let p = self.problem(case)?;
        let (q, l) = (p.q, p.l);
        let scores = s.upload_as("scores", &p.scores, &[q, l], p.dtype)?;
        let relevance = s.upload("relevance", &p.relevance, &[q, l])?;
        let lengths = p
            .lengths
            .as_ref()
            .map(|v| s.upload_i32("lengths", v, &[q]))
            .transpose()?;
        let upstream = DeviceUpstream::upload(s, p.upstream.as_deref(), &[q], p.opts.reduction)?;
        let inputs = RankingInputs {
            scores: &scores,
            relevance: &relevance,
            lengths: lengths.as_ref(),
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
        let to64 = |v: &[f32]| v.iter().map(|&x| x as f64).collect::<Vec<f64>>();
        let lengths: Option<Vec<i64>> = p
            .lengths
            .as_ref()
            .map(|v| v.iter().map(|&n| n as i64).collect());
        let upstream = p.upstream.as_deref().map_or(vec![1.0], to64);
        let (out, ndcg) = reference_ranking(
            &p.opts,
            RefRankingInputs {
                scores: &to64(&p.scores),
                relevance: &to64(&p.relevance),
                shape: (p.q, p.l),
                lengths: lengths.as_deref(),
                upstream: &upstream,
            },
        )?;
        let mut e = Evaluated::from_reference(out, p.loss_shape(), &[p.q, p.l]);
        if p.opts.ndcg {
            e.rows.push(("ndcg", ndcg));
        }
        Ok(e)
    }

    fn random_case(&self, rng: &mut Rng) -> Case {
        let (q, l) = (1 + rng.below(12), 1 + rng.below(24));
        // Grades 0..4 (ties within a list are common), scores with some exact ties.
        let relevance = (0..q * l).map(|_| rng.below(5) as f32).collect();
        let mut scores = rng.normals(q * l, 1.5);
        for i in 1..scores.len() {
            if rng.chance(0.05) {
                scores[i] = scores[i - 1];
            }
        }
        let reduction = ["mean", "sum", "none"][rng.below(3)];
        let mut case = Case::default()
            .with("scores", HostArray::f32(&[q, l], scores))
            .with("relevance", HostArray::f32(&[q, l], relevance))
            .set("reduction", reduction)
            .set("ndcg", rng.chance(0.5));
        if rng.chance(0.5) {
            let lengths = (0..q).map(|_| rng.below(l + 1) as i64).collect();
            case = case.with("lengths", HostArray::i64(&[q], lengths));
        }
        if rng.chance(0.5) {
            case = case.set("k", 1 + rng.below(l));
        }
        if *self == RankingDef::PairwiseHinge {
            case = case.set("margin", rng.range(0.0, 2.0) as f32);
        }
        if rng.chance(0.3) {
            case = case.with_random_upstream(rng, &[q], reduction == "none");
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
        // Web30K-like lists: many queries of up to a few hundred documents.
        for (q, l) in spec.pairs(&[&[256, 128]], &[&[1024, 256]])? {
            let scores = rng.normals(q * l, 1.0);
            let relevance: Vec<f32> = (0..q * l).map(|_| rng.below(5) as f32).collect();
            let loss = Ranking::new(match self {
                RankingDef::RankNet => RankingKind::RankNet,
                RankingDef::PairwiseHinge => RankingKind::PairwiseHinge { margin: 1.0 },
                RankingDef::ListNet => RankingKind::ListNet,
                RankingDef::ListMle => RankingKind::ListMle,
                RankingDef::LambdaNdcg => RankingKind::LambdaNdcg,
            });
            let device_scores = engine.upload(&scores, &[q, l])?;
            let device_relevance = engine.upload(&relevance, &[q, l])?;
            let mut plan = loss.plan(engine);
            let inputs = RankingInputs::new(&device_scores, &device_relevance);
            let host = HostRankingInputs {
                scores: &scores[..],
                relevance: &relevance,
                shape: (q, l),
                lengths: None,
                upstream: Upstream::Ones,
            };
            // Scores and relevance read, the gradient written; pairs read them L times more.
            let block = q * l * 4;
            let pairwise = !matches!(self, RankingDef::ListNet | RankingDef::ListMle);
            run(BenchJob {
                label: self.name(),
                shape: vec![q, l],
                bytes_min: 3 * block,
                bytes_moved: if pairwise {
                    (2 * l + 1) * block
                } else {
                    6 * block
                },
                flops: None,
                gpu: &mut |e| plan.record(e, &inputs).map(|_| ()),
                cpu: &mut || cpu_ranking(&loss, &host).map(|_| ()),
            })?;
        }
        Ok(())
    }
}
