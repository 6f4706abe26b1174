"""Apache Kafka for the integration tests: one KRaft node (broker and controller in one JVM) on
free loopback ports, its data and log in a directory of its own, gone when it stops.

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
"""

from __future__ import annotations

import base64
import os
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
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller}
advertised.listeners=PLAINTEXT://127.0.0.1:{port}
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
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


class ApacheKafka:
    """Start a fresh single-node Kafka in ``workdir``, wait until it answers, stop it on exit."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.log = workdir / "kafka.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _java(self, main: str, *args: str) -> list[str]:
        return ["java", "-Xms256m", "-Xmx1g", "-cp", f"{kafka_libs()}/*", main, *args]

    def start(self, timeout: float = 60.0) -> ApacheKafka:
        config = self.workdir / "server.properties"
        data = self.workdir / "data"
        config.write_text(SETTINGS.format(port=self.port, controller=free_port(), data=data))
        cluster = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        with self.log.open("ab") as out:
            fmt = ["kafka.tools.StorageTool", "format", "-t", cluster, "-c", str(config)]
            subprocess.run(self._java(*fmt), stdout=out, stderr=subprocess.STDOUT, check=True)
            self._proc = subprocess.Popen(
                self._java("kafka.Kafka", str(config)), stdout=out, stderr=subprocess.STDOUT
            )
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
                return self
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

    def stop(self) -> None:
        if self._proc is None:
            return
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
