"""The rules engine: evaluations in, episode transitions (pending, firing, resolved) out, with the
episode state of every (rule, scope key) kept, exported and restored."""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import Field

from monitor.govern.rules.model import (
    Evaluation,
    Rule,
    RuleSet,
    Scope,
    Status,
    _Model,
)


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
