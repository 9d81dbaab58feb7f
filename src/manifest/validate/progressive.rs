//! Checks on Argo Rollouts' kinds: a [`Rollout`]'s strategy and canary steps (weights, pauses,
//! analysis references) and services, and an [`AnalysisTemplate`]'s metrics (intervals, counts,
//! conditions, provider). The pod template and selector of a Rollout get the Deployment rules
//! from the parent module.

use std::collections::BTreeSet;

use super::super::condition::Condition;
use super::super::locate::{join_index, join_key};
use super::super::progressive::{
    AnalysisTemplate, AnalysisTemplateRef, BlueGreenStrategy, CanaryStep, CanaryStrategy, Rollout, RolloutStrategy,
    parse_pause_duration,
};
use super::super::quantity::parse_duration;
use super::{Issues, MAX_REPLICAS, TemplateOf, dns_label, selector, template};

pub(super) fn rollout(r: &Rollout, out: &mut Issues) {
    let spec = &r.spec;
    if spec.replicas() > MAX_REPLICAS {
        out.push("spec.replicas", format!("must be at most {MAX_REPLICAS} (got {})", spec.replicas()));
    }
    selector(&spec.selector, &spec.template, out);
    strategy(&spec.strategy, out);
    template(&spec.template, TemplateOf::Service, out);
    out.unsupported(
        "spec",
        "workloadRef",
        &spec.workload_ref,
        "a Rollout does not adopt a Deployment; put the pod template in `spec.template`",
    );
    out.unsupported(
        "spec",
        "analysis",
        &spec.analysis,
        "analysis runs are not kept as objects, so there is no history to limit",
    );
    out.unsupported("spec", "restartAt", &spec.restart_at, "restart the replicas with `wasmfleet rollout restart`");
    out.unsupported(
        "spec",
        "rollbackWindow",
        &spec.rollback_window,
        "roll back to any kept revision with `wasmfleet rollout undo`",
    );
}

fn strategy(s: &RolloutStrategy, out: &mut Issues) {
    match (&s.canary, &s.blue_green) {
        (None, None) => out.push("spec.strategy", "exactly one of `canary` or `blueGreen` is required"),
        (Some(_), Some(_)) => out.push("spec.strategy", "must have exactly one of `canary` or `blueGreen`, not both"),
        _ => {}
    }
    if let Some(c) = &s.canary {
        canary(c, out);
    }
    if let Some(b) = &s.blue_green {
        blue_green(b, out);
    }
}

/// Checks a Service name a strategy refers to.
fn service_name(path: String, name: &str, out: &mut Issues) {
    if let Err(e) = dns_label(name) {
        out.push(path, e);
    }
}

const NO_METADATA: &str = "revisions are told apart by the gateways, not by labels on their replicas";
const SPREAD: &str = "wasmfleet spreads replicas across nodes and zones by itself";

fn canary(c: &CanaryStrategy, out: &mut Issues) {
    let base = "spec.strategy.canary";
    for (field, name) in [("canaryService", &c.canary_service), ("stableService", &c.stable_service)] {
        if let Some(n) = name {
            service_name(join_key(base, field), n, out);
        }
    }
    if let (Some(canary), Some(stable)) = (&c.canary_service, &c.stable_service)
        && canary == stable
    {
        out.push(
            join_key(base, "stableService"),
            format!("must differ from canaryService ({canary:?}): the canary and the stable revision each need their own Service"),
        );
    }

    let steps_base = join_key(base, "steps");
    let mut highest: Option<i64> = None;
    for (i, s) in c.steps.iter().enumerate() {
        step(s, &join_index(&steps_base, i), &mut highest, out);
    }

    if let Some(a) = &c.analysis {
        let abase = join_key(base, "analysis");
        template_refs(&abase, &a.templates, out);
        if let Some(n) = a.starting_step
            && n > 0
            && n as usize >= c.steps.len()
        {
            let has = match c.steps.len() {
                0 => "the canary has no steps".to_owned(),
                1 => "the canary has 1 step, numbered 0".to_owned(),
                len => format!("the canary has {len} steps, numbered 0 to {}", len - 1),
            };
            out.push(join_key(&abase, "startingStep"), format!("is beyond the last step: {has}"));
        }
        analysis_unsupported(&abase, [&a.args, &a.dry_run, &a.measurement_retention, &a.analysis_run_metadata], out);
    }

    let no_surge =
        "traffic is split by weight at the gateways, so replicas are not surged: `setWeight` sizes the canary";
    out.unsupported(base, "maxSurge", &c.max_surge, no_surge);
    out.unsupported(base, "maxUnavailable", &c.max_unavailable, no_surge);
    out.unsupported(
        base,
        "trafficRouting",
        &c.traffic_routing,
        "traffic is split by every wasmfleet gateway; no trafficRouting is needed",
    );
    let no_delay = "replicas finish in-flight requests within `terminationGracePeriodSeconds` before they stop";
    out.unsupported(base, "scaleDownDelaySeconds", &c.scale_down_delay_seconds, no_delay);
    out.unsupported(base, "abortScaleDownDelaySeconds", &c.abort_scale_down_delay_seconds, no_delay);
    out.unsupported(base, "antiAffinity", &c.anti_affinity, SPREAD);
    out.unsupported(
        base,
        "dynamicStableScale",
        &c.dynamic_stable_scale,
        "the stable revision keeps its replicas until the canary is promoted, so an abort is instant",
    );
    out.unsupported(base, "canaryMetadata", &c.canary_metadata, NO_METADATA);
    out.unsupported(base, "stableMetadata", &c.stable_metadata, NO_METADATA);
}

