"""The sources against real brokers: IIO sampling and replay into Kafka, the MQTT bridge via Mosquitto.

Mosquitto: ``127.0.0.1:1883``, or ``TEST_MQTT_BROKER=host:port`` (set by
``scripts/test-services.d/mosquitto.sh`` when it had to start one elsewhere). Every test uses its
own MQTT topics and client ids and drops the persistent sessions it created.
"""

from __future__ import annotations

import itertools
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, TopicPartition
from paho.mqtt.enums import CallbackAPIVersion

from monitor import errors
from monitor.cli import main as cli
from monitor.cli.broker import free_port
from monitor.errors import KafkaUnavailable
from monitor.schema import Reading, Reason, Rejection, decode, encode_reading
from monitor.settings import KafkaSettings
from producers import iio, mqtt_bridge, replay
from producers.mqtt_bridge import AckQueue, Bridge, BridgeReport, MqttOptions, TopicLayout
from producers.publisher import Publisher, ReadingPublisher
from tests.conftest import telemon_process

pytestmark = pytest.mark.integration

FIXTURE = Path(__file__).parents[1] / "fixtures" / "iio"
ASTROPI_LOG = (
    Path(__file__).parents[2].parent / "shared" / "data" / "astropi" / "astro_pi_data_20150824_085954.csv"
)
T0 = 1_767_225_600_000
_ids = itertools.count()


def unique(prefix: str) -> str:
    """Unique across tests and runs (Mosquitto keeps persistent sessions between runs)."""
    return f"{prefix}-{os.getpid()}-{time.time_ns()}-{next(_ids)}"


def read(kafka: KafkaSettings, topic: str, expected: int, timeout_s: float = 20.0) -> list[Message]:
    """``topic`` from the beginning until ``expected`` messages arrived, then 0.5 s more for extras."""
    c = Consumer({"bootstrap.servers": kafka.bootstrap_servers, "group.id": unique("reader")})
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(kafka.partitions)])
    out: list[Message] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(out) < expected and time.monotonic() < deadline:
            out.extend(m for m in c.consume(1000, 0.2) if m.error() is None)
        out.extend(m for m in c.consume(1000, 0.5) if m.error() is None)
    finally:
        c.close()
    return out


def readings(messages: list[Message]) -> list[Reading]:
    out = [decode(m.value(), m.key()) for m in messages]
    assert all(isinstance(r, Reading) for r in out), out
    return [r for r in out if isinstance(r, Reading)]


# --- IIO and replay --------------------------------------------------------------------------------


def test_iio_samples_the_fixture_tree_into_kafka(kafka_settings: KafkaSettings) -> None:
    topics = [kafka_settings.readings_topic]
    with Publisher(kafka_settings, create_topics=topics) as publisher:
        sampler = iio.Sampler(iio.discover(FIXTURE), ReadingPublisher(publisher, seq_start=1000), "pi-7")
        report = iio.sample(sampler, iio.Sampling(rate_hz=50.0, count=3), threading.Event())
    assert publisher.delivered == 18 and sum(report.published.values()) == 18
    got = readings(read(kafka_settings, kafka_settings.readings_topic, 18))
    assert len(got) == 18 and {r.device_id for r in got} == {"pi-7"}
    assert sorted(r.seq for r in got) == list(range(1000, 1018))
    assert {r.sensor for r in got} == {
        "accelerometer",
        "gyroscope",
        "magnetometer",
        "humidity",
        "pressure",
        "temperature",
    }
    pressure = [r for r in got if r.sensor == "pressure"]
    assert pressure[0].values["value"] == pytest.approx(1021.99738368)
    assert len({r.ts for r in got}) == 3  # one timestamp per sample, ~20 ms apart


@pytest.mark.skipif(not ASTROPI_LOG.is_file(), reason="../shared/data is absent")
def test_replay_publishes_the_astropi_log_in_event_time(kafka_settings: KafkaSettings) -> None:
    mapping = replay.load_mapping(Path("configs/replay/astropi.yaml"))
    options = replay.ReplayOptions(speed=0.0, limit=200)
    with Publisher(kafka_settings, create_topics=[kafka_settings.readings_topic]) as publisher:
        report = replay.Replayer(mapping, ReadingPublisher(publisher), options).run(
            ASTROPI_LOG, threading.Event()
        )
    assert (report.rows, report.published, report.bad_lines) == (200, 1200, 0)
    messages = read(kafka_settings, kafka_settings.readings_topic, 1200)
    got = readings(messages)
    assert {m.key() for m in messages} == {b"astropi-ground"}
    assert [r.seq for r in got] == list(range(1200))  # one key: one partition, file order
    assert got[0].ts == 1_440_115_110_000 and got[0].sensor == "accelerometer"
    assert got[0].values["z"] == pytest.approx(1.033065 * 9.80665)
    assert all(
        m.timestamp()[1] == r.ts for m, r in zip(messages, got, strict=True)
    )  # Kafka time = event time


