#!/usr/bin/env python3
"""RDMA benchmark: the card's EFA function under the upstream efa driver and under braid.ko, against
soft-RoCE (rxe) over virtio-net, side by side.

Two guests (1 vCPU each) in one boot, each with one EFA function of the same card (the upstream efa
driver and braid.ko in turn, efa.ko first in odd rounds, braid.ko first in even ones), one EFA function of a card of its own (two cards joined over SRD on loopback: every message
crosses the SRD transport, docs/srd.md) and one virtio-net NIC joined to the other guest's by
`-netdev dgram` over loopback UDP, with rdma_rxe on it (the baseline DESIGN.md measured). Guest 0 runs
each tool against guest 1 over the four devices every round (bench/guest/rdma.sh): perftest ib_send_lat (2 B), ib_send_bw (4 KiB),
ib_write_bw (64 KiB), ibv_ud_pingpong (1 KiB) and libfabric's fi_pingpong over an RDM endpoint
(64 B): EFA's own provider on the card (SRD), verbs;ofi_rxd on rxe (UD: verbs;ofi_rxm fails on rxe,
creating its probe QP). perftest runs SRD on EFA and RC on rxe. Each round guest 0 also measures
the control path of the one-card function under each driver (bench/guest/verbs_rate.py: CQ, MR and QP
create+destroy pairs per second). Medians over the rounds.

Writes docs/bench/rdma.md (table + machine) and docs/bench/rdma.json (raw numbers) unless --no-write.
Run: make bench   (or bench/rdma.py --rounds 1 --no-write for a quick look)
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import time
from pathlib import Path

import net
from net import testbed

# One card's EFA functions under efa.ko and under braid.ko, EFA functions of two cards joined over SRD
# (efa.ko), rxe.
DEVICES = ["efa", "braid", "efa2", "rxe"]
# The devices whose control path is measured, and its metrics (bench/guest/verbs_rate.py).
CTL_DEVICES = ["efa", "braid"]
CTL_ROWS = [("CQ create+destroy (per s)", "cq_per_s"), ("MR 64 KiB register+deregister (per s)", "mr_per_s"),
            ("UD QP create+destroy (per s)", "qp_per_s")]

# (label, tool, metric, format, better): metrics parsed from each client's output.
ROWS = [("ib_send_lat 2 B, average (µs)", "send_lat", "t_avg_us", "{:.0f}", "lower"),
        ("ib_send_lat 2 B, typical (µs)", "send_lat", "t_typical_us", "{:.0f}", "lower"),
        ("ib_send_lat 2 B, p99 (µs)", "send_lat", "p99_us", "{:.0f}", "lower"),
        ("ib_send_bw 4 KiB (MiB/s)", "send_bw", "mib_s", "{:.1f}", "higher"),
        ("ib_write_bw 64 KiB (MiB/s)", "write_bw", "mib_s", "{:.1f}", "higher"),
        ("ibv_ud_pingpong 1 KiB (µs/iteration)", "ud_pingpong", "us_per_iter", "{:.0f}", "lower"),
        ("fi_pingpong RDM 64 B (µs/transfer)", "fi_rdm", "us_per_xfer", "{:.0f}", "lower")]

TRANSPORT = {"efa": "card EFA function (efa.ko), SRD, one card", "braid": "the same under braid.ko",
             "efa2": "efa.ko across two cards (SRD over UDP)", "rxe": "rxe over virtio-net (dgram), RC"}


def parse(tool: str, text: str) -> dict[str, float]:
    """The numbers of one client run, or {} if its result line is missing."""
    if tool == "send_lat":
        # #bytes #iterations t_min t_max t_typical t_avg t_stdev 99% 99.9%
        m = re.search(r"^\s*2\s+\d+\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)", text, re.M)
        return {"t_typical_us": float(m[3]), "t_avg_us": float(m[4]), "p99_us": float(m[6])} if m else {}
    if tool in ("send_bw", "write_bw"):
        # #bytes #iterations BW peak BW average MsgRate
        m = re.search(r"^\s*(4096|65536)\s+\d+\s+[\d.]+\s+([\d.]+)\s+[\d.]+", text, re.M)
        return {"mib_s": float(m[2])} if m else {}
    if tool == "ud_pingpong":
        m = re.search(r"iters in [\d.]+ seconds = ([\d.]+) usec/iter", text)
        return {"us_per_iter": float(m[1])} if m else {}
    if tool == "fi_rdm":
        # bytes #sent #ack total time MB/sec usec/xfer Mxfers/sec
        m = re.search(r"^64\s+\S+\s+=\S+\s+\S+\s+\S+\s+[\d.]+\s+([\d.]+)", text, re.M)
        return {"us_per_xfer": float(m[1])} if m else {}
    if tool == "ctl":
        return {k: float(v) for k, v in re.findall(r"^(\w+_per_s) ([\d.]+)$", text, re.M)}
    raise ValueError(tool)


# Messages each tool's run moves between the guests, by run: the pingpongs and latency tests go both
# ways (iterations each), the bandwidth tests one way.
def messages(tool: str, iters: int, bw_iters: int) -> int:
    return bw_iters if tool in ("send_bw", "write_bw") else 2 * iters


def card_cost(results: Path, device: str, tool: str, r: int, count: int) -> dict[str, float]:
    """The CPU time of guest 0's card and guest 0's trapped accesses over an EFA run, per message."""
    try:
        before, after = (json.loads((results / f"{device}-{tool}-{r}.card-{w}.json").read_text())
                         for w in ("before", "after"))
        cpu_ms = after["cpu_ms"] - before["cpu_ms"]
        traps = sum(after["functions"][0]["traps"][k] - before["functions"][0]["traps"][k]
                    for k in ("registers", "other_bars", "config"))
    except (OSError, ValueError, KeyError, IndexError):
        return {}
    return {"card_cpu_us_per_msg": cpu_ms * 1000 / count, "traps_per_msg": traps / count}


def summarise(results: Path, rounds: int, tools: list[str], iters: int = 1000, bw_iters: int = 1000) -> dict[str, dict]:
    """Per device: the median of every metric ("tool.metric") over the rounds, the per-round values, and
    the runs that failed."""
    out: dict[str, dict] = {}
    first_metric: dict[str, str] = {}
    for _, tool, metric, _, _ in ROWS:
        first_metric.setdefault(tool, metric)
    for device in DEVICES:
        per_metric: dict[str, list[float]] = {}
        failed = []
        for _, tool, metric, _, _ in ROWS:
            if tool not in tools:
                continue
            for r in range(1, rounds + 1):
                f = results / f"{device}-{tool}-{r}.out"
                values = parse(tool, f.read_text(errors="replace")) if f.exists() else {}
                if metric in values:
                    per_metric.setdefault(f"{tool}.{metric}", []).append(values[metric])
                    if device != "rxe" and metric == first_metric[tool]:
                        for k, v in card_cost(results, device, tool, r, messages(tool, iters, bw_iters)).items():
                            per_metric.setdefault(f"{tool}.{k}", []).append(v)
                elif f"{tool}-{r}" not in failed:
                    failed.append(f"{tool}-{r}")
        if device in CTL_DEVICES:
            for r in range(1, rounds + 1):
                f = results / f"{device}-ctl-{r}.out"
                values = parse("ctl", f.read_text(errors="replace")) if f.exists() else {}
                for _, metric in CTL_ROWS:
                    if metric in values:
                        per_metric.setdefault(f"ctl.{metric}", []).append(values[metric])
                    elif f"ctl-{r}" not in failed:
                        failed.append(f"ctl-{r}")
        out[device] = {"median": {k: statistics.median(v) for k, v in per_metric.items()},
                       "rounds": per_metric, "failed": failed}
    return out


def run(args: argparse.Namespace) -> tuple[dict[str, dict], float]:
    p0, p1 = net.free_udp_ports(2)
    env = {"BENCH_ROUNDS": str(args.rounds), "BENCH_ITERS": str(args.iters), "BENCH_BW_ITERS": str(args.bw_iters),
           "BENCH_TOOLS": " ".join(args.tools)}
    timeout = 300 + args.rounds * 900
    with testbed.Testbed("bench-rdma", timeout=timeout) as tb:
        card = tb.card("card0", ["efa", "efa"])
        # Guest i's second EFA function is on card i + 1; those two cards are joined over SRD.
        joined = tb.joined_cards(["card1", "card2"], ["efa"])
        for i, (local, remote) in enumerate([(p0, p1), (p1, p0)]):
            tb.vm(f"rdma{i}", [card.functions[i], joined[i].functions[0]], "sh /braid/src/bench/guest/rdma.sh",
                  env={**env, "BRAID_VM_INDEX": str(i)}, devices=net.virtio_dgram(i, local, remote))
        testbed.progress(f"RDMA benchmark: 2 guests, {args.rounds} rounds x (EFA on one card under efa.ko and "
                         f"braid.ko, EFA across two cards, rxe) x {len(args.tools)} tools; logs in {tb.dir}")
        started = time.monotonic()
        results = net.wait_all(tb)
        return (summarise(results[0].scratch / "results", args.rounds, args.tools, args.iters, args.bw_iters),
                time.monotonic() - started)


def table(res: dict[str, dict], tools: list[str]) -> list[str]:
    lines = [f"| | {' | '.join(TRANSPORT[d] for d in DEVICES)} | braid.ko/efa.ko | EFA/rxe | two cards/one |",
             "|---|---|---|---|---|---|---|---|"]
    for label, tool, metric, fmt, better in ROWS:
        if tool not in tools:
            continue
        efa, braid, efa2, rxe = (res[d]["median"].get(f"{tool}.{metric}") for d in DEVICES)
        cell = [fmt.format(v) if v is not None else "failed" for v in (efa, braid, efa2, rxe)]
        drivers = f"{braid / efa:.2f}x" if efa and braid else "-"
        ratio = f"{efa / rxe:.2f}x ({better} is better)" if efa and rxe else "-"
        cards = f"{efa2 / efa:.2f}x" if efa and efa2 else "-"
        lines.append(f"| {label} | {' | '.join(cell)} | {drivers} | {ratio} | {cards} |")
    return lines


def ctl_table(res: dict[str, dict]) -> list[str]:
    """The control path of the one-card function under each driver."""
    lines = ["| control path (guest 0, one card) | efa.ko | braid.ko | braid.ko/efa.ko |", "|---|---|---|---|"]
    for label, metric in CTL_ROWS:
        efa, braid = (res[d]["median"].get(f"ctl.{metric}") for d in CTL_DEVICES)
        cell = [f"{v:.0f}" if v is not None else "failed" for v in (efa, braid)]
        lines.append(f"| {label} | {cell[0]} | {cell[1]} | {f'{braid / efa:.2f}x' if efa and braid else '-'} |")
    return lines


def cost_table(res: dict[str, dict], tools: list[str]) -> list[str]:
    """What each EFA run cost guest 0's card per message: CPU time (the whole card process: on one card
    both functions' threads, across two cards guest 0's card with its SRD node, the other card not
    counted) and guest 0's accesses that trapped (admin commands of the tool's setup included)."""
    lines = ["| EFA run | card CPU per message, one card (µs) | two cards: guest 0's card (µs) | "
             "trapped accesses per message (guest 0, one card) |", "|---|---|---|---|"]
    one, two = res["efa"]["median"], res["efa2"]["median"]
    for tool in dict.fromkeys(t for _, t, _, _, _ in ROWS):
        if tool in tools and f"{tool}.card_cpu_us_per_msg" in one:
            other = two.get(f"{tool}.card_cpu_us_per_msg")
            lines.append(f"| {tool} | {one[f'{tool}.card_cpu_us_per_msg']:.1f} | "
                         f"{'-' if other is None else f'{other:.1f}'} | {one[f'{tool}.traps_per_msg']:.3f} |")
    return lines


TWO_CARDS = ("Across two cards each message also crosses both cards' SRD nodes (`docs/srd.md`: an eventfd "
             "wakes the sending card's real-time node thread, UDP over loopback wakes the receiving one's), "
             "and an SRD send, write or read completes only when the remote card's verdict has come back "
             "the same way; 64 KiB writes go as 45 SRD packets each through one node thread per card.")


def verdict(res: dict[str, dict]) -> list[str]:
    """The goals against this run: braid.ko at least efa.ko's throughput and control-path rate and
    at most its latency (the driver's issue); the card at least 50x rxe's bandwidth and at most 0.02x
    its latency (the card's); and where the time goes when the card is behind."""
    efa, braid, rxe = res["efa"]["median"], res["braid"]["median"], res["rxe"]["median"]
    out = []
    for label, key, better in (("ib_send_bw 4 KiB", "send_bw.mib_s", "higher"),
                               ("ib_write_bw 64 KiB", "write_bw.mib_s", "higher"),
                               ("ib_send_lat 2 B average", "send_lat.t_avg_us", "lower"),
                               ("ib_send_lat 2 B p99", "send_lat.p99_us", "lower"),
                               ("fi_pingpong RDM 64 B", "fi_rdm.us_per_xfer", "lower"),
                               *((f"{label} rate", f"ctl.{metric}", "higher") for label, metric in CTL_ROWS)):
        if key in efa and key in braid:
            ratio = braid[key] / efa[key]
            met = ratio >= 1 if better == "higher" else ratio <= 1
            out.append(f"braid.ko {label}: {ratio:.3g}x efa.ko (goal {'>=' if better == 'higher' else '<='} 1x): "
                       f"{'met' if met else 'not met'}.  ")
    out.append("")
    for label, key, goal, better in (("ib_write_bw 64 KiB", "write_bw.mib_s", 50, "higher"),
                                     ("ib_send_bw 4 KiB", "send_bw.mib_s", 50, "higher"),
                                     ("ib_send_lat 2 B average", "send_lat.t_avg_us", 0.02, "lower"),
                                     ("ibv_ud_pingpong 1 KiB", "ud_pingpong.us_per_iter", 0.02, "lower")):
        if key in efa and key in rxe:
            ratio = efa[key] / rxe[key]
            met = ratio >= goal if better == "higher" else ratio <= goal
            out.append(f"{label}: {ratio:.3g}x rxe (goal {'>=' if better == 'higher' else '<='} {goal}x): "
                       f"{'met' if met else 'not met'}.  ")
    out.append("Where the card's latency goes: each message crosses two host threads that poll the doorbells "
               "guests write without trapping. They run real-time and sleep between passes (80 µs after work, "
               "doubling when idle; a delivery wakes the receiving function's thread at once, in time for the "
               "reply), while both guests' vCPU threads spin on their completion queues on the host's two "
               "cores. Each wake preempts a vCPU, so the threads wake seldom (docs/card.md: sleeping 10 µs "
               "after work gave 41-61 µs, 1 µs 112 µs; at nice -10 the average was 1075 µs).")
    out.append("")
    out.append(TWO_CARDS)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=4,
                    help="rounds over all devices (default 4: as many with efa.ko first as with braid.ko first)")
    ap.add_argument("--iters", type=int, default=1000, help="iterations of the latency runs (default 1000)")
    ap.add_argument("--bw-iters", type=int, default=1000,
                    help="iterations of the bandwidth runs (default 1000, perftest's own)")
    tools = list(dict.fromkeys(tool for _, tool, _, _, _ in ROWS))
    ap.add_argument("--tool", dest="tools", action="append", choices=tools,
                    help="run only this tool (repeatable; default: all); implies --no-write")
    ap.add_argument("--no-write", action="store_true", help="print the table, do not update docs/bench/")
    ap.add_argument("--no-setup", action="store_true", help="skip qemu-testbed/env/setup")
    args = ap.parse_args()
    if args.tools:
        args.no_write = True
    args.tools = args.tools or tools
    if args.rounds < 1 or args.iters < 1 or args.bw_iters < 1:
        ap.error("--rounds, --iters and --bw-iters must be at least 1")
    testbed.lock_cache()
    if not args.no_setup:
        testbed.setup()

    res, elapsed = run(args)
    lines = table(res, args.tools) + ["", *ctl_table(res), "", *cost_table(res, args.tools)]
    failures = [f"{d}: {', '.join(res[d]['failed'])}" for d in DEVICES if res[d]["failed"]]
    print("\n".join(lines + [f"failed runs: {f}" for f in failures]))
    if args.no_write:
        return 0
    net.write_report(
        "rdma", "RDMA benchmark: the card's EFA function under efa.ko and braid.ko, vs rxe over virtio-net",
        f"Produced by `make bench` (`bench/rdma.py --rounds {args.rounds} --iters {args.iters} --bw-iters "
        f"{args.bw_iters}`) in {elapsed:.0f} s. Two guests of 1 vCPU and 1 GiB on one host (TCG), each with "
        "one EFA function of the same card (the upstream efa driver and braid.ko in turn, efa.ko first in odd "
        "rounds and braid.ko first in even ones, so neither always runs right after the other; stock "
        "rdma-core, libfabric and perftest), "
        "one EFA function of a card of its own, the two cards joined over SRD on loopback (every message "
        "crosses the SRD transport: docs/srd.md), and one virtio-net NIC joined to the other guest's by "
        "QEMU's `-netdev dgram` over loopback, carrying soft-RoCE (`rdma_rxe`). Guest 1 serves, guest 0 "
        "runs each tool over the four devices every round, "
        f"alternating; medians over {args.rounds} rounds. perftest uses SRD on EFA (`-c SRD -x 0`) and RC on "
        "rxe (the IPv4 GID); ibv_ud_pingpong is UD on both; fi_pingpong uses an RDM endpoint: the efa "
        "provider on the card, `verbs;ofi_rxd` on rxe's UD QPs (`verbs;ofi_rxm` fails on rxe: its probe QP "
        "is refused). libfabric's efa provider offers nothing while a non-EFA verbs device exists, so rxe0 "
        "is created for rxe's runs and removed again. The control-path table is guest 0 alone, on the "
        "one-card function under each driver: CQ (256 entries), MR (64 KiB) and UD QP create+destroy pairs "
        "per second through pyverbs, 2 s each. Both guests poll (perftest and the pingpongs spin on "
        "their completion queues) on one vCPU each; the card polls the EFA doorbells from a host thread. "
        "The second table is what each EFA run cost guest 0's card per message moved between the guests (2 x "
        "iterations for the latency tests and pingpongs, the iterations for the bandwidth tests): the card "
        "process's CPU time (`cpu_ms` of its control socket's status; across two cards only guest 0's card, "
        "its SRD node included) and the accesses of guest 0's function that trapped to the card, the tool's "
        "setup (admin commands) included. The bandwidth runs "
        "take perftest's default of 1000 iterations: with 200, a 4 KiB run lasted about 3 ms and mostly "
        "measured its first doorbell waiting for a poller that had slept up to 2 ms while the tools set up.",
        [*lines, "", *[f"Failed runs: {f}." for f in failures], "",
         *verdict(res), "",
         "Per-round values: " + "; ".join(f"{d} {m}: " + ", ".join(f"{v:g}" for v in vals)
                                          for d in DEVICES for m, vals in res[d]["rounds"].items())],
        {"rounds": args.rounds, "iters": args.iters, "bw_iters": args.bw_iters, "results": res})
    return 0


if __name__ == "__main__":
    net.run_main(main)
