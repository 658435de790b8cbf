// SPDX-License-Identifier: GPL-2.0

//! The ENA function's I/O queues as the device sees them: the admin commands that create and
//! destroy submission and completion queues, and the descriptor formats of the data path
//! (`ena_admin_defs.h`, `ena_eth_io_defs.h`).

#![forbid(unsafe_code)]

use kernel::{dma::DmaAddress, prelude::*};

use super::{llq::LlqLayout, ring::CompletionRing, EnaDevice};
use crate::com::admin::{put_u64, Entry};

/// `ENA_ADMIN_CREATE_SQ`.
const CREATE_SQ: u8 = 1;
/// `ENA_ADMIN_DESTROY_SQ`.
const DESTROY_SQ: u8 = 2;
/// `ENA_ADMIN_CREATE_CQ`.
const CREATE_CQ: u8 = 3;
/// `ENA_ADMIN_DESTROY_CQ`.
const DESTROY_CQ: u8 = 4;

/// `sq_identity` bits 7:5.
const DIRECTION_SHIFT: u32 = 5;
/// `sq_caps_2` 3:0: `ENA_ADMIN_PLACEMENT_POLICY_HOST` (descriptors in host memory).
const PLACEMENT_HOST: u32 = 1;
/// `sq_caps_2` 3:0: `ENA_ADMIN_PLACEMENT_POLICY_DEV` (descriptors pushed to the device's LLQ).
const PLACEMENT_DEVICE: u32 = 3;
/// `sq_caps_3` bit 0: the ring is physically contiguous.
const PHYSICALLY_CONTIGUOUS: u32 = 1;
/// `cq_caps_1` bit 5: interrupts on.
const CQ_INTERRUPTS: u32 = 1 << 5;
/// `cq_caps_1` bit 7: braid's combined head doorbell and unmask (docs/card.md).
const CQ_COMBINED_DOORBELL: u32 = 1 << 7;

/// Which way a submission queue moves packets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Direction {
    /// Transmit.
    Tx = 1,
    /// Receive.
    Rx = 2,
}

/// A completion queue the device created.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Cq {
    /// The device's index of the queue.
    pub(crate) idx: u16,
    /// BAR0 offset of its head doorbell (with the combined doorbell: head, delay and unmask).
    pub(crate) head_doorbell: Option<usize>,
    /// BAR0 offset of its vector's unmask register.
    pub(crate) unmask: usize,
    /// Whether the head doorbell takes the unmask too.
    pub(crate) combined: bool,
}

/// Where a submission queue's descriptors live.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Placement<'a> {
    /// In a ring in host memory at this device address.
    Host(DmaAddress),
    /// In the device's LLQ memory, laid out as negotiated (transmit queues only).
    Device(&'a LlqLayout),
}

/// A submission queue the device created.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Sq {
    /// The device's index of the queue.
    pub(crate) idx: u16,
    /// Its direction.
    pub(crate) direction: Direction,
    /// BAR0 offset of its tail doorbell.
    pub(crate) doorbell: usize,
    /// With [`Placement::Device`]: the offset of its entries in the LLQ BAR.
    pub(crate) llq_offset: usize,
}

/// Word `w`'s low and high halves of a 64-bit DMA address (`ena_common_mem_addr`).
pub(crate) fn set_address(command: &mut Entry, w: usize, addr: DmaAddress) {
    // The high half is 16 bits wide: address bits 47:32.
    put_u64(command, w, addr & 0xffff_ffff_ffff);
}

