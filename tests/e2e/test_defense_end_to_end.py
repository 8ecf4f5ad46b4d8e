"""End to end on MNIST5k with the quickstart's protocol: FedAvg is hurt, residual reweighting is not.

Protocol (ALGORITHM.md section 5): 100 two-digit clients, 10 sampled per round, 4 attackers that
train 10 local epochs (honest: 5) at 5x the learning rate. The reduced version runs in CI; the
full one (100 rounds, three seeds) is marked slow.
"""
from __future__ import annotations

import functools
from typing import Callable

import pytest

from fl_lightning import FederatedDataModule, FederatedTrainer
from fl_lightning.aggregators import FedAvg, ResidualReweight
from fl_lightning.attacks import Attack, LabelFlip, PixelBackdoor
from fl_lightning.data import MNIST5k
from fl_lightning.engines import SequentialEngine
from fl_lightning.models import PaperCNN
from fl_lightning.run_summary import RunSummary

ATTACKS = {
    "label_flip": ("attack/asr", lambda n: LabelFlip(source=1, target=7, clients=n, extra_epochs=5, lr=0.25)),
    "pixel_backdoor": ("attack/backdoor_asr",
                       lambda n: PixelBackdoor(target=2, clients=n, extra_epochs=5, lr=0.25)),
}
AGGREGATORS = {"FedAvg": FedAvg, "ResidualReweight": ResidualReweight}


@functools.lru_cache(maxsize=None)
def late_means(aggregator: str, attack: str, attackers: int, rounds: int, seed: int) -> dict[str, float]:
    """Mean metrics over the last 40% of rounds of one run (cached: several tests read each run)."""
    make_attack: Callable[[int], Attack] = ATTACKS[attack][1]
    trainer = FederatedTrainer(
        rounds=rounds, local_epochs=5, clients_per_round=10, aggregator=AGGREGATORS[aggregator](),
        attacks=[make_attack(attackers)], logger=False, enable_progress_bar=False, checkpoint_every=0,
        seed=seed, engine=SequentialEngine(num_threads=1))
    datamodule = FederatedDataModule(MNIST5k(), num_clients=100, partition="classes", classes_per_client=2,
                                     seed=seed)
    trainer.fit(PaperCNN(lr=0.05), datamodule)
    return RunSummary.from_history(aggregator, trainer.history, trainer.test()).late_mean


def assert_defended(attack: str, rounds: int, seed: int) -> None:
    """FedAvg's late attack success rises well above its no-attack level (or it collapses); RR's does not."""
    key = ATTACKS[attack][0]
    fedavg_clean = late_means("FedAvg", attack, 0, rounds, seed)
    fedavg_attacked = late_means("FedAvg", attack, 4, rounds, seed)
    rr_clean = late_means("ResidualReweight", attack, 0, rounds, seed)
    rr_attacked = late_means("ResidualReweight", attack, 4, rounds, seed)
    fedavg_hurt = fedavg_attacked[key] > fedavg_clean[key] + 0.1 or fedavg_attacked["test/acc"] < 0.2
    assert fedavg_hurt, f"FedAvg was not hurt by {attack}: {fedavg_attacked} vs no attack {fedavg_clean}"
    assert rr_attacked[key] < rr_clean[key] + 0.05, \
        f"ResidualReweight let {attack} through: {rr_attacked} vs no attack {rr_clean}"
    assert rr_attacked[key] < fedavg_attacked[key] / 2, \
        f"ResidualReweight's {key} {rr_attacked[key]:.3f} is not well below FedAvg's {fedavg_attacked[key]:.3f}"


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_residual_reweighting_defends_where_fedavg_fails_reduced(attack: str) -> None:
    assert_defended(attack, rounds=60, seed=0)


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_residual_reweighting_defends_where_fedavg_fails_full(attack: str, seed: int) -> None:
    assert_defended(attack, rounds=100, seed=seed)
