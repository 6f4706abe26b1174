"""The chaos harness: the monitor under faults, compared with a fault-free run (the oracle).

Every experiment runs the monitor (``telemon run`` processes) over one seeded simulated stream
with faults, and once without (the oracle), each run with its own consumer group, output topics
and state directory. A run ends with SIGTERM once it has committed the whole stream, which
snapshots every partition; the comparison then reads both snapshot directories and alert topics:

- readings applied (lost = oracle - faulty, from the per-pair reading counts);
- per-device state: equal digests of everything kept about the device
  (:func:`monitor.snapshot.fingerprints`);
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
- ``broker``: the broker frozen (SIGSTOP) or stopped and restarted mid-stream: the service stays
  live, reports degraded, resumes after recovery and, against its own oracle, loses nothing the
  broker kept;
- ``sink``: Alertmanager down when the planted drift fires: degraded, offsets held below the
  undelivered alert, then delivered, committed to the end and equal to the oracle.

``scripts/chaos`` runs the long variants and prints the figures; ``tests/integration/
test_chaos.py`` runs short ones.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition

from monitor import snapshot
from monitor.alerts import Alert
from monitor.alerts import decode as decode_alert
from monitor.broker import EmbeddedBroker, free_port
from monitor.kafka import DeliveryTracker, ensure_topics, flush, produce, producer_config
from monitor.settings import KafkaSettings
from monitor.snapshot import SnapshotStore
from producers.scenario import Scenario, load_scenario
from producers.simulate import Message, SimulationReport, simulate, stream

ROOT = Path(__file__).resolve().parents[1]
SNAPSHOT_KEY = b"chaos-harness-signing-key-0123456789abcdef"
PLANTED = (3, "temperature")  # the planted drift: device index, sensor
_runs = itertools.count()

Offsets = dict[int, int]  # partition -> next offset


def stream_settings(broker: EmbeddedBroker, name: str, partitions: int = 4) -> KafkaSettings:
    return KafkaSettings(
        bootstrap_servers=broker.bootstrap_servers,
        readings_topic=f"{name}.readings",
        truth_topic=f"{name}.truth",
        partitions=partitions,
        session_timeout_ms=3000,
    )


def scenario(devices: int, duration_s: int, seed: int = 7, prefix: str = "dev-") -> Scenario:
    """The seeded stream: the demo fleet with an abrupt +6 degC shift planted on device 3's
    temperature half-way through (``prefix`` names the devices, so two streams can be told apart)."""
    device, sensor = PLANTED
    events = [
        {
            "kind": "abrupt_shift",
            "device": device,
            "sensor": sensor,
            "start_s": duration_s // 2,
            "magnitude": 6.0,
        }
    ]
    return load_scenario(
        ROOT / "configs/scenarios/demo.yaml",
        devices=devices,
        duration_s=duration_s,
        seed=seed,
        events=events if devices > device else [],
        device_prefix=prefix,
    )


def publish(kafka: KafkaSettings, devices: int, duration_s: int, seed: int = 7) -> SimulationReport:
    return simulate(kafka, scenario(devices, duration_s, seed))


def ends(report: SimulationReport) -> Offsets:
    """Partition -> the offset after its last message."""
    return {p: o + 1 for p, o in report.last_offsets.items()}


class Feed:
    """A scenario published again, message by message, to ``kafka.readings_topic``: with the
    producer settings and order of :func:`producers.simulate.simulate`, every message lands on
    the partition and offset it has in the original."""

    def __init__(self, kafka: KafkaSettings, source: Scenario) -> None:
        ensure_topics(kafka, [kafka.readings_topic])
        self.kafka = kafka
        self._messages = stream(source)
        self._next: Message | None = next(self._messages, None)
        self._producer = Producer(producer_config(kafka))
        self._tracker = DeliveryTracker()
        self.sent = 0

    @property
    def done(self) -> bool:
        return self._next is None

    def send(self, until_ts: int | None = None, rate: float | None = None) -> Offsets:
        """Publish the messages up to event time ``until_ts`` (None: all), at most ``rate`` per
        second; wait for their acknowledgements and return the ends published so far."""
        began, sent = time.monotonic(), 0
        while self._next is not None and (until_ts is None or self._next.ts <= until_ts):
            m = self._next
            produce(
                self._producer,
                self._tracker,
                self.kafka.readings_topic,
                key=m.key,
                value=m.value,
                timestamp=m.ts,
            )
            sent += 1
            self._next = next(self._messages, None)
            if rate is not None and sent % 200 == 0:
                self._producer.poll(0)
                time.sleep(max(0.0, began + sent / rate - time.monotonic()))
        flush(self._producer, self._tracker, 60)
        self.sent += sent
        topic = self.kafka.readings_topic
        return {p: o + 1 for (t, p), o in self._tracker.last_offsets.items() if t == topic}


@dataclass
class Run:
    """One monitor run over the stream: its own group, output topics and state directory."""

    stream: KafkaSettings
    workdir: Path
    name: str = field(default_factory=lambda: f"run{next(_runs)}")
    env: dict[str, str] = field(default_factory=dict)
    port: int = 0  # the metrics port of the last process started
    _alerts: list[tuple[str, str, str]] | None = None

    @property
    def kafka(self) -> KafkaSettings:
        s = self.stream
        return s.model_copy(
            update={
                "group_id": f"{s.readings_topic}.{self.name}",
                "dead_letter_topic": f"{s.readings_topic}.{self.name}.dlq",
                "alerts_topic": f"{s.readings_topic}.{self.name}.alerts",
                "models_topic": f"{s.readings_topic}.{self.name}.models",
            }
        )

    @property
    def state_dir(self) -> Path:
        return self.workdir / self.name

    @property
    def log(self) -> Path:
        return self.workdir / f"{self.name}.log"

    def start(self) -> subprocess.Popen[str]:
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
        with self.log.open("a") as log:
            cmd = [sys.executable, "-m", "monitor.cli", "run", "--config", str(ROOT / "configs/monitor.yaml")]
            return subprocess.Popen(cmd, env=environ, stdout=log, stderr=log, text=True, cwd=ROOT)

    def committed(self, partitions: list[int]) -> Offsets:
        k = self.kafka
        c = Consumer({"bootstrap.servers": k.bootstrap_servers, "group.id": k.group_id})
        try:
            tps = c.committed([TopicPartition(k.readings_topic, p) for p in partitions], timeout=10)
        finally:
            c.close()
        return {tp.partition: tp.offset for tp in tps}

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

    def alerts(self) -> list[tuple[str, str, str]]:
        """(alert_id, status, scope) of every record on the run's alerts topic (read once)."""
        if self._alerts is None:
            self._alerts = [(a.alert_id, a.status, a.scope) for a in self.alert_records()]
        return self._alerts

    def alert_records(self) -> list[Alert]:
        return [decode_alert(v) for v in _read_all(self.kafka)]

    def snapshots(self) -> list[snapshot.PartitionSnapshot]:
        return list(SnapshotStore(self.state_dir / "snapshots", SNAPSHOT_KEY))

    def states(self) -> dict[str, str]:
        return snapshot.fingerprints(self.snapshots())

    def applied(self) -> int:
        return sum(int(snap.state.devices.arrays["raw_n"].sum()) for snap in self.snapshots())


