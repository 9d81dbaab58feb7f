//! From file text to validated objects: document splitting, kind dispatch, typed deserialization
//! with field paths (serde_path_to_error), validation, and errors located by file line.

use serde::Deserializer;
use serde::de::DeserializeOwned;
use serde_yaml::Value;

use super::error::ManifestError;
use super::locate::{Locator, join_index, join_key};
use super::object::{Kind, Object, ObjectKey};
use super::validate::validate;

/// 1-based (line, column).
type Position = (usize, usize);

/// One `---`-separated document and the file line its text starts on.
struct Document {
    text: String,
    first_line: usize,
}

/// Whether `line` is a document marker (`---` or `...`) followed by nothing or whitespace.
fn marker(line: &str, m: &str) -> bool {
    line.strip_prefix(m).is_some_and(|rest| rest.is_empty() || rest.starts_with([' ', '\t']))
}

/// Splits a file on lines starting with `---` (and ends documents at `...`). Content after `--- `
/// on the marker line belongs to the new document, its columns kept.
fn split_documents(text: &str) -> Vec<Document> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut docs = Vec::new();
    let mut cur = Document { text: String::new(), first_line: 1 };
    for (i, line) in text.split_inclusive('\n').enumerate() {
        let bare = line.trim_end_matches(['\n', '\r']);
        if marker(bare, "---") || marker(bare, "...") {
            docs.push(std::mem::replace(&mut cur, Document { text: String::new(), first_line: i + 2 }));
            let rest = bare[3..].trim();
            if marker(bare, "---") && !rest.is_empty() && !rest.starts_with('#') {
                cur.first_line = i + 1;
                cur.text.push_str("   ");
                cur.text.push_str(&line[3..]);
            }
            continue;
        }
        cur.text.push_str(line);
    }
    docs.push(cur);
    docs
}

fn is_blank(text: &str) -> bool {
    text.lines().all(|l| {
        let t = l.trim();
        t.is_empty() || t.starts_with('#') || t.starts_with('%')
    })
}

/// serde_yaml's message without its positions (we report file positions) or its own path prefix.
fn clean_message(e: &serde_yaml::Error) -> String {
    let mut s = e.to_string();
    while let Some(i) = s.find(" at line ") {
        let tail = &s[i + " at line ".len()..];
        let digits = tail.bytes().take_while(u8::is_ascii_digit).count();
        let rest = &tail[digits..];
        let Some(col) = rest.strip_prefix(" column ") else { break };
        let cdigits = col.bytes().take_while(u8::is_ascii_digit).count();
        let end = s.len() - col.len() + cdigits;
        s.replace_range(i..end, "");
    }
    if let Some(i) = s.find(": ") {
        let prefix = &s[..i];
        if !prefix.is_empty() && !prefix.contains([' ', '`', '"']) {
            s.replace_range(..i + 2, "");
        }
    }
    for (rust, plain) in [
        ("expected u32", "expected a non-negative integer"),
        ("expected u64", "expected a non-negative integer"),
        ("expected i64", "expected an integer"),
    ] {
        if s.ends_with(rust) {
            s.truncate(s.len() - rust.len());
            s.push_str(plain);
        }
    }
    if let Some(hint) = did_you_mean(&s) {
        s.push_str(&format!("; did you mean `{hint}`?"));
    }
    s
}

