//! The README's table of every loss against the registry: each loss has one row, and its row
//! names each of the loss's inputs (but the common `grad_output`), marks the differentiable
//! ones with ∂ and the optional ones with `?`, and names each of its options.

use std::collections::HashMap;

/// The README's "every loss at a glance" rows: loss name -> (inputs cell, options cell).
fn table() -> HashMap<String, (String, String)> {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let start = readme
        .find("| loss | inputs | options (defaults) |")
        .expect("the table of every loss");
    let mut rows = HashMap::new();
    for line in readme[start..].lines().skip(2) {
        let Some(line) = line.strip_prefix("| `") else {
            break;
        };
        let cells: Vec<&str> = line.split(" | ").collect();
        let name = cells[0].trim_end_matches('`').to_string();
        let previous = rows.insert(name.clone(), (cells[1].to_string(), cells[2].to_string()));
        assert!(previous.is_none(), "{name} has two rows");
    }
    rows
}

#[test]
fn the_readme_table_lists_every_loss_with_its_inputs_and_options() {
    let rows = table();
    let all = wgpu_losses::losses::all();
    assert_eq!(rows.len(), all.len(), "rows: {:?}", rows.keys());
    for def in all {
        let (inputs, options) = rows
            .get(def.name())
            .unwrap_or_else(|| panic!("{} has no row", def.name()));
        for spec in def.inputs().iter().filter(|s| s.name != "grad_output") {
            let marked = format!(
                "{}`{}{}`",
                if spec.differentiable { "∂" } else { "" },
                spec.name,
                if spec.required { "" } else { "?" }
            );
            assert!(
                inputs.contains(&marked),
                "{}: inputs {inputs:?} lack {marked}",
                def.name()
            );
        }
        for option in def.options() {
            assert!(
                options.contains(&format!("`{option}`")),
                "{}: options {options:?} lack {option}",
                def.name()
            );
        }
    }
}
