// SPDX-License-Identifier: GPL-2.0

//! A bound EFA function: its RDMA device with the handlers of its vectors, and the service that
//! watches the device and brings it back when it fails.
//!
//! efa.ko leaves a failed device as it is until the driver is bound again. braid.ko's service
//! looks at the device every second. A device that left an admin command unanswered, reported a
//! fatal error or sent no keep-alive for [`KEEP_ALIVE_TIMEOUT`] is given up on and reset at once
//! (it stops using the memory of its users' queues and regions), and its users are told
//! (`IB_EVENT_DEVICE_FATAL` and `IB_EVENT_PORT_ERR`). A period later, so that the events reach
//! processes reading them, the RDMA device is unregistered, which disassociates the processes that
//! still hold it, and a new one is brought up on the function; until that works the service tries
//! again every period, unless the function is gone (its registers read all ones: the card was
//! removed), which is left down until the driver is bound again.

#![forbid(unsafe_code)]

use kernel::{
    device::Bound,
    io::Io,
    new_mutex, pci,
    prelude::*,
    sync::{Arc, Mutex},
    time::{Delta, Instant, Monotonic},
};

use super::{eq::EqInterrupt, verbs::EfaIb, EfaDevice, EventInterrupt, Regs};
use crate::{
    com::aenq::KEEP_ALIVE_TIMEOUT,
    efa_abi,
    kapi::{
        ib,
        irq::{self, Vectors},
        work::{Periodic, Task},
    },
    regs::VERSION,
};

/// How often the service looks at the device.
const SERVICE_PERIOD: Delta = Delta::from_millis(1000);

/// A working RDMA device and the handlers of its vectors, dropped in the order of the fields.
struct Live<'bound> {
    _events_irq: Pin<KBox<irq::Registration<'bound, EventInterrupt<'bound>>>>,
    _eq_irqs: KVec<Pin<KBox<irq::Registration<'bound, EqInterrupt<'bound>>>>>,
    /// Unregistering it ends every user context, then resets the device.
    ib: ib::Registration<EfaIb<'bound>>,
}

impl<'bound> Live<'bound> {
    /// Resets the device, brings it up and registers an RDMA device on it.
    fn bring_up(
        pdev: &'bound pci::Device<Bound>,
        regs: &Arc<Regs<'bound>>,
        vectors: &Arc<Vectors<'bound>>,
    ) -> Result<Self> {
        let (events, a, eq_count, device) = EfaDevice::probe(pdev, regs.clone(), vectors.len())?;
        let ib = ib::Registration::new_efa(
            pdev.as_ref(),
            c"braid_%d",
            efa_abi::UVERBS_ABI_VERSION,
            ib::Config {
                node_guid: a.guid,
                comp_vectors: u32::try_from(eq_count)?,
            },
            EfaIb::new(device),
        )?;
        let events_irq =
            irq::Registration::new(vectors, 0, c"braid-efa-mgmnt", EventInterrupt::new(&events))?;
        let dev = &ib.device().data().dev;
        dev.enable_interrupt();
        let mut eq_irqs = KVec::with_capacity(dev.eqs.len(), GFP_KERNEL)?;
        for (i, eq) in dev.eqs.iter().enumerate() {
            eq_irqs.push(
                irq::Registration::new(vectors, i + 1, c"braid-efa-comp", EqInterrupt(eq.clone()))?,
                GFP_KERNEL,
            )?;
            eq.arm();
        }
        let g = &a.gid;
        dev_info!(
            pdev,
            "EFA RDMA device registered: GID {:02x}{:02x}:{:02x}{:02x}:..:{:02x}{:02x}, MTU {}, \
             {} QPs, {} CQs, {} MRs, {} PDs, {} AHs, capabilities {:#x}, device version {:#x}, \
             doorbells in BAR{}, {}/{}-bit physical/virtual addresses, {} completion event \
             queues\n",
            g[0],
            g[1],
            g[2],
            g[3],
            g[14],
            g[15],
            a.mtu,
            a.max_qp,
            a.max_cq,
            a.max_mr,
            a.max_pd,
            a.max_ah,
            a.device_caps,
            a.device_version,
            a.db_bar,
            a.phys_addr_width,
            a.virt_addr_width,
            eq_count,
        );
        Ok(Self {
            _events_irq: events_irq,
            _eq_irqs: eq_irqs,
            ib,
        })
    }

