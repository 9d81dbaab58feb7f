//! Rollouts: the Kubernetes Deployment controller's arithmetic, as a pure function.
//!
//! A Deployment's replicas belong to *revision sets* (Kubernetes' ReplicaSets): one per pod
//! template it has had, each with a size. A rollout is a sequence of size changes — grow the
//! set of the newest template, shrink the older ones — paced so that the replicas that exist
//! never exceed `replicas + maxSurge` and the available ones never drop below
//! `replicas - maxUnavailable`. [`step`] takes the last recorded [`State`], the Deployment's
//! [`Spec`], what the fleet runs of each set ([`Observed`]) and the wall time, and returns
//! the next state: the sizes every node then places and runs, and the `Progressing` /
//! `Available` conditions Kubernetes users read.
//!
//! The rules follow Kubernetes' `pkg/controller/deployment` (rolling.go, recreate.go,
//! sync.go, progress.go) with one change: where Kubernetes counts the replicas of a set by
//! its size, [`step`] counts the larger of its size and what the fleet is seen to run, so a
//! replica that is still stopping on a node counts against the surge until its node reports
//! it gone.
//!
//! Who calls [`step`]: only the Deployment's coordinator (see the node's `reconcile`
//! module), which writes the result to the replicated store; every other node reads the
//! sizes from there. This module only decides.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub mod progressive;
pub mod waves;

/// `maxSurge` / `maxUnavailable` as written: a count or a percentage of the replicas.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Bound {
    Count(u32),
    Percent(u32),
}

impl Bound {
    /// The count for `replicas`: a percentage rounds up (`round_up`) or down.
    pub fn resolve(self, replicas: u32, round_up: bool) -> u32 {
        match self {
            Bound::Count(n) => n,
            Bound::Percent(p) => {
                let scaled = u64::from(p) * u64::from(replicas);
                let n = if round_up { scaled.div_ceil(100) } else { scaled / 100 };
                u32::try_from(n).unwrap_or(u32::MAX)
            }
        }
    }
}

/// `spec.strategy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Strategy {
    /// Stop every old replica, then start the new ones.
    Recreate,
    /// Replace replicas a few at a time. Defaults: 25 % and 25 %.
    RollingUpdate { max_surge: Bound, max_unavailable: Bound },
}

impl Default for Strategy {
    fn default() -> Self {
        Strategy::RollingUpdate { max_surge: Bound::Percent(25), max_unavailable: Bound::Percent(25) }
    }
}

impl Strategy {
    /// `(maxSurge, maxUnavailable)` for `replicas`, as Kubernetes resolves them: surge rounds
    /// up, unavailable rounds down, and if both come to 0, unavailable is 1. Recreate has
    /// neither (it is not paced).
    pub fn fenceposts(self, replicas: u32) -> (u32, u32) {
        match self {
            Strategy::Recreate => (0, 0),
            Strategy::RollingUpdate { max_surge, max_unavailable } => {
                let surge = max_surge.resolve(replicas, true);
                let unavailable = max_unavailable.resolve(replicas, false);
                if surge == 0 && unavailable == 0 { (0, 1) } else { (surge, unavailable.min(replicas)) }
            }
        }
    }
}

/// Kubernetes' default `progressDeadlineSeconds`.
pub const DEFAULT_PROGRESS_DEADLINE_S: u32 = 600;
/// Kubernetes' default `revisionHistoryLimit`.
pub const DEFAULT_REVISION_HISTORY_LIMIT: u32 = 10;

/// What the Deployment asks for now.
#[derive(Clone, Debug, PartialEq)]
pub struct Spec {
    pub replicas: u32,
    pub strategy: Strategy,
    pub progress_deadline_s: u32,
    pub revision_history_limit: u32,
    pub paused: bool,
    /// The hash of the current pod template (with its resolved module): the set it needs.
    pub template_hash: String,
    /// `kubernetes.io/change-cause` of the Deployment, recorded on a new set.
    pub change_cause: Option<String>,
}

