"""Feature extraction: the numbers a model sees for one reading.

Vector sensors give their three axes ``(x, y, z)``, scalar sensors ``(value,)``. The vector
magnitude is deliberately not a separate feature: it is a function of the axes (a change in
magnitude already moves them), and near zero (gyroscope) it is far from Gaussian, which would
break the calibrated chi-square score of :mod:`monitor.detect.model`.

>>> from monitor.schema import Reading
>>> features(Reading("d", "accelerometer", 0, 0, {"x": 3.0, "y": 0.0, "z": 4.0}, "m/s^2", 1))
(3.0, 0.0, 4.0)
"""

from __future__ import annotations

from monitor.schema import SENSORS, Reading

Features = tuple[float, ...]


def n_features(sensor: str) -> int:
    return len(SENSORS[sensor].keys)


def features(r: Reading) -> Features:
    return from_values(r.values)


def from_values(v: dict[str, float]) -> Features:
    if "value" in v:
        return (v["value"],)
    return (v["x"], v["y"], v["z"])
