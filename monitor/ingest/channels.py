"""Channels registered on their first reading (``channels.auto_register``).

A deployment that leaves room for ``N`` channels has ``N`` spare indices in its catalog
(:class:`monitor.schema.Catalog`), whose per-device state is allocated up front. The first reading
of a sensor nobody declared that would be valid as a reading of the channel it describes
(:func:`monitor.schema.auto_spec`: its values' keys sorted as the axes, its unit, no range, the
configured resolution and rate) registers that channel at the next spare index; from then on the
channel is a sensor like a declared one. Readings of it with other axes or another unit are
``channel_mismatch``; once the spare indices are used up, readings of further unknown sensors
stay ``unknown_sensor``, saying so.

:func:`register` runs in stream order over a batch's decoded messages, before any reading is
applied, so a batch registers the channels, and rejects the readings, that the same messages
would one batch at a time. Registering touches nothing but spare indices, whose state is empty.

>>> from monitor import schema
>>> raw = schema.encode_reading("d1", "co2", 1_700_000_000_000, 1, {"value": 412.0}, "ppm")
>>> catalog = schema.Catalog(schema.BUILTIN, spare=1)
>>> decoded = schema.decode_batch([raw], [b"d1"], catalog=catalog)
>>> decoded[0].reason
<Reason.UNKNOWN_SENSOR: 'unknown_sensor'>
>>> decoded, catalog, new = register(decoded, [raw], [b"d1"], catalog, (0.01, 1.0))
>>> decoded[0].sensor, catalog.index["co2"], new
('co2', 6, [0])
"""

from __future__ import annotations

from collections.abc import Sequence

from monitor import schema
from monitor.schema import Catalog, ReadingLike, Reason, Rejection

Decoded = list[ReadingLike | Rejection]


def register(
    decoded: Decoded,
    values: Sequence[bytes | None],
    keys: Sequence[bytes | None],
    catalog: Catalog,
    defaults: tuple[float, float],
    latest_ts: int | None = None,
) -> tuple[Decoded, Catalog, list[int]]:
    """Go through the messages :func:`monitor.schema.decode_batch` rejected as ``unknown_sensor``,
    in order: each is decoded again under the catalog as the messages before it left it, and
    registers its channel if it still names an unknown sensor and would be a valid reading of it.
    ``defaults`` are the new channels' ``(resolution, rate_hz)``. Returns the outcomes, the
    catalog, and the positions of the messages that registered a channel."""
    out, new = list(decoded), []
    for i, r in enumerate(decoded):
        if not isinstance(r, Rejection) or r.reason is not Reason.UNKNOWN_SENSOR:
            continue
        # It parsed once (its sensor was read): no size limit, nothing but its content is new.
        reading = schema.parse(values[i], keys[i], len(values[i] or b""))
        if isinstance(reading, Rejection):
            continue
        again: ReadingLike | Rejection = schema.validate(reading, keys[i], latest_ts, catalog)
        if isinstance(again, Rejection) and again.reason is Reason.UNKNOWN_SENSOR:
            again, spec = _candidate(reading, catalog, defaults, latest_ts)
            if spec is not None:
                catalog = catalog.register(spec)
                new.append(i)
        out[i] = again
    return out, catalog, new


def _candidate(
    reading: schema.Reading, catalog: Catalog, defaults: tuple[float, float], latest_ts: int | None
) -> tuple[ReadingLike | Rejection, schema.SensorSpec | None]:
    """The reading checked as one of the channel it would register, and that channel (None: it
    does not register one)."""
    if not catalog.spare:
        return _full(reading.sensor, catalog), None
    spec = schema.auto_spec(reading, *defaults)
    if isinstance(spec, Rejection):
        return spec, None
    checked = schema.check(reading, spec, latest_ts)
    return checked, None if isinstance(checked, Rejection) else spec


def _full(sensor: str, catalog: Catalog) -> Rejection:
    detail = (
        f"sensor {sensor[:64]!r} is not monitored here, and auto-registration is full "
        f"({len(catalog.auto)} channels registered: {', '.join(catalog.auto)}; channels.auto_register)"
    )
    return Rejection(Reason.UNKNOWN_SENSOR, detail[:400])
