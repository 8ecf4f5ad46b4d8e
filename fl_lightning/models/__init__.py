"""The paper's models as LightningModules."""
from fl_lightning.models.base import ClassifierModule
from fl_lightning.models.paper_cnn import PaperCNN

__all__ = ["ClassifierModule", "PaperCNN"]
