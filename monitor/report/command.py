"""``telemon report``: the command line of the report, and :func:`build` for the demo."""

from __future__ import annotations

import argparse
import time
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from monitor.cli.args import add_bootstrap_option, settings_from_args
from monitor.common.durations import parse_duration
from monitor.errors import InvalidInput

if TYPE_CHECKING:
    from monitor.govern.rules import RuleSet
    from monitor.report.collect import Request
    from monitor.settings import Settings

DEFAULT_OUT = Path("telemon-report.html")


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = sub.add_parser(
        "report",
        help="one self-contained HTML report of a deployment (or of an evaluation run)",
        description="Read the deployment's topics (readings, alerts, model versions, audit, feedback) "
        "and its registry over an event-time range and write one HTML file that works offline: fleet "
        "overview, per device/channel timelines (values, replayed scores and threshold, alert "
        "episodes, drift windows, model versions), the top alerts explained, cohorts, feedback "
        "precision and the lineage of every model version. With --evaluation, the report of a "
        "`telemon evaluate --out DIR` run instead (no broker needed).",
    )
    add_bootstrap_option(p)
    p.add_argument(
        "--since",
        metavar="TIME",
        help="start of the range, event time: ISO-8601 (naive: UTC), epoch s or ms, or a duration "
        "before now (30m, 6h, 2d) (default: the first reading in the topic)",
    )
    p.add_argument("--until", metavar="TIME", help="end of the range, as --since (default: the last reading)")
    p.add_argument(
        "--devices",
        type=int,
        default=8,
        metavar="N",
        help="devices with timelines: those with the most alerts (default: %(default)s)",
    )
    p.add_argument(
        "--channels",
        type=int,
        default=3,
        metavar="N",
        help="channels per device with timelines: those with the most alerts (default: %(default)s)",
    )
    p.add_argument(
        "--evaluation",
        type=Path,
        metavar="PATH",
        help="report on an evaluation instead: the --out folder of `telemon evaluate`, or one of its "
        "JSON reports",
    )
    p.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, metavar="FILE", help="the HTML file (default: %(default)s)"
    )


def parse_when(option: str, text: str | None, now_ms: int) -> int | None:
    """Epoch ms of a ``--since``/``--until`` value (``None`` stays ``None``).

    >>> parse_when("--since", "2026-01-01T00:05", 0), parse_when("--since", "90m", 6_000_000)
    (1767225900000, 600000)
    """
    if text is None:
        return None
    from monitor.evaluation.replay import parse_time

    duration = parse_duration(text)
    if duration is not None:
        return now_ms - round(duration / timedelta(milliseconds=1))
    try:
        return parse_time(text)
    except ValueError:
        raise InvalidInput(
            f"{option} {text!r}: not a time (ISO-8601 such as 2026-01-01T00:05:00, epoch seconds or "
            "milliseconds, or a duration before now such as 30m, 6h, 2d)"
        ) from None


def run(args: argparse.Namespace) -> int:
    if args.devices < 1 or args.channels < 1:
        raise InvalidInput("--devices and --channels must be at least 1")
    if args.evaluation is not None:
        from monitor.report.evaluation import render_evaluation

        text = render_evaluation(args.evaluation, args.devices)
        return _write(args.out, text)
    from monitor.govern.rules import load_rules
    from monitor.report.collect import Request

    now = int(time.time() * 1000)
    settings = settings_from_args(args)
    catalog = settings.channels.catalog()
    rules = load_rules(settings.rules_file, catalog.names, registrable=catalog.spare > 0)
    req = Request(
        since=parse_when("--since", args.since, now),
        until=parse_when("--until", args.until, now),
        devices=args.devices,
        channels=args.channels,
    )
    build(settings, rules, req, args.out)
    return 0


def build(settings: Settings, rules: RuleSet, req: Request, out: Path) -> Path:
    """Collect, render and write the report to ``out``; prints ``report: PATH``."""
    from monitor.report.collect import collect
    from monitor.report.render import render

    data = collect(settings, rules, req, lambda: int(time.time() * 1000))
    _write(out, render(data))
    return out


def _write(out: Path, text: str) -> int:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    print(f"report: {out}", flush=True)
    return 0
