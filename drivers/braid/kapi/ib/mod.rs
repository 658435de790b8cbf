// SPDX-License-Identifier: GPL-2.0

//! RDMA devices: allocation and registration of a `struct ib_device` whose container holds the
//! driver's data, the verbs callbacks of `ib_device_ops`, driver data inside the core's user
//! context and protection domain objects, user data (`ib_udata`) copied in and out by the core's
//! rules, and hardware counters (`rdma_hw_stats`).
//!
//! The core allocates every verbs object itself, `size_ib_*` bytes of it, and hands the driver the
//! embedded core structure: here an [`Object`] puts the driver's data right behind it.

use core::{
    marker::PhantomData,
    mem::{size_of, MaybeUninit},
    ptr::{addr_of_mut, NonNull},
};

use kernel::{
    device::{self, Bound},
    error::{from_result, to_result},
    ffi,
    prelude::*,
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
            (*ibdev).num_comp_vectors = i32::try_from(config.comp_vectors.max(1))?;
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
        // every user context (each object's dealloc callback runs) and waits for the callbacks in
        // flight; after that nothing uses the data, which is dropped before the device is freed.
        unsafe {
            sys::ib_unregister_device(ibdev);
            core::ptr::drop_in_place(addr_of_mut!((*self.dev.as_ptr()).data));
            sys::ib_dealloc_device(ibdev);
        }
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
        alloc_pd: Some(alloc_pd::<T>),
        dealloc_pd: Some(dealloc_pd::<T>),
        create_user_ah: Some(create_user_ah::<T>),
        destroy_ah: Some(destroy_ah::<T>),
        size_ib_ucontext: size_of::<Object<sys::ib_ucontext, T::Context>>(),
        size_ib_pd: size_of::<Object<sys::ib_pd, T::Pd>>(),
        size_ib_ah: size_of::<Object<sys::ib_ah, T::Ah>>(),
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
        unsafe {
            (*context.cast::<Object<sys::ib_ucontext, T::Context>>())
                .data
                .write(data)
        };
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
            (*context.cast::<Object<sys::ib_ucontext, T::Context>>())
                .data
                .assume_init_read(),
        )
    };
    T::dealloc_context(dev, data);
}

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
        unsafe { (*pd.cast::<Object<sys::ib_pd, T::Pd>>()).data.write(data) };
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
            (*pd.cast::<Object<sys::ib_pd, T::Pd>>())
                .data
                .assume_init_read(),
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
                (*(*ah).pd.cast::<Object<sys::ib_pd, T::Pd>>())
                    .data
                    .assume_init_ref(),
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
        unsafe { (*ah.cast::<Object<sys::ib_ah, T::Ah>>()).data.write(data) };
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
            (*ah.cast::<Object<sys::ib_ah, T::Ah>>())
                .data
                .assume_init_read(),
        )
    };
    T::destroy_ah(dev, data);
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
