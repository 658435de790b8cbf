//! GET_FEATURE and SET_FEATURE: the device attributes ena.ko reads at probe
//! and the settings it writes (`ena_admin_get_feat_cmd`,
//! `ena_admin_set_feat_cmd`, and the feature descriptors of
//! `ena_admin_defs.h`).

use tracing::{debug, info};

use super::admin::{Command, CommandResult, Entry, Refused, acq};
use super::aenq::{Aenq, SUPPORTED_GROUPS};
use super::queues::{Direction, IoQueues, MAX_IO_QUEUES, MAX_QUEUE_DEPTH};
use crate::dma::{Access, GuestDma};
use crate::function::layout;

/// `enum ena_admin_aq_feature_id`.
pub mod id {
    /// `ENA_ADMIN_DEVICE_ATTRIBUTES`.
    pub const DEVICE_ATTRIBUTES: u8 = 1;
    /// `ENA_ADMIN_MAX_QUEUES_NUM`.
    pub const MAX_QUEUES_NUM: u8 = 2;
    /// `ENA_ADMIN_HW_HINTS`.
    pub const HW_HINTS: u8 = 3;
    /// `ENA_ADMIN_LLQ`.
    pub const LLQ: u8 = 4;
    /// `ENA_ADMIN_MAX_QUEUES_EXT`.
    pub const MAX_QUEUES_EXT: u8 = 7;
    /// `ENA_ADMIN_RSS_HASH_FUNCTION`.
    pub const RSS_HASH_FUNCTION: u8 = 10;
    /// `ENA_ADMIN_STATELESS_OFFLOAD_CONFIG`.
    pub const STATELESS_OFFLOAD_CONFIG: u8 = 11;
    /// `ENA_ADMIN_RSS_INDIRECTION_TABLE_CONFIG`.
    pub const RSS_INDIRECTION_TABLE_CONFIG: u8 = 12;
    /// `ENA_ADMIN_MTU`.
    pub const MTU: u8 = 14;
    /// `ENA_ADMIN_RSS_HASH_INPUT`.
    pub const RSS_HASH_INPUT: u8 = 18;
    /// `ENA_ADMIN_INTERRUPT_MODERATION`.
    pub const INTERRUPT_MODERATION: u8 = 20;
    /// `ENA_ADMIN_AENQ_CONFIG`.
    pub const AENQ_CONFIG: u8 = 26;
    /// `ENA_ADMIN_LINK_CONFIG`.
    pub const LINK_CONFIG: u8 = 27;
    /// `ENA_ADMIN_HOST_ATTR_CONFIG`.
    pub const HOST_ATTR_CONFIG: u8 = 28;
}

/// Features the card answers GET_FEATURE for.
const GETTABLE: &[u8] = &[
    id::DEVICE_ATTRIBUTES,
    id::MAX_QUEUES_NUM,
    id::HW_HINTS,
    id::LLQ,
    id::MAX_QUEUES_EXT,
    id::RSS_HASH_FUNCTION,
    id::STATELESS_OFFLOAD_CONFIG,
    id::RSS_INDIRECTION_TABLE_CONFIG,
    id::MTU,
    id::RSS_HASH_INPUT,
    id::INTERRUPT_MODERATION,
    id::AENQ_CONFIG,
    id::LINK_CONFIG,
];

/// Features the card accepts SET_FEATURE for.
const SETTABLE: &[u8] = &[
    id::LLQ,
    id::RSS_HASH_FUNCTION,
    id::RSS_INDIRECTION_TABLE_CONFIG,
    id::MTU,
    id::RSS_HASH_INPUT,
    id::AENQ_CONFIG,
    id::HOST_ATTR_CONFIG,
];

/// `supported_features` of the device attributes: one bit per feature id
/// the card implements.
pub fn supported_features() -> u32 {
    GETTABLE
        .iter()
        .chain(SETTABLE)
        .fold(0, |mask, &feature| mask | (1 << feature))
}

/// `ena_admin_get_set_feature_common_desc` and the start of the feature
/// union, in a GET/SET_FEATURE command.
mod cmd {
    pub const FEATURE_ID: usize = 17;
    pub const FEATURE_VERSION: usize = 18;
    /// Start of the `u` union in `ena_admin_set_feat_cmd`.
    pub const U: usize = 20;
}

/// Start of the `u` union in `ena_admin_get_feat_resp`.
const RESP: usize = acq::BODY;

