#!/usr/bin/env python3
"""A hostile ENA driver in userspace: bad admin commands and malformed TX packets get error
statuses, and the card keeps serving.

Usage: hostile.py [--ktap-extra N] BDF

Drives the card's ENA function at BDF (no kernel driver bound) through sysfs: enables it and bus
mastering, maps BAR0 (registers 0x0-0xfff trap to the card; 0x1000-0x3fff are the doorbell pages
it polls), takes DMA memory from mlocked anonymous pages whose guest-physical addresses come from
/proc/self/pagemap (no IOMMU: guest-physical is the DMA address), resets the device as
ena_com_dev_reset does, sets up the admin queue and sends every command once valid and then broken
in one way each, checking the completion status against docs/card.md and the upstream headers.
It then creates a TX queue in host memory and posts malformed packets on it: each with a valid
req_id must complete with a non-zero status, the drops must be counted, and good packets must
still complete with status 0. It ends with a device reset and disables the function.

Prints one KTAP document (plan: its own cases plus N the caller adds after them); exit status 0
when every case passed.
"""

from __future__ import annotations

import os
import struct
import sys
import time
from typing import NamedTuple

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import nitro  # noqa: E402
from nitro import (  # noqa: E402
    ACQ_BODY, AQ_ENTRY_SIZE, AQ_FLAG_CTRL_DATA_INDIRECT, DEV_CTL_DEV_RESET, DEV_CTL_RESET_REASON_SHIFT,
    DEV_STS_FATAL_ERROR, OUTSIDE_RAM, PAGE, QUEUE_CAPS_ENTRY_SIZE_SHIFT, RESET_NORMAL, AdminQueue, Bar,
    CheckFailed, Completion, DmaPage, Function, Status, command, dma_pages, expect, phase_of, wait_for,
)
from nitro import Reg as NitroReg  # noqa: E402
from nitro import reset as nitro_reset  # noqa: E402

# --- The device interface, from the upstream ena driver (drivers/net/ethernet/amazon/ena/) ---------


class Reg(NitroReg):
    """BAR0 register offsets (ena_regs_defs.h, ENA_REGS_*_OFF): the shared ones and ENA's own."""

    ACQ_TAIL = 0x30
    AENQ_HEAD_DB = 0x40
    AENQ_TAIL = 0x44


class Op:
    """enum ena_admin_aq_opcode (ena_admin_defs.h)."""

    CREATE_SQ = 1
    DESTROY_SQ = 2
    CREATE_CQ = 3
    DESTROY_CQ = 4
    GET_FEATURE = 8
    SET_FEATURE = 9
    GET_STATS = 11


class Feature:
    """enum ena_admin_aq_feature_id (ena_admin_defs.h)."""

    DEVICE_ATTRIBUTES = 1
    RSS_HASH_FUNCTION = 10
    MTU = 14
    AENQ_CONFIG = 26
    UNASSIGNED = 30  # between HOST_ATTR_CONFIG (28)/PHC_CONFIG (29) and FEATURES_OPCODE_NUM (32)


# Byte offsets inside an ena_admin_aq_entry (after the 4-byte common descriptor).
CTRL_BUF = 4  # ena_admin_ctrl_buff_info {u32 length; ena_common_mem_addr address}
FEAT_ID, FEAT_VERSION = 17, 18  # ena_admin_get_set_feature_common_desc at 16
SET_FEAT_U = 20  # the union of ena_admin_set_feat_cmd (mtu: u32)
AENQ_ENABLED_GROUPS = SET_FEAT_U + 4  # ena_admin_feature_aenq_desc {supported_groups, enabled_groups}
CQ_CAPS_1, CQ_CAPS_2, CQ_DEPTH, CQ_MSIX_VECTOR, CQ_BA = 4, 5, 6, 8, 12  # ena_admin_aq_create_cq_cmd
CQ_INTERRUPT_MODE = 1 << 5  # ENA_ADMIN_AQ_CREATE_CQ_CMD_INTERRUPT_MODE_ENABLED_MASK
SQ_IDENTITY, SQ_CAPS_2, SQ_CAPS_3, SQ_CQ_IDX, SQ_DEPTH, SQ_BA = 4, 6, 7, 8, 10, 12  # create_sq_cmd
SQ_DIRECTION_SHIFT = 5  # ENA_ADMIN_AQ_CREATE_SQ_CMD_SQ_DIRECTION_SHIFT
SQ_COMPLETION_POLICY_SHIFT = 4
SQ_PHYSICALLY_CONTIGUOUS = 0x1
DIRECTION_TX = 1  # enum ena_admin_sq_direction
PLACEMENT_HOST = 1  # enum ena_admin_placement_policy_type
COMPLETION_POLICY_DESC = 0  # enum ena_admin_completion_policy_type
DESTROY_SQ_IDX, DESTROY_SQ_IDENTITY = 4, 6  # ena_admin_aq_destroy_sq_cmd.sq (ena_admin_sq)
DESTROY_CQ_IDX = 4  # ena_admin_aq_destroy_cq_cmd
STATS_TYPE, STATS_SCOPE, STATS_DEVICE_ID = 16, 17, 22  # ena_admin_aq_get_stats_cmd
STATS_TYPE_BASIC, STATS_TYPE_EXTENDED = 0, 1  # enum ena_admin_get_stats_type
STATS_SCOPE_ETH_TRAFFIC = 1  # enum ena_admin_get_stats_scope
# Responses (offsets in the ACQ entry).
RESP_CQ_IDX = ACQ_BODY  # ena_admin_acq_create_cq_resp_desc.cq_idx
RESP_SQ_IDX, RESP_SQ_DOORBELL = ACQ_BODY, ACQ_BODY + 4  # ena_admin_acq_create_sq_resp_desc
RESP_DEV_MAC, RESP_DEV_MAX_MTU = ACQ_BODY + 24, ACQ_BODY + 32  # ena_admin_device_attr_feature_desc
RSS_FLOW_HASH_CONTROL_SIZE = 48  # sizeof(struct ena_admin_feature_rss_flow_hash_control)