def _read_all(k: KafkaSettings, quiet_s: float = 2.0) -> Iterator[bytes]:
    """Every value of ``k.alerts_topic``, read until it has been quiet for ``quiet_s`` (the
    embedded broker's high watermarks are not exact enough to read up to them)."""
    c = Consumer({"bootstrap.servers": k.bootstrap_servers, "group.id": f"{k.group_id}.reader"})
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


def stop(proc: subprocess.Popen[str], timeout: float = 60) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise


def kill(proc: subprocess.Popen[str]) -> None:
    proc.kill()
    proc.wait()


def finish(run: Run, procs: list[subprocess.Popen[str]], expected: Offsets, timeout: float) -> float:
    """Let the run commit everything, then stop it cleanly (its partitions are snapshotted)."""
    took = run.wait_committed(expected, timeout)
    for p in procs:
        if p.poll() is None and stop(p) != 0:
            raise RuntimeError(f"{run.name} exited with {p.returncode}: see {run.log}")
    return took


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
    alerts_compared: bool = True

    @property
    def lost(self) -> int:
        return self.oracle_applied - self.applied

    @property
    def ok(self) -> bool:
        return not (self.lost or self.devices_differing or self.alerts_missing or self.alerts_extra)

    def lines(self) -> list[str]:
        equal = self.devices - len(self.devices_differing)
        lines = [
            f"{self.experiment}: {'PASS' if self.ok else 'FAIL'} ({self.faults} faults, {self.seconds:.1f}s)",
            f"  readings applied: oracle {self.oracle_applied}, faulty {self.applied}, lost {self.lost}",
            f"  device states equal to the oracle's: {equal}/{self.devices}"
            + (f" (differing: {', '.join(self.devices_differing[:5])})" if self.devices_differing else ""),
        ]
        if self.alerts_compared:
            lines.append(
                f"  device-scope alert records: {self.alert_ids} unique in {self.alert_records} "
                f"({self.alert_records - self.alert_ids} re-deliveries), missing {len(self.alerts_missing)}"
                f"{_some(self.alerts_missing)}, extra {len(self.alerts_extra)}{_some(self.alerts_extra)}"
            )
            lines.append(
                f"  fleet-scope alert records (order dependent, not compared): oracle {self.fleet_alerts[0]}, "
                f"faulty {self.fleet_alerts[1]}"
            )
        else:
            lines.append("  alert records: not compared (the restarted in-memory broker dropped its topics)")
        return lines