/// `ENA_FEATURE_MAX_QUEUE_EXT_VER`.
const MAX_QUEUES_EXT_VERSION: u8 = 1;
/// `ENA_MIN_MTU`.
pub const MIN_MTU: u32 = 128;
/// Largest MTU, as on Nitro.
pub const MAX_MTU: u32 = 9001;
/// Physical and virtual address widths the device reports.
const ADDR_WIDTH: u32 = 48;
/// `ENA_PKT_MAX_BUFS`: descriptors per packet the device accepts.
const MAX_DESCS_PER_PACKET: u16 = 19;
/// Link speed in Mbit/s and its `ena_admin_link_types` bit
/// (`ENA_ADMIN_LINK_SPEED_100G`).
const LINK_SPEED_MBPS: u32 = 100_000;
const LINK_TYPE_100G: u32 = 0x80;
/// `ENA_ADMIN_GET_FEATURE_LINK_DESC_DUPLEX_MASK`: full duplex.
const LINK_FLAG_DUPLEX: u32 = 1 << 1;
/// Interrupt moderation resolution in microseconds.
const INTR_DELAY_RESOLUTION_US: u16 = super::datapath::INTR_DELAY_RESOLUTION.as_micros() as u16;

/// Device capabilities (`capabilities` of the device attributes): bits
/// 0..=2 are ENA's (`enum ena_admin_aq_caps_id`: ENI stats, SRD info,
/// customer metrics; the card offers SRD info, [`CAP_ENA_SRD_INFO`], while
/// it has an SRD uplink). Bit 31 is braid's: CQs can be
/// created with a combined head + unmask doorbell
/// ([`super::datapath::BRAID_DOORBELL_UNMASK`]). Drivers ignore bits they
/// do not know.
pub const BRAID_CAP_CQ_DOORBELL_UNMASK: u32 = 1 << 31;
/// `ENA_ADMIN_ENA_SRD_INFO`: GET_STATS of type ENA_SRD answers.
pub const CAP_ENA_SRD_INFO: u32 = 1 << 1;

/// `ena_admin_feature_offload_desc`: what the card's offload engines do.
pub mod offload {
    /// TX: IPv4 header checksum, TCP/UDP checksum over IPv4 and IPv6 with
    /// a pseudo-header seed (`_PART`) or without (`_FULL`), TSO for IPv4
    /// and IPv6 with CWR handled (`TSO_ECN`).
    pub const TX: u32 =
        (1 << 0) | (1 << 1) | (1 << 2) | (1 << 3) | (1 << 4) | (1 << 5) | (1 << 6) | (1 << 7);
    /// RX: IPv4 header checksum, TCP/UDP checksum over IPv4 and IPv6, the
    /// RSS hash in every completion.
    pub const RX: u32 = (1 << 0) | (1 << 1) | (1 << 2) | (1 << 3);
}

/// Hints (`ena_admin_ena_hw_hints`), in milliseconds unless noted.
mod hints {
    pub const MMIO_READ_TIMEOUT_MS: u16 = 200;
    pub const DRIVER_WATCHDOG_TIMEOUT_MS: u16 = 6000;
    pub const MISSING_TX_COMPLETION_TIMEOUT_MS: u16 = 5000;
    /// Count, not time.
    pub const MISSED_TX_COMPLETION_THRESHOLD: u16 = 128;
    pub const ADMIN_COMPLETION_TIMEOUT_MS: u16 = 3000;
    pub const NETDEV_WATCHDOG_TIMEOUT_MS: u16 = 5000;
}

/// LLQ (`ena_admin_feature_llq_desc`) options and their encodings.
mod llq {
    /// `ENA_ADMIN_INLINE_HEADER`.
    pub const INLINE_HEADER: u16 = 1;
    /// `ENA_ADMIN_LIST_ENTRY_SIZE_128B`.
    pub const ENTRY_SIZE_128B: u16 = 1;
    pub const ENTRY_SIZE_BYTES: u32 = 128;
    /// `ENA_ADMIN_LLQ_NUM_DESCS_BEFORE_HEADER_2`.
    pub const DESCS_BEFORE_HEADER_2: u16 = 2;
    /// `ENA_ADMIN_SINGLE_DESC_PER_ENTRY` | `ENA_ADMIN_MULTIPLE_DESCS_PER_ENTRY`.
    pub const STRIDE_SINGLE: u16 = 1;
    pub const STRIDE_MULTIPLE: u16 = 2;
    pub const MAX_LLQ_NUM: usize = 0;
    pub const MAX_LLQ_DEPTH: usize = 4;
    pub const HEADER_LOCATION_SUPPORTED: usize = 8;
    pub const HEADER_LOCATION_ENABLED: usize = 10;
    pub const ENTRY_SIZE_SUPPORTED: usize = 12;
    pub const ENTRY_SIZE_ENABLED: usize = 14;
    pub const DESCS_BEFORE_HEADER_SUPPORTED: usize = 16;
    pub const DESCS_BEFORE_HEADER_ENABLED: usize = 18;
    pub const STRIDE_SUPPORTED: usize = 20;
    pub const STRIDE_ENABLED: usize = 22;
}

