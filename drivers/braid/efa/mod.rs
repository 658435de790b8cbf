// SPDX-License-Identifier: GPL-2.0

//! The EFA function's device protocol (`efa_com.c`, `efa_com_cmd.c` and `efa_admin_cmds_defs.h` in
//! the upstream driver are the specification): reset, admin queue and events through the shared
//! [`crate::com`] layer, the device's attributes, and the admin commands the verbs need.
//! [`verbs`] makes an RDMA device of it; [`function`] watches it and brings it back when it fails.

#![forbid(unsafe_code)]

pub(crate) mod eq;
pub(crate) mod function;
pub(crate) mod regs;
pub(crate) mod verbs;

use kernel::{
    device::{self, Bound},
    io::Io,
    irq::{Handler, IrqReturn},
    new_mutex, new_spinlock_irq, pci,
    prelude::*,
    sync::{
        atomic::{Atomic, Relaxed},
        Arc, Mutex, SpinLockIrq,
    },
};

use self::eq::Eq;
use crate::com::{
    admin::{get_u64, put_u64, AdminQueue, AdminStats, Entry},
    aenq::{group, Aenq, Event, HeadDoorbell},
    feature_command, reset,
};
use crate::kapi::{ib::CqTable, irq::Wakeup};
use crate::regs::{DEV_STS, INTR_MASK, REG_PAGE_SIZE};

/// `EFA_ADMIN_CREATE_QP`.
const CREATE_QP: u8 = 1;
/// `EFA_ADMIN_MODIFY_QP`.
const MODIFY_QP: u8 = 2;
/// `EFA_ADMIN_QUERY_QP`.
const QUERY_QP: u8 = 3;
/// `EFA_ADMIN_DESTROY_QP`.
const DESTROY_QP: u8 = 4;
/// `EFA_ADMIN_REG_MR`.
const REG_MR: u8 = 7;
/// `EFA_ADMIN_DEREG_MR`.
const DEREG_MR: u8 = 8;
/// `EFA_ADMIN_CREATE_CQ`.
const CREATE_CQ: u8 = 9;
/// `EFA_ADMIN_DESTROY_CQ`.
const DESTROY_CQ: u8 = 10;
/// `EFA_ADMIN_CREATE_EQ`.
const CREATE_EQ: u8 = 18;
/// `EFA_ADMIN_CREATE_AH`.
const CREATE_AH: u8 = 5;
/// `EFA_ADMIN_DESTROY_AH`.
const DESTROY_AH: u8 = 6;
/// `EFA_ADMIN_GET_FEATURE`.
const GET_FEATURE: u8 = 11;
/// `EFA_ADMIN_SET_FEATURE`.
const SET_FEATURE: u8 = 12;
/// `EFA_ADMIN_GET_STATS`.
const GET_STATS: u8 = 13;
/// `EFA_ADMIN_ALLOC_PD`.
const ALLOC_PD: u8 = 14;
/// `EFA_ADMIN_DEALLOC_PD`.
const DEALLOC_PD: u8 = 15;
/// `EFA_ADMIN_ALLOC_UAR`.
const ALLOC_UAR: u8 = 16;
/// `EFA_ADMIN_DEALLOC_UAR`.
const DEALLOC_UAR: u8 = 17;

/// `enum efa_admin_aq_feature_id`.
mod feature {
    /// `EFA_ADMIN_DEVICE_ATTR`.
    pub(super) const DEVICE_ATTR: u32 = 1;
    /// `EFA_ADMIN_AENQ_CONFIG`.
    pub(super) const AENQ_CONFIG: u32 = 2;
    /// `EFA_ADMIN_NETWORK_ATTR`.
    pub(super) const NETWORK_ATTR: u32 = 3;
    /// `EFA_ADMIN_QUEUE_ATTR_1`.
    pub(super) const QUEUE_ATTR_1: u32 = 4;
    /// `EFA_ADMIN_EVENT_QUEUE_ATTR`.
    pub(super) const EVENT_QUEUE_ATTR: u32 = 7;
    /// `EFA_ADMIN_QUEUE_ATTR_2`.
    pub(super) const QUEUE_ATTR_2: u32 = 9;
}

/// Page addresses a REG_MR command carries inline (`inline_pbl_array`).
pub(crate) const INLINE_PBL: usize = 4;

/// `enum efa_admin_qp_type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum QpType {
    /// Unreliable datagram.
    Ud = 1,
    /// Scalable reliable datagram.
    Srd = 2,
}

