//! `rollout history`: the revisions of a Deployment as kubectl lists them, and one revision's
//! pod template.

use std::collections::BTreeMap;

use crate::reconcile::RolloutView;
use crate::reconcile::rollouts::CHANGE_CAUSE;

use super::tabs::align;
use super::template::pod_template;

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum HistoryError {
    #[error("unable to find the specified revision")]
    UnknownRevision { revision: u64 },
}

/// `deployment.apps/web`, then `REVISION  CHANGE-CAUSE` and a row per revision, oldest first
/// (with kubectl's blank line at the end).
pub(super) fn history(kubectl_name: &str, r: &RolloutView) -> String {
    let mut revisions: Vec<_> = r.revisions.iter().collect();
    revisions.sort_by_key(|v| v.revision);
    let mut table = String::from("REVISION\tCHANGE-CAUSE\n");
    for v in revisions {
        let cause = v.change_cause.as_deref().filter(|c| !c.is_empty()).unwrap_or("<none>");
        table.push_str(&format!("{}\t{cause}\n", v.revision));
    }
    format!("{kubectl_name}\n{}\n", align(&table, 2))
}

/// `deployment.apps/web with revision #2` and that revision's pod template, as kubectl prints
/// it (cells end with tabs; kubectl does not align them here).
pub(super) fn revision(kubectl_name: &str, r: &RolloutView, revision: u64) -> Result<String, HistoryError> {
    let v = r.revisions.iter().find(|v| v.revision == revision).ok_or(HistoryError::UnknownRevision { revision })?;
    let labels = BTreeMap::from([("pod-template-hash".to_string(), v.hash.clone())]);
    let annotations: BTreeMap<String, String> =
        v.change_cause.iter().filter(|c| !c.is_empty()).map(|c| (CHANGE_CAUSE.to_string(), c.clone())).collect();
    Ok(format!("{kubectl_name} with revision #{revision}\n{}\n", pod_template(&v.template, labels, annotations)))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::reconcile::RevisionView;

    fn view() -> RolloutView {
        let rev = |revision: u64, hash: &str, cause: Option<&str>, image: &str| RevisionView {
            revision,
            hash: hash.into(),
            name: format!("web-{hash}"),
            change_cause: cause.map(str::to_string),
            image: image.into(),
            template: json!({"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "web", "image": image}]}}),
            ..RevisionView::default()
        };
        RolloutView {
            revisions: vec![
                rev(3, "7c9f", Some("wasmfleet set image deployment/web web=web:3"), "web:3"),
                rev(1, "5d9c", None, "web:1"),
                rev(12, "a1b2", Some(""), "web:12"),
            ],
            ..RolloutView::default()
        }
    }

    #[test]
    fn the_table_is_sorted_and_aligned() {
        let want = "deployment.apps/web
REVISION  CHANGE-CAUSE
1         <none>
3         wasmfleet set image deployment/web web=web:3
12        <none>

";
        assert_eq!(history("deployment.apps/web", &view()), want);
    }

    #[test]
    fn one_revision_shows_its_template() {
        let want = "deployment.apps/web with revision #3
Pod Template:
  Labels:\tapp=web
\tpod-template-hash=7c9f
  Annotations:\tkubernetes.io/change-cause: wasmfleet set image deployment/web web=web:3
  Containers:
   web:
    Image:\tweb:3
    Port:\t<none>
    Host Port:\t<none>
    Environment:\t<none>
    Mounts:\t<none>
  Volumes:\t<none>
  Node-Selectors:\t<none>
  Tolerations:\t<none>

";
        assert_eq!(revision("deployment.apps/web", &view(), 3).unwrap(), want);
        let err = revision("deployment.apps/web", &view(), 7).unwrap_err();
        assert_eq!(err.to_string(), "unable to find the specified revision");
    }
}
