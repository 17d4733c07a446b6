//! `ctc` by name, on host arrays: the command line's view.

use super::cpu::{ctc as cpu_ctc, HostCtcInputs};
use super::gpu::CtcInputs;
use super::reference::{ctc as reference_ctc, RefCtcInputs};
use super::{Ctc, CtcInput};
use crate::core::{check_upstream, Arg, DType, Element, LossValues, Reduction, Upstream};
use crate::error::{Error, Result};
use crate::gpu::engine::Engine;
use crate::gpu::GpuLoss;
use crate::registry::random::Rng;
use crate::registry::{
    host_upstream, labels_i32, spec, BenchJob, BenchRun, BenchSpec, Case, DeviceUpstream,
    Evaluated, GpuSession, HostArray, InputSpec, LossDef, GRAD_OUTPUT,
};

/// The family's losses.
pub(crate) const LOSSES: &[&dyn LossDef] = &[&CtcDef];

/// `ctc` for the command line (see [`crate::registry`]).
pub(crate) struct CtcDef;

/// A host problem (its shapes are checked by the backends, as the library's callers').
struct Problem {
    opts: Ctc,
    /// The scores widened to f32, their shape (T, N, C) and type.
    logits: Vec<f32>,
    shape: Vec<usize>,
    dtype: DType,
    targets: Vec<i32>,
    targets_shape: Vec<usize>,
    input_lengths: Vec<i32>,
    target_lengths: Vec<i32>,
    upstream: Option<Vec<f32>>,
}

impl Problem {
    fn from_case(case: &Case) -> Result<Self> {
        case.check_names(&CtcDef)?;
        let blank: i64 = case.option("blank", 0)?;
        let opts = Ctc::new()
            .blank(u32::try_from(blank).map_err(|_| Error::Option {
                option: "blank",
                value: blank.to_string(),
                reason: "must be a class: 0 or more",
            })?)
            .reduction(case.option("reduction", Reduction::Mean)?)
            .zero_infinity(case.flag("zero_infinity", false)?)
            .input(case.option("input", CtcInput::Logits)?)
            .grad_dtype(case.grad_dtype_option()?);
        opts.validate()?;
        let (logits, shape) = case.floats("logits").unwrap_or_default();
        let ints = |name: &'static str| -> Result<(Vec<i32>, Vec<usize>)> {
            let a = case.input(name).expect("checked: required");
            Ok((labels_i32(name, a)?, a.shape.clone()))
        };
        let (targets, targets_shape) = ints("targets")?;
        let (input_lengths, il_shape) = ints("input_lengths")?;
        let (target_lengths, tl_shape) = ints("target_lengths")?;
        for (name, s) in [("input_lengths", il_shape), ("target_lengths", tl_shape)] {
            if s.len() != 1 {
                return Err(Error::shape(name, "[N]".into(), &s));
            }
        }
        let (scalar_upstream, per_item) = case.upstream_parts();
        check_upstream(
            scalar_upstream,
            per_item.as_ref().map(|(_, s)| Arg::f32(s)),
            &[input_lengths.len()],
            opts.reduction,
        )?;
        Ok(Self {
            opts,
            logits,
            dtype: case.float_dtype("logits"),
            shape,
            targets,
            targets_shape,
            input_lengths,
            target_lengths,
            upstream: per_item
                .map(|(g, _)| g)
                .or(scalar_upstream.map(|g| vec![g])),
        })
    }

    /// (T, N, C), or zeros for a shape the backends will reject.
    fn dims(&self) -> (usize, usize, usize) {
        match self.shape[..] {
            [t, n, c] => (t, n, c),
            _ => (0, 0, 0),
        }
    }

    fn evaluated(&self, out: LossValues) -> Evaluated<f32> {
        Evaluated::from_values(out, self.loss_shape(), &self.shape)
    }

    fn loss_shape(&self) -> Vec<usize> {
        match self.opts.reduction {
            Reduction::None => vec![self.dims().1],
            _ => vec![],
        }
    }

    fn cpu<T: Element>(&self) -> Result<LossValues> {
        let logits: Vec<T> = self.logits.iter().map(|&x| T::from_f32(x)).collect();
        let (t, n, c) = self.dims();
        let flat_shape = [self.logits.len(), 1, 1];
        cpu_ctc(
            &self.opts,
            &HostCtcInputs {
                logits: &logits,
                shape: if self.shape.len() == 3 {
                    (t, n, c)
                } else {
                    (flat_shape[0], 1, 1)
                },
                targets: &self.targets,
                padded: match self.targets_shape[..] {
                    [_, s] => Some(s),
                    _ => None,
                },
                input_lengths: &self.input_lengths,
                target_lengths: &self.target_lengths,
                upstream: host_upstream(self.upstream.as_deref(), n, self.opts.reduction),
            },
        )
    }
}

