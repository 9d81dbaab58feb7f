//! The command line: `wasmfleet agent`, and kubectl-like client commands.
//!
//! Map: [`args`] (what the command line accepts, clap), [`commands`] (what each command does),
//! [`rollout`] (`rollout ...` and `set image`), [`print`] (tables as kubectl prints them),
//! [`demo`] (the quick start). kubectl's words, pure and golden-tested: [`status`] (`rollout
//! status`), [`history`] (`rollout history`), [`deployment`] (`get`, `-o yaml` status,
//! `describe` lines), [`describe`], [`template`] (a pod template), [`tabs`] (Go's tabwriter),
//! [`resource`] (`deployment/NAME`).

pub mod args;
mod commands;
pub mod demo;
mod deployment;
mod describe;
mod history;
mod hpa;
mod print;
pub mod resource;
mod rollout;
mod rollouts;
mod status;
mod storage;
mod tabs;
mod template;

use anyhow::{Context as _, Result, bail};

pub use args::{AgentArgs, Cli, Command, Output, RolloutCommand, RunArgs, SetCommand, TokenAction, WriteArgs};
pub use print::{kubectl_name, print_table};

use self::args::parse_ttl;
use self::commands::*;
use crate::control::api::{ObjectView, PushResponse};
use crate::control::client::encode;
use crate::manifest::Kind;

/// Runs the CLI; returns the process exit code.
pub fn run(cli: Cli) -> Result<i32> {
    match &cli.command {
        Command::Agent(a) => run_agent(&cli, a),
        Command::Demo(d) => crate::cli::demo::run(d, cli.data_dir.clone()),
        Command::Push { name, file, write } => {
            let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
            let written = cli.client()?.write_bytes::<PushResponse>(
                &format!("/v1/modules?name={}", encode(name)),
                "application/wasm",
                &bytes,
            )?;
            let r = written.body;
            println!(
                "pushed {} ({}, {} KiB, {}){}",
                r.name.unwrap_or_default(),
                r.kind_description,
                r.size_bytes.div_ceil(1024),
                r.digest,
                if r.copies > 1 { format!(", on {} nodes", r.copies) } else { String::new() }
            );
            Ok(write.exit_code(report_durability(written.durability)))
        }
        Command::Apply { files, write } => apply(&cli, files, *write),
        Command::Get { kind, name, output } => get(&cli, kind, name.as_deref(), *output),
        Command::Describe { kind, name } => describe(&cli, kind, name.as_deref()),
        Command::Delete { kind, name, files, write } => delete(&cli, kind.as_deref(), name.as_deref(), files, *write),
        Command::Logs { name, follow, tail } => logs(&cli, name, *follow, *tail),
        Command::Scale { kind, name, replicas, write } => {
            if Kind::parse(kind) != Some(Kind::Deployment) {
                bail!("only deployments can be scaled (got `{kind}`)");
            }
            let written = cli.client()?.write_json::<ObjectView, _>(
                &format!("/v1/scale/{}/{}", cli.namespace, name),
                &serde_json::json!({ "replicas": replicas }),
            )?;
            println!("deployment.apps/{name} scaled to {replicas}");
            Ok(write.exit_code(report_durability(written.durability)))
        }
        Command::Autoscale { target, min, max, cpu_percent, name, write } => {
            let (kind, target_name) = target
                .split_once('/')
                .and_then(|(k, n)| Some((Kind::parse(k)?, n)))
                .filter(|(k, _)| matches!(k, Kind::Deployment | Kind::Rollout))
                .with_context(|| format!("expected deployment/NAME or rollout/NAME, got `{target}`"))?;
            let name = name.clone().unwrap_or_else(|| target_name.to_string());
            let api = if kind == Kind::Deployment { "apps/v1" } else { "argoproj.io/v1alpha1" };
            let yaml = format!(
                "apiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n  scaleTargetRef: {{apiVersion: {api}, kind: {kind}, name: {target_name}}}\n  minReplicas: {min}\n  maxReplicas: {max}\n  metrics:\n  - type: Resource\n    resource: {{name: cpu, target: {{type: Utilization, averageUtilization: {cpu}}}}}\n",
                ns = cli.namespace,
                cpu = cpu_percent.unwrap_or(80),
            );
            let written = cli.client()?.write_bytes::<Vec<crate::control::api::ApplyResult>>(
                "/v1/apply?source=autoscale",
                "application/yaml",
                yaml.as_bytes(),
            )?;
            println!("horizontalpodautoscaler.autoscaling/{name} autoscaled");
            Ok(write.exit_code(report_durability(written.durability)))
        }
        Command::Rollout { action } => rollout::rollout(&cli, action),
        Command::Kv { action } => kv(&cli, action),
        Command::Set { what: SetCommand::Image { args, write } } => rollout::set_image(&cli, args, *write),
        Command::Run(r) => run_local(r),
        Command::Serve { component, addr } => serve_local(component, *addr),
        Command::Token { action: TokenAction::Create { ttl } } => {
            let secs = parse_ttl(ttl)?;
            let v: serde_json::Value =
                cli.client()?.post_json("/v1/tokens", &serde_json::json!({ "ttl_secs": secs }))?;
            println!("{}", v["token"].as_str().unwrap_or_default());
            Ok(0)
        }
        Command::Leave => {
            let _: serde_json::Value = cli.client()?.post_json("/v1/leave", &serde_json::json!({}))?;
            println!("node is leaving the cluster");
            Ok(0)
        }
        Command::Version => {
            println!("wasmfleet {} (wasmtime 48)", env!("CARGO_PKG_VERSION"));
            Ok(0)
        }
    }
}

