// SPDX-License-Identifier: GPL-2.0

//! A transmit queue: its `ena_eth_io_tx_desc` descriptors, in a ring in host memory or pushed to
//! the device's LLQ memory with the packet's headers, its completion ring, and the packets the
//! device is reading (`ena_eth_com.c` is the specification).

#![forbid(unsafe_code)]

use kernel::{
    device::{Bound, Device},
    io::{io_project, io_read, Io},
    prelude::*,
    sync::{
        barrier::{dma_mb, mb, Read, Write},
        Arc,
    },
};

use super::io::{tx_cdesc, tx_desc, tx_meta, Cq, Placement, Sq};
use super::llq::{LlqLayout, LlqQueue};
use super::ring::{host_descriptors, CompletionRing, HostDescriptors, Slots};
use super::Regs;
use crate::kapi::{
    pci::WcBar,
    skb::{SkBuff, TxSkb, MAX_TX_BUFFERS},
};

/// Words of a completion (`ena_eth_io_tx_cdesc`).
const CQ_WORDS: usize = 2;
/// Most descriptors of a packet: its buffers and a meta descriptor.
const MAX_DESCRIPTORS: usize = MAX_TX_BUFFERS + 1;

/// A packet the device has been given, by request id.
struct InFlight<'bound> {
    skb: TxSkb<'bound>,
    /// Slots of the submission queue it holds: descriptors, or LLQ entries.
    slots: u16,
}

/// What the device is to do for a packet beyond sending it.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct TxOffload {
    /// Bits of the first descriptor's `meta_ctrl`: protocol indexes, checksum and TSO enables.
    pub(crate) meta_ctrl: u32,
    /// The TSO segment size.
    pub(crate) mss: Option<u16>,
}

/// Most packets one call of [`TxRing::clean`] takes off the ring.
pub(crate) const CLEAN_BATCH: usize = 64;

/// What one round of completions took off the ring.
pub(crate) struct Cleaned {
    /// Packets completed.
    pub(crate) packets: u32,
    /// Their bytes.
    pub(crate) bytes: u32,
    /// Completions with a non-zero status (the device dropped the packet).
    pub(crate) errors: u32,
    /// Completions naming no packet in flight: the device misbehaves.
    pub(crate) bogus: u32,
    /// The CQ head doorbell was written.
    pub(crate) head_written: bool,
    /// The batch was full: more completions may wait.
    pub(crate) more: bool,
    /// The completed packets, unmapped, to free ([`Cleaned::free`]) outside the ring's lock.
    done: [Option<SkBuff>; CLEAN_BATCH],
}

impl Default for Cleaned {
    fn default() -> Self {
        Self {
            packets: 0,
            bytes: 0,
            errors: 0,
            bogus: 0,
            head_written: false,
            more: false,
            done: [const { None }; CLEAN_BATCH],
        }
    }
}

impl Cleaned {
    /// Frees the completed packets as transmitted (`budget` as for NAPI: 0 in netpoll).
    pub(crate) fn free(&mut self, budget: u32) {
        for skb in self.done.iter_mut().filter_map(Option::take) {
            skb.consume(budget);
        }
    }
}

/// Where a transmit queue's descriptors go.
enum Descriptors<'bound> {
    /// A ring in host memory that the device reads.
    Host(HostDescriptors),
    /// Entries in the device's LLQ memory, packet headers inline.
    Device(LlqQueue<'bound>),
}

/// The rings of a transmit queue and the driver's positions in them.
pub(crate) struct TxRing<'bound> {
    descriptors: Descriptors<'bound>,
    completions: CompletionRing<CQ_WORDS>,
    /// Free-running tail of slots (descriptors or LLQ entries) handed to the device.
    tail: u16,
    /// Free-running head of completions consumed.
    cq_head: u16,
    /// The MSS the device stored for the queue (META_STORE), 0 before any.
    stored_mss: u16,
    /// The completion head last written to the device.
    cq_head_reported: u16,
    /// Slots not in flight.
    free: u16,
    /// Most slots one packet takes.
    max_slots: u16,
    /// The tail last written to the doorbell.
    tail_rung: u16,
    in_flight: Slots<InFlight<'bound>>,
    sq: Option<Sq>,
    pub(crate) cq: Option<Cq>,
}