/// The LLQ mode the driver selected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LlqConfig {
    /// `header_location_ctrl_enabled`.
    pub header_location: u16,
    /// `entry_size_ctrl_enabled`.
    pub entry_size: u16,
    /// `desc_num_before_header_enabled`.
    pub descs_before_header: u16,
    /// `descriptors_stride_ctrl_enabled`.
    pub stride: u16,
}

impl Default for LlqConfig {
    fn default() -> Self {
        Self {
            header_location: llq::INLINE_HEADER,
            entry_size: llq::ENTRY_SIZE_128B,
            descs_before_header: llq::DESCS_BEFORE_HEADER_2,
            stride: llq::STRIDE_MULTIPLE,
        }
    }
}

impl LlqConfig {
    /// Deepest LLQ: every TX queue gets an equal share of BAR2.
    pub fn max_depth(&self) -> u16 {
        let share = layout::BAR2_SIZE / u64::from(MAX_IO_QUEUES) / u64::from(llq::ENTRY_SIZE_BYTES);
        share.min(u64::from(MAX_QUEUE_DEPTH)) as u16
    }

    /// Bytes per LLQ entry.
    pub fn entry_bytes(&self) -> usize {
        llq::ENTRY_SIZE_BYTES as usize
    }

    /// Descriptors in a packet's first entry, ahead of the inline header.
    pub fn descs_before_header(&self) -> usize {
        usize::from(self.descs_before_header)
    }

    /// Descriptors in each further entry of a packet.
    pub fn descs_per_entry(&self) -> usize {
        if self.stride == llq::STRIDE_SINGLE {
            1
        } else {
            self.entry_bytes() / super::queues::SQ_DESC_SIZE as usize
        }
    }

    /// Offset in BAR2 of TX queue `idx`'s descriptors.
    pub fn queue_offset(&self, idx: u16) -> u32 {
        u32::from(idx) * u32::from(self.max_depth()) * llq::ENTRY_SIZE_BYTES
    }
}

/// RSS: `ena_admin_feature_rss_flow_hash_control`, `_function`, `_input`
/// and the indirection table.
pub mod rss {
    /// `ENA_ADMIN_RSS_KEY_PARTS`.
    pub const KEY_PARTS: usize = 10;
    /// Size of `ena_admin_feature_rss_flow_hash_control`.
    pub const KEY_STRUCT_SIZE: usize = 8 + 4 * KEY_PARTS;
    /// `ENA_ADMIN_TOEPLITZ` as a `1 << func` bit: the only function the
    /// card computes (ENA's CRC32 variant is not specified well enough to
    /// reproduce).
    pub const SUPPORTED_FUNCS: u32 = 1 << 1;
    /// The function selected at reset (Toeplitz).
    pub const DEFAULT_FUNC: u32 = 1 << 1;
    /// `ENA_ADMIN_RSS_PROTO_NUM`.
    pub const PROTO_NUM: usize = 16;
    /// Size of `ena_admin_feature_rss_hash_control`.
    pub const HASH_CONTROL_SIZE: usize = 4 * 4 * PROTO_NUM;
    /// `ENA_ADMIN_RSS_L2_DA`, `_L2_SA`, `_L3_DA`, `_L3_SA`, `_L4_DP`, `_L4_SP`.
    pub const L2: u16 = (1 << 0) | (1 << 1);
    /// L3 addresses.
    pub const L3: u16 = (1 << 2) | (1 << 3);
    /// L4 ports.
    pub const L4: u16 = (1 << 4) | (1 << 5);
    /// Hash inputs per `enum ena_admin_flow_hash_proto`: TCP4, UDP4, TCP6,
    /// UDP6, IP4, IP6, IP4_FRAG, NOT_IP, TCP6_EX, IP6_EX.
    pub const SUPPORTED_FIELDS: [u16; PROTO_NUM] = [
        L3 | L4,
        L3 | L4,
        L3 | L4,
        L3 | L4,
        L3,
        L3,
        L3,
        L2,
        L3 | L4,
        L3,
        0,
        0,
        0,
        0,
        0,
        0,
    ];
    /// `ENA_ADMIN_FEATURE_RSS_FLOW_HASH_INPUT_L3_SORT` | `_L4_SORT`.
    pub const SUPPORTED_INPUT_SORT: u16 = (1 << 1) | (1 << 2);
    /// Indirection table size limits (log2 of entries).
    pub const MIN_TABLE_LOG: u16 = 0;
    /// `ENA_RX_RSS_TABLE_LOG_SIZE`: 128 entries.
    pub const MAX_TABLE_LOG: u16 = 7;
    /// `inline_index` meaning "the table is in the control buffer".
    pub const TABLE_IN_BUFFER: u32 = u32::MAX;
    /// Size of `ena_admin_rss_ind_table_entry`.
    pub const TABLE_ENTRY_SIZE: usize = 4;
}

