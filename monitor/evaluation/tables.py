"""The detection-quality tables, built from the JSON reports ``make evaluate`` writes.

``telemon evaluate --out DIR tables`` reads, under DIR (each optional: a table is built for every
data set whose reports are there):

- ``astropi.json``: ``evaluate csv`` of the Astro Pi log with ``--event`` for the known event and
  ``--baselines``;
- ``hapt.json``, ``occupancy.json``: ``evaluate csv`` with change-point labels and ``--baselines``;
- ``nab.json`` (``--config configs/nab.yaml ... --baselines``) and ``default/nab.json`` (the
  default config);
- ``scenario-library.json`` and ``scenario-clean.json`` (``evaluate scenario ... --baselines``).

Each table has a row per detector: telemon, then the baselines of the report.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from monitor.evaluation.report import markdown

Report = dict[str, Any]
#: The Astro Pi event counts as alerted by a firing at most this long after its first reading.
ALERT_WITHIN_MS: Final = 60_000
NAB_PROFILES: Final = ("standard", "reward_low_FP_rate", "reward_low_FN_rate")
#: Published NAB detectors shown for reference: the best two, and the two nearest the baselines.
PUBLISHED_ROWS: Final = ("ARTime", "Numenta HTM", "Random Cut Forest", "Windowed Gaussian")
CHANGE_HEAD: Final = (
    "detector",
    "F1",
    "precision",
    "recall",
    "recall at telemon's false alarms (threshold)",
    "false alarms/device-day",
    "delay s (median)",
)


def _detectors(report: Report) -> list[tuple[str, Report]]:
    return [("telemon", report), *report.get("baselines", {}).items()]


def _num(x: float | None, digits: int = 3) -> str:
    if x is None:
        return "-"
    return f"{x:.{digits}g}" if abs(x) < 1000 else f"{x:,.0f}"


def _seconds(ms: float | None) -> str:
    return "-" if ms is None else _num(ms / 1000)


def astropi_table(report: Report) -> str:
    """Per detector: how many of the known events were alerted within 60 s of their first reading
    and by which rules, each event's first firing delay, false alarms per device-day outside the
    events, by rule."""
    rows = []
    for name, r in _detectors(report):
        delays = [w["delay_ms"] for w in r["anomaly"]["windows"]]
        quick = [
            rule
            for rule, q in r["by_rule"].items()
            if any(d is not None and d <= ALERT_WITHIN_MS for d in q["delays_ms"])
        ]
        alerted = sum(d is not None and d <= ALERT_WITHIN_MS for d in delays)
        false = [(rule, q["false_alarms"]) for rule, q in r["by_rule"].items() if q["false_alarms"]]
        rows.append(
            (
                name,
                f"{alerted} of {len(delays)}" + (f" ({', '.join(quick)})" if quick else ""),
                " / ".join(_seconds(d) for d in delays) or "-",
                _num(r["anomaly"]["false_alarms_per_device_day"]),
                ", ".join(f"{rule} {n}" for rule, n in sorted(false, key=lambda x: -x[1])) or "-",
            )
        )
    head: tuple[str, ...] = ("detector", "events alerted within 60 s (rules)", "first firing s, per event")
    head += ("false alarms/device-day outside the events", "false alarms by rule")
    a = report["anomaly"]
    caption = f"{report['messages']:,} readings, {a['device_days']:.3f} device-days"
    if report["events"]:
        caption += "; the events: " + ", ".join(
            f"{e['kind']} from {_iso(e['start_ts'])} to {_iso(e['end_ts'])}" for e in report["events"]
        )
    return caption + ".\n\n" + markdown(head, rows)


def change_table(report: Report) -> str:
    """Per detector: the change-point scores (F1, precision, recall within the horizon), the
    baseline's recall at telemon's false alarms per device-day, false alarms, delay."""
    rows = []
    for name, r in _detectors(report):
        q, eq = r["change_points"], r.get("at_equal_false_alarms")
        at_rate = (
            f"{_num(q['recall'])} (its own)"
            if eq is None
            else f"{_num(eq['recall'])} ({_num(eq['threshold'])})"
        )
        rows.append(
            (
                name,
                _num(q["f1"]),
                _num(q["precision"]),
                _num(q["recall"]),
                at_rate,
                _num(q["false_alarms_per_device_day"]),
                _seconds(q["delay_ms"]["median"]),
            )
        )
    q = report["change_points"]
    caption = (
        f"{q['n_windows']} labelled change points in {len(report['files'])} files, {report['messages']:,} "
        f"readings, {q['device_days']:.3f} device-days; detected = a detection at most "
        f"{report['horizon_ms'] / 1000:g} s after the change point."
    )
    return caption + "\n\n" + markdown(CHANGE_HEAD, rows)


def nab_table(report: Report, default: Report | None) -> str:
    """NAB scores (standard / low FP / low FN) per detector, published detectors for reference."""

    def scores(profiles: dict[str, Any]) -> tuple[str, ...]:
        return tuple(f"{profiles[p]['score']:.1f}" for p in NAB_PROFILES)

    rows = [("telemon, configs/nab.yaml", *scores(report["profiles"]))]
    if default is not None:
        rows.append(("telemon, default config", *scores(default["profiles"])))
    rows += [(name, *scores(r["profiles"])) for name, r in report.get("baselines", {}).items()]
    for name in PUBLISHED_ROWS:
        published = report["published"].get(name)
        if published is not None:
            rows.append((f"{name} (published)", *(f"{published[p]:.1f}" for p in NAB_PROFILES)))
    caption = (
        f"{report['files']} files, {report['rows']:,} rows; normalised so that the perfect detector "
        "scores 100 and the null one 0 (a detector that does better than the null one at no "
        "threshold scores 0: NAB's optimiser then picks no detection)."
    )
    return caption + "\n\n" + markdown(("detector", "standard", "low FP", "low FN"), rows)


def scenario_table(library: Report, clean: Report | None) -> str:
    """Per detector: planted kinds detected and missed, false alarms per device-day on the
    library's clean devices and event-free stretches and on the clean fleet, F1."""
    clean_by = dict(_detectors(clean)) if clean is not None else {}
    rows = []
    for name, r in _detectors(library):
        kinds = r["anomaly"]["by_kind"]
        missed = sorted(k for k, q in kinds.items() if q["n_detected"] == 0)
        other = clean_by.get(name)
        rows.append(
            (
                name,
                f"{len(kinds) - len(missed)} of {len(kinds)}",
                ", ".join(missed) or "-",
                _num(r["anomaly"]["false_alarms_per_device_day"]),
                "not run" if other is None else _num(other["anomaly"]["false_alarms_per_device_day"]),
                _num(r["anomaly"]["f1"]),
            )
        )
    head: tuple[str, ...] = ("detector", "kinds detected", "missed", "false alarms/device-day (library)")
    head += ("false alarms/device-day (clean)", "F1 (library)")
    caption = f"library.yaml: {_fleet(library)}, one planted event per kind"
    if clean is not None:
        caption += f"; clean.yaml: {_fleet(clean)}, no event"
    return caption + ".\n\n" + markdown(head, rows)


