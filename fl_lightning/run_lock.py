"""``RunLock``: one process at a time may fit into a run's folder (a lock file created with ``O_EXCL``)."""
from __future__ import annotations

import json
import os
import socket
import time
import warnings
from pathlib import Path
from typing import Any

#: the lock file's suffix: ``.<folder name>.fit.lock`` beside the run's folder, not inside it, so that
#: the folder stays empty until the loggers write (Lightning's CSVLogger warns about a non-empty one)
LOCK_SUFFIX = ".fit.lock"


class RunFolderLocked(FileExistsError):
    """Another live process is fitting into the same run folder."""


class RunLock:
    """The lock file ``.FOLDER.fit.lock`` beside ``FOLDER``, holding the owner's pid, host and start time.

    :meth:`acquire` creates it atomically (``O_CREAT | O_EXCL``) or raises :class:`RunFolderLocked`
    naming the process that holds it. A lock left by a dead process on this host (a SIGKILL) is
    taken over with a warning, as is one whose pid now belongs to a process started after the lock
    was written (a reused pid). :meth:`release` removes the file if it is still ours.
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.path = self.folder.parent / f".{self.folder.name}{LOCK_SUFFIX}"
        self.owner = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
        self.held = False

    def acquire(self) -> "RunLock":
        """Take the lock; a stale one (dead pid on this host, or unreadable) is taken over with a warning."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(3):  # a stale lock removed by us may be re-taken by a racing process in between
            if self._create():
                self.held = True
                return self
            holder = self._read()
            if not self._is_stale(holder):
                raise RunFolderLocked(
                    f"{self.folder} is in use by another fit (pid {holder.get('pid')} on {holder.get('host')}, "
                    f"started {_when(holder.get('started'))}); wait for it to finish, or log this run to another "
                    f"folder (another logger version / --name). If that process is gone, delete {self.path}")
            warnings.warn(f"{self.path}: taking over the stale lock of pid {holder.get('pid')} on "
                          f"{holder.get('host')} (started {_when(holder.get('started'))}), which no longer runs",
                          RuntimeWarning, stacklevel=3)
            self.path.unlink(missing_ok=True)
        raise RunFolderLocked(f"{self.path}: could not take the lock; another process keeps taking it")

    def release(self) -> None:
        """Remove the lock file if this process holds it."""
        if self.held and self._read().get("pid") == self.owner["pid"]:
            self.path.unlink(missing_ok=True)
        self.held = False

    def __enter__(self) -> "RunLock":
        return self.acquire()

    def __exit__(self, *exc: Any) -> None:
        self.release()

    def _create(self) -> bool:
        try:
            handle = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(handle, "w") as stream:
            json.dump(self.owner, stream)
        return True

    def _read(self) -> dict[str, Any]:
        try:
            holder = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        return holder if isinstance(holder, dict) else {}

    def _is_stale(self, holder: dict[str, Any]) -> bool:
        pid = holder.get("pid")
        if not isinstance(pid, int) or isinstance(pid, bool):
            return True  # empty or torn: its writer died between creating and writing it
        if holder.get("host") != self.owner["host"]:
            return False  # another machine's process: we cannot tell whether it still runs
        if not _alive(pid):
            return True
        started, lock_time = _process_start(pid), holder.get("started")
        # the pid was reused: the process now holding it started after the lock was written
        return started is not None and isinstance(lock_time, (int, float)) and started > lock_time + 2.0


def _alive(pid: int) -> bool:
    """Whether a process with this id runs on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, under another user
    except OverflowError:
        return False
    return True


def _process_start(pid: int) -> float | None:
    """When process ``pid`` started (seconds since the epoch), where ``/proc`` says; else ``None``."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime "))
        return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22 of stat: start time in clock ticks
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def _when(started: Any) -> str:
    if not isinstance(started, (int, float)):
        return "at an unknown time"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started))
