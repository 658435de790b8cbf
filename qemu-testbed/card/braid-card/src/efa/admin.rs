//! EFA admin commands (`efa_admin_cmds_defs.h`): opcodes, field offsets,
//! the device's features and statistics. Offsets are those of the 64-byte
//! `efa_admin_aq_entry`, payload at byte 4 (the admin queue moves a
//! 128-byte `efa_admin_aq_entry_v2`'s payload there), and of the 64-byte
//! `efa_admin_acq_entry`, response at byte 8.

use tracing::info;

use super::limits::*;
use super::regs::layout::DB_BAR;
use super::{EfaSettings, Stats};
use crate::dma::GuestDma;
use crate::nitro::admin::{Command, CommandResult, Entry, Refused, aq};
use crate::nitro::aenq::Aenq;

pub use crate::nitro::admin::Status;

/// `enum efa_admin_aq_opcode`.
pub mod opcode {
    /// `EFA_ADMIN_CREATE_QP`.
    pub const CREATE_QP: u8 = 1;
    /// `EFA_ADMIN_MODIFY_QP`.
    pub const MODIFY_QP: u8 = 2;
    /// `EFA_ADMIN_QUERY_QP`.
    pub const QUERY_QP: u8 = 3;
    /// `EFA_ADMIN_DESTROY_QP`.
    pub const DESTROY_QP: u8 = 4;
    /// `EFA_ADMIN_CREATE_AH`.
    pub const CREATE_AH: u8 = 5;
    /// `EFA_ADMIN_DESTROY_AH`.
    pub const DESTROY_AH: u8 = 6;
    /// `EFA_ADMIN_REG_MR`.
    pub const REG_MR: u8 = 7;
    /// `EFA_ADMIN_DEREG_MR`.
    pub const DEREG_MR: u8 = 8;
    /// `EFA_ADMIN_CREATE_CQ`.
    pub const CREATE_CQ: u8 = 9;
    /// `EFA_ADMIN_DESTROY_CQ`.
    pub const DESTROY_CQ: u8 = 10;
    /// `EFA_ADMIN_GET_FEATURE`.
    pub const GET_FEATURE: u8 = 11;
    /// `EFA_ADMIN_SET_FEATURE`.
    pub const SET_FEATURE: u8 = 12;
    /// `EFA_ADMIN_GET_STATS`.
    pub const GET_STATS: u8 = 13;
    /// `EFA_ADMIN_ALLOC_PD`.
    pub const ALLOC_PD: u8 = 14;
    /// `EFA_ADMIN_DEALLOC_PD`.
    pub const DEALLOC_PD: u8 = 15;
    /// `EFA_ADMIN_ALLOC_UAR`.
    pub const ALLOC_UAR: u8 = 16;
    /// `EFA_ADMIN_DEALLOC_UAR`.
    pub const DEALLOC_UAR: u8 = 17;
    /// `EFA_ADMIN_CREATE_EQ`.
    pub const CREATE_EQ: u8 = 18;
    /// `EFA_ADMIN_DESTROY_EQ`.
    pub const DESTROY_EQ: u8 = 19;
    /// `EFA_ADMIN_ALLOC_MR` (kernel fast registration; not implemented).
    pub const ALLOC_MR: u8 = 20;
    /// `EFA_ADMIN_SERVICE` (not implemented).
    pub const SERVICE: u8 = 21;
    /// `EFA_ADMIN_CREATE_EVENT_COUNTER` .. `DETACH_EVENT_COUNTER` (not
    /// implemented).
    pub const EVENT_COUNTERS: std::ops::RangeInclusive<u8> = 25..=29;
}

