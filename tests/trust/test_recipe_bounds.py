"""Issue 20 item 2 from the user's side: a recipe cannot exhaust the machine; ``rounds`` costs nothing in setup."""
from __future__ import annotations

import pytest

from fl_lightning.callbacks import FederatedCallback
from fl_lightning.recipe_bounds import MAX_DEPTH, RecipeTooLarge, check_bounds, safe_load
from tests.helpers import TinyNet, make_dm, make_trainer
from tests.trust.cli_run import error_lines, run_cli, run_cli_peak_memory


def alias_bomb(levels: int = 9) -> str:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, levels + 1)]
    return "trainer:\n  rounds: 1\nprofiles:\n  " + "\n  ".join(lines) + "\n"


RECIPES = {
    "alias bomb": (lambda: alias_bomb(), "expands to more than 100000 values (aliases counted as expanded"),
    "3000 levels": (lambda: "trainer: {rounds: 1}\nprofiles: " + "[" * 3000 + "]" * 3000 + "\n",
                    f"nested more than {MAX_DEPTH} levels deep"),
    "50 MB list": (lambda: "trainer: {rounds: 1}\nprofiles:\n  x: [" + "1," * 25_000_000 + "1]\n",
                   "bytes; a recipe holds at most"),
}


@pytest.mark.parametrize("command", ["fit", "sweep"])
@pytest.mark.parametrize("case", sorted(RECIPES))
def test_an_oversized_recipe_is_one_line_exit_2(tmp_path, command, case):
    make, message = RECIPES[case]
    path = tmp_path / "recipe.yaml"
    path.write_text(make())
    result, peak_kib = run_cli_peak_memory(tmp_path, command, "--config", str(path), timeout=120)
    assert result.returncode == 2, result.stderr[-2000:]
    (line,) = error_lines(result)
    assert line.startswith(f"fl-lightning {command}: error: --config {path}: ") and message in line
    assert peak_kib < 1024 * 1024  # this run's own peak; the break took it past 3 GiB


def test_a_bomb_in_a_command_line_value_is_refused(tmp_path):
    bomb = "[" + ", ".join(["&a0 [x, x, x, x, x, x, x, x, x]"] + [f"&a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]"
                                                                for i in range(1, 10)]) + "]"
    result = run_cli("fit", "--config", "recipes/quickstart.yaml", "--description", bomb, timeout=120)
    assert result.returncode == 2
    (line,) = error_lines(result)
    assert "a command-line value: expands to more than 100000 values" in line


def test_the_parser_checks_files_a_recipe_names(tmp_path):
    from fl_lightning.fit_config import fit_parser

    parser = fit_parser()
    parser.exit_on_error = False
    (tmp_path / "bomb.yaml").write_text(alias_bomb())
    with pytest.raises(RecipeTooLarge, match="expands to more than"):
        parser.parse_args(["--config", str(tmp_path / "bomb.yaml")])


@pytest.mark.parametrize("text", ["a: &x [1, 2]\nb: *x\n", "[" * 10 + "]" * 10, "{a: {b: {c: [1, 2, 3]}}}"])
def test_ordinary_yaml_loads_as_before(text):
    import yaml

    assert safe_load(text, "t") == yaml.safe_load(text)


def test_aliases_count_their_depth():
    inner = "a: &d " + "[" * 30 + "]" * 30 + "\n"
    check_bounds(inner, "t")
    with pytest.raises(RecipeTooLarge, match="levels deep once its aliases are expanded"):
        check_bounds(inner + "b: " + "[" * 25 + "*d" + "]" * 25 + "\n", "t")


class _StopAfterFirstRound(FederatedCallback):
    def on_round_end(self, trainer, record) -> None:
        trainer.should_stop = True


def test_a_huge_rounds_count_costs_nothing_in_setup(tmp_path, one_thread):
    from fl_lightning.attacks import ModelReplacement

    trainer = make_trainer(tmp_path, rounds=10**12, clients_per_round=2, checkpoint_every=0,
                           callbacks=[_StopAfterFirstRound()],
                           attacks=[ModelReplacement(clients=1, rounds=[0, 10**11])])
    trainer.fit(TinyNet(), make_dm())  # before the fix, setup visited all 10**12 rounds and never returned
    assert len(trainer.history) == 1 and trainer._joining_rounds() == [0, 10**11, 1]
