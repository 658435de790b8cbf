//! The EFA data path within one function: UD and SRD sends from a QP's
//! LLQ delivered to a QP of the same function (the card has no fabric
//! port yet), as libefa drives it (`providers/efa/verbs.c`) with the
//! layouts of `efa_io_defs.h`:
//!
//! * the SQ is a ring of 64-byte `efa_io_tx_wqe` in the QP's LLQ slot of
//!   BAR2; the SQ doorbell carries libefa's free-running producer counter;
//! * the RQ is a ring of 16-byte `efa_io_rx_desc` in guest memory; its
//!   doorbell carries the producer counter of posted descriptors;
//! * each completion is an `efa_io_tx_cdesc` or `efa_io_rx_cdesc(_ex)` in
//!   the CQ ring, phase bit (1 on the first pass) written last.
//!
//! Buffers are named by L_Key and IOVA and go through the MR's page list;
//! every guest access is checked. A UD send to another GID, to a QP that
//! does not exist or is not ready, with a wrong Q_Key or with no receive
//! posted is dropped (counted) and still completes on the sender; an SRD
//! sender gets BAD_DEST_QPN or RNR instead (there is no retry: within one
//! function the outcome is known at once).

use std::sync::atomic::{Ordering, fence};

use tracing::{debug, trace};

use super::Stats;
use super::regs::layout as bars;
use super::resources::{Cq, Mr, Qp, Resources};
use crate::dma::GuestDma;
use crate::function::HostBus;
use crate::nitro::admin::phase_of;

/// `sizeof(struct efa_io_tx_wqe)`.
pub const WQE_SIZE: usize = 64;
/// `sizeof(struct efa_io_rx_desc)`.
pub const RX_DESC_SIZE: usize = 16;
/// Largest message (the network MTU).
pub const MAX_MESSAGE: usize = super::limits::MTU as usize;

/// `efa_io_tx_meta_desc` fields and flags.
mod meta {
    pub const REQ_ID: usize = 0;
    pub const CTRL1: usize = 2;
    pub const CTRL2: usize = 3;
    pub const DEST_QP_NUM: usize = 4;
    pub const LENGTH: usize = 6;
    pub const IMM: usize = 8;
    pub const AH: usize = 12;
    pub const QKEY: usize = 16;
    pub const REQ_ID_EX: usize = 26;
    pub const DATA: usize = 32;
    pub const OP_TYPE: u8 = 0x0f;
    pub const HAS_IMM: u8 = 1 << 4;
    pub const INLINE_MSG: u8 = 1 << 5;
    pub const META_DESC: u8 = 1 << 7;
    pub const PHASE: u8 = 1 << 0;
    pub const COMP_REQ: u8 = 1 << 4;
    pub const OP_SEND: u8 = 0;
    pub const LKEY: u32 = 0x00ff_ffff;
}

/// `enum efa_io_comp_status` values the card reports.
pub mod status {
    /// Success.
    pub const OK: u8 = 0;
    /// Flushed: the QP is in the error state.
    pub const FLUSHED: u8 = 1;
    /// The QP cannot send (not in RTS), or the WQE was not there (its
    /// phase bit says the doorbell ran ahead of the descriptor).
    pub const QP_INTERNAL_ERROR: u8 = 2;
    /// Unsupported operation.
    pub const UNSUPPORTED_OP: u8 = 3;
    /// Bad AH.
    pub const INVALID_AH: u8 = 4;
    /// L_Key or address not registered.
    pub const INVALID_LKEY: u8 = 5;
    /// Message too long, or malformed descriptor.
    pub const BAD_LENGTH: u8 = 6;
    /// No such destination QP, or it is not ready (or the Q_Key differs).
    pub const BAD_DEST_QPN: u8 = 9;
    /// No receive posted at the destination.
    pub const RNR: u8 = 10;
    /// The destination cannot be reached (another GID: no fabric yet).
    pub const UNREACH_REMOTE: u8 = 15;
}

/// `efa_io_cdesc_common.flags`.
mod cdesc {
    pub const Q_SEND: u8 = 1 << 1;
    pub const Q_RECV: u8 = 2 << 1;
    pub const HAS_IMM: u8 = 1 << 3;
    pub const FLAGS: usize = 3;
    /// `efa_io_rx_cdesc_ex.u.src_addr`.
    pub const SRC_ADDR: usize = 16;
    /// `efa_io_rx_cdesc.ah` for an unknown sender.
    pub const NO_AH: u16 = 0xffff;
}

