"""``telemon run --shadow-of GROUP``: the options of a pre-production run and its settings."""

from __future__ import annotations

import argparse
import logging
import time

from monitor.errors import InvalidInput
from monitor.report.command import parse_when
from monitor.serve import shadow
from monitor.settings import Settings

log = logging.getLogger("monitor")

Start = dict[tuple[str, int], int]


def add_options(run: argparse.ArgumentParser) -> None:
    """The shadow options of ``telemon run``."""
    g = run.add_argument_group(
        "pre-production (shadow) run",
        "Run this telemon, config and rules beside production on its live readings, as a consumer group "
        "of its own, writing only shadow topics (production's names with --shadow-suffix) and no "
        "Alertmanager; compare the two with `telemon compare`. Docs: guides/pre-production.md.",
    )
    g.add_argument(
        "--shadow-of",
        metavar="GROUP",
        help="production's consumer group (its kafka.group_id); it must exist on the broker",
    )
    g.add_argument(
        "--shadow-group",
        metavar="NAME",
        help="the shadow's consumer group (default: GROUP followed by the suffix, e.g. telemon.shadow)",
    )
    g.add_argument(
        "--shadow-suffix",
        default=shadow.DEFAULT_SUFFIX,
        metavar="SUFFIX",
        help="appended to the name of every topic the shadow writes: dead letters, alerts, models, audit, "
        "state changelog, artifacts, fleet partials (default: %(default)s)",
    )
    g.add_argument(
        "--from",
        dest="shadow_from",
        metavar="TIME",
        help="start at the readings of this Kafka time (ISO-8601, naive: UTC; epoch s or ms; or a duration "
        "before now: 30m, 6h, 2d) instead of production's committed offsets; for the shadow's models to "
        "warm up on readings before the range you compare. Applies to partitions the shadow group has "
        "never committed: a restarted shadow resumes where it stopped",
    )


def prepare(args: argparse.Namespace, settings: Settings) -> tuple[Settings, Start | None]:
    """``settings`` and no start offsets for a production run; for ``--shadow-of``, the shadow's
    settings and the offsets its partitions start at."""
    if args.shadow_of is None:
        given = [o for o, v in (("--shadow-group", args.shadow_group), ("--from", args.shadow_from)) if v]
        if given or args.shadow_suffix != shadow.DEFAULT_SUFFIX:
            raise InvalidInput(f"{', '.join(given) or '--shadow-suffix'} needs --shadow-of GROUP")
        return settings, None
    run = shadow.ShadowRun(
        production_group=args.shadow_of,
        group=args.shadow_group or args.shadow_of + args.shadow_suffix,
        suffix=args.shadow_suffix,
        since_ms=parse_when("--from", args.shadow_from, int(time.time() * 1000)),
    )
    shadowed = shadow.shadow_settings(settings, run)
    start = shadow.start_offsets(shadowed.kafka, run)
    log.info("%s", shadow.describe(run, shadowed, start))
    return shadowed, start
