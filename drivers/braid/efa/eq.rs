// SPDX-License-Identifier: GPL-2.0

//! The EFA function's completion event queues (`efa_com_eq_init`, `efa_com_eq_comp_intr_handler`):
//! rings of 16-byte events (`efa_admin_eqe`) the device writes when an armed CQ with interrupts
//! gets a completion, each raising its own MSI-X vector. The handler runs the CQ's completion
//! handler through the RDMA device's [`CqTable`] and re-arms the queue.

#![forbid(unsafe_code)]

use kernel::{
    device::{Bound, Device},
    dma::Coherent,
    io::{io_project, io_read, Io},
    irq::{Handler, IrqReturn},
    new_spinlock_irq,
    prelude::*,
    sync::{
        barrier::{dma_mb, Read},
        Arc, SpinLockIrq,
    },
};

use core::num::NonZeroU16;

use super::{regs::EQ_DB, Regs, CREATE_EQ};
use crate::com::admin::{phase, put_u64, AdminQueue, Entry};
use crate::kapi::ib::CqTable;

/// An event: `common` (phase bit 0, type 8:1), reserved, then the event's data.
type Eqe = [u32; 4];

/// `EFA_ADMIN_EQE_EVENT_TYPE_COMPLETION`.
const EVENT_COMPLETION: u32 = 0;
/// `EFA_ADMIN_CREATE_EQ_CMD_COMPLETION_EVENTS`, the only events braid.ko asks for.
const COMPLETION_EVENTS: u32 = 1 << 0;
/// Most events per queue braid.ko asks for.
const MAX_DEPTH: u32 = 256;

/// The ring and the driver's head in it.
struct Ring {
    entries: Coherent<[Eqe]>,
    head: u16,
}

/// A completion event queue.
#[pin_data]
pub(crate) struct Eq<'bound> {
    eqn: u16,
    depth: NonZeroU16,
    regs: Arc<Regs<'bound>>,
    #[pin]
    ring: SpinLockIrq<Ring>,
    cqs: Arc<CqTable>,
}

impl<'bound> Eq<'bound> {
    /// Creates a queue whose events raise MSI-X vector `vector`, at most `max_depth` deep.
    pub(crate) fn create(
        dev: &Device<Bound>,
        admin: &mut AdminQueue,
        regs: &Arc<Regs<'bound>>,
        vector: u16,
        max_depth: u32,
        cqs: &Arc<CqTable>,
    ) -> Result<Arc<Self>> {
        let depth = NonZeroU16::new(u16::try_from(max_depth.min(MAX_DEPTH))?).ok_or(EINVAL)?;
        if !depth.is_power_of_two() {
            return Err(EINVAL);
        }
        let entries = Coherent::zeroed_slice(dev, depth.get().into(), GFP_KERNEL)?;
        let base = entries.dma_address();
        // `efa_admin_create_eq_cmd`: depth, MSI-X vector, entry size in words; the ring; the
        // events.
        let mut command: Entry = [0; 16];
        command[1] = u32::from(depth.get()) | (u32::from(vector) << 16) | (4 << 24);
        put_u64(&mut command, 2, base);
        command[4] = COMPLETION_EVENTS;
        let eqn = admin.execute(regs, CREATE_EQ, command)?[2] as u16;
        Arc::pin_init(
            pin_init!(Self {
                eqn,
                depth,
                regs: regs.clone(),
                ring <- new_spinlock_irq!(Ring { entries, head: 0 }),
                cqs: cqs.clone(),
            }),
            GFP_KERNEL,
        )
    }

    /// The queue's number.
    pub(crate) fn eqn(&self) -> u16 {
        self.eqn
    }

    /// Lets the device raise the queue's vector for its next event.
    pub(crate) fn arm(&self) {
        self.regs
            .write_reg(EQ_DB::zeroed().with_eqn(self.eqn).with_arm(true));
    }

    /// Takes the events the device wrote: each completion event runs its CQ's handler. Then arms
    /// the queue again.
    fn poll(&self) {
        let mut ring = self.ring.lock();
        loop {
            let slot = usize::from(ring.head % self.depth);
            let common: u32 = io_read!(ring.entries, [panic: slot][build: 0]);
            if (common & 1 != 0) != phase(ring.head, self.depth.get()) {
                break;
            }
            // The phase is written last: read the event after it.
            dma_mb(Read);
            let event: Eqe = io_project!(ring.entries, [panic: slot]).copy_read();
            ring.head = ring.head.wrapping_add(1);
            if (event[0] >> 1) & 0xff == EVENT_COMPLETION {
                // `efa_admin_comp_event`: the CQ's number. One destroyed meanwhile is not found.
                self.cqs.notify(event[2] & 0xffff);
            }
        }
        drop(ring);
        self.arm();
    }
}

/// The handler of an event queue's vector.
pub(crate) struct EqInterrupt<'bound>(pub(crate) Arc<Eq<'bound>>);

impl Handler for EqInterrupt<'_> {
    fn handle(&self) -> IrqReturn {
        self.0.poll();
        IrqReturn::Handled
    }
}