/// For serde's "unknown field `x`, expected one of `a`, `b`" (or variant): the closest expected name.
fn did_you_mean(message: &str) -> Option<String> {
    let rest = message.strip_prefix("unknown field `").or_else(|| message.strip_prefix("unknown variant `"))?;
    let (got, expected) = rest.split_once('`')?;
    let lower = got.to_ascii_lowercase();
    expected
        .split('`')
        .skip(1)
        .step_by(2)
        .map(|cand| (edit_distance(&lower, &cand.to_ascii_lowercase()), cand))
        .filter(|&(d, _)| d <= (got.len() / 3).max(1))
        .min_by_key(|&(d, _)| d)
        .map(|(_, cand)| cand.to_owned())
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            cur[j + 1] = (prev[j] + usize::from(ca != *cb)).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Renders a serde_path_to_error path in our field-path syntax.
fn render_path(path: &serde_path_to_error::Path) -> String {
    use serde_path_to_error::Segment;
    let mut out = String::new();
    for seg in path.iter() {
        match seg {
            Segment::Seq { index } => out = join_index(&out, *index),
            Segment::Map { key } => out = join_key(&out, key),
            Segment::Enum { .. } | Segment::Unknown => {}
        }
    }
    out
}

fn prefixed(prefix: &str, path: &str) -> String {
    match (prefix.is_empty(), path.is_empty()) {
        (true, _) => path.to_owned(),
        (false, true) => prefix.to_owned(),
        (false, false) if path.starts_with('[') => format!("{prefix}{path}"),
        (false, false) => format!("{prefix}.{path}"),
    }
}

struct DeError {
    path: String,
    message: String,
    /// 1-based (line, column) within the document, when serde_yaml knows it.
    position: Option<(usize, usize)>,
}

fn de<'de, T: DeserializeOwned, D: Deserializer<'de, Error = serde_yaml::Error>>(d: D) -> Result<T, DeError> {
    serde_path_to_error::deserialize(d).map_err(|e| {
        let path = render_path(e.path());
        let inner = e.into_inner();
        DeError { path, message: clean_message(&inner), position: inner.location().map(|l| (l.line(), l.column())) }
    })
}

fn deserialize_object<'de, D: Deserializer<'de, Error = serde_yaml::Error>>(
    kind: Kind,
    d: D,
) -> Result<Object, DeError> {
    Ok(match kind {
        Kind::Deployment => Object::Deployment(de(d).map_err(rollout_hint)?),
        Kind::Service => Object::Service(de(d)?),
        Kind::Job => Object::Job(de(d)?),
        Kind::DaemonSet => Object::DaemonSet(de(d)?),
        Kind::Rollout => Object::Rollout(de(d)?),
        Kind::AnalysisTemplate => Object::AnalysisTemplate(de(d)?),
        Kind::HorizontalPodAutoscaler => Object::HorizontalPodAutoscaler(de(d)?),
        Kind::PersistentVolumeClaim => Object::PersistentVolumeClaim(de(d)?),
        Kind::StorageClass => Object::StorageClass(de(d)?),
    })
}

/// Argo's fields on a Deployment are unknown fields; says where they belong.
fn rollout_hint(mut e: DeError) -> DeError {
    let argo = matches!(e.path.as_str(), "spec.analysis" | "spec.strategy.canary" | "spec.strategy.blueGreen");
    if argo && e.message.starts_with("unknown field") {
        e.message.push_str("; canary and blue-green rollouts are `kind: Rollout` (apiVersion argoproj.io/v1alpha1)");
    }
    e
}

/// Checks `apiVersion` and `kind` of one object (a document or a List item).
fn type_meta(map: &serde_yaml::Mapping) -> Result<Kind, (&'static str, String)> {
    let supported = "Deployment, Service, Job, DaemonSet, Rollout, AnalysisTemplate, HorizontalPodAutoscaler, \
         PersistentVolumeClaim, StorageClass (or a List of them)";
    let kind = match map.get("kind") {
        None => return Err(("kind", format!("is required: one of {supported}"))),
        Some(Value::String(k)) => k.as_str(),
        Some(_) => return Err(("kind", "must be a string".to_owned())),
    };
    let Some(parsed) = Kind::ALL.into_iter().find(|k| k.as_str() == kind) else {
        let msg = match (Kind::parse(kind), kind) {
            (Some(k), _) => format!("unknown kind {kind:?}: did you mean {k}? (kinds are case-sensitive)"),
            (None, "Pod" | "ReplicaSet") => {
                format!(
                    "kind {kind} is not supported by wasmfleet: use a Deployment (or a Job for run-to-completion work)"
                )
            }
            (None, "StatefulSet") => "kind StatefulSet is not supported by wasmfleet: use a Deployment with \
                                      `replicas: 1` and a PersistentVolumeClaim (class `replicated` survives its node)"
                .to_owned(),
            (None, "PersistentVolume") => "kind PersistentVolume is not supported by wasmfleet: volumes are \
                                           provisioned for each PersistentVolumeClaim by its StorageClass"
                .to_owned(),
            (None, "ClusterAnalysisTemplate") => "kind ClusterAnalysisTemplate is not supported by wasmfleet: \
                                                  use an AnalysisTemplate in the Rollout's namespace"
                .to_owned(),
            (None, "AnalysisRun" | "Experiment") => format!(
                "kind {kind} is not supported by wasmfleet: analysis runs are started by a Rollout; apply an \
                 AnalysisTemplate and reference it from the Rollout's steps"
            ),
            (None, _) => format!("kind {kind:?} is not supported by wasmfleet: expected one of {supported}"),
        };
        return Err(("kind", msg));
    };
    let want = parsed.api_version();
    match map.get("apiVersion") {
        None => Err(("apiVersion", format!("is required: {parsed} objects use apiVersion {want}"))),
        Some(Value::String(v)) if v == want => Ok(parsed),
        Some(Value::String(v)) => {
            Err(("apiVersion", format!("{parsed} is not served by {v:?}: use apiVersion {want}")))
        }
        Some(_) => Err(("apiVersion", format!("must be a string: {parsed} objects use apiVersion {want}"))),
    }
}

/// Parses every document of `text`, collecting objects and errors.
struct FileParser<'a> {
    source: &'a str,
    /// Each valid object, its document number and the file position of its `metadata.name`.
    objects: Vec<(Object, usize, Option<Position>)>,
    errors: Vec<ManifestError>,
}

