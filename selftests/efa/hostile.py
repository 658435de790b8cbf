#!/usr/bin/env python3
"""A hostile EFA driver in userspace: bad admin commands, malformed WQEs, bad L_Keys and R_Keys and
out-of-range lengths get error statuses and error completions, and the card keeps serving.

Usage: hostile.py [--ktap-extra N] BDF

Drives the card's EFA function at BDF (no kernel driver bound) through sysfs, with the machinery of
selftests/lib/nitro.py: resets it as efa_com_dev_reset does, sets up the admin queue (polling, admin
API 0.3 as efa.ko speaks it: 128-byte submissions with a CRC16, every completion's CRC16 checked) and
sends bad commands, each refused with the status docs/card.md names. Then it creates what libefa
would (PD, UAR, a CQ of 32-byte entries, an SRD QP in RTS whose SQ is its LLQ slot of BAR2 and whose
RQ is a page of its memory, an MR with remote access, an AH for the function's own GID) and posts
WQEs to itself through the LLQ and the doorbells in BAR0's mapped pages: a good send and a good RDMA
write and read complete with status 0, and each malformed one completes with its error status
(efa_io_defs.h), after which good WQEs still complete. It ends with a device reset and disables the
function.

Prints one KTAP document (plan: its own cases plus N the caller adds after them); exit status 0
when every case passed.
"""

from __future__ import annotations

import os
import struct
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import nitro  # noqa: E402
from nitro import (  # noqa: E402
    ACQ_BODY, OUTSIDE_RAM, PAGE, AdminQueue, CheckFailed, Function, Status, command, dma_pages, expect,
    phase_of, reset, wait_for,
)

# --- The device interface, from the upstream efa driver (drivers/infiniband/hw/efa/) ---------------


class Op:
    """enum efa_admin_aq_opcode (efa_admin_cmds_defs.h)."""

    CREATE_QP = 1
    MODIFY_QP = 2
    DESTROY_QP = 4
    CREATE_AH = 5
    REG_MR = 7
    CREATE_CQ = 9
    GET_FEATURE = 11
    GET_STATS = 13
    ALLOC_PD = 14
    DEALLOC_PD = 15
    ALLOC_UAR = 16
    ALLOC_MR = 20
    UNASSIGNED = 23  # between SERVICE (21) and CREATE_EVENT_COUNTER (25)


class Feature:
    """enum efa_admin_aq_feature_id."""

    NETWORK_ATTR = 3
    QUEUE_ATTR_2 = 9


FEATURE_ID = 17  # efa_admin_get_feature_cmd.feature_common.feature_id
# efa_admin_create_cq_cmd / _resp.
CQ_CAPS_2, CQ_SUB_CQ_DEPTH, CQ_BA, CQ_NUM_SUB_CQS, CQ_UAR = 5, 6, 12, 24, 26
CQ_ENTRY_WORDS, CQ_SET_SRC_ADDR = 8, 1 << 5  # 32-byte entries, source GID when no AH
RESP_CQ_IDX = ACQ_BODY
# efa_admin_create_qp_cmd / _resp.
QP_PD, QP_TYPE, QP_RQ_BASE, QP_SEND_CQ, QP_RECV_CQ = 4, 6, 16, 24, 28
QP_SQ_RING_SIZE, QP_SQ_DEPTH, QP_RQ_RING_SIZE, QP_RQ_DEPTH, QP_UAR = 40, 44, 48, 52, 56
QP_TYPE_SRD = 2
RESP_QP_HANDLE, RESP_QP_NUM, RESP_SQ_DB, RESP_RQ_DB, RESP_LLQ = 8, 12, 20, 24, 28
# efa_admin_modify_qp_cmd: modify_mask, qp_handle, qp_state, cur_qp_state, qkey.
MODIFY_MASK, MODIFY_HANDLE, MODIFY_STATE, MODIFY_QKEY = 4, 8, 12, 20
MODIFY_MASK_STATE, MODIFY_MASK_QKEY = 1 << 0, 1 << 2
QP_INIT, QP_RTR, QP_RTS = 1, 2, 3  # enum efa_admin_qp_state
DESTROY_QP_HANDLE = 4
# efa_admin_create_ah_cmd: dest_addr[16], pd.
AH_DEST, AH_PD = 4, 20
# efa_admin_reg_mr_cmd: pd, pbl (four inline page addresses), mr_length, flags (page shift),
# permissions, page_num, iova; the response's l_key.
MR_PD, MR_PBL, MR_LENGTH, MR_FLAGS, MR_PERMISSIONS, MR_IOVA = 4, 8, 40, 48, 49, 56
ACCESS_LOCAL_WRITE, ACCESS_REMOTE_WRITE, ACCESS_REMOTE_READ = 1, 2, 4
# efa_admin_aq_get_stats_cmd: type, scope; efa_admin_rdma_read_stats/_write_stats: wrs, bytes,
# wr_err, resp/recv bytes.
STATS_TYPE = 16
STATS_BASIC, STATS_RDMA_READ, STATS_RDMA_WRITE = 0, 2, 3

