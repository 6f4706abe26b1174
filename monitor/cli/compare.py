"""``telemon compare``: a shadow run against production, read from their topics.

The reading is all this module does besides printing: every record of production's alerts,
models, audit and feedback topics and of the shadow's alerts, models and audit topics (no consumer
group, nothing committed), decoded and handed to :func:`monitor.analyze.compare.compare`.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TypeVar

import msgspec
from confluent_kafka import Message

from monitor.analyze import compare as cmp
from monitor.analyze import feedback
from monitor.analyze.ledger import decode_alert
from monitor.cli.args import add_bootstrap_option, settings_from_args
from monitor.common.durations import parse_duration
from monitor.errors import InvalidInput
from monitor.evaluation.report import table
from monitor.report import topics
from monitor.report.command import parse_when
from monitor.serve import shadow
from monitor.settings import Settings

_T = TypeVar("_T")


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "compare",
        help="a shadow run's alerts, verdicts and retrain decisions against production's",
        description="Read production's alerts, models, audit and feedback topics and the shadow run's "
        "(the same names with --shadow-suffix; see `telemon run --shadow-of`) and report, over a range of "
        "event time: alerts per rule in both runs, only in production, only in the shadow (matched by "
        "rule, device and sensor with overlapping episodes, within --tolerance), the latency of the "
        "matched ones (the shadow's first firing minus production's), their scores at firing, the "
        "precision operators' verdicts give each run, and each run's retrain decisions. --config is "
        "production's (its kafka section names the topics). Exit 2 for an empty range or a run whose "
        "alerts topic does not exist, 1 if Kafka cannot be reached.",
    )
    add_bootstrap_option(p)
    p.add_argument(
        "--from",
        dest="since",
        metavar="TIME",
        help="start of the range, event time of the alerts: ISO-8601 (naive: UTC), epoch s or ms, or a "
        "duration before now (30m, 6h, 2d) (default: the first alert)",
    )
    p.add_argument(
        "--to", dest="until", metavar="TIME", help="end of the range (excluded), as --from (default: open)"
    )
    p.add_argument(
        "--shadow-suffix",
        default=shadow.DEFAULT_SUFFIX,
        metavar="SUFFIX",
        help="the shadow run's topics are production's names with this suffix (default: %(default)s)",
    )
    p.add_argument(
        "--tolerance",
        default="60s",
        metavar="DURATION",
        help="how far apart two episodes of a rule, device and sensor may be and still match: seconds, "
        "or with a unit, 90s, 2m, 1h (default: %(default)s)",
    )
    p.add_argument("--json", action="store_true", help="print the comparison as one JSON document")


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    if not args.shadow_suffix:
        raise InvalidInput("--shadow-suffix: empty; the shadow's topics would be production's")
    now = int(time.time() * 1000)
    window = cmp.Window(
        parse_when("--from", args.since, now),
        parse_when("--to", args.until, now),
        _tolerance_ms(args.tolerance),
    )
    if window.since is not None and window.until is not None and window.since >= window.until:
        raise InvalidInput(
            f"--from {_when(window.since)} is not before --to {_when(window.until)}: the range is empty"
        )
    production, shadowed, verdicts = read(settings, args.shadow_suffix)
    result = cmp.compare(production, shadowed, verdicts, window)
    if result.empty:
        raise InvalidInput(_nothing(result))
    print(json.dumps(msgspec.to_builtins(result), indent=2) if args.json else render(result, settings, args))
    return 0


def _tolerance_ms(text: str) -> int:
    """Seconds (``60``) or a duration with units (``90s``, ``2m``, ``1h30m``)."""
    try:
        seconds = float(text)
    except ValueError:
        duration = parse_duration(text)
        seconds = -1.0 if duration is None else duration.total_seconds()
    if not 0 <= seconds < float("inf"):
        raise InvalidInput(f"--tolerance {text!r}: not a duration (60, 90s, 2m, 1h)")
    return round(seconds * 1000)


def read(settings: Settings, suffix: str) -> tuple[cmp.Outputs, cmp.Outputs, list[feedback.Verdict]]:
    """Both runs' outputs and the operators' verdicts; raises :class:`InvalidInput` when a run's
    alerts topic does not exist."""
    k = settings.kafka
    names = {"production": [k.alerts_topic, k.models_topic, k.audit_topic]}
    names["shadow"] = [shadow.shadow_topic(t, suffix) for t in names["production"]]
    records: dict[str, list[Message]] = {t: [] for side in names.values() for t in side}
    records[k.feedback_topic] = []
    found = topics.read(k, list(records), lambda m: records[str(m.topic())].append(m))
    for side, (alerts_topic, *_) in names.items():
        if alerts_topic not in found:
            hint = " (start one with `telemon run --shadow-of GROUP`)" if side == "shadow" else ""
            raise InvalidInput(
                f"no {side} run to compare: topic {alerts_topic} does not exist at "
                f"{k.bootstrap_servers}{hint}"
            )
    now = int(time.time() * 1000)
    verdicts = [
        v
        for m in records[k.feedback_topic]
        if isinstance(v := feedback.decode(m.value(), m.key(), now), feedback.Verdict)
    ]
    production, shadowed = (_outputs(records, *names[side]) for side in ("production", "shadow"))
    return production, shadowed, verdicts


def _outputs(records: dict[str, list[Message]], alerts: str, models: str, audit: str) -> cmp.Outputs:
    return cmp.Outputs(
        alerts=_decoded(records[alerts], decode_alert),
        candidates=_decoded(records[models], cmp.decode_candidate),
        decisions=_decoded(records[audit], cmp.decode_decision),
    )


def _decoded(messages: list[Message], decode: Callable[[bytes], _T | None]) -> list[_T]:
    """The records that decode (others are not this record kind: skipped)."""
    return [r for m in messages if (r := decode(m.value() or b"")) is not None]


# --- the table -------------------------------------------------------------------------------


def render(c: cmp.Comparison, settings: Settings, args: argparse.Namespace) -> str:
    k = settings.kafka
    mine = shadow.shadow_topic(k.alerts_topic, args.shadow_suffix)
    since = "the first alert" if c.window.since is None else _when(c.window.since)
    until = "the last" if c.window.until is None else _when(c.window.until)
    lines = [
        f"production {k.alerts_topic} against shadow {mine}, from {since} to {until} (event time); "
        f"alerts matched by rule, device and sensor within {c.window.tolerance_ms / 1000:g} s",
        "",
        table(
            [
                "RULE",
                "PRODUCTION",
                "SHADOW",
                "BOTH",
                "ONLY PROD",
                "ONLY SHADOW",
                "PRECISION P/S",
                "LATENCY",
                "SCORE_MEAN P/S",
            ],
            [_rule_cells(r) for r in [*c.rules, c.total]],
        ),
        "",
        *_episodes("only in production", c.only_production),
        *_episodes("only in the shadow", c.only_shadow),
        *_matches(c.matched),
        *_precision(c),
        "",
        *_decisions(c),
    ]
    return "\n".join(line.rstrip() for text in lines for line in text.split("\n"))


def _rule_cells(r: cmp.RuleRow) -> list[object]:
    return [
        r.rule,
        r.production,
        r.shadow,
        r.both,
        r.only_production,
        r.only_shadow,
        f"{_num(r.precision_production)} / {_num(r.precision_shadow)}",
        None if r.latency_s is None else f"{r.latency_s:+g}s",
        f"{_num(r.score_production)} / {_num(r.score_shadow)}",
    ]


def _episodes(title: str, eps: Sequence[cmp.Episode]) -> list[str]:
    if not eps:
        return [f"{title}: none", ""]
    rows = [[e.rule, f"{e.device_id}/{e.sensor}", _when(e.fired_at), e.alert_id] for e in eps]
    return [f"{title} ({len(eps)}):", table(["RULE", "WHERE", "FIRED", "ALERT"], rows), ""]


def _matches(ms: Sequence[cmp.Match]) -> list[str]:
    if not ms:
        return ["in both: none", ""]
    rows = [
        [
            m.production.rule,
            f"{m.production.device_id}/{m.production.sensor}",
            _when(m.production.fired_at),
            _when(m.shadow.fired_at),
            f"{m.latency_ms / 1000:+g}s",
            "same" if m.production.alert_id == m.shadow.alert_id else m.shadow.alert_id,
        ]
        for m in ms
    ]
    headers = ["RULE", "WHERE", "PRODUCTION FIRED", "SHADOW FIRED", "LATENCY", "SHADOW ALERT"]
    return [f"in both ({len(ms)}):", table(headers, rows), ""]


def _precision(c: cmp.Comparison) -> list[str]:
    p, s = c.precision["production"], c.precision["shadow"]
    rows: list[list[object]] = [
        ["alerts", p.alerts, s.alerts],
        ["judged", p.judged, s.judged],
        [
            "true / false positive",
            f"{p.true_positive} / {p.false_positive}",
            f"{s.true_positive} / {s.false_positive}",
        ],
        ["expected maintenance", p.maintenance, s.maintenance],
        ["precision", _num(p.precision), _num(s.precision)],
    ]
    return [table(["OPERATORS' VERDICTS", "PRODUCTION", "SHADOW"], rows)]


def _decisions(c: cmp.Comparison) -> list[str]:
    p, s = c.decisions["production"], c.decisions["shadow"]
    rows: list[list[object]] = [
        ["candidates registered", p.candidates, s.candidates],
        ["promoted", p.promoted, s.promoted],
        ["rejected", p.rejected, s.rejected],
        ["rolled back", p.rolled_back, s.rolled_back],
    ]
    pairs = [
        f"  {d.device_id}/{d.sensor}: production {', '.join(d.production) or 'none'}; "
        f"shadow {', '.join(d.shadow) or 'none'}"
        for d in c.pairs
    ]
    return [table(["RETRAIN DECISIONS", "PRODUCTION", "SHADOW"], rows), *pairs]


def _nothing(c: cmp.Comparison) -> str:
    held = "; ".join(
        f"{side}'s alerts fired from {_when(span[0])} to {_when(span[1])}"
        if span
        else f"{side} has no alerts"
        for side, span in c.spans.items()
    )
    since = "the start" if c.window.since is None else _when(c.window.since)
    until = "the end" if c.window.until is None else _when(c.window.until)
    return (
        f"no alerts and no retrain decisions from {since} to {until} in either run ({held}); choose "
        "--from and --to within that"
    )


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _when(epoch_ms: int) -> str:
    return datetime.fromtimestamp(epoch_ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
