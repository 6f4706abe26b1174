"""The chaos harness: the monitor under faults, compared with a fault-free run (the oracle).

Every experiment runs the monitor (``telemon run`` processes) over one seeded simulated stream
with faults, and once without (the oracle), each run with its own consumer group, output topics
and state directory. A run ends with SIGTERM once it has committed the whole stream, which
snapshots every partition; the comparison then reads both snapshot directories and alert topics:

- readings applied (lost = oracle - faulty, from the per-pair reading counts);
- per-device state: equal digests of everything kept about the device
  (:func:`monitor.state.snapshot.fingerprints`);
- device-scope alert records: equal sets of (alert id, status) (fleet-scope alerts pool the
  partitions in the order batches happen to interleave them, so they are reported, not compared).

A faulty run may read a *copy* of the stream (:class:`Feed`): the same scenario published again,
message for message, to another topic at a chosen pace. Same keys, values and timestamps through
the same partitioner in the same order give the same partitions and offsets, so the copy is the
same stream to the monitor and compares with the original's oracle; the pace lets faults land
while the stream is still flowing.

Experiments:

- ``kill``: kill -9 the monitor N times at random progress points;
- ``replicas``: two replicas sharing a snapshot directory, with join / leave (SIGTERM) /
  kill -9 churn while the stream flows in;
- ``broker``: mid-stream, the broker (Apache Kafka) frozen (SIGSTOP) or stopped and restarted
  (every connection closed and refused for the outage, data kept: :class:`RelayedBroker`): the service
  stays live, reports degraded, resumes after recovery and loses nothing;
- ``crash``: mid-stream, the broker's JVM killed (SIGKILL) and restarted on its log directory,
  once or several times, while a producer with acks=all and idempotence feeds the stream:
  nothing it had acknowledged is lost, nothing is written twice, and the run equals the oracle;
- ``sink``: Alertmanager down when the planted drift's alert fires: degraded, offsets held below
  the undelivered alerts, then delivered, committed to the end and equal to the oracle (the
  device-scope rules only: :func:`device_rules`).

``scripts/chaos`` runs the long variants against one Apache Kafka (:class:`RelayedBroker`: the
stream experiments reach it directly, the outage ones through the relay) and prints the figures,
the broker's name and version first; ``tests/integration/test_chaos.py`` runs short ones.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import yaml
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka import Message as KafkaMessage
from confluent_kafka.admin import AdminClient

from monitor.cli.broker import free_port
from monitor.govern.alerts import Alert
from monitor.govern.alerts import decode as decode_alert
from monitor.ingest.kafka import DeliveryTracker, ensure_topics, flush, produce, producer_config
from monitor.serve.changelog import Changelog
from monitor.settings import KafkaSettings
from monitor.state import snapshot
from monitor.state.snapshot import SnapshotStore
from producers.scenario import Scenario, load_scenario
from producers.simulate import Message, simulate, stream
from tests.apache_kafka import ApacheKafka

ROOT = Path(__file__).resolve().parents[1]
SNAPSHOT_KEY = b"chaos-harness-signing-key-0123456789abcdef"
PLANTED = (3, "temperature")  # the planted drift: device index, sensor
RESUME_LIMIT_S = 15.0
_runs = itertools.count()
_started: list[subprocess.Popen[str]] = []  # every monitor process, so that none outlives a failure

Offsets = dict[int, int]  # partition -> next offset
Proc = subprocess.Popen[str]


def stream_settings(bootstrap_servers: str, name: str, partitions: int = 4) -> KafkaSettings:
    return KafkaSettings(
        bootstrap_servers=bootstrap_servers,
        readings_topic=f"{name}.readings",
        truth_topic=f"{name}.truth",
        partitions=partitions,
        session_timeout_ms=3000,
    )


def scenario(devices: int, duration_s: int, seed: int = 7, prefix: str = "dev-") -> Scenario:
    """The seeded stream: the demo fleet with an abrupt +6 degC shift planted on device 3's
    temperature half-way through (``prefix`` names the devices, so two streams can be told apart)."""
    device, sensor = PLANTED
    shift = {"kind": "abrupt_shift", "device": device, "sensor": sensor, "start_s": duration_s // 2}
    return load_scenario(
        ROOT / "configs/scenarios/demo.yaml",
        devices=devices,
        duration_s=duration_s,
        seed=seed,
        events=[shift | {"magnitude": 6.0}] if devices > device else [],
        device_prefix=prefix,
    )


def drift_start_ts(source: Scenario) -> int:
    return source.start_ts + int(source.duration_s // 2) * 1000


def joined(first: Offsets, second: Offsets) -> Offsets:
    """The ends of a topic after two publications."""
    return {p: max(first.get(p, 0), second.get(p, 0)) for p in first.keys() | second.keys()}


class Feed:
    """A scenario published, message by message, to ``kafka.readings_topic``: with the producer
    settings and order of :func:`producers.simulate.simulate`, every message lands on the
    partition and offset it has in any other publication of the scenario."""

    def __init__(self, kafka: KafkaSettings, source: Scenario) -> None:
        ensure_topics(kafka, [kafka.readings_topic])
        self.kafka = kafka
        self._messages = stream(source)
        self._next: Message | None = next(self._messages, None)
        self._producer = Producer(producer_config(kafka))
        self._tracker = DeliveryTracker()

    def send(self, until_ts: int | None = None, rate: float | None = None) -> Offsets:
        """Publish the messages up to event time ``until_ts`` (None: all), at most ``rate`` per
        second; wait for their acknowledgements and return the ends published so far."""
        began, sent = time.monotonic(), 0
        topic = self.kafka.readings_topic
        while self._next is not None and (until_ts is None or self._next.ts <= until_ts):
            m = self._next
            produce(self._producer, self._tracker, topic, key=m.key, value=m.value, timestamp=m.ts)
            sent += 1
            self._next = next(self._messages, None)
            if rate is not None and sent % 200 == 0:
                self._producer.poll(0)
                time.sleep(max(0.0, began + sent / rate - time.monotonic()))
        flush(self._producer, self._tracker, 60)
        return {p: o + 1 for (t, p), o in self._tracker.last_offsets.items() if t == topic}


def publish(kafka: KafkaSettings, source: Scenario) -> Offsets:
    """Publish the whole scenario (ground truth included) and return the topic's ends."""
    return {p: o + 1 for p, o in simulate(kafka, source).last_offsets.items()}


# --- monitor runs ------------------------------------------------------------------------------


GUARANTEE = "TELEMON_PROCESSING__GUARANTEE"
#: The settings of a run under processing.guarantee exactly_once.
EXACTLY_ONCE = {GUARANTEE: "exactly_once"}


def under(guarantee: str, experiment: Callable[[], Result]) -> Callable[[], Result]:
    """``experiment`` with every monitor it starts under ``processing.guarantee: guarantee``."""

    def run() -> Result:
        os.environ[GUARANTEE] = guarantee
        try:
            return experiment()
        finally:
            os.environ.pop(GUARANTEE, None)

    return run


def apart(name: str) -> str:
    """``name``, set apart for the runs under exactly_once (:func:`under`): a stream copied or
    published again per guarantee needs topics of its own."""
    return f"{name}-eos" if os.environ.get(GUARANTEE) == "exactly_once" else name