/// `enum efa_admin_aq_feature_id`.
pub mod feature {
    /// `EFA_ADMIN_DEVICE_ATTR`.
    pub const DEVICE_ATTR: u8 = 1;
    /// `EFA_ADMIN_AENQ_CONFIG`.
    pub const AENQ_CONFIG: u8 = 2;
    /// `EFA_ADMIN_NETWORK_ATTR`.
    pub const NETWORK_ATTR: u8 = 3;
    /// `EFA_ADMIN_QUEUE_ATTR_1`.
    pub const QUEUE_ATTR_1: u8 = 4;
    /// `EFA_ADMIN_HW_HINTS`.
    pub const HW_HINTS: u8 = 5;
    /// `EFA_ADMIN_HOST_INFO`.
    pub const HOST_INFO: u8 = 6;
    /// `EFA_ADMIN_EVENT_QUEUE_ATTR`.
    pub const EVENT_QUEUE_ATTR: u8 = 7;
    /// What the card reports in `supported_features` (not QUEUE_ATTR_2:
    /// no event counters, no extended inline size).
    pub const SUPPORTED: u64 = (1 << DEVICE_ATTR)
        | (1 << AENQ_CONFIG)
        | (1 << NETWORK_ATTR)
        | (1 << QUEUE_ATTR_1)
        | (1 << HW_HINTS)
        | (1 << HOST_INFO)
        | (1 << EVENT_QUEUE_ATTR);
}

/// `enum efa_admin_qp_state` and the transitions the device accepts.
pub mod qp_state {
    /// `EFA_ADMIN_QP_STATE_RESET`.
    pub const RESET: u32 = 0;
    /// `EFA_ADMIN_QP_STATE_INIT`.
    pub const INIT: u32 = 1;
    /// `EFA_ADMIN_QP_STATE_RTR`.
    pub const RTR: u32 = 2;
    /// `EFA_ADMIN_QP_STATE_RTS`.
    pub const RTS: u32 = 3;
    /// `EFA_ADMIN_QP_STATE_SQD`.
    pub const SQD: u32 = 4;
    /// `EFA_ADMIN_QP_STATE_SQE`.
    pub const SQE: u32 = 5;
    /// `EFA_ADMIN_QP_STATE_ERR`.
    pub const ERR: u32 = 6;

    /// Whether a QP in `from` may move to `to`: the IB state machine as
    /// `efa_verbs.c`'s `srd_qp_state_table` allows it (any state to RESET
    /// or ERR; RESET -> INIT -> RTR -> RTS; RTS <-> SQD; SQE -> RTS; INIT,
    /// RTS and SQD to themselves).
    pub fn transition_allowed(from: u32, to: u32) -> bool {
        if from > ERR {
            return false;
        }
        matches!(
            (from, to),
            (_, RESET | ERR)
                | (RESET, INIT)
                | (INIT, INIT | RTR)
                | (RTR, RTS)
                | (RTS | SQD, RTS | SQD)
                | (SQE, RTS)
        )
    }
}

/// `enum efa_admin_get_stats_type` and `_scope`.
pub mod stats {
    /// `EFA_ADMIN_GET_STATS_TYPE_BASIC`.
    pub const BASIC: u8 = 0;
    /// `EFA_ADMIN_GET_STATS_TYPE_MESSAGES`.
    pub const MESSAGES: u8 = 1;
    /// `EFA_ADMIN_GET_STATS_TYPE_RDMA_READ`.
    pub const RDMA_READ: u8 = 2;
    /// `EFA_ADMIN_GET_STATS_TYPE_RDMA_WRITE`.
    pub const RDMA_WRITE: u8 = 3;
    /// `EFA_ADMIN_GET_STATS_TYPE_NETWORK`.
    pub const NETWORK: u8 = 4;
    /// `EFA_ADMIN_GET_STATS_SCOPE_ALL`.
    pub const SCOPE_ALL: u8 = 0;
}

/// Byte offsets of command and response fields in the 64-byte entries.
pub mod layout {
    /// Start of `request_payload` in `efa_admin_aq_entry`.
    pub const PAYLOAD: usize = 4;
    /// Start of the response body in `efa_admin_acq_entry`.
    pub const RESP: usize = 8;

