//! The EFA (Elastic Fabric Adapter) function, as the Linux `efa` driver
//! drives it (`drivers/infiniband/hw/efa/`), control plane first:
//!
//! * the register file here: identity, reset handshake, read-less reads,
//!   admin queue and AENQ registers, the interrupt mask and the EQ
//!   doorbell ([`regs`]), on the machinery both functions share
//!   ([`crate::nitro`]);
//! * [`admin`]: opcodes, command layouts, features and statistics;
//! * [`resources`]: PDs, UARs, QPs, CQs, MRs ([`pbl`] reads their page
//!   lists), AHs and EQs, each bounded by [`limits`];
//! * AENQ keep-alives every [`KEEP_ALIVE_PERIOD`] once the driver arms the
//!   queue;
//! * [`datapath`]: UD and SRD sends and receives, completions, and
//!   completion events on the EQs, from a polling thread;
//! * [`fabric`]: joins the EFA functions of a card, so a message reaches
//!   the function (and VM) that has its destination GID, and hands
//!   messages for other cards' GIDs to the card's uplink;
//! * [`remote`]: SRD sends to another card, waiting for its verdict;
//! * [`rnr`]: SRD sends that found no receive, delivered again later.
//!
//! The device capabilities say what is missing: no event counters, no
//! unsolicited write receive.

pub mod admin;
pub mod datapath;
pub mod fabric;
pub mod pbl;
pub mod regs;
pub mod remote;
pub mod resources;
pub mod rnr;

#[cfg(test)]
mod tests;

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError, Weak};
use std::thread;
use std::time::{Duration, Instant};

use tracing::{debug, info, warn};

use self::admin::opcode;
use self::fabric::{Delivery, Endpoint, Fabric, Message, Route, TransportCost};
use self::resources::Resources;
use crate::function::{
    DatapathPriority, FunctionConfig, FunctionKind, HostBus, RegisterFile, read_dword_registers,
    spawn_datapath,
};
use crate::nitro::admin::{
    self as nitro_admin, AdminQueue, Command, CommandResult, Refused, Status,
};
use crate::nitro::aenq::{Aenq, Event, PostError, group};
use crate::nitro::control::{self, DeviceControl};
use crate::nitro::regs::{self as nitro_regs, AMAZON_VENDOR_ID, IdentityRegisters};
use crate::nitro::{self, readless};
use crate::pci::PciId;

/// EFA device `0xefa1` (`PCI_DEV_ID_EFA1_VF`), the default identity.
pub const DEFAULT_ID: PciId = PciId::new(AMAZON_VENDOR_ID, 0xefa1);
/// MSI-X vectors: the management vector (admin completions, AENQ) plus
/// eight completion-event vectors.
pub const MSIX_VECTORS: u16 = 9;
/// Keep-alive period, as on Nitro (and the ENA function).
pub const KEEP_ALIVE_PERIOD: Duration = Duration::from_secs(1);

/// The identity registers: admin API version 0.3 (efa.ko then submits
/// 128-byte `efa_admin_aq_entry_v2` commands with a CRC16 and checks the
/// CRC16 of every completion; see [`crate::nitro::admin::Checksums`]),
/// controller 0.0.1 (`EFA_CTRL_*`), 48-bit DMA, 2 s reset timeout,
/// driver-default admin command timeout.
pub const REGISTERS: IdentityRegisters = IdentityRegisters {
    kind: FunctionKind::Efa,
    version: nitro_regs::version(0, 3),
    controller_version: nitro_regs::controller_version(0, 0, 0, 1),
    caps: nitro_regs::caps(48, 20),
};