# ena_admin_aenq_entry: ena_admin_aenq_common_desc {u16 group; u16 syndrome; u8 flags (bit 0
# phase); ...}, then for LINK_CHANGE ena_admin_aenq_link_change_desc.flags (bit 0 link up) at 16.
AENQ_GROUP_LINK_CHANGE, AENQ_GROUP_WARNING = 0, 2  # enum ena_admin_aenq_group
AENQ_FLAGS, AENQ_LINK_FLAGS = 4, 16
AENQ_FLAG_PHASE = 0x1
AENQ_LINK_STATUS_UP = 0x1
AENQ_DEPTH = 16

# ena_eth_io_defs.h: ena_eth_io_tx_desc {len_ctrl, meta_ctrl, buff_addr_lo, buff_addr_hi_hdr_sz}.
TX_DESC_SIZE = 16
TX_LENGTH_MASK = 0xFFFF
TX_REQ_ID_HI_SHIFT = 16  # req_id[15:10] in len_ctrl 21:16
TX_PHASE_SHIFT = 24
TX_FIRST = 1 << 26
TX_LAST = 1 << 27
TX_COMP_REQ = 1 << 28
TX_REQ_ID_LO_SHIFT = 22  # req_id[9:0] in meta_ctrl 31:22
TX_ADDR_HI_MASK = 0xFFFF
# ena_eth_io_tx_cdesc {u16 req_id; u8 status; u8 flags (bit 0 phase); u16 sub_qid; u16 sq_head_idx}.
TX_CDESC_SIZE = 8
TX_CDESC_WORDS = TX_CDESC_SIZE // 4  # CREATE_CQ entry size, as ena.ko creates TX CQs

# --- What the card promises (docs/card.md) ----------------------------------------------------------

CARD_MAX_MTU = 9001  # GET_FEATURE DEVICE_ATTRIBUTES max_mtu; SET_FEATURE MTU takes 128..=9001
CARD_MIN_MTU = 128
CARD_MSIX_VECTORS = 9  # vector 0 for admin/AENQ, 1..8 for I/O CQs
CARD_MAX_TX_DESCS = 32  # descriptors per TX packet
CARD_MAX_FRAME = 9216
SQ_DOORBELL_PAGE = (0x1000, 0x3FFF)  # BAR0 doorbell pages, mapped (never trap)
AQ_DEPTH = 32
TX_DEPTH = 64  # 64 * 16-byte descriptors: one page
TX_CQ_DEPTH = 64


def put_addr(entry: bytearray, off: int, addr: int) -> None:
    """struct ena_common_mem_addr: mem_addr_low (u32), mem_addr_high (u16), reserved (u16)."""
    struct.pack_into("<IHH", entry, off, addr & 0xFFFF_FFFF, (addr >> 32) & 0xFFFF, 0)


def get_feature(feature: int, *, version: int = 0, ctrl: tuple[int, int] | None = None) -> bytearray:
    """ena_admin_get_feat_cmd; `ctrl` = (address, length) of an indirect control buffer."""
    entry = command(Op.GET_FEATURE)
    if ctrl:
        entry[3] |= AQ_FLAG_CTRL_DATA_INDIRECT
        struct.pack_into("<I", entry, CTRL_BUF, ctrl[1])
        put_addr(entry, CTRL_BUF + 4, ctrl[0])
    entry[FEAT_ID], entry[FEAT_VERSION] = feature, version
    return entry


def set_mtu(mtu: int) -> bytearray:
    """ena_admin_set_feat_cmd with ena_admin_set_feature_mtu_desc."""
    entry = command(Op.SET_FEATURE)
    entry[FEAT_ID] = Feature.MTU
    struct.pack_into("<I", entry, SET_FEAT_U, mtu)
    return entry


def set_aenq_groups(groups: int) -> bytearray:
    """ena_admin_set_feat_cmd with ena_admin_feature_aenq_desc."""
    entry = command(Op.SET_FEATURE)
    entry[FEAT_ID] = Feature.AENQ_CONFIG
    struct.pack_into("<I", entry, AENQ_ENABLED_GROUPS, groups)
    return entry


