//! The assignment file: the replicas last assigned to this node (`assigned.json`), so that a
//! restart runs them at once, before it hears from any peer (see [`super::desired`]'s boot
//! grace).
//!
//! Writes run on blocking threads, possibly several at once; each carries a generation and an
//! older one never lands after a newer one (a restart would run a stale assignment).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Where the replicas last assigned to this node are kept (`owner#index` per entry).
const ASSIGNED_FILE: &str = "assigned.json";

/// This node's assignment file.
pub struct AssignmentFile {
    path: PathBuf,
    /// What the file held when this process started.
    at_boot: Option<BTreeSet<String>>,
    /// The assignment last handed to the writer.
    last: Mutex<Option<BTreeSet<String>>>,
    generation: AtomicU64,
    on_disk: Arc<Mutex<u64>>,
}

impl AssignmentFile {
    /// Reads the file of `data_dir` (none, or unreadable: no assignment).
    pub fn load(data_dir: &Path) -> AssignmentFile {
        let path = data_dir.join(ASSIGNED_FILE);
        let at_boot = std::fs::read(&path).ok().and_then(|b| serde_json::from_slice::<BTreeSet<String>>(&b).ok());
        AssignmentFile {
            path,
            last: Mutex::new(at_boot.clone()),
            at_boot,
            generation: AtomicU64::new(0),
            on_disk: Arc::new(Mutex::new(0)),
        }
    }

    /// What the file held when this process started.
    pub fn at_boot(&self) -> Option<&BTreeSet<String>> {
        self.at_boot.as_ref()
    }

    /// Keeps the file equal to `now`, writing in the background when it changed (the handle
    /// of that write).
    pub fn remember(&self, now: &BTreeSet<String>) -> Option<tokio::task::JoinHandle<()>> {
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if last.as_ref() == Some(now) {
            return None;
        }
        let bytes = serde_json::to_vec(now).ok()?;
        *last = Some(now.clone());
        let generation = self.generation.fetch_add(1, Ordering::SeqCst) + 1;
        let on_disk = self.on_disk.clone();
        let path = self.path.clone();
        Some(tokio::task::spawn_blocking(move || write_if_newer(&on_disk, &path, generation, &bytes)))
    }
}

/// Writes `bytes` (generation `generation`) to `path` unless a newer generation is there
/// already; `on_disk` holds the generation on disk and serialises the writers.
fn write_if_newer(on_disk: &Mutex<u64>, path: &Path, generation: u64, bytes: &[u8]) {
    let mut last = on_disk.lock().unwrap_or_else(|e| e.into_inner());
    if *last >= generation {
        return;
    }
    match crate::state::write_private(path, bytes) {
        Ok(()) => *last = generation,
        Err(e) => tracing::warn!(error = %format!("{e:#}"), "could not record this node's assignment"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_older_assignment_never_lands_after_a_newer_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(ASSIGNED_FILE);
        let on_disk = Mutex::new(0);
        write_if_newer(&on_disk, &path, 2, b"[\"newer\"]");
        // The writer of generation 1 was slower: it must not overwrite generation 2.
        write_if_newer(&on_disk, &path, 1, b"[]");
        assert_eq!(std::fs::read(&path).unwrap(), b"[\"newer\"]");
        write_if_newer(&on_disk, &path, 3, b"[\"newest\"]");
        assert_eq!(std::fs::read(&path).unwrap(), b"[\"newest\"]");
    }

    #[tokio::test]
    async fn the_file_read_at_boot_is_what_the_last_run_remembered() {
        let dir = tempfile::tempdir().unwrap();
        let first = AssignmentFile::load(dir.path());
        assert_eq!(first.at_boot(), None);
        let now: BTreeSet<String> = ["Deployment/default/web#0".to_string()].into();
        first.remember(&now).expect("a new assignment is written").await.unwrap();
        assert!(first.remember(&now).is_none(), "an unchanged assignment is not written again");
        assert_eq!(AssignmentFile::load(dir.path()).at_boot(), Some(&now));
    }
}
