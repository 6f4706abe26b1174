"""`make evaluate`'s pieces: HAPT joined into CSVs, --event and change-point scoring of
`evaluate csv`, the baselines beside telemon, and the README tables built from the reports."""

from __future__ import annotations

import csv
import itertools
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from monitor.cli.main import main
from monitor.errors import LabelledInputError
from monitor.evaluation import hapt, tables
from monitor.evaluation.recorded_quality import TimedEvent
from monitor.evaluation.recordings import CsvFormat, read_recording

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
T0 = 1_767_225_600  # seconds


def _raw_hapt(folder: Path, rows: int = 10) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for kind in ("acc", "gyro"):
        lines = [f"{i} {i + 0.5} {-i}" for i in range(rows)]
        (folder / f"{kind}_exp01_user01.txt").write_text("\n".join(lines) + "\n")
    (folder / "labels.txt").write_text("1 1 5 3 4\n1 1 7 5 6\n1 1 1 9 10\n2 2 4 1 5\n")
    return folder


def test_hapt_experiments_are_joined_with_the_activity_of_their_spans(tmp_path: Path) -> None:
    raw = _raw_hapt(tmp_path / "RawData")
    (written,) = hapt.write_all(raw, tmp_path / "out")
    assert written == tmp_path / "out" / "exp01_user01.csv"
    with written.open() as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == list(hapt.COLUMNS)
    assert [int(r["activity"]) for r in rows] == [5, 5, 5, 5, 7, 7, 7, 7, 1, 1]
    assert rows[3]["acc_y"] == "3.5" and rows[3]["gyro_z"] == "-3.0"


def test_hapt_labels_errors_name_the_file_and_line(tmp_path: Path) -> None:
    raw = _raw_hapt(tmp_path / "RawData")
    (raw / "labels.txt").write_text("1 1 5 3 4\n1 1 five 5 6\n")
    with pytest.raises(LabelledInputError, match=r"labels.txt, line 2: '1 1 five 5 6'"):
        hapt.read_spans(raw / "labels.txt")
    (raw / "labels.txt").write_text("1 1 5 4 3\n")
    with pytest.raises(LabelledInputError, match=r"line 1: .*start <= end"):
        hapt.read_spans(raw / "labels.txt")
    (raw / "labels.txt").write_text("1 1 5 3 4\n")
    (raw / "gyro_exp01_user01.txt").write_text("1 2 3\n")
    with pytest.raises(LabelledInputError, match="has 10 rows"):
        hapt.write_all(raw, tmp_path / "out")
    assert hapt.main([str(tmp_path / "nowhere"), str(tmp_path / "out")]) == 2


@pytest.mark.skipif(not (SHARED / "hapt").is_dir(), reason="the shared data is not next to the repository")
def test_the_shared_hapt_recordings_give_ten_experiments(tmp_path: Path) -> None:
    written = hapt.write_all(SHARED / "hapt" / "RawData", tmp_path)
    assert len(written) == 10
    with written[0].open() as f:
        activity = [int(r["activity"]) for r in csv.DictReader(f)]
    assert len(activity) == 20598 and activity[0] == 5
    assert sum(a != b for a, b in itertools.pairwise(activity)) == 18


def test_timed_events_parse() -> None:
    event = TimedEvent.parse("orientation=2015-08-21T22:48:10/2015-08-21T23:48:10")
    assert event.kind == "orientation" and event.end_ts - event.start_ts == 3_600_000
    assert TimedEvent.parse("1700000000/1700000060").kind == "event"
    for bad in ("x=2015-08-21", "x=2015-08-22/2015-08-21", "x=yesterday/today"):
        with pytest.raises(LabelledInputError, match="--event"):
            TimedEvent.parse(bad)


def _walk(path: Path, n: int = 3000) -> Path:
    """Readings every 10 s of a 3-axis accelerometer, whose level moves at each activity change
    (0, 2 from row 1200, -2 from row 2200; the label column is the activity)."""
    level = np.where(np.arange(n) < 1200, 0.0, np.where(np.arange(n) < 2200, 2.0, -2.0))
    axes = 0.1 * (np.arange(n)[:, None] % np.array([5, 7, 11]) - np.array([2, 3, 5])) / 3
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(("time", "ax", "ay", "az", "activity"))
        for i in range(n):
            a = axes[i] + level[i]
            w.writerow((T0 + 10 * i, *np.round(a, 4), int(level[i])))
    return path


