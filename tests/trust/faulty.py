"""A logger that fails as a read-only run folder makes TensorBoard fail (importable by recipes in tests)."""
from __future__ import annotations

import errno

from lightning.pytorch.loggers import TensorBoardLogger


class ReadOnlyLogger(TensorBoardLogger):
    """A logger whose folder turns read-only at round ``at_round``; its ``finalize`` can also fail."""

    def __init__(self, save_dir: str, name: str = "lightning_logs", version: str | None = None,
                 at_round: int | None = None, finalize_fails: bool = False) -> None:
        super().__init__(save_dir, name=name, version=version, default_hp_metric=False)
        self.at_round, self.finalize_fails = at_round, finalize_fails

    def log_metrics(self, metrics, step=None):
        if self.at_round is not None and step is not None and step >= self.at_round:
            raise OSError(errno.EROFS, "Read-only file system", str(self.log_dir))
        super().log_metrics(metrics, step)

    def finalize(self, status):
        super().finalize(status)
        if self.finalize_fails:
            raise ValueError("you tried to log -1")
