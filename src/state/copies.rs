//! This node's persistent volume directories: `<data>/pv/<volume>/data` holds the files a
//! replica sees (on the writer) or the copy of them (elsewhere), and `copy.json` says what the
//! copy holds ([`CopyState`]: the writer's epoch, the snapshot sequence, whether it is whole).
//!
//! A snapshot arrives in `<data>/pv/<volume>/incoming` and is applied by [`Staging::commit`]:
//! the state is marked incomplete (durably), the files are moved into place (a whole snapshot
//! replaces the directory), and the state is marked complete with the new sequence (durably).
//! A node that dies in between restarts with an incomplete copy, which never counts as a
//! failover candidate and is sent whole again.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Component, Path, PathBuf};
use std::time::UNIX_EPOCH;

use serde::{Deserialize, Serialize};

/// What a copy holds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CopyState {
    pub epoch: u64,
    pub seq: u64,
    pub complete: bool,
    /// Bytes of its files at the snapshot.
    pub bytes: u64,
    /// When the writer read the snapshot (wall ms).
    pub taken_ms: u64,
}

/// One file as a scan saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileStamp {
    pub size: u64,
    pub mtime_ns: u128,
}

/// A volume's files by relative path (`/`-separated).
pub type Manifest = BTreeMap<String, FileStamp>;

/// Most files one volume may hold (a scan beyond fails).
pub const MAX_FILES: usize = 100_000;

/// This node's volume directories.
#[derive(Debug, Clone)]
pub struct VolumeDirs {
    root: PathBuf,
}

impl VolumeDirs {
    pub fn new(data_dir: &Path) -> VolumeDirs {
        VolumeDirs { root: data_dir.join("pv") }
    }

    fn dir(&self, volume: &str) -> PathBuf {
        self.root.join(volume)
    }

    /// The directory a replica mounts.
    pub fn data_dir(&self, volume: &str) -> PathBuf {
        self.dir(volume).join("data")
    }

