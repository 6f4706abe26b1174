"""`telemon report` looked at in headless Chromium, as a person would: the page loads from the file
alone (no request but itself, no console error) and every plot section has plots with data in it.

The screenshots are saved in the test's temporary folder (full page); `make report-screenshot`
makes the README's. The report `telemon demo` writes is looked at the same way by
tests/integration/test_install.py, on the installed package's demo.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from monitor.report.render import render
from tests.report_kit import Records, look

pytestmark = pytest.mark.integration

#: The demo's planted step on a smaller fleet: alerts, a drift alert and a promoted retrain.
SMALL_SCENARIO = """\
seed: 3
devices: 6
duration_s: 660
malformed: 2
events:
  - {kind: abrupt_shift, device: 2, sensor: temperature, start_s: 240, magnitude: 8.0}
"""


def test_a_report_of_records_renders_offline(tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    page.write_text(render(Records().data()), encoding="utf-8")
    seen = look(page, tmp_path / "report.png")
    assert seen.errors == []
    assert seen.requests == [page.resolve().as_uri()]
    assert seen.svgs["overview"] == 1 and seen.svgs["devices"] == 2 and seen.svgs["alerts"] >= 1
    assert seen.screenshot.stat().st_size > 50_000


def test_an_evaluation_report_renders_offline(tmp_path: Path) -> None:
    scenario = tmp_path / "small.yaml"
    scenario.write_text(SMALL_SCENARIO, encoding="utf-8")
    run = [sys.executable, "-m", "monitor.cli.main"]
    evaluated = subprocess.run(
        [*run, "evaluate", "--out", str(tmp_path / "ev"), "scenario", str(scenario)],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]
    out = tmp_path / "evaluation.html"
    done = subprocess.run(
        [*run, "report", "--evaluation", str(tmp_path / "ev"), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0 and f"report: {out}" in done.stdout, done.stderr[-2000:]
    seen = look(out, tmp_path / "evaluation.png")
    assert seen.errors == [] and seen.requests == [out.resolve().as_uri()]
    assert "Labelled events" in out.read_text(encoding="utf-8")


def test_an_unreachable_broker_is_reported_without_a_traceback(tmp_path: Path) -> None:
    cmd = [
        sys.executable,
        "-m",
        "monitor.cli.main",
        "report",
        "--bootstrap",
        "127.0.0.1:9",
        "--out",
        "x.html",
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert done.returncode == 1
    assert "cannot reach Kafka at 127.0.0.1:9" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "x.html").exists()
