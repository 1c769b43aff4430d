//! A bounded cache of objects resolved from packs, keyed by pack and entry offset: delta chains
//! share their bases, and a walk reads many objects of one chain (C git's delta base cache).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use gitstratum_git::ObjectKind;
use gitstratum_git::packfile::BaseCache;

struct Slot {
    kind: ObjectKind,
    data: Arc<Vec<u8>>,
    used: u64,
}

#[derive(Default)]
struct Inner {
    slots: HashMap<(u64, u64), Slot>,
    bytes: usize,
    tick: u64,
}

/// Least recently used objects, at most `budget` bytes of them (objects larger than an eighth of
/// it are not kept).
pub(crate) struct Lru {
    inner: Mutex<Inner>,
    budget: usize,
}

impl Lru {
    pub(crate) fn new(budget: usize) -> Lru {
        Lru { inner: Mutex::default(), budget }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The cache as one pack's readers see it.
    pub(crate) fn for_pack(&self, pack: u64) -> PackView<'_> {
        PackView { lru: self, pack }
    }

    /// Forgets a pack's objects (it was deleted).
    pub(crate) fn forget(&self, pack: u64) {
        let mut inner = self.lock();
        let mut freed = 0;
        inner.slots.retain(|(p, _), slot| {
            let keep = *p != pack;
            if !keep {
                freed += slot.data.len();
            }
            keep
        });
        inner.bytes -= freed;
    }
}

pub(crate) struct PackView<'a> {
    lru: &'a Lru,
    pack: u64,
}

impl BaseCache for PackView<'_> {
    fn get(&self, offset: u64) -> Option<(ObjectKind, Arc<Vec<u8>>)> {
        let mut inner = self.lru.lock();
        inner.tick += 1;
        let tick = inner.tick;
        let slot = inner.slots.get_mut(&(self.pack, offset))?;
        slot.used = tick;
        Some((slot.kind, slot.data.clone()))
    }

    fn put(&self, offset: u64, kind: ObjectKind, data: Arc<Vec<u8>>) {
        let budget = self.lru.budget;
        if data.len() > budget / 8 {
            return;
        }
        let mut inner = self.lru.lock();
        inner.tick += 1;
        let used = inner.tick;
        let len = data.len();
        if let Some(old) = inner.slots.insert((self.pack, offset), Slot { kind, data, used }) {
            inner.bytes -= old.data.len();
        }
        inner.bytes += len;
        if inner.bytes > budget {
            // Evict the least recently used down to three quarters, so eviction is occasional.
            let mut ages: Vec<(u64, (u64, u64))> = inner.slots.iter().map(|(k, s)| (s.used, *k)).collect();
            ages.sort_unstable();
            for (_, key) in ages {
                if inner.bytes <= budget / 4 * 3 {
                    break;
                }
                if let Some(slot) = inner.slots.remove(&key) {
                    inner.bytes -= slot.data.len();
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stays_within_its_budget_and_keeps_recent_objects() {
        let lru = Lru::new(800);
        let view = lru.for_pack(1);
        for offset in 0..100 {
            view.put(offset, ObjectKind::Blob, Arc::new(vec![0; 50]));
            view.get(0);
        }
        assert!(lru.lock().bytes <= 800);
        assert!(view.get(0).is_some(), "used often, kept");
        assert!(view.get(1).is_none(), "old, evicted");
        view.put(500, ObjectKind::Blob, Arc::new(vec![0; 200]));
        assert!(view.get(500).is_none(), "larger than an eighth: not kept");
        lru.forget(1);
        assert_eq!(lru.lock().bytes, 0);
    }
}
