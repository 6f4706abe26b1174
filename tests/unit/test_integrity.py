"""Tests for monitor.ingest.integrity: duplicate, out-of-order, gap, stuck-at and clock-skew checks."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np
import pytest

from monitor.ingest.integrity import CLOCK_SKEW, DUPLICATE, GAP, OUT_OF_ORDER, STUCK, IntegrityChecker
from monitor.ingest.state import IngestState
from monitor.schema import SENSOR_INDEX, SENSOR_NAMES, SENSORS, Reading
from monitor.settings import IntegritySettings, Settings
from monitor.state.store import CHECKS, StateStore

N_SENSORS = len(SENSOR_NAMES)

T0 = 1_700_000_000_000
TEMP = SENSOR_INDEX["temperature"]
ACCEL = SENSOR_INDEX["accelerometer"]


class Pair:
    """One (device, sensor) pair fed through a checker the way ``Pipeline._apply`` does."""

    def __init__(self, checker: StoreChecker, device: str = "dev-1", sensor: str = "temperature") -> None:
        self.checker = checker
        self.sensor = sensor
        self.s = SENSOR_INDEX[sensor]
        self.slot = checker.store.slot(device, 0)
        self.device = device

    def feed(
        self, seq: int, ts: int, value: float | tuple[float, float, float], kafka_ts: int | None = None
    ) -> bool:
        keys = SENSORS[self.sensor].keys
        vals = (value,) if isinstance(value, float | int) else value
        r = Reading(
            self.device,
            self.sensor,
            ts,
            seq,
            dict(zip(keys, vals, strict=True)),
            SENSORS[self.sensor].unit,
            1,
        )
        if not self.checker.check_seq(self.slot, self.s, r):
            return False
        self.checker.check_values(self.slot, self.s, ts, r.features(), ts if kafka_ts is None else kafka_ts)
        return True

    def count(self, check: int) -> int:
        return int(self.checker.state.integrity[self.slot, self.s, check])


class StoreChecker(IntegrityChecker):
    """A checker of a store's ingest slab, built like ``Pipeline.__init__`` does; the store gives
    each device its slot."""

    def __init__(self, settings: IntegritySettings) -> None:
        self.store = StateStore()
        super().__init__(self.store.add(IngestState(N_SENSORS)), settings)


def _checker(**settings: int | float) -> StoreChecker:
    return StoreChecker(Settings(integrity=IntegritySettings(**settings)).integrity)  # type: ignore[arg-type]


def _counts(pair: Pair) -> dict[str, int]:
    return {name: pair.count(i) for i, name in enumerate(CHECKS)}


def _noise(i: int) -> float:
    return 20.0 + 0.01 * (i % 7)


def test_check_constants_follow_the_counter_order() -> None:
    assert [CHECKS[c] for c in (STUCK, GAP, DUPLICATE, OUT_OF_ORDER, CLOCK_SKEW)] == [
        "stuck_at",
        "gap",
        "duplicate",
        "out_of_order",
        "clock_skew",
    ]


def test_clean_stream_counts_nothing() -> None:
    pair = Pair(_checker())
    assert all(pair.feed(i, T0 + i * 1000, _noise(i)) for i in range(100))
    assert _counts(pair) == dict.fromkeys(CHECKS, 0)


def test_first_reading_with_seq_zero_is_applied() -> None:
    pair = Pair(_checker())
    assert pair.feed(0, T0, 20.0)
    assert pair.count(DUPLICATE) == 0


def test_duplicate_seq_returns_false_and_counts() -> None:
    pair = Pair(_checker())
    assert pair.feed(5, T0, 20.0)
    assert not pair.feed(5, T0, 20.0)
    assert not pair.feed(5, T0 + 1000, 21.0)  # same seq, whatever the content
    assert pair.count(DUPLICATE) == 2
    assert int(pair.checker.state.last_seq[pair.slot]) == 5


def test_duplicate_is_not_applied_to_the_value_checks() -> None:
    pair = Pair(_checker(stuck_run=2))
    pair.feed(1, T0, 20.0)
    pair.feed(1, T0, 20.0)  # would be stuck_at with stuck_run=2 if applied
    assert pair.count(STUCK) == 0
    assert int(pair.checker.state.last_ts[pair.slot, pair.s]) == T0


def test_seq_is_per_device_across_sensors() -> None:
    checker = _checker()
    temp, accel = Pair(checker, sensor="temperature"), Pair(checker, sensor="accelerometer")
    assert temp.slot == accel.slot
    assert temp.feed(0, T0, 20.0)
    assert accel.feed(1, T0, (0.0, 0.0, 9.81))
    assert not temp.feed(1, T0 + 1000, 20.5)  # seq 1 was already applied by the accelerometer
    assert temp.count(DUPLICATE) == 1
    assert accel.count(DUPLICATE) == 0


def test_out_of_order_counts_and_is_applied() -> None:
    pair = Pair(_checker())
    pair.feed(10, T0, 20.0)
    assert pair.feed(7, T0 + 1000, 20.1)  # late message (or reboot): applied, but counted
    assert pair.count(OUT_OF_ORDER) == 1
    assert int(pair.checker.state.last_seq[pair.slot]) == 7
    assert pair.feed(8, T0 + 2000, 20.2)
    assert pair.count(OUT_OF_ORDER) == 1


def test_gap_counted_when_interval_exceeds_gap_factor_times_usual() -> None:
    pair = Pair(_checker(gap_factor=5.0))
    ts = T0
    for i in range(10):
        pair.feed(i, ts, _noise(i))
        ts += 1000
    assert pair.count(GAP) == 0
    assert float(pair.checker.state.interval[pair.slot, pair.s]) == 1000.0
    ts += 5000 - 1000  # exactly 5 x the usual interval: not a gap
    pair.feed(10, ts, 20.0)
    assert pair.count(GAP) == 0
    usual = float(pair.checker.state.interval[pair.slot, pair.s])
    assert usual == pytest.approx(1000 + 0.05 * 4000)
    ts += int(5 * usual) + 1
    pair.feed(11, ts, 20.1)
    assert pair.count(GAP) == 1
    assert float(pair.checker.state.interval[pair.slot, pair.s]) == usual  # a gap does not teach the interval


def test_no_gap_check_before_an_interval_is_known() -> None:
    pair = Pair(_checker())
    pair.feed(0, T0, 20.0)
    pair.feed(1, T0 + 3_600_000, 20.1)  # second reading: the first interval, whatever its length
    assert pair.count(GAP) == 0


def test_intervals_are_per_sensor() -> None:
    checker = _checker(gap_factor=5.0)
    slow, fast = Pair(checker, sensor="temperature"), Pair(checker, sensor="accelerometer")
    seq = 0
    for i in range(5):  # temperature every 1000 ms, accelerometer every 100 ms
        slow.feed(seq, T0 + i * 1000, _noise(i))
        seq += 1
        for j in range(10):
            fast.feed(seq, T0 + i * 1000 + j * 100, (0.0, float(j), 9.81))
            seq += 1
    assert slow.count(GAP) == fast.count(GAP) == 0
    fast.feed(seq, T0 + 4900 + 1000, (0.0, 1.0, 9.81))  # 1000 ms: normal for temperature, a gap here
    assert fast.count(GAP) == 1
    assert slow.count(GAP) == 0


def _feeder(pair: Pair) -> Callable[[float], None]:
    """Feed consecutive readings (seq + 1, ts + 1 s) with the given value."""
    seq = itertools.count()

    def feed(value: float) -> None:
        n = next(seq)
        assert pair.feed(n, T0 + n * 1000, value)

    return feed


def test_stuck_at_counted_once_per_run() -> None:
    pair = Pair(_checker(stuck_run=4))
    feed = _feeder(pair)
    for _ in range(3):
        feed(20.0)
    assert pair.count(STUCK) == 0  # three identical values: not yet
    feed(20.0)
    assert pair.count(STUCK) == 1  # the fourth
    for _ in range(10):
        feed(20.0)
    assert pair.count(STUCK) == 1  # reported once per run
    feed(20.5)  # a change ends the run and starts a new one
    for _ in range(2):
        feed(20.5)
    assert pair.count(STUCK) == 1
    feed(20.5)
    assert pair.count(STUCK) == 2


def test_stuck_at_needs_every_axis_identical() -> None:
    pair = Pair(_checker(stuck_run=3), sensor="accelerometer")
    for i in range(10):
        pair.feed(i, T0 + i * 100, (0.0, 0.0, 9.81 + 0.01 * (i % 2)))  # z toggles
    assert pair.count(STUCK) == 0
    for i in range(10, 13):
        pair.feed(i, T0 + i * 100, (0.0, 0.0, 9.81))
    assert pair.count(STUCK) == 1


@pytest.mark.parametrize(("skew_ms", "counted"), [(0, 0), (1000, 0), (-1000, 0), (1001, 1), (-1001, 1)])
def test_clock_skew_counted_when_beyond_limit(skew_ms: int, counted: int) -> None:
    pair = Pair(_checker(max_clock_skew_ms=1000))
    pair.feed(0, T0, 20.0, kafka_ts=T0 + skew_ms)
    assert pair.count(CLOCK_SKEW) == counted


def test_clock_skew_check_disabled_with_zero() -> None:
    pair = Pair(_checker(max_clock_skew_ms=0))
    pair.feed(0, T0, 20.0, kafka_ts=T0 + 86_400_000)
    assert pair.count(CLOCK_SKEW) == 0


def test_clock_skew_ignored_without_kafka_timestamp() -> None:
    pair = Pair(_checker(max_clock_skew_ms=1000))
    pair.feed(0, T0, 20.0, kafka_ts=0)  # no broker timestamp available
    pair.feed(1, T0 + 1000, 20.1, kafka_ts=-1)
    assert pair.count(CLOCK_SKEW) == 0


def test_take_events_returns_counts_per_sensor_and_check_and_resets() -> None:
    checker = _checker(max_clock_skew_ms=1000)
    temp, accel = Pair(checker, "dev-1", "temperature"), Pair(checker, "dev-2", "accelerometer")
    temp.feed(0, T0, 20.0)
    temp.feed(0, T0, 20.0)  # duplicate
    temp.feed(0, T0, 20.0)  # duplicate
    accel.feed(3, T0, (0.0, 0.0, 9.81), kafka_ts=T0 + 5000)  # clock skew
    accel.feed(2, T0 + 100, (0.0, 0.1, 9.81))  # out of order
    events = checker.take_events()
    want = np.zeros((N_SENSORS, len(CHECKS)), np.int64)
    want[TEMP, DUPLICATE] = 2
    want[ACCEL, CLOCK_SKEW] = 1
    want[ACCEL, OUT_OF_ORDER] = 1
    np.testing.assert_array_equal(events, want)
    np.testing.assert_array_equal(checker.take_events(), np.zeros_like(want))
    temp.feed(0, T0, 20.0)
    assert checker.take_events()[TEMP, DUPLICATE] == 1
    assert temp.count(DUPLICATE) == 3  # the per-pair counters are the rules' business, not reset here


def test_counters_are_per_device() -> None:
    checker = _checker()
    a, b = Pair(checker, "dev-a"), Pair(checker, "dev-b")
    a.feed(1, T0, 20.0)
    a.feed(1, T0, 20.0)
    b.feed(1, T0, 20.0)
    assert (a.count(DUPLICATE), b.count(DUPLICATE)) == (1, 0)