/// One revision set: the replicas of one pod template.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Set {
    /// Template hash (the set's identity and the replicas' `revision`).
    pub hash: String,
    /// Revision number: the newest template has the highest. Rolling back to an old
    /// template gives its set the next number.
    pub revision: u64,
    /// How many replicas of this set the fleet should run.
    pub replicas: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change_cause: Option<String>,
    pub created_ms: u64,
    /// A Deployment rolled out in waves ([`waves`]): the set's slot indices in each wave (a
    /// label value), in the order they were added; empty otherwise (slots `0..replicas`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub waves: BTreeMap<String, Vec<u32>>,
}

/// What the fleet runs of one set, from gossip.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Observed {
    /// Replicas that exist (starting, running or not ready).
    pub running: u32,
    pub ready: u32,
    /// Ready for at least `minReadySeconds`.
    pub available: u32,
}

/// `status.conditions[].type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ConditionType {
    Available,
    Progressing,
}

/// `status.conditions[].status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConditionStatus {
    True,
    False,
    Unknown,
}

/// One condition, as Kubernetes reports it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Condition {
    #[serde(rename = "type")]
    pub type_: ConditionType,
    pub status: ConditionStatus,
    pub reason: String,
    pub message: String,
    pub last_update_ms: u64,
    pub last_transition_ms: u64,
}

/// The counts of `status`, as `kubectl get deployments` prints them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Replicas that exist, of every set.
    pub replicas: u32,
    /// Replicas of the newest set.
    pub updated: u32,
    pub ready: u32,
    pub available: u32,
    /// `replicas` the Deployment wants, less the available ones (not below 0).
    pub unavailable: u32,
}

/// A Deployment's recorded rollout state: the sets and their sizes, and the conditions.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// Every set kept (history included), oldest revision first.
    pub sets: Vec<Set>,
    /// The Deployment's `replicas` the sizes were last set for (a change is a scaling event).
    pub desired: u32,
    /// `spec.paused` as last seen (a change resets the progress clock).
    #[serde(default)]
    pub paused: bool,
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// The counts at the last step (progress is a change of them).
    #[serde(default)]
    pub counts: Counts,
}

impl State {
    /// The first state of a Deployment that has never been rolled out: its current template
    /// at full size, as revision 1.
    pub fn initial(spec: &Spec, now_ms: u64) -> State {
        State {
            sets: vec![Set {
                hash: spec.template_hash.clone(),
                revision: 1,
                replicas: spec.replicas,
                change_cause: spec.change_cause.clone(),
                created_ms: now_ms,
                waves: BTreeMap::new(),
            }],
            desired: spec.replicas,
            paused: spec.paused,
            conditions: Vec::new(),
            counts: Counts::default(),
        }
    }

    /// The set of the newest revision.
    pub fn newest(&self) -> Option<&Set> {
        self.sets.iter().max_by_key(|s| s.revision)
    }

    /// The set of `hash`.
    pub fn set(&self, hash: &str) -> Option<&Set> {
        self.sets.iter().find(|s| s.hash == hash)
    }

    /// The set with revision number `revision`.
    pub fn revision(&self, revision: u64) -> Option<&Set> {
        self.sets.iter().find(|s| s.revision == revision)
    }

    pub fn condition(&self, t: ConditionType) -> Option<&Condition> {
        self.conditions.iter().find(|c| c.type_ == t)
    }

    /// Whether the newest set is the one for `spec`'s template, at full size, with nothing
    /// else left and everything available (Kubernetes' `DeploymentComplete`).
    pub fn complete(&self, spec: &Spec) -> bool {
        let c = &self.counts;
        self.newest().is_some_and(|n| n.hash == spec.template_hash && n.replicas == spec.replicas)
            && c.updated == spec.replicas
            && c.replicas == spec.replicas
            && c.available == spec.replicas
    }

    /// Whether the rollout has exceeded its progress deadline.
    pub fn timed_out(&self) -> bool {
        self.condition(ConditionType::Progressing)
            .is_some_and(|c| c.status == ConditionStatus::False && c.reason == REASON_TIMED_OUT)
    }
}