/// A CREATE_CQ request (`efa_admin_create_cq_cmd`).
pub(crate) struct CqParams {
    /// Entries per sub-CQ (a power of two).
    pub(crate) sub_cq_depth: u16,
    /// Sub-CQs.
    pub(crate) num_sub_cqs: u16,
    /// Entry size, bytes (16 or 32).
    pub(crate) entry_size: u32,
    /// Fill in the source address of receives (32-byte entries).
    pub(crate) set_src_addr: bool,
    /// The ring.
    pub(crate) ring: u64,
    /// The user context's UAR.
    pub(crate) uar: u16,
    /// The event queue of its completion events, if it has them.
    pub(crate) eqn: Option<u16>,
}

/// What CREATE_CQ answers (`efa_admin_create_cq_resp`).
pub(crate) struct CqCreated {
    /// The CQ's index.
    pub(crate) idx: u16,
    /// Entries per sub-CQ.
    pub(crate) depth: u16,
    /// The doorbell's offset in the doorbell BAR, if it has one.
    pub(crate) db_offset: Option<u32>,
}

/// A CREATE_QP request (`efa_admin_create_qp_cmd`).
pub(crate) struct QpParams {
    /// Its PD.
    pub(crate) pd: u16,
    /// Its type.
    pub(crate) qp_type: QpType,
    /// The RQ ring (0: none).
    pub(crate) rq_ring: u64,
    /// The CQs of sends and receives.
    pub(crate) send_cq: u16,
    /// The CQ of receives.
    pub(crate) recv_cq: u16,
    /// SQ ring bytes and depth, RQ ring bytes and depth (`efa_admin_qp_alloc_size`).
    pub(crate) sq_ring_size: u32,
    /// SQ depth.
    pub(crate) sq_depth: u32,
    /// RQ ring bytes.
    pub(crate) rq_ring_size: u32,
    /// RQ depth.
    pub(crate) rq_depth: u32,
    /// The user context's UAR.
    pub(crate) uar: u16,
    /// Service level.
    pub(crate) sl: u8,
}

/// What CREATE_QP answers (`efa_admin_create_qp_resp`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct QpCreated {
    /// The handle later commands name.
    pub(crate) handle: u32,
    /// The QP number.
    pub(crate) num: u16,
    /// Sub-CQ of sends.
    pub(crate) send_sub_cq: u16,
    /// Sub-CQ of receives.
    pub(crate) recv_sub_cq: u16,
    /// SQ doorbell, offset in the doorbell BAR.
    pub(crate) sq_db_offset: u32,
    /// RQ doorbell, offset in the doorbell BAR.
    pub(crate) rq_db_offset: u32,
    /// The SQ's LLQ descriptors, offset in the LLQ BAR.
    pub(crate) llq_offset: u32,
}

/// A MODIFY_QP request (`efa_admin_modify_qp_cmd`); `None`: unchanged.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct QpModify {
    /// The new state and the state it is believed to be in.
    pub(crate) state: Option<(u32, u32)>,
    /// Q_Key.
    pub(crate) qkey: Option<u32>,
    /// Send PSN.
    pub(crate) sq_psn: Option<u32>,
    /// Notify when the SQ is drained.
    pub(crate) sq_drained_notify: Option<u8>,
    /// RNR retries.
    pub(crate) rnr_retry: Option<u8>,
}

/// What QUERY_QP answers (`efa_admin_query_qp_resp`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct QpState {
    /// State.
    pub(crate) state: u32,
    /// Q_Key.
    pub(crate) qkey: u32,
    /// Send PSN.
    pub(crate) sq_psn: u32,
    /// The SQ is draining.
    pub(crate) sq_draining: u8,
    /// RNR retries.
    pub(crate) rnr_retry: u8,
}

/// Where a REG_MR command's page list is.
pub(crate) enum PageList<'a> {
    /// Up to [`INLINE_PBL`] page addresses in the command.
    Inline(&'a [u64]),
    /// A physically contiguous buffer of page addresses: its bus address and length in bytes.
    Buffer(u64, u32),
}

/// A REG_MR request (`efa_admin_reg_mr_cmd`).
pub(crate) struct MrParams<'a> {
    /// Its PD.
    pub(crate) pd: u16,
    /// The pages.
    pub(crate) pages: PageList<'a>,
    /// How many.
    pub(crate) page_num: u32,
    /// log2 of their size.
    pub(crate) page_shift: u32,
    /// Bytes.
    pub(crate) len: u64,
    /// IO virtual address of the first byte.
    pub(crate) iova: u64,
    /// Permissions: local write (bit 0), remote write (1), remote read (2).
    pub(crate) permissions: u8,
}