/// What the card advertises (DEVICE_ATTR, QUEUE_ATTR_1, EVENT_QUEUE_ATTR,
/// NETWORK_ATTR, HW_HINTS) and enforces: a small card.
pub mod limits {
    /// `admin_api_version` in DEVICE_ATTR.
    pub const ADMIN_API_VERSION: u32 = 1;
    /// `fw_version`.
    pub const FW_VERSION: u32 = 0x0000_0001;
    /// Physical and virtual address bits.
    pub const ADDR_WIDTH: u8 = 48;
    /// `device_caps`: RDMA read (bit 0), RNR retry (bit 1) and RDMA write
    /// (bit 3); no 128-byte data polling, unsolicited write receive, event
    /// counters or 64-bit request ids.
    pub const DEVICE_CAPS: u32 = (1 << 0) | (1 << 1) | (1 << 3);
    /// `max_rdma_size`: bytes of one RDMA read or write.
    pub const MAX_RDMA_SIZE: u32 = 1 << 20;
    /// `max_link_speed_gbps`.
    pub const LINK_SPEED_GBPS: u16 = 100;
    /// MR page sizes: 4 KiB and 2 MiB.
    pub const PAGE_SIZE_CAP: u64 = (1 << 12) | (1 << 21);
    /// Queue pairs (each gets a 64 KiB LLQ slot of BAR2).
    pub const MAX_QP: u32 = 16;
    /// SQ depth (64-byte WQEs).
    pub const MAX_SQ_DEPTH: u32 = 512;
    /// `min_sq_depth`: none. A device that cannot take a doorbell for a
    /// whole SQ at once advertises a minimum, and libefa then caps its
    /// doorbell batch at (SQ depth - 1); with a minimum of 1 a one-entry
    /// SQ gets a batch of 0, which crashes libefa 56 (perftest's
    /// `ib_send_lat`, TX depth 1, segfaulted). The card takes any batch.
    /// The SQ still needs one entry.
    pub const MIN_SQ_DEPTH: u16 = 0;
    /// Bytes of inline data in a send WQE (`efa_io_tx_wqe` data).
    pub const INLINE_BUF_SIZE: u32 = 32;
    /// RQ depth.
    pub const MAX_RQ_DEPTH: u32 = 512;
    /// `sizeof(struct efa_io_rx_desc)`.
    pub const RQ_DESC_SIZE: u32 = 16;
    /// Completion queues.
    pub const MAX_CQ: u32 = 32;
    /// CQ depth.
    pub const MAX_CQ_DEPTH: u32 = 4096;
    /// Sub-CQs per CQ.
    pub const SUB_CQS_PER_CQ: u32 = 1;
    /// SGEs per send WQE.
    pub const MAX_WR_SEND_SGES: u16 = 2;
    /// SGEs per receive WQE.
    pub const MAX_WR_RECV_SGES: u16 = 1;
    /// SGEs per RDMA WQE (`EFA_IO_TX_DESC_NUM_RDMA_BUFS`).
    pub const MAX_WR_RDMA_SGES: u16 = 1;
    /// `max_tx_batch`: unlimited.
    pub const MAX_TX_BATCH: u16 = 0;
    /// Memory regions.
    pub const MAX_MR: u32 = 256;
    /// Pages in one MR (256 MiB of 4 KiB pages).
    pub const MAX_MR_PAGES: u32 = 65536;
    /// Pages over all MRs (the page lists the card keeps).
    pub const MAX_TOTAL_MR_PAGES: usize = 262_144;
    /// Protection domains.
    pub const MAX_PD: u32 = 64;
    /// User access regions (not advertised; one per user context).
    pub const MAX_UAR: u32 = 64;
    /// Address handles.
    pub const MAX_AH: u32 = 128;
    /// Bytes of one QP's LLQ (its SQ ring).
    pub const MAX_LLQ_SIZE: u32 = MAX_SQ_DEPTH * 64;
    /// Event queues: one per completion vector.
    pub const MAX_EQ: u32 = 8;
    /// EQ depth.
    pub const MAX_EQ_DEPTH: u32 = 256;
    /// `sizeof(struct efa_admin_eqe)`.
    pub const EQE_SIZE: usize = 16;
    /// EQ events: completion events.
    pub const EQ_EVENTS: u32 = 1 << 0;
    /// Network MTU (payload bytes).
    pub const MTU: u32 = 4096;
    /// AENQ groups efa.ko may enable (it enables all four and fails probe
    /// unless the device supports them); the card sends keep-alives.
    pub const AENQ_SUPPORTED_GROUPS: u32 = (1 << super::group::FATAL_ERROR)
        | (1 << super::group::WARNING)
        | (1 << super::group::NOTIFICATION)
        | (1 << super::group::KEEP_ALIVE);
    /// HW_HINTS: read-less read timeout.
    pub const HINT_MMIO_READ_TIMEOUT_MS: u16 = 200;
    /// HW_HINTS: admin polling interval (efa.ko's default is 100 ms).
    pub const HINT_POLL_INTERVAL_MS: u16 = 1;
}

/// Per-function settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EfaSettings {
    /// The port's GID (NETWORK_ATTR `addr`): an IPv6 link-local address.
    pub gid: [u8; 16],
    /// Interval between keep-alive events.
    pub keep_alive: Duration,
}

