"""Two runs side by side: production's and a shadow run's alerts, operators' verdicts on them, and
their retrain decisions, over a range of event time (``telemon compare``).

Pure (no I/O): the command line reads the topics and hands the decoded records to
:func:`compare`.

**Episodes.** An alert is an episode (one ``alert_id``; duplicate records count once) of a rule
with the ``alert`` action that fired: it fired at its firing record's ``ts`` (at its start when
only its resolved record was read) and ended at its resolved record's (open: no end). ``pending``
records are not alerts.

**Matching.** A production episode and a shadow episode of the same rule, device and sensor
match when their spans, from ``started_at`` to the end, overlap once each is widened by the
tolerance on both sides; each matches at most one, the closest firing times first. Two runs that
raise the same episode give it the same ``alert_id``, so those always match. The *latency* of a
match is the shadow's firing time minus production's (negative: the shadow fired first).

**Range.** A match counts when either side fired in ``[since, until)``, an unmatched episode when
it fired there, a decision when its event time is there.

**Precision** is TP / (TP + FP) over the judged alerts (``expected_maintenance`` in neither, as
in :mod:`monitor.analyze.ledger`). A verdict is on an ``alert_id``; a shadow episode is judged by
the verdict on its own id, else by the one on the production episode it matches: operators judge
production's alerts, and the shadow's match says it raised the same one. Of several verdicts on
one alert, the latest (``ts``) counts.

**Decisions** are a run's retrains: candidates (model versions a rule's retrain registered, from
the models topic) and the promotions, rejections and rollbacks of its audit topic.

>>> from monitor.analyze.ledger import AlertRecord
>>> def fired(rule, device, start):
...     return AlertRecord(f"{start:016x}", rule, "firing", "device", device, "temperature", start,
...                        {"score_mean": 0.9}, ["alert"], 1, ts=start)
>>> prod = Outputs([fired("hot", "d1", 1000), fired("stuck", "d2", 5000)])
>>> shadow = Outputs([fired("hot", "d1", 31000), fired("cold", "d3", 9000)])
>>> c = compare(prod, shadow, [], Window(tolerance_ms=60_000))
>>> [(m.production.rule, m.latency_ms) for m in c.matched]
[('hot', 30000)]
>>> [e.rule for e in c.only_production], [e.rule for e in c.only_shadow]
(['stuck'], ['cold'])
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Final

import msgspec

from monitor.analyze.feedback import Verdict
from monitor.analyze.ledger import AlertLike

DEFAULT_TOLERANCE_MS: Final = 60_000
DECISION_KINDS: Final = ("promoted", "rejected", "rolled_back")
Side = str  # "production" | "shadow"


class Decision(msgspec.Struct, frozen=True):
    """An audit event as the comparison reads it (other fields ignored)."""

    kind: str
    device_id: str
    sensor: str
    version: int = 0
    previous: int = 0
    rule: str = ""
    event_ts: int = 0
    id: str = ""


class Candidate(msgspec.Struct, frozen=True):
    """A model version of the models topic as the comparison reads it."""

    device_id: str
    sensor: str
    version: int
    trigger_rule: str = ""
    created_at: int = 0


_DECISION: Final = msgspec.json.Decoder(Decision)
_CANDIDATE: Final = msgspec.json.Decoder(Candidate)


def decode_decision(raw: bytes) -> Decision | None:
    try:
        return _DECISION.decode(raw)
    except msgspec.MsgspecError:
        return None


def decode_candidate(raw: bytes) -> Candidate | None:
    try:
        return _CANDIDATE.decode(raw)
    except msgspec.MsgspecError:
        return None


@dataclass(frozen=True)
class Outputs:
    """What one run published: alert records, model versions, audit events."""

    alerts: Sequence[AlertLike] = ()
    candidates: Sequence[Candidate] = ()
    decisions: Sequence[Decision] = ()


@dataclass(frozen=True)
class Window:
    """The range of event time (epoch ms; ``None``: open) and the matching tolerance."""

    since: int | None = None
    until: int | None = None
    tolerance_ms: int = DEFAULT_TOLERANCE_MS

    def holds(self, ts: int) -> bool:
        return (self.since is None or ts >= self.since) and (self.until is None or ts < self.until)


@dataclass(frozen=True, slots=True)
class Episode:
    alert_id: str
    rule: str
    scope: str
    device_id: str
    sensor: str
    started_at: int
    fired_at: int
    ended_at: int | None  # None: still firing when last read
    score: float | None  # the signal score_mean at firing (None: absent)


@dataclass(frozen=True, slots=True)
class Match:
    production: Episode
    shadow: Episode
    latency_ms: int  # shadow's firing time minus production's


@dataclass(frozen=True, slots=True)
class Judgement:
    alerts: int
    judged: int
    true_positive: int
    false_positive: int
    maintenance: int
    precision: float | None  # TP / (TP + FP); None without either


@dataclass(frozen=True, slots=True)
class RuleRow:
    rule: str
    production: int
    shadow: int
    both: int
    only_production: int
    only_shadow: int
    precision_production: float | None
    precision_shadow: float | None
    latency_s: float | None  # median over the matches
    score_production: float | None  # median score_mean at firing
    score_shadow: float | None


@dataclass(frozen=True, slots=True)
class Decisions:
    candidates: int
    promoted: int
    rejected: int
    rolled_back: int


@dataclass(frozen=True, slots=True)
class PairDecisions:
    device_id: str
    sensor: str
    production: tuple[str, ...]  # "v2 promoted", in event order
    shadow: tuple[str, ...]


@dataclass(frozen=True)
class Comparison:
    window: Window
    rules: list[RuleRow]
    total: RuleRow
    matched: list[Match]
    only_production: list[Episode]
    only_shadow: list[Episode]
    precision: dict[Side, Judgement]
    decisions: dict[Side, Decisions]
    pairs: list[PairDecisions]
    spans: dict[Side, tuple[int, int] | None] = field(default_factory=dict)  # every alert's firing times

    @property
    def empty(self) -> bool:
        """Nothing in the range on either side: no alert, no decision."""
        nothing = Decisions(0, 0, 0, 0)
        return self.total.production == self.total.shadow == 0 and all(
            d == nothing for d in self.decisions.values()
        )


# --- episodes and matching -------------------------------------------------------------------


def episodes(records: Iterable[AlertLike]) -> list[Episode]:
    """The alert episodes of a run's records, by firing time."""
    by_id: defaultdict[str, list[AlertLike]] = defaultdict(list)
    for r in records:
        if "alert" in r.actions and r.status in ("firing", "resolved"):
            by_id[r.alert_id].append(r)
    return sorted((_episode(rs) for rs in by_id.values()), key=lambda e: (e.fired_at, e.rule, e.device_id))


