"""`telemon evaluate`: inputs, NAB surprise scores, and the three subcommands end to end (no broker)."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import chi2

from monitor.cli.main import main
from monitor.errors import LabelledInputError as InputError
from monitor.evaluation.harness import surprise
from monitor.evaluation.recordings import CsvFormat, read_recording
from monitor.evaluation.replay import parse_time

NAB = Path(__file__).resolve().parents[3] / "shared" / "data" / "nab"
T0 = 1_767_225_600_000


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("2026-01-01T00:00:00Z", T0),
        ("2026-01-01 00:00:00", T0),  # naive: UTC
        ("1767225600", T0),  # seconds
        ("1767225600000", T0),  # milliseconds
    ],
)
def test_parse_time(text: str, ms: int) -> None:
    assert parse_time(text) == ms


def _write_csv(path: Path, rows: list[dict[str, object]]) -> Path:
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path


def test_a_missing_column_is_named(tmp_path: Path) -> None:
    path = _write_csv(tmp_path / "x.csv", [{"timestamp": "1767225600", "v": 1.0}])
    with pytest.raises(InputError, match=r"no column\(s\) \['label'\]"):
        read_recording(path, CsvFormat(label="label"), ["v"])


def test_the_line_and_column_of_a_bad_value_are_named(tmp_path: Path) -> None:
    rows: list[dict[str, object]] = [{"timestamp": 1767225600 + i, "v": 1.0, "label": 0} for i in range(3)]
    rows[2]["v"] = "n/a"
    with pytest.raises(InputError, match=r"line 4, column 'v': 'n/a'"):
        read_recording(_write_csv(tmp_path / "x.csv", rows), CsvFormat(label="label"), ["v"])


def test_a_row_with_too_few_fields_is_named(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_text("timestamp,v\n1767225600,1.0\n1767225601\n")
    with pytest.raises(InputError, match=r"line 3: 1 fields for 2 columns \(timestamp, v\); name every"):
        read_recording(path, CsvFormat(), ["v"])


def test_surprise_is_the_scaled_tail_probability() -> None:
    d2 = np.array([0.0, 1.0, 15.0, 100.0, 1e4])
    s = surprise(d2, 1)
    assert s[0] == 0.0 and not np.signbit(s[0])  # no negative zero in results files
    assert s[2] == pytest.approx(-np.log10(chi2.sf(15.0, 1)) / 20)
    assert (np.diff(s) >= 0).all()
    assert s[-1] == 1.0  # capped


def test_evaluate_scenario_detects_a_planted_shift(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    scenario = tmp_path / "shift.yaml"
    scenario.write_text(
        "seed: 3\ndevices: 4\nduration_s: 500\nevents:\n"
        "  - {kind: abrupt_shift, device: 1, sensor: pressure, start_s: 300, magnitude: 5.0}\n"
    )
    assert main(["evaluate", "--out", str(tmp_path / "out"), "scenario", str(scenario)]) == 0
    report = json.loads((tmp_path / "out" / "scenario-shift.json").read_text())
    assert report["anomaly"]["recall"] == 1.0
    assert report["anomaly"]["n_false_alarms"] == 0
    assert report["drift"]["n_detected"] == 1
    assert "abrupt_shift" in capsys.readouterr().out


def test_evaluate_csv_with_a_label_column(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    values = 20 + rng.normal(0, 0.1, 1200)
    values[800:] += 3.0  # a labelled level shift
    rows = [
        {"time": T0 + 60_000 * i, "temp": round(float(v), 3), "anomaly": int(800 <= i < 860)}
        for i, v in enumerate(values)
    ]
    path = _write_csv(tmp_path / "plant.csv", rows)
    out = tmp_path / "out"
    args = ["evaluate", "--out", str(out), "csv", str(path), "--timestamp", "time", "--value", "temp"]
    assert main([*args, "--label", "anomaly"]) == 0
    report = json.loads((out / "plant.json").read_text())
    assert report["anomaly"]["n_windows"] == 1
    assert report["anomaly"]["recall"] == 1.0


def test_evaluate_csv_reports_bad_input_with_exit_code_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _write_csv(tmp_path / "bad.csv", [{"time": "yesterday", "temp": 1.0, "anomaly": 0}])
    args = ["evaluate", "csv", str(path), "--timestamp", "time", "--value", "temp", "--label", "anomaly"]
    assert main(args) == 2
    assert "line 2, column 'time'" in capsys.readouterr().err


@pytest.mark.skipif(not NAB.is_dir(), reason="the shared NAB corpus is not next to the repository")
def test_evaluate_nab_on_a_small_corpus(tmp_path: Path) -> None:
    keys = [
        "artificialWithAnomaly/art_daily_jumpsup.csv",
        "realKnownCause/cpu_utilization_asg_misconfiguration.csv",
    ]
    root = tmp_path / "nab"
    windows = json.loads((NAB / "labels" / "combined_windows.json").read_text())
    (root / "labels").mkdir(parents=True)
    (root / "labels" / "combined_windows.json").write_text(json.dumps({k: windows[k] for k in keys}))
    shutil.copytree(NAB / "config", root / "config")
    for key in keys:
        (root / "data" / key).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(NAB / "data" / key, root / "data" / key)
    out = tmp_path / "out"
    assert (
        main(["evaluate", "--config", "configs/nab.yaml", "--out", str(out), "nab", "--root", str(root)]) == 0
    )
    report = json.loads((out / "nab.json").read_text())
    assert set(report["profiles"]) == {"standard", "reward_low_FP_rate", "reward_low_FN_rate"}
    assert all(-100 <= p["score"] <= 100 for p in report["profiles"].values())
    for key in keys:
        with (out / "nab" / key).open() as f:
            rows = list(csv.reader(f))
        assert rows[0] == ["timestamp", "value", "anomaly_score", "label"]
        assert len(rows) == len((NAB / "data" / key).read_text().splitlines())
        assert {r[3] for r in rows[1:]} == {"0", "1"}
