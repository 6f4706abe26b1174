"""The demo's summary: alerts still firing at the end, then those that fired and resolved."""

from __future__ import annotations

import pytest

from monitor.analyze.explain import Explanation
from monitor.cli.demo import _print_alerts, progress_detail
from monitor.serve.service import Totals
from tests.unit.test_cli_alerts import _alert


def test_alerts_are_listed_by_how_their_episode_ended(capsys: pytest.CaptureFixture[str]) -> None:
    why = Explanation(kind="drift", text="why: " + "scores shifted up " * 10)
    ended = [
        _alert(alert_id="a1", status="firing", explanation=why),
        _alert(alert_id="a1", status="resolved"),
    ]
    open_ = [
        _alert(alert_id="b2", rule="stuck", status="pending"),
        _alert(alert_id="b2", rule="stuck", status="firing"),
    ]
    _print_alerts(ended + open_, width=100)
    lines = capsys.readouterr().out.splitlines()
    assert lines[:3] == [
        "alerts still firing:",
        "  stuck              critical dev-0007/humidity",
        "alerts fired, since resolved:",
    ]
    assert lines[3] == "  fleet_drift        critical dev-0007/humidity"
    assert all(len(line) <= 100 for line in lines[4:]) and lines[4].startswith("    why: why: scores")


def test_none_is_said_when_a_list_is_empty(capsys: pytest.CaptureFixture[str]) -> None:
    _print_alerts([])
    assert capsys.readouterr().out.splitlines() == [
        "alerts still firing: none",
        "alerts fired, since resolved: none",
    ]


def test_reasons_wrap_to_the_width(capsys: pytest.CaptureFixture[str]) -> None:
    why = Explanation(kind="drift", text="temperature 34.6 degC against 28.8 expected; " * 6)
    _print_alerts([_alert(status="firing", explanation=why)], width=60)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) > 5 and all(len(line) <= 60 for line in lines)
    assert lines[2].startswith("    why: temperature") and lines[3].startswith(" " * 9 + "temperature")


def test_the_status_line_counts() -> None:
    t = Totals(messages=1000, alerts=[_alert(alert_id="a", status="firing"), _alert(alert_id="a")])
    t.alerts.append(_alert(alert_id="b", status="firing"))
    assert progress_detail(1200, t) == "produced 1,200  consumed 1,000  alerts 1 firing (2 fired)  retrains 0"