# efa_io_defs.h: the 64-byte efa_io_tx_wqe (meta descriptor, then data), the 16-byte
# efa_io_rx_desc, the 32-byte completions (efa_io_cdesc_common first).
WQE_SIZE, RX_DESC_SIZE, CQE_SIZE = 64, 16, 32
META_FORMAT = "<HBBHHIHBBI6x6s"  # req_id ctrl1 ctrl2 dest_qp_num length immediate_data ah ctrl3 qkey req_id_ex
OP_SEND, OP_RDMA_READ, OP_RDMA_WRITE = 0, 1, 2
CTRL1_HAS_IMM, CTRL1_INLINE, CTRL1_META_DESC = 1 << 4, 1 << 5, 1 << 7
CTRL2_FIRST, CTRL2_LAST, CTRL2_COMP_REQ = 1 << 2, 1 << 3, 1 << 4
Q_SEND, Q_RECV = 1, 2  # efa_io_cdesc_common.flags 2:1


class Io:
    """enum efa_io_comp_status."""

    OK = 0
    UNSUPPORTED_OP = 3
    INVALID_AH = 4
    INVALID_LKEY = 5
    BAD_LENGTH = 6
    REMOTE_BAD_ADDRESS = 7
    BAD_DEST_QPN = 9
    RNR = 10


# --- What the card promises (docs/card.md) ----------------------------------------------------------

CARD_MTU = 4096
CARD_INLINE = 32
SQ_DEPTH = 16  # 16 WQEs of the QP's LLQ slot
RQ_DEPTH = 64  # 64 receive descriptors: a quarter page
CQ_DEPTH = 64  # 64 32-byte entries: half a page
QKEY = 0x5EED
IOVA = 0x1000_0000  # the MR's IO virtual address: two pages
WAIT_NONE = 0.2  # how long "no completion" is watched for (the card polls every <= 2 ms)


def wqe(op: int, *, req_id: int, dest_qp: int, ah: int, qkey: int = QKEY, length: int = 1, ctrl1: int | None = None,
        imm: int | None = None, data: bytes = b"") -> bytes:
    """An efa_io_tx_wqe asking for a completion; `length` is the SGE count (or inline bytes)."""
    c1 = (CTRL1_META_DESC | op | (CTRL1_HAS_IMM if imm is not None else 0)) if ctrl1 is None else ctrl1
    meta = struct.pack(META_FORMAT, req_id, c1, CTRL2_FIRST | CTRL2_LAST | CTRL2_COMP_REQ, dest_qp, length,
                       imm or 0, ah, 0, 0, qkey, bytes(6))
    return meta + data.ljust(WQE_SIZE - len(meta), b"\0")


def buf(length: int, lkey: int, addr: int) -> bytes:
    """efa_io_tx_buf_desc (and efa_io_remote_mem_addr: length, rkey, address)."""
    return struct.pack("<IIQ", length, lkey, addr)


class Cqe:
    """A completion: efa_io_cdesc_common (req_id, status, flags, qp_num) and, for a receive, length."""

    def __init__(self, raw: bytes):
        self.req_id, self.status, flags, self.qp_num, self.length = struct.unpack_from("<HBBHH", raw)
        self.queue = (flags >> 1) & 3

    def __str__(self) -> str:
        kind = {Q_SEND: "send", Q_RECV: "receive"}.get(self.queue, f"queue {self.queue}")
        return f"{kind} req_id {self.req_id} status {self.status}"


# --- The test --------------------------------------------------------------------------------------


