#!/usr/bin/env python3
"""Runs braid's tests and ends with one line: `N passed, N failed, N skipped`.

1. host: the lint gates (qemu-testbed/env/lint) and `cargo test` for the card (each Rust test counts
   once), then checks of the testbed itself (it must catch what the other tests rely on it to catch),
   then two SRD nodes on the 4-path ECMP fabric in network namespaces with a path cut (srd_tests);
2. guest: the KTAP selftests under selftests/, grouped into few VM boots (a boot costs seconds under
   TCG, a test inside a booted guest is cheap), run beside the host part. Each KTAP case counts once;
   so does each guest's own verdict (job completed, no kernel splat on its console, no timeout).

Run one test by hand: selftests/harness.py --no-host -t bind   (substring of a test path)
One host group:       selftests/harness.py --no-setup --host srd   (lint, cargo, testbed, srd)
List the plan:        selftests/harness.py --list
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

TOP = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(TOP / "qemu-testbed"))
sys.path.insert(0, str(TOP / "qemu-testbed/fabric"))
import fabric  # noqa: E402
import testbed  # noqa: E402


@dataclass
class Boot:
    """One boot: a card with these functions and `vms` guests running these tests in this order.

    One guest gets every function; with several, the functions are dealt out in equal runs in order
    (with one entry per guest, guest i gets function i alone; with ["ena", "efa", "ena", "efa"] and
    two guests, each gets an ENA and an EFA function) and the tests see BRAID_VM_INDEX=i and
    BRAID_VM_COUNT=vms. Each guest has
    `smp` vCPUs; its tests also see `env` (e.g. BRAID_NET_DRIVER=braid runs the ENA scripts on
    braid.ko), and guest i also `vm_env[i]` when given. With `cards` > 1 there are that many
    cards, each with all of `functions`, joined over SRD (`Testbed.joined_cards`), and guest i gets
    card i's functions; with `fabric` as well, two cards sit on the two hosts of the SRD multipath
    fabric (when it can be built here, else on loopback) and one path is cut mid-boot (`PathCut`)."""

    name: str
    functions: list[str]
    tests: list[str]
    timeout: float = 600
    vms: int = 1
    smp: int = 1
    env: dict[str, str] = field(default_factory=dict)
    vm_env: list[dict[str, str]] = field(default_factory=list)
    cards: int = 1
    fabric: bool = False
    # Runs at the same time as the next boot of the plan: for two boots of one single-vCPU guest
    # each, which leave the second core mostly idle on their own.
    with_next: bool = False


PLAN = [
    Boot("basic", ["ena", "efa"], [
        "testbed/guest_root.sh",
        "card/enumerate.sh",
        "braid/bind.sh",
        "braid/load_unload.sh",
        "ena/probe.sh",
        "ena/hostile.sh",
        "ena/faults.sh",
        "efa/probe.sh",
        "efa/pingpong.sh",
    ], with_next=True),
    # The operator's faults (link flap, fatal error, paused keep-alives, FLR) on braid.ko's netdev,
    # braid.ko's RDMA device on the EFA function under rdma-core, then the card's surprise removal
    # (last: the card is gone afterwards).
    Boot("braid-faults", ["ena", "efa"], ["ena/faults.sh", "efa/probe.sh", "efa/pingpong.sh", "braid/removal.sh"],
         env={"BRAID_NET_DRIVER": "braid", "BRAID_RDMA_DRIVER": "braid"}),
    Boot("pair", ["ena", "ena"], ["ena/ping.sh", "ena/traffic.sh", "ena/ethtool.sh"], vms=2),
    # The same pair on braid.ko: guest 0 pushes its transmit descriptors to LLQ memory, guest 1
    # leaves them in host memory.
    Boot("braid-pair", ["ena", "ena"], ["ena/ping.sh", "ena/traffic.sh", "braid/doorbell.sh", "ena/ethtool.sh",
                                       "braid/robust.sh"],
         vms=2,
         env={"BRAID_NET_DRIVER": "braid"},
         vm_env=[{}, {"BRAID_MODULE_PARAMS": "llq=0"}]),
    # RDMA between two VMs through the card's EFA fabric (rdma-core, libfabric, perftest), a mixed
    # pair: efa.ko in guest 0, braid.ko in guest 1; after guest 0 abused its function while guest 1
    # used its own. The ENA functions carry the tools' out-of-band address exchange and the barriers.
    Boot("efa-pair", ["ena", "efa", "ena", "efa"], ["efa/hostile.sh", "efa/pair.sh"], vms=2,
         vm_env=[{}, {"BRAID_RDMA_DRIVER": "braid"}]),
    # braid.ko in one guest, the upstream ena driver in the other.
    Boot("mixed-pair", ["ena", "ena"], ["ena/ping.sh"], vms=2,
         vm_env=[{"BRAID_NET_DRIVER": "braid"}, {"BRAID_NET_DRIVER": "ena"}]),
    # Two ENA functions in one guest with two CPUs: the driver gets two channels.
    Boot("channels", ["ena", "ena"], ["ena/channels.sh"], smp=2),
    # The same on braid.ko.
    Boot("braid-channels", ["ena", "ena"], ["ena/channels.sh"], smp=2, env={"BRAID_NET_DRIVER": "braid"}),
    # Two VMs on two cards joined by the SRD transport across the 4-path fabric: ENA frames (ping,
    # TCP; braid.ko in guest 0, ena.ko in guest 1) and EFA messages (pingpongs, libfabric, perftest's
    # sends, writes and reads) cross from card to card, and a path is cut during the TCP stream.
    Boot("two-cards", ["ena", "efa"], ["ena/ping.sh", "efa/pair.sh"], vms=2, cards=2, fabric=True,
         env={"BRAID_SRD_UPLINK": "1"}, vm_env=[{"BRAID_NET_DRIVER": "braid"}, {}]),
]


@dataclass
class Result:
    name: str
    status: str  # "pass", "fail" or "skip"
    detail: str = ""


# run-guest's diagnostic line after each script.
SCRIPT_TOOK = re.compile(r"^ *# (?P<script>\S+) took (?P<seconds>\d+) s$", re.M)
KTAP_LINE = re.compile(r"^(?P<indent> *)(?P<ok>ok|not ok) (?P<n>\d+) (?P<name>[^#]*?)\s*(?:# (?P<directive>.*))?$")


def parse_ktap(text: str, prefix: str) -> list[Result]:
    """Leaf results of a run-guest KTAP document: each script's cases, or the script itself when it
    printed none; a script that failed although all its cases passed (it crashed) fails too."""
    results: list[Result] = []
    cases: list[Result] = []
    diag: list[str] = []
    for line in text.splitlines():
        if line.lstrip().startswith("#"):
            diag.append(line.strip())
            continue
        m = KTAP_LINE.match(line)
        if not m:
            continue
        directive = m.group("directive") or ""
        status = "skip" if directive.upper().startswith("SKIP") else ("pass" if m.group("ok") == "ok" else "fail")
        name = m.group("name").strip()
        if m.group("indent"):
            # A skipped case's detail is its reason.
            detail = directive[4:].strip() if status == "skip" else "\n".join(diag[-20:])
            cases.append(Result(name, status, detail))
        else:
            script = name.removesuffix(".sh")
            results += [Result(f"{prefix}:{script}:{c.name}", c.status, c.detail) for c in cases]
            if not cases or (status == "fail" and all(c.status != "fail" for c in cases)):
                results.append(Result(f"{prefix}:{script}", status, directive))
            cases = []
        diag = []
    return results


def lint() -> list[Result]:
    testbed.progress("host: rustfmt and clippy (card, driver)")
    proc = subprocess.run([str(TOP / "qemu-testbed/env/lint")], capture_output=True, text=True)
    results, diag = [], []
    for line in proc.stdout.splitlines():
        if line.startswith("# "):
            diag.append(line[2:])
        elif m := re.match(r"^(ok|not ok) (\S+)$", line):
            results.append(Result(f"host:lint:{m.group(2)}", "pass" if m.group(1) == "ok" else "fail", "\n".join(diag)))
            diag = []
    if proc.returncode != 0 and not any(r.status == "fail" for r in results):
        results.append(Result("host:lint", "fail", proc.stderr[-3000:]))
    return results


def host_tests() -> list[Result]:
    testbed.progress("host: cargo test (card)")
    proc = subprocess.run(
        ["cargo", "test", "--release", "--manifest-path", str(TOP / "qemu-testbed/card/Cargo.toml"),
         "--target-dir", str(testbed.CACHE / "card-target"), "--", "--test-threads=2"],
        capture_output=True, text=True)
    results = [Result(f"host:card:{m.group(1)}", {"ok": "pass", "FAILED": "fail", "ignored": "skip"}[m.group(2)])
               for m in re.finditer(r"^test (\S+) \.\.\. (ok|FAILED|ignored)$", proc.stdout, re.M)]
    if proc.returncode != 0 and not any(r.status == "fail" for r in results):
        results.append(Result("host:card:cargo-test", "fail", (proc.stderr or proc.stdout)[-3000:]))
    for r in results:
        if r.status == "fail" and not r.detail:
            r.detail = _cargo_failure(proc.stdout, r.name.removeprefix("host:card:"))
    return results


def _cargo_failure(out: str, test: str) -> str:
    m = re.search(rf"---- {re.escape(test)} stdout ----\n(.*?)(?:\n---- |\nfailures:)", out, re.S)
    return m.group(1)[-2000:] if m else ""


def testbed_tests() -> list[Result]:
    """The testbed itself: it must catch what the guest tests rely on it to catch."""
    testbed.progress("testbed: crashing, hanging, unshared-RAM and reconnecting guests; a second run on the cache")
    results = []
    private_refusal = "the memory backend has share=off; start QEMU with -object memory-backend-memfd,share=on"
    anonymous_refusal = "is not shareable: start QEMU with -object memory-backend-memfd,share=on"
    try:
        with testbed.Testbed("check-testbed", timeout=120) as tb:
            card_p, card_a = tb.card("card-private", ["ena"]), tb.card("card-anonymous", ["ena"])
            card_r = tb.card("card-reconnect", ["ena"])
            tb.vm("panics", card_r.functions, "echo c >/proc/sysrq-trigger")
            tb.vm("hangs", [], "sleep 1000", timeout=25)
            tb.vm("private-ram", card_p.functions, "lspci -n -d 1d0f:", ram="private")
            tb.vm("anonymous-ram", card_a.functions, "lspci -n -d 1d0f:", ram="anonymous")
            panics, hangs, _, _ = tb.wait()
            # The panicked QEMU vanished without a goodbye: the same card function must serve the next.
            tb.vm("reconnects", card_r.functions, "lspci -n -d 1d0f:ec20 | grep -q ec20")
            reconnects = tb.wait()[-1]
            second = subprocess.run([str(TOP / "qemu-testbed/env/setup"), "host"], capture_output=True, text=True,
                                    env={k: v for k, v in os.environ.items() if k != "BRAID_LOCKED"})
            log_p, log_a = (c.log.read_text(errors="replace") for c in (card_p, card_a))
    except testbed.TestbedError as e:
        return [Result("testbed:launcher", "fail", str(e))]

    def expect(name: str, ok: bool, detail: str) -> None:
        results.append(Result(f"testbed:{name}", "pass" if ok else "fail", detail))

    expect("kernel_panic_fails_guest", not panics.ok and any("kernel splat" in r for r in panics.reasons),
           f"verdict: {panics.reasons} ({panics.serial})")
    expect("card_serves_next_guest_after_qemu_crash", reconnects.ok, f"verdict: {reconnects.reasons} "
           f"({reconnects.serial}; card log {card_r.log})")
    expect("hung_guest_times_out", not hangs.ok and "timed out" in hangs.reasons and hangs.seconds < 40,
           f"verdict: {hangs.reasons} after {hangs.seconds:.0f} s ({hangs.serial})")
    expect("card_refuses_private_guest_ram", private_refusal in log_p, f"card log: {card_p.log}")
    expect("card_refuses_anonymous_guest_ram", anonymous_refusal in log_a, f"card log: {card_a.log}")
    expect("second_run_on_cache_refused", second.returncode != 0 and "another braid run" in second.stderr,
           f"exit {second.returncode}: {second.stderr.strip()}")
    return results


# The SRD multipath test: traffic both ways between two nodes on the 4-path fabric, one path cut in
# the middle (the sender's busiest so far); then a control run without multipath that must be caught
# losing messages. Rates and durations keep it to ~10 s.
SRD_MESSAGES = 30000  # hostA -> hostB, 1 KiB each, at SRD_RATE per second
SRD_RATE = 10000
SRD_CUT_AFTER = 1.0  # seconds into the transfer
SRD_MAX_GAP_MS = 250  # longest pause in deliveries at the cut (the simulator's bound is ~10 ms; this
#                      machine's two shared cores add scheduling delays)


def srd_tests() -> list[Result]:
    testbed.progress("host: SRD nodes on the 4-path ECMP fabric, one path cut mid-transfer")
    if reason := fabric.unavailable():
        return [Result("host:srd:multipath", "skip", reason)]
    results: list[Result] = []

    def expect(name: str, ok: bool, detail: str) -> None:
        results.append(Result(f"host:srd:{name}", "pass" if ok else "fail", detail))

    common = ["--flowlets", "8", "--src-ports", "40000-40999", "--idle-exit", "1", "--max-time", "40"]
    try:
        with fabric.Fabric(testbed.CARD_BINARY, "braid-srd-check") as fab:
            spread = fab.verify_paths()
            expect("fabric_spreads_udp_ports_over_4_paths", spread["ok"],
                   f"datagrams per path expected from `ip route get` {spread['expected']}, "
                   f"forwarded {spread['forwarded']}")
            b = fab.node("b", common + ["--timeline", "--peer", f"{fabric.ADDR['a']}:7000", "--count",
                                        str(SRD_MESSAGES // 4), "--rate", str(SRD_RATE // 4)])
            before = fab.counters()
            start = time.monotonic()
            a = fab.node("a", common + ["--peer", f"{fabric.ADDR['b']}:7000", "--count", str(SRD_MESSAGES),
                                        "--rate", str(SRD_RATE)])
            # Cut the path A's traffic takes now: the most packets over the last 200 ms.
            time.sleep(max(0.0, start + SRD_CUT_AFTER - 0.2 - time.monotonic()))
            recent = fab.counters()
            time.sleep(max(0.0, start + SRD_CUT_AFTER - time.monotonic()))
            at_cut = fab.counters()
            cut = max(range(fabric.PATHS), key=lambda p: at_cut[p]["a_to_b"] - recent[p]["a_to_b"])
            flowlets_before = [f for c in a.ask("flowlets")["contexts"] for f in c["flowlets"]]
            cut_ns = sum(fab.cut(cut)) // 2
            cut_done = fab.counters()
            time.sleep(1.5)
            flowlets_after = [f for c in a.ask("flowlets")["contexts"] for f in c["flowlets"]]
            mid = fab.counters()
            on_cut_before = [f for f in flowlets_before if fab.path_of(f["src_port"]) == cut]
            active_on_cut = [f for f in flowlets_after
                             if fab.path_of(f["src_port"]) == cut and f["state"] == "active"]
            report_a, report_b = a.wait(40), b.wait(40)
            after = fab.counters()
            fab.restore(cut)
            # The control: multipath off (one flowlet that never moves) under the same kind of cut. The
            # same checks must call this lossy, or they could not fail.
            single = ["--flowlets", "1", "--fixed-ports", "--src-ports", "41000-41999", "--idle-exit", "1",
                      "--max-time", "20"]
            b1 = fab.node("b", single, port=7001)
            before1 = fab.counters()
            a1 = fab.node("a", single + ["--peer", f"{fabric.ADDR['b']}:7001", "--count", "5000", "--rate",
                                         str(SRD_RATE), "--drain-timeout", "1"], port=7001)
            time.sleep(0.2)
            # Its one flowlet's path: the one that carried its traffic.
            now1 = fab.counters()
            fab.cut(max(range(fabric.PATHS), key=lambda p: now1[p]["a_to_b"] - before1[p]["a_to_b"]))
            control_a, control_b = a1.wait(30), b1.wait(30)
    except (fabric.FabricError, subprocess.SubprocessError, OSError, KeyError, ValueError) as e:
        return results + [Result("host:srd:multipath", "fail", f"{type(e).__name__}: {e}")]

    def exactly_once(gen: dict, sink: dict) -> tuple[bool, str]:
        ok = (gen["sent"] == gen["completed"] == sink["messages"] and gen["not_completed"] == gen["unsent"] == 0
              and sink["duplicates"] == sink["corrupt"] == sink["missing"] == 0)
        return ok, (f"sent {gen['sent']} (never sent {gen['unsent']}), acknowledged {gen['completed']}, lost "
                    f"{gen['not_completed']}; received {sink['messages']}, duplicated {sink['duplicates']}, "
                    f"corrupt {sink['corrupt']}, missing {sink['missing']}")

    for name, gen, sink in (("a_to_b", report_a["generator"], report_b["sink"]),
                            ("b_to_a", report_b["generator"], report_a["sink"])):
        expect(f"every_message_delivered_once_{name}", *exactly_once(gen, sink))
    ok, detail = exactly_once(control_a["generator"], control_b["sink"])
    expect("a_single_fixed_port_is_caught_losing_messages", not ok,
           f"control run, --flowlets 1 --fixed-ports, its path cut: {detail}")
    replaced = report_a["contexts"][0]["flowlet_replacements"] if report_a["contexts"] else 0
    expect("flowlets_leave_the_cut_path", bool(on_cut_before) and not active_on_cut and replaced > 0,
           f"path {cut} cut; flowlets on it before: {[(f['id'], f['src_port']) for f in on_cut_before]}; "
           f"still active on it 1.5 s later: {[(f['id'], f['src_port']) for f in active_on_cut]}; "
           f"flowlets replaced: {replaced}")
    grew = {p: mid[p]["a_to_b"] - cut_done[p]["a_to_b"] for p in range(fabric.PATHS)}
    survivors = [p for p in range(fabric.PATHS) if p != cut]
    # The router's own IPv6 neighbour discovery adds a few packets that its forward hook never sees.
    expect("traffic_moves_to_surviving_paths",
           grew[cut] <= 10 and sum(grew[p] for p in survivors) > SRD_RATE,
           f"packets forwarded hostA->hostB per path in the 1.5 s after cutting path {cut}: {grew}; "
           f"over the whole run: {({p: after[p]['a_to_b'] - before[p]['a_to_b'] for p in range(fabric.PATHS)})}")
    timeline, first = report_b["sink"]["timeline"], report_b["sink"]["first_ns"]
    cut_ms = max(0, (cut_ns - first) // 1_000_000)
    gap = run = 0
    for count in timeline[cut_ms:]:
        run = run + 1 if count == 0 else 0
        gap = max(gap, run)
    lat = report_b["sink"]["latency"]
    expect("delivery_gap_at_cut_bounded", bool(timeline) and gap <= SRD_MAX_GAP_MS,
           f"longest pause in deliveries after the cut: {gap} ms (limit {SRD_MAX_GAP_MS}); one-way latency "
           f"p50 {lat['p50_us']:.0f} us, p99 {lat['p99_us']:.0f} us, p99.9 {lat['p999_us']:.0f} us")
    return results


def uplink_carried(boot: str, card: testbed.Card) -> Result:
    """After a boot on joined cards: the card's SRD uplink carried both functions' traffic both ways
    (Ethernet frames, EFA requests and verdicts), every message it sent was acknowledged, and nothing
    it received was malformed."""
    name = f"{boot}:{card.name}:uplink_carried_traffic"
    answer = card.control("contexts")
    if not answer.get("ok"):
        return Result(name, "fail", f"contexts: {answer.get('error')}")
    up, contexts = answer.get("uplink") or {}, answer.get("contexts") or []
    moved = ("frames_sent", "frames_received", "efa_requests_sent", "efa_requests_received",
             "efa_responses_received")
    sent = sum(c["messages_sent"] for c in contexts)
    completed = sum(c["messages_completed"] for c in contexts)
    outstanding = sum(c["outstanding_messages"] for c in contexts)
    detail = (", ".join(f"{k} {up.get(k)}" for k in moved + ("malformed", "efa_refused")) +
              f"; SRD messages sent {sent}, acknowledged {completed}, outstanding {outstanding}, "
              f"retransmits {sum(c['retransmits'] for c in contexts)}")
    ok = (all(up.get(k, 0) > 0 for k in moved) and up.get("malformed") == 0 and up.get("efa_refused") == 0
          and sent > 0 and completed + outstanding == sent)
    testbed.progress(f"guest: {card.name}'s uplink: {detail}")
    return Result(name, "pass" if ok else "fail", detail)


class PathCut(threading.Thread):
    """Cuts one path of the SRD fabric under two joined cards once their SRD contexts have sent
    `after` messages (the guests' first TCP stream), choosing the path most of card a's active
    flowlets hash onto; the rest of the boot runs on the other paths. `verdict()` then checks that
    traffic left the dead path: no card keeps an active flowlet on it, and the other paths carried
    traffic after the cut."""

    def __init__(self, fab: fabric.Fabric, cards: list[testbed.Card], after: int = 3000):
        super().__init__(name="path-cut", daemon=True)
        self.fab, self.cards, self.after = fab, cards, after
        self.stop = threading.Event()
        self.path: int | None = None
        self.sent_at_cut = 0
        self.counters_at_cut: dict[int, dict[str, int]] = {}
        self.error = ""

    def contexts(self, card: testbed.Card) -> list[dict]:
        return card.control("contexts").get("contexts") or []

    def run(self) -> None:
        try:
            while not self.stop.wait(0.2):
                sent = sum(c["messages_sent"] for card in self.cards for c in self.contexts(card))
                if sent >= self.after:
                    break
            else:
                return
            ports = [f["src_port"] for c in self.contexts(self.cards[0]) for f in c["flowlets"]
                     if f["state"] == "active"]
            paths = [self.fab.path_of(port, 7000, "a") for port in ports]
            self.path = max(range(fabric.PATHS), key=paths.count)
            self.sent_at_cut = sent
            self.fab.cut(self.path)
            self.counters_at_cut = self.fab.counters()
            testbed.progress(f"guest: SRD fabric path {self.path} cut after {sent} messages "
                             f"({paths.count(self.path)} of card a's {len(ports)} active flowlets on it)")
        except (testbed.TestbedError, fabric.FabricError, KeyError, ValueError) as e:
            self.error = str(e)

    def verdict(self, boot: str) -> Result:
        name = f"{boot}:fabric_path_cut_traffic_moved"
        self.stop.set()
        self.join()
        if self.error or self.path is None:
            return Result(name, "fail", self.error or f"SRD traffic never reached {self.after} messages")
        stuck = []
        for card, host in zip(self.cards, ("a", "b")):
            for c in self.contexts(card):
                stuck += [f"{card.name}:{f['src_port']}" for f in c["flowlets"]
                          if f["state"] == "active" and self.fab.path_of(f["src_port"], 7000, host) == self.path]
        after = self.fab.counters()
        moved = {p: sum(after[p][d] - self.counters_at_cut[p][d] for d in ("a_to_b", "b_to_a"))
                 for p in range(fabric.PATHS)}
        others = [moved[p] for p in range(fabric.PATHS) if p != self.path]
        detail = (f"path {self.path} cut after {self.sent_at_cut} messages; packets per path since: {moved}; "
                  f"active flowlets left on it: {stuck or 'none'}")
        # The cut router still sends its own few packets (neighbour discovery).
        ok = not stuck and all(n > 0 for n in others) and moved[self.path] <= 10
        testbed.progress(f"guest: {detail}")
        return Result(name, "pass" if ok else "fail", detail)


def start_cards(tb: testbed.Testbed, boot: Boot, stack: contextlib.ExitStack,
                results: list[Result]) -> tuple[list[list[testbed.Function]], list[testbed.Card], PathCut | None]:
    """The boot's cards: the functions of each guest, the cards joined over SRD (none for one card),
    and the path cutter when the joined cards are on the fabric."""
    if boot.cards == 1:
        card = tb.card("card0", boot.functions)
        per_vm, extra = divmod(len(card.functions), boot.vms)
        if extra or not per_vm:
            raise testbed.TestbedError(f"boot {boot.name}: {len(card.functions)} functions do not deal out "
                                       f"evenly to {boot.vms} guests")
        return [card.functions[i * per_vm:(i + 1) * per_vm] for i in range(boot.vms)], [], None
    if boot.cards != boot.vms:
        raise testbed.TestbedError(f"boot {boot.name}: {boot.cards} cards need as many guests")
    names = [f"card{i}" for i in range(boot.cards)]
    why = fabric.unavailable() if boot.fabric else None
    if not boot.fabric or why or boot.cards != 2:
        if boot.fabric:
            results.append(Result(f"{boot.name}:fabric_path_cut_traffic_moved", "skip",
                                  f"the SRD fabric cannot be built here ({why}): cards joined on loopback"))
        cards = tb.joined_cards(names, boot.functions)
        return [card.functions for card in cards], cards, None
    fab = stack.enter_context(fabric.Fabric(testbed.CARD_BINARY, "braid-srd-cards", tmp=tb.dir))
    cards = tb.joined_cards(names, boot.functions,
                            hosts=[(fab.in_ns(h), f"{fabric.ADDR[h]}:7000") for h in ("a", "b")])
    cut = PathCut(fab, cards)
    cut.start()
    return [card.functions for card in cards], cards, cut


def guest_tests(plan: list[Boot]) -> list[Result]:
    """Runs the boots in order, each marked `with_next` beside the one after it."""
    results: list[Result] = []
    names = [b.name for b in PLAN]
    i = 0
    while i < len(plan):
        if (plan[i].with_next and i + 1 < len(plan)
                and names.index(plan[i + 1].name) == names.index(plan[i].name) + 1):
            with ThreadPoolExecutor(max_workers=2) as pool:
                both = [pool.submit(guest_boot, b) for b in plan[i:i + 2]]
                for f in both:
                    results += f.result()
            i += 2
        else:
            results += guest_boot(plan[i])
            i += 1
    return results


def guest_boot(boot: Boot) -> list[Result]:
    """One boot: its guests run their test scripts; their KTAP results and verdicts."""
    results: list[Result] = []
    testbed.progress(f"guest: boot '{boot.name}' ({', '.join(boot.functions)}): {len(boot.tests)} test scripts")
    try:
        with contextlib.ExitStack() as stack:
            tb = stack.enter_context(testbed.Testbed(f"check-{boot.name}", timeout=boot.timeout))
            job = "sh /braid/src/selftests/run-guest " + " ".join(boot.tests)
            functions, cards, cut = start_cards(tb, boot, stack, results)
            for i, fns in enumerate(functions):
                if boot.vms == 1:
                    tb.vm(boot.name, fns, job, smp=boot.smp, env=boot.env)
                    continue
                tb.vm(f"{boot.name}{i}", fns, job, smp=boot.smp,
                      env=boot.env | (boot.vm_env[i] if i < len(boot.vm_env) else {})
                      | {"BRAID_VM_INDEX": str(i), "BRAID_VM_COUNT": str(boot.vms)})
            vms = tb.wait()
            results += [uplink_carried(boot.name, card) for card in cards]
            if cut:
                results.append(cut.verdict(boot.name))
    except (testbed.TestbedError, fabric.FabricError) as e:
        results.append(Result(f"{boot.name}:testbed", "fail", str(e)))
        return results
    took: dict[str, int] = {}
    for vm in vms:
        ktap = vm.scratch / "ktap.log"
        text = ktap.read_text(errors="replace") if ktap.exists() else ""
        results += parse_ktap(text, vm.name)
        results.append(Result(f"{vm.name}:guest-clean", "pass" if vm.ok else "fail",
                              "; ".join(vm.reasons) + f" (serial log: {vm.serial})"))
        for m in SCRIPT_TOOK.finditer(text):
            took[m["script"]] = max(took.get(m["script"], 0), int(m["seconds"]))
    seconds = max(vm.seconds for vm in vms)
    slowest = ", ".join(f"{t} {took[t]} s" for t in sorted(took, key=took.get, reverse=True)[:3])
    testbed.progress(f"guest: boot '{boot.name}' done in {seconds:.1f} s"
                     f"{f' (slowest: {slowest})' if slowest else ''} (logs: {vms[0].serial.parent})")
    return results


HOST_GROUPS = {"lint": lint, "cargo": host_tests, "testbed": testbed_tests, "srd": srd_tests}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-t", "--test", action="append", default=[],
                    help="run only guest test scripts whose path contains this (repeatable)")
    ap.add_argument("-b", "--boot", action="append", default=[],
                    help="run only the guest boots with this name (repeatable)")
    ap.add_argument("--no-host", action="store_true", help="skip the host tests (cargo test)")
    ap.add_argument("--no-guest", action="store_true", help="skip the guest tests")
    ap.add_argument("--list", action="store_true", help="print the boots and their tests, run nothing")
    ap.add_argument("--no-setup", action="store_true", help="skip qemu-testbed/env/setup (already up to date)")
    ap.add_argument("--host", action="append", default=[], choices=HOST_GROUPS,
                    help="run only this host test group (repeatable), no guest test")
    args = ap.parse_args()

    plan = [b for b in PLAN if not args.boot or b.name in args.boot]
    if args.test:
        plan = [replace(b, tests=[t for t in b.tests if any(p in t for p in args.test)])
                for b in plan]
        plan = [b for b in plan if b.tests]
    if not plan:
        ap.error(f"no guest boot or test matches {args.boot or ''} {args.test or ''}; see --list")
    if args.list:
        for b in plan:
            if b.cards > 1:
                guests = f", {b.cards} cards joined over SRD, a guest on each"
            elif b.vms > 1:
                guests = f", {b.vms} guests ({len(b.functions) // b.vms} functions each)"
            else:
                guests = ""
            print(f"boot {b.name}: card functions {','.join(b.functions)}{guests}")
            for t in b.tests:
                print(f"  {t}")
        return 0

    try:
        # The SRD group alone only reads the card binary: no need to hold the cache.
        if set(args.host) != {"srd"} or not args.no_setup:
            testbed.lock_cache()
        if not args.no_setup:
            testbed.setup()
    except testbed.TestbedError as e:
        print(f"harness: error: {e}", file=sys.stderr)
        return 1

    # The host-side tests run beside the guest boots (which go one at a time, or two where a boot
    # says `with_next`).
    with ThreadPoolExecutor(max_workers=1) as pool:
        guests = pool.submit(guest_tests, plan) if not args.no_guest and not args.host else None
        results: list[Result] = []
        if not args.no_host and not args.test:
            for group in args.host or HOST_GROUPS:
                results += HOST_GROUPS[group]()
        if guests:
            results += guests.result()

    for r in results:
        if r.status == "fail":
            print(f"FAIL {r.name}")
            for line in r.detail.strip().splitlines()[-20:]:
                print(f"     {line}")
        elif r.status == "skip":
            print(f"skip {r.name} {r.detail}")
        else:
            print(f"ok   {r.name}")
    counts = {s: sum(r.status == s for r in results) for s in ("pass", "fail", "skip")}
    print(f"{counts['pass']} passed, {counts['fail']} failed" + (f", {counts['skip']} skipped" if counts["skip"] else ""))
    return 1 if counts["fail"] or not results else 0


if __name__ == "__main__":
    sys.exit(main())
