// SPDX-License-Identifier: GPL-2.0

//! A transmit queue: a submission ring of `ena_eth_io_tx_desc` in host memory, its completion
//! ring, and the packets the device is reading (`ena_eth_com.c` is the specification).

#![forbid(unsafe_code)]

use kernel::{
    device::{Bound, Device},
    io::{io_project, io_read, Io},
    prelude::*,
    sync::barrier::{dma_mb, Read},
};

use super::io::{tx_cdesc, tx_desc, tx_meta, Cq, Sq};
use super::ring::{Rings, Slots};

/// Words of a completion (`ena_eth_io_tx_cdesc`).
const CQ_WORDS: usize = 2;
use super::Regs;
use crate::kapi::skb::{TxSkb, MAX_TX_BUFFERS};

/// A packet the device has been given, by request id.
struct InFlight<'bound> {
    skb: TxSkb<'bound>,
    descriptors: u16,
}

/// What the device is to do for a packet beyond sending it.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct TxOffload {
    /// Bits of the first descriptor's `meta_ctrl`: protocol indexes, checksum and TSO enables.
    pub(crate) meta_ctrl: u32,
    /// The TSO segment size.
    pub(crate) mss: Option<u16>,
}

/// What one round of completions freed.
#[derive(Clone, Copy, Debug, Default)]
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
}

/// The rings of a transmit queue and the driver's positions in them.
pub(crate) struct TxRing<'bound> {
    rings: Rings<CQ_WORDS>,
    /// Free-running tail of descriptors handed to the device.
    tail: u16,
    /// Free-running head of completions consumed.
    cq_head: u16,
    /// The MSS the device stored for the queue (META_STORE), 0 before any.
    stored_mss: u16,
    /// The completion head last written to the device.
    cq_head_reported: u16,
    /// Descriptors not in flight.
    free: u16,
    /// The tail last written to the doorbell.
    tail_rung: u16,
    in_flight: Slots<InFlight<'bound>>,
    pub(crate) sq: Option<Sq>,
    pub(crate) cq: Option<Cq>,
}

impl<'bound> TxRing<'bound> {
    /// Allocates the rings for `depth` descriptors (a power of two).
    pub(crate) fn new(dev: &Device<Bound>, depth: u16) -> Result<Self> {
        Ok(Self {
            rings: Rings::new(dev, depth)?,
            tail: 0,
            cq_head: 0,
            stored_mss: 0,
            cq_head_reported: 0,
            free: depth,
            tail_rung: 0,
            in_flight: Slots::new(depth)?,
            sq: None,
            cq: None,
        })
    }

    /// The rings, for the device to be told where they are.
    pub(crate) fn rings(&self) -> &Rings<CQ_WORDS> {
        &self.rings
    }

    /// Whether a packet of any shape fits.
    pub(crate) fn has_room(&self) -> bool {
        // The buffers and a meta descriptor.
        usize::from(self.free) > MAX_TX_BUFFERS && self.in_flight.free() > 0
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
        let count = skb.buffers().count();
        let mut tail = self.tail;
        // A new MSS goes in a meta descriptor ahead of the packet, which the device stores for
        // the queue's later packets (as ena.ko does).
        let meta = offload.mss.filter(|&mss| mss != self.stored_mss);
        if let Some(mss) = meta {
            let mss = u32::from(mss);
            let mut len_ctrl = tx_meta::META_DESC
                | tx_meta::EXT_VALID
                | tx_meta::ETH_META_TYPE
                | tx_meta::META_STORE
                | tx_desc::FIRST
                | tx_desc::COMP_REQ
                | (((mss >> 10) & 0xf) << tx_meta::MSS_HI_SHIFT);
            if self.rings.index.phase(tail) {
                len_ctrl |= tx_desc::PHASE;
            }
            let desc = [len_ctrl, 0, (mss & 0x3ff) << tx_meta::MSS_LO_SHIFT, 0];
            io_project!(self.rings.sq, [panic: self.rings.index.slot(tail)]).copy_write(desc);
            tail = tail.wrapping_add(1);
            self.stored_mss = offload.mss.unwrap_or(0);
        }
        for (i, (addr, len)) in skb.buffers().enumerate() {
            let mut len_ctrl = (len & 0xffff) | tx_desc::COMP_REQ;
            if self.rings.index.phase(tail) {
                len_ctrl |= tx_desc::PHASE;
            }
            let mut meta_ctrl = 0;
            if i == 0 {
                if meta.is_none() {
                    len_ctrl |= tx_desc::FIRST;
                }
                len_ctrl |= ((id32 >> 10) & 0x3f) << tx_desc::REQ_ID_HI_SHIFT;
                meta_ctrl = offload.meta_ctrl | ((id32 & 0x3ff) << tx_desc::REQ_ID_LO_SHIFT);
            }
            if i + 1 == count {
                len_ctrl |= tx_desc::LAST;
            }
            let desc = [
                len_ctrl,
                meta_ctrl,
                addr as u32,
                (addr >> 32) as u32 & 0xffff,
            ];
            let slot = self.rings.index.slot(tail);
            io_project!(self.rings.sq, [panic: slot]).copy_write(desc);
            tail = tail.wrapping_add(1);
        }
        // At most MAX_TX_BUFFERS (18) descriptors and a meta descriptor.
        let descriptors = tail.wrapping_sub(self.tail);
        self.tail = tail;
        self.free -= descriptors;
        self.in_flight.hold(InFlight { skb, descriptors });
        Ok(())
    }

    /// Tells the device about the descriptors written since the last call.
    pub(crate) fn ring_doorbell(&mut self, regs: &Regs<'_>) {
        if let (Some(sq), true) = (self.sq, self.tail != self.tail_rung) {
            self.tail_rung = self.tail;
            // The MMIO write orders the descriptors before the doorbell (writel's barrier).
            let _ = regs.try_write32(u32::from(self.tail), sq.doorbell);
        }
    }

    /// Takes the device's completions and frees their packets (`budget` as for NAPI).
    pub(crate) fn clean(&mut self, regs: &Regs<'_>, budget: u32) -> Cleaned {
        let mut done = Cleaned::default();
        loop {
            let slot = self.rings.index.slot(self.cq_head);
            let word0: u32 = io_read!(self.rings.cq, [panic: slot][build: 0]);
            if (word0 & tx_cdesc::PHASE != 0) != self.rings.index.phase(self.cq_head) {
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
            self.free += packet.descriptors;
            packet.skb.complete(budget);
        }
        // Like ena.ko, tell the device about consumed completions only every quarter ring.
        if let Some(Cq {
            head_doorbell: Some(db),
            ..
        }) = self.cq
        {
            if self.cq_head.wrapping_sub(self.cq_head_reported) >= self.rings.index.depth() / 4 {
                self.cq_head_reported = self.cq_head;
                let _ = regs.try_write32(u32::from(self.cq_head), db);
                done.head_written = true;
            }
        }
        done
    }
}