def test_replay_at_speed_10_takes_a_tenth_of_the_log_time(
    kafka_settings: KafkaSettings, tmp_path: Path
) -> None:
    rows = "\n".join(f"{T0 + i * 1000},{20 + i}" for i in range(4))
    (tmp_path / "log.csv").write_text(f"t,temp\n{rows}\n")
    (tmp_path / "m.yaml").write_text(
        "timestamp: {column: t, format: epoch_ms}\ndevice: {id: bench-1}\n"
        "sensors: {temperature: {columns: {value: temp}}}\n"
    )
    with Publisher(kafka_settings, create_topics=[kafka_settings.readings_topic]) as publisher:
        options = replay.ReplayOptions(speed=10.0)
        replayer = replay.Replayer(
            replay.load_mapping(tmp_path / "m.yaml"), ReadingPublisher(publisher), options
        )
        report = replayer.run(tmp_path / "log.csv", threading.Event())
    assert report.published == 4
    assert report.duration_s >= 0.3  # 3 s of log at 10x: paced, not as fast as possible
    assert [r.ts for r in readings(read(kafka_settings, kafka_settings.readings_topic, 4))] == [
        T0 + i * 1000 for i in range(4)
    ]


def test_an_unreachable_kafka_is_a_clear_error() -> None:
    dead = KafkaSettings(bootstrap_servers=f"127.0.0.1:{free_port()}")
    with pytest.raises(KafkaUnavailable, match="cannot reach Kafka"):
        Publisher(dead, create_topics=[dead.readings_topic], topics_timeout_s=1.0)


def test_telemon_iio_flushes_everything_on_sigterm(kafka_settings: KafkaSettings) -> None:
    proc = telemon_process(
        kafka_settings, "iio", "--root", str(FIXTURE), "--rate", "50", "--device-id", "pi-term"
    )
    try:
        assert len(read(kafka_settings, kafka_settings.readings_topic, 60, timeout_s=20)) >= 60
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    assert "received SIGTERM" in err
    published = int(out.split(" readings published")[0].rsplit(" ", 1)[1])
    assert len(read(kafka_settings, kafka_settings.readings_topic, published)) == published


@pytest.fixture
def keep_signal_handlers() -> Iterator[None]:
    """The in-process CLI installs SIGINT/SIGTERM handlers: put pytest's back afterwards."""
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    yield
    for sig, handler in saved.items():
        signal.signal(sig, handler)


@pytest.mark.usefixtures("keep_signal_handlers")
def test_telemon_replay_reports_bad_input_with_file_and_line(
    kafka_settings: KafkaSettings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "log.csv").write_text(f"t,temp\n{T0},20\n{T0 + 1000},warm\n")
    (tmp_path / "m.yaml").write_text(
        "timestamp: {column: t, format: epoch_ms}\ndevice: {id: cli-1}\n"
        "sensors: {temperature: {columns: {value: temp}}}\n"
    )
    base = ["replay", str(tmp_path / "log.csv"), "--mapping", str(tmp_path / "m.yaml"), "--speed", "0"]
    base += ["--bootstrap", kafka_settings.bootstrap_servers]
    assert cli.main([*base, "--strict"]) == 2
    assert f"{tmp_path / 'log.csv'}:3: temperature skipped: not a number: 'warm'" in capsys.readouterr().err
    assert cli.main(base) == 0
    out = capsys.readouterr().out
    assert "2 rows, 1 readings published" in out and "1 readings skipped on 1 lines" in out
    (tmp_path / "m.yaml").write_text("timestamp: {column: t}\n")
    assert cli.main(base) == 2
    err = capsys.readouterr().err
    assert "m.yaml" in err and "device" in err


# --- MQTT bridge -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mqtt_broker() -> tuple[str, int]:
    host, _, port = os.environ.get("TEST_MQTT_BROKER", "127.0.0.1:1883").partition(":")
    try:
        socket.create_connection((host, int(port)), timeout=2).close()
    except OSError as exc:
        pytest.fail(
            f"no MQTT broker at {host}:{port} ({exc}): run the tests with scripts/test-services "
            "(make test does)"
        )
    return host, int(port)


