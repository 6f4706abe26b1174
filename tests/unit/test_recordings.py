"""`telemon evaluate csv` on recorded files: many files and columns, channels, layouts, labels, rows."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from monitor.cli.main import main
from monitor.errors import LabelledInputError
from monitor.evaluation.recordings import (
    INDEX_EPOCH_MS,
    CsvFormat,
    ValueColumn,
    plan,
    read_recording,
    readings_of,
    resolution_of,
)
from monitor.settings import load_settings

T0 = 1_767_225_600  # seconds


def _machine(
    path: Path, shift_at: int | None, n: int = 900, delimiter: str = ",", header: bool = True
) -> Path:
    """A pump: pressure p1, a 3-axis vibration (ax, ay, az), a label column; at ``shift_at`` the
    pressure jumps by 40 noise standard deviations for 30 rows (labelled 1)."""
    rng = np.random.default_rng(len(path.name))
    with path.open("w", newline="") as f:
        w = csv.writer(f, delimiter=delimiter)
        if header:
            w.writerow(("time", "p1", "ax", "ay", "az", "fault"))
        for i in range(n):
            fault = shift_at is not None and shift_at <= i < shift_at + 30
            p1 = 4.0 + rng.normal(0, 0.01) + (0.4 if fault else 0.0)
            axes = rng.normal(0, 0.05, 3) + np.array([0, 0, 9.81])
            w.writerow((T0 + i, round(p1, 4), *np.round(axes, 4), int(fault)))
    return path


VALUES = ["--value", "p1", "--value", "ax=accelerometer.x", "--value", "ay=accelerometer.y"]
VALUES += ["--value", "az=accelerometer.z"]


def test_many_files_and_columns_give_a_report_and_a_row_table_per_file(tmp_path: Path) -> None:
    a, b = _machine(tmp_path / "pump-a.csv", 600), _machine(tmp_path / "pump-b.csv", None)
    out = tmp_path / "out"
    args = ["evaluate", "--out", str(out), "csv", str(a), str(b), "--timestamp", "time", *VALUES]
    assert main([*args, "--label", "fault"]) == 0
    report = json.loads((out / "csv.json").read_text())
    assert report["devices"] == ["pump-a", "pump-b"]
    assert report["sensors"] == {"p1": {"value": "p1"}, "accelerometer": {"x": "ax", "y": "ay", "z": "az"}}
    assert report["messages"] == 2 * 900 * 2  # a reading per sensor per row
    assert report["anomaly"]["n_windows"] == 1 and report["anomaly"]["recall"] == 1.0
    with (out / "rows" / "pump-a.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["timestamp", "label", "anomaly_score", "anomalous", "alerting"]
    assert len(rows) == 900 and rows[0]["timestamp"] == str(T0)
    assert {r["anomalous"] for r in rows[600:630]} == {"1"}
    assert all(float(r["anomaly_score"]) > 0.5 for r in rows[600:630])
    assert "1" in {r["alerting"] for r in rows[600:700]} and {r["alerting"] for r in rows[:500]} == {"0"}
    assert (out / "rows" / "pump-b.csv").is_file()


def test_event_time_never_restarts_between_the_columns_of_a_file(tmp_path: Path) -> None:
    path = _machine(tmp_path / "pump.csv", None, n=50)
    columns = [ValueColumn.parse(v) for v in VALUES[1::2]]
    rec = read_recording(path, CsvFormat(timestamp="time"), [c.column for c in columns])
    settings, sensors = plan(load_settings(None), columns, [rec])
    stream = list(readings_of([rec], sensors))
    assert [r.sensor for _, _, r, _ in stream[:4]] == ["p1", "accelerometer", "p1", "accelerometer"]
    ts = [r.ts for _, _, r, _ in stream]
    assert ts == sorted(ts) and [r.seq for _, _, r, _ in stream] == list(range(1, 101))
    assert settings.channels.catalog().by_name["p1"].resolution == pytest.approx(1e-4)


def test_files_of_several_devices_are_merged_in_time_order(tmp_path: Path) -> None:
    a, b = _machine(tmp_path / "a.csv", None, n=5), _machine(tmp_path / "b.csv", None, n=5)
    columns = [ValueColumn("p1")]
    recs = [read_recording(p, CsvFormat(timestamp="time"), ["p1"]) for p in (a, b)]
    _, sensors = plan(load_settings(None), columns, recs)
    assert [(f, i) for f, i, _, _ in readings_of(recs, sensors)] == [(f, i) for i in range(5) for f in (0, 1)]


def test_a_headerless_file_with_another_delimiter_and_index_time(tmp_path: Path) -> None:
    path = _machine(tmp_path / "raw.txt", 400, n=700, delimiter=";", header=False)
    out = tmp_path / "out"
    args = ["evaluate", "--out", str(out), "csv", str(path), "--delimiter", ";", "--period-s", "0.5"]
    args += ["--no-header", "--columns", "t,p1,ax,ay,az,fault", "--value", "p1", "--label", "fault"]
    assert main(args) == 0
    report = json.loads((out / "raw.json").read_text())
    assert report["anomaly"]["recall"] == 1.0
    with (out / "rows" / "raw.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["timestamp"] for r in rows[:3]] == ["0", "1", "2"] and len(rows) == 700
    names = ("t", "p1", "ax", "ay", "az", "fault")
    rec = read_recording(path, CsvFormat(None, 500, ";", names, header=False), ["p1"])
    assert rec.ts[1] - rec.ts[0] == 500 and rec.ts[0] == INDEX_EPOCH_MS


def test_change_point_labels_are_changes_of_the_label(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    path = tmp_path / "walk.csv"
    activity = [1] * 400 + [4] * 400 + [1] * 400
    level = {1: 0.0, 4: 3.0}
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(("timestamp", "acc", "activity"))
        for i, act in enumerate(activity):
            w.writerow((T0 + i, round(level[act] + rng.normal(0, 0.1), 4), act))
    out = tmp_path / "out"
    args = ["evaluate", "--out", str(out), "csv", str(path), "--value", "acc", "--label", "activity"]
    assert main([*args, "--label-kind", "change"]) == 0
    drift = json.loads((out / "walk.json").read_text())["drift"]
    assert drift["n_changes"] == 2 and drift["n_detected"] == 2


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (["ax=accelerometer.x"], "sensor accelerometer: no column for its axes y, z"),
        (["ax=accelerometer"], "accelerometer has the axes x, y, z: say which"),
        (["ax=current"], "sensor 'current' is not monitored"),
        (["ax=temperature", "ay=temperature"], "temperature.value is already column 'ax'"),
    ],
)
def test_a_bad_column_mapping_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], values: list[str], message: str
) -> None:
    path = _machine(tmp_path / "pump.csv", None, n=20)
    args = ["evaluate", "--out", str(tmp_path), "csv", str(path), "--timestamp", "time"]
    assert main([*args, *(a for v in values for a in ("--value", v))]) == 2
    assert message in capsys.readouterr().err


def test_timestamp_and_index_time_are_exclusive(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _machine(tmp_path / "pump.csv", None, n=20)
    args = ["evaluate", "csv", str(path), "--timestamp", "time", "--period-s", "1", "--value", "p1"]
    assert main(args) == 2
    assert "give --timestamp or --period-s, not both" in capsys.readouterr().err


def test_resolution_is_the_recording_s_quantisation() -> None:
    assert resolution_of(np.array([1.0, 1.5, 1.25, np.nan, 2.0])) == 0.25
    assert resolution_of(np.array([3.0, 3.0])) == 1e-9
    assert resolution_of(np.array([0.0, 1e-12, 1.0])) == pytest.approx(
        1e-6
    )  # at least a millionth of the spread


def test_value_columns_parse() -> None:
    assert ValueColumn.parse("ax=accelerometer.x") == ValueColumn("ax", "accelerometer", "x")
    assert ValueColumn.parse("co2") == ValueColumn("co2")
    with pytest.raises(LabelledInputError):
        ValueColumn.parse("co2=")
