//! The verbs objects the EFA admin commands create and destroy: protection
//! domains, UARs, QPs with their states, CQs, memory regions with their
//! page lists, address handles keyed by GID, and event queues; each in a
//! table bounded by the count the card advertises (`limits`).
//!
//! Every command body goes through a checked parser: a field out of range,
//! a handle that names nothing (or something destroyed), an object of
//! another PD, a ring or page outside guest memory, or an object still in
//! use gets an error status, never a panic.

use tracing::debug;

use super::admin::{Status, layout, qp_state};
use super::limits::*;
use super::regs::layout as bars;
use crate::dma::{Access, GuestDma};
use crate::nitro::admin::{CommandResult, Entry, Refused};

/// A bounded table of objects addressed by slot number.
#[derive(Debug)]
pub struct Table<T> {
    slots: Vec<Option<T>>,
}

impl<T> Table<T> {
    /// A table of at most `max` objects.
    pub fn new(max: u32) -> Self {
        Self {
            slots: (0..max).map(|_| None).collect(),
        }
    }

    /// Stores `value` in the lowest free slot; `None` when full.
    pub fn insert(&mut self, value: T) -> Option<u16> {
        let slot = self.slots.iter().position(Option::is_none)?;
        self.slots[slot] = Some(value);
        Some(slot as u16)
    }

    /// The object in `slot`.
    pub fn get(&self, slot: u32) -> Option<&T> {
        self.slots.get(slot as usize)?.as_ref()
    }

    /// The object in `slot`, mutably.
    pub fn get_mut(&mut self, slot: u32) -> Option<&mut T> {
        self.slots.get_mut(slot as usize)?.as_mut()
    }

    /// Takes the object out of `slot`.
    pub fn remove(&mut self, slot: u32) -> Option<T> {
        self.slots.get_mut(slot as usize)?.take()
    }

    /// Every object with its slot.
    pub fn iter_slots(&self) -> impl Iterator<Item = (u16, &T)> {
        self.slots
            .iter()
            .enumerate()
            .filter_map(|(i, v)| Some((i as u16, v.as_ref()?)))
    }

    /// Every object with its slot, mutably.
    pub fn iter_slots_mut(&mut self) -> impl Iterator<Item = (u16, &mut T)> {
        self.slots
            .iter_mut()
            .enumerate()
            .filter_map(|(i, v)| Some((i as u16, v.as_mut()?)))
    }

    /// Every object.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.slots.iter().flatten()
    }

    /// How many objects exist.
    pub fn count(&self) -> usize {
        self.iter().count()
    }
}

/// A queue pair.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Qp {
    /// The opaque handle the driver names it by.
    pub handle: u32,
    /// Its protection domain.
    pub pd: u16,
    /// Its UAR.
    pub uar: u16,
    /// UD or SRD.
    pub qp_type: u8,
    /// CQ of send completions.
    pub send_cq: u16,
    /// CQ of receive completions.
    pub recv_cq: u16,
    /// SQ depth and LLQ ring size in bytes.
    pub sq_depth: u32,
    /// SQ ring size in bytes (in the LLQ).
    pub sq_ring_size: u32,
    /// RQ ring in guest memory, depth and size in bytes.
    pub rq_base: u64,
    /// RQ depth.
    pub rq_depth: u32,
    /// RQ ring size in bytes.
    pub rq_ring_size: u32,
    /// Service level.
    pub sl: u8,
    /// `enum efa_admin_qp_state`.
    pub state: u32,
    /// Q_Key.
    pub qkey: u32,
    /// SQ packet sequence number.
    pub sq_psn: u32,
    /// RNR retries of an SRD send that finds no receive (7: for ever).
    pub rnr_retry: u8,
    /// Where the data path is in the SQ and RQ.
    pub rings: super::datapath::QpRings,
}

