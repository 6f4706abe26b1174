"""The charts of the deployment report, each an inline SVG string (see :mod:`.figures`)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from monitor.report import figures as f
from monitor.report.records import Channel, Episode, Json, ReportData

if TYPE_CHECKING:
    from matplotlib.axes import Axes

if TYPE_CHECKING:
    from matplotlib.ticker import MaxNLocator
else:

    def MaxNLocator(**kw: Any) -> Any:
        from matplotlib.ticker import MaxNLocator as locator

        return locator(**kw)


SEVERITY_COLOURS = {"critical": "#8b0000", "warning": "#e4572e", "info": "#f2b701"}
VERSION_KINDS = {"promoted": f.PROMOTED, "rolled_back": "#1f77b4", "rejected": f.REJECTED}


def fleet_overview(data: ReportData) -> str:
    """Readings, alert firings by severity, drift episodes and retrains over the range."""
    lo, hi = data.since, data.until
    edges = f.bins(lo, hi)
    with f.figure(4, 1.7, sharex=True, gridspec_kw={"height_ratios": [1.2, 1, 1, 0.8]}) as (fig, axes):
        _readings(axes[0], data, edges)
        firing = [e for e in data.episodes if e.fired is not None and not e.drift]
        _stacked(axes[1], edges, firing, "alert firings per bin (by severity)")
        _active(axes[2], lo, hi, [e for e in data.episodes if e.drift])
        _retrains(axes[3], data.audit)
        for ax in axes:
            f.date_axis(ax, lo, hi)
        return f.svg(fig, "fleet overview: readings, alerts, drift and retrains over time")


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _readings(ax: Axes, data: ReportData, edges: np.ndarray) -> None:
    width_s = (edges[1] - edges[0]) / 1000
    bottom = np.zeros(len(edges) - 1)
    order = sorted(range(len(data.sensor_names)), key=lambda i: data.sensor_names[i])
    for i, s in enumerate(order):
        sensor = data.sensor_names[s]
        counts = np.histogram(data.readings_ts[data.readings_sensor == s], edges)[0] / width_s
        ax.fill_between(
            f.times(edges[:-1]),
            bottom,
            bottom + counts,
            step="post",
            lw=0,
            color=f.AXIS_COLOURS[i % len(f.AXIS_COLOURS)],
            alpha=0.85,
            label=sensor,
        )
        bottom += counts
    ax.set_title(f"Readings per second ({len(data.readings_ts):,} in range, by sensor)")
    ax.set_ylabel("readings/s")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), ncols=1)


def _stacked(ax: Axes, edges: np.ndarray, eps: Sequence[Episode], title: str) -> None:
    centres = f.times(edges[:-1])
    bottom = np.zeros(len(edges) - 1)
    width = np.diff(f.times(edges))
    for severity in ("info", "warning", "critical"):
        ts = [e.fired for e in eps if e.severity == severity and e.fired is not None]
        if ts:
            counts = np.histogram(np.asarray(ts, np.int64), edges)[0]
            ax.bar(
                centres,
                counts,
                width,
                bottom=bottom,
                align="edge",
                color=SEVERITY_COLOURS[severity],
                label=f"{severity} ({len(ts)})",
            )
            bottom += counts
    ax.set_title(f"Alerts firing ({_n(len(eps), 'episode')}; drift rules below)")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("firings")
    if eps:
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    else:
        f.empty(ax, "no alert fired in range")


def _active(ax: Axes, lo: int, hi: int, eps: Sequence[Episode]) -> None:
    """How many drift episodes are firing at each moment (a step line)."""
    ax.set_title(f"Drift alerts firing ({_n(len(eps), 'episode')})")
    ax.set_ylabel("pairs in drift")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    changes = Counter[int]()
    for e in eps:
        if e.fired is not None:
            changes[max(e.fired, lo)] += 1
            changes[min(e.end, hi) if e.end is not None else hi] -= 1
    if not changes:
        f.empty(ax, "no drift alert fired in range")
        return
    ts = np.array(sorted({lo, hi, *changes}), np.int64)
    level = np.cumsum([changes.get(int(t), 0) for t in ts])
    ax.step(f.times(ts), level, where="post", color=f.DRIFT, lw=1.4)
    ax.fill_between(f.times(ts), 0, level, step="post", color=f.DRIFT, alpha=0.2, lw=0)
    ax.set_ylim(0, max(level.max(), 1) * 1.25)


def _retrains(ax: Axes, audit: Sequence[Json]) -> None:
    ax.set_title("Model versions (registered, promoted, rejected, rolled back)")
    kinds = ["registered", "promoted", "rejected", "rolled_back"]
    shown = [e for e in audit if e.get("kind") in kinds]
    for e in shown:
        y = kinds.index(str(e["kind"]))
        t = f.times([int(e.get("event_ts") or e.get("wall_ts") or 0)])
        colour = VERSION_KINDS.get(str(e["kind"]), "#1f77b4")
        ax.plot(t, [y], "D", color=colour, ms=6)
        ax.annotate(
            f"{e.get('device_id')}/{e.get('sensor')} v{e.get('version')}",
            (t[0], y),
            xytext=(5, 3),
            textcoords="offset points",
            fontsize=7,
        )
    ax.set_yticks(range(len(kinds)), [k.replace("_", " ") for k in kinds])
    ax.set_ylim(-0.6, len(kinds) - 0.4)
    if not shown:
        f.empty(ax, "no model version in range")


# --- per device / channel -------------------------------------------------------------------------


def channel_timeline(c: Channel, eps: Sequence[Episode], events: Sequence[Json], lo: int, hi: int) -> str:
    """Values (per axis) and replayed scores against the threshold, with alert episodes, drift
    windows and model versions."""
    with f.figure(2, 1.9, sharex=True, gridspec_kw={"height_ratios": [1.3, 1]}) as (fig, (top, bottom)):
        for i, axis in enumerate(c.axes):
            t, v = f.envelope(c.ts, c.values[:, i], lo, hi)
            top.plot(
                f.times(t), v, color=f.AXIS_COLOURS[i % 6], lw=0.8, label=axis if len(c.axes) > 1 else None
            )
        top.set_ylabel(c.unit or "value")
        top.set_title(f"{c.device_id} / {c.sensor}: values ({len(c.ts):,} readings)")
        cap = max(4 * c.threshold, 1.0)  # higher scores are drawn at the cap: the threshold stays readable
        t, s = f.envelope(c.score_ts, c.score, lo, hi)
        bottom.plot(f.times(t), np.minimum(s, cap), color="#333333", lw=0.8, label="score")
        bottom.axhline(c.threshold, color=f.FIRING, ls="--", lw=1.0, label=f"threshold {c.threshold:.3g}")
        bottom.set_ylabel(c.score_label.split(" ")[0])
        clipped = f", drawn at most {cap:.3g}" if np.nanmax(s, initial=0.0) > cap else ""
        bottom.set_title(f"replayed score: {c.score_label}{clipped}")
        top_score = np.nanmax(s, initial=c.threshold)
        bottom.set_ylim(0, min(max(top_score, c.threshold), cap) * 1.12)
        handles = _episodes(fig, (top, bottom), eps, hi) + _versions((top, bottom), events)
        for ax in (top, bottom):
            f.date_axis(ax, lo, hi)
        _legend(top, bottom, handles)
        return f.svg(fig, f"timeline of {c.device_id}/{c.sensor}")


def _episodes(fig: Any, axes: Sequence[Axes], eps: Sequence[Episode], hi: int) -> list[Any]:
    from matplotlib.patches import Patch

    kinds: dict[str, str] = {}
    for e in eps:
        colour = f.DRIFT if e.drift else f.FIRING
        pending_end = e.fired or e.end or int(e.last.get("ts", e.start))
        spans = [(e.start, pending_end, f.PENDING)] if pending_end > e.start else []
        if e.fired is not None:
            spans.append((e.fired, e.end or hi, colour))
        for a, b, col in spans:
            for ax in axes:
                ax.axvspan(f.times([a])[0], f.times([max(b, a + 1000)])[0], color=col, alpha=0.16, lw=0)
        kinds["drift alert firing" if e.drift else "alert firing"] = colour
        if e.fired is None or e.fired > e.start:
            kinds["pending"] = f.PENDING
    return [Patch(color=col, alpha=0.35, label=k) for k, col in kinds.items()]


def _versions(axes: Sequence[Axes], events: Sequence[Json]) -> list[Any]:
    from matplotlib.lines import Line2D

    seen: dict[str, str] = {}
    for e in events:
        kind = str(e.get("kind"))
        if kind not in VERSION_KINDS:
            continue
        t = f.times([int(e.get("event_ts") or e.get("wall_ts") or 0)])[0]
        colour = VERSION_KINDS[kind]
        for ax in axes:
            ax.axvline(t, color=colour, lw=1.3, ls="-" if kind == "promoted" else ":")
        axes[0].annotate(
            f"v{e.get('version')} {kind.replace('_', ' ')}",
            (t, 1.0),
            xycoords=("data", "axes fraction"),
            xytext=(3, -10),
            textcoords="offset points",
            fontsize=7,
            color=colour,
            bbox={"boxstyle": "round,pad=0.15", "fc": "white", "ec": "none", "alpha": 0.85},
        )
        seen[kind.replace("_", " ")] = colour
    return [Line2D([], [], color=col, lw=1.3, label=f"model {k}") for k, col in seen.items()]


def _legend(top: Axes, bottom: Axes, extra: list[Any]) -> None:
    h1, l1 = top.get_legend_handles_labels()
    h2, l2 = bottom.get_legend_handles_labels()
    handles, labels = [*h1, *h2, *extra], [*l1, *l2, *(h.get_label() for h in extra)]
    top.legend(handles, labels, loc="upper left", bbox_to_anchor=(1.0, 1.0))


# --- explanations ---------------------------------------------------------------------------------


def reading(explanation: Json, sensor: str) -> str | None:
    """The explained reading against its forecast, per axis in spreads (standard deviations) from
    it, with the pair's latest readings and each axis' share of the distance (``None`` without a
    reading)."""
    r = explanation.get("reading")
    axes = [a for a in (r or {}).get("axes") or [] if isinstance(a, dict) and a.get("spread")]
    if not r or not axes:
        return None
    names = [str(a.get("name", "?")) for a in axes]
    order = {n: i for i, n in enumerate(sorted(names))}  # the recent values are in the keys' order
    d2, limit = float(r.get("score", 0)), float(r.get("threshold", 0))
    title = f"The reading against its forecast (distance {d2:.3g}, threshold {limit:.3g})"
    with f.figure(1, 0.5 * len(axes) + 1.2) as (fig, (ax,)):
        for y, a in enumerate(axes):
            x, e, sd = float(a["value"]), float(a["expected"]), float(a["spread"])
            ax.barh(y, 6, left=-3, height=0.5, color="#dddddd")
            recent = [(float(v[1][order[a["name"]]]) - e) / sd for v in r.get("recent") or [] if len(v) == 2]
            ax.plot(
                recent,
                [y] * len(recent),
                "o",
                color="#777777",
                ms=3,
                label="latest readings" if y == 0 else None,
            )
            z = (x - e) / sd
            ax.plot([z], [y], "D", color=f.FIRING, ms=6, label="explained reading" if y == 0 else None)
            label = (
                f"{x:.4g} against {e:.4g} (spread {sd:.3g}): {float(a.get('share', 0)):.0%} of the distance"
            )
            side = "right" if z > 0 else "left"
            ax.annotate(label, (z, y), xytext=(-6, 8), textcoords="offset points", fontsize=7, ha=side)
        ax.set_yticks(range(len(axes)), [sensor if len(axes) == 1 else f"{sensor}.{n}" for n in names])
        ax.axvline(0, color="#555555", lw=0.8)
        ax.set_xlabel("spreads from the forecast (grey: within 3)")
        ax.set_title(title)
        ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
        return f.svg(fig, title)


def frame(explanation: Json) -> str | None:
    """The device frame's T^2 split per channel (``None`` without a frame)."""
    fr = explanation.get("frame")
    parts = [c for c in (fr or {}).get("channels") or [] if isinstance(c, dict)]
    if not fr or not parts:
        return None
    title = f"The device's frame: T^2 {float(fr.get('score', 0)):.3g} by channel"
    with f.figure(1, 0.35 * len(parts) + 0.9) as (fig, (ax,)):
        shares = [float(c.get("share", 0)) for c in parts][::-1]
        ax.barh([str(c.get("name", "?")) for c in parts][::-1], shares, color=f.FIRING, alpha=0.8)
        for y, v in enumerate(shares):
            ax.annotate(
                f"{v:.0%}", (v, y), xytext=(4, 0), textcoords="offset points", va="center", fontsize=7
            )
        ax.set_xlabel("share of T^2 (negative: against the channels' usual correlation)")
        ax.set_title(title)
        ax.grid(axis="y", visible=False)
        return f.svg(fig, title)


