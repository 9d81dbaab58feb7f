//! What each command does.

use std::io::{BufRead as _, Read as _, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use wasmfleet_runtime::{Preopen, Runtime, RuntimeConfig, Stdio, WorkloadSpec};

use crate::agent::{AgentConfig, spawn_agent};
use crate::control::api::{ApplyResult, Durability, ObjectView, PushResponse};
use crate::control::client::encode;
use crate::manifest::{self, Kind, ObjectKey};
use crate::reconcile::ReplicaStatus;
use crate::state::ModuleRecord;

use super::args::*;
use super::print::*;
use super::{tokio_rt, wait_for_signal};

pub(super) const MIB: u64 = 1 << 20;

pub(super) fn run_agent(cli: &Cli, a: &AgentArgs) -> Result<i32> {
    let mut config = AgentConfig::new(cli.data_dir());
    config.listen_api = a.listen_api;
    config.listen_gateway = a.listen_gateway;
    if let Some(n) = a.lanes {
        config.lanes = n;
    }
    config.lane_ports = a.lane_ports;
    if let Some(n) = &a.node_name {
        config.node_name = n.clone();
    }
    config.runtime.memory_budget_bytes = a.memory_budget.map(|m| m * MIB);
    config.runtime.max_instance_memory_bytes = a.instance_memory_max.map(|m| m * MIB);
    config.runtime.max_instances = a.max_instances;
    // A benchmark's switch (benches/autoscale.sh): what accounting guest time costs.
    config.runtime.guest_time = std::env::var("WASMFLEET_GUEST_TIME").map_or(true, |v| v != "off");
    for l in &a.labels {
        let (k, v) = l.split_once('=').with_context(|| format!("--labels: `{l}` is not k=v"))?;
        config.labels.insert(k.trim().to_string(), v.trim().to_string());
    }
    config.capacity_memory_mib = a.capacity_memory;
    config.cluster.listen_cluster = a.listen_cluster;
    config.cluster.listen_gossip = a.listen_gossip;
    config.cluster.advertise = a.advertise;
    config.cluster.join = a.join.clone();
    // `agent --join ADDR --token T`: for the agent, the global --token is the join token (the
    // agent makes its own API token). `--join-token` says the same unambiguously.
    config.cluster.token = a.join_token.clone().or_else(|| (!a.join.is_empty()).then(|| cli.token.clone()).flatten());
    config.cluster.zone = a.zone.clone();
    config.cluster.write_quorum = a.write_quorum;
    config.cluster.gossip_interval = std::time::Duration::from_millis(a.gossip_interval_ms.max(20));
    config.cluster.phi_threshold = a.phi_threshold;
    config.hpa_sync_period = a.hpa_sync_period;
    tokio_rt()?.block_on(async move {
        let agent = spawn_agent(config).await?;
        // A closed stdout (the reader went away) must not stop the agent: no println!.
        let banner = format!(
            "api listening on {}\ngateway listening on http://{}\ncluster listening on {}\ngossip listening on {}\ndata dir {}\n",
            agent.api_url(),
            agent.gateway_addr,
            agent.peering.cluster_addr(),
            agent.peering.gossip_addr(),
            agent.data_dir.display()
        );
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(banner.as_bytes()).and_then(|()| out.flush());
        drop(out);
        tokio::select! {
            _ = wait_for_signal() => {}
            _ = agent.leave_requested() => {}
        }
        eprintln!("leaving the cluster and shutting down");
        agent.leave().await;
        Ok(0)
    })
}

/// Files named by -f: a file, a directory (its .yaml/.yml/.json files), or - (stdin).
pub(super) fn read_manifests(files: &[String]) -> Result<Vec<(String, String, PathBuf)>> {
    let mut out = Vec::new();
    for f in files {
        if f == "-" {
            let mut s = String::new();
            std::io::stdin().read_to_string(&mut s).context("reading stdin")?;
            out.push(("-".to_string(), s, std::env::current_dir()?));
            continue;
        }
        let p = Path::new(f);
        if p.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(p)
                .with_context(|| format!("reading directory {f}"))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|e| e.extension().is_some_and(|x| x == "yaml" || x == "yml" || x == "json"))
                .collect();
            entries.sort();
            for e in entries {
                let text = std::fs::read_to_string(&e).with_context(|| format!("reading {}", e.display()))?;
                out.push((e.display().to_string(), text, p.to_path_buf()));
            }
        } else {
            let text = std::fs::read_to_string(p).with_context(|| format!("reading {f}"))?;
            out.push((f.clone(), text, p.parent().map(Path::to_path_buf).unwrap_or_default()));
        }
    }
    Ok(out)
}

