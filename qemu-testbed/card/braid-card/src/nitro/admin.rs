//! The admin queue (AQ) and admin completion queue (ACQ): rings of 64-byte
//! submissions and completions in guest memory, as ENA
//! (`ena_admin_aq_entry`/`ena_admin_acq_entry`, `ena_com.c`) and EFA
//! (`efa_admin_aq_entry`/`efa_admin_acq_entry`, `efa_com.c`) define them
//! alike: the same common descriptors, phase bits and completion statuses.
//! Opcodes and command bodies are each function's.
//!
//! EFA's admin API 0.2 adds a CRC16 to every completion, and 0.3 128-byte
//! submissions (`efa_admin_aq_entry_v2`) with a CRC16 and the payload 12
//! bytes in ([`Checksums`]). The card takes whichever entry size the driver
//! programs in `AQ_CAPS` and hands every command on in the 64-byte layout.
//!
//! Both rings carry a phase bit that flips on every wrap, starting at 1.
//! The driver writes the free-running 16-bit submission tail to `AQ_DB`;
//! the card consumes entries in order up to it, and for each writes one
//! completion echoing the command id, with the body first and the phase
//! bit last, so the driver never sees a half-written completion.

use std::sync::atomic::{Ordering, fence};

use thiserror::Error;
use tracing::warn;

use super::regs::Field;
use super::regs::bar0::QUEUE_CAPS_DEPTH;
use crate::dma::{DmaError, GuestDma};

/// Size of every admin completion and AENQ entry, and of a submission
/// (but see [`V2_ENTRY_SIZE`]).
pub const ENTRY_SIZE: usize = 64;
/// Size of an `efa_admin_aq_entry_v2` submission (EFA admin API 0.3).
pub const V2_ENTRY_SIZE: usize = 128;
/// Largest queue depth the card accepts (the depth must be a power of two).
pub const MAX_DEPTH: u16 = 4096;

/// `enum ena_admin_aq_completion_status` (`efa_admin_aq_completion_status`
/// has the same values).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Status {
    /// `ENA_ADMIN_SUCCESS`.
    Success = 0,
    /// `ENA_ADMIN_RESOURCE_ALLOCATION_FAILURE`: no free queue slot.
    ResourceAllocationFailure = 1,
    /// `ENA_ADMIN_BAD_OPCODE`: the opcode is not an ENA admin opcode.
    BadOpcode = 2,
    /// `ENA_ADMIN_UNSUPPORTED_OPCODE`: a valid request the device does not
    /// implement (an unsupported feature or statistics type).
    UnsupportedOpcode = 3,
    /// `ENA_ADMIN_MALFORMED_REQUEST`: the entry itself is invalid (phase,
    /// command id, control buffer, unreadable memory).
    MalformedRequest = 4,
    /// `ENA_ADMIN_ILLEGAL_PARAMETER`: a field has a value the device
    /// refuses.
    IllegalParameter = 5,
    /// `ENA_ADMIN_UNKNOWN_ERROR`.
    UnknownError = 6,
    /// `ENA_ADMIN_RESOURCE_BUSY`: the resource is still in use.
    ResourceBusy = 7,
}

/// A refused admin command: the completion status and why, for the log.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{status:?}: {reason}")]
pub struct Refused {
    /// Status written to the completion.
    pub status: Status,
    /// What was wrong.
    pub reason: String,
}

impl Refused {
    /// A refusal with `status` and `reason`.
    pub fn new(status: Status, reason: impl Into<String>) -> Self {
        Self {
            status,
            reason: reason.into(),
        }
    }

    /// `ENA_ADMIN_ILLEGAL_PARAMETER` with `reason`.
    pub fn illegal(reason: impl Into<String>) -> Self {
        Self::new(Status::IllegalParameter, reason)
    }

