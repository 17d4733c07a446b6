//! Loss options, inputs and outputs shared by every loss, and the losses themselves.

pub mod cross_entropy;
pub mod elementwise;
pub(crate) mod metric_defs;
pub mod metric_options;
pub mod pair_rows;
pub mod pairwise;
pub mod softmax_focal;

use std::str::FromStr;

use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// How per-item losses are combined (PyTorch's `reduction`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Reduction {
    /// Per-item losses.
    None,
    /// Sum of the per-item losses.
    Sum,
    /// Mean (weighted, where the loss defines weights).
    #[default]
    Mean,
    /// Sum divided by the batch size (the first dimension); `kl-div` only, as in PyTorch.
    BatchMean,
}

impl FromStr for Reduction {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "none" => Ok(Reduction::None),
            "sum" => Ok(Reduction::Sum),
            "mean" => Ok(Reduction::Mean),
            "batchmean" => Ok(Reduction::BatchMean),
            _ => Err(Error::Option {
                option: "reduction",
                value: s.into(),
                reason: "expected none, sum, mean (or batchmean for kl-div)",
            }),
        }
    }
}

/// The gradient flowing into the loss from above (PyTorch's `grad_output`).
#[derive(Debug, Clone, Copy, Default)]
pub enum Upstream<'a> {
    /// 1 for a reduced loss, ones for `Reduction::None`.
    #[default]
    Ones,
    /// A scalar for every item.
    Scalar(f32),
    /// One value per item; only with `Reduction::None`.
    PerItem(&'a Tensor),
}

/// Device results of one loss call.
#[derive(Debug, Clone)]
pub struct LossOutput {
    /// Shape `[]` for mean and sum, the per-item shape for `Reduction::None`.
    pub loss: Tensor,
    /// Gradient of each differentiable input, by input name, in the input's shape.
    pub grads: Vec<(&'static str, Tensor)>,
    /// Where the kernel reports the first invalid input row, if the loss checks any.
    pub(crate) status: Option<Status>,
}

/// A device-side report of the first bad row of an input the host did not see.
#[derive(Debug, Clone)]
pub(crate) struct Status {
    /// `u32::MAX - row` of the first bad row, 0 when all rows are valid.
    pub flag: wgpu::Buffer,
    /// The input checked, to read the offending value from.
    pub input: &'static str,
    pub values: Tensor,
    pub reason: String,
}

/// Host results of one loss call.
#[derive(Debug, Clone, PartialEq)]
pub struct LossValues {
    /// One value for mean and sum, one per item for `Reduction::None`.
    pub loss: Vec<f32>,
    /// Gradient of each differentiable input, by input name.
    pub grads: Vec<(&'static str, Vec<f32>)>,
}

impl LossValues {
    /// The gradient of the input called `name`.
    pub fn grad(&self, name: &str) -> Option<&[f32]> {
        self.grads
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, g)| g.as_slice())
    }
}

impl Engine {
    /// Checks the kernels' input report, then reads loss and gradients back.
    ///
    /// # Errors
    /// [`Error::Value`] naming the first bad row and its value; readback and wgpu errors.
    pub fn read_output(&self, out: &LossOutput) -> Result<LossValues> {
        self.check_status(out)?;
        let grads = out
            .grads
            .iter()
            .map(|(name, t)| Ok((*name, self.download(t)?)))
            .collect::<Result<_>>()?;
        Ok(LossValues {
            loss: self.download(&out.loss)?,
            grads,
        })
    }

    /// Records with `record` into a new encoder, submits, waits and reads the results back:
    /// the body of every loss's `run`.
    ///
    /// # Errors
    /// Those of `record`, submission, the kernels' input report and readback.
    pub fn execute(
        &self,
        record: impl FnOnce(&mut wgpu::CommandEncoder) -> Result<LossOutput>,
    ) -> Result<LossValues> {
        let mut encoder = self.encoder();
        let out = record(&mut encoder)?;
        self.submit(encoder)?;
        self.read_output(&out)
    }

    /// `Err` naming the first bad input row that a kernel reported, if any.
    ///
    /// # Errors
    /// [`Error::Value`]; readback errors.
    pub fn check_status(&self, out: &LossOutput) -> Result<()> {
        let Some(status) = &out.status else {
            return Ok(());
        };
        let flag: u32 = bytemuck::pod_read_unaligned(&self.read_bytes(&status.flag, 4)?);
        if flag == 0 {
            return Ok(());
        }
        let row = (u32::MAX - flag) as usize;
        let value = match status.values.dtype() {
            crate::DType::I32 => self.download_i32(&status.values)?[row].to_string(),
            crate::DType::F32 => self.download(&status.values)?[row].to_string(),
        };
        Err(Error::Value {
            input: status.input,
            row,
            value,
            reason: status.reason.clone(),
        })
    }
}

/// `Err` unless `value` is finite.
pub(crate) fn finite(option: &'static str, value: f32) -> Result<()> {
    if value.is_finite() {
        Ok(())
    } else {
        Err(Error::Option {
            option,
            value: value.to_string(),
            reason: "must be finite",
        })
    }
}

/// `Err` unless `t` has exactly `shape`.
pub(crate) fn expect_shape(input: &'static str, t: &Tensor, shape: &[usize]) -> Result<()> {
    if t.shape() != shape {
        return Err(Error::Shape {
            input,
            expected: format!("{shape:?}"),
            got: t.shape().to_vec(),
        });
    }
    Ok(())
}