@dataclass
class Run:
    """One monitor run over the stream: its own group, output topics and state directory."""

    stream: KafkaSettings
    workdir: Path
    name: str = field(default_factory=lambda: f"run{next(_runs)}")
    env: dict[str, str] = field(default_factory=dict)
    port: int = 0  # the metrics port of the last process started
    separate_disks: bool = False
    started: int = 0  # processes started
    _alerts: list[Alert] | None = None

    def __post_init__(self) -> None:
        """A run under exactly_once (its ``env``, or the harness's: :func:`under`) is named apart."""
        if self.exactly_once and not self.name.endswith("-eos"):
            self.name += "-eos"

    @property
    def exactly_once(self) -> bool:
        return (self.env.get(GUARANTEE) or os.environ.get(GUARANTEE)) == "exactly_once"

    @property
    def kafka(self) -> KafkaSettings:
        s = self.stream
        return s.model_copy(
            update={
                "group_id": f"{s.readings_topic}.{self.name}",
                "dead_letter_topic": f"{s.readings_topic}.{self.name}.dlq",
                "alerts_topic": f"{s.readings_topic}.{self.name}.alerts",
                "models_topic": f"{s.readings_topic}.{self.name}.models",
                "audit_topic": f"{s.readings_topic}.{self.name}.audit",
                "feedback_topic": f"{s.readings_topic}.{self.name}.feedback",
                "state_topic": f"{s.readings_topic}.{self.name}.state",
                "fleet_topic": f"{s.readings_topic}.{self.name}.fleet",
            }
        )

    @property
    def state_dir(self) -> Path:
        """The state folder of the next process: one per process with ``separate_disks`` (replicas
        on machines of their own, sharing nothing but Kafka), else one for the run."""
        if self.separate_disks:
            return self.workdir / self.name / f"process-{self.started}"
        return self.workdir / self.name

    @property
    def log(self) -> Path:
        return self.workdir / f"{self.name}.log"

    def start(self) -> Proc:
        """``telemon run`` as a process (its output goes to :attr:`log`)."""
        environ = dict(os.environ) | self.env
        for key, value in self.kafka.model_dump(exclude_none=True).items():
            if isinstance(value, str | int):
                environ[f"TELEMON_KAFKA__{key.upper()}"] = str(value)
        self.port = free_port()
        environ |= {
            "TELEMON_REGISTRY__SIGNING_KEY": SNAPSHOT_KEY.decode(),
            "TELEMON_STATE_DIR": str(self.state_dir),
            "TELEMON_METRICS__PORT": str(self.port),
            "TELEMON_CONSUME__BATCH_SIZE": environ.get("TELEMON_CONSUME__BATCH_SIZE", "500"),
            "TELEMON_STATE__SNAPSHOT_INTERVAL_S": environ.get("TELEMON_STATE__SNAPSHOT_INTERVAL_S", "0.3"),
        }
        self.state_dir.mkdir(parents=True, exist_ok=True)
        cmd = [
            sys.executable,
            "-m",
            "monitor.cli.main",
            "run",
            "--config",
            str(ROOT / "configs/monitor.yaml"),
        ]
        with self.log.open("a") as log:
            proc = subprocess.Popen(cmd, env=environ, stdout=log, stderr=log, text=True, cwd=ROOT)
        _started.append(proc)
        self.started += 1
        return proc

    def committed(self, partitions: list[int]) -> Offsets:
        return committed(self.kafka, partitions)

    def wait_committed(self, expected: Offsets, timeout: float) -> float:
        """Seconds until the group committed ``expected`` (partition -> next offset)."""
        began = time.monotonic()
        while self.committed(list(expected)) != expected:
            if time.monotonic() - began > timeout:
                got = self.committed(list(expected))
                raise TimeoutError(f"{self.name}: committed {got}, expected {expected} after {timeout}s")
            time.sleep(0.2)
        return time.monotonic() - began

    def progress(self, expected: Offsets) -> float:
        """Fraction of the stream committed."""
        got = self.committed(list(expected))
        return sum(max(got[p], 0) for p in expected) / sum(expected.values())

    def readiness(self) -> tuple[int, dict[str, Any]]:
        return probe(self.port, "/readyz")

    def alerts(self) -> list[Alert]:
        """Every record on the run's alerts topic (read once)."""
        if self._alerts is None:
            self._alerts = [decode_alert(v) for v in _read_all(self.kafka)]
        return self._alerts

    def snapshots(self) -> list[snapshot.PartitionSnapshot]:
        """The latest state of every partition, as the changelog holds it (or, with
        ``state.changelog`` off, the shared snapshot folder)."""
        k = self.kafka
        if self.env.get("TELEMON_STATE__CHANGELOG") == "false":
            return list(SnapshotStore(self.state_dir / "snapshots" / k.group_id, SNAPSHOT_KEY))
        log = Changelog(k, k.group_id, timeout_s=30)
        try:
            found = [log.read(k.readings_topic, p)[1] for p in range(k.partitions)]
        finally:
            log.close()
        return [snapshot.decode(data, SNAPSHOT_KEY) for data in found if data is not None]

    def states(self) -> dict[str, str]:
        return snapshot.fingerprints(self.snapshots())

    def applied(self) -> int:
        return sum(int(snap.state.devices.arrays["raw_n"].sum()) for snap in self.snapshots())


def _read_all(k: KafkaSettings, quiet_s: float = 2.0) -> Iterator[bytes]:
    """Every committed value of ``k.alerts_topic`` (isolation.level read_committed), read until it
    has been quiet for ``quiet_s``."""
    conf = {"group.id": f"{k.group_id}.reader", "isolation.level": "read_committed"}
    c = Consumer({"bootstrap.servers": k.bootstrap_servers, **conf})
    try:
        md = c.list_topics(k.alerts_topic, timeout=10).topics[k.alerts_topic]
        c.assign([TopicPartition(k.alerts_topic, p, 0) for p in md.partitions])
        last = time.monotonic()
        while time.monotonic() - last < quiet_s:
            m = c.poll(0.2)
            if m is not None and m.error() is None and m.value() is not None:
                last = time.monotonic()
                yield m.value()  # type: ignore[misc]
    finally:
        c.close()


def probe(port: int, path: str) -> tuple[int, dict[str, Any]]:
    """(HTTP status, JSON body) of a health probe; (0, {}) if nothing answers."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
            return int(r.status), json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())
    except OSError:
        return 0, {}


def stop(proc: Proc, timeout: float = 60) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise


def kill(proc: Proc) -> None:
    proc.kill()
    proc.wait()


def reap() -> None:
    """Kill the monitor processes still running: those an experiment that failed left behind."""
    while _started:
        proc = _started.pop()
        if proc.poll() is None:
            kill(proc)


def committed(k: KafkaSettings, partitions: list[int]) -> Offsets:
    """The group's committed offsets of ``partitions`` of the readings topic (-1001: none)."""
    c = Consumer({"bootstrap.servers": k.bootstrap_servers, "group.id": k.group_id})
    try:
        tps = c.committed([TopicPartition(k.readings_topic, p) for p in partitions], timeout=10)
    finally:
        c.close()
    return {tp.partition: tp.offset for tp in tps}


