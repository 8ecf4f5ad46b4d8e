"""Issue 20 item 3 from the user's side: a run writes only inside its save folder."""
from __future__ import annotations

import copy

import pytest

from fl_lightning.run_paths import check_inside, check_name, check_no_symlinks
from tests.trust.cli_run import TINY, error_lines, run_cli, write_recipe


def _files(folder):
    return sorted(p.relative_to(folder) for p in folder.rglob("*")) if folder.exists() else []


@pytest.mark.parametrize("how", ["name: ../escaped", "name: absolute", "--name ../../x",
                                 "logger version", "sweep --name"])
def test_a_name_that_leaves_save_dir_is_one_line_and_writes_nothing(tmp_path, how):
    save_dir, outside = tmp_path / "logs", tmp_path / "outside"
    recipe = {**copy.deepcopy(TINY), "save_dir": str(save_dir)}
    args = []
    if how == "name: ../escaped":
        recipe["name"] = "../escaped"
    elif how == "name: absolute":
        recipe["name"] = str(outside / "abs")
    elif how == "--name ../../x":
        args = ["--name", "../../x"]
    elif how == "logger version":
        recipe["trainer"]["logger"] = {"class_path": "CSVLogger", "init_args": {"version": "../../outside/v"}}
    command = "fit"
    if how == "sweep --name":
        command, args = "sweep", ["--name", "../outside"]
    path = write_recipe(tmp_path, recipe)
    result = run_cli(command, "--config", str(path), *args)
    assert result.returncode == 2, result.stderr[-3000:]
    (line,) = error_lines(result)
    assert line.startswith(f"fl-lightning {command}: error: ") and ("leaves the save folder" in line
                                                                     or "outside its save folder" in line)
    assert _files(tmp_path) == [path.relative_to(tmp_path)]  # nothing written anywhere, inside or out


def test_a_symlinked_run_folder_is_refused_unless_the_user_opts_in(tmp_path):
    save_dir, elsewhere = tmp_path / "logs", tmp_path / "elsewhere"
    save_dir.mkdir()
    elsewhere.mkdir()
    (save_dir / "default").symlink_to(elsewhere)
    path = write_recipe(tmp_path, {**copy.deepcopy(TINY), "save_dir": str(save_dir)})
    refused = run_cli("fit", "--config", str(path))
    assert refused.returncode == 2
    (line,) = error_lines(refused)
    assert f"{save_dir / 'default'} is a symlink (to {elsewhere})" in line and "--follow_symlinks true" in line
    assert _files(elsewhere) == []
    followed = run_cli("fit", "--config", str(path), "--follow_symlinks", "true", "--trainer.rounds", "1")
    assert followed.returncode == 0, followed.stderr[-3000:]
    assert (elsewhere / "run" / "checkpoints" / "last.ckpt").is_file()


@pytest.mark.parametrize("name", ["..", "a/../../b", "/abs", "~/x", "a\\..\\b", "", 3])
def test_bad_names(name):
    with pytest.raises(ValueError, match="leaves the save folder|is not a folder name"):
        check_name(name, "name")


@pytest.mark.parametrize("name", ["mnist", "paper/table4", "a..b", "TrimmedMean-beta0.1"])
def test_good_names(name):
    assert check_name(name, "name") == name


def test_links_deeper_down_are_found_and_save_dir_itself_may_be_one(tmp_path):
    real = tmp_path / "real"
    (real / "n" / "r").mkdir(parents=True)
    (tmp_path / "root").symlink_to(real)  # SAVE_DIR itself: the user's choice
    check_no_symlinks(tmp_path / "root", tmp_path / "root" / "n" / "r" / "checkpoints", "k")
    (real / "n" / "r" / "checkpoints").symlink_to(tmp_path)
    with pytest.raises(ValueError, match="checkpoints is a symlink"):
        check_no_symlinks(tmp_path / "root", tmp_path / "root" / "n" / "r" / "checkpoints", "k")
    check_no_symlinks(tmp_path / "root", tmp_path / "root" / "n" / "r" / "checkpoints", "k", follow=True)
    with pytest.raises(ValueError, match="outside its save folder"):
        check_inside(tmp_path / "root", tmp_path / "root" / ".." / "x", "k")


@pytest.mark.parametrize("filename", ["../../x-{round}", "/tmp/x"])
def test_a_model_checkpoint_filename_cannot_leave_its_folder(filename):
    from fl_lightning.callbacks import ModelCheckpoint

    with pytest.raises(ValueError, match="leaves dirpath"):
        ModelCheckpoint(filename=filename)
