"""Binary-code retrieval: packed codes, exhaustive Hamming search, nested (prefix) search, ranking metrics.

- :mod:`~nhllib.retrieval.packing`: ±1 codes <-> bytes (``numpy.packbits`` layout); a nested code's
  prefix is a byte slice.
- :class:`HammingIndex`: exact top-k / range search (faiss ``IndexBinaryFlat``), ties by id.
- :class:`NestedIndex`: shortlist-then-rerank, prefix buckets and funnel search over nested codes
  (its bucket table: :mod:`~nhllib.retrieval.buckets`).
- :func:`ranking_metrics`: mAP@k and precision@k of returned rankings.

faiss is imported only when a faiss-backed structure is built: packing, the metrics and
``NestedIndex``'s shortlist / bucket / funnel searches (numpy paths) work without it; ``HammingIndex``
and ``NestedIndex.search`` (exhaustive) need it.
"""

from .hamming import HammingIndex, RangeResult
from .metrics import ranking_metrics
from .nested import NestedIndex, SearchStats
from .packing import as_packed, pack_codes, prefix_bytes, unpack_codes

__all__ = [
    "HammingIndex",
    "NestedIndex",
    "RangeResult",
    "SearchStats",
    "as_packed",
    "pack_codes",
    "prefix_bytes",
    "ranking_metrics",
    "unpack_codes",
]
