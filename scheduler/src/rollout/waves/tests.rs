use std::collections::BTreeMap;

use proptest::prelude::*;

use super::super::progressive::{MetricSpec, Phase, Progress, RunPhase};
use super::super::{Bound, Observed, Spec, State, Strategy};
use super::*;

fn spec(replicas: u32, hash: &str, surge: u32, unavailable: u32) -> Spec {
    Spec {
        replicas,
        strategy: Strategy::RollingUpdate {
            max_surge: Bound::Count(surge),
            max_unavailable: Bound::Count(unavailable),
        },
        progress_deadline_s: 600,
        revision_history_limit: 10,
        paused: false,
        template_hash: hash.into(),
        change_cause: None,
    }
}

fn zones(shares: &[u32]) -> Vec<Wave> {
    shares.iter().enumerate().map(|(i, s)| Wave { value: format!("z{i}"), share: *s }).collect()
}

/// What an ideal fleet runs of `state`: every slot, available at once.
fn fleet(state: &State) -> (BTreeMap<String, Observed>, BTreeMap<String, BTreeMap<String, Observed>>) {
    let mut all = BTreeMap::new();
    let mut by_wave: BTreeMap<String, BTreeMap<String, Observed>> = BTreeMap::new();
    for s in &state.sets {
        let n = s.replicas;
        all.insert(s.hash.clone(), Observed { running: n, ready: n, available: n });
        for (w, slots) in &s.waves {
            let k = slots.len() as u32;
            by_wave
                .entry(w.clone())
                .or_default()
                .insert(s.hash.clone(), Observed { running: k, ready: k, available: k });
        }
    }
    (all, by_wave)
}

/// A steady Deployment of `replicas` at revision `old`, dealt to `waves`.
fn steady(spec_old: &Spec, waves: &[Wave]) -> State {
    let mut st = State::initial(spec_old, 0);
    distribute(waves, &mut st, &spec_old.template_hash);
    st
}

fn slots_in(state: &State, hash: &str, wave: &str) -> usize {
    state.set(hash).and_then(|s| s.waves.get(wave)).map_or(0, Vec::len)
}

#[test]
fn shares_follow_the_nodes_with_the_largest_remainder() {
    let g = |v: &[(&str, u32)]| v.iter().map(|(a, n)| ((*a).to_string(), *n)).collect::<Vec<_>>();
    let s = |w: Vec<Wave>| w.into_iter().map(|w| (w.value, w.share)).collect::<Vec<_>>();
    assert_eq!(s(shares(6, &g(&[("a", 1), ("b", 1), ("c", 1)]))), [("a".into(), 2), ("b".into(), 2), ("c".into(), 2)]);
    // 7 × 2/3 = 4.67 and 7 × 1/3 = 2.33: the larger remainder takes the seat left.
    assert_eq!(s(shares(7, &g(&[("a", 2), ("b", 1)]))), [("a".into(), 5), ("b".into(), 2)]);
    // Equal remainders: earlier waves first.
    assert_eq!(s(shares(2, &g(&[("a", 1), ("b", 1), ("c", 1)]))), [("a".into(), 1), ("b".into(), 1), ("c".into(), 0)]);
    // A value without nodes is no wave.
    assert_eq!(s(shares(3, &g(&[("a", 0), ("b", 3)]))), [("b".into(), 3)]);
    assert!(shares(3, &[]).is_empty());
}

#[test]
fn a_steady_deployment_fills_every_wave_and_scaling_keeps_every_slot() {
    let waves = zones(&[2, 2, 2]);
    let st = steady(&spec(6, "old", 1, 0), &waves);
    let set = st.set("old").unwrap();
    assert_eq!(set.waves.values().map(Vec::len).collect::<Vec<_>>(), [2, 2, 2]);
    let mut all: Vec<u32> = set.waves.values().flatten().copied().collect();
    all.sort_unstable();
    assert_eq!(all, (0..6).collect::<Vec<_>>());
    // Scaling to 7 (one wave grows): every slot kept, the new one takes index 6.
    let mut scaled = st.clone();
    scaled.sets[0].replicas = 7;
    distribute(&zones(&[3, 2, 2]), &mut scaled, "old");
    for (w, slots) in &set.waves {
        assert!(scaled.sets[0].waves[w].starts_with(slots), "wave {w} kept its slots");
    }
    assert_eq!(scaled.sets[0].waves["z0"].last(), Some(&6));
}

