"""Attacks: data poisoning, model poisoning and omniscient attacks, declared once per run.

Every model-poisoning attack is also a pure function in :mod:`fl_lightning.attacks.functional`.
"""
from fl_lightning.attacks import functional
from fl_lightning.attacks.backdoor import FeatureBackdoor, PixelBackdoor
from fl_lightning.attacks.base import Attack, AttackState, ModelPoisoningAttack
from fl_lightning.attacks.compose import (
    all_attacker_ids,
    attack_metrics,
    batch_poisoner,
    client_config,
    poison_client_data,
    poison_round_updates,
    setup_attacks,
    update_attack_metrics,
)
from fl_lightning.attacks.fang import FangKrum, FangTrimmedMean
from fl_lightning.attacks.label_flip import LabelFlip
from fl_lightning.attacks.min_max import MinMax, MinSum
from fl_lightning.attacks.mix_rate import MixRate
from fl_lightning.attacks.model_replacement import ModelReplacement
from fl_lightning.attacks.noise import GaussianNoise
from fl_lightning.attacks.omniscient import ALIE, IPM, Inf, Mimic, SignFlip
from fl_lightning.attacks.optimal import OptimalALIE, OptimalIPM
from fl_lightning.attacks.plan import AttackPlan
from fl_lightning.attacks.selectors import ClientSpec, resolve_clients
from fl_lightning.context import BatchPoisoner

#: every attack by class name (for configs and the CLI)
ATTACKS: dict[str, type[Attack]] = {
    cls.__name__: cls
    for cls in (LabelFlip, PixelBackdoor, FeatureBackdoor, ModelReplacement, GaussianNoise, MixRate,
                SignFlip, ALIE, IPM, Mimic, Inf, MinMax, MinSum, FangKrum, FangTrimmedMean,
                OptimalALIE, OptimalIPM)
}

__all__ = [
    "ALIE",
    "ATTACKS",
    "Attack",
    "AttackPlan",
    "AttackState",
    "BatchPoisoner",
    "ClientSpec",
    "FangKrum",
    "FangTrimmedMean",
    "FeatureBackdoor",
    "GaussianNoise",
    "IPM",
    "Inf",
    "LabelFlip",
    "Mimic",
    "MinMax",
    "MinSum",
    "MixRate",
    "ModelPoisoningAttack",
    "ModelReplacement",
    "OptimalALIE",
    "OptimalIPM",
    "PixelBackdoor",
    "SignFlip",
    "all_attacker_ids",
    "attack_metrics",
    "batch_poisoner",
    "client_config",
    "functional",
    "poison_client_data",
    "poison_round_updates",
    "resolve_clients",
    "setup_attacks",
    "update_attack_metrics",
]
