"""Governance rules: declarative conditions over signals, and the engine that turns them into alerts.

Rules come from YAML (``configs/rules.yaml``), validated by pydantic; user-supplied code is never
evaluated. A rule is evaluated for every *scope key* it applies to, each time the monitor
evaluates that key:

- ``scope: device``: one (device, sensor) pair, right after every ``drift.check_every``-th applied
  reading of the pair;
- ``scope: fleet``: one sensor kind across all devices, after every ``drift.fleet_check_every``-th
  score;
- ``scope: cohort`` with ``cohort: <label>``: one sensor kind across the devices that share a value
  of that device label (``firmware``, ``site``...); the evaluation's ``device_id`` is
  ``"<label>=<value>"``.

``sensors: [...]`` limits a rule to some sensor kinds. Lifecycle of an episode of one (rule, scope
key): when the condition first holds the episode is *pending*; it *fires* once the condition has
held for ``for`` consecutive evaluations (an int) or for a span of event time (``"30s"``, ``"5m"``,
``"1h"``); a pending episode whose condition stops holding is dropped silently. A firing episode
*resolves* when ``clear`` holds (hysteresis) or, without ``clear``, when ``when`` stops holding.
After a resolution the rule emits nothing for that key for ``cooldown_s`` seconds of event time.
Every transition carries the event time of the episode's first holding evaluation, so the alert id
``hash(rule, scope key, start)`` is the same for all transitions of an episode and across restarts.

>>> rules = RuleSet.model_validate({"rules": [{"name": "hot", "scope": "device",
...     "when": {"signal": "anomaly_rate", "op": ">", "value": 0.5}, "for": 2}]})
>>> engine = RuleEngine(rules)
>>> def at(ts: int, rate: float) -> list[tuple[str, int]]:
...     ev = Evaluation("device", "d1", "temperature", {"anomaly_rate": rate}, ts)
...     return [(t.status, t.started_at) for t in engine.evaluate([ev])]
>>> at(1000, 0.9), at(2000, 0.9), at(3000, 0.9), at(4000, 0.1)
([('pending', 1000)], [('firing', 1000)], [], [('resolved', 1000)])
"""

from __future__ import annotations

import difflib
import operator
import re
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any, Literal, Union, cast

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails, InitErrorDetails, PydanticCustomError

from monitor import errors
from monitor.common import yamlfile
from monitor.errors import RulesError
from monitor.schema import SENSOR_NAMES

Scope = Literal["device", "fleet", "cohort"]
Action = Literal["alert", "retrain", "quarantine", "rollback"]
Status = Literal["pending", "firing", "resolved"]

#: Signals every evaluation may carry. KS/PSI values are present only once the reference is
#: frozen and the current window is full; a condition on an absent signal is false.
DRIFT_SIGNALS = frozenset(
    {
        "readings",
        "anomalies",
        "anomaly_rate",
        "score_mean",
        "adwin_detections",
        "adwin_drift",
        "ks_stat",
        "ks_pvalue",
        "ks_drift",
        "psi",
        "psi_drift",
    }
)
INTEGRITY_SIGNALS = frozenset({"stuck_at", "gap", "duplicate", "out_of_order", "clock_skew"})
SIGNALS: dict[str, frozenset[str]] = {
    "device": DRIFT_SIGNALS | INTEGRITY_SIGNALS,
    "fleet": DRIFT_SIGNALS | {"lag"},  # lag: the consumer's lag, in messages
    "cohort": DRIFT_SIGNALS,
}
#: Actions on one device's model or stream, with why they need a device-scope rule.
DEVICE_ACTIONS: dict[str, str] = {
    "retrain": "one model per device and sensor",
    "quarantine": "it stops learning from one device",
    "rollback": "it restores one device's previous model version",
}
_OPS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
}
_LABEL = r"^[a-z][a-z0-9_]{0,63}$"

Loc = tuple[str | int, ...]
#: A problem found by a validator: where (relative to the value it validates) and what.
Problem = tuple[Loc, str]


