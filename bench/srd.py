#!/usr/bin/env python3
"""SRD benchmark: two `braid-card srd node`s on the 4-path ECMP fabric (qemu-testbed/fabric).

Node A sends 1 KiB messages to node B open loop at a fixed rate (so latency counts from when each
message was due, stalls included) for a few seconds; B checks every message. Cases: clean paths; one
path dropping 5 %; the path carrying most of A's traffic cut one second in; each with flowlets
K = 1 (flowlets off: one source port, one path), 4, 8, 16. A closed-loop run per K gives the peak
throughput. Every case runs --rounds times, interleaved; the table shows medians.

Writes docs/bench/srd.md (table, verdict against the goals, machine), docs/bench/srd.json (every run)
and docs/bench/srd.svg (deliveries around the cut) unless --no-write.
Run: make bench   (or bench/srd.py --rounds 1 --seconds 2 --no-write for a quick look;
     bench/srd.py --render rewrites the report from srd.json after a change to its layout)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

TOP = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(TOP / "qemu-testbed/fabric"))
import fabric  # noqa: E402

OUT = TOP / "docs/bench"
KS = [1, 4, 8, 16]
SIZE = 1024
CUT_AFTER = 1.0
WINDOW_MS = 5  # recovery is judged on deliveries per 5 ms


# The cases a round runs, in order, with their flowlet counts.
CASES = {"clean": KS, "cut": KS, "loss5": [8], "fixed": [1], "clean-rto2": [8], "cut-rto2": [8], "peak": KS}


def run_case(fab: fabric.Fabric, k: int, case: str, rate: float, seconds: float) -> dict:
    """One transfer A -> B; `case` is clean, loss5, cut, fixed (cut with --fixed-ports: flowlets are
    never replaced), peak (closed loop, clean), or clean-rto2 / cut-rto2 (with --min-rto 2)."""
    common = ["--flowlets", str(k), "--src-ports", "40000-40999", "--max-time", str(seconds + 30)]
    if case.endswith("-rto2"):
        common += ["--min-rto", "2"]
        case_base = case.removesuffix("-rto2")
    else:
        case_base = case
    b = fab.node("b", common + ["--timeline", "--idle-exit", "1"])
    load = ["--duration", str(seconds)] + (["--inflight", "256"] if case == "peak" else
                                           ["--rate", str(rate), "--inflight", "4096"])
    if case == "fixed":
        # Messages stuck behind the dead path never complete: give up 2 s after the last send.
        load += ["--fixed-ports", "--drain-timeout", "2"]
    before = fab.counters()
    start = time.monotonic()
    a = fab.node("a", common + ["--peer", f"{fabric.ADDR['b']}:7000", "--size", str(SIZE)] + load)
    cut_ns, path = None, None
    if case != "peak":
        # The path A uses now (its flowlets may have moved since the start): the most packets in the
        # last 200 ms.
        time.sleep(max(0.0, start + CUT_AFTER - 0.2 - time.monotonic()))
        recent = fab.counters()
        time.sleep(max(0.0, start + CUT_AFTER - time.monotonic()))
        now = fab.counters()
        path = max(range(fabric.PATHS), key=lambda p: now[p]["a_to_b"] - recent[p]["a_to_b"])
        share = (now[path]["a_to_b"] - recent[path]["a_to_b"]) / max(
            1, sum(now[p]["a_to_b"] - recent[p]["a_to_b"] for p in range(fabric.PATHS)))
        # Clean runs note the same moment without touching the path: their "recovery" is this
        # machine's noise floor for the metric.
        cut_ns = (time.monotonic_ns() if case_base == "clean"
                  else sum(fab.loss(path, 5 if case == "loss5" else 100)) // 2)
    ra, rb = a.wait(seconds + 40), b.wait(seconds + 40)
    faulted = case_base in ("cut", "loss5", "fixed")
    if faulted:
        fab.restore(path)
    after = fab.counters()
    sink, gen = rb["sink"], ra["generator"]
    timeline = sink.pop("timeline", [])
    result = {
        "k": k, "case": case, "rate": None if case == "peak" else rate, "seconds": seconds,
        "path": path if faulted else None,
        # The share of A's packets the cut path carried in the 200 ms before the cut.
        "path_share": round(share, 3) if faulted else None,
        "sent": gen["sent"], "completed": gen["completed"], "lost": gen["not_completed"],
        "received": sink["messages"], "duplicates": sink["duplicates"], "corrupt": sink["corrupt"],
        "throughput_mbps": sink["throughput_mbps"], "latency": sink["latency"],
        "completion_latency": gen["completion_latency"],
        "replacements": sum(c["flowlet_replacements"] for c in ra["contexts"]),
        "retransmits": sum(c["retransmits"] for c in ra["contexts"]),
        "per_path": {p: after[p]["a_to_b"] - before[p]["a_to_b"] for p in range(fabric.PATHS)},
    }
    if cut_ns is not None:
        cut_ms = max(0, (cut_ns - sink["first_ns"]) // 1_000_000)
        result.update(recovery(timeline, cut_ms, rate))
        result["delivered_after_cut"] = sum(timeline[cut_ms:])
        if case == "fixed":
            # The sink's timeline ends with its last delivery: a pause that never ends is no number.
            result["max_gap_ms"] = result["recovery_ms"] = None
        result["around_cut"] = timeline[max(0, cut_ms - 100):cut_ms + 400]
        result["around_cut_start_ms"] = -min(100, cut_ms)
    return result


def recovery(timeline: list[int], cut_ms: int, rate: float) -> dict:
    """The longest pause in deliveries after the cut, and how long after it deliveries per 5 ms window
    stayed below 80 % of the offered rate (0 when they never dipped)."""
    gap = run = 0
    for count in timeline[cut_ms:]:
        run = run + 1 if count == 0 else 0
        gap = max(gap, run)
    want = 0.8 * rate * WINDOW_MS / 1000
    windows = [sum(timeline[t:t + WINDOW_MS]) for t in range(cut_ms, max(cut_ms, len(timeline) - WINDOW_MS))]
    # A dip the cut causes starts at once (what was in flight on the path is gone); one starting
    # later is this machine's scheduling noise.
    low = [i for i, w in enumerate(windows[:WINDOW_MS]) if w < want]
    dip = low[0] if low else None
    back = next((i for i in range(dip, len(windows)) if windows[i] >= want), None) if dip is not None else 0
    return {"max_gap_ms": gap,
            "recovery_ms": None if back is None else (back + WINDOW_MS if dip is not None else 0)}


def median(runs: list[dict], key) -> float | None:
    values = [key(r) for r in runs if key(r) is not None]
    return statistics.median(values) if values else None


def machine(card: Path) -> dict[str, str]:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    rev = subprocess.run(["git", "-C", str(TOP), "describe", "--always", "--dirty"], capture_output=True,
                         text=True).stdout.strip()
    return {"cpu": cpu, "cores": str(os.cpu_count()), "kernel": platform.release(), "revision": rev,
            "card": str(card), "load_before": " ".join(Path("/proc/loadavg").read_text().split()[:3]),
            "fabric": "4 paths, one router namespace each, veth links, ECMP with L4 hashing; loss and cuts "
                      "by nftables in the router's forward hook"}


def representative(runs: list[dict]) -> dict:
    """The run with the median p99.9 latency (the upper median for an even count)."""
    ordered = sorted(runs, key=lambda r: r["latency"]["p999_us"])
    return ordered[len(ordered) // 2]


def svg(runs: list[dict]) -> str:
    """Two panels: deliveries per 5 ms around the cut for each K (its run with the median p99.9), and
    the median p99.9 latency per K for the clean, lossy and cut cases (log scale)."""
    w, h, left, top, bottom, right = 760, 300, 60, 30, 40, 20
    colors = {1: "#d62728", 4: "#ff7f0e", 8: "#2ca02c", 16: "#1f77b4"}
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{2 * h}" font-family="sans-serif" '
           f'font-size="12"><rect width="{w}" height="{2 * h}" fill="white"/>']

    # Panel 1: timeline.
    series = {}
    for k in KS:
        cuts = [r for r in runs if r["case"] == "cut" and r["k"] == k and r.get("around_cut")]
        if cuts:
            r = representative(cuts)
            t = r["around_cut"]
            series[k] = (r["around_cut_start_ms"],
                         [sum(t[i:i + WINDOW_MS]) for i in range(0, len(t) - WINDOW_MS + 1, WINDOW_MS)])
    ymax = max((max(v) for _, v in series.values() if v), default=1) or 1
    x = lambda ms: left + (ms + 100) * (w - left - right) / 500  # noqa: E731
    y = lambda v: top + (h - top - bottom) * (1 - v / ymax)  # noqa: E731
    out.append(f'<text x="{left}" y="18">Messages delivered per {WINDOW_MS} ms around a path cut (t = 0), '
               'flowlets K (the run with the median p99.9)</text>')
    for ms in range(-100, 401, 100):
        anchor = "end" if ms == 400 else "middle"
        out.append(f'<line x1="{x(ms):.1f}" y1="{top}" x2="{x(ms):.1f}" y2="{h - bottom}" stroke="#ddd"/>'
                   f'<text x="{x(ms):.1f}" y="{h - bottom + 15}" text-anchor="{anchor}">{ms} ms</text>')
    for v in (0, ymax // 2, ymax):
        out.append(f'<text x="{left - 5}" y="{y(v) + 4:.1f}" text-anchor="end">{v}</text>')
    out.append(f'<line x1="{x(0):.1f}" y1="{top}" x2="{x(0):.1f}" y2="{h - bottom}" stroke="black" '
               'stroke-dasharray="4 3"/>')
    for i, (k, (start, values)) in enumerate(sorted(series.items())):
        points = " ".join(f"{x(start + j * WINDOW_MS):.1f},{y(v):.1f}" for j, v in enumerate(values))
        out.append(f'<polyline fill="none" stroke="{colors[k]}" stroke-width="1.5" points="{points}"/>')
        out.append(f'<text x="{left + 70 * i}" y="{h - 5}" fill="{colors[k]}">K = {k}</text>')

    # Panel 2: p99.9 per case and K, log scale from 100 µs to 1 s.
    # Not `fixed`: its latencies are those of the messages it delivered, not of those it never did.
    cases = [c for c in ("clean", "loss5", "cut") if any(r["case"] == c for r in runs)]
    base = h
    lo, hi = 2.0, 6.0  # log10 µs
    yl = lambda us: base + top + (h - top - bottom) * (1 - (min(max(math.log10(max(us, 1)), lo), hi) - lo)  # noqa: E731
                                                       / (hi - lo))
    out.append(f'<text x="{left}" y="{base + 18}">p99.9 one-way latency, median over the rounds (log scale)'
               '</text>')
    for e in range(int(lo), int(hi) + 1):
        label = {2: "100 µs", 3: "1 ms", 4: "10 ms", 5: "100 ms", 6: "1 s"}[e]
        out.append(f'<line x1="{left}" y1="{yl(10 ** e):.1f}" x2="{w - right}" y2="{yl(10 ** e):.1f}" '
                   f'stroke="#ddd"/><text x="{left - 5}" y="{yl(10 ** e) + 4:.1f}" text-anchor="end">{label}</text>')
    group = (w - left - right) / max(1, len(cases))
    bar = group / (len(KS) + 2)
    for ci, case in enumerate(cases):
        gx = left + ci * group
        out.append(f'<text x="{gx + group / 2:.1f}" y="{2 * h - bottom + 15}" text-anchor="middle">'
                   f'{case}</text>')
        for ki, k in enumerate(KS):
            value = median([r for r in runs if r["case"] == case and r["k"] == k],
                           lambda r: r["latency"]["p999_us"])
            if value is None:
                continue
            bx, by = gx + bar * (ki + 1), yl(value)
            out.append(f'<rect x="{bx:.1f}" y="{by:.1f}" width="{bar * 0.9:.1f}" '
                       f'height="{yl(10 ** lo) - by:.1f}" fill="{colors[k]}"><title>{case} K={k}: '
                       f'{value:.0f} µs</title></rect>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def delivered_mbps(r: dict) -> float:
    """What reached B: over the offered duration for the open-loop cases (a stall shows), over the
    deliveries themselves for the closed-loop peak."""
    if r["case"] == "peak":
        return r["throughput_mbps"]
    return r["received"] * SIZE * 8 / 1e6 / r["seconds"]


def fmt(v, digits=0) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def report(runs: list[dict], info: dict, args) -> str:
    rows, verdicts = [], []
    cases = ([("clean", k) for k in KS] + [("loss5", 8)] + [("cut", k) for k in KS] + [("fixed", 1)]
             + [("clean-rto2", 8), ("cut-rto2", 8)] + [("peak", k) for k in KS])
    clean_p999 = {}
    for case, k in cases:
        rs = [r for r in runs if r["case"] == case and r["k"] == k]
        if not rs:
            continue
        p999 = median(rs, lambda r: r["latency"]["p999_us"])
        if case.startswith("clean"):
            clean_p999[case.replace("clean", "cut"), k] = p999
        lost = sum((r["sent"] - r["received"]) + r["duplicates"] + r["corrupt"] for r in rs)
        rows.append(f"| {case} | {k} | {len(rs)} | {fmt(median(rs, delivered_mbps))} | "
                    f"{fmt(median(rs, lambda r: r['latency']['p50_us']))} | "
                    f"{fmt(median(rs, lambda r: r['latency']['p99_us']))} | {fmt(p999)} "
                    f"({fmt(max(r['latency']['p999_us'] for r in rs))}) | "
                    f"{fmt(median(rs, lambda r: r.get('max_gap_ms')))} "
                    f"({fmt(max((r['max_gap_ms'] for r in rs if r.get('max_gap_ms') is not None), default=None))}) | "
                    f"{fmt(median(rs, lambda r: r.get('recovery_ms')))} | "
                    f"{fmt(median(rs, lambda r: r['retransmits']))} | "
                    f"{fmt(median(rs, lambda r: r['replacements']))} | {lost} |")
        if case == "fixed":
            sent = median(rs, lambda r: r["sent"])
            verdicts.append(f"- fixed, K=1 (multipath off: one port for life, cut): the transfer collapses "
                            f"(expected: nothing to move to); median {fmt(median(rs, lambda r: r['delivered_after_cut']))}"
                            f" messages delivered after the cut, {fmt(median(rs, lambda r: r['sent'] - r['received']))}"
                            f" of {fmt(sent)} never (the generator stops at 4096 unacknowledged)")
        elif lost:
            verdicts.append(f"- **{case}, K={k}: {lost} messages lost, duplicated or corrupted** (goal: none)")
        if case.startswith("cut") and k > 1 and clean_p999.get((case, k)):
            ratio = p999 / clean_p999[case, k]
            worst = max(r["latency"]["p999_us"] for r in rs) / clean_p999[case, k]
            rec = median(rs, lambda r: r.get("recovery_ms"))
            verdicts.append(f"- {case}, K={k}: p99.9 {ratio:.1f}x the clean run's (goal ≤ 2x: "
                            f"{'met' if ratio <= 2 else 'missed'}; worst run {worst:.1f}x); recovery {fmt(rec)} ms (goal ≤ 10 ms: "
                            f"{'met' if rec is not None and rec <= 10 else 'missed'})")
        if case in ("clean", "cut") and k == 1:
            worst = max(rs, key=lambda r: r["latency"]["p999_us"])
            verdicts.append(f"- {case}, K=1 (one port at a time, replaced when dead): p99.9 median {fmt(p999)} µs, worst run "
                            f"{fmt(worst['latency']['p999_us'])} µs with {worst['replacements']} flowlet "
                            f"replacement(s); longest pause median {fmt(median(rs, lambda r: r.get('max_gap_ms')))}"
                            f" ms, worst {fmt(max((r.get('max_gap_ms') or 0) for r in rs))} ms")
    spurious = [(c, median([r for r in runs if r["case"] == c and r["k"] == 8], lambda r: r["retransmits"]))
                for c in ("clean", "clean-rto2")]
    if all(v is not None for _, v in spurious):
        verdicts.append(f"- retransmits on clean paths, K=8: median {fmt(spurious[0][1])} with the default "
                        f"500 µs minimum RTO, {fmt(spurious[1][1])} with 2 ms (none is a real loss: the paths "
                        "are clean)")
    if not any("messages lost" in v for v in verdicts):
        verdicts.insert(0, "- zero messages lost, duplicated or corrupted in every run with flowlet replacement "
                           "(goal met)")
    machine_rows = "\n".join(f"| {k} | {v} |" for k, v in info.items())
    return f"""# SRD over UDP on the 4-path fabric

