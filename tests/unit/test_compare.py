"""The comparison of a shadow run with production: episodes, matching, range, verdicts, retrain
decisions, and the command's table and JSON."""

from __future__ import annotations

import argparse
import json

import msgspec
import pytest

from monitor.analyze.compare import (
    Candidate,
    Decision,
    Decisions,
    Outputs,
    Window,
    compare,
    decode_candidate,
    decode_decision,
    episodes,
    match,
)
from monitor.analyze.feedback import Verdict
from monitor.analyze.ledger import AlertRecord
from monitor.cli.compare import _tolerance_ms, render
from monitor.cli.main import main
from monitor.govern import registry
from monitor.govern.alerts import alert_id
from monitor.settings import Settings

T0 = 1_767_225_600_000
S = 1000


def record(
    rule: str, device: str, start_s: float, status: str = "firing", at_s: float | None = None, **kw: object
) -> AlertRecord:
    start = T0 + int(start_s * S)
    ts = start if at_s is None else T0 + int(at_s * S)
    fields = {"signals": {"score_mean": 0.9}, "actions": ["alert"], "model_version": 1} | kw
    return AlertRecord(
        alert_id(rule, device, "temperature", start),
        rule,
        status,
        "device",
        device,
        "temperature",
        start,
        ts=ts,
        **fields,  # type: ignore[arg-type]
    )


def episode(rule: str, device: str, start_s: float, end_s: float | None = None) -> list[AlertRecord]:
    records = [record(rule, device, start_s)]
    if end_s is not None:
        records.append(record(rule, device, start_s, "resolved", end_s))
    return records


def test_an_episode_is_counted_once_from_its_firing_record() -> None:
    dup = episode("hot", "d1", 10, 50)
    eps = episodes([record("hot", "d1", 10, "pending"), *dup, *dup])
    assert [(e.rule, e.fired_at - T0, e.ended_at) for e in eps] == [("hot", 10_000, T0 + 50_000)]


def test_pending_only_episodes_and_rules_without_alert_action_are_not_alerts() -> None:
    assert (
        episodes([record("hot", "d1", 10, "pending"), record("quiet", "d1", 10, actions=["retrain"])]) == []
    )


def test_an_episode_read_only_from_its_resolved_record_fired_at_its_start() -> None:
    (e,) = episodes([record("hot", "d1", 10, "resolved", 90)])
    assert (e.fired_at, e.ended_at, e.score) == (T0 + 10_000, T0 + 90_000, None)


def test_the_same_episode_in_both_runs_matches_with_no_latency() -> None:
    p = episodes(episode("hot", "d1", 10, 50))
    matched, only_p, only_s = match(p, p, tolerance_ms=0)
    assert [m.latency_ms for m in matched] == [0] and only_p == only_s == []


def test_episodes_match_when_their_spans_overlap_within_the_tolerance() -> None:
    p = episodes(episode("hot", "d1", 10, 50))
    later = episodes(episode("hot", "d1", 80, 120))  # 30 s after production's ended
    assert match(p, later, tolerance_ms=30_000)[0][0].latency_ms == 70_000
    assert match(p, later, tolerance_ms=29_000)[0] == []
    assert match(p, episodes(episode("hot", "d2", 10, 50)), 60_000)[0] == []  # another device
    assert match(p, episodes(episode("cold", "d1", 10, 50)), 60_000)[0] == []  # another rule


def test_each_episode_matches_at_most_one_the_closest_first() -> None:
    p = episodes([*episode("hot", "d1", 100, 200), *episode("hot", "d1", 300, 400)])
    s = episodes(episode("hot", "d1", 290, 410))  # overlaps both with the tolerance
    matched, only_p, _ = match(p, s, tolerance_ms=120_000)
    assert [m.production.fired_at - T0 for m in matched] == [300_000]
    assert [e.fired_at - T0 for e in only_p] == [100_000]


def test_the_range_keeps_matches_either_side_of_which_fired_in_it() -> None:
    prod = Outputs([*episode("hot", "d1", 50, 80), *episode("cold", "d2", 10), *episode("gap", "d3", 500)])
    shadow = Outputs([*episode("hot", "d1", 70, 90), *episode("stuck", "d4", 20)])
    c = compare(prod, shadow, [], Window(T0 + 60_000, T0 + 400_000))
    assert [m.production.rule for m in c.matched] == ["hot"]  # the shadow fired at 70 s, in the range
    assert c.only_production == [] and c.only_shadow == []  # cold (10 s), stuck (20 s), gap (500 s): out
    assert (c.total.production, c.total.shadow, c.total.both) == (1, 1, 1)


def test_rule_rows_count_both_only_and_the_median_latency() -> None:
    prod = Outputs([*episode("hot", "d1", 10), *episode("hot", "d2", 10), *episode("stuck", "d3", 10)])
    shadow = Outputs([*episode("hot", "d1", 20), *episode("hot", "d2", 50), *episode("rate", "d4", 10)])
    c = compare(prod, shadow, [], Window())
    rows = {r.rule: r for r in c.rules}
    hot = rows["hot"]
    assert (hot.production, hot.shadow, hot.both, hot.latency_s) == (2, 2, 2, 25.0)
    assert (rows["stuck"].only_production, rows["stuck"].only_shadow) == (1, 0)
    assert (rows["rate"].only_production, rows["rate"].only_shadow, rows["rate"].production) == (0, 1, 0)
    assert (c.total.production, c.total.shadow, c.total.both) == (3, 3, 2)
    assert hot.score_production == hot.score_shadow == 0.9