    /// What the copy here holds, if there is one.
    pub fn state(&self, volume: &str) -> Option<CopyState> {
        let bytes = std::fs::read(self.dir(volume).join("copy.json")).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Records what the copy holds, durably.
    pub fn set_state(&self, volume: &str, state: &CopyState) -> std::io::Result<()> {
        let bytes = serde_json::to_vec(state).map_err(std::io::Error::other)?;
        Ok(wasmfleet_durable::write(&self.dir(volume).join("copy.json"), &bytes, wasmfleet_durable::PRIVATE)?)
    }

    /// Makes this node's copy the volume's, under `epoch` (a bind or a takeover): creates the
    /// directory if needed, keeps the data and sequence it has. Returns the data directory.
    pub fn adopt(&self, volume: &str, epoch: u64) -> std::io::Result<PathBuf> {
        let data = self.data_dir(volume);
        std::fs::create_dir_all(&data)?;
        let mut state = self.state(volume).unwrap_or_default();
        if state.epoch != epoch || !state.complete {
            state.epoch = epoch;
            state.complete = true;
            self.set_state(volume, &state)?;
        }
        Ok(data)
    }

    /// Every volume with a directory here, and what its copy holds (None: no readable state).
    pub fn list(&self) -> Vec<(String, Option<CopyState>)> {
        let Ok(entries) = std::fs::read_dir(&self.root) else { return Vec::new() };
        let mut out: Vec<(String, Option<CopyState>)> = entries
            .flatten()
            .filter(|e| e.path().is_dir())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .map(|v| {
                let s = self.state(&v);
                (v, s)
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Deletes a volume's directory here.
    pub fn remove(&self, volume: &str) -> std::io::Result<()> {
        match std::fs::remove_dir_all(self.dir(volume)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// The volume's files now (symbolic links are not followed and not listed).
    pub fn scan(&self, volume: &str) -> std::io::Result<Manifest> {
        let root = self.data_dir(volume);
        let mut out = Manifest::new();
        let mut stack = vec![(root.clone(), String::new())];
        while let Some((dir, prefix)) = stack.pop() {
            let entries = match std::fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound && dir == root => return Ok(out),
                Err(e) => return Err(e),
            };
            for entry in entries {
                let entry = entry?;
                let name = entry.file_name().to_string_lossy().into_owned();
                let rel = if prefix.is_empty() { name } else { format!("{prefix}/{name}") };
                let meta = match entry.path().symlink_metadata() {
                    Ok(m) => m,
                    // Removed since the directory was listed.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e),
                };
                if meta.is_dir() {
                    stack.push((entry.path(), rel));
                } else if meta.is_file() {
                    let mtime_ns = meta.modified().ok().and_then(|t| t.duration_since(UNIX_EPOCH).ok());
                    out.insert(rel, FileStamp { size: meta.len(), mtime_ns: mtime_ns.map_or(0, |d| d.as_nanos()) });
                    if out.len() > MAX_FILES {
                        return Err(std::io::Error::other(format!("more than {MAX_FILES} files")));
                    }
                }
            }
        }
        Ok(out)
    }

    /// Starts receiving a snapshot of `volume` (an empty staging directory).
    pub fn begin(&self, volume: &str) -> std::io::Result<Staging> {
        let incoming = self.dir(volume).join("incoming");
        if incoming.exists() {
            std::fs::remove_dir_all(&incoming)?;
        }
        std::fs::create_dir_all(&incoming)?;
        Ok(Staging { dirs: self.clone(), volume: volume.to_string(), incoming })
    }
}

/// The bytes of a manifest's files.
pub fn total_bytes(m: &Manifest) -> u64 {
    m.values().map(|f| f.size).sum()
}

/// What changed from `old` to `new`: files new or different, and files gone.
pub fn diff(old: &Manifest, new: &Manifest) -> (Vec<String>, Vec<String>) {
    let changed = new.iter().filter(|(p, s)| old.get(*p) != Some(s)).map(|(p, _)| p.clone()).collect();
    let removed = old.keys().filter(|p| !new.contains_key(*p)).cloned().collect();
    (changed, removed)
}

/// Checks a relative path from a peer: plain components only, no `..`, no root.
pub fn checked_path(rel: &str) -> Result<PathBuf, String> {
    if rel.is_empty() || rel.len() > 4096 || rel.contains('\0') {
        return Err(format!("invalid path {rel:?}"));
    }
    let path = PathBuf::from(rel);
    if path.components().all(|c| matches!(c, Component::Normal(_))) {
        Ok(path)
    } else {
        Err(format!("path {rel:?} leaves the volume"))
    }
}

/// A snapshot being received.
pub struct Staging {
    dirs: VolumeDirs,
    volume: String,
    incoming: PathBuf,
}

impl Staging {
    /// Creates (or truncates) file `rel` in the staging directory.
    pub fn create(&self, rel: &str) -> std::io::Result<std::fs::File> {
        let path = self.incoming.join(checked_path(rel).map_err(std::io::Error::other)?);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::File::create(path)
    }

    /// Appends to file `rel` in the staging directory.
    pub fn append(&self, rel: &str, bytes: &[u8]) -> std::io::Result<()> {
        let path = self.incoming.join(checked_path(rel).map_err(std::io::Error::other)?);
        std::fs::OpenOptions::new().append(true).open(path)?.write_all(bytes)
    }

    /// Applies the snapshot: a whole one replaces the data, a delta moves its files into place
    /// and deletes `removed`. The copy is incomplete until the new state is written.
    pub fn commit(self, state: CopyState, removed: &[String], whole: bool) -> std::io::Result<()> {
        let dirs = &self.dirs;
        let mut marking = dirs.state(&self.volume).unwrap_or_default();
        marking.complete = false;
        dirs.set_state(&self.volume, &marking)?;
        sync_tree(&self.incoming)?;
        let data = dirs.data_dir(&self.volume);
        if whole {
            let old = dirs.dir(&self.volume).join("replaced");
            if old.exists() {
                std::fs::remove_dir_all(&old)?;
            }
            if data.exists() {
                std::fs::rename(&data, &old)?;
            }
            std::fs::rename(&self.incoming, &data)?;
            if old.exists() {
                std::fs::remove_dir_all(&old)?;
            }
        } else {
            std::fs::create_dir_all(&data)?;
            move_into(&self.incoming, &self.incoming, &data)?;
            for rel in removed {
                let path = data.join(checked_path(rel).map_err(std::io::Error::other)?);
                match std::fs::remove_file(&path) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
            std::fs::remove_dir_all(&self.incoming)?;
        }
        std::fs::File::open(&data)?.sync_all()?;
        dirs.set_state(&self.volume, &CopyState { complete: true, ..state })
    }
}

/// Moves every file under `dir` (a part of `base`) to the same place under `to`.
fn move_into(base: &Path, dir: &Path, to: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        if entry.file_type()?.is_dir() {
            move_into(base, &path, to)?;
        } else {
            let rel = path.strip_prefix(base).map_err(std::io::Error::other)?;
            let target = to.join(rel);
            if let Some(parent) = target.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::rename(&path, &target)?;
        }
    }
    Ok(())
}

/// fsyncs every file and directory under `dir`.
fn sync_tree(dir: &Path) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            sync_tree(&entry.path())?;
        } else {
            std::fs::File::open(entry.path())?.sync_all()?;
        }
    }
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, rel: &str, bytes: &[u8]) {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, bytes).unwrap();
    }

