"""``FederatedTrainer``: the round loop. Checkpoints, logging and metric scalars live beside it, in connectors."""
from __future__ import annotations

import inspect
import logging
import time
import warnings
from functools import partial
from pathlib import Path
from typing import Any, Sequence

import lightning as L
import torch
from lightning.pytorch.loggers import Logger, TensorBoardLogger
from torch import Tensor

from fl_lightning.aggregators.base import Aggregator
from fl_lightning.attacks.base import Attack
from fl_lightning.attacks.compose import setup_attacks
from fl_lightning.callbacks import FederatedCallback, ProgressBar
from fl_lightning.callbacks.resolve import resolve_callbacks
from fl_lightning.checks import (check_bool, check_choice, check_fraction, check_instance, check_int, check_number,
                                 check_optional_int, check_seed)
from fl_lightning.context import LocalConfig, RoundContext, SetupContext
from fl_lightning.data.datamodule import FederatedDataModule
from fl_lightning.engines import Engine, get_engine
from fl_lightning.engines.base import ClientOutcome, ClientTask, prog_bar_names, train_scalars
from fl_lightning.engines.train_options import TrainOptions, seeded_rng
from fl_lightning.evaluation import Evaluator
from fl_lightning.param_layout import ParamLayout
from fl_lightning.attacks.plan import AttackPlan
from fl_lightning.stopping import StopOnSignal, StopRequested, run_cleanup
from fl_lightning.seeding import derive_seed, numpy_rng, seed_everything as seed_global_generators
import fl_lightning.trainer.round_metrics as round_metrics
from fl_lightning.trainer.attack_diagnostics import AttackDiagnostics
from fl_lightning.trainer.boundary import (aggregate_checked, as_list, check_layout_changes, check_result,
                                          dropped_clients, finite_rows, input_shape, non_finite_metrics,
                                          setup_data)
from fl_lightning.trainer.connectors.checkpoint_connector import CheckpointConnector
from fl_lightning.trainer.connectors.logger_connector import LoggerConnector, resolve_loggers
from fl_lightning.trainer.devices import get_lightning_engine, resolve_accelerator, resolve_devices, resolve_precision
from fl_lightning.trainer.client_state import OPTIMIZER, ClientMomentum, ClientStates
from fl_lightning.trainer.global_model import GlobalModel
from fl_lightning.trainer.server_optimizer import ServerOptimizerSpec, as_optimizer_factory
from fl_lightning.trainer.lightning_args import (batches_cap, check_clipping, check_deterministic,
                                                check_limit_train_batches, deterministic_algorithms,
                                                refuse_lightning_kwargs)
from fl_lightning.trainer.run_schedule import SCOPES, RunSchedule, steps_per_epoch
from fl_lightning.trainer.records import RoundRecord, RunHistory
from fl_lightning.version import __version__

log = logging.getLogger(__name__)

#: the client id of the server's own training task (rules with ``root_samples > 0``, e.g. FLTrust)
SERVER_ID = -1


