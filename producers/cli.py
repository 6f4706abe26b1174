"""The sources' subcommands: ``telemon iio``, ``telemon replay FILE``, ``telemon bridge mqtt`` (the
last needs the ``mqtt`` extra: without it, it exits 2 naming the ``pip install`` to run).

:func:`add_parsers` registers them on the ``telemon`` subparsers, :func:`run` dispatches on
``args.command``. Each takes the monitor config (``--config``; its ``kafka`` section says where to
publish) and ``--bootstrap``. SIGTERM/SIGINT stop a source cleanly: it stops reading, waits until
Kafka acknowledged everything it produced, and exits 0 (1 if that fails). Errors propagate to
``monitor.cli.main``: bad input (config, mapping, file) exits 2, an unreachable broker 1.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
from pathlib import Path

from monitor.cli.args import add_bootstrap_option, settings_from_args, stop_on_signals
from monitor.common import extras
from monitor.schema import DEVICE_ID_PATTERN
from producers import iio, replay
from producers.publisher import Publisher, ReadingPublisher

log = logging.getLogger("producers")

#: The MQTT password is read from this environment variable, never from the command line.
MQTT_PASSWORD_ENV = "TELEMON_MQTT_PASSWORD"


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be > 0: {text}")
    return value


def _count(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1: {text}")
    return value


def _non_negative(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0: {text}")
    return value


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register ``iio``, ``replay`` and ``bridge mqtt`` on the ``telemon`` subparsers."""
    _add_iio(sub)
    _add_replay(sub)
    _add_bridge(sub)


def _add_iio(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "iio",
        help="publish this machine's sensors (Linux Industrial I/O, e.g. a Sense HAT)",
        description="Discover accelerometer, gyroscope, magnetometer, humidity, pressure and "
        "temperature channels under the IIO sysfs root, convert them to the wire format's units and "
        "publish one reading per sensor per sample to kafka.readings_topic until SIGTERM/SIGINT.",
    )
    p.add_argument(
        "--root", type=Path, default=iio.DEFAULT_ROOT, help="IIO sysfs root (default: %(default)s)"
    )
    p.add_argument(
        "--rate", type=_positive, default=1.0, metavar="HZ", help="samples per second (default: 1)"
    )
    p.add_argument("--device-id", help="device id on the wire (default: the host name)")
    p.add_argument(
        "--count", type=_count, metavar="N", help="stop after N samples (default: run until stopped)"
    )
    p.add_argument("--list", action="store_true", help="print the discovered channels and exit")
    add_bootstrap_option(p)


def _add_replay(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "replay",
        help="publish a recorded CSV/JSONL log, in event time",
        description="Publish a recorded log to kafka.readings_topic through a column mapping "
        "(see configs/replay/astropi.yaml). Readings keep the log's timestamps. Rows with unusable "
        "values are skipped, counted and reported with file:line (--strict: stop at the first).",
    )
    p.add_argument("file", type=Path, metavar="FILE", help="the log (.csv, or .jsonl/.ndjson)")
    p.add_argument("--mapping", type=Path, required=True, metavar="YAML", help="column mapping file")
    p.add_argument(
        "--speed",
        type=_non_negative,
        default=1.0,
        help="1 = the log's own pace, 10 = ten times faster, 0 = as fast as possible (default: 1)",
    )
    p.add_argument("--limit", type=_count, metavar="ROWS", help="stop after this many rows")
    p.add_argument("--strict", action="store_true", help="exit 2 at the first bad row instead of skipping")
    add_bootstrap_option(p)


