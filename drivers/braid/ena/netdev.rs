// SPDX-License-Identifier: GPL-2.0

//! The ENA function as a network device: one transmit and one receive queue per queue pair, each
//! pair on its own MSI-X vector and NAPI context, and the netdev callbacks.

#![forbid(unsafe_code)]

use core::num::{NonZeroU32, NonZeroU64};

use kernel::{
    device::{Bound, Core},
    io::Io,
    irq::{Handler, IrqReturn},
    new_mutex, new_spinlock_irq, pci,
    prelude::*,
    sync::{
        atomic::{Atomic, Relaxed},
        Arc, Mutex, SpinLockIrq,
    },
    time::{Delta, Instant, Monotonic},
};

use super::{
    io::{combined, intr, l4, rx_cdesc, tx_desc, Cq, Direction, Placement, Sq},
    offload,
    regs::{RESET_GENERIC, RESET_KEEP_ALIVE_TO},
    rx::{Received, RxRing},
    tx::{TxOffload, TxRing},
    EnaDevice, Offloads, Regs, RSS_KEY_LEN, RSS_TABLE_MAX, SRD_INFO_NAMES,
};
use crate::com::aenq::{group, Event, KEEP_ALIVE_TIMEOUT};
use crate::kapi::{
    dim::Dim,
    ethtool::{Channels, Coalesce, Rings, RssSizes, Stats},
    irq::{self, Vectors, Wakeup},
    napi::{Context, Napi, Poll, Scheduler},
    netdev::{
        self, features, online_cpus, with_rtnl, Config, Device, Operations, ServiceInterrupt,
        Stats64, Xmit,
    },
    pci::DeviceExt,
    skb::{SkBuff, TxSkb},
};

/// Most queue pairs braid.ko sets up (the card offers 8).
const MAX_QUEUES: u16 = 8;
/// Largest ring (the card's 1024 descriptors), and the default.
const MAX_DEPTH: u16 = 1024;
/// Smallest ring (as ena.ko).
pub(crate) const MIN_DEPTH: u16 = 256;
/// Largest interrupt delay in device units: 14 bits in the combined doorbell, 15 in the unmask
/// register.
const MAX_RX_DELAY_COMBINED: u32 = 0x3fff;
const MAX_DELAY: u32 = 0x7fff;
/// [`QueuePoll::tx_delay_held`] before the first unmask: no delay the device could hold.
const TX_DELAY_UNKNOWN: u32 = u32::MAX;
/// Interrupt delays until `ethtool -C` says otherwise, in µs: ena.ko's (the receive one applies
/// while DIM is off).
const DEFAULT_RX_DELAY_USECS: u32 = 20;
const DEFAULT_TX_DELAY_USECS: u32 = 64;
/// `ENA_ADMIN_*` capability bit 31: braid's combined CQ doorbell (docs/card.md).
const CAP_COMBINED_DOORBELL: u32 = 1 << 31;
/// Transmit watchdog: 5 s, as the card's hint (in jiffies at HZ=1000 or less, at least 5 s).
const WATCHDOG_JIFFIES: i32 = 5 * 1000;
/// How often the service task takes the device's events and checks its health.
const SERVICE_PERIOD: Delta = Delta::from_millis(1000);

