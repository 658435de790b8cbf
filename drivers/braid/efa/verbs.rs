// SPDX-License-Identifier: GPL-2.0

//! The EFA function as an RDMA device with EFA's userspace ABI (`efa_verbs.c` is the
//! specification of what each verb answers): the device, port and GID queries, user contexts
//! with libefa's handshake, protection domains, address handles, completion queues, UD and SRD
//! queue pairs with their rings and doorbells mapped into the process, memory regions, completion
//! events through the event queues ([`super::eq`]), and the hardware counters.

#![forbid(unsafe_code)]

use core::mem::{offset_of, size_of};

use kernel::{
    dma::Coherent,
    io::{io_project, Io},
    new_mutex,
    page::PAGE_SIZE as PAGE_BYTES,
    prelude::*,
    sync::{
        atomic::{Atomic, Relaxed},
        Mutex,
    },
};

use super::{
    device_cap, Attributes, CqParams, EfaDevice, MrParams, PageList, QpModify, QpParams, QpType,
    StatsType, INLINE_PBL,
};
use crate::efa_abi::{
    cmds_supp_udata, create_cq_flags, create_cq_resp, create_qp_flags, device_caps, qp_driver_type,
    ucontext_cmd_caps, AllocPdResp, AllocUcontextCmd, AllocUcontextResp, CreateAhResp, CreateCq,
    CreateCqResp, CreateQp, CreateQpResp, ExQueryDeviceResp,
};
use crate::kapi::{
    dma::Direction,
    ib::{
        self, access, mem::DmaPages, mem::Mappable, mem::MmapEntry, mem::Pages, mem::Umem,
        modify_qp_is_ok, qp_attr, speed, width, Counter, CqInit, DeviceAttr, MrInit, PortAttr,
        QpAttr, QpCap, QpInit, Udata, UserContext,
    },
};

/// The kernel's page size, as efa.ko scales `max_mr_pages` by it.
const PAGE_SIZE: u64 = kernel::page::PAGE_SIZE as u64;

/// The RDMA device's data: the device protocol and the error counts efa.ko keeps.
#[pin_data]
pub(crate) struct EfaIb<'bound> {
    #[pin]
    pub(crate) dev: EfaDevice<'bound>,
    /// The device's address handles: it makes one per destination and PD, which every AH of that
    /// destination in that PD shares (as efa.ko's AH cache does).
    #[pin]
    ahs: Mutex<KVec<SharedAh>>,
    alloc_pd_err: Atomic<u64>,
    alloc_ucontext_err: Atomic<u64>,
    create_ah_err: Atomic<u64>,
    create_cq_err: Atomic<u64>,
    create_qp_err: Atomic<u64>,
    reg_mr_err: Atomic<u64>,
    mmap_err: Atomic<u64>,
}

impl<'bound> EfaIb<'bound> {
    /// The RDMA device's data over `dev`.
    pub(crate) fn new(dev: impl PinInit<EfaDevice<'bound>, Error>) -> impl PinInit<Self, Error> {
        try_pin_init!(Self {
            dev <- dev,
            ahs <- new_mutex!(KVec::new()),
            alloc_pd_err: Atomic::new(0),
            alloc_ucontext_err: Atomic::new(0),
            create_ah_err: Atomic::new(0),
            create_cq_err: Atomic::new(0),
            create_qp_err: Atomic::new(0),
            reg_mr_err: Atomic::new(0),
            mmap_err: Atomic::new(0),
        }? Error)
    }

    fn attributes(&self) -> &Attributes {
        &self.dev.attributes
    }

    /// `alloc_ucontext` without the error count.
    fn try_alloc_context(&self, udata: &mut Udata<'_>) -> Result<Context> {
        let a = self.attributes();
        let cmd: AllocUcontextCmd = udata.read(0)?;
        // The handshake (`efa_user_supp_handshake`): a provider that would ignore a device limit
        // it does not know cannot use the device.
        if a.max_tx_batch != 0 && cmd.supported_caps & ucontext_cmd_caps::TX_BATCH == 0 {
            return Err(EOPNOTSUPP);
        }
        if a.min_sq_depth != 0 && cmd.supported_caps & ucontext_cmd_caps::MIN_SQ_WR == 0 {
            return Err(EOPNOTSUPP);
        }
        let uar = self.dev.alloc_uar()?;
        let resp = AllocUcontextResp {
            cmds_supp_udata_mask: cmds_supp_udata::QUERY_DEVICE | cmds_supp_udata::CREATE_AH,
            sub_cqs_per_cq: a.sub_cqs_per_cq,
            inline_buf_size: a.inline_buf_size as u16,
            inline_buf_size_ex: a.inline_buf_size_ex,
            max_llq_size: a.max_llq_size,
            max_tx_batch: a.max_tx_batch,
            min_sq_wr: a.min_sq_depth,
            ..Default::default()
        };
        if let Err(err) = udata.respond(&resp) {
            let _ = self.dev.dealloc_uar(uar);
            return Err(err);
        }
        Ok(Context { uar })
    }