/// A completion queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cq {
    /// Ring base in guest memory.
    pub base: u64,
    /// Entries per sub-CQ.
    pub depth: u16,
    /// Entry size in bytes (16 or 32).
    pub entry_size: u16,
    /// The EQ its events go to (interrupt mode).
    pub eqn: Option<u16>,
    /// Its UAR.
    pub uar: u16,
    /// RX completions carry the source address.
    pub set_src_addr: bool,
    /// Next completion slot the card fills (free-running).
    pub pc: u16,
    /// The command sequence number of the arm request the last event
    /// answered (the CQ doorbell's CMD_SN): the CQ is armed again only by
    /// a request with another number.
    pub fired_sn: Option<u8>,
}

/// A registered memory region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mr {
    /// L_Key (also the R_Key).
    pub l_key: u32,
    /// Its protection domain.
    pub pd: u16,
    /// IO virtual address of the first byte.
    pub iova: u64,
    /// Length in bytes.
    pub length: u64,
    /// log2 of the page size.
    pub page_shift: u8,
    /// Guest-physical address of each page.
    pub pages: Vec<u64>,
    /// `permissions` as registered: local write, remote write, remote
    /// read.
    pub access: u8,
}

/// An address handle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ah {
    /// Its protection domain.
    pub pd: u16,
    /// The destination GID.
    pub gid: [u8; 16],
}

/// An event queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Eq {
    /// Ring base in guest memory.
    pub base: u64,
    /// Entries.
    pub depth: u16,
    /// MSI-X vector.
    pub vector: u8,
    /// Enabled events.
    pub events: u32,
    /// The driver armed the interrupt (`EQ_DB` with ARM).
    pub armed: bool,
    /// Next entry the card fills (free-running).
    pub pc: u16,
    /// An event was written while the EQ was not armed: interrupt when
    /// it is.
    pub pending: bool,
}

/// Every verbs object of a function.
#[derive(Debug)]
pub struct Resources {
    /// Protection domains (no state beyond existing).
    pub pds: Table<()>,
    /// User access regions.
    pub uars: Table<()>,
    /// Queue pairs, by slot (`qp_num - 1`).
    pub qps: Table<Qp>,
    /// Completion queues, by index.
    pub cqs: Table<Cq>,
    /// Memory regions, by slot (`l_key >> 8`).
    pub mrs: Table<Mr>,
    /// Address handles, by number.
    pub ahs: Table<Ah>,
    /// Event queues, by number.
    pub eqs: Table<Eq>,
    /// Bumped per QP and MR, so a stale handle or key names nothing.
    generation: u32,
}

impl Default for Resources {
    fn default() -> Self {
        Self {
            pds: Table::new(MAX_PD),
            uars: Table::new(MAX_UAR),
            qps: Table::new(MAX_QP),
            cqs: Table::new(MAX_CQ),
            mrs: Table::new(MAX_MR),
            ahs: Table::new(MAX_AH),
            eqs: Table::new(MAX_EQ),
            generation: 0,
        }
    }
}

fn illegal(reason: impl Into<String>) -> Refused {
    Refused::illegal(reason)
}

fn no_room(what: &str, max: u32) -> Refused {
    Refused::new(
        Status::ResourceAllocationFailure,
        format!("no free {what} (at most {max})"),
    )
}

fn busy(reason: impl Into<String>) -> Refused {
    Refused::new(Status::ResourceBusy, reason)
}

/// Checks that must-be-zero bits are clear.
fn mbz(value: u64, what: &str) -> Result<(), Refused> {
    if value == 0 {
        Ok(())
    } else {
        Err(illegal(format!("{what} must be zero, is {value:#x}")))
    }
}

fn ring_in_memory(
    dma: &GuestDma,
    base: u64,
    bytes: u64,
    access: Access,
    what: &str,
) -> Result<(), Refused> {
    let len = usize::try_from(bytes).map_err(|_| illegal(format!("{what}: {bytes} bytes")))?;
    dma.check(base, len, access)
        .map_err(|err| illegal(format!("{what} at {base:#x} ({bytes} bytes): {err}")))
}

