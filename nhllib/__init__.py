"""nhllib: the Nested Hash Layer (NHL) for multi-length deep supervised hashing.

Importing the package has no side effects; submodules are imported on demand so that
``import nhllib`` stays cheap. The main entry points:

- :class:`nhllib.nested.NestedHashLayer`: one linear layer emitting nested codes of several lengths.
- :mod:`nhllib.losses`: ``LOSSES`` and ``build_loss`` for ten deep-hashing objectives.
- :mod:`nhllib.weighting`: ``Uniform``, ``Static`` and ``ConflictAware`` per-length weights.
- :func:`nhllib.distill.cascade_distillation`: long-to-short similarity-preserving distillation.
- :mod:`nhllib.evaluate`: tie-aware mAP, precision@K, PR curves, ``encode``.
- :mod:`nhllib.retrieval`: packed codes, Hamming and nested (shortlist/re-rank) indexes.
"""

__version__ = "0.1.0"