def _some(items: set[str]) -> str:
    return f" {sorted(items)[:3]}" if items else ""


def compare(
    experiment: str, faults: int, oracle: Run, faulty: Run, seconds: float, alerts: bool = True
) -> Comparison:
    want, got = oracle.states(), faulty.states()
    oracle_alerts, faulty_alerts = (oracle.alerts(), faulty.alerts()) if alerts else ([], [])
    want_ids = {(i, st) for i, st, scope in oracle_alerts if scope == "device"}
    got_records = [(i, st) for i, st, scope in faulty_alerts if scope == "device"]
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
            sum(scope != "device" for *_, scope in oracle_alerts),
            sum(scope != "device" for *_, scope in faulty_alerts),
        ),
        seconds=seconds,
        alerts_compared=alerts,
    )


def run_oracle(stream: KafkaSettings, workdir: Path, expected: Offsets, timeout: float = 180) -> Run:
    """The fault-free run of ``stream``."""
    oracle = Run(stream, workdir, name=f"oracle-{stream.readings_topic}")
    proc = oracle.start()
    finish(oracle, [proc], expected, timeout)
    return oracle


def _wait_progress(run: Run, expected: Offsets, target: float, proc: subprocess.Popen[str]) -> None:
    """Wait until ``target`` of the stream is committed (or the run is done)."""
    deadline = time.monotonic() + 120
    while run.progress(expected) < target and time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{run.name} died on its own: see {run.log}")
        time.sleep(0.05)


# --- a. kill -9 -------------------------------------------------------------------------------