def finish(run: Run, procs: list[Proc], expected: Offsets, timeout: float) -> float:
    """Let the run commit everything and its state catch up with it, then stop it cleanly.

    Committed offsets alone do not say the state is complete: a replica killed right after its
    last commit leaves a partition whose snapshot is older, until a survivor is assigned the
    partition and re-applies the rest. So the run is done once every partition's snapshot is at
    the end of the stream too."""
    took = run.wait_committed(expected, timeout)
    deadline = time.monotonic() + timeout
    while not _snapshotted(run, expected):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{run.name}: the partition snapshots did not reach {expected} in {timeout}s")
        time.sleep(0.2)
    for p in procs:
        if p.poll() is None and stop(p) != 0:
            raise RuntimeError(f"{run.name} exited with {p.returncode}: see {run.log}")
    return took


def _snapshotted(run: Run, expected: Offsets) -> bool:
    at = {snap.partition: snap.next_offset for snap in run.snapshots()}
    return all(at.get(p) == offset for p, offset in expected.items())


def run_oracle(
    stream: KafkaSettings,
    workdir: Path,
    expected: Offsets,
    timeout: float = 300,
    env: dict[str, str] | None = None,
) -> Run:
    """The fault-free run of ``stream`` (its alerts are read at once)."""
    oracle = Run(stream, workdir, name=f"oracle-{stream.readings_topic}", env=env or {})
    finish(oracle, [oracle.start()], expected, timeout)
    oracle.alerts()
    return oracle


def _wait_progress(run: Run, expected: Offsets, target: float, proc: Proc) -> None:
    """Wait until ``target`` of the stream is committed (or the run is done)."""
    deadline = time.monotonic() + 120
    while run.progress(expected) < target and time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{run.name} died on its own: see {run.log}")
        time.sleep(0.05)


# --- comparison with the oracle ----------------------------------------------------------------


@dataclass
class Comparison:
    """A faulty run against the oracle."""

    experiment: str
    faults: int
    oracle_applied: int
    applied: int
    devices: int
    devices_differing: list[str]
    alerts_missing: set[str]
    alerts_extra: set[str]
    alert_records: int  # device-scope records delivered, duplicates included
    alert_ids: int
    fleet_alerts: tuple[int, int]  # (oracle, faulty) fleet-scope records
    seconds: float

    @property
    def lost(self) -> int:
        return self.oracle_applied - self.applied

    @property
    def ok(self) -> bool:
        return not (self.lost or self.devices_differing or self.alerts_missing or self.alerts_extra)

    def lines(self) -> list[str]:
        equal = self.devices - len(self.devices_differing)
        differing = f" (differing: {', '.join(self.devices_differing[:5])})" if self.devices_differing else ""
        return [
            f"{self.experiment}: {'PASS' if self.ok else 'FAIL'} ({self.faults} faults, {self.seconds:.1f}s)",
            f"  readings applied: oracle {self.oracle_applied}, faulty {self.applied}, lost {self.lost}",
            f"  device states equal to the oracle's: {equal}/{self.devices}{differing}",
            f"  device-scope alert records: {self.alert_ids} unique in {self.alert_records} "
            f"({self.alert_records - self.alert_ids} re-deliveries), missing {len(self.alerts_missing)}"
            f"{_some(self.alerts_missing)}, extra {len(self.alerts_extra)}{_some(self.alerts_extra)}",
            f"  fleet-scope alert records (order dependent, not compared): "
            f"oracle {self.fleet_alerts[0]}, faulty {self.fleet_alerts[1]}",
        ]


def _some(items: set[str]) -> str:
    return f" {sorted(items)[:3]}" if items else ""


def compare(experiment: str, faults: int, oracle: Run, faulty: Run, seconds: float) -> Comparison:
    if faulty.exactly_once:
        experiment += " (exactly_once)"
    want, got = oracle.states(), faulty.states()
    want_ids = {(a.alert_id, a.status) for a in oracle.alerts() if a.scope == "device"}
    got_records = [(a.alert_id, a.status) for a in faulty.alerts() if a.scope == "device"]
    return Comparison(
        experiment=experiment,
        faults=faults,
        oracle_applied=oracle.applied(),
        applied=faulty.applied(),
        devices=len(want),
        devices_differing=sorted(d for d in want.keys() | got.keys() if want.get(d) != got.get(d)),
        alerts_missing={f"{i}/{st}" for i, st in want_ids - set(got_records)},
        alerts_extra={f"{i}/{st}" for i, st in set(got_records) - want_ids},
        alert_records=len(got_records),
        alert_ids=len(set(got_records)),
        fleet_alerts=(
            sum(a.scope != "device" for a in oracle.alerts()),
            sum(a.scope != "device" for a in faulty.alerts()),
        ),
        seconds=seconds,
    )


# --- a. kill -9 -------------------------------------------------------------------------------


def kill_experiment(
    stream: KafkaSettings,
    workdir: Path,
    oracle: Run,
    expected: Offsets,
    kills: int,
    rng: random.Random,
    env: dict[str, str] | None = None,
) -> Comparison:
    """kill -9 the monitor ``kills`` times, each at a random point of its progress (``env``: its
    settings, e.g. :data:`EXACTLY_ONCE`)."""
    began = time.monotonic()
    faulty = Run(stream, workdir, name="kill", env=env or {})
    for point in sorted(rng.uniform(0.05, 0.95) for _ in range(kills)):
        proc = faulty.start()
        _wait_progress(faulty, expected, point, proc)
        time.sleep(rng.uniform(0, 0.3))  # not only right after a commit
        kill(proc)
    finish(faulty, [faulty.start()], expected, timeout=300)
    return compare("kill -9", kills, oracle, faulty, time.monotonic() - began)


# --- b. replicas with membership churn ---------------------------------------------------------


def replica_experiment(
    stream: KafkaSettings,
    workdir: Path,
    oracle: Run,
    source: Scenario,
    expected: Offsets,
    actions: int,
    rng: random.Random,
    feed_s: float = 20.0,
) -> Comparison:
    """Two replicas, each process with a state folder of its own (state moves through the changelog
    alone), while a copy of the stream flows in over ``feed_s`` seconds; at random moments a
    replica joins (while fewer than two run), leaves (SIGTERM) or is killed (kill -9)."""
    began = time.monotonic()
    copy = stream.model_copy(update={"readings_topic": apart(f"{stream.readings_topic}.replicas")})
    faulty = Run(copy, workdir, name="replicas", separate_disks=True)
    feed = Feed(faulty.stream, source)
    feeder = threading.Thread(target=feed.send, kwargs={"rate": sum(expected.values()) / feed_s}, daemon=True)
    procs = [faulty.start()]
    feeder.start()
    done: list[str] = []
    for _ in range(actions):
        time.sleep(rng.uniform(0.3, 1.7 * feed_s / actions))
        done.append(_churn(faulty, procs, rng))
    feeder.join()
    if feed.send() != expected:  # everything acknowledged: the copy's ends
        raise RuntimeError("the copy of the stream did not land at the original's offsets")
    alive = [p for p in procs if p.poll() is None] or [faulty.start()]
    finish(faulty, alive, expected, timeout=300)
    counts = ", ".join(f"{done.count(a)} {a}" for a in ("join", "leave", "kill"))
    return compare(f"replica churn ({counts})", actions, oracle, faulty, time.monotonic() - began)


