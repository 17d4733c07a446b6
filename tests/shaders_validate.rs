//! Every composed shader passes naga's WGSL front end and validator, with the capabilities the
//! engine requests. Needs no GPU.

use wgpu_losses::shader::Shader;

#[test]
fn every_shader_validates() {
    for shader in Shader::all() {
        let source = shader.source();
        let module = naga::front::wgsl::parse_str(&source)
            .unwrap_or_else(|e| panic!("{shader:?}: {}", e.emit_to_string(&source)));
        let caps = naga::valid::Capabilities::SUBGROUP | naga::valid::Capabilities::SHADER_FLOAT16;
        naga::valid::Validator::new(naga::valid::ValidationFlags::all(), caps)
            .validate(&module)
            .unwrap_or_else(|e| panic!("{shader:?}: {}", e.emit_to_string(&source)));
        for entry in shader.entry_points() {
            assert!(
                module.entry_points.iter().any(|e| e.name == *entry),
                "{shader:?} lacks entry point {entry}"
            );
        }
    }
}
