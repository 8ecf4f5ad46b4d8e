"""Sweep key syntax, profiles and point names (no training)."""
from __future__ import annotations

import pytest

from fl_lightning.sweeps.recipe import Axis, normalize_key, recipe_from_dict, set_path, value_label

RR = {"class_path": "fl_lightning.aggregators.ResidualReweight", "init_args": {"lambda_": 2.0}}
FEDAVG = {"class_path": "fl_lightning.aggregators.FedAvg"}


def _recipe(**extra) -> dict:
    base = {"name": "demo", "trainer": {"rounds": 5, "attacks": [
        {"class_path": "fl_lightning.attacks.LabelFlip", "init_args": {"source": 1, "target": 7, "clients": 2}}]},
        "model": {"class_path": "tests.helpers.TinyNet"}, "data": {"num_clients": 10}}
    base.update(extra)
    return base


def test_keys_are_dotted_paths_with_list_indices_and_the_aggregator_shorthand() -> None:
    assert normalize_key("aggregator") == "trainer.aggregator"
    assert normalize_key("aggregator.init_args.lambda_") == "trainer.aggregator.init_args.lambda_"
    config = _recipe()
    set_path(config, "trainer.attacks.0.init_args.clients", 5)
    set_path(config, "model.init_args.lr", 0.1)  # missing mappings are created
    assert config["trainer"]["attacks"][0]["init_args"]["clients"] == 5
    assert config["model"]["init_args"] == {"lr": 0.1}


def test_unknown_keys_name_the_key_and_the_valid_top_level_keys() -> None:
    with pytest.raises(ValueError, match=r"unknown sweep key 'traner.rounds'.*'aggregator'.*'trainer'"):
        normalize_key("traner.rounds")
    with pytest.raises(ValueError, match=r"trainer.attacks is a list of 1 items; '3' is not an index"):
        set_path(_recipe(), "trainer.attacks.3.init_args.clients", 1)
    with pytest.raises(ValueError, match="not a mapping or list"):
        set_path(_recipe(), "trainer.rounds.x", 1)
    with pytest.raises(ValueError, match="takes only the keys"):
        recipe_from_dict(_recipe(sweep={"trainer.rounds": [1, 2]}))
    with pytest.raises(ValueError, match="non-empty list"):
        recipe_from_dict(_recipe(sweep={"grid": {"trainer.rounds": 3}}))
    with pytest.raises(ValueError, match="no profile 'big'; its profiles are \\['small'\\]"):
        recipe_from_dict(_recipe(profiles={"small": {}}), profile="big")


def test_the_grid_is_the_cartesian_product_with_readable_names() -> None:
    recipe = recipe_from_dict(_recipe(aggregators=[FEDAVG, RR], sweep={"grid": {
        "trainer.attacks.0.init_args.clients": [0, 5], "trainer.rounds": [3]}}))
    points = recipe.points()
    assert [p.name for p in points] == ["FedAvg-clients=0", "FedAvg-clients=5",
                                        "ResidualReweight-clients=0", "ResidualReweight-clients=5"]
    last = points[-1]
    assert last.config["trainer"]["aggregator"] == RR and "aggregators" not in last.config
    assert last.config["trainer"]["attacks"][0]["init_args"]["clients"] == 5
    assert last.config["trainer"]["rounds"] == 3
    assert last.params == {"aggregator": RR, "trainer.attacks.0.init_args.clients": 5, "trainer.rounds": 3}
    assert last.labels["aggregator"] == "ResidualReweight"


def test_an_aggregator_axis_is_written_before_axes_that_set_its_arguments() -> None:
    variants = [{"class_path": RR["class_path"], "init_args": {"estimator": "median"}},
                {"class_path": RR["class_path"], "init_args": {"weighting": "gaussian"}}]
    recipe = recipe_from_dict(_recipe(sweep={"grid": {"aggregator.init_args.lambda_": [1.0, 5.0],
                                                      "aggregator": variants}}))
    names = [p.name for p in recipe.points()]
    assert names == ["estimator=median-lambda_=1", "estimator=median-lambda_=5",
                     "weighting=gaussian-lambda_=1", "weighting=gaussian-lambda_=5"]
    assert recipe.points()[-1].config["trainer"]["aggregator"]["init_args"] == {"weighting": "gaussian",
                                                                               "lambda_": 5.0}


def test_labels_of_class_values_and_scalars() -> None:
    same = Axis("aggregator", [RR, {"class_path": RR["class_path"], "init_args": {"lambda_": 5.0}}])
    assert same.labels() == ["lambda_=2", "lambda_=5"]
    mixed = Axis("aggregator", [FEDAVG, RR, {"class_path": RR["class_path"], "init_args": {"lambda_": 5.0}}])
    assert mixed.labels() == ["FedAvg", "ResidualReweight_lambda_=2", "ResidualReweight_lambda_=5"]
    assert [value_label(v) for v in (0.0001, 2.0, 5, True, None, "iid", [1, 2])] == \
        ["0.0001", "2", "5", "true", "none", "iid", "1+2"]


def test_a_profile_overrides_caps_and_replaces_axes_and_renames_the_sweep() -> None:
    raw = _recipe(aggregators=[FEDAVG, RR], sweep={"paper": "fig3", "grid": {
        "trainer.attacks.0.init_args.clients": [0, 1, 2, 3]}},
        profiles={"small": {"trainer.rounds": 1, "max_values_per_axis": 2,
                            "grid": {"trainer.seed": [0, 1, 2]}}})
    recipe = recipe_from_dict(raw, profile="small")
    assert recipe.name == "demo-small" and recipe.paper == "fig3" and recipe.base["trainer"]["rounds"] == 1
    assert [(a.key, len(a.values)) for a in recipe.axes] == [
        ("aggregator", 2), ("trainer.attacks.0.init_args.clients", 2), ("trainer.seed", 2)]
    assert len(recipe.points()) == 8
    assert recipe_from_dict(raw).name == "demo" and len(recipe_from_dict(raw).points()) == 8
    later = recipe_from_dict(raw, profile="small", overrides={"trainer.rounds": 7, "name": "mine"})
    assert later.base["trainer"]["rounds"] == 7 and later.name == "mine"


def test_no_axis_gives_one_point_named_after_the_aggregator_or_base() -> None:
    assert [p.name for p in recipe_from_dict(_recipe(aggregators=[RR])).points()] == ["ResidualReweight"]
    assert [p.name for p in recipe_from_dict(_recipe()).points()] == ["base"]


def test_points_whose_names_collide_are_an_error() -> None:
    raw = _recipe(sweep={"grid": {"model.init_args.lr": [0.1000001, 0.1000002]}})
    with pytest.raises(ValueError, match="both get the name 'lr=0.1'"):
        recipe_from_dict(raw).points()


def test_a_set_that_swaps_an_attack_class_warns_about_its_old_init_args() -> None:
    raw = {"trainer": {"attacks": [{"class_path": "LabelFlip", "init_args": {"source": 1, "lr": 0.25}}]}}
    with pytest.warns(UserWarning, match=r"init_args written for LabelFlip carry over to PixelBackdoor "
                                         r"\(source: 1, lr: 0.25\)"):
        recipe = recipe_from_dict(raw, overrides={"trainer.attacks.0.class_path": "PixelBackdoor"})
    assert recipe.base["trainer"]["attacks"][0] == {"class_path": "PixelBackdoor",
                                                    "init_args": {"source": 1, "lr": 0.25}}
