//! Canary and blue/green rollouts (the `Rollout` kind of Argo Rollouts) as a pure step.
//!
//! A Rollout runs at most three revision sets: the *stable* one (the last promoted), the
//! *canary* (or blue/green *preview*) of the current template, and, for a little while after
//! a blue/green promotion, the previous active one. [`step`] walks the canary's steps —
//! `setWeight`, `pause`, `analysis` — or the blue/green promotion, from the recorded
//! [`Progress`], the fleet's replicas ([`Observed`]), the analysis runs' results and the
//! operator's verbs ([`Verbs`]), and returns the sizes of the sets and the traffic weight that
//! every gateway applies. Weights are exact at every gateway (they split requests, they do
//! not approximate by replica counts), so a canary's size only has to carry its share.
//!
//! Analysis runs are kept in the progress (every node sees their results); *taking* a
//! measurement is the caller's job ([`AnalysisRun::due`], [`AnalysisRun::record`]): only the
//! coordinator measures, from the figures the gateways publish.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Observed, Set, State};

/// One canary step.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Send this percentage of requests to the canary.
    SetWeight(u32),
    /// Wait this long (ms), or (None) until promoted.
    Pause(Option<u64>),
    /// Run these analyses; go on when all succeed.
    Analysis(Vec<MetricSpec>),
}

/// One metric of an analysis, as its template defines it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetricSpec {
    /// `<template>/<metric>`.
    pub name: String,
    pub interval_ms: u64,
    pub count: u32,
    pub failure_limit: u32,
    pub inconclusive_limit: u32,
}

/// How a Rollout replaces its replicas.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Progressive {
    Canary {
        steps: Vec<Step>,
        /// Analyses that run for the whole canary, from step `starting_step`.
        background: Vec<MetricSpec>,
        starting_step: u32,
    },
    BlueGreen {
        auto_promotion: bool,
        /// Promote this long (ms) after the preview is ready, when set.
        auto_promotion_ms: Option<u64>,
        scale_down_delay_ms: u64,
        preview_replicas: Option<u32>,
    },
}

/// What the Rollout asks for now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RolloutSpec {
    pub replicas: u32,
    pub strategy: Progressive,
    pub template_hash: String,
    pub change_cause: Option<String>,
    pub paused: bool,
    pub revision_history_limit: u32,
    /// How long a step may wait for the canary (or preview) to become available before the
    /// Rollout is `Degraded` with `ProgressDeadlineExceeded` (Argo's default: it is not
    /// aborted; `rollout abort` does that).
    pub progress_deadline_ms: u64,
}

/// Operator verbs since the last step (`rollout promote [--full] | abort | retry`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verbs {
    /// The last `promote`/`abort`/`retry` the step has acted on, by sequence number: a verb is
    /// a counter bumped in the object's spec annotations, acted on once.
    pub promote: u64,
    pub promote_full: u64,
    pub abort: u64,
    pub retry: u64,
}

/// Argo's phases.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Phase {
    #[default]
    Progressing,
    Paused,
    Healthy,
    Degraded,
}

/// Where an analysis run stands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum RunPhase {
    #[default]
    Running,
    Successful,
    Failed,
    Inconclusive,
}

/// One measurement's outcome.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome {
    Successful,
    Failed,
    Inconclusive,
}

/// One measurement, as `describe` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Measurement {
    pub at_ms: u64,
    pub outcome: Outcome,
    /// The figures it was judged on (`successRate=0.998 p99Ms=12.8 requests=912`).
    pub value: String,
}

/// One metric being measured.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnalysisRun {
    pub metric: MetricSpec,
    /// Runs for the whole canary (not one step's).
    pub background: bool,
    pub started_ms: u64,
    /// When the next measurement is due.
    pub next_ms: u64,
    pub measurements: Vec<Measurement>,
    pub phase: RunPhase,
}

impl AnalysisRun {
    pub fn new(metric: MetricSpec, background: bool, now_ms: u64) -> AnalysisRun {
        let next_ms = now_ms + metric.interval_ms;
        AnalysisRun {
            metric,
            background,
            started_ms: now_ms,
            next_ms,
            measurements: Vec::new(),
            phase: RunPhase::Running,
        }
    }