def create_cq(depth: int, base: int, *, words: int = TX_CDESC_WORDS, vector: int | None = None) -> bytearray:
    """ena_admin_aq_create_cq_cmd; `vector` set means interrupt mode."""
    entry = command(Op.CREATE_CQ)
    if vector is not None:
        entry[CQ_CAPS_1] = CQ_INTERRUPT_MODE
        struct.pack_into("<I", entry, CQ_MSIX_VECTOR, vector)
    entry[CQ_CAPS_2] = words
    struct.pack_into("<H", entry, CQ_DEPTH, depth)
    put_addr(entry, CQ_BA, base)
    return entry


def create_tx_sq(cq_idx: int, depth: int, base: int) -> bytearray:
    """ena_admin_aq_create_sq_cmd: TX, host placement, a completion per descriptor."""
    entry = command(Op.CREATE_SQ)
    entry[SQ_IDENTITY] = DIRECTION_TX << SQ_DIRECTION_SHIFT
    entry[SQ_CAPS_2] = PLACEMENT_HOST | (COMPLETION_POLICY_DESC << SQ_COMPLETION_POLICY_SHIFT)
    entry[SQ_CAPS_3] = SQ_PHYSICALLY_CONTIGUOUS
    struct.pack_into("<HH", entry, SQ_CQ_IDX, cq_idx, depth)
    put_addr(entry, SQ_BA, base)
    return entry


def destroy_tx_sq(idx: int) -> bytearray:
    entry = command(Op.DESTROY_SQ)
    struct.pack_into("<H", entry, DESTROY_SQ_IDX, idx)
    entry[DESTROY_SQ_IDENTITY] = DIRECTION_TX << SQ_DIRECTION_SHIFT
    return entry


def destroy_cq(idx: int) -> bytearray:
    entry = command(Op.DESTROY_CQ)
    struct.pack_into("<H", entry, DESTROY_CQ_IDX, idx)
    return entry


def get_stats(kind: int = STATS_TYPE_BASIC) -> bytearray:
    """ena_admin_aq_get_stats_cmd, device scope (device_id 0xffff: mine)."""
    entry = command(Op.GET_STATS)
    entry[STATS_TYPE], entry[STATS_SCOPE] = kind, STATS_SCOPE_ETH_TRAFFIC
    struct.pack_into("<H", entry, STATS_DEVICE_ID, 0xFFFF)
    return entry


class Stats(NamedTuple):
    """struct ena_admin_basic_stats: six 64-bit counters as low/high halves."""

    tx_bytes: int
    tx_pkts: int
    rx_bytes: int
    rx_pkts: int
    rx_drops: int
    tx_drops: int

    @classmethod
    def parse(cls, completion: Completion) -> "Stats":
        words = struct.unpack_from("<12I", completion.raw, ACQ_BODY)
        return cls(*(words[i] | words[i + 1] << 32 for i in range(0, 12, 2)))


# --- A TX queue in host memory -------------------------------------------------------------------


class TxDesc:
    """One ena_eth_io_tx_desc as ena_com_prepare_tx writes it: req_id and COMP_REQ on the first
    descriptor only; `wrong_phase` inverts the phase the ring position calls for."""

    def __init__(self, length: int, addr: int, *, first: bool = False, last: bool = False, req_id: int = 0,
                 comp_req: bool = False, wrong_phase: bool = False):
        self.length, self.addr, self.req_id = length, addr, req_id
        self.first, self.last, self.comp_req, self.wrong_phase = first, last, comp_req, wrong_phase

    def encode(self, phase: int) -> bytes:
        len_ctrl = (self.length & TX_LENGTH_MASK) | ((self.req_id >> 10) & 0x3F) << TX_REQ_ID_HI_SHIFT
        len_ctrl |= (phase ^ int(self.wrong_phase)) << TX_PHASE_SHIFT
        len_ctrl |= (TX_FIRST if self.first else 0) | (TX_LAST if self.last else 0)
        len_ctrl |= TX_COMP_REQ if self.comp_req else 0
        meta_ctrl = (self.req_id & 0x3FF) << TX_REQ_ID_LO_SHIFT
        return struct.pack("<IIII", len_ctrl, meta_ctrl, self.addr & 0xFFFF_FFFF, (self.addr >> 32) & TX_ADDR_HI_MASK)


def packet(req_id: int, buffers: list[tuple[int, int]], **first) -> list[TxDesc]:
    """A well-formed packet of (address, length) buffers; `first` overrides fields of the first
    descriptor (e.g. wrong_phase=True)."""
    descs = [TxDesc(length, addr) for addr, length in buffers]
    descs[0].first, descs[0].req_id, descs[0].comp_req = True, req_id, True
    descs[-1].last = True
    for key, value in first.items():
        setattr(descs[0], key, value)
    return descs


class TxCompletion(NamedTuple):
    """The fields of an ena_eth_io_tx_cdesc the checks look at."""

    req_id: int
    status: int

    def __str__(self) -> str:
        return f"req_id {self.req_id} status {self.status}"


