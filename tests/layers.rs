//! The node's modules form layers: no top-level module of `src/` imports another that imports
//! it back, directly or through others. A circle makes every part depend on every other (and
//! is how Arc cycles and late `OnceLock` wiring crept in before); this test names the first
//! circle it finds, with the files that close it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Top-level modules of `src/` (a file `x.rs` or a folder `x/`), each with the files in it.
fn modules(src: &Path) -> BTreeMap<String, Vec<PathBuf>> {
    let mut out: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    for entry in std::fs::read_dir(src).unwrap().flatten() {
        let path = entry.path();
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        if name == "lib" || name == "main" {
            continue;
        }
        if path.is_dir() {
            out.entry(name).or_default().extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.entry(name).or_default().push(path);
        }
    }
    out
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out
}

/// The top-level modules a file names as `crate::<module>`, outside comments.
fn references(text: &str, known: &BTreeSet<String>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or_default();
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            let tail = &rest[at + "crate::".len()..];
            let name: String = tail.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            if known.contains(&name) {
                out.insert(name);
            }
            rest = tail;
        }
    }
    out
}

#[test]
fn no_import_circle_among_the_node_modules() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let modules = modules(&src);
    let known: BTreeSet<String> = modules.keys().cloned().collect();
    // Edges: module -> module it imports, with the file that does.
    let mut edges: BTreeMap<String, BTreeMap<String, PathBuf>> = BTreeMap::new();
    for (name, files) in &modules {
        for file in files {
            let text = std::fs::read_to_string(file).unwrap();
            for target in references(&text, &known) {
                if &target != name {
                    edges.entry(name.clone()).or_default().entry(target).or_insert_with(|| file.clone());
                }
            }
        }
    }
    // Depth-first search for a back edge.
    fn visit(
        node: &str,
        edges: &BTreeMap<String, BTreeMap<String, PathBuf>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = path.iter().position(|p| p == node) {
            let mut circle = path[at..].to_vec();
            circle.push(node.to_string());
            return Some(circle);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_string());
        for next in edges.get(node).map(|e| e.keys().cloned().collect::<Vec<_>>()).unwrap_or_default() {
            if let Some(c) = visit(&next, edges, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    for name in modules.keys() {
        if let Some(circle) = visit(name, &edges, &mut Vec::new(), &mut done) {
            let how: Vec<String> = circle
                .windows(2)
                .map(|w| format!("{} -> {} (in {})", w[0], w[1], edges[&w[0]][&w[1]].display()))
                .collect();
            panic!("import circle among src/ modules: {}\n  {}", circle.join(" -> "), how.join("\n  "));
        }
    }
}

#[test]
fn the_checker_finds_a_circle() {
    let known: BTreeSet<String> = ["a", "b"].iter().map(|s| s.to_string()).collect();
    assert_eq!(references("use crate::b::X; // crate::a", &known), BTreeSet::from(["b".to_string()]));
    assert!(references("// use crate::b::X;", &known).is_empty());
}