    /// Whether a measurement is due at `now_ms`.
    pub fn due(&self, now_ms: u64) -> bool {
        self.phase == RunPhase::Running && now_ms >= self.next_ms
    }

    /// Records a measurement and settles the run: failed once more measurements failed than
    /// `failureLimit`, inconclusive once more were inconclusive than `inconclusiveLimit`,
    /// successful after `count` measurements otherwise.
    pub fn record(&mut self, outcome: Outcome, value: String, now_ms: u64) {
        if self.phase != RunPhase::Running {
            return;
        }
        self.measurements.push(Measurement { at_ms: now_ms, outcome, value });
        // Keep what `describe` needs, bounded.
        if self.measurements.len() > 20 {
            self.measurements.remove(0);
        }
        self.next_ms = now_ms + self.metric.interval_ms;
        let count = |o: Outcome| self.measurements.iter().filter(|m| m.outcome == o).count() as u32;
        let taken = self.measurements.len() as u32;
        self.phase = if count(Outcome::Failed) > self.metric.failure_limit {
            RunPhase::Failed
        } else if count(Outcome::Inconclusive) > self.metric.inconclusive_limit {
            RunPhase::Inconclusive
        } else if taken >= self.metric.count.max(1) {
            RunPhase::Successful
        } else {
            RunPhase::Running
        };
    }
}

/// A Rollout's progress, recorded with its sets.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// The promoted revision (template hash); empty before the first one.
    pub stable: String,
    /// The revision being rolled out (canary or preview), if any.
    pub canary: Option<String>,
    /// Canary: the step being carried out (`steps.len()` once all are done).
    pub step: u32,
    pub step_started_ms: u64,
    /// Canary: requests to the canary, in percent.
    pub weight: u32,
    pub phase: Phase,
    pub message: String,
    pub aborted: bool,
    pub runs: Vec<AnalysisRun>,
    /// Verbs already acted on.
    pub seen: Verbs,
    /// Blue/green: when the preview became available, and when the old active set goes.
    pub preview_ready_ms: Option<u64>,
    pub scale_down: Option<(String, u64)>,
    /// Promotion to full weight under way (all steps done, or `promote --full`).
    pub promoting: bool,
}

impl Progress {
    /// The weight every gateway applies (permille), and to which revision: `None` when there
    /// is no canary. An aborted canary keeps a split of 0, so gateways that still see its
    /// replicas send them nothing.
    pub fn split(&self) -> Option<(&str, u32)> {
        let canary = self.canary.as_deref()?;
        Some((canary, self.weight.min(100) * 10))
    }
}