class TxQueue:
    """A TX SQ (descriptor ring in a page) and its CQ; the doorbell takes the descriptor tail."""

    def __init__(self, bar: Bar, sq: DmaPage, cq: DmaPage, doorbell: int, depth: int, cq_depth: int):
        self.bar, self.sq, self.cq, self.doorbell = bar, sq, cq, doorbell
        self.depth, self.cq_depth = depth, cq_depth
        self.tail = 0  # free-running descriptor tail
        self.cq_head = 0

    def post(self, descs: list[TxDesc]) -> None:
        for desc in descs:
            slot = (self.tail % self.depth) * TX_DESC_SIZE
            self.sq.view[slot:slot + TX_DESC_SIZE] = desc.encode(phase_of(self.tail, self.depth))
            self.tail = (self.tail + 1) & 0xFFFF

    def ring(self, tail: int | None = None) -> None:
        if tail is not None:
            self.tail = tail & 0xFFFF
        self.bar.write32(self.doorbell, self.tail)

    def peek(self) -> TxCompletion | None:
        slot = (self.cq_head % self.cq_depth) * TX_CDESC_SIZE
        if self.cq.view[slot + 3] & 1 != phase_of(self.cq_head, self.cq_depth):
            return None
        req_id, status = struct.unpack_from("<HB", self.cq.view, slot)
        self.cq_head = (self.cq_head + 1) & 0xFFFF
        return TxCompletion(req_id, status)

    def wait(self, what: str) -> TxCompletion:
        return wait_for(f"the TX completion of {what} (CQ entry {self.cq_head})", self.peek)

    def drain(self) -> list[TxCompletion]:
        out = []
        while (c := self.peek()) is not None:
            out.append(c)
        return out


# --- The test --------------------------------------------------------------------------------------