pub(super) fn looks_like_path(image: &str) -> bool {
    image.ends_with(".wasm") || image.starts_with("./") || image.starts_with("../") || image.starts_with('/')
}

/// Says on stderr when a write is not durable on its quorum; returns whether it is.
pub(super) fn report_durability(durability: Option<Durability>) -> bool {
    match durability {
        Some(d) if !d.met() => {
            eprintln!(
                "warning: durable on {} of {} nodes (stored on the node that answered; the others get it when they catch up)",
                d.copies, d.wanted
            );
            false
        }
        _ => true,
    }
}

pub(super) fn apply(cli: &Cli, files: &[String], write: WriteArgs) -> Result<i32> {
    let client = cli.client()?;
    let mut failed = false;
    let mut durable = true;
    for (source, text, base) in read_manifests(files)? {
        let objects = match manifest::parse_str(&source, &text) {
            Ok(o) => o,
            Err(errs) => {
                for e in errs {
                    eprintln!("error: {e}");
                }
                failed = true;
                continue;
            }
        };
        // Local file images are uploaded and replaced by their digest.
        let mut rewritten = false;
        let mut objects = objects;
        for obj in &mut objects {
            let Some(tpl) = obj.pod_template_mut() else { continue };
            for c in &mut tpl.spec.containers {
                if !looks_like_path(&c.image) {
                    continue;
                }
                let path = [base.join(&c.image), PathBuf::from(&c.image)].into_iter().find(|p| p.is_file());
                let Some(path) = path else {
                    bail!("{source}: image {} looks like a file path but no such file exists", c.image)
                };
                let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
                let written = client.write_bytes::<PushResponse>("/v1/modules", "application/wasm", &bytes)?;
                let r = written.body;
                eprintln!("uploaded {} as {} ({})", path.display(), r.digest, r.kind_description);
                durable &= report_durability(written.durability);
                c.image = r.digest.to_string();
                rewritten = true;
            }
        }
        let body = if rewritten { objects.iter().map(|o| o.to_yaml()).collect::<Vec<_>>().join("---\n") } else { text };
        let written = match client.write_bytes::<Vec<ApplyResult>>(
            &format!("/v1/apply?source={}", encode(&source)),
            "application/yaml",
            body.as_bytes(),
        ) {
            Ok(w) => w,
            Err(e) => {
                eprintln!("error: {source}: {e:#}");
                failed = true;
                continue;
            }
        };
        for r in written.body {
            println!("{} {}", kubectl_name(&r.key), serde_json::to_value(r.action)?.as_str().unwrap_or(""));
        }
        match written.durability {
            Some(d) if d.met() && d.copies > 1 => eprintln!("(durable on {} nodes)", d.copies),
            d => durable &= report_durability(d),
        }
    }
    Ok(if failed { 1 } else { write.exit_code(durable) })
}

