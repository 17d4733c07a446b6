//! The losses, one folder per kernel family, and the one list of families.
//!
//! A family folder holds everything of its losses: `mod.rs` (options with PyTorch defaults and
//! their checks), `gpu.rs` with its WGSL beside it, `cpu.rs`, `reference.rs` (f64) and `cli.rs`
//! (the losses by name, for `eval`, `check`, `bench` and the registry-wide tests). A new loss
//! in a family touches that folder alone; a new family is a folder and one line below.

#[cfg(test)]
use crate::gpu::shader::ShaderModule;
#[cfg(feature = "cli")]
use crate::registry::LossDef;

/// Declares the families, and from that one list derives every WGSL module (for the
/// validation test) and every loss (for the command line and the registry-wide tests).
macro_rules! families {
    ($($family:ident),* $(,)?) => {
        $(pub(crate) mod $family;)*

        /// Every WGSL module: the GPU core's and each family's, in each I/O variant.
        #[cfg(test)]
        pub(crate) fn shader_modules() -> Vec<ShaderModule> {
            let mut all = crate::gpu::shader::core_modules();
            $(all.extend($family::gpu::modules());)*
            all
        }

        /// Every loss, family by family, in the order the families are listed.
        #[cfg(feature = "cli")]
        pub fn all() -> &'static [&'static dyn LossDef] {
            static ALL: std::sync::OnceLock<Vec<&'static dyn LossDef>> =
                std::sync::OnceLock::new();
            ALL.get_or_init(|| [$($family::cli::LOSSES),*].concat())
        }
    };
}

families! {
    cross_entropy,
    linear_cross_entropy,
    elementwise,
    pair_rows,
    pairwise,
    nll,
    class_rows,
    ctc,
    ranking,
    overlap,
}

/// The loss called `name`.
///
/// # Errors
/// [`crate::Error::Unknown`] listing the known names.
#[cfg(feature = "cli")]
pub fn find(name: &str) -> crate::Result<&'static dyn LossDef> {
    all()
        .iter()
        .copied()
        .find(|l| l.name() == name)
        .ok_or_else(|| crate::Error::Unknown {
            kind: "loss",
            name: name.into(),
            hint: format!(
                " (known: {})",
                all()
                    .iter()
                    .map(|l| l.name())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        })
}

#[cfg(test)]
mod tests {
    use crate::gpu::shader::Access;

    /// Every module of every family passes naga's WGSL front end and validator with the
    /// capabilities the engine requests, has its entry points, declares exactly the
    /// bindings of group 0 that its shader uses, with the same access, and keeps each entry
    /// point's workgroup memory within WebGPU's default limit (16 KiB: a device created
    /// elsewhere, e.g. by burn, may have no more). Needs no GPU.
    #[test]
    fn every_module_validates_and_declares_its_bindings() {
        let modules = super::shader_modules();
        assert!(modules.len() >= 10, "{} modules", modules.len());
        for m in modules {
            let label = format!("{} (variant {})", m.name, m.variant);
            let source = m.wgsl();
            let module = naga::front::wgsl::parse_str(&source)
                .unwrap_or_else(|e| panic!("{label}: {}", e.emit_to_string(&source)));
            let caps =
                naga::valid::Capabilities::SUBGROUP | naga::valid::Capabilities::SHADER_FLOAT16;
            let info = naga::valid::Validator::new(naga::valid::ValidationFlags::all(), caps)
                .validate(&module)
                .unwrap_or_else(|e| panic!("{label}: {}", e.emit_to_string(&source)));
            for entry in m.entry_points {
                let index = module.entry_points.iter().position(|e| e.name == *entry);
                let index = index.unwrap_or_else(|| panic!("{label} lacks entry point {entry}"));
                let uses = info.get_entry_point(index);
                let workgroup_bytes: u32 = module
                    .global_variables
                    .iter()
                    .filter(|&(h, var)| {
                        var.space == naga::AddressSpace::WorkGroup && !uses[h].is_empty()
                    })
                    .map(|(_, var)| module.types[var.ty].inner.size(module.to_ctx()))
                    .sum();
                assert!(
                    workgroup_bytes <= 16_384,
                    "{label}: {entry} uses {workgroup_bytes} bytes of workgroup memory"
                );
            }
            let mut reflected: Vec<(u32, Access)> = module
                .global_variables
                .iter()
                .filter_map(|(_, var)| {
                    let binding = var.binding.as_ref()?;
                    assert_eq!(binding.group, 0, "{label}: {:?} outside group 0", var.name);
                    let access = match var.space {
                        naga::AddressSpace::Uniform => Access::Uniform,
                        naga::AddressSpace::Storage { access } => {
                            if access.contains(naga::StorageAccess::STORE) {
                                Access::ReadWrite
                            } else {
                                Access::Read
                            }
                        }
                        other => panic!("{label}: binding {binding:?} in {other:?}"),
                    };
                    Some((binding.binding, access))
                })
                .collect();
            reflected.sort_by_key(|&(b, _)| b);
            let declared: Vec<(u32, Access)> = m
                .binding_access()
                .into_iter()
                .enumerate()
                .map(|(i, a)| (i as u32, a))
                .collect();
            assert_eq!(
                reflected, declared,
                "{label}: the shader's bindings (left) differ from the declared ones"
            );
        }
    }
}
