//! The metric-learning losses as the command line sees them (`eval`, `check`, `bench`):
//! host arrays parsed and checked once, then run on the GPU, the CPU backend or the f64
//! reference.

use crate::cpu;
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::losses::metric_options::{
    Contrastive, Distance, InfoNce, MinedTriplet, Mining, NceKind, Triplet,
};
use crate::losses::pair_rows::{ContrastiveInputs, TripletInputs};
use crate::losses::pairwise::NceInputs;
use crate::losses::{LossValues, Reduction};
use crate::random::Rng;
use crate::reference;
use crate::registry::{labels_i32, Case, DeviceUpstream, Evaluated, HostArray, InputSpec, LossDef};

/// One metric loss in the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MetricDef {
    Contrastive,
    Triplet,
    TripletMined,
    Nce(NceKind),
}

/// The registered metric losses.
pub(crate) static METRIC_DEFS: [MetricDef; 6] = [
    MetricDef::Contrastive,
    MetricDef::Triplet,
    MetricDef::TripletMined,
    MetricDef::Nce(NceKind::NtXent),
    MetricDef::Nce(NceKind::Clip),
    MetricDef::Nce(NceKind::SupCon),
];

const fn spec(name: &'static str, differentiable: bool, required: bool) -> InputSpec {
    InputSpec {
        name,
        differentiable,
        required,
    }
}

/// Options of one loss, parsed.
#[derive(Debug, Clone, Copy)]
enum Opts {
    Contrastive(Contrastive),
    Triplet(Triplet),
    Mined(MinedTriplet),
    Nce(InfoNce),
}

impl Opts {
    /// The reduction: contrastive and triplet take one; the batch losses are means.
    fn reduction(&self) -> Reduction {
        match self {
            Opts::Contrastive(o) => o.reduction,
            Opts::Triplet(o) => o.reduction,
            _ => Reduction::Mean,
        }
    }
}

/// A checked host problem.
struct Problem {
    opts: Opts,
    /// Differentiable inputs in declaration order.
    rows: Vec<(&'static str, Vec<f32>)>,
    n: usize,
    dim: usize,
    labels: Option<Vec<i32>>,
    y: Option<Vec<f32>>,
    upstream: Option<Vec<f32>>,
}

/// `reduction` for the losses that are always a mean: only `mean` is accepted.
fn mean_only(case: &Case) -> Result<()> {
    match case.options.get("reduction").map(String::as_str) {
        None | Some("mean") => Ok(()),
        Some(other) => Err(Error::Option {
            option: "reduction",
            value: other.into(),
            reason: "this loss is a mean over anchors, pairs or triplets: only mean",
        }),
    }
}

impl MetricDef {
    fn problem(&self, case: &Case) -> Result<Problem> {
        case.check_names(self)?;
        let opts = match self {
            MetricDef::Contrastive => Opts::Contrastive(Contrastive {
                reduction: case.option("reduction", Reduction::Mean)?,
                margin: case.option("margin", 1.0)?,
                eps: case.option("eps", crate::losses::metric_options::PAIRWISE_EPS)?,
                gradient: true,
            }),
            MetricDef::Triplet => {
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
                    eps: case.option("eps", crate::losses::metric_options::PAIRWISE_EPS)?,
                    swap: case.flag("swap", false)?,
                    gradient: true,
                })
            }
            MetricDef::TripletMined => {
                mean_only(case)?;
                Opts::Mined(MinedTriplet {
                    margin: case.option("margin", 0.2)?,
                    distance: case.option("distance", Distance::Euclidean)?,
                    mining: case.option("mining", Mining::BatchAll)?,
                    gradient: true,
                })
            }
            MetricDef::Nce(kind) => {
                mean_only(case)?;
                Opts::Nce(
                    InfoNce::new(*kind)
                        .temperature(case.option("temperature", kind.default_temperature())?),
                )
            }
        };
        match opts {
            Opts::Contrastive(o) => o.validate()?,
            Opts::Triplet(o) => o.validate()?,
            Opts::Mined(o) => o.validate()?,
            Opts::Nce(o) => o.validate()?,
        }
        let names: Vec<&'static str> = self
            .inputs()
            .iter()
            .filter(|s| s.differentiable)
            .map(|s| s.name)
            .collect();
        let mut rows = Vec::new();
        let mut shape = Vec::new();
        for &name in &names {
            let (x, s) = case.floats(name).expect("checked: required");
            if s.len() != 2 {
                return Err(Error::shape(name, "[N, D]".into(), &s));
            }
            if shape.is_empty() {
                shape = s.clone();
            } else if s != shape {
                return Err(Error::shape(
                    name,
                    format!("{shape:?} like {}", names[0]),
                    &s,
                ));
            }
            rows.push((name, x));
        }
        let (n, dim) = (shape[0], shape[1]);
        if n == 0 {
            return Err(Error::Empty(names[0]));
        }
        if dim == 0 {
            return Err(Error::shape(names[0], "[N, D] with D >= 1".into(), &shape));
        }
        if matches!(self, MetricDef::Nce(NceKind::NtXent)) && n % 2 != 0 {
            return Err(Error::shape(
                "z",
                "an even number of rows [2N, D] (two views)".into(),
                &shape,
            ));
        }
        let labels = match case.input("labels") {
            Some(a) if a.shape == [n] => Some(labels_i32("labels", a)?),
            Some(a) => {
                return Err(Error::shape(
                    "labels",
                    format!("[{n}] (one per row)"),
                    &a.shape,
                ))
            }
            None => None,
        };
        let y = match case.floats("y") {
            Some((y, s)) if s == [n] => {
                if let Some(row) = y.iter().position(|v| !(0.0..=1.0).contains(v)) {
                    return Err(Error::Value {
                        input: "y",
                        row,
                        value: y[row].to_string(),
                        reason: "contrastive labels must be in [0, 1] (1 = similar)".into(),
                    });
                }
                Some(y)
            }
            Some((_, s)) => return Err(Error::shape("y", format!("[{n}] (one per pair)"), &s)),
            None => None,
        };
        let per_row = opts.reduction() == Reduction::None;
        let upstream = match case.floats("grad_output") {
            Some((g, s)) if s.iter().product::<usize>() == 1 => Some(g),
            Some((g, s)) if s == [n] && per_row => Some(g),
            Some((_, s)) => {
                let expected = if per_row {
                    format!("a scalar, or [{n}] with reduction none")
                } else {
                    "a scalar".into()
                };
                return Err(Error::shape("grad_output", expected, &s));
            }
            None => None,
        };
        Ok(Problem {
            opts,
            rows,
            n,
            dim,
            labels,
            y,
            upstream,
        })
    }
}

