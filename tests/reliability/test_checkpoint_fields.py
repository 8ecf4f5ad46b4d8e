"""A checkpoint with invalid values is refused naming the file and the field (never a bare KeyError or
TypeError, never resumed into nonsense); a resume with changed settings warns, listing what differs."""
from __future__ import annotations

import pytest
import torch
from tests.helpers import TinyNet, make_dm, make_trainer

from fl_lightning import checkpoint as ckpt
from fl_lightning.aggregators import FoolsGold, TrimmedMean
from fl_lightning.attacks import LabelFlip
from tests.reliability.faults import KillAfterRound


def _saved_run(root, rounds=2, **kwargs):
    trainer = make_trainer(root, rounds=rounds, **kwargs)
    trainer.fit(TinyNet(batchnorm=True), make_dm())
    return trainer.checkpoint_path


def _tampered(path, edit):
    state = torch.load(path, weights_only=True)
    edit(state)
    out = path.parent.parent / "tampered.ckpt"
    torch.save(state, out)
    return out


def _set(key, value):
    return lambda state: state.__setitem__(key, value)


def _nan_first(key):
    def edit(state):
        state[key][0] = float("nan")
    return edit


@pytest.mark.parametrize("edit,field,problem", [
    (_set("next_round", -1), "next_round", r"must be in 0\.\.2 .*got -1"),
    (_set("next_round", 7), "next_round", r"must be in 0\.\.2 .*got 7"),
    (_set("next_round", "1"), "next_round", "must be an int, got str"),
    (_set("next_round", True), "next_round", "must be an int, got bool"),
    (lambda s: s.pop("next_round"), "next_round", "is missing"),
    (lambda s: s.pop("global_params"), "global_params", "is missing"),
    (lambda s: s.pop("history"), "history", "is missing"),
    (_nan_first("global_params"), "global_params", "holds NaN or Inf"),
    (_nan_first("global_buffers"), "global_buffers", "holds NaN or Inf"),
    (_set("global_params", [0.0, 1.0]), "global_params", "must be a floating-point tensor, got list"),
    (_set("global_params", torch.zeros(5)), "global_params", r"must have shape \(\d+,\), got \(5,\)"),
    (_set("history", {"0": 1}), "history", "must be a list, got dict"),
    (_set("aggregator_state", [1, 2]), "aggregator_state", "must be a dict, got list"),
    (_set("int_buffers", {}), "int_buffers.net.2.num_batches_tracked", "is missing or not a tensor"),
    (lambda s: s["history"].pop(), "history", "has 1 rounds but next_round is 2"),
])
def test_invalid_checkpoint_values_are_refused_naming_file_and_field(tmp_path, edit, field, problem):
    path = _tampered(_saved_run(tmp_path / "saved"), edit)
    trainer = make_trainer(tmp_path / "other", rounds=2)
    module = TinyNet(batchnorm=True)
    before = {k: v.clone() for k, v in module.state_dict().items()}
    with pytest.raises(ValueError, match=rf"checkpoint {path}: field '{field}' {problem}"):
        trainer.fit(module, make_dm(), ckpt_path=path)
    assert trainer.history == []
    assert all(torch.equal(before[k], v) for k, v in module.state_dict().items()), "nothing may be loaded"


def test_non_finite_aggregator_memory_in_a_checkpoint_is_refused(tmp_path):
    path = _saved_run(tmp_path / "saved", aggregator=FoolsGold())
    tampered = _tampered(path, lambda s: s["aggregator_state"]["memory"].fill_(float("inf")))
    with pytest.raises(ValueError, match=rf"{tampered}: field 'aggregator_state.memory' holds NaN or Inf"):
        make_trainer(tmp_path / "other", aggregator=FoolsGold()).fit(TinyNet(batchnorm=True), make_dm(),
                                                                      ckpt_path=tampered)


def test_a_part_that_cannot_load_its_state_names_the_field(tmp_path):
    path = _saved_run(tmp_path / "saved", aggregator=FoolsGold())
    tampered = _tampered(path, _set("aggregator_state", {"client_ids": torch.tensor([0, 1]),
                                                         "memory": torch.zeros(3, 2)}))
    with pytest.raises(ValueError, match=rf"{tampered}: field 'aggregator_state' cannot be restored"):
        make_trainer(tmp_path / "other", aggregator=FoolsGold()).fit(TinyNet(batchnorm=True), make_dm(),
                                                                      ckpt_path=tampered)


def test_checkpoint_records_the_runs_hyper_parameters(tmp_path):
    path = _saved_run(tmp_path, aggregator=TrimmedMean(beta=0.1))
    hparams = ckpt.load(path)["hparams"]
    assert hparams["aggregator"].startswith("TrimmedMean(beta=0.1") and hparams["model/lr"] == 0.1
    assert hparams["rounds"] == 2


@pytest.mark.parametrize("change,expected", [
    ({"aggregator": TrimmedMean(beta=0.2)}, r"aggregator: 'TrimmedMean\(beta=0.1[,)].*' -> 'TrimmedMean\(beta=0.2[,)]"),
    ({"attacks": [LabelFlip(source=1, target=2, clients=1)]}, r"attack/LabelFlip/source: added \(1\)"),
    ({"module": {"lr": 0.05}}, r"model/lr: 0.1 -> 0.05"),
])
def test_a_resume_with_changed_settings_warns_listing_them(tmp_path, change, expected):
    make = dict(rounds=3, aggregator=TrimmedMean(beta=0.1))
    trainer = make_trainer(tmp_path, **make)
    trainer.callbacks.append(KillAfterRound(1))  # killed after round 1 logged: the checkpoint says next_round 1
    with pytest.raises(KeyboardInterrupt):
        trainer.fit(TinyNet(), make_dm())
    trainer = make_trainer(tmp_path, **{**make, **{k: v for k, v in change.items() if k != "module"}})
    with pytest.warns(UserWarning, match=r"resuming .*last\.ckpt with settings that differ from the "
                                         r"checkpoint's run: .*" + expected):
        trainer.fit(TinyNet(**change.get("module", {})), make_dm(), ckpt_path="last")
    assert [r.round for r in trainer.history] == [0, 1, 2]


def test_an_unchanged_resume_does_not_warn(tmp_path, recwarn):
    with pytest.raises(KeyboardInterrupt):
        make_trainer(tmp_path, rounds=3, callbacks=[KillAfterRound(1)]).fit(TinyNet(), make_dm())
    make_trainer(tmp_path, rounds=3).fit(TinyNet(), make_dm(), ckpt_path="last")
    assert not [w for w in recwarn if "differ" in str(w.message)]