Produced by `bench/srd.py --rounds {args.rounds} --seconds {args.seconds:g} --rate {args.rate:g}` (`make bench`).
Two `braid-card srd node`s in network namespaces joined by four ECMP paths (`qemu-testbed/fabric`);
node A sends {SIZE}-byte messages to node B open loop at {args.rate:g} messages/s for {args.seconds:g} s
(`peak`: closed loop, 256 messages in flight). `loss5`: the path carrying most of A's traffic drops 5 %
from {CUT_AFTER:g} s on (the busiest over the 200 ms before); `cut`: that path drops everything from
{CUT_AFTER:g} s on; `fixed`: the same cut
with `--fixed-ports` (a dead flowlet is never moved to a fresh port), so K=1 is multipath entirely off;
`-rto2`: the nodes run with `--min-rto 2` (the transport's default is 0.5 ms). Latency is one-way,
from when a message was due to its delivery at B (both nodes read one host clock), so stalls count.
Medians over the rounds; raw runs in `srd.json`.

| case | K | runs | Mbit/s | p50 µs | p99 µs | p99.9 µs (worst run) | longest pause after cut, ms (worst) | recovery ms | retransmits | flowlets replaced | never delivered + dup + corrupt |
|---|---|---|---|---|---|---|---|---|---|---|---|
{chr(10).join(rows)}

Recovery: from the cut until deliveries per {WINDOW_MS} ms are back to 80 % of the offered rate, for a
dip starting within {WINDOW_MS} ms of the cut (0: none did; `-` for `fixed`: never). Latencies are those
of delivered messages, which for `fixed` leaves out the ones it never delivers. The clean rows apply the same measure at the
same moment without a cut: the noise floor of this machine. The cut is placed on the timeline to
within ±0.3 ms (a change sent to an `nft -i` already running in the router). With K=1 a context has one
source port, so one ECMP path, at a time; unless `fixed`, a dead one is replaced on a fresh port.
Mbit/s: what reached B over the {args.seconds:g} s offered (`peak`: over its deliveries).

## Verdict

{chr(10).join(verdicts)}

![deliveries around the cut](srd.svg)

## Machine

| | |
|---|---|
{machine_rows}
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=3.0, help="length of each transfer")
    ap.add_argument("--rate", type=float, default=10000, help="messages per second (open-loop cases)")
    ap.add_argument("--no-write", action="store_true", help="print the report, write nothing")
    ap.add_argument("--render", action="store_true",
                    help="run nothing: rewrite srd.md and srd.svg from the runs in docs/bench/srd.json")
    args = ap.parse_args()
    if args.render:
        saved = json.loads((OUT / "srd.json").read_text())
        for key, value in saved["settings"].items():
            setattr(args, key, value)
        (OUT / "srd.md").write_text(report(saved["runs"], saved["machine"], args))
        (OUT / "srd.svg").write_text(svg(saved["runs"]))
        return 0
    if reason := fabric.unavailable():
        print(f"bench/srd.py: cannot run: {reason}", file=sys.stderr)
        return 1
    card = fabric.local_card()
    info = machine(card)
    runs = []
    t0 = time.monotonic()
    with fabric.Fabric(card, "braid-srd-bench") as fab:
        spread = fab.verify_paths()
        info["paths_verified"] = (f"{'ok' if spread['ok'] else 'FAILED'}: {spread['per_port']} datagrams from "
                                  f"each of ports {spread['ports']}; per path expected {spread['expected']}, "
                                  f"forwarded {spread['forwarded']}")
        for rnd in range(args.rounds):
            for case, ks in CASES.items():
                for k in ks:
                    r = run_case(fab, k, case, args.rate, args.seconds)
                    r["round"] = rnd
                    runs.append(r)
                    print(f"round {rnd} {case:10} K={k:2}: {r['throughput_mbps']:7.1f} Mbit/s, p99.9 "
                          f"{r['latency']['p999_us']:8.0f} us, pause {r.get('max_gap_ms', '-')} ms, recovery "
                          f"{r.get('recovery_ms', '-')} ms, lost {r['lost']}, dup {r['duplicates']}", flush=True)
    info["duration"] = f"{time.monotonic() - t0:.0f} s"
    # Other work on the two cores shows in the worst runs: say how busy the machine was.
    info["load_after"] = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    text = report(runs, info, args)
    if args.no_write:
        print(text)
        return 0
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "srd.md").write_text(text)
    settings = {"rounds": args.rounds, "seconds": args.seconds, "rate": args.rate}
    (OUT / "srd.json").write_text(json.dumps({"machine": info, "settings": settings, "runs": runs}, indent=1)
                                  + "\n")
    (OUT / "srd.svg").write_text(svg(runs))
    print(f"wrote {OUT / 'srd.md'}, srd.json, srd.svg")
    return 0


if __name__ == "__main__":
    sys.exit(main())
