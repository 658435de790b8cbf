//! The EFA data path of one function: UD and SRD sends from a QP's LLQ,
//! handed to the card's [`fabric`](super::fabric) for the QP of the
//! destination GID (this function's or another's), and the receive side
//! that takes them, as libefa drives it (`providers/efa/verbs.c`) with the
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
//! every guest access is checked. SRD QPs also take RDMA write (with or
//! without immediate data) and RDMA read WQEs (`efa_io_rdma_req`: one
//! local buffer and the remote R_Key and address), checked on the target
//! against the MR's remote access permissions. A UD send to a GID nobody has, to a QP
//! that does not exist or is not ready, with a wrong Q_Key or with no
//! receive posted is dropped (counted by the receiver) and still completes
//! on the sender; an SRD sender gets UNREACH_REMOTE, BAD_DEST_QPN or RNR
//! instead (there is no retry: within one card the outcome is known at
//! once).
//!
//! [`poll`] runs under the function's lock and returns the messages that
//! leave the SQs; the caller delivers them through the fabric after
//! releasing the lock (the receiver, possibly this very function, takes its
//! own lock in [`deliver`]) and then writes the SRD senders' completions
//! with [`complete_send`].

use std::sync::atomic::{Ordering, fence};

use tracing::{debug, trace};

use super::Stats;
use super::admin::layout::reg_mr::{ACCESS_LOCAL_WRITE, ACCESS_REMOTE_READ, ACCESS_REMOTE_WRITE};
use super::fabric::{Delivery, Message, Op};
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
/// Largest RDMA read or write.
pub const MAX_RDMA: usize = super::limits::MAX_RDMA_SIZE as usize;

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
    pub const OP_RDMA_READ: u8 = 1;
    pub const OP_RDMA_WRITE: u8 = 2;
    pub const LKEY: u32 = 0x00ff_ffff;
    /// `efa_io_rdma_req`: the remote buffer (length, R_Key, address),
    /// then the one local buffer (`efa_io_tx_buf_desc`).
    pub const REMOTE_LENGTH: usize = DATA;
    pub const REMOTE_KEY: usize = DATA + 4;
    pub const REMOTE_ADDR: usize = DATA + 8;
    pub const LOCAL_BUF: usize = DATA + 16;
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
    /// R_Key not registered, not of the target QP's PD, without the
    /// permission, or the range outside the MR.
    pub const REMOTE_BAD_ADDRESS: u8 = 7;
    /// No such destination QP, or it is not ready (or the Q_Key differs).
    pub const BAD_DEST_QPN: u8 = 9;
    /// No receive posted at the destination.
    pub const RNR: u8 = 10;
    /// The remote card's answer was malformed (an RDMA read that returned
    /// another length than asked for).
    pub const REMOTE_BAD_STATUS: u8 = 12;
    /// The remote card did not answer in time.
    pub const UNRESP_REMOTE: u8 = 13;
    /// The destination cannot be reached (no function has its GID).
    pub const UNREACH_REMOTE: u8 = 15;
}