fn response(fill: impl FnOnce(&mut Entry)) -> CommandResult {
    let mut entry = Entry::default();
    fill(&mut entry);
    Ok(entry)
}

impl Resources {
    fn next_generation(&mut self) -> u32 {
        self.generation = self.generation.wrapping_add(1);
        self.generation
    }

    fn pd_in_use(&self, pd: u16) -> bool {
        self.qps.iter().any(|q| q.pd == pd)
            || self.mrs.iter().any(|m| m.pd == pd)
            || self.ahs.iter().any(|a| a.pd == pd)
    }

    fn check_pd(&self, pd: u16) -> Result<(), Refused> {
        self.pds
            .get(pd.into())
            .map(|_| ())
            .ok_or_else(|| illegal(format!("PD {pd} does not exist")))
    }

    fn check_uar(&self, uar: u16) -> Result<(), Refused> {
        self.uars
            .get(uar.into())
            .map(|_| ())
            .ok_or_else(|| illegal(format!("UAR {uar} does not exist")))
    }

    /// `EFA_ADMIN_ALLOC_PD`.
    pub fn alloc_pd(&mut self) -> CommandResult {
        let pd = self.pds.insert(()).ok_or_else(|| no_room("PD", MAX_PD))?;
        response(|r| r.set_u16(layout::RESP, pd))
    }

    /// `EFA_ADMIN_DEALLOC_PD`.
    pub fn dealloc_pd(&mut self, cmd: &Entry) -> CommandResult {
        let pd = cmd.u16(layout::PAYLOAD);
        mbz(cmd.u16(layout::PAYLOAD + 2).into(), "reserved")?;
        self.check_pd(pd)?;
        if self.pd_in_use(pd) {
            return Err(busy(format!("PD {pd} still has QPs, MRs or AHs")));
        }
        self.pds.remove(pd.into());
        response(|_| {})
    }

    /// `EFA_ADMIN_ALLOC_UAR`.
    pub fn alloc_uar(&mut self) -> CommandResult {
        let uar = self
            .uars
            .insert(())
            .ok_or_else(|| no_room("UAR", MAX_UAR))?;
        response(|r| r.set_u16(layout::RESP, uar))
    }

    /// `EFA_ADMIN_DEALLOC_UAR`.
    pub fn dealloc_uar(&mut self, cmd: &Entry) -> CommandResult {
        let uar = cmd.u16(layout::PAYLOAD);
        mbz(cmd.u16(layout::PAYLOAD + 2).into(), "reserved")?;
        self.check_uar(uar)?;
        if self.qps.iter().any(|q| q.uar == uar) || self.cqs.iter().any(|c| c.uar == uar) {
            return Err(busy(format!("UAR {uar} still has QPs or CQs")));
        }
        self.uars.remove(uar.into());
        response(|_| {})
    }

    /// `EFA_ADMIN_CREATE_EQ`.
    pub fn create_eq(&mut self, cmd: &Entry, dma: &GuestDma, vectors: u16) -> CommandResult {
        use layout::create_eq as f;
        let depth = cmd.u16(f::DEPTH);
        let vector = cmd.u8(f::MSIX_VEC);
        let caps = cmd.u8(f::CAPS);
        let base = cmd.u64(f::BA);
        let events = cmd.u32(f::EVENT_BITMASK);
        mbz(
            (caps & !f::CAPS_ENTRY_SIZE_WORDS).into(),
            "create_eq caps reserved bits",
        )?;
        mbz((events & !EQ_EVENTS).into(), "unsupported event bits")?;
        mbz(cmd.u32(f::RESERVED).into(), "reserved")?;
        let words = caps & f::CAPS_ENTRY_SIZE_WORDS;
        if usize::from(words) * 4 != EQE_SIZE {
            return Err(illegal(format!(
                "EQ entry of {words} words (the card writes 4)"
            )));
        }
        if !depth.is_power_of_two() || u32::from(depth) > MAX_EQ_DEPTH {
            return Err(illegal(format!(
                "EQ depth {depth}: a power of two up to {MAX_EQ_DEPTH}"
            )));
        }
        if vector == 0 || u16::from(vector) >= vectors {
            return Err(illegal(format!(
                "EQ vector {vector}: 1..{vectors} (0 is the management vector)"
            )));
        }
        let bytes = u64::from(depth) * EQE_SIZE as u64;
        ring_in_memory(dma, base, bytes, Access::Write, "EQ ring")?;
        let eq = Eq {
            base,
            depth,
            vector,
            events,
            armed: false,
            pc: 0,
            pending: false,
        };
        let eqn = self.eqs.insert(eq).ok_or_else(|| no_room("EQ", MAX_EQ))?;
        debug!(eqn, depth, vector, "EQ created");
        response(|r| r.set_u16(layout::RESP, eqn))
    }

