//! A PCI function of the card: identity, configuration space, BARs, MSI-X,
//! DMA, and the function-specific register file behind BAR0.
//!
//! # BAR layout (both function kinds)
//!
//! | BAR | type                         | size    | contents                                        |
//! |-----|------------------------------|---------|-------------------------------------------------|
//! | 0   | 64-bit, non-prefetchable     | 16 KiB  | 0x0000-0x0fff control registers (trapped)       |
//! |     |                              |         | 0x1000-0x3fff doorbell pages (mmapped memfd)    |
//! | 2   | 64-bit, prefetchable         | 1 MiB   | LLQ memory (mmapped memfd)                      |
//! | 4   | 64-bit, non-prefetchable     | 16 KiB  | MSI-X table at 0, PBA at 0x2000 (trapped)       |
//!
//! The card's memfd (see [`layout`]) backs BAR0 from file offset 0 (its
//! first page, the trapped registers, is never mapped) and BAR2 from file
//! offset 1 MiB.

use std::fmt;
use std::fs::File;
use std::mem::size_of;
use std::os::fd::AsRawFd;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use thiserror::Error;
use tracing::{debug, info, warn};
use vfio_bindings::bindings::vfio::{
    VFIO_IRQ_INFO_EVENTFD, VFIO_PCI_BAR0_REGION_INDEX, VFIO_PCI_BAR2_REGION_INDEX,
    VFIO_PCI_BAR4_REGION_INDEX, VFIO_PCI_CONFIG_REGION_INDEX, VFIO_PCI_ERR_IRQ_INDEX,
    VFIO_PCI_INTX_IRQ_INDEX, VFIO_PCI_MSI_IRQ_INDEX, VFIO_PCI_MSIX_IRQ_INDEX, VFIO_PCI_NUM_REGIONS,
    VFIO_PCI_REQ_IRQ_INDEX, VFIO_REGION_INFO_FLAG_MMAP, VFIO_REGION_INFO_FLAG_READ,
    VFIO_REGION_INFO_FLAG_WRITE, vfio_region_info, vfio_region_sparse_mmap_area,
};
use vfio_user::{IrqInfo, ServerRegion, SparseArea};
use vm_memory::{VolatileMemory, VolatileSlice};

use crate::device_memory::{DeviceMemory, DeviceMemoryRange};
use crate::dma::GuestDma;
use crate::pci::PciId;
use crate::pci::capability::{MsixCapability, PciExpressCapability};
use crate::pci::config::{
    CONFIG_SPACE_SIZE, ConfigBuildError, ConfigSpace, ConfigSpaceBuilder, MemoryBar, PciIdentity,
};
use crate::pci::msix::{Delivery, MsixError, MsixLayoutError, MsixTable, MsixVectors};
use crate::pci::regs::OutOfRange;
use crate::{efa, ena};

/// BAR and memfd layout shared by every function.
pub mod layout {
    const KIB: u64 = 1024;
    const MIB: u64 = 1024 * KIB;

    /// Register BAR (control registers + doorbells).
    pub const REG_BAR: usize = 0;
    /// Size of BAR0: the register page and the doorbell pages, one per
    /// EFA UAR (`efa::regs::layout`); ENA uses the first three.
    pub const BAR0_SIZE: u64 = 512 * KIB;
    /// Size of the trapped control-register page at the start of BAR0.
    pub const REGISTERS_SIZE: u64 = 4 * KIB;
    /// Offset of the doorbell pages in BAR0.
    pub const DOORBELL_OFFSET: u64 = REGISTERS_SIZE;
    /// Size of the doorbell pages.
    pub const DOORBELL_SIZE: u64 = BAR0_SIZE - REGISTERS_SIZE;

    /// LLQ (device memory) BAR.
    pub const MEM_BAR: usize = 2;
    /// Size of BAR2.
    pub const BAR2_SIZE: u64 = MIB;

