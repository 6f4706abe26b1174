"""How ``telemon alerts tail`` prints one alert record, and which records its filters keep."""

from __future__ import annotations

import pytest

from monitor.analyze.explain import Explanation
from monitor.cli.alerts import SEVERITIES, Filter, pretty
from monitor.cli.main import build_parser
from monitor.govern.alerts import Alert

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z


def _alert(**changes: object) -> Alert:
    fields: dict[str, object] = dict(
        alert_id="a1",
        rule="fleet_drift",
        status="resolved",
        severity="critical",
        scope="device",
        device_id="dev-0007",
        sensor="humidity",
        started_at=T0,
        ts=T0 + 1500,
        signals={"psi": 0.25},
        actions=["alert", "retrain"],
        model_version=3,
    )
    return Alert(**(fields | changes))  # type: ignore[arg-type]


def test_the_explanation_is_the_reason_on_one_line() -> None:
    why = Explanation(kind="drift", text="scores shifted\nup 3 sigma")
    assert pretty(_alert(explanation=why)) == (
        "2026-01-01T00:00:01.500Z  resolved  fleet_drift  dev-0007/humidity  scores shifted up 3 sigma"
    )


def test_the_fleet_is_named_by_its_sensor_and_the_signals_are_the_reason() -> None:
    assert pretty(_alert(scope="fleet", device_id="*")).endswith("  fleet_drift  humidity  psi=0.25")


def _filter(*argv: str) -> Filter:
    return Filter.from_args(build_parser().parse_args(["alerts", "tail", *argv]))


def test_no_filter_keeps_everything() -> None:
    assert _filter() == Filter()
    assert Filter()(_alert()) and Filter()(_alert(scope="fleet", device_id="*"))


def test_a_record_must_match_every_filter_given() -> None:
    keep = _filter("--rule", "fleet_drift", "--device", "dev-0007", "--severity", "critical")
    assert keep(_alert())
    assert not keep(_alert(rule="stuck"))
    assert not keep(_alert(device_id="dev-0008"))
    assert not keep(_alert(severity="warning"))


def test_a_repeated_filter_matches_any_of_its_values() -> None:
    keep = _filter("--state", "firing", "--state", "resolved", "--sensor", "humidity", "--sensor", "pressure")
    assert keep(_alert(status="firing")) and keep(_alert(status="resolved", sensor="pressure"))
    assert not keep(_alert(status="pending")) and not keep(_alert(sensor="temperature"))


def test_fleet_alerts_are_the_device_star() -> None:
    keep = _filter("--device", "*")
    assert keep(_alert(scope="fleet", device_id="*")) and not keep(_alert())


@pytest.mark.parametrize(("option", "value"), [("--severity", "major"), ("--state", "open")])
def test_an_unknown_severity_or_state_is_a_usage_error(
    option: str, value: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_:
        _filter(option, value)
    assert exit_.value.code == 2
    assert f"argument {option}: invalid choice: '{value}'" in capsys.readouterr().err


def test_severities_are_those_of_the_rules() -> None:
    assert SEVERITIES == ("info", "warning", "critical")
