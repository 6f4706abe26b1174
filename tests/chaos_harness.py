"""The chaos harness: the monitor under faults, compared with a fault-free run (the oracle).

Every experiment publishes one seeded simulated stream, runs the monitor over it once without
faults (the oracle), then again with faults, each run with its own consumer group, output topics
and state directory. A run ends with SIGTERM once it has committed the whole stream, which
snapshots every partition; the comparison then reads both snapshot directories and alert topics:

- readings applied (lost = oracle - faulty, from the per-pair reading counts);
- per-device state: equal digests of everything kept about the device
  (:func:`monitor.snapshot.fingerprints`);
- device-scope alert ids: equal sets (fleet-scope alerts pool the partitions in the order
  batches happen to interleave them, so they are reported, not compared).

Experiments: ``kill`` (kill -9 the monitor N times at random progress points), ``replicas`` (two
replicas with join/leave/kill churn), ``broker`` (the broker SIGSTOPped or restarted while the
monitor runs: it stays live, reports degraded, resumes after recovery).

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
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from confluent_kafka import Consumer, TopicPartition

from monitor import snapshot
from monitor.alerts import decode as decode_alert
from monitor.broker import EmbeddedBroker, free_port
from monitor.kafka import ensure_topics
from monitor.settings import KafkaSettings
from monitor.snapshot import SnapshotStore
from producers.scenario import load_scenario
from producers.simulate import SimulationReport, simulate

ROOT = Path(__file__).resolve().parents[1]
SNAPSHOT_KEY = b"chaos-harness-signing-key-0123456789abcdef"
_runs = itertools.count()


def stream_settings(broker: EmbeddedBroker, name: str, partitions: int = 4) -> KafkaSettings:
    return KafkaSettings(
        bootstrap_servers=broker.bootstrap_servers,
        readings_topic=f"{name}.readings",
        truth_topic=f"{name}.truth",
        partitions=partitions,
        session_timeout_ms=3000,
    )


def publish(kafka: KafkaSettings, devices: int, duration_s: int, seed: int = 7) -> SimulationReport:
    """The seeded stream: the demo scenario (a planted drift on dev-0003's temperature)."""
    events = [
        {
            "kind": "abrupt_shift",
            "device": 3,
            "sensor": "temperature",
            "start_s": duration_s // 2,
            "magnitude": 6.0,
        }
    ]
    scenario = load_scenario(
        ROOT / "configs/scenarios/demo.yaml", devices=devices, duration_s=duration_s, seed=seed, events=events
    )
    return simulate(kafka, scenario)


@dataclass
class Run:
    """One monitor run over the stream: its own group, output topics and state directory."""

    stream: KafkaSettings
    workdir: Path
    name: str = field(default_factory=lambda: f"run{next(_runs)}")
    env: dict[str, str] = field(default_factory=dict)

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

    def start(self, metrics_port: int = 0) -> subprocess.Popen[str]:
        """``telemon run`` as a process (stderr goes to ``<state_dir>.log``)."""
        environ = dict(os.environ) | self.env
        for key, value in self.kafka.model_dump(exclude_none=True).items():
            if isinstance(value, str | int):
                environ[f"TELEMON_KAFKA__{key.upper()}"] = str(value)
        environ |= {
            "TELEMON_REGISTRY__SIGNING_KEY": SNAPSHOT_KEY.decode(),
            "TELEMON_STATE_DIR": str(self.state_dir),
            "TELEMON_METRICS__PORT": str(metrics_port or free_port()),
            "TELEMON_CONSUME__BATCH_SIZE": environ.get("TELEMON_CONSUME__BATCH_SIZE", "500"),
            "TELEMON_STATE__SNAPSHOT_INTERVAL_S": environ.get("TELEMON_STATE__SNAPSHOT_INTERVAL_S", "0.3"),
        }
        self.state_dir.mkdir(parents=True, exist_ok=True)
        log = (self.workdir / f"{self.name}.log").open("a")
        cmd = [sys.executable, "-m", "monitor.cli", "run", "--config", str(ROOT / "configs/monitor.yaml")]
        return subprocess.Popen(cmd, env=environ, stdout=log, stderr=log, text=True, cwd=ROOT)

    def committed(self, partitions: list[int]) -> dict[int, int]:
        k = self.kafka
        c = Consumer({"bootstrap.servers": k.bootstrap_servers, "group.id": k.group_id})
        try:
            tps = c.committed([TopicPartition(k.readings_topic, p) for p in partitions], timeout=10)
        finally:
            c.close()
        return {tp.partition: tp.offset for tp in tps}

    def wait_committed(self, expected: dict[int, int], timeout: float) -> float:
        """Seconds until the group committed ``expected`` (partition -> next offset)."""
        began = time.monotonic()
        while self.committed(list(expected)) != expected:
            if time.monotonic() - began > timeout:
                got = self.committed(list(expected))
                raise TimeoutError(f"{self.name}: committed {got}, expected {expected} after {timeout}s")
            time.sleep(0.2)
        return time.monotonic() - began

    def progress(self, expected: dict[int, int]) -> float:
        """Fraction of the stream committed."""
        got = self.committed(list(expected))
        return sum(max(got[p], 0) for p in expected) / sum(expected.values())

    def alerts(self) -> list[tuple[str, str, str]]:
        """(alert_id, status, scope) of every record on the run's alerts topic."""
        return [(a.alert_id, a.status, a.scope) for a in map(decode_alert, _read_all(self.kafka))]

    def snapshots(self) -> list[snapshot.PartitionSnapshot]:
        return list(SnapshotStore(self.state_dir / "snapshots", SNAPSHOT_KEY))

    def states(self) -> dict[str, str]:
        return snapshot.fingerprints(self.snapshots())

    def applied(self) -> int:
        return sum(int(snap.devices.arrays["raw_n"].sum()) for snap in self.snapshots())


def _read_all(k: KafkaSettings, quiet_s: float = 2.0) -> Iterator[bytes]:
    """Every value of ``k.alerts_topic``, read until it has been quiet for ``quiet_s``."""
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


def stop(proc: subprocess.Popen[str], timeout: float = 60) -> int:
    proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise


def finish(run: Run, procs: list[subprocess.Popen[str]], expected: dict[int, int], timeout: float) -> float:
    """Let the run commit everything, then stop it cleanly (its partitions are snapshotted)."""
    took = run.wait_committed(expected, timeout)
    for p in procs:
        if p.poll() is None and stop(p) != 0:
            raise RuntimeError(f"{run.name} exited with {p.returncode}: see {run.workdir}/{run.name}.log")
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

    @property
    def lost(self) -> int:
        return self.oracle_applied - self.applied

    @property
    def ok(self) -> bool:
        return not (self.lost or self.devices_differing or self.alerts_missing or self.alerts_extra)

    def lines(self) -> list[str]:
        return [
            f"{self.experiment}: {'PASS' if self.ok else 'FAIL'} ({self.faults} faults, {self.seconds:.1f}s)",
            f"  readings applied: oracle {self.oracle_applied}, faulty {self.applied}, lost {self.lost}",
            f"  device states equal to the oracle's: "
            f"{self.devices - len(self.devices_differing)}/{self.devices}",
            f"  device-scope alert ids: {self.alert_ids} unique in {self.alert_records} records "
            f"({self.alert_records - self.alert_ids} re-deliveries), "
            f"missing {len(self.alerts_missing)}, extra {len(self.alerts_extra)}",
            f"  fleet-scope alert records (order dependent, not compared): oracle {self.fleet_alerts[0]}, "
            f"faulty {self.fleet_alerts[1]}",
        ]


def compare(experiment: str, faults: int, oracle: Run, faulty: Run, seconds: float) -> Comparison:
    want, got = oracle.states(), faulty.states()
    oracle_alerts, alerts = oracle.alerts(), faulty.alerts()
    want_ids = {(i, st) for i, st, scope in oracle_alerts if scope == "device"}
    got_records = [(i, st) for i, st, scope in alerts if scope == "device"]
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
            sum(scope != "device" for *_, scope in alerts),
        ),
        seconds=seconds,
    )


