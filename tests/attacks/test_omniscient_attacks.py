"""SignFlip, ALIE and IPM equal their formulas on known updates; honest rows stay untouched."""
from statistics import NormalDist

import pytest
import torch

from fl_lightning.attacks import ALIE, IPM, SignFlip


@pytest.fixture
def updates():
    return torch.tensor([[1.0, 2.0, 3.0],
                         [9.0, 9.0, 9.0],      # attacker row (client 5)
                         [3.0, 2.0, 1.0],
                         [2.0, 5.0, 2.0]])


IDS = [0, 5, 2, 3]
HONEST = [0, 2, 3]


def _ready(attack, make_setup):
    attack.setup(make_setup())
    return attack


def test_sign_flip(make_setup, make_round, updates):
    out = _ready(SignFlip(scale=2.0, clients=[5]), make_setup).poison_updates(updates, make_round(IDS))
    assert out[1].tolist() == [-18.0, -18.0, -18.0]
    assert torch.equal(out[HONEST], updates[HONEST])


def test_ipm(make_setup, make_round, updates):
    out = _ready(IPM(epsilon=0.5, clients=[5]), make_setup).poison_updates(updates, make_round(IDS))
    assert torch.allclose(out[1], torch.tensor([-1.0, -1.5, -1.0]))   # -0.5 * mean of honest rows
    assert torch.equal(out[HONEST], updates[HONEST])


def test_alie_with_given_z(make_setup, make_round, updates):
    out = _ready(ALIE(z=1.5, clients=[5]), make_setup).poison_updates(updates, make_round(IDS))
    honest = updates[HONEST]
    # column 0: 1, 3, 2 -> mean 2, unbiased std 1; column 1: 2, 2, 5 -> mean 3, std sqrt(3)
    assert torch.allclose(out[1], torch.tensor([2.0 - 1.5, 3.0 - 1.5 * 3 ** 0.5, 2.0 - 1.5]))
    assert torch.allclose(out[1], honest.mean(0) - 1.5 * honest.std(0))
    assert torch.equal(out[HONEST], updates[HONEST])


@pytest.mark.parametrize("n, f", [(10, 4), (50, 12), (4, 1), (7, 2)])
def test_alie_paper_z(n, f):
    s = (n // 2 + 1) - f
    assert ALIE.paper_z(n, f) == pytest.approx(NormalDist().inv_cdf((n - s) / n), abs=1e-9)


def test_alie_paper_z_in_a_round(make_setup, make_round):
    updates = torch.randn(10, 6, generator=torch.Generator().manual_seed(0))
    attack = _ready(ALIE(clients=[0, 1, 2, 3]), make_setup)
    out = attack.poison_updates(updates, make_round(range(10)))
    z = NormalDist().inv_cdf(0.8)            # n=10, f=4: s = 6 - 4 = 2, (10 - 2) / 10
    expected = updates[4:].mean(0) - z * updates[4:].std(0)
    assert torch.allclose(out[:4], expected.expand(4, 6), atol=1e-6)
    assert torch.equal(out[4:], updates[4:])


def test_alie_majority_and_single_honest_row_stay_finite(make_setup, make_round):
    assert ALIE.paper_z(4, 3) == pytest.approx(NormalDist().inv_cdf(3 / 4))   # s raised to 1
    updates = torch.tensor([[1.0, 1.0], [4.0, 6.0]])
    out = _ready(ALIE(clients=[0]), make_setup).poison_updates(updates, make_round([0, 1]))
    assert out[0].tolist() == [4.0, 6.0]                                       # std of one row is 0


@pytest.mark.parametrize("attack", [IPM(clients=[5]), ALIE(clients=[5])])
def test_alone_in_the_round_is_unchanged(make_setup, make_round, attack):
    updates = torch.ones(1, 3)
    assert torch.equal(_ready(attack, make_setup).poison_updates(updates, make_round([5])), updates)


def test_deterministic(make_setup, make_round, updates):
    for cls in (SignFlip, ALIE, IPM):
        a = _ready(cls(clients=[5]), make_setup).poison_updates(updates, make_round(IDS))
        b = _ready(cls(clients=[5]), make_setup).poison_updates(updates, make_round(IDS))
        assert torch.equal(a, b)


@pytest.mark.parametrize("cls, kwargs, message", [
    (SignFlip, dict(scale=0), "SignFlip: scale must be a finite number > 0, got 0"),
    (SignFlip, dict(scale=-1.0), "scale must be a finite number > 0"),
    (IPM, dict(epsilon=0.0), "IPM: epsilon must be a finite number > 0, got 0.0"),
    (ALIE, dict(z=-1.0), "ALIE: z must be a finite number >= 0"),
    (ALIE, dict(z=float("nan")), "z must be a finite number"),
])
def test_settings_are_checked_when_built(cls, kwargs, message):
    with pytest.raises(ValueError, match=message):
        cls(**kwargs)


def test_a_setting_of_the_wrong_type_is_a_type_error():
    with pytest.raises(TypeError, match="IPM: epsilon must be a number"):
        IPM(epsilon="big")
