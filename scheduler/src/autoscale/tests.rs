//! Cases from the Kubernetes documentation (HorizontalPodAutoscaler, "Algorithm details" and
//! "Configurable scaling behavior") and from the replica calculator's rules.

use super::*;

/// A wall time (ms) to start from, as real clocks are far from 0.
const T0: u64 = 1_800_000_000_000;

fn cpu(target: u32) -> MetricSpec {
    MetricSpec { name: "cpu".into(), target: Target::Utilization(target), readiness_matters: true }
}

fn rps(target: f64) -> MetricSpec {
    MetricSpec { name: "requests_per_second".into(), target: Target::AverageValue(target), readiness_matters: false }
}

/// Ready replicas using `used` millicores of a 1000m request each (None: no metric).
fn cores(used: &[Option<f64>]) -> Vec<Sample> {
    used.iter().map(|v| Sample { pending: false, ready: true, value: *v, request: Some(1000.0) }).collect()
}

fn values(v: &[f64]) -> Vec<Sample> {
    v.iter().map(|v| Sample { pending: false, ready: true, value: Some(*v), request: None }).collect()
}

fn replicas(spec: &MetricSpec, current: u32, samples: &[Sample]) -> u32 {
    replicas_for_metric(spec, current, samples).unwrap().replicas
}

#[test]
fn the_ratio_of_current_to_target_scales_the_replicas() {
    // "if the current metric value is 200m, and the desired value is 100m, the number of
    // replicas will be doubled ... If the current value is instead 50m, you'll halve".
    assert_eq!(replicas(&rps(100.0), 4, &values(&[200.0; 4])), 8);
    assert_eq!(replicas(&rps(100.0), 4, &values(&[50.0; 4])), 2);
    // desiredReplicas = ceil[currentReplicas * (currentMetricValue / desiredMetricValue)].
    assert_eq!(replicas(&cpu(50), 3, &cores(&[Some(700.0), Some(800.0), Some(900.0)])), 5);
    let p = replicas_for_metric(&cpu(50), 3, &cores(&[Some(700.0), Some(800.0), Some(900.0)])).unwrap();
    assert!((p.current - 80.0).abs() < 1e-9, "shown as 80 % of the request");
}

#[test]
fn within_the_tolerance_nothing_changes() {
    // ±5 % of noise around the target: no change (tolerance 0.1).
    assert_eq!(replicas(&cpu(50), 3, &cores(&[Some(520.0), Some(525.0), Some(530.0)])), 3);
    assert_eq!(replicas(&cpu(50), 3, &cores(&[Some(475.0), Some(480.0), Some(470.0)])), 3);
    assert_eq!(replicas(&rps(10.0), 2, &values(&[10.9, 10.9])), 2);
    // Just past it.
    assert_eq!(replicas(&rps(10.0), 2, &values(&[11.2, 11.2])), 3);
}

#[test]
fn unready_replicas_count_as_zero_on_a_scale_up() {
    // Kubernetes' ScaleUpUnreadyLessScale: usage 300m (unready), 500m, 700m of 1 core, target
    // 30 %: the ready ones are at 60 % (ratio 2), the unready one counts as 0 % (40 %, ratio
    // 1.33): 4 replicas, not 6.
    let mut s = cores(&[Some(300.0), Some(500.0), Some(700.0)]);
    s[0].ready = false;
    let p = replicas_for_metric(&cpu(30), 3, &s).unwrap();
    assert_eq!(p.replicas, 4);
    assert!((p.current - 60.0).abs() < 1e-9);
    // When that would reverse the direction, nothing happens: ready at 40 % of a 30 % target,
    // three unready at 0 % bring it to 10 %.
    let mut s = cores(&[Some(400.0), Some(0.0), Some(0.0), Some(0.0)]);
    for x in &mut s[1..] {
        x.ready = false;
    }
    assert_eq!(replicas(&cpu(30), 4, &s), 4);
    // Readiness only matters for cpu (as in Kubernetes): an unready replica's rps counts.
    let mut s = values(&[30.0, 30.0]);
    s[0].ready = false;
    assert_eq!(replicas(&rps(10.0), 2, &s), 6);
}