/// RSS state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rss {
    /// Selected hash function (`1 << func`).
    pub func: u32,
    /// Hash initial value.
    pub init_val: u32,
    /// Key words.
    pub key: Vec<u32>,
    /// Selected hash input fields per protocol.
    pub selected_fields: [u16; rss::PROTO_NUM],
    /// Enabled input sorting.
    pub input_sort: u16,
    /// log2 of the indirection table size.
    pub table_log: u16,
    /// RX queue per table entry.
    pub table: Vec<u16>,
}

impl Rss {
    /// RSS at reset: Toeplitz with the device's key, every flow to queue 0.
    pub fn with_key(key: &[u32; rss::KEY_PARTS]) -> Self {
        Self {
            key: key.to_vec(),
            ..Self::default()
        }
    }
}

/// A fresh random RSS key for a device (from the OS's randomness, through
/// the standard library's hasher seeding): ena.ko reads the device's key
/// before programming Toeplitz and keeps it, so it must not be all zero,
/// and a key an attacker cannot guess keeps flows from being steered.
pub fn random_rss_key() -> [u32; rss::KEY_PARTS] {
    use std::hash::BuildHasher;
    let seed = std::collections::hash_map::RandomState::new();
    std::array::from_fn(|i| seed.hash_one(i) as u32)
}

impl Default for Rss {
    /// RSS with an all-zero key (the tests' starting point; a device starts
    /// from [`Rss::with_key`]).
    fn default() -> Self {
        Self {
            func: rss::DEFAULT_FUNC,
            init_val: 0,
            key: vec![0; rss::KEY_PARTS],
            selected_fields: rss::SUPPORTED_FIELDS,
            input_sort: 0,
            table_log: rss::MAX_TABLE_LOG,
            table: vec![0; 1 << rss::MAX_TABLE_LOG],
        }
    }
}

/// What the driver told the device about its host
/// (`ena_admin_host_info`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostInfo {
    /// `os_type`.
    pub os_type: u32,
    /// `kernel_ver_str`.
    pub kernel: String,
    /// `driver_version` (module type, sub-minor, minor, major).
    pub driver_version: u32,
    /// `num_cpus`.
    pub num_cpus: u16,
    /// `driver_supported_features`.
    pub driver_features: u32,
}

/// `ena_admin_host_info` layout.
mod host_info {
    pub const SIZE: usize = 196;
    pub const OS_TYPE: usize = 0;
    pub const KERNEL_VER_STR: usize = 136;
    pub const KERNEL_VER_STR_LEN: usize = 32;
    pub const DRIVER_VERSION: usize = 172;
    pub const NUM_CPUS: usize = 188;
    pub const DRIVER_SUPPORTED_FEATURES: usize = 192;
    pub const OS_INFO_BA: usize = 0;
    pub const DEBUG_BA: usize = 8;
    pub const DEBUG_AREA_SIZE: usize = 16;
}

/// Device settings that do not change while it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceAttributes {
    /// Permanent MAC address.
    pub mac: [u8; 6],
    /// The VERSION register value.
    pub device_version: u32,
    /// The RSS key the device starts with after every reset.
    pub rss_key: [u32; rss::KEY_PARTS],
}

impl FeatureState {
    /// The settings a device with `attrs` has after reset.
    pub fn at_reset(attrs: &DeviceAttributes) -> Self {
        Self {
            rss: Rss::with_key(&attrs.rss_key),
            ..Self::default()
        }
    }
}

/// Settings the driver changes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FeatureState {
    /// Current MTU (0 until the driver sets one).
    pub mtu: u32,
    /// LLQ mode.
    pub llq: LlqConfig,
    /// RSS.
    pub rss: Rss,
    /// Host information, once the driver provided it.
    pub host: Option<HostInfo>,
    /// Debug area the driver provided (address, size).
    pub debug_area: Option<(u64, u32)>,
}

/// What GET/SET_FEATURE reach.
#[derive(Debug)]
pub struct Context<'a> {
    /// Fixed attributes.
    pub attrs: &'a DeviceAttributes,
    /// The card has an SRD uplink (ENA SRD statistics are offered).
    pub srd: bool,
    /// Mutable settings.
    pub state: &'a mut FeatureState,
    /// The AENQ (its enabled groups).
    pub aenq: &'a mut Aenq,
    /// I/O queues (for RSS validation).
    pub queues: &'a IoQueues,
    /// Guest memory.
    pub dma: &'a GuestDma,
}

fn feature_of(command: &Command) -> (u8, u8) {
    (
        command.entry.u8(cmd::FEATURE_ID),
        command.entry.u8(cmd::FEATURE_VERSION),
    )
}

