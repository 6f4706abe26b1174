"""Tests for monitor.govern.rules: loading and validating rule files (with the line of every problem), and
the episode lifecycle of the engine (pending, firing, resolved; for, clear, cooldown; snapshots)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from monitor.cli.main import main
from monitor.errors import RulesError
from monitor.govern.rules import Evaluation, RuleEngine, RuleSet, Transition, load_rules
from monitor.govern.rules.model import SIGNALS

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
RULES_YAML = CONFIGS / "rules.yaml"
T0 = 1_700_000_000_000


def _rule(name: str = "hot", /, **overrides: Any) -> dict[str, Any]:
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
WARM = {"anomaly_rate": 0.3}
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
    return _write(tmp_path, yaml.safe_dump({"rules": list(rules)}, sort_keys=False))


def _load_error(path: Path) -> str:
    with pytest.raises(RulesError) as exc:
        load_rules(path)
    message = str(exc.value)
    assert message.startswith(str(path)), message
    return message


# --- loading: shipped files -----------------------------------------------------------------------


def test_shipped_rules_load() -> None:
    rs = load_rules(RULES_YAML)
    names = [r.name for r in rs.rules]
    assert names == [
        "score_drift",
        "scores_quieter",
        "anomaly_burst",
        "rate_of_change",
        "sensor_stuck",
        "data_gap",
        "clock_skew",
        "duplicate_messages",
        "sequence_backwards",
        "anomalies_persist",
        "fleet_score_drift",
    ]
    score_drift = rs.rules[0]
    assert (score_drift.scope, score_drift.for_, score_drift.cooldown_s) == ("device", 2, 60.0)
    assert score_drift.actions == ["alert", "retrain"]
    assert score_drift.clear is None  # resolves when KS/PSI go absent after the retrain
    assert rs.rules[2].for_ == 1  # default
    assert {a for r in rs.rules for a in r.actions} <= {"alert", "retrain"}
    assert {r.scope for r in rs.rules} <= {"device", "fleet"}


@pytest.mark.parametrize("rule", ["anomaly_burst", "fleet_score_drift"])
@pytest.mark.parametrize(
    "signals",
    [{"anomaly_rate": r} for r in (0.0, 0.25, 0.2500001, 0.9)]
    + [{"ks_drift": k, "psi_drift": p} for k in (0.0, 1.0) for p in (0.0, 1.0)],
)
def test_shipped_clear_conditions_resolve_exactly_when_the_condition_stops(
    rule: str, signals: dict[str, float]
) -> None:
    (r,) = [r for r in load_rules(RULES_YAML).rules if r.name == rule]
    if r.when.signal_names() <= signals.keys():
        assert r.clear is not None
        assert r.clear.holds(signals) is not r.when.holds(signals)


@pytest.mark.parametrize("path", sorted(CONFIGS.glob("*rules*.yaml")), ids=lambda p: p.name)
def test_every_rules_file_in_configs_is_valid(path: Path) -> None:
    assert load_rules(path).rules


def test_governance_example_uses_every_feature() -> None:
    rs = load_rules(CONFIGS / "rules-governance.yaml")
    assert {r.scope for r in rs.rules} == {"device", "fleet", "cohort"}
    assert {a for r in rs.rules for a in r.actions} == {"alert", "retrain", "quarantine", "rollback"}
    assert any(isinstance(r.for_, timedelta) for r in rs.rules)
    assert any(r.clear is not None for r in rs.rules)
    assert any(r.sensors for r in rs.rules)
    assert any("lag" in r.when.signal_names() for r in rs.rules)


# --- loading: errors with their line --------------------------------------------------------------

BAD = """\
rules:
  - name: a
    scope: device
    when: {signal: anomaly_rate, op: ">", value: 0.5}
  - name: b
    scope: device
    when:
      all:
        - {signal: psi, op: ">", value: 1}
        - {signal: psy, op: ">", value: 1}