    /// `efa_admin_get_feature_cmd`, `efa_admin_set_feature_cmd`.
    pub mod feature {
        /// `control_buffer.length`.
        pub const CTRL_LENGTH: usize = 4;
        /// `control_buffer.address`.
        pub const CTRL_ADDRESS: usize = 8;
        /// `feature_common.feature_id`.
        pub const FEATURE_ID: usize = 17;
        /// `u.aenq.enabled_groups` (SET_FEATURE).
        pub const AENQ_ENABLED: usize = 24;
    }

    /// `efa_admin_aq_get_stats_cmd`.
    pub mod get_stats {
        /// `type`.
        pub const TYPE: usize = 16;
        /// `scope`.
        pub const SCOPE: usize = 17;
    }

    /// `efa_admin_create_qp_cmd` and `_resp`.
    pub mod create_qp {
        /// `pd`.
        pub const PD: usize = 4;
        /// `qp_type`.
        pub const QP_TYPE: usize = 6;
        /// `flags`.
        pub const FLAGS: usize = 7;
        /// `sq_base_addr`.
        pub const SQ_BASE: usize = 8;
        /// `rq_base_addr`.
        pub const RQ_BASE: usize = 16;
        /// `send_cq_idx`.
        pub const SEND_CQ: usize = 24;
        /// `recv_cq_idx`.
        pub const RECV_CQ: usize = 28;
        /// `sq_l_key`.
        pub const SQ_L_KEY: usize = 32;
        /// `rq_l_key`.
        pub const RQ_L_KEY: usize = 36;
        /// `qp_alloc_size.send_queue_ring_size`.
        pub const SQ_RING_SIZE: usize = 40;
        /// `qp_alloc_size.send_queue_depth`.
        pub const SQ_DEPTH: usize = 44;
        /// `qp_alloc_size.recv_queue_ring_size`.
        pub const RQ_RING_SIZE: usize = 48;
        /// `qp_alloc_size.recv_queue_depth`.
        pub const RQ_DEPTH: usize = 52;
        /// `uar`.
        pub const UAR: usize = 56;
        /// `sl`.
        pub const SL: usize = 58;
        /// `reserved`.
        pub const RESERVED: usize = 59;
        /// `reserved2`.
        pub const RESERVED2: usize = 60;
        /// `EFA_ADMIN_QP_TYPE_UD`.
        pub const TYPE_UD: u8 = 1;
        /// `EFA_ADMIN_QP_TYPE_SRD`.
        pub const TYPE_SRD: u8 = 2;
        /// `qp_handle`.
        pub const RESP_HANDLE: usize = 8;
        /// `qp_num`.
        pub const RESP_QP_NUM: usize = 12;
        /// `send_sub_cq_idx`.
        pub const RESP_SEND_SUB_CQ: usize = 16;
        /// `recv_sub_cq_idx`.
        pub const RESP_RECV_SUB_CQ: usize = 18;
        /// `sq_db_offset`.
        pub const RESP_SQ_DB: usize = 20;
        /// `rq_db_offset`.
        pub const RESP_RQ_DB: usize = 24;
        /// `llq_descriptors_offset`.
        pub const RESP_LLQ: usize = 28;
    }

    /// `efa_admin_modify_qp_cmd`.
    pub mod modify_qp {
        /// `modify_mask`.
        pub const MASK: usize = 4;
        /// `qp_handle`.
        pub const HANDLE: usize = 8;
        /// `qp_state`.
        pub const STATE: usize = 12;
        /// `cur_qp_state`.
        pub const CUR_STATE: usize = 16;
        /// `qkey`.
        pub const QKEY: usize = 20;
        /// `sq_psn`.
        pub const SQ_PSN: usize = 24;
        /// `rnr_retry`.
        pub const RNR_RETRY: usize = 29;
        /// `reserved2`.
        pub const RESERVED2: usize = 30;
        /// `modify_mask` bits.
        pub const MASK_STATE: u32 = 1 << 0;
        /// Override the current state.
        pub const MASK_CUR_STATE: u32 = 1 << 1;
        /// Q_Key.
        pub const MASK_QKEY: u32 = 1 << 2;
        /// SQ PSN.
        pub const MASK_SQ_PSN: u32 = 1 << 3;
        /// RNR retry count.
        pub const MASK_RNR_RETRY: u32 = 1 << 5;
        /// What the card implements (no SQ-drained event).
        pub const MASK_SUPPORTED: u32 =
            MASK_STATE | MASK_CUR_STATE | MASK_QKEY | MASK_SQ_PSN | MASK_RNR_RETRY;
        /// `rnr_retry` that means "retry for ever" (as in InfiniBand).
        pub const RNR_RETRY_INFINITE: u8 = 7;
    }

