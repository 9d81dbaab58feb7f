//! A `Rollout` (canary, blue/green) as Argo's kubectl plugin shows it: the `get rollouts`
//! columns and the `describe rollout` lines (strategy, step, weights, analysis runs). Pure:
//! each takes the object view and returns text.

use wasmfleet_scheduler::rollout::progressive::{Outcome, Phase, Progress};

use crate::control::api::ObjectView;
use crate::reconcile::RolloutView;

use super::print::{age_at, format_table};

/// `NAME STRATEGY STATUS STEP SET-WEIGHT READY UP-TO-DATE AVAILABLE AGE`.
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
                format!("{}/{}", r.counts.ready, r.replicas),
                r.counts.updated.to_string(),
                r.counts.available.to_string(),
                age_at(now_ms, o.created_ms),
            ]
        })
        .collect();
    let h = ["NAME", "STRATEGY", "STATUS", "STEP", "SET-WEIGHT", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"];
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
