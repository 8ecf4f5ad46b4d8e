"""``ModelCheckpoint``: the global model as Lightning checkpoints: the best k by a round metric, and ``last.ckpt``."""
from __future__ import annotations

import math
import os
import re
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from fl_lightning.callbacks.base import FederatedCallback
from fl_lightning.callbacks.monitor import MODES, is_better, monitored_value, worst
from fl_lightning.checks import check_bool, check_choice, check_instance, check_int
from fl_lightning.stopping import critical_section

if TYPE_CHECKING:
    import lightning as L

    from fl_lightning.trainer import FederatedTrainer, RoundRecord

_OWNER = "ModelCheckpoint"
#: ``{name}`` or ``{name:format}`` in a file name template
_FIELD = re.compile(r"\{([^{}:]+)(:[^{}]*)?\}")


class ModelCheckpoint(FederatedCallback):
    """Saves the global model as Lightning checkpoints that ``MyModule.load_from_checkpoint(path)`` loads.

    Each file holds ``state_dict`` (the user's module with the global weights), ``hyper_parameters``
    (``module.hparams``, with ``hparams_name`` as Lightning writes it), ``pytorch-lightning_version``,
    ``epoch`` (the round index) and ``global_step`` (the rounds done). They are not the run's resume
    checkpoint (``FederatedTrainer.checkpoint_path``), which holds the whole federated state.

    Args:
        dirpath: folder of the files; default ``<trainer.log_dir>/checkpoints/models``.
        filename: template of a file name without ``.ckpt``, with ``{round}`` and metric names, each
            written ``name=value`` (``"{round}-{test/acc:.3f}"`` -> ``round=4-test_acc=0.812``; ``/`` in a
            name becomes ``_``). Default: the round and the monitored metric.
        monitor: the round metric that ranks the files; ``None`` ranks them by round (newest best).
        mode: ``"max"`` when a larger ``monitor`` is better, ``"min"`` when a smaller one is.
        save_top_k: how many of the best files to keep (``-1``: all, ``0``: none, only ``last.ckpt``).
        save_last: also keep ``last.ckpt``, the newest global model (written on checked rounds and after
            the run's final round).
        every_n_rounds: check (and save) after every this many rounds.
    """

    CHECKPOINT_NAME_LAST = "last"
    FILE_EXTENSION = ".ckpt"

    def __init__(self, dirpath: str | Path | None = None, filename: str | None = None,
                 monitor: str | None = "test/acc", mode: str = "max", save_top_k: int = 1, save_last: bool = True,
                 every_n_rounds: int = 1) -> None:
        self.dirpath = None if dirpath is None else Path(check_instance(dirpath, (str, Path), "dirpath", _OWNER))
        self._default_dirpath = dirpath is None
        if monitor is not None:
            check_instance(monitor, str, "monitor", _OWNER)
        self.monitor = monitor
        self.mode = check_choice(mode, MODES, "mode", _OWNER) if monitor is not None else "max"
        self.filename = filename if filename is not None else _default_filename(monitor)
        check_instance(self.filename, str, "filename", _OWNER)
        if Path(self.filename).is_absolute() or ".." in Path(self.filename).parts:
            raise ValueError(f"{_OWNER}: filename {self.filename!r} leaves dirpath; a filename is a name inside "
                             "dirpath (e.g. 'best-{round}'), without '..' or a leading '/': set dirpath instead")
        self.save_top_k = check_int(save_top_k, "save_top_k", _OWNER, minimum=-1)
        self.save_last = check_bool(save_last, "save_last", _OWNER)
        self.every_n_rounds = check_int(every_n_rounds, "every_n_rounds", _OWNER, minimum=1)
        self._reset()
        self._restored: dict[str, Any] | None = None

    @property
    def state_key(self) -> str:
        """The settings that tell two checkpoint callbacks apart, as Lightning's ``ModelCheckpoint`` keys its state."""
        return self._generate_state_key(monitor=self.monitor, mode=self.mode, every_n_rounds=self.every_n_rounds)

    def _reset(self) -> None:
        self.best_k_models: dict[str, float] = {}
        self.best_model_path = ""
        self.best_model_score: float | None = None
        self.kth_best_model_path = ""
        self.kth_value = worst(self.mode)
        self.last_model_path = ""
        self._monitor_seen = False

    # -- hooks ------------------------------------------------------------------------------------------------
    def on_fit_start(self, trainer: "FederatedTrainer", module: "L.LightningModule") -> None:
        """Settle the folder (never the resume checkpoint's) and take back a resumed run's ranking."""
        if self._default_dirpath:
            self.dirpath = Path(trainer.log_dir) / "checkpoints" / "models"
        last = self.dirpath / f"{self.CHECKPOINT_NAME_LAST}{self.FILE_EXTENSION}"
        if self.save_last and last.resolve() == Path(trainer.checkpoint_path).resolve():
            raise ValueError(f"{_OWNER}: dirpath {self.dirpath} would write last.ckpt over the run's resume "
                             f"checkpoint {trainer.checkpoint_path}; choose another dirpath")
        restored, self._restored = self._restored, None
        self._reset()
        if not restored:
            return
        if restored.get("dirpath") != str(self.dirpath):
            warnings.warn(f"{_OWNER}: the checkpoint's files lie in {restored.get('dirpath')}, this run writes to "
                          f"{self.dirpath}; the ranking starts afresh", RuntimeWarning, stacklevel=2)
            return
        self.best_k_models = {str(p): float(s) for p, s in restored["best_k_models"].items()}
        self.last_model_path = restored["last_model_path"]
        self._monitor_seen = restored["monitor_seen"]
        self._update_best()

    def on_round_logged(self, trainer: "FederatedTrainer", record: "RoundRecord") -> None:
        """Every ``every_n_rounds`` rounds: rank the round's model among the best k; keep ``last.ckpt``."""
        checked = (record.round + 1) % self.every_n_rounds == 0
        final = trainer.should_stop or record.round + 1 >= trainer.rounds
        if checked and self.save_top_k != 0:
            score = self._score(record)
            if score is not None:
                self._save_top_k(trainer, record, score)
        if self.save_last and (checked or final):
            path = self.dirpath / f"{self.CHECKPOINT_NAME_LAST}{self.FILE_EXTENSION}"
            save_lightning_checkpoint(trainer.module, record, path)
            self.last_model_path = str(path)

    # -- ranking ----------------------------------------------------------------------------------------------
    def _score(self, record: "RoundRecord") -> float | None:
        if self.monitor is None:
            return float(record.round)
        value = monitored_value(_OWNER, self.monitor, record, self._monitor_seen)
        self._monitor_seen = True
        if value is not None and math.isnan(value):
            value = worst(self.mode)  # as Lightning: a NaN round ranks below every real one
        return value

    def _save_top_k(self, trainer: "FederatedTrainer", record: "RoundRecord", score: float) -> None:
        full = self.save_top_k != -1 and len(self.best_k_models) >= self.save_top_k
        if full and not is_better(score, self.kth_value, self.mode):
            return
        path = self._file_path(record)
        save_lightning_checkpoint(trainer.module, record, path)
        self.best_k_models[str(path)] = score
        if full:
            dropped = self.kth_best_model_path
            del self.best_k_models[dropped]
            if dropped != str(path):
                Path(dropped).unlink(missing_ok=True)
        self._update_best()

    def _update_best(self) -> None:
        if not self.best_k_models:
            return
        pick_best, pick_worst = (min, max) if self.mode == "min" else (max, min)
        self.best_model_path = pick_best(self.best_k_models, key=self.best_k_models.__getitem__)
        self.best_model_score = self.best_k_models[self.best_model_path]
        self.kth_best_model_path = pick_worst(self.best_k_models, key=self.best_k_models.__getitem__)
        self.kth_value = self.best_k_models[self.kth_best_model_path]

    def _file_path(self, record: "RoundRecord") -> Path:
        values = {"round": record.round, **record.metrics}

        def field(match: re.Match) -> str:
            name, spec = match.group(1), (match.group(2) or ":")[1:]
            if name not in values:
                raise ValueError(f"{_OWNER}: filename {self.filename!r} names {name!r}, which is not a metric of "
                                 f"round {record.round}; available: round, {', '.join(sorted(record.metrics))}")
            return f"{name.replace('/', '_')}={format(values[name], spec)}"

        stem = _FIELD.sub(field, self.filename)
        path = self.dirpath / f"{stem}{self.FILE_EXTENSION}"
        version = 1
        while str(path) in self.best_k_models:  # a template without {round} may repeat a name, as in Lightning
            path = self.dirpath / f"{stem}-v{version}{self.FILE_EXTENSION}"
            version += 1
        return path

    # -- state ------------------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The ranking (paths and scores), so a resumed run keeps comparing against the same best files."""
        return {"monitor": self.monitor, "dirpath": str(self.dirpath) if self.dirpath is not None else None,
                "best_k_models": dict(self.best_k_models), "best_model_path": self.best_model_path,
                "best_model_score": self.best_model_score, "last_model_path": self.last_model_path,
                "monitor_seen": self._monitor_seen}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Take back :meth:`state_dict`'s ranking; applied at ``on_fit_start``, once the folder is known."""
        self._restored = dict(state) if state else None