    /// `efa_admin_create_ah_cmd`.
    pub mod create_ah {
        /// `dest_addr[16]`.
        pub const DEST_ADDR: usize = 4;
        /// `pd`.
        pub const PD: usize = 20;
        /// `reserved`.
        pub const RESERVED: usize = 22;
    }

    /// `efa_admin_reg_mr_cmd`.
    pub mod reg_mr {
        /// `pd`.
        pub const PD: usize = 4;
        /// `reserved16_w1`.
        pub const RESERVED1: usize = 6;
        /// `pbl`: inline addresses, or an `efa_admin_ctrl_buff_info`.
        pub const PBL: usize = 8;
        /// Inline page addresses.
        pub const INLINE_PAGES: usize = 4;
        /// `mr_length`.
        pub const MR_LENGTH: usize = 40;
        /// `flags`.
        pub const FLAGS: usize = 48;
        /// `permissions`.
        pub const PERMISSIONS: usize = 49;
        /// `reserved16_w5`.
        pub const RESERVED5: usize = 50;
        /// `page_num`.
        pub const PAGE_NUM: usize = 52;
        /// `iova`.
        pub const IOVA: usize = 56;
        /// `flags`: `phys_page_size_shift`.
        pub const FLAGS_PAGE_SHIFT: u8 = 0x3f;
        /// `permissions`: `local_write_enable` (receive buffers, RDMA read
        /// targets).
        pub const ACCESS_LOCAL_WRITE: u8 = 1 << 0;
        /// `permissions`: `remote_write_enable` (RDMA write into the MR).
        pub const ACCESS_REMOTE_WRITE: u8 = 1 << 1;
        /// `permissions`: `remote_read_enable` (RDMA read from the MR).
        pub const ACCESS_REMOTE_READ: u8 = 1 << 2;
    }

    /// `efa_admin_create_cq_cmd` and `_resp`.
    pub mod create_cq {
        /// `cq_caps_1`.
        pub const CAPS_1: usize = 4;
        /// `cq_caps_2`.
        pub const CAPS_2: usize = 5;
        /// `sub_cq_depth`.
        pub const SUB_CQ_DEPTH: usize = 6;
        /// `eqn`.
        pub const EQN: usize = 8;
        /// `reserved`.
        pub const RESERVED: usize = 10;
        /// `cq_ba`.
        pub const CQ_BA: usize = 12;
        /// `l_key`.
        pub const L_KEY: usize = 20;
        /// `num_sub_cqs`.
        pub const NUM_SUB_CQS: usize = 24;
        /// `uar`.
        pub const UAR: usize = 26;
        /// `cq_caps_1`: `interrupt_mode_enabled`.
        pub const CAPS_1_INTERRUPT_MODE: u8 = 1 << 5;
        /// `cq_caps_2`: `cq_entry_size_words`.
        pub const CAPS_2_ENTRY_SIZE_WORDS: u8 = 0x1f;
        /// `cq_caps_2`: `set_src_addr`.
        pub const CAPS_2_SET_SRC_ADDR: u8 = 1 << 5;
        /// `efa_admin_create_cq_resp`: `cq_idx`.
        pub const RESP_IDX: usize = super::RESP;
        /// `efa_admin_create_cq_resp`: `cq_actual_depth`.
        pub const RESP_DEPTH: usize = super::RESP + 2;
        /// `efa_admin_create_cq_resp`: `db_offset`.
        pub const RESP_DB: usize = super::RESP + 4;
        /// `efa_admin_create_cq_resp`: `flags`.
        pub const RESP_FLAGS: usize = super::RESP + 8;
        /// `efa_admin_create_cq_resp.flags`: `db_valid`.
        pub const RESP_DB_VALID: u32 = 1 << 0;
    }

