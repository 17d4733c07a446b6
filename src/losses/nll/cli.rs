//! `nll` by name, on host arrays: the command line's view.

use super::cpu::{nll as cpu_nll, HostNllInputs};
use super::gpu::NllInputs;
use super::{check, reference, Args, Nll};
use crate::core::{Arg, DType, Element, LossValues, Reduction, Upstream};
use crate::error::{Error, Result};
use crate::gpu::engine::Engine;
use crate::gpu::GpuLoss;
use crate::losses::cross_entropy::cli::random_classes;
use crate::registry::random::Rng;
use crate::registry::{
    host_upstream, labels_i32, spec, BenchJob, BenchRun, BenchSpec, Case, DeviceUpstream,
    Evaluated, GpuSession, HostArray, InputSpec, LossDef, GRAD_OUTPUT,
};

/// The family's losses.
pub(crate) const LOSSES: &[&dyn LossDef] = &[&NllDef];

/// `nll` for the command line (see [`crate::registry`]).
pub(crate) struct NllDef;

/// A checked host problem.
struct Problem {
    opts: Nll,
    /// The input widened to f32, and its type.
    input: Vec<f32>,
    dtype: DType,
    n: usize,
    c: usize,
    target: Vec<i32>,
    weight: Option<Vec<f32>>,
    upstream: Option<Vec<f32>>,
}

impl Problem {
    fn from_case(case: &Case) -> Result<Self> {
        case.check_names(&NllDef)?;
        let ignore: i64 = case.option("ignore_index", -100)?;
        let opts = Nll::new()
            .reduction(case.option("reduction", Reduction::Mean)?)
            .ignore_index(i32::try_from(ignore).map_err(|_| Error::Option {
                option: "ignore_index",
                value: ignore.to_string(),
                reason: "must fit in i32",
            })?)
            .grad_dtype(case.grad_dtype_option()?);
        opts.validate()?;
        let (input, shape) = case.floats("input").unwrap_or_default();
        let dtype = case.float_dtype("input");
        let target = case.input("target").expect("checked: required");
        let weight = case.floats("weight");
        let (scalar_upstream, per_item) = case.upstream_parts();
        let (n, c) = check(
            &Args {
                input: Arg {
                    shape: &shape,
                    dtype,
                },
                target: Arg {
                    shape: &target.shape,
                    dtype: DType::I32,
                },
                weight: weight.as_ref().map(|(_, s)| Arg::f32(s)),
                scalar_upstream,
                per_item_upstream: per_item.as_ref().map(|(_, s)| Arg::f32(s)),
            },
            opts.reduction,
        )?;
        let upstream = per_item
            .map(|(g, _)| g)
            .or(scalar_upstream.map(|g| vec![g]));
        Ok(Self {
            opts,
            input,
            dtype,
            n,
            c,
            target: labels_i32("target", target)?,
            weight: weight.map(|(w, _)| w),
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

    /// The CPU backend with the input as `T` (16-bit inputs reach it as 16-bit values).
    fn cpu<T: Element>(&self) -> Result<LossValues> {
        let input: Vec<T> = self.input.iter().map(|&x| T::from_f32(x)).collect();
        cpu_nll(
            &self.opts,
            &HostNllInputs {
                input: &input,
                shape: (self.n, self.c),
                target: &self.target,
                weight: self.weight.as_deref(),
                upstream: host_upstream(self.upstream.as_deref(), self.n, self.opts.reduction),
            },
        )
    }
}

impl LossDef for NllDef {
    fn name(&self) -> &'static str {
        "nll"
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
        &["reduction", "ignore_index"]
    }

    fn gpu_in(&self, s: &mut GpuSession<'_>, case: &Case) -> Result<Evaluated<f32>> {
        let p = Problem::from_case(case)?;
        let (n, c) = (p.n, p.c);
        let input = s.upload_as("input", &p.input, &[n, c], p.dtype)?;
        let target = s.upload_i32("target", &p.target, &[n])?;
        let weight = p
            .weight
            .as_ref()
            .map(|w| s.upload("weight", w, &[c]))
            .transpose()?;
        let upstream = DeviceUpstream::upload(s, p.upstream.as_deref(), &[n], p.opts.reduction)?;
        let inputs = NllInputs {
            input: &input,
            target: &target,
            weight: weight.as_ref(),
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
        let to64 = |v: &[f32]| v.iter().map(|&x| x as f64).collect::<Vec<f64>>();
        let target: Vec<i64> = p.target.iter().map(|&y| y as i64).collect();
        let weight = p.weight.as_deref().map(to64);
        let upstream = p.upstream.as_deref().map_or(vec![1.0], to64);
        let out = reference::nll(
            &p.opts,
            &to64(&p.input),
            (p.n, p.c),
            &target,
            weight.as_deref(),
            &upstream,
        )?;
        Ok(Evaluated::from_reference(out, p.loss_shape(), &[p.n, p.c]))
    }

    fn random_case(&self, rng: &mut Rng) -> Case {
        let n = 1 + rng.below(64);
        let c = (rng.range(0.0, 10.0).exp2() as usize).max(1);
        // Log-probabilities: each row's log-softmax of random logits.
        let mut x = rng.normals(n * c, 3.0);
        for row in x.chunks_mut(c) {
            let max = row.iter().copied().fold(f32::MIN, f32::max);
            let lse = max + row.iter().map(|v| (v - max).exp()).sum::<f32>().ln();
            row.iter_mut().for_each(|v| *v -= lse);
        }
        let mut case = Case::default()
            .with("input", HostArray::f32(&[n, c], x))
            .with("target", HostArray::i64(&[n], random_classes(rng, n, c)));
        let reduction = ["mean", "sum", "none"][rng.below(3)];
        case = case.set("reduction", reduction);
        if rng.chance(0.5) {
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
        for (n, c) in spec.pairs(&[&[1024, 4096]], &[&[4096, 32000]])? {
            let x = rng.normals(n * c, 2.0);
            let y: Vec<i32> = (0..n).map(|_| rng.below(c) as i32).collect();
            let loss = Nll::new();
            let input = engine.upload(&x, &[n, c])?;
            let target = engine.upload_i32(&y, &[n])?;
            let mut plan = loss.plan(engine);
            let inputs = NllInputs::new(&input, &target);
            let host = HostNllInputs {
                input: &x[..],
                shape: (n, c),
                target: &y,
                weight: None,
                upstream: Upstream::Ones,
            };
            // Reads one value per row, writes the whole gradient.
            let grad_bytes = n * c * 4;
            run(BenchJob {
                label: self.name(),
                shape: vec![n, c],
                bytes_min: grad_bytes + 8 * n,
                bytes_moved: grad_bytes + 16 * n,
                flops: None,
                gpu: &mut |e| plan.record(e, &inputs).map(|_| ()),
                cpu: &mut || cpu_nll(&loss, &host).map(|_| ()),
            })?;
        }
        Ok(())
    }
}
