"""`telemon report`: the render step from records (no Kafka), the evaluation variant, the options."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from monitor.cli.main import main
from monitor.errors import InvalidInput
from monitor.report import tables
from monitor.report.command import parse_when
from monitor.report.evaluation import render_evaluation
from monitor.report.records import episodes, rank_devices
from monitor.report.render import render
from tests.report_kit import T0, Records, alert, channel


def test_a_page_has_every_section_and_nothing_to_fetch() -> None:
    page = render(Records().data())
    for anchor in ("overview", "devices", "alerts", "cohorts", "feedback", "lineage", "notes"):
        assert f'<section id="{anchor}">' in page
    assert "<script" not in page and "@font-face" not in page
    assert not re.search(r"""(src|href)=["'](?!#)""", page)  # only links within the page
    assert page.count("<svg ") >= 6  # fleet, two timelines, the reading, the frame, the quantiles


def test_the_same_records_give_the_same_bytes() -> None:
    assert render(Records().data()) == render(Records().data())


def test_an_alert_with_an_explanation_shows_its_text_and_contributions() -> None:
    page = render(Records().data())
    assert "score_drift: temperature 34.624 degC against 28.7984 expected" in page
    assert 'aria-label="The reading against its forecast (distance 2.15e+03, threshold 15.1)"' in page
    assert 'aria-label="The device\'s frame: T^2 812 by channel"' in page
    assert 'aria-label="Reference against current quantiles (5, 25, 50, 75, 95 %)"' in page


def test_a_rule_event_in_a_versions_history_gives_its_explanation() -> None:
    page = render(Records().data())
    assert page.count("score_drift: temperature 34.624 degC against 28.7984 expected") == 2  # alert, history


def test_an_alert_without_an_explanation_says_so() -> None:
    page = render(Records().data())
    assert "no explanation recorded with this alert" in page  # the score_drift alert has none


def test_without_verdicts_the_feedback_section_says_so() -> None:
    assert "no verdicts yet" in render(Records().data())


def test_verdicts_give_precision_by_rule_and_false_alarms_by_hour() -> None:
    alert_id = f"anomaly_burst-{T0 + 360_000}"
    verdicts = [{"alert_id": alert_id, "verdict": "false_positive", "ts": T0 + 400_000}]
    data = Records(verdicts=verdicts).data()
    data.precision, data.breakdown = tables.feedback(data.episodes, data.feedback)
    by_rule = data.precision[0]
    assert by_rule.title == "Precision by rule"
    assert ("anomaly_burst", 1, 1, 0, 1, 0, 0.0, None) in by_rule.rows
    hours = next(t for t in data.breakdown if "hour" in t.title)
    assert hours.rows == [("00", 1, 1.0)]
    assert "Error breakdown" in render(data)


def test_long_series_are_drawn_as_their_envelope() -> None:
    data = Records().data()
    data.channels = [channel(n=3_000)]
    short = len(render(data))
    data.channels = [channel(n=300_000)]  # 100 times the readings, the same pixel columns
    assert len(render(data)) < 1.3 * short


def test_episodes_join_the_records_of_an_alert_id() -> None:
    eps = episodes(
        [
            alert("r", "pending", T0, T0),
            alert("r", "firing", T0 + 5, T0),
            alert("r", "resolved", T0 + 9, T0),
            alert("d", "firing", T0 + 7, T0 + 7),
        ],
        frozenset({"d"}),
    )
    assert [(e.rule, e.start, e.fired, e.end, e.drift) for e in eps] == [
        ("r", T0, T0 + 5, T0 + 9, False),
        ("d", T0 + 7, T0 + 7, None, True),
    ]


def test_devices_with_alerts_come_first_then_the_others_by_id() -> None:
    eps = episodes([alert("r", "firing", T0, T0)], frozenset())
    assert rank_devices(eps, {"dev-0001": 1, "dev-0000": 1, "dev-0007": 1}, 2) == ["dev-0007", "dev-0000"]