AXES = ["--value", "ax=accelerometer.x", "--value", "ay=accelerometer.y", "--value", "az=accelerometer.z"]


def test_change_points_are_scored_within_the_horizon_beside_the_baselines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, out = _walk(tmp_path / "walk.csv"), tmp_path / "out"
    args = ["evaluate", "--out", str(out), "csv", str(path), "--timestamp", "time", *AXES]
    args += ["--label", "activity", "--label-kind", "change", "--horizon-s", "600", "--baselines"]
    assert main(args) == 0
    report = json.loads((out / "walk.json").read_text())
    assert report["horizon_ms"] == 600_000 and report["change_points"]["n_windows"] == 2
    assert set(report["baselines"]) == {"3sigma", "hst"}
    sigma = report["baselines"]["3sigma"]
    assert sigma["detector"] == "3sigma" and sigma["change_points"]["recall"] == 1.0
    assert set(sigma["by_rule"]) == {"3sigma.accelerometer"}
    rate = report["change_points"]["false_alarms_per_device_day"]
    for b in report["baselines"].values():
        eq = b["at_equal_false_alarms"]
        assert eq["rate"] == rate and eq["false_alarms_per_device_day"] <= rate
    assert (out / "rows" / "walk.3sigma.csv").is_file() and (out / "rows" / "walk.hst.csv").is_file()
    with (out / "rows" / "walk.3sigma.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert rows[1200]["anomalous"] == "1" and rows[1200]["alerting"] == "1" and rows[1000]["alerting"] == "0"
    printed = capsys.readouterr().out
    assert "recall at telemon's false alarms" in printed and "3sigma" in printed


def test_known_events_of_unlabelled_files_and_false_alarms_by_rule(tmp_path: Path) -> None:
    path, out = _walk(tmp_path / "walk.csv"), tmp_path / "out"
    start, end = T0 + 10 * 1200, T0 + 10 * 2999
    args = ["evaluate", "--out", str(out), "csv", str(path), "--timestamp", "time", *AXES]
    assert main([*args, "--event", f"step={start}/{end}", "--baselines", "3sigma"]) == 0
    report = json.loads((out / "walk.json").read_text())
    assert report["events"] == [{"kind": "step", "start_ts": start * 1000, "end_ts": end * 1000}]
    sigma = report["baselines"]["3sigma"]
    assert sigma["anomaly"]["n_windows"] == 1 and sigma["anomaly"]["recall"] == 1.0
    rule = sigma["by_rule"]["3sigma.accelerometer"]
    assert rule["delays_ms"] == [0] and rule["false_alarms"] == 0
    assert rule["firings"] == 59  # every 310 s (the first reading past the 300 s cooldown) for 17,990 s


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--event", "a=1/2", "--label", "activity"], "give --label or --event, not both"),
        (["--baselines", "3sigma,lof"], "--baselines: unknown lof (known: 3sigma, hst)"),
        (["--horizon-s", "-1"], "--horizon-s must be >= 0"),
    ],
)
def test_bad_options_are_clear_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], message: str
) -> None:
    path = _walk(tmp_path / "walk.csv", n=20)
    args = ["evaluate", "--out", str(tmp_path), "csv", str(path), "--timestamp", "time", *AXES]
    assert main([*args, *extra]) == 2
    assert message in capsys.readouterr().err


# --- the README tables --------------------------------------------------------------------------


def _quality(**values: Any) -> dict[str, Any]:
    q = {"f1": 0.5, "precision": 0.5, "recall": 0.5, "false_alarms_per_device_day": 2.0, "device_days": 1.0}
    return q | {"n_windows": 4, "delay_ms": {"median": 1500.0}, "windows": [], "by_kind": {}} | values


def _change_report() -> dict[str, Any]:
    rate = {"rate": 2.0, "threshold": 0.97, "recall": 0.25, "false_alarms_per_device_day": 1.5, "f1": 0.3}
    baseline = {"change_points": _quality(f1=0.2, recall=0.125), "at_equal_false_alarms": rate}
    return {
        "files": ["a.csv", "b.csv"],
        "messages": 1234,
        "horizon_ms": 5000,
        "change_points": _quality(),
        "baselines": {"3sigma": baseline},
    }