# --- conditions -----------------------------------------------------------------------------------


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class _Node(_Model):
    def holds(self, signals: Mapping[str, float]) -> bool:
        raise NotImplementedError

    def signal_paths(self) -> Iterator[tuple[Loc, str]]:
        """Every signal the node reads, with its place inside the node (for error messages)."""
        raise NotImplementedError

    def signal_names(self) -> set[str]:
        return {name for _, name in self.signal_paths()}


class Condition(_Node):
    signal: str
    op: Literal["<", "<=", ">", ">=", "==", "!="]
    value: float

    def holds(self, signals: Mapping[str, float]) -> bool:
        v = signals.get(self.signal)
        return v is not None and _OPS[self.op](v, self.value)

    def signal_paths(self) -> Iterator[tuple[Loc, str]]:
        yield ("signal",), self.signal


class AllOf(_Node):
    all: list[Node] = Field(min_length=1)

    def holds(self, signals: Mapping[str, float]) -> bool:
        return all(c.holds(signals) for c in self.all)

    def signal_paths(self) -> Iterator[tuple[Loc, str]]:
        for i, child in enumerate(self.all):
            for path, name in child.signal_paths():
                yield ("all", i, *path), name


class AnyOf(_Node):
    any: list[Node] = Field(min_length=1)

    def holds(self, signals: Mapping[str, float]) -> bool:
        return any(c.holds(signals) for c in self.any)

    def signal_paths(self) -> Iterator[tuple[Loc, str]]:
        for i, child in enumerate(self.any):
            for path, name in child.signal_paths():
                yield ("any", i, *path), name


_NODE_TAGS = frozenset({"Condition", "AllOf", "AnyOf"})


def _node_kind(value: Any) -> str | None:
    """Pick the node type from its keys, so a typo is reported against one type, not all three."""
    if isinstance(value, Mapping):
        return "AllOf" if "all" in value else "AnyOf" if "any" in value else "Condition"
    return type(value).__name__ if isinstance(value, _Node) else None


Node = Annotated[
    Union[  # noqa: UP007 (a union of Annotated members)
        Annotated[Condition, Tag("Condition")],
        Annotated[AllOf, Tag("AllOf")],
        Annotated[AnyOf, Tag("AnyOf")],
    ],
    Discriminator(
        _node_kind,
        custom_error_type="condition",
        custom_error_message="expected a condition (signal, op, value) or an all/any list of them",
    ),
]


# --- rules ----------------------------------------------------------------------------------------

_DURATION = re.compile(r"([1-9][0-9]*)(s|m|h|d)")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_FOR_HELP = "expected a number of consecutive evaluations (>= 1) or a duration such as '30s', '5m', '1h'"


