//! Field paths, and finding the line of a field path in a YAML document's text.
//!
//! serde_yaml's `Value` carries no positions, so semantic errors find their line by a light scan
//! of the block-style YAML that people write: keys by indentation, `- ` items by index. Flow
//! collections (`{a: b}`) are not descended into; a path that cannot be found falls back to its
//! nearest ancestor that can.

use std::collections::HashMap;

/// Appends a mapping key to a field path: `.name`, or `["app.kubernetes.io/name"]` for keys that
/// are not plain identifiers.
pub(crate) fn join_key(base: &str, key: &str) -> String {
    let plain = !key.is_empty() && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if plain {
        if base.is_empty() { key.to_owned() } else { format!("{base}.{key}") }
    } else {
        let quoted = serde_json::to_string(key).unwrap_or_else(|_| format!("\"{key}\""));
        format!("{base}[{quoted}]")
    }
}

/// Appends a sequence index to a field path: `[3]`.
pub(crate) fn join_index(base: &str, index: usize) -> String {
    format!("{base}[{index}]")
}

/// The parent of a field path, or `None` for a top-level field.
fn parent(path: &str) -> Option<&str> {
    let cut = if path.ends_with("\"]") {
        path.rfind("[\"")?
    } else if path.ends_with(']') {
        path.rfind('[')?
    } else {
        path.rfind('.')?
    };
    Some(&path[..cut])
}

struct Frame {
    /// Column (0-based) of the key, or of an item's content.
    col: usize,
    path: String,
    is_item: bool,
    next_index: usize,
}

/// 1-based (line, column) of every field path found in a document's text.
#[derive(Default)]
pub(crate) struct Locator {
    positions: HashMap<String, (usize, usize)>,
    /// Where an inline scalar value starts (`memory: 12XB` → the `1`).
    values: HashMap<String, (usize, usize)>,
    /// The document's first content line, for fields of the document itself that are absent.
    first: Option<(usize, usize)>,
}

impl Locator {
    pub(crate) fn new(text: &str) -> Locator {
        let mut scan = Scan { stack: Vec::new(), positions: HashMap::new(), values: HashMap::new() };
        let mut block_scalar: Option<usize> = None;
        let mut first = None;
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim_end_matches('\r');
            let content = line.trim_start_matches(' ');
            let col = line.len() - content.len();
            if let Some(bc) = block_scalar {
                if content.is_empty() || col > bc {
                    continue;
                }
                block_scalar = None;
            }
            if content.is_empty() || content.starts_with('#') {
                continue;
            }
            first.get_or_insert((i + 1, col + 1));
            if scan.node(i + 1, col, content) {
                block_scalar = Some(col);
            }
        }
        Locator { positions: scan.positions, values: scan.values, first }
    }

    /// The position of `path`, or of its nearest ancestor found in the text, or of the
    /// document's first line.
    pub(crate) fn find(&self, path: &str) -> Option<(usize, usize)> {
        self.find_inner(path, false)
    }

    /// Like [`Locator::find`], but points at the field's inline value when it has one.
    pub(crate) fn find_value(&self, path: &str) -> Option<(usize, usize)> {
        self.find_inner(path, true)
    }

    fn find_inner(&self, path: &str, value: bool) -> Option<(usize, usize)> {
        if value && let Some(pos) = self.values.get(path) {
            return Some(*pos);
        }
        let mut p = path;
        loop {
            if let Some(pos) = self.positions.get(p) {
                return Some(*pos);
            }
            match parent(p) {
                Some(up) => p = up,
                None => return self.first,
            }
        }
    }
}

struct Scan {
    stack: Vec<Frame>,
    positions: HashMap<String, (usize, usize)>,
    values: HashMap<String, (usize, usize)>,
}

impl Scan {
    /// Handles one line's node; returns true when a block scalar (`|`, `>`) starts.
    fn node(&mut self, line: usize, col: usize, content: &str) -> bool {
        if content == "-" || content.starts_with("- ") {
            while let Some(top) = self.stack.last() {
                if top.col > col || (top.is_item && top.col >= col) {
                    self.stack.pop();
                } else {
                    break;
                }
            }
            let Some(owner) = self.stack.last_mut() else { return false };
            if owner.is_item {
                return false;
            }
            let path = join_index(&owner.path, owner.next_index);
            owner.next_index += 1;
            self.positions.entry(path.clone()).or_insert((line, col + 1));
            let rest = &content[1..];
            let item = rest.trim_start_matches(' ');
            let item_col = col + 1 + (rest.len() - item.len());
            if item.is_empty() || item.starts_with('#') || item.starts_with('-') || split_key(item).is_none() {
                return false;
            }
            self.stack.push(Frame { col: item_col, path, is_item: true, next_index: 0 });
            return self.key(line, item_col, item);
        }
        self.key(line, col, content)
    }

