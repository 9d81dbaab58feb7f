use proptest::prelude::{ProptestConfig, any, prop_assert, prop_assert_eq, proptest};

use super::*;

fn spec(replicas: u32, strategy: Strategy, hash: &str) -> Spec {
    Spec {
        replicas,
        strategy,
        progress_deadline_s: DEFAULT_PROGRESS_DEADLINE_S,
        revision_history_limit: DEFAULT_REVISION_HISTORY_LIMIT,
        paused: false,
        template_hash: hash.into(),
        change_cause: None,
    }
}

fn rolling(surge: u32, unavailable: u32) -> Strategy {
    Strategy::RollingUpdate { max_surge: Bound::Count(surge), max_unavailable: Bound::Count(unavailable) }
}

/// A toy fleet: per set, replicas that exist and how many of them are ready (ready is
/// available here: `minReadySeconds` is the node's business).
#[derive(Clone, Debug, Default)]
struct Fleet {
    sets: BTreeMap<String, (u32, u32)>,
}

impl Fleet {
    fn observed(&self) -> BTreeMap<String, Observed> {
        self.sets
            .iter()
            .map(|(h, &(running, ready))| (h.clone(), Observed { running, ready, available: ready }))
            .collect()
    }

    fn running(&self) -> u32 {
        self.sets.values().map(|s| s.0).sum()
    }

    fn available(&self) -> u32 {
        self.sets.values().map(|s| s.1).sum()
    }

    /// Nodes act on the sizes: one start, one stop and one readiness per set as `moves` says.
    /// A stopped replica is a not-ready one when there is one (nodes stop what serves nothing
    /// first is *not* assumed: `ready_first` stops a ready one).
    fn act(&mut self, state: &State, starts: bool, stops: bool, readies: bool, good: &dyn Fn(&str) -> bool) {
        for set in &state.sets {
            let e = self.sets.entry(set.hash.clone()).or_default();
            if stops && e.0 > set.replicas {
                e.0 -= 1;
                e.1 = e.1.min(e.0);
            }
            if starts && e.0 < set.replicas {
                e.0 += 1;
            }
            if readies && e.1 < e.0 && good(&set.hash) {
                e.1 += 1;
            }
        }
        self.sets.retain(|h, _| state.set(h).is_some());
    }
}

#[test]
fn fenceposts_round_as_kubernetes_does() {
    let pct = |s, u| Strategy::RollingUpdate { max_surge: Bound::Percent(s), max_unavailable: Bound::Percent(u) };
    assert_eq!(Strategy::default().fenceposts(10), (3, 2), "25% of 10: surge rounds up, unavailable down");
    assert_eq!(Strategy::default().fenceposts(1), (1, 0));
    assert_eq!(pct(0, 0).fenceposts(10), (0, 1), "both zero: unavailable becomes 1");
    assert_eq!(pct(10, 10).fenceposts(4), (1, 0));
    assert_eq!(rolling(0, 0).fenceposts(3), (0, 1));
    assert_eq!(rolling(1, 0).fenceposts(6), (1, 0));
    assert_eq!(Strategy::Recreate.fenceposts(5), (0, 0));
}

#[test]
fn a_template_change_creates_revision_two_and_scaling_does_not() {
    let s1 = spec(3, Strategy::default(), "aaa");
    let st = State::initial(&s1, 1);
    let mut fleet = Fleet::default();
    fleet.sets.insert("aaa".into(), (3, 3));
    let scaled = step("web", &spec(5, Strategy::default(), "aaa"), &st, &fleet.observed(), 2);
    assert_eq!(scaled.sets.len(), 1);
    assert_eq!(scaled.sets[0].replicas, 5);
    let s2 = spec(3, Strategy::default(), "bbb");
    let next = step("web", &s2, &st, &fleet.observed(), 3);
    assert_eq!(next.newest().unwrap().hash, "bbb");
    assert_eq!(next.newest().unwrap().revision, 2);
    let p = next.condition(ConditionType::Progressing).unwrap();
    assert_eq!(
        (p.reason.as_str(), p.message.as_str()),
        (REASON_NEW_SET_CREATED, "Created new replica set \"web-bbb\"")
    );
}

