//! Book-keeping of a stage's records between consume and commit: which
//! offsets are in flight per partition, the first offset that may be
//! committed, and the per-key queues that keep one ticket's records in order.
//!
//! Pure data, no I/O: the runtime and the rebalance callback share it behind
//! a mutex.

use std::collections::{BTreeMap, HashMap, VecDeque};

pub type TopicPartition = (String, i32);

#[derive(Debug, Default)]
struct PartitionState {
    generation: u64,
    /// One past the highest offset taken.
    next_offset: Option<i64>,
    /// Unfinished offsets and the bytes each record holds.
    in_flight: BTreeMap<i64, usize>,
    /// Records of this partition a worker is running now.
    running: usize,
}

/// A record handed to a key's worker.
#[derive(Debug)]
pub struct Ticket<J> {
    pub tp: TopicPartition,
    pub offset: i64,
    pub generation: u64,
    pub job: J,
}

#[derive(Debug)]
pub struct Tracker<J> {
    partitions: HashMap<TopicPartition, PartitionState>,
    keys: HashMap<Vec<u8>, VecDeque<Ticket<J>>>,
    in_flight: usize,
    in_flight_bytes: usize,
    generation: u64,
    /// Set at shutdown: no queued record starts any more.
    stopping: bool,
}

/// What [`Tracker::take`] decided.
#[derive(Debug)]
pub enum Taken<J> {
    /// The key was idle: start a worker with this ticket.
    Start(Ticket<J>),
    /// The key is busy: the ticket waits behind it.
    Queued,
    /// The partition is not assigned (revoked meanwhile): drop the record.
    NotAssigned,
}

impl<J> Default for Tracker<J> {
    fn default() -> Self {
        Tracker {
            partitions: HashMap::new(),
            keys: HashMap::new(),
            in_flight: 0,
            in_flight_bytes: 0,
            generation: 0,
            stopping: false,
        }
    }
}

impl<J> Tracker<J> {
    pub fn assign(&mut self, tps: impl IntoIterator<Item = TopicPartition>) {
        for tp in tps {
            self.generation += 1;
            let generation = self.generation;
            let old = self.partitions.insert(
                tp,
                PartitionState {
                    generation,
                    ..Default::default()
                },
            );
            // Assigned again without a revoke (an error rebalance): forget
            // what the old assignment held, as a revoke would.
            if let Some(p) = old {
                self.in_flight -= p.in_flight.len();
                self.in_flight_bytes -= p.in_flight.values().sum::<usize>();
            }
        }
    }

    /// Forgets partitions; their queued (not started) records are dropped
    /// and will be redelivered to the partitions' next owner.
    pub fn revoke(&mut self, tps: &[TopicPartition]) {
        for tp in tps {
            if let Some(p) = self.partitions.remove(tp) {
                self.in_flight -= p.in_flight.len();
                self.in_flight_bytes -= p.in_flight.values().sum::<usize>();
            }
        }
        for q in self.keys.values_mut() {
            q.retain(|t| self.partitions.get(&t.tp).is_some_and(|p| p.generation == t.generation));
        }
    }

    /// The generation of a partition's current assignment.
    pub fn generation_of(&self, tp: &TopicPartition) -> Option<u64> {
        self.partitions.get(tp).map(|p| p.generation)
    }

    pub fn assigned(&self) -> Vec<TopicPartition> {
        self.partitions.keys().cloned().collect()
    }

    /// Records taken and not finished, across partitions.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Records running now: one per key with a worker.
    pub fn running(&self) -> usize {
        self.keys.len()
    }

    /// Shutdown: the running records finish, but no queued record starts
    /// after them. Queued records stay unfinished, so no offset is committed
    /// past them and the next owner redoes them.
    pub fn stop(&mut self) {
        self.stopping = true;
    }

    /// Bytes held by records taken and not finished (the memory budget).
    pub fn in_flight_bytes(&self) -> usize {
        self.in_flight_bytes
    }

    /// Records of these partitions a worker is running now.
    pub fn running_on(&self, tps: &[TopicPartition]) -> usize {
        tps.iter()
            .filter_map(|tp| self.partitions.get(tp))
            .map(|p| p.running)
            .sum()
    }

    /// Revoke is coming: queued records of these partitions will not start
    /// (they stay unfinished, so no offset is committed past them; the next
    /// owner does them). Running ones finish.
    pub fn unqueue(&mut self, tps: &[TopicPartition]) {
        for q in self.keys.values_mut() {
            q.retain(|t| !tps.contains(&t.tp));
        }
    }

