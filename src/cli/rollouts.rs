//! A `Rollout` (canary, blue/green) as Argo's kubectl plugin shows it: the `get rollouts`
//! columns and the `describe rollout` lines (strategy, step, weights, analysis runs). Pure:
//! each takes the object view and returns text.

use wasmfleet_scheduler::rollout::progressive::{Outcome, Phase, Progress};

use crate::control::api::ObjectView;
use crate::reconcile::RolloutView;

use super::print::{age_at, format_table};

/// `NAME STRATEGY STATUS STEP SET-WEIGHT READY DESIRED UP-TO-DATE AVAILABLE AGE`, as Argo's
/// `list rollouts` (READY: ready of the replicas that run, every revision counted).
pub(super) fn table(objs: &[ObjectView], now_ms: u64) -> String {
    let rows: Vec<Vec<String>> = objs
        .iter()
        .map(|o| {
            let r = o.status.rollout.clone().unwrap_or_default();
            let p = r.progress.clone().unwrap_or_default();
            vec![
                o.key.name.clone(),
                r.strategy.clone(),
                phase(&p).to_string(),
                step(&r, &p),
                p.weight.to_string(),
                format!("{}/{}", r.counts.ready, r.counts.replicas),
                r.replicas.to_string(),
                r.counts.updated.to_string(),
                r.counts.available.to_string(),
                age_at(now_ms, o.created_ms),
            ]
        })
        .collect();
    let h = ["NAME", "STRATEGY", "STATUS", "STEP", "SET-WEIGHT", "READY", "DESIRED", "UP-TO-DATE", "AVAILABLE", "AGE"];
    format_table(&h, &rows)
}

fn phase(p: &Progress) -> &'static str {
    match p.phase {
        Phase::Progressing => "Progressing",
        Phase::Paused => "Paused",
        Phase::Healthy => "Healthy",
        Phase::Degraded => "Degraded",
    }
}

/// `2/4` while a canary walks its steps, `-` otherwise.
fn step(r: &RolloutView, p: &Progress) -> String {
    if r.steps.is_empty() || p.canary.is_none() {
        return "-".into();
    }
    format!("{}/{}", (p.step as usize).min(r.steps.len()), r.steps.len())
}

/// The lines `describe rollout` adds: status, strategy, steps, revisions and analysis runs.
pub(super) fn describe(r: &RolloutView) -> String {
    let p = r.progress.clone().unwrap_or_default();
    let mut out = String::new();
    let mut line = |s: String| {
        out.push_str(&s);
        out.push('\n');
    };
    line(format!(
        "Status:\t{}{}",
        phase(&p),
        if p.message.is_empty() { String::new() } else { format!(" ({})", p.message) }
    ));
    line(format!("Strategy:\t{}", r.strategy));
    if !r.steps.is_empty() {
        line(format!("  Step:\t{}", step(r, &p)));
        line(format!("  SetWeight:\t{}", p.weight));
        line("  Steps:".into());
        for (i, s) in r.steps.iter().enumerate() {
            let mark = match (p.canary.is_some(), i.cmp(&(p.step as usize))) {
                (true, std::cmp::Ordering::Less) => "done",
                (true, std::cmp::Ordering::Equal) => "current",
                _ => "",
            };
            line(format!("    {i}:\t{s}\t{mark}"));
        }
    }
    line(format!(
        "Replicas:\t{} desired | {} updated | {} total | {} available",
        r.replicas, r.counts.updated, r.counts.replicas, r.counts.available
    ));
    let short = |hash: &str| {
        r.revisions.iter().find(|v| v.hash == hash).map(|v| format!("{} (revision {})", v.name, v.revision))
    };
    line(format!("Stable:\t{}", short(&p.stable).unwrap_or_else(|| "<none>".into())));
    line(format!("Canary:\t{}", p.canary.as_deref().and_then(short).unwrap_or_else(|| "<none>".into())));
    if let Some((old, _)) = &p.scale_down {
        line(format!("Scaling down:\t{}", short(old).unwrap_or_else(|| old.clone())));
    }
    if !p.runs.is_empty() {
        line("Analysis:".into());
        for run in &p.runs {
            line(format!(
                "  {}\t{:?}\t{}{} measurement(s)",
                run.metric.name,
                run.phase,
                if run.background { "background, " } else { "" },
                run.measurements.len()
            ));
            for m in run.measurements.iter().rev().take(3) {
                let outcome = match m.outcome {
                    Outcome::Successful => "Successful",
                    Outcome::Failed => "Failed",
                    Outcome::Inconclusive => "Inconclusive",
                };
                line(format!("    {outcome}\t{}", m.value));
            }
        }
    }
    if let Some(c) = &r.coordinator {
        line(format!("Coordinator:\t{c} (epoch {})", r.epoch));
    }
    out
}

#[cfg(test)]
mod tests {
    use wasmfleet_scheduler::rollout::Counts;
    use wasmfleet_scheduler::rollout::progressive::{Phase, Progress};

    use super::*;
    use crate::manifest::{Kind, ObjectKey};
    use crate::reconcile::ObjectStatus;

    fn canary() -> RolloutView {
        RolloutView {
            replicas: 4,
            strategy: "Canary".into(),
            counts: Counts { replicas: 6, updated: 2, ready: 6, available: 6, unavailable: 0 },
            steps: vec![
                "setWeight: 20".into(),
                "analysis: t/m".into(),
                "setWeight: 50".into(),
                "pause: until promoted".into(),
            ],
            progress: Some(Progress {
                stable: "aaa".into(),
                canary: Some("bbb".into()),
                step: 3,
                weight: 50,
                phase: Phase::Paused,
                message: "CanaryPauseStep: paused until promoted".into(),
                ..Progress::default()
            }),
            ..RolloutView::default()
        }
    }

    #[test]
    fn the_list_reads_as_argos() {
        let o = ObjectView {
            key: ObjectKey::new(Kind::Rollout, "default", "web"),
            object: serde_json::Value::Null,
            resolved: Default::default(),
            generation: 2,
            version: String::new(),
            created_ms: 0,
            status: ObjectStatus { rollout: Some(canary()), ..ObjectStatus::default() },
        };
        let out = table(&[o], 21_000);
        let mut lines = out.lines();
        let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
        assert_eq!(
            header,
            ["NAME", "STRATEGY", "STATUS", "STEP", "SET-WEIGHT", "READY", "DESIRED", "UP-TO-DATE", "AVAILABLE", "AGE"]
        );
        let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
        assert_eq!(row, ["web", "Canary", "Paused", "3/4", "50", "6/6", "4", "2", "6", "21s"]);
    }

    #[test]
    fn describe_marks_the_current_step_and_says_why_it_waits() {
        let out = describe(&canary());
        assert!(out.contains("Status:\tPaused (CanaryPauseStep: paused until promoted)"), "{out}");
        assert!(out.contains("    2:\tsetWeight: 50\tdone"), "{out}");
        assert!(out.contains("    3:\tpause: until promoted\tcurrent"), "{out}");
    }
}
