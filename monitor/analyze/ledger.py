"""The ledger: operators' verdicts joined to the alert episodes they judge, and what they say of
the rules, channels, cohorts and model versions that raised them.

Pure (no I/O): the live service feeds it the alerts and feedback topics, a report feeds it
records read from anywhere::

    ledger = Ledger.from_records(alerts, verdicts)   # alerts: Alert records, verdicts: Verdicts
    ledger.precision("rule")        # list[PrecisionRow], one per rule, sorted by key
    ledger.breakdown("hour")        # list[FalseAlarms], where the false alarms come from
    ledger.totals()                 # one PrecisionRow over every alert (key "all")

An alert is an episode that fired: its ``firing`` record, or its ``resolved`` one when the firing
record was not read (older than the reading started); ``pending`` records and the records of
rules without the ``alert`` action are ignored. The ledger keeps, per episode, its rule, pair,
model version, cohort labels (``label=value``), start and integrity state (the integrity checks
with a non-zero count in the firing record's signals, joined by ``+``, or ``clean``).

Verdicts join by ``alert_id`` in whatever order they come: a verdict read before its alert waits
(at most ``max_alerts`` of them, the oldest dropped first) and joins when the alert arrives, hours
later or never. Of two verdicts on one alert, the one with the larger ``ts`` counts (on a tie, the
later read), so an operator corrects a verdict by sending another. At most ``max_alerts`` alerts
are kept; past that the oldest read goes, with its verdict.

Precision is TP / (TP + FP); ``expected_maintenance`` verdicts are counted apart, in neither
(the alert was right about the data, and nobody needed it). Without a TP or FP it is ``None``.
The detection delay of a key is the median, over its true positives whose verdict gives the
fault's ``onset``, of the alert's firing time minus the onset (seconds; ``None`` without any).

The dimensions (``by``) and their keys:

=============  ==========================================================================
rule           the rule's name
sensor         the channel (``*`` for the storm summary)
cohort         ``label=value``, one row per cohort label of the alert's pair (an alert
               counts in each of its cohorts)
version        ``v<N>``: the model version serving the pair, over every pair (device scope)
pair_version   ``<device>/<sensor>/v<N>``: per pair and version (device scope)
hour           ``00`` .. ``23``: the UTC hour of the episode's start
integrity      ``clean`` or the checks that counted events, e.g. ``gap+stuck_at``
=============  ==========================================================================

>>> from monitor.analyze.feedback import Verdict
>>> ledger = Ledger()
>>> ledger.add_verdict(Verdict("00000000000000aa", "false_positive", 1767229200000))  # before its alert
[]
>>> a = AlertRecord("00000000000000aa", "hot", "firing", "device", "dev-1", "temperature",
...                 1767225600000, {"gap": 1.0}, ["alert"], 2, {"site": "a"})
>>> [j.verdict.verdict for j in ledger.add_alert(a)]
['false_positive']
>>> row = ledger.precision("integrity")[0]
>>> row.key, row.alerts, row.false_positive, row.precision
('gap', 1, 1, 0.0)
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal, Protocol, get_args

import msgspec

from monitor.analyze.feedback import Verdict
from monitor.state.store import CHECKS

Dimension = Literal["rule", "sensor", "cohort", "version", "pair_version", "hour", "integrity"]
DIMENSIONS: Final[tuple[str, ...]] = get_args(Dimension)
DEFAULT_MAX_ALERTS: Final = 50_000
_HOUR_MS: Final = 3_600_000


class AlertLike(Protocol):
    """What the ledger reads of an alert record (``monitor.govern.alerts.Alert`` fits)."""

    @property
    def alert_id(self) -> str: ...
    @property
    def rule(self) -> str: ...
    @property
    def status(self) -> str: ...
    @property
    def scope(self) -> str: ...
    @property
    def device_id(self) -> str: ...
    @property
    def sensor(self) -> str: ...
    @property
    def started_at(self) -> int: ...
    @property
    def ts(self) -> int: ...
    @property
    def signals(self) -> Mapping[str, float]: ...
    @property
    def actions(self) -> Sequence[str]: ...
    @property
    def model_version(self) -> int: ...
    @property
    def cohorts(self) -> Mapping[str, str]: ...


class AlertRecord(msgspec.Struct, frozen=True):
    """An alert record as the ledger reads it from the alerts topic: the fields it needs, any
    others ignored (so records of every schema version decode); ``cohorts`` empty when absent."""

    alert_id: str
    rule: str
    status: str
    scope: str
    device_id: str
    sensor: str
    started_at: int
    signals: dict[str, float]
    actions: list[str]
    model_version: int
    cohorts: dict[str, str] = {}
    ts: int = 0


_ALERT_DECODER: Final = msgspec.json.Decoder(AlertRecord)


def decode_alert(raw: bytes) -> AlertRecord | None:
    """An alert record of the alerts topic; ``None`` for anything else."""
    try:
        return _ALERT_DECODER.decode(raw)
    except msgspec.MsgspecError:
        return None


@dataclass(frozen=True, slots=True)
class Episode:
    """What the ledger keeps of an alert episode."""

    alert_id: str
    rule: str
    scope: str
    device_id: str
    sensor: str
    started_at: int
    fired_at: int  # event time of its firing record (of its start when that was not read)
    model_version: int
    cohorts: tuple[str, ...]  # label=value, sorted
    integrity: str  # "clean" or the checks that counted events, sorted, joined by "+"


@dataclass(frozen=True, slots=True)
class Judged:
    """An alert episode and the verdict that counts for it."""

    episode: Episode
    verdict: Verdict


@dataclass(frozen=True, slots=True)
class PrecisionRow:
    key: str
    alerts: int
    judged: int  # alerts with a verdict
    true_positive: int
    false_positive: int
    maintenance: int
    precision: float | None  # TP / (TP + FP); None without either
    delay_s: float | None = None  # median detection delay of the TPs that give their fault's onset


@dataclass(frozen=True, slots=True)
class FalseAlarms:
    key: str
    false_positive: int
    share: float  # of every false alarm in the ledger
    judged: int  # alerts of the key with a verdict


def episode_of(alert: AlertLike) -> Episode:
    cohorts = {f"{k}={v}" for k, v in alert.cohorts.items()}
    if alert.scope == "cohort" and "=" in alert.device_id:  # the cohort the episode is about
        cohorts.add(alert.device_id)
    flagged = sorted(c for c in CHECKS if alert.signals.get(c, 0.0))
    return Episode(
        alert.alert_id,
        alert.rule,
        alert.scope,
        alert.device_id,
        alert.sensor,
        alert.started_at,
        alert.ts if alert.status == "firing" and alert.ts else alert.started_at,
        alert.model_version,
        tuple(sorted(cohorts)),
        "+".join(flagged) or "clean",
    )


def keys_of(e: Episode, by: Dimension) -> tuple[str, ...]:
    """The keys of an episode in one dimension (none: the dimension does not apply to it)."""
    versioned = e.scope == "device" and e.model_version >= 1
    match by:
        case "rule":
            return (e.rule,)
        case "sensor":
            return (e.sensor,)
        case "cohort":
            return e.cohorts
        case "version":
            return (f"v{e.model_version}",) if versioned else ()
        case "pair_version":
            return (f"{e.device_id}/{e.sensor}/v{e.model_version}",) if versioned else ()
        case "hour":
            return (f"{e.started_at // _HOUR_MS % 24:02d}",)
        case "integrity":
            return (e.integrity,)
    raise ValueError(f"unknown dimension {by!r}; known: {', '.join(DIMENSIONS)}")


class Ledger:
    """Alert episodes and verdicts, joined by ``alert_id`` (see the module's docstring)."""

    def __init__(self, max_alerts: int = DEFAULT_MAX_ALERTS) -> None:
        if max_alerts < 1:
            raise ValueError(f"max_alerts must be at least 1, got {max_alerts}")
        self.max_alerts = max_alerts
        self._episodes: dict[str, Episode] = {}  # in the order read: the first is evicted first
        self._verdicts: dict[str, Verdict] = {}  # of episodes held
        self._waiting: dict[str, Verdict] = {}  # verdicts whose alert has not been read

    @classmethod
    def from_records(
        cls, alerts: Iterable[AlertLike], verdicts: Iterable[Verdict], max_alerts: int = DEFAULT_MAX_ALERTS
    ) -> Ledger:
        ledger = cls(max_alerts)
        for a in alerts:
            ledger.add_alert(a)
        for v in verdicts:
            ledger.add_verdict(v)
        return ledger

    @property
    def alerts(self) -> int:
        return len(self._episodes)

    @property
    def waiting(self) -> int:
        """Verdicts held until their alert is read."""
        return len(self._waiting)

    def add_alert(self, alert: AlertLike) -> list[Judged]:
        """Read an alert record; returns the verdict it joined, if one was waiting for it."""
        if alert.status == "pending" or "alert" not in alert.actions or alert.alert_id in self._episodes:
            return []
        episode = episode_of(alert)
        self._episodes[alert.alert_id] = episode
        if len(self._episodes) > self.max_alerts:
            oldest = next(iter(self._episodes))
            del self._episodes[oldest]
            self._verdicts.pop(oldest, None)
        verdict = self._waiting.pop(alert.alert_id, None)
        if verdict is None:
            return []
        self._verdicts[alert.alert_id] = verdict
        return [Judged(episode, verdict)]

    def add_verdict(self, verdict: Verdict) -> list[Judged]:
        """Read a verdict; returns it joined to its alert, if the alert is held and the verdict
        counts (it is not older than the one that counts already)."""
        aid = verdict.alert_id
        episode = self._episodes.get(aid)
        held = self._verdicts if episode is not None else self._waiting
        earlier = held.get(aid)
        if earlier is not None and earlier.ts > verdict.ts:
            return []
        held[aid] = verdict
        if episode is not None:
            return [Judged(episode, verdict)]
        if len(self._waiting) > self.max_alerts:
            del self._waiting[next(iter(self._waiting))]
        return []

    def judged(self) -> Iterator[Judged]:
        """Every held alert with a verdict, in the order the alerts were read."""
        for aid, episode in self._episodes.items():
            verdict = self._verdicts.get(aid)
            if verdict is not None:
                yield Judged(episode, verdict)

    def verdict(self, alert_id: str) -> Verdict | None:
        """The verdict that counts for an alert (held or waiting)."""
        return self._verdicts.get(alert_id) or self._waiting.get(alert_id)

    def precision(self, by: Dimension) -> list[PrecisionRow]:
        """Counts, precision and detection delay per key of ``by``, sorted by key."""
        tallies: dict[str, list[int]] = {}
        delays: dict[str, list[float]] = {}
        for aid, episode in self._episodes.items():
            verdict = self._verdicts.get(aid)
            for key in keys_of(episode, by):
                _count(tallies.setdefault(key, [0, 0, 0, 0]), verdict)
                if verdict is not None and verdict.verdict == "true_positive" and verdict.onset:
                    delays.setdefault(key, []).append((episode.fired_at - verdict.onset) / 1000)
        return [_row(key, t, delays.get(key)) for key, t in sorted(tallies.items())]

    def totals(self) -> PrecisionRow:
        """Counts and precision over every held alert (key ``all``)."""
        tally = [0, 0, 0, 0]
        for aid in self._episodes:
            _count(tally, self._verdicts.get(aid))
        return _row("all", tally)

    def breakdown(self, by: Dimension) -> list[FalseAlarms]:
        """The false alarms per key of ``by`` (keys with at least one), most first."""
        rows = [r for r in self.precision(by) if r.false_positive]
        everything = self.totals().false_positive
        out = [FalseAlarms(r.key, r.false_positive, r.false_positive / everything, r.judged) for r in rows]
        return sorted(out, key=lambda f: (-f.false_positive, f.key))


_SLOT: Final = {"true_positive": 1, "false_positive": 2, "expected_maintenance": 3}


def _count(tally: list[int], verdict: Verdict | None) -> None:
    """``tally``: alerts, TP, FP, maintenance."""
    tally[0] += 1
    if verdict is not None:
        tally[_SLOT[verdict.verdict]] += 1


def _row(key: str, t: list[int], delays: list[float] | None = None) -> PrecisionRow:
    alerts, tp, fp, maintenance = t
    precision = tp / (tp + fp) if tp + fp else None
    delay = statistics.median(delays) if delays else None
    return PrecisionRow(key, alerts, tp + fp + maintenance, tp, fp, maintenance, precision, delay)