    /// `efa_admin_create_eq_cmd`.
    pub mod create_eq {
        /// `depth`.
        pub const DEPTH: usize = 4;
        /// `msix_vec`.
        pub const MSIX_VEC: usize = 6;
        /// `caps`.
        pub const CAPS: usize = 7;
        /// `ba`.
        pub const BA: usize = 8;
        /// `event_bitmask`.
        pub const EVENT_BITMASK: usize = 16;
        /// `reserved`.
        pub const RESERVED: usize = 20;
        /// `caps`: `entry_size_words`.
        pub const CAPS_ENTRY_SIZE_WORDS: u8 = 0x1f;
    }
}

/// `sizeof(struct efa_admin_host_info)`.
const HOST_INFO_SIZE: usize = 180;

fn feature_id(command: &Command) -> u8 {
    command.entry.u8(layout::feature::FEATURE_ID)
}

/// GET_FEATURE.
pub fn get_feature(command: &Command, settings: &EfaSettings, aenq: &Aenq) -> CommandResult {
    use layout::RESP;
    let mut r = Entry::default();
    match feature_id(command) {
        feature::DEVICE_ATTR => {
            r.set_u64(RESP, feature::SUPPORTED);
            r.set_u64(RESP + 8, PAGE_SIZE_CAP);
            r.set_u32(RESP + 16, FW_VERSION);
            r.set_u32(RESP + 20, ADMIN_API_VERSION);
            r.set_u32(RESP + 24, super::REGISTERS.version);
            r.set_u16(RESP + 28, DB_BAR);
            r.set_u8(RESP + 30, ADDR_WIDTH);
            r.set_u8(RESP + 31, ADDR_WIDTH);
            r.set_u32(RESP + 32, DEVICE_CAPS);
            r.set_u32(RESP + 36, MAX_RDMA_SIZE);
            r.set_u64(RESP + 40, settings.guid());
            r.set_u16(RESP + 48, LINK_SPEED_GBPS);
        }
        feature::QUEUE_ATTR_1 => {
            for (i, value) in [
                MAX_QP,
                MAX_SQ_DEPTH,
                INLINE_BUF_SIZE,
                MAX_RQ_DEPTH,
                MAX_CQ,
                MAX_CQ_DEPTH,
            ]
            .into_iter()
            .enumerate()
            {
                r.set_u32(RESP + 4 * i, value);
            }
            r.set_u16(RESP + 24, SUB_CQS_PER_CQ as u16);
            r.set_u16(RESP + 26, MIN_SQ_DEPTH);
            r.set_u16(RESP + 28, MAX_WR_SEND_SGES);
            r.set_u16(RESP + 30, MAX_WR_RECV_SGES);
            for (i, value) in [MAX_MR, MAX_MR_PAGES, MAX_PD, MAX_AH, MAX_LLQ_SIZE]
                .into_iter()
                .enumerate()
            {
                r.set_u32(RESP + 32 + 4 * i, value);
            }
            r.set_u16(RESP + 52, MAX_WR_RDMA_SGES);
            r.set_u16(RESP + 54, MAX_TX_BATCH);
        }
        feature::EVENT_QUEUE_ATTR => {
            r.set_u32(RESP, MAX_EQ);
            r.set_u32(RESP + 4, MAX_EQ_DEPTH);
            r.set_u32(RESP + 8, EQ_EVENTS);
        }
        feature::NETWORK_ATTR => {
            r.set_bytes(RESP, &settings.gid);
            r.set_u32(RESP + 16, MTU);
        }
        feature::AENQ_CONFIG => {
            r.set_u32(RESP, AENQ_SUPPORTED_GROUPS);
            r.set_u32(RESP + 4, aenq.enabled_groups);
        }
        feature::HW_HINTS => {
            r.set_u16(RESP, HINT_MMIO_READ_TIMEOUT_MS);
            r.set_u16(RESP + 6, HINT_POLL_INTERVAL_MS);
        }
        other => {
            return Err(Refused::unsupported(format!(
                "GET_FEATURE of feature {other}"
            )));
        }
    }
    Ok(r)
}

