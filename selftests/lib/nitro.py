"""What the hostile userspace drivers (selftests/ena/hostile.py, selftests/efa/hostile.py) share: the
machinery of a Nitro-style PCI function driven from userspace without a kernel driver.

The ENA and EFA device interfaces lay out the same registers at the same offsets (ena_regs_defs.h,
efa_regs_defs.h: identity, CAPS with the reset timeout, admin queue and completion queue bases, caps
and doorbell, interrupt mask, DEV_CTL/DEV_STS with the same reset handshake) and use the same
admin-queue conventions (64-byte entries whose common descriptor carries a 12-bit command id, the
opcode and a phase flag; completions echo the command id with a status and the SQ head, phase bit
in their flags; the same status codes). Each driver adds its own opcodes, layouts and I/O queues.

Also here: the sysfs side of the function (enable, bus mastering, BAR mapping), DMA memory from
mlocked anonymous pages whose guest-physical addresses come from /proc/self/pagemap (no IOMMU in the
guest: guest-physical is the DMA address), and the KTAP runner for a plan of named cases.
"""

from __future__ import annotations

import argparse
import ctypes
import mmap
import os
import struct
import time
import traceback
from typing import Callable, NamedTuple

PAGE = 4096
TIMEOUT = 3.0  # seconds to wait for anything the card does (it polls doorbells every <= 2 ms)
# Far above the guest's RAM (1 GiB at 0) and every BAR, within the 48-bit DMA width.
OUTSIDE_RAM = 0x7FF0_0000_0000


class Reg:
    """BAR0 register offsets both interfaces share (ENA_REGS_*_OFF, EFA_REGS_*_OFF)."""

    VERSION = 0x00
    CAPS = 0x08
    AQ_BASE_LO = 0x10
    AQ_BASE_HI = 0x14
    AQ_CAPS = 0x18
    ACQ_BASE_LO = 0x20
    ACQ_BASE_HI = 0x24
    ACQ_CAPS = 0x28
    AQ_DB = 0x2C  # ENA's AQ_DB, EFA's AQ_PROD_DB
    AENQ_CAPS = 0x34
    AENQ_BASE_LO = 0x38
    AENQ_BASE_HI = 0x3C
    AENQ_DB = 0x40  # ENA's AENQ_HEAD_DB, EFA's AENQ_CONS_DB
    INTR_MASK = 0x4C
    DEV_CTL = 0x54
    DEV_STS = 0x58


# Register fields (the same in both headers).
CAPS_RESET_TIMEOUT_SHIFT, CAPS_RESET_TIMEOUT_MASK = 1, 0x3E  # in 100 ms units
QUEUE_CAPS_ENTRY_SIZE_SHIFT = 16
DEV_CTL_DEV_RESET = 0x1
DEV_CTL_RESET_REASON_SHIFT = 28
RESET_NORMAL = 0
DEV_STS_READY = 0x1
DEV_STS_RESET_IN_PROGRESS = 0x8
DEV_STS_RESET_FINISHED = 0x10
DEV_STS_FATAL_ERROR = 0x20
INTR_MASK_ADMIN = 0x1  # the drivers' polling mode


class Status:
    """enum ena_admin_aq_completion_status = enum efa_admin_aq_completion_status."""

    SUCCESS = 0
    RESOURCE_ALLOCATION_FAILURE = 1
    BAD_OPCODE = 2
    UNSUPPORTED_OPCODE = 3
    MALFORMED_REQUEST = 4
    ILLEGAL_PARAMETER = 5
    UNKNOWN_ERROR = 6
    RESOURCE_BUSY = 7

    @classmethod
    def name(cls, value: int) -> str:
        names = {v: k for k, v in vars(cls).items() if isinstance(v, int)}
        return f"{names.get(value, 'unknown')} ({value})"