class Hostile:
    """The cases, in order, sharing one device. A case raises CheckFailed to fail."""

    def __init__(self, bdf: str):
        self.bdf = bdf
        self.fn = self.bar = self.llq_bar = self.aq = None
        self.sq_pc = self.rq_pc = self.cq_head = 0
        self.req_id = 0

    # Plumbing.

    def refused(self, what: str, entry: bytearray, want: int, **post) -> None:
        self.aq.run(what, entry, want, **post)

    def ok(self, what: str, entry: bytearray):
        return self.aq.run(what, entry, Status.SUCCESS)

    def stats(self, kind: int) -> tuple[int, ...]:
        entry = command(Op.GET_STATS)
        entry[STATS_TYPE] = kind
        c = self.ok(f"GET_STATS type {kind}", entry)
        return struct.unpack_from("<6Q" if kind == STATS_BASIC else "<4Q", c.raw, ACQ_BODY)

    def next_cqe(self) -> Cqe | None:
        """The completion at our head, if the card wrote it (phase 1 on the first pass)."""
        at = (self.cq_head % CQ_DEPTH) * CQE_SIZE
        if self.cq.view[at + 3] & 1 != phase_of(self.cq_head, CQ_DEPTH):
            return None
        self.cq_head += 1
        return Cqe(bytes(self.cq.view[at:at + CQE_SIZE]))

    def completions(self, n: int, what: str) -> list[Cqe]:
        """The next `n` completions, then none more for a while."""
        got = [wait_for(f"completion {i + 1} of {n} of {what}", self.next_cqe) for i in range(n)]
        time.sleep(WAIT_NONE)
        extra = self.next_cqe()
        if extra is not None:
            raise CheckFailed(f"{what}: an unexpected completion ({extra})")
        return got

    def post_send(self, entry: bytes) -> None:
        """Writes a WQE at the SQ's producer position in the LLQ (phase 0 on the first pass, as
        libefa) and rings the SQ doorbell with the new producer counter."""
        phase = 0 if (self.sq_pc // SQ_DEPTH) % 2 == 0 else 1
        raw = bytearray(entry)
        raw[3] |= phase
        self.llq_bar.write_block(self.llq + (self.sq_pc % SQ_DEPTH) * WQE_SIZE, bytes(raw))
        self.sq_pc = (self.sq_pc + 1) & 0xFFFF
        self.bar.write32(self.sq_db, self.sq_pc)

    def post_recv(self, length: int, addr: int, req_id: int, lkey: int | None = None) -> None:
        at = (self.rq_pc % RQ_DEPTH) * RX_DESC_SIZE
        lkey = self.lkey if lkey is None else lkey
        self.rq.view[at:at + RX_DESC_SIZE] = struct.pack("<QHHI", addr, req_id, length, lkey | 3 << 30)
        self.rq_pc = (self.rq_pc + 1) & 0xFFFF
        self.bar.write32(self.rq_db, self.rq_pc)

    def send(self, *, data_len: int = 100, **fields) -> Cqe:
        """One send WQE of `data_len` bytes from the MR's start (fields override wqe()'s) and its
        one completion."""
        self.req_id += 1
        args = {"req_id": self.req_id, "dest_qp": self.qpn, "ah": self.ah, "data": buf(data_len, self.lkey, IOVA)}
        args.update(fields)
        self.post_send(wqe(args.pop("op", OP_SEND), **args))
        (c,) = self.completions(1, f"WQE {self.req_id}")
        expect(f"WQE {self.req_id}: a send completion with its req_id", (c.queue, c.req_id), (Q_SEND, self.req_id))
        return c

    def rdma(self, op: int, *, length: int = 256, rkey: int | None = None, remote: int = IOVA + PAGE,
             local_len: int | None = None) -> Cqe:
        data = buf(length, self.lkey if rkey is None else rkey, remote) + buf(
            length if local_len is None else local_len, self.lkey, IOVA)
        return self.send(op=op, data=data)

    def refused_wqe(self, status: int, **fields) -> None:
        c = self.send(**fields)
        expect(f"WQE {self.req_id}: completion status", c.status, status)

    # Setup.

    def case_function_enabled(self) -> None:
        self.fn = Function(self.bdf)
        self.fn.enable()
        self.bar = self.fn.bar(0)
        self.llq_bar = self.fn.bar(2)
        self.pages = dma_pages(6)
        self.aq = AdminQueue(self.bar, self.pages[0], self.pages[1], v2=True)
        self.cq, self.rq = self.pages[2], self.pages[3]
        self.data = self.pages[4:6]

    def case_device_reset(self) -> None:
        reset(self.bar)
        self.aq.setup()

    def case_aq_network_attr_gid(self) -> None:
        entry = command(Op.GET_FEATURE)
        entry[FEATURE_ID] = Feature.NETWORK_ATTR
        c = self.ok("GET_FEATURE NETWORK_ATTR", entry)
        self.gid = c.raw[ACQ_BODY:ACQ_BODY + 16]
        expect("GID prefix (link-local)", self.gid[:2].hex(), "fe80")
        expect("MTU", c.u32(ACQ_BODY + 16), CARD_MTU)

    # Bad admin commands.

    def case_aq_unknown_opcode_bad_opcode(self) -> None:
        self.refused("opcode 23", command(Op.UNASSIGNED), Status.BAD_OPCODE)

    def case_aq_alloc_mr_unsupported_opcode(self) -> None:
        self.refused("ALLOC_MR", command(Op.ALLOC_MR), Status.UNSUPPORTED_OPCODE)

    def case_aq_get_queue_attr_2_unsupported_opcode(self) -> None:
        entry = command(Op.GET_FEATURE)
        entry[FEATURE_ID] = Feature.QUEUE_ATTR_2
        self.refused("GET_FEATURE QUEUE_ATTR_2", entry, Status.UNSUPPORTED_OPCODE)

    def case_aq_bad_checksum_malformed_request(self) -> None:
        self.refused("ALLOC_PD with a wrong CRC16", command(Op.ALLOC_PD), Status.MALFORMED_REQUEST,
                     bad_checksum=True)

    def case_aq_wrong_phase_malformed_request(self) -> None:
        self.refused("ALLOC_PD with the wrong phase", command(Op.ALLOC_PD), Status.MALFORMED_REQUEST,
                     wrong_phase=True)

    def create_cq(self, depth: int = CQ_DEPTH, base: int | None = None) -> bytearray:
        entry = command(Op.CREATE_CQ)
        entry[CQ_CAPS_2] = CQ_ENTRY_WORDS | CQ_SET_SRC_ADDR
        struct.pack_into("<H", entry, CQ_SUB_CQ_DEPTH, depth)
        struct.pack_into("<Q", entry, CQ_BA, self.cq.gpa if base is None else base)
        struct.pack_into("<HH", entry, CQ_NUM_SUB_CQS, 1, self.uar)
        return entry

    def case_verbs_objects_created(self) -> None:
        self.pd = self.ok("ALLOC_PD", command(Op.ALLOC_PD)).u16(ACQ_BODY)
        self.uar = self.ok("ALLOC_UAR", command(Op.ALLOC_UAR)).u16(ACQ_BODY)
        self.cq.clear()
        self.cqn = self.ok("CREATE_CQ", self.create_cq()).u16(RESP_CQ_IDX)
        entry = command(Op.CREATE_QP)
        struct.pack_into("<HB", entry, QP_PD, self.pd, QP_TYPE_SRD)
        struct.pack_into("<Q", entry, QP_RQ_BASE, self.rq.gpa)
        struct.pack_into("<II", entry, QP_SEND_CQ, self.cqn, self.cqn)
        struct.pack_into("<IIIIH", entry, QP_SQ_RING_SIZE, SQ_DEPTH * WQE_SIZE, SQ_DEPTH, RQ_DEPTH * RX_DESC_SIZE,
                         RQ_DEPTH, self.uar)
        c = self.ok("CREATE_QP (SRD)", entry)
        self.handle, self.qpn = c.u32(RESP_QP_HANDLE), c.u16(RESP_QP_NUM)
        self.sq_db, self.rq_db, self.llq = c.u32(RESP_SQ_DB), c.u32(RESP_RQ_DB), c.u32(RESP_LLQ)
        for state in (QP_INIT, QP_RTR, QP_RTS):
            entry = command(Op.MODIFY_QP)
            struct.pack_into("<IIII", entry, MODIFY_MASK, MODIFY_MASK_STATE | MODIFY_MASK_QKEY, self.handle, state, 0)
            struct.pack_into("<I", entry, MODIFY_QKEY, QKEY)
            self.ok(f"MODIFY_QP to state {state}", entry)
        entry = self.reg_mr(ACCESS_LOCAL_WRITE | ACCESS_REMOTE_WRITE | ACCESS_REMOTE_READ)
        self.lkey = self.ok("REG_MR", entry).u32(ACQ_BODY)
        entry = command(Op.CREATE_AH)
        entry[AH_DEST:AH_DEST + 16] = self.gid
        struct.pack_into("<H", entry, AH_PD, self.pd)
        self.ah = self.ok("CREATE_AH (own GID)", entry).u16(ACQ_BODY)

    def reg_mr(self, access: int, pages: list[int] | None = None) -> bytearray:
        pages = [p.gpa for p in self.data] if pages is None else pages
        entry = command(Op.REG_MR)
        struct.pack_into("<H", entry, MR_PD, self.pd)
        for i, page in enumerate(pages):
            struct.pack_into("<Q", entry, MR_PBL + 8 * i, page)
        struct.pack_into("<QBB", entry, MR_LENGTH, len(pages) * PAGE, 12, access)
        struct.pack_into("<Q", entry, MR_IOVA, IOVA)
        return entry

    def case_aq_create_cq_depth_not_power_of_two_illegal_parameter(self) -> None:
        self.refused("CREATE_CQ of 48 entries", self.create_cq(48), Status.ILLEGAL_PARAMETER)

    def case_aq_create_cq_ring_outside_ram_illegal_parameter(self) -> None:
        self.refused("CREATE_CQ ring outside RAM", self.create_cq(base=OUTSIDE_RAM), Status.ILLEGAL_PARAMETER)

    def case_aq_reg_mr_page_outside_ram_illegal_parameter(self) -> None:
        entry = self.reg_mr(ACCESS_LOCAL_WRITE, [self.data[0].gpa, OUTSIDE_RAM])
        self.refused("REG_MR with a page outside RAM", entry, Status.ILLEGAL_PARAMETER)

    def case_aq_reg_mr_unknown_permission_illegal_parameter(self) -> None:
        self.refused("REG_MR with permission bit 3", self.reg_mr(1 << 3), Status.ILLEGAL_PARAMETER)

    def case_aq_create_qp_unknown_pd_illegal_parameter(self) -> None:
        entry = command(Op.CREATE_QP)
        struct.pack_into("<HB", entry, QP_PD, 63, QP_TYPE_SRD)
        self.refused("CREATE_QP on PD 63", entry, Status.ILLEGAL_PARAMETER)

    def case_aq_destroy_unknown_qp_illegal_parameter(self) -> None:
        entry = command(Op.DESTROY_QP)
        struct.pack_into("<I", entry, DESTROY_QP_HANDLE, self.handle ^ 0x100)
        self.refused("DESTROY_QP of another generation's handle", entry, Status.ILLEGAL_PARAMETER)

    def case_aq_dealloc_pd_in_use_resource_busy(self) -> None:
        entry = command(Op.DEALLOC_PD)
        struct.pack_into("<H", entry, 4, self.pd)
        self.refused("DEALLOC_PD with a QP, an MR and an AH", entry, Status.RESOURCE_BUSY)

    # The data path: good WQEs, then malformed ones.

    def case_send_to_self_completes(self) -> None:
        payload = bytes(range(100))
        self.data[0].view[:100] = payload
        self.post_recv(256, IOVA + PAGE, 7)
        self.req_id += 1
        self.post_send(wqe(OP_SEND, req_id=self.req_id, dest_qp=self.qpn, ah=self.ah, data=buf(100, self.lkey, IOVA)))
        got = {c.queue: c for c in self.completions(2, "a send to the QP itself")}
        expect("receive completion (req_id, status, length)",
               (got[Q_RECV].req_id, got[Q_RECV].status, got[Q_RECV].length), (7, Io.OK, 100))
        expect("send completion (req_id, status)", (got[Q_SEND].req_id, got[Q_SEND].status), (self.req_id, Io.OK))
        expect("payload in the receive buffer", bytes(self.data[1].view[:100]), payload)

    def case_rdma_write_and_read_complete(self) -> None:
        self.data[0].view[:256] = bytes(range(256))
        expect("RDMA write status", self.rdma(OP_RDMA_WRITE).status, Io.OK)
        expect("written bytes", bytes(self.data[1].view[:256]), bytes(range(256)))
        self.data[1].view[:256] = bytes(reversed(range(256)))
        expect("RDMA read status", self.rdma(OP_RDMA_READ).status, Io.OK)
        expect("read bytes", bytes(self.data[0].view[:256]), bytes(reversed(range(256))))

    def case_wqe_without_meta_desc_unsupported_op(self) -> None:
        self.refused_wqe(Io.UNSUPPORTED_OP, ctrl1=OP_SEND)

    def case_wqe_unknown_op_type_unsupported_op(self) -> None:
        self.refused_wqe(Io.UNSUPPORTED_OP, ctrl1=CTRL1_META_DESC | 7)

    def case_wqe_bad_lkey_invalid_lkey(self) -> None:
        self.refused_wqe(Io.INVALID_LKEY, data=buf(100, self.lkey ^ 0x100, IOVA))

    def case_wqe_sge_past_mr_end_invalid_lkey(self) -> None:
        self.refused_wqe(Io.INVALID_LKEY, data=buf(100, self.lkey, IOVA + 2 * PAGE - 50))

    def case_wqe_sge_above_mtu_bad_length(self) -> None:
        self.refused_wqe(Io.BAD_LENGTH, data=buf(CARD_MTU + 1, self.lkey, IOVA))

    def case_wqe_inline_too_long_bad_length(self) -> None:
        self.refused_wqe(Io.BAD_LENGTH, ctrl1=CTRL1_META_DESC | CTRL1_INLINE, length=CARD_INLINE + 1)

    def case_wqe_three_sges_bad_length(self) -> None:
        self.refused_wqe(Io.BAD_LENGTH, length=3)

    def case_wqe_bad_ah_invalid_ah(self) -> None:
        self.refused_wqe(Io.INVALID_AH, ah=self.ah + 17)

    def case_send_to_missing_qp_bad_dest_qpn(self) -> None:
        self.refused_wqe(Io.BAD_DEST_QPN, dest_qp=self.qpn + 9)

    def case_send_with_wrong_qkey_bad_dest_qpn(self) -> None:
        self.refused_wqe(Io.BAD_DEST_QPN, qkey=QKEY + 1)

    def case_send_without_receive_rnr(self) -> None:
        self.refused_wqe(Io.RNR)

    def case_receive_too_small_bad_length(self) -> None:
        self.post_recv(50, IOVA + PAGE, 8)
        self.req_id += 1
        self.post_send(wqe(OP_SEND, req_id=self.req_id, dest_qp=self.qpn, ah=self.ah, data=buf(100, self.lkey, IOVA)))
        got = {c.queue: c for c in self.completions(2, "a send into a 50-byte receive")}
        expect("receive completion status", got[Q_RECV].status, Io.BAD_LENGTH)
        expect("the sender learns a receive took it", got[Q_SEND].status, Io.OK)

    def case_rdma_bad_rkey_remote_bad_address(self) -> None:
        expect("status", self.rdma(OP_RDMA_READ, rkey=self.lkey ^ 0x100).status, Io.REMOTE_BAD_ADDRESS)

    def case_rdma_read_past_mr_remote_bad_address(self) -> None:
        expect("status", self.rdma(OP_RDMA_READ, remote=IOVA + 2 * PAGE - 100).status, Io.REMOTE_BAD_ADDRESS)

    def case_rdma_lengths_disagree_bad_length(self) -> None:
        expect("status", self.rdma(OP_RDMA_WRITE, local_len=128).status, Io.BAD_LENGTH)

    def case_sq_doorbell_beyond_ring_skipped(self) -> None:
        """A producer counter more than a ring ahead is skipped whole: nothing completes, and WQEs
        posted from there on are served."""
        self.sq_pc = (self.sq_pc + SQ_DEPTH + 5) & 0xFFFF
        self.bar.write32(self.sq_db, self.sq_pc)
        time.sleep(WAIT_NONE)
        if (c := self.next_cqe()) is not None:
            raise CheckFailed(f"a completion for a doorbell beyond the ring ({c})")
        self.post_recv(256, IOVA + PAGE, 9)
        self.req_id += 1
        self.post_send(wqe(OP_SEND, req_id=self.req_id, dest_qp=self.qpn, ah=self.ah, data=buf(100, self.lkey, IOVA)))
        got = {c.queue: c.status for c in self.completions(2, "a good send after the skipped doorbell")}
        expect("statuses", got, {Q_RECV: Io.OK, Q_SEND: Io.OK})

    def case_stats_count_traffic_and_errors(self) -> None:
        tx_bytes, tx_pkts, rx_bytes, rx_pkts, rx_drops, _ = self.stats(STATS_BASIC)
        read_wrs, _, read_err, read_resp = self.stats(STATS_RDMA_READ)
        write_wrs, _, write_err, write_recv = self.stats(STATS_RDMA_WRITE)
        expect("RDMA reads: WRs, errors, bytes served", (read_wrs, read_err, read_resp), (3, 2, 256))
        expect("RDMA writes: WRs, errors, bytes received", (write_wrs, write_err, write_recv), (1, 1, 256))
        # Received: the two good sends and the good write. Dropped: the sends to a missing QP, with
        # the wrong Q_Key and without a receive.
        expect("rx_pkts, rx_drops", (rx_pkts, rx_drops), (3, 3))
        if tx_pkts < rx_pkts + rx_drops or rx_bytes != 100 + 256 + 100 or tx_bytes < rx_bytes:
            raise CheckFailed(f"basic counters: tx {tx_pkts} packets, {tx_bytes} bytes; rx {rx_bytes} bytes")

    def case_device_reset_after_abuse(self) -> None:
        reset(self.bar)
        self.aq.setup()
        expect("counters after the reset (tx_pkts, rx_pkts)", self.stats(STATS_BASIC)[1:4:2], (0, 0))

    def cleanup(self) -> None:
        """Whatever happened: no queue of the card may keep pointing at this process's pages."""
        if self.bar is not None:
            try:
                reset(self.bar)
            except CheckFailed:
                pass
        if self.fn is not None:
            self.fn.disable()


# Cases in order; a case needs the earlier case it names (skipped when that one failed).
SETUP, RESET, AQ, VERBS = "function_enabled", "device_reset", "aq_network_attr_gid", "verbs_objects_created"
PLAN: list[tuple[str, str | None]] = [
    (SETUP, None),
    (RESET, SETUP),
    (AQ, RESET),
    *[(name, AQ) for name in (
        "aq_unknown_opcode_bad_opcode",
        "aq_alloc_mr_unsupported_opcode",
        "aq_get_queue_attr_2_unsupported_opcode",
        "aq_wrong_phase_malformed_request",
        "aq_bad_checksum_malformed_request",
    )],
    (VERBS, AQ),
    *[(name, VERBS) for name in (
        "aq_create_cq_depth_not_power_of_two_illegal_parameter",
        "aq_create_cq_ring_outside_ram_illegal_parameter",
        "aq_reg_mr_page_outside_ram_illegal_parameter",
        "aq_reg_mr_unknown_permission_illegal_parameter",
        "aq_create_qp_unknown_pd_illegal_parameter",
        "aq_destroy_unknown_qp_illegal_parameter",
        "aq_dealloc_pd_in_use_resource_busy",
        "send_to_self_completes",
        "rdma_write_and_read_complete",
        "wqe_without_meta_desc_unsupported_op",
        "wqe_unknown_op_type_unsupported_op",
        "wqe_bad_lkey_invalid_lkey",
        "wqe_sge_past_mr_end_invalid_lkey",
        "wqe_sge_above_mtu_bad_length",
        "wqe_inline_too_long_bad_length",
        "wqe_three_sges_bad_length",
        "wqe_bad_ah_invalid_ah",
        "send_to_missing_qp_bad_dest_qpn",
        "send_with_wrong_qkey_bad_dest_qpn",
        "send_without_receive_rnr",
        "receive_too_small_bad_length",
        "rdma_bad_rkey_remote_bad_address",
        "rdma_read_past_mr_remote_bad_address",
        "rdma_lengths_disagree_bad_length",
        "sq_doorbell_beyond_ring_skipped",
        "stats_count_traffic_and_errors",
    )],
    ("device_reset_after_abuse", RESET),
]


if __name__ == "__main__":
    sys.exit(nitro.main(__doc__, PLAN, Hostile, "hostile EFA driver"))