class FederatedTrainer:
    """Runs federated rounds over a user's ``LightningModule``: select, train, attack, aggregate, evaluate, log.

    Each round (:meth:`_run_round`): select clients -> the engine trains them from the global
    weights -> attacks poison the updates -> non-finite rows are dropped -> the aggregator combines
    the rest -> evaluate -> ``on_round_end`` callbacks -> log -> checkpoint. Saving and resuming go
    through :class:`CheckpointConnector`; every logged number through :class:`LoggerConnector`.

    Args:
        rounds: number of federated rounds.
        local_epochs: epochs each honest client trains per round (attacks may add more).
        local_steps: instead of ``local_epochs``, exactly this many optimizer steps per round, cycling the
            client's data in fresh passes (attacks may add ``extra_steps``). A paper's "E epochs over n
            samples at batch B" is ``E * ceil(n / B)`` steps (see :mod:`fl_lightning.engines.batches`).
        clients_per_round: clients sampled per round with the seed; ``None`` takes every client.
        aggregator: the robust aggregation rule (default :class:`~fl_lightning.aggregators.FedAvg`).
        attacks: attacks applied in list order.
        logger: a Lightning logger or a list of them (TensorBoard, CSV, any ``lightning.pytorch.loggers.Logger``);
            ``None`` or ``True`` logs to TensorBoard under ``default_root_dir``, ``False`` disables logging.
            Scalars and hyper-parameters go to every logger, histograms / text / figures to those that draw
            them; :attr:`logger` is the first (its folder holds the checkpoints), :attr:`loggers` all.
        callbacks: :class:`~fl_lightning.callbacks.FederatedCallback` instances (``ModelCheckpoint``,
            ``EarlyStopping``, ...). A Lightning ``Callback`` is refused with the name of its federated
            equivalent. Any callback may set ``trainer.should_stop = True`` to end the run after the round.
        engine: ``"sequential"``, ``"vmap"``, ``"ray"``, ``"lightning"`` (a ``lightning.Trainer`` per client, on
            this trainer's accelerator and precision) or an :class:`~fl_lightning.engines.Engine`.
        seed: the one seed every random choice of the run is derived from.
        seed_everything: opt-in, as in Lightning: ``True`` also seeds Python's, NumPy's and torch's *global*
            generators with ``seed`` here (``lightning.seed_everything(seed)``), so that a module built after
            the trainer gets the same initial weights every time. The run itself never reads or moves the
            global generators (its choices come from ``seed`` by name, see
            :func:`~fl_lightning.seeding.derive_seed`; clients draw inside ``torch.random.fork_rng``), so
            the generators are where ``fit`` found them when it returns.
        enable_progress_bar: add a :class:`~fl_lightning.callbacks.RoundProgressBar` unless ``callbacks``
            already holds a :class:`~fl_lightning.callbacks.ProgressBar`; ``False`` runs without a bar.
        batch_size: local batch size (attacks may override it for their clients).
        max_batches_per_epoch: cap on local batches per epoch (the paper's script: about 30).
        checkpoint_every: save a resumable checkpoint every this many rounds (0: never).
        max_failed_rounds: fail after this many consecutive rounds without enough usable clients.
        default_root_dir: where logs and checkpoints go when no logger says otherwise.
        accelerator: Lightning's name of the device to train on (``"auto"``: CUDA, else MPS, else CPU).
            The module, client batches, the ``[K, N]`` updates, aggregation and evaluation all live there.
        devices: ``1`` (or ``"auto"``, or ``[index]``); several devices need ``engine="ray"`` or processes.
        precision: ``"32-true"``, ``"bf16-mixed"`` or ``"16-mixed"`` (autocast; weights stay float32).
        keep_optimizer_state: each client keeps its local optimizer's state (momentum buffers, Adam's
            moments) from one of its rounds to its next, instead of a fresh optimizer every round (the
            sequential, vmap and Lightning engines; the Ray engine refuses it).
        client_momentum: worker momentum ``beta`` (Karimireddy et al. 2021): each client sends
            ``m_t = beta m_{t-1} + (1 - beta) U_t`` instead of its update ``U_t``; 0 sends ``U_t``.
        server_optimizer: a ``torch.optim.Optimizer`` stepping the global model with the aggregate as the
            negative pseudo-gradient: its class with arguments (``functools.partial(torch.optim.SGD, lr=1.0,
            momentum=0.9)``, ``(torch.optim.SGD, {"lr": 1.0})``, or ``class_path`` / ``init_args`` in YAML);
            ``None`` adds the aggregate (``global += update``). Presets: ``fl_lightning.trainer.server_optimizer``.
        proximal_mu: FedProx's ``mu``: ``mu/2 ||w - w_global||^2`` is added to every client's training loss.
        client_state_max_mb: memory for the clients' kept state (momentum, optimizer state), held on the CPU;
            beyond it the least recently used clients' state goes to files (``None``: no limit). Each client
            holds ``parameters x 4 bytes`` per state tensor (see ``docs/client_state.md``).
        client_state_dir: where spilled client state is written (``None``: the system's temporary folder).
        gradient_clip_val: clip each client's gradients before every optimizer step (``None`` or 0: no
            clipping), as ``lightning.Trainer`` does, through the module's ``configure_gradient_clipping``.
        gradient_clip_algorithm: ``"norm"`` (default) or ``"value"``.
        accumulate_grad_batches: batches whose gradients a client sums before each optimizer step.
        limit_train_batches: Lightning's name for a cap on a client's batches per epoch: an int (as
            ``max_batches_per_epoch``) or a fraction in (0, 1] of each client's batches.
        deterministic: ``torch.use_deterministic_algorithms`` for the fit (``"warn"``: warn only; ``None``:
            torch's setting unchanged); restored when ``fit`` ends.
        scheduler_scope: ``"run"`` (default): the schedulers of ``configure_optimizers`` span the whole
            run, as over one Lightning fit (their state lives with the global model and advances by each
            round's local steps; ``self.trainer.estimated_stepping_batches`` is the run's total);
            ``"round"``: every client starts fresh schedulers every round.

    Any other ``lightning.Trainer`` argument is refused with a one-line ``TypeError`` naming its federated
    equivalent (``max_epochs`` -> ``local_epochs``, ``max_steps`` -> ``rounds``) or
    ``LightningEngine(trainer_kwargs=...)``.
    """

    def __init__(
        self,
        rounds: int = 10,
        local_epochs: int = 1,
        clients_per_round: int | None = None,
        aggregator: Aggregator | None = None,
        attacks: Sequence[Attack] = (),
        logger: Logger | Sequence[Logger] | bool | None = None,
        callbacks: Sequence[FederatedCallback] = (),
        engine: str | Engine = "sequential",
        seed: int = 0,
        enable_progress_bar: bool = True,
        batch_size: int = 128,
        max_batches_per_epoch: int | None = None,
        checkpoint_every: int = 1,
        max_failed_rounds: int = 3,
        default_root_dir: str | Path = "logs",
        seed_everything: bool = False,
        accelerator: str = "auto",
        devices: int | str | Sequence[int] = 1,
        precision: str | int = "32-true",
        local_steps: int | None = None,
        keep_optimizer_state: bool = False,
        client_momentum: float = 0.0,
        server_optimizer: ServerOptimizerSpec | None = None,
        proximal_mu: float = 0.0,
        client_state_max_mb: float | None = None,
        client_state_dir: str | None = None,
        gradient_clip_val: float | None = None,
        gradient_clip_algorithm: str | None = None,
        accumulate_grad_batches: int = 1,
        limit_train_batches: int | float | None = None,
        deterministic: bool | str | None = None,
        scheduler_scope: str = "run",
        **lightning_kwargs: Any,
    ) -> None:
        owner = "FederatedTrainer"
        refuse_lightning_kwargs(lightning_kwargs, inspect.signature(FederatedTrainer.__init__).parameters)
        self.rounds = check_int(rounds, "rounds", owner, minimum=1)
        self.local_epochs = check_int(local_epochs, "local_epochs", owner, minimum=0)
        self.local_steps = check_optional_int(local_steps, "local_steps", owner, minimum=0)
        self.clients_per_round = check_optional_int(clients_per_round, "clients_per_round", owner, minimum=1)
        self.seed = check_seed(seed, owner)
        check_bool(enable_progress_bar, "enable_progress_bar", owner)
        self.batch_size = check_int(batch_size, "batch_size", owner, minimum=1)
        self.max_batches_per_epoch = check_optional_int(max_batches_per_epoch, "max_batches_per_epoch", owner,
                                                        minimum=1)
        self.limit_train_batches = check_limit_train_batches(limit_train_batches, self.max_batches_per_epoch)
        self.gradient_clip_val, self.gradient_clip_algorithm = check_clipping(gradient_clip_val,
                                                                              gradient_clip_algorithm)
        self.accumulate_grad_batches = check_int(accumulate_grad_batches, "accumulate_grad_batches", owner, minimum=1)
        self.deterministic = check_deterministic(deterministic)
        self.scheduler_scope = check_choice(scheduler_scope, SCOPES, "scheduler_scope", owner)
        self.checkpoint_every = check_int(checkpoint_every, "checkpoint_every", owner, minimum=0)
        self.max_failed_rounds = check_int(max_failed_rounds, "max_failed_rounds", owner, minimum=1)
        self.default_root_dir = Path(check_instance(default_root_dir, (str, Path), "default_root_dir", owner))
        self.aggregator = check_instance(aggregator if aggregator is not None else _default_aggregator(),
                                         Aggregator, "aggregator", owner, "pass an fl_lightning Aggregator")
        self.attacks = [check_instance(a, Attack, "attacks", owner, "pass fl_lightning Attacks")
                        for a in as_list(attacks, "attacks")]
        self.callbacks: list[FederatedCallback] = resolve_callbacks(as_list(callbacks, "callbacks"),
                                                                    enable_progress_bar)
        #: set by a callback (e.g. EarlyStopping) to end the run after the current round
        self.should_stop = False
        self.accelerator = resolve_accelerator(accelerator)
        self.device = resolve_devices(devices, self.accelerator)
        self.precision = resolve_precision(precision, self.accelerator)
        self.engine = (get_lightning_engine(self.accelerator, self.precision) if engine == "lightning"
                       else get_engine(check_instance(engine, (str, Engine), "engine", owner)))
        check_bool(seed_everything, "seed_everything", owner)
        self.keep_optimizer_state = check_bool(keep_optimizer_state, "keep_optimizer_state", owner)
        self.client_momentum = check_fraction(client_momentum, "client_momentum", owner, include_one=False)
        self.proximal_mu = check_number(proximal_mu, "proximal_mu", owner, low=0.0)
        if client_state_max_mb is not None:
            check_number(client_state_max_mb, "client_state_max_mb", owner, low=0.0)
        self.server_optimizer = (as_optimizer_factory(server_optimizer, owner) if server_optimizer is not None
                                 else None)
        if self.keep_optimizer_state and not getattr(self.engine, "supports_optimizer_state", True):
            raise ValueError(f"{owner}: keep_optimizer_state=True needs an engine that keeps each client's optimizer "
                             f"across rounds; {type(self.engine).__name__} trains a client on whichever worker is "
                             "free and does not. Use engine='sequential', 'vmap' or 'lightning', or "
                             "keep_optimizer_state=False (client_momentum works on every engine)")
        self.client_states = ClientStates(client_state_max_mb, client_state_dir)
        self.momentum = ClientMomentum(self.client_momentum, self.client_states)
        self._owns_logger = logger is None or logger is True
        self.logger_connector = LoggerConnector(resolve_loggers(logger, self._default_logger, owner))
        self.checkpoint_connector = CheckpointConnector(self)
        self.history = RunHistory()
        self.detection = round_metrics.DetectionTracker()
        self.attack_diagnostics = AttackDiagnostics()
        self.module: L.LightningModule | None = None
        self.datamodule: FederatedDataModule | None = None
        self.current_round = 0
        if seed_everything:
            seed_global_generators(self.seed)
            log.info("FederatedTrainer: global random generators seeded with %d", self.seed)

    def _default_logger(self) -> Logger:
        # hparams are logged with the run's metrics (LoggerConnector), never with a placeholder ``hp_metric``
        return TensorBoardLogger(str(self.default_root_dir), name="federated", default_hp_metric=False)

    @property
    def enable_progress_bar(self) -> bool:
        """Whether the run shows a progress bar; setting it adds the default bar or removes the current one."""
        return self.progress_bar_callback is not None

    @enable_progress_bar.setter
    def enable_progress_bar(self, enable: bool) -> None:
        check_bool(enable, "enable_progress_bar", "FederatedTrainer")
        if not enable:
            self.callbacks = [c for c in self.callbacks if not isinstance(c, ProgressBar)]
        elif self.progress_bar_callback is None:
            self.callbacks = resolve_callbacks(self.callbacks, True)

    @property
    def progress_bar_callback(self) -> ProgressBar | None:
        """The run's progress bar callback, or ``None``."""
        return next((c for c in self.callbacks if isinstance(c, ProgressBar)), None)

    # -- where the run goes --------------------------------------------------------------------------------
    @property
    def logger(self) -> Logger | None:
        """The run's (first) logger, or ``None`` when logging is off."""
        return self.logger_connector.logger

    @logger.setter
    def logger(self, logger: Logger | None) -> None:
        self.logger_connector.loggers[:1] = [] if logger is None else [logger]

    @property
    def loggers(self) -> list[Logger]:
        """Every logger of the run, the first being :attr:`logger`."""
        return self.logger_connector.loggers

    @loggers.setter
    def loggers(self, loggers: Sequence[Logger]) -> None:
        self.logger_connector.loggers = resolve_loggers(list(loggers), self._default_logger)

    @property
    def log_dir(self) -> Path:
        """Folder of this run's logs and checkpoints."""
        return self.logger_connector.log_dir or self.default_root_dir

    @property
    def checkpoint_path(self) -> Path:
        """Where the latest checkpoint of this run is written."""
        return self.checkpoint_connector.checkpoint_path

    @property
    def global_params(self) -> Tensor:
        """The global model's trainable parameters as one flat ``[N]`` vector."""
        return self.global_model.params

    @property
    def global_buffers(self) -> Tensor:
        """The global model's floating-point buffers as one flat vector."""
        return self.global_model.buffers

    # -- fit ----------------------------------------------------------------------------------------------
    def fit(self, module: L.LightningModule, datamodule: FederatedDataModule,
            ckpt_path: str | Path | None = None) -> None:
        """Run the rounds; afterwards ``module`` holds the final global weights.

        ``ckpt_path="last"`` resumes this run's own latest checkpoint (none: round 0; a path resumes that
        file). Without ``ckpt_path``, a logger folder that already holds a run is refused
        (``FileExistsError``), and a folder another process is fitting into is always refused.
        """
        # SIGTERM stops the fit as Ctrl-C does: round abandoned, lock released; deterministic: for the fit only
        with StopOnSignal() as stop, deterministic_algorithms(self.deterministic):
            self._fit(module, datamodule, ckpt_path, stop)
        for callback in self.callbacks:
            callback.on_fit_end(self, module)

    def _fit(self, module: L.LightningModule, datamodule: FederatedDataModule, ckpt_path: str | Path | None,
             stop: StopOnSignal) -> None:
        self._setup(module, datamodule)
        # the run's folder: locked against a second process, never another run's, resumed from its own checkpoint
        start_round = self.checkpoint_connector.begin(ckpt_path)
        status = "failed"
        failure: BaseException | None = None
        self.should_stop = False
        try:
            self.current_round = start_round
            self.plan = AttackPlan(self.attacks, datamodule.clients)  # after restore: attackers may come from it
            if start_round == 0:
                self._log_run_start()
            for callback in self.callbacks:
                callback.on_fit_start(self, module)
            failed_in_a_row = self.history.consecutive_failures()  # counted on across a resume
            for round_idx in range(start_round, self.rounds):
                if self.should_stop:  # a callback ended the run (EarlyStopping), also one resumed after it
                    break
                self.current_round = round_idx
                stop.raise_if_received()  # a SIGTERM whose exception a __del__ swallowed still stops here
                record = self._run_round(round_idx)
                failed_in_a_row = failed_in_a_row + 1 if record.kept_previous_model else 0
                if failed_in_a_row >= self.max_failed_rounds:
                    raise RuntimeError(f"{failed_in_a_row} consecutive rounds kept the previous global model (the "
                                       f"last one {record.kept_reason}); last round's dropped clients: "
                                       f"{record.dropped}")
                if self.checkpoint_every and ((round_idx + 1) % self.checkpoint_every == 0
                                              or round_idx + 1 == self.rounds or self.should_stop):
                    self.checkpoint_connector.save(round_idx + 1)
            status = "success"
        except StopRequested as exc:
            failure = exc
            saved = self.checkpoint_connector.saved_round
            exc.round, exc.next_round = self.current_round, saved
            exc.checkpoint = str(self.checkpoint_path) if saved is not None else None
            raise
        except BaseException as exc:
            failure = exc
            raise
        finally:
            stop.disarm()
            # every step runs even if one fails, and none replaces the error that ended the fit
            run_cleanup([*[(f"{type(c).__name__}.teardown", partial(c.teardown, self)) for c in self.callbacks],
                         ("the loggers' finalize", partial(self.logger_connector.finalize, status)),
                         (f"{type(self.engine).__name__}.teardown", self.engine.teardown),
                         ("releasing the run folder's lock", self.checkpoint_connector.end)], failure)

    def _setup(self, module: L.LightningModule, datamodule: FederatedDataModule) -> None:
        """Check the module and data against the trainer's settings, then set up every plug-in."""
        check_instance(module, L.LightningModule, "module", "FederatedTrainer.fit")
        check_instance(datamodule, FederatedDataModule, "datamodule", "FederatedTrainer.fit")
        root_samples = check_int(getattr(self.aggregator, "root_samples", 0), "root_samples",
                                 type(self.aggregator).__name__, minimum=0)
        setup_data(datamodule, root_samples)
        module.to(self.device)
        self.module, self.datamodule = module, datamodule
        self.layout = ParamLayout.from_module(module)
        if self.layout.num_params == 0:
            raise ValueError(f"FederatedTrainer.fit: {type(module).__name__} has no floating-point parameters "
                             "to train")
        num_clients = len(datamodule.clients)
        per_round = self.clients_per_round or num_clients
        if per_round > num_clients:
            raise ValueError(f"FederatedTrainer: clients_per_round={per_round} is more than the {num_clients} "
                             "clients of the data")
        setup_ctx = SetupContext(num_clients=num_clients, num_rounds=self.rounds, seed=self.seed,
                                 client_targets=[c.targets for c in datamodule.clients],
                                 num_classes=datamodule.num_classes, input_shape=input_shape(datamodule),
                                 layout=self.layout, clients_per_round=per_round, local_steps=self.local_steps)
        self.aggregator.setup(setup_ctx)
        setup_attacks(self.attacks, setup_ctx)
        self.train_options = self._train_options(datamodule)
        self.schedule = RunSchedule(module, self.train_options, self.scheduler_scope, self.local_epochs,
                                    self._nominal_batches)
        joining = max((len(self._joining_clients(r)) for r in self._joining_rounds()), default=0)
        if joining > per_round:
            raise ValueError(f"FederatedTrainer: {joining} attacking clients must join some round, more than "
                             f"clients_per_round={per_round}; raise clients_per_round or use fewer attackers")
        self.root = datamodule.root if root_samples > 0 else None
        self.global_model = GlobalModel(module, self.layout, self.server_optimizer)
        self.client_states.clear()
        rows = per_round + (1 if self.root is not None else 0)
        self._out_params = torch.empty(rows, self.layout.num_params, device=self.device)
        self._out_buffers = torch.empty(rows, self.layout.num_buffers, device=self.device)
        self.engine.configure(self.train_options)
        self.engine.setup(module, self.layout)
        self.evaluator = Evaluator(module, datamodule.test, self.attacks, val=getattr(datamodule, "val", None))
        self.history, self.current_round = RunHistory(), 0
        self.detection = round_metrics.DetectionTracker()
        self._prog_bar_names: set[str] = set()

    def _train_options(self, datamodule: FederatedDataModule) -> TrainOptions:
        """The Lightning Trainer arguments every client trains with, and the run's total optimizer steps.

        ``estimated_stepping_batches`` counts the largest client's steps (rounds x local epochs x its
        optimizer steps per epoch), so no honest client's scheduler runs past a schedule sized with it.
        """
        largest = max((len(c) for c in datamodule.clients), default=0)
        cap = batches_cap(self.limit_train_batches, self.max_batches_per_epoch, largest, self.batch_size)
        accumulate = self.accumulate_grad_batches if self.module.automatic_optimization else 1
        self._nominal_batches, steps = steps_per_epoch(largest, self.batch_size, cap, accumulate)
        return TrainOptions(self.gradient_clip_val, self.gradient_clip_algorithm, self.accumulate_grad_batches,
                            estimated_stepping_batches=self.rounds * self.local_epochs * steps)

    @property
    def progress_bar_metrics(self) -> dict[str, float]:
        """The latest round's values of what the module logged with ``prog_bar=True`` (Lightning's Trainer's name)."""
        if not self.history:
            return {}
        metrics = self.history[-1].metrics
        return {name: metrics[name] for name in sorted(getattr(self, "_prog_bar_names", ())) if name in metrics}

    @property
    def estimated_stepping_batches(self) -> int:
        """The run's total optimizer steps of one client, as ``lightning.Trainer`` names it (after ``fit`` starts)."""
        return int(self.train_options.estimated_stepping_batches)

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

    def _joining_rounds(self) -> list[int]:
        """Rounds whose joining attackers cover every case, without visiting all ``rounds`` (which may be 10**12).

        An attack is active in every round or in the rounds it lists, so the set of joining clients changes only
        at a listed round; one round that no attack lists stands for all the others.
        """
        listed = {r for attack in self.attacks if attack.joins_active_rounds
                  for r in (getattr(attack, "rounds", None) or ()) if 0 <= r < self.rounds}
        other = next(r for r in range(len(listed) + 1) if r not in listed)
        return sorted(listed) + ([other] if other < self.rounds else [])

    def _joining_clients(self, round_idx: int) -> set[int]:
        return {cid for attack in self.attacks if attack.joins_active_rounds and attack.is_active(round_idx)
                for cid in attack.attacker_ids}

    def _run_round(self, round_idx: int) -> RoundRecord:
        """One round, start to finish; returns its record (already in :attr:`history`)."""
        started = time.perf_counter()
        self.current_round = round_idx
        for callback in self.callbacks:
            callback.on_round_start(self, round_idx)
        # 1. train the selected clients from the global weights
        client_ids = self.select_clients(round_idx)
        lrs = self.schedule.lrs()  # the learning rates the round starts with
        schedule = self.schedule.round_state(round_idx)
        tasks = [self._task(cid, round_idx, schedule) for cid in client_ids]
        k = len(tasks)
        outcomes = self.engine.train_round(self.global_params, self.global_buffers, tasks,
                                           self._out_params[:k], self._out_buffers[:k])
        check_layout_changes(outcomes, type(self.module).__name__)
        updates = self._out_params[:k].sub_(self.global_params)  # in place: the rows now hold U = local - global
        # the active attackers' own local models on the test set, before any boost or aggregation
        with seeded_rng(derive_seed(self.seed, "attack_diagnostics", round_idx), self.device):
            attacker_local = self.attack_diagnostics.measure(
                round_idx, self.module, self.global_model.weights, self.global_params, self.global_buffers, updates,
                self._out_buffers[:k], client_ids, outcomes, self.attacks, self.datamodule.test, self.evaluator)
        # plug-ins get a copy of the global model: a write into it (refused by the checks) cannot move the model
        ctx = RoundContext(round=round_idx, client_ids=client_ids,
                           num_samples=torch.tensor([len(t.data) for t in tasks], dtype=torch.float32,
                                                    device=self.device),
                           layout=self.layout, global_params=self.global_params.clone(), seed=self.seed,
                           num_clients=len(self.datamodule.clients), weighting=self.aggregator.nominal_weights,
                           reference_update=self._reference_update(round_idx))
        # 2. attacks poison the updates; 3. unusable rows are dropped. The [K, N] matrix is scanned for
        # non-finite rows once; after poisoning only the attackers' rows, the ones attacks may rewrite
        # a client whose float buffers (BatchNorm statistics) went non-finite is unusable like a non-finite update
        buffers_finite = finite_rows(self._out_buffers[:k])
        trained = torch.tensor([o.ok for o in outcomes], dtype=torch.bool, device=self.device) & buffers_finite
        ctx.finite = torch.isfinite(updates).all(dim=1) & trained
        # clients keep their state (optimizer, momentum) from a usable round only; with client momentum they
        # send their momentum, and model-poisoning attacks read those sent rows
        self._keep_client_state(client_ids, outcomes, ctx.finite)
        updates = self.momentum.apply(updates, client_ids, ctx.finite)
        updates = self._poison_trained(updates, ctx, outcomes)
        attacker_rows = [row for row, cid in enumerate(client_ids) if self.plan.is_attacker(cid)]
        if attacker_rows:
            rows = torch.tensor(attacker_rows, dtype=torch.long, device=self.device)
            ctx.finite[rows] = torch.isfinite(updates.index_select(0, rows)).all(dim=1) & trained[rows]
        record = RoundRecord(round_idx, client_ids, {}, dropped=dropped_clients(outcomes, ctx.finite, buffers_finite))
        keep = [row for row, cid in enumerate(client_ids) if cid not in record.dropped]
        # 4. aggregate and step the global model
        if len(keep) < self.aggregator.min_clients:
            record.kept_previous_model = True
            record.kept_reason = f"had too few usable clients for {type(self.aggregator).__name__}"
            warnings.warn(f"round {round_idx}: only {len(keep)} usable clients, "
                          f"{type(self.aggregator).__name__} needs {self.aggregator.min_clients}; "
                          "keeping the previous global model", RuntimeWarning, stacklevel=2)
        else:
            self._aggregate(record, updates, self._out_buffers[:k], keep, ctx)
        # 5. evaluate and record; evaluation draws (if at all) inside its own fork of torch's generator
        with seeded_rng(derive_seed(self.seed, "evaluate", round_idx), self.device):
            record.metrics.update(self.evaluator(self.module, self.datamodule.test,
                                                 val=getattr(self.datamodule, "val", None)))
        record.metrics.update(round_metrics.client_scalars(record, outcomes, self.plan.attacker_ids))
        record.metrics.update(train_scalars(outcomes))
        record.metrics.update(attacker_local)
        self._prog_bar_names |= prog_bar_names(outcomes)
        record.metrics.update(lrs)
        self.schedule.advance(round_idx, record.metrics)
        if self.attacks and not record.kept_previous_model:
            record.metrics.update(self.detection.update(record, self.plan.attacker_ids))
        record.metrics["round/seconds"] = time.perf_counter() - started
        self.history.append(record)
        # 6. callbacks may add metrics, then the round is logged
        for callback in self.callbacks:
            callback.on_round_end(self, record)
        self._report_non_finite(record)
        self.logger_connector.log_round(record)
        for callback in self.callbacks:
            callback.on_round_logged(self, record)
        return record

    def _task(self, client_id: int, round_idx: int, schedule: Any = None) -> ClientTask:
        data = self.plan.client_data(client_id)
        cfg = self.plan.local_config(client_id, round_idx, self._local_config(len(data)))
        return ClientTask(client_id=client_id, data=data,
                          config=cfg, seed=derive_seed(self.seed, "train", round_idx, client_id),
                          batch_poisoner=self.plan.batch_poisoner(client_id, round_idx), precision=self.precision,
                          proximal_mu=self.proximal_mu, keep_optimizer_state=self.keep_optimizer_state,
                          optimizer_state=(self.client_states.get(client_id, OPTIMIZER)
                                           if self.keep_optimizer_state else None),
                          options=self.train_options, schedule=schedule)

    def _keep_client_state(self, client_ids: list[int], outcomes: list[ClientOutcome], usable: Tensor) -> None:
        """Store each usable client's optimizer state for its next round (a failed client keeps its old one)."""
        if not self.keep_optimizer_state:
            return
        for cid, outcome, ok in zip(client_ids, outcomes, usable.tolist()):
            state = outcome.extras.pop("optimizer_state", None)
            if ok and state is not None:
                self.client_states.put(cid, OPTIMIZER, state)

    def _local_config(self, num_samples: int = 0) -> LocalConfig:
        return LocalConfig(epochs=self.local_epochs, batch_size=self.batch_size,
                           max_batches_per_epoch=batches_cap(self.limit_train_batches, self.max_batches_per_epoch,
                                                             num_samples, self.batch_size),
                           steps=self.local_steps)

    def _reference_update(self, round_idx: int) -> Tensor | None:
        """The server's own update on its root data this round, for rules with ``root_samples > 0`` (FLTrust)."""
        if self.root is None:
            return None
        task = ClientTask(client_id=SERVER_ID, data=self.root, config=self._local_config(len(self.root)),
                          seed=derive_seed(self.seed, "server", round_idx), precision=self.precision,
                          options=self.train_options, schedule=self.schedule.round_state(round_idx))
        out_params, out_buffers = self._out_params[-1:], self._out_buffers[-1:]
        (outcome,) = self.engine.train_round(self.global_params, self.global_buffers, [task], out_params, out_buffers)
        update = out_params[0] - self.global_params
        if not outcome.ok or not torch.isfinite(update).all():
            raise RuntimeError(f"round {round_idx}: the server's reference training on its {len(self.root)} root "
                               f"samples failed ({outcome.error or 'non-finite update'}); "
                               f"{type(self.aggregator).__name__} cannot aggregate without it")
        return update

    def _poison_trained(self, updates: Tensor, ctx: RoundContext, outcomes: list[ClientOutcome]) -> Tensor:
        """Model poisoning over the clients that trained: a failed client's row is stale, no attack may read it."""
        trained = [row for row, outcome in enumerate(outcomes) if outcome.ok]
        if len(trained) == len(outcomes):
            return self.plan.poison_updates(updates, ctx)
        rows = torch.tensor(trained, dtype=torch.long, device=self.device)
        updates[rows] = self.plan.poison_updates(updates.index_select(0, rows), ctx.select(trained))
        return updates

    def _aggregate(self, record: RoundRecord, updates: Tensor, local_buffers: Tensor, keep: list[int],
                   ctx: RoundContext) -> None:
        name = type(self.aggregator).__name__
        rows = torch.tensor(keep, dtype=torch.long, device=self.device)
        kept = updates if len(keep) == len(updates) else updates.index_select(0, rows)
        kept_ctx = ctx.select(keep)  # its finite mask is all True: the aggregator need not scan again
        result = aggregate_checked(self.aggregator, kept, kept_ctx)
        check_result(result, name, len(keep), self.layout.num_params)
        if not torch.isfinite(result.update).all():
            record.kept_previous_model = True
            record.kept_reason = f"got a non-finite update from {name}"
            warnings.warn(f"round {ctx.round}: {name} returned a non-finite update; keeping the previous "
                          "global model", RuntimeWarning, stacklevel=3)
            return
        buffers = None
        if self.layout.num_buffers:
            share = kept_ctx.num_samples / kept_ctx.num_samples.sum()
            buffers = share @ local_buffers.index_select(0, rows)
        # finite updates can still sum to an overflowing model (attackers sending 3e38): the step is guarded
        broken = self.global_model.step(result.update, buffers)
        if broken:
            record.kept_previous_model = True
            record.kept_reason = f"would have made the global model's {broken} non-finite (NaN or Inf) with {name}"
            warnings.warn(f"round {ctx.round}: {name}'s update would make the global model's {broken} non-finite "
                          "(NaN or Inf); keeping the previous global model", RuntimeWarning, stacklevel=3)
            return
        record.client_weights = result.client_weights
        flagged = result.diagnostics.get("flagged")
        if flagged is not None:
            record.flagged_ids = [kept_ctx.client_ids[i] for i in torch.nonzero(flagged).flatten().tolist()]
        record.metrics.update(round_metrics.weight_scalars(result.client_weights, kept_ctx.client_ids,
                                                           self.plan.attacker_ids))
        record.metrics.update(round_metrics.diagnostic_scalars(result.diagnostics))
        record.diagnostics = result.diagnostics

    def _report_non_finite(self, record: RoundRecord) -> None:
        """Warn about, and log as text, a kept model's reason and every metric that is NaN or Inf."""
        notes = [f"round {record.round}: kept the previous global model: it {record.kept_reason}"
                 ] if record.kept_previous_model and record.kept_reason else []
        bad = non_finite_metrics(record.metrics)
        if bad:
            shown = ", ".join(f"{name}={record.metrics[name]}" for name in bad)
            notes.append(f"round {record.round}: non-finite metrics {shown} (the global model's outputs overflow "
                         "or the test data holds NaN/Inf)")
            warnings.warn(notes[-1], RuntimeWarning, stacklevel=3)
        for note in notes:
            self.logger_connector.log_text("round/problems", note, record.round)

    def _log_run_start(self) -> None:
        """Hyper-parameters, the data partition and the attackers, once at the start of a fresh run."""
        connector = self.logger_connector
        connector.log_hyperparams(self.hparams())
        connector.log_text("data/partition_fingerprint", self.datamodule.fingerprint)
        if connector.draws_figures and self.datamodule.has_class_labels:
            from fl_lightning.data.figures import class_histogram_figure

            histogram = self.datamodule.client_class_histogram()
            connector.log_figure("data/client_class_histogram", class_histogram_figure(histogram), 0)
        attackers = ", ".join(f"{type(a).__name__}: {list(a.attacker_ids)}" for a in self.attacks) or "none"
        connector.log_text("attack/attacker_ids", attackers)

    # -- test -------------------------------------------------------------------------------------------------
    def test(self) -> dict[str, float]:
        """Evaluate the current global model: ``test/acc``, ``test/loss``, attack and defense metrics."""
        if self.module is None or self.datamodule is None:
            raise RuntimeError("call fit(module, datamodule) before test()")
        with seeded_rng(derive_seed(self.seed, "evaluate", "test"), self.device):
            results = self.evaluator(self.module, self.datamodule.test, val=getattr(self.datamodule, "val", None))
        if self.history and self.attacks:
            last = self.history[-1].metrics
            for key in ("defense/precision", "defense/recall"):
                if key in last:
                    results[key] = last[key]
        return results

    def hparams(self) -> dict[str, Any]:
        """The run's configuration as recorded in TensorBoard and checkpoints."""
        params: dict[str, Any] = {
            "rounds": self.rounds, "local_epochs": self.local_epochs,
            "clients_per_round": self.clients_per_round or 0, "seed": self.seed,
            "batch_size": self.batch_size, "engine": type(self.engine).__name__,
            "accelerator": self.accelerator, "precision": self.precision,
            "scheduler_scope": self.scheduler_scope,
            "aggregator": repr(self.aggregator), "model": type(self.module).__name__,
            "client_momentum": self.client_momentum, "proximal_mu": self.proximal_mu,
            "keep_optimizer_state": self.keep_optimizer_state,
            "server_optimizer": (repr(self.global_model.server_optimizer)
                                 if getattr(self, "global_model", None) is not None
                                 and self.global_model.server_optimizer is not None else "none"),
            "versions/torch": str(torch.__version__), "versions/lightning": str(L.__version__),
            "versions/fl_lightning": __version__,
        }
        if self.local_steps is not None:  # only when set: older runs' checkpoints resume without a difference
            params["local_steps"] = self.local_steps
        if self.datamodule is not None:
            params.update({f"data/{k}": v for k, v in self.datamodule.hparams().items()})
            params["data/fingerprint"] = self.datamodule.fingerprint
        for attack in self.attacks:
            params.update({f"attack/{attack.state_key}/{k}": v for k, v in attack.hparams().items()})
        module_hparams = getattr(self.module, "hparams", {}) or {}
        params.update({f"model/{k}": v for k, v in dict(module_hparams).items()
                       if isinstance(v, (int, float, str, bool))})
        return params


def _default_aggregator() -> Aggregator:
    from fl_lightning.aggregators import FedAvg

    return FedAvg()
