"""Clients trained on a Ray cluster by a pool of long-lived actors, each holding its own copy of the module.

What travels, and how often:

* the module: pickled once at :meth:`RayEngine.setup` (``ray.put``), unpickled once per actor;
* the global weights: one ``ray.put`` per round, shared by reference by every client of the round;
* a client's data: one ``ray.put`` the first time the client is trained, the ``ObjectRef`` reused
  in later rounds (as numpy arrays, so actors on the same node read it from shared memory); a free
  actor takes first a client it trained before, whose data its node likely holds already;
* a client's result: its flat parameters and buffers, fetched as soon as it finishes (``ray.wait``)
  and copied into its row of ``out_params`` / ``out_buffers``, after which the reference is dropped.

Each actor trains with :func:`~fl_lightning.engines.local_training.train_client`, the loop of
:class:`~fl_lightning.engines.SequentialEngine`, so a seed gives the same clients' models on
both engines (up to float rounding from a different number of CPU threads).
"""
from __future__ import annotations

import math
import os
import time
import traceback
import warnings
from collections import deque
from dataclasses import dataclass
from typing import Any, Sequence

import lightning as L
import numpy as np
import torch
from torch import Tensor

try:
    import ray
    from ray.exceptions import RayActorError, RayError
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError("RayEngine needs Ray: pip install 'fl-lightning[ray]'") from exc

from fl_lightning.checks import check_number, check_optional_int, check_positive
from fl_lightning.context import LocalConfig
from fl_lightning.data.base import TensorData
from fl_lightning.context import BatchPoisoner
from fl_lightning.engines.base import ClientOutcome, ClientTask, Engine
from fl_lightning.engines.local_training import LocalTrainingError, train_client
from fl_lightning.engines.module_weights import LayoutGuard, ModuleLayoutError
from fl_lightning.engines.train_options import ScheduleState, TrainOptions
from fl_lightning.param_layout import ParamLayout, flatten, load_flat_, module_tensors


@dataclass
class _WorkerTask:
    """What an actor needs for one client besides the global weights and the data (sent by reference)."""

    client_id: int
    config: LocalConfig
    seed: int
    batch_poisoner: BatchPoisoner | None
    precision: str = "32-true"
    proximal_mu: float = 0.0
    options: TrainOptions = TrainOptions()
    schedule: ScheduleState | None = None


def _to_numpy(tensor: Tensor) -> np.ndarray | Tensor:
    """A numpy view when numpy knows the dtype (zero-copy reads from Ray's object store), else the tensor."""
    try:
        return tensor.detach().cpu().contiguous().numpy()
    except TypeError:  # e.g. bfloat16: Ray pickles the tensor instead
        return tensor.detach().cpu().contiguous()


def _to_tensor(value: np.ndarray | Tensor) -> Tensor:
    """Wrap an array read from the object store (read-only shared memory) without copying it."""
    if isinstance(value, Tensor):
        return value
    with warnings.catch_warnings():  # the arrays are only read: local training indexes them (a copy)
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(value)


