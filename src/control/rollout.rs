//! The rollout verbs of the API: `rollout pause | resume | restart | undo` and `set image`.
//!
//! Each is a change to the Deployment's spec, written like `apply` (a new generation,
//! replicated before the answer); the rollout itself follows from the coordinator's next step.
//! Undo writes the template a revision set keeps back into the spec, with the module digests
//! it had, so the old revision comes back as the next revision number, exactly as it ran.

use std::collections::BTreeMap;

use wasmfleet_runtime::Digest;
use wasmfleet_scheduler::rollout::Set;

use super::api::{Api, ApiError, ObjectView, resolve_image};
use crate::clock::{now_ms, rfc3339};
use crate::manifest::{Deployment, Kind, Object, ObjectKey, PodTemplateSpec, Rollout};
use crate::reconcile::desired::revision_of;
use crate::reconcile::rollouts::{CHANGE_CAUSE, RESTARTED_AT};
use crate::state::RolloutRecord;

/// What a verb did, in kubectl's words (`deployment.apps/web paused`).
pub struct Done {
    pub view: ObjectView,
    pub message: String,
}

/// The revision `undo` goes back to: `to_revision`, or (0 / None) the one before the newest.
/// `Ok(None)`: the current template is that revision already.
pub fn undo_target<'a>(
    name: &str,
    record: Option<&'a RolloutRecord>,
    current_hash: &str,
    to_revision: Option<u64>,
) -> Result<Option<&'a Set>, String> {
    let sets = record.map(|r| r.state.sets.as_slice()).unwrap_or_default();
    let target = match to_revision.filter(|r| *r > 0) {
        Some(n) => sets
            .iter()
            .find(|s| s.revision == n)
            .ok_or_else(|| format!("unable to find specified revision {n} in history"))?,
        None => {
            let mut by_revision: Vec<&Set> = sets.iter().collect();
            by_revision.sort_by_key(|s| std::cmp::Reverse(s.revision));
            *by_revision.get(1).ok_or_else(|| format!("no rollout history found for deployment \"{name}\""))?
        }
    };
    Ok((target.hash != current_hash).then_some(target))
}

/// `deployment.apps/NAME`, `rollout.argoproj.io/NAME`.
fn resource(key: &ObjectKey) -> String {
    match key.kind {
        Kind::Rollout => format!("rollout.argoproj.io/{}", key.name),
        _ => format!("deployment.apps/{}", key.name),
    }
}

/// A Deployment or a Rollout: the fields the verbs change.
enum Rolled {
    Deployment(Box<Deployment>),
    Rollout(Box<Rollout>),
}

impl Rolled {
    fn of(obj: Object) -> Option<Rolled> {
        match obj {
            Object::Deployment(d) => Some(Rolled::Deployment(Box::new(d))),
            Object::Rollout(r) => Some(Rolled::Rollout(Box::new(r))),
            _ => None,
        }
    }

    fn paused(&mut self) -> &mut Option<bool> {
        match self {
            Rolled::Deployment(d) => &mut d.spec.paused,
            Rolled::Rollout(r) => &mut r.spec.paused,
        }
    }

    fn template(&mut self) -> &mut PodTemplateSpec {
        match self {
            Rolled::Deployment(d) => &mut d.spec.template,
            Rolled::Rollout(r) => &mut r.spec.template,
        }
    }

    fn annotations(&mut self) -> &mut BTreeMap<String, String> {
        match self {
            Rolled::Deployment(d) => &mut d.metadata.annotations,
            Rolled::Rollout(r) => &mut r.metadata.annotations,
        }
    }

    fn into_object(self) -> Object {
        match self {
            Rolled::Deployment(d) => Object::Deployment(*d),
            Rolled::Rollout(r) => Object::Rollout(*r),
        }
    }
}