    /// MSI-X BAR.
    pub const MSIX_BAR: usize = 4;
    /// Size of BAR4.
    pub const BAR4_SIZE: u64 = 16 * KIB;
    /// Offset of the MSI-X table in BAR4.
    pub const MSIX_TABLE_OFFSET: u64 = 0;
    /// Offset of the MSI-X Pending Bit Array in BAR4.
    pub const MSIX_PBA_OFFSET: u64 = 8 * KIB;

    /// Offset of BAR0 in the card's memfd (the vfio region offset QEMU
    /// mmaps from); the doorbells are at `MEMFD_BAR0_OFFSET +
    /// DOORBELL_OFFSET`.
    pub const MEMFD_BAR0_OFFSET: u64 = 0;
    /// Offset of BAR2 in the card's memfd.
    pub const MEMFD_BAR2_OFFSET: u64 = MIB;
    /// Size of the card's memfd.
    pub const MEMFD_SIZE: u64 = 2 * MIB;

    const _: () = {
        assert!(MEMFD_BAR0_OFFSET + BAR0_SIZE <= MEMFD_BAR2_OFFSET);
        assert!(MEMFD_BAR2_OFFSET + BAR2_SIZE <= MEMFD_SIZE);
        assert!(MEMFD_BAR0_OFFSET % 4096 == 0 && MEMFD_BAR2_OFFSET % 4096 == 0);
        assert!(DOORBELL_OFFSET % 4096 == 0 && DOORBELL_SIZE % 4096 == 0);
        assert!(MSIX_PBA_OFFSET < BAR4_SIZE);
    };
}

/// The function-specific control registers in the first page of BAR0.
///
/// Offsets are relative to BAR0; the function only forwards accesses that
/// lie inside [`layout::REGISTERS_SIZE`]. Accesses may have any width and
/// alignment the client chooses; implementations decide what that means
/// for their registers (see [`read_dword_registers`]).
pub trait RegisterFile: Send + fmt::Debug {
    /// Guest read of `data.len()` bytes at `offset`.
    fn read(&mut self, offset: u64, data: &mut [u8]);
    /// Guest write of `data` at `offset`.
    fn write(&mut self, offset: u64, data: &[u8]);
    /// Returns every register to its reset value.
    fn reset(&mut self);
}

/// Serves a read of any width and alignment from a file of little-endian
/// 32-bit registers: each byte comes from the register containing it, as
/// `register(dword_offset)` reports it.
pub fn read_dword_registers(offset: u64, data: &mut [u8], register: impl Fn(u64) -> u32) {
    for (addr, byte) in (offset..).zip(data.iter_mut()) {
        let value = register(addr & !3);
        *byte = value.to_le_bytes()[(addr & 3) as usize];
    }
}

/// Nice value of the data-path threads that do not run real-time (see
/// [`spawn_datapath`]).
pub const DATAPATH_NICE: i32 = -10;

/// How a data-path thread got scheduled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatapathPriority {
    /// `SCHED_FIFO` priority 1: it must never spin, only sleep.
    RealTime,
    /// Nice [`DATAPATH_NICE`].
    Nice,
    /// The default (neither was permitted).
    Default,
}

/// Starts a function's data-path thread `name` running `body` and returns
/// its handle (to unpark it), or `None` (logged) if it cannot start.
///
/// The thread polls doorbells that guests write without trapping and
/// sleeps when idle, and under TCG every vCPU thread that spins on a
/// completion queue competes with it for the host's cores: each time a
/// poller waking from its sleep waits for a spinning vCPU's time slice to
/// end, that is latency added to a request or response. So the thread
/// asks for `SCHED_FIFO` when `realtime` (a waking poller then preempts a
/// vCPU at once; it must sleep, not spin, between passes, or it would
/// starve the vCPUs), else, or if refused, for nice [`DATAPATH_NICE`]
/// (both need root or `CAP_SYS_NICE`; without, the default, logged).
/// `body` learns which it got.
pub fn spawn_datapath(
    name: &str,
    realtime: bool,
    body: impl FnOnce(DatapathPriority) + Send + 'static,
) -> Option<std::thread::Thread> {
    let spawned = std::thread::Builder::new()
        .name(name.into())
        .spawn(move || body(raise_priority(realtime)));
    match spawned {
        Ok(handle) => Some(handle.thread().clone()),
        Err(err) => {
            warn!(thread = name, error = %err, "cannot start a data-path thread");
            None
        }
    }
}

