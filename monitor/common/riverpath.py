"""River anomaly detector classes named by a dotted path: only River's own, resolved safely.

A River tier (``river.tiers`` of the settings) names its model as text, for instance
``river.anomaly.HalfSpaceTrees``. :func:`resolve` imports the module only when the path is under
the ``river`` package (nothing else is ever imported from a configuration) and returns the class if
it is an anomaly detector:

>>> resolve("river.anomaly.HalfSpaceTrees").__name__
'HalfSpaceTrees'
>>> resolve("os.system")
Traceback (most recent call last):
...
ValueError: 'os.system' is not a River class: only river.* anomaly detectors may be configured
>>> resolve("river.anomaly.QuantileFilter")
Traceback (most recent call last):
...
ValueError: river.anomaly.QuantileFilter is not a River anomaly detector (a filter: ...)
"""

from __future__ import annotations

import importlib
import re

from river import base

#: ``river.<module path>.<Class>``: lower-case module names, a class name last.
_PATH = re.compile(r"river(?:\.[a-z_][a-z0-9_]*)*\.[A-Z][A-Za-z0-9_]*")


def resolve(path: str) -> type[base.AnomalyDetector] | type[base.SupervisedAnomalyDetector]:
    """The River anomaly detector class at ``path``; ValueError with the reason otherwise."""
    if not _PATH.fullmatch(path):
        raise ValueError(
            f"{path[:80]!r} is not a River class: only river.* anomaly detectors may be configured"
        )
    module, _, name = path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name, None)
    except ImportError:
        raise ValueError(f"{path}: there is no module {module} in River") from None
    if cls is None:
        raise ValueError(f"{path}: River's {module} has no {name}")
    if isinstance(cls, type) and issubclass(cls, base.AnomalyFilter):
        raise ValueError(
            f"{path} is not a River anomaly detector (a filter: use the tier's quantile or threshold)"
        )
    if not isinstance(cls, type) or not issubclass(
        cls, base.AnomalyDetector | base.SupervisedAnomalyDetector
    ):
        raise ValueError(f"{path} is not a River anomaly detector (river.base.AnomalyDetector)")
    return cls


def is_supervised(cls: type) -> bool:
    """Whether ``cls`` scores a target value (``score_one(x, y)``: GaussianScorer, ...) rather than
    the features."""
    return issubclass(cls, base.SupervisedAnomalyDetector)
