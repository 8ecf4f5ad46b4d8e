"""Mistakes in a run's set-up fail at fit() start, before any client trains, with a message naming them;
YAML mistakes point at the key."""
from __future__ import annotations

import pytest
import torch
import yaml
from tests.helpers import Blobs, TinyNet, make_dm, make_trainer

from fl_lightning.aggregators import ResidualReweight
from fl_lightning.attacks import LabelFlip
from fl_lightning.cli import main
from fl_lightning.data.base import TensorData
from fl_lightning.engines import SequentialEngine


class NoTraining(SequentialEngine):
    """Fails the test if any client is trained."""

    def train_round(self, *args, **kwargs):
        raise AssertionError("a client was trained before the set-up was validated")


class WithoutClass3(Blobs):
    """Four declared classes, but no sample of class 3 (a source class the data lacks)."""

    def load(self):
        train, test = super().load()
        return (TensorData(train.inputs, torch.where(train.targets == 3, 0, train.targets)),
                TensorData(test.inputs, torch.where(test.targets == 3, 0, test.targets)))


def _fit_fails(tmp_path, match, dm=None, **kwargs):
    trainer = make_trainer(tmp_path, rounds=2, engine=NoTraining(), logger=None, **kwargs)
    with pytest.raises(ValueError, match=match):
        trainer.fit(TinyNet(), dm or make_dm(num_clients=4))
    assert trainer.history == [] and not list(tmp_path.rglob("*.ckpt")), "nothing may run or be saved"
    assert not list(tmp_path.rglob("events.out.tfevents.*")), "nothing may be logged"


@pytest.mark.parametrize("field,value", [("rounds", -3), ("clients_per_round", 0), ("local_epochs", -1)])
def test_bad_trainer_settings_fail_at_construction(tmp_path, field, value):
    with pytest.raises(ValueError, match=f"FederatedTrainer: {field} must be an int >= .*got {value}"):
        make_trainer(tmp_path, **{field: value})


@pytest.mark.parametrize("settings,error,match", [
    ({"seed": 2**70}, ValueError, r"FederatedTrainer: seed must be an int in \[0, \d+\], got 1180591620717411303424"),
    ({"seed": -1}, ValueError, r"FederatedTrainer: seed must be an int in"),
    ({"seed": "abc"}, TypeError, r"FederatedTrainer: seed must be an int .*got 'abc'"),
    ({"seed": 1.5}, TypeError, r"FederatedTrainer: seed must be an int"),
    ({"callbacks": [object()]}, TypeError, r"FederatedTrainer: callbacks must be .*FederatedCallback.*, got object"),
    ({"attacks": [object()]}, TypeError, r"FederatedTrainer: attacks must be an? Attack, got object"),
    ({"aggregator": "FedAvg()"}, TypeError, r"FederatedTrainer: aggregator must be an? Aggregator, got str"),
    ({"max_failed_rounds": 0}, ValueError, r"FederatedTrainer: max_failed_rounds must be an int >= 1, got 0"),
    ({"checkpoint_every": -1}, ValueError, r"FederatedTrainer: checkpoint_every must be an int >= 0, got -1"),
])
def test_trainer_settings_name_themselves_at_construction(tmp_path, settings, error, match):
    with pytest.raises(error, match=match):
        make_trainer(tmp_path, **settings)


def test_label_flip_source_class_outside_the_dataset(tmp_path):
    _fit_fails(tmp_path, "LabelFlip: source class 7 does not exist; the dataset has classes 0..3",
               attacks=[LabelFlip(source=7, target=1, clients=1)])


def test_label_flip_target_class_outside_the_dataset(tmp_path):
    # a negative class is refused when the attack is built; one beyond the data's classes at fit() start
    with pytest.raises(ValueError, match="LabelFlip: target must be an int >= 0, got -1"):
        LabelFlip(source=1, target=-1)
    _fit_fails(tmp_path, "LabelFlip: target class 99 does not exist", attacks=[LabelFlip(source=1, target=99)])


def test_label_flip_source_class_no_client_holds(tmp_path):
    _fit_fails(tmp_path, r"LabelFlip: asked for 1 attackers but only 0 of the 4 clients are eligible",
               dm=make_dm(num_clients=4, dataset=WithoutClass3()), attacks=[LabelFlip(source=3, target=1, clients=1)])


def test_more_attackers_than_clients(tmp_path):
    _fit_fails(tmp_path, r"LabelFlip: asked for 10 attackers but only 4 of the 4 clients",
               attacks=[LabelFlip(source=None, clients=10)])


def test_attacker_ids_that_do_not_exist(tmp_path):
    _fit_fails(tmp_path, r"LabelFlip: client ids \[9\] do not exist \(clients are 0..3\)",
               attacks=[LabelFlip(source=1, target=2, clients=[0, 9])])


def test_attack_round_outside_the_run(tmp_path):
    _fit_fails(tmp_path, r"LabelFlip: rounds \[5\] are outside the run's rounds 0..1",
               attacks=[LabelFlip(source=1, target=2, clients=1, rounds=[0, 5])])


def test_aggregator_needing_more_clients_than_a_round_has(tmp_path):
    _fit_fails(tmp_path, "ResidualReweight needs at least 3 clients per round, got 2",
               clients_per_round=2, aggregator=ResidualReweight())


def _write(tmp_path, trainer_extra=None):
    config = {"trainer": {"rounds": 1, "enable_progress_bar": False, "max_batches_per_epoch": 1,
                          "aggregator": {"class_path": "fl_lightning.aggregators.FedAvg"}, **(trainer_extra or {})},
              "model": {"class_path": "tests.helpers.TinyNet"}, "save_dir": str(tmp_path / "logs"),
              "data": {"dataset": {"class_path": "tests.helpers.Blobs"}, "num_clients": 3}}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize("extra_args,trainer_extra,key", [
    (["--trainer.rounds", "abc"], None, "trainer.rounds"),
    ([], {"roundz": 3}, "trainer.roundz"),
    ([], {"attacks": [{"class_path": "fl_lightning.attacks.LabelFlip", "init_args": {"sourse": 1}}]}, "sourse"),
    ([], {"engine": 3.5}, "trainer.engine"),
])
def test_yaml_and_command_line_errors_name_the_key(tmp_path, capsys, extra_args, trainer_extra, key):
    path = _write(tmp_path, trainer_extra)
    with pytest.raises(SystemExit) as info:
        main(["fit", "--config", str(path), *extra_args])
    assert info.value.code not in (0, None)
    assert key in capsys.readouterr().err
    assert not (tmp_path / "logs").exists()


def test_yaml_value_out_of_range_names_the_setting(tmp_path):
    path = _write(tmp_path, {"rounds": -1})
    with pytest.raises(ValueError, match="rounds must be an int >= 1, got -1"):
        main(["fit", "--config", str(path)])