impl EfaSettings {
    /// Settings whose GID is derived from `seed` (for instance the socket
    /// path): `fe80::` with the modified EUI-64 of the MAC address the ENA
    /// function would derive from the same seed.
    pub fn derived_from(seed: &[u8]) -> Self {
        let mac = crate::ena::derive_mac(seed);
        let mut gid = [0u8; 16];
        gid[0] = 0xfe;
        gid[1] = 0x80;
        gid[8..11].copy_from_slice(&[mac[0] ^ 0x02, mac[1], mac[2]]);
        gid[11..13].copy_from_slice(&[0xff, 0xfe]);
        gid[13..].copy_from_slice(&mac[3..]);
        Self {
            gid,
            keep_alive: KEEP_ALIVE_PERIOD,
        }
    }

    /// The node GUID: the GID's interface identifier. efa.ko copies the
    /// field into the big-endian `node_guid` as is, so the bytes go out in
    /// GID order.
    pub fn guid(&self) -> u64 {
        u64::from_le_bytes([
            self.gid[8],
            self.gid[9],
            self.gid[10],
            self.gid[11],
            self.gid[12],
            self.gid[13],
            self.gid[14],
            self.gid[15],
        ])
    }
}

impl Default for EfaSettings {
    fn default() -> Self {
        Self::derived_from(b"braid-efa-0")
    }
}

/// Everything needed to build an EFA function reporting `id` with default
/// settings.
pub fn function_config(id: PciId) -> FunctionConfig {
    function_config_with(id, EfaSettings::default())
}

/// Everything needed to build an EFA function reporting `id` with
/// `settings`, alone on a fabric of its own.
pub fn function_config_with(id: PciId, settings: EfaSettings) -> FunctionConfig {
    function_config_on(id, settings, Arc::new(Fabric::new()))
}

/// Everything needed to build an EFA function reporting `id` with
/// `settings`, attached to `fabric` (shared by the EFA functions of a
/// card).
pub fn function_config_on(id: PciId, settings: EfaSettings, fabric: Arc<Fabric>) -> FunctionConfig {
    FunctionConfig {
        kind: FunctionKind::Efa,
        identity: nitro_regs::identity(id),
        msix_vectors: MSIX_VECTORS,
        registers: Box::new(move |bus| Box::new(EfaRegisters::new(bus, settings, fabric))),
    }
}

/// Device counters, by GET_STATS type (`efa_admin_*_stats`, field order).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// tx_bytes, tx_pkts, rx_bytes, rx_pkts, rx_drops, qkey_viol.
    pub basic: [u64; 6],
    /// send_bytes, send_wrs, recv_bytes, recv_wrs.
    pub messages: [u64; 4],
    /// read_wrs, read_bytes, read_wr_err, read_resp_bytes.
    pub rdma_read: [u64; 4],
    /// write_wrs, write_bytes, write_wr_err, write_recv_bytes.
    pub rdma_write: [u64; 4],
    /// retrans_bytes, retrans_pkts, retrans_timeout_events,
    /// unresponsive_remote_events, impaired_remote_conn_events: the SRD
    /// transport's work on this function's messages to and from other
    /// cards ([`network`]).
    pub network: [u64; 5],
}

/// Indices into [`Stats::network`].
pub mod network {
    /// Bytes of the function's packets sent again.
    pub const RETRANS_BYTES: usize = 0;
    /// The function's packets sent again.
    pub const RETRANS_PKTS: usize = 1;
    /// The function's packets that timed out.
    pub const RETRANS_TIMEOUT_EVENTS: usize = 2;
    /// Sends that got no verdict from the remote card in time.
    pub const UNRESPONSIVE_REMOTE_EVENTS: usize = 3;
    /// Messages that reached the remote card only after a timeout (their
    /// path failed under them).
    pub const IMPAIRED_REMOTE_CONN_EVENTS: usize = 4;
}

/// The device state behind the registers, shared with the timer thread.
#[derive(Debug)]
struct EfaState {
    settings: EfaSettings,
    /// Changes on every reset; a timer thread of an older epoch exits.
    epoch: u64,
    admin: AdminQueue,
    aenq: Aenq,
    /// Last value written to the AENQ consumer doorbell.
    aenq_cons: u32,
    resources: Resources,
    stats: Stats,
    timer_running: bool,
    intr_mask: u32,
    control: DeviceControl,
    mmio_reg_read: u32,
    mmio_resp: u64,
    eq_db: u32,
}

