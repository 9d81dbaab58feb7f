//! `rollout status`: kubectl's reading of a Deployment's status, as a pure function of the
//! rollout view, and which lines a watch prints.

use wasmfleet_scheduler::rollout::{ConditionType, REASON_TIMED_OUT};

use crate::reconcile::RolloutView;

/// Where a rollout stands, in kubectl's words.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RolloutStatus {
    /// Still rolling out: `Waiting for deployment "web" rollout to finish: ...`.
    Waiting(String),
    /// `deployment "web" successfully rolled out`.
    Done(String),
}

impl RolloutStatus {
    pub fn line(&self) -> &str {
        match self {
            RolloutStatus::Waiting(l) | RolloutStatus::Done(l) => l,
        }
    }
}

/// A rollout that will not finish by itself.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum StatusError {
    #[error("deployment \"{name}\" exceeded its progress deadline")]
    DeadlineExceeded { name: String },
    #[error("rollout \"{name}\" is degraded: {message}")]
    Degraded { name: String, message: String },
    #[error("deployment \"{name}\" {message}")]
    Halted { name: String, message: String },
}

/// A Rollout's status, as Argo's plugin reads it: `Healthy` ends the watch, `Degraded` fails
/// it, `Progressing` and `Paused` (with the reason) keep it waiting.
pub fn rollout_kind_status(name: &str, rollout: Option<&RolloutView>) -> Result<RolloutStatus, StatusError> {
    use wasmfleet_scheduler::rollout::progressive::Phase;
    let Some(r) = rollout.filter(|r| r.observed_generation >= r.generation) else {
        return Ok(RolloutStatus::Waiting("Waiting for rollout spec update to be observed...".into()));
    };
    let p = r.progress.clone().unwrap_or_default();
    let why = if p.message.is_empty() { String::new() } else { format!(" - {}", p.message) };
    match p.phase {
        Phase::Healthy if p.canary.is_none() && r.counts.available >= r.replicas => {
            Ok(RolloutStatus::Done(format!("rollout \"{name}\" is Healthy")))
        }
        Phase::Degraded => Err(StatusError::Degraded { name: name.to_string(), message: p.message }),
        Phase::Paused => Ok(RolloutStatus::Waiting(format!("Paused{why}"))),
        _ => Ok(RolloutStatus::Waiting(format!("Progressing{why}"))),
    }
}

/// kubectl's `DeploymentStatusViewer`: the status of Deployment `name` from its rollout view
/// (None: the server has not computed one yet).
pub fn rollout_status(name: &str, rollout: Option<&RolloutView>) -> Result<RolloutStatus, StatusError> {
    let Some(r) = rollout.filter(|r| r.observed_generation >= r.generation) else {
        return Ok(RolloutStatus::Waiting("Waiting for deployment spec update to be observed...".into()));
    };
    let progressing = r.conditions.iter().find(|c| c.type_ == ConditionType::Progressing);
    if progressing.is_some_and(|c| c.reason == REASON_TIMED_OUT) {
        return Err(StatusError::DeadlineExceeded { name: name.to_string() });
    }
    let c = &r.counts;
    let waiting = |what: String| {
        Ok(RolloutStatus::Waiting(format!("Waiting for deployment \"{name}\" rollout to finish: {what}...")))
    };
    // A Deployment rolled out in waves: halted by a failed analysis, or waiting at a gate.
    if let Some(w) = r.waves.as_ref().filter(|w| !w.message.is_empty()) {
        if w.phase == "Degraded" {
            return Err(StatusError::Halted { name: name.to_string(), message: w.message.clone() });
        }
        return waiting(w.message.clone());
    }
    if c.updated < r.replicas {
        return waiting(format!("{} out of {} new replicas have been updated", c.updated, r.replicas));
    }
    if c.replicas > c.updated {
        return waiting(format!("{} old replicas are pending termination", c.replicas - c.updated));
    }
    if c.available < c.updated {
        return waiting(format!("{} of {} updated replicas are available", c.available, c.updated));
    }
    Ok(RolloutStatus::Done(format!("deployment \"{name}\" successfully rolled out")))
}

/// What a watch prints: a waiting line when it differs from the last one printed, and the
/// final line.
#[derive(Debug, Default)]
pub struct StatusWatch {
    last: Option<String>,
}

impl StatusWatch {
    /// The line to print for `status`, if any.
    pub fn handle_status(&mut self, status: &RolloutStatus) -> Option<String> {
        let line = status.line();
        if matches!(status, RolloutStatus::Waiting(_)) && self.last.as_deref() == Some(line) {
            return None;
        }
        self.last = Some(line.to_string());
        Some(line.to_string())
    }
}

#[cfg(test)]
mod tests {
    use wasmfleet_scheduler::rollout::{Condition, ConditionStatus, Counts};

    use super::*;

    fn view(replicas: u32, counts: (u32, u32, u32)) -> RolloutView {
        let (total, updated, available) = counts;
        RolloutView {
            generation: 2,
            observed_generation: 2,
            replicas,
            counts: Counts {
                replicas: total,
                updated,
                ready: available,
                available,
                unavailable: replicas.saturating_sub(available),
            },
            ..RolloutView::default()
        }
    }