    fn device(&self) -> &EfaDevice<'bound> {
        &self.ib.device().data().dev
    }
}

/// What the service knows of the device.
enum Health {
    /// Working; keep-alives taken, and when the count last moved.
    Working {
        keep_alives: u64,
        since: Instant<Monotonic>,
    },
    /// Given up on and reset, its users told; torn down at the next run.
    Failed,
    /// Down: bringing it up again failed (logged once), tried again every run.
    Down,
    /// The function is gone: nothing more is tried.
    Gone,
}

/// The RDMA device of a function, while it has one.
struct State<'bound> {
    live: Option<Live<'bound>>,
    health: Health,
}

/// The service task of an EFA function.
struct Service<'bound> {
    pdev: &'bound pci::Device<Bound>,
    regs: Arc<Regs<'bound>>,
    vectors: Arc<Vectors<'bound>>,
    state: Pin<KBox<Mutex<State<'bound>>>>,
}

impl Task for Service<'_> {
    fn run(&self) {
        let mut guard = self.state.lock();
        let state = &mut *guard;
        match (&mut state.health, &state.live) {
            (Health::Working { keep_alives, since }, Some(live)) => {
                let dev = live.device();
                if dev.keep_alives() != *keep_alives {
                    *keep_alives = dev.keep_alives();
                    *since = Instant::now();
                }
                let Some((why, reason)) = dev.failure(since.elapsed() <= KEEP_ALIVE_TIMEOUT) else {
                    return;
                };
                dev_err!(
                    self.pdev,
                    "EFA device failed ({}): reset, its users told; recovering\n",
                    why
                );
                dev.fail(reason);
                live.ib.dispatch(ib::Event::DeviceFatal);
                live.ib.dispatch(ib::Event::PortErr(1));
                state.health = Health::Failed;
                return;
            }
            (Health::Failed, _) => {
                // Disassociates the processes still holding it.
                state.live = None;
            }
            (Health::Gone, _) => return,
            _ => {}
        }
        match Live::bring_up(self.pdev, &self.regs, &self.vectors) {
            Ok(live) => {
                dev_info!(self.pdev, "EFA device recovered\n");
                state.live = Some(live);
                state.health = Health::Working {
                    keep_alives: 0,
                    since: Instant::now(),
                };
            }
            Err(_) if self.regs.read(VERSION).into_raw() == u32::MAX => {
                dev_err!(
                    self.pdev,
                    "EFA function does not answer (its registers read all ones): left down until \
                     the driver is bound again\n"
                );
                state.health = Health::Gone;
            }
            Err(err) => {
                if !matches!(state.health, Health::Down) {
                    dev_err!(
                        self.pdev,
                        "EFA device did not come back ({:?}): trying again every second\n",
                        err
                    );
                }
                state.health = Health::Down;
            }
        }
    }
}

/// A bound EFA function: its RDMA device, watched and recovered by a service task every
/// [`SERVICE_PERIOD`]; dropping it stops the service, then unregisters the device (which ends
/// every user context) and resets it.
pub(crate) struct EfaFunction<'bound> {
    _service: Pin<KBox<Periodic<Service<'bound>>>>,
}

impl<'bound> EfaFunction<'bound> {
    /// Brings the function's device up, registers its RDMA device and starts the service; fails
    /// (and leaves the device reset) if the first bring-up does.
    pub(crate) fn new(
        pdev: &'bound pci::Device<Bound>,
        regs: &Arc<Regs<'bound>>,
        vectors: &Arc<Vectors<'bound>>,
    ) -> Result<Self> {
        let live = Live::bring_up(pdev, regs, vectors)?;
        let state = KBox::pin_init(
            new_mutex!(State {
                live: Some(live),
                health: Health::Working {
                    keep_alives: 0,
                    since: Instant::now(),
                },
            }),
            GFP_KERNEL,
        )?;
        let service = Service {
            pdev,
            regs: regs.clone(),
            vectors: vectors.clone(),
            state,
        };
        let periodic = KBox::pin_init(Periodic::new(SERVICE_PERIOD, service), GFP_KERNEL)?;
        periodic.start();
        Ok(Self { _service: periodic })
    }
}