impl<'bound> TxRing<'bound> {
    /// Allocates the rings for `depth` packets (a power of two): its descriptors in host memory,
    /// or in the device's LLQ memory given `llq`.
    pub(crate) fn new(
        dev: &Device<Bound>,
        depth: u16,
        llq: Option<(&Arc<WcBar<'bound>>, LlqLayout)>,
    ) -> Result<Self> {
        let completions = CompletionRing::new(dev, depth)?;
        let (descriptors, max_slots) = match llq {
            Some((bar, layout)) => (
                Descriptors::Device(LlqQueue::new(bar.clone(), layout)),
                layout.entries(MAX_DESCRIPTORS),
            ),
            None => (
                Descriptors::Host(host_descriptors(dev, completions.index)?),
                MAX_DESCRIPTORS,
            ),
        };
        Ok(Self {
            descriptors,
            completions,
            tail: 0,
            cq_head: 0,
            stored_mss: 0,
            cq_head_reported: 0,
            free: depth,
            max_slots: u16::try_from(max_slots)?,
            tail_rung: 0,
            in_flight: Slots::new(depth)?,
            sq: None,
            cq: None,
        })
    }

    /// The completion ring, for the device to be told where it is.
    pub(crate) fn completions(&self) -> &CompletionRing<CQ_WORDS> {
        &self.completions
    }

    /// Where the submission queue's descriptors are, for the device to be told.
    pub(crate) fn placement(&self) -> Placement<'_> {
        match &self.descriptors {
            Descriptors::Host(ring) => Placement::Host(ring.dma_address()),
            Descriptors::Device(llq) => Placement::Device(llq.layout()),
        }
    }

    /// Whether the descriptors go to the device's LLQ memory.
    pub(crate) fn pushes(&self) -> bool {
        matches!(self.descriptors, Descriptors::Device(_))
    }

    /// Starts using the device's queues `sq` and `cq`.
    pub(crate) fn attach(&mut self, sq: Sq, cq: Cq) {
        if let Descriptors::Device(llq) = &mut self.descriptors {
            llq.offset = sq.llq_offset;
        }
        self.sq = Some(sq);
        self.cq = Some(cq);
    }

    /// Whether a packet of any shape fits.
    pub(crate) fn has_room(&self) -> bool {
        self.free >= self.max_slots && self.in_flight.free() > 0
    }

    /// Writes `skb`'s descriptors (the device sees them at the next [`Self::ring_doorbell`]). The
    /// caller checked [`Self::has_room`]; without room, or without a queue, the packet comes
    /// back.
    pub(crate) fn push(
        &mut self,
        skb: TxSkb<'bound>,
        offload: TxOffload,
    ) -> Result<(), TxSkb<'bound>> {
        if self.sq.is_none() || !self.has_room() {
            return Err(skb);
        }
        let Some(id) = self.in_flight.next_id() else {
            return Err(skb);
        };
        let id32 = u32::from(id);
        let mut descs = [[0u32; 4]; MAX_DESCRIPTORS];
        let mut n = 0;
        // A new MSS goes in a meta descriptor ahead of the packet, which the device stores for
        // the queue's later packets (as ena.ko does).
        let meta = offload.mss.filter(|&mss| mss != self.stored_mss);
        if let Some(mss) = meta {
            let mss = u32::from(mss);
            descs[0] = [
                tx_meta::META_DESC
                    | tx_meta::EXT_VALID
                    | tx_meta::ETH_META_TYPE
                    | tx_meta::META_STORE
                    | tx_desc::FIRST
                    | tx_desc::COMP_REQ
                    | (((mss >> 10) & 0xf) << tx_meta::MSS_HI_SHIFT),
                0,
                (mss & 0x3ff) << tx_meta::MSS_LO_SHIFT,
                0,
            ];
            n = 1;
        }
        // With LLQ the packet's first bytes travel inline, and its first buffer starts after
        // them; a packet wholly inline still has one (empty) buffer descriptor.
        let header = match &self.descriptors {
            Descriptors::Device(llq) => skb.head(llq.layout().max_header()),
            Descriptors::Host(_) => &[],
        };
        let skip = header.len() as u32;
        let first = n;
        for (i, (addr, len)) in skb.buffers().enumerate() {
            let (addr, len) = match i {
                0 if len <= skip => continue,
                0 => (addr + u64::from(skip), len - skip),
                _ => (addr, len),
            };
            descs[n] = [
                (len & 0xffff) | tx_desc::COMP_REQ,
                0,
                addr as u32,
                (addr >> 32) as u32 & 0xffff,
            ];
            n += 1;
        }
        if n == first {
            descs[n] = [tx_desc::COMP_REQ, 0, 0, 0];
            n += 1;
        }
        let d = &mut descs[first];
        if first == 0 {
            d[0] |= tx_desc::FIRST;
        }
        d[0] |= ((id32 >> 10) & 0x3f) << tx_desc::REQ_ID_HI_SHIFT;
        d[1] = offload.meta_ctrl | ((id32 & 0x3ff) << tx_desc::REQ_ID_LO_SHIFT);
        d[3] |= skip << tx_desc::HEADER_LENGTH_SHIFT;
        descs[n - 1][0] |= tx_desc::LAST;