def scale_experiment(
    stream: KafkaSettings,
    workdir: Path,
    oracle: Run,
    source: Scenario,
    expected: Offsets,
    feed_s: float = 20.0,
    env: dict[str, str] | None = None,
) -> Comparison:
    """Scale out and in, 1 -> 2 -> 3 -> 2 -> 1 replicas, each process with a state folder of its
    own, while a copy of the stream flows in over ``feed_s`` seconds: every partition moves at
    least once, from Kafka alone. The first replica to go leaves with SIGTERM, the second is
    killed (kill -9)."""
    began = time.monotonic()
    copy = stream.model_copy(update={"readings_topic": apart(f"{stream.readings_topic}.scale")})
    faulty = Run(copy, workdir, name="scale", separate_disks=True, env=env or {})
    feed = Feed(faulty.stream, source)
    feeder = threading.Thread(target=feed.send, kwargs={"rate": sum(expected.values()) / feed_s}, daemon=True)
    procs = [faulty.start()]
    feeder.start()
    step = feed_s / 5
    for _ in range(2):  # out: 2, then 3 replicas
        time.sleep(step)
        procs.append(faulty.start())
    time.sleep(step)
    if stop(procs.pop(0)) != 0:  # in: 2 (the first replica leaves) ...
        raise RuntimeError(f"{faulty.name}: a replica exited with an error on SIGTERM: see {faulty.log}")
    time.sleep(step)
    kill(procs.pop(0))  # ... then 1 (the second is killed)
    feeder.join()
    if feed.send() != expected:
        raise RuntimeError("the copy of the stream did not land at the original's offsets")
    finish(faulty, procs, expected, timeout=300)
    return compare(
        "scale 1 -> 2 -> 3 -> 2 -> 1, no shared folder", 4, oracle, faulty, time.monotonic() - began
    )


def _churn(run: Run, procs: list[Proc], rng: random.Random) -> str:
    """One membership change: a join while fewer than two replicas run, else a leave or a kill."""
    alive = [p for p in procs if p.poll() is None]
    if len(alive) < 2:
        procs.append(run.start())
        return "join"
    action = rng.choice(["leave", "kill"])
    victim = rng.choice(alive)
    if action == "kill":
        kill(victim)
    elif stop(victim) != 0:
        raise RuntimeError(f"{run.name}: a replica exited with {victim.returncode} on SIGTERM: see {run.log}")
    return action


# --- c. broker outage --------------------------------------------------------------------------


class Relay:
    """A TCP relay on ``port`` to a broker on ``target``: :meth:`cut` closes every connection and
    refuses new ones, which is what clients see of a stopped broker; :meth:`restore` accepts again."""

    def __init__(self, port: int, target: int) -> None:
        self.port, self.target = port, target
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None

    def restore(self) -> None:
        listener = socket.create_server(("127.0.0.1", self.port))
        listener.settimeout(0.1)
        self._listener = listener
        self._thread = threading.Thread(target=self._accept, args=(listener,), daemon=True)
        self._thread.start()

    def cut(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None and self._thread is not None:
            self._thread.join()
            listener.close()
        with self._lock:
            sockets, self._sockets = self._sockets, set()
        for s in sockets:
            _close(s)

    def _accept(self, listener: socket.socket) -> None:
        while self._listener is listener:
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target))
            except OSError:
                _close(client)
                continue
            with self._lock:
                self._sockets |= {client, upstream}
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):  # cut, or closed by the other side
            while data := src.recv(1 << 16):
                dst.sendall(data)
        for s in (src, dst):
            _close(s)
            with self._lock:
                self._sockets.discard(s)


def _close(s: socket.socket) -> None:
    with contextlib.suppress(OSError):
        s.shutdown(socket.SHUT_RDWR)  # wakes a thread blocked reading it
    s.close()