    /// `alloc_pd` without the error count.
    fn try_alloc_pd(&self, udata: &mut Udata<'_>) -> Result<Pd> {
        udata.require_empty()?;
        let pdn = self.dev.alloc_pd()?;
        let resp = AllocPdResp {
            pdn,
            ..Default::default()
        };
        if let Err(err) = udata.respond(&resp) {
            let _ = self.dev.dealloc_pd(pdn);
            return Err(err);
        }
        Ok(Pd { pdn })
    }

    /// `create_ah` without the error count.
    fn try_create_ah(&self, pd: &Pd, dgid: &[u8; 16], udata: &mut Udata<'_>) -> Result<Ah> {
        udata.require_empty()?;
        let ah = self.get_ah(pd.pdn, dgid)?;
        let resp = CreateAhResp {
            efa_address_handle: ah.ah,
            ..Default::default()
        };
        if let Err(err) = udata.respond(&resp) {
            self.put_ah(ah);
            return Err(err);
        }
        Ok(ah)
    }

    /// A reference to the device's AH for `gid` in `pdn`, made if there is none.
    fn get_ah(&self, pdn: u16, gid: &[u8; 16]) -> Result<Ah> {
        let mut ahs = self.ahs.lock();
        if let Some(shared) = ahs.iter_mut().find(|s| s.pdn == pdn && s.gid == *gid) {
            shared.users += 1;
            return Ok(Ah { ah: shared.ah, pdn });
        }
        ahs.reserve(1, GFP_KERNEL)?;
        let ah = self.dev.create_ah(gid, pdn)?;
        ahs.push(
            SharedAh {
                pdn,
                gid: *gid,
                ah,
                users: 1,
            },
            GFP_KERNEL,
        )?;
        Ok(Ah { ah, pdn })
    }

    /// Drops a reference from [`Self::get_ah`]; the device's AH goes with the last one.
    fn put_ah(&self, ah: Ah) {
        let mut ahs = self.ahs.lock();
        let Some(i) = ahs.iter().position(|s| s.pdn == ah.pdn && s.ah == ah.ah) else {
            return;
        };
        ahs[i].users -= 1;
        if ahs[i].users == 0 {
            // A failure leaves the AH to the device's next reset.
            let _ = self.dev.destroy_ah(ah.ah, ah.pdn);
            let _ = ahs.remove(i);
        }
    }

    /// `create_cq` without the error count.
    fn try_create_cq(
        &self,
        ctx: &UserContext<'_, Self>,
        init: &CqInit,
        udata: &mut Udata<'_>,
    ) -> Result<(Cq, u32)> {
        let a = self.attributes();
        // The first version of the request ends with `num_sub_cqs`; no comp_mask bit is known.
        let cmd: CreateCq = udata.read(offset_of!(CreateCq, num_sub_cqs) + size_of::<u16>())?;
        if cmd.comp_mask != 0 {
            return Err(EOPNOTSUPP);
        }
        if cmd.reserved_58 != [0; 5] {
            return Err(EINVAL);
        }
        // 64-bit ids need a device capability braid.ko does not offer.
        let known = create_cq_flags::WITH_SGID | create_cq_flags::WITH_COMPLETION_CHANNEL;
        if cmd.flags & !known != 0 {
            return Err(EOPNOTSUPP);
        }
        // Completion events come through the event queue of the CQ's vector.
        let eqn = if cmd.flags & create_cq_flags::WITH_COMPLETION_CHANNEL != 0 {
            let eqs = &self.dev.eqs;
            let eq = eqs
                .get(init.comp_vector as usize % eqs.len().max(1))
                .ok_or(EOPNOTSUPP)?;
            Some(eq.eqn())
        } else {
            None
        };
        let set_src_addr = cmd.flags & create_cq_flags::WITH_SGID != 0;
        if !(cmd.cq_entry_size == CQE_EX || (!set_src_addr && cmd.cq_entry_size == CQE)) {
            return Err(EINVAL);
        }
        if init.entries == 0 || init.entries > a.max_cq_depth {
            return Err(EINVAL);
        }
        if cmd.num_sub_cqs != a.sub_cqs_per_cq {
            return Err(EINVAL);
        }
        let depth = u16::try_from(init.entries)?;
        let size = usize::try_from(cmd.cq_entry_size)?
            .checked_mul(init.entries as usize)
            .and_then(|n| n.checked_mul(cmd.num_sub_cqs.into()))
            .ok_or(EINVAL)?;
        let ring = DmaPages::new(self.dev.dma_dev, Pages::new(size)?, Direction::FromDevice)?;
        let created = self.dev.create_cq(&CqParams {
            sub_cq_depth: depth,
            num_sub_cqs: cmd.num_sub_cqs,
            entry_size: cmd.cq_entry_size,
            set_src_addr,
            ring: ring.dma_address(),
            uar: ctx.data().uar,
            eqn,
        })?;
        let cq = Cq {
            idx: created.idx,
            ring_map: None,
            db_map: None,
            _ring: ring,
        };
        self.finish_cq(cq, created.db_offset, ctx, udata)
            .map(|cq| (cq, created.depth.into()))
    }

