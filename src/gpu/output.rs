//! What a loss call returns on the device, and reading it back: the outputs, and the
//! kernels' report of the first invalid input row.

use crate::core::LossValues;
use crate::error::{Error, Result};
use crate::gpu::engine::Engine;
use crate::gpu::tensor::{DType, Tensor};

/// Device results of one loss call.
#[derive(Debug, Clone)]
pub struct LossOutput {
    /// Shape `[]` for mean and sum, the per-item shape for `Reduction::None`.
    pub loss: Tensor,
    /// Gradient of each differentiable input, by input name, in the input's shape.
    pub grads: Vec<(&'static str, Tensor)>,
    /// Per-row statistics a loss reports beside its loss, by name (the fused linear loss's
    /// `lse` and `correct` when asked for); empty for the others.
    pub rows: Vec<(&'static str, Tensor)>,
    /// Where the kernel reports the first invalid input row, if the loss checks any.
    pub(crate) status: Option<Status>,
}

/// A device-side report of the first bad row of an input the host did not see.
#[derive(Debug, Clone)]
pub(crate) struct Status {
    /// `u32::MAX - i` of the first bad element `i` of `values`, 0 when all are valid.
    pub flag: Tensor,
    /// The input checked, to read the offending value from.
    pub input: &'static str,
    pub values: Tensor,
    /// Elements of `values` per row (1: a value per row).
    pub row_len: usize,
    /// Where each row starts in `values`, for rows of different lengths (then `row_len` is
    /// not used).
    pub row_starts: Option<Vec<usize>>,
    pub reason: String,
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
        let rows = out
            .rows
            .iter()
            .map(|(name, t)| Ok((*name, self.download(t)?)))
            .collect::<Result<_>>()?;
        Ok(LossValues {
            loss: self.download(&out.loss)?,
            grads,
            rows,
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
        let flag = status.flag.buffer();
        let flag: u32 =
            bytemuck::pod_read_unaligned(&self.read_bytes(flag, status.flag.offset(), 4)?);
        if flag == 0 {
            return Ok(());
        }
        let element = (u32::MAX - flag) as usize;
        let value = match status.values.dtype() {
            DType::I32 => self.download_i32(&status.values)?[element].to_string(),
            _ => self.download(&status.values)?[element].to_string(),
        };
        Err(Error::Value {
            input: status.input,
            row: match &status.row_starts {
                Some(starts) => starts.partition_point(|&s| s <= element).saturating_sub(1),
                None => element / status.row_len.max(1),
            },
            value,
            reason: status.reason.clone(),
        })
    }
}
