//! The asynchronous event notification queue (AENQ): a ring of 64-byte
//! events the card writes into guest memory (`ena_admin_aenq_entry`,
//! `efa_admin_aenq_entry`: the same common descriptor and group numbers).
//!
//! The driver programs base and caps, enables event groups with
//! SET_FEATURE(AENQ_CONFIG), and hands slots to the card through the AENQ
//! doorbell: ENA writes its free-running head (first the whole depth), EFA
//! its consumer counter (first 0), which [`Aenq::consumed`] turns into the
//! same head. The card writes at its tail only while the tail is behind
//! that head, so it never overwrites an event the driver has not consumed.

use std::time::{SystemTime, UNIX_EPOCH};

use thiserror::Error;

use super::admin::{Entry, RingConfig, phase_of, publish};
use crate::dma::{DmaError, GuestDma};

/// `enum ena_admin_aenq_group` (`efa_admin_aenq_group` has the same
/// numbers, without LINK_CHANGE).
pub mod group {
    /// `ENA_ADMIN_LINK_CHANGE` (ENA only).
    pub const LINK_CHANGE: u16 = 0;
    /// `ENA_ADMIN_FATAL_ERROR`.
    pub const FATAL_ERROR: u16 = 1;
    /// `ENA_ADMIN_WARNING`.
    pub const WARNING: u16 = 2;
    /// `ENA_ADMIN_NOTIFICATION`.
    pub const NOTIFICATION: u16 = 3;
    /// `ENA_ADMIN_KEEP_ALIVE`.
    pub const KEEP_ALIVE: u16 = 4;
}

/// `struct ena_admin_aenq_common_desc` and the event bodies.
pub mod layout {
    /// `group` (u16).
    pub const GROUP: usize = 0;
    /// `syndrome` (u16).
    pub const SYNDROME: usize = 2;
    /// `flags` (u8; bit 0 is the phase).
    pub const FLAGS: usize = 4;
    /// `timestamp_low` (u32).
    pub const TIMESTAMP_LOW: usize = 8;
    /// `timestamp_high` (u32).
    pub const TIMESTAMP_HIGH: usize = 12;
    /// `ena_admin_aenq_link_change_desc.flags` (u32; bit 0 = link up).
    pub const LINK_CHANGE_FLAGS: usize = 16;
    /// `ENA_ADMIN_AENQ_LINK_CHANGE_DESC_LINK_STATUS_MASK`.
    pub const LINK_STATUS_UP: u32 = 1 << 0;
    /// `ena_admin_aenq_keep_alive_desc.rx_drops_low` (then `_high`).
    pub const KEEP_ALIVE_RX_DROPS: usize = 16;
    /// `ena_admin_aenq_keep_alive_desc.tx_drops_low` (then `_high`).
    pub const KEEP_ALIVE_TX_DROPS: usize = 24;
    /// `ENA_ADMIN_AENQ_COMMON_DESC_PHASE_MASK`.
    pub const FLAG_PHASE: u8 = 1 << 0;
}

/// An event the card reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The link went up or down.
    LinkChange {
        /// Link up.
        up: bool,
    },
    /// The device is alive; carries its cumulative drop counters (ENA's
    /// body; EFA's driver reads none).
    KeepAlive {
        /// Received packets dropped since reset.
        rx_drops: u64,
        /// Transmitted packets dropped since reset.
        tx_drops: u64,
    },
    /// The device failed (`DEV_STS.FATAL_ERROR` is set); only a reset
    /// brings it back. The event has no body and syndrome 0.
    FatalError,
}

impl Event {
    /// The event's group.
    pub fn group(&self) -> u16 {
        match self {
            Event::LinkChange { .. } => group::LINK_CHANGE,
            Event::KeepAlive { .. } => group::KEEP_ALIVE,
            Event::FatalError => group::FATAL_ERROR,
        }
    }