    /// Counts a record in flight without starting it (a retry record set
    /// aside until due): no offset is committable past it until it is
    /// [`take`](Self::take)n and finished. False if the partition is not ours.
    pub fn reserve(&mut self, tp: &TopicPartition, offset: i64, bytes: usize) -> bool {
        let Some(p) = self.partitions.get_mut(tp) else {
            return false;
        };
        match p.in_flight.insert(offset, bytes) {
            Some(old) => self.in_flight_bytes = self.in_flight_bytes - old + bytes,
            None => {
                self.in_flight += 1;
                self.in_flight_bytes += bytes;
            }
        }
        p.next_offset = Some(p.next_offset.map_or(offset + 1, |n| n.max(offset + 1)));
        true
    }

    /// Takes a consumed record that holds `bytes` of memory.
    pub fn take(&mut self, tp: TopicPartition, offset: i64, key: &[u8], job: J, bytes: usize) -> Taken<J> {
        let Some(p) = self.partitions.get_mut(&tp) else {
            return Taken::NotAssigned;
        };
        if let Some(old) = p.in_flight.insert(offset, bytes) {
            // Redelivered while still in flight (seek after an error): count once.
            self.in_flight -= 1;
            self.in_flight_bytes -= old;
        }
        p.next_offset = Some(p.next_offset.map_or(offset + 1, |n| n.max(offset + 1)));
        self.in_flight += 1;
        self.in_flight_bytes += bytes;
        let ticket = Ticket {
            tp,
            offset,
            generation: p.generation,
            job,
        };
        match self.keys.get_mut(key) {
            Some(q) => {
                q.push_back(ticket);
                Taken::Queued
            }
            None => {
                p.running += 1;
                self.keys.insert(key.to_vec(), VecDeque::new());
                Taken::Start(ticket)
            }
        }
    }

    /// Marks a ticket finished. Returns the offset now committable on its
    /// partition (if it is still ours) and the key's next ticket, if any.
    pub fn finish(
        &mut self,
        key: &[u8],
        tp: &TopicPartition,
        offset: i64,
        generation: u64,
    ) -> (Option<i64>, Option<Ticket<J>>) {
        let mut committable = None;
        if let Some(p) = self.partitions.get_mut(tp).filter(|p| p.generation == generation) {
            if let Some(bytes) = p.in_flight.remove(&offset) {
                self.in_flight -= 1;
                self.in_flight_bytes -= bytes;
            }
            p.running -= 1;
            committable = p.in_flight.keys().next().copied().or(p.next_offset);
        }
        let next = match self.keys.get_mut(key) {
            Some(q) if !self.stopping => q.pop_front(),
            _ => None,
        };
        match &next {
            Some(t) => {
                if let Some(p) = self.partitions.get_mut(&t.tp).filter(|p| p.generation == t.generation) {
                    p.running += 1;
                }
            }
            None => {
                self.keys.remove(key);
            }
        }
        (committable, next)
    }

