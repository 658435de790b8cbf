"""The SRD multipath fabric (fabric.sh) and SRD nodes on it, for the harness and the benchmark.

`Fabric` is a context manager: it builds the namespaces (hostA, hostB, one router per path) on entry
and removes them, and ends every node it started, on exit, whatever happened inside. `Node` is one
`braid-card srd node` inside hostA or hostB, with its control socket.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SCRIPT = HERE / "fabric.sh"
PATHS = 4
ADDR = {"a": "198.18.0.1", "b": "198.18.0.2"}


class FabricError(Exception):
    pass


def _terminate(signum, frame):
    raise SystemExit(128 + signum)


def _run_dir(name: str) -> Path:
    """A directory for one fabric's node logs and reports beside the testbed's runs, which the
    testbed prunes to the newest few (a temporary directory would outlive every run)."""
    runs = Path(os.environ.get("BRAID_CACHE", "/var/cache/braid")) / "runs"
    path = runs / f"{time.strftime('%Y%m%d-%H%M%S')}-{name}-{os.getpid()}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def unavailable() -> str | None:
    """Why the fabric cannot be built here (None when it can): root and network namespaces."""
    if os.geteuid() != 0:
        return "needs root for network namespaces"
    probe = f"braid-probe-{os.getpid()}"
    r = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True)
    if r.returncode != 0:
        return f"cannot create a network namespace: {r.stderr.strip()}"
    subprocess.run(["ip", "netns", "del", probe], capture_output=True)
    return None


class Node:
    """A running `braid-card srd node` in host `host` ("a" or "b")."""

    def __init__(self, fabric: Fabric, host: str, args: list[str], port: int = 7000):
        self.fabric, self.host = fabric, host
        self.listen = f"{ADDR[host]}:{port}"
        self.control = fabric.tmp / f"node-{host}-{port}.sock"
        self.report_path = fabric.tmp / f"node-{host}-{port}.json"
        self.log_path = fabric.tmp / f"node-{host}-{port}.log"
        self.control.unlink(missing_ok=True)
        self.report_path.unlink(missing_ok=True)
        cmd = fabric.in_ns(host) + [str(fabric.card), "srd", "node", "--listen", self.listen,
                                    "--control", str(self.control), "--report", str(self.report_path)] + args
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        fabric.nodes.append(self)
        deadline = time.monotonic() + 5
        while not self.control.exists():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise FabricError(f"node {self.listen} did not start: {self.log_path.read_text()[-2000:]}")
            time.sleep(0.02)

    def ask(self, *verb: str) -> dict:
        """One control request (the words after `braid-card srd control --socket S`), parsed."""
        r = subprocess.run([str(self.fabric.card), "srd", "control", "--socket", str(self.control), "--json",
                            *verb], capture_output=True, text=True, timeout=15)
        try:
            return json.loads(r.stdout)
        except json.JSONDecodeError as e:
            raise FabricError(f"node {self.listen}: {' '.join(verb)}: {r.stderr.strip() or e}") from e

    def wait(self, timeout: float) -> dict:
        """Waits for the node to stop by itself and returns its report."""
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise FabricError(f"node {self.listen} still running after {timeout:.0f} s "
                              f"(log {self.log_path})") from None
        if not self.report_path.exists():
            raise FabricError(f"node {self.listen} exited {self.proc.returncode} with no report: "
                              f"{self.log_path.read_text()[-2000:]}")
        return json.loads(self.report_path.read_text())

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()


class Fabric:
    """hostA and hostB joined by PATHS paths, one router namespace each (see fabric.sh)."""

    def __init__(self, card: Path, name: str = "braid-srd", tmp: Path | None = None):
        # One fixed name per user of the fabric (the check, the benchmark): `up` first removes whatever
        # a killed earlier run of the same name left behind.
        self.card, self.name = card, name
        self.env = {**os.environ, "BRAID_FABRIC": name}
        self.tmp = tmp or _run_dir(name)
        self.nodes: list[Node] = []
        self._sigterm = None
        self._nft: dict[int, subprocess.Popen] = {}

    def sh(self, *args: str) -> str:
        r = subprocess.run([str(SCRIPT), *args], env=self.env, capture_output=True, text=True, timeout=60)
        if r.returncode != 0:
            raise FabricError(f"fabric.sh {' '.join(args)}: {r.stderr.strip()}")
        return r.stdout

    def in_ns(self, host: str) -> list[str]:
        return ["ip", "netns", "exec", f"{self.name}-{host}"]

    def __enter__(self) -> Fabric:
        if not self.card.exists():
            raise FabricError(f"no card binary at {self.card}")
        # SIGTERM would end Python without unwinding: make it unwind, so __exit__ cleans up.
        if threading.current_thread() is threading.main_thread():
            self._sigterm = signal.signal(signal.SIGTERM, _terminate)
        self.sh("up")
        for path in range(PATHS):
            self._nft_do(path, "")
        return self

    def __exit__(self, *exc) -> None:
        try:
            for node in self.nodes:
                node.stop()
            for nft in self._nft.values():
                nft.stdin.close()
                nft.wait(timeout=5)
        finally:
            self.sh("down")
            if self._sigterm is not None:
                signal.signal(signal.SIGTERM, self._sigterm)

    def node(self, host: str, args: list[str], port: int = 7000) -> Node:
        return Node(self, host, args, port)

    def counters(self) -> dict[int, dict[str, int]]:
        return {int(k): v for k, v in json.loads(self.sh("counters")).items()}

    def path_of(self, sport: int, dport: int = 7000, host: str = "a") -> int:
        """The path hostA (or hostB) sends the UDP flow sport -> dport down, as its ECMP route hashes it."""
        return int(self.sh("path", str(sport), str(dport), host))

    def loss(self, path: int, percent: float) -> tuple[int, int]:
        """Router `path` drops `percent` % of what it forwards from now on. Returns the CLOCK_MONOTONIC
        ns between which the change took effect: it goes to an `nft -i` already running in the router
        (starting nft takes 10-25 ms here), so a cut lands on a timeline to a fraction of a millisecond."""
        rule = self.sh("rule", f"{percent:g}").strip()
        before = time.monotonic_ns()
        self._nft_do(path, "flush chain ip braid forward\n" + (f"add rule ip braid forward {rule}\n" if rule else ""))
        return before, time.monotonic_ns()

    def _nft_do(self, path: int, commands: str) -> None:
        """Runs nft commands in router `path`'s `nft -i` and waits until they are carried out (the
        listing asked for after them comes back)."""
        nft = self._nft.get(path)
        if nft is None:
            nft = subprocess.Popen(self.in_ns(f"r{path}") + ["nft", "-i"], stdin=subprocess.PIPE,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
            self._nft[path] = nft
        nft.stdin.write(commands + "list chain ip braid forward\n")
        nft.stdin.flush()
        lines = []
        while (line := nft.stdout.readline()) and line.rstrip() != "}":
            lines.append(line)
        if not line or any("Error" in x for x in lines):
            raise FabricError(f"path {path}: nft: {''.join(lines).strip()}")

    def cut(self, path: int) -> tuple[int, int]:
        """Router `path` drops everything (see `loss`)."""
        return self.loss(path, 100)

    def restore(self, path: int) -> None:
        self.loss(path, 0)

    def netem(self, path: int, *args: str) -> None:
        self.sh("netem", str(path), *args)

    def verify_paths(self, ports: range = range(40000, 40064), per_port: int = 20) -> dict:
        """Sends `per_port` datagrams from each source port of hostA to hostB and checks that each path
        forwarded exactly the datagrams of the ports the route hashes onto it, and that every path got
        some: the fabric really spreads flows by UDP ports."""
        expected = {p: 0 for p in range(PATHS)}
        for port in ports:
            expected[self.path_of(port, 9)] += per_port
        before = self.counters()
        sender = ("import socket,sys\n"
                  f"for p in range({ports.start},{ports.stop}):\n"
                  "    s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
                  f"    s.bind(('{ADDR['a']}',p))\n"
                  f"    for _ in range({per_port}): s.sendto(b'probe',('{ADDR['b']}',9))\n"
                  "    s.close()\n")
        subprocess.run(self.in_ns("a") + ["python3", "-c", sender], check=True, timeout=30)
        after = self.counters()
        seen = {p: after[p]["a_to_b"] - before[p]["a_to_b"] for p in range(PATHS)}
        # Stray packets (IPv6 neighbour discovery and the like) may add a few.
        ok = all(expected[p] <= seen[p] <= expected[p] + 5 for p in range(PATHS)) and all(expected.values())
        return {"ok": ok, "expected": expected, "forwarded": seen, "ports": f"{ports.start}-{ports.stop - 1}",
                "per_port": per_port}


def local_card() -> Path:
    """The card binary the testbed uses (BRAID_CARD_BINARY overrides)."""
    cache = Path(os.environ.get("BRAID_CACHE", "/var/cache/braid"))
    return Path(os.environ.get("BRAID_CARD_BINARY", cache / "card-target/release/braid-card"))

