"""``telemon alerts tail``: follow the alerts topic in a shell.

Every partition of ``kafka.alerts_topic`` is assigned (no consumer group joins, nothing is
committed) and read with ``isolation.level=read_committed``, so an aborted exactly-once batch
never shows. Reading starts at the end, or at the first record published at or after ``--from``;
``--once`` stops when every partition is at its end. Each record prints as one line (time, status,
rule, device/sensor, reason) or, with ``--json``, as one JSON document per line. A record that
does not decode prints a one-line warning on stderr and the tail goes on. ``--rule``, ``--device``,
``--sensor``, ``--severity`` and ``--state`` keep only the records that match (:class:`Filter`).
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import get_args

import msgspec
from confluent_kafka import OFFSET_END, Consumer, KafkaError, KafkaException, Message, TopicPartition

from monitor.cli.args import add_bootstrap_option, settings_from_args, stop_on_signals
from monitor.errors import InvalidInput, KafkaUnavailable
from monitor.govern import alerts
from monitor.govern.rules import Rule
from monitor.ingest.kafka import CONNECT_TIMEOUT_S, consumer_config, list_topics
from monitor.report.command import parse_when
from monitor.settings import KafkaSettings

#: The severities a rule may have: those of the alert records.
SEVERITIES: tuple[str, ...] = get_args(Rule.model_fields["severity"].annotation)
#: The longest wait of one poll: how soon a signal or the end of --once is noticed.
POLL_S = 0.2

EPILOG = """\
examples:
  telemon alerts tail                              new alerts as they are published (Ctrl-C stops)
  telemon alerts tail --from 6h --once             the last six hours' alerts, then exit
  telemon alerts tail --from 2026-01-01T06:00 --json | jq .rule
  telemon alerts tail --from 1d --once --device dev-0007 --state firing   one device's firing alerts
  telemon alerts tail --rule score_drift --rule fleet_drift --severity critical   drift, critical only