/// One document being parsed: where it is, and what it says it is.
struct DocCtx<'a> {
    number: usize,
    doc: &'a Document,
    locator: Option<Locator>,
}

impl DocCtx<'_> {
    fn locate(&mut self, path: &str) -> Option<(usize, usize)> {
        let text = &self.doc.text;
        self.locator.get_or_insert_with(|| Locator::new(text)).find(path)
    }

    fn locate_value(&mut self, path: &str) -> Option<(usize, usize)> {
        let text = &self.doc.text;
        self.locator.get_or_insert_with(|| Locator::new(text)).find_value(path)
    }
}

impl FileParser<'_> {
    fn error(
        &mut self,
        ctx: &mut DocCtx<'_>,
        item: Option<&Value>,
        path: String,
        message: String,
        position: Option<(usize, usize)>,
    ) {
        let position = position.or_else(|| ctx.locate(&path));
        let str_at = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_owned);
        self.errors.push(ManifestError {
            source: self.source.to_owned(),
            document: ctx.number,
            kind: str_at(item.and_then(|v| v.get("kind"))),
            name: str_at(item.and_then(|v| v.get("metadata")).and_then(|m| m.get("name"))),
            path,
            message,
            line: position.map(|(l, _)| l + ctx.doc.first_line - 1),
            column: position.map(|(_, c)| c),
        });
    }

    fn document(&mut self, number: usize, doc: &Document) {
        let mut ctx = DocCtx { number, doc, locator: None };
        let value: Value = match serde_yaml::from_str(&doc.text) {
            Ok(v) => v,
            Err(e) => {
                let pos = e.location().map(|l| (l.line(), l.column()));
                self.error(&mut ctx, None, String::new(), format!("invalid YAML: {}", clean_message(&e)), pos);
                return;
            }
        };
        if value.is_null() {
            return;
        }
        let Some(map) = value.as_mapping() else {
            let msg = "expected a Kubernetes object: a mapping with apiVersion, kind, metadata and spec";
            self.error(&mut ctx, None, String::new(), msg.to_owned(), Some((1, 1)));
            return;
        };
        if map.get("kind").and_then(Value::as_str) == Some("List") {
            self.list(&mut ctx, &value);
            return;
        }
        let kind = match type_meta(map) {
            Ok(k) => k,
            Err((path, msg)) => return self.error(&mut ctx, Some(&value), path.to_owned(), msg, None),
        };
        let parsed = deserialize_object(kind, serde_yaml::Deserializer::from_str(&doc.text));
        self.typed(&mut ctx, &value, "", parsed);
    }

    /// `kind: List` with `items`, as `kubectl get -o yaml` prints several objects.
    fn list(&mut self, ctx: &mut DocCtx<'_>, value: &Value) {
        let Some(map) = value.as_mapping() else { return };
        for key in map.keys() {
            let key = key.as_str().unwrap_or("");
            if !matches!(key, "apiVersion" | "kind" | "items" | "metadata") {
                let msg = format!("unknown field `{key}`, expected one of `apiVersion`, `kind`, `metadata`, `items`");
                self.error(ctx, Some(value), key.to_owned(), msg, None);
            }
        }
        match map.get("apiVersion").and_then(Value::as_str) {
            Some("v1") => {}
            _ => self.error(ctx, Some(value), "apiVersion".into(), "a List uses apiVersion v1".into(), None),
        }
        let items = match map.get("items") {
            Some(Value::Sequence(items)) => items,
            Some(Value::Null) | None => return,
            Some(_) => {
                return self.error(ctx, Some(value), "items".into(), "must be a list of objects".into(), None);
            }
        };
        for (i, item) in items.iter().enumerate() {
            let prefix = join_index("items", i);
            let Some(imap) = item.as_mapping() else {
                self.error(ctx, Some(item), prefix, "expected a Kubernetes object".into(), None);
                continue;
            };
            let kind = match type_meta(imap) {
                Ok(k) => k,
                Err((path, msg)) => {
                    self.error(ctx, Some(item), prefixed(&prefix, path), msg, None);
                    continue;
                }
            };
            let parsed = deserialize_object(kind, item.clone());
            self.typed(ctx, item, &prefix, parsed);
        }
    }

    /// Reports a deserialization error, or validates the object and keeps it.
    fn typed(&mut self, ctx: &mut DocCtx<'_>, value: &Value, prefix: &str, parsed: Result<Object, DeError>) {
        match parsed {
            Err(e) => self.error(ctx, Some(value), prefixed(prefix, &e.path), e.message, e.position),
            Ok(object) => {
                let issues = validate(&object);
                if issues.is_empty() {
                    let position = ctx.locate(&prefixed(prefix, "metadata.name"));
                    let position = position.map(|(l, c)| (l + ctx.doc.first_line - 1, c));
                    self.objects.push((object, ctx.number, position));
                }
                for issue in issues {
                    let path = prefixed(prefix, &issue.path);
                    let position = if issue.at_key { None } else { ctx.locate_value(&path) };
                    self.error(ctx, Some(value), path, issue.message, position);
                }
            }
        }
    }
}