/// Declares a set of event counters with their `ethtool -S` names.
macro_rules! counters {
    ($(#[$meta:meta])* $name:ident { $($(#[$fmeta:meta])* $field:ident: $stat:literal,)* }) => {
        $(#[$meta])*
        struct $name {
            $($(#[$fmeta])* $field: Atomic<u64>,)*
        }

        impl $name {
            fn new() -> Self {
                Self { $($field: Atomic::new(0),)* }
            }

            /// Reports every counter, its name prefixed with `prefix`.
            fn report(&self, stats: &mut Stats<'_>, prefix: core::fmt::Arguments<'_>) {
                $(stats.stat(format_args!("{}{}", prefix, $stat), || self.$field.load(Relaxed));)*
            }
        }
    };
}

counters! {
    /// The counters of one queue pair (`queue_<n>_` in `ethtool -S`, named as ena.ko's).
    QueueStats {
        /// Packets sent.
        tx_packets: "tx_cnt",
        /// Bytes sent.
        tx_bytes: "tx_bytes",
        /// Packets dropped on transmit (unmappable, or refused by the device).
        tx_dropped: "tx_dropped",
        /// Completions naming no packet in flight.
        tx_bad_req_id: "tx_bad_req_id",
        /// Packets received.
        rx_packets: "rx_cnt",
        /// Bytes received.
        rx_bytes: "rx_bytes",
        /// Frames dropped on receive (no memory, broken completions).
        rx_dropped: "rx_dropped",
        /// Completions naming no posted buffer.
        rx_bad_req_id: "rx_bad_req_id",
        /// NAPI polls the context completed (`napi_complete_done` said it is done).
        napi_complete: "tx_napi_comp",
        /// Interrupt unmasks, one MMIO write each, that ended those polls.
        unmask: "tx_unmask_interrupt",
        /// Transmit doorbell writes (one per burst the stack hands over).
        tx_doorbells: "tx_doorbells",
        /// TX CQ head doorbell writes (one per quarter ring of completions).
        tx_cq_head_writes: "tx_cq_head_writes",
    }
}

counters! {
    /// The device's counters (named as ena.ko's where ena.ko has them).
    DeviceStats {
        /// The data path came up (the interface opened, or restarted by a change or a reset).
        interface_up: "interface_up",
        /// The data path went down (the interface closed, or restarted).
        interface_down: "interface_down",
        /// The stack's transmit watchdog fired.
        tx_timeout: "tx_timeout",
        /// The keep-alive watchdog fired.
        wd_expired: "wd_expired",
        /// Device resets to recover, for any reason.
        resets: "device_resets",
        /// Recoveries that did not bring the device back.
        reset_fail: "reset_fail",
    }
}

/// The device queues of one queue pair, as created (destroyed in reverse).
#[derive(Default)]
struct QueueIds {
    tx_cq: Option<Cq>,
    tx_sq: Option<Sq>,
    rx_cq: Option<Cq>,
    rx_sq: Option<Sq>,
}

/// What exists while the interface is up.
struct Up<'bound> {
    /// Dropped first: no interrupt schedules a context after this.
    irqs: KVec<Pin<KBox<irq::Registration<'bound, Scheduler<QueuePoll<'bound>>>>>>,
    napis: KVec<Arc<Napi<QueuePoll<'bound>>>>,
    queues: KVec<QueueIds>,
}

/// What only the RTNL-serialized callbacks and the service task touch.
struct Control<'bound> {
    device: EnaDevice<'bound>,
    up: Option<Up<'bound>>,
    /// When the device last showed it is alive (a keep-alive event, a reset).
    alive: Instant<Monotonic>,
    /// The device did not come back from a reset (it is gone, or broken): as ena.ko does, the
    /// driver stops resetting it and keeps the interface down until it is bound again.
    lost: bool,
    /// The shape of the data path (`ethtool -L/-G`), applied at the next start.
    shape: Shape,
    rss: RssConfig,
}

/// Receive-side scaling as braid.ko keeps it across restarts of the data path.
struct RssConfig {
    /// Entries of the device's indirection table.
    size: usize,
    /// The receive queue (channel) of each entry.
    table: [u16; RSS_TABLE_MAX],
    /// Whether `ethtool -X` chose the table: kept while its queues exist.
    user_table: bool,
    /// The key `ethtool -X hkey` set, given again after every start (a reset loses it).
    user_key: Option<[u8; RSS_KEY_LEN]>,
}

/// Default receive queue of RSS table entry `entry` among `channels`.
///
/// Not `i % n` (ethtool's default): the Toeplitz hash is linear in its input bits, so for flows
/// that differ only in a few source-port bits, bit 0 of the hash, all that `i % 2` looks at, is
/// the same for every flow once in 16 keys. Entry i instead goes to the queue a multiplicative
/// hash of i picks, which depends on all of i's bits.
fn default_rss_queue(entry: usize, channels: NonZeroU64) -> u16 {
    // Fibonacci hashing: the high half of entry * 2^32/phi, reduced to a queue.
    let pick = (u64::from((entry as u32).wrapping_mul(0x9e37_79b9)) >> 16) % channels;
    pick as u16
}

/// How many queue pairs, and how deep.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Shape {
    channels: u16,
    tx_depth: u16,
    rx_depth: u16,
}

/// The ENA network device's private data.
#[pin_data]
pub(crate) struct EnaNet<'bound> {
    pdev: &'bound pci::Device<Bound>,
    regs: Arc<Regs<'bound>>,
    vectors: Arc<Vectors<'bound>>,
    /// Most queue pairs (one MSI-X vector each).
    queues: u16,
    /// Deepest transmit ring (LLQ memory may allow fewer entries than the host rings).
    tx_max_depth: u16,
    /// Queue pairs in use (`Shape::channels` of the running data path), for `ethtool -S`.
    channels: Atomic<u32>,
    /// The unit of the device's interrupt delays in µs; `None`: no moderation.
    delay_resolution: Option<NonZeroU32>,
    /// Interrupt delays in device units (`ethtool -C rx-usecs/tx-usecs`).
    rx_delay: Atomic<u32>,
    tx_delay: Atomic<u32>,
    /// Whether the receive delay adapts to the traffic (DIM), as ena.ko has it by default on a
    /// device that moderates; `rx_delay` then waits for the adaptation to be turned off.
    adaptive_rx: Atomic<bool>,
    /// Whether the receive CQs take braid's combined head-and-unmask doorbell.
    combined: bool,
    #[pin]
    control: Mutex<Control<'bound>>,
    /// The transmit rings, by queue; `None` while down.
    tx: KVec<Pin<KBox<SpinLockIrq<Option<TxRing<'bound>>>>>>,
    stats: KVec<QueueStats>,
    /// The device's own drop counters, from its last keep-alive event.
    device_rx_drops: Atomic<u64>,
    device_tx_drops: Atomic<u64>,
    counters: DeviceStats,
    /// A data path context saw the device misbehave: the service task resets it.
    reset_requested: Atomic<bool>,
}

