"""Liveness and readiness, and the one HTTP endpoint that serves them next to ``/metrics``.

- ``GET /healthz`` (liveness): 200 while the consume loop keeps turning; 503 once its last
  iteration is older than ``metrics.liveness_timeout_s`` or the loop has stopped. A failing
  liveness probe means "restart me".
- ``GET /readyz`` (readiness): 200 when the process is live, the consumer has joined its group
  (it got an assignment, possibly empty: a spare replica is a hot standby), the broker is
  reachable, the last batch's outputs were delivered, and the loop is not stalled. While the
  broker is unreachable (all brokers down, or the group lost because its coordinator did not
  answer), outputs cannot be delivered, or the loop has not turned for ``stall_timeout_s`` (a
  quarter of the liveness timeout by default: a call waiting on a frozen broker, such as a
  commit, holds the loop until the broker answers or the call times out) the service is
  *degraded* (``"degraded": true``): it stays up (liveness holds), pauses consumption and
  retries; readiness returns once it has recovered.
- ``GET /metrics``: the Prometheus exposition of the injected registry.

Both probes answer with a small JSON document explaining the verdict. The service writes the
state (:class:`Health`) from its loop; the HTTP threads only read it.

The endpoint serves HTTPS when given an :class:`ssl.SSLContext` (:func:`server_tls_context`). The
TLS handshake runs in the connection's own thread. Connections are bounded: at most
:data:`MAX_CONNECTIONS` at a time (more are closed at once, unread), and each is cut
:data:`REQUEST_DEADLINE_S` after it was accepted, however slowly its client trickles bytes, so
neither a slow or broken client nor a flood of idle connections can hold threads.
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import ssl
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app

log = logging.getLogger(__name__)

#: Seconds a connection may stay silent (handshake, request) before it is dropped.
CONNECTION_TIMEOUT_S = 5.0
#: Seconds a connection may last in all (a scrape or a probe takes milliseconds).
REQUEST_DEADLINE_S = 10.0
#: Connections served at once; more are closed unread.
MAX_CONNECTIONS = 64

StartResponse = Callable[[str, list[tuple[str, str]]], Any]
WSGIApp = Callable[[dict[str, Any], StartResponse], Iterable[bytes]]


@dataclass
class Health:
    """What the probes report, written by the service loop."""

    liveness_timeout_s: float
    clock: Callable[[], float] = time.monotonic
    last_loop: float = field(init=False)
    joined: bool = False  # an assignment was received and not revoked since
    partitions: int = 0
    broker_error: str | None = None  # set by "all brokers down", cleared by any broker answer
    delivery_error: str | None = None  # the last batch's outputs were not delivered
    stopped: bool = False
    stall_timeout_s: float | None = None  # readiness fails past this loop age (None: liveness / 4)

    def __post_init__(self) -> None:
        self.last_loop = self.clock()
        if self.stall_timeout_s is None:
            self.stall_timeout_s = self.liveness_timeout_s / 4

    def tick(self) -> None:
        """One iteration of the consume loop."""
        self.last_loop = self.clock()

    def assigned(self, partitions: int) -> None:
        self.joined, self.partitions, self.broker_error = True, partitions, None

    def revoked(self) -> None:
        self.joined, self.partitions = False, 0

    def lost(self) -> None:
        """The group moved on without this member: its coordinator did not hear from it within the
        session timeout (most often an unreachable or frozen broker). Degraded until partitions are
        assigned again."""
        self.broker_error = "partitions lost: the group coordinator did not hear from this member in time"

    def liveness(self) -> tuple[bool, dict[str, Any]]:
        age = self.clock() - self.last_loop
        ok = not self.stopped and age <= self.liveness_timeout_s
        return ok, {
            "loop_age_s": round(age, 3),
            "timeout_s": self.liveness_timeout_s,
            "stopped": self.stopped,
        }

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        live, detail = self.liveness()
        stalled = self.clock() - self.last_loop > (self.stall_timeout_s or 0)
        degraded = self.broker_error is not None or self.delivery_error is not None or stalled
        ok = live and self.joined and not degraded
        detail |= {
            "degraded": degraded,
            "stalled": stalled,
            "live": live,
            "joined": self.joined,
            "partitions": self.partitions,
            "broker_error": self.broker_error,
            "delivery_error": self.delivery_error,
        }
        return ok, detail


def make_app(registry: CollectorRegistry, health: Health) -> WSGIApp:
    """``/metrics`` (and ``/``), ``/healthz``, ``/readyz``; anything else is 404."""
    metrics_app = make_wsgi_app(registry)
    probes = {"/healthz": health.liveness, "/readyz": health.readiness}

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO") or "/"
        if path in ("/", "/metrics"):
            return metrics_app(environ, start_response)  # type: ignore[no-any-return]
        probe = probes.get(path)
        if probe is None:
            return _reply(start_response, "404 Not Found", {"error": f"no such endpoint: {path}"})
        ok, detail = probe()
        status = "200 OK" if ok else "503 Service Unavailable"
        return _reply(start_response, status, {"status": "ok" if ok else "fail", **detail})

    return app


def _reply(start_response: StartResponse, status: str, body: dict[str, Any]) -> list[bytes]:
    data = json.dumps(body).encode()
    headers = [
        ("Content-Type", "application/json"),
        ("Content-Length", str(len(data))),
        ("Cache-Control", "no-store"),
    ]
    start_response(status, headers)
    return [data]


def server_tls_context(cert_file: Path, key_file: Path) -> ssl.SSLContext:
    """A server-side context with the endpoint's certificate chain and key, TLS 1.2 or newer.

    Raises ValueError naming the files (never their content). An encrypted key is refused
    instead of letting OpenSSL ask for its passphrase on a terminal the service does not have.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert_file, key_file, password=_no_passphrase)
    except _EncryptedKey:
        raise ValueError(f"metrics TLS: {key_file} is encrypted; give an unencrypted key") from None
    except OSError as exc:  # ssl.SSLError included
        reason = getattr(exc, "reason", None) or exc.strerror or type(exc).__name__
        raise ValueError(
            f"metrics TLS: cannot use {cert_file} with {key_file} (a PEM certificate chain and its "
            f"PEM private key): {reason}"
        ) from None
    return context