    /// `ENA_ADMIN_MALFORMED_REQUEST` with `reason`.
    pub fn malformed(reason: impl Into<String>) -> Self {
        Self::new(Status::MalformedRequest, reason)
    }

    /// `ENA_ADMIN_UNSUPPORTED_OPCODE` with `reason`.
    pub fn unsupported(reason: impl Into<String>) -> Self {
        Self::new(Status::UnsupportedOpcode, reason)
    }

    /// A DMA access for `what` failed.
    pub fn dma(what: &str, err: &DmaError) -> Self {
        Self::malformed(format!("{what}: {err}"))
    }
}

/// The outcome of one command: the completion body, or a refusal.
pub type CommandResult = Result<Entry, Refused>;

/// One 64-byte entry (submission, completion or event), little-endian.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Entry(pub [u8; ENTRY_SIZE]);

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Entry(")?;
        for word in self.0.chunks(4) {
            write!(
                f,
                "{:08x} ",
                u32::from_le_bytes([word[0], word[1], word[2], word[3]])
            )?;
        }
        write!(f, ")")
    }
}

impl Default for Entry {
    fn default() -> Self {
        Self([0; ENTRY_SIZE])
    }
}

impl Entry {
    fn bytes<const N: usize>(&self, off: usize) -> [u8; N] {
        let mut out = [0; N];
        if let Some(src) = self.0.get(off..off + N) {
            out.copy_from_slice(src);
        }
        out
    }

    fn put<const N: usize>(&mut self, off: usize, value: [u8; N]) {
        if let Some(dst) = self.0.get_mut(off..off + N) {
            dst.copy_from_slice(&value);
        }
    }

    /// The byte at `off`.
    pub fn u8(&self, off: usize) -> u8 {
        self.bytes::<1>(off)[0]
    }

    /// The little-endian u16 at `off`.
    pub fn u16(&self, off: usize) -> u16 {
        u16::from_le_bytes(self.bytes(off))
    }

    /// The little-endian u32 at `off`.
    pub fn u32(&self, off: usize) -> u32 {
        u32::from_le_bytes(self.bytes(off))
    }

    /// The little-endian u64 at `off` (also EFA's `efa_common_mem_addr`:
    /// 32 low bits, then 32 high bits).
    pub fn u64(&self, off: usize) -> u64 {
        u64::from_le_bytes(self.bytes(off))
    }

    /// Sets the little-endian u64 at `off`.
    pub fn set_u64(&mut self, off: usize, value: u64) {
        self.put(off, value.to_le_bytes());
    }

    /// A `struct ena_common_mem_addr` at `off`: 32 low bits, 16 high bits.
    pub fn mem_addr(&self, off: usize) -> u64 {
        u64::from(self.u32(off)) | (u64::from(self.u16(off + 4)) << 32)
    }

    /// Sets the byte at `off`.
    pub fn set_u8(&mut self, off: usize, value: u8) {
        self.put(off, [value]);
    }

    /// Sets the little-endian u16 at `off`.
    pub fn set_u16(&mut self, off: usize, value: u16) {
        self.put(off, value.to_le_bytes());
    }

    /// Sets the little-endian u32 at `off`.
    pub fn set_u32(&mut self, off: usize, value: u32) {
        self.put(off, value.to_le_bytes());
    }

    /// Copies `bytes` to `off` (truncated at the end of the entry).
    pub fn set_bytes(&mut self, off: usize, bytes: &[u8]) {
        if let Some(dst) = self.0.get_mut(off..) {
            let len = dst.len().min(bytes.len());
            dst[..len].copy_from_slice(&bytes[..len]);
        }
    }
}

