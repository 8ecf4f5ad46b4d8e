"""The training and test datasets behind a user's ``LightningDataModule``."""
from __future__ import annotations

import importlib
from typing import Any

OWNER = "FederatedDataModule.from_lightning"
#: attributes that commonly hold a data module's datasets, tried when its dataloader is not defined
TRAIN_ATTRIBUTES = ("train_dataset", "dataset_train", "train_set", "trainset", "train_data", "train_ds", "train")
TEST_ATTRIBUTES = ("test_dataset", "dataset_test", "test_set", "testset", "test_data", "test_ds", "test")
VAL_ATTRIBUTES = ("val_dataset", "dataset_val", "val_set", "valset", "val_data", "val_ds", "val")


def _placeholders(hook: str) -> tuple[Any, ...]:
    """Lightning's own default ``hook`` functions (they raise "must be implemented"), for each installed Lightning."""
    found = []
    for module_name in ("lightning.pytorch.core.hooks", "pytorch_lightning.core.hooks"):
        try:
            hooks = importlib.import_module(module_name)
        except ImportError:
            continue
        found.append(getattr(getattr(hooks, "DataHooks", None), hook, None))
    return tuple(f for f in found if f is not None)


def _overrides(datamodule: Any, hook: str) -> bool:
    """Whether ``datamodule``'s class defines ``hook`` anywhere but Lightning's raising default.

    A hook defined by a class shipped with Lightning (``BoringDataModule``, ``MNISTDataModule``) or
    by a subclass of one counts like the user's own; only ``DataHooks``' placeholder does not.
    """
    owner = next((c for c in type(datamodule).__mro__ if hook in vars(c)), None)
    return owner is not None and vars(owner)[hook] not in _placeholders(hook)


def _dataset_of(datamodule: Any, hook: str, attributes: tuple[str, ...]) -> Any | None:
    """``datamodule.<hook>().dataset`` when the hook is defined, else the first dataset-like attribute."""
    if _overrides(datamodule, hook):
        loader = getattr(datamodule, hook)()
        if isinstance(loader, (list, tuple)):  # several test loaders: the first is the test set
            loader = loader[0] if loader else None
        if isinstance(loader, dict):
            loader = next(iter(loader.values()), None)
        dataset = getattr(loader, "dataset", None)
        if dataset is None:
            raise TypeError(f"{OWNER}: {type(datamodule).__name__}.{hook}() returned {type(loader).__name__}, "
                            "not a torch DataLoader; return a DataLoader over a map-style dataset")
        return dataset
    for name in attributes:
        dataset = getattr(datamodule, name, None)
        if dataset is not None and hasattr(dataset, "__getitem__") and hasattr(dataset, "__len__"):
            return dataset
    return None


def lightning_datasets(datamodule: Any) -> tuple[Any, Any | None]:
    """``(train, test)`` of ``datamodule`` after ``prepare_data()``, ``setup("fit")`` and ``setup("test")``.

    The training set is ``train_dataloader().dataset`` (or a ``train_dataset``-like attribute); the
    test set is ``test_dataloader().dataset`` when that hook is defined (or a ``test_dataset``-like
    attribute), else ``None``.
    """
    if not all(callable(getattr(datamodule, hook, None)) for hook in ("prepare_data", "setup")):
        raise TypeError(f"{OWNER}: datamodule must be a LightningDataModule (prepare_data and setup), got "
                        f"{type(datamodule).__name__}; for plain datasets use FederatedDataModule.from_datasets")
    datamodule.prepare_data()
    datamodule.setup("fit")
    datamodule.setup("test")
    train = _dataset_of(datamodule, "train_dataloader", TRAIN_ATTRIBUTES)
    if train is None:
        raise ValueError(f"{OWNER}: {type(datamodule).__name__} defines no train_dataloader() and has none of the "
                         f"attributes {', '.join(TRAIN_ATTRIBUTES)}; define train_dataloader()")
    return train, _dataset_of(datamodule, "test_dataloader", TEST_ATTRIBUTES)


def validation_dataset(datamodule: Any) -> Any | None:
    """``val_dataloader().dataset`` of a set-up data module, a ``val_dataset``-like attribute, or ``None``."""
    return _dataset_of(datamodule, "val_dataloader", VAL_ATTRIBUTES)
