//! Element-type conversions at the edges of a kernel that computes in f32 throughout
//! (`shaders/convert.wgsl`): 16-bit inputs widened into f32 workspaces, f32 results
//! narrowed into 16-bit outputs.

use crate::core::DType;
use crate::error::Result;
use crate::gpu::kernel::KernelKey;
use crate::gpu::output::LossOutput;
use crate::gpu::record::Recorder;
use crate::gpu::shader::CONVERT_MODULE;
use crate::gpu::tensor::Tensor;

/// Mirrors `ConvertParams` in `convert.wgsl`.
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    len: u32,
    _pad: [u32; 3],
}

impl Recorder<'_> {
    /// One conversion of `half` (the 16-bit side's type) between `src` and `dst`.
    fn convert(
        &mut self,
        entry: &'static str,
        half: DType,
        src: &Tensor,
        dst: &Tensor,
    ) -> Result<()> {
        let wg = self.engine().workgroup_size();
        let key = KernelKey {
            module: CONVERT_MODULE,
            entry,
            overrides: vec![("WG_SIZE", wg), ("BF16", (half == DType::BF16) as u32)],
        };
        let len = src.len();
        let params = self.params(&Params {
            len: len as u32,
            _pad: [0; 3],
        });
        let words = len.div_ceil(2);
        self.dispatch(
            key,
            vec![params, src.binding(), dst.binding()],
            words.div_ceil(wg as usize) as u32,
        )
    }

    /// `t` as f32: itself, or its values widened into a workspace.
    pub(crate) fn widened(&mut self, t: &Tensor) -> Result<Tensor> {
        if t.dtype() == DType::F32 {
            return Ok(t.clone());
        }
        let wide = self.tensor(t.shape(), DType::F32)?;
        self.convert("widen", t.dtype(), t, &wide)?;
        Ok(wide)
    }

    /// The f32 values of `src` written into `dst` in its type (a copy-free no-op when `src`
    /// already is `dst`).
    pub(crate) fn narrow_into(&mut self, src: &Tensor, dst: &Tensor) -> Result<()> {
        match dst.dtype() {
            DType::F32 => Ok(()),
            half => self.convert("narrow", half, src, dst),
        }
    }

    /// `out` with its f32 gradients narrowed into new outputs of `dtype` (as they are for
    /// f32).
    pub(crate) fn gradients_as(&mut self, mut out: LossOutput, dtype: DType) -> Result<LossOutput> {
        if dtype == DType::F32 {
            return Ok(out);
        }
        for (_, g) in &mut out.grads {
            let narrow = self.tensor(g.shape(), dtype)?;
            self.convert("narrow", dtype, g, &narrow)?;
            *g = narrow;
        }
        Ok(out)
    }
}