/// `struct ena_admin_aq_common_desc` and `ena_admin_ctrl_buff_info`.
pub mod aq {
    /// `command_id` (u16; bits 11:0 are the id).
    pub const COMMAND_ID: usize = 0;
    /// `opcode` (u8).
    pub const OPCODE: usize = 2;
    /// `flags` (u8).
    pub const FLAGS: usize = 3;
    /// Bytes of the common descriptor; a 64-byte entry's payload follows.
    pub const COMMON: usize = 4;
    /// `control_buffer.length` (u32).
    pub const CTRL_BUF_LENGTH: usize = 4;
    /// `control_buffer.address` (`ena_common_mem_addr`).
    pub const CTRL_BUF_ADDRESS: usize = 8;
    /// `ENA_ADMIN_AQ_COMMON_DESC_COMMAND_ID_MASK`.
    pub const COMMAND_ID_MASK: u16 = 0xfff;
    /// `ENA_ADMIN_AQ_COMMON_DESC_PHASE_MASK`.
    pub const FLAG_PHASE: u8 = 1 << 0;
    /// `ENA_ADMIN_AQ_COMMON_DESC_CTRL_DATA_MASK`.
    pub const FLAG_CTRL_DATA: u8 = 1 << 1;
    /// `ENA_ADMIN_AQ_COMMON_DESC_CTRL_DATA_INDIRECT_MASK`.
    pub const FLAG_CTRL_DATA_INDIRECT: u8 = 1 << 2;
}

/// `struct efa_admin_aq_common_desc_v2`: the common descriptor, then
/// these, then the payload.
pub mod aq_v2 {
    /// `checksum` (u16).
    pub const CHECKSUM: usize = 4;
    /// `request_payload`.
    pub const PAYLOAD: usize = 12;
}

/// `struct ena_admin_acq_common_desc`.
pub mod acq {
    /// `command` (u16; bits 11:0 echo the command id).
    pub const COMMAND: usize = 0;
    /// `status` (u8).
    pub const STATUS: usize = 2;
    /// `flags` (u8; bit 0 is the phase).
    pub const FLAGS: usize = 3;
    /// `extended_status` (u16) on ENA; `checksum` on EFA (admin API 0.2).
    pub const EXTENDED_STATUS: usize = 4;
    /// `efa_admin_acq_common_desc.checksum` (u16).
    pub const CHECKSUM: usize = 4;
    /// `sq_head_indx` (u16).
    pub const SQ_HEAD_INDX: usize = 6;
    /// Start of `response_specific_data`.
    pub const BODY: usize = 8;
    /// `ENA_ADMIN_ACQ_COMMON_DESC_PHASE_MASK`.
    pub const FLAG_PHASE: u8 = 1 << 0;
}

/// The indirect control buffer a command points at, if it has one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ControlBuffer {
    /// Guest address.
    pub address: u64,
    /// Length in bytes.
    pub length: u32,
}

/// A submission as the card received it.
#[derive(Debug, Clone, Copy)]
pub struct Command {
    /// The raw entry.
    pub entry: Entry,
}

impl Command {
    /// The command id to echo.
    pub fn command_id(&self) -> u16 {
        self.entry.u16(aq::COMMAND_ID) & aq::COMMAND_ID_MASK
    }

    /// The opcode.
    pub fn opcode(&self) -> u8 {
        self.entry.u8(aq::OPCODE)
    }

    /// The flags byte.
    pub fn flags(&self) -> u8 {
        self.entry.u8(aq::FLAGS)
    }

    /// The control buffer, if the command is flagged as carrying one
    /// indirectly.
    pub fn control_buffer(&self) -> Option<ControlBuffer> {
        (self.flags() & aq::FLAG_CTRL_DATA_INDIRECT != 0).then(|| ControlBuffer {
            address: self.entry.mem_addr(aq::CTRL_BUF_ADDRESS),
            length: self.entry.u32(aq::CTRL_BUF_LENGTH),
        })
    }
}

/// The entry-size field of the queue CAPS registers: 16 bits on ENA
/// (`ENA_REGS_*_CAPS_*_ENTRY_SIZE_MASK`); EFA's ACQ and AENQ caps narrow it
/// to 8 bits and put the MSI-X vector above it
/// ([`crate::efa::regs::QUEUE_CAPS_ENTRY_SIZE`]).
pub const WIDE_ENTRY_SIZE: Field = Field::new(16, 16);