impl EfaState {
    fn new(settings: EfaSettings) -> Self {
        Self {
            settings,
            epoch: 0,
            admin: AdminQueue::efa(regs::QUEUE_CAPS_ENTRY_SIZE),
            aenq: Self::fresh_aenq(),
            aenq_cons: 0,
            resources: Resources::default(),
            stats: Stats::default(),
            timer_running: false,
            intr_mask: 0,
            control: DeviceControl::default(),
            mmio_reg_read: 0,
            mmio_resp: 0,
            eq_db: 0,
        }
    }

    fn fresh_aenq() -> Aenq {
        let mut aenq = Aenq::default();
        aenq.ring.entry_size = regs::QUEUE_CAPS_ENTRY_SIZE;
        aenq
    }

    /// Drops every queue, object and setting (device reset); stops the
    /// timer by moving the epoch on.
    fn clear(&mut self) {
        self.epoch += 1;
        self.admin = AdminQueue::efa(regs::QUEUE_CAPS_ENTRY_SIZE);
        self.aenq = Self::fresh_aenq();
        self.aenq_cons = 0;
        self.resources = Resources::default();
        self.stats = Stats::default();
        self.timer_running = false;
        self.intr_mask = 0;
        self.eq_db = 0;
    }

    fn register(&self, offset: u64) -> u32 {
        if let Some(value) =
            nitro::read_queue_register(&self.admin, &self.aenq, self.mmio_resp, offset)
        {
            return value;
        }
        match offset {
            regs::AENQ_CONS_DB => self.aenq_cons,
            regs::INTR_MASK => self.intr_mask,
            regs::DEV_CTL => self.control.dev_ctl,
            regs::DEV_STS => self.control.dev_sts,
            regs::MMIO_REG_READ => self.mmio_reg_read,
            regs::EQ_DB => self.eq_db,
            other => REGISTERS.register(other),
        }
    }

    fn execute(&mut self, command: &Command, bus: &HostBus) -> CommandResult {
        let dma = bus.dma();
        let entry = &command.entry;
        let res = &mut self.resources;
        debug!(
            opcode = command.opcode(),
            command_id = command.command_id(),
            "EFA admin command"
        );
        match command.opcode() {
            opcode::CREATE_QP => {
                let result = res.create_qp(entry, dma);
                if let Ok(resp) = &result {
                    // A new QP starts at index 0: forget what an earlier
                    // queue left in its doorbells.
                    use admin::layout::create_qp::{RESP_RQ_DB, RESP_SQ_DB};
                    clear_doorbell(bus, resp.u32(RESP_SQ_DB).into());
                    clear_doorbell(bus, resp.u32(RESP_RQ_DB).into());
                }
                result
            }
            opcode::MODIFY_QP => res.modify_qp(entry),
            opcode::QUERY_QP => res.query_qp(entry),
            opcode::DESTROY_QP => res.destroy_qp(entry),
            opcode::CREATE_AH => res.create_ah(entry),
            opcode::DESTROY_AH => res.destroy_ah(entry),
            opcode::REG_MR => res.reg_mr(entry, command.flags(), dma),
            opcode::DEREG_MR => res.dereg_mr(entry),
            opcode::CREATE_CQ => {
                let result = res.create_cq(entry, dma);
                if let Ok(resp) = &result {
                    // An arm request left by an earlier CQ of this index
                    // is not this CQ's.
                    clear_doorbell(bus, resp.u32(admin::layout::create_cq::RESP_DB).into());
                }
                result
            }
            opcode::DESTROY_CQ => res.destroy_cq(entry),
            opcode::GET_FEATURE => admin::get_feature(command, &self.settings, &self.aenq),
            opcode::SET_FEATURE => admin::set_feature(command, &mut self.aenq, dma),
            opcode::GET_STATS => admin::get_stats(command, &self.stats),
            opcode::ALLOC_PD => res.alloc_pd(),
            opcode::DEALLOC_PD => res.dealloc_pd(entry),
            opcode::ALLOC_UAR => res.alloc_uar(),
            opcode::DEALLOC_UAR => res.dealloc_uar(entry),
            opcode::CREATE_EQ => res.create_eq(entry, dma, MSIX_VECTORS),
            opcode::DESTROY_EQ => res.destroy_eq(entry),
            op @ (opcode::ALLOC_MR | opcode::SERVICE) => {
                Err(Refused::unsupported(format!("opcode {op}")))
            }
            op if opcode::EVENT_COUNTERS.contains(&op) => {
                Err(Refused::unsupported(format!("event-counter opcode {op}")))
            }
            op => Err(Refused::new(
                Status::BadOpcode,
                format!("opcode {op} is not an EFA admin opcode"),
            )),
        }
    }