/// `device_caps` bits of `efa_admin_feature_device_attr_desc`.
pub(crate) mod device_cap {
    /// RDMA read.
    pub(crate) const RDMA_READ: u32 = 1 << 0;
    /// RNR retry.
    pub(crate) const RNR_RETRY: u32 = 1 << 1;
    /// 128-byte data polling.
    pub(crate) const DATA_POLLING_128: u32 = 1 << 2;
    /// RDMA write.
    pub(crate) const RDMA_WRITE: u32 = 1 << 3;
    /// Unsolicited write receive.
    pub(crate) const UNSOLICITED_WRITE_RECV: u32 = 1 << 4;
}

/// The event groups braid.ko enables: it watches keep-alives and fatal errors.
const WANTED_GROUPS: u32 = group::FATAL_ERROR | group::KEEP_ALIVE;

/// `enum efa_admin_get_stats_type`, each with the number of counters its answer carries (u64s
/// after the completion header) in `efa_admin_*_stats`.
#[derive(Clone, Copy, Debug)]
pub(crate) enum StatsType {
    /// tx_bytes, tx_pkts, rx_bytes, rx_pkts, rx_drops (and qkey_viol, unread).
    Basic = 0,
    /// send_bytes, send_wrs, recv_bytes, recv_wrs.
    Messages = 1,
    /// read_wrs, read_bytes, read_wr_err, read_resp_bytes.
    RdmaRead = 2,
    /// write_wrs, write_bytes, write_wr_err, write_recv_bytes.
    RdmaWrite = 3,
    /// retrans_bytes, retrans_pkts, retrans_timeout_events, unresponsive_remote_events,
    /// impaired_remote_conn_events.
    Network = 4,
}

/// What the device tells about itself: `efa_admin_feature_device_attr_desc`,
/// `efa_admin_feature_queue_attr_desc_1` (and `_2`), `efa_admin_feature_network_attr_desc`.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Attributes {
    /// Feature ids the device answers, one bit each.
    pub(crate) supported_features: u64,
    /// Page sizes memory regions may use.
    pub(crate) page_size_cap: u64,
    /// Firmware version.
    pub(crate) fw_version: u32,
    /// Admin API version (at least 1).
    pub(crate) admin_api_version: u32,
    /// Device version.
    pub(crate) device_version: u32,
    /// BAR of the doorbells.
    pub(crate) db_bar: u16,
    /// Physical address bits.
    pub(crate) phys_addr_width: u8,
    /// Virtual address bits.
    pub(crate) virt_addr_width: u8,
    /// [`device_cap`] bits.
    pub(crate) device_caps: u32,
    /// Largest RDMA read or write, bytes.
    pub(crate) max_rdma_size: u32,
    /// The node GUID.
    pub(crate) guid: u64,
    /// Link speed, Gb/s (100 when the device does not say).
    pub(crate) max_link_speed_gbps: u16,
    /// Queue pairs.
    pub(crate) max_qp: u32,
    /// Deepest SQ.
    pub(crate) max_sq_depth: u32,
    /// Largest inline send, bytes.
    pub(crate) inline_buf_size: u32,
    /// Largest inline send, bytes, beyond 16 bits.
    pub(crate) inline_buf_size_ex: u16,
    /// Deepest RQ.
    pub(crate) max_rq_depth: u32,
    /// Completion queues.
    pub(crate) max_cq: u32,
    /// Deepest CQ.
    pub(crate) max_cq_depth: u32,
    /// Sub-CQs per CQ.
    pub(crate) sub_cqs_per_cq: u16,
    /// Shallowest SQ.
    pub(crate) min_sq_depth: u16,
    /// SGEs of a send.
    pub(crate) max_sq_sge: u16,
    /// SGEs of a receive.
    pub(crate) max_rq_sge: u16,
    /// Memory regions.
    pub(crate) max_mr: u32,
    /// Pages of a memory region.
    pub(crate) max_mr_pages: u32,
    /// Protection domains.
    pub(crate) max_pd: u32,
    /// Address handles.
    pub(crate) max_ah: u32,
    /// Largest LLQ, bytes.
    pub(crate) max_llq_size: u32,
    /// SGEs of an RDMA read or write.
    pub(crate) max_rdma_sge: u16,
    /// Most 64-byte WQEs between TX doorbells.
    pub(crate) max_tx_batch: u16,
    /// The port's GID.
    pub(crate) gid: [u8; 16],
    /// The port's MTU.
    pub(crate) mtu: u32,
    /// Completion event queues (`efa_admin_event_queue_attr_desc`; 0: none).
    pub(crate) max_eq: u32,
    /// Events per queue.
    pub(crate) max_eq_depth: u32,
}

/// The low and high halves of word `i`.
fn halves(c: &Entry, i: usize) -> (u16, u16) {
    (c[i] as u16, (c[i] >> 16) as u16)
}

