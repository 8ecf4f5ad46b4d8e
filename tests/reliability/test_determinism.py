"""Same seed, same run, bit for bit on CPU; the run records the library versions that produced it."""
from __future__ import annotations

import random

import lightning as L
import numpy as np
import torch
import yaml
from tests.helpers import make_dm, metrics_without_time, resume_scenario

import fl_lightning


def _run(root, global_seed: int | None = None):
    trainer, module, dm = resume_scenario(root)  # the trainer seeds the global generators, then the module is built
    if global_seed is not None:  # what other code leaves in the global generators between set-up and fit
        random.seed(global_seed)
        np.random.seed(global_seed)
        torch.manual_seed(global_seed)
    trainer.fit(module, dm)
    return trainer, module


def test_same_seed_twice_is_bit_identical(tmp_path):
    first, m1 = _run(tmp_path / "a", global_seed=1)
    # the global generators' state at fit() must not matter (the run draws from seed-derived generators)
    second, m2 = _run(tmp_path / "b", global_seed=12345)
    assert metrics_without_time(first.history) == metrics_without_time(second.history)
    assert [r.client_ids for r in first.history] == [r.client_ids for r in second.history]
    assert all(torch.equal(a.client_weights, b.client_weights) for a, b in zip(first.history, second.history))
    for (name, a), (_, b) in zip(m1.state_dict().items(), m2.state_dict().items()):
        assert torch.equal(a, b), name
    assert first.test() == second.test()
    assert first.attacks[0].attacker_ids == second.attacks[0].attacker_ids


def test_partition_does_not_depend_on_global_rng():
    fingerprints = set()
    for state in (0, 1):
        torch.manual_seed(state)
        np.random.seed(state)
        for partition, kwargs in (("iid", {}), ("classes", {"classes_per_client": 2}), ("dirichlet", {})):
            dm = make_dm(num_clients=6, partition=partition, seed=5, **kwargs)
            fingerprints.add((partition, dm.fingerprint))
    assert len(fingerprints) == 3


def test_hparams_record_library_versions(tmp_path):
    trainer, _ = _run(tmp_path)
    hparams = trainer.hparams()
    assert hparams["versions/torch"] == torch.__version__
    assert hparams["versions/lightning"] == L.__version__
    assert hparams["versions/fl_lightning"] == fl_lightning.__version__
    assert hparams["seed"] == 11 and hparams["data/fingerprint"] == trainer.datamodule.fingerprint
    # plain values only: hparams.yaml must be readable without executing Python tags
    assert all(isinstance(v, (int, float, str, bool, type(None))) and type(v) in (int, float, str, bool, type(None))
               for v in hparams.values()), {k: type(v) for k, v in hparams.items()}
    saved = yaml.safe_load((trainer.log_dir / "hparams.yaml").read_text())
    assert saved["versions/torch"] == str(torch.__version__)
