//! I/O submission and completion queues as resources: CREATE_SQ,
//! DESTROY_SQ, CREATE_CQ and DESTROY_CQ validate and record them and hand
//! out their doorbell and interrupt-unmask registers in BAR0's mapped
//! doorbell pages and, for device-placed (LLQ) TX queues, their slice of
//! BAR2. Moving packets is the data path's job, not done here.

use tracing::debug;

use super::admin::{CommandResult, Entry, Refused, Status, acq};
use super::datapath::BRAID_DOORBELL_UNMASK;
use super::features::LlqConfig;
use crate::dma::{Access, GuestDma};
use crate::function::layout;

/// I/O queue pairs (one MSI-X vector each, after the admin vector).
pub const MAX_IO_QUEUES: u16 = 8;
/// Completion queues: one per TX and one per RX queue.
pub const MAX_CQS: u16 = 2 * MAX_IO_QUEUES;
/// Deepest SQ or CQ.
pub const MAX_QUEUE_DEPTH: u16 = 1024;
/// Size of a TX or RX submission descriptor (`ena_eth_io_tx_desc`,
/// `ena_eth_io_rx_desc`).
pub const SQ_DESC_SIZE: u64 = 16;

/// SQ doorbells: TX queue `i` at `SQ_DOORBELLS + 4 * i`, RX queue `i`
/// at `SQ_DOORBELLS + RX_SQ_DOORBELLS + 4 * i`.
pub const SQ_DOORBELLS: u32 = layout::DOORBELL_OFFSET as u32;
/// Offset of the RX SQ doorbells after the TX ones.
pub const RX_SQ_DOORBELLS: u32 = 0x200;
/// CQ interrupt-unmask registers: CQ `i` at `CQ_UNMASK + 4 * i`.
pub const CQ_UNMASK: u32 = SQ_DOORBELLS + 0x1000;
/// CQ head doorbells: CQ `i` at `CQ_HEAD_DOORBELLS + 4 * i`.
pub const CQ_HEAD_DOORBELLS: u32 = CQ_UNMASK + 0x800;
const REGISTER_STRIDE: u32 = 4;

const _: () = {
    assert!((CQ_HEAD_DOORBELLS + MAX_CQS as u32 * REGISTER_STRIDE) as u64 <= layout::BAR0_SIZE);
    assert!(RX_SQ_DOORBELLS >= MAX_IO_QUEUES as u32 * REGISTER_STRIDE);
};

/// BAR0 offset of the doorbell of SQ `idx` of `direction`.
pub fn sq_doorbell(direction: Direction, idx: u16) -> u32 {
    SQ_DOORBELLS
        + match direction {
            Direction::Tx => 0,
            Direction::Rx => RX_SQ_DOORBELLS,
        }
        + u32::from(idx) * REGISTER_STRIDE
}

/// BAR0 offset of the interrupt-unmask register of CQ `idx`.
pub fn cq_unmask(idx: u16) -> u32 {
    CQ_UNMASK + u32::from(idx) * REGISTER_STRIDE
}

/// BAR0 offset of the head doorbell of CQ `idx`.
pub fn cq_head_doorbell(idx: u16) -> u32 {
    CQ_HEAD_DOORBELLS + u32::from(idx) * REGISTER_STRIDE
}

/// `ena_admin_aq_create_cq_cmd` / `ena_admin_acq_create_cq_resp_desc`.
mod create_cq {
    pub const CAPS_1: usize = 4;
    pub const CAPS_2: usize = 5;
    pub const DEPTH: usize = 6;
    pub const MSIX_VECTOR: usize = 8;
    pub const BASE: usize = 12;
    /// `INTERRUPT_MODE_ENABLED` in `cq_caps_1`.
    pub const INTERRUPT_MODE: u8 = 1 << 5;
    /// `cq_caps_1` bits ENA reserves (4:0 and 6), which must be zero; bit 7
    /// selects braid's combined doorbell.
    pub const RESERVED: u8 = 0x5f;
    /// `CQ_ENTRY_SIZE_WORDS` in `cq_caps_2`.
    pub const ENTRY_SIZE_WORDS_MASK: u8 = 0x1f;
    pub const RESP_CQ_IDX: usize = super::acq::BODY;
    pub const RESP_ACTUAL_DEPTH: usize = super::acq::BODY + 2;
    pub const RESP_NUMA_OFFSET: usize = super::acq::BODY + 4;
    pub const RESP_HEAD_DB_OFFSET: usize = super::acq::BODY + 8;
    pub const RESP_UNMASK_OFFSET: usize = super::acq::BODY + 12;
}

