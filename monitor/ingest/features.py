"""Feature extraction: the numbers a model sees for one reading.

A reading's features are its values in its sensor's key order: ``(x, y, z)`` for the built-in
vector sensors, ``(value,)`` for scalar ones, a declared channel's axes in their declared order. The vector
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

Features = tuple[float, ...]