    /// `EFA_ADMIN_DESTROY_EQ`.
    pub fn destroy_eq(&mut self, cmd: &Entry) -> CommandResult {
        let eqn = cmd.u16(layout::PAYLOAD);
        mbz(cmd.u16(layout::PAYLOAD + 2).into(), "reserved")?;
        if self.eqs.get(eqn.into()).is_none() {
            return Err(illegal(format!("EQ {eqn} does not exist")));
        }
        if self.cqs.iter().any(|c| c.eqn == Some(eqn)) {
            return Err(busy(format!("EQ {eqn} still serves CQs")));
        }
        self.eqs.remove(eqn.into());
        response(|_| {})
    }

    /// `EFA_ADMIN_CREATE_CQ`.
    pub fn create_cq(&mut self, cmd: &Entry, dma: &GuestDma) -> CommandResult {
        use layout::create_cq as f;
        let caps1 = cmd.u8(f::CAPS_1);
        let caps2 = cmd.u8(f::CAPS_2);
        let depth = cmd.u16(f::SUB_CQ_DEPTH);
        let eqn = cmd.u16(f::EQN);
        let base = cmd.u64(f::CQ_BA);
        let sub_cqs = cmd.u16(f::NUM_SUB_CQS);
        let uar = cmd.u16(f::UAR);
        mbz(
            (caps1 & !f::CAPS_1_INTERRUPT_MODE).into(),
            "cq_caps_1 (virtual rings are not supported)",
        )?;
        mbz(
            (caps2 & !(f::CAPS_2_ENTRY_SIZE_WORDS | f::CAPS_2_SET_SRC_ADDR)).into(),
            "cq_caps_2 (64-bit request ids are not supported)",
        )?;
        mbz(cmd.u16(f::RESERVED).into(), "reserved")?;
        self.check_uar(uar)?;
        let words = caps2 & f::CAPS_2_ENTRY_SIZE_WORDS;
        let set_src_addr = caps2 & f::CAPS_2_SET_SRC_ADDR != 0;
        if !(words == 8 || (words == 4 && !set_src_addr)) {
            return Err(illegal(format!(
                "CQ entry of {words} words (4 or 8; 8 with the source address)"
            )));
        }
        if !depth.is_power_of_two() || u32::from(depth) > MAX_CQ_DEPTH {
            return Err(illegal(format!(
                "CQ depth {depth}: a power of two up to {MAX_CQ_DEPTH}"
            )));
        }
        if u32::from(sub_cqs) != SUB_CQS_PER_CQ {
            return Err(illegal(format!(
                "{sub_cqs} sub-CQs (the card has {SUB_CQS_PER_CQ})"
            )));
        }
        let eqn = if caps1 & f::CAPS_1_INTERRUPT_MODE != 0 {
            if self.eqs.get(eqn.into()).is_none() {
                return Err(illegal(format!("EQ {eqn} does not exist")));
            }
            Some(eqn)
        } else {
            mbz(eqn.into(), "eqn without interrupt mode")?;
            None
        };
        let entry_size = u16::from(words) * 4;
        let bytes = u64::from(depth) * u64::from(entry_size) * u64::from(sub_cqs);
        ring_in_memory(dma, base, bytes, Access::Write, "CQ ring")?;
        let cq = Cq {
            base,
            depth,
            entry_size,
            eqn,
            uar,
            set_src_addr,
            pc: 0,
            fired_sn: None,
        };
        let idx = self.cqs.insert(cq).ok_or_else(|| no_room("CQ", MAX_CQ))?;
        debug!(idx, depth, entry_size, ?eqn, "CQ created");
        response(|r| {
            r.set_u16(f::RESP_IDX, idx);
            r.set_u16(f::RESP_DEPTH, depth);
            r.set_u32(f::RESP_DB, bars::cq_db(uar, idx) as u32);
            r.set_u32(f::RESP_FLAGS, f::RESP_DB_VALID);
        })
    }

