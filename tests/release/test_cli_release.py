"""The command line as a Lightning user expects it: aggregator options, peers' names, whole tables, help text,
and answers from the shipped schema without torch."""
from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from rich.console import Console
from rich.table import Table

from fl_lightning import shipped
from fl_lightning.aggregator_options import canonical_aggregators, class_names_in
from fl_lightning.aggregators import CoordinateMedian, TrimmedMean, get_aggregator
from fl_lightning.cli import main
from fl_lightning.cli_schema import config_keys, load_schema, unknown_key
from fl_lightning.console_tables import print_whole
from fl_lightning.fit_config import fit_parser

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = str(shipped.RECIPE_DIR / "quickstart.yaml")


def _error(args: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as info:
        main(args)
    assert info.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


@pytest.fixture(scope="module")
def parser():
    parser = fit_parser()
    parser.exit_on_error = False
    return parser


def test_trainer_aggregator_on_a_recipe_with_a_list_is_an_error_naming_aggregators(capsys) -> None:
    err = _error(["fit", "--config", QUICKSTART, "--trainer.aggregator", "Krum"], capsys)
    assert "--trainer.aggregator would be ignored" in err and "(FedAvg, ResidualReweight)" in err
    assert "--aggregators '[Krum]'" in err
    err = _error(["fit", "--config", QUICKSTART, "--trainer.aggregator.init_args.f=1"], capsys)
    assert "would be ignored" in err


@pytest.mark.parametrize("alias, ours", [("Median", CoordinateMedian), ("FedMedian", CoordinateMedian),
                                         ("TrMean", TrimmedMean), ("FedTrimmedAvg", TrimmedMean)])
def test_peers_names_parse_and_become_our_rule(alias, ours, parser) -> None:
    cfg = parser.parse_args(["--config", QUICKSTART, "--aggregators", f"[{alias}, GeometricMedian, MultiKrum]"])
    canonical_aggregators(cfg)
    paths = [a.class_path for a in cfg.aggregators]
    assert paths[0] == f"{ours.__module__}.{ours.__name__}"
    assert [p.rsplit(".", 1)[-1] for p in paths[1:]] == ["GeometricMedian", "MultiKrum"]
    built = parser.instantiate_classes(cfg)
    assert type(built.aggregators[0]) is ours
    assert type(get_aggregator(alias)) in (ours, *ours.__subclasses__())


def test_peer_conventions_carry_their_arguments(parser) -> None:
    cfg = parser.parse_args(["--config", QUICKSTART, "--aggregators",
                             "[{class_path: TrMean, init_args: {f: 2}}, {class_path: FedTrimmedAvg, "
                             "init_args: {beta: 0.1}}]"])
    canonical_aggregators(cfg)
    first, second = parser.instantiate_classes(cfg).aggregators
    assert (type(first), first.f, first.beta) == (TrimmedMean, 2, None)
    assert (type(second), second.beta, second.f) == (TrimmedMean, 0.1, None)


@pytest.mark.parametrize("value", ["[FedAvg, Krumm]", "[{class_path: FedAvg}, {class_path: Krumm}]",
                                   "[FedAvg, fl_lightning.aggregators.Krumm]"])
def test_a_misspelt_name_inside_aggregators_gets_a_suggestion(value, capsys) -> None:
    err = _error(["fit", "--config", QUICKSTART, "--aggregators", value], capsys)
    assert "aggregators: 'Krumm' is not a class it accepts (did you mean 'Krum'?)" in err


def test_a_misspelt_init_arg_names_the_class_and_its_arguments(capsys) -> None:
    err = _error(["fit", "--config", QUICKSTART, "--model.init_args.lrr", "3"], capsys)
    assert "model: PaperCNN takes no argument 'lrr' (did you mean 'lr'?); its init_args are lr" in err


def test_class_names_are_read_from_list_values() -> None:
    assert class_names_in("['Krumm', {'class_path': 'FedAvg'}]") == ["Krumm", "FedAvg"]
    assert class_names_in("[Krum, {class_path: a.B, init_args: {f: 1}}]") == ["Krum", "a.B"]
    assert class_names_in("not: [valid") == []


def test_a_table_into_a_file_is_printed_whole() -> None:
    long_name = "ResidualReweight-" + "-".join(f"axis{i}=value{i}" for i in range(12))
    table = Table(title="points")
    table.add_column("#")
    table.add_column("point")
    table.add_row("1", long_name)
    out = io.StringIO()
    print_whole(Console(file=out, width=80), table)
    assert long_name in out.getvalue()  # rich alone would wrap or cut it at 80 columns
    narrow = io.StringIO()
    Console(file=narrow, width=80).print(table)
    assert long_name not in narrow.getvalue()


def test_every_data_option_has_help(parser) -> None:
    data_actions = [a for a in parser._actions
                    if any(s.startswith("--data.") and not s.endswith(".help") for s in a.option_strings)]
    assert len(data_actions) >= 6
    for action in data_actions:
        assert action.help and len(action.help.split()) >= 3, action.option_strings


def test_the_shipped_schema_matches_the_live_parsers() -> None:
    # a fresh interpreter: classes that tests define would otherwise appear among the help's known subclasses
    result = subprocess.run([sys.executable, "-m", "fl_lightning.cli_schema", "--check"], capture_output=True,
                            text=True, cwd=ROOT, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr


def _console(*args: str) -> subprocess.CompletedProcess:
    code = ("import sys\nfrom fl_lightning.cli import main\nsys.argv = ['fl-lightning', *sys.argv[1:]]\n"
            "try:\n    main()\nfinally:\n    print('heavy loaded:', sorted({'torch', 'lightning'} & set(sys.modules)))")
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=ROOT, timeout=300)


def test_fit_help_and_a_key_typo_need_neither_torch_nor_lightning() -> None:
    schema = load_schema()
    assert schema is not None
    result = _console("fit", "--help")
    assert result.returncode == 0 and result.stdout.startswith(schema["commands"]["fit"]["help"])
    assert "--data.num_clients" in result.stdout and "heavy loaded: []" in result.stdout
    result = _console("fit", "--config", "quickstart", "--trainer.roundz", "3")
    assert result.returncode == 2 and "heavy loaded: []" in result.stdout
    assert "unknown key 'trainer.roundz' (did you mean 'trainer.rounds'?)" in result.stderr


def test_the_fast_check_refuses_only_what_the_live_parser_refuses(parser) -> None:
    fit = load_schema()["commands"]["fit"]
    for path in sorted(shipped.RECIPE_DIR.glob("*.yaml")):  # every shipped recipe passes it
        assert [k for k in config_keys(yaml.safe_load(path.read_text()), fit) if unknown_key(k, fit)] == [], path
    for key, value in [("model.init_args.lr", "0.1"), ("trainer.aggregator.init_args.f", "1"),
                       ("data.num_clients", "5"), ("trainer.attacks+", "LabelFlip")]:
        assert not unknown_key(key.rstrip("+"), fit)
    assert not unknown_key("data.num_client", fit)  # argparse takes a unique prefix (deprecated in jsonargparse)
    for key in ("trainer.roundz", "data.num_clientz", "modle"):
        assert unknown_key(key, fit)
        with pytest.raises(Exception):
            parser.parse_args(["--config", QUICKSTART, f"--{key}", "1"])


def test_trainer_aggregator_beside_aggregators_on_the_command_line_is_an_error(tmp_path, capsys) -> None:
    single = tmp_path / "single.yaml"
    single.write_text(yaml.safe_dump({k: v for k, v in yaml.safe_load(Path(QUICKSTART).read_text()).items()
                                      if k != "aggregators"}))
    err = _error(["fit", "--config", str(single), "--aggregators", "[FedAvg, Krum]", "--trainer.aggregator", "Krum"],
                 capsys)
    assert "would be ignored" in err and "(FedAvg, Krum)" in err
