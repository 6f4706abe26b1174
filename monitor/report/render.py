"""The render step: :class:`~.records.ReportData` to one HTML string (pure: no I/O, no clock)."""

from __future__ import annotations

from collections.abc import Sequence

from monitor.report import figures, plots
from monitor.report import html as h
from monitor.report.records import SEVERITY_RANK, Episode, Json, ReportData, Table
from monitor.report.tables import iso

#: Alerts explained in the explanations section.
TOP_ALERTS = 5


def render(data: ReportData) -> str:
    figures.reset_ids()
    sections = [
        ("overview", "Fleet overview", overview(data)),
        ("devices", "Devices and channels", devices(data)),
        ("alerts", "Top alerts explained", explanations(data)),
        ("cohorts", "Cohorts", cohorts(data.cohorts)),
        ("feedback", "Feedback precision", feedback(data.precision, data.breakdown)),
        ("lineage", "Model lineage", lineage(data.lineage)),
        ("notes", "About this report", "".join(h.note(n) for n in data.notes)),
    ]
    return h.page(data.title, f"{iso(data.since)} to {iso(data.until)}", sections)


def overview(data: ReportData) -> str:
    fired = [e for e in data.episodes if e.fired is not None]
    promoted = sum(e.get("kind") == "promoted" for e in data.audit)
    rejected = sum(e.get("kind") == "rejected" for e in data.audit)
    numbers = [
        ("readings", len(data.readings_ts)),
        ("devices", data.devices_seen),
        ("alerts fired", sum(not e.drift for e in fired)),
        ("drift alerts fired", sum(e.drift for e in fired)),
        ("model versions", len(data.versions)),
        ("promoted / rejected", f"{promoted} / {rejected}"),
    ]
    rows = [_episode_row(e) for e in sorted(fired, key=_severity_first)[:30]]
    listing = (
        h.table(("rule", "severity", "device/sensor", "fired", "resolved", "model version"), rows)
        if rows
        else h.empty("no alert fired in range")
    )
    more = h.note(f"{len(fired) - 30} more not listed") if len(fired) > 30 else ""
    return h.cards(numbers) + h.figure(plots.fleet_overview(data)) + "<h3>Alerts fired</h3>" + listing + more


def _severity_first(e: Episode) -> tuple[int, int]:
    return (SEVERITY_RANK.get(e.severity, 3), e.fired or e.start)


def _episode_row(e: Episode) -> tuple[object, ...]:
    end = iso(e.end) if e.end is not None else "still firing"
    pair = f"{e.device_id}/{e.sensor}"
    return (e.rule, e.severity, pair, iso(e.fired or e.start), end, e.last.get("model_version"))


def devices(data: ReportData) -> str:
    if not data.channels:
        return h.empty("no device readings in range")
    intro = h.note(
        f"{len(data.devices)} of {data.devices_seen} devices, those with the most alerts first; per device "
        "its channels with the most alerts, then the highest scores. Scores are recovered by replaying "
        "the devices' readings of the range through the pipeline with the deployment's settings and "
        "rules. Shaded: alert episodes (yellow pending, red firing, purple drift rules); vertical "
        "lines: model versions promoted (solid) or rejected (dotted)."
    )
    parts = [intro]
    for device in data.devices:
        parts.append(f"<h3>{h.esc(device)}</h3>")
        for c in (c for c in data.channels if c.device_id == device):
            eps = data.episodes_of(*c.key)
            svg = plots.channel_timeline(c, eps, data.events_of(*c.key), data.since, data.until)
            parts.append(h.figure(svg))
    return "".join(parts)


def explanations(data: ReportData) -> str:
    fired = sorted((e for e in data.episodes if e.fired is not None), key=_severity_first)[:TOP_ALERTS]
    if not fired:
        return h.empty("no alert fired in range")
    intro = h.note(f"the {len(fired)} most severe alerts that fired, earliest first among equals")
    return intro + "".join(_explained(e) for e in fired)