# The admin entries' common descriptor: command_id (u16, 11:0), opcode (u8), flags (u8).
AQ_COMMAND_ID_MASK = 0xFFF
AQ_FLAG_PHASE = 0x1
AQ_FLAG_CTRL_DATA_INDIRECT = 0x4
AQ_ENTRY_SIZE = 64
# EFA admin API 0.3 (efa_admin_aq_entry_v2): the common descriptor, a CRC16 at 4, the payload at 12.
AQ_V2_ENTRY_SIZE, AQ_V2_CHECKSUM, AQ_V2_PAYLOAD = 128, 4, 12
# EFA admin API 0.2 on: every completion carries a CRC16 at 4 (efa_admin_acq_common_desc.checksum).
ACQ_CHECKSUM = 4
# The completions' common descriptor: command (u16), status (u8), flags (u8, bit 0 phase),
# extended_status (u16), sq_head_indx (u16); the response body follows at 8.
ACQ_FORMAT = "<HBBHH"
ACQ_FLAG_PHASE = 0x1
ACQ_BODY = 8


def phase_of(index: int, depth: int) -> int:
    """Phase bit of free-running ring position `index`: 1 on the first pass, flipping per wrap."""
    return 1 if (index // depth) % 2 == 0 else 0


class CheckFailed(Exception):
    """A check did not hold; the message says what was expected and what came."""


def expect(what: str, got, want) -> None:
    if got != want:
        raise CheckFailed(f"{what}: expected {want}, got {got}")


def wait_for(what: str, predicate: Callable[[], object], timeout: float = TIMEOUT, interval: float = 0.001):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise CheckFailed(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


# --- The PCI function: sysfs, BARs, DMA memory -------------------------------------------------------


class Function:
    """A card function's sysfs side: enable/disable, bus mastering, BARs."""

    def __init__(self, bdf: str):
        self.path = f"/sys/bus/pci/devices/{bdf}"
        if os.path.exists(f"{self.path}/driver"):
            raise CheckFailed(f"{bdf} is bound to {os.path.basename(os.readlink(self.path + '/driver'))}")

    def enable(self) -> None:
        with open(f"{self.path}/enable", "w") as f:
            f.write("1")
        # PCI_COMMAND (config offset 4): memory space (bit 1) and bus master (bit 2).
        with open(f"{self.path}/config", "r+b", buffering=0) as f:
            f.seek(4)
            command = struct.unpack("<H", f.read(2))[0] | 0x6
            f.seek(4)
            f.write(struct.pack("<H", command))
            f.seek(4)
            expect("PCI command register memory space and bus master bits",
                   struct.unpack("<H", f.read(2))[0] & 0x6, 0x6)

    def disable(self) -> None:
        with open(f"{self.path}/enable", "w") as f:
            f.write("0")

    def bar_address(self, index: int) -> int:
        """Guest-physical start of BAR `index` (sysfs `resource`: one "start end flags" line each)."""
        with open(f"{self.path}/resource") as f:
            return int(f.read().splitlines()[index].split()[0], 16)

    def bar(self, index: int) -> "Bar":
        return Bar(f"{self.path}/resource{index}")


class Bar:
    """A mapped BAR, accessed in aligned 32-bit words (the card ignores other register writes), or
    in whole 64-byte blocks where the device takes them (an LLQ)."""

    def __init__(self, path: str):
        fd = os.open(path, os.O_RDWR)
        try:
            self.map = mmap.mmap(fd, os.fstat(fd).st_size, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        finally:
            os.close(fd)
        self.words = memoryview(self.map).cast("I")

    def read32(self, offset: int) -> int:
        return self.words[offset >> 2]

    def write32(self, offset: int, value: int) -> None:
        self.words[offset >> 2] = value & 0xFFFF_FFFF

    def write_block(self, offset: int, data: bytes) -> None:
        """Writes `data` (a multiple of 4 bytes) at `offset` word by word, in order."""
        for i in range(0, len(data), 4):
            self.words[(offset + i) >> 2] = struct.unpack_from("<I", data, i)[0]


class DmaPage:
    """One locked anonymous page and its guest-physical (= DMA) address."""

    def __init__(self, view: memoryview, gpa: int):
        self.view = view
        self.gpa = gpa

    def clear(self) -> None:
        self.view[:] = bytes(PAGE)


def dma_pages(count: int) -> list[DmaPage]:
    """`count` pages of anonymous memory, mlocked and touched, with their addresses from
    /proc/self/pagemap (PFN in bits 54:0, present in bit 63; root sees the PFNs)."""
    area = mmap.mmap(-1, count * PAGE, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    base = ctypes.addressof(ctypes.c_char.from_buffer(area))
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.mlock(ctypes.c_void_p(base), ctypes.c_size_t(count * PAGE)) != 0:
        raise CheckFailed(f"mlock: {os.strerror(ctypes.get_errno())}")
    view = memoryview(area)
    pages = []
    with open("/proc/self/pagemap", "rb") as pagemap:
        for i in range(count):
            view[i * PAGE] = 0xA5  # touch: fault the page in before reading its frame
            pagemap.seek((base // PAGE + i) * 8)
            entry = struct.unpack("<Q", pagemap.read(8))[0]
            pfn = entry & ((1 << 55) - 1)
            if not entry >> 63 or pfn == 0:
                raise CheckFailed(f"pagemap entry {entry:#x} of page {i}: not present or no PFN (not root?)")
            page = DmaPage(view[i * PAGE:(i + 1) * PAGE], pfn * PAGE)  # the view keeps `area` mapped
            page.clear()
            pages.append(page)
    return pages


# --- Reset and the admin queue -----------------------------------------------------------------------


def reset(bar: Bar) -> None:
    """ena_com_dev_reset / efa_com_dev_reset: READY first, reset bit with the reason,
    RESET_IN_PROGRESS, bit released, RESET_IN_PROGRESS gone (and READY back), within the CAPS reset
    timeout."""
    sts = bar.read32(Reg.DEV_STS)
    if not sts & DEV_STS_READY:
        raise CheckFailed(f"DEV_STS {sts:#x}: not READY before the reset")
    timeout = (bar.read32(Reg.CAPS) & CAPS_RESET_TIMEOUT_MASK) >> CAPS_RESET_TIMEOUT_SHIFT
    if timeout == 0:
        raise CheckFailed("CAPS reset timeout is 0")
    bar.write32(Reg.DEV_CTL, DEV_CTL_DEV_RESET | RESET_NORMAL << DEV_CTL_RESET_REASON_SHIFT)
    wait_for("DEV_STS RESET_IN_PROGRESS", lambda: bar.read32(Reg.DEV_STS) & DEV_STS_RESET_IN_PROGRESS,
             timeout * 0.1)
    bar.write32(Reg.DEV_CTL, 0)
    wait_for("DEV_STS RESET_IN_PROGRESS to clear",
             lambda: not bar.read32(Reg.DEV_STS) & DEV_STS_RESET_IN_PROGRESS, timeout * 0.1)
    sts = bar.read32(Reg.DEV_STS)
    expect("DEV_STS after the reset (READY | RESET_FINISHED, no FATAL_ERROR)",
           hex(sts & (DEV_STS_READY | DEV_STS_RESET_FINISHED | DEV_STS_FATAL_ERROR)),
           hex(DEV_STS_READY | DEV_STS_RESET_FINISHED))


class Completion(NamedTuple):
    """An admin completion: its common descriptor's fields and the whole entry."""

    command_id: int
    status: int
    phase: int
    sq_head: int
    raw: bytes

    def u16(self, off: int) -> int:
        return struct.unpack_from("<H", self.raw, off)[0]

    def u32(self, off: int) -> int:
        return struct.unpack_from("<I", self.raw, off)[0]

    def u64(self, off: int) -> int:
        return struct.unpack_from("<Q", self.raw, off)[0]


def crc16(data: bytes, zero_at: int) -> int:
    """efa_com_calc_crc16_checksum: the kernel's crc16() (poly 0x8005, reflected) seeded with 0xffff
    and XORed with 0xffff, over `data` with the two checksum bytes at `zero_at` taken as zero."""
    crc = 0xFFFF
    for i, byte in enumerate(data):
        crc ^= 0 if zero_at <= i < zero_at + 2 else byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0xA001 if crc & 1 else crc >> 1
    return crc ^ 0xFFFF


def command(opcode: int) -> bytearray:
    """An admin entry with `opcode`; the queue fills in the command id and phase."""
    entry = bytearray(AQ_ENTRY_SIZE)
    entry[2] = opcode
    return entry


class AdminQueue:
    """The admin submission and completion rings in polling mode (ena_com_admin_init,
    efa_com_admin_init)."""

    def __init__(self, bar: Bar, sq: DmaPage, cq: DmaPage, depth: int = 32, v2: bool = False):
        """`v2`: EFA admin API 0.3 as efa.ko speaks it: 128-byte submissions with a CRC16, and a
        CRC16 in every completion, checked."""
        self.bar, self.sq, self.cq, self.depth, self.v2 = bar, sq, cq, depth, v2
        self.entry_size = AQ_V2_ENTRY_SIZE if v2 else AQ_ENTRY_SIZE
        assert depth * self.entry_size <= PAGE
        self.tail = 0  # our free-running submission tail
        self.cq_head = 0  # the next completion we expect, free-running

    def setup(self) -> None:
        self.sq.clear()
        self.cq.clear()
        aq_caps = self.depth | (self.entry_size << QUEUE_CAPS_ENTRY_SIZE_SHIFT)
        acq_caps = self.depth | (AQ_ENTRY_SIZE << QUEUE_CAPS_ENTRY_SIZE_SHIFT)
        for reg, value in ((Reg.AQ_BASE_LO, self.sq.gpa), (Reg.AQ_BASE_HI, self.sq.gpa >> 32),
                           (Reg.ACQ_BASE_LO, self.cq.gpa), (Reg.ACQ_BASE_HI, self.cq.gpa >> 32),
                           (Reg.AQ_CAPS, aq_caps), (Reg.ACQ_CAPS, acq_caps),
                           (Reg.INTR_MASK, INTR_MASK_ADMIN)):
            self.bar.write32(reg, value)
        self.tail = self.cq_head = 0

    def post(self, entry: bytearray, *, command_id: int | None = None, wrong_phase: bool = False,
             bad_checksum: bool = False) -> int:
        """Writes `entry` (opcode and body filled in, 64-byte layout) at the tail with the command id
        and phase (in a v2 queue: moved into a 128-byte entry with its CRC16, or a wrong one);
        returns the command id. The doorbell is separate (ring)."""
        cid = self.tail % self.depth if command_id is None else command_id
        phase = phase_of(self.tail, self.depth) ^ int(wrong_phase)
        struct.pack_into("<H", entry, 0, cid)
        entry[3] = (entry[3] & ~AQ_FLAG_PHASE) | phase
        raw = bytearray(entry)
        if self.v2:
            raw = bytearray(AQ_V2_ENTRY_SIZE)
            raw[:4] = entry[:4]
            raw[AQ_V2_PAYLOAD:AQ_V2_PAYLOAD + AQ_ENTRY_SIZE - 4] = entry[4:]
            struct.pack_into("<H", raw, AQ_V2_CHECKSUM, crc16(raw, AQ_V2_CHECKSUM) ^ int(bad_checksum))
        slot = (self.tail % self.depth) * self.entry_size
        self.sq.view[slot:slot + self.entry_size] = bytes(raw)
        self.tail = (self.tail + 1) & 0xFFFF
        return cid

    def ring(self, tail: int | None = None) -> None:
        self.bar.write32(Reg.AQ_DB, self.tail if tail is None else tail)

    def peek(self) -> Completion | None:
        """The completion at our head if the card has written it (its phase matches)."""
        slot = (self.cq_head % self.depth) * AQ_ENTRY_SIZE
        if self.cq.view[slot + 3] & ACQ_FLAG_PHASE != phase_of(self.cq_head, self.depth):
            return None
        raw = bytes(self.cq.view[slot:slot + AQ_ENTRY_SIZE])  # after the phase: the body is complete
        command_id, status, flags, checksum, sq_head = struct.unpack_from(ACQ_FORMAT, raw)
        if self.v2:  # efa_com_cqe_checksum_valid
            expect(f"ACQ entry {self.cq_head}: CRC16", hex(checksum), hex(crc16(raw, ACQ_CHECKSUM)))
        return Completion(command_id & AQ_COMMAND_ID_MASK, status, flags & ACQ_FLAG_PHASE, sq_head, raw)

    def wait(self, what: str) -> Completion:
        completion = wait_for(f"the completion of {what} (ACQ entry {self.cq_head})", self.peek)
        self.cq_head = (self.cq_head + 1) & 0xFFFF
        return completion

    def run(self, what: str, entry: bytearray, want: int, **post) -> Completion:
        """Posts, rings and waits for one command; checks the echoed command id, SQ head and
        status. Returns the completion."""
        cid = self.post(entry, **post)
        self.ring()
        completion = self.wait(what)
        expect(f"{what}: command id echoed", completion.command_id, cid & AQ_COMMAND_ID_MASK)
        expect(f"{what}: completion status", Status.name(completion.status), Status.name(want))
        expect(f"{what}: sq_head_indx", completion.sq_head, self.tail % self.depth)
        return completion


# --- KTAP ------------------------------------------------------------------------------------------


def diag(text: str) -> None:
    for line in text.rstrip().splitlines():
        print(f"# {line}")


def run_plan(plan: list[tuple[str, str | None]], test, ktap_extra: int, what: str) -> int:
    """Runs `test.case_<name>()` for each (name, needs) of `plan` in order, printing one KTAP
    document whose plan leaves room for `ktap_extra` cases the caller prints after these. A case
    whose prerequisite `needs` failed is skipped. Ends with `test.cleanup()`; returns the exit status
    (0 when every case passed)."""
    print("KTAP version 1")
    print(f"1..{len(plan) + ktap_extra}", flush=True)
    failed: set[str] = set()
    started = time.monotonic()
    try:
        for n, (name, needs) in enumerate(plan, 1):
            if needs in failed:
                failed.add(name)
                print(f"ok {n} {name} # SKIP {needs} failed", flush=True)
                continue
            try:
                getattr(test, f"case_{name}")()
                print(f"ok {n} {name}", flush=True)
            except CheckFailed as e:
                diag(str(e))
                failed.add(name)
                print(f"not ok {n} {name}", flush=True)
            except Exception:  # a bug here or an unusable guest: say where, keep going
                diag(traceback.format_exc(limit=-3))
                failed.add(name)
                print(f"not ok {n} {name}", flush=True)
    finally:
        test.cleanup()
    diag(f"{what}: {time.monotonic() - started:.1f} s")
    return 1 if failed else 0


def main(doc: str, plan: list[tuple[str, str | None]], make_test: Callable[[str], object], what: str) -> int:
    """A hostile driver's command line (usage in `doc`): --ktap-extra N and the function's PCI
    address; runs `plan` on `make_test(bdf)` (see run_plan)."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ktap-extra", type=int, default=0, help="cases the caller prints after these (for the plan)")
    ap.add_argument("bdf", help="the function's PCI address, e.g. 0000:01:00.0")
    args = ap.parse_args()
    return run_plan(plan, make_test(args.bdf), args.ktap_extra, what)
