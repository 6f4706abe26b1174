"""Operators' verdicts on the wire: valid records decode, every kind of bad one is a rejection
with its reason (never an exception)."""

from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from monitor.analyze.feedback import MAX_FEEDBACK_BYTES, REASONS, Verdict, canonical, decode, encode
from monitor.cli.main import main
from monitor.schema import Reason, Rejection

AID = "965f8733636e615a"
NOW = 1_767_229_200_000


def _msg(**fields: object) -> bytes:
    doc: dict[str, object] = {"alert_id": AID, "verdict": "false_positive", "ts": NOW}
    doc.update(fields)
    return json.dumps({k: v for k, v in doc.items() if v is not ...}).encode()


def test_a_valid_record_decodes_with_its_defaults() -> None:
    v = decode(_msg(), AID.encode(), NOW)
    assert v == Verdict(AID, "false_positive", NOW, by="", note="", schema_version=1)


def test_every_field_round_trips() -> None:
    v = Verdict(AID, "expected_maintenance", NOW, by="alice", note="pump service, ticket 42")
    assert decode(encode(v), AID.encode(), NOW) == v
    found = Verdict(AID, "true_positive", NOW, onset=NOW - 3_600_000)
    assert decode(encode(found), AID.encode(), NOW) == found


def test_a_keyless_record_is_accepted() -> None:
    assert isinstance(decode(_msg(verdict="true_positive"), None, NOW), Verdict)


@dataclass(frozen=True)
class Case:
    id: str
    value: bytes | None
    reason: Reason
    key: bytes | None = AID.encode()


CASES = [
    Case("no-value", None, Reason.INVALID_JSON),
    Case("oversize", _msg(note="x" * MAX_FEEDBACK_BYTES), Reason.OVERSIZE),
    Case("invalid-json", b'{"alert_id": ', Reason.INVALID_JSON),
    Case("invalid-utf8", b'{"alert_id": "\xff"}', Reason.INVALID_JSON),
    Case("not-object", b"[1, 2]", Reason.NOT_OBJECT),
    Case("missing-verdict", _msg(verdict=...), Reason.MISSING_FIELD),
    Case("extra-field", _msg(severity="high"), Reason.EXTRA_FIELD),
    Case("duplicate-key", _msg()[:-1] + b', "verdict": "true_positive"}', Reason.DUPLICATE_KEY),
    Case("ts-as-string", _msg(ts="yesterday"), Reason.WRONG_TYPE),
    Case("by-too-long", _msg(by="b" * 65), Reason.WRONG_TYPE),
    Case("note-too-long", _msg(note="n" * 501), Reason.WRONG_TYPE),
    Case("alert-id-upper-case", _msg(alert_id=AID.upper()), Reason.BAD_ALERT_ID, None),
    Case("alert-id-short", _msg(alert_id=AID[:15]), Reason.BAD_ALERT_ID, None),
    Case("key-mismatch", _msg(), Reason.KEY_MISMATCH, b"0000000000000000"),
    Case("unknown-verdict", _msg(verdict="maybe"), Reason.BAD_VERDICT),
    Case("short-form-on-the-wire", _msg(verdict="fp"), Reason.BAD_VERDICT),
    Case("future-version", _msg(schema_version=2), Reason.UNSUPPORTED_VERSION),
    Case("ts-in-seconds", _msg(ts=NOW // 1000), Reason.BAD_TIMESTAMP),
    Case("ts-two-days-ahead", _msg(ts=NOW + 2 * 86_400_000), Reason.BAD_TIMESTAMP),
    Case("onset-after-the-verdict", _msg(onset=NOW + 1), Reason.BAD_TIMESTAMP),
    Case("onset-in-seconds", _msg(onset=NOW // 1000), Reason.BAD_TIMESTAMP),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_a_bad_record_is_rejected_with_its_reason(case: Case) -> None:
    rejected = decode(case.value, case.key, NOW)
    assert isinstance(rejected, Rejection)
    assert rejected.reason is case.reason
    assert rejected.detail


def test_the_cases_cover_every_reason_of_feedback() -> None:
    assert {c.reason for c in CASES} == set(REASONS)


@pytest.mark.parametrize(
    ("given", "name"),
    [
        ("tp", "true_positive"),
        ("fp", "false_positive"),
        ("maintenance", "expected_maintenance"),
        ("false_positive", "false_positive"),
        ("TP", None),
        ("positive", None),
    ],
)
def test_short_forms_name_the_verdicts(given: str, name: str | None) -> None:
    assert canonical(given) == name


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["ABCDEF0123456789", "--verdict", "fp"], "is not 16 lowercase hex characters"),
        ([AID, "--verdict", "maybe"], "invalid choice: 'maybe'"),
        ([AID, "--verdict", "tp", "--note", "n" * 501], "--note has 501 characters; at most 500"),
        ([AID, "--verdict", "tp", "--onset", "last tuesday"], "--onset 'last tuesday': not a time"),
        ([AID, "--verdict", "tp", "--onset", "2999-01-01"], "--onset '2999-01-01' is not a time in the past"),
    ],
)
def test_the_command_refuses_a_bad_verdict_before_connecting(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    try:
        code = main(["feedback", *args, "--bootstrap", "127.0.0.1:1"])
    except SystemExit as exc:  # argparse's own errors
        code = int(str(exc.code))
    assert code == 2
    assert message in capsys.readouterr().err
