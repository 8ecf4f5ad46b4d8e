"""``LoggerConnector``: the one path from a run to its loggers (scalars, histograms, text, figures, hparams)."""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from lightning.pytorch.loggers import Logger, TensorBoardLogger
from torch import Tensor

if TYPE_CHECKING:
    from fl_lightning.trainer.records import RoundRecord


class LoggerConnector:
    """Routes everything a run records to its Lightning loggers; the trainer and callbacks share it.

    Scalars and hyper-parameters go to every logger; histograms, text and figures go to the loggers
    that can draw them (TensorBoard) and are skipped by the others. With no logger every call is a
    no-op, so callers never test for one.
    """

    def __init__(self, loggers: Sequence[Logger] = ()) -> None:
        self.loggers: list[Logger] = list(loggers)

    @property
    def logger(self) -> Logger | None:
        """The first logger (the one whose folder holds the run's checkpoints), or ``None``."""
        return self.loggers[0] if self.loggers else None

    @property
    def log_dir(self) -> Path | None:
        """The first logger's folder for this run, if it has one."""
        folder = getattr(self.logger, "log_dir", None)
        return Path(folder) if folder else None

    # -- one value at a time --------------------------------------------------------------------------
    def log_hyperparams(self, params: dict[str, Any]) -> None:
        """Record the run's configuration (TensorBoard's HPARAMS tab, ``hparams.yaml``)."""
        for logger in self.loggers:
            logger.log_hyperparams(params)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        """Scalars at ``step`` (the round)."""
        if metrics:
            for logger in self.loggers:
                logger.log_metrics(metrics, step=step)

    def log_histogram(self, tag: str, values: Tensor, step: int) -> None:
        """A histogram of ``values``."""
        if values.numel() > 0:
            for experiment in self._tensorboards():
                experiment.add_histogram(tag, values.detach().float(), step)

    def log_figure(self, tag: str, figure: Any, step: int = 0) -> None:
        """A matplotlib figure."""
        for experiment in self._tensorboards():
            experiment.add_figure(tag, figure, step)

    def log_text(self, tag: str, text: str, step: int = 0) -> None:
        """A text note."""
        for experiment in self._tensorboards():
            experiment.add_text(tag, text, step)

    @property
    def draws_figures(self) -> bool:
        """Whether any logger takes figures (so a caller may skip building one)."""
        return any(isinstance(logger, TensorBoardLogger) for logger in self.loggers)

    # -- one round -----------------------------------------------------------------------------------------
    def log_round(self, record: "RoundRecord") -> None:
        """A finished round: its metrics, the client-weight histogram and why clients were dropped."""
        self.log_metrics(record.metrics, step=record.round)
        if record.client_weights is not None:
            self.log_histogram("aggregator/client_weights", record.client_weights, record.round)
        confidence = record.diagnostics.get("mean_confidence")
        if isinstance(confidence, Tensor):
            self.log_histogram("aggregator/mean_confidence", confidence, record.round)
        for cid, reason in record.dropped.items():
            self.log_text("clients/dropped_reasons", f"round {record.round}: client {cid}: {reason}", record.round)

    def finalize(self, status: str = "success") -> None:
        """Flush and close every logger (``status``: "success" or "failed")."""
        for logger in self.loggers:
            logger.finalize(status)

    def _tensorboards(self) -> list[Any]:
        return [logger.experiment for logger in self.loggers if isinstance(logger, TensorBoardLogger)]
