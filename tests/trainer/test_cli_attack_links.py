"""A YAML recipe can link attacks by name: ``of: PixelBackdoor`` stays a name, resolved at fit() start."""
from __future__ import annotations

from fl_lightning.attacks import ModelReplacement, PixelBackdoor
from fl_lightning.fit_config import fit_one, fit_parser

RECIPE = """
name: linked
trainer:
  rounds: 2
  local_epochs: 1
  batch_size: 16
  enable_progress_bar: false
  attacks:
    - class_path: PixelBackdoor
      init_args: {target: 1, clients: 1, size: 2}
    - class_path: ModelReplacement
      init_args: {scale: 10.0, rounds: [1], of: PixelBackdoor}
model:
  class_path: tests.helpers.TinyNet
data:
  dataset:
    class_path: tests.helpers.Blobs
  num_clients: 4
"""


def test_of_names_an_earlier_attack_in_yaml_and_shares_its_clients(tmp_path):
    recipe = tmp_path / "linked.yaml"
    recipe.write_text(RECIPE)
    parser = fit_parser()
    cfg = parser.parse_args(["--config", str(recipe), "--save_dir", str(tmp_path / "logs")])
    assert cfg.trainer.attacks[1].init_args.of == "PixelBackdoor"
    objects = parser.instantiate(cfg)
    backdoor, replacement = objects.trainer.attacks
    assert isinstance(backdoor, PixelBackdoor) and isinstance(replacement, ModelReplacement)
    assert replacement.of == "PixelBackdoor"
    trainer = fit_one(cfg, parser, quiet=True)
    backdoor, replacement = trainer.attacks
    assert replacement.attacker_ids == backdoor.attacker_ids and len(backdoor.attacker_ids) == 1
