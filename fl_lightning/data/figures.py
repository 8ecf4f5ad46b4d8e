"""Figures of a partition, drawn off-screen (Agg) for ``SummaryWriter.add_figure`` or saving."""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
from torch import Tensor

if TYPE_CHECKING:
    from matplotlib.figure import Figure

_ANNOTATE_MAX_CELLS = 400


def class_histogram_figure(hist: Tensor | np.ndarray, class_names: Sequence[str] | None = None,
                           title: str = "samples per client and class") -> Figure:
    """A heatmap of ``hist[client, class]`` counts (e.g. ``FederatedDataModule.client_class_histogram()``).

    Built on a plain ``Figure`` with an Agg canvas, so it never opens a window nor touches
    pyplot's global state; counts are written in the cells when the grid is small.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    counts = np.asarray(hist.detach().cpu() if isinstance(hist, Tensor) else hist)
    if counts.ndim != 2:
        raise ValueError(f"class_histogram_figure needs a 2-d [num_clients, num_classes] array, "
                         f"got shape {tuple(counts.shape)}")
    num_clients, num_classes = counts.shape
    if class_names is not None and len(class_names) != num_classes:
        raise ValueError(f"class_names has {len(class_names)} names for {num_classes} classes")
    fig = Figure(figsize=(min(2 + 0.6 * num_classes, 16), min(1.5 + 0.35 * num_clients, 20)))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    image = ax.imshow(counts, aspect="auto", cmap="viridis", interpolation="nearest")
    fig.colorbar(image, ax=ax, label="samples")
    ax.set_xlabel("class")
    ax.set_ylabel("client")
    ax.set_title(title)
    ax.set_xticks(range(num_classes))
    ax.set_xticklabels(list(class_names) if class_names is not None else [str(c) for c in range(num_classes)],
                       rotation=45 if class_names is not None else 0, ha="right" if class_names else "center")
    if num_clients <= 40:
        ax.set_yticks(range(num_clients))
    if counts.size <= _ANNOTATE_MAX_CELLS:
        threshold = counts.max() / 2 if counts.size else 0
        for (row, col), value in np.ndenumerate(counts):
            ax.text(col, row, f"{value:g}", ha="center", va="center", fontsize=7,
                    color="black" if value > threshold else "white")
    fig.tight_layout()
    return fig
