//! The ENA (Elastic Network Adapter) function, as the Linux `ena` driver
//! drives it (`drivers/net/ethernet/amazon/ena/`):
//!
//! * [`regs`] holds the BAR0 register map beyond the identity registers;
//!   the register file here serves it, including read-less register reads
//!   (the device DMA-writes the value) and device reset, admin-queue
//!   restart and quiescence through `DEV_CTL`/`DEV_STS`.
//! * [`admin`] runs the admin submission and completion queues.
//! * [`features`] answers GET_FEATURE and SET_FEATURE.
//! * [`queues`] keeps the I/O SQs and CQs (CREATE/DESTROY) as resources.
//! * [`aenq`] posts asynchronous events: the link state once the driver
//!   configures the queue and on every change, then a keep-alive with the
//!   drop counters every period, from a timer thread that stops on reset,
//!   and a fatal-error event when the card is told to fail.
//! * [`EnaControl`] is the card operator's handle on a function (the
//!   control socket, `crate::control`): link up/down, an injected fatal
//!   error, keep-alives paused, and the counters.
//! * [`datapath`] moves packets through the I/O queues, from a per-function
//!   polling thread (its polling policy is documented on `datapath_loop`
//!   and in docs/card.md).
//! * [`switch`] joins the ENA functions of a card.

pub mod admin;
pub mod aenq;
pub mod datapath;
pub mod features;
pub mod operator;
pub mod queues;
pub mod regs;
pub mod rss;
pub mod switch;

#[cfg(test)]
mod tests;

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError, Weak};
use std::thread;
use std::time::{Duration, Instant};

use tracing::{debug, info, trace, warn};

use self::admin::{AdminQueue, Command, CommandResult, Entry, Refused, acq, opcode};
use self::aenq::{Aenq, Event, PostError};
use self::datapath::{DataPath, Poll};
use self::features::{DeviceAttributes, FeatureState};
pub use self::operator::EnaControl;
use self::queues::IoQueues;
use self::switch::{Port, PortId, Source, Switch};
use crate::function::{
    FunctionConfig, FunctionKind, HostBus, RegisterFile, read_dword_registers, spawn_datapath,
};
use crate::nitro;
use crate::nitro::control::{self, DeviceControl};
use crate::nitro::regs::{self as nitro_regs, AMAZON_VENDOR_ID, IdentityRegisters};
use crate::pci::PciId;

/// ENA virtual function (`PCI_DEV_ID_ENA_VF`), the default identity.
pub const DEFAULT_ID: PciId = PciId::new(AMAZON_VENDOR_ID, 0xec20);
/// MSI-X vectors: one for the admin/AENQ queues plus eight I/O queue pairs.
pub const MSIX_VECTORS: u16 = 1 + queues::MAX_IO_QUEUES;
/// The vector of the admin completion queue and the AENQ.
pub const ADMIN_VECTOR: u16 = 0;
/// Keep-alive period, as on Nitro.
pub const KEEP_ALIVE_PERIOD: Duration = Duration::from_secs(1);

/// The identity registers: device version 0.10 (the specification version
/// the Nitro devices report), controller 0.0.1 (`MIN_ENA_CTRL_VER`, the
/// oldest the driver accepts), 48-bit DMA (`ENA_MAX_PHYS_ADDR_SIZE_BITS`),
/// 2 s reset timeout.
pub const REGISTERS: IdentityRegisters = IdentityRegisters {
    kind: FunctionKind::Ena,
    version: nitro_regs::version(0, 10),
    controller_version: nitro_regs::controller_version(0, 0, 0, 1),
    caps: nitro_regs::caps(48, 20),
};

/// Per-function settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EnaSettings {
    /// The permanent MAC address.
    pub mac: [u8; 6],
    /// Interval between keep-alive events.
    pub keep_alive: Duration,
}

impl EnaSettings {
    /// Settings whose MAC address is derived from `seed` (for instance the
    /// socket path): a locally administered unicast address, the same for
    /// the same seed.
    pub fn derived_from(seed: &[u8]) -> Self {
        Self {
            mac: derive_mac(seed),
            keep_alive: KEEP_ALIVE_PERIOD,
        }
    }
}

