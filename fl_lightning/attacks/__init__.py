"""Attacks: data poisoning, model poisoning and omniscient attacks, declared once per run."""
from fl_lightning.attacks.backdoor import FeatureBackdoor, PixelBackdoor
from fl_lightning.attacks.base import Attack, ClientSpec, resolve_clients
from fl_lightning.attacks.compose import (
    BatchPoisoner,
    all_attacker_ids,
    attack_metrics,
    batch_poisoner,
    client_config,
    poison_client_data,
    poison_round_updates,
    setup_attacks,
    update_attack_metrics,
)
from fl_lightning.attacks.label_flip import LabelFlip
from fl_lightning.attacks.mix_rate import MixRate
from fl_lightning.attacks.model_replacement import ModelReplacement
from fl_lightning.attacks.noise import GaussianNoise
from fl_lightning.attacks.omniscient import ALIE, IPM, SignFlip

#: every attack by class name (for configs and the CLI)
ATTACKS: dict[str, type[Attack]] = {
    cls.__name__: cls
    for cls in (LabelFlip, PixelBackdoor, FeatureBackdoor, ModelReplacement, GaussianNoise, MixRate,
                SignFlip, ALIE, IPM)
}

__all__ = [
    "ALIE",
    "ATTACKS",
    "Attack",
    "BatchPoisoner",
    "ClientSpec",
    "FeatureBackdoor",
    "GaussianNoise",
    "IPM",
    "LabelFlip",
    "MixRate",
    "ModelReplacement",
    "PixelBackdoor",
    "SignFlip",
    "all_attacker_ids",
    "attack_metrics",
    "batch_poisoner",
    "client_config",
    "poison_client_data",
    "poison_round_updates",
    "resolve_clients",
    "setup_attacks",
    "update_attack_metrics",
]
