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

from monitor.govern.rules.engine import RuleEngine, Transition
from monitor.govern.rules.loader import load_rules, parse_rules
from monitor.govern.rules.model import Action, Evaluation, Rule, RuleSet, Scope, Status

__all__ = [
    "Action", "Evaluation", "Rule", "RuleEngine", "RuleSet", "Scope", "Status", "Transition",
    "load_rules", "parse_rules",
]  # fmt: skip