class Hostile:
    """The cases, in order, sharing one device. A case raises CheckFailed to fail."""

    def __init__(self, bdf: str):
        self.bdf = bdf
        self.fn: Function | None = None
        self.bar: Bar | None = None
        self.aq: AdminQueue | None = None
        self.txq: TxQueue | None = None
        self.cq_idx = self.sq_idx = -1
        self.good_pkts = self.good_bytes = 0
        self.malformed_posted = self.drops = 0  # malformed submissions, and the drops they caused

    # Plumbing.

    def reset(self) -> None:
        nitro_reset(self.bar)

    def stats(self) -> Stats:
        return Stats.parse(self.aq.run("GET_STATS basic", get_stats(), Status.SUCCESS))

    def refused(self, what: str, entry: bytearray, want: int, **post) -> None:
        """A bad command: its completion carries `want`, and the ACQ tail moved by one."""
        self.aq.run(what, entry, want, **post)
        expect(f"{what}: ACQ_TAIL register", self.bar.read32(Reg.ACQ_TAIL), self.aq.cq_head)

    # Setup.

    def case_function_enabled(self) -> None:
        self.fn = Function(self.bdf)
        self.fn.enable()
        self.bar = self.fn.bar(0)
        expect("BAR0 VERSION register (0.10)", hex(self.bar.read32(Reg.VERSION)), hex(0x000A))
        self.llq_bar = self.fn.bar_address(2)  # device memory, not RAM: DMA must not reach it
        if not self.llq_bar:
            raise CheckFailed("BAR2 has no address")
        self.pages = dma_pages(7)  # AQ, ACQ, TX SQ, TX CQ, packet buffer, spare, AENQ
        self.aq = AdminQueue(self.bar, self.pages[0], self.pages[1])
        self.buffer = self.pages[4]
        self.frame = bytes([0xFF] * 6 + [0x02, 0, 0, 0, 0, 0x01]) + b"\x88\xb5" + bytes(range(46))
        self.buffer.view[:len(self.frame)] = self.frame

    def case_device_reset(self) -> None:
        self.reset()

    def case_aq_get_device_attributes_success(self) -> None:
        self.aq.setup()
        c = self.aq.run("GET_FEATURE(DEVICE_ATTRIBUTES)", get_feature(Feature.DEVICE_ATTRIBUTES), Status.SUCCESS)
        expect("completion phase on the first pass", c.phase, 1)
        expect("max_mtu", c.u32(RESP_DEV_MAX_MTU), CARD_MAX_MTU)
        mac = c.raw[RESP_DEV_MAC:RESP_DEV_MAC + 6]
        if mac == bytes(6) or mac[0] & 1:
            raise CheckFailed(f"device MAC {mac.hex(':')} is not a unicast address")

    # Bad admin commands: each gets its error status; the queue moves on.

    def case_aq_unknown_opcode_bad_opcode(self) -> None:
        self.refused("opcode 5", command(5), Status.BAD_OPCODE)

    def case_aq_get_unknown_feature_unsupported_opcode(self) -> None:
        self.refused(f"GET_FEATURE({Feature.UNASSIGNED})", get_feature(Feature.UNASSIGNED), Status.UNSUPPORTED_OPCODE)

    def case_aq_get_stats_extended_unsupported_opcode(self) -> None:
        self.refused("GET_STATS extended", get_stats(STATS_TYPE_EXTENDED), Status.UNSUPPORTED_OPCODE)

    def case_aq_create_cq_depth_not_power_of_two_illegal_parameter(self) -> None:
        self.refused("CREATE_CQ depth 100", create_cq(100, self.pages[3].gpa), Status.ILLEGAL_PARAMETER)

    def case_aq_create_cq_vector_out_of_range_illegal_parameter(self) -> None:
        self.refused(f"CREATE_CQ vector {CARD_MSIX_VECTORS}",
                     create_cq(TX_CQ_DEPTH, self.pages[3].gpa, vector=CARD_MSIX_VECTORS), Status.ILLEGAL_PARAMETER)

    def case_aq_create_cq_admin_vector_illegal_parameter(self) -> None:
        self.refused("CREATE_CQ vector 0 (the admin vector)", create_cq(TX_CQ_DEPTH, self.pages[3].gpa, vector=0),
                     Status.ILLEGAL_PARAMETER)

    def case_aq_create_cq_ring_outside_ram_malformed_request(self) -> None:
        self.refused(f"CREATE_CQ ring at {OUTSIDE_RAM:#x}", create_cq(TX_CQ_DEPTH, OUTSIDE_RAM),
                     Status.MALFORMED_REQUEST)

    def case_aq_create_cq_ring_in_device_bar_malformed_request(self) -> None:
        self.refused(f"CREATE_CQ ring in the function's own BAR2 at {self.llq_bar:#x}",
                     create_cq(TX_CQ_DEPTH, self.llq_bar), Status.MALFORMED_REQUEST)

    def case_aq_create_sq_missing_cq_illegal_parameter(self) -> None:
        self.refused("CREATE_SQ on CQ 15 (none exists)", create_tx_sq(15, TX_DEPTH, self.pages[2].gpa),
                     Status.ILLEGAL_PARAMETER)

    def case_aq_destroy_missing_sq_illegal_parameter(self) -> None:
        self.refused("DESTROY_SQ of TX SQ 7 (none exists)", destroy_tx_sq(7), Status.ILLEGAL_PARAMETER)

    def case_aq_destroy_missing_cq_illegal_parameter(self) -> None:
        self.refused("DESTROY_CQ of CQ 15 (none exists)", destroy_cq(15), Status.ILLEGAL_PARAMETER)

    def case_aq_set_mtu_above_max_illegal_parameter(self) -> None:
        self.refused(f"SET_FEATURE(MTU {CARD_MAX_MTU + 1})", set_mtu(CARD_MAX_MTU + 1), Status.ILLEGAL_PARAMETER)

    def case_aq_set_mtu_below_min_illegal_parameter(self) -> None:
        self.refused(f"SET_FEATURE(MTU {CARD_MIN_MTU - 1})", set_mtu(CARD_MIN_MTU - 1), Status.ILLEGAL_PARAMETER)

    def case_aq_wrong_phase_malformed_request(self) -> None:
        self.refused("GET_FEATURE(DEVICE_ATTRIBUTES) with the wrong phase bit",
                     get_feature(Feature.DEVICE_ATTRIBUTES), Status.MALFORMED_REQUEST, wrong_phase=True)

    def case_aq_command_id_beyond_depth_malformed_request(self) -> None:
        self.refused(f"GET_FEATURE(DEVICE_ATTRIBUTES) with command id {AQ_DEPTH + 5} (depth {AQ_DEPTH})",
                     get_feature(Feature.DEVICE_ATTRIBUTES), Status.MALFORMED_REQUEST, command_id=AQ_DEPTH + 5)

    def case_aq_control_buffer_outside_ram_malformed_request(self) -> None:
        self.refused(f"GET_FEATURE(RSS_HASH_FUNCTION) with its control buffer at {OUTSIDE_RAM:#x}",
                     get_feature(Feature.RSS_HASH_FUNCTION, ctrl=(OUTSIDE_RAM, RSS_FLOW_HASH_CONTROL_SIZE)),
                     Status.MALFORMED_REQUEST)

    def case_aq_control_buffer_too_short_malformed_request(self) -> None:
        self.refused("GET_FEATURE(RSS_HASH_FUNCTION) with an 8-byte control buffer",
                     get_feature(Feature.RSS_HASH_FUNCTION, ctrl=(self.pages[5].gpa, 8)), Status.MALFORMED_REQUEST)

    def case_aq_doorbell_beyond_ring_ignored(self) -> None:
        aq = self.aq
        tail_before = self.bar.read32(Reg.ACQ_TAIL)
        aq.post(get_feature(Feature.DEVICE_ATTRIBUTES))
        aq.tail = (aq.tail - 1) & 0xFFFF  # not really submitted: the doorbell lies
        aq.ring((aq.tail + AQ_DEPTH + 1) & 0xFFFF)
        time.sleep(0.05)
        if (c := aq.peek()) is not None:
            raise CheckFailed(f"a doorbell {AQ_DEPTH + 1} entries ahead got a completion (status "
                              f"{Status.name(c.status)}); expected none")
        expect("ACQ_TAIL after the refused doorbell", self.bar.read32(Reg.ACQ_TAIL), tail_before)
        expect("DEV_STS FATAL_ERROR", self.bar.read32(Reg.DEV_STS) & DEV_STS_FATAL_ERROR, 0)

    def case_aq_still_serves_after_bad_commands(self) -> None:
        c = self.aq.run("GET_FEATURE(DEVICE_ATTRIBUTES)", get_feature(Feature.DEVICE_ATTRIBUTES), Status.SUCCESS)
        expect("max_mtu", c.u32(RESP_DEV_MAX_MTU), CARD_MAX_MTU)
        self.aq.run(f"SET_FEATURE(MTU {CARD_MAX_MTU})", set_mtu(CARD_MAX_MTU), Status.SUCCESS)
        expect("DEV_STS FATAL_ERROR", self.bar.read32(Reg.DEV_STS) & DEV_STS_FATAL_ERROR, 0)

    # The AENQ: a head doorbell beyond the ring hands over no slot.

    def case_aq_set_aenq_unsupported_group_illegal_parameter(self) -> None:
        self.refused("SET_FEATURE(AENQ_CONFIG) enabling WARNING (not supported)",
                     set_aenq_groups(1 << AENQ_GROUP_WARNING), Status.ILLEGAL_PARAMETER)

    def case_aenq_head_beyond_ring_no_event(self) -> None:
        """ena_com_admin_init_aenq's order, but the head doorbell claims more slots than the ring
        has: the card must not write the pending link-change event anywhere."""
        aenq = self.pages[6]
        aenq.clear()
        self.bar.write32(Reg.AENQ_BASE_LO, aenq.gpa)
        self.bar.write32(Reg.AENQ_BASE_HI, aenq.gpa >> 32)
        self.bar.write32(Reg.AENQ_CAPS, AENQ_DEPTH | (AQ_ENTRY_SIZE << QUEUE_CAPS_ENTRY_SIZE_SHIFT))
        self.aq.run("SET_FEATURE(AENQ_CONFIG) enabling LINK_CHANGE", set_aenq_groups(1 << AENQ_GROUP_LINK_CHANGE),
                    Status.SUCCESS)
        self.bar.write32(Reg.AENQ_HEAD_DB, AENQ_DEPTH + 5)
        time.sleep(0.05)
        expect(f"AENQ_TAIL after a head doorbell of {AENQ_DEPTH + 5} (depth {AENQ_DEPTH})",
               self.bar.read32(Reg.AENQ_TAIL), 0)
        if any(aenq.view):
            raise CheckFailed("the card wrote into the AENQ although no slot was handed over")

    def case_aenq_link_event_after_valid_head(self) -> None:
        aenq = self.pages[6]
        self.bar.write32(Reg.AENQ_HEAD_DB, AENQ_DEPTH)  # the whole ring, as ena_com does
        wait_for("the link-change event in AENQ entry 0", lambda: aenq.view[AENQ_FLAGS] & AENQ_FLAG_PHASE)
        group, _, _ = struct.unpack_from("<HHB", aenq.view, 0)
        flags = struct.unpack_from("<I", aenq.view, AENQ_LINK_FLAGS)[0]
        expect("AENQ entry 0 (group, link status)", (group, flags & AENQ_LINK_STATUS_UP),
               (AENQ_GROUP_LINK_CHANGE, AENQ_LINK_STATUS_UP))
        expect("AENQ_TAIL", self.bar.read32(Reg.AENQ_TAIL), 1)

    # TX queue in host memory, malformed packets.

    def case_tx_queue_created(self) -> None:
        sq, cq = self.pages[2], self.pages[3]
        c = self.aq.run("CREATE_CQ", create_cq(TX_CQ_DEPTH, cq.gpa), Status.SUCCESS)
        self.cq_idx = c.u16(RESP_CQ_IDX)
        c = self.aq.run("CREATE_SQ (TX, host placement)", create_tx_sq(self.cq_idx, TX_DEPTH, sq.gpa), Status.SUCCESS)
        self.sq_idx, doorbell = c.u16(RESP_SQ_IDX), c.u32(RESP_SQ_DOORBELL)
        if not (SQ_DOORBELL_PAGE[0] <= doorbell <= SQ_DOORBELL_PAGE[1] - 3) or doorbell % 4:
            raise CheckFailed(f"SQ doorbell offset {doorbell:#x} is not a word in BAR0's doorbell pages")
        self.txq = TxQueue(self.bar, sq, cq, doorbell, TX_DEPTH, TX_CQ_DEPTH)
        s = self.stats()
        expect("counters after the reset (tx_pkts, tx_drops)", (s.tx_pkts, s.tx_drops), (0, 0))

    def case_aq_create_sq_on_busy_cq_resource_busy(self) -> None:
        self.refused(f"CREATE_SQ on CQ {self.cq_idx}, which serves TX SQ {self.sq_idx}",
                     create_tx_sq(self.cq_idx, TX_DEPTH, self.pages[5].gpa), Status.RESOURCE_BUSY)

    def good(self, req_id: int, what: str) -> None:
        before = self.stats()
        self.txq.post(packet(req_id, [(self.buffer.gpa, len(self.frame))]))
        self.txq.ring()
        c = self.txq.wait(what)
        expect(f"{what}: completion", str(c), str(TxCompletion(req_id, 0)))
        after = self.stats()
        self.good_pkts += 1
        self.good_bytes += len(self.frame)
        expect(f"{what}: tx_pkts, tx_bytes, tx_drops", (after.tx_pkts, after.tx_bytes, after.tx_drops),
               (before.tx_pkts + 1, before.tx_bytes + len(self.frame), before.tx_drops))

    def malformed(self, what: str, descs: list[TxDesc], *, completes: bool = True, tail: int | None = None) -> None:
        """Posts `descs` (or only moves the doorbell to `tail`), rings, and checks the outcome: one
        completion with a non-zero status for the first descriptor's req_id (or none at all), no
        packet sent, tx_drops up by one."""
        before = self.stats()
        self.malformed_posted += 1
        self.txq.post(descs)
        self.txq.ring(tail)
        if completes:
            c = self.txq.wait(what)
            expect(f"{what}: completion req_id", c.req_id, descs[0].req_id)
            if c.status == 0:
                raise CheckFailed(f"{what}: completion status: expected non-zero, got 0")
        after = wait_for(f"tx_drops to count {what}", lambda: (s := self.stats()).tx_drops > before.tx_drops and s)
        # GET_STATS waits for the card's data-path pass: whatever it completes is written by now.
        extra = self.txq.drain()
        if extra:
            raise CheckFailed(f"{what}: unexpected completions {', '.join(map(str, extra))}")
        drops = after.tx_drops - before.tx_drops
        expect(f"{what}: tx_drops increase", drops, 1)
        expect(f"{what}: tx_pkts", after.tx_pkts, before.tx_pkts)
        self.drops += drops

    def case_tx_good_packet_completes(self) -> None:
        self.good(1, "a good 60-byte packet")

    def case_tx_wrong_phase_error_completion(self) -> None:
        self.malformed("a descriptor with the wrong phase",
                       packet(2, [(self.buffer.gpa, len(self.frame))], wrong_phase=True))

    def case_tx_first_missing_error_completion(self) -> None:
        self.malformed("a packet without FIRST", packet(3, [(self.buffer.gpa, len(self.frame))], first=False))

    def case_tx_first_repeated_error_completion(self) -> None:
        descs = packet(4, [(self.buffer.gpa, 30), (self.buffer.gpa + 30, 30)])
        descs[1].first = True
        self.malformed("a packet with FIRST on its second descriptor too", descs)

    def case_tx_last_missing_error_completion(self) -> None:
        descs = packet(5, [(self.buffer.gpa, 30), (self.buffer.gpa + 30, 30)])
        descs[-1].last = False
        self.malformed("a packet without LAST in what the doorbell published", descs)

    def case_tx_too_many_descriptors_error_completion(self) -> None:
        n = CARD_MAX_TX_DESCS + 1
        # The card gives up after 32 descriptors and skips the rest of the packet to its LAST: one
        # drop, and the tail is not taken for another packet.
        self.malformed(f"a packet of {n} descriptors", packet(6, [(self.buffer.gpa, 32)] * n))

    def case_tx_req_id_out_of_range_dropped(self) -> None:
        self.malformed(f"req_id {TX_DEPTH} (ring of {TX_DEPTH})", packet(TX_DEPTH, [(self.buffer.gpa, 60)]),
                       completes=False)

    def case_tx_buffer_outside_ram_error_completion(self) -> None:
        self.malformed(f"a buffer at {OUTSIDE_RAM:#x}", packet(7, [(OUTSIDE_RAM, 60)]))

    def case_tx_buffer_in_device_bar_error_completion(self) -> None:
        self.malformed(f"a buffer in the function's own BAR2 at {self.llq_bar:#x}", packet(12, [(self.llq_bar, 60)]))

    def case_tx_frame_too_short_error_completion(self) -> None:
        self.malformed("a 10-byte frame", packet(8, [(self.buffer.gpa, 10)]))

    def case_tx_frame_too_long_error_completion(self) -> None:
        self.malformed(f"a {3 * PAGE}-byte frame (max {CARD_MAX_FRAME})", packet(9, [(self.buffer.gpa, PAGE)] * 3))

    def case_tx_doorbell_beyond_ring_skipped(self) -> None:
        tail = self.txq.tail + TX_DEPTH + 1
        self.malformed(f"a doorbell {TX_DEPTH + 1} descriptors ahead", [], completes=False, tail=tail)

    def case_tx_good_packet_after_abuse(self) -> None:
        self.good(10, "a good packet after the malformed ones")
        self.good(11, "a second good packet")

    def case_stats_count_drops_and_packets(self) -> None:
        s = self.stats()
        expect("GET_STATS tx_pkts, tx_bytes (the good packets)", (s.tx_pkts, s.tx_bytes),
               (self.good_pkts, self.good_bytes))
        expect("GET_STATS tx_drops (the drops each malformed submission caused)", s.tx_drops, self.drops)
        if s.tx_drops < self.malformed_posted:
            raise CheckFailed(f"GET_STATS tx_drops {s.tx_drops}: fewer than the {self.malformed_posted} "
                              "malformed submissions (packets and the doorbell beyond the ring)")
        expect("GET_STATS rx_pkts (no RX queue)", s.rx_pkts, 0)

    def case_aq_destroy_busy_cq_resource_busy(self) -> None:
        self.refused(f"DESTROY_CQ {self.cq_idx} while TX SQ {self.sq_idx} uses it", destroy_cq(self.cq_idx),
                     Status.RESOURCE_BUSY)

    def case_tx_queue_destroyed(self) -> None:
        self.aq.run("DESTROY_SQ", destroy_tx_sq(self.sq_idx), Status.SUCCESS)
        self.aq.run("DESTROY_CQ", destroy_cq(self.cq_idx), Status.SUCCESS)
        self.refused("DESTROY_SQ again", destroy_tx_sq(self.sq_idx), Status.ILLEGAL_PARAMETER)

    def case_aq_completion_ring_outside_ram_fatal_error(self) -> None:
        """The card cannot write a completion: it sets DEV_STS FATAL_ERROR (the driver's cue to
        reset) instead of writing anywhere else."""
        caps = AQ_DEPTH | (AQ_ENTRY_SIZE << QUEUE_CAPS_ENTRY_SIZE_SHIFT)
        self.bar.write32(Reg.ACQ_BASE_LO, OUTSIDE_RAM)
        self.bar.write32(Reg.ACQ_BASE_HI, OUTSIDE_RAM >> 32)
        self.bar.write32(Reg.ACQ_CAPS, caps)  # restarts the completion ring
        self.aq.cq.clear()
        self.aq.post(get_feature(Feature.DEVICE_ATTRIBUTES))
        self.aq.ring()
        wait_for("DEV_STS FATAL_ERROR", lambda: self.bar.read32(Reg.DEV_STS) & DEV_STS_FATAL_ERROR)
        if any(self.aq.cq.view):
            raise CheckFailed("a completion landed in the old ACQ page")

    def case_device_reset_after_abuse(self) -> None:
        self.reset()
        expect("ACQ_TAIL after the reset", self.bar.read32(Reg.ACQ_TAIL), 0)
        self.aq.setup()
        self.aq.run("GET_FEATURE(DEVICE_ATTRIBUTES) after the reset", get_feature(Feature.DEVICE_ATTRIBUTES),
                    Status.SUCCESS)
        s = self.stats()
        expect("counters after the reset (tx_pkts, tx_drops)", (s.tx_pkts, s.tx_drops), (0, 0))

    def cleanup(self) -> None:
        """Whatever happened: no queue of the card may keep pointing at this process's pages."""
        if self.bar is not None:
            self.bar.write32(Reg.DEV_CTL, DEV_CTL_DEV_RESET | RESET_NORMAL << DEV_CTL_RESET_REASON_SHIFT)
            time.sleep(0.01)
            self.bar.write32(Reg.DEV_CTL, 0)
        if self.fn is not None:
            self.fn.disable()


