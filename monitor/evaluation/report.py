"""Reports of ``telemon evaluate``: a JSON file for machines and a table for people."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def write_json(path: Path, report: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, sort_keys=False) + "\n", encoding="utf-8")


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A plain-text table: a header line, a rule of dashes under each column, the rows; columns
    two spaces apart, every cell left-aligned as given.

    >>> print(table(["NAME", "N"], [["a", 1], ["bb", None]]))
    NAME    N
    ------  ---
    a       1
    bb      -
    """
    from tabulate import tabulate  # on first use: most commands print no table

    cells = [[_fmt(c) for c in row] for row in rows]
    text = tabulate(cells, headers=list(headers), tablefmt="simple", disable_numparse=True, stralign="left")
    return "\n".join(line.rstrip() for line in text.splitlines())


def markdown(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown (GitHub) table; ``|`` in cells is escaped."""
    cells = [[_fmt(c).replace("|", "\\|") for c in row] for row in rows]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join(" --- " for _ in headers) + "|"]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in cells])


def _fmt(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    return str(value)


def _seconds(ms: float | None) -> float | None:
    return None if ms is None else ms / 1000.0


def _primary(report: dict[str, Any]) -> dict[str, Any]:
    section: dict[str, Any] = report.get("change_points") or report["anomaly"]
    return section


def quality_tables(report: dict[str, Any]) -> str:
    """Per-kind detection and delay table, then the overall line, for a quality report (its change
    points within the horizon when it has them, else its anomaly windows)."""
    a, d = _primary(report), report["drift"]
    rows = [
        (
            kind,
            k["n_windows"],
            k["n_detected"],
            _seconds(k["delay_ms"]["median"]),
            _seconds(k["delay_ms"]["p90"]),
            k["delay_readings"]["median"] if k.get("delay_readings") else None,
        )
        for kind, k in sorted(a["by_kind"].items())
    ]
    head = (
        "event kind",
        "labelled" if "change_points" in report else "planted",
        "detected",
        "delay s (median)",
        "delay s (p90)",
        "readings (median)",
    )
    summary = (
        f"precision {_fmt(a['precision'])}  recall {_fmt(a['recall'])}  F1 {_fmt(a['f1'])}  "
        f"false alarms {a['n_false_alarms']} over {a['device_days']:.3f} device-days "
        f"({_fmt(a['false_alarms_per_device_day'])}/device-day)\n"
        f"drift changes: {d['n_changes']}, detected {d['n_detected']}, missed {d['n_missed']}, "
        f"false detections {d['n_false_detections']}, "
        f"delay median {_fmt(_seconds(d['delay_ms']['median']))} s"
    )
    return table(head, rows) + "\n" + summary


def comparison_table(report: dict[str, Any]) -> str:
    """telemon beside the baselines of a recordings report: the scores on its primary events
    (change points within the horizon, else anomaly windows)."""
    head = ("detector", "F1", "precision", "recall", "recall at telemon's false alarms")
    head2 = ("false alarms/device-day", "delay s (median)")
    rows = []
    for name, r in [("telemon", report), *report.get("baselines", {}).items()]:
        q, eq = _primary(r), r.get("at_equal_false_alarms")
        at_rate = q["recall"] if eq is None else eq["recall"]
        rows.append(
            (
                name,
                q["f1"],
                q["precision"],
                q["recall"],
                at_rate,
                q["false_alarms_per_device_day"],
                _seconds(q["delay_ms"]["median"]),
            )
        )
    return table((*head, *head2), rows)


def scenario_comparison(report: dict[str, Any]) -> str:
    """telemon beside the baselines of a scenario report: recall per event kind, false alarms."""
    detectors = [("telemon", report), *report.get("baselines", {}).items()]
    kinds = sorted(report["anomaly"]["by_kind"])
    rows = [(kind, *(r["anomaly"]["by_kind"][kind]["n_detected"] for _, r in detectors)) for kind in kinds]
    rows.append(
        ("false alarms/device-day", *(r["anomaly"]["false_alarms_per_device_day"] for _, r in detectors))
    )
    rows.append(("F1", *(r["anomaly"]["f1"] for _, r in detectors)))
    return table(("event kind (detected)", *(name for name, _ in detectors)), rows)