def _episode(records: list[AlertLike]) -> Episode:
    firing = [r for r in records if r.status == "firing"]
    ends = [r.ts for r in records if r.status == "resolved"]
    first = min(firing, key=lambda r: r.ts) if firing else records[0]
    return Episode(
        first.alert_id,
        first.rule,
        first.scope,
        first.device_id,
        first.sensor,
        first.started_at,
        first.ts if firing and first.ts else first.started_at,
        max(ends) if ends else None,
        first.signals.get("score_mean") if firing else None,
    )


def _overlap(a: Episode, b: Episode, tolerance_ms: int) -> bool:
    a_end = a.ended_at if a.ended_at is not None else 2**62
    b_end = b.ended_at if b.ended_at is not None else 2**62
    return a.started_at - tolerance_ms <= b_end and b.started_at - tolerance_ms <= a_end


def match(
    production: Sequence[Episode], shadow: Sequence[Episode], tolerance_ms: int
) -> tuple[list[Match], list[Episode], list[Episode]]:
    """Matches (closest firing times first), then production's and the shadow's unmatched."""
    by_key: defaultdict[tuple[str, str, str], list[int]] = defaultdict(list)
    for j, s in enumerate(shadow):
        by_key[(s.rule, s.device_id, s.sensor)].append(j)
    options = sorted(
        (abs(p.fired_at - shadow[j].fired_at), i, j)
        for i, p in enumerate(production)
        for j in by_key[(p.rule, p.device_id, p.sensor)]
        if p.alert_id == shadow[j].alert_id or _overlap(p, shadow[j], tolerance_ms)
    )
    taken_p: set[int] = set()
    taken_s: set[int] = set()
    matches = []
    for _, i, j in options:
        if i not in taken_p and j not in taken_s:
            taken_p.add(i)
            taken_s.add(j)
            matches.append(Match(production[i], shadow[j], shadow[j].fired_at - production[i].fired_at))
    only_p = [e for i, e in enumerate(production) if i not in taken_p]
    only_s = [e for j, e in enumerate(shadow) if j not in taken_s]
    return sorted(matches, key=lambda m: m.production.fired_at), only_p, only_s


# --- verdicts --------------------------------------------------------------------------------


def latest_verdicts(verdicts: Iterable[Verdict]) -> dict[str, Verdict]:
    """The verdict that counts per alert id: the latest given (on a tie, the later read)."""
    out: dict[str, Verdict] = {}
    for v in verdicts:
        if v.alert_id not in out or v.ts >= out[v.alert_id].ts:
            out[v.alert_id] = v
    return out


def judge(alerts: Sequence[Episode], verdict_of: Callable[[Episode], Verdict | None]) -> Judgement:
    kinds = [v.verdict for e in alerts if (v := verdict_of(e)) is not None]
    tp, fp = kinds.count("true_positive"), kinds.count("false_positive")
    return Judgement(
        len(alerts),
        len(kinds),
        tp,
        fp,
        kinds.count("expected_maintenance"),
        tp / (tp + fp) if tp + fp else None,
    )


# --- the comparison --------------------------------------------------------------------------


