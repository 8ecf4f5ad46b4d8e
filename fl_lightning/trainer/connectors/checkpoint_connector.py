"""``CheckpointConnector``: saves, finds and restores a run from the ``state_dict()`` of each stateful part."""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, Sequence

from lightning.pytorch.loggers import TensorBoardLogger

import fl_lightning.checkpoint as ckpt
from fl_lightning.seeding import rng_states, set_rng_states

if TYPE_CHECKING:
    from fl_lightning.trainer.trainer import FederatedTrainer


class Stateful(Protocol):
    """Anything saved in a checkpoint: Lightning's ``state_dict`` / ``load_state_dict`` pair."""

    def state_dict(self) -> Any: ...

    def load_state_dict(self, state: Any) -> None: ...


class KeyedStates:
    """A list of plug-ins (attacks, callbacks) saved as ``{"<index>:<state_key>": state}``."""

    def __init__(self, items: Sequence[Any]) -> None:
        self.items = items

    def state_dict(self) -> dict[str, Any]:
        """Each plug-in's state under its position and ``state_key``."""
        return {f"{i}:{item.state_key}": item.state_dict() for i, item in enumerate(self.items)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Give each plug-in its saved state (an empty dict when the checkpoint has none for it)."""
        for i, item in enumerate(self.items):
            item.load_state_dict(state.get(f"{i}:{item.state_key}", {}))


class GlobalRNG:
    """Python's, NumPy's and torch's global generators (code outside our control may draw from them)."""

    def state_dict(self) -> dict[str, Any]:
        """The generators' states."""
        return rng_states()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Put the generators back where they were."""
        set_rng_states(state)


class CheckpointConnector:
    """Where a run's checkpoint lives, what goes into it and how a run resumes from it.

    A checkpoint holds the run's identity (data fingerprint, model layout, aggregator, checked on
    resume), ``next_round``, and one entry per part of :meth:`stateful_parts`. A new piece of run
    state is added there and nowhere else.
    """

    def __init__(self, trainer: "FederatedTrainer") -> None:
        self.trainer = trainer

    # -- what is saved ----------------------------------------------------------------------------------
    def stateful_parts(self) -> dict[str, Stateful]:
        """Checkpoint key -> the part saved under it (``""``: the part's entries sit at the top level)."""
        t = self.trainer
        return {
            "": t.global_model,  # global_params, global_buffers, int_buffers
            "aggregator_state": t.aggregator,
            "attack_states": KeyedStates(t.attacks),
            "callback_states": KeyedStates(t.callbacks),
            "detection": t.detection,
            "history": t.history,
            "rng": GlobalRNG(),
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
        """The file ``ckpt_path`` names: itself, or for ``"last"`` this run's newest checkpoint (or ``None``)."""
        if str(ckpt_path) != "last":
            return Path(ckpt_path)
        if self.checkpoint_path.is_file():
            return self.checkpoint_path
        logger = self.trainer.logger
        root = Path(logger.root_dir) if isinstance(logger, TensorBoardLogger) else self.trainer.default_root_dir
        return ckpt.find_last(root)

    def continue_last_version(self) -> None:
        """Point the trainer's own TensorBoard logger at the newest ``version_*`` folder holding a checkpoint.

        Without this, ``fit(ckpt_path="last")`` with the default logger would open a fresh
        ``version_N+1`` and never find the run it should resume.
        """
        logger = self.trainer.logger
        last = ckpt.find_last(logger.root_dir) if isinstance(logger, TensorBoardLogger) else None
        if last is not None:
            version_dir = last.parent.parent
            self.trainer.logger = TensorBoardLogger(str(version_dir.parent.parent), name=version_dir.parent.name,
                                                    version=version_dir.name)

    # -- save / restore ---------------------------------------------------------------------------------
    def save(self, next_round: int) -> Path:
        """Write every part's state atomically; a kill mid-write keeps the previous checkpoint."""
        state: dict[str, Any] = {**self.identity(), "next_round": next_round}
        for key, part in self.stateful_parts().items():
            if key:
                state[key] = part.state_dict()
            else:
                state.update(part.state_dict())
        return ckpt.save_atomic(state, self.checkpoint_path)

    def restore(self, ckpt_path: str | Path) -> int:
        """Load the checkpoint ``ckpt_path`` names into every part; returns the round to start from (0: none found)."""
        path = self.find(ckpt_path)
        if path is None:
            warnings.warn(f"no checkpoint found for ckpt_path={str(ckpt_path)!r} under {self.trainer.log_dir}; "
                          "starting from round 0", RuntimeWarning, stacklevel=3)
            return 0
        state = ckpt.load(path)
        ckpt.check_compatible(state, self.identity(), path)
        for key, part in self.stateful_parts().items():
            part.load_state_dict(state[key] if key else state)
        return int(state["next_round"])
