//! Receive side of a context: which PSNs arrived (for SACKs), which
//! messages were delivered (duplicate suppression) and partial messages
//! being reassembled.

use std::collections::{BTreeMap, BTreeSet};

use crate::wire::{Data, MAX_SACK_RANGES, SackRange};

/// A set of u64 as disjoint, non-adjacent inclusive ranges.
#[derive(Debug, Default, Clone)]
pub(crate) struct RangeSet(BTreeMap<u64, u64>);

impl RangeSet {
    /// Adds `v`; returns false if it was already present.
    pub fn insert(&mut self, v: u64) -> bool {
        let below = self.0.range(..=v).next_back().map(|(&s, &e)| (s, e));
        if let Some((_, e)) = below
            && e >= v
        {
            return false;
        }
        let mut start = v;
        let mut end = v;
        if let Some((s, e)) = below
            && e.checked_add(1) == Some(v)
        {
            start = s;
        }
        if let Some(next) = v.checked_add(1)
            && let Some(e) = self.0.remove(&next)
        {
            end = e;
        }
        self.0.insert(start, end);
        true
    }

    /// Forgets every value below `base`.
    pub fn prune_below(&mut self, base: u64) {
        let keep = self.0.split_off(&base);
        let straddling = self.0.iter().next_back().map(|(_, &e)| e);
        self.0 = keep;
        if let Some(e) = straddling
            && e >= base
        {
            self.0.insert(base, e);
        }
    }

    /// The highest `MAX_SACK_RANGES` ranges, ascending.
    pub fn sack(&self) -> Vec<SackRange> {
        let mut out: Vec<SackRange> = self
            .0
            .iter()
            .rev()
            .take(MAX_SACK_RANGES)
            .map(|(&first, &last)| SackRange { first, last })
            .collect();
        out.reverse();
        out
    }
}

/// A message being reassembled.
#[derive(Debug)]
struct Partial {
    frag_count: u16,
    header: Option<Vec<u8>>,
    frags: BTreeMap<u16, Vec<u8>>,
    bytes: usize,
}

/// What became of a data packet.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum RxOutcome {
    /// Stored (or a duplicate of something stored/delivered): ack it.
    Accepted {
        /// The fragment or message was already known.
        duplicate: bool,
        /// A message completed: (msg id, service header, payload).
        complete: Option<(u64, Vec<u8>, Vec<u8>)>,
    },
    /// Too many partial messages: refuse (nack), do not ack.
    NoResources,
    /// Disagrees with earlier fragments of its message, or exceeds the
    /// message size limit: drop without acking.
    Inconsistent,
}

/// Per-peer receive state for one peer epoch.
#[derive(Debug, Default)]
pub(crate) struct RxState {
    psn_base: u64,
    psns: RangeSet,
    msg_base: u64,
    delivered: BTreeSet<u64>,
    partial: BTreeMap<u64, Partial>,
}

impl RxState {
    /// Takes in one data packet.
    pub fn on_data(&mut self, d: Data, max_partial: usize, max_message: usize) -> RxOutcome {
        if d.psn_base > self.psn_base {
            self.psn_base = d.psn_base;
            self.psns.prune_below(d.psn_base);
        }
        if d.msg_base > self.msg_base {
            self.msg_base = d.msg_base;
            self.delivered = self.delivered.split_off(&d.msg_base);
            self.partial = self.partial.split_off(&d.msg_base);
        }
        if d.msg_id < self.msg_base || self.delivered.contains(&d.msg_id) {
            self.record(d.psn);
            return RxOutcome::Accepted {
                duplicate: true,
                complete: None,
            };
        }
        if !self.partial.contains_key(&d.msg_id) && self.partial.len() >= max_partial {
            return RxOutcome::NoResources;
        }
        let partial = self.partial.entry(d.msg_id).or_insert_with(|| Partial {
            frag_count: d.frag_count,
            header: None,
            frags: BTreeMap::new(),
            bytes: 0,
        });
        if partial.frag_count != d.frag_count {
            return RxOutcome::Inconsistent;
        }
        if partial.frags.contains_key(&d.frag_index) {
            self.record(d.psn);
            return RxOutcome::Accepted {
                duplicate: true,
                complete: None,
            };
        }
        let bytes = partial.bytes + d.service_header.len() + d.payload.len();
        if bytes > max_message {
            return RxOutcome::Inconsistent;
        }
        partial.bytes = bytes;
        if d.frag_index == 0 {
            partial.header = Some(d.service_header);
        }
        partial.frags.insert(d.frag_index, d.payload);
        let complete = partial.frags.len() == usize::from(partial.frag_count);
        self.record(d.psn);
        let complete = if complete {
            let partial = self.partial.remove(&d.msg_id).expect("entry exists");
            self.delivered.insert(d.msg_id);
            let payload = partial.frags.into_values().flatten().collect();
            Some((d.msg_id, partial.header.unwrap_or_default(), payload))
        } else {
            None
        };
        RxOutcome::Accepted {
            duplicate: false,
            complete,
        }
    }

