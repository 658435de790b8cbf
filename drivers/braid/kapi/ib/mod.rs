// SPDX-License-Identifier: GPL-2.0

//! RDMA devices: allocation and registration of a `struct ib_device` whose container holds the
//! driver's data, the verbs callbacks of `ib_device_ops`, driver data inside the core's user
//! context and protection domain objects, user data (`ib_udata`) copied in and out by the core's
//! rules, hardware counters (`rdma_hw_stats`) and asynchronous events (`ib_dispatch_event`).
//!
//! A registered device is disassociated from its users when it goes: unregistering it zaps their
//! mappings and destroys their objects through the driver's callbacks without waiting for the
//! processes, which see `EIO` from then on.
//!
//! The core allocates most verbs objects itself, `size_ib_*` bytes of it, and hands the driver the
//! embedded core structure: here an [`Object`] puts the driver's data right behind it. Memory
//! regions the driver allocates, the same way. Shared memory (mmap entries, pinned process memory)
//! is in [`mem`].

pub(crate) mod mem;

use core::{
    marker::PhantomData,
    mem::{size_of, MaybeUninit},
    ptr::{addr_of_mut, NonNull},
};

use kernel::{
    device::{self, Bound},
    error::{from_err_ptr, from_result, to_result},
    ffi, new_spinlock_irq,
    prelude::*,
    sync::SpinLockIrq,
    transmute::{AsBytes, FromBytes},
    types::Opaque,
};

use super::dma::raw_device;
use crate::sys;

/// What the device reports to `ibv_query_device` (a part of `struct ib_device_attr`; the rest
/// reads zero).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct DeviceAttr {
    /// Firmware version.
    pub(crate) fw_ver: u64,
    /// Largest memory region, bytes.
    pub(crate) max_mr_size: u64,
    /// Page sizes memory regions may use, one bit per size.
    pub(crate) page_size_cap: u64,
    /// PCI vendor.
    pub(crate) vendor_id: u32,
    /// PCI device.
    pub(crate) vendor_part_id: u32,
    /// Hardware version.
    pub(crate) hw_ver: u32,
    /// Queue pairs.
    pub(crate) max_qp: u32,
    /// Work requests per queue.
    pub(crate) max_qp_wr: u32,
    /// Scatter-gather entries of a send.
    pub(crate) max_send_sge: u32,
    /// Scatter-gather entries of a receive.
    pub(crate) max_recv_sge: u32,
    /// Scatter-gather entries of an RDMA read.
    pub(crate) max_sge_rd: u32,
    /// Completion queues.
    pub(crate) max_cq: u32,
    /// Entries per completion queue.
    pub(crate) max_cqe: u32,
    /// Memory regions.
    pub(crate) max_mr: u32,
    /// Protection domains.
    pub(crate) max_pd: u32,
    /// Address handles.
    pub(crate) max_ah: u32,
    /// Partition keys.
    pub(crate) max_pkeys: u16,
}

/// What a port reports to `ibv_query_port`.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct PortAttr {
    /// Whether the port is active (else down).
    pub(crate) active: bool,
    /// The MTU, in bytes (256 to 4096).
    pub(crate) mtu: u32,
    /// Largest message, bytes.
    pub(crate) max_msg_sz: u32,
    /// Entries of the GID table.
    pub(crate) gid_tbl_len: u32,
    /// Entries of the partition key table.
    pub(crate) pkey_tbl_len: u16,
    /// LID mask control.
    pub(crate) lmc: u8,
    /// Virtual lanes.
    pub(crate) max_vl_num: u8,
    /// Lane speed (`enum ib_port_speed`, e.g. [`speed::EDR`]).
    pub(crate) active_speed: u16,
    /// Lanes (`enum ib_port_width`, e.g. [`width::X4`]).
    pub(crate) active_width: u8,
}

/// `enum ib_port_speed`.
pub(crate) mod speed {
    use crate::sys;
    /// 2.5 Gb/s per lane.
    pub(crate) const SDR: u16 = sys::ib_port_speed_IB_SPEED_SDR as u16;
    /// 5 Gb/s per lane.
    pub(crate) const DDR: u16 = sys::ib_port_speed_IB_SPEED_DDR as u16;
    /// 10 Gb/s per lane.
    pub(crate) const FDR10: u16 = sys::ib_port_speed_IB_SPEED_FDR10 as u16;
    /// 25 Gb/s per lane.
    pub(crate) const EDR: u16 = sys::ib_port_speed_IB_SPEED_EDR as u16;
    /// 50 Gb/s per lane.
    pub(crate) const HDR: u16 = sys::ib_port_speed_IB_SPEED_HDR as u16;
    /// 100 Gb/s per lane.
    pub(crate) const NDR: u16 = sys::ib_port_speed_IB_SPEED_NDR as u16;
    /// 200 Gb/s per lane.
    pub(crate) const XDR: u16 = sys::ib_port_speed_IB_SPEED_XDR as u16;
}

/// `enum ib_port_width`.
pub(crate) mod width {
    use crate::sys;
    /// One lane.
    pub(crate) const X1: u8 = sys::ib_port_width_IB_WIDTH_1X as u8;
    /// Four lanes.
    pub(crate) const X4: u8 = sys::ib_port_width_IB_WIDTH_4X as u8;
    /// Eight lanes.
    pub(crate) const X8: u8 = sys::ib_port_width_IB_WIDTH_8X as u8;
    /// Twelve lanes.
    pub(crate) const X12: u8 = sys::ib_port_width_IB_WIDTH_12X as u8;
}

/// A hardware counter's name, as `/sys/class/infiniband/*/hw_counters` shows it.
#[repr(transparent)]
pub(crate) struct Counter(sys::rdma_stat_desc);

// SAFETY: a `Counter` is never written after it is made, and it points only to a `'static` string.
unsafe impl Sync for Counter {}

impl Counter {
    /// The counter called `name`.
    // `CStr::as_char_ptr` is not a `const fn`; `as_ptr` gives the same pointer.
    #[allow(clippy::disallowed_methods)]
    pub(crate) const fn new(name: &'static CStr) -> Self {
        Self(sys::rdma_stat_desc {
            name: name.as_ptr().cast(),
            flags: 0,
            priv_: core::ptr::null(),
        })
    }
}

/// The verbs of an RDMA device whose driver data is `Self`.
pub(crate) trait Operations: Sized + Send + Sync {
    /// The driver's data in a user context (one per process that opened the device).
    type Context: Send + Sync;
    /// The driver's data in a protection domain.
    type Pd: Send + Sync;
    /// The driver's data in an address handle.
    type Ah: Send + Sync;
    /// The driver's data in a completion queue.
    type Cq: Send + Sync;
    /// The driver's data in a queue pair.
    type Qp: Send + Sync;
    /// The driver's data in a memory region.
    type Mr: Send + Sync;

    /// The device's counters (`hw_counters` beside the ports); empty: none.
    const DEVICE_COUNTERS: &'static [Counter] = &[];
    /// Each port's counters (`ports/N/hw_counters`); empty: none.
    const PORT_COUNTERS: &'static [Counter] = &[];

