"""How ``telemon alerts tail`` prints one alert record."""

from __future__ import annotations

from monitor.analyze.explain import Explanation
from monitor.cli.alerts import pretty
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
