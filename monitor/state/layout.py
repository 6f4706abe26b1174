"""A partition's state moved from the catalog it was kept under to another one, by channel name.

A pair's state sits at its sensor's index in the per-pair arrays of every slab, and, for state kept
per axis (the joint model, input drift, the retraining ring), at the sensor's offset in the
per-axis arrays (:class:`monitor.schema.Catalog`, :data:`monitor.state.store.PAIRS`,
:data:`~monitor.state.store.AXES` and :data:`~monitor.state.store.TRIANGLE`). An index is this
process' business: replicas register channels (``channels.auto_register``) in the order their
readings arrive, and a deployment may declare more channels, or leave more room, than when a
snapshot was taken. A channel's name is what means the same everywhere, so a snapshot records the
specs of its catalog, and importing it under another catalog moves each sensor's entries from its
index and offset there to its index and offset here (:func:`remap`). Entries of indices the
snapshot did not use are fresh (their fill).

>>> a, b = (SensorSpec(n, ("value",), "u", -1.0, 1.0, 1.0, 0.1) for n in "ab")
>>> states = DeviceStates(["d1"], {"n": np.array([[1, 2]])})
>>> moved = remap(states, {"n": ((PAIRS,), np.int64, 0)}, Catalog([a, b]), Catalog([b, a], spare=1))
>>> moved.arrays["n"].tolist()
[[2, 1, 0]]
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from monitor.schema import Catalog, SensorSpec
from monitor.state.store import AXES, PAIRS, TRIANGLE, Columns, DeviceStates, packing

#: ``(index there, index here, axes)`` of each sensor of the source catalog.
Moves = list[tuple[int, int, int]]


def clashes(specs: Sequence[SensorSpec], target: Catalog) -> list[str]:
    """The channels of ``specs`` that ``target`` monitors with other axes or another unit."""
    out = []
    for s in specs:
        mine = target.by_name.get(s.name)
        if mine is not None and (s.keys, s.unit) != (mine.keys, mine.unit):
            out.append(
                f"its channel {s.name} has axes [{', '.join(s.keys)}] and unit {s.unit!r}, this "
                f"configuration's [{', '.join(mine.keys)}] and {mine.unit!r}"
            )
    return out


def unfit(specs: Sequence[SensorSpec], target: Catalog) -> str:
    """Why state kept under a catalog of ``specs`` cannot be laid out for ``target`` (empty: it
    can): a channel of another axes or unit there, or more channels ``target`` does not monitor
    than it has spare indices for."""
    clash = clashes(specs, target)
    if clash:
        return "; ".join(clash)
    missing = [s.name for s in specs if s.name not in target.by_name]
    if len(missing) > target.spare:
        return f"{', '.join(missing)} not monitored, and room for {target.spare} more"
    return ""


def same_layout(source: Catalog, target: Catalog) -> bool:
    """State kept under ``source`` loads under ``target`` as it is: every sensor of ``source`` at
    the same index and offset, and as many indices and axes (``target`` may have registered more
    channels since, at indices ``source`` kept no state at)."""
    return target.names[: len(source)] == source.names and (target.capacity, target.dims, target.offsets) == (
        source.capacity,
        source.dims,
        source.offsets,
    )


def remap(states: DeviceStates, columns: Columns, source: Catalog, target: Catalog) -> DeviceStates:
    """``states``, kept under ``source``, laid out for ``target`` (which has every sensor of
    ``source``, with the same axes): the arrays whose ``columns`` template starts with
    :data:`PAIRS`, :data:`AXES` or :data:`TRIANGLE` (an upper triangle of a matrix over the axes,
    moved as the full matrix), the River tiers' per-device models and the model versions move by
    sensor name; the rest is kept as it is."""
    moves = [(source.index[n], target.index[n], len(spec.keys)) for n, spec in source.by_name.items()]
    arrays = {}
    for name, arr in states.arrays.items():
        template, _, fill = columns.get(name, ((), np.float64, 0))
        arrays[name] = _move(arr, template, fill, moves, source, target)
    rows = {s: t for s, t, _ in moves}
    return DeviceStates(
        states.device_ids,
        arrays,
        [_row(r, rows, target.capacity) for r in states.models],
        [_row(r, rows, target.capacity) for r in states.adwins],
        [_row(r, rows, target.capacity) for r in states.river],
        {(j, rows[s]): v for (j, s), v in states.versions.items() if s in rows},
    )


def _move(
    arr: NDArray[Any], template: tuple[int, ...], fill: float, moves: Moves, source: Catalog, target: Catalog
) -> NDArray[Any]:
    if not template or template[0] not in (PAIRS, AXES, TRIANGLE):
        return arr
    if template[0] == TRIANGLE:  # a symmetric matrix's upper triangle: moved as the full matrix
        full = arr[:, packing(source.dims)]
        moved = _move(full, (AXES, AXES, *template[1:]), fill, moves, source, target)
        rows, cols = np.triu_indices(target.dims)
        return moved[:, rows, cols]
    if template[0] == PAIRS:
        out = np.full((len(arr), target.capacity, *arr.shape[2:]), fill, arr.dtype)
        for s, t, _ in moves:
            out[:, t] = arr[:, s]
        return out
    square = len(template) > 1 and template[1] == AXES  # a covariance: both axes are the device's
    d = (target.dims,) * (2 if square else 1)
    out = np.full((len(arr), *d, *arr.shape[1 + len(d) :]), fill, arr.dtype)
    for s, t, k in moves:
        a, b = source.offsets[s], target.offsets[t]
        if not square:
            out[:, b : b + k] = arr[:, a : a + k]
            continue
        for s2, t2, k2 in moves:
            a2, b2 = source.offsets[s2], target.offsets[t2]
            out[:, b : b + k, b2 : b2 + k2] = arr[:, a : a + k, a2 : a2 + k2]
    return out


def _row(row: list[Any], moves: dict[int, int], capacity: int) -> list[Any]:
    """A device's per-sensor objects at their sensors' new indices."""
    out: list[Any] = [None] * capacity
    for s, obj in enumerate(row):
        if s in moves:
            out[moves[s]] = obj
    return out