    /// Raises the MSI-X vector the ACQ or AENQ caps name, unless the
    /// driver masked the management interrupt (polling mode).
    fn signal(&self, bus: &HostBus, caps: u32) {
        if self.intr_mask & regs::INTR_MASK_ADMIN != 0 {
            return;
        }
        let vector = regs::QUEUE_CAPS_MSIX_VECTOR.get(caps) as u16;
        if let Err(err) = bus.signal_msix(vector) {
            warn!(vector, error = %err, "cannot signal the management interrupt");
        }
    }

    /// Posts a keep-alive; returns whether it reached the queue.
    fn keep_alive(&mut self, bus: &HostBus) -> bool {
        let event = Event::KeepAlive {
            rx_drops: 0,
            tx_drops: 0,
        };
        match self.aenq.post(bus.dma(), event) {
            Ok(()) => true,
            Err(
                PostError::GroupDisabled(_) | PostError::NotConfigured | PostError::Full { .. },
            ) => false,
            Err(err) => {
                warn!(error = %err, "keep-alive dropped");
                false
            }
        }
    }
}

/// Zeroes the doorbell word at BAR0 offset `db` (a new queue starts at 0).
fn clear_doorbell(bus: &HostBus, db: u64) {
    bus.doorbell_word(db, |w| {
        w.store(0, Ordering::Release);
        0
    });
}

/// What the register file, its timer and data-path threads and the fabric
/// share.
#[derive(Debug)]
struct Shared {
    bus: Arc<HostBus>,
    state: Mutex<EfaState>,
    /// Wakes a sleeping timer thread when the epoch changes.
    wake: Condvar,
    /// Tells the data-path thread to exit.
    stop: AtomicBool,
    /// The card's fabric, and whether this function is on it under its
    /// GID (a GID another function holds is refused).
    fabric: Arc<Fabric>,
    attached: bool,
    /// The data-path thread, unparked when a message arrives.
    worker: OnceLock<thread::Thread>,
    /// A message arrived since the data-path thread last looked.
    kicked: AtomicBool,
    /// Verdicts from other cards on this function's SRD sends, by token,
    /// for the data-path thread to complete.
    verdicts: Mutex<Vec<(u64, Delivery)>>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, EfaState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Wakes the data-path thread into its eager phase.
    fn kick(&self) {
        self.kicked.store(true, Ordering::Release);
        if let Some(worker) = self.worker.get() {
            worker.unpark();
        }
    }

    fn take_verdicts(&self) -> Vec<(u64, Delivery)> {
        std::mem::take(&mut *self.verdicts.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

impl Endpoint for Shared {
    /// Takes a message into the destination QP's receive queue, posts the
    /// completion event it may raise, and wakes the data-path thread into
    /// its eager phase: a reply is likely to follow.
    fn deliver(&self, message: &Message) -> Delivery {
        let delivery = {
            let mut state = self.lock();
            let EfaState {
                resources, stats, ..
            } = &mut *state;
            let delivery = datapath::deliver(&self.bus, resources, message, stats);
            datapath::notify(&self.bus, resources);
            delivery
        };
        self.kick();
        delivery
    }

    fn transport_cost(&self, cost: TransportCost) {
        let net = &mut self.lock().stats.network;
        net[network::RETRANS_BYTES] += cost.retransmit_bytes;
        net[network::RETRANS_PKTS] += cost.retransmits;
        net[network::RETRANS_TIMEOUT_EVENTS] += cost.timeouts;
        if cost.timeouts > 0 {
            net[network::IMPAIRED_REMOTE_CONN_EVENTS] += 1;
        }
    }

    fn completed(&self, token: u64, delivery: Delivery) {
        self.verdicts
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((token, delivery));
        self.kick();
    }
}

/// The EFA register file: [`EfaState`] behind a lock, shared with the
/// keep-alive timer thread.
pub struct EfaRegisters {
    shared: Arc<Shared>,
}

impl fmt::Debug for EfaRegisters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EfaRegisters").finish_non_exhaustive()
    }
}

impl EfaRegisters {
    /// The registers of a function reaching the host through `bus`,
    /// attached to `fabric` under its GID. Starts the function's data-path
    /// thread.
    pub fn new(bus: Arc<HostBus>, settings: EfaSettings, fabric: Arc<Fabric>) -> Self {
        let shared = Arc::new_cyclic(|me: &Weak<Shared>| Shared {
            bus,
            state: Mutex::new(EfaState::new(settings)),
            wake: Condvar::new(),
            stop: AtomicBool::new(false),
            attached: fabric.attach(settings.gid, me.clone() as Weak<dyn Endpoint>),
            fabric,
            worker: OnceLock::new(),
            kicked: AtomicBool::new(false),
            verdicts: Mutex::default(),
        });
        let worker = Arc::clone(&shared);
        if let Some(thread) = spawn_datapath("efa-datapath", true, move |priority| {
            datapath_loop(&worker, priority)
        }) {
            let _ = shared.worker.set(thread);
        }
        Self { shared }
    }

