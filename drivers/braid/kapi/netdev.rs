// SPDX-License-Identifier: GPL-2.0

//! Network devices: allocation and registration of an Ethernet `struct net_device` whose private
//! area holds the driver's data, the `net_device_ops` callbacks, carrier and transmit queue
//! control.

use core::{marker::PhantomData, ptr::NonNull};

use kernel::{
    device,
    error::from_result,
    irq::{Handler, IrqReturn},
    prelude::*,
    sync::Arc,
    time::Delta,
    types::Opaque,
};

use super::{
    dma::raw_device,
    ethtool::{self, Channels, Coalesce, Rings, RssSizes, Stats},
    skb::SkBuff,
    work::{Periodic, Task},
};
use crate::sys;

/// A network device's counters, as `ndo_get_stats64` reports them.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Stats64 {
    /// Packets received.
    pub(crate) rx_packets: u64,
    /// Bytes received.
    pub(crate) rx_bytes: u64,
    /// Received frames dropped by the driver or the device.
    pub(crate) rx_dropped: u64,
    /// Packets sent.
    pub(crate) tx_packets: u64,
    /// Bytes sent.
    pub(crate) tx_bytes: u64,
    /// Packets the driver or the device dropped on transmit.
    pub(crate) tx_dropped: u64,
}

/// What `ndo_start_xmit` did with a packet.
pub(crate) enum Xmit {
    /// The driver took the packet (queued it, or dropped and counted it).
    Done,
    /// No room: the stack keeps the packet and retries once the queue is woken.
    Busy(SkBuff),
}

/// The callbacks of a network device whose private data is `Self`.
pub(crate) trait Operations: Sized + Send + Sync {
    /// The driver's name, as `ethtool -i` shows it.
    const DRIVER_NAME: &'static CStr;

    /// `ndo_open`: the interface goes up (called under the RTNL lock).
    fn open(dev: &Device<Self>) -> Result;
    /// `ndo_stop`: the interface goes down (called under the RTNL lock, with transmission
    /// stopped).
    fn stop(dev: &Device<Self>);
    /// `ndo_start_xmit`: sends `skb` on transmit queue `skb.queue()`, with that queue's lock
    /// held and bottom halves off.
    fn start_xmit(dev: &Device<Self>, skb: SkBuff) -> Xmit;
    /// `ndo_get_stats64`: the device's counters.
    fn get_stats64(dev: &Device<Self>, stats: &mut Stats64);
    /// `ndo_change_mtu`: the device takes frames of `mtu` bytes from now on (called under the
    /// RTNL lock, within the limits given at registration).
    fn change_mtu(dev: &Device<Self>, mtu: u32) -> Result;
    /// The driver's periodic service task (every [`Config::service_period`], in process
    /// context, without the RTNL lock), from registration until just before unregistration.
    fn service(_dev: &Device<Self>) {}
    /// `ndo_tx_timeout`: transmit queue `queue` has been stopped for longer than the watchdog
    /// timeout (called from the stack's watchdog timer: atomic context).
    fn tx_timeout(_dev: &Device<Self>, _queue: u32) {}
    /// The driver's counters for `ethtool -S`: the same names in the same order on every call.
    fn ethtool_stats(_dev: &Device<Self>, _stats: &mut Stats<'_>) {}
    /// Ring sizes; `None`: not reported.
    fn rings(_dev: &Device<Self>) -> Option<Rings> {
        None
    }
    /// Resizes the rings (under the RTNL lock).
    fn set_rings(_dev: &Device<Self>, _rx: u32, _tx: u32) -> Result {
        Err(EOPNOTSUPP)
    }
    /// Channels; `None`: not reported.
    fn channels(_dev: &Device<Self>) -> Option<Channels> {
        None
    }
    /// Uses `count` combined channels (under the RTNL lock).
    fn set_channels(_dev: &Device<Self>, _count: u32) -> Result {
        Err(EOPNOTSUPP)
    }
    /// Interrupt moderation; `None`: not supported.
    fn coalesce(_dev: &Device<Self>) -> Option<Coalesce> {
        None
    }
    /// Sets interrupt moderation (under the RTNL lock).
    fn set_coalesce(_dev: &Device<Self>, _c: Coalesce) -> Result {
        Err(EOPNOTSUPP)
    }
    /// Receive-side scaling: entries of the indirection table and bytes of the Toeplitz key;
    /// `None`: no RSS.
    fn rss_sizes(_dev: &Device<Self>) -> Option<RssSizes> {
        None
    }
    /// Fills in the indirection table (a receive queue per entry) and the key, each when asked
    /// for, sized as [`Self::rss_sizes`] says (under the RTNL lock).
    fn rss(_dev: &Device<Self>, _table: Option<&mut [u32]>, _key: Option<&mut [u8]>) -> Result {
        Err(EOPNOTSUPP)
    }
    /// Sets the indirection table and/or the key (`None`: unchanged), sized as
    /// [`Self::rss_sizes`] says, table entries below the channel count (under the RTNL lock).
    fn set_rss(_dev: &Device<Self>, _table: Option<&[u32]>, _key: Option<&[u8]>) -> Result {
        Err(EOPNOTSUPP)
    }
}

/// A registered network device, seen from one of its callbacks or from its owner.
///
/// # Invariants
///
/// The wrapped `struct net_device` was allocated by [`Registration::new`] with a private area
/// holding an initialized `T`, and lives for as long as the reference.
#[repr(transparent)]
pub(crate) struct Device<T>(Opaque<sys::net_device>, PhantomData<T>);

// SAFETY: a `net_device` may be used from any thread; the driver data it holds is `Send + Sync`
// (bound of `Operations`).
unsafe impl<T: Operations> Send for Device<T> {}
// SAFETY: as above; every method takes `&self` and the kernel functions they call do their own
// locking (or document the lock their caller holds).
unsafe impl<T: Operations> Sync for Device<T> {}

impl<T: Operations> Device<T> {
    /// The device behind a pointer the kernel passed to a callback.
    ///
    /// # Safety
    ///
    /// `ptr` is a `net_device` allocated by [`Registration::new`] for `T`, live for `'a`.
    pub(crate) unsafe fn from_raw<'a>(ptr: *mut sys::net_device) -> &'a Self {
        // SAFETY: `Device<T>` is a transparent wrapper of the C structure; the caller guarantees
        // the invariant.
        unsafe { &*ptr.cast::<Self>() }
    }

