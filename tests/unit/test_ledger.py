"""The ledger joins verdicts to alerts in any order and gives the precision tables an operator
reads; every expected table here is computed by hand."""

from __future__ import annotations

import json

import pytest

from monitor.analyze.feedback import Verdict, VerdictKind
from monitor.analyze.ledger import (
    AlertRecord,
    FalseAlarms,
    Ledger,
    PrecisionRow,
    decode_alert,
)
from monitor.govern.alerts import Alert, encode

H = 3_600_000
T0 = 1_767_225_600_000  # 2026-01-01 00:00 UTC
CLEAN = {"readings": 30.0, "stuck_at": 0.0, "gap": 0.0}


def alert(
    n: int,
    rule: str = "r1",
    device: str = "dev-1",
    sensor: str = "temperature",
    version: int = 1,
    cohorts: dict[str, str] | None = None,
    hour: int = 0,
    signals: dict[str, float] | None = None,
    status: str = "firing",
    scope: str = "device",
    actions: tuple[str, ...] = ("alert",),
) -> AlertRecord:
    return AlertRecord(
        f"{n:016x}",
        rule,
        status,
        scope,
        device,
        sensor,
        T0 + hour * H + n,
        dict(signals or CLEAN),
        list(actions),
        version,
        dict(cohorts or {}),
        T0 + hour * H + n + 30_000,  # it fires 30 s after it started
    )


def verdict(n: int, kind: VerdictKind, ts: int = T0 + 10 * H) -> Verdict:
    return Verdict(f"{n:016x}", kind, ts)


ALERTS = [
    alert(1, "r1", "dev-1", "temperature", 1, {"site": "a"}, hour=0),
    alert(2, "r1", "dev-2", "temperature", 2, {"site": "b"}, hour=1, signals={"gap": 2.0}),
    alert(3, "r2", "dev-1", "humidity", 1, {"site": "a"}, hour=1, signals={"gap": 1.0, "stuck_at": 1.0}),
    alert(4, "r2", "dev-2", "humidity", 1, {"site": "b"}, hour=2),
    alert(5, "r1", "dev-3", "temperature", 2, hour=2),  # no verdict
    alert(6, "r3", "*", "temperature", 0, scope="fleet", hour=2),
]
VERDICTS = [
    verdict(1, "true_positive"),
    verdict(2, "false_positive"),
    verdict(3, "false_positive"),
    verdict(4, "expected_maintenance"),
    verdict(6, "true_positive"),
]


@pytest.fixture
def ledger() -> Ledger:
    return Ledger.from_records(ALERTS, VERDICTS)


def test_precision_by_rule(ledger: Ledger) -> None:
    # key, alerts, judged (with a verdict), TP, FP, maintenance, precision = TP / (TP + FP)
    assert ledger.precision("rule") == [
        PrecisionRow("r1", 3, 2, 1, 1, 0, 0.5),
        PrecisionRow("r2", 2, 2, 0, 1, 1, 0.0),
        PrecisionRow("r3", 1, 1, 1, 0, 0, 1.0),
    ]


def test_precision_by_sensor(ledger: Ledger) -> None:
    assert ledger.precision("sensor") == [
        PrecisionRow("humidity", 2, 2, 0, 1, 1, 0.0),
        PrecisionRow("temperature", 4, 3, 2, 1, 0, 2 / 3),
    ]


def test_precision_by_cohort_counts_an_alert_in_each_of_its_cohorts(ledger: Ledger) -> None:
    assert ledger.precision("cohort") == [
        PrecisionRow("site=a", 2, 2, 1, 1, 0, 0.5),
        PrecisionRow("site=b", 2, 2, 0, 1, 1, 0.0),
    ]


def test_precision_by_model_version_per_pair_and_over_the_pairs(ledger: Ledger) -> None:
    assert ledger.precision("pair_version") == [
        PrecisionRow("dev-1/humidity/v1", 1, 1, 0, 1, 0, 0.0),
        PrecisionRow("dev-1/temperature/v1", 1, 1, 1, 0, 0, 1.0),
        PrecisionRow("dev-2/humidity/v1", 1, 1, 0, 0, 1, None),  # maintenance only: no precision
        PrecisionRow("dev-2/temperature/v2", 1, 1, 0, 1, 0, 0.0),
        PrecisionRow("dev-3/temperature/v2", 1, 0, 0, 0, 0, None),
    ]
    assert ledger.precision("version") == [  # the fleet alert has no version
        PrecisionRow("v1", 3, 3, 1, 1, 1, 0.5),
        PrecisionRow("v2", 2, 1, 0, 1, 0, 0.0),
    ]


def test_totals(ledger: Ledger) -> None:
    assert ledger.totals() == PrecisionRow("all", 6, 5, 2, 2, 1, 0.5)


def test_false_alarms_broken_down_by_hour_integrity_and_rule(ledger: Ledger) -> None:
    assert ledger.breakdown("hour") == [FalseAlarms("01", false_positive=2, share=1.0, judged=2)]
    assert ledger.breakdown("integrity") == [
        FalseAlarms("gap", 1, 0.5, 1),
        FalseAlarms("gap+stuck_at", 1, 0.5, 1),
    ]
    assert ledger.precision("integrity")[0] == PrecisionRow("clean", 4, 3, 2, 0, 1, 1.0)
    assert ledger.breakdown("rule") == [FalseAlarms("r1", 1, 0.5, 2), FalseAlarms("r2", 1, 0.5, 2)]