/// SET_FEATURE: the enabled AENQ groups, and the host information (read
/// from the control buffer and logged).
pub fn set_feature(command: &Command, aenq: &mut Aenq, dma: &GuestDma) -> CommandResult {
    let entry = &command.entry;
    match feature_id(command) {
        feature::AENQ_CONFIG => {
            let groups = entry.u32(layout::feature::AENQ_ENABLED);
            if groups & !AENQ_SUPPORTED_GROUPS != 0 {
                return Err(Refused::illegal(format!(
                    "AENQ groups {groups:#x} beyond the supported {AENQ_SUPPORTED_GROUPS:#x}"
                )));
            }
            aenq.enabled_groups = groups;
        }
        feature::HOST_INFO => {
            if command.flags() & aq::FLAG_CTRL_DATA == 0 {
                return Err(Refused::malformed("HOST_INFO without a control buffer"));
            }
            let length = entry.u32(layout::feature::CTRL_LENGTH) as usize;
            if length < HOST_INFO_SIZE {
                return Err(Refused::malformed(format!(
                    "HOST_INFO buffer of {length} bytes, expected {HOST_INFO_SIZE}"
                )));
            }
            let mut info = [0u8; HOST_INFO_SIZE];
            dma.read_slice(entry.u64(layout::feature::CTRL_ADDRESS), &mut info)
                .map_err(|err| Refused::dma("reading HOST_INFO", &err))?;
            let text = |bytes: &[u8]| {
                let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
                String::from_utf8_lossy(&bytes[..end]).into_owned()
            };
            let word = |off: usize| {
                u32::from_le_bytes([info[off], info[off + 1], info[off + 2], info[off + 3]])
            };
            info!(
                os = %text(&info[..128]),
                kernel = %text(&info[132..164]),
                kernel_code = format_args!("{:#x}", word(164)),
                driver_version = format_args!("{:#x}", word(168)),
                bdf = format_args!("{:#06x}", u16::from_le_bytes([info[172], info[173]])),
                flags = format_args!("{:#x}", word(176)),
                "EFA host information"
            );
        }
        other => {
            return Err(Refused::unsupported(format!(
                "SET_FEATURE of feature {other}"
            )));
        }
    }
    Ok(Entry::default())
}

/// GET_STATS: every type at device scope (the counters stay zero until the
/// data path exists).
pub fn get_stats(command: &Command, counters: &Stats) -> CommandResult {
    let kind = command.entry.u8(layout::get_stats::TYPE);
    let scope = command.entry.u8(layout::get_stats::SCOPE);
    if scope != stats::SCOPE_ALL {
        return Err(Refused::unsupported(format!(
            "statistics scope {scope} (the card counts per device only)"
        )));
    }
    let values: &[u64] = match kind {
        stats::BASIC => &counters.basic,
        stats::MESSAGES => &counters.messages,
        stats::RDMA_READ => &counters.rdma_read,
        stats::RDMA_WRITE => &counters.rdma_write,
        stats::NETWORK => &counters.network,
        other => return Err(Refused::illegal(format!("statistics type {other}"))),
    };
    let mut r = Entry::default();
    for (i, &value) in values.iter().enumerate() {
        r.set_u64(layout::RESP + 8 * i, value);
    }
    Ok(r)
}
