"""The ``telemon evaluate`` subcommands: build the inputs, run the harness, write the reports."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from monitor.govern.rules import load_rules
from monitor.settings import load_settings

if TYPE_CHECKING:
    from monitor.govern.rules import RuleSet
    from monitor.settings import Settings

DEFAULT_NAB = Path("../shared/data/nab")


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    ev = sub.add_parser(
        "evaluate",
        help="measure detection quality on labelled streams (no broker needed)",
        description="Replay labelled streams through the same pipeline, rules and settings the live "
        "service runs, and report detection quality. Writes a JSON report to --out and prints a table.",
    )
    ev.add_argument("--config", type=Path, metavar="FILE", help="monitor config (default: built-in defaults)")
    ev.add_argument("--out", type=Path, default=Path("evaluation"), metavar="DIR", help="report folder")
    kinds = ev.add_subparsers(dest="input", required=True, metavar="INPUT")
    sc = kinds.add_parser("scenario", help="simulator scenarios: every planted event is a label")
    sc.add_argument("files", type=Path, nargs="+", metavar="FILE")
    nb = kinds.add_parser(
        "nab",
        help="the Numenta Anomaly Benchmark corpus, scored as NAB defines it",
        description="Score every NAB file reading by reading and the corpus as NAB v1.0 does. A row's "
        "anomaly_score is its novelty level with the novelty stage on (--config configs/nab.yaml), "
        "else the surprise of the model's distance. Writes NAB results CSVs under --out/nab.",
    )
    nb.add_argument("--root", type=Path, default=DEFAULT_NAB, help="NAB folder (default: %(default)s)")
    cs = kinds.add_parser("csv", help="a CSV with a timestamp column, value columns and a 0/1 label column")
    cs.add_argument("file", type=Path)
    cs.add_argument("--timestamp", default="timestamp", help="timestamp column (ISO-8601, s or ms)")
    cs.add_argument("--value", action="append", required=True, help="value column (repeatable)")
    cs.add_argument("--label", required=True, help="label column: 1 inside an anomaly, else 0")
    cs.add_argument(
        "--sensor",
        default="temperature",
        help="sensor the values are scored as: a single-value built-in kind or a channel the config declares",
    )


def run(args: argparse.Namespace) -> int:
    # Imported here: scipy and the simulator are not needed to print ``telemon --help``.
    from monitor.evaluation import harness
    from monitor.evaluation.replay import read_csv
    from monitor.evaluation.report import quality_tables, write_json

    settings = load_settings(args.config)
    rules = load_rules(settings.rules_file, settings.channels.catalog().names)
    out: Path = args.out
    if args.input == "scenario":
        return _scenarios(settings, rules, args.files, out)
    if args.input == "nab":
        return _nab(settings, rules, args.root, out)
    report = harness.evaluate_series(
        settings, rules, read_csv(args.file, args.timestamp, args.value, args.label), args.sensor
    )
    write_json(out / f"{args.file.stem}.json", report)
    print(quality_tables(report))
    return 0


def _scenarios(settings: Settings, rules: RuleSet, files: list[Path], out: Path) -> int:
    from monitor.evaluation import harness
    from monitor.evaluation.report import quality_tables, write_json
    from producers.scenario import load_scenario

    for path in files:
        report = harness.evaluate_scenario(settings, rules, load_scenario(path))
        write_json(out / f"scenario-{path.stem}.json", report)
        print(f"\n{path}: {report['messages']:,} messages")
        print(quality_tables(report))
    return 0


def _nab(settings: Settings, rules: RuleSet, root: Path, out: Path) -> int:
    from monitor.evaluation import harness, nab
    from monitor.evaluation.report import table, write_json

    report: dict[str, Any] = harness.evaluate_nab(settings, rules, root, out / "nab")
    write_json(out / "nab.json", report)
    published = ("Numenta HTM", "ARTime")
    rows = [
        (name, f"{r['score']:.1f}", *(nab.PUBLISHED.get(p, {}).get(name) for p in published), r["threshold"])
        for name, r in report["profiles"].items()
    ]
    print(table(("NAB profile", "telemon", *published, "threshold"), rows))
    return 0