def compare(production: Outputs, shadow: Outputs, verdicts: Iterable[Verdict], window: Window) -> Comparison:
    """How the shadow's alerts, verdicts and retrain decisions differ from production's over
    ``window``."""
    p_all, s_all = episodes(production.alerts), episodes(shadow.alerts)
    matched, only_p, only_s = match(p_all, s_all, window.tolerance_ms)
    matched = [m for m in matched if window.holds(m.production.fired_at) or window.holds(m.shadow.fired_at)]
    only_p = [e for e in only_p if window.holds(e.fired_at)]
    only_s = [e for e in only_s if window.holds(e.fired_at)]
    known = latest_verdicts(verdicts)
    partner = {m.shadow.alert_id: m.production.alert_id for m in matched}

    def of_production(e: Episode) -> Verdict | None:
        return known.get(e.alert_id)

    def of_shadow(e: Episode) -> Verdict | None:
        return known.get(e.alert_id) or known.get(partner.get(e.alert_id, ""))

    p_eps = [m.production for m in matched] + only_p
    s_eps = [m.shadow for m in matched] + only_s
    rules = sorted({e.rule for e in p_eps + s_eps})
    rows = [_row(r, matched, only_p, only_s, of_production, of_shadow) for r in rules]
    return Comparison(
        window=window,
        rules=rows,
        total=_row(None, matched, only_p, only_s, of_production, of_shadow),
        matched=matched,
        only_production=only_p,
        only_shadow=only_s,
        precision={"production": judge(p_eps, of_production), "shadow": judge(s_eps, of_shadow)},
        decisions={"production": decisions(production, window), "shadow": decisions(shadow, window)},
        pairs=pair_decisions(production, shadow, window),
        spans={"production": _span(p_all), "shadow": _span(s_all)},
    )


def _row(
    rule: str | None,
    matched: Sequence[Match],
    only_p: Sequence[Episode],
    only_s: Sequence[Episode],
    of_production: Callable[[Episode], Verdict | None],
    of_shadow: Callable[[Episode], Verdict | None],
) -> RuleRow:
    """The counts of one rule (``None``: every rule)."""
    m = [x for x in matched if rule is None or x.production.rule == rule]
    op = [e for e in only_p if rule is None or e.rule == rule]
    os_ = [e for e in only_s if rule is None or e.rule == rule]
    p_eps, s_eps = [x.production for x in m] + op, [x.shadow for x in m] + os_
    return RuleRow(
        rule=rule or "all",
        production=len(p_eps),
        shadow=len(s_eps),
        both=len(m),
        only_production=len(op),
        only_shadow=len(os_),
        precision_production=judge(p_eps, of_production).precision,
        precision_shadow=judge(s_eps, of_shadow).precision,
        latency_s=_median([x.latency_ms / 1000 for x in m]),
        score_production=_median([e.score for e in p_eps if e.score is not None]),
        score_shadow=_median([e.score for e in s_eps if e.score is not None]),
    )


def _median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def _span(eps: Sequence[Episode]) -> tuple[int, int] | None:
    return (min(e.fired_at for e in eps), max(e.fired_at for e in eps)) if eps else None


# --- retrain decisions -----------------------------------------------------------------------


def _decisions_in(run: Outputs, window: Window) -> list[Decision]:
    """The run's promotions, rejections and rollbacks in the window, each once, in event order."""
    seen: dict[tuple[str, str, str, int, int], Decision] = {}
    for d in run.decisions:
        if d.kind in DECISION_KINDS and d.event_ts and window.holds(d.event_ts):
            seen.setdefault((d.kind, d.device_id, d.sensor, d.version, d.event_ts), d)
    return sorted(seen.values(), key=lambda d: (d.event_ts, d.device_id, d.sensor, d.version))


def _candidates_in(run: Outputs, window: Window) -> list[Candidate]:
    seen = {
        (c.device_id, c.sensor, c.version): c
        for c in run.candidates
        if c.trigger_rule and window.holds(c.created_at)
    }
    return sorted(seen.values(), key=lambda c: (c.created_at, c.device_id, c.sensor, c.version))


def decisions(run: Outputs, window: Window) -> Decisions:
    kinds = [d.kind for d in _decisions_in(run, window)]
    return Decisions(
        len(_candidates_in(run, window)),
        kinds.count("promoted"),
        kinds.count("rejected"),
        kinds.count("rolled_back"),
    )


def pair_decisions(production: Outputs, shadow: Outputs, window: Window) -> list[PairDecisions]:
    """Per (device, sensor) with a decision on either side: each side's, in event order."""
    sides: defaultdict[tuple[str, str], dict[Side, list[str]]] = defaultdict(
        lambda: {"production": [], "shadow": []}
    )
    for side, run in (("production", production), ("shadow", shadow)):
        for d in _decisions_in(run, window):
            sides[(d.device_id, d.sensor)][side].append(f"v{d.version} {d.kind.replace('_', ' ')}")
    return [
        PairDecisions(device, sensor, tuple(s["production"]), tuple(s["shadow"]))
        for (device, sensor), s in sorted(sides.items())
    ]
