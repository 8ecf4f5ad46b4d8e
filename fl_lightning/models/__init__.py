"""The paper's models as LightningModules."""
from fl_lightning.models.base import ClassifierModule
from fl_lightning.models.fasttext import FastText
from fl_lightning.models.loan_mlp import LoanMLP
from fl_lightning.models.paper_cnn import PaperCNN
from fl_lightning.models.resnet import ResNet18

__all__ = ["ClassifierModule", "FastText", "LoanMLP", "PaperCNN", "ResNet18"]
