// SPDX-License-Identifier: GPL-2.0

//! The ENA function's device protocol: reset handshake, admin queue, feature negotiation
//! (`ena_com.c` in the upstream driver is the specification).

#![forbid(unsafe_code)]

pub(crate) mod io;
pub(crate) mod llq;
pub(crate) mod netdev;
pub(crate) mod regs;
pub(crate) mod ring;
pub(crate) mod rx;
pub(crate) mod tx;

use core::num::NonZeroU32;

use kernel::{
    device::{Bound, Core},
    dma::Coherent,
    io::{io_project, Io},
    pci,
    prelude::*,
    sync::Arc,
    time::{delay::fsleep, Delta, Instant, Monotonic},
};

use self::llq::{LlqLayout, LLQ};
use crate::com::{
    admin::{self, AdminQueue, Entry},
    aenq::{group, Aenq, Event, HeadDoorbell},
    feature_command, reset,
};
use crate::kapi::{irq::Wakeup, pci::WcBar};
use crate::regs::{DEV_STS, INTR_MASK, REG_PAGE_SIZE};

/// `ENA_ADMIN_GET_FEATURE`.
const GET_FEATURE: u8 = 8;
/// `ENA_ADMIN_SET_FEATURE`.
const SET_FEATURE: u8 = 9;
/// `ENA_ADMIN_DEVICE_ATTRIBUTES`.
const DEVICE_ATTRIBUTES: u32 = 1;
/// `ENA_ADMIN_STATELESS_OFFLOAD_CONFIG`.
const STATELESS_OFFLOAD_CONFIG: u32 = 11;
/// `ENA_ADMIN_RSS_HASH_FUNCTION`.
const RSS_HASH_FUNCTION: u32 = 10;
/// `ENA_ADMIN_RSS_INDIRECTION_TABLE_CONFIG`.
const RSS_INDIRECTION_TABLE_CONFIG: u32 = 12;
/// `ENA_ADMIN_TOEPLITZ`, a bit number in the function masks.
const TOEPLITZ: u32 = 1;
/// Most entries of the RSS indirection table braid.ko handles (ena.ko's 2^7).
pub(crate) const RSS_TABLE_MAX: usize = 128;
/// Bytes of the Toeplitz key (`ENA_HASH_KEY_SIZE`).
pub(crate) const RSS_KEY_LEN: usize = 40;
/// Bytes of `ena_admin_feature_rss_flow_hash_control`.
const RSS_KEY_STRUCT: usize = 8 + RSS_KEY_LEN;
/// Bytes of the buffer for commands with indirect data (the largest: a 128-entry RSS table).
const CONTROL_BUFFER_LEN: usize = RSS_TABLE_MAX * 4;
/// `ENA_ADMIN_INTERRUPT_MODERATION`.
const INTERRUPT_MODERATION: u32 = 20;
/// `ENA_ADMIN_MTU`.
const MTU: u32 = 14;
/// `ENA_ADMIN_AENQ_CONFIG`.
const AENQ_CONFIG: u32 = 26;
/// The event groups braid.ko handles.
const WANTED_GROUPS: u32 = group::LINK_CHANGE | group::FATAL_ERROR | group::KEEP_ALIVE;
/// How long probe waits for the device's first link event.
const LINK_EVENT_WAIT: Delta = Delta::from_millis(1000);
/// `ENA_ADMIN_GET_STATS`.
const GET_STATS: u8 = 11;
/// `ENA_ADMIN_GET_STATS_TYPE_ENA_SRD`, in byte 16 of a GET_STATS command (word 4's low byte; the
/// scope, byte 17, stays 0 as ena.ko leaves it).
const STATS_TYPE_ENA_SRD: u32 = 3;
/// `ENA_ADMIN_ENA_SRD_INFO`: the device answers GET_STATS of type ENA_SRD.
const CAP_ENA_SRD_INFO: u32 = 1 << 1;

/// The fields of `ena_admin_ena_srd_info` (its flags, then `ena_admin_ena_srd_stats`), with their
/// `ethtool -S` names, as ena.ko shows them.
pub(crate) const SRD_INFO_NAMES: [&str; 5] = [
    "ena_srd_mode",
    "ena_srd_tx_pkts",
    "ena_srd_eligible_tx_pkts",
    "ena_srd_rx_pkts",
    "ena_srd_resource_utilization",
];

