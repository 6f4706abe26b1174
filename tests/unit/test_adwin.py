"""monitor.detect.adwin against River's ADWIN: the same detections, window width, total, variance
and estimate on the same stream while the window fits under the cap; the cap; conversion of River
objects (older snapshots)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from river import drift

from monitor.detect import adwin
from monitor.detect.adwin import COUNTS, MAX_WIDTH, SUMS
from monitor.errors import ConversionError

Segment = tuple[int, float, float]


def _rows() -> tuple[np.ndarray, np.ndarray]:
    return np.zeros(SUMS, np.float64), np.zeros(COUNTS, np.uint8)


def _stream(seed: int, segments: list[Segment]) -> list[float]:
    """Piecewise Gaussian (or constant, sd 0) values clipped to [0, 1], like interval means."""
    rng = np.random.default_rng(seed)
    parts = [np.clip(rng.normal(mean, sd, n), 0.0, 1.0) for n, mean, sd in segments]
    return [float(x) for x in np.concatenate(parts)]


def _compare(values: list[float], delta: float) -> tuple[int, int]:
    """Feed both; assert equality at every update while River's window is under the cap.
    Returns (updates compared, detections)."""
    river = drift.ADWIN(delta=delta)
    sums, counts = _rows()
    hits = 0
    for i, x in enumerate(values):
        river.update(x)
        mine = adwin.update(sums, counts, x, delta)
        if river.width > MAX_WIDTH:
            return i, hits
        assert mine == river.drift_detected, f"update {i}"
        assert adwin.width(sums) == river.width, f"update {i}"
        assert sums[0] == river.total and sums[1] == river.variance, f"update {i}"
        assert adwin.estimation(sums) == river.estimation, f"update {i}"
        hits += mine
    return len(values), hits


segments = st.lists(
    st.tuples(
        st.integers(1, 700),
        st.floats(0.0, 1.0),
        st.sampled_from([0.0, 0.001, 0.02, 0.1, 0.3]),
    ),
    min_size=1,
    max_size=6,
)


@settings(max_examples=200, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), segments=segments, delta=st.sampled_from([0.002, 0.01, 0.1, 0.5]))
def test_same_detections_and_window_as_river(seed: int, segments: list[Segment], delta: float) -> None:
    _compare(_stream(seed, segments), delta)


@pytest.mark.parametrize("seed", range(8))
def test_seeded_streams_with_changes_detect_like_river(seed: int) -> None:
    rng = np.random.default_rng(100 + seed)
    segs = [
        (int(rng.integers(100, 500)), float(rng.random()), float(rng.choice([0.01, 0.05, 0.1])))
        for _ in range(6)
    ]
    n, hits = _compare(_stream(seed, segs), 0.002)
    assert hits >= 1  # the streams do change: the comparison covers detections and the resets after them
    assert n > 600


def test_a_quiet_stream_is_compared_up_to_the_cap() -> None:
    values = _stream(7, [(3000, 0.3, 0.01)])
    n, hits = _compare(values, 0.002)
    assert (n, hits) == (MAX_WIDTH, 0)  # River's window passes the cap at the next update


def test_the_cap_keeps_the_latest_values() -> None:
    values = _stream(8, [(5000, 0.3, 0.05)])
    sums, counts = _rows()
    widths = []
    for x in values:
        assert not adwin.update(sums, counts, x, 0.002)
        widths.append(adwin.width(sums))
    assert max(widths) == MAX_WIDTH
    w = adwin.width(sums)
    assert w > MAX_WIDTH // 2
    assert sums[0] == pytest.approx(sum(values[-w:]), rel=1e-9)
    assert sums[1] == pytest.approx(float(np.var(values[-w:])) * w, rel=1e-6)


@pytest.mark.parametrize(("n", "shift_at"), [(0, None), (7, None), (400, None), (900, 600), (3000, None)])
def test_river_objects_convert_to_the_same_rows(n: int, shift_at: int | None) -> None:
    values = _stream(9, [(shift_at or n, 0.2, 0.02), (n - (shift_at or n), 0.8, 0.02)])
    river = drift.ADWIN(delta=0.002)
    sums, counts = _rows()
    for x in values:
        river.update(x)
        adwin.update(sums, counts, x, 0.002)
    converted, converted_counts = _rows()
    adwin.from_river(river, converted, converted_counts)
    if river.width <= MAX_WIDTH:
        np.testing.assert_array_equal(converted, sums)
        np.testing.assert_array_equal(converted_counts, counts)
    else:  # longer than the cap: the newest buckets
        w = adwin.width(converted)
        assert w <= MAX_WIDTH
        assert converted[0] == pytest.approx(sum(values[-w:]), rel=1e-9)
    more = _stream(10, [(300, 0.9, 0.02)])
    for x in more:
        river.update(x)
        assert adwin.update(converted, converted_counts, x, 0.002) == river.drift_detected
        if river.width <= MAX_WIDTH:
            assert adwin.width(converted) == river.width


def test_a_pending_detection_converts() -> None:
    river = drift.ADWIN(delta=0.002)
    for x in _stream(11, [(300, 0.1, 0.01), (300, 0.9, 0.01)]):
        river.update(x)
        if river.drift_detected:
            break
    assert river.drift_detected
    sums, counts = _rows()
    adwin.from_river(river, sums, counts)
    assert adwin.width(sums) == river.width
    river.update(0.5)
    adwin.update(sums, counts, 0.5, 0.002)
    assert adwin.width(sums) == river.width == 1


def test_other_river_parameters_are_refused() -> None:
    with pytest.raises(ConversionError, match="clock"):
        adwin.from_river(drift.ADWIN(clock=1), *_rows())
