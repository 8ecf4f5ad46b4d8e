"""The rules added after the paper's baselines: hand-computed cases, planted outliers, composition, YAML."""
from __future__ import annotations

import math

import pytest
import torch

from fl_lightning.aggregators import (
    AGGREGATORS, ARC, CAF, FLAME, MDA, NNM, SMEA, Aggregator, Bucketing, DnC, FLTrust, Meamed, MoNNA, TrimmedMean,
)
from fl_lightning.aggregators import functional as F
from fl_lightning.context import RoundContext
from fl_lightning.param_layout import ParamLayout


def _ctx(k: int, n: int, reference: torch.Tensor | None = None, seed: int = 0) -> RoundContext:
    layout = ParamLayout.from_shapes(["w"], [(n,)])
    return RoundContext(round=3, client_ids=list(range(k)), num_samples=torch.ones(k), layout=layout,
                        global_params=torch.zeros(n), seed=seed, reference_update=reference)


# five points on a line, one far away: every subset rule keeps the four close ones
LINE = torch.tensor([[0.0], [1.0], [2.0], [3.0], [100.0]])


def test_mda_keeps_the_smallest_diameter_subset():
    result = F.mda_selection(LINE, 1)
    assert result.selected.tolist() == [True, True, True, True, False]
    torch.testing.assert_close(result.aggregate, torch.tensor([1.5]))
    # diameters of {0,1,2} = 2 and {1,2,3} = 2 tie: the first subset in lexicographic order wins
    torch.testing.assert_close(F.mda(LINE[:4], 1), torch.tensor([1.0]))


def test_monna_averages_the_neighbours_of_the_trusted_row():
    torch.testing.assert_close(F.monna(LINE, 2, trusted=3), torch.tensor([2.0]))     # rows 3, 2, 1
    torch.testing.assert_close(F.monna(LINE, 2, trusted=0), torch.tensor([1.0]))     # rows 0, 1, 2
    result = MoNNA(f=2).aggregate(LINE, _ctx(5, 1))                                  # lowest id: row 0
    torch.testing.assert_close(result.update, torch.tensor([1.0]))
    assert result.diagnostics["flagged"].tolist() == [False, False, False, True, True]
    with pytest.raises(ValueError, match="trusted client 9 is not among"):
        MoNNA(f=1, trusted=9).aggregate(LINE, _ctx(5, 1))


def test_meamed_is_the_mean_of_the_values_nearest_the_median():
    u = torch.tensor([[0.0, 10.0], [1.0, 11.0], [2.0, 13.0], [3.0, 9.0], [100.0, -50.0]])
    # column 0: median 2, nearest three 1, 2, 3 -> 2; column 1: median 10, nearest 10, 11, 9 -> 10
    torch.testing.assert_close(F.meamed(u, 2), torch.tensor([2.0, 10.0]))
    torch.testing.assert_close(Meamed(f=2).aggregate(u, _ctx(5, 2)).update, torch.tensor([2.0, 10.0]))


def test_smea_and_caf_leave_out_the_far_point():
    smea = F.smea_selection(LINE, 1)
    assert smea.selected.tolist() == [True, True, True, True, False]
    torch.testing.assert_close(smea.aggregate, torch.tensor([1.5]))
    caf = F.caf_details(LINE, 1)
    assert caf.client_weights[4] == 0 and abs(float(caf.aggregate) - 1.5) < 0.5
    result = CAF(f=1).aggregate(LINE, _ctx(5, 1))
    assert bool(result.diagnostics["flagged"][4]) and not bool(result.diagnostics["flagged"][:4].any())


def _planted(k: int = 12, n: int = 40, bad: int = 3, seed: int = 0, spread: float = 0.1) -> tuple[torch.Tensor, list[int]]:
    g = torch.Generator().manual_seed(seed)
    direction = torch.randn(n, generator=g)
    u = direction + spread * torch.randn(k, n, generator=g)
    rows = [1, 5, 9][:bad]
    u[rows] = -3 * direction + 0.1 * torch.randn(bad, n, generator=g)
    return u, rows