    /// The C structure.
    pub(crate) fn as_raw(&self) -> *mut sys::net_device {
        self.0.get()
    }

    /// The driver's data.
    pub(crate) fn data(&self) -> &T {
        // SAFETY: by the type invariant the private area holds an initialized `T`, which lives
        // as long as the device; only shared references are handed out.
        unsafe { &*sys::braid_netdev_priv(self.as_raw()).cast::<T>() }
    }

    /// The features in use (`NETIF_F_*`, [`features`]), as `ethtool -K` left them.
    pub(crate) fn features(&self) -> u64 {
        // SAFETY: the device is live; `features` is read without the lock as the kernel's data
        // path readers do (an aligned `u64` cannot tear on 64-bit machines).
        unsafe { core::ptr::addr_of!((*self.as_raw()).features).read_volatile() }
    }

    /// The current MTU.
    pub(crate) fn mtu(&self) -> u32 {
        // SAFETY: the device is live; `mtu` is read without the lock as the kernel's READ_ONCE
        // readers do (a torn read is impossible for an aligned `u32`).
        unsafe { core::ptr::addr_of!((*self.as_raw()).mtu).read_volatile() }
    }

    /// Tells the stack the link is up.
    pub(crate) fn carrier_on(&self) {
        // SAFETY: the device is live; `netif_carrier_on` may be called in any context.
        unsafe { sys::netif_carrier_on(self.as_raw()) }
    }

    /// Tells the stack the link is down.
    pub(crate) fn carrier_off(&self) {
        // SAFETY: as for `carrier_on`.
        unsafe { sys::netif_carrier_off(self.as_raw()) }
    }

    /// Sets how many transmit and receive queues are in use (under the RTNL lock, from `open`).
    pub(crate) fn set_real_num_queues(&self, tx: u32, rx: u32) -> Result {
        // SAFETY: the device is live; `open` runs under the RTNL lock these functions need, and
        // they check the counts against the allocated queues.
        kernel::error::to_result(unsafe { sys::netif_set_real_num_tx_queues(self.as_raw(), tx) })?;
        // SAFETY: as above.
        kernel::error::to_result(unsafe { sys::netif_set_real_num_rx_queues(self.as_raw(), rx) })
    }