impl<'bound> EnaNet<'bound> {
    /// Registers the network device of an ENA function that [`EnaDevice::probe`] brought up.
    pub(crate) fn register(
        pdev: &'bound pci::Device<Core<'_>>,
        vectors: Arc<Vectors<'bound>>,
        mut device: EnaDevice<'bound>,
    ) -> Result<netdev::Registration<Self>> {
        let pdev: &'bound pci::Device<Bound> = pdev;
        // Vector 0 is the admin queue's; one more per queue pair.
        let queues = u16::try_from(vectors.len().saturating_sub(1))
            .unwrap_or(MAX_QUEUES)
            .min(MAX_QUEUES)
            .min(u16::try_from(online_cpus()).unwrap_or(MAX_QUEUES));
        if queues == 0 {
            return Err(ENOSPC);
        }
        let mut tx = KVec::with_capacity(queues.into(), GFP_KERNEL)?;
        let mut stats = KVec::with_capacity(queues.into(), GFP_KERNEL)?;
        for _ in 0..queues {
            tx.push(
                KBox::pin_init(new_spinlock_irq!(None), GFP_KERNEL)?,
                GFP_KERNEL,
            )?;
            stats.push(QueueStats::new(), GFP_KERNEL)?;
        }
        let attributes = device.attributes;
        let offloads = device.offloads()?;
        let delay_resolution = device.interrupt_delay_resolution()?;
        let rss = RssConfig {
            size: device.rss_table_size()?,
            table: [0; RSS_TABLE_MAX],
            user_table: false,
            user_key: None,
        };
        let tx_max_depth = device
            .llq()
            .map_or(MAX_DEPTH, |(_, llq)| llq.max_depth.min(MAX_DEPTH));
        // Every queue pair the vectors allow, at the largest ring size.
        let shape = Shape {
            channels: queues,
            tx_depth: tx_max_depth,
            rx_depth: MAX_DEPTH,
        };
        let config = Config {
            tx_queues: queues.into(),
            rx_queues: queues.into(),
            mac: &attributes.mac,
            // The device filters no address (it receives whatever the card's switch sends it),
            // and the switch learns addresses from the frames sent: another address works at once.
            live_mac_change: true,
            max_mtu: attributes.max_mtu,
            features: net_features(&offloads),
            watchdog_timeo: WATCHDOG_JIFFIES,
            service_period: Some(SERVICE_PERIOD),
        };
        let regs = device.regs().clone();
        netdev::Registration::new(
            pdev.as_ref(),
            &config,
            try_pin_init!(Self {
                pdev,
                regs,
                vectors,
                queues,
                tx_max_depth,
                combined: attributes.capabilities & CAP_COMBINED_DOORBELL != 0,
                control <- new_mutex!(Control {
                    device,
                    up: None,
                    alive: Instant::now(),
                    lost: false,
                    shape,
                    rss,
                }),
                channels: Atomic::new(shape.channels.into()),
                delay_resolution,
                rx_delay: Atomic::new(delay_resolution.map_or(0, |u| DEFAULT_RX_DELAY_USECS / u)),
                tx_delay: Atomic::new(delay_resolution.map_or(0, |u| DEFAULT_TX_DELAY_USECS / u)),
                adaptive_rx: Atomic::new(delay_resolution.is_some()),
                tx,
                stats,
                device_rx_drops: Atomic::new(0),
                device_tx_drops: Atomic::new(0),
                counters: DeviceStats::new(),
                reset_requested: Atomic::new(false),
            }? Error),
        )
    }

    /// Number of queue pairs.
    pub(crate) fn queue_pairs(&self) -> u16 {
        self.queues
    }

    /// Has the device signal events and admin completions on the management vector, which a
    /// handler that gives `wakeup` now serves.
    pub(crate) fn enable_admin_interrupt(&self, wakeup: Arc<Wakeup>) {
        self.control.lock().device.enable_admin_interrupt(wakeup);
    }

    /// Creates every queue pair's rings, device queues, NAPI context and interrupt, recording
    /// each in `up` as it comes so that [`Self::stop_queues`] and [`Self::release`] undo a partial
    /// bring-up too.
    fn bring_up(
        &self,
        dev: &Device<Self>,
        device: &mut EnaDevice<'bound>,
        up: &mut Up<'bound>,
        shape: Shape,
    ) -> Result {
        for q in 0..shape.channels {
            let vector = u32::from(q) + 1;
            up.queues.push(QueueIds::default(), GFP_KERNEL)?;
            let Some(ids) = up.queues.last_mut() else {
                return Err(EINVAL);
            };

            let mut tx = TxRing::new(self.pdev.as_ref(), shape.tx_depth, device.llq())?;
            let cq = device.create_cq(tx.completions(), vector, false)?;
            ids.tx_cq = Some(cq);
            let sq = device.create_sq(Direction::Tx, &cq, shape.tx_depth, tx.placement())?;
            ids.tx_sq = Some(sq);
            tx.attach(sq, cq);
            *self.tx[usize::from(q)].lock() = Some(tx);

            let mut rx = RxRing::new(self.pdev.as_ref(), shape.rx_depth)?;
            let cq = device.create_cq(rx.completions(), vector, self.combined)?;
            ids.rx_cq = Some(cq);
            let placement = Placement::Host(rx.descriptors_address());
            let sq = device.create_sq(Direction::Rx, &cq, shape.rx_depth, placement)?;
            ids.rx_sq = Some(sq);
            rx.cq = Some(cq);
            rx.sq = Some(sq);
            if rx.refill(&self.regs) == 0 {
                return Err(ENOMEM);
            }

            let poll = QueuePoll {
                qid: q,
                rx_cq: cq,
                dim: KBox::pin_init(Dim::new(), GFP_KERNEL)?,
                tx_delay_held: Atomic::new(TX_DELAY_UNKNOWN),
                _rx: core::marker::PhantomData,
            };
            let napi = Arc::pin_init(Napi::new(dev, poll, rx), GFP_KERNEL)?;
            up.napis.push(napi.clone(), GFP_KERNEL)?;
            let irq = irq::Registration::new(
                &self.vectors,
                vector as usize,
                c"braid-ena",
                Scheduler(napi),
            )?;
            up.irqs.push(irq, GFP_KERNEL)?;
        }
        Ok(())
    }

