"""Start server processes on 127.0.0.1 for a test and always stop them, their whole process trees included.

:func:`in_private_network` runs a command where 127.0.0.1 is the only address there is (for software
such as Ray that swaps loopback for the machine's own address).
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Sequence


def in_private_network(args: Sequence[str]) -> list[str]:
    """``args`` run in new network and pid namespaces: only ``lo`` (brought up), and all its processes die with it.

    No interface but ``lo`` exists in there, so no address outside 127.0.0.0/8 can be reached or bound;
    the new pid namespace (with its own ``/proc``) ends every process started inside when its first
    process ends, daemons in their own sessions included.
    """
    return ["unshare", "--net", "--pid", "--fork", "--kill-child", "--mount-proc", "--",
            "sh", "-c", 'ip link set lo up && exec "$@"', "sh", *args]


def private_network_available() -> bool:
    """Whether :func:`in_private_network` works here (root, util-linux ``unshare``, iproute2 ``ip``)."""
    try:
        return subprocess.run(in_private_network(["true"]), capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout_s: float, process: subprocess.Popen | None = None) -> None:
    """Block until something accepts TCP connections on 127.0.0.1:``port`` (``TimeoutError`` after ``timeout_s``)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"{process.args!r} exited with {process.returncode} before listening on {port}")
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.settimeout(1.0)
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.3)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout_s:.0f} s")


def _children() -> dict[int, list[int]]:
    """Parent pid -> child pids, read from /proc."""
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        tree.setdefault(ppid, []).append(int(entry))
    return tree


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (some daemons start their own session, so a group kill misses them)."""
    tree, found, todo = _children(), [], [pid]
    while todo:
        for child in tree.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


class ProcessGroup:
    """Processes started in their own sessions; :meth:`stop` ends each one's group and every descendant."""

    def __init__(self, log_dir: Path, env: dict[str, str]) -> None:
        self.log_dir, self.env = log_dir, env
        self.processes: list[subprocess.Popen] = []

    def start(self, name: str, args: Sequence[str]) -> subprocess.Popen:
        """Start ``args`` with stdout and stderr in ``log_dir/name.log``."""
        log = open(self.log_dir / f"{name}.log", "wb")
        process = subprocess.Popen(list(args), stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                   start_new_session=True)
        log.close()
        self.processes.append(process)
        return process

    def log(self, name: str) -> str:
        """What process ``name`` has printed so far."""
        return (self.log_dir / f"{name}.log").read_text(errors="replace")

    def stop(self, grace_s: float = 10.0) -> None:
        """SIGTERM every group and descendant, then SIGKILL whatever is left after ``grace_s``."""
        pids = [p.pid for p in self.processes if p.poll() is None]
        targets = set(pids)
        for pid in pids:
            targets.update(descendants(pid))
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in targets:
                for kill in (os.killpg, os.kill):
                    try:
                        kill(pid, sig)
                    except (ProcessLookupError, PermissionError):
                        pass
            deadline = time.monotonic() + grace_s
            while sig == signal.SIGTERM and time.monotonic() < deadline and any(_alive(p) for p in targets):
                time.sleep(0.2)
        for process in self.processes:
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"
