"""Recipes with a grid: read the YAML, apply a profile, expand the grid into named points.

A recipe is an ``fl-lightning fit`` config plus two optional sections::

    sweep:
      paper: table4                      # entry of fl_lightning/paper_results.yaml for the report
      rows: [aggregator]                 # report rows when there is no paper entry (default below)
      grid:                              # axes: every combination is one point
        trainer.attacks.0.init_args.sigma: [0, 1, 2, 3]
    profiles:
      small:                             # fl-lightning sweep --config X.yaml --profile small
        trainer.rounds: 1                # dotted overrides of the base config
        max_values_per_axis: 2           # keep the first values of every axis
        grid: {trainer.seed: [0]}        # replace (or add) axes

``fl-lightning sweep --set KEY=VALUE`` applies further dotted overrides after the profile.

Axis keys are dotted paths into the config as the YAML nests it; integer segments index lists
(``trainer.attacks.0.init_args.clients``); ``aggregator`` is short for ``trainer.aggregator``. A
recipe's ``aggregators:`` list (what ``fit`` runs one after another) becomes the axis ``aggregator``
unless the grid names that axis itself; the aggregator axis always comes first.
"""
from __future__ import annotations

import copy
import itertools
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fl_lightning.recipe_bounds import read_text, safe_load

#: top-level keys of a fit config that sweep and profile keys may start with
CONFIG_KEYS = ("trainer", "model", "data", "aggregators", "name", "save_dir", "description", "follow_symlinks")
#: short forms of axis and override keys
SHORTHANDS = {"aggregator": "trainer.aggregator"}
SWEEP_KEYS = ("grid", "paper", "rows", "baseline", "heatmap")
#: roles of ``sweep.heatmap``: which axis makes the figures, rows, columns and panels of the heatmaps
HEATMAP_ROLES = ("figures", "rows", "columns", "panels")
ATTACKS = "trainer.attacks"
PROFILE_KEYS = ("grid", "max_values_per_axis")
AGGREGATOR = "trainer.aggregator"
_UNSAFE = re.compile(r"[^A-Za-z0-9_.,=+-]")


def normalize_key(key: str) -> str:
    """The full dotted path of a sweep or override key (``aggregator.init_args.x`` -> ``trainer.aggregator.init_args.x``)."""
    if not isinstance(key, str) or not key or any(not part for part in key.split(".")):
        raise ValueError(f"sweep key {key!r} is not a dotted path such as 'trainer.rounds'")
    head, _, rest = key.partition(".")
    if head in SHORTHANDS:
        head = SHORTHANDS[head]
    elif head not in CONFIG_KEYS:
        raise ValueError(f"unknown sweep key {key!r}: it must start with one of "
                         f"{sorted(CONFIG_KEYS + tuple(SHORTHANDS))}")
    return f"{head}.{rest}" if rest else head


def set_path(tree: dict, key: str, value: Any) -> None:
    """Set ``key`` (dotted, list indices allowed) in the nested config ``tree``, creating missing mappings."""
    parts = normalize_key(key).split(".")
    node: Any = tree
    for depth, part in enumerate(parts):
        where = ".".join(parts[:depth]) or "the config"
        last = depth == len(parts) - 1
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ValueError(f"sweep key {key!r}: {where} is a list of {len(node)} items; "
                                 f"{part!r} is not an index in 0..{len(node) - 1}")
            if last:
                node[int(part)] = value
            else:
                node = node[int(part)]
        elif isinstance(node, dict):
            if last:
                node[part] = value
            else:
                if node.get(part) is None:
                    node[part] = {}
                node = node[part]
        else:
            raise ValueError(f"sweep key {key!r}: {where} is {node!r}, not a mapping or list; write it "
                             "as a mapping (e.g. class_path + init_args) in the recipe")


