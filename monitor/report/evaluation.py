"""The report of a ``telemon evaluate`` run: its JSON reports (and row tables) as one HTML file.

Per quality report (a scenario, recorded files): the headline scores, detection per event kind,
telemon beside the baselines, the labelled events against the alerts per stream (detected or
missed, the first detection), and, for recorded files, the anomaly score over time with the
labels and the alerting spans (``rows/STEM.csv``). Per NAB report: the scores per profile.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from monitor.errors import InvalidInput
from monitor.evaluation.replay import parse_time
from monitor.report import figures as f
from monitor.report import html as h

Json = dict[str, Any]
#: Rows of a row table read at most (a longer one is read to here: its timeline says so).
MAX_ROWS = 2_000_000


def render_evaluation(path: Path, streams: int) -> str:
    """The page for a report file or every report in a folder; raises :class:`InvalidInput` if
    there is none."""
    files = sorted(path.glob("*.json")) if path.is_dir() else [path]
    if not path.exists():
        raise InvalidInput(f"{path}: no such file or folder (give the --out folder of telemon evaluate)")
    reports = [(p, _load(p)) for p in files]
    reports = [(p, r) for p, r in reports if "anomaly" in r or "profiles" in r]
    if not reports:
        raise InvalidInput(f"{path}: no telemon evaluate report (*.json with anomaly or NAB scores) in it")
    f.reset_ids()
    folder = path if path.is_dir() else path.parent
    sections = [(f"r{i}", p.stem, _section(r, folder, streams)) for i, (p, r) in enumerate(reports)]
    return h.page("telemon evaluation report", f"{len(reports)} report(s) from {path}", sections)


def _load(path: Path) -> Json:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInput(f"{path}: not a JSON report: {exc}") from None
    return data if isinstance(data, dict) else {}


def _section(r: Json, folder: Path, streams: int) -> str:
    if "profiles" in r:
        return _nab(r)
    q = r.get("change_points") or r["anomaly"]
    d = r.get("drift") or {}
    numbers = [
        ("messages", r.get("messages")),
        ("alerts firing", r.get("alerts_firing")),
        ("precision", q.get("precision")),
        ("recall", q.get("recall")),
        ("F1", q.get("f1")),
        ("false alarms/device-day", q.get("false_alarms_per_device_day")),
        ("drift changes detected", f"{d.get('n_detected', 0)} of {d.get('n_changes', 0)}"),
    ]
    kinds = [
        (
            k,
            v["n_windows"],
            v["n_detected"],
            v["recall"],
            _s(v["delay_ms"]["median"]),
            _s(v["delay_ms"]["p90"]),
        )
        for k, v in sorted(q.get("by_kind", {}).items())
    ]
    by_kind = h.table(("event kind", "labelled", "detected", "recall", "delay s (median)", "p90"), kinds)
    parts = [h.cards(numbers), "<h3>Detection per event kind</h3>", by_kind, _baselines(r)]
    parts.append(h.figure(_windows(q.get("windows", []), streams)))
    parts += [h.figure(_rows(folder / "rows" / f"{Path(p).stem}.csv")) for p in r.get("files", [])[:streams]]
    return "".join(parts)


def _s(ms: float | None) -> float | None:
    return None if ms is None else ms / 1000


def _baselines(r: Json) -> str:
    others = r.get("baselines") or {}
    if not others:
        return ""
    rows = []
    for name, b in [("telemon", r), *others.items()]:
        q = b.get("change_points") or b["anomaly"]
        rows.append(
            (
                name,
                q["f1"],
                q["precision"],
                q["recall"],
                q["false_alarms_per_device_day"],
                _s(q["delay_ms"]["median"]),
            )
        )
    columns = ("detector", "F1", "precision", "recall", "false alarms/device-day", "delay s (median)")
    return "<h3>Beside the baselines</h3>" + h.table(columns, rows)


def _windows(windows: Sequence[Json], streams: int) -> str | None:
    """Labelled events per stream as bars (green detected, red missed), first detections as ticks."""
    if not windows:
        return None
    keys = sorted({_key(w) for w in windows}, key=lambda k: (-sum(_key(w) == k for w in windows), k))[
        :streams
    ]
    shown = [w for w in windows if _key(w) in keys]
    lo = min(w["event"]["start_ts"] for w in shown)
    hi = max(w.get("window_end", w["event"]["end_ts"]) for w in shown)
    with f.figure(1, 0.45 * len(keys) + 1.2) as (fig, (ax,)):
        for w in shown:
            y, e = keys.index(_key(w)), w["event"]
            colour = f.PROMOTED if w["detected"] else f.FIRING
            start, end = f.times([e["start_ts"], max(e["end_ts"], e["start_ts"] + 1000)])
            ax.barh(y, end - start, left=start, height=0.5, color=colour, alpha=0.7)
            if w.get("first_detection_ts") is not None:
                ax.plot(f.times([w["first_detection_ts"]]), [y], "|", color="#222222", ms=14, mew=2)
        ax.set_yticks(range(len(keys)), keys)
        ax.invert_yaxis()
        f.date_axis(ax, lo, hi)
        ax.set_title("Labelled events (green detected, red missed) and first detections (black)")
        return f.svg(fig, "labelled events against detections")


def _key(w: Json) -> str:
    return f"{w['event']['device_id']}/{w['event']['sensor']}"


def _rows(path: Path) -> str | None:
    """A recorded file's anomaly score over time, its labels and when alerts were firing."""
    if not path.is_file():
        return None
    ts, label, score, alerting = _read_rows(path)
    if not len(ts):
        return None
    lo, hi = int(ts[0]), int(ts[-1])
    with f.figure(1, 2.4) as (fig, (ax,)):
        _spans(ax, ts, label > 0, f.PENDING, "label")
        _spans(ax, ts, alerting > 0, f.FIRING, "alerting")
        t, s = f.envelope(ts, score, lo, hi)
        ax.plot(f.times(t), s, color="#333333", lw=0.8, label="anomaly score")
        f.date_axis(ax, lo, hi)
        ax.set_title(f"{path.stem}: anomaly score, labels and alerts ({len(ts):,} rows)")
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
        return f.svg(fig, f"{path.stem} timeline")