def test_the_change_point_table_has_a_row_per_detector() -> None:
    text = tables.change_table(_change_report())
    assert text.startswith("4 labelled change points in 2 files, 1,234 readings, 1.000 device-days")
    lines = text.splitlines()
    assert lines[2] == "| " + " | ".join(tables.CHANGE_HEAD) + " |"
    assert lines[4] == "| telemon | 0.5 | 0.5 | 0.5 | 0.5 (its own) | 2 | 1.5 |"
    assert lines[5] == "| 3sigma | 0.2 | 0.5 | 0.125 | 0.25 (0.97) | 2 | 1.5 |"


def test_the_astro_pi_table_says_which_events_and_rules_alerted_within_60_s() -> None:
    by_rule = {
        "data_gap": {"false_alarms": 0, "delays_ms": [None, 0]},
        "score_drift": {"false_alarms": 5, "delays_ms": [120_000, None]},
        "anomaly_burst": {"false_alarms": 2, "delays_ms": [None, None]},
    }
    slow = {"anomaly": _quality(windows=[{"delay_ms": None}, {"delay_ms": None}]), "by_rule": {}}
    report = {
        "messages": 10,
        "events": [
            {"kind": "moved", "start_ts": 1_440_147_741_000, "end_ts": 1_440_151_341_000},
            {"kind": "orientation", "start_ts": 1_440_197_290_000, "end_ts": 1_440_200_890_000},
        ],
        "anomaly": _quality(
            windows=[{"delay_ms": 120_000}, {"delay_ms": 0}], false_alarms_per_device_day=7.0
        ),
        "by_rule": by_rule,
        "baselines": {"hst": slow},
    }
    lines = tables.astropi_table(report).splitlines()
    assert lines[0] == (
        "10 readings, 1.000 device-days; the events: moved from 2015-08-21 09:02:21 to 2015-08-21 10:02:21,"
        " orientation from 2015-08-21 22:48:10 to 2015-08-21 23:48:10."
    )
    assert lines[4] == "| telemon | 1 of 2 (data_gap) | 120 / 0 | 7 | score_drift 5, anomaly_burst 2 |"
    assert lines[5] == "| hst | 0 of 2 | - / - | 2 | - |"


def test_nab_and_simulator_tables() -> None:
    profiles = {
        p: {"score": s}
        for p, s in zip(
            ("standard", "reward_low_FP_rate", "reward_low_FN_rate"), (75.9, 70.2, 79.6), strict=True
        )
    }
    published = {"ARTime": {"standard": 74.9, "reward_low_FP_rate": 65.1, "reward_low_FN_rate": 80.4}}
    nab = {"profiles": profiles, "published": published, "baselines": {"hst": {"profiles": profiles}}}
    lines = tables.nab_table(nab | {"files": 58, "rows": 365_551}, None).splitlines()
    assert lines[0].startswith("58 files, 365,551 rows; normalised")
    assert lines[4:] == [
        "| telemon, configs/nab.yaml | 75.9 | 70.2 | 79.6 |",
        "| hst | 75.9 | 70.2 | 79.6 |",
        "| ARTime (published) | 74.9 | 65.1 | 80.4 |",
    ]
    kinds = {"spike": {"n_detected": 1}, "drift": {"n_detected": 0}}
    library = {"messages": 500, "anomaly": _quality(by_kind=kinds, f1=1.0, false_alarms_per_device_day=0.0)}
    library["baselines"] = {"3sigma": {"anomaly": _quality(by_kind=kinds)}}
    clean = {"messages": 4000, "anomaly": _quality(false_alarms_per_device_day=0.0)}
    lines = tables.scenario_table(library, clean).splitlines()
    assert lines[0] == (
        "library.yaml: 500 messages, 1.000 device-days, one planted event per kind; "
        "clean.yaml: 4,000 messages, 1.000 device-days, no event."
    )
    assert lines[4:] == [
        "| telemon | 1 of 2 | drift | 0 | 0 | 1 |",
        "| 3sigma | 1 of 2 | drift | 2 | not run | 0.5 |",
    ]


def test_tables_are_built_from_the_reports_in_the_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["evaluate", "--out", str(tmp_path), "tables"]) == 2
    assert "no reports to build tables from" in capsys.readouterr().err
    (tmp_path / "hapt.json").write_text(json.dumps(_change_report()))
    docs = tmp_path / "docs" / "tables.md"
    assert main(["evaluate", "--out", str(tmp_path), "tables", "--docs", str(docs)]) == 0
    written = (tmp_path / "tables.md").read_text()
    assert written.startswith("### UCI HAPT\n\n4 labelled change points") and "| 3sigma |" in written
    assert capsys.readouterr().out == written
    assert docs.read_text() == f"{tables.GENERATED_NOTE}\n\n{written}"


