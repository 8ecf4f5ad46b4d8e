"""What each client keeps from one round to its next: its local optimizer's state and its momentum.

:class:`ClientStates` is one of the parts the checkpoint connector saves, so a resumed run gives every
client back exactly what it held. The tensors live on the CPU (never on the training device); beyond
``max_memory_mb`` the least recently used clients' entries are written to files under ``spill_dir``
and read back when the client is next selected. Memory: clients x parameters x state tensors x 4 bytes
(client momentum: one tensor per client; SGD momentum: one more; Adam: two more).
"""
from __future__ import annotations

import shutil
import tempfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

#: the name each kind of client state is kept under
MOMENTUM = "momentum"
OPTIMIZER = "optimizer"


def _nbytes(value: Any) -> int:
    if isinstance(value, Tensor):
        return value.numel() * value.element_size()
    if isinstance(value, dict):
        return sum(_nbytes(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(_nbytes(v) for v in value)
    return 0


class ClientStates:
    """Per-client state by name (``client_id -> {name: value}``), on the CPU, spilled to disk beyond a size."""

    def __init__(self, max_memory_mb: float | None = None, spill_dir: str | Path | None = None) -> None:
        if max_memory_mb is not None and max_memory_mb < 0:
            raise ValueError(f"client_state_max_mb must be >= 0 or None, got {max_memory_mb}")
        self.max_bytes = None if max_memory_mb is None else int(max_memory_mb * 2 ** 20)
        self.spill_root = None if spill_dir is None else Path(spill_dir)
        self._memory: OrderedDict[int, dict[str, Any]] = OrderedDict()  # least recently used first
        self._spilled: dict[int, Path] = {}
        self._bytes = 0
        self._dir: Path | None = None

    def __len__(self) -> int:
        return len(self._memory) + len(self._spilled)

    @property
    def memory_bytes(self) -> int:
        """Bytes of state held in memory now (spilled entries excluded)."""
        return self._bytes

    @property
    def spilled(self) -> list[int]:
        """Clients whose state is on disk now."""
        return sorted(self._spilled)

    def get(self, client_id: int, name: str) -> Any:
        """The client's ``name`` state, or ``None`` when it has none yet."""
        entry = self._entry(client_id)
        return None if entry is None else entry.get(name)

    def put(self, client_id: int, name: str, value: Any) -> None:
        """Set the client's ``name`` state (tensors are moved to the CPU)."""
        entry = self._entry(client_id)
        if entry is None:
            entry = {}
            self._memory[client_id] = entry
        self._bytes -= _nbytes(entry.get(name))
        entry[name] = _to_cpu(value)
        self._bytes += _nbytes(entry[name])
        self._spill()

    def _entry(self, client_id: int) -> dict[str, Any] | None:
        if client_id in self._memory:
            self._memory.move_to_end(client_id)
            return self._memory[client_id]
        path = self._spilled.pop(client_id, None)
        if path is None:
            return None
        entry = torch.load(path, weights_only=True)
        path.unlink()
        self._memory[client_id] = entry
        self._bytes += _nbytes(entry)
        self._spill()  # the entry read back is the most recent: others make room for it
        return entry

    def _spill(self) -> None:
        """Write the least recently used entries to disk until the memory held is under the limit."""
        if self.max_bytes is None:
            return
        while self._bytes > self.max_bytes and len(self._memory) > 1:
            client_id, entry = self._memory.popitem(last=False)
            path = self._spill_dir() / f"client_{client_id}.pt"
            torch.save(entry, path)
            self._spilled[client_id] = path
            self._bytes -= _nbytes(entry)

    def _spill_dir(self) -> Path:
        if self._dir is None:
            if self.spill_root is not None:
                self.spill_root.mkdir(parents=True, exist_ok=True)
            self._dir = Path(tempfile.mkdtemp(prefix="fl_client_state_", dir=self.spill_root))
        return self._dir

    def clear(self) -> None:
        """Forget every client's state and remove spilled files."""
        self._memory.clear()
        self._spilled.clear()
        self._bytes = 0
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def state_dict(self) -> dict[str, Any]:
        """Every client's state (spilled ones read back for the checkpoint), keyed by the client id as text."""
        state = {str(cid): entry for cid, entry in self._memory.items()}
        for cid, path in self._spilled.items():
            state[str(cid)] = torch.load(path, weights_only=True)
        return {"clients": state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Replace every client's state with :meth:`state_dict`'s."""
        self.clear()
        for cid, entry in state.get("clients", {}).items():
            for name, value in entry.items():
                self.put(int(cid), name, value)


def _to_cpu(value: Any) -> Any:
    if isinstance(value, Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, dict):
        return {k: _to_cpu(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_to_cpu(v) for v in value]
    return value


class ClientMomentum:
    """Worker momentum (Karimireddy, He & Jaggi 2021): each client sends ``m_t = b m_{t-1} + (1 - b) U_t``.

    ``m_0 = 0``; a client's momentum is kept (in :class:`ClientStates`) while it is not selected and
    resumes when it returns. A client that failed or whose update is not finite keeps its old momentum
    and sends its raw row (which the round drops).
    """

    def __init__(self, beta: float, states: ClientStates) -> None:
        if not 0.0 <= beta < 1.0:
            raise ValueError(f"client_momentum must be in [0, 1), got {beta}")
        self.beta = float(beta)
        self.states = states

    def apply(self, updates: Tensor, client_ids: list[int], usable: Tensor) -> Tensor:
        """Replace each usable row of ``updates`` (in place) by the client's new momentum; returns ``updates``."""
        if self.beta == 0.0:
            return updates
        for row, (cid, ok) in enumerate(zip(client_ids, usable.tolist())):
            if not ok:
                continue
            previous = self.states.get(cid, MOMENTUM)
            fresh = updates[row].detach().to("cpu", copy=True)
            momentum = fresh.mul_(1 - self.beta) if previous is None else previous.mul_(self.beta).add_(
                fresh, alpha=1 - self.beta)
            self.states.put(cid, MOMENTUM, momentum)
            updates[row].copy_(momentum)
        return updates
