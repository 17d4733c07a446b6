// Row-kernel I/O: the gradient overwrites the logits (each element is read, then written,
// by the same invocation).
@group(0) @binding(7) var<storage, read_write> logits: array<f32>;

fn load_logit(i: u32) -> f32 {
    return logits[i];
}

fn store_grad(i: u32, g: f32) {
    logits[i] = g;
}