impl Api {
    /// `rollout pause | resume | restart | undo [--to-revision N]` of Deployment `key`.
    pub fn rollout_verb(&self, key: &ObjectKey, action: &str, to_revision: Option<u64>) -> Result<Done, ApiError> {
        let noun = if key.kind == Kind::Rollout { "rollout" } else { "deployment" };
        let not_found = || ApiError::NotFound { what: format!("{noun} {}/{}", key.namespace, key.name) };
        let rec = self.store.get(key)?.ok_or_else(not_found)?;
        let Some(mut d) = rec.typed().and_then(Rolled::of) else { return Err(not_found()) };
        if matches!(action, "promote" | "promote-full" | "abort" | "retry") {
            if key.kind != Kind::Rollout {
                return Err(ApiError::BadRequest(format!(
                    "`{action}` is for Rollouts (canary, blue/green); a Deployment rolls out by itself"
                )));
            }
            self.store.add_verb(key, action)?.ok_or_else(not_found)?;
            let done = match action {
                "promote" => "promoted",
                "promote-full" => "fully promoted",
                "abort" => "aborted",
                _ => "retried",
            };
            return Ok(Done { view: self.get(key)?, message: format!("rollout '{}' {done}", key.name) });
        }
        let mut resolved = rec.resolved.clone();
        let paused = d.paused().unwrap_or(false);
        let quoted = match key.kind {
            Kind::Rollout => format!("rollouts.argoproj.io \"{}\"", key.name),
            _ => format!("deployments.apps \"{}\"", key.name),
        };
        let message = match action {
            "pause" => {
                if paused {
                    return Err(ApiError::BadRequest(format!("{quoted} is already paused")));
                }
                *d.paused() = Some(true);
                format!("{} paused", resource(key))
            }
            "resume" => {
                if !paused {
                    return Err(ApiError::BadRequest(format!("{quoted} is not paused")));
                }
                *d.paused() = None;
                format!("{} resumed", resource(key))
            }
            "restart" => {
                if paused {
                    return Err(ApiError::BadRequest(format!(
                        "{quoted} can't restart paused deployment (run rollout resume first)"
                    )));
                }
                d.template().metadata.annotations.insert(RESTARTED_AT.into(), rfc3339(now_ms()));
                format!("{} restarted", resource(key))
            }
            "undo" => {
                if paused {
                    return Err(ApiError::BadRequest(format!(
                        "you cannot rollback a paused {noun}; resume it first with 'wasmfleet rollout resume \
                         {noun}/{}' and try again",
                        key.name
                    )));
                }
                let record = self.store.rollout_record(key)?;
                let image = d.template().workload().image;
                let digest = resolved.get(&image).copied().unwrap_or(Digest([0; 32]));
                let current = revision_of(d.template(), digest);
                let Some(target) =
                    undo_target(&key.name, record.as_ref(), &current, to_revision).map_err(ApiError::BadRequest)?
                else {
                    let n = to_revision.filter(|r| *r > 0).map(|r| r.to_string()).unwrap_or_else(|| "previous".into());
                    let view = self.get(key)?;
                    return Ok(Done {
                        view,
                        message: format!(
                            "{} skipped rollback (current template already matches revision {n})",
                            resource(key)
                        ),
                    });
                };
                let kept = record.as_ref().and_then(|r| r.templates.get(&target.hash)).ok_or_else(|| {
                    ApiError::Internal(format!("revision {} has no stored template", target.revision))
                })?;
                *d.template() = serde_json::from_value::<PodTemplateSpec>(kept.template.clone())
                    .map_err(|e| ApiError::Internal(format!("revision {}'s template: {e}", target.revision)))?;
                resolved = kept.resolved.clone();
                match &target.change_cause {
                    Some(cause) => d.annotations().insert(CHANGE_CAUSE.into(), cause.clone()),
                    None => d.annotations().remove(CHANGE_CAUSE),
                };
                format!("{} rolled back", resource(key))
            }
            other => {
                return Err(ApiError::BadRequest(format!(
                    "unknown rollout action `{other}`: use pause, resume, restart, undo, promote, abort or retry"
                )));
            }
        };
        self.store.apply(vec![(d.into_object(), resolved)])?;
        Ok(Done { view: self.get(key)?, message })
    }