    /// Lets the stack transmit on every queue, and runs the queueing discipline of each: packets
    /// it held while the queues were stopped go out now, not with the next packet sent (which a
    /// TCP flow waiting on them would never send).
    pub(crate) fn tx_wake_all(&self) {
        // SAFETY: the device is live.
        unsafe { sys::braid_netif_tx_wake_all_queues(self.as_raw()) }
    }

    /// Stops the stack from transmitting on every queue (waits for none).
    pub(crate) fn tx_stop_all(&self) {
        // SAFETY: the device is live.
        unsafe { sys::netif_tx_stop_all_queues(self.as_raw()) }
    }

    /// Stops transmit queue `queue` until [`Self::tx_wake`].
    pub(crate) fn tx_stop(&self, queue: u16) {
        // SAFETY: the device is live; the helper indexes the device's queue array, and `queue`
        // is one the stack transmitted on or one the driver set up (below `real_num_tx_queues`).
        unsafe { sys::braid_netif_tx_stop_queue(self.as_raw(), queue.into()) }
    }

    /// Restarts a stopped transmit queue.
    pub(crate) fn tx_wake(&self, queue: u16) {
        // SAFETY: as for `tx_stop`.
        unsafe { sys::braid_netif_tx_wake_queue(self.as_raw(), queue.into()) }
    }

    /// Whether transmit queue `queue` is stopped.
    pub(crate) fn tx_stopped(&self, queue: u16) -> bool {
        // SAFETY: as for `tx_stop`.
        unsafe { sys::braid_netif_tx_queue_stopped(self.as_raw(), queue.into()) }
    }

    /// Whether the stack is about to hand over more packets right away (`netdev_xmit_more`): a
    /// driver may leave the doorbell for the last of them. Only meaningful in `start_xmit`.
    pub(crate) fn xmit_more(&self) -> bool {
        // SAFETY: reads this CPU's transmit state; `start_xmit` runs with bottom halves off.
        unsafe { sys::braid_netdev_xmit_more() }
    }

    /// Byte queue limits: `bytes` were handed to the device on `queue`.
    pub(crate) fn tx_sent(&self, queue: u16, bytes: u32) {
        // SAFETY: as for `tx_stop`.
        unsafe { sys::braid_netdev_tx_sent_queue(self.as_raw(), queue.into(), bytes) }
    }

    /// Byte queue limits: the device finished `packets` packets of `bytes` on `queue`.
    pub(crate) fn tx_completed(&self, queue: u16, packets: u32, bytes: u32) {
        // SAFETY: as for `tx_stop`.
        unsafe { sys::braid_netdev_tx_completed_queue(self.as_raw(), queue.into(), packets, bytes) }
    }

    /// Byte queue limits: forget what was in flight on `queue` (the ring was emptied).
    pub(crate) fn tx_reset(&self, queue: u16) {
        // SAFETY: as for `tx_stop`.
        unsafe { sys::braid_netdev_tx_reset_queue(self.as_raw(), queue.into()) }
    }
}

/// What a network device is made with.
pub(crate) struct Config<'a> {
    /// Transmit queues to allocate.
    pub(crate) tx_queues: u32,
    /// Receive queues to allocate.
    pub(crate) rx_queues: u32,
    /// Permanent MAC address.
    pub(crate) mac: &'a [u8; 6],
    /// Whether the stack may change the address (`ip link set address`), even while the
    /// interface is up (`IFF_LIVE_ADDR_CHANGE`): for a device that has nothing to program, as it
    /// filters no address and learns none. Otherwise a change fails with `EOPNOTSUPP`.
    pub(crate) live_mac_change: bool,
    /// Largest MTU.
    pub(crate) max_mtu: u32,
    /// `NETIF_F_*` bits the device can do (and does from the start).
    pub(crate) features: u64,
    /// Transmit watchdog, in jiffies.
    pub(crate) watchdog_timeo: i32,
    /// How often [`Operations::service`] runs; `None`: never.
    pub(crate) service_period: Option<Delta>,
}

/// The service task of a registered device.
///
/// # Invariants
///
/// `dev` is a device registered for `T` by the [`Registration`] that started this task, which
/// disables the task before it unregisters the device (the task may outlive the device, in an
/// [`ServiceInterrupt`], but never runs again).
struct Service<T> {
    dev: NonNull<sys::net_device>,
    _data: PhantomData<T>,
}

// SAFETY: the task only makes a `&Device<T>`, which is `Send + Sync`, from the pointer.
unsafe impl<T: Operations> Send for Service<T> {}
// SAFETY: as above.
unsafe impl<T: Operations> Sync for Service<T> {}

