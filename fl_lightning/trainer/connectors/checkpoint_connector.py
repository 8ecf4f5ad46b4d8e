"""``CheckpointConnector``: saves, finds and restores a run from the ``state_dict()`` of each stateful part."""
from __future__ import annotations

import re
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Protocol, Sequence

import torch
from lightning.pytorch.loggers import TensorBoardLogger
from torch import Tensor

import fl_lightning.checkpoint as ckpt
from fl_lightning.run_lock import RunLock
from fl_lightning.stopping import critical_section, run_cleanup

if TYPE_CHECKING:
    from fl_lightning.trainer.trainer import FederatedTrainer


class Stateful(Protocol):
    """Anything saved in a checkpoint: Lightning's ``state_dict`` / ``load_state_dict`` pair."""

    def state_dict(self) -> Any: ...

    def load_state_dict(self, state: Any) -> None: ...


class KeyedStates:
    """A list of plug-ins (attacks, callbacks) saved as ``{state_key: state}``, keyed by identity as Lightning keys
    callbacks, so that adding or removing another plug-in never hands one plug-in another's state.

    Two plug-ins with the same ``state_key`` are told apart by order (``"Key"``, ``"Key#1"``). Checkpoints
    written before this keyed entries by position (``"<index>:<state_key>"``); those still load.
    """

    _LEGACY = re.compile(r"^(\d+):(.+)$", re.DOTALL)

    def __init__(self, items: Sequence[Any], kind: str = "plug-in") -> None:
        self.items = items
        self.kind = kind

    def keys(self) -> list[str]:
        """Each plug-in's checkpoint key: its ``state_key``, numbered from the second plug-in with the same key."""
        seen: dict[str, int] = {}
        keys = []
        for item in self.items:
            key = str(item.state_key)
            keys.append(key if key not in seen else f"{key}#{seen[key]}")
            seen[key] = seen.get(key, 0) + 1
        return keys

    def state_dict(self) -> dict[str, Any]:
        """Each plug-in's state under its key."""
        return {key: item.state_dict() for key, item in zip(self.keys(), self.items)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Give each plug-in the state saved under its key; warn, listing them, about saved states no plug-in takes.

        A plug-in without saved state keeps its fresh state (it was not part of the saved run).
        """
        keys = self.keys()
        by_key = dict(zip(keys, self.items))
        taken: dict[int, tuple[Any, Any]] = {}
        unmatched = []
        for saved_key, value in state.items():
            item = by_key.get(saved_key)
            if item is None:
                item = self._legacy_match(str(saved_key), keys)
            if item is None or id(item) in taken:
                if value:  # an empty state (a progress bar's) loses nothing
                    unmatched.append(saved_key)
                continue
            taken[id(item)] = (item, value)
        for item, value in taken.values():
            item.load_state_dict(value)
        if unmatched:
            warnings.warn(f"the checkpoint holds {self.kind} state saved under {unmatched}, which matches no "
                          f"{self.kind} of this run ({keys or 'none'}); that state is not restored. Pass the same "
                          f"{self.kind}s (with the same settings) as the saved run to keep it", UserWarning,
                          stacklevel=4)

    def _legacy_match(self, saved_key: str, keys: list[str]) -> Any:
        """The plug-in an old ``"<index>:<state_key>"`` entry belongs to: same key, else same class at that index."""
        match = self._LEGACY.match(saved_key)
        if match is None:
            return None
        index, key = int(match.group(1)), match.group(2)
        if key in keys:
            return self.items[keys.index(key)]
        if index < len(self.items) and type(self.items[index]).__name__ == key:
            return self.items[index]
        return None


class CheckpointConnector:
    """Where a run's checkpoint lives, what goes into it and how a run resumes from it.

    A checkpoint holds the run's identity (data fingerprint, model layout, aggregator, checked on
    resume), its hyper-parameters (a resume warns about what changed), ``next_round``, and one entry
    per part of :meth:`stateful_parts`. A new piece of run state is added there and nowhere else.
    :meth:`begin` claims the run's folder for one fit (a lock file; never another run's folder) and
    :meth:`end` releases it.
    """

    def __init__(self, trainer: "FederatedTrainer") -> None:
        self.trainer = trainer
        self.lock: RunLock | None = None
        self._hparams: dict[str, Any] = {}
        #: ``next_round`` of the checkpoint this fit last wrote or resumed from (``None``: none)
        self.saved_round: int | None = None

    # -- what is saved ----------------------------------------------------------------------------------
    def stateful_parts(self) -> dict[str, Stateful]:
        """Checkpoint key -> the part saved under it (``""``: the part's entries sit at the top level)."""
        t = self.trainer
        return {
            "": t.global_model,  # global_params, global_buffers, int_buffers
            "aggregator_state": t.aggregator,
            "attack_states": KeyedStates(t.attacks, "attack"),
            "callback_states": KeyedStates(t.callbacks, "callback"),
            "detection": t.detection,
            "history": t.history,
            "schedule": t.schedule,
            # parts a run has only when it uses them (a checkpoint without them resumes a run without them)
            **({"client_states": t.client_states} if t.keep_optimizer_state or t.client_momentum else {}),
            **({"server_optimizer": t.global_model.server_optimizer}
               if t.global_model.server_optimizer is not None else {}),
        }

    def identity(self) -> dict[str, Any]:
        """What must match between a checkpoint's run and the current one."""
        t = self.trainer
        return {"fingerprint": t.datamodule.fingerprint,
                "layout": [[name, list(shape)] for name, shape in t.layout.signature()],
                "aggregator": type(t.aggregator).__name__}

    # -- where ------------------------------------------------------------------------------------------
    @property
    def checkpoint_path(self) -> Path:
        """Where the latest checkpoint of this run is written."""
        return self.trainer.log_dir / "checkpoints" / ckpt.CHECKPOINT_NAME

    def find(self, ckpt_path: str | Path) -> Path | None:
        """The file ``ckpt_path`` names: itself, or for ``"last"`` this run's own checkpoint (``None``: none yet).

        ``"last"`` never looks into another run's folder: in a recipe of several aggregators, one killed
        before its first checkpoint must start from round 0, not resume a neighbour's checkpoint.
        """
        if str(ckpt_path) != "last":
            return Path(ckpt_path)
        return self.checkpoint_path if self.checkpoint_path.is_file() else None

    def continue_last_version(self) -> None:
        """Point the trainer's own TensorBoard logger at its newest ``version_*`` folder that holds a run.

        Without this, ``fit(ckpt_path="last")`` with the default logger would open a fresh
        ``version_N+1`` and never find the run it should resume.
        """
        logger = self.trainer.logger
        if not isinstance(logger, TensorBoardLogger):
            return
        root = Path(logger.root_dir)
        versions = [p for p in root.glob("version_*") if p.is_dir() and p.name[8:].isdigit() and ckpt.run_files(p)]
        if versions:
            version_dir = max(versions, key=lambda p: int(p.name[8:]))
            self.trainer.logger = TensorBoardLogger(str(root.parent), name=root.name, version=version_dir.name)

    # -- one fit's hold on the folder -------------------------------------------------------------------
    def begin(self, ckpt_path: str | Path | None) -> int:
        """Claim the run's folder and resume from ``ckpt_path``; returns the round to start from.

        The folder is locked against a second process; without ``ckpt_path`` a logged run's folder that
        already holds a run is refused (its checkpoint and events are never overwritten or mixed; with
        logging off, overwriting the checkpoint in ``default_root_dir`` is warned about); stale ``.tmp-*``
        files of a killed write are removed; a resumed run's loggers drop what the interrupted process
        logged from the resumed round on.
        """
        t = self.trainer
        if str(ckpt_path) == "last" and t._owns_logger:
            self.continue_last_version()
        self._hparams = plain_hparams(t.hparams())
        if not (t.logger_connector.loggers or t.checkpoint_every):
            return self.restore(ckpt_path) if ckpt_path is not None else 0  # nothing will be written
        folder = t.log_dir
        self.lock = RunLock(folder).acquire()
        try:
            if ckpt_path is None and t.logger_connector.loggers:
                refuse_existing_run(folder)
            elif ckpt_path is None and self.checkpoint_path.is_file():
                # no logger: the folder is the user's default_root_dir; like Lightning's ModelCheckpoint, say so
                warnings.warn(f"{self.checkpoint_path} holds an earlier run's checkpoint, which this fit will "
                              "overwrite; pass ckpt_path='last' to resume it, or another default_root_dir to keep "
                              "it", RuntimeWarning, stacklevel=3)
            stale = ckpt.remove_temp_files(self.checkpoint_path.parent)
            if stale:
                warnings.warn(f"removed {len(stale)} unfinished checkpoint file(s) left by a write that was "
                              f"killed: {', '.join(p.name for p in stale)}", RuntimeWarning, stacklevel=3)
            if ckpt_path is None:
                return 0
            start_round = self.restore(ckpt_path)
            self.saved_round = start_round or None
            if start_round < t.rounds:
                purge_logged_from(t.logger_connector.loggers, start_round)
            return start_round
        except BaseException as exc:
            run_cleanup([("releasing the run folder's lock", self.end)], exc)  # never hides why begin failed
            raise

    def end(self) -> None:
        """Release the folder's lock (called when ``fit`` ends, however it ends)."""
        if self.lock is not None:
            self.lock.release()
            self.lock = None

    # -- save / restore ---------------------------------------------------------------------------------
    def save(self, next_round: int) -> Path:
        """Write every part's state atomically; a kill mid-write keeps the previous checkpoint."""
        state: dict[str, Any] = {**self.identity(), "hparams": self._hparams, "next_round": next_round}
        for key, part in self.stateful_parts().items():
            if key:
                state[key] = part.state_dict()
            else:
                state.update(part.state_dict())
        with critical_section():  # SIGTERM waits for the write: it would cut torch's zip writer in half
            path = ckpt.save_atomic(state, self.checkpoint_path)
            self.saved_round = next_round
        return path

    def restore(self, ckpt_path: str | Path) -> int:
        """Load the checkpoint ``ckpt_path`` names into every part; returns the round to start from (0: none found)."""
        path = self.find(ckpt_path)
        if path is None:
            warnings.warn(f"no checkpoint found for ckpt_path={str(ckpt_path)!r}: this run has none of its own at "
                          f"{self.checkpoint_path}; starting from round 0", RuntimeWarning, stacklevel=3)
            return 0
        state = ckpt.load(path)
        if "schedule" not in state and not self.trainer.schedule.active:
            # a checkpoint from before run schedules: a run without schedulers has nothing to restore there
            state["schedule"] = self.trainer.schedule.state_dict()
        required = ["fingerprint", "layout", "aggregator", "next_round", "global_params", "global_buffers",
                    "int_buffers", *[key for key in self.stateful_parts() if key]]
        missing = [key for key in required if key not in state]
        if missing:
            raise ValueError(f"checkpoint {path}: field {missing[0]!r} is missing"
                             f"{f' (and {missing[1:]})' if missing[1:] else ''}; it is damaged or not an "
                             "fl_lightning run checkpoint")
        ckpt.check_compatible(state, self.identity(), path)
        check_fields(state, self, path)
        for key, part in self.stateful_parts().items():
            try:
                part.load_state_dict(state[key] if key else state)
            except (KeyError, TypeError, ValueError, IndexError, RuntimeError, AttributeError) as exc:
                raise ValueError(f"checkpoint {path}: field {key or 'global_params'!r} cannot be restored: "
                                 f"{type(exc).__name__}: {exc}") from exc
        changed = hparams_difference(state.get("hparams"), self._hparams)
        if changed:
            warnings.warn(f"resuming {path} with settings that differ from the checkpoint's run: {changed}",
                          UserWarning, stacklevel=3)
        return int(state["next_round"])


def plain_hparams(params: dict[str, Any]) -> dict[str, Any]:
    """Hyper-parameters as values ``torch.load(weights_only=True)`` reads back (others as their ``repr``)."""
    return {str(k): v if isinstance(v, (str, int, float, bool, type(None))) else repr(v) for k, v in params.items()}


def hparams_difference(saved: Any, current: dict[str, Any]) -> str:
    """``"key: old -> new; key: added (value); ..."`` for every hyper-parameter that changed ("" if none)."""
    if not isinstance(saved, dict):
        return ""  # a checkpoint from before hyper-parameters were recorded
    parts = []
    for key in sorted(set(saved) | set(current)):
        if key not in saved:
            parts.append(f"{key}: added ({current[key]!r})")
        elif key not in current:
            parts.append(f"{key}: removed (was {saved[key]!r})")
        elif saved[key] != current[key]:
            parts.append(f"{key}: {saved[key]!r} -> {current[key]!r}")
    return "; ".join(parts)


def refuse_existing_run(folder: Path) -> None:
    """``FileExistsError`` when ``folder`` already holds a run's checkpoint or logs (a fit without ``ckpt_path``)."""
    found = ckpt.run_files(folder)
    if found:
        shown = ", ".join(str(p.relative_to(folder)) for p in found[:3]) + (" ..." if len(found) > 3 else "")
        raise FileExistsError(
            f"{folder} already holds a run ({shown}); writing into it would overwrite its checkpoint and mix two "
            "runs' logs. Resume it with ckpt_path='last' (fl-lightning: --ckpt_path last), or start anew in another "
            "folder (another logger name or version; fl-lightning: --name NEW), or delete the folder")


def purge_logged_from(loggers: Sequence[Any], step: int) -> None:
    """Make the loggers drop what an interrupted process logged at rounds ``>= step`` (it is logged again).

    TensorBoard gets a purge event; a CSV logger's ``metrics.csv`` keeps its rows of earlier rounds only.
    """
    from lightning.fabric.loggers import CSVLogger
    from tensorboard.compat.proto.event_pb2 import Event, SessionLog

    for logger in loggers:
        if isinstance(logger, TensorBoardLogger):
            writer = getattr(logger.experiment, "file_writer", None)
            if writer is not None:
                # the event SummaryWriter(purge_step=step) writes: readers discard older events at steps >= step
                writer.add_event(Event(step=step, session_log=SessionLog(status=SessionLog.START)))
        elif isinstance(logger, CSVLogger):
            purge_csv_from(logger, step)


def purge_csv_from(logger: Any, step: int) -> None:
    """Keep the rows of ``metrics.csv`` logged before round ``step``, so a resumed run holds each round once.

    Lightning's CSV writer deletes an existing ``metrics.csv`` when it opens a folder that holds files (a
    resumed run's always does); the earlier rounds' rows are read first and written back for it to append to.
    """
    import csv

    path = Path(logger.log_dir) / "metrics.csv"
    header: list[str] | None = None
    kept: list[dict[str, str]] = []
    if path.is_file():
        with path.open(newline="") as file:
            reader = csv.DictReader(file)
            header = list(reader.fieldnames or [])
            kept = [row for row in reader if _csv_step(row) < step]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Experiment logs directory")  # the deletion handled here
        experiment = logger.experiment
    if not header:
        return
    with path.open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=header)
        writer.writeheader()
        writer.writerows(kept)
    experiment.metrics_keys = list(header)  # the writer appends to this header (rewriting it for new keys)


