"""Attacks: data poisoning, model poisoning and omniscient attacks, declared once per run."""
from fl_lightning.attacks.base import Attack, resolve_clients
from fl_lightning.attacks.label_flip import LabelFlip

__all__ = ["Attack", "LabelFlip", "resolve_clients"]