/// `efa_io_cdesc_common.flags`.
mod cdesc {
    pub const Q_SEND: u8 = 1 << 1;
    pub const Q_RECV: u8 = 2 << 1;
    pub const HAS_IMM: u8 = 1 << 3;
    pub const OP_TYPE_SHIFT: u8 = 4;
    pub const FLAGS: usize = 3;
    /// `efa_io_rx_cdesc_ex.u.rdma_write.length_hi`.
    pub const LENGTH_HI: usize = 16;
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

/// A message that left a send queue, for the caller to deliver through
/// the fabric.
#[derive(Debug)]
pub struct Outbound {
    /// The destination GID (from the sender's AH).
    pub dest_gid: [u8; 16],
    /// The message.
    pub message: Message,
    /// An SRD send's completion, written once the receiver's verdict is
    /// known (a UD send completed when it left).
    pub pending: Option<PendingSend>,
}

/// The completion an SRD send waits for.
#[derive(Debug)]
pub struct PendingSend {
    /// The sending QP's slot.
    pub(super) slot: u16,
    /// The QP's handle: a QP destroyed (and its slot reused) meanwhile
    /// gets no completion.
    pub(super) handle: u32,
    /// RNR retries left (`RNR_RETRY_INFINITE`: for ever) and retries made.
    pub(super) rnr_retry: u8,
    pub(super) rnr_tries: u8,
    /// Whether the WQE asked for a completion on success.
    requested: bool,
    entry: [u8; 32],
    /// An RDMA read's local buffer (L_Key, address) for the bytes that
    /// come back.
    read_into: Option<(u32, u64)>,
}

/// What one pass over the doorbells found.
#[derive(Debug, Default)]
pub struct Poll {
    /// Whether anything moved.
    pub active: bool,
    /// Messages to deliver, in the order they were sent.
    pub outbound: Vec<Outbound>,
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

/// The guest pieces behind `len` bytes at `addr` of the MR `key` names in
/// `pd`, if it grants `access` (all of its bits) and holds the range.
fn mr_range(
    res: &Resources,
    key: u32,
    pd: u16,
    access: u8,
    addr: u64,
    len: usize,
) -> Option<Vec<(u64, usize)>> {
    mr_for(res, key, pd)
        .filter(|mr| mr.access & access == access)
        .and_then(|mr| translate(mr, addr, len))
}

/// Appends the bytes of `pieces` to `bytes`.
fn read_pieces(dma: &GuestDma, pieces: &[(u64, usize)], bytes: &mut Vec<u8>) -> bool {
    pieces.iter().all(|&(gpa, n)| {
        let start = bytes.len();
        bytes.resize(start + n, 0);
        dma.read_slice(gpa, &mut bytes[start..]).is_ok()
    })
}

/// Writes `bytes` over `pieces`.
fn write_pieces(dma: &GuestDma, pieces: &[(u64, usize)], bytes: &[u8]) -> bool {
    let mut done = 0;
    pieces.iter().all(|&(gpa, n)| {
        let ok = bytes
            .get(done..done + n)
            .is_some_and(|b| dma.write_slice(gpa, b).is_ok());
        done += n;
        ok
    })
}

/// A buffer descriptor (`efa_io_tx_buf_desc`) at `off`: length, L_Key,
/// address.
fn buf_desc(wqe: &[u8], off: usize) -> (usize, u32, u64) {
    let len = le32(wqe, off) as usize;
    let lkey = le32(wqe, off + 4) & meta::LKEY;
    let addr = u64::from(le32(wqe, off + 8)) | (u64::from(le32(wqe, off + 12)) << 32);
    (len, lkey, addr)
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

/// What a WQE asks for, its payload gathered.
struct Request {
    op: Op,
    bytes: Vec<u8>,
    /// An RDMA read's local buffer (L_Key, address).
    read_into: Option<(u32, u64)>,
}

/// Gathers the request of a WQE, or the completion status refusing it.
fn gather(res: &Resources, dma: &GuestDma, qp: &Qp, wqe: &[u8; WQE_SIZE]) -> Result<Request, u8> {
    let ctrl1 = wqe[meta::CTRL1];
    if ctrl1 & meta::META_DESC == 0 {
        return Err(status::UNSUPPORTED_OP);
    }
    let length = usize::from(le16(wqe, meta::LENGTH));
    let inline = ctrl1 & meta::INLINE_MSG != 0;
    match ctrl1 & meta::OP_TYPE {
        meta::OP_SEND if inline => wqe
            .get(meta::DATA..meta::DATA + length)
            .map(|b| Request {
                op: Op::Send,
                bytes: b.to_vec(),
                read_into: None,
            })
            .ok_or(status::BAD_LENGTH),
        meta::OP_SEND => {
            if length > 2 {
                return Err(status::BAD_LENGTH);
            }
            let mut bytes = Vec::new();
            for i in 0..length {
                let (len, lkey, addr) = buf_desc(wqe, meta::DATA + 16 * i);
                if bytes.len() + len > MAX_MESSAGE {
                    return Err(status::BAD_LENGTH);
                }
                let pieces =
                    mr_range(res, lkey, qp.pd, 0, addr, len).ok_or(status::INVALID_LKEY)?;
                if !read_pieces(dma, &pieces, &mut bytes) {
                    return Err(status::INVALID_LKEY);
                }
            }
            Ok(Request {
                op: Op::Send,
                bytes,
                read_into: None,
            })
        }
        op @ (meta::OP_RDMA_READ | meta::OP_RDMA_WRITE) => {
            // RDMA is reliable-datagram only, from one local buffer.
            if qp.qp_type != super::admin::layout::create_qp::TYPE_SRD || inline {
                return Err(status::UNSUPPORTED_OP);
            }
            let remote_len = le32(wqe, meta::REMOTE_LENGTH) as usize;
            let rkey = le32(wqe, meta::REMOTE_KEY);
            let raddr = u64::from(le32(wqe, meta::REMOTE_ADDR))
                | (u64::from(le32(wqe, meta::REMOTE_ADDR + 4)) << 32);
            let (len, lkey, addr) = buf_desc(wqe, meta::LOCAL_BUF);
            if length != 1 || len != remote_len || len > MAX_RDMA {
                return Err(status::BAD_LENGTH);
            }
            if op == meta::OP_RDMA_READ {
                // The bytes that come back land here: it must be writable.
                mr_range(res, lkey, qp.pd, ACCESS_LOCAL_WRITE, addr, len)
                    .ok_or(status::INVALID_LKEY)?;
                return Ok(Request {
                    op: Op::Read {
                        rkey,
                        addr: raddr,
                        len: len as u32,
                    },
                    bytes: Vec::new(),
                    read_into: Some((lkey, addr)),
                });
            }
            let pieces = mr_range(res, lkey, qp.pd, 0, addr, len).ok_or(status::INVALID_LKEY)?;
            let mut bytes = Vec::with_capacity(len);
            if !read_pieces(dma, &pieces, &mut bytes) {
                return Err(status::INVALID_LKEY);
            }
            Ok(Request {
                op: Op::Write { rkey, addr: raddr },
                bytes,
                read_into: None,
            })
        }
        _ => Err(status::UNSUPPORTED_OP),
    }
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
pub fn notify(bus: &HostBus, res: &mut Resources) -> bool {
    let mut fired = false;
    let Resources { cqs, eqs, .. } = res;
    for (idx, cq) in cqs.iter_slots_mut() {
        let Some(eqn) = cq.eqn else { continue };
        let db = bus.doorbell_word(bars::cq_db(cq.uar, idx), |w| w.load(Ordering::Acquire));
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

/// WQEs one pass takes off one QP's SQ (NAPI's budget).
pub const PASS_BUDGET: u16 = 64;
/// Bytes one pass moves (sent, written or read) before it leaves the
/// remaining WQEs to the next: with RDMA of up to [`MAX_RDMA`] bytes
/// each, a hostile process cannot keep the (real-time) thread copying for
/// more than about a millisecond at a time.
pub const PASS_BYTES: usize = 4 << 20;

/// Serves every QP's SQ doorbell (up to [`PASS_BUDGET`] WQEs each, and
/// [`PASS_BYTES`] over all) and every armed CQ once; returns whether
/// anything moved and the messages that left the SQs.
pub fn poll(bus: &HostBus, res: &mut Resources, own_gid: &[u8; 16], stats: &mut Stats) -> Poll {
    let mut poll = Poll {
        active: notify(bus, res),
        outbound: Vec::new(),
    };
    let mut bytes = 0;
    for slot in 0..super::limits::MAX_QP as u16 {
        let Some(qp) = res.qps.get(slot.into()) else {
            continue;
        };
        let entries = qp.sq_ring_size / WQE_SIZE as u32;
        let tail =
            bus.doorbell_word(bars::sq_db(qp.uar, slot), |w| w.load(Ordering::Acquire)) as u16;
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
        poll.active = true;
        // The rest waits for the next pass: the thread sleeps in between,
        // so one QP's work never holds a core for long.
        for _ in 0..pending.min(PASS_BUDGET) {
            if bytes >= PASS_BYTES {
                break;
            }
            if let Some(out) = send_one(bus, res, slot, entries, cc, own_gid, stats) {
                bytes += match out.message.op {
                    Op::Read { len, .. } => len as usize,
                    _ => out.message.bytes.len(),
                };
                poll.outbound.push(out);
            }
            cc = cc.wrapping_add(1);
            if let Some(qp) = res.qps.get_mut(slot.into()) {
                qp.rings.sq_cc = cc;
            }
        }
    }
    poll.active |= notify(bus, res);
    poll
}

/// Takes SQ entry `index` of QP `slot`: the message to deliver, if it
/// makes one. A WQE that fails here, and every UD send, completes now.
fn send_one(
    bus: &HostBus,
    res: &mut Resources,
    slot: u16,
    entries: u32,
    index: u16,
    own_gid: &[u8; 16],
    stats: &mut Stats,
) -> Option<Outbound> {
    let dma = bus.dma();
    let qp = res.qps.get(slot.into()).cloned()?;
    let wqe = read_wqe(bus, slot, entries, index)?;
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
    let ah = le16(&wqe, meta::AH);
    let result = result.and_then(|request| {
        let ah = res.ahs.get(ah.into()).filter(|a| a.pd == qp.pd);
        ah.map(|ah| (request, ah.gid)).ok_or(status::INVALID_AH)
    });
    let op_type = wqe[meta::CTRL1] & meta::OP_TYPE;
    let mut entry = [0u8; 32];
    entry[0..2].copy_from_slice(&wqe[meta::REQ_ID..meta::REQ_ID + 2]);
    entry[cdesc::FLAGS] = cdesc::Q_SEND | (op_type << cdesc::OP_TYPE_SHIFT);
    entry[4..6].copy_from_slice(&qpn.to_le_bytes());
    entry[6..12].copy_from_slice(&wqe[meta::REQ_ID_EX..meta::REQ_ID_EX + 6]);
    let requested = ctrl2 & meta::COMP_REQ != 0;
    let (request, dest_gid) = match result {
        Ok(sent) => sent,
        Err(status) => {
            count_rdma_error(stats, op_type);
            entry[2] = status;
            if let Some(cq) = res.cqs.get_mut(qp.send_cq.into()) {
                complete(dma, cq, entry);
            }
            return None;
        }
    };
    match request.op {
        Op::Send => {
            stats.messages[0] += request.bytes.len() as u64;
            stats.messages[1] += 1;
        }
        Op::Write { .. } => {
            stats.rdma_write[0] += 1;
            stats.rdma_write[1] += request.bytes.len() as u64;
        }
        Op::Read { len, .. } => {
            stats.rdma_read[0] += 1;
            stats.rdma_read[1] += u64::from(len);
        }
    }
    stats.basic[0] += request.bytes.len() as u64;
    stats.basic[1] += 1;
    let imm = (wqe[meta::CTRL1] & meta::HAS_IMM != 0).then(|| le32(&wqe, meta::IMM));
    let message = Message {
        op: request.op,
        bytes: request.bytes,
        imm,
        src_qpn: qpn,
        src_gid: *own_gid,
        dest_qpn: le16(&wqe, meta::DEST_QP_NUM),
        qkey: le32(&wqe, meta::QKEY),
    };
    // An SRD sender learns the delivery's outcome; a UD send completes as
    // it leaves.
    let pending = if qp.qp_type == super::admin::layout::create_qp::TYPE_SRD {
        Some(PendingSend {
            slot,
            handle: qp.handle,
            rnr_retry: qp.rnr_retry,
            rnr_tries: 0,
            requested,
            entry,
            read_into: request.read_into,
        })
    } else {
        if requested {
            if let Some(cq) = res.cqs.get_mut(qp.send_cq.into()) {
                complete(dma, cq, entry);
            }
        }
        None
    };
    Some(Outbound {
        dest_gid,
        message,
        pending,
    })
}

/// Counts a failed RDMA read or write WQE.
fn count_rdma_error(stats: &mut Stats, op_type: u8) {
    match op_type {
        meta::OP_RDMA_READ => stats.rdma_read[2] += 1,
        meta::OP_RDMA_WRITE => stats.rdma_write[2] += 1,
        _ => {}
    }
}

/// Completes an SRD send with the outcome of its delivery (`None`: no
/// function has the destination GID), unless its QP is gone. The bytes
/// an RDMA read brought back go to its local buffer first (which must
/// still be registered and writable).
pub fn complete_send(
    bus: &HostBus,
    res: &mut Resources,
    send: PendingSend,
    delivery: Option<Delivery>,
    stats: &mut Stats,
) {
    let Some(qp) = res
        .qps
        .get(send.slot.into())
        .filter(|q| q.handle == send.handle)
    else {
        trace!(
            slot = send.slot,
            "SRD completion for a QP that is gone: dropped"
        );
        return;
    };
    let (pd, cq) = (qp.pd, qp.send_cq);
    let status = match (delivery, send.read_into) {
        (None, _) => status::UNREACH_REMOTE,
        (Some(Err(status)), _) => status,
        (Some(Ok(_)), None) => status::OK,
        (Some(Ok(bytes)), Some((lkey, addr))) => {
            match mr_range(res, lkey, pd, ACCESS_LOCAL_WRITE, addr, bytes.len()) {
                Some(pieces) if write_pieces(bus.dma(), &pieces, &bytes) => status::OK,
                _ => status::INVALID_LKEY,
            }
        }
    };
    let op_type = send.entry[cdesc::FLAGS] >> cdesc::OP_TYPE_SHIFT;
    if status != status::OK {
        count_rdma_error(stats, op_type);
    }
    if !send.requested && status == status::OK {
        return;
    }
    let mut entry = send.entry;
    entry[2] = status;
    if let Some(cq) = res.cqs.get_mut(cq.into()) {
        complete(bus.dma(), cq, entry);
    }
}

/// Takes the next receive posted on QP `slot`: its descriptor, or RNR.
fn take_receive(bus: &HostBus, res: &mut Resources, slot: u16) -> Result<[u8; RX_DESC_SIZE], u8> {
    let qp = res.qps.get_mut(slot.into()).ok_or(status::BAD_DEST_QPN)?;
    let rq_entries = qp.rq_ring_size / RX_DESC_SIZE as u32;
    let posted = bus.doorbell_word(bars::rq_db(qp.uar, slot), |w| w.load(Ordering::Acquire)) as u16;
    let rq_cc = qp.rings.rq_cc;
    let available = posted.wrapping_sub(rq_cc);
    if !rq_entries.is_power_of_two() || available == 0 || u32::from(available) > rq_entries {
        return Err(status::RNR);
    }
    let at = qp.rq_base + u64::from(rq_cc as u32 & (rq_entries - 1)) * RX_DESC_SIZE as u64;
    let mut desc = [0u8; RX_DESC_SIZE];
    bus.dma()
        .read_slice(at, &mut desc)
        .map_err(|_| status::RNR)?;
    qp.rings.rq_cc = rq_cc.wrapping_add(1);
    Ok(desc)
}

/// Carries out `message` on its destination QP of this function (the
/// [`fabric::Endpoint`](super::fabric::Endpoint) side of a function):
/// a send takes the next receive, an RDMA write lands in the target MR
/// (and with immediate data takes a receive, which completes), an RDMA
/// read returns the bytes. Returns what a reliable (SRD) sender learns:
/// success once a receive took the send (even one completed with an
/// error), else why not.
pub fn deliver(
    bus: &HostBus,
    res: &mut Resources,
    message: &Message,
    stats: &mut Stats,
) -> Delivery {
    use super::admin::qp_state::{RTR, RTS, SQD};
    let dma = bus.dma();
    let dest_slot = message.dest_qpn.wrapping_sub(1);
    let dest = res
        .qps
        .get(dest_slot.into())
        .filter(|d| matches!(d.state, RTR | RTS | SQD) && d.qkey == message.qkey)
        .map(|d| (d.pd, d.recv_cq));
    let Some((pd, recv_cq)) = dest else {
        stats.basic[4] += 1;
        return Err(status::BAD_DEST_QPN);
    };
    let len = message.bytes.len();
    let (desc, status) = match message.op {
        Op::Read { rkey, addr, len } => {
            let len = len as usize;
            let mut bytes = Vec::with_capacity(len);
            let read = mr_range(res, rkey, pd, ACCESS_REMOTE_READ, addr, len)
                .is_some_and(|pieces| read_pieces(dma, &pieces, &mut bytes));
            if !read {
                return Err(status::REMOTE_BAD_ADDRESS);
            }
            stats.rdma_read[3] += len as u64;
            return Ok(bytes);
        }
        Op::Write { rkey, addr } => {
            let pieces = mr_range(res, rkey, pd, ACCESS_REMOTE_WRITE, addr, len)
                .ok_or(status::REMOTE_BAD_ADDRESS)?;
            // A write with immediate data needs a receive to report it.
            let desc = match message.imm {
                Some(_) => {
                    Some(take_receive(bus, res, dest_slot).inspect_err(|_| stats.basic[4] += 1)?)
                }
                None => None,
            };
            if !write_pieces(dma, &pieces, &message.bytes) {
                return Err(status::REMOTE_BAD_ADDRESS);
            }
            stats.rdma_write[3] += len as u64;
            stats.basic[2] += len as u64;
            stats.basic[3] += 1;
            match desc {
                Some(desc) => (desc, status::OK),
                None => return Ok(Vec::new()),
            }
        }
        Op::Send => {
            let desc = take_receive(bus, res, dest_slot).inspect_err(|_| stats.basic[4] += 1)?;
            let addr = u64::from(le32(&desc, 0)) | (u64::from(le32(&desc, 4)) << 32);
            let room = usize::from(le16(&desc, 10));
            let lkey = le32(&desc, 12) & meta::LKEY;
            let status = match mr_range(res, lkey, pd, ACCESS_LOCAL_WRITE, addr, len) {
                _ if len > room => status::BAD_LENGTH,
                Some(pieces) if write_pieces(dma, &pieces, &message.bytes) => status::OK,
                _ => status::INVALID_LKEY,
            };
            if status == status::OK {
                stats.basic[2] += len as u64;
                stats.basic[3] += 1;
                stats.messages[2] += len as u64;
                stats.messages[3] += 1;
            }
            (desc, status)
        }
    };
    let ah = res
        .ahs
        .iter_slots()
        .find(|(_, a)| a.pd == pd && a.gid == message.src_gid)
        .map_or(cdesc::NO_AH, |(n, _)| n);
    let write = matches!(message.op, Op::Write { .. });
    let mut entry = [0u8; 32];
    entry[0..2].copy_from_slice(&desc[8..10]);
    entry[2] = status;
    entry[cdesc::FLAGS] = cdesc::Q_RECV
        | if message.imm.is_some() {
            cdesc::HAS_IMM
        } else {
            0
        }
        | if write {
            meta::OP_RDMA_WRITE << cdesc::OP_TYPE_SHIFT
        } else {
            0
        };
    entry[4..6].copy_from_slice(&message.dest_qpn.to_le_bytes());
    entry[6..8].copy_from_slice(&(len as u16).to_le_bytes());
    entry[8..10].copy_from_slice(&ah.to_le_bytes());
    entry[10..12].copy_from_slice(&message.src_qpn.to_le_bytes());
    entry[12..16].copy_from_slice(&message.imm.unwrap_or(0).to_le_bytes());
    if let Some(cq) = res.cqs.get_mut(recv_cq.into()) {
        if write {
            entry[cdesc::LENGTH_HI..cdesc::LENGTH_HI + 2]
                .copy_from_slice(&((len >> 16) as u16).to_le_bytes());
        } else if ah == cdesc::NO_AH && cq.set_src_addr {
            entry[cdesc::SRC_ADDR..].copy_from_slice(&message.src_gid);
        }
        complete(dma, cq, entry);
    }
    Ok(Vec::new())
}