impl Default for EnaSettings {
    fn default() -> Self {
        Self::derived_from(b"braid-ena-0")
    }
}

/// A locally administered unicast MAC address hashed (FNV-1a) from `seed`.
pub fn derive_mac(seed: &[u8]) -> [u8; 6] {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let hash = seed
        .iter()
        .fold(OFFSET, |h, &b| (h ^ u64::from(b)).wrapping_mul(PRIME));
    let b = hash.to_le_bytes();
    // Bit 1 of the first octet: locally administered; bit 0: multicast.
    [(b[0] & !0x01) | 0x02, b[1], b[2], b[3], b[4], b[5]]
}

#[cfg(test)]
mod mac_tests {
    use super::*;

    #[test]
    fn derived_macs_are_stable_local_unicast_and_distinct() {
        let a = derive_mac(b"/run/braid/ena0.sock");
        assert_eq!(a, derive_mac(b"/run/braid/ena0.sock"));
        assert_ne!(a, derive_mac(b"/run/braid/ena1.sock"));
        assert_eq!(a[0] & 0x03, 0x02, "locally administered unicast");
        assert_eq!(parse_mac(&format_mac(&a)), Ok(a));
    }

    #[test]
    fn mac_parsing() {
        assert_eq!(parse_mac("02:00:5e:10:00:01"), Ok([2, 0, 0x5e, 0x10, 0, 1]));
        for bad in [
            "02:00:5e:10:00",
            "02:00:5e:10:00:01:02",
            "2:00:5e:10:00:01",
            "zz:00:5e:10:00:01",
            "",
        ] {
            assert!(matches!(parse_mac(bad), Err(MacError::Syntax(_))), "{bad}");
        }
        assert!(matches!(
            parse_mac("01:00:5e:00:00:01"),
            Err(MacError::Multicast(_))
        ));
        assert!(matches!(
            parse_mac("ff:ff:ff:ff:ff:ff"),
            Err(MacError::Multicast(_))
        ));
        assert_eq!(parse_mac("00:00:00:00:00:00"), Err(MacError::Zero));
    }
}

/// A MAC address the card cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MacError {
    /// Not six colon-separated hexadecimal octets.
    #[error("'{0}' is not a MAC address (six hexadecimal octets separated by ':')")]
    Syntax(String),
    /// A multicast (or broadcast) address.
    #[error("{0} is a multicast address; a NIC needs a unicast one")]
    Multicast(String),
    /// All zeros.
    #[error("00:00:00:00:00:00 is not a valid MAC address")]
    Zero,
}