/// Rolls `old` to `new` over an ideal fleet and checks, at every step, that the newest
/// revision is in a wave only once every earlier wave is finished, and the strategy's bounds.
fn roll(waves: &[Wave], surge: u32, unavailable: u32, gate: &Gate) -> (usize, Vec<State>) {
    let replicas: u32 = waves.iter().map(|w| w.share).sum();
    let old = spec(replicas, "old", surge, unavailable);
    let new = spec(replicas, "new", surge, unavailable);
    let mut st = steady(&old, waves);
    let mut progress = Progress::default();
    let mut history = Vec::new();
    for t in 0..200u64 {
        let (all, by_wave) = fleet(&st);
        let (next, p) = step("web", &new, waves, gate, &st, &progress, &all, &by_wave, t * 1000);
        let total: u32 = next.sets.iter().map(|s| s.replicas).sum();
        assert!(total <= replicas + surge, "step {t}: {total} replicas exceed the surge");
        for (k, w) in waves.iter().enumerate() {
            if slots_in(&next, "new", &w.value) > 0 {
                for earlier in &waves[..k] {
                    assert_eq!(
                        slots_in(&next, "old", &earlier.value),
                        0,
                        "step {t}: wave {} before {}",
                        w.value,
                        earlier.value
                    );
                }
            }
        }
        for s in &next.sets {
            assert_eq!(s.replicas as usize, s.waves.values().map(Vec::len).sum::<usize>(), "sizes match the slots");
        }
        history.push(next.clone());
        let done = next.set("new").is_some_and(|s| s.replicas == replicas)
            && next.sets.iter().all(|s| s.hash == "new" || s.replicas == 0);
        st = next;
        progress = p;
        if done {
            return (t as usize, history);
        }
    }
    (usize::MAX, history)
}

#[test]
fn waves_roll_in_order_within_the_surge() {
    let (steps, history) = roll(&zones(&[2, 2, 2]), 1, 0, &Gate::default());
    assert!(steps < 200, "the rollout finishes");
    // It went through every wave: at some point the newest set held exactly the first wave.
    assert!(history.iter().any(|s| slots_in(s, "new", "z0") == 2 && slots_in(s, "new", "z1") == 0));
}

#[test]
fn waves_roll_in_order_within_the_unavailability_budget() {
    let (steps, _) = roll(&zones(&[3, 1, 4]), 0, 2, &Gate::default());
    assert!(steps < 200);
}

#[test]
fn a_pause_holds_each_next_wave() {
    let gate = Gate { pause_ms: 10_000, analysis: Vec::new() };
    let (fast, _) = roll(&zones(&[2, 2, 2]), 1, 0, &Gate::default());
    let (slow, _) = roll(&zones(&[2, 2, 2]), 1, 0, &gate);
    // Two gates of 10 steps (1 s each) each.
    assert!(slow >= fast + 20, "{slow} steps with pauses, {fast} without");
}

fn metric() -> MetricSpec {
    MetricSpec { name: "t/ok".into(), interval_ms: 1000, count: 1, failure_limit: 0, inconclusive_limit: 0 }
}

