// SPDX-License-Identifier: GPL-2.0

//! The admin queue of both functions, in polling mode: a submission and a completion ring of
//! 64-byte entries in coherent DMA memory, with phase bits that flip on every wrap (`ena_com.c` and
//! `efa_com.c`, whose descriptors and status codes are the same: `ena_admin_defs.h`,
//! `efa_admin_defs.h`).
//!
//! Commands run one at a time: [`AdminQueue::execute`] writes the entry at the tail, rings the
//! doorbell and polls the completion ring until the entry with the command's id and the expected
//! phase appears, or the timeout passes.

#![forbid(unsafe_code)]

use kernel::{
    device::{Bound, Device},
    dma::Coherent,
    io::{io_project, io_read, Io},
    pci,
    prelude::*,
    sync::{
        barrier::{dma_mb, Read},
        Arc,
    },
    time::{delay::fsleep, Delta, Instant, Monotonic},
};

use crate::kapi::irq::Wakeup;
use crate::regs::{
    ACQ_BASE_HI, ACQ_BASE_LO, ACQ_CAPS, AQ_BASE_HI, AQ_BASE_LO, AQ_CAPS, AQ_DB, REG_PAGE_SIZE,
};

/// Bytes in a submission or completion entry.
pub(crate) const ENTRY_SIZE: u16 = 64;
/// Entries per ring (ena.ko uses 32 as well, efa.ko 64).
pub(crate) const DEPTH: u16 = 32;
/// How long a command may take (the card's hint is 3 s).
pub(crate) const TIMEOUT: Delta = Delta::from_millis(3000);
/// Sleep between polls of the completion ring, until completions raise an interrupt.
const POLL_INTERVAL: Delta = Delta::from_micros(100);
/// Longest sleep for a completion's interrupt: a lost interrupt costs this, not the command.
const INTERRUPT_FALLBACK: Delta = Delta::from_millis(10);

/// A submission or completion entry: sixteen little-endian words.
pub(crate) type Entry = [u32; 16];

/// The 64-bit little-endian field in words `w` and `w + 1` of an entry.
pub(crate) fn get_u64(entry: &Entry, w: usize) -> u64 {
    u64::from(entry[w]) | (u64::from(entry[w + 1]) << 32)
}

/// Sets the 64-bit little-endian field in words `w` and `w + 1` of an entry.
pub(crate) fn put_u64(entry: &mut Entry, w: usize, value: u64) {
    entry[w] = value as u32;
    entry[w + 1] = (value >> 32) as u32;
}

/// Word 0 of `ena_admin_aq_common_desc`: command id 11:0, opcode 23:16, flags 31:24 (phase bit
/// 24).
pub(crate) mod aq {
    pub(super) const COMMAND_ID_MASK: u32 = 0xfff;
    pub(super) const OPCODE_SHIFT: u32 = 16;
    pub(super) const PHASE: u32 = 1 << 24;
    /// `flags` bit 1: the command's data is in the control buffer its words 1-3 name (EFA: a
    /// buffer of the data itself).
    pub(crate) const CTRL_DATA: u32 = 1 << 25;
    /// `flags` bit 2: the command's data is in the control buffer its words 1-3 name (EFA: a
    /// chain of buffers).
    pub(crate) const CTRL_DATA_INDIRECT: u32 = 1 << 26;
}

/// Word 0 of `ena_admin_acq_common_desc`: command id 11:0, status 23:16, phase bit 24.
mod acq {
    pub(super) const COMMAND_ID_MASK: u32 = 0xfff;
    pub(super) const STATUS_SHIFT: u32 = 16;
    pub(super) const STATUS_MASK: u32 = 0xff;
    pub(super) const PHASE: u32 = 1 << 24;
}

/// `enum ena_admin_aq_completion_status` (and EFA's, the same), as errors.
fn status_error(status: u32) -> Error {
    match status {
        // RESOURCE_ALLOCATION_FAILURE.
        1 => ENOMEM,
        // BAD_OPCODE, UNSUPPORTED_OPCODE.
        2 | 3 => EOPNOTSUPP,
        // MALFORMED_REQUEST, ILLEGAL_PARAMETER.
        4 | 5 => EINVAL,
        // RESOURCE_BUSY.
        7 => EBUSY,
        _ => EIO,
    }
}

/// The phase bit of free-running index `index` in a ring of `depth`: set on the first pass (the
/// admin rings, the AENQ and EFA's event queues alike).
pub(crate) fn phase(index: u16, depth: u16) -> bool {
    (index / depth) % 2 == 0
}

/// Zeroes every entry of a ring the device writes (before the device is told about it).
pub(super) fn clear(ring: &Coherent<[Entry]>) {
    for slot in 0..ring.len() {
        io_project!(ring, [panic: slot]).copy_write([0u32; 16]);
    }
}

/// What the admin queue did since probe (`ena_admin_q_*` in `ethtool -S`, as ena.ko's; the
/// `*_cmds` device counters, as efa.ko's).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct AdminStats {
    /// Commands handed to the device.
    pub(crate) submitted: u64,
    /// Completions taken, whatever their status.
    pub(crate) completed: u64,
    /// Commands that got no completion in time.
    pub(crate) no_completion: u64,
    /// Completions with an error status.
    pub(crate) failed: u64,
}