def run_oracle(stream: KafkaSettings, workdir: Path, expected: dict[int, int], timeout: float) -> Run:
    oracle = Run(stream, workdir, name="oracle")
    proc = oracle.start()
    finish(oracle, [proc], expected, timeout)
    return oracle


def _wait_progress(run: Run, expected: dict[int, int], target: float, proc: subprocess.Popen[str]) -> None:
    """Wait until ``target`` of the stream is committed (or the run is done)."""
    deadline = time.monotonic() + 120
    while run.progress(expected) < target and time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{run.name} died on its own: see {run.workdir}/{run.name}.log")
        time.sleep(0.05)


def kill_experiment(
    stream: KafkaSettings, workdir: Path, expected: dict[int, int], kills: int, rng: random.Random
) -> Comparison:
    """kill -9 the monitor ``kills`` times, each at a random point of its progress."""
    began = time.monotonic()
    faulty = Run(stream, workdir, name="kill")
    points = sorted(rng.uniform(0.05, 0.95) for _ in range(kills))
    for point in points:
        proc = faulty.start()
        _wait_progress(faulty, expected, point, proc)
        time.sleep(rng.uniform(0, 0.3))  # not only right after a commit
        proc.kill()
        proc.wait()
    proc = faulty.start()
    finish(faulty, [proc], expected, timeout=180)
    return compare("kill -9", kills, oracle_for(stream, workdir, expected), faulty, time.monotonic() - began)