#[test]
fn missing_metrics_count_as_full_on_a_scale_down_and_empty_on_a_scale_up() {
    // Scale-up: 90 % on two, one missing counts as 0 %: 60 % of a 50 % target, ratio 1.2 → 4.
    assert_eq!(replicas(&cpu(50), 3, &cores(&[Some(900.0), Some(900.0), None])), 4);
    // Scale-down: 10 % on two, two missing count as 100 %: 55 %, above the target, which
    // would reverse the direction: nothing happens.
    assert_eq!(replicas(&cpu(50), 4, &cores(&[Some(100.0), Some(100.0), None, None])), 4);
    // Scale-down with one missing: (10+10+100)/3 = 40 %, ratio 0.8: ceil(0.8 × 3) = 3.
    assert_eq!(replicas(&cpu(50), 3, &cores(&[Some(100.0), Some(100.0), None])), 3);
    // An average-value metric fills in the target itself on a scale-down: (1+1+10)/3 = 4 of
    // 10, ceil(0.4 × 3) = 2.
    let mut s = values(&[1.0, 1.0]);
    s.push(Sample { ready: true, ..Sample::default() });
    assert_eq!(replicas(&rps(10.0), 3, &s), 2);
}

#[test]
fn pending_replicas_are_left_out_and_bad_input_is_an_error() {
    let mut s = cores(&[Some(900.0), Some(900.0)]);
    s.push(Sample { pending: true, ..Sample::default() });
    // Pending is ignored: 90 % on 2 of a 50 % target → ceil(1.8 × 2) = 4.
    assert_eq!(replicas(&cpu(50), 3, &s), 4);
    assert_eq!(replicas_for_metric(&cpu(50), 0, &[]), Err(MetricError::NoReplicas));
    assert_eq!(replicas_for_metric(&cpu(50), 1, &cores(&[None])), Err(MetricError::NoMetrics));
    let no_request = vec![Sample { ready: true, value: Some(1.0), ..Sample::default() }];
    assert_eq!(replicas_for_metric(&cpu(50), 1, &no_request), Err(MetricError::MissingRequest("cpu".into())));
}

fn spec(min: u32, max: u32, metrics: Vec<MetricSpec>) -> Spec {
    Spec { min, max, metrics, up: Rules::default_up(), down: Rules::default_down() }
}

fn condition(d: &Decision, t: ConditionType) -> (bool, String) {
    let c = d.conditions.iter().find(|c| c.type_ == t).unwrap();
    (c.status, c.reason.clone())
}

#[test]
fn the_highest_proposal_wins_and_the_bounds_hold() {
    let s = spec(1, 10, vec![cpu(50), rps(10.0)]);
    let mut h = History::default();
    // cpu asks for 2 (at 100 %), rps for 3.
    let d = decide(&s, 1, &[cores(&[Some(1000.0)]), values(&[30.0])], &mut h, T0);
    assert_eq!(d.replicas, 3);
    assert_eq!(d.reason.as_deref(), Some("New size: 3; reason: pods metric requests_per_second above target"));
    assert_eq!(condition(&d, ConditionType::ScalingActive), (true, "ValidMetricFound".into()));
    // Above the maximum: held at it.
    let d = decide(&spec(1, 4, vec![rps(10.0)]), 4, &[values(&[100.0; 4])], &mut History::default(), T0);
    assert_eq!(d.replicas, 4);
    assert_eq!(condition(&d, ConditionType::ScalingLimited), (true, "TooManyReplicas".into()));
    // Outside the bounds already: back within them, whatever the metrics say.
    let d = decide(&spec(2, 4, vec![rps(10.0)]), 7, &[values(&[10.0; 7])], &mut History::default(), T0);
    assert_eq!(d.replicas, 4);
    assert_eq!(d.reason.as_deref(), Some("New size: 4; reason: Current number of replicas above Spec.MaxReplicas"));
}

#[test]
fn a_target_scaled_to_zero_by_hand_disables_scaling() {
    let d = decide(&spec(1, 4, vec![cpu(50)]), 0, &[vec![]], &mut History::default(), T0);
    assert_eq!(d.replicas, 0);
    assert_eq!(condition(&d, ConditionType::ScalingActive), (false, "ScalingDisabled".into()));
    // With minReplicas 0 (scale to zero), zero is a size like any: it stays until activated.
    let d = decide(&spec(0, 4, vec![rps(10.0)]), 0, &[vec![]], &mut History::default(), T0);
    assert_eq!(d.replicas, 0);
    assert!(!condition(&d, ConditionType::ScalingActive).0);
}

#[test]
fn scale_up_adds_at_most_four_pods_or_doubles_per_15_seconds() {
    // "4 pods or a 100% of the currently running replicas may at most be added every 15
    // seconds till the HPA reaches its steady state."
    let s = spec(1, 20, vec![rps(10.0)]);
    let mut h = History::default();
    let d = decide(&s, 1, &[values(&[200.0])], &mut h, T0);
    assert_eq!(d.replicas, 5, "1 + 4 pods beats 1 × 2");
    assert_eq!(condition(&d, ConditionType::ScalingLimited), (true, "ScaleUpLimit".into()));
    // Within the same 15 s, the period started at 1: still 5.
    let d = decide(&s, 5, &[values(&[40.0; 5])], &mut h, T0 + 5_000);
    assert_eq!(d.replicas, 5);
    // A new period: 5 × 2 = 10 beats 5 + 4.
    let d = decide(&s, 5, &[values(&[40.0; 5])], &mut h, T0 + 16_000);
    assert_eq!(d.replicas, 10);
    let d = decide(&s, 10, &[values(&[20.0; 10])], &mut h, T0 + 32_000);
    assert_eq!(d.replicas, 20);
}