/// What the device tells about itself (`ena_admin_device_attr_feature_desc`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct DeviceAttributes {
    /// Permanent MAC address.
    pub(crate) mac: [u8; 6],
    /// Largest MTU.
    pub(crate) max_mtu: u32,
    /// Feature ids the device implements, one bit each.
    pub(crate) supported_features: u32,
    /// Capability bits (`enum ena_admin_aq_caps_id`, and braid's bit 31).
    pub(crate) capabilities: u32,
    /// Physical address width.
    pub(crate) dma_width: u32,
}

impl DeviceAttributes {
    /// Parses the body of a GET_FEATURE(DEVICE_ATTRIBUTES) completion (words 2 onward).
    fn from_completion(c: &Entry) -> Self {
        let w = c;
        let (lo, hi) = (w[8].to_le_bytes(), w[9].to_le_bytes());
        Self {
            supported_features: w[4],
            capabilities: w[5],
            dma_width: w[6],
            mac: [lo[0], lo[1], lo[2], lo[3], hi[0], hi[1]],
            max_mtu: w[10],
        }
    }
}

/// The control registers (BAR0's trapped page), shared by the device protocol and the data path.
pub(crate) type Regs<'bound> = pci::Bar<'bound, REG_PAGE_SIZE>;

/// What the device can offload (`ena_admin_feature_offload_desc`): the `offload` bits.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Offloads {
    /// Transmit offloads.
    pub(crate) tx: u32,
    /// Receive offloads the device supports.
    pub(crate) rx: u32,
}

/// Bits of [`Offloads`] (`ENA_ADMIN_FEATURE_OFFLOAD_DESC_*`).
pub(crate) mod offload {
    /// TX: TCP/UDP checksum over IPv4, partial or full.
    pub(crate) const TX_L4_IPV4_CSUM: u32 = (1 << 1) | (1 << 2);
    /// TX: TCP/UDP checksum over IPv6, partial or full.
    pub(crate) const TX_L4_IPV6_CSUM: u32 = (1 << 3) | (1 << 4);
    /// TX: TSO over IPv4.
    pub(crate) const TSO_IPV4: u32 = 1 << 5;
    /// TX: TSO over IPv6.
    pub(crate) const TSO_IPV6: u32 = 1 << 6;
    /// TX: TSO with ECN.
    pub(crate) const TSO_ECN: u32 = 1 << 7;
    /// RX: TCP/UDP checksum over IPv4 or IPv6 verified.
    pub(crate) const RX_L4_CSUM: u32 = (1 << 1) | (1 << 2);
}

/// An ENA function brought up to a working admin queue; reset when dropped, before its rings
/// are freed.
pub(crate) struct EnaDevice<'bound> {
    pdev: &'bound pci::Device<Bound>,
    regs: Arc<Regs<'bound>>,
    /// Length of BAR0, which holds the doorbells past the register page.
    bar_len: usize,
    admin: AdminQueue,
    aenq: Aenq,
    /// Data of commands that carry it indirectly (RSS table and key).
    control: Coherent<[u8]>,
    /// The device's attributes, read at probe.
    pub(crate) attributes: DeviceAttributes,
    /// The event groups enabled on the device.
    pub(crate) event_groups: u32,
    /// The link state of the device's last link event, if one came.
    pub(crate) link_up: Option<bool>,
    /// The LLQ BAR, mapped write-combining, unless braid.ko does without.
    llq_bar: Option<Arc<WcBar<'bound>>>,
    /// The LLQ mode agreed with the device; `None`: transmit descriptors stay in host memory.
    pub(crate) llq: Option<LlqLayout>,
    /// Given by the handler of the management vector, once the device raises it for events and
    /// admin completions.
    admin_wakeup: Option<Arc<Wakeup>>,
}

/// What [`EnaDevice::bring_up`] learned and set up.
struct BroughtUp {
    attributes: DeviceAttributes,
    event_groups: u32,
    link_up: Option<bool>,
    llq: Option<LlqLayout>,
}

