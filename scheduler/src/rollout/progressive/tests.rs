use super::*;

const R: u32 = 4;

fn metric(name: &str) -> MetricSpec {
    MetricSpec { name: name.into(), interval_ms: 1_000, count: 2, failure_limit: 0, inconclusive_limit: 0 }
}

fn canary_spec(hash: &str, steps: Vec<Step>) -> RolloutSpec {
    RolloutSpec {
        replicas: R,
        strategy: Progressive::Canary { steps, background: Vec::new(), starting_step: 0 },
        template_hash: hash.into(),
        change_cause: None,
        paused: false,
        revision_history_limit: 10,
        progress_deadline_ms: 600_000,
    }
}

fn blue_green_spec(hash: &str, auto: bool) -> RolloutSpec {
    RolloutSpec {
        strategy: Progressive::BlueGreen {
            auto_promotion: auto,
            auto_promotion_ms: None,
            scale_down_delay_ms: 30_000,
            preview_replicas: None,
        },
        ..canary_spec(hash, Vec::new())
    }
}

/// A fleet that runs exactly the recorded sizes, all available.
fn obedient(st: &State) -> BTreeMap<String, Observed> {
    st.sets
        .iter()
        .map(|s| (s.hash.clone(), Observed { running: s.replicas, ready: s.replicas, available: s.replicas }))
        .collect()
}

/// Steps until nothing changes (or 50 steps), the fleet following each decision.
fn settle(spec: &RolloutSpec, st: &mut State, p: &mut Progress, verbs: Verbs, now: u64) {
    for _ in 0..50 {
        let (s2, p2) = step(spec, st, p, &obedient(st), verbs, now);
        let same = s2 == *st && p2 == *p;
        (*st, *p) = (s2, p2);
        if same {
            return;
        }
    }
}

fn sizes(st: &State) -> Vec<(String, u32)> {
    st.sets.iter().map(|s| (s.hash.clone(), s.replicas)).collect()
}

#[test]
fn the_first_template_is_stable_at_once() {
    let (mut st, mut p) = (State::default(), Progress::default());
    settle(&canary_spec("v1", vec![Step::SetWeight(50)]), &mut st, &mut p, Verbs::default(), 0);
    assert_eq!(p.stable, "v1");
    assert_eq!(p.phase, Phase::Healthy);
    assert_eq!(sizes(&st), [("v1".into(), R)]);
    assert_eq!(p.split(), None);
}

#[test]
fn a_canary_walks_its_steps_and_is_promoted() {
    let steps = vec![Step::SetWeight(20), Step::Pause(Some(10_000)), Step::SetWeight(50), Step::Pause(None)];
    let (mut st, mut p) = (State::default(), Progress::default());
    settle(&canary_spec("v1", steps.clone()), &mut st, &mut p, Verbs::default(), 0);
    let spec = canary_spec("v2", steps);
    settle(&spec, &mut st, &mut p, Verbs::default(), 1_000);
    assert_eq!((p.step, p.weight, p.phase), (1, 20, Phase::Paused), "{p:?}");
    assert_eq!(p.split(), Some(("v2", 200)));
    assert_eq!(sizes(&st), [("v1".into(), R), ("v2".into(), 1)], "20 % of 4 rounds up to 1; stable stays whole");
    settle(&spec, &mut st, &mut p, Verbs::default(), 11_000);
    assert_eq!((p.step, p.weight, p.phase), (3, 50, Phase::Paused));
    assert_eq!(st.set("v2").unwrap().replicas, 2);
    // `promote` ends the indefinite pause; all steps done, the canary becomes stable.
    settle(&spec, &mut st, &mut p, Verbs { promote: 1, ..Verbs::default() }, 12_000);
    assert_eq!((p.stable.as_str(), p.canary.clone(), p.phase), ("v2", None, Phase::Healthy));
    assert_eq!(sizes(&st), [("v1".into(), 0), ("v2".into(), R)]);
    assert_eq!(st.set("v2").unwrap().revision, 2);
}

#[test]
fn a_failed_analysis_aborts_and_retry_starts_over() {
    let steps = vec![Step::SetWeight(25), Step::Analysis(vec![metric("t/success")]), Step::SetWeight(100)];
    let (mut st, mut p) = (State::default(), Progress::default());
    settle(&canary_spec("v1", steps.clone()), &mut st, &mut p, Verbs::default(), 0);
    let spec = canary_spec("v2", steps);
    settle(&spec, &mut st, &mut p, Verbs::default(), 1_000);
    assert_eq!(p.step, 1);
    assert_eq!(p.runs.len(), 1);
    assert!(p.runs[0].due(2_000) && !p.runs[0].due(1_999));
    p.runs[0].record(Outcome::Failed, "successRate=0.5".into(), 2_000);
    settle(&spec, &mut st, &mut p, Verbs::default(), 2_000);
    assert!(p.aborted);
    assert_eq!(p.phase, Phase::Degraded);
    assert_eq!(p.split(), Some(("v2", 0)), "gateways send the canary nothing");
    assert_eq!(st.set("v2").unwrap().replicas, 0);
    assert!(p.message.contains("t/success"), "{}", p.message);
    settle(&spec, &mut st, &mut p, Verbs { retry: 1, ..Verbs::default() }, 3_000);
    assert!(!p.aborted);
    assert_eq!((p.step, p.weight), (1, 25));
}