/// Computes the next sets and progress. `state` holds the sets (sizes) as recorded.
pub fn step(
    spec: &RolloutSpec,
    state: &State,
    progress: &Progress,
    observed: &BTreeMap<String, Observed>,
    verbs: Verbs,
    now_ms: u64,
) -> (State, Progress) {
    let mut st = state.clone();
    let mut p = progress.clone();
    let seen = |hash: &str| observed.get(hash).copied().unwrap_or_default();
    ensure_set(&mut st, &spec.template_hash, spec.change_cause.as_ref(), now_ms);
    if p.stable.is_empty() {
        // The first template is stable at once, as Argo's first rollout.
        p.stable.clone_from(&spec.template_hash);
    }
    // A new template: a new canary, from the first step.
    if spec.template_hash != p.stable && p.canary.as_deref() != Some(spec.template_hash.as_str()) {
        p.canary = Some(spec.template_hash.clone());
        p.step = 0;
        p.step_started_ms = now_ms;
        p.weight = 0;
        p.aborted = false;
        p.runs.clear();
        p.preview_ready_ms = None;
        p.promoting = false;
        bump_revision(&mut st, &spec.template_hash);
    } else if spec.template_hash == p.stable && p.canary.is_some() {
        // Back to the stable template (an undo, or the canary's template reapplied away).
        p.canary = None;
        p.weight = 0;
        p.runs.clear();
        p.aborted = false;
        p.promoting = false;
    }
    // Verbs.
    let abort = verbs.abort > p.seen.abort;
    let retry = verbs.retry > p.seen.retry;
    let promote = verbs.promote > p.seen.promote;
    let full = verbs.promote_full > p.seen.promote_full;
    p.seen = verbs;
    if abort && p.canary.is_some() {
        p.aborted = true;
        p.message = "RolloutAborted: aborted by the operator".into();
    }
    if retry && p.aborted {
        p.aborted = false;
        p.step = 0;
        p.step_started_ms = now_ms;
        p.runs.clear();
        p.preview_ready_ms = None;
    }
    if full && !p.aborted && p.canary.is_some() {
        p.promoting = true;
    }
    match &spec.strategy {
        Progressive::Canary { steps, background, starting_step } => {
            canary(spec, &mut st, &mut p, steps, background, *starting_step, promote, &seen, now_ms);
        }
        Progressive::BlueGreen { auto_promotion, auto_promotion_ms, scale_down_delay_ms, preview_replicas } => {
            blue_green(
                spec,
                &mut st,
                &mut p,
                (*auto_promotion, *auto_promotion_ms, *scale_down_delay_ms, *preview_replicas),
                promote,
                &seen,
                now_ms,
            );
        }
    }
    st.desired = spec.replicas;
    st.paused = spec.paused;
    prune(spec, &mut st, &p, &seen);
    (st, p)
}

/// Adds a set for `hash` if there is none (size 0).
fn ensure_set(st: &mut State, hash: &str, cause: Option<&String>, now_ms: u64) {
    if st.set(hash).is_none() {
        let revision = st.sets.iter().map(|s| s.revision).max().unwrap_or(0) + 1;
        st.sets.push(Set {
            hash: hash.to_string(),
            revision,
            replicas: 0,
            change_cause: cause.cloned(),
            created_ms: now_ms,
            waves: BTreeMap::new(),
        });
    }
}

/// Gives `hash`'s set the next revision number (a template seen before comes back).
fn bump_revision(st: &mut State, hash: &str) {
    let top = st.sets.iter().map(|s| s.revision).max().unwrap_or(0);
    if let Some(set) = st.sets.iter_mut().find(|s| s.hash == hash)
        && set.revision < top
    {
        set.revision = top + 1;
    }
}

fn size(st: &mut State, hash: &str, replicas: u32) {
    if let Some(s) = st.sets.iter_mut().find(|s| s.hash == hash) {
        s.replicas = replicas;
    }
}

/// Every set but those named to 0.
fn only(st: &mut State, keep: &[&str]) {
    for s in &mut st.sets {
        if !keep.contains(&s.hash.as_str()) {
            s.replicas = 0;
        }
    }
}

/// The canary's size for `weight` percent of `replicas`: enough to carry its share, at least
/// one while it takes traffic.
pub fn canary_size(weight: u32, replicas: u32) -> u32 {
    if weight == 0 { 0 } else { (u64::from(weight) * u64::from(replicas)).div_ceil(100).max(1) as u32 }
}