/// Per-QP positions of the data path.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QpRings {
    /// Next SQ entry the card reads (free-running).
    pub sq_cc: u16,
    /// Next RQ descriptor the card consumes (free-running).
    pub rq_cc: u16,
}

/// A message on its way from a send queue.
struct Message {
    bytes: Vec<u8>,
    imm: Option<u32>,
    src_qpn: u16,
    src_gid: [u8; 16],
    dest_qpn: u16,
    qkey: u32,
}

/// The guest addresses behind `len` bytes at `addr` of `mr`.
fn translate(mr: &Mr, addr: u64, len: usize) -> Option<Vec<(u64, usize)>> {
    let offset = addr.checked_sub(mr.iova)?;
    let end = offset.checked_add(len as u64)?;
    if end > mr.length {
        return None;
    }
    let page_size = 1u64 << mr.page_shift;
    let start = (mr.iova & (page_size - 1)) + offset;
    let mut pieces = Vec::new();
    let (mut at, mut left) = (start, len as u64);
    while left > 0 {
        let page = *mr.pages.get(usize::try_from(at >> mr.page_shift).ok()?)?;
        let within = at & (page_size - 1);
        let n = left.min(page_size - within);
        pieces.push((page + within, n as usize));
        at += n;
        left -= n;
    }
    Some(pieces)
}

fn mr_for(res: &Resources, lkey: u32, pd: u16) -> Option<&Mr> {
    res.mrs
        .get(lkey >> 8)
        .filter(|mr| mr.l_key & meta::LKEY == lkey && mr.pd == pd)
}

/// Writes one completion into `cq` at its producer index, phase byte last.
fn complete(dma: &GuestDma, cq: &mut Cq, mut entry: [u8; 32]) -> bool {
    let index = cq.pc;
    let depth = cq.depth;
    entry[cdesc::FLAGS] |= phase_of(index, depth);
    let size = usize::from(cq.entry_size).min(entry.len());
    let gpa = cq.base + u64::from(index & (depth - 1)) * u64::from(cq.entry_size);
    let flags = cdesc::FLAGS;
    let ok = dma.write_slice(gpa, &entry[..flags]).is_ok()
        && dma
            .write_slice(gpa + flags as u64 + 1, &entry[flags + 1..size])
            .is_ok()
        && {
            fence(Ordering::Release);
            dma.write_slice(gpa + flags as u64, &entry[flags..=flags])
                .is_ok()
        };
    if ok {
        cq.pc = cq.pc.wrapping_add(1);
    }
    ok
}

/// Reads SQ entry `index` of QP slot `slot` from the LLQ.
fn read_wqe(bus: &HostBus, slot: u16, entries: u32, index: u16) -> Option<[u8; WQE_SIZE]> {
    let at = bars::llq(slot) as usize + (usize::from(index) & (entries as usize - 1)) * WQE_SIZE;
    let mut wqe = [0u8; WQE_SIZE];
    bus.llq_memory()
        .ok()?
        .subslice(at, WQE_SIZE)
        .ok()?
        .copy_to(&mut wqe[..]);
    Some(wqe)
}

fn le16(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes([b[off], b[off + 1]])
}

