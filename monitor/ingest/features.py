"""Feature extraction: the numbers a model sees for one reading.

Vector sensors give their three axes ``(x, y, z)``, scalar sensors ``(value,)``. The vector
magnitude is deliberately not a separate feature: it is a function of the axes (a change in
magnitude already moves them), and near zero (gyroscope) it is far from Gaussian, which would
break the calibrated chi-square score of :mod:`monitor.detect.model`.

A reading gives them with ``features()`` (:class:`monitor.schema.Reading`, or the typed readings a
batch decodes to):

>>> from monitor.schema import Reading
>>> Reading("d", "accelerometer", 0, 0, {"x": 3.0, "y": 0.0, "z": 4.0}, "m/s^2", 1).features()
(3.0, 0.0, 4.0)
"""

from __future__ import annotations

from monitor.schema import SENSORS

Features = tuple[float, ...]


def n_features(sensor: str) -> int:
    return len(SENSORS[sensor].keys)
