//! Volumes of the replicas on this node: `emptyDir` directories (one per replica and volume,
//! kept across restarts of that replica and removed when the replica leaves the node, as a
//! pod's are in Kubernetes), `hostPath` grants, and PersistentVolumeClaims (the volume's
//! directory, `<data>/pv/<volume>/data`, see `state::copies`).
//!
//! `emptyDir` directories are `<data>/volumes/<namespace>/<replica>/<volume>`.

use std::path::{Path, PathBuf};

use wasmfleet_runtime::Preopen;

use super::claims::ClaimUse;
use crate::manifest::VolumeGrant;
use crate::state::copies::VolumeDirs;

/// The node's volume directories.
pub struct Volumes {
    root: PathBuf,
    persistent: VolumeDirs,
}

impl Volumes {
    pub fn new(data_dir: &Path) -> Volumes {
        Volumes { root: data_dir.join("volumes"), persistent: VolumeDirs::new(data_dir) }
    }

    /// The preopened directory for volume `v` of replica `replica` in `namespace`, creating an
    /// `emptyDir` on first use. A claim mounts its volume's directory, read-only unless the
    /// replica is the volume's one writer.
    pub fn preopen(
        &self,
        namespace: &str,
        replica: &str,
        v: &VolumeGrant,
        claims: &[ClaimUse],
    ) -> Result<Preopen, String> {
        if let Some(claim) = &v.claim {
            let u =
                claims.iter().find(|u| u.claim == *claim).ok_or_else(|| format!("claim {claim:?} is not resolved"))?;
            let dir = self.persistent.data_dir(&u.volume);
            std::fs::create_dir_all(&dir).map_err(|e| format!("volume {} at {}: {e}", u.volume, dir.display()))?;
            return Ok(Preopen {
                host_path: dir,
                guest_path: v.guest_path.clone(),
                read_only: v.read_only || !u.exclusive,
            });
        }
        let host_path = match &v.host_path {
            Some(p) => p.clone(),
            None => {
                let dir = self.root.join(namespace).join(replica).join(&v.name);
                std::fs::create_dir_all(&dir).map_err(|e| format!("emptyDir {}: {e}", dir.display()))?;
                dir
            }
        };
        Ok(Preopen { host_path, guest_path: v.guest_path.clone(), read_only: v.read_only })
    }

    /// Deletes the `emptyDir`s of replicas `keep(namespace, replica)` rejects.
    pub fn remove_unless(&self, keep: impl Fn(&str, &str) -> bool) {
        let Ok(namespaces) = std::fs::read_dir(&self.root) else { return };
        for ns in namespaces.flatten() {
            let ns_name = ns.file_name().to_string_lossy().into_owned();
            let Ok(reps) = std::fs::read_dir(ns.path()) else { continue };
            for rep in reps.flatten() {
                let rep_name = rep.file_name().to_string_lossy().into_owned();
                if !keep(&ns_name, &rep_name)
                    && let Err(e) = std::fs::remove_dir_all(rep.path())
                {
                    tracing::warn!(path = %rep.path().display(), error = %e, "cannot remove volume");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_dir_lives_until_its_replica_leaves() {
        let dir = tempfile::tempdir().unwrap();
        let volumes = Volumes::new(dir.path());
        let grant = VolumeGrant {
            name: "cache".into(),
            host_path: None,
            claim: None,
            guest_path: "/cache".into(),
            read_only: false,
        };
        let p = volumes.preopen("default", "web-0", &grant, &[]).unwrap();
        std::fs::write(p.host_path.join("f"), b"x").unwrap();
        volumes.remove_unless(|ns, rep| ns == "default" && rep == "web-0");
        assert!(p.host_path.join("f").exists());
        volumes.remove_unless(|_, _| false);
        assert!(!p.host_path.exists());
    }
}
