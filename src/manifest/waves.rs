//! A Deployment's rollout waves: the annotations on its own metadata (not the pod
//! template's: they steer the rollout, not a replica, and changing them makes no revision).
//!
//! - `wasmfleet.io/rollout-waves: <node label>` splits the replicas between the values of
//!   that label (`zone` also matches a node's `--zone`), and a rolling update finishes one
//!   value before it starts the next. Nodes without the label run none of its replicas, as
//!   Kubernetes' topology spread skips nodes without the topology key.
//! - `wasmfleet.io/rollout-wave-order: site-1, eu, us`: these values go first, in this order;
//!   any other value after them, by name.
//! - `wasmfleet.io/rollout-wave-pause: 2m`: wait this long after a wave before the next.
//! - `wasmfleet.io/rollout-wave-analysis: template[, template]`: AnalysisTemplates that must
//!   succeed on the new revision's traffic before each next wave; a failure halts the rollout.

use std::collections::BTreeMap;
use std::time::Duration;

use super::quantity::parse_duration;

pub const ANNOTATION_ROLLOUT_WAVES: &str = "wasmfleet.io/rollout-waves";
pub const ANNOTATION_WAVE_ORDER: &str = "wasmfleet.io/rollout-wave-order";
pub const ANNOTATION_WAVE_PAUSE: &str = "wasmfleet.io/rollout-wave-pause";
pub const ANNOTATION_WAVE_ANALYSIS: &str = "wasmfleet.io/rollout-wave-analysis";

/// The wasmfleet annotations a Deployment's own metadata may carry.
pub(crate) const WAVE_ANNOTATIONS: [&str; 4] =
    [ANNOTATION_ROLLOUT_WAVES, ANNOTATION_WAVE_ORDER, ANNOTATION_WAVE_PAUSE, ANNOTATION_WAVE_ANALYSIS];

/// A Deployment's waves, as its annotations ask.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WaveSettings {
    /// The node label whose values are the waves.
    pub label: String,
    /// Values that go first, in this order.
    pub order: Vec<String>,
    pub pause: Duration,
    /// AnalysisTemplate names.
    pub analysis: Vec<String>,
}

impl WaveSettings {
    /// The waves' order: `values` (each once) with the listed ones first.
    pub fn ordered<'a>(&self, values: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
        let mut v: Vec<&str> = values.into_iter().collect();
        v.sort_unstable();
        v.dedup();
        let rank = |x: &str| self.order.iter().position(|o| o == x).unwrap_or(usize::MAX);
        v.sort_by_key(|x| rank(x));
        v
    }
}

/// The wave settings of a Deployment with these metadata annotations (None without
/// `rollout-waves`). Values are checked at apply ([`check`]); here a bad one is skipped.
pub fn wave_settings(annotations: &BTreeMap<String, String>) -> Option<WaveSettings> {
    let label = annotations.get(ANNOTATION_ROLLOUT_WAVES)?.trim().to_string();
    Some(WaveSettings {
        label,
        order: annotations.get(ANNOTATION_WAVE_ORDER).map(|v| list(v)).unwrap_or_default(),
        pause: annotations.get(ANNOTATION_WAVE_PAUSE).and_then(|v| parse_duration(v).ok()).unwrap_or_default(),
        analysis: annotations.get(ANNOTATION_WAVE_ANALYSIS).map(|v| list(v)).unwrap_or_default(),
    })
}

fn list(v: &str) -> Vec<String> {
    v.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_string).collect()
}

/// Checks one wave annotation's value.
pub(crate) fn check(key: &str, value: &str) -> Result<(), String> {
    match key {
        ANNOTATION_ROLLOUT_WAVES => label_key(value.trim()),
        ANNOTATION_WAVE_ORDER => {
            for v in list(value) {
                label_value(&v)?;
            }
            Ok(())
        }
        ANNOTATION_WAVE_PAUSE => parse_duration(value).map(drop),
        ANNOTATION_WAVE_ANALYSIS => {
            if list(value).is_empty() {
                return Err("expected AnalysisTemplate names, comma-separated".into());
            }
            for name in list(value) {
                super::validate::dns_label(&name)?;
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// A Kubernetes label key: `[prefix/]name`, the name at most 63 characters of alphanumerics,
/// `-`, `_` and `.`, starting and ending alphanumeric.
fn label_key(key: &str) -> Result<(), String> {
    let name = key.rsplit_once('/').map_or(key, |(_, n)| n);
    let ok = |s: &str| {
        !s.is_empty()
            && s.len() <= 63
            && s.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
            && s.starts_with(|c: char| c.is_ascii_alphanumeric())
            && s.ends_with(|c: char| c.is_ascii_alphanumeric())
    };
    if ok(name) && key.len() <= 316 {
        Ok(())
    } else {
        Err(format!("invalid node label key {key:?}: expected a label key such as \"zone\" or \"example.com/site\""))
    }
}

fn label_value(v: &str) -> Result<(), String> {
    let ok = v.len() <= 63
        && v.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && v.starts_with(|c: char| c.is_ascii_alphanumeric())
        && v.ends_with(|c: char| c.is_ascii_alphanumeric());
    if ok { Ok(()) } else { Err(format!("invalid label value {v:?}")) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_read_the_annotations_and_order_the_waves() {
        let ann: BTreeMap<String, String> = [
            (ANNOTATION_ROLLOUT_WAVES, "zone"),
            (ANNOTATION_WAVE_ORDER, "canary-site, eu"),
            (ANNOTATION_WAVE_PAUSE, "30s"),
            (ANNOTATION_WAVE_ANALYSIS, "success-rate"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let s = wave_settings(&ann).unwrap();
        assert_eq!(s.label, "zone");
        assert_eq!(s.pause, Duration::from_secs(30));
        assert_eq!(s.analysis, ["success-rate"]);
        assert_eq!(s.ordered(["us", "eu", "asia", "canary-site", "eu"]), ["canary-site", "eu", "asia", "us"]);
        assert!(wave_settings(&BTreeMap::new()).is_none());
    }

    #[test]
    fn bad_values_are_named() {
        assert!(check(ANNOTATION_ROLLOUT_WAVES, "example.com/site").is_ok());
        assert!(check(ANNOTATION_ROLLOUT_WAVES, "").unwrap_err().contains("label key"));
        assert!(check(ANNOTATION_ROLLOUT_WAVES, "a b").is_err());
        assert!(check(ANNOTATION_WAVE_ORDER, "eu, -us").unwrap_err().contains("\"-us\""));
        assert!(check(ANNOTATION_WAVE_PAUSE, "soon").unwrap_err().contains("duration"));
        assert!(check(ANNOTATION_WAVE_ANALYSIS, " , ").is_err());
        assert!(check(ANNOTATION_WAVE_ANALYSIS, "Bad_Name").is_err());
    }
}
