"""``FederatedTrainer``: the round loop and nothing else (training, aggregation, attacks are delegated)."""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import lightning as L
import torch
from lightning.pytorch.loggers import Logger, TensorBoardLogger
from torch import Tensor

from fl_lightning import checkpoint as ckpt
from fl_lightning.aggregators.base import AggregationResult, Aggregator
from fl_lightning.attacks.base import Attack
from fl_lightning.attacks.compose import setup_attacks
from fl_lightning.metrics.detection import DetectionPrecisionRecall
from fl_lightning.callbacks import FederatedCallback
from fl_lightning.context import LocalConfig, RoundContext, SetupContext
from fl_lightning.data.datamodule import FederatedDataModule
from fl_lightning.engines import Engine, get_engine
from fl_lightning.engines.base import ClientOutcome, ClientTask
from fl_lightning.evaluation import evaluate
from fl_lightning.layout import ParamLayout, flatten, load_flat_, module_tensors
from fl_lightning.reporting import RunReporter
from fl_lightning.attacks.plan import AttackPlan
from fl_lightning.seeding import derive_seed, numpy_rng, rng_states, seed_everything, set_rng_states


@dataclass
class RoundRecord:
    """What happened in one round: who took part, who was dropped, the weights and the metrics."""

    round: int
    client_ids: list[int]
    metrics: dict[str, float]
    client_weights: Tensor | None = None
    flagged_ids: list[int] = field(default_factory=list)
    dropped: dict[int, str] = field(default_factory=dict)
    kept_previous_model: bool = False
    diagnostics: dict[str, Any] = field(default_factory=dict)


