"""Durations written by people: ``30s``, ``5m``, ``1.5h``, ``2d``, ``1h30m``, ``90 minutes``, ``1w``.

:func:`parse_duration` reads them with ``pytimeparse2`` (units from milliseconds to weeks, spelled
short or long, combined, with or without spaces). A duration here always has a unit: a bare number
means something else where durations are given (an epoch time, a count of evaluations), and a
clock form such as ``12:30`` would read as twelve minutes, not as a time of day, so both are refused.

>>> parse_duration("90m"), parse_duration("1h30m"), parse_duration("2 days")
(datetime.timedelta(seconds=5400), datetime.timedelta(seconds=5400), datetime.timedelta(days=2))
>>> parse_duration("60"), parse_duration("12:30"), parse_duration("-5m"), parse_duration("soon")
(None, None, None, None)
"""

from __future__ import annotations

import re
from datetime import timedelta

import pytimeparse2

_UNIT = re.compile(r"[a-z]", re.IGNORECASE)


def parse_duration(text: str) -> timedelta | None:
    """The duration (>= 0) that ``text`` spells with units, or ``None`` if it spells none."""
    text = text.strip()
    if not _UNIT.search(text) or ":" in text:
        return None
    seconds: float | None = pytimeparse2.parse(text)
    if seconds is None or seconds < 0:
        return None
    try:
        return timedelta(seconds=seconds)
    except OverflowError:  # more than a billion days
        return None