pub(super) fn get(cli: &Cli, kind: &str, name: Option<&str>, output: Option<Output>) -> Result<i32> {
    let client = cli.client()?;
    let wide = matches!(output, Some(Output::Wide));
    let structured = |v: &serde_json::Value| -> Result<()> {
        match output {
            Some(Output::Json) => println!("{}", serde_json::to_string_pretty(v)?),
            Some(Output::Yaml) => print!("{}", serde_yaml::to_string(v)?),
            _ => {}
        }
        Ok(())
    };
    match kind.to_ascii_lowercase().as_str() {
        "replicas" | "replica" | "pods" | "pod" | "po" => {
            let mut reps: Vec<ReplicaStatus> = client.get("/v1/replicas")?;
            reps.retain(|r| {
                r.namespace == cli.namespace && name.is_none_or(|n| r.name == n || r.owner.ends_with(&format!("/{n}")))
            });
            if matches!(output, Some(Output::Json | Output::Yaml)) {
                return structured(&serde_json::to_value(&reps)?).map(|_| 0);
            }
            let rows: Vec<Vec<String>> = reps
                .iter()
                .map(|r| {
                    let mut row = vec![
                        r.name.clone(),
                        if r.ready { "1/1" } else { "0/1" }.to_string(),
                        r.phase.to_string(),
                        r.restarts.to_string(),
                        age(r.started_ms),
                    ];
                    if wide {
                        row.extend([
                            r.node.clone(),
                            r.revision.clone(),
                            r.kind.clone(),
                            r.module[..19.min(r.module.len())].to_string(),
                        ]);
                    }
                    row
                })
                .collect();
            let mut h = vec!["NAME", "READY", "STATUS", "RESTARTS", "AGE"];
            if wide {
                h.extend(["NODE", "REVISION", "TYPE", "MODULE"]);
            }
            print_table(&h, &rows);
            Ok(0)
        }
        "modules" | "module" | "images" => {
            let mods: Vec<ModuleRecord> = client.get("/v1/modules")?;
            if matches!(output, Some(Output::Json | Output::Yaml)) {
                return structured(&serde_json::to_value(&mods)?).map(|_| 0);
            }
            let rows = mods
                .iter()
                .map(|m| {
                    vec![
                        m.name.clone(),
                        m.kind.describe().to_string(),
                        format!("{} KiB", m.size_bytes.div_ceil(1024)),
                        m.digest.to_string()[..19].to_string(),
                        age(m.pushed_ms),
                    ]
                })
                .collect::<Vec<_>>();
            print_table(&["NAME", "TYPE", "SIZE", "DIGEST", "AGE"], &rows);
            Ok(0)
        }
        "pv" | "persistentvolume" | "persistentvolumes" => {
            let mut views: Vec<crate::reconcile::claims::VolumeView> = client.get("/v1/volumes")?;
            views.retain(|v| !v.volume.is_empty() && name.is_none_or(|n| v.volume == n));
            if matches!(output, Some(Output::Json | Output::Yaml)) {
                return structured(&serde_json::to_value(&views)?).map(|_| 0);
            }
            print_table(&super::storage::PV_HEADER, &super::storage::pv_table(&views, crate::clock::now_ms()));
            Ok(0)
        }
        "node" | "nodes" | "no" => {
            let mut nodes: Vec<crate::peering::NodeView> = client.get("/v1/nodes")?;
            nodes.retain(|n| name.is_none_or(|x| n.name == x));
            if matches!(output, Some(Output::Json | Output::Yaml)) {
                return structured(&serde_json::to_value(&nodes)?).map(|_| 0);
            }
            print_nodes(&nodes, wide);
            Ok(0)
        }
        other => {
            let k = Kind::parse(other).with_context(|| {
                format!(
                    "unknown kind `{other}`: use deployments, services, jobs, daemonsets, rollouts, analysistemplates, \
                     hpa, pvc, pv, storageclasses, replicas, modules or nodes"
                )
            })?;
            let (mut objs, in_sync): (Vec<ObjectView>, bool) =
                client.get_local(&format!("/v1/objects/{}", k.plural()))?;
            warn_if_stale(in_sync);
            objs.retain(|o| o.key.namespace == cli.namespace && name.is_none_or(|n| o.key.name == n));
            if let Some(n) = name
                && objs.is_empty()
            {
                bail!("{} \"{n}\" not found in namespace {}", k.as_str().to_lowercase(), cli.namespace);
            }
            if matches!(output, Some(Output::Json | Output::Yaml)) {
                let mut v: Vec<serde_json::Value> = objs.iter().map(super::deployment::with_status).collect();
                let v = if name.is_some() && v.len() == 1 {
                    v.remove(0)
                } else {
                    serde_json::json!({"apiVersion": "v1", "kind": "List", "items": v})
                };
                return structured(&v).map(|_| 0);
            }
            print_objects(k, &objs, wide);
            Ok(0)
        }
    }
}