fn require_buffer(command: &Command, min_len: usize) -> Result<u64, Refused> {
    let buffer = command
        .control_buffer()
        .ok_or_else(|| Refused::malformed("the feature needs an indirect control buffer"))?;
    if (buffer.length as usize) < min_len {
        return Err(Refused::malformed(format!(
            "control buffer of {} bytes, need {min_len}",
            buffer.length
        )));
    }
    if buffer.address == 0 {
        return Err(Refused::malformed("control buffer address is 0"));
    }
    Ok(buffer.address)
}

fn u16_at(bytes: &[u8], off: usize) -> u16 {
    u16::from_le_bytes([bytes[off], bytes[off + 1]])
}

fn u32_at(bytes: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([bytes[off], bytes[off + 1], bytes[off + 2], bytes[off + 3]])
}

fn check_version(feature: u8, version: u8, supported: u8) -> Result<(), Refused> {
    if version > supported {
        return Err(Refused::illegal(format!(
            "feature {feature} version {version} (the device implements {supported})"
        )));
    }
    Ok(())
}

/// GET_FEATURE.
pub fn get(command: &Command, ctx: &mut Context<'_>) -> CommandResult {
    let (feature, version) = feature_of(command);
    if !GETTABLE.contains(&feature) {
        return Err(Refused::unsupported(format!(
            "GET_FEATURE of feature {feature}"
        )));
    }
    let supported_version = if feature == id::MAX_QUEUES_EXT {
        MAX_QUEUES_EXT_VERSION
    } else {
        0
    };
    check_version(feature, version, supported_version)?;
    let mut r = Entry::default();
    match feature {
        id::DEVICE_ATTRIBUTES => {
            r.set_u32(RESP, 0);
            r.set_u32(RESP + 4, ctx.attrs.device_version);
            r.set_u32(RESP + 8, supported_features());
            let srd = if ctx.srd { CAP_ENA_SRD_INFO } else { 0 };
            r.set_u32(RESP + 12, BRAID_CAP_CQ_DOORBELL_UNMASK | srd);
            r.set_u32(RESP + 16, ADDR_WIDTH);
            r.set_u32(RESP + 20, ADDR_WIDTH);
            r.set_bytes(RESP + 24, &ctx.attrs.mac);
            r.set_u32(RESP + 32, MAX_MTU);
        }
        id::MAX_QUEUES_EXT => {
            let depth = u32::from(MAX_QUEUE_DEPTH);
            let num = u32::from(MAX_IO_QUEUES);
            r.set_u8(RESP, MAX_QUEUES_EXT_VERSION);
            for (i, value) in [num, num, num, num, depth, depth, depth, depth]
                .into_iter()
                .enumerate()
            {
                r.set_u32(RESP + 4 + 4 * i, value);
            }
            r.set_u32(RESP + 36, max_tx_header_size(&ctx.state.llq));
            r.set_u16(RESP + 40, MAX_DESCS_PER_PACKET);
            r.set_u16(RESP + 42, MAX_DESCS_PER_PACKET);
        }
        id::MAX_QUEUES_NUM => {
            let depth = u32::from(MAX_QUEUE_DEPTH);
            let num = u32::from(MAX_IO_QUEUES);
            for (i, value) in [
                num,
                depth,
                num,
                depth,
                num,
                u32::from(ctx.state.llq.max_depth()),
            ]
            .into_iter()
            .enumerate()
            {
                r.set_u32(RESP + 4 * i, value);
            }
            r.set_u32(RESP + 24, max_tx_header_size(&ctx.state.llq));
            r.set_u16(RESP + 28, MAX_DESCS_PER_PACKET);
            r.set_u16(RESP + 30, MAX_DESCS_PER_PACKET);
        }
        id::HW_HINTS => {
            let values = [
                hints::MMIO_READ_TIMEOUT_MS,
                hints::DRIVER_WATCHDOG_TIMEOUT_MS,
                hints::MISSING_TX_COMPLETION_TIMEOUT_MS,
                hints::MISSED_TX_COMPLETION_THRESHOLD,
                hints::ADMIN_COMPLETION_TIMEOUT_MS,
                hints::NETDEV_WATCHDOG_TIMEOUT_MS,
                MAX_DESCS_PER_PACKET,
                MAX_DESCS_PER_PACKET,
            ];
            for (i, value) in values.into_iter().enumerate() {
                r.set_u16(RESP + 2 * i, value);
            }
        }
        id::LLQ => {
            let cfg = &ctx.state.llq;
            r.set_u32(RESP + llq::MAX_LLQ_NUM, u32::from(MAX_IO_QUEUES));
            r.set_u32(RESP + llq::MAX_LLQ_DEPTH, u32::from(cfg.max_depth()));
            r.set_u16(RESP + llq::HEADER_LOCATION_SUPPORTED, llq::INLINE_HEADER);
            r.set_u16(RESP + llq::HEADER_LOCATION_ENABLED, cfg.header_location);
            r.set_u16(RESP + llq::ENTRY_SIZE_SUPPORTED, llq::ENTRY_SIZE_128B);
            r.set_u16(RESP + llq::ENTRY_SIZE_ENABLED, cfg.entry_size);
            r.set_u16(
                RESP + llq::DESCS_BEFORE_HEADER_SUPPORTED,
                llq::DESCS_BEFORE_HEADER_2,
            );
            r.set_u16(
                RESP + llq::DESCS_BEFORE_HEADER_ENABLED,
                cfg.descs_before_header,
            );
            r.set_u16(
                RESP + llq::STRIDE_SUPPORTED,
                llq::STRIDE_SINGLE | llq::STRIDE_MULTIPLE,
            );
            r.set_u16(RESP + llq::STRIDE_ENABLED, cfg.stride);
            // No accelerated LLQ modes: accel_mode.get stays zero.
        }
        id::STATELESS_OFFLOAD_CONFIG => {
            r.set_u32(RESP, offload::TX);
            r.set_u32(RESP + 4, offload::RX);
            r.set_u32(RESP + 8, offload::RX);
        }
        id::RSS_HASH_FUNCTION => {
            if command.control_buffer().is_some() {
                let address = require_buffer(command, rss::KEY_STRUCT_SIZE)?;
                let key = &ctx.state.rss.key;
                let mut buf = vec![0u8; rss::KEY_STRUCT_SIZE];
                buf[..4].copy_from_slice(&(key.len() as u32).to_le_bytes());
                for (i, word) in key.iter().enumerate() {
                    buf[8 + 4 * i..12 + 4 * i].copy_from_slice(&word.to_le_bytes());
                }
                ctx.dma
                    .write_slice(address, &buf)
                    .map_err(|err| Refused::dma("writing the RSS key", &err))?;
            }
            r.set_u32(RESP, rss::SUPPORTED_FUNCS);
            r.set_u32(RESP + 4, ctx.state.rss.func);
            r.set_u32(RESP + 8, ctx.state.rss.init_val);
        }
        id::RSS_HASH_INPUT => {
            if command.control_buffer().is_some() {
                let address = require_buffer(command, rss::HASH_CONTROL_SIZE)?;
                let mut buf = vec![0u8; rss::HASH_CONTROL_SIZE];
                for proto in 0..rss::PROTO_NUM {
                    let supported = rss::SUPPORTED_FIELDS[proto].to_le_bytes();
                    let selected = ctx.state.rss.selected_fields[proto].to_le_bytes();
                    buf[4 * proto..4 * proto + 2].copy_from_slice(&supported);
                    let sel = 4 * (rss::PROTO_NUM + proto);
                    buf[sel..sel + 2].copy_from_slice(&selected);
                }
                ctx.dma
                    .write_slice(address, &buf)
                    .map_err(|err| Refused::dma("writing the RSS hash control", &err))?;
            }
            r.set_u16(RESP, rss::SUPPORTED_INPUT_SORT);
            r.set_u16(RESP + 2, ctx.state.rss.input_sort);
        }
        id::RSS_INDIRECTION_TABLE_CONFIG => {
            let table = &ctx.state.rss.table;
            if command.control_buffer().is_some() {
                let address = require_buffer(command, table.len() * rss::TABLE_ENTRY_SIZE)?;
                let buf: Vec<u8> = table
                    .iter()
                    .flat_map(|&q| u32::from(q).to_le_bytes())
                    .collect();
                ctx.dma
                    .write_slice(address, &buf)
                    .map_err(|err| Refused::dma("writing the RSS table", &err))?;
            }
            r.set_u16(RESP, rss::MIN_TABLE_LOG);
            r.set_u16(RESP + 2, rss::MAX_TABLE_LOG);
            r.set_u16(RESP + 4, ctx.state.rss.table_log);
        }
        id::MTU => r.set_u32(RESP, ctx.state.mtu),
        id::INTERRUPT_MODERATION => r.set_u16(RESP, INTR_DELAY_RESOLUTION_US),
        id::AENQ_CONFIG => {
            r.set_u32(RESP, SUPPORTED_GROUPS);
            r.set_u32(RESP + 4, ctx.aenq.enabled_groups);
        }
        id::LINK_CONFIG => {
            r.set_u32(RESP, LINK_SPEED_MBPS);
            r.set_u32(RESP + 4, LINK_TYPE_100G);
            r.set_u32(RESP + 8, LINK_FLAG_DUPLEX);
        }
        _ => {
            return Err(Refused::unsupported(format!(
                "GET_FEATURE of feature {feature}"
            )));
        }
    }
    debug!(feature, "GET_FEATURE");
    Ok(r)
}