impl Attributes {
    /// Reads the attributes, as `efa_com_get_device_attr` does. Completion bodies start at word 2
    /// (after `efa_admin_acq_common_desc`).
    fn read(admin: &mut AdminQueue, regs: &Regs<'_>) -> Result<Self> {
        let mut get = |id| admin.execute(regs, GET_FEATURE, feature_command(id));
        let d = get(feature::DEVICE_ATTR)?;
        let (db_bar, widths) = halves(&d, 9);
        let mut a = Attributes {
            supported_features: get_u64(&d, 2),
            page_size_cap: get_u64(&d, 4),
            fw_version: d[6],
            admin_api_version: d[7],
            device_version: d[8],
            db_bar,
            phys_addr_width: widths as u8,
            virt_addr_width: (widths >> 8) as u8,
            device_caps: d[10],
            max_rdma_size: d[11],
            guid: get_u64(&d, 12),
            max_link_speed_gbps: match d[14] as u16 {
                0 => 100,
                gbps => gbps,
            },
            ..Default::default()
        };
        if a.admin_api_version < 1 {
            return Err(EINVAL);
        }

        let q = get(feature::QUEUE_ATTR_1)?;
        a.max_qp = q[2];
        a.max_sq_depth = q[3];
        a.inline_buf_size = q[4];
        a.max_rq_depth = q[5];
        a.max_cq = q[6];
        a.max_cq_depth = q[7];
        (a.sub_cqs_per_cq, a.min_sq_depth) = halves(&q, 8);
        (a.max_sq_sge, a.max_rq_sge) = halves(&q, 9);
        a.max_mr = q[10];
        a.max_mr_pages = q[11];
        a.max_pd = q[12];
        a.max_ah = q[13];
        a.max_llq_size = q[14];
        (a.max_rdma_sge, a.max_tx_batch) = halves(&q, 15);
        a.inline_buf_size_ex = if a.supports(feature::QUEUE_ATTR_2) {
            get(feature::QUEUE_ATTR_2)?[2] as u16
        } else {
            a.inline_buf_size as u16
        };

        let n = get(feature::NETWORK_ATTR)?;
        for (i, chunk) in a.gid.chunks_exact_mut(4).enumerate() {
            chunk.copy_from_slice(&n[2 + i].to_le_bytes());
        }
        a.mtu = n[6];
        if a.supports(feature::EVENT_QUEUE_ATTR) {
            let e = get(feature::EVENT_QUEUE_ATTR)?;
            // Only completion events (bit 0 of the event bitmask) are of use.
            if e[4] & 1 != 0 {
                (a.max_eq, a.max_eq_depth) = (e[2], e[3]);
            }
        }
        Ok(a)
    }

    /// Whether the device answers feature `id`.
    fn supports(&self, id: u32) -> bool {
        id < 64 && self.supported_features & (1 << id) != 0
    }

    /// Whether the device has [`device_cap`] bit `cap`.
    pub(crate) fn has(&self, cap: u32) -> bool {
        self.device_caps & cap == cap
    }
}

/// The BAR of the low-latency queues (`EFA_MEM_BAR`).
const LLQ_BAR: u32 = 2;

/// The control registers (BAR0's trapped page).
pub(crate) type Regs<'bound> = pci::Bar<'bound, REG_PAGE_SIZE>;

/// The device's event queue, polled from the management interrupt.
#[pin_data]
pub(crate) struct Events<'bound> {
    pdev: &'bound pci::Device,
    regs: Arc<Regs<'bound>>,
    #[pin]
    aenq: SpinLockIrq<Aenq>,
    /// Keep-alive events taken.
    keep_alives: Atomic<u64>,
    /// The device reported a fatal error.
    fatal: Atomic<bool>,
    /// Given at each interrupt, for a thread that waits for an admin completion.
    admin_wakeup: Arc<Wakeup>,
}

impl Events<'_> {
    /// Takes the events the device posted.
    fn poll(&self) -> usize {
        self.aenq.lock().poll(&self.regs, |event| match event {
            Event::KeepAlive { .. } => {
                self.keep_alives.fetch_add(1, Relaxed);
            }
            // The service takes it from here (efa.ko logs nothing and does nothing).
            Event::FatalError => {
                dev_err!(self.pdev, "EFA device reported a fatal error\n");
                self.fatal.store(true, Relaxed);
            }
            _ => {}
        })
    }

    /// Keep-alive events taken since probe.
    pub(crate) fn keep_alives(&self) -> u64 {
        self.keep_alives.load(Relaxed)
    }
}

/// The handler of the management vector (0): events (admin completions are polled).
pub(crate) struct EventInterrupt<'bound>(Arc<Events<'bound>>);

impl<'bound> EventInterrupt<'bound> {
    /// The handler that takes `events`.
    pub(crate) fn new(events: &Arc<Events<'bound>>) -> Self {
        Self(events.clone())
    }
}