def value_label(value: Any) -> str:
    """How a scalar axis value is written in point names, reports and the paper's data file."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "none"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return "+".join(value_label(v) for v in value)
    if isinstance(value, dict) and "class_path" in value:
        args = value.get("init_args") or {}
        inner = ",".join(f"{k}={value_label(v)}" for k, v in args.items())
        return value["class_path"].rsplit(".", 1)[-1] + (f"({inner})" if inner else "")
    if isinstance(value, dict):
        return ",".join(f"{k}={value_label(v)}" for k, v in value.items())
    return str(value)


@dataclass
class Axis:
    """One grid axis: a config path and its values."""

    key: str
    values: list

    @property
    def path(self) -> str:
        """The full dotted path the values are written to."""
        return normalize_key(self.key)

    @property
    def short(self) -> str:
        """The path's last meaningful segment (``clients`` for ``trainer.attacks.0.init_args.clients``,
        ``attacks`` for ``trainer.attacks.0``)."""
        return short_name(self.path)

    def labels(self) -> list[str]:
        """A readable label per value; ``class_path`` values by class name and the init_args that tell them apart."""
        if not all(isinstance(v, dict) and "class_path" in v for v in self.values):
            return [value_label(v) for v in self.values]
        classes = [v["class_path"].rsplit(".", 1)[-1] for v in self.values]
        args = [v.get("init_args") or {} for v in self.values]
        labels = []
        for cls, own in zip(classes, args):
            peers = [a for c, a in zip(classes, args) if c == cls]
            # differing arguments, and always the rule a wrapper wraps (NNM's inner)
            differing = {k: v for k, v in own.items() if any(p.get(k, _MISSING) != v for p in peers)
                         or (isinstance(v, dict) and "class_path" in v)}
            text = ",".join(f"{k}={value_label(v)}" for k, v in differing.items())
            one_class = len(set(classes)) == 1
            labels.append(text if one_class and text else "_".join(filter(None, [cls, text])))
        return labels


_MISSING = object()


def short_name(path: str) -> str:
    """The last segment of a dotted path, or the one before it when the last is a list index."""
    parts = path.split(".")
    return parts[-2] if parts[-1].isdigit() and len(parts) > 1 else parts[-1]


def is_attack_path(path: str) -> bool:
    """Whether a full dotted path lies under ``trainer.attacks``."""
    return path == ATTACKS or path.startswith(ATTACKS + ".")


@dataclass
class Point:
    """One combination of axis values: its name, parameters and the full fit config."""

    name: str
    params: dict[str, Any]
    labels: dict[str, str]
    config: dict


@dataclass
class Recipe:
    """A recipe after its profile: the base fit config and the grid."""

    base: dict
    axes: list[Axis]
    paper: str | None = None
    rows: list[str] | None = None
    profile: str | None = None
    path: str | None = None
    profiles: list[str] = field(default_factory=list)
    baseline: dict[str, Any] = field(default_factory=dict)
    heatmap: dict[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """The sweep's folder name under ``save_dir``."""
        return str(self.base.get("name", "default"))

    @property
    def save_dir(self) -> str:
        """The TensorBoard root."""
        return str(self.base.get("save_dir", "logs"))

    def points(self) -> list[Point]:
        """Every combination of axis values, in grid order (the last axis varies fastest).

        A combination that matches ``baseline`` runs without attacks: its attack axes are labelled
        ``none`` and it is listed once, not once per attack.
        """
        labels = [axis.labels() for axis in self.axes]
        base = copy.deepcopy(self.base)
        base.pop("aggregators", None)  # every point runs exactly one aggregator
        points, seen = [], {}
        for combo in itertools.product(*(range(len(axis.values)) for axis in self.axes)):
            config = copy.deepcopy(base)
            params, point_labels = {}, {}
            for axis, axis_labels, i in zip(self.axes, labels, combo):
                params[axis.key], point_labels[axis.key] = axis.values[i], axis_labels[i]
            no_attack = self._is_baseline(params)
            # shorter paths first: an aggregator value is written before an axis sets one of its init_args
            for axis in sorted(self.axes, key=lambda a: a.path.count(".")):
                if no_attack and is_attack_path(axis.path) and axis.path not in self.baseline:
                    params[axis.key], point_labels[axis.key] = None, "none"
                elif not (no_attack and is_attack_path(axis.path)):
                    set_path(config, axis.path, copy.deepcopy(params[axis.key]))
            if no_attack:
                config.setdefault("trainer", {})[ATTACKS.split(".")[1]] = []
            name = self._point_name(point_labels)
            if no_attack and name in seen and seen[name] == params:
                continue  # the same attack-free run, already listed for an earlier attack
            if name in seen:
                raise ValueError(f"grid points {seen[name]} and {params} both get the name {name!r}; "
                                 "make the axis values differ in their first 6 significant digits")
            seen[name] = params
            points.append(Point(name, params, point_labels, config))
        return points

    def _is_baseline(self, params: dict[str, Any]) -> bool:
        """Whether a combination takes every ``baseline`` value (and so runs without attacks)."""
        if not self.baseline:
            return False
        by_path = {normalize_key(k): v for k, v in params.items()}
        return all(by_path.get(path, _MISSING) == value for path, value in self.baseline.items())

    def _point_name(self, labels: dict[str, str]) -> str:
        varying = [axis for axis in self.axes if len(axis.values) > 1]
        shorts = [axis.short for axis in varying]
        parts = []
        for axis in varying:
            if axis.path == AGGREGATOR:
                parts.append(labels[axis.key])
            else:
                short = axis.short if shorts.count(axis.short) == 1 else axis.path.replace("init_args.", "")
                parts.append(f"{short}={labels[axis.key]}")
        if not parts:
            aggregator = next((a for a in self.axes if a.path == AGGREGATOR), None)
            parts = [labels[aggregator.key]] if aggregator else ["base"]
        return _UNSAFE.sub("_", "-".join(parts))