/// `Progressing` reasons, Kubernetes' words.
pub const REASON_NEW_SET_CREATED: &str = "NewReplicaSetCreated";
pub const REASON_FOUND_NEW_SET: &str = "FoundNewReplicaSet";
pub const REASON_SET_UPDATED: &str = "ReplicaSetUpdated";
pub const REASON_NEW_SET_AVAILABLE: &str = "NewReplicaSetAvailable";
pub const REASON_TIMED_OUT: &str = "ProgressDeadlineExceeded";
pub const REASON_PAUSED: &str = "DeploymentPaused";
pub const REASON_RESUMED: &str = "DeploymentResumed";
/// `Available` reasons.
pub const REASON_MIN_AVAILABLE: &str = "MinimumReplicasAvailable";
pub const REASON_MIN_UNAVAILABLE: &str = "MinimumReplicasUnavailable";

/// The replica-set name Kubernetes users see for a set: `<deployment>-<hash>`.
pub fn set_name(deployment: &str, hash: &str) -> String {
    format!("{deployment}-{hash}")
}

/// Bounds a caller puts on a rolling update's sizes (see [`waves`]): the newest set grows to
/// at most `new_max`, and the old sets together shrink to no fewer than `old_min`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    pub new_max: u32,
    pub old_min: u32,
}

impl Limits {
    /// No bound beyond the strategy's own.
    pub const NONE: Limits = Limits { new_max: u32::MAX, old_min: 0 };
}

/// Computes the next state. `name` is the Deployment's name (messages name its sets).
pub fn step(name: &str, spec: &Spec, state: &State, observed: &BTreeMap<String, Observed>, now_ms: u64) -> State {
    step_within(name, spec, state, observed, Limits::NONE, now_ms)
}

/// [`step`], with a rolling update held within `limits`.
pub fn step_within(
    name: &str,
    spec: &Spec,
    state: &State,
    observed: &BTreeMap<String, Observed>,
    limits: Limits,
    now_ms: u64,
) -> State {
    let mut next = state.clone();
    let seen = |hash: &str| observed.get(hash).copied().unwrap_or_default();
    let mut created = None;
    if !spec.paused {
        created = adopt_template(spec, &mut next, now_ms);
    }
    let scaling = next.desired != spec.replicas;
    if spec.paused || scaling {
        scale(spec, &mut next);
    } else {
        match spec.strategy {
            Strategy::Recreate => recreate(spec, &mut next, &seen),
            Strategy::RollingUpdate { .. } => rolling(spec, &mut next, &seen, limits),
        }
    }
    next.desired = spec.replicas;
    next.counts = counts(spec, &next, observed);
    if next.complete(spec) {
        prune_history(spec, &mut next, &seen);
    }
    conditions(name, spec, state, &mut next, created, now_ms);
    next.paused = spec.paused;
    next
}

/// Makes the set of the current template the newest: creates it (size 0; the strategy grows
/// it) or, for a template seen before (an undo), gives its set the next revision number.
/// Returns whether a set was created (`Some(true)`), found (`Some(false)`), or neither.
fn adopt_template(spec: &Spec, next: &mut State, now_ms: u64) -> Option<bool> {
    let top = next.sets.iter().map(|s| s.revision).max().unwrap_or(0);
    match next.sets.iter_mut().find(|s| s.hash == spec.template_hash) {
        Some(set) if set.revision == top => None,
        Some(set) => {
            set.revision = top + 1;
            if spec.change_cause.is_some() {
                set.change_cause.clone_from(&spec.change_cause);
            }
            Some(false)
        }
        None => {
            next.sets.push(Set {
                hash: spec.template_hash.clone(),
                revision: top + 1,
                replicas: 0,
                change_cause: spec.change_cause.clone(),
                created_ms: now_ms,
                waves: BTreeMap::new(),
            });
            Some(true)
        }
    }
}