/// Largest packet header an LLQ entry carries inline: the entry minus the
/// descriptors before the header.
fn max_tx_header_size(cfg: &LlqConfig) -> u32 {
    const TX_DESC_SIZE: u32 = 16;
    llq::ENTRY_SIZE_BYTES - u32::from(cfg.descs_before_header) * TX_DESC_SIZE
}

fn one_of(value: u16, supported: u16, what: &str) -> Result<u16, Refused> {
    if value.count_ones() == 1 && value & supported == value {
        Ok(value)
    } else {
        Err(Refused::illegal(format!(
            "{what} {value:#x} (supported {supported:#x})"
        )))
    }
}

/// SET_FEATURE.
pub fn set(command: &Command, ctx: &mut Context<'_>) -> CommandResult {
    let (feature, version) = feature_of(command);
    if !SETTABLE.contains(&feature) {
        return Err(Refused::unsupported(format!(
            "SET_FEATURE of feature {feature}"
        )));
    }
    check_version(feature, version, 0)?;
    let e = &command.entry;
    let u = cmd::U;
    match feature {
        id::MTU => {
            let mtu = e.u32(u);
            if !(MIN_MTU..=MAX_MTU).contains(&mtu) {
                return Err(Refused::illegal(format!(
                    "MTU {mtu} outside {MIN_MTU}..={MAX_MTU}"
                )));
            }
            ctx.state.mtu = mtu;
            info!(mtu, "MTU set");
        }
        id::AENQ_CONFIG => {
            let groups = e.u32(u + 4);
            if groups & !SUPPORTED_GROUPS != 0 {
                return Err(Refused::illegal(format!(
                    "AENQ groups {groups:#x} (supported {SUPPORTED_GROUPS:#x})"
                )));
            }
            ctx.aenq.enabled_groups = groups;
            debug!(groups = format_args!("{groups:#x}"), "AENQ groups enabled");
        }
        id::LLQ => {
            let cfg = LlqConfig {
                header_location: one_of(
                    e.u16(u + llq::HEADER_LOCATION_ENABLED),
                    llq::INLINE_HEADER,
                    "LLQ header location",
                )?,
                entry_size: one_of(
                    e.u16(u + llq::ENTRY_SIZE_ENABLED),
                    llq::ENTRY_SIZE_128B,
                    "LLQ entry size",
                )?,
                descs_before_header: one_of(
                    e.u16(u + llq::DESCS_BEFORE_HEADER_ENABLED),
                    llq::DESCS_BEFORE_HEADER_2,
                    "LLQ descriptors before header",
                )?,
                stride: one_of(
                    e.u16(u + llq::STRIDE_ENABLED),
                    llq::STRIDE_SINGLE | llq::STRIDE_MULTIPLE,
                    "LLQ descriptor stride",
                )?,
            };
            // accel_mode.set asks for modes the device does not offer
            // (its GET reported none): nothing to enable.
            ctx.state.llq = cfg;
            debug!(?cfg, "LLQ configured");
        }
        id::RSS_HASH_FUNCTION => {
            let func = e.u32(u + 4);
            if func.count_ones() != 1 || func & rss::SUPPORTED_FUNCS != func {
                return Err(Refused::illegal(format!("RSS hash function {func:#x}")));
            }
            let address = require_buffer(command, rss::KEY_STRUCT_SIZE)?;
            let mut buf = vec![0u8; rss::KEY_STRUCT_SIZE];
            ctx.dma
                .read_slice(address, &mut buf)
                .map_err(|err| Refused::dma("reading the RSS key", &err))?;
            let parts = u32_at(&buf, 0) as usize;
            if parts > rss::KEY_PARTS {
                return Err(Refused::illegal(format!("RSS key of {parts} words")));
            }
            ctx.state.rss.key = (0..parts).map(|i| u32_at(&buf, 8 + 4 * i)).collect();
            ctx.state.rss.func = func;
            ctx.state.rss.init_val = e.u32(u + 8);
            debug!(func, parts, "RSS hash function set");
        }
        id::RSS_HASH_INPUT => {
            let sort = e.u16(u + 2);
            if sort & !rss::SUPPORTED_INPUT_SORT != 0 {
                return Err(Refused::illegal(format!("RSS input sort {sort:#x}")));
            }
            let address = require_buffer(command, rss::HASH_CONTROL_SIZE)?;
            let mut buf = vec![0u8; rss::HASH_CONTROL_SIZE];
            ctx.dma
                .read_slice(address, &mut buf)
                .map_err(|err| Refused::dma("reading the RSS hash control", &err))?;
            let mut selected = [0u16; rss::PROTO_NUM];
            for (proto, fields) in selected.iter_mut().enumerate() {
                *fields = u16_at(&buf, 4 * (rss::PROTO_NUM + proto));
                if *fields & !rss::SUPPORTED_FIELDS[proto] != 0 {
                    return Err(Refused::illegal(format!(
                        "RSS fields {fields:#x} for protocol {proto}"
                    )));
                }
            }
            ctx.state.rss.selected_fields = selected;
            ctx.state.rss.input_sort = sort;
            debug!("RSS hash input set");
        }
        id::RSS_INDIRECTION_TABLE_CONFIG => set_rss_table(command, ctx)?,
        id::HOST_ATTR_CONFIG => set_host_attributes(e, ctx)?,
        _ => {
            return Err(Refused::unsupported(format!(
                "SET_FEATURE of feature {feature}"
            )));
        }
    }
    debug!(feature, "SET_FEATURE");
    Ok(Entry::default())
}

