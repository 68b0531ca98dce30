"""nhllib: the Nested Hash Layer (NHL) for multi-length deep supervised hashing.

The package is layered, each layer importing only from those below it (docs/architecture.md):
base helpers (``checks``, ``vocab``, ``compat``, ``utils``, ``machine``, ``layout``, ``weight_sources``,
``workdir``) < ``data``, ``retrieval`` <
``core`` (the method) < ``store`` (run folders) < ``training`` < ``analysis`` < ``plots`` < ``study`` < ``teaching``.

The main entry points are importable from here, lazily (``import nhllib`` imports nothing else):
``NestedHashLayer``, ``SeparateHashHeads``, ``HashingModel``, ``LOSSES``, ``HashLoss``, ``build_loss``,
``build_losses``, ``Uniform``, ``Static``, ``ConflictAware``, ``conflict_weights``, ``cascade_distillation``,
``mean_average_precision``, ``encode``, ``RunConfig``, ``build_run``, ``run_experiment``, ``fit``, ``load_study``,
``load_results``, ``read_codes``.
Modules that moved when the package was layered stay reachable under their old name as attributes
(``from nhllib import tables`` gives :mod:`nhllib.analysis.tables`).
"""

import importlib

__version__ = "0.1.0"

#: Public name -> the module that defines it.
_PUBLIC = {
    'NestedHashLayer': 'nhllib.core.nested',
    'SeparateHashHeads': 'nhllib.core.nested',
    'HashingModel': 'nhllib.core.model',
    'LOSSES': 'nhllib.core.losses',
    'HashLoss': 'nhllib.core.losses',
    'build_loss': 'nhllib.core.losses',
    'build_losses': 'nhllib.core.losses',
    'Uniform': 'nhllib.core.weighting',
    'Static': 'nhllib.core.weighting',
    'ConflictAware': 'nhllib.core.weighting',
    'conflict_weights': 'nhllib.core.weighting',
    'cascade_distillation': 'nhllib.core.distill',
    'mean_average_precision': 'nhllib.core.evaluate',
    'encode': 'nhllib.core.evaluate',
    'RunConfig': 'nhllib.training.config',
    'build_run': 'nhllib.training.experiment',
    'run_experiment': 'nhllib.training.experiment',
    'fit': 'nhllib.training.train',
    'load_study': 'nhllib.analysis.selection',
    'load_results': 'nhllib.store.results',
    'read_codes': 'nhllib.store.results',
}

#: Old top-level module name -> its module now.
_MOVED = {
    'aggregates': 'nhllib.analysis.aggregates',
    'backbones': 'nhllib.training.backbones',
    'benchmark_tables': 'nhllib.analysis.benchmark_tables',
    'check_data': 'nhllib.study.check_data',
    'collapse': 'nhllib.core.collapse',
    'compare_studies': 'nhllib.analysis.compare_studies',
    'config': 'nhllib.training.config',
    'conflict_tables': 'nhllib.analysis.conflict_tables',
    'conflicts': 'nhllib.training.conflicts',
    'distill': 'nhllib.core.distill',
    'distributed': 'nhllib.training.distributed',
    'evaluate': 'nhllib.core.evaluate',
    'executors': 'nhllib.study.executors',
    'exercises': 'nhllib.teaching.exercises',
    'experiment': 'nhllib.training.experiment',
    'feed_timing': 'nhllib.training.feed_timing',
    'final_eval': 'nhllib.training.final_eval',
    'findings': 'nhllib.analysis.findings',
    'locks': 'nhllib.store.locks',
    'losses': 'nhllib.core.losses',
    'markdown': 'nhllib.analysis.markdown',
    'metrics': 'nhllib.core.metrics',
    'model': 'nhllib.core.model',
    'nested': 'nhllib.core.nested',
    'optimizers': 'nhllib.training.optimizers',
    'parallel_check': 'nhllib.training.parallel_check',
    'parameters': 'nhllib.training.parameters',
    'preflight': 'nhllib.study.preflight',
    'pretrain': 'nhllib.training.pretrain',
    'regimes': 'nhllib.analysis.regimes',
    'results': 'nhllib.store.results',
    'run_manifest': 'nhllib.store.run_manifest',
    'run_report': 'nhllib.analysis.run_report',
    'selection': 'nhllib.analysis.selection',
    'stats': 'nhllib.analysis.stats',
    'tables': 'nhllib.analysis.tables',
    'tour': 'nhllib.teaching.tour',
    'train': 'nhllib.training.train',
    'weight_sources': 'nhllib.weight_sources',
    'weighting': 'nhllib.core.weighting',
}

__all__ = sorted(_PUBLIC)


def __getattr__(name):
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    if name in _MOVED:
        return importlib.import_module(_MOVED[name])
    raise AttributeError(f"module 'nhllib' has no attribute {name!r}")
