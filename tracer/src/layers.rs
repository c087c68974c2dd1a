//! The data path's layer order, checked: no module imports one that comes after it, so
//! data flows one way (probe → event → aggregate → identify → verdict → report) and a
//! change to one step cannot loop back through another.

use std::{collections::BTreeSet, path::Path};

/// Top-level modules in order; each may use only those before it (and itself).
const ORDER: [&str; 13] = [
    "errors",
    "config",
    "clock",
    "target",
    "stacks",
    "probe",
    "event",
    "aggregate",
    "identify",
    "verdict",
    "report",
    "session",
    "cli",
];

/// The top-level modules a source file names in `crate::` paths (in `use` lines or
/// inline), outside tests.
fn imports(text: &str) -> BTreeSet<String> {
    let code = text.split("#[cfg(test)]").next().unwrap_or(text);
    let mut out = BTreeSet::new();
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + "crate::".len()..];
        let rest = rest.trim_start_matches('{').trim_start();
        // `crate::{a::x, b}` names several.
        let group = if code[i + "crate::".len()..].starts_with('{') {
            rest.split('}').next().unwrap_or(rest)
        } else {
            rest.split(|c: char| !(c.is_alphanumeric() || c == '_')).next().unwrap_or("")
        };
        for item in group.split(',') {
            let name: String = item.trim().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            if !name.is_empty() {
                out.insert(name);
            }
        }
    }
    out
}

fn files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") && !path.ends_with("tests.rs") {
            out.push(path);
        }
    }
}

#[test]
fn no_module_imports_one_that_comes_after_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut violations = Vec::new();
    for (rank, module) in ORDER.iter().enumerate() {
        let mut paths = Vec::new();
        let dir = src.join(module);
        if dir.is_dir() {
            files(&dir, &mut paths);
        } else {
            paths.push(src.join(format!("{module}.rs")));
        }
        for path in paths {
            let text = std::fs::read_to_string(&path).unwrap();
            for import in imports(&text) {
                let Some(at) = ORDER.iter().position(|m| *m == import) else { continue };
                if at > rank {
                    violations
                        .push(format!("{} uses crate::{import}", path.strip_prefix(&src).unwrap().display()));
                }
            }
        }
    }
    assert!(violations.is_empty(), "imports going up the data path:\n{}", violations.join("\n"));
}

#[test]
fn the_check_sees_imports() {
    let text = "use crate::{\n    aggregate::Aggregator,\n    stacks::{StackId},\n};\nlet x = crate::report::build();\n";
    assert_eq!(imports(text), ["aggregate", "report", "stacks"].map(String::from).into());
}