"""


def test_error_names_file_line_column_key_path_and_signal(tmp_path: Path) -> None:
    path = _write(tmp_path, BAD)
    msg = _load_error(path)
    assert msg == (
        f"{path}:10:12: rules.1.when.all.1.signal: unknown signal 'psy' for scope device "
        f"(did you mean 'psi'?); known: {', '.join(sorted(SIGNALS['device']))}"
    )
    assert "anomaly_rate, anomaly_streak, clock_skew" in msg


def test_input_and_peer_signals_are_device_scope_only(tmp_path: Path) -> None:
    ok = "rules:\n  - {name: a, scope: device, when: {signal: peer_drift, op: '==', value: 1}}\n"
    assert [r.name for r in load_rules(_write(tmp_path, ok)).rules] == ["a"]
    bad = "rules:\n  - {name: a, scope: fleet, when: {signal: input_drift, op: '==', value: 1}}\n"
    assert "(a signal of scope device only)" in _load_error(_write(tmp_path, bad))


def test_every_problem_is_reported_in_line_order(tmp_path: Path) -> None:
    text = BAD + "    actions: [alert, page]\n  - name: Bad\n    scope: fleet\n    when: {signal: psi}\n"
    lines = _load_error(_write(tmp_path, text)).splitlines()
    assert [line.split(": ")[0].split(":", 1)[1] for line in lines] == [
        "10:12",
        "11:22",
        "12:5",
        "14:5",
        "14:5",
    ]
    assert [line.split(": ")[1:] for line in lines][1:] == [
        ["rules.1.actions.1", "Input should be 'alert', 'retrain', 'quarantine' or 'rollback'"],
        ["rules.2.name", "String should match pattern '^[a-z][a-z0-9_]{0,63}$'"],
        ["rules.2.when.op", "Field required"],  # absent keys: placed at the nearest key that exists
        ["rules.2.when.value", "Field required"],
    ]


def test_scope_dependent_problems_come_with_the_other_problems_of_the_rule(tmp_path: Path) -> None:
    rule = _rule(scope="cohort", when={"signal": "gap", "op": ">", "value": 0}, actions=["retrain"])
    msg = _load_error(_dump(tmp_path, {**rule, "for": "3x"}))
    assert [line.split(": ")[1] for line in msg.splitlines()] == [
        "rules.0.cohort",
        "rules.0.when.signal",
        "rules.0.actions.0",
        "rules.0.for",
    ]


def test_duplicate_keys_are_refused_with_both_lines(tmp_path: Path) -> None:
    text = "rules:\n  - name: a\n    scope: device\n    when: {signal: psi, op: '>', value: 1}\n"
    text += "    scope: fleet\n"
    msg = _load_error(_write(tmp_path, text))
    assert msg.endswith(":5:5: rules.0.scope: duplicate key (first at line 3)")


def test_unknown_signal_in_clear_is_reported(tmp_path: Path) -> None:
    msg = _load_error(_dump(tmp_path, _rule(clear={"any": [{"signal": "tempo", "op": "<", "value": 1}]})))
    assert "rules.0.clear.any.0.signal: unknown signal 'tempo'" in msg


def test_integrity_signal_is_unknown_at_fleet_scope(tmp_path: Path) -> None:
    msg = _load_error(_dump(tmp_path, _rule(scope="fleet", when={"signal": "gap", "op": ">", "value": 0})))
    assert "rules.0.when.signal: unknown signal 'gap' for scope fleet (a signal of scope device only)" in msg


def test_lag_is_a_fleet_signal_only(tmp_path: Path) -> None:
    lag = {"signal": "lag", "op": ">", "value": 1000}
    assert load_rules(_dump(tmp_path, _rule(scope="fleet", when=lag))).rules[0].when.signal_names() == {"lag"}
    msg = _load_error(_dump(tmp_path, _rule(when=lag)))
    assert "unknown signal 'lag' for scope device (a signal of scope fleet only)" in msg


@pytest.mark.parametrize("action", ["retrain", "quarantine", "rollback"])
@pytest.mark.parametrize("scope", ["fleet", "cohort"])
def test_device_actions_need_device_scope(tmp_path: Path, action: str, scope: str) -> None:
    rule = _rule(scope=scope, when={"signal": "psi", "op": ">", "value": 1}, actions=["alert", action])
    if scope == "cohort":
        rule["cohort"] = "firmware"
    msg = _load_error(_dump(tmp_path, rule))
    assert f"rules.0.actions.1: action {action} needs scope device" in msg


def test_device_actions_are_accepted_at_device_scope(tmp_path: Path) -> None:
    rule = _rule(actions=["alert", "retrain", "quarantine", "rollback"])
    assert load_rules(_dump(tmp_path, rule)).rules[0].actions == [
        "alert",
        "retrain",
        "quarantine",
        "rollback",
    ]


def test_cohort_scope_needs_a_cohort_label(tmp_path: Path) -> None:
    msg = _load_error(_dump(tmp_path, _rule(scope="cohort")))
    assert ":2:3: rules.0.cohort: scope cohort needs cohort: <label>, a device label such as firmware" in msg


def test_cohort_label_is_refused_outside_cohort_scope(tmp_path: Path) -> None:
    msg = _load_error(_dump(tmp_path, _rule(cohort="firmware")))
    assert "rules.0.cohort: cohort applies to scope cohort only, not device" in msg


def test_unknown_sensor_names_its_list_item(tmp_path: Path) -> None:
    msg = _load_error(_dump(tmp_path, _rule(sensors=["temperature", "humdity"])))
    assert "rules.0.sensors.1: unknown sensor 'humdity'" in msg


def test_duplicate_names_are_refused(tmp_path: Path) -> None:
    msg = _load_error(_dump(tmp_path, _rule("twice"), _rule("once"), _rule("twice")))
    assert msg.endswith(":14:3: rules.2.name: duplicate rule name 'twice' (also rules.0)")


def test_bad_op_names_the_op_key(tmp_path: Path) -> None:
    msg = _load_error(_dump(tmp_path, _rule(when={"signal": "psi", "op": "=>", "value": 1})))
    assert ":6:5: rules.0.when.op: Input should be" in msg
    assert len(msg.splitlines()) == 1  # reported against the condition only, not every node kind


def test_bad_op_in_nested_condition_names_its_path(tmp_path: Path) -> None:
    when = {
        "all": [{"signal": "psi", "op": ">", "value": 1}, {"any": [{"signal": "psi", "op": "~", "value": 1}]}]
    }
    msg = _load_error(_dump(tmp_path, _rule(when=when)))
    assert "rules.0.when.all.1.any.0.op:" in msg


def test_a_condition_that_is_not_a_mapping_is_explained(tmp_path: Path) -> None:
    msg = _load_error(_dump(tmp_path, _rule(when=3)))
    assert "rules.0.when: expected a condition (signal, op, value) or an all/any list" in msg


def test_missing_when_is_reported_at_the_rule(tmp_path: Path) -> None:
    rule = _rule()
    del rule["when"]
    msg = _load_error(_dump(tmp_path, rule))
    assert msg.endswith(":2:3: rules.0.when: Field required")


def test_extra_key_is_reported(tmp_path: Path) -> None:
    msg = _load_error(_dump(tmp_path, _rule(colour="red")))
    assert "rules.0.colour: Extra inputs are not permitted" in msg


def test_invalid_yaml_names_the_file_and_line(tmp_path: Path) -> None:
    path = _write(tmp_path, "rules:\n  - name: a\n   scope: [device\n")
    msg = _load_error(path)
    assert msg.startswith(f"{path}:3:4: invalid YAML: ")
    assert "while parsing a block collection at line 2" in msg


def test_missing_file_is_a_rules_error(tmp_path: Path) -> None:
    _load_error(tmp_path / "absent.yaml")


def test_yaml_anchors_and_merge_keys_still_work(tmp_path: Path) -> None:
    text = (
        "base: &base {scope: device, severity: critical}\n"
        "rules:\n"
        "  - {<<: *base, name: a, when: {signal: psi, op: '>', value: 1}}\n"
        "  - {<<: *base, name: b, when: {signal: gap, op: '>', value: 0}}\n"
    )
    msg = _load_error(_write(tmp_path, text))  # the extra top-level key is the only problem
    assert msg.endswith(":1:1: base: Extra inputs are not permitted")


@pytest.mark.parametrize("text", ["", "- a\n", "rules: 3\n", "a: 1\n---\nb: 2\n"])
def test_wrong_top_level_is_a_rules_error(tmp_path: Path, text: str) -> None:
    _load_error(_write(tmp_path, text))


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("for", 0),
        ("for", True),
        ("for", 1.5),
        ("for", "5x"),
        ("for", "0s"),
        ("for", "-5m"),
        ("for", "5"),
        ("for", "1:30"),
        ("cooldown_s", -1),
        ("severity", "fatal"),
        ("actions", []),
        ("actions", ["page"]),
        ("name", "Hot"),
        ("sensors", []),
        ("cohort", "Firmware"),
    ],
)
def test_invalid_field_values_name_the_field(tmp_path: Path, key: str, value: object) -> None:
    msg = _load_error(_dump(tmp_path, _rule(**{key: value})))
    assert f"rules.0.{key}" in msg


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30s", timedelta(seconds=30)),
        ("5m", timedelta(minutes=5)),
        ("1h", timedelta(hours=1)),
        ("2d", timedelta(days=2)),
        ("1h30m", timedelta(minutes=90)),
        ("1.5m", timedelta(seconds=90)),
        ("10 minutes", timedelta(minutes=10)),
        (3, 3),
    ],
)
def test_for_is_a_count_or_a_duration(tmp_path: Path, text: object, expected: object) -> None:
    rule = load_rules(_dump(tmp_path, _rule(**{"for": text}))).rules[0]
    assert rule.for_ == expected
    assert type(rule.for_) is type(expected)


# --- rules check ----------------------------------------------------------------------------------


def test_rules_check_reports_every_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = _write(tmp_path, BAD)
    assert main(["rules", "check", str(RULES_YAML)]) == 0
    assert main(["rules", "check", str(bad), str(RULES_YAML)]) == 1
    out, err = capsys.readouterr()
    assert out.splitlines() == [f"{RULES_YAML}: 11 rules OK"] * 2
    assert err.startswith(f"{bad}:10:12: rules.1.when.all.1.signal: unknown signal 'psy'")


# --- engine: lifecycle ----------------------------------------------------------------------------


def test_for_n_needs_n_consecutive_holding_evaluations() -> None:
    engine = _engine(_rule(**{"for": 3}))
    assert _statuses(engine, [HOT, HOT, COLD, HOT, HOT, HOT]) == ["pending", "", "", "pending", "", "firing"]


def test_for_1_fires_without_pending_and_resolves_at_first_false() -> None:
    engine = _engine(_rule(**{"for": 1}))
    assert _statuses(engine, [HOT, HOT, HOT, COLD, COLD]) == ["firing", "", "", "resolved", ""]


def test_all_transitions_of_an_episode_share_its_start() -> None:
    engine = _engine(_rule(**{"for": 2}))
    got = [engine.evaluate([_ev(sig, T0 + i * 1000)]) for i, sig in enumerate([COLD, HOT, HOT, HOT, COLD])]
    episode = [t for ts in got for t in ts]
    assert [(t.status, t.started_at, t.evaluation.ts) for t in episode] == [
        ("pending", T0 + 1000, T0 + 1000),
        ("firing", T0 + 1000, T0 + 2000),
        ("resolved", T0 + 1000, T0 + 4000),
    ]


def test_a_pending_episode_that_stops_holding_is_dropped_silently() -> None:
    engine = _engine(_rule(**{"for": 3}))
    assert _statuses(engine, [HOT, HOT, COLD, COLD]) == ["pending", "", "", ""]
    assert engine.firing() == 0
    assert engine.export(["d1"]) == []  # nothing left to remember


def test_firing_counts_open_episodes() -> None:
    engine = _engine(_rule())
    engine.evaluate([_ev(HOT, device="a"), _ev(HOT, device="b"), _ev(COLD, device="c")])
    assert engine.firing() == 2
    assert engine.firing_by_rule() == {"hot": 2}
    engine.evaluate([_ev(COLD, device="a")])
    assert engine.firing() == 1


def test_cooldown_suppresses_a_new_episode_until_it_has_passed() -> None:
    engine = _engine(_rule(cooldown_s=10))

    def at(ts_s: int, sig: Mapping[str, float]) -> list[tuple[str, int]]:
        return [(t.status, t.started_at) for t in engine.evaluate([_ev(sig, T0 + ts_s * 1000)])]

    assert at(0, HOT) == [("firing", T0)]
    assert at(1, COLD) == [("resolved", T0)]  # quiet until t = 11 s
    assert at(2, HOT) == []
    assert at(10, HOT) == []
    assert at(11, HOT) == [("firing", T0 + 2000)]  # the condition has held since t = 2 s
    assert at(12, COLD) == [("resolved", T0 + 2000)]


def test_no_pending_transition_during_a_cooldown() -> None:
    engine = _engine(_rule(cooldown_s=10, **{"for": 3}))
    seq = [HOT, HOT, HOT, COLD, HOT, COLD, HOT, HOT]  # resolved at t = 3 s, quiet until 13 s
    assert _statuses(engine, seq, step_ms=1000) == ["pending", "", "firing", "resolved", "", "", "", ""]
    assert _statuses(_engine(_rule(cooldown_s=1, **{"for": 3})), seq) == [
        "pending",
        "",
        "firing",
        "resolved",
        "pending",
        "",
        "pending",
        "",
    ]


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
    assert [t.status for t in first] == ["pending", "pending"]
    assert [(t.evaluation.device_id, t.evaluation.sensor, t.status) for t in second] == [
        ("a", "temperature", "firing"),
        ("a", "humidity", "pending"),
    ]


def test_oscillating_signal_with_for_2() -> None:
    engine = _engine(_rule(when={"signal": "anomaly_rate", "op": ">", "value": 0.5}, **{"for": 2}))
    rates = [0.6, 0.4, 0.6, 0.6, 0.6, 0.4, 0.6, 0.4, 0.6, 0.6, 0.4, 0.5, 0.51, 0.52]
    got = _statuses(engine, [{"anomaly_rate": r} for r in rates])
    assert got == [
        *["pending", "", "pending", "firing", "", "resolved", "pending", ""],
        *["pending", "firing", "resolved", "", "pending", "firing"],
    ]


# --- engine: duration for -------------------------------------------------------------------------


def test_duration_for_fires_once_the_condition_held_that_long() -> None:
    engine = _engine(_rule(**{"for": "5s"}))
    # evaluations every 2 s: held since t = 0 -> 4 s (not yet) -> 6 s (fires)
    assert _statuses(engine, [HOT, HOT, HOT, HOT, COLD], step_ms=2000) == [
        "pending",
        "",
        "",
        "firing",
        "resolved",
    ]


def test_duration_for_restarts_when_the_condition_breaks() -> None:
    engine = _engine(_rule(**{"for": "3s"}))
    got = _statuses(engine, [HOT, HOT, COLD, HOT, HOT, HOT, HOT])
    assert got == ["pending", "", "", "pending", "", "", "firing"]  # held from 3 s, fires at 6 s


def test_duration_for_counts_event_time_not_evaluations() -> None:
    engine = _engine(_rule(**{"for": "1m"}))
    assert [t.status for t in engine.evaluate([_ev(HOT, T0)])] == ["pending"]
    assert engine.evaluate([_ev(HOT, T0 + 59_999)]) == []
    (fire,) = engine.evaluate([_ev(HOT, T0 + 60_000)])
    assert (fire.status, fire.started_at) == ("firing", T0)


# --- engine: hysteresis ---------------------------------------------------------------------------


def test_clear_keeps_the_episode_open_until_it_holds() -> None:
    engine = _engine(_rule(clear={"signal": "anomaly_rate", "op": "<", "value": 0.2}))
    assert _statuses(engine, [HOT, WARM, HOT, WARM, COLD, WARM, HOT]) == [
        "firing",
        "",  # 0.3: under the firing threshold, but not clear
        "",
        "",
        "resolved",
        "",
        "firing",
    ]


def test_clear_does_not_end_a_pending_episode() -> None:
    engine = _engine(_rule(clear={"signal": "anomaly_rate", "op": "<", "value": 0.2}, **{"for": 3}))
    assert _statuses(engine, [HOT, WARM, HOT, HOT, HOT]) == ["pending", "", "pending", "", "firing"]


def test_clear_on_an_absent_signal_keeps_the_episode_firing() -> None:
    engine = _engine(_rule(clear={"signal": "psi", "op": "<", "value": 0.1}))
    assert _statuses(engine, [HOT, COLD, {}, {"psi": 0.05}]) == ["firing", "", "", "resolved"]


# --- engine: conditions ---------------------------------------------------------------------------


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


# --- engine: scopes -------------------------------------------------------------------------------


def test_rules_see_only_evaluations_of_their_scope() -> None:
    engine = _engine(
        _rule("fleet_hot", scope="fleet"),
        _rule("device_hot", scope="device"),
        _rule("cohort_hot", scope="cohort", cohort="firmware"),
    )
    on_device = engine.evaluate([_ev(HOT, device="d1")])
    on_fleet = engine.evaluate([_ev(HOT, device="*", scope="fleet")])
    on_cohort = engine.evaluate([_ev(HOT, device="firmware=1.2.0", scope="cohort")])
    assert [t.rule.name for t in on_device] == ["device_hot"]
    assert [t.rule.name for t in on_fleet] == ["fleet_hot"]
    assert [t.rule.name for t in on_cohort] == ["cohort_hot"]


def test_cohort_rules_see_only_their_label_and_keep_one_episode_per_value() -> None:
    engine = _engine(_rule("by_firmware", scope="cohort", cohort="firmware"))
    got = engine.evaluate(
        [
            _ev(HOT, device="firmware=1.2.0", scope="cohort"),
            _ev(HOT, device="site=berlin", scope="cohort"),
            _ev(HOT, device="firmware=1.3.0", scope="cohort"),
            _ev(HOT, device="firmware_v=1", scope="cohort"),
        ]
    )
    assert [t.evaluation.device_id for t in got] == ["firmware=1.2.0", "firmware=1.3.0"]
    assert engine.firing() == 2


def test_sensors_limit_a_rule_to_some_sensor_kinds() -> None:
    engine = _engine(_rule(sensors=["humidity", "pressure"]))
    got = engine.evaluate([_ev(HOT, sensor=s) for s in ("temperature", "humidity", "pressure")])
    assert [t.evaluation.sensor for t in got] == ["humidity", "pressure"]


def test_transitions_follow_evaluation_then_rule_order() -> None:
    engine = _engine(_rule("first"), _rule("second"))
    out: list[Transition] = engine.evaluate([_ev(HOT, device="a"), _ev(HOT, device="b")])
    assert [(t.evaluation.device_id, t.rule.name) for t in out] == [
        ("a", "first"),
        ("a", "second"),
        ("b", "first"),
        ("b", "second"),
    ]


# --- engine: state snapshots ----------------------------------------------------------------------

SNAP_RULES = (
    _rule("slow", **{"for": 3}),
    _rule("timed", cooldown_s=5, **{"for": "2s"}),
    _rule("fleet_hot", scope="fleet"),
)


def _run(engine: RuleEngine, steps: Sequence[tuple[int, str, Mapping[str, float]]]) -> list[tuple[Any, ...]]:
    out = []
    for ts, device, sig in steps:
        scope = "fleet" if device == "*" else "device"
        for t in engine.evaluate([_ev(sig, T0 + ts * 1000, device=device, scope=scope)]):
            out.append((t.rule.name, t.evaluation.device_id, t.status, t.started_at, t.evaluation.ts))
    return out


STEPS = [
    (0, "a", HOT),
    (0, "b", HOT),
    (0, "*", HOT),
    (1, "a", HOT),
    (2, "a", HOT),
    (2, "b", COLD),
    (3, "a", COLD),
    (4, "a", HOT),
    (5, "a", HOT),
    (5, "*", COLD),
    (6, "a", HOT),
    (9, "a", HOT),
    (10, "a", COLD),
    (11, "b", HOT),
    (12, "b", HOT),
]


@pytest.mark.parametrize("cut", range(len(STEPS) + 1))
def test_export_and_restore_continue_exactly_like_an_uninterrupted_run(cut: int) -> None:
    """Device-scope episodes travel (fleet-scope ones are per replica and rebuild)."""
    whole = _devices(_run(_engine(*SNAP_RULES), STEPS))
    first = _engine(*SNAP_RULES)
    before = _devices(_run(first, STEPS[:cut]))
    snapshot = json.loads(json.dumps(first.export(["a", "b"])))
    second = _engine(*SNAP_RULES)
    assert second.restore(snapshot) == len(snapshot)
    assert before + _devices(_run(second, STEPS[cut:])) == whole


def _devices(transitions: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    return [t for t in transitions if t[1] != "*"]


def test_export_selects_device_scope_keys_of_the_given_devices() -> None:
    engine = _engine(*SNAP_RULES)
    _run(engine, STEPS[:3])
    assert {(e["rule"], e["device_id"]) for e in engine.export(["a"])} == {("slow", "a"), ("timed", "a")}
    assert all(e["scope"] == "device" for e in engine.export(["a", "b", "*"]))
    (state,) = [e for e in engine.export(["a"]) if e["rule"] == "slow"]
    assert state == {
        "rule": "slow",
        "scope": "device",
        "device_id": "a",
        "sensor": "temperature",
        "streak": 1,
        "started_at": T0,
        "pending": True,
        "firing": False,
        "quiet_until": 0,
    }


def test_forget_drops_only_the_given_devices() -> None:
    engine = _engine(*SNAP_RULES)
    _run(engine, STEPS[:3])
    assert engine.forget(["a"]) == 2
    assert engine.export(["a"]) == []
    assert {e["device_id"] for e in engine.export(["a", "b"])} == {"b"}
    assert engine.firing_by_rule()["fleet_hot"] == 1  # the fleet episode is no device's


def test_restore_skips_states_of_rules_that_are_gone_or_changed_scope() -> None:
    engine = _engine(*SNAP_RULES)
    _run(engine, STEPS[:3])
    fleet = {**engine.export(["a"])[0], "rule": "fleet_hot", "scope": "fleet", "device_id": "*"}
    states = [*engine.export(["a", "b"]), fleet]
    renamed = _engine(_rule("slow", **{"for": 3}), _rule("fleet_hot", scope="device"))
    assert renamed.restore(states) == 2  # slow for a and b; timed is gone, fleet_hot changed scope


def test_restore_refuses_a_malformed_record() -> None:
    with pytest.raises(ValueError, match="streak"):
        _engine(*SNAP_RULES).restore([{"rule": "slow", "scope": "device", "device_id": "a"}])


def test_river_rules_are_the_shipped_rules_and_river_outlier() -> None:
    configs = Path(__file__).resolve().parents[2] / "configs"
    base, river = load_rules(configs / "rules.yaml"), load_rules(configs / "river-rules.yaml")
    assert river.rules[:-1] == base.rules
    assert river.rules[-1].name == "river_outlier"