impl LossDef for CtcDef {
    fn name(&self) -> &'static str {
        "ctc"
    }

    fn half_precision(&self) -> bool {
        true
    }

    fn inputs(&self) -> &'static [InputSpec] {
        const INPUTS: &[InputSpec] = &[
            spec("logits", true, true),
            spec("targets", false, true),
            spec("input_lengths", false, true),
            spec("target_lengths", false, true),
            GRAD_OUTPUT,
        ];
        INPUTS
    }

    fn options(&self) -> &'static [&'static str] {
        &["reduction", "blank", "zero_infinity", "input"]
    }

    fn gpu_in(&self, s: &mut GpuSession<'_>, case: &Case) -> Result<Evaluated<f32>> {
        let p = Problem::from_case(case)?;
        let logits = s.upload_as("logits", &p.logits, &p.shape, p.dtype)?;
        let targets = s.upload_i32("targets", &p.targets, &p.targets_shape)?;
        let n = p.input_lengths.len();
        let upstream = DeviceUpstream::upload(s, p.upstream.as_deref(), &[n], p.opts.reduction)?;
        let inputs = CtcInputs {
            logits: &logits,
            targets: &targets,
            input_lengths: &p.input_lengths,
            target_lengths: &p.target_lengths,
            upstream: upstream.get(),
        };
        let out = s.run(&p.opts, &inputs)?;
        Ok(p.evaluated(out))
    }

    fn cpu(&self, case: &Case) -> Result<Evaluated<f32>> {
        let p = Problem::from_case(case)?;
        let out = match p.dtype {
            DType::F16 => p.cpu::<half::f16>()?,
            DType::BF16 => p.cpu::<half::bf16>()?,
            _ => p.cpu::<f32>()?,
        };
        Ok(p.evaluated(out))
    }

    fn reference(&self, case: &Case) -> Result<Evaluated<f64>> {
        let p = Problem::from_case(case)?;
        let scores: Vec<f64> = p.logits.iter().map(|&x| x as f64).collect();
        let upstream: Vec<f64> = p
            .upstream
            .as_deref()
            .map_or(vec![1.0], |u| u.iter().map(|&g| g as f64).collect());
        let out = reference_ctc(
            &p.opts,
            RefCtcInputs {
                scores: &scores,
                shape: if p.shape.len() == 3 {
                    p.dims()
                } else {
                    (p.logits.len(), 1, 1)
                },
                targets: (&p.targets, &p.targets_shape),
                input_lengths: &p.input_lengths,
                target_lengths: &p.target_lengths,
                upstream: &upstream,
            },
        )?;
        Ok(Evaluated::from_reference(out, p.loss_shape(), &p.shape))
    }

    fn random_case(&self, rng: &mut Rng) -> Case {
        let (t, n, c) = (1 + rng.below(40), 1 + rng.below(6), 2 + rng.below(12));
        let blank = if rng.chance(0.7) { 0 } else { rng.below(c) };
        let log_probs = rng.chance(0.3);
        let mut x = rng.normals(t * n * c, 2.0);
        if log_probs {
            for row in x.chunks_mut(c) {
                let max = row.iter().copied().fold(f32::MIN, f32::max);
                let lse = max + row.iter().map(|v| (v - max).exp()).sum::<f32>().ln();
                row.iter_mut().for_each(|v| *v -= lse);
            }
        }
        // Frames mostly near T; targets of up to T labels (some then impossible), with
        // repeats (a class drawn from few) that need a blank between them.
        let s_max = 1 + rng.below(t.min(12));
        let input_lengths: Vec<i64> = (0..n)
            .map(|_| match rng.below(4) {
                0 => rng.below(t + 1) as i64,
                _ => t as i64,
            })
            .collect();
        let target_lengths: Vec<i64> = (0..n).map(|_| rng.below(s_max + 1) as i64).collect();
        let few = 1 + rng.below(c - 1);
        let label = |rng: &mut Rng| {
            let k = rng.below(few.min(c - 1));
            (if k >= blank { k + 1 } else { k }) as i64
        };
        let padded = rng.chance(0.5);
        let targets = match padded {
            true => {
                let mut v = Vec::with_capacity(n * s_max);
                for &len in &target_lengths {
                    for j in 0..s_max {
                        // Padding past the length is never read: any value.
                        v.push(if (j as i64) < len { label(rng) } else { -7 });
                    }
                }
                HostArray::i64(&[n, s_max], v)
            }
            false => {
                let total = target_lengths.iter().sum::<i64>() as usize;
                HostArray::i64(&[total], (0..total).map(|_| label(rng)).collect())
            }
        };
        let reduction = ["mean", "sum", "none"][rng.below(3)];
        let mut case = Case::default()
            .with("logits", HostArray::f32(&[t, n, c], x))
            .with("targets", targets)
            .with("input_lengths", HostArray::i64(&[n], input_lengths))
            .with("target_lengths", HostArray::i64(&[n], target_lengths))
            .set("blank", blank)
            .set("reduction", reduction)
            .set("zero_infinity", rng.chance(0.5));
        if log_probs {
            case = case.set("input", "log_probs");
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
        // warp-ctc's published case (T=150, N=128, S=40, C=29), and a long one with a large
        // vocabulary (T=500, N=32, S=100, C=5000).
        let cases = spec.shapes(
            &[&[150, 128, 40, 29]],
            &[&[150, 128, 40, 29], &[500, 32, 100, 5000]],
        );
        for shape in cases {
            let &[t, n, s, c] = &shape[..] else {
                return Err(Error::Shape {
                    input: "--shape",
                    expected: "TxNxSxC".into(),
                    got: shape,
                });
            };
            let x = rng.normals(t * n * c, 1.0);
            let targets: Vec<i32> = (0..n * s).map(|_| 1 + rng.below(c - 1) as i32).collect();
            let input_lengths = vec![t as i32; n];
            let target_lengths = vec![s as i32; n];
            let loss = Ctc::new();
            let logits = engine.upload(&x, &[t, n, c])?;
            let device_targets = engine.upload_i32(&targets, &[n, s])?;
            let mut plan = loss.plan(engine);
            let inputs = CtcInputs::new(&logits, &device_targets, &input_lengths, &target_lengths);
            let host = HostCtcInputs {
                logits: &x[..],
                shape: (t, n, c),
                targets: &targets,
                padded: Some(s),
                input_lengths: &input_lengths,
                target_lengths: &target_lengths,
                upstream: Upstream::Ones,
            };
            // The scores read twice and the gradient written; the recursions' three
            // [N, T, 2S + 1] arrays written and read.
            let scores = t * n * c * 4;
            let work = 3 * n * t * (2 * s + 1) * 4;
            run(BenchJob {
                label: self.name(),
                shape: vec![t, n, s, c],
                bytes_min: 3 * scores,
                bytes_moved: 3 * scores + 3 * work,
                flops: None,
                gpu: &mut |e| plan.record(e, &inputs).map(|_| ()),
                cpu: &mut || cpu_ctc(&loss, &host).map(|_| ()),
            })?;
        }
        Ok(())
    }
}