    fn write_register(&self, offset: u64, value: u32) {
        let bus = &self.shared.bus;
        let mut state = self.shared.lock();
        let EfaState {
            admin,
            aenq,
            mmio_resp,
            ..
        } = &mut *state;
        if nitro::write_queue_register(admin, aenq, mmio_resp, offset, value) {
            if offset == regs::AQ_CAPS {
                let (depth, entry_size) = (admin.sq.depth(), admin.sq.entry_bytes());
                info!(?depth, entry_size, "EFA admin queue programmed");
            }
            return;
        }
        match offset {
            regs::AQ_PROD_DB => self.admin_doorbell(&mut state, value),
            regs::AENQ_CONS_DB => {
                state.aenq_cons = value;
                state.aenq.consumed(value);
                self.ensure_timer(&mut state);
            }
            regs::INTR_MASK => state.intr_mask = value,
            regs::DEV_CTL => {
                let request = state.control.write(value);
                if let Some(reason) = request.reset {
                    info!(reason = regs::reset_reason_name(reason), "EFA device reset");
                    state.clear();
                    // The reset forgets the read-less address; efa.ko
                    // writes it again right after starting the reset.
                    state.mmio_resp = 0;
                    self.shared.wake.notify_all();
                }
                if request.aq_restart {
                    state.admin.restart_sq();
                    state.admin.restart_cq();
                }
            }
            regs::MMIO_REG_READ => {
                state.mmio_reg_read = value;
                let result =
                    readless::respond(bus.dma(), state.mmio_resp, value, |off| state.register(off));
                if let Err(err) = result {
                    warn!(error = %err, "read-less read failed");
                }
            }
            regs::EQ_DB => {
                state.eq_db = value;
                let eqn = regs::EQ_DB_EQN.get(value) as u16;
                match state.resources.arm_eq(eqn, value & regs::EQ_DB_ARM != 0) {
                    (false, _) => warn!(eqn, "EQ doorbell for an EQ that does not exist"),
                    (true, Some(vector)) => datapath::interrupt(bus, vector),
                    (true, None) => {}
                }
            }
            _ => debug!(
                offset = format_args!("{offset:#x}"),
                value = format_args!("{value:#x}"),
                "EFA write to a read-only or unassigned register ignored"
            ),
        }
    }

    fn admin_doorbell(&self, state: &mut EfaState, tail: u32) {
        let bus = &self.shared.bus;
        let parts: fn(&mut EfaState) -> (&mut AdminQueue, &mut u32) =
            |s| (&mut s.admin, &mut s.control.dev_sts);
        if nitro_admin::serve_doorbell(state, parts, tail, bus.dma(), |s, c| s.execute(c, bus)) {
            state.signal(bus, state.admin.cq.caps);
        }
        // A SET_FEATURE(AENQ_CONFIG) may have enabled keep-alives.
        self.ensure_timer(state);
    }