#[test]
fn an_inconclusive_analysis_pauses_until_promoted() {
    let steps = vec![Step::SetWeight(10), Step::Analysis(vec![metric("t/m")])];
    let (mut st, mut p) = (State::default(), Progress::default());
    settle(&canary_spec("v1", steps.clone()), &mut st, &mut p, Verbs::default(), 0);
    let spec = canary_spec("v2", steps);
    settle(&spec, &mut st, &mut p, Verbs::default(), 1_000);
    p.runs[0].record(Outcome::Inconclusive, "requests=3".into(), 2_000);
    settle(&spec, &mut st, &mut p, Verbs::default(), 2_000);
    assert_eq!(p.phase, Phase::Paused);
    assert_eq!(p.canary.as_deref(), Some("v2"), "not promoted");
    settle(&spec, &mut st, &mut p, Verbs { promote: 1, ..Verbs::default() }, 3_000);
    assert_eq!((p.stable.as_str(), p.phase), ("v2", Phase::Healthy));
}

#[test]
fn measurements_settle_a_run() {
    let mut run = AnalysisRun::new(MetricSpec { failure_limit: 1, ..metric("m") }, false, 0);
    run.record(Outcome::Failed, String::new(), 1_000);
    assert_eq!(run.phase, RunPhase::Running, "one failure is within the limit");
    run.record(Outcome::Successful, String::new(), 2_000);
    assert_eq!(run.phase, RunPhase::Successful, "count 2 reached");
    let mut run = AnalysisRun::new(MetricSpec { failure_limit: 1, count: 5, ..metric("m") }, false, 0);
    run.record(Outcome::Failed, String::new(), 1_000);
    run.record(Outcome::Failed, String::new(), 2_000);
    assert_eq!(run.phase, RunPhase::Failed);
}

#[test]
fn blue_green_previews_then_switches_and_scales_the_old_down_later() {
    let (mut st, mut p) = (State::default(), Progress::default());
    settle(&blue_green_spec("blue", false), &mut st, &mut p, Verbs::default(), 0);
    let spec = blue_green_spec("green", false);
    settle(&spec, &mut st, &mut p, Verbs::default(), 1_000);
    assert_eq!((p.stable.as_str(), p.canary.as_deref(), p.phase), ("blue", Some("green"), Phase::Paused));
    assert_eq!(sizes(&st), [("blue".into(), R), ("green".into(), R)]);
    settle(&spec, &mut st, &mut p, Verbs { promote: 1, ..Verbs::default() }, 2_000);
    assert_eq!((p.stable.as_str(), p.canary.clone()), ("green", None));
    assert_eq!(sizes(&st), [("blue".into(), R), ("green".into(), R)], "the old active set waits for its delay");
    settle(&spec, &mut st, &mut p, Verbs { promote: 1, ..Verbs::default() }, 31_999);
    assert_eq!(st.set("blue").unwrap().replicas, R);
    settle(&spec, &mut st, &mut p, Verbs { promote: 1, ..Verbs::default() }, 32_000);
    assert_eq!(st.set("blue").unwrap().replicas, 0);
    assert_eq!(p.phase, Phase::Healthy);
}

#[test]
fn blue_green_auto_promotes_when_the_preview_is_ready() {
    let (mut st, mut p) = (State::default(), Progress::default());
    settle(&blue_green_spec("blue", true), &mut st, &mut p, Verbs::default(), 0);
    settle(&blue_green_spec("green", true), &mut st, &mut p, Verbs::default(), 1_000);
    assert_eq!(p.stable, "green");
}

#[test]
fn a_canary_that_never_gets_available_is_degraded_at_the_deadline() {
    let steps = vec![Step::SetWeight(20), Step::Pause(None)];
    let (mut st, mut p) = (State::default(), Progress::default());
    settle(&canary_spec("v1", steps.clone()), &mut st, &mut p, Verbs::default(), 0);
    let spec = RolloutSpec { progress_deadline_ms: 10_000, ..canary_spec("v2", steps) };
    // The fleet runs the canary but it never gets ready.
    let never = |st: &State| -> BTreeMap<String, Observed> {
        st.sets
            .iter()
            .map(|s| {
                let ready = if s.hash == "v2" { 0 } else { s.replicas };
                (s.hash.clone(), Observed { running: s.replicas, ready, available: ready })
            })
            .collect()
    };
    let (s2, p2) = step(&spec, &st, &p, &never(&st), Verbs::default(), 1_000);
    (st, p) = (s2, p2);
    assert_eq!(p.phase, Phase::Progressing);
    let (s2, p2) = step(&spec, &st, &p, &never(&st), Verbs::default(), 11_001);
    (st, p) = (s2, p2);
    assert_eq!(p.phase, Phase::Degraded, "{p:?}");
    assert!(p.message.starts_with("ProgressDeadlineExceeded"), "{}", p.message);
    assert!(!p.aborted, "degraded, not aborted (Argo's default)");
    assert_eq!(st.set("v1").unwrap().replicas, R, "the stable keeps serving");
}