impl<'bound> EnaDevice<'bound> {
    /// Resets the device, sets up the admin queue in polling mode, reads the device's
    /// attributes and, given the LLQ BAR, agrees on an LLQ mode.
    pub(crate) fn probe(
        pdev: &'bound pci::Device<Core<'_>>,
        regs: Arc<Regs<'bound>>,
        bar_len: usize,
        llq_bar: Option<Arc<WcBar<'bound>>>,
    ) -> Result<Self> {
        reset(&regs, regs::RESET_NORMAL)?;
        let mut admin = AdminQueue::new(pdev.as_ref())?;
        let mut aenq = Aenq::new(pdev.as_ref(), HeadDoorbell::Limit)?;
        let control = Coherent::zeroed_slice(pdev.as_ref(), CONTROL_BUFFER_LEN, GFP_KERNEL)?;
        let llq_len = llq_bar.as_ref().map(|bar| bar.len());
        match Self::bring_up(&regs, &mut admin, &mut aenq, llq_len) {
            Ok(up) => Ok(Self {
                pdev,
                regs,
                bar_len,
                admin,
                aenq,
                control,
                attributes: up.attributes,
                event_groups: up.event_groups,
                link_up: up.link_up,
                llq_bar,
                llq: up.llq,
                admin_wakeup: None,
            }),
            Err(err) => {
                // The device may still write to the rings (a late completion, an event): stop
                // it before they are freed.
                let _ = reset(&regs, regs::RESET_INIT_ERR);
                Err(err)
            }
        }
    }

    /// Programs the rings, reads the attributes, sets the LLQ mode (given the LLQ BAR's length),
    /// enables events and waits for the link state.
    fn bring_up(
        regs: &pci::Bar<'_, REG_PAGE_SIZE>,
        admin: &mut AdminQueue,
        aenq: &mut Aenq,
        llq_len: Option<usize>,
    ) -> Result<BroughtUp> {
        admin.program(regs);
        // No admin interrupt yet: the driver polls.
        regs.write_reg(INTR_MASK::zeroed().with_admin(true));
        let completion = admin.execute(regs, GET_FEATURE, feature_command(DEVICE_ATTRIBUTES))?;
        let attributes = DeviceAttributes::from_completion(&completion);
        let llq = match llq_len {
            Some(len) if attributes.supported_features & (1 << LLQ) != 0 => {
                LlqLayout::negotiate(admin, regs, len, netdev::MIN_DEPTH)?
            }
            _ => None,
        };

        // Events: the ring first, then the groups the device supports among those wanted
        // (`ena_admin_feature_aenq_desc`: supported in word 2 of the answer, enabled in word 6 of
        // the command); the device then reports the link state.
        aenq.program(regs);
        let supported = admin.execute(regs, GET_FEATURE, feature_command(AENQ_CONFIG))?[2];
        let event_groups = supported & WANTED_GROUPS;
        let mut command = feature_command(AENQ_CONFIG);
        command[6] = event_groups;
        admin.execute(regs, SET_FEATURE, command)?;
        let mut link_up = None;
        let start = Instant::<Monotonic>::now();
        while event_groups & group::LINK_CHANGE != 0
            && link_up.is_none()
            && start.elapsed() < LINK_EVENT_WAIT
        {
            aenq.poll(regs, |event| {
                if let Event::LinkChange { up } = event {
                    link_up = Some(up);
                }
            });
            fsleep(Delta::from_millis(1));
        }
        Ok(BroughtUp {
            attributes,
            event_groups,
            link_up,
            llq,
        })
    }

    /// Lets the device raise the management vector (0) for events and admin completions, once
    /// a handler that gives `wakeup` is on it; commands then sleep until their completion's
    /// interrupt. Kept across resets.
    pub(crate) fn enable_admin_interrupt(&mut self, wakeup: Arc<Wakeup>) {
        self.admin.wake_with(wakeup.clone());
        self.admin_wakeup = Some(wakeup);
        self.regs.write_reg(INTR_MASK::zeroed());
    }

    /// What the admin queue did since probe.
    pub(crate) fn admin_stats(&self) -> admin::AdminStats {
        self.admin.stats
    }

