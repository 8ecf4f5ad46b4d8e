"""Where a run's numbers go: a Lightning logger (TensorBoard by default) and a rich progress bar."""
from __future__ import annotations

import warnings
from typing import Any

from lightning.pytorch.loggers import Logger, TensorBoardLogger
from torch import Tensor


class RunReporter:
    """Sends per-round scalars, histograms and hyper-parameters to ``logger`` and drives the progress bar."""

    def __init__(self, logger: Logger | None, enable_progress_bar: bool, description: str) -> None:
        self.logger = logger
        self.enable_progress_bar = enable_progress_bar
        self.description = description
        self._progress: Any = None
        self._task: Any = None

    # -- logger ---------------------------------------------------------------------------------
    def log_hyperparams(self, params: dict[str, Any]) -> None:
        """Record the run's configuration (TensorBoard's HPARAMS tab)."""
        if self.logger is not None:
            self.logger.log_hyperparams(params)

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        """Scalars of one round."""
        if self.logger is not None:
            self.logger.log_metrics(metrics, step=step)

    def log_histogram(self, tag: str, values: Tensor, step: int) -> None:
        """A histogram (TensorBoard only; other loggers skip it)."""
        if isinstance(self.logger, TensorBoardLogger) and values.numel() > 0:
            self.logger.experiment.add_histogram(tag, values.detach().float(), step)

    def log_figure(self, tag: str, figure: Any, step: int) -> None:
        """A matplotlib figure (TensorBoard only)."""
        if isinstance(self.logger, TensorBoardLogger):
            self.logger.experiment.add_figure(tag, figure, step)

    def log_text(self, tag: str, text: str, step: int = 0) -> None:
        """A text note (TensorBoard only)."""
        if isinstance(self.logger, TensorBoardLogger):
            self.logger.experiment.add_text(tag, text, step)

    def finalize(self, status: str = "success") -> None:
        """Flush and close the logger (``status``: "success" or "failed")."""
        if self.logger is not None:
            self.logger.finalize(status)

    # -- progress bar -------------------------------------------------------------------------------
    def start(self, total: int, completed: int) -> None:
        """Show a bar over rounds."""
        if not self.enable_progress_bar:
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self._progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                  TimeRemainingColumn(), TextColumn("{task.fields[status]}"), transient=False)
        self._progress.start()
        self._task = self._progress.add_task(self.description, total=total, completed=completed, status="")

    def advance(self, metrics: dict[str, float]) -> None:
        """Move the bar one round on and show the latest accuracy and attack success rate."""
        if self._progress is None:
            return
        shown = [f"acc {metrics['test/acc']:.3f}"] if "test/acc" in metrics else []
        for key in ("attack/asr", "attack/backdoor_asr"):
            if key in metrics:
                shown.append(f"{key.split('/')[1]} {metrics[key]:.3f}")
        self._progress.update(self._task, advance=1, status="  ".join(shown))

    def stop(self) -> None:
        """Close the bar."""
        if self._progress is not None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self._progress.stop()
            self._progress = None