    /// `EFA_ADMIN_DESTROY_CQ`.
    pub fn destroy_cq(&mut self, cmd: &Entry) -> CommandResult {
        let idx = cmd.u16(layout::PAYLOAD);
        mbz(cmd.u16(layout::PAYLOAD + 2).into(), "reserved")?;
        if self.cqs.get(idx.into()).is_none() {
            return Err(illegal(format!("CQ {idx} does not exist")));
        }
        if self
            .qps
            .iter()
            .any(|q| q.send_cq == idx || q.recv_cq == idx)
        {
            return Err(busy(format!("CQ {idx} still serves QPs")));
        }
        self.cqs.remove(idx.into());
        response(|_| {})
    }

    /// `EFA_ADMIN_CREATE_QP`.
    pub fn create_qp(&mut self, cmd: &Entry, dma: &GuestDma) -> CommandResult {
        use layout::create_qp as f;
        let pd = cmd.u16(f::PD);
        let qp_type = cmd.u8(f::QP_TYPE);
        let flags = cmd.u8(f::FLAGS);
        let sq_ring_size = cmd.u32(f::SQ_RING_SIZE);
        let sq_depth = cmd.u32(f::SQ_DEPTH);
        let rq_ring_size = cmd.u32(f::RQ_RING_SIZE);
        let rq_depth = cmd.u32(f::RQ_DEPTH);
        let rq_base = cmd.u64(f::RQ_BASE);
        let (send_cq, recv_cq) = (cmd.u32(f::SEND_CQ), cmd.u32(f::RECV_CQ));
        let uar = cmd.u16(f::UAR);
        mbz(
            flags.into(),
            "create_qp flags (virtual rings, unsolicited write, 64-bit ids are not supported)",
        )?;
        mbz(
            u64::from(cmd.u8(f::RESERVED)) | u64::from(cmd.u32(f::RESERVED2)),
            "reserved",
        )?;
        mbz(
            cmd.u64(f::SQ_BASE),
            "sq_base_addr (the SQ lives in the LLQ)",
        )?;
        mbz(
            u64::from(cmd.u32(f::SQ_L_KEY)) | u64::from(cmd.u32(f::RQ_L_KEY)),
            "ring l_keys (physical rings only)",
        )?;
        self.check_pd(pd)?;
        self.check_uar(uar)?;
        if qp_type != f::TYPE_UD && qp_type != f::TYPE_SRD {
            return Err(illegal(format!("QP type {qp_type} (1 UD or 2 SRD)")));
        }
        for (what, cq) in [("send", send_cq), ("receive", recv_cq)] {
            if self.cqs.get(cq).is_none() {
                return Err(illegal(format!("{what} CQ {cq} does not exist")));
            }
        }
        if sq_depth == 0 || sq_depth > MAX_SQ_DEPTH {
            return Err(illegal(format!("SQ depth {sq_depth}: 1..={MAX_SQ_DEPTH}")));
        }
        if sq_ring_size == 0 || sq_ring_size > MAX_LLQ_SIZE {
            return Err(illegal(format!(
                "SQ ring of {sq_ring_size} bytes: 1..={MAX_LLQ_SIZE}"
            )));
        }
        if rq_depth > MAX_RQ_DEPTH {
            return Err(illegal(format!(
                "RQ depth {rq_depth}: at most {MAX_RQ_DEPTH}"
            )));
        }
        if rq_depth == 0 {
            mbz(
                u64::from(rq_ring_size) | rq_base,
                "RQ ring without RQ depth",
            )?;
        } else {
            if rq_ring_size == 0 || rq_ring_size > MAX_RQ_DEPTH * RQ_DESC_SIZE {
                return Err(illegal(format!("RQ ring of {rq_ring_size} bytes")));
            }
            ring_in_memory(dma, rq_base, rq_ring_size.into(), Access::Read, "RQ ring")?;
        }
        let generation = self.next_generation() & 0xffff;
        let qp = Qp {
            handle: 0,
            pd,
            uar,
            qp_type,
            send_cq: send_cq as u16,
            recv_cq: recv_cq as u16,
            sq_depth,
            sq_ring_size,
            rq_base,
            rq_depth,
            rq_ring_size,
            sl: cmd.u8(f::SL),
            state: qp_state::RESET,
            qkey: 0,
            sq_psn: 0,
            rnr_retry: 0,
            rings: Default::default(),
        };
        let slot = self.qps.insert(qp).ok_or_else(|| no_room("QP", MAX_QP))?;
        let handle = (generation.max(1) << 16) | u32::from(slot);
        if let Some(qp) = self.qps.get_mut(slot.into()) {
            qp.handle = handle;
        }
        debug!(slot, handle, qp_type, sq_depth, rq_depth, "QP created");
        response(|r| {
            r.set_u32(f::RESP_HANDLE, handle);
            r.set_u16(f::RESP_QP_NUM, slot + 1);
            r.set_u16(f::RESP_SEND_SUB_CQ, 0);
            r.set_u16(f::RESP_RECV_SUB_CQ, 0);
            r.set_u32(f::RESP_SQ_DB, bars::sq_db(uar, slot) as u32);
            r.set_u32(f::RESP_RQ_DB, bars::rq_db(uar, slot) as u32);
            r.set_u32(f::RESP_LLQ, bars::llq(slot) as u32);
        })
    }

