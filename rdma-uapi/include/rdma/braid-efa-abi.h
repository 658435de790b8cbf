/* SPDX-License-Identifier: ((GPL-2.0 WITH Linux-syscall-note) OR MIT) */
/*
 * The userspace verbs ABI of braid.ko's RDMA provider: EFA's, version 1, so that libefa
 * binds to it (layout as include/uapi/rdma/efa-abi.h). Written from rdma-uapi/src/efa.rs
 * by its tests (BRAID_UAPI_WRITE=1 cargo test -p rdma-uapi); do not edit.
 */

#ifndef BRAID_EFA_ABI_H
#define BRAID_EFA_ABI_H

#include <linux/types.h>

#define EFA_UVERBS_ABI_VERSION 1

enum {
	EFA_ALLOC_UCONTEXT_CMD_SUPP_CAPS_TX_BATCH = 0x1,
	EFA_ALLOC_UCONTEXT_CMD_SUPP_CAPS_MIN_SQ_WR = 0x2,
	EFA_USER_CMDS_SUPP_UDATA_QUERY_DEVICE = 0x1,
	EFA_USER_CMDS_SUPP_UDATA_CREATE_AH = 0x2,
	EFA_CREATE_CQ_WITH_COMPLETION_CHANNEL = 0x1,
	EFA_CREATE_CQ_WITH_SGID = 0x2,
	EFA_CREATE_CQ_WITH_SQ_COMP_64_BIT_REQ_ID = 0x4,
	EFA_CREATE_CQ_RESP_DB_OFF = 0x1,
	EFA_QP_DRIVER_TYPE_SRD = 0x0,
	EFA_CREATE_QP_WITH_UNSOLICITED_WRITE_RECV = 0x1,
	EFA_CREATE_QP_WITH_SQ_64_BIT_REQ_ID = 0x2,
	EFA_QUERY_DEVICE_CAPS_RDMA_READ = 0x1,
	EFA_QUERY_DEVICE_CAPS_RNR_RETRY = 0x2,
	EFA_QUERY_DEVICE_CAPS_CQ_NOTIFICATIONS = 0x4,
	EFA_QUERY_DEVICE_CAPS_CQ_WITH_SGID = 0x8,
	EFA_QUERY_DEVICE_CAPS_DATA_POLLING_128 = 0x10,
	EFA_QUERY_DEVICE_CAPS_RDMA_WRITE = 0x20,
	EFA_QUERY_DEVICE_CAPS_UNSOLICITED_WRITE_RECV = 0x40,
	EFA_QUERY_DEVICE_CAPS_CQ_WITH_EXT_MEM = 0x80,
	EFA_QUERY_DEVICE_CAPS_COMP_CNTR = 0x100,
	EFA_QUERY_DEVICE_CAPS_SQ_64_BIT_REQ_ID = 0x200,
};

struct efa_ibv_alloc_ucontext_cmd {
	__u32 supported_caps;
	__u8 reserved_20[4];
};

struct efa_ibv_alloc_ucontext_resp {
	__u32 comp_mask;
	__u32 cmds_supp_udata_mask;
	__u16 sub_cqs_per_cq;
	__u16 inline_buf_size;
	__u32 max_llq_size;
	__u16 max_tx_batch;
	__u16 min_sq_wr;
	__u16 inline_buf_size_ex;
	__u8 reserved_b0[2];
};

struct efa_ibv_alloc_pd_resp {
	__u32 comp_mask;
	__u16 pdn;
	__u8 reserved_30[2];
};

struct efa_ibv_create_cq {
	__u32 comp_mask;
	__u32 cq_entry_size;
	__u16 num_sub_cqs;
	__u8 flags;
	__u8 reserved_58[5];
};

struct efa_ibv_create_cq_resp {
	__u32 comp_mask;
	__u8 reserved_20[4];
	__aligned_u64 q_mmap_key;
	__aligned_u64 q_mmap_size;
	__u16 cq_idx;
	__u8 reserved_d0[2];
	__u32 db_off;
	__aligned_u64 db_mmap_key;
};

struct efa_ibv_create_qp {
	__u32 comp_mask;
	__u32 rq_ring_size;
	__u32 sq_ring_size;
	__u32 driver_qp_type;
	__u16 flags;
	__u8 sl;
	__u8 reserved_98[5];
};

struct efa_ibv_create_qp_resp {
	__u32 comp_mask;
	__u32 rq_db_offset;
	__u32 sq_db_offset;
	__u32 llq_desc_offset;
	__aligned_u64 rq_mmap_key;
	__aligned_u64 rq_mmap_size;
	__aligned_u64 rq_db_mmap_key;
	__aligned_u64 sq_db_mmap_key;
	__aligned_u64 llq_desc_mmap_key;
	__u16 send_sub_cq_idx;
	__u16 recv_sub_cq_idx;
	__u8 reserved_1e0[4];
};

struct efa_ibv_create_ah_resp {
	__u32 comp_mask;
	__u16 efa_address_handle;
	__u8 reserved_30[2];
};

struct efa_ibv_ex_query_device_resp {
	__u32 comp_mask;
	__u32 max_sq_wr;
	__u32 max_rq_wr;
	__u16 max_sq_sge;
	__u16 max_rq_sge;
	__u32 max_rdma_size;
	__u32 device_caps;
};

#endif /* BRAID_EFA_ABI_H */
