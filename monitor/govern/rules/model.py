"""The rules' data model: signals per scope, conditions (``Condition``, ``AllOf``, ``AnyOf``),
``Rule`` and ``RuleSet``, validated by pydantic with every problem at its own key."""

from __future__ import annotations

import difflib
import operator
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
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
from pydantic_core import InitErrorDetails, PydanticCustomError

from monitor.analyze import bias
from monitor.common.durations import parse_duration
from monitor.schema import NAME_PATTERN, SENSOR_NAMES

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
#: A pair's state at the evaluation: its current run of consecutive anomalous readings; 1 while a
#: retrain of it is under way (training, its candidate in shadow, or a retry after a rejection
#: scheduled), else 0; and, for a channel with a ``max_rate``, how fast its model's level moved
#: since the previous evaluation, over that limit (``rate`` > 1: faster than plausible).
PAIR_SIGNALS = frozenset({"anomaly_streak", "retraining", "rate"})
#: The device tier's (monitor.detect.joint), per pair: frames it flagged mostly because of the pair's
#: channel, their rate among the device's frames, and the largest frame score of the interval.
JOINT_SIGNALS = frozenset({"device_frames", "device_anomalies", "device_anomaly_rate", "device_score"})
#: The River tiers' (monitor.detect.rivertier), per pair a tier scores: readings it scored, those its
#: filter flagged and their share, and the interval's largest score (absent for a pair no tier covers).
RIVER_SIGNALS = frozenset({"river_readings", "river_anomalies", "river_anomaly_rate", "river_score"})
#: Drift of the pair's inputs (monitor.detect.inputs), per axis, the worst axis reported: against the
#: pair's frozen reference (input_*) and against the fleet's latest inputs (peer_*). Present once
#: their windows are full, and while ``inputs.enabled``.
INPUT_SIGNALS = frozenset(
    f"{prefix}_{name}" for prefix in ("input", "peer") for name in ("ks_stat", "ks_pvalue", "psi", "drift")
)
#: Over a group (the fleet, a cohort): ADWIN changes in the mean of an input axis per evaluation
#: interval (count over the sensor's axes, and 0/1), while ``inputs.enabled``.
GROUP_INPUT_SIGNALS = frozenset({"input_adwin_detections", "input_adwin_drift"})
#: A cohort's latest inputs against the rest of the fleet's at the same time (monitor.detect.cohortinputs),
#: per axis, the worst axis reported; present once each side holds ``inputs.cohort_min_inputs``.
COHORT_INPUT_SIGNALS = frozenset(f"cohort_input_{name}" for name in ("ks_stat", "ks_pvalue", "psi", "drift"))
#: The cohort against the rest of the fleet over the latest closed window of ``bias.window_s``
#: (monitor.analyze.bias): alert rate and device scores, each with a test; present once a window
#: closed with the cohort in it (the p-values: once the window had enough alerts, devices).
BIAS_SIGNALS = bias.SIGNALS
SIGNALS: dict[str, frozenset[str]] = {
    "device": DRIFT_SIGNALS
    | INTEGRITY_SIGNALS
    | PAIR_SIGNALS
    | JOINT_SIGNALS
    | RIVER_SIGNALS
    | INPUT_SIGNALS,
    # devices: the devices whose scores feed the group; lag: the consumer's lag, in messages
    "fleet": DRIFT_SIGNALS | GROUP_INPUT_SIGNALS | {"devices", "lag"},
    "cohort": DRIFT_SIGNALS | GROUP_INPUT_SIGNALS | COHORT_INPUT_SIGNALS | BIAS_SIGNALS | {"devices"},
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

_FOR_HELP = "expected a number of consecutive evaluations (>= 1) or a duration such as '30s', '5m', '1h'"


def _parse_for(value: object) -> object:
    """``for`` is a count of evaluations (int) or a duration of event time (a string)."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    duration = parse_duration(value) if isinstance(value, str) else value
    if isinstance(duration, timedelta) and duration > timedelta(0):
        return duration
    raise ValueError(f"{_FOR_HELP}, not {value!r}")


def _known_sensor(name: str, info: ValidationInfo) -> str:
    """One of the sensors the rules are validated against (the context's ``sensors``: the
    deployment's catalog; by default the built-in kinds), or, with the context's ``registrable``
    (``channels.auto_register`` is on), a name a channel registered automatically may have."""
    context = info.context or {}
    known = context.get("sensors", SENSOR_NAMES)
    if name not in known and not (context.get("registrable") and NAME_PATTERN.fullmatch(name)):
        close = difflib.get_close_matches(name, known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ValueError(f"unknown sensor {name!r}{hint}; known: {', '.join(known)}")
    return name


For = Annotated[int | timedelta, BeforeValidator(_parse_for)]
SensorName = Annotated[str, AfterValidator(_known_sensor)]


@dataclass(frozen=True, slots=True)
class Evaluation:
    """One evaluation of a scope key: ``device_id`` is ``"*"`` for fleet scope and
    ``"<label>=<value>"`` (e.g. ``"firmware=1.2.0"``) for cohort scope."""

    scope: Scope
    device_id: str
    sensor: str
    signals: Mapping[str, float]
    ts: int  # event time, epoch ms


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
            raise ValueError(
                "scope cohort needs cohort: <label>, a device label such as firmware or a channel label "
                "such as vendor"
            )
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

    def signal_names(self) -> set[str]:
        """Every signal the rule reads, in ``when`` and ``clear``."""
        return self.when.signal_names() | (set() if self.clear is None else self.clear.signal_names())

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

    def unknown_sensors(self, known: Sequence[str]) -> list[str]:
        """A problem per sensor a rule names that is not in ``known`` (the catalog's names)."""
        return [
            f"rules.{i} ({rule.name}): sensor {name!r} is not monitored; known: {', '.join(known)}"
            for i, rule in enumerate(self.rules)
            for name in rule.sensors or ()
            if name not in known
        ]


def _raise_if(problems: Iterable[Problem]) -> None:
    """Raise the problems as one ValidationError; pydantic keeps their locations (relative to the
    validated value) when it is raised inside a validator, so each points at its own key."""
    details = [
        InitErrorDetails(type=PydanticCustomError("rule", "{reason}", {"reason": msg}), loc=loc, input=None)
        for loc, msg in problems
    ]
    if details:
        raise ValidationError.from_exception_data("rules", details)
