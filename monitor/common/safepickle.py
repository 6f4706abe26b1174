"""Restricted unpickling: only the classes telemon's models and drift detectors are made of.

``pickle.loads`` runs whatever callable a pickle names (``os.system`` through ``__reduce__``, for
instance), so a model file or a state snapshot is only ever unpickled after its HMAC has been
verified, and then with :class:`RestrictedUnpickler`, which resolves a global only if it is on an
explicit allowlist of ``(module, name)`` pairs. Anything else raises :class:`RefusedClassError`
naming the class, before it is imported.

The allowlist is what pickling the real objects (protocols 2 to 5) needs:

- :class:`monitor.detect.model.AdaptiveGaussian`, whose state is an ``array('d')``: ``array.array`` and
  ``array._array_reconstructor``;
- River's ``ADWIN``, which holds a Rust ``AdaptiveWindowing`` helper (restored from bytes);
- the per-device models of River tiers (:class:`monitor.detect.online.OnlineModel`): the River
  anomaly detectors ``HalfSpaceTrees``, ``OneClassSVM`` and ``GaussianScorer`` with their scalers,
  pipeline and filters, and the helpers they are made of (listed in :data:`RIVER_CLASSES`). A tier
  of another River class may share a model across devices, but keeps none per device unless its
  classes are added here (the pipeline refuses such a configuration at start-up).

Plain containers, numbers, strings, bytes and ``None`` need no global and always load.

>>> from array import array
>>> loads(pickle.dumps(array("d", [1.0, 2.0]), protocol=5))
array('d', [1.0, 2.0])
>>> loads(pickle.dumps(print))
Traceback (most recent call last):
...
monitor.errors.RefusedClassError: refusing to unpickle builtins.print: not an allowed model class
"""

from __future__ import annotations

import io
import pickle
from collections.abc import Collection
from typing import Any

from monitor.errors import RefusedClassError

#: ``AdaptiveGaussian`` and its packed state.
MODEL_CLASSES: frozenset[tuple[str, str]] = frozenset(
    {
        ("monitor.detect.model", "AdaptiveGaussian"),
        ("array", "array"),
        ("array", "_array_reconstructor"),
    }
)
#: River's ``ADWIN`` drift detector (state snapshots written before the per-pair ADWINs were slab
#: rows hold one per pair; :func:`monitor.state.snapshot.upgrade` converts them).
DRIFT_CLASSES: frozenset[tuple[str, str]] = frozenset(
    {
        ("river.drift.adwin", "ADWIN"),
        ("river._river_rust.drift", "AdaptiveWindowing"),
    }
)
#: River tiers' per-device models: the wrapper, River's detectors, scalers, pipeline and filters,
#: and what they hold (running statistics, trees, an optimiser, a seeded ``random.Random``).
RIVER_CLASSES: frozenset[tuple[str, str]] = frozenset(
    {
        ("monitor.detect.online", "OnlineModel"),
        ("river.anomaly.hst", "HalfSpaceTrees"),
        ("river.tree.padded", "PaddedBranch"),
        ("river.tree.padded", "PaddedLeaf"),
        ("river.anomaly.svm", "OneClassSVM"),
        ("river.optim.sgd", "SGD"),
        ("river.optim.schedulers", "Constant"),
        ("river.optim.initializers", "Zeros"),
        ("river.optim.losses", "Hinge"),
        ("river._river_rust.vectordict", "VectorDict"),
        ("river.anomaly.gaussian", "GaussianScorer"),
        ("river.proba.gaussian", "Gaussian"),
        ("river.utils.rolling", "Rolling"),
        ("river.anomaly.filter", "QuantileFilter"),
        ("river.anomaly.filter", "ThresholdFilter"),
        ("river.compose.pipeline", "Pipeline"),
        ("river.preprocessing.scale", "MinMaxScaler"),
        ("river.preprocessing.scale", "StandardScaler"),
        ("river.stats.maximum", "Max"),
        ("river.stats.minimum", "Min"),
        ("river.stats.mean", "Mean"),
        ("river.stats.var", "Var"),
        ("river.stats.quantile", "Quantile"),
        ("river._river_rust.stats", "RsQuantile"),
        ("random", "Random"),
        ("collections", "OrderedDict"),
        ("collections", "defaultdict"),
        ("collections", "Counter"),
        ("collections", "deque"),
        ("functools", "partial"),  # defaultdict factories: calls only the allowed classes above
        ("builtins", "float"),
        ("builtins", "tuple"),
    }
)
ALLOWED: frozenset[tuple[str, str]] = MODEL_CLASSES | DRIFT_CLASSES | RIVER_CLASSES
#: Modules that moved: pickles written before the move name the old place.
MOVED = {"monitor.model": "monitor.detect.model"}


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that resolves only the ``(module, name)`` globals in ``allowed``."""

    def __init__(self, file: io.BufferedIOBase, allowed: Collection[tuple[str, str]] = ALLOWED) -> None:
        super().__init__(file)
        self.allowed = frozenset(allowed)

    def find_class(self, module: str, name: str) -> Any:
        module = MOVED.get(module, module)
        if (module, name) not in self.allowed:
            raise RefusedClassError(module, name)
        return super().find_class(module, name)


def loads(data: bytes, allowed: Collection[tuple[str, str]] = ALLOWED) -> Any:
    """Unpickle ``data`` with only ``allowed`` globals; raises :class:`RefusedClassError` for any
    other class or function, and ``pickle.UnpicklingError`` (or the error the bytes provoke) for
    corrupt data."""
    return RestrictedUnpickler(io.BytesIO(data), allowed).load()