pub(super) fn describe(cli: &Cli, kind: &str, name: Option<&str>) -> Result<i32> {
    let (kind, name) = match (name, kind.split_once('/')) {
        (Some(name), _) => (kind, name),
        (None, Some((kind, name))) if !name.is_empty() => (kind, name),
        _ => bail!("name what to describe: `describe KIND NAME` or `describe KIND/NAME`"),
    };
    let client = cli.client()?;
    if matches!(kind.to_ascii_lowercase().as_str(), "node" | "nodes" | "no") {
        let nodes: Vec<crate::peering::NodeView> = client.get("/v1/nodes")?;
        let n = nodes.into_iter().find(|n| n.name == name).with_context(|| format!("node \"{name}\" not found"))?;
        println!("Name:         {}{}", n.name, if n.this_node { " (this node)" } else { "" });
        println!("State:        {}", n.state);
        println!("Generation:   {}", n.generation);
        println!("In sync:      {}", n.in_sync);
        if let Some(i) = n.info {
            println!("Cluster:      {}", i.cluster);
            println!("API:          {}", i.api);
            println!("Gateway:      {}", i.gateway);
            println!("Zone:         {}", i.zone.unwrap_or_else(|| "-".into()));
            println!(
                "Labels:       {}",
                i.labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
            );
            println!("Capacity:     memory {} MiB, cpu {}m", i.memory_mib, i.cpu_millis);
            println!("Arch:         {}", i.arch);
            println!("Version:      {}", i.version);
            println!("Started:      {} ago", age(i.started_ms));
        }
        return Ok(0);
    }
    let k = Kind::parse(kind).with_context(|| format!("unknown kind `{kind}`"))?;
    let (o, in_sync): (ObjectView, bool) =
        client.get_local(&format!("/v1/objects/{}/{}/{}", k.plural(), cli.namespace, name))?;
    warn_if_stale(in_sync);
    let replicas: Vec<ReplicaStatus> = if k == Kind::Service { Vec::new() } else { client.get("/v1/replicas")? };
    print!("{}", super::describe::describe_object(&o, &replicas, crate::clock::now_ms())?);
    Ok(0)
}

pub(super) fn delete(
    cli: &Cli,
    kind: Option<&str>,
    name: Option<&str>,
    files: &[String],
    write: WriteArgs,
) -> Result<i32> {
    let client = cli.client()?;
    let mut keys = Vec::new();
    if !files.is_empty() {
        for (source, text, _) in read_manifests(files)? {
            match manifest::parse_str(&source, &text) {
                Ok(objs) => keys.extend(objs.iter().map(|o| o.key())),
                Err(errs) => {
                    for e in errs {
                        eprintln!("error: {e}");
                    }
                    return Ok(1);
                }
            }
        }
    } else {
        let (Some(kind), Some(name)) = (kind, name) else {
            bail!("name what to delete: `delete KIND NAME` or `delete -f FILE`")
        };
        if matches!(kind.to_ascii_lowercase().as_str(), "pv" | "persistentvolume" | "persistentvolumes") {
            let _: serde_json::Value =
                client.delete(&format!("/v1/volumes/{}", crate::control::client::encode(name)))?;
            println!("persistentvolume \"{name}\" deleted");
            return Ok(0);
        }
        let k = Kind::parse(kind).with_context(|| format!("unknown kind `{kind}`"))?;
        keys.push(ObjectKey { kind: k, namespace: cli.namespace.clone(), name: name.to_string() });
    }
    let written = client.write_json::<Vec<(ObjectKey, bool)>, _>("/v1/delete", &serde_json::json!({ "keys": keys }))?;
    let mut missing = false;
    for (k, deleted) in written.body {
        if deleted {
            println!("{} deleted", kubectl_name(&k));
        } else {
            eprintln!("error: {} not found", kubectl_name(&k));
            missing = true;
        }
    }
    let durable = report_durability(written.durability);
    Ok(if missing { 1 } else { write.exit_code(durable) })
}