class FederatedTrainer:
    """Runs federated rounds over a user's ``LightningModule``: select, train, attack, aggregate, evaluate, log.

    Args:
        rounds: number of federated rounds.
        local_epochs: epochs each honest client trains per round (attacks may add more).
        clients_per_round: clients sampled per round with the seed; ``None`` takes every client.
        aggregator: the robust aggregation rule (default :class:`~fl_lightning.aggregators.FedAvg`).
        attacks: attacks applied in list order.
        logger: a Lightning logger; ``None`` logs to TensorBoard under ``default_root_dir``, ``False`` disables logging.
        callbacks: :class:`~fl_lightning.callbacks.FederatedCallback` instances.
        engine: ``"sequential"``, ``"vmap"``, ``"ray"`` or an :class:`~fl_lightning.engines.Engine`.
        seed: the one seed every random choice is derived from.
        enable_progress_bar: show a progress bar over rounds.
        batch_size: local batch size (attacks may override it for their clients).
        max_batches_per_epoch: cap on local batches per epoch (the paper's script: about 30).
        checkpoint_every: save a resumable checkpoint every this many rounds (0: never).
        max_failed_rounds: fail after this many consecutive rounds without enough usable clients.
        default_root_dir: where logs and checkpoints go when no logger says otherwise.
    """

    def __init__(
        self,
        rounds: int = 10,
        local_epochs: int = 1,
        clients_per_round: int | None = None,
        aggregator: Aggregator | None = None,
        attacks: Sequence[Attack] = (),
        logger: Logger | bool | None = None,
        callbacks: Sequence[FederatedCallback] = (),
        engine: str | Engine = "sequential",
        seed: int = 0,
        enable_progress_bar: bool = True,
        batch_size: int = 128,
        max_batches_per_epoch: int | None = None,
        checkpoint_every: int = 1,
        max_failed_rounds: int = 3,
        default_root_dir: str | Path = "logs",
    ) -> None:
        self.rounds = rounds
        self.local_epochs = local_epochs
        self.clients_per_round = clients_per_round
        self.aggregator = aggregator if aggregator is not None else _default_aggregator()
        self.attacks = list(attacks)
        self.callbacks = list(callbacks)
        self.engine = get_engine(engine)
        self.seed = seed
        self.enable_progress_bar = enable_progress_bar
        self.batch_size = batch_size
        self.max_batches_per_epoch = max_batches_per_epoch
        self.checkpoint_every = checkpoint_every
        self.max_failed_rounds = max_failed_rounds
        self.default_root_dir = Path(default_root_dir)
        self._owns_logger = logger is None or logger is True
        self.logger = self._resolve_logger(logger)
        self._validate_scalars()
        self.history: list[RoundRecord] = []
        self.module: L.LightningModule | None = None
        self.datamodule: FederatedDataModule | None = None
        self.current_round = 0
        self._detection = DetectionPrecisionRecall()
        seed_everything(seed)  # so a module built after the trainer gets a seeded init, as with Lightning

    # -- configuration --------------------------------------------------------------------------------
    def _resolve_logger(self, logger: Logger | bool | None) -> Logger | None:
        if logger is False:
            return None
        if logger is None or logger is True:
            return TensorBoardLogger(str(self.default_root_dir), name="federated")
        return logger

    def _validate_scalars(self) -> None:
        checks = [("rounds", self.rounds, 1), ("local_epochs", self.local_epochs, 0),
                  ("batch_size", self.batch_size, 1), ("checkpoint_every", self.checkpoint_every, 0),
                  ("max_failed_rounds", self.max_failed_rounds, 1)]
        if self.clients_per_round is not None:
            checks.append(("clients_per_round", self.clients_per_round, 1))
        if self.max_batches_per_epoch is not None:
            checks.append(("max_batches_per_epoch", self.max_batches_per_epoch, 1))
        for name, value, minimum in checks:
            if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
                raise ValueError(f"FederatedTrainer: {name} must be an integer >= {minimum}, got {value!r}")
        if not isinstance(self.aggregator, Aggregator):
            raise TypeError(f"FederatedTrainer: aggregator must be an fl_lightning Aggregator, "
                            f"got {type(self.aggregator).__name__}")
        for attack in self.attacks:
            if not isinstance(attack, Attack):
                raise TypeError(f"FederatedTrainer: attacks must be fl_lightning Attacks, got {type(attack).__name__}")

    @property
    def log_dir(self) -> Path:
        """Folder of this run's logs and checkpoints."""
        if self.logger is not None and getattr(self.logger, "log_dir", None):
            return Path(self.logger.log_dir)
        return self.default_root_dir

    @property
    def checkpoint_path(self) -> Path:
        """Where the latest checkpoint of this run is written."""
        return self.log_dir / "checkpoints" / ckpt.CHECKPOINT_NAME

    # -- fit ----------------------------------------------------------------------------------------------
    def fit(self, module: L.LightningModule, datamodule: FederatedDataModule,
            ckpt_path: str | Path | None = None) -> None:
        """Run the rounds; afterwards ``module`` holds the final global weights.

        ``ckpt_path="last"`` resumes the latest checkpoint of this run (a path resumes that file).
        """
        self._setup(module, datamodule)
        if str(ckpt_path) == "last" and self._owns_logger:
            self._continue_last_version()
        start_round = self._restore(ckpt_path) if ckpt_path is not None else 0
        reporter = RunReporter(self.logger, self.enable_progress_bar, type(self.aggregator).__name__)
        if start_round == 0:
            reporter.log_hyperparams(self.hparams())
            self._log_partition(reporter)
        for callback in self.callbacks:
            callback.on_fit_start(self, module)
        reporter.start(self.rounds, start_round)
        failed_in_a_row = 0  # counted on from a resumed run's last rounds
        for past in reversed(self.history):
            if not past.kept_previous_model:
                break
            failed_in_a_row += 1
        status = "failed"
        try:
            for round_idx in range(start_round, self.rounds):
                record = self._run_round(round_idx, reporter)
                failed_in_a_row = failed_in_a_row + 1 if record.kept_previous_model else 0
                if failed_in_a_row >= self.max_failed_rounds:
                    raise RuntimeError(
                        f"{failed_in_a_row} consecutive rounds had too few usable clients for "
                        f"{type(self.aggregator).__name__}; last round's dropped clients: {record.dropped}")
                if self.checkpoint_every and ((round_idx + 1) % self.checkpoint_every == 0
                                              or round_idx + 1 == self.rounds):
                    self._save_checkpoint(round_idx + 1)
            status = "success"
        finally:
            reporter.stop()
            reporter.finalize(status)
            self.engine.teardown()
        for callback in self.callbacks:
            callback.on_fit_end(self, module)

    def _setup(self, module: L.LightningModule, datamodule: FederatedDataModule) -> None:
        if not isinstance(module, L.LightningModule):
            raise TypeError(f"fit() needs a LightningModule, got {type(module).__name__}")
        datamodule.setup()
        self.module, self.datamodule = module, datamodule
        self.layout = ParamLayout.from_module(module)
        if self.layout.num_params == 0:
            raise ValueError(f"{type(module).__name__} has no floating-point parameters to train")
        num_clients = len(datamodule.clients)
        per_round = self.clients_per_round or num_clients
        if per_round > num_clients:
            raise ValueError(f"clients_per_round={per_round} is more than the {num_clients} clients of the data")
        self.aggregator.validate(per_round)
        setup_ctx = SetupContext(num_clients=num_clients, rounds=self.rounds, seed=self.seed,
                                 client_targets=[c.targets for c in datamodule.clients],
                                 num_classes=datamodule.num_classes,
                                 input_shape=tuple(datamodule.clients[0].inputs.shape[1:]), layout=self.layout)
        setup_attacks(self.attacks, setup_ctx)
        joining = max((len(self._joining_clients(r)) for r in range(self.rounds)), default=0)
        if joining > per_round:
            raise ValueError(f"{joining} attacking clients must join some round, more than clients_per_round="
                             f"{per_round}; raise clients_per_round or use fewer attackers")
        self.plan = AttackPlan(self.attacks, datamodule.clients)
        self._params = module_tensors(module, self.layout.params, "params")
        self._buffers = module_tensors(module, self.layout.buffers, "buffers")
        self.global_params = flatten(self._params)
        self.global_buffers = flatten(self._buffers)
        self._out_params = torch.empty(per_round, self.layout.num_params)
        self._out_buffers = torch.empty(per_round, self.layout.num_buffers)
        self.engine.setup(module, self.layout)
        self.history, self.current_round = [], 0
        self._detection = DetectionPrecisionRecall()

    # -- one round -----------------------------------------------------------------------------------------
    def select_clients(self, round_idx: int) -> list[int]:
        """The clients of ``round_idx``: all, or ``clients_per_round`` drawn with the seed.

        Clients of attacks that join their active rounds (model replacement) always take part;
        the draw fills the remaining places.
        """
        num_clients = len(self.datamodule.clients)
        if self.clients_per_round is None or self.clients_per_round >= num_clients:
            return list(range(num_clients))
        rng = numpy_rng(self.seed, "sample", round_idx)
        forced = self._joining_clients(round_idx)
        if not forced:
            return sorted(int(i) for i in rng.choice(num_clients, self.clients_per_round, replace=False))
        others = [cid for cid in range(num_clients) if cid not in forced]
        drawn = rng.choice(others, self.clients_per_round - len(forced), replace=False)
        return sorted(forced | {int(i) for i in drawn})

    def _joining_clients(self, round_idx: int) -> set[int]:
        return {cid for attack in self.attacks if attack.joins_active_rounds and attack.is_active(round_idx)
                for cid in attack.attacker_ids}

    def _run_round(self, round_idx: int, reporter: RunReporter) -> RoundRecord:
        started = time.perf_counter()
        self.current_round = round_idx
        for callback in self.callbacks:
            callback.on_round_start(self, round_idx)
        client_ids = self.select_clients(round_idx)
        tasks = [self._task(cid, round_idx) for cid in client_ids]
        out_params, out_buffers = self._out_params[:len(tasks)], self._out_buffers[:len(tasks)]
        outcomes = self.engine.train_round(self.global_params, self.global_buffers, tasks, out_params, out_buffers)
        updates = out_params.sub_(self.global_params)  # in place: the buffer now holds U = local - global
        ctx = RoundContext(round=round_idx, client_ids=client_ids,
                           num_samples=torch.tensor([len(t.data) for t in tasks], dtype=torch.float32),
                           layout=self.layout, global_params=self.global_params, seed=self.seed,
                           num_clients=len(self.datamodule.clients))
        updates = self._poison_trained(updates, ctx, outcomes)
        dropped = self._dropped_clients(outcomes, updates)
        record = RoundRecord(round_idx, client_ids, {}, dropped=dropped)
        keep = [row for row, cid in enumerate(client_ids) if cid not in dropped]
        if len(keep) < self.aggregator.min_clients:
            record.kept_previous_model = True
            warnings.warn(f"round {round_idx}: only {len(keep)} usable clients, "
                          f"{type(self.aggregator).__name__} needs {self.aggregator.min_clients}; "
                          "keeping the previous global model", RuntimeWarning, stacklevel=2)
        else:
            self._aggregate(record, updates, out_buffers, keep, ctx)
        record.metrics.update(evaluate(self.module, self.datamodule.test, self.attacks))
        record.metrics.update(self._round_scalars(record, started))
        self._report(record, reporter)
        self.history.append(record)
        for callback in self.callbacks:
            callback.on_round_end(self, record)
        return record

    def _task(self, client_id: int, round_idx: int) -> ClientTask:
        cfg = LocalConfig(epochs=self.local_epochs, batch_size=self.batch_size,
                          max_batches_per_epoch=self.max_batches_per_epoch)
        cfg = self.plan.local_config(client_id, round_idx, cfg)
        return ClientTask(client_id=client_id, data=self.plan.client_data(client_id),
                          config=cfg, seed=derive_seed(self.seed, "train", round_idx, client_id),
                          batch_poisoner=self.plan.batch_poisoner(client_id, round_idx))

    def _poison_trained(self, updates: Tensor, ctx: RoundContext, outcomes: list[ClientOutcome]) -> Tensor:
        """Model poisoning over the clients that trained: a failed client's row is stale, no attack may read it."""
        trained = [row for row, outcome in enumerate(outcomes) if outcome.ok]
        if len(trained) == len(outcomes):
            return self.plan.poison_updates(updates, ctx)
        rows = torch.tensor(trained, dtype=torch.long)
        updates[rows] = self.plan.poison_updates(updates.index_select(0, rows), ctx.select(trained))
        return updates

    def _dropped_clients(self, outcomes: list[ClientOutcome], updates: Tensor) -> dict[int, str]:
        dropped = {o.client_id: o.error for o in outcomes if not o.ok}
        finite = torch.isfinite(updates).all(dim=1)
        for row, outcome in enumerate(outcomes):
            if outcome.ok and not bool(finite[row]):
                dropped[outcome.client_id] = "non-finite update (NaN or Inf)"
                warnings.warn(f"client {outcome.client_id} sent a non-finite update and is dropped this round",
                              RuntimeWarning, stacklevel=3)
        return dropped

    def _aggregate(self, record: RoundRecord, updates: Tensor, local_buffers: Tensor, keep: list[int],
                   ctx: RoundContext) -> None:
        name = type(self.aggregator).__name__
        rows = torch.tensor(keep, dtype=torch.long)
        kept = updates if len(keep) == len(updates) else updates.index_select(0, rows)
        kept_ctx = ctx.select(keep)
        result = self.aggregator.aggregate(kept, kept_ctx)
        self._check_result(result, name, len(keep), self.layout.num_params)
        if not torch.isfinite(result.update).all():
            record.kept_previous_model = True
            warnings.warn(f"round {ctx.round}: {name} returned a non-finite update; keeping the previous "
                          "global model", RuntimeWarning, stacklevel=3)
            return
        self.global_params.add_(result.update)
        if self.layout.num_buffers:
            share = kept_ctx.num_samples / kept_ctx.num_samples.sum()
            self.global_buffers.copy_(share @ local_buffers.index_select(0, rows))
        load_flat_(self._params, self.global_params)
        load_flat_(self._buffers, self.global_buffers)
        record.client_weights = result.client_weights
        flagged = result.diagnostics.get("flagged")
        if flagged is not None:
            record.flagged_ids = [kept_ctx.client_ids[i] for i in torch.nonzero(flagged).flatten().tolist()]
        record.metrics.update(self._weight_scalars(result, kept_ctx.client_ids))
        record.metrics.update(_diagnostic_scalars(result.diagnostics))
        record.diagnostics = result.diagnostics

    @staticmethod
    def _check_result(result: Any, name: str, k: int, n: int) -> None:
        if not isinstance(result, AggregationResult):
            raise TypeError(f"{name}.aggregate must return an AggregationResult, got {type(result).__name__}")
        if not isinstance(result.update, Tensor) or tuple(result.update.shape) != (n,):
            shape = tuple(result.update.shape) if isinstance(result.update, Tensor) else type(result.update).__name__
            raise ValueError(f"{name}.aggregate returned an update of shape {shape}; expected ({n},), one value "
                             "per model parameter")
        if result.client_weights is not None and tuple(result.client_weights.shape) != (k,):
            raise ValueError(f"{name}.aggregate returned client_weights of shape "
                             f"{tuple(result.client_weights.shape)}; expected ({k},)")

    def _weight_scalars(self, result: AggregationResult, client_ids: list[int]) -> dict[str, float]:
        if result.client_weights is None:
            return {}
        is_attacker = torch.tensor([self.plan.is_attacker(c) for c in client_ids])
        weights = result.client_weights.detach().float()
        scalars = {}
        if (~is_attacker).any():
            scalars["aggregator/weight_honest_mean"] = float(weights[~is_attacker].mean())
        if is_attacker.any():
            scalars["aggregator/weight_attackers_mean"] = float(weights[is_attacker].mean())
        return scalars

    def _round_scalars(self, record: RoundRecord, started: float) -> dict[str, float]:
        scalars = {"clients/dropped": float(len(record.dropped)),
                   "clients/attackers": float(sum(self.plan.is_attacker(c) for c in record.client_ids))}
        if self.attacks and not record.kept_previous_model:
            participating = [c for c in record.client_ids if c not in record.dropped]
            self._detection.update(record.flagged_ids, sorted(self.plan.attacker_ids), participating)
            cumulative = self._detection.compute()
            scalars["defense/precision"] = float(cumulative["precision"])
            scalars["defense/recall"] = float(cumulative["recall"])
        scalars["round/seconds"] = time.perf_counter() - started
        return scalars

    def _report(self, record: RoundRecord, reporter: RunReporter) -> None:
        reporter.log_metrics(record.metrics, step=record.round)
        if record.client_weights is not None:
            reporter.log_histogram("aggregator/client_weights", record.client_weights, record.round)
        if isinstance(record.diagnostics.get("mean_confidence"), Tensor):
            reporter.log_histogram("aggregator/mean_confidence", record.diagnostics["mean_confidence"],
                                   record.round)
        for cid, reason in record.dropped.items():
            reporter.log_text("clients/dropped_reasons", f"round {record.round}: client {cid}: {reason}",
                              record.round)
        reporter.advance(record.metrics)

    def _log_partition(self, reporter: RunReporter) -> None:
        from fl_lightning.data.figures import class_histogram_figure

        reporter.log_text("data/partition_fingerprint", self.datamodule.fingerprint)
        if reporter.logger is not None:
            histogram = self.datamodule.client_class_histogram()
            reporter.log_figure("data/client_class_histogram", class_histogram_figure(histogram), 0)
        attackers = ", ".join(f"{type(a).__name__}: {list(a.attacker_ids)}" for a in self.attacks) or "none"
        reporter.log_text("attack/attacker_ids", attackers)

    # -- test -------------------------------------------------------------------------------------------------
    def test(self) -> dict[str, float]:
        """Evaluate the current global model: ``test/acc``, ``test/loss``, attack and defense metrics."""
        if self.module is None or self.datamodule is None:
            raise RuntimeError("call fit(module, datamodule) before test()")
        results = evaluate(self.module, self.datamodule.test, self.attacks)
        if self.history and self.attacks:
            last = self.history[-1].metrics
            for key in ("defense/precision", "defense/recall"):
                if key in last:
                    results[key] = last[key]
        return results

    def hparams(self) -> dict[str, Any]:
        """The run's configuration as recorded in TensorBoard and checkpoints."""
        import fl_lightning

        params: dict[str, Any] = {
            "rounds": self.rounds, "local_epochs": self.local_epochs,
            "clients_per_round": self.clients_per_round or 0, "seed": self.seed,
            "batch_size": self.batch_size, "engine": type(self.engine).__name__,
            "aggregator": repr(self.aggregator), "model": type(self.module).__name__,
            "versions/torch": str(torch.__version__), "versions/lightning": str(L.__version__),
            "versions/fl_lightning": fl_lightning.__version__,
        }
        if self.datamodule is not None:
            params.update({f"data/{k}": v for k, v in self.datamodule.hparams().items()})
            params["data/fingerprint"] = self.datamodule.fingerprint
        for attack in self.attacks:
            params.update({f"attack/{attack.state_key}/{k}": v for k, v in attack.hparams().items()})
        module_hparams = getattr(self.module, "hparams", {}) or {}
        params.update({f"model/{k}": v for k, v in dict(module_hparams).items()
                       if isinstance(v, (int, float, str, bool))})
        return params

    # -- checkpoints --------------------------------------------------------------------------------------------
    def _identity(self) -> dict[str, Any]:
        return {"fingerprint": self.datamodule.fingerprint,
                "layout": [[name, list(shape)] for name, shape in self.layout.signature()],
                "aggregator": type(self.aggregator).__name__}

    def _save_checkpoint(self, next_round: int) -> None:
        int_buffers = dict(self.module.named_buffers())
        state = {
            **self._identity(),
            "next_round": next_round,
            "global_params": self.global_params.clone(),
            "global_buffers": self.global_buffers.clone(),
            "int_buffers": {n: int_buffers[n].clone() for n in self.layout.int_buffers},
            "aggregator_state": self.aggregator.state_dict(),
            "attack_states": {f"{i}:{a.state_key}": a.state_dict() for i, a in enumerate(self.attacks)},
            "callback_states": {f"{i}:{c.state_key}": c.state_dict() for i, c in enumerate(self.callbacks)},
            "detection": {name: getattr(self._detection, name).clone() for name in ("tp", "fp", "fn")},
            "history": [_record_state(r) for r in self.history],
            "rng": rng_states(),
        }
        ckpt.save_atomic(state, self.checkpoint_path)

    def _restore(self, ckpt_path: str | Path) -> int:
        path = self._find_checkpoint(ckpt_path)
        if path is None:
            warnings.warn(f"no checkpoint found for ckpt_path={str(ckpt_path)!r} under {self.log_dir}; "
                          "starting from round 0", RuntimeWarning, stacklevel=3)
            return 0
        state = ckpt.load(path)
        ckpt.check_compatible(state, self._identity(), path)
        self.global_params.copy_(state["global_params"])
        self.global_buffers.copy_(state["global_buffers"])
        load_flat_(self._params, self.global_params)
        load_flat_(self._buffers, self.global_buffers)
        named = dict(self.module.named_buffers())
        with torch.no_grad():
            for name, value in state["int_buffers"].items():
                named[name].copy_(value)
        self.aggregator.load_state_dict(state["aggregator_state"])
        for i, attack in enumerate(self.attacks):
            attack.load_state_dict(state["attack_states"].get(f"{i}:{attack.state_key}", {}))
        for i, callback in enumerate(self.callbacks):
            callback.load_state_dict(state["callback_states"].get(f"{i}:{callback.state_key}", {}))
        self.plan = AttackPlan(self.attacks, self.datamodule.clients)
        for name, value in state["detection"].items():
            setattr(self._detection, name, value.clone())
        self.history = [_record_from_state(r) for r in state["history"]]
        set_rng_states(state["rng"])
        self.current_round = int(state["next_round"])
        return self.current_round

    def _continue_last_version(self) -> None:
        """Resume into the newest ``version_*`` folder of the default logger instead of a fresh one."""
        last = ckpt.find_last(self.logger.root_dir) if isinstance(self.logger, TensorBoardLogger) else None
        if last is not None:
            version_dir = last.parent.parent
            self.logger = TensorBoardLogger(str(version_dir.parent.parent), name=version_dir.parent.name,
                                            version=version_dir.name)

    def _find_checkpoint(self, ckpt_path: str | Path) -> Path | None:
        if str(ckpt_path) != "last":
            return Path(ckpt_path)
        if self.checkpoint_path.is_file():
            return self.checkpoint_path
        root = Path(self.logger.root_dir) if isinstance(self.logger, TensorBoardLogger) else self.default_root_dir
        return ckpt.find_last(root)


