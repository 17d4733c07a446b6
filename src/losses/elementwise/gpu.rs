//! The elementwise losses on the GPU: `elementwise.wgsl`, its I/O variants, the launch.

use super::{Args, ElementwiseLoss, Pointwise, Term};
use crate::core::{unused, LossValues, Reduction, Upstream};
use crate::error::{Error, Result};
use crate::gpu::engine::Engine;
use crate::gpu::kernel::KernelKey;
use crate::gpu::output::{LossOutput, Status};
use crate::gpu::plan::{check_disjoint, GpuLoss};
use crate::gpu::record::{Recorder, SumOf};
use crate::gpu::shader::{
    float_digit, Access, FloatView, ShaderModule, FLOATS, HALF, MATH, WORKGROUP_SUM,
};
use crate::gpu::tensor::{DType, Tensor};

const SOURCE: &str = include_str!("elementwise.wgsl");

/// The element types of the kernel's float arrays: the input (x1), the target (or x2), and
/// their gradients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Io {
    /// Chunks of 4 elements (element counts that are multiples of 4), else single elements.
    pub vec4: bool,
    pub a: DType,
    pub b: DType,
    pub grad_a: DType,
    pub grad_b: DType,
}

impl Io {
    fn variant(self) -> u32 {
        [self.a, self.b, self.grad_a, self.grad_b]
            .iter()
            .fold(self.vec4 as u32, |v, &d| v * 3 + float_digit(d))
    }

    fn from_variant(mut v: u32) -> Self {
        let mut next = || {
            let d = FLOATS[(v % 3) as usize];
            v /= 3;
            d
        };
        let (grad_b, grad_a, b, a) = (next(), next(), next(), next());
        Self {
            vec4: v == 1,
            a,
            b,
            grad_a,
            grad_b,
        }
    }

    /// The module of this variant.
    pub(crate) fn module(self) -> ShaderModule {
        ShaderModule {
            name: "elementwise",
            variant: self.variant(),
            source: |v| {
                let header = Io::from_variant(v).header();
                [MATH, WORKGROUP_SUM, HALF, &header, SOURCE].join("\n")
            },
            bindings: |_| {
                use Access::*;
                vec![
                    Uniform, Read, Read, Read, Read, Read, ReadWrite, ReadWrite, ReadWrite,
                    ReadWrite,
                ]
            },
            entry_points: &["main"],
        }
    }

    /// WGSL declaring bindings 1, 2, 6 and 7 with LANES-element accessors, and the term ids.
    fn header(self) -> String {
        let ids: String = Term::ALL
            .iter()
            .map(|t| format!("const {}: u32 = {}u;\n", t.wgsl_name(), *t as u32))
            .collect();
        let views = [
            (1, "in_a", self.a, Access::Read),
            (2, "in_b", self.b, Access::Read),
            (6, "grad_a", self.grad_a, Access::ReadWrite),
            (7, "grad_b", self.grad_b, Access::ReadWrite),
        ];
        let mut decls = String::new();
        for (binding, name, dtype, access) in views {
            let view = FloatView {
                name,
                dtype,
                access,
            };
            decls += &view.declare(binding, self.vec4);
            decls += &view.functions(self.vec4);
        }
        let (lanes, load, store) = match self.vec4 {
            true => (4, "load4_{}(j)", "store4_{}(j, g)"),
            false => (
                1,
                "vec4<f32>(load_{}(j), 0.0, 0.0, 0.0)",
                "store_{}(j, g.x)",
            ),
        };
        let call = |pattern: &str, name: &str| pattern.replace("{}", name);
        format!(
            "{ids}\
             const LANES: u32 = {lanes}u;\n\
             {decls}\
             fn load_a(j: u32) -> vec4<f32> {{ return {}; }}\n\
             fn load_b(j: u32) -> vec4<f32> {{ return {}; }}\n\
             fn store_ga(j: u32, g: vec4<f32>) {{ {}; }}\n\
             fn store_gb(j: u32, g: vec4<f32>) {{ {}; }}\n",
            call(load, "in_a"),
            call(load, "in_b"),
            call(store, "grad_a"),
            call(store, "grad_b"),
        )
    }
}

/// The variants a call can reach (gradients in their input's type or f32), for validation.
#[cfg(test)]
pub(crate) fn modules() -> Vec<ShaderModule> {
    let mut all = Vec::new();
    for vec4 in [false, true] {
        for a in FLOATS {
            for b in FLOATS {
                for grad_a in [a, DType::F32] {
                    for grad_b in [b, DType::F32] {
                        let io = Io {
                            vec4,
                            a,
                            b,
                            grad_a,
                            grad_b,
                        };
                        if !all.contains(&io) {
                            all.push(io);
                        }
                    }
                }
            }
        }
    }
    all.into_iter().map(Io::module).collect()
}