def _add_bridge(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    bridge = sub.add_parser("bridge", help="forward readings from an edge protocol to Kafka")
    kinds = bridge.add_subparsers(dest="bridge_command", required=True, metavar="PROTOCOL")
    p = kinds.add_parser(
        "mqtt",
        help="MQTT -> Kafka, validated, at least once (needs the 'mqtt' extra)",
        description="Subscribe to an MQTT topic filter with QoS 1 and a persistent session; forward "
        "valid readings to kafka.readings_topic and invalid ones to kafka.dead_letter_topic; "
        "acknowledge each MQTT message only after Kafka acknowledged it. The first + of the filter "
        f"is the device id, the second the sensor. Password: ${MQTT_PASSWORD_ENV}. "
        "Needs the 'mqtt' extra: pip install 'telemon[mqtt]'.",
    )
    p.add_argument("--mqtt-host", default="127.0.0.1", help="MQTT broker host (default: %(default)s)")
    p.add_argument("--mqtt-port", type=int, default=1883, help="MQTT broker port (default: %(default)s)")
    p.add_argument("--topic", default="telemetry/+/+", help="topic filter (default: %(default)s)")
    p.add_argument("--client-id", help="persistent session id (default: telemon-bridge-<host name>)")
    p.add_argument("--mqtt-username", help="MQTT user name")
    p.add_argument("--mqtt-tls-ca", type=Path, metavar="FILE", help="CA bundle: connect with TLS")
    add_bootstrap_option(p)


def cmd_iio(args: argparse.Namespace) -> int:
    sources = iio.discover(args.root)
    if args.list:
        print("\n".join(s.describe() for s in sources))
        return 0
    device_id = args.device_id or socket.gethostname()
    if not DEVICE_ID_PATTERN.fullmatch(device_id):
        raise ValueError(f"device id {device_id!r} must match {DEVICE_ID_PATTERN.pattern}: use --device-id")
    settings = settings_from_args(args)
    kafka = settings.kafka
    iio.warn_about_rates(sources, args.rate)
    stop = stop_on_signals("stopping, delivering what was sent")
    timeout = settings.consume.delivery_timeout_s
    with Publisher(kafka, flush_timeout_s=timeout, create_topics=[kafka.readings_topic]) as publisher:
        sampler = iio.Sampler(sources, ReadingPublisher(publisher, iio.seq_start()), device_id)
        log.info(
            "sampling %d sensors at %g Hz as %s -> %s",
            len(sources),
            args.rate,
            device_id,
            kafka.readings_topic,
        )
        report = iio.sample(sampler, iio.Sampling(args.rate, args.count), stop)
    print(report.summary())
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    catalog = settings.channels.catalog()
    mapping = replay.load_mapping(args.mapping, catalog)
    if not args.file.is_file():
        raise FileNotFoundError(f"log file not found: {args.file}")
    kafka = settings.kafka
    options = replay.ReplayOptions(speed=args.speed, strict=args.strict, limit=args.limit)
    stop = stop_on_signals("stopping, delivering what was sent")
    timeout = settings.consume.delivery_timeout_s
    with Publisher(kafka, flush_timeout_s=timeout, create_topics=[kafka.readings_topic]) as publisher:
        sink = ReadingPublisher(publisher, catalog=catalog)
        report = replay.Replayer(mapping, sink, options).run(args.file, stop)
    print(report.summary())
    return 0


def cmd_bridge(args: argparse.Namespace) -> int:
    extras.require("mqtt", "paho.mqtt.client", "the MQTT bridge")
    from producers import mqtt_bridge  # imports paho-mqtt: only with the mqtt extra

    settings = settings_from_args(args)
    options = mqtt_bridge.MqttOptions(
        host=args.mqtt_host,
        port=args.mqtt_port,
        topic=args.topic,
        client_id=args.client_id or f"telemon-bridge-{socket.gethostname()}",
        username=args.mqtt_username,
        password=os.environ.get(MQTT_PASSWORD_ENV),
        tls_ca=args.mqtt_tls_ca,
    )
    mqtt_bridge.TopicLayout(options.topic)  # a bad filter is a usage error before connecting
    stop = stop_on_signals("stopping, delivering what was sent")
    log.info(
        "bridging mqtt://%s:%d/%s -> Kafka %s",
        options.host,
        options.port,
        options.topic,
        settings.kafka.bootstrap_servers,
    )
    report = mqtt_bridge.run_bridge(
        settings.kafka,
        options,
        stop,
        max_bytes=settings.consume.max_message_bytes,
        catalog=settings.channels.catalog(),
        flush_timeout_s=settings.consume.delivery_timeout_s,
    )
    print(report.summary())
    return 0


COMMANDS = {"iio": cmd_iio, "replay": cmd_replay, "bridge": cmd_bridge}


def run(args: argparse.Namespace) -> int:
    """Run the source subcommand ``args.command``; its exit code."""
    return COMMANDS[args.command](args)
