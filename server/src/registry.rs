//! A map from a key (a campaign) to the one task that serves it here, with the two rules that
//! make "exactly one task per key" hold while tasks start and retire concurrently.
//!
//! Campaign writers and media sessions both work this way: the first request for a key starts
//! its task; the task retires when it has nothing left to do. The races are the same too, and are
//! settled here once:
//!
//! - *Start*: [`Registry::get_or_start`] looks up and, if no live task serves the key, starts one
//!   under the map's lock, so two first requests cannot start two tasks.
//! - *Retire*: a task must not leave while a request is on its way to it. [`Registry::retire`]
//!   asks the task, under the same lock, whether its queue is still empty: nobody can look the
//!   task up and send to it meanwhile, so "empty" here means nothing more will arrive.
//! - *Generations*: every start gets a new [`Generation`]; a task removes only its own entry, so
//!   a late retirement (or a supervisor cleaning up after a panic) never removes its successor.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Which start of a key's task this is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Generation(u64);

struct Entry<H> {
    generation: Generation,
    handle: H,
}

pub struct Registry<K, H> {
    entries: Mutex<HashMap<K, Entry<H>>>,
    next: AtomicU64,
}

impl<K: Eq + Hash + Clone, H: Clone> Default for Registry<K, H> {
    fn default() -> Self {
        Registry {
            entries: Mutex::new(HashMap::new()),
            next: AtomicU64::new(1),
        }
    }
}

impl<K: Eq + Hash + Clone, H: Clone> Registry<K, H> {
    /// The handle of the task serving `key`, if one runs.
    pub fn get(&self, key: &K) -> Option<H> {
        self.lock().get(key).map(|e| e.handle.clone())
    }

    /// The handle of the task serving `key`; when none runs, or the one found has stopped
    /// (`alive` says no), `start` starts one (under the lock) and its handle is registered.
    pub fn get_or_start(
        &self,
        key: &K,
        alive: impl FnOnce(&H) -> bool,
        start: impl FnOnce(Generation) -> H,
    ) -> H {
        let mut entries = self.lock();
        if let Some(entry) = entries.get(key) {
            if alive(&entry.handle) {
                return entry.handle.clone();
            }
        }
        let generation = Generation(self.next.fetch_add(1, Ordering::Relaxed));
        let handle = start(generation);
        entries.insert(
            key.clone(),
            Entry {
                generation,
                handle: handle.clone(),
            },
        );
        handle
    }

    /// Called by the task of `generation`: leave, unless `idle` (asked under the lock) says work
    /// has arrived. Returns whether the task may stop.
    pub fn retire(&self, key: &K, generation: Generation, idle: impl FnOnce() -> bool) -> bool {
        let mut entries = self.lock();
        if !idle() {
            return false;
        }
        if entries.get(key).map(|e| e.generation) == Some(generation) {
            entries.remove(key);
        }
        true
    }

    /// Remove the entry of `generation` (its task died); a successor's entry stays.
    pub fn forget(&self, key: &K, generation: Generation) {
        let mut entries = self.lock();
        if entries.get(key).map(|e| e.generation) == Some(generation) {
            entries.remove(key);
        }
    }

    /// Every registered task, briefly holding the lock.
    pub fn each(&self, mut visit: impl FnMut(&K, &H)) {
        for (key, entry) in self.lock().iter() {
            visit(key, &entry.handle);
        }
    }

    /// Remove every entry and return the handles (shutdown).
    pub fn drain(&self) -> Vec<H> {
        self.lock().drain().map(|(_, e)| e.handle).collect()
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, Entry<H>>> {
        self.entries.lock().expect("registry lock")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_task_per_key_until_it_stops() {
        let registry: Registry<&str, u32> = Registry::default();
        let mut starts = 0;
        let a = registry.get_or_start(
            &"a",
            |_| true,
            |_| {
                starts += 1;
                10
            },
        );
        let again = registry.get_or_start(&"a", |_| true, |_| unreachable!("already running"));
        assert_eq!((a, again, starts), (10, 10, 1));
        let restarted = registry.get_or_start(&"a", |_| false, |_| 11);
        assert_eq!(restarted, 11, "a stopped task is replaced");
    }

    #[test]
    fn a_task_retires_only_when_idle_and_only_its_own_entry() {
        let registry: Registry<&str, u32> = Registry::default();
        let mut first = None;
        registry.get_or_start(
            &"a",
            |_| true,
            |g| {
                first = Some(g);
                1
            },
        );
        let first = first.unwrap();
        assert!(!registry.retire(&"a", first, || false), "work arrived");
        assert_eq!(registry.get(&"a"), Some(1));
        // A successor started meanwhile: the old task's retirement leaves it in place.
        registry.get_or_start(&"a", |_| false, |_| 2);
        assert!(registry.retire(&"a", first, || true));
        assert_eq!(registry.get(&"a"), Some(2));
        registry.forget(&"a", first);
        assert_eq!(registry.get(&"a"), Some(2), "forget is per generation too");
        assert_eq!(registry.drain(), [2]);
        assert!(registry.is_empty());
    }
}
