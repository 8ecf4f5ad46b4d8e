"""Attack and defense metrics: torchmetrics classes with functional twins."""
from fl_lightning.metrics.attack_success import AttackSuccessRate
from fl_lightning.metrics.functional import attack_success_rate

__all__ = ["AttackSuccessRate", "attack_success_rate"]