    /// Maps a new CQ's ring and doorbell and answers; destroys the CQ on failure.
    fn finish_cq(
        &self,
        mut cq: Cq,
        db_offset: Option<u32>,
        ctx: &UserContext<'_, Self>,
        udata: &mut Udata<'_>,
    ) -> Result<Cq> {
        let result = (|| {
            let pages = cq._ring.pages().clone();
            let size = pages.len();
            let ring_map = ctx.insert_mmap(Mappable::Pages(pages), size)?;
            let mut resp = CreateCqResp {
                q_mmap_key: ring_map.offset(),
                q_mmap_size: size as u64,
                cq_idx: cq.idx,
                ..Default::default()
            };
            cq.ring_map = Some(ring_map);
            if let Some(off) = db_offset {
                let db = self.doorbell_page(ctx, off)?;
                resp.db_mmap_key = db.offset();
                resp.db_off = in_page(off);
                resp.comp_mask |= create_cq_resp::DB_OFF;
                cq.db_map = Some(db);
            }
            udata.respond(&resp)
        })();
        match result {
            Ok(()) => Ok(cq),
            Err(err) => {
                let _ = self.dev.destroy_cq(cq.idx);
                Err(err)
            }
        }
    }

    /// An uncached mapping of the doorbell page that holds BAR offset `offset`.
    fn doorbell_page(&self, ctx: &UserContext<'_, Self>, offset: u32) -> Result<MmapEntry> {
        let page = (self.dev.db_bar_addr + u64::from(offset)) & !(PAGE_BYTES as u64 - 1);
        ctx.insert_mmap(Mappable::DeviceUncached(page), PAGE_BYTES)
    }

    /// `create_qp` without the error count.
    fn try_create_qp(
        &self,
        ctx: &UserContext<'_, Self>,
        pd: &Pd,
        init: &QpInit<'_, Self>,
        udata: &mut Udata<'_>,
    ) -> Result<(Qp, u32)> {
        let a = self.attributes();
        // The first version of the request ends with `driver_qp_type`.
        let cmd: CreateQp = udata.read(offset_of!(CreateQp, driver_qp_type) + size_of::<u32>())?;
        if cmd.comp_mask != 0 {
            return Err(EOPNOTSUPP);
        }
        if cmd.reserved_98 != [0; 5] {
            return Err(EINVAL);
        }
        let mut supported_flags = 0;
        if a.has(device_cap::UNSOLICITED_WRITE_RECV) {
            supported_flags |= create_qp_flags::WITH_UNSOLICITED_WRITE_RECV;
        }
        if cmd.flags & !supported_flags != 0 {
            return Err(EOPNOTSUPP);
        }
        let cap = init.cap;
        if cap.max_send_wr > a.max_sq_depth
            || cmd.sq_ring_size > a.max_llq_size
            || cap.max_recv_wr > a.max_rq_depth
            || cap.max_send_sge > a.max_sq_sge.into()
            || cap.max_recv_sge > a.max_rq_sge.into()
            || cap.max_inline_data > a.inline_buf_size_ex.into()
        {
            return Err(EINVAL);
        }
        let qp_type = match init.qp_type {
            ib::QpType::Ud => QpType::Ud,
            ib::QpType::Driver if cmd.driver_qp_type == qp_driver_type::SRD => QpType::Srd,
            ib::QpType::Driver => return Err(EOPNOTSUPP),
        };
        let rq = match cmd.rq_ring_size {
            0 => None,
            n => Some(DmaPages::new(
                self.dev.dma_dev,
                Pages::new(n as usize)?,
                Direction::ToDevice,
            )?),
        };
        let params = QpParams {
            pd: pd.pdn,
            qp_type,
            rq_ring: rq.as_ref().map_or(0, DmaPages::dma_address),
            send_cq: init.send_cq.idx,
            recv_cq: init.recv_cq.idx,
            sq_ring_size: cmd.sq_ring_size,
            sq_depth: cap.max_send_wr,
            rq_ring_size: cmd.rq_ring_size,
            rq_depth: cap.max_recv_wr,
            uar: ctx.data().uar,
            sl: cmd.sl,
        };
        let created = self.dev.create_qp(&params)?;
        let qp = Qp {
            handle: created.handle,
            qp_type,
            state: Atomic::new(ib::qp_state::RESET),
            cap,
            maps: KVec::new(),
            _rq: rq,
        };
        match self.finish_qp(qp, &params, &created, ctx, udata) {
            Ok(qp) => Ok((qp, created.num.into())),
            Err(err) => {
                let _ = self.dev.destroy_qp(created.handle);
                Err(err)
            }
        }
    }