class _EncryptedKey(Exception):
    pass


def _no_passphrase() -> str:
    raise _EncryptedKey


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 128  # the listen backlog: a burst of connects is accepted, not retried
    refused = 0  # connections closed unread: MAX_CONNECTIONS were open

    def server_activate(self) -> None:
        super().server_activate()
        self.slots = threading.BoundedSemaphore(MAX_CONNECTIONS)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self.slots.acquire(blocking=False):
            self.refused += 1
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.slots.release()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that goes away, stalls or fails the TLS handshake is routine: one debug line."""
        exc = sys.exc_info()[1]
        if isinstance(exc, OSError):
            log.debug("http connection from %s dropped: %s", client_address[0], exc)
            return
        super().handle_error(request, client_address)


class _Server6(_Server):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    timeout = CONNECTION_TIMEOUT_S

    def setup(self) -> None:
        self._deadline = threading.Timer(REQUEST_DEADLINE_S, self._cut)
        self._deadline.daemon = True
        self._deadline.start()
        try:
            super().setup()
            if isinstance(self.connection, ssl.SSLSocket):
                self.connection.do_handshake()  # here, in this connection's thread
        except BaseException:  # finish() will not run: release the files that hold the socket
            self._deadline.cancel()
            for f in (getattr(self, "wfile", None), getattr(self, "rfile", None)):
                if f is not None:
                    with contextlib.suppress(OSError):
                        f.close()
            raise

    def finish(self) -> None:
        self._deadline.cancel()
        super().finish()

    def _cut(self) -> None:
        """The deadline passed: end the connection, which ends a read blocked on it."""
        with contextlib.suppress(OSError):  # already closed
            self.request.shutdown(socket.SHUT_RDWR)

    def log_message(self, format: str, *args: Any) -> None:
        """Probes and scrapes arrive every few seconds: no access log."""


class HttpEndpoint:
    """The WSGI app served from a daemon thread on ``host:port`` (``port`` 0: any free port),
    over HTTPS when ``tls`` is given."""

    def __init__(self, host: str, port: int, app: WSGIApp, tls: ssl.SSLContext | None = None) -> None:
        server_class = _Server6 if ":" in host else _Server
        self.server = make_server(host, port, app, server_class, _QuietHandler)
        if tls is not None:
            # Accepting stays non-blocking: each connection does its handshake in its own thread.
            self.server.socket = tls.wrap_socket(
                self.server.socket, server_side=True, do_handshake_on_connect=False
            )
        self.scheme = "http" if tls is None else "https"
        self.thread = threading.Thread(
            target=self.server.serve_forever, args=(0.1,), name="telemon-http", daemon=True
        )
        self.thread.start()

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()