/// Raises the calling thread's priority as [`spawn_datapath`] says.
fn raise_priority(realtime: bool) -> DatapathPriority {
    if realtime {
        let param = libc::sched_param { sched_priority: 1 };
        // SAFETY: `param` is a valid sched_param for the call's duration;
        // on Linux, pid 0 names the calling thread.
        if unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &param) } == 0 {
            return DatapathPriority::RealTime;
        }
        debug!(
            error = %std::io::Error::last_os_error(),
            "data-path thread not real-time"
        );
    }
    // SAFETY: setpriority only reads its integer arguments; on Linux,
    // PRIO_PROCESS with `who` 0 names the calling thread.
    if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, DATAPATH_NICE) } == 0 {
        return DatapathPriority::Nice;
    }
    debug!(
        error = %std::io::Error::last_os_error(),
        "data-path thread keeps the default priority"
    );
    DatapathPriority::Default
}

/// The kinds of function the card implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FunctionKind {
    /// Elastic Network Adapter (Ethernet).
    Ena,
    /// Elastic Fabric Adapter (RDMA).
    Efa,
}

impl FunctionKind {
    /// Every kind, in CLI order.
    pub const ALL: [FunctionKind; 2] = [FunctionKind::Ena, FunctionKind::Efa];

    /// The PCI ID the function reports unless overridden.
    pub fn default_id(self) -> PciId {
        match self {
            FunctionKind::Ena => ena::DEFAULT_ID,
            FunctionKind::Efa => efa::DEFAULT_ID,
        }
    }

    /// The lower-case name used on the command line and in logs.
    pub fn name(self) -> &'static str {
        match self {
            FunctionKind::Ena => "ena",
            FunctionKind::Efa => "efa",
        }
    }

    /// Everything needed to build a function of this kind reporting `id`.
    pub fn config(self, id: PciId) -> FunctionConfig {
        match self {
            FunctionKind::Ena => ena::function_config(id, ena::EnaSettings::default()),
            FunctionKind::Efa => efa::function_config(id),
        }
    }
}

impl fmt::Display for FunctionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A function kind the card does not implement.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("unknown function kind '{0}': expected 'ena' or 'efa'")]
pub struct ParseFunctionKindError(String);

impl FromStr for FunctionKind {
    type Err = ParseFunctionKindError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|kind| kind.name() == s)
            .ok_or_else(|| ParseFunctionKindError(s.to_owned()))
    }
}

/// Builds a function's register file once the function's [`HostBus`]
/// exists, so that the registers can reach guest memory and raise
/// interrupts.
pub type RegisterFactory = Box<dyn FnOnce(Arc<HostBus>) -> Box<dyn RegisterFile> + Send>;

/// What distinguishes one function from another.
pub struct FunctionConfig {
    /// The kind of function.
    pub kind: FunctionKind,
    /// PCI identification.
    pub identity: PciIdentity,
    /// Number of MSI-X vectors.
    pub msix_vectors: u16,
    /// Builds the BAR0 control registers.
    pub registers: RegisterFactory,
}

impl fmt::Debug for FunctionConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FunctionConfig")
            .field("kind", &self.kind)
            .field("identity", &self.identity)
            .field("msix_vectors", &self.msix_vectors)
            .finish_non_exhaustive()
    }
}

/// The function's upstream side: guest memory as it reaches it by DMA, its
/// MSI-X vectors, and the card-owned memory behind the mapped BAR pages
/// (doorbells, LLQ). Shared (`Arc`) between the function and whatever
/// device logic runs outside the vfio-user thread (timers, the data path);
/// it takes no lock shared with MMIO handling.
#[derive(Debug)]
pub struct HostBus {
    dma: GuestDma,
    msix: MsixVectors,
    /// The card-owned memory behind BAR0's doorbell pages and BAR2.
    memory: Arc<DeviceMemory>,
    /// Bus Master Enable and MSI-X Enable are both set: the function may
    /// send MSI-X messages.
    msix_allowed: AtomicBool,
}

