"""Alert sinks besides the Kafka alerts topic: Alertmanager's v2 API (``POST /api/v2/alerts``).

:class:`AlertmanagerSink` posts firing and resolved records (pending ones are not alerts yet) as
Alertmanager alerts: labels ``alertname`` (the rule), ``severity``, ``scope``, ``device_id``,
``sensor``, ``alert_id``; annotations ``summary``, ``description``, ``signals`` (JSON);
``startsAt`` the episode start; ``endsAt`` the record's time for resolved records.

Alertmanager resolves an alert by itself once its ``endsAt`` has passed, so, like Prometheus,
firing alerts are posted with ``endsAt`` = now + 4 x ``resend_interval_s`` and re-posted by
:meth:`AlertmanagerSink.heartbeat` every ``resend_interval_s`` while they fire. If telemon stops,
its alerts resolve in Alertmanager after that validity instead of firing forever.

Times are event times, clamped to the wall clock (a device clock ahead of it would otherwise make
Alertmanager keep a resolved alert active, or refuse an alert that starts in the future).

:meth:`AlertmanagerSink.send` raises :class:`SinkUnavailable` unless Alertmanager accepted every
record (retrying connection failures, timeouts, 408, 429 and 5xx with a short backoff within
``timeout_s``), so the caller does not commit the offsets of a batch whose alerts were not
delivered. Messages never contain URL credentials.

The requests go through one pooled ``httpx`` client per sink (kept-alive connections, the system's
trust store for HTTPS, proxies from the environment as any HTTP client) and the retries through a
``tenacity`` policy: exponential backoff from 0.1 s to 1 s, never sleeping past the deadline.
"""

from __future__ import annotations

import json
import logging
import ssl
import time
import urllib.parse
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import tenacity

from monitor.errors import SinkRejected, SinkUnavailable
from monitor.govern.alerts import Alert, annotations_of, labels_of, rfc3339

log = logging.getLogger(__name__)

VALIDITY_FACTOR = 4  # a posted firing alert stays active for this many resend intervals
MAX_PER_REQUEST = 1000  # alerts per POST (bounds the request size of a heartbeat in a large incident)
_FIRST_BACKOFF_S = 0.1
_MAX_BACKOFF_S = 1.0
_RETRYABLE_4XX = frozenset({408, 429})


@dataclass(frozen=True)
class _Endpoint:
    api_url: str  # {base}/api/v2/alerts, without credentials
    shown: str  # the base URL without credentials, for messages
    auth: httpx.BasicAuth | None  # from the URL's user info


def _endpoint(url: str) -> _Endpoint:
    """Split credentials off the URL: they travel in a header and never appear in a message."""
    parts = urllib.parse.urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not _has_host(parts) or parts.query or parts.fragment:
        raise ValueError(
            "the Alertmanager URL must look like http(s)://host:port[/path-prefix] "
            f"(scheme {parts.scheme or 'missing'!r}, no query or fragment)"
        )
    netloc = parts.netloc.rpartition("@")[2]
    base = urllib.parse.urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
    auth = None
    if parts.username is not None:
        user = urllib.parse.unquote(parts.username)
        auth = httpx.BasicAuth(user, urllib.parse.unquote(parts.password or ""))
    return _Endpoint(f"{base}/api/v2/alerts", base, auth)


def _has_host(parts: urllib.parse.SplitResult) -> bool:
    try:
        _ = parts.port  # raises on a port that is not a number in 0..65535
    except ValueError:
        return False
    return bool(parts.hostname)


def postable(
    alert: Alert, now_s: float, valid_for_s: float, generator_url: str | None = None
) -> dict[str, Any]:
    """One alert of the ``POST /api/v2/alerts`` body.

    ``startsAt`` is the episode start, ``endsAt`` the record's time if resolved, else now +
    ``valid_for_s``; both clamped so that startsAt <= endsAt and a resolved end is not in the future.
    """
    now_ms = int(now_s * 1000)
    starts = min(alert.started_at, now_ms)
    if alert.status == "resolved":
        ends = max(min(alert.ts, now_ms), starts)
    else:
        ends = now_ms + int(valid_for_s * 1000)
    body: dict[str, Any] = {
        "labels": labels_of(alert),
        "annotations": annotations_of(alert),
        "startsAt": rfc3339(starts),
        "endsAt": rfc3339(ends),
    }
    if generator_url:
        body["generatorURL"] = generator_url
    return body


