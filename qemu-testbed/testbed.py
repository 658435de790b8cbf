"""braid's VM launcher: card processes and QEMU guests, started together and always stopped together.

A `Testbed` is a context manager. Inside it, `card()` starts a braid-card process exposing some PCI
functions (one vfio-user socket each) and `vm()` starts a QEMU guest (q35, shared memfd RAM, TCG
unless the host has real VT-x/AMD-V) with some of those functions attached and a job to run. `wait()`
collects every guest's verdict: its job's exit status, a timeout, or a kernel splat in its serial log.
Every card has a control socket (`Card.control("link", 0, "down")`), and guests drive their own
cards through request files in their scratch directory (`card_control` in selftests/lib/card.sh;
see `ControlChannel`). On exit, whatever it started is stopped by PID (and children die with it even if it is killed: they
carry PR_SET_PDEATHSIG), so no process outlives it and it mounts nothing.

Standard library only: the host needs nothing but python3.
"""

from __future__ import annotations

import ctypes
import fcntl
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

TOP = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("BRAID_CACHE", "/var/cache/braid"))
BUILDROOT = CACHE / "buildroot"
GUESTROOT = CACHE / "guestroot"
KERNEL_IMAGE = CACHE / "kernel/build/arch/x86/boot/bzImage"
KERNEL_MODULES = CACHE / "kernel/modroot/lib/modules"
MODULE_OUT = CACHE / "module"
# BRAID_CARD_BINARY runs another build of the card (a work tree's own) against the same cache.
CARD_BINARY = Path(os.environ.get("BRAID_CARD_BINARY", CACHE / "card-target/release/braid-card"))
RUNS = CACHE / "runs"
KEEP_RUNS = 20

# Kernel output that fails a guest whatever its job says. Lockdep and KFENCE reports start with
# "WARNING: possible ..." / "BUG: KFENCE: ..." and are caught by the first two.
SPLAT = re.compile(
    r"(?P<what>BUG: |WARNING: |Oops|Kernel panic|general protection fault|kernel BUG at|"
    r"UBSAN: |KFENCE: |INFO: possible|inconsistent lock state|suspicious RCU usage|"
    r"INFO: task .* blocked|rust_kernel: panicked|Call Trace:)"
)
DONE = re.compile(r"braid-init: job exited with status (\d+)")

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Runs in each child before exec: the kernel kills it if the launcher dies, however it dies."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def progress(msg: str) -> None:
    print(f"==> {msg}", file=sys.stderr, flush=True)


def host_has_hw_virt() -> bool:
    """KVM only with real VT-x/AMD-V: a /dev/kvm backed by a nested PVM hypervisor cannot run us."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return os.access("/dev/kvm", os.R_OK | os.W_OK) and re.search(r"^flags\s*:.*\b(vmx|svm)\b", flags, re.M) is not None


def qemu_command() -> tuple[list[str], dict[str, str]]:
    """QEMU from the build root, run through the root's own loader: no chroot, no mounts."""
    root = BUILDROOT
    libs = f"{root}/lib/x86_64-linux-gnu:{root}/usr/lib/x86_64-linux-gnu"
    cmd = [f"{root}/lib64/ld-linux-x86-64.so.2", "--library-path", libs, f"{root}/usr/bin/qemu-system-x86_64",
           "-L", f"{root}/usr/share/qemu", "-L", f"{root}/usr/share/seabios"]
    env = dict(os.environ, QEMU_MODULE_DIR=f"{root}/usr/lib/x86_64-linux-gnu/qemu")
    return cmd, env


class TestbedError(Exception):
    pass


