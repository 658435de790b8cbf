// SPDX-License-Identifier: GPL-2.0

//! Dynamic interrupt moderation of a receive queue (`lib/dim`, `struct dim`), as ena.ko and most
//! NIC drivers use it: the queue's NAPI polls count what they received ([`Dim::received`]), and
//! the poll that completes and unmasks feeds [`Dim::sample`] the queue's running packet and byte
//! counts, one event per interrupt, if anything was received since the last. When DIM settles on
//! a new profile it runs its work item, which here reads the delay of that profile from the
//! kernel's receive table (`net_dim_get_rx_moderation`, periods counted from the event, as ena.ko
//! asks) for the next unmask to carry ([`Dim::usecs`]).

use core::{marker::PhantomPinned, mem::MaybeUninit};

use kernel::{
    prelude::*,
    sync::atomic::{Atomic, Relaxed},
    types::Opaque,
};

use crate::sys;

/// The moderation state of one receive queue.
///
/// # Invariants
///
/// `dim` is zero-initialized with its work item set up for [`work_callback`]; the work item may
/// be queued by [`net_dim`](sys::net_dim) only while the value is live, and drop cancels it.
#[repr(C)]
#[pin_data(PinnedDrop)]
pub(crate) struct Dim {
    // First field: the work callback finds the rest from its address.
    #[pin]
    dim: Opaque<sys::dim>,
    /// The delay of the profile DIM chose last, in µs (0 before its first choice).
    usecs: Atomic<u32>,
    /// Samples given (DIM's event counter, which it reads modulo 2^16).
    events: Atomic<u32>,
    /// Packets received since the last sample.
    pending: Atomic<u32>,
    #[pin]
    _pin: PhantomPinned,
}

// SAFETY: DIM's state is touched by the queue's NAPI poll (one at a time) and by its work item,
// which the C library orders between them as it does for C drivers; the rest are atomics.
unsafe impl Send for Dim {}
// SAFETY: as above.
unsafe impl Sync for Dim {}

impl Dim {
    /// A queue's moderation, starting at DIM's first profile.
    pub(crate) fn new() -> impl PinInit<Self> {
        pin_init!(Self {
            // SAFETY: `slot` is the final, pinned address of the structure, zeroed as DIM
            // expects before its work item is set up.
            dim <- Opaque::ffi_init(|slot: *mut sys::dim| unsafe {
                slot.write_bytes(0, 1);
                (*slot).mode = sys::dim_cq_period_mode_DIM_CQ_PERIOD_MODE_START_FROM_EQE as u8;
                sys::braid_init_dim_work(slot, Some(work_callback));
            }),
            usecs: Atomic::new(0),
            events: Atomic::new(0),
            pending: Atomic::new(0),
            _pin: PhantomPinned,
        })
    }

    /// Counts `packets` received by one poll.
    pub(crate) fn received(&self, packets: u32) {
        self.pending.fetch_add(packets, Relaxed);
    }

    /// Feeds DIM the queue's running counts at the end of an interrupt's polling, if anything
    /// was received since the last sample (as ena.ko does); from the queue's NAPI poll only.
    pub(crate) fn sample(&self, packets: u64, bytes: u64) {
        if self.pending.xchg(0, Relaxed) == 0 {
            return;
        }
        let events = self.events.fetch_add(1, Relaxed).wrapping_add(1);
        let mut sample = MaybeUninit::<sys::dim_sample>::uninit();
        // SAFETY: `sample` is valid for writes and the helper initializes every field; `dim` is
        // initialized and pinned, and NAPI runs one poll of the queue at a time.
        unsafe {
            sys::braid_dim_update_sample(events as u16, packets, bytes, sample.as_mut_ptr());
            sys::net_dim(self.dim.get(), sample.as_ptr());
        }
    }

    /// The receive interrupt delay DIM chose, in µs.
    pub(crate) fn usecs(&self) -> u32 {
        self.usecs.load(Relaxed)
    }
}

#[pinned_drop]
impl PinnedDrop for Dim {
    fn drop(self: Pin<&mut Self>) {
        // SAFETY: the work item is initialized and pinned; once cancelled it does not run again,
        // as the owner polls no more (the NAPI context goes first).
        unsafe { sys::cancel_work_sync(&raw mut (*self.dim.get()).work) };
    }
}

/// # Safety
///
/// Called by the workqueue with the work item of a live [`Dim`].
unsafe extern "C" fn work_callback(work: *mut sys::work_struct) {
    // SAFETY: the work item is the `work` field of the `struct dim` that heads a `#[repr(C)]`
    // `Dim`, live until its drop has cancelled this callback.
    let (dim, this) = unsafe {
        let dim = work
            .byte_sub(core::mem::offset_of!(sys::dim, work))
            .cast::<sys::dim>();
        (dim, &*dim.cast::<Dim>())
    };
    // SAFETY: `dim` is live (above); DIM does not change the profile while its work is pending,
    // and expects the work to restart measuring, as C drivers' work functions do.
    let moder = unsafe {
        let moder = sys::net_dim_get_rx_moderation((*dim).mode, (*dim).profile_ix.into());
        (*dim).state = sys::dim_state_DIM_START_MEASURE as u8;
        moder
    };
    this.usecs.store(u32::from(moder.usec), Relaxed);
}
