//! `rollout status|history|undo|pause|resume|restart` and `set image`: thin shells around the
//! API's rollout routes and the pure readers in [`super::status`] and [`super::history`].

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};

use crate::control::api::PushResponse;
use crate::control::client::{Client, Written};
use crate::control::verbs::{ImageUpdate, RolloutAction, RolloutAnswer};

use super::args::{Cli, RolloutCommand, WriteArgs, parse_duration};
use super::commands::{looks_like_path, report_durability};
use super::resource::{ResourceRef, RolloutKind};
use super::status::{RolloutStatus, StatusWatch, rollout_kind_status, rollout_status};

/// How often `rollout status` looks again.
const POLL: Duration = Duration::from_millis(200);

pub(super) fn rollout(cli: &Cli, command: &RolloutCommand) -> Result<i32> {
    match command {
        RolloutCommand::Status { resource, timeout, watch } => {
            status(cli, &ResourceRef::parse_only(resource)?, parse_duration(timeout)?, *watch)
        }
        RolloutCommand::History { resource, revision } => history(cli, &ResourceRef::parse_only(resource)?, *revision),
        RolloutCommand::Undo { resource, to_revision, write } => {
            act(cli, resource, &RolloutAction::undo(to_revision.filter(|&n| n > 0)), *write)
        }
        RolloutCommand::Pause(t) => act(cli, &t.resource, &RolloutAction::new(RolloutAction::PAUSE), t.write),
        RolloutCommand::Resume(t) => act(cli, &t.resource, &RolloutAction::new(RolloutAction::RESUME), t.write),
        RolloutCommand::Restart(t) => act(cli, &t.resource, &RolloutAction::new(RolloutAction::RESTART), t.write),
        RolloutCommand::Promote { resource, full, write } => {
            let action = if *full { RolloutAction::PROMOTE_FULL } else { RolloutAction::PROMOTE };
            act_on_rollout(cli, resource, &RolloutAction::new(action), *write)
        }
        RolloutCommand::Abort(t) => {
            act_on_rollout(cli, &t.resource, &RolloutAction::new(RolloutAction::ABORT), t.write)
        }
        RolloutCommand::Retry(t) => {
            act_on_rollout(cli, &t.resource, &RolloutAction::new(RolloutAction::RETRY), t.write)
        }
    }
}

/// Polls the object until its rollout finishes (or, with `watch` false, once).
fn status(cli: &Cli, r: &ResourceRef, timeout: Duration, watch: bool) -> Result<i32> {
    let client = cli.client()?;
    let deadline = (!timeout.is_zero()).then(|| Instant::now() + timeout);
    let mut printed = StatusWatch::default();
    loop {
        let o = client.object(r.kind.kind(), &cli.namespace, &r.name)?;
        let status = match r.kind {
            RolloutKind::Deployment => rollout_status(&r.name, o.status.rollout.as_ref())?,
            RolloutKind::Rollout => rollout_kind_status(&r.name, o.status.rollout.as_ref())?,
        };
        if let Some(line) = printed.handle_status(&status) {
            println!("{line}");
        }
        if matches!(status, RolloutStatus::Done(_)) || !watch {
            return Ok(0);
        }
        let now = Instant::now();
        let left = deadline.map(|d| d.saturating_duration_since(now));
        if left.is_some_and(|l| l.is_zero()) {
            bail!("timed out waiting for the condition");
        }
        std::thread::sleep(left.map_or(POLL, |l| l.min(POLL)));
    }
}

fn history(cli: &Cli, r: &ResourceRef, revision: Option<u64>) -> Result<i32> {
    let o = cli.client()?.object(r.kind.kind(), &cli.namespace, &r.name)?;
    // No view yet (just applied): no revisions, as kubectl shows a Deployment with no sets.
    let view = o.status.rollout.unwrap_or_default();
    match revision.filter(|&n| n > 0) {
        Some(n) => print!("{}", super::history::revision(&r.kubectl_name(), &view, n)?),
        None => print!("{}", super::history::history(&r.kubectl_name(), &view)),
    }
    Ok(0)
}