impl<T: Operations> Task for Service<T> {
    fn run(&self) {
        // SAFETY: by the type invariant the device is registered while the task can run.
        T::service(unsafe { Device::from_raw(self.dev.as_ptr()) });
    }
}

/// An interrupt handler that runs a device's service task at once (e.g. on a device's
/// management vector, so that its events need not wait for the next period). Made by
/// [`Registration::service_interrupt`]; it may outlive the device, and does nothing from the
/// device's unregistration on.
pub(crate) struct ServiceInterrupt<T: Operations>(Arc<Periodic<Service<T>>>);

impl<T: Operations> Handler for ServiceInterrupt<T> {
    fn handle(&self) -> IrqReturn {
        self.0.run_now();
        IrqReturn::Handled
    }
}

/// `NETIF_F_*` feature bits.
pub(crate) mod features {
    use crate::sys;

    /// The device can DMA to and from high memory.
    pub(crate) const HIGHDMA: u64 = 1 << sys::NETIF_F_HIGHDMA_BIT;
    /// The device verifies received checksums.
    pub(crate) const RXCSUM: u64 = 1 << sys::NETIF_F_RXCSUM_BIT;
    /// The device hashes received flows (the hash goes with the packet).
    pub(crate) const RXHASH: u64 = 1 << sys::NETIF_F_RXHASH_BIT;
    /// The device gathers a packet from several buffers.
    pub(crate) const SG: u64 = 1 << sys::NETIF_F_SG_BIT;
    /// The device fills TCP/UDP checksums over IPv4.
    pub(crate) const IP_CSUM: u64 = 1 << sys::NETIF_F_IP_CSUM_BIT;
    /// The device fills TCP/UDP checksums over IPv6.
    pub(crate) const IPV6_CSUM: u64 = 1 << sys::NETIF_F_IPV6_CSUM_BIT;
    /// TCP segmentation over IPv4.
    pub(crate) const TSO: u64 = 1 << sys::NETIF_F_TSO_BIT;
    /// TCP segmentation over IPv6.
    pub(crate) const TSO6: u64 = 1 << sys::NETIF_F_TSO6_BIT;
    /// TCP segmentation with ECN.
    pub(crate) const TSO_ECN: u64 = 1 << sys::NETIF_F_TSO_ECN_BIT;
}

/// Smallest MTU an Ethernet device takes (`ETH_MIN_MTU`).
const ETH_MIN_MTU: u32 = 68;

/// An Ethernet network device, registered with the stack until dropped.
///
/// # Invariants
///
/// `dev` was allocated by `alloc_etherdev_mqs` with room for `T` in its private area, which
/// holds an initialized `T`; the device is registered; `ops` is what `dev->netdev_ops` points to.
pub(crate) struct Registration<T: Operations> {
    /// Disabled before the device is unregistered.
    service: Option<Arc<Periodic<Service<T>>>>,
    dev: NonNull<sys::net_device>,
    _ops: KBox<sys::net_device_ops>,
    _ethtool: KBox<sys::ethtool_ops>,
    _data: PhantomData<T>,
}

// SAFETY: the registration only unregisters and frees the device on drop, which may happen on
// any thread; the data it owns is `Send`.
unsafe impl<T: Operations> Send for Registration<T> {}
// SAFETY: shared access only hands out `&Device<T>`, which is `Sync`.
unsafe impl<T: Operations> Sync for Registration<T> {}