class RelayedBroker:
    """Apache Kafka (:class:`tests.apache_kafka.ApacheKafka`) with a :class:`Relay` in front of
    it. Clients that bootstrap at :attr:`bootstrap_servers` are told the relay's address, so all
    their connections go through the relay, and cutting the relay stops the broker as far as
    they can tell while it keeps running; :attr:`kafka` is the broker itself, which can be
    frozen (SIGSTOP its :attr:`pid`), crashed (``kafka.kill()``) and restarted on the same log
    directory (``kafka.start()``), and which other clients reach directly
    (``kafka.bootstrap_servers``)."""

    def __init__(self, workdir: Path) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.kafka = ApacheKafka(workdir, relay_port=self.port)
        assert self.kafka.relayed_port is not None
        self.relay = Relay(self.port, self.kafka.relayed_port)

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.kafka.pid

    def describe(self) -> str:
        return f"{self.kafka.describe()}, a relay on {self.bootstrap_servers}"

    def heal(self) -> None:
        """Undo whatever fault an experiment that raised left: the broker thawed or started again,
        the relay restored."""
        if self.kafka.running:
            os.kill(self.kafka.pid, signal.SIGCONT)
        else:
            self.kafka.start()
        self.relay.restore()

    def __enter__(self) -> RelayedBroker:
        self.kafka.start()
        self.relay.restore()
        try:
            AdminClient({"bootstrap.servers": self.bootstrap_servers}).list_topics(timeout=20)
        except KafkaException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(
        self, typ: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.relay.cut()
        self.kafka.stop()


@dataclass
class OutageBench:
    """A relayed broker, two streams (the second from new devices, published after the outage)
    and their fault-free oracle: shared by the outage experiments."""

    broker: RelayedBroker
    workdir: Path
    first: Scenario
    second: Scenario
    oracle: Run


def outage_bench(
    broker: RelayedBroker, workdir: Path, devices: int = 4, duration_s: int = 120
) -> OutageBench:
    first, second = scenario(devices, duration_s, seed=1), scenario(devices, 30, seed=2, prefix="late-")
    kafka = stream_settings(broker.bootstrap_servers, "outage")
    expected = joined(Feed(kafka, first).send(), Feed(kafka, second).send())
    return OutageBench(broker, workdir, first, second, run_oracle(kafka, workdir, expected))


@dataclass
class Outage:
    """The broker down mid-stream, and what the monitor did about it."""

    kind: str
    outage_s: float
    live_throughout: bool
    degraded_after_s: float | None  # from the fault to /readyz reporting degraded
    resumed_s: float  # from the broker's recovery to the first commit after it
    caught_up_s: float  # from the broker's recovery to the whole stream committed
    exit_code: int
    comparison: Comparison

    @property
    def ok(self) -> bool:
        return (
            self.live_throughout
            and self.degraded_after_s is not None
            and self.resumed_s <= RESUME_LIMIT_S
            and self.exit_code == 0
            and self.comparison.ok
        )

    def lines(self) -> list[str]:
        degraded = "never" if self.degraded_after_s is None else f"{self.degraded_after_s:.1f}s in"
        return [
            f"broker {self.kind} for {self.outage_s:.0f}s mid-stream: {'PASS' if self.ok else 'FAIL'}",
            f"  /healthz 200 throughout: {self.live_throughout}; /readyz degraded: {degraded}; "
            f"exit code on SIGTERM: {self.exit_code}",
            f"  resumed {self.resumed_s:.1f}s after recovery (limit {RESUME_LIMIT_S:.0f}s); "
            f"caught up {self.caught_up_s:.1f}s after recovery",
            *self.comparison.lines()[1:],
        ]


def broker_experiment(bench: OutageBench, kind: str, outage_s: float) -> Outage:
    """The monitor consumes the first stream; a third of the way through, the broker is frozen
    (``sigstop``) or stopped (``restart``: the relay is cut) for ``outage_s``; after recovery
    the second stream is published. Compared with the bench's oracle.

    A commit in flight when the broker goes away holds the loop until the broker answers or the
    session times out, so readiness may only see a stalled loop, after a quarter of the liveness
    timeout: the run's liveness timeout is 2.5 x the outage (at least 8 s), so readiness fails at
    about 0.6 x the outage and liveness holds through it."""
    began = time.monotonic()
    liveness = max(8.0, 2.5 * outage_s)
    env = {"TELEMON_METRICS__LIVENESS_TIMEOUT_S": str(liveness)}
    kafka = stream_settings(bench.broker.bootstrap_servers, apart(f"outage-{kind}"))
    faulty = Run(kafka, bench.workdir, name=f"outage-{kind}", env=env)
    ahead = Feed(faulty.stream, bench.first).send()
    proc = faulty.start()
    _wait_progress(faulty, ahead, 0.3, proc)
    fault_at = time.monotonic()
    live, degraded_at = _outage(bench.broker, faulty, proc, kind, outage_s)
    recovered = time.monotonic()
    expected = joined(ahead, Feed(faulty.stream, bench.second).send())
    resumed = _wait_advance(faulty, faulty.committed(list(expected)), expected, timeout=60) - recovered
    caught_up = faulty.wait_committed(expected, timeout=120) + time.monotonic() - recovered
    code = stop(proc)
    comparison = compare(f"broker {kind}", 1, bench.oracle, faulty, time.monotonic() - began)
    degraded = None if degraded_at is None else degraded_at - fault_at
    return Outage(kind, outage_s, live, degraded, resumed, caught_up, code, comparison)


def _outage(
    broker: RelayedBroker, run: Run, proc: Proc, kind: str, outage_s: float
) -> tuple[bool, float | None]:
    """Take the broker down for ``outage_s``, probing the monitor; return (live at every probe,
    when /readyz first reported degraded)."""
    live, degraded_at = True, None
    pid = broker.pid
    if kind == "sigstop":
        os.kill(pid, signal.SIGSTOP)
    else:
        broker.relay.cut()
    end = time.monotonic() + outage_s
    try:
        while time.monotonic() < end:
            live &= probe(run.port, "/healthz")[0] == 200 and proc.poll() is None
            status, body = run.readiness()
            if degraded_at is None and status == 503 and body.get("degraded"):
                degraded_at = time.monotonic()
            time.sleep(0.25)
    finally:
        if kind == "sigstop":
            os.kill(pid, signal.SIGCONT)
        else:
            broker.relay.restore()
    return live, degraded_at


def _wait_advance(run: Run, before: Offsets, expected: Offsets, timeout: float) -> float:
    """The monotonic time at which the group's committed offsets first moved past ``before``
    (or reached ``expected``)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = run.committed(list(before))
        if now == expected or any(now[p] > before[p] for p in before):
            return time.monotonic()
        time.sleep(0.1)
    raise TimeoutError(f"{run.name}: no commit within {timeout}s of the broker's recovery: see {run.log}")


# --- e. broker crash (kill -9) and restart -----------------------------------------------------


class AckedFeed:
    """Streams published in order, as :class:`Feed` publishes one, by a producer that keeps every
    acknowledgement: acks=all, idempotence on (retries neither duplicate nor reorder), and a
    message timeout longer than any outage, so that librdkafka re-sends what a crashed broker
    never acknowledged; a message whose delivery still fails is produced again (:meth:`finish`)."""

    def __init__(self, kafka: KafkaSettings, sources: list[Scenario], timeout_s: float = 180) -> None:
        ensure_topics(kafka, [kafka.readings_topic])
        self.kafka = kafka
        self.messages = [m for source in sources for m in stream(source)]
        conf = {"enable.idempotence": True, "acks": "all", "message.timeout.ms": int(timeout_s * 1000)}
        conf |= {"log_level": 2}  # not every refused connection while the broker is down: the reports tell
        self._producer = Producer(producer_config(kafka) | conf)
        self.acked: dict[tuple[int, int], bytes] = {}  # (partition, offset) -> value
        self.failed: list[int] = []  # indices into messages
        self.resent = 0

    def send(self, rate: float) -> None:
        """Produce every message, at most ``rate`` per second (their reports come in :meth:`finish`)."""
        began = time.monotonic()
        for i in range(len(self.messages)):
            self._produce(i)
            if i % 200 == 199:
                self._producer.poll(0)
                time.sleep(max(0.0, began + (i + 1) / rate - time.monotonic()))

    def finish(self, timeout: float) -> Offsets:
        """Wait for every report, produce the failed messages again until none fails, and return
        the topic's ends."""
        deadline = time.monotonic() + timeout
        while True:
            if self._producer.flush(max(0.0, deadline - time.monotonic())):
                raise TimeoutError(f"{self.kafka.readings_topic}: reports still missing after {timeout}s")
            failed, self.failed = self.failed, []
            if not failed:
                break
            self.resent += len(failed)
            for i in failed:
                self._produce(i)
        ends: Offsets = {}
        for p, o in self.acked:
            ends[p] = max(ends.get(p, 0), o + 1)
        return ends

    def _produce(self, i: int) -> None:
        m = self.messages[i]

        def report(err: KafkaError | None, msg: KafkaMessage) -> None:
            if err is None:
                self.acked[(int(msg.partition() or 0), int(msg.offset() or 0))] = m.value
            else:
                self.failed.append(i)

        while True:
            try:
                self._producer.produce(
                    self.kafka.readings_topic, key=m.key, value=m.value, timestamp=m.ts, on_delivery=report
                )
                return
            except BufferError:
                self._producer.poll(0.05)


def on_topic(
    kafka: KafkaSettings, acked: dict[tuple[int, int], bytes], sent: list[bytes], timeout: float = 120
) -> tuple[int, int]:
    """(acknowledged messages not at their offset of ``kafka.readings_topic``, messages on it
    more often than they were ``sent``), reading the topic from the beginning to its ends."""
    c = Consumer({"bootstrap.servers": kafka.bootstrap_servers, "group.id": f"{kafka.readings_topic}.audit"})
    found: dict[tuple[int, int], bytes] = {}
    deadline = time.monotonic() + timeout
    try:
        ends = {
            p: c.get_watermark_offsets(TopicPartition(kafka.readings_topic, p), timeout=10)[1]
            for p in range(kafka.partitions)
        }
        c.assign([TopicPartition(kafka.readings_topic, p, 0) for p, end in ends.items() if end > 0])
        while len(found) < sum(ends.values()):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{kafka.readings_topic}: read {len(found)} of {ends} in {timeout}s")
            for m in c.consume(1000, 1.0):
                if m.error() is None:
                    found[(int(m.partition() or 0), int(m.offset() or 0))] = m.value() or b""
    finally:
        c.close()
    lost = sum(found.get(at) != value for at, value in acked.items())
    return lost, (Counter(found.values()) - Counter(sent)).total()


@dataclass
class Crashes:
    """The broker's JVM killed (kill -9) mid-stream and restarted on its log directory."""

    planned: int  # kills planned; those done (:attr:`kills`) land while the stream flows in
    down_s: list[float]  # per kill: from the kill to the broker answering again
    acknowledged: int  # messages whose delivery report succeeded (re-sends included)
    resent: int  # messages produced again after their delivery failed
    lost: int  # acknowledged messages not on the topic at their offset
    duplicates: int  # messages on the topic more often than the stream has them
    recovery_s: list[float]  # per kill: from the broker answering again to the monitor's next commit
    caught_up_s: float  # from the last restart or acknowledgement (the later) to the stream committed
    exit_code: int
    comparison: Comparison

    @property
    def kills(self) -> int:
        return len(self.down_s)

    @property
    def duplicates_applied(self) -> int:
        return max(0, -self.comparison.lost)

    @property
    def ok(self) -> bool:
        return self.kills > 0 and self.lost == 0 and self.exit_code == 0 and self.comparison.ok

    def lines(self) -> list[str]:
        c = self.comparison
        return [
            f"broker kill -9 and restart mid-stream, {self.kills} of {self.planned} kills: "
            f"{'PASS' if self.ok else 'FAIL'} ({c.seconds:.1f}s)",
            f"  down {sum(self.down_s):.1f}s in all (per kill {_seconds(self.down_s)}); the monitor's next "
            f"commit {_seconds(self.recovery_s)} after each restart; all committed {self.caught_up_s:.1f}s "
            "after the last restart or acknowledgement",
            f"  producer: {self.acknowledged} acknowledged, {self.resent} re-sent after a failed delivery; "
            f"acknowledged but not on the topic: {self.lost}; on the topic twice: {self.duplicates}",
            f"  readings applied: oracle {c.oracle_applied}, faulty {c.applied}, lost {max(0, c.lost)}, "
            f"duplicates applied {self.duplicates_applied}; exit code on SIGTERM: {self.exit_code}",
            *c.lines()[2:],
        ]


def _committed_now(run: Run, partitions: list[int]) -> Offsets:
    """The group's committed offsets, asking again while a restarted broker is not ready to say."""
    deadline = time.monotonic() + 60
    while True:
        try:
            return run.committed(partitions)
        except KafkaException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _next_commit(run: Run, before: Offsets, timeout: float) -> float:
    """The monotonic time at which the group's committed offsets first moved past ``before``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        now = _committed_now(run, list(before))
        if any(now[p] > before[p] for p in before):
            return time.monotonic()
        time.sleep(0.1)
    raise TimeoutError(f"{run.name}: no commit within {timeout}s: see {run.log}")


def _seconds(values: list[float]) -> str:
    return "/".join(f"{v:.1f}s" for v in values) or "-"


def crash_experiment(
    bench: OutageBench, kills: int, down_s: float, feed_s: float, rng: random.Random
) -> Crashes:
    """The bench's two streams flow in over ``feed_s`` (one producer, :class:`AckedFeed`) while
    the monitor consumes them, both straight from the broker (not through the relay); ``kills``
    times, a random 1-3 s after the monitor committed again, the broker's JVM is killed
    (SIGKILL) and started again on its log directory after ``down_s``. Nothing acknowledged may
    be missing from the topic, and the run must equal the bench's oracle."""
    began = time.monotonic()
    broker = bench.broker.kafka
    kafka = stream_settings(broker.bootstrap_servers, f"crash{next(_runs)}")
    faulty = Run(kafka, bench.workdir, name=f"crash-{kafka.readings_topic}")
    feed = AckedFeed(faulty.stream, [bench.first, bench.second])
    proc = faulty.start()
    feeder = threading.Thread(target=feed.send, args=(len(feed.messages) / feed_s,), daemon=True)
    feeder.start()
    partitions = list(range(kafka.partitions))
    down: list[float] = []
    recovery: list[float] = []
    restarted = time.monotonic()
    while len(down) < kills and feeder.is_alive():
        _next_commit(faulty, _committed_now(faulty, partitions), timeout=120)
        time.sleep(rng.uniform(1.0, 3.0))
        before = _committed_now(faulty, partitions)
        killed = time.monotonic()
        broker.kill()
        time.sleep(down_s)
        broker.start()
        restarted = time.monotonic()
        down.append(restarted - killed)
        recovery.append(_next_commit(faulty, before, timeout=120) - restarted)
    feeder.join()
    expected = feed.finish(timeout=180)
    fed = time.monotonic()
    faulty.wait_committed(expected, timeout=180)
    caught_up = time.monotonic() - max(restarted, fed)
    code = stop(proc)
    lost, duplicates = on_topic(faulty.kafka, feed.acked, [m.value for m in feed.messages])
    comparison = compare("broker kill -9", len(down), bench.oracle, faulty, time.monotonic() - began)
    return Crashes(
        kills, down, len(feed.acked), feed.resent, lost, duplicates, recovery, caught_up, code, comparison
    )


# --- d. alert sink unavailable -----------------------------------------------------------------


ALERTMANAGER_CONFIG = "route:\n  receiver: blackhole\nreceivers:\n  - name: blackhole\n"


@dataclass
class Alertmanager:
    """A real Alertmanager on a fixed loopback port, so that it can be stopped and started again
    at the address the monitor was given."""

    workdir: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20) -> Alertmanager:
        binary = shutil.which("prometheus-alertmanager") or shutil.which("alertmanager")
        if binary is None:
            raise RuntimeError("Alertmanager not found on PATH: apt-get install prometheus-alertmanager")
        config = self.workdir / "alertmanager.yml"
        config.write_text(ALERTMANAGER_CONFIG, encoding="utf-8")
        args = [f"--config.file={config}", f"--storage.path={self.workdir / 'alertmanager'}"]
        args += [
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--cluster.listen-address=",
            "--log.level=warn",
        ]
        with (self.workdir / "alertmanager.log").open("ab") as out:
            self.proc = subprocess.Popen([binary, *args], stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while not self._ready():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"Alertmanager did not become ready: see {self.workdir}/alertmanager.log")
            time.sleep(0.1)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(15)
            self.proc = None

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as r:
                return int(r.status) == 200
        except OSError:
            return False

    def active(self) -> set[str]:
        """The alert ids Alertmanager holds as active."""
        with urllib.request.urlopen(f"{self.url}/api/v2/alerts", timeout=5) as r:
            listed: list[dict[str, Any]] = json.loads(r.read())
        return {a["labels"].get("alert_id", "") for a in listed}