def test_dnc_flags_planted_outliers():
    u, bad = _planted()
    result = DnC(f=3, sub_dim=16).aggregate(u, _ctx(12, 40))
    assert sorted(torch.nonzero(result.diagnostics["flagged"]).flatten().tolist()) == bad
    again = DnC(f=3, sub_dim=16).aggregate(u, _ctx(12, 40))
    assert torch.equal(result.update, again.update)                   # seeded from (seed, round)


def test_flame_flags_planted_outliers_and_clips_to_the_median_norm():
    u, bad = _planted(spread=0.01)   # HDBSCAN leaves loose honest points as noise too: keep them close
    u[0] *= 50                                       # honest direction, huge norm: admitted, then clipped
    result = FLAME(noise=0.0).aggregate(u, _ctx(12, 40))
    flagged = result.diagnostics["flagged"]
    # every planted outlier is flagged; HDBSCAN may also leave some honest points out of the cluster as
    # noise (its single-cluster labelling), but the admitted cluster is a majority by construction
    assert all(bool(flagged[i]) for i in bad) and int((~flagged).sum()) >= 12 // 2 + 1
    bound = float(u.norm(dim=1).median())
    details = F.flame_details(u, noise=0.0)
    assert details.clip_bound == pytest.approx(float(torch.quantile(u.double().norm(dim=1), 0.5)), rel=1e-6)
    good = torch.nonzero(~flagged).flatten()
    scale = torch.clamp(details.clip_bound / u[good].norm(dim=1), max=1.0)
    torch.testing.assert_close(result.update, (u[good] * scale.unsqueeze(1)).mean(dim=0), rtol=1e-5, atol=1e-6)
    assert bound > 0
    noisy = FLAME(noise=0.01).aggregate(u, _ctx(12, 40))
    assert not torch.equal(noisy.update, result.update)
    assert torch.equal(noisy.update, FLAME(noise=0.01).aggregate(u, _ctx(12, 40)).update)


def test_fltrust_gives_zero_weight_to_a_client_pointing_away():
    reference = torch.tensor([1.0, 0.0])
    u = torch.tensor([[2.0, 0.0], [1.0, 1.0], [-1.0, 0.5]])
    result = FLTrust().aggregate(u, _ctx(3, 2, reference=reference))
    # scores: 1, cos 45 deg, 0; rescaled rows: [1, 0], [1, 1] / sqrt 2
    scores = torch.tensor([1.0, 1 / math.sqrt(2), 0.0])
    torch.testing.assert_close(result.diagnostics["trust_scores"], scores)
    expected = (scores[0] * torch.tensor([1.0, 0.0]) + scores[1] * torch.tensor([1.0, 1.0]) / math.sqrt(2)) / scores.sum()
    torch.testing.assert_close(result.update, expected)
    assert result.client_weights[2] == 0 and result.diagnostics["flagged"].tolist() == [False, False, True]
    assert FLTrust(root_samples=50).root_samples == 50 and NNM(FLTrust(), f=1).root_samples == 100


def test_nnm_equals_its_definition_on_a_hand_case():
    # K = 4, f = 1: each row becomes the mean of its 3 nearest rows (itself included)
    u = torch.tensor([[0.0], [1.0], [3.0], [10.0]])
    expected = torch.tensor([[4 / 3], [4 / 3], [4 / 3], [14 / 3]])
    torch.testing.assert_close(F.nnm(u, 1), expected)
    result = NNM(TrimmedMean(f=1), f=1).aggregate(u, _ctx(4, 1))
    torch.testing.assert_close(result.update, torch.tensor([4 / 3]))


def test_arc_clips_the_largest_to_the_next_norm():
    u = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 0.0], [0.0, -4.0], [5.0, 0.0]])
    assert F.arc_clip_count(5, 1) == 1                       # floor(2 * 1/5 * 4) = 1
    torch.testing.assert_close(F.arc(u, 1).norm(dim=1), torch.tensor([1.0, 2.0, 3.0, 4.0, 4.0]))
    assert F.arc_clip_count(5, 2) == 2                       # floor(2 * 2/5 * 3) = 2
    torch.testing.assert_close(F.arc(u, 2).norm(dim=1), torch.tensor([1.0, 2.0, 3.0, 3.0, 3.0]))
    assert F.arc_clip_count(49, 0) == 0 and torch.equal(F.arc(u, 0), u)


