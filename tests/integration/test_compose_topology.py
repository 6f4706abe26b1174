"""The compose stack's telemon topology, run without Docker: compose.yaml's own commands and
environment (as ``docker-compose config`` resolves them), processes instead of containers.

- ``kafka``: the session's Apache Kafka (tests/apache_kafka.py), the same version as the image;
- ``kafka-init``: its bash script as it is, run by bash, with ``/opt/kafka/bin/kafka-topics.sh``
  standing for a stand-in that does what the tool does with the options the script passes
  (``--create --if-not-exists``, partitions, ``--config``), through Kafka's admin API (the test
  jars lack Kafka's command-line tools);
- ``monitor``: two replicas, each with a state directory of its own (a container's volume: no
  shared folder) and its own metrics port on loopback (a container's own network namespace);
- ``simulator``: its command without ``--realtime`` (paced to the wall clock the scenario lasts
  12 minutes; unpaced, the same readings arrive as fast as the broker takes them).

The service name ``kafka:9092`` becomes the broker's address. Checked: the replicas join one group
and split the partitions, alerts are produced, the version one replica registers is installed in
the other's directory (verified with the shared key), ``telemon registry promote`` run with a third
state directory reaches both (the owner serves the version), both are ready, and the partitions of
a replica that stops go to the other. The seconds a second
replica takes to join and take its partitions are printed (``pytest -s``) for the README.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import stat
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from monitor.cli.broker import free_port
from monitor.govern.registry import ModelRegistry
from monitor.settings import KafkaSettings
from tests.apache_kafka import ApacheKafka
from tests.chaos_harness import committed
from tests.conftest import read_topic, scrape, tool, total

ROOT = Path(__file__).resolve().parents[2]
KAFKA_SERVICE = "kafka:9092"

#: What ``kafka-topics.sh`` does with the options kafka-init passes, through Kafka's admin API.
KAFKA_TOPICS = """\
#!{python}
import argparse, sys
from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic
p = argparse.ArgumentParser()
p.add_argument("--bootstrap-server", required=True)
p.add_argument("--create", action="store_true", required=True)
p.add_argument("--if-not-exists", action="store_true")
p.add_argument("--topic", required=True)
p.add_argument("--partitions", type=int, required=True)
p.add_argument("--replication-factor", type=int, required=True)
p.add_argument("--config", action="append", default=[])
a = p.parse_args()
config = dict(c.split("=", 1) for c in a.config)
admin = AdminClient({{"bootstrap.servers": a.bootstrap_server}})
future = admin.create_topics([NewTopic(a.topic, a.partitions, a.replication_factor, config=config)])[a.topic]
try:
    future.result(30)
    print(f"Created topic {{a.topic}}.")
except KafkaException as exc:
    if not (a.if_not_exists and exc.args[0].name() == "TOPIC_ALREADY_EXISTS"):
        sys.exit(f"Error while executing topic command: {{exc}}")
"""


def compose_config(key: str) -> dict[str, Any]:
    """compose.yaml as ``docker-compose config`` resolves it (variables substituted)."""
    env = {k: v for k, v in os.environ.items() if k != "TELEMON_PARTITIONS"}
    out = subprocess.run(
        [tool("docker-compose"), "--file", "compose.yaml", "config"],
        cwd=ROOT,
        env=env | {"TELEMON_REGISTRY__SIGNING_KEY": key},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    config: dict[str, Any] = yaml.safe_load(out.stdout)
    return config


def container_env(service: dict[str, Any], broker: ApacheKafka) -> dict[str, str]:
    """A service's environment with the ``kafka`` service's address replaced by the broker's."""
    env = {str(k): str(v) for k, v in service.get("environment", {}).items()}
    return {k: v.replace(KAFKA_SERVICE, broker.bootstrap_servers) for k, v in env.items()}


def host_env(**extra: str) -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("TELEMON_")} | extra