def kill_experiment(
    stream: KafkaSettings, workdir: Path, oracle: Run, expected: Offsets, kills: int, rng: random.Random
) -> Comparison:
    """kill -9 the monitor ``kills`` times, each at a random point of its progress."""
    began = time.monotonic()
    faulty = Run(stream, workdir, name="kill")
    points = sorted(rng.uniform(0.05, 0.95) for _ in range(kills))
    for point in points:
        proc = faulty.start()
        _wait_progress(faulty, expected, point, proc)
        time.sleep(rng.uniform(0, 0.3))  # not only right after a commit
        kill(proc)
    proc = faulty.start()
    finish(faulty, [proc], expected, timeout=180)
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
    """Two replicas sharing one snapshot directory while a copy of the stream flows in over
    ``feed_s`` seconds; at random moments a replica joins (while fewer than two run), leaves
    (SIGTERM) or is killed (kill -9)."""
    began = time.monotonic()
    copy = stream.model_copy(update={"readings_topic": f"{stream.readings_topic}.replicas"})
    feed = Feed(copy, source)
    rate = sum(expected.values()) / feed_s
    feeder = threading.Thread(target=feed.send, kwargs={"rate": rate}, daemon=True)
    faulty = Run(copy, workdir, name="replicas")
    procs = [faulty.start()]
    feeder.start()
    for _ in range(actions):
        time.sleep(rng.uniform(0.3, 1.2 * feed_s / actions))
        _churn(faulty, procs, rng)
    feeder.join()
    alive = [p for p in procs if p.poll() is None] or [faulty.start()]
    if feed.send() != expected:  # everything acknowledged: the copy's ends
        raise RuntimeError("the copy of the stream did not land at the original's offsets")
    finish(faulty, alive, expected, timeout=180)
    return compare("replica churn", actions, oracle, faulty, time.monotonic() - began)


def _churn(run: Run, procs: list[subprocess.Popen[str]], rng: random.Random) -> str:
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
            and self.resumed_s <= 15
            and self.exit_code == 0
            and self.comparison.ok
        )

    def lines(self) -> list[str]:
        degraded = "never" if self.degraded_after_s is None else f"{self.degraded_after_s:.1f}s in"
        return [
            f"broker {self.kind} for {self.outage_s:.0f}s: {'PASS' if self.ok else 'FAIL'}",
            f"  /healthz 200 throughout: {self.live_throughout}; /readyz degraded: {degraded}; "
            f"resumed {self.resumed_s:.1f}s after recovery (limit 15s), caught up in {self.caught_up_s:.1f}s; "
            f"exit code {self.exit_code}",
            *self.comparison.lines()[1:],
        ]


def broker_experiment(
    workdir: Path, kind: str, outage_s: float, devices: int = 4, duration_s: int = 120
) -> Outage:
    """On a broker of its own: the monitor consumes a stream; a third of the way through, the
    broker is frozen (``sigstop``) or stopped (``restart``: it comes back empty, as the embedded
    broker keeps nothing, so the stream is published again as a broker with storage would have
    kept it) for ``outage_s``; after recovery new devices publish. Compared with an oracle that
    read the same two streams without an outage."""
    began = time.monotonic()
    with EmbeddedBroker(log_file=workdir / f"broker-{kind}.log") as broker:
        name = f"outage{next(_runs)}"
        first, second = scenario(devices, duration_s, seed=1), scenario(devices, 30, seed=2, prefix="late-")
        oracle = _outage_oracle(stream_settings(broker, f"{name}-oracle"), workdir, first, second)
        faulty = Run(stream_settings(broker, name), workdir, name=f"outage-{kind}")
        feed = Feed(faulty.stream, first)
        ahead = feed.send()
        proc = faulty.start()
        _wait_progress(faulty, ahead, 0.3, proc)
        before = faulty.committed(list(ahead))
        fault_at = time.monotonic()
        live, degraded_at = _outage(broker, faulty, proc, kind, outage_s)
        recovered = time.monotonic()
        if kind == "restart":  # what a broker with storage would have kept: topics and stream
            k = faulty.kafka
            ensure_topics(k, [k.dead_letter_topic, k.alerts_topic, k.models_topic])
            if Feed(faulty.stream, first).send() != ahead:
                raise RuntimeError("the stream published again did not land at its former offsets")
            before = {p: -1001 for p in before}  # the empty broker has no committed offsets either
        expected = joined(ahead, Feed(faulty.stream, second).send())
        resumed = _wait_advance(faulty, before, timeout=60) - recovered
        caught_up = time.monotonic() - recovered + faulty.wait_committed(expected, timeout=120)
        code = stop(proc)
        comparison = compare(
            f"broker {kind}", 1, oracle, faulty, time.monotonic() - began, alerts=kind != "restart"
        )
    degraded = None if degraded_at is None else degraded_at - fault_at
    return Outage(kind, outage_s, live, degraded, resumed, caught_up, code, comparison)


