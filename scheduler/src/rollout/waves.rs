//! Waves: a rolling update that finishes one group of nodes before it starts the next.
//!
//! Edge fleets roll out one site or region at a time and stop when it goes wrong. A
//! Deployment annotated `wasmfleet.io/rollout-waves: <label>` splits its replicas between the
//! values of that node label: each value is a *wave* holding a *share* of the replicas, in
//! proportion to its eligible nodes ([`shares`]). A rolling update walks the waves in order:
//! the newest revision may take slots only in the waves that are *open*, and the old revisions
//! keep every slot of the waves after them. Within those bounds the plain step
//! ([`super::step_within`]) paces the update by `maxSurge`/`maxUnavailable` over the whole
//! Deployment, so the fleet-wide guarantees (never more than `replicas + maxSurge`, never
//! fewer available than `replicas - maxUnavailable`) hold as without waves.
//!
//! A wave is *finished* when every slot it holds belongs to the newest revision and is
//! available. The next wave opens after the *gate*: an optional pause, then optional analysis
//! runs over the newest revision's traffic ([`Gate`]), which the caller measures as it does a
//! canary's. A failed analysis halts the rollout at that wave (`Degraded`); an inconclusive
//! one holds it (`Paused`); a new template or `rollout undo` starts over from the first wave.
//!
//! Each set keeps explicit slot indices per wave ([`super::Set::waves`]), so scaling, a
//! wave's share changing, or the rollout moving slots between sets changes only the slots
//! that must change: every other replica keeps its name and its node.

use std::collections::{BTreeMap, BTreeSet};

use super::progressive::{AnalysisRun, MetricSpec, Phase, Progress, RunPhase};
use super::{Limits, Observed, Spec, State, step_within};

/// One wave: a value of the wave label, and how many of the Deployment's replicas it holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Wave {
    pub value: String,
    pub share: u32,
}

/// What opens the next wave once one is finished.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Gate {
    /// Wait this long (ms) after a wave finishes (`wasmfleet.io/rollout-wave-pause`).
    pub pause_ms: u64,
    /// Then run these analyses on the newest revision; open when all succeed
    /// (`wasmfleet.io/rollout-wave-analysis`).
    pub analysis: Vec<MetricSpec>,
}

/// The shares of `replicas` between `groups` (label value and eligible node count, in wave
/// order): in proportion to the nodes, by largest remainder, earlier waves first on ties.
/// Waves without nodes are left out.
pub fn shares(replicas: u32, groups: &[(String, u32)]) -> Vec<Wave> {
    let groups: Vec<&(String, u32)> = groups.iter().filter(|(_, n)| *n > 0).collect();
    let nodes: u64 = groups.iter().map(|(_, n)| u64::from(*n)).sum();
    if nodes == 0 {
        return Vec::new();
    }
    let exact = |n: u32| u64::from(replicas) * u64::from(n);
    let mut out: Vec<Wave> =
        groups.iter().map(|(value, n)| Wave { value: value.clone(), share: (exact(*n) / nodes) as u32 }).collect();
    let given: u32 = out.iter().map(|w| w.share).sum();
    let mut order: Vec<usize> = (0..groups.len()).collect();
    order.sort_by_key(|&i| (std::cmp::Reverse(exact(groups[i].1) % nodes), i));
    for &i in order.iter().take((replicas - given) as usize) {
        out[i].share += 1;
    }
    out
}

/// The wave of slot `index` of set `hash`, if the set is split in waves.
pub fn wave_of<'a>(state: &'a State, hash: &str, index: u32) -> Option<&'a str> {
    let set = state.set(hash)?;
    set.waves.iter().find(|(_, slots)| slots.contains(&index)).map(|(w, _)| w.as_str())
}

/// Whether `wave` is finished for the set `newest`: all its slots are the newest set's, as
/// many of them are available, and no replica of another set still runs there (`seen`: what
/// the fleet runs in the wave, per set).
fn finished(wave: &Wave, state: &State, newest: &str, seen: Option<&BTreeMap<String, Observed>>) -> bool {
    let slots = |hash: &str| state.set(hash).and_then(|s| s.waves.get(&wave.value)).map_or(0, Vec::len) as u32;
    let others = state.sets.iter().filter(|s| s.hash != newest).any(|s| slots(&s.hash) > 0);
    let others_running = seen.iter().flat_map(|m| m.iter()).any(|(h, o)| h != newest && o.running > 0);
    let available = seen.and_then(|m| m.get(newest)).map_or(0, |o| o.available);
    !others && !others_running && slots(newest) >= wave.share && available >= wave.share
}