    fn qp_by_handle(&mut self, handle: u32) -> Result<&mut Qp, Refused> {
        self.qps
            .get_mut(handle & 0xffff)
            .filter(|qp| qp.handle == handle)
            .ok_or_else(|| illegal(format!("QP handle {handle:#x} names no QP")))
    }

    /// `EFA_ADMIN_MODIFY_QP`.
    pub fn modify_qp(&mut self, cmd: &Entry) -> CommandResult {
        use layout::modify_qp as f;
        let mask = cmd.u32(f::MASK);
        let (state, cur_state) = (cmd.u32(f::STATE), cmd.u32(f::CUR_STATE));
        mbz(
            (mask & !f::MASK_SUPPORTED).into(),
            "modify mask (SQ-drained notification is not supported)",
        )?;
        mbz(cmd.u16(f::RESERVED2).into(), "reserved")?;
        let rnr_retry = cmd.u8(f::RNR_RETRY);
        if mask & f::MASK_RNR_RETRY != 0 && rnr_retry > f::RNR_RETRY_INFINITE {
            return Err(illegal(format!(
                "RNR retry count {rnr_retry}: 0..=7 (7: for ever)"
            )));
        }
        let qp = self.qp_by_handle(cmd.u32(f::HANDLE))?;
        if mask & f::MASK_CUR_STATE != 0 && cur_state != qp.state {
            return Err(illegal(format!(
                "current state {cur_state} given, the QP is in {}",
                qp.state
            )));
        }
        if mask & f::MASK_STATE != 0 && !qp_state::transition_allowed(qp.state, state) {
            return Err(illegal(format!("QP state {} -> {state}", qp.state)));
        }
        if mask & f::MASK_STATE != 0 {
            qp.state = state;
        }
        if mask & f::MASK_QKEY != 0 {
            qp.qkey = cmd.u32(f::QKEY);
        }
        if mask & f::MASK_SQ_PSN != 0 {
            qp.sq_psn = cmd.u32(f::SQ_PSN);
        }
        if mask & f::MASK_RNR_RETRY != 0 {
            qp.rnr_retry = rnr_retry;
        }
        debug!(handle = qp.handle, state = qp.state, "QP modified");
        response(|_| {})
    }