impl Handler for EventInterrupt<'_> {
    fn handle(&self) -> IrqReturn {
        // The vector is shared by events and admin completions; cheap to wake for nothing.
        self.0.admin_wakeup.wake();
        self.0.poll();
        IrqReturn::Handled
    }
}

/// Resets the device when dropped: declared before the rings, so that the device stops writing to
/// them before they are freed (a reset drops every queue).
struct ResetOnDrop<'bound> {
    pdev: &'bound pci::Device,
    regs: Arc<Regs<'bound>>,
    /// Whether [`EfaDevice::fail`] already reset the device (and nothing was brought up since).
    done: Atomic<bool>,
}

impl Drop for ResetOnDrop<'_> {
    fn drop(&mut self) {
        if self.done.load(Relaxed) {
            return;
        }
        if let Err(err) = reset(&self.regs, regs::RESET_SHUTDOWN) {
            dev_warn!(
                self.pdev,
                "EFA device did not reset at release: {:?}\n",
                err
            );
        }
    }
}

/// An EFA function brought up to a working admin queue; reset when dropped, before its rings
/// are freed.
#[pin_data]
pub(crate) struct EfaDevice<'bound> {
    reset_on_drop: ResetOnDrop<'bound>,
    regs: Arc<Regs<'bound>>,
    /// The admin queue: one command at a time.
    #[pin]
    admin: Mutex<AdminQueue>,
    /// The device stopped answering: no command goes to it any more.
    failed: Atomic<bool>,
    /// The event groups enabled.
    event_groups: u32,
    events: Arc<Events<'bound>>,
    /// The device's attributes, read at probe.
    pub(crate) attributes: Attributes,
    /// The PCI identity libefa and `ibv_devinfo` see.
    pub(crate) vendor: u32,
    /// PCI device id.
    pub(crate) device_id: u32,
    /// PCI subsystem device id.
    pub(crate) subsystem_device: u32,
    /// The device, for DMA.
    pub(crate) dma_dev: &'bound device::Device<Bound>,
    /// Physical address of the doorbell BAR.
    pub(crate) db_bar_addr: u64,
    /// Physical address of the LLQ BAR.
    pub(crate) llq_bar_addr: u64,
    /// The completion event queues, `i` on MSI-X vector `i + 1`.
    pub(crate) eqs: KVec<Arc<Eq<'bound>>>,
    /// The CQs their events name.
    pub(crate) cqs: Arc<CqTable>,
}

/// What [`bring_up`] set up.
struct BroughtUp<'bound> {
    admin: AdminQueue,
    aenq: Aenq,
    attributes: Attributes,
    event_groups: u32,
    eqs: KVec<Arc<Eq<'bound>>>,
}

/// Programs the rings, reads the attributes, enables the event groups braid.ko handles and
/// creates a completion event queue per MSI-X vector past the management one (as many as the
/// device allows), whose events find their CQs in `cqs`.
fn bring_up<'bound>(
    pdev: &pci::Device<Bound>,
    regs: &Arc<Regs<'bound>>,
    vectors: usize,
    cqs: &Arc<CqTable>,
) -> Result<BroughtUp<'bound>> {
    let mut admin = AdminQueue::new(pdev.as_ref())?;
    let mut aenq = Aenq::new(pdev.as_ref(), HeadDoorbell::Consumed)?;
    admin.program(regs);
    // No interrupt until a handler is on the vector.
    regs.write_reg(INTR_MASK::zeroed().with_admin(true));
    let attributes = Attributes::read(&mut admin, regs)?;
    aenq.program(regs);
    // `efa_admin_feature_aenq_desc`: supported in word 2 of the answer, enabled in word 6 of the
    // command.
    let supported = admin.execute(regs, GET_FEATURE, feature_command(feature::AENQ_CONFIG))?[2];
    let mut command = feature_command(feature::AENQ_CONFIG);
    let event_groups = supported & WANTED_GROUPS;
    command[6] = event_groups;
    admin.execute(regs, SET_FEATURE, command)?;
    // No CQ exists yet, so no queue gets an event before it is armed (after its interrupt
    // handler is in place), and none when a failure here drops the rings before the reset.
    let count = usize::try_from(attributes.max_eq)?.min(vectors.saturating_sub(1));
    let mut eqs = KVec::with_capacity(count, GFP_KERNEL)?;
    for i in 0..count {
        let vector = u16::try_from(i + 1)?;
        let eq = Eq::create(
            pdev.as_ref(),
            &mut admin,
            regs,
            vector,
            attributes.max_eq_depth,
            cqs,
        )?;
        eqs.push(eq, GFP_KERNEL)?;
    }
    Ok(BroughtUp {
        admin,
        aenq,
        attributes,
        event_groups,
        eqs,
    })
}