#[test]
fn a_failed_analysis_halts_before_the_next_wave_and_a_successful_one_opens_it() {
    let waves = zones(&[2, 2]);
    let gate = Gate { pause_ms: 0, analysis: vec![metric()] };
    let new = spec(4, "new", 1, 0);
    let mut st = steady(&spec(4, "old", 1, 0), &waves);
    let mut p = Progress::default();
    for t in 0..20 {
        let (all, by_wave) = fleet(&st);
        (st, p) = step("web", &new, &waves, &gate, &st, &p, &all, &by_wave, t * 1000);
    }
    // Wave 1 is finished and the gate into wave 2 runs its analysis: nothing moves on.
    assert_eq!(slots_in(&st, "new", "z0"), 2);
    assert_eq!(slots_in(&st, "new", "z1"), 0);
    assert_eq!(p.step, 1);
    assert_eq!(p.runs.len(), 1);
    assert_eq!(p.canary.as_deref(), Some("new"));
    let mut failed = p.clone();
    failed.runs[0].phase = RunPhase::Failed;
    let (all, by_wave) = fleet(&st);
    let (halted, fp) = step("web", &new, &waves, &gate, &st, &failed, &all, &by_wave, 21_000);
    assert_eq!(fp.phase, Phase::Degraded);
    assert!(fp.message.contains("halted before wave 2 of 2"), "{}", fp.message);
    assert_eq!(slots_in(&halted, "new", "z1"), 0);
    p.runs[0].phase = RunPhase::Successful;
    let (opened, _) = step("web", &new, &waves, &gate, &st, &p, &all, &by_wave, 21_000);
    assert_eq!(slots_in(&opened, "new", "z1"), 1, "the surge's one replica goes to wave 2");
}

#[test]
fn a_new_template_mid_rollout_starts_again_from_the_first_wave() {
    let waves = zones(&[2, 2, 2]);
    let (_, history) = roll(&waves, 1, 0, &Gate::default());
    // Mid-way: wave 1 done, wave 2 under way.
    let mid = history.iter().find(|s| slots_in(s, "new", "z1") > 0).unwrap().clone();
    let third = spec(6, "third", 1, 0);
    let mut st = mid;
    let mut p = Progress::default();
    for t in 0..200u64 {
        let (all, by_wave) = fleet(&st);
        let (next, np) = step("web", &third, &waves, &Gate::default(), &st, &p, &all, &by_wave, t * 1000);
        if slots_in(&next, "third", "z1") > 0 {
            assert!(slots_in(&next, "old", "z0") + slots_in(&next, "new", "z0") == 0, "wave 1 first");
        }
        (st, p) = (next, np);
    }
    assert_eq!(st.set("third").unwrap().replicas, 6);
}

proptest! {
    /// Any shares, any pacing: the rollout finishes, in wave order, within the surge.
    #[test]
    fn any_rollout_finishes_in_wave_order(
        shares in proptest::collection::vec(0u32..5, 1..5),
        surge in 0u32..3,
        unavailable in 0u32..3,
    ) {
        prop_assume!(shares.iter().sum::<u32>() > 0);
        let (surge, unavailable) = if surge == 0 && unavailable == 0 { (0, 1) } else { (surge, unavailable) };
        let waves = zones(&shares);
        let (steps, _) = roll(&waves, surge, unavailable, &Gate::default());
        prop_assert!(steps < 200);
    }
}

#[test]
fn a_version_that_never_becomes_available_stays_in_the_first_wave() {
    // A surge of 3 would start a replica in the second wave without the waves' bound.
    let waves = zones(&[2, 2, 2]);
    let new = spec(6, "new", 3, 1);
    let mut st = steady(&spec(6, "old", 3, 1), &waves);
    let mut p = Progress::default();
    for t in 0..50 {
        let (mut all, mut by_wave) = fleet(&st);
        // The new revision runs but is never ready.
        if let Some(o) = all.get_mut("new") {
            (o.ready, o.available) = (0, 0);
        }
        for m in by_wave.values_mut() {
            if let Some(o) = m.get_mut("new") {
                (o.ready, o.available) = (0, 0);
            }
        }
        (st, p) = step("web", &new, &waves, &Gate::default(), &st, &p, &all, &by_wave, t * 1000);
        assert_eq!(slots_in(&st, "new", "z1") + slots_in(&st, "new", "z2"), 0, "step {t}: past the first wave");
    }
    assert_eq!(slots_in(&st, "new", "z0"), 2, "the first wave is tried");
    assert_eq!(slots_in(&st, "old", "z1") + slots_in(&st, "old", "z2"), 4, "the other waves keep the old revision");
}
