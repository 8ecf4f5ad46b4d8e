"""What a recipe may build: plug-in classes only, wherever a ``class_path`` sits, checked before anything is built.

A recipe is data. The config parser builds the objects its ``class_path`` entries name, so every entry, at
any depth of any field (command-line overrides, sweep points and logger ``init_args`` included), must name a
class of one of the kinds a recipe exists to build (:func:`buildable_kinds`): an fl_lightning aggregator,
attack, engine, callback or dataset, a ``LightningModule`` / ``LightningDataModule``, a torch ``Dataset`` or
``nn.Module`` (torchvision's v2 transforms are modules), a Lightning ``Logger``; and no argument typed
``Callable`` or ``type`` may name a function (the parser imports what it names). A function (``os.system``) or any other class (``shutil.rmtree``'s neighbours,
``subprocess.Popen``) is refused, naming the key, before anything is instantiated.

Values typed loosely (``dict[str, Any]`` keyword arguments such as ``LightningEngine(trainer_kwargs=...)`` or
``RayEngine(init_kwargs=...)``, ``Any``, lists of objects) are plain data from a recipe: the parser is told
never to build a ``class_path`` found there (:func:`keep_loose_values_plain`), and one found under a mapping
of such a value is refused with the key, since it would reach the receiver as an unbuilt spec.
"""
from __future__ import annotations

import functools
import importlib
import inspect
from typing import Any, Iterator

#: the message's advice: what to do instead
_FIX = ("a recipe builds only fl_lightning plug-ins (aggregators, attacks, engines, callbacks, datasets), "
        "LightningModules, torch Datasets and Modules, and Lightning loggers; build anything else in Python")


def buildable_kinds() -> tuple[type, ...]:
    """The base classes a recipe's ``class_path`` may name a subclass of."""
    import lightning as L
    from lightning.pytorch.loggers import Logger
    from torch.utils.data import Dataset

    from fl_lightning.aggregators.base import Aggregator
    from fl_lightning.attacks.base import Attack
    from fl_lightning.callbacks.base import FederatedCallback
    from fl_lightning.data.base import FederatedDataset
    from fl_lightning.data.datamodule import FederatedDataModule
    from fl_lightning.engines.base import Engine

    from torch import nn

    return (Aggregator, Attack, Engine, FederatedCallback, FederatedDataset, FederatedDataModule,
            L.LightningModule, L.LightningDataModule, Dataset, Logger, nn.Module)


def keep_loose_values_plain() -> None:
    """Tell jsonargparse never to build a ``class_path`` found in a value typed ``Any`` (its v5 default)."""
    from jsonargparse import set_parsing_settings

    set_parsing_settings(instantiate_subclass_spec_in_any=False)


def check_buildable(tree: Any, where: str = "", skip: tuple[str, ...] = ()) -> None:
    """Raise ``ValueError`` naming the key of the first ``class_path`` in ``tree`` that a recipe may not build.

    ``tree`` is a parsed config (a jsonargparse ``Namespace``, whose typed ``init_args`` are namespaces too)
    or one ``class_path`` entry; it is walked without recursion, so any depth is fine. A ``class_path`` below a
    plain mapping (a loosely typed value such as keyword arguments) is refused whatever it names; elsewhere it
    must name a class of :func:`buildable_kinds`. Top-level keys in ``skip`` (data the command never builds,
    such as ``sweep`` for ``fit``) are not walked.
    """
    _check_plain_leaves(tree, where, skip)
    kinds: tuple[type, ...] | None = None
    for key, spec, loose in _specs(tree, where, skip):
        class_path = spec.get("class_path") if isinstance(spec, dict) else getattr(spec, "class_path", None)
        shown = f"{key}.class_path" if key else "class_path"
        if not isinstance(class_path, str):
            raise ValueError(f"{shown} must be a class's import path (a string), got {class_path!r}")
        if loose:
            raise ValueError(f"{shown}: {class_path!r} sits inside a loosely typed value (keyword arguments, Any), "
                             "which a recipe passes as plain data and never builds; remove it, or build that "
                             "object in Python")
        kinds = kinds or buildable_kinds()
        found = _resolve(class_path, kinds)
        if found is None:
            continue  # names nothing importable: nothing can be built from it (the parser says what is wrong)
        if not (inspect.isclass(found) and issubclass(found, kinds)):
            what = "a function" if callable(found) and not inspect.isclass(found) else "not a plug-in class"
            raise ValueError(f"{shown}: {class_path!r} is {what}; {_FIX}")