impl<'bound> EfaDevice<'bound> {
    /// Resets the device and brings it up with completion event queues for up to `vectors - 1`
    /// MSI-X vectors; returns its events (for the management interrupt), its attributes, the
    /// number of event queues and the device's initializer.
    pub(crate) fn probe(
        pdev: &'bound pci::Device<Bound>,
        regs: Arc<Regs<'bound>>,
        vectors: usize,
    ) -> Result<(
        Arc<Events<'bound>>,
        Attributes,
        usize,
        impl PinInit<Self, Error> + 'bound,
    )> {
        reset(&regs, regs::RESET_NORMAL)?;
        let cqs = Arc::pin_init(CqTable::new(), GFP_KERNEL)?;
        let up = match bring_up(pdev, &regs, vectors, &cqs) {
            Ok(up) => up,
            Err(err) => {
                // The device may still write to the rings: stop it before they are freed.
                let _ = reset(&regs, regs::RESET_INIT_ERR);
                return Err(err);
            }
        };
        let (vendor, device_id) = (pdev.vendor_id().as_raw().into(), pdev.device_id().into());
        let subsystem_device = pdev.subsystem_device_id().into();
        let db_bar_addr = pdev.resource_start(up.attributes.db_bar.into())?;
        let llq_bar_addr = pdev.resource_start(LLQ_BAR)?;
        let dma_dev: &'bound device::Device<Bound> = pdev.as_ref();
        let pdev: &'bound pci::Device = pdev;
        let (events_regs, reset_regs) = (regs.clone(), regs.clone());
        let admin_wakeup = Arc::pin_init(Wakeup::new(), GFP_KERNEL)?;
        let events = Arc::pin_init(
            pin_init!(Events {
                pdev,
                regs: events_regs,
                aenq <- new_spinlock_irq!(up.aenq),
                keep_alives: Atomic::new(0),
                fatal: Atomic::new(false),
                admin_wakeup,
            }),
            GFP_KERNEL,
        )?;
        let attributes = up.attributes;
        let eq_count = up.eqs.len();
        let device_events = events.clone();
        let init = try_pin_init!(Self {
            reset_on_drop: ResetOnDrop {
                pdev,
                regs: reset_regs,
                done: Atomic::new(false),
            },
            regs,
            admin <- new_mutex!(up.admin),
            failed: Atomic::new(false),
            event_groups: up.event_groups,
            events: device_events,
            attributes: up.attributes,
            vendor,
            device_id,
            subsystem_device,
            dma_dev,
            db_bar_addr,
            llq_bar_addr,
            eqs: up.eqs,
            cqs,
        }? Error);
        Ok((events, attributes, eq_count, init))
    }

    /// Lets the device raise the management vector, once a handler is on it, takes the events
    /// that came before, and has admin commands sleep until the interrupt of their completion.
    pub(crate) fn enable_interrupt(&self) {
        self.admin
            .lock()
            .wake_with(self.events.admin_wakeup.clone());
        self.regs.write_reg(INTR_MASK::zeroed());
        self.events.poll();
    }

    /// Runs an admin command (see [`AdminQueue::execute`]); `EIO` at once on a device given up
    /// on. A device that leaves a command unanswered (a function reset under the driver, a failed
    /// or vanished card) is given up on until the driver binds it again: a process's teardown then
    /// frees its objects without waiting out a timeout per command, and the port reads down.
    fn execute(&self, opcode: u8, command: Entry) -> Result<Entry> {
        if self.failed.load(Relaxed) {
            return Err(EIO);
        }
        let result = self.admin.lock().execute(&self.regs, opcode, command);
        if matches!(result, Err(e) if e == ETIMEDOUT) && !self.failed.xchg(true, Relaxed) {
            dev_err!(
                self.dma_dev,
                "EFA device did not answer admin command {} (status {:#x}): given up\n",
                opcode,
                self.regs.read(DEV_STS).into_raw(),
            );
        }
        result
    }

    /// Whether the device was given up on (see [`Self::execute`] and [`Self::fail`]).
    pub(crate) fn failed(&self) -> bool {
        self.failed.load(Relaxed)
    }

    /// Why the device needs a reset, if it does: it left a command unanswered, reported a fatal
    /// error, or (when `alive` says its keep-alives stopped, and it sends them) went silent;
    /// with the reset reason to give it.
    pub(crate) fn failure(&self, alive: bool) -> Option<(&'static str, u32)> {
        if self.failed() {
            Some(("an admin command left unanswered", regs::RESET_ADMIN_TO))
        } else if self.events.fatal.load(Relaxed) {
            Some(("a fatal error", regs::RESET_GENERIC))
        } else if !alive && self.event_groups & group::KEEP_ALIVE != 0 {
            Some(("keep-alive timeout", regs::RESET_KEEP_ALIVE_TO))
        } else {
            None
        }
    }