/// The device inputs of an elementwise loss call.
#[derive(Debug, Clone, Copy)]
pub struct ElementwiseInputs<'a> {
    /// The differentiable input: `input`, `logits`, or `x1` for margin ranking.
    pub input: &'a Tensor,
    /// The target, or `x2` for margin ranking (then also differentiable).
    pub target: &'a Tensor,
    /// Margin ranking's labels `y` (±1), input-shaped.
    pub labels: Option<&'a Tensor>,
    /// Gaussian NLL's variance (f32, differentiable): the input's shape, or one per item.
    pub var: Option<&'a Tensor>,
    /// BCE's weight: the input's shape, or its last dimension (broadcast).
    pub weight: Option<&'a Tensor>,
    /// BCE's positive weight, the input's last dimension.
    pub pos_weight: Option<&'a Tensor>,
    /// Upstream gradient (default ones); per element only with reduction none.
    pub upstream: Upstream<'a, Tensor>,
    /// Where to write the gradient of `input` (and of `x2` for margin ranking, in the
    /// input's shape, or of gaussian NLL's `var`, in its shape; default: new tensors). Reusing buffers saves an allocation and its
    /// zero-fill per call.
    pub grad_out: [Option<&'a Tensor>; 2],
}

impl<'a> ElementwiseInputs<'a> {
    /// Input and target.
    pub fn new(input: &'a Tensor, target: &'a Tensor) -> Self {
        Self {
            input,
            target,
            labels: None,
            var: None,
            weight: None,
            pos_weight: None,
            upstream: Upstream::Ones,
            grad_out: [None, None],
        }
    }

    /// Writes the gradient of `input` (`x1`) into `grad`.
    pub fn grad_out(mut self, grad: &'a Tensor) -> Self {
        self.grad_out[0] = Some(grad);
        self
    }

    /// Writes the gradient of margin ranking's `x2` (or gaussian NLL's `var`) into `grad`.
    pub fn grad_out_x2(mut self, grad: &'a Tensor) -> Self {
        self.grad_out[1] = Some(grad);
        self
    }

    /// Margin ranking's `x1`, `x2` and labels `y`.
    pub fn ranking(x1: &'a Tensor, x2: &'a Tensor, y: &'a Tensor) -> Self {
        Self {
            labels: Some(y),
            ..Self::new(x1, x2)
        }
    }

    /// Gaussian NLL's `input`, `target` and `var`.
    pub fn gaussian(input: &'a Tensor, target: &'a Tensor, var: &'a Tensor) -> Self {
        Self {
            var: Some(var),
            ..Self::new(input, target)
        }
    }

    /// Adds BCE's weight.
    pub fn weight(mut self, w: &'a Tensor) -> Self {
        self.weight = Some(w);
        self
    }

    /// Adds BCE's positive weight.
    pub fn pos_weight(mut self, pw: &'a Tensor) -> Self {
        self.pos_weight = Some(pw);
        self
    }

    /// Sets the upstream gradient.
    pub fn upstream(mut self, upstream: Upstream<'a, Tensor>) -> Self {
        self.upstream = upstream;
        self
    }
}

/// Mirrors `Params` in `elementwise.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    len: u32,
    base: u32,
    inner: u32,
    scale: f32,
    p0: f32,
    p1: f32,
    group_base: u32,
    c_base: u32,
}

/// Chunks (of 1 or 4 elements) per invocation: long runs amortize the workgroup's one
/// partial-sum tree, whose barriers software adapters pay for dearly.
const ITEMS: u32 = 16;

impl ElementwiseLoss {
    fn check_inputs(&self, inputs: &ElementwiseInputs<'_>) -> Result<()> {
        let (scalar_upstream, per_item_upstream) = inputs.upstream.split(Tensor::arg);
        self.check(&Args {
            input: inputs.input.arg(),
            target: inputs.target.arg(),
            labels: inputs.labels.map(Tensor::arg),
            var: inputs.var.map(Tensor::arg),
            weight: inputs.weight.map(Tensor::arg),
            pos_weight: inputs.pos_weight.map(Tensor::arg),
            scalar_upstream,
            per_item_upstream,
        })?;
        if inputs.input.len() > u32::MAX as usize / 2 {
            return Err(Error::Limit(format!(
                "{} elements exceed the kernel's u32 indexing",
                inputs.input.len()
            )));
        }
        let names = self.kind.grad_names();
        let mut read = vec![("input", inputs.input), ("target", inputs.target)];
        read.extend(inputs.labels.map(|t| ("labels", t)));
        read.extend(inputs.var.map(|t| ("var", t)));
        read.extend(inputs.weight.map(|t| ("weight", t)));
        read.extend(inputs.pos_weight.map(|t| ("pos_weight", t)));
        if let Upstream::PerItem(t) = inputs.upstream {
            read.push(("upstream", t));
        }
        let mut written = Vec::new();
        let grad_types = [
            self.grad_dtype_for(inputs.input.dtype()),
            self.grad_dtype_for(inputs.var.unwrap_or(inputs.target).dtype()),
        ];
        let grad_shapes = [
            inputs.input.shape(),
            inputs.var.map_or(inputs.input.shape(), Tensor::shape),
        ];
        for (k, g) in inputs.grad_out.iter().enumerate() {
            if let Some(g) = g {
                if k >= names.len() || !self.gradient {
                    return Err(unused("grad_out"));
                }
                g.arg().expect("grad_out", grad_shapes[k], grad_types[k])?;
                check_disjoint(&[("grad_out", g)], &read)?;
                check_disjoint(&[("grad_out", g)], &written)?;
                written.push(("grad_out", *g));
            }
        }
        Ok(())
    }