/// Parses `aa:bb:cc:dd:ee:ff` into a unicast, non-zero MAC address.
pub fn parse_mac(s: &str) -> Result<[u8; 6], MacError> {
    let syntax = || MacError::Syntax(s.to_owned());
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for octet in &mut mac {
        let part = parts.next().ok_or_else(syntax)?;
        if part.len() != 2 {
            return Err(syntax());
        }
        *octet = u8::from_str_radix(part, 16).map_err(|_| syntax())?;
    }
    if parts.next().is_some() {
        return Err(syntax());
    }
    if mac[0] & 0x01 != 0 {
        return Err(MacError::Multicast(s.to_owned()));
    }
    if mac == [0; 6] {
        return Err(MacError::Zero);
    }
    Ok(mac)
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Everything needed to build an ENA function reporting `id` with
/// `settings`, alone on a switch of its own.
pub fn function_config(id: PciId, settings: EnaSettings) -> FunctionConfig {
    function_config_on(id, settings, Arc::new(Switch::new()))
}

/// Everything needed to build an ENA function reporting `id` with
/// `settings`, attached to `switch` (shared by the functions of a card).
pub fn function_config_on(id: PciId, settings: EnaSettings, switch: Arc<Switch>) -> FunctionConfig {
    function_config_with_control(id, settings, switch).0
}

/// As [`function_config_on`], plus the operator's [`EnaControl`] handle on
/// the function, usable once the function is built.
pub fn function_config_with_control(
    id: PciId,
    settings: EnaSettings,
    switch: Arc<Switch>,
) -> (FunctionConfig, EnaControl) {
    let control = EnaControl::default();
    let slot = Arc::clone(&control.shared);
    let config = FunctionConfig {
        kind: FunctionKind::Ena,
        identity: nitro_regs::identity(id),
        msix_vectors: MSIX_VECTORS,
        registers: Box::new(move |bus| {
            let registers = EnaRegisters::new(bus, settings, switch);
            // The factory runs once per function: the slot is empty.
            let _ = slot.set(Arc::downgrade(&registers.shared));
            Box::new(registers)
        }),
    };
    (config, control)
}

/// Device counters, cumulative since reset (serialized as is by the control
/// socket's `status`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Counters {
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Packets sent.
    pub tx_pkts: u64,
    /// Packets the driver pushed to LLQ memory (before TSO splits them;
    /// `tx_pkts` counts what went on the wire).
    pub llq_tx_pkts: u64,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Packets received.
    pub rx_pkts: u64,
    /// Received packets dropped.
    pub rx_drops: u64,
    /// Packets to send dropped.
    pub tx_drops: u64,
    /// Interrupt-unmask register writes the data path saw (writes between
    /// two of its passes count once).
    pub unmask_writes: u64,
    /// CQ head doorbell changes the data path saw.
    pub head_writes: u64,
    /// Combined head + unmask doorbell writes the data path saw.
    pub combined_writes: u64,
    /// Frames sent that left the card over its SRD uplink.
    pub srd_tx_pkts: u64,
    /// Frames received that came from another card over the SRD uplink.
    pub srd_rx_pkts: u64,
}

/// `ena_admin_aq_get_stats_cmd` fields and `enum ena_admin_get_stats_*`.
mod stats {
    pub const TYPE: usize = 16;
    pub const SCOPE: usize = 17;
    pub const TYPE_BASIC: u8 = 0;
    /// `ENA_ADMIN_GET_STATS_TYPE_ENA_SRD`: `ena_admin_ena_srd_info`.
    pub const TYPE_ENA_SRD: u8 = 3;
    pub const SCOPE_ETH_TRAFFIC: u8 = 1;
    /// `ENA_ADMIN_ENA_SRD_ENABLED | ENA_ADMIN_ENA_SRD_UDP_ENABLED`: every
    /// frame for another card goes over SRD, UDP included.
    pub const ENA_SRD_MODE: u64 = 0b11;
}

/// The device state behind the registers, shared with the timer thread.
#[derive(Debug)]
struct EnaState {
    settings: EnaSettings,
    /// The card's switch: whether it has an SRD uplink, and its load.
    switch: Arc<Switch>,
    attrs: DeviceAttributes,
    /// Changes on every reset; a timer thread of an older epoch exits.
    epoch: u64,
    admin: AdminQueue,
    aenq: Aenq,
    features: FeatureState,
    queues: IoQueues,
    datapath: DataPath,
    counters: Counters,
    /// The port's link (the operator's `link up|down`). A property of the
    /// port, not of the driver's session: resets keep it.
    link_up: bool,
    /// The link state is still to be reported (at the first armed AENQ,
    /// after a change, to a newly enabled group).
    link_event_pending: bool,
    /// The operator injected a fatal error: no keep-alives, no data path,
    /// `DEV_STS.FATAL_ERROR`, until a device or function reset.
    fatal: bool,
    /// The operator paused keep-alive events. Resets keep it (only the
    /// operator resumes them), so the driver's watchdog fires again.
    keep_alive_paused: bool,
    /// A timer thread of this epoch runs.
    timer_running: bool,
    intr_mask: u32,
    control: DeviceControl,
    mmio_reg_read: u32,
    mmio_resp: u64,
}