    /// Maps a new QP's doorbells, LLQ descriptors and RQ ring, and answers.
    fn finish_qp(
        &self,
        mut qp: Qp,
        params: &QpParams,
        created: &super::QpCreated,
        ctx: &UserContext<'_, Self>,
        udata: &mut Udata<'_>,
    ) -> Result<Qp> {
        let sq_db = self.doorbell_page(ctx, created.sq_db_offset)?;
        let llq_start = self.dev.llq_bar_addr + u64::from(created.llq_offset);
        let llq_page = llq_start & !(PAGE_BYTES as u64 - 1);
        let llq_len = (params.sq_ring_size as usize + in_page(created.llq_offset) as usize)
            .next_multiple_of(PAGE_BYTES);
        let llq = ctx.insert_mmap(Mappable::DeviceWriteCombining(llq_page), llq_len)?;
        let mut resp = CreateQpResp {
            sq_db_offset: in_page(created.sq_db_offset),
            llq_desc_offset: in_page(created.llq_offset),
            sq_db_mmap_key: sq_db.offset(),
            llq_desc_mmap_key: llq.offset(),
            send_sub_cq_idx: created.send_sub_cq,
            recv_sub_cq_idx: created.recv_sub_cq,
            ..Default::default()
        };
        qp.maps.push(sq_db, GFP_KERNEL)?;
        qp.maps.push(llq, GFP_KERNEL)?;
        if let Some(rq) = &qp._rq {
            let rq_db = self.doorbell_page(ctx, created.rq_db_offset)?;
            let pages = rq.pages().clone();
            let size = pages.len();
            let ring = ctx.insert_mmap(Mappable::Pages(pages), size)?;
            resp.rq_db_offset = in_page(created.rq_db_offset);
            resp.rq_db_mmap_key = rq_db.offset();
            resp.rq_mmap_key = ring.offset();
            resp.rq_mmap_size = size as u64;
            qp.maps.push(rq_db, GFP_KERNEL)?;
            qp.maps.push(ring, GFP_KERNEL)?;
        }
        udata.respond(&resp)?;
        Ok(qp)
    }

    /// `reg_user_mr` without the error count.
    fn try_reg_mr(
        &self,
        dev: &ib::Device<Self>,
        pd: &Pd,
        region: &MrInit,
        udata: &mut Udata<'_>,
    ) -> Result<(Mr, u32, u32)> {
        let a = self.attributes();
        udata.require_empty()?;
        let mut supported = access::LOCAL_WRITE;
        if a.has(device_cap::RDMA_READ) {
            supported |= access::REMOTE_READ;
        }
        if a.has(device_cap::RDMA_WRITE) {
            supported |= access::REMOTE_WRITE;
        }
        let flags = region.access & !access::OPTIONAL;
        if flags & !supported != 0 {
            return Err(EOPNOTSUPP);
        }
        let umem = Umem::get(dev, region.start, usize::try_from(region.len)?, flags)?;
        let page_size = umem
            .best_page_size(a.page_size_cap, region.iova)
            .ok_or(EOPNOTSUPP)?;
        let mut inline = [0u64; INLINE_PBL];
        let n = umem.dma_blocks(page_size, &mut inline);
        if n > a.max_mr_pages as usize {
            return Err(EINVAL);
        }
        let params = |pages| MrParams {
            pd: pd.pdn,
            pages,
            page_num: n as u32,
            page_shift: page_size.trailing_zeros(),
            len: region.len,
            iova: region.iova,
            // The device's permission bits are the access flags' (local write, remote write,
            // remote read).
            permissions: flags as u8,
        };
        let (lkey, rkey) = if n <= INLINE_PBL {
            self.dev.reg_mr(&params(PageList::Inline(&inline[..n])))?
        } else {
            // A physically contiguous list of the page addresses, little-endian.
            let mut pages = KVVec::from_elem(0u64, n, GFP_KERNEL)?;
            umem.dma_blocks(page_size, &mut pages);
            let mut bytes = KVVec::with_capacity(n * 8, GFP_KERNEL)?;
            for page in pages.iter() {
                bytes.extend_from_slice(&page.to_le_bytes(), GFP_KERNEL)?;
            }
            let list: Coherent<[u8]> = Coherent::zeroed_slice(self.dev.dma_dev, n * 8, GFP_KERNEL)?;
            io_project!(list, [panic: 0..n * 8]).copy_from_slice(&bytes);
            self.dev.reg_mr(&params(PageList::Buffer(
                list.dma_address(),
                u32::try_from(n * 8)?,
            )))?
        };
        Ok((Mr { lkey, _umem: umem }, lkey, rkey))
    }
}