    /// Records the loss and gradient(s) into `encoder`: a one-off [`Plan`](crate::Plan).
    ///
    /// # Errors
    /// Invalid options, shapes or types; wgpu errors. Labels outside ±1 (hinge, margin
    /// ranking) are reported by [`Engine::check_status`] / [`Engine::read_output`].
    pub fn record(
        &self,
        engine: &Engine,
        encoder: &mut wgpu::CommandEncoder,
        inputs: &ElementwiseInputs<'_>,
    ) -> Result<LossOutput> {
        self.plan(engine).record(encoder, inputs)
    }

    fn record_checked(
        &self,
        rec: &mut Recorder<'_>,
        inputs: &ElementwiseInputs<'_>,
    ) -> Result<LossOutput> {
        let engine = rec.engine();
        let shape = inputs.input.shape();
        let len = inputs.input.len();
        let inner = shape.last().copied().unwrap_or(1);
        let wg = engine.workgroup_size();
        let vec4 = len.is_multiple_of(4);
        let block = (wg * ITEMS) as usize * if vec4 { 4 } else { 1 };
        let blocks = len.div_ceil(block);
        // Partials are bound whole (their index is offset by `group_base`), so windows align
        // for the element arrays alone.
        let windows = engine.row_windows(blocks, block as u64 * 4, false)?;
        let names = self.kind.grad_names();
        let ranking = matches!(self.kind, Pointwise::MarginRanking { .. });
        let var_per_item = self.var_per_item(shape, inputs.var.map(Tensor::shape));

        let per_element = self.reduction == Reduction::None;
        let out = rec.tensor(&[if per_element { len } else { blocks }], DType::F32)?;
        let loss = if per_element {
            Tensor::reshaped(out.clone(), shape)
        } else {
            rec.tensor(&[], DType::F32)?
        };
        let io = Io {
            vec4,
            a: inputs.input.dtype(),
            b: inputs.target.dtype(),
            grad_a: self.grad_dtype_for(inputs.input.dtype()),
            // Gaussian NLL's ∂/∂var is formed in f32 (then summed per item or narrowed).
            grad_b: match inputs.var {
                Some(_) => DType::F32,
                None => self.grad_dtype_for(inputs.target.dtype()),
            },
        };
        let var_grad_type = inputs.var.map(|v| self.grad_dtype_for(v.dtype()));
        let grad_shapes = [shape, inputs.var.map_or(shape, Tensor::shape)];
        let grads: Vec<Tensor> = if self.gradient {
            names
                .iter()
                .zip(inputs.grad_out)
                .zip([io.grad_a, var_grad_type.unwrap_or(io.grad_b)])
                .zip(grad_shapes)
                .map(|(((_, given), dtype), shape)| match given {
                    Some(g) => Ok(g.clone()),
                    None => rec.tensor(shape, dtype),
                })
                .collect::<Result<_>>()?
        } else {
            Vec::new()
        };
        // The variance is read as f32. The kernel writes its gradient per element in f32:
        // straight into the gradient when that is f32 and per element, else into
        // `var_terms`, then summed per item (`row_sums`, in order) and narrowed.
        let var = inputs.var.map(|v| rec.widened(v)).transpose()?;
        let direct = !var_per_item && var_grad_type == Some(DType::F32);
        let var_terms = match var.is_some() && self.gradient && !direct {
            true => Some(rec.tensor(&[len], DType::F32)?),
            false => None,
        };
        let var_align = (engine.limits().min_storage_buffer_offset_alignment / 4).max(1) as usize;
        let status = rec.zeros(&[1], DType::I32)?;
        let unused = rec.unused()?;

        let weight_full = inputs.weight.is_some_and(|w| w.shape() == shape);
        let specialize = [
            ("PER_ELEMENT_OUT", per_element),
            (
                "UPSTREAM_PER_ELEMENT",
                matches!(inputs.upstream, Upstream::PerItem(_)),
            ),
            ("C_PER_CLASS", inputs.weight.is_some() && !weight_full),
            ("C_PER_ITEM", var_per_item),
            (
                "HAS_C",
                inputs.weight.is_some() || ranking || inputs.var.is_some(),
            ),
            ("HAS_D", inputs.pos_weight.is_some()),
            ("WANT_GRAD", self.gradient),
        ];
        let upstream = match inputs.upstream {
            Upstream::Scalar(g) => g as f64,
            _ => 1.0,
        };
        let scale = (upstream / self.denominator(shape)) as f32;
        let (p0, p1) = self.kind.params();
        let key = KernelKey {
            module: io.module(),
            entry: "main",
            overrides: [
                ("WG_SIZE", wg),
                ("ITEMS", ITEMS),
                ("TEAM", engine.subgroup_width()),
                ("LOSS", self.kind.term() as u32),
            ]
            .into_iter()
            .chain(specialize.map(|(name, on)| (name, on as u32)))
            .collect(),
        };
        for w in &windows {
            let (start, count) = (w.start * block, (w.end * block).min(len) - w.start * block);
            // A per-item variance binds from an aligned item at or before the window's first.
            let items = (start / inner, (start + count).div_ceil(inner));
            let c_base = items.0 - items.0 % var_align;
            let params = rec.params(&Params {
                len: count as u32,
                base: start as u32,
                inner: inner as u32,
                scale,
                p0,
                p1,
                group_base: w.start as u32,
                c_base: c_base as u32,
            });
            let c = match (inputs.labels.or(var.as_ref()), inputs.weight) {
                (Some(t), _) if var_per_item => t.window(c_base, items.1 - c_base),
                (Some(t), _) => t.window(start, count),
                (None, Some(t)) if weight_full => t.window(start, count),
                (None, Some(t)) => t.binding(),
                (None, None) => unused.clone(),
            };
            let bindings = vec![
                params,
                inputs.input.window(start, count),
                inputs.target.window(start, count),
                c,
                inputs.pos_weight.map_or(unused.clone(), Tensor::binding),
                match inputs.upstream {
                    Upstream::PerItem(t) => t.window(start, count),
                    _ => unused.clone(),
                },
                grads
                    .first()
                    .map_or(unused.clone(), |g| g.window(start, count)),
                match (&var_terms, grads.get(1)) {
                    (Some(t), _) | (None, Some(t)) => t.window(start, count),
                    (None, None) => unused.clone(),
                },
                if per_element {
                    out.window(start, count)
                } else {
                    out.binding()
                },
                status.binding(),
            ];
            rec.dispatch(key.clone(), bindings, w.len() as u32)?;
        }
        if let (Some(terms), Some(var_grad)) = (&var_terms, grads.get(1)) {
            let summed = match var_per_item {
                true if var_grad.dtype() == DType::F32 => var_grad.clone(),
                true => rec.tensor(var_grad.shape(), DType::F32)?,
                false => terms.clone(),
            };
            if var_per_item {
                rec.row_sums(terms, len / inner, inner, &summed)?;
            }
            rec.narrow_into(&summed, var_grad)?;
        }
        if !per_element {
            let scale = (1.0 / self.denominator(shape)) as f32;
            rec.sum((&out, 0), blocks, SumOf::scaled(scale), &loss)?;
        }
        let checked = self.kind.checked_input().and_then(|(name, reason)| {
            let values = match name {
                "y" => inputs.labels?,
                "var" => inputs.var?,
                "input" => inputs.input,
                _ => inputs.target,
            };
            Some((name, values, reason))
        });
        Ok(LossOutput {
            loss,
            grads: names.iter().copied().zip(grads).collect(),
            status: checked.map(|(input, values, reason)| Status {
                flag: status,
                input,
                values: values.clone(),
                row_len: 1,
                row_starts: None,
                reason: reason.into(),
            }),
            rows: Vec::new(),
        })
    }

    /// Records, submits, waits and reads back.
    ///
    /// # Errors
    /// As [`ElementwiseLoss::record`], plus [`Error::Value`] for a label outside ±1.
    pub fn run(&self, engine: &Engine, inputs: &ElementwiseInputs<'_>) -> Result<LossValues> {
        self.plan(engine).run(inputs)
    }
}

impl GpuLoss for ElementwiseLoss {
    type Inputs<'a> = ElementwiseInputs<'a>;

    fn record_into(
        &self,
        rec: &mut Recorder<'_>,
        inputs: &ElementwiseInputs<'_>,
    ) -> Result<LossOutput> {
        self.check_inputs(inputs)?;
        rec.engine().scoped(|| self.record_checked(rec, inputs))
    }
}