impl Problem {
    fn loss_shape(&self) -> Vec<usize> {
        if self.opts.reduction() == Reduction::None {
            vec![self.n]
        } else {
            vec![]
        }
    }

    fn evaluated(&self, out: LossValues) -> Evaluated<f32> {
        Evaluated::from_values(out, self.loss_shape(), &[self.n, self.dim])
    }

    fn row(&self, i: usize) -> &[f32] {
        &self.rows[i].1
    }

    fn labels(&self) -> &[i32] {
        self.labels.as_deref().expect("checked: required")
    }

    fn upstream_scalar(&self) -> f32 {
        self.upstream.as_ref().map_or(1.0, |g| g[0])
    }
}

impl LossDef for MetricDef {
    fn name(&self) -> &'static str {
        match self {
            MetricDef::Contrastive => "contrastive",
            MetricDef::Triplet => "triplet",
            MetricDef::TripletMined => "triplet-mined",
            MetricDef::Nce(k) => k.name(),
        }
    }

    fn inputs(&self) -> &'static [InputSpec] {
        const UP: InputSpec = spec("grad_output", false, false);
        const PAIRS: &[InputSpec] = &[
            spec("x1", true, true),
            spec("x2", true, true),
            spec("y", false, true),
            UP,
        ];
        const TRIPLETS: &[InputSpec] = &[
            spec("anchor", true, true),
            spec("positive", true, true),
            spec("negative", true, true),
            UP,
        ];
        const LABELLED: &[InputSpec] = &[
            spec("embeddings", true, true),
            spec("labels", false, true),
            UP,
        ];
        const VIEWS: &[InputSpec] = &[spec("z", true, true), UP];
        const MODALITIES: &[InputSpec] = &[spec("a", true, true), spec("b", true, true), UP];
        match self {
            MetricDef::Contrastive => PAIRS,
            MetricDef::Triplet => TRIPLETS,
            MetricDef::TripletMined | MetricDef::Nce(NceKind::SupCon) => LABELLED,
            MetricDef::Nce(NceKind::NtXent) => VIEWS,
            MetricDef::Nce(NceKind::Clip) => MODALITIES,
        }
    }

    fn options(&self) -> &'static [&'static str] {
        match self {
            MetricDef::Contrastive => &["reduction", "margin", "eps"],
            MetricDef::Triplet => &["reduction", "margin", "p", "eps", "swap"],
            MetricDef::TripletMined => &["reduction", "margin", "distance", "mining"],
            MetricDef::Nce(_) => &["reduction", "temperature"],
        }
    }

    fn gpu(&self, engine: &Engine, case: &Case) -> Result<Evaluated<f32>> {
        let p = self.problem(case)?;
        let shape = [p.n, p.dim];
        let rows: Vec<crate::Tensor> = p
            .rows
            .iter()
            .map(|(_, x)| engine.upload(x, &shape))
            .collect::<Result<_>>()?;
        let labels = p
            .labels
            .as_ref()
            .map(|l| engine.upload_i32(l, &[p.n]))
            .transpose()?;
        let y = p.y.as_ref().map(|y| engine.upload(y, &[p.n])).transpose()?;
        let up = DeviceUpstream::upload(engine, p.upstream.as_deref(), &[p.n], p.opts.reduction())?;
        let out = match p.opts {
            Opts::Contrastive(o) => o.run(
                engine,
                &ContrastiveInputs {
                    x1: &rows[0],
                    x2: &rows[1],
                    y: y.as_ref().expect("checked: required"),
                    upstream: up.get(),
                },
            )?,
            Opts::Triplet(o) => o.run(
                engine,
                &TripletInputs {
                    anchor: &rows[0],
                    positive: &rows[1],
                    negative: &rows[2],
                    upstream: up.get(),
                },
            )?,
            Opts::Mined(o) => o.run(
                engine,
                &rows[0],
                labels.as_ref().expect("checked: required"),
                up.get(),
            )?,
            Opts::Nce(o) => {
                let inputs = match o.kind {
                    NceKind::NtXent => NceInputs::NtXent { z: &rows[0] },
                    NceKind::Clip => NceInputs::Clip {
                        a: &rows[0],
                        b: &rows[1],
                    },
                    NceKind::SupCon => NceInputs::SupCon {
                        embeddings: &rows[0],
                        labels: labels.as_ref().expect("checked: required"),
                    },
                };
                o.run(engine, &inputs, up.get())?
            }
        };
        Ok(p.evaluated(out))
    }

    fn cpu(&self, case: &Case) -> Result<Evaluated<f32>> {
        let p = self.problem(case)?;
        let up = p.upstream.as_deref().unwrap_or(&[]);
        let out = match p.opts {
            Opts::Contrastive(o) => cpu::pair_rows::contrastive(
                &o,
                (
                    p.row(0),
                    p.row(1),
                    p.y.as_deref().expect("checked: required"),
                ),
                p.dim,
                up,
            )?,
            Opts::Triplet(o) => {
                cpu::pair_rows::triplet(&o, (p.row(0), p.row(1), p.row(2)), p.dim, up)?
            }
            Opts::Mined(o) => {
                cpu::pairwise::mined_triplet(&o, p.row(0), p.labels(), p.dim, p.upstream_scalar())?
            }
            Opts::Nce(o) => {
                let inputs: Vec<&[f32]> = p.rows.iter().map(|(_, x)| x.as_slice()).collect();
                cpu::pairwise::info_nce(
                    &o,
                    &inputs,
                    p.labels.as_deref(),
                    p.dim,
                    p.upstream_scalar(),
                )?
            }
        };
        Ok(p.evaluated(out))
    }

    fn reference(&self, case: &Case) -> Result<Evaluated<f64>> {
        let p = self.problem(case)?;
        let f64s = |v: &[f32]| v.iter().map(|&x| x as f64).collect::<Vec<f64>>();
        let rows: Vec<Vec<f64>> = p.rows.iter().map(|(_, x)| f64s(x)).collect();
        let up = p.upstream.as_deref().map_or(vec![1.0], f64s);
        let labels: Option<Vec<i64>> = p
            .labels
            .as_ref()
            .map(|l| l.iter().map(|&v| v as i64).collect());
        let out = match p.opts {
            Opts::Contrastive(o) => {
                let y = f64s(p.y.as_deref().expect("checked: required"));
                reference::pair_rows::contrastive(&o, &rows[0], &rows[1], &y, p.dim, &up)
            }
            Opts::Triplet(o) => {
                reference::pair_rows::triplet(&o, &rows[0], &rows[1], &rows[2], p.dim, &up)
            }
            Opts::Mined(o) => reference::mined_triplet::mined_triplet(
                &o,
                &rows[0],
                labels.as_deref().expect("checked: required"),
                p.dim,
                up[0],
            ),
            Opts::Nce(o) => {
                let inputs: Vec<&[f64]> = rows.iter().map(Vec::as_slice).collect();
                reference::info_nce::info_nce_loss(&o, &inputs, labels.as_deref(), p.dim, up[0])
            }
        };
        Ok(Evaluated::from_reference(
            out,
            p.loss_shape(),
            &[p.n, p.dim],
        ))
    }

    fn random_case(&self, rng: &mut Rng) -> Case {
        // Sizes: mostly small (finite differences use cases of ≤ 120 elements), sometimes
        // past one tile of 32 rows and one depth chunk of 32.
        let big = rng.chance(0.4);
        let n = if big {
            20 + rng.below(120)
        } else {
            1 + rng.below(12)
        };
        let dim = if big {
            1 + rng.below(70)
        } else {
            1 + rng.below(8)
        };
        let rows = |rng: &mut Rng, n: usize| HostArray::f32(&[n, dim], rng.normals(n * dim, 0.6));
        let mut case = Case::default();
        let reductions = ["mean", "sum", "none"];
        match self {
            MetricDef::Contrastive => {
                let y = (0..n).map(|_| rng.below(2) as f32).collect();
                case = case
                    .with("x1", rows(rng, n))
                    .with("x2", rows(rng, n))
                    .with("y", HostArray::f32(&[n], y))
                    .set("margin", rng.range(0.0, 2.0 * (dim as f64).sqrt()) as f32)
                    .set("reduction", reductions[rng.below(3)]);
                if rng.chance(0.3) {
                    case = case.set("eps", rng.range(0.0, 0.1) as f32);
                }
            }
            MetricDef::Triplet => {
                case = case
                    .with("anchor", rows(rng, n))
                    .with("positive", rows(rng, n))
                    .with("negative", rows(rng, n))
                    .set("margin", rng.range(0.0, 1.5) as f32)
                    .set("p", 1 + rng.below(2))
                    .set("swap", rng.chance(0.5))
                    .set("reduction", reductions[rng.below(3)]);
                if rng.chance(0.3) {
                    case = case.set("eps", rng.range(0.0, 0.1) as f32);
                }
            }
            MetricDef::TripletMined => {
                let mining = ["batch-all", "batch-hard", "semi-hard"][rng.below(3)];
                let n = if mining == "batch-all" { n.min(48) } else { n };
                case = case
                    .with("embeddings", rows(rng, n.max(2)))
                    .with("labels", random_labels(rng, n.max(2)))
                    .set("mining", mining)
                    .set("distance", ["euclidean", "squared", "cosine"][rng.below(3)])
                    .set("margin", rng.range(0.0, 1.0) as f32);
            }
            MetricDef::Nce(kind) => {
                case = case.set("temperature", rng.range(0.05, 1.0) as f32);
                case = match kind {
                    NceKind::NtXent => case.with("z", rows(rng, 2 * n.div_ceil(2))),
                    NceKind::Clip => case.with("a", rows(rng, n)).with("b", rows(rng, n)),
                    NceKind::SupCon => case
                        .with("embeddings", rows(rng, n))
                        .with("labels", random_labels(rng, n)),
                };
            }
        }
        if rng.chance(0.3) {
            let none = case.options.get("reduction").is_some_and(|r| r == "none");
            let rows = case.inputs.values().next().map_or(1, |a| a.shape[0]);
            case = if none {
                case.with(
                    "grad_output",
                    HostArray::f32(&[rows], rng.normals(rows, 1.0)),
                )
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

/// Labels in the patterns that matter: a few classes, all one class, all distinct, and
/// classes of one element.
fn random_labels(rng: &mut Rng, n: usize) -> HostArray {
    let l: Vec<i64> = match rng.below(5) {
        0 => vec![7; n],
        1 => (0..n as i64).map(|i| 3 * i - 5).collect(),
        2 => (0..n)
            .map(|i| {
                if i % 4 == 0 {
                    100 + i as i64
                } else {
                    (i % 3) as i64
                }
            })
            .collect(),
        _ => {
            let classes = 1 + rng.below(n.div_ceil(2).max(1));
            (0..n).map(|_| rng.below(classes) as i64).collect()
        }
    };
    HostArray::i64(&[n], l)
}