    /// `query_device`: the device's limits; the driver's own answer, if any, goes to `udata`.
    fn query_device(dev: &Device<Self>, udata: &mut Udata<'_>) -> Result<DeviceAttr>;
    /// `query_port`: port `port`'s attributes (ports count from 1).
    fn query_port(dev: &Device<Self>, port: u32) -> Result<PortAttr>;
    /// `query_gid`: entry `index` of port `port`'s GID table.
    fn query_gid(dev: &Device<Self>, port: u32, index: u32) -> Result<[u8; 16]>;
    /// `query_pkey`: entry `index` of port `port`'s partition key table.
    fn query_pkey(dev: &Device<Self>, port: u32, index: u16) -> Result<u16>;
    /// `alloc_ucontext`: a process opened the device; `udata` carries the provider's handshake.
    fn alloc_context(dev: &Device<Self>, udata: &mut Udata<'_>) -> Result<Self::Context>;
    /// `dealloc_ucontext`: the process closed the device, or exited (its objects are gone).
    fn dealloc_context(dev: &Device<Self>, context: Self::Context);
    /// `alloc_pd`: a protection domain, for a process or (with no `udata`) for the kernel.
    fn alloc_pd(dev: &Device<Self>, udata: &mut Udata<'_>) -> Result<Self::Pd>;
    /// `dealloc_pd`.
    fn dealloc_pd(dev: &Device<Self>, pd: Self::Pd);
    /// `create_user_ah`: an address handle in `pd` for the destination GID `dgid`, made for a
    /// process (the core calls it where it may sleep; an atomic caller gets `EOPNOTSUPP`).
    fn create_ah(
        dev: &Device<Self>,
        pd: &Self::Pd,
        dgid: &[u8; 16],
        udata: &mut Udata<'_>,
    ) -> Result<Self::Ah>;
    /// `destroy_ah`.
    fn destroy_ah(dev: &Device<Self>, ah: Self::Ah);
    /// `create_user_cq`: a completion queue of at least `entries` entries in user context `ctx`;
    /// returns it and its actual depth.
    fn create_cq(
        dev: &Device<Self>,
        ctx: &UserContext<'_, Self>,
        init: &CqInit,
        udata: &mut Udata<'_>,
    ) -> Result<(Self::Cq, u32)>;
    /// `destroy_cq` (no queue pair uses it any more).
    fn destroy_cq(dev: &Device<Self>, cq: Self::Cq);
    /// `create_qp`: a queue pair in `pd` and user context `ctx`; returns it and its number.
    fn create_qp(
        dev: &Device<Self>,
        ctx: &UserContext<'_, Self>,
        pd: &Self::Pd,
        init: &QpInit<'_, Self>,
        udata: &mut Udata<'_>,
    ) -> Result<(Self::Qp, u32)>;
    /// `modify_qp`: applies the fields of `attr` that `mask` ([`qp_attr`] bits) names.
    fn modify_qp(
        dev: &Device<Self>,
        qp: &Self::Qp,
        attr: &QpAttr,
        mask: u32,
        udata: &mut Udata<'_>,
    ) -> Result;
    /// `query_qp`: the queue pair's attributes (those `mask` asks for, at least).
    fn query_qp(dev: &Device<Self>, qp: &Self::Qp, mask: u32) -> Result<QpAttr>;
    /// `destroy_qp`.
    fn destroy_qp(dev: &Device<Self>, qp: Self::Qp);
    /// `reg_user_mr`: registers `len` bytes of the process's memory at `start`, seen by the
    /// device at IO virtual address `iova`, with access flags `access` ([`access`] bits);
    /// returns it with its local and remote keys.
    fn reg_user_mr(
        dev: &Device<Self>,
        pd: &Self::Pd,
        region: &MrInit,
        udata: &mut Udata<'_>,
    ) -> Result<(Self::Mr, u32, u32)>;
    /// `dereg_mr`.
    fn dereg_mr(dev: &Device<Self>, mr: Self::Mr);
    /// The table the driver's completion events find CQs in (see [`CqTable`]); `None`: the
    /// device has no completion events.
    fn cq_table(_dev: &Device<Self>) -> Option<&CqTable> {
        None
    }
    /// A process's mmap of the device failed (an offset no entry has, a length that is not the
    /// entry's, or the mapping itself).
    fn mmap_failed(_dev: &Device<Self>) {}
    /// The key a completion event names `cq` by (its index in the device).
    fn cq_key(_cq: &Self::Cq) -> u32 {
        0
    }
    /// Reads the device's counters into `values` (one per [`Self::DEVICE_COUNTERS`] entry).
    fn device_counters(_dev: &Device<Self>, _values: &mut [u64]) -> Result {
        Err(EOPNOTSUPP)
    }
    /// Reads port `port`'s counters into `values` (one per [`Self::PORT_COUNTERS`] entry).
    fn port_counters(_dev: &Device<Self>, _port: u32, _values: &mut [u64]) -> Result {
        Err(EOPNOTSUPP)
    }
}

/// The memory `_ib_alloc_device` hands out: the core's structure first, then the driver's data.
#[repr(C)]
struct Container<T> {
    ibdev: sys::ib_device,
    data: T,
}

/// A verbs object as the core allocates it (`size_ib_*` bytes, zeroed): its core structure `C`
/// first, then the driver's data, written by the allocation callback.
#[repr(C)]
struct Object<C, T> {
    core: C,
    data: MaybeUninit<T>,
}

/// A registered RDMA device, seen from one of its callbacks.
///
/// # Invariants
///
/// The wrapped `struct ib_device` is the head of a [`Container<T>`] made by [`Registration::new`],
/// whose data is initialized and lives for as long as the reference.
#[repr(transparent)]
pub(crate) struct Device<T>(Opaque<sys::ib_device>, PhantomData<T>);

// SAFETY: an `ib_device` may be used from any thread; the driver data is `Send + Sync` (bound of
// `Operations`).
unsafe impl<T: Operations> Send for Device<T> {}
// SAFETY: as above; every method takes `&self`.
unsafe impl<T: Operations> Sync for Device<T> {}

impl<T: Operations> Device<T> {
    /// The device behind a pointer the core passed to a callback.
    ///
    /// # Safety
    ///
    /// `ptr` is an `ib_device` made by [`Registration::new`] for `T`, live for `'a`.
    unsafe fn from_raw<'a>(ptr: *mut sys::ib_device) -> &'a Self {
        // SAFETY: `Device<T>` is a transparent wrapper of the C structure; the caller guarantees
        // the invariant.
        unsafe { &*ptr.cast::<Self>() }
    }

    /// The C structure.
    pub(super) fn as_raw(&self) -> *mut sys::ib_device {
        self.0.get()
    }

    /// The driver's data.
    pub(crate) fn data(&self) -> &T {
        // SAFETY: by the type invariant the device heads an initialized `Container<T>`, which
        // lives as long as the device; only shared references are handed out.
        unsafe { &(*self.0.get().cast::<Container<T>>()).data }
    }
}

/// The driver-specific input and output of a verb from userspace (`struct ib_udata`); empty for
/// a verb the kernel itself calls.
pub(crate) struct Udata<'a>(Option<NonNull<sys::ib_udata>>, PhantomData<&'a mut ()>);

impl Udata<'_> {
    /// The udata behind a callback's pointer (null: a kernel caller).
    ///
    /// # Safety
    ///
    /// `ptr` is null or a valid `ib_udata` for the duration of the callback.
    unsafe fn from_raw(ptr: *mut sys::ib_udata) -> Self {
        Self(NonNull::new(ptr), PhantomData)
    }

    /// Bytes of input.
    pub(crate) fn in_len(&self) -> usize {
        // SAFETY: by `from_raw`'s contract the udata is valid.
        self.0.map_or(0, |u| unsafe { u.as_ref().inlen })
    }

    /// Bytes of room for the answer.
    pub(crate) fn out_len(&self) -> usize {
        // SAFETY: as above.
        self.0.map_or(0, |u| unsafe { u.as_ref().outlen })
    }

    /// Reads the request as a `R`: at least `minimum` bytes of it must be there (else `EINVAL`);
    /// the fields a shorter request lacks read zero, and bytes past `R` must be zero (else
    /// `EOPNOTSUPP`: a newer provider asks for something this driver does not know).
    pub(crate) fn read<R: FromBytes + AsBytes + Default>(&self, minimum: usize) -> Result<R> {
        let mut req = R::default();
        let Some(u) = self.0 else {
            return if minimum == 0 { Ok(req) } else { Err(EINVAL) };
        };
        // SAFETY: the udata is valid (`from_raw`); `req` is `size_of::<R>()` writable bytes, and
        // `R: FromBytes` takes any bytes the copy leaves there.
        to_result(unsafe {
            sys::_ib_copy_validate_udata_in(
                u.as_ptr(),
                core::ptr::from_mut(&mut req).cast(),
                size_of::<R>(),
                minimum,
            )
        })?;
        Ok(req)
    }

    /// Checks that a verb that takes no input got none, or only zeros (else `EOPNOTSUPP`).
    pub(crate) fn require_empty(&self) -> Result {
        match self.0 {
            Some(u) if self.in_len() > 0 => {
                // SAFETY: the udata is valid; with a size of zero nothing is written to the
                // (null) destination, only the input is checked for zeros.
                to_result(unsafe {
                    sys::_ib_copy_validate_udata_in(u.as_ptr(), core::ptr::null_mut(), 0, 0)
                })
            }
            _ => Ok(()),
        }
    }

    /// Answers with `resp`: as much of it as the caller has room for, the rest of the room zeroed.
    /// Nothing to do for a kernel caller.
    pub(crate) fn respond<R: AsBytes>(&mut self, resp: &R) -> Result {
        let Some(u) = self.0 else { return Ok(()) };
        // SAFETY: the udata is valid; `resp` is `size_of::<R>()` readable bytes, all initialized
        // (`R: AsBytes`).
        to_result(unsafe {
            sys::_ib_respond_udata(u.as_ptr(), core::ptr::from_ref(resp).cast(), size_of::<R>())
        })
    }
}

/// A user context, as a verb made in it sees it.
///
/// # Invariants
///
/// `raw` is a live user context of a device made for `T`, allocated by [`alloc_ucontext`], for
/// `'a`.
pub(crate) struct UserContext<'a, T: Operations> {
    raw: NonNull<sys::ib_ucontext>,
    _p: PhantomData<&'a T>,
}