/// A ring's guest address, depth and entry size, as the driver
/// programmed them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingConfig {
    /// Guest address of entry 0.
    pub base: u64,
    /// The raw CAPS register.
    pub caps: u32,
    /// Where CAPS holds the entry size.
    pub entry_size: Field,
    /// Whether [`V2_ENTRY_SIZE`] entries are accepted besides 64-byte ones.
    pub v2_entries: bool,
}

impl Default for RingConfig {
    fn default() -> Self {
        Self::with_entry_size(WIDE_ENTRY_SIZE)
    }
}

impl RingConfig {
    /// An unprogrammed ring whose CAPS carries the entry size in
    /// `entry_size`.
    pub const fn with_entry_size(entry_size: Field) -> Self {
        Self {
            base: 0,
            caps: 0,
            entry_size,
            v2_entries: false,
        }
    }

    /// The entry size CAPS programs.
    pub fn entry_bytes(&self) -> usize {
        self.entry_size.get(self.caps) as usize
    }

    /// The depth, if the ring is usable: base set, depth a power of two
    /// no larger than [`MAX_DEPTH`], 64-byte entries (or
    /// [`V2_ENTRY_SIZE`] ones where accepted).
    pub fn depth(&self) -> Option<u16> {
        let depth = QUEUE_CAPS_DEPTH.get(self.caps) as u16;
        let entry_size = self.entry_bytes();
        let valid = self.base != 0
            && depth.is_power_of_two()
            && depth <= MAX_DEPTH
            && (entry_size == ENTRY_SIZE || self.v2_entries && entry_size == V2_ENTRY_SIZE);
        valid.then_some(depth)
    }

    /// Guest address of the entry with free-running index `index`.
    pub fn slot(&self, depth: u16, index: u16) -> u64 {
        let entry = self.entry_bytes() as u64;
        self.base
            .wrapping_add(u64::from(index & (depth - 1)) * entry)
    }
}

/// EFA's CRC16 (`efa_com_calc_crc16_checksum`): the kernel's `crc16()`
/// seeded with 0xffff, then XORed with 0xffff.
const CRC16: crc::Crc<u16> = crc::Crc::<u16>::new(&crc::CRC_16_USB);

/// The CRC16 of `entry` with its checksum field at `at` taken as zero.
pub fn checksum(entry: &[u8], at: usize) -> u16 {
    let mut digest = CRC16.digest();
    digest.update(&entry[..at]);
    digest.update(&[0, 0]);
    digest.update(&entry[at + 2..]);
    digest.finalize()
}

/// EFA's admin API checksums (0.2 and 0.3): every completion carries a
/// CRC16 at [`acq::CHECKSUM`], and a 128-byte submission must carry one at
/// [`aq_v2::CHECKSUM`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Checksums {
    /// ENA, or EFA admin API 0.1: none.
    #[default]
    None,
    /// EFA admin API 0.3.
    Crc16,
}

/// The phase bit of the entry with free-running index `index` in a ring
/// of `depth` entries: 1 on the first pass, flipping on every wrap.
pub fn phase_of(index: u16, depth: u16) -> u8 {
    u8::from((index / depth) & 1 == 0)
}

/// Writes `entry` at `gpa` so that the byte holding the phase bit (at
/// `flags_off`) lands last.
pub fn publish(dma: &GuestDma, gpa: u64, entry: &Entry, flags_off: usize) -> Result<(), DmaError> {
    let bytes = &entry.0;
    let flags_gpa = gpa.wrapping_add(flags_off as u64);
    dma.write_slice(gpa, &bytes[..flags_off])?;
    dma.write_slice(flags_gpa.wrapping_add(1), &bytes[flags_off + 1..])?;
    fence(Ordering::Release);
    dma.write_slice(flags_gpa, &bytes[flags_off..=flags_off])
}