def replica_experiment(
    stream: KafkaSettings, workdir: Path, expected: dict[int, int], actions: int, rng: random.Random
) -> Comparison:
    """Two replicas sharing one snapshot directory; random join, leave (SIGTERM) and kill -9."""
    began = time.monotonic()
    faulty = Run(stream, workdir, name="replicas")
    procs = [faulty.start()]
    done = 0
    for step in range(actions):
        _wait_progress(
            faulty, expected, (step + 1) / (actions + 2), next(p for p in procs if p.poll() is None)
        )
        alive = [p for p in procs if p.poll() is None]
        action = "join" if len(alive) < 2 else rng.choice(["leave", "kill"])
        if action == "join":
            procs.append(faulty.start())
        else:
            victim = rng.choice(alive)
            if action == "kill":
                victim.kill()
                victim.wait()
            else:
                stop(victim)
            if len(alive) == 1:
                procs.append(faulty.start())
        done += 1
        time.sleep(rng.uniform(0.5, 2.0))
    alive = [p for p in procs if p.poll() is None] or [faulty.start()]
    finish(faulty, alive, expected, timeout=180)
    return compare(
        "replica churn", done, oracle_for(stream, workdir, expected), faulty, time.monotonic() - began
    )


_oracles: dict[str, Run] = {}


def oracle_for(stream: KafkaSettings, workdir: Path, expected: dict[int, int]) -> Run:
    """The fault-free run of ``stream`` (made once per stream)."""
    if stream.readings_topic not in _oracles:
        _oracles[stream.readings_topic] = run_oracle(stream, workdir, expected, timeout=180)
    return _oracles[stream.readings_topic]


def probe(port: int, path: str) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


@dataclass
class Outage:
    kind: str
    outage_s: float
    live_throughout: bool
    degraded_seen: bool
    recovered_s: float  # from the broker's recovery to the new readings committed

    def lines(self) -> list[str]:
        ok = self.live_throughout and self.degraded_seen and self.recovered_s <= 15
        return [
            f"broker {self.kind} for {self.outage_s:.0f}s: {'PASS' if ok else 'FAIL'}",
            f"  /healthz 200 throughout: {self.live_throughout}; /readyz reported degraded: "
            f"{self.degraded_seen}; caught up {self.recovered_s:.1f}s after recovery",
        ]


def broker_experiment(
    broker: EmbeddedBroker, workdir: Path, kind: str, outage_s: float, devices: int = 4
) -> Outage:
    """Stop the broker (``sigstop``: freeze it; ``restart``: stop it and start an empty one on
    the same port) while the monitor runs, then publish more and time the catch-up."""
    stream = stream_settings(broker, f"outage{next(_runs)}")
    first = publish(stream, devices, 60, seed=1)
    run = Run(stream, workdir, name=f"outage-{kind}")
    port = free_port()
    proc = run.start(metrics_port=port)
    run.wait_committed({p: o + 1 for p, o in first.last_offsets.items()}, timeout=60)
    live, degraded = True, False
    pid = broker.pid
    if kind == "sigstop":
        os.kill(pid, signal.SIGSTOP)
    else:
        broker.stop()
    end = time.monotonic() + outage_s
    while time.monotonic() < end:
        live &= probe(port, "/healthz")[0] == 200 and proc.poll() is None
        status, body = probe(port, "/readyz")
        degraded |= status == 503 and bool(body.get("degraded"))
        time.sleep(0.5)
    if kind == "sigstop":
        os.kill(pid, signal.SIGCONT)
    else:
        broker.start()
    recovered = time.monotonic()
    if kind == "restart":
        ensure_topics(run.kafka, [stream.readings_topic])  # the in-memory broker forgot everything
    second = publish(stream, devices, 30, seed=2)
    expected = {p: o + 1 for p, o in second.last_offsets.items()}
    run.wait_committed(expected, timeout=60)
    took = time.monotonic() - recovered
    stop(proc)
    return Outage(kind, outage_s, live, degraded, took)


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
    parser.add_argument("--only", choices=["kill", "replicas", "broker"], action="append")
    args = parser.parse_args(argv)
    only = set(args.only or ["kill", "replicas", "broker"])
    rng = random.Random(args.seed)
    ok = True
    with tempfile.TemporaryDirectory(prefix="telemon-chaos-") as tmp, EmbeddedBroker() as broker:
        workdir = Path(tmp)
        stream = stream_settings(broker, "chaos")
        report = publish(stream, args.devices, args.duration)
        expected = {p: o + 1 for p, o in report.last_offsets.items()}
        print(
            f"stream: {report.readings_sent} readings, {report.malformed_sent} malformed, "
            f"{args.devices} devices"
        )
        experiments: list[Callable[[], Comparison | Outage]] = []
        if "kill" in only:
            experiments.append(lambda: kill_experiment(stream, workdir, expected, args.kills, rng))
        if "replicas" in only:
            experiments.append(lambda: replica_experiment(stream, workdir, expected, args.churn, rng))
        if "broker" in only:
            experiments += [
                lambda: broker_experiment(broker, workdir, "sigstop", args.outage),
                lambda: broker_experiment(broker, workdir, "restart", args.outage),
            ]
        for experiment in experiments:
            result = experiment()
            print("\n".join(result.lines()), flush=True)
            ok &= "FAIL" not in result.lines()[0]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