impl<T: Operations> UserContext<'_, T> {
    /// The driver's data in the context.
    pub(crate) fn data(&self) -> &T::Context {
        // SAFETY: by the type invariant `alloc_ucontext` initialized the data, which lives as long
        // as the context.
        unsafe { data_of::<_, T::Context>(self.raw.as_ptr()) }
    }

    /// Lets the process map `len` bytes of `what` (see [`mem::MmapEntry`]). The entry must go
    /// before the context: the driver drops it with the object it belongs to.
    pub(crate) fn insert_mmap(&self, what: mem::Mappable, len: usize) -> Result<mem::MmapEntry> {
        // SAFETY: the context is live (type invariant); the core destroys every object of a
        // context, and with it its entries, before it deallocates the context.
        unsafe { mem::MmapEntry::new(self.raw.as_ptr(), what, len) }
    }
}

/// A CQ as a completion event reaches it.
struct CqPtr(NonNull<sys::ib_cq>);

// SAFETY: the pointer is only dereferenced under the table's lock, while the CQ is registered
// (see `CqTable`); an `ib_cq`'s completion handler may run on any CPU.
unsafe impl Send for CqPtr {}

/// The CQs of a device by key, for the driver's completion events: each CQ is in it from the end
/// of its creation to the start of its destruction ([`Operations::cq_table`], filled in by this
/// module alone), and [`Self::notify`] runs its completion handler under the table's lock, so a
/// CQ being destroyed waits for a handler in progress.
#[pin_data]
pub(crate) struct CqTable {
    #[pin]
    cqs: SpinLockIrq<KVec<(u32, CqPtr)>>,
}

impl CqTable {
    /// An empty table.
    pub(crate) fn new() -> impl PinInit<Self> {
        pin_init!(Self {
            cqs <- new_spinlock_irq!(KVec::new()),
        })
    }

    /// Runs the completion handler of the CQ with `key` (from interrupt context, say); `false`
    /// if there is none.
    pub(crate) fn notify(&self, key: u32) -> bool {
        let cqs = self.cqs.lock();
        let Some((_, cq)) = cqs.iter().find(|(k, _)| *k == key) else {
            return false;
        };
        let cq = cq.0.as_ptr();
        // SAFETY: a registered CQ is live (see the type's documentation) and the lock is held;
        // the core sets the handler and its context before the CQ is created, and its handlers
        // may run in any context.
        unsafe {
            if let Some(handler) = (*cq).comp_handler {
                handler(cq, (*cq).cq_context);
            }
        }
        true
    }

    /// Registers a CQ the core has just made.
    fn insert(&self, key: u32, cq: NonNull<sys::ib_cq>) -> Result {
        self.cqs.lock().push((key, CqPtr(cq)), GFP_ATOMIC)?;
        Ok(())
    }

    /// Unregisters a CQ about to be destroyed.
    fn remove(&self, cq: *mut sys::ib_cq) {
        let mut cqs = self.cqs.lock();
        if let Some(i) = cqs.iter().position(|(_, p)| p.0.as_ptr() == cq) {
            let _ = cqs.remove(i);
        }
    }
}

/// What a completion queue is asked for (`struct ib_cq_init_attr`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct CqInit {
    /// Entries.
    pub(crate) entries: u32,
    /// Completion vector (below the device's count: the core checks).
    pub(crate) comp_vector: u32,
}

/// `enum ib_qp_type`, of the types braid offers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum QpType {
    /// Unreliable datagram.
    Ud,
    /// The driver's own type (EFA: SRD, chosen by the udata).
    Driver,
}

/// Capacities of a queue pair (`struct ib_qp_cap`).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct QpCap {
    /// Send work requests.
    pub(crate) max_send_wr: u32,
    /// Receive work requests.
    pub(crate) max_recv_wr: u32,
    /// SGEs per send.
    pub(crate) max_send_sge: u32,
    /// SGEs per receive.
    pub(crate) max_recv_sge: u32,
    /// Inline data per send, bytes.
    pub(crate) max_inline_data: u32,
}

/// What a queue pair is asked for (`struct ib_qp_init_attr`, of the types braid offers).
pub(crate) struct QpInit<'a, T: Operations> {
    /// Its type.
    pub(crate) qp_type: QpType,
    /// The completion queue of its sends.
    pub(crate) send_cq: &'a T::Cq,
    /// The completion queue of its receives.
    pub(crate) recv_cq: &'a T::Cq,
    /// Capacities.
    pub(crate) cap: QpCap,
}

/// Queue pair attributes (a part of `struct ib_qp_attr`).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct QpAttr {
    /// State (`enum ib_qp_state`).
    pub(crate) qp_state: u32,
    /// The state the caller believes the QP is in.
    pub(crate) cur_qp_state: u32,
    /// Q_Key.
    pub(crate) qkey: u32,
    /// Send PSN.
    pub(crate) sq_psn: u32,
    /// RNR retries.
    pub(crate) rnr_retry: u8,
    /// Notify when the SQ is drained.
    pub(crate) en_sqd_async_notify: u8,
    /// The SQ is draining.
    pub(crate) sq_draining: u8,
    /// Port.
    pub(crate) port_num: u32,
    /// Partition key index.
    pub(crate) pkey_index: u16,
    /// Capacities.
    pub(crate) cap: QpCap,
}

/// `enum ib_qp_attr_mask`.
pub(crate) mod qp_attr {
    use crate::sys;
    /// `qp_state`.
    pub(crate) const STATE: u32 = sys::ib_qp_attr_mask_IB_QP_STATE;
    /// `cur_qp_state`.
    pub(crate) const CUR_STATE: u32 = sys::ib_qp_attr_mask_IB_QP_CUR_STATE;
    /// `en_sqd_async_notify`.
    pub(crate) const EN_SQD_ASYNC_NOTIFY: u32 = sys::ib_qp_attr_mask_IB_QP_EN_SQD_ASYNC_NOTIFY;
    /// `pkey_index`.
    pub(crate) const PKEY_INDEX: u32 = sys::ib_qp_attr_mask_IB_QP_PKEY_INDEX;
    /// `port_num`.
    pub(crate) const PORT: u32 = sys::ib_qp_attr_mask_IB_QP_PORT;
    /// `qkey`.
    pub(crate) const QKEY: u32 = sys::ib_qp_attr_mask_IB_QP_QKEY;
    /// `rnr_retry`.
    pub(crate) const RNR_RETRY: u32 = sys::ib_qp_attr_mask_IB_QP_RNR_RETRY;
    /// `sq_psn`.
    pub(crate) const SQ_PSN: u32 = sys::ib_qp_attr_mask_IB_QP_SQ_PSN;
    /// `cap`.
    pub(crate) const CAP: u32 = sys::ib_qp_attr_mask_IB_QP_CAP;
    /// Every standard attribute.
    pub(crate) const STANDARD: u32 = sys::ib_qp_attr_mask_IB_QP_ATTR_STANDARD_BITS;
}

