"""Lightning's ``accelerator`` / ``devices`` / ``precision`` names for the in-process round loop: checked, resolved."""
from __future__ import annotations

from typing import Any

import torch

from fl_lightning.checks import check_choice
from fl_lightning.engines.precision import PRECISIONS

ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps")
#: Lightning's older spellings of the supported precisions
_PRECISION_ALIASES = {"32": "32-true", "bf16": "bf16-mixed", "16": "16-mixed"}
_OWNER = "FederatedTrainer"


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_accelerator(accelerator: Any) -> str:
    """``"cpu"``, ``"cuda"`` or ``"mps"`` for a Lightning accelerator name; ``"auto"`` prefers CUDA, then MPS."""
    name = check_choice(accelerator, ACCELERATORS, "accelerator", _OWNER)
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "mps" if _mps_available() else "cpu"
    if name == "gpu":
        if torch.cuda.is_available():
            return "cuda"
        if _mps_available():
            return "mps"
        raise ValueError(f"{_OWNER}: accelerator='gpu' but neither CUDA nor MPS is available on this machine; "
                         "use accelerator='cpu' (or 'auto')")
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{_OWNER}: accelerator='cuda' but CUDA is not available on this machine "
                         f"(torch {torch.__version__}, built for CUDA {torch.version.cuda}); use accelerator='cpu' "
                         "(or 'auto', which picks CUDA where there is one)")
    if name == "mps" and not _mps_available():
        raise ValueError(f"{_OWNER}: accelerator='mps' but MPS is not available on this machine; use "
                         "accelerator='cpu' (or 'auto')")
    return name


def resolve_devices(devices: Any, accelerator: str) -> torch.device:
    """The one device of the run: ``devices=1`` / ``"auto"`` / ``[index]``; several are refused with the way to get them."""
    index = None
    if isinstance(devices, (list, tuple)) and len(devices) == 1 and isinstance(devices[0], int):
        index = int(devices[0])
        count = 1
    elif devices == "auto" or devices == -1:
        count = 1
    elif isinstance(devices, int) and not isinstance(devices, bool):
        count = devices
    else:
        raise TypeError(f"{_OWNER}: devices must be 1, 'auto' or a list of one device index, got {devices!r}")
    if count != 1:
        raise ValueError(f"{_OWNER}: devices={devices!r}, but the in-process round loop trains on one device; "
                         "to use several, pass engine='ray' (one worker per device) or run several processes "
                         "(e.g. Flower clients, fl_lightning.integrations)")
    if index is not None and accelerator == "cpu":
        index = None
    if index is not None and accelerator == "cuda" and index >= torch.cuda.device_count():
        raise ValueError(f"{_OWNER}: devices=[{index}] but this machine has {torch.cuda.device_count()} CUDA "
                         "device(s)")
    return torch.device(accelerator, index) if index is not None else torch.device(accelerator)


def resolve_precision(precision: Any, accelerator: str) -> str:
    """One of :data:`PRECISIONS` (Lightning's older ``"32"`` / ``"16"`` / ``"bf16"`` accepted)."""
    if isinstance(precision, int) and not isinstance(precision, bool):
        precision = str(precision)
    if isinstance(precision, str):
        precision = _PRECISION_ALIASES.get(precision, precision)
    if isinstance(precision, str) and precision not in PRECISIONS:
        raise ValueError(f"{_OWNER}: precision={precision!r} is not supported; the round loop keeps float32 "
                         f"weights, so choose one of {', '.join(PRECISIONS)}")
    name = check_choice(precision, PRECISIONS, "precision", _OWNER)
    if name == "16-mixed" and accelerator == "cpu":
        raise ValueError(f"{_OWNER}: precision='16-mixed' needs a GPU (fp16 autocast on CPU is not supported, "
                         "as in Lightning); use precision='bf16-mixed' on CPU")
    return name


def get_lightning_engine(accelerator: str, precision: str) -> Any:
    """``engine="lightning"``: a :class:`~fl_lightning.engines.LightningEngine` on the trainer's accelerator and precision."""
    from fl_lightning.engines.lightning import LightningEngine

    return LightningEngine(accelerator=accelerator, precision=precision)