/// The first wave not finished (`waves.len()` when all are). `by_wave`: per wave, per set,
/// what the fleet runs there.
pub fn current(
    waves: &[Wave],
    state: &State,
    newest: &str,
    by_wave: &BTreeMap<String, BTreeMap<String, Observed>>,
) -> usize {
    waves.iter().position(|w| !finished(w, state, newest, by_wave.get(&w.value))).unwrap_or(waves.len())
}

/// How many waves are open to the newest revision, given the first unfinished one
/// (`current`), and the gate's progress, updated: `progress.step` is the wave the gate leads
/// into, `step_started_ms` when the wave before it finished, `canary` the revision rolled out.
pub fn open(progress: &mut Progress, waves: usize, current: usize, newest: &str, gate: &Gate, now_ms: u64) -> usize {
    if progress.canary.as_deref() != Some(newest) || progress.step as usize != current {
        progress.canary = Some(newest.to_string());
        progress.step = current as u32;
        progress.step_started_ms = now_ms;
        progress.runs.clear();
        progress.phase = Phase::Progressing;
        progress.message.clear();
        if current > 0 && current < waves {
            let runs = gate.analysis.iter().map(|m| AnalysisRun::new(m.clone(), false, now_ms + gate.pause_ms));
            progress.runs.extend(runs);
        }
    }
    if current == 0 || current >= waves {
        return (current + 1).min(waves);
    }
    let wave = current + 1;
    if now_ms < progress.step_started_ms + gate.pause_ms {
        progress.message = format!("wave {wave} of {waves} waits for the pause after wave {current}");
        return current;
    }
    if let Some(r) = progress.runs.iter().find(|r| r.phase == RunPhase::Failed) {
        progress.phase = Phase::Degraded;
        progress.message = format!("rollout halted before wave {wave} of {waves}: analysis {} failed", r.metric.name);
        return current;
    }
    if let Some(r) = progress.runs.iter().find(|r| r.phase == RunPhase::Inconclusive) {
        progress.phase = Phase::Paused;
        progress.message =
            format!("rollout held before wave {wave} of {waves}: analysis {} was inconclusive", r.metric.name);
        return current;
    }
    if progress.runs.iter().any(|r| r.phase == RunPhase::Running) {
        progress.message = format!("wave {wave} of {waves} waits for its analysis");
        return current;
    }
    progress.message.clear();
    wave
}

/// The next state of a Deployment rolled out in `waves`, and the gate's progress: the plain
/// step within the open waves, then every set's slots dealt to the waves ([`distribute`]).
/// `observed` is per set over the fleet, `by_wave` per wave and set.
#[expect(clippy::too_many_arguments, reason = "the step's inputs, and the waves'")]
pub fn step(
    name: &str,
    spec: &Spec,
    waves: &[Wave],
    gate: &Gate,
    state: &State,
    progress: &Progress,
    observed: &BTreeMap<String, Observed>,
    by_wave: &BTreeMap<String, BTreeMap<String, Observed>>,
    now_ms: u64,
) -> (State, Progress) {
    let mut p = progress.clone();
    let newest = if spec.paused {
        state.newest().map(|s| s.hash.clone()).unwrap_or_else(|| spec.template_hash.clone())
    } else {
        spec.template_hash.clone()
    };
    let rolling = state.set(&newest).is_none_or(|_| state.sets.iter().any(|s| s.hash != newest && s.replicas > 0));
    let limits = if rolling && !waves.is_empty() {
        let here = current(waves, state, &newest, by_wave);
        let opened = open(&mut p, waves.len(), here, &newest, gate, now_ms);
        let reach: u32 = waves.iter().take(opened).map(|w| w.share).sum();
        Limits { new_max: reach, old_min: spec.replicas.saturating_sub(reach) }
    } else {
        p = Progress { phase: Phase::Healthy, seen: p.seen, ..Progress::default() };
        Limits::NONE
    };
    let mut next = step_within(name, spec, state, observed, limits, now_ms);
    let newest = next.newest().map(|s| s.hash.clone()).unwrap_or(newest);
    distribute(waves, &mut next, &newest);
    (next, p)
}