/// `enum ib_qp_state`.
pub(crate) mod qp_state {
    use crate::sys;
    /// Reset.
    pub(crate) const RESET: u32 = sys::ib_qp_state_IB_QPS_RESET;
    /// Initialized.
    pub(crate) const INIT: u32 = sys::ib_qp_state_IB_QPS_INIT;
    /// Ready to receive.
    pub(crate) const RTR: u32 = sys::ib_qp_state_IB_QPS_RTR;
    /// Ready to send.
    pub(crate) const RTS: u32 = sys::ib_qp_state_IB_QPS_RTS;
    /// Send queue drained.
    pub(crate) const SQD: u32 = sys::ib_qp_state_IB_QPS_SQD;
    /// Send queue error.
    pub(crate) const SQE: u32 = sys::ib_qp_state_IB_QPS_SQE;
    /// Error.
    pub(crate) const ERR: u32 = sys::ib_qp_state_IB_QPS_ERR;
}

/// `enum ib_access_flags`.
pub(crate) mod access {
    use crate::sys;
    /// The device may write the region for local work requests.
    pub(crate) const LOCAL_WRITE: u32 = sys::ib_access_flags_IB_ACCESS_LOCAL_WRITE;
    /// Remote RDMA writes.
    pub(crate) const REMOTE_WRITE: u32 = sys::ib_access_flags_IB_ACCESS_REMOTE_WRITE;
    /// Remote RDMA reads.
    pub(crate) const REMOTE_READ: u32 = sys::ib_access_flags_IB_ACCESS_REMOTE_READ;
    /// Hints a driver may ignore.
    pub(crate) const OPTIONAL: u32 = sys::ib_access_flags_IB_ACCESS_OPTIONAL;
}

/// Whether the core's state machine allows moving a QP of `qp_type` from `cur` to `next` with the
/// attributes `mask` names (`ib_modify_qp_is_ok`).
pub(crate) fn modify_qp_is_ok(cur: u32, next: u32, qp_type: QpType, mask: u32) -> bool {
    let ty = match qp_type {
        QpType::Ud => sys::ib_qp_type_IB_QPT_UD,
        QpType::Driver => sys::ib_qp_type_IB_QPT_DRIVER,
    };
    // SAFETY: a pure function of its arguments; states out of range are refused by it.
    unsafe { sys::ib_modify_qp_is_ok(cur, next, ty, mask) }
}

/// What a memory region is asked for.
#[derive(Clone, Copy, Debug)]
pub(crate) struct MrInit {
    /// Start of the process's memory.
    pub(crate) start: u64,
    /// Bytes.
    pub(crate) len: u64,
    /// The address work requests use for its first byte.
    pub(crate) iova: u64,
    /// [`access`] bits.
    pub(crate) access: u32,
}

/// What an RDMA device is made with.
pub(crate) struct Config {
    /// The node GUID, as the device reports it (in memory order: big-endian on the wire).
    pub(crate) node_guid: u64,
    /// Completion vectors.
    pub(crate) comp_vectors: u32,
}

/// A registered RDMA device with one port; unregistered and freed when dropped.
///
/// # Invariants
///
/// `dev` heads a `Container<T>` from `_ib_alloc_device` with initialized data, registered with
/// the core.
pub(crate) struct Registration<T: Operations> {
    dev: NonNull<Container<T>>,
}

// SAFETY: the registration only unregisters and frees the device, which may happen on any thread;
// `T` is `Send + Sync`.
unsafe impl<T: Operations> Send for Registration<T> {}
// SAFETY: as above; shared references only reach `&T`.
unsafe impl<T: Operations> Sync for Registration<T> {}

impl<T: Operations> Registration<T> {
    /// Allocates an RDMA device with the EFA provider's identity (driver id `RDMA_DRIVER_EFA`,
    /// uverbs ABI `abi`), as a child of `parent` that also does its DMA, initializes its data and
    /// registers it under `name` (a `%d` pattern). The verbs may run as soon as this returns.
    pub(crate) fn new_efa(
        parent: &device::Device<Bound>,
        name: &CStr,
        abi: u32,
        config: Config,
        data: impl PinInit<T, Error>,
    ) -> Result<Self> {
        // Checked before anything needs undoing.
        let comp_vectors = i32::try_from(config.comp_vectors.max(1))?;
        // SAFETY: `_ib_alloc_device` takes any size of at least `struct ib_device` with the
        // structure first (as `Container` has it); `init_net` is the initial network namespace,
        // which lives forever.
        let raw =
            unsafe { sys::_ib_alloc_device(size_of::<Container<T>>(), &raw mut sys::init_net) };
        let dev = NonNull::new(raw.cast::<Container<T>>()).ok_or(ENOMEM)?;
        let ibdev = raw;
        // SAFETY: the allocation is a zeroed `Container<T>` that nothing else uses yet; the data
        // field is valid for writes and pinned (it never moves until it is freed).
        if let Err(err) = unsafe { data.__init(addr_of_mut!((*dev.as_ptr()).data)) } {
            // SAFETY: allocated above, never registered.
            unsafe { sys::ib_dealloc_device(ibdev) };
            return Err(err);
        }
        let ops = ops::<T>(abi);
        // SAFETY: the device is ours until registered; `ib_set_device_ops` copies the table.
        unsafe {
            (*ibdev).node_type = sys::RDMA_NODE_UNSPECIFIED as u8;
            (*ibdev).node_guid = config.node_guid;
            (*ibdev).phys_port_cnt = 1;
            (*ibdev).num_comp_vectors = comp_vectors;
            sys::ib_set_device_ops(ibdev, &ops);
            sys::braid_ib_device_set_parent(ibdev, raw_device(parent));
        }
        // SAFETY: the device is fully set up; `parent` is bound, so it outlives the
        // registration (which the driver drops before unbinding completes).
        let err = unsafe { sys::ib_register_device(ibdev, name.as_char_ptr(), raw_device(parent)) };
        if let Err(err) = to_result(err) {
            // SAFETY: registration failed, so no callback runs any more: drop the data, then free
            // the device (the core's own cleanup of a failed registration is done).
            unsafe {
                core::ptr::drop_in_place(addr_of_mut!((*dev.as_ptr()).data));
                sys::ib_dealloc_device(ibdev);
            }
            return Err(err);
        }
        Ok(Self { dev })
    }

    /// The registered device.
    pub(crate) fn device(&self) -> &Device<T> {
        // SAFETY: by the type invariant the device is registered for `T` and lives as long as
        // `self`.
        unsafe { Device::from_raw(self.dev.as_ptr().cast()) }
    }
}

impl<T: Operations> Drop for Registration<T> {
    fn drop(&mut self) {
        let ibdev = self.dev.as_ptr().cast::<sys::ib_device>();
        // SAFETY: by the type invariant the device is registered. Unregistering it disassociates
        // every user context (their mappings are zapped, each object's dealloc callback runs) and
        // waits for the callbacks in flight; after that nothing uses the data, which is dropped
        // before the device is freed.
        unsafe {
            sys::ib_unregister_device(ibdev);
            core::ptr::drop_in_place(addr_of_mut!((*self.dev.as_ptr()).data));
            sys::ib_dealloc_device(ibdev);
        }
    }
}

/// An asynchronous event of a device or its port, for its users (`enum ib_event_type`): each user
/// context's async event file (`ibv_get_async_event`) and the kernel's event handlers.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Event {
    /// The device failed: what its users made on it is lost (`IB_EVENT_DEVICE_FATAL`).
    DeviceFatal,
    /// The port went down (`IB_EVENT_PORT_ERR`).
    PortErr(u32),
}

