"""``fl-lightning`` as a newcomer meets it: one clean line and exit 2 for a mistake, checked before torch loads."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from fl_lightning.cli import main

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = ROOT / "recipes" / "quickstart.yaml"


def _console(*args: str) -> subprocess.CompletedProcess:
    """Run the console entry point in a fresh interpreter; report whether torch was imported."""
    code = ("import sys\nfrom fl_lightning.cli import main\nsys.argv = ['fl-lightning', *sys.argv[1:]]\n"
            "try:\n    main()\nfinally:\n    print('torch loaded:', 'torch' in sys.modules)")
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=300)


def test_a_missing_config_is_one_line_before_torch_loads(tmp_path):
    result = _console("fit", "--config", str(tmp_path / "nope.yaml"))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"fl-lightning fit: error: --config {tmp_path / 'nope.yaml'}: no such file or shipped recipe; pass a path "
        "or a name that `fl-lightning recipes` lists, such as --config quickstart"]
    assert "torch loaded: False" in result.stdout


def test_broken_yaml_names_the_line_before_torch_loads(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("trainer:\n  rounds: 3\n model: x\n")
    result = _console("sweep", "--config", str(path))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "not valid YAML (line 3" in lines[0] and str(path) in lines[0]
    assert "torch loaded: False" in result.stdout


@pytest.mark.parametrize("args, expected", [
    (["--trainer.roundz", "3"], "unknown key 'trainer.roundz' (did you mean 'trainer.rounds'?)"),
    (["--aggregators", "null", "--trainer.aggregator", "Krumm"], "trainer.aggregator: 'Krumm' is not a class it accepts (did you mean 'Krum'?)"),
    (["--trainer.rounds", "abc"], 'Parser key "trainer.rounds"'),
])
def test_command_line_mistakes_are_one_line_with_exit_2(args, expected, capsys):
    with pytest.raises(SystemExit) as info:
        main(["fit", "--config", str(QUICKSTART), *args])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fl-lightning fit: error: ") and expected in err[0]


def test_an_unknown_yaml_key_suggests_the_closest(tmp_path, capsys):
    recipe = yaml.safe_load(QUICKSTART.read_text())
    recipe["trainer"]["rouns"] = recipe["trainer"].pop("rounds", 3)
    path = tmp_path / "typo.yaml"
    path.write_text(yaml.safe_dump(recipe))
    with pytest.raises(SystemExit) as info:
        main(["fit", "--config", str(path)])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "unknown key 'trainer.rouns'" in err[0] and "(did you mean 'trainer.rounds'?)" in err[0]


def test_an_unknown_command_suggests_the_closest(capsys):
    with pytest.raises(SystemExit) as info:
        main(["fitt"])
    assert info.value.code == 2
    assert "unknown command 'fitt' (did you mean 'fit'?)" in capsys.readouterr().err


LABEL_FLIP_THEN_BACKDOOR = """
name: swap
trainer:
  rounds: 1
  attacks:
    - class_path: LabelFlip
      init_args: {source: 1, target: 2, clients: 1, lr: 0.25}
model:
  class_path: tests.helpers.TinyNet
data:
  dataset:
    class_path: tests.helpers.Blobs
  num_clients: 4
"""


def test_replacing_an_attack_class_warns_about_carried_init_args(tmp_path, monkeypatch):
    from fl_lightning import cli

    path = tmp_path / "swap.yaml"
    path.write_text(LABEL_FLIP_THEN_BACKDOOR)
    ran = []
    monkeypatch.setattr("fl_lightning.fit_config.run_fit", lambda cfg, parser: ran.append(cfg))
    with pytest.warns(UserWarning, match=r"trainer.attacks.0: PixelBackdoor replaced LabelFlip and kept its "
                                         r"init_args lr: 0.25"):
        cli.main(["fit", "--config", str(path), "--trainer.attacks", "[{class_path: PixelBackdoor, "
                  "init_args: {target: 1}}]"])
    assert ran[0].trainer.attacks[0].init_args.lr == 0.25  # what jsonargparse does, and what the warning names


def test_an_attack_override_that_sets_the_value_does_not_warn(tmp_path, monkeypatch, recwarn):
    from fl_lightning import cli

    path = tmp_path / "swap.yaml"
    path.write_text(LABEL_FLIP_THEN_BACKDOOR)
    monkeypatch.setattr("fl_lightning.fit_config.run_fit", lambda cfg, parser: None)
    cli.main(["fit", "--config", str(path), "--trainer.attacks", "[{class_path: PixelBackdoor, "
              "init_args: {target: 1, lr: 0.25}}]"])
    assert not [w for w in recwarn if "replaced LabelFlip" in str(w.message)]
