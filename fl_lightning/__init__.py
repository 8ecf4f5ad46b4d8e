"""fl_lightning: attack-resistant federated learning as a PyTorch Lightning workflow."""
from fl_lightning.aggregators.base import AggregationResult, Aggregator
from fl_lightning.attacks.base import Attack
from fl_lightning.callbacks import FederatedCallback
from fl_lightning.context import LocalConfig, RoundContext
from fl_lightning.data.datamodule import FederatedDataModule
from fl_lightning.seeding import seed_everything
from fl_lightning.trainer import FederatedTrainer, RoundRecord
from fl_lightning.version import __version__

__all__ = ["AggregationResult", "Aggregator", "Attack", "FederatedCallback", "FederatedDataModule",
           "FederatedTrainer", "LocalConfig", "RoundContext", "RoundRecord", "__version__",
           "seed_everything"]