/// The admin queue's rings and the driver's positions in them.
pub(crate) struct AdminQueue {
    sq: Coherent<[Entry]>,
    cq: Coherent<[Entry]>,
    sq_tail: u16,
    cq_head: u16,
    next_id: u16,
    /// Given by the interrupt handler of completions, once there is one.
    wakeup: Option<Arc<Wakeup>>,
    pub(crate) stats: AdminStats,
}

impl AdminQueue {
    /// Allocates the rings.
    pub(crate) fn new(dev: &Device<Bound>) -> Result<Self> {
        Ok(Self {
            sq: Coherent::zeroed_slice(dev, usize::from(DEPTH), GFP_KERNEL)?,
            cq: Coherent::zeroed_slice(dev, usize::from(DEPTH), GFP_KERNEL)?,
            sq_tail: 0,
            cq_head: 0,
            next_id: 0,
            wakeup: None,
            stats: AdminStats::default(),
        })
    }

    /// From now on a command sleeps until `wakeup` is given (by the handler of the interrupt the
    /// device raises for completions) instead of polling every [`POLL_INTERVAL`]: the thread
    /// wakes as soon as the answer is there, as efa.ko's and ena.ko's do.
    pub(crate) fn wake_with(&mut self, wakeup: Arc<Wakeup>) {
        self.wakeup = Some(wakeup);
    }

    /// Tells the device where the rings are; the device starts both at index 0. The completion
    /// ring is cleared first: completions of an earlier first pass would show the phase the
    /// device's new ones will. Commands poll again until [`Self::wake_with`]: a (re)started device
    /// raises no interrupt before it is unmasked.
    pub(crate) fn program(&mut self, regs: &pci::Bar<'_, REG_PAGE_SIZE>) {
        self.wakeup = None;
        clear(&self.cq);
        let (sq, cq) = (self.sq.dma_address(), self.cq.dma_address());
        regs.write_reg(AQ_BASE_LO::zeroed().with_value(sq as u32));
        regs.write_reg(AQ_BASE_HI::zeroed().with_value((sq >> 32) as u32));
        regs.write_reg(ACQ_BASE_LO::zeroed().with_value(cq as u32));
        regs.write_reg(ACQ_BASE_HI::zeroed().with_value((cq >> 32) as u32));
        regs.write_reg(
            AQ_CAPS::zeroed()
                .with_depth(DEPTH)
                .with_entry_size(ENTRY_SIZE),
        );
        regs.write_reg(
            ACQ_CAPS::zeroed()
                .with_depth(DEPTH)
                .with_entry_size(ENTRY_SIZE),
        );
        self.sq_tail = 0;
        self.cq_head = 0;
        self.next_id = 0;
    }

    /// Runs `command` (of its word 0 only [`aq::CTRL_DATA`] and [`aq::CTRL_DATA_INDIRECT`] are
    /// kept) and returns its completion, or the error its status maps to; `ETIMEDOUT` if no
    /// completion comes within [`TIMEOUT`].
    pub(crate) fn execute(
        &mut self,
        regs: &pci::Bar<'_, REG_PAGE_SIZE>,
        opcode: u8,
        mut command: Entry,
    ) -> Result<Entry> {
        let id = u32::from(self.next_id);
        self.next_id = (self.next_id + 1) % DEPTH;
        let mut word0 = id
            | (u32::from(opcode) << aq::OPCODE_SHIFT)
            | (command[0] & (aq::CTRL_DATA | aq::CTRL_DATA_INDIRECT));
        if phase(self.sq_tail, DEPTH) {
            word0 |= aq::PHASE;
        }
        command[0] = word0;
        let slot = usize::from(self.sq_tail % DEPTH);
        io_project!(self.sq, [panic: slot]).copy_write(command);
        self.sq_tail = self.sq_tail.wrapping_add(1);
        // The MMIO write orders the entry before the doorbell (writel's barrier).
        regs.write_reg(AQ_DB::zeroed().with_tail(self.sq_tail));
        self.stats.submitted += 1;

        let start = Instant::<Monotonic>::now();
        let slot = usize::from(self.cq_head % DEPTH);
        let want_phase = phase(self.cq_head, DEPTH);
        loop {
            let word0: u32 = io_read!(self.cq, [panic: slot][build: 0]);
            if (word0 & acq::PHASE != 0) == want_phase {
                break;
            }
            if start.elapsed() > TIMEOUT {
                self.stats.no_completion += 1;
                return Err(ETIMEDOUT);
            }
            match &self.wakeup {
                Some(wakeup) => {
                    wakeup.sleep(INTERRUPT_FALLBACK);
                }
                None => fsleep(POLL_INTERVAL),
            }
        }
        // The phase bit is written last: read the body after it.
        dma_mb(Read);
        let completion: Entry = io_project!(self.cq, [panic: slot]).copy_read();
        self.cq_head = self.cq_head.wrapping_add(1);
        self.stats.completed += 1;
        let word0 = completion[0];
        if word0 & acq::COMMAND_ID_MASK != id & aq::COMMAND_ID_MASK {
            return Err(EIO);
        }
        match (word0 >> acq::STATUS_SHIFT) & acq::STATUS_MASK {
            0 => Ok(completion),
            status => {
                self.stats.failed += 1;
                Err(status_error(status))
            }
        }
    }
}
