"""``telemon feedback ALERT_ID --verdict ...``: an operator's verdict on an alert, to the feedback
topic (``kafka.feedback_topic``), keyed by the alert id; waits for Kafka's acknowledgement."""

from __future__ import annotations

import argparse
import getpass
import time

from confluent_kafka import KafkaError, Message, Producer

from monitor.analyze import feedback
from monitor.cli.args import add_bootstrap_option, settings_from_args
from monitor.errors import InvalidInput, KafkaUnavailable
from monitor.ingest import kafka

EPILOG = """\
examples:
  telemon feedback 965f8733636e615a --verdict fp --note "door left open"
  telemon feedback 965f8733636e615a --verdict true_positive --by alice --bootstrap kafka:9092

A later verdict on the same alert replaces the earlier one. The running monitors join verdicts to
alerts by id, whichever comes first, and export the precision of the alerts (telemon_alert_precision).
exit codes: 0 sent, 1 Kafka unreachable or the verdict not acknowledged, 2 a bad alert id, verdict or note"""


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "feedback",
        help="mark an alert true or false positive (or expected maintenance)",
        description="Send an operator's verdict on an alert episode (its alert_id, as in the alerts "
        "topic and Alertmanager's labels) to kafka.feedback_topic, and wait until Kafka has it.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("alert_id", metavar="ALERT_ID", help="the alert's id: 16 lowercase hex characters")
    p.add_argument(
        "--verdict",
        required=True,
        choices=[*feedback.VERDICTS, *feedback.SHORT_FORMS],
        metavar="VERDICT",
        help="true_positive (tp), false_positive (fp) or expected_maintenance (maintenance)",
    )
    p.add_argument("--note", default="", help=f"free text, at most {feedback.MAX_NOTE} characters")
    p.add_argument("--by", default=None, metavar="NAME", help="who judged (default: your user name)")
    p.add_argument(
        "--onset",
        default=None,
        metavar="TIME",
        help="when the fault began (ISO-8601, naive = UTC; epoch s or ms; or a duration before now: "
        "30m, 6h): with a true positive, the alert's detection delay is measured from it",
    )
    add_bootstrap_option(p)


def run(args: argparse.Namespace) -> int:
    verdict = _verdict(args)
    settings = settings_from_args(args)
    k = settings.kafka
    kafka.ensure_topics(k, [k.feedback_topic])
    producer = Producer(kafka.producer_config(k))
    delivered: list[Message] = []
    failed: list[str] = []

    def on_delivery(err: KafkaError | None, msg: Message) -> None:
        if err is None:
            delivered.append(msg)
        else:
            failed.append(err.str())

    producer.produce(
        k.feedback_topic, feedback.encode(verdict), verdict.alert_id.encode(), on_delivery=on_delivery
    )
    producer.flush(settings.consume.delivery_timeout_s)
    if not delivered:
        why = failed[0] if failed else f"no acknowledgement within {settings.consume.delivery_timeout_s:g}s"
        raise KafkaUnavailable(f"verdict not delivered to {k.feedback_topic}: {why}")
    m = delivered[0]
    where = f"{m.topic()} (partition {m.partition()}, offset {m.offset()})"
    print(f"{verdict.verdict} on alert {verdict.alert_id} sent to {where}")
    return 0


def _verdict(args: argparse.Namespace) -> feedback.Verdict:
    if not feedback.ALERT_ID.fullmatch(args.alert_id):
        raise InvalidInput(
            f"alert id {args.alert_id[:40]!r} is not 16 lowercase hex characters (an alert's alert_id)"
        )
    if len(args.note) > feedback.MAX_NOTE:
        raise InvalidInput(f"--note has {len(args.note)} characters; at most {feedback.MAX_NOTE}")
    by = _user() if args.by is None else args.by
    if len(by) > feedback.MAX_BY:
        raise InvalidInput(f"--by has {len(by)} characters; at most {feedback.MAX_BY}")
    kind = feedback.canonical(args.verdict)
    assert kind is not None  # argparse's choices
    now = int(time.time() * 1000)
    onset = 0 if args.onset is None else _onset(args.onset, now)
    return feedback.Verdict(args.alert_id, kind, now, by=by, note=args.note, onset=onset)


def _onset(text: str, now: int) -> int:
    from monitor.report.command import parse_when

    onset = parse_when("--onset", text, now) or 0
    if not 0 < onset <= now:
        raise InvalidInput(f"--onset {text[:40]!r} is not a time in the past")
    return onset


def _user() -> str:
    try:
        return getpass.getuser()[: feedback.MAX_BY]
    except OSError:  # no user name in the environment or the password database
        return ""