pub(super) fn logs(cli: &Cli, name: &str, follow: bool, tail: Option<usize>) -> Result<i32> {
    let client = cli.client()?;
    let mut q = format!("/v1/logs/{}/{}?follow={follow}", cli.namespace, name);
    if let Some(t) = tail {
        q.push_str(&format!("&tail={t}"));
    }
    let reader = std::io::BufReader::new(client.stream(&q)?);
    let stdout = std::io::stdout();
    for line in reader.lines() {
        let line = line.context("reading the log stream")?;
        let v: serde_json::Value = match serde_json::from_str(&line) {
            Ok(v) => v,
            Err(_) => continue,
        };
        let replica = v["replica"].as_str().unwrap_or("");
        let text = v["text"].as_str().unwrap_or("");
        let stream = v["stream"].as_str().unwrap_or("");
        let mut out = stdout.lock();
        let marker = if stream == "system" { " [wasmfleet]" } else { "" };
        let _ = writeln!(out, "[{replica}]{marker} {text}");
        let _ = out.flush();
    }
    Ok(0)
}

pub(super) fn run_local(r: &RunArgs) -> Result<i32> {
    let bytes = std::fs::read(&r.module).with_context(|| format!("reading {}", r.module.display()))?;
    let config =
        RuntimeConfig { pooling: false, max_instance_memory_bytes: Some(r.memory * MIB), ..RuntimeConfig::default() };
    let runtime = Runtime::new(config)?;
    let module = runtime.load(&bytes).with_context(|| format!("loading {}", r.module.display()))?;
    let mut spec = WorkloadSpec::new(
        r.module.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_else(|| "main".into()),
    );
    spec.args = r.args.clone();
    spec.limits.memory_bytes = r.memory * MIB;
    for e in &r.env {
        let (k, v) = e.split_once('=').with_context(|| format!("--env `{e}` is not K=V"))?;
        spec.env.push((k.to_string(), v.to_string()));
    }
    for d in &r.dirs {
        let (host, guest) = d.split_once("::").unwrap_or((d.as_str(), d.as_str()));
        spec.dirs.push(Preopen { host_path: PathBuf::from(host), guest_path: guest.to_string(), read_only: false });
    }
    let outcome = tokio_rt()?.block_on(runtime.run_command(&module, &spec, Stdio::Inherit));
    match &outcome.status {
        wasmfleet_runtime::ExitStatus::Code(c) => Ok(*c),
        other => {
            eprintln!("error: {other}");
            Ok(other.code())
        }
    }
}

pub(super) fn serve_local(component: &Path, addr: SocketAddr) -> Result<i32> {
    let bytes = std::fs::read(component).with_context(|| format!("reading {}", component.display()))?;
    tokio_rt()?.block_on(async move {
        let runtime = std::sync::Arc::new(Runtime::new(RuntimeConfig::default())?);
        let module = runtime.load(&bytes).with_context(|| format!("loading {}", component.display()))?;
        let name = component.file_stem().map(|f| f.to_string_lossy().into_owned()).unwrap_or_else(|| "serve".into());
        let logs = wasmfleet_runtime::LogBuffer::new(64 * 1024);
        let mut spec = WorkloadSpec::new(name);
        spec.limits.max_concurrency = runtime.sizing().instances;
        let service = wasmfleet_runtime::HttpService::new(runtime.clone(), &module, spec, logs)?;
        let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding {addr}"))?;
        println!("serving http://{}", listener.local_addr()?);
        let _ = std::io::stdout().flush();
        let accept = async {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let _ = stream.set_nodelay(true);
                let service = service.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let service = service.clone();
                        async move { Ok::<_, std::convert::Infallible>(service.handle(req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .keep_alive(true)
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                        .await;
                });
            }
        };
        tokio::select! {
            _ = accept => {}
            _ = wait_for_signal() => {}
        }
        Ok(0)
    })
}