impl<T: Operations> Registration<T> {
    /// Reports `event` to the device's users; callable from any context (the core delivers it
    /// from its workqueue).
    pub(crate) fn dispatch(&self, event: Event) {
        let mut raw = sys::ib_event {
            device: self.dev.as_ptr().cast(),
            ..Default::default()
        };
        match event {
            Event::DeviceFatal => raw.event = sys::ib_event_type_IB_EVENT_DEVICE_FATAL,
            Event::PortErr(port) => {
                raw.event = sys::ib_event_type_IB_EVENT_PORT_ERR;
                raw.element.port_num = port;
            }
        }
        // SAFETY: by the type invariant the device is registered; the core copies the event and
        // flushes its queued deliveries before an unregistered device is freed.
        unsafe { sys::ib_dispatch_event(&raw) };
    }
}

/// The core's link layer value for EFA-style devices: neither InfiniBand nor Ethernet.
const LINK_LAYER: sys::rdma_link_layer = sys::rdma_link_layer_IB_LINK_LAYER_UNSPECIFIED;

/// The callback table of `T` (copied by `ib_set_device_ops`).
fn ops<T: Operations>(abi: u32) -> sys::ib_device_ops {
    let mut ops = sys::ib_device_ops {
        owner: <crate::LocalModule as kernel::ModuleMetadata>::THIS_MODULE
            .as_ptr()
            .cast(),
        driver_id: sys::rdma_driver_id_RDMA_DRIVER_EFA,
        uverbs_abi_ver: abi,
        query_device: Some(query_device::<T>),
        query_port: Some(query_port::<T>),
        query_gid: Some(query_gid::<T>),
        query_pkey: Some(query_pkey::<T>),
        get_port_immutable: Some(get_port_immutable::<T>),
        get_link_layer: Some(get_link_layer),
        alloc_ucontext: Some(alloc_ucontext::<T>),
        dealloc_ucontext: Some(dealloc_ucontext::<T>),
        disassociate_ucontext: Some(disassociate_ucontext),
        alloc_pd: Some(alloc_pd::<T>),
        dealloc_pd: Some(dealloc_pd::<T>),
        create_user_ah: Some(create_user_ah::<T>),
        destroy_ah: Some(destroy_ah::<T>),
        create_user_cq: Some(create_user_cq::<T>),
        destroy_cq: Some(destroy_cq::<T>),
        create_qp: Some(create_qp::<T>),
        modify_qp: Some(modify_qp::<T>),
        query_qp: Some(query_qp::<T>),
        destroy_qp: Some(destroy_qp::<T>),
        reg_user_mr: Some(reg_user_mr::<T>),
        dereg_mr: Some(dereg_mr::<T>),
        mmap: Some(mem::mmap::<T>),
        mmap_free: Some(mem::mmap_free),
        size_ib_ucontext: size_of::<Object<sys::ib_ucontext, T::Context>>(),
        size_ib_pd: size_of::<Object<sys::ib_pd, T::Pd>>(),
        size_ib_ah: size_of::<Object<sys::ib_ah, T::Ah>>(),
        size_ib_cq: size_of::<Object<sys::ib_cq, T::Cq>>(),
        size_ib_qp: size_of::<Object<sys::ib_qp, T::Qp>>(),
        ..Default::default()
    };
    if !T::DEVICE_COUNTERS.is_empty() || !T::PORT_COUNTERS.is_empty() {
        ops.get_hw_stats = Some(get_hw_stats::<T>);
    }
    if !T::DEVICE_COUNTERS.is_empty() {
        ops.alloc_hw_device_stats = Some(alloc_hw_device_stats::<T>);
    }
    if !T::PORT_COUNTERS.is_empty() {
        ops.alloc_hw_port_stats = Some(alloc_hw_port_stats::<T>);
    }
    ops
}

/// `enum ib_mtu` for an MTU in bytes (`ib_mtu_int_to_enum`).
fn mtu_enum(mtu: u32) -> sys::ib_mtu {
    match mtu {
        4096.. => sys::ib_mtu_IB_MTU_4096,
        2048.. => sys::ib_mtu_IB_MTU_2048,
        1024.. => sys::ib_mtu_IB_MTU_1024,
        512.. => sys::ib_mtu_IB_MTU_512,
        _ => sys::ib_mtu_IB_MTU_256,
    }
}

/// # Safety
///
/// Called by the core on a device made by [`Registration::new_efa`] for `T`, with a valid
/// attribute structure and a valid or null udata.
unsafe extern "C" fn query_device<T: Operations>(
    ibdev: *mut sys::ib_device,
    attr: *mut sys::ib_device_attr,
    udata: *mut sys::ib_udata,
) -> ffi::c_int {
    from_result(|| {
        // SAFETY: the core calls this on a registered device with a valid (zeroed) attribute
        // structure and a valid or null udata, for the duration of the call.
        let (dev, attr, mut udata) = unsafe {
            (
                Device::<T>::from_raw(ibdev),
                &mut *attr,
                Udata::from_raw(udata),
            )
        };
        let a = T::query_device(dev, &mut udata)?;
        attr.fw_ver = a.fw_ver;
        attr.max_mr_size = a.max_mr_size;
        attr.page_size_cap = a.page_size_cap;
        attr.vendor_id = a.vendor_id;
        attr.vendor_part_id = a.vendor_part_id;
        attr.hw_ver = a.hw_ver;
        attr.max_qp = a.max_qp;
        attr.max_qp_wr = a.max_qp_wr;
        attr.max_send_sge = a.max_send_sge;
        attr.max_recv_sge = a.max_recv_sge;
        attr.max_sge_rd = a.max_sge_rd;
        attr.max_cq = a.max_cq;
        attr.max_cqe = a.max_cqe;
        attr.max_mr = a.max_mr;
        attr.max_pd = a.max_pd;
        attr.max_ah = a.max_ah;
        attr.max_pkeys = a.max_pkeys;
        Ok(0)
    })
}

/// Writes `a` into the core's port attributes.
fn fill_port(attr: &mut sys::ib_port_attr, a: &PortAttr) {
    attr.state = if a.active {
        sys::ib_port_state_IB_PORT_ACTIVE
    } else {
        sys::ib_port_state_IB_PORT_DOWN
    };
    attr.phys_state = if a.active {
        sys::ib_port_phys_state_IB_PORT_PHYS_STATE_LINK_UP as u8
    } else {
        sys::ib_port_phys_state_IB_PORT_PHYS_STATE_DISABLED as u8
    };
    attr.max_mtu = mtu_enum(a.mtu);
    attr.active_mtu = mtu_enum(a.mtu);
    attr.max_msg_sz = a.max_msg_sz;
    attr.gid_tbl_len = a.gid_tbl_len as i32;
    attr.pkey_tbl_len = a.pkey_tbl_len;
    attr.lmc = a.lmc;
    attr.max_vl_num = a.max_vl_num;
    attr.active_speed = a.active_speed;
    attr.active_width = a.active_width;
}

/// # Safety
///
/// Called by the core on a device made for `T`, with a valid attribute structure.
unsafe extern "C" fn query_port<T: Operations>(
    ibdev: *mut sys::ib_device,
    port: u32,
    attr: *mut sys::ib_port_attr,
) -> ffi::c_int {
    from_result(|| {
        // SAFETY: the core calls this on a registered device with a valid (zeroed) attribute
        // structure.
        let (dev, attr) = unsafe { (Device::<T>::from_raw(ibdev), &mut *attr) };
        fill_port(attr, &T::query_port(dev, port)?);
        Ok(0)
    })
}

/// # Safety
///
/// Called by the core at registration, on a device made for `T` whose data is initialized, with a
/// valid structure to fill.
unsafe extern "C" fn get_port_immutable<T: Operations>(
    ibdev: *mut sys::ib_device,
    port: u32,
    immutable: *mut sys::ib_port_immutable,
) -> ffi::c_int {
    from_result(|| {
        // SAFETY: the core calls this at registration, on a device made for `T` whose data is
        // initialized, with a valid structure to fill.
        let (dev, immutable) = unsafe { (Device::<T>::from_raw(ibdev), &mut *immutable) };
        let a = T::query_port(dev, port)?;
        immutable.gid_tbl_len = i32::try_from(a.gid_tbl_len)?;
        immutable.pkey_tbl_len = i32::from(a.pkey_tbl_len);
        Ok(0)
    })
}