def publish(broker: tuple[str, int], messages: list[tuple[str, bytes]], qos: int = 1) -> None:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=unique("pub"))
    client.connect(*broker)
    client.loop_start()
    try:
        infos = [client.publish(topic, payload, qos=qos) for topic, payload in messages]
        for info in infos:
            info.wait_for_publish(10)
    finally:
        client.disconnect()
        client.loop_stop()


def drop_session(broker: tuple[str, int], client_id: str) -> None:
    """Connect with a clean session: the broker forgets the persistent one."""
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=True)
    client.connect(*broker)
    client.disconnect()


@contextmanager
def bridge_running(kafka: KafkaSettings, options: MqttOptions, **kwargs: Any) -> Iterator[dict[str, Any]]:
    """``run_bridge`` in a thread; yields once subscribed: ``bridge``, then ``report`` or ``error``."""
    stop, ready, out = threading.Event(), threading.Event(), {}

    def on_ready(b: Bridge) -> None:
        out["bridge"] = b
        ready.set()

    def target() -> None:
        try:
            out["report"] = mqtt_bridge.run_bridge(kafka, options, stop, on_ready=on_ready, **kwargs)
        except Exception as exc:
            out["error"] = exc
            ready.set()

    thread = threading.Thread(target=target)
    thread.start()
    try:
        assert ready.wait(20) and "error" not in out, out.get("error")
        yield out
    finally:
        stop.set()
        thread.join(30)


def wait_for(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert condition()


def test_bridge_forwards_valid_readings_and_dead_letters_invalid_ones(
    kafka_settings: KafkaSettings, mqtt_broker: tuple[str, int]
) -> None:
    root = unique("telemetry")
    options = MqttOptions(*mqtt_broker, topic=f"{root}/+/+", client_id=unique("bridge"))
    valid = [
        (f"{root}/{dev}/temperature", encode_reading(dev, "temperature", T0 + i, i, {"value": 20.0 + i / 10}))
        for i in range(60)
        for dev in [f"edge-{i % 3}"]
    ]
    ok = encode_reading("edge-0", "temperature", T0, 99, {"value": 21.0})
    invalid = [
        (f"{root}/edge-0/temperature", b'{"device_id": "edge-0", '),  # truncated JSON
        (f"{root}/edge-1/temperature", ok),  # topic names another device
        (f"{root}/edge-0/humidity", ok),  # topic names another sensor
        (f"{root}/edge-0/temperature", encode_reading("edge-0", "temperature", T0, 1, {"value": 999.0})),
        (
            f"{root}/edge-0/temperature",
            encode_reading("edge-0", "temperature", T0, 1, {"value": 20.0}, "degF"),
        ),
    ]
    try:
        with bridge_running(kafka_settings, options) as run:
            publish(mqtt_broker, valid[:30] + invalid + valid[30:])
            wait_for(lambda: run["bridge"].acks.acked == 65)
        report: BridgeReport = run["report"]
    finally:
        drop_session(mqtt_broker, options.client_id)
    assert (report.forwarded, report.dead_lettered, report.acknowledged, report.not_acknowledged) == (
        60,
        5,
        65,
        0,
    )

    forwarded = read(kafka_settings, kafka_settings.readings_topic, 60)
    assert sorted(m.value() for m in forwarded) == sorted(payload for _, payload in valid)  # unchanged, once
    assert all(r.device_id.encode() == m.key() for m, r in zip(forwarded, readings(forwarded), strict=True))
    for device in ("edge-0", "edge-1", "edge-2"):
        seqs = [r.seq for r in readings(forwarded) if r.device_id == device]
        assert seqs == sorted(seqs) and len(seqs) == 20  # per-key order kept

    dead = read(kafka_settings, kafka_settings.dead_letter_topic, 5)
    headers = [dict(m.headers() or []) for m in dead]
    assert sorted(h["telemon.reason"].decode() for h in headers) == sorted(
        ["invalid_json", "key_mismatch", "key_mismatch", "out_of_range", "wrong_unit"]
    )
    by_reason = {h["telemon.reason"]: (m, h) for m, h in zip(dead, headers, strict=True)}
    message, h = by_reason[b"out_of_range"]
    assert message.key() == b"edge-0" and message.value() == invalid[3][1]
    assert h["telemon.mqtt_topic"] == f"{root}/edge-0/temperature".encode()
    assert b"values.value=999.0" in h["telemon.detail"]
    details = sorted(h["telemon.detail"] for h in headers if h["telemon.reason"] == b"key_mismatch")
    assert b"names device 'edge-1'" in details[1] and b"names sensor 'humidity'" in details[0]


def test_bridge_acknowledges_only_after_kafka_delivery(
    kafka_settings: KafkaSettings, mqtt_broker: tuple[str, int]
) -> None:
    """A bridge whose Kafka is unreachable forwards but never acknowledges: a fixed one gets the messages."""
    root = unique("telemetry")
    options = MqttOptions(*mqtt_broker, topic=f"{root}/+/+", client_id=unique("bridge"))
    messages = [
        (f"{root}/edge-9/pressure", encode_reading("edge-9", "pressure", T0 + i, i, {"value": 1000.0 + i}))
        for i in range(5)
    ]
    dead_kafka = kafka_settings.model_copy(update={"bootstrap_servers": f"127.0.0.1:{free_port()}"})
    try:
        with bridge_running(dead_kafka, options, create_topics=False, flush_timeout_s=1.0) as broken:
            publish(mqtt_broker, messages)
            wait_for(lambda: broken["bridge"].report.forwarded == 5)
            assert broken["bridge"].acks.acked == 0
        assert isinstance(broken.get("error"), KafkaUnavailable)  # stopping could not deliver: exit 1
        assert broken["bridge"].report.not_acknowledged == 5 and broken["bridge"].acks.acked == 0

        with bridge_running(kafka_settings, options) as fixed:  # same session: redelivered
            wait_for(lambda: fixed["bridge"].acks.acked == 5)
        assert fixed["report"].forwarded == 5
        assert sorted(m.value() for m in read(kafka_settings, kafka_settings.readings_topic, 5)) == sorted(
            p for _, p in messages
        )
        assert _redelivered(mqtt_broker, options.client_id) == 0  # the fixed bridge's PUBACKs stuck
    finally:
        drop_session(mqtt_broker, options.client_id)


def _redelivered(broker: tuple[str, int], client_id: str, wait_s: float = 0.5) -> int:
    """How many messages the broker still holds for a persistent session (resumed without acking)."""
    got: list[int] = []
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False, manual_ack=True
    )
    client.on_message = lambda _c, _u, msg: got.append(msg.mid)
    client.connect(*broker)
    client.loop_start()
    time.sleep(wait_s)
    client.disconnect()
    client.loop_stop()
    return len(got)