def test_scenario_baselines_are_reported_beside_telemon(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    scenario = tmp_path / "shift.yaml"
    scenario.write_text(
        "seed: 3\ndevices: 2\nduration_s: 400\nevents:\n"
        "  - {kind: abrupt_shift, device: 1, sensor: pressure, start_s: 300, magnitude: 5.0}\n"
    )
    out = tmp_path / "out"
    assert main(["evaluate", "--out", str(out), "scenario", str(scenario), "--baselines", "3sigma"]) == 0
    report = json.loads((out / "scenario-shift.json").read_text())
    sigma = report["baselines"]["3sigma"]
    assert sigma["detector"] == "3sigma" and sigma["anomaly"]["by_kind"]["abrupt_shift"]["n_detected"] == 1
    assert sigma["anomaly"]["device_days"] == pytest.approx(report["anomaly"]["device_days"], rel=0.01)
    assert re.search(r"event kind \(detected\) +telemon +3sigma", capsys.readouterr().out)


@pytest.mark.skipif(not (SHARED / "nab").is_dir(), reason="the shared data is not next to the repository")
def test_nab_baselines_are_scored_as_nab_defines_it(tmp_path: Path) -> None:
    key = "artificialWithAnomaly/art_daily_jumpsup.csv"
    root = tmp_path / "nab"
    windows = json.loads((SHARED / "nab" / "labels" / "combined_windows.json").read_text())
    (root / "labels").mkdir(parents=True)
    (root / "labels" / "combined_windows.json").write_text(json.dumps({key: windows[key]}))
    (root / "config").mkdir()
    (root / "config" / "profiles.json").write_bytes(
        (SHARED / "nab" / "config" / "profiles.json").read_bytes()
    )
    (root / "data" / key).parent.mkdir(parents=True)
    (root / "data" / key).write_bytes((SHARED / "nab" / "data" / key).read_bytes())
    out = tmp_path / "out"
    assert main(["evaluate", "--out", str(out), "nab", "--root", str(root), "--baselines", "3sigma"]) == 0
    report = json.loads((out / "nab.json").read_text())
    assert set(report["baselines"]["3sigma"]["profiles"]) == set(report["profiles"])
    with (out / "nab" / "3sigma" / key).open() as f:
        rows = list(csv.DictReader(f))
    assert {r["anomaly_score"] for r in rows} <= {"0.0", "1.0"} and len(rows) == 4032


@pytest.mark.skipif(not (SHARED / "astropi").is_dir(), reason="the shared data is not next to the repository")
def test_the_astro_pi_events_of_make_evaluate_are_where_the_board_moved() -> None:
    makefile = (Path(__file__).resolve().parents[2] / "Makefile").read_text()
    events = [TimedEvent.parse(part.split()[0]) for part in makefile.split("--event ")[1:4]]
    assert [e.kind for e in events] == ["moved", "moved", "orientation"]
    assert {e.end_ts - e.start_ts for e in events} == {3_600_000}  # the hour the models settle in
    gyro = ["gyro_x", "gyro_y", "gyro_z"]
    path = SHARED / "astropi" / "astro_pi_data_20150824_085954.csv"
    rec = read_recording(path, CsvFormat(timestamp="time_stamp"), ["accel_z", *gyro])
    # Moved: the first reading of each run where the board turned at over 10x the log's 99.9th
    # percentile of angular speed (~0.005 rad/s; the two runs: 0.06 and 0.11 rad/s).
    speed = np.sqrt(sum(rec.values[a] ** 2 for a in gyro))
    fast = np.flatnonzero(speed > 10 * np.quantile(speed, 0.999))
    starts = fast[np.r_[True, np.diff(fast) > 6]]  # runs a minute apart or more
    assert [int(rec.ts[i]) for i in starts] == [e.start_ts for e in events[:2]]
    # Orientation: the first reading after the recording gap, lying on its side.
    gap = int(np.argmax(np.diff(rec.ts)))
    assert rec.stamps[gap] == "2015-08-21 10:53:40" and rec.ts[gap + 1] == events[2].start_ts
    assert rec.values["accel_z"][gap] > 1.0 > 0.1 > rec.values["accel_z"][gap + 1]  # the new orientation
