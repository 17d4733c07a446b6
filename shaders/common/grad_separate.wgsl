// Row-kernel I/O: logits are read-only and the gradient goes to its own buffer.
@group(0) @binding(7) var<storage, read> logits: array<f32>;
@group(0) @binding(8) var<storage, read_write> grad: array<f32>;

fn load_logit(i: u32) -> f32 {
    return logits[i];
}

fn store_grad(i: u32, g: f32) {
    grad[i] = g;
}