fn le32(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

/// Gathers the message of a send WQE, or the completion status refusing it.
fn gather(res: &Resources, dma: &GuestDma, qp: &Qp, wqe: &[u8; WQE_SIZE]) -> Result<Vec<u8>, u8> {
    let ctrl1 = wqe[meta::CTRL1];
    if ctrl1 & meta::META_DESC == 0 || ctrl1 & meta::OP_TYPE != meta::OP_SEND {
        return Err(status::UNSUPPORTED_OP);
    }
    let length = usize::from(le16(wqe, meta::LENGTH));
    if ctrl1 & meta::INLINE_MSG != 0 {
        return wqe
            .get(meta::DATA..meta::DATA + length)
            .map(<[u8]>::to_vec)
            .ok_or(status::BAD_LENGTH);
    }
    if length > 2 {
        return Err(status::BAD_LENGTH);
    }
    let mut bytes = Vec::new();
    for i in 0..length {
        let d = meta::DATA + 16 * i;
        let len = le32(wqe, d) as usize;
        let lkey = le32(wqe, d + 4) & meta::LKEY;
        let addr = u64::from(le32(wqe, d + 8)) | (u64::from(le32(wqe, d + 12)) << 32);
        if bytes.len() + len > MAX_MESSAGE {
            return Err(status::BAD_LENGTH);
        }
        let mr = mr_for(res, lkey, qp.pd).ok_or(status::INVALID_LKEY)?;
        for (gpa, n) in translate(mr, addr, len).ok_or(status::INVALID_LKEY)? {
            let start = bytes.len();
            bytes.resize(start + n, 0);
            dma.read_slice(gpa, &mut bytes[start..])
                .map_err(|_| status::INVALID_LKEY)?;
        }
    }
    Ok(bytes)
}

/// `efa_io_regs_defs.h`: the CQ doorbell.
mod cq_db {
    pub const CONSUMER_INDEX: u32 = 0xffff;
    pub const CMD_SN_SHIFT: u32 = 29;
    pub const CMD_SN: u32 = 0x3;
    pub const ARM: u32 = 1 << 31;
}

/// `sizeof(struct efa_admin_eqe)` and its completion event.
const EQE_SIZE: u64 = super::limits::EQE_SIZE as u64;

/// Sends MSI-X `vector` (an EQ's).
pub fn interrupt(bus: &HostBus, vector: u8) {
    if let Err(err) = bus.signal_msix(vector.into()) {
        debug!(vector, error = %err, "EQ interrupt not sent");
    }
}

/// Completion events: a CQ in interrupt mode whose doorbell carries ARM
/// with a command sequence number no event has answered yet (or the
/// number after the last event's), and that holds completions past the
/// consumer index the doorbell names, gets one `efa_admin_eqe`
/// (completion event with its CQ number) on its EQ, which interrupts on
/// its vector if armed (else once the driver arms it).
fn notify(bus: &HostBus, res: &mut Resources) -> bool {
    let mut fired = false;
    let Resources { cqs, eqs, .. } = res;
    for (idx, cq) in cqs.iter_slots_mut() {
        let Some(eqn) = cq.eqn else { continue };
        let db = bus.doorbell_word(bars::cq_db(idx), |w| w.load(Ordering::Acquire));
        let sn = ((db >> cq_db::CMD_SN_SHIFT) & cq_db::CMD_SN) as u8;
        let consumed = (db & cq_db::CONSUMER_INDEX) as u16;
        // The card samples the doorbell, so it can miss an ARM write that
        // libefa's next poll (which writes the consumer index without
        // ARM) overwrote. libefa bumps CMD_SN when the application takes
        // an event and writes it with every doorbell, so a number one past
        // the last event's means "acknowledged and re-armed", ARM seen or
        // not.
        let rearmed = cq
            .fired_sn
            .is_some_and(|f| sn == (f + 1) & cq_db::CMD_SN as u8);
        let armed = (db & cq_db::ARM != 0 && cq.fired_sn != Some(sn)) || rearmed;
        if !armed || consumed == cq.pc {
            continue;
        }
        let Some(eq) = eqs.get_mut(eqn.into()) else {
            continue;
        };
        let mut eqe = [0u8; EQE_SIZE as usize];
        eqe[0] = phase_of(eq.pc, eq.depth); // event type 0: completion
        eqe[8..10].copy_from_slice(&idx.to_le_bytes());
        let gpa = eq.base + u64::from(eq.pc & (eq.depth - 1)) * EQE_SIZE;
        let written = bus.dma().write_slice(gpa + 1, &eqe[1..]).is_ok() && {
            fence(Ordering::Release);
            bus.dma().write_slice(gpa, &eqe[..1]).is_ok()
        };
        cq.fired_sn = Some(sn);
        if !written {
            continue;
        }
        eq.pc = eq.pc.wrapping_add(1);
        fired = true;
        if eq.armed {
            eq.armed = false;
            interrupt(bus, eq.vector);
        } else {
            eq.pending = true;
        }
    }
    fired
}

/// Serves every QP's SQ doorbell and every armed CQ once; returns whether
/// anything moved.
pub fn poll(bus: &HostBus, res: &mut Resources, own_gid: &[u8; 16], stats: &mut Stats) -> bool {
    let mut active = notify(bus, res);
    for slot in 0..super::limits::MAX_QP as u16 {
        let Some(qp) = res.qps.get(slot.into()) else {
            continue;
        };
        let entries = qp.sq_ring_size / WQE_SIZE as u32;
        let tail = bus.doorbell_word(bars::sq_db(slot), |w| w.load(Ordering::Acquire)) as u16;
        let mut cc = qp.rings.sq_cc;
        let pending = tail.wrapping_sub(cc);
        if pending == 0 || !entries.is_power_of_two() {
            continue;
        }
        if u32::from(pending) > entries {
            debug!(slot, tail, cc, "SQ doorbell beyond the ring: skipped");
            if let Some(qp) = res.qps.get_mut(slot.into()) {
                qp.rings.sq_cc = tail;
            }
            continue;
        }
        active = true;
        for _ in 0..pending {
            send_one(bus, res, slot, entries, cc, own_gid, stats);
            cc = cc.wrapping_add(1);
            if let Some(qp) = res.qps.get_mut(slot.into()) {
                qp.rings.sq_cc = cc;
            }
        }
    }
    active | notify(bus, res)
}

fn send_one(
    bus: &HostBus,
    res: &mut Resources,
    slot: u16,
    entries: u32,
    index: u16,
    own_gid: &[u8; 16],
    stats: &mut Stats,
) {
    let dma = bus.dma();
    let Some(qp) = res.qps.get(slot.into()).cloned() else {
        return;
    };
    let Some(wqe) = read_wqe(bus, slot, entries, index) else {
        return;
    };
    let ctrl2 = wqe[meta::CTRL2];
    // libefa's SQ phase starts at 0 and flips per wrap.
    let phase = u8::from((u32::from(index) / entries) % 2 == 1);
    let result = match qp.state {
        _ if ctrl2 & meta::PHASE != phase => Err(status::QP_INTERNAL_ERROR),
        super::admin::qp_state::RTS => gather(res, dma, &qp, &wqe),
        super::admin::qp_state::ERR => Err(status::FLUSHED),
        _ => Err(status::QP_INTERNAL_ERROR),
    };
    let qpn = slot + 1;
    let reliable = qp.qp_type == super::admin::layout::create_qp::TYPE_SRD;
    let mut outgoing = None;
    let mut status = match result {
        Ok(bytes) => {
            let ah = le16(&wqe, meta::AH);
            match res.ahs.get(ah.into()).filter(|a| a.pd == qp.pd) {
                None => status::INVALID_AH,
                Some(ah) => {
                    stats.basic[0] += bytes.len() as u64;
                    stats.basic[1] += 1;
                    stats.messages[0] += bytes.len() as u64;
                    stats.messages[1] += 1;
                    if ah.gid == *own_gid {
                        let imm =
                            (wqe[meta::CTRL1] & meta::HAS_IMM != 0).then(|| le32(&wqe, meta::IMM));
                        let message = Message {
                            bytes,
                            imm,
                            src_qpn: qpn,
                            src_gid: *own_gid,
                            dest_qpn: le16(&wqe, meta::DEST_QP_NUM),
                            qkey: le32(&wqe, meta::QKEY),
                        };
                        outgoing = Some(message);
                        status::OK
                    } else {
                        trace!(slot, "send to another GID dropped (no fabric port)");
                        if reliable {
                            status::UNREACH_REMOTE
                        } else {
                            status::OK
                        }
                    }
                }
            }
        }
        Err(status) => status,
    };
    // An SRD sender learns the delivery's outcome; a UD message arrives
    // after its send completed.
    if reliable {
        if let Some(message) = outgoing.take() {
            status = deliver(bus, res, &message, stats);
        }
    }
    if ctrl2 & meta::COMP_REQ != 0 || status != status::OK {
        let mut entry = [0u8; 32];
        entry[0..2].copy_from_slice(&wqe[meta::REQ_ID..meta::REQ_ID + 2]);
        entry[2] = status;
        entry[cdesc::FLAGS] = cdesc::Q_SEND;
        entry[4..6].copy_from_slice(&qpn.to_le_bytes());
        entry[6..12].copy_from_slice(&wqe[meta::REQ_ID_EX..meta::REQ_ID_EX + 6]);
        if let Some(cq) = res.cqs.get_mut(qp.send_cq.into()) {
            complete(dma, cq, entry);
        }
    }
    if let Some(message) = outgoing {
        deliver(bus, res, &message, stats);
    }
}

/// Delivers `message` to its destination QP on this function; returns
/// what a reliable (SRD) sender learns: OK once a receive took it (even
/// one completed with an error), else why nobody did.
fn deliver(bus: &HostBus, res: &mut Resources, message: &Message, stats: &mut Stats) -> u8 {
    use super::admin::qp_state::{RTR, RTS, SQD};
    let dma = bus.dma();
    let dest_slot = message.dest_qpn.wrapping_sub(1);
    let Some(dest) = res.qps.get(dest_slot.into()).cloned() else {
        stats.basic[4] += 1;
        return status::BAD_DEST_QPN;
    };
    let ready = matches!(dest.state, RTR | RTS | SQD);
    let rq_entries = dest.rq_ring_size / RX_DESC_SIZE as u32;
    let posted = bus.doorbell_word(bars::rq_db(dest_slot), |w| w.load(Ordering::Acquire)) as u16;
    let rq_cc = dest.rings.rq_cc;
    let available = posted.wrapping_sub(rq_cc);
    if !ready || dest.qkey != message.qkey {
        stats.basic[4] += 1;
        return status::BAD_DEST_QPN;
    }
    if !rq_entries.is_power_of_two() || available == 0 || u32::from(available) > rq_entries {
        stats.basic[4] += 1;
        return status::RNR;
    }
    let at = dest.rq_base + u64::from(rq_cc as u32 & (rq_entries - 1)) * RX_DESC_SIZE as u64;
    let mut desc = [0u8; RX_DESC_SIZE];
    if dma.read_slice(at, &mut desc).is_err() {
        stats.basic[4] += 1;
        return status::RNR;
    }
    if let Some(qp) = res.qps.get_mut(dest_slot.into()) {
        qp.rings.rq_cc = rq_cc.wrapping_add(1);
    }
    let addr = u64::from(le32(&desc, 0)) | (u64::from(le32(&desc, 4)) << 32);
    let room = usize::from(le16(&desc, 10));
    let lkey = le32(&desc, 12) & meta::LKEY;
    let len = message.bytes.len();
    let status = match mr_for(res, lkey, dest.pd).and_then(|mr| translate(mr, addr, len)) {
        _ if len > room => status::BAD_LENGTH,
        None => status::INVALID_LKEY,
        Some(pieces) => {
            let mut done = 0;
            let mut ok = true;
            for (gpa, n) in pieces {
                ok &= dma.write_slice(gpa, &message.bytes[done..done + n]).is_ok();
                done += n;
            }
            if ok { status::OK } else { status::INVALID_LKEY }
        }
    };
    if status == status::OK {
        stats.basic[2] += len as u64;
        stats.basic[3] += 1;
        stats.messages[2] += len as u64;
        stats.messages[3] += 1;
    }
    let ah = res
        .ahs
        .iter_slots()
        .find(|(_, a)| a.pd == dest.pd && a.gid == message.src_gid)
        .map_or(cdesc::NO_AH, |(n, _)| n);
    let mut entry = [0u8; 32];
    entry[0..2].copy_from_slice(&desc[8..10]);
    entry[2] = status;
    entry[cdesc::FLAGS] = cdesc::Q_RECV
        | if message.imm.is_some() {
            cdesc::HAS_IMM
        } else {
            0
        };
    entry[4..6].copy_from_slice(&message.dest_qpn.to_le_bytes());
    entry[6..8].copy_from_slice(&(len as u16).to_le_bytes());
    entry[8..10].copy_from_slice(&ah.to_le_bytes());
    entry[10..12].copy_from_slice(&message.src_qpn.to_le_bytes());
    entry[12..16].copy_from_slice(&message.imm.unwrap_or(0).to_le_bytes());
    if let Some(cq) = res.cqs.get_mut(dest.recv_cq.into()) {
        if ah == cdesc::NO_AH && cq.set_src_addr {
            entry[cdesc::SRC_ADDR..].copy_from_slice(&message.src_gid);
        }
        complete(dma, cq, entry);
    }
    status::OK
}