/// # Safety
///
/// Called by the core on a registered device.
unsafe extern "C" fn get_link_layer(
    _ibdev: *mut sys::ib_device,
    _port: u32,
) -> sys::rdma_link_layer {
    LINK_LAYER
}

/// # Safety
///
/// Called by the core on a device made for `T`, with a valid GID to fill.
unsafe extern "C" fn query_gid<T: Operations>(
    ibdev: *mut sys::ib_device,
    port: u32,
    index: ffi::c_int,
    gid: *mut sys::ib_gid,
) -> ffi::c_int {
    from_result(|| {
        // SAFETY: the core calls this on a registered device with a valid GID to fill.
        let (dev, gid) = unsafe { (Device::<T>::from_raw(ibdev), &mut *gid) };
        gid.raw = T::query_gid(dev, port, u32::try_from(index)?)?;
        Ok(0)
    })
}

/// # Safety
///
/// Called by the core on a device made for `T`, with a valid key to fill.
unsafe extern "C" fn query_pkey<T: Operations>(
    ibdev: *mut sys::ib_device,
    port: u32,
    index: u16,
    pkey: *mut u16,
) -> ffi::c_int {
    from_result(|| {
        // SAFETY: the core calls this on a registered device with a valid key to fill.
        let (dev, pkey) = unsafe { (Device::<T>::from_raw(ibdev), &mut *pkey) };
        *pkey = T::query_pkey(dev, port, index)?;
        Ok(0)
    })
}

/// # Safety
///
/// Called by the core with a user context object of `size_ib_ucontext` bytes on a device made for
/// `T`, and a valid udata.
unsafe extern "C" fn alloc_ucontext<T: Operations>(
    context: *mut sys::ib_ucontext,
    udata: *mut sys::ib_udata,
) -> ffi::c_int {
    from_result(|| {
        // SAFETY: the core allocated `size_ib_ucontext` bytes, an `Object` for `T::Context`, set
        // its device (registered for `T`), and passes a valid udata.
        let (dev, mut udata) = unsafe {
            (
                Device::<T>::from_raw((*context).device),
                Udata::from_raw(udata),
            )
        };
        let data = T::alloc_context(dev, &mut udata)?;
        // SAFETY: the object's data field is ours to write; it is read back (once) by
        // `dealloc_ucontext`, which the core calls only after this succeeded.
        unsafe { set_data(context, data) };
        Ok(0)
    })
}

/// # Safety
///
/// Called by the core once per user context that [`alloc_ucontext`] initialized.
unsafe extern "C" fn dealloc_ucontext<T: Operations>(context: *mut sys::ib_ucontext) {
    // SAFETY: `alloc_ucontext` succeeded on this object, so its data is initialized; the core
    // calls this once, after which it frees the object.
    let (dev, data) = unsafe {
        (
            Device::<T>::from_raw((*context).device),
            take_data::<_, T::Context>(context),
        )
    };
    T::dealloc_context(dev, data);
}

/// # Safety
///
/// Called by the core when the device goes while a process still holds `_context`, after it zapped
/// the context's mappings and before it destroys the context's objects through their callbacks:
/// nothing else of a context reaches the device, so there is nothing to do. Having the callback
/// is what lets unregistration (unbind, unload, a device's recovery) proceed without waiting for
/// the process to exit.
unsafe extern "C" fn disassociate_ucontext(_context: *mut sys::ib_ucontext) {}

/// # Safety
///
/// Called by the core with a PD object of `size_ib_pd` bytes on a device made for `T`, and a valid
/// or null udata.
unsafe extern "C" fn alloc_pd<T: Operations>(
    pd: *mut sys::ib_pd,
    udata: *mut sys::ib_udata,
) -> ffi::c_int {
    from_result(|| {
        // SAFETY: as in `alloc_ucontext`, for `size_ib_pd` and `T::Pd`.
        let (dev, mut udata) =
            unsafe { (Device::<T>::from_raw((*pd).device), Udata::from_raw(udata)) };
        let data = T::alloc_pd(dev, &mut udata)?;
        // SAFETY: as in `alloc_ucontext`.
        unsafe { set_data(pd, data) };
        Ok(0)
    })
}

/// # Safety
///
/// Called by the core once per PD that [`alloc_pd`] initialized.
unsafe extern "C" fn dealloc_pd<T: Operations>(
    pd: *mut sys::ib_pd,
    _udata: *mut sys::ib_udata,
) -> ffi::c_int {
    // SAFETY: as in `dealloc_ucontext`.
    let (dev, data) = unsafe {
        (
            Device::<T>::from_raw((*pd).device),
            take_data::<_, T::Pd>(pd),
        )
    };
    T::dealloc_pd(dev, data);
    0
}

/// # Safety
///
/// Called by the core with an AH object of `size_ib_ah` bytes on a device made for `T`, whose PD
/// [`alloc_pd`] initialized, with valid attributes and udata.
unsafe extern "C" fn create_user_ah<T: Operations>(
    ah: *mut sys::ib_ah,
    attr: *mut sys::rdma_ah_init_attr,
    udata: *mut sys::ib_udata,
) -> ffi::c_int {
    from_result(|| {
        // SAFETY: the core allocated `size_ib_ah` bytes, an `Object` for `T::Ah`, set its device
        // (registered for `T`) and its PD (allocated by `alloc_pd`, so its data is initialized,
        // and held for as long as the AH exists), and passes valid attributes and udata.
        let (dev, pd, attr, mut udata) = unsafe {
            (
                Device::<T>::from_raw((*ah).device),
                data_of::<_, T::Pd>((*ah).pd),
                &*attr,
                Udata::from_raw(udata),
            )
        };
        if attr.flags & sys::rdma_create_ah_flags_RDMA_CREATE_AH_SLEEPABLE == 0 {
            return Err(EOPNOTSUPP);
        }
        // SAFETY: `ah_attr` points to the caller's valid attributes; the union's `raw` view
        // covers all of the GID.
        let dgid = unsafe { (*attr.ah_attr).grh.dgid.raw };
        let data = T::create_ah(dev, pd, &dgid, &mut udata)?;
        // SAFETY: as in `alloc_ucontext`.
        unsafe { set_data(ah, data) };
        Ok(0)
    })
}

/// # Safety
///
/// Called by the core once per AH that [`create_user_ah`] initialized.
unsafe extern "C" fn destroy_ah<T: Operations>(ah: *mut sys::ib_ah, flags: u32) -> ffi::c_int {
    if flags & sys::rdma_destroy_ah_flags_RDMA_DESTROY_AH_SLEEPABLE == 0 {
        // The driver's `destroy_ah` may sleep; the AH stays as it is.
        return EOPNOTSUPP.to_errno();
    }
    // SAFETY: as in `dealloc_ucontext`.
    let (dev, data) = unsafe {
        (
            Device::<T>::from_raw((*ah).device),
            take_data::<_, T::Ah>(ah),
        )
    };
    T::destroy_ah(dev, data);
    0
}

/// The driver data of an object the core allocated and the driver's callback initialized.
///
/// # Safety
///
/// `obj` is such an object (of `size_ib_*` for `D`), live for `'a`, with its data initialized.
unsafe fn data_of<'a, C, D>(obj: *mut C) -> &'a D {
    // SAFETY: the caller guarantees the object and its data.
    unsafe { (*obj.cast::<Object<C, D>>()).data.assume_init_ref() }
}

/// Writes the driver data of an object the core allocated.
///
/// # Safety
///
/// `obj` is such an object (of `size_ib_*` for `D`) whose data is not initialized yet.
unsafe fn set_data<C, D>(obj: *mut C, data: D) {
    // SAFETY: the caller guarantees the object.
    unsafe { (*obj.cast::<Object<C, D>>()).data.write(data) };
}