def _parse_for(value: object) -> object:
    """``for`` is a count of evaluations (int) or a duration of event time (a string)."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    if isinstance(value, str) and (m := _DURATION.fullmatch(value.strip())):
        return timedelta(seconds=int(m[1]) * _UNIT_S[m[2]])
    if isinstance(value, timedelta) and value > timedelta(0):
        return value
    raise ValueError(f"{_FOR_HELP}, not {value!r}")


def _known_sensor(name: str) -> str:
    if name not in SENSOR_NAMES:
        raise ValueError(f"unknown sensor {name!r}; known: {', '.join(SENSOR_NAMES)}")
    return name


For = Annotated[int | timedelta, BeforeValidator(_parse_for)]
SensorName = Annotated[str, AfterValidator(_known_sensor)]


class Rule(_Model):
    name: str = Field(pattern=_LABEL)
    description: str = ""
    scope: Scope
    cohort: str | None = Field(None, pattern=_LABEL, validate_default=True)
    sensors: list[SensorName] | None = Field(None, min_length=1)
    when: Node
    clear: Node | None = None
    for_: For = Field(1, alias="for")
    cooldown_s: float = Field(0.0, ge=0)
    severity: Literal["info", "warning", "critical"] = "warning"
    actions: list[Action] = Field(default_factory=lambda: cast("list[Action]", ["alert"]), min_length=1)

    # The checks that depend on the scope are field validators (``scope`` is validated first), so
    # their problems are reported together with every other problem of the rule.

    @field_validator("cohort")
    @classmethod
    def _cohort_fits_scope(cls, cohort: str | None, info: ValidationInfo) -> str | None:
        scope = info.data.get("scope")
        if scope == "cohort" and cohort is None:
            raise ValueError("scope cohort needs cohort: <label>, a device label such as firmware or site")
        if scope not in (None, "cohort") and cohort is not None:
            raise ValueError(f"cohort applies to scope cohort only, not {scope}")
        return cohort

    @field_validator("when", "clear")
    @classmethod
    def _known_signals(cls, node: _Node | None, info: ValidationInfo) -> _Node | None:
        scope = info.data.get("scope")
        if node is not None and scope is not None:
            _raise_if(
                (path, _unknown_signal(name, scope))
                for path, name in node.signal_paths()
                if name not in SIGNALS[scope]
            )
        return node

    @field_validator("actions")
    @classmethod
    def _actions_fit_scope(cls, actions: list[Action], info: ValidationInfo) -> list[Action]:
        scope = info.data.get("scope")
        if scope not in (None, "device"):
            _raise_if(
                ((i,), f"action {a} needs scope device ({DEVICE_ACTIONS[a]}), not {scope}")
                for i, a in enumerate(actions)
                if a in DEVICE_ACTIONS
            )
        return actions

    def applies_to(self, ev: Evaluation) -> bool:
        """Same scope, one of ``sensors`` (if given), and for cohort scope the rule's label."""
        if ev.scope != self.scope or (self.sensors is not None and ev.sensor not in self.sensors):
            return False
        return self.cohort is None or ev.device_id.partition("=")[0] == self.cohort

    def held_long_enough(self, streak: int, held_ms: int) -> bool:
        """Whether an episode that has held for ``streak`` evaluations spanning ``held_ms`` fires."""
        if isinstance(self.for_, timedelta):
            return held_ms >= self.for_ / timedelta(milliseconds=1)
        return streak >= self.for_

    def resolves(self, signals: Mapping[str, float]) -> bool:
        """Whether a firing episode ends: ``clear`` holds, or without ``clear``, ``when`` does not."""
        return self.clear.holds(signals) if self.clear is not None else not self.when.holds(signals)


def _unknown_signal(name: str, scope: str) -> str:
    every = set().union(*SIGNALS.values())
    message = f"unknown signal {name!r} for scope {scope}"
    if name in every:
        message += f" (a signal of scope {'/'.join(s for s, names in SIGNALS.items() if name in names)} only)"
    elif close := difflib.get_close_matches(name, sorted(every), n=1):
        message += f" (did you mean {close[0]!r}?)"
    return f"{message}; known: {', '.join(sorted(SIGNALS[scope]))}"


class RuleSet(_Model):
    rules: list[Rule]

    @model_validator(mode="after")
    def _unique(self) -> RuleSet:
        first: dict[str, int] = {}
        problems: list[Problem] = []
        for i, rule in enumerate(self.rules):
            j = first.setdefault(rule.name, i)
            if j != i:
                problems.append((("rules", i, "name"), f"duplicate rule name {rule.name!r} (also rules.{j})"))
        _raise_if(problems)
        return self


def _raise_if(problems: Iterable[Problem]) -> None:
    """Raise the problems as one ValidationError; pydantic keeps their locations (relative to the
    validated value) when it is raised inside a validator, so each points at its own key."""
    details = [
        InitErrorDetails(type=PydanticCustomError("rule", "{reason}", {"reason": msg}), loc=loc, input=None)
        for loc, msg in problems
    ]
    if details:
        raise ValidationError.from_exception_data("rules", details)