#[test]
fn surge_one_unavailable_zero_walks_one_replica_at_a_time() {
    let s1 = spec(6, rolling(1, 0), "old");
    let mut st = State::initial(&s1, 0);
    let mut fleet = Fleet::default();
    fleet.sets.insert("old".into(), (6, 6));
    let s2 = spec(6, rolling(1, 0), "new");
    for t in 0..200 {
        st = step("web", &s2, &st, &fleet.observed(), t);
        let sizes: u32 = st.sets.iter().map(|s| s.replicas).sum();
        assert!(sizes <= 7, "sizes {sizes} at {t}: {st:?}");
        fleet.act(&st, true, true, true, &|_| true);
        assert!(fleet.running() <= 7);
        assert!(fleet.available() >= 6, "available {} at {t}", fleet.available());
        if st.complete(&s2) {
            let p = st.condition(ConditionType::Progressing).unwrap();
            assert_eq!(p.reason, REASON_NEW_SET_AVAILABLE);
            assert_eq!(st.set("old").unwrap().replicas, 0, "old kept as history at size 0");
            return;
        }
    }
    panic!("did not complete: {st:?}");
}

#[test]
fn recreate_stops_everything_first() {
    let s1 = spec(4, Strategy::Recreate, "old");
    let mut st = State::initial(&s1, 0);
    let mut fleet = Fleet::default();
    fleet.sets.insert("old".into(), (4, 4));
    let s2 = spec(4, Strategy::Recreate, "new");
    st = step("web", &s2, &st, &fleet.observed(), 1);
    assert_eq!(st.set("old").unwrap().replicas, 0);
    assert_eq!(st.set("new").unwrap().replicas, 0, "new waits while old replicas run");
    fleet.sets.insert("old".into(), (0, 0));
    st = step("web", &s2, &st, &fleet.observed(), 2);
    assert_eq!(st.set("new").unwrap().replicas, 4);
}

#[test]
fn a_stalled_rollout_exceeds_its_deadline_and_pause_stops_the_clock() {
    let mut s2 = spec(2, rolling(1, 0), "bad");
    s2.progress_deadline_s = 10;
    let s1 = spec(2, rolling(1, 0), "good");
    let mut st = State::initial(&s1, 0);
    let mut fleet = Fleet::default();
    fleet.sets.insert("good".into(), (2, 2));
    let bad = |h: &str| h != "bad";
    let mut t = 1_000;
    // Paused before the change: nothing moves, nothing times out.
    let mut paused = s2.clone();
    paused.paused = true;
    for _ in 0..30 {
        st = step("web", &paused, &st, &fleet.observed(), t);
        fleet.act(&st, true, true, true, &bad);
        t += 1_000;
    }
    assert!(st.set("bad").is_none(), "no new set while paused");
    assert_eq!(st.condition(ConditionType::Progressing).unwrap().reason, REASON_PAUSED);
    let resumed_at = t;
    let mut exceeded_at = None;
    for _ in 0..30 {
        st = step("web", &s2, &st, &fleet.observed(), t);
        fleet.act(&st, true, true, true, &bad);
        if st.timed_out() && exceeded_at.is_none() {
            exceeded_at = Some(t);
        }
        t += 1_000;
    }
    let at = exceeded_at.expect("deadline exceeded");
    assert!(
        at - resumed_at > 10_000 && at - resumed_at <= 13_000,
        "after about 10 s of no progress: {}",
        at - resumed_at
    );
    let p = st.condition(ConditionType::Progressing).unwrap();
    assert_eq!(p.status, ConditionStatus::False);
    assert_eq!(p.message, "ReplicaSet \"web-bad\" has timed out progressing.");
    assert_eq!(fleet.available(), 2, "the old replicas keep serving");
}

#[test]
fn undo_brings_an_old_template_back_as_the_next_revision() {
    let s1 = spec(2, rolling(1, 0), "one");
    let mut st = State::initial(&s1, 0);
    let mut fleet = Fleet::default();
    fleet.sets.insert("one".into(), (2, 2));
    let s2 = spec(2, rolling(1, 0), "two");
    for t in 0..50 {
        st = step("web", &s2, &st, &fleet.observed(), t);
        fleet.act(&st, true, true, true, &|_| true);
    }
    assert!(st.complete(&s2));
    st = step("web", &s1, &st, &fleet.observed(), 100);
    assert_eq!(st.set("one").unwrap().revision, 3);
    assert_eq!(st.newest().unwrap().hash, "one");
    assert_eq!(st.condition(ConditionType::Progressing).unwrap().reason, REASON_FOUND_NEW_SET);
    assert_eq!(st.sets.len(), 2, "no new set: the old one is reused");
}

