"""Find, inspect and end the processes of a Ray instance a test started itself, and only those.

A test that needs its own Ray (a `ray start --head`, a multi-node ``ray.cluster_utils.Cluster``) starts
it from a child process created with ``start_new_session=True`` and its own ``--temp-dir``: every process
Ray then spawns carries that session id or names that folder on its command line. Ending exactly those
leaves every other Ray instance on the machine alone (never `ray stop`, which ends them all).
Linux only (reads /proc).
"""

from __future__ import annotations

import os
import signal
import socket
import time
from pathlib import Path


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def session_processes(session_id: int, marker: str) -> list[int]:
    """PIDs of the processes in session ``session_id`` or whose command line contains ``marker``."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        pid = int(entry)
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            in_session = os.getsid(pid) == session_id
        except (OSError, ProcessLookupError):
            continue  # ended meanwhile, or not ours to look at
        if in_session or marker in cmdline:
            found.append(pid)
    return found


def descendants(pid: int) -> set[int]:
    """PIDs of every process below ``pid`` (children, their children, ...)."""
    parents = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue  # ended meanwhile
        parents[int(entry)] = int(stat[stat.rindex(")") + 2:].split()[1])  # the name may hold spaces
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def end_processes(session_id: int, marker: str, grace_s: float = 10.0) -> list[int]:
    """SIGTERM the processes of ``session_id`` / ``marker``, SIGKILL those left after ``grace_s``.

    Returns the PIDs still alive afterwards (empty when all ended).
    """
    for sig, wait_s in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 5.0)):
        for pid in session_processes(session_id, marker):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait_s
        while session_processes(session_id, marker) and time.monotonic() < deadline:
            time.sleep(0.2)
        if not session_processes(session_id, marker):
            return []
    return session_processes(session_id, marker)


def listening_addresses(pids: list[int]) -> list[str]:
    """Local addresses ("ip:port") of the TCP sockets in LISTEN state held by these processes."""
    inodes = set()
    for pid in pids:
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    inodes.add(target[len("socket:[") : -1])
        except OSError:
            continue
    addresses = []
    for table, family in (("/proc/net/tcp", socket.AF_INET), ("/proc/net/tcp6", socket.AF_INET6)):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state != "0A" or inode not in inodes:  # 0A: LISTEN
                continue
            hex_ip, hex_port = local.split(":")
            raw = bytes.fromhex(hex_ip)
            # /proc prints each 32-bit word of the address in host (little-endian) byte order.
            packed = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
            addresses.append(f"{socket.inet_ntop(family, packed)}:{int(hex_port, 16)}")
    return addresses
