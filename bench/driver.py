#!/usr/bin/env python3
"""Driver benchmark: braid.ko against the upstream ena driver on the same card, in one run.

For each MTU, one boot of two guests of 1 vCPU, each with one ENA function of the same card, which
changes drivers every round within the boot (bench/guest/driver.sh): ena.ko first in odd rounds,
braid.ko first in even ones, both guests on the same driver at a time. Per driver and round guest 0
runs 100 pings 20 ms apart, iperf3 TCP with 1 and with 4 streams, and UDP with 64-byte datagrams at
full speed, to guest 1; iperf3's own CPU accounting gives the sender's and the receiver's CPU
seconds per GB of the 1-stream run. Both drivers meet the same host, card and guests, so drift in
any of them hits both alike.

Writes docs/bench/driver.md (table + machine) and docs/bench/driver.json unless --no-write.
Run: make bench   (or bench/driver.py --rounds 2 --seconds 3 --no-write for a quick look)
"""

from __future__ import annotations

import re
from pathlib import Path

import net

DRIVERS = ["ena", "braid"]

ROWS = [("iperf3 TCP, 1 stream (Mbit/s)", "tcp_mbit_s", "{:.0f}", "higher"),
        ("iperf3 TCP, 4 streams (Mbit/s)", "tcp4_mbit_s", "{:.0f}", "higher"),
        ("UDP 64-byte datagrams received per second", "udp64_pps", "{:.0f}", "higher"),
        ("ping RTT p50 (ms)", "rtt_p50_ms", "{:.3f}", "lower"),
        ("ping RTT p99 (ms)", "rtt_p99_ms", "{:.3f}", "lower"),
        ("sender CPU s per GB (TCP, 1 stream)", "tx_cpu_s_per_gb", "{:.2f}", "lower"),
        ("receiver CPU s per GB (TCP, 1 stream)", "rx_cpu_s_per_gb", "{:.2f}", "lower")]


# Interrupts per 1000 packets (sent and received) of each guest, from the drivers' counters over
# all the runs of a driver: both count an unmask write (`queue_N_tx_unmask_interrupt`) per
# interrupt-driven poll that completed.
IRQ_ROWS = [("sender (guest 0) interrupts per 1000 packets", "irq_per_kpkt_0"),
            ("receiver (guest 1) interrupts per 1000 packets", "irq_per_kpkt_1")]


def interrupts(results: list[Path], driver: str, rounds: int) -> dict[str, float]:
    out = {}
    for guest, path in enumerate(results):
        unmasks = packets = 0
        for r in range(1, rounds + 1):
            counters = {}
            for line in (path / f"{driver}-{r}.ethtool-{guest}").read_text().splitlines():
                name, _, value = line.strip().partition(":")
                if value.strip().isdigit():
                    counters[name] = int(value)
            unmasks += sum(v for k, v in counters.items() if re.fullmatch(r"queue_\d+_tx_unmask_interrupt", k))
            packets += sum(v for k, v in counters.items() if re.fullmatch(r"queue_\d+_(tx|rx)_cnt", k))
        out[f"irq_per_kpkt_{guest}"] = 1000 * unmasks / packets if packets else float("nan")
    return out


def table(runs: dict[int, dict[str, dict]]) -> list[str]:
    head = "| |" + "".join(f" ena.ko, MTU {m} | braid.ko, MTU {m} | braid/ena |" for m in runs)
    lines = [head, "|---|" + "---|---|---|" * len(runs)]
    for label, key, fmt, _ in ROWS:
        cells = "".join(f" {fmt.format(r['ena'][key])} | {fmt.format(r['braid'][key])} |"
                        f" {r['braid'][key] / r['ena'][key]:.2f}x |" for r in runs.values())
        lines.append(f"| {label} |{cells}")
    for label, key in IRQ_ROWS:
        cells = "".join(f" {r['ena'][key]:.1f} | {r['braid'][key]:.1f} | {r['braid'][key] / r['ena'][key]:.2f}x |"
                        for r in runs.values())
        lines.append(f"| {label} |{cells}")
    return lines