    fn line(r: Option<&RolloutView>) -> String {
        rollout_status("web", r).unwrap().line().to_string()
    }

    #[test]
    fn kubectl_lines() {
        assert_eq!(line(None), "Waiting for deployment spec update to be observed...");
        let mut stale = view(3, (3, 3, 3));
        stale.observed_generation = 1;
        assert_eq!(line(Some(&stale)), "Waiting for deployment spec update to be observed...");
        assert_eq!(
            line(Some(&view(3, (4, 1, 1)))),
            "Waiting for deployment \"web\" rollout to finish: 1 out of 3 new replicas have been updated..."
        );
        assert_eq!(
            line(Some(&view(3, (4, 3, 2)))),
            "Waiting for deployment \"web\" rollout to finish: 1 old replicas are pending termination..."
        );
        assert_eq!(
            line(Some(&view(3, (3, 3, 2)))),
            "Waiting for deployment \"web\" rollout to finish: 2 of 3 updated replicas are available..."
        );
        assert_eq!(
            rollout_status("web", Some(&view(3, (3, 3, 3)))),
            Ok(RolloutStatus::Done("deployment \"web\" successfully rolled out".into()))
        );
    }

    #[test]
    fn a_rollout_past_its_deadline_is_an_error() {
        let mut r = view(3, (4, 1, 1));
        r.conditions.push(Condition {
            type_: ConditionType::Progressing,
            status: ConditionStatus::False,
            reason: REASON_TIMED_OUT.into(),
            message: "ReplicaSet \"web-abc\" has timed out progressing.".into(),
            last_update_ms: 0,
            last_transition_ms: 0,
        });
        let err = rollout_status("web", Some(&r)).unwrap_err();
        assert_eq!(err.to_string(), "deployment \"web\" exceeded its progress deadline");
    }

    #[test]
    fn a_wave_gate_waits_and_a_halted_wave_rollout_is_an_error() {
        use crate::reconcile::rollouts::WavesView;
        let mut r = view(6, (7, 3, 2));
        r.waves = Some(WavesView {
            label: "zone".into(),
            current: 2,
            message: "wave 2 of 3 waits for its analysis".into(),
            phase: "Progressing".into(),
            ..WavesView::default()
        });
        assert_eq!(
            line(Some(&r)),
            "Waiting for deployment \"web\" rollout to finish: wave 2 of 3 waits for its analysis..."
        );
        let w = r.waves.as_mut().unwrap();
        w.phase = "Degraded".into();
        w.message = "rollout halted before wave 2 of 3: analysis t/ok failed".into();
        let err = rollout_status("web", Some(&r)).unwrap_err();
        assert_eq!(err.to_string(), "deployment \"web\" rollout halted before wave 2 of 3: analysis t/ok failed");
        // Without a gate to wait at, kubectl's words.
        r.waves.as_mut().unwrap().message.clear();
        assert!(line(Some(&r)).contains("3 out of 6 new replicas have been updated"));
    }

    #[test]
    fn a_watch_prints_each_waiting_line_once() {
        let mut w = StatusWatch::default();
        let a = RolloutStatus::Waiting("a".into());
        let b = RolloutStatus::Waiting("b".into());
        assert_eq!(w.handle_status(&a).as_deref(), Some("a"));
        assert_eq!(w.handle_status(&a), None);
        assert_eq!(w.handle_status(&b).as_deref(), Some("b"));
        assert_eq!(w.handle_status(&a).as_deref(), Some("a"));
        assert_eq!(w.handle_status(&RolloutStatus::Done("d".into())).as_deref(), Some("d"));
    }

    #[test]
    fn a_rollout_kind_reads_as_argo_does() {
        use wasmfleet_scheduler::rollout::progressive::{Phase, Progress};
        let at = |phase, message: &str, canary: Option<&str>| RolloutView {
            generation: 2,
            observed_generation: 2,
            replicas: 3,
            counts: Counts { available: 3, ..Counts::default() },
            progress: Some(Progress {
                phase,
                message: message.into(),
                canary: canary.map(str::to_string),
                ..Progress::default()
            }),
            ..RolloutView::default()
        };
        assert_eq!(
            rollout_kind_status("web", Some(&at(Phase::Healthy, "", None))).unwrap().line(),
            "rollout \"web\" is Healthy"
        );
        assert_eq!(
            rollout_kind_status("web", Some(&at(Phase::Paused, "CanaryPauseStep: paused until promoted", Some("c"))))
                .unwrap()
                .line(),
            "Paused - CanaryPauseStep: paused until promoted"
        );
        let err = rollout_kind_status("web", Some(&at(Phase::Degraded, "RolloutAborted: metric failed", Some("c"))));
        assert_eq!(err.unwrap_err().to_string(), "rollout \"web\" is degraded: RolloutAborted: metric failed");
    }
}