/// Indices of the newest set and of the others (oldest revision first).
fn split(state: &State) -> (Option<usize>, Vec<usize>) {
    let newest = state.sets.iter().enumerate().max_by_key(|(_, s)| s.revision).map(|(i, _)| i);
    let mut olds: Vec<usize> = (0..state.sets.len()).filter(|i| Some(*i) != newest).collect();
    olds.sort_by_key(|i| state.sets[*i].revision);
    (newest, olds)
}

/// The replicas of a set that count against the surge: its size, or more if more still run.
fn occupying(set: &Set, seen: &impl Fn(&str) -> Observed) -> u32 {
    set.replicas.max(seen(&set.hash).running)
}

/// Kubernetes' `scale`: a change of `replicas` (or any step while paused) resizes the sets
/// without advancing the rollout. One active set takes the whole size; several share it in
/// proportion to their sizes, within `replicas + maxSurge`.
fn scale(spec: &Spec, next: &mut State) {
    let (newest, _) = split(next);
    let active: Vec<usize> = (0..next.sets.len()).filter(|i| next.sets[*i].replicas > 0).collect();
    match active.as_slice() {
        [] => {
            if let Some(n) = newest {
                next.sets[n].replicas = spec.replicas;
            }
        }
        [only] => next.sets[*only].replicas = spec.replicas,
        _ => {
            let (surge, _) = spec.strategy.fenceposts(spec.replicas);
            let allowed = if spec.replicas > 0 { spec.replicas + surge } else { 0 };
            let total: u32 = active.iter().map(|i| next.sets[*i].replicas).sum();
            // Kubernetes' getReplicaSetFraction: sizes scale by the new bound over the old
            // one, each being `replicas + maxSurge`.
            let (old_surge, _) = spec.strategy.fenceposts(next.desired);
            let old_allowed = i64::from(next.desired + old_surge).max(1);
            let mut to_add = i64::from(allowed) - i64::from(total);
            // Largest first, newest breaking ties (Kubernetes' ReplicaSetsBySizeNewer); the
            // first takes what rounding leaves.
            let mut order = active.clone();
            order.sort_by_key(|i| {
                (std::cmp::Reverse(next.sets[*i].replicas), std::cmp::Reverse(next.sets[*i].revision))
            });
            let mut sizes: Vec<i64> = order.iter().map(|i| i64::from(next.sets[*i].replicas)).collect();
            let start = to_add;
            for (k, i) in order.iter().enumerate() {
                if to_add == 0 {
                    break;
                }
                let size = i64::from(next.sets[*i].replicas);
                // Kubernetes' getProportion: the set's share of the change, rounded, never
                // past what is left to distribute.
                let share = (size * i64::from(allowed) + old_allowed / 2) / old_allowed - size;
                let share = if start > 0 { share.clamp(0, to_add) } else { share.clamp(to_add, 0) };
                sizes[k] += share;
                to_add -= share;
            }
            if let Some(first) = sizes.first_mut() {
                *first += to_add;
            }
            for (k, i) in order.iter().enumerate() {
                next.sets[*i].replicas = u32::try_from(sizes[k].max(0)).unwrap_or(0);
            }
        }
    }
}