Filters: a record is printed when it matches every filter given; a filter given several times
matches any of its values. Fleet-wide alerts have the device "*"."""


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``telemon alerts tail``."""
    p = sub.add_parser("alerts", help="follow the alerts topic")
    actions = p.add_subparsers(dest="alerts_command", required=True, metavar="ACTION")
    tail = actions.add_parser(
        "tail",
        help="print the alerts topic's records as they arrive, one line each",
        description="Print the records of kafka.alerts_topic (committed ones only), one line each: "
        "event time, status, rule, device/sensor and why (the explanation, else the signals). Reads "
        "every partition without a consumer group and commits nothing. SIGINT/SIGTERM exit 0.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_bootstrap_option(tail)
    tail.add_argument(
        "--from",
        dest="since",
        metavar="TIME",
        help="start at the first record published at or after TIME: ISO-8601 (naive: UTC), epoch s "
        "or ms, or a duration before now (30m, 6h, 2d) (default: the end, new records only)",
    )
    tail.add_argument("--once", action="store_true", help="exit 0 once every partition is at its end")
    tail.add_argument("--json", action="store_true", help="one JSON document per record and line")
    _add_filters(tail.add_argument_group("filters (each repeatable; a record must match all given)"))


def _add_filters(group: argparse._ArgumentGroup) -> None:
    group.add_argument(
        "--rule",
        action="append",
        metavar="NAME",
        help="only the alerts of the rule NAME (alert_storm: storms)",
    )
    group.add_argument(
        "--device", action="append", metavar="ID", help='only the alerts of device ID ("*": fleet-wide ones)'
    )
    group.add_argument("--sensor", action="append", metavar="NAME", help="only the alerts on sensor NAME")
    group.add_argument(
        "--severity",
        action="append",
        choices=SEVERITIES,
        help="only the alerts of this severity",
    )
    group.add_argument(
        "--state",
        action="append",
        choices=alerts.STATUSES,
        help="only the records of this status: an episode is pending, then firing, then resolved",
    )


@dataclass(frozen=True)
class Filter:
    """Which alert records to show: each field is the values one record field may take (empty:
    any)."""

    rules: frozenset[str] = frozenset()
    devices: frozenset[str] = frozenset()
    sensors: frozenset[str] = frozenset()
    severities: frozenset[str] = frozenset()
    states: frozenset[str] = frozenset()

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Filter:
        def values(name: str) -> frozenset[str]:
            given: Sequence[str] | None = getattr(args, name, None)
            return frozenset(given or ())

        return cls(values("rule"), values("device"), values("sensor"), values("severity"), values("state"))

    def __call__(self, alert: alerts.Alert) -> bool:
        wanted = (
            (self.rules, alert.rule),
            (self.devices, alert.device_id),
            (self.sensors, alert.sensor),
            (self.severities, alert.severity),
            (self.states, alert.status),
        )
        return all(not values or value in values for values, value in wanted)


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    since = parse_when("--from", args.since, int(time.time() * 1000))
    stop = stop_on_signals("stopping the tail", 5.0)
    show = _json_line if args.json else pretty
    keep = Filter.from_args(args)
    try:
        tail(settings.kafka, since, lambda line: print(line, flush=True), show, stop, args.once, keep)
    except BrokenPipeError:  # `telemon alerts tail | head`: the reader has gone
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing to flush at exit
    return 0


def tail(
    kafka: KafkaSettings,
    since: int | None,
    out: Callable[[str], None],
    show: Callable[[alerts.Alert], str],
    stop: threading.Event,
    once: bool = False,
    keep: Callable[[alerts.Alert], bool] = Filter(),
) -> None:
    """``out(show(alert))`` for every record of the alerts topic from ``since`` (epoch ms; ``None``:
    the end) that ``keep`` accepts, until ``stop`` is set, or with ``once`` until every partition is
    at its end."""
    consumer = Consumer(_config(kafka))
    try:
        assigned = _start(consumer, kafka, since)
        consumer.assign(assigned)
        ended: set[int] = set()
        while not stop.is_set() and not (once and len(ended) == len(assigned)):
            for m in consumer.consume(1000, POLL_S):
                _handle(m, ended, out, show, keep)
    finally:
        consumer.close()


def _config(kafka: KafkaSettings) -> dict[str, object]:
    return consumer_config(
        kafka,
        **{"group.id": f"{kafka.group_id}.tail", "enable.partition.eof": True},  # the group is never joined
    )


def _start(consumer: Consumer, kafka: KafkaSettings, since: int | None) -> list[TopicPartition]:
    """Every partition of the alerts topic at the first record at or after ``since`` (the end
    when ``since`` is ``None`` or nothing is that recent)."""
    topic = kafka.alerts_topic
    meta = list_topics(consumer, kafka).topics.get(topic)
    if meta is None or meta.error is not None:
        raise InvalidInput(f"topic {topic} does not exist at {kafka.bootstrap_servers} (kafka.alerts_topic)")
    if since is None:
        return [TopicPartition(topic, p, OFFSET_END) for p in sorted(meta.partitions)]
    wanted = [TopicPartition(topic, p, since) for p in sorted(meta.partitions)]
    try:
        found = consumer.offsets_for_times(wanted, timeout=CONNECT_TIMEOUT_S)
    except KafkaException as exc:
        raise KafkaUnavailable(f"cannot look up the offsets of {topic} at --from: {exc}") from None
    return [TopicPartition(topic, tp.partition, tp.offset if tp.offset >= 0 else OFFSET_END) for tp in found]


def _handle(
    m: Message,
    ended: set[int],
    out: Callable[[str], None],
    show: Callable[[alerts.Alert], str],
    keep: Callable[[alerts.Alert], bool],
) -> None:
    partition, err = int(m.partition() or 0), m.error()
    if err is not None:
        if err.code() == KafkaError._PARTITION_EOF:
            ended.add(partition)
        elif err.fatal():
            raise KafkaUnavailable(f"reading {m.topic()}: {err.str()}")
        return
    ended.discard(partition)
    try:
        alert = alerts.decode(m.value() or b"")
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        print(f"{m.topic()}/{partition}@{m.offset()}: not an alert record ({exc}): skipped", file=sys.stderr)
        return
    if keep(alert):
        out(show(alert))


def pretty(alert: alerts.Alert) -> str:
    """One line: event time, status, rule, device/sensor (the sensor alone for the fleet), why."""
    where = alert.sensor if alert.scope == "fleet" else f"{alert.device_id}/{alert.sensor}"
    if alert.explanation is not None and alert.explanation.text:
        why = alert.explanation.text
    else:
        why = " ".join(f"{k}={v:.4g}" for k, v in sorted(alert.signals.items()))
    line = f"{alerts.rfc3339(alert.ts)}  {alert.status:<8}  {alert.rule}  {where}  {why}"
    return " ".join(line.splitlines())


def _json_line(alert: alerts.Alert) -> str:
    return alerts.encode_json(alert)
