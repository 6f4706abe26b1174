"""Apache Kafka for the integration tests: one KRaft node (broker and controller in one JVM) on
free loopback ports, its data and log in a directory of its own (kept when it stops or crashes).

The jars come from ``scripts/test-services`` (``scripts/test-services.d/kafka.sh`` fetches them
from Maven Central and sets ``TEST_KAFKA_LIBS``). The broker's settings are Kafka's defaults but
for what one node needs (replication factor 1) and what tests need to be quick: a group's first
rebalance is not delayed, members may use short session timeouts, and the group coordinator is
ready before the first test (a fresh cluster answers NOT_COORDINATOR until its offsets topic is
up). The hostile-stream tests send records up to 20 MB and records stamped days ahead, as a
producer with a wrong clock does: both are accepted here (Kafka's defaults refuse records over
1 MB and stamped more than an hour ahead; a deployment may raise either). Nothing expires: the
simulated streams carry event times from a fixed past start, which the default time retention
(7 days, checked every 5 minutes) would delete mid-suite.

A broker can crash and come back: :meth:`ApacheKafka.kill` SIGKILLs the JVM and
:meth:`ApacheKafka.start` starts it again on the same ports and log directory (the storage is
formatted the first time only), as a node with storage restarts. Given ``relay_port``, it has a
second listener that advertises that port, for a relay in front of it
(:class:`tests.chaos_harness.RelayedBroker`): clients that bootstrap there reach the broker only
through the relay, the others directly.
"""

from __future__ import annotations

import base64
import os
import re
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path
from types import TracebackType

from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from monitor.cli.broker import free_port

SETTINGS = """\
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:{controller}
listeners={listeners}
advertised.listeners={advertised}
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,RELAYED:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs={data}
offsets.topic.replication.factor=1
offsets.topic.num.partitions=4
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
group.initial.rebalance.delay.ms=0
group.min.session.timeout.ms=1000
message.max.bytes=20000000
log.message.timestamp.after.max.ms=9223372036854775807
log.retention.ms=-1
"""


def kafka_libs() -> Path:
    """The directory of Apache Kafka's jars that ``scripts/test-services`` prepared."""
    libs = os.environ.get("TEST_KAFKA_LIBS")
    if not libs or not (Path(libs) / ".complete").is_file():
        raise RuntimeError(
            "the integration tests run against Apache Kafka: run them through scripts/test-services "
            "(make test does), which fetches it and sets TEST_KAFKA_LIBS"
        )
    return Path(libs)


def cluster_id() -> str:
    """A random cluster id as Kafka writes them (``kafka-storage random-uuid``): URL-safe base64
    of 16 bytes, never starting with "-", which the storage tool would take for an option."""
    while (found := base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")).startswith("-"):
        pass
    return found


def kafka_version(libs: Path) -> str:
    """Apache Kafka's version, from the name of its broker jar (``kafka_2.13-4.1.1.jar``)."""
    for jar in sorted(libs.glob("kafka_2.*-*.jar")):
        if found := re.fullmatch(r"kafka_2\.\d+-(.+)\.jar", jar.name):
            return found.group(1)
    raise RuntimeError(f"no kafka_2.*-VERSION.jar in {libs}")


class ApacheKafka:
    """A single-node Kafka in ``workdir``: :meth:`start` waits until it answers (formatting the
    storage the first time), :meth:`stop` shuts it down, :meth:`kill` crashes it; either way it
    may be started again with its ports and data. A context manager starts and stops it."""

    def __init__(self, workdir: Path, relay_port: int | None = None) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.controller_port = free_port()
        self.relay_port = relay_port  # advertised by the RELAYED listener
        self.relayed_port = free_port() if relay_port else None  # where the RELAYED listener binds
        self.log = workdir / "kafka.log"
        self.data = workdir / "data"
        self.starts = 0  # how many times the JVM was started
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def version(self) -> str:
        return kafka_version(kafka_libs())

    def describe(self) -> str:
        """One line for test reports: which broker, which version, where."""
        return f"Apache Kafka {self.version} (KRaft, one node, {self.bootstrap_servers})"

    @property
    def running(self) -> bool:
        return self._proc is not None

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise RuntimeError("Apache Kafka is not running")
        return self._proc.pid

    def _java(self, main: str, *args: str) -> list[str]:
        return ["java", "-Xms256m", "-Xmx1g", "-cp", f"{kafka_libs()}/*", main, *args]

    def _settings(self) -> str:
        listeners = [f"PLAINTEXT://127.0.0.1:{self.port}", f"CONTROLLER://127.0.0.1:{self.controller_port}"]
        advertised = [f"PLAINTEXT://127.0.0.1:{self.port}"]
        if self.relayed_port is not None:
            listeners.append(f"RELAYED://127.0.0.1:{self.relayed_port}")
            advertised.append(f"RELAYED://127.0.0.1:{self.relay_port}")
        return SETTINGS.format(
            listeners=",".join(listeners),
            advertised=",".join(advertised),
            controller=self.controller_port,
            data=self.data,
        )

    def start(self, timeout: float = 90.0) -> ApacheKafka:
        """Start the JVM (formatting the storage if it never ran) and wait until it answers."""
        config = self.workdir / "server.properties"
        config.write_text(self._settings())
        with self.log.open("ab") as out:
            if not (self.data / "meta.properties").is_file():
                fmt = ["kafka.tools.StorageTool", "format", "-t", cluster_id(), "-c", str(config)]
                subprocess.run(self._java(*fmt), stdout=out, stderr=subprocess.STDOUT, check=True)
            self._proc = subprocess.Popen(
                self._java("kafka.Kafka", str(config)), stdout=out, stderr=subprocess.STDOUT
            )
        self.starts += 1
        self._wait_ready(timeout)
        return self

    def _wait_ready(self, timeout: float) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"Apache Kafka exited with code {self._proc.returncode}: see {self.log}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
            except OSError:
                time.sleep(0.2)
                continue
            AdminClient({"bootstrap.servers": self.bootstrap_servers}).list_topics(timeout=10)
            if self._coordinator_ready():
                return
        self.stop()
        raise RuntimeError(
            f"Apache Kafka did not answer on {self.bootstrap_servers} in {timeout}s: see {self.log}"
        )

    def _coordinator_ready(self) -> bool:
        probe = Consumer({"bootstrap.servers": self.bootstrap_servers, "group.id": "readiness-probe"})
        try:
            probe.committed([TopicPartition("readiness-probe", 0)], timeout=5)
            return True
        except KafkaException:
            time.sleep(0.2)
            return False
        finally:
            probe.close()

    def kill(self) -> None:
        """SIGKILL the JVM, as a crash would: no shutdown, the log directory as it was left."""
        if self._proc is None:
            return
        os.kill(self._proc.pid, signal.SIGCONT)  # a frozen JVM dies as well
        self._proc.kill()
        self._proc.wait()
        self._proc = None

    def stop(self) -> None:
        """A clean shutdown (SIGTERM; SIGKILL after 30 s)."""
        if self._proc is None:
            return
        os.kill(self._proc.pid, signal.SIGCONT)  # in case it was left frozen
        self._proc.terminate()
        try:
            self._proc.wait(30)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._proc = None

    def __enter__(self) -> ApacheKafka:
        return self.start()

    def __exit__(
        self, typ: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
