//! The bodies of the API's verbs on Deployments, shared by the server and the CLI:
//! `POST /v1/rollout/{ns}/{name}` takes a [`RolloutAction`], `POST /v1/image/{ns}/{name}` an
//! [`ImageUpdate`]; both answer a [`RolloutAnswer`] (with the durability headers of every
//! write) or the API's `ErrorBody` with 400 or 404.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::control::api::ObjectView;

/// `rollout pause|resume|restart|undo`: `{"action": "undo", "toRevision": 2}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RolloutAction {
    /// One of [`RolloutAction::PAUSE`], [`RolloutAction::RESUME`], [`RolloutAction::RESTART`],
    /// [`RolloutAction::UNDO`].
    pub action: String,
    /// `undo` only: the revision to go back to (absent: the one before the current).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to_revision: Option<u64>,
    /// The object's kind: `Rollout`, or (absent) `Deployment`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
}

impl RolloutAction {
    pub const PAUSE: &str = "pause";
    pub const RESUME: &str = "resume";
    pub const RESTART: &str = "restart";
    pub const UNDO: &str = "undo";
    /// Rollouts only: go past the current pause or analysis.
    pub const PROMOTE: &str = "promote";
    /// Rollouts only: skip every remaining step.
    pub const PROMOTE_FULL: &str = "promote-full";
    /// Rollouts only: send everything back to the stable revision.
    pub const ABORT: &str = "abort";
    /// Rollouts only: start an aborted canary again.
    pub const RETRY: &str = "retry";

    /// `action` with no revision.
    pub fn new(action: &str) -> RolloutAction {
        RolloutAction { action: action.to_string(), to_revision: None, kind: None }
    }

    /// The same action on an object of `kind` (`Rollout`).
    pub fn on(mut self, kind: &str) -> RolloutAction {
        self.kind = Some(kind.to_string());
        self
    }

    /// `undo`, to `to_revision` or (None) the previous revision.
    pub fn undo(to_revision: Option<u64>) -> RolloutAction {
        RolloutAction { action: Self::UNDO.to_string(), to_revision, kind: None }
    }
}

/// `set image`: `{"images": {"web": "web:2.0"}}`; the container `*` means every container.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageUpdate {
    pub images: BTreeMap<String, String>,
}

/// The answer to a rollout verb or `set image`: the object as it is now, and kubectl's line
/// (`deployment.apps/web paused`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RolloutAnswer {
    pub object: ObjectView,
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rollout_action_wire_format() {
        let undo = serde_json::to_value(RolloutAction::undo(Some(2))).unwrap();
        assert_eq!(undo, serde_json::json!({"action": "undo", "toRevision": 2}));
        let pause = serde_json::to_value(RolloutAction::new(RolloutAction::PAUSE)).unwrap();
        assert_eq!(pause, serde_json::json!({"action": "pause"}));
        let back: RolloutAction = serde_json::from_str(r#"{"action":"resume"}"#).unwrap();
        assert_eq!(back, RolloutAction::new(RolloutAction::RESUME));
    }

    #[test]
    fn image_update_wire_format() {
        let u = ImageUpdate { images: [("*".to_string(), "web:2".to_string())].into() };
        assert_eq!(serde_json::to_value(&u).unwrap(), serde_json::json!({"images": {"*": "web:2"}}));
    }
}