/// One canary step; `highest` is the highest valid weight of the steps before it.
fn step(s: &CanaryStep, base: &str, highest: &mut Option<i64>, out: &mut Issues) {
    let unsupported = [
        (
            "experiment",
            &s.experiment,
            "there are no experiments; run the new revision as the canary and add an `analysis` step",
        ),
        ("setCanaryScale", &s.set_canary_scale, "the canary is sized by `setWeight`"),
        ("setHeaderRoute", &s.set_header_route, "the gateways split traffic by weight only; use `setWeight`"),
        (
            "setMirrorRoute",
            &s.set_mirror_route,
            "the gateways do not mirror traffic; use `setWeight` with a small weight",
        ),
        ("plugin", &s.plugin, "there are no step plugins"),
    ];
    let mut found: Vec<&str> =
        [("setWeight", s.set_weight.is_some()), ("pause", s.pause.is_some()), ("analysis", s.analysis.is_some())]
            .into_iter()
            .filter(|(_, present)| *present)
            .map(|(name, _)| name)
            .collect();
    for (field, value, why) in unsupported {
        out.unsupported(base, field, value, why);
        if value.is_some() {
            found.push(field);
        }
    }
    let one_of = "a step has exactly one of `setWeight`, `pause` or `analysis`";
    match found.as_slice() {
        [] => out.push(base, format!("{one_of} (found none; `pause: {{}}` pauses until promoted)")),
        [_] => {}
        [several @ .., last] => {
            let names: Vec<String> = several.iter().map(|n| format!("`{n}`")).collect();
            out.push(base, format!("{one_of} (found {} and `{last}`)", names.join(", ")));
        }
    }

    if let Some(w) = s.set_weight {
        let path = join_key(base, "setWeight");
        if !(0..=100).contains(&w) {
            out.push(path, format!("must be between 0 and 100 (got {w})"));
        } else {
            if let Some(prev) = *highest
                && w < prev
            {
                out.push(
                    path,
                    format!(
                        "must not be lower than an earlier step's weight ({prev}): to send traffic back, use \
                         `wasmfleet rollout abort`"
                    ),
                );
            }
            *highest = Some(highest.map_or(w, |h| h.max(w)));
        }
    }
    if let Some(d) = s.pause.as_ref().and_then(|p| p.duration.as_ref())
        && let Err(e) = parse_pause_duration(d)
    {
        out.push(join_key(&join_key(base, "pause"), "duration"), e);
    }
    if let Some(a) = &s.analysis {
        let abase = join_key(base, "analysis");
        template_refs(&abase, &a.templates, out);
        analysis_unsupported(&abase, [&a.args, &a.dry_run, &a.measurement_retention, &a.analysis_run_metadata], out);
    }
}

fn template_refs(base: &str, refs: &[AnalysisTemplateRef], out: &mut Issues) {
    let tbase = join_key(base, "templates");
    if refs.is_empty() {
        out.push(&tbase, "at least one template is required: `templates: [{templateName: NAME}]`");
    }
    for (i, r) in refs.iter().enumerate() {
        let rbase = join_index(&tbase, i);
        if r.template_name.is_empty() {
            out.push(
                join_key(&rbase, "templateName"),
                "is required: the name of an AnalysisTemplate in the Rollout's namespace",
            );
        } else if let Err(e) = dns_label(&r.template_name) {
            out.push(join_key(&rbase, "templateName"), e);
        }
        out.unsupported(
            &rbase,
            "clusterScope",
            &r.cluster_scope,
            "there are no cluster-wide templates; reference an AnalysisTemplate in the Rollout's namespace",
        );
    }
}