    /// The committable offset of every assigned partition that took records.
    pub fn committable(&self, tps: &[TopicPartition]) -> Vec<(TopicPartition, i64)> {
        tps.iter()
            .filter_map(|tp| {
                let p = self.partitions.get(tp)?;
                let off = p.in_flight.keys().next().copied().or(p.next_offset)?;
                Some((tp.clone(), off))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tp(p: i32) -> TopicPartition {
        ("t".to_string(), p)
    }

    #[test]
    fn commits_only_up_to_first_unfinished_offset() {
        let mut t = Tracker::<()>::default();
        t.assign([tp(0)]);
        let mut tickets = Vec::new();
        for (off, key) in [(10, b"a"), (11, b"b"), (12, b"c")] {
            match t.take(tp(0), off, key, (), 100) {
                Taken::Start(ticket) => tickets.push((key, ticket)),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(t.in_flight(), 3);
        assert_eq!(t.in_flight_bytes(), 300);
        // 12 finishes first: nothing before 10 is done, commit stays at 10.
        let (c, _) = t.finish(b"c", &tp(0), 12, tickets[2].1.generation);
        assert_eq!(c, Some(10));
        let (c, _) = t.finish(b"a", &tp(0), 10, tickets[0].1.generation);
        assert_eq!(c, Some(11));
        let (c, _) = t.finish(b"b", &tp(0), 11, tickets[1].1.generation);
        assert_eq!(c, Some(13));
        assert_eq!(t.in_flight(), 0);
        assert_eq!(t.in_flight_bytes(), 0);
    }

    #[test]
    fn same_key_waits_in_order_other_keys_do_not() {
        let mut t = Tracker::<i64>::default();
        t.assign([tp(0)]);
        let first = match t.take(tp(0), 0, b"k", 0, 100) {
            Taken::Start(x) => x,
            other => panic!("{other:?}"),
        };
        assert!(matches!(t.take(tp(0), 1, b"k", 1, 100), Taken::Queued));
        assert!(matches!(t.take(tp(0), 2, b"other", 2, 100), Taken::Start(_)));
        assert!(matches!(t.take(tp(0), 3, b"k", 3, 100), Taken::Queued));
        let (_, next) = t.finish(b"k", &tp(0), 0, first.generation);
        let next = next.unwrap();
        assert_eq!(next.job, 1);
        let (_, next) = t.finish(b"k", &tp(0), 1, next.generation);
        assert_eq!(next.unwrap().job, 3);
    }

    #[test]
    fn revoke_drops_queued_records_and_stale_finishes() {
        let mut t = Tracker::<i64>::default();
        t.assign([tp(0), tp(1)]);
        let running = match t.take(tp(0), 5, b"k", 5, 100) {
            Taken::Start(x) => x,
            other => panic!("{other:?}"),
        };
        assert!(matches!(t.take(tp(0), 6, b"k", 6, 100), Taken::Queued));
        assert!(matches!(t.take(tp(1), 0, b"j", 0, 100), Taken::Start(_)));
        t.revoke(&[tp(0)]);
        assert_eq!(t.in_flight(), 1);
        assert_eq!(t.in_flight_bytes(), 100);
        assert!(matches!(t.take(tp(0), 7, b"x", 7, 100), Taken::NotAssigned));
        // The running record of the revoked partition finishes: nothing to commit, no successor.
        let (c, next) = t.finish(b"k", &tp(0), 5, running.generation);
        assert_eq!(c, None);
        assert!(next.is_none());
        // Reassigned later: a new generation, old tickets cannot touch it.
        t.assign([tp(0)]);
        assert_eq!(t.committable(&[tp(0)]), vec![]);
    }

    #[test]
    fn a_reserved_record_holds_commits_back_and_is_counted_once_when_taken() {
        let mut t = Tracker::<i64>::default();
        t.assign([tp(0)]);
        assert!(t.reserve(&tp(0), 0, 100));
        let later = match t.take(tp(0), 1, b"b", 1, 100) {
            Taken::Start(x) => x,
            other => panic!("{other:?}"),
        };
        let (c, _) = t.finish(b"b", &tp(0), 1, later.generation);
        assert_eq!(c, Some(0), "committed past a reserved record");
        let reserved = match t.take(tp(0), 0, b"a", 0, 100) {
            Taken::Start(x) => x,
            other => panic!("{other:?}"),
        };
        assert_eq!(t.in_flight(), 1);
        let (c, _) = t.finish(b"a", &tp(0), 0, reserved.generation);
        assert_eq!(c, Some(2));
        assert_eq!((t.in_flight(), t.in_flight_bytes()), (0, 0));
        assert!(!t.reserve(&tp(1), 0, 100), "reserved on a partition that is not ours");
    }

    #[test]
    fn unqueued_records_do_not_start_and_are_not_committed_past() {
        let mut t = Tracker::<i64>::default();
        t.assign([tp(0), tp(1)]);
        let a = match t.take(tp(0), 0, b"k", 0, 100) {
            Taken::Start(x) => x,
            other => panic!("{other:?}"),
        };
        assert!(matches!(t.take(tp(0), 1, b"k", 1, 100), Taken::Queued));
        assert!(matches!(t.take(tp(1), 0, b"k", 9, 100), Taken::Queued));
        assert_eq!(t.running_on(&[tp(0)]), 1);
        t.unqueue(&[tp(0)]);
        let (c, next) = t.finish(b"k", &tp(0), 0, a.generation);
        assert_eq!(c, Some(1));
        // The key's record on partition 1 still runs; it is now running there.
        assert_eq!(next.map(|n| n.job), Some(9));
        assert_eq!((t.running_on(&[tp(0)]), t.running_on(&[tp(1)])), (0, 1));
    }

    #[test]
    fn after_stop_no_queued_record_starts_and_commits_stop_before_it() {
        let mut t = Tracker::<i64>::default();
        t.assign([tp(0)]);
        let running = match t.take(tp(0), 0, b"k", 0, 100) {
            Taken::Start(x) => x,
            other => panic!("{other:?}"),
        };
        assert!(matches!(t.take(tp(0), 1, b"k", 1, 100), Taken::Queued));
        assert!(matches!(t.take(tp(0), 2, b"j", 2, 100), Taken::Start(_)));
        assert_eq!(t.running(), 2);
        t.stop();
        let (c, next) = t.finish(b"k", &tp(0), 0, running.generation);
        assert!(next.is_none(), "a queued record started after stop");
        assert_eq!(c, Some(1), "the queued record is not committed past");
        assert_eq!(t.running(), 1);
        assert_eq!(t.running_on(&[tp(0)]), 1);
        assert_eq!(t.committable(&[tp(0)]), vec![(tp(0), 1)]);
    }
}
