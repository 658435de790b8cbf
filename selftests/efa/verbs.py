#!/usr/bin/env python3
"""Verbs objects on an EFA device through rdma-core (libefa) and efa.ko: a PD, CQs, memory
regions of several sizes (inline and control-buffer page lists), a UD QP taken through
INIT, RTR and RTS and queried back, an address handle for the port's own GID, and all of it
destroyed again. Each step is one admin command (or a few) the card must accept.

usage: verbs.py DEVICE"""
import sys

import pyverbs.enums as e
from pyverbs.addr import AH, AHAttr, GlobalRoute
from pyverbs.cq import CQ
from pyverbs.device import Context
from pyverbs.mr import MR
from pyverbs.pd import PD
from pyverbs.qp import QP, QPAttr, QPCap, QPInitAttr

QKEY = 0x11111111


def main() -> int:
    ctx = Context(name=sys.argv[1])
    pd = PD(ctx)
    cqs = [CQ(ctx, 256), CQ(ctx, 1024)]
    # 1 and 4 pages fit the command's inline list; 64 pages and 2 MiB need a page list.
    mrs = [MR(pd, size, e.IBV_ACCESS_LOCAL_WRITE) for size in (4096, 4 * 4096, 64 * 4096, 2 << 20)]
    print(f"mrs: lkeys {[hex(m.lkey) for m in mrs]}")
    cap = QPCap(max_send_wr=64, max_recv_wr=64, max_send_sge=1, max_recv_sge=1)
    qp = QP(pd, QPInitAttr(qp_type=e.IBV_QPT_UD, scq=cqs[0], rcq=cqs[1], cap=cap))
    attr = QPAttr(port_num=1)
    attr.qkey = QKEY
    qp.to_rts(attr)
    got, _ = qp.query(e.IBV_QP_STATE | e.IBV_QP_QKEY)
    print(f"qp {qp.qp_num}: state {got.qp_state} qkey {got.qkey:#x}")
    if got.qp_state != e.IBV_QPS_RTS or got.qkey != QKEY:
        print("QP did not reach RTS with its Q_Key")
        return 1
    gid = ctx.query_gid(1, 0)
    ah = AH(pd, attr=AHAttr(gr=GlobalRoute(dgid=gid, sgid_index=0), is_global=1, port_num=1))
    print(f"ah for {gid}")
    for obj in [ah, qp, *mrs, *cqs, pd, ctx]:
        obj.close()
    print("all objects destroyed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