def lock_cache() -> None:
    """Holds the cache for this process's lifetime: a second run on the same cache is told who has it
    instead of rebuilding what the first one's guests are using. Children (setup, lint) see
    BRAID_LOCKED and run under this lock."""
    if os.environ.get("BRAID_LOCKED"):
        return
    CACHE.mkdir(parents=True, exist_ok=True)
    fd = os.open(CACHE / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        owner = (CACHE / ".lock.owner").read_text().strip() if (CACHE / ".lock.owner").exists() else "pid unknown"
        raise TestbedError(f"another braid run ({owner}) is using the cache {CACHE}; wait for it to finish, "
                           "or point BRAID_CACHE at another directory") from None
    (CACHE / ".lock.owner").write_text(f"pid {os.getpid()}: {' '.join(sys.argv)}\n")
    os.environ["BRAID_LOCKED"] = "1"


def setup(*steps: str) -> None:
    """Brings the build root, guest root, kernel, braid.ko and the card up to date (qemu-testbed/env/setup)."""
    lock_cache()
    if subprocess.run([str(TOP / "qemu-testbed/env/setup"), *steps]).returncode != 0:
        raise TestbedError("setup failed (see the messages above)")


@dataclass
class Function:
    """One PCI function of a card: its kind (ena, efa) and the vfio-user socket serving it."""

    card: "Card"
    kind: str
    socket: Path


# Joined cards' flowlet source ports: a range of SRD_PORT_SPAN per card from SRD_PORT_BASE, above
# Linux's default ephemeral range (32768-60999) so that no other socket takes them.
SRD_PORT_BASE = 61000
SRD_PORT_SPAN = 1000
SRD_PORT_RANGES = 4


def free_udp_port() -> int:
    """A UDP port on 127.0.0.1 nobody uses now (the kernel's pick)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# Control verbs and their arguments after FUNCTION (see braid-card's src/control.rs).
CONTROL_VERBS = {"status": None, "link": "state", "fatal-error": None, "keep-alive": "action"}
# Verbs of a card with an SRD uplink (joined_cards), about the whole card, and their one argument.
SRD_VERBS = {"contexts": None, "flowlets": None, "fault-drop": "percent"}


def control_request(words: list[str | int | Path]) -> dict:
    """A control request from its words: ["status"], ["contexts"], ["flowlets"], ["fault-drop", PERCENT],
    ["link", FUNCTION, "up"|"down"],
    ["fatal-error", FUNCTION], ["keep-alive", FUNCTION, "pause"|"resume"]. FUNCTION is the card's
    function index or socket path. Raises TestbedError on anything else (the card checks the values)."""
    if not words or (words[0] not in CONTROL_VERBS and words[0] not in SRD_VERBS):
        raise TestbedError(f"unknown control verb {words[0] if words else ''!r} "
                           f"(one of {', '.join([*CONTROL_VERBS, *SRD_VERBS])})")
    verb, rest = str(words[0]), list(words[1:])
    if verb == "status" or verb in SRD_VERBS:
        extra = SRD_VERBS.get(verb)
        if len(rest) != (1 if extra else 0):
            raise TestbedError(f"usage: {verb}" + (f" {extra.upper()}" if extra else "") +
                               f" (got {' '.join(map(str, words))!r})")
        if not extra:
            return {"verb": verb}
        try:
            return {"verb": verb, extra: float(rest[0])}
        except ValueError:
            raise TestbedError(f"{verb}: {rest[0]!r} is not a number") from None
    extra = CONTROL_VERBS[verb]
    if len(rest) != (2 if extra else 1):
        usage = f"{verb} FUNCTION" + (f" {extra.upper()}" if extra else "")
        raise TestbedError(f"usage: {usage} (got {' '.join(map(str, words))!r})")
    fn = rest[0]
    request: dict = {"verb": verb, "function": fn if isinstance(fn, int) else str(fn)}
    if extra:
        request[extra] = str(rest[1])
    return request


@dataclass
class Card:
    name: str
    proc: subprocess.Popen
    log: Path
    functions: list[Function] = field(default_factory=list)
    control_socket: Path | None = None
    # Killed on a guest's request (the remove-card verb): its death is the test, not a failure.
    removed: bool = False

    def control(self, *verb: str | int | Path, timeout: float = 10.0) -> dict:
        """Sends one request to the card's control socket (e.g. control("link", 0, "down")) and returns
        the card's response: {"ok": true, "message": ..., "functions": [...]} or {"ok": false, "error": ...}.
        Raises TestbedError when the request is malformed or the card cannot be reached."""
        request = control_request(list(verb))
        if self.control_socket is None:
            raise TestbedError(f"card {self.name} has no control socket")
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(timeout)
                sock.connect(str(self.control_socket))
                sock.sendall(json.dumps(request).encode() + b"\n")
                answer = b""
                while not answer.endswith(b"\n"):
                    chunk = sock.recv(65536)
                    if not chunk:
                        break
                    answer += chunk
        except OSError as e:
            raise TestbedError(f"card {self.name}: control socket {self.control_socket}: {e}") from None
        try:
            return json.loads(answer)
        except ValueError:
            raise TestbedError(f"card {self.name}: unreadable control response {answer[:200]!r}") from None


@dataclass
class VmResult:
    name: str
    ok: bool
    reasons: list[str]
    job_status: int | None
    serial: Path
    scratch: Path
    seconds: float


@dataclass
class Vm:
    name: str
    proc: subprocess.Popen
    serial: Path
    scratch: Path
    deadline: float
    started: float
    result: VmResult | None = None
    # The attached card functions, in attachment order: the guest's function i is functions[i].
    functions: list[Function] = field(default_factory=list)

    def verdict(self, timed_out: bool) -> VmResult:
        log = self.serial.read_text(errors="replace") if self.serial.exists() else ""
        reasons = []
        splats = [line.strip() for line in log.splitlines() if SPLAT.search(line)]
        if splats:
            more = f" (+{len(splats) - 1} more lines)" if len(splats) > 1 else ""
            reasons.append(f"kernel splat: {splats[0]!r}{more}")
        done = DONE.search(log)
        status = int(done.group(1)) if done else None
        if timed_out:
            reasons.append("timed out")
        elif status is None:
            reasons.append(f"guest stopped before its job finished (QEMU exit {self.proc.returncode})")
        elif status != 0:
            reasons.append(f"job exited with status {status}")
        return VmResult(self.name, not reasons, reasons, status, self.serial, self.scratch,
                        time.monotonic() - self.started)


class Testbed:
    """Cards and guests of one run, under RUNS/<id>/ (logs and scratch kept for inspection)."""

    def __init__(self, name: str = "run", timeout: float = 300.0):
        for path, what in ((KERNEL_IMAGE, "test kernel"), (GUESTROOT / "sbin/braid-init", "guest root"),
                           (CARD_BINARY, "card")):
            if not path.exists():
                raise TestbedError(f"no {what} at {path}: run 'make' targets or qemu-testbed/env/setup first")
        RUNS.mkdir(parents=True, exist_ok=True)
        self.dir = RUNS / f"{time.strftime('%Y%m%d-%H%M%S')}-{name}-{os.getpid()}"
        self.dir.mkdir()
        self._prune_runs()
        self.timeout = timeout
        self.cards: list[Card] = []
        self.vms: list[Vm] = []
        self.accel = "kvm" if host_has_hw_virt() else "tcg"
        self.channel = ControlChannel(self)

    def __enter__(self) -> "Testbed":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    @staticmethod
    def _prune_runs() -> None:
        runs = sorted(RUNS.iterdir(), key=lambda p: p.stat().st_mtime)
        for old in runs[:-KEEP_RUNS]:
            shutil.rmtree(old, ignore_errors=True)

    def card(self, name: str, functions: list[str], args: list[str] | None = None,
             prefix: list[str] | None = None) -> Card:
        """Starts a card process with the given functions (e.g. ["ena", "efa"]) and waits for its sockets.
        `prefix` goes before the command (e.g. `ip netns exec NS`, which execs the card in place)."""
        sockdir = self.dir / name
        sockdir.mkdir()
        fns = [(kind, sockdir / f"{kind}{i}.sock") for i, kind in enumerate(functions)]
        control = sockdir / "control.sock"
        cmd = (prefix or []) + [str(CARD_BINARY)]
        for kind, sock in fns:
            cmd += ["--function", f"{kind}:{sock}"]
        cmd += ["--control", str(control)]
        cmd += args or []
        log = self.dir / f"{name}.log"
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log.open("wb"), stderr=subprocess.STDOUT,
                                preexec_fn=_die_with_parent)
        card = Card(name, proc, log, [], control)
        card.functions = [Function(card, kind, sock) for kind, sock in fns]
        self.cards.append(card)
        deadline = time.monotonic() + 10
        while not all(sock.exists() for sock in [control] + [sock for _, sock in fns]):
            if proc.poll() is not None:
                raise TestbedError(f"card {name} exited with status {proc.returncode}: {log.read_text()[-2000:]}")
            if time.monotonic() > deadline:
                raise TestbedError(f"card {name} did not create its sockets within 10 s (log: {log})")
            time.sleep(0.02)
        return card

    def joined_cards(self, names: list[str], functions: list[str], flowlets: int = 8,
                     hosts: list[tuple[list[str], str]] | None = None) -> list[Card]:
        """Starts one card per name, each with `functions`, joined to every other over SRD: ENA frames
        and EFA messages between their functions cross the SRD transport. Each card takes its own range
        of flowlet source ports above the kernel's ephemeral range. Without `hosts` the cards listen on
        127.0.0.1, on ports the kernel picks; `hosts` gives card i a command prefix and a listen
        address (e.g. `ip netns exec` into a host of the SRD multipath fabric and that host's address)."""
        if len(names) > SRD_PORT_RANGES:
            raise TestbedError(f"at most {SRD_PORT_RANGES} joined cards")
        if hosts is None:
            hosts = [([], f"127.0.0.1:{free_udp_port()}") for _ in names]
        if len(hosts) != len(names):
            raise TestbedError(f"{len(names)} cards on {len(hosts)} hosts")
        cards = []
        for i, name in enumerate(names):
            lo = SRD_PORT_BASE + i * SRD_PORT_SPAN
            # A card shares two cores with TCG guests: a 2 ms floor on the retransmission timeout keeps
            # its descheduled peer from looking like a dead path (docs/srd.md).
            args = ["--srd-listen", hosts[i][1], "--srd-flowlets", str(flowlets), "--srd-min-rto", "2",
                    "--srd-src-ports", f"{lo}-{lo + SRD_PORT_SPAN - 1}"]
            for j, (_, peer) in enumerate(hosts):
                if j != i:
                    args += ["--srd-peer", peer]
            cards.append(self.card(name, functions, args, prefix=hosts[i][0]))
        return cards

    def vm(self, name: str, functions: list[Function], job: str, *, memory_mb: int = 1024, smp: int = 1,
           interactive: bool = False, env: dict[str, str] | None = None, ram: str = "shared",
           timeout: float | None = None, devices: list[str] | None = None) -> Vm:
        """Boots a guest with `functions` attached (each behind its own PCIe root port) that runs `job` (sh).

        `ram` is "shared" (memfd, share=on: what the card needs), or, for the testbed's own tests of
        the card's refusal, "private" (memfd, share=off) or "anonymous" (no memory backend).
        `devices` are further QEMU arguments (e.g. a virtio-net NIC the benchmarks compare with)."""
        backends = {"shared": "share=on", "private": "share=off", "anonymous": None}
        if ram not in backends:
            raise TestbedError(f"unknown guest RAM kind {ram!r} (one of {', '.join(backends)})")
        scratch = self.dir / name
        scratch.mkdir()
        (scratch / "hostname").write_text(name + "\n")
        exports = "".join(f"export {k}={_sh_quote(v)}\n" for k, v in (env or {}).items())
        if not interactive:
            (scratch / "job").write_text("set -u\n" + exports + job + "\n")
        # What the guest's tests expect to find, one function per line: kind vendor device.
        (scratch / "functions").write_text("".join(f"{f.kind} {f.card.name}\n" for f in functions))
        serial = self.dir / f"{name}.serial.log"
        qemu, qenv = qemu_command()
        mem = f"{memory_mb}M"
        cmdline = ("console=ttyS0 root=root rootfstype=9p rootflags=trans=virtio,version=9p2000.L,msize=262144 "
                   "ro init=/sbin/braid-init panic=-1 no_hash_pointers quiet loglevel=4")
        if backends[ram]:
            machine = ["-machine", "q35,memory-backend=ram",
                       "-object", f"memory-backend-memfd,id=ram,size={mem},{backends[ram]}"]
        else:
            machine = ["-machine", "q35"]
        args = qemu + machine + [
            "-accel", self.accel, "-cpu", "max", "-smp", str(smp), "-m", mem, "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
            "-kernel", str(KERNEL_IMAGE), "-append", cmdline,
        ]
        if interactive:
            args += ["-chardev", f"stdio,id=ser0,signal=off,logfile={serial}", "-serial", "chardev:ser0"]
        else:
            args += ["-chardev", f"file,id=ser0,path={serial}", "-serial", "chardev:ser0"]
        shares = [("root", GUESTROOT, True), ("src", TOP, True), ("out", MODULE_OUT, True),
                  ("modules", KERNEL_MODULES, True), ("scratch", scratch, False)]
        for tag, path, ro in shares:
            args += ["-fsdev", f"local,id=fs_{tag},path={path},security_model=none" + (",readonly=on" if ro else ""),
                     "-device", f"virtio-9p-pci,fsdev=fs_{tag},mount_tag={tag}"]
        for i, fn in enumerate(functions):
            port = f"rp{i}"
            args += ["-device", f"pcie-root-port,id={port},chassis={i + 1},slot={i + 1},bus=pcie.0,addr={0x10 + i:#x}",
                     "-device", json.dumps({"driver": "vfio-user-pci", "bus": port, "id": f"{fn.kind}{i}",
                                            "socket": {"type": "unix", "path": str(fn.socket)}})]
        args += devices or []
        (scratch / "qemu.cmdline").write_text(" ".join(args) + "\n")
        qemu_log = self.dir / f"{name}.qemu.log"
        proc = subprocess.Popen(args, env=qenv, preexec_fn=_die_with_parent,
                                stdin=None if interactive else subprocess.DEVNULL,
                                stdout=None if interactive else qemu_log.open("wb"),
                                stderr=None if interactive else subprocess.STDOUT)
        now = time.monotonic()
        vm = Vm(name, proc, serial, scratch, now + (timeout or self.timeout), now, functions=list(functions))
        self.vms.append(vm)
        self.channel.start()
        return vm

    def wait(self) -> list[VmResult]:
        """Waits for every guest to power off (or time out) and returns their verdicts."""
        pending = [vm for vm in self.vms if vm.result is None]
        while pending:
            for vm in pending:
                if vm.proc.poll() is not None:
                    vm.result = vm.verdict(timed_out=False)
                elif time.monotonic() > vm.deadline:
                    _stop(vm.proc)
                    vm.result = vm.verdict(timed_out=True)
            for card in self.cards:
                if card.proc.poll() is not None and card.proc.returncode != 0 and not card.removed:
                    raise TestbedError(f"card {card.name} died with status {card.proc.returncode} (log: {card.log})")
            pending = [vm for vm in pending if vm.result is None]
            time.sleep(0.05)
        return [vm.result for vm in self.vms if vm.result is not None]

    def stop(self) -> None:
        self.channel.stop()
        for vm in self.vms:
            _stop(vm.proc)
        for card in self.cards:
            _stop(card.proc)


class ControlChannel:
    """Lets guest tests drive their own card: a guest writes a request file
    /braid/scratch/control/<id>.req (its scratch directory on the host) holding one line, "VERB
    [FUNCTION_INDEX] [ARGS...]", with FUNCTION_INDEX the guest's function index (attachment order, as
    in the scratch file `functions`; default 0). A thread polls every running guest's control
    directory every POLL seconds, sends the request to the control socket of the card that function
    belongs to, naming the function by its socket path (`status I` answers with that function only), and
    writes the response as one line of JSON to <id>.resp (atomically: a temporary file renamed), then
    removes the request. Malformed requests get {"ok": false, "error": ...}.

    One verb is the launcher's own: `remove-card I` kills the card process that function I belongs
    to (SIGKILL: every function of that card goes at once, as a card pulled out of a host would),
    for surprise-removal tests; QEMU keeps the guest running, and the card's death no longer fails
    the boot. The SRD verbs (`contexts`, `flowlets`, `fault-drop I PERCENT`) go to function I's card
    as a whole (its SRD uplink, joined cards only)."""

    POLL = 0.1

    def __init__(self, testbed: "Testbed"):
        self.testbed = testbed
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="control-channel", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(self.POLL):
            for vm in list(self.testbed.vms):
                if vm.proc.poll() is None:
                    self.serve(vm)

    def serve(self, vm: Vm) -> None:
        """Answers every pending request of one guest."""
        directory = vm.scratch / "control"
        try:
            pending = sorted(directory.glob("*.req"))
        except OSError:
            return
        for req in pending:
            try:
                line = req.read_text(errors="replace").strip()
            except OSError:
                continue
            response = self.answer(vm, line)
            resp = req.with_suffix(".resp")
            tmp = req.with_suffix(".resp.tmp")
            try:
                tmp.write_text(json.dumps(response, separators=(",", ":")) + "\n")
                tmp.rename(resp)
                req.unlink()
            except OSError as e:
                progress(f"{vm.name}: cannot answer control request {req.name}: {e}")

    @staticmethod
    def answer(vm: Vm, line: str) -> dict:
        words = line.split()
        try:
            if not words:
                raise TestbedError("empty request: write 'VERB [FUNCTION_INDEX] [ARGS...]'")
            verb, args = words[0], words[1:]
            index_arg = args[0] if args else "0"
            if not index_arg.isdigit():
                raise TestbedError(f"{index_arg!r} is not a function index (0 .. {len(vm.functions) - 1})")
            index = int(index_arg)
            if index >= len(vm.functions):
                raise TestbedError(f"this guest has no function {index} (it has {len(vm.functions)})")
            fn = vm.functions[index]
            if verb == "remove-card":
                if len(args) > 1:
                    raise TestbedError("usage: remove-card [FUNCTION_INDEX]")
                card = fn.card
                card.removed = True
                card.proc.kill()
                card.proc.wait()
                response = {"ok": True, "message": f"card {card.name} killed"}
            elif verb == "status":
                if len(args) > 1:
                    raise TestbedError("usage: status [FUNCTION_INDEX]")
                response = fn.card.control("status")
                response["functions"] = [f for f in response.get("functions", []) if f["socket"] == str(fn.socket)]
            elif verb in SRD_VERBS:
                # About the function's card as a whole (its SRD uplink).
                response = fn.card.control(verb, *args[1:])
            else:
                response = fn.card.control(verb, fn.socket, *args[1:])
            response["guest_function"] = index
            return response
        except TestbedError as e:
            return {"ok": False, "error": str(e)}


def _stop(proc: subprocess.Popen, grace: float = 5.0) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _sh_quote(s: str) -> str:
    return "'" + s.replace("'", "'\\''") + "'"
