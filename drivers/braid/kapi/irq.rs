// SPDX-License-Identifier: GPL-2.0

//! Interrupt handlers on a PCI device's MSI-X vectors that hold the vector allocation alive.
//!
//! `kernel::irq::Registration` borrows the `pci::IrqVectorRegistration` it was resolved from,
//! so a driver cannot keep both in its device data. Here the allocation sits in an [`Arc`] that
//! every [`Registration`] holds a reference to: the vectors are freed only after the last
//! handler on them is.
//!
//! A [`Wakeup`] lets a handler wake a thread that sleeps until the device has answered.

use core::{ffi::c_void, marker::PhantomPinned};

use kernel::{
    bindings,
    error::to_result,
    irq::{Handler, IrqReturn},
    pci,
    prelude::*,
    sync::Arc,
    time::Delta,
    types::Opaque,
};

use crate::sys;

/// A device's allocated interrupt vectors.
pub(crate) struct Vectors<'bound>(pci::IrqVectorRegistration<'bound>);

impl<'bound> Vectors<'bound> {
    /// Shares `vectors` with the handlers that will be registered on them.
    pub(crate) fn new(vectors: pci::IrqVectorRegistration<'bound>) -> Result<Arc<Self>> {
        Ok(Arc::new(Self(vectors), GFP_KERNEL)?)
    }

    /// The number of vectors.
    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }
}

/// `handler` registered on one vector of a [`Vectors`]; unregistered when dropped.
///
/// # Invariants
///
/// `irq` is the Linux interrupt number of a vector of `vectors`, and a handler whose cookie is
/// the address of this (pinned, boxed) registration is registered on it until drop.
#[pin_data(PinnedDrop)]
pub(crate) struct Registration<'bound, H: Handler> {
    vectors: Arc<Vectors<'bound>>,
    irq: u32,
    #[pin]
    handler: H,
    #[pin]
    _pin: PhantomPinned,
}

impl<'bound, H: Handler + 'bound> Registration<'bound, H> {
    /// Registers `handler` on vector `index` of `vectors`, under `name` in /proc/interrupts.
    ///
    /// The registration is boxed: it can be dropped, not forgotten in place, so the handler's
    /// address stays valid for as long as it is registered.
    pub(crate) fn new(
        vectors: &Arc<Vectors<'bound>>,
        index: usize,
        name: &'static CStr,
        handler: H,
    ) -> Result<Pin<KBox<Self>>> {
        let number = kernel::irq::IrqRequest::from(vectors.0.index(index)?).irq();
        KBox::pin_init(
            // INVARIANT: the handler is registered with the box's address as its cookie when
            // the initializer succeeds; if `request_irq` fails, the fields are dropped without
            // running `PinnedDrop`.
            try_pin_init!(&this in Self {
                vectors: vectors.clone(),
                irq: number,
                handler,
                _pin: PhantomPinned,
                _: {
                    // SAFETY: `irq` is a vector of `vectors`, kept allocated by the `vectors`
                    // field; the callback matches `H`; `this` is the final, pinned address of
                    // the registration, valid until its drop unregisters the handler; every
                    // field the callback reads is initialized already.
                    to_result(unsafe {
                        bindings::request_irq(
                            number,
                            Some(handle::<H>),
                            0,
                            name.as_char_ptr(),
                            this.as_ptr().cast::<c_void>(),
                        )
                    })?;
                },
            }? Error),
            GFP_KERNEL,
        )
    }
}

#[pinned_drop]
impl<H: Handler> PinnedDrop for Registration<'_, H> {
    fn drop(self: Pin<&mut Self>) {
        // SAFETY: by the type invariant the handler is registered on `irq` with this address as
        // its cookie; `free_irq` waits for running handlers, so none refers to `self` after it.
        unsafe {
            bindings::free_irq(
                self.irq,
                core::ptr::from_ref::<Self>(&self)
                    .cast_mut()
                    .cast::<c_void>(),
            )
        };
    }
}

/// The C callback: forwards the interrupt to the registration's handler.
///
/// # Safety
///
/// `cookie` is the address of a live `Registration<'_, H>` (the one `request_irq` was given).
unsafe extern "C" fn handle<H: Handler>(_irq: i32, cookie: *mut c_void) -> bindings::irqreturn_t {
    // SAFETY: the caller guarantees `cookie` points to a live registration; only shared
    // references are made to it.
    let registration = unsafe { &*cookie.cast::<Registration<'_, H>>() };
    bindings::irqreturn_t(match registration.handler.handle() {
        IrqReturn::None => bindings::irqreturn::IRQ_NONE.0,
        IrqReturn::Handled => bindings::irqreturn::IRQ_HANDLED.0,
    })
}

/// A wakeup an interrupt handler gives a thread that sleeps until its device has answered
/// (`struct completion`). Wakeups given while nobody sleeps are kept and make later sleeps return
/// at once, so a sleeper checks what it waits for before and after each sleep.
#[pin_data]
pub(crate) struct Wakeup {
    #[pin]
    inner: Opaque<sys::completion>,
}

// SAFETY: a completion is meant to be woken and waited on from any thread.
unsafe impl Send for Wakeup {}
// SAFETY: as above; `complete` and the waits take their own lock.
unsafe impl Sync for Wakeup {}

impl Wakeup {
    /// A wakeup with none given yet.
    pub(crate) fn new() -> impl PinInit<Self> {
        pin_init!(Self {
            // SAFETY: `slot` is the final, pinned address of the completion.
            inner <- Opaque::ffi_init(|slot: *mut sys::completion| unsafe {
                sys::braid_init_completion(slot)
            }),
        })
    }

    /// Wakes one sleeper, or the next one to sleep; callable from any context.
    pub(crate) fn wake(&self) {
        // SAFETY: the completion is initialized and pinned.
        unsafe { sys::complete(self.inner.get()) };
    }

    /// Sleeps (uninterruptibly) until a wakeup is given or `timeout` passes; whether one was.
    pub(crate) fn sleep(&self, timeout: Delta) -> bool {
        // SAFETY: the completion is initialized and pinned; the caller is a thread (it may sleep).
        unsafe { sys::wait_for_completion_timeout(self.inner.get(), super::jiffies(timeout)) != 0 }
    }
}
