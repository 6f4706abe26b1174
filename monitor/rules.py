"""Governance rules: declarative conditions over signals, with ``for``, cooldown, severity and actions.

Rules come from YAML (``configs/rules.yaml``), validated by pydantic; user-supplied code is never
evaluated. A rule is evaluated for every *scope key* it applies to, each time the monitor
evaluates that key:

- ``scope: device``: one (device, sensor) pair, right after every ``drift.check_every``-th applied
  reading of the pair;
- ``scope: fleet``: one sensor across all devices, after every ``drift.fleet_check_every``-th score.

An episode fires once the condition has held for ``for`` consecutive evaluations, and resolves at
the first evaluation where it does not hold. After a resolution the rule stays quiet for that key
for ``cooldown_s`` seconds of event time.

>>> rules = RuleSet.model_validate({"rules": [{"name": "hot", "scope": "device",
...     "when": {"signal": "anomaly_rate", "op": ">", "value": 0.5}, "for": 2}]})
>>> engine = RuleEngine(rules)
>>> hot = {"anomaly_rate": 0.9}
>>> [t.status for t in engine.evaluate([Evaluation("device", "d1", "temperature", hot, 1000)])]
[]
>>> [t.status for t in engine.evaluate([Evaluation("device", "d1", "temperature", hot, 2000)])]
['firing']
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal, Union, cast

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

Scope = Literal["device", "fleet"]
Action = Literal["alert", "retrain"]

#: Signals every evaluation may carry. KS/PSI values are present only once the reference is
#: frozen and the current window is full; a condition on an absent signal is false.
DRIFT_SIGNALS = frozenset(
    {
        "readings",
        "anomalies",
        "anomaly_rate",
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
    "fleet": DRIFT_SIGNALS,
}
_OPS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
}


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Condition(_Model):
    signal: str
    op: Literal["<", "<=", ">", ">=", "==", "!="]
    value: float

    def holds(self, signals: Mapping[str, float]) -> bool:
        v = signals.get(self.signal)
        return v is not None and _OPS[self.op](v, self.value)

    def signal_names(self) -> set[str]:
        return {self.signal}


class AllOf(_Model):
    all: list[Node] = Field(min_length=1)

    def holds(self, signals: Mapping[str, float]) -> bool:
        return all(c.holds(signals) for c in self.all)

    def signal_names(self) -> set[str]:
        return set().union(*(c.signal_names() for c in self.all))


class AnyOf(_Model):
    any: list[Node] = Field(min_length=1)

    def holds(self, signals: Mapping[str, float]) -> bool:
        return any(c.holds(signals) for c in self.any)

    def signal_names(self) -> set[str]:
        return set().union(*(c.signal_names() for c in self.any))


Node = Annotated[Union[Condition, AllOf, AnyOf], Field(union_mode="left_to_right")]  # noqa: UP007


class Rule(_Model):
    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,63}$")
    description: str = ""
    scope: Scope
    when: Node
    for_: int = Field(1, ge=1, alias="for")
    cooldown_s: float = Field(0.0, ge=0)
    severity: Literal["info", "warning", "critical"] = "warning"
    actions: list[Action] = Field(default_factory=lambda: cast("list[Action]", ["alert"]), min_length=1)

    @model_validator(mode="after")
    def _check(self) -> Rule:
        unknown = self.when.signal_names() - SIGNALS[self.scope]
        if unknown:
            known = ", ".join(sorted(SIGNALS[self.scope]))
            raise ValueError(f"unknown signal(s) {sorted(unknown)} for scope {self.scope}; known: {known}")
        if "retrain" in self.actions and self.scope != "device":
            raise ValueError("action retrain needs scope device (one model per device and sensor)")
        return self


class RuleSet(_Model):
    rules: list[Rule]

    @model_validator(mode="after")
    def _unique(self) -> RuleSet:
        names = [r.name for r in self.rules]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"duplicate rule names: {dupes}")
        return self


class RulesError(ValueError):
    """A rules file that cannot be used, with the place of the problem."""


def load_rules(path: Path) -> RuleSet:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise RulesError(f"{path}: {exc}") from exc
    try:
        return RuleSet.model_validate(data)
    except ValidationError as exc:
        lines = [f"{path}: {len(exc.errors())} error(s)"]
        for e in exc.errors():
            where = ".".join(str(p) for p in e["loc"]) or "(top level)"
            lines.append(f"  {where}: {e['msg']}")
        raise RulesError("\n".join(lines)) from exc


@dataclass(frozen=True, slots=True)
class Evaluation:
    """One evaluation of a scope key: ``device_id`` is ``"*"`` for fleet scope."""

    scope: Scope
    device_id: str
    sensor: str
    signals: Mapping[str, float]
    ts: int  # event time, epoch ms


@dataclass(frozen=True, slots=True)
class Transition:
    rule: Rule
    evaluation: Evaluation
    status: Literal["firing", "resolved"]
    started_at: int


@dataclass(slots=True)
class _Episode:
    streak: int = 0
    firing: bool = False
    started_at: int = 0
    quiet_until: int = 0


@dataclass
class RuleEngine:
    """Evaluates rules and keeps the episode state of every (rule, scope key)."""

    rules: RuleSet
    _episodes: dict[tuple[str, str, str], _Episode] = field(default_factory=dict)

    def evaluate(self, evaluations: Iterable[Evaluation]) -> list[Transition]:
        out: list[Transition] = []
        for ev in evaluations:
            for rule in self.rules.rules:
                if rule.scope == ev.scope:
                    t = self._step(rule, ev)
                    if t is not None:
                        out.append(t)
        return out

    def firing(self) -> int:
        return sum(e.firing for e in self._episodes.values())

    def firing_by_rule(self) -> dict[str, int]:
        """Episodes firing now, per rule name (every rule of the set, 0 when quiet)."""
        counts = dict.fromkeys((r.name for r in self.rules.rules), 0)
        for (rule, _device, _sensor), e in self._episodes.items():
            counts[rule] += e.firing
        return counts

    def _step(self, rule: Rule, ev: Evaluation) -> Transition | None:
        key = (rule.name, ev.device_id, ev.sensor)
        ep = self._episodes.get(key)
        if not rule.when.holds(ev.signals):
            if ep is None:
                return None
            ep.streak = 0
            if not ep.firing:
                if ev.ts >= ep.quiet_until:
                    del self._episodes[key]  # nothing left to remember: keeps the state bounded
                return None
            ep.firing = False
            ep.quiet_until = ev.ts + int(rule.cooldown_s * 1000)
            return Transition(rule, ev, "resolved", ep.started_at)
        ep = self._episodes.setdefault(key, _Episode())
        ep.streak += 1
        if ep.firing or ep.streak < rule.for_ or ev.ts < ep.quiet_until:
            return None
        ep.firing, ep.started_at = True, ev.ts
        return Transition(rule, ev, "firing", ev.ts)