impl EnaDevice<'_> {
    /// Checks a doorbell offset the device answered: 4-byte aligned, inside BAR0.
    fn doorbell(&self, offset: u32) -> Result<usize> {
        let offset = usize::try_from(offset)?;
        if offset % 4 != 0 || offset + 4 > self.bar_len {
            return Err(EIO);
        }
        Ok(offset)
    }

    /// Creates the completion queue `ring`, raising MSI-X vector `vector`; with `combined`, its
    /// head doorbell also unmasks.
    pub(crate) fn create_cq<const W: usize>(
        &mut self,
        ring: &CompletionRing<W>,
        vector: u32,
        combined: bool,
    ) -> Result<Cq> {
        let (entry_words, depth, ring) = (W as u32, ring.index.depth(), ring.address());
        let mut command: Entry = [0; 16];
        let mut caps_1 = CQ_INTERRUPTS;
        if combined {
            caps_1 |= CQ_COMBINED_DOORBELL;
        }
        // Word 1: cq_caps_1, cq_caps_2 (entry size in words, 4:0), cq_depth.
        command[1] = caps_1 | ((entry_words & 0x1f) << 8) | (u32::from(depth) << 16);
        command[2] = vector;
        set_address(&mut command, 3, ring);
        let c = self.execute(CREATE_CQ, command)?;
        // Words 2..5: cq_idx and actual depth, NUMA register, head doorbell, unmask register.
        let cq = Cq {
            idx: c[2] as u16,
            head_doorbell: match c[4] {
                0 => None,
                offset => Some(self.doorbell(offset)?),
            },
            unmask: self.doorbell(c[5])?,
            combined,
        };
        if (c[2] >> 16) as u16 != depth || (combined && cq.head_doorbell.is_none()) {
            // The device changed the depth or has no doorbell for the combined write: not
            // what braid.ko set the ring up for.
            let _ = self.destroy_cq(&cq);
            return Err(EIO);
        }
        Ok(cq)
    }

    /// Creates a submission queue of `depth` entries with its descriptors at `placement`,
    /// completing into `cq`.
    pub(crate) fn create_sq(
        &mut self,
        direction: Direction,
        cq: &Cq,
        depth: u16,
        placement: Placement<'_>,
    ) -> Result<Sq> {
        let mut command: Entry = [0; 16];
        // Word 1: sq_identity, reserved, sq_caps_2 (placement; completion policy 0: one
        // completion per descriptor chain), sq_caps_3.
        let policy = match placement {
            Placement::Host(ring) => {
                set_address(&mut command, 3, ring);
                PLACEMENT_HOST
            }
            Placement::Device(_) => PLACEMENT_DEVICE,
        };
        command[1] = ((direction as u32) << DIRECTION_SHIFT)
            | (policy << 16)
            | (PHYSICALLY_CONTIGUOUS << 24);
        command[2] = u32::from(cq.idx) | (u32::from(depth) << 16);
        let c = self.execute(CREATE_SQ, command)?;
        let sq = Sq {
            idx: c[2] as u16,
            direction,
            doorbell: 0,
            llq_offset: 0,
        };
        // Words 3 and 4: the doorbell's offset in BAR0, the entries' offset in the LLQ BAR.
        let checked = self.doorbell(c[3]).and_then(|doorbell| match placement {
            Placement::Host(_) => Ok(Sq { doorbell, ..sq }),
            Placement::Device(llq) => Ok(Sq {
                doorbell,
                llq_offset: llq.queue_window(c[4], depth)?,
                ..sq
            }),
        });
        if checked.is_err() {
            let _ = self.destroy_sq(&sq);
        }
        checked
    }

    /// Destroys a submission queue: the device stops reading its ring.
    pub(crate) fn destroy_sq(&mut self, sq: &Sq) -> Result {
        let mut command: Entry = [0; 16];
        // `ena_admin_sq`: sq_idx, sq_identity (direction in 7:5).
        command[1] = u32::from(sq.idx) | ((sq.direction as u32) << (DIRECTION_SHIFT + 16));
        self.execute(DESTROY_SQ, command).map(|_| ())
    }

    /// Destroys a completion queue: the device stops writing its ring.
    pub(crate) fn destroy_cq(&mut self, cq: &Cq) -> Result {
        let mut command: Entry = [0; 16];
        command[1] = u32::from(cq.idx);
        self.execute(DESTROY_CQ, command).map(|_| ())
    }
}

/// `ena_eth_io_tx_desc` fields (word 0 `len_ctrl`, word 1 `meta_ctrl`, word 3 address high).
pub(crate) mod tx_desc {
    /// Word 0: request id bits 15:10 go in 21:16.
    pub(crate) const REQ_ID_HI_SHIFT: u32 = 16;
    /// Word 0: phase.
    pub(crate) const PHASE: u32 = 1 << 24;
    /// Word 0: first descriptor of the packet.
    pub(crate) const FIRST: u32 = 1 << 26;
    /// Word 0: last descriptor of the packet.
    pub(crate) const LAST: u32 = 1 << 27;
    /// Word 0: completion requested.
    pub(crate) const COMP_REQ: u32 = 1 << 28;
    /// Word 1: request id bits 9:0 go in 31:22.
    pub(crate) const REQ_ID_LO_SHIFT: u32 = 22;
    /// Word 1: L3 protocol index (3:0): IPv4.
    pub(crate) const L3_IPV4: u32 = 8;
    /// Word 1: L3 protocol index: IPv6.
    pub(crate) const L3_IPV6: u32 = 11;
    /// Word 1: segment the TCP packet.
    pub(crate) const TSO_EN: u32 = 1 << 7;
    /// Word 1: L4 protocol index (12:8).
    pub(crate) const L4_PROTO_SHIFT: u32 = 8;
    /// Word 1: fill the IPv4 header checksum.
    pub(crate) const L3_CSUM_EN: u32 = 1 << 13;
    /// Word 1: fill the TCP/UDP checksum.
    pub(crate) const L4_CSUM_EN: u32 = 1 << 14;
    /// Word 1: the checksum field holds the pseudo-header sum.
    pub(crate) const L4_CSUM_PARTIAL: u32 = 1 << 17;
    /// Word 3: bytes of the packet inline in its LLQ entry (31:24).
    pub(crate) const HEADER_LENGTH_SHIFT: u32 = 24;
}