    fn key(&mut self, line: usize, col: usize, content: &str) -> bool {
        let Some((key, value)) = split_key(content) else { return false };
        while let Some(top) = self.stack.last() {
            if top.col > col || (!top.is_item && top.col == col) {
                self.stack.pop();
            } else {
                break;
            }
        }
        let base = self.stack.last().map_or("", |f| f.path.as_str());
        let path = join_key(base, &key);
        self.positions.entry(path.clone()).or_insert((line, col + 1));
        let trimmed = value.trim_start();
        if !trimmed.is_empty() && !trimmed.starts_with('#') {
            let value_col = col + (content.len() - trimmed.len());
            self.values.entry(path.clone()).or_insert((line, value_col + 1));
        }
        let value = strip_comment(value).trim();
        let anchor_only = value.starts_with('&') && !value.contains(' ');
        if value.is_empty() || anchor_only {
            self.stack.push(Frame { col, path, is_item: false, next_index: 0 });
            false
        } else {
            value.starts_with('|') || value.starts_with('>')
        }
    }
}

/// Splits `key: value` (plain, single- or double-quoted key). `None` when the line is not a key.
fn split_key(content: &str) -> Option<(String, &str)> {
    let first = content.chars().next()?;
    if first == '"' || first == '\'' {
        let mut key = String::new();
        let mut chars = content.char_indices().skip(1).peekable();
        while let Some((i, c)) = chars.next() {
            if c == first {
                if first == '\'' && chars.peek().map(|&(_, n)| n) == Some('\'') {
                    chars.next();
                    key.push('\'');
                    continue;
                }
                let after = content[i + 1..].trim_start_matches(' ');
                let value = after.strip_prefix(':')?;
                return (value.is_empty() || value.starts_with([' ', '\t'])).then_some((key, value));
            }
            if c == '\\' && first == '"' {
                if let Some((_, n)) = chars.next() {
                    key.push(n);
                }
                continue;
            }
            key.push(c);
        }
        return None;
    }
    if matches!(first, '{' | '[' | '|' | '>' | '&' | '*' | '!' | '#' | '?') {
        return None;
    }
    let bytes = content.as_bytes();
    for i in 0..bytes.len() {
        match bytes[i] {
            b':' if i + 1 == bytes.len() || bytes[i + 1] == b' ' || bytes[i + 1] == b'\t' => {
                return Some((content[..i].trim_end().to_owned(), &content[i + 1..]));
            }
            b'#' if i > 0 && bytes[i - 1] == b' ' => return None,
            _ => {}
        }
    }
    None
}

fn strip_comment(value: &str) -> &str {
    if value.trim_start().starts_with('#') { "" } else { value }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC: &str = "\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: hello   # comment
  labels:
    app.kubernetes.io/name: hello
spec:
  template:
    spec:
      containers:
      - name: hello
        image: hello:1.0
        args:
          - one
          - two
        env:
        - name: A
          value: |
            key: not a key
        - name: B
      volumes:
        - name: data
          emptyDir: {}
";

    #[test]
    fn finds_block_paths() {
        let l = Locator::new(DOC);
        assert_eq!(l.find("metadata.name"), Some((4, 3)));
        assert_eq!(l.find("metadata.labels[\"app.kubernetes.io/name\"]"), Some((6, 5)));
        assert_eq!(l.find("spec.template.spec.containers[0]"), Some((11, 7)));
        assert_eq!(l.find("spec.template.spec.containers[0].image"), Some((12, 9)));
        assert_eq!(l.find_value("spec.template.spec.containers[0].image"), Some((12, 16)));
        assert_eq!(l.find_value("metadata.labels"), Some((5, 3)));
        assert_eq!(l.find("spec.template.spec.containers[0].args[1]"), Some((15, 11)));
        assert_eq!(l.find("spec.template.spec.containers[0].env[1].name"), Some((20, 11)));
        assert_eq!(l.find("spec.template.spec.volumes[0].emptyDir"), Some((23, 11)));
        // Falls back to the nearest ancestor.
        assert_eq!(l.find("spec.template.spec.containers[0].command"), Some((11, 7)));
        assert_eq!(l.find("status"), Some((1, 1)));
    }

    #[test]
    fn paths() {
        assert_eq!(join_key("", "spec"), "spec");
        assert_eq!(join_key("a", "wasmfleet.io/x"), "a[\"wasmfleet.io/x\"]");
        assert_eq!(parent("a[\"wasmfleet.io/x\"]"), Some("a"));
        assert_eq!(parent("a.b[2]"), Some("a.b"));
        assert_eq!(parent("a"), None);
    }
}