def device_rules(workdir: Path) -> Path:
    """The shipped rules without the fleet-scope ones: a fleet evaluation pools the partitions in
    the order batches happen to interleave them, so its records come at different points of
    different runs and would decide which batch an outage holds back."""
    shipped = yaml.safe_load((ROOT / "configs/rules.yaml").read_text(encoding="utf-8"))
    path = workdir / "rules-device-scope.yaml"
    rules = [r for r in shipped["rules"] if r.get("scope") == "device"]
    path.write_text(yaml.safe_dump(shipped | {"rules": rules}, sort_keys=False), encoding="utf-8")
    return path


@dataclass
class SinkOutage:
    """Alertmanager down when the planted drift's alert fires, and what the monitor did."""

    down_s: float
    degraded_after_s: float | None  # from the alert's reading arriving to /readyz reporting degraded
    planted_held: bool  # the planted alert's batch was processed and held uncommitted
    held: dict[str, tuple[int, int]]  # undelivered alert record -> (its reading's offset, max committed)
    delivered_s: float  # from Alertmanager's return to the service ready again
    caught_up_s: float
    in_alertmanager: tuple[int, int]  # (still-firing alert ids active in Alertmanager, expected)
    exit_code: int
    comparison: Comparison

    @property
    def ok(self) -> bool:
        return (
            self.degraded_after_s is not None
            and self.planted_held
            and all(committed <= offset for offset, committed in self.held.values())
            and self.in_alertmanager[0] == self.in_alertmanager[1]
            and self.exit_code == 0
            and self.comparison.ok
        )

    def lines(self) -> list[str]:
        degraded = "never" if self.degraded_after_s is None else f"after {self.degraded_after_s:.1f}s"
        margin = min((o - c for o, c in self.held.values()), default=0)
        return [
            f"alert sink down for {self.down_s:.0f}s: {'PASS' if self.ok else 'FAIL'}",
            f"  /readyz degraded {degraded}; the planted drift's alert processed and held back: "
            f"{self.planted_held}",
            f"  {len(self.held)} undelivered alert record(s); committed offsets stayed at or below their "
            f"readings (closest: {margin} below)",
            f"  delivered {self.delivered_s:.1f}s after Alertmanager returned, caught up "
            f"{self.caught_up_s:.1f}s after; firing alerts active in Alertmanager: "
            f"{self.in_alertmanager[0]}/{self.in_alertmanager[1]}; exit code on SIGTERM: {self.exit_code}",
            *self.comparison.lines()[1:],
        ]