def _fleet(report: Report) -> str:
    return f"{report['messages']:,} messages, {report['anomaly']['device_days']:.3f} device-days"


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _load(path: Path) -> Report | None:
    if not path.exists():
        return None
    report: Report = json.loads(path.read_text(encoding="utf-8"))
    return report


def build(folder: Path) -> str:
    """The tables of every data set whose reports are under ``folder``, as Markdown."""
    parts = []
    astro = _load(folder / "astropi.json")
    if astro is not None:
        parts.append(("Astro Pi", astropi_table(astro)))
    for name, title in (("hapt", "UCI HAPT"), ("occupancy", "UCI Occupancy")):
        report = _load(folder / f"{name}.json")
        if report is not None:
            parts.append((title, change_table(report)))
    nab = _load(folder / "nab.json")
    if nab is not None:
        parts.append(("NAB v1.0", nab_table(nab, _load(folder / "default" / "nab.json"))))
    library = _load(folder / "scenario-library.json")
    if library is not None:
        parts.append(("Simulator", scenario_table(library, _load(folder / "scenario-clean.json"))))
    return "\n\n".join(f"### {title}\n\n{body}" for title, body in parts) + "\n"


#: The first line of the tables as ``--docs`` writes them: the file is an output, not a source.
GENERATED_NOTE: Final = (
    "<!-- Generated by `make evaluate` (telemon evaluate tables --docs): do not edit; "
    "run it again to refresh. -->"
)


def generated(text: str) -> str:
    """``text`` marked as generated, for a documentation page to include."""
    return f"{GENERATED_NOTE}\n\n{text}"
