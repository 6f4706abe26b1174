"""Operators' verdicts on alerts: the feedback topic's wire format.

An operator marks an alert episode (its ``alert_id``, shared by the episode's pending, firing and
resolved records) with a verdict. One verdict per Kafka message on ``kafka.feedback_topic``, JSON,
keyed by ``alert_id``::

    {"alert_id": "965f8733636e615a", "verdict": "false_positive", "ts": 1767229200000,
     "by": "alice", "note": "door left open", "onset": 0, "schema_version": 1}

    alert_id        str   the episode's id: 16 lowercase hex characters
    verdict         str   "true_positive" | "false_positive" | "expected_maintenance"
    ts              int   when the verdict was given (UTC epoch ms, 2000..2100, at most a day ahead)
    by              str   who gave it (optional, at most 64 characters)
    note            str   free text (optional, at most 500 characters)
    onset           int   when the fault began (UTC epoch ms of event time, not after ``ts``;
                          optional, 0: not given): with a true_positive verdict, the alert's
                          detection delay is its firing time minus this
    schema_version  int   1

A later verdict on the same alert (a larger ``ts``) replaces an earlier one: an operator corrects a
mistake by sending another. Bad input is an error *value* (a :class:`~monitor.schema.Rejection`
with a machine-readable :class:`~monitor.schema.Reason`), never an exception: the caller
dead-letters it.

>>> v = Verdict("965f8733636e615a", "false_positive", 1767229200000, by="alice")
>>> decode(encode(v), b"965f8733636e615a", now_ms=1767229200000) == v
True
>>> decode(b'{"alert_id": "965F", "verdict": "tp", "ts": 1}', None, now_ms=1767229200000).reason
<Reason.BAD_ALERT_ID: 'bad_alert_id'>
"""

from __future__ import annotations

import re
from typing import Final, Literal, cast, get_args

import msgspec

from monitor.schema import Reason, Rejection, classify, repeated_key

VerdictKind = Literal["true_positive", "false_positive", "expected_maintenance"]
VERDICTS: Final[tuple[str, ...]] = get_args(VerdictKind)
#: What the command line accepts besides the full names.
SHORT_FORMS: Final = {"tp": "true_positive", "fp": "false_positive", "maintenance": "expected_maintenance"}
SCHEMA_VERSION: Final = 1
ALERT_ID: Final = re.compile(r"[0-9a-f]{16}")
MAX_BY: Final = 64
MAX_NOTE: Final = 500
#: A record larger than this is rejected unread (``oversize``): the fields' bounds fit in it.
MAX_FEEDBACK_BYTES: Final = 4096
#: How far ahead of the reader's clock a verdict's ``ts`` may be.
MAX_FUTURE_MS: Final = 86_400_000
#: Every reason a feedback record is rejected for (the ``reason`` of ``telemon_feedback_invalid_total``).
REASONS: Final = (
    Reason.OVERSIZE,
    Reason.INVALID_JSON,
    Reason.NOT_OBJECT,
    Reason.MISSING_FIELD,
    Reason.EXTRA_FIELD,
    Reason.DUPLICATE_KEY,
    Reason.WRONG_TYPE,
    Reason.BAD_ALERT_ID,
    Reason.KEY_MISMATCH,
    Reason.BAD_VERDICT,
    Reason.UNSUPPORTED_VERSION,
    Reason.BAD_TIMESTAMP,
)
_TS_LOW: Final = 946_684_800_000  # 2000-01-01
_TS_HIGH: Final = 4_102_444_800_000  # 2100-01-01


class Verdict(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One operator's verdict on one alert episode."""

    alert_id: str
    verdict: VerdictKind
    ts: int
    by: str = ""
    note: str = ""
    onset: int = 0
    schema_version: int = SCHEMA_VERSION


class _Wire(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The record's fields and JSON types, before their values are checked."""

    alert_id: str
    verdict: str
    ts: int
    by: str = ""
    note: str = ""
    onset: int = 0
    schema_version: int = SCHEMA_VERSION


_DECODER: Final = msgspec.json.Decoder(_Wire)
_ENCODER: Final = msgspec.json.Encoder()


def encode(v: Verdict) -> bytes:
    return _ENCODER.encode(v)


def canonical(verdict: str) -> VerdictKind | None:
    """The full name of a verdict given in full or as a short form (``tp``, ``fp``,
    ``maintenance``); ``None`` for anything else."""
    name = SHORT_FORMS.get(verdict, verdict)
    return cast(VerdictKind, name) if name in VERDICTS else None


def decode(value: bytes | None, key: bytes | None, now_ms: int) -> Verdict | Rejection:
    """Decode and strictly validate one feedback record. A key, when there is one, must be the
    ``alert_id``; ``ts`` may be at most :data:`MAX_FUTURE_MS` ahead of ``now_ms``."""
    if value is None:
        return Rejection(Reason.INVALID_JSON, "message has no value")
    if len(value) > MAX_FEEDBACK_BYTES:
        return Rejection(Reason.OVERSIZE, f"{len(value)} bytes > limit {MAX_FEEDBACK_BYTES}")
    try:
        wire = _DECODER.decode(value)
    except msgspec.ValidationError as exc:
        return classify(str(exc), _ERROR_REASONS)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        return Rejection(Reason.INVALID_JSON, str(exc)[:200])
    return repeated_key(value) or _check(wire, key, now_ms)


def _check(w: _Wire, key: bytes | None, now_ms: int) -> Verdict | Rejection:
    if not ALERT_ID.fullmatch(w.alert_id):
        return Rejection(Reason.BAD_ALERT_ID, f"alert_id {w.alert_id[:32]!r}: not 16 lowercase hex digits")
    if key is not None and key != w.alert_id.encode():
        return Rejection(Reason.KEY_MISMATCH, "message key differs from alert_id")
    if w.verdict not in VERDICTS:
        return Rejection(Reason.BAD_VERDICT, f"verdict {w.verdict[:32]!r}: not one of {', '.join(VERDICTS)}")
    if w.schema_version != SCHEMA_VERSION:
        return Rejection(Reason.UNSUPPORTED_VERSION, f"schema_version {w.schema_version}")
    if not _TS_LOW <= w.ts <= min(_TS_HIGH, now_ms + MAX_FUTURE_MS):
        return Rejection(Reason.BAD_TIMESTAMP, f"ts {w.ts} is not UTC epoch milliseconds up to a day ahead")
    if len(w.by) > MAX_BY or len(w.note) > MAX_NOTE:
        return Rejection(Reason.WRONG_TYPE, f"by is limited to {MAX_BY} characters, note to {MAX_NOTE}")
    if w.onset and not _TS_LOW <= w.onset <= w.ts:
        return Rejection(Reason.BAD_TIMESTAMP, f"onset {w.onset} is not UTC epoch milliseconds before ts")
    return Verdict(w.alert_id, cast(VerdictKind, w.verdict), w.ts, w.by, w.note, w.onset)


#: What a msgspec error of a feedback record says, and its reason (readings also have non_finite).
_ERROR_REASONS: Final = (
    ("missing required field", Reason.MISSING_FIELD),
    ("unknown field", Reason.EXTRA_FIELD),
    ("Expected `object`", Reason.NOT_OBJECT),
)