    /// Gives the device up: no command goes to it any more (teardown then frees each object
    /// without waiting), and it is reset with `reason` now, so that it stops using the memory of
    /// its queues and memory regions before their owners free it.
    pub(crate) fn fail(&self, reason: u32) {
        self.failed.store(true, Relaxed);
        // Waits for a command in flight, which the reset below would cut off anyway.
        let _admin = self.admin.lock();
        if let Err(err) = reset(&self.regs, reason) {
            dev_warn!(self.dma_dev, "EFA device did not reset: {:?}\n", err);
        }
        self.reset_on_drop.done.store(true, Relaxed);
    }

    /// What the admin queue did since probe.
    pub(crate) fn admin_stats(&self) -> AdminStats {
        self.admin.lock().stats
    }

    /// Keep-alive events since probe.
    pub(crate) fn keep_alives(&self) -> u64 {
        self.events.keep_alives()
    }

    /// A protection domain number.
    pub(crate) fn alloc_pd(&self) -> Result<u16> {
        // `efa_admin_alloc_pd_resp`: the PD in the body's low half.
        Ok(self.execute(ALLOC_PD, [0; 16])?[2] as u16)
    }

    /// Frees a protection domain number.
    pub(crate) fn dealloc_pd(&self, pd: u16) -> Result {
        let mut command: Entry = [0; 16];
        command[1] = pd.into();
        self.execute(DEALLOC_PD, command).map(|_| ())
    }

    /// An address handle in protection domain `pd` for the destination `gid`
    /// (`efa_admin_create_ah_cmd`: the address in words 1-4, the PD in word 5).
    pub(crate) fn create_ah(&self, gid: &[u8; 16], pd: u16) -> Result<u16> {
        let mut command: Entry = [0; 16];
        for (i, chunk) in gid.chunks_exact(4).enumerate() {
            command[1 + i] = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        }
        command[5] = pd.into();
        Ok(self.execute(CREATE_AH, command)?[2] as u16)
    }

    /// Destroys an address handle (`efa_admin_destroy_ah_cmd`: the AH, then the PD).
    pub(crate) fn destroy_ah(&self, ah: u16, pd: u16) -> Result {
        let mut command: Entry = [0; 16];
        command[1] = u32::from(ah) | (u32::from(pd) << 16);
        self.execute(DESTROY_AH, command).map(|_| ())
    }

    /// A completion queue.
    pub(crate) fn create_cq(&self, p: &CqParams) -> Result<CqCreated> {
        // cq_caps_1 (byte 4: interrupt mode, bit 5), cq_caps_2 (entry size in words, source
        // address), sub_cq_depth; eqn; the ring; l_key (unused: physical ring); num_sub_cqs, uar.
        let mut command: Entry = [0; 16];
        let caps_1 = u32::from(p.eqn.is_some()) << 5;
        let caps_2 = (p.entry_size / 4) | (u32::from(p.set_src_addr) << 5);
        command[1] = caps_1 | (caps_2 << 8) | (u32::from(p.sub_cq_depth) << 16);
        command[2] = p.eqn.unwrap_or(0).into();
        put_u64(&mut command, 3, p.ring);
        command[6] = u32::from(p.num_sub_cqs) | (u32::from(p.uar) << 16);
        let c = self.execute(CREATE_CQ, command)?;
        let (idx, depth) = halves(&c, 2);
        Ok(CqCreated {
            idx,
            depth,
            db_offset: (c[4] & 1 != 0).then_some(c[3]),
        })
    }

    /// Destroys a completion queue.
    pub(crate) fn destroy_cq(&self, idx: u16) -> Result {
        let mut command: Entry = [0; 16];
        command[1] = idx.into();
        self.execute(DESTROY_CQ, command).map(|_| ())
    }

    /// A queue pair.
    pub(crate) fn create_qp(&self, p: &QpParams) -> Result<QpCreated> {
        // pd, qp_type, flags; sq_base_addr (LLQ: none); rq_base_addr; send_cq_idx; recv_cq_idx;
        // l_keys (physical rings: none); the allocation sizes; uar, sl.
        let mut command: Entry = [0; 16];
        command[1] = u32::from(p.pd) | ((p.qp_type as u32) << 16);
        put_u64(&mut command, 4, p.rq_ring);
        command[6] = p.send_cq.into();
        command[7] = p.recv_cq.into();
        command[10] = p.sq_ring_size;
        command[11] = p.sq_depth;
        command[12] = p.rq_ring_size;
        command[13] = p.rq_depth;
        command[14] = u32::from(p.uar) | (u32::from(p.sl) << 16);
        let c = self.execute(CREATE_QP, command)?;
        let (send_sub_cq, recv_sub_cq) = halves(&c, 4);
        Ok(QpCreated {
            handle: c[2],
            num: c[3] as u16,
            send_sub_cq,
            recv_sub_cq,
            sq_db_offset: c[5],
            rq_db_offset: c[6],
            llq_offset: c[7],
        })
    }

