"""``fl-lightning fit``: a tiny recipe runs and logs to SAVE_DIR/NAME/AGGREGATOR; ``--print_config`` works."""
from __future__ import annotations

import pytest
import yaml
from tests.helpers import fedavg

from fl_lightning.cli import main


def _recipe(tmp_path):
    aggregator = type(fedavg())
    config = {
        "name": "tiny",
        "save_dir": str(tmp_path / "logs"),
        "trainer": {"rounds": 3, "local_epochs": 1, "batch_size": 16, "max_batches_per_epoch": 2,
                    "enable_progress_bar": False,
                    "aggregator": {"class_path": f"{aggregator.__module__}.{aggregator.__qualname__}"},
                    "attacks": [{"class_path": "fl_lightning.attacks.LabelFlip",
                                 "init_args": {"source": 1, "target": 2, "clients": 1, "extra_epochs": 1}}]},
        "model": {"class_path": "tests.helpers.TinyNet", "init_args": {"hidden": 8}},
        "data": {"dataset": {"class_path": "tests.helpers.Blobs"}, "num_clients": 3},
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    return path, aggregator.__name__


def test_fit_runs_a_recipe_and_logs_per_aggregator(tmp_path, capsys):
    path, aggregator = _recipe(tmp_path)
    main(["fit", "--config", str(path), "--trainer.rounds", "1"])
    run_dir = tmp_path / "logs" / "tiny" / aggregator
    assert run_dir.is_dir(), f"expected logs/NAME/AGGREGATOR; got {sorted(p.name for p in (tmp_path / 'logs').rglob('*'))}"
    assert list(run_dir.glob("events.out.tfevents.*"))
    saved = yaml.safe_load((run_dir / "hparams.yaml").read_text())
    assert saved["rounds"] == 1  # the command-line override won over the YAML
    assert (run_dir / "checkpoints" / "last.ckpt").is_file()
    assert "tiny" in capsys.readouterr().out  # the summary table


def test_several_aggregators_each_get_their_own_run(tmp_path):
    path, _ = _recipe(tmp_path)
    main(["fit", "--config", str(path), "--trainer.rounds", "1", "--aggregators",
          '[{"class_path": "fl_lightning.aggregators.FedAvg"}, '
          '{"class_path": "fl_lightning.aggregators.ResidualReweight", "init_args": {"lambda_": 2.0}}]'])
    runs = tmp_path / "logs" / "tiny"
    assert sorted(p.name for p in runs.iterdir()) == ["FedAvg", "ResidualReweight"]
    for run in runs.iterdir():
        assert list(run.glob("events.out.tfevents.*")) and (run / "checkpoints" / "last.ckpt").is_file()
    rr = yaml.safe_load((runs / "ResidualReweight" / "hparams.yaml").read_text())
    fa = yaml.safe_load((runs / "FedAvg" / "hparams.yaml").read_text())
    assert rr["aggregator"].startswith("ResidualReweight(") and fa["aggregator"].startswith("FedAvg(")
    # same seed, partition and attackers for every aggregator
    for key in ("data/fingerprint", "attack/LabelFlip/attacker_ids", "seed"):
        assert rr[key] == fa[key], key


def test_print_config_prints_the_resolved_yaml(tmp_path, capsys):
    path, _ = _recipe(tmp_path)
    with pytest.raises(SystemExit) as info:
        main(["fit", "--config", str(path), "--trainer.rounds", "1", "--print_config"])
    assert info.value.code in (0, None)
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["trainer"]["rounds"] == 1
    assert printed["model"]["class_path"] == "tests.helpers.TinyNet"
    assert printed["trainer"]["seed"] == 0 and printed["data"]["num_clients"] == 3
    assert not (tmp_path / "logs").exists(), "--print_config must not train"


def test_two_aggregators_of_one_class_get_their_own_runs_and_rows(tmp_path, capsys):
    path, _ = _recipe(tmp_path)
    main(["fit", "--config", str(path), "--trainer.rounds", "1", "--aggregators",
          '[{"class_path": "TrimmedMean", "init_args": {"beta": 0.1}}, '
          '{"class_path": "TrimmedMean", "init_args": {"beta": 0.2}}, {"class_path": "FedAvg"}]'])
    runs = tmp_path / "logs" / "tiny"
    assert sorted(p.name for p in runs.iterdir()) == ["FedAvg", "TrimmedMean-beta0.1", "TrimmedMean-beta0.2"]
    for name, beta in (("TrimmedMean-beta0.1", 0.1), ("TrimmedMean-beta0.2", 0.2)):
        saved = yaml.safe_load((runs / name / "hparams.yaml").read_text())
        assert f"beta={beta}" in saved["aggregator"]
        assert (runs / name / "checkpoints" / "last.ckpt").is_file()
    table = capsys.readouterr().out
    rows = [line for line in table.splitlines() if "TrimmedMean-beta" in line]
    assert len(rows) == 2 and "TrimmedMean-beta0.1" in rows[0] and "TrimmedMean-beta0.2" in rows[1]


def test_run_names_tell_entries_of_one_class_apart():
    from jsonargparse import Namespace

    from fl_lightning.fit_config import run_names

    same = [Namespace(class_path="a.Krum", init_args=Namespace(f=1, m=None)),
            Namespace(class_path="a.Krum", init_args=Namespace(f=2, m=None)),
            Namespace(class_path="a.FedAvg", init_args=Namespace(weighted=True)),
            Namespace(class_path="a.FedAvg", init_args=Namespace(weighted=True))]
    assert run_names(same) == ["Krum-f1", "Krum-f2", "FedAvg", "FedAvg-2"]
