"""What an installed package offers without a clone: recipes by name, the Flower app, the version, the licence."""
from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

import fl_lightning
from fl_lightning import shipped
from fl_lightning.cli import main, resolve_recipe_names

ROOT = Path(__file__).resolve().parents[2]


def test_every_recipe_lives_in_the_package_and_the_clone_path_still_reads_them() -> None:
    names = shipped.recipe_names()
    assert "quickstart" in names and "robustness_matrix" in names
    assert shipped.RECIPE_DIR.is_relative_to(Path(fl_lightning.__file__).resolve().parent)
    assert sorted(p.stem for p in (ROOT / "recipes").glob("*.yaml")) == names  # README paths: recipes/NAME.yaml


def test_a_name_resolves_to_the_shipped_file_but_an_existing_path_wins(tmp_path, monkeypatch) -> None:
    shipped_path = str(shipped.RECIPE_DIR / "quickstart.yaml")
    assert resolve_recipe_names(["--config", "quickstart"]) == ["--config", shipped_path]
    assert resolve_recipe_names(["--config=quickstart.yaml", "--x", "quickstart"]) == [f"--config={shipped_path}",
                                                                                       "--x", "quickstart"]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "quickstart").write_text("name: mine\n")  # a file of that name in the folder is what the user means
    assert resolve_recipe_names(["--config", "quickstart"]) == ["--config", "quickstart"]
    assert shipped.recipe_path("../cli.py") is None and shipped.recipe_path("nope") is None


def test_recipes_lists_one_line_each_and_show_prints_the_yaml(capsys) -> None:
    main(["recipes"])
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in lines] == shipped.recipe_names()
    assert any(re.match(r"quickstart +MNIST5k label flipping", line) for line in lines)
    main(["recipes", "show", "quickstart"])
    assert yaml.safe_load(capsys.readouterr().out) == yaml.safe_load((shipped.RECIPE_DIR / "quickstart.yaml").read_text())


def test_a_reader_that_leaves_early_ends_the_listing_quietly() -> None:
    """``fl-lightning recipes | head -1``: no traceback, no error line, the shell's SIGPIPE status."""
    process = subprocess.Popen([sys.executable, "-c", "from fl_lightning.cli import main; main()", "recipes"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, bufsize=0)
    assert process.stdout is not None and process.stderr is not None
    process.stdout.close()                                   # the reader is gone before the first line
    assert process.wait(timeout=120) == 141
    assert process.stderr.read().decode() == ""


@pytest.mark.parametrize("args, expected", [
    (["recipes", "show", "quickstrat"], "no shipped recipe 'quickstrat' (did you mean 'quickstart'?)"),
    (["recipes", "list"], "unknown argument 'list'"),
    (["fit", "--config", "quickstrat"], "no such file or shipped recipe (did you mean 'quickstart'?)"),
])
def test_recipe_mistakes_are_one_line(args, expected, capsys) -> None:
    with pytest.raises(SystemExit) as info:
        main(args)
    assert info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and expected in err[0]


def test_the_flower_app_ships_and_copies_out(tmp_path, capsys) -> None:
    main(["flower-app", str(tmp_path / "app")])
    app = tmp_path / "app"
    config = tomllib.loads((app / "pyproject.toml").read_text())
    server, client = (config["tool"]["flwr"]["app"]["components"][k].split(":")[0] for k in ("serverapp", "clientapp"))
    for module in (server, client):
        assert (app / (module.replace(".", "/") + ".py")).is_file()
    with pytest.raises(FileExistsError):
        main(["flower-app", str(app)])
    packaged = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]
    assert "integrations/flower_app/robust_demo/*.py" in packaged["fl_lightning"]


def test_the_version_is_written_once_and_printed() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "fl_lightning.version.__version__"}
    out = subprocess.run([sys.executable, "-m", "fl_lightning.cli", "--version"], capture_output=True, text=True,
                         cwd=ROOT, check=True, timeout=120).stdout
    assert out.strip() == f"fl-lightning {fl_lightning.__version__}"


def test_the_licence_file_is_the_apache_text_the_metadata_names() -> None:
    text = (ROOT / "LICENSE").read_text()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["license"] == {"text": "Apache-2.0"}
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text and len(text) > 10_000


def test_the_changelog_keeps_a_changelog_form() -> None:
    text = (ROOT / "CHANGELOG.md").read_text()
    assert "## [Unreleased]" in text
    assert re.search(rf"^## \[{re.escape(fl_lightning.__version__)}\] - \d{{4}}-\d{{2}}-\d{{2}}$", text, re.M)
