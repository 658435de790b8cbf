// SPDX-License-Identifier: GPL-2.0

//! Periodic deferred work that its owner stops synchronously.
//!
//! `kernel::workqueue` has no cancel yet, so a work item cannot safely refer to data that its
//! owner frees. A [`Periodic`] runs its task on the system workqueue every period (and at once
//! when [`Periodic::run_now`] asks, from any context) until it is disabled or dropped, which waits
//! for a running task and keeps it from ever being queued again (`disable_delayed_work_sync`).

use core::marker::PhantomPinned;

use kernel::{
    prelude::*,
    sync::atomic::{Atomic, Relaxed},
    time::Delta,
    types::Opaque,
};

use crate::sys;

/// What a [`Periodic`] runs.
pub(crate) trait Task: Send + Sync {
    /// One run, in process context (it may sleep).
    fn run(&self);
}

/// A task run every `period` from when [`Periodic::start`] is called until drop.
///
/// # Invariants
///
/// `work` is initialized with [`run_callback`] for `T`; once `started`, it is queued or running
/// until drop cancels it.
#[repr(C)]
#[pin_data(PinnedDrop)]
pub(crate) struct Periodic<T: Task> {
    // First field: the callback finds the rest from its address.
    #[pin]
    work: Opaque<sys::delayed_work>,
    period: Delta,
    started: Atomic<bool>,
    task: T,
    #[pin]
    _pin: PhantomPinned,
}

// SAFETY: the work item may be queued and cancelled from any thread; the task is `Send + Sync`.
unsafe impl<T: Task> Send for Periodic<T> {}
// SAFETY: shared access only starts the work (the workqueue API is thread-safe) or reaches the
// task, which is `Sync`.
unsafe impl<T: Task> Sync for Periodic<T> {}

impl<T: Task> Periodic<T> {
    /// A stopped periodic task.
    pub(crate) fn new(period: Delta, task: T) -> impl PinInit<Self> {
        pin_init!(Self {
            // SAFETY: `slot` is the final, pinned address of the work item; it is zeroed first
            // as the macro expects of embedded work items.
            work <- Opaque::ffi_init(|slot: *mut sys::delayed_work| unsafe {
                slot.write_bytes(0, 1);
                sys::braid_init_delayed_work(slot, Some(run_callback::<T>));
            }),
            period,
            started: Atomic::new(false),
            task,
            _pin: PhantomPinned,
        })
    }

    /// Runs the task after one period, then every period (once; later calls do nothing).
    pub(crate) fn start(&self) {
        if !self.started.xchg(true, Relaxed) {
            self.arm();
        }
    }

    /// Runs the task as soon as possible, then every period again (from any context, an
    /// interrupt handler included). Does nothing before [`Self::start`] or after
    /// [`Self::disable`].
    pub(crate) fn run_now(&self) {
        if self.started.load(Relaxed) {
            // SAFETY: the work item is initialized and pinned; a disabled item is not queued.
            unsafe { sys::braid_mod_delayed_work_now(self.work.get()) };
        }
    }

    /// Stops the task for good: waits for a running one, and no later [`Self::run_now`] or
    /// re-arming queues it again.
    pub(crate) fn disable(&self) {
        // SAFETY: the work item is initialized and pinned.
        unsafe { sys::disable_delayed_work_sync(self.work.get()) };
    }

    fn arm(&self) {
        let jiffies = super::jiffies(self.period);
        // SAFETY: the work item is initialized and pinned; drop cancels it before the memory
        // goes.
        unsafe { sys::braid_schedule_delayed_work(self.work.get(), jiffies) };
    }
}

#[pinned_drop]
impl<T: Task> PinnedDrop for Periodic<T> {
    fn drop(self: Pin<&mut Self>) {
        self.disable();
    }
}

/// # Safety
///
/// Called by the workqueue with the work item of a live `Periodic<T>`.
unsafe extern "C" fn run_callback<T: Task>(work: *mut sys::work_struct) {
    // SAFETY: the `work_struct` is the first field of the `delayed_work`, the first field of a
    // `#[repr(C)]` `Periodic<T>`, which is live until its drop has cancelled this callback.
    let this = unsafe { &*work.cast::<Periodic<T>>() };
    this.task.run();
    this.arm();
}
