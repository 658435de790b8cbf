// SPDX-License-Identifier: GPL-2.0-only OR MIT

//! EFA's userspace verbs ABI, version 1: the udata of each verb libefa calls, as
//! `include/uapi/rdma/efa-abi.h` lays it out. Field names are the C names; `reserved_*` fields
//! are zero both ways.
//!
//! Depends on `core` only, so that the kernel driver can include this file as a module.

use core::mem::{offset_of, size_of};

/// The uverbs ABI version of the EFA provider (`EFA_UVERBS_ABI_VERSION`).
pub const UVERBS_ABI_VERSION: u32 = 1;

/// One field of an ABI structure: its C declaration (`{}` stands for the name), offset and size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Field {
    /// The field's name, in C as in Rust.
    pub name: &'static str,
    /// Its C declaration, with `{}` where the name goes (`__u8 {}[4]`).
    pub decl: &'static str,
    /// Offset in bytes.
    pub offset: usize,
    /// Size in bytes.
    pub size: usize,
}

/// An ABI structure's C name, size and fields, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// The C structure's name (without `struct`).
    pub name: &'static str,
    /// Its size in bytes.
    pub size: usize,
    /// Its fields.
    pub fields: &'static [Field],
}

/// Defines a `#[repr(C)]` ABI structure and its [`Layout`].
macro_rules! abi_struct {
    (
        $(#[$meta:meta])*
        $name:ident = $c_name:literal {
            $($(#[$field_meta:meta])* $field:ident: $ty:ty = $decl:literal,)*
        }
    ) => {
        $(#[$meta])*
        #[repr(C)]
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
        pub struct $name {
            $($(#[$field_meta])* pub $field: $ty,)*
        }

        impl $name {
            /// The structure's layout, for the C header and the layout tests.
            pub const LAYOUT: Layout = Layout {
                name: $c_name,
                size: size_of::<$name>(),
                fields: &[$(Field {
                    name: stringify!($field),
                    decl: $decl,
                    offset: offset_of!($name, $field),
                    size: size_of::<$ty>(),
                },)*],
            };
        }
    };
}

/// Defines modules of ABI constants and [`CONSTANTS`], the list of all of them with their C
/// names, from one table.
macro_rules! abi_constants {
    (
        $(
            $(#[$mod_meta:meta])*
            $module:ident: $ty:ty {
                $($(#[$meta:meta])* $name:ident = $c_name:literal = $value:expr,)*
            }
        )*
    ) => {
        $(
            $(#[$mod_meta])*
            pub mod $module {
                $($(#[$meta])* pub const $name: $ty = $value;)*
            }
        )*

        /// Every constant (but [`UVERBS_ABI_VERSION`]), with its C name, in header order.
        pub const CONSTANTS: &[(&str, u32)] = &[$($(($c_name, $module::$name as u32),)*)*];
    };
}

abi_constants! {
    /// `efa_ibv_alloc_ucontext_cmd.supported_caps`: what libefa understands.
    ucontext_cmd_caps: u32 {
        /// It batches TX doorbells up to `max_tx_batch`.
        TX_BATCH = "EFA_ALLOC_UCONTEXT_CMD_SUPP_CAPS_TX_BATCH" = 1 << 0,
        /// It honours `min_sq_wr`.
        MIN_SQ_WR = "EFA_ALLOC_UCONTEXT_CMD_SUPP_CAPS_MIN_SQ_WR" = 1 << 1,
    }
    /// `efa_ibv_alloc_ucontext_resp.cmds_supp_udata_mask`: verbs whose udata the driver reads.
    cmds_supp_udata: u32 {
        /// Query device returns [`ExQueryDeviceResp`](super::ExQueryDeviceResp).
        QUERY_DEVICE = "EFA_USER_CMDS_SUPP_UDATA_QUERY_DEVICE" = 1 << 0,
        /// Create AH returns [`CreateAhResp`](super::CreateAhResp).
        CREATE_AH = "EFA_USER_CMDS_SUPP_UDATA_CREATE_AH" = 1 << 1,
    }
    /// `efa_ibv_create_cq.flags`.
    create_cq_flags: u8 {
        /// The CQ has a completion channel (completion events).
        WITH_COMPLETION_CHANNEL = "EFA_CREATE_CQ_WITH_COMPLETION_CHANNEL" = 1 << 0,
        /// Its entries carry the source GID.
        WITH_SGID = "EFA_CREATE_CQ_WITH_SGID" = 1 << 1,
        /// Its send completions carry 64-bit request ids.
        WITH_SQ_COMP_64_BIT_REQ_ID = "EFA_CREATE_CQ_WITH_SQ_COMP_64_BIT_REQ_ID" = 1 << 2,
    }
    /// `efa_ibv_create_cq_resp.comp_mask`.
    create_cq_resp: u32 {
        /// `db_off` and `db_mmap_key` are valid.
        DB_OFF = "EFA_CREATE_CQ_RESP_DB_OFF" = 1 << 0,
    }
    /// `efa_ibv_create_qp.driver_qp_type`.
    qp_driver_type: u32 {
        /// An SRD QP.
        SRD = "EFA_QP_DRIVER_TYPE_SRD" = 0,
    }
    /// `efa_ibv_create_qp.flags`.
    create_qp_flags: u16 {
        /// RDMA writes with immediate data take no receive.
        WITH_UNSOLICITED_WRITE_RECV = "EFA_CREATE_QP_WITH_UNSOLICITED_WRITE_RECV" = 1 << 0,
        /// Send completions carry 64-bit request ids.
        WITH_SQ_64_BIT_REQ_ID = "EFA_CREATE_QP_WITH_SQ_64_BIT_REQ_ID" = 1 << 1,
    }
    /// `efa_ibv_ex_query_device_resp.device_caps`.
    device_caps: u32 {
        /// RDMA read.
        RDMA_READ = "EFA_QUERY_DEVICE_CAPS_RDMA_READ" = 1 << 0,
        /// RNR retry.
        RNR_RETRY = "EFA_QUERY_DEVICE_CAPS_RNR_RETRY" = 1 << 1,
        /// CQ notifications (completion events).
        CQ_NOTIFICATIONS = "EFA_QUERY_DEVICE_CAPS_CQ_NOTIFICATIONS" = 1 << 2,
        /// CQ entries with the source GID.
        CQ_WITH_SGID = "EFA_QUERY_DEVICE_CAPS_CQ_WITH_SGID" = 1 << 3,
        /// 128-byte data polling.
        DATA_POLLING_128 = "EFA_QUERY_DEVICE_CAPS_DATA_POLLING_128" = 1 << 4,
        /// RDMA write.
        RDMA_WRITE = "EFA_QUERY_DEVICE_CAPS_RDMA_WRITE" = 1 << 5,
        /// Unsolicited write receive.
        UNSOLICITED_WRITE_RECV = "EFA_QUERY_DEVICE_CAPS_UNSOLICITED_WRITE_RECV" = 1 << 6,
        /// CQs in external memory.
        CQ_WITH_EXT_MEM = "EFA_QUERY_DEVICE_CAPS_CQ_WITH_EXT_MEM" = 1 << 7,
        /// Completion counters.
        COMP_CNTR = "EFA_QUERY_DEVICE_CAPS_COMP_CNTR" = 1 << 8,
        /// 64-bit request ids in send completions.
        SQ_64_BIT_REQ_ID = "EFA_QUERY_DEVICE_CAPS_SQ_64_BIT_REQ_ID" = 1 << 9,
    }
}

abi_struct! {
    /// Alloc ucontext, in: what libefa supports.
    AllocUcontextCmd = "efa_ibv_alloc_ucontext_cmd" {
        /// [`ucontext_cmd_caps`] bits.
        supported_caps: u32 = "__u32 {}",
        /// Zero.
        reserved_20: [u8; 4] = "__u8 {}[4]",
    }
}

abi_struct! {
    /// Alloc ucontext, out: the device's limits for the context.
    AllocUcontextResp = "efa_ibv_alloc_ucontext_resp" {
        /// Valid fields beyond the first version (none defined).
        comp_mask: u32 = "__u32 {}",
        /// [`cmds_supp_udata`] bits.
        cmds_supp_udata_mask: u32 = "__u32 {}",
        /// Sub-CQs per CQ.
        sub_cqs_per_cq: u16 = "__u16 {}",
        /// Largest inline send, bytes.
        inline_buf_size: u16 = "__u16 {}",
        /// Largest LLQ (send queue ring), bytes.
        max_llq_size: u32 = "__u32 {}",
        /// Most WQEs between two TX doorbells, in units of 64 bytes.
        max_tx_batch: u16 = "__u16 {}",
        /// Smallest SQ depth.
        min_sq_wr: u16 = "__u16 {}",
        /// Largest inline send, bytes, when wider than 16 bits allow (0: see `inline_buf_size`).
        inline_buf_size_ex: u16 = "__u16 {}",
        /// Zero.
        reserved_b0: [u8; 2] = "__u8 {}[2]",
    }
}

abi_struct! {
    /// Alloc PD, out.
    AllocPdResp = "efa_ibv_alloc_pd_resp" {
        /// Valid fields beyond the first version (none defined).
        comp_mask: u32 = "__u32 {}",
        /// The PD number.
        pdn: u16 = "__u16 {}",
        /// Zero.
        reserved_30: [u8; 2] = "__u8 {}[2]",
    }
}

abi_struct! {
    /// Create CQ, in.
    CreateCq = "efa_ibv_create_cq" {
        /// Valid fields beyond the first version (none defined).
        comp_mask: u32 = "__u32 {}",
        /// Entry size, bytes.
        cq_entry_size: u32 = "__u32 {}",
        /// Sub-CQs.
        num_sub_cqs: u16 = "__u16 {}",
        /// [`create_cq_flags`] bits.
        flags: u8 = "__u8 {}",
        /// Zero.
        reserved_58: [u8; 5] = "__u8 {}[5]",
    }
}

abi_struct! {
    /// Create CQ, out: where to map the ring and the doorbell.
    CreateCqResp = "efa_ibv_create_cq_resp" {
        /// [`create_cq_resp::DB_OFF`] when the doorbell fields are valid.
        comp_mask: u32 = "__u32 {}",
        /// Zero.
        reserved_20: [u8; 4] = "__u8 {}[4]",
        /// mmap offset of the ring.
        q_mmap_key: u64 = "__aligned_u64 {}",
        /// Its length.
        q_mmap_size: u64 = "__aligned_u64 {}",
        /// The CQ's index (its doorbell and its events name it).
        cq_idx: u16 = "__u16 {}",
        /// Zero.
        reserved_d0: [u8; 2] = "__u8 {}[2]",
        /// Offset of the doorbell in its page.
        db_off: u32 = "__u32 {}",
        /// mmap offset of the doorbell page.
        db_mmap_key: u64 = "__aligned_u64 {}",
    }
}

abi_struct! {
    /// Create QP, in: the rings libefa wants.
    CreateQp = "efa_ibv_create_qp" {
        /// Valid fields beyond the first version (none defined).
        comp_mask: u32 = "__u32 {}",
        /// RQ ring, bytes.
        rq_ring_size: u32 = "__u32 {}",
        /// SQ ring, bytes.
        sq_ring_size: u32 = "__u32 {}",
        /// [`qp_driver_type::SRD`] for a driver QP.
        driver_qp_type: u32 = "__u32 {}",
        /// [`create_qp_flags`] bits.
        flags: u16 = "__u16 {}",
        /// Service level.
        sl: u8 = "__u8 {}",
        /// Zero.
        reserved_98: [u8; 5] = "__u8 {}[5]",
    }
}

abi_struct! {
    /// Create QP, out: where to map the rings and doorbells.
    CreateQpResp = "efa_ibv_create_qp_resp" {
        /// Valid fields beyond the first version (none defined).
        comp_mask: u32 = "__u32 {}",
        /// Offset of the RQ doorbell in its page.
        rq_db_offset: u32 = "__u32 {}",
        /// Offset of the SQ doorbell in its page.
        sq_db_offset: u32 = "__u32 {}",
        /// Offset of the LLQ descriptors in their page.
        llq_desc_offset: u32 = "__u32 {}",
        /// mmap offset of the RQ ring.
        rq_mmap_key: u64 = "__aligned_u64 {}",
        /// Its length.
        rq_mmap_size: u64 = "__aligned_u64 {}",
        /// mmap offset of the RQ doorbell page.
        rq_db_mmap_key: u64 = "__aligned_u64 {}",
        /// mmap offset of the SQ doorbell page.
        sq_db_mmap_key: u64 = "__aligned_u64 {}",
        /// mmap offset of the LLQ descriptors.
        llq_desc_mmap_key: u64 = "__aligned_u64 {}",
        /// Sub-CQ of the send completions.
        send_sub_cq_idx: u16 = "__u16 {}",
        /// Sub-CQ of the receive completions.
        recv_sub_cq_idx: u16 = "__u16 {}",
        /// Zero.
        reserved_1e0: [u8; 4] = "__u8 {}[4]",
    }
}

abi_struct! {
    /// Create AH, out.
    CreateAhResp = "efa_ibv_create_ah_resp" {
        /// Valid fields beyond the first version (none defined).
        comp_mask: u32 = "__u32 {}",
        /// The AH number WQEs name.
        efa_address_handle: u16 = "__u16 {}",
        /// Zero.
        reserved_30: [u8; 2] = "__u8 {}[2]",
    }
}

abi_struct! {
    /// Extended query device, out: the device's EFA limits and capabilities.
    ExQueryDeviceResp = "efa_ibv_ex_query_device_resp" {
        /// Valid fields beyond the first version (none defined).
        comp_mask: u32 = "__u32 {}",
        /// Deepest SQ.
        max_sq_wr: u32 = "__u32 {}",
        /// Deepest RQ.
        max_rq_wr: u32 = "__u32 {}",
        /// Most SGEs of a send.
        max_sq_sge: u16 = "__u16 {}",
        /// Most SGEs of a receive.
        max_rq_sge: u16 = "__u16 {}",
        /// Largest RDMA read or write, bytes.
        max_rdma_size: u32 = "__u32 {}",
        /// [`device_caps`] bits.
        device_caps: u32 = "__u32 {}",
    }
}

/// Every ABI structure, in header order.
pub const STRUCTS: [Layout; 9] = [
    AllocUcontextCmd::LAYOUT,
    AllocUcontextResp::LAYOUT,
    AllocPdResp::LAYOUT,
    CreateCq::LAYOUT,
    CreateCqResp::LAYOUT,
    CreateQp::LAYOUT,
    CreateQpResp::LAYOUT,
    CreateAhResp::LAYOUT,
    ExQueryDeviceResp::LAYOUT,
];