/// Moves the driver data out of an object the core is about to free.
///
/// # Safety
///
/// `obj` is such an object with its data initialized; the data is not used again.
unsafe fn take_data<C, D>(obj: *mut C) -> D {
    // SAFETY: the caller guarantees the object and that this is the last use of the data.
    unsafe { (*obj.cast::<Object<C, D>>()).data.assume_init_read() }
}

/// The user context a verb's udata belongs to.
///
/// # Safety
///
/// `udata` is the driver udata of a verb in progress on a device made for `T`.
unsafe fn context_of<'a, T: Operations>(udata: *mut sys::ib_udata) -> Result<UserContext<'a, T>> {
    // SAFETY: the caller guarantees the udata sits in a live attribute bundle.
    let raw = unsafe { sys::braid_udata_context(udata) };
    // By the caller's guarantee a non-null context is a live one of this device (the core
    // allocated it through `alloc_ucontext`).
    Ok(UserContext {
        raw: NonNull::new(raw).ok_or(EINVAL)?,
        _p: PhantomData,
    })
}

/// # Safety
///
/// Called by the core with a CQ object of `size_ib_cq` bytes on a device made for `T`, valid
/// attributes and a valid attribute bundle of a user verb.
unsafe extern "C" fn create_user_cq<T: Operations>(
    cq: *mut sys::ib_cq,
    attr: *const sys::ib_cq_init_attr,
    attrs: *mut sys::uverbs_attr_bundle,
) -> ffi::c_int {
    from_result(|| {
        // SAFETY: as the caller guarantees; the bundle's udata and context are the verb's.
        let (dev, attr, raw_udata) = unsafe {
            (
                Device::<T>::from_raw((*cq).device),
                &*attr,
                sys::braid_attrs_udata(attrs),
            )
        };
        if attr.flags != 0 {
            return Err(EOPNOTSUPP);
        }
        // SAFETY: the udata is the verb's.
        let (ctx, mut udata) = unsafe { (context_of::<T>(raw_udata)?, Udata::from_raw(raw_udata)) };
        // A process that brings its own ring memory: not offered (no device capability says so).
        // SAFETY: the device and bundle are valid; a size of zero asks only whether a buffer came.
        let umem = unsafe { sys::ib_umem_get_cq_buf(dev.as_raw(), attrs, 0, 0) };
        if !umem.is_null() {
            if let Ok(umem) = from_err_ptr(umem) {
                // SAFETY: pinned just above, released once.
                unsafe { sys::ib_umem_release(umem) };
            }
            return Err(EOPNOTSUPP);
        }
        let init = CqInit {
            entries: attr.cqe,
            comp_vector: attr.comp_vector,
        };
        let (data, depth) = T::create_cq(dev, &ctx, &init, &mut udata)?;
        let key = T::cq_key(&data);
        // SAFETY: the core allocated the object for `T::Cq`; `cqe` is the driver's to set.
        unsafe {
            set_data(cq, data);
            (*cq).cqe = i32::try_from(depth).unwrap_or(i32::MAX);
        }
        if let Some(table) = T::cq_table(dev) {
            // SAFETY: the core passed a valid CQ.
            if let Err(err) = table.insert(key, unsafe { NonNull::new_unchecked(cq) }) {
                // SAFETY: initialized just above; the core frees the object after a failure.
                T::destroy_cq(dev, unsafe { take_data::<_, T::Cq>(cq) });
                return Err(err);
            }
        }
        Ok(0)
    })
}

/// # Safety
///
/// Called by the core once per CQ that [`create_user_cq`] initialized, no QP using it.
unsafe extern "C" fn destroy_cq<T: Operations>(
    cq: *mut sys::ib_cq,
    _udata: *mut sys::ib_udata,
) -> ffi::c_int {
    // SAFETY: as the caller guarantees.
    let dev = unsafe { Device::<T>::from_raw((*cq).device) };
    if let Some(table) = T::cq_table(dev) {
        // From here no completion handler runs for this CQ.
        table.remove(cq);
    }
    // SAFETY: as the caller guarantees.
    let data = unsafe { take_data::<_, T::Cq>(cq) };
    T::destroy_cq(dev, data);
    0
}

/// # Safety
///
/// Called by the core with a QP object of `size_ib_qp` bytes on a device made for `T`, whose PD
/// and CQs the callbacks above initialized, with valid attributes and a valid udata.
unsafe extern "C" fn create_qp<T: Operations>(
    qp: *mut sys::ib_qp,
    init: *mut sys::ib_qp_init_attr,
    udata: *mut sys::ib_udata,
) -> ffi::c_int {
    from_result(|| {
        // SAFETY: as the caller guarantees.
        let (dev, init) = unsafe { (Device::<T>::from_raw((*qp).device), &*init) };
        if udata.is_null() {
            // Kernel QPs are not offered.
            return Err(EOPNOTSUPP);
        }
        let qp_type = match init.qp_type {
            sys::ib_qp_type_IB_QPT_UD => QpType::Ud,
            sys::ib_qp_type_IB_QPT_DRIVER => QpType::Driver,
            _ => return Err(EOPNOTSUPP),
        };
        if !init.srq.is_null()
            || init.create_flags != 0
            || init.send_cq.is_null()
            || init.recv_cq.is_null()
        {
            return Err(EOPNOTSUPP);
        }
        // SAFETY: the udata is the verb's; the PD and CQs are initialized objects of this device,
        // held by the core while the QP is made.
        let (ctx, mut udata, pd, send_cq, recv_cq) = unsafe {
            (
                context_of::<T>(udata)?,
                Udata::from_raw(udata),
                data_of::<_, T::Pd>((*qp).pd),
                data_of::<_, T::Cq>(init.send_cq),
                data_of::<_, T::Cq>(init.recv_cq),
            )
        };
        let cap = QpCap {
            max_send_wr: init.cap.max_send_wr,
            max_recv_wr: init.cap.max_recv_wr,
            max_send_sge: init.cap.max_send_sge,
            max_recv_sge: init.cap.max_recv_sge,
            max_inline_data: init.cap.max_inline_data,
        };
        let qp_init = QpInit {
            qp_type,
            send_cq,
            recv_cq,
            cap,
        };
        let (data, number) = T::create_qp(dev, &ctx, pd, &qp_init, &mut udata)?;
        // SAFETY: the core allocated the object for `T::Qp`; `qp_num` is the driver's to set.
        unsafe {
            set_data(qp, data);
            (*qp).qp_num = number;
        }
        Ok(0)
    })
}

/// # Safety
///
/// Called by the core on a QP that [`create_qp`] initialized, with valid attributes and a valid
/// or null udata.
unsafe extern "C" fn modify_qp<T: Operations>(
    qp: *mut sys::ib_qp,
    attr: *mut sys::ib_qp_attr,
    mask: ffi::c_int,
    udata: *mut sys::ib_udata,
) -> ffi::c_int {
    from_result(|| {
        // SAFETY: as the caller guarantees.
        let (dev, data, a, mut udata) = unsafe {
            (
                Device::<T>::from_raw((*qp).device),
                data_of::<_, T::Qp>(qp),
                &*attr,
                Udata::from_raw(udata),
            )
        };
        let attr = QpAttr {
            qp_state: a.qp_state,
            cur_qp_state: a.cur_qp_state,
            qkey: a.qkey,
            sq_psn: a.sq_psn,
            rnr_retry: a.rnr_retry,
            en_sqd_async_notify: a.en_sqd_async_notify,
            sq_draining: a.sq_draining,
            port_num: a.port_num,
            pkey_index: a.pkey_index,
            cap: QpCap::default(),
        };
        T::modify_qp(dev, data, &attr, mask as u32, &mut udata)?;
        Ok(0)
    })
}

