"""The round loop (``FederatedTrainer``) and what sits beside it: records, connectors, round metrics."""
from fl_lightning.trainer.records import RoundRecord, RunHistory
from fl_lightning.trainer.trainer import FederatedTrainer

__all__ = ["FederatedTrainer", "RoundRecord", "RunHistory"]
