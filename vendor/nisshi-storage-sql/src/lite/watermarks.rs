// Ticketflow patch: a cache of each partition's watermarks.
//
// Upstream reads `watermark_select.sql` for every partition of every fetch
// round (twice: once in the fetch service, once in `Delegate::fetch`), and a
// consumer that is caught up fetches every partition it owns several times a
// second. Our stage consumers own 24 to 48 partitions each (main topic, retry
// tiers, dead letters), most of them empty, so at 300 jobs/s those reads were
// a fifth of the machine's CPU and an idle `ticketflow run` spent a quarter
// of a core on them.
//
// The cache answers `offset_stage` from memory. It is only correct while
// this process is the only writer of the database file, which is how
// Ticketflow runs the SQLite engine (one broker per data directory; the
// broker holds the file). Every write that can move a partition's
// watermarks invalidates: a produce invalidates its partition, anything else
// (topic creation and deletion, record deletion, retention, transactions,
// configuration changes) clears the whole cache.
//
// A read that misses takes a ticket (the cache's epoch and the partition's
// version) before it reads the database, and stores what it read only if no
// invalidation happened in between; otherwise a read that started before a
// produce committed could store the watermark from before it, and a caught-up
// consumer would not see that record until the next produce.

use std::{collections::HashMap, sync::Mutex};

use nisshi_storage::{OffsetStage, Topition};

#[derive(Debug, Default)]
pub(crate) struct Watermarks {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    epoch: u64,
    slots: HashMap<(String, i32), Slot>,
}

#[derive(Debug, Default)]
struct Slot {
    version: u64,
    stage: Option<OffsetStage>,
}

/// What a miss must hand back to [`Watermarks::fill`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Ticket {
    epoch: u64,
    version: u64,
}

/// Virtual topics (`base/key`) share their base topic's watermarks: they
/// are never cached, and a write to one invalidates the base.
fn key(topition: &Topition) -> (String, i32) {
    let topic = topition.topic();
    let base = topic.split_once('/').map_or(topic, |(base, _)| base);
    (base.to_owned(), topition.partition())
}

impl Watermarks {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // The data is a cache: a panic elsewhere cannot leave it wrong,
        // only stale in a way the next invalidation repairs.
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The cached stage, or a ticket to fill it with after reading the
    /// database.
    pub(crate) fn get(&self, topition: &Topition) -> Result<OffsetStage, Ticket> {
        let inner = self.lock();
        if topition.topic().contains('/') {
            return Err(Ticket { epoch: inner.epoch, version: u64::MAX });
        }
        match inner.slots.get(&key(topition)) {
            Some(Slot { stage: Some(stage), .. }) => Ok(*stage),
            Some(slot) => Err(Ticket { epoch: inner.epoch, version: slot.version }),
            None => Err(Ticket { epoch: inner.epoch, version: 0 }),
        }
    }

    /// Stores what a miss read, unless the partition was invalidated since
    /// the ticket was taken. Stages with an open transaction (last stable
    /// below the high watermark) are not cached.
    pub(crate) fn fill(&self, topition: &Topition, ticket: Ticket, stage: OffsetStage) {
        if stage.last_stable != stage.high_watermark || topition.topic().contains('/') {
            return;
        }
        let mut inner = self.lock();
        if inner.epoch != ticket.epoch {
            return;
        }
        let slot = inner.slots.entry(key(topition)).or_default();
        if slot.version == ticket.version {
            slot.stage = Some(stage);
        }
    }

    /// A write to the partition committed (or may have).
    pub(crate) fn invalidate(&self, topition: &Topition) {
        let mut inner = self.lock();
        let slot = inner.slots.entry(key(topition)).or_default();
        slot.version += 1;
        slot.stage = None;
    }

    /// A write that can move any partition's watermarks committed (or may
    /// have).
    pub(crate) fn clear(&self) {
        let mut inner = self.lock();
        inner.epoch += 1;
        inner.slots.clear();
    }
}

/// Clears the cache when dropped: at the end of a write, whether it
/// committed, failed or was cancelled.
pub(crate) struct ClearOnDrop<'a>(pub(crate) &'a Watermarks);

impl Drop for ClearOnDrop<'_> {
    fn drop(&mut self) {
        self.0.clear();
    }
}

/// Invalidates one partition when dropped.
pub(crate) struct InvalidateOnDrop<'a>(pub(crate) &'a Watermarks, pub(crate) &'a Topition);

impl Drop for InvalidateOnDrop<'_> {
    fn drop(&mut self) {
        self.0.invalidate(self.1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stage(high: i64) -> OffsetStage {
        OffsetStage {
            last_stable: high,
            high_watermark: high,
            log_start: 0,
        }
    }

    #[test]
    fn a_fill_after_an_invalidation_is_dropped() {
        let cache = Watermarks::default();
        let tp = Topition::new("t", 0);
        let ticket = cache.get(&tp).unwrap_err();
        // a produce commits while the miss reads the database
        cache.invalidate(&tp);
        cache.fill(&tp, ticket, stage(10));
        assert!(cache.get(&tp).is_err(), "a stale read must not be cached");

        let ticket = cache.get(&tp).unwrap_err();
        cache.fill(&tp, ticket, stage(11));
        assert_eq!(cache.get(&tp).unwrap().high_watermark, 11);

        cache.invalidate(&tp);
        assert!(cache.get(&tp).is_err());
    }

    #[test]
    fn a_fill_after_a_clear_is_dropped_and_other_partitions_are_kept_apart() {
        let cache = Watermarks::default();
        let (a, b) = (Topition::new("t", 0), Topition::new("t", 1));
        let ta = cache.get(&a).unwrap_err();
        let tb = cache.get(&b).unwrap_err();
        cache.fill(&b, tb, stage(5));
        cache.invalidate(&b);
        // invalidating b does not void a's ticket
        cache.fill(&a, ta, stage(3));
        assert_eq!(cache.get(&a).unwrap().high_watermark, 3);

        let ta = cache.get(&Topition::new("u", 0)).unwrap_err();
        cache.clear();
        cache.fill(&Topition::new("u", 0), ta, stage(1));
        assert!(cache.get(&Topition::new("u", 0)).is_err());
        assert!(cache.get(&a).is_err(), "clear drops every partition");
    }

    #[test]
    fn an_open_transaction_is_not_cached() {
        let cache = Watermarks::default();
        let tp = Topition::new("t", 0);
        let ticket = cache.get(&tp).unwrap_err();
        cache.fill(
            &tp,
            ticket,
            OffsetStage {
                last_stable: 4,
                high_watermark: 9,
                log_start: 0,
            },
        );
        assert!(cache.get(&tp).is_err());
    }
}