#[expect(clippy::too_many_arguments, reason = "one step's inputs, taken apart")]
fn canary(
    spec: &RolloutSpec,
    st: &mut State,
    p: &mut Progress,
    steps: &[Step],
    background: &[MetricSpec],
    starting_step: u32,
    promote: bool,
    seen: &impl Fn(&str) -> Observed,
    now_ms: u64,
) {
    let stable = p.stable.clone();
    let Some(canary) = p.canary.clone() else {
        only(st, &[&stable]);
        size(st, &stable, spec.replicas);
        p.weight = 0;
        p.phase = if seen(&stable).available >= spec.replicas { Phase::Healthy } else { Phase::Progressing };
        if p.phase == Phase::Healthy {
            p.message.clear();
        }
        return;
    };
    only(st, &[&stable, &canary]);
    size(st, &stable, spec.replicas);
    if p.aborted {
        size(st, &canary, 0);
        p.weight = 0;
        p.runs.clear();
        p.phase = Phase::Degraded;
        return;
    }
    if spec.paused {
        p.phase = Phase::Paused;
        p.message = "RolloutPaused: paused by the operator".into();
        size(st, &canary, canary_size(p.weight, spec.replicas));
        return;
    }
    // Background analysis, from its starting step.
    if !background.is_empty() && p.step >= starting_step && !p.runs.iter().any(|r| r.background) && !p.promoting {
        p.runs.extend(background.iter().map(|m| AnalysisRun::new(m.clone(), true, now_ms)));
    }
    if let Some(failed) = p.runs.iter().find(|r| r.phase == RunPhase::Failed) {
        p.aborted = true;
        p.message = format!("RolloutAborted: metric \"{}\" assessed Failed", failed.metric.name);
        size(st, &canary, 0);
        p.weight = 0;
        p.phase = Phase::Degraded;
        return;
    }
    if p.promoting || p.step as usize >= steps.len() {
        promote_canary(spec, st, p, &stable, &canary, seen);
        return;
    }
    // The current step, and the next ones as far as they are done.
    let mut promote = promote;
    while let Some(current) = steps.get(p.step as usize) {
        let (done, waiting) = match current {
            Step::SetWeight(w) => {
                p.weight = *w;
                let want = canary_size(*w, spec.replicas);
                size(st, &canary, want);
                (seen(&canary).available >= want, None)
            }
            Step::Pause(duration) => {
                let done = promote || duration.is_some_and(|d| now_ms >= p.step_started_ms + d);
                promote = false;
                let why = match duration {
                    Some(d) => format!("CanaryPauseStep: paused for {} s", d / 1000),
                    None => "CanaryPauseStep: paused until promoted".into(),
                };
                (done, Some(why))
            }
            Step::Analysis(metrics) => {
                if !p.runs.iter().any(|r| !r.background) {
                    p.runs.extend(metrics.iter().map(|m| AnalysisRun::new(m.clone(), false, now_ms)));
                }
                let mine = || p.runs.iter().filter(|r| !r.background);
                if mine().any(|r| r.phase == RunPhase::Inconclusive) {
                    // Inconclusive pauses; a promotion judges it good.
                    let done = std::mem::take(&mut promote);
                    (done, Some("InconclusiveAnalysis: too few requests to judge the canary".to_string()))
                } else {
                    (mine().all(|r| r.phase == RunPhase::Successful), None)
                }
            }
        };
        size(st, &canary, canary_size(p.weight, spec.replicas));
        if !done && waiting.is_none() && now_ms.saturating_sub(p.step_started_ms) > spec.progress_deadline_ms {
            p.phase = Phase::Degraded;
            p.message = format!(
                "ProgressDeadlineExceeded: the canary is not available after {} s",
                spec.progress_deadline_ms / 1000
            );
            return;
        }
        if !done {
            match waiting {
                Some(why) => {
                    p.phase = Phase::Paused;
                    p.message = why;
                }
                None => {
                    p.phase = Phase::Progressing;
                    p.message.clear();
                }
            }
            return;
        }
        p.runs.retain(|r| r.background);
        p.step += 1;
        p.step_started_ms = now_ms;
        p.phase = Phase::Progressing;
        p.message.clear();
    }
    promote_canary(spec, st, p, &stable, &canary, seen);
}

/// All steps done (or `promote --full`): the canary grows to full size, takes all traffic once
/// available, and becomes the stable; the old stable set goes.
fn promote_canary(
    spec: &RolloutSpec,
    st: &mut State,
    p: &mut Progress,
    stable: &str,
    canary: &str,
    seen: &impl Fn(&str) -> Observed,
) {
    p.promoting = true;
    size(st, canary, spec.replicas);
    p.phase = Phase::Progressing;
    if seen(canary).available >= spec.replicas {
        p.stable = canary.to_string();
        p.canary = None;
        p.weight = 0;
        p.promoting = false;
        p.runs.clear();
        p.step = 0;
        size(st, stable, 0);
        p.phase = Phase::Healthy;
        p.message.clear();
    } else {
        p.weight = p.weight.max(canary_weight_while_growing(seen(canary).available, spec.replicas));
    }
}

