// SPDX-License-Identifier: GPL-2.0

//! NAPI: a network device's polling contexts, scheduled from an interrupt and polled from
//! softirq with a budget.
//!
//! A [`Napi`] holds two kinds of driver data: `shared`, which other contexts reach too (the
//! interrupt handler, transmit), and `state`, which only the poll callback touches. NAPI runs at
//! most one poll of a context at a time, so the poll gets `&mut` to the state without a lock.

use core::{cell::UnsafeCell, ptr::NonNull};

use kernel::{
    irq::{Handler, IrqReturn},
    prelude::*,
    sync::{
        atomic::{Atomic, Relaxed},
        Arc,
    },
    types::Opaque,
};

use super::{
    netdev::{Device, Operations},
    skb::SkBuff,
};
use crate::sys;

/// What a NAPI context does when polled.
pub(crate) trait Poll: Send + Sync + Sized {
    /// The driver data of the network device the context belongs to.
    type Owner: Operations;
    /// What only the poll callback touches.
    type State: Send;

    /// Does up to `budget` units of receive work (and any amount of transmit cleanup) and
    /// returns the receive work done. Returning less than `budget` after
    /// [`Context::complete_done`] ends the poll; returning `budget` keeps it scheduled.
    fn poll(
        &self,
        dev: &Device<Self::Owner>,
        state: &mut Self::State,
        ctx: &Context,
        budget: u32,
    ) -> u32;
}

/// A NAPI context of a network device, added to it until dropped; starts disabled.
///
/// # Invariants
///
/// `napi` was added to the device `dev` with [`poll_callback`] for `T`; the device is held
/// (`dev_hold`) until drop; `state` is only accessed by that callback (NAPI runs one at a time,
/// and only while enabled) and by drop.
#[repr(C)]
#[pin_data(PinnedDrop)]
pub(crate) struct Napi<T: Poll> {
    // First field: the poll callback finds the rest from its address.
    #[pin]
    napi: Opaque<sys::napi_struct>,
    dev: NonNull<sys::net_device>,
    enabled: Atomic<bool>,
    shared: T,
    state: UnsafeCell<T::State>,
}

// SAFETY: the context may be dropped on any thread; its data is `Send`.
unsafe impl<T: Poll> Send for Napi<T> {}
// SAFETY: shared access reaches `shared` (`Sync`) and the kernel's NAPI functions, which are
// safe to call concurrently; `state` is only touched by the one running poll (type invariant).
unsafe impl<T: Poll> Sync for Napi<T> {}

impl<T: Poll> Napi<T> {
    /// Adds a disabled NAPI context to `dev`, with its data.
    pub(crate) fn new(dev: &Device<T::Owner>, shared: T, state: T::State) -> impl PinInit<Self> {
        let raw = dev.as_raw();
        pin_init!(Self {
            // SAFETY: `slot` is the pinned, final address of the context; the callback reads the
            // other fields only once enabled, which needs the whole value initialized. The
            // other fields' initializers cannot fail, so the context is never left added to the
            // device with its memory released. `raw` is a live device; holding it keeps it
            // allocated until our drop.
            // `netif_napi_add` expects the zeroed structure drivers embed in zeroed memory.
            napi <- Opaque::ffi_init(|slot: *mut sys::napi_struct| unsafe {
                slot.write_bytes(0, 1);
                sys::braid_dev_hold(raw);
                sys::braid_netif_napi_add(raw, slot, Some(poll_callback::<T>));
            }),
            // SAFETY: `raw` is not null (a live device).
            dev: unsafe { NonNull::new_unchecked(raw) },
            enabled: Atomic::new(false),
            shared,
            state: UnsafeCell::new(state),
        })
    }

    fn raw(&self) -> *mut sys::napi_struct {
        self.napi.get()
    }

    /// Lets the context be scheduled and polled (under the RTNL lock, like [`Self::disable`]).
    pub(crate) fn enable(&self) {
        if !self.enabled.xchg(true, Relaxed) {
            // SAFETY: the context is added and was disabled.
            unsafe { sys::napi_enable(self.raw()) }
        }
    }

    /// Waits for a running poll to finish and keeps the context from being polled again.
    pub(crate) fn disable(&self) {
        if self.enabled.xchg(false, Relaxed) {
            // SAFETY: the context is added and was enabled; this sleeps, as the callers (open,
            // stop, drop) may.
            unsafe { sys::napi_disable(self.raw()) }
        }
    }

    /// Schedules a poll (from the device's interrupt); nothing happens while disabled.
    pub(crate) fn schedule(&self) -> bool {
        // SAFETY: the context is added; scheduling works in any context.
        unsafe { sys::braid_napi_schedule(self.raw()) }
    }
}

#[pinned_drop]
impl<T: Poll> PinnedDrop for Napi<T> {
    fn drop(self: Pin<&mut Self>) {
        self.disable();
        // SAFETY: the context is added to `dev`, which we hold; it is disabled, so no poll runs
        // or will run; after removal the device may go.
        unsafe {
            sys::braid_netif_napi_del(self.raw());
            sys::braid_dev_put(self.dev.as_ptr());
        }
    }
}

/// What a poll may do with its context.
pub(crate) struct Context(*mut sys::napi_struct);

impl Context {
    /// The NAPI context, for allocations that use its per-CPU cache.
    pub(super) fn raw(&self) -> *mut sys::napi_struct {
        self.0
    }

    /// Hands a received packet to GRO and the stack.
    pub(crate) fn gro_receive(&self, skb: SkBuff) {
        // SAFETY: called from the poll of this live context, as the function requires; the
        // packet's ownership passes to the stack.
        unsafe { sys::braid_napi_gro_receive(self.0, skb.into_raw()) };
    }

    /// Ends the poll having done `work`; returns whether the driver must re-enable the
    /// device's interrupt (false: the context stays scheduled and will be polled again).
    pub(crate) fn complete_done(&self, work: u32) -> bool {
        // SAFETY: called from the poll of this live context.
        unsafe { sys::napi_complete_done(self.0, work.try_into().unwrap_or(i32::MAX)) }
    }
}

/// # Safety
///
/// Called by NAPI with a context added by [`Napi::new`] for `T`.
unsafe extern "C" fn poll_callback<T: Poll>(napi: *mut sys::napi_struct, budget: i32) -> i32 {
    // SAFETY: `napi` is the first field of a `#[repr(C)]` `Napi<T>` (type invariant), live while
    // it is added; only shared references are made to it.
    let this = unsafe { &*napi.cast::<Napi<T>>() };
    // SAFETY: the device is held by the context, and it is one made for `T::Owner`.
    let dev = unsafe { Device::<T::Owner>::from_raw(this.dev.as_ptr()) };
    // SAFETY: NAPI runs at most one poll of a context at a time, and nothing but the poll and
    // drop touches `state` (type invariant).
    let state = unsafe { &mut *this.state.get() };
    let done = this
        .shared
        .poll(dev, state, &Context(napi), budget.try_into().unwrap_or(0));
    done.try_into().unwrap_or(budget)
}

/// An interrupt handler that schedules a NAPI context.
pub(crate) struct Scheduler<T: Poll>(pub(crate) Arc<Napi<T>>);

impl<T: Poll> Handler for Scheduler<T> {
    fn handle(&self) -> IrqReturn {
        self.0.schedule();
        IrqReturn::Handled
    }
}