fn check_rx_queue(ctx: &Context<'_>, queue: u16) -> Result<u16, Refused> {
    ctx.queues
        .sq(Direction::Rx, queue)
        .map(|_| queue)
        .ok_or_else(|| {
            Refused::illegal(format!(
                "RSS entry names RX queue {queue}, which does not exist"
            ))
        })
}

fn set_rss_table(command: &Command, ctx: &mut Context<'_>) -> Result<(), Refused> {
    let e = &command.entry;
    let u = cmd::U;
    let log = e.u16(u + 4);
    if !(rss::MIN_TABLE_LOG..=rss::MAX_TABLE_LOG).contains(&log) {
        return Err(Refused::illegal(format!("RSS table size 2^{log}")));
    }
    let entries = 1usize << log;
    let inline_index = e.u32(u + 8);
    if inline_index == rss::TABLE_IN_BUFFER {
        let len = entries * rss::TABLE_ENTRY_SIZE;
        let buffer = command
            .control_buffer()
            .ok_or_else(|| Refused::malformed("RSS table without a control buffer"))?;
        if buffer.length as usize != len || buffer.address == 0 {
            return Err(Refused::malformed(format!(
                "RSS table buffer of {} bytes at {:#x}, need {len}",
                buffer.length, buffer.address
            )));
        }
        let mut buf = vec![0u8; len];
        ctx.dma
            .read_slice(buffer.address, &mut buf)
            .map_err(|err| Refused::dma("reading the RSS table", &err))?;
        let table = (0..entries)
            .map(|i| check_rx_queue(ctx, u16_at(&buf, i * rss::TABLE_ENTRY_SIZE)))
            .collect::<Result<Vec<_>, _>>()?;
        ctx.state.rss.table = table;
        ctx.state.rss.table_log = log;
    } else {
        if log != ctx.state.rss.table_log || inline_index as usize >= entries {
            return Err(Refused::illegal(format!(
                "RSS inline entry {inline_index} of a 2^{log} table (current 2^{})",
                ctx.state.rss.table_log
            )));
        }
        let queue = check_rx_queue(ctx, e.u16(u + 12))?;
        ctx.state.rss.table[inline_index as usize] = queue;
    }
    debug!(log, "RSS indirection table set");
    Ok(())
}