    /// Spreads flows over the RX queues of `up` (the device starts with every RSS table entry on
    /// the first): the table `ethtool -X` set while its queues all exist, else the default one;
    /// and the key `ethtool -X` set, if it did.
    fn spread_flows(
        device: &mut EnaDevice<'bound>,
        up: &Up<'bound>,
        rss: &mut RssConfig,
    ) -> Result {
        let channels = NonZeroU64::new(up.queues.len() as u64).ok_or(EINVAL)?;
        let size = rss.size;
        if !rss.user_table
            || rss.table[..size]
                .iter()
                .any(|&q| u64::from(q) >= channels.get())
        {
            rss.user_table = false;
            for (entry, q) in rss.table[..size].iter_mut().enumerate() {
                *q = default_rss_queue(entry, channels);
            }
        }
        Self::program_rss_table(device, up, rss)?;
        match &rss.user_key {
            Some(key) => device.set_rss_key(key),
            None => Ok(()),
        }
    }

    /// Gives the device `rss`'s table, as the RX submission queues of `up`.
    fn program_rss_table(
        device: &mut EnaDevice<'bound>,
        up: &Up<'bound>,
        rss: &RssConfig,
    ) -> Result {
        let mut sqs = [0u16; RSS_TABLE_MAX];
        for (sq, &q) in sqs.iter_mut().zip(&rss.table[..rss.size]) {
            let ids = up.queues.get(usize::from(q)).ok_or(EINVAL)?;
            *sq = ids.rx_sq.ok_or(EINVAL)?.idx;
        }
        device.set_rss_table(&sqs[..rss.size])
    }

    /// Brings the data path up: queues, contexts, interrupts, carrier.
    fn start(&self, dev: &Device<Self>, control: &mut Control<'bound>) -> Result {
        control.device.set_mtu(dev.mtu())?;
        let shape = control.shape;
        dev.set_real_num_queues(shape.channels.into(), shape.channels.into())?;
        self.channels.store(shape.channels.into(), Relaxed);
        let mut up = Up {
            irqs: KVec::new(),
            napis: KVec::new(),
            queues: KVec::new(),
        };
        let brought_up = self
            .bring_up(dev, &mut control.device, &mut up, shape)
            .and_then(|()| Self::spread_flows(&mut control.device, &up, &mut control.rss));
        if let Err(e) = brought_up {
            let stopped = Self::stop_queues(&mut control.device, &up);
            self.release(dev, &mut control.device, up, stopped);
            return Err(e);
        }
        for napi in &up.napis {
            napi.enable();
            // The first poll unmasks the vector.
            napi.schedule();
        }
        if control.device.link_up != Some(false) {
            dev.carrier_on();
        }
        dev.tx_wake_all();
        control.up = Some(up);
        self.counters.interface_up.add(1, Relaxed);
        Ok(())
    }

    /// Stops the data path of `up` and destroys its device queues, so that the device stops
    /// touching the rings. Returns whether every queue was destroyed.
    fn stop_queues(device: &mut EnaDevice<'bound>, up: &Up<'bound>) -> bool {
        for napi in &up.napis {
            napi.disable();
        }
        let mut stopped = true;
        for ids in up.queues.iter().rev() {
            let destroyed = [
                ids.rx_sq.map(|sq| device.destroy_sq(&sq)),
                ids.rx_cq.map(|cq| device.destroy_cq(&cq)),
                ids.tx_sq.map(|sq| device.destroy_sq(&sq)),
                ids.tx_cq.map(|cq| device.destroy_cq(&cq)),
            ];
            stopped &= destroyed.iter().flatten().all(Result::is_ok);
        }
        stopped
    }

    /// Frees what `up` holds (interrupts, contexts, rings, buffers) once the device no longer
    /// touches it: `stopped` says its queues are gone; if not, a reset stops them, and if even
    /// that fails (the device is broken or gone), bus mastering goes off so that it cannot.
    /// (Leaking the memory instead leaked the contexts' references to the net device too, and
    /// unregistering it then waited for ever.)
    fn release(
        &self,
        dev: &Device<Self>,
        device: &mut EnaDevice<'bound>,
        up: Up<'bound>,
        stopped: bool,
    ) {
        dev.tx_stop_all();
        for napi in &up.napis {
            napi.disable();
        }
        if !stopped && device.reset_and_restart(RESET_GENERIC).is_err() {
            dev_err!(
                self.pdev,
                "ENA device does not stop its queues: turning bus mastering off\n"
            );
            self.pdev.clear_master();
        }
        drop(up);
        for (q, slot) in self.tx.iter().enumerate() {
            // Freed outside the lock: coherent memory is not freed with interrupts off.
            let ring = slot.lock().take();
            drop(ring);
            dev.tx_reset(q as u16);
        }
    }

    /// Applies a new shape: the data path, if up, is taken down and brought up again with it
    /// (under the RTNL lock).
    fn reshape(&self, dev: &Device<Self>, shape: Shape) -> Result {
        let mut control = self.control.lock();
        let control = &mut *control;
        if control.shape == shape {
            return Ok(());
        }
        control.shape = shape;
        if let Some(up) = control.up.take() {
            let stopped = Self::stop_queues(&mut control.device, &up);
            self.release(dev, &mut control.device, up, stopped);
            self.counters.interface_down.add(1, Relaxed);
            self.start(dev, control)?;
        }
        Ok(())
    }