def test_times_iso_epoch_and_durations_before_now() -> None:
    assert parse_when("--since", "2026-01-01T00:00:00", 0) == T0
    assert parse_when("--since", str(T0 // 1000), 0) == T0
    assert parse_when("--since", "2h", T0) == T0 - 7_200_000
    assert parse_when("--until", None, T0) is None
    with pytest.raises(InvalidInput, match="--since 'yesterday': not a time"):
        parse_when("--since", "yesterday", T0)


def test_an_unknown_time_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["report", "--since", "last tuesday"]) == 2
    err = capsys.readouterr().err
    assert "not a time" in err and "Traceback" not in err


def _quality(windows: list[dict[str, object]]) -> dict[str, object]:
    delay = {"count": 1, "median": 2000.0, "p90": 2000.0}
    q = {
        "precision": 1.0,
        "recall": 0.5,
        "f1": 0.67,
        "false_alarms_per_device_day": 0.0,
        "delay_ms": delay,
        "by_kind": {"spike": {"n_windows": 2, "n_detected": 1, "recall": 0.5, "delay_ms": delay}},
        "windows": windows,
    }
    return {"messages": 1000, "alerts_firing": 1, "anomaly": q, "drift": {"n_changes": 0, "n_detected": 0}}


@pytest.mark.parametrize(
    "stamp",
    [
        lambda m, s: f"2026-01-01 00:{m:02d}:{s:02d}",  # ISO, as most recordings
        lambda m, s: str(1_767_225_600 + 60 * m + s),  # epoch seconds
        lambda m, s: str((1_767_225_600 + 60 * m + s) * 1000),  # epoch ms
    ],
    ids=["iso", "epoch-s", "epoch-ms"],
)
def test_an_evaluation_folder_renders_its_reports(tmp_path: Path, stamp: Callable[[int, int], str]) -> None:
    event = {
        "device_id": "dev-0001",
        "sensor": "temperature",
        "kind": "spike",
        "start_ts": T0,
        "end_ts": T0 + 60_000,
    }
    windows = [
        {"event": event, "detected": True, "first_detection_ts": T0 + 2000, "window_end": T0 + 120_000},
        {"event": event | {"start_ts": T0 + 600_000, "end_ts": T0 + 660_000}, "detected": False},
    ]
    (tmp_path / "scenario-x.json").write_text(json.dumps(_quality(windows)))
    (tmp_path / "rows").mkdir()
    rows = ["timestamp,label,anomaly_score,anomalous,alerting"]
    rows += [
        f"{stamp(m, s)},{int(10 <= m < 12)},{np.sin(s):.3f},0,{int(m == 11)}"
        for m in range(30)
        for s in range(0, 60, 10)
    ]
    (tmp_path / "rows" / "rec.csv").write_text("\n".join(rows) + "\n")
    report = _quality(windows) | {"files": ["somewhere/rec.csv"]}
    (tmp_path / "rec.json").write_text(json.dumps(report))
    page = render_evaluation(tmp_path, 8)
    assert '<section id="r0">' in page and '<section id="r1">' in page
    assert "Labelled events" in page and "rec: anomaly score, labels and alerts (180 rows)" in page


def test_a_folder_without_reports_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="no telemon evaluate report"):
        render_evaluation(tmp_path, 8)
    assert main(["report", "--evaluation", str(tmp_path / "missing"), "--out", str(tmp_path / "r.html")]) == 2


def test_an_empty_range_says_what_the_topic_holds() -> None:
    from monitor.report.collect import Request, _range

    held = np.array([T0, T0 + 60_000], np.int64)
    assert _range(Request(), held, "telemon.readings") == (T0, T0 + 60_000)
    with pytest.raises(
        InvalidInput, match=r"no readings from 2027.* holds 2 readings from 2026-01-01 00:00:00Z"
    ):
        _range(Request(since=T0 + 365 * 86_400_000), held, "telemon.readings")