/// Why a doorbell could not be served at all.
#[derive(Debug, Error)]
pub enum AdminQueueError {
    /// The AQ or ACQ registers do not describe a usable ring.
    #[error(
        "admin queue not configured (AQ base {aq_base:#x} caps {aq_caps:#x}, ACQ base {acq_base:#x} caps {acq_caps:#x})"
    )]
    NotConfigured {
        /// AQ base.
        aq_base: u64,
        /// AQ_CAPS.
        aq_caps: u32,
        /// ACQ base.
        acq_base: u64,
        /// ACQ_CAPS.
        acq_caps: u32,
    },
    /// The new tail is more than a ring ahead of the device's head.
    #[error(
        "AQ doorbell tail {tail} is {pending} entries past head {head}, beyond the depth {depth}"
    )]
    TailOutOfRange {
        /// The tail written.
        tail: u16,
        /// The device's head.
        head: u16,
        /// Entries it claims.
        pending: u16,
        /// The ring depth.
        depth: u16,
    },
    /// A completion could not be written.
    #[error("cannot write admin completion {index}: {source}")]
    Completion {
        /// Free-running ACQ index.
        index: u16,
        /// The DMA error.
        #[source]
        source: DmaError,
    },
}

/// The device side of the admin queue pair.
#[derive(Debug)]
pub struct AdminQueue {
    /// Submission ring.
    pub sq: RingConfig,
    /// Completion ring.
    pub cq: RingConfig,
    /// Last value written to `AQ_DB`.
    pub doorbell: u32,
    /// Next submission the device consumes (free-running).
    pub sq_head: u16,
    /// Next completion slot the device fills (free-running).
    pub cq_tail: u16,
    /// Whether a command id must be below the queue depth: ENA uses the
    /// slot index as the id; EFA adds entropy bits above it (any 12-bit
    /// id is valid).
    pub ids_below_depth: bool,
    /// The checksums of the admin API the function advertises.
    pub checksums: Checksums,
}

impl Default for AdminQueue {
    /// An ENA admin queue.
    fn default() -> Self {
        Self {
            sq: RingConfig::default(),
            cq: RingConfig::default(),
            doorbell: 0,
            sq_head: 0,
            cq_tail: 0,
            ids_below_depth: true,
            checksums: Checksums::None,
        }
    }
}

impl AdminQueue {
    /// An EFA admin queue of admin API 0.3: 12-bit command ids, 64- or
    /// 128-byte submissions, CRC16 checksums, and ACQ caps whose entry
    /// size field is `cq_entry_size`.
    pub fn efa(cq_entry_size: Field) -> Self {
        Self {
            sq: RingConfig {
                v2_entries: true,
                ..RingConfig::default()
            },
            cq: RingConfig::with_entry_size(cq_entry_size),
            ids_below_depth: false,
            checksums: Checksums::Crc16,
            ..Self::default()
        }
    }

    /// Restarts the submission ring (after `AQ_CAPS` is written).
    pub fn restart_sq(&mut self) {
        self.sq_head = 0;
        self.doorbell = 0;
    }

    /// Restarts the completion ring (after `ACQ_CAPS` is written).
    pub fn restart_cq(&mut self) {
        self.cq_tail = 0;
    }