impl EnaState {
    fn new(settings: EnaSettings, switch: Arc<Switch>) -> Self {
        let attrs = DeviceAttributes {
            mac: settings.mac,
            device_version: REGISTERS.version,
            rss_key: features::random_rss_key(),
        };
        Self {
            settings,
            switch,
            features: FeatureState::at_reset(&attrs),
            attrs,
            epoch: 0,
            admin: AdminQueue::default(),
            aenq: Aenq::default(),
            queues: IoQueues::default(),
            datapath: DataPath::default(),
            counters: Counters::default(),
            link_up: true,
            link_event_pending: true,
            fatal: false,
            keep_alive_paused: false,
            timer_running: false,
            intr_mask: 0,
            control: DeviceControl::default(),
            mmio_reg_read: 0,
            mmio_resp: 0,
        }
    }

    /// Drops every queue and setting and recovers from a fatal error; the
    /// device keeps its status and `mmio_resp` for the caller to decide, and
    /// the port's link state and a keep-alive pause (the operator's).
    /// Stops the timer (by epoch).
    fn clear(&mut self) {
        self.epoch += 1;
        self.admin = AdminQueue::default();
        self.aenq = Aenq::default();
        self.features = FeatureState::at_reset(&self.attrs);
        self.queues = IoQueues::default();
        self.datapath = DataPath::default();
        self.counters = Counters::default();
        self.link_event_pending = true;
        self.fatal = false;
        self.timer_running = false;
        self.intr_mask = 0;
    }

    fn register(&self, offset: u64) -> u32 {
        if let Some(value) =
            nitro::read_queue_register(&self.admin, &self.aenq, self.mmio_resp, offset)
        {
            return value;
        }
        match offset {
            regs::ACQ_TAIL => self.admin.cq_tail.into(),
            regs::AENQ_HEAD_DB => self.aenq.head_doorbell,
            regs::AENQ_TAIL => self.aenq.tail.into(),
            regs::INTR_MASK => self.intr_mask,
            regs::DEV_CTL => self.control.dev_ctl,
            regs::DEV_STS => self.control.dev_sts,
            regs::MMIO_REG_READ => self.mmio_reg_read,
            // VERSION, CONTROLLER_VERSION, CAPS; CAPS_EXT and every
            // unassigned offset read 0.
            other => REGISTERS.register(other),
        }
    }

    fn interrupts_masked(&self) -> bool {
        self.intr_mask & regs::INTR_MASK_ADMIN != 0
    }

    fn execute(&mut self, command: &Command, bus: &HostBus) -> CommandResult {
        let dma = bus.dma();
        let opcode = command.opcode();
        debug!(opcode, command_id = command.command_id(), "admin command");
        match opcode {
            opcode::CREATE_SQ => {
                let result = self
                    .queues
                    .create_sq(&command.entry, dma, &self.features.llq);
                if let (Ok(resp), Ok(direction)) = (
                    &result,
                    queues::Direction::from_identity(command.entry.u8(4)),
                ) {
                    self.datapath
                        .sq_created(bus, direction, resp.u16(acq::BODY));
                }
                result
            }
            opcode::DESTROY_SQ => self.queues.destroy_sq(&command.entry),
            opcode::CREATE_CQ => {
                let result = self.queues.create_cq(&command.entry, dma, MSIX_VECTORS);
                if let Ok(resp) = &result {
                    let idx = resp.u16(acq::BODY);
                    if let Some(cq) = self.queues.cq(idx) {
                        self.datapath.cq_created(bus, idx, cq);
                    }
                }
                result
            }
            opcode::DESTROY_CQ => self.queues.destroy_cq(&command.entry),
            opcode::GET_FEATURE | opcode::SET_FEATURE => {
                let before = self.aenq.enabled_groups;
                let mut ctx = features::Context {
                    attrs: &self.attrs,
                    srd: self.switch.uplink_load().is_some(),
                    state: &mut self.features,
                    aenq: &mut self.aenq,
                    queues: &self.queues,
                    dma,
                };
                let result = if opcode == opcode::GET_FEATURE {
                    features::get(command, &mut ctx)
                } else {
                    features::set(command, &mut ctx)
                };
                if self.aenq.enabled_groups != before {
                    // Re-report the link state to a newly enabled group.
                    self.link_event_pending = true;
                }
                result
            }
            opcode::GET_STATS => self.get_stats(command),
            other => Err(Refused::new(
                admin::Status::BadOpcode,
                format!("opcode {other} is not an ENA admin opcode"),
            )),
        }
    }