/// `ena_eth_io_tx_meta_desc`: word 0 `len_ctrl` (with `tx_desc`'s phase, first and completion
/// bits at the same places), word 2 the MSS's low bits.
pub(crate) mod tx_meta {
    /// Word 0: MSS bits 13:10 go in 19:16.
    pub(crate) const MSS_HI_SHIFT: u32 = 16;
    /// Word 0: the extended fields (MSS) are valid.
    pub(crate) const EXT_VALID: u32 = 1 << 14;
    /// Word 0: Ethernet meta type.
    pub(crate) const ETH_META_TYPE: u32 = 1 << 20;
    /// Word 0: the device keeps the MSS for later packets of the queue.
    pub(crate) const META_STORE: u32 = 1 << 21;
    /// Word 0: this is a meta descriptor.
    pub(crate) const META_DESC: u32 = 1 << 23;
    /// Word 2: MSS bits 9:0 go in 31:22.
    pub(crate) const MSS_LO_SHIFT: u32 = 22;
}

/// `enum ena_eth_io_l4_proto_index`, in TX descriptors and RX completions alike.
pub(crate) mod l4 {
    /// TCP.
    pub(crate) const TCP: u32 = 12;
    /// UDP.
    pub(crate) const UDP: u32 = 13;
}

/// `ena_eth_io_tx_cdesc` word 0: request id 15:0, status 23:16, phase bit 24.
pub(crate) mod tx_cdesc {
    /// Status field.
    pub(crate) const STATUS_SHIFT: u32 = 16;
    /// Phase.
    pub(crate) const PHASE: u32 = 1 << 24;
}

/// `ena_eth_io_rx_desc` word 0: length 15:0, `ctrl` in 31:24.
pub(crate) mod rx_desc {
    /// Phase.
    pub(crate) const PHASE: u32 = 1 << 24;
    /// First (and, with `LAST`, only) buffer of a frame.
    pub(crate) const FIRST: u32 = 1 << 26;
    /// Last buffer of a frame.
    pub(crate) const LAST: u32 = 1 << 27;
    /// Completion requested.
    pub(crate) const COMP_REQ: u32 = 1 << 28;
}

/// `ena_eth_io_rx_cdesc_base` word 0 (`status`); word 1 holds length 15:0 and request id 31:16,
/// word 2 the RSS hash.
pub(crate) mod rx_cdesc {
    /// L4 protocol index (12:8): 1 TCP, 2 UDP.
    pub(crate) const L4_PROTO_SHIFT: u32 = 8;
    /// L4 protocol index mask (after the shift).
    pub(crate) const L4_PROTO_MASK: u32 = 0x1f;
    /// The IPv4 header checksum is wrong.
    pub(crate) const L3_CSUM_ERR: u32 = 1 << 13;
    /// The TCP/UDP checksum is wrong.
    pub(crate) const L4_CSUM_ERR: u32 = 1 << 14;
    /// The packet is an IPv4 fragment.
    pub(crate) const IPV4_FRAG: u32 = 1 << 15;
    /// The device checked the TCP/UDP checksum.
    pub(crate) const L4_CSUM_CHECKED: u32 = 1 << 16;
    /// Phase.
    pub(crate) const PHASE: u32 = 1 << 24;
    /// First buffer of a frame.
    pub(crate) const FIRST: u32 = 1 << 26;
    /// Last buffer of a frame.
    pub(crate) const LAST: u32 = 1 << 27;
}

/// `ena_eth_io_intr_reg`: the unmask register's value, RX delay in 14:0.
pub(crate) mod intr {
    /// TX delay (29:15).
    pub(crate) const TX_DELAY_SHIFT: u32 = 15;
    /// Unmask the vector.
    pub(crate) const UNMASK: u32 = 1 << 30;
}

/// braid's combined CQ doorbell: head 15:0, interrupt delay 29:16, unmask 30.
pub(crate) mod combined {
    /// Interrupt delay for the CQ's direction (14 bits).
    pub(crate) const DELAY_SHIFT: u32 = 16;
    /// Unmask the vector.
    pub(crate) const UNMASK: u32 = 1 << 30;
}
