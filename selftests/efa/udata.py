#!/usr/bin/env python3
"""Malformed driver data (udata) from a user program, straight through the uverbs interfaces (no
rdma-core in between: the write interface, and the ioctl one for CQs, which the write interface no
longer creates), to an EFA RDMA device (efa.ko or braid.ko): each bad request gets its
errno and changes nothing (an mmap of an offset the driver never handed out, too), a good one
still succeeds, and closing the file frees everything.

The driver data of each verb is EFA's (include/uapi/rdma/efa-abi.h): the request follows the core
command, the answer follows the core response. The kernel's udata rules: a request shorter than its
first version is EINVAL, unknown trailing bytes or comp_mask bits EOPNOTSUPP.

usage: udata.py DEVICE"""
import ctypes
import errno
import fcntl
import mmap
import os
import struct
import sys

# enum ib_uverbs_write_cmds
GET_CONTEXT, ALLOC_PD = 0, 3
# The ioctl interface (rdma_user_ioctl_cmds.h, ib_user_ioctl_cmds.h): RDMA_VERBS_IOCTL, the CQ
# object's create method and its attributes, the driver's in and out data, RDMA_DRIVER_EFA.
VERBS_IOCTL = (3 << 30) | (24 << 16) | (0x1B << 8) | 1
OBJECT_CQ, METHOD_CQ_CREATE = 3, 0
CQ_HANDLE, CQ_CQE, CQ_USER_HANDLE, CQ_COMP_VECTOR, CQ_RESP_CQE = 0, 1, 2, 4, 6
UHW_IN, UHW_OUT = 0x1000, 0x1001
ATTR_MANDATORY = 1
DRIVER_EFA = 17
# Sizes of the EFA answers (efa_ibv_alloc_ucontext_resp, efa_ibv_alloc_pd_resp,
# efa_ibv_create_cq_resp).
UCONTEXT_RESP, PD_RESP, CQ_RESP = 24, 8, 40
# efa_ibv_alloc_ucontext_cmd.supported_caps: TX batch and minimum SQ depth, as libefa sends.
SUPPORTED_CAPS = 0b11

failures = 0


def verb(fd: int, command: int, core: bytes, driver: bytes, core_resp: int, driver_resp: int):
    """Runs one legacy write command; returns (errno or 0, response bytes)."""
    resp = ctypes.create_string_buffer(core_resp + driver_resp)
    body = struct.pack("<Q", ctypes.addressof(resp)) + core + driver
    length = 8 + len(body)
    assert length % 4 == 0 and (core_resp + driver_resp) % 4 == 0
    hdr = struct.pack("<IHH", command, length // 4, (core_resp + driver_resp) // 4)
    try:
        os.write(fd, hdr + body)
    except OSError as e:
        return e.errno, b""
    return 0, resp.raw


def name_of(err: int) -> str:
    return errno.errorcode.get(err, str(err)) if err else "success"


def expect(name: str, got: int, want: int):
    global failures
    ok = got == want
    print(f"{'ok' if ok else 'FAIL'}: {name}: {name_of(got)}" + ("" if ok else f" (want {name_of(want)})"))
    failures += not ok


def create_cq(fd: int, cqe: int, driver: bytes) -> int:
    """UVERBS_METHOD_CQ_CREATE with `driver` as the driver's input; returns errno or 0."""
    keep = []  # buffers the attributes point to

    def ptr(data: bytes) -> int:
        buf = ctypes.create_string_buffer(data, len(data))
        keep.append(buf)
        return ctypes.addressof(buf)

    def attr(attr_id: int, length: int, data: int, flags: int = ATTR_MANDATORY) -> bytes:
        return struct.pack("<HHHHQ", attr_id, length, flags, 0, data)

    # An input of at most 8 bytes travels in the attribute itself, a longer one by pointer.
    uhw_in = int.from_bytes(driver.ljust(8, b"\0"), "little") if len(driver) <= 8 else ptr(driver)
    attrs = [attr(CQ_HANDLE, 0, 0), attr(CQ_CQE, 4, cqe), attr(CQ_USER_HANDLE, 8, 0),
             attr(CQ_COMP_VECTOR, 4, 0), attr(CQ_RESP_CQE, 4, ptr(bytes(4))),
             attr(UHW_IN, len(driver), uhw_in, 0), attr(UHW_OUT, CQ_RESP, ptr(bytes(CQ_RESP)), 0)]
    hdr = struct.pack("<HHHHQII", 24 + 16 * len(attrs), OBJECT_CQ, METHOD_CQ_CREATE, len(attrs), 0,
                      DRIVER_EFA, 0)
    try:
        fcntl.ioctl(fd, VERBS_IOCTL, bytearray(hdr + b"".join(attrs)))
    except OSError as e:
        return e.errno
    return 0


def main() -> int:
    ib = sys.argv[1]
    uverbs = os.listdir(f"/sys/class/infiniband/{ib}/device/infiniband_verbs")[0]
    fd = os.open(f"/dev/infiniband/{uverbs}", os.O_RDWR)

    err, resp = verb(fd, GET_CONTEXT, b"", struct.pack("<I4x", SUPPORTED_CAPS), 8, UCONTEXT_RESP)
    expect("user context", err, 0)
    if err:
        return 1
    os.close(struct.unpack_from("<I", resp, 0)[0])  # the context's async event file
    sub_cqs = struct.unpack_from("<H", resp, 8 + 8)[0]
    print(f"sub-CQs per CQ: {sub_cqs}")

    expect("PD with driver input", verb(fd, ALLOC_PD, b"", struct.pack("<Q", 1), 4, PD_RESP)[0],
           errno.EOPNOTSUPP)
    expect("PD", verb(fd, ALLOC_PD, b"", b"", 4, PD_RESP)[0], 0)

    def cq(comp_mask=0, entry_size=32, subs=sub_cqs, flags=0, reserved=b"\0" * 5, tail=b"",
           cqe=64) -> int:
        driver = struct.pack("<IIHB5s", comp_mask, entry_size, subs, flags, reserved) + tail
        return create_cq(fd, cqe, driver)

    expect("CQ, entry size 7", cq(entry_size=7), errno.EINVAL)
    expect("CQ, unknown comp_mask bit", cq(comp_mask=1), errno.EOPNOTSUPP)
    expect("CQ, reserved bytes set", cq(reserved=b"\0\0\1\0\0"), errno.EINVAL)
    expect("CQ, wrong sub-CQ count", cq(subs=sub_cqs + 7), errno.EINVAL)
    expect("CQ, 2^20 entries", cq(cqe=1 << 20), errno.EINVAL)
    expect("CQ, unknown trailing bytes", cq(tail=struct.pack("<Q", 0xdead)), errno.EOPNOTSUPP)
    expect("CQ, request shorter than its first version", create_cq(fd, 64, struct.pack("<I", 0)),
           errno.EINVAL)
    try:
        mmap.mmap(fd, 4096, offset=1 << 30).close()
        bad_map = 0
    except OSError as e:
        bad_map = e.errno
    expect("mmap of an offset with no entry", bad_map, errno.EINVAL)
    expect("CQ", cq(), 0)
    expect("CQ, 16-byte entries", cq(entry_size=16), 0)
    os.close(fd)
    print(f"{failures} unexpected answers")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