/// A rolling update: grow the newest set within the surge, shrink the old ones within the
/// unavailability budget (unhealthy replicas first).
fn rolling(spec: &Spec, next: &mut State, seen: &impl Fn(&str) -> Observed, limits: Limits) {
    let (Some(n), olds) = split(next) else { return };
    let (surge, max_unavailable) = spec.strategy.fenceposts(spec.replicas);
    // Grow (or trim) the newest set.
    let new_size = next.sets[n].replicas;
    let target = spec.replicas.min(limits.new_max.max(new_size));
    if new_size > spec.replicas {
        next.sets[n].replicas = spec.replicas;
    } else if new_size < target {
        let max_total = spec.replicas + surge;
        let current: u32 = next.sets.iter().map(|s| occupying(s, seen)).sum();
        let room = max_total.saturating_sub(current);
        let grow = room.min(target - new_size);
        if grow > 0 {
            next.sets[n].replicas += grow;
            return;
        }
    }
    // Shrink the old sets.
    let old_total: u32 = olds.iter().map(|i| next.sets[*i].replicas).sum();
    if old_total <= limits.old_min {
        return;
    }
    let mut above_floor = old_total - limits.old_min;
    let all: u32 = next.sets.iter().map(|s| occupying(s, seen)).sum();
    let min_available = spec.replicas.saturating_sub(max_unavailable);
    let new_set = &next.sets[n];
    let new_unavailable = new_set.replicas.saturating_sub(seen(&new_set.hash).available);
    let max_scaled_down = i64::from(all) - i64::from(min_available) - i64::from(new_unavailable);
    if max_scaled_down <= 0 {
        return;
    }
    let mut budget = u32::try_from(max_scaled_down).unwrap_or(u32::MAX).min(above_floor);
    // Unhealthy old replicas go first: they serve nothing.
    for &i in &olds {
        if budget == 0 {
            break;
        }
        let set = &mut next.sets[i];
        let unhealthy = set.replicas.saturating_sub(seen(&set.hash).available);
        let cut = unhealthy.min(budget);
        set.replicas -= cut;
        budget -= cut;
        above_floor -= cut;
    }
    // Then healthy ones, as far as availability allows.
    let available: u32 = next.sets.iter().map(|s| seen(&s.hash).available.min(s.replicas)).sum();
    if available <= min_available {
        return;
    }
    let mut down = (available - min_available).min(above_floor);
    for &i in &olds {
        if down == 0 {
            break;
        }
        let set = &mut next.sets[i];
        let cut = set.replicas.min(down);
        set.replicas -= cut;
        down -= cut;
    }
}

/// Recreate: every old set to 0; once none of their replicas runs, the newest to full size.
fn recreate(spec: &Spec, next: &mut State, seen: &impl Fn(&str) -> Observed) {
    let (Some(n), olds) = split(next) else { return };
    for &i in &olds {
        next.sets[i].replicas = 0;
    }
    let old_running: u32 = olds.iter().map(|i| seen(&next.sets[*i].hash).running).sum();
    if old_running == 0 {
        next.sets[n].replicas = spec.replicas;
    }
}

/// The status counts: what runs, of which set, and how much of it is available. `updated`
/// counts the set of the current template (none while a paused Deployment has not started it).
pub fn counts(spec: &Spec, state: &State, observed: &BTreeMap<String, Observed>) -> Counts {
    let mut c = Counts::default();
    for s in &state.sets {
        let o = observed.get(&s.hash).copied().unwrap_or_default();
        c.replicas += o.running;
        c.ready += o.ready;
        c.available += o.available;
        if s.hash == spec.template_hash {
            c.updated = o.running;
        }
    }
    c.unavailable = spec.replicas.saturating_sub(c.available);
    c
}

/// Drops the oldest empty sets beyond `revisionHistoryLimit` (never one that still runs).
fn prune_history(spec: &Spec, next: &mut State, seen: &impl Fn(&str) -> Observed) {
    let newest = next.newest().map(|s| s.revision);
    let mut idle: Vec<(u64, String)> = next
        .sets
        .iter()
        .filter(|s| Some(s.revision) != newest && s.replicas == 0 && seen(&s.hash).running == 0)
        .map(|s| (s.revision, s.hash.clone()))
        .collect();
    idle.sort();
    let excess = idle.len().saturating_sub(spec.revision_history_limit as usize);
    let drop: Vec<String> = idle.into_iter().take(excess).map(|(_, h)| h).collect();
    next.sets.retain(|s| !drop.contains(&s.hash));
}

/// Sets `type_` to (status, reason, message); keeps the transition time when the status does
/// not change, and the update time when nothing changes.
fn set_condition(
    next: &mut State,
    type_: ConditionType,
    status: ConditionStatus,
    reason: &str,
    message: String,
    now_ms: u64,
) {
    match next.conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(c) if c.status == status && c.reason == reason && c.message == message => {}
        Some(c) => {
            if c.status != status {
                c.last_transition_ms = now_ms;
            }
            c.status = status;
            c.reason = reason.to_string();
            c.message = message;
            c.last_update_ms = now_ms;
        }
        None => next.conditions.push(Condition {
            type_,
            status,
            reason: reason.to_string(),
            message,
            last_update_ms: now_ms,
            last_transition_ms: now_ms,
        }),
    }
    next.conditions.sort_by_key(|c| c.type_);
}

