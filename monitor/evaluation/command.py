"""The ``telemon evaluate`` subcommands: build the inputs, run the harness, write the reports."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from monitor.cli.args import settings_from_args
from monitor.govern.rules import load_rules

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
    ev.add_argument("--out", type=Path, default=Path("evaluation"), metavar="DIR", help="report folder")
    kinds = ev.add_subparsers(dest="input", required=True, metavar="INPUT")
    sc = kinds.add_parser("scenario", help="simulator scenarios: every planted event is a label")
    sc.add_argument("files", type=Path, nargs="+", metavar="FILE")
    _add_baselines(sc)
    nb = kinds.add_parser(
        "nab",
        help="the Numenta Anomaly Benchmark corpus, scored as NAB defines it",
        description="Score every NAB file reading by reading and the corpus as NAB v1.0 does. A row's "
        "anomaly_score is its novelty level with the novelty stage on (--config configs/nab.yaml), "
        "else the surprise of the model's distance. Writes NAB results CSVs under --out/nab.",
    )
    nb.add_argument("--root", type=Path, default=DEFAULT_NAB, help="NAB folder (default: %(default)s)")
    _add_baselines(nb)
    tb = kinds.add_parser(
        "tables",
        help="the detection-quality tables from the reports under --out (Markdown)",
        description="Build one Markdown table per data set whose reports make evaluate wrote under "
        "--out (astropi.json, hapt.json, occupancy.json, nab.json with default/nab.json, "
        "scenario-library.json with scenario-clean.json): telemon beside the baselines. Prints them "
        "and writes --out/tables.md (and --docs FILE).",
    )
    tb.add_argument(
        "--docs",
        type=Path,
        metavar="FILE",
        help="also write the tables to FILE, marked as generated, for the documentation to include "
        "(make evaluate: docs/results/detection-tables.md)",
    )
    cs = kinds.add_parser(
        "csv",
        help="recorded files: value columns as sensors' axes or channels, an optional label column",
        description="Replay delimited files (one device each; a reading per sensor per row, the files "
        "merged in time order) through the pipeline. Writes --out/NAME.json (the quality report, device "
        "level: any alert of a file's device detects) and, per file, --out/rows/STEM.csv with the "
        "columns timestamp,label,anomaly_score,anomalous,alerting. A value column without =SENSOR is "
        "read as the sensor of its name, else becomes a channel of its own (its resolution: the "
        "smallest step between its first 1,000 distinct values).",
    )
    cs.add_argument("files", type=Path, nargs="+", metavar="FILE")
    cs.add_argument(
        "--value",
        action="append",
        required=True,
        metavar="COL[=SENSOR[.AXIS]]",
        help="a value column, and the sensor (axis) it is (repeatable; e.g. ax=accelerometer.x)",
    )
    cs.add_argument(
        "--timestamp", metavar="COL", help="timestamp column: ISO-8601, s or ms (default: timestamp)"
    )
    cs.add_argument(
        "--period-s",
        type=float,
        metavar="S",
        help="no timestamp column: row i is at 2020-01-01 + i * S seconds (index time)",
    )
    cs.add_argument("--label", metavar="COL", help="label column (optional)")
    cs.add_argument(
        "--label-kind",
        choices=("anomaly", "onset", "change"),
        default="anomaly",
        help="anomaly: non-zero rows are anomaly windows; onset: each non-zero row starts a change; "
        "change: a change wherever the label differs from the row before (default: %(default)s)",
    )
    cs.add_argument(
        "--delimiter", default=",", metavar="C", help="field delimiter; 'tab' for tabs (default: ,)"
    )
    cs.add_argument(
        "--columns",
        metavar="A,B,...",
        help="the column names, instead of those of the header row",
    )
    cs.add_argument("--no-header", action="store_true", help="the first row is data, not column names")
    cs.add_argument(
        "--sensor",
        help="the sensor of --value columns given without =SENSOR (a single-value built-in kind or a "
        "declared channel)",
    )
    cs.add_argument("--name", help="the report's name (default: the file's stem; 'csv' for several files)")
    cs.add_argument(
        "--event",
        action="append",
        default=[],
        metavar="[KIND=]FROM/TO",
        help="a known event of unlabelled files (every file's device), scored as an anomaly window: "
        "ISO-8601 (naive: UTC) or epoch times, e.g. orientation=2015-08-21T22:48:10/2015-08-21T23:48:10 "
        "(repeatable; not with --label)",
    )
    cs.add_argument(
        "--horizon-s",
        type=float,
        default=60.0,
        metavar="S",
        help="onset and change labels: a change point counts as detected by a detection at most S "
        "seconds after it; later ones are false alarms (default: %(default)s)",
    )
    _add_baselines(cs)


def _add_baselines(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--baselines",
        nargs="?",
        const="3sigma,hst",
        default="",
        metavar="NAME,...",
        help="also score baseline detectors on the same readings, the same way: 3sigma (a static "
        "3-sigma rule per channel axis) and hst (River's HalfSpaceTrees per channel); without a "
        "value both (then give it after the FILEs). Their reports go under 'baselines' in the JSON "
        "report, their row tables (csv) to rows/STEM.NAME.csv (docs: Detection quality)",
    )


def _baseline_names(text: str) -> list[Any]:
    from monitor.errors import LabelledInputError
    from monitor.evaluation.baselines import NAMES

    names = [n for n in text.split(",") if n]
    unknown = [n for n in names if n not in NAMES]
    if unknown:
        raise LabelledInputError(f"--baselines: unknown {', '.join(unknown)} (known: {', '.join(NAMES)})")
    return names


def run(args: argparse.Namespace) -> int:
    settings = settings_from_args(args)
    catalog = settings.channels.catalog()
    rules = load_rules(settings.rules_file, catalog.names, registrable=catalog.spare > 0)
    out: Path = args.out
    if args.input == "scenario":
        return _scenarios(settings, rules, args.files, out, _baseline_names(args.baselines))
    if args.input == "nab":
        return _nab(settings, rules, args.root, out, _baseline_names(args.baselines))
    if args.input == "tables":
        return _tables(out, args.docs)
    return _csv(settings, rules, args, out)


def _csv(settings: Settings, rules: RuleSet, args: argparse.Namespace, out: Path) -> int:
    # Imported here (as in the others): scipy and the simulator are not needed for ``--help``.
    from monitor.errors import LabelledInputError
    from monitor.evaluation.recorded_quality import Scoring, TimedEvent, evaluate_recordings
    from monitor.evaluation.recordings import CsvFormat, ValueColumn
    from monitor.evaluation.report import comparison_table, quality_tables, write_json

    if args.period_s is not None and args.timestamp is not None:
        raise LabelledInputError("give --timestamp or --period-s, not both")
    if args.period_s is not None and args.period_s <= 0:
        raise LabelledInputError(f"--period-s must be > 0, not {args.period_s}")
    if args.event and args.label is not None:
        raise LabelledInputError("give --label or --event, not both")
    if args.horizon_s < 0:
        raise LabelledInputError(f"--horizon-s must be >= 0, not {args.horizon_s}")
    scoring = Scoring(tuple(TimedEvent.parse(e) for e in args.event), round(1000 * args.horizon_s))
    columns = [ValueColumn.parse(v) for v in args.value]
    if args.sensor is not None:
        columns = [c if c.sensor else ValueColumn(c.column, args.sensor, c.axis) for c in columns]
    fmt = CsvFormat(
        timestamp=None if args.period_s is not None else args.timestamp or "timestamp",
        period_ms=round(1000 * (args.period_s or 1.0)),
        delimiter="\t" if args.delimiter in ("tab", "\\t") else args.delimiter,
        names=tuple(args.columns.split(",")) if args.columns else None,
        header=not args.no_header,
        label=args.label,
        label_kind=args.label_kind,
    )
    if len(fmt.delimiter) != 1:
        raise LabelledInputError(f"--delimiter must be one character, not {args.delimiter!r}")
    compare = _baseline_names(args.baselines)
    result = evaluate_recordings(settings, rules, args.files, fmt, columns, scoring, compare)
    name = args.name or (args.files[0].stem if len(args.files) == 1 else "csv")
    write_json(out / f"{name}.json", result.report)
    stems = [r.recording.path.stem for r in result.rows]
    for suffix, rows in [("", result.rows), *((f".{b}", r) for b, r in result.baseline_rows.items())]:
        for r in rows:
            stem = r.recording.path.stem if stems.count(r.recording.path.stem) == 1 else r.recording.device_id
            r.write(out / "rows" / f"{stem}{suffix}.csv")
    print(quality_tables(result.report))
    if compare:
        print(comparison_table(result.report))
    return 0


def _scenarios(settings: Settings, rules: RuleSet, files: list[Path], out: Path, compare: list[Any]) -> int:
    from monitor.evaluation import harness
    from monitor.evaluation.report import quality_tables, scenario_comparison, write_json
    from producers.scenario import load_scenario

    for path in files:
        report = harness.evaluate_scenario(settings, rules, load_scenario(path), compare)
        write_json(out / f"scenario-{path.stem}.json", report)
        print(f"\n{path}: {report['messages']:,} messages")
        print(quality_tables(report))
        if compare:
            print(scenario_comparison(report))
    return 0


def _nab(settings: Settings, rules: RuleSet, root: Path, out: Path, compare: list[Any]) -> int:
    from monitor.evaluation import harness, nab
    from monitor.evaluation.report import table, write_json

    report: dict[str, Any] = harness.evaluate_nab(settings, rules, root, out / "nab", compare)
    write_json(out / "nab.json", report)
    published = ("Numenta HTM", "ARTime")
    others = report.get("baselines", {})
    rows = [
        (
            name,
            f"{r['score']:.1f}",
            *(f"{others[b]['profiles'][name]['score']:.1f}" for b in others),
            *(nab.PUBLISHED.get(p, {}).get(name) for p in published),
            r["threshold"],
        )
        for name, r in report["profiles"].items()
    ]
    print(table(("NAB profile", "telemon", *others, *published, "threshold"), rows))
    return 0


def _tables(out: Path, docs: Path | None) -> int:
    from monitor.errors import LabelledInputError
    from monitor.evaluation.tables import build, generated

    text = build(out)
    if not text.strip():
        raise LabelledInputError(f"{out}: no reports to build tables from (run make evaluate)")
    (out / "tables.md").write_text(text, encoding="utf-8")
    if docs is not None:
        docs.parent.mkdir(parents=True, exist_ok=True)
        docs.write_text(generated(text), encoding="utf-8")
    print(text, end="")
    return 0
