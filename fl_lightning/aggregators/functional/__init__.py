"""Pure maths of every aggregation rule on a ``[K, N]`` matrix of client updates (one row per client).

Every function takes the stacked updates ``u`` of shape ``[K, N]`` and returns the ``[N]`` aggregate
(``foolsgold_weights`` returns ``[K]`` weights). Rows holding NaN or Inf are excluded before
anything else. Work is done in chunks of columns so the extra memory stays a small multiple of the
input; ``chunk_size`` overrides the number of columns per chunk where a function accepts it.

Everything a rule computes stays on the device of ``u`` (a ``finite`` mask or ``weights`` given on
another device are moved there). Random draws (FLAME's noise, DnC's coordinates, Bucketing's shuffle)
happen on the generator's device, the CPU by default, and are then moved: one seed gives the same
draws whether the updates live on the CPU or a GPU.

Medians follow the statistics convention (the mean of the two middle values for an even count), as
the reference implementation of residual reweighting does. The column-wise rules run many small ops
per chunk: they use one intra-op thread each and spread whole chunks over threads instead, which
keeps them fast on a machine whose cores are shared.

Krum and Multi-Krum rank clients from float32 products with a rigorous error interval per score and
rescore exactly where intervals overlap at the selection boundary (``_fast_distances``): the rows they
select are those exact scores select; other Gram-based rules keep float64 Gram matrices.

One module per family of rules (``coordinate``, ``distance``, ``spectral``, ``pre`` for the
pre-aggregators, ...); every public name, and the private helpers other modules use, is re-exported
here so that ``fl_lightning.aggregators.functional.krum`` is the one spelling users need.
"""
from __future__ import annotations

from fl_lightning.aggregators.functional._base import (  # noqa: F401
    _MIB, _PARALLEL_MIN_BYTES, _TARGET_ROW_ELEMENTS, _all_or_mask, _check_updates, _chunk_columns,
    _column_chunks, _finite_mask, _finite_weights, _given_or_scanned, _gram, _map_chunks, _map_columns,
    _mean_of_rows, _pairwise_sq_distances, _require_finite, _row_sq_distances, _single_threaded_ops, _weighted_rows,
    finite_rows, row_distances,
)
from fl_lightning.aggregators.functional._order import (  # noqa: F401
    _NETWORK_MAX, _SORT_NETWORK_MAX, _median0, _network_ops, _order_statistics, _run_network,
    _selection_network, _sorted_median, _stable_sort0,
)
from fl_lightning.aggregators.functional._rules import (  # noqa: F401
    BULYAN, ClientRule, KRUM, MAJORITY,
)
from fl_lightning.aggregators.functional.coordinate import (  # noqa: F401
    check_trim_share, coordinate_median, fedavg, meamed, repeated_median, trimmed_count, trimmed_mean,
)
from fl_lightning.aggregators.functional.residual import (  # noqa: F401
    ESTIMATORS, LineFit, ResidualReweightDetails, ResidualReweightResult, VARIANTS, WEIGHTINGS, _ChunkTotals,
    _Corrections, _leverage_factor, _line_of_sorted, _normalise_scores, _pairwise_slopes_by_row, _rank_gaps,
    _rr_bytes_per_column, check_residual_reweight_options, residual_reweight, residual_reweight_details,
    robust_line,
)
from fl_lightning.aggregators.functional.foolsgold import (  # noqa: F401
    _SIMILARITY_NOISE, foolsgold_weights,
)
from fl_lightning.aggregators.functional.distance import (  # noqa: F401
    KrumRanking, MAX_SUBSETS, SubsetResult, _check_bulyan, _full_mask, _krum_order, _subsets, bulyan,
    bulyan_selection, check_byzantine_count, krum, krum_ranking, krum_scores, krum_select, mda, mda_selection,
    monna, monna_selection,
)
from fl_lightning.aggregators.functional.geometric import (  # noqa: F401
    WeiszfeldResult, geometric_median, weiszfeld,
)
from fl_lightning.aggregators.functional.clipping import (  # noqa: F401
    centered_clipping, norm_clipping,
)
from fl_lightning.aggregators.functional.spectral import (  # noqa: F401
    CAFResult, _centred_gram, caf, caf_details, dnc, dnc_selection, smea, smea_selection,
)
from fl_lightning.aggregators.functional.flame import (  # noqa: F401
    FlameResult, cosine_distances, flame, flame_details,
)
from fl_lightning.aggregators.functional.fltrust import (  # noqa: F401
    FLTrustResult, _dots, fltrust, fltrust_details,
)
from fl_lightning.aggregators.functional.pre import (  # noqa: F401
    arc, arc_clip_count, arc_scales, bucket_indices, bucketing, nnm, nnm_weights,
)

__all__ = [
    "BULYAN", "ESTIMATORS", "KRUM", "MAJORITY", "MAX_SUBSETS", "VARIANTS", "WEIGHTINGS", "arc",
    "arc_clip_count", "arc_scales", "bucket_indices", "bucketing", "bulyan", "bulyan_selection", "caf",
    "caf_details", "CAFResult", "centered_clipping", "check_byzantine_count",
    "check_residual_reweight_options", "check_trim_share", "ClientRule", "coordinate_median",
    "cosine_distances", "dnc", "dnc_selection", "fedavg", "finite_rows", "flame", "flame_details",
    "FlameResult", "fltrust", "fltrust_details", "FLTrustResult", "foolsgold_weights", "geometric_median",
    "krum", "krum_ranking", "krum_scores", "krum_select", "KrumRanking", "LineFit", "mda", "mda_selection",
    "meamed", "monna", "monna_selection", "nnm", "nnm_weights", "norm_clipping", "repeated_median",
    "residual_reweight", "residual_reweight_details", "ResidualReweightDetails", "ResidualReweightResult",
    "robust_line", "row_distances", "smea", "smea_selection", "SubsetResult", "trimmed_count", "trimmed_mean",
    "weiszfeld", "WeiszfeldResult",
]