    /// `EFA_ADMIN_QUERY_QP`.
    pub fn query_qp(&mut self, cmd: &Entry) -> CommandResult {
        let qp = self.qp_by_handle(cmd.u32(layout::PAYLOAD))?.clone();
        response(|r| {
            r.set_u32(layout::RESP, qp.state);
            r.set_u32(layout::RESP + 4, qp.qkey);
            r.set_u32(layout::RESP + 8, qp.sq_psn);
            r.set_u8(layout::RESP + 13, qp.rnr_retry);
        })
    }

    /// `EFA_ADMIN_DESTROY_QP`.
    pub fn destroy_qp(&mut self, cmd: &Entry) -> CommandResult {
        let handle = cmd.u32(layout::PAYLOAD);
        self.qp_by_handle(handle)?;
        self.qps.remove(handle & 0xffff);
        response(|_| {})
    }

    /// `EFA_ADMIN_CREATE_AH`: one per destination GID and PD.
    pub fn create_ah(&mut self, cmd: &Entry) -> CommandResult {
        use layout::create_ah as f;
        let mut gid = [0u8; 16];
        for (i, byte) in gid.iter_mut().enumerate() {
            *byte = cmd.u8(f::DEST_ADDR + i);
        }
        let pd = cmd.u16(f::PD);
        mbz(cmd.u16(f::RESERVED).into(), "reserved")?;
        self.check_pd(pd)?;
        if self.ahs.iter().any(|ah| ah.pd == pd && ah.gid == gid) {
            return Err(illegal(format!(
                "an AH for this destination already exists in PD {pd}"
            )));
        }
        let ah = self
            .ahs
            .insert(Ah { pd, gid })
            .ok_or_else(|| no_room("AH", MAX_AH))?;
        response(|r| r.set_u16(layout::RESP, ah))
    }

    /// `EFA_ADMIN_DESTROY_AH`.
    pub fn destroy_ah(&mut self, cmd: &Entry) -> CommandResult {
        let ah = cmd.u16(layout::PAYLOAD);
        let pd = cmd.u16(layout::PAYLOAD + 2);
        match self.ahs.get(ah.into()) {
            None => return Err(illegal(format!("AH {ah} does not exist"))),
            Some(found) if found.pd != pd => {
                return Err(illegal(format!(
                    "AH {ah} belongs to PD {}, not {pd}",
                    found.pd
                )));
            }
            Some(_) => {}
        }
        self.ahs.remove(ah.into());
        response(|_| {})
    }