    /// Serves a doorbell: runs every submission from the device's head up
    /// to `tail` through `execute`, in order, and posts a completion for
    /// each. Returns how many completions were posted.
    pub fn ring(
        &mut self,
        tail: u32,
        dma: &GuestDma,
        mut execute: impl FnMut(&Command) -> CommandResult,
    ) -> Result<u16, AdminQueueError> {
        self.doorbell = tail;
        let (Some(sq_depth), Some(cq_depth)) = (self.sq.depth(), self.cq.depth()) else {
            return Err(AdminQueueError::NotConfigured {
                aq_base: self.sq.base,
                aq_caps: self.sq.caps,
                acq_base: self.cq.base,
                acq_caps: self.cq.caps,
            });
        };
        // The driver writes its free-running u16 tail.
        let tail = tail as u16;
        let pending = tail.wrapping_sub(self.sq_head);
        if pending > sq_depth {
            return Err(AdminQueueError::TailOutOfRange {
                tail,
                head: self.sq_head,
                pending,
                depth: sq_depth,
            });
        }
        for _ in 0..pending {
            let index = self.sq_head;
            let (command_id, result) = self.fetch_and_execute(dma, sq_depth, &mut execute);
            self.sq_head = self.sq_head.wrapping_add(1);
            let mut completion = match result {
                Ok(body) => body,
                Err(refused) => {
                    warn!(
                        index,
                        command_id,
                        status = ?refused.status,
                        reason = %refused.reason,
                        "admin command refused"
                    );
                    let mut entry = Entry::default();
                    entry.set_u8(acq::STATUS, refused.status as u8);
                    entry
                }
            };
            completion.set_u16(acq::COMMAND, command_id);
            completion.set_u16(acq::SQ_HEAD_INDX, self.sq_head & (sq_depth - 1));
            let cq_index = self.cq_tail;
            let flags = completion.u8(acq::FLAGS) & !acq::FLAG_PHASE;
            completion.set_u8(acq::FLAGS, flags | phase_of(cq_index, cq_depth));
            if self.checksums == Checksums::Crc16 {
                let sum = checksum(&completion.0, acq::CHECKSUM);
                completion.set_u16(acq::CHECKSUM, sum);
            }
            publish(
                dma,
                self.cq.slot(cq_depth, cq_index),
                &completion,
                acq::FLAGS,
            )
            .map_err(|source| AdminQueueError::Completion {
                index: cq_index,
                source,
            })?;
            self.cq_tail = self.cq_tail.wrapping_add(1);
        }
        Ok(pending)
    }

    /// Reads the submission at the head and runs it; returns the command
    /// id to echo with the outcome.
    fn fetch_and_execute(
        &self,
        dma: &GuestDma,
        depth: u16,
        execute: &mut impl FnMut(&Command) -> CommandResult,
    ) -> (u16, CommandResult) {
        let index = self.sq_head;
        let mut raw = [0u8; V2_ENTRY_SIZE];
        // ring() only serves a queue of either size.
        let size = self.sq.entry_bytes();
        if size != ENTRY_SIZE && size != V2_ENTRY_SIZE {
            return (0, Err(Refused::malformed(format!("{size}-byte entries"))));
        }
        let raw = &mut raw[..size];
        if let Err(err) = dma.read_slice(self.sq.slot(depth, index), raw) {
            return (0, Err(Refused::dma("reading the submission", &err)));
        }
        let mut entry = Entry::default();
        let v2 = raw.len() == V2_ENTRY_SIZE;
        if v2 {
            // The common descriptor, then the payload as a 64-byte entry
            // holds it; commands longer than that do not exist (yet).
            entry.0[..aq::COMMON].copy_from_slice(&raw[..aq::COMMON]);
            let payload = &raw[aq_v2::PAYLOAD..][..ENTRY_SIZE - aq::COMMON];
            entry.0[aq::COMMON..].copy_from_slice(payload);
        } else {
            entry.0.copy_from_slice(raw);
        }
        let command = Command { entry };
        let id = command.command_id();
        let phase = command.flags() & aq::FLAG_PHASE;
        let sums = v2.then(|| {
            let sent = u16::from_le_bytes([raw[aq_v2::CHECKSUM], raw[aq_v2::CHECKSUM + 1]]);
            (sent, checksum(raw, aq_v2::CHECKSUM))
        });
        let result = if phase != phase_of(index, depth) {
            Err(Refused::malformed(format!(
                "submission {index} has phase {phase}, expected {}",
                phase_of(index, depth)
            )))
        } else if let Some((sent, sum)) = sums.filter(|(sent, sum)| sent != sum) {
            Err(Refused::malformed(format!(
                "submission {index} has checksum {sent:#06x}, expected {sum:#06x}"
            )))
        } else if self.ids_below_depth && id >= depth {
            Err(Refused::malformed(format!(
                "command id {id} is not below the queue depth {depth}"
            )))
        } else {
            execute(&command)
        };
        (id, result)
    }
}

