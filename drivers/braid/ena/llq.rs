// SPDX-License-Identifier: GPL-2.0

//! Low-latency queues (LLQ): transmit descriptors and the packet's headers pushed into the device's
//! memory (the LLQ BAR, mapped write-combining) instead of left in host memory for the device to
//! fetch. `ena_com_config_llq_info` (ena_com.c) and the bounce buffer of ena_eth_com.c are the
//! specification.
//!
//! A packet starts a fresh entry, which holds up to `descs_before_header` descriptors and then
//! the packet's first bytes; its further descriptors fill the following entries. The queue's tail
//! (and its doorbell) count entries.

#![forbid(unsafe_code)]

use kernel::{prelude::*, sync::Arc};

use super::io::tx_desc;
use super::ring::RingIndex;
use super::{feature_command, Regs, GET_FEATURE, SET_FEATURE};
use crate::com::admin::AdminQueue;
use crate::kapi::pci::WcBar;

/// `ENA_ADMIN_LLQ`.
pub(crate) const LLQ: u32 = 4;
/// `ENA_ADMIN_INLINE_HEADER`: headers in the descriptor entry.
const INLINE_HEADER: u32 = 1;
/// `ENA_ADMIN_LIST_ENTRY_SIZE_128B`.
const ENTRY_SIZE_128B: u32 = 1;
/// `ENA_ADMIN_SINGLE_DESC_PER_ENTRY` and `ENA_ADMIN_MULTIPLE_DESCS_PER_ENTRY`.
const STRIDE_SINGLE: u32 = 1;
const STRIDE_MULTIPLE: u32 = 2;
/// `ena_admin_llq_num_descs_before_header` values braid.ko takes, best first: each is its own
/// bit in the supported mask. Eight would leave no room for the header.
const DESCS_BEFORE_HEADER: [u32; 3] = [2, 1, 4];
/// Bytes of an entry, and of a descriptor.
const ENTRY_BYTES: usize = 128;
const DESC_BYTES: usize = 16;
/// An entry as the 64-bit words written to the device.
type LlqEntry = [u64; ENTRY_BYTES / 8];

/// The LLQ mode the driver and the device agreed on.
#[derive(Clone, Copy, Debug)]
pub(crate) struct LlqLayout {
    /// Length of the LLQ BAR.
    bar_len: usize,
    /// Deepest queue, in entries.
    pub(crate) max_depth: u16,
    /// Descriptors ahead of the header in a packet's first entry.
    before_header: usize,
    /// Descriptors in each further entry.
    per_entry: usize,
}

/// The low half of a `ctrl_supported`/`ctrl_enabled` word pair (the supported options).
fn supported(word: u32) -> u32 {
    word & 0xffff
}

impl LlqLayout {
    /// Picks the LLQ mode (inline headers in 128-byte entries) among what the device supports
    /// and tells it, as `ena_com_config_llq_info` does; `None` when the device offers no LLQ
    /// braid.ko can drive, or its BAR of `bar_len` bytes is too small.
    pub(crate) fn negotiate(
        admin: &mut AdminQueue,
        regs: &Regs<'_>,
        bar_len: usize,
        min_depth: u16,
    ) -> Result<Option<Self>> {
        // `ena_admin_feature_llq_desc` from word 2 of the answer: max_llq_num, max_llq_depth,
        // then supported/enabled pairs for the header location, entry size, descriptors before
        // the header and stride.
        let c = admin.execute(regs, GET_FEATURE, feature_command(LLQ))?;
        let before_header = DESCS_BEFORE_HEADER
            .into_iter()
            .find(|&n| supported(c[6]) & n != 0);
        let stride = [STRIDE_MULTIPLE, STRIDE_SINGLE]
            .into_iter()
            .find(|&s| supported(c[7]) & s != 0);
        let max_depth = u16::try_from(c[3].min(u32::from(u16::MAX))).unwrap_or(0);
        let (Some(before_header), Some(stride)) = (before_header, stride) else {
            return Ok(None);
        };
        if c[2] == 0
            || supported(c[4]) & INLINE_HEADER == 0
            || supported(c[5]) & ENTRY_SIZE_128B == 0
            || max_depth < min_depth
            || bar_len < usize::from(max_depth) * ENTRY_BYTES
        {
            return Ok(None);
        }
        let mut command = feature_command(LLQ);
        // The body from word 5: the limits, then each pair with the choice in its high half.
        command[7] = INLINE_HEADER | (INLINE_HEADER << 16);
        command[8] = ENTRY_SIZE_128B | (ENTRY_SIZE_128B << 16);
        command[9] = before_header | (before_header << 16);
        command[10] = stride | (stride << 16);
        admin.execute(regs, SET_FEATURE, command)?;
        Ok(Some(Self {
            bar_len,
            max_depth: 1 << max_depth.ilog2(),
            before_header: before_header as usize,
            per_entry: if stride == STRIDE_MULTIPLE {
                ENTRY_BYTES / DESC_BYTES
            } else {
                1
            },
        }))
    }

