//! The volumes this node writes: one task per volume bound here. It scans the volume's
//! directory every period (its class's `syncPeriod` for a replicated volume, 5 s for a local
//! one, which only measures its size), bumps the snapshot sequence when a file changed, and
//! ships the changes to the volume's holders ([`holders`]): a delta to a holder known to be at
//! the previous snapshot, the whole volume to any other, a keep-alive when nothing changed.
//!
//! Recovery point: a write is on every reachable holder at most one period plus one transfer
//! after it was made; the death of the writer loses at most that much. A file is copied as it
//! is when it is read; a guest that needs several files consistent writes a new file and
//! renames it (renames are seen whole).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::task::JoinHandle;

use super::claims::holders;
use crate::manifest::storage::Provisioner;
use crate::peering::volumes::{ShipHead, Shipped};
use crate::peering::{Peering, VolumeCopy};
use crate::state::copies::{CopyState, Manifest, diff, total_bytes};
use crate::state::{VolumePhase, VolumeRecord};

/// How often a local volume's size is measured.
const LOCAL_PERIOD: Duration = Duration::from_secs(5);
/// A holder with nothing new hears from the writer this often.
const KEEPALIVE: Duration = Duration::from_secs(5);

struct Task {
    epoch: u64,
    handle: JoinHandle<()>,
    /// What the volume holds, as of the last scan.
    state: Arc<Mutex<CopyState>>,
}

impl Drop for Task {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

/// The writer tasks of the volumes bound to this node.
pub struct Writers {
    node: String,
    peering: Arc<Peering>,
    tasks: Mutex<HashMap<String, Task>>,
}

impl Writers {
    pub fn new(node: String, peering: Arc<Peering>) -> Writers {
        Writers { node, peering, tasks: Mutex::new(HashMap::new()) }
    }

    /// Runs a task for every volume bound here (restarting it when the epoch changed) and
    /// stops the others.
    pub fn keep(&self, records: &BTreeMap<String, VolumeRecord>) {
        let mut tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        let mine: BTreeMap<&String, &VolumeRecord> =
            records.iter().filter(|(_, r)| r.node == self.node && r.phase == VolumePhase::Bound).collect();
        tasks.retain(|v, t| mine.get(v).is_some_and(|r| r.epoch == t.epoch));
        for (volume, record) in mine {
            if tasks.contains_key(volume) {
                continue;
            }
            let state = Arc::new(Mutex::new(CopyState::default()));
            let writer = Writer {
                node: self.node.clone(),
                peering: self.peering.clone(),
                record: record.clone(),
                state: state.clone(),
                acked: HashMap::new(),
                last_heard: HashMap::new(),
                refusals_logged: HashMap::new(),
            };
            let handle = tokio::spawn(writer.run());
            tasks.insert(volume.clone(), Task { epoch: record.epoch, handle, state });
        }
    }

    /// The copies this node holds, as it publishes them: volumes it writes as of their last
    /// scan, the others as their copy state says.
    pub fn copies(&self) -> Vec<VolumeCopy> {
        let tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        self.peering
            .volumes()
            .dirs()
            .list()
            .into_iter()
            .filter_map(|(volume, state)| {
                let live = tasks.get(&volume).map(|t| *t.state.lock().unwrap_or_else(|e| e.into_inner()));
                let s = live.filter(|s| s.complete).or(state)?;
                Some(VolumeCopy {
                    volume,
                    epoch: s.epoch,
                    seq: s.seq,
                    complete: s.complete,
                    bytes: s.bytes,
                    taken_ms: s.taken_ms,
                })
            })
            .collect()
    }