/// Whether an SRD QP may move from `cur` to `next` with the attributes `mask` names: EFA's state
/// table (`srd_qp_state_table` in efa_verbs.c), which differs from UD's in taking an RNR retry
/// count on the way to RTS.
fn srd_transition_ok(cur: u32, next: u32, mask: u32) -> bool {
    use ib::qp_state::{ERR, INIT, RESET, RTR, RTS, SQD, SQE};
    use qp_attr::{CUR_STATE, EN_SQD_ASYNC_NOTIFY, PKEY_INDEX, PORT, QKEY, RNR_RETRY, SQ_PSN};
    if mask & CUR_STATE != 0 && ![RTR, RTS, SQD, SQE].contains(&cur) {
        return false;
    }
    // (required, optional) attributes of each allowed transition.
    let (required, optional) = match (cur, next) {
        (RESET, RESET) | (INIT..=ERR, RESET | ERR) => (0, 0),
        (RESET, INIT) => (PKEY_INDEX | PORT | QKEY, 0),
        (INIT, INIT) => (0, PKEY_INDEX | PORT | QKEY),
        (INIT, RTR) => (0, PKEY_INDEX | QKEY),
        (RTR, RTS) => (SQ_PSN, CUR_STATE | QKEY | RNR_RETRY),
        (RTS, RTS) | (SQD, RTS) | (SQE, RTS) => (0, CUR_STATE | QKEY),
        (RTS, SQD) => (0, EN_SQD_ASYNC_NOTIFY),
        (SQD, SQD) => (0, PKEY_INDEX | QKEY),
        _ => return false,
    };
    mask & required == required && mask & !(required | optional | qp_attr::STATE) == 0
}

/// Bytes of a receive completion without and with the source address (`efa_io_rx_cdesc`,
/// `efa_io_rx_cdesc_ex`).
const CQE: u32 = 16;
/// See [`CQE`].
const CQE_EX: u32 = 32;

/// The offset of a BAR offset within its page.
fn in_page(offset: u32) -> u32 {
    offset & (PAGE_BYTES as u32 - 1)
}

/// A completion queue: its index, its ring (mapped for the device and the process) and its
/// doorbell page. The mappings go before the ring's DMA mapping.
pub(crate) struct Cq {
    idx: u16,
    ring_map: Option<MmapEntry>,
    db_map: Option<MmapEntry>,
    _ring: DmaPages,
}

/// A queue pair.
pub(crate) struct Qp {
    handle: u32,
    qp_type: QpType,
    /// The state its last modification left it in.
    state: Atomic<u32>,
    cap: QpCap,
    /// Its doorbells, LLQ descriptors and RQ ring, as the process maps them.
    maps: KVec<MmapEntry>,
    _rq: Option<DmaPages>,
}

/// A memory region: its local key and the pinned memory.
pub(crate) struct Mr {
    lkey: u32,
    _umem: Umem,
}

/// A user context: the user access region its doorbells will live in.
pub(crate) struct Context {
    uar: u16,
}

/// A protection domain.
pub(crate) struct Pd {
    pdn: u16,
}

/// An address handle: the device's AH number, and its PD's (which destroying it names).
pub(crate) struct Ah {
    ah: u16,
    pdn: u16,
}

/// One of the device's address handles and how many [`Ah`]s share it.
struct SharedAh {
    pdn: u16,
    gid: [u8; 16],
    ah: u16,
    users: u32,
}

/// Counts an error of a verb in `counter`.
fn counted<T>(counter: &Atomic<u64>, r: Result<T>) -> Result<T> {
    if r.is_err() {
        counter.fetch_add(1, Relaxed);
    }
    r
}

/// Lane speed and width of a link of `gbps` (`efa_link_gbps_to_speed_and_width`).
fn speed_and_width(gbps: u16) -> (u16, u8) {
    match gbps {
        1600.. => (speed::XDR, width::X8),
        800.. => (speed::NDR, width::X8),
        400.. => (speed::HDR, width::X8),
        200.. => (speed::HDR, width::X4),
        120.. => (speed::FDR10, width::X12),
        100.. => (speed::EDR, width::X4),
        60.. => (speed::DDR, width::X12),
        50.. => (speed::HDR, width::X1),
        40.. => (speed::FDR10, width::X4),
        30.. => (speed::SDR, width::X12),
        _ => (speed::EDR, width::X1),
    }
}

