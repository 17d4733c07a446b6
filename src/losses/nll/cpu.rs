//! NLLLoss on the CPU, the twin of `nll.wgsl`: one pass over the rows (each reads its
//! target's log-probability), then the gradient, `−w_y` times the row's scale at the target
//! and 0 elsewhere.

use rayon::prelude::*;

use super::{check, Args, Nll};
use crate::core::{written_as, Arg, Element, LossValues, Reduction, Upstream};
use crate::error::Result;
use crate::losses::cross_entropy::target_class;

/// Host inputs of [`nll`]; the fields mirror [`crate::NllInputs`]. The log-probabilities may
/// be f32, [`half::f16`] or [`half::bf16`].
#[derive(Debug, Clone, Copy)]
pub struct HostNllInputs<'a, T: Element = f32> {
    /// Log-probabilities `[N, C]`, row-major.
    pub input: &'a [T],
    /// (N, C).
    pub shape: (usize, usize),
    /// Class indices `[N]`.
    pub target: &'a [i32],
    /// Class weights `[C]`.
    pub weight: Option<&'a [f32]>,
    /// Gradient from above: a scalar, or one per row with reduction none.
    pub upstream: Upstream<'a, [f32]>,
}

/// NLLLoss of `inputs` on the CPU; the gradient is written in the input's type unless
/// `grad_dtype` says otherwise.
///
/// # Errors
/// Bad options; [`Error::Shape`](crate::Error::Shape) for lengths that do not match;
/// [`Error::Value`](crate::Error::Value) naming the first row whose target is out of range.
pub fn nll<T: Element>(opts: &Nll, inputs: &HostNllInputs<'_, T>) -> Result<LossValues> {
    opts.validate()?;
    let (n, c) = inputs.shape;
    let shape = [n, c];
    let (target_shape, weight_shape) = ([inputs.target.len()], inputs.weight.map(|w| [w.len()]));
    let input_shape = if inputs.input.len() == n * c {
        shape.to_vec()
    } else {
        vec![inputs.input.len()]
    };
    let (scalar_upstream, per_item) = inputs.upstream.split(|g| [g.len()]);
    check(
        &Args {
            input: Arg {
                shape: &input_shape,
                dtype: T::DTYPE,
            },
            target: Arg {
                shape: &target_shape,
                dtype: crate::core::DType::I32,
            },
            weight: weight_shape.as_ref().map(|s| Arg::f32(s)),
            scalar_upstream,
            per_item_upstream: per_item.as_ref().map(|s| Arg::f32(s)),
        },
        opts.reduction,
    )?;
    // Per row: its class (None when ignored) and weight.
    let classes = inputs
        .target
        .iter()
        .enumerate()
        .map(|(row, &y)| target_class(y as i64, row, c, opts.ignore_index))
        .collect::<Result<Vec<Option<usize>>>>()?;
    let weight_of = |k: usize| inputs.weight.map_or(1.0, |w| w[k] as f64);
    let (losses, weights): (Vec<f64>, Vec<f64>) = classes
        .iter()
        .enumerate()
        .map(|(row, k)| match *k {
            Some(k) => {
                let w = weight_of(k);
                (-w * inputs.input[row * c + k].to_f32() as f64, w)
            }
            None => (0.0, 0.0),
        })
        .unzip();
    let denom = match opts.reduction {
        Reduction::Mean => weights.iter().sum::<f64>(),
        _ => 1.0,
    };
    let divide = |v: f64| if denom == 0.0 { 0.0 } else { v / denom };
    let loss = match opts.reduction {
        Reduction::None => losses.iter().map(|&l| l as f32).collect(),
        _ => vec![divide(losses.iter().sum::<f64>()) as f32],
    };
    let mut grads = Vec::new();
    if opts.gradient {
        let upstream = inputs.upstream.values();
        let up = |row: usize| *upstream.get(row).or(upstream.first()).unwrap_or(&1.0) as f64;
        let mut grad = vec![0.0f32; n * c];
        grad.par_chunks_mut(c).enumerate().for_each(|(row, g)| {
            if let Some(k) = classes[row] {
                g[k] = divide(-weight_of(k) * up(row)) as f32;
            }
        });
        grads.push(("input", grad));
    }
    Ok(written_as(
        LossValues {
            loss,
            grads,
            rows: Vec::new(),
        },
        opts.grad_dtype.unwrap_or(T::DTYPE),
    ))
}