    /// Resets the device (its queues go with it), frees the data path and brings it back as it
    /// was (`ena_fw_reset_device`). Called with the RTNL lock held.
    fn recover(&self, dev: &Device<Self>, control: &mut Control<'bound>, reason: u32, why: &str) {
        dev_warn!(self.pdev, "ENA device reset: {}\n", why);
        self.counters.resets.add(1, Relaxed);
        dev.carrier_off();
        let up = control.up.take();
        let restarted = control.device.reset_and_restart(reason);
        let was_up = up.is_some();
        if let Some(up) = up {
            self.release(dev, &mut control.device, up, restarted.is_ok());
            self.counters.interface_down.add(1, Relaxed);
        }
        control.alive = Instant::now();
        if let Err(e) = restarted {
            self.counters.reset_fail.add(1, Relaxed);
            control.lost = true;
            dev_err!(
                self.pdev,
                "ENA device did not come back from reset: {:?}; giving up on it (bind the driver again to retry)\n",
                e
            );
            return;
        }
        if was_up {
            if let Err(e) = self.start(dev, control) {
                self.counters.reset_fail.add(1, Relaxed);
                dev_err!(self.pdev, "ENA data path did not come back: {:?}\n", e);
                return;
            }
        }
        dev_info!(self.pdev, "ENA device reset done\n");
    }
}

impl<'bound> Operations for EnaNet<'bound> {
    const DRIVER_NAME: &'static CStr = c"braid";

    fn open(dev: &Device<Self>) -> Result {
        let this = dev.data();
        let mut control = this.control.lock();
        if control.up.is_some() {
            return Ok(());
        }
        if control.lost {
            return Err(ENODEV);
        }
        this.start(dev, &mut control)
    }

    fn stop(dev: &Device<Self>) {
        let this = dev.data();
        let mut control = this.control.lock();
        let control = &mut *control;
        if let Some(up) = control.up.take() {
            dev.carrier_off();
            let stopped = Self::stop_queues(&mut control.device, &up);
            this.release(dev, &mut control.device, up, stopped);
            this.counters.interface_down.add(1, Relaxed);
        }
    }

    fn tx_timeout(dev: &Device<Self>, _queue: u32) {
        let this = dev.data();
        this.counters.tx_timeout.add(1, Relaxed);
        this.reset_requested.store(true, Relaxed);
    }

    fn ethtool_stats(dev: &Device<Self>, stats: &mut Stats<'_>) {
        let this = dev.data();
        this.counters.report(stats, format_args!(""));
        let admin = this.control.lock().device.admin_stats();
        stats.stat(format_args!("ena_admin_q_submitted_cmd"), || {
            admin.submitted
        });
        stats.stat(format_args!("ena_admin_q_completed_cmd"), || {
            admin.completed
        });
        stats.stat(format_args!("ena_admin_q_no_completion"), || {
            admin.no_completion
        });
        // The device's traffic over SRD, when it offers the statistics: asked at every pass (the
        // count and the names follow the capability alone), zeros when the command fails, as in
        // ena.ko, or when the device is gone.
        let srd = {
            let mut control = this.control.lock();
            let lost = control.lost;
            control.device.has_srd_info().then(|| {
                if lost {
                    Default::default()
                } else {
                    control.device.srd_info().unwrap_or_default()
                }
            })
        };
        if let Some(values) = srd {
            for (name, value) in SRD_INFO_NAMES.iter().zip(values) {
                stats.stat(format_args!("{}", name), || value);
            }
        }
        let channels = this.channels.load(Relaxed) as usize;
        for (q, s) in this.stats.iter().enumerate().take(channels) {
            s.report(stats, format_args!("queue_{}_", q));
        }
    }

    fn rings(dev: &Device<Self>) -> Option<Rings> {
        let shape = dev.data().control.lock().shape;
        Some(Rings {
            rx_max: MAX_DEPTH.into(),
            tx_max: dev.data().tx_max_depth.into(),
            rx: shape.rx_depth.into(),
            tx: shape.tx_depth.into(),
        })
    }

    fn set_rings(dev: &Device<Self>, rx: u32, tx: u32) -> Result {
        let this = dev.data();
        let shape = this.control.lock().shape;
        this.reshape(
            dev,
            Shape {
                rx_depth: ring_depth(rx, MAX_DEPTH)?,
                tx_depth: ring_depth(tx, this.tx_max_depth)?,
                ..shape
            },
        )
    }

    fn rss_sizes(dev: &Device<Self>) -> Option<RssSizes> {
        Some(RssSizes {
            table: dev.data().control.lock().rss.size as u32,
            key: RSS_KEY_LEN as u32,
        })
    }

    fn rss(dev: &Device<Self>, table: Option<&mut [u32]>, key: Option<&mut [u8]>) -> Result {
        let mut control = dev.data().control.lock();
        let control = &mut *control;
        if let Some(table) = table {
            let size = control.rss.size;
            // While up, what the device holds, translated back to channels; else what the next
            // start gives it.
            match &control.up {
                Some(up) => {
                    let sqs = control.device.rss_table(size)?;
                    for (t, sq) in table.iter_mut().zip(&sqs[..size]) {
                        let q = up
                            .queues
                            .iter()
                            .position(|ids| ids.rx_sq.is_some_and(|rx| rx.idx == *sq))
                            .ok_or(EIO)?;
                        *t = q as u32;
                    }
                }
                None => {
                    for (t, &q) in table.iter_mut().zip(&control.rss.table[..size]) {
                        *t = q.into();
                    }
                }
            }
        }
        if let Some(key) = key {
            let device_key = control.device.rss_key()?;
            key.copy_from_slice(device_key.get(..key.len()).ok_or(EINVAL)?);
        }
        Ok(())
    }