pub(crate) fn tokio_rt() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread().enable_all().build().context("starting the async runtime")
}

/// Waits for Ctrl-C or SIGTERM.
pub async fn wait_for_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending::<()>().await } } => {}
    }
}

/// `kv get|set|del|ls`.
fn kv(cli: &Cli, action: &args::KvCommand) -> Result<i32> {
    use args::KvCommand as K;
    let client = cli.client()?;
    let ns = encode(&cli.namespace);
    let scope = |app: &Option<String>, local: bool| {
        let mut q: Vec<String> = app.iter().map(|a| format!("app={}", encode(a))).collect();
        if local {
            q.push("local=true".into());
        }
        if q.is_empty() { String::new() } else { format!("?{}", q.join("&")) }
    };
    let path = |bucket: &str, key: &str, app: &Option<String>| {
        format!("/v1/kv/{ns}/{}/{}{}", encode(bucket), encode(key), scope(app, false))
    };
    match action {
        K::Get { bucket, key, app } => {
            let v: crate::control::kv::KvValue = client.get(&path(bucket, key, app))?;
            match (v.counter, v.text) {
                (Some(n), _) => println!("{n}"),
                (None, Some(t)) => println!("{t}"),
                (None, None) => println!("<{} bytes, not UTF-8>", v.bytes),
            }
        }
        K::Set { bucket, key, value, app } => {
            let bytes = if value == "-" {
                let mut b = Vec::new();
                std::io::Read::read_to_end(&mut std::io::stdin(), &mut b)?;
                b
            } else {
                value.clone().into_bytes()
            };
            let _: serde_json::Value =
                client.post_bytes(&path(bucket, key, app), "application/octet-stream", &bytes)?;
            println!("{key} set ({} bytes)", bytes.len());
        }
        K::Del { bucket, key, app } => {
            let _: serde_json::Value = client.delete(&path(bucket, key, app))?;
            println!("{key} deleted");
        }
        K::Ls { bucket, local: false, app } => {
            let keys: Vec<String> = client.get(&format!("/v1/kv/{ns}/{}{}", encode(bucket), scope(app, false)))?;
            for k in keys {
                println!("{k}");
            }
        }
        K::Ls { bucket, local: true, app } => {
            let rows: Vec<(String, u64, Option<String>)> =
                client.get(&format!("/v1/kv/{ns}/{}{}", encode(bucket), scope(app, true)))?;
            for (k, version, value) in rows {
                println!("{k}\t{version}\t{}", value.as_deref().unwrap_or("<deleted>"));
            }
        }
    }
    Ok(0)
}