    /// `set image deployment/NAME CONTAINER=IMAGE...` (`*` names every container).
    pub async fn set_image(&self, key: &ObjectKey, images: BTreeMap<String, String>) -> Result<Done, ApiError> {
        let not_found = || ApiError::NotFound { what: format!("deployment {}/{}", key.namespace, key.name) };
        let rec = self.store.get(key)?.ok_or_else(not_found)?;
        let Some(Object::Deployment(mut d)) = rec.typed() else { return Err(not_found()) };
        if images.is_empty() {
            return Err(ApiError::BadRequest("at least one CONTAINER=IMAGE is required".into()));
        }
        for (container, image) in &images {
            let mut found = false;
            for c in d.spec.template.spec.containers.iter_mut().filter(|c| container == "*" || c.name == *container) {
                c.image.clone_from(image);
                found = true;
            }
            if !found {
                return Err(ApiError::BadRequest(format!("unable to find container named \"{container}\"")));
            }
        }
        let (store, runtime) = (self.store.clone(), self.runtime.clone());
        let mut resolved = rec.resolved.clone();
        let wanted: Vec<String> = d.spec.template.spec.containers.iter().map(|c| c.image.clone()).collect();
        let found = tokio::task::spawn_blocking(move || {
            wanted
                .into_iter()
                .map(|image| resolve_image(&store, &runtime, &image).map(|m| (image, m.digest)))
                .collect::<Result<Vec<_>, String>>()
        })
        .await
        .map_err(|e| ApiError::Internal(e.to_string()))?
        .map_err(ApiError::BadRequest)?;
        resolved.retain(|image, _| d.spec.template.spec.containers.iter().any(|c| c.image == *image));
        resolved.extend(found);
        self.store.apply(vec![(Object::Deployment(d), resolved)])?;
        Ok(Done { view: self.get(key)?, message: format!("{} image updated", resource(key)) })
    }
}

#[cfg(test)]
mod tests {
    use wasmfleet_scheduler::rollout::State;

    use super::*;

    fn record(sets: &[(u64, &str)]) -> RolloutRecord {
        RolloutRecord {
            seq: 1,
            epoch: 1,
            coordinator: "n1".into(),
            generation: 1,
            state: State {
                sets: sets
                    .iter()
                    .map(|(revision, hash)| Set {
                        hash: (*hash).into(),
                        revision: *revision,
                        replicas: 0,
                        change_cause: None,
                        created_ms: 0,
                        waves: Default::default(),
                    })
                    .collect(),
                ..State::default()
            },
            autoscale: None,
            templates: BTreeMap::new(),
            progress: None,
        }
    }

    #[test]
    fn undo_goes_to_the_previous_revision_or_the_one_named() {
        let r = record(&[(1, "a"), (3, "c"), (2, "b")]);
        assert_eq!(undo_target("web", Some(&r), "c", None).unwrap().map(|s| s.revision), Some(2));
        assert_eq!(undo_target("web", Some(&r), "c", Some(1)).unwrap().map(|s| s.revision), Some(1));
        assert_eq!(undo_target("web", Some(&r), "c", Some(3)).unwrap(), None, "already there");
        assert_eq!(
            undo_target("web", Some(&r), "c", Some(9)).unwrap_err(),
            "unable to find specified revision 9 in history"
        );
        let one = record(&[(1, "a")]);
        assert_eq!(
            undo_target("web", Some(&one), "a", None).unwrap_err(),
            "no rollout history found for deployment \"web\""
        );
        assert!(undo_target("web", None, "a", None).is_err());
    }

    #[test]
    fn times_are_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_796_612_645_000), "2026-12-07T03:04:05Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00Z");
    }
}
