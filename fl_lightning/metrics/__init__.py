"""Attack and defense metrics: torchmetrics classes with functional twins."""
from fl_lightning.metrics.attack_success import AttackSuccessRate
from fl_lightning.metrics.backdoor import BackdoorSuccessRate
from fl_lightning.metrics.detection import DetectionPrecisionRecall
from fl_lightning.metrics.functional import (
    attack_success_counts,
    attack_success_rate,
    backdoor_success_counts,
    backdoor_success_rate,
    detection_counts,
    detection_precision_recall,
)

__all__ = [
    "AttackSuccessRate",
    "BackdoorSuccessRate",
    "DetectionPrecisionRecall",
    "attack_success_counts",
    "attack_success_rate",
    "backdoor_success_counts",
    "backdoor_success_rate",
    "detection_counts",
    "detection_precision_recall",
]