def load_recipe(path: str | Path, profile: str | None = None, overrides: dict[str, Any] | None = None) -> Recipe:
    """Read a recipe YAML, apply ``profiles.<profile>`` when given, then the dotted ``overrides``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"recipe {path} does not exist; pass --config recipes/NAME.yaml")
    raw = safe_load(read_text(path), f"recipe {path}")
    if not isinstance(raw, dict):
        raise ValueError(f"recipe {path} must be a YAML mapping (trainer:, model:, data:, ...)")
    return recipe_from_dict(raw, profile, str(path), overrides)


def recipe_from_dict(raw: dict, profile: str | None = None, path: str | None = None,
                     overrides: dict[str, Any] | None = None) -> Recipe:
    """Build a :class:`Recipe` from an already parsed recipe mapping (profile, then ``overrides``)."""
    base = copy.deepcopy(raw)
    sweep = base.pop("sweep", None) or {}
    profiles = base.pop("profiles", None) or {}
    where = path or "the recipe"
    if not isinstance(sweep, dict) or set(sweep) - set(SWEEP_KEYS):
        raise ValueError(f"{where}: sweep: takes only the keys {list(SWEEP_KEYS)} (axes go under sweep.grid), "
                         f"got {sorted(sweep) if isinstance(sweep, dict) else sweep!r}")
    grid = dict(sweep.get("grid") or {})
    max_values = None
    if profile is not None:
        if profile not in profiles:
            raise ValueError(f"{where} has no profile {profile!r}; its profiles are {sorted(profiles) or 'none'}")
        layer = dict(profiles[profile] or {})
        grid.update(layer.pop("grid", None) or {})
        max_values = layer.pop("max_values_per_axis", None)
        for key, value in layer.items():
            set_path(base, key, copy.deepcopy(value))
        if "name" not in layer:
            base["name"] = f"{base.get('name', 'default')}-{profile}"
    for key, value in (overrides or {}).items():
        _warn_class_swap(base, key, value)
        set_path(base, key, copy.deepcopy(value))
    axes = [_axis(key, values, where) for key, values in grid.items()]
    if not any(axis.path == AGGREGATOR for axis in axes) and base.get("aggregators"):
        axes.append(Axis("aggregator", list(base["aggregators"])))
    axes.sort(key=lambda axis: axis.path != AGGREGATOR)  # the aggregator axis first: names start with it
    if max_values is not None:
        if not isinstance(max_values, int) or max_values < 1:
            raise ValueError(f"{where}: profiles.{profile}.max_values_per_axis must be an integer >= 1, "
                             f"got {max_values!r}")
        axes = [Axis(axis.key, axis.values[:max_values]) for axis in axes]
    rows = sweep.get("rows")
    baseline = _baseline(sweep.get("baseline"), axes, where)
    heatmap = _heatmap(sweep.get("heatmap"), axes, where)
    return Recipe(base=base, axes=axes, paper=sweep.get("paper"), rows=list(rows) if rows else None,
                  profile=profile, path=path, profiles=sorted(profiles), baseline=baseline, heatmap=heatmap)


def _baseline(raw: Any, axes: list[Axis], where: str) -> dict[str, Any]:
    """``sweep.baseline`` as full paths; each must be a grid axis and hold one of its values."""
    if raw is None:
        return {}
    if not isinstance(raw, dict) or not raw:
        raise ValueError(f"{where}: sweep.baseline must map grid axes to the value that means 'no attack', "
                         f"e.g. {{trainer.attacks.0.init_args.clients: 0}}, got {raw!r}")
    by_path = {axis.path: axis for axis in axes}
    out = {}
    for key, value in raw.items():
        path = normalize_key(key)
        if path not in by_path or value not in by_path[path].values:
            raise ValueError(f"{where}: sweep.baseline {key}: {value!r} must name a grid axis and one of its "
                             f"values; the axes are {sorted(by_path)}")
        out[path] = value
    return out


def _heatmap(raw: Any, axes: list[Axis], where: str) -> dict[str, str]:
    """``sweep.heatmap`` as full paths; every role must name a grid axis."""
    if raw is None:
        return {}
    paths = {axis.path for axis in axes}
    if not isinstance(raw, dict) or set(raw) - set(HEATMAP_ROLES) or not {"rows", "columns"} <= set(raw):
        raise ValueError(f"{where}: sweep.heatmap takes rows and columns (and optionally figures, panels), "
                         f"each a grid axis, got {raw!r}")
    out = {role: normalize_key(key) for role, key in raw.items()}
    unknown = [key for key in out.values() if key not in paths]
    if unknown:
        raise ValueError(f"{where}: sweep.heatmap names {unknown}, which are not grid axes {sorted(paths)}")
    return out


def _warn_class_swap(base: dict, key: str, value: Any) -> None:
    """Warn when ``--set X.class_path=New`` keeps the ``init_args`` written for the class it replaces."""
    path = normalize_key(key)
    if not path.endswith(".class_path"):
        return
    node: Any = base
    for part in path.split(".")[:-1]:
        if isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        elif isinstance(node, dict) and part in node:
            node = node[part]
        else:
            return
    if not isinstance(node, dict):
        return
    old, kept = node.get("class_path"), node.get("init_args") or {}
    if old and old != value and kept:
        shown = ", ".join(f"{k}: {v!r}" for k, v in kept.items())
        warnings.warn(f"--set {key}={value}: the init_args written for {old} carry over to {value} ({shown}); "
                      f"set {path[:-len('class_path')]}init_args to replace them", UserWarning, stacklevel=3)


def _axis(key: str, values: Any, where: str) -> Axis:
    normalize_key(key)  # raises on an unknown key
    if not isinstance(values, list) or not values:
        raise ValueError(f"{where}: sweep axis {key!r} needs a non-empty list of values, got {values!r}")
    return Axis(key, values)