/// Serves a write of `tail` to the AQ doorbell of a device whose state
/// `S` holds the admin queue and the status register (`parts` finds
/// them): runs every new submission through `execute`, which may change
/// the rest of the state, and posts the completions. A doorbell that
/// cannot be served is logged; a completion the card could not write sets
/// `DEV_STS.FATAL_ERROR`. Returns whether completions were posted.
pub fn serve_doorbell<S>(
    state: &mut S,
    parts: fn(&mut S) -> (&mut AdminQueue, &mut u32),
    tail: u32,
    dma: &GuestDma,
    mut execute: impl FnMut(&mut S, &Command) -> CommandResult,
) -> bool {
    let mut admin = std::mem::take(parts(state).0);
    let result = admin.ring(tail, dma, |command| execute(state, command));
    let (queue, dev_sts) = parts(state);
    *queue = admin;
    match result {
        Ok(posted) => posted > 0,
        Err(err) => {
            warn!(error = %err, "admin doorbell refused");
            if matches!(err, AdminQueueError::Completion { .. }) {
                *dev_sts |= super::regs::bar0::DEV_STS_FATAL_ERROR;
            }
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_flip_per_wrap() {
        assert_eq!(phase_of(0, 4), 1);
        assert_eq!(phase_of(3, 4), 1);
        assert_eq!(phase_of(4, 4), 0);
        assert_eq!(phase_of(8, 4), 1);
        assert_eq!(phase_of(u16::MAX, 32), 0);
        assert_eq!(phase_of(0, 32), 1, "u16 wrap keeps the sequence");
    }

    #[test]
    fn entry_fields_are_little_endian_and_bounded() {
        let mut e = Entry::default();
        e.set_u32(8, 0x1234_5678);
        e.set_u16(12, 0xabcd);
        assert_eq!(e.mem_addr(8), 0xabcd_1234_5678);
        e.set_u32(62, 0xffff_ffff);
        assert_eq!(e.u32(62), 0, "out-of-bounds accesses are ignored");
        assert_eq!(e.u16(63), 0);
    }

    #[test]
    fn ring_config_validation() {
        let caps = |depth: u32, size: u32| QUEUE_CAPS_DEPTH.put(depth) | WIDE_ENTRY_SIZE.put(size);
        assert_eq!(
            RingConfig {
                base: 0x1000,
                caps: caps(32, 64),
                ..RingConfig::default()
            }
            .depth(),
            Some(32)
        );
        assert_eq!(
            RingConfig {
                base: 0,
                caps: caps(32, 64),
                ..RingConfig::default()
            }
            .depth(),
            None
        );
        assert_eq!(
            RingConfig {
                base: 0x1000,
                caps: caps(33, 64),
                ..RingConfig::default()
            }
            .depth(),
            None
        );
        assert_eq!(
            RingConfig {
                base: 0x1000,
                caps: caps(0, 64),
                ..RingConfig::default()
            }
            .depth(),
            None
        );
        assert_eq!(
            RingConfig {
                base: 0x1000,
                caps: caps(32, 32),
                ..RingConfig::default()
            }
            .depth(),
            None
        );
        assert_eq!(
            RingConfig {
                base: 0x1000,
                caps: caps(8192, 64),
                ..RingConfig::default()
            }
            .depth(),
            None
        );
    }
}