impl<T: Operations> Registration<T> {
    /// Allocates an Ethernet device as a child of `parent`, initializes its private data with
    /// `data` and registers it without carrier (it shows up in `ip link`; `open` may run right
    /// away).
    pub(crate) fn new(
        parent: &device::Device<device::Bound>,
        config: &Config<'_>,
        data: impl PinInit<T, Error>,
    ) -> Result<Self> {
        let ops = KBox::new(
            sys::net_device_ops {
                ndo_open: Some(open_callback::<T>),
                ndo_stop: Some(stop_callback::<T>),
                ndo_start_xmit: Some(start_xmit_callback::<T>),
                ndo_get_stats64: Some(get_stats64_callback::<T>),
                ndo_change_mtu: Some(change_mtu_callback::<T>),
                ndo_validate_addr: Some(sys::eth_validate_addr),
                // `eth_mac_addr` checks the address and whether the device may change it now.
                ndo_set_mac_address: config.live_mac_change.then_some(sys::eth_mac_addr),
                ndo_tx_timeout: Some(tx_timeout_callback::<T>),
                ..Default::default()
            },
            GFP_KERNEL,
        )?;
        let ethtool = KBox::new(ethtool::ops::<T>(), GFP_KERNEL)?;
        let size = i32::try_from(core::mem::size_of::<T>())?;
        // SAFETY: plain allocation; the counts are checked by the function.
        let raw = unsafe { sys::alloc_etherdev_mqs(size, config.tx_queues, config.rx_queues) };
        let dev = NonNull::new(raw).ok_or(ENOMEM)?;
        let raw = dev.as_ptr();
        // SAFETY: `raw` is a freshly allocated device that nobody else sees yet: its fields may
        // be written; the private area is `size_of::<T>()` bytes aligned to `NETDEV_ALIGN` (32),
        // which `T`'s alignment must not exceed (checked at compile time below).
        unsafe {
            const { assert!(core::mem::align_of::<T>() <= 32) };
            sys::braid_netdev_set_parent(raw, raw_device(parent));
            sys::braid_eth_hw_addr_set(raw, config.mac.as_ptr());
            if config.live_mac_change {
                sys::braid_netdev_allow_live_addr_change(raw);
            }
            (*raw).netdev_ops = &*ops;
            (*raw).ethtool_ops = &*ethtool;
            (*raw).min_mtu = ETH_MIN_MTU;
            (*raw).max_mtu = config.max_mtu;
            (*raw).features = config.features;
            (*raw).hw_features = config.features;
            (*raw).watchdog_timeo = config.watchdog_timeo;
        }
        // SAFETY: `raw` is a live device allocated with a private area.
        let slot = unsafe { sys::braid_netdev_priv(raw) };
        // SAFETY: the private area is valid, suitably aligned (above) and uninitialized; on
        // failure the initializer leaves it uninitialized.
        if let Err(e) = unsafe { data.__init(slot.cast::<T>()) } {
            // SAFETY: not registered, the private data is not initialized: free it whole.
            unsafe { sys::free_netdev(raw) };
            return Err(e);
        }
        // No carrier until the driver says so: a carrier on from the start would never change,
        // and the operational state would stay "unknown".
        // SAFETY: `raw` is a live device, not registered yet.
        unsafe { sys::netif_carrier_off(raw) };
        // SAFETY: the device is fully set up; registering it may call `open` at once, which
        // finds the initialized data.
        if let Err(e) = kernel::error::to_result(unsafe { sys::register_netdev(raw) }) {
            // SAFETY: registration failed, so no callback runs any more: drop the data in
            // place, then free the device.
            unsafe {
                core::ptr::drop_in_place(slot.cast::<T>());
                sys::free_netdev(raw);
            }
            return Err(e);
        }
        // INVARIANT: allocated for `T`, data initialized, registered, ops kept with it.
        let mut this = Self {
            service: None,
            dev,
            _ops: ops,
            _ethtool: ethtool,
            _data: PhantomData,
        };
        if let Some(period) = config.service_period {
            // INVARIANT: `this` owns the task and drops it before unregistering the device.
            let service = Service {
                dev,
                _data: PhantomData,
            };
            let service = Arc::pin_init(Periodic::new(period, service), GFP_KERNEL)?;
            service.start();
            this.service = Some(service);
        }
        Ok(this)
    }

    /// A handler that runs the service task at once; `None` without a service task.
    pub(crate) fn service_interrupt(&self) -> Option<ServiceInterrupt<T>> {
        Some(ServiceInterrupt(self.service.clone()?))
    }

    /// The registered device.
    pub(crate) fn device(&self) -> &Device<T> {
        // SAFETY: by the type invariant the device is live while `self` is.
        unsafe { Device::from_raw(self.dev.as_ptr()) }
    }
}

impl<T: Operations> Drop for Registration<T> {
    fn drop(&mut self) {
        // No service task runs from here on, whatever interrupt handler still holds it.
        if let Some(service) = self.service.take() {
            service.disable();
        }
        let raw = self.dev.as_ptr();
        // SAFETY: by the type invariant the device is registered: unregistering it closes it
        // (`stop`) and waits until no callback runs and no reference is held; then the private
        // data is dropped once and the device freed.
        unsafe {
            sys::unregister_netdev(raw);
            core::ptr::drop_in_place(sys::braid_netdev_priv(raw).cast::<T>());
            sys::free_netdev(raw);
        }
    }
}