def _default_filename(monitor: str | None) -> str:
    return "{round}" if monitor is None else "{round}-{" + monitor + ":.4f}"


def lightning_checkpoint(module: "L.LightningModule", record: "RoundRecord") -> dict[str, Any]:
    """The global model (held by ``module``) as the dict Lightning's ``load_from_checkpoint`` reads."""
    import lightning as L

    checkpoint: dict[str, Any] = {
        "epoch": record.round,
        "global_step": record.round + 1,
        "pytorch-lightning_version": L.__version__,
        "state_dict": module.state_dict(),
        "federated": {"round": record.round, "metrics": {k: float(v) for k, v in record.metrics.items()}},
    }
    if module.hparams:
        if hasattr(module, "_hparams_name"):
            checkpoint[L.LightningModule.CHECKPOINT_HYPER_PARAMS_NAME] = module._hparams_name
        checkpoint[L.LightningModule.CHECKPOINT_HYPER_PARAMS_KEY] = dict(module.hparams)
    module.on_save_checkpoint(checkpoint)  # as Lightning's Trainer does before writing
    return checkpoint


def save_lightning_checkpoint(module: "L.LightningModule", record: "RoundRecord", path: Path) -> None:
    """Write :func:`lightning_checkpoint` to ``path`` atomically (a kill mid-write keeps the old file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".ckpt", dir=path.parent)
    try:
        with critical_section(), os.fdopen(handle, "wb") as stream:  # SIGTERM waits: a cut zip writer masks it
            torch.save(lightning_checkpoint(module, record), stream)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
