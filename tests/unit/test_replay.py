"""Replay: mapping validation, the real Sense HAT log, bad rows (skip and count, or strict), pacing."""

from __future__ import annotations

import logging
import threading
from pathlib import Path
from typing import Any

import pytest
import yaml

from monitor import errors
from monitor.schema import SENSOR_NAMES
from producers import replay
from tests.unit.test_iio import MemorySink

ASTROPI_LOG = (
    Path(__file__).parents[2].parent / "shared" / "data" / "astropi" / "astro_pi_data_20150824_085954.csv"
)
ASTROPI_MAPPING = Path("configs/replay/astropi.yaml")
G = 9.80665

needs_log = pytest.mark.skipif(not ASTROPI_LOG.is_file(), reason="../shared/data is absent")

MAPPING: dict[str, Any] = {
    "timestamp": {"column": "time", "format": "iso8601"},
    "device": {"column": "dev"},
    "sensors": {
        "temperature": {"columns": {"value": "temp_f"}, "scale": 5 / 9, "offset": -32 * 5 / 9},
        "accelerometer": {"columns": {"x": "ax", "y": "ay", "z": "az"}, "scale": G},
    },
}
CSV = """\
time,dev,temp_f,ax,ay,az
2026-01-01T00:00:00Z,pi-1,68.0,0,0,1
2026-01-01T00:00:01Z,pi-2,50.0,0,0,1
2026-01-01T00:00:02Z,pi-1,n/a,0,0,1
yesterday,pi-1,68.0,0,0,1
2026-01-01T00:00:04Z,pi-1,400.0,0,,1
2026-01-01T00:00:05Z,,68.0,0,0,1
2026-01-01T00:00:06Z,pi-1,68.0,0,0,-1
"""
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def write(tmp_path: Path, name: str, text: str, mapping: dict[str, Any] = MAPPING) -> tuple[Path, Path]:
    (tmp_path / name).write_text(text)
    (tmp_path / "mapping.yaml").write_text(yaml.safe_dump(mapping, sort_keys=False))
    return tmp_path / name, tmp_path / "mapping.yaml"


def run(log: Path, mapping: Path, **options: Any) -> tuple[replay.ReplayReport, MemorySink]:
    sink = MemorySink()
    opts = replay.ReplayOptions(**({"speed": 0.0} | options))
    report = replay.Replayer(replay.load_mapping(mapping), sink, opts).run(log, threading.Event())
    return report, sink


def test_the_shipped_astropi_mapping_is_valid() -> None:
    m = replay.load_mapping(ASTROPI_MAPPING)
    assert set(m.sensors) == set(SENSOR_NAMES)
    assert m.sensors["accelerometer"].scale == G and m.sensors["pressure"].scale == 1.0
    assert m.timestamp.format == "%Y-%m-%d %H:%M:%S" and m.device.id == "astropi-ground"


@needs_log
def test_the_real_astropi_log_parses_completely() -> None:
    m = replay.load_mapping(ASTROPI_MAPPING)
    parser = replay.RowParser(m)
    count, problems, first = 0, [], None
    for _line, row in replay.read_rows(ASTROPI_LOG, m):
        samples, bad = parser.parse(row)
        first = first or samples
        count += len(samples)
        problems += bad
    assert (count, problems) == (24_604 * 6, [])
    assert first is not None
    got = {s.sensor: s.values for s in first}
    assert {s.ts for s in first} == {1_440_115_110_000}  # 2015-08-20 23:58:30 UTC
    assert got["accelerometer"] == pytest.approx({"x": 0.015697 * G, "y": -0.002796 * G, "z": 1.033065 * G})
    assert got["gyroscope"] == pytest.approx({"x": 0.000067, "y": -0.002933, "z": 0.000165})
    assert got["magnetometer"] == pytest.approx({"x": -3.496344, "y": 23.459245, "z": 69.476236})
    assert got["humidity"] == {"value": 60.50}
    assert got["pressure"] == {"value": 1021.76}
    assert got["temperature"] == {"value": 26.85}


@needs_log
def test_the_astropi_replay_publishes_valid_readings_in_event_time() -> None:
    report, sink = run(ASTROPI_LOG, ASTROPI_MAPPING, limit=50)
    readings = sink.readings()
    assert (report.rows, report.published, report.bad_lines) == (50, 300, 0)
    assert [r.seq for r in readings] == list(range(300))
    assert [r.sensor for r in readings[:6]] == list(SENSOR_NAMES)
    assert readings[-1].ts == 1_440_115_600_000  # row 50: 2015-08-21 00:06:40