    /// Whether this node writes `volume` now.
    pub fn writes(&self, volume: &str) -> bool {
        self.tasks.lock().unwrap_or_else(|e| e.into_inner()).contains_key(volume)
    }
}

/// One volume's writer loop.
struct Writer {
    node: String,
    peering: Arc<Peering>,
    record: VolumeRecord,
    state: Arc<Mutex<CopyState>>,
    /// The snapshot each holder is known to hold.
    acked: HashMap<String, (u64, u64)>,
    last_heard: HashMap<String, Instant>,
    /// When a refusal by each holder was last logged (a peer's answer: rate-limited).
    refusals_logged: HashMap<String, Instant>,
}

/// A holder's refusal is logged at most this often.
const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(60);

impl Writer {
    async fn run(mut self) {
        let volume = self.record.name.clone();
        let dirs = self.peering.volumes().dirs().clone();
        let replicated = self.record.class.provisioner == Provisioner::Replicated;
        let period = if replicated { self.record.class.sync_period } else { LOCAL_PERIOD };
        let epoch = self.record.epoch;
        let adopted = {
            let (dirs, volume) = (dirs.clone(), volume.clone());
            tokio::task::spawn_blocking(move || dirs.adopt(&volume, epoch).map(|_| dirs.state(&volume))).await
        };
        let mut state = match adopted {
            Ok(Ok(Some(s))) => s,
            other => {
                tracing::warn!(volume = %volume, result = ?other.map(|r| r.err()), "cannot prepare the volume");
                return;
            }
        };
        // What the holders hold is unknown after a start: the first snapshot goes whole.
        let mut shipped: Option<Manifest> = None;
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let scanned = {
                let (dirs, volume) = (dirs.clone(), volume.clone());
                tokio::task::spawn_blocking(move || dirs.scan(&volume)).await
            };
            let manifest = match scanned {
                Ok(Ok(m)) => m,
                other => {
                    tracing::warn!(volume = %volume, result = ?other.map(|r| r.err()), "cannot scan the volume");
                    continue;
                }
            };
            let (changed, removed) = match &shipped {
                Some(old) => diff(old, &manifest),
                None => (manifest.keys().cloned().collect(), Vec::new()),
            };
            let previous = state.seq;
            let now_ms = crate::clock::now_ms();
            if shipped.is_none() || !changed.is_empty() || !removed.is_empty() {
                state.seq += 1;
                state.bytes = total_bytes(&manifest);
                state.taken_ms = now_ms;
                let (d, v, s) = (dirs.clone(), volume.clone(), state);
                if let Ok(Err(e)) = tokio::task::spawn_blocking(move || d.set_state(&v, &s)).await {
                    tracing::warn!(volume = %volume, error = %e, "cannot record the volume's snapshot");
                }
            } else {
                state.taken_ms = now_ms;
            }
            *self.state.lock().unwrap_or_else(|e| e.into_inner()) = state;
            if replicated {
                self.ship(&state, previous, &manifest, &changed, &removed).await;
            }
            shipped = Some(manifest);
        }
    }

    /// Ships snapshot `state` to every holder.
    async fn ship(
        &mut self,
        state: &CopyState,
        previous: u64,
        manifest: &Manifest,
        changed: &[String],
        removed: &[String],
    ) {
        let peers = self.peering.peers();
        let live: Vec<String> = peers.iter().map(|(n, _)| n.clone()).collect();
        let targets = holders(&self.record.name, &self.node, &live, self.record.class.copies);
        let all: Vec<String> = manifest.keys().cloned().collect();
        let now = (state.epoch, state.seq);
        let mut sends = Vec::new();
        for target in targets {
            let Some(addr) = peers.iter().find(|(n, _)| *n == target).map(|(_, a)| *a) else { continue };
            let at = self.acked.get(&target).copied();
            let quiet = self.last_heard.get(&target).is_some_and(|t| t.elapsed() < KEEPALIVE);
            let (base, files, gone): (Option<(u64, u64)>, &[String], &[String]) = match at {
                Some(at) if at == now && quiet => continue,
                Some(at) if at == now => (Some(now), &[], &[]),
                Some(at) if at == (state.epoch, previous) => (Some(at), changed, removed),
                _ => (None, &all, &[]),
            };
            let transfer = self.peering.volumes().clone();
            let head = ShipHead {
                volume: self.record.name.clone(),
                epoch: state.epoch,
                seq: state.seq,
                base,
                whole: base.is_none(),
                taken_ms: state.taken_ms,
                bytes: state.bytes,
            };
            let (files, gone, all) = (files.to_vec(), gone.to_vec(), all.clone());
            sends.push(async move {
                let mut result = transfer.ship(&target, addr, &head, &files, &gone).await;
                if matches!(result, Ok(Shipped::NeedWhole)) {
                    let whole = ShipHead { base: None, whole: true, ..head };
                    result = transfer.ship(&target, addr, &whole, &all, &[]).await;
                }
                (target, result)
            });
        }
        for (target, result) in futures::future::join_all(sends).await {
            match result {
                Ok(Shipped::Applied) => {
                    self.acked.insert(target.clone(), now);
                    self.last_heard.insert(target, Instant::now());
                }
                Ok(Shipped::NeedWhole) => {
                    self.acked.remove(&target);
                }
                Ok(Shipped::Refused(why)) => {
                    self.acked.remove(&target);
                    let logged = self.refusals_logged.get(&target).is_some_and(|t| t.elapsed() < REFUSAL_LOG_EVERY);
                    if !logged {
                        self.refusals_logged.insert(target.clone(), Instant::now());
                        tracing::warn!(volume = %self.record.name, holder = %target, reason = %why, "holder refused the volume's snapshot");
                    }
                }
                Err(e) => {
                    self.acked.remove(&target);
                    tracing::debug!(volume = %self.record.name, holder = %target, error = %format!("{e:#}"), "volume snapshot not shipped");
                }
            }
        }
    }
}
