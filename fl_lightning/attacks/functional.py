"""Model-poisoning attacks as pure functions: honest updates ``[H, N]`` in, the attackers' rows ``[A, N]`` out.

The torchmetrics split, as in :mod:`fl_lightning.aggregators.functional`: the attack classes hold
the hyper-parameters, the attacker set and the schedule, and call these functions for the maths.
``honest`` is what an omniscient attacker sees (the other clients' rows of the round); ``own``
are the attackers' own trained rows, for the attacks that start from them. Every function returns
a new tensor of ``honest``'s dtype and device and never writes its inputs (random draws happen on the
generator's device, the CPU by default, and are moved, so a seed crafts the same rows on every device).

Imports only torch, :mod:`fl_lightning.checks` and :mod:`fl_lightning.aggregators.functional`
(Krum, for Fang's attack).
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

from fl_lightning.checks import check_choice, check_int, check_number, check_positive

#: how :func:`min_max` and :func:`min_sum` perturb the honest mean (Shejwalkar & Houmansadr 2021, Sec. IV)
PERTURBATIONS = ("unit", "std", "sign")

#: an aggregation rule seen as a function of the ``[K, N]`` updates, for the optimal attacks
AggregatorFn = Callable[[Tensor], Tensor]


def _check_matrix(updates: Tensor, name: str, what: str = "honest", min_rows: int = 1) -> None:
    if not isinstance(updates, Tensor) or updates.dim() != 2:
        raise ValueError(f"{name}: {what} must be a [rows, N] tensor, got "
                         f"{tuple(updates.shape) if isinstance(updates, Tensor) else type(updates).__name__}")
    if updates.shape[0] < min_rows:
        raise ValueError(f"{name}: needs at least {min_rows} {what} row(s), got {updates.shape[0]}")


def _finite_honest(honest: Tensor, name: str) -> Tensor:
    """The finite rows of ``honest``: a NaN or Inf row would make every crafted row NaN and the attack vanish.

    ``ValueError`` when there were rows and none is finite (nothing to craft from).
    """
    # a NaN or Inf anywhere makes its row's sum non-finite: one cheap reduction clears the usual case
    # (rows the round loop has already scanned), the exact scan runs only when a sum is not finite
    if bool((honest.sum(dim=1).abs() < math.inf).all()):
        return honest
    finite = torch.isfinite(honest).all(dim=1)
    if bool(finite.all()):
        return honest
    if not bool(finite.any()):
        raise ValueError(f"{name}: every one of the {honest.shape[0]} honest rows holds NaN or Inf; "
                         f"pass at least one finite honest row to craft from")
    return honest[finite]


def _check_count(num_attackers: int, name: str) -> None:
    check_int(num_attackers, "num_attackers", name, minimum=0)


def _repeat(row: Tensor, num_attackers: int) -> Tensor:
    return row.unsqueeze(0).expand(num_attackers, -1).clone()


def _honest_std(honest: Tensor) -> Tensor:
    """Unbiased per-coordinate standard deviation; 0 with a single row."""
    return honest.std(dim=0) if honest.shape[0] > 1 else torch.zeros_like(honest[0])


# -- the classic crafted updates -------------------------------------------------------------------------
def sign_flip(own: Tensor, scale: float = 1.0) -> Tensor:
    """Each attacker sends its own update reversed and scaled: ``-scale * own`` (not omniscient)."""
    _check_matrix(own, "sign_flip", "own", 0)
    return -scale * own


def alie_paper_z(n: int, f: int) -> float:
    """Baruch et al.'s (2019) ``z_max`` for ``n`` clients of which ``f`` attack.

    ``s = floor(n/2 + 1) - f`` clients must be won over; ``z = Phi^-1((n - s) / n)``. ``s`` is
    raised to 1 when the attackers are a majority, so that ``z`` stays finite.
    """
    s = max(math.floor(n / 2 + 1) - f, 1)
    return float(torch.distributions.Normal(0.0, 1.0).icdf(torch.tensor((n - s) / n, dtype=torch.float64)))


def alie(honest: Tensor, num_attackers: int, z: float | None = None) -> Tensor:
    """"A little is enough" (Baruch et al. 2019): every attacker sends ``mean - z * std`` of the honest rows.

    ``std`` is unbiased (0 for one row); ``z=None`` is :func:`alie_paper_z` for ``H + A`` clients.
    """
    _check_matrix(honest, "alie")
    _check_count(num_attackers, "alie")
    honest = _finite_honest(honest, "alie")
    if z is None:
        z = alie_paper_z(honest.shape[0] + num_attackers, num_attackers)
    return _repeat(honest.mean(dim=0) - z * _honest_std(honest), num_attackers)


def ipm(honest: Tensor, num_attackers: int, epsilon: float = 0.5) -> Tensor:
    """Inner-product manipulation (Xie et al. 2020): every attacker sends ``-epsilon * mean`` of the honest rows."""
    _check_matrix(honest, "ipm")
    _check_count(num_attackers, "ipm")
    honest = _finite_honest(honest, "ipm")
    return _repeat(-epsilon * honest.mean(dim=0), num_attackers)


def gaussian_noise(own: Tensor, global_params: Tensor, sigma: float, noise: Tensor) -> Tensor:
    """The paper's Gaussian attack (Sec. 4.4): each attacker's model ``global + own`` times ``1 + sigma * noise``.

    ``noise`` (``[A, N]`` draws of N(0, 1)) is passed in, so the caller owns the randomness; the
    returned rows are ``noisy model - global``.
    """
    _check_matrix(own, "gaussian_noise", "own", 0)
    model = global_params.to(own) + own
    return own + sigma * model * noise.to(own)


def inf(honest: Tensor, num_attackers: int) -> Tensor:
    """Rows of ``+inf`` (ByzFL's ``Inf``): what a broken or hostile client may send; servers must drop them."""
    _check_matrix(honest, "inf", min_rows=0)
    _check_count(num_attackers, "inf")
    return torch.full((num_attackers, honest.shape[1]), math.inf, dtype=honest.dtype, device=honest.device)


# -- Mimic (Karimireddy, He & Jaggi, ICLR 2022) -----------------------------------------------------------
def mimic_victim(honest: Tensor) -> int:
    """The honest row Mimic copies by default: the one furthest out along the honest rows' top principal direction.

    Karimireddy et al. pick the worker that maximises ``<z, x_i>`` for ``z`` the top eigenvector of
    the honest covariance, so that copying it over-weights the most heterogeneous direction. The
    absolute projection is used, so the SVD's arbitrary sign of ``z`` does not matter; ties go to
    the first row. Deterministic: the same rows give the same victim.
    """
    _check_matrix(honest, "mimic_victim")
    if not bool(torch.isfinite(honest).all()):
        raise ValueError("mimic_victim: the honest rows hold NaN or Inf; pass the finite rows only "
                         "(mimic does) so that the victim's index points into them")
    centred = (honest - honest.mean(dim=0)).double()
    if honest.shape[0] == 1 or not bool(centred.abs().sum() > 0):
        return 0
    direction = torch.linalg.svd(centred, full_matrices=False).Vh[0]
    return int(torch.argmax((centred @ direction).abs()))


def mimic(honest: Tensor, num_attackers: int, victim: int | None = None) -> Tensor:
    """Mimic (Karimireddy et al. 2022): every attacker sends a copy of honest row ``victim``.

    ``victim=None`` chooses it with :func:`mimic_victim`. ByzFL's ``Mimic(epsilon)`` is ``victim=epsilon``.
    """
    _check_matrix(honest, "mimic")
    _check_count(num_attackers, "mimic")
    if victim is None:
        finite = torch.nonzero(torch.isfinite(honest).all(dim=1)).flatten()
        index = int(finite[mimic_victim(_finite_honest(honest, "mimic"))])   # an index into all rows
    else:
        index = check_int(victim, "victim", "mimic", minimum=0, maximum=honest.shape[0] - 1)
        if not bool(torch.isfinite(honest[index]).all()):
            raise ValueError(f"mimic: the victim row {index} holds NaN or Inf; choose a finite honest row "
                             f"or victim=None")
    return _repeat(honest[index], num_attackers)


# -- Min-Max and Min-Sum (Shejwalkar & Houmansadr, NDSS 2021) ----------------------------------------------
def perturbation(honest: Tensor, kind: str = "unit") -> Tensor:
    """The paper's perturbation ``p`` added to the honest mean (Sec. IV-B): it points against the honest step.

    ``"unit"``: ``-mean / ||mean||``; ``"std"``: ``-std`` (unbiased); ``"sign"``: ``-sign(mean)``.
    """
    _check_matrix(honest, "perturbation")
    honest = _finite_honest(honest, "perturbation")
    mean = honest.mean(dim=0)
    if kind == "unit":
        norm = mean.norm()
        return -mean / norm if bool(norm > 0) else torch.zeros_like(mean)
    if kind == "std":
        return -_honest_std(honest)
    if kind == "sign":
        return -torch.sign(mean)
    check_choice(kind, PERTURBATIONS, "perturbation", "perturbation")
    raise AssertionError("unreachable")


def _largest_feasible(feasible: Callable[[float], bool], gamma_init: float, tol: float) -> float:
    """The largest ``gamma >= 0`` with ``feasible(gamma)``, to within ``tol``, for a feasible set ``[0, gamma*]``.

    The paper halves a step from ``gamma_init`` (so it never looks past ``2 * gamma_init``); here the
    bracket is first doubled until ``gamma`` fails, then bisected until it is ``tol`` wide, so
    ``gamma`` is feasible and ``gamma + tol`` is not, whatever the scale of the updates.
    """
    low, high = 0.0, gamma_init
    while feasible(high):
        low, high = high, 2.0 * high
        if high > 1e30:                    # the constraint never binds (p = 0): any scale is the same row
            return low
    while high - low > tol:
        middle = 0.5 * (low + high)
        if feasible(middle):
            low = middle
        else:
            high = middle
    return low


def _check_search(name: str, kind: str, gamma_init: float, tol: float) -> None:
    check_choice(kind, PERTURBATIONS, "perturbation", name)
    check_positive(gamma_init, "gamma_init", name)
    check_positive(tol, "tol", name)


def _scaled(honest: Tensor, num_attackers: int, kind: str, gamma_init: float, tol: float,
            objective: Callable[[Tensor, Tensor], Callable[[float], bool]]) -> Tensor:
    mean = honest.mean(dim=0)
    p = perturbation(honest, kind)
    # distances in float64 through ||m + g p - x||^2 = ||m - x||^2 + 2 g <p, m - x> + g^2 ||p||^2:
    # each trial scale costs O(H), not O(H N)
    gamma = _largest_feasible(objective(mean.double(), p.double()), gamma_init, tol)
    return _repeat(mean + gamma * p, num_attackers)


def min_max(honest: Tensor, num_attackers: int, perturbation: str = "unit", *, gamma_init: float = 10.0,
            tol: float = 1e-5) -> Tensor:
    """Min-Max (Shejwalkar & Houmansadr 2021, Eq. 5): ``mean + gamma p`` with the largest ``gamma`` such that
    its largest distance to an honest row is at most the largest distance between two honest rows.

    Every attacker sends that row. ``gamma`` is found to within ``tol`` (see :func:`_largest_feasible`).
    """
    _check_matrix(honest, "min_max")
    _check_count(num_attackers, "min_max")
    _check_search("min_max", perturbation, gamma_init, tol)
    honest = _finite_honest(honest, "min_max")
    rows = honest.double()
    bound = torch.cdist(rows, rows).max() ** 2

    def objective(mean: Tensor, p: Tensor) -> Callable[[float], bool]:
        offsets = mean - rows
        base, cross, size = (offsets * offsets).sum(dim=1), 2.0 * (offsets @ p), float(p @ p)
        return lambda gamma: bool((base + gamma * cross + gamma * gamma * size).max() <= bound)

    return _scaled(honest, num_attackers, perturbation, gamma_init, tol, objective)


def min_sum(honest: Tensor, num_attackers: int, perturbation: str = "unit", *, gamma_init: float = 10.0,
            tol: float = 1e-5) -> Tensor:
    """Min-Sum (Shejwalkar & Houmansadr 2021, Eq. 6): ``mean + gamma p`` with the largest ``gamma`` such that
    its sum of squared distances to the honest rows is at most the largest such sum of an honest row.
    """
    _check_matrix(honest, "min_sum")
    _check_count(num_attackers, "min_sum")
    _check_search("min_sum", perturbation, gamma_init, tol)
    honest = _finite_honest(honest, "min_sum")
    rows = honest.double()
    bound = (torch.cdist(rows, rows) ** 2).sum(dim=1).max()

    def objective(mean: Tensor, p: Tensor) -> Callable[[float], bool]:
        offsets = mean - rows
        base, cross, size = float((offsets * offsets).sum()), 2.0 * float((offsets @ p).sum()), float(p @ p)
        count = rows.shape[0]
        return lambda gamma: base + gamma * cross + count * gamma * gamma * size <= float(bound)

    return _scaled(honest, num_attackers, perturbation, gamma_init, tol, objective)


# -- Fang et al., USENIX Security 2020: full-knowledge attacks ---------------------------------------------
def fang_trimmed_mean(honest: Tensor, num_attackers: int, *, b: float = 2.0,
                      generator: torch.Generator | None = None) -> Tensor:
    """Fang et al.'s full-knowledge attack on Trimmed mean / Median (Sec. 3.2), on updates.

    ``s = sign(mean)`` is the direction the honest step would move each coordinate. Where it rises
    (``s > 0``) every attacker draws a value below the honest minimum ``w_min``, uniformly in
    ``[w_min / b, w_min]`` if ``w_min > 0`` else ``[b * w_min, w_min]``; where it falls, above the
    honest maximum, in ``[w_max, b * w_max]`` if ``w_max > 0`` else ``[w_max / b, w_max]``.
    The paper writes it for model parameters; on updates (model minus the global one) the same
    rule pushes the aggregate against the honest step. ``b > 1`` (paper: 2).
    """
    _check_matrix(honest, "fang_trimmed_mean")
    _check_count(num_attackers, "fang_trimmed_mean")
    check_number(b, "b", "fang_trimmed_mean", low=1.0, low_inclusive=False)
    honest = _finite_honest(honest, "fang_trimmed_mean")
    w_max, w_min = honest.max(dim=0).values, honest.min(dim=0).values
    rises = honest.mean(dim=0) > 0
    low = torch.where(rises, torch.where(w_min > 0, w_min / b, w_min * b), w_max)
    high = torch.where(rises, w_min, torch.where(w_max > 0, w_max * b, w_max / b))
    # drawn on the generator's device (the CPU by default) and moved: one seed, the same rows on every device
    draw_on = torch.device("cpu") if generator is None else generator.device
    draws = torch.rand(num_attackers, honest.shape[1], generator=generator, dtype=honest.dtype, device=draw_on)
    return low + draws.to(honest.device) * (high - low)


def fang_krum_lambda_bound(honest: Tensor, num_attackers: int, f: int | None = None) -> float:
    """Fang et al.'s upper bound on ``lambda`` (Sec. 3.1, Eq. 4), on updates (``w_Re`` is the zero update).

    ``1 / ((m - 2c - 1) sqrt(d)) * min_i sum_{l in Gamma_i} ||w_l - w_i|| + max_i ||w_i|| / sqrt(d)``
    over honest ``i``, ``Gamma_i`` its ``m - c - 2`` nearest honest rows, ``m`` all clients, ``c = f``.
    """
    h, d = honest.shape
    c = num_attackers if f is None else f
    m = h + num_attackers
    dist = torch.cdist(honest.double(), honest.double())
    neighbours = max(min(m - c - 2, h - 1), 0)
    near = torch.sort(dist, dim=1).values[:, 1:1 + neighbours].sum(dim=1)
    spread = float(near.min()) / (max(m - 2 * c - 1, 1) * math.sqrt(d))
    return spread + float(honest.double().norm(dim=1).max()) / math.sqrt(d)


def fang_krum(honest: Tensor, num_attackers: int, f: int | None = None, *, threshold: float = 1e-5) -> Tensor:
    """Fang et al.'s full-knowledge attack on Krum (Sec. 3.1), on updates: every attacker sends ``-lambda s``.

    ``s = sign(mean)`` is the honest step's direction. ``lambda`` starts at
    :func:`fang_krum_lambda_bound` and is halved until Krum with ``f`` (default: the number of
    attackers) over ``[honest; attackers]`` selects an attacker, or until it falls below
    ``threshold``, where the paper stops and keeps ``threshold``. The paper's ``c - 1`` helpers
    within ``epsilon`` of the first are exact copies here (``epsilon = 0``).
    """
    from fl_lightning.aggregators.functional import krum_select

    _check_matrix(honest, "fang_krum")
    _check_count(num_attackers, "fang_krum")
    f = num_attackers if f is None else f
    if num_attackers == 0 or honest.shape[1] == 0:      # nothing to craft (lambda's bound divides by sqrt(N))
        return honest.new_zeros(num_attackers, honest.shape[1])
    honest = _finite_honest(honest, "fang_krum")
    direction = -torch.sign(honest.mean(dim=0))
    lam = fang_krum_lambda_bound(honest, num_attackers, f)
    h = honest.shape[0]
    while lam >= threshold:
        crafted = _repeat(lam * direction, num_attackers)
        if int(krum_select(torch.cat([honest, crafted]), f)[0]) >= h:
            return crafted
        lam /= 2.0
    return _repeat(threshold * direction, num_attackers)


# -- ByzFL's optimised ALIE and IPM ------------------------------------------------------------------------
def line_search(objective: Callable[[float], float], start: float, delta: float, evals: int = 20,
                ratio: float = 0.8) -> tuple[float, float]:
    """Maximise ``objective`` along one direction, as ByzFL's optimal attacks do: ``(best x, best value)``.

    Expansion: step by ``delta`` from ``start``, doubling the step while the value improves; at the
    first failure the step shrinks by ``ratio`` and contraction tries ``best + step`` with an ever
    smaller step until ``evals`` evaluations (the start included) are spent. Never returns a worse
    value than ``objective(start)``.
    """
    best_x, best_y = start, objective(start)
    remaining = evals - 1
    step = delta
    while remaining > 0:
        trial = best_x + step
        value = objective(trial)
        remaining -= 1
        if value > best_y:
            best_x, best_y = trial, value
            step *= 2.0
        else:
            step *= ratio
            break
    while remaining > 0:
        trial = best_x + step
        value = objective(trial)
        remaining -= 1
        if value > best_y:
            best_x, best_y = trial, value
        step *= ratio
    return best_x, best_y


def _check_line_search(name: str, evals: int, delta: float, ratio: float) -> None:
    check_int(evals, "evals", name, minimum=1)
    if check_number(delta, "delta", name) == 0:
        raise ValueError(f"{name}: delta must be a finite non-zero number, got {delta!r}")
    check_number(ratio, "ratio", name, low=0.5, high=1.0, low_inclusive=False, high_inclusive=False)


def attack_distance(honest: Tensor, crafted: Tensor, aggregator: AggregatorFn) -> float:
    """How far ``aggregator`` over ``[honest; crafted]`` lands from the honest mean (L2): what optimal attacks maximise."""
    return float((aggregator(torch.cat([honest, crafted])) - honest.mean(dim=0)).double().norm())


def optimal_alie(honest: Tensor, num_attackers: int, aggregator: AggregatorFn, *, start: float | None = None,
                 delta: float = 10.0, evals: int = 20, ratio: float = 0.8) -> Tensor:
    """ALIE with the ``z`` found by :func:`line_search` to move ``aggregator``'s output furthest from the honest mean.

    ``aggregator`` maps the ``[H + A, N]`` rows (honest first) to ``[N]``. ``start=None`` starts at
    the paper's ``z`` (:func:`alie_paper_z`), so the result is never weaker than plain ALIE against
    that rule. ByzFL's ``Optimal_ALittleIsEnough`` writes ``mean + tau * std``: ``tau = -z``, so its
    ``start``/``delta`` are the negatives of these.
    """
    _check_matrix(honest, "optimal_alie")
    _check_count(num_attackers, "optimal_alie")
    _check_line_search("optimal_alie", evals, delta, ratio)
    if num_attackers == 0:
        return honest.new_zeros(0, honest.shape[1])
    honest = _finite_honest(honest, "optimal_alie")
    if start is None:
        start = alie_paper_z(honest.shape[0] + num_attackers, num_attackers)
    z, _ = line_search(lambda z: attack_distance(honest, alie(honest, num_attackers, z), aggregator),
                       start, delta, evals, ratio)
    return alie(honest, num_attackers, z)


def optimal_ipm(honest: Tensor, num_attackers: int, aggregator: AggregatorFn, *, start: float = 0.5,
                delta: float = 10.0, evals: int = 20, ratio: float = 0.8) -> Tensor:
    """IPM with the ``epsilon`` found by :func:`line_search` to move ``aggregator``'s output furthest from the honest mean.

    ``start`` defaults to plain IPM's ``epsilon = 0.5``, so the result is never weaker than it against
    that rule (ByzFL starts at 0; its ``tau`` is this ``epsilon``).
    """
    _check_matrix(honest, "optimal_ipm")
    _check_count(num_attackers, "optimal_ipm")
    _check_line_search("optimal_ipm", evals, delta, ratio)
    if num_attackers == 0:
        return honest.new_zeros(0, honest.shape[1])
    honest = _finite_honest(honest, "optimal_ipm")
    eps, _ = line_search(lambda e: attack_distance(honest, ipm(honest, num_attackers, e), aggregator),
                         start, delta, evals, ratio)
    return ipm(honest, num_attackers, eps)