def test_bad_rows_are_skipped_counted_and_located(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    log, mapping = write(tmp_path, "log.csv", CSV)
    with caplog.at_level(logging.WARNING):
        report, sink = run(log, mapping)
    readings = sink.readings()
    assert (report.rows, report.published, report.bad_lines, report.skipped) == (7, 7, 4, 7)
    assert [(r.device_id, r.sensor, r.seq) for r in readings[:2]] == [
        ("pi-1", "temperature", 0),
        ("pi-1", "accelerometer", 1),
    ]
    assert readings[0].values["value"] == pytest.approx(20.0)  # 68 degF
    assert readings[3].values == pytest.approx({"x": 0.0, "y": 0.0, "z": G})
    assert [r.seq for r in readings if r.device_id == "pi-1"] == [0, 1, 2, 3, 4]
    assert [r.seq for r in readings if r.device_id == "pi-2"] == [0, 1]
    problems = report.first_problems
    assert problems[0] == f"{log}:4: temperature skipped: not a number: 'n/a'"
    assert problems[1].startswith(f"{log}:5: row skipped: time: bad timestamp 'yesterday'")
    assert problems[2] == (
        f"{log}:6: accelerometer skipped: not a number: ''; "
        "temperature skipped: out_of_range: values.value=204.44444444444446 outside [-40.0, 125.0]"
    )
    assert problems[3] == f"{log}:7: row skipped: dev: no device id"
    assert "7 readings skipped on 4 lines" in report.summary()
    assert f"{log}:4:" in caplog.text


def test_strict_stops_at_the_first_bad_row_with_file_and_line(tmp_path: Path) -> None:
    log, mapping = write(tmp_path, "log.csv", CSV)
    with pytest.raises(errors.ReplayError, match=r"log\.csv:4: temperature skipped"):
        run(log, mapping, strict=True)


def test_jsonl_with_epoch_timestamps_and_unusable_lines(tmp_path: Path) -> None:
    mapping = MAPPING | {"timestamp": {"column": "t", "format": "epoch_ms"}}
    lines = [
        f'{{"t": {T0}, "dev": "pi-1", "temp_f": 32, "ax": 0, "ay": 0, "az": 1}}',
        "",
        "[1, 2]",
        '{"t": 17672256',
        f'{{"t": {T0 + 10}, "dev": "pi-1", "temp_f": true, "ax": 0, "ay": 0, "az": 1}}',
    ]
    log, mapping_file = write(tmp_path, "log.jsonl", "\n".join(lines) + "\n", mapping)
    report, sink = run(log, mapping_file)
    assert (report.rows, report.published, report.bad_lines) == (4, 3, 3)
    assert [p.split(": ", 1)[0] for p in report.first_problems] == [f"{log}:3", f"{log}:4", f"{log}:5"]
    assert "not a JSON object" in report.first_problems[0]
    assert [r.ts for r in sink.readings()] == [T0, T0, T0 + 10]


def test_timestamp_formats_and_zones() -> None:
    def ts(fmt: str, raw: object, zone: str = "UTC") -> int:
        m = replay.ReplayMapping.model_validate(
            MAPPING | {"timestamp": {"column": "t", "format": fmt, "timezone": zone}}
        )
        return replay.RowParser(m).timestamp(raw)

    assert ts("epoch_s", "1767225600.25") == T0 + 250
    assert ts("epoch_ms", T0) == T0
    assert ts("iso8601", "2026-01-01T01:00:00+01:00") == T0
    assert ts("%d/%m/%Y %H:%M", "01/01/2026 00:00") == T0
    assert ts("%d/%m/%Y %H:%M", "01/01/2026 01:00", "Europe/Berlin") == T0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"device": {"id": "a", "column": "b"}}, "exactly one of device.id and device.column"),
        ({"device": {}}, "exactly one of device.id and device.column"),
        ({"device": {"id": "pi 1"}}, "device.id must match"),
        ({"sensors": {"humidity": {"columns": {"x": "h"}}}}, "needs exactly the keys ['value']"),
        ({"sensors": {"thermocouple": {"columns": {"value": "t"}}}}, "thermocouple"),
        ({"sensors": {}}, "at least 1 item"),
        ({"timestamp": {"column": "t", "timezone": "Mars/Olympus"}}, "unknown time zone"),
        ({"timestamp": {"column": "t", "format": "yyyy-mm-dd"}}, "strptime pattern"),
        ({"speed": 3}, "Extra inputs are not permitted"),
    ],
)
def test_bad_mappings_are_rejected_naming_the_file(
    tmp_path: Path, change: dict[str, Any], message: str
) -> None:
    _, mapping = write(tmp_path, "log.csv", CSV, MAPPING | change)
    with pytest.raises(errors.ReplayError, match=r"mapping\.yaml") as exc:
        replay.load_mapping(mapping)
    assert message in str(exc.value)


def test_a_mapped_column_missing_from_the_header_fails_before_publishing(tmp_path: Path) -> None:
    log, mapping = write(tmp_path, "log.csv", CSV.replace("temp_f", "tempF", 1))
    with pytest.raises(errors.ReplayError, match=r"lacks the mapped columns \['temp_f'\]"):
        run(log, mapping)


def test_pacer_waits_event_time_divided_by_speed() -> None:
    now = [100.0]
    waits: list[float] = []

    def wait(delay: float) -> None:
        waits.append(round(delay, 6))
        now[0] += delay

    pacer = replay.Pacer(10.0, wait, clock=lambda: now[0])
    for ts in (T0, T0 + 1000, T0 + 1000, T0 + 5000, T0 + 4000):
        pacer.until(ts)
    assert waits == [0.1, 0.4]  # a repeated or older timestamp goes at once
    fast = replay.Pacer(0.0, wait)
    fast.until(T0)
    fast.until(T0 + 10**9)
    assert waits == [0.1, 0.4]


def test_replay_stops_when_asked(tmp_path: Path) -> None:
    log, mapping = write(tmp_path, "log.csv", CSV)
    stop = threading.Event()
    stop.set()
    r = replay.Replayer(replay.load_mapping(mapping), MemorySink(), replay.ReplayOptions(speed=0))
    assert r.run(log, stop).rows == 0