def test_precision_judges_a_matched_shadow_alert_by_production_s_verdict() -> None:
    prod_hot, prod_stuck = episode("hot", "d1", 10), episode("stuck", "d2", 10)
    shadow_hot = episode("hot", "d1", 40)  # another episode start: another alert id
    verdicts = [
        Verdict(prod_hot[0].alert_id, "false_positive", T0),
        Verdict(prod_hot[0].alert_id, "true_positive", T0 + 1),  # the latest counts
        Verdict(prod_stuck[0].alert_id, "false_positive", T0),
    ]
    c = compare(Outputs([*prod_hot, *prod_stuck]), Outputs(shadow_hot), verdicts, Window())
    p, s = c.precision["production"], c.precision["shadow"]
    assert (p.judged, p.true_positive, p.false_positive, p.precision) == (2, 1, 1, 0.5)
    assert (s.judged, s.true_positive, s.precision) == (1, 1, 1.0)
    assert {r.rule: r.precision_shadow for r in c.rules} == {"hot": 1.0, "stuck": None}


def test_expected_maintenance_counts_in_neither() -> None:
    hot = episode("hot", "d1", 10)
    c = compare(Outputs(hot), Outputs(), [Verdict(hot[0].alert_id, "expected_maintenance", T0)], Window())
    p = c.precision["production"]
    assert (p.judged, p.maintenance, p.precision) == (1, 1, None)


def decision(kind: str, version: int, at_s: float, device: str = "d1") -> Decision:
    return Decision(kind, device, "temperature", version, 1, "score_drift", T0 + int(at_s * S))


def candidate(version: int, at_s: float, device: str = "d1", rule: str = "score_drift") -> Candidate:
    return Candidate(device, "temperature", version, rule, T0 + int(at_s * S))


def test_retrain_decisions_are_counted_once_per_event_and_listed_per_pair() -> None:
    prod = Outputs(
        candidates=[candidate(1, 100, rule=""), candidate(2, 100), candidate(2, 100), candidate(3, 300)],
        decisions=[decision("rejected", 2, 200), decision("rejected", 2, 200), decision("promoted", 3, 400)],
    )
    shadow = Outputs(candidates=[candidate(2, 100)], decisions=[decision("promoted", 2, 200)])
    c = compare(prod, shadow, [], Window())
    assert c.decisions == {"production": Decisions(2, 1, 1, 0), "shadow": Decisions(1, 1, 0, 0)}
    (pair,) = c.pairs
    assert (pair.production, pair.shadow) == (("v2 rejected", "v3 promoted"), ("v2 promoted",))
    assert not c.empty


def test_nothing_in_the_range_is_empty_and_says_where_the_alerts_are() -> None:
    c = compare(Outputs(episode("hot", "d1", 10)), Outputs(), [], Window(T0 + 60_000, T0 + 120_000))
    assert c.empty
    assert c.spans == {"production": (T0 + 10_000, T0 + 10_000), "shadow": None}


def test_audit_events_and_model_versions_decode_from_their_topics() -> None:
    event = registry.AuditEvent(kind="promoted", device_id="d1", sensor="temperature", version=2, event_ts=T0)
    assert decode_decision(registry.encode_event(event)) == Decision(
        "promoted", "d1", "temperature", 2, event_ts=T0
    )
    assert decode_decision(b"{not json") is None and decode_candidate(b"[]") is None
    raw = msgspec.json.encode(
        {"device_id": "d1", "sensor": "temperature", "version": 2, "created_at": T0, "x": 1}
    )
    assert decode_candidate(raw) == Candidate("d1", "temperature", 2, "", T0)


def test_the_table_and_the_json_show_every_section() -> None:
    prod = Outputs(
        [*episode("hot", "d1", 10, 60), *episode("stuck", "d2", 10)], decisions=[decision("promoted", 2, 99)]
    )
    shadow = Outputs(
        [*episode("hot", "d1", 10, 60), *episode("rate", "d3", 30)], decisions=[decision("promoted", 2, 99)]
    )
    c = compare(prod, shadow, [], Window())
    args = argparse.Namespace(shadow_suffix=".shadow")
    text = render(c, Settings(), args)
    assert "production telemon.alerts against shadow telemon.alerts.shadow" in text
    assert "only in production (1):" in text and "stuck" in text
    assert "only in the shadow (1):" in text and "d3/temperature" in text
    assert "in both (1):" in text and "same" in text
    assert "d1/temperature: production v2 promoted; shadow v2 promoted" in text
    doc = json.loads(json.dumps(msgspec.to_builtins(c)))
    assert doc["total"]["both"] == 1 and doc["only_shadow"][0]["rule"] == "rate"


def test_bad_options_are_one_line_and_exit_2_before_kafka(capsys: pytest.CaptureFixture[str]) -> None:
    cases = [
        (["compare", "--tolerance", "soon"], "--tolerance 'soon': not a duration"),
        (["compare", "--tolerance=-5s"], "--tolerance '-5s': not a duration"),
        (["compare", "--tolerance", "inf"], "--tolerance 'inf': not a duration"),
        (["compare", "--from", "2026-01-02", "--to", "2026-01-01"], "is not before --to"),
        (["compare", "--from", "tomorrow"], "--from 'tomorrow': not a time"),
        (["compare", "--shadow-suffix", ""], "--shadow-suffix: empty"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, err


def test_compare_help_names_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["compare", "--help"])
    out = capsys.readouterr().out
    for option in ("--from TIME", "--to TIME", "--shadow-suffix SUFFIX", "--tolerance DURATION", "--json"):
        assert option in out


@pytest.mark.parametrize(
    ("text", "ms"), [("60", 60_000), ("0", 0), ("90s", 90_000), ("2m", 120_000), ("1h30m", 5_400_000)]
)
def test_tolerance_is_seconds_or_a_duration(text: str, ms: int) -> None:
    assert _tolerance_ms(text) == ms