    #[test]
    fn a_delta_applies_over_a_copy_and_a_whole_snapshot_replaces_it() {
        let tmp = tempfile::tempdir().unwrap();
        let dirs = VolumeDirs::new(tmp.path());
        let data = dirs.adopt("pvc-1", 1).unwrap();
        write(&data, "a.txt", b"old");
        write(&data, "sub/b.txt", b"keep");
        write(&data, "gone.txt", b"x");
        let before = dirs.scan("pvc-1").unwrap();
        assert_eq!(before.len(), 3);
        assert_eq!(total_bytes(&before), 8);

        let s = dirs.begin("pvc-1").unwrap();
        s.create("a.txt").unwrap();
        s.append("a.txt", b"new").unwrap();
        s.create("sub/deeper/c.txt").unwrap();
        let state = CopyState { epoch: 1, seq: 2, complete: true, bytes: 0, taken_ms: 7 };
        s.commit(state, &["gone.txt".into()], false).unwrap();
        assert_eq!(std::fs::read(data.join("a.txt")).unwrap(), b"new");
        assert_eq!(std::fs::read(data.join("sub/b.txt")).unwrap(), b"keep");
        assert!(data.join("sub/deeper/c.txt").exists());
        assert!(!data.join("gone.txt").exists());
        assert_eq!(dirs.state("pvc-1").unwrap(), state);

        let s = dirs.begin("pvc-1").unwrap();
        s.create("only.txt").unwrap();
        s.commit(CopyState { seq: 3, ..state }, &[], true).unwrap();
        let after = dirs.scan("pvc-1").unwrap();
        assert_eq!(after.keys().collect::<Vec<_>>(), ["only.txt"]);
        let (changed, removed) = diff(&before, &after);
        assert_eq!(changed, ["only.txt"]);
        assert_eq!(removed.len(), 3);
        assert_eq!(dirs.list(), [("pvc-1".to_string(), Some(CopyState { seq: 3, ..state }))]);
    }

    #[test]
    fn paths_from_peers_stay_inside_the_volume() {
        assert!(checked_path("a/b.txt").is_ok());
        for bad in ["", "../x", "/etc/passwd", "a/../../b", "a\0b"] {
            assert!(checked_path(bad).is_err(), "{bad:?}");
        }
        let tmp = tempfile::tempdir().unwrap();
        let s = VolumeDirs::new(tmp.path()).begin("pvc-1").unwrap();
        assert!(s.create("../escape").is_err());
    }
}