def sink_experiment(
    bootstrap_servers: str, workdir: Path, down_s: float, devices: int = 4, duration_s: int = 120
) -> SinkOutage:
    """The monitor delivers alerts to Alertmanager as well as Kafka. A copy of a stream flows in
    up to just before the reading on which the planted drift's alert fires (in the oracle); then
    Alertmanager stops and the rest flows in. For ``down_s`` after the monitor turns degraded the
    committed offsets must stay at or below the reading of every alert record not delivered;
    then Alertmanager comes back on the same port. Device-scope rules only (:func:`device_rules`)."""
    began = time.monotonic()
    rules = {"TELEMON_RULES_FILE": str(device_rules(workdir))}
    source = scenario(devices, duration_s, seed=3)
    stream = stream_settings(bootstrap_servers, f"sink{next(_runs)}")
    expected = publish(stream, source)
    oracle = run_oracle(stream, workdir, expected, env=rules)
    planted = _planted_alert(oracle, source)
    undelivered = [a for a in oracle.alerts() if a.status != "pending" and a.ts >= planted.ts]
    readings = locate(stream, expected, {(a.device_id, a.sensor, a.ts) for a in undelivered})
    am = Alertmanager(workdir).start()
    try:
        env = rules | {"TELEMON_ALERTS__ALERTMANAGER_URL": am.url, "TELEMON_ALERTS__TIMEOUT_S": "1"}
        copy = stream.model_copy(update={"readings_topic": f"{stream.readings_topic}.sink"})
        faulty = Run(copy, workdir, name="sink", env=env)
        feed = Feed(faulty.stream, source)
        proc = faulty.start()
        faulty.wait_committed(feed.send(until_ts=planted.ts - 1), timeout=120)
        am.stop()
        arrived = time.monotonic()
        feed.send()
        degraded_at = _wait_degraded(faulty, timeout=60)
        committed = _hold(faulty, expected, down_s)
        on_topic = planted.alert_id in {decode_alert(v).alert_id for v in _read_all(faulty.kafka)}
        # at_least_once: on the topic, its offsets held back; exactly_once: Alertmanager comes before
        # the batch's transaction, so neither its record (read committed) nor its offsets are in yet
        held = on_topic != (os.environ.get(GUARANTEE) == "exactly_once")
        am.start()
        back = time.monotonic()
        delivered = _wait_ready(faulty, timeout=60) - back
        caught_up = faulty.wait_committed(expected, timeout=120) + time.monotonic() - back
        firing = {a.alert_id for a in undelivered if _last_status(oracle, a.alert_id) == "firing"}
        in_am = len(firing & am.active())
        code = stop(proc)
    finally:
        am.stop()
    comparison = compare("alert sink down", 1, oracle, faulty, time.monotonic() - began)
    return SinkOutage(
        down_s,
        None if degraded_at is None else degraded_at - arrived,
        held,
        _held_back(undelivered, readings, committed),
        delivered,
        caught_up,
        (in_am, len(firing)),
        code,
        comparison,
    )


def _planted_alert(oracle: Run, source: Scenario) -> Alert:
    device, sensor = source.device_ids()[PLANTED[0]], PLANTED[1]
    for a in oracle.alerts():
        if (a.device_id, a.sensor, a.status) == (device, sensor, "firing") and a.ts >= drift_start_ts(source):
            return a
    raise RuntimeError(f"the oracle raised no alert on {device}/{sensor} after the planted drift")


def _held_back(
    undelivered: list[Alert], readings: dict[tuple[str, str, int], tuple[int, int]], committed: Offsets
) -> dict[str, tuple[int, int]]:
    """Alert record -> (the offset of its reading, the highest offset committed while it was held)."""
    held = {}
    for a in undelivered:
        partition, offset = readings[(a.device_id, a.sensor, a.ts)]
        held[f"{a.rule}/{a.device_id}/{a.sensor}/{a.status}"] = (offset, committed[partition])
    return held


def locate(
    kafka: KafkaSettings, expected: Offsets, wanted: set[tuple[str, str, int]]
) -> dict[tuple[str, str, int], tuple[int, int]]:
    """(device, sensor, ts) -> (partition, offset) of those readings on the readings topic."""
    c = Consumer({"bootstrap.servers": kafka.bootstrap_servers, "group.id": f"{kafka.readings_topic}.locate"})
    found: dict[tuple[str, str, int], tuple[int, int]] = {}
    keys = {(d, ts) for d, _, ts in wanted}
    try:
        c.assign([TopicPartition(kafka.readings_topic, p, 0) for p in expected])
        unread = {p for p, end in expected.items() if end > 0}
        while unread and len(found) < len(wanted):
            for m in c.consume(1000, 1.0):
                p, o = int(m.partition() or 0), int(m.offset() or 0)
                if o + 1 >= expected[p]:
                    unread.discard(p)
                device, ts = (m.key() or b"").decode(), m.timestamp()[1]
                if m.error() is None and (device, ts) in keys:
                    sensor = json.loads(m.value() or b"{}").get("sensor")
                    if (device, sensor, ts) in wanted:
                        found[(device, sensor, ts)] = (p, o)
    finally:
        c.close()
    if len(found) < len(wanted):
        raise RuntimeError(f"readings of alerts not found on {kafka.readings_topic}: {wanted - found.keys()}")
    return found