# Cases in order; a case needs the earlier case it names (skipped when that one failed).
SETUP = "function_enabled"
RESET = "device_reset"
AQ = "aq_get_device_attributes_success"
TXQ = "tx_queue_created"
PLAN: list[tuple[str, str | None]] = [
    (SETUP, None),
    (RESET, SETUP),
    (AQ, RESET),
    *[(name, AQ) for name in (
        "aq_unknown_opcode_bad_opcode",
        "aq_get_unknown_feature_unsupported_opcode",
        "aq_get_stats_extended_unsupported_opcode",
        "aq_create_cq_depth_not_power_of_two_illegal_parameter",
        "aq_create_cq_vector_out_of_range_illegal_parameter",
        "aq_create_cq_admin_vector_illegal_parameter",
        "aq_create_cq_ring_outside_ram_malformed_request",
        "aq_create_cq_ring_in_device_bar_malformed_request",
        "aq_create_sq_missing_cq_illegal_parameter",
        "aq_destroy_missing_sq_illegal_parameter",
        "aq_destroy_missing_cq_illegal_parameter",
        "aq_set_mtu_above_max_illegal_parameter",
        "aq_set_mtu_below_min_illegal_parameter",
        "aq_wrong_phase_malformed_request",
        "aq_command_id_beyond_depth_malformed_request",
        "aq_control_buffer_outside_ram_malformed_request",
        "aq_control_buffer_too_short_malformed_request",
        "aq_doorbell_beyond_ring_ignored",
        "aq_still_serves_after_bad_commands",
        "aq_set_aenq_unsupported_group_illegal_parameter",
        "aenq_head_beyond_ring_no_event",
        "aenq_link_event_after_valid_head",
        TXQ,
    )],
    *[(name, TXQ) for name in (
        "aq_create_sq_on_busy_cq_resource_busy",
        "tx_good_packet_completes",
        "tx_wrong_phase_error_completion",
        "tx_first_missing_error_completion",
        "tx_first_repeated_error_completion",
        "tx_last_missing_error_completion",
        "tx_too_many_descriptors_error_completion",
        "tx_req_id_out_of_range_dropped",
        "tx_buffer_outside_ram_error_completion",
        "tx_buffer_in_device_bar_error_completion",
        "tx_frame_too_short_error_completion",
        "tx_frame_too_long_error_completion",
        "tx_doorbell_beyond_ring_skipped",
        "tx_good_packet_after_abuse",
        "stats_count_drops_and_packets",
        "aq_destroy_busy_cq_resource_busy",
        "tx_queue_destroyed",
    )],
    ("aq_completion_ring_outside_ram_fatal_error", AQ),
    ("device_reset_after_abuse", RESET),
]


if __name__ == "__main__":
    sys.exit(nitro.main(__doc__, PLAN, Hostile, "hostile driver"))