/// While the canary grows to full size, its weight follows its available share.
fn canary_weight_while_growing(available: u32, replicas: u32) -> u32 {
    (available.min(replicas) * 100).checked_div(replicas).unwrap_or(0).min(100)
}

fn blue_green(
    spec: &RolloutSpec,
    st: &mut State,
    p: &mut Progress,
    (auto, auto_ms, delay_ms, preview_replicas): (bool, Option<u64>, u64, Option<u32>),
    promote: bool,
    seen: &impl Fn(&str) -> Observed,
    now_ms: u64,
) {
    let active = p.stable.clone();
    // The old active set, kept after a promotion until its delay passes.
    let mut keep: Vec<String> = vec![active.clone()];
    if let Some((old, at)) = p.scale_down.clone() {
        if now_ms >= at {
            p.scale_down = None;
        } else {
            keep.push(old);
        }
    }
    if let Some(c) = &p.canary {
        keep.push(c.clone());
    }
    let keep_refs: Vec<&str> = keep.iter().map(String::as_str).collect();
    only(st, &keep_refs);
    size(st, &active, spec.replicas);
    p.weight = 0;
    let Some(preview) = p.canary.clone() else {
        p.phase = if seen(&active).available >= spec.replicas { Phase::Healthy } else { Phase::Progressing };
        return;
    };
    if p.aborted {
        size(st, &preview, 0);
        p.phase = Phase::Degraded;
        return;
    }
    let want = if p.promoting { spec.replicas } else { preview_replicas.unwrap_or(spec.replicas).min(spec.replicas) };
    size(st, &preview, want);
    let ready = seen(&preview).available >= want;
    if !ready {
        p.preview_ready_ms = None;
        if now_ms.saturating_sub(p.step_started_ms) > spec.progress_deadline_ms {
            p.phase = Phase::Degraded;
            p.message = format!(
                "ProgressDeadlineExceeded: the preview is not available after {} s",
                spec.progress_deadline_ms / 1000
            );
        } else {
            p.phase = Phase::Progressing;
        }
        return;
    }
    let since = *p.preview_ready_ms.get_or_insert(now_ms);
    let go = p.promoting || promote || (!spec.paused && auto && auto_ms.is_none_or(|ms| now_ms >= since + ms));
    if !go {
        p.phase = Phase::Paused;
        p.message = "BlueGreenPause: the preview is ready; promote to switch".into();
        return;
    }
    if want < spec.replicas {
        // Promoted with a smaller preview: grow it first.
        p.promoting = true;
        size(st, &preview, spec.replicas);
        p.phase = Phase::Progressing;
        return;
    }
    // Switch: the preview becomes active; the old active set stays for the delay.
    p.scale_down = Some((active, now_ms + delay_ms));
    p.stable = preview;
    p.canary = None;
    p.promoting = false;
    p.preview_ready_ms = None;
    p.phase = Phase::Healthy;
    p.message.clear();
}

/// Drops the oldest empty sets beyond the history limit (never the stable or canary).
fn prune(spec: &RolloutSpec, st: &mut State, p: &Progress, seen: &impl Fn(&str) -> Observed) {
    let mut idle: Vec<(u64, String)> = st
        .sets
        .iter()
        .filter(|s| s.hash != p.stable && p.canary.as_deref() != Some(s.hash.as_str()))
        .filter(|s| s.replicas == 0 && seen(&s.hash).running == 0)
        .map(|s| (s.revision, s.hash.clone()))
        .collect();
    idle.sort();
    let excess = idle.len().saturating_sub(spec.revision_history_limit as usize);
    let drop: Vec<String> = idle.into_iter().take(excess).map(|(_, h)| h).collect();
    st.sets.retain(|s| !drop.contains(&s.hash));
}

#[cfg(test)]
mod tests;