# --- loading, with the line of every problem ------------------------------------------------------


def load_rules(path: Path) -> RuleSet:
    """Read and validate a rules file; :class:`RulesError` lists every problem with its line."""
    try:
        doc = yamlfile.read(path)
    except FileNotFoundError as exc:
        raise RulesError(f"{path}: {exc.strerror}") from None
    except errors.YamlError as exc:
        raise RulesError(str(exc)) from None
    return _validated(doc)


def parse_rules(text: str, source: str = "<rules>") -> RuleSet:
    """Validate rules from YAML text; ``source`` names it in error messages."""
    try:
        return _validated(yamlfile.YamlDocument.parse(text, source))
    except errors.YamlError as exc:
        raise RulesError(str(exc)) from None


def _validated(doc: yamlfile.YamlDocument) -> RuleSet:
    problems = list(doc.duplicates)
    rules = None
    try:
        rules = RuleSet.model_validate(doc.data)
    except ValidationError as exc:
        for e in exc.errors():
            loc = [p for p in e["loc"] if p not in _NODE_TAGS]
            problems.append(doc.position(loc, _message(e)))
    if problems or rules is None:
        raise RulesError("\n".join(line for _, _, line in sorted(problems)))
    return rules


def _message(error: ErrorDetails) -> str:
    if error["type"] == "value_error":  # raised by a field validator: the text without pydantic's prefix
        return str(error.get("ctx", {}).get("error", error["msg"]))
    return error["msg"]


# --- the engine -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Evaluation:
    """One evaluation of a scope key: ``device_id`` is ``"*"`` for fleet scope and
    ``"<label>=<value>"`` (e.g. ``"firmware=1.2.0"``) for cohort scope."""

    scope: Scope
    device_id: str
    sensor: str
    signals: Mapping[str, float]
    ts: int  # event time, epoch ms


@dataclass(frozen=True, slots=True)
class Transition:
    """A change in an episode's lifecycle. ``started_at`` is the event time of the episode's first
    holding evaluation: the same for its pending, firing and resolved transitions."""

    rule: Rule
    evaluation: Evaluation
    status: Status
    started_at: int


@dataclass(slots=True)
class _Episode:
    streak: int = 0  # consecutive evaluations the condition has held
    started_at: int = 0  # event time of the first of them
    pending: bool = False  # the pending transition of this episode was emitted
    firing: bool = False
    quiet_until: int = 0  # cooldown: no transitions before this event time


class EpisodeState(_Model):
    """One (rule, scope key) episode as a plain record, for state snapshots."""

    rule: str
    scope: Scope
    device_id: str
    sensor: str
    streak: int = Field(ge=0)
    started_at: int
    pending: bool
    firing: bool
    quiet_until: int


Key = tuple[str, str, str]  # (rule, device_id, sensor)


