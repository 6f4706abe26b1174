"""Tests for monitor.rules: loading and validating rule files, and the episode semantics of the engine."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from monitor.rules import Evaluation, RuleEngine, RulesError, RuleSet, Transition, load_rules

RULES_YAML = Path(__file__).resolve().parents[2] / "configs" / "rules.yaml"
T0 = 1_700_000_000_000


def _rule(name: str = "hot", **overrides: Any) -> dict[str, Any]:
    rule: dict[str, Any] = {
        "name": name,
        "scope": "device",
        "when": {"signal": "anomaly_rate", "op": ">", "value": 0.5},
    }
    rule.update(overrides)
    return rule


def _engine(*rules: dict[str, Any]) -> RuleEngine:
    return RuleEngine(RuleSet.model_validate({"rules": list(rules)}))


def _ev(
    signals: Mapping[str, float],
    ts: int = T0,
    device: str = "d1",
    sensor: str = "temperature",
    scope: str = "device",
) -> Evaluation:
    return Evaluation(scope, device, sensor, signals, ts)  # type: ignore[arg-type]


HOT = {"anomaly_rate": 0.9}
COLD = {"anomaly_rate": 0.1}


def _statuses(
    engine: RuleEngine, signal_seq: Sequence[Mapping[str, float]], step_ms: int = 1000
) -> list[str]:
    """One evaluation per element; "" where nothing happened, else the transition status."""
    out = []
    for i, sig in enumerate(signal_seq):
        out.append(",".join(t.status for t in engine.evaluate([_ev(sig, T0 + i * step_ms)])))
    return out


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def _dump(tmp_path: Path, *rules: dict[str, Any]) -> Path:
    return _write(tmp_path, yaml.safe_dump({"rules": list(rules)}))


def _load_error(path: Path) -> str:
    with pytest.raises(RulesError) as exc:
        load_rules(path)
    message = str(exc.value)
    assert message.startswith(str(path)), message
    return message


# --- loading --------------------------------------------------------------------------------------


def test_shipped_rules_load() -> None:
    rs = load_rules(RULES_YAML)
    names = [r.name for r in rs.rules]
    assert names == [
        "score_drift",
        "anomaly_burst",
        "sensor_stuck",
        "data_gap",
        "clock_skew",
        "duplicate_messages",
        "sequence_backwards",
        "fleet_score_drift",
    ]
    score_drift = rs.rules[0]
    assert (score_drift.scope, score_drift.for_, score_drift.cooldown_s) == ("device", 2, 60.0)
    assert score_drift.actions == ["alert", "retrain"]
    assert rs.rules[2].for_ == 1  # default


def test_unknown_signal_names_file_key_path_and_signal(tmp_path: Path) -> None:
    bad = _rule(
        "b",
        when={"all": [{"signal": "psi", "op": ">", "value": 1}, {"signal": "tempo", "op": ">", "value": 1}]},
    )
    msg = _load_error(_dump(tmp_path, _rule("a"), bad))
    assert "rules.1:" in msg
    assert "tempo" in msg


def test_integrity_signal_is_unknown_at_fleet_scope(tmp_path: Path) -> None:
    msg = _load_error(_dump(tmp_path, _rule(scope="fleet", when={"signal": "gap", "op": ">", "value": 0})))
    assert "rules.0:" in msg
    assert "'gap'" in msg
    assert "scope fleet" in msg


def test_retrain_on_fleet_scope_is_refused(tmp_path: Path) -> None:
    rule = _rule(scope="fleet", when={"signal": "psi", "op": ">", "value": 1}, actions=["alert", "retrain"])
    msg = _load_error(_dump(tmp_path, rule))
    assert "rules.0:" in msg
    assert "retrain" in msg


def test_duplicate_names_are_refused(tmp_path: Path) -> None:
    msg = _load_error(_dump(tmp_path, _rule("twice"), _rule("once"), _rule("twice")))
    assert "duplicate rule names" in msg
    assert "['twice']" in msg


def test_bad_op_names_the_op_key(tmp_path: Path) -> None:
    msg = _load_error(_dump(tmp_path, _rule(when={"signal": "psi", "op": "=>", "value": 1})))
    assert "rules.0.when.Condition.op:" in msg


def test_bad_op_in_nested_condition_names_its_path(tmp_path: Path) -> None:
    when = {
        "all": [{"signal": "psi", "op": ">", "value": 1}, {"any": [{"signal": "psi", "op": "~", "value": 1}]}]
    }
    msg = _load_error(_dump(tmp_path, _rule(when=when)))
    assert "rules.0.when.AllOf.all.1.AnyOf.any.0.Condition.op:" in msg


def test_missing_when_is_reported(tmp_path: Path) -> None:
    rule = _rule()
    del rule["when"]
    msg = _load_error(_dump(tmp_path, rule))
    assert "rules.0.when: Field required" in msg


def test_extra_key_is_reported(tmp_path: Path) -> None:
    msg = _load_error(_dump(tmp_path, _rule(colour="red")))
    assert "rules.0.colour: Extra inputs are not permitted" in msg


def test_invalid_yaml_names_the_file_and_line(tmp_path: Path) -> None:
    msg = _load_error(_write(tmp_path, "rules:\n  - name: a\n   scope: [device\n"))
    assert "line 3" in msg


def test_missing_file_is_a_rules_error(tmp_path: Path) -> None:
    _load_error(tmp_path / "absent.yaml")


@pytest.mark.parametrize("text", ["", "- a\n", "rules: 3\n"])
def test_wrong_top_level_is_a_rules_error(tmp_path: Path, text: str) -> None:
    _load_error(_write(tmp_path, text))


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("for", 0),
        ("cooldown_s", -1),
        ("severity", "fatal"),
        ("actions", []),
        ("actions", ["page"]),
        ("name", "Hot"),
    ],
)
def test_invalid_field_values_name_the_field(tmp_path: Path, key: str, value: object) -> None:
    msg = _load_error(_dump(tmp_path, _rule(**{key: value})))
    assert f"rules.0.{key}" in msg


# --- engine semantics -----------------------------------------------------------------------------


def test_for_n_needs_n_consecutive_holding_evaluations() -> None:
    engine = _engine(_rule(**{"for": 3}))
    assert _statuses(engine, [HOT, HOT, COLD, HOT, HOT, HOT]) == ["", "", "", "", "", "firing"]


def test_fires_once_per_episode_and_resolves_at_first_false() -> None:
    engine = _engine(_rule(**{"for": 1}))
    assert _statuses(engine, [HOT, HOT, HOT, COLD, COLD]) == ["firing", "", "", "resolved", ""]


def test_resolved_transition_keeps_the_episode_start() -> None:
    engine = _engine(_rule())
    (fire,) = engine.evaluate([_ev(HOT, T0 + 5000)])
    engine.evaluate([_ev(HOT, T0 + 6000)])
    (resolve,) = engine.evaluate([_ev(COLD, T0 + 7000)])
    assert (fire.status, fire.started_at) == ("firing", T0 + 5000)
    assert (resolve.status, resolve.started_at, resolve.evaluation.ts) == ("resolved", T0 + 5000, T0 + 7000)


def test_firing_counts_open_episodes() -> None:
    engine = _engine(_rule())
    engine.evaluate([_ev(HOT, device="a"), _ev(HOT, device="b"), _ev(COLD, device="c")])
    assert engine.firing() == 2
    engine.evaluate([_ev(COLD, device="a")])
    assert engine.firing() == 1


def test_cooldown_suppresses_a_new_episode_until_it_has_passed() -> None:
    engine = _engine(_rule(cooldown_s=10))

    def at(ts_s: int, sig: Mapping[str, float]) -> list[str]:
        return [t.status for t in engine.evaluate([_ev(sig, T0 + ts_s * 1000)])]

    assert at(0, HOT) == ["firing"]
    assert at(1, COLD) == ["resolved"]  # quiet until t = 11 s
    assert at(2, HOT) == []
    assert at(10, HOT) == []
    assert at(11, HOT) == ["firing"]  # cooldown_s of event time has passed
    assert at(12, COLD) == ["resolved"]


def test_cooldown_is_per_scope_key() -> None:
    engine = _engine(_rule(cooldown_s=60))
    engine.evaluate([_ev(HOT, device="a")])
    engine.evaluate([_ev(COLD, T0 + 1000, device="a")])
    fired = engine.evaluate([_ev(HOT, T0 + 2000, device="a"), _ev(HOT, T0 + 2000, device="b")])
    assert [(t.status, t.evaluation.device_id) for t in fired] == [("firing", "b")]


def test_separate_scope_keys_are_independent() -> None:
    engine = _engine(_rule(**{"for": 2}))
    first = engine.evaluate([_ev(HOT, device="a"), _ev(HOT, device="b", sensor="humidity")])
    second = engine.evaluate(
        [
            _ev(HOT, T0 + 1000, device="a"),
            _ev(COLD, T0 + 1000, device="b", sensor="humidity"),
            _ev(HOT, T0 + 1000, device="a", sensor="humidity"),
        ]
    )
    assert first == []
    assert [(t.evaluation.device_id, t.evaluation.sensor, t.status) for t in second] == [
        ("a", "temperature", "firing")
    ]


def test_absent_signal_makes_a_condition_false() -> None:
    engine = _engine(_rule(when={"signal": "ks_pvalue", "op": "<", "value": 0.5}))
    assert engine.evaluate([_ev({"anomaly_rate": 0.0})]) == []
    assert [t.status for t in engine.evaluate([_ev({"ks_pvalue": 0.1})])] == ["firing"]
    assert [t.status for t in engine.evaluate([_ev({})])] == ["resolved"]


def test_absent_signal_under_not_equal_is_still_false() -> None:
    engine = _engine(_rule(when={"signal": "psi", "op": "!=", "value": 0}))
    assert engine.evaluate([_ev({})]) == []


@pytest.mark.parametrize(
    ("signals", "holds"),
    [
        ({"ks_drift": 1, "psi_drift": 1}, True),
        ({"ks_drift": 1, "psi_drift": 0}, False),
        ({"ks_drift": 0, "psi_drift": 1, "stuck_at": 2}, True),
        ({"ks_drift": 0, "psi_drift": 1, "stuck_at": 0, "gap": 1}, True),
        ({"stuck_at": 0, "gap": 0}, False),
        ({"ks_drift": 1}, False),  # psi_drift absent
        ({}, False),
    ],
)
def test_all_any_nesting(signals: dict[str, float], holds: bool) -> None:
    when = {
        "any": [
            {
                "all": [
                    {"signal": "ks_drift", "op": "==", "value": 1},
                    {"signal": "psi_drift", "op": "==", "value": 1},
                ]
            },
            {
                "any": [
                    {"signal": "stuck_at", "op": ">", "value": 0},
                    {"signal": "gap", "op": ">=", "value": 1},
                ]
            },
        ]
    }
    engine = _engine(_rule(when=when))
    assert bool(engine.evaluate([_ev(signals)])) is holds


@pytest.mark.parametrize(
    ("op", "value", "signal", "holds"),
    [
        ("<", 1, 0.5, True),
        ("<", 1, 1, False),
        ("<=", 1, 1, True),
        (">", 1, 1, False),
        (">=", 1, 1, True),
        ("==", 1, 1, True),
        ("==", 1, 0.999, False),
        ("!=", 1, 0.999, True),
    ],
)
def test_operators(op: str, value: float, signal: float, holds: bool) -> None:
    engine = _engine(_rule(when={"signal": "psi", "op": op, "value": value}))
    assert bool(engine.evaluate([_ev({"psi": signal})])) is holds


def test_fleet_rule_ignores_device_evaluations_and_vice_versa() -> None:
    fleet = _rule("fleet_hot", scope="fleet")
    device = _rule("device_hot", scope="device")
    engine = _engine(fleet, device)
    on_device = engine.evaluate([_ev(HOT, device="d1")])
    on_fleet = engine.evaluate([_ev(HOT, device="*", scope="fleet")])
    assert [t.rule.name for t in on_device] == ["device_hot"]
    assert [t.rule.name for t in on_fleet] == ["fleet_hot"]


def test_transitions_follow_evaluation_then_rule_order() -> None:
    engine = _engine(_rule("first"), _rule("second"))
    out: list[Transition] = engine.evaluate([_ev(HOT, device="a"), _ev(HOT, device="b")])
    assert [(t.evaluation.device_id, t.rule.name) for t in out] == [
        ("a", "first"),
        ("a", "second"),
        ("b", "first"),
        ("b", "second"),
    ]


def test_oscillating_signal_with_for_2() -> None:
    engine = _engine(_rule(when={"signal": "anomaly_rate", "op": ">", "value": 0.5}, **{"for": 2}))
    rates = [0.6, 0.4, 0.6, 0.6, 0.6, 0.4, 0.6, 0.4, 0.6, 0.6, 0.4, 0.5, 0.51, 0.52]
    got = _statuses(engine, [{"anomaly_rate": r} for r in rates])
    assert got == ["", "", "", "firing", "", "resolved", "", "", "", "firing", "resolved", "", "", "firing"]


def test_docstring_example() -> None:
    import doctest

    import monitor.rules

    assert doctest.testmod(monitor.rules, raise_on_error=False).failed == 0