def _csv_step(row: dict[str, str]) -> float:
    """A ``metrics.csv`` row's step (a row without one counts as logged before any round)."""
    try:
        return float(row.get("step") or "-1")
    except ValueError:
        return -1.0


def check_fields(state: dict[str, Any], connector: CheckpointConnector, path: Path) -> None:
    """``ValueError`` naming the file and the field for a checkpoint value that is mistyped or invalid."""
    t = connector.trainer

    def fail(field: str, problem: str) -> None:
        raise ValueError(f"checkpoint {path}: field {field!r} {problem}; it is damaged or not this run's checkpoint")

    next_round = state["next_round"]
    if not isinstance(next_round, int) or isinstance(next_round, bool):
        fail("next_round", f"must be an int, got {type(next_round).__name__}")
    if not 0 <= next_round <= t.rounds:
        fail("next_round", f"must be in 0..{t.rounds} (the run's rounds), got {next_round}")
    for key, size in (("global_params", t.layout.num_params), ("global_buffers", t.layout.num_buffers)):
        value = state[key]
        if not isinstance(value, Tensor) or not value.is_floating_point():
            fail(key, f"must be a floating-point tensor, got {type(value).__name__}")
        if tuple(value.shape) != (size,):
            fail(key, f"must have shape ({size},), got {tuple(value.shape)}")
        if not bool(torch.isfinite(value).all()):
            fail(key, "holds NaN or Inf values")
    ints = state["int_buffers"]
    if not isinstance(ints, dict):
        fail("int_buffers", f"must be a dict, got {type(ints).__name__}")
    for name in t.layout.int_buffers:
        if not isinstance(ints.get(name), Tensor):
            fail(f"int_buffers.{name}", "is missing or not a tensor")
    for key, part in connector.stateful_parts().items():
        if key and type(state[key]) is not type(part.state_dict()):
            fail(key, f"must be a {type(part.state_dict()).__name__}, got {type(state[key]).__name__}")
    if len(state["history"]) != next_round:
        fail("history", f"has {len(state['history'])} rounds but next_round is {next_round}")
    for name, value in _tensors(state["aggregator_state"], "aggregator_state"):
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            fail(name, "holds NaN or Inf values")


def _tensors(value: Any, name: str) -> Iterator[tuple[str, Tensor]]:
    """Every tensor inside nested dicts and lists, with its dotted name."""
    if isinstance(value, Tensor):
        yield name, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _tensors(item, f"{name}.{key}")
    elif isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            yield from _tensors(item, f"{name}.{i}")