def test_an_unreachable_mqtt_broker_is_a_clear_error(kafka_settings: KafkaSettings) -> None:
    options = MqttOptions(port=free_port(), client_id=unique("bridge"))
    with pytest.raises(errors.MqttUnavailable, match=r"cannot reach the MQTT broker at 127\.0\.0\.1"):
        mqtt_bridge.run_bridge(kafka_settings, options, threading.Event())


# --- the bridge's building blocks ------------------------------------------------------------------


def test_topic_layout_names_device_and_sensor_by_the_wildcards() -> None:
    assert TopicLayout("telemetry/+/+").parse("telemetry/pi-1/humidity") == ("pi-1", "humidity")
    assert TopicLayout("site/+/devices/+/#").parse("site/a/devices/pi-2/x/y") == ("a", "pi-2")
    assert TopicLayout("telemetry/+").parse("telemetry/pi-3") == ("pi-3", None)
    assert TopicLayout("telemetry/#").parse("telemetry/pi-3/x") == (None, None)
    for bad in ("telemetry/a+/b", "telemetry/#/x", "telemetry/x#"):
        with pytest.raises(ValueError, match="invalid MQTT topic filter"):
            TopicLayout(bad)


def test_check_validates_payload_against_the_topic() -> None:
    layout = TopicLayout("t/+/+")
    raw = encode_reading("pi-1", "humidity", T0, 0, {"value": 40.0})
    assert isinstance(mqtt_bridge.check(raw, "t/pi-1/humidity", layout), Reading)
    for topic, reason in (("t/pi-2/humidity", Reason.KEY_MISMATCH), ("t/pi-1/pressure", Reason.KEY_MISMATCH)):
        result = mqtt_bridge.check(raw, topic, layout)
        assert isinstance(result, Rejection) and result.reason is reason
    oversize = mqtt_bridge.check(raw, "t/pi-1/humidity", layout, max_bytes=20)
    assert isinstance(oversize, Rejection) and oversize.reason is Reason.OVERSIZE


def test_ack_queue_releases_acknowledgements_in_arrival_order() -> None:
    acked: list[int] = []
    q = AckQueue(lambda mid, _qos: acked.append(mid))
    a, b, c = q.add(1), q.add(2), q.add(3)
    q.done(b)
    assert acked == []  # 1 is not delivered yet: MQTT acknowledges in order
    q.done(a)
    assert acked == [1, 2]
    stale = q.add(4)
    q.reset()  # reconnected: the broker resends 3 and 4, the old acknowledgements are void
    q.done(c)
    q.done(stale)
    assert acked == [1, 2] and len(q) == 0 and q.acked == 2