/// # Safety
///
/// Called by the core on a QP that [`create_qp`] initialized, with valid structures to fill.
unsafe extern "C" fn query_qp<T: Operations>(
    qp: *mut sys::ib_qp,
    attr: *mut sys::ib_qp_attr,
    mask: ffi::c_int,
    init: *mut sys::ib_qp_init_attr,
) -> ffi::c_int {
    from_result(|| {
        // SAFETY: as the caller guarantees.
        let (dev, data) = unsafe { (Device::<T>::from_raw((*qp).device), data_of::<_, T::Qp>(qp)) };
        let got = T::query_qp(dev, data, mask as u32)?;
        // SAFETY: both structures are the caller's, valid for writes; the QP's fields are the
        // core's, read only.
        unsafe {
            let (attr, init) = (&mut *attr, &mut *init);
            *attr = sys::ib_qp_attr::default();
            *init = sys::ib_qp_init_attr::default();
            attr.qp_state = got.qp_state;
            attr.qkey = got.qkey;
            attr.sq_psn = got.sq_psn;
            attr.sq_draining = got.sq_draining;
            attr.rnr_retry = got.rnr_retry;
            attr.port_num = got.port_num;
            attr.pkey_index = got.pkey_index;
            attr.cap.max_send_wr = got.cap.max_send_wr;
            attr.cap.max_recv_wr = got.cap.max_recv_wr;
            attr.cap.max_send_sge = got.cap.max_send_sge;
            attr.cap.max_recv_sge = got.cap.max_recv_sge;
            attr.cap.max_inline_data = got.cap.max_inline_data;
            init.qp_type = (*qp).qp_type;
            init.send_cq = (*qp).send_cq;
            init.recv_cq = (*qp).recv_cq;
            init.qp_context = (*qp).qp_context;
            init.cap = attr.cap;
        }
        Ok(0)
    })
}

/// # Safety
///
/// Called by the core once per QP that [`create_qp`] initialized.
unsafe extern "C" fn destroy_qp<T: Operations>(
    qp: *mut sys::ib_qp,
    _udata: *mut sys::ib_udata,
) -> ffi::c_int {
    // SAFETY: as the caller guarantees.
    let (dev, data) = unsafe {
        (
            Device::<T>::from_raw((*qp).device),
            take_data::<_, T::Qp>(qp),
        )
    };
    T::destroy_qp(dev, data);
    0
}

/// # Safety
///
/// Called by the core with a PD that [`alloc_pd`] initialized, on a device made for `T`, and a
/// valid udata.
unsafe extern "C" fn reg_user_mr<T: Operations>(
    pd: *mut sys::ib_pd,
    start: u64,
    len: u64,
    iova: u64,
    access: ffi::c_int,
    dmah: *mut sys::ib_dmah,
    udata: *mut sys::ib_udata,
) -> *mut sys::ib_mr {
    let made = (|| -> Result<*mut sys::ib_mr> {
        if !dmah.is_null() {
            return Err(EOPNOTSUPP);
        }
        // SAFETY: as the caller guarantees.
        let (dev, pd_data, mut udata) = unsafe {
            (
                Device::<T>::from_raw((*pd).device),
                data_of::<_, T::Pd>(pd),
                Udata::from_raw(udata),
            )
        };
        let region = MrInit {
            start,
            len,
            iova,
            access: access as u32,
        };
        let (data, lkey, rkey) = T::reg_user_mr(dev, pd_data, &region, &mut udata)?;
        let core = sys::ib_mr {
            lkey,
            rkey,
            length: len,
            ..Default::default()
        };
        let mr = KBox::new(
            Object {
                core,
                data: MaybeUninit::new(data),
            },
            GFP_KERNEL,
        );
        match mr {
            Ok(mr) => Ok(KBox::into_raw(mr).cast()),
            Err(err) => Err(err.into()),
        }
    })();
    match made {
        Ok(mr) => mr,
        Err(err) => err.to_ptr(),
    }
}

/// # Safety
///
/// Called by the core once per MR that [`reg_user_mr`] returned.
unsafe extern "C" fn dereg_mr<T: Operations>(
    mr: *mut sys::ib_mr,
    _udata: *mut sys::ib_udata,
) -> ffi::c_int {
    // SAFETY: the MR came from `KBox::into_raw` of an `Object` with initialized data; the core
    // calls this once, after which nothing uses it.
    let (dev, mr) = unsafe {
        (
            Device::<T>::from_raw((*mr).device),
            KBox::from_raw(mr.cast::<Object<sys::ib_mr, T::Mr>>()),
        )
    };
    // SAFETY: the data was initialized by `reg_user_mr` and is moved out once, the box freed
    // after.
    let data = unsafe { mr.data.assume_init_read() };
    T::dereg_mr(dev, data);
    0
}

/// `rdma_alloc_hw_stats_struct` over `counters` (null on failure, as the core expects).
fn alloc_stats(counters: &'static [Counter]) -> *mut sys::rdma_hw_stats {
    let Ok(n) = i32::try_from(counters.len()) else {
        return core::ptr::null_mut();
    };
    // SAFETY: `Counter` is a transparent `rdma_stat_desc`; the array is `'static`, so it outlives
    // the statistics structure, which the core frees.
    unsafe {
        sys::rdma_alloc_hw_stats_struct(
            counters.as_ptr().cast(),
            n,
            sys::RDMA_HW_STATS_DEFAULT_LIFESPAN as usize,
        )
    }
}

/// # Safety
///
/// Called by the core on a device made for `T`.
unsafe extern "C" fn alloc_hw_device_stats<T: Operations>(
    _ibdev: *mut sys::ib_device,
) -> *mut sys::rdma_hw_stats {
    alloc_stats(T::DEVICE_COUNTERS)
}

/// # Safety
///
/// Called by the core on a device made for `T`.
unsafe extern "C" fn alloc_hw_port_stats<T: Operations>(
    _ibdev: *mut sys::ib_device,
    _port: u32,
) -> *mut sys::rdma_hw_stats {
    alloc_stats(T::PORT_COUNTERS)
}

/// # Safety
///
/// Called by the core on a device made for `T`, with a statistics structure from
/// [`alloc_hw_device_stats`] (port 0) or [`alloc_hw_port_stats`], under its lock.
unsafe extern "C" fn get_hw_stats<T: Operations>(
    ibdev: *mut sys::ib_device,
    stats: *mut sys::rdma_hw_stats,
    port: u32,
    _index: ffi::c_int,
) -> ffi::c_int {
    from_result(|| {
        // SAFETY: the core passes a registered device and a statistics structure it allocated
        // through the callbacks above, whose `value` array has `num_counters` entries; it holds
        // the structure's lock.
        let (dev, values) = unsafe {
            let n = usize::try_from((*stats).num_counters)?;
            (
                Device::<T>::from_raw(ibdev),
                core::slice::from_raw_parts_mut((*stats).value.as_mut_ptr(), n),
            )
        };
        if port == 0 {
            T::device_counters(dev, values)?;
        } else {
            T::port_counters(dev, port, values)?;
        }
        Ok(i32::try_from(values.len())?)
    })
}

/// Lets the EFA ABI's structures (`crate::efa_abi`) cross into and out of userspace.
macro_rules! udata_structs {
    ($($name:ident),* $(,)?) => {$(
        // The structure has no padding: its fields fill it.
        const _: () = {
            let layout = crate::efa_abi::$name::LAYOUT;
            let mut filled = 0;
            let mut i = 0;
            while i < layout.fields.len() {
                filled += layout.fields[i].size;
                i += 1;
            }
            assert!(filled == layout.size);
        };
        // SAFETY: a `#[repr(C)]` structure of integers and byte arrays with no padding (checked
        // above): every byte is initialized, and any bytes make a valid value.
        unsafe impl FromBytes for crate::efa_abi::$name {}
        // SAFETY: as above.
        unsafe impl AsBytes for crate::efa_abi::$name {}
    )*};
}

udata_structs!(
    AllocUcontextCmd,
    AllocUcontextResp,
    AllocPdResp,
    CreateCq,
    CreateCqResp,
    CreateQp,
    CreateQpResp,
    CreateAhResp,
    ExQueryDeviceResp,
);