/// `args`, `dryRun`, `measurementRetention` and `analysisRunMetadata` of an analysis reference.
fn analysis_unsupported(base: &str, values: [&Option<serde_yaml::Value>; 4], out: &mut Issues) {
    let [args, dry_run, retention, metadata] = values;
    out.unsupported(base, "args", args, NO_ARGS);
    out.unsupported(base, "dryRun", dry_run, NO_DRY_RUN);
    out.unsupported(base, "measurementRetention", retention, NO_RETENTION);
    out.unsupported(base, "analysisRunMetadata", metadata, "analysis runs are not kept as objects");
}

const NO_ARGS: &str = "templates take no arguments: the built-in provider measures the revision under analysis";
const NO_DRY_RUN: &str = "every metric decides its analysis; watch figures without acting with a `pause` step";
const NO_RETENTION: &str = "measurements are not kept as objects";

fn blue_green(b: &BlueGreenStrategy, out: &mut Issues) {
    let base = "spec.strategy.blueGreen";
    if b.active_service.is_empty() {
        out.push(join_key(base, "activeService"), "is required: the Service that sends traffic to the active revision");
    } else {
        service_name(join_key(base, "activeService"), &b.active_service, out);
    }
    if let Some(p) = &b.preview_service {
        service_name(join_key(base, "previewService"), p, out);
        if *p == b.active_service {
            out.push(
                join_key(base, "previewService"),
                format!(
                    "must differ from activeService ({p:?}): the preview Service reaches the new revision before it is promoted"
                ),
            );
        }
    }
    if b.preview_replica_count == Some(0) {
        out.push(
            join_key(base, "previewReplicaCount"),
            "must be at least 1: the new revision is previewed before it is promoted",
        );
    }
    let analysis = "analysis runs in canary steps; use a canary with an `analysis` step";
    out.unsupported(base, "prePromotionAnalysis", &b.pre_promotion_analysis, analysis);
    out.unsupported(base, "postPromotionAnalysis", &b.post_promotion_analysis, analysis);
    out.unsupported(base, "antiAffinity", &b.anti_affinity, SPREAD);
    out.unsupported(base, "activeMetadata", &b.active_metadata, NO_METADATA);
    out.unsupported(base, "previewMetadata", &b.preview_metadata, NO_METADATA);
}

pub(super) fn analysis_template(t: &AnalysisTemplate, out: &mut Issues) {
    let spec = &t.spec;
    if spec.metrics.is_empty() {
        out.push("spec.metrics", "at least one metric is required");
    }
    let mut names = BTreeSet::new();
    for (i, m) in spec.metrics.iter().enumerate() {
        let base = join_index("spec.metrics", i);
        if m.name.is_empty() {
            out.push(join_key(&base, "name"), "is required");
        } else if !names.insert(m.name.as_str()) {
            out.push(join_key(&base, "name"), format!("duplicate metric name {:?}", m.name));
        }
        if let Some(s) = &m.interval {
            match parse_duration(s) {
                Ok(d) if d.is_zero() => out.push(join_key(&base, "interval"), "must be longer than 0"),
                Ok(_) => {}
                Err(e) => out.push(join_key(&base, "interval"), e),
            }
        }
        if m.count == Some(0) {
            out.push(join_key(&base, "count"), "must be at least 1");
        }
        for (field, text) in [("successCondition", &m.success_condition), ("failureCondition", &m.failure_condition)] {
            if let Some(text) = text
                && let Err(e) = Condition::parse(text)
            {
                out.push(join_key(&base, field), e.to_string());
            }
        }
        if m.success_condition.is_none() && m.failure_condition.is_none() {
            out.push(
                join_key(&base, "successCondition"),
                "is required unless failureCondition is set: for example \"successRate >= 0.99\"",
            );
        }

        let pbase = join_key(&base, "provider");
        let mut other = false;
        for (field, value) in m.provider.others() {
            out.unsupported(&pbase, field, value, "wasmfleet measures traffic itself; use `provider: {wasmfleet: {}}`");
            other |= value.is_some();
        }
        if m.provider.wasmfleet.is_none() && !other {
            out.push(&pbase, "must be `{wasmfleet: {}}`: the gateways' own figures for the revision under analysis");
        }
        out.unsupported(
            &base,
            "initialDelay",
            &m.initial_delay,
            "start the analysis later with a `pause` step or `startingStep`",
        );
        out.unsupported(
            &base,
            "consecutiveErrorLimit",
            &m.consecutive_error_limit,
            "the built-in provider does not fail to measure: an interval with too few requests is inconclusive",
        );
    }
    out.unsupported("spec", "args", &spec.args, NO_ARGS);
    out.unsupported("spec", "dryRun", &spec.dry_run, NO_DRY_RUN);
    out.unsupported("spec", "measurementRetention", &spec.measurement_retention, NO_RETENTION);
}