def joined(first: Offsets, second: Offsets) -> Offsets:
    """The ends of a topic after two publications."""
    return {p: max(first.get(p, 0), second.get(p, 0)) for p in first.keys() | second.keys()}


def _outage_oracle(kafka: KafkaSettings, workdir: Path, first: Scenario, second: Scenario) -> Run:
    expected = joined(Feed(kafka, first).send(), Feed(kafka, second).send())
    oracle = run_oracle(kafka, workdir, expected)
    oracle.alerts()  # read now: a restart of the broker drops the topic
    return oracle


def _outage(
    broker: EmbeddedBroker, run: Run, proc: subprocess.Popen[str], kind: str, outage_s: float
) -> tuple[bool, float | None]:
    """Take the broker down for ``outage_s``, probing the monitor; return (live at every probe,
    when /readyz first reported degraded)."""
    live, degraded_at = True, None
    pid = broker.pid
    if kind == "sigstop":
        os.kill(pid, signal.SIGSTOP)
    else:
        broker.stop()
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
            broker.start()
    return live, degraded_at


def _wait_advance(run: Run, before: Offsets, timeout: float) -> float:
    """The monotonic time at which the group's committed offsets first moved past ``before``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            now = run.committed(list(before))
        except Exception:  # the broker may still be coming back
            now = before
        if any(now[p] > before[p] for p in before):
            return time.monotonic()
        time.sleep(0.1)
    raise TimeoutError(f"{run.name}: no commit within {timeout}s of the broker's recovery: see {run.log}")


# --- entry point -------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/chaos",
        description="Run the monitor under faults against a fault-free oracle and print the figures.",
    )
    parser.add_argument("--devices", type=int, default=40, help="simulated devices (default %(default)s)")
    parser.add_argument("--duration", type=int, default=600, help="simulated seconds (default %(default)s)")
    parser.add_argument("--kills", type=int, default=10, help="kill -9 count (default %(default)s)")
    parser.add_argument("--churn", type=int, default=8, help="replica join/leave/kill actions")
    parser.add_argument("--outage", type=float, default=30.0, help="broker outage seconds")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--only", choices=["kill", "replicas", "broker", "sink"], action="append")
    args = parser.parse_args(argv)
    only = set(args.only or ["kill", "replicas", "broker", "sink"])
    rng = random.Random(args.seed)
    ok = True
    with tempfile.TemporaryDirectory(prefix="telemon-chaos-") as tmp, EmbeddedBroker() as broker:
        workdir = Path(tmp)
        stream = stream_settings(broker, "chaos")
        source = scenario(args.devices, args.duration)
        report = simulate(stream, source)
        expected = ends(report)
        print(
            f"stream: {report.readings_sent} readings, {report.malformed_sent} malformed, "
            f"{args.devices} devices"
        )
        oracle = run_oracle(stream, workdir, expected)
        experiments: list[Callable[[], Comparison | Outage]] = []
        if "kill" in only:
            experiments.append(lambda: kill_experiment(stream, workdir, oracle, expected, args.kills, rng))
        if "replicas" in only:
            experiments.append(
                lambda: replica_experiment(stream, workdir, oracle, source, expected, args.churn, rng)
            )
        if "broker" in only:
            experiments += [
                lambda: broker_experiment(workdir, "sigstop", args.outage),
                lambda: broker_experiment(workdir, "restart", args.outage),
            ]
        for experiment in experiments:
            result = experiment()
            print("\n".join(result.lines()), flush=True)
            ok &= result.ok
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