def _check_plain_leaves(tree: Any, where: str, skip: tuple[str, ...]) -> None:
    """Refuse a function, class or module among the parsed values: the parser imported it from a name.

    jsonargparse turns text given to an argument typed ``Callable`` or ``type`` into what it names at parse
    time (torchvision's ``ImageFolder(loader="os.remove")`` would call ``os.remove`` on every image file).
    """
    from jsonargparse import Namespace

    stack: list[tuple[str, Any]] = [(where, tree)]
    while stack:
        key, node = stack.pop()
        if isinstance(node, Namespace):
            stack.extend((f"{key}.{k}" if key else k, v) for k, v in vars(node).items()
                         if not (node is tree and k in skip))
        elif isinstance(node, dict):
            stack.extend((f"{key}.{k}" if key else str(k), v) for k, v in node.items())
        elif isinstance(node, (list, tuple)):
            stack.extend((f"{key}.{i}" if key else str(i), v) for i, v in enumerate(node))
        elif inspect.isroutine(node) or inspect.isclass(node) or inspect.ismodule(node) \
                or isinstance(node, functools.partial):
            name = getattr(node, "__qualname__", None) or getattr(node, "__name__", type(node).__name__)
            raise ValueError(f"{key}: the recipe names {getattr(node, '__module__', '')}.{name}, which the parser "
                             "imported for an argument that takes a function or class; a recipe cannot name one: "
                             "leave the argument at its default or set it in Python")


def _specs(tree: Any, where: str, skip: tuple[str, ...]) -> Iterator[tuple[str, Any, bool]]:
    """``(dotted key, node, loose)`` of every node holding a ``class_path``; ``loose``: below a plain mapping."""
    from jsonargparse import Namespace

    stack: list[tuple[str, Any, bool]] = [(where, tree, False)]
    while stack:
        key, node, loose = stack.pop()
        if isinstance(node, Namespace):
            items: Any = vars(node).items()
        elif isinstance(node, dict):
            items = node.items()
        elif isinstance(node, (list, tuple)):
            items = enumerate(node)
        else:
            continue
        items = [(k, v) for k, v in items if not (node is tree and k in skip)]
        if any(k == "class_path" for k, _ in items):
            yield key, node, loose
        below_plain = loose or (isinstance(node, dict) and "class_path" not in node)
        for name, value in reversed(items):
            stack.append((f"{key}.{name}" if key else str(name), value, below_plain))


def _resolve(class_path: str, kinds: tuple[type, ...]) -> Any:
    """What ``class_path`` names: an import path, or the short name of a subclass of ``kinds`` (``None``: nothing)."""
    if "." not in class_path:
        pending, seen = list(kinds), set()
        while pending:
            cls = pending.pop()
            if cls.__name__ == class_path:
                return cls
            for sub in cls.__subclasses__():
                if sub not in seen:
                    seen.add(sub)
                    pending.append(sub)
        return None
    module_name, _, name = class_path.rpartition(".")
    parts = [name]
    while module_name:
        try:
            found: Any = importlib.import_module(module_name)
        except ImportError:
            module_name, _, outer = module_name.rpartition(".")
            parts.insert(0, outer)
            continue
        for part in parts:  # a nested class: module.Outer.Inner
            found = getattr(found, part, None)
        return found
    return None