class AlertmanagerSink:
    """Posts alerts to one Alertmanager and keeps its firing alerts alive.

    ``clock`` returns wall-clock seconds (``time.time``); it is injectable for tests. Call
    :meth:`send` with each batch's records before committing its offsets, and :meth:`heartbeat`
    regularly (every loop turn: it posts only when a resend is due).
    """

    def __init__(
        self,
        url: str,
        timeout_s: float = 5.0,
        resend_interval_s: float = 60.0,
        generator_url: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if timeout_s <= 0 or resend_interval_s <= 0:
            raise ValueError("AlertmanagerSink needs timeout_s > 0 and resend_interval_s > 0")
        self._endpoint = _endpoint(url)
        self.timeout_s = timeout_s
        self.resend_interval_s = resend_interval_s
        self.generator_url = generator_url
        self.clock = clock
        self._firing: dict[str, Alert] = {}  # alert_id -> latest firing record
        self._last_resend = clock()
        self._client = httpx.Client(
            auth=self._endpoint.auth,
            verify=ssl.create_default_context(),  # the system's trust store, as before httpx
            follow_redirects=False,
            limits=httpx.Limits(max_connections=4, max_keepalive_connections=1),
        )

    @property
    def url(self) -> str:
        """The base URL, without credentials."""
        return self._endpoint.shown

    @property
    def firing(self) -> list[Alert]:
        """The firing alerts re-posted by :meth:`heartbeat`."""
        return list(self._firing.values())

    def send(self, alerts: Iterable[Alert]) -> int:
        """Post the firing and resolved records (in order) and return how many were posted.

        Raises :class:`SinkUnavailable` unless Alertmanager accepted all of them.
        """
        batch = [a for a in alerts if a.status in ("firing", "resolved")]
        if batch:
            self._post_all(batch, self.clock())
        for a in batch:
            if a.status == "firing":
                self._firing[a.alert_id] = a
            else:
                self._firing.pop(a.alert_id, None)
        return len(batch)

    def heartbeat(self, now: float | None = None) -> int:
        """Re-post every firing alert if ``resend_interval_s`` has passed since the last resend;
        return how many were posted. A failure raises :class:`SinkUnavailable` and loses nothing
        (the alerts stay firing here and are re-posted at the next due heartbeat), so the caller
        may log it and go on."""
        now = self.clock() if now is None else now
        if not self._firing or now - self._last_resend < self.resend_interval_s:
            return 0
        self._last_resend = now
        firing = self.firing
        self._post_all(firing, now)
        return len(firing)

    def adopt(self, firing: Iterable[Alert]) -> None:
        """Firing alerts this process did not send (e.g. episodes restored at start-up) to keep
        alive; they are posted at the next heartbeat."""
        for a in firing:
            if a.status == "firing":
                self._firing[a.alert_id] = a
        self._last_resend = float("-inf")

    def close(self) -> None:
        """Close the pooled connections."""
        self._client.close()

    def _post_all(self, alerts: Sequence[Alert], now: float) -> None:
        deadline = time.monotonic() + self.timeout_s
        valid_for = VALIDITY_FACTOR * self.resend_interval_s
        for i in range(0, len(alerts), MAX_PER_REQUEST):
            chunk = alerts[i : i + MAX_PER_REQUEST]
            body = [postable(a, now, valid_for, self.generator_url) for a in chunk]
            self._post(json.dumps(body).encode(), len(chunk), deadline)

    def _post(self, data: bytes, count: int, deadline: float) -> None:
        """POST with retries until ``deadline``; raise with the last problem if it never succeeds."""

        def give_up(state: tenacity.RetryCallState) -> None:
            problem = state.outcome.exception() if state.outcome is not None else None
            raise SinkUnavailable(
                f"Alertmanager at {self.url} did not accept {count} alert(s): {problem} "
                f"({state.attempt_number} attempt(s) within {self.timeout_s:g}s); check that it is "
                "running and reachable"
            )

        def log_retry(state: tenacity.RetryCallState) -> None:
            problem = state.outcome.exception() if state.outcome is not None else None
            log.debug("Alertmanager at %s: %s (attempt %d)", self.url, problem, state.attempt_number)

        tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(_Retryable),
            wait=tenacity.wait_exponential(multiplier=_FIRST_BACKOFF_S, max=_MAX_BACKOFF_S),
            stop=_StopBeforeDeadline(deadline),
            before_sleep=log_retry,
            retry_error_callback=give_up,
        )(self._attempt, data, count, deadline)

    def _attempt(self, data: bytes, count: int, deadline: float) -> None:
        """One POST: returns if accepted, raises :class:`_Retryable` with what went wrong, or
        :class:`SinkRejected` on an answer that retrying cannot change."""
        timeout = max(deadline - time.monotonic(), 0.05)
        try:
            response = self._client.post(
                self._endpoint.api_url, content=data, headers=_HEADERS, timeout=timeout
            )
        except httpx.RequestError as exc:  # refused, timed out, dropped connections
            raise _Retryable(str(exc) or type(exc).__name__) from None
        if response.is_success:
            return
        answer = response.text[:512].strip()
        problem = f"HTTP {response.status_code}: {answer[:200] or response.reason_phrase}"
        if response.is_client_error and response.status_code not in _RETRYABLE_4XX:
            raise SinkRejected(f"Alertmanager at {self.url} refused {count} alert(s): {problem}")
        raise _Retryable(problem)  # 3xx (not followed), 408, 429, 5xx


_HEADERS = {"Content-Type": "application/json"}


class _Retryable(Exception):
    """One attempt's problem that a later attempt may not have (its message says what)."""


class _StopBeforeDeadline(tenacity.stop.stop_base):
    """Stop rather than sleep past ``deadline`` (a ``time.monotonic()`` value)."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline

    def __call__(self, retry_state: tenacity.RetryCallState) -> bool:
        return time.monotonic() + (retry_state.upcoming_sleep or 0.0) >= self.deadline
