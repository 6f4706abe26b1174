"""Tests for monitor.common.durations: the durations people write, and what is not one."""

from __future__ import annotations

from datetime import timedelta

import pytest

from monitor.common.durations import parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        # the forms accepted before (a number, then s, m, h or d)
        ("30s", 30),
        ("5m", 300),
        ("90m", 5400),
        ("1.5h", 5400),
        ("2d", 172_800),
        ("0s", 0),
        (" 6h ", 21_600),
        # combined units, weeks, milliseconds and words
        ("1h30m", 5400),
        ("1h 30m", 5400),
        ("1w", 604_800),
        ("500ms", 0.5),
        ("90 minutes", 5400),
        ("2 days", 172_800),
    ],
)
def test_durations_with_units(text: str, seconds: float) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "60",
        "1.5",
        "12:30",
        "1:00:00",
        "-5m",
        "soon",
        "5x",
        "5m later",
        "2026-01-01T00:05",
        "9" * 20 + "w",
    ],
)
def test_what_is_not_a_duration(text: str) -> None:
    assert parse_duration(text) is None