/// The `Available` and `Progressing` conditions, as Kubernetes' `syncRolloutStatus` sets them.
fn conditions(name: &str, spec: &Spec, before: &State, next: &mut State, created: Option<bool>, now_ms: u64) {
    let (_, max_unavailable) = spec.strategy.fenceposts(spec.replicas);
    let min_available = spec.replicas.saturating_sub(max_unavailable);
    if next.counts.available >= min_available {
        set_condition(
            next,
            ConditionType::Available,
            ConditionStatus::True,
            REASON_MIN_AVAILABLE,
            "Deployment has minimum availability.".into(),
            now_ms,
        );
    } else {
        set_condition(
            next,
            ConditionType::Available,
            ConditionStatus::False,
            REASON_MIN_UNAVAILABLE,
            "Deployment does not have minimum availability.".into(),
            now_ms,
        );
    }
    let set = set_name(name, &spec.template_hash);
    if spec.paused {
        set_condition(
            next,
            ConditionType::Progressing,
            ConditionStatus::Unknown,
            REASON_PAUSED,
            "Deployment is paused".into(),
            now_ms,
        );
        return;
    }
    if before.paused {
        // Paused time does not count against the deadline: the clock restarts here.
        set_condition(
            next,
            ConditionType::Progressing,
            ConditionStatus::Unknown,
            REASON_RESUMED,
            "Deployment is resumed".into(),
            now_ms,
        );
    }
    match created {
        Some(true) => {
            let msg = format!("Created new replica set \"{set}\"");
            set_condition(next, ConditionType::Progressing, ConditionStatus::True, REASON_NEW_SET_CREATED, msg, now_ms);
            return;
        }
        Some(false) => {
            let msg = format!("Found new replica set \"{set}\"");
            set_condition(next, ConditionType::Progressing, ConditionStatus::True, REASON_FOUND_NEW_SET, msg, now_ms);
            return;
        }
        None => {}
    }
    if next.complete(spec) {
        let msg = format!("ReplicaSet \"{set}\" has successfully progressed.");
        set_condition(next, ConditionType::Progressing, ConditionStatus::True, REASON_NEW_SET_AVAILABLE, msg, now_ms);
        return;
    }
    if progressed(&before.counts, &next.counts) || next.sets != before.sets {
        let msg = format!("ReplicaSet \"{set}\" is progressing.");
        set_condition(next, ConditionType::Progressing, ConditionStatus::True, REASON_SET_UPDATED, msg, now_ms);
        if let Some(c) = next.conditions.iter_mut().find(|c| c.type_ == ConditionType::Progressing) {
            // Progress restarts the deadline even when the words stay the same.
            c.last_update_ms = now_ms;
        }
        return;
    }
    let since = next.condition(ConditionType::Progressing).map(|c| c.last_update_ms).unwrap_or(now_ms);
    let deadline_ms = u64::from(spec.progress_deadline_s) * 1000;
    let already = next.timed_out();
    if !already && now_ms.saturating_sub(since) > deadline_ms {
        let msg = format!("ReplicaSet \"{set}\" has timed out progressing.");
        set_condition(next, ConditionType::Progressing, ConditionStatus::False, REASON_TIMED_OUT, msg, now_ms);
    }
}

/// Kubernetes' `DeploymentProgressing`: more updated, ready or available replicas, or fewer
/// old ones, than at the last step.
fn progressed(before: &Counts, now: &Counts) -> bool {
    let old_before = before.replicas.saturating_sub(before.updated);
    let old_now = now.replicas.saturating_sub(now.updated);
    now.updated > before.updated || old_now < old_before || now.ready > before.ready || now.available > before.available
}

#[cfg(test)]
mod tests;
