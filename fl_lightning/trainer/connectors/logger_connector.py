"""``LoggerConnector``: the one path from a run to its loggers (scalars, histograms, text, figures, hparams)."""
from __future__ import annotations

import inspect
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable

from lightning.pytorch.loggers import Logger
from torch import Tensor

if TYPE_CHECKING:
    from fl_lightning.trainer.records import RoundRecord

#: metric tags under these prefixes are the run's key metrics, shown beside the hparams in TensorBoard's HPARAMS tab
HPARAM_METRIC_PREFIXES = ("test/", "attack/", "defense/")


def resolve_loggers(logger: Any, default: Callable[[], Logger], owner: str = "FederatedTrainer") -> list[Logger]:
    """The loggers ``logger=`` asks for: ``None``/``True`` -> ``[default()]``, ``False`` -> ``[]``, one or a list."""
    if logger is None or logger is True:
        return [default()]
    if logger is False:
        return []
    loggers = [logger] if isinstance(logger, Logger) else list(logger) if isinstance(logger, (list, tuple)) else None
    if loggers is None or not all(isinstance(item, Logger) for item in loggers):
        bad = logger if loggers is None else next(item for item in loggers if not isinstance(item, Logger))
        raise TypeError(f"{owner}: logger must be a Lightning Logger (lightning.pytorch.loggers), a list of them, "
                        f"None, True or False, got {bad!r} ({type(bad).__name__})")
    return loggers


def _takes_metrics(logger: Logger) -> bool:
    """Whether ``logger.log_hyperparams`` accepts ``metrics`` (TensorBoard's does: the HPARAMS tab)."""
    try:
        return "metrics" in inspect.signature(logger.log_hyperparams).parameters
    except (TypeError, ValueError):
        return False


class LoggerConnector:
    """Routes everything a run records to its Lightning loggers; the trainer and callbacks share it.

    Scalars and hyper-parameters go to every logger. Histograms, text and figures go to the loggers
    whose ``experiment`` can draw them (``add_histogram`` / ``add_text`` / ``add_figure``, as
    TensorBoard's ``SummaryWriter``), found by capability, and are skipped by the others. With no
    logger every call is a no-op, so callers never test for one.

    Hyper-parameters reach a logger whose ``log_hyperparams`` takes ``metrics`` (TensorBoard) together
    with the run's key metrics (:data:`HPARAM_METRIC_PREFIXES`), as Lightning's
    ``log_hyperparams(params, metrics)``: that is what fills TensorBoard's HPARAMS tab. The call waits
    for the first logged round, whose values it writes, so no placeholder value enters the curves.
    """

    def __init__(self, loggers: Iterable[Logger] = ()) -> None:
        self.loggers: list[Logger] = list(loggers)
        self._pending_hparams: dict[int, dict[str, Any]] = {}  # id(logger) -> params waiting for round metrics

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
        """Record the run's configuration in every logger (TensorBoard's HPARAMS tab, ``hparams.yaml``)."""
        for logger in self.loggers:
            if _takes_metrics(logger):
                self._pending_hparams[id(logger)] = dict(params)
            else:
                logger.log_hyperparams(params)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        """Scalars at ``step`` (the round), to every logger."""
        if metrics:
            for logger in self.loggers:
                logger.log_metrics(metrics, step=step)

    def _log_round_metrics(self, metrics: dict[str, float], step: int) -> None:
        """A round's scalars; a logger still waiting for its hparams gets them here, with the key metrics."""
        for logger in self.loggers:
            params = self._pending_hparams.pop(id(logger), None)
            if params is None:
                if metrics:
                    logger.log_metrics(metrics, step=step)
                continue
            # without a key metric (no test set), every scalar of the round is one
            key = {k: v for k, v in metrics.items() if k.startswith(HPARAM_METRIC_PREFIXES)} or dict(metrics)
            logger.log_hyperparams(params, metrics=key or None, step=step)  # also logs ``key`` at ``step``
            rest = {k: v for k, v in metrics.items() if k not in key}
            if rest:
                logger.log_metrics(rest, step=step)

    def log_histogram(self, tag: str, values: Tensor, step: int) -> None:
        """A histogram of ``values``."""
        if values.numel() > 0:
            for experiment in self._experiments_with("add_histogram"):
                experiment.add_histogram(tag, values.detach().float().cpu(), step)

    def log_figure(self, tag: str, figure: Any, step: int = 0) -> None:
        """A matplotlib figure."""
        for experiment in self._experiments_with("add_figure"):
            experiment.add_figure(tag, figure, step)

    def log_text(self, tag: str, text: str, step: int = 0) -> None:
        """A text note."""
        for experiment in self._experiments_with("add_text"):
            experiment.add_text(tag, text, step)

    @property
    def draws_figures(self) -> bool:
        """Whether any logger takes figures (so a caller may skip building one)."""
        return bool(self._experiments_with("add_figure"))

    # -- one round -----------------------------------------------------------------------------------------
    def log_round(self, record: "RoundRecord") -> None:
        """A finished round: its metrics, the client-weight histogram and why clients were dropped."""
        self._log_round_metrics(record.metrics, step=record.round)
        if record.client_weights is not None:
            self.log_histogram("aggregator/client_weights", record.client_weights, record.round)
        confidence = record.diagnostics.get("mean_confidence")
        if isinstance(confidence, Tensor):
            self.log_histogram("aggregator/mean_confidence", confidence, record.round)
        for cid, reason in record.dropped.items():
            self.log_text("clients/dropped_reasons", f"round {record.round}: client {cid}: {reason}", record.round)

    def finalize(self, status: str = "success") -> None:
        """Flush and close every logger (``status``: "success" or "failed").

        Hyper-parameters still waiting for a round (the run failed before logging one) are written
        without metrics, so ``hparams.yaml`` still records the configuration.
        """
        for logger in self.loggers:
            params = self._pending_hparams.pop(id(logger), None)
            if params is not None:
                logger.log_hyperparams(params)
            logger.finalize(status)

    def _experiments_with(self, method: str) -> list[Any]:
        """The ``experiment`` of every logger that has a callable ``method`` (TensorBoard's ``SummaryWriter``)."""
        found = []
        for logger in self.loggers:
            experiment = getattr(logger, "experiment", None)
            if callable(getattr(experiment, method, None)):
                found.append(experiment)
        return found