/// `undo`, `pause`, `resume`, `restart`: the server's line, and the write's exit code.
fn act(cli: &Cli, words: &[String], action: &RolloutAction, write: WriteArgs) -> Result<i32> {
    send(cli, &ResourceRef::parse_only(words)?, action, write)
}

/// `promote`, `abort`, `retry`: a bare NAME is a Rollout.
fn act_on_rollout(cli: &Cli, words: &[String], action: &RolloutAction, write: WriteArgs) -> Result<i32> {
    send(cli, &ResourceRef::parse_only_or(words, RolloutKind::Rollout)?, action, write)
}

fn send(cli: &Cli, r: &ResourceRef, action: &RolloutAction, write: WriteArgs) -> Result<i32> {
    let client = cli.client()?;
    let written = match r.kind {
        RolloutKind::Deployment => client.rollout(&cli.namespace, &r.name, action)?,
        RolloutKind::Rollout => client.rollout(&cli.namespace, &r.name, &action.clone().on("Rollout"))?,
    };
    Ok(answered(written, write))
}

/// `set image TYPE/NAME CONTAINER=IMAGE ...`; a local .wasm path is uploaded and replaced by
/// its digest, as `apply` does.
pub(super) fn set_image(cli: &Cli, args: &[String], write: WriteArgs) -> Result<i32> {
    let (r, pairs) = ResourceRef::parse(args)?;
    let mut images = image_pairs(pairs)?;
    let client = cli.client()?;
    let mut durable = true;
    for image in images.values_mut() {
        if looks_like_path(image) {
            let (digest, d) = upload(&client, Path::new(image.as_str()))?;
            durable &= d;
            *image = digest;
        }
    }
    let written = match r.kind {
        RolloutKind::Deployment => client.set_image(&cli.namespace, &r.name, &ImageUpdate { images })?,
        RolloutKind::Rollout => bail!("set image on a Rollout: edit its manifest and apply it"),
    };
    let code = answered(written, write);
    Ok(if durable { code } else { write.exit_code(false) })
}

fn upload(client: &Client, path: &Path) -> Result<(String, bool)> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let written = client.write_bytes::<PushResponse>("/v1/modules", "application/wasm", &bytes)?;
    let r = written.body;
    eprintln!("uploaded {} as {} ({})", path.display(), r.digest, r.kind_description);
    Ok((r.digest.to_string(), report_durability(written.durability)))
}

fn answered(written: Written<RolloutAnswer>, write: WriteArgs) -> i32 {
    println!("{}", written.body.message);
    write.exit_code(report_durability(written.durability))
}

/// `CONTAINER=IMAGE` arguments (`*` is every container).
fn image_pairs(words: &[String]) -> Result<BTreeMap<String, String>> {
    if words.is_empty() {
        bail!("at least one image update is required");
    }
    words
        .iter()
        .map(|w| match w.split_once('=') {
            Some((c, i)) if !c.is_empty() && !i.is_empty() => Ok((c.to_string(), i.to_string())),
            _ => bail!("`{w}` is not CONTAINER=IMAGE (`*=IMAGE` sets every container)"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_string).collect()
    }

    #[test]
    fn image_arguments() {
        let got = image_pairs(&words("web=web:2.0 *=./side.wasm")).unwrap();
        assert_eq!(got, BTreeMap::from([("*".into(), "./side.wasm".into()), ("web".into(), "web:2.0".into())]));
        assert_eq!(image_pairs(&[]).unwrap_err().to_string(), "at least one image update is required");
        assert_eq!(
            image_pairs(&words("web")).unwrap_err().to_string(),
            "`web` is not CONTAINER=IMAGE (`*=IMAGE` sets every container)"
        );
        assert!(image_pairs(&words("web=")).is_err());
    }
}