impl HostBus {
    /// A bus with no guest memory mapped, `vectors` unassigned MSI-X
    /// vectors, and the function's device memory (doorbells, LLQ area).
    pub fn new(vectors: u16, memory: Arc<DeviceMemory>) -> Self {
        Self {
            dma: GuestDma::new(),
            msix: MsixVectors::new(vectors),
            memory,
            msix_allowed: AtomicBool::new(false),
        }
    }

    /// Guest memory as the function reaches it by DMA.
    pub fn dma(&self) -> &GuestDma {
        &self.dma
    }

    /// The MSI-X vectors.
    pub fn msix(&self) -> &MsixVectors {
        &self.msix
    }

    /// The doorbell pages of BAR0 as the guest writes them (offset 0 is
    /// BAR0 offset [`layout::DOORBELL_OFFSET`]).
    pub fn doorbells(&self) -> Result<VolatileSlice<'_>, DeviceMemoryRange> {
        self.memory.slice(
            layout::MEMFD_BAR0_OFFSET + layout::DOORBELL_OFFSET,
            layout::DOORBELL_SIZE as usize,
        )
    }

    /// The LLQ memory behind BAR2.
    pub fn llq_memory(&self) -> Result<VolatileSlice<'_>, DeviceMemoryRange> {
        self.memory
            .slice(layout::MEMFD_BAR2_OFFSET, layout::BAR2_SIZE as usize)
    }

    /// Runs `f` on the doorbell word at BAR0 offset `bar0_offset` (in the
    /// mapped doorbell pages) and returns its result; 0, logged, when the
    /// offset lies outside them.
    pub fn doorbell_word(&self, bar0_offset: u64, f: impl FnOnce(&AtomicU32) -> u32) -> u32 {
        let Some(offset) = bar0_offset.checked_sub(layout::DOORBELL_OFFSET) else {
            warn!(bar0_offset, "doorbell below the doorbell pages");
            return 0;
        };
        match self.doorbells() {
            Ok(pages) => match pages.get_atomic_ref::<AtomicU32>(offset as usize) {
                Ok(word) => f(word),
                Err(err) => {
                    warn!(offset, error = %err, "doorbell word out of range");
                    0
                }
            },
            Err(err) => {
                warn!(error = %err, "doorbell pages unavailable");
                0
            }
        }
    }

    /// Sends MSI-X `vector`, if the guest allows the function to: like a
    /// real function, it sends nothing while Bus Master Enable or MSI-X
    /// Enable is clear.
    pub fn signal_msix(&self, vector: u16) -> Result<Delivery, MsixError> {
        if !self.msix_allowed.load(Ordering::Acquire) {
            return Ok(Delivery::NoTrigger);
        }
        self.msix.trigger(vector)
    }
}

