//! A [`Storage`] in memory, for tests: "durable" means it outlives the
//! [`Replicator`](super::Replicator) that uses it, so a simulated restart keeps it and a
//! simulated disk loss [`wipe`](MemoryStorage::wipe)s it. It can be told to fail, to test
//! that failures propagate.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::entry::{Entry, Key};
use super::merge::{Merge, resolve};
use super::storage::Storage;
use super::summary::Summary;

/// The error of a [`MemoryStorage`] told to fail.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("memory storage failure (injected)")]
pub struct InjectedFailure;

/// An in-memory replica of the map.
#[derive(Debug)]
pub struct MemoryStorage<V> {
    entries: Mutex<BTreeMap<Key, Entry<V>>>,
    failing: AtomicBool,
}

impl<V> Default for MemoryStorage<V> {
    fn default() -> Self {
        MemoryStorage { entries: Mutex::new(BTreeMap::new()), failing: AtomicBool::new(false) }
    }
}

impl<V: Merge> MemoryStorage<V> {
    pub fn new() -> Self {
        Self::default()
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, BTreeMap<Key, Entry<V>>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn check(&self) -> Result<(), InjectedFailure> {
        if self.failing.load(Ordering::SeqCst) { Err(InjectedFailure) } else { Ok(()) }
    }

    /// A local write (or delete, or join): merged by the same rule as a peer's entry.
    /// Returns whether it changed the map.
    pub fn write(&self, entry: Entry<V>) -> Result<bool, InjectedFailure> {
        Ok(self.merge_batch(vec![entry])? == 1)
    }

    fn merge_batch(&self, batch: Vec<Entry<V>>) -> Result<usize, InjectedFailure> {
        self.check()?;
        let mut entries = self.entries();
        let mut changed = 0;
        for incoming in batch {
            if let Some(next) = resolve(entries.get(&incoming.key), incoming) {
                entries.insert(next.key.clone(), next);
                changed += 1;
            }
        }
        Ok(changed)
    }

    /// The entry of `key`.
    pub fn get(&self, key: &str) -> Option<Entry<V>> {
        self.entries().get(key).cloned()
    }

    /// Every entry, by key.
    pub fn snapshot(&self) -> BTreeMap<Key, Entry<V>> {
        self.entries().clone()
    }

    /// Loses everything (a node whose disk is replaced).
    pub fn wipe(&self) {
        self.entries().clear();
    }

    /// Makes every later call fail (`true`) or work again (`false`).
    pub fn set_failing(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }
}

impl<V> Storage for MemoryStorage<V>
where
    V: Merge + Serialize + DeserializeOwned + Send + Sync + 'static,
{
    type Value = V;
    type Error = InjectedFailure;

    fn summary(&self) -> Result<Summary, InjectedFailure> {
        self.check()?;
        Ok(self.entries().values().map(|e| (e.key.clone(), e.version)).collect())
    }

    fn read(&self, keys: &[Key]) -> Result<Vec<Entry<V>>, InjectedFailure> {
        self.check()?;
        let entries = self.entries();
        Ok(keys.iter().filter_map(|k| entries.get(k).cloned()).collect())
    }

    fn merge(&self, batch: Vec<Entry<V>>) -> Result<usize, InjectedFailure> {
        self.merge_batch(batch)
    }
}