def quantiles(explanation: Json, sensor: str) -> str | None:
    """Reference against current quantiles of the inputs compared and of the scores (``None``
    without either)."""
    rows = [
        (f"{sensor}.{i.get('axis', '?')} vs {i.get('against', '?')}", i["quantiles"], i)
        for i in explanation.get("inputs") or []
        if isinstance(i, dict) and isinstance(i.get("quantiles"), dict)
    ][:4]
    scores = explanation.get("scores")
    panels = len(rows) + bool(isinstance(scores, dict))
    if not panels:
        return None
    title = "Reference against current quantiles (5, 25, 50, 75, 95 %)"
    with f.figure(panels, 1.4) as (fig, axes):
        items = [
            *rows,
            *([("anomaly scores", scores["quantiles"], scores)] if isinstance(scores, dict) else []),
        ]
        for ax, (label, q, stats) in zip(axes, items, strict=True):
            for y, values in enumerate((q.get("reference") or [], q.get("current") or [])):
                if len(values) == 5:
                    ax.plot([values[0], values[4]], [y, y], color="#555555", lw=1)
                    ax.barh(
                        y,
                        values[3] - values[1],
                        left=values[1],
                        height=0.5,
                        color=f.AXIS_COLOURS[y],
                        alpha=0.7,
                    )
                    ax.plot([values[2]], [y], "|", color="black", ms=12)
            ax.set_yticks([0, 1], ["reference", "current"])
            ks, p, psi = (float(stats.get(k, 0)) for k in ("ks_stat", "ks_pvalue", "psi"))
            test = f"KS {ks:.3g} (p {p:.2g}), PSI {psi:.3g}"
            ax.set_title(f"{label}: {test}", fontsize=9)
        fig.suptitle(title)
        return f.svg(fig, title)