def _explained(e: Episode) -> str:
    head = f"<h3>{h.esc(e.rule)} ({h.esc(e.severity)}) on {h.esc(e.device_id)}/{h.esc(e.sensor)}</h3>"
    when = h.note(
        f"pending {iso(e.start)}, firing {iso(e.fired or e.start)}, "
        + (f"resolved {iso(e.end)}" if e.end is not None else "still firing at the end of the range")
        + f"; alert id {e.alert_id}, model v{e.last.get('model_version', '?')}"
    )
    signals = sorted((e.last.get("signals") or {}).items())
    rows = [sum(signals[i : i + 4], ()) for i in range(0, len(signals), 4)]
    table = "<h4>Signals when it last fired</h4>" + h.table(("signal", "value") * 4, rows) if rows else ""
    ex = e.last.get("explanation")
    if not isinstance(ex, dict):
        return head + when + table + h.empty("no explanation recorded with this alert")
    text = f'<div class="explain">{h.esc(ex.get("text", ""))}</div>' if ex.get("text") else ""
    notes = "".join(h.note(str(n)) for n in ex.get("notes") or [])
    figures = plots.reading(ex, e.sensor), plots.frame(ex), plots.quantiles(ex, e.sensor)
    return head + when + text + notes + "".join(h.figure(x) for x in figures) + table


def _why(event: Json) -> object:
    """An audit event's reason; a rule event's is its explanation's text."""
    explained = event.get("explanation")
    if not event.get("reason") and isinstance(explained, dict):
        return explained.get("text")
    return event.get("reason")


def cohorts(table: Table | None) -> str:
    if table is None:
        return h.empty(
            "no cohort labels: give devices labels in a cohorts_file (firmware, site, ...) to compare cohorts"
        )
    return h.titled(table)


def feedback(precision: Sequence[Table], breakdown: Sequence[Table]) -> str:
    """Precision from operators' verdicts on alerts, and where the false alarms are."""
    if not precision and not breakdown:
        return h.empty("no verdicts yet: none of the alerts in range has feedback")
    return (
        "".join(h.titled(t) for t in precision)
        + "<h3>Error breakdown</h3>"
        + "".join(h.titled(t) for t in breakdown)
    )


def lineage(versions: Sequence[Json]) -> str:
    if not versions:
        return h.empty("no model version was created in range")
    return "".join(_version(v) for v in versions)


def _version(v: Json) -> str:
    m = v["model"]
    ref = f"{m.get('device_id')}/{m.get('sensor')} v{m.get('version')}"
    rows: list[tuple[str, object]] = [
        ("parent", f"v{m.get('parent')}" if m.get("parent") else "none"),
        ("trigger", f"{m.get('trigger_rule') or '-'} (alert {m.get('trigger_alert_id') or '-'})"),
        ("trained on", _data(m.get("trained_on"))),
        ("tested on", _data(m.get("test_data"))),
        ("created", iso(int(m.get("created_at", 0)))),
        ("code version", m.get("code_version")),
        ("settings hash", m.get("config_hash")),
        ("hyperparameters", _pairs(m.get("params"))),
        ("metrics", _pairs(m.get("metrics"))),
    ]
    manifest = v.get("manifest")
    if manifest:
        a = manifest.get("artifact", {})
        rows.append(("artifact", f"{a.get('python_class')} sha256 {str(a.get('sha256', ''))[:16]}..."))
        rows.append(("registered", iso(int(manifest.get("registered_at", 0)))))
    source = "signed registry manifest" if manifest else "models topic (registry not readable here)"
    events = [
        (iso(int(e.get("event_ts") or e.get("wall_ts") or 0)), e.get("kind"), e.get("actor"), _why(e))
        for e in v.get("events", [])
    ]
    history = h.table(("when", "event", "actor", "reason"), events) if events else ""
    fields = h.table(("field", "value"), rows) + h.note(f"from the {source}")
    return f"<h3>{h.esc(ref)}</h3>" + fields + history


def _data(d: object) -> str:
    if not isinstance(d, dict):
        return "-"
    where = f"{d.get('topic')}[{d.get('partition')}]"
    if int(d.get("first_offset", 0)) < 0:
        return f"{where} from the pair's first reading to offset {d.get('last_offset')}"
    return (
        f"{where} offsets {d.get('first_offset')}..{d.get('last_offset')} "
        f"({d.get('readings')} readings, {iso(int(d.get('first_ts', 0)))} to {iso(int(d.get('last_ts', 0)))})"
    )


def _pairs(d: object) -> str:
    if not isinstance(d, dict) or not d:
        return "-"
    return ", ".join(f"{k} {h.cell(v)}" for k, v in sorted(d.items()))