    fn get_stats(&self, command: &Command) -> CommandResult {
        let kind = command.entry.u8(stats::TYPE);
        let scope = command.entry.u8(stats::SCOPE);
        let c = &self.counters;
        let values = match kind {
            stats::TYPE_BASIC if scope != stats::SCOPE_ETH_TRAFFIC => {
                return Err(Refused::unsupported(format!(
                    "statistics scope {scope} (the device counts per device only)"
                )));
            }
            stats::TYPE_BASIC => vec![
                c.tx_bytes, c.tx_pkts, c.rx_bytes, c.rx_pkts, c.rx_drops, c.tx_drops,
            ],
            // Offered (device capability ENA_SRD_INFO) only while the card
            // has an uplink; device-wide, whatever the scope (ena.ko
            // leaves it zero). Every frame for another card is eligible
            // and goes over SRD; the utilization is the uplink's queue.
            stats::TYPE_ENA_SRD => match self.switch.uplink_load() {
                Some(load) => vec![
                    stats::ENA_SRD_MODE,
                    c.srd_tx_pkts,
                    c.srd_tx_pkts,
                    c.srd_rx_pkts,
                    load.into(),
                ],
                None => {
                    return Err(Refused::unsupported(
                        "ENA SRD statistics: the card has no SRD uplink",
                    ));
                }
            },
            _ => return Err(Refused::unsupported(format!("statistics type {kind}"))),
        };
        let mut resp = Entry::default();
        for (i, value) in values.into_iter().enumerate() {
            resp.set_u32(acq::BODY + 8 * i, value as u32);
            resp.set_u32(acq::BODY + 8 * i + 4, (value >> 32) as u32);
        }
        Ok(resp)
    }

    /// Posts `event`; returns whether it reached the queue.
    fn post(&mut self, bus: &HostBus, event: Event) -> bool {
        match self.aenq.post(bus.dma(), event) {
            Ok(()) => {
                debug!(?event, tail = self.aenq.tail, "AENQ event");
                true
            }
            Err(PostError::GroupDisabled(_) | PostError::NotConfigured) => false,
            Err(err @ PostError::Full { .. }) => {
                // The driver has not consumed earlier events yet (it reads
                // none before probe completes); keep-alives are periodic.
                debug!(?event, error = %err, "AENQ event not posted");
                false
            }
            Err(err) => {
                warn!(?event, error = %err, "AENQ event dropped");
                false
            }
        }
    }

    /// Reports the link state if still pending and the AENQ is armed;
    /// returns whether an event was written.
    fn flush_link_event(&mut self, bus: &HostBus) -> bool {
        if !self.link_event_pending || !self.aenq.armed() {
            return false;
        }
        let posted = self.post(bus, Event::LinkChange { up: self.link_up });
        if posted {
            self.link_event_pending = false;
        }
        posted
    }

    fn signal(&self, bus: &HostBus) {
        if self.interrupts_masked() {
            return;
        }
        if let Err(err) = bus.signal_msix(ADMIN_VECTOR) {
            warn!(error = %err, "cannot signal the admin interrupt");
        }
    }
}

/// The ENA register file: [`EnaState`] behind a lock, shared with the
/// AENQ timer thread.
pub struct EnaRegisters {
    shared: Arc<Shared>,
}

impl fmt::Debug for EnaRegisters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EnaRegisters").finish_non_exhaustive()
    }
}

/// What the register file and its timer thread share.
#[derive(Debug)]
struct Shared {
    bus: Arc<HostBus>,
    state: Mutex<EnaState>,
    /// Wakes a sleeping timer thread when the epoch changes.
    wake: Condvar,
    /// The card's switch and this function's port on it.
    switch: Arc<Switch>,
    port: PortId,
    /// Tells the data-path thread to exit.
    stop: AtomicBool,
    /// The data-path thread, to wake it.
    worker: OnceLock<thread::Thread>,
    /// A frame was delivered since the data-path thread's last pass.
    kicked: AtomicBool,
}