/// # Safety
///
/// Called by the stack with a device made by [`Registration::new`] for `T`.
unsafe extern "C" fn open_callback<T: Operations>(dev: *mut sys::net_device) -> i32 {
    // SAFETY: the caller guarantees the device is one of ours and live during the call.
    let dev = unsafe { Device::<T>::from_raw(dev) };
    from_result(|| T::open(dev).map(|()| 0))
}

/// # Safety
///
/// As for [`open_callback`].
unsafe extern "C" fn stop_callback<T: Operations>(dev: *mut sys::net_device) -> i32 {
    // SAFETY: as for `open_callback`.
    T::stop(unsafe { Device::<T>::from_raw(dev) });
    0
}

/// # Safety
///
/// As for [`open_callback`]; `skb` is a packet the caller hands over.
unsafe extern "C" fn start_xmit_callback<T: Operations>(
    skb: *mut sys::sk_buff,
    dev: *mut sys::net_device,
) -> sys::netdev_tx_t {
    // SAFETY: as for `open_callback`.
    let dev = unsafe { Device::<T>::from_raw(dev) };
    // SAFETY: the stack hands the packet over: the driver owns it unless it answers BUSY.
    let skb = unsafe { SkBuff::from_raw(skb) };
    match T::start_xmit(dev, skb) {
        Xmit::Done => sys::netdev_tx_NETDEV_TX_OK,
        Xmit::Busy(skb) => {
            // The stack keeps the packet.
            let _ = skb.into_raw();
            sys::netdev_tx_NETDEV_TX_BUSY
        }
    }
}

/// # Safety
///
/// As for [`open_callback`].
unsafe extern "C" fn tx_timeout_callback<T: Operations>(dev: *mut sys::net_device, queue: u32) {
    // SAFETY: as for `open_callback`.
    T::tx_timeout(unsafe { Device::<T>::from_raw(dev) }, queue);
}

/// # Safety
///
/// As for [`open_callback`]; `storage` is valid for writes.
unsafe extern "C" fn get_stats64_callback<T: Operations>(
    dev: *mut sys::net_device,
    storage: *mut sys::rtnl_link_stats64,
) {
    // SAFETY: as for `open_callback`.
    let dev = unsafe { Device::<T>::from_raw(dev) };
    let mut stats = Stats64::default();
    T::get_stats64(dev, &mut stats);
    // SAFETY: the caller guarantees `storage` is valid; the stack zeroed it, only the driver's
    // counters are filled in.
    let storage = unsafe { &mut *storage };
    storage.rx_packets = stats.rx_packets;
    storage.rx_bytes = stats.rx_bytes;
    storage.rx_dropped = stats.rx_dropped;
    storage.tx_packets = stats.tx_packets;
    storage.tx_bytes = stats.tx_bytes;
    storage.tx_dropped = stats.tx_dropped;
}

/// # Safety
///
/// As for [`open_callback`].
unsafe extern "C" fn change_mtu_callback<T: Operations>(
    dev: *mut sys::net_device,
    mtu: i32,
) -> i32 {
    // SAFETY: as for `open_callback`.
    let dev = unsafe { Device::<T>::from_raw(dev) };
    from_result(|| {
        let mtu = u32::try_from(mtu)?;
        T::change_mtu(dev, mtu)?;
        // SAFETY: under the RTNL lock (the caller's), as `WRITE_ONCE(dev->mtu, mtu)`.
        unsafe { core::ptr::addr_of_mut!((*dev.as_raw()).mtu).write_volatile(mtu) };
        Ok(0)
    })
}

/// How many CPUs are online (a driver sizes its queues by it).
pub(crate) fn online_cpus() -> u32 {
    // SAFETY: reads a counter.
    unsafe { sys::braid_num_online_cpus() }
}

/// Runs `f` with the RTNL lock held (as the callbacks of [`Operations`] are).
pub(crate) fn with_rtnl<R>(f: impl FnOnce() -> R) -> R {
    // SAFETY: takes the lock; the callers are in process context outside of it (a deferred
    // task, never a netdev callback, which holds it already).
    unsafe { sys::rtnl_lock() };
    let r = f();
    // SAFETY: taken above.
    unsafe { sys::rtnl_unlock() };
    r
}