    fn encode(&self, timestamp: u64) -> Entry {
        let mut entry = Entry::default();
        entry.set_u16(layout::GROUP, self.group());
        entry.set_u16(layout::SYNDROME, 0);
        entry.set_u32(layout::TIMESTAMP_LOW, timestamp as u32);
        entry.set_u32(layout::TIMESTAMP_HIGH, (timestamp >> 32) as u32);
        match *self {
            Event::LinkChange { up } => {
                let flags = if up { layout::LINK_STATUS_UP } else { 0 };
                entry.set_u32(layout::LINK_CHANGE_FLAGS, flags);
            }
            Event::KeepAlive { rx_drops, tx_drops } => {
                put_u64(&mut entry, layout::KEEP_ALIVE_RX_DROPS, rx_drops);
                put_u64(&mut entry, layout::KEEP_ALIVE_TX_DROPS, tx_drops);
            }
            Event::FatalError => {}
        }
        entry
    }
}

fn put_u64(entry: &mut Entry, off: usize, value: u64) {
    entry.set_u32(off, value as u32);
    entry.set_u32(off + 4, (value >> 32) as u32);
}

/// Why an event was not posted.
#[derive(Debug, Error)]
pub enum PostError {
    /// The AENQ registers do not describe a usable ring.
    #[error("the AENQ is not configured")]
    NotConfigured,
    /// The driver has not enabled the event's group.
    #[error("event group {0} is not enabled")]
    GroupDisabled(u16),
    /// Every slot holds an event the driver has not consumed.
    #[error("the AENQ is full (tail {tail}, head doorbell {head})")]
    Full {
        /// Device tail.
        tail: u16,
        /// Driver head.
        head: u16,
    },
    /// Writing the event failed.
    #[error("cannot write AENQ entry {index}: {source}")]
    Dma {
        /// Free-running index.
        index: u16,
        /// The DMA error.
        #[source]
        source: DmaError,
    },
}

/// The device side of the AENQ.
#[derive(Debug, Default)]
pub struct Aenq {
    /// The ring.
    pub ring: RingConfig,
    /// Last value written to `AENQ_HEAD_DB`: slots up to here are free.
    pub head_doorbell: u32,
    /// Next slot the device fills (free-running).
    pub tail: u16,
    /// Groups the driver enabled (bit per group).
    pub enabled_groups: u32,
}

impl Aenq {
    /// Restarts the ring (after `AENQ_CAPS` is written): no slot is free
    /// until the driver writes the head doorbell.
    pub fn restart(&mut self) {
        self.tail = 0;
        self.head_doorbell = 0;
    }

    /// EFA's consumer doorbell: the driver has consumed `count` events
    /// (free-running), so every slot up to a depth past it is free.
    pub fn consumed(&mut self, count: u32) {
        let depth = self.ring.depth().map_or(0, u32::from);
        self.head_doorbell = count.wrapping_add(depth);
    }

    /// Whether the keep-alive timer should run: the ring is armed and the
    /// driver enabled the keep-alive group.
    pub fn wants_keep_alives(&self) -> bool {
        self.armed() && self.enabled_groups & (1 << group::KEEP_ALIVE) != 0
    }

    /// Whether the ring is usable and the driver has handed out slots.
    pub fn armed(&self) -> bool {
        self.ring.depth().is_some() && self.head_doorbell != 0
    }

    /// Writes `event` at the tail and advances it.
    pub fn post(&mut self, dma: &GuestDma, event: Event) -> Result<(), PostError> {
        let depth = self.ring.depth().ok_or(PostError::NotConfigured)?;
        if self.enabled_groups & (1 << event.group()) == 0 {
            return Err(PostError::GroupDisabled(event.group()));
        }
        let head = self.head_doorbell as u16;
        let free = head.wrapping_sub(self.tail);
        if free == 0 || free > depth {
            return Err(PostError::Full {
                tail: self.tail,
                head,
            });
        }
        let index = self.tail;
        let mut entry = event.encode(timestamp());
        entry.set_u8(layout::FLAGS, phase_of(index, depth) & layout::FLAG_PHASE);
        publish(dma, self.ring.slot(depth, index), &entry, layout::FLAGS)
            .map_err(|source| PostError::Dma { index, source })?;
        self.tail = self.tail.wrapping_add(1);
        Ok(())
    }
}

/// Event timestamp: seconds since the Unix epoch.
fn timestamp() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