@dataclass
class RuleEngine:
    """Evaluates rules and keeps the episode state of every (rule, scope key).

    Only keys with something to remember (a holding condition, a firing episode or a running
    cooldown) have state, so the state stays bounded by the keys in trouble.
    """

    rules: RuleSet
    _episodes: dict[Key, _Episode] = field(default_factory=dict)
    _by_scope: dict[str, list[Rule]] = field(init=False, default_factory=dict)
    _by_name: dict[str, Rule] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        for rule in self.rules.rules:
            self._by_scope.setdefault(rule.scope, []).append(rule)
            self._by_name[rule.name] = rule

    def rule(self, name: str) -> Rule | None:
        return self._by_name.get(name)

    def evaluate(self, evaluations: Iterable[Evaluation]) -> list[Transition]:
        """Transitions in evaluation order, then rule order."""
        out: list[Transition] = []
        for ev in evaluations:
            for rule in self._by_scope.get(ev.scope, ()):
                if rule.applies_to(ev) and (t := self._step(rule, ev)) is not None:
                    out.append(t)
        return out

    def firing(self) -> int:
        return sum(e.firing for e in self._episodes.values())

    def is_firing(self, rule: str, device_id: str, sensor: str) -> bool:
        ep = self._episodes.get((rule, device_id, sensor))
        return ep is not None and ep.firing

    def firing_by_rule(self) -> dict[str, int]:
        """Episodes firing now, per rule name (every rule of the set, 0 when quiet)."""
        counts = dict.fromkeys((r.name for r in self.rules.rules), 0)
        for (rule, _device, _sensor), e in self._episodes.items():
            counts[rule] += e.firing
        return counts

    def _step(self, rule: Rule, ev: Evaluation) -> Transition | None:
        key = (rule.name, ev.device_id, ev.sensor)
        ep = self._episodes.get(key)
        if ep is not None and ep.firing:
            return self._step_firing(rule, ev, ep)
        if rule.when.holds(ev.signals):
            return self._step_holding(rule, ev, self._episodes.setdefault(key, _Episode()))
        if ep is not None:
            ep.streak, ep.pending = 0, False  # a pending episode ends silently
            if ev.ts >= ep.quiet_until:
                del self._episodes[key]  # nothing left to remember: keeps the state bounded
        return None

    def _step_firing(self, rule: Rule, ev: Evaluation, ep: _Episode) -> Transition | None:
        if not rule.resolves(ev.signals):
            return None
        ep.firing, ep.pending, ep.streak = False, False, 0
        ep.quiet_until = ev.ts + int(rule.cooldown_s * 1000)
        return Transition(rule, ev, "resolved", ep.started_at)

    def _step_holding(self, rule: Rule, ev: Evaluation, ep: _Episode) -> Transition | None:
        if ep.streak == 0:
            ep.started_at = ev.ts
        ep.streak += 1
        if ev.ts < ep.quiet_until:  # the streak counts through a cooldown, silently
            return None
        if rule.held_long_enough(ep.streak, ev.ts - ep.started_at):
            ep.firing = True
            return Transition(rule, ev, "firing", ep.started_at)
        if ep.pending:
            return None
        ep.pending = True
        return Transition(rule, ev, "pending", ep.started_at)

    # --- state snapshots --------------------------------------------------------------------------

    def export(self, device_ids: Collection[str]) -> list[dict[str, Any]]:
        """The device-scope episode states of these devices, as JSON-serialisable records (fleet
        and cohort episodes belong to no partition: they are per replica and rebuild)."""
        ids = set(device_ids)
        out = []
        for key in sorted(self._episodes):
            rule, ep = self._by_name[key[0]], self._episodes[key]
            if rule.scope == "device" and key[1] in ids:
                state = EpisodeState(
                    rule=rule.name,
                    scope=rule.scope,
                    device_id=key[1],
                    sensor=key[2],
                    streak=ep.streak,
                    started_at=ep.started_at,
                    pending=ep.pending,
                    firing=ep.firing,
                    quiet_until=ep.quiet_until,
                )
                out.append(state.model_dump())
        return out

    def restore(self, items: Iterable[Mapping[str, Any]]) -> int:
        """Put exported episode states back; returns how many were restored.

        States of rules that no longer exist, or whose scope changed, are skipped: they describe
        episodes of a rule this engine does not run. Raises ``ValidationError`` on a malformed record.
        """
        restored = 0
        for item in items:
            s = EpisodeState.model_validate(item)
            rule = self._by_name.get(s.rule)
            if rule is None or rule.scope != s.scope:
                continue
            ep = _Episode(s.streak, s.started_at, s.pending, s.firing, s.quiet_until)
            self._episodes[(s.rule, s.device_id, s.sensor)] = ep
            restored += 1
        return restored

    def forget(self, device_ids: Collection[str]) -> int:
        """Drop the device-scope episode states of these devices (e.g. their partition moved away)."""
        ids = set(device_ids)
        gone = [k for k in self._episodes if k[1] in ids and self._by_name[k[0]].scope == "device"]
        for key in gone:
            del self._episodes[key]
        return len(gone)