#[test]
fn history_is_pruned_to_the_limit() {
    let mut st = State::initial(&spec(1, rolling(1, 0), "h0"), 0);
    let mut fleet = Fleet::default();
    for rev in 1..=6 {
        let mut s = spec(1, rolling(1, 0), &format!("h{rev}"));
        s.revision_history_limit = 2;
        for t in 0..20 {
            st = step("web", &s, &st, &fleet.observed(), rev * 100 + t);
            fleet.act(&st, true, true, true, &|_| true);
        }
        assert!(st.complete(&s));
    }
    let kept: Vec<&str> = st.sets.iter().map(|s| s.hash.as_str()).collect();
    assert_eq!(kept, ["h4", "h5", "h6"]);
}

#[test]
fn scaling_during_a_rollout_is_shared_in_proportion() {
    // Kubernetes' documented example: 10 replicas, maxSurge 3, maxUnavailable 2, mid-rollout
    // with 8 old and 5 new; scaled to 15: the 5 extra (to 18 with the surge) go 3 old, 2 new.
    let s = spec(15, rolling(3, 2), "new");
    let st = State {
        sets: vec![
            Set {
                hash: "old".into(),
                revision: 1,
                replicas: 8,
                change_cause: None,
                created_ms: 0,
                waves: Default::default(),
            },
            Set {
                hash: "new".into(),
                revision: 2,
                replicas: 5,
                change_cause: None,
                created_ms: 0,
                waves: Default::default(),
            },
        ],
        desired: 10,
        ..State::default()
    };
    let next = step("web", &s, &st, &BTreeMap::new(), 1);
    assert_eq!(next.set("old").unwrap().replicas, 11);
    assert_eq!(next.set("new").unwrap().replicas, 7);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// On any fleet that starts, stops and readies replicas at any pace, a rolling update
    /// never runs more than `replicas + maxSurge`, never has fewer than `replicas -
    /// maxUnavailable` available, and completes.
    #[test]
    fn rolling_updates_stay_within_their_bounds(
        replicas in 1u32..12,
        surge in 0u32..4,
        unavailable in 0u32..4,
        moves in proptest::collection::vec((any::<bool>(), any::<bool>(), any::<bool>()), 400),
        lag in any::<bool>(),
    ) {
        let strategy = rolling(surge, unavailable);
        let (max_surge, max_unavailable) = strategy.fenceposts(replicas);
        let mut st = State::initial(&spec(replicas, strategy, "old"), 0);
        let mut fleet = Fleet::default();
        fleet.sets.insert("old".into(), (replicas, replicas));
        let s2 = spec(replicas, strategy, "new");
        let mut seen = fleet.observed();
        let mut last = fleet.observed();
        let mut done = false;
        for (t, (starts, stops, readies)) in moves.iter().enumerate() {
            st = step("web", &s2, &st, &seen, t as u64);
            fleet.act(&st, *starts, *stops, *readies, &|_| true);
            prop_assert!(fleet.running() <= replicas + max_surge, "running {} at {t}", fleet.running());
            prop_assert!(
                fleet.available() >= replicas.saturating_sub(max_unavailable),
                "available {} at {t}", fleet.available()
            );
            // With `lag`, the coordinator sees the fleet one step late.
            let truth = fleet.observed();
            seen = if lag { std::mem::replace(&mut last, truth) } else { truth };
            if st.complete(&s2) { done = true; break; }
        }
        // Then let every move happen, and it must finish.
        for t in 0..(20 * replicas as u64 + 50) {
            if done { break; }
            st = step("web", &s2, &st, &fleet.observed(), 1_000 + t);
            fleet.act(&st, true, true, true, &|_| true);
            done = st.complete(&s2);
        }
        prop_assert!(done, "did not complete: {:?} {:?}", st, fleet);
    }

    /// The step is a function of its inputs: the same record and observations give the same
    /// next record on every node.
    #[test]
    fn every_node_computes_the_same_step(replicas in 0u32..20, old in 0u32..20, new in 0u32..20, avail in 0u32..20) {
        let s = spec(replicas, Strategy::default(), "new");
        let st = State {
            sets: vec![
                Set { hash: "old".into(), revision: 1, replicas: old, change_cause: None, created_ms: 0, waves: Default::default() },
                Set { hash: "new".into(), revision: 2, replicas: new, change_cause: None, created_ms: 0, waves: Default::default() },
            ],
            desired: replicas,
            ..State::default()
        };
        let obs: BTreeMap<String, Observed> =
            [("old".to_string(), Observed { running: old, ready: avail.min(old), available: avail.min(old) })].into();
        prop_assert_eq!(step("web", &s, &st, &obs, 5), step("web", &s, &st, &obs, 5));
    }
}
