//! The runtime's layers point one way. Each top-level module of `runtime/src` belongs to a
//! layer (`LAYERS`, lowest first); a file may name (`crate::…`, `super::…`) only modules of its
//! own layer or of lower ones, and sibling modules (the children of one module, a layer's
//! folders and files among them) may not name each other in a cycle. A lower layer that must
//! call up declares a trait the upper one implements.
//!
//! The check reads the source as text: every `crate::a::b` and `super::…` path, in `use` lines
//! and in code, resolved to the file that defines it. It fails naming the file, the line and
//! the two layers.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// The layers, lowest first, and the top-level modules of each.
const LAYERS: &[(&str, &[&str])] = &[
    ("foundation", &["base"]),
    ("storage and transport", &["io"]),
    ("the agent instance", &["instance"]),
    ("operators and user API", &["ops"]),
    ("wiring", &["wiring"]),
    ("entry points", &["entry"]),
];

/// A reference from one file to a module path.
#[derive(Debug, Clone)]
struct Reference {
    file: PathBuf,
    line: usize,
    /// The module path named, from the crate root (`["ops", "window", "state"]`).
    target: Vec<String>,
}

/// A source file and its module path (`runtime/src/ops/window/mod.rs` → `["ops", "window"]`).
fn module_of(root: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(root).expect("under the root");
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let last = parts.pop().expect("a file name");
    let stem = last.trim_end_matches(".rs");
    if stem != "mod" && stem != "lib" {
        parts.push(stem.to_owned());
    }
    parts
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read_dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The code of a line without its comment (string contents are kept: paths in strings are
/// rare and would only make the check stricter).
fn code_of(line: &str) -> &str {
    let trimmed = line.trim_start();
    if trimmed.starts_with("//") {
        return "";
    }
    line.split(" //").next().unwrap_or(line)
}

/// Every `crate::…` and `super::…` path of a file, as module paths from the crate root.
fn references(root: &Path, file: &Path) -> Vec<Reference> {
    let text = std::fs::read_to_string(file).expect("read");
    let here = module_of(root, file);
    // `super` of a file's items is its parent module; of a `mod.rs`, its folder's parent.
    // Unit tests (`#[cfg(test)]`) follow the same rule as their module.
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let code = code_of(line);
        for (start, _) in code.match_indices("crate::") {
            if start > 0 && is_ident(code.as_bytes()[start - 1]) {
                continue;
            }
            out.push(Reference {
                file: file.to_owned(),
                line: n + 1,
                target: path_at(&code[start + "crate::".len()..]),
            });
        }
        for (start, _) in code.match_indices("super::") {
            if start > 0 && (is_ident(code.as_bytes()[start - 1]) || code[..start].ends_with("::"))
            {
                continue;
            }
            let mut base = here.clone();
            let mut rest = &code[start..];
            while let Some(r) = rest.strip_prefix("super::") {
                base.pop();
                rest = r;
            }
            base.extend(path_at(rest));
            out.push(Reference {
                file: file.to_owned(),
                line: n + 1,
                target: base,
            });
        }
    }
    out
}

fn is_ident(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// The module-looking segments at the start of `s` (`a::b::{c, d}` → `[a, b]`).
fn path_at(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = s;
    loop {
        let end = rest
            .bytes()
            .position(|b| !is_ident(b))
            .unwrap_or(rest.len());
        if end == 0 {
            break;
        }
        out.push(rest[..end].to_owned());
        match rest[end..].strip_prefix("::") {
            Some(r) => rest = r,
            None => break,
        }
    }
    out
}

/// The file defining the longest prefix of `target` that is a module.
fn resolve(modules: &BTreeMap<Vec<String>, PathBuf>, target: &[String]) -> Option<Vec<String>> {
    (0..=target.len())
        .rev()
        .map(|n| target[..n].to_vec())
        .find(|prefix| modules.contains_key(prefix))
}

fn layer_of(module: &[String]) -> Option<usize> {
    let top = module.first()?;
    LAYERS
        .iter()
        .position(|(_, tops)| tops.contains(&top.as_str()))
}

/// What the check found: references that point up, modules in no layer, cycles in a layer.
fn check(root: &Path) -> Vec<String> {
    let mut files = Vec::new();
    rust_files(root, &mut files);
    files.sort();
    let modules: BTreeMap<Vec<String>, PathBuf> = files
        .iter()
        .map(|f| (module_of(root, f), f.clone()))
        .collect();
    let mut problems = Vec::new();
    let mut tops = BTreeSet::new();
    for module in modules.keys() {
        if let Some(top) = module.first()
            && tops.insert(top.clone())
            && layer_of(module).is_none()
        {
            problems.push(format!(
                "module `{top}` is in no layer: add it to LAYERS in runtime/tests/layers.rs"
            ));
        }
    }
    // Edges between top-level modules' children within one layer (for cycles).
    let mut edges: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
    for file in &files {
        let from = module_of(root, file);
        let Some(from_layer) = layer_of(&from) else {
            continue;
        };
        for r in references(root, file) {
            let Some(to) = resolve(&modules, &r.target) else {
                continue;
            };
            let Some(to_layer) = layer_of(&to) else {
                continue;
            };
            if to_layer > from_layer {
                problems.push(format!(
                    "{}:{}: `{}` ({}) names `{}` ({}), a layer above",
                    r.file.strip_prefix(root).unwrap_or(&r.file).display(),
                    r.line,
                    from.join("::"),
                    LAYERS[from_layer].0,
                    to.join("::"),
                    LAYERS[to_layer].0,
                ));
            } else if let Some((a, b)) = siblings(&from, &to) {
                edges.entry(a).or_default().insert(b);
            }
        }
    }
    problems.extend(cycles(&edges));
    problems
}

/// The two sibling modules a reference from `from` to `to` goes between: below their common
/// parent, the child holding each (`ops::window::driver` naming `ops::operator` goes from
/// `ops::window` to `ops::operator`). `None` when one contains the other: a module and its
/// children name each other freely (a `mod.rs` declares its children's types, they use its).
fn siblings(from: &[String], to: &[String]) -> Option<(Vec<String>, Vec<String>)> {
    let common = from.iter().zip(to).take_while(|(a, b)| a == b).count();
    if common == from.len() || common == to.len() {
        return None;
    }
    Some((from[..=common].to_vec(), to[..=common].to_vec()))
}

/// Cycles in the graph, each once (by its smallest member).
fn cycles(edges: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>) -> Vec<String> {
    let mut found = Vec::new();
    for start in edges.keys() {
        // A path back to `start` through members greater than it (each cycle reported once).
        let mut stack = vec![(start.clone(), vec![start.clone()])];
        let mut seen = BTreeSet::new();
        while let Some((at, path)) = stack.pop() {
            for next in edges.get(&at).into_iter().flatten() {
                if next == start {
                    let names: Vec<String> = path.iter().map(|m| m.join("::")).collect();
                    found.push(format!(
                        "sibling modules name each other in a cycle: {} -> {}",
                        names.join(" -> "),
                        start.join("::")
                    ));
                } else if next > start && seen.insert(next.clone()) {
                    let mut longer = path.clone();
                    longer.push(next.clone());
                    stack.push((next.clone(), longer));
                }
            }
        }
    }
    found.sort();
    found.dedup();
    found
}

#[test]
fn runtime_imports_point_down_the_layers() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let problems = check(&root);
    assert!(
        problems.is_empty(),
        "{} problems with the runtime's layers:\n{}",
        problems.len(),
        problems.join("\n")
    );
}

#[test]
fn paths_resolve_to_the_modules_that_define_them() {
    assert_eq!(path_at("a::b::{C, d}"), vec!["a", "b"]);
    assert_eq!(
        path_at("window::state::Operator;"),
        vec!["window", "state", "Operator"]
    );
    let modules: BTreeMap<Vec<String>, PathBuf> = [
        (vec![], PathBuf::from("lib.rs")),
        (vec!["ops".into()], PathBuf::from("ops/mod.rs")),
        (
            vec!["ops".into(), "window".into()],
            PathBuf::from("ops/window/mod.rs"),
        ),
    ]
    .into_iter()
    .collect();
    let target: Vec<String> = ["ops", "window", "WindowResult"].map(String::from).to_vec();
    assert_eq!(
        resolve(&modules, &target),
        Some(vec!["ops".to_owned(), "window".to_owned()])
    );
}

#[test]
fn an_upward_import_and_a_cycle_are_found() {
    let dir = std::env::temp_dir().join(format!("rill-layers-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let write = |path: &str, text: &str| {
        let p = dir.join(path);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::fs::write(p, text).expect("write");
    };
    write("lib.rs", "mod base;\nmod ops;\nmod misc;\n");
    // As in de79778: a foundation module naming an operator's header constant.
    write(
        "base/mod.rs",
        "pub(crate) mod failure;\npub(crate) mod message;\n",
    );
    write(
        "base/failure.rs",
        "use crate::ops::repartition::TOPIC_HEADER; // up\nuse super::message::Headers;\n",
    );
    write("base/message.rs", "use crate::base::failure::Policy;\n");
    write("ops/mod.rs", "pub(crate) mod repartition;\n");
    write(
        "ops/repartition.rs",
        "pub(crate) const TOPIC_HEADER: &str = \"t\";\n",
    );
    write("misc.rs", "\n");
    let problems = check(&dir);
    let _ = std::fs::remove_dir_all(&dir);
    let text = problems.join("\n");
    assert!(
        text.contains("base/failure.rs:1: `base::failure` (foundation) names `ops::repartition`"),
        "{text}"
    );
    assert!(text.contains("module `misc` is in no layer"), "{text}");
    assert!(
        text.contains("cycle: base::failure -> base::message -> base::failure"),
        "{text}"
    );
    assert_eq!(problems.len(), 3, "{text}");
}