def per_round(runs: dict[int, dict[str, dict]]) -> list[str]:
    """The throughput of every round, both drivers: the spread the medians hide."""
    out = []
    for mtu, r in runs.items():
        for label, key in (("TCP 1 stream", "tcp_runs"), ("TCP 4 streams", "tcp4_runs"), ("UDP 64 B", "udp64_runs")):
            fmt = "{:.0f}"
            pairs = ", ".join(f"{fmt.format(e)} / {fmt.format(b)}" for e, b in zip(r["ena"][key], r["braid"][key]))
            ahead = sum(b >= e for e, b in zip(r["ena"][key], r["braid"][key]))
            out.append(f"- MTU {mtu}, {label}, ena.ko / braid.ko per round: {pairs} "
                       f"(braid.ko ahead in {ahead} of {len(r['ena'][key])})")
    return out


def verdicts(runs: dict[int, dict[str, dict]]) -> list[str]:
    out = []
    for mtu, r in runs.items():
        parts = []
        for label, key, _, better in ROWS:
            ratio = r["braid"][key] / r["ena"][key]
            ok = ratio >= 1.0 if better == "higher" else ratio <= 1.0
            parts.append(f"{label.split(' (')[0]} {ratio:.2f}x{'' if ok else ' (behind)'}")
        out.append(f"MTU {mtu}, braid.ko / ena.ko: " + "; ".join(parts))
    return out


def main() -> int:
    args, mtus = net.parse_args(__doc__, [1500], driver_option=False, default_rounds=4)
    runs: dict[int, dict[str, dict]] = {}
    elapsed = 0.0
    for mtu in mtus:
        env = {"BENCH_ROUNDS": str(args.rounds), "BENCH_SECONDS": str(args.seconds), "BENCH_MTU": str(mtu)}
        results, seconds = net.run_pair(
            f"bench-driver-{mtu}", "sh /braid/src/bench/guest/driver.sh", env,
            300 + args.rounds * len(DRIVERS) * (3 * args.seconds + 40),
            f"driver benchmark at MTU {mtu}: 2 guests, {args.rounds} rounds x (ena.ko, braid.ko), "
            f"{args.seconds} s per iperf3 run")
        runs[mtu] = net.summarise(results[0], DRIVERS, args.rounds)
        for driver in DRIVERS:
            runs[mtu][driver].update(interrupts(results, driver, args.rounds))
        elapsed += seconds

    lines = table(runs)
    rounds = per_round(runs)
    verdict = verdicts(runs)
    print("\n".join(lines + rounds + verdict))
    if args.no_write:
        return 0
    net.write_report(
        "driver", "Driver benchmark: braid.ko vs the upstream ena driver on the card's ENA function",
        f"Produced by `make bench` (`bench/driver.py --rounds {args.rounds} --seconds {args.seconds}`) in "
        f"{elapsed:.0f} s. Two guests of 1 vCPU and 1 GiB on one host, each with one ENA function of the "
        "same card. One boot: every round both guests bind their function to ena.ko, then to braid.ko "
        "(braid.ko first in even rounds), and guest 0 runs, per driver: 100 pings 20 ms apart, iperf3 TCP "
        f"for {args.seconds} s with 1 and with 4 streams, and UDP with 64-byte datagrams at full speed, to "
        f"guest 1. Medians over {args.rounds} rounds (pings: percentiles over all rounds). CPU per GB is "
        "iperf3's own accounting (sender = guest 0, receiver = guest 1) over the 1-stream run. The "
        "drivers share the boot, the card and the host, so drift hits both alike.",
        [*lines, "", *rounds, "", *[f"**{v}.**  " for v in verdict]],
        {"rounds": args.rounds, "seconds": args.seconds, "results": {str(k): v for k, v in runs.items()}})
    return 0


if __name__ == "__main__":
    net.run_main(main)