    fn set_rss(dev: &Device<Self>, table: Option<&[u32]>, key: Option<&[u8]>) -> Result {
        let mut control = dev.data().control.lock();
        let control = &mut *control;
        if let Some(key) = key {
            let key: [u8; RSS_KEY_LEN] = key.try_into().map_err(|_| EINVAL)?;
            if control.up.is_some() {
                control.device.set_rss_key(&key)?;
            }
            control.rss.user_key = Some(key);
        }
        if let Some(table) = table {
            let size = control.rss.size;
            if table.len() != size
                || table
                    .iter()
                    .any(|&q| q >= u32::from(control.shape.channels))
            {
                return Err(EINVAL);
            }
            let old = control.rss.table;
            for (t, &q) in control.rss.table.iter_mut().zip(table) {
                *t = q as u16;
            }
            if let Some(up) = &control.up {
                if let Err(e) = Self::program_rss_table(&mut control.device, up, &control.rss) {
                    control.rss.table = old;
                    return Err(e);
                }
            }
            control.rss.user_table = true;
        }
        Ok(())
    }

    fn channels(dev: &Device<Self>) -> Option<Channels> {
        let this = dev.data();
        Some(Channels {
            max: this.queues.into(),
            count: this.control.lock().shape.channels.into(),
        })
    }

    fn set_channels(dev: &Device<Self>, count: u32) -> Result {
        let this = dev.data();
        let channels = u16::try_from(count)
            .ok()
            .filter(|&c| (1..=this.queues).contains(&c))
            .ok_or(EINVAL)?;
        let shape = this.control.lock().shape;
        this.reshape(dev, Shape { channels, ..shape })
    }

    fn coalesce(dev: &Device<Self>) -> Option<Coalesce> {
        let this = dev.data();
        let unit = this.delay_resolution?;
        Some(Coalesce {
            adaptive_rx: this.adaptive_rx.load(Relaxed),
            rx_usecs: this.rx_delay.load(Relaxed).saturating_mul(unit.get()),
            tx_usecs: this.tx_delay.load(Relaxed).saturating_mul(unit.get()),
        })
    }

    fn set_coalesce(dev: &Device<Self>, c: Coalesce) -> Result {
        let this = dev.data();
        let unit = this.delay_resolution.ok_or(EOPNOTSUPP)?;
        let (rx, tx) = (c.rx_usecs / unit, c.tx_usecs / unit);
        let max_rx = if this.combined {
            MAX_RX_DELAY_COMBINED
        } else {
            MAX_DELAY
        };
        if rx > max_rx || tx > MAX_DELAY {
            return Err(EINVAL);
        }
        // The next poll's unmask write carries them.
        this.rx_delay.store(rx, Relaxed);
        this.tx_delay.store(tx, Relaxed);
        this.adaptive_rx.store(c.adaptive_rx, Relaxed);
        Ok(())
    }

    fn service(dev: &Device<Self>) {
        let this = dev.data();
        with_rtnl(|| {
            let mut control = this.control.lock();
            let control = &mut *control;
            if control.lost {
                return;
            }
            let (mut link, mut fatal, mut alive) = (None, false, false);
            control.device.poll_events(|event| match event {
                Event::LinkChange { up } => link = Some(up),
                Event::KeepAlive { rx_drops, tx_drops } => {
                    alive = true;
                    this.device_rx_drops.store(rx_drops, Relaxed);
                    this.device_tx_drops.store(tx_drops, Relaxed);
                }
                Event::FatalError => fatal = true,
                Event::Other(_) => {}
            });
            if alive {
                control.alive = Instant::now();
            }
            if let Some(up) = link {
                control.device.link_up = Some(up);
                match (up, control.up.is_some()) {
                    (true, true) => dev.carrier_on(),
                    (false, _) => dev.carrier_off(),
                    (true, false) => {}
                }
            }
            if fatal || control.device.failed() {
                this.recover(dev, control, RESET_GENERIC, "fatal error");
            } else if control.device.event_groups & group::KEEP_ALIVE != 0
                && control.alive.elapsed() > KEEP_ALIVE_TIMEOUT
            {
                this.counters.wd_expired.add(1, Relaxed);
                this.recover(dev, control, RESET_KEEP_ALIVE_TO, "keep-alive timeout");
            } else if this.reset_requested.xchg(false, Relaxed) {
                this.recover(dev, control, RESET_GENERIC, "data path failure");
            }
        });
    }

    fn start_xmit(dev: &Device<Self>, skb: SkBuff) -> Xmit {
        let this = dev.data();
        let q = skb.queue();
        let (Some(slot), Some(stats)) =
            (this.tx.get(usize::from(q)), this.stats.get(usize::from(q)))
        else {
            return Xmit::Done;
        };
        let mut guard = slot.lock();
        let Some(tx) = (*guard).as_mut() else {
            stats.tx_dropped.add(1, Relaxed);
            return Xmit::Done;
        };
        if !tx.has_room() {
            dev.tx_stop(q);
            if tx.ring_doorbell(&this.regs) {
                stats.tx_doorbells.add(1, Relaxed);
            }
            return Xmit::Busy(skb);
        }
        let len = skb.len();
        let offload = tx_offload(&skb);
        let pushed = TxSkb::map(this.pdev.as_ref(), skb, GFP_ATOMIC)
            .map_err(drop)
            .and_then(|mapped| tx.push(mapped, offload).map_err(drop));
        match pushed {
            Ok(()) => {
                dev.tx_sent(q, len);
                if !tx.has_room() {
                    dev.tx_stop(q);
                }
            }
            Err(()) => stats.tx_dropped.add(1, Relaxed),
        }
        // One doorbell for a burst: the stack says when more packets follow at once.
        if (!dev.xmit_more() || dev.tx_stopped(q)) && tx.ring_doorbell(&this.regs) {
            stats.tx_doorbells.add(1, Relaxed);
        }
        Xmit::Done
    }