/// `ena_admin_aq_create_sq_cmd` / `ena_admin_acq_create_sq_resp_desc`.
mod create_sq {
    pub const IDENTITY: usize = 4;
    pub const CAPS_2: usize = 6;
    pub const CQ_IDX: usize = 8;
    pub const DEPTH: usize = 10;
    pub const BASE: usize = 12;
    /// `PLACEMENT_POLICY` in `sq_caps_2`.
    pub const PLACEMENT_MASK: u8 = 0x0f;
    /// `COMPLETION_POLICY` in `sq_caps_2`.
    pub const COMPLETION_POLICY_SHIFT: u8 = 4;
    pub const COMPLETION_POLICY_MASK: u8 = 0x7;
    pub const RESP_SQ_IDX: usize = super::acq::BODY;
    pub const RESP_DOORBELL_OFFSET: usize = super::acq::BODY + 4;
    pub const RESP_LLQ_DESCRIPTORS_OFFSET: usize = super::acq::BODY + 8;
}

/// `ena_admin_aq_destroy_sq_cmd` / `ena_admin_aq_destroy_cq_cmd`.
mod destroy {
    pub const SQ_IDX: usize = 4;
    pub const SQ_IDENTITY: usize = 6;
    pub const CQ_IDX: usize = 4;
}

/// `SQ_DIRECTION` in `sq_identity` (bits 7:5).
const DIRECTION_SHIFT: u8 = 5;
const DIRECTION_MASK: u8 = 0x7;
/// `ENA_ADMIN_PLACEMENT_POLICY_HOST`.
const PLACEMENT_HOST: u8 = 1;
/// `ENA_ADMIN_PLACEMENT_POLICY_DEV`.
const PLACEMENT_DEV: u8 = 3;
/// `ENA_ADMIN_COMPLETION_POLICY_DESC`.
const COMPLETION_POLICY_DESC: u8 = 0;

/// Direction of a submission queue (`enum ena_admin_sq_direction`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// `ENA_ADMIN_SQ_DIRECTION_TX`.
    Tx,
    /// `ENA_ADMIN_SQ_DIRECTION_RX`.
    Rx,
}

impl Direction {
    /// The direction an `sq_identity` byte names.
    pub fn from_identity(identity: u8) -> Result<Self, Refused> {
        match (identity >> DIRECTION_SHIFT) & DIRECTION_MASK {
            1 => Ok(Direction::Tx),
            2 => Ok(Direction::Rx),
            other => Err(Refused::illegal(format!("SQ direction {other}"))),
        }
    }
}

/// Where a submission queue's descriptors live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    /// In guest memory at this address.
    Host(u64),
    /// In BAR2 (LLQ) at this offset.
    Device(u32),
}

/// A created completion queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IoCq {
    /// Entries.
    pub depth: u16,
    /// Bytes per completion descriptor.
    pub entry_size: u16,
    /// Interrupt vector, if interrupts are enabled.
    pub msix_vector: Option<u16>,
    /// Guest address of the ring.
    pub base: u64,
    /// The SQ completing into it.
    pub sq: Option<(Direction, u16)>,
    /// Its head doorbell takes braid's combined head + unmask writes
    /// ([`super::datapath::combined`]).
    pub combined_doorbell: bool,
}

/// A created submission queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IoSq {
    /// Entries.
    pub depth: u16,
    /// Descriptor placement.
    pub placement: Placement,
    /// Its completion queue.
    pub cq: u16,
}

/// Every I/O queue of the function.
#[derive(Debug, Clone)]
pub struct IoQueues {
    cqs: Vec<Option<IoCq>>,
    tx: Vec<Option<IoSq>>,
    rx: Vec<Option<IoSq>>,
}

impl Default for IoQueues {
    fn default() -> Self {
        Self {
            cqs: vec![None; MAX_CQS.into()],
            tx: vec![None; MAX_IO_QUEUES.into()],
            rx: vec![None; MAX_IO_QUEUES.into()],
        }
    }
}

fn check_depth(depth: u16) -> Result<(), Refused> {
    if depth.is_power_of_two() && depth <= MAX_QUEUE_DEPTH {
        Ok(())
    } else {
        Err(Refused::illegal(format!(
            "queue depth {depth} is not a power of two up to {MAX_QUEUE_DEPTH}"
        )))
    }
}

