#!/usr/bin/env python3
"""Control-path rate of an RDMA device: CQ, MR and QP create+destroy pairs per second, through
rdma-core (pyverbs). Each pair is one or two admin commands to the card plus the driver's work
around them (udata, mmap entries, pinning). Prints `<object>_per_s <rate>` lines.

usage: verbs_rate.py DEVICE [SECONDS]"""
import sys
import time

import pyverbs.enums as e
from pyverbs.cq import CQ
from pyverbs.device import Context
from pyverbs.mr import MR
from pyverbs.pd import PD
from pyverbs.qp import QP, QPCap, QPInitAttr


def rate(seconds: float, make) -> float:
    """Pairs of make() and close() per second, over about `seconds`."""
    n, start = 0, time.monotonic()
    while (elapsed := time.monotonic() - start) < seconds or n < 10:
        make().close()
        n += 1
    return n / elapsed


def main() -> int:
    seconds = float(sys.argv[2]) if len(sys.argv) > 2 else 2.0
    ctx = Context(name=sys.argv[1])
    pd = PD(ctx)
    cq = CQ(ctx, 64)
    cap = QPCap(max_send_wr=64, max_recv_wr=64, max_send_sge=1, max_recv_sge=1)
    print(f"cq_per_s {rate(seconds, lambda: CQ(ctx, 256)):.1f}")
    print(f"mr_per_s {rate(seconds, lambda: MR(pd, 64 * 1024, e.IBV_ACCESS_LOCAL_WRITE)):.1f}")
    print(f"qp_per_s {rate(seconds, lambda: QP(pd, QPInitAttr(qp_type=e.IBV_QPT_UD, scq=cq, rcq=cq, cap=cap))):.1f}")
    for obj in (cq, pd, ctx):
        obj.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