#[test]
fn scale_down_waits_for_the_stabilization_window() {
    // "stabilizationWindowSeconds ... the highest recommendation in the window is used".
    let s = spec(1, 10, vec![rps(10.0)]);
    let mut h = History::default();
    assert_eq!(decide(&s, 4, &[values(&[10.0; 4])], &mut h, T0).replicas, 4);
    for t in (15..300).step_by(15) {
        let d = decide(&s, 4, &[values(&[1.0; 4])], &mut h, T0 + t * 1000);
        assert_eq!(d.replicas, 4, "at {t} s the window still holds 4");
        assert_eq!(condition(&d, ConditionType::AbleToScale), (true, "ScaleDownStabilized".into()));
    }
    let d = decide(&s, 4, &[values(&[1.0; 4])], &mut h, T0 + 301_000);
    assert_eq!(d.replicas, 1);
    assert_eq!(d.reason.as_deref(), Some("New size: 1; reason: All metrics below target"));
    assert!(h.recommendations.len() <= 2, "runs of one value are one entry: {:?}", h.recommendations);
}

#[test]
fn scale_down_policies_select_the_largest_change_unless_told_otherwise() {
    // The documentation's example: Pods 4 and Percent 10 per 60 s, at 80 replicas: the pods
    // policy removes 4, the percent one 8; `Max` (default) takes 8, `Min` 4.
    let mut s = spec(1, 100, vec![rps(10.0)]);
    s.down = Rules {
        stabilization_s: 0,
        select: Select::Max,
        policies: vec![
            Policy { kind: PolicyKind::Pods, value: 4, period_s: 60 },
            Policy { kind: PolicyKind::Percent, value: 10, period_s: 60 },
        ],
    };
    let mut h = History::default();
    assert_eq!(decide(&s, 80, &[values(&[1.0; 80])], &mut h, T0).replicas, 72);
    // Within the period, nothing more.
    assert_eq!(decide(&s, 72, &[values(&[1.0; 72])], &mut h, T0 + 30_000).replicas, 72);
    // Next period: 10 % of 72 is 7.2, rounded up to 8 removed.
    assert_eq!(decide(&s, 72, &[values(&[1.0; 72])], &mut h, T0 + 61_000).replicas, 64);
    s.down.select = Select::Min;
    assert_eq!(decide(&s, 80, &[values(&[1.0; 80])], &mut History::default(), T0).replicas, 76);
    s.down.select = Select::Disabled;
    let d = decide(&s, 80, &[values(&[1.0; 80])], &mut History::default(), T0);
    assert_eq!(d.replicas, 80, "selectPolicy: Disabled never scales down");
    assert_eq!(condition(&d, ConditionType::ScalingLimited), (true, "ScaleDownLimit".into()));
}

#[test]
fn an_invalid_metric_blocks_a_scale_down_but_not_a_scale_up() {
    let s = spec(1, 10, vec![cpu(50), rps(10.0)]);
    // cpu has no metrics; rps says scale down: no change.
    let d = decide(&s, 4, &[cores(&[None; 4]), values(&[1.0; 4])], &mut History::default(), T0);
    assert_eq!(d.replicas, 4);
    assert_eq!(condition(&d, ConditionType::ScalingActive), (false, "FailedGetResourceMetric".into()));
    // rps says scale up: it does.
    let d = decide(&s, 4, &[cores(&[None; 4]), values(&[20.0; 4])], &mut History::default(), T0);
    assert_eq!(d.replicas, 8);
}

#[test]
fn a_successor_continues_from_the_recorded_history() {
    // The history is data: a node that takes over mid-window makes the same decision.
    let s = spec(1, 10, vec![rps(10.0)]);
    let mut h = History::default();
    decide(&s, 4, &[values(&[10.0; 4])], &mut h, T0);
    let json = serde_json::to_string(&h).unwrap();
    let mut copy: History = serde_json::from_str(&json).unwrap();
    let a = decide(&s, 4, &[values(&[1.0; 4])], &mut h, T0 + 100_000);
    let b = decide(&s, 4, &[values(&[1.0; 4])], &mut copy, T0 + 100_000);
    assert_eq!(a, b);
    assert_eq!(a.replicas, 4);
}
