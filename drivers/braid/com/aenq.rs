// SPDX-License-Identifier: GPL-2.0

//! The asynchronous event notification queue (AENQ) of both functions: a ring of 64-byte events
//! (`ena_admin_aenq_entry`, `efa_admin_aenq_entry`) the device writes, with a phase bit that flips
//! on every wrap. The driver hands the device free slots through the head doorbell
//! (`ena_com_admin_init_aenq`, `efa_com_aenq_intr_handler`).

#![forbid(unsafe_code)]

use kernel::{
    device::{Bound, Device},
    dma::Coherent,
    io::{io_project, io_read, Io},
    pci,
    prelude::*,
    sync::barrier::{dma_mb, Read},
    time::Delta,
};

use super::admin::{phase, Entry, ENTRY_SIZE};
use crate::regs::{AENQ_BASE_HI, AENQ_BASE_LO, AENQ_CAPS, AENQ_HEAD_DB, REG_PAGE_SIZE};

/// Events in the ring.
const DEPTH: u16 = 16;

/// Silence after which a device that sends keep-alives counts as dead (the card's hint, and
/// ena.ko's default: 6 s; the card sends one a second), on either function.
pub(crate) const KEEP_ALIVE_TIMEOUT: Delta = Delta::from_millis(6000);

/// `enum ena_admin_aenq_group` (EFA's numbers the same groups alike and has no link change), as
/// bits for AENQ_CONFIG.
pub(crate) mod group {
    /// `ENA_ADMIN_LINK_CHANGE`.
    pub(crate) const LINK_CHANGE: u32 = 1 << 0;
    /// `ENA_ADMIN_FATAL_ERROR`, `EFA_ADMIN_FATAL_ERROR`.
    pub(crate) const FATAL_ERROR: u32 = 1 << 1;
    /// `ENA_ADMIN_KEEP_ALIVE`, `EFA_ADMIN_KEEP_ALIVE`.
    pub(crate) const KEEP_ALIVE: u32 = 1 << 4;
}

/// An event the device reported.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Event {
    /// The link went up or down.
    LinkChange {
        /// Link up.
        up: bool,
    },
    /// The device is alive; its drop counters.
    KeepAlive {
        /// Received packets the device dropped.
        rx_drops: u64,
        /// Packets to send the device dropped.
        tx_drops: u64,
    },
    /// The device failed.
    FatalError,
    /// A group the driver does not handle.
    Other(u16),
}

impl Event {
    /// Parses an entry: group in bits 15:0 of word 0, the body from word 4.
    fn parse(e: &Entry) -> Self {
        let wide = |lo: u32, hi: u32| u64::from(lo) | (u64::from(hi) << 32);
        match (e[0] & 0xffff) as u16 {
            0 => Event::LinkChange { up: e[4] & 1 != 0 },
            1 => Event::FatalError,
            4 => Event::KeepAlive {
                rx_drops: wide(e[4], e[5]),
                tx_drops: wide(e[6], e[7]),
            },
            other => Event::Other(other),
        }
    }
}

/// What the driver writes to the head doorbell (register 0x40), which the two interfaces read
/// differently.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum HeadDoorbell {
    /// ENA's `AENQ_HEAD_DB`: how far the device may write, i.e. the events taken plus the depth.
    Limit,
    /// EFA's `AENQ_CONS_DB`: the events taken (the consumer counter).
    Consumed,
}

/// The event ring and the driver's head in it.
pub(crate) struct Aenq {
    ring: Coherent<[Entry]>,
    head: u16,
    doorbell: HeadDoorbell,
}

impl Aenq {
    /// Allocates the ring, for a device that reads its head doorbell as `doorbell` says.
    pub(crate) fn new(dev: &Device<Bound>, doorbell: HeadDoorbell) -> Result<Self> {
        Ok(Self {
            ring: Coherent::zeroed_slice(dev, usize::from(DEPTH), GFP_KERNEL)?,
            head: 0,
            doorbell,
        })
    }

    /// Hands the device every slot up to the head.
    fn ring_doorbell(&self, regs: &pci::Bar<'_, REG_PAGE_SIZE>) {
        let value = match self.doorbell {
            HeadDoorbell::Limit => self.head.wrapping_add(DEPTH),
            HeadDoorbell::Consumed => self.head,
        };
        regs.write_reg(AENQ_HEAD_DB::zeroed().with_head(u32::from(value)));
    }

    /// Tells the device where the ring is and hands it every slot. The ring is cleared first:
    /// after a reset the device starts again at slot 0 with phase 1, which the events of an
    /// earlier first pass would also show.
    pub(crate) fn program(&mut self, regs: &pci::Bar<'_, REG_PAGE_SIZE>) {
        super::admin::clear(&self.ring);
        let base = self.ring.dma_address();
        regs.write_reg(AENQ_BASE_LO::zeroed().with_value(base as u32));
        regs.write_reg(AENQ_BASE_HI::zeroed().with_value((base >> 32) as u32));
        regs.write_reg(
            AENQ_CAPS::zeroed()
                .with_depth(DEPTH)
                .with_entry_size(ENTRY_SIZE),
        );
        self.head = 0;
        self.ring_doorbell(regs);
    }

    /// Takes every event the device has written since the last call, in order, and hands their
    /// slots back. Returns how many there were.
    pub(crate) fn poll(
        &mut self,
        regs: &pci::Bar<'_, REG_PAGE_SIZE>,
        mut handle: impl FnMut(Event),
    ) -> usize {
        let mut taken = 0;
        loop {
            let slot = usize::from(self.head % DEPTH);
            // Phase: bit 0 of `flags` (byte 4, word 1).
            let want_phase = phase(self.head, DEPTH);
            let word1: u32 = io_read!(self.ring, [panic: slot][build: 1]);
            if (word1 & 1 != 0) != want_phase {
                break;
            }
            // The phase is written last: read the body after it.
            dma_mb(Read);
            let entry: Entry = io_project!(self.ring, [panic: slot]).copy_read();
            self.head = self.head.wrapping_add(1);
            taken += 1;
            handle(Event::parse(&entry));
        }
        if taken > 0 {
            self.ring_doorbell(regs);
        }
        taken
    }
}
