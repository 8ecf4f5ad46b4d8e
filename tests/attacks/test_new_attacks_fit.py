"""Every new attack class runs in a 3-round fit and from a YAML recipe parsed as the CLI parses it."""
from __future__ import annotations

import torch
import pytest
from tests.helpers import TinyNet, make_dm, make_trainer

from fl_lightning.aggregators import CoordinateMedian, TrimmedMean
from fl_lightning.attacks import (Attack, FangKrum, FangTrimmedMean, Inf, Mimic, MinMax, MinSum, OptimalALIE,
                                  OptimalIPM)
from fl_lightning.fit_config import fit_one, fit_parser

NEW = {
    "MinMax": lambda: MinMax(perturbation="std", clients=1),
    "MinSum": lambda: MinSum(perturbation="sign", clients=1),
    "Mimic": lambda: Mimic(clients=1),
    "FangKrum": lambda: FangKrum(clients=1),
    "FangTrimmedMean": lambda: FangTrimmedMean(clients=1),
    "OptimalALIE": lambda: OptimalALIE(aggregator=TrimmedMean(beta=0.2), clients=1, evals=6),
    "OptimalIPM": lambda: OptimalIPM(aggregator=CoordinateMedian(), clients=1, evals=6),
}


def _spy_rewrites(attack: Attack) -> list[bool]:
    """Record, each time the attack acts, whether it rewrote every one of its rows."""
    seen: list[bool] = []
    original = attack.poison_updates

    def spy(updates, ctx):
        out = original(updates, ctx)
        rows = attack.attacker_rows(ctx)
        seen.append(bool(rows) and all(not torch.equal(out[r], updates[r]) for r in rows))
        return out

    attack.poison_updates = spy
    return seen


@pytest.mark.parametrize("name", sorted(NEW))
def test_runs_three_rounds_and_rewrites_its_rows_every_round(tmp_path, name):
    attack = NEW[name]()
    trainer = make_trainer(tmp_path, rounds=3, attacks=[attack], checkpoint_every=0)
    rewrites = _spy_rewrites(attack)
    module = TinyNet()
    trainer.fit(module, make_dm(num_clients=6))
    assert len(trainer.history) == 3 and len(attack.attacker_ids) == 1
    assert rewrites == [True, True, True]
    assert all(torch.isfinite(p).all() for p in module.parameters())


def test_inf_rows_are_dropped_by_the_trainer_every_round(tmp_path):
    attack = Inf(clients=2)
    trainer = make_trainer(tmp_path, rounds=3, attacks=[attack], checkpoint_every=0)
    module = TinyNet()
    with pytest.warns(RuntimeWarning, match="sent a non-finite update and is dropped"):
        trainer.fit(module, make_dm(num_clients=6))
    assert len(trainer.history) == 3
    for record in trainer.history:
        assert set(record.dropped) == set(attack.attacker_ids)
        assert all("non-finite" in reason for reason in record.dropped.values())
        assert not record.kept_previous_model
    assert all(torch.isfinite(p).all() for p in module.parameters())


RECIPE = """
name: new_attacks
trainer:
  rounds: 2
  local_epochs: 1
  batch_size: 16
  enable_progress_bar: false
  checkpoint_every: 0
  attacks:
    - class_path: {class_path}
      init_args: {init_args}
model:
  class_path: tests.helpers.TinyNet
data:
  dataset:
    class_path: tests.helpers.Blobs
  num_clients: 6
"""

YAML = {
    "MinMax": ("MinMax", "{perturbation: sign, tol: 0.001, clients: 1}"),
    "MinSum": ("fl_lightning.attacks.MinSum", "{perturbation: unit, clients: [2]}"),
    "Mimic": ("Mimic", "{victim: 3, clients: 1}"),
    "Inf": ("Inf", "{clients: 0.2}"),
    "FangKrum": ("FangKrum", "{f: 1, clients: {holders_of: 0, count: 1}}"),
    "FangTrimmedMean": ("FangTrimmedMean", "{b: 3.0, clients: 1, rounds: [1]}"),
    "OptimalALIE": ("OptimalALIE", "{aggregator: {class_path: TrimmedMean, init_args: {beta: 0.2}}, evals: 5, "
                                   "clients: 1}"),
    "OptimalIPM": ("OptimalIPM", "{aggregator: {class_path: fl_lightning.aggregators.Krum, init_args: {f: 1}}, "
                                 "start: 1.0, clients: 1}"),
}


@pytest.mark.parametrize("name", sorted(YAML))
def test_builds_and_runs_from_yaml(tmp_path, name):
    class_path, init_args = YAML[name]
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(RECIPE.format(class_path=class_path, init_args=init_args))
    parser = fit_parser()
    cfg = parser.parse_args(["--config", str(recipe), "--save_dir", str(tmp_path / "logs")])
    (attack,) = parser.instantiate(cfg).trainer.attacks
    assert type(attack).__name__ == name
    trainer = fit_one(cfg, parser, quiet=True)
    (attack,) = trainer.attacks
    assert type(attack).__name__ == name and len(trainer.history) == 2 and len(attack.attacker_ids) == 1


def test_optimal_attacks_name_their_aggregator_as_a_class_in_yaml(tmp_path):
    class_path, init_args = YAML["OptimalALIE"]
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(RECIPE.format(class_path=class_path, init_args=init_args))
    parser = fit_parser()
    cfg = parser.parse_args(["--config", str(recipe)])
    (attack,) = parser.instantiate(cfg).trainer.attacks
    assert isinstance(attack.aggregator, TrimmedMean) and attack.aggregator.beta == 0.2 and attack.evals == 5
    bad = RECIPE.format(class_path="OptimalIPM", init_args="{aggregator: {class_path: os.system}, clients: 1}")
    recipe.write_text(bad)
    with pytest.raises(SystemExit):                      # not an Aggregator: refused by the parser
        parser.parse_args(["--config", str(recipe)])


def test_optimal_attack_probes_a_copy_of_a_stateful_aggregator(make_setup, make_round):
    from fl_lightning.aggregators import FoolsGold

    rule = FoolsGold()
    attack = OptimalIPM(aggregator=rule, clients=[0], evals=4)
    attack.setup(make_setup())
    updates = torch.randn(5, 8, generator=torch.Generator().manual_seed(0))
    before = {k: (v.clone() if isinstance(v, torch.Tensor) else v) for k, v in rule.state_dict().items()}
    out = attack.poison_updates(updates, make_round(range(5)))
    assert not torch.equal(out[0], updates[0]) and torch.equal(out[1:], updates[1:])
    after = rule.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(v, after[k]) if isinstance(v, torch.Tensor) else v == after[k] for k, v in before.items())