class ClientWorker:
    """A Ray actor: the user's module, reset from the global weights and trained for one client per call."""

    def __init__(self, module: L.LightningModule, layout: ParamLayout, num_threads: int) -> None:
        torch.set_num_threads(max(1, num_threads))
        gpu_ids = ray.get_gpu_ids()
        self.device = torch.device("cuda", 0) if gpu_ids and torch.cuda.is_available() else torch.device("cpu")
        self.load_module(module, layout)

    def load_module(self, module: L.LightningModule, layout: ParamLayout) -> None:
        """Hold ``module`` from now on (a new ``fit()`` reusing this actor sends its module here)."""
        self.module = module.to(self.device)
        self.layout = layout
        self._params = module_tensors(module, layout.params, "params")
        self._buffers = module_tensors(module, layout.buffers, "buffers")
        named = dict(module.named_buffers())
        self._int_buffers = [named[name] for name in layout.int_buffers]
        self._guard = LayoutGuard(module)

    def ready(self) -> int:
        """The actor's process id, once the module is loaded (the driver waits on it)."""
        return os.getpid()

    def rss_bytes(self) -> tuple[int, int]:
        """The actor's process id and resident memory (for benchmarks and monitoring)."""
        return os.getpid(), _rss_bytes()

    def train(self, global_state: dict[str, Any], data: dict[str, Any], task: _WorkerTask) -> dict[str, Any]:
        """Load the global state, train ``task`` and return the flat local parameters and buffers."""
        started = time.perf_counter()
        self._load(global_state)
        inputs = _to_tensor(data["inputs"]).to(self.device)
        targets = _to_tensor(data["targets"]).to(self.device)
        client = ClientTask(task.client_id, TensorData(inputs, targets), task.config, task.seed, task.batch_poisoner,
                            precision=task.precision, options=task.options, schedule=task.schedule,
                            proximal_mu=task.proximal_mu)
        try:
            loss = train_client(self.module, client, self._guard.check)
        except ModuleLayoutError as exc:  # drop the client, repair the module for the next one
            self._guard.restore()
            return {"error": f"{type(exc).__name__}: {exc}", "traceback": "",
                    "layout_change": (exc.hook, exc.difference)}
        except LocalTrainingError as exc:
            return {"fatal": str(exc)}
        except Exception as exc:  # a failing client is dropped by the driver, the actor stays usable
            return {"error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc(limit=8)}
        return {"params": flatten(self._params).cpu().numpy(), "buffers": flatten(self._buffers).cpu().numpy(),
                "loss": float(loss), "logged": dict(loss.logged), "prog_bar": sorted(loss.prog_bar),
                "seconds": time.perf_counter() - started,
                "pid": os.getpid(),
                "node_id": ray.get_runtime_context().get_node_id()}

    def _load(self, state: dict[str, Any]) -> None:
        load_flat_(self._params, _to_tensor(state["params"]))
        load_flat_(self._buffers, _to_tensor(state["buffers"]))
        with torch.no_grad():
            for live, saved in zip(self._int_buffers, state["int_buffers"]):
                live.copy_(_to_tensor(saved))


class RayEngine(Engine):
    """Trains each round's clients on a pool of Ray actors, locally or on a cluster.

    ``address=None`` starts a local Ray sized to this machine (``num_cpus`` from ``init_kwargs``
    or ``os.cpu_count()``); ``"auto"`` or ``"ray://host:10001"`` joins a running cluster. Ray is
    never initialised twice: an already running Ray is used as is. The pool holds at most
    ``max_concurrency`` actors (default: as many as the cluster's CPUs / GPUs allow for
    ``num_cpus_per_client`` / ``num_gpus_per_client``), and no more than a round's clients.

    On a cluster the actors are spread over the nodes (Ray's ``SPREAD`` scheduling) and each
    client's outcome records the node that trained it (``outcome.extras["node_id"]``). A node lost
    mid-round costs the clients it was training (dropped for that round, like any dead worker); the
    pool shrinks to the surviving nodes and the next round runs there.

    A client whose training raises, whose actor dies, or that runs longer than
    ``client_timeout_s`` seconds is dropped for the round (its outcome carries the error, a
    warning names it); a dead or timed-out actor is replaced. ``batch_poisoner`` callables and
    the module travel with cloudpickle: they must be picklable, and the module's class must be
    importable on every node (or defined in ``__main__``).

    Clients that keep their optimizer across rounds (``keep_optimizer_state``) are refused: a client
    trains on whichever actor is free, so its state would have to travel with every task. Client
    momentum and FedProx work (the momentum is kept by the trainer, ``proximal_mu`` travels with the task).
    """

    supports_optimizer_state = False

    #: seconds a round waits for Ray to place at least one worker before it fails (autoscaling may be slow)
    worker_start_timeout_s: float = 600.0

    def __init__(self, address: str | None = None, num_cpus_per_client: float = 1,
                 num_gpus_per_client: float = 0, max_concurrency: int | None = None,
                 client_timeout_s: float | None = None, init_kwargs: dict[str, Any] | None = None) -> None:
        check_positive(num_cpus_per_client, "num_cpus_per_client", "RayEngine")
        check_number(num_gpus_per_client, "num_gpus_per_client", "RayEngine", low=0.0)
        # None: as many workers as the cluster allows; no time limit
        check_optional_int(max_concurrency, "max_concurrency", "RayEngine", minimum=1)
        if client_timeout_s is not None:
            check_positive(client_timeout_s, "client_timeout_s", "RayEngine")
        self.address = address
        self.num_cpus_per_client = num_cpus_per_client
        self.num_gpus_per_client = num_gpus_per_client
        self.max_concurrency = max_concurrency
        self.client_timeout_s = client_timeout_s
        self.init_kwargs = dict(init_kwargs or {})
        self._started_ray = False
        self._module_ref: Any = None
        self._workers: list[Any] = []
        self._starting: dict[Any, Any] = {}  # ready() ref -> actor not yet usable
        self._data: dict[int, tuple[TensorData, Any]] = {}
        self._generation = 0  # bumped by every setup(): actors holding an older module get the new one
        self._loaded: dict[Any, int] = {}  # actor -> generation of the module it holds
        self._affinity: dict[int, Any] = {}  # client id -> the actor that trained it last
        #: counters for tests and benchmarks: data puts, actors started / replaced
        self.stats = {"data_puts": 0, "actors_started": 0, "actors_replaced": 0}

    # -- lifecycle ----------------------------------------------------------------------------------------
    def setup(self, module: L.LightningModule, layout: ParamLayout) -> None:
        """Start or join Ray and put the module in the object store (the actors start at the first round).

        Called again without :meth:`teardown` (a second ``fit()`` on the same engine), it keeps the
        warm actors and sends them the new module before their next client.
        """
        super().setup(module, layout)
        self._data = {}
        self._generation += 1
        if not ray.is_initialized():
            self._workers, self._starting, self._loaded, self._affinity = [], {}, {}, {}  # a Ray that is gone
            kwargs = dict(self.init_kwargs)
            if self.address is None and "address" not in kwargs:  # a new local Ray: size it to this machine
                kwargs.setdefault("num_cpus", os.cpu_count() or 1)
                kwargs.setdefault("include_dashboard", False)
            elif self.address is not None:
                kwargs["address"] = self.address
            try:
                ray.init(**kwargs)
            except ConnectionError as exc:
                raise ConnectionError(
                    f"RayEngine(address={self.address!r}) could not reach a Ray cluster ({exc}); start one "
                    "with `ray start --head` (and `ray start --address=HEAD:6379` on the other nodes), or "
                    "use address=None for a Ray on this machine only") from exc
            self._started_ray = True
        named = dict(module.named_buffers())
        self._int_buffers = [named[name] for name in layout.int_buffers]
        try:
            self._module_ref = ray.put(module)
        except Exception as exc:
            raise TypeError(f"RayEngine ships the module to its workers with cloudpickle, and "
                            f"{type(module).__name__} could not be pickled ({type(exc).__name__}: {exc}); "
                            "keep unpicklable objects (open files, locks, loggers) out of the module's "
                            "attributes") from exc
        self._capacity = self._cluster_capacity()
        # SPREAD: on a cluster the pool's actors go to as many nodes as possible, so one node's loss
        # costs the fewest workers and every node's CPUs train
        self._actor_cls = ray.remote(ClientWorker).options(
            num_cpus=self.num_cpus_per_client, num_gpus=self.num_gpus_per_client, max_restarts=0,
            scheduling_strategy="SPREAD")

    def warm_up(self, num_workers: int | None = None) -> int:
        """Start the pool (``num_workers`` actors, default: as many as the cluster allows) and wait until ready.

        Rounds start actors on demand; call this after :meth:`setup` to keep actor start-up (process
        start, ``import torch``, unpickling the module) out of the first round's time. Returns the pool size.
        """
        if self._module_ref is None:
            raise RuntimeError("RayEngine.warm_up called before setup(module, layout)")
        self._ensure_pool(num_workers or self._capacity)
        while self._starting:
            ready, _ = ray.wait(list(self._starting), num_returns=1,
                                timeout=self.worker_start_timeout_s)
            if not ready:
                self._starvation_timeout(time.perf_counter() - self.worker_start_timeout_s)
            self._actor_ready(ready[0])
        return len(self._workers)

    def worker_rss_bytes(self) -> dict[int, int]:
        """Resident memory of each ready actor's process, by process id (to watch for growth over a run)."""
        pids_and_rss = ray.get([actor.rss_bytes.remote() for actor in self._workers])
        return dict(pids_and_rss)

    def teardown(self) -> None:
        """Kill the actors, release every reference, and shut Ray down if this engine started it."""
        self._release()
        if self._started_ray and ray.is_initialized():
            ray.shutdown()
        self._started_ray = False

    def _release(self) -> None:
        for actor in self._workers + list(self._starting.values()):
            try:
                ray.kill(actor, no_restart=True)
            except Exception:  # already dead
                pass
        self._workers, self._starting, self._data, self._loaded, self._module_ref = [], {}, {}, {}, None
        self._affinity = {}

    def __repr__(self) -> str:
        return (f"RayEngine(address={self.address!r}, num_cpus_per_client={self.num_cpus_per_client}, "
                f"num_gpus_per_client={self.num_gpus_per_client}, max_concurrency={self.max_concurrency}, "
                f"client_timeout_s={self.client_timeout_s})")

    def _cluster_capacity(self) -> int:
        resources = ray.cluster_resources()
        limits = [int(resources.get("CPU", 1) // self.num_cpus_per_client)]
        if self.num_gpus_per_client:
            limits.append(int(resources.get("GPU", 0) // self.num_gpus_per_client))
            if limits[-1] == 0:
                raise RuntimeError(f"RayEngine: num_gpus_per_client={self.num_gpus_per_client} but the Ray "
                                   f"cluster has {resources.get('GPU', 0)} GPUs; add GPU nodes or set it to 0")
        capacity = max(1, min(limits))
        return min(capacity, self.max_concurrency) if self.max_concurrency else capacity

    def _start_actor(self) -> None:
        actor = self._actor_cls.remote(self._module_ref, self.layout, max(1, math.floor(self.num_cpus_per_client)))
        self._starting[actor.ready.remote()] = actor
        self._loaded[actor] = self._generation
        self.stats["actors_started"] += 1

    def _ensure_pool(self, num_tasks: int) -> None:
        wanted = min(self._capacity, num_tasks)
        while len(self._workers) + len(self._starting) < wanted:
            self._start_actor()

    # -- one round ------------------------------------------------------------------------------------------
    def _data_ref(self, task: ClientTask) -> Any:
        """The client's data in the object store, put the first time and reused while it is the same data."""
        if not isinstance(getattr(task.data, "inputs", None), Tensor):
            raise TypeError(f"RayEngine ships a client's data as in-memory tensors, but client {task.client_id} holds "
                            f"{type(task.data).__name__} (read lazily, or samples of another structure); use "
                            "engine='sequential' or 'lightning' for such data")
        cached = self._data.get(task.client_id)
        if cached is not None and cached[0].inputs is task.data.inputs and cached[0].targets is task.data.targets:
            return cached[1]
        ref = ray.put({"inputs": _to_numpy(task.data.inputs), "targets": _to_numpy(task.data.targets)})
        self._data[task.client_id] = (task.data, ref)
        self.stats["data_puts"] += 1
        return ref

    def train_round(self, global_params: Tensor, global_buffers: Tensor, tasks: Sequence[ClientTask],
                    out_params: Tensor, out_buffers: Tensor) -> list[ClientOutcome]:
        """Train the tasks on the actor pool, each actor one client at a time; results land as they finish."""
        if self._module_ref is None:
            raise RuntimeError("RayEngine.train_round called before setup(module, layout) (or after teardown())")
        outcomes = [ClientOutcome(t.client_id, len(t.data)) for t in tasks]
        if not tasks:
            return outcomes
        self._ensure_pool(len(tasks))
        global_ref = ray.put({"params": _to_numpy(global_params), "buffers": _to_numpy(global_buffers),
                              "int_buffers": [_to_numpy(b) for b in self._int_buffers]})
        pending = deque(range(len(tasks)))
        idle = list(self._workers)
        running: dict[Any, tuple[int, Any, float]] = {}  # result ref -> (row, actor, submitted at)
        starved_since: float | None = None
        waiting: list[Any] = []
        ready: list[Any] = []
        try:
            while pending or running:
                while pending and idle:
                    actor = idle.pop()
                    row = self._next_row(pending, tasks, actor)
                    task = tasks[row]
                    if self._loaded.get(actor) != self._generation:  # calls to one actor run in order
                        actor.load_module.remote(self._module_ref, self.layout)
                        self._loaded[actor] = self._generation
                    worker_task = _WorkerTask(task.client_id, task.config, task.seed, task.batch_poisoner,
                                              task.precision, task.proximal_mu, task.options, task.schedule)
                    ref = actor.train.remote(global_ref, self._data_ref(task), worker_task)
                    self._affinity[task.client_id] = actor
                    running[ref] = (row, actor, time.perf_counter())
                waiting = list(running) + list(self._starting)
                timeout = self._wait_timeout(running)
                if not running:  # every usable actor is still starting: Ray may lack the resources
                    starved_since = starved_since or time.perf_counter()
                    timeout = self._starvation_timeout(starved_since)
                else:
                    starved_since = None
                ready, waiting = ray.wait(waiting, num_returns=1, timeout=timeout)
                for ref in ready:
                    if ref in self._starting:
                        idle.append(self._actor_ready(ref))
                    else:
                        row, actor, submitted = running.pop(ref)
                        if self._collect(ref, row, tasks[row], outcomes[row], out_params, out_buffers, submitted):
                            idle.append(actor)
                        else:
                            self._replace(actor)
                for ref in self._overdue(running):
                    row, actor, _ = running.pop(ref)
                    self._drop(tasks[row], outcomes[row], f"timed out after {self.client_timeout_s} s")
                    outcomes[row].seconds = self.client_timeout_s or 0.0
                    ray.kill(actor, no_restart=True)
                    self._replace(actor)
        finally:
            for ref in running:  # only after a fatal error: stop the clients still training
                try:
                    ray.cancel(ref)
                except Exception:  # already finished or not cancellable: its result is simply dropped
                    pass
            # an exception's traceback keeps this frame alive: hold no object references in it
            running.clear()
            waiting.clear()
            ready.clear()
            ref = global_ref = None
        return outcomes

    def _next_row(self, pending: deque[int], tasks: Sequence[ClientTask], actor: Any) -> int:
        """The first pending client this actor trained before (its data is likely on its node), else the first."""
        for i, row in enumerate(pending):
            if self._affinity.get(tasks[row].client_id) is actor:
                del pending[i]
                return row
        return pending.popleft()

    def _starvation_timeout(self, since: float) -> float:
        remaining = since + self.worker_start_timeout_s - time.perf_counter()
        if remaining <= 0:
            raise RuntimeError(
                f"RayEngine: no client worker could start within {self.worker_start_timeout_s:.0f} s; Ray has "
                f"{ray.available_resources()} free and each worker needs {{'CPU': {self.num_cpus_per_client}, "
                f"'GPU': {self.num_gpus_per_client}}}. Free resources (another engine or job may hold them), "
                "add nodes, or lower num_cpus_per_client / num_gpus_per_client")
        return remaining

    def _wait_timeout(self, running: dict[Any, tuple[int, Any, float]]) -> float | None:
        if self.client_timeout_s is None or not running:
            return None
        oldest = min(submitted for _, _, submitted in running.values())
        return max(0.0, oldest + self.client_timeout_s - time.perf_counter())

    def _overdue(self, running: dict[Any, tuple[int, Any, float]]) -> list[Any]:
        if self.client_timeout_s is None:
            return []
        now = time.perf_counter()
        return [ref for ref, (_, _, submitted) in running.items() if now - submitted >= self.client_timeout_s]

    def _actor_ready(self, ref: Any) -> Any:
        actor = self._starting.pop(ref)
        try:
            ray.get(ref)
        except RayError as exc:
            raise RuntimeError(
                f"RayEngine could not start a client worker: {exc}. Every Ray node must be able to import "
                "fl_lightning and the module's class: install them there or pass "
                "init_kwargs={'runtime_env': {...}}") from exc
        self._workers.append(actor)
        return actor

    def _collect(self, ref: Any, row: int, task: ClientTask, outcome: ClientOutcome, out_params: Tensor,
                 out_buffers: Tensor, submitted: float) -> bool:
        """Copy a finished client's result into its rows; returns whether its actor is still usable."""
        try:
            result = ray.get(ref)
        except RayActorError as exc:
            self._drop(task, outcome, f"its Ray worker died ({type(exc).__name__})")
            return False
        except RayError as exc:
            self._drop(task, outcome, f"{type(exc).__name__}: {exc}")
            return True
        finally:
            outcome.seconds = time.perf_counter() - submitted
        if "fatal" in result:
            raise LocalTrainingError(result["fatal"])
        if "error" in result:
            self._drop(task, outcome, result["error"])
            outcome.extras["traceback"] = result["traceback"]
            if "layout_change" in result:
                outcome.extras["layout_change"] = tuple(result["layout_change"])
            return True
        out_params[row].copy_(_to_tensor(result["params"]))
        out_buffers[row].copy_(_to_tensor(result["buffers"]))
        outcome.train_loss = result["loss"]
        outcome.logged = result["logged"]
        outcome.prog_bar = frozenset(result.get("prog_bar", ()))
        outcome.extras.update(worker_pid=result["pid"], train_seconds=result["seconds"], node_id=result["node_id"])
        return True

    def _drop(self, task: ClientTask, outcome: ClientOutcome, reason: str) -> None:
        outcome.error = reason
        warnings.warn(f"client {task.client_id} failed and is dropped this round: {reason}",
                      RuntimeWarning, stacklevel=4)

    def _replace(self, actor: Any) -> None:
        if actor in self._workers:
            self._workers.remove(actor)
        self._loaded.pop(actor, None)
        self._affinity = {cid: a for cid, a in self._affinity.items() if a is not actor}
        self.stats["actors_replaced"] += 1
        self._start_actor()


def _rss_bytes() -> int:
    """Resident set size of this process, from ``/proc`` (Linux) or ``resource`` (peak, elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