def test_a_verdict_before_its_alert_waits_and_joins() -> None:
    ledger = Ledger()
    assert ledger.add_verdict(verdict(1, "false_positive")) == []
    assert ledger.waiting == 1 and ledger.totals().judged == 0
    joined = ledger.add_alert(ALERTS[0])
    assert [(j.episode.alert_id, j.verdict.verdict) for j in joined] == [(f"{1:016x}", "false_positive")]
    assert ledger.waiting == 0
    assert ledger.totals() == PrecisionRow("all", 1, 1, 0, 1, 0, 0.0)


def test_a_verdict_hours_after_its_alert_joins_at_once() -> None:
    ledger = Ledger.from_records(ALERTS[:1], [])
    assert ledger.totals().precision is None
    [joined] = ledger.add_verdict(verdict(1, "true_positive", ts=T0 + 30 * H))
    assert joined.episode.rule == "r1"
    assert ledger.totals().precision == 1.0


def test_the_latest_verdict_counts_whatever_the_order_read() -> None:
    ledger = Ledger.from_records(ALERTS[:1], [verdict(1, "true_positive", ts=T0 + H)])
    assert len(ledger.add_verdict(verdict(1, "false_positive", ts=T0 + 2 * H))) == 1  # corrected
    assert ledger.add_verdict(verdict(1, "true_positive", ts=T0 + H)) == []  # the old one again
    assert ledger.totals().false_positive == 1 and ledger.totals().true_positive == 0
    waiting = Ledger()  # the same, before the alert
    waiting.add_verdict(verdict(1, "false_positive", ts=T0 + 2 * H))
    waiting.add_verdict(verdict(1, "true_positive", ts=T0 + H))
    waiting.add_alert(ALERTS[0])
    assert waiting.totals().false_positive == 1


def test_memory_is_bounded_the_oldest_alert_going_with_its_verdict() -> None:
    ledger = Ledger(max_alerts=2)
    for a, v in zip(ALERTS[:3], VERDICTS[:3], strict=True):
        ledger.add_alert(a)
        ledger.add_verdict(v)
    assert ledger.alerts == 2
    assert ledger.verdict(f"{1:016x}") is None
    assert ledger.totals() == PrecisionRow("all", 2, 2, 0, 2, 0, 0.0)
    for n in range(10, 15):  # verdicts on alerts never read
        ledger.add_verdict(verdict(n, "true_positive"))
    assert ledger.waiting == 2
    assert ledger.verdict(f"{14:016x}") is not None and ledger.verdict(f"{10:016x}") is None


def test_pending_records_and_silent_rules_are_not_alerts() -> None:
    ledger = Ledger()
    ledger.add_alert(alert(1, status="pending"))
    ledger.add_alert(alert(2, actions=("retrain",)))
    assert ledger.alerts == 0


def test_an_episode_is_kept_once_from_its_firing_record_or_else_its_resolved_one() -> None:
    ledger = Ledger()
    ledger.add_alert(alert(1, signals={"gap": 1.0}))
    ledger.add_alert(alert(1, status="resolved"))  # clean at resolution: the firing record counts
    ledger.add_alert(alert(1, signals={"gap": 1.0}))  # delivered twice
    ledger.add_alert(alert(2, status="resolved"))  # its firing record was not read
    assert [(r.key, r.alerts) for r in ledger.precision("integrity")] == [("clean", 1), ("gap", 1)]


def test_a_cohort_scope_alert_counts_in_its_cohort() -> None:
    ledger = Ledger.from_records([alert(1, device="firmware=1.2.0", scope="cohort", version=0)], [])
    assert [r.key for r in ledger.precision("cohort")] == ["firmware=1.2.0"]
    assert ledger.precision("version") == []


def test_unknown_dimension_is_refused(ledger: Ledger) -> None:
    with pytest.raises(ValueError, match="unknown dimension"):
        ledger.precision("device")  # type: ignore[arg-type]


def test_alert_records_of_the_alerts_topic_decode() -> None:
    published = Alert("00000000000000aa", "r1", "firing", "warning", "device", "dev-1", "temperature",
                      T0, T0, {"gap": 1.0}, ["alert"], 3)  # fmt: skip
    record = decode_alert(encode(published))
    assert record is not None and record.cohorts == {} and record.model_version == 3
    newer = json.loads(encode(published)) | {"cohorts": {"site": "a"}, "explanation": {"top": "x"}}
    assert decode_alert(json.dumps(newer).encode()) == AlertRecord(
        "00000000000000aa", "r1", "firing", "device", "dev-1", "temperature", T0, {"gap": 1.0},
        ["alert"], 3, {"site": "a"}, T0,
    )  # fmt: skip
    assert decode_alert(b"not json") is None


def test_the_detection_delay_is_the_median_of_the_true_positives_that_give_an_onset() -> None:
    alerts = [alert(n, cohorts={"site": "a" if n < 4 else "b"}) for n in range(1, 6)]
    fired = {a.alert_id: a.ts for a in alerts}
    onsets = {1: 90_000, 2: 30_000, 3: 60_000, 4: 10_000}  # ms before the firing
    verdicts = [
        Verdict(f"{n:016x}", "true_positive", T0 + 10 * H, onset=fired[f"{n:016x}"] - ms)
        for n, ms in onsets.items()
    ]
    verdicts.append(Verdict(f"{5:016x}", "true_positive", T0 + 10 * H))  # no onset: no delay
    rows = {r.key: r for r in Ledger.from_records(alerts, verdicts).precision("cohort")}
    assert rows["site=a"].delay_s == 60.0 and rows["site=b"].delay_s == 10.0
    fps = Ledger.from_records(alerts[:1], [Verdict(f"{1:016x}", "false_positive", T0 + 10 * H, onset=T0)])
    assert fps.precision("rule")[0].delay_s is None  # a false positive has no delay
