"""Throughput of the sources (readings/s into Kafka, every one acknowledged by the broker).

- ``iio``: the sampler over the fixture sysfs tree (``tests/fixtures/iio``) as fast as it goes;
- ``replay``: the Astro Pi log at ``--speed 0`` (``configs/replay/astropi.yaml``);
- ``bridge``: MQTT QoS 1 -> bridge -> Kafka, counted when the bridge acknowledged to MQTT
  (needs Mosquitto; at most 500 messages are outstanding so Mosquitto's queue, 1000 by default, never drops).

Without ``--bootstrap`` it starts the embedded broker on a free port::

    .venv/bin/python bench/producers.py
    .venv/bin/python bench/producers.py --bootstrap 127.0.0.1:9092 --mqtt 127.0.0.1:1883

Each run publishes to fresh topics (named after the process id and the time).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

if __package__ in (None, ""):  # run as a script: this file would shadow the producers package
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from monitor import errors
from monitor.cli.broker import EmbeddedBroker
from monitor.schema import encode_reading
from monitor.settings import KafkaSettings
from producers import iio, mqtt_bridge, replay
from producers.publisher import Publisher, ReadingPublisher

ASTROPI = Path("../shared/data/astropi/astro_pi_data_20150824_085954.csv")
WINDOW = 500


def _args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bootstrap", help="Kafka bootstrap servers (default: start the embedded broker)")
    p.add_argument("--mqtt", default="127.0.0.1:1883", help="Mosquitto host:port (default %(default)s)")
    p.add_argument("--iio-samples", type=int, default=5000, help="IIO samples (6 readings each)")
    p.add_argument("--bridge-messages", type=int, default=20_000)
    return p.parse_args()


@contextlib.contextmanager
def _kafka(bootstrap: str | None) -> Iterator[str]:
    if bootstrap:
        yield bootstrap
        return
    with EmbeddedBroker() as broker:
        yield broker.bootstrap_servers


def _settings(bootstrap: str, name: str) -> KafkaSettings:
    run = f"bench-{os.getpid()}-{int(time.time())}-{name}"
    return KafkaSettings(
        bootstrap_servers=bootstrap, readings_topic=f"{run}.readings", dead_letter_topic=f"{run}.dlq"
    )


def bench_iio(bootstrap: str, samples: int) -> None:
    kafka = _settings(bootstrap, "iio")
    with Publisher(kafka, create_topics=[kafka.readings_topic]) as publisher:
        sampler = iio.Sampler(iio.discover(Path("tests/fixtures/iio")), ReadingPublisher(publisher), "bench")
        began = time.perf_counter()
        report = iio.sample(sampler, iio.Sampling(rate_hz=1e9, count=samples), threading.Event())
        publisher.close()
        elapsed = time.perf_counter() - began
    n = sum(report.published.values())
    print(f"iio (fixture sysfs):  {n / elapsed:>10,.0f} readings/s  ({n:,} readings, {elapsed:.2f} s)")


def bench_replay(bootstrap: str) -> None:
    if not ASTROPI.is_file():
        print(f"replay: skipped, {ASTROPI} not found")
        return
    kafka = _settings(bootstrap, "replay")
    mapping = replay.load_mapping(Path("configs/replay/astropi.yaml"))
    with Publisher(kafka, create_topics=[kafka.readings_topic]) as publisher:
        replayer = replay.Replayer(mapping, ReadingPublisher(publisher), replay.ReplayOptions(speed=0))
        began = time.perf_counter()
        report = replayer.run(ASTROPI, threading.Event())
        publisher.close()
        elapsed = time.perf_counter() - began
    n = report.published
    print(f"replay (Astro Pi):    {n / elapsed:>10,.0f} readings/s  ({n:,} readings, {elapsed:.2f} s)")


def bench_bridge(bootstrap: str, mqtt_address: str, count: int) -> None:
    host, _, port = mqtt_address.partition(":")
    kafka = _settings(bootstrap, "bridge")
    run = kafka.readings_topic.removesuffix(".readings")
    options = mqtt_bridge.MqttOptions(host, int(port), topic=f"{run}/+/+", client_id=run)
    stop, ready = threading.Event(), threading.Event()
    holder: list[mqtt_bridge.Bridge] = []

    def on_ready(b: mqtt_bridge.Bridge) -> None:
        holder.append(b)
        ready.set()

    thread = threading.Thread(
        target=mqtt_bridge.run_bridge, args=(kafka, options, stop), kwargs={"on_ready": on_ready}
    )
    thread.start()
    try:
        if not ready.wait(20):
            raise SystemExit("the bridge did not subscribe")
        _publish_windowed(host, int(port), run, count, holder[0])
    finally:
        stop.set()
        thread.join()
        _drop_session(host, int(port), run)


def _publish_windowed(host: str, port: int, run: str, count: int, bridge: mqtt_bridge.Bridge) -> None:
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"{run}-pub")
    pub.max_inflight_messages_set(WINDOW)
    pub.connect(host, port)
    pub.loop_start()
    began = time.perf_counter()
    try:
        for i in range(count):
            _wait_for_acks(bridge, i - WINDOW + 1)
            dev = f"dev-{i % 100:04d}"
            pub.publish(
                f"{run}/{dev}/humidity",
                encode_reading(dev, "humidity", 1_767_225_600_000 + i, i, {"value": 50.0}),
                1,
            )
        _wait_for_acks(bridge, count)
        elapsed = time.perf_counter() - began
    finally:
        pub.disconnect()
        pub.loop_stop()
    rate = count / elapsed
    print(f"bridge (MQTT QoS 1):  {rate:>10,.0f} readings/s  ({count:,} acknowledged, {elapsed:.2f} s)")


def _wait_for_acks(bridge: mqtt_bridge.Bridge, acked: int, stall_s: float = 10.0) -> None:
    deadline = time.monotonic() + stall_s
    while bridge.acks.acked < acked:
        if time.monotonic() > deadline:
            raise SystemExit(f"bridge stalled at {bridge.acks.acked} acks: did Mosquitto drop messages?")
        time.sleep(0.0005)


def _drop_session(host: str, port: int, client_id: str) -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=True)
    client.connect(host, port)
    client.disconnect()


def main() -> None:
    args = _args()
    with _kafka(args.bootstrap) as bootstrap:
        print(f"Kafka at {bootstrap}")
        bench_iio(bootstrap, args.iio_samples)
        bench_replay(bootstrap)
        try:
            bench_bridge(bootstrap, args.mqtt, args.bridge_messages)
        except errors.MqttUnavailable as exc:
            print(f"bridge: skipped, {exc}")


if __name__ == "__main__":
    main()