    /// Changes a queue pair (`modify_mask` bits: state 0, current state 1, Q_Key 2, SQ PSN 3,
    /// drained notification 4, RNR retries 5).
    pub(crate) fn modify_qp(&self, handle: u32, m: &QpModify) -> Result {
        let mut command: Entry = [0; 16];
        let mut mask = 0;
        command[2] = handle;
        if let Some((state, current)) = m.state {
            mask |= 0b11;
            command[3] = state;
            command[4] = current;
        }
        if let Some(qkey) = m.qkey {
            mask |= 1 << 2;
            command[5] = qkey;
        }
        if let Some(psn) = m.sq_psn {
            mask |= 1 << 3;
            command[6] = psn;
        }
        if let Some(notify) = m.sq_drained_notify {
            mask |= 1 << 4;
            command[7] |= u32::from(notify);
        }
        if let Some(retry) = m.rnr_retry {
            mask |= 1 << 5;
            command[7] |= u32::from(retry) << 8;
        }
        command[1] = mask;
        self.execute(MODIFY_QP, command).map(|_| ())
    }

    /// A queue pair's state.
    pub(crate) fn query_qp(&self, handle: u32) -> Result<QpState> {
        let mut command: Entry = [0; 16];
        command[1] = handle;
        let c = self.execute(QUERY_QP, command)?;
        Ok(QpState {
            state: c[2],
            qkey: c[3],
            sq_psn: c[4],
            sq_draining: c[5] as u8,
            rnr_retry: (c[5] >> 8) as u8,
        })
    }

    /// Destroys a queue pair.
    pub(crate) fn destroy_qp(&self, handle: u32) -> Result {
        let mut command: Entry = [0; 16];
        command[1] = handle;
        self.execute(DESTROY_QP, command).map(|_| ())
    }

    /// Registers a memory region; returns its local and remote keys.
    pub(crate) fn reg_mr(&self, p: &MrParams<'_>) -> Result<(u32, u32)> {
        // pd; the page list (inline addresses, or the buffer's `efa_admin_ctrl_buff_info`) in
        // words 2-9; mr_length; flags (page shift), permissions; page_num; iova.
        let mut command: Entry = [0; 16];
        command[1] = p.pd.into();
        match p.pages {
            PageList::Inline(pages) => {
                if pages.len() > INLINE_PBL {
                    return Err(EINVAL);
                }
                for (i, page) in pages.iter().enumerate() {
                    put_u64(&mut command, 2 + 2 * i, *page);
                }
            }
            PageList::Buffer(address, len) => {
                command[0] = crate::com::admin::aq::CTRL_DATA;
                command[2] = len;
                put_u64(&mut command, 3, address);
            }
        }
        put_u64(&mut command, 10, p.len);
        command[12] = (p.page_shift & 0x3f) | (u32::from(p.permissions) << 8);
        command[13] = p.page_num;
        put_u64(&mut command, 14, p.iova);
        let c = self.execute(REG_MR, command)?;
        Ok((c[2], c[3]))
    }

    /// Deregisters a memory region.
    pub(crate) fn dereg_mr(&self, lkey: u32) -> Result {
        let mut command: Entry = [0; 16];
        command[1] = lkey;
        self.execute(DEREG_MR, command).map(|_| ())
    }

    /// A user access region (the doorbell page of a user context).
    pub(crate) fn alloc_uar(&self) -> Result<u16> {
        Ok(self.execute(ALLOC_UAR, [0; 16])?[2] as u16)
    }

    /// Frees a user access region.
    pub(crate) fn dealloc_uar(&self, uar: u16) -> Result {
        let mut command: Entry = [0; 16];
        command[1] = uar.into();
        self.execute(DEALLOC_UAR, command).map(|_| ())
    }

    /// The device's counters of `kind`, over all queues (`efa_admin_aq_get_stats_cmd`: type in
    /// byte 16, scope ALL), into `values` in the order of `efa_admin_*_stats`.
    pub(crate) fn stats(&self, kind: StatsType, values: &mut [u64]) -> Result {
        if values.len() > 7 {
            return Err(EINVAL);
        }
        let mut command: Entry = [0; 16];
        command[4] = kind as u32;
        let c = self.execute(GET_STATS, command)?;
        for (i, v) in values.iter_mut().enumerate() {
            *v = get_u64(&c, 2 + 2 * i);
        }
        Ok(())
    }
}