    /// The control registers.
    pub(crate) fn regs(&self) -> &Arc<Regs<'bound>> {
        &self.regs
    }

    /// The LLQ BAR and the agreed mode, if transmit descriptors go to the device.
    pub(crate) fn llq(&self) -> Option<(&Arc<WcBar<'bound>>, LlqLayout)> {
        Some((self.llq_bar.as_ref()?, self.llq?))
    }

    /// Whether the device reports its ENA SRD statistics (its traffic over SRD to other hosts).
    pub(crate) fn has_srd_info(&self) -> bool {
        self.attributes.capabilities & CAP_ENA_SRD_INFO != 0
    }

    /// The device's ENA SRD statistics, in [`SRD_INFO_NAMES`] order.
    pub(crate) fn srd_info(&mut self) -> Result<[u64; SRD_INFO_NAMES.len()]> {
        if !self.has_srd_info() {
            return Err(EOPNOTSUPP);
        }
        let mut command: Entry = [0; 16];
        command[4] = STATS_TYPE_ENA_SRD;
        let c = self.execute(GET_STATS, command)?;
        // After the 8-byte completion header, five little-endian u64s.
        Ok(core::array::from_fn(|i| admin::get_u64(&c, 2 + 2 * i)))
    }

    /// Runs an admin command (see [`AdminQueue::execute`]).
    pub(crate) fn execute(&mut self, opcode: u8, command: Entry) -> Result<Entry> {
        self.admin.execute(&self.regs, opcode, command)
    }

    /// Takes the events the device posted (see [`Aenq::poll`]).
    pub(crate) fn poll_events(&mut self, handle: impl FnMut(Event)) -> usize {
        self.aenq.poll(&self.regs, handle)
    }

    /// Resets the device and brings its admin queue and events back, after the device failed
    /// to do what a command asked: the reset stops every I/O queue.
    pub(crate) fn reset_and_restart(&mut self, reason: u32) -> Result {
        reset(&self.regs, reason)?;
        let llq_len = self.llq_bar.as_ref().map(|bar| bar.len());
        let up = Self::bring_up(&self.regs, &mut self.admin, &mut self.aenq, llq_len)?;
        self.attributes = up.attributes;
        self.event_groups = up.event_groups;
        self.link_up = up.link_up;
        self.llq = up.llq;
        if let Some(wakeup) = self.admin_wakeup.clone() {
            self.enable_admin_interrupt(wakeup);
        }
        Ok(())
    }

    /// What the device can offload.
    pub(crate) fn offloads(&mut self) -> Result<Offloads> {
        let c = self.execute(GET_FEATURE, feature_command(STATELESS_OFFLOAD_CONFIG))?;
        // The body: tx (word 2), rx_supported (word 3), rx_enabled (word 4).
        Ok(Offloads { tx: c[2], rx: c[3] })
    }

    /// The unit of the device's interrupt delays in µs, if it moderates interrupts.
    pub(crate) fn interrupt_delay_resolution(&mut self) -> Result<Option<NonZeroU32>> {
        if self.attributes.supported_features & (1 << INTERRUPT_MODERATION) == 0 {
            return Ok(None);
        }
        let c = self.execute(GET_FEATURE, feature_command(INTERRUPT_MODERATION))?;
        // `ena_admin_feature_intr_moder_desc`: intr_delay_resolution in the body's low half.
        Ok(NonZeroU32::new(c[2] & 0xffff))
    }

    /// Runs `command` with the first `len` bytes of the control buffer as its data.
    fn execute_with_buffer(&mut self, opcode: u8, mut command: Entry, len: usize) -> Result<Entry> {
        if len > self.control.len() {
            return Err(EINVAL);
        }
        // `ena_admin_ctrl_buff_info` in words 1-3: length, then the address.
        command[0] = admin::aq::CTRL_DATA_INDIRECT;
        command[1] = u32::try_from(len)?;
        io::set_address(&mut command, 2, self.control.dma_address());
        self.execute(opcode, command)
    }

    /// Entries of the device's RSS indirection table (at most [`RSS_TABLE_MAX`]).
    pub(crate) fn rss_table_size(&mut self) -> Result<usize> {
        // `ena_admin_feature_rss_ind_table`: min_size, max_size (word 2), size (log2, word 3).
        let table = self.execute(GET_FEATURE, feature_command(RSS_INDIRECTION_TABLE_CONFIG))?;
        let size = 1usize << (table[3] & 0xffff).min(16);
        if size > RSS_TABLE_MAX {
            return Err(EIO);
        }
        Ok(size)
    }

    /// Sets the whole RSS indirection table in one command: entry i sends flows to the RX
    /// submission queue `rx_sqs[i]`.
    pub(crate) fn set_rss_table(&mut self, rx_sqs: &[u16]) -> Result {
        let n = rx_sqs.len();
        if !n.is_power_of_two() || n > RSS_TABLE_MAX {
            return Err(EINVAL);
        }
        // `ena_admin_rss_ind_table_entry`: cq_idx (the RX SQ), reserved.
        let mut buf = [0u8; RSS_TABLE_MAX * 4];
        for (i, &sq) in rx_sqs.iter().enumerate() {
            buf[4 * i..4 * i + 2].copy_from_slice(&sq.to_le_bytes());
        }
        io_project!(self.control, [panic: 0..n * 4]).copy_from_slice(&buf[..n * 4]);
        let mut command = feature_command(RSS_INDIRECTION_TABLE_CONFIG);
        // size (log2), one_entry_update off; inline_index: all of it is in the buffer.
        command[6] = n.ilog2();
        command[7] = u32::MAX;
        self.execute_with_buffer(SET_FEATURE, command, n * 4)
            .map(|_| ())
    }

    /// The device's RSS indirection table: the RX submission queue of each of its `n` entries.
    pub(crate) fn rss_table(&mut self, n: usize) -> Result<[u16; RSS_TABLE_MAX]> {
        if n > RSS_TABLE_MAX {
            return Err(EINVAL);
        }
        let command = feature_command(RSS_INDIRECTION_TABLE_CONFIG);
        self.execute_with_buffer(GET_FEATURE, command, n * 4)?;
        let mut buf = [0u8; RSS_TABLE_MAX * 4];
        io_project!(self.control, [panic: 0..n * 4]).copy_to_slice(&mut buf[..n * 4]);
        let mut sqs = [0u16; RSS_TABLE_MAX];
        for (i, sq) in sqs.iter_mut().take(n).enumerate() {
            *sq = u16::from_le_bytes([buf[4 * i], buf[4 * i + 1]]);
        }
        Ok(sqs)
    }

    /// The device's Toeplitz key.
    pub(crate) fn rss_key(&mut self) -> Result<[u8; RSS_KEY_LEN]> {
        let command = feature_command(RSS_HASH_FUNCTION);
        self.execute_with_buffer(GET_FEATURE, command, RSS_KEY_STRUCT)?;
        // `ena_admin_feature_rss_flow_hash_control`: key_parts, reserved, key.
        let mut buf = [0u8; RSS_KEY_STRUCT];
        io_project!(self.control, [panic: 0..RSS_KEY_STRUCT]).copy_to_slice(&mut buf);
        let mut key = [0u8; RSS_KEY_LEN];
        key.copy_from_slice(&buf[8..]);
        Ok(key)
    }

    /// Hashes flows with Toeplitz and `key` (as ena.ko sets it, initial value all ones).
    pub(crate) fn set_rss_key(&mut self, key: &[u8; RSS_KEY_LEN]) -> Result {
        let mut buf = [0u8; RSS_KEY_STRUCT];
        buf[..4].copy_from_slice(&((RSS_KEY_LEN / 4) as u32).to_le_bytes());
        buf[8..].copy_from_slice(key);
        io_project!(self.control, [panic: 0..RSS_KEY_STRUCT]).copy_from_slice(&buf);
        let mut command = feature_command(RSS_HASH_FUNCTION);
        // `ena_admin_feature_rss_flow_hash_function`: supported (ignored), selected, init_val.
        command[6] = 1 << TOEPLITZ;
        command[7] = u32::MAX;
        self.execute_with_buffer(SET_FEATURE, command, RSS_KEY_STRUCT)
            .map(|_| ())
    }

    /// Whether the device shows a fatal error in its status register.
    pub(crate) fn failed(&self) -> bool {
        self.regs.read(DEV_STS).fatal_error()
    }

    /// Sets the largest frame payload the device sends and takes.
    pub(crate) fn set_mtu(&mut self, mtu: u32) -> Result {
        let mut command = feature_command(MTU);
        // `ena_admin_set_feature_mtu_desc`, first word of the feature body.
        command[5] = mtu;
        self.execute(SET_FEATURE, command).map(|_| ())
    }
}

impl Drop for EnaDevice<'_> {
    fn drop(&mut self) {
        // The device must stop writing to the rings before they are freed: a reset drops every
        // queue.
        if let Err(err) = reset(&self.regs, regs::RESET_SHUTDOWN) {
            dev_warn!(
                self.pdev,
                "ENA device did not reset at release: {:?}\n",
                err
            );
        }
    }
}
