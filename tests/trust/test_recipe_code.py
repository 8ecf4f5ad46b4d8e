"""Issue 20 item 1 from the user's side: no ``class_path`` of a recipe runs code, wherever it sits."""
from __future__ import annotations

import copy

import pytest

from fl_lightning.fit_config import check_recipe, fit_parser
from fl_lightning.recipe_loggers import build_loggers
from tests.trust.cli_run import TINY, error_lines, run_cli, write_recipe


def _engine(class_path: str, field: str, value) -> dict:
    recipe = copy.deepcopy(TINY)
    recipe["trainer"]["engine"] = {"class_path": class_path, "init_args": {field: value}}
    return recipe


@pytest.mark.parametrize("class_path, field", [
    ("fl_lightning.engines.lightning.LightningEngine", "trainer_kwargs"),
    ("fl_lightning.engines.ray.RayEngine", "init_kwargs"),
])
def test_engine_keyword_arguments_never_run_a_command(tmp_path, class_path, field):
    victim = tmp_path / "victim"
    victim.mkdir()
    value = {"callbacks": [{"class_path": "os.system", "init_args": {"command": f"touch {tmp_path}/pwned"}},
                           {"class_path": "shutil.rmtree", "init_args": {"path": str(victim)}}]}
    recipe = write_recipe(tmp_path, {**_engine(class_path, field, value), "save_dir": str(tmp_path / "logs")})
    result = run_cli("fit", "--config", str(recipe))
    assert not (tmp_path / "pwned").exists() and victim.is_dir()
    assert result.returncode == 2
    (line,) = error_lines(result)
    assert line.startswith(f"fl-lightning fit: error: trainer.engine.init_args.{field}.callbacks.0.class_path: "
                           "'os.system' sits inside a loosely typed value")


@pytest.fixture(scope="module")
def parser():
    parser = fit_parser()
    parser.exit_on_error = False
    return parser


@pytest.mark.parametrize("where, value, message", [
    ("trainer.callbacks", [{"class_path": "tests.trust.harmful.MarkOnInit"}], "not a plug-in class"),
    ("trainer.aggregator", {"class_path": "fl_lightning.aggregators.NNM",
                            "init_args": {"inner": {"class_path": "tests.trust.harmful.factory"}}}, "a function"),
])
def test_a_typed_field_builds_only_plug_ins(parser, where, value, message):
    recipe = copy.deepcopy(TINY)
    recipe["trainer"][where.split(".")[1]] = value
    try:
        cfg = parser.parse_object(recipe)
    except Exception:
        return  # jsonargparse refused it by its declared type: nothing was built either
    with pytest.raises(ValueError, match=message):
        check_recipe(cfg)


def test_a_loose_value_keeps_a_plug_in_as_plain_data_and_says_so(parser):
    cfg = parser.parse_object(_engine("fl_lightning.engines.lightning.LightningEngine", "trainer_kwargs",
                                      {"x": [{"y": {"class_path": "fl_lightning.aggregators.FedAvg"}}]}))
    with pytest.raises(ValueError, match=r"trainer\.engine\.init_args\.trainer_kwargs\.x\.0\.y\.class_path: "
                                         r"'fl_lightning\.aggregators\.FedAvg' sits inside a loosely typed value"):
        check_recipe(cfg)


def test_logger_init_args_are_plain_data(tmp_path):
    entry = {"class_path": "CSVLogger", "init_args": {"name": {"class_path": "os.system",
                                                               "init_args": {"command": f"touch {tmp_path}/x"}}}}
    with pytest.raises(ValueError, match=r"trainer\.logger\.init_args\.name\.class_path: 'os\.system'"):
        build_loggers(entry, save_dir=str(tmp_path), name="n", run_name="r")
    assert not (tmp_path / "x").exists()


def test_shipped_recipes_pass_the_allow_list(parser):
    from pathlib import Path

    for path in sorted((Path(__file__).resolve().parents[2] / "recipes").glob("*.yaml")):
        check_recipe(parser.parse_args(["--config", str(path)]))


def test_an_argument_typed_callable_cannot_be_given_a_function_name(parser, tmp_path):
    recipe = copy.deepcopy(TINY)
    recipe["data"]["dataset"] = {"class_path": "fl_lightning.data.TorchDatasets", "init_args": {
        "train": {"class_path": "tests.trust.harmful.FilesDataset",
                  "init_args": {"root": str(tmp_path), "loader": "tests.trust.harmful.leave_mark"}}}}
    cfg = parser.parse_object(recipe)
    with pytest.raises(ValueError, match=r"data\.dataset\.init_args\.train\.init_args\.loader: the recipe names "
                                         r"tests\.trust\.harmful\.leave_mark, .* a recipe cannot name one"):
        check_recipe(cfg)