@pytest.mark.parametrize("name", ["median", "trimmed_mean", "geometric_median", "meamed", "mda", "smea", "krum"])
def test_bucketing_with_buckets_of_one_equals_its_inner_rule(name):
    u = torch.randn(7, 5, generator=torch.Generator().manual_seed(1))
    inner = AGGREGATORS[name]()
    torch.testing.assert_close(Bucketing(AGGREGATORS[name](), s=1).aggregate(u, _ctx(7, 5)).update,
                               inner.aggregate(u, _ctx(7, 5)).update, rtol=1e-5, atol=1e-6)


def test_bucketing_averages_buckets_of_s():
    u = torch.arange(6.0).unsqueeze(1)
    result = Bucketing(AGGREGATORS["fedavg"](weighted=False), s=2).aggregate(u, _ctx(6, 1))
    torch.testing.assert_close(result.update, torch.tensor([2.5]))
    torch.testing.assert_close(result.client_weights, torch.full((6,), 1 / 6))
    means = F.bucketing(u, 4, torch.Generator().manual_seed(0))
    assert means.shape == (2, 1) and float(means.sum() * 0 + (means[0] * 4 + means[1] * 2)) == pytest.approx(15.0)


@pytest.mark.parametrize("wrapper", [lambda inner: Bucketing(inner, s=2), lambda inner: NNM(inner, f=1),
                                     lambda inner: ARC(inner, f=1)])
@pytest.mark.parametrize("name", list(AGGREGATORS))
def test_every_pre_aggregator_composes_with_every_rule(wrapper, name):
    k, n = 14, 6                     # 13 finite rows: 7 buckets of 2, enough for Bulyan(f=1)
    u = torch.randn(k, n, generator=torch.Generator().manual_seed(2))
    u[3, 1] = math.nan
    kwargs = {"f": 1} if name in ("krum", "multi_krum", "bulyan") else {}
    aggregator = wrapper(AGGREGATORS[name](**kwargs))
    result = aggregator.aggregate(u, _ctx(k, n, reference=u[[0, 1, 2]].mean(dim=0)))
    assert result.update.shape == (n,) and bool(torch.isfinite(result.update).all())
    assert bool(result.diagnostics["flagged"][3])
    if result.client_weights is not None:
        assert result.client_weights[3] == 0
        torch.testing.assert_close(result.client_weights.sum(), torch.tensor(1.0))


@pytest.mark.parametrize("rule", [lambda u: F.mda(u, 1), lambda u: F.monna(u, 1), lambda u: F.meamed(u, 1),
                                  lambda u: F.caf(u, 1), lambda u: F.smea(u, 1), lambda u: F.dnc(u, 1),
                                  lambda u: F.flame(u), lambda u: F.fltrust(u, torch.zeros(0)),
                                  lambda u: F.nnm(u, 1)[0], lambda u: F.arc(u, 1)[0],
                                  lambda u: F.bucketing(u, 2)[0]])
def test_new_rules_return_an_empty_update_on_empty_input(rule):
    assert rule(torch.zeros(5, 0)).shape == (0,)


@pytest.mark.parametrize("build, error, message", [
    (lambda: MDA(f=-1), ValueError, "MDA: f (the number of Byzantine clients tolerated) must be an int >= 0"),
    (lambda: SMEA(f=1.0), TypeError, "SMEA: f (the number of Byzantine clients tolerated) must be an int"),
    (lambda: DnC(niters=0), ValueError, "DnC: niters must be an int >= 1"),
    (lambda: DnC(c=-1.0), ValueError, "DnC: c (the filtering fraction) must be"),
    (lambda: FLAME(noise=math.inf), ValueError, "FLAME: noise"),
    (lambda: FLTrust(root_samples=0), ValueError, "FLTrust: root_samples"),
    (lambda: Bucketing(TrimmedMean(), s=0), ValueError, "Bucketing: s (the bucket size) must be an int >= 1"),
    (lambda: NNM("median", f=1), TypeError, "NNM: inner must be a Aggregator"),
])
def test_new_rules_check_their_settings_when_built(build, error, message):
    with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")):
        build()