/// Device counters, as efa.ko names them.
const DEVICE_COUNTERS: [Counter; 12] = [
    Counter::new(c"submitted_cmds"),
    Counter::new(c"completed_cmds"),
    Counter::new(c"cmds_err"),
    Counter::new(c"no_completion_cmds"),
    Counter::new(c"keep_alive_rcvd"),
    Counter::new(c"alloc_pd_err"),
    Counter::new(c"create_qp_err"),
    Counter::new(c"create_cq_err"),
    Counter::new(c"reg_mr_err"),
    Counter::new(c"alloc_ucontext_err"),
    Counter::new(c"create_ah_err"),
    Counter::new(c"mmap_err"),
];

/// Port counters, as efa.ko names them, grouped by the GET_STATS type that reads them.
const PORT_COUNTERS: [Counter; 22] = [
    Counter::new(c"tx_bytes"),
    Counter::new(c"tx_pkts"),
    Counter::new(c"rx_bytes"),
    Counter::new(c"rx_pkts"),
    Counter::new(c"rx_drops"),
    Counter::new(c"send_bytes"),
    Counter::new(c"send_wrs"),
    Counter::new(c"recv_bytes"),
    Counter::new(c"recv_wrs"),
    Counter::new(c"rdma_read_wrs"),
    Counter::new(c"rdma_read_bytes"),
    Counter::new(c"rdma_read_wr_err"),
    Counter::new(c"rdma_read_resp_bytes"),
    Counter::new(c"rdma_write_wrs"),
    Counter::new(c"rdma_write_bytes"),
    Counter::new(c"rdma_write_wr_err"),
    Counter::new(c"rdma_write_recv_bytes"),
    Counter::new(c"retrans_bytes"),
    Counter::new(c"retrans_pkts"),
    Counter::new(c"retrans_timeout_events"),
    Counter::new(c"unresponsive_remote_events"),
    Counter::new(c"impaired_remote_conn_events"),
];

/// Where each GET_STATS type's counters go in [`PORT_COUNTERS`]: the type, the first index and
/// how many.
const PORT_GROUPS: [(StatsType, usize, usize); 5] = [
    (StatsType::Basic, 0, 5),
    (StatsType::Messages, 5, 4),
    (StatsType::RdmaRead, 9, 4),
    (StatsType::RdmaWrite, 13, 4),
    (StatsType::Network, 17, 5),
];

