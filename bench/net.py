#!/usr/bin/env python3
"""Network benchmark: the card's ENA function against QEMU's virtio-net, side by side in one run.

Two guests (1 vCPU each), each with one ENA function of the same card and one virtio-net NIC joined
to the other guest's by `-netdev dgram` over loopback UDP (the baseline DESIGN.md measured). One boot
per MTU (1500, and 9000 where jumbo frames cut the receiver's per-frame work); guest 0 alternates the
two NICs every round: ping RTT (100 echoes 20 ms apart) and a 10 s iperf3 TCP stream.
The card's trapped register accesses are counted over the whole run.

Writes docs/bench/net.md (table + machine) and docs/bench/net.json (raw numbers) unless --no-write.
Run: make bench   (or bench/net.py --rounds 1 --seconds 3 --no-write for a quick look)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

TOP = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(TOP / "qemu-testbed"))
import testbed  # noqa: E402


def free_udp_ports(n: int) -> list[int]:
    socks = []
    for _ in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def virtio_dgram(index: int, local: int, remote: int) -> list[str]:
    """QEMU arguments of guest `index`'s virtio-net NIC, joined to its peer's by `-netdev dgram` from
    UDP port `local` to `remote` on loopback."""
    return ["-netdev", f"dgram,id=vn0,local.type=inet,local.host=127.0.0.1,local.port={local},"
                       f"remote.type=inet,remote.host=127.0.0.1,remote.port={remote}",
            "-device", f"virtio-net-pci,netdev=vn0,mac=52:54:00:00:00:0{index + 1}"]


def wait_all(tb: testbed.Testbed) -> list:
    """Waits for every guest of `tb`; a guest that failed fails the benchmark, naming its serial log."""
    results = tb.wait()
    failed = [r for r in results if not r.ok]
    if failed:
        raise testbed.TestbedError("; ".join(f"{r.name}: {'; '.join(r.reasons)} (serial log: {r.serial})"
                                             for r in failed))
    return results


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def machine() -> dict[str, str]:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    mem_kb = int(next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
                      if line.startswith("MemTotal")))
    qemu, env = testbed.qemu_command()
    version = subprocess.run(qemu + ["--version"], env=env, capture_output=True, text=True).stdout.splitlines()
    rev = subprocess.run(["git", "-C", str(TOP), "describe", "--always", "--dirty"], capture_output=True,
                         text=True).stdout.strip()
    return {"cpu": cpu, "cores": str(os.cpu_count()), "memory": f"{mem_kb // 1024 // 1024} GiB",
            "host kernel": platform.release(), "qemu": version[0] if version else "?",
            "accelerator": "kvm" if testbed.host_has_hw_virt() else "tcg", "braid": rev or "?"}


def summarise(results: Path, nics: list[str], rounds: int) -> dict[str, dict[str, float]]:
    out = {}
    for nic in nics:
        rtts: list[float] = []
        gbits: list[float] = []
        retrans = 0
        for r in range(1, rounds + 1):
            rtts += [float(x) for x in (results / f"{nic}-{r}.ping").read_text().split()]
            report = json.loads((results / f"{nic}-{r}.iperf3.json").read_text())
            gbits.append(report["end"]["sum_received"]["bits_per_second"] / 1e6)
            retrans += report["end"]["sum_sent"].get("retransmits", 0)
        if not rtts or not gbits:
            raise testbed.TestbedError(f"no {nic} measurements in {results}")
        out[nic] = {"tcp_mbit_s": statistics.median(gbits), "tcp_runs": gbits, "retransmits": retrans,
                    "rtt_p50_ms": percentile(rtts, 50), "rtt_p99_ms": percentile(rtts, 99), "pings": len(rtts)}
        out[nic].update(full_metrics(results, nic, rounds))
        traps = card_traps(results, nic, rounds)
        if traps is not None:
            out[nic].update(traps)
    return out


def cpu_seconds_per_gb(report: dict) -> tuple[float, float]:
    """Sender's and receiver's CPU seconds per GB of a TCP stream (iperf3's own CPU accounting)."""
    end = report["end"]
    cpu = end["cpu_utilization_percent"]
    seconds, gb = end["sum_received"]["seconds"], end["sum_received"]["bytes"] / 1e9
    return cpu["host_total"] / 100 * seconds / gb, cpu["remote_total"] / 100 * seconds / gb


def full_metrics(results: Path, nic: str, rounds: int) -> dict[str, float]:
    """Where the rounds ran them (bench/guest/driver.sh): 4-stream TCP, UDP packet rate, CPU per GB
    (medians over rounds, and the per-round values of the first two); else {}."""
    tcp4, udp, tx_cpu, rx_cpu = [], [], [], []
    for r in range(1, rounds + 1):
        one, four, dgram = (results / f"{nic}-{r}.{kind}json" for kind in ("iperf3.", "tcp4.iperf3.", "udp.iperf3."))
        if not (four.exists() and dgram.exists()):
            return {}
        tcp4.append(json.loads(four.read_text())["end"]["sum_received"]["bits_per_second"] / 1e6)
        s = json.loads(dgram.read_text())["end"]["sum"]
        udp.append((s["packets"] - s["lost_packets"]) / s["seconds"])
        tx, rx = cpu_seconds_per_gb(json.loads(one.read_text()))
        tx_cpu.append(tx)
        rx_cpu.append(rx)
    return {"tcp4_mbit_s": statistics.median(tcp4), "tcp4_runs": tcp4,
            "udp64_pps": statistics.median(udp), "udp64_runs": udp,
            "tx_cpu_s_per_gb": statistics.median(tx_cpu), "rx_cpu_s_per_gb": statistics.median(rx_cpu)}


def card_traps(results: Path, nic: str, rounds: int) -> dict[str, float] | None:
    """Trapped accesses per packet during the streams, from the card's status before and after each."""
    packets = traps = 0
    for r in range(1, rounds + 1):
        files = [results / f"{nic}-{r}.card-{when}.json" for when in ("before", "after")]
        if not all(f.exists() for f in files):
            return None
        before, after = (json.loads(f.read_text())["functions"][0] for f in files)
        packets += sum(after["ena"]["counters"][k] - before["ena"]["counters"][k] for k in ("tx_pkts", "rx_pkts"))
        traps += sum(after["traps"][k] - before["traps"][k] for k in ("registers", "other_bars", "config"))
    return {"card_packets": packets, "traps": traps, "traps_per_packet": traps / packets if packets else float("nan")}


def run(args: argparse.Namespace, mtu: int) -> tuple[dict[str, dict], float]:
    """One boot: both guests at `mtu` on both NICs; returns the summary and the seconds it took."""
    env = {"BRAID_NET_DRIVER": args.driver, "BENCH_ROUNDS": str(args.rounds), "BENCH_SECONDS": str(args.seconds),
           "BENCH_MTU": str(mtu)}
    results, seconds = run_pair(
        f"bench-net-{args.driver}-{mtu}", "sh /braid/src/bench/guest/net.sh", env,
        300 + args.rounds * (2 * args.seconds + 30),
        f"benchmark at MTU {mtu}: 2 guests, {args.rounds} rounds x ({args.driver}, virtio-net), "
        f"{args.seconds} s iperf3 each")
    return summarise(results[0], [args.driver, "virtio"], args.rounds), seconds


def run_pair(name: str, job: str, env: dict[str, str], timeout: int, what: str) -> tuple[list[Path], float]:
    """One boot of two guests, each with one ENA function of one card and a virtio-net NIC joined to
    the other's, running `job` with `env` (and BRAID_VM_INDEX); returns each guest's results
    directory (scratch/results) and the seconds the guests took."""
    p0, p1 = free_udp_ports(2)
    with testbed.Testbed(name, timeout=timeout) as tb:
        card = tb.card("card0", ["ena", "ena"])
        for i, (local, remote) in enumerate([(p0, p1), (p1, p0)]):
            tb.vm(f"bench{i}", [card.functions[i]], job, env={**env, "BRAID_VM_INDEX": str(i)},
                  devices=virtio_dgram(i, local, remote))
        testbed.progress(f"{what}; logs in {tb.dir}")
        started = time.monotonic()
        results = wait_all(tb)
        return [r.scratch / "results" for r in results], time.monotonic() - started


ROWS = [("iperf3 TCP, 1 stream (Mbit/s, median of rounds)", "tcp_mbit_s", "{:.0f}"),
        ("TCP retransmits (all rounds)", "retransmits", "{:d}"),
        ("ping RTT p50 (ms)", "rtt_p50_ms", "{:.3f}"),
        ("ping RTT p99 (ms)", "rtt_p99_ms", "{:.3f}"),
        ("trapped accesses per packet during the streams (card counts)", "traps_per_packet", "{:.5f}")]


def table(driver: str, runs: dict[int, dict[str, dict]]) -> list[str]:
    head = "| |" + "".join(f" card ENA ({driver}), MTU {mtu} | virtio-net (dgram), MTU {mtu} |" for mtu in runs)
    lines = [head, "|---|" + "---|---|" * len(runs)]
    for label, key, fmt in ROWS:
        cells = "".join(f" {fmt.format(r[n][key]) if key in r[n] else ('n/a' if n == 'virtio' else '-')} |"
                        for r in runs.values() for n in (driver, "virtio"))
        lines.append(f"| {label} |{cells}")
    return lines


def verdicts(driver: str, runs: dict[int, dict[str, dict]]) -> list[str]:
    out = []
    for mtu, r in runs.items():
        ena, virtio = r[driver], r["virtio"]
        out.append(f"MTU {mtu}: TCP throughput {ena['tcp_mbit_s'] / virtio['tcp_mbit_s']:.2f}x virtio-net "
                   f"(goal >= 3x); ping p50 {ena['rtt_p50_ms'] / virtio['rtt_p50_ms']:.2f}x virtio-net "
                   "(goal <= 0.3x)")
    return out


def main() -> int:
    args, mtus = parse_args(__doc__, [1500, 9000], driver_option=True)
    runs: dict[int, dict[str, dict]] = {}
    elapsed = 0.0
    for mtu in mtus:
        runs[mtu], seconds = run(args, mtu)
        elapsed += seconds

    lines = table(args.driver, runs)
    verdict = verdicts(args.driver, runs)
    print("\n".join(lines + verdict))
    if args.no_write:
        return 0
    write_report("net", "Network benchmark: the card's ENA function vs virtio-net",
                 f"Produced by `make bench` (`bench/net.py --rounds {args.rounds} --seconds {args.seconds}`) "
                 f"in {elapsed:.0f} s. Two guests of 1 vCPU and 1 GiB on one host; each has one ENA function of "
                 "the same card (the upstream `ena` driver unless stated) and one virtio-net NIC joined to the "
                 "other guest's by QEMU's `-netdev dgram` over loopback. One boot per MTU (both NICs at that MTU); "
                 f"guest 0 alternates the NICs every round: 100 pings 20 ms apart, then a {args.seconds} s iperf3 "
                 "TCP stream to guest 1. Traps per packet: the guest accesses QEMU forwarded to the card "
                 "(vfio-user messages) during the ENA streams over the packets guest 0's function sent and "
                 "received, from the card's control socket before and after each stream; virtio-net's "
                 "notifications are QEMU's business and not counted here.",
                 [*lines, "", *[f"**{v}.**  " for v in verdict], "",
                  "Per-round TCP results (Mbit/s): " + "; ".join(
                      f"MTU {mtu} {nic}: " + ", ".join(f"{v:.0f}" for v in r[nic]["tcp_runs"])
                      for mtu, r in runs.items() for nic in r)],
                 {"rounds": args.rounds, "seconds": args.seconds, "results": {str(k): v for k, v in runs.items()}})
    return 0


def parse_args(doc: str, default_mtus: list[int], driver_option: bool,
               default_rounds: int = 3) -> tuple[argparse.Namespace, list[int]]:
    """The benchmarks' common options, checked; then takes the cache and sets the testbed up."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=default_rounds,
                    help=f"rounds in each boot (default {default_rounds})")
    ap.add_argument("--seconds", type=int, default=10, help="duration of each iperf3 run (default 10)")
    ap.add_argument("--mtu", type=int, action="append",
                    help=f"MTU of the NICs, a boot each (default: {', '.join(map(str, default_mtus))}); repeatable")
    if driver_option:
        ap.add_argument("--driver", default="ena", help="guest driver for the ENA function (default ena)")
    ap.add_argument("--no-write", action="store_true", help="print the table, do not update docs/bench/")
    ap.add_argument("--no-setup", action="store_true", help="skip qemu-testbed/env/setup")
    args = ap.parse_args()
    mtus = args.mtu or default_mtus
    if args.rounds < 1 or args.seconds < 1:
        ap.error("--rounds and --seconds must be at least 1")
    if any(not 576 <= m <= 9000 for m in mtus):
        ap.error("--mtu must be within 576..9000 (the card's ENA function takes up to 9001)")
    testbed.lock_cache()
    if not args.no_setup:
        testbed.setup()
    return args, mtus


def write_report(name: str, title: str, intro: str, body: list[str], data: dict) -> None:
    """docs/bench/<name>.md (title, intro, body, the machine) and <name>.json (the machine and `data`)."""
    m = machine()
    out = TOP / "docs/bench"
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps({"machine": m, **data}, indent=2) + "\n")
    md = [f"# {title}", "", intro, "", *body, "", "## Machine", "", *[f"- {k}: {v}" for k, v in m.items()], ""]
    (out / f"{name}.md").write_text("\n".join(md))
    print(f"wrote {out / f'{name}.md'} and {out / f'{name}.json'}")


def run_main(main) -> None:
    """Runs a benchmark's main: testbed errors as one line, ^C as 130."""
    try:
        sys.exit(main())
    except testbed.TestbedError as err:
        print(f"bench: {err}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    run_main(main)
