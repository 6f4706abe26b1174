"""``telemon alerts tail``: follow the alerts topic in a shell.

Every partition of ``kafka.alerts_topic`` is assigned (no consumer group joins, nothing is
committed) and read with ``isolation.level=read_committed``, so an aborted exactly-once batch
never shows. Reading starts at the end, or at the first record published at or after ``--from``;
``--once`` stops when every partition is at its end. Each record prints as one line (time, status,
rule, device/sensor, reason) or, with ``--json``, as one JSON document per line. A record that
does not decode prints a one-line warning on stderr and the tail goes on.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from collections.abc import Callable

import msgspec
from confluent_kafka import OFFSET_END, Consumer, KafkaError, KafkaException, Message, TopicPartition

from monitor.cli.args import add_bootstrap_option, settings_from_args, stop_on_signals
from monitor.errors import InvalidInput, KafkaUnavailable
from monitor.govern import alerts
from monitor.ingest.kafka import CONNECT_TIMEOUT_S, consumer_config, list_topics
from monitor.report.command import parse_when
from monitor.settings import KafkaSettings

#: The longest wait of one poll: how soon a signal or the end of --once is noticed.
POLL_S = 0.2

EPILOG = """\
examples:
  telemon alerts tail                              new alerts as they are published (Ctrl-C stops)
  telemon alerts tail --from 6h --once             the last six hours' alerts, then exit
  telemon alerts tail --from 2026-01-01T06:00 --json | jq .rule"""


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


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    since = parse_when("--from", args.since, int(time.time() * 1000))
    stop = stop_on_signals("stopping the tail", 5.0)
    show = _json_line if args.json else pretty
    try:
        tail(settings.kafka, since, lambda line: print(line, flush=True), show, stop, args.once)
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
) -> None:
    """``out(show(alert))`` for every record of the alerts topic from ``since`` (epoch ms; ``None``:
    the end) until ``stop`` is set, or with ``once`` until every partition is at its end."""
    consumer = Consumer(_config(kafka))
    try:
        assigned = _start(consumer, kafka, since)
        consumer.assign(assigned)
        ended: set[int] = set()
        while not stop.is_set() and not (once and len(ended) == len(assigned)):
            for m in consumer.consume(1000, POLL_S):
                _handle(m, ended, out, show)
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
    m: Message, ended: set[int], out: Callable[[str], None], show: Callable[[alerts.Alert], str]
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