    fn get_stats64(dev: &Device<Self>, total: &mut Stats64) {
        for s in &dev.data().stats {
            total.tx_packets += s.tx_packets.load(Relaxed);
            total.tx_bytes += s.tx_bytes.load(Relaxed);
            total.tx_dropped += s.tx_dropped.load(Relaxed);
            total.rx_packets += s.rx_packets.load(Relaxed);
            total.rx_bytes += s.rx_bytes.load(Relaxed);
            total.rx_dropped += s.rx_dropped.load(Relaxed);
        }
        let this = dev.data();
        total.rx_dropped += this.device_rx_drops.load(Relaxed);
        total.tx_dropped += this.device_tx_drops.load(Relaxed);
    }

    fn change_mtu(dev: &Device<Self>, mtu: u32) -> Result {
        // Receive buffers are pages chained per frame, so any MTU fits the posted ones.
        dev.data().control.lock().device.set_mtu(mtu)
    }
}

/// The netdev features the device's offloads allow.
fn net_features(o: &Offloads) -> u64 {
    // The device hashes every frame it steers (RSS).
    let mut f = features::HIGHDMA | features::RXHASH;
    if o.rx & offload::RX_L4_CSUM != 0 {
        f |= features::RXCSUM;
    }
    let csum4 = o.tx & offload::TX_L4_IPV4_CSUM != 0;
    let csum6 = o.tx & offload::TX_L4_IPV6_CSUM != 0;
    if csum4 {
        f |= features::IP_CSUM;
    }
    if csum6 {
        f |= features::IPV6_CSUM;
    }
    if csum4 || csum6 {
        // Gathering needs checksum offload (the stack drops SG without it).
        f |= features::SG;
        if csum4 && o.tx & offload::TSO_IPV4 != 0 {
            f |= features::TSO;
        }
        if csum6 && o.tx & offload::TSO_IPV6 != 0 {
            f |= features::TSO6;
        }
        if o.tx & offload::TSO_ECN != 0 && f & (features::TSO | features::TSO6) != 0 {
            f |= features::TSO_ECN;
        }
    }
    f
}

/// A ring size as `ethtool -G` asks for it, made what the rings take: at least 256 (ena.ko's
/// minimum), rounded down to a power of two, at most `max` (itself at least 256).
fn ring_depth(asked: u32, max: u16) -> Result<u16> {
    let n = u16::try_from(asked.clamp(MIN_DEPTH.into(), max.into())).map_err(|_| EINVAL)?;
    Ok(1 << n.ilog2())
}

/// `ETH_P_IP` and `ETH_P_IPV6`.
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
/// `IPPROTO_TCP` and `IPPROTO_UDP`.
const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;

/// What the device is to do for a packet: checksums and segmentation as the stack asks
/// (`ena_tx_csum` in ena.ko). The device finds the headers itself; the protocol indexes tell it
/// what they are.
fn tx_offload(skb: &SkBuff) -> TxOffload {
    let l3 = match skb.l3_protocol() {
        ETH_P_IP => tx_desc::L3_IPV4,
        ETH_P_IPV6 => tx_desc::L3_IPV6,
        _ => 0,
    };
    let l4 = match skb.ip_protocol() {
        IPPROTO_TCP => l4::TCP,
        IPPROTO_UDP => l4::UDP,
        _ => 0,
    };
    let mut meta_ctrl = l3 | (l4 << tx_desc::L4_PROTO_SHIFT);
    let mss = skb.gso_size();
    if mss > 0 {
        meta_ctrl |= tx_desc::TSO_EN | tx_desc::L4_CSUM_EN;
        if l3 == tx_desc::L3_IPV4 {
            meta_ctrl |= tx_desc::L3_CSUM_EN;
        }
    } else if skb.checksum_partial() {
        meta_ctrl |= tx_desc::L4_CSUM_EN | tx_desc::L4_CSUM_PARTIAL;
    }
    TxOffload {
        meta_ctrl,
        mss: u16::try_from(mss).ok().filter(|&m| m > 0),
    }
}

/// The NAPI context of one queue pair.
pub(crate) struct QueuePoll<'bound> {
    qid: u16,
    rx_cq: Cq,
    /// The receive delay's adaptation to the traffic.
    dim: Pin<KBox<Dim>>,
    /// The TX delay the device holds for the vector: the one of the last unmask-register write,
    /// which the combined doorbell of the receive CQ leaves as it is.
    tx_delay_held: Atomic<u32>,
    // The receive ring is the context's state; the transmit ring is in `EnaNet::tx`.
    _rx: core::marker::PhantomData<&'bound ()>,
}

impl<'bound> QueuePoll<'bound> {
    /// Hands a frame to the stack with what the device found out about it.
    fn deliver(&self, dev: &Device<EnaNet<'bound>>, ctx: &Context, frame: super::rx::Frame) {
        let stats = &dev.data().stats[usize::from(self.qid)];
        let mut skb = frame.skb;
        stats.rx_packets.add(1, Relaxed);
        stats.rx_bytes.add(u64::from(skb.len()), Relaxed);
        let status = frame.status;
        let l4 = (status >> rx_cdesc::L4_PROTO_SHIFT) & rx_cdesc::L4_PROTO_MASK;
        let features = dev.features();
        if features & features::RXCSUM != 0
            && status & rx_cdesc::L4_CSUM_CHECKED != 0
            && status & (rx_cdesc::L4_CSUM_ERR | rx_cdesc::L3_CSUM_ERR) == 0
            && status & rx_cdesc::IPV4_FRAG == 0
        {
            skb.set_checksum_unnecessary();
        }
        if features & features::RXHASH != 0 && (l4 == l4::TCP || l4 == l4::UDP) {
            skb.set_l4_hash(frame.hash);
        }
        skb.set_rx_queue(self.qid);
        skb.set_protocol(dev);
        ctx.gro_receive(skb);
    }