impl Port for Shared {
    fn receive(&self, frame: &[u8], source: Source) {
        let mut state = self.lock();
        if !state.link_up || state.fatal {
            // The frame never reaches a port whose link is down, nor a
            // failed device: nothing is delivered or counted.
            trace!(
                len = frame.len(),
                "RX frame lost: link down or device failed"
            );
            return;
        }
        let EnaState {
            datapath,
            queues,
            features,
            counters,
            ..
        } = &mut *state;
        let delivered = datapath.receive(&self.bus, queues, features, counters, frame);
        if delivered && source == Source::Uplink {
            counters.srd_rx_pkts += 1;
        }
        drop(state);
        if delivered {
            // A received frame is usually answered soon (an unmask after
            // NAPI, a reply or an ACK), and the data-path thread fires
            // moderated interrupts: wake it and have it poll eagerly.
            self.kicked.store(true, Ordering::Release);
            if let Some(worker) = self.worker.get() {
                worker.unpark();
            }
        }
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, EnaState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl EnaRegisters {
    /// The registers of a function reaching the host through `bus`,
    /// attached to `switch`; starts the function's data-path thread.
    pub fn new(bus: Arc<HostBus>, settings: EnaSettings, switch: Arc<Switch>) -> Self {
        let shared = Arc::new_cyclic(|me: &Weak<Shared>| {
            let port = switch.attach(me.clone() as Weak<dyn Port>);
            Shared {
                bus,
                state: Mutex::new(EnaState::new(settings, Arc::clone(&switch))),
                wake: Condvar::new(),
                switch,
                port,
                stop: AtomicBool::new(false),
                worker: OnceLock::new(),
                kicked: AtomicBool::new(false),
            }
        });
        let worker = Arc::clone(&shared);
        if let Some(thread) = spawn_datapath("ena-datapath", false, move |_| datapath_loop(&worker))
        {
            let _ = shared.worker.set(thread);
        }
        Self { shared }
    }

    fn write_register(&self, offset: u64, value: u32) {
        let bus = &self.shared.bus;
        let mut state = self.shared.lock();
        let EnaState {
            admin,
            aenq,
            mmio_resp,
            ..
        } = &mut *state;
        if nitro::write_queue_register(admin, aenq, mmio_resp, offset, value) {
            return;
        }
        match offset {
            regs::AQ_DB => self.admin_doorbell(&mut state, value),
            regs::AENQ_HEAD_DB => {
                state.aenq.head_doorbell = value;
                if state.flush_link_event(bus) {
                    state.signal(bus);
                }
                self.ensure_timer(&mut state);
            }
            regs::INTR_MASK => state.intr_mask = value,
            regs::DEV_CTL => self.device_control(&mut state, value),
            regs::MMIO_REG_READ => {
                state.mmio_reg_read = value;
                Self::readless(&state, bus, value);
            }
            _ => debug!(
                offset = format_args!("{offset:#x}"),
                value = format_args!("{value:#x}"),
                "write to a read-only or unassigned register ignored"
            ),
        }
    }

    fn admin_doorbell(&self, state: &mut EnaState, tail: u32) {
        let bus = &self.shared.bus;
        let parts: fn(&mut EnaState) -> (&mut admin::AdminQueue, &mut u32) =
            |s| (&mut s.admin, &mut s.control.dev_sts);
        if admin::serve_doorbell(state, parts, tail, bus.dma(), |s, c| s.execute(c, bus)) {
            state.signal(bus);
        }
        // A SET_FEATURE(AENQ_CONFIG) may have enabled events.
        if state.flush_link_event(bus) {
            state.signal(bus);
        }
        self.ensure_timer(state);
    }

    fn device_control(&self, state: &mut EnaState, value: u32) {
        let request = state.control.write(value);
        if let Some(reason) = request.reset {
            info!(reason = regs::reset_reason_name(reason), "device reset");
            state.clear();
            self.shared.wake.notify_all();
            return;
        }
        if request.aq_restart {
            state.admin.restart_sq();
            state.admin.restart_cq();
            debug!("admin queue restarted");
        }
        let sts = &mut state.control.dev_sts;
        if value & regs::DEV_CTL_QUIESCENT != 0 {
            // The data path works under the state lock this write holds:
            // no I/O is in flight, so quiescence is immediate.
            *sts &= !regs::DEV_STS_QUIESCENT_STATE_IN_PROGRESS;
            *sts |= regs::DEV_STS_QUIESCENT_STATE_ACHIEVED;
        }
        if value & regs::DEV_CTL_IO_RESUME != 0 {
            *sts &= !(regs::DEV_STS_QUIESCENT_STATE_ACHIEVED
                | regs::DEV_STS_QUIESCENT_STATE_IN_PROGRESS);
        }
    }

    /// Serves a read-less register read (`ena_com_reg_bar_read32`).
    fn readless(state: &EnaState, bus: &HostBus, request: u32) {
        let result = nitro::readless::respond(bus.dma(), state.mmio_resp, request, |off| {
            state.register(off)
        });
        if let Err(err) = result {
            warn!(error = %err, "read-less read failed");
        }
    }

    /// Starts the keep-alive timer once the AENQ is armed with the
    /// keep-alive group enabled.
    fn ensure_timer(&self, state: &mut EnaState) {
        if !state.aenq.wants_keep_alives() {
            return;
        }
        let shared = Arc::clone(&self.shared);
        let (epoch, period) = (state.epoch, state.settings.keep_alive);
        control::start_timer("ena-aenq", &mut state.timer_running, move || {
            keep_alive_loop(&shared, epoch, period)
        });
    }
}

/// The timer thread: one keep-alive per period (none while paused or
/// failed) until the device's epoch moves on (reset, disconnect) or the
/// registers are dropped.
fn keep_alive_loop(shared: &Shared, epoch: u64, period: Duration) {
    control::every(
        &shared.state,
        &shared.wake,
        period,
        |s| s.epoch == epoch,
        |state| {
            // A pending link event (the AENQ was full) is retried even
            // while keep-alives are paused or the device has failed.
            let link = state.flush_link_event(&shared.bus);
            let alive = !state.keep_alive_paused && !state.fatal && {
                let event = Event::KeepAlive {
                    rx_drops: state.counters.rx_drops,
                    tx_drops: state.counters.tx_drops,
                };
                state.post(&shared.bus, event)
            };
            if alive || link {
                state.signal(&shared.bus);
            }
        },
    );
    debug!(epoch, "keep-alive timer stopped");
}

/// Shortest and longest idle sleep of the data-path thread.
const POLL_SLEEP_MIN: Duration = Duration::from_micros(20);
const POLL_SLEEP_MAX: Duration = Duration::from_millis(1);
/// Longest sleep while the function is warm (active within [`POLL_WARM`]).
const POLL_SLEEP_MAX_WARM: Duration = Duration::from_micros(100);
/// How long after activity the function counts as warm.
const POLL_WARM: Duration = Duration::from_secs(1);
/// How long the thread keeps polling without sleeping after activity.
const POLL_BUSY: Duration = Duration::from_micros(200);
/// Sleep while the function has no I/O queue at all.
const POLL_NO_QUEUES: Duration = Duration::from_millis(10);

/// The data-path thread of a function, polling BAR0's mapped doorbell
/// pages (guest stores there never trap) with an adaptive policy:
///
/// * after any activity (a TX doorbell moved, an unmask write) it polls
///   again at once, yielding the CPU between passes, for
///   [`POLL_BUSY`] (200 µs): a driver that rang once usually rings again
///   soon (the next packet, the unmask after NAPI);
/// * then it sleeps between passes, starting at 20 µs and doubling up to
///   [`POLL_SLEEP_MAX_WARM`] (100 µs) while the function was active within
///   the last second (traffic that pauses between packets, such as
///   request/response or ping: each sleep is latency added to a packet),
///   and up to 1 ms once it has been idle longer, so an idle function
///   costs about a thousand short passes per second (the host's two cores
///   are shared with QEMU's TCG threads);
/// * with no I/O queue created it sleeps 10 ms between passes.
///
/// RX needs no polling: the switch delivers frames from the sender's
/// thread, which reads the RX doorbell at that moment, and wakes this
/// thread into its eager phase (what follows a frame is usually the
/// driver's unmask and a reply). Frames are handed
/// to the switch after the function's lock is released, so two functions
/// sending to each other never wait on each other's locks.
fn datapath_loop(shared: &Shared) {
    debug!("data-path thread started");
    let mut last_activity = Instant::now();
    let mut sleep = POLL_SLEEP_MIN;
    while !shared.stop.load(Ordering::Acquire) {
        let (poll, has_queues) = {
            let mut state = shared.lock();
            // A failed device serves nothing: doorbells stay unread until
            // a reset clears the queues.
            let has_queues = state.queues.count() > 0 && !state.fatal;
            let EnaState {
                datapath,
                queues,
                features,
                counters,
                link_up,
                ..
            } = &mut *state;
            let poll = if has_queues {
                datapath.poll(&shared.bus, queues, &features.llq, counters, *link_up)
            } else {
                Poll::default()
            };
            (poll, has_queues)
        };
        let over_srd = poll
            .frames
            .iter()
            .filter(|frame| shared.switch.forward(shared.port, frame).uplink)
            .count() as u64;
        if over_srd > 0 {
            shared.lock().counters.srd_tx_pkts += over_srd;
        }
        // A moderated interrupt that comes due bounds the sleep.
        let until_interrupt = poll
            .next_interrupt
            .map(|due| due.saturating_duration_since(Instant::now()));
        let nap = |d: Duration| thread::park_timeout(until_interrupt.map_or(d, |u| u.min(d)));
        if poll.active || shared.kicked.swap(false, Ordering::AcqRel) {
            last_activity = Instant::now();
            sleep = POLL_SLEEP_MIN;
            thread::yield_now();
        } else if !has_queues {
            nap(POLL_NO_QUEUES);
        } else if last_activity.elapsed() < POLL_BUSY {
            thread::yield_now();
        } else {
            nap(sleep);
            let cap = if last_activity.elapsed() < POLL_WARM {
                POLL_SLEEP_MAX_WARM
            } else {
                POLL_SLEEP_MAX
            };
            sleep = (sleep * 2).min(cap);
        }
    }
    debug!("data-path thread stopped");
}

impl Drop for EnaRegisters {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        self.shared.switch.detach(self.shared.port);
        let mut state = self.shared.lock();
        state.epoch += 1;
        self.shared.wake.notify_all();
    }
}

impl RegisterFile for EnaRegisters {
    fn read(&mut self, offset: u64, data: &mut [u8]) {
        let state = self.shared.lock();
        read_dword_registers(offset, data, |off| state.register(off));
    }

    fn write(&mut self, offset: u64, data: &[u8]) {
        let Ok(bytes) = <[u8; 4]>::try_from(data) else {
            warn!(
                offset = format_args!("{offset:#x}"),
                len = data.len(),
                "non-dword register write ignored"
            );
            return;
        };
        if offset % 4 != 0 {
            warn!(
                offset = format_args!("{offset:#x}"),
                "unaligned register write ignored"
            );
            return;
        }
        self.write_register(offset, u32::from_le_bytes(bytes));
    }

    fn reset(&mut self) {
        // A function reset (VFIO reset, disconnect) is the same device
        // reset plus the read-less address; the link and a keep-alive
        // pause stay (see `EnaState::clear`).
        let mut state = self.shared.lock();
        state.clear();
        state.control = DeviceControl::default();
        state.mmio_reg_read = 0;
        state.mmio_resp = 0;
        self.shared.wake.notify_all();
    }
}