    /// `EFA_ADMIN_REG_MR`.
    pub fn reg_mr(&mut self, cmd: &Entry, flags: u8, dma: &GuestDma) -> CommandResult {
        use layout::reg_mr as f;
        let pd = cmd.u16(f::PD);
        let length = cmd.u64(f::MR_LENGTH);
        let mr_flags = cmd.u8(f::FLAGS);
        let access = cmd.u8(f::PERMISSIONS);
        let page_num = cmd.u32(f::PAGE_NUM);
        let iova = cmd.u64(f::IOVA);
        mbz(
            u64::from(cmd.u16(f::RESERVED1)) | u64::from(cmd.u16(f::RESERVED5)),
            "reserved",
        )?;
        mbz(
            (mr_flags & !f::FLAGS_PAGE_SHIFT).into(),
            "MR flags (physical mode is not supported)",
        )?;
        mbz(
            (access & !(f::ACCESS_LOCAL_WRITE | f::ACCESS_REMOTE_WRITE | f::ACCESS_REMOTE_READ))
                .into(),
            "MR permissions",
        )?;
        self.check_pd(pd)?;
        let page_shift = mr_flags & f::FLAGS_PAGE_SHIFT;
        if page_shift >= 64 || PAGE_SIZE_CAP & (1u64 << page_shift) == 0 {
            return Err(illegal(format!(
                "page size 2^{page_shift} not in {PAGE_SIZE_CAP:#x}"
            )));
        }
        // efa.ko leaves `page_num` ("redundant, could be calculated") at
        // zero: the count follows from the IOVA, length and page size; a
        // non-zero count must agree with it.
        let page_size = 1u64 << page_shift;
        let first = iova & !(page_size - 1);
        let spanned = iova
            .checked_add(length)
            .and_then(|end| end.checked_add(page_size - 1))
            .map(|end| (end & !(page_size - 1)).wrapping_sub(first) >> page_shift);
        let count = match spanned {
            Some(n) if length > 0 && (page_num == 0 || u64::from(page_num) == n) => n,
            _ => {
                return Err(illegal(format!(
                    "{length} bytes at IOVA {iova:#x} in pages of {page_size} (page_num {page_num})"
                )));
            }
        };
        if count > u64::from(MAX_MR_PAGES) {
            return Err(illegal(format!("{count} pages: at most {MAX_MR_PAGES}")));
        }
        let page_num = count as u32;
        let total: usize = self.mrs.iter().map(|m| m.pages.len()).sum();
        if total + page_num as usize > MAX_TOTAL_MR_PAGES {
            return Err(no_room("MR pages", MAX_TOTAL_MR_PAGES as u32));
        }
        let pages = super::pbl::read(cmd, flags, page_num, dma)?;
        for (i, &page) in pages.iter().enumerate() {
            if page & (page_size - 1) != 0 {
                return Err(illegal(format!(
                    "page {i} at {page:#x} is not aligned to {page_size}"
                )));
            }
            ring_in_memory(dma, page, page_size, Access::Read, &format!("MR page {i}"))?;
        }
        let generation = self.next_generation() & 0xff;
        let mr = Mr {
            l_key: 0,
            pd,
            iova,
            length,
            page_shift,
            pages,
            access,
        };
        let slot = self.mrs.insert(mr).ok_or_else(|| no_room("MR", MAX_MR))?;
        let l_key = (u32::from(slot) << 8) | generation;
        if let Some(mr) = self.mrs.get_mut(slot.into()) {
            mr.l_key = l_key;
        }
        debug!(l_key, page_num, page_shift, "MR registered");
        response(|r| {
            r.set_u32(layout::RESP, l_key);
            r.set_u32(layout::RESP + 4, l_key);
        })
    }

    /// `EFA_ADMIN_DEREG_MR`.
    pub fn dereg_mr(&mut self, cmd: &Entry) -> CommandResult {
        let l_key = cmd.u32(layout::PAYLOAD);
        let slot = l_key >> 8;
        if self.mrs.get(slot).is_none_or(|mr| mr.l_key != l_key) {
            return Err(illegal(format!("L_Key {l_key:#x} names no MR")));
        }
        self.mrs.remove(slot);
        response(|_| {})
    }

    /// `EQ_DB`: arms (or disarms) event queue `eqn`; returns whether it
    /// exists, and the vector to interrupt now for an event written while
    /// it was not armed.
    pub fn arm_eq(&mut self, eqn: u16, arm: bool) -> (bool, Option<u8>) {
        match self.eqs.get_mut(eqn.into()) {
            Some(eq) => {
                eq.armed = arm;
                let fire = arm && std::mem::take(&mut eq.pending);
                if fire {
                    eq.armed = false;
                }
                (true, fire.then_some(eq.vector))
            }
            None => (false, None),
        }
    }
}
