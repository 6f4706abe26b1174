"""The demo's summary: alerts still firing at the end, then those that fired and resolved."""

from __future__ import annotations

import pytest

from monitor.analyze.explain import Explanation
from monitor.cli.demo import _print_alerts
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
    _print_alerts(ended + open_)
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