/// Why a function could not be built.
#[derive(Debug, Error)]
pub enum FunctionError {
    /// The configuration space layout is invalid.
    #[error("{kind} function: invalid configuration space: {source}")]
    Config {
        /// Function kind.
        kind: FunctionKind,
        /// The layout error.
        #[source]
        source: ConfigBuildError,
    },
    /// The MSI-X table does not fit its BAR.
    #[error("{kind} function: {source}")]
    MsixLayout {
        /// Function kind.
        kind: FunctionKind,
        /// The layout error.
        #[source]
        source: MsixLayoutError,
    },
    /// The card's memfd could not be created or mapped.
    #[error("{kind} function: cannot create device memory: {source}")]
    DeviceMemory {
        /// Function kind.
        kind: FunctionKind,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// A region access the function refuses.
#[derive(Debug, Error)]
pub enum AccessError {
    /// The region index names no implemented region.
    #[error("region {index} is not implemented")]
    NoSuchRegion {
        /// VFIO region index.
        index: u32,
    },
    /// The access does not fit inside the region.
    #[error("{len}-byte access at {offset:#x} is outside region {index} ({size:#x} bytes)")]
    OutOfRange {
        /// VFIO region index.
        index: u32,
        /// Offset of the access.
        offset: u64,
        /// Length of the access.
        len: usize,
        /// Size of the region.
        size: u64,
    },
    /// Register block bounds (should not happen after the region check).
    #[error(transparent)]
    Registers(#[from] OutOfRange),
    /// Device memory bounds (should not happen after the region check).
    #[error(transparent)]
    DeviceMemory(#[from] DeviceMemoryRange),
}

/// Which part of BAR0 an access hits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bar0Part {
    Registers,
    Doorbells,
}

/// Guest accesses QEMU forwarded to the card (each one a trap: a vfio-user
/// message and its reply), by region. Mapped BAR pages never show up here.
#[derive(Debug, Default)]
pub struct TrapCounters {
    /// BAR0 control registers.
    pub registers: AtomicU64,
    /// Any other BAR access (BAR0 doorbells, BAR2, the MSI-X table in BAR4):
    /// only when QEMU could not map them.
    pub other_bars: AtomicU64,
    /// Configuration space.
    pub config: AtomicU64,
}

/// A snapshot of [`TrapCounters`] (serialized as is by the control
/// socket's `status`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TrapCounts {
    /// BAR0 control registers.
    pub registers: u64,
    /// Other BAR accesses.
    pub other_bars: u64,
    /// Configuration space.
    pub config: u64,
}

impl TrapCounters {
    fn count(&self, index: u32, offset: u64) {
        let counter = match index {
            VFIO_PCI_BAR0_REGION_INDEX if offset < layout::REGISTERS_SIZE => &self.registers,
            VFIO_PCI_CONFIG_REGION_INDEX => &self.config,
            _ => &self.other_bars,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The counts so far.
    pub fn snapshot(&self) -> TrapCounts {
        TrapCounts {
            registers: self.registers.load(Ordering::Relaxed),
            other_bars: self.other_bars.load(Ordering::Relaxed),
            config: self.config.load(Ordering::Relaxed),
        }
    }
}

/// State touched by guest MMIO and config accesses, serialized by one lock.
#[derive(Debug)]
struct Registers {
    config: ConfigSpace,
    msix_table: MsixTable,
    file: Box<dyn RegisterFile>,
}

/// One PCI function of the card.
///
/// A `Function` is shared (`Arc`) between the vfio-user thread that serves
/// QEMU and the device logic's own threads (through its [`HostBus`]): DMA,
/// MSI-X delivery and the mapped BAR pages take no lock shared with MMIO
/// handling.
#[derive(Debug)]
pub struct Function {
    kind: FunctionKind,
    identity: PciIdentity,
    registers: Mutex<Registers>,
    traps: TrapCounters,
    bus: Arc<HostBus>,
    memory: Arc<DeviceMemory>,
}

impl Function {
    /// Builds a function: configuration space with BAR0/2/4, the PCI
    /// Express and MSI-X capabilities, and the card-owned device memory.
    pub fn new(config: FunctionConfig) -> Result<Self, FunctionError> {
        use layout::*;

        let FunctionConfig {
            kind,
            identity,
            msix_vectors,
            registers,
        } = config;
        let config_error = |source| FunctionError::Config { kind, source };

        let msix_table = MsixTable::new(
            msix_vectors,
            BAR4_SIZE as usize,
            MSIX_TABLE_OFFSET as usize,
            MSIX_PBA_OFFSET as usize,
        )
        .map_err(|source| FunctionError::MsixLayout { kind, source })?;

        let msix_cap = MsixCapability {
            vectors: msix_vectors,
            bar: MSIX_BAR as u8,
            table_offset: MSIX_TABLE_OFFSET as u32,
            pba_offset: MSIX_PBA_OFFSET as u32,
        };
        let config_space = ConfigSpaceBuilder::new(&identity)
            .and_then(|b| b.bar(REG_BAR, MemoryBar::new_64bit(BAR0_SIZE, false)))
            .and_then(|b| b.bar(MEM_BAR, MemoryBar::new_64bit(BAR2_SIZE, true)))
            .and_then(|b| b.bar(MSIX_BAR, MemoryBar::new_64bit(BAR4_SIZE, false)))
            .and_then(|b| b.capability(&PciExpressCapability))
            .and_then(|b| b.capability(&msix_cap))
            .map_err(config_error)?
            .build();

        let memory = DeviceMemory::new(&format!("braid-{kind}-bars"), MEMFD_SIZE as usize)
            .map(Arc::new)
            .map_err(|source| FunctionError::DeviceMemory { kind, source })?;

        let bus = Arc::new(HostBus::new(msix_vectors, Arc::clone(&memory)));
        let file = registers(Arc::clone(&bus));
        Ok(Self {
            kind,
            identity,
            registers: Mutex::new(Registers {
                config: config_space,
                msix_table,
                file,
            }),
            traps: TrapCounters::default(),
            bus,
            memory,
        })
    }

    /// Builds a function of `kind` reporting `id`.
    pub fn of_kind(kind: FunctionKind, id: PciId) -> Result<Self, FunctionError> {
        Self::new(kind.config(id))
    }

    /// The kind of function.
    pub fn kind(&self) -> FunctionKind {
        self.kind
    }

    /// The PCI identification.
    pub fn identity(&self) -> &PciIdentity {
        &self.identity
    }

    /// Guest memory as the function reaches it by DMA.
    pub fn dma(&self) -> &GuestDma {
        self.bus.dma()
    }

    /// The MSI-X vectors.
    pub fn msix(&self) -> &MsixVectors {
        self.bus.msix()
    }

    /// The function's upstream side (DMA and MSI-X), shared.
    pub fn bus(&self) -> &Arc<HostBus> {
        &self.bus
    }

    /// The doorbell pages of BAR0, as the guest writes them.
    pub fn doorbells(&self) -> Result<VolatileSlice<'_>, DeviceMemoryRange> {
        self.bus.doorbells()
    }

    /// The LLQ memory behind BAR2.
    pub fn llq_memory(&self) -> Result<VolatileSlice<'_>, DeviceMemoryRange> {
        self.bus.llq_memory()
    }

    fn lock(&self) -> MutexGuard<'_, Registers> {
        self.registers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Reads configuration space (device-side view), for inspection.
    pub fn with_config<T>(&self, f: impl FnOnce(&ConfigSpace) -> T) -> T {
        f(&self.lock().config)
    }

    /// Device-side access to configuration space, e.g. to raise error
    /// status bits.
    pub fn with_config_mut<T>(&self, f: impl FnOnce(&mut ConfigSpace) -> T) -> T {
        let mut registers = self.lock();
        let result = f(&mut registers.config);
        self.update_msix_allowed(&registers.config);
        result
    }

    fn update_msix_allowed(&self, config: &ConfigSpace) {
        let allowed = config.bus_master_enabled() && config.msix_enabled();
        self.bus.msix_allowed.store(allowed, Ordering::Release);
    }

    /// The vfio regions QEMU sees, indexed by VFIO PCI region index.
    ///
    /// The mmappable regions carry the raw fd of the function's device
    /// memory, which stays open for as long as the function exists.
    pub fn regions(&self) -> Vec<ServerRegion> {
        use layout::*;

        let fd = self.memory.fd().as_raw_fd();
        let region = |index: u32, size: u64, flags: u32| ServerRegion {
            region_info: vfio_region_info {
                argsz: size_of::<vfio_region_info>() as u32,
                flags,
                index,
                cap_offset: 0,
                size,
                offset: 0,
            },
            sparse_areas: Vec::new(),
            mmap_fd: None,
        };
        let mapped = |mut region: ServerRegion, offset: u64, areas: &[(u64, u64)]| {
            region.region_info.flags |= VFIO_REGION_INFO_FLAG_MMAP;
            region.region_info.offset = offset;
            region.sparse_areas = areas
                .iter()
                .map(|&(offset, size)| SparseArea {
                    area: vfio_region_sparse_mmap_area { offset, size },
                })
                .collect();
            region.mmap_fd = Some(fd);
            region
        };
        let rw = VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE;

        (0..VFIO_PCI_NUM_REGIONS)
            .map(|index| match index {
                VFIO_PCI_BAR0_REGION_INDEX => mapped(
                    region(index, BAR0_SIZE, rw),
                    MEMFD_BAR0_OFFSET,
                    &[(DOORBELL_OFFSET, DOORBELL_SIZE)],
                ),
                VFIO_PCI_BAR2_REGION_INDEX => mapped(
                    region(index, BAR2_SIZE, rw),
                    MEMFD_BAR2_OFFSET,
                    &[(0, BAR2_SIZE)],
                ),
                VFIO_PCI_BAR4_REGION_INDEX => region(index, BAR4_SIZE, rw),
                VFIO_PCI_CONFIG_REGION_INDEX => region(index, CONFIG_SPACE_SIZE as u64, rw),
                // BAR1/3/5 are upper halves of 64-bit BARs; no ROM, no VGA.
                _ => region(index, 0, 0),
            })
            .collect()
    }

    /// The vfio interrupt indices QEMU sees: no INTx, no MSI, MSI-X with
    /// eventfd triggers. Vectors can be assigned individually
    /// (`NORESIZE` is not set), so QEMU need not tear all of them down to
    /// add one.
    pub fn irqs(&self) -> Vec<IrqInfo> {
        vec![
            IrqInfo {
                index: VFIO_PCI_INTX_IRQ_INDEX,
                flags: 0,
                count: 0,
            },
            IrqInfo {
                index: VFIO_PCI_MSI_IRQ_INDEX,
                flags: 0,
                count: 0,
            },
            IrqInfo {
                index: VFIO_PCI_MSIX_IRQ_INDEX,
                flags: VFIO_IRQ_INFO_EVENTFD,
                count: self.msix().count().into(),
            },
            // Declared (empty) so that QEMU's probe of the error and
            // device-request indices gets an answer rather than an error.
            IrqInfo {
                index: VFIO_PCI_ERR_IRQ_INDEX,
                flags: 0,
                count: 0,
            },
            IrqInfo {
                index: VFIO_PCI_REQ_IRQ_INDEX,
                flags: 0,
                count: 0,
            },
        ]
    }

    fn region_size(index: u32) -> Option<u64> {
        match index {
            VFIO_PCI_BAR0_REGION_INDEX => Some(layout::BAR0_SIZE),
            VFIO_PCI_BAR2_REGION_INDEX => Some(layout::BAR2_SIZE),
            VFIO_PCI_BAR4_REGION_INDEX => Some(layout::BAR4_SIZE),
            VFIO_PCI_CONFIG_REGION_INDEX => Some(CONFIG_SPACE_SIZE as u64),
            _ => None,
        }
    }

    fn check_access(index: u32, offset: u64, len: usize) -> Result<(), AccessError> {
        let size = Self::region_size(index).ok_or(AccessError::NoSuchRegion { index })?;
        match offset.checked_add(len as u64) {
            Some(end) if end <= size => Ok(()),
            _ => Err(AccessError::OutOfRange {
                index,
                offset,
                len,
                size,
            }),
        }
    }

    /// Splits a BAR0 access at the register/doorbell boundary: yields
    /// which part each piece hits, its BAR offset, and the matching range
    /// of the access buffer.
    fn bar0_pieces(
        offset: u64,
        len: usize,
    ) -> impl Iterator<Item = (Bar0Part, u64, std::ops::Range<usize>)> {
        let split = layout::REGISTERS_SIZE
            .saturating_sub(offset)
            .min(len as u64) as usize;
        [
            (Bar0Part::Registers, offset, 0..split),
            (Bar0Part::Doorbells, offset + split as u64, split..len),
        ]
        .into_iter()
        .filter(|(_, _, range)| !range.is_empty())
    }

    /// Handles `VFIO_USER_REGION_READ`.
    pub fn region_read(&self, index: u32, offset: u64, data: &mut [u8]) -> Result<(), AccessError> {
        Self::check_access(index, offset, data.len())?;
        self.traps.count(index, offset);
        let mut registers = self.lock();
        match index {
            VFIO_PCI_BAR0_REGION_INDEX => {
                for (part, at, range) in Self::bar0_pieces(offset, data.len()) {
                    match part {
                        Bar0Part::Registers => registers.file.read(at, &mut data[range]),
                        Bar0Part::Doorbells => self
                            .memory
                            .read(layout::MEMFD_BAR0_OFFSET + at, &mut data[range])?,
                    }
                }
                Ok(())
            }
            VFIO_PCI_BAR2_REGION_INDEX => {
                Ok(self.memory.read(layout::MEMFD_BAR2_OFFSET + offset, data)?)
            }
            VFIO_PCI_BAR4_REGION_INDEX => Ok(registers.msix_table.read(offset, data)?),
            VFIO_PCI_CONFIG_REGION_INDEX => Ok(registers.config.read(offset, data)?),
            _ => Err(AccessError::NoSuchRegion { index }),
        }
    }

    /// Handles `VFIO_USER_REGION_WRITE`.
    pub fn region_write(&self, index: u32, offset: u64, data: &[u8]) -> Result<(), AccessError> {
        Self::check_access(index, offset, data.len())?;
        self.traps.count(index, offset);
        let mut registers = self.lock();
        match index {
            VFIO_PCI_BAR0_REGION_INDEX => {
                for (part, at, range) in Self::bar0_pieces(offset, data.len()) {
                    match part {
                        Bar0Part::Registers => registers.file.write(at, &data[range]),
                        Bar0Part::Doorbells => self
                            .memory
                            .write(layout::MEMFD_BAR0_OFFSET + at, &data[range])?,
                    }
                }
                Ok(())
            }
            VFIO_PCI_BAR2_REGION_INDEX => Ok(self
                .memory
                .write(layout::MEMFD_BAR2_OFFSET + offset, data)?),
            VFIO_PCI_BAR4_REGION_INDEX => Ok(registers.msix_table.write(offset, data)?),
            VFIO_PCI_CONFIG_REGION_INDEX => {
                registers.config.write(offset, data)?;
                self.update_msix_allowed(&registers.config);
                Ok(())
            }
            _ => Err(AccessError::NoSuchRegion { index }),
        }
    }

    /// Guest accesses that trapped to the card so far.
    pub fn trap_counts(&self) -> TrapCounts {
        self.traps.snapshot()
    }

    /// Handles `VFIO_USER_DEVICE_SET_IRQS`.
    pub fn set_irqs(
        &self,
        index: u32,
        flags: u32,
        start: u32,
        count: u32,
        fds: Vec<File>,
    ) -> Result<(), MsixError> {
        self.msix().set_irqs(index, flags, start, count, fds)
    }

    /// Sends MSI-X `vector`, if the guest allows the function to: like a
    /// real function, it sends nothing while Bus Master Enable or MSI-X
    /// Enable is clear.
    pub fn signal_msix(&self, vector: u16) -> Result<Delivery, MsixError> {
        self.bus.signal_msix(vector)
    }

    /// Function reset (`VFIO_USER_DEVICE_RESET`, and FLR once implemented):
    /// configuration space, MSI-X table, control registers and device
    /// memory return to their power-on state. DMA mappings and interrupt
    /// eventfds belong to the client's setup (the IOMMU and the interrupt
    /// routing), not to the function, and survive, as with VFIO.
    pub fn reset(&self) {
        let mut registers = self.lock();
        registers.config.reset();
        registers.msix_table.reset();
        registers.file.reset();
        self.update_msix_allowed(&registers.config);
        self.memory.zero();
        info!(function = %self.kind, "function reset");
    }

    /// The client went away: forget its DMA mappings and eventfds and reset
    /// the function, so the next client starts from power-on state.
    pub fn disconnect(&self) {
        // Stop the device logic first, so that nothing uses the client's
        // memory or eventfds while they go away.
        self.reset();
        self.dma().clear();
        self.msix().clear();
        debug!(function = %self.kind, "client state dropped");
    }
}