impl IoQueues {
    /// The created queues of `direction`.
    fn sqs(&self, direction: Direction) -> &[Option<IoSq>] {
        match direction {
            Direction::Tx => &self.tx,
            Direction::Rx => &self.rx,
        }
    }

    fn sqs_mut(&mut self, direction: Direction) -> &mut Vec<Option<IoSq>> {
        match direction {
            Direction::Tx => &mut self.tx,
            Direction::Rx => &mut self.rx,
        }
    }

    /// The SQ `idx` of `direction`, if created.
    pub fn sq(&self, direction: Direction, idx: u16) -> Option<&IoSq> {
        self.sqs(direction).get(usize::from(idx))?.as_ref()
    }

    /// The CQ `idx`, if created.
    pub fn cq(&self, idx: u16) -> Option<&IoCq> {
        self.cqs.get(usize::from(idx))?.as_ref()
    }

    /// Number of created SQs and CQs.
    pub fn count(&self) -> usize {
        let sqs = self.tx.iter().chain(&self.rx).flatten().count();
        sqs + self.cqs.iter().flatten().count()
    }

    /// CREATE_CQ.
    pub fn create_cq(&mut self, cmd: &Entry, dma: &GuestDma, msix_vectors: u16) -> CommandResult {
        let depth = cmd.u16(create_cq::DEPTH);
        check_depth(depth)?;
        let words = cmd.u8(create_cq::CAPS_2) & create_cq::ENTRY_SIZE_WORDS_MASK;
        if !(2..=8).contains(&words) || !words.is_power_of_two() {
            return Err(Refused::illegal(format!("CQ entry size of {words} words")));
        }
        let entry_size = u16::from(words) * 4;
        let caps_1 = cmd.u8(create_cq::CAPS_1);
        if caps_1 & create_cq::RESERVED != 0 {
            return Err(Refused::illegal(format!(
                "CQ caps {caps_1:#x} set reserved bits"
            )));
        }
        let combined_doorbell = caps_1 & BRAID_DOORBELL_UNMASK != 0;
        let msix_vector = if caps_1 & create_cq::INTERRUPT_MODE != 0 {
            let vector = cmd.u32(create_cq::MSIX_VECTOR);
            // Vector 0 belongs to the admin queue and the AENQ.
            if vector == 0 || vector >= u32::from(msix_vectors) {
                return Err(Refused::illegal(format!(
                    "CQ MSI-X vector {vector} (I/O vectors are 1..={})",
                    msix_vectors - 1
                )));
            }
            Some(vector as u16)
        } else {
            None
        };
        let base = cmd.mem_addr(create_cq::BASE);
        let len = usize::from(depth) * usize::from(entry_size);
        if base == 0 {
            return Err(Refused::malformed("CQ ring address is 0"));
        }
        dma.check(base, len, Access::Write)
            .map_err(|err| Refused::dma("CQ ring", &err))?;
        let idx =
            self.cqs.iter().position(Option::is_none).ok_or_else(|| {
                Refused::new(Status::ResourceAllocationFailure, "every CQ is in use")
            })?;
        self.cqs[idx] = Some(IoCq {
            depth,
            entry_size,
            msix_vector,
            base,
            sq: None,
            combined_doorbell,
        });
        let idx = idx as u16;
        debug!(
            cq = idx,
            depth,
            entry_size,
            ?msix_vector,
            combined_doorbell,
            base = format_args!("{base:#x}"),
            "CQ created"
        );
        let mut resp = Entry::default();
        resp.set_u16(create_cq::RESP_CQ_IDX, idx);
        resp.set_u16(create_cq::RESP_ACTUAL_DEPTH, depth);
        resp.set_u32(create_cq::RESP_NUMA_OFFSET, 0);
        resp.set_u32(create_cq::RESP_HEAD_DB_OFFSET, cq_head_doorbell(idx));
        resp.set_u32(create_cq::RESP_UNMASK_OFFSET, cq_unmask(idx));
        Ok(resp)
    }

    /// DESTROY_CQ.
    pub fn destroy_cq(&mut self, cmd: &Entry) -> CommandResult {
        let idx = cmd.u16(destroy::CQ_IDX);
        let slot = self
            .cqs
            .get_mut(usize::from(idx))
            .filter(|slot| slot.is_some())
            .ok_or_else(|| Refused::illegal(format!("CQ {idx} does not exist")))?;
        if let Some((direction, sq)) = slot.as_ref().and_then(|cq| cq.sq) {
            return Err(Refused::new(
                Status::ResourceBusy,
                format!("CQ {idx} still serves {direction:?} SQ {sq}"),
            ));
        }
        *slot = None;
        debug!(cq = idx, "CQ destroyed");
        Ok(Entry::default())
    }