    /// Starts the keep-alive timer once the AENQ is armed with the
    /// keep-alive group enabled.
    fn ensure_timer(&self, state: &mut EfaState) {
        if !state.aenq.wants_keep_alives() {
            return;
        }
        let shared = Arc::clone(&self.shared);
        let (epoch, period) = (state.epoch, state.settings.keep_alive);
        control::start_timer("efa-aenq", &mut state.timer_running, move || {
            control::every(
                &shared.state,
                &shared.wake,
                period,
                |s| s.epoch == epoch,
                |s| {
                    if s.keep_alive(&shared.bus) {
                        s.signal(&shared.bus, s.aenq.ring.caps);
                    }
                },
            );
        });
    }
}

/// Shortest idle sleep of the data-path thread; it doubles per idle pass
/// up to [`POLL_SLEEP_WARM`] within [`POLL_WARM`] of activity, then up to
/// [`POLL_SLEEP_COLD`].
const POLL_SLEEP_MIN: Duration = Duration::from_micros(20);
const POLL_SLEEP_WARM: Duration = Duration::from_micros(200);
const POLL_SLEEP_COLD: Duration = Duration::from_millis(2);
const POLL_WARM: Duration = Duration::from_secs(1);
/// A real-time poller's sleep after a pass that found work; it doubles
/// from there as [`POLL_SLEEP_MIN`]'s does. It never spins: it would
/// starve the vCPUs and QEMU's threads of the cores. And it sleeps long:
/// every wake preempts a vCPU, so waking often slows the guests it
/// serves. The next message usually follows a delivery to this function,
/// whose kick wakes the thread right then. Measured with `ib_send_lat`
/// between two guests (docs/card.md): 10 µs gave 41-61 µs, 1 µs 112 µs,
/// 40 µs 19-21 µs, 80 µs 20-22 µs.
const POLL_SLEEP_REALTIME: Duration = Duration::from_micros(80);
/// A real-time poller's sleep after a delivery woke it and its pass found
/// no reply yet: the guest is still at it, so look again soon (doubling
/// from here). With 80 µs, `ib_send_lat`'s p99 was 114 µs; with 20 µs,
/// 70 µs (average 24 -> 20 µs).
const POLL_SLEEP_EAGER: Duration = Duration::from_micros(20);
/// How long the thread polls without sleeping after activity.
const POLL_BUSY: Duration = Duration::from_micros(500);
/// Sleep while the function has no QP.
const POLL_NO_QPS: Duration = Duration::from_millis(10);

/// The data-path thread: polls the SQ and CQ doorbells in BAR0's mapped
/// pages (guest stores there never trap). Running real-time (see
/// [`spawn_datapath`]), it never spins: after a pass that found work it
/// sleeps 80 µs ([`POLL_SLEEP_REALTIME`]), doubling per idle pass to
/// 200 µs while the function was active within the last second and to
/// 2 ms once idle longer. A message delivered to the function wakes it at
/// once and counts as activity: a reply is likely to follow, and the
/// guest often posts it within the wake-up's own latency (about 15 µs on
/// these hosts); if not, the thread looks again after 20 µs
/// ([`POLL_SLEEP_EAGER`]), doubling. A thread that is not real-time
/// yields between passes for [`POLL_BUSY`] after activity, then sleeps
/// from 20 µs with the same caps. An idle QP costs a few hundred short
/// passes a second.
///
/// The messages a pass takes off the SQs are delivered through the
/// fabric after the function's lock is released (the receiver may be this
/// function), then the SRD senders' completions are written under the
/// lock again, unless a reset came in between. A send the fabric took to
/// another card waits for that card's verdict ([`remote`]), which wakes
/// the thread when it comes and is completed like a local one. An SRD
/// send that found no receive waits for its RNR retry ([`rnr`]) and is
/// delivered again when due; the sleep never outlasts the next retry or
/// the next verdict's deadline.
fn datapath_loop(shared: &Shared, priority: DatapathPriority) {
    // Only a thread that is not real-time may yield instead of sleeping.
    let spin = priority != DatapathPriority::RealTime;
    let mut last_active = Instant::now();
    let mut sleep = POLL_SLEEP_MIN;
    let mut retries = rnr::Retries::default();
    let mut remote = remote::Waiting::default();
    let mut retries_epoch = 0;
    while !shared.stop.load(Ordering::Acquire) {
        let now = Instant::now();
        let (poll, qps, epoch) = {
            let mut state = shared.lock();
            let EfaState {
                resources,
                settings,
                stats,
                epoch,
                ..
            } = &mut *state;
            if *epoch != retries_epoch {
                retries.clear();
                remote.clear();
                retries_epoch = *epoch;
            }
            for out in retries.prune(resources) {
                if let Some(send) = out.pending {
                    let flushed = Some(Err(datapath::status::FLUSHED));
                    datapath::complete_send(&shared.bus, resources, send, flushed, stats);
                }
            }
            let qps = resources.qps.count();
            let poll = if qps > 0 {
                datapath::poll(&shared.bus, resources, &settings.gid, stats)
            } else {
                datapath::Poll::default()
            };
            (poll, qps, *epoch)
        };
        // Verdicts of other cards come in like local deliveries; sends
        // that waited too long for theirs time out.
        let mut verdicts: Vec<_> = shared
            .take_verdicts()
            .into_iter()
            .filter_map(|(token, delivery)| remote.finish(token, delivery))
            .map(|(out, delivery)| (out, Some(delivery)))
            .collect();
        verdicts.extend(remote.expired(now).into_iter().map(|out| {
            debug!(dest = %std::net::Ipv6Addr::from(out.dest_gid), "no verdict from the remote card");
            (out, Some(Err(datapath::status::UNRESP_REMOTE)))
        }));
        let mut completions = Vec::new();
        let mut outbound = poll.outbound;
        outbound.extend(retries.due(now));
        for out in outbound {
            let token = remote.token(&out);
            let delivery = match shared.fabric.send(&out.dest_gid, &out.message, token) {
                Route::Local(delivery) => Some(delivery),
                Route::Remote => {
                    remote.insert(token, out, now);
                    continue;
                }
                Route::Unreachable => {
                    debug!(dest = %std::net::Ipv6Addr::from(out.dest_gid), "no function has the destination GID");
                    None
                }
            };
            verdicts.push((out, delivery));
        }
        for (out, delivery) in verdicts {
            if matches!(delivery, Some(Err(datapath::status::RNR))) {
                if let Some(out) = retries.hold(out, now) {
                    completions.extend(out.pending.map(|p| (p, delivery)));
                }
                continue;
            }
            completions.extend(out.pending.map(|p| (p, delivery)));
        }
        if !completions.is_empty() {
            let mut state = shared.lock();
            if state.epoch == epoch {
                let EfaState {
                    resources, stats, ..
                } = &mut *state;
                for (send, delivery) in completions {
                    if delivery == Some(Err(datapath::status::UNRESP_REMOTE)) {
                        stats.network[network::UNRESPONSIVE_REMOTE_EVENTS] += 1;
                    }
                    datapath::complete_send(&shared.bus, resources, send, delivery, stats);
                }
            }
        }
        // A send due for its RNR retry, or overdue for its verdict, bounds
        // the sleep.
        let until_retry = [retries.next_due(), remote.next_deadline()]
            .into_iter()
            .flatten()
            .min()
            .map(|due| due.saturating_duration_since(Instant::now()));
        let nap = |d: Duration| thread::park_timeout(until_retry.map_or(d, |u| u.min(d)));
        let kicked = shared.kicked.swap(false, Ordering::AcqRel);
        if poll.active || kicked {
            last_active = Instant::now();
            if spin {
                sleep = POLL_SLEEP_MIN;
                thread::yield_now();
            } else if poll.active {
                sleep = POLL_SLEEP_REALTIME;
                nap(sleep);
            } else {
                sleep = POLL_SLEEP_EAGER;
                nap(sleep);
                sleep *= 2;
            }
        } else if qps == 0 {
            nap(POLL_NO_QPS);
        } else if spin && last_active.elapsed() < POLL_BUSY {
            thread::yield_now();
        } else {
            nap(sleep);
            let cap = if last_active.elapsed() < POLL_WARM {
                POLL_SLEEP_WARM
            } else {
                POLL_SLEEP_COLD
            };
            sleep = (sleep * 2).min(cap);
        }
    }
}

impl Drop for EfaRegisters {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        if self.shared.attached {
            let gid = self.shared.lock().settings.gid;
            self.shared.fabric.detach(&gid);
        }
        if let Some(worker) = self.shared.worker.get() {
            worker.unpark();
        }
        let mut state = self.shared.lock();
        state.epoch += 1;
        self.shared.wake.notify_all();
    }
}

impl RegisterFile for EfaRegisters {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let state = self.shared.lock();
        read_dword_registers(offset, data, |off| state.register(off));
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let (Ok(bytes), 0) = (<[u8; 4]>::try_from(data), offset % 4) else {
            warn!(
                offset = format_args!("{offset:#x}"),
                len = data.len(),
                "EFA register write not an aligned dword: ignored"
            );
            return;
        };
        self.write_register(offset, u32::from_le_bytes(bytes));
    }

    fn reset(&mut self) {
        let mut state = self.shared.lock();
        state.clear();
        state.control = DeviceControl::default();
        state.mmio_reg_read = 0;
        state.mmio_resp = 0;
        self.shared.wake.notify_all();
    }
}
