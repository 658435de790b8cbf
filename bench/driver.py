#!/usr/bin/env python3
"""Driver benchmark: braid.ko against the upstream ena driver on the same card, in one run.

For each MTU, one boot per driver (same card build, same two guests of 1 vCPU): guest 0 drives its
ENA function and, as a control for drift between the boots, a virtio-net NIC (bench/guest/net.sh with
BENCH_FULL=1): per round 100 pings 20 ms apart, iperf3 TCP with 1 and with 4 streams, and a UDP
stream of 64-byte datagrams at full speed; iperf3's own CPU accounting gives the sender's and the
receiver's CPU seconds per GB of the 1-stream run.

Writes docs/bench/driver.md (table + machine) and docs/bench/driver.json unless --no-write.
Run: make bench   (or bench/driver.py --rounds 1 --seconds 3 --no-write for a quick look)
"""

from __future__ import annotations

import argparse

import net

DRIVERS = ["ena", "braid"]

ROWS = [("iperf3 TCP, 1 stream (Mbit/s)", "tcp_mbit_s", "{:.0f}", "higher"),
        ("iperf3 TCP, 4 streams (Mbit/s)", "tcp4_mbit_s", "{:.0f}", "higher"),
        ("UDP 64-byte datagrams received per second", "udp64_pps", "{:.0f}", "higher"),
        ("ping RTT p50 (ms)", "rtt_p50_ms", "{:.3f}", "lower"),
        ("ping RTT p99 (ms)", "rtt_p99_ms", "{:.3f}", "lower"),
        ("sender CPU s per GB (TCP, 1 stream)", "tx_cpu_s_per_gb", "{:.2f}", "lower"),
        ("receiver CPU s per GB (TCP, 1 stream)", "rx_cpu_s_per_gb", "{:.2f}", "lower")]


def table(runs: dict[int, dict[str, dict]]) -> list[str]:
    head = "| |" + "".join(f" ena.ko, MTU {m} | braid.ko, MTU {m} | braid/ena | virtio-net in each boot |"
                           for m in runs)
    lines = [head, "|---|" + "---|---|---|---|" * len(runs)]
    for label, key, fmt, _ in ROWS:
        cells = ""
        for r in runs.values():
            ena, braid = r["ena"]["ena"], r["braid"]["braid"]
            control = " / ".join(fmt.format(r[d]["virtio"][key]) for d in DRIVERS)
            cells += (f" {fmt.format(ena[key])} | {fmt.format(braid[key])} | {braid[key] / ena[key]:.2f}x |"
                      f" {control} |")
        lines.append(f"| {label} |{cells}")
    return lines


def verdicts(runs: dict[int, dict[str, dict]]) -> list[str]:
    out = []
    for mtu, r in runs.items():
        ena, braid = r["ena"]["ena"], r["braid"]["braid"]
        parts = []
        for label, key, _, better in ROWS:
            ratio = braid[key] / ena[key]
            ok = ratio >= 1.0 if better == "higher" else ratio <= 1.0
            parts.append(f"{label.split(' (')[0]} {ratio:.2f}x{'' if ok else ' (behind)'}")
        out.append(f"MTU {mtu}, braid.ko / ena.ko: " + "; ".join(parts))
    return out


def main() -> int:
    args, mtus = net.parse_args(__doc__, [1500], driver_option=False)
    runs: dict[int, dict[str, dict]] = {}
    elapsed = 0.0
    for mtu in mtus:
        runs[mtu] = {}
        for driver in DRIVERS:
            ns = argparse.Namespace(driver=driver, rounds=args.rounds, seconds=args.seconds, full=True)
            runs[mtu][driver], seconds = net.run(ns, mtu)
            elapsed += seconds

    lines = table(runs)
    verdict = verdicts(runs)
    print("\n".join(lines + verdict))
    if args.no_write:
        return 0
    net.write_report(
        "driver", "Driver benchmark: braid.ko vs the upstream ena driver on the card's ENA function",
        f"Produced by `make bench` (`bench/driver.py --rounds {args.rounds} --seconds {args.seconds}`) in "
        f"{elapsed:.0f} s. Two guests of 1 vCPU and 1 GiB on one host, each with one ENA function of the "
        "same card; one boot per driver (both guests on that driver), the same card build for both. In "
        f"each boot guest 0 runs, per round: 100 pings 20 ms apart, iperf3 TCP for {args.seconds} s with "
        "1 and with 4 streams, and UDP with 64-byte datagrams at full speed, to guest 1; medians over "
        f"{args.rounds} rounds. CPU per GB is iperf3's own accounting (sender = guest 0, receiver = guest "
        "1) over the 1-stream run. The same runs over a virtio-net NIC in each boot (`-netdev dgram`) are "
        "the control: if they differ between the boots, so does the host.",
        [*lines, "", *[f"**{v}.**  " for v in verdict]],
        {"rounds": args.rounds, "seconds": args.seconds, "results": {str(k): v for k, v in runs.items()}})
    return 0


if __name__ == "__main__":
    net.run_main(main)