def _default_aggregator() -> Aggregator:
    from fl_lightning.aggregators import FedAvg

    return FedAvg()


def _diagnostic_scalars(diagnostics: dict[str, Any]) -> dict[str, float]:
    scalars = {}
    for key, value in diagnostics.items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            scalars[f"aggregator/{key}"] = float(value)
        elif isinstance(value, Tensor) and value.numel() == 1 and value.is_floating_point():
            scalars[f"aggregator/{key}"] = float(value)
    flagged = diagnostics.get("flagged")
    if isinstance(flagged, Tensor):
        scalars["aggregator/flagged"] = float(flagged.sum())
    return scalars


def _record_state(record: RoundRecord) -> dict[str, Any]:
    return {"round": record.round, "client_ids": list(record.client_ids), "metrics": dict(record.metrics),
            "client_weights": record.client_weights, "flagged_ids": list(record.flagged_ids),
            "dropped": {str(k): v for k, v in record.dropped.items()},
            "kept_previous_model": record.kept_previous_model}


def _record_from_state(state: dict[str, Any]) -> RoundRecord:
    return RoundRecord(round=state["round"], client_ids=list(state["client_ids"]), metrics=dict(state["metrics"]),
                       client_weights=state["client_weights"], flagged_ids=list(state["flagged_ids"]),
                       dropped={int(k): v for k, v in state["dropped"].items()},
                       kept_previous_model=state["kept_previous_model"])