def kafka_init(service: dict[str, Any], broker: ApacheKafka, workdir: Path) -> str:
    """Run kafka-init's script (compose's ``$$`` is a ``$``); returns its output."""
    stand_in = workdir / "kafka-topics.sh"
    stand_in.write_text(KAFKA_TOPICS.format(python=sys.executable), encoding="utf-8")
    stand_in.chmod(stand_in.stat().st_mode | stat.S_IXUSR)
    script = service["command"][0].replace("$$", "$").replace("/opt/kafka/bin/kafka-topics.sh", str(stand_in))
    script = script.replace(KAFKA_SERVICE, broker.bootstrap_servers)
    done = subprocess.run(
        [*service["entrypoint"], script],
        env=host_env(**container_env(service, broker)),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


class Replica:
    """One ``monitor`` container as a process: compose's command and environment, its own state
    directory and metrics port."""

    def __init__(self, name: str, service: dict[str, Any], broker: ApacheKafka, workdir: Path) -> None:
        self.name, self.port = name, free_port()
        self.state_dir = workdir / name
        self.log = workdir / f"{name}.log"
        env = container_env(service, broker) | {
            "TELEMON_STATE_DIR": str(self.state_dir),  # the container's volume (Dockerfile VOLUME)
            "TELEMON_METRICS__HOST": "127.0.0.1",
            "TELEMON_METRICS__PORT": str(self.port),
        }
        cmd = [sys.executable, "-m", "monitor.cli.main", *service["command"]]
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                cmd, cwd=ROOT, env=host_env(**env), stdout=out, stderr=subprocess.STDOUT
            )

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=4) as resp:
                return bool(resp.status == 200)
        except OSError:
            return False

    def assigned(self) -> int:
        try:
            return int(total(scrape(self.port), "telemon_assigned_partitions"))
        except OSError:
            return -1

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return -9


def wait_for(what: str, check: Any, replicas: list[Replica], timeout: float = 180.0) -> float:
    """Seconds until ``check()`` holds; fails if a replica exits or ``timeout`` passes."""
    began = time.monotonic()
    while not check():
        for r in replicas:
            assert r.proc.poll() is None, f"{r.name} exited: {r.log.read_text(errors='replace')[-3000:]}"
        if time.monotonic() - began > timeout:
            logs = "\n".join(f"--- {r.name}:\n{r.log.read_text(errors='replace')[-2000:]}" for r in replicas)
            pytest.fail(f"{what}: not within {timeout}s; assigned {[r.assigned() for r in replicas]}\n{logs}")
        time.sleep(0.25)
    return time.monotonic() - began


def group_split(admin: AdminClient, group: str, topic: str) -> list[int]:
    """The partitions of ``topic`` each member of ``group`` holds (sorted), as the broker says."""
    try:
        description = admin.describe_consumer_groups([group])[group].result(10)
    except KafkaException:
        return []
    held = [sum(tp.topic == topic for tp in m.assignment.topic_partitions) for m in description.members]
    return sorted(held)


def ends(k: KafkaSettings, partitions: int) -> dict[int, int]:
    """The end of each partition of the readings topic that holds readings (the scenario's 20
    devices need not hash onto every partition; an empty one has nothing to commit)."""
    c = Consumer({"bootstrap.servers": k.bootstrap_servers, "group.id": "ends"})
    try:
        found = {
            p: c.get_watermark_offsets(TopicPartition(k.readings_topic, p), timeout=10)[1]
            for p in range(partitions)
        }
    finally:
        c.close()
    return {p: end for p, end in found.items() if end > 0}


def _values(k: KafkaSettings) -> list[bytes]:
    return [m.value() or b"" for m in read_topic(k, k.models_topic)]


def _trail(reg: ModelRegistry, pairs: list[tuple[str, str]]) -> list[tuple[str, str, str, int]]:
    """The registrations and promotions of ``pairs`` in a replica's audit log. The order may
    differ between replicas: the owner records a batch's versions before its promotions, the
    audit topic carries the batch's events (published with its alerts) before the versions."""
    return [
        (e.kind, e.device_id, e.sensor, e.version)
        for pair in pairs
        for e in reg.history(*pair)
        if e.kind in ("registered", "promoted")
    ]


@pytest.fixture
def replicas() -> Iterator[list[Replica]]:
    started: list[Replica] = []
    yield started
    for r in started:
        if r.proc.poll() is None:
            r.proc.kill()
            r.proc.wait()


