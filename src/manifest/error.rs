//! [`ManifestError`]: one problem in a manifest file, located by document, field path and line.

use std::fmt;

use serde::Serialize;

/// One problem found in a manifest file.
///
/// Displayed on one line:
/// `hello.yaml: document 2 (Deployment "hello"): spec.replicas: ... (line 9, column 13)`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ManifestError {
    /// The file name, or `-` for standard input.
    pub source: String,
    /// 1-based index of the document among the file's non-empty documents; 0 for the whole file.
    pub document: usize,
    /// The document's `kind`, when it has one.
    pub kind: Option<String>,
    /// The document's `metadata.name`, when it has one.
    pub name: Option<String>,
    /// Field path such as `spec.template.spec.containers[0].image`; `""` for the whole document.
    pub path: String,
    pub message: String,
    /// 1-based line in the file (not the document).
    pub line: Option<usize>,
    /// 1-based column.
    pub column: Option<usize>,
}

impl fmt::Display for ManifestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:", self.source)?;
        if self.document > 0 {
            write!(f, " document {}", self.document)?;
            match (&self.kind, &self.name) {
                (Some(k), Some(n)) => write!(f, " ({k} {n:?})")?,
                (Some(k), None) => write!(f, " ({k})")?,
                (None, Some(n)) => write!(f, " ({n:?})")?,
                (None, None) => {}
            }
            f.write_str(":")?;
        }
        if !self.path.is_empty() {
            write!(f, " {}:", self.path)?;
        }
        write!(f, " {}", self.message)?;
        match (self.line, self.column) {
            (Some(l), Some(c)) => write!(f, " (line {l}, column {c})"),
            (Some(l), None) => write!(f, " (line {l})"),
            _ => Ok(()),
        }
    }
}

impl std::error::Error for ManifestError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display() {
        let e = ManifestError {
            source: "hello.yaml".into(),
            document: 2,
            kind: Some("Deployment".into()),
            name: Some("hello".into()),
            path: "spec.template.spec.containers[0].resources.limits.memory".into(),
            message: "invalid quantity \"12XB\": expected a number with an optional suffix Ki, Mi, Gi, Ti, K, M, G, T"
                .into(),
            line: Some(23),
            column: Some(24),
        };
        assert_eq!(
            e.to_string(),
            "hello.yaml: document 2 (Deployment \"hello\"): spec.template.spec.containers[0].resources.limits.memory: \
             invalid quantity \"12XB\": expected a number with an optional suffix Ki, Mi, Gi, Ti, K, M, G, T (line 23, column 24)"
        );
        let whole = ManifestError { document: 0, path: String::new(), line: None, column: None, ..e };
        assert!(whole.to_string().starts_with("hello.yaml: invalid quantity"));
    }
}