/// Parses and validates every document of a manifest file.
///
/// `source` names the file in errors (`-` for standard input). Returns every object, in file
/// order, or every error found (never a partial result). Empty and comment-only documents are
/// skipped; a file with no objects is an error.
pub fn parse_str(source: &str, text: &str) -> Result<Vec<Object>, Vec<ManifestError>> {
    let mut p = FileParser { source, objects: Vec::new(), errors: Vec::new() };
    let mut number = 0;
    for doc in split_documents(text) {
        if is_blank(&doc.text) {
            continue;
        }
        number += 1;
        p.document(number, &doc);
    }

    let mut seen: std::collections::BTreeMap<ObjectKey, usize> = std::collections::BTreeMap::new();
    for (object, number, position) in &p.objects {
        if let Some(first) = seen.insert(object.key(), *number) {
            p.errors.push(ManifestError {
                source: source.to_owned(),
                document: *number,
                kind: Some(object.kind().as_str().to_owned()),
                name: Some(object.name().to_owned()),
                path: "metadata.name".into(),
                message: format!("duplicate object {}: also defined in document {first}", object.key()),
                line: position.map(|(l, _)| l),
                column: position.map(|(_, c)| c),
            });
        }
    }

    if !p.errors.is_empty() {
        let mut errors = p.errors;
        errors.sort_by_key(|e| (e.document, e.line.unwrap_or(usize::MAX)));
        return Err(errors);
    }
    if p.objects.is_empty() {
        return Err(vec![ManifestError {
            source: source.to_owned(),
            document: 0,
            kind: None,
            name: None,
            path: String::new(),
            message: "no objects found: expected YAML documents with apiVersion, kind, metadata and spec".into(),
            line: None,
            column: None,
        }]);
    }
    Ok(p.objects.into_iter().map(|(o, _, _)| o).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_documents_with_file_lines() {
        let docs = split_documents("# head\n---\na: 1\n---   # c\n\nb: 2\n--- c: 3\n...\n");
        let got: Vec<(usize, &str)> = docs.iter().map(|d| (d.first_line, d.text.as_str())).collect();
        assert_eq!(got, vec![(1, "# head\n"), (3, "a: 1\n"), (5, "\nb: 2\n"), (7, "    c: 3\n"), (9, "")]);
    }

    #[test]
    fn suggestions() {
        assert_eq!(
            did_you_mean("unknown field `protocl`, expected one of `name`, `protocol`, `port`").as_deref(),
            Some("protocol")
        );
        assert_eq!(
            did_you_mean("unknown variant `onfailure`, expected one of `Always`, `OnFailure`").as_deref(),
            Some("OnFailure")
        );
        assert_eq!(did_you_mean("unknown field `zzz`, expected `name` or `port`"), None);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
    }

    #[test]
    fn empty_file_is_an_error() {
        let errs = parse_str("e.yaml", "# nothing\n---\n").unwrap_err();
        assert_eq!(errs.len(), 1);
        assert!(errs[0].to_string().starts_with("e.yaml: no objects found"), "{}", errs[0]);
    }
}