    /// CREATE_SQ.
    pub fn create_sq(&mut self, cmd: &Entry, dma: &GuestDma, llq: &LlqConfig) -> CommandResult {
        let direction = Direction::from_identity(cmd.u8(create_sq::IDENTITY))?;
        let depth = cmd.u16(create_sq::DEPTH);
        check_depth(depth)?;
        let caps = cmd.u8(create_sq::CAPS_2);
        let policy =
            (caps >> create_sq::COMPLETION_POLICY_SHIFT) & create_sq::COMPLETION_POLICY_MASK;
        if policy != COMPLETION_POLICY_DESC {
            return Err(Refused::illegal(format!(
                "completion policy {policy} (only per-descriptor completions are implemented)"
            )));
        }
        let cq_idx = cmd.u16(create_sq::CQ_IDX);
        match self.cq(cq_idx) {
            None => return Err(Refused::illegal(format!("CQ {cq_idx} does not exist"))),
            Some(IoCq {
                sq: Some((d, s)), ..
            }) => {
                return Err(Refused::new(
                    Status::ResourceBusy,
                    format!("CQ {cq_idx} already serves {d:?} SQ {s}"),
                ));
            }
            Some(_) => {}
        }
        let idx = self
            .sqs(direction)
            .iter()
            .position(Option::is_none)
            .ok_or_else(|| {
                Refused::new(
                    Status::ResourceAllocationFailure,
                    format!("every {direction:?} SQ is in use"),
                )
            })? as u16;
        let placement = match caps & create_sq::PLACEMENT_MASK {
            PLACEMENT_HOST => {
                let base = cmd.mem_addr(create_sq::BASE);
                if base == 0 {
                    return Err(Refused::malformed("SQ ring address is 0"));
                }
                let len = usize::from(depth) * SQ_DESC_SIZE as usize;
                dma.check(base, len, Access::Read)
                    .map_err(|err| Refused::dma("SQ ring", &err))?;
                Placement::Host(base)
            }
            PLACEMENT_DEV if direction == Direction::Tx => {
                if depth > llq.max_depth() {
                    return Err(Refused::illegal(format!(
                        "LLQ depth {depth} exceeds {}",
                        llq.max_depth()
                    )));
                }
                Placement::Device(llq.queue_offset(idx))
            }
            PLACEMENT_DEV => {
                return Err(Refused::illegal("device placement is for TX queues only"));
            }
            other => return Err(Refused::illegal(format!("placement policy {other}"))),
        };
        self.sqs_mut(direction)[usize::from(idx)] = Some(IoSq {
            depth,
            placement,
            cq: cq_idx,
        });
        if let Some(Some(cq)) = self.cqs.get_mut(usize::from(cq_idx)) {
            cq.sq = Some((direction, idx));
        }
        debug!(
            ?direction,
            sq = idx,
            cq = cq_idx,
            depth,
            ?placement,
            "SQ created"
        );
        let doorbell = sq_doorbell(direction, idx);
        let mut resp = Entry::default();
        resp.set_u16(create_sq::RESP_SQ_IDX, idx);
        resp.set_u32(create_sq::RESP_DOORBELL_OFFSET, doorbell);
        if let Placement::Device(offset) = placement {
            resp.set_u32(create_sq::RESP_LLQ_DESCRIPTORS_OFFSET, offset);
        }
        Ok(resp)
    }

    /// DESTROY_SQ.
    pub fn destroy_sq(&mut self, cmd: &Entry) -> CommandResult {
        let direction = Direction::from_identity(cmd.u8(destroy::SQ_IDENTITY))?;
        let idx = cmd.u16(destroy::SQ_IDX);
        let sq = self
            .sqs_mut(direction)
            .get_mut(usize::from(idx))
            .and_then(Option::take)
            .ok_or_else(|| Refused::illegal(format!("{direction:?} SQ {idx} does not exist")))?;
        if let Some(Some(cq)) = self.cqs.get_mut(usize::from(sq.cq)) {
            cq.sq = None;
        }
        debug!(?direction, sq = idx, "SQ destroyed");
        Ok(Entry::default())
    }
}