def test_new_rules_state_their_client_conditions():
    with pytest.raises(ValueError, match=r"MDA needs K > 2f clients per round: with f=2 that is at least 5, got K=4"):
        MDA(f=2).validate(4)
    with pytest.raises(ValueError, match=r"mda needs K > 2f finite clients: with f=2 that is at least 5, got K=4"):
        F.mda(torch.randn(4, 2), 2)
    with pytest.raises(ValueError, match=r"Krum needs K > 2f \+ 2 clients per round"):
        Bucketing(AGGREGATORS["krum"](f=1), s=2).validate(8)      # 4 buckets for Krum(f=1), which needs 5
    Bucketing(AGGREGATORS["krum"](f=1), s=2).validate(9)
    assert Bucketing(AGGREGATORS["krum"](f=1), s=2).min_clients == 9


def test_pre_aggregators_nest_in_yaml_like_the_cli_builds_them():
    from jsonargparse import ArgumentParser

    parser = ArgumentParser()
    parser.add_argument("--aggregator", type=Aggregator)
    yaml = """
aggregator:
  class_path: fl_lightning.aggregators.NNM
  init_args:
    f: 2
    inner:
      class_path: fl_lightning.aggregators.Bucketing
      init_args:
        s: 2
        inner:
          class_path: fl_lightning.aggregators.TrimmedMean
          init_args:
            beta: 0.1
"""
    cfg = parser.parse_string(yaml)
    aggregator = parser.instantiate(cfg).aggregator
    assert isinstance(aggregator, NNM) and aggregator.f == 2
    assert isinstance(aggregator.inner, Bucketing) and isinstance(aggregator.inner.inner, TrimmedMean)
    assert aggregator.inner.inner.beta == 0.1
    u = torch.randn(10, 3, generator=torch.Generator().manual_seed(3))
    assert aggregator.aggregate(u, _ctx(10, 3)).update.shape == (3,)


@pytest.mark.parametrize("yaml_args, cls", [
    ("class_path: MDA\n  init_args: {f: 2}", MDA),
    ("class_path: MoNNA\n  init_args: {f: 1, trusted: 3}", MoNNA),
    ("class_path: Meamed\n  init_args: {f: 1}", Meamed),
    ("class_path: CAF\n  init_args: {f: 1}", CAF),
    ("class_path: SMEA\n  init_args: {f: 1}", SMEA),
    ("class_path: DnC\n  init_args: {f: 1, niters: 3, sub_dim: 100, c: 1.5}", DnC),
    ("class_path: FLAME\n  init_args: {noise: 0.01}", FLAME),
    ("class_path: FLTrust\n  init_args: {root_samples: 50}", FLTrust),
    ("class_path: ARC\n  init_args: {f: 1, inner: {class_path: Krum, init_args: {f: 1}}}", ARC),
])
def test_every_new_class_builds_from_yaml_by_its_short_name(yaml_args, cls):
    from jsonargparse import ArgumentParser

    import fl_lightning.aggregators  # noqa: F401  (the CLI imports the package so short names resolve)

    parser = ArgumentParser()
    parser.add_argument("--aggregator", type=Aggregator)
    aggregator = parser.instantiate(parser.parse_string(f"aggregator:\n  {yaml_args}\n")).aggregator
    assert type(aggregator) is cls
    init = yaml_args.split("init_args: ", 1)[1]
    if "inner" not in init:
        for key, value in (item.split(": ") for item in init.strip("{}").split(", ")):
            assert getattr(aggregator, key) == type(getattr(aggregator, key))(value)


def test_fit_parser_builds_a_nested_pre_aggregator_from_a_recipe(tmp_path):
    from fl_lightning.fit_config import fit_parser

    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("""
model:
  class_path: tests.helpers.TinyNet
data:
  dataset:
    class_path: tests.helpers.Blobs
trainer:
  aggregator:
    class_path: NNM
    init_args:
      f: 2
      inner:
        class_path: TrimmedMean
        init_args:
          beta: 0.1
""")
    parser = fit_parser()
    aggregator = parser.instantiate(parser.parse_args(["--config", str(recipe)])).trainer.aggregator
    assert repr(aggregator) == "NNM(TrimmedMean(beta=0.1, f=None), f=2, exact=True)"
    # a dotted override reaches the inner rule, as for any other nested setting
    cfg = parser.parse_args(["--config", str(recipe), "--trainer.aggregator.init_args.inner.init_args.beta", "0.2"])
    assert parser.instantiate(cfg).trainer.aggregator.inner.beta == 0.2