@pytest.mark.timeout(900)
def test_the_compose_topology_without_docker(
    broker: ApacheKafka, tmp_path: Path, replicas: list[Replica]
) -> None:
    key = secrets.token_hex(32)
    services = compose_config(key)["services"]
    monitor = services["monitor"]
    partitions = int(services["kafka-init"]["environment"]["PARTITIONS"])
    created = kafka_init(services["kafka-init"], broker, tmp_path)
    assert "telemon.artifacts" in created and "telemon.audit" in created

    group, topic = monitor["environment"]["TELEMON_KAFKA__GROUP_ID"], KafkaSettings().readings_topic
    admin = AdminClient({"bootstrap.servers": broker.bootstrap_servers})
    replicas.append(Replica("monitor-1", monitor, broker, tmp_path))
    first = wait_for(
        "the first replica ready with every partition",
        lambda: group_split(admin, group, topic) == [partitions] and replicas[0].ready(),
        replicas,
    )
    print(f"\nfirst replica started -> ready with all {partitions} partitions: {first:.1f}s")
    replicas.append(Replica("monitor-2", monitor, broker, tmp_path))
    joined = wait_for(
        "the second replica's share",
        lambda: (
            len(split := group_split(admin, group, topic)) == 2
            and min(split) > 0
            and sum(split) == partitions
            and all(r.ready() for r in replicas)
        ),
        replicas,
    )
    split = group_split(admin, group, topic)
    print(f"second replica started -> one group of two, partitions split {split}, both ready: {joined:.1f}s")

    simulator = services["simulator"]
    command = [c for c in simulator["command"] if c != "--realtime"]
    began = time.monotonic()
    sim = subprocess.run(
        [sys.executable, "-m", "monitor.cli.main", *command],
        cwd=ROOT,
        env=host_env(**container_env(simulator, broker)),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert sim.returncode == 0, sim.stderr[-3000:]
    print(f"simulator done: {time.monotonic() - began:.1f}s")
    k = KafkaSettings(
        bootstrap_servers=broker.bootstrap_servers,
        group_id=monitor["environment"]["TELEMON_KAFKA__GROUP_ID"],
        partitions=partitions,
    )
    end = ends(k, partitions)
    wait_for(
        f"the stream committed up to {end}",
        lambda: committed(k, list(end)) == end,
        replicas,
        timeout=300,
    )
    took = time.monotonic() - began
    print(f"simulated {sum(end.values())} messages; committed {took:.1f}s after the simulator started")

    alerts = [json.loads(m.value() or b"") for m in read_topic(k, k.alerts_topic)]
    assert any(a["rule"] == "score_drift" and a["device_id"] == "dev-0007" for a in alerts), alerts[:5]
    refs = sorted({(v["device_id"], v["sensor"], v["version"]) for v in map(json.loads, _values(k))})
    assert ("dev-0007", "temperature", 2) in refs, refs
    registries = [ModelRegistry(r.state_dir / "registry", key.encode()) for r in replicas]
    installed = wait_for(
        "every version in both replicas' directories",
        lambda: all(reg.path(*ref).is_dir() for reg in registries for ref in refs),
        replicas,
    )
    print(f"versions {refs} in both replicas' registries {installed:.1f}s after the stream was committed")
    for ref in refs:
        assert registries[0].load(*ref).params() == registries[1].load(*ref).params()
    pairs = sorted({ref[:2] for ref in refs})
    wait_for(
        "the same audit trail in both",
        lambda: sorted(_trail(registries[0], pairs)) == sorted(_trail(registries[1], pairs)),
        replicas,
    )
    registered = [e for e in _trail(registries[0], pairs) if e[0] == "registered"]
    assert sorted(registered) == sorted(set(registered)) and len(registered) == len(refs)

    # An operator's promotion, from a third disk, reaches both replicas; the owner serves it.
    promote = ["registry", "promote", "dev-0007", "temperature", "1", "--reason", "compose test"]
    operator = container_env(monitor, broker) | {"TELEMON_STATE_DIR": str(tmp_path / "operator")}
    done = subprocess.run(
        [sys.executable, "-m", "monitor.cli.main", *promote, *monitor["command"][1:]],
        cwd=ROOT,
        env=host_env(**operator),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    wait_for(
        "the promotion in both replicas, served by the owner",
        lambda: (
            all(reg.serving("dev-0007", "temperature") == 1 for reg in registries)
            and any("dev-0007/temperature now serves v1" in r.log.read_text() for r in replicas)
        ),
        replicas,
    )

    assert all(r.ready() for r in replicas)
    assert sum(r.assigned() for r in replicas) == partitions
    # Scale down: the partitions of a replica that stops go to the other (one at a time: a replica
    # stopped while it takes partitions over may not commit its revocation).
    assert replicas[1].stop() == 0
    took = wait_for(
        "the remaining replica with every partition",
        lambda: group_split(admin, group, topic) == [partitions] and replicas[0].ready(),
        replicas[:1],
    )
    print(f"second replica stopped -> the first holds all {partitions} partitions, ready: {took:.1f}s")
    assert replicas[0].stop() == 0
