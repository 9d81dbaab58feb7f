//! The loop's part for persistent volumes: gathering the claims, volume records and copies a
//! pass decides from; writing the records the plan asks for (bind, take over); and, after the
//! pass, keeping this node's writer tasks, releasing volumes whose claim is gone, removing
//! copies no longer needed, and publishing the copies held here in gossip.

use std::collections::{BTreeMap, HashMap};

use super::claims::{Claims, keeper};
use super::desired::VolumeIntent;
use super::{Inner, ObjectStatus};
use crate::manifest::{Object, ObjectKey};
use crate::peering::{PeerView, VOLUMES_KEY, VolumeCopy};
use crate::state::{StoreError, StoredObject, VOLUME_PREFIX, VolumeRecord};

impl Inner {
    /// The claims of the stored objects, with the volume records and the copies live nodes
    /// report (this one's included).
    pub(super) fn claims(&self, objects: &[(StoredObject, Object)], peers: &[PeerView]) -> Result<Claims, StoreError> {
        let records = self.store.volume_records()?;
        let mut copies: BTreeMap<String, Vec<(String, VolumeCopy)>> = BTreeMap::new();
        for c in self.writers.copies() {
            copies.entry(c.volume.clone()).or_default().push((self.node.clone(), c));
        }
        for p in peers {
            for c in &p.volumes {
                copies.entry(c.volume.clone()).or_default().push((p.name.clone(), c.clone()));
            }
        }
        let live = peers.iter().map(|p| p.name.clone()).chain([self.node.clone()]).collect();
        Ok(Claims::new(objects, records, copies, live))
    }

    /// Writes the volume records the plan asks for; the slots start once they are stored.
    pub(super) fn write_volumes(&self, intents: &[VolumeIntent], claims: &Claims) {
        let now = crate::clock::now_ms();
        for i in intents {
            let record = if i.takeover {
                claims.takeover_record(&i.namespace, &i.claim, &self.node, now)
            } else {
                claims.get(&i.namespace, &i.claim).and_then(|c| c.bind_record(&self.node, now))
            };
            let Some(record) = record else { continue };
            let what = if i.takeover { "taking over" } else { "binding" };
            tracing::info!(claim = %format!("{}/{}", i.namespace, i.claim), volume = %record.name, epoch = record.epoch, "{what} the volume");
            self.put_volume(record);
        }
    }

    /// Stores a volume record decided here and pushes it to the peers.
    fn put_volume(&self, record: VolumeRecord) {
        let key = format!("{VOLUME_PREFIX}{}", record.name);
        match self.store.put_volume(record) {
            Ok(true) => {
                let peering = self.peering.clone();
                tokio::spawn(async move {
                    if let Err(e) = peering.replicate(std::slice::from_ref(&key)).await {
                        tracing::warn!(volume = %key, error = %e, "volume record not replicated (anti-entropy will)");
                    }
                });
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(volume = %key, error = %e, "cannot record the volume"),
        }
    }

    /// Writer tasks, released and deleted volumes, stale copies, the API's view and gossip.
    pub(super) async fn keep_volumes(
        &self,
        claims: &Claims,
        users: &BTreeMap<String, std::collections::BTreeSet<String>>,
        status: &mut HashMap<ObjectKey, ObjectStatus>,
    ) {
        self.writers.keep(&claims.records);
        let now = crate::clock::now_ms();
        for (record, phase) in claims.orphans() {
            if keeper(record, &claims.live) == Some(self.node.as_str()) {
                tracing::info!(volume = %record.name, phase = phase.as_str(), "the volume's claim is gone");
                self.put_volume(VolumeRecord { phase, seq: record.seq + 1, changed_ms: now, ..record.clone() });
            }
        }
        let dirs = self.peering.volumes().dirs().clone();
        for (volume, state) in dirs.list() {
            let epoch = state.map_or(0, |s| s.epoch);
            if !self.writers.writes(&volume) && claims.copy_is_stale(&volume, &self.node, epoch) {
                tracing::info!(volume = %volume, "removing a copy no longer needed");
                if let Err(e) = dirs.remove(&volume) {
                    tracing::warn!(volume = %volume, error = %e, "cannot remove the volume's copy");
                }
            }
        }
        let views = claims.views(users);
        for v in views.iter().filter(|v| v.claimed) {
            let key = ObjectKey::new(crate::manifest::Kind::PersistentVolumeClaim, &v.namespace, &v.claim);
            let st = status.entry(key).or_default();
            for m in &v.messages {
                st.note(m.clone());
            }
            st.volume = Some(v.clone());
            // A volume over its requested storage warns the workloads that write it, too.
            if v.capacity_bytes > 0 && v.used_bytes > v.capacity_bytes {
                let warning = format!(
                    "persistentvolumeclaim {:?} uses {} bytes, over its requested storage of {}",
                    v.claim, v.used_bytes, v.capacity
                );
                for user in &v.users {
                    if let Some((owner, _)) = super::desired::parse_workload_key(user) {
                        status.entry(owner).or_default().note(warning.clone());
                    }
                }
            }
        }
        *self.volume_views.lock().unwrap_or_else(|e| e.into_inner()) = views;
        let copies = serde_json::to_string(&self.writers.copies()).unwrap_or_default();
        let changed = {
            let mut last = self.published_volumes.lock().unwrap_or_else(|e| e.into_inner());
            (*last != copies).then(|| {
                last.clone_from(&copies);
            })
        };
        if changed.is_some()
            && let Err(e) = self.peering.publish(VOLUMES_KEY, &copies).await
        {
            tracing::debug!(error = %e, "cannot publish volume copies");
        }
    }
}
