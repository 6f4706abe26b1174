"""Shared by the report tests: synthetic report records, and a look at a page in headless Chromium."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from monitor.report.records import Channel, Episode, ReportData, Table, episodes

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def alert(rule: str, status: str, ts: int, started_at: int, **extra: object) -> dict[str, object]:
    return {
        "alert_id": f"{rule}-{started_at}",
        "rule": rule,
        "status": status,
        "severity": "warning",
        "scope": "device",
        "device_id": "dev-0007",
        "sensor": "temperature",
        "started_at": started_at,
        "ts": ts,
        "signals": {"anomaly_rate": 1.0, "psi": 8.2},
        "actions": ["alert"],
        "model_version": 1,
        **extra,
    }


#: An explanation as the pipeline writes one (monitor.analyze.explain), as the alerts topic holds it.
EXPLANATION = {
    "kind": "drift",
    "text": "score_drift: temperature 34.624 degC against 28.7984 expected, 46.4 spreads off",
    "since": 1767225966000,
    "reading": {
        "ts": 1767225970000,
        "score": 2153.53,
        "threshold": 15.1367,
        "axes": [
            {"name": "value", "term": 2153.5, "share": 1.0, "value": 34.62, "expected": 28.8, "spread": 0.13}
        ],
        "recent": [[1767225994000, [34.401]], [1767225995000, [34.497]], [1767225996000, [34.365]]],
    },
    "frame": {"ts": 1767225970000, "score": 812.0, "channels": [
        {"name": "temperature", "term": 790.0, "share": 0.973},
        {"name": "humidity", "term": 22.0, "share": 0.027},
    ]},
    "inputs": [{
        "axis": "value", "against": "reference", "ks_stat": 0.833, "ks_pvalue": 1.3e-37, "psi": 7.27,
        "drifted": True,
        "quantiles": {"reference": [26.0, 26.2, 26.4, 26.6, 26.8], "current": [34.0, 34.3, 34.5, 34.7, 35.0]},
    }],
    "scores": {"ks_stat": 1.0, "ks_pvalue": 0.0, "psi": 8.21, "quantiles": {
        "reference": [0.05, 0.3, 0.575, 0.8, 0.95], "current": [1.0, 1.0, 1.0, 1.0, 1.0],
    }},
    "notes": [],
}  # fmt: skip


def channel(device: str = "dev-0007", sensor: str = "temperature", n: int = 3000) -> Channel:
    rng = np.random.default_rng(1)
    ts = T0 + np.arange(n, dtype=np.int64) * 720_000 // n  # over the 12 minutes of the range
    values = 26.4 + 0.1 * rng.standard_normal((n, 1))
    values[n // 2 :] += 8.0
    score = np.abs(rng.standard_normal(n))
    score[: n // 20] = np.nan  # warming up
    score[n // 2 : n // 2 + 40] = 9.0
    return Channel(
        device, sensor, ("value",), "degC", ts, values, ts, score, 4.0, "surprise -log10(1 - score)"
    )


@dataclass
class Records:
    """A report's records as a small deployment would give them."""

    drift_rules: frozenset[str] = frozenset({"score_drift"})
    verdicts: list[dict[str, object]] = field(default_factory=list)

    def data(self) -> ReportData:
        mid = T0 + 360_000
        alerts = [
            alert("anomaly_burst", "pending", mid, mid),
            alert(
                "anomaly_burst", "firing", mid + 2_000, mid, explanation=EXPLANATION, cohorts={"site": "a"}
            ),
            alert("anomaly_burst", "resolved", mid + 240_000, mid),
            alert("score_drift", "pending", mid + 60_000, mid + 60_000),
            alert("score_drift", "firing", mid + 90_000, mid + 60_000),
        ]
        eps: list[Episode] = episodes(alerts, self.drift_rules)
        audit = [
            {
                "kind": "rule_fired",
                "device_id": "dev-0007",
                "sensor": "temperature",
                "version": 2,
                "actor": "rule:score_drift",
                "explanation": EXPLANATION,
                "event_ts": mid + 160_000,
            },
            {
                "kind": "promoted",
                "device_id": "dev-0007",
                "sensor": "temperature",
                "version": 2,
                "previous": 1,
                "actor": "rule:score_drift",
                "reason": "candidate AUC 1.000",
                "event_ts": mid + 150_000,
            },
        ]
        version = {
            "device_id": "dev-0007",
            "sensor": "temperature",
            "version": 2,
            "parent": 1,
            "trained_on": {
                "topic": "telemon.readings",
                "partition": 2,
                "first_offset": 51395,
                "last_offset": 55735,
                "readings": 32,
                "first_ts": mid + 67_000,
                "last_ts": mid + 98_000,
            },
            "params": {"fading": 0.02},
            "baseline": {"mean": [34.4]},
            "trigger_rule": "score_drift",
            "trigger_alert_id": "score_drift-1",
            "code_version": "0.1.0+abc",
            "config_hash": "ad76",
            "created_at": mid + 150_000,
            "metrics": {"candidate_metric": 1.0},
        }
        ts = T0 + np.arange(0, 720_000, 50, dtype=np.int64)
        data = ReportData(
            title="test report",
            source="test",
            since=T0,
            until=T0 + 720_000,
            readings_ts=ts,
            readings_sensor=(np.arange(len(ts)) % 2).astype(np.int16),
            sensor_names=["temperature", "humidity"],
            devices_seen=20,
            alerts=alerts,
            episodes=eps,
            versions=[version],
            audit=audit,
            devices=["dev-0007", "dev-0000"],
            channels=[channel(), channel("dev-0000", "humidity")],
            lineage=[{"model": version, "manifest": None, "events": audit}],
            feedback=self.verdicts,
            cohorts=Table("Cohorts", ("cohort", "devices", "alerts"), [("site=a", 10, 1), ("site=b", 10, 0)]),
            notes=["a note"],
        )
        return data


#: Per section, its SVG plots with data drawn: a line, an area or a bar (matplotlib's groups), not
#: only axes, ticks and text.
DRAWN = """() => Object.fromEntries([...document.querySelectorAll('section')].map(s => [s.id,
    [...s.querySelectorAll('svg')].filter(svg => [...svg.querySelectorAll(
        'g[id^="line2d"] path, g[id*="PolyCollection"] path, g[id^="patch"] path')]
        .some(p => (p.getAttribute('d') || '').length > 120)).length]))"""


@dataclass(frozen=True)
class Look:
    """What Chromium saw of a page."""

    errors: list[str]  # console errors and uncaught exceptions
    requests: list[str]  # every URL the page asked for
    svgs: dict[str, int]  # section id -> SVG elements with drawn paths in it
    screenshot: Path


def look(page: Path, screenshot: Path, width: int = 1280, height: int = 900) -> Look:
    """Open ``page`` in headless Chromium (the system's), as a person would, and take a full-page
    screenshot."""
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail("chromium not found on PATH: `make test` installs it (scripts/test-services)")
    errors: list[str] = []
    requests: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            tab = browser.new_page(viewport={"width": width, "height": height})
            tab.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            tab.on("pageerror", lambda e: errors.append(str(e)))
            tab.on("request", lambda r: requests.append(r.url))
            tab.goto(page.resolve().as_uri(), wait_until="load")
            svgs = tab.evaluate(DRAWN)
            tab.screenshot(path=str(screenshot), full_page=True)
        finally:
            browser.close()
    return Look(errors, requests, svgs, screenshot)