fn set_host_attributes(e: &Entry, ctx: &mut Context<'_>) -> Result<(), Refused> {
    let u = cmd::U;
    let os_info = e.mem_addr(u + host_info::OS_INFO_BA);
    let debug_ba = e.mem_addr(u + host_info::DEBUG_BA);
    let debug_size = e.u32(u + host_info::DEBUG_AREA_SIZE);
    if debug_size != 0 {
        ctx.dma
            .check(debug_ba, debug_size as usize, Access::Write)
            .map_err(|err| Refused::dma("debug area", &err))?;
    }
    let host = if os_info != 0 {
        let mut buf = vec![0u8; host_info::SIZE];
        ctx.dma
            .read_slice(os_info, &mut buf)
            .map_err(|err| Refused::dma("reading the host info", &err))?;
        let kernel_bytes = &buf[host_info::KERNEL_VER_STR..][..host_info::KERNEL_VER_STR_LEN];
        let end = kernel_bytes
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(kernel_bytes.len());
        let host = HostInfo {
            os_type: u32_at(&buf, host_info::OS_TYPE),
            kernel: String::from_utf8_lossy(&kernel_bytes[..end]).into_owned(),
            driver_version: u32_at(&buf, host_info::DRIVER_VERSION),
            num_cpus: u16_at(&buf, host_info::NUM_CPUS),
            driver_features: u32_at(&buf, host_info::DRIVER_SUPPORTED_FEATURES),
        };
        info!(
            os_type = host.os_type,
            kernel = %host.kernel,
            driver_version = format_args!("{:#x}", host.driver_version),
            num_cpus = host.num_cpus,
            driver_features = format_args!("{:#x}", host.driver_features),
            "host attributes"
        );
        Some(host)
    } else {
        None
    };
    ctx.state.host = host;
    ctx.state.debug_area = (debug_size != 0).then_some((debug_ba, debug_size));
    Ok(())
}