    fn record(&mut self, psn: u64) {
        if psn >= self.psn_base {
            self.psns.insert(psn);
        }
    }

    /// SACK ranges to send (empty if nothing to ack).
    pub fn sack(&self) -> Vec<SackRange> {
        self.psns.sack()
    }

    /// Whether messages are half-reassembled (keeps the context alive).
    pub fn has_partial(&self) -> bool {
        !self.partial.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ranges(set: &RangeSet) -> Vec<(u64, u64)> {
        set.sack().iter().map(|r| (r.first, r.last)).collect()
    }

    #[test]
    fn range_set_merges_and_prunes() {
        let mut s = RangeSet::default();
        for v in [5, 7, 6, 1, 2, 10, u64::MAX] {
            assert!(s.insert(v));
        }
        assert!(!s.insert(6));
        assert_eq!(ranges(&s), [(1, 2), (5, 7), (10, 10), (u64::MAX, u64::MAX)]);
        s.prune_below(6);
        assert_eq!(ranges(&s), [(6, 7), (10, 10), (u64::MAX, u64::MAX)]);
        s.prune_below(11);
        assert_eq!(ranges(&s), [(u64::MAX, u64::MAX)]);
        let mut many = RangeSet::default();
        for v in 0..100 {
            many.insert(v * 2);
        }
        let sack = many.sack();
        assert_eq!(sack.len(), MAX_SACK_RANGES);
        assert_eq!(sack.last().map(|r| r.first), Some(198));
    }

    fn frag(psn: u64, msg: u64, index: u16, count: u16, payload: &[u8]) -> Data {
        Data {
            psn,
            psn_base: 0,
            msg_id: msg,
            msg_base: 0,
            frag_index: index,
            frag_count: count,
            service_header: if index == 0 { vec![9] } else { vec![] },
            payload: payload.to_vec(),
        }
    }

    #[test]
    fn reassembles_out_of_order_once() {
        let mut rx = RxState::default();
        let r = rx.on_data(frag(3, 1, 2, 3, b"c"), 8, 100);
        assert_eq!(
            r,
            RxOutcome::Accepted {
                duplicate: false,
                complete: None
            }
        );
        rx.on_data(frag(4, 1, 0, 3, b"a"), 8, 100);
        let dup = rx.on_data(frag(5, 1, 0, 3, b"a"), 8, 100);
        assert_eq!(
            dup,
            RxOutcome::Accepted {
                duplicate: true,
                complete: None
            }
        );
        let done = rx.on_data(frag(6, 1, 1, 3, b"b"), 8, 100);
        assert_eq!(
            done,
            RxOutcome::Accepted {
                duplicate: false,
                complete: Some((1, vec![9], b"abc".to_vec()))
            }
        );
        // A late copy of a delivered message is a duplicate.
        let late = rx.on_data(frag(7, 1, 1, 3, b"b"), 8, 100);
        assert!(matches!(
            late,
            RxOutcome::Accepted {
                duplicate: true,
                complete: None
            }
        ));
        assert_eq!(
            rx.on_data(frag(8, 2, 0, 4, b"x"), 8, 100),
            RxOutcome::Accepted {
                duplicate: false,
                complete: None
            }
        );
        assert_eq!(
            rx.on_data(frag(9, 2, 1, 5, b"x"), 8, 100),
            RxOutcome::Inconsistent
        );
        assert_eq!(
            rx.on_data(frag(9, 3, 1, 5, b"x"), 1, 100),
            RxOutcome::NoResources
        );
        assert_eq!(
            rx.on_data(frag(10, 2, 1, 4, &[0; 100]), 8, 100),
            RxOutcome::Inconsistent
        );
        assert_eq!(ranges(&rx.psns), [(3, 8)]);
    }

    #[test]
    fn bases_forget_old_state() {
        let mut rx = RxState::default();
        rx.on_data(frag(1, 1, 0, 1, b"a"), 8, 100);
        rx.on_data(frag(2, 2, 0, 2, b"a"), 8, 100);
        let mut d = frag(9, 5, 0, 1, b"z");
        d.psn_base = 5;
        d.msg_base = 3;
        rx.on_data(d, 8, 100);
        assert!(rx.delivered.iter().all(|&m| m >= 3));
        assert!(!rx.has_partial());
        assert_eq!(ranges(&rx.psns), [(9, 9)]);
        // Below the message base: a duplicate, acked but not delivered.
        let old = rx.on_data(frag(10, 1, 0, 1, b"a"), 8, 100);
        assert_eq!(
            old,
            RxOutcome::Accepted {
                duplicate: true,
                complete: None
            }
        );
    }
}
