"""Progress bars over rounds: the ``ProgressBar`` kind and the default ``RoundProgressBar``."""
from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

from fl_lightning.callbacks.base import FederatedCallback

if TYPE_CHECKING:
    import lightning as L

    from fl_lightning.trainer import FederatedTrainer, RoundRecord

#: metrics shown beside the bar, when the round has them
SHOWN = {"test/acc": "acc", "attack/asr": "asr", "attack/backdoor_asr": "backdoor_asr"}


class ProgressBar(FederatedCallback):
    """The kind of callback that shows a run's progress; the trainer holds at most one.

    A subclass passed in ``callbacks=`` replaces the default :class:`RoundProgressBar`, as a
    Lightning ``ProgressBar`` replaces Lightning's default bar.
    """


class RoundProgressBar(ProgressBar):
    """One bar over the run's rounds showing the latest accuracy, attack success rate, and what the module logged
    with ``prog_bar=True`` (``trainer.progress_bar_metrics``).

    Pass your own instance (or a subclass, or any :class:`ProgressBar`) in ``callbacks=`` to replace
    the default one; ``enable_progress_bar=False`` runs without a bar.
    """

    def __init__(self, description: str | None = None) -> None:
        self.description = description
        self._progress: Any = None
        self._task: Any = None

    def on_fit_start(self, trainer: "FederatedTrainer", module: "L.LightningModule") -> None:
        """Show the bar, already advanced past the rounds a resumed run has done."""
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        self._progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                  TimeRemainingColumn(), TextColumn("{task.fields[status]}"), transient=False)
        self._progress.start()
        description = self.description or type(trainer.aggregator).__name__
        self._task = self._progress.add_task(description, total=trainer.rounds, completed=len(trainer.history),
                                             status="")

    def on_round_logged(self, trainer: "FederatedTrainer", record: "RoundRecord") -> None:
        """Move the bar one round on."""
        if self._progress is None:
            return
        shown = [f"{label} {record.metrics[key]:.3f}" for key, label in SHOWN.items() if key in record.metrics]
        shown += [f"{name} {value:.3f}" for name, value in getattr(trainer, "progress_bar_metrics", {}).items()
                  if name not in SHOWN]
        self._progress.update(self._task, advance=1, status="  ".join(shown))

    def teardown(self, trainer: "FederatedTrainer") -> None:
        """Close the bar."""
        if self._progress is not None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self._progress.stop()
            self._progress = None