    /// Most header bytes a packet's first entry carries.
    pub(crate) fn max_header(&self) -> usize {
        ENTRY_BYTES - self.before_header * DESC_BYTES
    }

    /// Entries a packet of `descriptors` descriptors takes.
    pub(crate) fn entries(&self, descriptors: usize) -> usize {
        1 + descriptors
            .saturating_sub(self.before_header)
            .div_ceil(self.per_entry)
    }

    /// Checks the entries' offset `offset` the device answered for a queue of `depth` entries:
    /// entry-aligned, inside the BAR.
    pub(crate) fn queue_window(&self, offset: u32, depth: u16) -> Result<usize> {
        let offset = usize::try_from(offset)?;
        let end = offset + usize::from(depth) * ENTRY_BYTES;
        if offset % ENTRY_BYTES != 0 || end > self.bar_len {
            return Err(EIO);
        }
        Ok(offset)
    }
}

/// A transmit queue's entries in the LLQ BAR.
pub(crate) struct LlqQueue<'bound> {
    bar: Arc<WcBar<'bound>>,
    layout: LlqLayout,
    /// Offset of the queue's first entry in the BAR.
    pub(crate) offset: usize,
}

impl<'bound> LlqQueue<'bound> {
    /// A queue in `bar` laid out as `layout`; [`Self::offset`] is set once the device placed it.
    pub(crate) fn new(bar: Arc<WcBar<'bound>>, layout: LlqLayout) -> Self {
        Self {
            bar,
            layout,
            offset: 0,
        }
    }

    /// The agreed layout.
    pub(crate) fn layout(&self) -> &LlqLayout {
        &self.layout
    }

    /// Writes a packet from entry `tail` on: its first `header` bytes (at most
    /// [`LlqLayout::max_header`]) and `descriptors`, each given the phase of the entry it lands
    /// in. Returns the tail past the packet. The device sees the entries once a write barrier
    /// and the doorbell follow.
    pub(crate) fn write_packet(
        &self,
        index: RingIndex,
        mut tail: u16,
        header: &[u8],
        descriptors: &[[u32; 4]],
    ) -> Result<u16> {
        let start = self.layout.before_header * DESC_BYTES;
        let mut entry: LlqEntry = [0; ENTRY_BYTES / 8];
        entry
            .as_mut_bytes()
            .get_mut(start..start + header.len())
            .ok_or(EINVAL)?
            .copy_from_slice(header);
        let mut room = self.layout.before_header;
        let mut pos = 0;
        for d in descriptors {
            if room == 0 {
                self.write_entry(index, tail, &entry)?;
                tail = tail.wrapping_add(1);
                entry = [0; ENTRY_BYTES / 8];
                (room, pos) = (self.layout.per_entry, 0);
            }
            let mut word0 = d[0];
            if index.phase(tail) {
                word0 |= tx_desc::PHASE;
            }
            entry[2 * pos] = u64::from(word0) | (u64::from(d[1]) << 32);
            entry[2 * pos + 1] = u64::from(d[2]) | (u64::from(d[3]) << 32);
            (room, pos) = (room - 1, pos + 1);
        }
        self.write_entry(index, tail, &entry)?;
        Ok(tail.wrapping_add(1))
    }

    /// Copies `entry` to the device at free-running index `tail`.
    fn write_entry(&self, index: RingIndex, tail: u16, entry: &LlqEntry) -> Result {
        self.bar
            .write(self.offset + index.slot(tail) * ENTRY_BYTES, entry)
    }
}