impl ib::Operations for EfaIb<'_> {
    type Context = Context;
    type Pd = Pd;
    type Ah = Ah;
    type Cq = Cq;
    type Qp = Qp;
    type Mr = Mr;

    const DEVICE_COUNTERS: &'static [Counter] = &DEVICE_COUNTERS;
    const PORT_COUNTERS: &'static [Counter] = &PORT_COUNTERS;

    fn query_device(dev: &ib::Device<Self>, udata: &mut Udata<'_>) -> Result<DeviceAttr> {
        let this = dev.data();
        let a = this.attributes();
        udata.require_empty()?;
        if udata.out_len() > 0 {
            // Not CQ_WITH_EXT_MEM: rings in the process's own memory are not offered.
            let mut caps = device_caps::CQ_WITH_SGID;
            if !this.dev.eqs.is_empty() {
                caps |= device_caps::CQ_NOTIFICATIONS;
            }
            for (device, user) in [
                (device_cap::RDMA_READ, device_caps::RDMA_READ),
                (device_cap::RNR_RETRY, device_caps::RNR_RETRY),
                (device_cap::DATA_POLLING_128, device_caps::DATA_POLLING_128),
                (device_cap::RDMA_WRITE, device_caps::RDMA_WRITE),
                (
                    device_cap::UNSOLICITED_WRITE_RECV,
                    device_caps::UNSOLICITED_WRITE_RECV,
                ),
            ] {
                if a.has(device) {
                    caps |= user;
                }
            }
            udata.respond(&ExQueryDeviceResp {
                max_sq_wr: a.max_sq_depth,
                max_rq_wr: a.max_rq_depth,
                max_sq_sge: a.max_sq_sge,
                max_rq_sge: a.max_rq_sge,
                max_rdma_size: a.max_rdma_size,
                device_caps: caps,
                ..Default::default()
            })?;
        }
        Ok(DeviceAttr {
            fw_ver: a.fw_version.into(),
            max_mr_size: u64::from(a.max_mr_pages) * PAGE_SIZE,
            page_size_cap: a.page_size_cap,
            vendor_id: this.dev.vendor,
            vendor_part_id: this.dev.device_id,
            hw_ver: this.dev.subsystem_device,
            max_qp: a.max_qp,
            max_qp_wr: a.max_sq_depth.min(a.max_rq_depth),
            max_send_sge: a.max_sq_sge.into(),
            max_recv_sge: a.max_rq_sge.into(),
            max_sge_rd: a.max_rdma_sge.into(),
            max_cq: a.max_cq,
            max_cqe: a.max_cq_depth,
            max_mr: a.max_mr,
            max_pd: a.max_pd,
            max_ah: a.max_ah,
            max_pkeys: 1,
        })
    }

    fn query_port(dev: &ib::Device<Self>, _port: u32) -> Result<PortAttr> {
        let a = dev.data().attributes();
        let (active_speed, active_width) = speed_and_width(a.max_link_speed_gbps);
        Ok(PortAttr {
            active: !dev.data().dev.failed(),
            mtu: a.mtu,
            max_msg_sz: a.mtu,
            gid_tbl_len: 1,
            pkey_tbl_len: 1,
            lmc: 1,
            max_vl_num: 1,
            active_speed,
            active_width,
        })
    }

    fn query_gid(dev: &ib::Device<Self>, _port: u32, index: u32) -> Result<[u8; 16]> {
        if index > 0 {
            return Err(EINVAL);
        }
        Ok(dev.data().attributes().gid)
    }

    fn query_pkey(_dev: &ib::Device<Self>, _port: u32, index: u16) -> Result<u16> {
        if index > 0 {
            return Err(EINVAL);
        }
        Ok(0xffff)
    }

    fn alloc_context(dev: &ib::Device<Self>, udata: &mut Udata<'_>) -> Result<Context> {
        let this = dev.data();
        counted(&this.alloc_ucontext_err, this.try_alloc_context(udata))
    }

    fn dealloc_context(dev: &ib::Device<Self>, context: Context) {
        // A failure leaves the region to the device's next reset.
        let _ = dev.data().dev.dealloc_uar(context.uar);
    }

    fn alloc_pd(dev: &ib::Device<Self>, udata: &mut Udata<'_>) -> Result<Pd> {
        let this = dev.data();
        counted(&this.alloc_pd_err, this.try_alloc_pd(udata))
    }

    fn dealloc_pd(dev: &ib::Device<Self>, pd: Pd) {
        let _ = dev.data().dev.dealloc_pd(pd.pdn);
    }

    fn create_ah(
        dev: &ib::Device<Self>,
        pd: &Pd,
        dgid: &[u8; 16],
        udata: &mut Udata<'_>,
    ) -> Result<Ah> {
        let this = dev.data();
        counted(&this.create_ah_err, this.try_create_ah(pd, dgid, udata))
    }

    fn destroy_ah(dev: &ib::Device<Self>, ah: Ah) {
        dev.data().put_ah(ah);
    }

    fn create_cq(
        dev: &ib::Device<Self>,
        ctx: &UserContext<'_, Self>,
        init: &CqInit,
        udata: &mut Udata<'_>,
    ) -> Result<(Cq, u32)> {
        let this = dev.data();
        counted(&this.create_cq_err, this.try_create_cq(ctx, init, udata))
    }

    fn destroy_cq(dev: &ib::Device<Self>, cq: Cq) {
        // The device stops writing the ring before its mappings go.
        let _ = dev.data().dev.destroy_cq(cq.idx);
        drop(cq);
    }

    fn create_qp(
        dev: &ib::Device<Self>,
        ctx: &UserContext<'_, Self>,
        pd: &Pd,
        init: &QpInit<'_, Self>,
        udata: &mut Udata<'_>,
    ) -> Result<(Qp, u32)> {
        let this = dev.data();
        counted(
            &this.create_qp_err,
            this.try_create_qp(ctx, pd, init, udata),
        )
    }

    fn modify_qp(
        dev: &ib::Device<Self>,
        qp: &Qp,
        attr: &QpAttr,
        mask: u32,
        udata: &mut Udata<'_>,
    ) -> Result {
        const SUPPORTED: u32 = qp_attr::STATE
            | qp_attr::CUR_STATE
            | qp_attr::EN_SQD_ASYNC_NOTIFY
            | qp_attr::PKEY_INDEX
            | qp_attr::PORT
            | qp_attr::QKEY
            | qp_attr::SQ_PSN
            | qp_attr::RNR_RETRY;
        let this = dev.data();
        if mask & !qp_attr::STANDARD != 0 || mask & !SUPPORTED != 0 {
            return Err(EOPNOTSUPP);
        }
        udata.require_empty()?;
        let current = if mask & qp_attr::CUR_STATE != 0 {
            attr.cur_qp_state
        } else {
            qp.state.load(Relaxed)
        };
        let next = if mask & qp_attr::STATE != 0 {
            attr.qp_state
        } else {
            current
        };
        // UD QPs move through the states as the core's table has it, SRD QPs as EFA's
        // (efa_modify_qp_validate).
        let allowed = match qp.qp_type {
            QpType::Ud => modify_qp_is_ok(current, next, ib::QpType::Ud, mask),
            QpType::Srd => srd_transition_ok(current, next, mask),
        };
        if !allowed {
            return Err(EINVAL);
        }
        if (mask & qp_attr::PORT != 0 && attr.port_num != 1)
            || (mask & qp_attr::PKEY_INDEX != 0 && attr.pkey_index != 0)
        {
            return Err(EOPNOTSUPP);
        }
        let pick = |bit: u32| mask & bit != 0;
        this.dev.modify_qp(
            qp.handle,
            &QpModify {
                state: pick(qp_attr::STATE).then_some((next, current)),
                qkey: pick(qp_attr::QKEY).then_some(attr.qkey),
                sq_psn: pick(qp_attr::SQ_PSN).then_some(attr.sq_psn),
                sq_drained_notify: pick(qp_attr::EN_SQD_ASYNC_NOTIFY)
                    .then_some(attr.en_sqd_async_notify),
                rnr_retry: pick(qp_attr::RNR_RETRY).then_some(attr.rnr_retry),
            },
        )?;
        qp.state.store(next, Relaxed);
        Ok(())
    }

    fn query_qp(dev: &ib::Device<Self>, qp: &Qp, mask: u32) -> Result<QpAttr> {
        const SUPPORTED: u32 = qp_attr::STATE
            | qp_attr::PKEY_INDEX
            | qp_attr::PORT
            | qp_attr::QKEY
            | qp_attr::SQ_PSN
            | qp_attr::CAP
            | qp_attr::RNR_RETRY;
        if mask & !SUPPORTED != 0 {
            return Err(EOPNOTSUPP);
        }
        let s = dev.data().dev.query_qp(qp.handle)?;
        Ok(QpAttr {
            qp_state: s.state,
            qkey: s.qkey,
            sq_psn: s.sq_psn,
            sq_draining: s.sq_draining,
            rnr_retry: s.rnr_retry,
            port_num: 1,
            cap: qp.cap,
            ..Default::default()
        })
    }

    fn destroy_qp(dev: &ib::Device<Self>, qp: Qp) {
        // The device stops using the rings before their mappings go.
        let _ = dev.data().dev.destroy_qp(qp.handle);
        drop(qp);
    }

    fn reg_user_mr(
        dev: &ib::Device<Self>,
        pd: &Pd,
        region: &MrInit,
        udata: &mut Udata<'_>,
    ) -> Result<(Mr, u32, u32)> {
        let this = dev.data();
        counted(&this.reg_mr_err, this.try_reg_mr(dev, pd, region, udata))
    }

    fn dereg_mr(dev: &ib::Device<Self>, mr: Mr) {
        // The device lets go of the pages before they are unpinned.
        let _ = dev.data().dev.dereg_mr(mr.lkey);
        drop(mr);
    }

    fn cq_table(dev: &ib::Device<Self>) -> Option<&ib::CqTable> {
        let dev = &dev.data().dev;
        (!dev.eqs.is_empty()).then_some(&*dev.cqs)
    }

    fn mmap_failed(dev: &ib::Device<Self>) {
        dev.data().mmap_err.fetch_add(1, Relaxed);
    }

    fn cq_key(cq: &Cq) -> u32 {
        cq.idx.into()
    }

    fn device_counters(dev: &ib::Device<Self>, values: &mut [u64]) -> Result {
        let this = dev.data();
        let admin = this.dev.admin_stats();
        let counts = [
            admin.submitted,
            admin.completed,
            admin.failed,
            admin.no_completion,
            this.dev.keep_alives(),
            this.alloc_pd_err.load(Relaxed),
            this.create_qp_err.load(Relaxed),
            this.create_cq_err.load(Relaxed),
            this.reg_mr_err.load(Relaxed),
            this.alloc_ucontext_err.load(Relaxed),
            this.create_ah_err.load(Relaxed),
            this.mmap_err.load(Relaxed),
        ];
        for (v, c) in values.iter_mut().zip(counts) {
            *v = c;
        }
        Ok(())
    }

    fn port_counters(dev: &ib::Device<Self>, _port: u32, values: &mut [u64]) -> Result {
        let this = dev.data();
        for (kind, first, n) in PORT_GROUPS {
            if matches!(kind, StatsType::RdmaWrite)
                && !this.attributes().has(device_cap::RDMA_WRITE)
            {
                continue;
            }
            let slot = values.get_mut(first..first + n).ok_or(EINVAL)?;
            this.dev.stats(kind, slot)?;
        }
        Ok(())
    }
}
