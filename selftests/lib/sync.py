#!/usr/bin/env python3
"""Meets the peer guest at a named barrier over TCP (the guests share nothing but the network).

    sync.py listen PEER NAME TIMEOUT [MESSAGE...]
    sync.py connect PEER NAME TIMEOUT [MESSAGE...]

One guest listens on PORT, the other connects to it (retrying while the peer is not there yet: no
route, no ARP answer, connection refused). The connecting side sends "NAME MESSAGE", the listening
side answers "NAME MESSAGE"; each prints the peer's MESSAGE and exits 0 once it has the other's line,
so both have reached NAME. A peer at another barrier (it skipped or failed a step) fails both sides at
once, and no peer within TIMEOUT seconds fails this side: a dead peer never hangs a test.
"""

import socket
import sys
import time

PORT = 5399


def fail(msg: str) -> None:
    print(f"sync: {msg}", file=sys.stderr)
    sys.exit(1)


def read_line(conn: socket.socket) -> str:
    data = b""
    while not data.endswith(b"\n"):
        chunk = conn.recv(4096)
        if not chunk:
            break
        data += chunk
    return data.decode(errors="replace").strip()


def check(name: str, line: str) -> str:
    peer_name, _, peer_msg = line.partition(" ")
    if peer_name != name:
        fail(f"peer is at barrier {peer_name!r}, we are at {name!r}")
    return peer_msg


def listen(peer: str, name: str, deadline: float, msg: str) -> str:
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("", PORT))
    srv.listen(4)
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            fail(f"no peer at barrier {name!r}")
        srv.settimeout(remaining)
        try:
            conn, (addr, _) = srv.accept()
        except socket.timeout:
            fail(f"no peer at barrier {name!r}")
        with conn:
            if addr != peer:
                continue
            conn.settimeout(10)
            try:
                line = read_line(conn)
                if not line:
                    continue
                conn.sendall(f"{name} {msg}\n".encode())
            except OSError:
                continue
            return check(name, line)


def connect(peer: str, name: str, deadline: float, msg: str) -> str:
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            fail(f"no peer at barrier {name!r} ({peer}:{PORT})")
        try:
            with socket.create_connection((peer, PORT), timeout=min(3.0, remaining)) as conn:
                conn.settimeout(10)
                conn.sendall(f"{name} {msg}\n".encode())
                line = read_line(conn)
        except OSError:
            line = ""
        if line:
            return check(name, line)
        time.sleep(0.5)


def main() -> None:
    if len(sys.argv) < 5 or sys.argv[1] not in ("listen", "connect"):
        fail("usage: sync.py listen|connect PEER NAME TIMEOUT [MESSAGE...]")
    role, peer, name, timeout = sys.argv[1:5]
    msg = " ".join(sys.argv[5:])
    deadline = time.monotonic() + float(timeout)
    print((listen if role == "listen" else connect)(peer, name, deadline, msg))


if __name__ == "__main__":
    main()
