//! `multi-margin`, `multilabel-soft-margin`, `multilabel-margin`, `distill-kl`, `jsd`, `coral`
//! and `corn` by name, on host arrays: the
//! command line's view.

use super::cpu::{class_rows as cpu_class_rows, HostClassRowsInputs, HostClassTargets};
use super::gpu::ClassRowsInputs;
use super::reference::{class_rows as reference_class_rows, RefClassTargets};
use super::{Args, ClassRows, ClassRowsKind};
use crate::core::{Arg, DType, Element, LossValues, Reduction, Upstream};
use crate::error::{Error, Result};
use crate::gpu::engine::Engine;
use crate::gpu::GpuLoss;
use crate::registry::random::Rng;
use crate::registry::{
    host_upstream, labels_i32, spec, BenchJob, BenchRun, BenchSpec, Case, DeviceUpstream,
    Evaluated, GpuSession, HostArray, InputSpec, LossDef, GRAD_OUTPUT,
};

/// The family's losses.
pub(crate) const LOSSES: &[&dyn LossDef] = &[
    &ClassRowsDef::MultiMargin,
    &ClassRowsDef::MultilabelSoftMargin,
    &ClassRowsDef::MultilabelMargin,
    &ClassRowsDef::DistillKl,
    &ClassRowsDef::Jsd,
    &ClassRowsDef::Coral,
    &ClassRowsDef::Corn,
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClassRowsDef {
    MultiMargin,
    MultilabelSoftMargin,
    MultilabelMargin,
    DistillKl,
    Jsd,
    Coral,
    Corn,
}

/// The targets of a host problem.
enum Targets {
    Classes(Vec<i32>),
    PerClass(Vec<f32>),
    ClassLists(Vec<i32>),
}

/// A checked host problem.
struct Problem {
    opts: ClassRows,
    /// The scores widened to f32, and their type.
    input: Vec<f32>,
    dtype: DType,
    n: usize,
    c: usize,
    target: Targets,
    weight: Option<Vec<f32>>,
    /// JSD's row labels.
    labels: Option<Vec<i32>>,
    upstream: Option<Vec<f32>>,
}

impl ClassRowsDef {
    fn problem(&self, case: &Case) -> Result<Problem> {
        case.check_names(self)?;
        let kind = match self {
            ClassRowsDef::MultiMargin => {
                let p: u32 = case.option("p", 1)?;
                ClassRowsKind::MultiMargin {
                    p,
                    margin: case.option("margin", 1.0)?,
                }
            }
            ClassRowsDef::MultilabelSoftMargin => ClassRowsKind::MultilabelSoftMargin,
            ClassRowsDef::MultilabelMargin => ClassRowsKind::MultilabelMargin,
            ClassRowsDef::DistillKl => ClassRowsKind::DistillKl {
                temperature: case.option("temperature", 1.0)?,
            },
            ClassRowsDef::Jsd => {
                let ignore: i64 = case.option("ignore_index", -100)?;
                ClassRowsKind::Jsd {
                    beta: case.option("beta", 0.5)?,
                    ignore_index: i32::try_from(ignore).map_err(|_| Error::Option {
                        option: "ignore_index",
                        value: ignore.to_string(),
                        reason: "must fit in i32",
                    })?,
                }
            }
            ClassRowsDef::Coral => ClassRowsKind::Coral,
            ClassRowsDef::Corn => ClassRowsKind::Corn,
        };
        let opts = ClassRows::new(kind)
            .reduction(case.option("reduction", Reduction::Mean)?)
            .grad_dtype(case.grad_dtype_option()?);
        opts.validate()?;
        let (input_name, target_name) = (kind.input_name(), kind.target_name());
        let (input, shape) = case.floats(input_name).unwrap_or_default();
        let dtype = case.float_dtype(input_name);
        let target = case.input(target_name).expect("checked: required");
        let weight = case.floats(kind.weight_name());
        let labels = case.input("labels").filter(|_| !kind.ordinal());
        let (scalar_upstream, per_item) = case.upstream_parts();
        let (n, c) = opts.check(&Args {
            input: Arg {
                shape: &shape,
                dtype,
            },
            target: Arg {
                shape: &target.shape,
                dtype: match opts.class_targets() || opts.class_lists() {
                    true => DType::I32,
                    false => target.data.dtype(),
                },
            },
            weight: weight.as_ref().map(|(_, s)| Arg::f32(s)),
            labels: labels.map(|l| Arg {
                shape: &l.shape,
                dtype: DType::I32,
            }),
            scalar_upstream,
            per_item_upstream: per_item.as_ref().map(|(_, s)| Arg::f32(s)),
        })?;
        let target = match (opts.class_targets(), opts.class_lists()) {
            (true, _) => Targets::Classes(labels_i32("target", target)?),
            (_, true) => Targets::ClassLists(labels_i32("target", target)?),
            _ => Targets::PerClass(case.floats(target_name).expect("checked: f32").0),
        };
        let upstream = per_item
            .map(|(g, _)| g)
            .or(scalar_upstream.map(|g| vec![g]));
        Ok(Problem {
            opts,
            input,
            dtype,
            n,
            c,
            target,
            weight: weight.map(|(w, _)| w),
            labels: labels.map(|l| labels_i32("labels", l)).transpose()?,
            upstream,
        })
    }
}

impl Problem {
    fn loss_shape(&self) -> Vec<usize> {
        match self.opts.reduction {
            Reduction::None => vec![self.n],
            _ => vec![],
        }
    }

    fn evaluated(&self, out: LossValues) -> Evaluated<f32> {
        Evaluated::from_values(out, self.loss_shape(), &[self.n, self.c])
    }

    fn host_targets(&self) -> HostClassTargets<'_> {
        match &self.target {
            Targets::Classes(y) => HostClassTargets::Classes(y),
            Targets::PerClass(t) => HostClassTargets::PerClass(t),
            Targets::ClassLists(t) => HostClassTargets::ClassLists(t),
        }
    }

    /// The CPU backend with the scores as `T` (16-bit inputs reach it as 16-bit values).
    fn cpu<T: Element>(&self) -> Result<LossValues> {
        let input: Vec<T> = self.input.iter().map(|&x| T::from_f32(x)).collect();
        cpu_class_rows(
            &self.opts,
            &HostClassRowsInputs {
                input: &input,
                shape: (self.n, self.c),
                target: self.host_targets(),
                weight: self.weight.as_deref(),
                labels: self.labels.as_deref(),
                upstream: host_upstream(self.upstream.as_deref(), self.n, self.opts.reduction),
            },
        )
    }
}