def _read_rows(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    ts: list[int] = []
    cols: list[tuple[float, float, float]] = []
    with path.open(encoding="utf-8", newline="") as fh:
        for i, row in enumerate(csv.DictReader(fh)):
            if i >= MAX_ROWS:
                break
            ts.append(parse_time(row["timestamp"]))  # as the evaluation read it: ISO, epoch s or ms
            cols.append(
                (float(row["label"] or 0), float(row["anomaly_score"] or 0), float(row["alerting"] or 0))
            )
    a = np.asarray(cols, np.float64).reshape(-1, 3)
    return np.asarray(ts, np.int64), a[:, 0], a[:, 1], a[:, 2]


def _spans(ax: Any, ts: np.ndarray, on: np.ndarray, colour: str, label: str) -> None:
    """Shade the runs where ``on`` holds (one legend entry)."""
    edges = np.flatnonzero(np.diff(np.r_[0, on.astype(np.int8), 0]))
    for n, (a, b) in enumerate(zip(edges[::2], edges[1::2], strict=True)):
        start, end = f.times([ts[a], ts[b - 1] + 1000])
        ax.axvspan(start, end, color=colour, alpha=0.25, lw=0, label=label if n == 0 else None)


def _nab(r: Json) -> str:
    others = r.get("baselines") or {}
    published = r.get("published") or {}
    names = list(r["profiles"])
    detectors = {"telemon": r["profiles"], **{b: v["profiles"] for b, v in others.items()}}
    columns = ("NAB profile", *detectors, *published)
    rows = [
        (p, *(d[p]["score"] for d in detectors.values()), *(published[x].get(p) for x in published))
        for p in names
    ]
    with f.figure(1, 2.6) as (fig, (ax,)):
        width = 0.8 / max(len(detectors) + len(published), 1)
        series = [(k, [d[p]["score"] for p in names]) for k, d in detectors.items()]
        series += [(k, [published[k].get(p) or 0 for p in names]) for k in published]
        for i, (name, values) in enumerate(series):
            ax.bar(np.arange(len(names)) + i * width, values, width, label=name, color=f.AXIS_COLOURS[i % 6])
        ax.set_xticks(np.arange(len(names)) + 0.4 - width / 2, names)
        ax.set_ylabel("NAB score")
        ax.set_title(f"NAB scores per profile ({r.get('files')} files, {r.get('rows', 0):,} rows)")
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
        svg = f.svg(fig, "NAB scores per profile")
    return h.figure(svg) + h.table(columns, rows)
