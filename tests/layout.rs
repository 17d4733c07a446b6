//! The source layout's rules, checked on the text of `src/` (no GPU, no features):
//! no import cycle between modules (file by file, and between the top-level modules), and the
//! direction core ← losses ← registry ← command line.
//!
//! A module's dependencies are the modules its code names through `crate::…` and `super::…`
//! paths (re-exports with `pub use` excluded: they shape the API, not the code's needs).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

type Module = Vec<String>;

/// Every module of the library with its file: `src/a/b.rs` and `src/a/b/mod.rs` are `a::b`.
fn modules(src: &Path) -> BTreeMap<Module, PathBuf> {
    let mut out = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                if path.file_name().unwrap() != "bin" {
                    stack.push(path);
                }
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let rel = path.strip_prefix(src).unwrap().with_extension("");
            let mut parts: Module = rel
                .components()
                .map(|c| c.as_os_str().to_string_lossy().into_owned())
                .collect();
            if parts.last().is_some_and(|p| p == "mod" || p == "lib") {
                parts.pop();
            }
            out.insert(parts, path);
        }
    }
    out
}

/// The code of a file without comments and without `pub use` re-exports.
fn code(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| l.split("//").next().unwrap_or(""))
        .filter(|l| {
            let t = l.trim_start();
            !(t.starts_with("pub use") || t.starts_with("pub(crate) use"))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The paths named after each `crate::` / `super::` in `text`, with `{a, b::c}` groups
/// expanded (one level), relative to `module`.
fn paths(text: &str, module: &Module, is_mod_rs: bool) -> Vec<Module> {
    let mut out = Vec::new();
    let bytes = text.as_bytes();
    for (start, anchor) in [("crate::", 0usize), ("super::", 1)] {
        let mut from = 0;
        while let Some(pos) = text[from..].find(start) {
            let at = from + pos;
            from = at + start.len();
            // A whole word only (not `my_crate::`).
            if at > 0 && (bytes[at - 1].is_ascii_alphanumeric() || bytes[at - 1] == b'_') {
                continue;
            }
            let base: Module = if anchor == 0 {
                Vec::new()
            } else {
                // `super` of a file module is its parent; of a `mod.rs`, the parent's parent.
                let up = if is_mod_rs { 2 } else { 1 };
                module[..module.len().saturating_sub(up)].to_vec()
            };
            let rest = &text[from..];
            let mut prefix = base.clone();
            let mut i = 0;
            let rb = rest.as_bytes();
            loop {
                let seg_end = rest[i..]
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .map_or(rest.len(), |e| i + e);
                if seg_end > i {
                    prefix.push(rest[i..seg_end].to_string());
                }
                let group = if rest[seg_end..].starts_with("::{") {
                    Some(seg_end + 3)
                } else if seg_end == i && rest[i..].starts_with('{') {
                    Some(i + 1)
                } else {
                    None
                };
                if let Some(open) = group {
                    let close = open + rest[open..].find('}').unwrap_or(0);
                    for item in rest[open..close].split(',') {
                        let mut p = prefix.clone();
                        p.extend(
                            item.trim()
                                .split("::")
                                .filter(|s| !s.is_empty() && *s != "self")
                                .map(|s| s.trim().to_string()),
                        );
                        out.push(p);
                    }
                    break;
                }
                if rest[seg_end..].starts_with("::") && seg_end + 2 < rb.len() {
                    i = seg_end + 2;
                    continue;
                }
                out.push(prefix);
                break;
            }
        }
    }
    out
}

/// The longest prefix of `path` that is a module.
fn resolve(path: &Module, known: &BTreeMap<Module, PathBuf>) -> Module {
    (0..=path.len())
        .rev()
        .map(|k| path[..k].to_vec())
        .find(|p| known.contains_key(p))
        .unwrap_or_default()
}

fn graph(granularity: usize) -> BTreeMap<Module, BTreeSet<Module>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let known = modules(&src);
    let mut edges: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
    for (module, file) in &known {
        if module.is_empty() {
            continue; // lib.rs: declarations and re-exports
        }
        let is_mod_rs = file.file_name().unwrap() == "mod.rs";
        let from: Module = module.iter().take(granularity).cloned().collect();
        for path in paths(&code(file), module, is_mod_rs) {
            let to: Module = resolve(&path, &known)
                .into_iter()
                .take(granularity)
                .collect();
            if !to.is_empty() && to != from {
                edges.entry(from.clone()).or_default().insert(to);
            }
        }
        edges.entry(from).or_default();
    }
    edges
}

/// A cycle, if the graph has one, as the modules along it.
fn cycle(edges: &BTreeMap<Module, BTreeSet<Module>>) -> Option<Vec<String>> {
    fn visit(
        m: &Module,
        edges: &BTreeMap<Module, BTreeSet<Module>>,
        state: &mut BTreeMap<Module, u8>,
        path: &mut Vec<Module>,
    ) -> Option<Vec<String>> {
        match state.get(m) {
            Some(2) => return None,
            Some(1) => {
                let start = path.iter().position(|p| p == m).unwrap();
                let mut c: Vec<String> = path[start..].iter().map(|p| p.join("::")).collect();
                c.push(m.join("::"));
                return Some(c);
            }
            _ => {}
        }
        state.insert(m.clone(), 1);
        path.push(m.clone());
        for next in edges.get(m).into_iter().flatten() {
            if let Some(c) = visit(next, edges, state, path) {
                return Some(c);
            }
        }
        path.pop();
        state.insert(m.clone(), 2);
        None
    }
    let mut state = BTreeMap::new();
    edges
        .keys()
        .find_map(|m| visit(m, edges, &mut state, &mut Vec::new()))
}

#[test]
fn no_import_cycle_between_files() {
    let g = graph(usize::MAX);
    assert!(g.len() > 30, "read only {} modules", g.len());
    if let Some(c) = cycle(&g) {
        panic!("import cycle: {}", c.join(" -> "));
    }
}

#[test]
fn no_import_cycle_between_top_level_modules() {
    let g = graph(1);
    if let Some(c) = cycle(&g) {
        panic!("import cycle: {}", c.join(" -> "));
    }
}

#[test]
fn dependencies_point_one_way() {
    let g = graph(1);
    let deps = |m: &str| -> BTreeSet<String> {
        g.get(&vec![m.to_string()])
            .into_iter()
            .flatten()
            .map(|d| d.join("::"))
            .collect()
    };
    // The core knows no GPU, no loss, no registry.
    assert_eq!(deps("core"), BTreeSet::from(["error".to_string()]));
    // The GPU core knows no loss and nothing of the command line.
    for m in ["losses", "registry", "cli"] {
        assert!(!deps("gpu").contains(m), "gpu depends on {m}");
    }
    // The registry and the command line come after the losses, never before.
    assert!(!deps("registry").contains("losses"));
    assert!(!deps("cli").contains("losses"));
}

/// The checker itself sees a cycle when there is one, and resolves `super::{…}` groups.
#[test]
fn the_cycle_finder_finds_cycles() {
    let m = |s: &str| -> Module { s.split("::").map(String::from).collect() };
    let mut g: BTreeMap<Module, BTreeSet<Module>> = BTreeMap::new();
    g.insert(m("a"), BTreeSet::from([m("b")]));
    g.insert(m("b"), BTreeSet::from([m("c")]));
    g.insert(m("c"), BTreeSet::new());
    assert_eq!(cycle(&g), None);
    g.insert(m("c"), BTreeSet::from([m("a")]));
    assert_eq!(cycle(&g).unwrap(), ["a", "b", "c", "a"]);
    let found = paths(
        "use super::{cpu, Opts};\nlet x = crate::gpu::engine::Engine::new();",
        &m("losses::fam::cli"),
        false,
    );
    assert_eq!(
        found,
        [
            m("gpu::engine::Engine::new"),
            m("losses::fam::cpu"),
            m("losses::fam::Opts")
        ]
    );
}

/// The graph holds the imports the code is known to make, so an empty or misparsed graph
/// cannot pass the cycle tests.
#[test]
fn the_graph_sees_real_imports() {
    let g = graph(usize::MAX);
    let m = |s: &str| -> Module { s.split("::").map(String::from).collect() };
    for (from, to) in [
        ("losses::cross_entropy::gpu", "gpu::engine"),
        ("losses::cross_entropy::gpu", "losses::cross_entropy"),
        ("losses::pair_rows::cli", "losses::pair_rows::cpu"),
        ("gpu::engine", "gpu::kernel"),
        ("gpu::kernel", "gpu::shader"),
        ("gpu::record", "gpu::tensor"),
        ("gpu::plan", "gpu::record"),
    ] {
        assert!(
            g.get(&m(from)).is_some_and(|d| d.contains(&m(to))),
            "{from} should depend on {to}: {:?}",
            g.get(&m(from))
        );
    }
}