impl LossDef for ClassRowsDef {
    fn name(&self) -> &'static str {
        match self {
            ClassRowsDef::MultiMargin => "multi-margin",
            ClassRowsDef::MultilabelSoftMargin => "multilabel-soft-margin",
            ClassRowsDef::MultilabelMargin => "multilabel-margin",
            ClassRowsDef::DistillKl => "distill-kl",
            ClassRowsDef::Jsd => "jsd",
            ClassRowsDef::Coral => "coral",
            ClassRowsDef::Corn => "corn",
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
        const DISTILL: &[InputSpec] = &[
            spec("student", true, true),
            spec("teacher", false, true),
            GRAD_OUTPUT,
        ];
        const LISTS: &[InputSpec] = &[
            spec("input", true, true),
            spec("target", false, true),
            GRAD_OUTPUT,
        ];
        const JSD: &[InputSpec] = &[
            spec("input", true, true),
            spec("target", false, true),
            spec("labels", false, false),
            GRAD_OUTPUT,
        ];
        const CORAL: &[InputSpec] = &[
            spec("logits", true, true),
            spec("labels", false, true),
            spec("importance", false, false),
            GRAD_OUTPUT,
        ];
        const CORN: &[InputSpec] = &[
            spec("logits", true, true),
            spec("labels", false, true),
            GRAD_OUTPUT,
        ];
        match self {
            ClassRowsDef::DistillKl => DISTILL,
            ClassRowsDef::MultilabelMargin => LISTS,
            ClassRowsDef::Jsd => JSD,
            ClassRowsDef::Coral => CORAL,
            ClassRowsDef::Corn => CORN,
            _ => INPUTS,
        }
    }