    /// Ends a poll with one write: the receive CQ's head, its interrupt delay (DIM's, when it
    /// adapts) and the vector's unmask on the combined doorbell, which leaves the vector's TX
    /// delay as the device holds it. The unmask register (both directions' delays) instead on a
    /// device without the combined doorbell, and whenever the TX delay is not the one the device
    /// holds: at the first poll of the queue, and after `ethtool -C tx-usecs`.
    fn unmask(&self, this: &EnaNet<'_>, head: u16) {
        let rx = match this.delay_resolution {
            Some(unit) if this.adaptive_rx.load(Relaxed) => self.dim.usecs() / unit,
            _ => this.rx_delay.load(Relaxed),
        };
        let tx = this.tx_delay.load(Relaxed).min(MAX_DELAY);
        let (value, offset) = match self.rx_cq.head_doorbell {
            Some(db) if self.rx_cq.combined && self.tx_delay_held.load(Relaxed) == tx => (
                u32::from(head)
                    | (rx.min(MAX_RX_DELAY_COMBINED) << combined::DELAY_SHIFT)
                    | combined::UNMASK,
                db,
            ),
            _ => {
                // Polls of one context never overlap: nobody else stores it meanwhile.
                self.tx_delay_held.store(tx, Relaxed);
                (
                    rx.min(MAX_DELAY) | (tx << intr::TX_DELAY_SHIFT) | intr::UNMASK,
                    self.rx_cq.unmask,
                )
            }
        };
        let _ = this.regs.try_write32(value, offset);
    }
}

impl<'bound> Poll for QueuePoll<'bound> {
    type Owner = EnaNet<'bound>;
    type State = RxRing<'bound>;

    fn poll(
        &self,
        dev: &Device<EnaNet<'bound>>,
        rx: &mut RxRing<'bound>,
        ctx: &Context,
        budget: u32,
    ) -> u32 {
        let this = dev.data();
        let q = self.qid;
        let stats = &this.stats[usize::from(q)];
        let ring = &this.tx[usize::from(q)];
        // The ring's lock keeps interrupts off: the packets are freed after it is released
        // (NAPI's bulk free may enable bottom halves), a batch at a time.
        loop {
            let Some(mut cleaned) = (*ring.lock()).as_mut().map(|tx| tx.clean(&this.regs)) else {
                break;
            };
            if cleaned.packets > 0 {
                dev.tx_completed(q, cleaned.packets, cleaned.bytes);
                stats
                    .tx_packets
                    .add(u64::from(cleaned.packets - cleaned.errors), Relaxed);
                stats.tx_bytes.add(u64::from(cleaned.bytes), Relaxed);
                stats.tx_dropped.add(u64::from(cleaned.errors), Relaxed);
            }
            if cleaned.head_written {
                stats.tx_cq_head_writes.add(1, Relaxed);
            }
            if cleaned.bogus > 0 {
                stats.tx_bad_req_id.add(u64::from(cleaned.bogus), Relaxed);
                this.reset_requested.store(true, Relaxed);
            }
            cleaned.free(budget);
            if !cleaned.more {
                break;
            }
        }
        // Under the lock, so that start_xmit cannot stop the queue after this looked.
        if let Some(tx) = (*ring.lock()).as_ref() {
            if dev.tx_stopped(q) && tx.has_room() {
                dev.tx_wake(q);
            }
        }
        if budget == 0 {
            // netpoll: transmit cleanup only.
            return 0;
        }
        let mut work = 0;
        while work < budget {
            let Some(received) = rx.receive(ctx) else {
                break;
            };
            work += 1;
            match received {
                Received::Frame(frame) => self.deliver(dev, ctx, frame),
                Received::Dropped { bad_id } => {
                    stats.rx_dropped.add(1, Relaxed);
                    if bad_id {
                        stats.rx_bad_req_id.add(1, Relaxed);
                        this.reset_requested.store(true, Relaxed);
                    }
                }
            }
            if rx.refill_due() {
                rx.refill(&this.regs);
            }
        }
        // As ena.ko: buffers go back in batches of an eighth of the ring, so the device reads
        // descriptors and the doorbell in bulk.
        if rx.refill_due() {
            rx.refill(&this.regs);
        }
        let adaptive = this.adaptive_rx.load(Relaxed);
        if adaptive {
            self.dim.received(work);
        }
        if work < budget && ctx.complete_done(work) {
            // As ena.ko: one DIM event per interrupt that received something.
            if adaptive {
                self.dim
                    .sample(stats.rx_packets.load(Relaxed), stats.rx_bytes.load(Relaxed));
            }
            stats.napi_complete.add(1, Relaxed);
            self.unmask(this, rx.cq_head());
            stats.unmask.add(1, Relaxed);
        }
        work
    }
}

/// The handler of the management vector (0): wakes a thread waiting for an admin completion, and
/// runs the service task at once for the events.
pub(crate) struct MgmtInterrupt<'bound> {
    service: ServiceInterrupt<EnaNet<'bound>>,
    admin: Arc<Wakeup>,
}

impl<'bound> MgmtInterrupt<'bound> {
    /// The handler that runs `service` and gives `admin`.
    pub(crate) fn new(service: ServiceInterrupt<EnaNet<'bound>>, admin: Arc<Wakeup>) -> Self {
        Self { service, admin }
    }
}

impl Handler for MgmtInterrupt<'_> {
    fn handle(&self) -> IrqReturn {
        self.admin.wake();
        self.service.handle()
    }
}
