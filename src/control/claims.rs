//! Apply-time rules that span objects for PersistentVolumeClaims, checked against the objects
//! of the apply and those already stored (the apply's win): a claim's class exists (built in,
//! or a StorageClass); a ReadWriteOnce claim is mounted read-write by one workload at most; a
//! Rollout (whose canary or preview runs beside its stable replicas) does not write one.

use std::collections::BTreeMap;

use crate::manifest::storage::{AccessMode, ClassSettings};
use crate::manifest::{Kind, Object, ObjectKey};
use crate::state::{Store, VolumePhase, VolumeRecord};

/// Every problem of the apply `batch` over the stored objects `stored`.
pub(crate) fn check(batch: &[&Object], stored: &[Object]) -> Vec<String> {
    let mut all: BTreeMap<ObjectKey, &Object> = stored.iter().map(|o| (o.key(), o)).collect();
    for o in batch {
        all.insert(o.key(), o);
    }
    let in_batch = |k: &ObjectKey| batch.iter().any(|o| o.key() == *k);
    let mut errors = Vec::new();
    for o in batch {
        let Object::PersistentVolumeClaim(c) = o else { continue };
        let class = c.class_name();
        let stored_class = all.contains_key(&ObjectKey::new(Kind::StorageClass, "default", class));
        if !stored_class && ClassSettings::builtin(class).is_none() {
            errors.push(format!(
                "{}: spec.storageClassName: storageclass {class:?} not found: use local or replicated (built in), \
                 or apply a StorageClass of that name",
                o.key()
            ));
        }
    }
    // Writers of each ReadWriteOnce claim, by claim.
    let mut writers: BTreeMap<ObjectKey, Vec<&ObjectKey>> = BTreeMap::new();
    let keys: Vec<(&ObjectKey, &&Object)> = all.iter().collect();
    for (key, o) in &keys {
        let Some(tpl) = o.pod_template() else { continue };
        for v in tpl.workload().volumes.iter().filter(|v| !v.read_only) {
            let Some(claim) = &v.claim else { continue };
            let ck = ObjectKey::new(Kind::PersistentVolumeClaim, &key.namespace, claim);
            let Some(Object::PersistentVolumeClaim(c)) = all.get(&ck) else { continue };
            if c.access() == AccessMode::ReadWriteOnce {
                writers.entry(ck).or_default().push(key);
            }
        }
    }
    for (claim, users) in writers {
        if !(users.iter().any(|u| in_batch(u)) || in_batch(&claim)) {
            continue;
        }
        if users.len() > 1 {
            let names: Vec<String> = users.iter().map(|u| u.to_string()).collect();
            errors.push(format!(
                "{claim} is ReadWriteOnce and mounted read-write by {}: one workload may write it (mount it \
                 readOnly in the others, or give each its own claim)",
                names.join(" and ")
            ));
        }
        for u in users.iter().filter(|u| u.kind == Kind::Rollout) {
            errors.push(format!(
                "{u}: writes ReadWriteOnce {claim}, but a Rollout runs its canary or preview beside its stable \
                 replicas: use a Deployment (it rolls out one writer at a time) or mount the claim readOnly"
            ));
        }
    }
    errors
}

/// `delete pv NAME`: marks a released volume deleted (every node then removes its copy).
/// A volume whose claim still exists is refused: delete the claim first.
pub(crate) fn delete_volume(store: &Store, name: &str) -> Result<Option<VolumeRecord>, String> {
    let records = store.volume_records().map_err(|e| e.to_string())?;
    let Some(r) = records.get(name).filter(|r| r.phase != VolumePhase::Deleted) else { return Ok(None) };
    let claim = store.get(&r.claim).map_err(|e| e.to_string())?;
    if r.phase == VolumePhase::Bound && claim.is_some_and(|c| !c.deleted) {
        return Err(format!(
            "volume {name} is bound to {}: delete the claim first (its class's reclaim policy then applies)",
            r.claim
        ));
    }
    let deleted =
        VolumeRecord { phase: VolumePhase::Deleted, seq: r.seq + 1, changed_ms: crate::clock::now_ms(), ..r.clone() };
    store.put_volume(deleted.clone()).map_err(|e| e.to_string())?;
    Ok(Some(deleted))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::parse_str;

    fn objects(yaml: &str) -> Vec<Object> {
        parse_str("test.yaml", yaml).unwrap_or_else(|e| panic!("{e:?}"))
    }

    const CLAIM: &str = "apiVersion: v1\nkind: PersistentVolumeClaim\nmetadata: {name: data}\nspec:\n  accessModes: [ReadWriteOnce]\n  storageClassName: CLASS\n  resources: {requests: {storage: 1Mi}}\n";

    fn writer(name: &str, read_only: bool) -> String {
        format!(
            "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {name}}}\nspec:\n  selector: {{matchLabels: {{app: {name}}}}}\n  template:\n    metadata: {{labels: {{app: {name}}}}}\n    spec:\n      containers:\n      - name: c\n        image: sensor:1.0\n        volumeMounts: [{{name: d, mountPath: /data, readOnly: {read_only}}}]\n      volumes:\n      - name: d\n        persistentVolumeClaim: {{claimName: data}}\n"
        )
    }

    #[test]
    fn an_unknown_class_is_refused_and_a_stored_one_is_found() {
        let batch = objects(&CLAIM.replace("CLASS", "fast"));
        let errs = check(&batch.iter().collect::<Vec<_>>(), &[]);
        assert_eq!(errs.len(), 1);
        assert!(errs[0].contains("storageclass \"fast\" not found"), "{errs:?}");
        let class = objects(
            "apiVersion: storage.k8s.io/v1\nkind: StorageClass\nmetadata: {name: fast}\nprovisioner: wasmfleet.io/replicated\n",
        );
        assert!(check(&batch.iter().collect::<Vec<_>>(), &class).is_empty());
        let builtin = objects(&CLAIM.replace("CLASS", "replicated"));
        assert!(check(&builtin.iter().collect::<Vec<_>>(), &[]).is_empty());
    }

    #[test]
    fn two_writers_of_a_read_write_once_claim_are_refused() {
        let stored = objects(&format!("{}---\n{}", CLAIM.replace("CLASS", "local"), writer("a", false)));
        let second = objects(&writer("b", false));
        let errs = check(&second.iter().collect::<Vec<_>>(), &stored);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(errs[0].contains("mounted read-write by Deployment/default/a and Deployment/default/b"), "{errs:?}");
        let reader = objects(&writer("b", true));
        assert!(check(&reader.iter().collect::<Vec<_>>(), &stored).is_empty());
        // Applying the first writer again is not a conflict with itself.
        let again = objects(&writer("a", false));
        assert!(check(&again.iter().collect::<Vec<_>>(), &stored).is_empty());
    }
}