    fn options(&self) -> &'static [&'static str] {
        match self {
            ClassRowsDef::MultiMargin => &["reduction", "p", "margin"],
            ClassRowsDef::MultilabelSoftMargin | ClassRowsDef::MultilabelMargin => &["reduction"],
            ClassRowsDef::DistillKl => &["reduction", "temperature"],
            ClassRowsDef::Jsd => &["reduction", "beta", "ignore_index"],
            ClassRowsDef::Coral | ClassRowsDef::Corn => &["reduction"],
        }
    }

    fn gpu_in(&self, s: &mut GpuSession<'_>, case: &Case) -> Result<Evaluated<f32>> {
        let p = self.problem(case)?;
        let (n, c) = (p.n, p.c);
        let (input_name, target_name) = (p.opts.kind.input_name(), p.opts.kind.target_name());
        let input = s.upload_as(input_name, &p.input, &[n, c], p.dtype)?;
        let target = match &p.target {
            Targets::Classes(y) => s.upload_i32(target_name, y, &[n])?,
            Targets::PerClass(t) => s.upload(target_name, t, &[n, c])?,
            Targets::ClassLists(t) => s.upload_i32(target_name, t, &[n, c])?,
        };
        let weight = p
            .weight
            .as_ref()
            .map(|w| s.upload(p.opts.kind.weight_name(), w, &[c]))
            .transpose()?;
        let labels = p
            .labels
            .as_ref()
            .map(|l| s.upload_i32("labels", l, &[n]))
            .transpose()?;
        let upstream = DeviceUpstream::upload(s, p.upstream.as_deref(), &[n], p.opts.reduction)?;
        let inputs = ClassRowsInputs {
            input: &input,
            target: &target,
            weight: weight.as_ref(),
            labels: labels.as_ref(),
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
        let classes: Vec<i64>;
        let per_class: Vec<f64>;
        let target = match &p.target {
            Targets::Classes(y) => {
                classes = y.iter().map(|&v| v as i64).collect();
                RefClassTargets::Classes(&classes)
            }
            Targets::ClassLists(t) => {
                classes = t.iter().map(|&v| v as i64).collect();
                RefClassTargets::ClassLists(&classes)
            }
            Targets::PerClass(t) => {
                per_class = to64(t);
                RefClassTargets::PerClass(&per_class)
            }
        };
        let weight = p.weight.as_deref().map(to64);
        let labels: Option<Vec<i64>> = p
            .labels
            .as_ref()
            .map(|l| l.iter().map(|&v| v as i64).collect());
        let upstream = p.upstream.as_deref().map_or(vec![1.0], to64);
        let out = reference_class_rows(
            &p.opts,
            &to64(&p.input),
            (p.n, p.c),
            target,
            weight.as_deref(),
            labels.as_deref(),
            &upstream,
        )?;
        Ok(Evaluated::from_reference(out, p.loss_shape(), &[p.n, p.c]))
    }

    fn random_case(&self, rng: &mut Rng) -> Case {
        let n = 1 + rng.below(48);
        let c = (rng.range(0.0, 9.0).exp2() as usize).max(1);
        let reduction = ["mean", "sum", "none"][rng.below(3)];
        match self {
            ClassRowsDef::Jsd => return jsd_case(rng, n, c, reduction),
            ClassRowsDef::Coral | ClassRowsDef::Corn => {
                // K = c + 1 ranks (K = 2: one logit); labels in 0..=c.
                let labels = (0..n).map(|_| rng.below(c + 1) as i64).collect();
                let mut case = Case::default()
                    .with("logits", HostArray::f32(&[n, c], rng.normals(n * c, 2.0)))
                    .with("labels", HostArray::i64(&[n], labels))
                    .set("reduction", reduction);
                if *self == ClassRowsDef::Coral && rng.chance(0.5) {
                    let w = (0..c).map(|_| rng.range(0.1, 2.0) as f32).collect();
                    case = case.with("importance", HostArray::f32(&[c], w));
                }
                if rng.chance(0.3) {
                    case = case.with_random_upstream(rng, &[n], reduction == "none");
                }
                return case;
            }
            _ => {}
        }
        if *self == ClassRowsDef::DistillKl {
            let scale = [1.0, 3.0, 10.0][rng.below(3)];
            let mut case = Case::default()
                .with(
                    "student",
                    HostArray::f32(&[n, c], rng.normals(n * c, scale)),
                )
                .with(
                    "teacher",
                    HostArray::f32(&[n, c], rng.normals(n * c, scale)),
                )
                .set("temperature", rng.range(0.5, 4.0) as f32);
            case = case.set("reduction", reduction);
            if rng.chance(0.3) {
                case = case.with_random_upstream(rng, &[n], reduction == "none");
            }
            return case;
        }
        let mut case =
            Case::default().with("input", HostArray::f32(&[n, c], rng.normals(n * c, 2.0)));
        case = match self {
            ClassRowsDef::MultiMargin => {
                let y = (0..n).map(|_| rng.below(c) as i64).collect();
                case.with("target", HostArray::i64(&[n], y))
                    .set("p", 1 + rng.below(2))
                    .set("margin", rng.range(0.0, 2.0) as f32)
            }
            ClassRowsDef::MultilabelMargin => {
                case.with("target", HostArray::i64(&[n, c], class_lists(rng, n, c)))
            }
            _ => {
                let t = (0..n * c).map(|_| rng.below(2) as f32).collect();
                case.with("target", HostArray::f32(&[n, c], t))
            }
        };
        case = case.set("reduction", reduction);
        if rng.chance(0.5) && *self != ClassRowsDef::MultilabelMargin {
            let w = (0..c).map(|_| rng.range(0.1, 2.0) as f32).collect();
            case = case.with("weight", HostArray::f32(&[c], w));
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
        // Ordinal losses: many rows of a few ranks' cumulative logits (K = 10).
        let shapes = match self {
            ClassRowsDef::Coral | ClassRowsDef::Corn => {
                spec.pairs(&[&[65536, 9]], &[&[262144, 9]])?
            }
            _ => spec.pairs(&[&[1024, 1000]], &[&[4096, 1000]])?,
        };
        for (n, c) in shapes {
            let x = rng.normals(n * c, 2.0);
            let input = engine.upload(&x, &[n, c])?;
            let (classes, labels): (Vec<i32>, Vec<f32>) = match self {
                ClassRowsDef::MultiMargin => {
                    ((0..n).map(|_| rng.below(c) as i32).collect(), Vec::new())
                }
                // Five labels per row, as in a tagging task.
                ClassRowsDef::MultilabelMargin => {
                    let lists = (0..n).flat_map(|_| {
                        let mut row: Vec<i32> = (0..5).map(|_| rng.below(c) as i32).collect();
                        row.resize(c, -1);
                        row
                    });
                    (lists.collect(), Vec::new())
                }
                ClassRowsDef::MultilabelSoftMargin => (
                    Vec::new(),
                    (0..n * c).map(|_| rng.below(2) as f32).collect(),
                ),
                ClassRowsDef::DistillKl | ClassRowsDef::Jsd => {
                    (Vec::new(), rng.normals(n * c, 2.0))
                }
                ClassRowsDef::Coral | ClassRowsDef::Corn => (
                    (0..n).map(|_| rng.below(c + 1) as i32).collect(),
                    Vec::new(),
                ),
            };
            let target = match self {
                ClassRowsDef::MultiMargin | ClassRowsDef::Coral | ClassRowsDef::Corn => {
                    engine.upload_i32(&classes, &[n])?
                }
                ClassRowsDef::MultilabelMargin => engine.upload_i32(&classes, &[n, c])?,
                _ => engine.upload(&labels, &[n, c])?,
            };
            let host_target = match self {
                ClassRowsDef::MultiMargin | ClassRowsDef::Coral | ClassRowsDef::Corn => {
                    HostClassTargets::Classes(&classes)
                }
                ClassRowsDef::MultilabelMargin => HostClassTargets::ClassLists(&classes),
                _ => HostClassTargets::PerClass(&labels),
            };
            let loss = match self {
                ClassRowsDef::MultiMargin => {
                    ClassRows::new(ClassRowsKind::MultiMargin { p: 1, margin: 1.0 })
                }
                ClassRowsDef::MultilabelSoftMargin => {
                    ClassRows::new(ClassRowsKind::MultilabelSoftMargin)
                }
                ClassRowsDef::MultilabelMargin => ClassRows::new(ClassRowsKind::MultilabelMargin),
                ClassRowsDef::DistillKl => {
                    ClassRows::new(ClassRowsKind::DistillKl { temperature: 2.0 })
                }
                ClassRowsDef::Jsd => ClassRows::new(ClassRowsKind::Jsd {
                    beta: 0.5,
                    ignore_index: -100,
                }),
                ClassRowsDef::Coral => ClassRows::new(ClassRowsKind::Coral),
                ClassRowsDef::Corn => ClassRows::new(ClassRowsKind::Corn),
            };
            let mut plan = loss.plan(engine);
            let inputs = ClassRowsInputs::new(&input, &target);
            let host = HostClassRowsInputs {
                input: &x[..],
                shape: (n, c),
                target: host_target,
                weight: None,
                labels: None,
                upstream: Upstream::Ones,
            };
            // Scores read twice (the row's sums, then the gradient) and the gradient written;
            // per-class targets read twice too (multilabel margin: its lists once, its
            // scratch counts written once and read at least once).
            let block = n * c * 4;
            let per_class = usize::from(!loss.class_targets());
            run(BenchJob {
                label: self.name(),
                shape: vec![n, c],
                bytes_min: (2 + per_class) * block,
                bytes_moved: (3 + 2 * per_class) * block,
                flops: None,
                gpu: &mut |e| plan.record(e, &inputs).map(|_| ()),
                cpu: &mut || cpu_class_rows(&loss, &host).map(|_| ()),
            })?;
        }
        Ok(())
    }
}

/// Multilabel margin's random targets: per row a list of 0..=C classes (repeats allowed),
/// then −1, then padding that must not be read (any value in [−1, C)).
fn class_lists(rng: &mut Rng, n: usize, c: usize) -> Vec<i64> {
    let mut t = Vec::with_capacity(n * c);
    for _ in 0..n {
        let len = match rng.below(4) {
            0 => 0,
            1 => c,
            _ => rng.below(c.min(6) + 1),
        };
        t.extend((0..len).map(|_| rng.below(c) as i64));
        if len < c {
            t.push(-1);
            t.extend((len + 1..c).map(|_| rng.below(c + 1) as i64 - 1));
        }
    }
    t
}

/// JSD's random case: student and teacher log-probabilities (log-softmax of random logits),
/// β of 0 (forward KL), 1 (reverse KL) or between, some rows ignored by their labels.
fn jsd_case(rng: &mut Rng, n: usize, c: usize, reduction: &str) -> Case {
    let log_probs = |rng: &mut Rng| {
        let mut x = rng.normals(n * c, 2.0);
        for row in x.chunks_mut(c) {
            let max = row.iter().copied().fold(f32::MIN, f32::max);
            let lse = max + row.iter().map(|v| (v - max).exp()).sum::<f32>().ln();
            row.iter_mut().for_each(|v| *v -= lse);
        }
        HostArray::f32(&[n, c], x)
    };
    let beta = match rng.below(4) {
        0 => 0.0,
        1 => 1.0,
        _ => rng.range(0.05, 0.95) as f32,
    };
    let mut case = Case::default()
        .with("input", log_probs(rng))
        .with("target", log_probs(rng))
        .set("beta", beta)
        .set("reduction", reduction);
    if rng.chance(0.5) {
        let ignore = [-100, 3][rng.below(2)];
        let labels = (0..n)
            .map(|_| {
                if rng.chance(0.3) {
                    ignore
                } else {
                    rng.below(c) as i64
                }
            })
            .collect();
        case = case
            .with("labels", HostArray::i64(&[n], labels))
            .set("ignore_index", ignore);
    }
    if rng.chance(0.3) {
        case = case.with_random_upstream(rng, &[n], reduction == "none");
    }
    case
}
