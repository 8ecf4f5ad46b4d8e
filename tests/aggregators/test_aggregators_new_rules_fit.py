"""Every new rule, and the pre-aggregators wrapping one, run a 3-round fit end to end."""
from __future__ import annotations

import pytest
import torch
from tests.helpers import TinyNet, make_dm, make_trainer

from fl_lightning.aggregators import (
    ARC, CAF, FLAME, MDA, NNM, SMEA, Bucketing, CoordinateMedian, DnC, Meamed, MoNNA, TrimmedMean,
)

BUILDERS = {
    "MDA": lambda: MDA(f=1),
    "MoNNA": lambda: MoNNA(f=1),
    "Meamed": lambda: Meamed(f=1),
    "CAF": lambda: CAF(f=1),
    "SMEA": lambda: SMEA(f=1),
    "DnC": lambda: DnC(f=1, sub_dim=20),
    "FLAME": lambda: FLAME(),
    "NNM(TrimmedMean)": lambda: NNM(TrimmedMean(f=1), f=1),
    "Bucketing(Median)": lambda: Bucketing(CoordinateMedian(), s=2),
    "ARC(Meamed)": lambda: ARC(Meamed(f=1), f=1),
}


@pytest.mark.parametrize("name", list(BUILDERS))
def test_new_rule_runs_a_three_round_fit(tmp_path, name):
    module = TinyNet()
    before = torch.cat([p.detach().flatten().clone() for p in module.parameters()])
    trainer = make_trainer(tmp_path, rounds=3, aggregator=BUILDERS[name]())
    trainer.fit(module, datamodule=make_dm(num_clients=5))
    after = torch.cat([p.detach().flatten() for p in module.parameters()])
    assert len(trainer.history) == 3 and bool(torch.isfinite(after).all())
    assert not torch.equal(before, after)                       # the rule's updates were applied


def test_fltrust_runs_a_fit_and_gives_a_sign_flipping_client_no_weight(tmp_path):
    """FLTrust's server trains a reference update on its held-out root set every round (the trainer's
    ``root_samples`` hook); a client that sends its update reversed points away from it and gets weight 0."""
    from fl_lightning.aggregators import FLTrust
    from fl_lightning.attacks import SignFlip

    dm = make_dm(num_clients=5)
    trainer = make_trainer(tmp_path, rounds=3, aggregator=FLTrust(root_samples=40),
                           attacks=[SignFlip(clients=[0])])
    trainer.fit(TinyNet(), datamodule=dm)
    assert dm.root is not None and len(dm.root) == 40
    assert len(trainer.history) == 3
    for record in trainer.history:
        weights = dict(zip(record.client_ids, record.client_weights.tolist()))
        assert weights[0] == 0.0
        assert sum(weights.values()) > 0.99