        let index = self.completions.index;
        let tail = match &self.descriptors {
            Descriptors::Host(ring) => {
                let mut tail = self.tail;
                for d in &descs[..n] {
                    let mut d = *d;
                    if index.phase(tail) {
                        d[0] |= tx_desc::PHASE;
                    }
                    io_project!(ring, [panic: index.slot(tail)]).copy_write(d);
                    tail = tail.wrapping_add(1);
                }
                Ok(tail)
            }
            Descriptors::Device(llq) => llq.write_packet(index, self.tail, header, &descs[..n]),
        };
        let Ok(tail) = tail else {
            return Err(skb);
        };
        if meta.is_some() {
            self.stored_mss = offload.mss.unwrap_or(0);
        }
        // At most `max_slots`, which `has_room` found free.
        let slots = tail.wrapping_sub(self.tail);
        self.tail = tail;
        self.free -= slots;
        self.in_flight.hold(InFlight { skb, slots });
        Ok(())
    }

    /// Tells the device about the descriptors written since the last call; returns whether
    /// there were any (and the doorbell was written).
    pub(crate) fn ring_doorbell(&mut self, regs: &Regs<'_>) -> bool {
        if let (Some(sq), true) = (self.sq, self.tail != self.tail_rung) {
            self.tail_rung = self.tail;
            // Host descriptors: the MMIO write orders them before the doorbell (writel's
            // barrier). LLQ entries: write-combined stores need a write barrier to reach the
            // device before the doorbell does.
            if self.pushes() {
                mb(Write);
            }
            return regs.try_write32(u32::from(self.tail), sq.doorbell).is_ok();
        }
        false
    }

    /// Takes up to [`CLEAN_BATCH`] of the device's completions and unmaps their packets, which
    /// the caller frees after releasing the ring's lock ([`Cleaned::free`]).
    pub(crate) fn clean(&mut self, regs: &Regs<'_>) -> Cleaned {
        let mut done = Cleaned::default();
        for n in 0..=CLEAN_BATCH {
            if n == CLEAN_BATCH {
                done.more = true;
                break;
            }
            let slot = self.completions.index.slot(self.cq_head);
            let word0: u32 = io_read!(self.completions.entries, [panic: slot][build: 0]);
            if (word0 & tx_cdesc::PHASE != 0) != self.completions.index.phase(self.cq_head) {
                break;
            }
            // The phase is written last: nothing else of the entry is needed, but the packet's
            // buffers must not be released before the device's completion is seen.
            dma_mb(Read);
            self.cq_head = self.cq_head.wrapping_add(1);
            let id = (word0 & 0xffff) as u16;
            let Some(packet) = self.in_flight.release(id) else {
                done.bogus += 1;
                continue;
            };
            if (word0 >> tx_cdesc::STATUS_SHIFT) & 0xff != 0 {
                done.errors += 1;
            }
            done.packets += 1;
            done.bytes += packet.skb.len();
            self.free += packet.slots;
            done.done[n] = Some(packet.skb.complete());
        }
        // Like ena.ko, tell the device about consumed completions only every quarter ring.
        if let Some(Cq {
            head_doorbell: Some(db),
            ..
        }) = self.cq
        {
            if self.cq_head.wrapping_sub(self.cq_head_reported)
                >= self.completions.index.depth() / 4
            {
                self.cq_head_reported = self.cq_head;
                let _ = regs.try_write32(u32::from(self.cq_head), db);
                done.head_written = true;
            }
        }
        done
    }
}