def _last_status(oracle: Run, alert_id: str) -> str:
    return [a.status for a in oracle.alerts() if a.alert_id == alert_id][-1]


def _wait_degraded(run: Run, timeout: float) -> float | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, body = run.readiness()
        if status == 503 and body.get("degraded"):
            return time.monotonic()
        time.sleep(0.1)
    return None


def _wait_ready(run: Run, timeout: float) -> float:
    deadline = time.monotonic() + timeout
    while run.readiness()[0] != 200:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{run.name} not ready {timeout}s after the outage: see {run.log}")
        time.sleep(0.1)
    return time.monotonic()


def _hold(run: Run, expected: Offsets, seconds: float) -> Offsets:
    """The highest committed offsets seen over ``seconds``."""
    highest = {p: -1 for p in expected}
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for p, o in run.committed(list(expected)).items():
            highest[p] = max(highest[p], o)
        time.sleep(0.2)
    return highest


# --- entry point -------------------------------------------------------------------------------

Result = Comparison | Outage | SinkOutage | Crashes
EXPERIMENTS = ("kill", "replicas", "scale", "broker", "crash", "sink")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/chaos",
        description="Run the monitor under faults against a fault-free oracle and print the figures.",
    )
    parser.add_argument("--devices", type=int, default=40, help="simulated devices (default %(default)s)")
    parser.add_argument("--duration", type=int, default=600, help="simulated seconds (default %(default)s)")
    parser.add_argument("--kills", type=int, default=10, help="kill -9 count (default %(default)s)")
    parser.add_argument(
        "--churn", type=int, default=8, help="replica join/leave/kill actions (default %(default)s)"
    )
    parser.add_argument(
        "--feed", type=float, default=60.0, help="seconds the stream flows in during the churn"
    )
    parser.add_argument("--outage", type=float, default=30.0, help="broker and alert sink outage seconds")
    parser.add_argument(
        "--crashes", type=int, default=5, help="broker kill -9 and restart count (default %(default)s)"
    )
    parser.add_argument(
        "--crash-down",
        type=float,
        default=5.0,
        help="seconds the killed broker stays down before its restart",
    )
    parser.add_argument(
        "--guarantee",
        choices=("at_least_once", "exactly_once", "both"),
        default="both",
        help="processing.guarantee of the faulty runs: each experiment runs once per guarantee "
        "(default %(default)s)",
    )
    parser.add_argument("--seed", type=int, default=1, help="seeds the fault points")
    parser.add_argument("--only", choices=EXPERIMENTS, action="append", help="run only these (repeatable)")
    parser.add_argument("--keep", action="store_true", help="keep the working directory (logs, snapshots)")
    args = parser.parse_args(argv)
    only = set(args.only or EXPERIMENTS)
    workdir = Path(tempfile.mkdtemp(prefix="telemon-chaos-"))
    try:
        ok = _run_all(args, only, workdir)
    finally:
        reap()
        if args.keep:
            print(f"working directory: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return 0 if ok else 1


def _run_all(args: argparse.Namespace, only: set[str], workdir: Path) -> bool:
    began, failed = time.monotonic(), 0
    with RelayedBroker(workdir / "kafka") as relayed:
        print(f"kafka: {relayed.describe()}", flush=True)
        direct = relayed.kafka.bootstrap_servers
        experiments = _stream_experiments(args, only, workdir, direct)
        experiments += _outage_experiments(args, only, workdir, direct, relayed)
        both = ("at_least_once", "exactly_once")
        guarantees = both if args.guarantee == "both" else (args.guarantee,)
        plan = [(g, name, under(g, experiment)) for g in guarantees for name, experiment in experiments]
        for guarantee, name, experiment in plan:
            try:
                result = experiment()
            except Exception as e:  # one experiment's error is its FAIL, not the end of the run
                print(f"{name} under {guarantee}: FAIL (raised {type(e).__name__}: {e})", flush=True)
                reap()
                relayed.heal()
                failed += 1
                continue
            print("\n".join(result.lines()), flush=True)
            failed += not result.ok
    passed = len(plan) - failed
    print(f"chaos: {passed}/{len(plan)} experiments passed in {time.monotonic() - began:.0f}s")
    return failed == 0


Experiment = tuple[str, Callable[[], Result]]


def _stream_experiments(
    args: argparse.Namespace, only: set[str], workdir: Path, bootstrap_servers: str
) -> list[Experiment]:
    """kill -9 and replica churn over one stream of ``--devices`` x ``--duration`` and its oracle."""
    if not only & {"kill", "replicas", "scale"}:
        return []
    rng = random.Random(args.seed)
    stream = stream_settings(bootstrap_servers, "chaos")
    source = scenario(args.devices, args.duration)
    expected = publish(stream, source)
    print(f"stream: {sum(expected.values())} messages, {args.devices} devices, {args.duration} s simulated")
    oracle = run_oracle(stream, workdir, expected)
    plan: list[Experiment] = []
    if "kill" in only:
        plan.append(("kill", lambda: kill_experiment(stream, workdir, oracle, expected, args.kills, rng)))
    if "replicas" in only:

        def churn() -> Result:
            return replica_experiment(stream, workdir, oracle, source, expected, args.churn, rng, args.feed)

        plan.append(("replicas", churn))
    if "scale" in only:
        plan.append(("scale", lambda: scale_experiment(stream, workdir, oracle, source, expected, args.feed)))
    return plan


def _outage_experiments(
    args: argparse.Namespace, only: set[str], workdir: Path, bootstrap_servers: str, relayed: RelayedBroker
) -> list[Experiment]:
    """Broker and alert sink outages of ``--outage`` seconds and ``--crashes`` broker kill -9s, on
    streams of 8 devices x 4 minutes (the broker ones then 8 new devices for 30 s)."""
    plan: list[Experiment] = []
    if only & {"broker", "crash"}:
        bench = outage_bench(relayed, workdir, devices=8, duration_s=240)
    if "broker" in only:
        plan += [
            ("broker sigstop", lambda: broker_experiment(bench, "sigstop", args.outage)),
            ("broker restart", lambda: broker_experiment(bench, "restart", args.outage)),
        ]
    if "crash" in only:
        rng = random.Random(args.seed)
        feed_s = args.crashes * (args.crash_down + 30)  # the kills land while the stream flows in
        plan.append(("crash", lambda: crash_experiment(bench, args.crashes, args.crash_down, feed_s, rng)))
    if "sink" in only:

        def sink() -> Result:
            return sink_experiment(bootstrap_servers, workdir, args.outage, devices=8, duration_s=240)

        plan.append(("sink", sink))
    return plan


if __name__ == "__main__":
    sys.exit(main())