/// Deals every set's replicas to the waves: the newest set fills the waves in order, the
/// old sets from the last wave back (so the waves between are the ones being replaced); a
/// set keeps the slots it has where it may, drops the last added where it must, and takes
/// the smallest free indices where it grows. Without waves, every set's slots are cleared
/// (slots `0..replicas`).
pub fn distribute(waves: &[Wave], state: &mut State, newest: &str) {
    if waves.is_empty() {
        for s in &mut state.sets {
            s.waves.clear();
        }
        return;
    }
    let count = waves.len();
    let Some(n) = state.sets.iter().position(|s| s.hash == newest) else { return };
    // The newest set, forward.
    let mut new_t = vec![0u32; count];
    let mut rest = state.sets[n].replicas;
    for (t, w) in new_t.iter_mut().zip(waves) {
        *t = w.share.min(rest);
        rest -= *t;
    }
    new_t[count - 1] += rest;
    // The old sets together, backward; what exceeds the shares (the surge) goes to the last
    // wave the newest set reaches.
    let mut old_t = vec![0u32; count];
    let mut rest: u32 = state.sets.iter().enumerate().filter(|(i, _)| *i != n).map(|(_, s)| s.replicas).sum();
    for i in (0..count).rev() {
        old_t[i] = waves[i].share.saturating_sub(new_t[i]).min(rest);
        rest -= old_t[i];
    }
    let surge_wave = new_t.iter().rposition(|t| *t > 0).unwrap_or(count - 1);
    old_t[surge_wave] += rest;
    // Each old set's count per wave: keep existing slots where room is left (later waves
    // first, newer sets first), then place what is left the same way.
    let mut olds: Vec<usize> = (0..state.sets.len()).filter(|i| *i != n).collect();
    olds.sort_by_key(|i| std::cmp::Reverse(state.sets[*i].revision));
    let mut targets: BTreeMap<usize, Vec<u32>> = BTreeMap::new();
    targets.insert(n, new_t);
    let mut room = old_t;
    let mut left: BTreeMap<usize, u32> = olds.iter().map(|&i| (i, state.sets[i].replicas)).collect();
    for &i in &olds {
        let mut t = vec![0u32; count];
        for k in (0..count).rev() {
            let have = state.sets[i].waves.get(&waves[k].value).map_or(0, Vec::len) as u32;
            let keep = have.min(room[k]).min(left[&i]);
            t[k] = keep;
            room[k] -= keep;
            *left.get_mut(&i).expect("every old set has an entry") -= keep;
        }
        targets.insert(i, t);
    }
    for &i in &olds {
        for k in (0..count).rev() {
            let more = room[k].min(left[&i]);
            targets.get_mut(&i).expect("inserted above")[k] += more;
            room[k] -= more;
            *left.get_mut(&i).expect("every old set has an entry") -= more;
        }
    }
    for (i, t) in targets {
        resize(&mut state.sets[i].waves, waves, &t);
        state.sets[i].replicas = t.iter().sum();
    }
}

/// Gives a set `targets[k]` slots in wave `k`: drops the last added, adds the smallest free.
fn resize(slots: &mut BTreeMap<String, Vec<u32>>, waves: &[Wave], targets: &[u32]) {
    slots.retain(|value, _| waves.iter().any(|w| w.value == *value));
    for (w, &t) in waves.iter().zip(targets) {
        if let Some(list) = slots.get_mut(&w.value) {
            list.truncate(t as usize);
        }
    }
    let mut used: BTreeSet<u32> = slots.values().flatten().copied().collect();
    let mut next_free = 0u32;
    for (w, &t) in waves.iter().zip(targets) {
        let list = slots.entry(w.value.clone()).or_default();
        while (list.len() as u32) < t {
            while used.contains(&next_free) {
                next_free += 1;
            }
            used.insert(next_free);
            list.push(next_free);
        }
    }
    slots.retain(|_, list| !list.is_empty());
}

#[cfg(test)]
mod tests;
